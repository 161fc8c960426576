//! The wiring every domain repeats (`crate::runtime::wiring`): a watch that feeds the domain's
//! store and `/alive`, and a controller that reconciles on its watch, on triggers and on
//! becoming leader.

use crate::runtime::context::Context;
use crate::runtime::error::Error;
use crate::runtime::health::Health;
use crate::runtime::run::{became_leader, channel_stream, log_controller_error, shutdown_signal};
use futures_util::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use tokio::sync::{mpsc, watch};

/// A watch of a domain: back-off, managed fields dropped before caching, the domain's store;
/// every event is reported to `/alive` under `name`, then handed to `on_event`. Yields the
/// applied objects (for the domain's controller).
pub(crate) fn domain_watch<K>(
    api: Api<K>,
    name: &'static str,
    writer: reflector::store::Writer<K>,
    health: Health,
    mut on_event: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    cached_watch(api, writer).inspect(move |ev| report(&health, name, ev, &mut on_event)).applied_objects()
}

/// A watch whose events are all a domain needs (no controller of its own): as
/// [`domain_watch`], until shutdown. Resolves when the watch ends.
pub(crate) fn event_watch<K>(
    api: Api<K>,
    name: &'static str,
    writer: reflector::store::Writer<K>,
    health: Health,
    shutdown: &watch::Receiver<bool>,
    mut on_event: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> impl Future<Output = ()> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    cached_watch(api, writer).take_until(shutdown_signal(shutdown.clone())).for_each(move |ev| {
        report(&health, name, &ev, &mut on_event);
        async {}
    })
}

/// The watch and its store: back-off, managed fields dropped before caching.
fn cached_watch<K>(api: Api<K>, writer: reflector::store::Writer<K>) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    watcher(api, watcher::Config::default()).default_backoff().modify(|k: &mut K| k.meta_mut().managed_fields = None).reflect(writer)
}

/// Reports one watch event to `/alive`, then hands it to `on_event`.
fn report<K>(
    health: &Health,
    name: &'static str,
    ev: &Result<watcher::Event<K>, watcher::Error>,
    on_event: &mut impl FnMut(&watcher::Event<K>),
) {
    match ev {
        Ok(ev) => {
            health.watch_ok(name);
            on_event(ev);
        }
        Err(e) => health.watch_err(name, e.to_string()),
    }
}

/// A controller of a domain, to `run` with its reconciler: it reconciles what `stream` applies
/// (cached in `store`), what `triggers` names, and every cached object each time this replica
/// becomes leader; it stops gracefully on shutdown.
pub(crate) fn controller<K>(
    stream: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    store: Store<K>,
    config: ControllerConfig,
    triggers: mpsc::UnboundedReceiver<ObjectRef<K>>,
    ctx: &Context,
    shutdown: &watch::Receiver<bool>,
) -> Controller<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    Controller::for_stream(stream, store)
        .with_config(config)
        .reconcile_on(channel_stream(triggers))
        .reconcile_all_on(became_leader(ctx.leader.subscribe()))
        .graceful_shutdown_on(shutdown_signal(shutdown.clone()))
}

/// Drives a running controller to its end, logging its errors as `controller`.
pub(crate) fn log_errors<T>(
    controller: &'static str,
    results: impl Stream<Item = Result<T, kube::runtime::controller::Error<Error, watcher::Error>>>,
) -> impl Future<Output = ()> {
    results.for_each(move |r| async move {
        if let Err(e) = r {
            log_controller_error(controller, &e);
        }
    })
}
