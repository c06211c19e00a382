//! Several hookd nodes on one PostgreSQL spool, as real processes: each
//! node its own directory, config (`[spool] url`, its `node`), listener and
//! control socket; one throw-away cluster (`common/pg.rs`) they share.

mod common;

#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{forward_hook, wait_for, Hookd, Upstream};
use pg::Pg;

/// Every wait here ends by this deadline.
const WAIT: Duration = Duration::from_secs(30);

/// Node `name` on `url`, in `root/name`, forwarding hook `gh` to `upstream`.
fn node(root: &Path, url: &str, name: &str, upstream: &str, hook_extra: &str) -> Hookd {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("node dir");
    let hooks = forward_hook(&dir, "gh", upstream, hook_extra);
    Hookd::configure_pg(&dir, url, name, "", &hooks)
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
