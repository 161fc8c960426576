#!/usr/bin/env bash
# Build the pinned Kubernetes server binaries and etcd from their Go modules, once,
# into a cache outside the repo keyed by version:
#   $KURYR_CACHE/k8s-$K8S_VERSION/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kubectl}
#   $KURYR_CACHE/etcd-$ETCD_VERSION/bin/{etcd,etcdctl}
#   $KURYR_CACHE/coredns-$COREDNS_VERSION/bin/coredns   (the cluster DNS; images.sh makes its image)
#   $KURYR_CACHE/cni-plugins-$CNI_PLUGINS_VERSION/bin/{portmap,bandwidth}   (shipped with kuryr-rs:
#     the daemon image carries them, kuryr-daemon installs them next to kuryr-cni)
# A second run with the binaries present does nothing. k8s.io/kubernetes keeps its
# staging modules as `replace => ./staging/...`; a module that depends on it needs
# those replaced by the published k8s.io/<name> v0.<minor>.<patch> versions, which this
# script derives from k8s.io/kubernetes' own go.mod.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/versions.env"
CACHE=${KURYR_CACHE:-/var/cache/kuryr-rs}
log() { echo "[build-k8s $(date +%T)] $*"; }

build_k8s() {
  local out="$CACHE/k8s-$K8S_VERSION" bins="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
  local b missing=0
  for b in $bins; do [ -x "$out/bin/$b" ] || missing=1; done
  [ $missing = 0 ] && { log "kubernetes $K8S_VERSION binaries cached in $out/bin"; return; }
  local mod="$out/src"; mkdir -p "$mod" "$out/bin"
  local staging=${K8S_VERSION/v1./v0.}
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || { echo "cannot download k8s.io/kubernetes@$K8S_VERSION go.mod" >&2; exit 1; }
  {
    echo "module kuryr-rs.local/k8sbuild"
    echo
    grep '^go ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'EOF'
//go:build tools

package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  log "resolving modules for kubernetes $K8S_VERSION (staging at $staging)"
  (cd "$mod" && GOFLAGS=-mod=mod go mod tidy -e >"$out/tidy.log" 2>&1) || { tail -20 "$out/tidy.log"; exit 1; }
  local maj=${K8S_VERSION#v}; maj=${maj%%.*}
  local min=${K8S_VERSION#v*.}; min=${min%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$maj -X $p.gitMinor=$min -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "building $bins (this takes a while on 2 cores)"
  local t0=$SECONDS pkgs=""
  for b in $bins; do pkgs="$pkgs k8s.io/kubernetes/cmd/$b"; done
  # shellcheck disable=SC2086
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/bin/" $pkgs) >"$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log"; echo "kubernetes build failed (log: $out/build.log)" >&2; exit 1; }
  log "kubernetes $K8S_VERSION built in $((SECONDS - t0))s"
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION"
  [ -x "$out/bin/etcd" ] && { log "etcd $ETCD_VERSION cached in $out/bin"; return; }
  local mod="$out/src"; mkdir -p "$mod" "$out/bin"
  cat > "$mod/go.mod" <<EOF
module kuryr-rs.local/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat > "$mod/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  log "building etcd $ETCD_VERSION"
  local t0=$SECONDS
  (cd "$mod" && GOFLAGS=-mod=mod go mod tidy >"$out/build.log" 2>&1 \
    && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" . >>"$out/build.log" 2>&1) \
    || { tail -30 "$out/build.log"; echo "etcd build failed (log: $out/build.log)" >&2; exit 1; }
  log "etcd $ETCD_VERSION built in $((SECONDS - t0))s"
}

# CoreDNS is built inside its own module (as downloaded from the module proxy, go.sum included),
# so its dependencies are exactly the ones upstream pins for the release; static (CGO_ENABLED=0).
build_coredns() {
  local out="$CACHE/coredns-$COREDNS_VERSION"
  [ -x "$out/bin/coredns" ] && { log "coredns $COREDNS_VERSION cached in $out/bin"; return; }
  mkdir -p "$out/bin"
  local dir
  dir=$(go mod download -json "github.com/coredns/coredns@$COREDNS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -f "$dir/coredns.go" ] || { echo "cannot download github.com/coredns/coredns@$COREDNS_VERSION" >&2; exit 1; }
  log "building coredns $COREDNS_VERSION"
  local t0=$SECONDS
  (cd "$dir" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$out/bin/coredns.tmp" .) \
    >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; echo "coredns build failed (log: $out/build.log)" >&2; exit 1; }
  mv "$out/bin/coredns.tmp" "$out/bin/coredns"
  log "coredns $COREDNS_VERSION built in $((SECONDS - t0))s"
}

# The reference CNI plugins kuryr-rs chains after kuryr-cni (hostPort, traffic shaping), built
# inside their own module (go.sum as released) like CoreDNS; static, version stamped where the
# plugins print it (`CNI portmap plugin v1.9.0`, what kuryr-daemon compares with a host's copy).
CNI_PLUGINS="portmap bandwidth"
build_cni_plugins() {
  local out="$CACHE/cni-plugins-$CNI_PLUGINS_VERSION" p missing=0
  for p in $CNI_PLUGINS; do [ -x "$out/bin/$p" ] || missing=1; done
  [ $missing = 0 ] && { log "cni plugins $CNI_PLUGINS_VERSION cached in $out/bin"; return; }
  mkdir -p "$out/bin"
  local dir
  dir=$(go mod download -json "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir/plugins/meta/portmap" ] || { echo "cannot download github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION" >&2; exit 1; }
  log "building cni plugins $CNI_PLUGINS_VERSION ($CNI_PLUGINS)"
  local t0=$SECONDS
  for p in $CNI_PLUGINS; do
    (cd "$dir" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
      -o "$out/bin/.$p.tmp" "./plugins/meta/$p") >>"$out/build.log" 2>&1 \
      || { tail -30 "$out/build.log"; echo "cni plugin $p build failed (log: $out/build.log)" >&2; exit 1; }
    mv "$out/bin/.$p.tmp" "$out/bin/$p"
  done
  log "cni plugins $CNI_PLUGINS_VERSION built in $((SECONDS - t0))s"
}

case "${1:-all}" in
  k8s) build_k8s ;;
  etcd) build_etcd ;;
  coredns) build_coredns ;;
  cni-plugins) build_cni_plugins ;;
  all) build_etcd; build_k8s; build_coredns; build_cni_plugins ;;
  *) echo "usage: $0 [all|k8s|etcd|coredns|cni-plugins]" >&2; exit 2 ;;
esac
