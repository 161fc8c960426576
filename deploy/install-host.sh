#!/usr/bin/env bash
# Install kuryr-rs on a host without Kubernetes packaging (bare-metal nodes, or operators who
# run the programs as plain services): the binaries, kuryr-cni in the CNI bin dir, the systemd
# units, /etc/kuryr/kuryr.conf, and, on request, a static conflist.
#
# usage: deploy/install-host.sh [options]            install
#        deploy/install-host.sh --uninstall [options] remove everything it installs
#   --from DIR          where the binaries are (default: the static release build,
#                       $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release)
#   --role ROLE         node (kuryr-daemon + kuryr-cni; default), controller, or all
#   --config FILE       install FILE as /etc/kuryr/kuryr.conf (mode 0600); an existing one is
#                       kept otherwise
#   --kubeconfig FILE   install FILE as /etc/kuryr/kubeconfig and pass it to both programs
#   --static-conflist   write the conflist now and run the daemon with --no-conflist (the node
#                       then looks network-ready even while the daemon is down: kuryr-cni fails
#                       ADD and queues DEL until it is back). Default: the daemon writes the
#                       conflist once it is ready and removes it when it stops.
#   --chain LIST        CNI plugins chained after kuryr-cni (default portmap,bandwidth: pods'
#                       hostPort and kubernetes.io/{ingress,egress}-bandwidth); --chain '' turns
#                       them off (pods asking for them then get a Warning Event)
#   --cni-plugins DIR   the reference plugins kuryr-rs ships (default: the pinned build,
#                       $KURYR_CACHE/cni-plugins-<CNI_PLUGINS_VERSION>/bin, built by
#                       hack/stack/build-k8s.sh cni-plugins when missing); installed into
#                       /usr/local/libexec/kuryr/cni-plugins, and by the daemon, at start-up,
#                       next to kuryr-cni
#   --cni-plugins-install POLICY  unless-newer (default: a host copy reporting the same or a
#                       newer version stays), if-missing, always
#   --cni-bin-dir DIR   default /opt/cni/bin
#   --cni-conf-dir DIR  default /etc/cni/net.d
#   --socket PATH       the daemon's CNI socket (default /run/kuryr/kuryr-daemon.sock)
#   --root DIR          install under DIR instead of / (packaging, tests); no service is touched
#   --no-start          do not enable/start the units (default: start them when systemd runs)
# Binaries go to /usr/local/bin, units to /etc/systemd/system. Every file is written to a
# temporary name and renamed, so a container runtime never executes half a kuryr-cni.
set -euo pipefail
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$ROOT_DIR/deploy
FROM=${CARGO_TARGET_DIR:-/var/cache/kuryr-rs/cargo-target}/x86_64-unknown-linux-gnu/release
ROLE=node CONFIG= KUBECONFIG_FILE= STATIC=0 UNINSTALL=0 START=1 DEST=
CNI_BIN=/opt/cni/bin CNI_CONF=/etc/cni/net.d SOCKET=/run/kuryr/kuryr-daemon.sock
CONFLIST_NAME=10-kuryr.conflist
CHAIN=portmap,bandwidth PLUGINS= PLUGINS_INSTALL=unless-newer
PLUGINS_DEST=/usr/local/libexec/kuryr/cni-plugins
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --from) FROM=$2; shift ;;
    --role) ROLE=$2; shift ;;
    --config) CONFIG=$2; shift ;;
    --kubeconfig) KUBECONFIG_FILE=$2; shift ;;
    --static-conflist) STATIC=1 ;;
    --chain) CHAIN=$2; shift ;;
    --cni-plugins) PLUGINS=$2; shift ;;
    --cni-plugins-install) PLUGINS_INSTALL=$2; shift ;;
    --cni-bin-dir) CNI_BIN=$2; shift ;;
    --cni-conf-dir) CNI_CONF=$2; shift ;;
    --socket) SOCKET=$2; shift ;;
    --root) DEST=$(realpath -m "$2"); START=0; shift ;;
    --no-start) START=0 ;;
    --uninstall) UNINSTALL=1 ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
  shift
done
case $ROLE in node|controller|all) ;; *) echo "--role: node, controller or all" >&2; exit 2 ;; esac
node() { [ "$ROLE" = node ] || [ "$ROLE" = all ]; }
ctrl() { [ "$ROLE" = controller ] || [ "$ROLE" = all ]; }
log() { echo "[install-host] $*" >&2; }
systemd_up() { [ -z "$DEST" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# put SRC DST MODE: atomic copy (temporary file in the same directory, then rename).
put() {
  local src=$1 dst=$DEST$2 mode=$3
  mkdir -p "$(dirname "$dst")"
  local tmp; tmp=$(dirname "$dst")/.$(basename "$dst").tmp.$$
  cp "$src" "$tmp"
  chmod "$mode" "$tmp"
  sync "$tmp" 2>/dev/null || true
  mv -f "$tmp" "$dst"
  log "installed $2"
}
# write DST MODE < content
write() {
  local t; t=$(mktemp)
  cat > "$t"
  put "$t" "$1" "$2"
  rm -f "$t"
}
gone() { if [ -e "$DEST$1" ] || [ -L "$DEST$1" ]; then rm -f "$DEST$1"; log "removed $1"; fi; }

if [ "$UNINSTALL" = 1 ]; then
  if systemd_up; then
    node && systemctl disable --now kuryr-daemon.service 2>/dev/null || true
    ctrl && systemctl disable --now kuryr-controller.service 2>/dev/null || true
  fi
  if node; then
    # The daemon removes its conflist when it stops; a static one is ours to remove.
    gone "$CNI_CONF/$CONFLIST_NAME"
    gone "$CNI_BIN/kuryr-cni"
    gone /usr/local/bin/kuryr-daemon
    for p in "$DEST$PLUGINS_DEST"/*; do [ -e "$p" ] && gone "$PLUGINS_DEST/$(basename "$p")"; done
    rmdir "$DEST$PLUGINS_DEST" 2>/dev/null || true
    gone /etc/systemd/system/kuryr-daemon.service
    gone /etc/default/kuryr-daemon
  fi
  if ctrl; then
    gone /usr/local/bin/kuryr-controller
    gone /etc/systemd/system/kuryr-controller.service
    gone /etc/default/kuryr-controller
  fi
  systemd_up && systemctl daemon-reload || true
  log "uninstalled (kept /etc/kuryr and /var/lib/kuryr)"
  exit 0
fi

need() { [ -x "$FROM/$1" ] || { echo "missing $FROM/$1: build it (deploy/images/build.sh builds the static binaries) or pass --from" >&2; exit 1; }; }
node && { need kuryr-daemon; need kuryr-cni; }
if node && [ -z "$PLUGINS" ]; then
  . "$ROOT_DIR/hack/stack/versions.env"
  PLUGINS=${KURYR_CACHE:-/var/cache/kuryr-rs}/cni-plugins-$CNI_PLUGINS_VERSION/bin
  [ -x "$PLUGINS/portmap" ] && [ -x "$PLUGINS/bandwidth" ] || "$ROOT_DIR/hack/stack/build-k8s.sh" cni-plugins >&2
fi
ctrl && need kuryr-controller

if node; then
  put "$FROM/kuryr-cni" "$CNI_BIN/kuryr-cni" 0755
  put "$FROM/kuryr-daemon" /usr/local/bin/kuryr-daemon 0755
  for p in "$PLUGINS"/*; do [ -f "$p" ] && [ -x "$p" ] && put "$p" "$PLUGINS_DEST/$(basename "$p")" 0755; done
  put "$DEPLOY/systemd/kuryr-daemon.service" /etc/systemd/system/kuryr-daemon.service 0644
  args="--socket $SOCKET --cni-bin-dir $CNI_BIN --cni-conf-dir $CNI_CONF"
  args="$args --install-cni-plugins-from $PLUGINS_DEST --cni-plugins-install $PLUGINS_INSTALL"
  [ -n "$CHAIN" ] && args="$args --chain $CHAIN"
  [ -n "$KUBECONFIG_FILE" ] && args="$args --kubeconfig /etc/kuryr/kubeconfig"
  [ "$STATIC" = 1 ] && args="$args --no-conflist"
  printf '# Flags of kuryr-daemon (see kuryr-daemon --help); written by deploy/install-host.sh.\nKURYR_DAEMON_ARGS="%s"\nKURYR_LOG=info\n' "$args" \
    | write /etc/default/kuryr-daemon 0644
  if [ "$STATIC" = 1 ]; then
    # The same document the daemon writes (kuryr-daemon src/conflist.rs).
    queue=/var/lib/kuryr/del-queue
    chained=
    for p in ${CHAIN//,/ }; do
      case $p in
        portmap) chained="$chained,\n    {\n      \"type\": \"portmap\",\n      \"capabilities\": {\n        \"portMappings\": true\n      }\n    }" ;;
        bandwidth) chained="$chained,\n    {\n      \"type\": \"bandwidth\",\n      \"capabilities\": {\n        \"bandwidth\": true\n      }\n    }" ;;
        *) chained="$chained,\n    {\n      \"type\": \"$p\"\n    }" ;;
      esac
    done
    printf '{\n  "cniVersion": "1.0.0",\n  "name": "kuryr",\n  "plugins": [\n    {\n      "type": "kuryr-cni",\n      "daemon_socket": "%s",\n      "del_queue_dir": "%s",\n      "timeout_seconds": 120.0\n    }'"$chained"'\n  ]\n}\n' \
      "$SOCKET" "$queue" | write "$CNI_CONF/$CONFLIST_NAME" 0644
    mkdir -p "$DEST$queue"
  fi
fi
if ctrl; then
  put "$FROM/kuryr-controller" /usr/local/bin/kuryr-controller 0755
  put "$DEPLOY/systemd/kuryr-controller.service" /etc/systemd/system/kuryr-controller.service 0644
  args=
  [ -n "$KUBECONFIG_FILE" ] && args="--kubeconfig /etc/kuryr/kubeconfig"
  printf '# Flags of kuryr-controller (see kuryr-controller --help); written by deploy/install-host.sh.\n# Running more than one? add --leader-elect.\nKURYR_CONTROLLER_ARGS="%s"\nRUST_LOG=info\n' "$args" \
    | write /etc/default/kuryr-controller 0644
fi
if [ -n "$CONFIG" ]; then
  put "$CONFIG" /etc/kuryr/kuryr.conf 0600
elif [ ! -e "$DEST/etc/kuryr/kuryr.conf" ]; then
  log "no /etc/kuryr/kuryr.conf yet: write one (deploy/README.md) or pass --config"
fi
[ -n "$KUBECONFIG_FILE" ] && put "$KUBECONFIG_FILE" /etc/kuryr/kubeconfig 0600
put "$DEPLOY/README.md" /usr/local/share/doc/kuryr-rs/README.md 0644

if systemd_up; then
  systemctl daemon-reload
  if [ "$START" = 1 ]; then
    node && systemctl enable --now kuryr-daemon.service
    ctrl && systemctl enable --now kuryr-controller.service
  fi
elif [ -z "$DEST" ]; then
  log "systemd is not running here: start the programs another way, e.g."
  node && log "  /usr/local/bin/kuryr-daemon --config-file /etc/kuryr/kuryr.conf \$KURYR_DAEMON_ARGS (from /etc/default/kuryr-daemon)"
  ctrl && log "  /usr/local/bin/kuryr-controller --config-file /etc/kuryr/kuryr.conf"
fi
log "done"
