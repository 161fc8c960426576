//! The sweep (`crate::gc::sweep`): a pass marks, deletes what the previous pass marked (in
//! [`Kind`] order), and the periodic task runs passes while this replica leads. What the domains
//! keep about swept resources (pool ports, trunk subports) goes through [`SweepHooks`].

use super::inventory::orphans;
use super::orphans::Marks;
use super::{Kind, Orphan};
use crate::runtime::context::Context;
use crate::runtime::error::Error;
use crate::runtime::hooks::SweepHooks;
use kube::api::Api;
use kuryr_core::crd::KuryrPort;
use kuryr_openstack::neutron::RouterInterface;
use std::collections::BTreeSet;
use std::time::Duration;

/// Outcome of one pass.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Orphans seen (marked) this pass.
    pub marked: Vec<Orphan>,
    /// Deleted (or, with dry-run, that would have been deleted).
    pub swept: Vec<Orphan>,
    /// Deletes that failed (still marked).
    pub failed: Vec<Orphan>,
}

/// Deletes one orphan (`Ok(false)`: it was already gone).
async fn sweep(ctx: &Context, hooks: &dyn SweepHooks, o: &Orphan) -> Result<bool, Error> {
    let n = &ctx.neutron;
    let gone_ok = |r: Result<bool, kuryr_openstack::Error>| r.map_err(Error::from);
    match o.kind {
        Kind::LoadBalancer => gone_ok(ctx.octavia.delete_load_balancer(&o.id, true).await),
        Kind::FloatingIp => gone_ok(n.delete_floating_ip(&o.id).await),
        Kind::RouterInterface => {
            let router = o.via.as_deref().unwrap_or_default();
            match n.remove_router_interface(router, &RouterInterface::port(&o.id)).await {
                Ok(_) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        // Detached from its trunk (found through the parent port) first, then deleted.
        Kind::TrunkSubport => hooks.release_subport(&o.id).await,
        Kind::Port => gone_ok(n.delete_port(&o.id).await),
        Kind::SecurityGroupRule => gone_ok(n.delete_security_group_rule(&o.id).await),
        Kind::SecurityGroup => gone_ok(n.delete_security_group(&o.id).await),
        Kind::AddressGroup => gone_ok(n.delete_address_group(&o.id).await),
        Kind::Subnet => gone_ok(n.delete_subnet(&o.id).await),
        Kind::Network => gone_ok(n.delete_network(&o.id).await),
    }
}

/// One pass: mark, and sweep what the previous pass marked (unless `dry_run`), in [`Kind`]
/// order. A failed delete is logged, counted in `failed` and stays marked.
pub async fn pass(
    ctx: &Context,
    hooks: &dyn SweepHooks,
    marks: &mut Marks,
    namespace: Option<&str>,
    dry_run: bool,
) -> Result<Report, Error> {
    let found = orphans(ctx, namespace).await?;
    let mut to_sweep = marks.pass(found.clone());
    to_sweep.sort();
    let mut report = Report { marked: found, ..Report::default() };
    // Pool ports of deleted nodes: out of the pools before they are deleted (no claim may get
    // one), and the node's pool KuryrPort goes after them.
    let gone_nodes: BTreeSet<String> = to_sweep.iter().filter(|o| o.kind == Kind::Port).filter_map(|o| o.via.clone()).collect();
    if !dry_run {
        gone_nodes.iter().for_each(|n| hooks.node_gone(n));
    }
    for o in to_sweep {
        if dry_run {
            tracing::info!(orphan = %o, "gc (dry run): would delete");
            report.swept.push(o);
            continue;
        }
        ctx.leader.ensure()?;
        match sweep(ctx, hooks, &o).await {
            Ok(_) => {
                tracing::warn!(orphan = %o, "gc: deleted an orphaned resource");
                ctx.metrics.gc_deleted(o.kind.as_str());
                report.swept.push(o);
            }
            Err(e) => {
                tracing::warn!(orphan = %o, error = %e, "gc: cannot delete an orphaned resource; retrying next pass");
                report.failed.push(o);
            }
        }
    }
    if !dry_run {
        for node in &gone_nodes {
            let api: Api<KuryrPort> = Api::namespaced(ctx.client.clone(), kuryr_core::names::POOL_NAMESPACE);
            let name = kuryr_core::names::pool_kuryrport_name(node);
            match api.delete(&name, &Default::default()).await {
                Ok(_) => tracing::info!(node = %node, "gc: deleted the pool KuryrPort of a deleted node"),
                Err(e) if crate::runtime::error::is_not_found(&e) => {}
                Err(e) => tracing::warn!(node = %node, error = %e, "gc: cannot delete the pool KuryrPort of a deleted node"),
            }
        }
    }
    Ok(report)
}

/// The periodic GC task: a pass every `interval` while this replica leads and the caches are
/// synced. Errors are logged and retried next interval (never fatal).
pub async fn run(
    ctx: std::sync::Arc<Context>,
    hooks: std::sync::Arc<dyn SweepHooks>,
    interval: Duration,
    namespace: Option<String>,
    dry_run: bool,
) {
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
        match pass(&ctx, &*hooks, &mut marks, namespace.as_deref(), dry_run).await {
            Ok(r) => {
                if !r.marked.is_empty() || !r.swept.is_empty() || !r.failed.is_empty() {
                    tracing::info!(marked = r.marked.len(), swept = r.swept.len(), failed = r.failed.len(), dry_run, "gc pass");
                }
            }
            Err(e) => tracing::warn!(error = %e, "gc pass failed; retrying next interval"),
        }
    }
}
