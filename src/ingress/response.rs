//! JSON answers: every status hookd sends carries a small JSON body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::Reject;

pub(crate) type Body = Full<Bytes>;

/// `{"error": code, "message": message}` with `status`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

impl Reject {
    /// The status and JSON `error` code of each refusal. Signature failures
    /// are answered by the verifier's own codes instead.
    pub(crate) fn answer(self) -> (StatusCode, &'static str) {
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
            Reject::IpNotAllowed => (StatusCode::FORBIDDEN, "ip_not_allowed"),
            Reject::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        }
    }
}

/// A request turned away: what the sender is told, and the reason it is
/// counted under. Every check returns one, so a new check is one more `?`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) reason: Reject,
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Allow` on a 405: a client learns which method would work.
    allow: Option<&'static str>,
    /// `Retry-After` on a 503: the refusal is temporary and says when to come back.
    retry_after: Option<u32>,
    /// `WWW-Authenticate` on a 401 of an HTTP authentication scheme (basic,
    /// bearer): a client learns which credentials to send.
    challenge: Option<&'static str>,
}

impl Refusal {
    /// Answered with `reason`'s own status and code.
    pub(crate) fn new(reason: Reject, message: impl Into<String>) -> Self {
        let (status, code) = reason.answer();
        Refusal {
            reason,
            status,
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// Answered with another status and code than `reason`'s, where they say
    /// more (a signature scheme's own, or a plain `not_found` off the hook routes).
    pub(crate) fn answered_as(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }

    /// A 405 naming the one method this route takes.
    pub(crate) fn method(allow: &'static str) -> Self {
        Refusal {
            allow: Some(allow),
            ..Refusal::new(Reject::Method, format!("use {allow}"))
        }
    }

    /// Adds `WWW-Authenticate: <challenge>` (sent only on a 401).
    pub(crate) fn challenge(mut self, challenge: Option<&'static str>) -> Self {
        self.challenge = challenge;
        self
    }

    pub(crate) fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The one place a refusal becomes an HTTP answer.
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut resp = error(self.status, self.code, &self.message);
        if let Some(allow) = self.allow {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(c) = self
            .challenge
            .filter(|_| self.status == StatusCode::UNAUTHORIZED)
        {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_headers() {
        let r = Refusal::method("POST").into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "POST");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());

        let r = Refusal::new(Reject::Disabled, "later")
            .retry_after(60)
            .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "60");
        assert!(r.headers().get(header::ALLOW).is_none());

        let basic = Some("Basic realm=\"hookd\"");
        let r = Refusal::new(Reject::Unauthorized, "who?")
            .challenge(basic)
            .into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"hookd\""
        );
        // Not on a 403: the credentials were sent, and were wrong.
        let r = Refusal::new(Reject::Forbidden, "no")
            .challenge(basic)
            .into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
