//! Repeats through the real HTTP path, the real binary and a real upstream:
//! a provider's redelivery of a dead item revives it, a repeat of a done one
//! stays a duplicate, a dedup window ends, a captured request replayed under
//! a new delivery id (untimestamped `replay_window`) or as it was
//! (timestamped schemes) is answered as a duplicate and not spooled.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const FAST_RETRY: &str =
    r#"retry = { max_attempts = 2, backoff = "100ms", max_backoff = "200ms" }"#;

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

fn status_of(r: &Response) -> (u16, serde_json::Value) {
    (r.status, r.json()["status"].clone())
}

#[test]
fn a_redelivery_of_a_dead_item_revives_it_and_a_redelivery_of_a_done_item_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let up_ok = healthy.clone();
    let up = Upstream::start(Arc::new(move |_, _| {
        let status = if up_ok.load(Ordering::SeqCst) {
            200
        } else {
            500
        };
        (status, Duration::ZERO)
    }));
    let extra = format!("{FAST_RETRY}\ndedup_header = \"X-GitHub-Delivery\"");
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), &extra),
    );
    h.start();
    let guid = [("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")];
    let r = h.post_signed("gh", b"{\"n\":1}", &guid);
    assert_eq!(r.status, 202, "{}", text(&r));
    let id = r.json()["id"].as_i64().unwrap();
    wait_for(Duration::from_secs(20), "the item to be dead", || {
        (h.items("dead").len() == 1).then_some(())
    });
    assert_eq!(up.received().len(), 2);

    // GitHub's "Redeliver": same GUID, same body and signature.
    healthy.store(true, Ordering::SeqCst);
    let r = h.post_signed("gh", b"{\"n\":1}", &guid);
    assert_eq!(status_of(&r), (202, "revived".into()), "{}", text(&r));
    assert_eq!(r.json()["id"].as_i64(), Some(id));
    assert_eq!(h.spool_total(), 1, "revived in place, nothing new spooled");
    let done = wait_for(Duration::from_secs(20), "the revived item done", || {
        let d = h.items("done");
        (d.len() == 1).then_some(d)
    });
    assert_eq!(done[0]["id"].as_i64(), Some(id));
    assert_eq!(
        done[0]["attempts"].as_u64(),
        Some(1),
        "a fresh attempt count"
    );
    let got = up.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].header("hookd-attempt"), Some("1"));
    assert!(h
        .log_text()
        .lines()
        .any(|l| l.contains("hookd_event=\"revived\"") || l.contains("hookd_event=revived")));

    // Redelivered again once done: a duplicate, never delivered twice.
    let r = h.post_signed("gh", b"{\"n\":1}", &guid);
    assert_eq!(status_of(&r), (200, "duplicate".into()), "{}", text(&r));
    assert_eq!(r.json()["id"].as_i64(), Some(id));
    assert_eq!(h.spool_total(), 1);
    assert_eq!(up.received().len(), 3);
}

#[test]
fn a_repeat_within_the_dedup_window_is_a_duplicate_and_after_it_is_spooled_anew() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        r#"[[hook]]
name = "gh"
verify = {{ scheme = "github", secret_file = "{}/github.secret" }}
dedup = {{ key = "payload.id", window = "3s" }}
action = {{ exec = ["/bin/true"] }}
"#,
        dir.path().display()
    );
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    let body = br#"{"id":"evt_1"}"#;
    let sent = Instant::now();
    let r = h.post_signed("gh", body, &[]);
    assert_eq!(r.status, 202, "{}", text(&r));
    // The first copy arrived between `sent` and now.
    let answered = Instant::now();
    let first = r.json()["id"].as_i64().unwrap();
    let r = h.post_signed("gh", body, &[]);
    // Judged only when the repeat surely left within the 3 s (a loaded machine).
    if sent.elapsed() < Duration::from_secs(2) {
        assert_eq!(status_of(&r), (200, "duplicate".into()), "{}", text(&r));
        assert_eq!(r.json()["id"].as_i64(), Some(first));
    }
    // The window runs from the first copy's arrival, before `answered`.
    let over = answered + Duration::from_millis(3100);
    std::thread::sleep(over.saturating_duration_since(Instant::now()));
    let r = h.post_signed("gh", body, &[]);
    assert_eq!(r.status, 202, "{}", text(&r));
    let second = r.json()["id"].as_i64().unwrap();
    assert!(second > first);
    assert_eq!(h.spool_total(), 2);
}

#[test]
fn an_untimestamped_replay_under_a_new_delivery_id_is_refused_within_replay_window() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        r#"[[hook]]
name = "gh"
verify = {{ scheme = "github", secret_file = "{d}/github.secret" }}
dedup_header = "X-GitHub-Delivery"
replay_window = "1h"
action = {{ exec = ["/bin/true"] }}

[[hook]]
name = "open"
verify = {{ scheme = "github", secret_file = "{d}/github.secret" }}
dedup_header = "X-GitHub-Delivery"
action = {{ exec = ["/bin/true"] }}
"#,
        d = dir.path().display()
    );
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    let body = br#"{"action":"opened"}"#;
    let r = h.post_signed("gh", body, &[("X-GitHub-Delivery", "guid-1")]);
    assert_eq!(r.status, 202, "{}", text(&r));
    let first = r.json()["id"].as_i64().unwrap();
    // The captured request, the unsigned delivery header changed.
    let r = h.post_signed("gh", body, &[("X-GitHub-Delivery", "guid-2")]);
    assert_eq!(status_of(&r), (200, "duplicate".into()), "{}", text(&r));
    assert_eq!(r.json()["id"].as_i64(), Some(first));
    assert_eq!(h.spool_total(), 1, "a replay was spooled");
    assert!(h.log_text().contains("replay"));
    // Another body is another webhook.
    let r = h.post_signed(
        "gh",
        br#"{"action":"closed"}"#,
        &[("X-GitHub-Delivery", "guid-3")],
    );
    assert_eq!(r.status, 202, "{}", text(&r));
    // Without replay_window, the same replay is spooled (what the option is for).
    let r = h.post_signed("open", body, &[("X-GitHub-Delivery", "guid-1")]);
    assert_eq!(r.status, 202);
    let r = h.post_signed("open", body, &[("X-GitHub-Delivery", "guid-2")]);
    assert_eq!(r.status, 202);
    assert_eq!(h.spool_total(), 4);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

#[test]
fn a_timestamped_request_replayed_within_its_tolerance_is_a_duplicate_not_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("slack"), "slack-secret").unwrap();
    std::fs::write(d.join("stripe"), "whsec_stripe").unwrap();
    for f in ["slack", "stripe"] {
        std::fs::set_permissions(
            d.join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }
    let hooks = format!(
        r#"[[hook]]
name = "slash"
verify = {{ scheme = "slack", secret_file = "{d}/slack" }}
action = {{ exec = ["/bin/true"] }}

[[hook]]
name = "stripe"
verify = {{ scheme = "stripe", secret_file = "{d}/stripe" }}
action = {{ exec = ["/bin/true"] }}
"#,
        d = d.display()
    );
    let mut h = Hookd::configure(d, &hooks);
    h.start();
    let post = |hook: &str, headers: &[(&str, &str)], body: &[u8]| {
        request(h.addr(), "POST", &format!("/hooks/{hook}"), headers, body).unwrap()
    };

    // A Slack slash command carries no event id: only the signature tells a replay.
    let body = b"command=%2Fdeploy&text=prod&user_id=U1";
    let ts = unix_now().to_string();
    let sig = format!(
        "v0={}",
        mac_hex(b"slack-secret", &[b"v0:", ts.as_bytes(), b":", body])
    );
    let hs = [
        ("X-Slack-Signature", sig.as_str()),
        ("X-Slack-Request-Timestamp", ts.as_str()),
    ];
    let r = post("slash", &hs, body);
    assert_eq!(r.status, 202, "{}", text(&r));
    let first = r.json()["id"].as_i64().unwrap();
    // Replayed, the signature spelled in upper case: the same signed request.
    let upper = format!("v0={}", sig[3..].to_uppercase());
    for s in [sig.as_str(), upper.as_str()] {
        let r = post(
            "slash",
            &[
                ("X-Slack-Signature", s),
                ("X-Slack-Request-Timestamp", ts.as_str()),
            ],
            body,
        );
        assert_eq!(status_of(&r), (200, "duplicate".into()), "{}", text(&r));
        assert_eq!(r.json()["id"].as_i64(), Some(first));
    }
    assert_eq!(h.spool_total(), 1, "a replay was spooled");

    // Stripe: the same t= and body, the v1 list padded out.
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let t = unix_now().to_string();
    let v1 = mac_hex(b"whsec_stripe", &[t.as_bytes(), b".", body]);
    let header = format!("t={t},v1={v1}");
    let r = post("stripe", &[("Stripe-Signature", &header)], body);
    assert_eq!(r.status, 202, "{}", text(&r));
    let first = r.json()["id"].as_i64().unwrap();
    let padded = format!("t={t},v1={v1},v0=abc");
    let r = post("stripe", &[("Stripe-Signature", &padded)], body);
    assert_eq!(status_of(&r), (200, "duplicate".into()), "{}", text(&r));
    assert_eq!(r.json()["id"].as_i64(), Some(first));
    assert_eq!(h.spool_total(), 2);
}
