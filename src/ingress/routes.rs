//! Routes: `POST /hooks/{name}`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! The order of checks is chosen so that nothing is read that would be refused
//! anyway: route, method, client address, enabled, declared length, media
//! type, signature headers present, a share of the body budget, then the body
//! (with its limit and deadline), the signature, and only then the spool.
//!
//! `/metrics` tells a stranger which hooks exist and how busy they are, so
//! the webhook listeners (which face the internet, often through a proxy on
//! loopback, where the peer address says nothing) do not serve it unless
//! `server.metrics_on_webhook_listener` says so; `server.metrics_listen` (or
//! a socket named `metrics`) gets listeners that serve only it and the probes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::access::{self, Cidr, Peer, CLIENT_ADDR_HEADER, QUERY_HEADER};
use super::budget::{Budget, Reservation};
use super::handshake::Handshaker;
use super::response::{self, Body, Refusal};
use super::verify::Verifier;
use crate::config::{Config, HookConfig};
use crate::metrics::{Gauges, Metrics, Reject};
use crate::replies::Replies;
use crate::spool::{Enqueued, NewItem, Repeats, ReplayKey, Spool, DEFAULT_ROUTE};

/// One configured hook, ready to serve.
#[derive(Clone)]
pub(crate) struct Route {
    pub hook: HookConfig,
    pub verifier: Verifier,
    pub max_body: u64,
    /// Client blocks allowed to call; `None` allows every client.
    pub(crate) allow: Option<Vec<Cidr>>,
    /// The provider's handshake (preset), answered without spooling.
    pub(crate) handshake: Option<Handshaker>,
}

/// Fills the gauges that ingress does not own (deliveries, drain state).
pub(crate) type GaugeSource = Arc<dyn Fn(&mut Gauges) + Send + Sync>;

/// Everything a request handler needs; shared by all connections.
pub(crate) struct Ingress {
    pub routes: HashMap<String, Route>,
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub read_timeout: Duration,
    /// False before start-up completes and after a hand-off: `/readyz` says 503.
    pub ready: Arc<AtomicBool>,
    pub gauges: GaugeSource,
    /// Bodies held at once, across all connections of every listener.
    pub(crate) budget: Arc<Budget>,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) commit_timeout: Duration,
    /// What these listeners serve besides the probes.
    pub(crate) role: Role,
    /// First-attempt results, for hooks with `respond.wait`.
    pub(crate) replies: Arc<Replies>,
}

/// What a set of listeners serves; `/healthz` and `/readyz` are on all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `POST /hooks/{name}`, and `/metrics` only when asked for.
    Webhooks { metrics: bool },
    /// `/metrics` and nothing of the hooks.
    Metrics,
}

impl Role {
    fn hooks(self) -> bool {
        matches!(self, Role::Webhooks { .. })
    }

    fn metrics(self) -> bool {
        matches!(self, Role::Metrics | Role::Webhooks { metrics: true })
    }
}

impl Ingress {
    /// The ingress of one role; the metrics listeners get no hook routes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &Config,
        role: Role,
        routes: HashMap<String, Route>,
        spool: Spool,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        gauges: GaugeSource,
        budget: &Arc<Budget>,
        replies: &Arc<Replies>,
    ) -> Ingress {
        Ingress {
            routes: if role.hooks() { routes } else { HashMap::new() },
            spool,
            metrics,
            read_timeout: cfg.server.read_timeout,
            ready,
            gauges,
            budget: budget.clone(),
            trusted_proxies: cfg.server.trusted_proxies.clone(),
            commit_timeout: cfg.spool.commit_timeout,
            role,
            replies: replies.clone(),
        }
    }
}

impl Ingress {
    /// Builds the routes of `cfg`, reading every hook's secret: the check
    /// `serve`, `check-config` and a reload all run before they accept a config.
    pub(crate) fn routes(cfg: &Config) -> Result<HashMap<String, Route>, String> {
        let secrets = cfg.load_secrets().map_err(|e| e.to_string())?;
        let mut routes = HashMap::new();
        for (h, secret) in cfg.hooks.iter().map(|h| h.get_ref()).zip(secrets) {
            let hook_err = |e: String| format!("hook {:?}: {e}", h.name);
            let verifier = Verifier::new(&h.verify, secret.keys).map_err(hook_err)?;
            let handshake =
                Handshaker::new(h.preset, secret.verify_token.as_deref()).map_err(hook_err)?;
            let allow = h
                .allow_list()
                .map_err(|e| format!("{}: hook {:?}: {e}", cfg.source.display(), h.name))?;
            routes.insert(
                h.name.clone(),
                Route {
                    hook: h.clone(),
                    verifier,
                    max_body: h.max_body.unwrap_or(cfg.server.max_body),
                    allow,
                    handshake,
                },
            );
        }
        Ok(routes)
    }
}

/// Answers one request. Never fails: every error is an HTTP answer.
pub(crate) async fn handle(ing: Arc<Ingress>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(name) = path.strip_prefix("/hooks/").filter(|_| ing.role.hooks()) {
        let name = name.to_string();
        return match hook(&ing, &name, req).await {
            Ok(resp) => resp,
            Err(refusal) => refused(&ing, &name, refusal),
        };
    }
    let served = match path {
        "/healthz" | "/readyz" => true,
        "/metrics" => ing.role.metrics(),
        _ => false,
    };
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        // Not counted: the refusal counter is about webhooks.
        _ if served && !get => Refusal::method("GET").into_response(),
        "/healthz" => healthz(&ing).await,
        "/readyz" => {
            if !ing.ready.load(Ordering::Acquire) {
                response::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "not accepting webhooks now",
                )
            } else if !ing.spool.reachable() {
                response::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "spool_unavailable",
                    "the spool's database does not answer this node",
                )
            } else {
                response::json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            }
        }
        "/metrics" if served => metrics(&ing).await,
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
            .map(|r| {
                let route = r.route.unwrap_or_else(|| DEFAULT_ROUTE.to_string());
                (r.hook, route, r.state.as_str().to_string(), r.count)
            })
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
    let peer = req
        .extensions()
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer(None));
    let client = access::client_addr(peer, req.headers(), &ing.trusted_proxies);
    check_client(route, client)?;
    check_enabled(route)?;
    // Provider handshake by GET (Meta): answered here, never spooled.
    if let Some(h) = &route.handshake {
        if let Some(r) = h.answer_get(name, &req) {
            return Ok(handshake_answered(ing, name, h, r));
        }
    }
    check_method(req.method())?;
    ing.metrics.received(name);
    let (parts, body) = req.into_parts();
    check_declared_length(route, &parts.headers)?;
    check_media_type(route, &parts.headers)?;
    check_signature_headers(route, &parts.headers)?;
    // Held until the answer is built: the body lives until the spool has it.
    let mut held = reserve(ing, &parts.headers)?;
    let body = read_body(route, body, ing.read_timeout, &mut held).await?;
    let now = SystemTime::now();
    let key_index = check_signature(route, &parts.headers, &body, now)?;
    route.verifier.log_match(name, key_index);
    // Provider handshake by signed POST (Slack, Twitch, Zoom): answered, never spooled.
    if let Some(h) = &route.handshake {
        if let Some(r) = h.answer_post(name, &parts.headers, &body, &route.verifier, key_index) {
            return Ok(handshake_answered(ing, name, h, r));
        }
    }
    check_json_body(route, &body)?;
    let dedup_id = delivery_id(route, &parts.headers, &body)?;
    let repeats = repeats(route, &parts.headers, &body);
    let matched = matched_routes(route, &parts, client, &body);
    let wanted = !matched.is_empty();
    let mut headers = parts.headers;
    // A shared token in its own header (scheme token) is a credential: not kept.
    if let Some(h) = route.verifier.credential_header() {
        headers.remove(h);
    }
    let headers = kept_headers(&headers, client, parts.uri.query());
    if !wanted && route.hook.keep_filtered.is_zero() {
        ing.metrics.filtered(name);
        return Ok(filtered(route, None));
    }
    let filtered_until = (!wanted).then(|| now + route.hook.keep_filtered);
    let item = NewItem {
        hook: name.to_string(),
        dedup_id,
        received_at: now,
        headers,
        body,
        repeats,
        filtered_until,
        routes: (route.hook.routed && wanted).then(|| matched.clone()),
        ordered: (route.hook.routes.iter())
            .filter(|r| r.ordered && matched.contains(&r.name))
            .map(|r| r.name.clone())
            .collect(),
    };
    spool(ing, route, name, item, &matched).await
}

/// The routes this request goes to, in the config's order: none if the
/// hook's `when` does not hold, else each route whose `when` holds (a hook
/// or route without one takes every request). A plain hook's one route is
/// `default`.
fn matched_routes(
    route: &Route,
    parts: &http::request::Parts,
    client: Option<std::net::IpAddr>,
    body: &[u8],
) -> Vec<String> {
    let hook = &route.hook;
    let names = |routes: &[crate::config::RouteConfig]| -> Vec<String> {
        routes.iter().map(|r| r.name.clone()).collect()
    };
    // No rule anywhere: the body is not parsed.
    if hook.when.is_none() && hook.routes.iter().all(|r| r.when.is_none()) {
        return names(&hook.routes);
    }
    let view = crate::request::RequestView {
        method: parts.method.as_str(),
        headers: &parts.headers,
        query: parts.uri.query(),
        remote_ip: client,
        body,
    };
    let fields = view.fields();
    let holds = |when: &Option<Vec<crate::config::Rule>>| {
        when.as_ref()
            .is_none_or(|w| super::rules::matches(w, &fields))
    };
    if !holds(&route.hook.when) {
        return Vec::new();
    }
    route
        .hook
        .routes
        .iter()
        .filter(|r| holds(&r.when))
        .map(|r| r.name.clone())
        .collect()
}

/// The answer to a request `when` did not match: `filtered_status` and
/// `{"status":"filtered"}`, with the id it is kept under, if it is.
fn filtered(route: &Route, id: Option<i64>) -> Response<Body> {
    let status = StatusCode::from_u16(route.hook.filtered_status).unwrap_or(StatusCode::OK);
    let body = match id {
        Some(id) => serde_json::json!({"id": id, "status": "filtered"}),
        None => serde_json::json!({"status": "filtered"}),
    };
    response::json(status, &body)
}

/// How the spool tells this request's repeats: the hook's dedup window,
/// and a replay key when the hook has replay protection (always for a
/// signed timestamp, within twice its tolerance: the longest two copies
/// can both pass the timestamp check; else with `replay_window`).
fn repeats(route: &Route, headers: &HeaderMap, body: &[u8]) -> Repeats {
    let v = &route.verifier;
    let window = if v.timestamped() {
        Some(v.tolerance().saturating_mul(2))
    } else {
        route.hook.replay_window
    };
    Repeats {
        dedup_window: route.hook.dedup.as_ref().and_then(|d| d.window),
        replay: window.and_then(|window| {
            v.signed_digest(headers, body)
                .map(|digest| ReplayKey { digest, window })
        }),
    }
}

/// Counts a handshake that was answered with its challenge (a refused one,
/// a 4xx, is not a handshake done).
fn handshake_answered(
    ing: &Ingress,
    name: &str,
    h: &Handshaker,
    r: Response<Body>,
) -> Response<Body> {
    if r.status() == StatusCode::OK {
        ing.metrics.handshake(name, h.kind().label());
    }
    r
}

/// Refuses a client outside the hook's `allow_ips`, or one whose address
/// could not be established while the hook has a list.
fn check_client(route: &Route, client: Option<std::net::IpAddr>) -> Result<(), Refusal> {
    let Some(allow) = &route.allow else {
        return Ok(());
    };
    match client {
        Some(ip) if access::listed(allow, ip) => Ok(()),
        Some(ip) => Err(Refusal::new(
            Reject::IpNotAllowed,
            format!("{ip} may not call this hook"),
        )),
        None => Err(Refusal::new(
            Reject::IpNotAllowed,
            "the client address could not be established (unreadable forwarding header, or a unix-socket peer that is not a trusted proxy)",
        )),
    }
}

/// Refuses, before the body is read, a request whose credential headers
/// already fail: missing, malformed, or a wrong token. No body could make it pass.
fn check_signature_headers(route: &Route, headers: &HeaderMap) -> Result<(), Refusal> {
    route
        .verifier
        .check_headers(headers, SystemTime::now())
        .map_err(|e| signature_refusal(route, e))
}

/// This request's share of the body budget: its declared length now, or
/// nothing yet for a chunked body (which grows it as it arrives).
fn reserve(ing: &Ingress, headers: &HeaderMap) -> Result<Reservation, Refusal> {
    let mut held = Reservation::empty(&ing.budget);
    let declared = declared_length(headers).ok().flatten().unwrap_or(0);
    if !held.grow_to(declared) {
        return Err(busy());
    }
    Ok(held)
}

/// The most of a declared body allocated before it arrives.
const PREALLOCATE: u64 = 16 << 20;

fn busy() -> Refusal {
    Refusal::new(
        Reject::Busy,
        "hookd holds as many request bodies as server.max_buffered allows; retry later",
    )
    .retry_after(5)
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

/// The whole body, within the hook's size limit, the read deadline and the
/// shared body budget (`held` grows with every chunk past what it holds).
async fn read_body(
    route: &Route,
    mut body: Incoming,
    deadline: Duration,
    held: &mut Reservation,
) -> Result<Bytes, Refusal> {
    // One allocation for a declared body of common size (it is within
    // max_body and already reserved); a larger or chunked one grows as it
    // comes, so a huge limit is never allocated on a sender's word alone.
    let declared = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
    let first = declared.min(PREALLOCATE);
    let mut buf = BytesMut::with_capacity(usize::try_from(first).unwrap_or(0));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Refusal::new(Reject::Malformed, format!("could not read the body: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let total = buf.len() as u64 + data.len() as u64;
            if total > route.max_body {
                return Err(too_large(route.max_body));
            }
            if !held.grow_to(total) {
                return Err(busy());
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(deadline, read).await {
        Err(_) => Err(Refusal::new(
            Reject::Timeout,
            "the body did not arrive within the read timeout",
        )),
        Ok(Err(refusal)) => Err(refusal),
        Ok(Ok(())) => Ok(buf.freeze()),
    }
}

fn check_signature(
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<usize, Refusal> {
    route
        .verifier
        .verify(headers, body, now)
        .map_err(|e| signature_refusal(route, e))
}

fn signature_refusal(route: &Route, e: super::verify::VerifyError) -> Refusal {
    let why = match e.status() {
        StatusCode::UNAUTHORIZED => Reject::Unauthorized,
        StatusCode::FORBIDDEN => Reject::Forbidden,
        _ => Reject::Malformed,
    };
    // The scheme's own status and code say more than the generic ones.
    Refusal::new(why, e.to_string())
        .answered_as(e.status(), e.code())
        .challenge(route.verifier.challenge())
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

/// The sender's delivery id, from the hook's dedup key (a header or a body
/// field), if it has one and the request carries it.
fn delivery_id(route: &Route, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, Refusal> {
    super::dedup_key::extract(route.hook.dedup.as_ref().map(|d| &d.key), headers, body)
        .map_err(|msg| Refusal::new(Reject::Malformed, msg))
}

/// Answers 202 only once the item is committed; a duplicate of a committed
/// item is 200 with the first one's id.
async fn spool(
    ing: &Ingress,
    route: &Route,
    name: &str,
    item: NewItem,
    matched: &[String],
) -> Result<Response<Body>, Refusal> {
    let filtered_item = item.filtered_until.is_some();
    // The item may still commit after the deadline; the sender, told 503,
    // retries, and the dedup header or the action's idempotence absorbs the
    // copy. Never the other way round: no 2xx before the commit.
    let Ok(enqueued) = tokio::time::timeout(ing.commit_timeout, ing.spool.enqueue(item)).await
    else {
        tracing::error!(hook = name, timeout = %humantime::format_duration(ing.commit_timeout), hookd_event = "spool_commit_timeout", "the spool did not commit within spool.commit_timeout; answered 503");
        return Err(Refusal::new(
            Reject::SpoolUnavailable,
            "the spool did not commit in time; retry later",
        )
        .retry_after(5));
    };
    match enqueued {
        Ok(Enqueued::New(id)) if filtered_item => {
            ing.metrics.filtered(name);
            Ok(filtered(route, Some(id)))
        }
        Ok(Enqueued::New(id)) => {
            ing.metrics.spooled(name);
            let respond = route.hook.respond.as_ref();
            let first_route = matched.first().map_or(DEFAULT_ROUTE, String::as_str);
            if let Some(wait) = respond.and_then(|r| r.wait) {
                // Durable already: waiting only chooses the answer. The
                // first matched route's first attempt answers.
                let result = ing.replies.wait(id, first_route);
                match tokio::time::timeout(wait, result).await {
                    Ok(Ok(first)) => return Ok(super::respond::first_attempt(id, first)),
                    _ => ing.replies.forget(id, first_route),
                }
            }
            if let Some(r) = respond.filter(|r| r.fixed) {
                return Ok(super::respond::configured(r));
            }
            Ok(response::json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"id": id, "status": "queued", "routes": matched}),
            ))
        }
        Ok(Enqueued::Revived(id)) => {
            tracing::info!(
                hook = name,
                delivery_id = id,
                hookd_event = "revived",
                "a redelivery of dead item {id}: pending again with a fresh attempt count"
            );
            ing.metrics.revived(name);
            if let Some(r) = route.hook.respond.as_ref().filter(|r| r.fixed) {
                return Ok(super::respond::configured(r));
            }
            Ok(response::json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"id": id, "status": "revived"}),
            ))
        }
        Ok(Enqueued::Replay(id)) => {
            tracing::warn!(
                hook = name,
                delivery_id = id,
                hookd_event = "replay",
                "the same signed request as item {id} within its replay window; not spooled"
            );
            ing.metrics.duplicate(name);
            ing.metrics.replay(name);
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "status": "duplicate"}),
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
/// and credentials (a bearer token is checked, never stored), plus the client
/// address hookd established under [`CLIENT_ADDR_HEADER`] (a sender's own
/// header of that name is dropped: only hookd writes it), and the query
/// string under [`QUERY_HEADER`] (likewise).
fn kept_headers(
    h: &HeaderMap,
    client: Option<std::net::IpAddr>,
    query: Option<&str>,
) -> Vec<(String, Vec<u8>)> {
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
        CLIENT_ADDR_HEADER,
        QUERY_HEADER,
    ];
    let mut kept: Vec<(String, Vec<u8>)> = h
        .iter()
        .filter(|(n, _)| !DROP.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    if let Some(ip) = client {
        kept.push((CLIENT_ADDR_HEADER.to_string(), ip.to_string().into_bytes()));
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        kept.push((QUERY_HEADER.to_string(), q.as_bytes().to_vec()));
    }
    kept
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
        h.insert(CLIENT_ADDR_HEADER, "6.6.6.6".parse().unwrap());
        h.insert(QUERY_HEADER, "env=forged".parse().unwrap());
        let kept = kept_headers(&h, Some("192.0.2.1".parse().unwrap()), Some("env=prod"));
        assert_eq!(
            kept,
            vec![
                ("x-github-event".to_string(), b"push".to_vec()),
                (CLIENT_ADDR_HEADER.to_string(), b"192.0.2.1".to_vec()),
                (QUERY_HEADER.to_string(), b"env=prod".to_vec())
            ]
        );
    }
}
