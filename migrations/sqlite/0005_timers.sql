-- SLA timers: one row per reminder, escalation rung (and repeat) and expiry, armed in the
-- transaction that stores the proposal, claimed by the SLA worker under a lease, fired once
-- (a conditional update in the firing transaction), disarmed by the decision.
CREATE TABLE timers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    proposal_id   TEXT NOT NULL,
    timer         TEXT NOT NULL,
    due_at        TEXT NOT NULL,
    leased_until  TEXT,
    fired_at      TEXT,
    outcome       TEXT
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
CREATE INDEX timers_by_proposal ON timers (proposal_id);
