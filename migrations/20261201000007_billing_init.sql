-- billing: usage (the outbox products write in their own transactions), the price book, rated
-- lines, the double-entry ledger, billing accounts, invoices and payment attempts. Owned by
-- platform-billing (doc/architecture/0011-billing.md). Org and project ids are iam's: no foreign
-- key crosses schemas (doc/architecture/0007).
--
-- Money is integer minor units (bigint) once rounded, and numeric (exact) before: never floats.
CREATE SCHEMA IF NOT EXISTS billing;

-- Refuses UPDATE and DELETE on the append-only tables below (and TRUNCATE, by statement trigger).
CREATE FUNCTION billing.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing.%: rows are append-only (% refused); correct with a new row', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

-- ── usage ───────────────────────────────────────────────────────────────────────────────────────
-- Discrete usage (tokens, API calls), from a product's transaction or the batch endpoint. The id is
-- the producer's idempotency key within its org: a second insert of the same (org, id) changes
-- nothing, and no org's ids can shadow another's. An event belongs to the period holding its
-- started_at.
CREATE TABLE billing.usage_events (
    id          text NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    org_id      uuid NOT NULL,
    project_id  uuid,
    meter       text NOT NULL CHECK (meter ~ '^[a-z][a-z0-9_]{0,62}$'),
    sku         text NOT NULL DEFAULT '' CHECK (length(sku) <= 100),
    quantity    numeric(38, 9) NOT NULL CHECK (quantity >= 0 AND quantity <= 1e15),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL CHECK (ended_at >= started_at),
    source      text NOT NULL CHECK (length(source) BETWEEN 1 AND 200),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
CREATE INDEX usage_events_by_org_time ON billing.usage_events (org_id, started_at);
CREATE TRIGGER usage_events_append_only BEFORE UPDATE OR DELETE ON billing.usage_events
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();

-- Usage over time (a GPU instance's GPUs): opened when the product confirms the resource running,
-- closed once, when it confirms it stopped. quantity over [a, b) = units × seconds of overlap.
-- id is the source resource (`instance/<uuid>`): one span per resource.
CREATE TABLE billing.usage_spans (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    org_id      uuid NOT NULL,
    project_id  uuid,
    meter       text NOT NULL CHECK (meter ~ '^[a-z][a-z0-9_]{0,62}$'),
    sku         text NOT NULL DEFAULT '' CHECK (length(sku) <= 100),
    units       integer NOT NULL CHECK (units > 0),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz CHECK (ended_at >= started_at),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE INDEX usage_spans_by_org_time ON billing.usage_spans (org_id, started_at);
CREATE INDEX usage_spans_open ON billing.usage_spans (org_id) WHERE ended_at IS NULL;
-- A span is closed once; nothing else of it changes, and it is never deleted.
CREATE FUNCTION billing.close_span_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.ended_at IS NOT NULL
       OR (NEW.id, NEW.org_id, NEW.project_id, NEW.meter, NEW.sku, NEW.units, NEW.started_at, NEW.recorded_at)
          IS DISTINCT FROM (OLD.id, OLD.org_id, OLD.project_id, OLD.meter, OLD.sku, OLD.units, OLD.started_at, OLD.recorded_at)
    THEN
        RAISE EXCEPTION 'billing.usage_spans: a span is only ever closed, once' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER usage_spans_close_only BEFORE UPDATE OR DELETE ON billing.usage_spans
    FOR EACH ROW EXECUTE FUNCTION billing.close_span_only();

-- ── price book ──────────────────────────────────────────────────────────────────────────────────
-- A version is a whole book: every price it holds. Versions are never edited; a correction is a new
-- version. The version in effect at an instant is the newest whose effective_from <= it.
CREATE TABLE billing.price_book_versions (
    version        integer PRIMARY KEY CHECK (version > 0),
    effective_from timestamptz NOT NULL,
    note           text NOT NULL CHECK (length(note) <= 500),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- unit_price_minor per per_units of the meter (e.g. 299 cents per 3600 gpu_seconds; 15 cents per
-- 1,000,000 tokens). sku '' prices a meter without SKUs.
CREATE TABLE billing.prices (
    version          integer NOT NULL REFERENCES billing.price_book_versions (version),
    meter            text NOT NULL CHECK (meter ~ '^[a-z][a-z0-9_]{0,62}$'),
    sku              text NOT NULL DEFAULT '' CHECK (length(sku) <= 100),
    unit_price_minor numeric(38, 12) NOT NULL CHECK (unit_price_minor >= 0),
    per_units        bigint NOT NULL CHECK (per_units > 0),
    unit_label       text NOT NULL,
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    PRIMARY KEY (version, meter, sku)
);
CREATE TRIGGER price_book_versions_append_only BEFORE UPDATE OR DELETE ON billing.price_book_versions
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER prices_append_only BEFORE UPDATE OR DELETE ON billing.prices
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();

-- Version 1: the GPU SKUs' hourly prices (the same figures gpuaas.skus shows), per GPU-second.
INSERT INTO billing.price_book_versions (version, effective_from, note, created_by)
    VALUES (1, '2026-01-01T00:00:00Z', 'launch prices', 'system:migration');
INSERT INTO billing.prices (version, meter, sku, unit_price_minor, per_units, unit_label, currency) VALUES
    (1, 'gpu_seconds', 'h100-80gb-sxm', 299, 3600, 'GPU-hour', 'USD'),
    (1, 'gpu_seconds', 'a100-40gb',     129, 3600, 'GPU-hour', 'USD'),
    (1, 'gpu_seconds', 'l40s-48gb',      99, 3600, 'GPU-hour', 'USD'),
    (1, 'input_tokens',  '', 15, 1000000, 'million input tokens',  'USD'),
    (1, 'output_tokens', '', 60, 1000000, 'million output tokens', 'USD');

-- ── rated lines ─────────────────────────────────────────────────────────────────────────────────
-- What a metering run decided an org owes for a meter and SKU in a period, unrounded. The first
-- line of a (org, period, meter, sku) is `original`; a rerun that finds a different total writes an
-- `adjustment` of the difference, linked to the original. Append-only: sum(lines) is the truth.
CREATE TABLE billing.rated_lines (
    id               uuid PRIMARY KEY,
    run_id           uuid NOT NULL,
    org_id           uuid NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL CHECK (period_end > period_start),
    meter            text NOT NULL,
    sku              text NOT NULL,
    price_version    integer NOT NULL REFERENCES billing.price_book_versions (version),
    quantity         numeric(38, 9) NOT NULL,
    amount_exact     numeric(38, 12) NOT NULL,
    currency         text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('original', 'adjustment')),
    corrects         uuid REFERENCES billing.rated_lines (id),
    reason           text NOT NULL,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'original') = (corrects IS NULL))
);
CREATE UNIQUE INDEX rated_lines_one_original ON billing.rated_lines (org_id, period_start, period_end, meter, sku)
    WHERE kind = 'original';
CREATE INDEX rated_lines_by_org_period ON billing.rated_lines (org_id, period_start, period_end);
CREATE TRIGGER rated_lines_append_only BEFORE UPDATE OR DELETE ON billing.rated_lines
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();

-- ── ledger ──────────────────────────────────────────────────────────────────────────────────────
-- Double entry: each transaction's entries sum to zero (debits positive, credits negative), checked
-- at commit. Entries and transactions are never updated or deleted; a correction is a new
-- transaction that names the one it corrects. key makes a posting idempotent.
CREATE TABLE billing.ledger_transactions (
    id          uuid PRIMARY KEY,
    key         text NOT NULL UNIQUE CHECK (length(key) BETWEEN 1 AND 200),
    org_id      uuid,
    description text NOT NULL,
    corrects    uuid REFERENCES billing.ledger_transactions (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- account: receivable, prepaid_credit (per org), revenue, cash, promotions (platform-wide: org_id NULL).
CREATE TABLE billing.ledger_entries (
    id             bigserial PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES billing.ledger_transactions (id),
    account        text NOT NULL CHECK (account IN ('receivable', 'prepaid_credit', 'revenue', 'cash', 'promotions')),
    org_id         uuid,
    amount_minor   bigint NOT NULL CHECK (amount_minor <> 0),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    CHECK ((account IN ('receivable', 'prepaid_credit')) = (org_id IS NOT NULL))
);
CREATE INDEX ledger_entries_by_account ON billing.ledger_entries (account, org_id);
CREATE INDEX ledger_entries_by_transaction ON billing.ledger_entries (transaction_id);
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON billing.ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON billing.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE FUNCTION billing.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing.%: append-only, TRUNCATE refused', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON billing.ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_truncate();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON billing.ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_truncate();
CREATE TRIGGER rated_lines_no_truncate BEFORE TRUNCATE ON billing.rated_lines
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_truncate();

-- Balanced, checked once per transaction at commit (a deferred constraint trigger per entry).
CREATE FUNCTION billing.check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
    currencies integer;
BEGIN
    SELECT coalesce(sum(amount_minor), 0), count(DISTINCT currency) INTO total, currencies
        FROM billing.ledger_entries WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 OR currencies > 1 THEN
        RAISE EXCEPTION 'billing.ledger: transaction % does not balance (sum %, % currencies)', NEW.transaction_id, total, currencies
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON billing.ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing.check_balanced();

-- ── billing accounts ────────────────────────────────────────────────────────────────────────────
-- One per org, created on first need. mode prepaid: usage burns credit; postpaid: invoiced monthly.
-- standing is derived state the enforcement workflow and admission read; the ledger holds money.
CREATE TABLE billing.accounts (
    org_id                     uuid PRIMARY KEY,
    mode                       text NOT NULL DEFAULT 'prepaid' CHECK (mode IN ('prepaid', 'postpaid')),
    currency                   text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    monthly_spend_limit_minor  bigint CHECK (monthly_spend_limit_minor >= 0),
    -- Set when credit (prepaid) or the spend limit ran out; cleared by a top-up or a higher limit.
    exhausted_since            timestamptz,
    -- Set when a payment collection ran out of retries; cleared by a payment.
    delinquent_since           timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
-- Threshold crossings (credit at 50/20/0 %), recorded once each; their delivery comes later.
CREATE TABLE billing.account_events (
    seq        bigserial PRIMARY KEY,
    key        text NOT NULL UNIQUE,
    org_id     uuid NOT NULL,
    kind       text NOT NULL,
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_events_by_org ON billing.account_events (org_id, seq);

-- ── invoices ────────────────────────────────────────────────────────────────────────────────────
-- draft → open (finalized: never edited again) → paid | void | uncollectible. kind credit_note and
-- adjusting correct a finalized invoice (corrects). Lines round once each (half away from zero).
CREATE TABLE billing.invoices (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL CHECK (period_end > period_start),
    kind          text NOT NULL DEFAULT 'invoice' CHECK (kind IN ('invoice', 'adjusting', 'credit_note')),
    corrects      uuid REFERENCES billing.invoices (id),
    state         text NOT NULL CHECK (state IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    currency      text NOT NULL,
    total_minor   bigint NOT NULL DEFAULT 0,
    -- Of the total, what prepaid credit covered at finalization; the rest is receivable.
    credit_applied_minor bigint NOT NULL DEFAULT 0 CHECK (credit_applied_minor >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    finalized_at  timestamptz,
    paid_at       timestamptz,
    closed_at     timestamptz
);
CREATE INDEX invoices_by_org ON billing.invoices (org_id, period_start DESC);
-- At most one draft per org and period at a time.
CREATE UNIQUE INDEX invoices_one_draft ON billing.invoices (org_id, period_start, period_end) WHERE state = 'draft';
CREATE TABLE billing.invoice_lines (
    invoice_id    uuid NOT NULL REFERENCES billing.invoices (id),
    line_no       integer NOT NULL,
    meter         text NOT NULL,
    sku           text NOT NULL,
    price_version integer NOT NULL,
    description   text NOT NULL,
    quantity      numeric(38, 9) NOT NULL,
    amount_exact  numeric(38, 12) NOT NULL,
    amount_minor  bigint NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);
-- Which rated lines an invoice line bills: each rated line is billed once.
CREATE TABLE billing.invoice_line_sources (
    rated_line_id uuid PRIMARY KEY REFERENCES billing.rated_lines (id),
    invoice_id    uuid NOT NULL,
    line_no       integer NOT NULL,
    FOREIGN KEY (invoice_id, line_no) REFERENCES billing.invoice_lines (invoice_id, line_no)
);

-- ── payments ────────────────────────────────────────────────────────────────────────────────────
-- A payment method names a provider's token (sandbox: its behaviour), never card data.
CREATE TABLE billing.payment_methods (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL,
    provider   text NOT NULL,
    token      text NOT NULL CHECK (length(token) <= 200),
    label      text NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX payment_methods_one_default ON billing.payment_methods (org_id) WHERE is_default;
-- One row per charge attempt; idempotency_key = invoice (or top-up) and attempt number.
CREATE TABLE billing.payment_attempts (
    idempotency_key text PRIMARY KEY,
    org_id          uuid NOT NULL,
    invoice_id      uuid REFERENCES billing.invoices (id),
    attempt         integer NOT NULL CHECK (attempt > 0),
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        text NOT NULL,
    payment_method  uuid,
    outcome         text NOT NULL CHECK (outcome IN ('succeeded', 'soft_decline', 'hard_decline', 'pending', 'error')),
    provider_ref    text,
    message         text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_attempts_by_invoice ON billing.payment_attempts (invoice_id, attempt);
-- The sandbox provider's own book of charges (what a real provider would keep on its side), so a
-- retried charge with the same key answers the same outcome.
CREATE TABLE billing.sandbox_charges (
    idempotency_key text PRIMARY KEY,
    token           text NOT NULL,
    amount_minor    bigint NOT NULL,
    outcome         text NOT NULL,
    confirm_after   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
