//! The drain: what happens between SIGTERM and exit.
//!
//! One grace window, then at most one extension of the same length, then the
//! remaining deliveries are abandoned (their leases released: nothing lost).
//! Ingress keeps spooling the whole time; systemd's stop timer is kept in step
//! with `EXTEND_TIMEOUT_USEC` so it never kills us inside our own window.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::signals::Request;
use super::{Phase, PhaseCell};
use crate::delivery::InFlight;
use crate::ingress::server::Traffic;
use crate::systemd::notify;

/// Time beyond the window we ask systemd for: closing the spool, the last
/// connections and the shutdown hooks of a forced exit fit in it.
pub(crate) const MARGIN: Duration = Duration::from_secs(10);

/// How long connections accepted at the last moment get to close, past `close_within`.
const CLOSE_SLACK: Duration = Duration::from_secs(1);

/// How long abandoned deliveries get to release their leases.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The switches that lifecycle turns on ingress and delivery.
pub(crate) struct Switches {
    pub stop_claiming: watch::Sender<bool>,
    pub drain_ingress: watch::Sender<bool>,
    /// No delivery runs any more: open connections get `close_within` more.
    pub deliveries_done: watch::Sender<bool>,
    pub stop_accepting: watch::Sender<bool>,
    pub hard_stop: watch::Sender<bool>,
}

impl Switches {
    pub(crate) fn new() -> Switches {
        Switches {
            stop_claiming: watch::channel(false).0,
            drain_ingress: watch::channel(false).0,
            deliveries_done: watch::channel(false).0,
            stop_accepting: watch::channel(false).0,
            hard_stop: watch::channel(false).0,
        }
    }
}

impl Default for Switches {
    fn default() -> Self {
        Switches::new()
    }
}

/// Why the drain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// SIGTERM/SIGINT: the unit is stopping; systemd hears every step.
    Stop(&'static str),
    /// A successor took over: it is the unit's main process now, so we stay
    /// silent towards systemd (a STOPPING=1 from us would stop the unit).
    HandOff,
}

/// What the drain watches.
pub(crate) struct Drain<'a> {
    pub cause: Cause,
    pub grace: Duration,
    /// How long connections may stay once deliveries are done (the write
    /// timeout: ingress closes every one still open after it).
    pub close_within: Duration,
    pub in_flight: &'a Arc<InFlight>,
    pub traffic: &'a Arc<Traffic>,
    pub phase: &'a PhaseCell,
    pub switches: &'a Switches,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Every delivery finished; the shutdown hooks may use the rest of the window.
    Clean { hooks_deadline: Instant },
    /// Deliveries were abandoned at the end of the extension.
    Forced {
        abandoned: usize,
        hooks_deadline: Instant,
    },
}

fn status_line(phase: Phase, in_flight: &InFlight, traffic: &Traffic, left: Duration) -> String {
    format!(
        "{}: {} deliveries, {} requests in flight, {}s left",
        phase.as_str(),
        in_flight.total(),
        traffic.requests(),
        left.as_secs()
    )
}

/// Runs the drain to its end. `signals` keeps being read so a second
/// SIGTERM is logged and otherwise ignored.
pub(crate) async fn run(d: Drain<'_>, signals: &mut mpsc::UnboundedReceiver<Request>) -> Ending {
    let started = Instant::now();
    let to_systemd = matches!(d.cause, Cause::Stop(_));
    let cause = match d.cause {
        Cause::Stop(sig) => sig,
        Cause::HandOff => "hand-off",
    };
    if to_systemd {
        d.phase.set(Phase::Draining);
        let line = status_line(Phase::Draining, d.in_flight, d.traffic, d.grace);
        notify::stopping(d.grace + MARGIN, &line);
    } else {
        // The successor accepts from here on; we only finish what we hold.
        d.phase.set(Phase::HandingOff);
        d.switches.stop_accepting.send_replace(true);
    }
    tracing::info!(
        hookd_event = "drain_start",
        drain_deliveries = d.in_flight.total() as u64,
        drain_requests = d.traffic.requests(),
        grace_usec = d.grace.as_micros() as u64,
        cause,
        "drain started ({cause}): {} deliveries and {} requests in flight, grace {}",
        d.in_flight.total(),
        d.traffic.requests(),
        humantime::format_duration(d.grace)
    );
    d.switches.stop_claiming.send_replace(true);
    d.switches.drain_ingress.send_replace(true);

    let first_end = started + d.grace;
    if !wait_idle(&d, first_end, signals).await {
        if to_systemd {
            d.phase.set(Phase::Extended);
            let line = status_line(Phase::Extended, d.in_flight, d.traffic, d.grace);
            notify::extend_timeout(d.grace + MARGIN, &line);
        }
        let left = d.in_flight.entries();
        tracing::warn!(
            hookd_event = "drain_timeout",
            drain_deliveries = left.len() as u64,
            delivery_ids = %left.iter().map(|r| r.id.to_string()).collect::<Vec<_>>().join(","),
            grace_usec = d.grace.as_micros() as u64,
            "grace window over with {} deliveries still running; extending once by {}",
            left.len(),
            humantime::format_duration(d.grace)
        );
        if !wait_idle(&d, first_end + d.grace, signals).await {
            let abandoned = d.in_flight.total();
            d.switches.hard_stop.send_replace(true);
            let _ = tokio::time::timeout(RELEASE_WAIT, d.in_flight.wait_idle()).await;
            tracing::error!(
                hookd_event = "drain_abandoned",
                drain_deliveries = abandoned as u64,
                drain_usec = started.elapsed().as_micros() as u64,
                "extended window over: abandoned {abandoned} deliveries; their items are pending again and will be delivered after the next start"
            );
            finish_connections(&d).await;
            return Ending::Forced {
                abandoned,
                hooks_deadline: Instant::now() + MARGIN / 2,
            };
        }
    }
    let extended = started.elapsed() > d.grace;
    let window_end = first_end + if extended { d.grace } else { Duration::ZERO };
    finish_connections(&d).await;
    Ending::Clean {
        hooks_deadline: window_end.max(Instant::now() + MARGIN / 2),
    }
}

/// Once deliveries are done, only connections keep us: ingress closes each
/// one still open `close_within` from now, whatever its client does. Until
/// then (or until none is open) we keep accepting and spooling, so the stop
/// opens no gap; then we stop accepting.
async fn finish_connections(d: &Drain<'_>) {
    d.switches.deliveries_done.send_replace(true);
    let open = d.traffic.connections();
    if open > 0 {
        tracing::info!(
            hookd_event = "drain_connections",
            connections = open,
            "deliveries done; closing the {open} open connections within {} (server.write_timeout)",
            humantime::format_duration(d.close_within)
        );
    }
    let _ = tokio::time::timeout(d.close_within, d.traffic.wait_no_connections()).await;
    d.switches.stop_accepting.send_replace(true);
    // Ingress has closed them by now; this covers the last ones accepted.
    if tokio::time::timeout(CLOSE_SLACK, d.traffic.wait_no_connections())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = d.traffic.connections(),
            "connections still open at exit"
        );
    }
}

/// Waits until no delivery runs or `until`; true when idle.
async fn wait_idle(
    d: &Drain<'_>,
    until: Instant,
    signals: &mut mpsc::UnboundedReceiver<Request>,
) -> bool {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if d.in_flight.total() == 0 {
            return true;
        }
        tokio::select! {
            _ = d.in_flight.wait_idle() => return true,
            _ = tokio::time::sleep_until(until) => return d.in_flight.total() == 0,
            _ = tick.tick(), if matches!(d.cause, Cause::Stop(_)) => {
                let left = until.saturating_duration_since(Instant::now());
                notify::status(&status_line(d.phase.get(), d.in_flight, d.traffic, left));
            }
            Some(req) = signals.recv() => match req {
                Request::Stop(sig) => tracing::info!(signal = sig, "already draining; {sig} changes nothing"),
                Request::Reload => tracing::warn!("reload ignored: this instance is draining"),
            },
        }
    }
}
