# shellcheck shell=bash
# Shared helpers for the local all-in-one stack (sourced by hack/stack/*.sh).
HERE=${HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
# shellcheck source=versions.env
. "$HERE/versions.env"
export KURYR_CACHE=${KURYR_CACHE:-/var/cache/kuryr-rs}
export STACK_STATE=${STACK_STATE:-/var/lib/kuryr-stack}
STATE=$STACK_STATE
LOGDIR=$STATE/log
PIDDIR=$STATE/pids
HOST=$(hostname)
K8S_BIN=$KURYR_CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$KURYR_CACHE/etcd-$ETCD_VERSION/bin
KVENV=$KURYR_CACHE/venv-keystone-$KEYSTONE_VERSION
NVENV=$KURYR_CACHE/venv-neutron-$NEUTRON_VERSION
OVENV=$KURYR_CACHE/venv-octavia-$OCTAVIA_VERSION
export STACK_ADMIN_PASSWORD=${STACK_ADMIN_PASSWORD:-admin}
export STACK_SERVICE_PASSWORD=${STACK_SERVICE_PASSWORD:-stack-service}
export STACK_KURYR_PASSWORD=${STACK_KURYR_PASSWORD:-stack-kuryr}

# Network plan (all inside OVN / network namespaces; nothing is routed off this machine).
POD_CIDR=10.244.0.0/16
POD_GW=10.244.0.1
SVC_CIDR=10.96.0.0/16          # Neutron service subnet (Octavia VIPs = Service cluster IPs)
K8S_SVC_CIDR=10.96.0.0/17      # kube-apiserver --service-cluster-ip-range (lower half)
SVC_POOL_START=10.96.128.2     # Neutron allocates only from the upper half
SVC_POOL_END=10.96.255.253
SVC_GW=10.96.255.254
SUBNETPOOL_PREFIX=10.128.0.0/14 # per-namespace subnets (/24 each)
# IPv6 (dual-stack): a second subnet on the pod and service networks, and a second service range.
# Pods get an IPv6 address only where kuryr.conf lists both pod subnets (pod_subnets); the
# stack's kuryr.conf lists both service subnets (service_subnets), so IPv6 Services get VIPs.
POD_CIDR6=fd00:10:244::/64
POD_GW6=fd00:10:244::1
SVC_CIDR6=fd00:10:96::/111        # Neutron IPv6 service subnet
K8S_SVC_CIDR6=fd00:10:96::/112    # the apiserver's second service range (lower half)
SVC_POOL6_START=fd00:10:96::1:2   # Neutron allocates only from the upper half
SVC_POOL6_END=fd00:10:96::1:fffd
SVC_GW6=fd00:10:96::1:fffe
EXT_CIDR=172.24.4.0/24        # Neutron external network `public` (flat, physnet public on br-ex)
EXT_HOST_IP=172.24.4.1         # the host's address on br-ex = the public subnet's gateway_ip (ext-net.sh)

log() { echo "[stack $(date +%T)] $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# fail SERVICE LOGFILE MESSAGE: stop with the service's name and the end of its log.
fail() {
  local svc=$1 logf=$2; shift 2
  {
    echo "[stack] FAILED: $svc: $*"
    if [ -n "$logf" ] && [ -f "$logf" ]; then
      echo "[stack] last lines of $logf:"
      tail -n 25 "$logf" | sed 's/^/    /'
    fi
  } >&2
  exit 1
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$PIDDIR/$1.pid" 2>/dev/null || true; }
running() { alive "$(pid_of "$1")"; }

# start NAME LOGFILE CMD...: run CMD in the background under the stack's supervisor (`supervise`,
# its own process group: restarted when it dies, crashes recorded), and wait until its pid is
# recorded. The caller then waits for readiness with `ready`.
start() {
  local name=$1 logf=$2 i; shift 2
  mkdir -p "$PIDDIR" "$LOGDIR"
  echo "=== $(date -Is) starting: $*" >> "$logf"
  rm -f "$PIDDIR/$name.pid" "$PIDDIR/$name.sup"
  PIDDIR=$PIDDIR STATE=$STATE LOGDIR=$LOGDIR setsid "$HERE/supervise" "$name" "$logf" "$@" >> "$logf" 2>&1 < /dev/null &
  for i in $(seq 100); do [ -s "$PIDDIR/$name.pid" ] && return 0; sleep 0.05; done
  fail "$name" "$logf" "the supervisor did not start it"
}

# ready NAME LOGFILE SECONDS CHECK...: wait until CHECK succeeds; fail fast with the
# service's log if its process died, or after SECONDS.
ready() {
  local name=$1 logf=$2 secs=$3; shift 3
  local end=$(( $(date +%s) + secs )) pid
  pid=$(pid_of "$name")
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! alive "$pid"; then
      fail "$name" "$logf" "process $pid exited before it was ready"
    fi
    [ "$(date +%s)" -ge "$end" ] && fail "$name" "$logf" "not ready after ${secs}s (check: $*)"
    sleep 0.2
  done
}

# stop_pid NAME [EXPECTED_CMDLINE] [WAIT_TENTHS]: stop the service's supervisor first (no
# restart), then TERM the recorded pid and its process group, then KILL what is left. Only
# touches a pid whose cmdline still matches.
stop_pid() {
  local name=$1 want=${2:-} tenths=${3:-50} pid sup pg i
  pid=$(pid_of "$name")
  sup=$(cat "$PIDDIR/$name.sup" 2>/dev/null || true)
  rm -f "$PIDDIR/$name.pid" "$PIDDIR/$name.sup"
  pg=$pid
  if alive "$sup" && grep -q supervise <<<"$(tr '\0' ' ' < "/proc/$sup/cmdline" 2>/dev/null)"; then
    kill -KILL "$sup" 2>/dev/null || true
    pg=$sup
  fi
  alive "$pid" || return 0
  if [ -n "$want" ] && ! grep -q -- "$want" <<<"$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)"; then
    echo "[stack] pid $pid is not '$want' any more; leaving it alone"; return 0
  fi
  kill -TERM -- "-$pg" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq "$tenths"); do alive "$pid" || break; sleep 0.1; done
  kill -KILL -- "-$pg" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true
  return 0
}

# crashes [SINCE]: the supervisor's crash lines (all, or those at or after SINCE, an ISO time).
crashes() {
  [ -f "$STATE/crashes" ] || return 0
  awk -v s="${1:-}" '$1 >= s' "$STATE/crashes"
}

# Keystone tokens via curl (fast; the openstack CLI costs ~1.5 s per call).
token_pw() {  # user password project
  curl -sf -m 30 -D - -o /dev/null -H 'Content-Type: application/json' http://127.0.0.1:5000/v3/auth/tokens \
    -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"$1\",\"domain\":{\"id\":\"default\"},\"password\":\"$2\"}}},\"scope\":{\"project\":{\"name\":\"$3\",\"domain\":{\"id\":\"default\"}}}}}" \
    | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}' | tr -d '\r'
}
admin_token() { token_pw admin "$STACK_ADMIN_PASSWORD" admin; }
