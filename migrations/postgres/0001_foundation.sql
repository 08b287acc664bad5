-- Proposals: the immutable submission (content, JSON text kept byte for byte) beside the
-- lifecycle columns that change.
CREATE TABLE proposals (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    content     TEXT NOT NULL,
    decision    TEXT,
    outcome     TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
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
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- The hash-chained audit log. seq is assigned by countersign (it is part of the hash); writers
-- serialise on a transaction-scoped advisory lock.
CREATE TABLE audit_events (
    seq          BIGINT PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    kind         TEXT NOT NULL,
    proposal_id  TEXT,
    actor        TEXT NOT NULL,
    data         TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_events_by_proposal ON audit_events (proposal_id, seq);
CREATE INDEX audit_events_by_time ON audit_events (at);

-- Append-only: refuse edits through SQL. (A superuser can still disable this; the hash chain is
-- what catches that.)
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
