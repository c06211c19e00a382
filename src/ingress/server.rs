//! Accept loops and HTTP/1 connections.
//!
//! Two switches come from lifecycle: `drain` (keep accepting, but close idle
//! keep-alive connections and answer busy ones with `Connection: close`) and
//! `stop_accepting` (leave the listening sockets alone — systemd or a
//! successor holds them — and finish the connections already open).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use super::listeners::StdListener;
use super::response;
use super::routes::{handle, Ingress};
use super::slow_client::{self, FirstRequest, Shared, SharedSocket};

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

/// Starts one accept loop per listener. Each loop ends when `stop_accepting`
/// turns true; connections it started go on until they close.
pub fn spawn(
    listeners: Vec<StdListener>,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    sw: Switches,
) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for l in listeners {
        let desc = l.describe();
        let (ing, traffic, sw) = (ing.clone(), traffic.clone(), sw.clone());
        match l {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                tasks.push(tokio::spawn(async move {
                    accept_loop(
                        desc,
                        || l.accept(),
                        |(s, _)| {
                            let _ = s.set_nodelay(true);
                            s
                        },
                        ing,
                        traffic,
                        sw,
                    )
                    .await
                }));
            }
            StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::UnixListener::from_std(l)?;
                tasks.push(tokio::spawn(async move {
                    accept_loop(desc, || l.accept(), |(s, _)| s, ing, traffic, sw).await
                }));
            }
        }
    }
    Ok(tasks)
}

async fn accept_loop<A, F, T, S, M>(
    desc: String,
    accept: A,
    into_stream: M,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    mut sw: Switches,
) where
    A: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<T>>,
    M: Fn(T) -> S,
    S: SharedSocket,
{
    tracing::debug!(listener = %desc, "accepting");
    loop {
        if *sw.stop_accepting.borrow() {
            break;
        }
        tokio::select! {
            biased;
            _ = sw.stop_accepting.changed() => continue,
            res = accept() => match res {
                Ok(conn) => {
                    let stream = into_stream(conn);
                    tokio::spawn(serve_conn(stream, ing.clone(), traffic.clone(), sw.drain.clone()));
                }
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

async fn serve_conn<S>(
    stream: S,
    ing: Arc<Ingress>,
    traffic: Arc<Traffic>,
    mut drain: watch::Receiver<bool>,
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
    let draining_at_start = *drain.borrow_and_update();
    let read_timeout = ing.read_timeout;
    let svc_traffic = traffic.clone();
    // Requests this connection has started; see the drain branch below.
    let started = Arc::new(AtomicU64::new(0));
    let svc_started = started.clone();
    let svc_drain = drain.clone();
    let svc_first = first.clone();
    let service = service_fn(move |req| {
        let ing = ing.clone();
        let traffic = svc_traffic.clone();
        let draining = svc_drain.clone();
        svc_started.fetch_add(1, Ordering::AcqRel);
        let in_time = svc_first.started();
        async move {
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
        .header_read_timeout(read_timeout + Duration::from_secs(1))
        .keep_alive(!draining_at_start)
        .serve_connection(TokioIo::new(Shared(socket)), service);
    tokio::pin!(conn);
    let mut told = draining_at_start;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            changed = drain.changed(), if !told => {
                // Closed channel means lifecycle is gone: treat as drain.
                if changed.is_err() || *drain.borrow() {
                    // A connection that has not started a request may have one
                    // on the wire already: closing it would lose that request.
                    // It gets `Connection: close` on its answer instead.
                    if started.load(Ordering::Acquire) > 0 {
                        conn.as_mut().graceful_shutdown();
                    }
                    told = true;
                }
            }
        }
    }
}
