//! The configured answer to a newly spooled webhook (`respond = {…}`), for
//! providers that insist on a 200 or on a body, and the first attempt's
//! result for `respond.wait`. Both are sent only where the 202 would have
//! been: after the spool's commit.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::response::Body;
use crate::config::RespondConfig;
use crate::replies::FirstAttempt;

/// The answer for item `id` from its first attempt: the action's own answer
/// as it is (a forward's upstream status and body, an exec's stdout with
/// 200), or the reason when the attempt failed with nothing to relay: 500
/// for a command that failed, 502 for an app that could not be reached. The item is durable either way and goes on to its retries.
pub(crate) fn first_attempt(id: i64, result: FirstAttempt) -> Response<Body> {
    match result {
        FirstAttempt::Reply(r) => {
            let mut resp = Response::new(Full::new(r.body));
            // Any status an upstream can send is a valid one; the fallback cannot happen.
            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = HeaderValue::from_str(&r.content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            resp.headers_mut()
                .insert("hookd-delivery-id", HeaderValue::from(id));
            resp
        }
        FirstAttempt::Failed { why, gateway } => {
            let status = if gateway {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let mut resp = super::response::json(
                status,
                &serde_json::json!({
                    "id": id,
                    "error": "first_attempt_failed",
                    "message": why,
                }),
            );
            resp.headers_mut()
                .insert("hookd-delivery-id", HeaderValue::from(id));
            resp
        }
    }
}

pub(crate) fn configured(r: &RespondConfig) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body.clone())));
    // Both were checked when the config was loaded; the fallbacks cannot happen.
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::ACCEPTED);
    let ct = HeaderValue::from_str(&r.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp
}
