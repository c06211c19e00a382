//! [`Spool`]: the cheap, cloneable handle ingress and delivery hold.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, Notify};

use super::checkpoint::Checkpointer;
use super::codec::to_ms;
use super::pg::writer::PgWriter;
use super::pg::PgOptions;
use super::writer::{checkpoint_pages, Cmd, Finish, Reply, Writer, PURGE_CHUNK};
use super::{instances, schema};
use super::{
    ClaimRequest, DepthRow, Enqueued, Item, Lease, NewItem, SpoolError, SpoolOptions, Store,
};

/// Handle to an open spool. Clones share one writer thread; the thread stops
/// after [`Spool::close`] or when the last clone is dropped (then it also
/// hands back this instance's leases, unregisters it and checkpoints).
///
/// Every async method resolves after its group commit is durable (or failed).
/// Methods on a closed spool return [`SpoolError::Closed`].
#[derive(Clone)]
pub(crate) struct Spool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("store", &self.inner.name)
            .field("instance_id", &self.inner.instance_id)
            .finish()
    }
}

struct Inner {
    tx: Sender<Cmd>,
    /// The file's path or the database's redacted URL, for messages.
    name: String,
    /// The node's name on a PostgreSQL spool; None for a file.
    node: Option<String>,
    instance_id: String,
    arrivals: Arc<Notify>,
    /// False while the PostgreSQL spool's last commit or heartbeat found
    /// the database unreachable; always true for a file.
    reachable: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Our sender goes with us; the writer drains what is queued and stops.
        // Joining makes "all handles dropped" mean "file released".
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let (dead_tx, _) = mpsc::channel();
            drop(std::mem::replace(&mut self.tx, dead_tx));
            let _ = thread.join();
        }
    }
}

impl Spool {
    /// Opens or creates the spool (an SQLite file or a PostgreSQL
    /// database, as `opts.store` says), migrates its schema, registers
    /// `opts.instance_id` and releases leases of instances whose process no
    /// longer runs; then starts the writer thread. Blocking: call before
    /// serving or via `spawn_blocking`.
    pub(crate) fn open(opts: SpoolOptions) -> Result<Spool, SpoolError> {
        let arrivals = Arc::new(Notify::new());
        let reachable = Arc::new(AtomicBool::new(true));
        let name = opts.store.describe();
        let node = match &opts.store {
            Store::File(_) => None,
            Store::Postgres(pg) => Some(pg.node.clone()),
        };
        let (tx, thread) = match &opts.store {
            Store::File(path) => open_file(path.clone(), &opts, arrivals.clone())?,
            Store::Postgres(pg) => {
                open_postgres(pg.clone(), &opts, arrivals.clone(), reachable.clone())?
            }
        };
        Ok(Spool {
            inner: Arc::new(Inner {
                tx,
                name,
                node,
                instance_id: opts.instance_id,
                arrivals,
                reachable,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(make(reply))
            .map_err(|_| SpoolError::Closed)?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Stores a new item; `Ok` only once it is durable. A repeat of a
    /// (hook, dedup_id) pair answers `Duplicate(first id)` and writes nothing.
    /// An `Err` means nothing of this item was kept.
    pub(crate) async fn enqueue(&self, item: NewItem) -> Result<Enqueued, SpoolError> {
        self.call(|r| Cmd::Enqueue(item, r)).await
    }

    /// Leases up to `req.max` due items of `req.hook` (or, with `req.route`,
    /// that route's deliveries) to this instance:
    /// items whose lease expired first, then pending items in due order
    /// (next_attempt, then id). With `ordered`, at most the hook's oldest
    /// unfinished item, and only when no item of the hook is under a live
    /// lease and that item is due.
    pub(crate) async fn claim(&self, req: ClaimRequest) -> Result<Vec<Item>, SpoolError> {
        self.call(|r| Cmd::Claim(req, r)).await
    }

    /// Delivered: leased → done, attempts + 1, lease cleared.
    ///
    /// This and the other lease-ending methods act only on an item under
    /// `lease`, held by this instance; otherwise (lease expired and taken by
    /// someone else, or claimed again by this instance after it ran out, or
    /// no such item) they return `Ok(())` and change nothing.
    #[cfg(test)]
    pub(crate) async fn complete(&self, lease: impl Into<Lease>) -> Result<(), SpoolError> {
        let lease = lease.into();
        self.call(|r| Cmd::Finish(lease, Finish::Complete, r)).await
    }

    /// [`complete`](Self::complete) without waiting for its commit, so the
    /// delivery's slot takes its next item at once: that wait was a group
    /// commit per delivered item. `Err` only if the spool is closed. The
    /// writer commits it before anything sent after it (a `Close` included)
    /// and logs a failure itself; the item then stays leased until this
    /// instance releases it or the lease expires, and is delivered again
    /// (at-least-once).
    pub(crate) fn complete_detached(&self, lease: impl Into<Lease>) -> Result<(), SpoolError> {
        self.inner
            .tx
            .send(Cmd::CompleteDetached(lease.into()))
            .map_err(|_| SpoolError::Closed)
    }

    /// Failed, try again: leased → pending at `next_attempt`, attempts + 1,
    /// `last_error` set, lease cleared.
    pub(crate) async fn retry_later(
        &self,
        lease: impl Into<Lease>,
        next_attempt: SystemTime,
        error: &str,
    ) -> Result<(), SpoolError> {
        let how = Finish::RetryLater {
            next_attempt: to_ms(next_attempt),
            error: error.to_owned(),
        };
        let lease = lease.into();
        self.call(|r| Cmd::Finish(lease, how, r)).await
    }

    /// Given up: leased → dead, attempts + 1, `last_error` set.
    pub(crate) async fn mark_dead(
        &self,
        lease: impl Into<Lease>,
        error: &str,
    ) -> Result<(), SpoolError> {
        let how = Finish::Dead {
            error: error.to_owned(),
        };
        let lease = lease.into();
        self.call(|r| Cmd::Finish(lease, how, r)).await
    }

    /// Not attempted to the end (drain gave up): leased → pending, due at
    /// once, attempts unchanged.
    pub(crate) async fn release(&self, lease: impl Into<Lease>) -> Result<(), SpoolError> {
        let lease = lease.into();
        self.call(|r| Cmd::Finish(lease, Finish::Release, r)).await
    }

    /// Deletes done items last updated more than `older_than` ago, and
    /// filtered items past their `keep_filtered`; returns how many. Works in
    /// chunks, so enqueues are not held up meanwhile.
    pub(crate) async fn purge_done(&self, older_than: Duration) -> Result<u64, SpoolError> {
        let mut total = 0;
        loop {
            let n = self
                .call(|reply| Cmd::PurgeDone { older_than, reply })
                .await?;
            total += n;
            if n < u64::from(PURGE_CHUNK) {
                return Ok(total);
            }
        }
    }

    /// Item counts by hook and state (states with no items are left out).
    /// Reads a counter table kept with every change: cheap at any spool size.
    pub(crate) async fn depth(&self) -> Result<Vec<DepthRow>, SpoolError> {
        self.call(Cmd::Depth).await
    }

    /// When something of `hook` not claimable now becomes claimable: the
    /// earliest future `next_attempt` of its pending items or the earliest
    /// lease expiry of its leased items (may be in the past: an expired
    /// lease is claimable now). `None`: nothing waits. Items already due are
    /// not counted (claim them). Other processes' completions are not seen
    /// here, so cap a sleep on this (hand-off with `ordered` hooks).
    pub(crate) async fn next_due(
        &self,
        hook: &str,
        route: Option<&str>,
    ) -> Result<Option<SystemTime>, SpoolError> {
        let hook = hook.to_owned();
        let route = route.map(str::to_owned);
        self.call(|r| Cmd::NextDue(hook, route, r)).await
    }

    /// Woken after each commit that may let a claim return more than before:
    /// new items, a released lease, a finished item (unblocks an `ordered`
    /// hook), a retry scheduled (may be sooner than a sleeper's deadline).
    ///
    /// Each such commit calls `notify_waiters()` (wakes every task waiting
    /// now) and then `notify_one()` (stores one permit, so a task between its
    /// claim and its `notified().await` does not miss it). Expect spurious
    /// wake-ups; claim again after every one.
    pub(crate) fn arrivals(&self) -> Arc<Notify> {
        self.inner.arrivals.clone()
    }

    /// Finishes every command queued before this call, hands back this
    /// instance's remaining leases, unregisters it, checkpoints the WAL
    /// (`TRUNCATE`) and stops the writer. Other clones get
    /// [`SpoolError::Closed`] afterwards.
    pub(crate) async fn close(self) {
        let (done, closed) = oneshot::channel();
        if self.inner.tx.send(Cmd::Close(done)).is_ok() {
            let _ = closed.await;
        }
        // Join off the async threads; the writer has finished by now.
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// The spool file's path or the database's redacted URL.
    pub(crate) fn describe(&self) -> &str {
        &self.inner.name
    }

    /// Whether the database answered this node's last commit or heartbeat
    /// (a file spool always is): `/readyz` fails while it did not, so a load
    /// balancer sends webhooks to a node that can store them.
    pub(crate) fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Acquire)
    }

    /// This node's name on a PostgreSQL spool (`[spool] node`); None for
    /// a file, which has one node only.
    pub(crate) fn node(&self) -> Option<&str> {
        self.inner.node.as_deref()
    }

    /// This process's lease owner id.
    pub(crate) fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }
}

type Started = (Sender<Cmd>, JoinHandle<()>);

/// The SQLite writer: WAL mode, synchronous=FULL, migrations, registration.
fn open_file(
    path: PathBuf,
    opts: &SpoolOptions,
    arrivals: Arc<Notify>,
) -> Result<Started, SpoolError> {
    let conn = schema::open_rw(&path)?;
    let found = schema::migrate(&conn)?;
    let released = instances::register(&conn, &opts.instance_id)?;
    // A v1 hookd still running (an upgrade's hand-off) changes states
    // without counting them: recount once it has gone.
    let recount_when_alone = found == 1 && released.live_instances > 0;
    if released.leases > 0 || released.dead_instances > 0 {
        tracing::info!(
            leases = released.leases,
            dead_instances = released.dead_instances,
            "spool: released leases of instances that no longer run"
        );
    }
    // The writer starts at synchronous=FULL; see writer::checkpoint_pages.
    conn.pragma_update(None, "wal_autocheckpoint", checkpoint_pages(true))?;
    let writer = Writer {
        conn,
        instance_id: opts.instance_id.clone(),
        max_batch: opts.max_batch,
        on_commit: opts.on_commit.clone(),
        arrivals,
        sync_full: true,
        checkpointer: Some(Checkpointer::start(path)?),
        recount_when_alone,
        peers_checked: std::time::Instant::now(),
        wal: None,
    };
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("hookd-spool".into())
        .spawn(move || writer.run(rx))?;
    Ok((tx, thread))
}

/// The PostgreSQL writer on its own thread and current-thread runtime
/// (which also drives its connection); returns once it has connected,
/// migrated and registered, or failed to.
fn open_postgres(
    pg: PgOptions,
    opts: &SpoolOptions,
    arrivals: Arc<Notify>,
    reachable: Arc<AtomicBool>,
) -> Result<Started, SpoolError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (instance_id, max_batch, on_commit) = (
        opts.instance_id.clone(),
        opts.max_batch,
        opts.on_commit.clone(),
    );
    let (opened_tx, opened) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("hookd-spool".into())
        .spawn(move || {
            let writer = rt.block_on(PgWriter::open(
                pg,
                instance_id,
                max_batch,
                on_commit,
                arrivals,
                reachable,
            ));
            match writer {
                Ok(w) => {
                    let _ = opened_tx.send(Ok(()));
                    w.run(rt, rx);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            }
        })?;
    match opened.recv() {
        Ok(Ok(())) => Ok((tx, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(SpoolError::Closed),
    }
}
