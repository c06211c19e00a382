//! Request values in an `exec` command's arguments and environment:
//! `["/deploy", "--sha={payload.after}", "{header.X-GitHub-Event}"]`.
//!
//! A template is parsed once, when the config is loaded (an unknown field root
//! or a stray `{` is a config error), and rendered at each attempt from the
//! spooled request, so every retry sees the same values. Rendering never goes
//! through a shell: one template is one argv element, whatever the value holds.

use std::fmt;

/// The longest rendered argument or variable value, in bytes. Linux refuses
/// (E2BIG) a single argument of 128 KiB or more (`MAX_ARG_STRLEN`, with the NUL).
pub(crate) const MAX_VALUE: usize = 128 * 1024 - 1;

/// What to do when a placeholder's field is not in the request (and the
/// placeholder has no `:-default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Missing {
    /// The item is dead with the reason: the spooled request never changes,
    /// so no retry could succeed. The default: a deploy run with an empty
    /// commit id is worse than none.
    #[default]
    Fail,
    /// The placeholder becomes the empty string.
    Empty,
    /// The argument (or variable) holding the placeholder is left out.
    Skip,
}

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// `{payload}`: the whole body as text.
    Body,
    /// `{payload.…}`, `{header.…}`, `{query.…}`, `{request.method}`,
    /// `{request.remote_ip}`: looked up in the spooled request.
    Request(String),
    /// `{hookd.delivery_id}`, `{hookd.hook}`, `{hookd.attempt}`.
    Hookd(HookdField),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookdField {
    DeliveryId,
    Hook,
    Attempt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value {
        field: Field,
        /// As written, for error messages.
        name: String,
        default: Option<String>,
    },
}

/// One argv element or environment value with its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// Why a template cannot be rendered for this request; the attempt fails
/// and, as the request never changes, so would every retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RenderError {
    #[error("{{{0}}} is not in the request (missing = \"fail\")")]
    Missing(String),
    #[error("{{{name}}} makes a value of {len} bytes; the most is {MAX_VALUE}")]
    TooLong { name: String, len: usize },
    #[error("{{{0}}} holds a NUL byte, which no argument or variable can carry")]
    Nul(String),
    /// A `validate` pattern refused the field's value (shown cut and quoted).
    #[error("{field} = {value} does not match validate {pattern:?}")]
    Invalid {
        field: String,
        value: String,
        pattern: String,
    },
}

/// A `validate = { "payload.ref" = "^refs/heads/.+$" }` entry: the field's
/// value, when the request has it, must match the whole pattern.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub field: String,
    /// As written, for messages.
    pub pattern: String,
    /// `^(?:pattern)$`: anchored, as rules' `matches` is.
    regex: regex::Regex,
}

/// How much of a refused value an error message shows.
const SHOWN: usize = 80;

impl Check {
    pub(crate) fn new(field_name: &str, pattern: &str) -> Result<Check, String> {
        match field(field_name)? {
            Field::Request(_) => {}
            _ => {
                return Err(format!(
                    "validate: {field_name} is not a request field (payload.<path>, header.<Name>, query.<name>, request.method, request.remote_ip)"
                ))
            }
        }
        let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| format!("validate.{field_name}: {e}"))?;
        Ok(Check {
            field: field_name.to_string(),
            pattern: pattern.to_string(),
            regex,
        })
    }

    /// `Err` when the request has the field and its value does not match.
    pub(crate) fn check(&self, v: &Values<'_>) -> Result<(), RenderError> {
        match (v.lookup)(&self.field) {
            Some(value) if !self.regex.is_match(&value) => {
                let cut: String = value.chars().take(SHOWN).collect();
                Err(RenderError::Invalid {
                    field: self.field.clone(),
                    value: format!("{cut:?}"),
                    pattern: self.pattern.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// What a template is rendered from: the request's values and hookd's own.
pub(crate) struct Values<'a> {
    pub body: &'a [u8],
    /// `payload.…`, `header.…`, `query.…`, `request.…` as text; `None` when absent.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    pub delivery_id: i64,
    pub hook: &'a str,
    pub attempt: u32,
}

impl Template {
    /// Parses `text`: `{field}` or `{field:-default}` placeholders, `{{` and
    /// `}}` for literal braces. Errors say what is wrong in one line.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if brace == b'}' {
                // `}}` is a literal brace; a lone `}` too (nothing it could close).
                lit.push('}');
                rest = after.strip_prefix('}').unwrap_or(after);
                continue;
            }
            if let Some(r) = after.strip_prefix('{') {
                lit.push('{');
                rest = r;
                continue;
            }
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "{text:?}: a '{{' without its '}}' (write {{{{ for a literal brace)"
                ));
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d.to_string())),
                None => (inner, None),
            };
            let field = field(name).map_err(|e| format!("{text:?}: {e}"))?;
            if !lit.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            parts.push(Part::Value {
                field,
                name: name.to_string(),
                default,
            });
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Whether the template holds any placeholder.
    #[cfg(test)]
    pub(crate) fn has_values(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Value { .. }))
    }

    /// Whether a placeholder reads the request's headers, query or body
    /// fields (so the body must be parsed).
    pub(crate) fn needs_request(&self) -> bool {
        self.parts.iter().any(|p| {
            matches!(
                p,
                Part::Value {
                    field: Field::Request(_),
                    ..
                }
            )
        })
    }

    /// The rendered bytes; `Ok(None)` when a field is missing under
    /// [`Missing::Skip`] (the element is left out).
    pub(crate) fn render(
        &self,
        v: &Values<'_>,
        missing: Missing,
    ) -> Result<Option<Vec<u8>>, RenderError> {
        let mut out: Vec<u8> = Vec::new();
        for part in &self.parts {
            let (value, name): (Option<Vec<u8>>, &str) = match part {
                Part::Text(t) => {
                    out.extend_from_slice(t.as_bytes());
                    continue;
                }
                Part::Value {
                    field,
                    name,
                    default,
                } => {
                    let got = match field {
                        Field::Body => Some(v.body.to_vec()),
                        Field::Request(path) => (v.lookup)(path).map(String::into_bytes),
                        Field::Hookd(HookdField::DeliveryId) => {
                            Some(v.delivery_id.to_string().into_bytes())
                        }
                        Field::Hookd(HookdField::Hook) => Some(v.hook.as_bytes().to_vec()),
                        Field::Hookd(HookdField::Attempt) => {
                            Some(v.attempt.to_string().into_bytes())
                        }
                    };
                    (
                        got.or_else(|| default.clone().map(String::into_bytes)),
                        name,
                    )
                }
            };
            match value {
                Some(bytes) => {
                    if bytes.contains(&0) {
                        return Err(RenderError::Nul(name.to_string()));
                    }
                    out.extend_from_slice(&bytes);
                }
                None => match missing {
                    Missing::Fail => return Err(RenderError::Missing(name.to_string())),
                    Missing::Empty => {}
                    Missing::Skip => return Ok(None),
                },
            }
            if out.len() > MAX_VALUE {
                return Err(RenderError::TooLong {
                    name: name.to_string(),
                    len: out.len(),
                });
            }
        }
        Ok(Some(out))
    }
}

impl fmt::Display for Template {
    /// The template as written (braces of literal text doubled).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(&t.replace('{', "{{").replace('}', "}}"))?,
                Part::Value { name, default, .. } => match default {
                    Some(d) => write!(f, "{{{name}:-{d}}}")?,
                    None => write!(f, "{{{name}}}")?,
                },
            }
        }
        Ok(())
    }
}

/// The field a placeholder names, or why no request has it.
fn field(name: &str) -> Result<Field, String> {
    const ROOTS: &str = "payload, payload.<path>, header.<Name>, query.<name>, request.method, request.remote_ip, hookd.delivery_id, hookd.hook, hookd.attempt";
    let (root, rest) = match name.split_once('.') {
        Some((r, rest)) => (r, Some(rest)),
        None => (name, None),
    };
    match (root, rest) {
        ("payload", None) => Ok(Field::Body),
        ("payload" | "header" | "query", Some(rest)) if !rest.is_empty() => {
            Ok(Field::Request(name.to_string()))
        }
        ("request", Some("method" | "remote_ip")) => Ok(Field::Request(name.to_string())),
        ("hookd", Some("delivery_id")) => Ok(Field::Hookd(HookdField::DeliveryId)),
        ("hookd", Some("hook")) => Ok(Field::Hookd(HookdField::Hook)),
        ("hookd", Some("attempt")) => Ok(Field::Hookd(HookdField::Attempt)),
        _ => Err(format!(
            "unknown placeholder {{{name}}}; use one of {ROOTS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(lookup: &'a dyn Fn(&str) -> Option<String>) -> Values<'a> {
        Values {
            body: b"{\"after\":\"abc\"}",
            lookup,
            delivery_id: 42,
            hook: "deploy",
            attempt: 3,
        }
    }

    fn known(field: &str) -> Option<String> {
        match field {
            "payload.after" => Some("abc123".into()),
            "header.X-GitHub-Event" => Some("push".into()),
            "payload.evil" => Some("$(rm -rf /); `x` | y > z".into()),
            "payload.nul" => Some("a\0b".into()),
            "payload.big" => Some("x".repeat(MAX_VALUE)),
            _ => None,
        }
    }

    fn render(t: &str, missing: Missing) -> Result<Option<String>, RenderError> {
        Template::parse(t)
            .unwrap()
            .render(&values(&known), missing)
            .map(|o| o.map(|b| String::from_utf8(b).unwrap()))
    }

    #[test]
    fn placeholders_concatenate_with_text_and_hookd_values() {
        assert_eq!(
            render(
                "--sha={payload.after}/{header.X-GitHub-Event}#{hookd.delivery_id}.{hookd.attempt}@{hookd.hook}",
                Missing::Fail
            ),
            Ok(Some("--sha=abc123/push#42.3@deploy".into()))
        );
        assert_eq!(
            render("{payload}", Missing::Fail),
            Ok(Some("{\"after\":\"abc\"}".into()))
        );
        assert_eq!(render("plain", Missing::Fail), Ok(Some("plain".into())));
    }

    #[test]
    fn shell_metacharacters_in_a_value_are_kept_as_they_are() {
        assert_eq!(
            render("{payload.evil}", Missing::Fail),
            Ok(Some("$(rm -rf /); `x` | y > z".into()))
        );
    }

    #[test]
    fn doubled_braces_are_literal_and_round_trip() {
        let t = Template::parse("{{\"a\":{payload.after}}}").unwrap();
        assert_eq!(
            render("{{\"a\":{payload.after}}}", Missing::Fail),
            Ok(Some("{\"a\":abc123}".into()))
        );
        assert_eq!(t.to_string(), "{{\"a\":{payload.after}}}");
        assert!(t.has_values());
        assert!(!Template::parse("{{x}}").unwrap().has_values());
    }

    #[test]
    fn each_missing_policy_and_the_inline_default() {
        assert_eq!(
            render("--ref={payload.ref}", Missing::Fail),
            Err(RenderError::Missing("payload.ref".into()))
        );
        assert_eq!(
            render("--ref={payload.ref}", Missing::Empty),
            Ok(Some("--ref=".into()))
        );
        assert_eq!(render("--ref={payload.ref}", Missing::Skip), Ok(None));
        assert_eq!(
            render("--ref={payload.ref:-main}", Missing::Fail),
            Ok(Some("--ref=main".into()))
        );
        assert_eq!(
            render("{payload.after:-main}", Missing::Fail),
            Ok(Some("abc123".into()))
        );
    }

    #[test]
    fn values_too_long_or_with_nul_fail_with_the_field() {
        assert_eq!(
            render("{payload.big}", Missing::Fail),
            Ok(Some("x".repeat(MAX_VALUE)))
        );
        assert_eq!(
            render("-{payload.big}", Missing::Fail),
            Err(RenderError::TooLong {
                name: "payload.big".into(),
                len: MAX_VALUE + 1
            })
        );
        assert_eq!(
            render("{payload.nul}", Missing::Fail),
            Err(RenderError::Nul("payload.nul".into()))
        );
    }

    #[test]
    fn validate_matches_the_whole_value_and_ignores_an_absent_field() {
        let branch = Check::new("payload.after", "[0-9a-f]+").unwrap();
        assert_eq!(branch.check(&values(&known)), Ok(()));
        let strict = Check::new("payload.evil", "[a-z ]+").unwrap();
        let e = strict.check(&values(&known)).unwrap_err();
        assert!(
            e.to_string().starts_with("payload.evil = \"$(rm -rf /);")
                && e.to_string()
                    .ends_with("does not match validate \"[a-z ]+\""),
            "{e}"
        );
        // Anchored: a match inside the value is not enough.
        let anchored = Check::new("header.X-GitHub-Event", "us").unwrap();
        assert!(anchored.check(&values(&known)).is_err());
        assert_eq!(
            Check::new("payload.ref", "x")
                .unwrap()
                .check(&values(&known)),
            Ok(())
        );
        assert!(Check::new("hookd.hook", "x")
            .unwrap_err()
            .contains("not a request field"));
        assert!(Check::new("payload.a", "(")
            .unwrap_err()
            .starts_with("validate.payload.a: "));
    }

    #[test]
    fn unknown_roots_and_open_braces_are_config_errors() {
        for (bad, says) in [
            ("{paylod.after}", "unknown placeholder {paylod.after}"),
            ("{header.}", "unknown placeholder {header.}"),
            ("{request.body}", "unknown placeholder {request.body}"),
            ("{hookd.secret}", "unknown placeholder {hookd.secret}"),
            ("{}", "unknown placeholder {}"),
            ("--x={payload.a", "without its '}'"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
