-- The proposed PostgreSQL spool schema for issue 15, as bench/pg_baseline.sh
-- measures it. It mirrors the SQLite layout of schema v5 (a request row per
-- webhook, a delivery row per route) with what the anchors' bugs taught:
-- node-chosen ids (an ambiguous COMMIT is resolved by looking them up), a
-- lease generation fencing every completion, lease expiry from the database
-- clock, a per-(hook, route) sequence for ordered routes with one live lease
-- as the database's own backstop, and depth counted per node.

-- Migrations run under pg_advisory_xact_lock and are additive; a node
-- refuses a database whose min_compatible is above its own version, so a
-- rolling upgrade works while old nodes still run.
CREATE TABLE schema_version (
    version        int         NOT NULL,
    min_compatible int         NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schema_version (version, min_compatible) VALUES (1, 1);

-- One row per running hookd process; leases name it. A node whose heartbeat
-- is older than its lease time is gone: its leases may be taken.
CREATE TABLE instances (
    id           text        PRIMARY KEY,
    node         text        NOT NULL,
    pid          int         NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- The webhook as received. id is chosen by the node (its node number in the
-- high bits, a local counter below), never by a sequence: after a lost
-- connection the node asks which of its ids committed.
CREATE TABLE requests (
    id          bigint      PRIMARY KEY,
    hook        text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    headers     bytea       NOT NULL,
    body        bytea       NOT NULL,
    dedup_id    text,
    replay_key  bytea,
    -- 'filtered': a `when` did not match; kept until purge_after, no delivery.
    state       text        NOT NULL DEFAULT 'accepted'
                CHECK (state IN ('accepted', 'filtered')),
    purge_after timestamptz
);
CREATE INDEX requests_dedup  ON requests (hook, dedup_id)   WHERE dedup_id IS NOT NULL;
CREATE INDEX requests_replay ON requests (hook, replay_key) WHERE replay_key IS NOT NULL;
CREATE INDEX requests_filtered ON requests (purge_after)    WHERE state = 'filtered';

-- The next sequence number of each ordered (hook, route): the ingest
-- transaction takes it under this row's lock, so seq is in commit order
-- (a sequence's ids are not).
CREATE TABLE route_heads (
    hook     text   NOT NULL,
    route    text   NOT NULL,
    next_seq bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (hook, route)
);

-- One row per (request, route): what delivery claims and completes.
CREATE TABLE deliveries (
    request_id   bigint      NOT NULL,
    route        text        NOT NULL,
    hook         text        NOT NULL,
    seq          bigint,     -- ordered routes only
    state        text        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts     int         NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    lease_owner  text,
    -- Bumped by every claim; a completion names the generation it holds
    -- and updates nothing if the row has moved on (a late one from an
    -- expired lease).
    lease_gen    bigint      NOT NULL DEFAULT 0,
    lease_expiry timestamptz,  -- now() + lease, the database's clock
    finished_at  timestamptz,
    PRIMARY KEY (request_id, route)
) WITH (fillfactor = 80,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0.01);
-- Due unordered work, in due order: the claim reads its head.
CREATE INDEX deliveries_due    ON deliveries (next_attempt)
    WHERE state = 'pending' AND seq IS NULL;
-- The open head of each ordered route.
CREATE INDEX deliveries_open   ON deliveries (hook, route, seq)
    WHERE state IN ('pending', 'leased') AND seq IS NOT NULL;
CREATE INDEX deliveries_leased ON deliveries (lease_expiry) WHERE state = 'leased';
CREATE INDEX deliveries_done   ON deliveries (finished_at)  WHERE state = 'done';
CREATE INDEX deliveries_dead   ON deliveries (hook, finished_at) WHERE state = 'dead';
-- At most one live lease per ordered (hook, route), whatever the nodes do.
CREATE UNIQUE INDEX deliveries_one_live_lease ON deliveries (hook, route)
    WHERE state = 'leased' AND seq IS NOT NULL;

-- Depth by node: each node adds its group commit's changes to its own rows,
-- so no two nodes wait on one counts row; readers sum over nodes.
CREATE TABLE depth_counts (
    node  text   NOT NULL,
    hook  text   NOT NULL,
    route text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (node, hook, route, state)
);
