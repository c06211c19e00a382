//! Target (a): the signature parsers and verifiers on arbitrary headers and bodies.
//!
//! Input: one selector byte, then `Name: value` lines, an empty line, the body.
//! The selector's low bits pick one of [`SCHEMES`]; its high bit asks the
//! harness to sign the request itself (github, stripe, standard-webhooks), so
//! the fuzzer reaches the paths after a matching signature (key rotation, the
//! timestamp window) that it could never hit by guessing an HMAC.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::Sha256;

use crate::config::{Algorithm, Encoding, Scheme, VerifyConfig};
use crate::ingress::verify::Verifier;

/// Two keys, newest first, as during a rotation. Their text must never show in
/// an error message.
const KEYS: [&[u8]; 2] = [b"fuzz-key-newest-0123456789", b"fuzz-key-older-9876543210"];
/// Standard Webhooks keys are base64 after `whsec_`: the same bytes, encoded.
fn whsec(key: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!("whsec_{b64}").into_bytes()
}

/// The clock every request is judged against.
const NOW_SECS: u64 = 1_700_000_000;

fn cfg(scheme: Scheme) -> VerifyConfig {
    VerifyConfig {
        scheme,
        tolerance: Duration::from_secs(300),
        ..VerifyConfig::default()
    }
}

/// Every scheme, and the generic HMAC with every knob turned.
fn configs() -> Vec<(VerifyConfig, Vec<Vec<u8>>)> {
    let keys = || KEYS.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    let with_header = |scheme, header: &str| VerifyConfig {
        header: Some(header.to_string()),
        ..cfg(scheme)
    };
    vec![
        (cfg(Scheme::Github), keys()),
        (cfg(Scheme::Slack), keys()),
        (
            VerifyConfig {
                algorithm: Algorithm::Sha512,
                encoding: Encoding::Base64,
                prefix: Some("v1=".into()),
                signed: Some("{timestamp}.{header.X-Id}.{body}".into()),
                timestamp_header: Some("X-Ts".into()),
                ..with_header(Scheme::Hmac, "X-Sig")
            },
            keys(),
        ),
        (
            VerifyConfig {
                algorithm: Algorithm::Sha1,
                ..with_header(Scheme::Hmac, "X-Sig")
            },
            keys(),
        ),
        (with_header(Scheme::HmacSha256, "X-Signature"), keys()),
        (cfg(Scheme::Stripe), keys()),
        (
            cfg(Scheme::StandardWebhooks),
            KEYS.iter().map(|k| whsec(k)).collect(),
        ),
        (cfg(Scheme::Bearer), keys()),
        (with_header(Scheme::Token, "X-Token"), keys()),
        (
            cfg(Scheme::Basic),
            vec![b"user:fuzz-key-newest-0123456789".to_vec()],
        ),
        (cfg(Scheme::None), Vec::new()),
    ]
}

struct Built {
    verifiers: Vec<(Scheme, Verifier)>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| Built {
        verifiers: configs()
            .into_iter()
            .map(|(c, keys)| match Verifier::new(&c, keys) {
                Ok(v) => (c.scheme, v),
                Err(e) => panic!("fuzz harness: a fixed verifier config is refused: {e}"),
            })
            .collect(),
    })
}

/// Splits `Name: value` lines (up to the first empty line) from the body.
/// Lines that are not a valid header are skipped: hyper would refuse them
/// before hookd saw them.
pub(super) fn headers_and_body(data: &[u8]) -> (HeaderMap, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let mut map = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (name, HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    (map, body)
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Replaces the signature headers with a correct signature by key `key`;
/// `None` for schemes the harness does not sign.
fn sign(scheme: Scheme, key: usize, headers: &mut HeaderMap, body: &[u8]) -> Option<()> {
    let k = KEYS[key];
    let b64 = base64::engine::general_purpose::STANDARD;
    match scheme {
        Scheme::Github => {
            let sig = format!("sha256={}", hex::encode(hmac256(k, &[body])));
            headers.insert("x-hub-signature-256", HeaderValue::from_str(&sig).ok()?);
        }
        Scheme::Stripe => {
            let t = NOW_SECS.to_string();
            let sig = hex::encode(hmac256(k, &[t.as_bytes(), b".", body]));
            let v = format!("t={t},v1={sig}");
            headers.insert("stripe-signature", HeaderValue::from_str(&v).ok()?);
        }
        Scheme::StandardWebhooks => {
            for n in ["svix-id", "svix-timestamp", "svix-signature"] {
                headers.remove(n);
            }
            let id = "msg_fuzz";
            let t = NOW_SECS.to_string();
            let sig = b64.encode(hmac256(k, &[id.as_bytes(), b".", t.as_bytes(), b".", body]));
            headers.insert("webhook-id", HeaderValue::from_static(id));
            headers.insert("webhook-timestamp", HeaderValue::from_str(&t).ok()?);
            let v = format!("v1,{sig}");
            headers.insert("webhook-signature", HeaderValue::from_str(&v).ok()?);
        }
        _ => return None,
    }
    Some(())
}

/// One fuzz input; panics when an invariant breaks.
pub fn verify(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let b = built();
    let (scheme, v) = &b.verifiers[usize::from(sel & 0x7f) % b.verifiers.len()];
    let (mut headers, body) = headers_and_body(rest);
    let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    let signed_with = if sel & 0x80 != 0 {
        let key = usize::from(body.first().copied().unwrap_or(0) & 1);
        sign(*scheme, key, &mut headers, body).map(|()| key)
    } else {
        None
    };
    let result = v.verify(&headers, body, now);
    if let Some(key) = signed_with {
        assert_eq!(result, Ok(key), "a correct signature by key {key} failed");
    }
    let early = v.check_headers(&headers, now);
    match &result {
        Ok(_) => assert_eq!(early, Ok(()), "refused from headers, accepted whole"),
        Err(e) => {
            // The early answer is the one the whole check gives, so refusing
            // before the body is read changes nothing a client sees.
            if let Err(early) = &early {
                assert_eq!(early, e, "check_headers and verify disagree");
            }
            assert!(
                matches!(e.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                "{e}: status {}",
                e.status()
            );
            assert!(!e.code().is_empty());
            let text = e.to_string();
            for k in KEYS {
                let k = String::from_utf8_lossy(k);
                assert!(!text.contains(&*k), "an error shows a key: {text}");
            }
        }
    }
    // Re-verifying later (a stored delivery, a skewed clock) never panics.
    let _ = v.verify(&headers, body, SystemTime::UNIX_EPOCH);
    let _ = v.verify(
        &headers,
        body,
        now + Duration::from_secs(u64::from(u32::MAX)),
    );
}
