//! What `hookd status`, `STATUS=` and the metrics observer see.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::control::{DeliveryError, Depth, DepthCount, HookCount, StatusReport};
use super::serve::Daemon;
use crate::delivery::DeliveryEvent;
use crate::metrics::Metrics;
use crate::spool::ItemState;

/// How many recent delivery errors `hookd status` shows.
pub(crate) const LAST_ERRORS: usize = 20;

/// The last [`LAST_ERRORS`] failed attempts, oldest first.
#[derive(Debug, Default)]
pub(crate) struct RecentErrors(Mutex<VecDeque<DeliveryError>>);

impl RecentErrors {
    /// Adds one, forgetting the oldest when full.
    pub(crate) fn push(&self, e: DeliveryError) {
        // A panic elsewhere while holding the lock cannot leave the list
        // half-changed, so a poisoned lock is still good to use.
        let mut errs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if errs.len() == LAST_ERRORS {
            errs.pop_front();
        }
        errs.push_back(e);
    }

    pub(crate) fn snapshot(&self) -> Vec<DeliveryError> {
        let errs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        errs.iter().cloned().collect()
    }
}

/// Feeds metrics and the recent-errors list from delivery's events.
pub(crate) fn observe_delivery(metrics: &Metrics, recent: &RecentErrors, ev: DeliveryEvent) {
    match ev {
        DeliveryEvent::Delivered { hook, route, secs } => {
            metrics.delivered(&hook, &route, Duration::from_secs_f64(secs))
        }
        DeliveryEvent::Failed {
            hook,
            route,
            id,
            error,
        } => {
            metrics.failed(&hook, &route);
            recent.push(DeliveryError {
                at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                delivery_id: id,
                error,
                hook,
                route,
            });
        }
        DeliveryEvent::Retried { hook, route } => metrics.retried(&hook, &route),
        DeliveryEvent::Dead { hook, route } => metrics.dead(&hook, &route),
    }
}

/// The one-line summary for `READY=`/`STATUS=`.
pub(crate) async fn summary_line(d: &Daemon) -> String {
    let pending: u64 = match d.spool.depth().await {
        Ok(rows) => rows
            .iter()
            .filter(|r| r.state == ItemState::Pending)
            .map(|r| r.count)
            .sum(),
        Err(_) => 0,
    };
    format!(
        "{}: {} deliveries in flight, {} pending",
        d.phase.get().as_str(),
        d.in_flight.total(),
        pending
    )
}

/// The answer to the control socket's `status`.
pub(crate) async fn report(d: &Daemon) -> StatusReport {
    // Pending deliveries no dispatcher claims: of a hook or route no longer
    // configured, or a plain hook's items once it has routes and none is
    // named `default`.
    let delivered = |hook: &str, route: Option<&str>| {
        d.cfg.hooks.iter().map(|h| h.get_ref()).any(|h| {
            h.name == hook
                && h.route(route.unwrap_or(crate::spool::DEFAULT_ROUTE))
                    .is_some()
        })
    };
    let (depth, orphaned_pending) = match d.spool.depth().await {
        Ok(rows) => {
            let orphaned: u64 = rows
                .iter()
                .filter(|r| {
                    r.state == ItemState::Pending && !delivered(&r.hook, r.route.as_deref())
                })
                .map(|r| r.count)
                .sum();
            let depth = rows
                .into_iter()
                .map(|r| DepthCount {
                    hook: r.hook,
                    state: r.state.as_str().to_string(),
                    count: r.count,
                    route: r
                        .route
                        .unwrap_or_else(|| crate::spool::DEFAULT_ROUTE.to_string()),
                })
                .collect();
            (Depth::Rows(depth), orphaned)
        }
        Err(e) => (
            Depth::Unreadable {
                error: e.to_string(),
            },
            0,
        ),
    };
    StatusReport {
        pid: std::process::id(),
        state: d.phase.get().as_str().to_string(),
        instance: d.spool.instance_id().to_string(),
        spool: d.spool.describe().to_string(),
        node: d.spool.node().map(str::to_string),
        in_flight: d
            .in_flight
            .by_hook()
            .into_iter()
            .map(|(hook, n)| HookCount {
                hook,
                count: n as u64,
            })
            .collect(),
        requests_in_flight: d.traffic.requests(),
        depth,
        orphaned_pending,
        last_errors: d.last_errors.snapshot(),
        tls_cert_expiry: d.metrics.tls_cert_expiry(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(id: i64) -> DeliveryError {
        DeliveryError {
            at: "2026-01-01T00:00:00Z".into(),
            delivery_id: id,
            error: "HTTP 502".into(),
            hook: "deploy".into(),
            route: "default".into(),
        }
    }

    #[test]
    fn recent_errors_keep_the_newest_oldest_first() {
        let recent = RecentErrors::default();
        for id in 0..(LAST_ERRORS as i64 + 5) {
            recent.push(failed(id));
        }
        let ids: Vec<i64> = recent.snapshot().iter().map(|e| e.delivery_id).collect();
        assert_eq!(ids, (5..LAST_ERRORS as i64 + 5).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_attempt_is_counted_and_listed() {
        let metrics = Metrics::default();
        let recent = RecentErrors::default();
        observe_delivery(
            &metrics,
            &recent,
            DeliveryEvent::Failed {
                hook: "deploy".into(),
                route: "default".into(),
                id: 7,
                error: "connection refused".into(),
            },
        );
        let errs = recent.snapshot();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (
                errs[0].hook.as_str(),
                errs[0].delivery_id,
                errs[0].error.as_str()
            ),
            ("deploy", 7, "connection refused")
        );
    }
}
