//! Provider handshakes, answered by ingress and never spooled: they prove the
//! endpoint to the provider and carry no event for the app.
//!
//! Slack, Twitch and Zoom send theirs as signed POSTs, so they are answered only
//! after the hook's signature check passed: an unsigned "challenge" must not get
//! an answer that a forger could use to register someone else's endpoint. Meta's
//! is an unsigned GET; it proves itself with the verify token the operator typed
//! into Meta's dashboard, compared in constant time on SHA-256 digests.

use http::{HeaderMap, Method, Request, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::presets::Handshake;
use super::response::{self, Body};
use super::verify::Verifier;
use crate::config::Preset;

/// One hook's handshake.
#[derive(Clone)]
pub(crate) struct Handshaker {
    kind: Handshake,
    /// SHA-256 of Meta's verify token.
    verify_token: Option<[u8; 32]>,
}

impl std::fmt::Debug for Handshaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshaker")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Handshaker {
    /// The handshake of `preset`, if it has one. Meta's needs its verify token.
    pub(crate) fn new(
        preset: Option<Preset>,
        verify_token: Option<&[u8]>,
    ) -> Result<Option<Handshaker>, String> {
        let Some(kind) = super::presets::handshake(preset) else {
            return Ok(None);
        };
        let verify_token = match (kind, verify_token) {
            (Handshake::MetaSubscribe, None) => {
                return Err(
                    "preset \"meta\" needs verify_token_file or verify_token_credential".into(),
                )
            }
            (_, t) => t.map(|t| Sha256::digest(t).into()),
        };
        Ok(Some(Handshaker { kind, verify_token }))
    }

    /// Which provider's handshake this is.
    pub(crate) fn kind(&self) -> Handshake {
        self.kind
    }

    /// A handshake that comes as a GET (Meta's subscription check). `None`: not
    /// one, carry on with the usual checks (a GET then answers 405).
    pub(crate) fn answer_get<B>(
        &self,
        hook: &str,
        req: &Request<B>,
    ) -> Option<http::Response<Body>> {
        if self.kind != Handshake::MetaSubscribe || req.method() != Method::GET {
            return None;
        }
        let query = req.uri().query()?;
        let mut mode = None;
        let mut token = None;
        let mut challenge = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "hub.mode" => mode = Some(v.into_owned()),
                "hub.verify_token" => token = Some(v.into_owned()),
                "hub.challenge" => challenge = Some(v.into_owned()),
                _ => {}
            }
        }
        if mode.as_deref() != Some("subscribe") {
            return None;
        }
        let (Some(token), Some(challenge)) = (token, challenge) else {
            return Some(response::error(
                StatusCode::BAD_REQUEST,
                "malformed",
                "hub.mode=subscribe needs hub.verify_token and hub.challenge",
            ));
        };
        let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let ok = self
            .verify_token
            .is_some_and(|want| bool::from(want[..].ct_eq(&got[..])));
        if !ok {
            tracing::warn!(
                hook,
                hookd_event = "handshake_refused",
                "Meta subscription check with a wrong hub.verify_token"
            );
            return Some(response::error(
                StatusCode::FORBIDDEN,
                "token_mismatch",
                "hub.verify_token is not this hook's verify token",
            ));
        }
        tracing::info!(
            hook,
            hookd_event = "handshake",
            "answered Meta's subscription check"
        );
        Some(response::text(StatusCode::OK, "text/plain", challenge))
    }

    /// A handshake that comes as a signed POST, checked after the signature
    /// passed with key `key_index`. `None`: an ordinary event, to be spooled.
    pub(crate) fn answer_post(
        &self,
        hook: &str,
        headers: &HeaderMap,
        body: &[u8],
        verifier: &Verifier,
        key_index: usize,
    ) -> Option<http::Response<Body>> {
        let answer = match self.kind {
            Handshake::MetaSubscribe => return None,
            Handshake::SlackUrlVerification => {
                let v = json(body)?;
                if v.get("type")?.as_str()? != "url_verification" {
                    return None;
                }
                match v.get("challenge").and_then(|c| c.as_str()) {
                    Some(c) => {
                        response::json(StatusCode::OK, &serde_json::json!({ "challenge": c }))
                    }
                    None => bad("url_verification without a challenge string"),
                }
            }
            Handshake::TwitchCallbackVerification => {
                let kind = headers.get("twitch-eventsub-message-type")?;
                if kind.as_bytes() != b"webhook_callback_verification" {
                    return None;
                }
                match json(body)
                    .as_ref()
                    .and_then(|v| v.get("challenge"))
                    .and_then(|c| c.as_str())
                {
                    Some(c) => response::text(StatusCode::OK, "text/plain", c.to_string()),
                    None => bad("webhook_callback_verification without a challenge string"),
                }
            }
            Handshake::ZoomUrlValidation => {
                let v = json(body)?;
                if v.get("event")?.as_str()? != "endpoint.url_validation" {
                    return None;
                }
                let plain = v.pointer("/payload/plainToken").and_then(|p| p.as_str());
                // Zoom wants the token signed with the secret it signs with:
                // the key that just verified this request.
                match (plain, verifier.key(key_index)) {
                    (Some(p), Some(key)) => {
                        let enc = zoom_encrypted_token(key, p);
                        response::json(
                            StatusCode::OK,
                            &serde_json::json!({ "plainToken": p, "encryptedToken": enc }),
                        )
                    }
                    _ => bad("endpoint.url_validation without payload.plainToken"),
                }
            }
        };
        tracing::info!(
            hook,
            key_index,
            hookd_event = "handshake",
            "answered the provider's handshake; nothing spooled"
        );
        Some(answer)
    }
}

fn json(body: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(body).ok()
}

fn bad(msg: &str) -> http::Response<Body> {
    response::error(StatusCode::BAD_REQUEST, "malformed", msg)
}

/// Zoom's `encryptedToken`: hex of HMAC-SHA256(secret token, plainToken).
fn zoom_encrypted_token(key: &[u8], plain: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(plain.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_token_matches_an_independent_hmac() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'zoom_secret_token',b'qgg8vlvZRS6UYooatFL8Aw',hashlib.sha256).hexdigest())"
        assert_eq!(
            zoom_encrypted_token(b"zoom_secret_token", "qgg8vlvZRS6UYooatFL8Aw"),
            ZOOM_ENC
        );
    }

    const ZOOM_ENC: &str = "bd48235863f4a6323ccc4963c594908b7c97f88b4a6a95278f4f093690b12726";
}
