-- Reviewers' votes: one per person per proposal. Which role an approval counts for is worked
-- out over all votes together (src/domain/vote.rs), so each vote keeps every role it could fill.
-- `dedupe` identifies the click or submission that cast it, so Slack's retries and double
-- clicks are recognised as the same vote.
CREATE TABLE votes (
    proposal_id  TEXT NOT NULL,
    voter        TEXT NOT NULL,
    eligible     TEXT NOT NULL,     -- JSON: the routed roles the voter approves for
    ballot       TEXT NOT NULL CHECK (ballot IN ('approve', 'reject')),
    reason       TEXT,
    dedupe       TEXT NOT NULL,
    at           TEXT NOT NULL,
    PRIMARY KEY (proposal_id, voter)
) WITHOUT ROWID;
