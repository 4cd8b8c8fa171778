#!/usr/bin/env bash
# Installs Debian's postfix for the relay benchmark's side-by-side run (bench/postfix-relay.ts),
# non-interactively and without configuring the system mailer: the benchmark writes its own
# main.cf / master.cf under a temporary directory and never touches /etc/postfix. Root or sudo.
set -euo pipefail
[[ -x /usr/sbin/postfix ]] && exit 0
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -q
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends postfix
