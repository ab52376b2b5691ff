-- Schema version 5: the server port of each HTTP Host name, for retro-hunts of name:port
-- indicators (and URLs on a non-default port), which match a name on a flow to that port
-- only. TLS and QUIC names need no row here: their sessions keep the server port. Host names
-- stored before this version have no port, so such an indicator cannot match them.
CREATE TABLE IF NOT EXISTS name_ports (
    rname {TEXTKEY} NOT NULL,
    name {TEXTKEY} NOT NULL,
    source {TEXTKEY} NOT NULL,
    port INTEGER NOT NULL,
    address {TEXTKEY} NOT NULL,     -- the server's
    first_seen {REAL} NOT NULL,
    last_seen {REAL} NOT NULL,
    count {BIGINT} NOT NULL,
    PRIMARY KEY (rname, name, source, port, address)
){WITHOUT_ROWID};
