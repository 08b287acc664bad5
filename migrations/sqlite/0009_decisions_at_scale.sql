-- Decisions whose cost does not grow with the backlog (see the PostgreSQL migration of the
-- same name): the unfired timers of one proposal by key, and escalation grants by key.
CREATE INDEX timers_unfired_by_proposal ON timers (proposal_id) WHERE fired_at IS NULL;

CREATE TABLE approval_grants (
    proposal_id  TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    granted_at   TEXT NOT NULL,
    PRIMARY KEY (proposal_id, user_id)
);

INSERT OR IGNORE INTO approval_grants (proposal_id, user_id, granted_at)
SELECT e.proposal_id, u.value, e.at
FROM audit_events e, json_each(json_extract(e.data, '$.notified')) AS u
WHERE e.kind = 'proposal.escalated'
  AND e.proposal_id IS NOT NULL
  AND json_extract(e.data, '$.grants_approval') = 1;
