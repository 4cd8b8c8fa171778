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
  sh "$(dirname "$0")/apt-install-without-services.sh" dante-server
fi
danted -v | head -n 1
