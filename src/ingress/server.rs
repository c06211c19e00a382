//! Accept loops and HTTP/1 connections.
//!
//! Three switches come from lifecycle: `drain` (keep accepting, but close idle
//! keep-alive connections and answer busy ones with `Connection: close`),
//! `deliveries_done` (the stop waits only on connections now: each one open
//! gets at most `write_timeout` more, whatever its client does) and
//! `stop_accepting` (leave the listening sockets alone — systemd or a
//! successor holds them — and finish the connections already open).
//!
//! Every connection is admitted by [`Limits`] first and served with a write
//! deadline: an answer the client does not take within `write_timeout`
//! closes it, so a client that stops reading holds nothing for long.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::limits::{Limits, Slot};
use super::listeners::StdListener;
use super::response;
use super::routes::{handle, Ingress};
use super::slow_client::{self, FirstRequest, Shared, SharedSocket};
use super::tls::Tls;

/// Counts of open connections and requests being handled.
#[derive(Default)]
pub(crate) struct Traffic {
    connections: AtomicU64,
    requests: AtomicU64,
    idle: tokio::sync::Notify,
}

impl Traffic {
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Returns once no connection is open (checked on every close).
    pub(crate) async fn wait_no_connections(&self) {
        loop {
            let notified = self.idle.notified();
            if self.connections() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements on drop, so a panicking or cancelled task still counts out.
struct Counted<'a>(&'a AtomicU64, Option<&'a tokio::sync::Notify>);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicU64, on_zero: Option<&'a tokio::sync::Notify>) -> Self {
        c.fetch_add(1, Ordering::AcqRel);
        Counted(c, on_zero)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        if let Some(n) = self.1 {
            n.notify_waiters();
        }
    }
}

/// Aborts the task when the connection ends, whichever way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The switches lifecycle turns; each only ever goes from false to true.
#[derive(Clone)]
pub(crate) struct Switches {
    pub drain: watch::Receiver<bool>,
    pub deliveries_done: watch::Receiver<bool>,
    pub stop_accepting: watch::Receiver<bool>,
}

/// What every connection of every listener shares.
struct ConnCtx {
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    limits: Arc<Limits>,
    drain: watch::Receiver<bool>,
    done: watch::Receiver<bool>,
    refusals: Throttle,
}

/// Starts one accept loop per listener; a listener with a `Tls` serves TLS.
/// Each loop ends when `stop_accepting` turns true; connections it started go
/// on until they close.
pub(crate) fn spawn(
    listeners: Vec<(StdListener, Option<Tls>)>,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    sw: Switches,
    limits: Arc<Limits>,
) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let ctx = Arc::new(ConnCtx {
        ing,
        traffic,
        limits: limits.clone(),
        drain: sw.drain.clone(),
        done: sw.deliveries_done.clone(),
        refusals: Throttle::default(),
    });
    let mut tasks = Vec::new();
    for (l, tls) in listeners {
        let desc = match &tls {
            Some(_) => format!("{} (tls)", l.describe()),
            None => l.describe(),
        };
        let (ctx, limits) = (ctx.clone(), limits.clone());
        let stop = sw.stop_accepting.clone();
        match l {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                tasks.push(tokio::spawn(async move {
                    accept_loop(
                        desc,
                        stop,
                        &limits,
                        || l.accept(),
                        move |(s, peer): (tokio::net::TcpStream, std::net::SocketAddr)| {
                            let _ = s.set_nodelay(true);
                            start_conn(s, Some(peer.ip()), tls.clone(), &ctx);
                        },
                    )
                    .await
                }));
            }
            StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::UnixListener::from_std(l)?;
                tasks.push(tokio::spawn(async move {
                    accept_loop(
                        desc,
                        stop,
                        &limits,
                        || l.accept(),
                        move |(s, _)| {
                            start_conn(s, None, tls.clone(), &ctx);
                        },
                    )
                    .await
                }));
            }
        }
    }
    Ok(tasks)
}

fn start_conn<S>(stream: S, peer: Option<std::net::IpAddr>, tls: Option<Tls>, ctx: &Arc<ConnCtx>)
where
    S: SharedSocket + AsyncRead + AsyncWrite + Unpin,
{
    let Some(slot) = ctx.limits.admit(peer) else {
        if tls.is_none() {
            // A fresh socket's send buffer is empty: the answer fits at once.
            let _ = stream.try_write(TOO_MANY.as_bytes());
        }
        let l = &ctx.limits;
        ctx.refusals.note(|n, secs| {
            tracing::warn!(
                hookd_event = "connection_refused",
                refused = n,
                open = l.open() as u64,
                "refused {n} connections in the last {secs}s: at server.max_connections ({}) or server.max_connections_per_ip ({}) with no idle connection to close",
                l.max_connections,
                l.max_per_ip
            )
        });
        return;
    };
    let ctx = ctx.clone();
    match tls {
        None => tokio::spawn(serve_plain(stream, ctx, slot)),
        Some(tls) => tokio::spawn(serve_tls(stream, tls, ctx, slot)),
    };
}

/// The whole 503 for a connection refused at a cap, written as it is (the
/// test below checks its content-length).
const TOO_MANY: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 91\r\n\r\n{\"error\":\"too_many_connections\",\"message\":\"hookd is at its connection limit; retry later\"}\n";

/// Logs a repeated event at most once per interval, with how many times it
/// happened since the last line, so a flood cannot fill the journal.
#[derive(Default)]
struct Throttle(std::sync::Mutex<(Option<Instant>, u64)>);

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Throttle {
    fn note(&self, log: impl FnOnce(u64, u64)) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.1 += 1;
        let due = g.0.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            let secs = g.0.map_or(0, |at| at.elapsed().as_secs());
            log(g.1, secs);
            *g = (Some(Instant::now()), 0);
        }
    }
}

/// The first pause after a failed accept, and the longest.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// Long enough for a shed connection's task to close its descriptor.
const SHED_PAUSE: Duration = Duration::from_millis(10);

async fn accept_loop<A, F, T, C>(
    desc: String,
    mut stop_accepting: watch::Receiver<bool>,
    limits: &Limits,
    accept: A,
    on_conn: C,
) where
    A: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<T>>,
    C: Fn(T),
{
    tracing::debug!(listener = %desc, "accepting");
    let failures = Throttle::default();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        if *stop_accepting.borrow() {
            break;
        }
        tokio::select! {
            biased;
            _ = stop_accepting.changed() => continue,
            res = accept() => match res {
                Ok(conn) => {
                    backoff = ACCEPT_BACKOFF.0;
                    on_conn(conn)
                }
                // The peer gave up before we took it: nothing is wrong here.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) => {}
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or memory: the
                    // pending connection stays queued. Free a descriptor by
                    // closing the oldest idle connection, and pause instead
                    // of spinning on the same error.
                    let shed = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
                        && limits.shed_one();
                    failures.note(|n, secs| tracing::warn!(
                        hookd_event = "accept_failed",
                        listener = %desc,
                        error = %e,
                        failures = n,
                        "accept failed {n} times in the last {secs}s: {e}; pausing up to {}ms between tries{}",
                        ACCEPT_BACKOFF.1.as_millis(),
                        if shed { "; closing idle connections to make room" } else { "" }
                    ));
                    if shed {
                        // A descriptor is being freed: try again once it is.
                        tokio::time::sleep(SHED_PAUSE).await;
                    } else {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    }
                }
            }
        }
    }
    tracing::debug!(listener = %desc, "stopped accepting");
}

/// A plain connection: the socket is shared with the slow-client timer, which
/// answers 408 itself when the first request's headers are late.
async fn serve_plain<S>(stream: S, ctx: Arc<ConnCtx>, slot: Slot)
where
    S: SharedSocket,
{
    let traffic = ctx.traffic.clone();
    let _conn_guard = Counted::new(&traffic.connections, Some(&traffic.idle));
    let socket = Arc::new(stream);
    let first = Arc::new(FirstRequest::default());
    let _timer = AbortOnDrop(tokio::spawn(slow_client::watch(
        socket.clone(),
        first.clone(),
        ctx.ing.read_timeout,
    )));
    let fd = socket.as_raw_fd();
    serve_http(
        TokioIo::new(Shared(socket)),
        ConnTiming {
            fd,
            first,
            late: None,
        },
        ctx,
        slot,
    )
    .await
}

/// A TLS connection. The handshake must finish within the read timeout, so
/// a client that stalls in it (or speaks plain HTTP, which fails it at once)
/// cannot hold a connection slot. After it, the first request's headers get
/// the read timeout too, with the same 408 answer as on a plain connection,
/// written through the TLS stream.
async fn serve_tls<S>(stream: S, tls: Tls, ctx: Arc<ConnCtx>, slot: Slot)
where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    let traffic = ctx.traffic.clone();
    let _conn_guard = Counted::new(&traffic.connections, Some(&traffic.idle));
    let fd = stream.as_raw_fd();
    let handshake = tokio::time::timeout(ctx.ing.read_timeout, tls.acceptor.accept(stream));
    // A connection shed to make room, or one still shaking hands when the
    // stop's last moment comes, ends here too.
    let stream = match tokio::select! {
        r = handshake => Some(r),
        _ = slot.shed() => None,
    } {
        None => return,
        Some(r) => r,
    };
    let stream = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(
                "TLS handshake not done within the read timeout; closing the connection"
            );
            return;
        }
    };
    let stream = Guarded(Arc::new(std::sync::Mutex::new(stream)));
    let first = Arc::new(FirstRequest::default());
    let late: LateAnswer = {
        let (mut stream, first, limit) = (stream.clone(), first.clone(), ctx.ing.read_timeout);
        Box::pin(async move {
            tokio::time::sleep(limit).await;
            if !first.time_out() {
                return false;
            }
            // Bounded: a client that reads nothing cannot keep us here.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                stream.write_all(slow_client::answer().as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
            true
        })
    };
    serve_http(
        TokioIo::new(stream),
        ConnTiming {
            fd,
            first,
            late: Some(late),
        },
        ctx,
        slot,
    )
    .await
}

/// Answers 408 when the first request is late; true if it did (the
/// connection is then over).
type LateAnswer = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// A stream shared by hyper and the 408 timer. Both are polled by the
/// connection's one task, so the lock is never contended; it only lets the
/// timer write while hyper is between polls.
struct Guarded<I>(Arc<std::sync::Mutex<I>>);

impl<I> Clone for Guarded<I> {
    fn clone(&self) -> Self {
        Guarded(self.0.clone())
    }
}

impl<I> Guarded<I> {
    fn with<R>(&self, f: impl FnOnce(std::pin::Pin<&mut I>) -> R) -> R
    where
        I: Unpin,
    {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(std::pin::Pin::new(&mut *g))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.with(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.with(|s| s.is_write_vectored())
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.with(|s| s.poll_shutdown(cx))
    }
}

/// How one connection's first request is timed, and the socket under it.
struct ConnTiming {
    /// The raw socket, to see whether unread bytes wait before a drain closes it.
    fd: std::os::fd::RawFd,
    first: Arc<FirstRequest>,
    /// The 408 timer when it runs in this task (TLS); plain sockets run their own.
    late: Option<LateAnswer>,
}

async fn serve_http<I>(io: I, timing: ConnTiming, ctx: Arc<ConnCtx>, slot: Slot)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let ConnTiming {
        fd,
        first,
        mut late,
    } = timing;
    // The peer address (TCP or unix), for the client checks of the routes.
    let peer = super::access::Peer::of(fd);
    let ing = ctx.ing.clone();
    let limits = slot.limits().clone();
    let mut drain = ctx.drain.clone();
    let mut done = ctx.done.clone();
    let draining_at_start = *drain.borrow_and_update();
    let svc_traffic = ctx.traffic.clone();
    let activity = Arc::new(Activity::new(slot));
    let svc_activity = activity.clone();
    let svc_drain = drain.clone();
    let svc_first = first.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        // The peer address, for the client checks of the routes.
        req.extensions_mut().insert(peer);
        let ing = ing.clone();
        let traffic = svc_traffic.clone();
        let draining = svc_drain.clone();
        let busy = svc_activity.begin();
        let in_time = svc_first.started();
        async move {
            let _busy = busy;
            if !in_time {
                // The timer already answered 408 and shut the socket down.
                return Ok(response::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "too slow",
                ));
            }
            let _req = Counted::new(&traffic.requests, None);
            let mut resp = handle(ing, req).await;
            if *draining.borrow() {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    // hyper's header timer runs from the end of one answer to the end of the
    // next request's headers, so on a keep-alive connection it is the idle
    // timeout. The first request's headers have the 408 timer instead.
    let header_timeout = limits
        .idle_timeout
        .max(ctx.ing.read_timeout + Duration::from_secs(1));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Backstop for keep-alive connections; the first request has `timer`.
        .header_read_timeout(header_timeout)
        .max_header_size(limits.max_header_bytes)
        // hyper's read buffer (~400 KiB by default) fills while a body is
        // being taken: per connection, on top of the bodies that
        // max_buffered counts. READ_BUFFER holds any sane request head; a
        // larger max_header_bytes needs the whole header block to fit.
        .max_buf_size(READ_BUFFER.max(limits.max_header_bytes + READ_SLACK))
        .keep_alive(!draining_at_start);
    let io = WriteDeadline::new(io, limits.write_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Set once deliveries are done: the moment this connection is closed,
    // whatever its client does.
    let mut close_at: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut done_seen = false;
    // Draining: every answer says `Connection: close`, and a keep-alive
    // connection is closed once it is idle and nothing is waiting on it.
    let mut draining = draining_at_start;
    let mut closed = draining_at_start;
    let mut check = tokio::time::interval(IDLE_CHECK);
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            answered = async {
                match late.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if late.is_some() => {
                if answered {
                    break;
                }
                late = None;
            }
            changed = drain.changed(), if !draining => {
                // Closed channel means lifecycle is gone: treat as drain.
                draining = changed.is_err() || *drain.borrow();
            }
            changed = done.changed(), if !done_seen => {
                if changed.is_err() || *done.borrow() {
                    done_seen = true;
                    let at = tokio::time::Instant::from_std(limits.close_by());
                    close_at = Some(Box::pin(tokio::time::sleep_until(at)));
                }
            }
            _ = async { match close_at.as_mut() { Some(s) => s.await, None => std::future::pending().await } }, if close_at.is_some() => {
                tracing::debug!("closing a connection still open when the stop's write_timeout ran out");
                break;
            }
            _ = activity.slot.shed() => {
                tracing::debug!("closing an idle connection to make room for a new one");
                break;
            }
            _ = check.tick(), if draining && !closed => {
                if activity.idle_for(IDLE_GRACE) && unread_bytes(fd) == 0 {
                    conn.as_mut().graceful_shutdown();
                    closed = true;
                }
            }
        }
    }
}

/// Most bytes hyper buffers from one connection (request head, body chunks
/// not yet taken).
const READ_BUFFER: usize = 64 * 1024;

/// A keep-alive connection must be idle this long before the drain closes it:
/// a client about to reuse it would otherwise see it closed under its request.
const IDLE_GRACE: Duration = Duration::from_millis(200);
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// The room a header block needs beyond its own size to be parsed (the start
/// of a body read with it).
const READ_SLACK: usize = 8192;

/// What one connection is doing, for the drain's decision to close it and
/// for the limits' choice of an idle connection to shed.
struct Activity {
    slot: Slot,
    since: Instant,
    in_progress: AtomicU64,
    /// Milliseconds after `since` at which the last request ended; `u64::MAX`
    /// before the first one (a fresh connection is never "idle": its first
    /// request may be on the wire, and gets `Connection: close` instead).
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new(slot: Slot) -> Activity {
        Activity {
            slot,
            since: Instant::now(),
            in_progress: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        if self.in_progress.fetch_add(1, Ordering::AcqRel) == 0 {
            self.slot.busy();
        }
        Busy(self.clone())
    }

    fn idle_for(&self, grace: Duration) -> bool {
        let last = self.last_end_ms.load(Ordering::Acquire);
        self.in_progress.load(Ordering::Acquire) == 0
            && last != u64::MAX
            && self.since.elapsed().as_millis() as u64
                >= last.saturating_add(grace.as_millis() as u64)
    }
}

/// A request in progress on a connection; ends on drop.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.since.elapsed().as_millis() as u64;
        self.0.last_end_ms.store(now, Ordering::Release);
        if self.0.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.slot.idle();
        }
    }
}

/// Bytes received on the socket that nobody has read yet (FIONREAD).
fn unread_bytes(fd: std::os::fd::RawFd) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // Safety: FIONREAD writes one int to the pointer we pass.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc < 0 {
        // Unknown: say "something waits", so the connection is not closed under it.
        return 1;
    }
    n
}

/// hyper's transport with a deadline on writes: from the moment a write
/// cannot proceed, the client has `limit` to take everything hyper has
/// queued (hyper flushes once its buffer is empty), or the connection fails
/// and closes. Partial progress does not restart the clock, so a client
/// reading a trickle cannot hold the connection either.
struct WriteDeadline<I> {
    io: I,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, limit: Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    fn blocked<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match std::future::Future::poll(timer.as_mut(), cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not take the answer within server.write_timeout",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    /// `drained`: the call reports everything queued as taken (a flush or
    /// shutdown that completed), which ends a stall.
    fn track<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<std::io::Result<T>>,
        drained: bool,
    ) -> std::task::Poll<std::io::Result<T>> {
        match r {
            std::task::Poll::Pending => self.blocked(cx),
            ready => {
                if drained {
                    self.stalled = None;
                }
                ready
            }
        }
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for WriteDeadline<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for WriteDeadline<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut me.io).poll_write(cx, buf);
        me.track(cx, r, false)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.track(cx, r, false)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut me.io).poll_flush(cx);
        me.track(cx, r, true)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut me.io).poll_shutdown(cx);
        me.track(cx, r, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_has_the_right_length() {
        let (head, body) = TOO_MANY.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "too_many_connections");
    }
}
