#!/bin/bash
# Brings up a single-node Kubernetes cluster on this machine from the binaries in
# $VMTA_K8S_ASSETS/bin/*.xz (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
# kubelet): etcd (Debian etcd-server), the control plane on the bridge address 10.77.0.1:6443,
# containerd + kubelet + kube-proxy (iptables mode), and a StorageClass `vmta-local` (default)
# with hostPath PersistentVolumes owned by the relay's UID. Every process it starts is recorded
# in $W/run/*.pid; down.sh stops them and undoes every change to the host.
# Worked example this follows: ../shared/k8s/reference/ (see its README for the machine facts).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/env.sh"
ASSETS="${VMTA_K8S_ASSETS:?set VMTA_K8S_ASSETS to a folder with bin/*.xz}"
PV_COUNT="${VMTA_CLUSTER_PVS:-24}"
for c in kube-apiserver etcd containerd kubelet; do
  alive "$c" && { echo "a harness cluster is already running ($RUN/$c.pid); run down.sh first" >&2; exit 1; }
done
rm -rf "$PKI" "$ETC" "$DATA" "$RUN" "$W/pv" "$LOGS"
mkdir -p "$BIN" "$PKI" "$ETC" "$LOGS" "$RUN" "$DATA" "$W/cni/net.d" /var/lib/kubelet

# ---- binaries: unpacked once per version of the .xz files ----------------------------------
for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet pause; do
  sum=$(sha256sum "$ASSETS/bin/$b.xz" | cut -d' ' -f1)
  if [ ! -x "$BIN/$b" ] || [ "$(cat "$BIN/$b.sha256" 2>/dev/null)" != "$sum" ]; then
    xz -dc "$ASSETS/bin/$b.xz" > "$BIN/$b.tmp" && chmod +x "$BIN/$b.tmp" && mv "$BIN/$b.tmp" "$BIN/$b"
    echo "$sum" > "$BIN/$b.sha256"
  fi
done
ts "binaries in $BIN ($("$BIN/kube-apiserver" --version))"

# ---- what down.sh must restore --------------------------------------------------------------
for t in filter nat mangle; do iptables -t "$t" -S | awk '$1=="-N"{print $2}' > "$RUN/chains-before.$t"; done
cat /proc/sys/net/bridge/bridge-nf-call-iptables > "$RUN/bridge-nf-call-iptables.before" 2>/dev/null || true
pgrep containerd-shim > "$RUN/shims-before" || true

# ---- network: the bridge (node IP, apiserver address) and a hosts line for the node name ----
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
grep -q "$HOSTS_TAG\$" /etc/hosts || echo "$NODE_IP $NODE $HOSTS_TAG" >> /etc/hosts
# pod -> Service -> pod on the same bridge needs bridged packets to pass iptables (conntrack)
[ -w /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables

# ---- PKI --------------------------------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 -subj "/CN=vmta-cluster-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
cert() { # name subject extendedKeyUsage [subjectAltName]
  local n=$1
  openssl req -newkey rsa:2048 -nodes -keyout "$PKI/$n.key" -subj "$2" -out "$PKI/$n.csr" 2>/dev/null
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"; [ -n "${4:-}" ] && echo "subjectAltName=$4"; true; } > "$PKI/$n.ext"
  openssl x509 -req -in "$PKI/$n.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAserial "$PKI/ca.srl" -CAcreateserial \
    -days 30 -sha256 -extfile "$PKI/$n.ext" -out "$PKI/$n.crt" 2>/dev/null
  rm -f "$PKI/$n.csr" "$PKI/$n.ext"
}
cert apiserver /CN=kube-apiserver serverAuth "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP"
cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
cert controller-manager /CN=system:kube-controller-manager clientAuth
cert scheduler /CN=system:kube-scheduler clientAuth
cert kube-proxy /CN=system:kube-proxy clientAuth
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE" clientAuth
cert kubelet-server "/CN=$NODE" serverAuth "DNS:$NODE,IP:$NODE_IP"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
kubeconfig() { # file user cert
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: vmta-cluster
  cluster: { server: "$APISERVER", certificate-authority-data: $(base64 -w0 "$PKI/ca.crt") }
users:
- name: $2
  user: { client-certificate-data: $(base64 -w0 "$PKI/$3.crt"), client-key-data: $(base64 -w0 "$PKI/$3.key") }
contexts:
- name: vmta-cluster
  context: { cluster: vmta-cluster, user: $2 }
current-context: vmta-cluster
KC
  chmod 600 "$1"
}
kubeconfig "$W/kubeconfig" kubernetes-admin admin
for c in controller-manager scheduler kube-proxy kubelet-client; do kubeconfig "$ETC/$c.kubeconfig" "$c" "$c"; done
ts "PKI"

# ---- etcd + kube-apiserver + kube-controller-manager -----------------------------------------
mkdir -m 700 "$DATA/etcd"
start etcd etcd --name vmta-cluster --data-dir "$DATA/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster vmta-cluster=http://127.0.0.1:2380 --initial-cluster-state new \
  --quota-backend-bytes 4294967296 --auto-compaction-retention 1
wait_for 30 etcd curl -fsS http://127.0.0.1:2379/health
start kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
  --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,StorageObjectInUseProtection \
  --allow-privileged=true --profiling=false -v=1
wait_for 120 "kube-apiserver /readyz (see $LOGS/kube-apiserver.log)" kubectl get --raw /readyz
ts "kube-apiserver ready on $APISERVER"
# service-ca-certificate-publisher: these binaries come from MicroShift, whose ServiceAccount admission
# projects the ConfigMap openshift-service-ca.crt into every token volume; pods wait for it otherwise.
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$ETC/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$ETC/controller-manager.kubeconfig" --authorization-kubeconfig="$ETC/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10257 \
  --controllers=garbage-collector-controller,statefulset-controller,deployment-controller,replicaset-controller,namespace-controller,serviceaccount-token-controller,serviceaccount-controller,disruption-controller,root-ca-certificate-publisher-controller,service-ca-certificate-publisher-controller,endpointslice-controller,endpoints-controller,endpointslice-mirroring-controller,persistentvolume-binder-controller,persistentvolume-attach-detach-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,node-lifecycle-controller,taint-eviction-controller,pod-garbage-collector-controller,clusterrole-aggregation-controller,job-controller,ttl-controller \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false --node-monitor-grace-period=20s -v=1
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$ETC/scheduler.kubeconfig" \
  --authentication-kubeconfig="$ETC/scheduler.kubeconfig" --authorization-kubeconfig="$ETC/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false -v=1

# ---- containerd + kubelet + kube-proxy ---------------------------------------------------------
cat > "$ETC/containerd.toml" <<CT
# containerd 1.6: cgroupfs (PID 1 is not systemd); restrict_oom_score_adj (no CAP_SYS_RESOURCE).
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
CT
cat > "$W/cni/net.d/10-vmta.conflist" <<CNI
{ "cniVersion": "1.0.0", "name": "vmta-cluster",
  "plugins": [
    { "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$NODE_IP" }]],
                "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": "/var/lib/cni/vmta-cluster" } },
    { "type": "portmap", "capabilities": { "portMappings": true } } ] }
CNI
grep -v '^#' /etc/resolv.conf > "$ETC/resolv.conf"
cat > "$ETC/kubelet.yaml" <<KL
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: $PKI/ca.crt } }
authorization: { mode: Webhook }
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
clusterDomain: cluster.local
resolvConf: $ETC/resolv.conf
rotateCertificates: false
registerNode: true
maxPods: 80
podPidsLimit: 4096
serializeImagePulls: false
syncFrequency: 10s
evictionHard: { memory.available: "200Mi", nodefs.available: "3%", imagefs.available: "3%" }
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
KL
cat > "$ETC/kube-proxy.yaml" <<KP
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: { kubeconfig: $ETC/kube-proxy.kubeconfig }
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: { localhostNodePorts: false, masqueradeAll: false }
conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
KP
start containerd /usr/bin/containerd --config "$ETC/containerd.toml"
wait_for 20 containerd ctr version
ts "containerd"
start kubelet "$BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubelet-client.kubeconfig" \
  --hostname-override="$NODE" --node-ip="$NODE_IP" --pod-infra-container-image=registry.k8s.io/pause:3.10 \
  --cert-dir="$PKI/kubelet" --v=1
start kube-proxy "$BIN/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=1
node_ready() { [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for 90 "node $NODE Ready (see $LOGS/kubelet.log)" node_ready
no_taint() { [ -z "$(kubectl get node "$NODE" -o jsonpath='{.spec.taints}')" ]; }
wait_for 60 "the not-ready taint to go (node-lifecycle controller)" no_taint
wait_for 60 "the default ServiceAccount" kubectl -n default get sa default
ts "node $NODE Ready"

# ---- storage: a StorageClass of the harness and hostPath PVs the relay's UID can write -------
mkdir -p "$W/pv"
{
  cat <<SC
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: vmta-local
  annotations: { storageclass.kubernetes.io/is-default-class: "true" }
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
SC
  for i in $(seq -w 1 "$PV_COUNT"); do
    install -d -m 0770 -o 65532 -g 65532 "$W/pv/pv$i"
    cat <<PV
---
apiVersion: v1
kind: PersistentVolume
metadata: { name: vmta-local-$i, labels: { vmta.dev/harness: local-pv } }
spec:
  capacity: { storage: 20Gi }
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: vmta-local
  hostPath: { path: $W/pv/pv$i, type: Directory }
PV
  done
} | kubectl apply -f - >/dev/null
ts "StorageClass vmta-local with $PV_COUNT hostPath PVs"
# Released PVs (their claim was deleted with a suite's namespace) are wiped and made Available
# again, as a provisioner's Delete would: suites create and drop many claims.
start pv-recycler "$HERE/recycle-pvs.sh"
ts "cluster up: export KUBECONFIG=$KUBECONFIG"
