-- iocwatch passive-SSL store, schema version 1.
-- One file for SQLite and PostgreSQL: {BLOB} {BIGINT} {REAL} {TEXTKEY} are filled in per
-- dialect by iocwatch/store/db.py. Times are float UNIX seconds. Addresses are kept as text
-- and as a 16-byte sortable key (IPv4 mapped into ::ffff:0:0/96) so a CIDR is one range scan.
-- Names are also kept reversed and normalised ("com.example.www") so a domain and its
-- subdomains are one range scan.

-- Content keys (63-bit hashes) of every observation already counted: ingesting the same
-- input twice finds them here and adds nothing.
CREATE TABLE seen (
    k {BIGINT} PRIMARY KEY
);

CREATE TABLE certificates (
    sha1 {TEXTKEY} PRIMARY KEY,
    sha256 TEXT NOT NULL,
    der {BLOB} NOT NULL,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_before {REAL},
    not_after {REAL},
    san_dns TEXT NOT NULL,      -- JSON list
    san_ip TEXT NOT NULL,       -- JSON list
    cn TEXT NOT NULL,           -- JSON list
    pubkey_sha256 TEXT,
    first_seen {REAL} NOT NULL,
    last_seen {REAL} NOT NULL,
    count {BIGINT} NOT NULL
);
CREATE INDEX certificates_sha256 ON certificates (sha256);

-- SAN dNSName and CN of each certificate, reversed and normalised.
CREATE TABLE cert_names (
    rname {TEXTKEY} NOT NULL,
    sha1 {TEXTKEY} NOT NULL,
    PRIMARY KEY (rname, sha1)
){WITHOUT_ROWID};

-- Which server address served which certificate (any position in the chain).
CREATE TABLE server_certs (
    ip_key {BLOB} NOT NULL,
    sha1 {TEXTKEY} NOT NULL,
    ip TEXT NOT NULL,
    first_seen {REAL} NOT NULL,
    last_seen {REAL} NOT NULL,
    count {BIGINT} NOT NULL,
    PRIMARY KEY (ip_key, sha1)
){WITHOUT_ROWID};
CREATE INDEX server_certs_sha1 ON server_certs (sha1);

-- TLS sessions, aggregated over everything but the client port and the time: ident is a hash
-- of client and server address, server port, transport, SNI, fingerprints, TLSH and chain; id
-- grows with insertion (rows are appended, and ids stay small for JSON clients).
CREATE TABLE sessions (
    id {SERIAL} PRIMARY KEY,
    ident {BIGINT} NOT NULL UNIQUE,
    client_key {BLOB} NOT NULL,
    client_port INTEGER NOT NULL,
    server_key {BLOB} NOT NULL,
    server_port INTEGER NOT NULL,
    transport TEXT NOT NULL,
    sni TEXT,
    sni_r {TEXTKEY},
    ja3_digest TEXT NOT NULL,   -- full JA3/JA3S strings once, in ja3_strings
    ja3s_digest TEXT NOT NULL,
    ja4 TEXT NOT NULL,
    ja4s TEXT NOT NULL,
    tlsh TEXT NOT NULL,
    chain {BIGINT} NOT NULL,    -- chains.id
    leaf_sha1 TEXT,
    partial INTEGER NOT NULL,
    sensor TEXT,
    first_seen {REAL} NOT NULL,
    last_seen {REAL} NOT NULL,
    count {BIGINT} NOT NULL
);
-- Each list query is one index range read in the order it returns (newest first, id as tie).
CREATE INDEX sessions_ja3 ON sessions (ja3_digest, last_seen, id);
CREATE INDEX sessions_ja3s ON sessions (ja3s_digest, last_seen, id);
CREATE INDEX sessions_ja4 ON sessions (ja4, last_seen, id);
CREATE INDEX sessions_ja4s ON sessions (ja4s, last_seen, id);
CREATE INDEX sessions_sni ON sessions (sni_r, last_seen DESC, id DESC);
CREATE INDEX sessions_server ON sessions (server_key, last_seen, id);
CREATE INDEX sessions_client ON sessions (client_key, last_seen, id);
CREATE INDEX sessions_tlsh ON sessions (tlsh, last_seen, id);
CREATE INDEX sessions_leaf ON sessions (leaf_sha1, last_seen, id);

-- JA3 and JA3S strings by their MD5 digest (the same few strings recur in every session).
CREATE TABLE ja3_strings (
    digest {TEXTKEY} PRIMARY KEY,
    full_string TEXT NOT NULL
){WITHOUT_ROWID};

-- Certificate chains (JSON list of SHA-1, leaf first) by a hash of that list.
CREATE TABLE chains (
    id {BIGINT} PRIMARY KEY,
    certificates TEXT NOT NULL
);

-- Distinct TLSH values, scanned by sessions_near_tlsh instead of every session.
CREATE TABLE tlsh_values (
    tlsh {TEXTKEY} PRIMARY KEY
){WITHOUT_ROWID};

-- Passive DNS of what the sensor saw: a name as on the wire, its source (dns_query,
-- dns_answer, tls_sni, quic_sni, cert_san, cert_cn, http_host) and the address it pointed to
-- ('' for a DNS query without an address).
CREATE TABLE names (
    rname {TEXTKEY} NOT NULL,
    name {TEXTKEY} NOT NULL,
    source {TEXTKEY} NOT NULL,
    address {TEXTKEY} NOT NULL,
    first_seen {REAL} NOT NULL,
    last_seen {REAL} NOT NULL,
    count {BIGINT} NOT NULL,
    PRIMARY KEY (rname, name, source, address)  -- (name, source, address) is unique already
){WITHOUT_ROWID};

-- Every client, server and DNS-answer address.
CREATE TABLE addresses (
    ip_key {BLOB} PRIMARY KEY,
    ip TEXT NOT NULL,
    first_seen {REAL} NOT NULL,
    last_seen {REAL} NOT NULL,
    count {BIGINT} NOT NULL
){WITHOUT_ROWID};

CREATE TABLE fingerprints (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    first_seen {REAL} NOT NULL,
    last_seen {REAL} NOT NULL,
    count {BIGINT} NOT NULL,
    PRIMARY KEY (kind, value)
){WITHOUT_ROWID};
