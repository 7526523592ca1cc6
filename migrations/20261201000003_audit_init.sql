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

-- One field of the canonical encoding (platform_audit::entry_hash documents it; the Rust code
-- is the reference and re-checks every hash this computes): 0x00 for NULL, else 0x01, the
-- UTF-8 byte length as 4 bytes big-endian, the UTF-8 bytes.
CREATE FUNCTION audit.field(v text) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || int4send(octet_length(convert_to(v, 'UTF8')))
                     || convert_to(v, 'UTF8') END
$$;

-- The lanes of a scope (a concurrent creator wins harmlessly).
CREATE FUNCTION audit.create_lanes(p_scope text, p_org uuid, p_lanes integer)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO audit.chains (chain, scope, org_id, lane, head_hash)
    SELECT p_scope || '/' || lane, p_scope, p_org, lane, repeat('0', 64)
    FROM generate_series(0, p_lanes - 1) AS lane
    ON CONFLICT DO NOTHING
$$;

-- One append in one statement (platform_audit::append_in): lock the lowest lane of the scope no
-- other transaction holds (all held: wait for a random one; none yet: create them), take the
-- event's seq and time after the lock, hash, insert, move the head. The lane stays locked until
-- the calling transaction ends.
CREATE FUNCTION audit.append(
    p_scope text, p_org uuid, p_lanes integer,
    p_actor text, p_actor_name text, p_actor_kind text, p_auth_method text,
    p_credential_id text, p_project uuid, p_action text, p_resource text, p_outcome text,
    p_status integer, p_error_code text, p_request_id text, p_source_ip text,
    OUT o_seq bigint, OUT o_chain text, OUT o_chain_seq bigint, OUT o_at timestamptz,
    OUT o_prev_hash text, OUT o_hash text)
LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..3 LOOP
        SELECT c.chain, c.head_seq + 1, c.head_hash INTO o_chain, o_chain_seq, o_prev_hash
        FROM audit.chains c WHERE c.scope = p_scope
        ORDER BY c.lane LIMIT 1 FOR UPDATE SKIP LOCKED;
        EXIT WHEN FOUND;
        SELECT c.chain, c.head_seq + 1, c.head_hash INTO o_chain, o_chain_seq, o_prev_hash
        FROM audit.chains c WHERE c.scope = p_scope
        ORDER BY random() LIMIT 1 FOR UPDATE;
        EXIT WHEN FOUND;
        PERFORM audit.create_lanes(p_scope, p_org, p_lanes);
    END LOOP;
    IF o_chain IS NULL THEN
        RAISE EXCEPTION 'no audit chain of % could be locked', p_scope
            USING ERRCODE = 'lock_not_available';
    END IF;
    o_seq := nextval('audit.event_seq');
    o_at := date_trunc('microseconds', clock_timestamp());
    o_hash := encode(sha256(
        audit.field('gpuaas-audit-event-v1') || audit.field(o_prev_hash)
        || audit.field(o_chain) || audit.field(o_chain_seq::text) || audit.field(o_seq::text)
        || audit.field(to_char(o_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || audit.field(p_actor) || audit.field(p_actor_name) || audit.field(p_actor_kind)
        || audit.field(p_auth_method) || audit.field(p_credential_id)
        || audit.field(p_org::text) || audit.field(p_project::text) || audit.field(p_action)
        || audit.field(p_resource) || audit.field(p_outcome) || audit.field(p_status::text)
        || audit.field(p_error_code) || audit.field(p_request_id) || audit.field(p_source_ip)
    ), 'hex');
    INSERT INTO audit.events (seq, chain, chain_seq, at, actor, actor_name, actor_kind,
        auth_method, credential_id, org_id, project_id, action, resource, outcome, status,
        error_code, request_id, source_ip, prev_hash, hash)
    VALUES (o_seq, o_chain, o_chain_seq, o_at, p_actor, p_actor_name, p_actor_kind,
        p_auth_method, p_credential_id, p_org, p_project, p_action, p_resource, p_outcome,
        p_status, p_error_code, p_request_id, p_source_ip, o_prev_hash, o_hash);
    UPDATE audit.chains SET head_seq = o_chain_seq, head_hash = o_hash WHERE chain = o_chain;
END
$$;

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
