//! The execute step: one owner runs the parsed [`Command`]s.
//!
//! * ADD waits (event-driven, bounded) for the pod's KuryrPort and its VIFs, records the
//!   attachment *before* touching the kernel, plugs and configures every VIF, then waits
//!   (same deadline) for Neutron to report the ports ACTIVE.
//! * DEL, CHECK and GC use only the local attachment records (plus best-effort cleanup in
//!   the netns): never the API server, the controller or OpenStack.
//! * Requests for the same pod are serialized (per-pod lock around everything that reads or
//!   changes its records and devices); different pods run in parallel. An ADD does not hold
//!   the lock while it waits for the controller or Neutron, so a DEL never waits for that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuryr_cni_api::{validate_ifname, CniError, CniResult};
use kuryr_core::vif::Binding;
use kuryr_netplumb::Netns;

use tracing::Instrument;

use crate::api::routes::{AttachmentRequest, Command, PodRef};
use crate::attachments::{
    now_unix_ms, AttachState, AttachedIface, Attachment, AttachmentStore, FORMAT,
};
use crate::binding::ovs::{self, AttachOutcome};
use crate::binding::{
    configure_pod, delete_link_in, l3, veth_peer_in_host, BindError, BindingDriver, Driver,
    HostEnv, PlugTarget, OVS_ATTACH_WAIT,
};
use crate::check;
use crate::error::DaemonError;
use crate::events::{reasons, Recorder};
use crate::health::Health;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::stale::{OwnedPort, Repairer, Verdict};
use crate::watch::{eval_active, eval_vifs, Cluster, PodVif};

/// Announcement rounds (gratuitous ARP / unsolicited NA) once a port is ACTIVE, and their
/// spacing (like `arping -U -c 3 -i 0.2`): a peer or router that misses one gets the next.
const ANNOUNCE_ROUNDS: u32 = 3;
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of the executor.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[cni_daemon] vif_annotation_timeout`: the budget of one ADD's waits.
    pub vif_timeout: Duration,
    /// What the conflist's chain does (`None`: the daemon writes no conflist, so it cannot
    /// tell); a pod asking for more gets a Warning Event ([`crate::chained`]).
    pub chain: Option<crate::chained::ChainCaps>,
}

/// Runs CNI commands.
#[derive(Debug)]
pub struct Cni {
    pub settings: Settings,
    pub cluster: Arc<Cluster>,
    pub env: HostEnv,
    pub store: AttachmentStore,
    pub locks: KeyedLocks,
    pub events: Recorder,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// Pre-plugged ports ([`crate::pool`]): ADD takes a held interface instead of plugging.
    pub pool: Arc<Pool>,
}

fn plug_err(step: &'static str, what: impl Into<String>) -> impl FnOnce(BindError) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Plug {
        step,
        what,
        source: Box::new(source),
    }
}

fn pod_key(namespace: &str, name: &str) -> String {
    format!("pod:{namespace}/{name}")
}

/// The request's `CNI_NETNS`, opened; code 4 naming the path if it cannot be (missing, not a
/// network namespace).
fn open_request_netns(path: &str) -> Result<Netns, DaemonError> {
    Netns::open(path).map_err(|e| {
        DaemonError::BadRequest(CniError::invalid_env(
            format!("cannot open CNI_NETNS {path}"),
            e.to_string(),
        ))
    })
}

/// Opens a netns path; `None` if it is gone.
fn open_netns(path: &str) -> Option<Netns> {
    if path.is_empty() {
        return None;
    }
    match Netns::open(path) {
        Ok(ns) => Some(ns),
        Err(e) => {
            tracing::debug!(netns = path, error = %e, "netns not available");
            None
        }
    }
}

impl Cni {
    /// Runs one command, with metrics and the health failure window.
    pub async fn execute(&self, cmd: Command) -> Result<Option<CniResult>, DaemonError> {
        let verb = cmd.verb();
        let start = Instant::now();
        let _in_flight = self.metrics.started(verb);
        let span = match &cmd {
            Command::Add(r) | Command::Del(r) | Command::Check(r) => tracing::info_span!(
                "cni",
                verb,
                pod = %r.pod.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                container = %r.container_id,
                ifname = %r.ifname
            ),
            _ => tracing::info_span!("cni", verb),
        };
        let res = async {
            match cmd {
                Command::Add(r) => self.add(&r).await.map(Some),
                Command::Del(r) => self.del(&r).await.map(|_| None),
                Command::Check(r) => self.check(&r).await.map(|_| None),
                Command::Gc { valid } => self.gc(&valid).await.map(|_| None),
                Command::Status => self.status().map(|_| None),
            }
        }
        .instrument(span.clone())
        .await;
        let _e = span.enter();
        let code = res.as_ref().err().map(|e| e.to_cni_error().code);
        self.metrics.request(verb, code, start.elapsed());
        if matches!(verb, "ADD" | "DEL" | "CHECK") {
            self.health
                .record(res.as_ref().err().is_some_and(DaemonError::is_daemon_fault));
        }
        match &res {
            Ok(_) => tracing::info!(verb, took_ms = start.elapsed().as_millis() as u64, "done"),
            Err(e) => {
                tracing::warn!(verb, took_ms = start.elapsed().as_millis() as u64, error = %e, "failed")
            }
        }
        res
    }

    fn update_gauge(&self) {
        if let Ok(n) = self.store.count() {
            self.metrics.set_attachments(n);
        }
    }

    /// STATUS: ready to serve ADD, or code 50 with the reasons.
    pub fn status(&self) -> Result<(), DaemonError> {
        let reasons = self.health.not_ready_reasons();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(DaemonError::NotReady(reasons.join("; ")))
        }
    }

    /// ADD, in its phases: wait for the controller's VIFs; under the pod's lock, record the
    /// attachment, plug and configure the interfaces; wait for the ports to be ACTIVE;
    /// announce the addresses.
    async fn add(&self, req: &AttachmentRequest) -> Result<CniResult, DaemonError> {
        let pod = req.pod.clone().ok_or(DaemonError::NotAPod)?;
        // One budget for both waits, and never past the shim's own deadline.
        let budget = self
            .settings
            .vif_timeout
            .min(req.shim_timeout.saturating_sub(Duration::from_secs(1)))
            .max(Duration::from_secs(1));
        let deadline = tokio::time::Instant::now() + budget;
        let mut seen = false;
        // A netns that cannot be opened now will not be there after the wait either (the
        // runtime made it before calling ADD): fail at once, naming it, instead of waiting
        // out the VIF first. Opened again under the lock below; not held over the wait.
        drop(open_request_netns(&req.netns)?);

        let vifs = self
            .add_wait_vifs(req, &pod, deadline, budget, &mut seen)
            .await?;
        let pod_uid = self.add_pod_uid(&pod);

        // 2. Record, then plug. A crash from here on leaves a record DEL can clean up with.
        // Only this part holds the pod's lock: a DEL for the pod never waits for an ADD's
        // waits, only for a plug in progress.
        let guard = self.locks.lock(&req.lock_key()).await;
        let (netns, mut att, same_sandbox) = self.add_record(req, &pod, &pod_uid, &vifs).await?;
        self.add_plug(req, &pod, &pod_uid, &netns, &mut att, same_sandbox)
            .await?;
        att.state = AttachState::Plugged;
        self.store.save(&att)?;
        drop(guard);

        self.add_wait_active(req, &pod, &att, deadline, budget, &mut seen)
            .await?;
        self.announce(&att, &netns);
        self.warn_unchained(&pod, &vifs).await;
        Ok(l3::cni_result(&att))
    }

    /// ADD phase 1: the controller's VIFs (waits for the KuryrPort), their interface names
    /// checked.
    async fn add_wait_vifs(
        &self,
        req: &AttachmentRequest,
        pod: &PodRef,
        deadline: tokio::time::Instant,
        budget: Duration,
        seen: &mut bool,
    ) -> Result<Vec<PodVif>, DaemonError> {
        let t = Instant::now();
        let waited = self
            .cluster
            .wait_for(deadline, |c| {
                eval_vifs(
                    c.kuryrport(&pod.namespace, &pod.name).as_deref(),
                    c.pod(&pod.namespace, &pod.name).as_deref(),
                    pod,
                    &req.ifname,
                    seen,
                )
            })
            .await;
        let vifs = match waited {
            Ok(r) => r?,
            Err(last) => {
                let e = DaemonError::TimedOut {
                    waited: budget,
                    what: if crate::standalone::is_standalone(pod, crate::standalone::namespace()) {
                        format!("KuryrPort {pod} of a standalone container to get its VIFs (create the KuryrPort first; see its Events)")
                    } else {
                        format!("KuryrPort {pod} to get its VIFs (is kuryr-controller running?)")
                    },
                    last,
                };
                self.events
                    .warn(pod, reasons::KURYRPORT_TIMEOUT, e.to_string());
                return Err(e);
            }
        };
        self.metrics.stage("wait_vif", t.elapsed());
        for v in &vifs {
            validate_ifname(&v.ifname).map_err(|e| DaemonError::BadVif {
                kp: pod.to_string(),
                why: format!("interface name {:?}: {}", v.ifname, e.msg),
            })?;
        }
        Ok(vifs)
    }

    /// The pod UID the attachment records: the runtime's, else the KuryrPort's `spec.podUid`.
    /// A Warning Event for each thing the pod asks of a chained plugin that is turned off or
    /// cannot act here (egress shaping on a userspace-datapath bridge).
    async fn warn_unchained(&self, pod: &PodRef, vifs: &[PodVif]) {
        let Some(mut caps) = self.settings.chain else {
            return;
        };
        let Some(p) = self.cluster.pod(&pod.namespace, &pod.name) else {
            return;
        };
        for v in vifs {
            if let Binding::Ovs { bridge } | Binding::Hybrid { bridge, .. } = &v.vif.binding {
                // A bridge that cannot be read was already reported by the plug.
                if self.env.userspace_datapath(bridge).await.unwrap_or(false) {
                    caps.egress_shaping = false;
                }
            }
        }
        for (reason, message) in crate::chained::unserved(&p, caps) {
            tracing::warn!(%pod, reason, %message, "pod asks for what a chained plugin does not do here");
            self.events.warn(pod, reason, message);
        }
    }

    fn add_pod_uid(&self, pod: &PodRef) -> String {
        match &pod.uid {
            Some(u) => u.clone(),
            None => self
                .cluster
                .kuryrport(&pod.namespace, &pod.name)
                .map(|kp| kp.spec.pod_uid.clone())
                .unwrap_or_default(),
        }
    }

    /// ADD phase 2a (under the pod's lock): open the netns, unplug the ports a retried ADD's
    /// KuryrPort no longer holds, save the attachment as `Plugging`.
    async fn add_record(
        &self,
        req: &AttachmentRequest,
        pod: &PodRef,
        pod_uid: &str,
        vifs: &[PodVif],
    ) -> Result<(Netns, Attachment, bool), DaemonError> {
        let netns = open_request_netns(&req.netns)?;
        let existing = self.store.load(&req.container_id, &req.ifname)?;
        if let Some(old) = &existing {
            // A retried ADD whose KuryrPort now holds other ports: drop the old ones first.
            for oi in old
                .interfaces
                .iter()
                .filter(|oi| !vifs.iter().any(|v| v.vif.port_id == oi.port_id))
            {
                tracing::info!(port = %oi.port_id, "unplugging a port the KuryrPort no longer holds");
                self.unplug_iface(oi, open_netns(&old.netns).as_ref(), true)
                    .await
                    .map_err(plug_err("unplug replaced port", oi.port_id.clone()))?;
            }
        }
        let same_sandbox = existing.as_ref().is_some_and(|a| a.netns == req.netns);
        let att = Attachment {
            format: FORMAT,
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            pod_namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            pod_uid: pod_uid.to_string(),
            created_unix_ms: existing
                .as_ref()
                .filter(|_| same_sandbox)
                .map_or_else(now_unix_ms, |a| a.created_unix_ms),
            state: AttachState::Plugging,
            interfaces: vifs
                .iter()
                .map(|v| AttachedIface {
                    ifname: v.ifname.clone(),
                    default: v.default,
                    port_id: v.vif.port_id.clone(),
                    host_ifname: match v.vif.binding {
                        Binding::Ovs { .. } | Binding::Hybrid { .. } => v.vif.host_ifname.clone(),
                        _ => String::new(),
                    },
                    binding: v.vif.binding.kind().to_owned(),
                    vif: v.vif.clone(),
                    parent: None,
                    mtu: self.env.mtu_for(&v.vif),
                    tx_checksum_off: false,
                })
                .collect(),
        };
        self.store.save(&att)?;
        self.update_gauge();
        Ok((netns, att, same_sandbox))
    }

    /// ADD phase 2b (under the pod's lock): plug every interface, then configure its
    /// addresses and routes in the pod's netns.
    async fn add_plug(
        &self,
        req: &AttachmentRequest,
        pod: &PodRef,
        pod_uid: &str,
        netns: &Netns,
        att: &mut Attachment,
        same_sandbox: bool,
    ) -> Result<(), DaemonError> {
        let t = Instant::now();
        let preplugged = match self.plug_all(att, netns, pod_uid, same_sandbox).await {
            Ok((ovs_ports, preplugged)) => {
                self.confirm_ovs_attach(pod, ovs_ports);
                preplugged
            }
            Err(e) => {
                self.events.warn(pod, reasons::PLUG_FAILED, e.to_string());
                return Err(e);
            }
        };
        // Moving a pre-plugged interface and plugging one are different work: separate stages.
        let (stage, path) = if preplugged {
            ("move", "preplugged")
        } else {
            ("plug", "plug")
        };
        self.metrics.stage(stage, t.elapsed());
        self.metrics.add_path(path);
        let t = Instant::now();
        for iface in &att.interfaces {
            let cfg = l3::iface_config(
                &iface.vif,
                &iface.ifname,
                iface.default,
                iface.mtu,
                iface.tx_checksum_off,
            )
            .map_err(|why| DaemonError::BadVif {
                kp: pod.to_string(),
                why,
            })?;
            if let Err(e) = configure_pod(netns, cfg).await.map_err(plug_err(
                "configure",
                format!("{} in {}", iface.ifname, req.netns),
            )) {
                self.events.warn(pod, reasons::PLUG_FAILED, e.to_string());
                return Err(e);
            }
        }
        self.metrics.stage("l3", t.elapsed());
        Ok(())
    }

    /// ADD phase 3: Neutron reports the ports ACTIVE (through the controller's status
    /// update), and the attachment was not lost to a DEL meanwhile.
    async fn add_wait_active(
        &self,
        req: &AttachmentRequest,
        pod: &PodRef,
        att: &Attachment,
        deadline: tokio::time::Instant,
        budget: Duration,
        seen: &mut bool,
    ) -> Result<(), DaemonError> {
        // 3. Neutron reports the ports ACTIVE (through the controller's status update).
        let t = Instant::now();
        let ids: Vec<String> = att.interfaces.iter().map(|i| i.port_id.clone()).collect();
        let waited = self
            .cluster
            .wait_for(deadline, |c| {
                eval_active(
                    c.kuryrport(&pod.namespace, &pod.name).as_deref(),
                    c.pod(&pod.namespace, &pod.name).as_deref(),
                    pod,
                    &ids,
                    seen,
                )
            })
            .await;
        match waited {
            Ok(r) => r?,
            Err(last) => {
                let e = DaemonError::TimedOut {
                    waited: budget,
                    what: format!("KuryrPort {pod} to have an active VIF (controller / Neutron)"),
                    last,
                };
                self.events
                    .warn(pod, reasons::ACTIVE_TIMEOUT, e.to_string());
                return Err(e);
            }
        }
        self.metrics.stage("wait_active", t.elapsed());
        if self.store.load(&req.container_id, &req.ifname)?.is_none() {
            return Err(DaemonError::PodGone {
                pod: pod.to_string(),
                why: format!(
                    "lost attachment {}/{} to a DEL while ADD waited for the VIF to become active",
                    req.container_id, req.ifname
                ),
            });
        }
        Ok(())
    }

    /// The stale-port checker ([`crate::stale`]).
    pub fn repairer(&self) -> Repairer {
        Repairer {
            ovs: self.env.ovs.clone(),
            host: self.env.host.clone(),
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
        }
    }

    /// After-ADD check that ovs-vswitchd attached every OVS port this ADD added (it assigns
    /// an OpenFlow port, or -1 and an error) and holds its device (a stale port is re-added,
    /// see [`crate::stale`]). Off the request path: records the time it took and, on
    /// failure, a metric, a log line and an Event on the pod. A port removed before vswitchd
    /// got to it (a quick DEL) is not a failure.
    fn confirm_ovs_attach(&self, pod: &crate::api::routes::PodRef, ports: Vec<OwnedPort>) {
        for mut owned in ports {
            owned.pod = Some(pod.clone());
            let port = owned.ifname.clone();
            let (ovs, metrics, events, pod, repairer) = (
                self.env.ovs.clone(),
                self.metrics.clone(),
                self.events.clone(),
                pod.clone(),
                self.repairer(),
            );
            let t = Instant::now();
            tokio::spawn(async move {
                match ovs::await_attach(&ovs, &port, OVS_ATTACH_WAIT).await {
                    AttachOutcome::Attached { ofport } => {
                        metrics.stage("ovs_attach", t.elapsed());
                        tracing::debug!(%port, ofport, took = ?t.elapsed(), "ovs-vswitchd attached the port");
                        if let Err(e) = ovs::undo_stale_flags(&repairer.host, &port).await {
                            tracing::debug!(%port, error = %e, "cannot read the device after ADD (pod gone?)");
                        }
                        match repairer.check(&owned, "after_add").await {
                            Ok(Verdict::NotStale(_)) => {}
                            Ok(v) => {
                                tracing::info!(%port, verdict = ?v, "after-ADD check found a stale OVS port")
                            }
                            Err(e) => {
                                tracing::debug!(%port, error = %e, "cannot judge the OVS port after ADD (pod gone?)")
                            }
                        }
                    }
                    AttachOutcome::Removed => {
                        tracing::debug!(%port, "OVS port removed before ovs-vswitchd attached it");
                    }
                    AttachOutcome::Failed(e) => {
                        metrics.background_failure("ovs_attach");
                        let msg = format!("ovs-vswitchd did not attach OVS port {port} for {pod}: {e} (see ovs-vswitchd.log; the pod has no network)");
                        tracing::warn!("{msg}");
                        events.warn(&pod, reasons::OVS_ATTACH_FAILED, msg);
                    }
                }
            });
        }
    }

    /// Announces the pod's addresses from its interfaces once the ports are ACTIVE (only
    /// then does the network deliver them), in the background: Neutron hands freed IPs out
    /// again quickly, and peers that cached the previous owner's MAC learn the new one.
    fn announce(&self, att: &Attachment, netns: &Netns) {
        for iface in &att.interfaces {
            let ips: Vec<std::net::IpAddr> = l3::addresses(&iface.vif)
                .unwrap_or_default()
                .iter()
                .map(|a| a.addr())
                .collect();
            if ips.is_empty() {
                continue;
            }
            let (ns, ifname, metrics) = (netns.clone(), iface.ifname.clone(), self.metrics.clone());
            let t = Instant::now();
            tokio::task::spawn_blocking(move || {
                match kuryr_netplumb::announce_addresses(
                    &ns,
                    &ifname,
                    &ips,
                    ANNOUNCE_ROUNDS,
                    ANNOUNCE_INTERVAL,
                ) {
                    Ok(_) => metrics.stage("announce", t.elapsed()),
                    Err(e) => {
                        metrics.background_failure("announce");
                        tracing::info!(netns = %ns.label(), %ifname, error = %e, "announcing the pod's addresses failed (the pod may be gone)");
                    }
                }
            });
        }
    }

    /// Host-side plug of every interface; fills in what the drivers report. An `ovs` VIF the
    /// pool holds pre-plugged is moved in instead ([`Pool::take`]). Returns the OVS ports
    /// added and whether every interface was pre-plugged.
    async fn plug_all(
        &self,
        att: &mut Attachment,
        netns: &Netns,
        pod_uid: &str,
        same_sandbox: bool,
    ) -> Result<(Vec<OwnedPort>, bool), DaemonError> {
        let mut ovs_ports = Vec::new();
        let mut all_preplugged = !att.interfaces.is_empty();
        for i in 0..att.interfaces.len() {
            let iface = att.interfaces[i].clone();
            let what = format!(
                "port {} ({} as {})",
                iface.port_id, iface.binding, iface.ifname
            );
            let driver = Driver::for_binding(&iface.vif.binding);
            let target = PlugTarget {
                netns: netns.clone(),
                ifname: iface.ifname.clone(),
                // A previous sandbox of this pod may still hold the host device.
                fresh: !same_sandbox,
            };
            // The port's lock: the pool, the stale-port repairs and DEL take it too.
            let _port_guard = match iface.vif.binding {
                Binding::Ovs { .. } | Binding::Hybrid { .. } => {
                    Some(self.pool.lock_port(&iface.port_id).await)
                }
                _ => None,
            };
            if let Some(plugged) = self.pool.take_locked(&self.env, &iface.vif, &target).await {
                let slot = &mut att.interfaces[i];
                slot.host_ifname = plugged.host_ifname;
                slot.parent = plugged.parent;
                slot.mtu = plugged.mtu;
                slot.tx_checksum_off = plugged.tx_checksum_off;
                continue;
            }
            all_preplugged = false;
            let plugged = match driver
                .plug_host(&self.env, &iface.vif, pod_uid, &target)
                .await
            {
                Err(e)
                    if e.is_already_exists()
                        && matches!(iface.vif.binding, Binding::NestedVlan { .. }) =>
                {
                    // The VLAN id is still held on the parent by a netns that is not gone yet.
                    self.free_vlan(att, &iface).await;
                    driver
                        .plug_host(&self.env, &iface.vif, pod_uid, &target)
                        .await
                }
                r => r,
            }
            .map_err(plug_err("plug", what))?;
            let slot = &mut att.interfaces[i];
            slot.host_ifname = plugged.host_ifname;
            slot.parent = plugged.parent;
            slot.mtu = plugged.mtu;
            slot.tx_checksum_off = plugged.tx_checksum_off;
            if let Some(port) = plugged.ovs_port {
                if let Ok(bridge) = ovs::bridge_of(&iface.vif) {
                    ovs_ports.push(OwnedPort {
                        port_id: iface.port_id.clone(),
                        bridge: bridge.to_owned(),
                        ifname: port,
                        pod: None,
                    });
                }
            }
        }
        Ok((ovs_ports, all_preplugged))
    }

    /// Unplugs one interface. The host side is left alone when `host_side` is false or when
    /// the pool holds the port pre-plugged again (a recycled port re-plugged under the same
    /// `tap…` name: it is no longer this attachment's). Wakes the pool, which may wait for
    /// this host device to go.
    async fn unplug_iface(
        &self,
        iface: &AttachedIface,
        netns: Option<&Netns>,
        host_side: bool,
    ) -> Result<(), BindError> {
        let driver = Driver::for_binding(&iface.vif.binding);
        if !matches!(
            iface.vif.binding,
            Binding::Ovs { .. } | Binding::Hybrid { .. }
        ) {
            return driver.unplug(&self.env, iface, netns, host_side).await;
        }
        let guard = self.pool.lock_port(&iface.port_id).await;
        if !self.pool.enabled() || !matches!(iface.vif.binding, Binding::Ovs { .. }) {
            return driver.unplug(&self.env, iface, netns, host_side).await;
        }
        let pooled = host_side && self.pool.holds(&iface.port_id).await;
        if pooled {
            tracing::info!(port = %iface.port_id, host_ifname = %iface.host_ifname, "the port is pre-plugged in the pool again; leaving its host side");
        }
        let r = driver
            .unplug(&self.env, iface, netns, host_side && !pooled)
            .await;
        drop(guard);
        self.pool.wake();
        r
    }

    /// Deletes the interfaces of other attachments that hold the same VLAN id on the same
    /// parent (the records are the VLAN → netns index; no scan of every netns on the node).
    async fn free_vlan(&self, att: &Attachment, iface: &AttachedIface) {
        let Binding::NestedVlan { vlan_id } = iface.vif.binding else {
            return;
        };
        let Ok(all) = self.store.list() else { return };
        for other in all.iter().filter(|o| o.key() != att.key()) {
            for oi in &other.interfaces {
                let same_parent = oi.parent.is_none()
                    || oi.parent == iface.parent
                    || oi.parent == self.env.link_iface;
                if oi.vif.binding == (Binding::NestedVlan { vlan_id }) && same_parent {
                    if let Some(ns) = open_netns(&other.netns) {
                        tracing::warn!(vlan_id, holder = %other.key(), "freeing a VLAN id still held by an old attachment");
                        let _ = delete_link_in(&ns, &oi.ifname).await;
                    }
                }
            }
        }
    }

    async fn del(&self, req: &AttachmentRequest) -> Result<(), DaemonError> {
        // Serialize on the pod of the record when there is one (the DEL may lack CNI_ARGS).
        let key = match self.store.load(&req.container_id, &req.ifname)? {
            Some(a) => pod_key(&a.pod_namespace, &a.pod_name),
            None => req.lock_key(),
        };
        let _guard = self.locks.lock(&key).await;
        let Some(att) = self.store.load(&req.container_id, &req.ifname)? else {
            // Never ADDed here, already deleted, or wired by another daemon before a migration
            // (upstream kuryr's os-vif): clean the named interface in this container's own
            // netns and, when it is a veth into OVS, its OVS port; nothing else (a live
            // sandbox of the same pod has its own netns and record).
            if let Some(ns) = open_netns(&req.netns) {
                self.unplug_unrecorded(&ns, &req.ifname).await?;
            }
            tracing::info!(container = %req.container_id, ifname = %req.ifname, "DEL without attachment record: cleaned the container's netns");
            return Ok(());
        };
        self.unplug(&att).await?;
        self.store.remove(&att.container_id, &att.ifname)?;
        self.update_gauge();
        Ok(())
    }

    /// DEL of an interface with no attachment record: a veth whose host end is an OVS port of
    /// a Neutron port (`external_ids:iface-id`) loses that OVS port (else the row would stay,
    /// pointing at a deleted device), then the interface goes (and its host end with it).
    /// Upstream kuryr-kubernetes plugged such veths (os-vif, `tap` + port id): after a
    /// migration, this is how kuryr-rs undoes the wiring of the pods upstream started.
    async fn unplug_unrecorded(&self, ns: &Netns, ifname: &str) -> Result<(), DaemonError> {
        let host_end = match veth_peer_in_host(ns, ifname, &self.env.host).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the container's interface");
                None
            }
        };
        if let Some(host_end) = host_end {
            let iface = self.env.ovs.find_interface(&host_end).await.map_err(|e| {
                plug_err(
                    "remove the OVS port of an unrecorded veth",
                    host_end.as_str(),
                )(e.into())
            })?;
            if iface.is_some_and(|i| i.external_ids.contains_key("iface-id")) {
                if let Some(bridge) = self.env.ovs.port_bridge(&host_end).await.map_err(|e| {
                    plug_err(
                        "remove the OVS port of an unrecorded veth",
                        host_end.as_str(),
                    )(e.into())
                })? {
                    self.env
                        .ovs
                        .del_port(&bridge, &host_end)
                        .await
                        .map_err(|e| {
                            plug_err(
                                "remove the OVS port of an unrecorded veth",
                                host_end.as_str(),
                            )(e.into())
                        })?;
                    tracing::info!(%bridge, port = %host_end, "removed the OVS port of an interface plugged without a record here (another daemon's)");
                }
            }
        }
        if let Err(e) = delete_link_in(ns, ifname).await {
            tracing::debug!(error = %e, "best-effort cleanup in the netns failed");
        }
        Ok(())
    }

    /// Undoes an attachment. The host side of an interface is left alone when a newer
    /// attachment (another sandbox of the same pod) re-plugged the same host device.
    async fn unplug(&self, att: &Attachment) -> Result<(), DaemonError> {
        let netns = open_netns(&att.netns);
        let others = self.store.list()?;
        let mut first_err = None;
        for iface in &att.interfaces {
            let superseded = !iface.host_ifname.is_empty()
                && others.iter().any(|o| {
                    o.key() != att.key()
                        && o.created_unix_ms >= att.created_unix_ms
                        && o.interfaces
                            .iter()
                            .any(|i| i.host_ifname == iface.host_ifname)
                });
            if superseded {
                tracing::info!(host_ifname = %iface.host_ifname, "host device belongs to a newer sandbox of the pod; leaving it");
            }
            if let Err(e) = self.unplug_iface(iface, netns.as_ref(), !superseded).await {
                tracing::warn!(attachment = %att.key(), port = %iface.port_id, error = %e, "unplug failed");
                first_err.get_or_insert(DaemonError::Plug {
                    step: "unplug",
                    what: format!("{} port {}", att.key(), iface.port_id),
                    source: Box::new(e),
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn check(&self, req: &AttachmentRequest) -> Result<(), DaemonError> {
        let _guard = self.locks.lock(&req.lock_key()).await;
        let what = format!("{}/{}", req.container_id, req.ifname);
        let att = self
            .store
            .load(&req.container_id, &req.ifname)?
            .ok_or(DaemonError::UnknownAttachment { what: what.clone() })?;
        let mut diffs = Vec::new();
        if att.state != AttachState::Plugged {
            diffs.push("ADD did not complete".to_owned());
        }
        if att.netns != req.netns {
            diffs.push(format!("netns is {}, ADD was for {}", req.netns, att.netns));
        }
        match Netns::open(&req.netns) {
            Err(e) => diffs.push(format!("netns {} cannot be opened: {e}", req.netns)),
            Ok(ns) => {
                for iface in &att.interfaces {
                    let (ns2, name) = (ns.clone(), iface.ifname.clone());
                    let obs = crate::binding::blocking(move || {
                        check::observe(&ns2, &name).map_err(BindError::from)
                    })
                    .await;
                    match obs {
                        Ok(obs) => diffs.extend(check::diff_pod(iface, &obs)),
                        Err(e) => {
                            diffs.push(format!("{}: cannot read the pod netns: {e}", iface.ifname))
                        }
                    }
                }
            }
        }
        // While ovs-vswitchd is down (check_host says so) no port can be judged or repaired.
        let vswitchd_down = matches!(self.env.ovs.vswitchd_running().await, Ok(false));
        for iface in &att.interfaces {
            diffs.extend(
                Driver::for_binding(&iface.vif.binding)
                    .check_host(&self.env, iface)
                    .await,
            );
            // A stale OVS port is reported (above) and repaired: the next CHECK passes.
            if let Some(port) =
                OwnedPort::of_iface(iface, Some(att.pod_ref())).filter(|_| !vswitchd_down)
            {
                match self.repairer().check(&port, "check").await {
                    Ok(Verdict::Repaired { .. }) => diffs.push(format!(
                        "OVS port {}: re-added by kuryr-daemon, ovs-vswitchd holds its device now",
                        port.ifname
                    )),
                    Ok(Verdict::Unrepaired { after, .. }) => diffs.push(format!(
                        "OVS port {}: re-adding it did not help: {after}",
                        port.ifname
                    )),
                    Ok(Verdict::NotStale(_)) => {}
                    Err(e) => diffs.push(format!("OVS port {}: cannot judge it: {e}", port.ifname)),
                }
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(DaemonError::CheckMismatch { what, diffs })
        }
    }

    async fn gc(&self, valid: &[(String, String)]) -> Result<(), DaemonError> {
        let mut first_err = None;
        for att in self.store.list()? {
            if valid
                .iter()
                .any(|(c, i)| *c == att.container_id && *i == att.ifname)
            {
                continue;
            }
            let _guard = self
                .locks
                .lock(&pod_key(&att.pod_namespace, &att.pod_name))
                .await;
            // It may have been deleted while we waited for the lock.
            let Some(att) = self.store.load(&att.container_id, &att.ifname)? else {
                continue;
            };
            tracing::info!(attachment = %att.key(), pod = %att.pod(), "GC: attachment not in the runtime's valid list");
            let res = match self.unplug(&att).await {
                Ok(()) => self
                    .store
                    .remove(&att.container_id, &att.ifname)
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        self.update_gauge();
        first_err.map_or(Ok(()), Err)
    }
}
