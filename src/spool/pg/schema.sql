-- hookd's PostgreSQL spool, schema version 1 (the layout of SQLite schema
-- v5 made for several nodes; bench/pg/DESIGN.md says why each part is so).
-- Applied by pg/schema.rs under an advisory lock, in one transaction.
-- Every later version is additive; `min_compatible` is the oldest hookd
-- schema version that may still run against the database (a rolling
-- upgrade keeps old nodes working while a new one migrates).

CREATE TABLE hookd_schema (
    version        int         NOT NULL,
    min_compatible int         NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per running hookd process. Leases name `id`. A killed process's
-- leases run out (lease_expiry, the database clock) and other nodes claim
-- them then; a new process on the same node frees them at once (its pid is
-- gone there). `hookd spool stats` calls a heartbeat older than 30 s not alive.
CREATE TABLE instances (
    id           text        PRIMARY KEY,
    node         text        NOT NULL,
    pid          int         NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- Set by every group commit of the process to its own number: after a
    -- connection lost during COMMIT, the process reads it back to learn
    -- whether that commit happened.
    commit_seq   bigint      NOT NULL DEFAULT 0
);

-- Request and delivery ids are chosen by the node that writes them, from
-- blocks of this sequence (block b gives ids b * 1024 .. b * 1024 + 1023),
-- so after a connection lost during COMMIT the node can ask which of its
-- ids are there. A block taken and not used is a gap, nothing worse.
CREATE SEQUENCE id_blocks START 1;

-- The webhook as received, once per request whatever its routes.
CREATE TABLE requests (
    id          bigint      PRIMARY KEY,
    hook        text        NOT NULL,
    received_at timestamptz NOT NULL,
    headers     bytea       NOT NULL,
    body        bytea       NOT NULL,
    dedup_id    text,
    replay_key  bytea,
    -- 'filtered': no rule matched; no delivery row, kept until purge_after.
    state       text        NOT NULL DEFAULT 'accepted'
                CHECK (state IN ('accepted', 'filtered')),
    purge_after timestamptz
);
CREATE INDEX requests_dedup    ON requests (hook, dedup_id, id) WHERE dedup_id IS NOT NULL;
CREATE INDEX requests_replay   ON requests (hook, replay_key)   WHERE replay_key IS NOT NULL;
CREATE INDEX requests_filtered ON requests (hook, purge_after)  WHERE state = 'filtered';

-- The next sequence number of each ordered (hook, route): an ingest
-- transaction takes it under this row's lock, so `seq` follows commit
-- order (ids, chosen before the commit, do not).
CREATE TABLE route_heads (
    hook     text   NOT NULL,
    route    text   NOT NULL,
    next_seq bigint NOT NULL,
    PRIMARY KEY (hook, route)
);

-- One row per (request, route): what delivery claims and finishes. A plain
-- hook's request has one, route 'default'.
CREATE TABLE deliveries (
    id           bigint      PRIMARY KEY,
    request_id   bigint      NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    hook         text        NOT NULL,
    route        text        NOT NULL,
    seq          bigint,     -- set for routes that were ordered at ingest
    state        text        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts     int         NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL,
    last_error   text,
    lease_owner  text,
    -- Bumped by every claim. Every finish names the generation it holds and
    -- changes nothing if the row has moved on (a late result of an expired
    -- lease, from any node).
    lease_gen    bigint      NOT NULL DEFAULT 0,
    lease_expiry timestamptz, -- now() + lease: the database's clock
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, route)
) WITH (fillfactor = 80,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0.01);
-- Due work of one (hook, route), in due order: the claim reads its head.
CREATE INDEX deliveries_due     ON deliveries (hook, route, next_attempt, id)
    WHERE state = 'pending';
-- Leases by expiry: expired ones are claimable, and next_due asks for the first.
CREATE INDEX deliveries_leased  ON deliveries (hook, route, lease_expiry)
    WHERE state = 'leased';
-- The open head of each ordered route (rows from before it was ordered,
-- seq NULL, come first in id order).
CREATE INDEX deliveries_open    ON deliveries (hook, route, seq NULLS FIRST, id)
    WHERE state IN ('pending', 'leased');
CREATE INDEX deliveries_done    ON deliveries (updated_at) WHERE state = 'done';
CREATE INDEX deliveries_dead    ON deliveries (hook, route, updated_at) WHERE state = 'dead';
-- At most one live lease per ordered (hook, route), whatever the nodes do.
CREATE UNIQUE INDEX deliveries_one_ordered_lease ON deliveries (hook, route)
    WHERE state = 'leased' AND seq IS NOT NULL;

-- Depth, kept per node: each node adds its group commit's changes to its
-- own rows, so no two nodes wait on one counts row; readers sum over nodes.
-- A node's n may be negative (another node claimed what it enqueued).
-- Route '': filtered requests (no delivery row).
CREATE TABLE depth_counts (
    node  text   NOT NULL,
    hook  text   NOT NULL,
    route text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (node, hook, route, state)
);

INSERT INTO hookd_schema (version, min_compatible) VALUES (1, 1);
