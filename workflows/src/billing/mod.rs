//! The billing workflows, one module per workflow, each with its starter, over the activities in
//! `activities/src/billing/`; [`vocabulary`] names everything Temporal sees. They run on the
//! billing task queue (`billing-control`), served by the control-plane worker.
//!
//! - [`metering_run`]: `MeteringRun`, one (re)rating of an org's period; a rerun with the same
//!   inputs writes nothing.
//! - [`billing_cycle`]: `BillingCycle`, an org's period from its end to a finalized invoice, and
//!   its collection started.
//! - [`payment_collection`]: `PaymentCollection`, the dunning of one invoice on a
//!   [`RetrySchedule`]: durable timers between attempts, uncollectible and delinquent at the end.
//! - [`credit_enforcement`]: `CreditEnforcement`, started by a Schedule: standing refreshed, and
//!   the running instances of orgs past their grace stopped through the GPU product's own
//!   `TerminateInstance` (ADR 0007, point 3).
//! - [`billing_sweep`]: `BillingSweep`, started by a Schedule: a `BillingCycle` for every org
//!   with an account, for the current and the previous period (derived ids: once each).
//!
//! Every step is a regular activity over an idempotent domain call (never a local activity:
//! doc/sdk-issues.md), so a worker killed at any point resumes without doing a step twice in
//! effect; a step's search-attribute upsert goes right before its activity or timer.

pub mod billing_cycle;
pub mod billing_sweep;
pub mod credit_enforcement;
pub mod metering_run;
mod options;
pub mod payment_collection;

pub use activities::billing::vocabulary;
pub use activities::billing::{
    AttemptResult, Invoice, InvoiceState, Period, RetrySchedule, RunOutcome,
};

pub use billing_cycle::{BillingCycle, CycleInput, CycleOutcome};
pub use billing_sweep::{BillingSweep, SweepInput, SweepOutcome};
pub use credit_enforcement::{CreditEnforcement, EnforcementInput, EnforcementOutcome};
pub use metering_run::{MeteringRun, MeteringRunInput};
pub use payment_collection::{CollectionInput, CollectionOutcome, PaymentCollection};

use std::time::{Duration, SystemTime};
use temporalio_common::search_attributes::SearchAttributeUpdate;
use temporalio_sdk::WorkflowContext;
use vocabulary::{BillingStep, search};

pub use crate::schedule::ScheduleChange;
pub(crate) use crate::schedule::ensure as ensure_schedule;

/// The step in the step search attribute and the UI's current details. Only before a command
/// (an activity, a timer, a child, the end).
pub(crate) fn step<W>(ctx: &WorkflowContext<W>, step: BillingStep, words: impl Into<String>) {
    crate::gpuaas::show_step(ctx, step);
    ctx.set_current_details(words.into());
}

/// A failed activity's stable code, for logs and outcomes: the domain error's code, else how it
/// failed (`timed_out`, `not_picked_up`, `failed`).
pub(crate) fn failure_code(e: &temporalio_sdk::ActivityExecutionError) -> String {
    use crate::failure::ActivityFailure;
    match ActivityFailure::of(e) {
        ActivityFailure::Failed { type_name } if !type_name.is_empty() => type_name,
        ActivityFailure::Failed { .. } | ActivityFailure::Other => "failed".to_string(),
        ActivityFailure::TimedOut => "timed_out".to_string(),
        ActivityFailure::NotPickedUp => "not_picked_up".to_string(),
    }
}

/// Logs one org's failed step (not while replaying: it was logged when it happened).
pub(crate) fn warn_org_failed<W>(
    ctx: &WorkflowContext<W>,
    what: &str,
    org: shared_ids::OrgId,
    code: &str,
    e: &temporalio_sdk::ActivityExecutionError,
) {
    if !ctx.is_replaying_history_events() {
        activities::billing::warn_org_failed(what, org, code, &crate::failure::root_message(e));
    }
}

/// The search attributes of a workflow about an org's period.
pub(crate) fn org_period_attributes(
    org: shared_ids::OrgId,
    period: &Period,
    first_step: BillingStep,
) -> Vec<SearchAttributeUpdate> {
    vec![
        search::ORG_ID.value_set(org.to_string()),
        search::PERIOD.value_set(period.label()),
        search::STEP.value_set(first_step.as_str().to_string()),
    ]
}

/// Workflow time in ms since the epoch.
pub(crate) fn now_ms<W>(ctx: &WorkflowContext<W>) -> i64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sleeps (a durable timer) until `at_ms`, if it is still ahead.
pub(crate) async fn sleep_until<W>(ctx: &WorkflowContext<W>, at_ms: i64) {
    let left = at_ms - now_ms(ctx);
    if left > 0 {
        let _ = ctx.timer(Duration::from_millis(left as u64)).await;
    }
}
