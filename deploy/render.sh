#!/usr/bin/env bash
# Render the plain manifests for `kubectl apply` from the Helm chart (the one source of truth):
#   deploy/render.sh           rewrite deploy/manifests/kuryr-rs.yaml
#   deploy/render.sh --check   fail if the checked-in file differs from a fresh render (CI),
#                              or if the chart's CRDs are not deploy/crds/kuryr-crds.yaml
# Release name kuryr-rs, namespace kube-system, chart defaults, CRDs included.
set -euo pipefail
DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHART=$DEPLOY/chart/kuryr-rs
OUT=$DEPLOY/manifests/kuryr-rs.yaml
HELM_BIN=$("$DEPLOY/helm.sh")
# helm notes on stderr that crds/ is a symlink (it is, on purpose): keep its other messages.
helm() { "$HELM_BIN" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }
render() {
  echo "# kuryr-rs: every object for \`kubectl apply --server-side -f\`, rendered from deploy/chart/kuryr-rs"
  echo "# by deploy/render.sh (chart defaults, namespace kube-system). Do not edit: change the chart."
  echo "# Before applying, set the OpenStack ids and credentials in the ConfigMap kuryr-config and"
  echo "# the Secret kuryr-controller-config (both hold a kuryr.conf), see deploy/README.md."
  helm template kuryr-rs "$CHART" --namespace kube-system --include-crds
}
cmp -s "$CHART/crds/kuryr-crds.yaml" "$DEPLOY/crds/kuryr-crds.yaml" \
  || { echo "chart CRDs differ from deploy/crds/kuryr-crds.yaml (crds/ must be a symlink to it)" >&2; exit 1; }
helm lint --quiet "$CHART" --namespace kube-system >&2
if [ "${1:-}" = --check ]; then
  tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
  render > "$tmp"
  if ! diff -u "$OUT" "$tmp"; then
    echo "deploy/manifests/kuryr-rs.yaml is stale: run deploy/render.sh" >&2; exit 1
  fi
  echo "deploy/manifests/kuryr-rs.yaml is up to date"
else
  mkdir -p "$(dirname "$OUT")"
  render > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  echo "wrote $OUT"
fi
