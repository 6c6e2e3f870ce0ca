-- Presence across replicas (migrations/postgres/0005_presence.sql) needs a shared
-- PostgreSQL database; a SQLite file has one headway process: nothing to do.
SELECT 1;
