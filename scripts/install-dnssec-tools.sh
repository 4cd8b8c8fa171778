#!/bin/sh
# Installs the DNSSEC tools the DANE tests run (a validating resolver over zones signed by the
# test itself) from Debian's packages: NSD (authoritative), Unbound (validating resolver) and
# ldnsutils (ldns-keygen, ldns-signzone): `sh scripts/install-dnssec-tools.sh`. Idempotent and
# safe to run from parallel test processes; needs root, as apt-get does. The packages' own
# services are not started: the tests run their own servers on loopback.
set -eu
installed() {
  command -v nsd >/dev/null 2>&1 && command -v unbound >/dev/null 2>&1 && command -v ldns-signzone >/dev/null 2>&1 && command -v ldns-keygen >/dev/null 2>&1
}
if ! installed; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-dnssec-tools: nsd, unbound or ldnsutils is missing and installing needs root: apt-get install nsd unbound ldnsutils" >&2
    exit 1
  fi
  sh "$(dirname "$0")/apt-install-without-services.sh" nsd unbound ldnsutils
fi
unbound -V | head -n 1
