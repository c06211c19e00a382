//! Delivery: per-hook workers that claim spooled items and run their action
//! (`forward` or `exec`), with retries, backoff and a tracked in-flight set.
//!
//! [`run_route`] is one (hook, route)'s dispatcher; it builds the route's
//! [`Action`] once and runs it for each attempt; [`retry`] decides what a
//! failure leads to.

mod action;
pub(crate) mod args;
mod dispatch;
mod exec;
mod forward;
mod inflight;
pub(crate) mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::replies::Replies;

pub(crate) use action::Action;
pub(crate) use dispatch::run_route;
pub(crate) use forward::ForwardClient;
pub(crate) use inflight::InFlight;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The action succeeded: the item is done.
    Delivered,
    /// The action failed, with a one-line reason; the attempt counts.
    Failed(String),
    /// The action cannot succeed for this item at any attempt (a placeholder's
    /// value is missing or too long): the item is dead at once, with the reason.
    Rejected(String),
    /// The caller gave up on the attempt (hard stop); it does not count.
    Cancelled,
}

/// What delivery reports to metrics, without depending on the metrics module.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DeliveryEvent {
    /// An attempt succeeded after `secs` seconds.
    Delivered {
        hook: String,
        route: String,
        secs: f64,
    },
    /// An attempt failed; followed by `Retried` or `Dead` for the same item.
    Failed {
        hook: String,
        route: String,
        id: i64,
        error: String,
    },
    /// The failed item is scheduled for another attempt.
    Retried { hook: String, route: String },
    /// The failed item used up its attempts.
    Dead { hook: String, route: String },
}

/// Receives every [`DeliveryEvent`]; called inline, so keep it cheap.
pub(crate) type DeliveryObserver = Arc<dyn Fn(DeliveryEvent) + Send + Sync>;

/// What every hook's dispatcher shares with the rest of the process.
#[derive(Clone)]
pub(crate) struct DeliveryContext {
    /// `true`: claim nothing more; running deliveries go on.
    pub stop: watch::Receiver<bool>,
    /// `true`: give up running deliveries now and release their items to
    /// `pending` (the attempt does not count). Implies `stop`.
    pub hard_stop: watch::Receiver<bool>,
    /// Where running deliveries are counted.
    pub in_flight: Arc<InFlight>,
    pub observer: Option<DeliveryObserver>,
    /// The process's one forward client.
    pub client: ForwardClient,
    /// Environment variables `exec` children must not see (secret sources).
    pub hidden_env: Arc<Vec<String>>,
    /// Where first-attempt results go for hooks with `respond.wait`.
    pub replies: Arc<Replies>,
}

/// A duration for people: milliseconds under 10 s, whole seconds above.
pub(crate) fn human(d: Duration) -> String {
    let rounded = if d < Duration::from_secs(10) {
        Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
    } else {
        Duration::from_secs(d.as_secs())
    };
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_micros(1_234_567)), "1s 234ms");
        assert_eq!(human(Duration::from_millis(65_432)), "1m 5s");
    }
}
