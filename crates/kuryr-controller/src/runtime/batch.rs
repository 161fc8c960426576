//! Group commit: requests for the same key that arrive while one request for that key is in
//! flight go out together as the next one. No timer, no added latency: a lone request goes at
//! once; under load every round trip carries everything that queued during the previous one.
//! Used for pod port creation (one bulk `POST /ports`, [`crate::pod::driver::neutron`]) and
//! nested-vlan subport attachment (one `PUT add_subports` per trunk, [`crate::pod::driver::nested`]).
//!
//! The caller that holds a key's gate runs the batch for everyone queued (at most `max`); the
//! others wait for their answer. If that caller is cancelled mid-batch (its reconcile timed
//! out), the batch's other callers get `None`: they retry as for an interrupted call, which
//! every user of this module must treat like an OpenStack timeout (the request may have taken
//! effect: adopt before creating again).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

struct Waiter<I, O> {
    item: I,
    tx: oneshot::Sender<O>,
}

struct Slot<I, O> {
    /// Held while a batch of this key is in flight.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Requests waiting for the next batch.
    queue: Vec<Waiter<I, O>>,
}

impl<I, O> Default for Slot<I, O> {
    fn default() -> Self {
        Slot { gate: Arc::default(), queue: Vec::new() }
    }
}

/// Batches of requests of type `I` answered with `O`, per key `K`.
pub struct Coalescer<K, I, O> {
    slots: Mutex<HashMap<K, Slot<I, O>>>,
    max: usize,
    /// Requests queued or in flight, all keys (see [`Coalescer::idle`]).
    busy: watch::Sender<usize>,
    /// Requests submitted so far, all keys (see [`Coalescer::submitted`]).
    submitted: AtomicU64,
}

impl<K, I, O> std::fmt::Debug for Coalescer<K, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").field("max", &self.max).field("busy", &*self.busy.borrow()).finish_non_exhaustive()
    }
}

/// Decrements the busy count when a request leaves (answered, or its caller cancelled).
struct Busy<'a>(&'a watch::Sender<usize>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl<K: Eq + Hash + Clone, I, O> Coalescer<K, I, O> {
    /// At most `max` requests per batch (≥ 1).
    pub fn new(max: usize) -> Self {
        Coalescer { slots: Mutex::default(), max: max.max(1), busy: watch::Sender::new(0), submitted: AtomicU64::new(0) }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<I, O>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits `item` under `key` and waits for its answer. `run` is called (by whichever
    /// caller holds the gate) with the batch and must return one answer per item, in order;
    /// missing answers drop their callers' senders (they get `None`). `None`: the batch that held
    /// this item was cancelled.
    pub async fn submit<F, Fut>(&self, key: K, item: I, run: F) -> Option<O>
    where
        F: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<O>>,
    {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        self.busy.send_modify(|n| *n += 1);
        let _busy = Busy(&self.busy);
        if self.max == 1 {
            // Batches of one: nothing to wait for, requests go side by side (only counted).
            return run(vec![item]).await.into_iter().next();
        }
        let (tx, rx) = oneshot::channel();
        let gate = {
            let mut slots = self.slots();
            let slot = slots.entry(key.clone()).or_default();
            slot.queue.push(Waiter { item, tx });
            slot.gate.clone()
        };
        {
            let _held = gate.lock().await;
            let batch: Vec<Waiter<I, O>> = {
                let mut slots = self.slots();
                match slots.get_mut(&key) {
                    Some(slot) => {
                        // Callers that gave up before their turn: their requests are not sent.
                        slot.queue.retain(|w| !w.tx.is_closed());
                        let n = slot.queue.len().min(self.max);
                        slot.queue.drain(..n).collect()
                    }
                    None => Vec::new(),
                }
            };
            // Empty: an earlier holder took this item into its batch (and answered it).
            if !batch.is_empty() {
                let (items, txs): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().map(|w| (w.item, w.tx)).unzip();
                let answers = run(items).await;
                for (tx, answer) in txs.into_iter().zip(answers) {
                    let _ = tx.send(answer);
                }
            }
            let mut slots = self.slots();
            if slots.get(&key).is_some_and(|s| s.queue.is_empty() && Arc::strong_count(&s.gate) == 2) {
                // Nobody else holds or waits for this gate (the map's and ours): drop the slot.
                slots.remove(&key);
            }
        }
        rx.await.ok()
    }

    /// Waits until no request is queued or in flight (for background work that must not delay
    /// callers, e.g. a warm-pool refill behind pod port creation).
    pub async fn idle(&self) {
        let mut rx = self.busy.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Requests submitted so far (background work compares two readings to learn whether a
    /// caller came meanwhile).
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Requests queued or in flight.
    pub fn busy(&self) -> usize {
        *self.busy.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A batch runner that records batch sizes and answers `item * 10`, after `delay`.
    fn runner(sizes: Arc<Mutex<Vec<usize>>>, delay: Duration) -> impl Fn(Vec<u32>) -> futures_util::future::BoxFuture<'static, Vec<u32>> {
        move |items: Vec<u32>| {
            let sizes = sizes.clone();
            Box::pin(async move {
                sizes.lock().expect("sizes").push(items.len());
                tokio::time::sleep(delay).await;
                items.into_iter().map(|i| i * 10).collect()
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_goes_at_once_and_requests_arriving_meanwhile_share_the_next_batch() {
        let c: Arc<Coalescer<&str, u32, u32>> = Arc::new(Coalescer::new(20));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let run = runner(sizes.clone(), Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        assert_eq!(c.submit("k", 1, &run).await, Some(10));
        assert_eq!(started.elapsed(), Duration::from_secs(1), "no wait before a lone request");
        // One in flight, then 30 more arrive: they go as batches of at most 20.
        let mut tasks = Vec::new();
        for i in 0..31u32 {
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(1)));
            tasks.push(tokio::spawn(async move { c.submit("k", i, run).await }));
            tokio::task::yield_now().await;
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("task"), Some(i as u32 * 10), "each caller gets its own answer");
        }
        assert_eq!(*sizes.lock().expect("sizes"), [1, 1, 20, 10]);
        assert_eq!(c.submitted(), 32);
        assert_eq!(c.busy(), 0);
        assert!(c.slots().is_empty(), "idle keys leave no state");
    }

    #[tokio::test(start_paused = true)]
    async fn batches_of_one_go_side_by_side_and_are_counted() {
        let c: Arc<Coalescer<&str, u32, u32>> = Arc::new(Coalescer::new(1));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let started = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..5u32)
            .map(|i| {
                let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(1)));
                tokio::spawn(async move { c.submit("k", i, run).await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(c.busy(), 5, "in flight together");
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("task"), Some(i as u32 * 10));
        }
        assert_eq!(started.elapsed(), Duration::from_secs(1), "none waited for another");
        assert_eq!((c.busy(), c.submitted()), (0, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_do_not_wait_for_each_other_and_idle_waits_for_all() {
        let c: Arc<Coalescer<&str, u32, u32>> = Arc::new(Coalescer::new(20));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let a = tokio::spawn({
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(3)));
            async move { c.submit("a", 1, run).await }
        });
        let b = tokio::spawn({
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(1)));
            async move { c.submit("b", 2, run).await }
        });
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        let idle_done = Arc::new(AtomicUsize::new(0));
        let idle = tokio::spawn({
            let (c, done) = (c.clone(), idle_done.clone());
            async move {
                c.idle().await;
                done.store(1, Ordering::SeqCst);
            }
        });
        assert_eq!(b.await.expect("b"), Some(20));
        assert_eq!(started.elapsed(), Duration::from_secs(1), "b did not wait for a's batch");
        assert_eq!(idle_done.load(Ordering::SeqCst), 0, "a is still in flight");
        assert_eq!(a.await.expect("a"), Some(10));
        idle.await.expect("idle");
        assert_eq!(idle_done.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_holder_leaves_its_batch_unanswered_and_the_next_caller_goes_on() {
        let c: Arc<Coalescer<&str, u32, u32>> = Arc::new(Coalescer::new(20));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // The holder of the first batch is cancelled after 1 s of a 5 s request.
        let holder = tokio::spawn({
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(5)));
            async move { tokio::time::timeout(Duration::from_secs(1), c.submit("k", 1, run)).await }
        });
        tokio::task::yield_now().await;
        // Queued behind it: goes in the next batch, run by itself once the gate is free.
        let next = tokio::spawn({
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(1)));
            async move { c.submit("k", 2, run).await }
        });
        assert!(holder.await.expect("holder").is_err(), "timed out");
        assert_eq!(next.await.expect("next"), Some(20));
        assert_eq!(*sizes.lock().expect("sizes"), [1, 1]);
        assert_eq!(c.busy(), 0, "the cancelled caller is not counted any more");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_before_its_turn_sends_nothing() {
        let c: Arc<Coalescer<&str, u32, u32>> = Arc::new(Coalescer::new(20));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let first = tokio::spawn({
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(5)));
            async move { c.submit("k", 1, run).await }
        });
        tokio::task::yield_now().await;
        // Queued behind the first, gives up after 1 s: its item must not go out.
        let quitter = tokio::spawn({
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(1)));
            async move { tokio::time::timeout(Duration::from_secs(1), c.submit("k", 2, run)).await }
        });
        tokio::task::yield_now().await;
        let third = tokio::spawn({
            let (c, run) = (c.clone(), runner(sizes.clone(), Duration::from_secs(1)));
            async move { c.submit("k", 3, run).await }
        });
        assert!(quitter.await.expect("quitter").is_err());
        assert_eq!(first.await.expect("first"), Some(10));
        assert_eq!(third.await.expect("third"), Some(30));
        assert_eq!(*sizes.lock().expect("sizes"), [1, 1], "the quitter's request was dropped, the third went alone");
    }
}
