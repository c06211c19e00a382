//! Several hookd nodes on one PostgreSQL spool, as real processes: each
//! node its own directory, config (`[spool] url`, its `node`), listener and
//! control socket; one throw-away cluster (`common/pg.rs`) they share.
//!
//! Each node forwards to its own recording upstream (`faults/checker.rs`'s:
//! every attempt with its delivery id, start and end, and a gate that holds
//! attempts), so a test knows which node ran which attempt; the attempts
//! of all upstreams together are what the promises are checked on.
//!
//! The test process is a child subreaper (as systemd is for a unit), so a
//! hand-off's successor is reaped here.

mod common;

// Only the checker's recording upstream and its gate are used here.
#[allow(dead_code)]
#[path = "faults/checker.rs"]
mod checker;
#[path = "common/pg.rs"]
mod pg;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{forward_hook, post_gh, wait_for, Hookd, Upstream};
use nix::sys::signal::Signal;
use pg::Pg;

/// Every wait here ends by this deadline.
const WAIT: Duration = Duration::from_secs(30);

/// hookd's lease is the action's timeout plus this margin
/// (`delivery::dispatch::LEASE_MARGIN`); there is no setting for it.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Node `name` on `url`, in `root/name`, forwarding hook `gh` to `upstream`.
fn node(root: &Path, url: &str, name: &str, upstream: &str, hook_extra: &str) -> Hookd {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("node dir");
    let hooks = forward_hook(&dir, "gh", upstream, hook_extra);
    Hookd::configure_pg(&dir, url, name, "", &hooks)
}

/// As [`node`], with the forward's `timeout` (the lease is it plus
/// [`LEASE_MARGIN`]) and `more` (other top-level tables) given.
fn node_with(
    root: &Path,
    url: &str,
    name: &str,
    upstream: &str,
    timeout: &str,
    hook_extra: &str,
    more: &str,
) -> Hookd {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("node dir");
    let hooks = format!(
        r#"[[hook]]
name = "gh"
verify = {{ scheme = "github", secret_file = "{}/github.secret" }}
action = {{ forward = "{upstream}", timeout = "{timeout}" }}
{hook_extra}

{more}
"#,
        dir.display()
    );
    Hookd::configure_pg(&dir, url, name, "", &hooks)
}

/// Quick retries, so an attempt cut short is tried again within the test.
const QUICK_RETRY: &str =
    r#"retry = { max_attempts = 100, backoff = "100ms", max_backoff = "1s" }"#;

/// POSTs `{"cid": cid}` signed to node `h`'s `/hooks/gh`; the hookd id of a 202.
fn post_cid(h: &Hookd, cid: &str) -> Result<i64, String> {
    let body = format!("{{\"cid\":\"{cid}\"}}");
    match post_gh(h.addr(), body.as_bytes()) {
        Ok(r) if r.status == 202 => r.json()["id"]
            .as_i64()
            .ok_or_else(|| format!("202 without an id: {:?}", r.body)),
        Ok(r) => Err(format!(
            "status {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// One attempt as an upstream saw it, with the node whose upstream it was.
#[derive(Debug, Clone)]
struct Attempt {
    node: String,
    id: i64,
    start: Instant,
    end: Instant,
}

/// Every attempt of every node's upstream, by start.
fn attempts(ups: &[(&str, &checker::Upstream)]) -> Vec<Attempt> {
    let mut all: Vec<Attempt> = ups
        .iter()
        .flat_map(|(node, up)| {
            up.deliveries().into_iter().filter_map(move |d| {
                Some(Attempt {
                    node: node.to_string(),
                    id: d.hookd_id?,
                    start: d.start,
                    end: d.end,
                })
            })
        })
        .collect();
    all.sort_by_key(|a| a.start);
    all
}

/// Pairs of attempts of one id whose times overlap (the later began before
/// the earlier one was answered).
fn overlapping(all: &[Attempt]) -> Vec<(Attempt, Attempt)> {
    let mut by_id: HashMap<i64, Vec<&Attempt>> = HashMap::new();
    for a in all {
        by_id.entry(a.id).or_default().push(a);
    }
    let mut bad = Vec::new();
    for list in by_id.values_mut() {
        list.sort_by_key(|a| a.start);
        for w in list.windows(2) {
            if w[1].start < w[0].end {
                bad.push((w[0].clone(), w[1].clone()));
            }
        }
    }
    bad
}

/// The ids among `all` attempted more than once.
fn repeated(all: &[Attempt]) -> Vec<i64> {
    let mut n: BTreeMap<i64, usize> = BTreeMap::new();
    for a in all {
        *n.entry(a.id).or_default() += 1;
    }
    n.into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(i, _)| i)
        .collect()
}

/// The lease owner ids of node `name`'s registered processes.
fn instances_of(pg: &Pg, name: &str) -> Vec<String> {
    pg.psql(&format!("SELECT id FROM instances WHERE node = '{name}'"))
        .lines()
        .map(str::to_string)
        .collect()
}

fn count(pg: &Pg, sql: &str) -> i64 {
    pg.psql(sql)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: not a count: {e}"))
}

#[test]
fn a_node_on_postgres_acknowledges_delivers_and_reports_the_spool() {
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let up = Upstream::ok();
    let mut a = node(tmp.path(), &pg.url(), "a", &up.url(), "");
    a.start();

    let mut ids = Vec::new();
    for i in 0..20 {
        let r = a.post_signed("gh", format!("{{\"n\":{i}}}").as_bytes(), &[]);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        ids.push(r.json()["id"].as_i64().expect("id"));
    }
    wait_for(WAIT, "20 deliveries", || {
        (up.received().len() >= 20).then_some(())
    });
    let mut got = up.ids();
    got.sort_unstable();
    ids.sort_unstable();
    assert_eq!(got, ids, "each acknowledged id delivered");

    // The rows are in PostgreSQL, not in a file beside the node.
    assert!(!a.dir.join("spool.db").exists());
    let done: i64 = pg
        .psql("SELECT count(*) FROM deliveries WHERE state = 'done'")
        .trim()
        .parse()
        .expect("count");
    assert_eq!(done, 20);

    // The admin CLI reads the same database.
    wait_for(WAIT, "spool ls to show 20 done", || {
        (a.items("done").len() == 20).then_some(())
    });
    let stats = a.spool_stats();
    let nodes: BTreeMap<String, bool> = stats["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["node"].as_str().unwrap_or_default().to_string(),
                i["alive"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(nodes.get("a"), Some(&true), "{stats}");

    let ready = common::request(a.addr(), "GET", "/readyz", &[], b"").expect("readyz");
    assert_eq!(ready.status, 200);
    a.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(a.wait_exit(WAIT).success(), "{}", a.log_text());
}

#[test]
fn n_nodes_draining_one_backlog_never_overlap_attempts_of_an_item() {
    const N: usize = 300;
    const CLIENTS: usize = 6;
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let names = ["a", "b", "c"];
    // Each node its own upstream, 2 ms per attempt, held until the backlog is in.
    let ups: Vec<checker::Upstream> = names
        .iter()
        .map(|_| checker::Upstream::start(Duration::from_millis(2)))
        .collect();
    for up in &ups {
        up.gate.hold_all.store(true, Ordering::SeqCst);
    }
    let mut nodes: Vec<Hookd> = names
        .iter()
        .zip(&ups)
        .map(|(n, up)| {
            node_with(
                tmp.path(),
                &pg.url(),
                n,
                &up.url(),
                "30s",
                &format!("concurrency = 4\n{QUICK_RETRY}"),
                "",
            )
        })
        .collect();
    for h in &mut nodes {
        h.start();
    }

    // The backlog: N webhooks from CLIENTS threads, spread over every node.
    let acked: Mutex<Vec<i64>> = Mutex::default();
    let refused: Mutex<Vec<String>> = Mutex::default();
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let (nodes, acked, refused) = (&nodes, &acked, &refused);
            s.spawn(move || {
                for i in (t..N).step_by(CLIENTS) {
                    match post_cid(&nodes[i % nodes.len()], &format!("backlog-{i}")) {
                        Ok(id) => acked.lock().unwrap().push(id),
                        Err(e) => refused.lock().unwrap().push(e),
                    }
                }
            });
        }
    });
    let acked: HashSet<i64> = acked.into_inner().unwrap().into_iter().collect();
    let refused = refused.into_inner().unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(acked.len(), N);
    let held: usize = ups.iter().map(|u| u.gate.held().len()).sum();

    let released = Instant::now();
    for up in &ups {
        up.gate.hold_all.store(false, Ordering::SeqCst);
    }
    let named: Vec<(&str, &checker::Upstream)> = names.iter().copied().zip(&ups).collect();
    wait_for(Duration::from_secs(60), "every acked id delivered", || {
        let got: HashSet<i64> = attempts(&named).iter().map(|a| a.id).collect();
        acked.is_subset(&got).then_some(())
    });
    let drained_in = released.elapsed();
    // Answers still on their way are logged as soon as they are written.
    wait_for(WAIT, "nothing open in the spool", || {
        (count(
            &pg,
            "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'leased')",
        ) == 0)
            .then_some(())
    });

    let all = attempts(&named);
    let overlaps = overlapping(&all);
    assert!(overlaps.is_empty(), "overlapping attempts: {overlaps:#?}");
    let got: HashSet<i64> = all.iter().map(|a| a.id).collect();
    assert!(got.is_subset(&acked), "delivered ids nobody acked");
    let per_node: BTreeMap<&str, usize> = names
        .iter()
        .map(|n| {
            let ids: HashSet<i64> = all.iter().filter(|a| a.node == *n).map(|a| a.id).collect();
            (*n, ids.len())
        })
        .collect();
    println!(
        "{N} webhooks on 3 nodes: {held} attempts held while the backlog built; drained in \
         {drained_in:?} after release; {} attempts, {} ids attempted twice; per node {per_node:?}",
        all.len(),
        repeated(&all).len()
    );
    // Each node took part in the drain, not only in the held first attempts.
    for (n, c) in &per_node {
        assert!(*c > 4, "node {n} delivered only {c}: {per_node:?}");
    }
    for h in &mut nodes {
        h.signal(Signal::SIGTERM);
        assert!(h.wait_exit(WAIT).success(), "{}", h.log_text());
    }
}

#[test]
fn an_ordered_hook_fed_from_every_node_is_delivered_in_strict_order_never_two_at_once() {
    const N: usize = 60;
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let names = ["a", "b", "c"];
    // 5 ms per attempt: long enough that a second attempt started by
    // another node while one runs would be seen overlapping it.
    let ups: Vec<checker::Upstream> = names
        .iter()
        .map(|_| checker::Upstream::start(Duration::from_millis(5)))
        .collect();
    let mut nodes: Vec<Hookd> = names
        .iter()
        .zip(&ups)
        .map(|(n, up)| {
            node_with(
                tmp.path(),
                &pg.url(),
                n,
                &up.url(),
                "10s",
                &format!("ordered = true\n{QUICK_RETRY}"),
                "",
            )
        })
        .collect();
    for h in &mut nodes {
        h.start();
    }

    // Round-robin over the nodes, each 202 before the next post: the
    // acknowledgement order is the order hookd promised. The first half
    // waits behind a held first attempt, so a backlog fed by every node is
    // there when the gate opens. Then the node holding that attempt is
    // stopped (it finishes the attempt in its drain and claims nothing
    // more), so the rest of the backlog passes to the other nodes; the
    // second half is posted to those while they drain it.
    for up in &ups {
        up.gate.hold_all.store(true, Ordering::SeqCst);
    }
    let mut acked = Vec::new();
    let mut feeding: Vec<usize> = (0..nodes.len()).collect();
    let mut stopped = None;
    for i in 0..N {
        if i == N / 2 {
            let held = || ups.iter().map(|u| u.gate.held().len()).sum::<usize>();
            wait_for(WAIT, "the head's attempt at the gate", || {
                (held() > 0).then_some(())
            });
            assert_eq!(held(), 1, "an ordered hook runs one attempt at a time");
            let k = (0..ups.len())
                .find(|&k| !ups[k].gate.held().is_empty())
                .expect("a node holds the head");
            nodes[k].signal(Signal::SIGTERM);
            nodes[k].notify.wait_line("STOPPING=1", WAIT);
            feeding.retain(|&n| n != k);
            stopped = Some(k);
            for up in &ups {
                up.gate.hold_all.store(false, Ordering::SeqCst);
            }
        }
        let to = feeding[i % feeding.len()];
        let id = post_cid(&nodes[to], &format!("ordered-{i}"))
            .unwrap_or_else(|e| panic!("post {i}: {e}"));
        acked.push(id);
    }
    let stopped = stopped.expect("a node was stopped");
    assert!(
        nodes[stopped].wait_exit(WAIT).success(),
        "{}",
        nodes[stopped].log_text()
    );
    let named: Vec<(&str, &checker::Upstream)> = names.iter().copied().zip(&ups).collect();
    wait_for(Duration::from_secs(60), "every acked id delivered", || {
        let got: HashSet<i64> = attempts(&named).iter().map(|a| a.id).collect();
        acked.iter().all(|i| got.contains(i)).then_some(())
    });

    let all = attempts(&named);
    // Never two in flight: each attempt starts after the one before ended.
    let at_once: Vec<(&Attempt, &Attempt)> = all
        .windows(2)
        .filter(|w| w[1].start < w[0].end)
        .map(|w| (&w[0], &w[1]))
        .collect();
    assert!(
        at_once.is_empty(),
        "two attempts in flight at once: {at_once:#?}"
    );
    // In acknowledgement order (a retry repeats an id in place; none here).
    let mut seen: Vec<i64> = all.iter().map(|a| a.id).collect();
    seen.dedup();
    assert_eq!(seen, acked, "delivery order is not acknowledgement order");
    let per_node: BTreeMap<&str, usize> = names
        .iter()
        .map(|n| (*n, all.iter().filter(|a| a.node == *n).count()))
        .collect();
    println!(
        "ordered: {N} webhooks posted round-robin, {} attempts in order; per node {per_node:?}; \
         ids as acked (node-chosen blocks, not in commit order): {:?}..",
        all.len(),
        &acked[..6]
    );
    let by_others = all.iter().filter(|a| a.node != names[stopped]).count();
    assert!(
        by_others > 0,
        "nothing passed to the other nodes: {per_node:?}"
    );
    for (k, h) in nodes.iter_mut().enumerate() {
        if k != stopped {
            h.signal(Signal::SIGTERM);
            assert!(h.wait_exit(WAIT).success(), "{}", h.log_text());
        }
    }
}

#[test]
fn sigkill_of_a_node_holding_leases_loses_nothing_and_the_others_deliver_within_lease_plus_2s() {
    const N: usize = 20;
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let names = ["a", "b", "c"];
    let ups: Vec<checker::Upstream> = names
        .iter()
        .map(|_| checker::Upstream::start(Duration::from_millis(1)))
        .collect();
    // Node a's attempts are held at its upstream: it is killed holding them.
    ups[0].gate.hold_all.store(true, Ordering::SeqCst);
    // The lease of a's claims is a's timeout plus the margin; a's timeout
    // short, but long enough that its held attempts do not time out first.
    let a_timeout = Duration::from_secs(5);
    let lease = a_timeout + LEASE_MARGIN;
    let mut nodes: Vec<Hookd> = names
        .iter()
        .zip(&ups)
        .map(|(n, up)| {
            let timeout = if *n == "a" { "5s" } else { "10s" };
            node_with(
                tmp.path(),
                &pg.url(),
                n,
                &up.url(),
                timeout,
                &format!("concurrency = 4\n{QUICK_RETRY}"),
                "",
            )
        })
        .collect();
    for h in &mut nodes {
        h.start();
    }
    let a_instance = instances_of(&pg, "a");
    assert_eq!(a_instance.len(), 1, "{a_instance:?}");

    // Posts to a until it holds as many attempts as its concurrency allows
    // (its arrivals wake it at once; b and c may still take one at a poll
    // and deliver it), then some to b and c, which a has no slot left for.
    let mut acked = HashSet::new();
    let mut n = 0;
    for _ in 0..40 {
        if ups[0].gate.held().len() >= 4 {
            break;
        }
        acked.insert(post_cid(&nodes[0], &format!("kill-{n}")).expect("post to a"));
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(WAIT, "node a to hold 4 attempts", || {
        (ups[0].gate.held().len() == 4).then_some(())
    });
    for i in 0..8 {
        acked.insert(post_cid(&nodes[1 + i % 2], &format!("kill-{n}")).expect("post to b, c"));
        n += 1;
    }

    nodes[0].signal(Signal::SIGKILL);
    let killed = Instant::now();
    let st = nodes[0].wait_exit(WAIT);
    assert!(!st.success(), "SIGKILL but {st}");
    // What a held when it died: leases under its instance id (their answers,
    // let go now, reach nobody).
    let held_leases = count(
        &pg,
        &format!(
            "SELECT count(*) FROM deliveries WHERE state = 'leased' AND lease_owner = '{}'",
            a_instance[0]
        ),
    );
    ups[0].gate.hold_all.store(false, Ordering::SeqCst);
    assert_eq!(held_leases, 4, "a's leases at the kill");
    // b and c go on acknowledging.
    for i in 0..N {
        let id = post_cid(&nodes[1 + i % 2], &format!("kill-{n}"))
            .unwrap_or_else(|e| panic!("post {n} after the kill: {e}"));
        acked.insert(id);
        n += 1;
    }

    // Everything acked is delivered by b and c, a's leased items once the
    // leases run out, all by the kill + lease + 2 s.
    let others = [(names[1], &ups[1]), (names[2], &ups[2])];
    let limit = lease + Duration::from_secs(2);
    let left = limit.saturating_sub(killed.elapsed());
    wait_for(left, "every acked id delivered by b and c", || {
        let got: HashSet<i64> = attempts(&others).iter().map(|a| a.id).collect();
        acked.is_subset(&got).then_some(())
    });
    let redelivered_in = killed.elapsed();
    assert!(redelivered_in <= limit, "{redelivered_in:?} > {limit:?}");

    let named: Vec<(&str, &checker::Upstream)> = names.iter().copied().zip(&ups).collect();
    let all = attempts(&named);
    let twice = repeated(&all);
    assert!(
        twice.len() as i64 <= held_leases,
        "{} ids attempted twice, a held {held_leases} leases: {twice:?}",
        twice.len()
    );
    let overlaps = overlapping(&all);
    assert!(overlaps.is_empty(), "overlapping attempts: {overlaps:#?}");
    println!(
        "SIGKILL of a holding {held_leases} leases (lease {lease:?}): everything delivered \
         {redelivered_in:?} after the kill; {} ids attempted twice",
        twice.len()
    );
    for h in &mut nodes[1..] {
        h.signal(Signal::SIGTERM);
        assert!(h.wait_exit(WAIT).success(), "{}", h.log_text());
    }
}

/// What the load's clients got, per node: acked ids and failures (a
/// refused or reset connection, or any answer but 202).
#[derive(Default)]
struct Outcomes {
    acked: Mutex<Vec<(usize, i64)>>,
    failed: Mutex<Vec<(usize, String)>>,
}

#[test]
fn reload_hand_off_and_drain_per_node_against_postgres() {
    common::subreaper();
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let names = ["a", "b"];
    let ups: Vec<checker::Upstream> = names
        .iter()
        .map(|_| checker::Upstream::start(Duration::from_millis(1)))
        .collect();
    // A drain gives running deliveries 1 s, then 1 s more, then releases them.
    let mut nodes: Vec<Hookd> = names
        .iter()
        .zip(&ups)
        .map(|(n, up)| {
            node_with(
                tmp.path(),
                &pg.url(),
                n,
                &up.url(),
                "10s",
                &format!("concurrency = 4\n{QUICK_RETRY}"),
                "[shutdown]\ngrace = \"1s\"\n",
            )
        })
        .collect();
    for h in &mut nodes {
        h.start();
    }
    let named: Vec<(&str, &checker::Upstream)> = names.iter().copied().zip(&ups).collect();

    // 1. Traffic to both nodes (two clients each) across a hand-off of a.
    let out = Outcomes::default();
    let stop = AtomicBool::new(false);
    let addrs: Vec<_> = nodes.iter().map(|h| h.addr()).collect();
    let successor = std::thread::scope(|s| {
        for t in 0..4 {
            let (out, stop, addr) = (&out, &stop, addrs[t % 2]);
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                for i in 0..20_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    let body = format!("{{\"cid\":\"load-{t}-{i}\"}}");
                    match post_gh(addr, body.as_bytes()) {
                        Ok(r) if r.status == 202 => match r.json()["id"].as_i64() {
                            Some(id) => out.acked.lock().unwrap().push((t % 2, id)),
                            None => out.failed.lock().unwrap().push((t % 2, "no id".into())),
                        },
                        Ok(r) => out
                            .failed
                            .lock()
                            .unwrap()
                            .push((t % 2, format!("status {}", r.status))),
                        Err(e) => out.failed.lock().unwrap().push((t % 2, e.to_string())),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        let acks_on = |n: usize| {
            out.acked
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k == n)
                .count()
        };
        wait_for(WAIT, "load on both nodes", || {
            (acks_on(0) >= 50 && acks_on(1) >= 50).then_some(())
        });
        nodes[0].signal(Signal::SIGHUP);
        let successor = wait_for(WAIT, "MAINPID= of a's successor", || {
            nodes[0]
                .notify
                .lines_with("MAINPID=")
                .first()
                .map(|(_, l)| l["MAINPID=".len()..].parse::<i32>().expect("a pid"))
        });
        let before = acks_on(0);
        let old = nodes[0].wait_exit(WAIT);
        assert_eq!(old.code(), Some(0), "{}", nodes[0].log_text());
        // The successor serves on the same sockets.
        wait_for(WAIT, "load answered by a's successor", || {
            (acks_on(0) >= before + 50).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        successor
    });
    let failed = out.failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "failed or refused across the hand-off: {failed:?}"
    );
    let mut acked: HashSet<i64> = out
        .acked
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    wait_for(WAIT, "every acked id delivered", || {
        let got: HashSet<i64> = attempts(&named).iter().map(|a| a.id).collect();
        acked.is_subset(&got).then_some(())
    });
    let a_instances = instances_of(&pg, "a");
    assert_eq!(
        a_instances.len(),
        1,
        "the old a unregistered: {a_instances:?}"
    );
    let through_handoff = acked.len();

    // 2. b drains with deliveries in flight (held at its upstream).
    let (code, text, err) = nodes[1].cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let b_instance = serde_json::from_str::<serde_json::Value>(&text).expect("status json")
        ["instance"]
        .as_str()
        .expect("instance")
        .to_string();
    ups[1].gate.hold_all.store(true, Ordering::SeqCst);
    let mut to_b = HashSet::new();
    for i in 0..20 {
        if ups[1].gate.held().len() >= 2 {
            break;
        }
        to_b.insert(post_cid(&nodes[1], &format!("held-{i}")).expect("post to b"));
        std::thread::sleep(Duration::from_millis(50));
    }
    acked.extend(&to_b);
    wait_for(WAIT, "two of b's attempts held", || {
        (ups[1].gate.held().len() >= 2).then_some(())
    });
    let in_flight_at_b = count(
        &pg,
        &format!(
            "SELECT count(*) FROM deliveries WHERE state = 'leased' AND lease_owner = '{b_instance}'"
        ),
    );
    assert!(in_flight_at_b >= 2, "b holds {in_flight_at_b} leases");

    nodes[1].signal(Signal::SIGTERM);
    let term = Instant::now();
    // a keeps serving while b drains.
    let mut during = Vec::new();
    for i in 0..5 {
        let id = post_cid(&nodes[0], &format!("during-{i}")).expect("a serves during b's drain");
        during.push(id);
        acked.insert(id);
    }
    wait_for(WAIT, "what a took during b's drain delivered", || {
        let got: HashSet<i64> = attempts(&named[..1]).iter().map(|a| a.id).collect();
        during.iter().all(|i| got.contains(i)).then_some(())
    });
    let st = nodes[1].wait_exit(WAIT);
    let drained_in = term.elapsed();
    // Held past both windows: abandoned, exit 1, leases given back.
    assert_eq!(st.code(), Some(1), "{}", nodes[1].log_text());
    assert!(
        nodes[1].log_text().contains("delivery_abandoned"),
        "{}",
        nodes[1].log_text()
    );
    let left = count(
        &pg,
        &format!("SELECT count(*) FROM deliveries WHERE lease_owner = '{b_instance}'"),
    );
    assert_eq!(left, 0, "b's leases are released, not left to expire");
    let exited = Instant::now();
    // b's held attempts got no answer: a delivers those items (and any b
    // had not claimed yet) as soon as it polls, long before a lease expires.
    let b_answered: HashSet<i64> = ups[1]
        .deliveries()
        .iter()
        .filter_map(|d| d.hookd_id)
        .collect();
    let for_a: HashSet<i64> = to_b.difference(&b_answered).copied().collect();
    wait_for(
        Duration::from_secs(20),
        "b's released items delivered by a",
        || {
            let got: HashSet<i64> = attempts(&named[..1]).iter().map(|a| a.id).collect();
            for_a.is_subset(&got).then_some(())
        },
    );
    let taken_over_in = exited.elapsed();
    ups[1].gate.hold_all.store(false, Ordering::SeqCst);
    wait_for(WAIT, "every acked id delivered", || {
        let got: HashSet<i64> = attempts(&named).iter().map(|a| a.id).collect();
        acked.is_subset(&got).then_some(())
    });
    println!(
        "hand-off of a under load: {through_handoff} acked, 0 failed; drain of b with \
         {in_flight_at_b} in flight: exit after {drained_in:?}, its items delivered by a \
         {taken_over_in:?} later (lease would be {:?})",
        Duration::from_secs(10) + LEASE_MARGIN
    );
    let st = common::stop_successor(successor, WAIT);
    assert_eq!(
        st,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(successor), 0)
    );
}

#[test]
fn hookd_status_and_spool_commands_work_against_postgres() {
    let pg = Pg::start_new();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Fails "doomed" webhooks while `broken` is set; one attempt each, so
    // such an item is dead at once.
    let broken = Arc::new(AtomicBool::new(true));
    let b2 = broken.clone();
    let up = Upstream::start(Arc::new(move |_, r| {
        let doomed = String::from_utf8_lossy(&r.body).contains("doomed");
        let status = if doomed && b2.load(Ordering::SeqCst) {
            500
        } else {
            200
        };
        (status, Duration::ZERO)
    }));
    let retry = "retry = { max_attempts = 1 }";
    let mut a = node(tmp.path(), &pg.url(), "a", &up.url(), retry);
    let mut b = node(tmp.path(), &pg.url(), "b", &up.url(), retry);
    a.start();
    b.start();

    // `hookd status` (the control socket) on each node names the node and
    // the PostgreSQL spool, never its password.
    for (h, name) in [(&a, "a"), (&b, "b")] {
        let (code, out, err) = h.cli(&["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        let st: serde_json::Value = serde_json::from_str(&out).expect("status json");
        assert_eq!(st["node"].as_str(), Some(name), "{st}");
        let spool = st["spool"].as_str().expect("spool");
        assert!(spool.starts_with("postgres://hookd@127.0.0.1:"), "{spool}");
        assert!(
            !out.contains(pg.password()),
            "status shows the password: {out}"
        );
        let instance = st["instance"].as_str().expect("instance").to_string();
        assert_eq!(instances_of(&pg, name), vec![instance], "{st}");
        let (code, text, err) = h.cli(&["status"]);
        assert_eq!(code, 0, "{err}");
        assert!(text.contains(&format!("\nnode:     {name}\n")), "{text}");
        assert!(text.contains("spool:    postgres://hookd@"), "{text}");
    }

    let mut ok = Vec::new();
    for i in 0..3 {
        ok.push(post_cid(&a, &format!("fine-{i}")).expect("post"));
    }
    let doomed = post_cid(&b, "doomed").expect("post");
    wait_for(WAIT, "the doomed item dead, the others done", || {
        (a.items("dead").len() == 1 && a.items("done").len() == 3).then_some(())
    });

    // ls: every item, from either node's config (one database).
    let dead = b.items("dead");
    assert_eq!(dead[0]["id"].as_i64(), Some(doomed), "{dead:?}");
    let (code, out, err) = a.cli(&["spool", "ls", "--json"]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).expect("ls json");
    let mut ids: Vec<i64> = all.iter().filter_map(|i| i["id"].as_i64()).collect();
    ids.sort_unstable();
    let mut want = ok.clone();
    want.push(doomed);
    want.sort_unstable();
    assert_eq!(ids, want, "{out}");

    // show: the dead item with its error and body.
    let (code, out, err) = a.cli(&["spool", "show", &doomed.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let item: serde_json::Value = serde_json::from_str(&out).expect("show json");
    assert_eq!(item["state"].as_str(), Some("dead"), "{item}");
    assert_eq!(item["attempts"].as_i64(), Some(1), "{item}");
    assert!(
        item["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{item}"
    );
    assert!(
        item["body"].as_str().is_some_and(|b| b.contains("doomed")),
        "{item}"
    );
    let (code, text, err) = a.cli(&["spool", "show", &doomed.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("state:        dead"), "{text}");

    // stats: counts over both nodes, and both nodes' processes alive.
    let stats = a.spool_stats();
    assert_eq!(stats["total"].as_u64(), Some(4), "{stats}");
    let alive: BTreeMap<String, bool> = stats["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["node"].as_str().unwrap_or_default().to_string(),
                i["alive"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        alive,
        BTreeMap::from([("a".to_string(), true), ("b".to_string(), true)]),
        "{stats}"
    );
    let (code, text, err) = b.cli(&["spool", "stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("items:    4"), "{text}");
    assert!(
        text.contains(" node a ") && text.contains(" node b "),
        "{text}"
    );

    // retry: the dead item is pending again and a node delivers it.
    broken.store(false, Ordering::SeqCst);
    let (code, out, err) = a.cli(&["spool", "retry", &doomed.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("{doomed} is pending again"));
    wait_for(WAIT, "the retried item delivered", || {
        (up.ids().iter().filter(|&&i| i == doomed).count() == 2).then_some(())
    });
    wait_for(WAIT, "the retried item done", || {
        let done = b.items("done");
        done.iter()
            .any(|i| i["id"].as_i64() == Some(doomed))
            .then_some(())
    });
    assert!(b.items("dead").is_empty());

    for h in [&mut a, &mut b] {
        h.signal(Signal::SIGTERM);
        assert!(h.wait_exit(WAIT).success(), "{}", h.log_text());
    }
}
