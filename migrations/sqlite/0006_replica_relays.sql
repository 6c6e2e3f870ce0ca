-- Replicas' relay regions (migrations/postgres/0006_replica_relays.sql) need a
-- shared PostgreSQL database; a SQLite file has one headway process: nothing to do.
SELECT 1;
