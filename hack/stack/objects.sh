#!/usr/bin/env bash
# Create (idempotently, found by name) the OpenStack objects kuryr-rs needs on the local stack,
# owned by project k8s unless noted:
#   network kuryr-pods + subnet kuryr-pods (POD_CIDR), subnet pool kuryr-namespaces,
#   network kuryr-services + subnet kuryr-services (SVC_CIDR, Neutron allocates only from
#   the upper half; the apiserver's service range is the lower half), IPv6 subnets
#   kuryr-pods-v6 (POD_CIDR6) and kuryr-services-v6 (SVC_CIDR6, halves likewise) on the same
#   networks, router kuryr-router with interfaces on the four subnets, external network public (admin; its gateway_ip is the host's
#   address on br-ex, hack/stack/ext-net.sh) as router gateway,
#   security group kuryr-pods (all traffic from the pod and service subnets, the external
#   network and the namespace subnet pool);
#   the k8s project's network quotas raised (security groups, rules, ports, networks, subnets).
# Writes $STACK_STATE/stack.env (ids) and $STACK_STATE/kuryr.conf.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
exec >> "$LOGDIR/objects.log" 2>&1
echo "=== $(date -Is) objects.sh"
N=http://127.0.0.1:9696/v2.0
TOK=$(token_pw kuryr "$STACK_KURYR_PASSWORD" k8s)
ATOK=$(admin_token)
[ -n "$TOK" ] && [ -n "$ATOK" ] || { echo "objects: no keystone token"; exit 1; }

api() {  # TOKEN METHOD PATH [JSON] -> body; fails on HTTP >= 400 with the body shown
  local t=$1 m=$2 p=$3 out code
  out=$(mktemp)
  if [ $# -ge 4 ]; then
    code=$(curl -s -m 60 -o "$out" -w '%{http_code}' -X "$m" -H "X-Auth-Token: $t" -H 'Content-Type: application/json' "$N$p" -d "$4")
  else
    code=$(curl -s -m 60 -o "$out" -w '%{http_code}' -X "$m" -H "X-Auth-Token: $t" "$N$p")
  fi
  if [ "$code" -ge 400 ]; then echo "neutron $m $p: HTTP $code: $(cat "$out")" >&2; rm -f "$out"; return 1; fi
  cat "$out"; rm -f "$out"
}
# find_or_create TOKEN COLLECTION(plural) NAME JSON(create body) -> id
find_or_create() {
  local t=$1 coll=$2 name=$3 body=$4 single=${2%s} id
  [ "$coll" = subnetpools ] && single=subnetpool
  [ "$coll" = security-groups ] && single=security_group
  local key=${coll//-/_}
  id=$(api "$t" GET "/$coll?name=$name" | jq -r ".${key}[0].id // empty")
  if [ -z "$id" ]; then
    id=$(api "$t" POST "/$coll" "$body" | jq -r ".${single}.id")
    echo "created $single $name $id"
  fi
  echo "$id" > "$STATE/.last_id"
}
last() { cat "$STATE/.last_id"; }

find_or_create "$ATOK" networks public '{"network":{"name":"public","router:external":true,"provider:network_type":"flat","provider:physical_network":"public","shared":false}}'
EXT_NET=$(last)
find_or_create "$ATOK" subnets public-subnet "{\"subnet\":{\"name\":\"public-subnet\",\"network_id\":\"$EXT_NET\",\"ip_version\":4,\"cidr\":\"$EXT_CIDR\",\"gateway_ip\":\"$EXT_HOST_IP\",\"enable_dhcp\":false}}"
EXT_SUBNET=$(last)

find_or_create "$TOK" networks kuryr-pods '{"network":{"name":"kuryr-pods","description":"kuryr-rs default pod network"}}'
POD_NET=$(last)
find_or_create "$TOK" subnets kuryr-pods "{\"subnet\":{\"name\":\"kuryr-pods\",\"network_id\":\"$POD_NET\",\"ip_version\":4,\"cidr\":\"$POD_CIDR\",\"gateway_ip\":\"$POD_GW\",\"enable_dhcp\":false}}"
POD_SUBNET=$(last)
find_or_create "$TOK" subnets kuryr-pods-v6 "{\"subnet\":{\"name\":\"kuryr-pods-v6\",\"network_id\":\"$POD_NET\",\"ip_version\":6,\"cidr\":\"$POD_CIDR6\",\"gateway_ip\":\"$POD_GW6\",\"enable_dhcp\":false}}"
POD_SUBNET6=$(last)
find_or_create "$TOK" subnetpools kuryr-namespaces "{\"subnetpool\":{\"name\":\"kuryr-namespaces\",\"prefixes\":[\"$SUBNETPOOL_PREFIX\"],\"default_prefixlen\":24}}"
SUBNETPOOL=$(last)
find_or_create "$TOK" networks kuryr-services '{"network":{"name":"kuryr-services","description":"kuryr-rs service (Octavia VIP) network"}}'
SVC_NET=$(last)
find_or_create "$TOK" subnets kuryr-services "{\"subnet\":{\"name\":\"kuryr-services\",\"network_id\":\"$SVC_NET\",\"ip_version\":4,\"cidr\":\"$SVC_CIDR\",\"gateway_ip\":\"$SVC_GW\",\"enable_dhcp\":false,\"allocation_pools\":[{\"start\":\"$SVC_POOL_START\",\"end\":\"$SVC_POOL_END\"}]}}"
SVC_SUBNET=$(last)
find_or_create "$TOK" subnets kuryr-services-v6 "{\"subnet\":{\"name\":\"kuryr-services-v6\",\"network_id\":\"$SVC_NET\",\"ip_version\":6,\"cidr\":\"$SVC_CIDR6\",\"gateway_ip\":\"$SVC_GW6\",\"enable_dhcp\":false,\"allocation_pools\":[{\"start\":\"$SVC_POOL6_START\",\"end\":\"$SVC_POOL6_END\"}]}}"
SVC_SUBNET6=$(last)
find_or_create "$TOK" routers kuryr-router '{"router":{"name":"kuryr-router"}}'
ROUTER=$(last)
ifaces=$(api "$TOK" GET "/ports?device_id=$ROUTER" | jq -r '[.ports[].fixed_ips[].subnet_id] | join(" ")')
for s in $POD_SUBNET $SVC_SUBNET $POD_SUBNET6 $SVC_SUBNET6; do
  case " $ifaces " in *" $s "*) ;; *) api "$TOK" PUT "/routers/$ROUTER/add_router_interface" "{\"subnet_id\":\"$s\"}" >/dev/null; echo "router interface on $s";; esac
done
gw=$(api "$TOK" GET "/routers/$ROUTER" | jq -r '.router.external_gateway_info.network_id // empty')
if [ -z "$gw" ]; then
  api "$ATOK" PUT "/routers/$ROUTER" "{\"router\":{\"external_gateway_info\":{\"network_id\":\"$EXT_NET\"}}}" >/dev/null \
    && echo "router gateway on public"
fi
find_or_create "$TOK" security-groups kuryr-pods '{"security_group":{"name":"kuryr-pods","description":"kuryr-rs default pod security group"}}'
SG=$(last)
rules=$(api "$TOK" GET "/security-group-rules?security_group_id=$SG&direction=ingress" | jq -r '[.security_group_rules[].remote_ip_prefix] | join(" ")')
# EXT_CIDR: clients through floating IPs (OVN load balancers keep the client's source address).
# SUBNETPOOL_PREFIX: pods on namespace networks (pod_subnets_driver = namespace).
for c in $POD_CIDR $SVC_CIDR $EXT_CIDR $SUBNETPOOL_PREFIX $POD_CIDR6 $SVC_CIDR6; do
  case $c in *:*) et=IPv6;; *) et=IPv4;; esac
  case " $rules " in *" $c "*) ;; *)
    api "$TOK" POST /security-group-rules "{\"security_group_rule\":{\"security_group_id\":\"$SG\",\"direction\":\"ingress\",\"ethertype\":\"$et\",\"remote_ip_prefix\":\"$c\"}}" >/dev/null
    echo "sg rule ingress from $c";; esac
done
rm -f "$STATE/.last_id"
. "$STATE/kuryr-appcred.env"
# Quotas a cluster's worth of pods, Services and NetworkPolicies needs (Neutron's defaults:
# 10 security groups, 100 rules, 500 ports per project; upstream kuryr's docs raise them too).
api "$ATOK" PUT "/quotas/$K8S_PROJECT_ID" '{"quota":{"security_group":1000,"security_group_rule":10000,"port":2000,"network":200,"subnet":200}}' >/dev/null

cat > "$STATE/stack.env.tmp" <<ENV
# Written by hack/stack/objects.sh: ids of the local stack's OpenStack objects.
STACK_HOST=$HOST
K8S_PROJECT_ID=$K8S_PROJECT_ID
POD_NET_ID=$POD_NET
POD_SUBNET_ID=$POD_SUBNET
POD_CIDR=$POD_CIDR
POD_GW=$POD_GW
SUBNETPOOL_ID=$SUBNETPOOL
SERVICE_NET_ID=$SVC_NET
SERVICE_SUBNET_ID=$SVC_SUBNET
SERVICE_CIDR=$SVC_CIDR
K8S_SERVICE_CIDR=$K8S_SVC_CIDR
POD_SUBNET6_ID=$POD_SUBNET6
POD_CIDR6=$POD_CIDR6
SERVICE_SUBNET6_ID=$SVC_SUBNET6
SERVICE_CIDR6=$SVC_CIDR6
K8S_SERVICE_CIDR6=$K8S_SVC_CIDR6
ROUTER_ID=$ROUTER
EXT_NET_ID=$EXT_NET
EXT_SUBNET_ID=$EXT_SUBNET
POD_SG_ID=$SG
OVS_BRIDGE=br-int
CLOUDS_YAML=$STATE/clouds.yaml
KUBECONFIG=$STATE/kubeconfig
STACK_STATE=$STATE
K8S_BIN=$K8S_BIN
OPENSTACK_CLI=$KVENV/bin/openstack
ENV
mv "$STATE/stack.env.tmp" "$STATE/stack.env"

umask 077
cat > "$STATE/kuryr.conf.tmp" <<CONF
# kuryr.conf for the local stack (same sections and options as upstream kuryr-kubernetes).
[DEFAULT]
debug = false

[kubernetes]
api_root = https://127.0.0.1:6443
ssl_ca_crt_file = $STATE/pki/ca.crt
ssl_verify_server_crt = true
pod_vif_driver = neutron-vif
vif_pool_driver = noop
pod_subnets_driver = default
pod_security_groups_driver = default
enabled_handlers = vif,kuryrport,service,endpoints,kuryrloadbalancer
endpoints_driver_octavia_provider = ovn

[neutron]
auth_type = v3applicationcredential
auth_url = http://127.0.0.1:5000/v3
application_credential_id = $APPCRED_ID
application_credential_secret = $APPCRED_SECRET
region_name = RegionOne
endpoint_type = public

[neutron_defaults]
project = $K8S_PROJECT_ID
pod_subnet = $POD_SUBNET
pod_security_groups = $SG
service_subnet = $SVC_SUBNET
# kuryr-rs: one service subnet per IP family (IPv6 Services get their VIP on the second).
service_subnets = $SVC_SUBNET,$SVC_SUBNET6
ovs_bridge = br-int
external_svc_net = $EXT_NET
resource_tags = kuryr-rs-local

[namespace_subnet]
pod_router = $ROUTER
pod_subnet_pool = $SUBNETPOOL

[octavia_defaults]
member_mode = L2
enforce_sg_rules = false
lb_algorithm = SOURCE_IP_PORT

[binding]
default_driver = kuryr.lib.binding.drivers.veth

[cni_daemon]
vif_annotation_timeout = 60
CONF
mv "$STATE/kuryr.conf.tmp" "$STATE/kuryr.conf"
echo "objects ok"
