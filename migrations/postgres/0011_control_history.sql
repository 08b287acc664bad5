-- Every override ever set, kept after it is replaced or cleared: what the autonomy report counts
-- (it used to read them back out of the audit trail's JSON). Written with the override, in the
-- command's transaction; the overrides set before this migration are copied from the trail once.
CREATE TABLE control_history (
    agent_id  TEXT NOT NULL,
    action    TEXT NOT NULL DEFAULT '',
    mode      TEXT NOT NULL,
    set_by    TEXT NOT NULL,
    set_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX control_history_by_agent ON control_history (agent_id, set_at);

INSERT INTO control_history (agent_id, action, mode, set_by, set_at)
SELECT data::jsonb ->> 'agent', COALESCE(data::jsonb ->> 'action', ''),
       data::jsonb ->> 'mode', actor, at
FROM audit_events
WHERE kind = 'agent.controlled' AND data::jsonb ->> 'agent' IS NOT NULL;
