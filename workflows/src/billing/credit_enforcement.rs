//! `CreditEnforcement`: one enforcement pass, started by a Temporal Schedule
//! ([`ensure_schedule`]). It recomputes the standing of every org with an account (a page at a
//! time), then stops the running instances of every org out of credit, over its spend limit or
//! delinquent for longer than the grace: through the GPU product's own API (ADR 0007, point 3),
//! each instance's termination begun as the API's delete begins it and unwound by the product's
//! `TerminateInstance` on the product's task queue. Billing never touches a product's tables.
//!
//! One bad org never stops enforcement for all: an org whose refresh, instance listing or
//! termination fails is logged (with its code), counted in the outcome and tried again by the
//! next pass; the other orgs go on, and the orgs past their grace are still stopped.

use super::options::{per_org_options, sweep_options};
use super::vocabulary::{self, BillingStep, workflow};
use super::{ScheduleChange, failure_code, step, warn_org_failed};
use crate::gpuaas::NodeTimeouts;
use crate::gpuaas::instance_terminate::{self, TerminateInput, TerminateInstance};
use activities::billing::account::{AccountActivities, OrgPage, RefreshPage};
use activities::billing::enforcement::{ENFORCER, EnforcementActivities};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use temporalio_client::Client;
use temporalio_client::schedules::{ScheduleAction, ScheduleError};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Orgs whose standing one activity refreshes.
pub const ORGS_PER_PAGE: i64 = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnforcementInput {
    /// How long an org may stay out of credit (or delinquent) before its instances are stopped.
    pub grace_s: u64,
    /// Credit thresholds (percent) whose crossing is recorded as an account event.
    pub thresholds_percent: Vec<u8>,
    /// The GPU product's control task queue, where its `TerminateInstance` runs.
    pub gpuaas_task_queue: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnforcementOutcome {
    pub orgs_refreshed: usize,
    pub standing_changes: usize,
    pub orgs_past_grace: usize,
    /// Instances whose termination this pass began.
    pub terminations_started: usize,
    /// Orgs whose standing refresh failed (the others were refreshed).
    #[serde(default)]
    pub refresh_failures: usize,
    /// Pages of orgs that could not be read at all (the refresh stopped there; enforcement went
    /// on).
    #[serde(default)]
    pub page_failures: usize,
    /// Failed steps stopping an org past its grace: listing its instances, or beginning one's
    /// termination (the other orgs and instances went on).
    #[serde(default)]
    pub stop_failures: usize,
}

/// Creates the enforcement Schedule on `task_queue`, or updates its interval and input.
pub async fn ensure_schedule(
    client: &Client,
    task_queue: &str,
    every: Duration,
    input: EnforcementInput,
) -> Result<ScheduleChange, ScheduleError> {
    let id = vocabulary::enforcement_schedule_id(task_queue);
    let action = ScheduleAction::start_workflow(
        CreditEnforcement::run,
        input,
        task_queue.to_string(),
        id.clone(),
    );
    super::ensure_schedule(
        client,
        id,
        action,
        every,
        "billing credit enforcement (created by gpuaas-worker)",
    )
    .await
}

#[workflow]
#[derive(Default)]
pub struct CreditEnforcement;

#[workflow_methods]
impl CreditEnforcement {
    #[run(name = workflow::CREDIT_ENFORCEMENT)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: EnforcementInput,
    ) -> WorkflowResult<EnforcementOutcome> {
        let ctx = &*ctx;
        let mut outcome = EnforcementOutcome::default();
        step(
            ctx,
            BillingStep::RefreshingStanding,
            "recomputing the standing of every org with an account",
        );
        let mut after = None;
        loop {
            let page = RefreshPage {
                page: OrgPage {
                    after,
                    limit: ORGS_PER_PAGE,
                },
                thresholds_percent: input.thresholds_percent.clone(),
            };
            let refreshed = match ctx
                .execute_activity(AccountActivities::refresh_standing, page, sweep_options())
                .await
            {
                Ok(refreshed) => refreshed,
                Err(e) => {
                    // The page could not be read: the rest of the refresh waits for the next
                    // pass; who is past grace already is still stopped.
                    outcome.page_failures += 1;
                    if !ctx.is_replaying_history_events() {
                        let code = failure_code(&e);
                        activities::billing::warn_page_failed(
                            after,
                            &code,
                            &crate::failure::root_message(&e),
                        );
                    }
                    break;
                }
            };
            outcome.orgs_refreshed += refreshed.orgs - refreshed.failed.len();
            outcome.standing_changes += refreshed.changes.len();
            outcome.refresh_failures += refreshed.failed.len();
            match refreshed.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let past = ctx
            .execute_activity(
                EnforcementActivities::past_grace,
                input.grace_s,
                sweep_options(),
            )
            .await?;
        outcome.orgs_past_grace = past.len();
        if !past.is_empty() {
            step(
                ctx,
                BillingStep::StoppingInstances,
                format!(
                    "{} org(s) past their grace of {}s: stopping their running instances",
                    past.len(),
                    input.grace_s
                ),
            );
        }
        for org in past {
            let running = match ctx
                .execute_activity(
                    EnforcementActivities::running_instances,
                    org,
                    per_org_options(),
                )
                .await
            {
                Ok(running) => running,
                Err(e) => {
                    let code = failure_code(&e);
                    warn_org_failed(ctx, "listing its running instances", org, &code, &e);
                    outcome.stop_failures += 1;
                    continue;
                }
            };
            for target in running {
                let begun = match ctx
                    .execute_activity(
                        EnforcementActivities::begin_termination,
                        target,
                        per_org_options(),
                    )
                    .await
                {
                    Ok(begun) => begun,
                    Err(e) => {
                        let code = failure_code(&e);
                        warn_org_failed(ctx, "beginning an instance's termination", org, &code, &e);
                        outcome.stop_failures += 1;
                        continue;
                    }
                };
                let Some(t) = begun else {
                    continue; // it ended meanwhile
                };
                let terminate = TerminateInput {
                    requested_by: Some(shared_kernel::Principal::system(ENFORCER)),
                    instance_id: t.instance,
                    project_id: t.project,
                    node_id: t.node,
                    node_timeouts: NodeTimeouts::default(),
                };
                let mut options = instance_terminate::restart_options(&terminate);
                options.task_queue = Some(input.gpuaas_task_queue.clone());
                // An error: its termination runs (or ran) already.
                let _ = ctx
                    .start_child_workflow(TerminateInstance::run, terminate, options)
                    .await;
                outcome.terminations_started += 1;
            }
        }
        step(
            ctx,
            BillingStep::Done,
            format!(
                "{} org(s) refreshed ({} change(s), {} failed, {} page(s) unread); {} past grace; \
                 {} instance termination(s) begun ({} step(s) failed)",
                outcome.orgs_refreshed,
                outcome.standing_changes,
                outcome.refresh_failures,
                outcome.page_failures,
                outcome.orgs_past_grace,
                outcome.terminations_started,
                outcome.stop_failures
            ),
        );
        Ok(outcome)
    }
}
