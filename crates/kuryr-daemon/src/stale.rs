//! Stale OVS ports: an OVS port whose device ovs-vswitchd does not hold.
//!
//! ovs-vswitchd (userspace datapath) opens a port's device once, when the port appears in
//! OVSDB, and keeps receiving on that device. If the device is deleted and created again under
//! the same name while the OVS port row stays, vswitchd keeps a socket on the dead device:
//! the port still has its OpenFlow number, OVN still says up, Neutron says ACTIVE, and nothing
//! from the pod reaches OVS (issue 11). The daemon never updates a port of a re-created
//! device in place ([`crate::binding::ovs::add_ovs_port`] replaces it), and checks what it
//! plugged: after ADD, before a pre-plugged port counts as ready, on CNI CHECK and in a
//! periodic audit of every port it owns. A stale port is re-added (removed, vswitchd given
//! time to drop it, inserted again with the same external ids), counted, logged and, when
//! it belongs to a pod, reported in an Event on the pod.

use std::sync::Arc;
use std::time::Duration;

use kuryr_core::vif::Binding;
use kuryr_netplumb::Netns;
use kuryr_ovsdb::Ovs;

use crate::api::routes::PodRef;
use crate::attachments::{AttachedIface, AttachmentStore};
use crate::binding::hybrid::HybridNames;
use crate::binding::ovs::{self as ovsb, Hold};
use crate::binding::BindError;
use crate::events::{reasons, Recorder};
use crate::metrics::Metrics;
use crate::pool::Pool;

/// How long a repair waits for vswitchd to open the re-added port before judging it.
pub const REPAIR_WAIT: Duration = Duration::from_secs(10);

/// One OVS port the daemon owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPort {
    /// Neutron port id (the key of the port's lock).
    pub port_id: String,
    pub bridge: String,
    /// OVS port and device name (`tap…`, `qvo…`).
    pub ifname: String,
    /// The pod it serves; `None` for a pre-plugged pool port.
    pub pod: Option<PodRef>,
}

impl OwnedPort {
    /// The OVS port of an attached interface (`ovs`: the tap, `hybrid`: the qvo), if it has one.
    pub fn of_iface(iface: &AttachedIface, pod: Option<PodRef>) -> Option<OwnedPort> {
        let (bridge, ifname) = match &iface.vif.binding {
            Binding::Ovs { bridge } => (bridge.clone(), iface.host_ifname.clone()),
            Binding::Hybrid { .. } => {
                let n = HybridNames::of(&iface.vif).ok()?;
                (n.bridge, n.qvo)
            }
            _ => return None,
        };
        if ifname.is_empty() {
            return None;
        }
        Some(OwnedPort {
            port_id: iface.port_id.clone(),
            bridge,
            ifname,
            pod,
        })
    }
}

/// What [`Repairer::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not stale (held, pending, gone, ...): nothing done.
    NotStale(Hold),
    /// Stale (`why`), re-added, and vswitchd holds the device now.
    Repaired { why: String },
    /// Stale (`why`) and still not held after re-adding it (`after`), or the repair failed.
    Unrepaired { why: String, after: String },
}

/// Finds and repairs stale ports. Cheap to clone (into background tasks).
#[derive(Debug, Clone)]
pub struct Repairer {
    pub ovs: Arc<Ovs>,
    pub host: Netns,
    pub pool: Arc<Pool>,
    pub metrics: Metrics,
    pub events: Recorder,
}

impl Repairer {
    /// Judges `port` under its lock (the one plugs, takes and unplugs hold) and re-adds it if
    /// stale. `found_by` labels the metric.
    pub async fn check(
        &self,
        port: &OwnedPort,
        found_by: &'static str,
    ) -> Result<Verdict, BindError> {
        let _g = self.pool.lock_port(&port.port_id).await;
        self.check_locked(port, found_by).await
    }

    /// [`Repairer::check`] for a caller that holds the port's lock.
    pub async fn check_locked(
        &self,
        port: &OwnedPort,
        found_by: &'static str,
    ) -> Result<Verdict, BindError> {
        let hold = ovsb::inspect(&self.ovs, &self.host, &port.ifname).await?;
        let Hold::Stale(why) = hold else {
            return Ok(Verdict::NotStale(hold));
        };
        let owner = port.pod.as_ref().map_or_else(
            || "a pre-plugged pool port".to_owned(),
            |p| format!("pod {p}"),
        );
        tracing::warn!(ovs_port = %port.ifname, port = %port.port_id, %owner, %why, found_by, "stale OVS port: ovs-vswitchd does not hold its device; re-adding it");
        let after = ovsb::repair(
            &self.ovs,
            &self.host,
            &port.bridge,
            &port.ifname,
            REPAIR_WAIT,
        )
        .await;
        let verdict = match after {
            Ok(Hold::Held { ofport }) => {
                tracing::info!(ovs_port = %port.ifname, ofport, "re-added the stale OVS port: ovs-vswitchd holds its device now");
                Verdict::Repaired { why }
            }
            Ok(other) => Verdict::Unrepaired {
                why,
                after: format!("{other:?}"),
            },
            Err(e) => Verdict::Unrepaired {
                why,
                after: e.to_string(),
            },
        };
        let repaired = matches!(verdict, Verdict::Repaired { .. });
        self.metrics.stale_repair(found_by, repaired);
        if let Some(pod) = &port.pod {
            let msg = match &verdict {
                Verdict::Repaired { why } => format!("ovs-vswitchd did not hold device {} of the pod's OVS port ({why}): the pod had no network; re-added the port", port.ifname),
                Verdict::Unrepaired { why, after } => format!("ovs-vswitchd does not hold device {} of the pod's OVS port ({why}): the pod has no network; re-adding the port did not help: {after}", port.ifname),
                Verdict::NotStale(_) => String::new(),
            };
            self.events.warn(pod, reasons::OVS_PORT_STALE, msg);
        }
        if let Verdict::Unrepaired { after, .. } = &verdict {
            tracing::warn!(ovs_port = %port.ifname, %after, "the stale OVS port is still not held after re-adding it");
        }
        Ok(verdict)
    }
}

/// Every OVS port the daemon owns: the attachments' and the held pool ports'.
pub async fn owned_ports(
    store: &AttachmentStore,
    pool: &Pool,
) -> Result<Vec<OwnedPort>, BindError> {
    let mut out = Vec::new();
    let atts = store
        .list()
        .map_err(|e| BindError::Unusable(format!("cannot read the attachment records: {e}")))?;
    for a in &atts {
        let pod = a.pod_ref();
        out.extend(
            a.interfaces
                .iter()
                .filter_map(|i| OwnedPort::of_iface(i, Some(pod.clone()))),
        );
    }
    for p in pool.held_ports().await? {
        if !out.iter().any(|o| o.ifname == p.ifname) {
            out.push(p);
        }
    }
    Ok(out)
}

/// `external_ids:vm-uuid` of the OVS ports upstream kuryr-kubernetes plugged (os-vif's instance
/// uuid, always `kuryr` there; kuryr-rs writes the pod uid).
pub const UPSTREAM_VM_UUID: &str = "kuryr";

/// Removes the OVS ports of `bridge` that upstream kuryr-kubernetes plugged (`vm-uuid=kuryr`,
/// `tap…`, a Neutron `iface-id`) whose device is gone and that this daemon does not own: after
/// a migration, a pod upstream wired and whose netns went before a DEL could clean it leaves
/// such a row, pointing at nothing. Returns the names removed.
pub async fn sweep_upstream_leftovers(
    ovs: &Ovs,
    host: &Netns,
    bridge: &str,
    owned: &[OwnedPort],
) -> Result<Vec<String>, BindError> {
    let mut removed = Vec::new();
    if bridge.is_empty() {
        return Ok(removed);
    }
    for port in ovs.list_ports(bridge).await? {
        let upstream = port.interfaces.iter().any(|i| {
            i.external_ids.get("vm-uuid").map(String::as_str) == Some(UPSTREAM_VM_UUID)
                && i.external_ids.contains_key("iface-id")
        });
        if !upstream || !port.name.starts_with("tap") || owned.iter().any(|o| o.ifname == port.name)
        {
            continue;
        }
        if ovsb::inspect(ovs, host, &port.name).await? == Hold::NoDevice
            && ovs.del_port(bridge, &port.name).await?
        {
            tracing::info!(bridge, port = %port.name, "removed an OVS port upstream kuryr plugged whose device is gone");
            removed.push(port.name);
        }
    }
    Ok(removed)
}

/// One audit round: judges every owned port, repairs the stale ones (unless vswitchd is not
/// running: then every device looks unheld and nothing is re-added). Returns the problems
/// left, by port name, for the health report. First, the OVS ports of `bridge` upstream kuryr
/// left without a device go ([`sweep_upstream_leftovers`]; a failure there is only logged).
pub async fn audit(
    repairer: &Repairer,
    store: &AttachmentStore,
    pool: &Pool,
    bridge: &str,
) -> Result<Vec<String>, BindError> {
    let ports = owned_ports(store, pool).await?;
    if let Err(e) = sweep_upstream_leftovers(&repairer.ovs, &repairer.host, bridge, &ports).await {
        tracing::warn!(error = %e, "could not sweep the OVS ports upstream kuryr left");
    }
    let mut stale = Vec::new();
    for p in ports {
        match ovsb::inspect(&repairer.ovs, &repairer.host, &p.ifname).await? {
            Hold::Stale(why) => stale.push((p, why)),
            _ => continue,
        }
    }
    if stale.is_empty() {
        return Ok(vec![]);
    }
    if !repairer.ovs.vswitchd_running().await? {
        return Ok(vec![format!(
            "ovs-vswitchd is not running: {} OVS ports have no datapath ({})",
            stale.len(),
            stale
                .iter()
                .map(|(p, _)| p.ifname.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )]);
    }
    let mut left = Vec::new();
    for (p, why) in stale {
        match repairer.check(&p, "audit").await {
            Ok(Verdict::Unrepaired { why, after }) => left.push(format!(
                "OVS port {} is stale ({why}) and re-adding it did not help: {after}",
                p.ifname
            )),
            Ok(_) => {}
            Err(e) => left.push(format!(
                "OVS port {} is stale ({why}); the repair failed: {e}",
                p.ifname
            )),
        }
    }
    Ok(left)
}
