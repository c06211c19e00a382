//! `hookd serve`: start-up, the ready state, and the way out.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::drain::{self, Drain, Ending, Switches};
use super::shutdown_hooks::ShutdownHooks;
use super::signals::{self, Request};
use super::{control, exit, Phase, PhaseCell};
use crate::config::{Config, ListenAddr};
use crate::delivery::{self, DeliveryContext, DeliveryEvent, ForwardClient, InFlight};
use crate::ingress::listeners::{self, StdListener};
use crate::ingress::routes::Ingress;
use crate::ingress::server::{self, Traffic};
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolOptions};
use crate::systemd::{listen::Inherited, listen::Named, notify};

/// How many recent delivery errors `hookd status` shows.
const LAST_ERRORS: usize = 20;

/// Prefix of the fd-store names of listeners hookd bound itself.
const STORED_PREFIX: &str = "hookd-listen-";

/// A start-up failure: its exit code and what to tell the operator.
pub struct StartError {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> StartError {
    StartError {
        code,
        message: message.into(),
    }
}

/// The fd-store name of a listener bound from `server.listen` (no `:` allowed).
fn stored_name(addr: &ListenAddr) -> String {
    let raw = addr.to_string();
    let safe: String = raw
        .chars()
        .map(|c| {
            if c == ':' || !c.is_ascii_graphic() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{STORED_PREFIX}{safe}")
}

fn to_std(s: Inherited) -> StdListener {
    match s {
        Inherited::Tcp(l) => StdListener::Tcp(l),
        Inherited::Unix(l) => StdListener::Unix(l),
    }
}

/// Chooses the listeners: a socket unit's if systemd passed any, else the
/// config's, taken back from the fd store where it kept them, bound otherwise.
fn listeners(cfg: &Config, inherited: Vec<Named>) -> Result<Vec<StdListener>, StartError> {
    let (stored, from_unit): (Vec<Named>, Vec<Named>) = inherited
        .into_iter()
        .partition(|n| n.name.starts_with(STORED_PREFIX));
    if !from_unit.is_empty() {
        for n in &stored {
            let _ = notify::remove_stored_fd(&n.name);
        }
        for n in &from_unit {
            tracing::info!(name = %n.name, "using socket from systemd");
        }
        return Ok(from_unit.into_iter().map(|n| to_std(n.socket)).collect());
    }
    let mut stored: HashMap<String, Inherited> =
        stored.into_iter().map(|n| (n.name, n.socket)).collect();
    let mut out = Vec::new();
    for text in &cfg.server.listen {
        let addr = ListenAddr::parse(text).map_err(|e| fail(exit::BAD_CONFIG, e))?;
        let name = stored_name(&addr);
        let l = match stored.remove(&name) {
            Some(s) => {
                tracing::info!(listen = %addr, "listener taken back from the fd store");
                to_std(s)
            }
            None => {
                let l = listeners::bind(&addr).map_err(|e| {
                    fail(exit::NO_LISTENER, format!("cannot listen on {addr}: {e}"))
                })?;
                // Kept by systemd across restarts, so the port never closes.
                if let Err(e) = notify::store_fd(&name, l.fd()) {
                    tracing::debug!(error = %e, "fd store unavailable");
                }
                l
            }
        };
        out.push(l);
    }
    for name in stored.keys() {
        tracing::info!(
            name,
            "dropping a stored listener no longer in server.listen"
        );
        let _ = notify::remove_stored_fd(name);
    }
    Ok(out)
}

/// Everything the running daemon shares between its tasks.
struct Daemon {
    cfg: Config,
    spool: Spool,
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    traffic: Arc<Traffic>,
    phase: Arc<PhaseCell>,
    last_errors: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// Runs the daemon to its end and returns the exit code.
pub async fn serve(cfg: Config, inherited: Vec<Named>) -> Result<u8, StartError> {
    let phase = Arc::new(PhaseCell::default());
    let mut signals = signals::listen().map_err(|e| {
        fail(
            exit::RUNTIME,
            format!("cannot install signal handlers: {e}"),
        )
    })?;
    let secrets = cfg
        .load_secrets()
        .map_err(|e| fail(exit::BAD_CONFIG, e.to_string()))?;
    let routes = Ingress::routes(&cfg, secrets).map_err(|e| fail(exit::BAD_CONFIG, e))?;
    let listeners = listeners(&cfg, inherited)?;
    if listeners.is_empty() {
        return Err(fail(
            exit::NO_LISTENER,
            "no listening socket: systemd passed none and server.listen is empty",
        ));
    }

    let metrics = Arc::new(Metrics::default());
    let observer_metrics = metrics.clone();
    let instance_id = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
    let spool_path = cfg.spool_path();
    let spool = Spool::open(SpoolOptions {
        path: spool_path.clone(),
        instance_id,
        max_batch: cfg.spool.max_batch,
        on_commit: Some(Arc::new(move |lat, n| observer_metrics.commit(lat, n))),
    })
    .map_err(|e| {
        fail(
            exit::SPOOL,
            format!("cannot open spool {}: {e}", spool_path.display()),
        )
    })?;

    let d = Arc::new(Daemon {
        cfg,
        spool,
        metrics,
        in_flight: InFlight::new(),
        traffic: Arc::new(Traffic::default()),
        phase,
        last_errors: Arc::new(Mutex::new(Vec::new())),
    });
    let switches = Switches::new();
    let ready = Arc::new(AtomicBool::new(false));

    let gauge_daemon = d.clone();
    let ingress = Arc::new(Ingress {
        routes,
        spool: d.spool.clone(),
        metrics: d.metrics.clone(),
        read_timeout: d.cfg.server.read_timeout,
        ready: ready.clone(),
        gauges: Arc::new(move |g| {
            g.in_flight = gauge_daemon
                .in_flight
                .by_hook()
                .into_iter()
                .map(|(h, n)| (h, n as u64))
                .collect();
            g.requests_in_flight = gauge_daemon.traffic.requests();
            g.drain_state = gauge_daemon.phase.get().drain_gauge();
        }),
    });
    let addrs: Vec<String> = listeners.iter().map(|l| l.describe()).collect();
    server::spawn(
        listeners,
        ingress,
        d.traffic.clone(),
        server::Switches {
            drain: switches.drain_ingress.subscribe(),
            stop_accepting: switches.stop_accepting.subscribe(),
        },
    )
    .map_err(|e| {
        fail(
            exit::NO_LISTENER,
            format!("cannot use the listening sockets: {e}"),
        )
    })?;

    let deliveries = spawn_delivery(&d, &switches);
    let control_path = d.cfg.control_socket_path();
    let control_task = match control::bind(&control_path) {
        Ok(l) => Some(tokio::spawn(control::serve(l, control_handler(d.clone())))),
        Err(e) => {
            tracing::warn!(path = %control_path.display(), error = %e, "control socket unavailable; `hookd status` will not work");
            None
        }
    };
    let background = [
        tokio::spawn(status_loop(d.clone())),
        tokio::spawn(retention_loop(d.clone())),
        tokio::spawn(watchdog_loop()),
    ];

    d.phase.set(Phase::Ready);
    ready.store(true, std::sync::atomic::Ordering::Release);
    let line = status(&d).await;
    notify::ready(&line);
    tracing::info!(hookd_event = "ready", listen = %addrs.join(" "), spool = %d.spool.path().display(), hooks = d.cfg.hooks.len(), "hookd ready");

    let cause = loop {
        match signals.recv().await {
            Some(Request::Stop(sig)) => break sig,
            Some(Request::Reload) => {
                tracing::warn!("SIGHUP: reload by hand-off is not available in this version; use systemctl restart");
            }
            None => break "signal handler gone",
        }
    };
    let ending = drain::run(
        Drain {
            grace: d.cfg.shutdown.grace,
            in_flight: &d.in_flight,
            traffic: &d.traffic,
            phase: &d.phase,
            switches: &switches,
        },
        cause,
        &mut signals,
    )
    .await;
    let (code, hooks_deadline) = match ending {
        Ending::Clean { hooks_deadline } => (exit::CLEAN, hooks_deadline),
        Ending::Forced { hooks_deadline, .. } => (exit::FORCED, hooks_deadline),
    };
    for t in background {
        t.abort();
    }
    for t in deliveries {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }

    let mut hooks = ShutdownHooks::default();
    hooks.add_configured(&d.cfg.shutdown.hooks);
    if let Some(t) = control_task {
        let path = control_path.clone();
        hooks.add(
            "control-socket",
            900,
            Duration::from_secs(1),
            move || async move {
                t.abort();
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                }
            },
        );
    }
    let spool = d.spool.clone();
    hooks.add("spool", 1000, Duration::from_secs(5), move || async move {
        spool.close().await;
        Ok(())
    });
    hooks
        .run(hooks_deadline.max(Instant::now() + Duration::from_secs(2)))
        .await;
    d.phase.set(Phase::Stopped);
    if code == exit::CLEAN {
        tracing::info!(
            hookd_event = "drain_complete",
            drain_usec = 0u64,
            "drain complete; exiting 0"
        );
    }
    Ok(code)
}

fn spawn_delivery(d: &Arc<Daemon>, switches: &Switches) -> Vec<tokio::task::JoinHandle<()>> {
    let client = ForwardClient::new();
    let metrics = d.metrics.clone();
    let last_errors = d.last_errors.clone();
    let observer: Arc<dyn Fn(DeliveryEvent) + Send + Sync> =
        Arc::new(move |ev| observe(&metrics, &last_errors, ev));
    d.cfg
        .hooks
        .iter()
        .map(|h| {
            let ctx = DeliveryContext {
                stop: switches.stop_claiming.subscribe(),
                hard_stop: switches.hard_stop.subscribe(),
                in_flight: d.in_flight.clone(),
                observer: Some(observer.clone()),
                client: client.clone(),
            };
            tokio::spawn(delivery::run_hook(
                d.spool.clone(),
                h.get_ref().clone(),
                ctx,
            ))
        })
        .collect()
}

fn observe(metrics: &Metrics, last_errors: &Mutex<Vec<serde_json::Value>>, ev: DeliveryEvent) {
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

async fn status(d: &Daemon) -> String {
    let pending: u64 = match d.spool.depth().await {
        Ok(rows) => rows
            .iter()
            .filter(|r| r.state == crate::spool::ItemState::Pending)
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

/// Keeps `STATUS=` current while serving (the drain writes its own).
async fn status_loop(d: Arc<Daemon>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if d.phase.get() != Phase::Ready {
            continue;
        }
        let line = status(&d).await;
        if line != last {
            notify::status(&line);
            last = line;
        }
    }
}

/// Purges `done` items older than `spool.retain_done`, at start and hourly.
async fn retention_loop(d: Arc<Daemon>) {
    loop {
        match d.spool.purge_done(d.cfg.spool.retain_done).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                hookd_event = "retention_purge",
                purged = n,
                "purged {n} done items"
            ),
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// `WATCHDOG=1` at half the interval systemd asked for, drain included.
async fn watchdog_loop() {
    let Some(every) = notify::watchdog_interval() else {
        return;
    };
    let mut tick = tokio::time::interval(every / 2);
    loop {
        tick.tick().await;
        notify::watchdog();
    }
}

fn control_handler(d: Arc<Daemon>) -> control::Handler {
    Arc::new(move |cmd: String| {
        let d = d.clone();
        Box::pin(async move {
            match cmd.as_str() {
                "status" => status_json(&d).await,
                "reload" => {
                    serde_json::json!({"ok": false, "error": "reload by hand-off is not available in this version; use systemctl restart"})
                }
                other => {
                    serde_json::json!({"ok": false, "error": format!("unknown command {other:?}")})
                }
            }
        })
    })
}

async fn status_json(d: &Daemon) -> serde_json::Value {
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
                .filter(|r| {
                    r.state == crate::spool::ItemState::Pending
                        && !configured.contains(&r.hook.as_str())
                })
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
