//! The writer thread: owns the read-write connection and group-commits.
//!
//! Loop: block for one command, take every command already waiting (up to
//! `max_batch`), run them in one `BEGIN IMMEDIATE … COMMIT` (one WAL fsync),
//! then answer every waiter. A failed commit answers every waiter of the batch
//! with the error: none of them is durable.
//!
//! Only a batch that accepts webhooks needs its fsync (`synchronous=FULL`):
//! it is what the 202 promises. A batch of delivery bookkeeping alone (claims,
//! results, releases) commits with `synchronous=NORMAL`, which survives a
//! process crash and at worst, after a power loss, redelivers an item:
//! at-least-once allows that, and delivery no longer waits on the disk.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};

use super::checkpoint::Checkpointer;
use super::codec::{encode_headers, from_ms, item_from_row, ms_ago, now_ms, to_ms};
use super::counts::{self, Deltas};
use super::instances;
use super::tx;
use super::{
    ClaimRequest, CommitObserver, DepthRow, Enqueued, Item, ItemState, Lease, LeaseTable, NewItem,
    RouteDelivery, SpoolError,
};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

/// How a delivery attempt ended; see the `Spool` methods of the same names.
pub(crate) enum Finish {
    Complete,
    RetryLater { next_attempt: i64, error: String },
    Dead { error: String },
    Release,
}

impl Finish {
    /// The state the item is in afterwards.
    fn state(&self) -> ItemState {
        match self {
            Finish::Complete => ItemState::Done,
            Finish::RetryLater { .. } | Finish::Release => ItemState::Pending,
            Finish::Dead { .. } => ItemState::Dead,
        }
    }
}

pub(crate) enum Cmd {
    Enqueue(NewItem, Reply<Enqueued>),
    Claim(ClaimRequest, Reply<Vec<Item>>),
    Finish(Lease, Finish, Reply<()>),
    /// `Finish(lease, Complete)` with nobody waiting: failures are logged here.
    CompleteDetached(Lease),
    /// Deletes at most [`PURGE_CHUNK`] done items last updated before the cutoff.
    PurgeDone {
        older_than: Duration,
        reply: Reply<u64>,
    },
    Depth(Reply<Vec<DepthRow>>),
    /// Hook, and route (`None`: the hook's items rows).
    NextDue(String, Option<String>, Reply<Option<SystemTime>>),
    /// Finish what is queued before it, then stop.
    Close(oneshot::Sender<()>),
}

impl Cmd {
    fn writes(&self) -> bool {
        !matches!(self, Cmd::Depth(_) | Cmd::NextDue(..) | Cmd::Close(_))
    }
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub instance_id: String,
    pub max_batch: usize,
    pub on_commit: Option<CommitObserver>,
    pub arrivals: Arc<Notify>,
    /// Whether the connection is at `synchronous=FULL` now.
    pub sync_full: bool,
    /// Runs the WAL checkpoints this connection no longer runs itself.
    pub checkpointer: Option<Checkpointer>,
    /// This process migrated the spool from v1 while another hookd ran: that
    /// one changes states without counting (v1 counted with triggers), so
    /// recount once it is gone.
    pub recount_when_alone: bool,
    pub peers_checked: Instant,
    /// The WAL file, opened read-only at the first durable commit, for the
    /// confirming sync after it (see [`Writer::confirm_durable`]).
    pub wal: Option<std::fs::File>,
}

/// WAL size (4 KiB pages) at which the writer's COMMIT checkpoints, by the
/// kind of batch. That checkpoint runs inside the commit, with two fsyncs,
/// while the batch's waiters wait (checkpoint.rs runs the others off this
/// path). SQLite's default is 1000.
/// - A batch that accepts webhooks: 300. Its commits fsync the WAL anyway,
///   and a shorter checkpoint is a shorter tail: p99 at 64 connections
///   4.4-5.6 ms against 7.1-7.8 ms at 1000 (BENCHMARKS.md).
/// - Delivery bookkeeping alone: 3000. Its commits do not fsync, so each
///   checkpoint first writes the unsynced WAL back; at 300 a delivery drain
///   ran about a fifth slower (BENCHMARKS.md). Nobody waits on a 202 there.
///   The price: the first webhook batch after a long drain stretch may
///   write back up to this many pages in its fsync.
pub(crate) fn checkpoint_pages(durable: bool) -> i64 {
    if durable {
        300
    } else {
        3000
    }
}

/// How often a writer waiting to recount looks for the other instances.
const PEER_CHECK_EVERY: Duration = Duration::from_secs(2);

/// An executed command's answer, sent once the batch's fate is known:
/// `None` = committed, `Some(e)` = the batch failed with `e`.
type Answer = Box<dyn FnOnce(Option<&Arc<SpoolError>>) + Send>;

/// What each waiter of a failed group commit is told: the one cause,
/// shared, so a disk-full SQLite code still reaches every caller.
fn error_for_each_waiter(cause: &Arc<SpoolError>) -> SpoolError {
    SpoolError::CommitFailed(Arc::clone(cause))
}

/// Rows one purge transaction deletes, for the daemon's purge and the
/// CLI's alike: short write locks, so a large purge never holds up the
/// enqueues (or a running daemon's commits) behind it for long.
pub(crate) const PURGE_CHUNK: u32 = 2_000;

/// Deletes at most [`PURGE_CHUNK`] items in `state` (done or dead) last
/// changed before `cutoff_ms` (filtered: kept until before `cutoff_ms`),
/// counting them; returns how many. The caller commits.
pub(crate) fn purge_chunk(
    conn: &Connection,
    state: ItemState,
    cutoff_ms: i64,
    counts: &mut Deltas,
) -> Result<u64, SpoolError> {
    // Literal states in the SQL, so the partial indexes on done and dead apply.
    let sql = match state {
        ItemState::Done => sql::PURGE_DONE,
        ItemState::Dead => sql::PURGE_DEAD,
        ItemState::Filtered => sql::PURGE_FILTERED,
        other => return Err(SpoolError::NotPurgeable(other)),
    };
    let args = params![cutoff_ms, PURGE_CHUNK];
    Ok(counts::run_counted(conn, sql, args, (state, None), counts)?)
}

/// Deletes at most [`PURGE_CHUNK`] route deliveries in `state` (done or
/// dead) last changed before `cutoff_ms`, and each routed request that has
/// no delivery left; returns how many deliveries. The caller commits.
pub(crate) fn purge_deliveries_chunk(
    conn: &Connection,
    state: ItemState,
    cutoff_ms: i64,
    counts: &mut Deltas,
) -> Result<u64, SpoolError> {
    let sql = match state {
        ItemState::Done => sql::PURGE_DONE_DELIVERIES,
        ItemState::Dead => sql::PURGE_DEAD_DELIVERIES,
        other => return Err(SpoolError::NotPurgeable(other)),
    };
    let mut items: Vec<i64> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![cutoff_ms, PURGE_CHUNK])?;
        while let Some(row) = rows.next()? {
            let hook: String = row.get(0)?;
            let route: String = row.get(1)?;
            counts.add_route(&hook, &route, state, -1);
            items.push(row.get(2)?);
        }
    }
    let n = items.len() as u64;
    items.sort_unstable();
    items.dedup();
    let mut drop_request = conn.prepare_cached(sql::PURGE_ROUTED_REQUEST)?;
    for item in items {
        drop_request.execute([item])?;
    }
    Ok(n)
}

/// State of one group commit while its commands run.
struct Batch {
    answers: Vec<Answer>,
    in_tx: bool,
    /// SQLite rolled the transaction back by itself (I/O error, disk full),
    /// or it never began: everything before is lost and nothing after may
    /// run. The batch fails with this cause.
    lost: Option<Arc<SpoolError>>,
    /// Something became claimable sooner: delivery should look again.
    wake: bool,
    /// What the batch's commands owe `item_counts`, written before COMMIT.
    counts: Deltas,
}

impl Batch {
    fn settle<T: Send + 'static>(
        &mut self,
        conn: &Connection,
        reply: Reply<T>,
        res: Result<T, SpoolError>,
    ) {
        let res = self.note_lost(conn, res);
        self.answers
            .push(Box::new(move |failed: Option<&Arc<SpoolError>>| {
                let _ = reply.send(match failed {
                    None => res,
                    Some(cause) => Err(error_for_each_waiter(cause)),
                });
            }));
    }

    /// Like `settle` for a command nobody waits on: its error, or the
    /// batch's, is logged instead of answered.
    fn settle_detached(&mut self, conn: &Connection, id: i64, res: Result<(), SpoolError>) {
        let res = self.note_lost(conn, res);
        self.answers
            .push(Box::new(move |failed: Option<&Arc<SpoolError>>| {
                let error = match (failed, &res) {
                    (Some(cause), _) => cause.as_ref(),
                    (None, Err(e)) => e,
                    (None, Ok(())) => return,
                };
                tracing::error!(delivery_id = id, error = %error,
                    "spool: cannot record the delivery as done; it is delivered again once its lease ends");
            }));
    }

    /// An error after which SQLite rolled the transaction back loses the
    /// batch: it becomes the batch's cause, and this command is answered
    /// with it like every other (so what is returned here is never sent).
    fn note_lost<T>(
        &mut self,
        conn: &Connection,
        res: Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        match res {
            Err(e) if self.in_tx && self.lost.is_none() && conn.is_autocommit() => {
                let cause = Arc::new(e);
                self.lost = Some(cause.clone());
                Err(error_for_each_waiter(&cause))
            }
            res => res,
        }
    }

    /// Answers a command the batch did not run because it was already lost.
    fn unrun<T: Send + 'static>(&mut self, reply: Reply<T>, cause: &Arc<SpoolError>) {
        let err = error_for_each_waiter(cause);
        self.answers.push(Box::new(move |_| {
            let _ = reply.send(Err(err));
        }));
    }
}

impl Writer {
    /// Runs until every handle is gone or `Close` arrives, then hands back
    /// this instance's leases, unregisters it and checkpoints the WAL.
    pub(super) fn run(mut self, rx: Receiver<Cmd>) {
        let max_batch = self.max_batch.max(1);
        let mut closing = None;
        while closing.is_none() {
            let Ok(first) = rx.recv() else { break };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.run_batch(batch, &mut closing);
            if self.recount_when_alone && self.peers_checked.elapsed() >= PEER_CHECK_EVERY {
                self.recount_if_alone();
            }
        }
        // Commands sent after Close are dropped with the channel: their
        // callers see `SpoolError::Closed`.
        drop(rx);
        self.shutdown();
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Rebuilds `item_counts` once no other instance runs (see
    /// `recount_when_alone`), in a transaction of its own.
    fn recount_if_alone(&mut self) {
        self.peers_checked = Instant::now();
        let result = (|| -> Result<bool, SpoolError> {
            if instances::others_alive(&self.conn, &self.instance_id)? {
                return Ok(false);
            }
            self.set_sync_full(true)?;
            tx::immediate(&self.conn, |_| Ok(counts::recount(&self.conn)?))?;
            Ok(true)
        })();
        match result {
            Ok(false) => {}
            Ok(true) => {
                self.recount_when_alone = false;
                tracing::info!("spool: item counts rebuilt after the schema-1 hookd left");
            }
            Err(e) => tracing::warn!(error = %e, "spool: cannot rebuild item counts; trying again"),
        }
    }

    fn shutdown(&mut self) {
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
        match instances::unregister(&self.conn, &self.instance_id) {
            Ok(0) => {}
            Ok(n) => tracing::info!(leases = n, "spool: released leases at close"),
            Err(e) => tracing::warn!(error = %e, "spool: cannot unregister instance"),
        }
        let checkpoint = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        match checkpoint {
            Ok(0) => {}
            // Another process still reads the WAL: it checkpoints later.
            Ok(_) => tracing::debug!("spool: checkpoint busy at close"),
            Err(e) => tracing::warn!(error = %e, "spool: checkpoint at close failed"),
        }
    }

    fn run_batch(&mut self, cmds: Vec<Cmd>, closing: &mut Option<oneshot::Sender<()>>) {
        let count = cmds.len();
        let started = Instant::now();
        let mut batch = Batch {
            answers: Vec::with_capacity(count),
            in_tx: cmds.iter().any(Cmd::writes),
            lost: None,
            wake: false,
            counts: Deltas::default(),
        };
        let durable = cmds.iter().any(|c| matches!(c, Cmd::Enqueue(..)));
        // Not tx::immediate: commands run one by one inside the transaction
        // and each is answered on its own (one failing does not undo the
        // others), the batch stops once SQLite rolled back by itself, and
        // its COMMIT is followed by the confirming sync.
        if batch.in_tx {
            let begun = self
                .set_sync_full(durable)
                .and_then(|()| self.exec_sql("BEGIN IMMEDIATE"));
            if let Err(e) = begun {
                batch.lost = Some(Arc::new(e));
            }
        }
        for cmd in cmds {
            if let Cmd::Close(done) = cmd {
                *closing = Some(done);
                continue;
            }
            if let Some(cause) = batch.lost.clone() {
                // Not run: answered with the batch's error.
                Self::settle_unrun(&mut batch, cmd, &cause);
                continue;
            }
            self.exec(&mut batch, cmd);
        }
        let failed = if !batch.in_tx {
            None
        } else if let Some(e) = batch.lost.take() {
            if !self.conn.is_autocommit() {
                let _ = self.exec_sql("ROLLBACK");
            }
            Some(e)
        } else {
            let counted = if batch.counts.is_empty() {
                Ok(())
            } else {
                batch.counts.apply(&self.conn).map_err(SpoolError::from)
            };
            let committed = counted
                .and_then(|()| self.exec_sql("COMMIT"))
                .and_then(|()| {
                    if durable {
                        self.confirm_durable()
                    } else {
                        Ok(())
                    }
                });
            match committed {
                Ok(()) => {
                    if let Some(observe) = &self.on_commit {
                        observe(started.elapsed(), count);
                    }
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, commands = count, "spool: group commit failed");
                    if !self.conn.is_autocommit() {
                        let _ = self.exec_sql("ROLLBACK");
                    }
                    Some(Arc::new(e))
                }
            }
        };
        for answer in batch.answers {
            answer(failed.as_ref());
        }
        if failed.is_none() && batch.wake {
            self.arrivals.notify_waiters();
            self.arrivals.notify_one();
        }
    }

    /// After a durable COMMIT: whether its fsync can be believed. Two ways
    /// an ext4 that hits an error (errors=remount-ro, Debian's default) can
    /// answer a commit's fsync with success although its writes are gone:
    ///
    /// - The error lands while the commit's fsync is under way. Measured on
    ///   kernel 6.18 (emergency read-only: fsync fails with EROFS from then
    ///   on) with `cargo test --release --test fault_campaign read_only`,
    ///   30 runs each: with the COMMIT's fsync alone, 4 runs lost 6 of 835
    ///   acks, each answered 0.4-6.8 ms after the error was triggered or just
    ///   before (e2fsck "recovering journal"; the row is not in the spool
    ///   after the remount); with a second sync, 30 runs lost 0 of 824. So a
    ///   second `fdatasync` of the WAL follows each durable COMMIT: with
    ///   nothing left to write it is a journal look-up (plus a cache flush
    ///   where the device has one), it fails at once on a file system that
    ///   turned read-only or whose journal aborted, and the batch then
    ///   answers 503, never 202. Its cost: ingest at 64 connections on this
    ///   machine's ext4 fell from 9.6k to 6.7k req/s (medians of 3 with
    ///   `bench/thread_cpu.sh`, 2 loaded cores; a commit 2.5 → 4.2 ms, the
    ///   second sync's cache flush), see BENCHMARKS.md. A check of the file
    ///   system's error state instead is open (RELIABILITY.md).
    /// - Kernels that mark such an ext4 with `SB_RDONLY` (Debian 12's 6.1
    ///   among them): `ext4_sync_file` then returns 0 without writing. The
    ///   flag is set before fsync starts lying, so `statvfs` after the sync
    ///   shows `ST_RDONLY` for every such commit (not exercised on 6.18,
    ///   which uses its internal flag instead).
    ///
    /// Either way the batch fails; its rows may still be delivered from the
    /// page cache: at-least-once allows that.
    fn confirm_durable(&mut self) -> Result<(), SpoolError> {
        let Some(path) = self.conn.path().filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let path = path.to_owned();
        if self.wal.is_none() {
            // Read-only is enough for fdatasync and works on a read-only
            // mount. The WAL stays while this connection is open (SQLite
            // deletes it only at the last close), so the fd stays valid.
            self.wal = Some(std::fs::File::open(format!("{path}-wal"))?);
        }
        if let Some(wal) = &self.wal {
            wal.sync_data()?;
        }
        let st = nix::sys::statvfs::statvfs(path.as_str()).map_err(std::io::Error::from)?;
        if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            return Err(SpoolError::ReadOnly(path));
        }
        Ok(())
    }

    /// Switches between `synchronous=FULL` and `NORMAL` outside a transaction.
    fn set_sync_full(&mut self, full: bool) -> Result<(), SpoolError> {
        if self.sync_full != full {
            self.exec_sql(if full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            })?;
            self.conn
                .pragma_update(None, "wal_autocheckpoint", checkpoint_pages(full))?;
            self.sync_full = full;
        }
        Ok(())
    }

    fn exec_sql(&self, sql: &str) -> Result<(), SpoolError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Answers a command the lost batch did not run with the batch's cause.
    fn settle_unrun(batch: &mut Batch, cmd: Cmd, cause: &Arc<SpoolError>) {
        match cmd {
            Cmd::Enqueue(_, r) => batch.unrun(r, cause),
            Cmd::Claim(_, r) => batch.unrun(r, cause),
            Cmd::Finish(_, _, r) => batch.unrun(r, cause),
            Cmd::CompleteDetached(lease) => {
                tracing::error!(delivery_id = lease.id, error = %cause,
                    "spool: cannot record the delivery as done; it is delivered again once its lease ends");
            }
            Cmd::PurgeDone { reply, .. } => batch.unrun(reply, cause),
            Cmd::Depth(r) => batch.unrun(r, cause),
            Cmd::NextDue(_, _, r) => batch.unrun(r, cause),
            Cmd::Close(_) => {}
        }
    }

    fn exec(&self, batch: &mut Batch, cmd: Cmd) {
        match cmd {
            Cmd::Enqueue(item, reply) => {
                let mut counts = Deltas::default();
                let res = if item.routes.is_some() {
                    self.enqueue_atomic(&item, &mut counts)
                } else {
                    self.enqueue(&item, &mut counts)
                };
                if let Ok(Enqueued::New(_) | Enqueued::Revived(_)) = res {
                    batch.wake |= item.filtered_until.is_none();
                    batch.counts.absorb(counts);
                }
                batch.settle(&self.conn, reply, res);
            }
            Cmd::Claim(req, reply) => {
                let res = self
                    .claim(&req, &mut batch.counts)
                    .map(|(items, marked_dead)| {
                        // The hook's next item may be claimable now (ordered hooks).
                        batch.wake |= marked_dead;
                        items
                    });
                batch.settle(&self.conn, reply, res);
            }
            Cmd::Finish(lease, how, reply) => {
                let res = self.finish_counted(batch, lease, how);
                batch.settle(&self.conn, reply, res);
            }
            Cmd::CompleteDetached(lease) => {
                let res = self.finish_counted(batch, lease, Finish::Complete);
                batch.settle_detached(&self.conn, lease.id, res);
            }
            Cmd::PurgeDone { older_than, reply } => {
                let mut counts = Deltas::default();
                // Filtered items carry their own end in next_attempt.
                let cutoff = ms_ago(older_than);
                let res = purge_chunk(&self.conn, ItemState::Done, cutoff, &mut counts)
                    .and_then(|done| {
                        purge_chunk(&self.conn, ItemState::Filtered, now_ms(), &mut counts)
                            .map(|filtered| done + filtered)
                    })
                    .and_then(|n| {
                        purge_deliveries_chunk(&self.conn, ItemState::Done, cutoff, &mut counts)
                            .map(|routed| n + routed)
                    });
                if res.is_ok() {
                    batch.counts.absorb(counts);
                }
                batch.settle(&self.conn, reply, res);
            }
            Cmd::Depth(reply) => {
                let res = self.depth().map(|rows| batch.counts.overlay(rows));
                batch.settle(&self.conn, reply, res);
            }
            Cmd::NextDue(hook, route, reply) => {
                let res = self.next_due(&hook, route.as_deref());
                batch.settle(&self.conn, reply, res);
            }
            Cmd::Close(_) => {}
        }
    }

    fn finish_counted(
        &self,
        batch: &mut Batch,
        lease: Lease,
        how: Finish,
    ) -> Result<(), SpoolError> {
        let to = how.state();
        self.finish(lease, how).map(|ended| match ended {
            Some((hook, None)) => {
                batch.wake = true;
                batch.counts.moved(&hook, ItemState::Leased, to, 1);
            }
            Some((hook, Some(route))) => {
                batch.wake = true;
                batch
                    .counts
                    .moved_route(&hook, &route, ItemState::Leased, to, 1);
            }
            None => {}
        })
    }

    /// [`Writer::enqueue`] of a routed request under a savepoint: the
    /// request row and its deliveries are kept together or not at all,
    /// even when a statement fails without SQLite rolling the batch back
    /// (a constraint, say). Only routed requests pay for the savepoint.
    fn enqueue_atomic(&self, item: &NewItem, counts: &mut Deltas) -> Result<Enqueued, SpoolError> {
        self.exec_sql("SAVEPOINT enqueue_routed")?;
        let res = self.enqueue(item, counts);
        if res.is_err() && !self.conn.is_autocommit() {
            let _ = self.exec_sql("ROLLBACK TO enqueue_routed");
        }
        if !self.conn.is_autocommit() {
            self.exec_sql("RELEASE enqueue_routed")?;
        }
        res
    }

    /// Inserts `item` unless it repeats one: the hook's latest item with its
    /// dedup id, within the dedup window, is a duplicate (or, if dead, is
    /// revived); failing that, an item with its replay key within the
    /// replay window makes it a replay. Runs inside the batch's transaction,
    /// so the check and the insert commit (or fail) together.
    fn enqueue(&self, item: &NewItem, counts: &mut Deltas) -> Result<Enqueued, SpoolError> {
        let arrived = to_ms(item.received_at);
        if let Some(dedup) = &item.dedup_id {
            let latest: Option<(i64, ItemState, i64)> = self
                .conn
                .prepare_cached(sql::FIND_DEDUP)?
                .query_row(params![item.hook, dedup], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            if let Some((id, state, first_arrived)) = latest {
                let window = item.repeats.dedup_window.map(duration_ms);
                let within = window.is_none_or(|w| arrived < first_arrived.saturating_add(w));
                if within && state == ItemState::Dead {
                    let now = now_ms();
                    let n = self
                        .conn
                        .prepare_cached(sql::REVIVE)?
                        .execute(params![id, now])?;
                    if n > 0 {
                        counts.moved(&item.hook, ItemState::Dead, ItemState::Pending, 1);
                        return Ok(Enqueued::Revived(id));
                    }
                }
                if within && state == ItemState::Routed {
                    // Its dead deliveries only: the done ones stay done.
                    let moved = (ItemState::Dead, Some(ItemState::Pending));
                    let args = params![id, now_ms()];
                    let n = counts::run_counted_routes(
                        &self.conn,
                        sql::REVIVE_DELIVERIES,
                        args,
                        moved,
                        counts,
                    )?;
                    if n > 0 {
                        return Ok(Enqueued::Revived(id));
                    }
                }
                if within {
                    return Ok(Enqueued::Duplicate(id));
                }
            }
        }
        if let Some(key) = &item.repeats.replay {
            let since = arrived.saturating_sub(duration_ms(key.window));
            let first: Option<i64> = self
                .conn
                .prepare_cached(sql::FIND_REPLAY)?
                .query_row(params![item.hook, &key.digest[..], since], |r| r.get(0))
                .optional()?;
            if let Some(id) = first {
                return Ok(Enqueued::Replay(id));
            }
        }
        let now = now_ms();
        let (state, next_attempt) = match (item.filtered_until, &item.routes) {
            (Some(until), _) => (ItemState::Filtered, to_ms(until)),
            (None, Some(_)) => (ItemState::Routed, now),
            (None, None) => (ItemState::Pending, now),
        };
        self.conn.prepare_cached(sql::INSERT)?.execute(params![
            item.hook,
            item.dedup_id,
            arrived,
            encode_headers(&item.headers),
            &item.body[..],
            now,
            state.as_str(),
            next_attempt,
            item.repeats.replay.as_ref().map(|k| &k.digest[..]),
        ])?;
        let id = self.conn.last_insert_rowid();
        counts.add(&item.hook, state, 1);
        if let (Some(routes), None) = (&item.routes, item.filtered_until) {
            let mut insert = self.conn.prepare_cached(sql::INSERT_DELIVERY)?;
            for route in routes {
                insert.execute(params![id, item.hook, route, now])?;
                counts.add_route(&item.hook, route, ItemState::Pending, 1);
            }
        }
        Ok(Enqueued::New(id))
    }

    /// Claims without a savepoint: one would copy every page the claim
    /// touches into a statement journal (a temporary file once it outgrows
    /// 64 KiB), a tenth of the writer's time in a delivery drain. Each lease
    /// is one single-row UPDATE, atomic on its own, so a failure half-way
    /// leaves whole leases only, and the claim answers with those: they
    /// commit with the batch and are delivered. If SQLite rolled the whole
    /// transaction back, nothing was leased and the error is the answer.
    ///
    /// A row that cannot be read back (a corrupt headers blob, say) would
    /// fail every claim of its hook forever: it is marked dead with the
    /// reason instead, and the claim goes on. Returns the items and whether
    /// any row was marked dead so.
    fn claim(
        &self,
        req: &ClaimRequest,
        counts: &mut Deltas,
    ) -> Result<(Vec<Item>, bool), SpoolError> {
        if req.max == 0 {
            return Ok((Vec::new(), false));
        }
        let now = now_ms();
        let lease_ms = i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX);
        let expiry = now.saturating_add(lease_ms);
        if let Some(route) = &req.route {
            return self.claim_route(req, route, now, expiry, counts);
        }
        let candidates = self.claimable(req, now)?;
        let mut lease = self.conn.prepare_cached(sql::LEASE)?;
        let mut items = Vec::with_capacity(candidates.len());
        let mut from_pending = 0;
        let mut marked_dead = false;
        for (id, pending) in candidates {
            let failed: SpoolError =
                match lease.query_row(params![id, self.instance_id, expiry, now], item_from_row) {
                    Ok(item) => {
                        items.push(item);
                        from_pending += i64::from(pending);
                        continue;
                    }
                    Err(e) if undecodable(&e) => {
                        match self.mark_undecodable(&req.hook, id, pending, &e, counts) {
                            Ok(()) => {
                                marked_dead = true;
                                continue;
                            }
                            Err(e) => e,
                        }
                    }
                    Err(e) => e.into(),
                };
            if items.is_empty() || self.conn.is_autocommit() {
                return Err(failed);
            }
            tracing::warn!(hook = %req.hook, leased = items.len(), error = %failed,
                "spool: claim stopped half-way; delivering what it leased");
            break;
        }
        counts.moved(
            &req.hook,
            ItemState::Pending,
            ItemState::Leased,
            from_pending,
        );
        Ok((items, marked_dead))
    }

    /// [`Writer::claim`] of one route's delivery rows: the same order and
    /// the same rules, each lease one single-row UPDATE of `deliveries`,
    /// then the request read from its items row.
    fn claim_route(
        &self,
        req: &ClaimRequest,
        route: &str,
        now: i64,
        expiry: i64,
        counts: &mut Deltas,
    ) -> Result<(Vec<Item>, bool), SpoolError> {
        let candidates = self.claimable_route(req, route, now)?;
        let mut lease = self.conn.prepare_cached(sql::LEASE_DELIVERY)?;
        let mut request = self.conn.prepare_cached(sql::REQUEST)?;
        let mut items = Vec::with_capacity(candidates.len());
        let mut from_pending = 0;
        let mut marked_dead = false;
        for (row, pending) in candidates {
            let leased = lease.query_row(params![row, self.instance_id, expiry, now], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            });
            let failed: SpoolError = match leased {
                Ok((item_id, attempts, last_error, lease_expiry)) => {
                    match request.query_row([item_id], item_from_row).optional() {
                        Ok(Some(mut item)) => {
                            item.state = ItemState::Leased;
                            item.attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
                            item.next_attempt = from_ms(now);
                            item.last_error = last_error;
                            item.lease_owner = Some(self.instance_id.clone());
                            item.lease_expiry = lease_expiry.map(from_ms);
                            item.delivery = Some(RouteDelivery {
                                row,
                                route: route.to_owned(),
                            });
                            items.push(item);
                            from_pending += i64::from(pending);
                            continue;
                        }
                        Ok(None) => {
                            let e = format!("request {item_id} of this delivery is gone");
                            match self.mark_route_undecodable(req, route, row, pending, &e, counts)
                            {
                                Ok(()) => {
                                    marked_dead = true;
                                    continue;
                                }
                                Err(e) => e,
                            }
                        }
                        Err(e) if undecodable(&e) => {
                            let e = e.to_string();
                            match self.mark_route_undecodable(req, route, row, pending, &e, counts)
                            {
                                Ok(()) => {
                                    marked_dead = true;
                                    continue;
                                }
                                Err(e) => e,
                            }
                        }
                        Err(e) => e.into(),
                    }
                }
                Err(e) => e.into(),
            };
            if items.is_empty() || self.conn.is_autocommit() {
                return Err(failed);
            }
            tracing::warn!(hook = %req.hook, route, leased = items.len(), error = %failed,
                "spool: claim stopped half-way; delivering what it leased");
            break;
        }
        counts.moved_route(
            &req.hook,
            route,
            ItemState::Pending,
            ItemState::Leased,
            from_pending,
        );
        Ok((items, marked_dead))
    }

    /// Marks delivery row `row`, whose request cannot be read, dead.
    fn mark_route_undecodable(
        &self,
        req: &ClaimRequest,
        route: &str,
        row: i64,
        pending: bool,
        e: &str,
        counts: &mut Deltas,
    ) -> Result<(), SpoolError> {
        let reason =
            format!("the stored request cannot be read back, so it cannot be delivered: {e}");
        let changed = self
            .conn
            .prepare_cached(sql::MARK_DELIVERY_UNDECODABLE)?
            .execute(params![row, now_ms(), reason])?;
        if changed > 0 {
            // The lease UPDATE ran first: the row was leased by then.
            let from = if pending {
                ItemState::Pending
            } else {
                ItemState::Leased
            };
            counts.moved_route(&req.hook, route, from, ItemState::Dead, 1);
            tracing::error!(hook = %req.hook, route, delivery_row = row, error = %e,
                "spool: delivery's request cannot be read back; marked dead");
        }
        Ok(())
    }

    /// [`Writer::claimable`] for one route's delivery rows (row ids).
    fn claimable_route(
        &self,
        req: &ClaimRequest,
        route: &str,
        now: i64,
    ) -> Result<Vec<(i64, bool)>, SpoolError> {
        let hook = &req.hook;
        if req.ordered {
            let live: Option<i64> = self
                .conn
                .prepare_cached(sql::LIVE_LEASE_DELIVERY)?
                .query_row(params![hook, route, now], |r| r.get(0))
                .optional()?;
            if live.is_some() {
                return Ok(Vec::new());
            }
            let head: Option<(i64, ItemState, i64)> = self
                .conn
                .prepare_cached(sql::ORDERED_HEAD_DELIVERY)?
                .query_row(params![hook, route], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            return Ok(match head {
                Some((id, ItemState::Leased, _)) => vec![(id, false)],
                Some((id, state, next)) if next <= now => vec![(id, state == ItemState::Pending)],
                _ => Vec::new(),
            });
        }
        let max = i64::try_from(req.max).unwrap_or(i64::MAX);
        let mut ids: Vec<(i64, bool)> = self
            .conn
            .prepare_cached(sql::EXPIRED_LEASES_DELIVERY)?
            .query_map(params![hook, route, now, max], |r| Ok((r.get(0)?, false)))?
            .collect::<Result<_, _>>()?;
        let room = max - ids.len() as i64;
        if room > 0 {
            let mut stmt = self.conn.prepare_cached(sql::DUE_PENDING_DELIVERY)?;
            for id in stmt.query_map(params![hook, route, now, room], |r| r.get(0))? {
                ids.push((id?, true));
            }
        }
        Ok(ids)
    }

    /// Marks item `id` of `hook`, which `claim` could not decode, dead with
    /// the reason (its lease, if the claim took it, cleared).
    fn mark_undecodable(
        &self,
        hook: &str,
        id: i64,
        pending: bool,
        e: &rusqlite::Error,
        counts: &mut Deltas,
    ) -> Result<(), SpoolError> {
        let reason = format!("the stored item cannot be read back, so it cannot be delivered: {e}");
        let changed = self
            .conn
            .prepare_cached(sql::MARK_UNDECODABLE)?
            .execute(params![id, now_ms(), reason])?;
        if changed > 0 {
            let from = if pending {
                ItemState::Pending
            } else {
                ItemState::Leased
            };
            counts.moved(hook, from, ItemState::Dead, 1);
            tracing::error!(hook, delivery_id = id, error = %e,
                "spool: item cannot be read back; marked dead");
        }
        Ok(())
    }

    /// Ids the claim may lease, in order, each with whether it is pending
    /// (else its lease expired).
    fn claimable(&self, req: &ClaimRequest, now: i64) -> Result<Vec<(i64, bool)>, SpoolError> {
        if req.ordered {
            let head = self.ordered_head(&req.hook, now)?;
            return Ok(head
                .map(|(id, state)| (id, state == ItemState::Pending))
                .into_iter()
                .collect());
        }
        let max = i64::try_from(req.max).unwrap_or(i64::MAX);
        // Expired leases first: they are older work a crashed or slow
        // worker left behind. Then pending items in due order.
        let mut ids: Vec<(i64, bool)> = self
            .conn
            .prepare_cached(sql::EXPIRED_LEASES)?
            .query_map(params![req.hook, now, max], |r| Ok((r.get(0)?, false)))?
            .collect::<Result<_, _>>()?;
        let room = max - ids.len() as i64;
        if room > 0 {
            let mut stmt = self.conn.prepare_cached(sql::DUE_PENDING)?;
            for id in stmt.query_map(params![req.hook, now, room], |r| r.get(0))? {
                ids.push((id?, true));
            }
        }
        Ok(ids)
    }

    /// The hook's oldest unfinished item and its state, if it may be claimed
    /// now: no item of the hook under a live lease, and the head is due.
    fn ordered_head(&self, hook: &str, now: i64) -> Result<Option<(i64, ItemState)>, SpoolError> {
        let live: Option<i64> = self
            .conn
            .prepare_cached(sql::LIVE_LEASE)?
            .query_row(params![hook, now], |r| r.get(0))
            .optional()?;
        if live.is_some() {
            return Ok(None);
        }
        let head: Option<(i64, ItemState, i64)> = self
            .conn
            .prepare_cached(sql::ORDERED_HEAD)?
            .query_row([hook], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(match head {
            // Leased but no live lease: its lease expired.
            Some((id, ItemState::Leased, _)) => Some((id, ItemState::Leased)),
            Some((id, state, next_attempt)) if next_attempt <= now => Some((id, state)),
            _ => None,
        })
    }

    /// Ends `lease`, if this instance still holds it, and returns the
    /// item's hook; `Ok(None)` when it does not (lease lost to expiry and
    /// another claim, its own included, or item gone).
    /// The route is `Some` for a deliveries row. The lease's table picks
    /// the statements, so a lease of one table never ends a row of the other.
    fn finish(
        &self,
        lease: Lease,
        how: Finish,
    ) -> Result<Option<(String, Option<String>)>, SpoolError> {
        let now = now_ms();
        let me = &self.instance_id;
        let id = lease.id;
        let expiry = lease.expiry_ms();
        let routed = lease.table == LeaseTable::Deliveries;
        let pick = |items: &'static str, deliveries: &'static str| {
            if routed {
                deliveries
            } else {
                items
            }
        };
        let hook = |r: &rusqlite::Row<'_>| {
            let route = if routed { Some(r.get(1)?) } else { None };
            Ok((r.get::<_, String>(0)?, route))
        };
        let hook = match how {
            Finish::Complete => self
                .conn
                .prepare_cached(pick(sql::COMPLETE, sql::COMPLETE_DELIVERY))?
                .query_row(params![id, me, now, expiry], hook),
            Finish::RetryLater {
                next_attempt,
                error,
            } => self
                .conn
                .prepare_cached(pick(sql::RETRY_LATER, sql::RETRY_LATER_DELIVERY))?
                .query_row(params![id, me, now, next_attempt, error, expiry], hook),
            Finish::Dead { error } => self
                .conn
                .prepare_cached(pick(sql::MARK_DEAD, sql::MARK_DEAD_DELIVERY))?
                .query_row(params![id, me, now, error, expiry], hook),
            Finish::Release => self
                .conn
                .prepare_cached(pick(sql::RELEASE, sql::RELEASE_DELIVERY))?
                .query_row(params![id, me, now, expiry], hook),
        }
        .optional()?;
        if hook.is_none() {
            tracing::debug!(
                id,
                "spool: no lease of ours on item (or a newer one); nothing changed"
            );
        }
        Ok(hook)
    }

    fn depth(&self) -> Result<Vec<DepthRow>, SpoolError> {
        depth(&self.conn)
    }

    fn next_due(&self, hook: &str, route: Option<&str>) -> Result<Option<SystemTime>, SpoolError> {
        let now = now_ms();
        let (pending, lease): (Option<i64>, Option<i64>) = match route {
            None => (
                self.conn
                    .prepare_cached(sql::NEXT_PENDING)?
                    .query_row(params![hook, now], |r| r.get(0))?,
                self.conn
                    .prepare_cached(sql::NEXT_LEASE_EXPIRY)?
                    .query_row([hook], |r| r.get(0))?,
            ),
            Some(route) => (
                self.conn
                    .prepare_cached(sql::NEXT_PENDING_DELIVERY)?
                    .query_row(params![hook, route, now], |r| r.get(0))?,
                self.conn
                    .prepare_cached(sql::NEXT_LEASE_EXPIRY_DELIVERY)?
                    .query_row(params![hook, route], |r| r.get(0))?,
            ),
        };
        let earliest = match (pending, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(earliest.map(from_ms))
    }
}

/// A duration in milliseconds, saturating.
fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a claim failed reading the row into an [`Item`] (a column
/// SQLite returned fine but that does not decode), not in SQLite itself.
fn undecodable(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// Counts by hook and state, from the counter table (no row scan).
pub(crate) fn depth(conn: &Connection) -> Result<Vec<DepthRow>, SpoolError> {
    let mut stmt = conn.prepare_cached(sql::DEPTH)?;
    let rows = stmt.query_map([], |r| {
        Ok(DepthRow {
            hook: r.get(0)?,
            route: r.get(1)?,
            state: r.get(2)?,
            count: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        })
    })?;
    let mut rows: Vec<DepthRow> = rows.collect::<Result<_, _>>()?;
    rows.sort_by(|a, b| {
        (&a.hook, &a.route, a.state.as_str()).cmp(&(&b.hook, &b.route, b.state.as_str()))
    });
    Ok(rows)
}

/// Hot-path SQL, kept together so a test can check every plan uses an index.
pub(crate) mod sql {
    /// The latest item with this dedup id (older ones are past their window).
    pub(crate) const FIND_DEDUP: &str = "SELECT id, state, received_at FROM items \
         WHERE hook = ?1 AND dedup_id = ?2 ORDER BY id DESC LIMIT 1";
    pub(crate) const FIND_REPLAY: &str = "SELECT id FROM items \
         WHERE hook = ?1 AND replay_key = ?2 AND received_at >= ?3 ORDER BY id LIMIT 1";
    /// A redelivered dead item: pending again, due now, attempts from zero.
    pub(crate) const REVIVE: &str = "UPDATE items SET state = 'pending', attempts = 0, \
         next_attempt = ?2, last_error = NULL, updated_at = ?2 \
         WHERE id = ?1 AND state = 'dead'";
    pub(crate) const INSERT: &str =
        "INSERT INTO items (hook, dedup_id, received_at, headers, body, \
         state, attempts, next_attempt, updated_at, replay_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?7, 0, ?8, ?6, ?9)";
    pub(crate) const EXPIRED_LEASES: &str =
        "SELECT id FROM items WHERE hook = ?1 AND state = 'leased' \
         AND lease_expiry < ?2 ORDER BY id LIMIT ?3";
    pub(crate) const DUE_PENDING: &str =
        "SELECT id FROM items WHERE hook = ?1 AND state = 'pending' \
         AND next_attempt <= ?2 ORDER BY next_attempt, id LIMIT ?3";
    pub(crate) const LIVE_LEASE: &str =
        "SELECT id FROM items WHERE hook = ?1 AND state = 'leased' \
         AND lease_expiry >= ?2 LIMIT 1";
    pub(crate) const ORDERED_HEAD: &str = "SELECT id, state, next_attempt FROM items \
         WHERE hook = ?1 AND state IN ('pending', 'leased') ORDER BY id LIMIT 1";
    // Column list must match codec::ITEM_COLUMNS (checked by a test).
    pub(crate) const LEASE: &str = "UPDATE items SET state = 'leased', lease_owner = ?2, \
         lease_expiry = ?3, updated_at = ?4 WHERE id = ?1 \
         RETURNING id, hook, dedup_id, received_at, headers, body, state, \
         attempts, next_attempt, last_error, lease_owner, lease_expiry";
    // The lease-ending statements act on our own lease only and, when the
    // caller names it by its expiry (the last parameter), on that one only.
    pub(crate) const COMPLETE: &str = "UPDATE items SET state = 'done', attempts = attempts + 1, \
         lease_owner = NULL, lease_expiry = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?4 IS NULL OR lease_expiry = ?4) RETURNING hook";
    pub(crate) const RETRY_LATER: &str =
        "UPDATE items SET state = 'pending', attempts = attempts + 1, \
         next_attempt = ?4, last_error = ?5, lease_owner = NULL, lease_expiry = NULL, \
         updated_at = ?3 WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?6 IS NULL OR lease_expiry = ?6) RETURNING hook";
    pub(crate) const MARK_DEAD: &str = "UPDATE items SET state = 'dead', attempts = attempts + 1, \
         last_error = ?4, lease_owner = NULL, lease_expiry = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?5 IS NULL OR lease_expiry = ?5) RETURNING hook";
    pub(crate) const RELEASE: &str = "UPDATE items SET state = 'pending', lease_owner = NULL, \
         lease_expiry = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?4 IS NULL OR lease_expiry = ?4) RETURNING hook";
    pub(crate) const PURGE_DONE: &str = "DELETE FROM items WHERE id IN (SELECT id FROM items \
         WHERE state = 'done' AND updated_at < ?1 LIMIT ?2) RETURNING hook";
    pub(crate) const PURGE_DEAD: &str = "DELETE FROM items WHERE id IN (SELECT id FROM items \
         WHERE state = 'dead' AND updated_at < ?1 LIMIT ?2) RETURNING hook";
    pub(crate) const PURGE_FILTERED: &str = "DELETE FROM items WHERE id IN (SELECT id FROM items \
         WHERE state = 'filtered' AND next_attempt < ?1 LIMIT ?2) RETURNING hook";
    /// Not hot: only for a row `claim` could not decode. Its hook is not
    /// returned, since that may be what fails to decode.
    pub(crate) const MARK_UNDECODABLE: &str = "UPDATE items SET state = 'dead', last_error = ?3, \
         lease_owner = NULL, lease_expiry = NULL, updated_at = ?2 WHERE id = ?1";
    /// Sorted by the caller: an ORDER BY over the union would sort in SQL.
    pub(crate) const DEPTH: &str = "SELECT hook, NULL AS route, state, n FROM item_counts \
         WHERE n > 0 UNION ALL SELECT hook, route, state, n FROM delivery_counts WHERE n > 0";
    pub(crate) const NEXT_PENDING: &str = "SELECT MIN(next_attempt) FROM items \
         WHERE hook = ?1 AND state = 'pending' AND next_attempt > ?2";
    pub(crate) const NEXT_LEASE_EXPIRY: &str =
        "SELECT MIN(lease_expiry) FROM items WHERE hook = ?1 AND state = 'leased'";

    // Route deliveries (schema v5): the statements above for `deliveries`
    // rows of one (hook, route), the route after the hook.
    pub(crate) const INSERT_DELIVERY: &str =
        "INSERT INTO deliveries (item, hook, route, state, attempts, next_attempt, updated_at) \
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)";
    /// A redelivered request's dead deliveries: pending again, due now.
    pub(crate) const REVIVE_DELIVERIES: &str =
        "UPDATE deliveries SET state = 'pending', attempts = 0, \
         next_attempt = ?2, last_error = NULL, updated_at = ?2 \
         WHERE item = ?1 AND state = 'dead' RETURNING hook, route";
    pub(crate) const EXPIRED_LEASES_DELIVERY: &str =
        "SELECT id FROM deliveries WHERE hook = ?1 AND route = ?2 AND state = 'leased' \
         AND lease_expiry < ?3 ORDER BY id LIMIT ?4";
    pub(crate) const DUE_PENDING_DELIVERY: &str =
        "SELECT id FROM deliveries WHERE hook = ?1 AND route = ?2 AND state = 'pending' \
         AND next_attempt <= ?3 ORDER BY next_attempt, id LIMIT ?4";
    pub(crate) const LIVE_LEASE_DELIVERY: &str =
        "SELECT id FROM deliveries WHERE hook = ?1 AND route = ?2 AND state = 'leased' \
         AND lease_expiry >= ?3 LIMIT 1";
    pub(crate) const ORDERED_HEAD_DELIVERY: &str =
        "SELECT id, state, next_attempt FROM deliveries \
         WHERE hook = ?1 AND route = ?2 AND state IN ('pending', 'leased') ORDER BY id LIMIT 1";
    pub(crate) const LEASE_DELIVERY: &str =
        "UPDATE deliveries SET state = 'leased', lease_owner = ?2, \
         lease_expiry = ?3, updated_at = ?4 WHERE id = ?1 \
         RETURNING item, attempts, last_error, lease_expiry";
    /// The request of a claimed delivery (its delivery columns are the row's).
    pub(crate) const REQUEST: &str = concat!(
        "SELECT id, hook, dedup_id, received_at, headers, body, state, ",
        "attempts, next_attempt, last_error, lease_owner, lease_expiry FROM items WHERE id = ?1"
    );
    pub(crate) const COMPLETE_DELIVERY: &str =
        "UPDATE deliveries SET state = 'done', attempts = attempts + 1, \
         lease_owner = NULL, lease_expiry = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?4 IS NULL OR lease_expiry = ?4) RETURNING hook, route";
    pub(crate) const RETRY_LATER_DELIVERY: &str =
        "UPDATE deliveries SET state = 'pending', attempts = attempts + 1, \
         next_attempt = ?4, last_error = ?5, lease_owner = NULL, lease_expiry = NULL, \
         updated_at = ?3 WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?6 IS NULL OR lease_expiry = ?6) RETURNING hook, route";
    pub(crate) const MARK_DEAD_DELIVERY: &str =
        "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, \
         last_error = ?4, lease_owner = NULL, lease_expiry = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?5 IS NULL OR lease_expiry = ?5) RETURNING hook, route";
    pub(crate) const RELEASE_DELIVERY: &str =
        "UPDATE deliveries SET state = 'pending', lease_owner = NULL, \
         lease_expiry = NULL, updated_at = ?3 \
         WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 \
         AND (?4 IS NULL OR lease_expiry = ?4) RETURNING hook, route";
    pub(crate) const MARK_DELIVERY_UNDECODABLE: &str =
        "UPDATE deliveries SET state = 'dead', last_error = ?3, \
         lease_owner = NULL, lease_expiry = NULL, updated_at = ?2 WHERE id = ?1";
    pub(crate) const PURGE_DONE_DELIVERIES: &str =
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
         WHERE state = 'done' AND updated_at < ?1 LIMIT ?2) RETURNING hook, route, item";
    pub(crate) const PURGE_DEAD_DELIVERIES: &str =
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
         WHERE state = 'dead' AND updated_at < ?1 LIMIT ?2) RETURNING hook, route, item";
    /// A routed request once no delivery of it is left.
    pub(crate) const PURGE_ROUTED_REQUEST: &str =
        "DELETE FROM items WHERE id = ?1 AND state = 'routed' \
         AND NOT EXISTS (SELECT 1 FROM deliveries WHERE item = ?1)";
    pub(crate) const NEXT_PENDING_DELIVERY: &str = "SELECT MIN(next_attempt) FROM deliveries \
         WHERE hook = ?1 AND route = ?2 AND state = 'pending' AND next_attempt > ?3";
    pub(crate) const NEXT_LEASE_EXPIRY_DELIVERY: &str = "SELECT MIN(lease_expiry) FROM deliveries \
         WHERE hook = ?1 AND route = ?2 AND state = 'leased'";

    /// Every statement above with its parameter count, for plan checks.
    #[cfg(test)]
    pub(crate) const HOT: &[(&str, usize)] = &[
        (FIND_DEDUP, 2),
        (FIND_REPLAY, 3),
        (REVIVE, 2),
        (EXPIRED_LEASES, 3),
        (DUE_PENDING, 3),
        (LIVE_LEASE, 2),
        (ORDERED_HEAD, 1),
        (LEASE, 4),
        (COMPLETE, 4),
        (RETRY_LATER, 6),
        (MARK_DEAD, 5),
        (RELEASE, 4),
        (PURGE_DONE, 2),
        (PURGE_DEAD, 2),
        (PURGE_FILTERED, 2),
        (MARK_UNDECODABLE, 3),
        (NEXT_PENDING, 2),
        (NEXT_LEASE_EXPIRY, 1),
        (INSERT_DELIVERY, 4),
        (REVIVE_DELIVERIES, 2),
        (EXPIRED_LEASES_DELIVERY, 4),
        (DUE_PENDING_DELIVERY, 4),
        (LIVE_LEASE_DELIVERY, 3),
        (ORDERED_HEAD_DELIVERY, 2),
        (LEASE_DELIVERY, 4),
        (REQUEST, 1),
        (COMPLETE_DELIVERY, 4),
        (RETRY_LATER_DELIVERY, 6),
        (MARK_DEAD_DELIVERY, 5),
        (RELEASE_DELIVERY, 4),
        (MARK_DELIVERY_UNDECODABLE, 3),
        (PURGE_DONE_DELIVERIES, 2),
        (PURGE_DEAD_DELIVERIES, 2),
        (PURGE_ROUTED_REQUEST, 1),
        (NEXT_PENDING_DELIVERY, 3),
        (NEXT_LEASE_EXPIRY_DELIVERY, 2),
    ];
}

#[cfg(test)]
mod tests {
    use super::super::codec::ITEM_COLUMNS;
    use super::*;

    #[test]
    fn lease_returns_item_columns() {
        let returning = sql::LEASE.split("RETURNING").nth(1).unwrap();
        let norm = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(norm(returning), norm(ITEM_COLUMNS));
        let request = sql::REQUEST.split("FROM").next().unwrap();
        assert_eq!(norm(request), norm(&format!("SELECT {ITEM_COLUMNS}")));
    }
}
