//! The PostgreSQL spool's group-commit writer: one thread per node process,
//! one dedicated connection, and for every batch of waiting commands one
//! transaction whose statements go out pipelined (each a whole-batch
//! `unnest` statement where it can), then every waiter is answered after
//! the COMMIT's answer only.
//!
//! A batch costs two or three round trips, not one per command: BEGIN with
//! the repeat keys' advisory locks and lookups (only when an item has a
//! dedup id or replay key; the locks make a repeat that reaches two nodes
//! at once one request) and
//! the ordered routes' sequence numbers; then the inserts, claims, finishes
//! and purges; then the batch's depth changes with COMMIT. Its one WAL
//! flush is shared by every command in it. A batch of new requests with no
//! repeat keys and no ordered route (most of ingest under load) is one
//! round trip: BEGIN, one statement for all of it, COMMIT
//! ([`PgWriter::write_ingest`]; hookd-pg / hookd-sqlite in one bench/pg.sh run
//! went 0.57 → 0.86 at 64 connections, BENCHMARKS.md).
//!
//! **A COMMIT whose outcome is unknown.** Each batch also sets the
//! instance row's `commit_seq` to the batch's own number. When the
//! connection fails once COMMIT may have been sent (an error that is not
//! the server's answer, or the batch outlasting `commit_limit`), the writer
//! connects again and reads `commit_seq` back: equal, the batch committed
//! and its waiters get their results; lower, it did not and they get the
//! error; unreachable, they get the error too (a 503 a sender retries,
//! never a 202 on a guess; a claim that did commit is a lease that runs
//! out and is delivered later: at-least-once).
//!
//! The thread blocks on the command channel between batches and runs each
//! batch on its own current-thread runtime, which also drives the
//! connection. Waiting for commands times out every [`POLL`]: then the
//! instance's heartbeat, and a wake-up of the delivery loops, since other
//! nodes' arrivals and finishes are not seen here otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::join_all;
use tokio::sync::{oneshot, Notify};
use tokio_postgres::{Client, Row, Statement};

use super::{schema, sql, PgOptions, FILTERED_ROUTE};
use crate::spool::codec::{decode_headers, encode_headers};
use crate::spool::instances;
use crate::spool::writer::{Cmd, Finish, Reply};
use crate::spool::{
    ClaimRequest, CommitObserver, DepthRow, Enqueued, Item, ItemState, Lease, NewItem,
    RouteDelivery, SpoolError, DEFAULT_ROUTE,
};

/// How often an idle writer beats its heartbeat and wakes the delivery
/// loops to look for other nodes' work.
pub(crate) const POLL: Duration = Duration::from_millis(500);

/// Most deliveries one purge command deletes (as SQLite's).
const PURGE_CHUNK: i64 = crate::spool::writer::PURGE_CHUNK as i64;

/// The writer's statements on its current connection.
struct Prepared {
    id_blocks: Statement,
    mark_commit: Statement,
    lock_repeats: Statement,
    find_dedup: Statement,
    ingest: Statement,
    find_replay: Statement,
    revive: Statement,
    take_seq: Statement,
    insert_requests: Statement,
    insert_deliveries: Statement,
    claim: Statement,
    claim_ordered: Statement,
    finish: Statement,
    purge_done: Statement,
    purge_empty: Statement,
    purge_filtered: Statement,
    add_depth: Statement,
    depth: Statement,
    next_due: Statement,
}

impl Prepared {
    async fn on(client: &Client) -> Result<Prepared, SpoolError> {
        Ok(Prepared {
            id_blocks: client.prepare(sql::ID_BLOCKS).await?,
            mark_commit: client.prepare(sql::MARK_COMMIT).await?,
            lock_repeats: client.prepare(sql::LOCK_REPEATS).await?,
            find_dedup: client.prepare(sql::FIND_DEDUP).await?,
            find_replay: client.prepare(sql::FIND_REPLAY).await?,
            revive: client.prepare(sql::REVIVE).await?,
            take_seq: client.prepare(sql::TAKE_SEQ).await?,
            insert_requests: client.prepare(sql::INSERT_REQUESTS).await?,
            insert_deliveries: client.prepare(sql::INSERT_DELIVERIES).await?,
            ingest: client.prepare(sql::INGEST).await?,
            claim: client.prepare(sql::CLAIM).await?,
            claim_ordered: client.prepare(sql::CLAIM_ORDERED).await?,
            finish: client.prepare(sql::FINISH).await?,
            purge_done: client.prepare(sql::PURGE_DONE).await?,
            purge_empty: client.prepare(sql::PURGE_EMPTY_REQUESTS).await?,
            purge_filtered: client.prepare(sql::PURGE_FILTERED).await?,
            add_depth: client.prepare(sql::ADD_DEPTH).await?,
            depth: client.prepare(sql::DEPTH).await?,
            next_due: client.prepare(sql::NEXT_DUE).await?,
        })
    }
}

struct Conn {
    client: Client,
    st: Prepared,
}

/// Everything a batch needs to know about the process it writes for.
pub(crate) struct PgWriter {
    opts: PgOptions,
    conn: Option<Conn>,
    instance_id: String,
    max_batch: usize,
    on_commit: Option<CommitObserver>,
    arrivals: Arc<Notify>,
    /// Set after each commit and heartbeat: did the database answer?
    reachable: Arc<AtomicBool>,
    /// Ids left in this process's blocks.
    ids: Vec<std::ops::Range<i64>>,
    /// The number the next batch writes to `commit_seq`.
    commit_seq: i64,
    last_beat: Instant,
    /// The results of the batch whose COMMIT is on its way: kept for
    /// [`PgWriter::resolve`] should its answer not arrive.
    pending_result: Option<(Written, bool)>,
}

/// Changes of depth, by (hook, route, state); route `""`: filtered requests.
#[derive(Default)]
struct Depth(BTreeMap<(String, String, &'static str), i64>);

impl Depth {
    fn add(&mut self, hook: &str, route: &str, state: &'static str, n: i64) {
        if n != 0 {
            *self
                .0
                .entry((hook.to_owned(), route.to_owned(), state))
                .or_default() += n;
        }
    }
}

/// The commands of one batch by kind, in arrival order within each kind.
#[derive(Default)]
struct Batch {
    enqueues: Vec<(NewItem, Reply<Enqueued>)>,
    claims: Vec<(ClaimRequest, Reply<Vec<Item>>)>,
    finishes: Vec<(Lease, Finish, Option<Reply<()>>)>,
    purges: Vec<(Duration, Reply<u64>)>,
    depths: Vec<Reply<Vec<DepthRow>>>,
    next_dues: Vec<(String, Option<String>, Reply<Option<SystemTime>>)>,
    close: Option<oneshot::Sender<()>>,
}

impl Batch {
    fn writes(&self) -> usize {
        self.enqueues.len() + self.claims.len() + self.finishes.len() + self.purges.len()
    }

    fn push(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Enqueue(item, r) => self.enqueues.push((item, r)),
            Cmd::Claim(req, r) => self.claims.push((req, r)),
            Cmd::Finish(lease, how, r) => self.finishes.push((lease, how, Some(r))),
            Cmd::CompleteDetached(lease) => self.finishes.push((lease, Finish::Complete, None)),
            Cmd::PurgeDone { older_than, reply } => self.purges.push((older_than, reply)),
            Cmd::Depth(r) => self.depths.push(r),
            Cmd::NextDue(hook, route, r) => self.next_dues.push((hook, route, r)),
            Cmd::Close(done) => self.close = Some(done),
        }
    }
}

/// What the write transaction produced, answered once it committed.
#[derive(Default)]
struct Written {
    enqueued: Vec<Enqueued>,
    claimed: Vec<Vec<Item>>,
    purged: Vec<u64>,
    /// Something became claimable: wake the delivery loops.
    wake: bool,
}

/// Where the write transaction got to, for telling a failure before COMMIT
/// (nothing kept) from one after it was sent (outcome unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    CommitSent,
}

impl PgWriter {
    /// Connects, migrates, registers the instance and frees the leases of
    /// this node's dead processes.
    pub(crate) async fn open(
        opts: PgOptions,
        instance_id: String,
        max_batch: usize,
        on_commit: Option<CommitObserver>,
        arrivals: Arc<Notify>,
        reachable: Arc<AtomicBool>,
    ) -> Result<PgWriter, SpoolError> {
        let mut client = (opts.connect)(opts.connect_timeout).await?;
        schema::migrate(&mut client).await?;
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        client
            .execute(sql::REGISTER, &[&instance_id, &opts.node, &pid])
            .await?;
        client.execute(sql::FORGET_LONG_GONE, &[]).await?;
        let mut freed = 0;
        for row in client
            .query(sql::SAME_NODE, &[&opts.node, &instance_id])
            .await?
        {
            let (id, pid): (String, i32) = (row.get(0), row.get(1));
            if instances::is_alive(pid.into(), None) {
                continue;
            }
            freed += release_owner(&client, &opts.node, &id).await?;
            client.execute(sql::UNREGISTER, &[&id]).await?;
        }
        if freed > 0 {
            tracing::info!(
                leases = freed,
                "spool: released leases of this node's processes that no longer run"
            );
        }
        let st = Prepared::on(&client).await?;
        Ok(PgWriter {
            opts,
            conn: Some(Conn { client, st }),
            instance_id,
            max_batch: max_batch.max(1),
            on_commit,
            arrivals,
            reachable,
            ids: Vec::new(),
            commit_seq: 0,
            last_beat: Instant::now(),
            pending_result: None,
        })
    }

    /// Runs until every handle is gone or `Close` arrives, then hands back
    /// this instance's leases and unregisters it.
    pub(crate) fn run(mut self, rt: tokio::runtime::Runtime, rx: Receiver<Cmd>) {
        let mut closing = None;
        while closing.is_none() {
            let first = match rx.recv_timeout(POLL) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => {
                    rt.block_on(self.idle());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Batch::default();
            batch.push(first);
            let mut n = 1;
            while n < self.max_batch && batch.close.is_none() {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
                n += 1;
            }
            closing = rt.block_on(self.run_batch(batch));
        }
        drop(rx);
        rt.block_on(self.shutdown());
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Between batches: the heartbeat, and the delivery loops look again.
    async fn idle(&mut self) {
        self.arrivals.notify_waiters();
        if self.last_beat.elapsed() < POLL {
            return;
        }
        self.last_beat = Instant::now();
        // Bounded like a commit: a blackholed server must not stall the
        // writer, and a node cut off must say so (its readiness fails).
        let limit = self.opts.commit_limit;
        let beat = async {
            let conn = self.take_conn().await?;
            let res = conn
                .client
                .execute(sql::HEARTBEAT, &[&self.instance_id])
                .await;
            self.put_back(conn, res.as_ref().err());
            res.map(|_| ()).map_err(SpoolError::from)
        };
        let res = match tokio::time::timeout(limit, beat).await {
            Ok(res) => res,
            Err(_) => {
                self.conn = None;
                Err(SpoolError::Unreachable(format!(
                    "no answer from the database within {}",
                    humantime::format_duration(limit)
                )))
            }
        };
        if let Err(e) = &res {
            tracing::warn!(error = %e, "spool: heartbeat failed");
        }
        self.note_reachable(res.as_ref().err());
    }

    /// Records whether the database answered: any error but the server's
    /// own (a constraint, a cancelled statement) means it did not.
    fn note_reachable(&self, err: Option<&SpoolError>) {
        let answered = match err {
            None => true,
            Some(SpoolError::Postgres(e)) => e.as_db_error().is_some(),
            Some(SpoolError::CommitFailed(inner)) => {
                matches!(&**inner, SpoolError::Postgres(e) if e.as_db_error().is_some())
            }
            Some(_) => false,
        };
        let was = self.reachable.swap(answered, Ordering::AcqRel);
        if was != answered {
            if answered {
                tracing::info!("spool: the database answers again; ready");
            } else {
                tracing::error!("spool: the database is unreachable; not ready until it answers");
            }
        }
    }

    async fn shutdown(&mut self) {
        let Ok(conn) = self.take_conn().await else {
            tracing::warn!("spool: cannot reach the database at close; leases run out instead");
            return;
        };
        let client = &conn.client;
        let released = release_owner(client, &self.opts.node, &self.instance_id).await;
        let unregistered = client.execute(sql::UNREGISTER, &[&self.instance_id]).await;
        match (released, unregistered) {
            (Ok(0), Ok(_)) => {}
            (Ok(n), Ok(_)) => tracing::info!(leases = n, "spool: released leases at close"),
            (Err(e), _) => tracing::warn!(error = %e, "spool: cannot release leases at close"),
            (_, Err(e)) => tracing::warn!(error = %e, "spool: cannot unregister instance"),
        }
    }

    /// The connection, made anew if the last one broke, taken out of the
    /// writer: the caller puts it back ([`PgWriter::put_back`]) unless it
    /// failed, so a batch abandoned at its deadline drops it.
    async fn take_conn(&mut self) -> Result<Conn, SpoolError> {
        match self.conn.take() {
            Some(c) if !c.client.is_closed() => Ok(c),
            _ => {
                let client = (self.opts.connect)(self.opts.connect_timeout).await?;
                let st = Prepared::on(&client).await?;
                tracing::info!("spool: connected to the database");
                Ok(Conn { client, st })
            }
        }
    }

    /// Keeps `conn` for the next batch unless `err` says it broke (an error
    /// that is not the server's answer: gone, or not to be trusted).
    fn put_back(&mut self, conn: Conn, err: Option<&tokio_postgres::Error>) {
        if err.is_none_or(|e| e.as_db_error().is_some()) {
            self.conn = Some(conn);
        }
    }

    async fn run_batch(&mut self, mut batch: Batch) -> Option<oneshot::Sender<()>> {
        let count = batch.writes();
        if count > 0 {
            let started = Instant::now();
            self.commit_seq += 1;
            let seq = self.commit_seq;
            let mut phase = Phase::Before;
            let limit = self.opts.commit_limit;
            let outcome =
                match tokio::time::timeout(limit, self.write(&mut batch, seq, &mut phase)).await {
                    Ok(res) => res,
                    Err(_) => {
                        // The connection may be mid-statement: never reuse it.
                        self.conn = None;
                        phase = Phase::CommitSent;
                        Err(SpoolError::Unreachable(format!(
                            "no answer from the database within {}",
                            humantime::format_duration(limit)
                        )))
                    }
                };
            let outcome = match outcome {
                Err(e) if phase == Phase::CommitSent => self.resolve(seq, e).await,
                other => other,
            };
            self.note_reachable(outcome.as_ref().err());
            match outcome {
                Ok((written, wake)) => {
                    if let Some(observe) = &self.on_commit {
                        observe(started.elapsed(), count);
                    }
                    answer(&mut batch, written);
                    if wake {
                        self.arrivals.notify_waiters();
                        self.arrivals.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, commands = count, "spool: group commit failed");
                    fail(&mut batch, Arc::new(e));
                }
            }
        }
        self.reads(&mut batch).await;
        batch.close
    }

    /// Finds out whether the batch numbered `seq` committed, on a new
    /// connection; `lost` is what broke the old one.
    async fn resolve(&mut self, seq: i64, lost: SpoolError) -> Result<(Written, bool), SpoolError> {
        // Whatever was computed is only good if the commit happened.
        let kept = self.pending_result.take();
        self.conn = None;
        let conn = match self.take_conn().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "spool: commit outcome unknown and the database unreachable; answering the batch as failed");
                return Err(lost);
            }
        };
        let row = conn
            .client
            .query_opt(sql::COMMIT_SEQ, &[&self.instance_id])
            .await;
        self.put_back(conn, row.as_ref().err());
        let row = row?;
        let committed = row.is_some_and(|r| r.get::<_, i64>(0) == seq);
        tracing::warn!(
            committed,
            "spool: connection lost during COMMIT; looked up its outcome"
        );
        match (committed, kept) {
            (true, Some(result)) => Ok(result),
            _ => Err(lost),
        }
    }
}

/// A new request's place in the batch: its ids, and its deliveries'.
struct NewRow {
    index: usize,
    id: i64,
    deliveries: Vec<(i64, String)>,
}

impl PgWriter {
    /// `n` fresh ids from this process's blocks, taking blocks as needed
    /// (outside the transaction: `nextval` is not rolled back anyway).
    async fn take_ids(&mut self, n: usize) -> Result<Vec<i64>, SpoolError> {
        let have: i64 = self.ids.iter().map(|r| r.end - r.start).sum();
        let want = i64::try_from(n).unwrap_or(i64::MAX);
        if have < want {
            let blocks = i32::try_from((want - have) / sql::BLOCK + 1).unwrap_or(i32::MAX);
            let conn = self.take_conn().await?;
            let rows = conn.client.query(&conn.st.id_blocks, &[&blocks]).await;
            self.put_back(conn, rows.as_ref().err());
            for row in rows? {
                let b: i64 = row.get(0);
                self.ids.push(b * sql::BLOCK..(b + 1) * sql::BLOCK);
            }
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(range) = self.ids.first_mut() else {
                return Err(SpoolError::Unreachable("ran out of ids".into()));
            };
            match range.next() {
                Some(id) => out.push(id),
                None => {
                    self.ids.remove(0);
                }
            }
        }
        Ok(out)
    }

    /// The batch's write transaction. Leaves its results in
    /// `pending_result` before COMMIT goes out, and takes them back after.
    async fn write(
        &mut self,
        batch: &mut Batch,
        seq: i64,
        phase: &mut Phase,
    ) -> Result<(Written, bool), SpoolError> {
        let plain = batch.claims.is_empty()
            && batch.finishes.is_empty()
            && batch.purges.is_empty()
            && (batch.enqueues.iter()).all(|(item, _)| {
                item.dedup_id.is_none() && item.repeats.replay.is_none() && item.ordered.is_empty()
            });
        if plain {
            return self.write_ingest(batch, seq, phase).await;
        }
        let fresh: usize = (batch.enqueues.iter())
            .map(|(item, _)| 1 + item.routes.as_ref().map_or(1, Vec::len))
            .sum();
        let ids = self.take_ids(fresh).await?;
        let node = self.opts.node.clone();
        let owner = self.instance_id.clone();
        let owner = owner.as_str();
        let conn = self.take_conn().await?;
        let (client, st) = (&conn.client, &conn.st);
        let mut depth = Depth::default();
        let mut written = Written::default();

        // Round trip 1: BEGIN, and what the inserts depend on.
        let lookups = Lookups::of(&batch.enqueues);
        let (begin, locked, dedup, replay) = tokio::join!(
            async { client.batch_execute("BEGIN").await },
            lookups.lock(client, &st.lock_repeats),
            lookups.dedup(client, &st.find_dedup),
            lookups.replay(client, &st.find_replay),
        );
        let result = async {
            begin?;
            let (_, dedup, replay) = (locked?, dedup?, replay?);
            let plan = plan_enqueues(&batch.enqueues, &dedup, &replay, ids);
            // Sequence numbers of ordered routes, under their rows' locks.
            let seqs = take_seqs(client, &st.take_seq, &batch.enqueues, &plan.new).await?;

            // Round trip 2: every write of the batch, pipelined.
            let revive_ids: Vec<i64> = plan.revive.clone();
            let inserts = Inserts::build(&batch.enqueues, &plan.new, &seqs);
            let finishes = Finishes::build(&batch.finishes);
            let claims = (batch.claims.iter()).map(|(req, _)| {
                let stmt = if req.ordered {
                    &st.claim_ordered
                } else {
                    &st.claim
                };
                let route = req.route.as_deref().unwrap_or(DEFAULT_ROUTE);
                let max = if req.ordered {
                    1
                } else {
                    i64::try_from(req.max).unwrap_or(i64::MAX)
                };
                let lease = req.lease.as_secs_f64();
                async move {
                    client
                        .query(stmt, &[&req.hook, &route, &max, &owner, &lease])
                        .await
                }
            });
            let purges = batch.purges.iter().map(|(older_than, _)| {
                let secs = older_than.as_secs_f64();
                async move {
                    let done = client.query(&st.purge_done, &[&secs, &PURGE_CHUNK]).await?;
                    let emptied: Vec<i64> = done.iter().map(|r| r.get(2)).collect();
                    client.execute(&st.purge_empty, &[&emptied]).await?;
                    let filtered = client.query(&st.purge_filtered, &[&PURGE_CHUNK]).await?;
                    Ok::<_, tokio_postgres::Error>((done, filtered))
                }
            });
            let (revived, inserted, finished, claimed, purged, marked) = tokio::join!(
                async {
                    if revive_ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    client.query(&st.revive, &[&revive_ids]).await
                },
                inserts.run(client, &st.insert_requests, &st.insert_deliveries),
                finishes.run(client, &st.finish, owner),
                join_all(claims),
                join_all(purges),
                async { client.execute(&st.mark_commit, &[&owner, &seq]).await },
            );
            let revived = revived?;
            inserted?;
            let finished = finished?;
            if marked? == 0 {
                // Our row went (taken for dead by a peer's clean-up): back.
                tracing::warn!("spool: this instance's row was gone; registering again");
                let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
                client
                    .execute(sql::REGISTER, &[&owner, &node, &pid])
                    .await?;
                client.execute(&st.mark_commit, &[&owner, &seq]).await?;
            }

            // Results and depth changes.
            let revived_requests = count_revived(&revived, &mut depth);
            written.enqueued = plan.answers(&revived_requests);
            written.wake |= count_new(&batch.enqueues, &plan.new, &mut depth);
            written.wake |= !revived.is_empty();
            for row in &finished {
                let (hook, route, state): (String, String, String) =
                    (row.get(0), row.get(1), row.get(2));
                depth.add(&hook, &route, "leased", -1);
                depth.add(&hook, &route, state_name(&state), 1);
                written.wake = true;
            }
            for rows in claimed {
                let mut items = Vec::new();
                for row in rows? {
                    let (item, was_pending) = claimed_item(&row, owner);
                    if was_pending {
                        depth.add(&item.hook, item.route(), "pending", -1);
                        depth.add(&item.hook, item.route(), "leased", 1);
                    }
                    items.push(item);
                }
                written.claimed.push(items);
            }
            for res in purged {
                let (done, filtered) = res?;
                for row in &done {
                    let (hook, route): (String, String) = (row.get(0), row.get(1));
                    depth.add(&hook, &route, "done", -1);
                }
                for row in &filtered {
                    let hook: String = row.get(0);
                    depth.add(&hook, FILTERED_ROUTE, "filtered", -1);
                }
                written.purged.push((done.len() + filtered.len()) as u64);
            }
            Ok::<_, SpoolError>(())
        }
        .await;
        if let Err(e) = result {
            // Nothing of it is kept; the connection may still serve.
            let pe = match &e {
                SpoolError::Postgres(pe) => Some(pe),
                _ => None,
            };
            if pe.is_some_and(|pe| pe.as_db_error().is_some()) {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            if pe.is_none_or(|pe| pe.as_db_error().is_some()) {
                self.conn = Some(conn);
            }
            return Err(e);
        }

        // Round trip 3: the depth changes, and COMMIT.
        let (hooks, routes, states, ns) = depth.columns();
        let wake = written.wake;
        self.pending_result = Some((written, wake));
        *phase = Phase::CommitSent;
        let (counted, committed) = tokio::join!(
            async {
                if hooks.is_empty() {
                    return Ok(0);
                }
                client
                    .execute(&st.add_depth, &[&node, &hooks, &routes, &states, &ns])
                    .await
            },
            async { client.batch_execute("COMMIT").await },
        );
        let outcome = counted.and(committed).map(|_| ());
        self.settle(conn, phase, outcome).await
    }

    /// What a batch whose COMMIT went out comes to: committed (its results,
    /// kept in `pending_result`), refused by the server (a failed statement
    /// or COMMIT ends the transaction as a ROLLBACK: nothing kept, the
    /// connection still good), or unknown (the connection broke: the caller
    /// looks the outcome up on a new one).
    async fn settle(
        &mut self,
        conn: Conn,
        phase: &mut Phase,
        outcome: Result<(), tokio_postgres::Error>,
    ) -> Result<(Written, bool), SpoolError> {
        match outcome {
            Ok(()) => {
                self.conn = Some(conn);
                self.pending_result
                    .take()
                    .ok_or_else(|| SpoolError::Unreachable("lost the batch's results".into()))
            }
            Err(e) if e.as_db_error().is_some() => {
                self.pending_result = None;
                *phase = Phase::Before;
                let _ = conn.client.batch_execute("ROLLBACK").await;
                self.conn = Some(conn);
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`write`](Self::write) for a batch of new requests without repeat
    /// keys or ordered routes (what most group commits under load are):
    /// their fate and depth changes are known before anything is sent, so
    /// BEGIN, [`sql::INGEST`] and COMMIT go out together, one round trip.
    /// Measured with bench/pg.sh: 6 statements and 3 round trips per group
    /// commit before, 3 and 1 now (BENCHMARKS.md, "PostgreSQL spool").
    async fn write_ingest(
        &mut self,
        batch: &mut Batch,
        seq: i64,
        phase: &mut Phase,
    ) -> Result<(Written, bool), SpoolError> {
        let fresh: usize = (batch.enqueues.iter())
            .map(|(item, _)| 1 + item.routes.as_ref().map_or(1, Vec::len))
            .sum();
        let ids = self.take_ids(fresh).await?;
        let plan = plan_enqueues(&batch.enqueues, &HashMap::new(), &HashMap::new(), ids);
        let inserts = Inserts::build(&batch.enqueues, &plan.new, &HashMap::new());
        let mut depth = Depth::default();
        let mut written = Written {
            enqueued: plan.answers(&std::collections::HashSet::new()),
            ..Written::default()
        };
        written.wake = count_new(&batch.enqueues, &plan.new, &mut depth);
        let (hooks, routes, states, ns) = depth.columns();
        let conn = self.take_conn().await?;
        let (client, st) = (&conn.client, &conn.st);
        let (owner, node) = (self.instance_id.as_str(), self.opts.node.as_str());
        let wake = written.wake;
        self.pending_result = Some((written, wake));
        // COMMIT goes out with the rest: from here the outcome may be unknown.
        *phase = Phase::CommitSent;
        let i = &inserts;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 21] = [
            &i.ids,
            &i.hooks,
            &i.received,
            &i.headers,
            &i.bodies,
            &i.dedup,
            &i.replay,
            &i.states,
            &i.purge_after,
            &i.d_ids,
            &i.d_requests,
            &i.d_hooks,
            &i.d_routes,
            &i.d_seqs,
            &owner,
            &seq,
            &node,
            &hooks,
            &routes,
            &states,
            &ns,
        ];
        let (begun, marked, committed) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.query_one(&st.ingest, &params),
            client.batch_execute("COMMIT"),
        );
        let outcome = begun.and(marked).and_then(|row| committed.map(|()| row));
        let outcome = outcome.map(|row| {
            if row.get::<_, i64>(0) == 0 {
                // Committed, but our row went (taken for dead by a peer's
                // clean-up): back, so the next batch can be looked up by
                // its commit_seq.
                tracing::warn!("spool: this instance's row was gone; registering again");
                Some(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
            } else {
                None
            }
        });
        let outcome = match outcome {
            Ok(Some(pid)) => {
                let again = client.execute(sql::REGISTER, &[&owner, &node, &pid]).await;
                if let Err(e) = again {
                    tracing::error!(error = %e, "spool: cannot register this instance again");
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        self.settle(conn, phase, outcome).await
    }

    /// Depth and next-due reads, after the batch's writes.
    async fn reads(&mut self, batch: &mut Batch) {
        if batch.depths.is_empty() && batch.next_dues.is_empty() {
            return;
        }
        let conn = match self.take_conn().await {
            Ok(c) => c,
            Err(e) => {
                let cause = Arc::new(e);
                for r in batch.depths.drain(..) {
                    let _ = r.send(Err(SpoolError::CommitFailed(cause.clone())));
                }
                for (_, _, r) in batch.next_dues.drain(..) {
                    let _ = r.send(Err(SpoolError::CommitFailed(cause.clone())));
                }
                return;
            }
        };
        for r in batch.depths.drain(..) {
            let res = conn.client.query(&conn.st.depth, &[]).await;
            let _ = r.send(res.map_err(SpoolError::from).map(|rows| {
                rows.iter()
                    .filter_map(|row| {
                        let (hook, route, state, n): (String, String, String, i64) =
                            (row.get(0), row.get(1), row.get(2), row.get(3));
                        Some(DepthRow {
                            hook,
                            route: (!route.is_empty()).then_some(route),
                            state: state.parse().ok()?,
                            count: u64::try_from(n).ok()?,
                        })
                    })
                    .collect()
            }));
        }
        for (hook, route, r) in batch.next_dues.drain(..) {
            let route = route.unwrap_or_else(|| DEFAULT_ROUTE.to_owned());
            let res = conn
                .client
                .query_one(&conn.st.next_due, &[&hook, &route])
                .await;
            let _ = r.send(
                res.map(|row| row.get::<_, Option<SystemTime>>(0))
                    .map_err(SpoolError::from),
            );
        }
        self.conn = Some(conn);
    }
}

/// Counts the batch's new requests into `depth` (filtered ones under
/// route `""`, the others' deliveries as pending); true when any of them is
/// claimable (the delivery loops should look).
fn count_new(enqueues: &[(NewItem, Reply<Enqueued>)], new: &[NewRow], depth: &mut Depth) -> bool {
    let mut claimable = false;
    for row in new {
        let (item, _) = &enqueues[row.index];
        if item.filtered_until.is_some() {
            depth.add(&item.hook, FILTERED_ROUTE, "filtered", 1);
        } else {
            for (_, route) in &row.deliveries {
                depth.add(&item.hook, route, "pending", 1);
            }
            claimable = true;
        }
    }
    claimable
}

/// The names stored for a delivery's states.
fn state_name(s: &str) -> &'static str {
    match s {
        "pending" => "pending",
        "leased" => "leased",
        "done" => "done",
        _ => "dead",
    }
}

impl Depth {
    fn columns(&self) -> (Vec<&str>, Vec<&str>, Vec<&str>, Vec<i64>) {
        let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((hook, route, state), n) in &self.0 {
            if *n != 0 {
                cols.0.push(hook.as_str());
                cols.1.push(route.as_str());
                cols.2.push(*state);
                cols.3.push(*n);
            }
        }
        cols
    }
}

/// Hands back every lease `owner` holds, counting the change on `node`.
async fn release_owner(client: &Client, node: &str, owner: &str) -> Result<u64, SpoolError> {
    let txn_rows = client.query(sql::RELEASE_OWNER, &[&owner]).await?;
    let mut depth = Depth::default();
    for row in &txn_rows {
        let (hook, route): (String, String) = (row.get(0), row.get(1));
        depth.add(&hook, &route, "leased", -1);
        depth.add(&hook, &route, "pending", 1);
    }
    let (hooks, routes, states, ns) = depth.columns();
    if !hooks.is_empty() {
        client
            .execute(sql::ADD_DEPTH, &[&node, &hooks, &routes, &states, &ns])
            .await?;
    }
    Ok(txn_rows.len() as u64)
}

/// An [`Item`] from a row of `CLAIM`/`CLAIM_ORDERED`, and whether it was
/// pending (not an expired lease taken over). Headers that do not decode
/// come back empty and say so in `last_error`: the row is still delivered
/// (its body is whole) rather than failing every claim of its route.
fn claimed_item(row: &Row, owner: &str) -> (Item, bool) {
    let id: i64 = row.get(1);
    let headers_blob: Vec<u8> = row.get(12);
    let (headers, bad_headers) = match decode_headers(&headers_blob) {
        Some(h) => (h, false),
        None => (Vec::new(), true),
    };
    let attempts: i32 = row.get(3);
    let last_error: Option<String> = row.get(5);
    let item = Item {
        id,
        hook: row.get(9),
        dedup_id: row.get(10),
        received_at: row.get(11),
        headers,
        body: Bytes::from(row.get::<_, Vec<u8>>(13)),
        state: ItemState::Leased,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt: row.get(4),
        last_error: if bad_headers {
            Some(format!("request {id}: malformed headers in the spool"))
        } else {
            last_error
        },
        lease_owner: Some(owner.to_owned()),
        lease_expiry: row.get(6),
        lease_gen: Some(row.get(7)),
        delivery: Some(RouteDelivery {
            row: row.get(0),
            route: row.get(2),
        }),
    };
    (item, row.get(8))
}

/// Every waiter gets its result.
fn answer(batch: &mut Batch, written: Written) {
    for ((_, reply), res) in batch.enqueues.drain(..).zip(written.enqueued) {
        let _ = reply.send(Ok(res));
    }
    for ((_, reply), items) in batch.claims.drain(..).zip(written.claimed) {
        let _ = reply.send(Ok(items));
    }
    for (_, _, reply) in batch.finishes.drain(..) {
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
    }
    for ((_, reply), n) in batch.purges.drain(..).zip(written.purged) {
        let _ = reply.send(Ok(n));
    }
}

/// Every waiter of the batch gets the one cause.
fn fail(batch: &mut Batch, cause: Arc<SpoolError>) {
    let err = || SpoolError::CommitFailed(cause.clone());
    for (_, reply) in batch.enqueues.drain(..) {
        let _ = reply.send(Err(err()));
    }
    for (_, reply) in batch.claims.drain(..) {
        let _ = reply.send(Err(err()));
    }
    for (lease, _, reply) in batch.finishes.drain(..) {
        match reply {
            Some(reply) => {
                let _ = reply.send(Err(err()));
            }
            None => tracing::error!(delivery_id = lease.id, error = %cause,
                "spool: cannot record the delivery as done; it is delivered again once its lease ends"),
        }
    }
    for (_, reply) in batch.purges.drain(..) {
        let _ = reply.send(Err(err()));
    }
}

/// The repeat lookups a batch's enqueues need.
struct Lookups {
    dedup_hooks: Vec<String>,
    dedup_ids: Vec<String>,
    replay_index: Vec<i32>,
    replay_hooks: Vec<String>,
    replay_keys: Vec<Vec<u8>>,
    replay_since: Vec<SystemTime>,
}

/// What the lookups found: the latest request per (hook, dedup id) with
/// its arrival, and the first replayed request per enqueue index.
type DedupHits = HashMap<(String, String), (i64, SystemTime)>;
type ReplayHits = HashMap<usize, i64>;

impl Lookups {
    fn of(enqueues: &[(NewItem, Reply<Enqueued>)]) -> Lookups {
        let mut l = Lookups {
            dedup_hooks: Vec::new(),
            dedup_ids: Vec::new(),
            replay_index: Vec::new(),
            replay_hooks: Vec::new(),
            replay_keys: Vec::new(),
            replay_since: Vec::new(),
        };
        for (i, (item, _)) in enqueues.iter().enumerate() {
            if let Some(d) = &item.dedup_id {
                l.dedup_hooks.push(item.hook.clone());
                l.dedup_ids.push(d.clone());
            }
            if let Some(key) = &item.repeats.replay {
                l.replay_index.push(i32::try_from(i).unwrap_or(i32::MAX));
                l.replay_hooks.push(item.hook.clone());
                l.replay_keys.push(key.digest.to_vec());
                l.replay_since.push(
                    item.received_at
                        .checked_sub(key.window)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                );
            }
        }
        l
    }

    /// Locks every repeat key of the batch (see [`sql::LOCK_REPEATS`]), so
    /// a repeat arriving at two nodes at once is one request, not two.
    async fn lock(&self, client: &Client, st: &Statement) -> Result<(), SpoolError> {
        let dedup =
            (self.dedup_hooks.iter().zip(&self.dedup_ids)).map(|(h, d)| format!("{h}\ndedup\n{d}"));
        let replay = (self.replay_hooks.iter().zip(&self.replay_keys))
            .map(|(h, k)| format!("{h}\nreplay\n{}", hex::encode(k)));
        let keys: Vec<String> = dedup.chain(replay).collect();
        if keys.is_empty() {
            return Ok(());
        }
        client.query(st, &[&keys]).await?;
        Ok(())
    }

    async fn dedup(&self, client: &Client, st: &Statement) -> Result<DedupHits, SpoolError> {
        if self.dedup_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = client
            .query(st, &[&self.dedup_hooks, &self.dedup_ids])
            .await?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect())
    }

    async fn replay(&self, client: &Client, st: &Statement) -> Result<ReplayHits, SpoolError> {
        if self.replay_index.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = client
            .query(
                st,
                &[
                    &self.replay_index,
                    &self.replay_hooks,
                    &self.replay_keys,
                    &self.replay_since,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((usize::try_from(r.get::<_, i32>(0)).ok()?, r.get(1))))
            .collect())
    }
}

/// What becomes of each enqueue of the batch.
enum Fate {
    New(usize),
    Duplicate(i64),
    Replay(i64),
    /// A repeat within the window of this stored request: revived if it has
    /// dead deliveries (the first such enqueue only), else a duplicate.
    Repeat(i64),
}

struct Plan {
    fates: Vec<Fate>,
    /// Requests to revive (their dead deliveries).
    revive: Vec<i64>,
    new: Vec<NewRow>,
}

/// Decides each enqueue the way the SQLite writer does one at a time: a
/// repeat of the hook's latest request with the dedup id, within the
/// window, is a duplicate (or revives its dead deliveries); failing that, a
/// request with the replay key within its window makes a replay. Earlier
/// enqueues of the same batch count as stored.
fn plan_enqueues(
    enqueues: &[(NewItem, Reply<Enqueued>)],
    dedup: &DedupHits,
    replay: &ReplayHits,
    ids: Vec<i64>,
) -> Plan {
    let mut ids = ids.into_iter();
    let mut plan = Plan {
        fates: Vec::new(),
        revive: Vec::new(),
        new: Vec::new(),
    };
    let mut batch_dedup: HashMap<(&str, &str), (i64, SystemTime)> = HashMap::new();
    let mut batch_replay: HashMap<(&str, [u8; 32]), (i64, SystemTime)> = HashMap::new();
    for (i, (item, _)) in enqueues.iter().enumerate() {
        if let Some(d) = &item.dedup_id {
            let stored = (batch_dedup.get(&(item.hook.as_str(), d.as_str())).copied())
                .or_else(|| dedup.get(&(item.hook.clone(), d.clone())).copied());
            if let Some((id, first)) = stored {
                let within = item
                    .repeats
                    .dedup_window
                    .is_none_or(|w| item.received_at < first + w);
                if within {
                    let repeat_of_stored =
                        !batch_dedup.contains_key(&(item.hook.as_str(), d.as_str()));
                    if repeat_of_stored && !plan.revive.contains(&id) {
                        plan.revive.push(id);
                        plan.fates.push(Fate::Repeat(id));
                    } else {
                        plan.fates.push(Fate::Duplicate(id));
                    }
                    continue;
                }
            }
        }
        if let Some(key) = &item.repeats.replay {
            let in_batch = batch_replay
                .get(&(item.hook.as_str(), key.digest))
                .filter(|(_, at)| {
                    item.received_at.duration_since(*at).unwrap_or_default() < key.window
                })
                .map(|(id, _)| *id);
            if let Some(id) = in_batch.or_else(|| replay.get(&i).copied()) {
                plan.fates.push(Fate::Replay(id));
                continue;
            }
        }
        let id = ids.next().unwrap_or_default();
        let routes: Vec<String> = match (&item.filtered_until, &item.routes) {
            (Some(_), _) => Vec::new(),
            (None, Some(routes)) => routes.clone(),
            (None, None) => vec![DEFAULT_ROUTE.to_owned()],
        };
        let deliveries = routes
            .into_iter()
            .map(|r| (ids.next().unwrap_or_default(), r))
            .collect();
        if let Some(d) = &item.dedup_id {
            batch_dedup.insert((item.hook.as_str(), d.as_str()), (id, item.received_at));
        }
        if let Some(key) = &item.repeats.replay {
            batch_replay.insert((item.hook.as_str(), key.digest), (id, item.received_at));
        }
        plan.fates.push(Fate::New(plan.new.len()));
        plan.new.push(NewRow {
            index: i,
            id,
            deliveries,
        });
    }
    plan
}

impl Plan {
    fn answers(&self, revived: &std::collections::HashSet<i64>) -> Vec<Enqueued> {
        self.fates
            .iter()
            .map(|f| match f {
                Fate::New(n) => Enqueued::New(self.new[*n].id),
                Fate::Duplicate(id) => Enqueued::Duplicate(*id),
                Fate::Replay(id) => Enqueued::Replay(*id),
                Fate::Repeat(id) if revived.contains(id) => Enqueued::Revived(*id),
                Fate::Repeat(id) => Enqueued::Duplicate(*id),
            })
            .collect()
    }
}

/// Requests whose dead deliveries came back, counting the move.
fn count_revived(rows: &[Row], depth: &mut Depth) -> std::collections::HashSet<i64> {
    let mut out = std::collections::HashSet::new();
    for row in rows {
        let (request, hook, route): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        depth.add(&hook, &route, "dead", -1);
        depth.add(&hook, &route, "pending", 1);
        out.insert(request);
    }
    out
}

/// First sequence number of each ordered (hook, route) the batch's new
/// deliveries need, taken in one statement.
async fn take_seqs(
    client: &Client,
    st: &Statement,
    enqueues: &[(NewItem, Reply<Enqueued>)],
    new: &[NewRow],
) -> Result<HashMap<(String, String), i64>, SpoolError> {
    let mut wanted: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in new {
        let (item, _) = &enqueues[row.index];
        for (_, route) in &row.deliveries {
            if item.ordered.iter().any(|o| o == route) {
                *wanted
                    .entry((item.hook.clone(), route.clone()))
                    .or_default() += 1;
            }
        }
    }
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let hooks: Vec<&str> = wanted.keys().map(|k| k.0.as_str()).collect();
    let routes: Vec<&str> = wanted.keys().map(|k| k.1.as_str()).collect();
    let ns: Vec<i64> = wanted.values().copied().collect();
    let rows = client.query(st, &[&hooks, &routes, &ns]).await?;
    let mut first = HashMap::new();
    for row in rows {
        let key: (String, String) = (row.get(0), row.get(1));
        let next: i64 = row.get(2);
        if let Some(n) = wanted.get(&key) {
            first.insert(key, next - n);
        }
    }
    Ok(first)
}

/// The batch's new requests and deliveries as columns.
struct Inserts<'a> {
    ids: Vec<i64>,
    hooks: Vec<&'a str>,
    received: Vec<SystemTime>,
    headers: Vec<Vec<u8>>,
    bodies: Vec<&'a [u8]>,
    dedup: Vec<Option<&'a str>>,
    replay: Vec<Option<&'a [u8]>>,
    states: Vec<&'static str>,
    purge_after: Vec<Option<SystemTime>>,
    d_ids: Vec<i64>,
    d_requests: Vec<i64>,
    d_hooks: Vec<&'a str>,
    d_routes: Vec<String>,
    d_seqs: Vec<Option<i64>>,
}

impl<'a> Inserts<'a> {
    fn build(
        enqueues: &'a [(NewItem, Reply<Enqueued>)],
        new: &[NewRow],
        seqs: &HashMap<(String, String), i64>,
    ) -> Inserts<'a> {
        let mut next_seq = seqs.clone();
        let mut c = Inserts {
            ids: Vec::new(),
            hooks: Vec::new(),
            received: Vec::new(),
            headers: Vec::new(),
            bodies: Vec::new(),
            dedup: Vec::new(),
            replay: Vec::new(),
            states: Vec::new(),
            purge_after: Vec::new(),
            d_ids: Vec::new(),
            d_requests: Vec::new(),
            d_hooks: Vec::new(),
            d_routes: Vec::new(),
            d_seqs: Vec::new(),
        };
        for row in new {
            let (item, _) = &enqueues[row.index];
            c.ids.push(row.id);
            c.hooks.push(&item.hook);
            c.received.push(item.received_at);
            c.headers.push(encode_headers(&item.headers));
            c.bodies.push(&item.body);
            c.dedup.push(item.dedup_id.as_deref());
            c.replay
                .push(item.repeats.replay.as_ref().map(|k| &k.digest[..]));
            c.states.push(if item.filtered_until.is_some() {
                "filtered"
            } else {
                "accepted"
            });
            c.purge_after.push(item.filtered_until);
            for (id, route) in &row.deliveries {
                let seq = next_seq
                    .get_mut(&(item.hook.clone(), route.clone()))
                    .map(|s| {
                        *s += 1;
                        *s - 1
                    });
                c.d_ids.push(*id);
                c.d_requests.push(row.id);
                c.d_hooks.push(&item.hook);
                c.d_routes.push(route.clone());
                c.d_seqs.push(seq);
            }
        }
        c
    }

    async fn run(
        &self,
        client: &Client,
        requests: &Statement,
        deliveries: &Statement,
    ) -> Result<(), tokio_postgres::Error> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let (a, b) = tokio::join!(
            async {
                client
                    .execute(
                        requests,
                        &[
                            &self.ids,
                            &self.hooks,
                            &self.received,
                            &self.headers,
                            &self.bodies,
                            &self.dedup,
                            &self.replay,
                            &self.states,
                            &self.purge_after,
                        ],
                    )
                    .await
            },
            async {
                if self.d_ids.is_empty() {
                    return Ok(0);
                }
                client
                    .execute(
                        deliveries,
                        &[
                            &self.d_ids,
                            &self.d_requests,
                            &self.d_hooks,
                            &self.d_routes,
                            &self.d_seqs,
                        ],
                    )
                    .await
            }
        );
        a?;
        b?;
        Ok(())
    }
}

/// The batch's finishes as columns for the one `FINISH` statement.
struct Finishes {
    ids: Vec<i64>,
    gens: Vec<Option<i64>>,
    states: Vec<&'static str>,
    counted: Vec<i32>,
    next_attempts: Vec<Option<SystemTime>>,
    set_error: Vec<bool>,
    errors: Vec<Option<String>>,
}

impl Finishes {
    fn build(finishes: &[(Lease, Finish, Option<Reply<()>>)]) -> Finishes {
        let mut c = Finishes {
            ids: Vec::new(),
            gens: Vec::new(),
            states: Vec::new(),
            counted: Vec::new(),
            next_attempts: Vec::new(),
            set_error: Vec::new(),
            errors: Vec::new(),
        };
        for (lease, how, _) in finishes {
            let (state, counted, next, error) = match how {
                Finish::Complete => ("done", 1, None, None),
                Finish::RetryLater {
                    next_attempt,
                    error,
                } => (
                    "pending",
                    1,
                    Some(crate::spool::codec::from_ms(*next_attempt)),
                    Some(error.clone()),
                ),
                Finish::Dead { error } => ("dead", 1, None, Some(error.clone())),
                Finish::Release => ("pending", 0, None, None),
            };
            c.ids.push(lease.id);
            c.gens.push(lease.gen());
            c.states.push(state);
            c.counted.push(counted);
            c.next_attempts.push(next);
            c.set_error.push(error.is_some());
            c.errors.push(error);
        }
        c
    }

    async fn run(
        &self,
        client: &Client,
        st: &Statement,
        owner: &str,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        if self.ids.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(
                st,
                &[
                    &self.ids,
                    &self.gens,
                    &self.states,
                    &self.counted,
                    &self.next_attempts,
                    &self.set_error,
                    &self.errors,
                    &owner,
                ],
            )
            .await
    }
}
