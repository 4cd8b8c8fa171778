#!/bin/sh
# Installs Dante's SOCKS5 server (Debian package dante-server, binary danted) that the egress
# proxy tests run on loopback: `sh scripts/install-dante.sh`. Idempotent and safe to run from
# parallel test processes; needs root, as apt-get does. The package's own service is not started:
# the tests run their own danted with their own config.
set -eu
if ! command -v danted >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-dante: danted is missing and installing needs root: apt-get install dante-server" >&2
    exit 1
  fi
  exec 9>"${TMPDIR:-/tmp}/vmta-install-dante.lock"
  flock 9
  if ! command -v danted >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d keeps dpkg from starting the package's daemon on port 1080.
    policy=/usr/sbin/policy-rc.d
    created=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
    fi
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends dante-server >/dev/null
    if [ -n "$created" ]; then rm -f "$policy"; fi
  fi
fi
danted -v | head -n 1
