//! `[[hook.route]]` against the real binary: a request matching several
//! routes is stored once and delivered to each, with the same delivery id
//! and its own `Hookd-Route`; a failing route is retried alone; order is
//! kept per route; a request no route matches is filtered, and a reload
//! that fixes a route's rule plus `spool retry --filtered` delivers it;
//! `spool ls/show/retry --route`, `/metrics` and `status` carry the route.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A hook `gh` (GitHub signatures) whose routes are given as TOML.
fn routed_hook(dir: &std::path::Path, routes: &str) -> String {
    format!(
        r#"[[hook]]
name = "gh"
verify = {{ scheme = "github", secret_file = "{}/github.secret" }}
{routes}
"#,
        dir.display()
    )
}

/// A forward route to `url` with quick retries.
fn route(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"[[hook.route]]
name = "{name}"
action = {{ forward = "{url}", timeout = "10s" }}
retry = {{ backoff = "100ms", max_backoff = "200ms" }}
{extra}
"#
    )
}

fn metrics_text(h: &Hookd) -> String {
    let m = request(h.metrics_addr(), "GET", "/metrics", &[], b"").unwrap();
    String::from_utf8_lossy(&m.body).to_string()
}

/// `spool ls --json` rows with the given route.
fn deliveries(h: &Hookd, route: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = h.cli(&["spool", "ls", "--route", route, "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn states(h: &Hookd, route: &str) -> Vec<String> {
    deliveries(h, route)
        .iter()
        .map(|d| d["state"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_request_matching_two_routes_is_delivered_to_both_with_one_id_and_its_own_route_header() {
    let dir = tempfile::tempdir().unwrap();
    let (deploy, notify) = (Upstream::ok(), Upstream::ok());
    let routes = route("deploy", &deploy.url(), "") + &route("notify", &notify.url(), "");
    let mut h = Hookd::configure(dir.path(), &routed_hook(dir.path(), &routes));
    h.start();

    let r = h.post_signed("gh", br#"{"ref":"refs/heads/main"}"#, &[]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "queued");
    assert_eq!(v["routes"], serde_json::json!(["deploy", "notify"]));
    let id = v["id"].as_i64().unwrap();

    for (up, name) in [(&deploy, "deploy"), (&notify, "notify")] {
        let got = wait_for(Duration::from_secs(15), name, || {
            up.received().first().cloned()
        });
        assert_eq!(
            got.header("hookd-delivery-id"),
            Some(id.to_string().as_str())
        );
        assert_eq!(got.header("hookd-route"), Some(name));
        assert_eq!(got.header("hookd-hook"), Some("gh"));
        assert_eq!(got.body, br#"{"ref":"refs/heads/main"}"#);
    }
    // A plain hook lists its one route, `default`.
    let dir2 = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut plain = Hookd::configure(dir2.path(), &forward_hook(dir2.path(), "gh", &up.url(), ""));
    plain.start();
    let r = plain.post_signed("gh", b"{}", &[]);
    assert_eq!(r.json()["routes"], serde_json::json!(["default"]));
    let got = wait_for(Duration::from_secs(15), "plain delivery", || {
        up.received().first().cloned()
    });
    assert_eq!(got.header("hookd-route"), Some("default"));
}

#[test]
fn a_failing_route_is_retried_alone_and_the_good_one_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    // deploy answers 500 twice, then 200; notify 200 at once.
    let deploy = Upstream::start(Arc::new(|n, _| {
        (if n < 2 { 500 } else { 200 }, Duration::ZERO)
    }));
    let notify = Upstream::ok();
    let routes = route("deploy", &deploy.url(), "") + &route("notify", &notify.url(), "");
    let mut h = Hookd::configure(dir.path(), &routed_hook(dir.path(), &routes));
    h.start();
    let id = h.post_signed("gh", b"{}", &[]).json()["id"]
        .as_i64()
        .unwrap();

    wait_for(Duration::from_secs(20), "both routes done", || {
        (states(&h, "deploy") == ["done"] && states(&h, "notify") == ["done"]).then_some(())
    });
    assert_eq!(deploy.ids(), [id, id, id]);
    assert_eq!(notify.ids(), [id], "the delivered route is not redone");
    let d = &deliveries(&h, "deploy")[0];
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["id"], id);

    // `spool show` has the request and each route's state.
    let (code, out, err) = h.cli(&["spool", "show", &id.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "routed");
    let routes: Vec<(String, String, i64)> = shown["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["route"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
                r["attempts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("deploy".to_string(), "done".to_string(), 3),
            ("notify".to_string(), "done".to_string(), 1)
        ]
    );
    let m = metrics_text(&h);
    for line in [
        "hookd_retried_total{hook=\"gh\",route=\"deploy\"} 2",
        "hookd_delivered_total{hook=\"gh\",route=\"deploy\"} 1",
        "hookd_delivered_total{hook=\"gh\",route=\"notify\"} 1",
        "hookd_spool_depth{hook=\"gh\",route=\"notify\",state=\"done\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing in\n{m}");
    }
    assert!(!m.contains("route=\"notify\"} 2"), "{m}");

    // Retrying one route by hand redelivers that route only.
    let (code, out, err) = h.cli(&[
        "spool",
        "retry",
        "--id",
        &id.to_string(),
        "--route",
        "notify",
    ]);
    assert_ne!(code, 0, "a done delivery is not retried: {out}");
    assert!(
        err.contains("no dead or pending delivery to route \"notify\""),
        "{err}"
    );
    let (code, out, _) = h.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("deploy"), "{out}");
}

#[test]
fn an_ordered_route_delivers_in_order_one_at_a_time_and_is_not_held_back_by_a_slow_route() {
    let dir = tempfile::tempdir().unwrap();
    let quick = Duration::from_millis(100);
    let slow = Duration::from_secs(2);
    let ordered = Upstream::start(Arc::new(move |_, _| (200, quick)));
    let slowed = Upstream::start(Arc::new(move |_, _| (200, slow)));
    let routes = route("a", &ordered.url(), "ordered = true\nconcurrency = 4")
        + &route("b", &slowed.url(), "");
    let mut h = Hookd::configure(dir.path(), &routed_hook(dir.path(), &routes));
    h.start();
    let ids: Vec<i64> = (0..5)
        .map(|n| {
            let r = h.post_signed("gh", format!("{{\"n\":{n}}}").as_bytes(), &[]);
            assert_eq!(r.status, 202);
            r.json()["id"].as_i64().unwrap()
        })
        .collect();
    wait_for(Duration::from_secs(20), "route a to take all five", || {
        (ordered.received().len() == 5).then_some(())
    });
    let got = ordered.received();
    assert_eq!(ordered.ids(), ids, "route a in arrival order");
    for w in got.windows(2) {
        // The next one starts only once the one before was answered.
        assert!(
            w[1].at >= w[0].at + quick,
            "two at once on an ordered route"
        );
    }
    // Route b (2 s per delivery) had not got its second when a was done.
    let b = slowed.received();
    assert!(b.len() <= 2, "route b got {} already", b.len());
    let last_a = got.last().unwrap().at;
    if let Some(second_b) = b.get(1) {
        assert!(last_a < second_b.at, "route a waited for route b");
    }
}

#[test]
fn routes_rules_filter_and_a_fixed_rule_delivers_after_reload_and_retry_filtered() {
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    let (deploy, notify) = (Upstream::ok(), Upstream::ok());
    let main_only = r#"when = [{ field = "payload.ref", eq = "refs/heads/main" }]"#;
    let issues = r#"when = [{ field = "header.X-GitHub-Event", eq = "issues" }]"#;
    let routes =
        route("deploy", &deploy.url(), main_only) + &route("notify", &notify.url(), issues);
    let mut h = Hookd::configure(dir.path(), &routed_hook(dir.path(), &routes));
    h.start();

    // Only notify matches.
    let r = h.post_signed(
        "gh",
        br#"{"ref":"refs/heads/dev"}"#,
        &[("X-GitHub-Event", "issues")],
    );
    assert_eq!(r.json()["routes"], serde_json::json!(["notify"]));
    // No route matches: filtered, kept.
    let r = h.post_signed(
        "gh",
        br#"{"ref":"refs/heads/master"}"#,
        &[("X-GitHub-Event", "push")],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "filtered");
    let kept = r.json()["id"].as_i64().unwrap();
    wait_for(Duration::from_secs(15), "notify", || {
        (notify.received().len() == 1).then_some(())
    });

    // explain says which route matched.
    let (code, out, err) = h.cli(&["explain", "--hook", "gh", "--id", &kept.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route deploy:  no match"), "{out}");
    assert!(out.contains("route notify:  no match"), "{out}");

    // The rule wanted master too: fix, reload, retry the filtered.
    let fixed = main_only.replace(
        r#"eq = "refs/heads/main""#,
        r#"in = ["refs/heads/main", "refs/heads/master"]"#,
    );
    let text = std::fs::read_to_string(&h.config)
        .unwrap()
        .replace(main_only, &fixed);
    std::fs::write(&h.config, text).unwrap();
    let (code, out, err) = h.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let successor = h.successor_pid();
    let (code, out, err) = h.cli(&["spool", "retry", "--filtered", "--hook", "gh"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{kept} is pending again for routes deploy")),
        "{out}"
    );
    let got = wait_for(Duration::from_secs(15), "deploy", || {
        deploy.received().first().cloned()
    });
    assert_eq!(
        got.header("hookd-delivery-id"),
        Some(kept.to_string().as_str())
    );
    assert_eq!(
        notify.received().len(),
        1,
        "notify's rule still does not hold"
    );
    assert!(h.items("filtered").is_empty());
    stop_successor(successor, Duration::from_secs(20));
}

/// Runs hookd under strace with every `pwrite64` from the `from`-th on
/// failing with ENOSPC (a full disk: SQLite's WAL writes fail before their
/// commit frame, so the transaction is not on disk, even in the page cache).
fn under_full_disk(h: &mut Hookd, from: u32) {
    let script = h.dir.join("hookd-disk-full");
    let out = h.dir.join("strace.out");
    let text = format!(
        "#!/bin/sh\nexec strace -f -qq --seccomp-bpf -o '{}' -e trace=pwrite64 -e inject=pwrite64:error=ENOSPC:when={from}+ -- '{}' \"$@\"\n",
        out.display(),
        h.bin.display()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    h.bin = script;
}

#[test]
fn a_commit_that_fails_answers_503_and_keeps_no_route_of_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let routes = route("deploy", &up.url(), "") + &route("notify", &up.url(), "");
    let mut h = Hookd::configure(dir.path(), &routed_hook(dir.path(), &routes));
    under_full_disk(&mut h, 400);
    h.start();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for n in 0..400 {
        let r = h.post_signed("gh", format!("{{\"n\":{n}}}").as_bytes(), &[]);
        match r.status {
            202 => accepted.push(r.json()["id"].as_i64().unwrap()),
            503 => {
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            s => panic!("unexpected {s}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert_eq!(
        refused,
        5,
        "the disk never filled up (accepted {})",
        accepted.len()
    );
    assert!(!accepted.is_empty(), "the disk was full from the start");
    h.signal(nix::sys::signal::Signal::SIGKILL);
    h.wait_exit(Duration::from_secs(10));

    // Every request in the spool has both its deliveries, and every 202 is
    // there: a request is kept whole or not at all.
    let conn = rusqlite::Connection::open(h.spool_path()).unwrap();
    let requests: Vec<(i64, i64)> = conn
        .prepare(
            "SELECT i.id, (SELECT count(*) FROM deliveries d WHERE d.item = i.id) \
             FROM items i ORDER BY i.id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (id, n) in &requests {
        assert_eq!(*n, 2, "request {id} kept with {n} of its 2 routes");
    }
    let stored: Vec<i64> = requests.iter().map(|(id, _)| *id).collect();
    for id in &accepted {
        assert!(stored.contains(id), "202 for {id}, not in the spool");
    }
    assert_eq!(stored.len(), accepted.len(), "a 503'd request was kept");
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM deliveries WHERE item NOT IN (SELECT id FROM items)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn items_of_a_plain_hook_go_to_its_route_named_default_once_it_has_routes() {
    let dir = tempfile::tempdir().unwrap();
    // The plain hook's app is down: its item waits (retries an hour apart).
    let down = format!("http://127.0.0.1:{}/", free_port());
    let plain = forward_hook(
        dir.path(),
        "gh",
        &down,
        "retry = { backoff = \"1h\", max_backoff = \"1h\" }",
    );
    let mut h = Hookd::configure(dir.path(), &plain);
    h.start();
    let id = h.post_signed("gh", b"{}", &[]).json()["id"]
        .as_i64()
        .unwrap();
    wait_for(Duration::from_secs(15), "the first attempt to fail", || {
        let items = h.items("pending");
        items
            .iter()
            .any(|i| i["id"] == id && i["attempts"] == 1)
            .then_some(())
    });
    h.signal(nix::sys::signal::Signal::SIGTERM);
    h.wait_exit(Duration::from_secs(20));

    // Routes now, one of them `default`: the old item is delivered by it.
    let (default, other) = (Upstream::ok(), Upstream::ok());
    let routes = route("default", &default.url(), "") + &route("other", &other.url(), "");
    let text = std::fs::read_to_string(&h.config)
        .unwrap()
        .replace(&plain, "");
    std::fs::write(&h.config, text + &routed_hook(dir.path(), &routes)).unwrap();
    let (code, out, err) = h.cli(&["spool", "retry", "--id", &id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    h.start();
    let got = wait_for(Duration::from_secs(15), "route default", || {
        default.received().first().cloned()
    });
    assert_eq!(
        got.header("hookd-delivery-id"),
        Some(id.to_string().as_str())
    );
    assert_eq!(got.header("hookd-route"), Some("default"));
    assert!(
        other.received().is_empty(),
        "only route default owns old items"
    );
}
