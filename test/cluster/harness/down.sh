#!/bin/bash
# Stops everything up.sh started and undoes its changes to the host: pods' containers first (a
# shim outliving containerd keeps its container running), then kubelet, kube-proxy, containerd,
# the control plane and etcd, by their saved PIDs; then the iptables chains that appeared while
# the cluster ran (kube-proxy's, the kubelet's, CNI portmap's), network namespaces, mounts, the
# bridge, the /etc/hosts line and the bridge-netfilter setting. Images stay in containerd and
# buildah storage (a cache for the next run). Safe to run twice.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/env.sh"
stop() { # name: SIGTERM, up to 10 s, then SIGKILL
  local f="$RUN/$1.pid" p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill "$p"
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
    ts "stopped $1 ($p)"
  fi
  rm -f "$f"
}
stop pv-recycler
stop kubelet
stop kube-proxy
stop kube-scheduler
if alive containerd; then
  netns=$(for id in $(ctr -n k8s.io containers ls -q); do
            ctr -n k8s.io containers info "$id" | grep -o '/var/run/netns/cni-[0-9a-f-]*'; done | sort -u)
  n=0
  for id in $(ctr -n k8s.io tasks ls -q); do ctr -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1; done
  sleep 0.5
  for id in $(ctr -n k8s.io tasks ls -q); do ctr -n k8s.io tasks delete -f "$id" >/dev/null 2>&1; done
  for id in $(ctr -n k8s.io containers ls -q); do ctr -n k8s.io containers rm "$id" >/dev/null 2>&1 && n=$((n+1)); done
  ts "removed $n containers (sandboxes included)"
  for ns in $netns; do ip netns delete "$(basename "$ns")" 2>/dev/null; done
  stop containerd
  # shims of this containerd that outlived their tasks (started after up.sh recorded the old ones)
  for p in $(pgrep containerd-shim); do
    grep -qx "$p" "$RUN/shims-before" 2>/dev/null && continue
    tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- '-address /run/containerd/containerd.sock' && kill "$p" 2>/dev/null
  done
fi
stop kube-controller-manager
stop kube-apiserver
stop etcd

# iptables: kube-proxy's own clean-up, then any KUBE-/CNI- chain that was not there before
[ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
for t in filter nat mangle; do
  before="$RUN/chains-before.$t"; [ -f "$before" ] || continue
  new=$(iptables -t "$t" -S | awk '$1=="-N"{print $2}' | grep -E '^(KUBE-|CNI-)' | grep -vxF -f "$before" || true)
  [ -n "$new" ] || continue
  pattern=$(echo "$new" | paste -sd'|')
  iptables -t "$t" -S | grep -E -- "-j ($pattern)( |\$)" | sed 's/^-A /-D /' | while read -r rule; do
    eval "iptables -t $t $rule" 2>/dev/null; done
  for c in $new; do iptables -t "$t" -F "$c" 2>/dev/null; done
  for c in $new; do iptables -t "$t" -X "$c" 2>/dev/null; done
  ts "removed iptables $t chains: $(echo $new | wc -w)"
done

# mounts the kubelet and containerd left (secret/projected tmpfs, sandbox shm, the rshared root)
grep -oE ' (/run/containerd/io\.containerd\.[^ ]+|/var/lib/kubelet/pods/[^ ]+) ' /proc/mounts \
  | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
mountpoint -q /var/lib/kubelet && umount /var/lib/kubelet
rm -rf /var/lib/cni/vmta-cluster /var/lib/kubelet/pods /var/lib/kubelet/plugins* /var/lib/kubelet/pod-resources \
  /var/lib/kubelet/cpu_manager_state /var/lib/kubelet/memory_manager_state
rm -f /var/lib/cni/results/vmta-cluster-* /var/lib/cni/results/cni-loopback-*
rm -rf /var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/* /var/lib/containerd/io.containerd.grpc.v1.cri/containers/* \
  /run/containerd/io.containerd.grpc.v1.cri/sandboxes/*

ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" && ts "deleted bridge $BRIDGE"
if grep -q "$HOSTS_TAG\$" /etc/hosts; then
  grep -v "$HOSTS_TAG\$" /etc/hosts > "$W/hosts.tmp" && cat "$W/hosts.tmp" > /etc/hosts; rm -f "$W/hosts.tmp"
fi
[ -f "$RUN/bridge-nf-call-iptables.before" ] && cat "$RUN/bridge-nf-call-iptables.before" > /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null
# PV contents may hold root-owned files of pods; they go with the cluster
rm -rf "$W/pv"
exit 0
