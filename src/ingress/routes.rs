//! Routes: `POST /hooks/{name}`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! The order of checks is chosen so that nothing is read that would be refused
//! anyway: route, method, enabled, declared length, media type, then the body
//! (with its limit and deadline), the signature, and only then the spool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::response::{self, Body, Refusal};
use super::verify::Verifier;
use crate::config::{Config, HookConfig};
use crate::metrics::{Gauges, Metrics, Reject};
use crate::spool::{Enqueued, NewItem, Spool};

/// One configured hook, ready to serve.
pub struct Route {
    pub hook: HookConfig,
    pub verifier: Verifier,
    pub max_body: u64,
}

/// Fills the gauges that ingress does not own (deliveries, drain state).
pub type GaugeSource = Arc<dyn Fn(&mut Gauges) + Send + Sync>;

/// Everything a request handler needs; shared by all connections.
pub struct Ingress {
    pub routes: HashMap<String, Route>,
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub read_timeout: Duration,
    /// False before start-up completes and after a hand-off: `/readyz` says 503.
    pub ready: Arc<AtomicBool>,
    pub gauges: GaugeSource,
}

impl Ingress {
    /// Builds the routes of `cfg`, reading every hook's secret: the check
    /// `serve`, `check-config` and a reload all run before they accept a config.
    pub fn routes(cfg: &Config) -> Result<HashMap<String, Route>, String> {
        let secrets = cfg.load_secrets().map_err(|e| e.to_string())?;
        let mut routes = HashMap::new();
        for (h, secret) in cfg.hooks.iter().map(|h| h.get_ref()).zip(secrets) {
            let verifier =
                Verifier::new(&h.verify, secret).map_err(|e| format!("hook {:?}: {e}", h.name))?;
            routes.insert(
                h.name.clone(),
                Route {
                    hook: h.clone(),
                    verifier,
                    max_body: h.max_body.unwrap_or(cfg.server.max_body),
                },
            );
        }
        Ok(routes)
    }
}

/// Answers one request. Never fails: every error is an HTTP answer.
pub async fn handle(ing: Arc<Ingress>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(name) = path.strip_prefix("/hooks/") {
        let name = name.to_string();
        return match hook(&ing, &name, req).await {
            Ok(resp) => resp,
            Err(refusal) => refused(&ing, &name, refusal),
        };
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        // Not counted: the refusal counter is about webhooks.
        "/healthz" | "/readyz" | "/metrics" if !get => Refusal::method("GET").into_response(),
        "/healthz" => healthz(&ing).await,
        "/readyz" => {
            if ing.ready.load(Ordering::Acquire) {
                response::json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            } else {
                response::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "not accepting webhooks now",
                )
            }
        }
        "/metrics" => metrics(&ing).await,
        _ => refused(
            &ing,
            "",
            Refusal::new(
                Reject::UnknownHook,
                "no such route; webhooks go to POST /hooks/<name>",
            )
            .answered_as(StatusCode::NOT_FOUND, "not_found"),
        ),
    }
}

async fn healthz(ing: &Ingress) -> Response<Body> {
    match tokio::time::timeout(Duration::from_secs(2), ing.spool.depth()).await {
        Ok(Ok(_)) => response::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Ok(Err(e)) => response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool_unavailable",
            &e.to_string(),
        ),
        Err(_) => response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool_unavailable",
            "spool did not answer within 2s",
        ),
    }
}

async fn metrics(ing: &Ingress) -> Response<Body> {
    let mut g = Gauges::default();
    if let Ok(rows) = ing.spool.depth().await {
        g.depth = rows
            .into_iter()
            .map(|r| (r.hook, r.state.as_str().to_string(), r.count))
            .collect();
    }
    (ing.gauges)(&mut g);
    response::text(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        ing.metrics.render(&g),
    )
}

/// Counts a refusal under `hook` and answers it.
fn refused(ing: &Ingress, hook: &str, refusal: Refusal) -> Response<Body> {
    // A name that is not configured is no label: senders could grow the
    // series without bound by inventing names.
    let hook = if refusal.reason == Reject::UnknownHook {
        ""
    } else {
        hook
    };
    ing.metrics.rejected(hook, refusal.reason);
    refusal.into_response()
}

/// `POST /hooks/{name}`: the checks in order, each one step, so that nothing
/// is read that would be refused anyway.
async fn hook(
    ing: &Ingress,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let route = find_route(ing, name)?;
    check_method(req.method())?;
    ing.metrics.received(name);
    check_enabled(route)?;
    let (parts, body) = req.into_parts();
    check_declared_length(route, &parts.headers)?;
    check_media_type(route, &parts.headers)?;
    let body = read_body(route, body, ing.read_timeout).await?;
    let now = SystemTime::now();
    check_signature(route, &parts.headers, &body, now)?;
    check_json_body(route, &body)?;
    let dedup_id = delivery_id(route, &parts.headers)?;
    spool(ing, name, dedup_id, &parts.headers, body, now).await
}

fn find_route<'a>(ing: &'a Ingress, name: &str) -> Result<&'a Route, Refusal> {
    ing.routes
        .get(name)
        .ok_or_else(|| Refusal::new(Reject::UnknownHook, format!("no hook named {name:?}")))
}

fn check_method(method: &Method) -> Result<(), Refusal> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(Refusal::method("POST"))
    }
}

fn check_enabled(route: &Route) -> Result<(), Refusal> {
    if route.hook.enabled {
        Ok(())
    } else {
        Err(Refusal::new(Reject::Disabled, "this hook is disabled; retry later").retry_after(60))
    }
}

/// Refuses before reading a body whose declared size is already too large,
/// or whose size is not declared at all (neither a length nor chunked).
fn check_declared_length(route: &Route, headers: &HeaderMap) -> Result<(), Refusal> {
    match declared_length(headers) {
        Ok(Some(n)) if n > route.max_body => Err(too_large(route.max_body)),
        Ok(Some(_)) => Ok(()),
        Ok(None) if is_chunked(headers) => Ok(()),
        Ok(None) => Err(Refusal::new(
            Reject::LengthRequired,
            "send Content-Length or a chunked body",
        )),
        Err(()) => Err(Refusal::new(
            Reject::Malformed,
            "Content-Length is not a number",
        )),
    }
}

fn check_media_type(route: &Route, headers: &HeaderMap) -> Result<(), Refusal> {
    if route.hook.require_json && !is_json(headers) {
        return Err(Refusal::new(
            Reject::UnsupportedMedia,
            "this hook takes Content-Type: application/json",
        ));
    }
    Ok(())
}

/// The whole body, within the hook's size limit and the read deadline.
async fn read_body(route: &Route, body: Incoming, deadline: Duration) -> Result<Bytes, Refusal> {
    let limit = usize::try_from(route.max_body).unwrap_or(usize::MAX);
    match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(Refusal::new(
            Reject::Timeout,
            "the body did not arrive within the read timeout",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(route.max_body)),
        Ok(Err(e)) => Err(Refusal::new(
            Reject::Malformed,
            format!("could not read the body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn check_signature(
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Refusal> {
    route.verifier.verify(headers, body, now).map_err(|e| {
        let why = match e.status() {
            StatusCode::UNAUTHORIZED => Reject::Unauthorized,
            StatusCode::FORBIDDEN => Reject::Forbidden,
            _ => Reject::Malformed,
        };
        // The scheme's own status and code say more than the generic ones.
        Refusal::new(why, e.to_string()).answered_as(e.status(), e.code())
    })
}

fn check_json_body(route: &Route, body: &[u8]) -> Result<(), Refusal> {
    if route.hook.require_json && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return Err(Refusal::new(
            Reject::Malformed,
            "the body is not valid JSON",
        ));
    }
    Ok(())
}

/// The sender's delivery id from the hook's dedup header, if it has one and
/// the request carries it.
fn delivery_id(route: &Route, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(v) = route
        .hook
        .dedup_header
        .as_deref()
        .and_then(|h| headers.get(h))
    else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.is_empty() => Ok(Some(s.to_string())),
        _ => Err(Refusal::new(
            Reject::Malformed,
            "the delivery id header is empty or not visible ASCII",
        )),
    }
}

/// Answers 202 only once the item is committed; a duplicate of a committed
/// item is 200 with the first one's id.
async fn spool(
    ing: &Ingress,
    name: &str,
    dedup_id: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
    now: SystemTime,
) -> Result<Response<Body>, Refusal> {
    let item = NewItem {
        hook: name.to_string(),
        dedup_id,
        received_at: now,
        headers: kept_headers(headers),
        body,
    };
    match ing.spool.enqueue(item).await {
        Ok(Enqueued::New(id)) => {
            ing.metrics.spooled(name);
            Ok(response::json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"id": id, "status": "queued"}),
            ))
        }
        Ok(Enqueued::Duplicate(id)) => {
            ing.metrics.duplicate(name);
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "status": "duplicate"}),
            ))
        }
        Err(e) => {
            tracing::error!(hook = name, error = %e, hookd_event = "spool_commit_failed", "could not spool a webhook; answered 503");
            Err(Refusal::new(
                Reject::SpoolUnavailable,
                "the spool cannot commit now; retry later",
            )
            .retry_after(5))
        }
    }
}

fn too_large(max: u64) -> Refusal {
    Refusal::new(
        Reject::TooLarge,
        format!("the body is larger than this hook's limit of {max} bytes"),
    )
}

fn declared_length(h: &HeaderMap) -> Result<Option<u64>, ()> {
    match h.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or(()),
    }
}

fn is_chunked(h: &HeaderMap) -> bool {
    h.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("chunked"))
    })
}

fn is_json(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Headers worth keeping with the item: everything but the connection's own
/// and credentials (a bearer token is checked, never stored).
fn kept_headers(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    const DROP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "authorization",
        "proxy-authorization",
    ];
    h.iter()
        .filter(|(n, _)| !DROP.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/vnd.github+json".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert!(!is_json(&h));
    }

    #[test]
    fn connection_headers_are_not_kept() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive".parse().unwrap());
        h.insert("host", "x".parse().unwrap());
        h.insert("x-github-event", "push".parse().unwrap());
        let kept = kept_headers(&h);
        assert_eq!(kept, vec![("x-github-event".to_string(), b"push".to_vec())]);
    }
}
