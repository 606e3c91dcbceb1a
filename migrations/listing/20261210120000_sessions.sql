-- Sessions: every refresh token belongs to a session (its family). An access token names its
-- session (`sid`); the listing service refuses it once the session has ended: signed out, a
-- refresh token used twice (the whole family ends), or the account's role changed.
CREATE TABLE sessions (
    id          uuid PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    ended_why   text        CHECK (ended_why IN ('logout', 'refresh_reused', 'role_changed'))
);
CREATE INDEX sessions_live_by_account ON sessions (account_id) WHERE ended_at IS NULL;

-- Tokens issued before: each its own session, ended if the token was.
INSERT INTO sessions (id, account_id, created_at, ended_at)
    SELECT id, account_id, created_at, revoked_at FROM refresh_tokens;
ALTER TABLE refresh_tokens ADD COLUMN session_id uuid REFERENCES sessions (id);
UPDATE refresh_tokens SET session_id = id;
ALTER TABLE refresh_tokens ALTER COLUMN session_id SET NOT NULL;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
