-- Schema version 2 (PostgreSQL): row counts kept up to date by triggers, so counts() is a sum
-- over a few rows instead of scanning a million. AFTER INSERT row triggers fire only for rows
-- an upsert really inserted, so the counts are exact. Each writer adds to its own shard (by
-- backend pid), so concurrent sensors do not queue on one counter row.
CREATE TABLE totals (
    name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (name, shard)
);
INSERT INTO totals (name, shard, value) SELECT 'certificates', 0, count(*) FROM certificates;
INSERT INTO totals (name, shard, value) SELECT 'sessions', 0, count(*) FROM sessions;
INSERT INTO totals (name, shard, value) SELECT 'names', 0, count(*) FROM names;
CREATE FUNCTION iocwatch_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO totals (name, shard, value) VALUES (TG_TABLE_NAME, pg_backend_pid() % 16, 1)
    ON CONFLICT (name, shard) DO UPDATE SET value = totals.value + 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER certificates_total AFTER INSERT ON certificates
    FOR EACH ROW EXECUTE FUNCTION iocwatch_count_insert();
CREATE TRIGGER sessions_total AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION iocwatch_count_insert();
CREATE TRIGGER names_total AFTER INSERT ON names
    FOR EACH ROW EXECUTE FUNCTION iocwatch_count_insert();
