//! The providers' own libraries as signers: Standard Webhooks' and Slack's
//! Python packages and Stripe's Node package sign real requests
//! (tests/provider_libs/sign.py, sign_stripe.js, run as child processes),
//! and the real hookd judges them: valid, wrong key, altered body, stale
//! timestamp, replay, and key rotation, with the spool unchanged after every
//! refusal and every replay.
//!
//! The libraries are installed by `tests/provider_libs/install.sh DIR`
//! (`.ci/run` does it); the tests look in `$HOOKD_PROVIDER_LIBS`, else in
//! `<cargo target dir>/provider-libs`, and fail saying so when absent.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/provider_libs");

struct Libs {
    python: PathBuf,
    node_modules: PathBuf,
}

fn libs() -> Libs {
    let dir = match std::env::var_os("HOOKD_PROVIDER_LIBS") {
        Some(d) => PathBuf::from(d),
        // <target>/debug/deps/providers_libs-<hash>
        None => std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .expect("the test binary sits in <target>/<profile>/deps")
            .join("provider-libs"),
    };
    let libs = Libs {
        python: dir.join("venv/bin/python"),
        node_modules: dir.join("node/node_modules"),
    };
    assert!(
        libs.python.exists() && libs.node_modules.join("stripe").exists(),
        "the providers' libraries are not installed in {}: run tests/provider_libs/install.sh {} \
         (or set HOOKD_PROVIDER_LIBS to where they are)",
        dir.display(),
        dir.display()
    );
    libs
}

/// Runs a signer with `body` on stdin; its one line of output, within 60 s.
fn run_signer(mut cmd: Command, body: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(body).unwrap();
    let status = wait_for(Duration::from_secs(60), "the signer to exit", || {
        child.try_wait().unwrap()
    });
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{cmd:?} failed ({status}): {err}");
    out.trim().to_string()
}

fn python(libs: &Libs, args: &[&str]) -> Command {
    let mut c = Command::new(&libs.python);
    c.arg(Path::new(SCRIPTS).join("sign.py")).args(args);
    c
}

fn node(libs: &Libs, args: &[&str]) -> Command {
    let mut c = Command::new("node");
    c.arg(Path::new(SCRIPTS).join("sign_stripe.js"))
        .args(args)
        .env("NODE_PATH", &libs.node_modules);
    c
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

/// Headers a provider's library made for (key, timestamp, event id, body).
type Signer<'a> = &'a dyn Fn(&str, u64, &str, &[u8]) -> Vec<(String, String)>;

/// One provider's keys: the hook has `[new, old]`; `wrong` is neither.
struct Keys<'a> {
    new: &'a str,
    old: &'a str,
    wrong: &'a str,
}

/// Valid, replay, wrong key, altered body, stale timestamp and the old key,
/// each through the real HTTP path; the spool is unchanged after every refusal.
fn judge(h: &Hookd, hook: &str, keys: &Keys, sign: Signer, body_of: &dyn Fn(&str) -> Vec<u8>) {
    let post = |headers: &[(String, String)], body: &[u8]| {
        let hs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        request(h.addr(), "POST", &format!("/hooks/{hook}"), &hs, body).unwrap()
    };
    let refused = |r: &Response, code: &str, before: u64, case: &str| {
        assert_eq!(r.status, 403, "{hook} {case}: {}", text(r));
        assert_eq!(r.json()["error"], code, "{hook} {case}: {}", text(r));
        assert_eq!(h.spool_total(), before, "{hook} {case}: the spool changed");
    };
    let start = h.spool_total();

    let body = body_of("evt_1");
    let valid = sign(keys.new, unix_now(), "evt_1", &body);
    let r = post(&valid, &body);
    assert_eq!(r.status, 202, "{hook} valid: {}", text(&r));
    let first = r.json()["id"].as_i64().unwrap();
    assert_eq!(h.spool_total(), start + 1);

    // The captured request sent again, as it was.
    let r = post(&valid, &body);
    assert_eq!(r.status, 200, "{hook} replay: {}", text(&r));
    assert_eq!(r.json()["status"], "duplicate", "{hook} replay");
    assert_eq!(r.json()["id"].as_i64(), Some(first), "{hook} replay");
    assert_eq!(
        h.spool_total(),
        start + 1,
        "{hook} replay: the spool changed"
    );

    let body = body_of("evt_2");
    let wrong = sign(keys.wrong, unix_now(), "evt_2", &body);
    refused(
        &post(&wrong, &body),
        "signature_mismatch",
        start + 1,
        "wrong key",
    );

    let altered = body_of("evt_3");
    let signed = sign(keys.new, unix_now(), "evt_2", &body);
    refused(
        &post(&signed, &altered),
        "signature_mismatch",
        start + 1,
        "altered body",
    );

    let stale = sign(keys.new, unix_now() - 3600, "evt_2", &body);
    refused(
        &post(&stale, &body),
        "timestamp_stale",
        start + 1,
        "stale timestamp",
    );

    // Rotation: the old key still passes, and the log says key 1 matched.
    let body = body_of("evt_4");
    let old = sign(keys.old, unix_now(), "evt_4", &body);
    let r = post(&old, &body);
    assert_eq!(r.status, 202, "{hook} old key: {}", text(&r));
    assert_eq!(h.spool_total(), start + 2);
    wait_for(Duration::from_secs(10), "key_index=1 in the log", || {
        h.log_text()
            .lines()
            .any(|l| {
                l.contains("signature_old_key")
                    && l.contains("key_index=1")
                    && l.contains(&format!("hook=\"{hook}\""))
            })
            .then_some(())
    });
}

fn setup(dir: &Path) -> Hookd {
    let s = |name: &str, v: &str| common::write_secret(dir, name, v);
    let hooks = format!(
        r#"
[[hook]]
name = "sw"
preset = "standard-webhooks"
verify = {{ secret_files = ["{}", "{}"] }}
action = {{ exec = ["/bin/true"] }}

[[hook]]
name = "slack"
preset = "slack"
verify = {{ secret_files = ["{}", "{}"] }}
action = {{ exec = ["/bin/true"] }}

[[hook]]
name = "stripe"
preset = "stripe"
verify = {{ secret_files = ["{}", "{}"] }}
action = {{ exec = ["/bin/true"] }}
"#,
        s("sw.new", SW_NEW),
        s("sw.old", SW_OLD),
        s("slack.new", SLACK_NEW),
        s("slack.old", SLACK_OLD),
        s("stripe.new", STRIPE_NEW),
        s("stripe.old", STRIPE_OLD),
    );
    let mut h = Hookd::configure(dir, &hooks);
    h.start();
    h
}

const SW_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_OLD: &str = "whsec_b2xkIGtleSBmb3IgaG9va2QgdGVzdHM=";
const SW_WRONG: &str = "whsec_d3Jvbmcga2V5IHdyb25nIGtleSE=";
const SLACK_NEW: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_OLD: &str = "slack-old-signing-secret";
const STRIPE_NEW: &str = "whsec_new_stripe_endpoint_secret";
const STRIPE_OLD: &str = "whsec_old_stripe_endpoint_secret";

#[test]
fn standard_webhooks_library_signatures_are_judged_like_the_spec_says() {
    let libs = libs();
    let dir = tempfile::tempdir().unwrap();
    let h = setup(dir.path());
    let sign = |key: &str, ts: u64, id: &str, body: &[u8]| {
        let ts = ts.to_string();
        let sig = run_signer(python(&libs, &["standardwebhooks", key, id, &ts]), body);
        vec![
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts),
            ("webhook-signature".into(), sig),
            ("Content-Type".into(), "application/json".into()),
        ]
    };
    let keys = Keys {
        new: SW_NEW,
        old: SW_OLD,
        wrong: SW_WRONG,
    };
    judge(&h, "sw", &keys, &sign, &|id| {
        format!(r#"{{"type":"invoice.paid","data":{{"ref":"{id}"}}}}"#).into_bytes()
    });
}

#[test]
fn slack_sdk_signatures_are_judged_like_slack_says() {
    let libs = libs();
    let dir = tempfile::tempdir().unwrap();
    let h = setup(dir.path());
    let sign = |key: &str, ts: u64, _id: &str, body: &[u8]| {
        let ts = ts.to_string();
        let sig = run_signer(python(&libs, &["slack", key, &ts]), body);
        vec![
            ("X-Slack-Signature".into(), sig),
            ("X-Slack-Request-Timestamp".into(), ts),
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ]
    };
    let keys = Keys {
        new: SLACK_NEW,
        old: SLACK_OLD,
        wrong: "not-the-signing-secret",
    };
    // A slash command: no event id, so only the signature tells a replay.
    judge(&h, "slack", &keys, &sign, &|id| {
        format!("command=%2Fdeploy&text={id}&user_id=U2147483697").into_bytes()
    });
}

#[test]
fn stripe_library_signatures_are_judged_like_stripe_says() {
    let libs = libs();
    let dir = tempfile::tempdir().unwrap();
    let h = setup(dir.path());
    let sign = |key: &str, ts: u64, _id: &str, body: &[u8]| {
        let header = run_signer(node(&libs, &[key, &ts.to_string()]), body);
        vec![
            ("Stripe-Signature".into(), header),
            ("Content-Type".into(), "application/json".into()),
        ]
    };
    let keys = Keys {
        new: STRIPE_NEW,
        old: STRIPE_OLD,
        wrong: "whsec_someone_elses_endpoint",
    };
    judge(&h, "stripe", &keys, &sign, &|id| {
        format!(r#"{{"id":"{id}","object":"event","type":"charge.succeeded"}}"#).into_bytes()
    });
}
