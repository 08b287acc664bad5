-- Decisions whose cost does not grow with the backlog.
--
-- A decision disarms its proposal's unfired timers. With only `timers_by_proposal` and the
-- partial `timers_due`, PostgreSQL's generic plan for that statement (prepared statements go
-- generic after five runs) ANDed both indexes and scanned every unfired timer. This partial
-- index answers exactly "the unfired timers of this proposal".
CREATE INDEX timers_unfired_by_proposal ON timers (proposal_id) WHERE fired_at IS NULL;

-- Approval granted by an escalation rung (`grants_approval`) to the people it notified: read by
-- key on a click, where it used to be parsed out of the proposal's audit trail.
CREATE TABLE approval_grants (
    proposal_id  TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    granted_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (proposal_id, user_id)
);

-- Grants already in the trail (escalations fired before this migration) carry over.
INSERT INTO approval_grants (proposal_id, user_id, granted_at)
SELECT e.proposal_id, u.user_id, e.at
FROM audit_events e
CROSS JOIN LATERAL jsonb_array_elements_text((e.data::jsonb) -> 'notified') AS u(user_id)
WHERE e.kind = 'proposal.escalated'
  AND e.proposal_id IS NOT NULL
  AND (e.data::jsonb) ->> 'grants_approval' = 'true'
ON CONFLICT DO NOTHING;
