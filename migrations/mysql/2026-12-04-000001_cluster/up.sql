-- Several servers on one database (docs/deployment.md).
-- The servers sharing this database: node (0..31, part of every id a server makes),
-- heartbeat every 2 s, removed when a server drains.
CREATE TABLE servers (
    node INTEGER PRIMARY KEY,
    instance_id VARCHAR(64) NOT NULL UNIQUE,
    address TEXT NOT NULL,
    version VARCHAR(64) NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    draining BOOLEAN NOT NULL DEFAULT 0,
    clients INTEGER NOT NULL DEFAULT 0
);
-- Values every server shares, written once (the login-token secret, the check value of the
-- actuator-secret key).
CREATE TABLE cluster_values (
    name VARCHAR(64) PRIMARY KEY,
    value TEXT NOT NULL
);
-- Counters servers poll to see a change made through another (`triggers`).
CREATE TABLE cluster_counters (
    name VARCHAR(64) PRIMARY KEY,
    value BIGINT NOT NULL
);
-- Messages to the owner of a run (a task's end recorded elsewhere, a cancel).
CREATE TABLE run_signals (
    id BIGINT PRIMARY KEY,
    owner VARCHAR(64) NOT NULL,
    run_id BIGINT NOT NULL,
    task_id BIGINT NOT NULL,
    kind VARCHAR(16) NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX run_signals_owner_idx ON run_signals (owner, id);
-- Moves at every takeover: the run actor's writes are conditional on the epoch it loaded.
ALTER TABLE pipelines ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
