//! One route's dispatcher: claims due deliveries of one (hook, route) up to
//! the route's concurrency, runs each as a task, and writes each result back
//! to the spool. A plain hook is one route, `default`, whose deliveries are
//! its items rows; each route of a hook with `[[hook.route]]` has its own
//! dispatcher, so one route's retries, order and slow upstream never hold
//! up another's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use super::retry::{verdict, Verdict};
use super::{human, Action, DeliveryContext, DeliveryEvent, Outcome};
use crate::config::{HookConfig, RetryConfig, RouteConfig};
use crate::replies::FirstAttempt;
use crate::spool::{ClaimRequest, Item, Spool, SpoolError};

/// A lease outlives the action's timeout by this much, so a running
/// delivery's item never becomes claimable by another worker.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// The dispatcher looks at the spool at least this often, whatever it is told.
const FALLBACK_TICK: Duration = Duration::from_secs(1);
/// Pause after a spool error before trying again.
const SPOOL_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Tries to write one result to the spool before leaving it to the lease.
const RECORD_TRIES: u32 = 3;

/// Delivers the deliveries of `hook`'s route `route` until `ctx.stop` (or
/// `ctx.hard_stop`) is set, then waits for its running deliveries and
/// returns. Never panics on spool errors: it logs them and tries again a
/// second later.
pub(crate) async fn run_route(
    spool: Spool,
    hook: &HookConfig,
    route: RouteConfig,
    ctx: DeliveryContext,
) {
    let concurrency = if route.ordered {
        1
    } else {
        route.concurrency.max(1)
    };
    let action = Action::new(&route.action, &ctx.client, &ctx.hidden_env);
    let lease = action.timeout().saturating_add(LEASE_MARGIN);
    let name = hook.name.clone();
    let ordered = route.ordered;
    // Only the first matched route's first attempt answers a waiting sender;
    // which route that is depends on the request, so every route may publish
    // and ingress takes the one it waits for (see `Replies`).
    let replies_wanted = hook.respond.as_ref().is_some_and(|r| r.wait.is_some());
    // A plain hook's deliveries are its items rows.
    let claim_route = hook.routed.then(|| route.name.clone());
    // Where this route's deliveries are: its delivery rows, and, for route
    // `default` of a hook that had a plain action before, that hook's items
    // rows spooled then (older, so first).
    let sources: Vec<Option<String>> = if hook.routed && route.name == crate::spool::DEFAULT_ROUTE {
        vec![None, claim_route]
    } else {
        vec![claim_route]
    };
    let worker = Arc::new(Worker {
        replies_wanted,
        spool: spool.clone(),
        hook: hook.name.clone(),
        route: route.name.clone(),
        retry: route.retry,
        action,
        ctx: ctx.clone(),
    });
    let route_name = route.name;
    let arrivals = spool.arrivals();
    let mut stop = ctx.stop.clone();
    let mut hard_stop = ctx.hard_stop.clone();
    let mut hard_stop_open = true;
    let mut tasks: JoinSet<()> = JoinSet::new();
    tracing::debug!(hook = %name, route = %route_name, concurrency, "delivery started");

    while !(*stop.borrow() || *hard_stop.borrow()) {
        // Registered before the claim, so an arrival during it still wakes us.
        let notified = arrivals.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut wake_at = Instant::now() + FALLBACK_TICK;
        let mut spool_failed = false;

        // Reap every finished delivery first, so one claim fills every free
        // slot: a claim per finished item would cost a commit per item.
        while let Some(joined) = tasks.try_join_next() {
            report_panic(&name, joined);
        }
        for source in &sources {
            let free = concurrency.saturating_sub(tasks.len());
            if free == 0 || spool_failed {
                break;
            }
            let req = ClaimRequest {
                hook: name.clone(),
                route: source.clone(),
                max: free,
                ordered,
                lease,
            };
            match spool.claim(req).await {
                Ok(items) => {
                    let claimed = items.len();
                    for item in items {
                        tasks.spawn(worker.clone().deliver(item));
                    }
                    if claimed < free {
                        match spool.next_due(&name, source.as_deref()).await {
                            Ok(Some(due)) => {
                                // A due time already past is one we could not
                                // claim (ordered, leased elsewhere): the tick covers it.
                                if let Ok(wait) = due.duration_since(crate::spool::now()) {
                                    wake_at = wake_at.min(Instant::now() + wait);
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(hook = %name, route = %route_name, error = %e, "spool: cannot read next due time");
                                spool_failed = true;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(hook = %name, route = %route_name, error = %e, "spool: cannot claim deliveries; trying again in 1s");
                    spool_failed = true;
                }
            }
        }
        if spool_failed {
            wake_at = Instant::now() + SPOOL_ERROR_PAUSE;
        }

        tokio::select! {
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => report_panic(&name, joined),
            _ = &mut notified, if !spool_failed => {}
            _ = sleep_until(wake_at) => {}
            changed = stop.changed() => {
                // The sender gone means the process is going away: stop too.
                if changed.is_err() {
                    break;
                }
            }
            changed = hard_stop.changed(), if hard_stop_open => {
                hard_stop_open = changed.is_ok();
            }
        }
    }

    if !tasks.is_empty() {
        tracing::info!(hook = %name, route = %route_name, in_flight = tasks.len(), "delivery stopped claiming; waiting for running deliveries");
    }
    while let Some(joined) = tasks.join_next().await {
        report_panic(&name, joined);
    }
    tracing::debug!(hook = %name, route = %route_name, "delivery stopped");
}

fn report_panic(hook: &str, joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        // Its lease expires and the item is claimed again: nothing is lost.
        tracing::error!(hook = %hook, error = %e, "delivery task failed");
    }
}

/// What each delivery task of one hook needs.
struct Worker {
    /// The hook has `respond.wait`: first attempts publish their result.
    replies_wanted: bool,
    spool: Spool,
    /// The hook's name.
    hook: String,
    /// The route's name (`default` for a plain hook).
    route: String,
    retry: RetryConfig,
    action: Action,
    ctx: DeliveryContext,
}

impl Worker {
    async fn deliver(self: Arc<Self>, item: Item) {
        let _tracked = self.ctx.in_flight.track(item.id, &self.hook);
        let attempt = item.attempts.saturating_add(1);
        let started = Instant::now();
        let (outcome, reply) = if *self.ctx.hard_stop.borrow() {
            (Outcome::Cancelled, None)
        } else {
            let cancel = until_set(self.ctx.hard_stop.clone());
            self.action.attempt_with_reply(&item, attempt, cancel).await
        };
        if self.replies_wanted && attempt == 1 {
            let first = match (&outcome, reply) {
                (_, Some(reply)) => Some(FirstAttempt::Reply(reply)),
                (Outcome::Failed(e) | Outcome::Rejected(e), None) => Some(FirstAttempt::Failed {
                    why: e.clone(),
                    gateway: matches!(self.action, Action::Forward(_)),
                }),
                // Given up, not attempted: the sender's wait runs out into the 202.
                (Outcome::Cancelled | Outcome::Delivered, None) => None,
            };
            if let Some(first) = first {
                self.ctx.replies.publish(item.id, &self.route, first);
            }
        }
        self.record(&item, attempt, outcome, started.elapsed())
            .await;
    }

    /// Writes the outcome to the spool, logs it and tells the observer.
    async fn record(&self, item: &Item, attempt: u32, outcome: Outcome, elapsed: Duration) {
        let id = item.id;
        let hook = &self.hook;
        match outcome {
            Outcome::Delivered => {
                // Not awaited: the slot moves on while the writer commits it.
                if let Err(e) = self.spool.complete_detached(item.lease()) {
                    tracing::error!(delivery_id = id, hook = %hook, route = %self.route, error = %e,
                        "spool: complete failed; the item will be tried again when its lease expires");
                }
                tracing::info!(hookd_event = "delivered", delivery_id = id, hook = %hook, route = %self.route, attempt,
                    duration = %human(elapsed), "delivered in {}", human(elapsed));
                self.observe(DeliveryEvent::Delivered {
                    hook: hook.clone(),
                    route: self.route.clone(),
                    secs: elapsed.as_secs_f64(),
                });
            }
            Outcome::Failed(ref error) | Outcome::Rejected(ref error) => {
                let error = error.clone();
                self.observe(DeliveryEvent::Failed {
                    hook: hook.clone(),
                    route: self.route.clone(),
                    id,
                    error: error.clone(),
                });
                let verdict = if matches!(outcome, Outcome::Rejected(_)) {
                    Verdict::Dead
                } else {
                    verdict(&self.retry, attempt, &mut rand::thread_rng())
                };
                match verdict {
                    Verdict::Retry(wait) => {
                        let now = crate::spool::now();
                        let next = now.checked_add(wait).unwrap_or(now);
                        self.persist("retry_later", id, || {
                            self.spool.retry_later(item.lease(), next, &error)
                        })
                        .await;
                        tracing::warn!(hookd_event = "delivery_failed", delivery_id = id, hook = %hook, route = %self.route, attempt,
                            retry_in = %human(wait), error = %error,
                            "delivery failed: {error}; retry in {}", human(wait));
                        self.observe(DeliveryEvent::Retried {
                            hook: hook.clone(),
                            route: self.route.clone(),
                        });
                    }
                    Verdict::Dead => {
                        self.persist("mark_dead", id, || {
                            self.spool.mark_dead(item.lease(), &error)
                        })
                        .await;
                        if matches!(outcome, Outcome::Rejected(_)) {
                            tracing::error!(hookd_event = "delivery_dead", delivery_id = id, hook = %hook, route = %self.route, attempt,
                                error = %error, "delivery cannot succeed for this item (no retry would change it): {error}");
                        } else {
                            tracing::error!(hookd_event = "delivery_dead", delivery_id = id, hook = %hook, route = %self.route, attempt,
                                error = %error, "delivery failed for good after {attempt} attempts: {error}");
                        }
                        self.observe(DeliveryEvent::Dead {
                            hook: hook.clone(),
                            route: self.route.clone(),
                        });
                    }
                }
            }
            Outcome::Cancelled => {
                self.persist("release", id, || self.spool.release(item.lease()))
                    .await;
                tracing::warn!(hookd_event = "delivery_abandoned", delivery_id = id, hook = %hook, route = %self.route, attempt,
                    elapsed = %human(elapsed), "delivery abandoned after {}; item back to pending", human(elapsed));
            }
        }
    }

    /// Runs one spool write, retrying a little; if it still fails the lease
    /// expires and the item is delivered again (at-least-once).
    async fn persist<F, Fut>(&self, what: &str, id: i64, write: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), SpoolError>>,
    {
        for tries in 1..=RECORD_TRIES {
            match write().await {
                Ok(()) => return,
                Err(e) => {
                    let last = tries == RECORD_TRIES
                        || matches!(e, SpoolError::Closed)
                        || *self.ctx.hard_stop.borrow();
                    if last {
                        tracing::error!(delivery_id = id, hook = %self.hook, route = %self.route, error = %e,
                            "spool: {what} failed; the item will be tried again when its lease expires");
                        return;
                    }
                    tracing::warn!(delivery_id = id, hook = %self.hook, route = %self.route, error = %e,
                        "spool: {what} failed; trying again");
                    sleep(SPOOL_ERROR_PAUSE).await;
                }
            }
        }
    }

    fn observe(&self, event: DeliveryEvent) {
        if let Some(observer) = &self.ctx.observer {
            observer(event);
        }
    }
}

/// Resolves once `rx` reads `true`; never if its sender goes away first.
async fn until_set(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}
