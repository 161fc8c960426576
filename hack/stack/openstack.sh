# shellcheck shell=bash
# OpenStack half of the local stack: OVS (userspace datapath), OVN, MariaDB, Keystone,
# Neutron (ML2/OVN), Octavia (OVN provider). Sourced by hack/stack/stack; each *_up is
# idempotent: a service that is already running and healthy is left alone.

VSWITCHD_CTL=/var/run/openvswitch/ovs-vswitchd.ctl

render() {  # template output
  sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@SVCPW@|$STACK_SERVICE_PASSWORD|g" "$1" > "$2.tmp"
  mv "$2.tmp" "$2"
}

render_configs() {
  mkdir -p "$STATE/etc" "$STATE/neutron/lock" "$STATE/octavia/lock" "$STATE/markers"
  render "$HERE/etc/keystone/keystone.conf" "$STATE/etc/keystone.conf"
  cp "$HERE/etc/keystone/keystone_wsgi.py" "$STATE/etc/keystone_wsgi.py"
  render "$HERE/etc/neutron/neutron.conf" "$STATE/etc/neutron.conf"
  render "$HERE/etc/neutron/ml2_conf.ini" "$STATE/etc/ml2_conf.ini"
  render "$HERE/etc/neutron/api-paste.ini" "$STATE/etc/api-paste.ini"
  cp "$HERE/etc/neutron/policy.yaml" "$STATE/etc/neutron-policy.yaml"
  cp "$HERE/etc/neutron/neutron_wsgi.py" "$STATE/etc/neutron_wsgi.py"
  render "$HERE/etc/octavia/octavia.conf" "$STATE/etc/octavia.conf"
}

ovs_up() {
  if running ovsdb-server && running ovs-vswitchd && ovs-appctl -t "$VSWITCHD_CTL" version >/dev/null 2>&1; then return; fi
  log "starting Open vSwitch (userspace datapath)"
  mkdir -p /var/run/openvswitch "$STATE/ovs"
  if [ ! -f "$STATE/ovs/conf.db" ]; then
    ovsdb-tool create "$STATE/ovs/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  fi
  # Every daemon runs in the foreground under the stack's supervisor (lib.sh `start`): restarted
  # when it dies, as systemd's units restart them on a real node.
  running ovsdb-server || {
    rm -f /var/run/openvswitch/db.sock  # a killed server's: `ready` must see the new one's
    start ovsdb-server "$LOGDIR/ovsdb-server.out" ovsdb-server "$STATE/ovs/conf.db" \
      --remote=punix:/var/run/openvswitch/db.sock --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
      --log-file="$LOGDIR/ovsdb-server.log" -vconsole:off
    ready ovsdb-server "$LOGDIR/ovsdb-server.log" 20 test -S /var/run/openvswitch/db.sock
  }
  ovs-vsctl --no-wait init
  # veths hand TCP over with checksum offload (CHECKSUM_PARTIAL); the userspace datapath
  # forwards such packets unfixed unless userspace TSO is on. Read only at vswitchd start.
  ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
  running ovs-vswitchd || {
    rm -f "$VSWITCHD_CTL"  # left by a killed vswitchd: `ready` must see the new one's
    start ovs-vswitchd "$LOGDIR/ovs-vswitchd.out" ovs-vswitchd --unixctl="$VSWITCHD_CTL" -vconsole:off \
      --log-file="$LOGDIR/ovs-vswitchd.log"
  }
  ready ovs-vswitchd "$LOGDIR/ovs-vswitchd.log" 20 ovs-appctl -t "$VSWITCHD_CTL" version
}

ovn_up() {
  mkdir -p /var/run/ovn "$STATE/ovn"
  local db port
  for db in nb sb; do
    running "ovn${db}-db" && continue
    port=6641; [ $db = sb ] && port=6642
    log "starting OVN ${db^^} database on 127.0.0.1:$port"
    [ -f "$STATE/ovn/ovn${db}_db.db" ] || \
      ovsdb-tool create "$STATE/ovn/ovn${db}_db.db" "/usr/share/ovn/ovn-${db}.ovsschema"
    rm -f "/var/run/ovn/ovn${db}_db.sock"
    start "ovn${db}-db" "$LOGDIR/ovsdb-server-$db.out" ovsdb-server --log-file="$LOGDIR/ovsdb-server-$db.log" -vconsole:off \
      --unixctl="/var/run/ovn/ovn${db}_db.ctl" --remote="punix:/var/run/ovn/ovn${db}_db.sock" \
      --remote="ptcp:$port:127.0.0.1" "$STATE/ovn/ovn${db}_db.db"
    ready "ovn${db}-db" "$LOGDIR/ovsdb-server-$db.log" 20 test -S "/var/run/ovn/ovn${db}_db.sock"
  done
  if ! running ovn-northd; then
    log "starting ovn-northd"
    start ovn-northd "$LOGDIR/ovn-northd.out" ovn-northd --log-file="$LOGDIR/ovn-northd.log" -vconsole:off \
      --pidfile=/var/run/ovn/ovn-northd.pid \
      --ovnnb-db=unix:/var/run/ovn/ovnnb_db.sock --ovnsb-db=unix:/var/run/ovn/ovnsb_db.sock
  fi
  if ! running ovn-controller; then
    log "starting ovn-controller (chassis $HOST)"
    # Chassis name == hostname == Neutron binding:host_id == Kubernetes node name.
    ovs-vsctl set Open_vSwitch . external_ids:system-id="$HOST" external_ids:hostname="$HOST" \
      external_ids:ovn-remote=tcp:127.0.0.1:6642 external_ids:ovn-encap-type=geneve \
      external_ids:ovn-encap-ip=127.0.0.1 external_ids:ovn-bridge-datapath-type=netdev
    start ovn-controller "$LOGDIR/ovn-controller.out" ovn-controller --log-file="$LOGDIR/ovn-controller.log" -vconsole:off \
      --pidfile=/var/run/ovn/ovn-controller.pid unix:/var/run/openvswitch/db.sock
  fi
  ready ovn-controller "$LOGDIR/ovn-controller.log" 30 \
    sh -c '[ "$(ovs-vsctl get bridge br-int datapath_type 2>/dev/null)" = netdev ]'
  ready ovn-controller "$LOGDIR/ovn-controller.log" 30 \
    sh -c "ovn-sbctl --db=tcp:127.0.0.1:6642 --bare --columns=name find Chassis name=$HOST | grep -q ."
}

MYSQL() { mysql --socket="$STATE/mysqlrun/mysqld.sock" -uroot "$@"; }

mariadb_up() {
  if ! running mariadb; then
    log "starting MariaDB (datadir $STATE/mysql)"
    mkdir -p "$STATE/mysqlrun"; chown mysql:mysql "$STATE/mysqlrun"
    rm -f "$STATE/mysqlrun/mysqld.sock" "$STATE/mysqlrun/mysqld.pid"  # left by a killed server
    if [ ! -d "$STATE/mysql/mysql" ]; then
      mkdir -p "$STATE/mysql"; chown mysql:mysql "$STATE/mysql"
      mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
        > "$LOGDIR/mariadb-install.log" 2>&1 || fail mariadb-install-db "$LOGDIR/mariadb-install.log" "failed"
    fi
    start mariadb "$LOGDIR/mariadb.log" /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
      --bind-address=127.0.0.1 --port=3306 --socket="$STATE/mysqlrun/mysqld.sock" --pid-file="$STATE/mysqlrun/mysqld.pid" \
      --innodb-buffer-pool-size=64M --performance-schema=OFF --skip-log-bin \
      --character-set-server=utf8mb3 --collation-server=utf8mb3_general_ci
    ready mariadb "$LOGDIR/mariadb.log" 60 mysqladmin --socket="$STATE/mysqlrun/mysqld.sock" ping
  fi
  MYSQL <<'SQL'
CREATE DATABASE IF NOT EXISTS keystone CHARACTER SET utf8;
CREATE DATABASE IF NOT EXISTS neutron CHARACTER SET utf8;
CREATE DATABASE IF NOT EXISTS octavia CHARACTER SET utf8;
CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY 'os';
CREATE USER IF NOT EXISTS 'os'@'localhost' IDENTIFIED BY 'os';
GRANT ALL ON keystone.* TO 'os'@'127.0.0.1'; GRANT ALL ON keystone.* TO 'os'@'localhost';
GRANT ALL ON neutron.* TO 'os'@'127.0.0.1'; GRANT ALL ON neutron.* TO 'os'@'localhost';
GRANT ALL ON octavia.* TO 'os'@'127.0.0.1'; GRANT ALL ON octavia.* TO 'os'@'localhost';
SQL
}

# The three schema migrations are independent: run them in parallel, once.
db_migrations() {
  local pids=() f
  if [ ! -f "$STATE/markers/keystone-db" ]; then
    ( "$KVENV/bin/keystone-manage" --config-file "$STATE/etc/keystone.conf" db_sync \
        > "$LOGDIR/keystone-manage.log" 2>&1 && touch "$STATE/markers/keystone-db" ) & pids+=($!)
  fi
  if [ ! -f "$STATE/markers/neutron-db" ]; then
    ( "$NVENV/bin/neutron-db-manage" --config-file "$STATE/etc/neutron.conf" \
        --config-file "$STATE/etc/ml2_conf.ini" upgrade heads > "$LOGDIR/neutron-db-manage.log" 2>&1 \
        && touch "$STATE/markers/neutron-db" ) & pids+=($!)
  fi
  if [ ! -f "$STATE/markers/octavia-db" ]; then
    ( "$OVENV/bin/octavia-db-manage" --config-file "$STATE/etc/octavia.conf" upgrade head \
        > "$LOGDIR/octavia-db-manage.log" 2>&1 && touch "$STATE/markers/octavia-db" ) & pids+=($!)
  fi
  [ ${#pids[@]} -gt 0 ] && log "database migrations (keystone, neutron, octavia in parallel)"
  for f in "${pids[@]}"; do wait "$f" || true; done
  [ -f "$STATE/markers/keystone-db" ] || fail keystone-manage "$LOGDIR/keystone-manage.log" "db_sync failed"
  [ -f "$STATE/markers/neutron-db" ] || fail neutron-db-manage "$LOGDIR/neutron-db-manage.log" "upgrade heads failed"
  [ -f "$STATE/markers/octavia-db" ] || fail octavia-db-manage "$LOGDIR/octavia-db-manage.log" "upgrade head failed"
}

keystone_up() {
  local KM="$KVENV/bin/keystone-manage --config-file $STATE/etc/keystone.conf"
  if [ ! -f "$STATE/markers/keystone-bootstrap" ]; then
    mkdir -p -m 700 "$STATE/keystone"/{fernet-keys,fernet-receipts,credential-keys}
    { $KM fernet_setup --keystone-user root --keystone-group root &&
      $KM credential_setup --keystone-user root --keystone-group root &&
      $KM bootstrap --bootstrap-password "$STACK_ADMIN_PASSWORD" --bootstrap-username admin \
        --bootstrap-project-name admin --bootstrap-role-name admin \
        --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
        --bootstrap-admin-url http://127.0.0.1:5000/v3 --bootstrap-internal-url http://127.0.0.1:5000/v3 \
        --bootstrap-public-url http://127.0.0.1:5000/v3; } >> "$LOGDIR/keystone-manage.log" 2>&1 \
      || fail keystone-manage "$LOGDIR/keystone-manage.log" "bootstrap failed"
    touch "$STATE/markers/keystone-bootstrap"
  fi
  if ! running keystone; then
    log "starting Keystone $KEYSTONE_VERSION on 127.0.0.1:5000"
    OS_KEYSTONE_CONFIG_DIR="$STATE/etc" OS_KEYSTONE_CONFIG_FILES="keystone.conf" \
      start keystone "$LOGDIR/keystone-gunicorn.log" "$KVENV/bin/gunicorn" --chdir /tmp --pythonpath "$STATE/etc" \
      --bind 127.0.0.1:5000 --workers 1 --threads 4 --worker-class gthread --timeout 120 --graceful-timeout 5 \
      --access-logfile "$LOGDIR/keystone-access.log" keystone_wsgi:application
  fi
  ready keystone "$LOGDIR/keystone.log" 60 curl -sf -m 5 http://127.0.0.1:5000/v3
  if [ ! -f "$STATE/markers/keystone-setup" ]; then
    "$HERE/keystone_setup.sh" > "$LOGDIR/keystone-setup.log" 2>&1 \
      || fail keystone-setup "$LOGDIR/keystone-setup.log" "could not create users/catalog/application credential"
    touch "$STATE/markers/keystone-setup"
  fi
}

neutron_up() {
  if ! running neutron-api; then
    log "starting Neutron $NEUTRON_VERSION API (ML2/OVN) on 127.0.0.1:9696"
    # OS_NEUTRON_CONFIG_*: where the WSGI app reads its config; ASGI_WORKERS: the OVN hash
    # ring needs the API worker count and only knows uwsgi/mod_wsgi otherwise.
    OS_NEUTRON_CONFIG_DIR="$STATE/etc" OS_NEUTRON_CONFIG_FILES="neutron.conf;ml2_conf.ini" ASGI_WORKERS=1 \
      start neutron-api "$LOGDIR/neutron-gunicorn.log" "$NVENV/bin/gunicorn" --chdir /tmp --pythonpath "$STATE/etc" \
      --bind 127.0.0.1:9696 --workers 1 --timeout 300 --graceful-timeout 5 \
      --access-logfile "$LOGDIR/neutron-access.log" neutron_wsgi:application
  fi
  ADMIN_TOKEN=${ADMIN_TOKEN:-$(admin_token)}
  ready neutron-api "$LOGDIR/neutron-server.log" 120 curl -sf -m 5 -H "X-Auth-Token: $ADMIN_TOKEN" http://127.0.0.1:9696/v2.0/networks
  ready neutron-api "$LOGDIR/neutron-server.log" 60 sh -c \
    "curl -sf -m 5 -H 'X-Auth-Token: $ADMIN_TOKEN' 'http://127.0.0.1:9696/v2.0/agents?host=$HOST' | jq -e '[.agents[] | select((.agent_type==\"OVN Controller agent\" or .agent_type==\"OVN Controller Gateway agent\") and .alive)] | length > 0'"
}

octavia_up() {
  ADMIN_TOKEN=${ADMIN_TOKEN:-$(admin_token)}
  if ! running octavia-driver-agent; then
    log "starting octavia-driver-agent (ovn provider agent)"
    # ovn-octavia-provider always uses octavia-lib's default socket paths.
    mkdir -p /var/run/octavia; rm -f /var/run/octavia/{status,stats,get}.sock
    start octavia-driver-agent "$LOGDIR/octavia-driver-agent.out" "$OVENV/bin/octavia-driver-agent" \
      --config-file "$STATE/etc/octavia.conf"
  fi
  ready octavia-driver-agent "$LOGDIR/octavia-driver-agent.out" 60 test -S /var/run/octavia/get.sock
  if ! running octavia-api; then
    log "starting Octavia $OCTAVIA_VERSION API on 127.0.0.1:9876"
    start octavia-api "$LOGDIR/octavia-api.out" "$OVENV/bin/octavia-api" --config-file "$STATE/etc/octavia.conf"
  fi
  ready octavia-api "$LOGDIR/octavia-api.out" 120 sh -c \
    "curl -sf -m 5 -H 'X-Auth-Token: $ADMIN_TOKEN' http://127.0.0.1:9876/v2/lbaas/providers | grep -q '\"ovn\"'"
}

openstack_up() {
  render_configs
  ovs_up
  # br-ex and the chassis' bridge mapping / gateway option before ovn-controller registers the
  # chassis and before objects.sh sets kuryr-router's gateway (issue 13: FIPs answer from the host).
  "$HERE/ext-net.sh" up || fail ext-net "$LOGDIR/ext-net.log" "the external network's bridge br-ex"
  ovn_up
  mariadb_up
  db_migrations
  keystone_up
  neutron_up
  octavia_up
  "$HERE/objects.sh" || fail objects "$LOGDIR/objects.log" "initial OpenStack objects"
  "$HERE/ext-net.sh" check || fail ext-net "$LOGDIR/ext-net.log" "kuryr-router's gateway port is not on this chassis"
  "$HERE/node-port.sh" up || fail node-port "$LOGDIR/objects.log" "the node's port on the pod network"
}

openstack_down() {
  stop_pid octavia-api octavia-api
  stop_pid octavia-driver-agent octavia-driver-agent
  rm -f /var/run/octavia/status.sock /var/run/octavia/stats.sock /var/run/octavia/get.sock
  stop_pid neutron-api neutron_wsgi
  stop_pid keystone keystone_wsgi
  stop_pid mariadb mariadbd 300
  stop_pid ovn-controller ovn-controller
  stop_pid ovn-northd ovn-northd
  stop_pid ovnnb-db ovsdb-server
  stop_pid ovnsb-db ovsdb-server
  stop_pid ovs-vswitchd ovs-vswitchd
  stop_pid ovsdb-server ovsdb-server
}
