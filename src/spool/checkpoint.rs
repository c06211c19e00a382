//! Checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses its
//! threshold (`writer::checkpoint_pages`): the writer copies the WAL into the database file
//! and fsyncs it while every waiting webhook waits too. This thread, on its
//! own connection, runs PASSIVE checkpoints alongside the commits, so the one
//! in the writer finds little left to copy. The writer's own checkpoint stays:
//! it is the one that catches up completely, which lets the WAL start over
//! (a busy writer keeps a concurrent checkpoint from ever finishing).

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::schema;

/// How often the WAL is copied back; between two runs it grows by what the
/// writer commits in that time.
const EVERY: Duration = Duration::from_millis(100);

/// The running checkpointer; dropping `stop` (via [`Checkpointer::stop`]) ends it.
pub(crate) struct Checkpointer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub(crate) fn start(path: PathBuf) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hookd-checkpoint".into())
            .spawn(move || {
                let conn = match schema::open_rw(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "spool: checkpointer cannot open the spool; the WAL is checkpointed at close only");
                        return;
                    }
                };
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %e, "spool: passive checkpoint failed; trying again");
                    }
                }
            })?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stops the thread and waits for its checkpoint in progress, if any.
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}
