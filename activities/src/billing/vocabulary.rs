//! The billing domain's Temporal vocabulary: every name its workflows show Temporal (task queue,
//! workflow and activity types, workflow and schedule ids, search attributes, steps). Nothing
//! outside this module spells one (scripts/ci/check-architecture, rule 10).
//!
//! Frozen from the first release: a renamed workflow or activity type or id breaks running
//! workflows (a billing cycle waits a whole month). Change one only with a new name and
//! `ctx.patched(..)` in the workflow.

use shared_ids::{InvoiceId, OrgId};
use temporalio_common::search_attributes::SearchAttributeKey;

/// Task queue of the billing workflows and their activities (served by the control-plane
/// worker, beside the gpuaas queue).
pub const TASK_QUEUE: &str = "billing-control";

/// Workflow type names.
pub mod workflow {
    pub const METERING_RUN: &str = "MeteringRun";
    pub const BILLING_CYCLE: &str = "BillingCycle";
    pub const PAYMENT_COLLECTION: &str = "PaymentCollection";
    pub const CREDIT_ENFORCEMENT: &str = "CreditEnforcement";
    /// Started by the sweep's Schedule: starts `BillingCycle` for every org with an account.
    pub const BILLING_SWEEP: &str = "BillingSweep";
}

/// Activity type names, `billing.<resource>.<action>`.
pub mod activity {
    pub const METERING_RUN: &str = "billing.metering.run";
    pub const INVOICE_BUILD_DRAFT: &str = "billing.invoice.build_draft";
    pub const INVOICE_FINALIZE: &str = "billing.invoice.finalize";
    pub const INVOICE_MARK_UNCOLLECTIBLE: &str = "billing.invoice.mark_uncollectible";
    /// The period's cycle ended: late usage of it is invoiced by the run that rates it.
    pub const INVOICE_CLOSE_PERIOD: &str = "billing.invoice.close_period";
    /// After a metering run: finalizes the period's correction (adjusting invoice or credit
    /// note) of an already finalized invoice.
    pub const INVOICE_BILL_CORRECTIONS: &str = "billing.invoice.bill_corrections";
    pub const PAYMENT_ATTEMPT: &str = "billing.payment.attempt";
    pub const ACCOUNT_MARK_DELINQUENT: &str = "billing.account.mark_delinquent";
    pub const ACCOUNT_REFRESH_STANDING: &str = "billing.account.refresh_standing";
    /// A page of orgs with an account (the sweep's input).
    pub const ACCOUNT_ORGS: &str = "billing.account.orgs";
    pub const ENFORCEMENT_PAST_GRACE: &str = "billing.enforcement.past_grace";
    pub const ENFORCEMENT_RUNNING_INSTANCES: &str = "billing.enforcement.running_instances";
    pub const ENFORCEMENT_BEGIN_TERMINATION: &str = "billing.enforcement.begin_termination";
}

/// Workflow id of a metering run of an org's period with a price book version (`None`: the one
/// in effect, `in-effect`): a rerun with the same inputs uses the same id (reused after
/// completion, attached to while running); a run with another version never attaches to this
/// one's result.
pub fn metering_run_id(org: OrgId, period_label: &str, price_version: Option<i32>) -> String {
    match price_version {
        Some(v) => format!("billing-metering/{org}/{period_label}/v{v}"),
        None => format!("billing-metering/{org}/{period_label}/in-effect"),
    }
}

/// Workflow id of an org's billing cycle for a period: one cycle per org and period.
pub fn billing_cycle_id(org: OrgId, period_label: &str) -> String {
    format!("billing-cycle/{org}/{period_label}")
}

/// Workflow id of the collection of an invoice: one per invoice.
pub fn payment_collection_id(invoice: InvoiceId) -> String {
    format!("billing-payment/{invoice}")
}

/// Id of a per-org cycle Schedule. Reserved (frozen) for per-org schedules; the worker runs one
/// sweep schedule instead ([`sweep_schedule_id`]).
pub fn cycle_schedule_id(org: OrgId) -> String {
    format!("billing-cycle/{org}")
}

/// Id of the Schedule that runs `BillingSweep` on a task queue (and the prefix of its runs' ids).
pub fn sweep_schedule_id(task_queue: &str) -> String {
    format!("billing-sweep/{task_queue}")
}

/// Id of the Schedule that runs `CreditEnforcement` on a task queue.
pub fn enforcement_schedule_id(task_queue: &str) -> String {
    format!("billing-enforcement/{task_queue}")
}

/// Custom search attributes of the billing workflows (`SEARCH_ATTRIBUTES` in `scripts/lib.sh`).
/// The current step goes in the shared `GpuaasStep` attribute (every control-plane workflow's
/// step), re-exported here as [`search::STEP`].
pub mod search {
    use super::SearchAttributeKey;

    pub const ORG_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("BillingOrgId");
    pub const PERIOD: SearchAttributeKey<String> = SearchAttributeKey::keyword("BillingPeriod");
    pub use crate::gpuaas::vocabulary::search::STEP;

    /// `NAME=TYPE` pairs for `temporal server start-dev --search-attribute`.
    pub const REGISTRATION: [&str; 2] = ["BillingOrgId=Keyword", "BillingPeriod=Keyword"];
}

/// A billing workflow's current step, as the step search attribute shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BillingStep {
    /// `MeteringRun`, and the cycle's metering runs.
    Metering,
    /// `BillingCycle`: the period has not ended yet.
    WaitingForPeriodEnd,
    BuildingDraft,
    /// `BillingCycle`: the grace window for late usage.
    WaitingForLateUsage,
    Finalizing,
    /// `BillingCycle` started the invoice's collection; `PaymentCollection` attempts a charge.
    Collecting,
    /// `PaymentCollection`: waiting before the next attempt (or before looking at a pending one).
    WaitingToRetry,
    Paid,
    /// `PaymentCollection`: a hard decline ended it.
    Stopped,
    Uncollectible,
    /// `CreditEnforcement`: recomputing standing.
    RefreshingStanding,
    /// `CreditEnforcement`: stopping instances of orgs past their grace.
    StoppingInstances,
    Done,
}

impl BillingStep {
    pub const ALL: &'static [Self] = &[
        Self::Metering,
        Self::WaitingForPeriodEnd,
        Self::BuildingDraft,
        Self::WaitingForLateUsage,
        Self::Finalizing,
        Self::Collecting,
        Self::WaitingToRetry,
        Self::Paid,
        Self::Stopped,
        Self::Uncollectible,
        Self::RefreshingStanding,
        Self::StoppingInstances,
        Self::Done,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Metering => "billing_metering",
            Self::WaitingForPeriodEnd => "billing_waiting_for_period_end",
            Self::BuildingDraft => "billing_building_draft",
            Self::WaitingForLateUsage => "billing_waiting_for_late_usage",
            Self::Finalizing => "billing_finalizing",
            Self::Collecting => "billing_collecting",
            Self::WaitingToRetry => "billing_waiting_to_retry",
            Self::Paid => "billing_paid",
            Self::Stopped => "billing_stopped",
            Self::Uncollectible => "billing_uncollectible",
            Self::RefreshingStanding => "billing_refreshing_standing",
            Self::StoppingInstances => "billing_stopping_instances",
            Self::Done => "billing_done",
        }
    }
}

impl crate::gpuaas::vocabulary::Step for BillingStep {
    fn as_str(self) -> &'static str {
        BillingStep::as_str(self)
    }
}
