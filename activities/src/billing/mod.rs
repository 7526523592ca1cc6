//! Billing activities: thin adapters over `platform_billing` (and, for credit enforcement, the
//! reads and the termination call of the products it stops) for the workflows in
//! `workflows/src/billing/`, with the billing vocabulary in [`vocabulary`]. Every one is
//! idempotent because the domain call it wraps is; they run as regular activities on the billing
//! task queue (never local ones: doc/sdk-issues.md).

pub mod account;
pub mod enforcement;
pub mod invoice;
pub mod metering;
pub mod payment;
pub mod vocabulary;

// The domain types that cross the workflow boundary, so workflows need not name the domain crate.
pub use platform_billing::Period;
pub use platform_billing::account::StandingChange;
pub use platform_billing::invoice::{Invoice, InvoiceState};
pub use platform_billing::metering::{LineChange, RunOutcome};
pub use platform_billing::payment::{
    AttemptResult, PaymentProvider, RetrySchedule, SandboxProvider,
};

/// Logs that one org's billing step failed while the others go on (standing refresh, credit
/// enforcement). Workflows call it outside replay only.
pub fn warn_org_failed(
    what: &str,
    org: shared_ids::OrgId,
    code: &str,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(%org, code, error = %error, "billing: {what} failed for one org; the others go on");
}

/// Logs that a page of orgs could not be refreshed at all (credit enforcement goes on).
pub fn warn_page_failed(
    after: Option<shared_ids::OrgId>,
    code: &str,
    error: &dyn std::fmt::Display,
) {
    let after = after.map(|o| o.to_string()).unwrap_or_default();
    tracing::warn!(after, code, error = %error, "billing: a page of orgs could not be refreshed; enforcement goes on");
}

/// The period of `length_s` seconds holding the instant `at_ms` (ms since the epoch), aligned to
/// the epoch; the calendar month holding it when `length_s` is 0. Deterministic: workflows call
/// it with workflow time.
pub fn period_holding(at_ms: i64, length_s: u64) -> Period {
    let at = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
    if length_s == 0 {
        Period::month_of(at)
    } else {
        Period::aligned(at, chrono::Duration::seconds(length_s as i64))
    }
}

/// The period before `period`, of the same kind.
pub fn period_before(period: &Period) -> Period {
    let just_before = period.start - chrono::Duration::seconds(1);
    if Period::month_of(period.start) == *period {
        Period::month_of(just_before)
    } else {
        Period::aligned(just_before, period.end - period.start)
    }
}

/// Parses a period label (`2026-12`, or `START-END`), as the domain does.
pub fn parse_period(label: &str) -> shared_kernel::DomainResult<Period> {
    Period::parse(label)
}
