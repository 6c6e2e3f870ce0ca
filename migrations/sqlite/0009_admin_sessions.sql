-- The web UI's one-time sign-in links (kind 'link') and browser sessions (kind
-- 'session'): the secret is kept only as a digest; a session carries its CSRF token.
CREATE TABLE admin_sessions (
    prefix       TEXT NOT NULL PRIMARY KEY,
    kind         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    who          TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL
) STRICT;

CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);
