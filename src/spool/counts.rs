//! The `item_counts` table: items by (hook, state), so depth never counts
//! rows; and since v5 `delivery_counts`, route deliveries by (hook, route,
//! state), kept the same way.
//!
//! Schema v1 kept it with triggers, which cost every insert and update a
//! second statement and a statement journal. Since v2 the code that changes
//! a state says so here, in the same transaction: the writer sums a whole
//! group commit's changes and writes them once, before its COMMIT.
//!
//! `routed` requests are never counted in `item_counts`: a v4 hookd sharing
//! the file during a hand-off parses every state it reads there.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::{DepthRow, ItemState};

/// Count changes one transaction owes `item_counts` (by hook) and
/// `delivery_counts` (by hook and route).
#[derive(Debug, Default)]
pub(crate) struct Deltas(HashMap<String, [i64; 5]>, Routes);

/// Changes owed `delivery_counts`, by (hook, route).
type Routes = HashMap<(String, String), [i64; 5]>;

/// `None` for `routed`, which no count holds.
fn slot(state: ItemState) -> Option<usize> {
    match state {
        ItemState::Pending => Some(0),
        ItemState::Leased => Some(1),
        ItemState::Done => Some(2),
        ItemState::Dead => Some(3),
        ItemState::Filtered => Some(4),
        ItemState::Routed => None,
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
        let Some(slot) = slot(state).filter(|_| n != 0) else {
            return;
        };
        // Look up by &str first: the hot path finds the hook already there.
        match self.0.get_mut(hook) {
            Some(row) => row[slot] += n,
            None => {
                let mut row = [0; 5];
                row[slot] = n;
                self.0.insert(hook.to_owned(), row);
            }
        }
    }

    /// `n` deliveries of (`hook`, `route`) appeared in or left `state`.
    pub(crate) fn add_route(&mut self, hook: &str, route: &str, state: ItemState, n: i64) {
        let Some(slot) = slot(state).filter(|_| n != 0) else {
            return;
        };
        let row = self
            .1
            .entry((hook.to_owned(), route.to_owned()))
            .or_insert([0; 5]);
        row[slot] += n;
    }

    /// `n` deliveries of (`hook`, `route`) went from `from` to `to`.
    pub(crate) fn moved_route(
        &mut self,
        hook: &str,
        route: &str,
        from: ItemState,
        to: ItemState,
        n: i64,
    ) {
        if from != to {
            self.add_route(hook, route, from, -n);
            self.add_route(hook, route, to, n);
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
        for ((hook, route), row) in other.1 {
            for (state, n) in STATES.iter().zip(row) {
                self.add_route(&hook, &route, *state, n);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0
            .values()
            .chain(self.1.values())
            .all(|row| row.iter().all(|n| *n == 0))
    }

    /// `rows` (the table as read inside the batch's transaction) with these
    /// changes, which reach the table only before COMMIT, added: a depth read
    /// queued after a command that is not waited on (a detached complete)
    /// then counts it, as it sees its row. Same order and no-zero rule as
    /// the table's read.
    pub(crate) fn overlay(&self, rows: Vec<DepthRow>) -> Vec<DepthRow> {
        type Key = (String, Option<String>, ItemState);
        let mut all: Vec<(Key, i64)> = rows
            .into_iter()
            .map(|r| {
                let n = i64::try_from(r.count).unwrap_or(i64::MAX);
                ((r.hook, r.route, r.state), n)
            })
            .collect();
        let mut put = |key: Key, n: i64| match all.iter_mut().find(|(k, _)| *k == key) {
            Some(r) => r.1 += n,
            None => all.push((key, n)),
        };
        for (hook, row) in &self.0 {
            for (state, n) in STATES.iter().zip(row) {
                put((hook.clone(), None, *state), *n);
            }
        }
        for ((hook, route), row) in &self.1 {
            for (state, n) in STATES.iter().zip(row) {
                put((hook.clone(), Some(route.clone()), *state), *n);
            }
        }
        let mut out: Vec<DepthRow> = all
            .into_iter()
            .filter(|r| r.1 > 0)
            .map(|((hook, route, state), n)| DepthRow {
                hook,
                route,
                state,
                count: n.unsigned_abs(),
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.hook, &a.route, a.state.as_str()).cmp(&(&b.hook, &b.route, b.state.as_str()))
        });
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
        if self.1.is_empty() {
            return Ok(());
        }
        let mut upsert = conn.prepare_cached(
            "INSERT INTO delivery_counts (hook, route, state, n) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (hook, route, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((hook, route), row) in self.1.drain() {
            for (state, n) in STATES.iter().zip(row) {
                if n != 0 {
                    upsert.execute(params![hook, route, state.as_str(), n])?;
                }
            }
        }
        Ok(())
    }
}

/// Like [`run_counted`] for `deliveries`: `sql` must end in
/// `RETURNING hook, route`.
pub(crate) fn run_counted_routes(
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
        let route: String = row.get(1)?;
        match to {
            Some(to) => counts.moved_route(&hook, &route, from, to, 1),
            None => counts.add_route(&hook, &route, from, -1),
        }
        n += 1;
    }
    Ok(n)
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
             SELECT hook, state, count(*) FROM items WHERE state <> 'routed'
             GROUP BY hook, state;
         DELETE FROM delivery_counts;
         INSERT INTO delivery_counts (hook, route, state, n)
             SELECT hook, route, state, count(*) FROM deliveries GROUP BY hook, route, state;",
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
            route: None,
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
