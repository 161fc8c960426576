//! High-level API over the `Open_vSwitch` database: bridges, ports, interfaces.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::client::{Client, DEFAULT_TIMEOUT};
use crate::endpoint::DEFAULT_ENDPOINT;
use crate::error::{Error, Result};
use crate::monitor::MonitorRequest;
use crate::op::{Condition, Mutation, Mutator, OpResult, Operation, WaitUntil};
use crate::value::{Atom, Row, Uuid, Value};

/// Name of the vswitch database.
pub const OVS_DB: &str = "Open_vSwitch";

/// How often `add_port` re-reads and retries after a concurrent change.
const MAX_ATTEMPTS: usize = 5;

const IFACE_COLUMNS: &[&str] = &[
    "_uuid",
    "name",
    "type",
    "external_ids",
    "ofport",
    "error",
    "admin_state",
    "link_state",
    "mac_in_use",
    "ifindex",
];

/// A bridge row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeInfo {
    /// Row UUID.
    pub uuid: Uuid,
    /// Bridge name.
    pub name: String,
    /// `datapath_type` (`""`/`system` for kernel, `netdev` for userspace/DPDK).
    pub datapath_type: String,
}

/// An interface row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Row UUID.
    pub uuid: Uuid,
    /// Interface name.
    pub name: String,
    /// `type` (`""` = system, `internal`, ...).
    pub iface_type: String,
    /// `external_ids` (iface-id, attached-mac, ...).
    pub external_ids: BTreeMap<String, String>,
    /// OpenFlow port; unset until vswitchd picks it up, -1 on failure.
    pub ofport: Option<i64>,
    /// vswitchd error message, if any.
    pub error: Option<String>,
    /// `up`/`down` as seen by vswitchd.
    pub admin_state: Option<String>,
    /// `up`/`down` as seen by vswitchd.
    pub link_state: Option<String>,
    /// MAC address in use.
    pub mac_in_use: Option<String>,
    /// The kernel ifindex vswitchd sees for the device (unset until it opens it, 0 if it has
    /// none). With the userspace datapath vswitchd refreshes it from the device name, so it
    /// can show a re-created device's ifindex while vswitchd still receives on the old one.
    pub ifindex: Option<i64>,
}

impl InterfaceInfo {
    pub(crate) fn from_row(row: &Row) -> Result<InterfaceInfo> {
        let uuid = row
            .uuid()
            .cloned()
            .ok_or_else(|| Error::Protocol("Interface row without _uuid".into()))?;
        let s = |c: &str| row.get_str(c).map(str::to_owned);
        Ok(InterfaceInfo {
            uuid,
            name: s("name").unwrap_or_default(),
            iface_type: s("type").unwrap_or_default(),
            external_ids: row.get_string_map("external_ids"),
            ofport: row.get_i64("ofport"),
            error: s("error"),
            admin_state: s("admin_state"),
            link_state: s("link_state"),
            mac_in_use: s("mac_in_use"),
            ifindex: row.get_i64("ifindex"),
        })
    }
}

/// A port row with its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Row UUID.
    pub uuid: Uuid,
    /// Port name.
    pub name: String,
    /// Port `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// Interfaces of the port (one unless bonded).
    pub interfaces: Vec<InterfaceInfo>,
}

/// What [`Ovs::add_port`] should create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Bridge to attach to.
    pub bridge: String,
    /// Port and interface name.
    pub ifname: String,
    /// Interface `type` (e.g. `internal`); `None` keeps the default/current.
    pub iface_type: Option<String>,
    /// Interface `external_ids` to set (merged over existing keys on update).
    pub external_ids: BTreeMap<String, String>,
    /// If set, wait up to this long for vswitchd to apply the change (`--wait=vswitchd`).
    pub wait_vswitchd: Option<Duration>,
    /// If set, an existing port of that name is not updated in place: it is removed, vswitchd
    /// is given up to this long to apply the removal, then the port is inserted afresh (like
    /// `ovs-vsctl del-port` then `add-port`, two transactions). Needed whenever the device was
    /// (re)created under a name OVS already has: vswitchd keeps an existing port's receive
    /// side bound to the device it opened, dead or not (userspace datapath).
    pub replace: Option<Duration>,
}

impl PortSpec {
    /// Port `ifname` on `bridge`, no external ids yet.
    pub fn new(bridge: &str, ifname: &str) -> PortSpec {
        PortSpec {
            bridge: bridge.to_owned(),
            ifname: ifname.to_owned(),
            iface_type: None,
            external_ids: BTreeMap::new(),
            wait_vswitchd: None,
            replace: None,
        }
    }

    /// Set one external id.
    pub fn external_id(mut self, key: &str, value: &str) -> PortSpec {
        self.external_ids.insert(key.to_owned(), value.to_owned());
        self
    }

    /// `iface-id` (Neutron port id).
    pub fn iface_id(self, v: &str) -> PortSpec {
        self.external_id("iface-id", v)
    }

    /// `attached-mac`
    pub fn attached_mac(self, v: &str) -> PortSpec {
        self.external_id("attached-mac", v)
    }

    /// `iface-status` (usually `active`).
    pub fn iface_status(self, v: &str) -> PortSpec {
        self.external_id("iface-status", v)
    }

    /// `vm-uuid` (pod uid).
    pub fn vm_uuid(self, v: &str) -> PortSpec {
        self.external_id("vm-uuid", v)
    }

    /// Interface `type`, e.g. `internal`.
    pub fn iface_type(mut self, t: &str) -> PortSpec {
        self.iface_type = Some(t.to_owned());
        self
    }

    /// Wait for vswitchd to apply the change.
    pub fn wait_vswitchd(mut self, timeout: Duration) -> PortSpec {
        self.wait_vswitchd = Some(timeout);
        self
    }

    /// Replace an existing port instead of updating it (see [`PortSpec::replace`]); `wait`
    /// bounds the wait for vswitchd between removal and insertion (if vswitchd is down, the
    /// port is inserted after it: a starting vswitchd opens every device afresh).
    pub fn replace(mut self, wait: Duration) -> PortSpec {
        self.replace = Some(wait);
        self
    }
}

/// Result of [`Ovs::add_port`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPortOutcome {
    /// False if the port already existed and only its interface was updated.
    pub created: bool,
    /// An existing port was removed and inserted again ([`PortSpec::replace`]): `Some(true)`
    /// if vswitchd applied the removal in between, `Some(false)` if it did not within the
    /// bound (vswitchd down or slow), `None` if nothing was replaced.
    pub replaced: Option<bool>,
    /// Port row UUID.
    pub port_uuid: Uuid,
    /// Interface row UUID.
    pub interface_uuid: Uuid,
    /// `Open_vSwitch.next_cfg` after the change (None without an Open_vSwitch row).
    pub next_cfg: Option<i64>,
}

/// Handle on the local vswitch database; reconnects lazily after the connection drops.
#[derive(Debug)]
pub struct Ovs {
    endpoint: String,
    timeout: Duration,
    client: Mutex<Option<Client>>,
}

fn root() -> Vec<Condition> {
    Vec::new()
}

fn bump_next_cfg() -> [Operation; 2] {
    [
        Operation::mutate(
            "Open_vSwitch",
            root(),
            vec![Mutation::new("next_cfg", Mutator::Add, 1)],
        ),
        Operation::select("Open_vSwitch", root(), &["next_cfg"]),
    ]
}

/// Aborts the transaction unless no row of `table` is named `name`.
fn absent(table: &str, name: &str) -> Operation {
    Operation::wait(
        table,
        vec![Condition::eq("name", name)],
        &["name"],
        WaitUntil::Eq,
        vec![],
        Some(0),
    )
}

fn first_row(r: &OpResult) -> Option<&Row> {
    r.rows().first()
}

fn result_at(res: &[OpResult], i: usize) -> Result<&OpResult> {
    res.get(i)
        .ok_or_else(|| Error::Protocol(format!("missing result {i}")))
}

impl Ovs {
    /// Connect to the default endpoint (`unix:/var/run/openvswitch/db.sock`).
    pub async fn connect_default() -> Result<Ovs> {
        Ovs::connect(DEFAULT_ENDPOINT, DEFAULT_TIMEOUT).await
    }

    /// Connect now to `endpoint`; `timeout` is the per-call deadline.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Ovs> {
        let client = Client::connect(endpoint, timeout).await?;
        Ok(Ovs {
            endpoint: endpoint.to_owned(),
            timeout,
            client: Mutex::new(Some(client)),
        })
    }

    /// Create without connecting; the first call connects.
    pub fn lazy(endpoint: &str, timeout: Duration) -> Ovs {
        Ovs {
            endpoint: endpoint.to_owned(),
            timeout,
            client: Mutex::new(None),
        }
    }

    /// The live client, reconnecting if the previous connection closed.
    pub async fn client(&self) -> Result<Client> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            debug!(endpoint = %self.endpoint, "ovsdb connection lost, reconnecting");
        }
        let c = Client::connect(&self.endpoint, self.timeout).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn transact(&self, ops: &[Operation]) -> Result<Vec<OpResult>> {
        self.client().await?.transact(OVS_DB, ops).await
    }

    /// The bridge row, or `None` if no such bridge.
    pub async fn bridge_exists(&self, name: &str) -> Result<Option<BridgeInfo>> {
        let res = self
            .transact(&[Operation::select(
                "Bridge",
                vec![Condition::eq("name", name)],
                &["_uuid", "datapath_type"],
            )])
            .await?;
        let Some(row) = first_row(result_at(&res, 0)?) else {
            return Ok(None);
        };
        let uuid = row
            .uuid()
            .cloned()
            .ok_or_else(|| Error::Protocol("Bridge row without _uuid".into()))?;
        Ok(Some(BridgeInfo {
            uuid,
            name: name.to_owned(),
            datapath_type: row.get_str("datapath_type").unwrap_or_default().to_owned(),
        }))
    }

    async fn open_vswitch_map(&self, column: &str) -> Result<BTreeMap<String, String>> {
        let res = self
            .transact(&[Operation::select("Open_vSwitch", root(), &[column])])
            .await?;
        let row = first_row(result_at(&res, 0)?).ok_or(Error::NotFound {
            kind: "Open_vSwitch row",
            name: ".".into(),
        })?;
        Ok(row.get_string_map(column))
    }

    /// `Open_vSwitch.other_config` (e.g. `userspace-tso-enable`).
    pub async fn open_vswitch_other_config(&self) -> Result<BTreeMap<String, String>> {
        self.open_vswitch_map("other_config").await
    }

    /// `Open_vSwitch.external_ids` (e.g. `system-id`).
    pub async fn external_ids(&self) -> Result<BTreeMap<String, String>> {
        self.open_vswitch_map("external_ids").await
    }

    /// Whether `other_config:userspace-tso-enable=true`.
    pub async fn userspace_tso_enabled(&self) -> Result<bool> {
        Ok(self
            .open_vswitch_other_config()
            .await?
            .get("userspace-tso-enable")
            .map(String::as_str)
            == Some("true"))
    }

    /// The interface row named `ifname`, if any.
    pub async fn find_interface(&self, ifname: &str) -> Result<Option<InterfaceInfo>> {
        let res = self
            .transact(&[Operation::select(
                "Interface",
                vec![Condition::eq("name", ifname)],
                IFACE_COLUMNS,
            )])
            .await?;
        first_row(result_at(&res, 0)?)
            .map(InterfaceInfo::from_row)
            .transpose()
    }

    /// Ports of `bridge` with their interfaces, sorted by name (one consistent snapshot).
    pub async fn list_ports(&self, bridge: &str) -> Result<Vec<PortInfo>> {
        let res = self
            .transact(&[
                Operation::select("Bridge", vec![Condition::eq("name", bridge)], &["ports"]),
                Operation::select(
                    "Port",
                    root(),
                    &["_uuid", "name", "interfaces", "external_ids"],
                ),
                Operation::select("Interface", root(), IFACE_COLUMNS),
            ])
            .await?;
        let br = first_row(result_at(&res, 0)?).ok_or(Error::NotFound {
            kind: "bridge",
            name: bridge.into(),
        })?;
        let wanted = br.get_uuids("ports");
        let mut ifaces = BTreeMap::new();
        for row in result_at(&res, 2)?.rows() {
            let i = InterfaceInfo::from_row(row)?;
            ifaces.insert(i.uuid.clone(), i);
        }
        let mut ports = Vec::new();
        for row in result_at(&res, 1)?.rows() {
            let Some(uuid) = row.uuid() else { continue };
            if !wanted.contains(uuid) {
                continue;
            }
            ports.push(PortInfo {
                uuid: uuid.clone(),
                name: row.get_str("name").unwrap_or_default().to_owned(),
                external_ids: row.get_string_map("external_ids"),
                interfaces: row
                    .get_uuids("interfaces")
                    .iter()
                    .filter_map(|u| ifaces.get(u).cloned())
                    .collect(),
            });
        }
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ports)
    }

    /// Create port+interface on the bridge in one transaction, or update the
    /// interface's external ids if the port is already there. Retries on races.
    pub async fn add_port(&self, spec: &PortSpec) -> Result<AddPortOutcome> {
        // The common case (a new port on an existing bridge) in one round trip; anything else
        // (the port exists, the bridge is missing, a race) takes the read-then-write path.
        let fast = match self.add_port_new(spec).await {
            Ok(o) => o,
            Err(e) if e.is_retryable_conflict() => None,
            Err(e) => return Err(e),
        };
        let outcome = match fast {
            Some(o) => o,
            None => self.add_port_retrying(spec).await?,
        };
        info!(bridge = %spec.bridge, port = %spec.ifname, created = outcome.created, replaced = ?outcome.replaced, "ovs port plugged");
        if let Some(timeout) = spec.wait_vswitchd {
            let target = outcome.next_cfg.ok_or(Error::NotFound {
                kind: "Open_vSwitch row",
                name: ".".into(),
            })?;
            self.wait_for_cfg(target, timeout).await?;
        }
        Ok(outcome)
    }

    /// The read-then-write path of [`Ovs::add_port`], retried on races.
    async fn add_port_retrying(&self, spec: &PortSpec) -> Result<AddPortOutcome> {
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self.add_port_once(spec).await {
                Ok(Some(o)) => break o,
                Ok(None) if attempt < MAX_ATTEMPTS => {
                    debug!(port = %spec.ifname, attempt, "add_port raced, retrying")
                }
                Err(e) if e.is_retryable_conflict() && attempt < MAX_ATTEMPTS => {
                    debug!(port = %spec.ifname, attempt, error = %e, "add_port conflict, retrying")
                }
                Ok(None) => {
                    return Err(Error::Conflict(format!(
                        "port {} kept changing concurrently",
                        spec.ifname
                    )))
                }
                Err(e) => return Err(e),
            }
        };
        Ok(outcome)
    }

    /// Inserts port + interface in one transaction guarded by `wait`s that neither name
    /// exists yet. `Ok(None)`: the bridge is missing (nothing was written: unreferenced rows
    /// are garbage-collected); a failed guard is a retryable conflict error.
    async fn add_port_new(&self, spec: &PortSpec) -> Result<Option<AddPortOutcome>> {
        debug!(port = %spec.ifname, bridge = %spec.bridge, "creating port (one round trip)");
        self.insert_port(
            spec,
            vec![
                absent("Port", &spec.ifname),
                absent("Interface", &spec.ifname),
            ],
            Condition::eq("name", spec.bridge.as_str()),
        )
        .await
    }

    /// One transaction: `guards`, then Interface + Port rows and the bridge's `ports` mutation
    /// (bridge selected by `bridge`), then a `next_cfg` bump. `Ok(None)` if no bridge matched
    /// (the unreferenced rows are garbage-collected, nothing is written).
    async fn insert_port(
        &self,
        spec: &PortSpec,
        guards: Vec<Operation>,
        bridge: Condition,
    ) -> Result<Option<AddPortOutcome>> {
        let name = spec.ifname.as_str();
        let mut irow = Row::new()
            .with("name", name)
            .with("external_ids", Value::string_map(&spec.external_ids));
        if let Some(t) = &spec.iface_type {
            irow.set("type", t.as_str());
        }
        let at = guards.len();
        let mut ops = guards;
        ops.extend([
            Operation::insert("Interface", irow, Some("iface")),
            Operation::insert(
                "Port",
                Row::new()
                    .with("name", name)
                    .with("interfaces", Atom::NamedUuid("iface".into())),
                Some("port"),
            ),
            Operation::mutate(
                "Bridge",
                vec![bridge],
                vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Value::set([Atom::NamedUuid("port".into())]),
                )],
            ),
        ]);
        ops.extend(bump_next_cfg());
        let res = self.transact(&ops).await?;
        if result_at(&res, at + 2)?.count() != 1 {
            return Ok(None);
        }
        let uuid = |i| {
            result_at(&res, i)?
                .uuid
                .clone()
                .ok_or_else(|| Error::Protocol("insert without uuid".into()))
        };
        Ok(Some(AddPortOutcome {
            created: true,
            replaced: None,
            interface_uuid: uuid(at)?,
            port_uuid: uuid(at + 1)?,
            next_cfg: first_row(result_at(&res, at + 4)?).and_then(|r| r.get_i64("next_cfg")),
        }))
    }

    /// One read-then-write attempt; `Ok(None)` means "state changed under us, retry".
    async fn add_port_once(&self, spec: &PortSpec) -> Result<Option<AddPortOutcome>> {
        let name = spec.ifname.as_str();
        let read = self
            .transact(&[
                Operation::select(
                    "Bridge",
                    vec![Condition::eq("name", spec.bridge.as_str())],
                    &["_uuid", "ports"],
                ),
                Operation::select("Port", vec![Condition::eq("name", name)], &["_uuid"]),
                Operation::select("Interface", vec![Condition::eq("name", name)], &["_uuid"]),
            ])
            .await?;
        let br = first_row(result_at(&read, 0)?).ok_or(Error::NotFound {
            kind: "bridge",
            name: spec.bridge.clone(),
        })?;
        let br_uuid = br
            .uuid()
            .cloned()
            .ok_or_else(|| Error::Protocol("Bridge row without _uuid".into()))?;
        let port = first_row(result_at(&read, 1)?).and_then(Row::uuid).cloned();
        let iface = first_row(result_at(&read, 2)?).and_then(Row::uuid).cloned();

        match (port, iface) {
            (Some(port), Some(iface)) => {
                if !br.get_uuids("ports").contains(&port) {
                    return Err(Error::Conflict(format!(
                        "port {name} exists on a bridge other than {}",
                        spec.bridge
                    )));
                }
                if let Some(wait) = spec.replace {
                    return self.replace_port(spec, &br_uuid, &port, wait).await;
                }
                let keys: Vec<Atom> = spec
                    .external_ids
                    .keys()
                    .map(|k| Atom::from(k.as_str()))
                    .collect();
                let mut ops = vec![
                    // Abort unless the port is still on this bridge.
                    Operation::wait(
                        "Bridge",
                        vec![
                            Condition::eq("_uuid", &br_uuid),
                            Condition::includes("ports", &port),
                        ],
                        &["name"],
                        WaitUntil::Eq,
                        vec![Row::new().with("name", spec.bridge.as_str())],
                        Some(0),
                    ),
                    Operation::mutate(
                        "Interface",
                        vec![Condition::eq("_uuid", &iface)],
                        vec![
                            Mutation::new("external_ids", Mutator::Delete, Value::Set(keys)),
                            Mutation::new(
                                "external_ids",
                                Mutator::Insert,
                                Value::string_map(&spec.external_ids),
                            ),
                        ],
                    ),
                ];
                if let Some(t) = &spec.iface_type {
                    ops.push(Operation::update(
                        "Interface",
                        vec![Condition::eq("_uuid", &iface)],
                        Row::new().with("type", t.as_str()),
                    ));
                }
                let cfg = ops.len();
                ops.extend(bump_next_cfg());
                debug!(port = name, "port exists, updating interface");
                let res = self.transact(&ops).await?;
                if result_at(&res, 1)?.count() != 1 {
                    return Ok(None);
                }
                Ok(Some(AddPortOutcome {
                    created: false,
                    replaced: None,
                    port_uuid: port,
                    interface_uuid: iface,
                    next_cfg: first_row(result_at(&res, cfg + 1)?)
                        .and_then(|r| r.get_i64("next_cfg")),
                }))
            }
            (None, None) => {
                debug!(port = name, bridge = %spec.bridge, "creating port");
                // None: the bridge vanished; the orphan rows were garbage-collected.
                self.insert_port(spec, vec![], Condition::eq("_uuid", &br_uuid))
                    .await
            }
            (Some(_), None) => Err(Error::Conflict(format!(
                "port {name} exists but has no interface named {name}"
            ))),
            (None, Some(_)) => Err(Error::Conflict(format!(
                "interface {name} exists in a port with another name"
            ))),
        }
    }

    /// The replace path of [`Ovs::add_port`]: removes `port` from the bridge (one transaction),
    /// waits up to `wait` for vswitchd to apply that, then inserts the port afresh (a second
    /// transaction, guarded by the name being free). `Ok(None)`: changed under us, retry.
    async fn replace_port(
        &self,
        spec: &PortSpec,
        br_uuid: &Uuid,
        port: &Uuid,
        wait: Duration,
    ) -> Result<Option<AddPortOutcome>> {
        let name = spec.ifname.as_str();
        let mut ops = vec![Operation::mutate(
            "Bridge",
            vec![
                Condition::eq("_uuid", br_uuid),
                Condition::includes("ports", port),
            ],
            vec![Mutation::new(
                "ports",
                Mutator::Delete,
                Value::set([port.clone()]),
            )],
        )];
        ops.extend(bump_next_cfg());
        let res = self.transact(&ops).await?;
        if result_at(&res, 0)?.count() != 1 {
            return Ok(None);
        }
        let applied = match first_row(result_at(&res, 2)?).and_then(|r| r.get_i64("next_cfg")) {
            None => false,
            Some(target) => match self.wait_for_cfg(target, wait).await {
                Ok(_) => true,
                Err(Error::Timeout { .. }) => {
                    warn!(port = name, ?wait, "ovs-vswitchd did not apply the removal of the old port in time (down?); inserting the new one anyway");
                    false
                }
                Err(e) => return Err(e),
            },
        };
        debug!(port = name, applied, "old port removed, inserting afresh");
        let out = self
            .insert_port(
                spec,
                vec![absent("Port", name), absent("Interface", name)],
                Condition::eq("_uuid", br_uuid),
            )
            .await?;
        Ok(out.map(|o| AddPortOutcome {
            replaced: Some(applied),
            ..o
        }))
    }

    /// The row UUID of port `ifname`, if any.
    async fn port_uuid(&self, ifname: &str) -> Result<Option<Uuid>> {
        let read = self
            .transact(&[Operation::select(
                "Port",
                vec![Condition::eq("name", ifname)],
                &["_uuid"],
            )])
            .await?;
        Ok(first_row(result_at(&read, 0)?).and_then(Row::uuid).cloned())
    }

    /// The bridge holding port `ifname`, if any.
    pub async fn port_bridge(&self, ifname: &str) -> Result<Option<String>> {
        let Some(port) = self.port_uuid(ifname).await? else {
            return Ok(None);
        };
        let res = self
            .transact(&[Operation::select(
                "Bridge",
                vec![Condition::includes("ports", &port)],
                &["name"],
            )])
            .await?;
        Ok(first_row(result_at(&res, 0)?).and_then(|r| r.get_str("name").map(str::to_owned)))
    }

    /// Remove port `ifname` from `bridge`; Ok(false) if it was not there.
    /// ovsdb garbage-collects the unreferenced Port and Interface rows.
    pub async fn del_port(&self, bridge: &str, ifname: &str) -> Result<bool> {
        self.del_port_wait(bridge, ifname, None).await
    }

    /// [`Ovs::del_port`], optionally waiting for vswitchd to apply it.
    pub async fn del_port_wait(
        &self,
        bridge: &str,
        ifname: &str,
        wait_vswitchd: Option<Duration>,
    ) -> Result<bool> {
        let Some(port) = self.port_uuid(ifname).await? else {
            debug!(port = ifname, "del_port: no such port");
            return Ok(false);
        };
        let mut ops = vec![Operation::mutate(
            "Bridge",
            vec![
                Condition::eq("name", bridge),
                Condition::includes("ports", &port),
            ],
            vec![Mutation::new(
                "ports",
                Mutator::Delete,
                Value::set([port.clone()]),
            )],
        )];
        ops.extend(bump_next_cfg());
        let res = self.transact(&ops).await?;
        let removed = result_at(&res, 0)?.count() == 1;
        if !removed {
            debug!(port = ifname, bridge, "del_port: port not on this bridge");
            return Ok(false);
        }
        info!(bridge, port = ifname, "ovs port removed");
        if let Some(timeout) = wait_vswitchd {
            if let Some(target) = first_row(result_at(&res, 2)?).and_then(|r| r.get_i64("next_cfg"))
            {
                self.wait_for_cfg(target, timeout).await?;
            }
        }
        Ok(true)
    }

    /// Whether ovs-vswitchd is attached to this database: while it runs it holds the OVSDB
    /// lock `ovs_vswitchd` (RFC 7047 section 4.1.8). Asked on a connection of its own that
    /// leaves the lock (or its queue) at once, so a starting vswitchd is never held up.
    pub async fn vswitchd_running(&self) -> Result<bool> {
        const LOCK: &str = "ovs_vswitchd";
        let c = Client::connect(&self.endpoint, self.timeout).await?;
        let r = c.call("lock", serde_json::json!([LOCK])).await;
        // Leave it whatever the answer was: we hold the lock, or wait in its queue.
        let left = c.call("unlock", serde_json::json!([LOCK])).await;
        let got = r?
            .get("locked")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(|| Error::Protocol("lock reply without \"locked\"".into()))?;
        if let Err(e) = left {
            debug!(error = %e, "unlock of the probe lock failed (the connection closes anyway)");
        }
        Ok(!got)
    }

    /// Watch `req` with a monitor until `f` returns `Some` for a row (initial or updated).
    pub async fn wait_rows<T>(
        &self,
        method: &str,
        req: MonitorRequest,
        timeout: Duration,
        mut f: impl FnMut(&Row) -> Option<Result<T>>,
    ) -> Result<T> {
        let client = self.client().await?;
        let fut = async {
            let mut mon = client.monitor(OVS_DB, std::slice::from_ref(&req)).await?;
            let mut updates = mon.initial().clone();
            loop {
                for rows in updates.values() {
                    for upd in rows.values() {
                        if let Some(done) = upd.new.as_ref().and_then(&mut f) {
                            return done;
                        }
                    }
                }
                updates = mon.next().await?;
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                method: method.to_owned(),
                timeout,
            }),
        }
    }

    /// Watch `columns` of Interface `ifname` until `f` returns `Some`.
    pub async fn wait_interface<T>(
        &self,
        ifname: &str,
        columns: &[&str],
        timeout: Duration,
        mut f: impl FnMut(&Row) -> Option<Result<T>>,
    ) -> Result<T> {
        let mut cols: Vec<&str> = columns.to_vec();
        if !cols.contains(&"name") {
            cols.push("name");
        }
        self.wait_rows(
            "wait_interface",
            MonitorRequest::new("Interface", &cols),
            timeout,
            |row| {
                if row.get_str("name") == Some(ifname) {
                    f(row)
                } else {
                    None
                }
            },
        )
        .await
    }

    /// Wait until vswitchd assigns an OpenFlow port to `ifname` (monitor-based, no polling).
    pub async fn wait_ofport(&self, ifname: &str, timeout: Duration) -> Result<i64> {
        self.wait_interface(ifname, &["ofport", "error"], timeout, |row| {
            match row.get_i64("ofport") {
                Some(p) if p > 0 => Some(Ok(p)),
                Some(-1) => Some(Err(Error::Interface {
                    name: ifname.to_owned(),
                    error: row.get_str("error").unwrap_or("ofport -1").to_owned(),
                })),
                _ => None,
            }
        })
        .await
        .map_err(|e| match e {
            Error::Timeout { timeout, .. } => Error::Timeout {
                method: format!("wait_ofport({ifname})"),
                timeout,
            },
            e => e,
        })
    }

    /// Wait until `Open_vSwitch.cur_cfg >= target` (vswitchd applied the config).
    pub async fn wait_for_cfg(&self, target: i64, timeout: Duration) -> Result<i64> {
        debug!(target, "waiting for vswitchd cur_cfg");
        self.wait_rows(
            "wait_for_cfg",
            MonitorRequest::new("Open_vSwitch", &["cur_cfg"]),
            timeout,
            |row| row.get_i64("cur_cfg").filter(|c| *c >= target).map(Ok),
        )
        .await
    }
}
