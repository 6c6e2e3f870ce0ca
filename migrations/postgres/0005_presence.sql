-- Presence across replicas: each running headway has a `replicas` row it refreshes
-- every few seconds, and a `sessions` row per node with an open map session on it.
-- A replica whose row goes stale is deleted by the others, and its sessions with
-- it (so its nodes go offline everywhere). Session rows reach the change feed
-- under the node's id.

CREATE TABLE replicas (
    name    TEXT        PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    node_id BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    replica TEXT   NOT NULL REFERENCES replicas (name) ON DELETE CASCADE,
    PRIMARY KEY (node_id, replica)
);

CREATE INDEX sessions_replica ON sessions (replica);

CREATE OR REPLACE FUNCTION headway_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed JSONB;
    recorded BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := to_jsonb(OLD);
    ELSE
        changed := to_jsonb(NEW);
    END IF;
    INSERT INTO changes (origin, table_name, row_id)
    VALUES (
        COALESCE(current_setting('headway.replica', true), ''),
        TG_TABLE_NAME,
        CASE WHEN TG_TABLE_NAME IN ('routes', 'sessions')
             THEN (changed ->> 'node_id')::BIGINT
             ELSE (changed ->> 'id')::BIGINT END
    )
    RETURNING seq INTO recorded;
    PERFORM pg_notify('headway_changes', recorded::TEXT);
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_changed AFTER INSERT OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION headway_record_change();
