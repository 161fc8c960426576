#!/usr/bin/env bash
# Build the kuryr-rs container images as reproducible OCI image archives, without a Docker
# daemon or a registry:
#   localhost/kuryr/kuryr-controller:<version>   /usr/bin/kuryr-controller (runs as 65532)
#   localhost/kuryr/kuryr-daemon:<version>       /usr/bin/kuryr-daemon, /usr/bin/kuryr-rm (preStop),
#                                                /usr/libexec/kuryr/kuryr-cni (copied to the host)
#                                                /usr/libexec/kuryr/cni-plugins/{portmap,bandwidth}
#                                                (the reference plugins at CNI_PLUGINS_VERSION,
#                                                hack/stack/versions.env; copied to the host too)
# Both are FROM scratch: static binaries (glibc, +crt-static), a minimal /etc (passwd, group,
# nsswitch.conf), empty mount points (/etc/kuryr, /etc/ssl/certs for a CA bundle, ...).
#
# Reproducible: every file gets mtime SOURCE_DATE_EPOCH (default 0), owner 0:0, sorted tar,
# `gzip -n`; the same binaries give the same digests (`--check` builds twice and compares).
#
# usage: deploy/images/build.sh [--no-build] [--check] [--out DIR] [--tag TAG]
#   --no-build   use the binaries already in $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
#   --check      build every archive twice and fail unless the digests are identical
#   --out DIR    where the archives go (default $KURYR_CACHE/images = /var/cache/kuryr-rs/images)
#   --tag TAG    image tag (default: the workspace version from Cargo.toml)
# Output: DIR/kuryr-controller-TAG.tar, DIR/kuryr-daemon-TAG.tar (OCI image layout archives,
# `ctr -n k8s.io images import` / `podman load` / `skopeo copy oci-archive:` take them), and
# one line per image on stdout: `IMAGE_REF DIGEST ARCHIVE_BYTES UNCOMPRESSED_BYTES`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/deploy/images
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/kuryr-rs/cargo-target}
# No incremental state: every clone path gets its own (a CI clone left 22 GB of it), and
# these scripts build each crate once per run anyway.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
TARGET=x86_64-unknown-linux-gnu
BUILD=1 CHECK=0
OUT=${KURYR_CACHE:-/var/cache/kuryr-rs}/images
TAG=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
REPO=${KURYR_IMAGE_REPO:-localhost/kuryr}
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) BUILD=0 ;;
    --check) CHECK=1 ;;
    --out) OUT=$2; shift ;;
    --tag) TAG=$2; shift ;;
    *) echo "usage: $0 [--no-build] [--check] [--out DIR] [--tag TAG]" >&2; exit 2 ;;
  esac
  shift
done
EPOCH=${SOURCE_DATE_EPOCH:-0}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
log() { echo "[images] $*" >&2; }

REL=$CARGO_TARGET_DIR/$TARGET/release
if [ "$BUILD" = 1 ]; then
  log "cargo build --release --target $TARGET (static) kuryr-controller kuryr-daemon kuryr-cni"
  (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$TARGET" \
    -p kuryr-controller -p kuryr-daemon -p kuryr-cni --bin kuryr-controller --bin kuryr-daemon --bin kuryr-cni) >&2
fi

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# Static, and it runs (in an empty environment, as it will in the image).
for b in kuryr-controller kuryr-daemon kuryr-cni; do
  [ -x "$REL/$b" ] || { log "missing $REL/$b (run without --no-build)"; exit 1; }
  if readelf -l "$REL/$b" | grep -q 'Requesting program interpreter'; then
    log "$REL/$b is dynamically linked; build with RUSTFLAGS='-C target-feature=+crt-static'"; exit 1
  fi
  strip --strip-all -o "$W/$b" "$REL/$b"
done
env -i "$W/kuryr-controller" --version >/dev/null
env -i "$W/kuryr-daemon" --version >/dev/null
echo '{"cniVersion":"1.1.0"}' | env -i CNI_COMMAND=VERSION "$W/kuryr-cni" >/dev/null
gcc -static -Os -s -o "$W/kuryr-rm" "$HERE/kuryr-rm.c"
# The reference CNI plugins chained after kuryr-cni, built from their Go module (cached by version).
. "$ROOT/hack/stack/versions.env"
PLUGINS=${KURYR_CACHE:-/var/cache/kuryr-rs}/cni-plugins-$CNI_PLUGINS_VERSION/bin
"$ROOT/hack/stack/build-k8s.sh" cni-plugins >&2
for p in portmap bandwidth; do
  [ -x "$PLUGINS/$p" ] || { log "missing $PLUGINS/$p"; exit 1; }
  if readelf -l "$PLUGINS/$p" | grep -q 'Requesting program interpreter'; then
    log "$PLUGINS/$p is dynamically linked"; exit 1
  fi
  # Read the whole answer first: `| grep -q` would close the pipe early and, under pipefail,
  # fail on the plugin's SIGPIPE.
  said=$(env -i "$PLUGINS/$p" 2>&1 || true)
  grep -qx "CNI $p plugin $CNI_PLUGINS_VERSION" <<<"$said" || { log "$PLUGINS/$p does not say it is $CNI_PLUGINS_VERSION: $said"; exit 1; }
done

sha() { sha256sum "$1" | cut -d' ' -f1; }
sz() { stat -c %s "$1"; }

# base_rootfs DIR: what both images share.
base_rootfs() {
  local r=$1
  mkdir -p "$r/usr/bin" "$r/etc/kuryr" "$r/etc/ssl/certs" "$r/tmp" "$r/run" "$r/var"
  chmod 1777 "$r/tmp"
  ln -s ../run "$r/var/run"
  printf 'root:x:0:0:root:/:/sbin/nologin\nkuryr:x:65532:65532:kuryr:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' > "$r/etc/passwd"
  printf 'root:x:0:\nkuryr:x:65532:\nnobody:x:65534:\n' > "$r/etc/group"
  printf 'hosts: files dns\n' > "$r/etc/nsswitch.conf"
}

# oci_archive NAME TAG ROOTFS OUT.tar CONFIG_JSON(the "config" object): one gzip layer.
oci_archive() {
  local name=$1 tag=$2 rootfs=$3 out=$4 cfg=$5
  local w; w=$(mktemp -d -p "$W")
  mkdir -p "$w/blobs/sha256"
  find "$rootfs" -exec touch -h -d "@$EPOCH" {} +
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$rootfs" -cf "$w/layer.tar" .
  local diff_id usize; diff_id=$(sha "$w/layer.tar"); usize=$(sz "$w/layer.tar")
  gzip -n -9 "$w/layer.tar"
  local ld; ld=$(sha "$w/layer.tar.gz")
  mv "$w/layer.tar.gz" "$w/blobs/sha256/$ld"
  printf '{"architecture":"amd64","os":"linux","created":"%s","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":"kuryr-rs deploy/images/build.sh"}]}' \
    "$CREATED" "$cfg" "$diff_id" "$CREATED" > "$w/config.json"
  local cd cs; cd=$(sha "$w/config.json"); cs=$(sz "$w/config.json")
  mv "$w/config.json" "$w/blobs/sha256/$cd"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$ld" "$(sz "$w/blobs/sha256/$ld")" > "$w/manifest.json"
  local md ms; md=$(sha "$w/manifest.json"); ms=$(sz "$w/manifest.json")
  mv "$w/manifest.json" "$w/blobs/sha256/$md"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$w/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s:%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$md" "$ms" "$name" "$tag" "$tag" > "$w/index.json"
  find "$w" -exec touch -h -d "@$EPOCH" {} +
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner -C "$w" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$w"
  echo "$name:$tag sha256:$md $(sz "$out") $usize"
}

labels() {
  printf '{"org.opencontainers.image.title":"%s","org.opencontainers.image.version":"%s","org.opencontainers.image.revision":"%s","org.opencontainers.image.licenses":"Apache-2.0","org.opencontainers.image.description":"%s"}' "$@"
}

build_controller() {
  local out=$1 r; r=$(mktemp -d -p "$W")
  base_rootfs "$r"
  install -m 0755 "$W/kuryr-controller" "$r/usr/bin/kuryr-controller"
  oci_archive "$REPO/kuryr-controller" "$TAG" "$r" "$out" \
    "{\"Entrypoint\":[\"/usr/bin/kuryr-controller\"],\"Cmd\":[\"--config-file\",\"/etc/kuryr/kuryr.conf\"],\"User\":\"65532:65532\",\"Env\":[\"PATH=/usr/bin\"],\"ExposedPorts\":{\"8082/tcp\":{},\"9654/tcp\":{}},\"Labels\":$(labels kuryr-controller "$TAG" "$REVISION" "kuryr-rs controller: Kubernetes pods on OpenStack Neutron ports")}"
  rm -rf "$r"
}

build_daemon() {
  local out=$1 r; r=$(mktemp -d -p "$W")
  base_rootfs "$r"
  install -m 0755 "$W/kuryr-daemon" "$r/usr/bin/kuryr-daemon"
  install -m 0755 "$W/kuryr-rm" "$r/usr/bin/kuryr-rm"
  install -D -m 0755 "$W/kuryr-cni" "$r/usr/libexec/kuryr/kuryr-cni"
  local p
  for p in portmap bandwidth; do install -D -m 0755 "$PLUGINS/$p" "$r/usr/libexec/kuryr/cni-plugins/$p"; done
  # Mount points of the DaemonSet (runc would create them; listing them documents the layout).
  mkdir -p "$r/opt/cni/bin" "$r/etc/cni/net.d" "$r/run/netns" "$r/run/kuryr" "$r/run/openvswitch" "$r/var/lib/kuryr" "$r/host_proc"
  oci_archive "$REPO/kuryr-daemon" "$TAG" "$r" "$out" \
    "{\"Entrypoint\":[\"/usr/bin/kuryr-daemon\"],\"Cmd\":[\"--config-file\",\"/etc/kuryr/kuryr.conf\",\"--install-cni-from\",\"/usr/libexec/kuryr/kuryr-cni\",\"--install-cni-plugins-from\",\"/usr/libexec/kuryr/cni-plugins\",\"--chain\",\"portmap,bandwidth\"],\"Env\":[\"PATH=/usr/bin\"],\"ExposedPorts\":{\"8090/tcp\":{},\"9655/tcp\":{}},\"Labels\":$(labels kuryr-daemon "$TAG" "$REVISION" "kuryr-rs CNI daemon (with the kuryr-cni executable and the portmap and bandwidth plugins it installs on the host)")}"
  rm -rf "$r"
}

mkdir -p "$OUT"
for img in controller daemon; do
  out=$OUT/kuryr-$img-$TAG.tar
  line=$("build_$img" "$out")
  if [ "$CHECK" = 1 ]; then
    again=$("build_$img" "$W/again.tar")
    [ "${again%% *} ${again#* }" = "${line%% *} ${line#* }" ] || { log "NOT reproducible: $line vs $again"; exit 1; }
    cmp -s "$out" "$W/again.tar" || { log "NOT reproducible: $out differs on a second build"; exit 1; }
    log "reproducible: kuryr-$img (same bytes twice)"
  fi
  log "$line -> $out"
  echo "$line"
done
