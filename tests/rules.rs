//! `when` rules against the real binary: a match is queued and delivered; no
//! match is answered `filtered`, kept durably in state `filtered` and never
//! delivered, until `spool retry --filtered` (after a reload that fixes the
//! rule) delivers it; check-config names the line of a bad rule; `hookd
//! explain` shows the tree with the values seen.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// Pushes to main only, and only GitHub's push event.
const MAIN_PUSHES: &str = r#"when = [
  { field = "payload.ref", eq = "refs/heads/main" },
  { field = "header.X-GitHub-Event", in = ["push"] },
]"#;

const PUSH: &[(&str, &str)] = &[("X-GitHub-Event", "push")];

fn post(h: &Hookd, body: &str) -> Response {
    h.post_signed("gh", body.as_bytes(), PUSH)
}

fn filtered_total(h: &Hookd) -> String {
    let m = request(h.metrics_addr(), "GET", "/metrics", &[], b"").unwrap();
    let text = String::from_utf8_lossy(&m.body).to_string();
    text.lines()
        .find(|l| l.starts_with("hookd_filtered_total{hook=\"gh\"}"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_match_is_delivered_and_a_miss_is_answered_filtered_kept_through_a_crash_and_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), MAIN_PUSHES),
    );
    h.start();

    let miss = post(&h, r#"{"ref":"refs/heads/dev"}"#);
    assert_eq!(
        miss.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&miss.body)
    );
    assert_eq!(miss.json()["status"], "filtered");
    let miss_id = miss.json()["id"].as_i64().expect("a kept item has an id");
    // Only the header decides this one: the ref matches, the event does not.
    let ping = h.post_signed(
        "gh",
        br#"{"ref":"refs/heads/main"}"#,
        &[("X-GitHub-Event", "ping")],
    );
    assert_eq!(ping.status, 200);
    assert_eq!(ping.json()["status"], "filtered");

    // Durable before its answer: a SIGKILL right after loses nothing.
    h.signal(Signal::SIGKILL);
    h.wait_exit(Duration::from_secs(10));
    let kept: Vec<i64> = h
        .items("filtered")
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert!(kept.contains(&miss_id), "{kept:?}");
    assert_eq!(kept.len(), 2);
    h.start();

    let hit = post(&h, r#"{"ref":"refs/heads/main"}"#);
    assert_eq!(hit.status, 202, "{:?}", String::from_utf8_lossy(&hit.body));
    assert_eq!(hit.json()["status"], "queued");
    let hit_id = hit.json()["id"].as_i64().unwrap();
    // The match is delivered; the delivery loop saw the filtered items too
    // and took none of them.
    wait_for(Duration::from_secs(15), "the match to be delivered", || {
        h.items("done")
            .iter()
            .any(|i| i["id"].as_i64() == Some(hit_id))
            .then_some(())
    });
    assert_eq!(up.ids(), [hit_id]);
    assert_eq!(h.items("filtered").len(), 2);
    assert!(h.items("pending").is_empty());
    // The counter restarted with the process: the one miss since then is
    // not there yet, so send one.
    assert_eq!(post(&h, r#"{"ref":"refs/tags/v1"}"#).status, 200);
    assert_eq!(filtered_total(&h), "hookd_filtered_total{hook=\"gh\"} 1");
    let (code, out, err) = h.cli(&["spool", "ls", "--state", "filtered"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("filtered")).count(),
        3,
        "{out}"
    );
}

#[test]
fn filtered_requests_are_delivered_by_spool_retry_after_a_reload_fixes_the_rule() {
    // The successor is reparented to us when its predecessor exits.
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), MAIN_PUSHES),
    );
    h.start();
    // The sender uses `master`: every push is filtered.
    let ids: Vec<i64> = (0..3)
        .map(|n| {
            let r = post(&h, &format!(r#"{{"ref":"refs/heads/master","n":{n}}}"#));
            assert_eq!(r.status, 200);
            r.json()["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(h.items("filtered").len(), 3);

    // The operator fixes the rule and reloads (hand-off to a new process).
    let fixed = MAIN_PUSHES.replace(
        r#"eq = "refs/heads/main""#,
        r#"in = ["refs/heads/main", "refs/heads/master"]"#,
    );
    std::fs::write(
        &h.config,
        std::fs::read_to_string(&h.config)
            .unwrap()
            .replace(MAIN_PUSHES, &fixed),
    )
    .unwrap();
    let (code, out, err) = h.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let successor = h.successor_pid();

    let (code, out, err) = h.cli(&["spool", "retry", "--filtered", "--hook", "gh"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 filtered items"), "{out}");
    wait_for(Duration::from_secs(15), "the three to be delivered", || {
        let mut got = up.ids();
        got.sort_unstable();
        (got == ids).then_some(())
    });
    // A new push to master matches now.
    assert_eq!(post(&h, r#"{"ref":"refs/heads/master"}"#).status, 202);
    assert!(h.items("filtered").is_empty());
    // Without --hook, --filtered is refused: retrying every hook's is too broad.
    let (code, _, err) = h.cli(&["spool", "retry", "--filtered"]);
    assert_ne!(code, 0);
    assert!(err.contains("--hook"), "{err}");
    stop_successor(successor, Duration::from_secs(20));
}

#[test]
fn keep_filtered_zero_answers_filtered_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let extra = format!("{MAIN_PUSHES}\nkeep_filtered = \"0\"\nfiltered_status = 204");
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), &extra),
    );
    h.start();
    let r = post(&h, r#"{"ref":"refs/heads/dev"}"#);
    assert_eq!(r.status, 204);
    let stats = h.spool_stats();
    assert_eq!(stats["total"], 0, "{stats}");
    assert_eq!(filtered_total(&h), "hookd_filtered_total{hook=\"gh\"} 1");
}

#[test]
fn check_config_names_the_file_and_line_of_a_bad_rule() {
    let cases = [
        (
            "when = [\n  { field = \"payload.ref\", equals = \"x\" },\n]",
            "unknown field `equals`",
        ),
        ("when = []", "when = [] matches nothing"),
        (
            "when = [\n  { field = \"payload.ref\", eq = \"x\" },\n  { any = [{ field = \"payload.a\", matches = \"[\" }] },\n]",
            "not a regular expression",
        ),
    ];
    for (rules, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let h = Hookd::configure(
            dir.path(),
            &forward_hook(dir.path(), "gh", "http://127.0.0.1:9/", rules),
        );
        let text = std::fs::read_to_string(&h.config).unwrap();
        // The line of the condition at fault (the list's own for `when = []`).
        let marker = if rules == "when = []" {
            "when = []"
        } else {
            rules
                .lines()
                .find(|l| l.contains(says.split('`').nth(1).unwrap_or("matches")))
                .unwrap()
        };
        let line = text.lines().position(|l| l == marker).unwrap() + 1;
        let (code, _, err) = h.cli(&["check-config"]);
        assert_eq!(code, 2, "{err}");
        let at = format!("{}:{line}:", h.config.display());
        assert!(
            err.contains(&at) && err.contains(says),
            "want {at} … {says}, got {err}"
        );
    }
}

#[test]
fn explain_shows_each_condition_with_the_value_seen_and_the_verification() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), MAIN_PUSHES),
    );
    h.start();
    let id = post(&h, r#"{"ref":"refs/heads/dev"}"#).json()["id"]
        .as_i64()
        .unwrap();
    let id = id.to_string();

    let (code, out, err) = h.cli(&["explain", "--hook", "gh", "--id", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("spool item {id} (filtered")), "{out}");
    assert!(out.contains("verification: ok (passed on arrival"), "{out}");
    assert!(
        out.contains("rules:        no match: answered 200 filtered, kept 1day"),
        "{out}"
    );
    assert!(out.contains("[false] all\n"), "{out}");
    assert!(
        out.contains("  [false] payload.ref eq \"refs/heads/main\"  (seen: \"refs/heads/dev\")\n"),
        "{out}"
    );
    assert!(
        out.contains("  [true ] header.X-GitHub-Event in [\"push\"]  (seen: \"push\")\n"),
        "{out}"
    );
    let (code, out, err) = h.cli(&["explain", "--hook", "gh", "--id", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["matched"], false);
    assert_eq!(v["rules"]["children"][0]["seen"], "refs/heads/dev");
    assert_eq!(v["rules"]["children"][1]["result"], true);

    // A raw request saved to a file, signed right and wrong.
    let body = r#"{"ref":"refs/heads/main"}"#;
    let raw = |sig: &str| {
        format!(
            "POST /hooks/gh?env=prod HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
             X-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let good = dir.path().join("good.http");
    std::fs::write(&good, raw(&github_sig(SECRET, body.as_bytes()))).unwrap();
    let (code, out, err) = h.cli(&[
        "explain",
        "--hook",
        "gh",
        "--request",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("verification: ok (scheme github, key 0)"),
        "{out}"
    );
    assert!(out.contains("rules:        match: delivered"), "{out}");
    assert!(out.contains("[true ] all"), "{out}");
    let bad = dir.path().join("bad.http");
    std::fs::write(&bad, raw(&github_sig("wrong", body.as_bytes()))).unwrap();
    let (code, out, err) = h.cli(&[
        "explain",
        "--hook",
        "gh",
        "--request",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("verification: FAILED (scheme github: 403 signature_mismatch"),
        "{out}"
    );
    // A broken file names its line; an item of another hook is refused.
    std::fs::write(&bad, "POST /hooks/gh HTTP/1.1\r\nno colon here\r\n\r\n").unwrap();
    let (code, _, err) = h.cli(&[
        "explain",
        "--hook",
        "gh",
        "--request",
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.http: line 2:"), "{err}");
    let (code, _, err) = h.cli(&["explain", "--hook", "nope", "--id", &id]);
    assert_eq!(code, 2);
    assert!(err.contains("no hook named \"nope\""), "{err}");
}
