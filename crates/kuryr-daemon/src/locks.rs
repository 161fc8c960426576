//! Per-key serialization: requests for the same pod run one after the other, requests for
//! different pods in parallel. Entries are dropped when the last holder or waiter leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Debug, Default)]
struct Inner {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A set of async mutexes keyed by string. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct KeyedLocks {
    inner: Arc<Inner>,
}

/// Held while a request for one key runs.
#[derive(Debug)]
pub struct KeyGuard {
    inner: Arc<Inner>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the lock of `key`.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let m = {
            let mut map = self.inner.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_owned()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        KeyGuard {
            inner: self.inner.clone(),
            key: key.to_owned(),
            guard: Some(guard),
        }
    }

    /// Number of keys currently held or waited for.
    pub fn len(&self) -> usize {
        self.inner
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // Release first, then drop the map entry if nobody else holds a clone of it. Clones
        // are only taken under the map lock, so the count cannot grow while we look.
        drop(self.guard.take());
        let mut map = self.inner.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Runs `n` tasks per key that each bump a counter, sleep, and decrement; returns the
    /// highest concurrency seen per key and overall.
    async fn run(keys: &[&str], per_key: usize) -> (usize, usize) {
        let locks = KeyedLocks::new();
        let per_key_max = Arc::new(AtomicUsize::new(0));
        let overall = Arc::new(AtomicUsize::new(0));
        let overall_max = Arc::new(AtomicUsize::new(0));
        let counters: HashMap<String, Arc<AtomicUsize>> = keys
            .iter()
            .map(|k| (k.to_string(), Arc::new(AtomicUsize::new(0))))
            .collect();
        let mut tasks = Vec::new();
        for k in keys {
            for _ in 0..per_key {
                let (locks, c, pkm, o, om, k) = (
                    locks.clone(),
                    counters[*k].clone(),
                    per_key_max.clone(),
                    overall.clone(),
                    overall_max.clone(),
                    k.to_string(),
                );
                tasks.push(tokio::spawn(async move {
                    let _g = locks.lock(&k).await;
                    let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                    pkm.fetch_max(now, Ordering::SeqCst);
                    let all = o.fetch_add(1, Ordering::SeqCst) + 1;
                    om.fetch_max(all, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                    c.fetch_sub(1, Ordering::SeqCst);
                }));
            }
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert!(locks.is_empty(), "entries leaked: {}", locks.len());
        (
            per_key_max.load(Ordering::SeqCst),
            overall_max.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn same_pod_is_serialized_different_pods_run_in_parallel() {
        let (per_key, overall) = run(&["pod:a/1", "pod:a/2", "pod:b/1"], 5).await;
        assert_eq!(per_key, 1, "two requests for the same pod ran at once");
        assert!(
            overall >= 2,
            "requests for different pods never overlapped (max {overall})"
        );
    }

    #[tokio::test]
    async fn waiter_gets_the_lock_after_release() {
        let locks = KeyedLocks::new();
        let g = locks.lock("k").await;
        let l2 = locks.clone();
        let t = tokio::spawn(async move {
            let _g = l2.lock("k").await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !t.is_finished(),
            "second holder got the lock while the first held it"
        );
        drop(g);
        tokio::time::timeout(Duration::from_secs(2), t)
            .await
            .expect("waiter never woke")
            .expect("task");
        assert!(locks.is_empty());
    }
}
