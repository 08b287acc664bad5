-- `proposal.decided` events owed to agents: written in the deciding transaction, delivered by the
-- callback worker (any replica) under a lease (FOR UPDATE SKIP LOCKED), retried on a schedule. `id` is the webhook-id the
-- receiver sees on every attempt; `body` is sent byte for byte each time (signatures are fresh).
CREATE TABLE webhook_events (
    id               TEXT PRIMARY KEY NOT NULL,
    proposal_id      TEXT NOT NULL,
    agent_id         TEXT NOT NULL,
    url              TEXT NOT NULL,
    body             TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    leased_until     TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    last_error       TEXT
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_events_by_proposal ON webhook_events (proposal_id);

-- Every delivery attempt: when, what came back (or why nothing did), how long it took.
CREATE TABLE webhook_attempts (
    event_id     TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  BIGINT NOT NULL,
    PRIMARY KEY (event_id, attempt)
);

-- Endpoints that answered 410 Gone: nothing more is sent to them until an operator redelivers.
CREATE TABLE webhook_disabled_endpoints (
    url          TEXT PRIMARY KEY NOT NULL,
    disabled_at  TIMESTAMPTZ NOT NULL,
    event_id     TEXT NOT NULL
);
