//! The `forward` action: POST the stored body to a local upstream.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{timeout_at, Instant};

use super::{human, Outcome};
use crate::ingress::access::CLIENT_ADDR_HEADER;
use crate::replies::{Reply, REPLY_LIMIT};
use crate::spool::Item;

/// How much of a non-2xx answer's body goes into the error message.
const ERROR_SNIPPET: usize = 200;

/// Headers that belong to one connection, or that the client sets itself, or
/// that say who the client is (a sender could write any of those; hookd sets
/// `X-Forwarded-For` itself from the address it established); never passed on.
const NEVER_PASSED: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// The HTTP/1.1 client every `forward` hook shares: pooled, keep-alive.
/// Build it once per process; clones share the pool.
#[derive(Clone)]
pub(crate) struct ForwardClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl ForwardClient {
    /// A client with a keep-alive pool; idle connections close after 30 s.
    pub(crate) fn new() -> ForwardClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        ForwardClient { inner }
    }
}

impl Default for ForwardClient {
    fn default() -> Self {
        ForwardClient::new()
    }
}

/// The `forward` action of one hook: where to POST and what to pass on.
pub(crate) struct Forward {
    /// Shared by every forward action of the process, for its connection pool.
    pub(crate) client: ForwardClient,
    pub(crate) url: String,
    /// Which stored request headers go upstream; see [`passes`].
    pub(crate) headers_allow: Vec<String>,
    pub(crate) timeout: Duration,
}

impl Forward {
    /// POSTs `item`'s body to the URL with its stored headers (filtered, see
    /// [`passes`]) plus `Hookd-Delivery-Id`, `Hookd-Attempt` (1-based) and
    /// `Hookd-Hook`. 2xx is [`Outcome::Delivered`]; any other answer, a connect
    /// error, or no answer within the timeout is [`Outcome::Failed`]. When
    /// `cancel` completes first the request is dropped and the result is
    /// [`Outcome::Cancelled`].
    ///
    /// Also returns the upstream's answer (status, content type, the first
    /// [`REPLY_LIMIT`] bytes of its body) when it gave one, for `respond.wait`.
    pub(crate) async fn attempt_with_reply(
        &self,
        item: &Item,
        attempt: u32,
        cancel: impl Future<Output = ()>,
    ) -> (Outcome, Option<Reply>) {
        tokio::select! {
            biased;
            answered = self.post(item, attempt) => answered,
            _ = cancel => (Outcome::Cancelled, None),
        }
    }

    async fn post(&self, item: &Item, attempt: u32) -> (Outcome, Option<Reply>) {
        let url = &self.url;
        let req = match self.request(item, attempt) {
            Ok(r) => r,
            Err(e) => {
                return (
                    Outcome::Failed(format!("cannot build request to {url}: {e}")),
                    None,
                )
            }
        };
        let deadline = Instant::now() + self.timeout;
        let resp = match timeout_at(deadline, self.client.inner.request(req)).await {
            Err(_) => {
                let why = format!(
                    "upstream {url} did not answer within {}",
                    human(self.timeout)
                );
                return (Outcome::Failed(why), None);
            }
            Ok(Err(e)) => {
                let why = format!("cannot reach upstream {url}: {}", chain(&e));
                return (Outcome::Failed(why), None);
            }
            Ok(Ok(resp)) => resp,
        };
        answer(resp, deadline).await
    }

    /// The POST for `item`'s `attempt`: its body, the stored headers that
    /// [`passes`] lets through, and hookd's own.
    fn request(&self, item: &Item, attempt: u32) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut req = Request::post(&self.url).body(Full::new(item.body.clone()))?;
        let headers = req.headers_mut();
        for (name, value) in &item.headers {
            if !passes(name, &self.headers_allow) {
                continue;
            }
            // A stored header that is not valid on the wire is skipped, not fatal.
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        let client = item
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(CLIENT_ADDR_HEADER));
        if let Some(v) = client.and_then(|(_, v)| HeaderValue::from_bytes(v).ok()) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert("hookd-delivery-id", HeaderValue::from(item.id));
        headers.insert("hookd-attempt", HeaderValue::from(attempt));
        headers.insert("hookd-hook", HeaderValue::from_str(&item.hook)?);
        headers.insert("hookd-route", HeaderValue::from_str(item.route())?);
        Ok(req)
    }
}

/// Reads what is needed of `resp` (until `deadline` at most) and judges it;
/// the answer is kept for `respond.wait`.
async fn answer(
    resp: http::Response<hyper::body::Incoming>,
    deadline: Instant,
) -> (Outcome, Option<Reply>) {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    // Best effort within what is left of the timeout: the status already decided.
    let body = timeout_at(deadline, read_prefix(resp.into_body(), REPLY_LIMIT))
        .await
        .unwrap_or_default();
    let outcome = if status.is_success() {
        Outcome::Delivered
    } else {
        let snippet = snippet(&body);
        if snippet.is_empty() {
            Outcome::Failed(format!("upstream answered {status}"))
        } else {
            Outcome::Failed(format!("upstream answered {status}: {snippet}"))
        }
    };
    let reply = Reply {
        status: status.as_u16(),
        content_type,
        body: Bytes::from(body),
    };
    (outcome, Some(reply))
}

/// Whether a stored header goes upstream: never the connection's own headers,
/// nor the client's say on who it is, nor `Hookd-*` (hookd sets those); with an allow list only the listed ones
/// (case-insensitive), else all but `Authorization`.
fn passes(name: &str, headers_allow: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    if NEVER_PASSED.contains(&lower.as_str())
        || lower.starts_with("hookd-")
        || lower.starts_with("x-forwarded-")
    {
        return false;
    }
    if headers_allow.is_empty() {
        lower != "authorization"
    } else {
        headers_allow.iter().any(|a| a.eq_ignore_ascii_case(&lower))
    }
}

/// Reads at most `limit` bytes of `body`; stops early on an error.
async fn read_prefix(mut body: hyper::body::Incoming, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let take = data.len().min(limit - out.len());
                    out.extend_from_slice(&data[..take]);
                }
            }
            _ => break,
        }
    }
    out
}

/// The first bytes of an error body as one printable line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_SNIPPET)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// An error and its sources, joined, without repeats.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
