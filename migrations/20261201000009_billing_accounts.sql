-- billing accounts, continued (platform-billing, src/account.rs and src/ledger.rs).
--
-- exhausted_since says since when an org may not allocate; exhausted_reason says why, so that
-- admission (which reads only this row, inside every allocation transaction) can name what to do:
-- credit_exhausted (prepaid credit used up: top up) or spend_limit_reached (raise the limit).
ALTER TABLE billing.accounts
    ADD COLUMN exhausted_reason text CHECK (exhausted_reason IN ('credit_exhausted', 'spend_limit_reached'));
ALTER TABLE billing.accounts
    ADD CONSTRAINT accounts_exhausted_with_reason CHECK ((exhausted_since IS NULL) = (exhausted_reason IS NULL));

-- An org's transactions, newest first (ledger::transactions).
CREATE INDEX ledger_transactions_by_org ON billing.ledger_transactions (org_id, created_at DESC)
    WHERE org_id IS NOT NULL;
