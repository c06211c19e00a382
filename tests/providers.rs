//! Providers against the real binary over real sockets: each scheme's valid,
//! wrong-key, altered-body and stale cases, key rotation (the old key still
//! passes and the log names its index), the handshakes answered without
//! spooling, dedup by header and by body field, and the configured answer.
//! After every refusal and every handshake the spool holds nothing new.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// Standard Webhooks' published test vector.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_NEW: &str = "whsec_bmV3IGtleSBmb3IgaG9va2QgdGVzdHMhIQ==";
const SW_VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
const SW_VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ZOOM_SECRET: &str = "zoom_secret_token";
const TWITCH_SECRET: &str = "twitch_secret";
const META_SECRET: &str = "meta app secret";
const META_TOKEN: &str = "meatyhamhock";
const SHOPIFY_SECRET: &str = "shpss_k";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn post(h: &Hookd, hook: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request(h.addr(), "POST", &format!("/hooks/{hook}"), headers, body).unwrap()
}

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

/// A refusal with `status` and `code`, and nothing new in the spool.
fn refused(h: &Hookd, r: &Response, status: u16, code: &str, before: u64) {
    assert_eq!(r.status, status, "{}", text(r));
    assert_eq!(r.json()["error"], code, "{}", text(r));
    assert_eq!(h.spool_total(), before, "a refusal spooled something");
}

fn setup() -> (tempfile::TempDir, Hookd) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sw_new = common::write_secret(d, "sw.new", SW_NEW);
    let sw_old = common::write_secret(d, "sw.old", SW_SECRET);
    let slack = common::write_secret(d, "slack", SLACK_SECRET);
    let zoom = common::write_secret(d, "zoom", ZOOM_SECRET);
    let twitch = common::write_secret(d, "twitch", TWITCH_SECRET);
    let meta = common::write_secret(d, "meta", META_SECRET);
    let meta_token = common::write_secret(d, "meta.token", META_TOKEN);
    let shop = common::write_secret(d, "shop", SHOPIFY_SECRET);
    let gitlab = common::write_secret(d, "gitlab", "glpat-token");
    let basic = common::write_secret(d, "basic", "hookd:pa55:word");
    let h512_new = common::write_secret(d, "h512.new", "k-new");
    let creds = d.join("creds");
    std::fs::create_dir(&creds).unwrap();
    common::write_secret(&creds, "h512-old", "k-old");
    let act = "action = { exec = [\"/bin/true\"] }";
    let hooks = format!(
        r#"
[[hook]]
name = "sw"
preset = "standard-webhooks"
verify = {{ secret_files = ["{sw_new}", "{sw_old}"] }}
{act}

[[hook]]
name = "slack"
preset = "slack-events"
verify = {{ secret_file = "{slack}" }}
{act}

[[hook]]
name = "zoom"
preset = "zoom"
verify = {{ secret_file = "{zoom}" }}
{act}

[[hook]]
name = "twitch"
preset = "twitch"
verify = {{ secret_file = "{twitch}" }}
{act}

[[hook]]
name = "meta"
preset = "meta"
verify = {{ secret_file = "{meta}", verify_token_file = "{meta_token}" }}
{act}

[[hook]]
name = "shop"
preset = "shopify"
verify = {{ secret_file = "{shop}" }}
respond = {{ status = 200, body = "ok" }}
{act}

[[hook]]
name = "gitlab"
preset = "gitlab"
verify = {{ secret_file = "{gitlab}" }}
{act}

[[hook]]
name = "basic"
verify = {{ scheme = "basic", secret_file = "{basic}" }}
{act}

[[hook]]
name = "h512"
verify = {{ scheme = "hmac", algorithm = "sha512", encoding = "base64", header = "X-Sig", prefix = "v1=", signed = "{{timestamp}}.{{body}}", timestamp_header = "X-Ts", tolerance = "1m", secret_file = "{h512_new}", secret_credential = "h512-old" }}
dedup = {{ key = "payload.items.0.id", window = "7d" }}
{act}
"#
    );
    let mut h = Hookd::configure(d, &hooks);
    h.env
        .push(("CREDENTIALS_DIRECTORY".into(), creds.display().to_string()));
    h.start();
    (dir, h)
}

fn sw_sign(secret: &str, id: &str, ts: u64, body: &[u8]) -> String {
    let key = B64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let sig = mac256(
        &key,
        &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
    );
    format!("v1,{}", B64.encode(sig))
}

#[test]
fn standard_webhooks_rotation_stale_vector_and_dedup() {
    let (_dir, h) = setup();
    let before = h.spool_total();

    // The published vector: the right signature, but its timestamp is from 2021.
    let r = post(
        &h,
        "sw",
        &[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", SW_VECTOR_SIG),
        ],
        SW_VECTOR_BODY,
    );
    refused(&h, &r, 403, "timestamp_stale", before);

    let t = now();
    let body = br#"{"type":"invoice.paid"}"#;
    // Wrong key, altered body: refused.
    let wrong = sw_sign("whsec_d3Jvbmcga2V5IHdyb25nIGtleSE=", "msg_1", t, body);
    let ts = t.to_string();
    let r = post(
        &h,
        "sw",
        &[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &wrong),
        ],
        body,
    );
    refused(&h, &r, 403, "signature_mismatch", before);
    let old = sw_sign(SW_SECRET, "msg_1", t, body);
    let r = post(
        &h,
        "sw",
        &[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &old),
        ],
        br#"{"type":"invoice.pa1d"}"#,
    );
    refused(&h, &r, 403, "signature_mismatch", before);

    // The old key (index 1) still passes, in Svix's spelling too; the log says which.
    let r = post(
        &h,
        "sw",
        &[
            ("svix-id", "msg_1"),
            ("svix-timestamp", &ts),
            ("svix-signature", &old),
        ],
        body,
    );
    assert_eq!(r.status, 202, "{}", text(&r));
    let first = r.json()["id"].clone();
    assert_eq!(h.spool_total(), before + 1);
    wait_for(Duration::from_secs(5), "key_index=1 in the log", || {
        let log = h.log_text();
        log.lines()
            .any(|l| {
                l.contains("signature_old_key") && l.contains("key_index=1") && l.contains("sw")
            })
            .then_some(())
    });
    // The same webhook-id again, signed with the new key: a duplicate.
    let new = sw_sign(SW_NEW, "msg_1", t, body);
    let r = post(
        &h,
        "sw",
        &[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &new),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["status"], "duplicate");
    assert_eq!(r.json()["id"], first);
    assert_eq!(h.spool_total(), before + 1);
}

fn slack_headers(body: &[u8], ts: u64, secret: &str) -> (String, String) {
    let ts = ts.to_string();
    let sig = mac256(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    (format!("v0={}", hex::encode(sig)), ts)
}

#[test]
fn slack_events_url_verification_and_event_id_dedup() {
    let (_dir, h) = setup();
    let before = h.spool_total();
    // Slack's url_verification example.
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (sig, ts) = slack_headers(body, now(), SLACK_SECRET);
    let hs = [
        ("X-Slack-Signature", sig.as_str()),
        ("X-Slack-Request-Timestamp", ts.as_str()),
    ];
    let r = post(&h, "slack", &hs, body);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.json(),
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    assert_eq!(h.spool_total(), before, "a handshake was spooled");

    // Unsigned, wrongly signed or stale: no challenge answered.
    let r = post(&h, "slack", &[], body);
    refused(&h, &r, 401, "signature_missing", before);
    let (bad, ts2) = slack_headers(body, now(), "another secret");
    let r = post(
        &h,
        "slack",
        &[
            ("X-Slack-Signature", &bad),
            ("X-Slack-Request-Timestamp", &ts2),
        ],
        body,
    );
    refused(&h, &r, 403, "signature_mismatch", before);
    let (old, ts3) = slack_headers(body, now() - 3600, SLACK_SECRET);
    let r = post(
        &h,
        "slack",
        &[
            ("X-Slack-Signature", &old),
            ("X-Slack-Request-Timestamp", &ts3),
        ],
        body,
    );
    refused(&h, &r, 403, "timestamp_stale", before);
    let r = post(&h, "slack", &hs, &body[1..]);
    refused(&h, &r, 403, "signature_mismatch", before);

    // An event is spooled; its retry (same event_id) is a duplicate.
    let ev = br#"{"type":"event_callback","event_id":"Ev123","event":{"type":"app_mention"}}"#;
    let (sig, ts) = slack_headers(ev, now(), SLACK_SECRET);
    let hs = [
        ("X-Slack-Signature", sig.as_str()),
        ("X-Slack-Request-Timestamp", ts.as_str()),
    ];
    let r = post(&h, "slack", &hs, ev);
    assert_eq!(r.status, 202, "{}", text(&r));
    let r = post(&h, "slack", &hs, ev);
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, "duplicate".into())
    );
    assert_eq!(h.spool_total(), before + 1);
}

#[test]
fn zoom_twitch_meta_handshakes_are_answered_not_spooled() {
    let (_dir, h) = setup();
    let before = h.spool_total();

    // Zoom's url_validation example body, signed as Zoom signs it.
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_time":1654503849680,"event":"endpoint.url_validation"}"#;
    let zoom = |body: &[u8], t: u64, key: &str| {
        let ts = t.to_string();
        let sig = mac256(key.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
        (format!("v0={}", hex::encode(sig)), ts)
    };
    let (sig, ts) = zoom(body, now(), ZOOM_SECRET);
    let r = post(
        &h,
        "zoom",
        &[("x-zm-signature", &sig), ("x-zm-request-timestamp", &ts)],
        body,
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    // python3 -c "import hmac,hashlib;print(hmac.new(b'zoom_secret_token',b'qgg8vlvZRS6UYooatFL8Aw',hashlib.sha256).hexdigest())"
    assert_eq!(
        r.json(),
        serde_json::json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": "bd48235863f4a6323ccc4963c594908b7c97f88b4a6a95278f4f093690b12726"
        })
    );
    let (bad, ts) = zoom(body, now(), "not zoom's");
    let r = post(
        &h,
        "zoom",
        &[("x-zm-signature", &bad), ("x-zm-request-timestamp", &ts)],
        body,
    );
    refused(&h, &r, 403, "signature_mismatch", before);
    let (stale, ts) = zoom(body, now() - 600, ZOOM_SECRET);
    let r = post(
        &h,
        "zoom",
        &[("x-zm-signature", &stale), ("x-zm-request-timestamp", &ts)],
        body,
    );
    refused(&h, &r, 403, "timestamp_stale", before);
    assert_eq!(h.spool_total(), before);

    // Twitch's callback verification: the challenge as text.
    let body =
        br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387"}}"#;
    let ts = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    let twitch = |id: &str, ts: &str, body: &[u8], key: &str| {
        format!(
            "sha256={}",
            hex::encode(mac256(
                key.as_bytes(),
                &[id.as_bytes(), ts.as_bytes(), body]
            ))
        )
    };
    let sig = twitch("e76c6bd4", &ts, body, TWITCH_SECRET);
    let hs = [
        ("Twitch-Eventsub-Message-Id", "e76c6bd4"),
        ("Twitch-Eventsub-Message-Timestamp", ts.as_str()),
        ("Twitch-Eventsub-Message-Signature", sig.as_str()),
        (
            "Twitch-Eventsub-Message-Type",
            "webhook_callback_verification",
        ),
    ];
    let r = post(&h, "twitch", &hs, body);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(text(&r), "pogchamp-kappa-360noscope-vohiyo");
    let bad = twitch("e76c6bd4", &ts, body, "someone else");
    let mut hs_bad = hs;
    hs_bad[2].1 = &bad;
    let r = post(&h, "twitch", &hs_bad, body);
    refused(&h, &r, 403, "signature_mismatch", before);
    // A notification: spooled, and its redelivery (same message id) a duplicate.
    let note = br#"{"event":{"user_id":"1337"}}"#;
    let sig = twitch("n-1", &ts, note, TWITCH_SECRET);
    let hs = [
        ("Twitch-Eventsub-Message-Id", "n-1"),
        ("Twitch-Eventsub-Message-Timestamp", ts.as_str()),
        ("Twitch-Eventsub-Message-Signature", sig.as_str()),
        ("Twitch-Eventsub-Message-Type", "notification"),
    ];
    assert_eq!(post(&h, "twitch", &hs, note).status, 202);
    assert_eq!(post(&h, "twitch", &hs, note).status, 200);
    assert_eq!(h.spool_total(), before + 1);

    // Meta: GET with the verify token answers the challenge; a wrong token is 403.
    let get = |q: &str| request(h.addr(), "GET", &format!("/hooks/meta?{q}"), &[], b"").unwrap();
    let r = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock");
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(text(&r), "1158201444");
    let r = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhocK");
    refused(&h, &r, 403, "token_mismatch", before + 1);
    let r = get("hub.mode=unsubscribe");
    assert_eq!(r.status, 405);
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    let sig = format!(
        "sha256={}",
        hex::encode(mac256(META_SECRET.as_bytes(), &[body]))
    );
    let r = post(&h, "meta", &[("X-Hub-Signature-256", &sig)], body);
    assert_eq!(r.status, 202, "{}", text(&r));
    let r = post(&h, "meta", &[("X-Hub-Signature-256", &sig)], &body[1..]);
    refused(&h, &r, 403, "signature_mismatch", before + 2);
}

#[test]
fn shopify_gitlab_basic_and_generic_hmac() {
    let (_dir, h) = setup();
    let before = h.spool_total();

    // Shopify: base64 HMAC; the configured answer replaces the 202.
    let body = br#"{"id":820982911946154508}"#;
    let sig = B64.encode(mac256(SHOPIFY_SECRET.as_bytes(), &[body]));
    let hs = [
        ("X-Shopify-Hmac-Sha256", sig.as_str()),
        ("X-Shopify-Webhook-Id", "b54557e4"),
    ];
    let r = post(&h, "shop", &hs, body);
    assert_eq!((r.status, text(&r)), (200, "ok".to_string()));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // The repeat keeps the JSON duplicate answer.
    let r = post(&h, "shop", &hs, body);
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, "duplicate".into())
    );
    let r = post(&h, "shop", &hs, b"{\"id\":1}");
    refused(&h, &r, 403, "signature_mismatch", before + 1);

    // GitLab: the token header.
    let ok = post(
        &h,
        "gitlab",
        &[
            ("X-Gitlab-Token", "glpat-token"),
            ("X-Gitlab-Event", "Push Hook"),
        ],
        b"{}",
    );
    assert_eq!(ok.status, 202, "{}", text(&ok));
    // The token is a credential: not kept with the item (nor forwarded).
    let id = ok.json()["id"].to_string();
    let (code, out, err) = h.cli(&["spool", "show", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.to_ascii_lowercase().contains("x-gitlab-event"), "{out}");
    assert!(!out.contains("glpat-token"), "{out}");
    let r = post(&h, "gitlab", &[("X-Gitlab-Token", "glpat-tokem")], b"{}");
    refused(&h, &r, 403, "token_mismatch", before + 2);
    let r = post(&h, "gitlab", &[], b"{}");
    refused(&h, &r, 401, "token_missing", before + 2);

    // Basic: user:password from the secret file.
    let auth = format!("Basic {}", B64.encode("hookd:pa55:word"));
    assert_eq!(
        post(&h, "basic", &[("Authorization", &auth)], b"x").status,
        202
    );
    let wrong = format!("Basic {}", B64.encode("hookd:pa55:w0rd"));
    let r = post(&h, "basic", &[("Authorization", &wrong)], b"x");
    refused(&h, &r, 403, "token_mismatch", before + 3);

    // Generic: SHA-512, base64, prefix, timestamp; the second key is a credential.
    let sign = |key: &str, ts: &str, body: &[u8]| {
        let mut m = Hmac::<Sha512>::new_from_slice(key.as_bytes()).unwrap();
        m.update(ts.as_bytes());
        m.update(b".");
        m.update(body);
        format!("v1={}", B64.encode(m.finalize().into_bytes()))
    };
    let body = br#"{"items":[{"id":"it-1"}]}"#;
    let ts = now().to_string();
    let old = sign("k-old", &ts, body);
    let r = post(&h, "h512", &[("X-Sig", &old), ("X-Ts", &ts)], body);
    assert_eq!(r.status, 202, "{}", text(&r));
    wait_for(Duration::from_secs(5), "h512 key_index=1", || {
        h.log_text()
            .lines()
            .any(|l| l.contains("signature_old_key") && l.contains("h512"))
            .then_some(())
    });
    // Same items.0.id, new key: a duplicate.
    let new = sign("k-new", &ts, body);
    let r = post(&h, "h512", &[("X-Sig", &new), ("X-Ts", &ts)], body);
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, "duplicate".into())
    );
    // No such field: accepted, just not deduplicated.
    let plain = br#"{"items":[]}"#;
    let sig = sign("k-new", &ts, plain);
    assert_eq!(
        post(&h, "h512", &[("X-Sig", &sig), ("X-Ts", &ts)], plain).status,
        202
    );
    let before = before + 5;
    assert_eq!(h.spool_total(), before);
    let stale_ts = (now() - 120).to_string();
    let stale = sign("k-new", &stale_ts, body);
    let r = post(&h, "h512", &[("X-Sig", &stale), ("X-Ts", &stale_ts)], body);
    refused(&h, &r, 403, "timestamp_stale", before);
    let r = post(
        &h,
        "h512",
        &[("X-Sig", &sign("k-other", &ts, body)), ("X-Ts", &ts)],
        body,
    );
    refused(&h, &r, 403, "signature_mismatch", before);
    let r = post(&h, "h512", &[("X-Sig", &new), ("X-Ts", &ts)], plain);
    refused(&h, &r, 403, "signature_mismatch", before);
}

#[test]
fn check_config_explain_and_bad_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tw = common::write_secret(d, "twitch", TWITCH_SECRET);
    let h = Hookd::configure(
        d,
        &format!(
            "[[hook]]\nname = \"tw\"\npreset = \"twitch\"\nverify = {{ secret_file = \"{tw}\" }}\naction = {{ exec = [\"/bin/true\"] }}\n"
        ),
    );
    let (code, out, err) = h.cli(&["check-config", "--explain"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "hook \"tw\" (preset \"twitch\")",
        "scheme = \"hmac\"",
        "header = \"Twitch-Eventsub-Message-Signature\"",
        "prefix = \"sha256=\"",
        "signed = \"{header.Twitch-Eventsub-Message-Id}{timestamp}{body}\"",
        "timestamp_header = \"Twitch-Eventsub-Message-Timestamp\"",
        "tolerance = \"10m\"",
        "dedup key = \"header.Twitch-Eventsub-Message-Id\"",
        "handshake: Twitch webhook_callback_verification",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains(TWITCH_SECRET), "{out}");
    // A group-writable secret file is refused by name.
    std::fs::set_permissions(&tw, std::os::unix::fs::PermissionsExt::from_mode(0o620)).unwrap();
    let (code, _, err) = h.cli(&["check-config"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is writable by group or others; chmod go-w it"),
        "{err}"
    );
    assert!(err.contains(&tw), "{err}");
}

fn metrics_text(h: &Hookd) -> String {
    let r = request(h.metrics_addr(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    text(&r)
}

#[test]
fn basic_401_names_its_realm_and_answered_handshakes_are_counted_by_kind() {
    let (_dir, h) = setup();
    let before = h.spool_total();
    // No credentials: 401 with the challenge a client (curl, a browser) answers.
    let r = post(&h, "basic", &[], b"{}");
    refused(&h, &r, 401, "token_missing", before);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"hookd\""));
    // Wrong credentials: 403, no challenge (they were sent and refused).
    let wrong = format!("Basic {}", B64.encode("hookd:nope"));
    let r = post(&h, "basic", &[("Authorization", &wrong)], b"{}");
    refused(&h, &r, 403, "token_mismatch", before);
    assert_eq!(r.header("www-authenticate"), None);
    // A signature scheme's 401 has no HTTP authentication challenge.
    let r = post(&h, "slack", &[], b"{}");
    refused(&h, &r, 401, "signature_missing", before);
    assert_eq!(r.header("www-authenticate"), None);

    // Slack's url_verification answered: counted; an unsigned one: not.
    let body = br#"{"type":"url_verification","challenge":"c1"}"#;
    let (sig, ts) = slack_headers(body, now(), SLACK_SECRET);
    let hs = [
        ("X-Slack-Signature", sig.as_str()),
        ("X-Slack-Request-Timestamp", ts.as_str()),
    ];
    assert_eq!(post(&h, "slack", &hs, body).status, 200);
    assert_eq!(post(&h, "slack", &hs, body).status, 200);
    // Meta's GET check, right token and wrong token.
    let q = format!("hub.mode=subscribe&hub.verify_token={META_TOKEN}&hub.challenge=42");
    let r = request(h.addr(), "GET", &format!("/hooks/meta?{q}"), &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let q = "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=42";
    let r = request(h.addr(), "GET", &format!("/hooks/meta?{q}"), &[], b"").unwrap();
    assert_eq!(r.status, 403);
    let m = metrics_text(&h);
    assert!(
        m.contains("hookd_handshakes_total{hook=\"slack\",kind=\"slack_url_verification\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("hookd_handshakes_total{hook=\"meta\",kind=\"meta_subscribe\"} 1"),
        "{m}"
    );
    assert_eq!(h.spool_total(), before, "a handshake was spooled");
}

/// Slack's Events API set up against hookd as Slack does it: the URL check
/// first, then an event, then Slack's retry of it (new timestamp and
/// signature, `X-Slack-Retry-Num`) because the first answer was slow.
#[test]
fn slack_events_setup_answers_the_challenge_then_delivers_an_event_once_despite_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let secret = common::write_secret(dir.path(), "slack", SLACK_SECRET);
    let up = Upstream::ok();
    let hooks = format!(
        r#"[[hook]]
name = "slack"
preset = "slack-events"
verify = {{ secret_file = "{secret}" }}
action = {{ forward = "{}", timeout = "10s" }}
"#,
        up.url()
    );
    let mut h = Hookd::configure(dir.path(), &hooks);
    h.start();
    // A retry is signed anew: another timestamp (here 10 s per retry
    // earlier, so never the first one's), so it is not a replay to hookd.
    let signed = |body: &[u8], retry: Option<&str>| {
        let back: u64 = retry.map_or(0, |n| 10 * n.parse::<u64>().unwrap());
        let (sig, ts) = slack_headers(body, now() - back, SLACK_SECRET);
        let mut hs = vec![
            ("X-Slack-Signature".to_string(), sig),
            ("X-Slack-Request-Timestamp".to_string(), ts),
            ("Content-Type".to_string(), "application/json".to_string()),
        ];
        if let Some(n) = retry {
            hs.push(("X-Slack-Retry-Num".into(), n.into()));
            hs.push(("X-Slack-Retry-Reason".into(), "http_timeout".into()));
        }
        let hs: Vec<(&str, &str)> = hs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        post(&h, "slack", &hs, body)
    };

    let check = br#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let r = signed(check, None);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.json()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let ev = br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event_time":1700000000,"event":{"type":"app_mention","text":"hi"}}"#;
    let r = signed(ev, None);
    assert_eq!(r.status, 202, "{}", text(&r));
    let id = r.json()["id"].as_i64().unwrap();
    let r = signed(ev, Some("1"));
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["status"], "duplicate");
    assert_eq!(r.json()["id"].as_i64(), Some(id));

    wait_for(Duration::from_secs(20), "the event done", || {
        (h.items("done").len() == 1).then_some(())
    });
    // Once done, a late second retry is still that event.
    let r = signed(ev, Some("2"));
    assert_eq!(r.json()["status"], "duplicate", "{}", text(&r));
    assert_eq!(
        h.spool_total(),
        1,
        "one item: the challenge and the retries were not spooled"
    );
    let got = up.received();
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(got[0].body, ev.to_vec());
    assert_eq!(
        got[0].header("hookd-delivery-id"),
        Some(id.to_string().as_str())
    );
}
