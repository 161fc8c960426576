#!/usr/bin/env bash
# Populate Keystone (once, right after bootstrap) through the v3 REST API:
#   project "service": users neutron (role service) and octavia (roles admin, service)
#   catalog: network -> :9696, load-balancer -> :9876 (public/internal/admin, RegionOne)
#   project "k8s": user kuryr with roles member + kuryr (a role made here). Neutron's default
#     policy lets only admin or the service role (whose rule reaches every project) set
#     binding:host_id and read binding:vif_*; the stack's Neutron policy override
#     (etc/neutron/policy.yaml) grants them to the kuryr role in its own project only.
#   application credential "kuryr" owned by kuryr (only the owner can create one)
# Writes $STACK_STATE/clouds.yaml (clouds admin, kuryr [app credential], kuryr-password)
# and $STACK_STATE/kuryr-appcred.env.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
K=http://127.0.0.1:5000/v3

TOK=$(admin_token)
[ -n "$TOK" ] || { echo "keystone_setup: no admin token" >&2; exit 1; }
ks() {  # METHOD PATH [JSON]
  if [ $# -ge 3 ]; then curl -sf -m 30 -X "$1" -H "X-Auth-Token: $TOK" -H 'Content-Type: application/json' "$K$2" -d "$3"
  else curl -sf -m 30 -X "$1" -H "X-Auth-Token: $TOK" "$K$2"; fi
}
role_id() { ks GET "/roles?name=$1" | jq -r '.roles[0].id'; }
project() { ks POST /projects "{\"project\":{\"name\":\"$1\",\"domain_id\":\"default\",\"description\":\"$2\"}}" | jq -r .project.id; }
user() { ks POST /users "{\"user\":{\"name\":\"$1\",\"domain_id\":\"default\",\"password\":\"$2\",\"default_project_id\":\"$3\"}}" | jq -r .user.id; }
grant() { ks PUT "/projects/$1/users/$2/roles/$(role_id "$3")" >/dev/null; }
endpoint() {  # type name url
  local sid itf; sid=$(ks POST /services "{\"service\":{\"type\":\"$1\",\"name\":\"$2\"}}" | jq -r .service.id)
  for itf in public internal admin; do
    ks POST /endpoints "{\"endpoint\":{\"service_id\":\"$sid\",\"interface\":\"$itf\",\"url\":\"$3\",\"region_id\":\"RegionOne\"}}" >/dev/null
  done
}

SERVICE_P=$(project service "OpenStack service users")
K8S_P=$(project k8s "Kubernetes (kuryr-rs) resources")
NEUTRON_U=$(user neutron "$STACK_SERVICE_PASSWORD" "$SERVICE_P"); grant "$SERVICE_P" "$NEUTRON_U" service
OCTAVIA_U=$(user octavia "$STACK_SERVICE_PASSWORD" "$SERVICE_P")
grant "$SERVICE_P" "$OCTAVIA_U" service; grant "$SERVICE_P" "$OCTAVIA_U" admin
ks POST /roles '{"role":{"name":"kuryr","description":"kuryr-rs: binding attributes of its own project ports (Neutron policy override)"}}' >/dev/null
KURYR_U=$(user kuryr "$STACK_KURYR_PASSWORD" "$K8S_P"); grant "$K8S_P" "$KURYR_U" member; grant "$K8S_P" "$KURYR_U" kuryr
endpoint network neutron http://127.0.0.1:9696
endpoint load-balancer octavia http://127.0.0.1:9876

KTOK=$(token_pw kuryr "$STACK_KURYR_PASSWORD" k8s)
AC=$(curl -sf -m 30 -X POST -H "X-Auth-Token: $KTOK" -H 'Content-Type: application/json' \
  "$K/users/$KURYR_U/application_credentials" \
  -d '{"application_credential":{"name":"kuryr","description":"kuryr-controller on the local stack"}}')
AC_ID=$(echo "$AC" | jq -r .application_credential.id)
AC_SECRET=$(echo "$AC" | jq -r .application_credential.secret)
[ -n "$AC_ID" ] && [ "$AC_ID" != null ] || { echo "keystone_setup: application credential: $AC" >&2; exit 1; }

umask 077
cat > "$STATE/kuryr-appcred.env" <<ENV
APPCRED_ID=$AC_ID
APPCRED_SECRET=$AC_SECRET
K8S_PROJECT_ID=$K8S_P
SERVICE_PROJECT_ID=$SERVICE_P
KURYR_USER_ID=$KURYR_U
ENV
cat > "$STATE/clouds.yaml" <<YAML
clouds:
  admin:
    auth_type: password
    auth: {auth_url: 'http://127.0.0.1:5000/v3', username: admin, password: '$STACK_ADMIN_PASSWORD', project_name: admin, user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  kuryr:
    auth_type: v3applicationcredential
    auth: {auth_url: 'http://127.0.0.1:5000/v3', application_credential_id: '$AC_ID', application_credential_secret: '$AC_SECRET'}
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  kuryr-password:
    auth_type: password
    auth: {auth_url: 'http://127.0.0.1:5000/v3', username: kuryr, password: '$STACK_KURYR_PASSWORD', project_name: k8s, user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    interface: public
    identity_api_version: 3
YAML
echo "keystone_setup: projects service=$SERVICE_P k8s=$K8S_P; kuryr=$KURYR_U; application credential $AC_ID"
