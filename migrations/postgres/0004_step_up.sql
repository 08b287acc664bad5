-- TOTP enrollments: the secret sealed under secret_key (never stored in clear), whether the
-- reviewer confirmed it with a first code, and the last time step used (a step is accepted
-- once: replays are refused by a conditional update).
CREATE TABLE totp_enrollments (
    user_id       TEXT PRIMARY KEY,
    secret        TEXT NOT NULL,
    active        BOOLEAN NOT NULL DEFAULT FALSE,
    last_step     BIGINT,
    created_at    TIMESTAMPTZ NOT NULL,
    activated_at  TIMESTAMPTZ
);

-- Wrong step-up answers, counted over a window; enough of them lock the reviewer out.
CREATE TABLE step_up_failures (
    user_id  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX step_up_failures_by_user ON step_up_failures (user_id, at);

CREATE TABLE step_up_locks (
    user_id  TEXT PRIMARY KEY,
    until    TIMESTAMPTZ NOT NULL
);
