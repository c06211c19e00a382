use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::config::{self, ActionKind};
use crate::delivery::Action;
use crate::spool::{Item, ItemState};

/// What the upstream saw.
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A real HTTP/1.1 upstream on 127.0.0.1:0. `/ok` answers 200, `/fail` 500 with
/// a long body, `/slow` never answers.
struct Upstream {
    base: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    connections: Arc<AtomicUsize>,
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, seen) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let conns = connections.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        tx.send(Seen {
                            path: path.clone(),
                            headers,
                            body,
                        })
                        .unwrap();
                        let resp = match path.as_str() {
                            "/ok" => Response::new(Full::new(Bytes::from_static(b"fine"))),
                            "/fail" => {
                                let mut r = Response::new(Full::new(Bytes::from(format!(
                                    "boom\n{}",
                                    "x".repeat(300)
                                ))));
                                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                r
                            }
                            _ => std::future::pending().await,
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        base,
        seen,
        connections,
    }
}

fn item() -> Item {
    Item {
        id: 42,
        hook: "github".into(),
        dedup_id: None,
        received_at: SystemTime::now(),
        headers: vec![
            ("x-github-event".into(), b"push".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
            ("authorization".into(), b"Bearer secret".to_vec()),
            ("host".into(), b"example.org".to_vec()),
            ("content-length".into(), b"999".to_vec()),
            ("connection".into(), b"close".to_vec()),
            ("hookd-attempt".into(), b"77".to_vec()),
            ("x-multi".into(), b"a".to_vec()),
            ("x-multi".into(), b"b".to_vec()),
            ("x-forwarded-for".into(), b"6.6.6.6".to_vec()),
            ("x-forwarded-host".into(), b"evil.example".to_vec()),
            ("forwarded".into(), b"for=6.6.6.6".to_vec()),
            ("x-real-ip".into(), b"6.6.6.6".to_vec()),
            ("hookd-client-addr".into(), b"192.0.2.7".to_vec()),
        ],
        body: Bytes::from_static(b"{\"ref\":\"main\"}"),
        state: ItemState::Leased,
        attempts: 2,
        next_attempt: SystemTime::now(),
        last_error: None,
        lease_owner: None,
        lease_expiry: None,
        lease_gen: None,
        delivery: None,
    }
}

const T: Duration = Duration::from_secs(10);

/// A hook's forward action as its delivery loop builds it.
fn forward(client: &ForwardClient, url: String, allow: &[&str], timeout: Duration) -> Action {
    let cfg = config::Action {
        kind: ActionKind::Forward {
            url,
            headers: allow.iter().map(|h| h.to_string()).collect(),
        },
        timeout,
    };
    Action::new(&cfg, client, &Arc::default())
}

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

#[tokio::test]
async fn delivers_body_and_hookd_headers() {
    let mut up = upstream().await;
    let client = ForwardClient::new();
    let out = forward(&client, format!("{}/ok", up.base), &[], T)
        .attempt(&item(), 3, never())
        .await;
    assert_eq!(out, Outcome::Delivered);
    let seen = up.seen.recv().await.unwrap();
    assert_eq!(seen.path, "/ok");
    assert_eq!(&seen.body[..], b"{\"ref\":\"main\"}");
    let h = &seen.headers;
    assert_eq!(h["hookd-delivery-id"], "42");
    assert_eq!(h["hookd-attempt"], "3");
    assert_eq!(h["hookd-hook"], "github");
    assert_eq!(h["x-github-event"], "push");
    assert_eq!(h["content-type"], "application/json");
    let multi: Vec<_> = h.get_all("x-multi").iter().collect();
    assert_eq!(multi, vec!["a", "b"]);
    // Filtered: Authorization by default; framing and connection headers always.
    assert!(h.get("authorization").is_none());
    assert_eq!(h["content-length"], "14");
    assert_ne!(h["host"], "example.org");
    assert!(h.get("connection").is_none());
    assert_eq!(h.get_all("hookd-attempt").iter().count(), 1);
    // Who the client is, hookd says: the sender's own claims stay behind.
    let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff, vec!["192.0.2.7"]);
    for gone in [
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "hookd-client-addr",
    ] {
        assert!(h.get(gone).is_none(), "{gone} was passed on");
    }
}

#[tokio::test]
async fn allow_list_passes_only_listed_headers() {
    let mut up = upstream().await;
    let client = ForwardClient::new();
    let allow = ["X-GitHub-Event", "Authorization"];
    let out = forward(&client, format!("{}/ok", up.base), &allow, T)
        .attempt(&item(), 1, never())
        .await;
    assert_eq!(out, Outcome::Delivered);
    let h = up.seen.recv().await.unwrap().headers;
    assert_eq!(h["x-github-event"], "push");
    assert_eq!(h["authorization"], "Bearer secret");
    assert!(h.get("content-type").is_none());
    assert!(h.get("x-multi").is_none());
    assert_eq!(h["hookd-delivery-id"], "42");
}

#[tokio::test]
async fn non_2xx_fails_with_status_and_body_start() {
    let up = upstream().await;
    let client = ForwardClient::new();
    let out = forward(&client, format!("{}/fail", up.base), &[], T)
        .attempt(&item(), 1, never())
        .await;
    let Outcome::Failed(msg) = out else {
        panic!("expected Failed, got {out:?}")
    };
    assert!(
        msg.starts_with("upstream answered 500 Internal Server Error: boom x"),
        "{msg}"
    );
    assert!(msg.len() < 260, "snippet not cut: {} bytes", msg.len());
}

#[tokio::test]
async fn no_answer_within_timeout_fails() {
    let up = upstream().await;
    let client = ForwardClient::new();
    let url = format!("{}/slow", up.base);
    let started = std::time::Instant::now();
    let out = forward(&client, url.clone(), &[], Duration::from_millis(300))
        .attempt(&item(), 1, never())
        .await;
    assert_eq!(
        out,
        Outcome::Failed(format!("upstream {url} did not answer within 300ms"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn cancel_gives_up_the_request() {
    let mut up = upstream().await;
    let client = ForwardClient::new();
    let action = forward(&client, format!("{}/slow", up.base), &[], T);
    let started = std::time::Instant::now();
    let it = item();
    // Cancelled once the upstream holds the request, so the request was really sent.
    let cancel = async {
        up.seen.recv().await;
    };
    let out = action.attempt(&it, 1, cancel).await;
    assert_eq!(out, Outcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn refused_connection_fails_clearly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ok", listener.local_addr().unwrap());
    drop(listener);
    let client = ForwardClient::new();
    let out = forward(&client, url.clone(), &[], T)
        .attempt(&item(), 1, never())
        .await;
    let Outcome::Failed(msg) = out else {
        panic!("expected Failed, got {out:?}")
    };
    assert!(
        msg.starts_with(&format!("cannot reach upstream {url}: ")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let mut up = upstream().await;
    let client = ForwardClient::new();
    let action = forward(&client, format!("{}/ok", up.base), &[], T);
    for attempt in 1..=3 {
        let out = action.attempt(&item(), attempt, never()).await;
        assert_eq!(out, Outcome::Delivered);
        up.seen.recv().await.unwrap();
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn header_filter_rules() {
    assert!(passes("X-Hub-Signature-256", &[]));
    assert!(!passes("Authorization", &[]));
    assert!(!passes("Transfer-Encoding", &[]));
    assert!(!passes("Hookd-Delivery-Id", &[]));
    let allow = vec!["authorization".to_string()];
    assert!(passes("Authorization", &allow));
    assert!(!passes("X-Hub-Signature-256", &allow));
    assert!(!passes("Host", &["host".to_string()]));
    assert!(!passes("X-Forwarded-For", &["x-forwarded-for".to_string()]));
    assert!(!passes("X-Forwarded-Proto", &[]));
    assert!(!passes("Forwarded", &[]));
    assert!(!passes("X-Real-IP", &[]));
}
