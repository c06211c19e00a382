//! Signature checks for webhook ingress: pure functions of headers, body and clock.
//!
//! A [`Verifier`] is built once per hook from its [`VerifyConfig`] (the preset
//! already applied) and the keys `Config::load_secrets` read. [`Verifier::verify`]
//! does no I/O and takes `now` from the caller, so a stored delivery can be
//! re-verified later against its received time, and tests can pin the clock.
//!
//! Shapes. `github`, `slack`, `hmac` and `hmac-sha256` are one check: an HMAC
//! (SHA-1, SHA-256 or SHA-512) over a signed string built from a template
//! (`{body}` alone by default, `v0:{timestamp}:{body}` for Slack), sent hex or
//! base64 in one header after an optional prefix, with an optional timestamp
//! header judged against a tolerance. `stripe` and `standard-webhooks` carry
//! several signatures in one header and have their own parsers. `bearer`,
//! `token` and `basic` compare a credential.
//!
//! Rotation. Every scheme takes several keys; a request passes if any key
//! matches, and [`Verifier::verify`] says which (`key_index`, in the order of
//! `VerifyConfig::secrets`), so the log shows when an old key is no longer used.
//! Every key is tried on every request (no early exit), so the time taken does
//! not depend on which key matched.
//!
//! Every comparison of secret-derived bytes is constant-time: HMACs through
//! `subtle` on the raw digest bytes, tokens and passwords through `subtle` on
//! SHA-256 digests (so their length does not leak either). Received signatures
//! are decoded before comparing; encoded strings are never compared.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, StatusCode};
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{scheme_name, Algorithm, Encoding, Scheme, VerifyConfig};

const STRIPE_SIGNATURE: &str = "Stripe-Signature";
const AUTHORIZATION: &str = "Authorization";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a request failed its signature check. The `Display` text names the header
/// and is safe to send to the client: it never holds the secret, the expected
/// signature or the received one.
///
/// A malformed header answers **401**, like a missing one: neither carries a usable
/// credential, so the caller is unauthenticated rather than forbidden, and keeping
/// every signature failure in 401/403 leaves 400 to mean "bad body".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    /// A header the scheme needs is absent or empty.
    #[error("missing {header} header")]
    Missing { header: String },
    /// A header is present but cannot be parsed.
    #[error("malformed {header} header: {reason}")]
    Malformed { header: String, reason: String },
    /// The signature is well formed but does not match the body.
    #[error("{header} does not match the request body")]
    Mismatch { header: String },
    /// The signature matches but its timestamp is outside the replay window.
    #[error("{header} is more than {tolerance_secs}s away from the server's clock")]
    Stale { header: String, tolerance_secs: u64 },
    /// No `Authorization` header (scheme bearer).
    #[error("missing Authorization header (expected \"Bearer <token>\")")]
    TokenMissing,
    /// `Authorization` is not `Bearer <token>` (or not `Basic <base64>`).
    #[error("malformed Authorization header: {reason}")]
    TokenMalformed { reason: &'static str },
    /// The bearer token is wrong.
    #[error("wrong bearer token")]
    TokenMismatch,
    /// Scheme token: the header is absent or empty.
    #[error("missing {header} header (expected the shared token)")]
    HeaderTokenMissing { header: String },
    /// Scheme token: the header holds another token.
    #[error("wrong token in {header}")]
    HeaderTokenMismatch { header: String },
    /// Scheme basic: no `Authorization` header.
    #[error("missing Authorization header (expected \"Basic <base64 of user:password>\")")]
    BasicMissing,
    /// Scheme basic: the user or the password is wrong.
    #[error("wrong user or password")]
    BasicMismatch,
}

impl VerifyError {
    /// The HTTP status to answer with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            VerifyError::Missing { .. }
            | VerifyError::Malformed { .. }
            | VerifyError::TokenMissing
            | VerifyError::TokenMalformed { .. }
            | VerifyError::HeaderTokenMissing { .. }
            | VerifyError::BasicMissing => StatusCode::UNAUTHORIZED,
            VerifyError::Mismatch { .. }
            | VerifyError::Stale { .. }
            | VerifyError::TokenMismatch
            | VerifyError::HeaderTokenMismatch { .. }
            | VerifyError::BasicMismatch => StatusCode::FORBIDDEN,
        }
    }

    /// A short machine-readable reason, for the JSON error body and metrics labels.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            VerifyError::Missing { .. } => "signature_missing",
            VerifyError::Malformed { .. } => "signature_malformed",
            VerifyError::Mismatch { .. } => "signature_mismatch",
            VerifyError::Stale { .. } => "timestamp_stale",
            VerifyError::TokenMissing
            | VerifyError::HeaderTokenMissing { .. }
            | VerifyError::BasicMissing => "token_missing",
            VerifyError::TokenMalformed { .. } => "token_malformed",
            VerifyError::TokenMismatch
            | VerifyError::HeaderTokenMismatch { .. }
            | VerifyError::BasicMismatch => "token_mismatch",
        }
    }
}

/// One piece of a signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(String),
    Body,
    Timestamp,
    /// Another header's value, as sent; the name as written, for messages.
    Header(HeaderName, String),
}

/// Parses `signed = "…"`: literal text with `{body}` (exactly once: an unsigned
/// body would prove nothing), `{timestamp}` (the `timestamp_header` value, as
/// sent) and `{header.<Name>}`.
pub(crate) fn parse_template(text: &str, has_timestamp: bool) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    let mut bodies = 0;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            parts.push(Part::Literal(rest.to_string()));
            break;
        };
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or("a { without its }; placeholders are {body}, {timestamp}, {header.<Name>}")?;
        let name = &after[..close];
        match name {
            "body" => {
                bodies += 1;
                parts.push(Part::Body);
            }
            "timestamp" if !has_timestamp => {
                return Err("{timestamp} needs timestamp_header = \"<header name>\"".into())
            }
            "timestamp" => parts.push(Part::Timestamp),
            _ => match name.strip_prefix("header.") {
                Some(h) => {
                    let hn = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("{{{name}}}: {h:?} is not a header name"))?;
                    parts.push(Part::Header(hn, h.to_string()));
                }
                None => {
                    return Err(format!(
                        "unknown placeholder {{{name}}}; use {{body}}, {{timestamp}} or {{header.<Name>}}"
                    ))
                }
            },
        }
        rest = &after[close + 1..];
    }
    if bodies != 1 {
        return Err("must hold {body} exactly once".into());
    }
    Ok(parts)
}

/// The HMAC family a shape signs with.
fn hmac(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC takes keys of any length, so this cannot fail; an impossible
        // failure yields no bytes, which match no signature.
        let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
            return Vec::new();
        };
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match alg {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

fn digest_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::Sha1 => 20,
        Algorithm::Sha256 => 32,
        Algorithm::Sha512 => 64,
    }
}

/// The index of the first key for which `matches` holds, trying every key.
fn first_match(n: usize, mut matches: impl FnMut(usize) -> Choice) -> Option<usize> {
    let mut found = None;
    for i in 0..n {
        let ok = bool::from(matches(i));
        if ok && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// An HMAC in one header, over a template.
#[derive(Clone)]
struct HmacShape {
    algorithm: Algorithm,
    encoding: Encoding,
    header: HeaderName,
    display: String,
    prefix: Option<String>,
    /// `hmac-sha256` always took its `sha256=` with or without.
    prefix_optional: bool,
    template: Vec<Part>,
    timestamp: Option<(HeaderName, String)>,
}

/// The per-scheme state.
#[derive(Clone)]
enum Check {
    Hmac(Box<HmacShape>),
    Stripe,
    StandardWebhooks,
    /// SHA-256 of each token: comparing digests hides the token's length.
    Bearer(Vec<[u8; 32]>),
    Token {
        header: HeaderName,
        display: String,
        digests: Vec<[u8; 32]>,
    },
    /// SHA-256 of each `user:password`.
    Basic(Vec<[u8; 32]>),
    None,
}

/// Checks requests for one hook. Built once per hook; cheap to share.
#[derive(Clone)]
pub(crate) struct Verifier {
    scheme: Scheme,
    check: Check,
    /// The HMAC keys (decoded for Standard Webhooks), in configured order.
    keys: Vec<Vec<u8>>,
    tolerance_secs: u64,
    headers: Vec<HeaderName>,
}

impl std::fmt::Debug for Verifier {
    // Hand-written so the keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &scheme_name(self.scheme))
            .field("keys", &self.keys.len())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("verify: header {text:?} is not a valid header name"))
}

/// A Standard Webhooks secret: `whsec_` then base64 (the prefix is optional, as
/// in the reference libraries).
fn standard_webhooks_key(secret: &[u8]) -> Result<Vec<u8>, String> {
    let text = secret.strip_prefix(b"whsec_").unwrap_or(secret);
    B64.decode(text).map_err(|_| {
        "verify: scheme \"standard-webhooks\": the secret is not base64 after whsec_".to_string()
    })
}

impl Verifier {
    /// Builds the checker for `cfg` with the keys `Config::load_secrets` read for
    /// this hook. Fails if the scheme needs a key and has none (or an empty one),
    /// takes none and got some, or lacks a valid header.
    pub(crate) fn new(cfg: &VerifyConfig, keys: Vec<Vec<u8>>) -> Result<Verifier, String> {
        let name = scheme_name(cfg.scheme);
        match (cfg.scheme, keys.is_empty()) {
            (Scheme::None, true) => {}
            (Scheme::None, false) => return Err("verify: scheme \"none\" takes no secret".into()),
            (_, true) => return Err(format!("verify: scheme \"{name}\" needs a secret")),
            (_, false) if keys.iter().any(Vec::is_empty) => {
                return Err(format!("verify: scheme \"{name}\": a secret is empty"))
            }
            (_, false) => {}
        }
        let digests: Vec<[u8; 32]> = keys.iter().map(|k| Sha256::digest(k).into()).collect();
        let shape = |header: &str, prefix: Option<&str>, signed: Option<&str>, ts: Option<&str>| {
            let template = match signed {
                Some(t) => parse_template(t, ts.is_some())
                    .map_err(|e| format!("verify: signed = {t:?}: {e}"))?,
                None => vec![Part::Body],
            };
            let timestamp = ts
                .map(|t| header_name(t).map(|n| (n, t.to_string())))
                .transpose()?;
            Ok::<_, String>(HmacShape {
                algorithm: cfg.algorithm,
                encoding: cfg.encoding,
                header: header_name(header)?,
                display: header.to_string(),
                prefix: prefix.map(str::to_string),
                prefix_optional: false,
                template,
                timestamp,
            })
        };
        let mut keys = keys;
        let (check, headers) = match cfg.scheme {
            Scheme::Github => {
                let s = shape("X-Hub-Signature-256", Some("sha256="), None, None)?;
                (Check::Hmac(Box::new(s)), vec![])
            }
            Scheme::Slack => {
                let s = shape(
                    "X-Slack-Signature",
                    Some("v0="),
                    Some("v0:{timestamp}:{body}"),
                    Some("X-Slack-Request-Timestamp"),
                )?;
                (Check::Hmac(Box::new(s)), vec![])
            }
            Scheme::Hmac | Scheme::HmacSha256 => {
                let header = cfg.header.as_deref().ok_or(format!(
                    "verify: scheme \"{name}\" needs header = \"<signature header>\""
                ))?;
                let legacy = cfg.scheme == Scheme::HmacSha256 && cfg.prefix.is_none();
                let prefix = if legacy {
                    Some("sha256=")
                } else {
                    cfg.prefix.as_deref()
                };
                let mut s = shape(
                    header,
                    prefix,
                    cfg.signed.as_deref(),
                    cfg.timestamp_header.as_deref(),
                )?;
                s.prefix_optional = legacy;
                if cfg.scheme == Scheme::HmacSha256 {
                    s.algorithm = Algorithm::Sha256;
                }
                (Check::Hmac(Box::new(s)), vec![])
            }
            Scheme::Stripe => (
                Check::Stripe,
                vec![HeaderName::from_static("stripe-signature")],
            ),
            Scheme::StandardWebhooks => {
                keys = keys
                    .iter()
                    .map(|k| standard_webhooks_key(k))
                    .collect::<Result<_, _>>()?;
                let headers = STANDARD_WEBHOOKS
                    .iter()
                    .flat_map(|s| [s.id, s.timestamp, s.signature])
                    .map(HeaderName::from_static)
                    .collect();
                (Check::StandardWebhooks, headers)
            }
            Scheme::Bearer => (Check::Bearer(digests), vec![http::header::AUTHORIZATION]),
            Scheme::Token => {
                let display = cfg
                    .header
                    .clone()
                    .ok_or("verify: scheme \"token\" needs header = \"<token header>\"")?;
                let header = header_name(&display)?;
                let check = Check::Token {
                    header: header.clone(),
                    display,
                    digests,
                };
                (check, vec![header])
            }
            Scheme::Basic => (Check::Basic(digests), vec![http::header::AUTHORIZATION]),
            Scheme::None => (Check::None, Vec::new()),
        };
        let headers = match &check {
            Check::Hmac(s) => {
                let mut h = vec![s.header.clone()];
                h.extend(s.timestamp.iter().map(|(n, _)| n.clone()));
                h.extend(s.template.iter().filter_map(|p| match p {
                    Part::Header(n, _) => Some(n.clone()),
                    _ => None,
                }));
                h
            }
            _ => headers,
        };
        // Token-like schemes keep only digests; the raw bytes are not needed again.
        if matches!(
            check,
            Check::Bearer(_) | Check::Token { .. } | Check::Basic(_)
        ) {
            keys.clear();
        }
        Ok(Verifier {
            scheme: cfg.scheme,
            check,
            keys,
            tolerance_secs: cfg.tolerance.as_secs(),
            headers,
        })
    }

    /// The header that carries the shared secret itself (scheme token): like
    /// `Authorization`, it must be neither stored in the spool nor forwarded.
    pub(crate) fn credential_header(&self) -> Option<&HeaderName> {
        match &self.check {
            Check::Token { header, .. } => Some(header),
            _ => None,
        }
    }

    /// The HMAC key at `index` (as [`Verifier::verify`] returned it), for a
    /// handshake that must answer with the same key (Zoom). `None` for the
    /// token schemes, which keep only digests.
    pub(crate) fn key(&self, index: usize) -> Option<&[u8]> {
        self.keys.get(index).map(Vec::as_slice)
    }

    /// Logs which key a request matched: an operator rotating keys watches for
    /// the old one (a `key_index` above 0) to stop appearing before removing it.
    pub(crate) fn log_match(&self, hook: &str, key_index: usize) {
        if key_index > 0 {
            tracing::info!(
                hook,
                key_index,
                hookd_event = "signature_old_key",
                "signature matched key {key_index}, not the newest (key 0)"
            );
        } else if self.scheme != Scheme::None {
            tracing::debug!(hook, key_index, "signature matched");
        }
    }

    /// The `WWW-Authenticate` challenge of an HTTP authentication scheme,
    /// sent with its 401s; `None` for the signature schemes.
    pub(crate) fn challenge(&self) -> Option<&'static str> {
        match self.check {
            Check::Basic(_) => Some("Basic realm=\"hookd\""),
            Check::Bearer(_) => Some("Bearer realm=\"hookd\""),
            _ => None,
        }
    }

    /// Whether the signature covers a timestamp judged against the tolerance
    /// (slack, stripe, standard-webhooks, hmac with `timestamp_header`).
    pub(crate) fn timestamped(&self) -> bool {
        match &self.check {
            Check::Hmac(s) => s.timestamp.is_some(),
            Check::Stripe | Check::StandardWebhooks => true,
            _ => false,
        }
    }

    /// How far a signed timestamp may be from the clock, either way.
    pub(crate) fn tolerance(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.tolerance_secs)
    }

    /// SHA-256 of what a request's signature covers (the signed string of
    /// the HMAC schemes, `t.body` for Stripe, `id.timestamp.body` for
    /// Standard Webhooks, the body for the token schemes): the same digest
    /// again is the same signed request, however its headers were spelled.
    /// Call after [`Verifier::verify`] passed; `None` if the headers it read
    /// are no longer there.
    pub(crate) fn signed_digest(&self, headers: &HeaderMap, body: &[u8]) -> Option<[u8; 32]> {
        let mut h = Sha256::new();
        match &self.check {
            Check::Hmac(s) => {
                let ts = match &s.timestamp {
                    None => "",
                    Some((name, display)) => single(headers, name, display).ok()?,
                };
                for p in &s.template {
                    match p {
                        Part::Literal(l) => h.update(l.as_bytes()),
                        Part::Body => h.update(body),
                        Part::Timestamp => h.update(ts.as_bytes()),
                        Part::Header(n, display) => h.update(single(headers, n, display).ok()?),
                    }
                }
            }
            Check::Stripe => {
                let value = single(headers, &self.headers[0], STRIPE_SIGNATURE).ok()?;
                let parsed = parse_stripe(value).ok()?;
                h.update(parsed.t_text.as_bytes());
                h.update(b".");
                h.update(body);
            }
            Check::StandardWebhooks => {
                let names = STANDARD_WEBHOOKS
                    .iter()
                    .find(|n| headers.contains_key(n.signature))
                    .unwrap_or(&STANDARD_WEBHOOKS[0]);
                let hn = HeaderName::from_static;
                h.update(single(headers, &hn(names.id), names.id).ok()?);
                h.update(b".");
                h.update(single(headers, &hn(names.timestamp), names.timestamp).ok()?);
                h.update(b".");
                h.update(body);
            }
            Check::Bearer(_) | Check::Token { .. } | Check::Basic(_) | Check::None => {
                h.update(body)
            }
        }
        Some(h.finalize().into())
    }

    /// What can be refused from the headers alone, before the body is read:
    /// a credential that is missing or malformed, or a token that is wrong
    /// (tokens do not depend on the body). A signature over the body is not
    /// judged here. The error is the one [`Verifier::verify`] would give, so
    /// the answer is the same whether the body was read or not.
    pub(crate) fn check_headers(
        &self,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        match self.verify(headers, b"", now) {
            Err(
                e @ (VerifyError::Missing { .. }
                | VerifyError::Malformed { .. }
                | VerifyError::TokenMissing
                | VerifyError::TokenMalformed { .. }
                | VerifyError::TokenMismatch
                | VerifyError::HeaderTokenMissing { .. }
                | VerifyError::HeaderTokenMismatch { .. }
                | VerifyError::BasicMissing
                | VerifyError::BasicMismatch),
            ) => Err(e),
            Ok(_) | Err(VerifyError::Mismatch { .. } | VerifyError::Stale { .. }) => Ok(()),
        }
    }

    /// Checks one request and answers the index of the key that matched (0 for
    /// scheme none). `now` is the time to judge timestamps against: the arrival
    /// time, also when re-verifying a stored delivery.
    ///
    /// Timestamped schemes check the signature before the timestamp, so `Stale`
    /// means "authentic but outside the window" (a replay or a skewed clock),
    /// never a forgery.
    pub(crate) fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<usize, VerifyError> {
        match &self.check {
            Check::None => Ok(0),
            Check::Hmac(s) => self.verify_hmac(s, headers, body, now),
            Check::Stripe => self.verify_stripe(headers, body, now),
            Check::StandardWebhooks => self.verify_standard(headers, body, now),
            Check::Bearer(want) => {
                let value = match single(headers, &http::header::AUTHORIZATION, AUTHORIZATION) {
                    Ok(v) => v,
                    Err(VerifyError::Missing { .. }) => return Err(VerifyError::TokenMissing),
                    Err(_) => {
                        return Err(VerifyError::TokenMalformed {
                            reason: "expected one \"Bearer <token>\" in visible ASCII",
                        })
                    }
                };
                let token = auth_param(value, "bearer", "expected \"Bearer <token>\"")?;
                let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                match_digest(want, &got).ok_or(VerifyError::TokenMismatch)
            }
            Check::Token {
                header,
                display,
                digests,
            } => {
                let value = match single(headers, header, display) {
                    Ok(v) => v,
                    Err(VerifyError::Missing { .. }) => {
                        return Err(VerifyError::HeaderTokenMissing {
                            header: display.clone(),
                        })
                    }
                    Err(e) => return Err(e),
                };
                let got: [u8; 32] = Sha256::digest(value.as_bytes()).into();
                match_digest(digests, &got).ok_or_else(|| VerifyError::HeaderTokenMismatch {
                    header: display.clone(),
                })
            }
            Check::Basic(want) => {
                let value = match single(headers, &http::header::AUTHORIZATION, AUTHORIZATION) {
                    Ok(v) => v,
                    Err(VerifyError::Missing { .. }) => return Err(VerifyError::BasicMissing),
                    Err(_) => {
                        return Err(VerifyError::TokenMalformed {
                            reason: "expected one \"Basic <base64>\" in visible ASCII",
                        })
                    }
                };
                let b64 = auth_param(
                    value,
                    "basic",
                    "expected \"Basic <base64 of user:password>\"",
                )?;
                let pair = B64.decode(b64).map_err(|_| VerifyError::TokenMalformed {
                    reason: "the Basic credentials are not base64",
                })?;
                if !pair.contains(&b':') {
                    return Err(VerifyError::TokenMalformed {
                        reason: "the Basic credentials have no user:password colon",
                    });
                }
                let got: [u8; 32] = Sha256::digest(&pair).into();
                match_digest(want, &got).ok_or(VerifyError::BasicMismatch)
            }
        }
    }

    fn verify_hmac(
        &self,
        s: &HmacShape,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<usize, VerifyError> {
        let value = single(headers, &s.header, &s.display)?;
        let encoded = match &s.prefix {
            None => value,
            Some(p) => match strip_prefix_ignore_case(value, p) {
                Some(rest) => rest,
                None if s.prefix_optional => value,
                None => {
                    return Err(malformed(
                        &s.display,
                        format!("expected {p}<{}>", self.encoding_words(s)),
                    ))
                }
            },
        };
        let sig = decode_sig(encoded, s.encoding, digest_len(s.algorithm)).ok_or_else(|| {
            malformed(
                &s.display,
                format!("signature is not {}", self.encoding_words(s)),
            )
        })?;
        let ts = match &s.timestamp {
            None => None,
            Some((name, display)) => {
                let text = single(headers, name, display)?;
                let t = parse_timestamp(text).ok_or_else(|| {
                    malformed(display, "expected unix seconds or an RFC 3339 time")
                })?;
                Some((text, t, display))
            }
        };
        let mut parts: Vec<&[u8]> = Vec::with_capacity(s.template.len());
        for p in &s.template {
            parts.push(match p {
                Part::Literal(l) => l.as_bytes(),
                Part::Body => body,
                Part::Timestamp => ts.as_ref().map_or(&b""[..], |(text, _, _)| text.as_bytes()),
                Part::Header(n, display) => single(headers, n, display)?.as_bytes(),
            });
        }
        let index = first_match(self.keys.len(), |i| {
            hmac(s.algorithm, &self.keys[i], &parts)
                .as_slice()
                .ct_eq(&sig)
        })
        .ok_or_else(|| VerifyError::Mismatch {
            header: s.display.clone(),
        })?;
        if let Some((_, t, display)) = ts {
            self.check_window(t, now, display)?;
        }
        Ok(index)
    }

    fn encoding_words(&self, s: &HmacShape) -> String {
        let n = digest_len(s.algorithm);
        match s.encoding {
            Encoding::Hex => format!("{} hex digits", n * 2),
            Encoding::Base64 => format!("base64 of {n} bytes"),
        }
    }

    fn verify_stripe(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<usize, VerifyError> {
        let value = single(headers, &self.headers[0], STRIPE_SIGNATURE)?;
        let parsed = parse_stripe(value)?;
        let parts: [&[u8]; 3] = [parsed.t_text.as_bytes(), b".", body];
        // Stripe sends several v1 during its own rotation: accept any, for any key.
        let index = first_match(self.keys.len(), |i| {
            let expected = hmac(Algorithm::Sha256, &self.keys[i], &parts);
            parsed.v1.iter().fold(Choice::from(0), |acc, sig| {
                acc | expected.as_slice().ct_eq(&sig[..])
            })
        })
        .ok_or_else(|| VerifyError::Mismatch {
            header: STRIPE_SIGNATURE.into(),
        })?;
        self.check_window(parsed.t, now, STRIPE_SIGNATURE)?;
        Ok(index)
    }

    fn verify_standard(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<usize, VerifyError> {
        // The svix-* spelling is the same scheme under its first vendor's name.
        let names = STANDARD_WEBHOOKS
            .iter()
            .find(|n| headers.contains_key(n.signature))
            .unwrap_or(&STANDARD_WEBHOOKS[0]);
        let hn = HeaderName::from_static;
        let value = single(headers, &hn(names.signature), names.signature)?;
        let id = single(headers, &hn(names.id), names.id)?;
        let ts_text = single(headers, &hn(names.timestamp), names.timestamp)?;
        let ts = parse_unix(ts_text)
            .ok_or_else(|| malformed(names.timestamp, "expected unix seconds"))?;
        let mut sigs = Vec::new();
        for entry in value.split(' ').filter(|e| !e.is_empty()) {
            let Some((version, b64)) = entry.split_once(',') else {
                return Err(malformed(
                    names.signature,
                    "expected space-separated v1,<base64> entries",
                ));
            };
            // Other versions (v1a is asymmetric) are not ours to check; an entry
            // that does not decode can never match.
            if version == "v1" {
                if let Some(sig) = decode_sig(b64, Encoding::Base64, 32) {
                    sigs.push(sig);
                }
            }
        }
        if sigs.is_empty() {
            return Err(malformed(
                names.signature,
                "no v1,<base64 of 32 bytes> signature",
            ));
        }
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_text.as_bytes(), b".", body];
        let index = first_match(self.keys.len(), |i| {
            let expected = hmac(Algorithm::Sha256, &self.keys[i], &parts);
            sigs.iter().fold(Choice::from(0), |acc, sig| {
                acc | expected.as_slice().ct_eq(sig)
            })
        })
        .ok_or_else(|| VerifyError::Mismatch {
            header: names.signature.into(),
        })?;
        self.check_window(ts, now, names.timestamp)?;
        Ok(index)
    }

    /// Accepts `ts` within the tolerance of `now` in either direction: a sender's
    /// clock may run ahead of ours as well as behind.
    fn check_window(&self, ts: i64, now: SystemTime, header: &str) -> Result<(), VerifyError> {
        let skew = (unix_secs(now) - i128::from(ts)).abs();
        if skew > i128::from(self.tolerance_secs) {
            return Err(VerifyError::Stale {
                header: header.into(),
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

/// Standard Webhooks' header names, in its own spelling and Svix's.
struct StandardNames {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const STANDARD_WEBHOOKS: [StandardNames; 2] = [
    StandardNames {
        id: "webhook-id",
        timestamp: "webhook-timestamp",
        signature: "webhook-signature",
    },
    StandardNames {
        id: "svix-id",
        timestamp: "svix-timestamp",
        signature: "svix-signature",
    },
];

/// `<scheme> <param>` of an `Authorization` value, the scheme case-insensitive
/// (RFC 9110), the parameter trimmed and non-empty.
fn auth_param<'a>(
    value: &'a str,
    scheme: &str,
    expected: &'static str,
) -> Result<&'a str, VerifyError> {
    let (auth_scheme, param) = value
        .split_once(' ')
        .ok_or(VerifyError::TokenMalformed { reason: expected })?;
    if !auth_scheme.eq_ignore_ascii_case(scheme) {
        return Err(VerifyError::TokenMalformed { reason: expected });
    }
    let param = param.trim_matches(|c| c == ' ' || c == '\t');
    if param.is_empty() {
        return Err(VerifyError::TokenMalformed {
            reason: "empty credentials",
        });
    }
    Ok(param)
}

/// The index of the first digest in `want` equal to `got`, comparing all of them.
fn match_digest(want: &[[u8; 32]], got: &[u8; 32]) -> Option<usize> {
    first_match(want.len(), |i| want[i][..].ct_eq(&got[..]))
}

/// Hex (either case) or base64 to exactly `len` bytes; anything else is `None`.
fn decode_sig(text: &str, encoding: Encoding, len: usize) -> Option<Vec<u8>> {
    let bytes = match encoding {
        Encoding::Hex => hex::decode(text).ok()?,
        Encoding::Base64 => B64.decode(text).ok()?,
    };
    (bytes.len() == len).then_some(bytes)
}

/// Unix seconds, or an RFC 3339 UTC time as Twitch sends it (fraction allowed).
fn parse_timestamp(text: &str) -> Option<i64> {
    if let Some(t) = parse_unix(text) {
        return Some(t);
    }
    let t = humantime::parse_rfc3339(text).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// `Stripe-Signature`, split: the signed timestamp (as sent, for the payload) and
/// every decodable v1 signature.
struct StripeHeader<'a> {
    t_text: &'a str,
    t: i64,
    v1: Vec<[u8; 32]>,
}

/// Parses `t=<unix>,v1=<hex>[,v1=<hex>...]`, ignoring other keys (v0, future
/// schemes). Malformed: an element without `=`, no or repeated `t`, a `t` that is
/// not unix seconds, or no v1 that decodes as a SHA-256 digest.
fn parse_stripe(value: &str) -> Result<StripeHeader<'_>, VerifyError> {
    let mut t_text = None;
    let mut v1 = Vec::new();
    let mut saw_v1 = false;
    for element in value.split(',') {
        let (key, val) = element
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed(STRIPE_SIGNATURE, "expected key=value pairs"))?;
        match key {
            "t" if t_text.is_some() => {
                return Err(malformed(STRIPE_SIGNATURE, "t given more than once"))
            }
            "t" => t_text = Some(val),
            "v1" => {
                saw_v1 = true;
                // A v1 that is not a digest can never match; skip it like an unknown key.
                let mut sig = [0u8; 32];
                if hex::decode_to_slice(val, &mut sig).is_ok() {
                    v1.push(sig);
                }
            }
            _ => {}
        }
    }
    let t_text = t_text.ok_or_else(|| malformed(STRIPE_SIGNATURE, "no t= timestamp"))?;
    let t =
        parse_unix(t_text).ok_or_else(|| malformed(STRIPE_SIGNATURE, "t= is not unix seconds"))?;
    if !saw_v1 {
        return Err(malformed(STRIPE_SIGNATURE, "no v1= signature"));
    }
    if v1.is_empty() {
        return Err(malformed(
            STRIPE_SIGNATURE,
            "no v1= signature is 64 hex digits",
        ));
    }
    Ok(StripeHeader { t_text, t, v1 })
}

/// The one value of header `name`, trimmed. Absent or empty is `Missing`; sent
/// twice or not visible ASCII is `Malformed` (which copy would be the real one?).
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    display: &str,
) -> Result<&'a str, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(malformed(display, "sent more than once"));
    }
    let text = match first {
        None => "",
        Some(v) => v
            .to_str()
            .map_err(|_| malformed(display, "not visible ASCII"))?
            .trim(),
    };
    if text.is_empty() {
        return Err(VerifyError::Missing {
            header: display.into(),
        });
    }
    Ok(text)
}

/// Unix seconds as providers send them: plain ASCII digits, no sign, no fraction.
fn parse_unix(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn unix_secs(now: SystemTime) -> i128 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => -i128::from(e.duration().as_secs()),
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn malformed(header: &str, reason: impl Into<String>) -> VerifyError {
    VerifyError::Malformed {
        header: header.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn cfg(scheme: Scheme, header: Option<&str>) -> VerifyConfig {
        VerifyConfig {
            scheme,
            header: header.map(str::to_string),
            tolerance: Duration::from_secs(300),
            ..VerifyConfig::default()
        }
    }

    fn verifier(scheme: Scheme, secret: &str) -> Verifier {
        let header = (scheme == Scheme::HmacSha256).then_some("X-Signature");
        Verifier::new(&cfg(scheme, header), vec![secret.as_bytes().to_vec()]).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Flips one byte in the middle of `body`.
    fn altered(body: &[u8]) -> Vec<u8> {
        let mut b = body.to_vec();
        let i = b.len() / 2;
        b[i] ^= 0x01;
        b
    }

    fn code(r: Result<usize, VerifyError>) -> &'static str {
        r.unwrap_err().code()
    }

    // GitHub, "Validating webhook deliveries" (docs.github.com).
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const GH_HEX: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_doc_vector_verifies() {
        let v = verifier(Scheme::Github, GH_SECRET);
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        assert_eq!(v.verify(&h, GH_BODY, at(0)), Ok(0));
    }

    #[test]
    fn github_wrong_secret_is_mismatch_403() {
        let v = verifier(Scheme::Github, "It's a Secret to Nobody");
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        let e = v.verify(&h, GH_BODY, at(0)).unwrap_err();
        assert_eq!(e.code(), "signature_mismatch");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn github_altered_body_is_mismatch() {
        let v = verifier(Scheme::Github, GH_SECRET);
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        assert_eq!(
            code(v.verify(&h, &altered(GH_BODY), at(0))),
            "signature_mismatch"
        );
    }

    #[test]
    fn github_missing_header_is_401() {
        let v = verifier(Scheme::Github, GH_SECRET);
        let e = v.verify(&HeaderMap::new(), GH_BODY, at(0)).unwrap_err();
        assert_eq!(e.code(), "signature_missing");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.to_string(), "missing X-Hub-Signature-256 header");
        // The old SHA-1 header alone does not count.
        let h = headers(&[("X-Hub-Signature", "sha1=0000")]);
        assert_eq!(code(v.verify(&h, GH_BODY, at(0))), "signature_missing");
    }

    #[test]
    fn github_malformed_header_is_401() {
        let v = verifier(Scheme::Github, GH_SECRET);
        let bad = [
            GH_HEX.to_string(),                   // no sha256= prefix
            format!("sha1={GH_HEX}"),             // wrong algorithm
            format!("sha256={}", &GH_HEX[..62]),  // too short
            format!("sha256={GH_HEX}00"),         // too long
            format!("sha256=zz{}", &GH_HEX[2..]), // not hex
        ];
        for value in &bad {
            let h = headers(&[("X-Hub-Signature-256", value)]);
            let e = v.verify(&h, GH_BODY, at(0)).unwrap_err();
            assert_eq!(e.code(), "signature_malformed", "{value}");
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{value}");
        }
        // Two copies: ambiguous, even if one is right.
        let h = headers(&[
            ("X-Hub-Signature-256", GH_SIG),
            ("X-Hub-Signature-256", GH_SIG),
        ]);
        assert_eq!(code(v.verify(&h, GH_BODY, at(0))), "signature_malformed");
    }

    // Slack, "Verifying requests from Slack" (api.slack.com).
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: u64 = 1531420618;
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn slack_headers(sig: &str, ts: &str) -> HeaderMap {
        headers(&[
            ("X-Slack-Signature", sig),
            ("X-Slack-Request-Timestamp", ts),
        ])
    }

    #[test]
    fn slack_doc_vector_verifies() {
        let v = verifier(Scheme::Slack, SLACK_SECRET);
        let h = slack_headers(SLACK_SIG, "1531420618");
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS)), Ok(0));
    }

    #[test]
    fn slack_wrong_secret_is_mismatch() {
        let v = verifier(Scheme::Slack, "8f742231b10e8888abcd99yyyzzz85a6");
        let h = slack_headers(SLACK_SIG, "1531420618");
        assert_eq!(
            code(v.verify(&h, SLACK_BODY, at(SLACK_TS))),
            "signature_mismatch"
        );
    }

    #[test]
    fn slack_altered_body_or_timestamp_is_mismatch() {
        let v = verifier(Scheme::Slack, SLACK_SECRET);
        let h = slack_headers(SLACK_SIG, "1531420618");
        assert_eq!(
            code(v.verify(&h, &altered(SLACK_BODY), at(SLACK_TS))),
            "signature_mismatch"
        );
        // The timestamp is signed too: moving it breaks the signature.
        let h = slack_headers(SLACK_SIG, "1531420619");
        assert_eq!(
            code(v.verify(&h, SLACK_BODY, at(SLACK_TS))),
            "signature_mismatch"
        );
    }

    #[test]
    fn slack_window_is_tolerance_either_way() {
        let v = verifier(Scheme::Slack, SLACK_SECRET);
        let h = slack_headers(SLACK_SIG, "1531420618");
        // Sender 300 s behind us, or 299 s ahead of us: inside the window.
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS + 300)), Ok(0));
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS - 299)), Ok(0));
        for now in [SLACK_TS + 301, SLACK_TS - 301, SLACK_TS + 86_400] {
            let e = v.verify(&h, SLACK_BODY, at(now)).unwrap_err();
            assert_eq!(e.code(), "timestamp_stale", "now={now}");
            assert_eq!(e.status(), StatusCode::FORBIDDEN);
            assert!(e.to_string().contains("X-Slack-Request-Timestamp"), "{e}");
        }
    }

    #[test]
    fn slack_tolerance_is_configurable() {
        let mut c = cfg(Scheme::Slack, None);
        c.tolerance = Duration::from_secs(10);
        let v = Verifier::new(&c, vec![SLACK_SECRET.into()]).unwrap();
        let h = slack_headers(SLACK_SIG, "1531420618");
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS + 10)), Ok(0));
        assert_eq!(
            code(v.verify(&h, SLACK_BODY, at(SLACK_TS + 11))),
            "timestamp_stale"
        );
    }

    #[test]
    fn slack_missing_headers_are_401() {
        let v = verifier(Scheme::Slack, SLACK_SECRET);
        let only_sig = headers(&[("X-Slack-Signature", SLACK_SIG)]);
        let e = v.verify(&only_sig, SLACK_BODY, at(SLACK_TS)).unwrap_err();
        assert_eq!(e.code(), "signature_missing");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.to_string(), "missing X-Slack-Request-Timestamp header");
        let only_ts = headers(&[("X-Slack-Request-Timestamp", "1531420618")]);
        let e = v.verify(&only_ts, SLACK_BODY, at(SLACK_TS)).unwrap_err();
        assert_eq!(e.to_string(), "missing X-Slack-Signature header");
    }

    #[test]
    fn slack_malformed_headers_are_401() {
        let v = verifier(Scheme::Slack, SLACK_SECRET);
        let hex = &SLACK_SIG[3..];
        for (sig, ts) in [
            (hex, "1531420618"),                   // no v0=
            (&*format!("v1={hex}"), "1531420618"), // unknown version
            (&SLACK_SIG[..60], "1531420618"),      // short
            (SLACK_SIG, "yesterday"),              // timestamp not a number
            (SLACK_SIG, "-1531420618"),            // signed
            (SLACK_SIG, "1531420618.5"),           // fraction
        ] {
            let e = v
                .verify(&slack_headers(sig, ts), SLACK_BODY, at(SLACK_TS))
                .unwrap_err();
            assert_eq!(e.code(), "signature_malformed", "{sig} {ts}");
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        }
    }

    // Stripe's docs publish no fixed vector (their example header has no secret or
    // payload), so this one was made with Python's hmac module, independently:
    // python3 -c "import hmac,hashlib;print(hmac.new(b'whsec_hookd_test_vector',b'1700000000.{\"id\":\"evt_test\",\"object\":\"event\",\"type\":\"ping\"}',hashlib.sha256).hexdigest())"
    const STRIPE_SECRET: &str = "whsec_hookd_test_vector";
    const STRIPE_T: u64 = 1700000000;
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_test","object":"event","type":"ping"}"#;
    const STRIPE_V1: &str = "61456e1bae72c72a2115dc441fc7394cc5a6f5977e699af238da536fa0eb5c6a";
    // Some other 32-byte digest, as from a rotated-out secret.
    const OTHER_V1: &str = "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";

    fn stripe(value: &str) -> HeaderMap {
        headers(&[("Stripe-Signature", value)])
    }

    #[test]
    fn stripe_vector_verifies() {
        let v = verifier(Scheme::Stripe, STRIPE_SECRET);
        let h = stripe(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
        assert_eq!(v.verify(&h, STRIPE_BODY, at(STRIPE_T)), Ok(0));
    }

    #[test]
    fn stripe_accepts_any_v1_and_ignores_other_keys() {
        let v = verifier(Scheme::Stripe, STRIPE_SECRET);
        for value in [
            format!("t={STRIPE_T},v1={OTHER_V1},v1={STRIPE_V1}"),
            format!("t={STRIPE_T},v1={STRIPE_V1},v1={OTHER_V1}"),
            format!("t={STRIPE_T}, v1={STRIPE_V1}, v0={OTHER_V1}, v9=future"),
            format!("v1={STRIPE_V1},t={STRIPE_T}"),
            format!("t={STRIPE_T},v1=not-hex,v1={STRIPE_V1}"),
            format!("t={STRIPE_T},v1={}", STRIPE_V1.to_uppercase()),
        ] {
            assert_eq!(
                v.verify(&stripe(&value), STRIPE_BODY, at(STRIPE_T)),
                Ok(0),
                "{value}"
            );
        }
        // A matching v0 (the test-mode scheme) alone is not enough.
        let h = stripe(&format!("t={STRIPE_T},v1={OTHER_V1},v0={STRIPE_V1}"));
        assert_eq!(
            code(v.verify(&h, STRIPE_BODY, at(STRIPE_T))),
            "signature_mismatch"
        );
    }

    #[test]
    fn stripe_wrong_secret_is_mismatch() {
        let v = verifier(Scheme::Stripe, "whsec_someone_else");
        let h = stripe(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
        let e = v.verify(&h, STRIPE_BODY, at(STRIPE_T)).unwrap_err();
        assert_eq!(e.code(), "signature_mismatch");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn stripe_altered_body_or_t_is_mismatch() {
        let v = verifier(Scheme::Stripe, STRIPE_SECRET);
        let h = stripe(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
        assert_eq!(
            code(v.verify(&h, &altered(STRIPE_BODY), at(STRIPE_T))),
            "signature_mismatch"
        );
        let h = stripe(&format!("t={},v1={STRIPE_V1}", STRIPE_T + 1));
        assert_eq!(
            code(v.verify(&h, STRIPE_BODY, at(STRIPE_T))),
            "signature_mismatch"
        );
    }

    #[test]
    fn stripe_window_is_tolerance_either_way() {
        let v = verifier(Scheme::Stripe, STRIPE_SECRET);
        let h = stripe(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
        assert_eq!(v.verify(&h, STRIPE_BODY, at(STRIPE_T + 300)), Ok(0));
        assert_eq!(v.verify(&h, STRIPE_BODY, at(STRIPE_T - 300)), Ok(0));
        for now in [STRIPE_T + 301, STRIPE_T - 301] {
            let e = v.verify(&h, STRIPE_BODY, at(now)).unwrap_err();
            assert_eq!(e.code(), "timestamp_stale", "now={now}");
            assert_eq!(e.status(), StatusCode::FORBIDDEN);
        }
    }

    #[test]
    fn stripe_missing_header_is_401() {
        let v = verifier(Scheme::Stripe, STRIPE_SECRET);
        let e = v
            .verify(&HeaderMap::new(), STRIPE_BODY, at(STRIPE_T))
            .unwrap_err();
        assert_eq!(e.code(), "signature_missing");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.to_string(), "missing Stripe-Signature header");
    }

    #[test]
    fn stripe_malformed_header_is_401() {
        let v = verifier(Scheme::Stripe, STRIPE_SECRET);
        for value in [
            format!("v1={STRIPE_V1}"),                           // no t
            format!("t={STRIPE_T}"),                             // no v1
            format!("t={STRIPE_T},v0={STRIPE_V1}"),              // only v0
            format!("t={STRIPE_T},v1=abc"),                      // no usable v1
            format!("t=soon,v1={STRIPE_V1}"),                    // t not a number
            format!("t={STRIPE_T},t={STRIPE_T},v1={STRIPE_V1}"), // t twice
            format!("t={STRIPE_T},{STRIPE_V1}"),                 // element without =
        ] {
            let e = v
                .verify(&stripe(&value), STRIPE_BODY, at(STRIPE_T))
                .unwrap_err();
            assert_eq!(e.code(), "signature_malformed", "{value}");
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{value}");
        }
    }

    // Generic hmac-sha256, same vector as GitHub under a configured header.
    #[test]
    fn hmac_sha256_with_and_without_prefix_any_case() {
        let v = verifier(Scheme::HmacSha256, GH_SECRET);
        for value in [
            GH_HEX.to_string(),
            format!("sha256={GH_HEX}"),
            format!("SHA256={GH_HEX}"),
            GH_HEX.to_uppercase(),
            format!("sha256={}", GH_HEX.to_uppercase()),
        ] {
            let h = headers(&[("x-signature", &value)]);
            assert_eq!(v.verify(&h, GH_BODY, at(0)), Ok(0), "{value}");
        }
    }

    #[test]
    fn hmac_sha256_failures() {
        let v = verifier(Scheme::HmacSha256, GH_SECRET);
        let h = headers(&[("X-Signature", GH_HEX)]);
        assert_eq!(
            code(v.verify(&h, &altered(GH_BODY), at(0))),
            "signature_mismatch"
        );
        let other = verifier(Scheme::HmacSha256, "another secret");
        assert_eq!(code(other.verify(&h, GH_BODY, at(0))), "signature_mismatch");
        // The signature under another header name does not count.
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        let e = v.verify(&h, GH_BODY, at(0)).unwrap_err();
        assert_eq!(e.code(), "signature_missing");
        assert_eq!(e.to_string(), "missing X-Signature header");
        let h = headers(&[("X-Signature", "sha256=")]);
        assert_eq!(code(v.verify(&h, GH_BODY, at(0))), "signature_malformed");
        let h = headers(&[("X-Signature", &GH_HEX[1..])]);
        assert_eq!(code(v.verify(&h, GH_BODY, at(0))), "signature_malformed");
    }

    #[test]
    fn bearer_right_wrong_missing_malformed() {
        let v = verifier(Scheme::Bearer, "s3cret-token");
        let ok = |value: &str| v.verify(&headers(&[("Authorization", value)]), b"", at(0));
        assert_eq!(ok("Bearer s3cret-token"), Ok(0));
        assert_eq!(ok("bearer s3cret-token"), Ok(0));
        for wrong in ["Bearer s3cret-tokem", "Bearer s3cret-token2", "Bearer s"] {
            let e = ok(wrong).unwrap_err();
            assert_eq!(e.code(), "token_mismatch", "{wrong}");
            assert_eq!(e.status(), StatusCode::FORBIDDEN);
        }
        for bad in ["s3cret-token", "Basic czNjcmV0LXRva2Vu", "Bearer  "] {
            let e = ok(bad).unwrap_err();
            assert_eq!(e.code(), "token_malformed", "{bad}");
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        }
        let e = v.verify(&HeaderMap::new(), b"", at(0)).unwrap_err();
        assert_eq!(e.code(), "token_missing");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn none_accepts_anything() {
        let v = Verifier::new(&cfg(Scheme::None, None), vec![]).unwrap();
        assert_eq!(v.verify(&HeaderMap::new(), b"anything", at(0)), Ok(0));
        assert!(v.check_headers(&HeaderMap::new(), at(0)).is_ok());
    }

    #[test]
    fn new_refuses_missing_or_empty_secret() {
        for scheme in [
            Scheme::Github,
            Scheme::Slack,
            Scheme::Stripe,
            Scheme::HmacSha256,
            Scheme::Bearer,
        ] {
            let c = cfg(scheme, Some("X-Signature"));
            assert!(Verifier::new(&c, vec![]).is_err());
            assert!(Verifier::new(&c, vec![Vec::new()]).is_err());
        }
        assert!(Verifier::new(&cfg(Scheme::None, None), vec![b"x".to_vec()]).is_err());
        assert!(Verifier::new(&cfg(Scheme::HmacSha256, None), vec![b"x".to_vec()]).is_err());
        let bad_name = cfg(Scheme::HmacSha256, Some("X Sig"));
        assert!(Verifier::new(&bad_name, vec![b"x".to_vec()]).is_err());
    }

    #[test]
    fn what_the_headers_alone_refuse() {
        let none = headers(&[]);
        let gh = verifier(Scheme::Github, "k");
        let e = gh.check_headers(&none, at(0)).unwrap_err();
        assert_eq!(e.code(), "signature_missing");
        // A well-formed signature is judged with the body, not before it.
        let sig = format!("sha256={}", "0".repeat(64));
        assert!(gh
            .check_headers(&headers(&[("X-Hub-Signature-256", &sig)]), at(0))
            .is_ok());
        let bearer = verifier(Scheme::Bearer, "s3cret-token");
        assert_eq!(
            bearer.check_headers(&none, at(0)).unwrap_err().code(),
            "token_missing"
        );
        // A token does not depend on the body: a wrong one is refused at once.
        let wrong = headers(&[("Authorization", "Bearer nope")]);
        assert_eq!(
            bearer.check_headers(&wrong, at(0)).unwrap_err().code(),
            "token_mismatch"
        );
        let right = headers(&[("Authorization", "Bearer s3cret-token")]);
        assert!(bearer.check_headers(&right, at(0)).is_ok());
    }

    #[test]
    fn messages_and_debug_leak_no_secret_or_signature() {
        let v = verifier(Scheme::Github, GH_SECRET);
        let wrong = format!("sha256={}", "0".repeat(64));
        let e = v
            .verify(&headers(&[("X-Hub-Signature-256", &wrong)]), GH_BODY, at(0))
            .unwrap_err();
        let msg = e.to_string();
        assert_eq!(msg, "X-Hub-Signature-256 does not match the request body");
        assert!(!msg.contains(GH_HEX) && !msg.contains(GH_SECRET));
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("Secret to Everybody"), "{dbg}");
        let b = verifier(Scheme::Bearer, "s3cret-token");
        let e = b
            .verify(&headers(&[("Authorization", "Bearer nope")]), b"", at(0))
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    // Vectors for the generic shapes, made independently with Python's hmac module:
    // python3 -c "import hmac,hashlib,base64;print(hmac.new(b'k1',b'hello',hashlib.sha1).hexdigest())"
    const SHA1_HEX: &str = "4c250fed12e3571a29a32917139ac5d39a28a66c";
    // ... base64 of hmac.new(b'k1', b'hello', hashlib.sha512).digest()
    const SHA512_B64: &str =
        "xOUxaP/LE4PHMx4riHqM5f/vY21ijbjOBPBzL12wN/CHLpneWTi7T5kFh8b7l0vmwtAEPTbRW/ghs7rHU1oTZg==";
    // ... hmac.new(b'twitch_secret', b'msg-1' + b'2023-07-19T10:11:12.123456789Z' + b'{"a":1}', sha256)
    const TWITCH_HEX: &str = "3bf09d7a25e0e5d41626e5f0e3e915c0518ae8d716caadfee9e80f12975e9985";
    // ... hmac.new(b'zoom_secret_token', b'v0:1700000000:{"event":"meeting.started"}', sha256)
    const ZOOM_HEX: &str = "3e26cabfef3d31e659f8b672f08a7e4872438adf9c171b0122eefa5e8c0c6803";

    fn hmac_cfg(header: &str) -> VerifyConfig {
        VerifyConfig {
            scheme: Scheme::Hmac,
            header: Some(header.into()),
            tolerance: Duration::from_secs(300),
            ..VerifyConfig::default()
        }
    }

    fn keys(ks: &[&str]) -> Vec<Vec<u8>> {
        ks.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn hmac_sha1_hex_and_sha512_base64() {
        let mut c = hmac_cfg("X-Sig");
        c.algorithm = Algorithm::Sha1;
        let v = Verifier::new(&c, keys(&["k1"])).unwrap();
        assert_eq!(
            v.verify(&headers(&[("X-Sig", SHA1_HEX)]), b"hello", at(0)),
            Ok(0)
        );
        assert_eq!(
            code(v.verify(&headers(&[("X-Sig", SHA1_HEX)]), b"hellO", at(0))),
            "signature_mismatch"
        );
        // A SHA-256-sized signature is malformed for SHA-1.
        let e = v
            .verify(&headers(&[("X-Sig", GH_HEX)]), b"hello", at(0))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed X-Sig header: signature is not 40 hex digits"
        );

        c.algorithm = Algorithm::Sha512;
        c.encoding = Encoding::Base64;
        let v = Verifier::new(&c, keys(&["k1"])).unwrap();
        assert_eq!(
            v.verify(&headers(&[("X-Sig", SHA512_B64)]), b"hello", at(0)),
            Ok(0)
        );
        let other = Verifier::new(&c, keys(&["k2"])).unwrap();
        assert_eq!(
            code(other.verify(&headers(&[("X-Sig", SHA512_B64)]), b"hello", at(0))),
            "signature_mismatch"
        );
        let e = v
            .verify(&headers(&[("X-Sig", "not base64!")]), b"hello", at(0))
            .unwrap_err();
        assert_eq!(e.code(), "signature_malformed");
    }

    #[test]
    fn hmac_prefix_is_required_when_configured() {
        let mut c = hmac_cfg("X-Hub-Signature-256");
        c.prefix = Some("sha256=".into());
        let v = Verifier::new(&c, keys(&[GH_SECRET])).unwrap();
        assert_eq!(
            v.verify(&headers(&[("X-Hub-Signature-256", GH_SIG)]), GH_BODY, at(0)),
            Ok(0)
        );
        let e = v
            .verify(&headers(&[("X-Hub-Signature-256", GH_HEX)]), GH_BODY, at(0))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed X-Hub-Signature-256 header: expected sha256=<64 hex digits>"
        );
    }

    #[test]
    fn hmac_timestamped_template_rfc3339_and_unix() {
        let mut c = hmac_cfg("Twitch-Eventsub-Message-Signature");
        c.prefix = Some("sha256=".into());
        c.signed = Some("{header.Twitch-Eventsub-Message-Id}{timestamp}{body}".into());
        c.timestamp_header = Some("Twitch-Eventsub-Message-Timestamp".into());
        c.tolerance = Duration::from_secs(600);
        let v = Verifier::new(&c, keys(&["twitch_secret"])).unwrap();
        let ts = "2023-07-19T10:11:12.123456789Z";
        let t0 = 1689761472; // 2023-07-19T10:11:12Z
        let sig = format!("sha256={TWITCH_HEX}");
        let h = |id: &str| {
            headers(&[
                ("Twitch-Eventsub-Message-Signature", &sig),
                ("Twitch-Eventsub-Message-Id", id),
                ("Twitch-Eventsub-Message-Timestamp", ts),
            ])
        };
        assert_eq!(v.verify(&h("msg-1"), br#"{"a":1}"#, at(t0 + 600)), Ok(0));
        assert_eq!(
            code(v.verify(&h("msg-2"), br#"{"a":1}"#, at(t0))),
            "signature_mismatch"
        );
        assert_eq!(
            code(v.verify(&h("msg-1"), br#"{"a":2}"#, at(t0))),
            "signature_mismatch"
        );
        assert_eq!(
            code(v.verify(&h("msg-1"), br#"{"a":1}"#, at(t0 + 601))),
            "timestamp_stale"
        );
        let no_id = headers(&[
            ("Twitch-Eventsub-Message-Signature", &sig),
            ("Twitch-Eventsub-Message-Timestamp", ts),
        ]);
        let e = v.verify(&no_id, br#"{"a":1}"#, at(t0)).unwrap_err();
        assert_eq!(e.to_string(), "missing Twitch-Eventsub-Message-Id header");

        let mut z = hmac_cfg("x-zm-signature");
        z.prefix = Some("v0=".into());
        z.signed = Some("v0:{timestamp}:{body}".into());
        z.timestamp_header = Some("x-zm-request-timestamp".into());
        let v = Verifier::new(&z, keys(&["zoom_secret_token"])).unwrap();
        let body = br#"{"event":"meeting.started"}"#;
        let sig = format!("v0={ZOOM_HEX}");
        let h = |t: &str| headers(&[("x-zm-signature", &sig), ("x-zm-request-timestamp", t)]);
        assert_eq!(v.verify(&h("1700000000"), body, at(1700000100)), Ok(0));
        assert_eq!(
            code(v.verify(&h("1700000001"), body, at(1700000100))),
            "signature_mismatch"
        );
        assert_eq!(
            code(v.verify(&h("soon"), body, at(1700000100))),
            "signature_malformed"
        );
        assert_eq!(
            code(v.verify(&h("1700000000"), body, at(1700000301))),
            "timestamp_stale"
        );
    }

    #[test]
    fn templates_parse_or_say_why() {
        assert_eq!(
            parse_template("v0:{timestamp}:{body}", true).unwrap(),
            vec![
                Part::Literal("v0:".into()),
                Part::Timestamp,
                Part::Literal(":".into()),
                Part::Body
            ]
        );
        for (t, ts, why) in [
            ("{timestamp}.", true, "exactly once"),
            ("{body}{body}", false, "exactly once"),
            ("{timestamp}.{body}", false, "needs timestamp_header"),
            ("{id}.{body}", false, "unknown placeholder {id}"),
            ("{body", false, "without its }"),
            ("{header.X Y}{body}", false, "not a header name"),
        ] {
            let e = parse_template(t, ts).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
    }

    #[test]
    fn rotation_any_key_passes_and_says_which() {
        let v = Verifier::new(&cfg(Scheme::Github, None), keys(&["new key", GH_SECRET])).unwrap();
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        assert_eq!(v.verify(&h, GH_BODY, at(0)), Ok(1));
        let v = Verifier::new(&cfg(Scheme::Github, None), keys(&[GH_SECRET, "old"])).unwrap();
        assert_eq!(v.verify(&h, GH_BODY, at(0)), Ok(0));
        let v = Verifier::new(&cfg(Scheme::Github, None), keys(&["a", "b"])).unwrap();
        assert_eq!(code(v.verify(&h, GH_BODY, at(0))), "signature_mismatch");
        let s = Verifier::new(
            &cfg(Scheme::Stripe, None),
            keys(&["whsec_new", STRIPE_SECRET]),
        )
        .unwrap();
        let h = stripe(&format!("t={STRIPE_T},v1={STRIPE_V1}"));
        assert_eq!(s.verify(&h, STRIPE_BODY, at(STRIPE_T)), Ok(1));
        let b = Verifier::new(&cfg(Scheme::Bearer, None), keys(&["new", "old"])).unwrap();
        let h = headers(&[("Authorization", "Bearer old")]);
        assert_eq!(b.verify(&h, b"", at(0)), Ok(1));
        // Token schemes keep digests only.
        assert_eq!(b.key(0), None);
        assert_eq!(b.credential_header(), None);
        assert_eq!(v.key(1), Some(&b"b"[..]));
    }

    // Standard Webhooks' published test vector (standard-webhooks/standard-webhooks,
    // the reference libraries' tests).
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: u64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_headers(prefix: &str, id: &str, ts: &str, sig: &str) -> HeaderMap {
        headers(&[
            (&format!("{prefix}-id"), id),
            (&format!("{prefix}-timestamp"), ts),
            (&format!("{prefix}-signature"), sig),
        ])
    }

    #[test]
    fn standard_webhooks_vector_both_spellings() {
        let v = Verifier::new(&cfg(Scheme::StandardWebhooks, None), keys(&[SW_SECRET])).unwrap();
        for p in ["webhook", "svix"] {
            let h = sw_headers(p, SW_ID, "1614265330", SW_SIG);
            assert_eq!(v.verify(&h, SW_BODY, at(SW_TS)), Ok(0), "{p}");
        }
        // Several signatures, other versions ignored, in any order.
        let many = format!("v1a,xyz v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {SW_SIG}");
        let h = sw_headers("webhook", SW_ID, "1614265330", &many);
        assert_eq!(v.verify(&h, SW_BODY, at(SW_TS)), Ok(0));
        // The key without its whsec_ prefix is the same key.
        let bare = Verifier::new(
            &cfg(Scheme::StandardWebhooks, None),
            keys(&[&SW_SECRET[6..]]),
        )
        .unwrap();
        let h = sw_headers("webhook", SW_ID, "1614265330", SW_SIG);
        assert_eq!(bare.verify(&h, SW_BODY, at(SW_TS)), Ok(0));
    }

    #[test]
    fn standard_webhooks_failures() {
        let v = Verifier::new(&cfg(Scheme::StandardWebhooks, None), keys(&[SW_SECRET])).unwrap();
        let ok = sw_headers("webhook", SW_ID, "1614265330", SW_SIG);
        assert_eq!(
            code(v.verify(&ok, &altered(SW_BODY), at(SW_TS))),
            "signature_mismatch"
        );
        let other_id = sw_headers("webhook", "msg_other", "1614265330", SW_SIG);
        assert_eq!(
            code(v.verify(&other_id, SW_BODY, at(SW_TS))),
            "signature_mismatch"
        );
        let wrong = Verifier::new(
            &cfg(Scheme::StandardWebhooks, None),
            keys(&["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]),
        )
        .unwrap();
        assert_eq!(
            code(wrong.verify(&ok, SW_BODY, at(SW_TS))),
            "signature_mismatch"
        );
        assert_eq!(
            code(v.verify(&ok, SW_BODY, at(SW_TS + 301))),
            "timestamp_stale"
        );
        assert_eq!(
            code(v.verify(&ok, SW_BODY, at(SW_TS - 301))),
            "timestamp_stale"
        );
        for sig in [
            "g0hM9SsE",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,short",
        ] {
            let h = sw_headers("webhook", SW_ID, "1614265330", sig);
            assert_eq!(
                code(v.verify(&h, SW_BODY, at(SW_TS))),
                "signature_malformed",
                "{sig}"
            );
        }
        let e = v.verify(&HeaderMap::new(), SW_BODY, at(SW_TS)).unwrap_err();
        assert_eq!(e.to_string(), "missing webhook-signature header");
        // Rotation: the old key second still passes, and says so.
        let rot = Verifier::new(
            &cfg(Scheme::StandardWebhooks, None),
            keys(&["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", SW_SECRET]),
        )
        .unwrap();
        assert_eq!(rot.verify(&ok, SW_BODY, at(SW_TS)), Ok(1));
        assert!(Verifier::new(&cfg(Scheme::StandardWebhooks, None), keys(&["whsec_%%%"])).is_err());
    }

    #[test]
    fn token_header_right_wrong_missing() {
        let mut c = cfg(Scheme::Token, Some("X-Gitlab-Token"));
        c.header = Some("X-Gitlab-Token".into());
        let v = Verifier::new(&c, keys(&["glt-new", "glt-old"])).unwrap();
        let h = |t: &str| headers(&[("X-Gitlab-Token", t)]);
        assert_eq!(v.verify(&h("glt-new"), b"", at(0)), Ok(0));
        assert_eq!(v.verify(&h("glt-old"), b"", at(0)), Ok(1));
        assert_eq!(
            v.credential_header().map(|h| h.as_str()),
            Some("x-gitlab-token")
        );
        let e = v.verify(&h("glt-neW"), b"", at(0)).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("token_mismatch", StatusCode::FORBIDDEN)
        );
        assert_eq!(e.to_string(), "wrong token in X-Gitlab-Token");
        let e = v.verify(&HeaderMap::new(), b"", at(0)).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("token_missing", StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn basic_right_wrong_missing_malformed() {
        // base64("hookd:pa55:word"): the password may hold a colon.
        let v = Verifier::new(&cfg(Scheme::Basic, None), keys(&["hookd:pa55:word"])).unwrap();
        let h = |a: &str| headers(&[("Authorization", a)]);
        assert_eq!(
            v.verify(&h("Basic aG9va2Q6cGE1NTp3b3Jk"), b"", at(0)),
            Ok(0)
        );
        assert_eq!(
            v.verify(&h("basic aG9va2Q6cGE1NTp3b3Jk"), b"", at(0)),
            Ok(0)
        );
        let e = v
            .verify(&h("Basic aG9va2Q6cGE1NTp3b3Jl"), b"", at(0))
            .unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("token_mismatch", StatusCode::FORBIDDEN)
        );
        for bad in ["Bearer x", "Basic !!", "Basic aG9va2Q="] {
            assert_eq!(
                code(v.verify(&h(bad), b"", at(0))),
                "token_malformed",
                "{bad}"
            );
        }
        assert_eq!(
            code(v.verify(&HeaderMap::new(), b"", at(0))),
            "token_missing"
        );
    }

    #[test]
    fn signed_digest_is_what_the_signature_covers_however_it_is_spelled() {
        let v = verifier(Scheme::Slack, SLACK_SECRET);
        let upper = format!("v0={}", SLACK_SIG[3..].to_uppercase());
        let a = v.signed_digest(&slack_headers(SLACK_SIG, "1531420618"), SLACK_BODY);
        let b = v.signed_digest(&slack_headers(&upper, "1531420618"), SLACK_BODY);
        assert!(a.is_some());
        assert_eq!(a, b, "the signature's spelling is not part of the key");
        let later = v.signed_digest(&slack_headers(SLACK_SIG, "1531420619"), SLACK_BODY);
        assert_ne!(a, later, "another timestamp is another signed request");
        assert_ne!(
            a,
            v.signed_digest(&slack_headers(SLACK_SIG, "1531420618"), b"other")
        );
        assert!(v.timestamped());

        let v = verifier(Scheme::Stripe, STRIPE_SECRET);
        let t = STRIPE_T.to_string();
        let plain = v.signed_digest(&stripe(&format!("t={t},v1={STRIPE_V1}")), STRIPE_BODY);
        let padded = v.signed_digest(
            &stripe(&format!("t={t},v1={OTHER_V1},v1={STRIPE_V1},v0=x")),
            STRIPE_BODY,
        );
        assert!(plain.is_some());
        assert_eq!(plain, padded);

        let v = Verifier::new(&cfg(Scheme::StandardWebhooks, None), keys(&[SW_SECRET])).unwrap();
        let web = v.signed_digest(&sw_headers("webhook", SW_ID, "1614265330", SW_SIG), SW_BODY);
        let svix = v.signed_digest(&sw_headers("svix", SW_ID, "1614265330", SW_SIG), SW_BODY);
        assert!(web.is_some());
        assert_eq!(web, svix, "the two spellings sign the same thing");
        let other_id = v.signed_digest(
            &sw_headers("webhook", "msg_2", "1614265330", SW_SIG),
            SW_BODY,
        );
        assert_ne!(web, other_id);

        // Untimestamped: the body, which is all the signature covers.
        let v = verifier(Scheme::Github, "It's a Secret to Everybody");
        assert!(!v.timestamped());
        let h = headers(&[("X-Hub-Signature-256", "sha256=00")]);
        assert_eq!(
            v.signed_digest(&h, b"body"),
            v.signed_digest(&HeaderMap::new(), b"body")
        );
    }
}
