-- The periods whose billing cycle ended (invoiced, or nothing to bill): late usage rated for them
-- afterwards is invoiced by the metering run that rated it, never left on a draft nobody
-- finalizes. Append-only.
CREATE TABLE billing.closed_periods (
    org_id       uuid NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL CHECK (period_end > period_start),
    closed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period_start, period_end)
);
CREATE TRIGGER closed_periods_append_only BEFORE UPDATE OR DELETE ON billing.closed_periods
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
