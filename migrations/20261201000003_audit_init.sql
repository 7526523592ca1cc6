-- audit: the tamper-evident, append-only audit log (doc/architecture/0009-audit-hash-chain.md).
-- Every event is a link of a hash chain; a chain is one lane of a scope (an org, or the
-- platform for events without an org), so appends to different orgs, and concurrent appends to
-- one org, do not wait for each other. Only platform-audit reads and writes these tables.
CREATE SCHEMA IF NOT EXISTS audit;

-- One row per chain: its head, locked (FOR UPDATE) only by the transaction appending to it.
-- `chain` is `<scope>/<lane>`, scope `org:<uuid>` or `platform`; collation "C" so a scope's
-- chains are one bytewise range of the primary key.
CREATE TABLE audit.chains (
    chain      text COLLATE "C" PRIMARY KEY,
    scope      text COLLATE "C" NOT NULL,
    org_id     uuid,
    lane       integer NOT NULL CHECK (lane >= 0),
    -- chain_seq and hash of the newest event; 0 and the genesis hash while the chain is empty
    head_seq   bigint NOT NULL DEFAULT 0 CHECK (head_seq >= 0),
    head_hash  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scope, lane)
);

-- The global id of an event, taken under its chain's lock (so it grows along each chain).
CREATE SEQUENCE audit.event_seq AS bigint;

-- The events. Every column but `hash` is covered by `hash` (platform_audit::entry_hash).
CREATE TABLE audit.events (
    seq           bigint PRIMARY KEY,
    chain         text COLLATE "C" NOT NULL,
    chain_seq     bigint NOT NULL CHECK (chain_seq > 0),
    at            timestamptz NOT NULL,
    actor         text NOT NULL,
    actor_name    text NOT NULL,
    actor_kind    text NOT NULL,
    auth_method   text NOT NULL,
    credential_id text,
    org_id        uuid,
    project_id    uuid,
    action        text NOT NULL,
    resource      text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('success', 'failure')),
    status        integer NOT NULL,
    error_code    text,
    request_id    text NOT NULL,
    source_ip     text,
    prev_hash     text NOT NULL,
    hash          text NOT NULL,
    UNIQUE (chain, chain_seq)
);
-- list: by org (and `org_id IS NULL` for platform events) with a seq cursor, and by time
CREATE INDEX events_org_seq ON audit.events (org_id, seq);
CREATE INDEX events_at ON audit.events (at);

-- Signed chain heads. Published outside the database as well (the API logs each one), they are
-- what makes deleting the newest events of a chain detectable.
CREATE TABLE audit.anchors (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain     text COLLATE "C" NOT NULL,
    chain_seq bigint NOT NULL CHECK (chain_seq > 0),
    hash      text NOT NULL,
    at        timestamptz NOT NULL,
    key_id    text NOT NULL,
    signature text NOT NULL,
    UNIQUE (chain, chain_seq, key_id)
);

-- Append-only: UPDATE, DELETE and TRUNCATE raise. Someone with superuser rights can disable
-- these triggers; the hash chain and the anchors are what detect that (the ADR's attacker model).
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on audit.% refused: the audit log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER anchors_append_only BEFORE UPDATE OR DELETE ON audit.anchors
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER anchors_no_truncate BEFORE TRUNCATE ON audit.anchors
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
-- A chain's head moves on every append, but a chain is never removed.
CREATE TRIGGER chains_no_delete BEFORE DELETE ON audit.chains
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER chains_no_truncate BEFORE TRUNCATE ON audit.chains
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
