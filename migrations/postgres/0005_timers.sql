-- SLA timers: one row per reminder, escalation rung (and repeat) and expiry, armed in the
-- transaction that stores the proposal, claimed by an SLA worker (any replica, FOR UPDATE SKIP
-- LOCKED) under a lease, fired once (a conditional update in the firing transaction), disarmed
-- by the decision.
CREATE TABLE timers (
    id            BIGSERIAL PRIMARY KEY,
    proposal_id   TEXT NOT NULL,
    timer         TEXT NOT NULL,
    due_at        TIMESTAMPTZ NOT NULL,
    leased_until  TIMESTAMPTZ,
    fired_at      TIMESTAMPTZ,
    outcome       TEXT
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
CREATE INDEX timers_by_proposal ON timers (proposal_id);
