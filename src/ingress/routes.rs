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

use super::handshake::Handshaker;
use super::response::{self, Body};
use super::verify::Verifier;
use crate::config::{Config, HookConfig};
use crate::metrics::{Gauges, Metrics, Reject};
use crate::spool::{Enqueued, NewItem, Spool};

/// One configured hook, ready to serve.
pub struct Route {
    pub hook: HookConfig,
    pub verifier: Verifier,
    pub max_body: u64,
    /// The provider's handshake (preset), answered without spooling.
    pub handshake: Option<Handshaker>,
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
            let hook_err = |e: String| format!("hook {:?}: {e}", h.name);
            let verifier = Verifier::new(&h.verify, secret.keys).map_err(hook_err)?;
            let handshake =
                Handshaker::new(h.preset, secret.verify_token.as_deref()).map_err(hook_err)?;
            routes.insert(
                h.name.clone(),
                Route {
                    hook: h.clone(),
                    verifier,
                    max_body: h.max_body.unwrap_or(cfg.server.max_body),
                    handshake,
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
        return hook(&ing, &name, req).await;
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/healthz" | "/readyz" | "/metrics" if !get => method_not_allowed("GET"),
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
        _ => {
            ing.metrics.rejected("", Reject::UnknownHook);
            response::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; webhooks go to POST /hooks/<name>",
            )
        }
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

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let (status, code) = Reject::Method.answer();
    let mut r = response::error(status, code, &format!("use {allow}"));
    r.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// Counts the refusal and answers with its status and a JSON body.
fn reject(ing: &Ingress, hook: &str, why: Reject, msg: &str) -> Response<Body> {
    ing.metrics.rejected(hook, why);
    let (status, code) = why.answer();
    response::error(status, code, msg)
}

impl Reject {
    /// The status and JSON `error` code of each refusal. Signature failures
    /// are answered by [`Verifier`]'s own codes instead.
    fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Reject::UnknownHook => (StatusCode::NOT_FOUND, "unknown_hook"),
            Reject::Disabled => (StatusCode::SERVICE_UNAVAILABLE, "hook_disabled"),
            Reject::LengthRequired => (StatusCode::LENGTH_REQUIRED, "length_required"),
            Reject::Malformed => (StatusCode::BAD_REQUEST, "malformed"),
            Reject::UnsupportedMedia => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Reject::Timeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Reject::SpoolUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "spool_unavailable"),
            Reject::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Reject::Method => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Reject::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Reject::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        }
    }
}

async fn hook(ing: &Ingress, name: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(route) = ing.routes.get(name) else {
        return reject(
            ing,
            "",
            Reject::UnknownHook,
            &format!("no hook named {name:?}"),
        );
    };
    // Provider handshake by GET (Meta): answered here, never spooled.
    if let Some(r) = route
        .handshake
        .as_ref()
        .and_then(|h| h.answer_get(name, &req))
    {
        return r;
    }
    if req.method() != Method::POST {
        ing.metrics.rejected(name, Reject::Method);
        return method_not_allowed("POST");
    }
    ing.metrics.received(name);
    if !route.hook.enabled {
        let r = reject(
            ing,
            name,
            Reject::Disabled,
            "this hook is disabled; retry later",
        );
        return response::retry_after(r, 60);
    }
    let (parts, body) = req.into_parts();
    match declared_length(&parts.headers) {
        Ok(Some(n)) if n > route.max_body => {
            return too_large(ing, name, route.max_body);
        }
        Ok(Some(_)) => {}
        Ok(None) if is_chunked(&parts.headers) => {}
        Ok(None) => {
            return reject(
                ing,
                name,
                Reject::LengthRequired,
                "send Content-Length or a chunked body",
            );
        }
        Err(()) => {
            return reject(
                ing,
                name,
                Reject::Malformed,
                "Content-Length is not a number",
            );
        }
    }
    if route.hook.require_json && !is_json(&parts.headers) {
        return reject(
            ing,
            name,
            Reject::UnsupportedMedia,
            "this hook takes Content-Type: application/json",
        );
    }
    let limit = usize::try_from(route.max_body).unwrap_or(usize::MAX);
    let body =
        match tokio::time::timeout(ing.read_timeout, Limited::new(body, limit).collect()).await {
            Err(_) => {
                return reject(
                    ing,
                    name,
                    Reject::Timeout,
                    "the body did not arrive within the read timeout",
                );
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return too_large(ing, name, route.max_body);
            }
            Ok(Err(e)) => {
                return reject(
                    ing,
                    name,
                    Reject::Malformed,
                    &format!("could not read the body: {e}"),
                );
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
    let now = SystemTime::now();
    let verified = route.verifier.verify(&parts.headers, &body, now);
    if let Err(e) = &verified {
        let why = match e.status() {
            StatusCode::UNAUTHORIZED => Reject::Unauthorized,
            StatusCode::FORBIDDEN => Reject::Forbidden,
            _ => Reject::Malformed,
        };
        // The scheme's own status and code say more than the generic ones.
        ing.metrics.rejected(name, why);
        return response::error(e.status(), e.code(), &e.to_string());
    }
    let key_index = verified.unwrap_or_default();
    route.verifier.log_match(name, key_index);
    // Provider handshake by signed POST (Slack, Twitch, Zoom): answered, never spooled.
    if let Some(r) = route
        .handshake
        .as_ref()
        .and_then(|h| h.answer_post(name, &parts.headers, &body, &route.verifier, key_index))
    {
        return r;
    }
    if route.hook.require_json && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return reject(ing, name, Reject::Malformed, "the body is not valid JSON");
    }
    let dedup_id = match super::dedup_key::extract(
        route.hook.dedup.as_ref().map(|d| &d.key),
        &parts.headers,
        &body,
    ) {
        Ok(id) => id,
        Err(msg) => return reject(ing, name, Reject::Malformed, &msg),
    };
    let mut headers = parts.headers;
    // A shared token in its own header (scheme token) is a credential: not kept.
    if let Some(h) = route.verifier.credential_header() {
        headers.remove(h);
    }
    spool(ing, route, name, dedup_id, &headers, body, now).await
}

async fn spool(
    ing: &Ingress,
    route: &Route,
    name: &str,
    dedup_id: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
    now: SystemTime,
) -> Response<Body> {
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
            if let Some(r) = &route.hook.respond {
                return super::respond::configured(r);
            }
            response::json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"id": id, "status": "queued"}),
            )
        }
        Ok(Enqueued::Duplicate(id)) => {
            ing.metrics.duplicate(name);
            response::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "status": "duplicate"}),
            )
        }
        Err(e) => {
            tracing::error!(hook = name, error = %e, hookd_event = "spool_commit_failed", "could not spool a webhook; answered 503");
            let r = reject(
                ing,
                name,
                Reject::SpoolUnavailable,
                "the spool cannot commit now; retry later",
            );
            response::retry_after(r, 5)
        }
    }
}

fn too_large(ing: &Ingress, hook: &str, max: u64) -> Response<Body> {
    reject(
        ing,
        hook,
        Reject::TooLarge,
        &format!("the body is larger than this hook's limit of {max} bytes"),
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
