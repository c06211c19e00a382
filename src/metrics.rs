//! Counters and histograms, rendered in the Prometheus text format.
//!
//! Hand-written because the set is small and fixed; names are `hookd_*`.
//! Label sets are few (hooks × reasons), so a mutex-guarded map per family
//! costs less than it would to pull in a registry crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A counter family keyed by label values.
#[derive(Default)]
struct Family(Mutex<BTreeMap<Vec<String>, u64>>);

impl Family {
    fn inc(&self, labels: &[&str]) {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_insert(0) += 1;
    }

    fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A histogram with fixed upper bounds.
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in micro-units, so it fits an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        for (b, slot) in self.bounds.iter().zip(&self.buckets) {
            if v <= *b {
                slot.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, slot) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                slot.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Why a request was turned away; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    Malformed,
    Unauthorized,
    Forbidden,
    UnknownHook,
    Method,
    LengthRequired,
    TooLarge,
    UnsupportedMedia,
    Timeout,
    Disabled,
    SpoolUnavailable,
    IpNotAllowed,
    Busy,
}

impl Reject {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Unauthorized => "unauthorized",
            Reject::Forbidden => "forbidden",
            Reject::UnknownHook => "unknown_hook",
            Reject::Method => "method",
            Reject::LengthRequired => "length_required",
            Reject::TooLarge => "too_large",
            Reject::UnsupportedMedia => "unsupported_media",
            Reject::Timeout => "timeout",
            Reject::Disabled => "disabled",
            Reject::SpoolUnavailable => "spool_unavailable",
            Reject::IpNotAllowed => "ip_not_allowed",
            Reject::Busy => "busy",
        }
    }
}

/// Values read at scrape time from their owners.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// (hook, route, state, count)
    pub depth: Vec<(String, String, String, u64)>,
    /// (hook, running deliveries)
    pub in_flight: Vec<(String, u64)>,
    pub requests_in_flight: u64,
    /// 0 serving, 1 draining, 2 draining in the extension, 3 handing off
    pub drain_state: u64,
}

pub(crate) struct Metrics {
    received: Family,
    spooled: Family,
    duplicates: Family,
    revived: Family,
    replays: Family,
    handshakes: Family,
    filtered: Family,
    rejected: Family,
    delivered: Family,
    failed: Family,
    retried: Family,
    dead: Family,
    commit_latency: Histogram,
    batch_size: Histogram,
    delivery_seconds: Histogram,
    /// The TLS leaf's notAfter (unix seconds), when TLS is configured.
    tls_cert_expiry: std::sync::OnceLock<i64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            received: Family::default(),
            spooled: Family::default(),
            duplicates: Family::default(),
            revived: Family::default(),
            replays: Family::default(),
            handshakes: Family::default(),
            filtered: Family::default(),
            rejected: Family::default(),
            delivered: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            commit_latency: Histogram::new(LATENCY_BOUNDS),
            batch_size: Histogram::new(BATCH_BOUNDS),
            delivery_seconds: Histogram::new(&[0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 600.0]),
            tls_cert_expiry: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    pub(crate) fn received(&self, hook: &str) {
        self.received.inc(&[hook]);
    }
    pub(crate) fn spooled(&self, hook: &str) {
        self.spooled.inc(&[hook]);
    }
    pub(crate) fn duplicate(&self, hook: &str) {
        self.duplicates.inc(&[hook]);
    }
    /// A redelivery put a dead item back to pending.
    pub(crate) fn revived(&self, hook: &str) {
        self.revived.inc(&[hook]);
    }
    /// A replay (counted among the duplicates too): the same signed request again.
    pub(crate) fn replay(&self, hook: &str) {
        self.replays.inc(&[hook]);
    }
    /// A provider handshake answered with its challenge; `kind` is a fixed label.
    pub(crate) fn handshake(&self, hook: &str, kind: &'static str) {
        self.handshakes.inc(&[hook, kind]);
    }
    /// A request the hook's `when` did not match (kept or not).
    pub(crate) fn filtered(&self, hook: &str) {
        self.filtered.inc(&[hook]);
    }
    /// `hook` is empty when the request named none we know.
    pub(crate) fn rejected(&self, hook: &str, why: Reject) {
        self.rejected.inc(&[hook, why.label()]);
    }
    /// The delivery counters carry the route (`default` for a plain hook).
    pub(crate) fn delivered(&self, hook: &str, route: &str, took: Duration) {
        self.delivered.inc(&[hook, route]);
        self.delivery_seconds.observe(took.as_secs_f64());
    }
    pub(crate) fn failed(&self, hook: &str, route: &str) {
        self.failed.inc(&[hook, route]);
    }
    pub(crate) fn retried(&self, hook: &str, route: &str) {
        self.retried.inc(&[hook, route]);
    }
    pub(crate) fn dead(&self, hook: &str, route: &str) {
        self.dead.inc(&[hook, route]);
    }
    /// One group commit: its latency and how many commands it carried.
    pub(crate) fn commit(&self, latency: Duration, batch: usize) {
        self.commit_latency.observe(latency.as_secs_f64());
        self.batch_size.observe(batch as f64);
    }

    /// The certificate is loaded once per process (a renewal is a reload, a
    /// new process), so this is set at most once.
    /// The served certificate's notAfter (unix seconds), when TLS is on.
    pub(crate) fn tls_cert_expiry(&self) -> Option<i64> {
        self.tls_cert_expiry.get().copied()
    }

    pub(crate) fn set_tls_cert_expiry(&self, not_after: i64) {
        let _ = self.tls_cert_expiry.set(not_after);
    }

    /// The whole exposition, counters first, then `gauges`, then histograms.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &[&str], &Family); 12] = [
            (
                "hookd_received_total",
                "Webhook requests received for a known hook.",
                &["hook"],
                &self.received,
            ),
            (
                "hookd_spooled_total",
                "Webhooks made durable in the spool.",
                &["hook"],
                &self.spooled,
            ),
            (
                "hookd_duplicates_total",
                "Requests answered with an earlier id (same delivery id).",
                &["hook"],
                &self.duplicates,
            ),
            (
                "hookd_revived_total",
                "Dead items put back to pending by a redelivery of the same delivery id.",
                &["hook"],
                &self.revived,
            ),
            (
                "hookd_replays_total",
                "Requests with the same signed content as one accepted within its replay window.",
                &["hook"],
                &self.replays,
            ),
            (
                "hookd_handshakes_total",
                "Provider handshakes answered (not spooled), by kind.",
                &["hook", "kind"],
                &self.handshakes,
            ),
            (
                "hookd_filtered_total",
                "Requests the hook's `when` rules did not match: answered, never delivered.",
                &["hook"],
                &self.filtered,
            ),
            (
                "hookd_rejected_total",
                "Requests turned away, by reason.",
                &["hook", "reason"],
                &self.rejected,
            ),
            (
                "hookd_delivered_total",
                "Deliveries that succeeded.",
                &["hook", "route"],
                &self.delivered,
            ),
            (
                "hookd_failed_total",
                "Delivery attempts that failed.",
                &["hook", "route"],
                &self.failed,
            ),
            (
                "hookd_retried_total",
                "Failed attempts scheduled for a retry.",
                &["hook", "route"],
                &self.retried,
            ),
            (
                "hookd_dead_total",
                "Items given up after their last attempt.",
                &["hook", "route"],
                &self.dead,
            ),
        ];
        for (name, help, labels, fam) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (values, v) in fam.snapshot() {
                let _ = writeln!(out, "{name}{{{}}} {v}", label_pairs(labels, &values));
            }
        }
        let _ = writeln!(out, "# HELP hookd_spool_depth Deliveries in the spool by hook, route and state (a filtered request's route is \"default\").\n# TYPE hookd_spool_depth gauge");
        for (hook, route, state, n) in &gauges.depth {
            let _ = writeln!(
                out,
                "hookd_spool_depth{{{}}} {n}",
                label_pairs(
                    &["hook", "route", "state"],
                    &[hook.clone(), route.clone(), state.clone()]
                )
            );
        }
        let _ = writeln!(
            out,
            "# HELP hookd_in_flight Deliveries running now.\n# TYPE hookd_in_flight gauge"
        );
        for (hook, n) in &gauges.in_flight {
            let _ = writeln!(
                out,
                "hookd_in_flight{{{}}} {n}",
                label_pairs(&["hook"], std::slice::from_ref(hook))
            );
        }
        let _ = writeln!(
            out,
            "# HELP hookd_requests_in_flight HTTP requests being handled now.\n# TYPE hookd_requests_in_flight gauge\nhookd_requests_in_flight {}",
            gauges.requests_in_flight
        );
        let _ = writeln!(
            out,
            "# HELP hookd_drain_state 0 serving, 1 draining, 2 draining in the extension, 3 handing off.\n# TYPE hookd_drain_state gauge\nhookd_drain_state {}",
            gauges.drain_state
        );
        if let Some(t) = self.tls_cert_expiry.get() {
            let _ = writeln!(
                out,
                "# HELP hookd_tls_cert_expiry_timestamp_seconds notAfter of the TLS certificate being served (unix time).\n# TYPE hookd_tls_cert_expiry_timestamp_seconds gauge\nhookd_tls_cert_expiry_timestamp_seconds {t}"
            );
        }
        self.commit_latency.render(
            &mut out,
            "hookd_commit_latency_seconds",
            "Group commit latency, begin to fsync done.",
        );
        self.batch_size.render(
            &mut out,
            "hookd_commit_batch_size",
            "Commands carried by one group commit.",
        );
        self.delivery_seconds.render(
            &mut out,
            "hookd_delivery_duration_seconds",
            "Duration of successful deliveries.",
        );
        out
    }
}

fn label_pairs(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.received("gh");
        m.received("gh");
        m.rejected("gh", Reject::Forbidden);
        m.commit(Duration::from_millis(3), 7);
        let text = m.render(&Gauges {
            depth: vec![("gh".into(), "default".into(), "pending".into(), 5)],
            ..Gauges::default()
        });
        assert!(
            text.contains("hookd_received_total{hook=\"gh\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("hookd_rejected_total{hook=\"gh\",reason=\"forbidden\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hookd_spool_depth{hook=\"gh\",route=\"default\",state=\"pending\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("hookd_commit_latency_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hookd_commit_latency_seconds_bucket{le=\"0.002\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("hookd_commit_batch_size_bucket{le=\"8\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("hookd_commit_batch_size_count 1\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
