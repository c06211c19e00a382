//! Ingress against the real binary: every bad-input status (404, 405, 411,
//! 413, 415, 400, 401, 403, 503, 408) with its JSON body, and after each one
//! the spool holds nothing new; then the good path (202 after commit) and
//! duplicates.

mod common;

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use common::*;

fn setup() -> (tempfile::TempDir, Hookd, Upstream) {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let hooks = format!(
        "{}{}{}",
        forward_hook(
            dir.path(),
            "gh",
            &up.url(),
            r#"
dedup_header = "X-GitHub-Delivery"
max_body = "1KiB"
"#
        ),
        forward_hook(dir.path(), "json", &up.url(), "require_json = true"),
        forward_hook(dir.path(), "off", &up.url(), "enabled = false"),
    );
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    (dir, h, up)
}

fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], code, "{j}");
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
}

#[test]
fn every_bad_input_is_refused_with_json_and_spools_nothing() {
    let (_dir, h, _up) = setup();
    let before = h.spool_total();
    let body = br#"{"zen":"Keep it logically awesome."}"#;

    let r = h.post_signed("nope", body, &[]);
    assert_error(&r, 404, "unknown_hook");

    let r = request(h.addr(), "GET", "/hooks/gh", &[], b"").unwrap();
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));

    // No Content-Length and not chunked.
    let mut s = connect(h.addr());
    s.write_all(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_error(&r, 411, "length_required");

    let big = vec![b'a'; 2048];
    let r = h.post_signed("gh", &big, &[]);
    assert_error(&r, 413, "payload_too_large");

    // Chunked body over the limit: refused while reading.
    let mut s = connect(h.addr());
    let sig = github_sig(SECRET, &big);
    write!(s, "POST /hooks/gh HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {sig}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n").unwrap();
    s.write_all(&big).unwrap();
    s.write_all(b"\r\n0\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_error(&r, 413, "payload_too_large");

    let r = request(
        h.addr(),
        "POST",
        "/hooks/json",
        &[
            ("X-Hub-Signature-256", &github_sig(SECRET, body)),
            ("Content-Type", "text/plain"),
        ],
        body,
    )
    .unwrap();
    assert_error(&r, 415, "unsupported_media_type");

    let bad_json = b"{not json";
    let r = h.post_signed("json", bad_json, &[]);
    assert_error(&r, 400, "malformed");

    let r = request(
        h.addr(),
        "POST",
        "/hooks/gh",
        &[("Content-Type", "application/json")],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].is_string());

    let r = request(
        h.addr(),
        "POST",
        "/hooks/gh",
        &[("X-Hub-Signature-256", &github_sig("wrong secret", body))],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 403, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].is_string());

    let r = h.post_signed("off", body, &[]);
    assert_error(&r, 503, "hook_disabled");
    assert!(r.header("retry-after").is_some());

    // A slow client: headers, then part of the body, then nothing.
    let mut s = connect(h.addr());
    // Shorter than the common deadline: the 408 is due within seconds.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sig = github_sig(SECRET, body);
    write!(s, "POST /hooks/gh HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    s.write_all(&body[..5]).unwrap();
    let started = Instant::now();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_error(&r, 408, "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "408 took {:?}",
        started.elapsed()
    );

    // Slower still: the headers never finish (read_timeout is 2 s here).
    let mut s = connect(h.addr());
    // Shorter than the common deadline: the 408 is due within seconds.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nX-Hub-Sig")
        .unwrap();
    let started = Instant::now();
    let r = read_response(&mut BufReader::new(s)).unwrap();
    assert_error(&r, 408, "request_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "408 after {took:?}"
    );

    assert_eq!(h.spool_total(), before, "a refused request was spooled");
}

#[test]
fn accepted_webhook_answers_202_with_its_id_and_a_repeat_answers_200() {
    let (_dir, h, up) = setup();
    let body = br#"{"action":"opened"}"#;
    let r = h.post_signed("gh", body, &[("X-GitHub-Delivery", "d-1")]);
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["status"], "queued");
    let id = j["id"].as_i64().unwrap();

    let again = h.post_signed("gh", body, &[("X-GitHub-Delivery", "d-1")]);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"].as_i64(), Some(id));

    let other = h.post_signed("gh", body, &[("X-GitHub-Delivery", "d-2")]);
    assert_eq!(other.status, 202);
    let other_id = other.json()["id"].as_i64().unwrap();
    assert_ne!(other_id, id);

    // Delivered once each, however long we wait for more.
    wait_for(Duration::from_secs(10), "both deliveries", || {
        (up.ids().len() >= 2).then_some(())
    });
    let first = up
        .received()
        .into_iter()
        .find(|r| r.header("hookd-delivery-id") == Some(&id.to_string()))
        .unwrap();
    assert_eq!(first.body, body);
    assert_eq!(first.header("x-github-delivery"), Some("d-1"));
    assert_eq!(first.header("hookd-attempt"), Some("1"));
    // The duplicate would have been claimed by now if it had been spooled.
    let stats = h.spool_stats();
    assert_eq!(stats["total"].as_u64(), Some(2), "{stats}");
    let mut ids = up.ids();
    ids.sort();
    assert_eq!(ids, vec![id, other_id]);
}

#[test]
fn health_ready_and_metrics() {
    let (_dir, h, _up) = setup();
    let r = request(h.addr(), "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let r = request(h.addr(), "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let r = h.post_signed("gh", b"{}", &[]);
    assert_eq!(r.status, 202);
    let r = request(
        h.addr(),
        "POST",
        "/hooks/gh",
        &[("X-Hub-Signature-256", &github_sig("wrong", b"{}"))],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 403);
    let r = request(h.metrics_addr(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    for needle in [
        "hookd_received_total{hook=\"gh\"} 2",
        "hookd_spooled_total{hook=\"gh\"} 1",
        "hookd_rejected_total{hook=\"gh\",reason=\"forbidden\"} 1",
        "hookd_commit_latency_seconds_count",
        "hookd_commit_batch_size_bucket",
        "hookd_drain_state 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

/// Unmounts (lazily) on drop, so a failing test leaves no mount behind.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_answers_503_and_keeps_what_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    // A real full file system: a 1 MiB tmpfs (the tests run as root, as CI does).
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "hookd-test-full"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs needs root");
    let _mount = Mount(small.clone());

    // A hook whose deliveries never succeed, so nothing leaves the spool.
    let hook = forward_hook(
        dir.path(),
        "gh",
        "http://127.0.0.1:9/",
        r#"retry = { max_attempts = 99, backoff = "1h", max_backoff = "1h" }"#,
    );
    let mut h = Hookd::configure(dir.path(), &hook);
    let text = std::fs::read_to_string(&h.config).unwrap();
    let spool = small.join("spool.db");
    std::fs::write(
        &h.config,
        text.replace(
            &format!("{}/spool.db", dir.path().display()),
            &spool.display().to_string(),
        ),
    )
    .unwrap();
    h.start();

    let body = vec![b'x'; 16 * 1024];
    let mut acked = Vec::new();
    let full = (0..200)
        .find_map(|_| {
            let r = h.post_signed("gh", &body, &[]);
            match r.status {
                202 => {
                    acked.push(r.json()["id"].as_i64().unwrap());
                    None
                }
                _ => Some(r),
            }
        })
        .expect("1 MiB never filled up");
    assert_error(&full, 503, "spool_unavailable");
    assert!(full.header("retry-after").is_some());
    assert!(!acked.is_empty());
    println!("spool full after {} accepted webhooks", acked.len());

    // Everything answered 202 is still there, and the daemon still answers.
    let (code, out, err) = h.cli(&["spool", "ls", "--json", "--limit", "1000"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<i64> = serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    for id in &acked {
        assert!(listed.contains(id), "acknowledged item {id} is gone");
    }
    let r = request(h.addr(), "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    h.signal(nix::sys::signal::Signal::SIGKILL);
    h.wait_exit(Duration::from_secs(10));
}

#[test]
fn check_config_warns_of_a_raised_idle_timeout_and_a_dedup_window_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    // The harness sets read_timeout = "2s"; extra_toml starts inside [spool].
    let hooks = r#"retain_done = "1h"

[[hook]]
name = "gh"
verify = { scheme = "none" }
dedup = { key = "header.X-Id", window = "1day" }
action = { exec = ["/bin/true"] }
"#;
    let h = Hookd::configure_with(dir.path(), r#"idle_timeout = "2s""#, hooks);
    let (code, _out, err) = h.cli(&["check-config"]);
    assert_eq!(code, 0, "warnings do not fail check-config: {err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("hookd: warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].contains("server.idle_timeout = 2s") && warnings[0].contains("hookd uses 3s"),
        "{err}"
    );
    assert!(
        warnings[1].contains(r#"hook "gh": dedup.window = 1day"#)
            && warnings[1].contains("spool.retain_done = 1h"),
        "{err}"
    );
}
