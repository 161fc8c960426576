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

    type Sizes = Arc<Mutex<Vec<usize>>>;

    /// A batch runner that records batch sizes and answers `item * 10`, after `delay`.
    fn runner(sizes: Sizes, delay: Duration) -> impl Fn(Vec<u32>) -> futures_util::future::BoxFuture<'static, Vec<u32>> {
        move |items: Vec<u32>| {
            let sizes = sizes.clone();
            Box::pin(async move {
                sizes.lock().expect("sizes").push(items.len());
                tokio::time::sleep(delay).await;
                items.into_iter().map(|i| i * 10).collect()
            })
        }
    }

    /// A coalescer of at most `max` per batch and the sizes of the batches it ran.
    struct Fixture {
        c: Arc<Coalescer<&'static str, u32, u32>>,
        sizes: Sizes,
    }

    impl Fixture {
        fn new(max: usize) -> Fixture {
            Fixture { c: Arc::new(Coalescer::new(max)), sizes: Sizes::default() }
        }

        fn sizes(&self) -> Vec<usize> {
            self.sizes.lock().expect("sizes").clone()
        }

        /// A caller submitting `item` under `key`, whose batch takes `delay`.
        fn spawn(&self, key: &'static str, item: u32, delay: Duration) -> tokio::task::JoinHandle<Option<u32>> {
            let (c, run) = (self.c.clone(), runner(self.sizes.clone(), delay));
            tokio::spawn(async move { c.submit(key, item, run).await })
        }

        /// Like [`Fixture::spawn`], but the caller gives up after `patience`: `true` if it did.
        fn spawn_impatient(&self, key: &'static str, item: u32, delay: Duration, patience: Duration) -> tokio::task::JoinHandle<bool> {
            let (c, run) = (self.c.clone(), runner(self.sizes.clone(), delay));
            tokio::spawn(async move { tokio::time::timeout(patience, c.submit(key, item, run)).await.is_err() })
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_goes_at_once_and_requests_arriving_meanwhile_share_the_next_batch() {
        let f = Fixture::new(20);
        let started = tokio::time::Instant::now();
        assert_eq!(f.spawn("k", 1, SEC).await.expect("task"), Some(10));
        assert_eq!(started.elapsed(), SEC, "no wait before a lone request");
        // One in flight, then 30 more arrive: they go as batches of at most 20.
        let mut tasks = Vec::new();
        for i in 0..31u32 {
            tasks.push(f.spawn("k", i, SEC));
            tokio::task::yield_now().await;
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("task"), Some(i as u32 * 10), "each caller gets its own answer");
        }
        assert_eq!(f.sizes(), [1, 1, 20, 10]);
        assert_eq!(f.c.submitted(), 32);
        assert_eq!(f.c.busy(), 0);
        assert!(f.c.slots().is_empty(), "idle keys leave no state");
    }

    #[tokio::test(start_paused = true)]
    async fn batches_of_one_go_side_by_side_and_are_counted() {
        let f = Fixture::new(1);
        let started = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..5u32).map(|i| f.spawn("k", i, SEC)).collect();
        tokio::task::yield_now().await;
        assert_eq!(f.c.busy(), 5, "in flight together");
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("task"), Some(i as u32 * 10));
        }
        assert_eq!(started.elapsed(), SEC, "none waited for another");
        assert_eq!((f.c.busy(), f.c.submitted()), (0, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_do_not_wait_for_each_other_and_idle_waits_for_all() {
        let f = Fixture::new(20);
        let a = f.spawn("a", 1, 3 * SEC);
        let b = f.spawn("b", 2, SEC);
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        let idle_done = Arc::new(AtomicUsize::new(0));
        let idle = tokio::spawn({
            let (c, done) = (f.c.clone(), idle_done.clone());
            async move {
                c.idle().await;
                done.store(1, Ordering::SeqCst);
            }
        });
        assert_eq!(b.await.expect("b"), Some(20));
        assert_eq!(started.elapsed(), SEC, "b did not wait for a's batch");
        assert_eq!(idle_done.load(Ordering::SeqCst), 0, "a is still in flight");
        assert_eq!(a.await.expect("a"), Some(10));
        idle.await.expect("idle");
        assert_eq!(idle_done.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_holder_leaves_its_batch_unanswered_and_the_next_caller_goes_on() {
        let f = Fixture::new(20);
        // The holder of the first batch is cancelled after 1 s of a 5 s request.
        let holder = f.spawn_impatient("k", 1, 5 * SEC, SEC);
        tokio::task::yield_now().await;
        // Queued behind it: goes in the next batch, run by itself once the gate is free.
        let next = f.spawn("k", 2, SEC);
        assert!(holder.await.expect("holder"), "timed out");
        assert_eq!(next.await.expect("next"), Some(20));
        assert_eq!(f.sizes(), [1, 1]);
        assert_eq!(f.c.busy(), 0, "the cancelled caller is not counted any more");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_before_its_turn_sends_nothing() {
        let f = Fixture::new(20);
        let first = f.spawn("k", 1, 5 * SEC);
        tokio::task::yield_now().await;
        // Queued behind the first, gives up after 1 s: its item must not go out.
        let quitter = f.spawn_impatient("k", 2, SEC, SEC);
        tokio::task::yield_now().await;
        let third = f.spawn("k", 3, SEC);
        assert!(quitter.await.expect("quitter"), "gave up");
        assert_eq!(first.await.expect("first"), Some(10));
        assert_eq!(third.await.expect("third"), Some(30));
        assert_eq!(f.sizes(), [1, 1], "the quitter's request was dropped, the third went alone");
    }
}
