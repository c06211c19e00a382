//! Benchmark peer: the disk's one-fsync-per-write rate. SQLite in WAL mode
//! with synchronous=FULL, one ~1 KiB row per transaction, from one thread,
//! for a fixed time. Prints `rows N seconds S rows_per_s R`.
//!
//! Usage: `fsync_per_row DB_PATH [SECONDS]` (default 5). The file is created
//! fresh (an existing one and its -wal/-shm are removed first).

use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{params, Connection};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    const USAGE: &str = "usage: fsync_per_row DB_PATH [SECONDS]";
    let path = args.next().context(USAGE)?;
    // The file at DB_PATH is removed first: an option is never taken for one.
    anyhow::ensure!(!path.starts_with('-'), USAGE);
    let seconds: f64 = match args.next() {
        Some(s) => s.parse().context("SECONDS must be a number")?,
        None => 5.0,
    };
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let conn = Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, body BLOB NOT NULL)",
    )?;
    let body = vec![b'x'; 1024];
    let mut stmt = conn.prepare("INSERT INTO rows (received_at, body) VALUES (?1, ?2)")?;
    let limit = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut rows: u64 = 0;
    while start.elapsed() < limit {
        // Autocommit: each INSERT is its own transaction, so one WAL fsync each.
        stmt.execute(params![rows as i64, &body])?;
        rows += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "rows {rows} seconds {elapsed:.3} rows_per_s {:.0}",
        rows as f64 / elapsed
    );
    Ok(())
}
