//! `MeteringRun`: one (re)rating of an org's period, returning what it changed. Its id is derived
//! from the org and the period, so a rerun with the same inputs reuses it after completion (and
//! finds nothing to change) and a second start while one runs attaches to it.

use super::options::metering_options;
use super::vocabulary::{self, BillingStep, workflow};
use super::{Period, RunOutcome, org_period_attributes, step};
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

pub fn workflow_id(org: OrgId, period: &Period) -> String {
    vocabulary::metering_run_id(org, &period.label())
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
    let id = workflow_id(input.org, &input.period);
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
        workflow_id(input.org, &input.period),
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
        let label = input.period.label();
        step(
            ctx,
            BillingStep::Metering,
            format!("rating {label} of org {} (by {})", input.org, input.by),
        );
        let outcome = ctx
            .execute_activity(
                MeteringActivities::run,
                MeterPeriod {
                    org: input.org,
                    period: input.period,
                    price_version: input.price_version,
                    by: input.by,
                },
                metering_options(),
            )
            .await?;
        step(
            ctx,
            BillingStep::Done,
            format!(
                "{label}: {} line(s) written, total {} -> {} (price version {})",
                outcome.changes.len(),
                outcome.total_before,
                outcome.total_after,
                outcome.price_version
            ),
        );
        Ok(outcome)
    }
}
