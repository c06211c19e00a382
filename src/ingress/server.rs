//! Accept loops and HTTP/1 connections.
//!
//! Two switches come from lifecycle: `drain` (keep accepting, but close idle
//! keep-alive connections and answer busy ones with `Connection: close`) and
//! `stop_accepting` (leave the listening sockets alone — systemd or a
//! successor holds them — and finish the connections already open).

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

use super::listeners::StdListener;
use super::response;
use super::routes::{handle, Ingress};
use super::slow_client::{self, FirstRequest, Shared, SharedSocket};
use super::tls::Tls;

/// Counts of open connections and requests being handled.
#[derive(Default)]
pub struct Traffic {
    connections: AtomicU64,
    requests: AtomicU64,
    idle: tokio::sync::Notify,
}

impl Traffic {
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Returns once no connection is open (checked on every close).
    pub async fn wait_no_connections(&self) {
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

/// The switches lifecycle turns; both only ever go from false to true.
#[derive(Clone)]
pub struct Switches {
    pub drain: watch::Receiver<bool>,
    pub stop_accepting: watch::Receiver<bool>,
}

/// Starts one accept loop per listener; a listener with a `Tls` serves TLS.
/// Each loop ends when `stop_accepting` turns true; connections it started go
/// on until they close.
pub(crate) fn spawn(
    listeners: Vec<(StdListener, Option<Tls>)>,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    sw: Switches,
) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (l, tls) in listeners {
        let desc = match &tls {
            Some(_) => format!("{} (tls)", l.describe()),
            None => l.describe(),
        };
        let (ing, traffic) = (ing.clone(), traffic.clone());
        let drain = sw.drain.clone();
        let stop = sw.stop_accepting.clone();
        match l {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                tasks.push(tokio::spawn(async move {
                    accept_loop(
                        desc,
                        stop,
                        || l.accept(),
                        move |(s, _)| {
                            let _ = s.set_nodelay(true);
                            start_conn(s, tls.clone(), &ing, &traffic, &drain);
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
                        || l.accept(),
                        move |(s, _)| {
                            start_conn(s, tls.clone(), &ing, &traffic, &drain);
                        },
                    )
                    .await
                }));
            }
        }
    }
    Ok(tasks)
}

fn start_conn<S>(
    stream: S,
    tls: Option<Tls>,
    ing: &Arc<Ingress>,
    traffic: &Arc<Traffic>,
    drain: &watch::Receiver<bool>,
) where
    S: SharedSocket + AsyncRead + AsyncWrite + Unpin,
{
    let (ing, traffic, drain) = (ing.clone(), traffic.clone(), drain.clone());
    match tls {
        None => tokio::spawn(serve_plain(stream, ing, traffic, drain)),
        Some(tls) => tokio::spawn(serve_tls(stream, tls, ing, traffic, drain)),
    };
}

async fn accept_loop<A, F, T, C>(
    desc: String,
    mut stop_accepting: watch::Receiver<bool>,
    accept: A,
    on_conn: C,
) where
    A: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<T>>,
    C: Fn(T),
{
    tracing::debug!(listener = %desc, "accepting");
    loop {
        if *stop_accepting.borrow() {
            break;
        }
        tokio::select! {
            biased;
            _ = stop_accepting.changed() => continue,
            res = accept() => match res {
                Ok(conn) => on_conn(conn),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %desc, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    tracing::debug!(listener = %desc, "stopped accepting");
}

/// A plain connection: the socket is shared with the slow-client timer, which
/// answers 408 itself when the first request's headers are late.
async fn serve_plain<S>(
    stream: S,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    drain: watch::Receiver<bool>,
) where
    S: SharedSocket,
{
    let _conn_guard = Counted::new(&traffic.connections, Some(&traffic.idle));
    let socket = Arc::new(stream);
    let first = Arc::new(FirstRequest::default());
    let _timer = AbortOnDrop(tokio::spawn(slow_client::watch(
        socket.clone(),
        first.clone(),
        ing.read_timeout,
    )));
    // Backstop for keep-alive connections; the first request has the timer.
    let header_timeout = ing.read_timeout + Duration::from_secs(1);
    let fd = socket.as_raw_fd();
    serve_http(
        TokioIo::new(Shared(socket)),
        ConnTiming {
            fd,
            first,
            header_timeout,
            late: None,
        },
        ing,
        traffic.clone(),
        drain,
    )
    .await
}

/// A TLS connection. The handshake must finish within the read timeout, so
/// a client that stalls in it (or speaks plain HTTP, which fails it at once)
/// cannot hold a connection slot. After it, the first request's headers get
/// the read timeout too, with the same 408 answer as on a plain connection,
/// written through the TLS stream.
async fn serve_tls<S>(
    stream: S,
    tls: Tls,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    drain: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    let _conn_guard = Counted::new(&traffic.connections, Some(&traffic.idle));
    let fd = stream.as_raw_fd();
    let stream = match tokio::time::timeout(ing.read_timeout, tls.acceptor.accept(stream)).await {
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
        let (mut stream, first, limit) = (stream.clone(), first.clone(), ing.read_timeout);
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
            // Backstop for keep-alive connections; the first request has `late`.
            header_timeout: ing.read_timeout + Duration::from_secs(1),
            late: Some(late),
        },
        ing,
        traffic.clone(),
        drain,
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
    /// hyper's header timeout: a backstop for later keep-alive requests.
    header_timeout: Duration,
    /// The 408 timer when it runs in this task (TLS); plain sockets run their own.
    late: Option<LateAnswer>,
}

async fn serve_http<I>(
    io: I,
    timing: ConnTiming,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    mut drain: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let ConnTiming {
        fd,
        first,
        header_timeout,
        mut late,
    } = timing;
    // The peer address (TCP or unix), for the client checks of the routes.
    let peer = super::access::Peer::of(fd);
    let draining_at_start = *drain.borrow_and_update();
    let svc_traffic = traffic.clone();
    let activity = Arc::new(Activity::new());
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
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // Backstop for keep-alive connections; the first request has `timer`.
        .header_read_timeout(header_timeout)
        // hyper's read buffer (~400 KiB by default) fills while a body is
        // being taken: per connection, on top of the bodies that
        // max_buffered counts. 64 KiB still holds any sane request head.
        .max_buf_size(READ_BUFFER)
        .keep_alive(!draining_at_start)
        .serve_connection(io, service);
    tokio::pin!(conn);
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

/// What one connection is doing, for the drain's decision to close it.
struct Activity {
    since: Instant,
    in_progress: AtomicU64,
    /// Milliseconds after `since` at which the last request ended; `u64::MAX`
    /// before the first one (a fresh connection is never "idle": its first
    /// request may be on the wire, and gets `Connection: close` instead).
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            in_progress: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
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
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
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
