//! Crash safety: SIGKILL hookd at a random moment under concurrent load,
//! restart it on the same spool, and every id answered 202 is delivered.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

const THREADS: usize = 8;
const PER_THREAD: usize = 3000;

/// The seed of this run's random choices: `HOOKD_TEST_SEED` when set, so a
/// failure can be replayed, else a fresh one.
fn seed() -> u64 {
    match std::env::var("HOOKD_TEST_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("HOOKD_TEST_SEED={v:?} is not a u64: {e}")),
        Err(_) => rand::thread_rng().gen(),
    }
}

#[test]
fn every_acknowledged_webhook_survives_sigkill() {
    let seed = seed();
    println!("seed = {seed} (replay with HOOKD_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::ok();
    let mut h = Hookd::configure(
        dir.path(),
        &forward_hook(dir.path(), "gh", &up.url(), "concurrency = 8"),
    );
    h.start();

    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let addr = h.addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    let load: Vec<_> = (0..THREADS)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    if Instant::now() > deadline {
                        break;
                    }
                    let body = format!(
                        "{{\"thread\":{t},\"n\":{i},\"pad\":\"{}\"}}",
                        "x".repeat(900)
                    );
                    match post_gh(addr, body.as_bytes()) {
                        Ok(r) if r.status == 202 => {
                            acked.lock().unwrap().push(r.json()["id"].as_i64().unwrap())
                        }
                        Ok(r) => panic!("unexpected {} before the kill", r.status),
                        // The kill: connections refused or cut from here on.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    let kill_after = Duration::from_millis(rng.gen_range(300..1500));
    let started = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "load to reach the kill moment",
        || (started.elapsed() >= kill_after && !acked.lock().unwrap().is_empty()).then_some(()),
    );
    h.signal(nix::sys::signal::Signal::SIGKILL);
    let st = h.wait_exit(Duration::from_secs(10));
    assert!(!st.success());
    for t in load {
        t.join().unwrap();
    }
    let acked: HashSet<i64> = acked.lock().unwrap().iter().copied().collect();
    let delivered_before = up.ids().into_iter().collect::<HashSet<_>>().len();

    h.start();
    wait_for(
        Duration::from_secs(60),
        "every acked id to be delivered",
        || {
            let got: HashSet<i64> = up.ids().into_iter().collect();
            acked.is_subset(&got).then_some(())
        },
    );
    let all = up.ids();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    println!(
        "seed {seed}: killed after {kill_after:?}: acked {}, delivered before the kill {delivered_before}, delivered in all {} distinct, {} duplicate deliveries",
        acked.len(),
        distinct.len(),
        all.len() - distinct.len()
    );
    assert!(
        acked.len() > 10,
        "too little load before the kill: {} (seed = {seed})",
        acked.len()
    );
}
