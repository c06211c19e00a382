//! Fault injection with strace: a wrapper script that runs hookd under
//! `strace -f` tracing only the sync calls, with an `inject=` on them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The sync calls SQLite's unix VFS may use (fdatasync where the platform
/// has it, fsync otherwise and for directories); both get the fault.
const SYNCS: &str = "fsync,fdatasync";

/// Writes `dir/hookd-under-strace`, which runs the real binary with its
/// arguments under strace, logging the sync calls to `out`. `inject` is the
/// part after `inject=fsync,fdatasync:` (e.g. `error=EIO:when=40`).
pub fn wrapper(dir: &Path, out: &Path, inject: &str) -> PathBuf {
    let script = dir.join("hookd-under-strace");
    let text = format!(
        "#!/bin/sh\nexec strace -f -qq -y --seccomp-bpf -o '{}' -e trace={SYNCS} -e inject={SYNCS}:{inject} -- '{}' \"$@\"\n",
        out.display(),
        crate::common::BIN
    );
    std::fs::write(&script, text).expect("write the strace wrapper");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the strace wrapper");
    script
}

fn lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sync calls on the spool's WAL so far: the group commits' syncs (`-y`
/// prints each fd's path; checkpoints sync the database file instead).
/// A call cut by another thread's line shows as `unfinished` then
/// `resumed`; the first carries the fd, so those are counted.
pub fn wal_syncs(out: &Path) -> usize {
    lines(out)
        .iter()
        .filter(|l| (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains("-wal>"))
        .count()
}

/// Durable group commits so far: the writer follows each durable COMMIT
/// (whose own WAL sync is an `fsync`: SQLite here is built without
/// `HAVE_FDATASYNC`) with one `fdatasync` of the WAL to confirm it
/// (`Writer::confirm_durable`), and nothing else fdatasyncs the WAL, so
/// these count commits, not the checkpoints' syncs of the same file.
pub fn wal_commits(out: &Path) -> usize {
    lines(out)
        .iter()
        .filter(|l| l.contains("fdatasync(") && l.contains("-wal>"))
        .count()
}

/// Sync calls strace failed on purpose.
pub fn injected_errors(out: &Path) -> usize {
    lines(out)
        .iter()
        .filter(|l| l.contains("(INJECTED)") && l.contains("= -1"))
        .count()
}
