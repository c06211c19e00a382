//! Signature checks for webhook ingress: pure functions of headers, body and clock.
//!
//! A [`Verifier`] is built once per hook from its [`VerifyConfig`] and the secret
//! `Config::load_secrets` read. [`Verifier::verify`] does no I/O and takes `now`
//! from the caller, so a stored delivery can be re-verified later against its
//! received time, and tests can pin the clock.
//!
//! Every comparison of secret-derived bytes is constant-time: HMACs through
//! `Mac::verify_slice` or `subtle`, bearer tokens through `subtle` on SHA-256
//! digests (so the token's length does not leak either). Received signatures are
//! hex-decoded before comparing; hex strings are never compared.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, StatusCode};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{scheme_name, Scheme, VerifyConfig};

type HmacSha256 = Hmac<Sha256>;

// As the providers spell them, for messages; lookups use lowercase `HeaderName`s.
const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
const SLACK_SIGNATURE: &str = "X-Slack-Signature";
const SLACK_TIMESTAMP: &str = "X-Slack-Request-Timestamp";
const STRIPE_SIGNATURE: &str = "Stripe-Signature";
const AUTHORIZATION: &str = "Authorization";

/// Why a request failed its signature check. The `Display` text names the header
/// and is safe to send to the client: it never holds the secret, the expected
/// signature or the received one.
///
/// A malformed header answers **401**, like a missing one: neither carries a usable
/// credential, so the caller is unauthenticated rather than forbidden, and keeping
/// every signature failure in 401/403 leaves 400 to mean "bad body" (SPEC §1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme needs is absent or empty.
    #[error("missing {header} header")]
    Missing { header: String },
    /// A header is present but cannot be parsed.
    #[error("malformed {header} header: {reason}")]
    Malformed {
        header: String,
        reason: &'static str,
    },
    /// The signature is well formed but does not match the body.
    #[error("{header} does not match the request body")]
    Mismatch { header: String },
    /// The signature matches but its timestamp is outside the replay window.
    #[error("{header} is more than {tolerance_secs}s away from the server's clock")]
    Stale { header: String, tolerance_secs: u64 },
    /// No `Authorization` header (scheme bearer).
    #[error("missing Authorization header (expected \"Bearer <token>\")")]
    TokenMissing,
    /// `Authorization` is not `Bearer <token>`.
    #[error("malformed Authorization header: {reason}")]
    TokenMalformed { reason: &'static str },
    /// The bearer token is wrong.
    #[error("wrong bearer token")]
    TokenMismatch,
}

impl VerifyError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            VerifyError::Missing { .. }
            | VerifyError::Malformed { .. }
            | VerifyError::TokenMissing
            | VerifyError::TokenMalformed { .. } => StatusCode::UNAUTHORIZED,
            VerifyError::Mismatch { .. }
            | VerifyError::Stale { .. }
            | VerifyError::TokenMismatch => StatusCode::FORBIDDEN,
        }
    }

    /// A short machine-readable reason, for the JSON error body and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Missing { .. } => "signature_missing",
            VerifyError::Malformed { .. } => "signature_malformed",
            VerifyError::Mismatch { .. } => "signature_mismatch",
            VerifyError::Stale { .. } => "timestamp_stale",
            VerifyError::TokenMissing => "token_missing",
            VerifyError::TokenMalformed { .. } => "token_malformed",
            VerifyError::TokenMismatch => "token_mismatch",
        }
    }
}

/// The per-scheme state, with the secret already keyed in.
#[derive(Clone)]
enum Check {
    Github(HmacSha256),
    Slack(HmacSha256),
    Stripe(HmacSha256),
    /// `display` is the header name as the operator wrote it, for messages.
    HmacSha256 {
        mac: HmacSha256,
        display: String,
    },
    /// SHA-256 of the token: comparing digests hides the token's length.
    Bearer([u8; 32]),
    None,
}

/// Checks requests for one hook. Built once per hook; cheap to share.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    check: Check,
    tolerance_secs: u64,
    headers: Vec<HeaderName>,
}

impl std::fmt::Debug for Verifier {
    // Hand-written so the keyed state never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &scheme_name(self.scheme))
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the checker for `cfg` with the secret bytes `Config::load_secrets`
    /// returned for this hook. Fails if the scheme needs a secret and has none (or
    /// an empty one), takes none and got one, or `hmac-sha256` lacks a valid header.
    pub fn new(cfg: &VerifyConfig, secret: Option<Vec<u8>>) -> Result<Verifier, String> {
        let name = scheme_name(cfg.scheme);
        let secret = match (cfg.scheme, secret) {
            (Scheme::None, None) => Vec::new(),
            (Scheme::None, Some(_)) => return Err("verify: scheme \"none\" takes no secret".into()),
            (_, None) => return Err(format!("verify: scheme \"{name}\" needs a secret")),
            (_, Some(s)) if s.is_empty() => {
                return Err(format!("verify: scheme \"{name}\": the secret is empty"))
            }
            (_, Some(s)) => s,
        };
        let keyed = || {
            HmacSha256::new_from_slice(&secret)
                .map_err(|e| format!("verify: scheme \"{name}\": {e}"))
        };
        let (check, headers) = match cfg.scheme {
            Scheme::Github => (
                Check::Github(keyed()?),
                vec![HeaderName::from_static("x-hub-signature-256")],
            ),
            Scheme::Slack => (
                Check::Slack(keyed()?),
                vec![
                    HeaderName::from_static("x-slack-signature"),
                    HeaderName::from_static("x-slack-request-timestamp"),
                ],
            ),
            Scheme::Stripe => (
                Check::Stripe(keyed()?),
                vec![HeaderName::from_static("stripe-signature")],
            ),
            Scheme::HmacSha256 => {
                let display = cfg.header.clone().ok_or(
                    "verify: scheme \"hmac-sha256\" needs header = \"<signature header>\"",
                )?;
                let header_name = HeaderName::from_bytes(display.as_bytes()).map_err(|_| {
                    format!("verify: header {display:?} is not a valid header name")
                })?;
                let check = Check::HmacSha256 {
                    mac: keyed()?,
                    display,
                };
                (check, vec![header_name])
            }
            Scheme::Bearer => (
                Check::Bearer(Sha256::digest(&secret).into()),
                vec![http::header::AUTHORIZATION],
            ),
            Scheme::None => (Check::None, Vec::new()),
        };
        Ok(Verifier {
            scheme: cfg.scheme,
            check,
            tolerance_secs: cfg.tolerance.as_secs(),
            headers,
        })
    }

    /// The scheme this verifier checks.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The request headers this scheme reads, so ingress can store them with the
    /// body for re-verification. Bearer lists `Authorization`: storing it puts the
    /// token in the spool, so the caller may choose to drop it.
    pub fn signature_headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// Checks one request. `now` is the time to judge timestamps against: the
    /// arrival time, also when re-verifying a stored delivery.
    ///
    /// Slack and Stripe check the signature before the timestamp, so `Stale` means
    /// "authentic but outside the window" (a replay or a skewed clock), never a forgery.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        match &self.check {
            Check::None => Ok(()),
            Check::Github(mac) => {
                let value = single(headers, &self.headers[0], GITHUB_SIGNATURE)?;
                let hex = value.strip_prefix("sha256=").ok_or_else(|| {
                    malformed(GITHUB_SIGNATURE, "expected sha256=<64 hex digits>")
                })?;
                let sig = decode_sha256(hex, GITHUB_SIGNATURE)?;
                verify_mac(mac, &[body], &sig, GITHUB_SIGNATURE)
            }
            Check::HmacSha256 { mac, display } => {
                let value = single(headers, &self.headers[0], display)?;
                let hex = strip_prefix_ignore_case(value, "sha256=").unwrap_or(value);
                let sig = decode_sha256(hex, display)?;
                verify_mac(mac, &[body], &sig, display)
            }
            Check::Slack(mac) => {
                let value = single(headers, &self.headers[0], SLACK_SIGNATURE)?;
                let ts_text = single(headers, &self.headers[1], SLACK_TIMESTAMP)?;
                let hex = value
                    .strip_prefix("v0=")
                    .ok_or_else(|| malformed(SLACK_SIGNATURE, "expected v0=<64 hex digits>"))?;
                let sig = decode_sha256(hex, SLACK_SIGNATURE)?;
                let ts = parse_unix(ts_text)
                    .ok_or_else(|| malformed(SLACK_TIMESTAMP, "expected unix seconds"))?;
                let parts: [&[u8]; 4] = [b"v0:", ts_text.as_bytes(), b":", body];
                verify_mac(mac, &parts, &sig, SLACK_SIGNATURE)?;
                self.check_window(ts, now, SLACK_TIMESTAMP)
            }
            Check::Stripe(mac) => {
                let value = single(headers, &self.headers[0], STRIPE_SIGNATURE)?;
                let parsed = parse_stripe(value)?;
                let mut mac = mac.clone();
                mac.update(parsed.t_text.as_bytes());
                mac.update(b".");
                mac.update(body);
                let expected = mac.finalize().into_bytes();
                // Rotation sends several v1: accept any, without stopping early.
                let matched = parsed.v1.iter().fold(Choice::from(0), |acc, sig| {
                    acc | expected.as_slice().ct_eq(&sig[..])
                });
                if !bool::from(matched) {
                    return Err(VerifyError::Mismatch {
                        header: STRIPE_SIGNATURE.into(),
                    });
                }
                self.check_window(parsed.t, now, STRIPE_SIGNATURE)
            }
            Check::Bearer(want) => {
                let value = match single(headers, &self.headers[0], AUTHORIZATION) {
                    Ok(v) => v,
                    Err(VerifyError::Missing { .. }) => return Err(VerifyError::TokenMissing),
                    Err(_) => {
                        return Err(VerifyError::TokenMalformed {
                            reason: "expected one \"Bearer <token>\" in visible ASCII",
                        })
                    }
                };
                let (auth_scheme, token) =
                    value.split_once(' ').ok_or(VerifyError::TokenMalformed {
                        reason: "expected \"Bearer <token>\"",
                    })?;
                // RFC 9110: the auth-scheme is case-insensitive.
                if !auth_scheme.eq_ignore_ascii_case("bearer") {
                    return Err(VerifyError::TokenMalformed {
                        reason: "expected the Bearer scheme",
                    });
                }
                let token = token.trim_matches(|c| c == ' ' || c == '\t');
                if token.is_empty() {
                    return Err(VerifyError::TokenMalformed {
                        reason: "empty token",
                    });
                }
                let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                if bool::from(got[..].ct_eq(&want[..])) {
                    Ok(())
                } else {
                    Err(VerifyError::TokenMismatch)
                }
            }
        }
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

/// Hex (either case) to a 32-byte digest; anything else is malformed.
fn decode_sha256(hex_text: &str, header: &str) -> Result<[u8; 32], VerifyError> {
    let mut sig = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut sig)
        .map_err(|_| malformed(header, "signature is not 64 hex digits"))?;
    Ok(sig)
}

/// HMAC of the concatenated `parts`, compared in constant time with `sig`.
fn verify_mac(
    keyed: &HmacSha256,
    parts: &[&[u8]],
    sig: &[u8; 32],
    header: &str,
) -> Result<(), VerifyError> {
    let mut mac = keyed.clone();
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(sig).map_err(|_| VerifyError::Mismatch {
        header: header.into(),
    })
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

fn malformed(header: &str, reason: &'static str) -> VerifyError {
    VerifyError::Malformed {
        header: header.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;
    use http::HeaderValue;
    use std::time::Duration;

    fn cfg(scheme: Scheme, header: Option<&str>) -> VerifyConfig {
        VerifyConfig {
            scheme,
            secret: SecretSource::None,
            header: header.map(str::to_string),
            tolerance: Duration::from_secs(300),
        }
    }

    fn verifier(scheme: Scheme, secret: &str) -> Verifier {
        let header = (scheme == Scheme::HmacSha256).then_some("X-Signature");
        Verifier::new(&cfg(scheme, header), Some(secret.as_bytes().to_vec())).unwrap()
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

    fn code(r: Result<(), VerifyError>) -> &'static str {
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
        assert_eq!(v.verify(&h, GH_BODY, at(0)), Ok(()));
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
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS)), Ok(()));
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
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS + 300)), Ok(()));
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS - 299)), Ok(()));
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
        let v = Verifier::new(&c, Some(SLACK_SECRET.into())).unwrap();
        let h = slack_headers(SLACK_SIG, "1531420618");
        assert_eq!(v.verify(&h, SLACK_BODY, at(SLACK_TS + 10)), Ok(()));
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
        assert_eq!(v.verify(&h, STRIPE_BODY, at(STRIPE_T)), Ok(()));
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
                Ok(()),
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
        assert_eq!(v.verify(&h, STRIPE_BODY, at(STRIPE_T + 300)), Ok(()));
        assert_eq!(v.verify(&h, STRIPE_BODY, at(STRIPE_T - 300)), Ok(()));
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
            assert_eq!(v.verify(&h, GH_BODY, at(0)), Ok(()), "{value}");
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
        assert_eq!(ok("Bearer s3cret-token"), Ok(()));
        assert_eq!(ok("bearer s3cret-token"), Ok(()));
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
        let v = Verifier::new(&cfg(Scheme::None, None), None).unwrap();
        assert_eq!(v.verify(&HeaderMap::new(), b"anything", at(0)), Ok(()));
        assert!(v.signature_headers().is_empty());
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
            assert!(Verifier::new(&c, None).is_err());
            assert!(Verifier::new(&c, Some(Vec::new())).is_err());
        }
        assert!(Verifier::new(&cfg(Scheme::None, None), Some(b"x".to_vec())).is_err());
        assert!(Verifier::new(&cfg(Scheme::HmacSha256, None), Some(b"x".to_vec())).is_err());
        let bad_name = cfg(Scheme::HmacSha256, Some("X Sig"));
        assert!(Verifier::new(&bad_name, Some(b"x".to_vec())).is_err());
    }

    #[test]
    fn signature_headers_per_scheme() {
        let names = |v: &Verifier| -> Vec<String> {
            v.signature_headers()
                .iter()
                .map(|h| h.to_string())
                .collect()
        };
        assert_eq!(
            names(&verifier(Scheme::Github, "k")),
            ["x-hub-signature-256"]
        );
        assert_eq!(
            names(&verifier(Scheme::Slack, "k")),
            ["x-slack-signature", "x-slack-request-timestamp"]
        );
        assert_eq!(names(&verifier(Scheme::Stripe, "k")), ["stripe-signature"]);
        assert_eq!(names(&verifier(Scheme::HmacSha256, "k")), ["x-signature"]);
        assert_eq!(names(&verifier(Scheme::Bearer, "k")), ["authorization"]);
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
}
