#!/usr/bin/env bash
# Print the path of a helm binary, building it once if needed. Debian has no helm package and
# there is no download site here, so it is built from its Go module (helm.sh/helm/v3 through the
# Go module proxy) and cached in $KURYR_CACHE/helm-$HELM_VERSION/helm (~3 min on 2 cores).
#   deploy/helm.sh            -> /var/cache/kuryr-rs/helm-v3.19.5/helm
# $HELM, if set, wins; so does a `helm` on PATH of the pinned version.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.19.5}
CACHE=${KURYR_CACHE:-/var/cache/kuryr-rs}/helm-$HELM_VERSION
if [ -n "${HELM:-}" ] && [ -x "$HELM" ]; then echo "$HELM"; exit 0; fi
if [ -x "$CACHE/helm" ]; then echo "$CACHE/helm"; exit 0; fi
if command -v helm >/dev/null && helm version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  command -v helm; exit 0
fi
GO=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$GO" ] || { echo "deploy/helm.sh: no helm and no Go toolchain to build it" >&2; exit 1; }
echo "deploy/helm.sh: building helm $HELM_VERSION from its Go module into $CACHE" >&2
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$tmp" "$GO" install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") >&2
mv "$tmp/helm" "$CACHE/helm"
echo "$CACHE/helm"
