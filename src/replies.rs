//! First-attempt results for `respond.wait`: delivery publishes how a hook's
//! first attempt of an item ended, ingress (which committed the item and
//! holds the sender's connection) waits a bounded time for it.
//!
//! Neither side calls the other: both hold the one [`Replies`] the daemon
//! makes. Either may come first: a quick command can finish before ingress,
//! back from the commit, starts waiting, so a result with no waiter is kept
//! a while ([`KEEP_UNCLAIMED`]) for it.
//!
//! Results are kept by (item id, route): a request matching several routes
//! waits for the first matched route's first attempt, and the other routes'
//! results, never waited for, are pruned like any unclaimed one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

/// The most of an app's body or a command's stdout relayed to the sender.
pub(crate) const REPLY_LIMIT: usize = 64 * 1024;
/// How long a result nobody waits for yet is kept.
const KEEP_UNCLAIMED: Duration = Duration::from_secs(60);
/// Most results kept at once; past it the oldest unclaimed ones go (their
/// senders, if they still wait, get the plain 202 when their wait is over).
const MAX_KEPT: usize = 4096;

/// What the action answered, to be relayed as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: String,
    /// At most [`REPLY_LIMIT`] bytes.
    pub body: Bytes,
}

/// How an item's first attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FirstAttempt {
    /// An answer to relay: a forward's upstream answer (any status), or an
    /// exec's stdout after exit 0.
    Reply(Reply),
    /// The attempt failed with no answer to relay (exit status, timeout,
    /// unreachable upstream, a missing argument value); the item goes on
    /// to its retries or to dead as usual. `gateway`: the action is a
    /// forward (answered 502, the app could not be reached), else an exec
    /// (answered 500, the command failed).
    Failed { why: String, gateway: bool },
}

enum Slot {
    Waiting(oneshot::Sender<FirstAttempt>),
    Done(FirstAttempt, Instant),
}

/// A result's key: item id and route.
type Key = (i64, String);

/// The results of first attempts by item id and route, shared by ingress
/// and delivery.
#[derive(Default)]
pub(crate) struct Replies {
    slots: Mutex<HashMap<Key, Slot>>,
    /// Set by [`Replies::close`]: no result will come any more.
    closed: AtomicBool,
}

impl Replies {
    /// A receiver for item `id`'s first-attempt result, already resolved if
    /// it came before. Call [`Replies::forget`] when giving up on it.
    /// After [`Replies::close`] the receiver fails at once.
    pub(crate) fn wait(&self, id: i64, route: &str) -> oneshot::Receiver<FirstAttempt> {
        let (tx, rx) = oneshot::channel();
        let mut slots = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return rx;
        }
        let key = (id, route.to_owned());
        match slots.remove(&key) {
            Some(Slot::Done(result, _)) => {
                // The receiver is right here; it cannot be gone.
                let _ = tx.send(result);
            }
            _ => {
                slots.insert(key, Slot::Waiting(tx));
            }
        }
        rx
    }

    /// Delivery claims nothing more (a stop or a hand-off): every waiter and
    /// every later one gets its answer now, without a result.
    pub(crate) fn close(&self) {
        let mut slots = self.lock();
        self.closed.store(true, Ordering::Release);
        slots.clear();
    }

    /// Gives up waiting for `id` (the wait is over): a late result is dropped.
    pub(crate) fn forget(&self, id: i64, route: &str) {
        let mut slots = self.lock();
        let key = (id, route.to_owned());
        if matches!(slots.get(&key), Some(Slot::Waiting(_))) {
            slots.remove(&key);
        }
    }

    /// Delivery's report of item `id`'s first attempt to `route`.
    pub(crate) fn publish(&self, id: i64, route: &str, result: FirstAttempt) {
        let mut slots = self.lock();
        let key = (id, route.to_owned());
        match slots.remove(&key) {
            Some(Slot::Waiting(tx)) => {
                // A waiter that just timed out and went: nothing to do.
                let _ = tx.send(result);
            }
            _ => {
                prune(&mut slots);
                slots.insert(key, Slot::Done(result, Instant::now()));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        // A panic while holding this lock leaves the map consistent.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Drops unclaimed results past [`KEEP_UNCLAIMED`], and the oldest beyond [`MAX_KEPT`].
fn prune(slots: &mut HashMap<Key, Slot>) {
    let now = Instant::now();
    slots.retain(|_, s| match s {
        Slot::Done(_, at) => now.duration_since(*at) < KEEP_UNCLAIMED,
        Slot::Waiting(tx) => !tx.is_closed(),
    });
    if slots.len() >= MAX_KEPT {
        let mut done: Vec<(Key, Instant)> = slots
            .iter()
            .filter_map(|(key, s)| match s {
                Slot::Done(_, at) => Some((key.clone(), *at)),
                Slot::Waiting(_) => None,
            })
            .collect();
        done.sort_by_key(|(_, at)| *at);
        let extra = slots.len() + 1 - MAX_KEPT;
        for (key, _) in done.into_iter().take(extra) {
            slots.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> FirstAttempt {
        FirstAttempt::Reply(Reply {
            status: 200,
            content_type: "text/plain".into(),
            body: Bytes::from(text.to_string()),
        })
    }

    #[tokio::test]
    async fn a_result_reaches_a_waiter_that_came_first_or_second() {
        let r = Replies::default();
        let rx = r.wait(1, "default");
        r.publish(1, "default", ok("one"));
        assert_eq!(rx.await.unwrap(), ok("one"));

        r.publish(
            2,
            "default",
            FirstAttempt::Failed {
                why: "exit status 3".into(),
                gateway: false,
            },
        );
        let rx = r.wait(2, "default");
        assert_eq!(
            rx.await.unwrap(),
            FirstAttempt::Failed {
                why: "exit status 3".into(),
                gateway: false,
            }
        );
        assert_eq!(r.len(), 0);
    }

    #[tokio::test]
    async fn a_result_after_the_waiter_gave_up_is_not_kept_for_it() {
        let r = Replies::default();
        let rx = r.wait(3, "default");
        r.forget(3, "default");
        drop(rx);
        r.publish(3, "default", ok("late"));
        // Kept as unclaimed (pruned later), never sent anywhere.
        assert_eq!(r.len(), 1);
    }

    #[tokio::test]
    async fn close_ends_every_wait_and_every_later_one_at_once() {
        let r = Replies::default();
        let before = r.wait(1, "default");
        r.close();
        assert!(before.await.is_err());
        assert!(r.wait(2, "default").await.is_err());
    }

    #[test]
    fn unclaimed_results_are_bounded() {
        let r = Replies::default();
        for id in 0..(MAX_KEPT as i64 + 100) {
            r.publish(id, "default", ok("x"));
        }
        assert!(r.len() <= MAX_KEPT, "{}", r.len());
    }
}
