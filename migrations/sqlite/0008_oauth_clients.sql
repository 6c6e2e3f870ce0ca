-- OAuth clients of Tailscale's API (/api/v2) and the access tokens they are given.
-- Scopes and tags are JSON text arrays. Deleting a client ends its tokens.
CREATE TABLE oauth_clients (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix      TEXT    NOT NULL UNIQUE,
    hash        TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    tags        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
) STRICT;

CREATE TABLE oauth_tokens (
    prefix     TEXT    NOT NULL PRIMARY KEY,
    hash       TEXT    NOT NULL,
    client_id  INTEGER NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scopes     TEXT    NOT NULL,
    expires_at TEXT    NOT NULL
) STRICT;

CREATE INDEX oauth_tokens_expires_at ON oauth_tokens (expires_at);
