//! `BillingSweep`: started by one Temporal Schedule per billing task queue ([`ensure_schedule`]),
//! it starts a `BillingCycle` for every org with an account, for the period holding now and the
//! one before (an org whose account appeared late still gets its last period billed). Cycle ids
//! are derived from the org and the period, so a sweep that runs again (every few minutes, or
//! once an hour) starts nothing twice; each cycle waits on its own timer for its period's end.
//!
//! Chosen over one Schedule per org (`billing-cycle/<org>`, reserved in the vocabulary): a
//! Schedule's input is fixed, so a per-org Schedule would need this same derivation of the
//! period from the time it fires, plus a Schedule to create (and delete) with every account.

use super::billing_cycle::{self, BillingCycle, CycleInput};
use super::options::sweep_options;
use super::vocabulary::{self, BillingStep, workflow};
use super::{Period, RetrySchedule, ScheduleChange, now_ms, step};
use activities::billing::account::{AccountActivities, OrgPage};
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use std::time::Duration;
use temporalio_client::Client;
use temporalio_client::schedules::{ScheduleAction, ScheduleError};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ContinueAsNewOptions, WorkflowContext, WorkflowResult};

/// Orgs read at once.
pub const ORGS_PER_PAGE: i64 = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SweepInput {
    /// The period's length in seconds; 0: calendar months.
    pub period_s: u64,
    /// The cycles' grace window for late usage.
    pub grace_s: u64,
    /// The cycles' dunning schedule.
    pub collection: RetrySchedule,
    pub pending_recheck_s: u64,
    /// Where a continued run resumes: the org after which to go on, and the instant the sweep
    /// started (so every page bills the same periods). `None` in a scheduled start.
    #[serde(default)]
    pub after: Option<OrgId>,
    #[serde(default)]
    pub at_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SweepOutcome {
    pub orgs: usize,
    /// Cycles this run started (those that existed are not counted).
    pub cycles_started: usize,
}

/// The periods a sweep at `at_ms` bills: the one before, and the one holding it.
pub fn periods_at(at_ms: i64, period_s: u64) -> [Period; 2] {
    let current = activities::billing::period_holding(at_ms, period_s);
    [activities::billing::period_before(&current), current]
}

/// Creates the sweep's Schedule on `task_queue`, or updates its interval and input.
pub async fn ensure_schedule(
    client: &Client,
    task_queue: &str,
    every: Duration,
    input: SweepInput,
) -> Result<ScheduleChange, ScheduleError> {
    let id = vocabulary::sweep_schedule_id(task_queue);
    let action = ScheduleAction::start_workflow(
        BillingSweep::run,
        input,
        task_queue.to_string(),
        id.clone(),
    );
    super::ensure_schedule(
        client,
        id,
        action,
        every,
        "billing cycles of every org (created by gpuaas-worker)",
    )
    .await
}

#[workflow]
#[derive(Default)]
pub struct BillingSweep;

#[workflow_methods]
impl BillingSweep {
    #[run(name = workflow::BILLING_SWEEP)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SweepInput,
    ) -> WorkflowResult<SweepOutcome> {
        let ctx = &*ctx;
        let at_ms = input.at_ms.unwrap_or_else(|| now_ms(ctx));
        let periods = periods_at(at_ms, input.period_s);
        let mut outcome = SweepOutcome::default();
        let mut after = input.after;
        ctx.set_current_details(format!(
            "starting the billing cycles of {} and {}",
            periods[0].label(),
            periods[1].label()
        ));
        loop {
            let orgs = ctx
                .execute_activity(
                    AccountActivities::orgs,
                    OrgPage {
                        after,
                        limit: ORGS_PER_PAGE,
                    },
                    sweep_options(),
                )
                .await?;
            for org in &orgs {
                for period in periods {
                    let cycle = CycleInput {
                        org: *org,
                        period,
                        grace_s: input.grace_s,
                        collection: input.collection.clone(),
                        pending_recheck_s: input.pending_recheck_s,
                    };
                    let options = billing_cycle::child_options(&cycle);
                    if ctx
                        .start_child_workflow(BillingCycle::run, cycle, options)
                        .await
                        .is_ok()
                    {
                        outcome.cycles_started += 1;
                    }
                }
            }
            outcome.orgs += orgs.len();
            if (orgs.len() as i64) < ORGS_PER_PAGE {
                break;
            }
            after = orgs.last().copied();
            if ctx.continue_as_new_suggested() {
                let next = SweepInput {
                    after,
                    at_ms: Some(at_ms),
                    ..input.clone()
                };
                ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
            }
        }
        step(
            ctx,
            BillingStep::Done,
            format!(
                "{} org(s): {} cycle(s) started",
                outcome.orgs, outcome.cycles_started
            ),
        );
        Ok(outcome)
    }
}
