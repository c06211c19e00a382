//! The `item_counts` table: items by (hook, state), so depth never counts rows.
//!
//! Schema v1 kept it with triggers, which cost every insert and update a
//! second statement and a statement journal. Since v2 the code that changes
//! a state says so here, in the same transaction: the writer sums a whole
//! group commit's changes and writes them once, before its COMMIT.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::{DepthRow, ItemState};

/// Count changes one transaction owes `item_counts`, by hook.
#[derive(Debug, Default)]
pub(crate) struct Deltas(HashMap<String, [i64; 5]>);

fn slot(state: ItemState) -> usize {
    match state {
        ItemState::Pending => 0,
        ItemState::Leased => 1,
        ItemState::Done => 2,
        ItemState::Dead => 3,
        ItemState::Filtered => 4,
    }
}

const STATES: [ItemState; 5] = [
    ItemState::Pending,
    ItemState::Leased,
    ItemState::Done,
    ItemState::Dead,
    ItemState::Filtered,
];

impl Deltas {
    /// `n` items of `hook` appeared in (positive) or left (negative) `state`.
    pub(crate) fn add(&mut self, hook: &str, state: ItemState, n: i64) {
        if n == 0 {
            return;
        }
        // Look up by &str first: the hot path finds the hook already there.
        match self.0.get_mut(hook) {
            Some(row) => row[slot(state)] += n,
            None => {
                let mut row = [0; 5];
                row[slot(state)] = n;
                self.0.insert(hook.to_owned(), row);
            }
        }
    }

    /// `n` items of `hook` went from `from` to `to`.
    pub(crate) fn moved(&mut self, hook: &str, from: ItemState, to: ItemState, n: i64) {
        if from != to {
            self.add(hook, from, -n);
            self.add(hook, to, n);
        }
    }

    /// Adds `other`'s changes to these (a command that succeeded).
    pub(crate) fn absorb(&mut self, other: Deltas) {
        for (hook, row) in other.0 {
            for (state, n) in STATES.iter().zip(row) {
                self.add(&hook, *state, n);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.values().all(|row| row.iter().all(|n| *n == 0))
    }

    /// `rows` (the table as read inside the batch's transaction) with these
    /// changes, which reach the table only before COMMIT, added: a depth read
    /// queued after a command that is not waited on (a detached complete)
    /// then counts it, as it sees its row. Same order and no-zero rule as
    /// the table's read.
    pub(crate) fn overlay(&self, rows: Vec<DepthRow>) -> Vec<DepthRow> {
        let mut all: Vec<(String, ItemState, i64)> = rows
            .into_iter()
            .map(|r| (r.hook, r.state, i64::try_from(r.count).unwrap_or(i64::MAX)))
            .collect();
        for (hook, row) in &self.0 {
            for (state, n) in STATES.iter().zip(row) {
                match all.iter_mut().find(|(h, s, _)| h == hook && s == state) {
                    Some(r) => r.2 += n,
                    None => all.push((hook.clone(), *state, *n)),
                }
            }
        }
        let mut out: Vec<DepthRow> = all
            .into_iter()
            .filter(|r| r.2 > 0)
            .map(|(hook, state, n)| DepthRow {
                hook,
                state,
                count: n.unsigned_abs(),
            })
            .collect();
        out.sort_by(|a, b| (&a.hook, a.state.as_str()).cmp(&(&b.hook, b.state.as_str())));
        out
    }

    /// Writes the changes (inside the caller's transaction) and forgets them.
    pub(crate) fn apply(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO item_counts (hook, state, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (hook, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for (hook, row) in self.0.drain() {
            for (state, n) in STATES.iter().zip(row) {
                if n != 0 {
                    upsert.execute(params![hook, state.as_str(), n])?;
                }
            }
        }
        Ok(())
    }
}

/// Runs `sql`, which must end in `RETURNING hook`, and counts each row it
/// changed as moved out of `from` into `to` (`None`: the row was deleted).
/// Returns how many rows it changed. The caller commits.
pub(crate) fn run_counted(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    (from, to): (ItemState, Option<ItemState>),
    counts: &mut Deltas,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let hook: String = row.get(0)?;
        match to {
            Some(to) => counts.moved(&hook, from, to, 1),
            None => counts.add(&hook, from, -1),
        }
        n += 1;
    }
    Ok(n)
}

/// Rebuilds the table from the rows: after the v2 migration, after rows were
/// changed by code that kept no count (bulk loads in tests and benchmarks, a
/// v1 hookd draining during a hand-off). Reads every row's index entry: a
/// fraction of a second per million items.
pub(crate) fn recount(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DELETE FROM item_counts;
         INSERT INTO item_counts (hook, state, n)
             SELECT hook, state, count(*) FROM items GROUP BY hook, state;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_sum_and_cancel() {
        let mut d = Deltas::default();
        assert!(d.is_empty());
        d.add("a", ItemState::Pending, 1);
        d.moved("a", ItemState::Pending, ItemState::Leased, 1);
        assert!(!d.is_empty());
        d.moved("a", ItemState::Leased, ItemState::Leased, 5);
        assert_eq!(d.0["a"], [0, 1, 0, 0, 0]);
        d.add("a", ItemState::Leased, -1);
        assert!(d.is_empty());
    }

    #[test]
    fn overlay_adds_unwritten_changes_to_the_table_read() {
        let row = |hook: &str, state, count| DepthRow {
            hook: hook.into(),
            state,
            count,
        };
        let mut d = Deltas::default();
        d.moved("a", ItemState::Leased, ItemState::Done, 1);
        d.add("b", ItemState::Pending, 2);
        let table = vec![row("a", ItemState::Leased, 1)];
        assert_eq!(
            d.overlay(table),
            vec![
                row("a", ItemState::Done, 1),
                row("b", ItemState::Pending, 2)
            ]
        );
    }
}
