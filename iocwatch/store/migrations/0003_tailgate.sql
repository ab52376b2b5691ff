-- Schema version 3: the tailgating cache (iocwatch/tailgate/cache.py) in the store, so every
-- sensor that writes into one store shares its probe results: one probe per server in all.
-- Same columns as the cache's own SQLite file; times are float UNIX seconds (wall clock).
CREATE TABLE tailgate_probes (
    address {TEXTKEY} NOT NULL,
    port INTEGER NOT NULL,
    server_name {TEXTKEY} NOT NULL,
    state TEXT NOT NULL,            -- 'ok', 'failed' or 'claimed'
    reason TEXT NOT NULL,
    probed {REAL} NOT NULL,         -- the probe (or the claim)
    expires {REAL} NOT NULL,
    via TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    chain {BLOB},                   -- a TLS Certificate message body
    run TEXT NOT NULL DEFAULT '',   -- the iocwatch run that last reported the certificate
    PRIMARY KEY (address, port, server_name)
);
CREATE INDEX tailgate_probes_expires ON tailgate_probes (expires);
