-- The change feed (migrations/postgres/0004_change_feed.sql) serves several replicas
-- on one PostgreSQL database. A SQLite file has one headway process: nothing to do.
SELECT 1;
