-- The change feed several headway replicas on one database follow: every write to a
-- table headway keeps in memory records (table, row) in `changes`, in the writing
-- transaction, and wakes the listeners of `headway_changes`. `origin` is the writing
-- connection's `headway.replica` setting (empty for other writers, e.g. psql), so a
-- replica can skip what it already applied itself. Routes are recorded by node.

CREATE TABLE changes (
    seq        BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin     TEXT        NOT NULL,
    table_name TEXT        NOT NULL,
    row_id     BIGINT      NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX changes_at ON changes (at);

CREATE FUNCTION headway_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
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
        CASE WHEN TG_TABLE_NAME = 'routes'
             THEN (changed ->> 'node_id')::BIGINT
             ELSE (changed ->> 'id')::BIGINT END
    )
    RETURNING seq INTO recorded;
    PERFORM pg_notify('headway_changes', recorded::TEXT);
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION headway_record_change();
CREATE TRIGGER nodes_changed AFTER INSERT OR UPDATE OR DELETE ON nodes
    FOR EACH ROW EXECUTE FUNCTION headway_record_change();
CREATE TRIGGER routes_changed AFTER INSERT OR UPDATE OR DELETE ON routes
    FOR EACH ROW EXECUTE FUNCTION headway_record_change();
CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION headway_record_change();
