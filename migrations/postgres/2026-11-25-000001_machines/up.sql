-- Machines (tunnel clients as SPEC §10 lists them) and fan-out commands with one result per
-- machine. Keep the three backends' files in step with engine/src/store/schema.rs.
CREATE TABLE machines (
    id BIGINT NOT NULL PRIMARY KEY,
    owner VARCHAR(64) NOT NULL,
    client_id VARCHAR(191) NOT NULL,
    label VARCHAR(191) NOT NULL,
    address VARCHAR(255) NOT NULL,
    version VARCHAR(64) NOT NULL,
    run_as VARCHAR(64) NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    CONSTRAINT machines_identity_uq UNIQUE (owner, client_id, label)
);

CREATE TABLE commands (
    id BIGINT NOT NULL PRIMARY KEY,
    owner VARCHAR(64) NOT NULL,
    name VARCHAR(191) NOT NULL,
    machine_pattern TEXT NOT NULL,
    command TEXT NOT NULL,
    workspace TEXT NOT NULL,
    timeout_secs BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT commands_owner_name_uq UNIQUE (owner, name)
);
CREATE INDEX commands_owner_idx ON commands (owner, id);

CREATE TABLE command_results (
    id BIGINT NOT NULL PRIMARY KEY,
    command_id BIGINT NOT NULL,
    machine_label VARCHAR(191) NOT NULL,
    client_id VARCHAR(191) NOT NULL,
    status VARCHAR(16) NOT NULL,
    exit_code INTEGER,
    msg TEXT NOT NULL,
    output TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    deadline_at BIGINT NOT NULL,
    ended_at BIGINT,
    CONSTRAINT command_results_machine_uq UNIQUE (command_id, client_id, machine_label)
);
CREATE INDEX command_results_status_idx ON command_results (status, deadline_at);
