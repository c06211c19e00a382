//! `hookd serve`: start-up, the ready state, reloads, and the way out.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, RwLock};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::control::{self, Answer, Reloaded, Request as ControlRequest};
use super::drain::{self, Cause, Drain, Ending, Switches};
use super::handoff::{self, PassedSocket, Relaunch};
use super::shutdown_hooks::ShutdownHooks;
use super::signals::{self, Request};
use super::sockets::Chosen;
use super::status::{self, RecentErrors};
use super::{exit, sockets, Phase, PhaseCell};
use crate::config::{Config, SpoolBackend};
use crate::delivery::{self, DeliveryContext, DeliveryEvent, ForwardClient, InFlight};
use crate::ingress::budget::Budget;
use crate::ingress::routes::{GaugeSource, Role};
use crate::ingress::routes::{Ingress, Route};
use crate::ingress::server::{self, Traffic};
use crate::metrics::Metrics;
use crate::replies::Replies;
use crate::spool::{Spool, SpoolError, SpoolOptions, Store};
use crate::systemd::{listen::Named, notify};

/// How long a successor has to open the spool and report ready.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Shutdown-hook priorities of the daemon's own clean-up; lower runs first.
/// The `[[shutdown.hook]]` commands of the config default to priority 0, so
/// they run before both, while `hookd status` still answers and the spool is
/// open.
///
/// The control socket closes first: it waits for answers still being written
/// (a `hookd reload` must hear its outcome), and once it is gone no status
/// request can reach a spool that is closing.
const CONTROL_SOCKET_PRIORITY: i32 = 900;
/// The spool closes last: closing finishes the writer's queue (the last
/// "done" of each delivery), hands back this instance's leases and
/// checkpoints the WAL, after which every other user of the spool gets errors.
const SPOOL_PRIORITY: i32 = 1000;

/// A start-up failure: its exit code and what to tell the operator.
#[derive(Debug)]
pub(crate) struct StartError {
    pub code: u8,
    pub message: String,
}

impl StartError {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> StartError {
        StartError {
            code,
            message: message.into(),
        }
    }
}

/// How this process came to be.
pub(crate) struct Origin {
    /// Sockets from systemd or from a predecessor.
    pub inherited: Vec<Named>,
    /// Set when a predecessor started us: where to report ready.
    pub handoff: Option<OwnedFd>,
    /// How to start a successor on reload.
    pub relaunch: Relaunch,
}

/// Whether a predecessor started us, which decides who may replace a live
/// control socket at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Succession {
    /// Started by systemd or by hand: a live control socket is someone else's.
    First,
    /// Started on reload: the control socket's path is ours to take over.
    Successor,
}

/// Everything the running daemon shares between its tasks.
pub(crate) struct Daemon {
    pub cfg: Config,
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub in_flight: Arc<InFlight>,
    pub traffic: Arc<Traffic>,
    pub phase: Arc<PhaseCell>,
    pub(crate) last_errors: Arc<RecentErrors>,
    /// First-attempt results, from delivery to ingress (`respond.wait`).
    pub(crate) replies: Arc<Replies>,
}

/// A reload asked over the control socket, with where to send the outcome.
type ReloadAsk = oneshot::Sender<Result<Answer, String>>;

/// Runs the daemon to its end and returns the exit code. A start-up failure
/// is also reported to a waiting predecessor.
pub(crate) async fn serve(cfg: Config, mut origin: Origin) -> Result<u8, StartError> {
    let handoff_pipe = origin.handoff.take();
    let succession = match handoff_pipe {
        Some(_) => Succession::Successor,
        None => Succession::First,
    };
    match start(cfg, origin, succession).await {
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
    /// Ingress answers `/readyz` with 200 while set.
    ready: Arc<AtomicBool>,
    addrs: Vec<String>,
    control: Option<ControlSocket>,
    deliveries: Vec<JoinHandle<()>>,
}

/// The control socket while it serves.
struct ControlSocket {
    bound: control::Bound,
    task: JoinHandle<()>,
    /// Held (read side) by every answer being written.
    answering: Arc<RwLock<()>>,
}

/// The loops that run beside ingress and delivery until the end.
struct Background {
    /// Keeps `STATUS=` current.
    status: JoinHandle<()>,
    /// Purges old `done` items.
    retention: JoinHandle<()>,
    /// Sends `WATCHDOG=1`.
    watchdog: JoinHandle<()>,
}

impl Background {
    fn spawn(d: &Arc<Daemon>) -> Background {
        Background {
            status: tokio::spawn(status_loop(d.clone())),
            retention: tokio::spawn(retention_loop(d.clone())),
            watchdog: tokio::spawn(watchdog_loop()),
        }
    }

    /// Stops what speaks to systemd: after a hand-off the successor owns
    /// `STATUS=` and the watchdog. Retention goes on until the end.
    fn quiet_towards_systemd(&self) {
        self.status.abort();
        self.watchdog.abort();
    }

    fn abort(self) {
        self.status.abort();
        self.retention.abort();
        self.watchdog.abort();
    }
}

async fn start(cfg: Config, origin: Origin, succession: Succession) -> Result<Running, StartError> {
    let signals = signals::listen().map_err(|e| {
        StartError::new(
            exit::RUNTIME,
            format!("cannot install signal handlers: {e}"),
        )
    })?;
    let routes = Ingress::routes(&cfg).map_err(|e| StartError::new(exit::BAD_CONFIG, e))?;
    for w in cfg.warnings() {
        tracing::warn!(hookd_event = "config_warning", "{w}");
    }
    let tls = crate::ingress::tls::Tls::load(cfg.server.tls.as_ref())
        .map_err(|e| StartError::new(exit::BAD_CONFIG, format!("{}: {e}", cfg.source.display())))?;
    let (chosen, passed) = choose_listeners(&cfg, origin.inherited)?;

    let metrics = Arc::new(Metrics::default());
    if let Some(t) = &tls {
        metrics.set_tls_cert_expiry(t.not_after);
    }
    let spool = open_spool(&cfg, &metrics).await?;
    let d = Arc::new(Daemon {
        cfg,
        spool,
        metrics,
        in_flight: InFlight::new(),
        traffic: Arc::new(Traffic::default()),
        phase: Arc::new(PhaseCell::default()),
        last_errors: Arc::new(RecentErrors::default()),
        replies: Arc::default(),
    });
    let switches = Switches::new();
    let ready = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = chosen.iter().map(|c| c.listener.describe()).collect();
    start_ingress(&d, routes, chosen, tls, &switches, &ready)?;

    let (reload_tx, reloads) = mpsc::channel(4);
    let control = start_control(&d, reload_tx, succession);
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
        deliveries,
    })
}

/// The listening sockets to serve, and a duplicate of each to pass on to a
/// successor on reload.
fn choose_listeners(
    cfg: &Config,
    inherited: Vec<Named>,
) -> Result<(Vec<sockets::Chosen>, Vec<PassedSocket>), StartError> {
    let chosen = sockets::choose(cfg, inherited)?;
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
    Ok((chosen, passed))
}

/// How long a node keeps trying at start to reach a PostgreSQL spool that
/// does not answer (after a power cut the database host may boot last).
/// Under systemd's default `TimeoutStartSec=90s`, and long enough that
/// `Restart=` after it never trips `StartLimitBurst` (30 starts a minute).
const WAIT_FOR_DATABASE: Duration = Duration::from_secs(60);

async fn open_spool(cfg: &Config, metrics: &Arc<Metrics>) -> Result<Spool, StartError> {
    let store = match cfg
        .spool_backend()
        .map_err(|e| StartError::new(exit::BAD_CONFIG, e.0))?
    {
        SpoolBackend::Sqlite(path) => Store::File(path),
        SpoolBackend::Postgres(pg) => Store::postgres(
            pg.target,
            pg.node,
            pg.connect_timeout,
            cfg.spool.commit_timeout,
        ),
    };
    let name = store.describe();
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let observer_metrics = metrics.clone();
        let opened = Spool::open(SpoolOptions {
            store: store.clone(),
            instance_id: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            max_batch: cfg.spool.max_batch,
            on_commit: Some(Arc::new(move |lat, n| observer_metrics.commit(lat, n))),
        });
        match opened {
            Ok(spool) => return Ok(spool),
            // Only a database that does not answer is waited for: a file
            // that cannot be opened, a refused login or a schema this hookd
            // cannot use stays an error at once.
            Err(e @ SpoolError::Unreachable(_))
                if started.elapsed() + pause < WAIT_FOR_DATABASE =>
            {
                tracing::warn!(
                    hookd_event = "spool_unreachable",
                    error = %e,
                    "cannot reach the spool {name}; trying again in {}",
                    humantime::format_duration(pause)
                );
                notify::status(&format!("waiting for the spool's database: {e}"));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(StartError::new(
                    exit::SPOOL,
                    format!("cannot open spool {name}: {e}"),
                ))
            }
        }
    }
}

/// Starts the accept loops; `/readyz` answers 200 once `ready` is set.
fn start_ingress(
    d: &Arc<Daemon>,
    routes: HashMap<String, Route>,
    chosen: Vec<Chosen>,
    tls: Option<crate::ingress::tls::Tls>,
    switches: &Switches,
    ready: &Arc<AtomicBool>,
) -> Result<(), StartError> {
    let gauge_daemon = d.clone();
    let gauges: GaugeSource = Arc::new(move |g| {
        g.in_flight = gauge_daemon
            .in_flight
            .by_hook()
            .into_iter()
            .map(|(h, n)| (h, n as u64))
            .collect();
        g.requests_in_flight = gauge_daemon.traffic.requests();
        g.drain_state = gauge_daemon.phase.get().drain_gauge();
    });
    let budget = Budget::new(d.cfg.server.max_buffered);
    // One table of connections for every listener: the caps are per daemon.
    let limits = conn_limits(&d.cfg);
    let (metrics_only, webhooks): (Vec<Chosen>, Vec<Chosen>) = chosen
        .into_iter()
        .partition(|c| c.role == sockets::Role::Metrics);
    let webhook_role = Role::Webhooks {
        metrics: d.cfg.server.metrics_on_webhook_listener,
    };
    for (role, set) in [(webhook_role, webhooks), (Role::Metrics, metrics_only)] {
        if set.is_empty() {
            continue;
        }
        let ingress = Arc::new(Ingress::new(
            &d.cfg,
            role,
            routes.clone(),
            d.spool.clone(),
            d.metrics.clone(),
            ready.clone(),
            gauges.clone(),
            &budget,
            &d.replies,
        ));
        server::spawn(
            set.into_iter()
                .map(|c| {
                    let tls = (c.role == sockets::Role::WebhookTls)
                        .then(|| tls.clone())
                        .flatten();
                    (c.listener, tls)
                })
                .collect(),
            ingress,
            d.traffic.clone(),
            server::Switches {
                drain: switches.drain_ingress.subscribe(),
                deliveries_done: switches.deliveries_done.subscribe(),
                stop_accepting: switches.stop_accepting.subscribe(),
            },
            limits.clone(),
        )
        .map_err(|e| {
            StartError::new(
                exit::NO_LISTENER,
                format!("cannot use the listening sockets: {e}"),
            )
        })?;
    }
    Ok(())
}

/// Binds the control socket and serves it; without it the daemon still runs,
/// only `hookd status` and `hookd reload` cannot reach it.
fn start_control(
    d: &Arc<Daemon>,
    reloads: mpsc::Sender<ReloadAsk>,
    succession: Succession,
) -> Option<ControlSocket> {
    // A successor takes the control socket's path over from its predecessor.
    let control_path = d.cfg.control_socket_path();
    let take_over = succession == Succession::Successor;
    match control::bind(&control_path, take_over) {
        Ok((bound, listener)) => {
            let answering = Arc::new(RwLock::new(()));
            let task = tokio::spawn(control::serve(
                listener,
                control_handler(d.clone(), reloads),
                answering.clone(),
            ));
            Some(ControlSocket {
                bound,
                task,
                answering,
            })
        }
        Err(e) => {
            tracing::warn!(path = %control_path.display(), error = %e, "control socket unavailable; `hookd status` and `hookd reload` will not work");
            None
        }
    }
}

async fn run(mut r: Running, handoff_pipe: Option<OwnedFd>) -> u8 {
    let d = r.d.clone();
    let background = Background::spawn(&d);
    announce(&r, handoff_pipe).await;
    let cause = serve_until_stop(&mut r).await;
    refuse_later_reloads(&mut r.reloads);
    if cause == Cause::HandOff {
        background.quiet_towards_systemd();
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
    background.abort();
    for t in r.deliveries {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    run_shutdown_hooks(&d, r.control, hooks_deadline).await;
    d.phase.set(Phase::Stopped);
    if code == exit::CLEAN {
        let took = started.elapsed();
        tracing::info!(hookd_event = "drain_complete", drain_usec = took.as_micros() as u64, cause = ?cause, "drain complete after {}; exiting 0", humantime::format_duration(Duration::from_millis(took.as_millis() as u64)));
    }
    code
}

/// Ready: to systemd (`READY=1`, or `MAINPID=` + `READY=1` for a successor),
/// to a waiting predecessor, to `/readyz` and to the journal.
async fn announce(r: &Running, handoff_pipe: Option<OwnedFd>) {
    let d = &r.d;
    d.phase.set(Phase::Ready);
    r.ready.store(true, Ordering::Release);
    let line = status::summary_line(d).await;
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
    tracing::info!(hookd_event = "ready", listen = %r.addrs.join(" "), spool = %d.spool.describe(), hooks = d.cfg.hooks.len(), "hookd ready");
}

/// Serves until a stop signal or a successful hand-off, and says which.
/// A failed reload leaves us ready and serving.
async fn serve_until_stop(r: &mut Running) -> Cause {
    loop {
        let ask = tokio::select! {
            req = r.signals.recv() => match req {
                Some(Request::Stop(sig)) => return Cause::Stop(sig),
                Some(Request::Reload) => None,
                None => return Cause::Stop("signal handler gone"),
            },
            Some(ask) = r.reloads.recv() => Some(ask),
        };
        match hand_off(r).await {
            Ok(pid) => {
                if let Some(ask) = ask {
                    let _ = ask.send(Ok(Answer::Reloaded(Reloaded {
                        message: format!("handed off to pid {pid}"),
                    })));
                }
                return Cause::HandOff;
            }
            Err(reason) => {
                notify::ready(&status::summary_line(&r.d).await);
                tracing::error!(hookd_event = "reload_failed", reason = %reason, "reload failed, still serving: {reason}");
                if let Some(ask) = ask {
                    let _ = ask.send(Err(reason));
                }
            }
        }
    }
}

/// Reloads asked from here on get an answer, not a wait.
fn refuse_later_reloads(reloads: &mut mpsc::Receiver<ReloadAsk>) {
    reloads.close();
    while let Ok(ask) = reloads.try_recv() {
        let _ = ask.send(Err("this instance is stopping; no reload".to_string()));
    }
}

/// The configured hooks, then closing the control socket, then the spool,
/// all within `deadline` (at least two more seconds).
async fn run_shutdown_hooks(d: &Daemon, control: Option<ControlSocket>, deadline: Instant) {
    let mut hooks = ShutdownHooks::default();
    hooks.add_configured(&d.cfg.shutdown.hooks, &d.cfg.secret_env_vars());
    if let Some(ControlSocket {
        bound,
        task,
        answering,
    }) = control
    {
        hooks.add(
            "control-socket",
            CONTROL_SOCKET_PRIORITY,
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
    hooks.add(
        "spool",
        SPOOL_PRIORITY,
        Duration::from_secs(5),
        move || async move {
            spool.close().await;
            Ok(())
        },
    );
    hooks
        .run(deadline.max(Instant::now() + Duration::from_secs(2)))
        .await;
}

/// The hand-off: check the config on disk, start the binary on disk with our
/// sockets, and wait for it to be ready. Returns the successor's pid.
async fn hand_off(r: &Running) -> Result<u32, String> {
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

fn spawn_delivery(d: &Arc<Daemon>, switches: &Switches) -> Vec<JoinHandle<()>> {
    // Once nothing more is claimed no first attempt starts: `respond.wait`
    // answers (202) at once instead of holding the sender, and the drain, to
    // the end of its wait.
    let mut stop = switches.stop_claiming.subscribe();
    let replies = d.replies.clone();
    tokio::spawn(async move {
        // An error means the switch is gone with the process: stop waiting too.
        let _ = stop.wait_for(|stopped| *stopped).await;
        replies.close();
    });
    let client = ForwardClient::new();
    let metrics = d.metrics.clone();
    let last_errors = d.last_errors.clone();
    let hidden_env = Arc::new(d.cfg.secret_env_vars());
    let observer: Arc<dyn Fn(DeliveryEvent) + Send + Sync> =
        Arc::new(move |ev| status::observe_delivery(&metrics, &last_errors, ev));
    d.cfg
        .hooks
        .iter()
        .flat_map(|h| h.get_ref().routes.iter().map(move |r| (h.get_ref(), r)))
        .map(|(h, r)| {
            let ctx = DeliveryContext {
                stop: switches.stop_claiming.subscribe(),
                hard_stop: switches.hard_stop.subscribe(),
                in_flight: d.in_flight.clone(),
                observer: Some(observer.clone()),
                client: client.clone(),
                hidden_env: hidden_env.clone(),
                replies: d.replies.clone(),
            };
            let (spool, hook, route) = (d.spool.clone(), h.clone(), r.clone());
            tokio::spawn(async move { delivery::run_route(spool, &hook, route, ctx).await })
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
        let line = status::summary_line(&d).await;
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
    Arc::new(move |request: ControlRequest| {
        let (d, reloads) = (d.clone(), reloads.clone());
        Box::pin(async move {
            match request {
                ControlRequest::Status => Ok(Answer::Status(Box::new(status::report(&d).await))),
                ControlRequest::Reload => {
                    let (tx, rx) = oneshot::channel();
                    if reloads.send(tx).await.is_err() {
                        return Err("this instance is no longer taking reloads".to_string());
                    }
                    rx.await
                        .unwrap_or_else(|_| Err("this instance is draining; no reload".to_string()))
                }
            }
        })
    })
}
