//! `MeteringRun`: one (re)rating of an org's period with a price book version, returning what it
//! changed, then the period's corrections billed. Its id is derived from the org, the period and
//! the price version (`…/v<N>`, `…/in-effect`), so a rerun with the same inputs reuses it after
//! completion (and finds nothing to change), a second start while one runs attaches to it, and a
//! run with another version never attaches to this one's result.
//!
//! Corrections: when the period's invoice is already finalized, what the run changed goes on a
//! correcting draft (`adjusting` when more is owed, `credit_note` when less), which the run
//! finalizes (`billing.invoice.bill_corrections`); an adjusting invoice with something due is
//! then collected by `PaymentCollection` under the invoice's own id (on the default dunning
//! schedule). A draft of kind `invoice` (the period was never invoiced) is left for the period's
//! `BillingCycle`.

use super::options::{billing_options, metering_options};
use super::payment_collection::{self, CollectionInput, PaymentCollection};
use super::vocabulary::{self, BillingStep, workflow};
use super::{Period, RetrySchedule, RunOutcome, org_period_attributes, step};
use activities::billing::invoice::{DraftFor, InvoiceActivities};
use activities::billing::metering::{MeterPeriod, MeteringActivities};
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use temporalio_client::errors::{WorkflowGetResultError, WorkflowStartError};
use temporalio_client::{
    Client, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeteringRunInput {
    pub org: OrgId,
    pub period: Period,
    /// `None`: the price book version in effect at the period's start.
    pub price_version: Option<i32>,
    /// Who asked, as a principal's label (`system:billing-cycle`, `user:<id>`).
    pub by: String,
}

pub fn workflow_id(org: OrgId, period: &Period, price_version: Option<i32>) -> String {
    vocabulary::metering_run_id(org, &period.label(), price_version)
}

/// Starts the run, or attaches to the one running under the same id; a completed one is run
/// again (a rerun writes only what changed).
pub async fn start(
    client: &Client,
    task_queue: &str,
    input: MeteringRunInput,
) -> Result<(), WorkflowStartError> {
    match client
        .start_workflow(
            MeteringRun::run,
            input.clone(),
            start_options(task_queue, &input),
        )
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why [`run`] has no outcome.
#[derive(Debug)]
pub enum MeteringRunError {
    Start(WorkflowStartError),
    Result(WorkflowGetResultError),
}

impl std::fmt::Display for MeteringRunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(e) => write!(f, "starting the metering run: {e}"),
            Self::Result(e) => write!(f, "the metering run: {e}"),
        }
    }
}

impl std::error::Error for MeteringRunError {}

/// Starts (or attaches to) the run and waits for its outcome.
pub async fn run(
    client: &Client,
    task_queue: &str,
    input: MeteringRunInput,
) -> Result<RunOutcome, MeteringRunError> {
    let id = workflow_id(input.org, &input.period, input.price_version);
    let options = start_options(task_queue, &input);
    let handle = match client
        .start_workflow(MeteringRun::run, input, options)
        .await
    {
        Ok(handle) => handle,
        Err(WorkflowStartError::AlreadyStarted { .. }) => client.get_workflow_handle(id),
        Err(e) => return Err(MeteringRunError::Start(e)),
    };
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(MeteringRunError::Result)
}

fn start_options(task_queue: &str, input: &MeteringRunInput) -> WorkflowStartOptions {
    WorkflowStartOptions::new(
        task_queue.to_string(),
        workflow_id(input.org, &input.period, input.price_version),
    )
    .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
    .search_attributes(SearchAttributes::new(org_period_attributes(
        input.org,
        &input.period,
        BillingStep::Metering,
    )))
    .build()
}

#[workflow]
#[derive(Default)]
pub struct MeteringRun;

#[workflow_methods]
impl MeteringRun {
    #[run(name = workflow::METERING_RUN)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: MeteringRunInput,
    ) -> WorkflowResult<RunOutcome> {
        let ctx = &*ctx;
        let (org, period) = (input.org, input.period);
        let label = period.label();
        step(
            ctx,
            BillingStep::Metering,
            format!("rating {label} of org {org} (by {})", input.by),
        );
        let outcome = ctx
            .execute_activity(
                MeteringActivities::run,
                MeterPeriod {
                    org,
                    period,
                    price_version: input.price_version,
                    by: input.by,
                },
                metering_options(),
            )
            .await?;
        let rated = format!(
            "{label}: {} line(s) written, total {} -> {} (price version {})",
            outcome.changes.len(),
            outcome.total_before,
            outcome.total_after,
            outcome.price_version
        );
        // Always, not only when this run changed something: a run whose billing failed after its
        // lines were written is followed by a rerun that changes nothing.
        step(
            ctx,
            BillingStep::Finalizing,
            format!("{rated}; billing the corrections of a finalized invoice"),
        );
        let corrections = ctx
            .execute_activity(
                InvoiceActivities::bill_corrections,
                DraftFor { org, period },
                billing_options(),
            )
            .await?;
        let mut words = rated;
        if let Some(c) = &corrections.finalized {
            words.push_str(&format!(
                "; {:?} {} finalized ({} {}, {} due, {:?})",
                c.kind, c.id, c.total_minor, c.currency, c.amount_due_minor, c.state
            ));
        }
        if let Some(draft) = corrections.left_for_cycle {
            words.push_str(&format!("; draft {draft} left for the billing cycle"));
        }
        for due in &corrections.to_collect {
            step(
                ctx,
                BillingStep::Collecting,
                format!(
                    "{words}; collecting invoice {} ({} {} due)",
                    due.id, due.amount_due_minor, due.currency
                ),
            );
            let collection = CollectionInput {
                invoice: due.id,
                org,
                schedule: RetrySchedule::default(),
                pending_recheck_s: payment_collection::PENDING_RECHECK_S,
                max_pending_looks: payment_collection::MAX_PENDING_LOOKS,
            };
            let options = payment_collection::child_options(&collection);
            // An error: its collection runs (or ran) already.
            if ctx
                .start_child_workflow(PaymentCollection::run, collection, options)
                .await
                .is_ok()
            {
                words.push_str(&format!("; collection of {} started", due.id));
            }
        }
        step(ctx, BillingStep::Done, words);
        Ok(outcome)
    }
}
