#!/usr/bin/env bash
# The external network made real (issue 13): Neutron's `public` network (flat, physical_network
# `public`, EXT_CIDR, created by objects.sh as kuryr-router's gateway) gets a bridge on this host,
# and the host an address on it, so a floating IP — on a plain port, or on the VIP port of an
# Octavia ovn-provider load balancer — answers from the host as it does from outside a cloud.
#
#   hack/stack/ext-net.sh up     idempotent; `stack up` runs it right after Open vSwitch starts
#                                (before ovn-controller registers the chassis and before objects.sh
#                                sets the router gateway), and on an already-up stack it is enough
#                                by itself (Neutron reschedules the gateway port, waited for here)
#   hack/stack/ext-net.sh check  wait until kuryr-router's gateway port is bound to this chassis
#                                and br-ex is patched to br-int (`stack up` runs it after objects.sh)
#   hack/stack/ext-net.sh down   undo (`stack down`; host_reset deletes a br-ex tap left behind)
#
# Step by step (what devstack's OVN setup does, on the userspace datapath):
#  1. OVS bridge br-ex with datapath_type=netdev like br-int (ovn-bridge-datapath-type=netdev):
#     ovn-controller's patch port between br-int and br-ex only forwards between bridges of the
#     same datapath type. fail_mode stays standalone (NORMAL switching between the patch port and
#     the bridge's local port).
#  2. Open_vSwitch external_ids ovn-bridge-mappings=public:br-ex (ovn-controller then patches the
#     `public` switch's localnet port to br-ex) and ovn-cms-options=enable-chassis-as-gw. Neutron
#     (ML2/OVN) schedules a router's gateway port only on a chassis that has the network's physnet
#     in its bridge mappings (and, once any chassis has the option, only on enable-chassis-as-gw
#     ones). Without it the port has no gateway chassis: no chassisredirect port, no ARP for the
#     router's gateway IP or its FIPs. When the mappings are set before ovn-controller first starts,
#     the chassis registers with them and objects.sh's gateway is scheduled at once; on a running
#     stack Neutron's Chassis event (ChassisEvent -> schedule_unhosted_gateways) reschedules it.
#  3. The host address EXT_HOST_IP (172.24.4.1/24, the public subnet's gateway_ip: kuryr-router's
#     default route points at it) on br-ex, link up. With the userspace datapath the bridge's local
#     port is a tap device that vswitchd reads; the kernel's connected route makes every FIP
#     (172.24.4.0/24) on-link through it. A tap outlives a crashed vswitchd (address kept); a
#     cleanly stopped one deletes it: `up` puts it back.
# Floating IPs are centralized NAT on the gateway chassis (ml2_conf.ini
# enable_distributed_floating_ip=false; one node, so either would do). For a FIP on an ovn-provider
# LB's VIP port Neutron writes the FIP into the VIP port's external_ids (neutron:port_fip) and the
# provider's driver agent (octavia-driver-agent, LogicalSwitchPortUpdateEvent -> handle_vip_fip)
# adds FIP:port as a VIP of the OVN load balancer, which is on kuryr-router.
# Host interplay: net.ipv4.conf.all.arp_filter=1 (node-port.sh) answers ARP for 172.24.4.1 only on
# br-ex (the route to the router's 172.24.4.x is there), as wanted. rp_filter needs nothing: replies
# from FIPs come in on br-ex, the interface of the route back. ip_forward stays as it is: the host
# is the external network's end, nothing is routed off this machine (pods' traffic to other
# addresses is SNATed by kuryr-router to its gateway IP and stops at the host).
# A FIP's traffic keeps its source (172.24.4.1 from the host): the target port's security groups
# must allow EXT_CIDR (the stack's kuryr-pods group allows only the pod and service subnets).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
BR=br-ex
PHYSNET=public
PREFIX=${EXT_CIDR#*/}
VSCTL="ovs-vsctl --timeout=30"
NB="ovn-nbctl --timeout=10 --db=unix:/var/run/ovn/ovnnb_db.sock"
SB="ovn-sbctl --timeout=10 --db=unix:/var/run/ovn/ovnsb_db.sock"

# The gateway LRPs of routers on the external network (neutron:is_ext_gw), or nothing when the NB
# database is not up yet (`stack up` before ovn_up).
ext_gw_lrps() {
  [ -S /var/run/ovn/ovnnb_db.sock ] || return 0
  $NB --bare --columns=name find Logical_Router_Port 'external_ids:"neutron:is_ext_gw"="True"' 2>/dev/null | sed '/^$/d'
}

# gw_ready LRP...: each LRP's chassisredirect port is bound to this chassis and br-ex has the
# localnet patch port from br-int.
gw_ready() {
  local ch lrp
  ch=$($SB --bare --columns=_uuid find Chassis name="$HOST" 2>/dev/null)
  [ -n "$ch" ] || return 1
  for lrp in "$@"; do
    [ "$($SB --bare --columns=chassis find Port_Binding logical_port="cr-$lrp" 2>/dev/null)" = "$ch" ] || return 1
  done
  grep -q '^patch-' <<<"$($VSCTL list-ports "$BR" 2>/dev/null)"
}

# wait_gw SECONDS: wait until the gateway ports are hosted here; exit 1 with what is missing.
wait_gw() {
  local lrps end
  mapfile -t lrps < <(ext_gw_lrps)
  if [ ${#lrps[@]} = 0 ]; then echo "no router gateway on the external network yet"; return 0; fi
  end=$(( $(date +%s) + $1 ))
  until gw_ready "${lrps[@]}"; do
    if [ "$(date +%s)" -ge "$end" ]; then
      echo "ext-net: router gateway port(s) ${lrps[*]} not bound to chassis $HOST (or no patch port on $BR) after $1s"
      echo "  chassis other_config: $($SB --bare --columns=other_config find Chassis name="$HOST" 2>/dev/null)"
      echo "  gateway_chassis/ha_chassis_group: $($NB --bare --columns=gateway_chassis,ha_chassis_group find Logical_Router_Port 'external_ids:"neutron:is_ext_gw"="True"' 2>/dev/null | tr '\n' ' ')"
      echo "  ports on $BR: $($VSCTL list-ports "$BR" 2>/dev/null | tr '\n' ' ')"
      return 1
    fi
    sleep 0.5
  done
  echo "router gateway port(s) ${lrps[*]} on chassis $HOST, $BR patched to br-int"
}

case "${1:-up}" in
up)
  [ -t 1 ] || exec >> "$LOGDIR/ext-net.log" 2>&1
  echo "=== $(date -Is) ext-net.sh up"
  ovs-appctl -t /var/run/openvswitch/ovs-vswitchd.ctl version >/dev/null 2>&1 \
    || { echo "ext-net: ovs-vswitchd is not running"; exit 1; }
  # 1. The bridge (waits for vswitchd, which creates its tap).
  $VSCTL --may-exist add-br "$BR" -- set Bridge "$BR" datapath_type=netdev
  # 2. The physnet mapping and the gateway-chassis option (ovn-controller copies both into its
  #    Chassis row's other_config, where Neutron reads them).
  $VSCTL set Open_vSwitch . external_ids:ovn-bridge-mappings="$PHYSNET:$BR" \
    external_ids:ovn-cms-options=enable-chassis-as-gw
  # 3. The host's address on the bridge's tap.
  for _ in $(seq 50); do ip link show "$BR" >/dev/null 2>&1 && break; sleep 0.1; done
  ip link show "$BR" >/dev/null 2>&1 || { echo "ext-net: vswitchd made no $BR device"; exit 1; }
  grep -q "inet $EXT_HOST_IP/$PREFIX " <<<"$(ip -4 addr show dev "$BR")" || ip addr add "$EXT_HOST_IP/$PREFIX" dev "$BR"
  ip link set "$BR" up
  echo "$BR (netdev) mapped to physnet $PHYSNET, host address $EXT_HOST_IP/$PREFIX"
  # On a running stack: Neutron reschedules the existing gateway port when the chassis changes
  # (during `stack up` from scratch OVN and Neutron are not up yet: `check` runs after objects.sh).
  if running ovn-controller && running neutron-api; then wait_gw 60; fi
  ;;
check)
  [ -t 1 ] || exec >> "$LOGDIR/ext-net.log" 2>&1
  echo "=== $(date -Is) ext-net.sh check"
  wait_gw 60
  ;;
down)
  # OVS may be gone already (its database too, with the state directory): best effort.
  ovs-vsctl --timeout=5 --if-exists del-br "$BR" 2>/dev/null || true
  ovs-vsctl --timeout=5 remove Open_vSwitch . external_ids ovn-bridge-mappings ovn-cms-options 2>/dev/null || true
  # A tap of the userspace datapath outlives a vswitchd that did not delete it (its address and
  # the connected route to EXT_CIDR go with it).
  ip link del "$BR" 2>/dev/null || true
  ;;
*) echo "usage: $0 up|check|down" >&2; exit 2 ;;
esac
