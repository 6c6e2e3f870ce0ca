-- Waiting registrations shared by replicas
-- (migrations/postgres/0007_waiting_registrations.sql) need a shared PostgreSQL
-- database; one headway process keeps them in memory: nothing to do.
SELECT 1;
