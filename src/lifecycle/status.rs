//! What `hookd status`, `STATUS=` and the metrics observer see.

use std::sync::Mutex;
use std::time::Duration;

use super::serve::Daemon;
use crate::delivery::DeliveryEvent;
use crate::metrics::Metrics;
use crate::spool::ItemState;

/// How many recent delivery errors `hookd status` shows.
pub const LAST_ERRORS: usize = 20;

/// Feeds metrics and the recent-errors list from delivery's events.
pub fn observe(metrics: &Metrics, last_errors: &Mutex<Vec<serde_json::Value>>, ev: DeliveryEvent) {
    match ev {
        DeliveryEvent::Delivered { hook, secs } => {
            metrics.delivered(&hook, Duration::from_secs_f64(secs))
        }
        DeliveryEvent::Failed { hook, id, error } => {
            metrics.failed(&hook);
            let mut errs = last_errors.lock().unwrap_or_else(|p| p.into_inner());
            if errs.len() == LAST_ERRORS {
                errs.remove(0);
            }
            errs.push(serde_json::json!({
                "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                "hook": hook, "delivery_id": id, "error": error,
            }));
        }
        DeliveryEvent::Retried { hook } => metrics.retried(&hook),
        DeliveryEvent::Dead { hook } => metrics.dead(&hook),
    }
}

/// The one-line summary for `STATUS=`.
pub async fn status(d: &Daemon) -> String {
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
pub async fn status_json(d: &Daemon) -> serde_json::Value {
    let configured: Vec<&str> = d
        .cfg
        .hooks
        .iter()
        .map(|h| h.get_ref().name.as_str())
        .collect();
    let (depth, orphaned) = match d.spool.depth().await {
        Ok(rows) => {
            let orphaned: u64 = rows
                .iter()
                .filter(|r| r.state == ItemState::Pending && !configured.contains(&r.hook.as_str()))
                .map(|r| r.count)
                .sum();
            let depth: Vec<_> = rows
                .iter()
                .map(|r| serde_json::json!({"hook": r.hook, "state": r.state.as_str(), "count": r.count}))
                .collect();
            (serde_json::Value::Array(depth), orphaned)
        }
        Err(e) => (serde_json::json!({"error": e.to_string()}), 0),
    };
    let errors = d.last_errors.lock().map(|v| v.clone()).unwrap_or_default();
    serde_json::json!({
        "ok": true,
        "pid": std::process::id(),
        "state": d.phase.get().as_str(),
        "instance": d.spool.instance_id(),
        "spool": d.spool.path().display().to_string(),
        "in_flight": d.in_flight.by_hook().into_iter().map(|(h, n)| serde_json::json!({"hook": h, "count": n})).collect::<Vec<_>>(),
        "requests_in_flight": d.traffic.requests(),
        "depth": depth,
        "orphaned_pending": orphaned,
        "last_errors": errors,
    })
}
