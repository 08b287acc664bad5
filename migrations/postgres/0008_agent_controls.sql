-- Operators' overrides of an agent's mode (pause, draft_only), for the whole agent (action '')
-- or one action; stronger than the manifest until cleared (resume deletes the row). Every change
-- is in the audit trail.
CREATE TABLE agent_controls (
    agent_id  TEXT NOT NULL,
    action    TEXT NOT NULL DEFAULT '',
    mode      TEXT NOT NULL CHECK (mode IN ('paused', 'draft_only')),
    reason    TEXT,
    set_by    TEXT NOT NULL,
    set_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, action)
);
