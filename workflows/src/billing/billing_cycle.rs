//! `BillingCycle`: an org's period, from its end to a finalized invoice whose collection has
//! started. Wait until the period has ended (a durable timer) → rate it → build the draft →
//! wait the grace window for late usage (a timer) → rate it again (only late usage changes
//! anything) → rebuild the draft → finalize it (posting to the ledger is inside finalize) → if
//! something is due, start `PaymentCollection` under the invoice's own id → done. Every step is
//! an idempotent activity, so a worker killed anywhere resumes without a double effect.

use super::options::{billing_options, metering_options};
use super::payment_collection::{self, CollectionInput, PaymentCollection};
use super::vocabulary::{self, BillingStep, workflow};
use super::{
    Invoice, InvoiceState, Period, RetrySchedule, org_period_attributes, sleep_until, step,
};
use activities::billing::invoice::{DraftFor, InvoiceActivities};
use activities::billing::metering::{MeterPeriod, MeteringActivities};
use serde::{Deserialize, Serialize};
use shared_ids::{InvoiceId, OrgId};
use std::time::Duration;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdConflictPolicy, WorkflowStartOptions};
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ChildWorkflowOptions, WorkflowContext, WorkflowResult};

/// Who the cycle's metering runs are by.
pub const BY: &str = "system:billing-cycle";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CycleInput {
    pub org: OrgId,
    pub period: Period,
    /// How long after the period's end late usage is still taken in before finalizing.
    pub grace_s: u64,
    /// The dunning schedule of the invoice's collection.
    pub collection: RetrySchedule,
    /// Seconds before a pending charge is looked at again.
    #[serde(default = "default_pending_recheck_s")]
    pub pending_recheck_s: u64,
}

fn default_pending_recheck_s() -> u64 {
    payment_collection::PENDING_RECHECK_S
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CycleOutcome {
    /// The finalized invoice; `None` when the period had nothing to bill.
    pub invoice: Option<InvoiceId>,
    pub state: Option<InvoiceState>,
    pub total_minor: i64,
    pub amount_due_minor: i64,
    /// Whether this cycle started the invoice's collection (false also when one existed).
    pub collection_started: bool,
}

pub fn workflow_id(org: OrgId, period: &Period) -> String {
    vocabulary::billing_cycle_id(org, &period.label())
}

/// Starts the org's cycle for the period, or finds it running or completed: one cycle per org
/// and period.
pub async fn start(
    client: &Client,
    task_queue: &str,
    input: CycleInput,
) -> Result<(), WorkflowStartError> {
    let options = WorkflowStartOptions::new(
        task_queue.to_string(),
        workflow_id(input.org, &input.period),
    )
    .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
    .id_reuse_policy(temporalio_client::WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
    .search_attributes(SearchAttributes::new(org_period_attributes(
        input.org,
        &input.period,
        BillingStep::WaitingForPeriodEnd,
    )))
    .build();
    match client
        .start_workflow(BillingCycle::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options to start it from the sweep: it outlives the sweep, under its derived id.
pub(crate) fn child_options(input: &CycleInput) -> ChildWorkflowOptions {
    ChildWorkflowOptions::builder()
        .workflow_id(workflow_id(input.org, &input.period))
        .parent_close_policy(temporalio_sdk::ParentClosePolicy::Abandon)
        .id_reuse_policy(temporalio_sdk::WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .search_attributes(SearchAttributes::new(org_period_attributes(
            input.org,
            &input.period,
            BillingStep::WaitingForPeriodEnd,
        )))
        .build()
}

#[workflow]
#[derive(Default)]
pub struct BillingCycle;

#[workflow_methods]
impl BillingCycle {
    #[run(name = workflow::BILLING_CYCLE)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: CycleInput,
    ) -> WorkflowResult<CycleOutcome> {
        let ctx = &*ctx;
        let (org, period) = (input.org, input.period);
        let label = period.label();
        step(
            ctx,
            BillingStep::WaitingForPeriodEnd,
            format!("org {org}: waiting for {label} to end ({})", period.end),
        );
        sleep_until(ctx, period.end.timestamp_millis()).await;

        let first = rate_and_draft(ctx, org, period, "first").await?;

        if input.grace_s > 0 {
            step(
                ctx,
                BillingStep::WaitingForLateUsage,
                format!(
                    "org {org}: {label} ended; taking in late usage for {}s",
                    input.grace_s
                ),
            );
            let _ = ctx.timer(Duration::from_secs(input.grace_s)).await;
        }
        let second = rate_and_draft(ctx, org, period, "late usage").await?;

        let Some(draft) = second.or(first) else {
            // Closed all the same: usage rated for it later is invoiced by the run that rates
            // it (`MeteringRun`), not left on a draft nobody finalizes.
            ctx.execute_activity(
                InvoiceActivities::close_period,
                DraftFor { org, period },
                billing_options(),
            )
            .await?;
            step(
                ctx,
                BillingStep::Done,
                format!("org {org}: nothing to bill for {label}"),
            );
            return Ok(CycleOutcome::default());
        };
        step(
            ctx,
            BillingStep::Finalizing,
            format!("org {org}: finalizing invoice {} for {label}", draft.id),
        );
        let invoice = ctx
            .execute_activity(InvoiceActivities::finalize, draft.id, billing_options())
            .await?;
        let mut outcome = CycleOutcome {
            invoice: Some(invoice.id),
            state: Some(invoice.state),
            total_minor: invoice.total_minor,
            amount_due_minor: invoice.amount_due_minor,
            collection_started: false,
        };
        if invoice.state == InvoiceState::Open && invoice.amount_due_minor > 0 {
            step(
                ctx,
                BillingStep::Collecting,
                format!(
                    "org {org}: invoice {} finalized, {} {} due: collection started",
                    invoice.id, invoice.amount_due_minor, invoice.currency
                ),
            );
            let collection = CollectionInput {
                invoice: invoice.id,
                org,
                schedule: input.collection.clone(),
                pending_recheck_s: input.pending_recheck_s,
                max_pending_looks: payment_collection::MAX_PENDING_LOOKS,
            };
            let options = payment_collection::child_options(&collection);
            outcome.collection_started = ctx
                .start_child_workflow(PaymentCollection::run, collection, options)
                .await
                .is_ok();
        }
        step(
            ctx,
            BillingStep::Done,
            format!(
                "org {org}: {label} invoiced ({} {}, {} due, {:?}){}",
                invoice.total_minor,
                invoice.currency,
                invoice.amount_due_minor,
                invoice.state,
                if outcome.collection_started {
                    "; collection started"
                } else {
                    ""
                }
            ),
        );
        Ok(outcome)
    }
}

/// Rates the period (writing only what changed) and (re)builds its draft.
async fn rate_and_draft(
    ctx: &WorkflowContext<BillingCycle>,
    org: OrgId,
    period: Period,
    which: &str,
) -> WorkflowResult<Option<Invoice>> {
    let label = period.label();
    step(
        ctx,
        BillingStep::Metering,
        format!("org {org}: rating {label} ({which} run)"),
    );
    let rated = ctx
        .execute_activity(
            MeteringActivities::run,
            MeterPeriod {
                org,
                period,
                price_version: None,
                by: BY.to_string(),
            },
            metering_options(),
        )
        .await?;
    step(
        ctx,
        BillingStep::BuildingDraft,
        format!(
            "org {org}: {} line(s) written for {label} ({which} run); building the draft",
            rated.changes.len()
        ),
    );
    let draft = ctx
        .execute_activity(
            InvoiceActivities::build_draft,
            DraftFor { org, period },
            billing_options(),
        )
        .await?;
    Ok(draft)
}
