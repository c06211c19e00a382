//! The one checker every fault scenario ends with.
//!
//! Clients send webhooks with unique delivery ids (the hook's dedup header)
//! and log what each got back; a real upstream on 127.0.0.1 logs every
//! delivery with a hash of its body and when it started and ended. After the
//! scenario, a clean restart drains the spool, and the logs are compared:
//! what was acked must have been delivered, nothing else may appear, nothing
//! refused with a 4xx may be delivered, bodies and ids must match, and no two
//! attempts of one item may overlap.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::common::{forward_hook, github_sig, request, wait_for, Hookd};

/// The dedup header the campaign's hook is configured with.
pub const DEDUP: &str = "X-GitHub-Delivery";

/// The run's seed: `HOOKD_TEST_SEED` replays a run, else a fresh one.
pub fn seed() -> u64 {
    match std::env::var("HOOKD_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("HOOKD_TEST_SEED={s:?} is not a u64: {e}")),
        Err(_) => rand::random(),
    }
}

/// A count from the environment (for the soak), else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={s:?} is not a count: {e}")),
        Err(_) => default,
    }
}

fn hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// What one client request got.
#[derive(Debug, Clone)]
pub struct Sent {
    pub cid: String,
    pub hash: [u8; 32],
    /// 0: no answer (connection refused, reset or timed out).
    pub status: u16,
    pub id: Option<i64>,
    pub retry_after: Option<String>,
    pub sent: Instant,
    pub answered: Instant,
}

/// One delivery the upstream received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub cid: Option<String>,
    pub hookd_id: Option<i64>,
    pub hash: [u8; 32],
    pub start: Instant,
    pub end: Instant,
}

/// A real HTTP/1.1 server on 127.0.0.1 answering 200 after `delay`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Delivery>>>,
    /// Holds deliveries at the upstream until the scenario lets them go
    /// (only `fault_handoff.rs` uses it; each test binary builds this file).
    #[allow(dead_code)]
    pub gate: Arc<Gate>,
}

/// Longest a delivery is held at the [`Gate`]: a scenario that forgets to
/// open it gets its answers late, not never.
const GATE_LIMIT: Duration = Duration::from_secs(180);

/// Holds deliveries before they are answered, so a scenario can pin down
/// who holds a lease (a paused instance, its successor). Open by default.
#[derive(Default)]
pub struct Gate {
    /// Hold every delivery while set.
    pub hold_all: AtomicBool,
    /// Hold first deliveries of these cids.
    pub hold_first_of: Mutex<HashSet<String>>,
    /// Hold repeated deliveries (the cid arrived before) of these cids.
    pub hold_repeats_of: Mutex<HashSet<String>>,
    seen: Mutex<HashSet<String>>,
    held: Mutex<Vec<(String, bool)>>,
}

// Used by fault_handoff.rs only.
#[allow(dead_code)]
impl Gate {
    /// The cids being held right now (one entry per held delivery).
    pub fn held(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// The cids of held repeated deliveries (the cid arrived before).
    pub fn held_repeats(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, repeat)| *repeat)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Waits, bounded by [`GATE_LIMIT`], while the gate holds this delivery.
    fn pass(&self, cid: Option<&str>) {
        let cid = cid.unwrap_or("");
        let repeat = !self.seen.lock().unwrap().insert(cid.to_string());
        let holds = || {
            let of = if repeat {
                &self.hold_repeats_of
            } else {
                &self.hold_first_of
            };
            self.hold_all.load(Ordering::SeqCst) || of.lock().unwrap().contains(cid)
        };
        if !holds() {
            return;
        }
        self.held.lock().unwrap().push((cid.to_string(), repeat));
        let start = Instant::now();
        while holds() && start.elapsed() < GATE_LIMIT {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut held = self.held.lock().unwrap();
        if let Some(i) = held.iter().position(|(c, r)| c == cid && *r == repeat) {
            held.remove(i);
        }
    }
}

impl Upstream {
    pub fn start(delay: Duration) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let addr = l.local_addr().expect("upstream address");
        let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let gate: Arc<Gate> = Arc::default();
        let (lg, gt) = (log.clone(), gate.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { break };
                let (lg, gt) = (lg.clone(), gt.clone());
                std::thread::spawn(move || serve(s, lg, delay, gt));
            }
        });
        Upstream { addr, log, gate }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }
}

/// Reads requests (Content-Length bodies) off one keep-alive connection.
fn serve(s: TcpStream, log: Arc<Mutex<Vec<Delivery>>>, delay: Duration, gate: Arc<Gate>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let start = Instant::now();
        let mut len = 0usize;
        let mut hookd_id = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                let v = v.trim();
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.parse().unwrap_or(0);
                } else if n.eq_ignore_ascii_case("hookd-delivery-id") {
                    hookd_id = v.parse().ok();
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let cid = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["cid"].as_str().map(str::to_string));
        gate.pass(cid.as_deref());
        std::thread::sleep(delay);
        let ok = w
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_ok();
        log.lock().unwrap().push(Delivery {
            cid,
            hookd_id,
            hash: hash(&body),
            start,
            end: Instant::now(),
        });
        if !ok {
            return;
        }
    }
}

/// Client threads posting signed webhooks until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a client thread panicked");
        }
    }
}

/// One scenario's run: its hookd, upstream, logs and report.
pub struct Run {
    pub name: &'static str,
    pub seed: u64,
    pub rng: StdRng,
    pub dir: tempfile::TempDir,
    pub h: Hookd,
    pub up: Upstream,
    pub spool: PathBuf,
    pub sent: Arc<Mutex<Vec<Sent>>>,
    next_cid: Arc<AtomicU64>,
    /// Moments a fault ended (restart begun, space freed): recovery is
    /// measured from them to the next 202.
    pub fault_ends: Vec<Instant>,
    /// Moments hookd was SIGKILLed ([`Run::kill`]): no attempt of the killed
    /// process runs after one, whatever the upstream still records.
    pub kills: Vec<Instant>,
    pub integrity: Vec<String>,
    /// The load's pause between requests per client thread.
    pub pace: Duration,
    pub pad: usize,
    /// Acked but dead after their last attempt, as the hook's retry policy
    /// says (a scenario checks that before it sets them): not lost.
    pub dead_by_policy: HashSet<String>,
}

/// The scenario's hook: GitHub signatures, dedup on the delivery header,
/// quick retries so a fault's failures are retried within the drain.
pub fn hook_toml(dir: &Path, url: &str) -> String {
    forward_hook(
        dir,
        "gh",
        url,
        &format!(
            "dedup_header = \"{DEDUP}\"\nconcurrency = 4\nretry = {{ max_attempts = 100, backoff = \"100ms\", max_backoff = \"1s\" }}"
        ),
    )
}

impl Run {
    /// A hookd configured in a new temp dir, not started. The seed is the
    /// run's seed mixed with the scenario's name, so each scenario replays alone.
    pub fn new(name: &'static str, run_seed: u64) -> Run {
        Run::with_upstream_delay(name, run_seed, Duration::from_millis(1))
    }

    /// Like `new`; the upstream takes `delay` per delivery, so a backlog
    /// builds up under load (more that a fault can lose).
    pub fn with_upstream_delay(name: &'static str, run_seed: u64, delay: Duration) -> Run {
        Run::with_hook(name, run_seed, delay, |dir, up, _| {
            hook_toml(dir, &up.url())
        })
    }

    /// Like `with_upstream_delay`, with the hook's config from `hook` (given
    /// the run's dir, its upstream and the scenario seed), e.g. to put a
    /// fault proxy in front of the upstream.
    pub fn with_hook(
        name: &'static str,
        run_seed: u64,
        delay: Duration,
        hook: impl FnOnce(&Path, &Upstream, u64) -> String,
    ) -> Run {
        let seed = run_seed
            ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        println!("[{name}] HOOKD_TEST_SEED={run_seed} (scenario seed {seed})");
        let dir = tempfile::tempdir().expect("temp dir");
        let up = Upstream::start(delay);
        let h = Hookd::configure(dir.path(), &hook(dir.path(), &up, seed));
        let spool = h.spool_path();
        Run {
            name,
            seed,
            rng: StdRng::seed_from_u64(seed),
            dir,
            h,
            up,
            spool,
            sent: Arc::default(),
            next_cid: Arc::default(),
            fault_ends: Vec::new(),
            kills: Vec::new(),
            integrity: Vec::new(),
            pace: Duration::from_millis(2),
            pad: 600,
            dead_by_policy: HashSet::new(),
        }
    }

    /// Moves the spool to `path` (e.g. onto a loop-mounted file system) by
    /// rewriting the config this run wrote.
    pub fn move_spool(&mut self, path: &Path) {
        let text = std::fs::read_to_string(&self.h.config).expect("read config");
        let old = format!("path = \"{}\"", self.spool.display());
        assert!(text.contains(&old), "config has no {old}");
        let text = text.replace(&old, &format!("path = \"{}\"", path.display()));
        std::fs::write(&self.h.config, text).expect("write config");
        self.spool = path.to_path_buf();
    }

    /// `threads` clients posting until `Load::stop`. Each request carries a
    /// fresh delivery id; a refused connection is logged as status 0 and the
    /// client goes on (the daemon may be restarting).
    pub fn load(&mut self, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = self.h.addr();
        let handles = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                let sent = self.sent.clone();
                let next = self.next_cid.clone();
                let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(t as u64 + 1));
                let (name, pace, pad) = (self.name, self.pace, self.pad);
                std::thread::spawn(move || {
                    // Bounded: a client stops after this many requests even if
                    // nobody stops it.
                    for _ in 0..1_000_000 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        let cid = format!("{}-{n}", name.replace(' ', "-"));
                        let len = rng.gen_range(pad / 2..pad * 2 + 1);
                        let body = format!("{{\"cid\":\"{cid}\",\"pad\":\"{}\"}}", "p".repeat(len));
                        let sig = github_sig(crate::common::SECRET, body.as_bytes());
                        let t0 = Instant::now();
                        let res = request(
                            addr,
                            "POST",
                            "/hooks/gh",
                            &[
                                ("X-Hub-Signature-256", &sig),
                                (DEDUP, &cid),
                                ("Content-Type", "application/json"),
                            ],
                            body.as_bytes(),
                        );
                        let answered = Instant::now();
                        let (status, id, retry_after) = match &res {
                            Ok(r) => (
                                r.status,
                                serde_json::from_slice::<serde_json::Value>(&r.body)
                                    .ok()
                                    .and_then(|v| v["id"].as_i64()),
                                r.header("retry-after").map(str::to_string),
                            ),
                            Err(_) => (0, None, None),
                        };
                        sent.lock().unwrap().push(Sent {
                            cid,
                            hash: hash(body.as_bytes()),
                            status,
                            id,
                            retry_after,
                            sent: t0,
                            answered,
                        });
                        if status == 0 {
                            // Down: do not spin on refused connects.
                            std::thread::sleep(Duration::from_millis(20));
                        } else {
                            std::thread::sleep(pace);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads: handles,
        }
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// The cid the load gives its `n`-th request (counting from 0).
    #[allow(dead_code)]
    pub fn cid(&self, n: u64) -> String {
        format!("{}-{n}", self.name.replace(' ', "-"))
    }

    /// How many requests the load has started so far.
    #[allow(dead_code)]
    pub fn started(&self) -> u64 {
        self.next_cid.load(Ordering::SeqCst)
    }

    pub fn acked(&self) -> usize {
        self.sent().iter().filter(|s| s.status == 202).count()
    }

    /// Waits until `n` more 202s than now arrived (bounded by `limit`).
    pub fn wait_acks(&self, n: usize, limit: Duration) {
        let base = self.acked();
        wait_for(limit, "202s under load", || {
            (self.acked() >= base + n).then_some(())
        });
    }

    /// `PRAGMA integrity_check` on a copy of the spool and its WAL (never the
    /// -shm, which a restart rebuilds), so the check cannot change what the
    /// next hookd opens. Records anything but `ok`.
    pub fn check_integrity(&mut self, when: &str) {
        let copy = tempfile::tempdir().expect("temp dir");
        let db = copy.path().join("copy.db");
        if !self.spool.exists() {
            return;
        }
        std::fs::copy(&self.spool, &db).expect("copy the spool");
        let wal = PathBuf::from(format!("{}-wal", self.spool.display()));
        if wal.exists() {
            std::fs::copy(&wal, copy.path().join("copy.db-wal")).expect("copy the WAL");
        }
        let res = rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)));
        match res {
            Ok(s) if s == "ok" => {}
            Ok(s) => self.integrity.push(format!("{when}: {s}")),
            Err(e) => self.integrity.push(format!("{when}: {e}")),
        }
    }

    /// Restarts after a fault: integrity check of what is on disk, then start
    /// and note the moment for the recovery time.
    pub fn restart(&mut self, when: &str) {
        self.check_integrity(when);
        self.fault_ends.push(Instant::now());
        self.h.start();
    }

    /// SIGKILLs hookd. Under the strace wrapper that is the traced hookd,
    /// and strace reaps it and exits by itself: killing strace too would
    /// leave the hookd a zombie nobody reaps here, which looks alive to
    /// the next start and keeps its leases until they expire.
    pub fn kill(&mut self) {
        let pid = self.h.pid();
        let traced = traced_children(pid);
        let targets = if traced.is_empty() { vec![pid] } else { traced };
        self.kills.push(Instant::now());
        for p in targets {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let st = self.h.wait_exit(Duration::from_secs(20));
        assert!(!st.success(), "SIGKILL but {st}");
    }

    /// The end of every scenario: hookd must be stopped already. A clean
    /// start (no fault layer), a full drain, a clean stop, then the report.
    pub fn finish(&mut self, fault: &str, load: &str) -> Report {
        assert!(self.h.child.is_none(), "finish wants hookd stopped");
        let t0 = Instant::now();
        self.h.env.clear();
        self.h.bin = PathBuf::from(crate::common::BIN);
        self.restart("before the final start");
        let acked: HashSet<String> = self
            .sent()
            .iter()
            .filter(|s| s.status == 202)
            .map(|s| s.cid.clone())
            .collect();
        // Drained: every acked id delivered and nothing open, or (when the
        // run lost some) nothing open for 3 s in a row: no more to come.
        let drained = (|| {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut empty_since: Option<Instant> = None;
            while Instant::now() < deadline {
                let delivered: HashSet<String> = self
                    .up
                    .deliveries()
                    .into_iter()
                    .filter_map(|d| d.cid)
                    .collect();
                let empty = self.open_items() == Some(0);
                if empty && acked.is_subset(&delivered) {
                    return true;
                }
                let since = *empty_since.get_or_insert_with(Instant::now);
                if !empty {
                    empty_since = None;
                } else if since.elapsed() > Duration::from_secs(3) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })();
        let drain_time = t0.elapsed();
        // HOOKD_FAULT_DEBUG=1 keeps each scenario's daemon log for a look.
        if std::env::var("HOOKD_FAULT_DEBUG").is_ok() {
            let keep = format!("/tmp/hookd-fault-{}.log", self.name.replace(' ', "-"));
            let _ = std::fs::copy(&self.h.log, &keep);
            println!("  [{}] daemon log kept in {keep}", self.name);
        }
        self.h.signal(nix::sys::signal::Signal::SIGTERM);
        let st = self.h.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "clean stop after the drain: {st}");
        println!(
            "  [{}] final restart and drain {} ms, stop {} ms",
            self.name,
            drain_time.as_millis(),
            (t0.elapsed() - drain_time).as_millis()
        );
        self.check_integrity("after the final stop");
        let r = self.report(fault, load, drained);
        r.print();
        r
    }

    /// Pending + leased items per `hookd spool stats`.
    pub fn open_items(&self) -> Option<u64> {
        let (code, out, _) = self.h.cli(&["spool", "stats", "--json"]);
        if code != 0 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        Some(
            v["depth"]
                .as_array()?
                .iter()
                .filter(|d| matches!(d["state"].as_str(), Some("pending" | "leased")))
                .filter_map(|d| d["count"].as_u64())
                .sum(),
        )
    }

    fn report(&self, fault: &str, load: &str, drained: bool) -> Report {
        let sent = self.sent();
        let dels = self.up.deliveries();
        let by_cid: HashMap<&str, &Sent> = sent.iter().map(|s| (s.cid.as_str(), s)).collect();
        let acked: HashSet<&str> = sent
            .iter()
            .filter(|s| s.status == 202)
            .map(|s| s.cid.as_str())
            .collect();
        let delivered: HashSet<&str> = dels.iter().filter_map(|d| d.cid.as_deref()).collect();
        let mut lost: Vec<String> = acked
            .difference(&delivered)
            .filter(|c| !self.dead_by_policy.contains(**c))
            .map(|s| s.to_string())
            .collect();
        lost.sort();
        let unexpected: Vec<String> = delivered
            .iter()
            .filter(|c| !by_cid.contains_key(*c))
            .map(|s| s.to_string())
            .collect();
        let rejected_delivered: Vec<String> = sent
            .iter()
            .filter(|s| (400..500).contains(&s.status) && delivered.contains(s.cid.as_str()))
            .map(|s| s.cid.clone())
            .collect();
        let mut corrupt = Vec::new();
        let mut ids_of: HashMap<&str, HashSet<i64>> = HashMap::new();
        for d in &dels {
            let Some(cid) = d.cid.as_deref() else {
                corrupt.push(format!("delivery {:?} without a cid", d.hookd_id));
                continue;
            };
            let Some(s) = by_cid.get(cid) else { continue };
            if s.hash != d.hash {
                corrupt.push(format!("{cid}: body hash differs"));
            }
            match (s.status, s.id, d.hookd_id) {
                (202, Some(a), Some(b)) if a != b => {
                    corrupt.push(format!("{cid}: acked as {a}, delivered as {b}"))
                }
                (_, _, None) => corrupt.push(format!("{cid}: no Hookd-Delivery-Id")),
                _ => {}
            }
            if let Some(id) = d.hookd_id {
                ids_of.entry(cid).or_default().insert(id);
            }
        }
        for (cid, ids) in &ids_of {
            if ids.len() > 1 {
                corrupt.push(format!("{cid}: delivered under ids {ids:?}"));
            }
        }
        let mut per: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for d in &dels {
            if let Some(c) = d.cid.as_deref() {
                per.entry(c).or_default().push(d);
            }
        }
        // An attempt ends at the latest when its process is killed: the
        // upstream still sleeps its delay and records a later end, and a
        // restart quicker than that delay would otherwise "overlap" an
        // attempt nobody runs any more (a power cut's restart takes ~15 ms,
        // the upstream's delay is 20 ms).
        let ended = |d: &Delivery| {
            (self.kills.iter())
                .filter(|&&k| k >= d.start)
                .min()
                .map_or(d.end, |&k| d.end.min(k))
        };
        let mut overlaps = 0;
        for v in per.values_mut() {
            v.sort_by_key(|d| d.start);
            overlaps += v.windows(2).filter(|w| w[1].start < ended(w[0])).count();
        }
        let refused_later_delivered = sent
            .iter()
            .filter(|s| (s.status == 0 || s.status >= 500) && delivered.contains(s.cid.as_str()))
            .count();
        let matched = dels.iter().filter(|d| d.cid.is_some()).count();
        let duplicates = matched.saturating_sub(delivered.len());
        let recovery = self
            .fault_ends
            .iter()
            .filter_map(|&t| {
                sent.iter()
                    .filter(|s| s.status == 202 && s.sent >= t)
                    .map(|s| s.answered.duration_since(t))
                    .min()
            })
            .max();
        Report {
            scenario: self.name.to_string(),
            fault: fault.to_string(),
            load: load.to_string(),
            seed: self.seed,
            sent: sent.len(),
            acked: acked.len(),
            status_503: sent.iter().filter(|s| s.status == 503).count(),
            no_answer: sent.iter().filter(|s| s.status == 0).count(),
            lost,
            unexpected,
            rejected_delivered,
            corrupt,
            integrity: self.integrity.clone(),
            overlaps,
            refused_later_delivered,
            duplicates,
            recovery,
            drained,
            dead_by_policy: self.dead_by_policy.len(),
        }
    }
}

/// The children of `pid` when it is strace (the traced hookd), else none.
pub fn traced_children(pid: i32) -> Vec<i32> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "strace" {
        return Vec::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Run {
    /// A failing scenario must not leave a traced hookd behind: the common
    /// guard kills strace only.
    fn drop(&mut self) {
        if let Some(c) = &self.h.child {
            for child in traced_children(c.id() as i32) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub scenario: String,
    pub fault: String,
    pub load: String,
    pub seed: u64,
    pub sent: usize,
    pub acked: usize,
    pub status_503: usize,
    pub no_answer: usize,
    pub lost: Vec<String>,
    pub unexpected: Vec<String>,
    pub rejected_delivered: Vec<String>,
    pub corrupt: Vec<String>,
    pub integrity: Vec<String>,
    pub overlaps: usize,
    /// Answered 503 or not at all, delivered anyway (allowed, reported).
    pub refused_later_delivered: usize,
    pub duplicates: usize,
    pub recovery: Option<Duration>,
    pub drained: bool,
    /// Acked, not delivered, dead by the retry policy (not lost).
    pub dead_by_policy: usize,
}

impl Report {
    pub fn dup_per_1k(&self) -> f64 {
        if self.acked == 0 {
            0.0
        } else {
            self.duplicates as f64 * 1000.0 / self.acked as f64
        }
    }

    pub fn print(&self) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            self.scenario,
            self.fault,
            self.load,
            self.acked,
            self.lost.len(),
            self.corrupt.len(),
            self.dup_per_1k(),
            self.recovery
                .map_or("-".to_string(), |d| format!("{} ms", d.as_millis()))
        );
        println!(
            "  [{}] seed {}: sent {}, 503 {}, no answer {}, refused-then-delivered {}, duplicates {}, overlaps {}, unexpected {}, rejected-delivered {}, dead by policy {}, integrity {:?}, drained {}",
            self.scenario,
            self.seed,
            self.sent,
            self.status_503,
            self.no_answer,
            self.refused_later_delivered,
            self.duplicates,
            self.overlaps,
            self.unexpected.len(),
            self.rejected_delivered.len(),
            self.dead_by_policy,
            self.integrity,
            self.drained
        );
    }

    /// Everything the campaign promises; panics with the first broken one.
    pub fn assert_clean(&self) {
        self.assert_clean_allowing_overlaps();
        assert_eq!(
            self.overlaps, 0,
            "[{}] overlapping attempts of one item",
            self.scenario
        );
    }

    /// Everything but overlaps, which a scenario that pauses an instance past
    /// its lease allows (and reports).
    pub fn assert_clean_allowing_overlaps(&self) {
        let few = |v: &[String]| v.iter().take(10).cloned().collect::<Vec<_>>();
        assert!(
            self.lost.is_empty(),
            "[{}] lost {} acked webhooks, e.g. {:?}",
            self.scenario,
            self.lost.len(),
            few(&self.lost)
        );
        assert!(
            self.unexpected.is_empty(),
            "[{}] delivered what nobody sent: {:?}",
            self.scenario,
            few(&self.unexpected)
        );
        assert!(
            self.rejected_delivered.is_empty(),
            "[{}] refused with 4xx but delivered: {:?}",
            self.scenario,
            few(&self.rejected_delivered)
        );
        assert!(
            self.corrupt.is_empty(),
            "[{}] corrupt deliveries: {:?}",
            self.scenario,
            few(&self.corrupt)
        );
        assert!(
            self.integrity.is_empty(),
            "[{}] integrity_check: {:?}",
            self.scenario,
            self.integrity
        );
        self.assert_drained_and_acked();
    }

    fn assert_drained_and_acked(&self) {
        assert!(
            self.drained,
            "[{}] the final drain did not finish",
            self.scenario
        );
        assert!(
            self.acked > 0,
            "[{}] no webhook was acked: the scenario tested nothing",
            self.scenario
        );
    }
}
