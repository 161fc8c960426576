//! Two-phase mark-and-sweep garbage collection of the Neutron resources this controller
//! creates, compared with what the cluster still references.
//!
//! Ours = `device_owner = compute:kuryr`, all `[neutron_defaults] resource_tags`, and a
//! description naming this cluster (`…: cluster <name>, …`, see [`crate::ports::description`]):
//! another cluster's ports and ports kuryr-rs did not create are never candidates.
//!
//! A port is an orphan when no Pod and no KuryrPort has its `device_id` as UID (pod UID or a
//! standalone KuryrPort's `spec.podUid`), nor the UID its description names (nested-vlan ports
//! have no `device_id`), and no KuryrPort lists it in `status.vifs`. Ports attached to a trunk
//! (`device_owner = trunk:subport`) are not listed, so not collected yet. A pass
//! *marks* the orphans it sees and *sweeps* (deletes) only those it had already marked in the
//! previous pass and still sees now: a port created a moment ago whose KuryrPort the caches have
//! not delivered yet, or a crash-window port that the next reconcile adopts, is never deleted.
//! GC only runs on the leader once both caches are synced, and with `--watch-namespace` it only
//! looks at ports of that namespace (the port name is `<namespace>/<name>`).
//!
//! Today the controller creates ports only; security groups, networks, subnets, router
//! interfaces, load balancers and floating IPs join [`Kind`] as the controller starts creating
//! them.

use crate::context::Context;
use crate::error::Error;
use k8s_openapi::api::core::v1::Pod;
use kuryr_core::crd::KuryrPort;
use kuryr_core::names::DEVICE_OWNER;
use kuryr_openstack::neutron::Port;
use kuryr_openstack::Query;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Resource kinds GC knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Port,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Port => "port",
        }
    }
}

/// One orphaned resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Orphan {
    pub kind: Kind,
    pub id: String,
    pub name: String,
    /// Why it is an orphan (for logs and `--dry-run`).
    pub reason: String,
}

impl std::fmt::Display for Orphan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({}): {}", self.kind.as_str(), self.id, self.name, self.reason)
    }
}

/// What the cluster references.
#[derive(Debug, Default)]
pub struct Referenced {
    /// Pod UIDs and KuryrPort `spec.podUid`s.
    pub uids: HashSet<String>,
    /// Port ids in KuryrPort `status.vifs`.
    pub ports: HashSet<String>,
}

impl Referenced {
    /// From the reflector caches.
    pub fn collect<'a>(pods: impl IntoIterator<Item = &'a Pod>, kps: impl IntoIterator<Item = &'a KuryrPort>) -> Referenced {
        let mut r = Referenced::default();
        for p in pods {
            if let Some(uid) = &p.metadata.uid {
                r.uids.insert(uid.clone());
            }
        }
        for kp in kps {
            if !kp.spec.pod_uid.is_empty() {
                r.uids.insert(kp.spec.pod_uid.clone());
            }
            for entry in kp.status.iter().flat_map(|s| s.vifs.values()) {
                if let Ok(v) = entry.vif() {
                    r.ports.insert(v.port_id);
                }
            }
        }
        r
    }
}

/// Whether a port's description names `cluster` (`…: cluster <name>, …`).
pub fn names_cluster(description: &str, cluster: &str) -> bool {
    description.starts_with("kuryr-rs ") && description.contains(&format!(": cluster {cluster}, "))
}

/// The pod UID a port's description names (`… (uid <uid>)`, see [`crate::ports::description`]):
/// nested-vlan ports have no `device_id`.
pub fn description_uid(description: &str) -> Option<&str> {
    description.strip_suffix(')')?.rsplit_once("(uid ").map(|(_, uid)| uid).filter(|u| !u.is_empty())
}

/// The orphans among `ports` (already filtered by owner and tags by the query).
pub fn find_orphans(ports: &[Port], cluster: &str, namespace: Option<&str>, refs: &Referenced) -> Vec<Orphan> {
    let mut out: Vec<Orphan> = ports
        .iter()
        .filter(|p| p.device_owner == DEVICE_OWNER && names_cluster(&p.description, cluster))
        .filter(|p| namespace.is_none_or(|ns| p.name.split_once('/').is_some_and(|(n, _)| n == ns)))
        .filter(|p| !refs.ports.contains(&p.id) && !refs.uids.contains(&p.device_id))
        .filter(|p| !description_uid(&p.description).is_some_and(|u| refs.uids.contains(u)))
        .map(|p| Orphan {
            kind: Kind::Port,
            id: p.id.clone(),
            name: p.name.clone(),
            reason: format!("device_id {} is no Pod or KuryrPort UID and no KuryrPort lists the port", p.device_id),
        })
        .collect();
    out.sort();
    out
}

/// The marks between passes.
#[derive(Debug, Default)]
pub struct Marks {
    marked: BTreeMap<(Kind, String), Orphan>,
}

impl Marks {
    /// Records this pass's orphans; returns those already marked by the previous pass (to
    /// delete). Marks of resources that are no longer orphans are dropped.
    pub fn pass(&mut self, orphans: Vec<Orphan>) -> Vec<Orphan> {
        let mut sweep = Vec::new();
        let mut next = BTreeMap::new();
        for o in orphans {
            let key = (o.kind, o.id.clone());
            if self.marked.contains_key(&key) {
                sweep.push(o.clone());
            }
            next.insert(key, o);
        }
        self.marked = next;
        sweep
    }

    pub fn len(&self) -> usize {
        self.marked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marked.is_empty()
    }
}

/// Outcome of one pass.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Orphans seen (marked) this pass.
    pub marked: Vec<Orphan>,
    /// Deleted (or, with dry-run, that would have been deleted).
    pub swept: Vec<Orphan>,
}

/// Lists this cluster's ports and computes the orphans against the caches (no writes).
pub async fn orphans(ctx: &Context, namespace: Option<&str>) -> Result<Vec<Orphan>, Error> {
    let mut q = Query::new().eq("device_owner", DEVICE_OWNER).fields(["id", "name", "description", "device_id", "device_owner"]);
    if !ctx.settings.resource_tags.is_empty() {
        q = q.tags(ctx.settings.resource_tags.iter());
    }
    if !ctx.settings.project.is_empty() {
        q = q.eq("project_id", &ctx.settings.project);
    }
    let ports = ctx.neutron.list_ports(&q).await?;
    let refs = Referenced::collect(ctx.pods.state().iter().map(|p| p.as_ref()), ctx.kuryrports.state().iter().map(|k| k.as_ref()));
    Ok(find_orphans(&ports, &ctx.settings.cluster_name, namespace, &refs))
}

/// One pass: mark, and sweep what the previous pass marked (unless `dry_run`).
pub async fn pass(ctx: &Context, marks: &mut Marks, namespace: Option<&str>, dry_run: bool) -> Result<Report, Error> {
    let found = orphans(ctx, namespace).await?;
    let sweep = marks.pass(found.clone());
    let mut report = Report { marked: found, swept: Vec::new() };
    for o in sweep {
        if dry_run {
            tracing::info!(orphan = %o, "gc (dry run): would delete");
            report.swept.push(o);
            continue;
        }
        ctx.leader.ensure()?;
        match o.kind {
            Kind::Port => {
                ctx.neutron.delete_port(&o.id).await?;
            }
        }
        tracing::warn!(orphan = %o, "gc: deleted an orphaned resource");
        ctx.metrics.gc_deleted(o.kind.as_str());
        report.swept.push(o);
    }
    Ok(report)
}

/// The periodic GC task: a pass every `interval` while this replica leads and the caches are
/// synced. Errors are logged and retried next interval (never fatal).
pub async fn run(ctx: std::sync::Arc<Context>, interval: Duration, namespace: Option<String>, dry_run: bool) {
    let mut marks = Marks::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.synced() || !ctx.leader.is_leader() {
            // Marks from another term are stale: start over.
            marks = Marks::default();
            continue;
        }
        match pass(&ctx, &mut marks, namespace.as_deref(), dry_run).await {
            Ok(r) => {
                if !r.marked.is_empty() || !r.swept.is_empty() {
                    tracing::info!(marked = r.marked.len(), swept = r.swept.len(), dry_run, "gc pass");
                }
            }
            Err(e) => tracing::warn!(error = %e, "gc pass failed; retrying next interval"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(id: &str, name: &str, device_id: &str, cluster: &str) -> Port {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "device_id": device_id, "device_owner": DEVICE_OWNER,
            "description": format!("kuryr-rs pod port: cluster {cluster}, pod {name} (uid {device_id})"),
            "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [], "status": "ACTIVE",
        }))
        .expect("port")
    }

    #[test]
    fn orphans_are_ports_of_this_cluster_nobody_references() {
        let mut other_owner = port("p5", "ns/e", "gone-5", "c1");
        other_owner.device_owner = "compute:nova".into();
        let ports = vec![
            port("p1", "ns/a", "uid-a", "c1"),  // pod exists
            port("p2", "ns/b", "gone-b", "c1"), // orphan
            port("p3", "ns/c", "gone-c", "c1"), // listed in a KuryrPort
            port("p4", "ns/d", "gone-d", "c2"), // another cluster
            other_owner,                        // not kuryr's
            port("p6", "other/f", "gone-f", "c1"),
        ];
        let refs = Referenced {
            uids: ["uid-a".to_string()].into(),
            ports: ["p3".to_string()].into(),
        };
        let ids = |v: Vec<Orphan>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
        assert_eq!(ids(find_orphans(&ports, "c1", None, &refs)), ["p2", "p6"]);
        assert_eq!(ids(find_orphans(&ports, "c1", Some("ns"), &refs)), ["p2"]);
        assert_eq!(ids(find_orphans(&ports, "c2", None, &refs)), ["p4"]);
    }

    #[test]
    fn a_nested_port_is_referenced_by_the_uid_in_its_description() {
        // A nested-vlan port between create and attach: compute:kuryr, no device_id.
        let mut p = port("p1", "ns/a", "", "c1");
        p.description = "kuryr-rs pod port: cluster c1, pod ns/a (uid uid-a)".into();
        assert_eq!(description_uid(&p.description), Some("uid-a"));
        assert_eq!(description_uid("no uid here"), None);
        assert_eq!(description_uid("x (uid )"), None);
        let refs = Referenced { uids: ["uid-a".to_string()].into(), ports: Default::default() };
        assert!(find_orphans(std::slice::from_ref(&p), "c1", None, &refs).is_empty());
        assert_eq!(find_orphans(&[p], "c1", None, &Referenced::default()).len(), 1);
    }

    #[test]
    fn cluster_name_must_match_exactly() {
        let d = "kuryr-rs pod port: cluster c1, pod ns/a (uid u)";
        assert!(names_cluster(d, "c1"));
        assert!(!names_cluster(d, "c"));
        assert!(!names_cluster("some port: cluster c1, x", "c1"));
        let s = "kuryr-rs standalone container port: cluster c1, KuryrPort kuryr-standalone/x (uid u)";
        assert!(names_cluster(s, "c1"));
    }

    #[test]
    fn only_orphans_seen_twice_in_a_row_are_swept() {
        let o = |id: &str| Orphan { kind: Kind::Port, id: id.into(), name: id.into(), reason: String::new() };
        let mut m = Marks::default();
        assert_eq!(m.pass(vec![o("a"), o("b")]), vec![]);
        // b was adopted meanwhile (no longer an orphan): its mark is dropped.
        assert_eq!(m.pass(vec![o("a"), o("c")]), vec![o("a")]);
        assert_eq!(m.len(), 2);
        // b orphaned again: it needs two passes again.
        assert_eq!(m.pass(vec![o("b"), o("c")]), vec![o("c")]);
        assert_eq!(m.pass(vec![]), vec![]);
        assert!(m.is_empty());
    }
}
