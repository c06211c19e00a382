//! A request's values by field name: the one place that reads them.
//!
//! Rules at the door (`ingress/rules.rs`), the dedup id (`ingress/dedup_key.rs`)
//! and, at delivery time, placeholders in an action's arguments name a value
//! the same way:
//!
//! - `payload.a.b.0`: a dot path into the body; a number indexes an array (and
//!   is an ordinary key in an object). The body is JSON, or else
//!   `application/x-www-form-urlencoded` (decided by its content, not by a
//!   header, because senders get Content-Type wrong): a form field is a string,
//!   a field given several times is an array of strings.
//! - `header.X-Name`: a header's first value, name compared case-insensitively.
//! - `query.name`: the first value of a query parameter, percent-decoded.
//! - `request.method`, `request.remote_ip`.
//!
//! A value that is absent is `None`, never an error: what a sender did not send
//! is for the caller to judge. Pure: no IO.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderMap;
use serde_json::{Map, Value};

/// What a request carries, borrowed from wherever it is held (the connection
/// at the door, the spooled item at delivery).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    /// `"POST"`.
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub remote_ip: Option<IpAddr>,
    /// JSON or `application/x-www-form-urlencoded`, decided by content.
    pub body: &'a [u8],
}

impl<'a> RequestView<'a> {
    /// `payload.a.b.0` (dot path, array indexes), `header.X-Name`
    /// (case-insensitive), `query.name`, `request.method`,
    /// `request.remote_ip`. None when absent (never an error).
    ///
    /// Parses the body on each call; to look up many fields, use
    /// [`RequestView::fields`], which parses it once.
    #[cfg(test)]
    pub(crate) fn lookup(&self, field: &str) -> Option<Value> {
        self.fields().lookup(field)
    }

    /// The view with its body parsed once, for many lookups.
    pub(crate) fn fields(&self) -> Fields<'a> {
        Fields {
            view: *self,
            payload: parse_payload(self.body),
        }
    }
}

/// A [`RequestView`] whose body has been parsed (once).
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    view: RequestView<'a>,
    payload: Option<Value>,
}

impl Fields<'_> {
    /// As [`RequestView::lookup`].
    pub(crate) fn lookup(&self, field: &str) -> Option<Value> {
        self.get(field).map(Cow::into_owned)
    }

    /// As [`Fields::lookup`], borrowing a payload value instead of copying
    /// it (a rule compares, it need not own).
    pub(crate) fn get(&self, field: &str) -> Option<Cow<'_, Value>> {
        let (scope, rest) = field.split_once('.')?;
        if rest.is_empty() {
            return None;
        }
        let owned = |s: String| Some(Cow::Owned(Value::String(s)));
        match scope {
            "payload" => walk(self.payload.as_ref()?, rest.split('.')).map(Cow::Borrowed),
            "header" => {
                let v = self.view.headers.get(rest)?;
                owned(String::from_utf8_lossy(v.as_bytes()).into_owned())
            }
            "query" => {
                let q = self.view.query?;
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == rest)
                    .and_then(|(_, v)| owned(v.into_owned()))
            }
            "request" => match rest {
                "method" => owned(self.view.method.to_string()),
                "remote_ip" => self
                    .view
                    .remote_ip
                    .and_then(|ip| owned(ip.to_canonical().to_string())),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The body as a value: JSON if it parses as JSON, else a form-urlencoded
/// body as an object, else `None`.
pub(crate) fn parse_payload(body: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Some(v);
    }
    parse_form(body)
}

/// `a=1&b=2&b=3` → `{"a":"1","b":["2","3"]}`. Only a body whose every
/// non-empty `&`-separated part has a `=` and is UTF-8 counts as a form, so a
/// plain-text or binary body is no payload at all rather than one odd key.
fn parse_form(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.is_empty()
        || text
            .split('&')
            .any(|part| !part.is_empty() && !part.contains('='))
    {
        return None;
    }
    let mut map = Map::new();
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        let v = Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            None => {
                map.insert(k.into_owned(), v);
            }
            Some(Value::Array(a)) => a.push(v),
            Some(first) => {
                let first = first.take();
                map.insert(k.into_owned(), Value::Array(vec![first, v]));
            }
        }
    }
    Some(Value::Object(map))
}

/// Follows `path` into `v`: a step is a key of an object, or a number that
/// indexes an array. `None` when a step finds nothing.
pub(crate) fn walk<S: AsRef<str>>(
    mut v: &Value,
    path: impl IntoIterator<Item = S>,
) -> Option<&Value> {
    for step in path {
        let step = step.as_ref();
        v = match v {
            Value::Object(m) => m.get(step)?,
            Value::Array(a) => a.get(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// A value as text for arguments/conditions: strings as-is, numbers/bools as
/// written, objects/arrays (and null) as compact JSON.
pub(crate) fn as_text(v: &Value) -> String {
    text_of(v).into_owned()
}

/// [`as_text`] without a copy for a string.
pub(crate) fn text_of(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(as_text_owned(other)),
    }
}

fn as_text_owned(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn view<'a>(h: &'a HeaderMap, body: &'a [u8]) -> RequestView<'a> {
        RequestView {
            method: "POST",
            headers: h,
            query: Some("env=prod&tag=a%20b&env=dev&flag"),
            remote_ip: Some("10.1.2.3".parse().unwrap()),
            body,
        }
    }

    #[test]
    fn payload_paths_walk_objects_and_array_indexes() {
        let h = HeaderMap::new();
        let body = br#"{"ref":"refs/heads/main","n":42,"f":1.5,"t":true,"z":null,
            "commits":[{"id":"a1"},{"id":"b2"}],"o":{"0":"zero"}}"#;
        let v = view(&h, body);
        assert_eq!(v.lookup("payload.ref"), Some(json!("refs/heads/main")));
        assert_eq!(v.lookup("payload.n"), Some(json!(42)));
        assert_eq!(v.lookup("payload.commits.1.id"), Some(json!("b2")));
        assert_eq!(v.lookup("payload.o.0"), Some(json!("zero")));
        assert_eq!(v.lookup("payload.z"), Some(Value::Null));
        assert_eq!(
            v.lookup("payload.commits.0"),
            Some(json!({"id": "a1"})),
            "a subtree is a value too"
        );
        for absent in [
            "payload.missing",
            "payload.commits.2.id",
            "payload.commits.x",
            "payload.commits.-1",
            "payload.ref.deeper",
            "payload.",
            "payload",
            "payload..ref",
        ] {
            assert_eq!(v.lookup(absent), None, "{absent}");
        }
    }

    #[test]
    fn a_form_body_is_a_payload_of_strings() {
        let h = HeaderMap::new();
        let v = view(
            &h,
            b"token=abc&text=hello+world&x=1&x=2&json=%7B%22a%22%3A1%7D\r\n",
        );
        assert_eq!(v.lookup("payload.token"), Some(json!("abc")));
        assert_eq!(v.lookup("payload.text"), Some(json!("hello world")));
        assert_eq!(v.lookup("payload.x"), Some(json!(["1", "2"])));
        assert_eq!(v.lookup("payload.x.1"), Some(json!("2")));
        assert_eq!(v.lookup("payload.json"), Some(json!("{\"a\":1}")));
        assert_eq!(v.lookup("payload.nope"), None);
    }

    #[test]
    fn a_body_that_is_neither_json_nor_a_form_has_no_payload() {
        let h = HeaderMap::new();
        for body in [&b""[..], b"hello", b"a=1&plain", b"\xff\xfe=1", b"{\"a\":"] {
            assert_eq!(parse_payload(body), None, "{body:?}");
            assert_eq!(view(&h, body).lookup("payload.a"), None);
        }
        // A JSON scalar is a payload, with no fields below it.
        assert_eq!(parse_payload(b"7"), Some(json!(7)));
    }

    #[test]
    fn headers_are_case_insensitive_and_first_value_wins() {
        let h = headers(&[
            ("X-GitHub-Event", "push"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ]);
        let v = view(&h, b"");
        assert_eq!(v.lookup("header.x-github-event"), Some(json!("push")));
        assert_eq!(v.lookup("header.X-GITHUB-EVENT"), Some(json!("push")));
        assert_eq!(v.lookup("header.X-Multi"), Some(json!("1")));
        assert_eq!(v.lookup("header.X-Absent"), None);
        assert_eq!(v.lookup("header.not a name"), None);
        assert_eq!(v.lookup("header."), None);
    }

    #[test]
    fn query_values_are_decoded_and_first_value_wins() {
        let h = HeaderMap::new();
        let v = view(&h, b"");
        assert_eq!(v.lookup("query.env"), Some(json!("prod")));
        assert_eq!(v.lookup("query.tag"), Some(json!("a b")));
        assert_eq!(v.lookup("query.flag"), Some(json!("")));
        assert_eq!(v.lookup("query.absent"), None);
        let none = RequestView { query: None, ..v };
        assert_eq!(none.lookup("query.env"), None);
    }

    #[test]
    fn request_method_and_remote_ip() {
        let h = HeaderMap::new();
        let v = view(&h, b"");
        assert_eq!(v.lookup("request.method"), Some(json!("POST")));
        assert_eq!(v.lookup("request.remote_ip"), Some(json!("10.1.2.3")));
        assert_eq!(v.lookup("request.other"), None);
        let mapped = RequestView {
            remote_ip: Some("::ffff:127.0.0.1".parse().unwrap()),
            ..v
        };
        assert_eq!(mapped.lookup("request.remote_ip"), Some(json!("127.0.0.1")));
        let unknown = RequestView {
            remote_ip: None,
            ..v
        };
        assert_eq!(unknown.lookup("request.remote_ip"), None);
        for bad in ["", "request", "body.x", "payload"] {
            assert_eq!(v.lookup(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_parse_once_and_agree_with_lookup() {
        let h = headers(&[("x-a", "1")]);
        let v = view(&h, br#"{"a":{"b":[1,2]}}"#);
        let f = v.fields();
        for field in ["payload.a.b.1", "header.x-a", "query.env", "payload.none"] {
            assert_eq!(f.lookup(field), v.lookup(field), "{field}");
        }
    }

    #[test]
    fn as_text_writes_scalars_plainly_and_the_rest_as_json() {
        assert_eq!(as_text(&json!("a b")), "a b");
        assert_eq!(as_text(&json!(42)), "42");
        assert_eq!(as_text(&json!(-1.5)), "-1.5");
        assert_eq!(as_text(&json!(true)), "true");
        assert_eq!(as_text(&Value::Null), "null");
        assert_eq!(as_text(&json!({"a": [1, "x"]})), r#"{"a":[1,"x"]}"#);
        assert_eq!(as_text(&json!([])), "[]");
    }
}
