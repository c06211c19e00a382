//! The dedup id of a request: a header's value or a field of its body (see `request.rs`).
//!
//! The id goes to the spool, which answers a repeat of (hook, id) with the first
//! item's id. A body field that is absent (or a body that is not JSON) gives no
//! id: the webhook is still accepted, only not deduplicated, because refusing it
//! would lose an event over a field the sender was never obliged to send. A
//! header that is present but unusable (empty, not visible ASCII) is refused as
//! before: it is the sender's mistake and the id it meant is unknowable.

use http::HeaderMap;

use crate::config::DedupKey;

/// Longest id kept: ids are compared and indexed, and a provider's ids are short.
const MAX_ID: usize = 512;

/// The id `key` picks from the request; `Err` is the message of a 400.
pub(crate) fn extract(
    key: Option<&DedupKey>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, String> {
    let id = match key {
        None => return Ok(None),
        Some(DedupKey::Header(names)) => {
            let Some((name, value)) = names
                .iter()
                .find_map(|n| headers.get(n.as_str()).map(|v| (n, v)))
            else {
                return Ok(None);
            };
            match value.to_str() {
                Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
                _ => {
                    return Err(format!(
                        "the delivery id header {name} is empty or not visible ASCII"
                    ))
                }
            }
        }
        Some(DedupKey::Payload(path)) => match from_payload(path, body) {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    if id.len() > MAX_ID {
        return Err(format!("the delivery id is longer than {MAX_ID} bytes"));
    }
    Ok(Some(id))
}

/// Follows `path` into the body as `request.rs` reads it (JSON, or a form).
/// Strings are taken as they are, numbers as written; other values (objects,
/// arrays, booleans, null) are not ids.
fn from_payload(path: &[String], body: &[u8]) -> Option<String> {
    let payload = crate::request::parse_payload(body)?;
    match crate::request::walk(&payload, path)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> DedupKey {
        DedupKey::parse(text).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn parse_keys() {
        assert_eq!(
            key("header.X-GitHub-Delivery"),
            DedupKey::Header(vec!["X-GitHub-Delivery".into()])
        );
        assert_eq!(
            key("payload.items.0.id"),
            DedupKey::Payload(vec!["items".into(), "0".into(), "id".into()])
        );
        for bad in [
            "id",
            "payload.",
            "payload.a..b",
            "header.",
            "header.X Y",
            "body.id",
        ] {
            assert!(DedupKey::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(key("payload.a.b").to_string(), "payload.a.b");
        let both = DedupKey::Header(vec!["webhook-id".into(), "svix-id".into()]);
        assert_eq!(both.to_string(), "header.webhook-id (or header.svix-id)");
    }

    #[test]
    fn header_keys() {
        let k = key("header.X-Id");
        let h = headers(&[("x-id", " abc ")]);
        assert_eq!(extract(Some(&k), &h, b""), Ok(Some("abc".into())));
        assert_eq!(extract(Some(&k), &HeaderMap::new(), b""), Ok(None));
        assert!(extract(Some(&k), &headers(&[("x-id", "")]), b"").is_err());
        let alt = DedupKey::Header(vec!["webhook-id".into(), "svix-id".into()]);
        let h = headers(&[("svix-id", "msg_1")]);
        assert_eq!(extract(Some(&alt), &h, b""), Ok(Some("msg_1".into())));
        assert_eq!(extract(None, &h, b""), Ok(None));
        let long = "x".repeat(MAX_ID + 1);
        assert!(extract(Some(&k), &headers(&[("x-id", &long)]), b"").is_err());
    }

    #[test]
    fn payload_keys() {
        let body = br#"{"id":"evt_1","n":42,"items":[{"id":"a"},{"id":7}],"o":{},"t":true,"e":""}"#;
        let get = |k: &str| extract(Some(&key(k)), &HeaderMap::new(), body).unwrap();
        assert_eq!(get("payload.id").as_deref(), Some("evt_1"));
        assert_eq!(get("payload.n").as_deref(), Some("42"));
        assert_eq!(get("payload.items.0.id").as_deref(), Some("a"));
        assert_eq!(get("payload.items.1.id").as_deref(), Some("7"));
        for none in [
            "payload.missing",
            "payload.items.2.id",
            "payload.items.x",
            "payload.id.deeper",
            "payload.o",
            "payload.t",
            "payload.e",
        ] {
            assert_eq!(get(none), None, "{none}");
        }
        // Not JSON: no id, not an error.
        assert_eq!(
            extract(Some(&key("payload.id")), &HeaderMap::new(), b"a=b"),
            Ok(None)
        );
    }
}
