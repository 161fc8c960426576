#!/usr/bin/env bash
# Import the kuryr-rs image archives built by deploy/images/build.sh into containerd's k8s.io
# namespace (the CRI's), which is how images reach kubelet here: there is no registry.
#   deploy/images/import.sh [--address SOCK] [ARCHIVE...]
# Default archives: $KURYR_CACHE/images/kuryr-{controller,daemon}-<version>.tar.
# Default socket: /run/containerd/containerd.sock. Prints the imported image names.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SOCK=/run/containerd/containerd.sock
if [ "${1:-}" = --address ]; then SOCK=$2; shift 2; fi
TAG=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
DIR=${KURYR_CACHE:-/var/cache/kuryr-rs}/images
[ $# -gt 0 ] || set -- "$DIR/kuryr-controller-$TAG.tar" "$DIR/kuryr-daemon-$TAG.tar"
for a in "$@"; do
  [ -f "$a" ] || { echo "no such archive: $a (run deploy/images/build.sh)" >&2; exit 1; }
  ctr --address "$SOCK" -n k8s.io images import --all-platforms "$a" >&2
done
ctr --address "$SOCK" -n k8s.io images ls | awk 'NR==1 || /localhost\/kuryr\/kuryr-(controller|daemon):/'
