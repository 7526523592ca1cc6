-- billing invoices: what was paid on an invoice and what credit notes took off it, and the rule
-- that a finalized invoice is never edited (doc: domains/platform/billing/src/invoice.rs).
--
-- amount due = total - credit_applied - paid - credited (never below 0).
ALTER TABLE billing.invoices
    -- Payments recorded against it (cash ← receivable).
    ADD COLUMN paid_minor bigint NOT NULL DEFAULT 0 CHECK (paid_minor >= 0),
    -- Of its receivable, what credit notes correcting it took off.
    ADD COLUMN credited_minor bigint NOT NULL DEFAULT 0 CHECK (credited_minor >= 0);

CREATE INDEX invoices_by_corrects ON billing.invoices (corrects) WHERE corrects IS NOT NULL;
CREATE INDEX invoices_unpaid ON billing.invoices (org_id, created_at) WHERE state IN ('open', 'uncollectible');

-- A finalized invoice (any state but draft) keeps what it billed: its org, period, kind, total,
-- currency and credit applied never change, and it is never deleted. Only its state moves on
-- (and the payment bookkeeping above).
CREATE FUNCTION billing.invoice_finalized_is_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'billing.invoices: an invoice is never deleted (void it)' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.state <> 'draft'
       AND (NEW.id, NEW.org_id, NEW.period_start, NEW.period_end, NEW.kind, NEW.corrects, NEW.currency,
            NEW.total_minor, NEW.credit_applied_minor, NEW.created_at, NEW.finalized_at)
           IS DISTINCT FROM
           (OLD.id, OLD.org_id, OLD.period_start, OLD.period_end, OLD.kind, OLD.corrects, OLD.currency,
            OLD.total_minor, OLD.credit_applied_minor, OLD.created_at, OLD.finalized_at)
    THEN
        RAISE EXCEPTION 'billing.invoices: invoice % is finalized and never edited; correct it with a credit note or an adjusting invoice', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.state <> 'draft' AND NEW.state = 'draft' THEN
        RAISE EXCEPTION 'billing.invoices: invoice % is finalized; it never returns to draft', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoices_finalized_fixed BEFORE UPDATE OR DELETE ON billing.invoices
    FOR EACH ROW EXECUTE FUNCTION billing.invoice_finalized_is_fixed();

-- The lines (and their sources) of an invoice change only while it is a draft.
CREATE FUNCTION billing.invoice_lines_draft_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    inv uuid;
    st text;
BEGIN
    IF TG_OP = 'DELETE' THEN inv := OLD.invoice_id; ELSE inv := NEW.invoice_id; END IF;
    SELECT state INTO st FROM billing.invoices WHERE id = inv;
    IF st IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'billing.%: invoice % is finalized; its lines are never edited', TG_TABLE_NAME, inv
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.invoice_id <> NEW.invoice_id THEN
        SELECT state INTO st FROM billing.invoices WHERE id = OLD.invoice_id;
        IF st IS DISTINCT FROM 'draft' THEN
            RAISE EXCEPTION 'billing.%: invoice % is finalized; its lines are never edited', TG_TABLE_NAME, OLD.invoice_id
                USING ERRCODE = 'restrict_violation';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoice_lines_draft_only BEFORE INSERT OR UPDATE OR DELETE ON billing.invoice_lines
    FOR EACH ROW EXECUTE FUNCTION billing.invoice_lines_draft_only();
CREATE TRIGGER invoice_line_sources_draft_only BEFORE INSERT OR UPDATE OR DELETE ON billing.invoice_line_sources
    FOR EACH ROW EXECUTE FUNCTION billing.invoice_lines_draft_only();
