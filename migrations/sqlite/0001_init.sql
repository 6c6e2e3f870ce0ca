-- The initial schema: users, pre-auth keys, API keys, nodes, routes and policies.
--
-- Tables are STRICT, so a value of the wrong type is refused instead of stored.
-- Timestamps are TEXT in RFC 3339 form, UTC, with nine fractional digits.
-- Booleans are INTEGER 0 or 1. Lists are JSON text arrays.
-- AUTOINCREMENT keeps ids of deleted rows from being handed out again, so a
-- client that remembers a node id never meets a different node under it.

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT    NOT NULL UNIQUE,
    display_name        TEXT    NOT NULL DEFAULT '',
    email               TEXT    NOT NULL DEFAULT '',
    provider            TEXT    NOT NULL DEFAULT '',
    provider_identifier TEXT    NOT NULL DEFAULT '',
    profile_pic_url     TEXT    NOT NULL DEFAULT '',
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL
) STRICT;

-- A tagged key has no user. Deleting a user deletes the keys it owns.
CREATE TABLE pre_auth_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix     TEXT    NOT NULL UNIQUE,
    hash       TEXT    NOT NULL,
    user_id    INTEGER REFERENCES users (id) ON DELETE CASCADE,
    reusable   INTEGER NOT NULL DEFAULT 0 CHECK (reusable IN (0, 1)),
    ephemeral  INTEGER NOT NULL DEFAULT 0 CHECK (ephemeral IN (0, 1)),
    used       INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1)),
    tags       TEXT    NOT NULL DEFAULT '[]',
    expiration TEXT,
    created_at TEXT    NOT NULL
) STRICT;

CREATE INDEX pre_auth_keys_user_id ON pre_auth_keys (user_id);

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix     TEXT    NOT NULL UNIQUE,
    hash       TEXT    NOT NULL,
    expiration TEXT,
    last_seen  TEXT,
    created_at TEXT    NOT NULL
) STRICT;

-- A tagged node has no user. A user who still owns nodes cannot be deleted.
-- Deleting a pre-auth key leaves the nodes it admitted in place.
-- UNIQUE allows several NULLs, so nodes without an IPv4 or IPv6 do not clash.
CREATE TABLE nodes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_key     TEXT    NOT NULL,
    node_key        TEXT    NOT NULL UNIQUE,
    disco_key       TEXT    NOT NULL,
    hostname        TEXT    NOT NULL,
    given_name      TEXT    NOT NULL UNIQUE,
    user_id         INTEGER REFERENCES users (id) ON DELETE RESTRICT,
    ipv4            TEXT    UNIQUE,
    ipv6            TEXT    UNIQUE,
    endpoints       TEXT    NOT NULL DEFAULT '[]',
    host_info       TEXT,
    tags            TEXT    NOT NULL DEFAULT '[]',
    expiry          TEXT,
    last_seen       TEXT,
    ephemeral       INTEGER NOT NULL DEFAULT 0 CHECK (ephemeral IN (0, 1)),
    register_method TEXT    NOT NULL DEFAULT '',
    auth_key_id     INTEGER REFERENCES pre_auth_keys (id) ON DELETE SET NULL,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
) STRICT;

CREATE INDEX nodes_user_id ON nodes (user_id);
CREATE INDEX nodes_auth_key_id ON nodes (auth_key_id);
CREATE INDEX nodes_machine_key ON nodes (machine_key);

-- One row per prefix of a node; the prefix is canonical CIDR text (host bits zeroed).
CREATE TABLE routes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id    INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    prefix     TEXT    NOT NULL,
    advertised INTEGER NOT NULL DEFAULT 0 CHECK (advertised IN (0, 1)),
    approved   INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    UNIQUE (node_id, prefix)
) STRICT;

-- Every saved policy is a new row; only the one with the highest id is in force.
CREATE TABLE policies (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    data       TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;
