//! The configured answer to a newly spooled webhook (`respond = {…}`), for
//! providers that insist on a 200 or on a body. It is sent only where the 202
//! would have been: after the spool's commit.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::response::Body;
use crate::config::RespondConfig;

pub(crate) fn configured(r: &RespondConfig) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body.clone())));
    // Both were checked when the config was loaded; the fallbacks cannot happen.
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::ACCEPTED);
    let ct = HeaderValue::from_str(&r.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp
}
