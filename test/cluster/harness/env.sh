# Shared settings of the local cluster harness (sourced by up.sh, down.sh, images.sh).
# One node: the bridge k8sn0 carries the pods (10.77.0.0/24) and its gateway 10.77.0.1 is the
# node IP and the address the apiserver listens on, so pods reach it through the `kubernetes`
# Service. State lives under $VMTA_CLUSTER_WORK (default /var/tmp/vmta-cluster).
W="${VMTA_CLUSTER_WORK:-/var/tmp/vmta-cluster}"
BIN="$W/bin"; PKI="$W/pki"; ETC="$W/etc"; LOGS="$W/logs"; RUN="$W/run"; DATA="$W/data"; IMG="$W/images"
NODE=node1; NODE_IP=10.77.0.1; POD_CIDR=10.77.0.0/24; BRIDGE=k8sn0
SERVICE_CIDR=10.0.0.0/16; KUBERNETES_SERVICE_IP=10.0.0.1
APISERVER="https://$NODE_IP:6443"
HOSTS_TAG="# vmta-cluster-harness"
export KUBECONFIG="$W/kubeconfig"
t0=${t0:-$(date +%s)}
ts() { echo "[cluster +$(( $(date +%s) - t0 ))s] $*"; }
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
start() { # name command...: runs in the background, logs to $LOGS/name.log, PID in $RUN/name.pid
  local name=$1; shift
  nohup "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}
wait_for() { # seconds description command...: polls once a second
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "timed out after ${seconds}s waiting for $what" >&2; return 1
}
