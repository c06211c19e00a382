//! `hookd serve`: start-up, the ready state, reloads, and the way out.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::drain::{self, Cause, Drain, Ending, Switches};
use super::handoff::{self, PassedSocket, Relaunch};
use super::shutdown_hooks::ShutdownHooks;
use super::signals::{self, Request};
use super::{control, exit, sockets, status, Phase, PhaseCell};
use crate::config::Config;
use crate::delivery::{self, DeliveryContext, DeliveryEvent, ForwardClient, InFlight};
use crate::ingress::routes::Ingress;
use crate::ingress::server::{self, Traffic};
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolOptions};
use crate::systemd::{listen::Named, notify};

/// How long a successor has to open the spool and report ready.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// A start-up failure: its exit code and what to tell the operator.
#[derive(Debug)]
pub struct StartError {
    pub code: u8,
    pub message: String,
}

impl StartError {
    pub fn new(code: u8, message: impl Into<String>) -> StartError {
        StartError {
            code,
            message: message.into(),
        }
    }
}

/// How this process came to be.
pub struct Origin {
    /// Sockets from systemd or from a predecessor.
    pub inherited: Vec<Named>,
    /// Set when a predecessor started us: where to report ready.
    pub handoff: Option<OwnedFd>,
    /// How to start a successor on reload.
    pub relaunch: Relaunch,
}

/// Everything the running daemon shares between its tasks.
pub struct Daemon {
    pub cfg: Config,
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub in_flight: Arc<InFlight>,
    pub traffic: Arc<Traffic>,
    pub phase: Arc<PhaseCell>,
    pub last_errors: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// A reload asked over the control socket, with where to send the outcome.
type ReloadAsk = oneshot::Sender<serde_json::Value>;

/// Runs the daemon to its end and returns the exit code. A start-up failure
/// is also reported to a waiting predecessor.
pub async fn serve(cfg: Config, mut origin: Origin) -> Result<u8, StartError> {
    let handoff_pipe = origin.handoff.take();
    match start(cfg, origin, handoff_pipe.is_some()).await {
        Ok(running) => Ok(run(running, handoff_pipe).await),
        Err(e) => {
            if let Some(pipe) = handoff_pipe {
                handoff::report(pipe, Err(&e.message));
            }
            Err(e)
        }
    }
}

/// A daemon whose listeners, spool and tasks are up, not yet announced.
struct Running {
    d: Arc<Daemon>,
    switches: Switches,
    signals: mpsc::UnboundedReceiver<Request>,
    reloads: mpsc::Receiver<ReloadAsk>,
    passed: Vec<PassedSocket>,
    relaunch: Relaunch,
    ready: Arc<AtomicBool>,
    addrs: Vec<String>,
    control: Option<control::Bound>,
    control_answering: Arc<tokio::sync::RwLock<()>>,
    control_task: Option<tokio::task::JoinHandle<()>>,
    deliveries: Vec<tokio::task::JoinHandle<()>>,
}

async fn start(cfg: Config, origin: Origin, successor: bool) -> Result<Running, StartError> {
    let signals = signals::listen().map_err(|e| {
        StartError::new(
            exit::RUNTIME,
            format!("cannot install signal handlers: {e}"),
        )
    })?;
    let routes = Ingress::routes(&cfg).map_err(|e| StartError::new(exit::BAD_CONFIG, e))?;
    let tls = crate::ingress::tls::Tls::load(cfg.server.tls.as_ref())
        .map_err(|e| StartError::new(exit::BAD_CONFIG, format!("{}: {e}", cfg.source.display())))?;
    let chosen = sockets::choose(&cfg, origin.inherited)?;
    if chosen.is_empty() {
        return Err(StartError::new(
            exit::NO_LISTENER,
            "no listening socket: systemd passed none and server.listen is empty",
        ));
    }
    let passed = chosen
        .iter()
        .map(|c| c.to_pass())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            StartError::new(
                exit::NO_LISTENER,
                format!("cannot duplicate a listening socket: {e}"),
            )
        })?;

    let metrics = Arc::new(Metrics::default());
    if let Some(t) = &tls {
        metrics.set_tls_cert_expiry(t.not_after);
    }
    let observer_metrics = metrics.clone();
    let spool_path = cfg.spool_path();
    let spool = Spool::open(SpoolOptions {
        path: spool_path.clone(),
        instance_id: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
        max_batch: cfg.spool.max_batch,
        on_commit: Some(Arc::new(move |lat, n| observer_metrics.commit(lat, n))),
    })
    .map_err(|e| {
        StartError::new(
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
        phase: Arc::new(PhaseCell::default()),
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
    let addrs: Vec<String> = chosen.iter().map(|c| c.listener.describe()).collect();
    server::spawn(
        chosen
            .into_iter()
            .map(|c| (c.listener, if c.tls { tls.clone() } else { None }))
            .collect(),
        ingress,
        d.traffic.clone(),
        server::Switches {
            drain: switches.drain_ingress.subscribe(),
            deliveries_done: switches.deliveries_done.subscribe(),
            stop_accepting: switches.stop_accepting.subscribe(),
        },
        conn_limits(&d.cfg),
    )
    .map_err(|e| {
        StartError::new(
            exit::NO_LISTENER,
            format!("cannot use the listening sockets: {e}"),
        )
    })?;

    // A successor takes the control socket's path over from its predecessor.
    let control_path = d.cfg.control_socket_path();
    let (reload_tx, reloads) = mpsc::channel(4);
    let control_answering = Arc::new(tokio::sync::RwLock::new(()));
    let (control, control_task) = match control::bind(&control_path, successor) {
        Ok((bound, listener)) => {
            let task = tokio::spawn(control::serve(
                listener,
                control_handler(d.clone(), reload_tx),
                control_answering.clone(),
            ));
            (Some(bound), Some(task))
        }
        Err(e) => {
            tracing::warn!(path = %control_path.display(), error = %e, "control socket unavailable; `hookd status` and `hookd reload` will not work");
            (None, None)
        }
    };
    let deliveries = spawn_delivery(&d, &switches);
    Ok(Running {
        d,
        switches,
        signals,
        reloads,
        passed,
        relaunch: origin.relaunch,
        ready,
        addrs,
        control,
        control_answering,
        control_task,
        deliveries,
    })
}

async fn run(mut r: Running, handoff_pipe: Option<OwnedFd>) -> u8 {
    let d = r.d.clone();
    let background = [
        tokio::spawn(status_loop(d.clone())),
        tokio::spawn(retention_loop(d.clone())),
        tokio::spawn(watchdog_loop()),
    ];
    d.phase.set(Phase::Ready);
    r.ready.store(true, Ordering::Release);
    let line = status::status(&d).await;
    match handoff_pipe {
        Some(pipe) => {
            // The unit's main process is us from now on; systemd must have
            // processed that before the predecessor steps aside.
            notify::ready_as_main_pid(&line);
            if let Err(e) = notify::barrier(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "systemd did not confirm MAINPID; handing over anyway");
            }
            handoff::report(pipe, Ok(()));
            tracing::info!(hookd_event = "handoff_ready", listen = %r.addrs.join(" "), "took over from the previous instance");
        }
        None => notify::ready(&line),
    }
    tracing::info!(hookd_event = "ready", listen = %r.addrs.join(" "), spool = %d.spool.path().display(), hooks = d.cfg.hooks.len(), "hookd ready");

    let cause = loop {
        let ask = tokio::select! {
            req = r.signals.recv() => match req {
                Some(Request::Stop(sig)) => break Cause::Stop(sig),
                Some(Request::Reload) => None,
                None => break Cause::Stop("signal handler gone"),
            },
            Some(ask) = r.reloads.recv() => Some(ask),
        };
        match reload(&r).await {
            Ok(pid) => {
                if let Some(ask) = ask {
                    let _ = ask.send(serde_json::json!({"ok": true, "message": format!("handed off to pid {pid}")}));
                }
                break Cause::HandOff;
            }
            Err(reason) => {
                notify::ready(&status::status(&d).await);
                tracing::error!(hookd_event = "reload_failed", reason = %reason, "reload failed, still serving: {reason}");
                if let Some(ask) = ask {
                    let _ = ask.send(serde_json::json!({"ok": false, "error": reason}));
                }
            }
        }
    };
    // Reloads asked from here on get an answer, not a wait.
    r.reloads.close();
    while let Ok(ask) = r.reloads.try_recv() {
        let _ = ask.send(
            serde_json::json!({"ok": false, "error": "this instance is stopping; no reload"}),
        );
    }
    if cause == Cause::HandOff {
        // Stay quiet towards systemd: the successor owns STATUS and WATCHDOG now.
        background[0].abort();
        background[2].abort();
        r.ready.store(false, Ordering::Release);
    }

    let started = Instant::now();
    let ending = drain::run(
        Drain {
            cause,
            grace: d.cfg.shutdown.grace,
            close_within: d.cfg.server.write_timeout,
            in_flight: &d.in_flight,
            traffic: &d.traffic,
            phase: &d.phase,
            switches: &r.switches,
        },
        &mut r.signals,
    )
    .await;
    let (code, hooks_deadline) = match ending {
        Ending::Clean { hooks_deadline } => (exit::CLEAN, hooks_deadline),
        Ending::Forced { hooks_deadline, .. } => (exit::FORCED, hooks_deadline),
    };
    for t in background {
        t.abort();
    }
    for t in r.deliveries {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }

    let mut hooks = ShutdownHooks::default();
    hooks.add_configured(&d.cfg.shutdown.hooks);
    if let (Some(bound), Some(task)) = (r.control, r.control_task) {
        let answering = r.control_answering.clone();
        hooks.add(
            "control-socket",
            900,
            Duration::from_secs(3),
            move || async move {
                task.abort();
                // Answers being written (a reload's outcome) go out first.
                let _ = answering.write().await;
                bound.remove_if_ours()
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
        let took = started.elapsed();
        tracing::info!(hookd_event = "drain_complete", drain_usec = took.as_micros() as u64, cause = ?cause, "drain complete after {}; exiting 0", humantime::format_duration(Duration::from_millis(took.as_millis() as u64)));
    }
    code
}

/// The hand-off: check the config on disk, start the binary on disk with our
/// sockets, and wait for it to be ready. Returns the successor's pid.
async fn reload(r: &Running) -> Result<u32, String> {
    if r.d.phase.get() != Phase::Ready {
        return Err(format!("cannot reload while {}", r.d.phase.get().as_str()));
    }
    notify::reloading("reloading: starting a new instance");
    tracing::info!(hookd_event = "reload_start", config = %r.d.cfg.source.display(), binary = %r.relaunch.exe.display(), "reload: checking the config and starting a new instance");
    let cfg = Config::load(&r.d.cfg.source).map_err(|e| e.to_string())?;
    Ingress::routes(&cfg)?;
    let successor = handoff::start_successor(&r.relaunch, &r.passed, HANDOFF_TIMEOUT).await?;
    let pid = successor.pid;
    tracing::info!(
        hookd_event = "handoff",
        successor_pid = pid,
        "new instance {pid} is ready; this one stops accepting and drains"
    );
    // Reaps the successor should it die while we still run.
    tokio::spawn(async move {
        let mut child = successor.child;
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// The connection caps, logged once at start.
fn conn_limits(cfg: &Config) -> Arc<crate::ingress::limits::Limits> {
    let (limits, how) = crate::ingress::limits::Limits::from_config(cfg);
    limits.log(&how);
    Arc::new(limits)
}

fn spawn_delivery(d: &Arc<Daemon>, switches: &Switches) -> Vec<tokio::task::JoinHandle<()>> {
    let client = ForwardClient::new();
    let metrics = d.metrics.clone();
    let last_errors = d.last_errors.clone();
    let hidden_env = Arc::new(d.cfg.secret_env_vars());
    let observer: Arc<dyn Fn(DeliveryEvent) + Send + Sync> =
        Arc::new(move |ev| status::observe(&metrics, &last_errors, ev));
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
                hidden_env: hidden_env.clone(),
            };
            tokio::spawn(delivery::run_hook(
                d.spool.clone(),
                h.get_ref().clone(),
                ctx,
            ))
        })
        .collect()
}

/// Keeps `STATUS=` current while serving (the drain writes its own).
async fn status_loop(d: Arc<Daemon>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if d.phase.get() != Phase::Ready {
            continue;
        }
        let line = status::status(&d).await;
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

fn control_handler(d: Arc<Daemon>, reloads: mpsc::Sender<ReloadAsk>) -> control::Handler {
    Arc::new(move |cmd: String| {
        let (d, reloads) = (d.clone(), reloads.clone());
        Box::pin(async move {
            match cmd.as_str() {
                "status" => status::status_json(&d).await,
                "reload" => {
                    let (tx, rx) = oneshot::channel();
                    if reloads.send(tx).await.is_err() {
                        return serde_json::json!({"ok": false, "error": "this instance is no longer taking reloads"});
                    }
                    rx.await.unwrap_or_else(|_| serde_json::json!({"ok": false, "error": "this instance is draining; no reload"}))
                }
                other => {
                    serde_json::json!({"ok": false, "error": format!("unknown command {other:?}")})
                }
            }
        })
    })
}
