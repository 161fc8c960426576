# shellcheck shell=bash
# Kubernetes half of the local stack: PKI, etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd (CRI) and kubelet. No kube-proxy: Services are Octavia's job.
# Sourced by hack/stack/stack; each *_up is idempotent.
PKI=$STATE/pki
KCFG=$STATE/kubeconfig
CNI_BIN_DIR=/opt/cni/bin
CNI_CONF_DIR=/etc/cni/net.d
CONTAINERD_SOCK=/run/containerd/containerd.sock
KUBELET_DIR=$STATE/kubelet
# The node's InternalIP: kubelet refuses a loopback node IP, and the apiserver reaches kubelets
# at their InternalIP. A /32 on a local veth end keeps it on this machine.
NODE_IF=kst-node0
NODE_IP=172.31.255.1
# The Service kube-dns (CoreDNS); kubelet gives it to pods as their nameserver.
CLUSTER_DNS_IP=10.96.0.10

# cert NAME CN ORG [SANs]: a client/server certificate signed by the stack CA.
cert() {
  local name=$1 cn=$2 org=$3 sans=${4:-}
  [ -f "$PKI/$name.crt" ] && return
  local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org/CN=$cn"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

kubeconfig() {  # FILE CERTNAME
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: '$PKI/ca.crt'}
users:
- name: $2
  user: {client-certificate: '$PKI/$2.crt', client-key: '$PKI/$2.key'}
contexts:
- name: local
  context: {cluster: local, user: $2}
current-context: local
EOF
}

pki_up() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    log "creating the cluster PKI in $PKI"
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kuryr-stack-ca" -days 3650 -sha256 -out "$PKI/ca.crt" 2>/dev/null
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  # The serving certificate names every address pods and the host use: loopback, the
  # `kubernetes` Service's ClusterIP and the node port's IP (the advertised address, what the
  # `kubernetes` EndpointSlice points at). A certificate made before that IP was in it (an older
  # PKI, or a node port that got another IP) is made again; the running apiserver reloads it.
  if [ -f "$PKI/apiserver.crt" ] && ! grep -q "IP Address:$NODE_PORT_IP\(,\|\$\)" \
      <<<"$(openssl x509 -in "$PKI/apiserver.crt" -noout -ext subjectAltName 2>/dev/null)"; then
    log "the apiserver certificate lacks IP $NODE_PORT_IP: making it again"
    rm -f "$PKI/apiserver.crt" "$PKI/apiserver.key"
  fi
  cert apiserver kube-apiserver "" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$HOST,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_PORT_IP"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kubelet "system:node:$HOST" system:nodes "DNS:$HOST,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
  kubeconfig "$KCFG" admin
  kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
  kubeconfig "$STATE/scheduler.kubeconfig" scheduler
  kubeconfig "$STATE/kubelet.kubeconfig" kubelet
}

etcd_up() {
  running etcd && return
  log "starting etcd $ETCD_VERSION on 127.0.0.1:2379"
  mkdir -p "$STATE/etcd"; chmod 700 "$STATE/etcd"
  start etcd "$LOGDIR/etcd.log" "$ETCD_BIN/etcd" --name stack --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster stack=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 1073741824 --log-level warn
  ready etcd "$LOGDIR/etcd.log" 30 curl -sf -m 2 http://127.0.0.1:2381/health
}

# Pods reach the apiserver as on a real cluster: the `kubernetes` Service (10.96.0.1) is backed by
# the advertised address, the node port's IP on the pod network (NODE_PORT_IP, node-port.sh), and
# pods can also dial it directly. kube-apiserver takes one bind address: 0.0.0.0 (as kubeadm's
# default) so that both 127.0.0.1 (kubeconfigs, tests) and NODE_PORT_IP answer.
apiserver_up() {
  if running kube-apiserver && ! grep -q -- "--advertise-address=$NODE_PORT_IP " \
      <<<"$(tr '\0' ' ' < "/proc/$(pid_of kube-apiserver)/cmdline" 2>/dev/null)"; then
    log "NOTE: the running kube-apiserver does not advertise $NODE_PORT_IP (started by an older stack);" \
      "apply with: . hack/stack/lib.sh; stop_pid kube-apiserver kube-apiserver; hack/stack/stack up"
  fi
  if ! running kube-apiserver; then
    log "starting kube-apiserver $K8S_VERSION on 0.0.0.0:6443, advertising $NODE_PORT_IP (service ranges $K8S_SVC_CIDR, $K8S_SVC_CIDR6)"
    start kube-apiserver "$LOGDIR/kube-apiserver.log" "$K8S_BIN/kube-apiserver" \
      --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 --advertise-address="$NODE_PORT_IP" \
      --secure-port=6443 --service-cluster-ip-range="$K8S_SVC_CIDR,$K8S_SVC_CIDR6" \
      --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
      --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname \
      --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
      --allow-privileged=true --profiling=false --v=1
  fi
  ready kube-apiserver "$LOGDIR/kube-apiserver.log" 90 \
    curl -sf -m 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" https://127.0.0.1:6443/readyz
}

controllers_up() {
  if ! running kube-controller-manager; then
    log "starting kube-controller-manager"
    start kube-controller-manager "$LOGDIR/kube-controller-manager.log" "$K8S_BIN/kube-controller-manager" \
      --kubeconfig="$STATE/controller-manager.kubeconfig" --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
      --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" --bind-address=127.0.0.1 \
      --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
      --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
      --use-service-account-credentials=true --leader-elect=false --allocate-node-cidrs=false \
      --service-cluster-ip-range="$K8S_SVC_CIDR,$K8S_SVC_CIDR6" --controllers='*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' --v=1
  fi
  if ! running kube-scheduler; then
    log "starting kube-scheduler"
    start kube-scheduler "$LOGDIR/kube-scheduler.log" "$K8S_BIN/kube-scheduler" \
      --kubeconfig="$STATE/scheduler.kubeconfig" --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
      --authorization-kubeconfig="$STATE/scheduler.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false --v=1
  fi
  ready kube-controller-manager "$LOGDIR/kube-controller-manager.log" 60 curl -sfk -m 2 https://127.0.0.1:10257/healthz
  ready kube-scheduler "$LOGDIR/kube-scheduler.log" 60 curl -sfk -m 2 https://127.0.0.1:10259/healthz
}

containerd_up() {
  local d
  for d in "$CNI_BIN_DIR" "$CNI_CONF_DIR"; do
    [ -d "$d" ] || { mkdir -p "$d"; echo "$d/" >> "$STATE/host-added"; }
  done
  mkdir -p "$STATE/containerd"
  # The reference plugins (loopback is needed by the CRI plugin; portmap, bandwidth, tuning
  # for chaining) next to where kuryr-cni is installed.
  # Debian's podman ships a bridge conflist in the same directory; the CRI plugin would take it
  # and the node would look network-ready (and wire pods onto a Linux bridge) before kuryr is there.
  if [ -f "$CNI_CONF_DIR/87-podman-bridge.conflist" ]; then
    log "moving podman's default $CNI_CONF_DIR/87-podman-bridge.conflist aside (the CRI plugin would use it; \`stack down\` puts it back)"
    mkdir -p "$STATE/host-saved"
    mv "$CNI_CONF_DIR/87-podman-bridge.conflist" "$STATE/host-saved/"
    echo "$CNI_CONF_DIR/87-podman-bridge.conflist" >> "$STATE/host-saved/paths"
  fi
  local p
  for p in /usr/lib/cni/*; do
    [ -e "$CNI_BIN_DIR/$(basename "$p")" ] && continue
    cp "$p" "$CNI_BIN_DIR/"
    echo "$CNI_BIN_DIR/$(basename "$p")" >> "$STATE/host-added"  # `stack down` removes it again
  done
  cat > "$STATE/containerd/config.toml.tmp" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "/run/kuryr-stack/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/kuryr/pause:3.10"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
  mv "$STATE/containerd/config.toml.tmp" "$STATE/containerd/config.toml"
  if ! running containerd; then
    log "starting containerd $(containerd --version | awk '{print $3}') (CRI)"
    start containerd "$LOGDIR/containerd.log" /usr/bin/containerd --config "$STATE/containerd/config.toml"
  fi
  ready containerd "$LOGDIR/containerd.log" 30 ctr --address "$CONTAINERD_SOCK" version
  local img ref have
  have=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q)
  for img in pause:3.10:pause busybox:1.35:busybox "coredns:$COREDNS_VERSION:coredns-$COREDNS_VERSION"; do
    ref=localhost/kuryr/${img%:*}
    if ! grep -qxF "$ref" <<<"$have"; then
      ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --all-platforms "$KURYR_CACHE/images/${img##*:}.tar" \
        >> "$LOGDIR/containerd.log" 2>&1 || fail containerd "$LOGDIR/containerd.log" "image import $ref"
    fi
  done
}

node_if_up() {
  # No dummy module in this kernel: one end of a veth pair holds the address.
  ip link show "$NODE_IF" >/dev/null 2>&1 || ip link add "$NODE_IF" type veth peer name "${NODE_IF}p"
  ip link set "${NODE_IF}p" up
  # (no `cmd | grep -q` under pipefail: grep exiting early SIGPIPEs cmd and fails the pipeline)
  grep -q "inet $NODE_IP/32" <<<"$(ip addr show dev "$NODE_IF")" || ip addr add "$NODE_IP/32" dev "$NODE_IF"
  ip link set "$NODE_IF" up
}

kubelet_up() {
  node_if_up
  if running kubelet && ! grep -q "clusterDNS: \[$CLUSTER_DNS_IP\]" "$STATE/kubelet.yaml" 2>/dev/null; then
    log "NOTE: the running kubelet has no clusterDNS $CLUSTER_DNS_IP (started by an older stack);" \
      "apply with: . hack/stack/lib.sh; stop_pid kubelet kubelet; hack/stack/stack up"
  fi
  if ! running kubelet; then
    mkdir -p "$KUBELET_DIR" "$STATE/manifests"
    cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: '$PKI/ca.crt'}
authorization: {mode: Webhook}
tlsCertFile: '$PKI/kubelet.crt'
tlsPrivateKeyFile: '$PKI/kubelet.key'
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
staticPodPath: '$STATE/manifests'
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
podPidsLimit: -1
maxPods: 250
EOF
    log "starting kubelet $K8S_VERSION (node $HOST, containerd CRI)"
    start kubelet "$LOGDIR/kubelet.log" "$K8S_BIN/kubelet" --config="$STATE/kubelet.yaml" \
      --kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$KUBELET_DIR" --hostname-override="$HOST" \
      --node-ip="$NODE_IP" --v=1
  fi
  ready kubelet "$LOGDIR/kubelet.log" 90 curl -sf -m 2 http://127.0.0.1:10248/healthz
  ready kubelet "$LOGDIR/kubelet.log" 60 "$K8S_BIN/kubectl" --kubeconfig "$KCFG" get node "$HOST"
}

# The cluster DNS (hack/stack/coredns.yaml): CoreDNS in kube-system on kuryr-rs pod networking
# behind the Service kube-dns ($CLUSTER_DNS_IP), applied once the node is registered, as kubeadm
# applies it with the control plane. Its pods stay ContainerCreating until kuryr-rs runs (no CNI
# before that), as on a kubeadm cluster before its network add-on. `kubectl apply` of an
# unchanged manifest changes nothing.
coredns_up() {
  sed -e "s|@CLUSTER_DNS_IP@|$CLUSTER_DNS_IP|g" -e "s|@COREDNS_VERSION@|$COREDNS_VERSION|g" \
    "$HERE/coredns.yaml" > "$STATE/coredns.yaml"
  "$K8S_BIN/kubectl" --kubeconfig "$KCFG" apply -f "$STATE/coredns.yaml" > "$LOGDIR/coredns-apply.log" 2>&1 \
    || fail coredns "$LOGDIR/coredns-apply.log" "kubectl apply $STATE/coredns.yaml"
  grep -qv 'unchanged$' "$LOGDIR/coredns-apply.log" && log "cluster DNS (CoreDNS $COREDNS_VERSION, Service kube-dns $CLUSTER_DNS_IP) applied"
  return 0
}

k8s_up() {
  [ -f "$STATE/node-port.env" ] || fail node-port "$LOGDIR/objects.log" "$STATE/node-port.env missing (node-port.sh up runs before k8s_up)"
  # shellcheck source=/dev/null
  . "$STATE/node-port.env"
  pki_up
  etcd_up
  apiserver_up
  controllers_up
  containerd_up
  kubelet_up
  coredns_up
}

k8s_down() {
  # kuryr-rs itself when run as host services (hack/kuryr-services).
  stop_pid kuryr-controller kuryr-controller
  stop_pid kuryr-daemon kuryr-daemon
  stop_pid kubelet kubelet
  # Pods the kubelet left behind: kill their tasks so their network (CNI DEL) and mounts go.
  if ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
    local c
    for c in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s KILL "$c" >/dev/null 2>&1
    done
  fi
  stop_pid containerd containerd
  # containerd-shim processes are re-parented to init; stop those of our containerd state dir.
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  stop_pid kube-scheduler kube-scheduler
  stop_pid kube-controller-manager kube-controller-manager
  stop_pid kube-apiserver kube-apiserver
  stop_pid etcd etcd
  # Unmount what kubelet and containerd mounted under our state dirs, deepest first.
  local m
  for m in $(awk -v a="$STATE" -v b=/run/kuryr-stack '$2 ~ "^"a || $2 ~ "^"b {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null
  done
  for m in /run/netns/cni-*; do [ -e "$m" ] && { umount -l "$m" 2>/dev/null; rm -f "$m"; }; done
  rm -rf /run/kuryr-stack
  ip link del "$NODE_IF" 2>/dev/null || true
}
