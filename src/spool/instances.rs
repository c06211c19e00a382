//! Which hookd processes use the spool, and freeing the leases of dead ones.

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use rusqlite::{params, Connection};

use super::codec::now_ms;
use super::counts::{self, Deltas};
use super::tx;
use super::{ItemState, SpoolError};

/// Fields of /proc/<pid>/stat after comm: the state letter (field 3) and
/// the start time in clock ticks since boot (field 22).
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) may hold spaces and parentheses: fields after it start
    // behind the last ')'. The first of them is field 3, so 22 is index 19.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let start = rest.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22).
/// With the pid it names one process start: a reused pid has another.
pub(crate) fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// Whether the process registered as (`pid`, `start_time`) still runs. A
/// zombie (killed, not yet reaped by its parent) or dying process does not:
/// it will never touch its leases again, so they go back at once instead of
/// waiting out their expiry.
pub(crate) fn is_alive(pid: i64, start_time: Option<i64>) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    let exists = || !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH));
    if !exists() {
        return false;
    }
    match proc_stat(pid) {
        Some(('Z' | 'X', _)) => false,
        Some((_, now)) => match start_time {
            Some(registered) => u64::try_from(registered) == Ok(now),
            None => true,
        },
        // /proc hidden from us: trust kill(); a wrong guess only keeps leases
        // until they expire.
        None => exists(),
    }
}

/// Leases freed when an instance registered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released {
    pub dead_instances: u64,
    pub leases: u64,
    /// Other instances that still run (a hand-off partner).
    pub live_instances: u64,
}

const RELEASE_OWNER: &str = "UPDATE items SET state = 'pending', lease_owner = NULL, \
     lease_expiry = NULL, updated_at = ?2 WHERE state = 'leased' AND lease_owner = ?1 \
     RETURNING hook";

pub(crate) const RELEASE_ORPHANS: &str = "UPDATE items SET state = 'pending', lease_owner = NULL, \
     lease_expiry = NULL, updated_at = ?1 WHERE state = 'leased' \
     AND lease_owner NOT IN (SELECT id FROM instances) RETURNING hook";

const RELEASE_OWNER_DELIVERIES: &str = "UPDATE deliveries SET state = 'pending', \
     lease_owner = NULL, lease_expiry = NULL, updated_at = ?2 \
     WHERE state = 'leased' AND lease_owner = ?1 RETURNING hook, route";

const RELEASE_ORPHANS_DELIVERIES: &str = "UPDATE deliveries SET state = 'pending', \
     lease_owner = NULL, lease_expiry = NULL, updated_at = ?1 WHERE state = 'leased' \
     AND lease_owner NOT IN (SELECT id FROM instances) RETURNING hook, route";

const BY_OWNER: (&str, &str) = (RELEASE_OWNER, RELEASE_OWNER_DELIVERIES);
const ORPHANS: (&str, &str) = (RELEASE_ORPHANS, RELEASE_ORPHANS_DELIVERIES);

/// Runs a lease release (`RETURNING hook`), counting leased → pending, and
/// the same release of route deliveries.
fn release(
    conn: &Connection,
    (sql, routes): (&str, &str),
    args: impl rusqlite::Params + Clone,
    counts: &mut Deltas,
) -> rusqlite::Result<u64> {
    let moved = (ItemState::Leased, Some(ItemState::Pending));
    let items = counts::run_counted(conn, sql, args.clone(), moved, counts)?;
    Ok(items + counts::run_counted_routes(conn, routes, args, moved, counts)?)
}

/// Every registered instance but `me`: (id, pid, start time).
fn others(conn: &Connection, me: &str) -> rusqlite::Result<Vec<(String, i64, Option<i64>)>> {
    conn.prepare_cached("SELECT id, pid, start_time FROM instances WHERE id <> ?1")?
        .query_map([me], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Registers `instance_id` as this process, unregisters every instance whose
/// process is gone and hands their leases back (leased → pending, attempts
/// unchanged). Leases owned by no registered instance go back too. Leases of
/// live instances (a hand-off partner) are kept. One transaction.
pub(crate) fn register(conn: &Connection, instance_id: &str) -> Result<Released, SpoolError> {
    let pid = std::process::id();
    let start_time = i32::try_from(pid)
        .ok()
        .and_then(proc_start_time)
        .and_then(|t| i64::try_from(t).ok());
    tx::immediate(conn, |counts| {
        let now = now_ms();
        conn.execute(
            "INSERT OR REPLACE INTO instances (id, pid, start_time, started_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![instance_id, pid, start_time, now],
        )?;
        let mut released = Released::default();
        for (id, pid, start_time) in others(conn, instance_id)? {
            if is_alive(pid, start_time) {
                released.live_instances += 1;
                continue;
            }
            released.leases += release(conn, BY_OWNER, params![id, now], counts)?;
            conn.execute("DELETE FROM instances WHERE id = ?1", [&id])?;
            released.dead_instances += 1;
        }
        released.leases += release(conn, ORPHANS, [now], counts)?;
        Ok(released)
    })
}

/// Hands back this instance's leases and removes its row (clean shutdown).
pub(crate) fn unregister(conn: &Connection, instance_id: &str) -> Result<u64, SpoolError> {
    tx::immediate(conn, |counts| {
        let n = release_owner(conn, instance_id, counts)?;
        conn.execute("DELETE FROM instances WHERE id = ?1", [instance_id])?;
        Ok(n)
    })
}

/// Releases leases held by `owner` (this instance at close, or a process that is gone).
pub(crate) fn release_owner(
    conn: &Connection,
    owner: &str,
    counts: &mut Deltas,
) -> rusqlite::Result<u64> {
    release(conn, BY_OWNER, params![owner, now_ms()], counts)
}

/// Whether an instance other than `me` is registered and still runs.
pub(crate) fn others_alive(conn: &Connection, me: &str) -> rusqlite::Result<bool> {
    Ok(others(conn, me)?
        .into_iter()
        .any(|(_, pid, start)| is_alive(pid, start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_reused_pid_is_not() {
        let pid = std::process::id() as i32;
        let start = proc_start_time(pid).expect("own /proc stat") as i64;
        assert!(is_alive(pid as i64, Some(start)));
        assert!(!is_alive(pid as i64, Some(start + 1)));
        assert!(!is_alive(0, None));
        assert!(!is_alive(-1, None));
    }

    #[test]
    fn zombie_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: once it has exited it stays a zombie until wait().
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let start = loop {
            match proc_stat(pid) {
                Some(('Z', start)) => break start,
                Some(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => panic!("child {pid} not a zombie in time: {other:?}"),
            }
        };
        assert!(!is_alive(pid as i64, Some(start as i64)));
        assert!(!is_alive(pid as i64, None));
        child.wait().unwrap();
    }

    #[test]
    fn reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i64;
        child.wait().unwrap();
        // The pid could in theory be reused at once; then its start time differs.
        assert!(!is_alive(pid, Some(0)));
    }
}
