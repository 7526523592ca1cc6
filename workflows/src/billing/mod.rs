//! Billing workflows (not built yet, issue "Metering, billing cycles, ledger, payments and
//! dunning"): `metering_rerun.rs`, `billing_cycle.rs`, `payment_retry.rs`, each with its starter,
//! over the activities in `activities/src/billing/`.
