-- Reviewers' votes: one per person per proposal. `dedupe` identifies the click or submission
-- that cast it, so Slack's retries and double clicks are recognised as the same vote.
CREATE TABLE votes (
    proposal_id  TEXT NOT NULL,
    voter        TEXT NOT NULL,
    role         TEXT,
    ballot       TEXT NOT NULL CHECK (ballot IN ('approve', 'reject')),
    reason       TEXT,
    dedupe       TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (proposal_id, voter)
);
