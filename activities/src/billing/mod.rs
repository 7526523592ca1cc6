//! Billing activities (not built yet, issue "Metering, billing cycles, ledger, payments and
//! dunning"): adapters over `domains/platform/billing` for the metering, billing-cycle and
//! payment-retry workflows in `workflows/src/billing/`, with the billing vocabulary in
//! `vocabulary.rs` here, as `gpuaas/` does.
