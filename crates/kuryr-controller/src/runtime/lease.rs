//! Leader election on a `coordination.k8s.io/v1` Lease, with fencing.
//!
//! [`LeaderGate`] answers "may this replica write now?" without any I/O: it holds a monotonic
//! deadline that every successful renewal pushes to `start of the renew call + renew_deadline`.
//! The deadline is shorter than the lease duration other replicas wait for, so a replica that
//! cannot renew (API down, process stalled, clock of the renew task starved) stops writing
//! *before* anyone else may take over, even if its renew task never runs again. Every write
//! path of the controllers calls [`LeaderGate::ensure`] first.
//!
//! Followers keep their watches and caches warm; when they win the lease the gate's change
//! channel fires and the controllers reconcile everything in their stores.

use crate::runtime::error::{is_conflict, Error};
use crate::runtime::metrics::Metrics;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Whether this replica may write. Cheap to clone; checks are lock-free.
#[derive(Clone, Debug)]
pub struct LeaderGate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    /// No leader election: always allowed to write.
    always: bool,
    epoch: Instant,
    /// Milliseconds since `epoch` until which writes are allowed.
    valid_until_ms: AtomicU64,
    leading: AtomicBool,
    /// Bumped whenever writing (re)starts after a gap: what another replica may have done in
    /// between is unknown to state kept from an earlier term.
    term: AtomicU64,
    tx: watch::Sender<bool>,
}

impl LeaderGate {
    /// A gate that is always open (leader election off).
    pub fn always() -> LeaderGate {
        Self::new(true)
    }

    /// A gate that opens only while a lease is held.
    pub fn elected() -> LeaderGate {
        Self::new(false)
    }

    fn new(always: bool) -> LeaderGate {
        let (tx, _) = watch::channel(always);
        LeaderGate {
            inner: Arc::new(GateInner {
                always,
                epoch: Instant::now(),
                valid_until_ms: AtomicU64::new(0),
                leading: AtomicBool::new(always),
                term: AtomicU64::new(0),
                tx,
            }),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.inner.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The current leadership term (see `GateInner::term`); constant without leader election.
    pub fn term(&self) -> u64 {
        self.inner.term.load(Ordering::Acquire)
    }

    /// May this replica write right now?
    pub fn is_leader(&self) -> bool {
        self.inner.always
            || (self.inner.leading.load(Ordering::Acquire) && self.ms(Instant::now()) < self.inner.valid_until_ms.load(Ordering::Acquire))
    }

    /// `Err(NotLeader)` unless this replica may write.
    pub fn ensure(&self) -> Result<(), Error> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Fires `true` when this replica becomes leader, `false` when it steps down.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.tx.subscribe()
    }

    /// A renewal that started at `renew_started` succeeded: writes allowed until
    /// `renew_started + renew_deadline`.
    fn extend(&self, until: Instant) {
        let lapsed =
            !self.inner.leading.load(Ordering::Acquire) || self.inner.valid_until_ms.load(Ordering::Acquire) <= self.ms(Instant::now());
        if lapsed {
            self.inner.term.fetch_add(1, Ordering::AcqRel);
        }
        self.inner.valid_until_ms.store(self.ms(until), Ordering::Release);
        if !self.inner.leading.swap(true, Ordering::AcqRel) {
            self.inner.tx.send_replace(true);
        }
    }

    /// Stop writing now.
    fn revoke(&self) {
        self.inner.valid_until_ms.store(0, Ordering::Release);
        if self.inner.leading.swap(false, Ordering::AcqRel) {
            self.inner.tx.send_replace(false);
        }
    }
}

/// Lease parameters (client-go's defaults).
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process: `<hostname>_<random>`.
    pub identity: String,
    /// How long others wait after the last renewal before taking over.
    pub lease_duration: Duration,
    /// How long after the start of its last successful renewal this replica keeps writing.
    /// Must be shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// Pause between acquire/renew attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A process-unique identity: `$POD_NAME` or the host name, plus a random suffix.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kuryr-controller".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{host}_{:x}", (nanos as u64) ^ (u64::from(std::process::id()) << 32))
}

/// What a Lease says about who may lead at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// Held by us.
    Ours,
    /// Free, expired, or released: we may take it over.
    Free,
    /// Someone else holds a live lease.
    Theirs(String),
}

/// Pure decision on a Lease's spec.
pub fn view(spec: &LeaseSpec, me: &str, now: Timestamp) -> LeaseView {
    match spec.holder_identity.as_deref() {
        None | Some("") => LeaseView::Free,
        Some(h) if h == me => LeaseView::Ours,
        Some(h) => {
            let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1)));
            let last = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
            match last {
                Some(t) if t + duration > now => LeaseView::Theirs(h.to_string()),
                _ => LeaseView::Free,
            }
        }
    }
}

/// One acquire-or-renew attempt. `Ok(true)`: we hold the lease now.
async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, Error> {
    let now = MicroTime(Timestamp::now());
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let what = || format!("lease {}/{}", cfg.namespace, cfg.name);
    let existing = api.get_opt(&cfg.name).await.map_err(|e| Error::kube("get", what(), e))?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(cfg.name.clone()), namespace: Some(cfg.namespace.clone()), ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(Error::kube("create", what(), e)),
        };
    };
    let mut spec = lease.spec.take().unwrap_or_default();
    match view(&spec, &cfg.identity, now.0) {
        LeaseView::Theirs(_) => return Ok(false),
        LeaseView::Ours => {
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(secs);
        }
        LeaseView::Free => {
            spec.holder_identity = Some(cfg.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(secs);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
    }
    lease.spec = Some(spec);
    // `replace` carries metadata.resourceVersion: a concurrent writer makes this a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(Error::kube("update", what(), e)),
    }
}

/// Gives the lease up (on shutdown) so another replica can take over at once.
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else { return };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the leader lease"),
        Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "could not release the leader lease"),
    }
}

/// Runs the election until `shutdown` resolves: acquires, renews every `retry_period`, opens
/// and closes `gate`. Releases the lease on shutdown if held.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    gate: LeaderGate,
    metrics: Arc<Metrics>,
    heartbeat: impl Fn() + Send,
    shutdown: impl Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    tokio::pin!(shutdown);
    tracing::info!(identity = %cfg.identity, lease = %format!("{}/{}", cfg.namespace, cfg.name), "leader election started");
    let mut leading = false;
    loop {
        let started = Instant::now();
        let attempt = tokio::time::timeout(cfg.renew_deadline, try_acquire_or_renew(&api, &cfg)).await;
        match attempt {
            Ok(Ok(true)) => {
                gate.extend(started + cfg.renew_deadline);
                if !leading {
                    tracing::info!(identity = %cfg.identity, "became leader");
                }
            }
            Ok(Ok(false)) => {
                if leading {
                    tracing::warn!(identity = %cfg.identity, "lost the leader lease to another replica; stopped writing");
                    leading = false;
                }
                gate.revoke();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "leader lease acquire/renew failed"),
            Err(_) => tracing::warn!(after = ?cfg.renew_deadline, "leader lease acquire/renew timed out"),
        }
        // Fencing does not depend on this: the gate closes by itself at the deadline. This only
        // tells the subscribers.
        let now_leading = gate.is_leader();
        if leading && !now_leading {
            tracing::warn!("could not renew the leader lease in time; stopped writing");
            gate.revoke();
        }
        leading = now_leading;
        metrics.set_leader(leading);
        heartbeat();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(cfg.retry_period) => {}
        }
    }
    let held = gate.is_leader();
    gate.revoke();
    metrics.set_leader(false);
    if held {
        release(&api, &cfg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_views() {
        let now = Timestamp::now();
        assert_eq!(view(&spec(Some("me"), 1, 15), "me", now), LeaseView::Ours);
        assert_eq!(view(&spec(Some("other"), 1, 15), "me", now), LeaseView::Theirs("other".into()));
        assert_eq!(view(&spec(Some("other"), 20, 15), "me", now), LeaseView::Free, "expired");
        assert_eq!(view(&spec(None, 1, 15), "me", now), LeaseView::Free, "released");
        assert_eq!(view(&spec(Some(""), 1, 15), "me", now), LeaseView::Free);
        assert_eq!(view(&LeaseSpec { holder_identity: Some("other".into()), ..LeaseSpec::default() }, "me", now), LeaseView::Free);
    }

    #[test]
    fn gate_fences_by_deadline() {
        let g = LeaderGate::elected();
        assert!(!g.is_leader());
        assert!(matches!(g.ensure(), Err(Error::NotLeader)));
        let mut rx = g.subscribe();
        g.extend(Instant::now() + Duration::from_secs(5));
        assert!(g.is_leader());
        assert!(rx.has_changed().unwrap_or(false) && *rx.borrow_and_update());
        // A deadline in the past closes the gate without anyone calling revoke.
        g.extend(Instant::now());
        assert!(!g.is_leader());
        g.revoke();
        assert!(!*rx.borrow_and_update());
        assert!(LeaderGate::always().is_leader());
    }

    #[test]
    fn identities_are_unique() {
        assert_ne!(default_identity(), default_identity());
    }
}
