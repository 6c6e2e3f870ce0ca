-- Interactive registrations waiting for an admin, shared by the replicas: the
-- replica a client waits on writes its row; an admin on any replica claims it
-- (`state` waiting → claimed, one guarded UPDATE), admits the node and records
-- the verdict; the waiting replica reads the verdict, answers its client and
-- deletes the row. Rows older than the registration timeout are pruned.

CREATE TABLE waiting_registrations (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT   NOT NULL CONSTRAINT "waiting_registrations.id" UNIQUE,
    machine_key       TEXT   NOT NULL,
    node_key          TEXT   NOT NULL,
    hostname          TEXT   NOT NULL,
    hostinfo          TEXT,
    advertised_routes TEXT   NOT NULL DEFAULT '[]',
    requested_tags    TEXT   NOT NULL DEFAULT '[]',
    requested_expiry  TEXT,
    created_at        TEXT   NOT NULL,
    replica           TEXT   NOT NULL,
    -- waiting | claimed | registered | rejected
    state             TEXT   NOT NULL DEFAULT 'waiting',
    -- the node's id (registered) or the reason (rejected)
    verdict           TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX waiting_registrations_node_key ON waiting_registrations (node_key);
CREATE INDEX waiting_registrations_machine_key ON waiting_registrations (machine_key);
