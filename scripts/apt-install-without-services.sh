#!/bin/sh
# Installs Debian packages that tests run as their own servers (nsd, unbound, danted...) without
# letting dpkg start the packages' daemons on their well-known ports: `sh
# scripts/apt-install-without-services.sh PACKAGE...`. Serialized by a lock, so parallel test
# processes may call it; needs root, as apt-get does. Used by install-dnssec-tools.sh and
# install-dante.sh.
set -eu
exec 9>"${TMPDIR:-/tmp}/vmta-apt-install.lock"
flock 9
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d answering 101 keeps dpkg from starting services.
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
fi
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
if [ -n "$created" ]; then rm -f "$policy"; fi
