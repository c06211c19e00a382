//! Delivery against the real binary and a real upstream: retries after 500s,
//! dead after max attempts, exec with stdin and env, ordered delivery.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

const FAST_RETRY: &str =
    r#"retry = { max_attempts = 3, backoff = "100ms", max_backoff = "200ms" }"#;

#[test]
fn failed_deliveries_are_retried_until_the_upstream_answers_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(Arc::new(|n, _| {
        (if n < 2 { 500 } else { 200 }, Duration::ZERO)
    }));
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), FAST_RETRY),
    );
    h.start();
    let r = h.post_signed("gh", b"{\"n\":1}", &[]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_i64().unwrap();
    let done = wait_for(Duration::from_secs(15), "the item to be done", || {
        let d = h.items("done");
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(done[0]["id"].as_i64(), Some(id));
    assert_eq!(done[0]["attempts"].as_u64(), Some(3));
    let got = up.received();
    assert_eq!(got.len(), 3);
    let attempts: Vec<_> = got
        .iter()
        .map(|r| r.header("hookd-attempt").unwrap().to_string())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(got
        .iter()
        .all(|r| r.header("hookd-delivery-id") == Some(&id.to_string())));
    // Backoff: the retries were not immediate.
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(50),
        "{:?}",
        got[1].at - got[0].at
    );
}

#[test]
fn an_item_is_dead_after_max_attempts_and_retry_revives_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start(Arc::new(|_, _| (500, Duration::ZERO)));
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), FAST_RETRY),
    );
    h.start();
    let r = h.post_signed("gh", b"{}", &[]);
    assert_eq!(r.status, 202);
    let dead = wait_for(Duration::from_secs(15), "the item to be dead", || {
        let d = h.items("dead");
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead[0]["attempts"].as_u64(), Some(3));
    assert!(
        dead[0]["last_error"].as_str().unwrap_or("").contains("500"),
        "{}",
        dead[0]
    );
    assert_eq!(up.received().len(), 3, "attempts after dead");

    // The operator revives it: it is attempted again.
    let (code, _, err) = h.cli(&["spool", "retry", "--dead"]);
    assert_eq!(code, 0, "{err}");
    wait_for(Duration::from_secs(10), "a fourth attempt", || {
        (up.received().len() >= 4).then_some(())
    });
    let (code, out, _) = h.cli(&["status", "--json"]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(!st["last_errors"].as_array().unwrap().is_empty(), "{st}");
}

#[test]
fn exec_gets_the_body_on_stdin_and_metadata_in_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let script = dir.path().join("handler.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
cat > {o}/$HOOKD_DELIVERY_ID.body
env | grep '^HOOKD_' | sort > {o}/$HOOKD_DELIVERY_ID.env
echo handled $HOOKD_DELIVERY_ID
"#,
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hook = format!(
        r#"[[hook]]
name = "run"
verify = {{ scheme = "github", secret_env = "HOOKD_TEST_SECRET" }}
action = {{ exec = ["{}"], timeout = "10s" }}
"#,
        script.display()
    );
    let mut h = Hookd::configure(dir.path(), &hook);
    // The secret comes from the environment, which the command must not see.
    h.env.push(("HOOKD_TEST_SECRET".into(), SECRET.into()));
    h.start();
    let body = b"{\"ref\":\"refs/heads/main\"}";
    let r = h.post_signed("run", body, &[("X-GitHub-Event", "push")]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_i64().unwrap();
    let env_file = out.join(format!("{id}.env"));
    let env = wait_for(Duration::from_secs(10), "the handler's env file", || {
        std::fs::read_to_string(&env_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(std::fs::read(out.join(format!("{id}.body"))).unwrap(), body);
    for needle in [
        format!("HOOKD_DELIVERY_ID={id}"),
        "HOOKD_HOOK=run".into(),
        "HOOKD_ATTEMPT=1".into(),
        "HOOKD_HEADER_X_GITHUB_EVENT=push".into(),
    ] {
        assert!(env.contains(&needle), "missing {needle} in\n{env}");
    }
    assert!(
        !env.contains("HOOKD_TEST_SECRET"),
        "the secret leaked to the command:\n{env}"
    );
    wait_for(
        Duration::from_secs(10),
        "the handler's output in the log",
        || {
            h.log_text()
                .contains(&format!("handled {id}"))
                .then_some(())
        },
    );
}

#[test]
fn ordered_hook_delivers_one_at_a_time_in_arrival_order_even_across_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    // The first request fails once; the rest take 50 ms each.
    let up = Upstream::start(Arc::new(|n, _| {
        (if n == 0 { 503 } else { 200 }, Duration::from_millis(50))
    }));
    let extra = format!(
        r#"ordered = true
concurrency = 4
{FAST_RETRY}"#
    );
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "seq", &up.url(), &extra),
    );
    h.start();
    let mut ids = Vec::new();
    for i in 0..8 {
        let r = h.post_signed("seq", format!("{{\"n\":{i}}}").as_bytes(), &[]);
        assert_eq!(r.status, 202);
        ids.push(r.json()["id"].as_i64().unwrap());
    }
    wait_for(Duration::from_secs(20), "all 8 delivered", || {
        (h.items("done").len() == 8).then_some(())
    });
    let got = up.received();
    let order: Vec<i64> = got
        .iter()
        .map(|r| r.header("hookd-delivery-id").unwrap().parse().unwrap())
        .collect();
    // The failed head is retried before anything after it is sent.
    let mut expected = vec![ids[0]];
    expected.extend(&ids);
    assert_eq!(order, expected);
    // One at a time: each request arrived after the previous one's 50 ms answer.
    for w in got.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(45),
            "overlap: {:?}",
            w[1].at - w[0].at
        );
    }
}
