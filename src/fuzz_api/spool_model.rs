//! Target (d): the spool API against an in-memory model of what it promises.
//!
//! Each input is a list of operations (enqueue, claim, complete, retry_later,
//! mark_dead, release, a lease running out, close and reopen) run on a real
//! spool file and on the model; every answer, the depth table after every
//! step and the rows at the end must agree with the model. The same function
//! runs from `cargo test` with fixed seeds, so it guards every build.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::spool::{ClaimRequest, Enqueued, Item, ItemState, NewItem, Spool, SpoolOptions, Store};

const HOOKS: [&str; 2] = ["a", "b"];
/// Leases no test outlives: a lease ends only by an operation, or by the
/// `Expire` step, which backdates it.
const LEASE: Duration = Duration::from_secs(3600);
/// Operations in one input at most, so one input stays quick.
const MAX_OPS: usize = 64;

#[derive(Debug, Clone, Copy)]
enum Op {
    Enqueue {
        hook: usize,
        dedup: Option<u8>,
    },
    Claim {
        hook: usize,
        max: usize,
        ordered: bool,
    },
    Complete(u8),
    /// Due again at second `Some(k)` after the epoch (long past, so due now
    /// and sorted by k), or in an hour (`None`).
    RetryLater(u8, Option<u8>),
    MarkDead(u8),
    Release(u8),
    /// The lease of the picked item runs out.
    Expire(u8),
    Reopen,
}

fn decode(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(2)
        .take(MAX_OPS)
        .map(|c| {
            let (op, arg) = (c[0], c[1]);
            let hook = usize::from(arg & 1);
            match op % 9 {
                0 | 1 => Op::Enqueue {
                    hook,
                    dedup: (arg & 0x80 != 0).then_some((arg >> 1) & 3),
                },
                2 => Op::Claim {
                    hook,
                    max: usize::from((arg >> 1) & 3),
                    ordered: arg & 0x80 != 0,
                },
                3 => Op::Complete(arg),
                4 => Op::RetryLater(arg, (op & 0x80 != 0).then_some(arg >> 4)),
                5 => Op::MarkDead(arg),
                6 => Op::Release(arg),
                7 => Op::Expire(arg),
                _ => Op::Reopen,
            }
        })
        .collect()
}

/// When a pending item is due, in the spool's order (next_attempt, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// Retried to a time long past.
    Past(u8),
    /// Enqueued or revived by op `n`: due at that time, which grows with `n`
    /// (a revive waits for the next millisecond before and after, so no
    /// insert shares its time).
    At(usize),
    /// Retried to an hour from now.
    Later,
}

#[derive(Debug, Clone)]
struct Model {
    id: i64,
    hook: usize,
    dedup: Option<String>,
    body: Vec<u8>,
    state: ItemState,
    attempts: u32,
    due: Due,
    /// Leased, and the lease has run out.
    expired: bool,
    last_error: Option<String>,
}

struct Run<'a> {
    dir: &'a Path,
    rt: tokio::runtime::Runtime,
    spool: Option<Spool>,
    opens: u32,
    items: Vec<Model>,
}

impl Run<'_> {
    fn spool(&self) -> &Spool {
        self.spool.as_ref().expect("spool model: the spool is open")
    }

    fn open(&mut self) {
        self.opens += 1;
        let spool = Spool::open(SpoolOptions {
            store: Store::File(self.dir.join("spool.db")),
            instance_id: format!("model-{}-{}", std::process::id(), self.opens),
            max_batch: 64,
            on_commit: None,
        })
        .unwrap_or_else(|e| panic!("spool model: open: {e}"));
        self.spool = Some(spool);
    }

    fn close(&mut self) {
        if let Some(s) = self.spool.take() {
            self.rt.block_on(s.close());
        }
        // Closing hands every lease of this instance back.
        for m in &mut self.items {
            if m.state == ItemState::Leased {
                m.state = ItemState::Pending;
                m.expired = false;
            }
        }
    }

    fn pick(&self, arg: u8) -> Option<usize> {
        (!self.items.is_empty()).then(|| usize::from(arg) % self.items.len())
    }

    fn step(&mut self, n: usize, op: Op) {
        match op {
            Op::Enqueue { hook, dedup } => {
                let dedup = dedup.map(|d| format!("d{d}"));
                let body = format!("body {n}").into_bytes();
                let revive = self.items.iter().any(|m| {
                    m.hook == hook
                        && dedup.is_some()
                        && m.dedup == dedup
                        && m.state == ItemState::Dead
                });
                if revive {
                    next_millisecond();
                }
                let got = self
                    .rt
                    .block_on(self.spool().enqueue(NewItem {
                        hook: HOOKS[hook].to_string(),
                        dedup_id: dedup.clone(),
                        received_at: SystemTime::now(),
                        headers: vec![("x-n".into(), n.to_string().into_bytes())],
                        body: Bytes::from(body.clone()),
                        repeats: Default::default(),
                        filtered_until: None,
                        routes: None,
                        ordered: Vec::new(),
                    }))
                    .unwrap_or_else(|e| panic!("spool model: enqueue: {e}"));
                if revive {
                    next_millisecond();
                }
                let first = self
                    .items
                    .iter_mut()
                    .find(|m| m.hook == hook && dedup.is_some() && m.dedup == dedup);
                match (first, got) {
                    (Some(m), Enqueued::Revived(id)) if m.state == ItemState::Dead => {
                        assert_eq!(id, m.id, "revived");
                        m.state = ItemState::Pending;
                        m.attempts = 0;
                        m.due = Due::At(n);
                        m.last_error = None;
                    }
                    (Some(m), Enqueued::Duplicate(id)) if m.state != ItemState::Dead => {
                        assert_eq!(id, m.id, "duplicate of")
                    }
                    (None, Enqueued::New(id)) => {
                        let last = self.items.last().map_or(0, |m| m.id);
                        assert!(id > last, "new id {id} not above {last}");
                        self.items.push(Model {
                            id,
                            hook,
                            dedup,
                            body,
                            state: ItemState::Pending,
                            attempts: 0,
                            due: Due::At(n),
                            expired: false,
                            last_error: None,
                        });
                    }
                    (m, got) => panic!("enqueue answered {got:?}, model has {m:?}"),
                }
            }
            Op::Claim { hook, max, ordered } => {
                let want = self.claimable(hook, max, ordered);
                let got = self
                    .rt
                    .block_on(self.spool().claim(ClaimRequest {
                        hook: HOOKS[hook].to_string(),
                        route: None,
                        max,
                        ordered,
                        lease: LEASE,
                    }))
                    .unwrap_or_else(|e| panic!("spool model: claim: {e}"));
                let ids: Vec<i64> = got.iter().map(|i| i.id).collect();
                let want_ids: Vec<i64> = want.iter().map(|&i| self.items[i].id).collect();
                assert_eq!(ids, want_ids, "claim {hook} max {max} ordered {ordered}");
                let me = self.spool().instance_id().to_string();
                for (item, &i) in got.iter().zip(&want) {
                    self.check_claimed(item, &self.items[i], &me);
                    let m = &mut self.items[i];
                    m.state = ItemState::Leased;
                    m.expired = false;
                }
            }
            Op::Complete(arg) => {
                let Some(i) = self.pick(arg) else { return };
                let id = self.items[i].id;
                // What delivery uses; the writer's FIFO queue orders it before
                // the next call.
                self.spool()
                    .complete_detached(id)
                    .unwrap_or_else(|e| panic!("spool model: complete: {e}"));
                self.finish(i, ItemState::Done, None, None);
            }
            Op::RetryLater(arg, past) => {
                let Some(i) = self.pick(arg) else { return };
                let (at, due) = match past {
                    Some(k) => (UNIX_EPOCH + Duration::from_secs(u64::from(k)), Due::Past(k)),
                    None => (SystemTime::now() + LEASE, Due::Later),
                };
                let err = format!("retry {arg}");
                let id = self.items[i].id;
                self.rt
                    .block_on(self.spool().retry_later(id, at, &err))
                    .unwrap_or_else(|e| panic!("spool model: retry_later: {e}"));
                self.finish(i, ItemState::Pending, Some(err), Some(due));
            }
            Op::MarkDead(arg) => {
                let Some(i) = self.pick(arg) else { return };
                let err = format!("dead {arg}");
                let id = self.items[i].id;
                self.rt
                    .block_on(self.spool().mark_dead(id, &err))
                    .unwrap_or_else(|e| panic!("spool model: mark_dead: {e}"));
                self.finish(i, ItemState::Dead, Some(err), None);
            }
            Op::Release(arg) => {
                let Some(i) = self.pick(arg) else { return };
                let id = self.items[i].id;
                self.rt
                    .block_on(self.spool().release(id))
                    .unwrap_or_else(|e| panic!("spool model: release: {e}"));
                let m = &mut self.items[i];
                if m.state == ItemState::Leased {
                    m.state = ItemState::Pending;
                    m.expired = false;
                }
            }
            Op::Expire(arg) => {
                let Some(i) = self.pick(arg) else { return };
                if self.items[i].state != ItemState::Leased {
                    return;
                }
                let conn = self.raw();
                conn.execute(
                    "UPDATE items SET lease_expiry = 0 WHERE id = ?1",
                    [self.items[i].id],
                )
                .unwrap_or_else(|e| panic!("spool model: expire: {e}"));
                self.items[i].expired = true;
            }
            Op::Reopen => {
                self.close();
                self.open();
            }
        }
        self.check_depth();
        self.check_next_due();
    }

    /// Ends item `i`'s lease as the spool does: only if it is leased (by us:
    /// every lease in the model is this instance's), else nothing changes.
    fn finish(&mut self, i: usize, to: ItemState, err: Option<String>, due: Option<Due>) {
        let m = &mut self.items[i];
        if m.state != ItemState::Leased {
            return;
        }
        m.state = to;
        m.attempts += 1;
        m.expired = false;
        if err.is_some() {
            m.last_error = err;
        }
        if let Some(d) = due {
            m.due = d;
        }
    }

    /// Indexes of the items a claim leases, in the spool's order.
    fn claimable(&self, hook: usize, max: usize, ordered: bool) -> Vec<usize> {
        if max == 0 {
            return Vec::new();
        }
        let of_hook = || (0..self.items.len()).filter(move |&i| self.items[i].hook == hook);
        let due = |m: &Model| m.state == ItemState::Pending && m.due != Due::Later;
        if ordered {
            let live = of_hook().any(|i| {
                let m = &self.items[i];
                m.state == ItemState::Leased && !m.expired
            });
            if live {
                return Vec::new();
            }
            let head = of_hook()
                .find(|&i| matches!(self.items[i].state, ItemState::Pending | ItemState::Leased));
            return head
                .filter(|&i| self.items[i].state == ItemState::Leased || due(&self.items[i]))
                .into_iter()
                .collect();
        }
        let mut out: Vec<usize> = of_hook()
            .filter(|&i| self.items[i].state == ItemState::Leased && self.items[i].expired)
            .take(max)
            .collect();
        let mut pending: Vec<usize> = of_hook().filter(|&i| due(&self.items[i])).collect();
        pending.sort_by_key(|&i| (self.items[i].due, self.items[i].id));
        out.extend(pending.into_iter().take(max - out.len()));
        out
    }

    fn check_claimed(&self, item: &Item, m: &Model, me: &str) {
        assert_eq!(item.hook, HOOKS[m.hook], "hook of {}", m.id);
        assert_eq!(item.dedup_id, m.dedup, "dedup id of {}", m.id);
        assert_eq!(&item.body[..], &m.body[..], "body of {}", m.id);
        assert_eq!(item.attempts, m.attempts, "attempts of {}", m.id);
        assert_eq!(item.last_error, m.last_error, "last error of {}", m.id);
        assert_eq!(item.state, ItemState::Leased, "state of {}", m.id);
        assert_eq!(item.lease_owner.as_deref(), Some(me), "owner of {}", m.id);
    }

    fn check_depth(&self) {
        let mut got: Vec<(String, &'static str, u64)> = self
            .rt
            .block_on(self.spool().depth())
            .unwrap_or_else(|e| panic!("spool model: depth: {e}"))
            .into_iter()
            .map(|r| (r.hook, r.state.as_str(), r.count))
            .collect();
        got.sort();
        let mut want: Vec<(String, &'static str, u64)> = Vec::new();
        for m in &self.items {
            let key = (HOOKS[m.hook].to_string(), m.state.as_str());
            match want.iter_mut().find(|w| (&w.0, w.1) == (&key.0, key.1)) {
                Some(w) => w.2 += 1,
                None => want.push((key.0, key.1, 1)),
            }
        }
        want.sort();
        assert_eq!(got, want, "depth");
    }

    fn check_next_due(&self) {
        for (h, name) in HOOKS.iter().enumerate() {
            let got = self
                .rt
                .block_on(self.spool().next_due(name, None))
                .unwrap_or_else(|e| panic!("spool model: next_due: {e}"));
            let of_hook = self.items.iter().filter(|m| m.hook == h);
            let waits = of_hook.clone().any(|m| {
                m.state == ItemState::Leased
                    || (m.state == ItemState::Pending && m.due == Due::Later)
            });
            assert_eq!(got.is_some(), waits, "next_due({name}) = {got:?}");
            if of_hook.clone().any(|m| m.expired) {
                assert!(
                    got <= Some(SystemTime::now()),
                    "an expired lease is due now"
                );
            }
        }
    }

    fn raw(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.dir.join("spool.db"))
            .unwrap_or_else(|e| panic!("spool model: raw open: {e}"));
        conn.busy_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("spool model: busy_timeout: {e}"));
        conn
    }

    /// After the last close: the file is sound and every row is as modelled.
    fn check_rows(&self) {
        let conn = self.raw();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("spool model: integrity_check: {e}"));
        assert_eq!(ok, "ok", "integrity_check");
        let mut stmt = conn
            .prepare("SELECT id, state, attempts, lease_owner FROM items ORDER BY id")
            .unwrap_or_else(|e| panic!("spool model: select: {e}"));
        let rows: Vec<(i64, String, u32, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(|rows| rows.collect())
            .unwrap_or_else(|e| panic!("spool model: rows: {e}"));
        let want: Vec<(i64, String, u32, Option<String>)> = self
            .items
            .iter()
            .map(|m| (m.id, m.state.as_str().to_string(), m.attempts, None))
            .collect();
        assert_eq!(rows, want, "rows after close (no lease survives a close)");
    }
}

/// Waits (at most about 50 ms) until the wall clock's millisecond changes.
fn next_millisecond() {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let start = ms(SystemTime::now());
    for _ in 0..500 {
        if ms(SystemTime::now()) != start {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// One fuzz input, on a spool created in `dir` (an empty directory).
/// Panics when the spool and the model disagree.
pub fn spool_model(dir: &Path, data: &[u8]) {
    let ops = decode(data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("spool model: a tokio runtime");
    let mut run = Run {
        dir,
        rt,
        spool: None,
        opens: 0,
        items: Vec::new(),
    };
    run.open();
    for (n, op) in ops.into_iter().enumerate() {
        run.step(n, op);
    }
    run.close();
    run.check_rows();
}
