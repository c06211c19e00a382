//! The PostgreSQL writer's statements, prepared once per connection. Arrays
//! through `unnest` carry a whole batch in one statement.

/// Blocks of ids for this node (see `id_blocks` in schema.sql).
pub(crate) const ID_BLOCKS: &str = "SELECT nextval('id_blocks') FROM generate_series(1, $1::int4)";
/// Ids per block of `id_blocks`.
pub(crate) const BLOCK: i64 = 1024;

pub(crate) const REGISTER: &str = "INSERT INTO instances (id, node, pid) VALUES ($1, $2, $3)";
pub(crate) const SAME_NODE: &str = "SELECT id, pid FROM instances WHERE node = $1 AND id <> $2";
/// Rows of processes not heard from in an hour: their leases ran out long
/// ago; only the rows are left.
pub(crate) const FORGET_LONG_GONE: &str =
    "DELETE FROM instances WHERE heartbeat_at < now() - interval '1 hour'";
pub(crate) const UNREGISTER: &str = "DELETE FROM instances WHERE id = $1";
pub(crate) const RELEASE_OWNER: &str = "UPDATE deliveries SET state = 'pending', \
     lease_owner = NULL, lease_expiry = NULL, updated_at = now() \
     WHERE state = 'leased' AND lease_owner = $1 RETURNING hook, route";
/// Every group commit: the heartbeat, and the commit's own number.
pub(crate) const MARK_COMMIT: &str =
    "UPDATE instances SET heartbeat_at = now(), commit_seq = $2 WHERE id = $1";
pub(crate) const COMMIT_SEQ: &str = "SELECT commit_seq FROM instances WHERE id = $1";
pub(crate) const HEARTBEAT: &str = "UPDATE instances SET heartbeat_at = now() WHERE id = $1";

/// Transaction-scoped advisory locks on the batch's repeat keys (hashed
/// text), taken in key order before the lookups: a node inserting a key
/// holds it until its COMMIT, so another node's lookup of the same key
/// waits and then sees the row (READ COMMITTED: each statement sees what
/// committed before it began). Sorted, so two batches never wait on each
/// other in a circle; before TAKE_SEQ's row locks, in every batch.
pub(crate) const LOCK_REPEATS: &str = "SELECT pg_advisory_xact_lock(k) FROM \
     (SELECT DISTINCT hashtextextended(t, 26728) AS k FROM unnest($1::text[]) AS t ORDER BY 1) s";

/// The latest request of each (hook, dedup id) asked for.
pub(crate) const FIND_DEDUP: &str = "SELECT DISTINCT ON (k.hook, k.dedup) \
     k.hook, k.dedup, r.id, r.received_at \
     FROM unnest($1::text[], $2::text[]) AS k(hook, dedup) \
     JOIN requests r ON r.hook = k.hook AND r.dedup_id = k.dedup \
     ORDER BY k.hook, k.dedup, r.received_at DESC, r.id DESC";
/// The first request with each replay key since its window began.
pub(crate) const FIND_REPLAY: &str = "SELECT DISTINCT ON (k.i) k.i, r.id \
     FROM unnest($1::int4[], $2::text[], $3::bytea[], $4::timestamptz[]) AS k(i, hook, key, since) \
     JOIN requests r ON r.hook = k.hook AND r.replay_key = k.key AND r.received_at >= k.since \
     ORDER BY k.i, r.received_at, r.id";
/// Redelivered requests: their dead deliveries pending again, from zero.
pub(crate) const REVIVE: &str = "UPDATE deliveries SET state = 'pending', attempts = 0, \
     next_attempt = now(), last_error = NULL, updated_at = now() \
     WHERE request_id = ANY($1::int8[]) AND state = 'dead' RETURNING request_id, hook, route";
/// Sequence numbers for ordered routes, taken under each route's row lock
/// (in key order, so two writers never wait on each other in a circle).
/// Returns the next free number after the batch's.
pub(crate) const TAKE_SEQ: &str = "INSERT INTO route_heads (hook, route, next_seq) \
     SELECT h, r, 1 + n FROM unnest($1::text[], $2::text[], $3::int8[]) AS k(h, r, n) ORDER BY h, r \
     ON CONFLICT (hook, route) DO UPDATE SET next_seq = route_heads.next_seq + excluded.next_seq - 1 \
     RETURNING hook, route, next_seq";
pub(crate) const INSERT_REQUESTS: &str = "INSERT INTO requests \
     (id, hook, received_at, headers, body, dedup_id, replay_key, state, purge_after) \
     SELECT * FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::bytea[], $5::bytea[], \
     $6::text[], $7::bytea[], $8::text[], $9::timestamptz[])";
pub(crate) const INSERT_DELIVERIES: &str = "INSERT INTO deliveries \
     (id, request_id, hook, route, seq, next_attempt) \
     SELECT d.*, now() FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[]) \
     AS d(id, request_id, hook, route, seq)";

/// A batch of new requests and nothing else (no repeat keys, no ordered
/// route, no claim or finish), whole in one statement: the requests, their
/// deliveries, this instance's `commit_seq` and the node's depth changes.
/// With BEGIN and COMMIT pipelined around it, one round trip and three
/// statements per group commit. The deliveries' foreign key is checked at
/// the end of the statement, when the requests are there. Returns how many
/// instance rows it marked (0: this instance's row is gone).
pub(crate) const INGEST: &str = "WITH r AS (INSERT INTO requests \
     (id, hook, received_at, headers, body, dedup_id, replay_key, state, purge_after) \
     SELECT * FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::bytea[], $5::bytea[], \
     $6::text[], $7::bytea[], $8::text[], $9::timestamptz[])), \
     d AS (INSERT INTO deliveries (id, request_id, hook, route, seq, next_attempt) \
     SELECT x.*, now() FROM unnest($10::int8[], $11::int8[], $12::text[], $13::text[], $14::int8[]) \
     AS x(id, request_id, hook, route, seq)), \
     m AS (UPDATE instances SET heartbeat_at = now(), commit_seq = $16 WHERE id = $15 RETURNING 1), \
     c AS (INSERT INTO depth_counts (node, hook, route, state, n) \
     SELECT $17, h, r, s, n FROM unnest($18::text[], $19::text[], $20::text[], $21::int8[]) \
     AS k(h, r, s, n) ORDER BY h, r, s \
     ON CONFLICT (node, hook, route, state) DO UPDATE SET n = depth_counts.n + excluded.n) \
     SELECT count(*) FROM m";

/// What a claim returns, the delivery's columns then the request's.
macro_rules! leased_columns {
    () => {
        "RETURNING d.id, d.request_id, d.route, d.attempts, d.next_attempt, d.last_error, \
         d.lease_expiry, d.lease_gen, pick.was_pending, r.hook, r.dedup_id, r.received_at, \
         r.headers, r.body"
    };
}
/// The lease itself: owner, generation + 1, expiry on the database's clock.
macro_rules! lease_set {
    () => {
        "UPDATE deliveries d SET state = 'leased', lease_owner = $4, lease_gen = d.lease_gen + 1, \
         lease_expiry = now() + make_interval(secs => $5::float8), updated_at = now() \
         FROM pick, requests r WHERE d.id = pick.id AND r.id = d.request_id "
    };
}
/// Up to $3 deliveries of ($1, $2): expired leases first, then due
/// pending ones in due order; rows another claim holds are skipped.
pub(crate) const CLAIM: &str = concat!(
    "WITH expired AS (SELECT id, false AS was_pending FROM deliveries \
     WHERE hook = $1 AND route = $2 AND state = 'leased' AND lease_expiry <= now() \
     ORDER BY lease_expiry LIMIT $3 FOR UPDATE SKIP LOCKED), \
     due AS (SELECT id, true AS was_pending FROM deliveries \
     WHERE hook = $1 AND route = $2 AND state = 'pending' AND next_attempt <= now() \
     ORDER BY next_attempt, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
     pick AS (SELECT * FROM expired UNION ALL SELECT * FROM due LIMIT $3) ",
    lease_set!(),
    leased_columns!()
);
/// An ordered route: its head only (lowest seq, rows from before it was
/// ordered first), and only if due and not under a live lease. A head
/// another node is claiming right now is locked: skipped, so nothing is
/// taken, never the row behind it. ($3 is there to share CLAIM's
/// parameters and always 1.)
pub(crate) const CLAIM_ORDERED: &str = concat!(
    "WITH head AS (SELECT id FROM deliveries WHERE hook = $1 AND route = $2 \
     AND state IN ('pending', 'leased') ORDER BY seq NULLS FIRST, id LIMIT $3), \
     pick AS (SELECT d.id, d.state = 'pending' AS was_pending FROM deliveries d JOIN head USING (id) \
     WHERE (d.state = 'pending' AND d.next_attempt <= now()) \
     OR (d.state = 'leased' AND d.lease_expiry <= now()) FOR UPDATE OF d SKIP LOCKED) ",
    lease_set!(),
    leased_columns!()
);
/// Every finish of a batch at once, each only while the row is still under
/// the lease it names ($8 the owner, gen the generation; gen NULL: any).
pub(crate) const FINISH: &str = "UPDATE deliveries d SET state = f.state, \
     attempts = d.attempts + f.counted, next_attempt = COALESCE(f.next_attempt, d.next_attempt), \
     last_error = CASE WHEN f.set_error THEN f.error ELSE d.last_error END, \
     lease_owner = NULL, lease_expiry = NULL, updated_at = now() \
     FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int4[], $5::timestamptz[], $6::bool[], $7::text[]) \
     AS f(id, gen, state, counted, next_attempt, set_error, error) \
     WHERE d.id = f.id AND d.state = 'leased' AND d.lease_owner = $8 \
     AND (f.gen IS NULL OR d.lease_gen = f.gen) RETURNING d.hook, d.route, d.state";
pub(crate) const PURGE_DONE: &str =
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
     WHERE state = 'done' AND updated_at < now() - make_interval(secs => $1::float8) LIMIT $2) \
     RETURNING hook, route, request_id";
/// Requests whose last delivery just went.
pub(crate) const PURGE_EMPTY_REQUESTS: &str = "DELETE FROM requests r \
     WHERE r.id = ANY($1::int8[]) AND r.state = 'accepted' \
     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.request_id = r.id)";
pub(crate) const PURGE_FILTERED: &str =
    "DELETE FROM requests WHERE id IN (SELECT id FROM requests \
     WHERE state = 'filtered' AND purge_after < now() LIMIT $1) RETURNING hook";
/// This node's share of the batch's state changes.
pub(crate) const ADD_DEPTH: &str = "INSERT INTO depth_counts (node, hook, route, state, n) \
     SELECT $1, h, r, s, n FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[]) \
     AS k(h, r, s, n) ORDER BY h, r, s \
     ON CONFLICT (node, hook, route, state) DO UPDATE SET n = depth_counts.n + excluded.n";
pub(crate) const DEPTH: &str = "SELECT hook, route, state, sum(n)::int8 FROM depth_counts \
     GROUP BY hook, route, state HAVING sum(n) > 0 ORDER BY hook, route, state";
pub(crate) const NEXT_DUE: &str = "SELECT LEAST(\
     (SELECT min(next_attempt) FROM deliveries WHERE hook = $1 AND route = $2 \
      AND state = 'pending' AND next_attempt > now()), \
     (SELECT min(lease_expiry) FROM deliveries WHERE hook = $1 AND route = $2 AND state = 'leased'))";
