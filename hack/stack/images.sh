#!/usr/bin/env bash
# Build the local OCI image archives the stack needs (there is no registry here):
#   localhost/kuryr/pause:3.10   - a static pause binary (hack/stack/pause.c), the CRI sandbox image
#   localhost/kuryr/busybox:1.35 - busybox-static with an applet symlink farm, for test pods
#   localhost/kuryr/coredns:$COREDNS_VERSION - the static CoreDNS that build-k8s.sh built, user 65532
#     (the cluster DNS, hack/stack/coredns.yaml)
# Reproducible: fixed mtimes/owners, sorted tar, so the same inputs give the same digests.
# Output: $KURYR_CACHE/images/*.tar (OCI image layout archives), rebuilt only when missing.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
OUT=$KURYR_CACHE/images
mkdir -p "$OUT"

sha() { sha256sum "$1" | cut -d' ' -f1; }
sz() { stat -c %s "$1"; }

# oci_archive NAME TAG ROOTFS_DIR OUT.tar CONFIG_JSON_FRAGMENT(the "config" object)
oci_archive() {
  local name=$1 tag=$2 rootfs=$3 out=$4 cfg=$5
  local w; w=$(mktemp -d)
  mkdir -p "$w/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$w/layer.tar" .
  local ld; ld=$(sha "$w/layer.tar")
  mv "$w/layer.tar" "$w/blobs/sha256/$ld"
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"kuryr-rs hack/stack/images.sh"}]}' \
    "$cfg" "$ld" > "$w/config.json"
  local cd; cd=$(sha "$w/config.json"); local cs; cs=$(sz "$w/config.json")
  mv "$w/config.json" "$w/blobs/sha256/$cd"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$ld" "$(sz "$w/blobs/sha256/$ld")" > "$w/manifest.json"
  local md; md=$(sha "$w/manifest.json"); local ms; ms=$(sz "$w/manifest.json")
  mv "$w/manifest.json" "$w/blobs/sha256/$md"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$w/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s:%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$md" "$ms" "$name" "$tag" "$tag" > "$w/index.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$w" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$w"
  log "image $name:$tag -> $out ($(sz "$out") bytes, manifest sha256:$md)"
}

if [ ! -f "$OUT/pause.tar" ]; then
  r=$(mktemp -d)
  gcc -static -Os -s -o "$r/pause" "$HERE/pause.c"
  touch -d @0 "$r/pause"
  oci_archive localhost/kuryr/pause 3.10 "$r" "$OUT/pause.tar" '{"Entrypoint":["/pause"],"User":"65535:65535"}'
  rm -rf "$r"
fi

if [ ! -f "$OUT/busybox.tar" ]; then
  r=$(mktemp -d)
  mkdir -p "$r/bin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/run" "$r/www"
  cp /bin/busybox "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$r/etc/group"
  find "$r" -exec touch -h -d @0 {} +
  oci_archive localhost/kuryr/busybox 1.35 "$r" "$OUT/busybox.tar" '{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]}'
  rm -rf "$r"
fi

COREDNS_TAR=$OUT/coredns-$COREDNS_VERSION.tar
if [ ! -f "$COREDNS_TAR" ]; then
  bin=$KURYR_CACHE/coredns-$COREDNS_VERSION/bin/coredns
  [ -x "$bin" ] || "$HERE/build-k8s.sh" coredns
  r=$(mktemp -d)
  mkdir -p "$r/etc/coredns" "$r/tmp"
  cp "$bin" "$r/coredns"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$r/etc/group"
  chmod 1777 "$r/tmp"
  find "$r" -exec touch -h -d @0 {} +
  oci_archive localhost/kuryr/coredns "$COREDNS_VERSION" "$r" "$COREDNS_TAR" \
    '{"Entrypoint":["/coredns"],"Cmd":["-conf","/etc/coredns/Corefile"],"User":"65532:65532","ExposedPorts":{"53/tcp":{},"53/udp":{},"9153/tcp":{}}}'
  rm -rf "$r"
fi
