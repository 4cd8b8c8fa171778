#!/bin/sh
# Installs Prometheus and promtool from Debian's packages (the chart's alert and dashboard tests
# run them): `sh scripts/install-prometheus.sh`. Idempotent and safe to run from parallel test
# processes (one apt-get at a time); needs root, as apt-get does. The package's systemd unit is
# not started: the tests run their own server on loopback.
set -eu
installed() {
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1
}
if ! installed; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-prometheus: promtool is missing and installing it needs root: apt-get install prometheus" >&2
    exit 1
  fi
  exec 9>"${TMPDIR:-/tmp}/vmta-install-prometheus.lock"
  flock 9
  if ! installed; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi
promtool --version | head -n 1
