//! Credit-enforcement activities: which orgs are past their grace (credit or spend limit run
//! out, or delinquent, longer than the grace), their running instances, and the start of each
//! one's termination. A platform decision reaches the product through the product's own API
//! (ADR 0007, point 3): projects come from `platform_iam`, instances from `product_gpuaas`, and
//! the termination begins through the same domain call the API's `DELETE /v1/instances/{id}`
//! makes; the workflow then starts the product's `TerminateInstance`. No billing code reads or
//! writes a product's tables.

use super::vocabulary::activity;
use crate::{FinishHook, finish};
use platform_billing::account;
use product_gpuaas::{InstanceState, instance};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, OrgId, ProjectId};
use shared_kernel::OperationContext;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// The principal credit enforcement acts as.
pub const ENFORCER: &str = "billing-enforcement";

pub struct EnforcementActivities {
    pool: PgPool,
    hook: FinishHook,
}

impl EnforcementActivities {
    pub fn new(pool: PgPool, hook: FinishHook) -> Self {
        Self { pool, hook }
    }
}

/// A running instance of an org past its grace.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunningInstance {
    pub org: OrgId,
    pub project: ProjectId,
    pub instance: InstanceId,
}

/// An instance whose termination began: what `TerminateInstance` needs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Terminating {
    pub instance: InstanceId,
    pub project: ProjectId,
    pub node: Option<NodeId>,
}

#[activities]
impl EnforcementActivities {
    /// Orgs out of credit or over their limit, or delinquent, for longer than `grace_s`.
    #[activity(name = activity::ENFORCEMENT_PAST_GRACE)]
    pub async fn past_grace(
        self: Arc<Self>,
        _ctx: ActivityContext,
        grace_s: u64,
    ) -> Result<Vec<OrgId>, ActivityError> {
        let result = account::past_grace(&self.pool, Duration::from_secs(grace_s)).await;
        finish(&self.hook, activity::ENFORCEMENT_PAST_GRACE, result)
    }

    /// The org's running instances, over every project of it.
    #[activity(name = activity::ENFORCEMENT_RUNNING_INSTANCES)]
    pub async fn running_instances(
        self: Arc<Self>,
        _ctx: ActivityContext,
        org: OrgId,
    ) -> Result<Vec<RunningInstance>, ActivityError> {
        let result = async {
            let projects: Vec<ProjectId> = platform_iam::orgs::list_projects(&self.pool, org)
                .await?
                .into_iter()
                .map(|p| p.id)
                .collect();
            if projects.is_empty() {
                return Ok(Vec::new());
            }
            let running = instance::running_in_projects(&self.pool, &projects).await?;
            Ok(running
                .into_iter()
                .map(|(instance, project)| RunningInstance {
                    org,
                    project,
                    instance,
                })
                .collect())
        }
        .await;
        finish(&self.hook, activity::ENFORCEMENT_RUNNING_INSTANCES, result)
    }

    /// Begins the instance's termination as the platform (the API's delete, without a user):
    /// `None` when it was not running any more (ended, or someone else is ending it: whoever
    /// moved it to `terminating` unwinds it). Idempotent: a retry after the state change finds
    /// it `terminating` and answers the same.
    #[activity(name = activity::ENFORCEMENT_BEGIN_TERMINATION)]
    pub async fn begin_termination(
        self: Arc<Self>,
        _ctx: ActivityContext,
        target: RunningInstance,
    ) -> Result<Option<Terminating>, ActivityError> {
        let mut ctx = OperationContext::system(ENFORCER);
        ctx.org = Some(target.org);
        ctx.project = Some(target.project);
        let result = instance::begin_termination(&self.pool, &ctx, target.instance).await;
        let result = result.map(|(before, now)| {
            let ours = matches!(before, InstanceState::Running | InstanceState::Terminating)
                && now.state == InstanceState::Terminating
                && now.running_at.is_some();
            ours.then_some(Terminating {
                instance: now.id,
                project: now.project_id,
                node: now.node_id,
            })
        });
        finish(&self.hook, activity::ENFORCEMENT_BEGIN_TERMINATION, result)
    }
}
