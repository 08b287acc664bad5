-- Proposals: the immutable submission (content, JSON) beside the lifecycle columns that change.
CREATE TABLE proposals (
    id          TEXT PRIMARY KEY NOT NULL,
    agent_id    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    content     TEXT NOT NULL,
    decision    TEXT,
    outcome     TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX proposals_by_status ON proposals (status);
CREATE INDEX proposals_by_agent ON proposals (agent_id, created_at);

-- Idempotency keys, per agent: the body's hash and the response to replay.
CREATE TABLE idempotency_keys (
    agent_id      TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    proposal_id   TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (agent_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- The hash-chained audit log. seq is assigned by countersign (it is part of the hash).
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY NOT NULL,
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    proposal_id  TEXT,
    actor        TEXT NOT NULL,
    data         TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_events_by_proposal ON audit_events (proposal_id, seq);
CREATE INDEX audit_events_by_time ON audit_events (at);

-- Append-only: refuse edits through SQL. (Someone with the file can still drop these; the hash
-- chain is what catches that.)
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
