-- Slack work that must survive a crash (post a card, bring cards up to date): written in the
-- same transaction as the change that calls for it, claimed by a Slack worker (any replica)
-- with FOR UPDATE SKIP LOCKED under a lease, marked done once Slack has answered.
CREATE TABLE slack_outbox (
    id            BIGSERIAL PRIMARY KEY,
    proposal_id   TEXT NOT NULL,
    task          TEXT NOT NULL,
    due_at        TIMESTAMPTZ NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    leased_until  TIMESTAMPTZ,
    done_at       TIMESTAMPTZ,
    last_error    TEXT
);
CREATE INDEX slack_outbox_pending ON slack_outbox (due_at) WHERE done_at IS NULL;
CREATE INDEX slack_outbox_by_proposal ON slack_outbox (proposal_id);

-- Where each card was posted: one message per routed role, updated in place later.
CREATE TABLE slack_messages (
    proposal_id  TEXT NOT NULL,
    role         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    ts           TEXT NOT NULL,
    posted_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (proposal_id, role)
);
