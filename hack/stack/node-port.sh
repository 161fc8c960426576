#!/usr/bin/env bash
# The node's own port on the pod network, as a Kubernetes node on OpenStack has (its VM NIC on
# the pods' network): a Neutron port `kuryr-node-$HOST` bound to this host, plugged into br-int
# as a veth whose host end `kst-pod0` carries the port's MAC and IP, a route to the pod CIDR
# through it, and SNAT of other host sources (the node IP, hostPort DNAT) to the port's IP so
# Neutron port security accepts them. Gives kubelet (probes), hostPort (portmap) and the host's
# tools a path to pods. The service CIDR (ClusterIPs = Octavia VIPs on the `kuryr-services`
# subnet) is routed through the pod network's gateway (kuryr-router), from the port's IP: the host
# reaches ClusterIPs as a node on a real cloud does, through its NIC and the Neutron router, with
# no kube-proxy. Pods reach the host (the apiserver advertises the port's IP) on this port too.
# Idempotent.
#   hack/stack/node-port.sh up | down
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
DEV=kst-pod0
PEER=kst-pod0p
NAME=kuryr-node-$HOST
N=http://127.0.0.1:9696/v2.0

snat_rule() { echo "POSTROUTING -o $DEV ! -s $1 -m comment --comment kuryr-stack-node-port -j SNAT --to-source $1"; }

case "${1:-up}" in
up)
  [ -t 1 ] || exec >> "$LOGDIR/objects.log" 2>&1
  echo "=== $(date -Is) node-port.sh up"
  . "$STATE/stack.env"
  ATOK=$(admin_token)
  port=$(curl -sf -m 60 -H "X-Auth-Token: $ATOK" "$N/ports?name=$NAME&network_id=$POD_NET_ID" | jq -c '.ports[0] // empty')
  if [ -z "$port" ]; then
    port=$(curl -s -m 60 -X POST -H "X-Auth-Token: $ATOK" -H 'Content-Type: application/json' "$N/ports" -d "{\"port\":{\"name\":\"$NAME\",\"network_id\":\"$POD_NET_ID\",\"project_id\":\"$K8S_PROJECT_ID\",\"device_owner\":\"kuryr:node\",\"device_id\":\"$HOST\",\"binding:host_id\":\"$HOST\",\"security_groups\":[\"$POD_SG_ID\"]}}" | jq -c .)
    jq -e .port <<<"$port" >/dev/null || { echo "node port: Neutron refused: $port"; exit 1; }
    port=$(jq -c .port <<<"$port")
    echo "created node port $(jq -r .id <<<"$port")"
  fi
  id=$(jq -r .id <<<"$port"); mac=$(jq -r .mac_address <<<"$port"); ip=$(jq -r '.fixed_ips[0].ip_address' <<<"$port")
  if ! ip link show "$DEV" >/dev/null 2>&1; then
    ip link add "$DEV" type veth peer name "$PEER"
  fi
  ip link set "$DEV" address "$mac"
  ip link set "$DEV" mtu 1442; ip link set "$PEER" mtu 1442
  ip link set "$PEER" up; ip link set "$DEV" up
  grep -q "inet $ip/32" <<<"$(ip addr show dev "$DEV")" || ip addr add "$ip/32" dev "$DEV"
  ip route replace "$POD_CIDR" dev "$DEV" src "$ip"
  ip route replace "$SVC_CIDR" via "$POD_GW" dev "$DEV" src "$ip"
  # Namespace networks (pod_subnets_driver = namespace) hang off kuryr-router too: kubelet's probes
  # reach their pods the way a node on a real cloud does, through its Neutron port and the router.
  ip route replace "$SUBNETPOOL_PREFIX" via "$POD_GW" dev "$DEV" src "$ip"
  ovs-vsctl --may-exist add-port br-int "$PEER" -- set Interface "$PEER" \
    external_ids:iface-id="$id" external_ids:attached-mac="$mac" external_ids:iface-status=active \
    external_ids:vm-uuid="$HOST"
  # shellcheck disable=SC2046
  iptables -t nat -C $(snat_rule "$ip") 2>/dev/null || iptables -t nat -A $(snat_rule "$ip")
  sysctl -qw "net.ipv4.conf.$DEV.rp_filter=0" || true
  # Pods' interfaces have their host ends (kuryr-daemon's tap veths) in this kernel too, which by
  # default answers ARP for any local address on any interface: a pod asking for this port's IP
  # got the MAC of its own tap and its packets never reached the port (pod -> NODE_PORT_IP:6443
  # timed out). arp_filter answers only on the interface the kernel routes the asker through
  # (kst-pod0 for the pod CIDR). A node on a real cloud has no pod taps in its kernel. Host-wide
  # (taps come and go): the fresh value is saved and `down` puts it back.
  if [ "$(sysctl -n net.ipv4.conf.all.arp_filter)" != 1 ]; then
    [ -f "$STATE/host-sysctl" ] || echo "net.ipv4.conf.all.arp_filter=$(sysctl -n net.ipv4.conf.all.arp_filter)" > "$STATE/host-sysctl"
    sysctl -qw net.ipv4.conf.all.arp_filter=1
  fi
  {
    echo "NODE_PORT_ID=$id"
    echo "NODE_PORT_IP=$ip"
    echo "NODE_PORT_DEV=$DEV"
  } > "$STATE/node-port.env"
  echo "node port $id $ip ($mac) on $DEV"
  ;;
down)
  if [ -f "$STATE/node-port.env" ]; then
    . "$STATE/node-port.env"
    # shellcheck disable=SC2046
    iptables -t nat -D $(snat_rule "$NODE_PORT_IP") 2>/dev/null || true
  fi
  ip route del "$SVC_CIDR" dev "$DEV" 2>/dev/null || true
  ip route del "$SUBNETPOOL_PREFIX" dev "$DEV" 2>/dev/null || true
  if [ -f "$STATE/host-sysctl" ]; then
    while read -r kv; do sysctl -qw "$kv" || true; done < "$STATE/host-sysctl"
    rm -f "$STATE/host-sysctl"
  fi
  ovs-vsctl --timeout=5 --if-exists del-port br-int "$PEER" 2>/dev/null || true
  ip link del "$DEV" 2>/dev/null || true
  ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
