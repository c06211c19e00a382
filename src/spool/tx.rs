//! The one immediate transaction every spool write outside the writer's
//! group commit goes through (migrations, instance registration, the admin
//! CLI, the writer's recount).

use rusqlite::Connection;

use super::counts::Deltas;
use super::SpoolError;

/// Runs `change` in a `BEGIN IMMEDIATE` transaction: the write lock is
/// taken up front, so two processes never both read and then fail to
/// upgrade. The item counts `change` reports are written just before the
/// COMMIT, so counts and rows change together. Any error rolls back (unless
/// SQLite already did) and is returned.
pub(crate) fn immediate<T>(
    conn: &Connection,
    change: impl FnOnce(&mut Deltas) -> Result<T, SpoolError>,
) -> Result<T, SpoolError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut counts = Deltas::default();
    let result = change(&mut counts).and_then(|v| {
        if !counts.is_empty() {
            counts.apply(conn)?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(v)
    });
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}
