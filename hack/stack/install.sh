#!/usr/bin/env bash
# Install what the local stack needs: Debian packages, the Python venvs (cached in
# $KURYR_CACHE keyed by version), the Kubernetes/etcd binaries (built once from their
# Go modules), and the local images. Idempotent: a second run only checks.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
mkdir -p "$LOGDIR" "$KURYR_CACHE"

APT_PKGS="openvswitch-switch ovn-central ovn-host mariadb-server mariadb-client iproute2 iputils-ping
ethtool curl jq netcat-openbsd python3-venv python3-dev gcc libc6-dev containerd runc containernetworking-plugins
podman busybox-static conntrack iptables openssl socat procps psmisc"

install_apt() {
  local missing=() p
  for p in $APT_PKGS; do
    grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "apt packages present"; return; }
  log "apt-get install ${missing[*]}"
  local made_policy=0
  # No systemd here and we start every daemon ourselves: keep postinst scripts from starting them.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  local rc=0
  { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"; } \
    > "$LOGDIR/apt-install.log" 2>&1 || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || fail apt-get "$LOGDIR/apt-install.log" "package install failed"
}

install_venv() {  # venv constraints-file packages...
  local venv=$1 cons=$2; shift 2
  if [ -f "$venv/.complete" ]; then log "venv $venv cached"; return; fi
  log "pip install $* into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  local logf="$LOGDIR/pip-$(basename "$venv").log"
  { "$venv/bin/pip" install -q --upgrade pip setuptools wheel &&
    "$venv/bin/pip" install -q -c "$cons" "$@"; } > "$logf" 2>&1 || fail "pip ($(basename "$venv"))" "$logf" "pip install failed"
  touch "$venv/.complete"
}

t0=$(now)
install_apt
# The three venvs are independent: install them in parallel.
install_venv "$KVENV" "$HERE/constraints/keystone.txt" "keystone==$KEYSTONE_VERSION" PyMySQL gunicorn python-openstackclient python-octaviaclient &
p1=$!
install_venv "$NVENV" "$HERE/constraints/neutron.txt" "neutron==$NEUTRON_VERSION" PyMySQL gunicorn &
p2=$!
install_venv "$OVENV" "$HERE/constraints/octavia.txt" "octavia==$OCTAVIA_VERSION" "ovn-octavia-provider==$OVN_OCTAVIA_PROVIDER_VERSION" PyMySQL &
p3=$!
"$HERE/build-k8s.sh" all
wait $p1; wait $p2; wait $p3
"$HERE/images.sh"
log "install step took $(elapsed "$t0")s"
