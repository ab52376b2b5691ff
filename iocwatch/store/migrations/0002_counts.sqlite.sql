-- Schema version 2 (SQLite): row counts kept up to date by triggers, so counts() is three
-- key lookups instead of scanning a million rows. An upsert that updates does not fire an
-- INSERT trigger, so the counts are exact.
CREATE TABLE totals (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO totals (name, value) SELECT 'certificates', count(*) FROM certificates;
INSERT INTO totals (name, value) SELECT 'sessions', count(*) FROM sessions;
INSERT INTO totals (name, value) SELECT 'names', count(*) FROM names;
CREATE TRIGGER certificates_total AFTER INSERT ON certificates BEGIN
    UPDATE totals SET value = value + 1 WHERE name = 'certificates';
END;
CREATE TRIGGER sessions_total AFTER INSERT ON sessions BEGIN
    UPDATE totals SET value = value + 1 WHERE name = 'sessions';
END;
CREATE TRIGGER names_total AFTER INSERT ON names BEGIN
    UPDATE totals SET value = value + 1 WHERE name = 'names';
END;
