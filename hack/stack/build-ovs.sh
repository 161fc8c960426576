#!/usr/bin/env bash
# Build Open vSwitch $OVS_VERSION (userspace only) from Debian's source package, once, into a
# cache outside the repo keyed by version:
#   $KURYR_CACHE/ovs-$OVS_VERSION/{sbin/ovs-vswitchd,sbin/ovsdb-server,bin/*,share/openvswitch/*.ovsschema}
#
# Why: Debian 12's openvswitch 3.1.0 aborts in its userspace conntrack under NAT traffic
# (`conntrack.c:1063: assertion conn->conn_type == CT_CONN_TYPE_DEFAULT failed in
# conn_update_state()`, issue 18); OVS 3.2 removed the separate un-NAT connection objects that
# assertion guards. Debian 13's package (3.5.0) cannot be rebuilt as a package on Debian 12 (it
# needs DPDK >= 24.11 and libxdp), so its upstream tarball (`apt-get source` from the trixie
# archive, through a private apt state: the host's sources are not touched) is configured
# without DPDK/AF_XDP — the userspace (netdev) datapath this stack uses needs neither.
# OVN stays Debian 12's (23.03): it speaks OVSDB and OpenFlow to vswitchd, both versioned.
# A second run with the binaries present does nothing.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/versions.env"
CACHE=${KURYR_CACHE:-/var/cache/kuryr-rs}
OUT=$CACHE/ovs-$OVS_VERSION
log() { echo "[build-ovs $(date +%T)] $*"; }

if [ -x "$OUT/sbin/ovs-vswitchd" ] && [ -f "$OUT/.complete" ]; then
  log "Open vSwitch $OVS_VERSION cached in $OUT"; exit 0
fi
t0=$(date +%s)
work=$(mktemp -d "$CACHE/.ovs-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
apt=$work/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$work/src"
echo "deb-src http://deb.debian.org/debian $OVS_DEBIAN_SUITE main" > "$apt/sources.list"
A=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
log "fetching Debian's openvswitch $OVS_DEBIAN_VERSION source ($OVS_DEBIAN_SUITE)"
apt-get "${A[@]}" update -qq
( cd "$work/src" && apt-get "${A[@]}" source --download-only -qq "openvswitch=$OVS_DEBIAN_VERSION" )
tarball=$(ls "$work"/src/openvswitch_"${OVS_VERSION}".orig.tar.* | head -1)
tar -C "$work" -xf "$tarball"
src=$(ls -d "$work"/openvswitch-"${OVS_VERSION}"* | head -1)
# Build dependencies present on Debian 12 (no DPDK, no AF_XDP, no SSL needed on loopback).
missing=()
for p in autoconf automake libtool pkgconf libcap-ng-dev libssl-dev python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "configuring and building (userspace only; ~10 minutes on 2 cores)"
(
  cd "$src"
  [ -x configure ] || ./boot.sh >/dev/null
  ./configure -q --prefix="$OUT" --localstatedir=/var --sysconfdir=/etc --disable-dependency-tracking \
    --enable-silent-rules --without-dpdk --disable-afxdp > "$work/configure.log" 2>&1 \
    || { tail -n 30 "$work/configure.log" >&2; exit 1; }
  make -s -j"$(nproc)" vswitchd/ovs-vswitchd ovsdb/ovsdb-server ovsdb/ovsdb-tool utilities/ovs-vsctl \
    utilities/ovs-appctl utilities/ovs-ofctl vswitchd/vswitch.ovsschema > "$work/make.log" 2>&1 \
    || { tail -n 30 "$work/make.log" >&2; exit 1; }
  rm -rf "$OUT"; mkdir -p "$OUT/sbin" "$OUT/bin" "$OUT/share/openvswitch"
  install -m 755 vswitchd/ovs-vswitchd ovsdb/ovsdb-server "$OUT/sbin/"
  install -m 755 ovsdb/ovsdb-tool utilities/ovs-vsctl utilities/ovs-appctl utilities/ovs-ofctl "$OUT/bin/"
  install -m 644 vswitchd/vswitch.ovsschema "$OUT/share/openvswitch/"
)
"$OUT/sbin/ovs-vswitchd" --version | head -1
touch "$OUT/.complete"
log "Open vSwitch $OVS_VERSION built in $(( $(date +%s) - t0 ))s into $OUT"
