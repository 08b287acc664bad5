-- SLA reports owed to a role channel: a weekly digest (one row per role and slot, however many
-- replicas schedule it: `dedupe` is unique) or a `/countersign report` request. Claimed by the
-- report worker (any replica) under a lease, marked posted once Slack has the message and chart.
CREATE TABLE report_posts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe        TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    channel       TEXT NOT NULL,
    period        TEXT NOT NULL,
    as_of         TEXT NOT NULL,      -- the report's window ends here
    requested_by  TEXT,               -- NULL for a digest
    attempts      INTEGER NOT NULL DEFAULT 0,
    leased_until  TEXT,
    posted_at     TEXT,
    last_error    TEXT
);
CREATE INDEX report_posts_owed ON report_posts (id) WHERE posted_at IS NULL;
