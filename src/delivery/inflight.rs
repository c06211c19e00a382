//! Which deliveries are running now, for the drain and for `hookd status`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

/// One running delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlightEntry {
    /// The spool item's id.
    pub id: i64,
    pub hook: String,
    pub started: Instant,
}

/// The deliveries running in this process, across hooks. A delivery counts
/// from its claim until its result is written to the spool.
#[derive(Debug)]
pub(crate) struct InFlight {
    running: Mutex<Running>,
    total: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Running {
    next_key: u64,
    entries: HashMap<u64, InFlightEntry>,
}

impl InFlight {
    /// An empty tracker.
    pub(crate) fn new() -> Arc<InFlight> {
        Arc::new(InFlight {
            running: Mutex::new(Running::default()),
            total: watch::Sender::new(0),
        })
    }

    /// How many deliveries are running.
    pub(crate) fn total(&self) -> usize {
        *self.total.borrow()
    }

    /// Running deliveries per hook (hooks with none are absent).
    pub(crate) fn by_hook(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for e in self.lock().entries.values() {
            *counts.entry(e.hook.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Every running delivery, oldest first.
    pub(crate) fn entries(&self) -> Vec<InFlightEntry> {
        let mut list: Vec<InFlightEntry> = self.lock().entries.values().cloned().collect();
        list.sort_by_key(|e| (e.started, e.id));
        list
    }

    /// Resolves once nothing is running (at once if nothing is).
    pub(crate) async fn wait_idle(&self) {
        let mut rx = self.total.subscribe();
        // The sender lives in `self`, so this cannot fail while we are borrowed.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Counts a delivery as running until the guard is dropped.
    pub(crate) fn track(self: &Arc<Self>, id: i64, hook: &str) -> InFlightGuard {
        let key = {
            let mut running = self.lock();
            let key = running.next_key;
            running.next_key += 1;
            running.entries.insert(
                key,
                InFlightEntry {
                    id,
                    hook: hook.to_string(),
                    started: Instant::now(),
                },
            );
            self.total.send_replace(running.entries.len());
            key
        };
        InFlightGuard {
            owner: self.clone(),
            key,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        // A panic elsewhere cannot leave the map half-updated; keep going.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps one delivery counted in its [`InFlight`]; dropping it (also on panic) uncounts it.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    owner: Arc<InFlight>,
    key: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut running = self.owner.lock();
        running.entries.remove(&self.key);
        self.owner.total.send_replace(running.entries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn counts_per_hook_and_waits_for_idle() {
        let f = InFlight::new();
        f.wait_idle().await;
        let a = f.track(1, "github");
        let b = f.track(2, "github");
        let c = f.track(3, "deploy");
        assert_eq!(f.total(), 3);
        assert_eq!(
            f.by_hook().into_iter().collect::<Vec<_>>(),
            vec![("deploy".to_string(), 1), ("github".to_string(), 2)]
        );
        let ids: Vec<i64> = f.entries().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);

        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.wait_idle().await }
        });
        drop(a);
        drop(c);
        assert_eq!(f.total(), 1);
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_idle did not resolve")
            .unwrap();
        assert!(f.entries().is_empty());
    }

    #[test]
    fn same_id_twice_is_two_entries() {
        let f = InFlight::new();
        let a = f.track(9, "h");
        let b = f.track(9, "h");
        drop(a);
        assert_eq!(f.total(), 1);
        drop(b);
        assert_eq!(f.total(), 0);
    }
}
