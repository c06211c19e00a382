//! Benchmark peer: the loopback ceiling. A bare hyper 1 HTTP/1.1 server
//! (tokio multi-thread, keep-alive) that reads the whole request body and
//! answers 204 to any method and path. Also serves as the upstream that
//! answers 2xx at once in the delivery benchmark.
//!
//! Usage: `bare_hyper [ADDR]` (default 127.0.0.1:9102). Prints `listening ADDR`
//! once bound; on SIGTERM/SIGINT prints `requests N` and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

async fn answer(
    req: Request<Incoming>,
    served: Arc<AtomicU64>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    // Read the body to the end, as any real receiver must.
    let status = match req.into_body().collect().await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_REQUEST,
    };
    served.fetch_add(1, Ordering::Relaxed);
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = status;
    Ok(resp)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9102".to_string())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let served = Arc::new(AtomicU64::new(0));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    eprintln!("accept: {err}");
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, served.clone()));
            // Keep-alive is hyper's default for HTTP/1.1.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    println!("requests {}", served.load(Ordering::Relaxed));
    Ok(())
}
