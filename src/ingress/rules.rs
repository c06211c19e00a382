//! A hook's `when` rules, evaluated at the door (after verification and
//! dedup, before the answer) and by `hookd explain`.
//!
//! Every value is read through `request.rs`; a missing field makes its
//! condition false (`exists = false` is the one that holds then), never an
//! error. Values compare as text (`request::as_text`).

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Rule, Test};
use crate::request::{text_of, Fields};

/// Whether every rule of `when` holds for the request; stops at the first
/// that does not.
pub(crate) fn matches(when: &[Rule], req: &Fields<'_>) -> bool {
    when.iter().all(|r| holds(r, req))
}

fn holds(rule: &Rule, req: &Fields<'_>) -> bool {
    match rule {
        Rule::Test { field, test } => test_holds(test, req.get(&field.0).as_deref()),
        Rule::Any(rules) => rules.iter().any(|r| holds(r, req)),
        Rule::All(rules) => rules.iter().all(|r| holds(r, req)),
        Rule::Not(inner) => !holds(inner, req),
    }
}

fn test_holds(test: &Test, seen: Option<&Value>) -> bool {
    let Some(v) = seen else {
        return matches!(test, Test::Exists(false));
    };
    match test {
        Test::Exists(want) => *want,
        Test::Eq(want) => text_of(v) == want.as_str(),
        Test::Ne(want) => text_of(v) != want.as_str(),
        Test::In(list) => {
            let v = text_of(v);
            list.iter().any(|w| *w == v)
        }
        Test::Matches(re) => re.is_match(&text_of(v)),
        Test::Contains(needle) => match v {
            Value::Array(items) => items.iter().any(|i| text_of(i) == needle.as_str()),
            other => text_of(other).contains(needle.as_str()),
        },
        Test::Cidr(blocks) => text_of(v)
            .parse::<IpAddr>()
            .is_ok_and(|ip| blocks.iter().any(|b| b.contains(ip))),
    }
}

/// One node of an explained rule tree: what it checks, the value it saw
/// (conditions only; `None` when the field is absent) and its result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Explained {
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a condition: whether the field was present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<Value>,
    pub result: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Explained>,
}

/// Every node of `when` evaluated (no short cut, so the operator sees each
/// value), under a root `all` node whose result is [`matches`]'s.
pub(crate) fn explain(when: &[Rule], req: &Fields<'_>) -> Explained {
    let children: Vec<Explained> = when.iter().map(|r| explain_node(r, req)).collect();
    Explained {
        rule: "all".into(),
        field: None,
        present: None,
        seen: None,
        result: children.iter().all(|c| c.result),
        children,
    }
}

fn explain_node(rule: &Rule, req: &Fields<'_>) -> Explained {
    match rule {
        Rule::Test { field, test } => {
            let seen = req.lookup(&field.0);
            Explained {
                rule: describe(test),
                field: Some(field.0.clone()),
                present: Some(seen.is_some()),
                result: test_holds(test, seen.as_ref()),
                seen,
                children: Vec::new(),
            }
        }
        Rule::Any(rules) | Rule::All(rules) => {
            let children: Vec<Explained> = rules.iter().map(|r| explain_node(r, req)).collect();
            let (rule, result) = match rule {
                Rule::Any(_) => ("any", children.iter().any(|c| c.result)),
                _ => ("all", children.iter().all(|c| c.result)),
            };
            Explained {
                rule: rule.into(),
                field: None,
                present: None,
                seen: None,
                result,
                children,
            }
        }
        Rule::Not(inner) => {
            let child = explain_node(inner, req);
            Explained {
                rule: "not".into(),
                field: None,
                present: None,
                seen: None,
                result: !child.result,
                children: vec![child],
            }
        }
    }
}

/// `eq "refs/heads/main"`, `in ["a", "b"]`, `cidr [10.0.0.0/8]`.
fn describe(test: &Test) -> String {
    let quoted = |s: &str| Value::String(s.to_string()).to_string();
    let list = |l: &mut dyn Iterator<Item = String>| l.collect::<Vec<_>>().join(", ");
    let arg = match test {
        Test::Eq(s) | Test::Ne(s) | Test::Contains(s) => quoted(s),
        Test::In(l) => format!("[{}]", list(&mut l.iter().map(|s| quoted(s)))),
        Test::Matches(re) => {
            // Shown as written, without the anchors the config added.
            let s = re.as_str();
            let s = s
                .strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(s);
            quoted(s)
        }
        Test::Exists(b) => b.to_string(),
        Test::Cidr(l) => format!("[{}]", list(&mut l.iter().map(ToString::to_string))),
    };
    format!("{} {arg}", test.name())
}

/// The tree as indented lines: `[true ] payload.ref eq "x"  (seen: "x")`.
pub(crate) fn render(node: &Explained, out: &mut String) {
    render_at(node, 0, out);
}

fn render_at(node: &Explained, depth: usize, out: &mut String) {
    let mark = if node.result { "true " } else { "false" };
    out.push_str(&format!("{:indent$}[{mark}] ", "", indent = depth * 2));
    match &node.field {
        Some(f) => {
            out.push_str(&format!("{f} {}", node.rule));
            match &node.seen {
                Some(v) => {
                    let mut shown = v.to_string();
                    if shown.len() > 200 {
                        let cut = (0..=200).rev().find(|&i| shown.is_char_boundary(i));
                        shown.truncate(cut.unwrap_or(0));
                        shown.push('…');
                    }
                    out.push_str(&format!("  (seen: {})", escape(&shown)));
                }
                None => out.push_str("  (field absent)"),
            }
        }
        None => out.push_str(&node.rule),
    }
    out.push('\n');
    for c in &node.children {
        render_at(c, depth + 1, out);
    }
}

/// Control characters escaped, so a sender's value cannot drive a terminal.
fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let e: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestView;
    use http::HeaderMap;

    /// Rules as a hook's config writes them.
    fn when(toml_rules: &str) -> Vec<Rule> {
        let text = format!(
            "[[hook]]\nname = \"h\"\nverify = {{ scheme = \"none\" }}\n\
             action = {{ exec = [\"/bin/true\"] }}\nwhen = {toml_rules}\n"
        );
        let cfg = crate::config::Config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{toml_rules}: {e}"));
        cfg.hooks[0].get_ref().when.clone().unwrap()
    }

    fn check(rules: &str, body: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", "push".parse().unwrap());
        let view = RequestView {
            method: "POST",
            headers: &h,
            query: Some("env=prod"),
            remote_ip: Some("192.0.2.7".parse().unwrap()),
            body: body.as_bytes(),
        };
        let fields = view.fields();
        let w = when(rules);
        let fast = matches(&w, &fields);
        assert_eq!(fast, explain(&w, &fields).result, "explain agrees: {rules}");
        fast
    }

    const PUSH: &str = r#"{"ref":"refs/heads/main","n":3,"ok":true,"tags":["a","b"],
        "msg":"fix: a bug","commits":[{"id":"c1"}],"nothing":null}"#;

    #[test]
    fn every_operator_holds_and_fails_as_a_table_says() {
        let table: &[(&str, bool)] = &[
            (
                r#"[{ field = "payload.ref", eq = "refs/heads/main" }]"#,
                true,
            ),
            (
                r#"[{ field = "payload.ref", eq = "refs/heads/dev" }]"#,
                false,
            ),
            (r#"[{ field = "payload.n", eq = 3 }]"#, true),
            (r#"[{ field = "payload.n", eq = "3" }]"#, true),
            (r#"[{ field = "payload.ok", eq = true }]"#, true),
            (
                r#"[{ field = "payload.ref", ne = "refs/heads/dev" }]"#,
                true,
            ),
            (
                r#"[{ field = "payload.ref", ne = "refs/heads/main" }]"#,
                false,
            ),
            (
                r#"[{ field = "payload.ref", in = ["x", "refs/heads/main"] }]"#,
                true,
            ),
            (r#"[{ field = "payload.ref", in = ["x", "y"] }]"#, false),
            (
                r#"[{ field = "payload.ref", matches = "refs/heads/.*" }]"#,
                true,
            ),
            (r#"[{ field = "payload.ref", matches = "heads" }]"#, false),
            (
                r#"[{ field = "payload.ref", matches = "refs/heads/ma" }]"#,
                false,
            ),
            (r#"[{ field = "payload.msg", contains = "fix" }]"#, true),
            (r#"[{ field = "payload.msg", contains = "feat" }]"#, false),
            (r#"[{ field = "payload.tags", contains = "b" }]"#, true),
            (r#"[{ field = "payload.tags", contains = "c" }]"#, false),
            (
                r#"[{ field = "payload.commits.0.id", exists = true }]"#,
                true,
            ),
            (
                r#"[{ field = "payload.commits.1.id", exists = true }]"#,
                false,
            ),
            (
                r#"[{ field = "payload.commits.1.id", exists = false }]"#,
                true,
            ),
            (r#"[{ field = "payload.ref", exists = false }]"#, false),
            (r#"[{ field = "payload.nothing", exists = true }]"#, true),
            (r#"[{ cidr = ["192.0.2.0/24"] }]"#, true),
            (r#"[{ cidr = ["10.0.0.0/8", "192.0.2.7"] }]"#, true),
            (r#"[{ cidr = ["10.0.0.0/8"] }]"#, false),
            (
                r#"[{ field = "payload.ref", cidr = ["0.0.0.0/0"] }]"#,
                false,
            ),
            (
                r#"[{ field = "header.X-GitHub-Event", eq = "push" }]"#,
                true,
            ),
            (
                r#"[{ field = "header.x-github-event", eq = "Push" }]"#,
                false,
            ),
            (r#"[{ field = "query.env", eq = "prod" }]"#, true),
            (r#"[{ field = "request.method", eq = "POST" }]"#, true),
            (
                r#"[{ field = "request.remote_ip", eq = "192.0.2.7" }]"#,
                true,
            ),
        ];
        for (rules, want) in table {
            assert_eq!(check(rules, PUSH), *want, "{rules}");
        }
    }

    #[test]
    fn a_missing_field_is_false_for_every_operator_but_exists_false() {
        for op in [
            r#"eq = "x""#,
            r#"ne = "x""#,
            r#"in = ["x"]"#,
            r#"matches = ".*""#,
            r#"contains = "x""#,
            "exists = true",
            r#"cidr = ["0.0.0.0/0"]"#,
        ] {
            for field in ["payload.absent", "header.X-Absent", "query.absent"] {
                let rules = format!(r#"[{{ field = "{field}", {op} }}]"#);
                assert!(!check(&rules, PUSH), "{rules}");
            }
            // A body that is neither JSON nor a form has no payload fields.
            let rules = format!(r#"[{{ field = "payload.ref", {op} }}]"#);
            assert!(!check(&rules, "plain text"), "{rules}");
        }
        assert!(check(
            r#"[{ field = "payload.absent", exists = false }]"#,
            PUSH
        ));
    }

    #[test]
    fn all_any_and_not_nest() {
        let main = r#"{ field = "payload.ref", eq = "refs/heads/main" }"#;
        let dev = r#"{ field = "payload.ref", eq = "refs/heads/dev" }"#;
        let push = r#"{ field = "header.X-GitHub-Event", eq = "push" }"#;
        let table: Vec<(String, bool)> = vec![
            (format!("[{main}, {push}]"), true),
            (format!("[{dev}, {push}]"), false),
            (format!("[{{ any = [{dev}, {main}] }}]"), true),
            (format!("[{{ any = [{dev}, {dev}] }}]"), false),
            (format!("[{{ not = {dev} }}]"), true),
            (format!("[{{ not = {main} }}]"), false),
            (format!("[{{ not = {{ any = [{dev}, {main}] }} }}]"), false),
            (format!("[{{ all = [{main}, {push}] }}]"), true),
            (format!("[{{ all = [{main}, {dev}] }}]"), false),
            (
                format!(
                    "[{{ any = [{{ all = [{dev}, {push}] }}, {{ all = [{main}, {push}] }}] }}]"
                ),
                true,
            ),
            (
                format!("[{{ any = [{{ all = [{dev}, {push}] }}, {{ all = [{main}, {dev}] }}] }}]"),
                false,
            ),
            (
                format!("[{{ any = [{{ not = {main} }}, {push}] }}, {main}]"),
                true,
            ),
            (
                format!("[{{ any = [{{ not = {{ not = {dev} }} }}] }}]"),
                false,
            ),
            // `not` over a missing field holds: the inner condition is false.
            (
                r#"[{ not = { field = "payload.absent", eq = "x" } }]"#.to_string(),
                true,
            ),
        ];
        for (rules, want) in table {
            assert_eq!(check(&rules, PUSH), want, "{rules}");
        }
    }

    #[test]
    fn a_form_body_is_matched_by_its_fields() {
        assert!(check(
            r#"[{ field = "payload.command", eq = "/deploy" }]"#,
            "command=%2Fdeploy&text=prod"
        ));
    }

    #[test]
    fn explain_shows_every_node_with_the_value_seen() {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", "ping".parse().unwrap());
        let view = RequestView {
            method: "POST",
            headers: &h,
            query: None,
            remote_ip: None,
            body: br#"{"ref":"refs/heads/dev"}"#,
        };
        let w = when(
            r#"[{ field = "header.X-GitHub-Event", eq = "push" },
                { any = [{ field = "payload.ref", matches = "refs/heads/(main|release)" },
                         { not = { field = "payload.tag", exists = true } }] }]"#,
        );
        let tree = explain(&w, &view.fields());
        let mut out = String::new();
        render(&tree, &mut out);
        assert_eq!(
            out,
            "[false] all\n\
             \x20 [false] header.X-GitHub-Event eq \"push\"  (seen: \"ping\")\n\
             \x20 [true ] any\n\
             \x20   [false] payload.ref matches \"refs/heads/(main|release)\"  (seen: \"refs/heads/dev\")\n\
             \x20   [true ] not\n\
             \x20     [false] payload.tag exists true  (field absent)\n"
        );
        let json = serde_json::to_value(&tree).unwrap();
        assert_eq!(json["result"], false);
        assert_eq!(json["children"][0]["seen"], "ping");
        assert_eq!(
            json["children"][1]["children"][1]["children"][0]["present"],
            false
        );
    }

    /// `n` conditions over bench/body.json that all hold (so none is cut
    /// short), cycling through every operator.
    fn conditions(n: usize) -> String {
        let each = [
            r#"{ field = "payload.ref", eq = "refs/heads/main" }"#,
            r#"{ field = "payload.repository.full_name", in = ["a/b", "octocat/Hello-World"] }"#,
            r#"{ field = "payload.ref", matches = "refs/heads/[a-z]+" }"#,
            r#"{ field = "payload.head_commit.modified", contains = "README.md" }"#,
            r#"{ field = "payload.pusher.email", exists = true }"#,
            r#"{ cidr = ["10.0.0.0/8", "192.0.2.0/24"] }"#,
            r#"{ field = "header.X-GitHub-Event", ne = "ping" }"#,
            r#"{ any = [{ field = "payload.deleted", exists = true }, { field = "payload.after", matches = "[0-9a-f]{40}" }] }"#,
            r#"{ not = { field = "payload.head_commit.message", contains = "[skip]" } }"#,
            r#"{ field = "payload.repository.id", eq = 1296269 }"#,
        ];
        let list: Vec<&str> = (0..n).map(|i| each[i % each.len()]).collect();
        format!("[{}]", list.join(", "))
    }

    /// The cost of the rules at the door, per request: parsing the body once
    /// (`fields`) and evaluating every condition. Prints medians; asserts
    /// only that the rules hold. `bench/rules_cost.sh` runs it in release
    /// with many iterations; the suite runs a few.
    #[test]
    fn cost_per_request_at_10_and_100_conditions() {
        let iters: u32 = std::env::var("HOOKD_BENCH_RULES_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/body.json")).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-github-event", "push".parse().unwrap());
        let view = RequestView {
            method: "POST",
            headers: &h,
            query: None,
            remote_ip: Some("192.0.2.7".parse().unwrap()),
            body: &body,
        };
        let median = |f: &dyn Fn()| {
            let mut rounds: Vec<f64> = (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
                })
                .collect();
            rounds.sort_by(f64::total_cmp);
            rounds[2]
        };
        let parse = median(&|| {
            std::hint::black_box(view.fields());
        });
        println!(
            "rules cost: body parse alone ({} bytes): {parse:.2} µs/request",
            body.len()
        );
        for n in [10, 100] {
            let w = when(&conditions(n));
            assert_eq!(w.len(), n);
            assert!(matches(&w, &view.fields()));
            let us = median(&|| {
                let fields = view.fields();
                assert!(std::hint::black_box(matches(&w, &fields)));
            });
            println!(
                "rules cost: {n} conditions: {us:.2} µs/request with the parse, {:.2} without \
                 (median of 5 rounds of {iters})",
                us - parse
            );
        }
    }

    #[test]
    fn rendered_values_cannot_drive_a_terminal() {
        let h = HeaderMap::new();
        let view = RequestView {
            method: "POST",
            headers: &h,
            query: None,
            remote_ip: None,
            body: "{\"a\":\"x\u{1b}[2J\"}".as_bytes(),
        };
        let w = when(r#"[{ field = "payload.a", eq = "x" }]"#);
        let mut out = String::new();
        render(&explain(&w, &view.fields()), &mut out);
        assert!(!out.contains('\u{1b}'), "{out:?}");
    }
}
