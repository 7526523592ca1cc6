//! Account activities: standing (refreshed a page of orgs at a time by credit enforcement),
//! delinquency (when an invoice's collection ran out of attempts), and the orgs with an account.

use super::vocabulary::activity;
use crate::{FinishHook, finish};
use platform_billing::account::{self, BillingAccount, StandingChange};
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct AccountActivities {
    pool: PgPool,
    hook: FinishHook,
}

impl AccountActivities {
    pub fn new(pool: PgPool, hook: FinishHook) -> Self {
        Self { pool, hook }
    }
}

/// A page of orgs with an account: those after `after`, at most `limit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrgPage {
    pub after: Option<OrgId>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshPage {
    pub page: OrgPage,
    /// Credit thresholds (percent of the credit at its last top-up) whose crossing is recorded.
    pub thresholds_percent: Vec<u8>,
}

/// An org one step failed for (the others went on), by the error's stable code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrgFailure {
    pub org: OrgId,
    pub code: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refreshed {
    /// Orgs read on this page.
    pub orgs: usize,
    /// Those whose standing changed or that crossed a threshold.
    pub changes: Vec<StandingChange>,
    /// Those whose refresh failed (logged; the next pass tries them again).
    #[serde(default)]
    pub failed: Vec<OrgFailure>,
    /// The cursor of the next page; `None`: this was the last.
    pub next: Option<OrgId>,
}

#[activities]
impl AccountActivities {
    /// Recomputes the standing of one page of orgs. Idempotent (the domain call is). One org's
    /// error is logged and answered in [`Refreshed::failed`]; the page's other orgs go on (one
    /// bad org must not stop enforcement for all). Only reading the page fails the activity.
    #[activity(name = activity::ACCOUNT_REFRESH_STANDING)]
    pub async fn refresh_standing(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RefreshPage,
    ) -> Result<Refreshed, ActivityError> {
        let result = async {
            let orgs = account::orgs(&self.pool, input.page.after, input.page.limit).await?;
            let mut changes = Vec::new();
            let mut failed = Vec::new();
            for org in &orgs {
                match account::refresh_standing(&self.pool, *org, &input.thresholds_percent).await {
                    Ok(change) => {
                        if change.before != change.after || !change.events.is_empty() {
                            changes.push(change);
                        }
                    }
                    Err(e) => {
                        super::warn_org_failed("refreshing its standing", *org, e.code(), &e);
                        failed.push(OrgFailure {
                            org: *org,
                            code: e.code().to_string(),
                        });
                    }
                }
            }
            let next = if (orgs.len() as i64) < input.page.limit {
                None
            } else {
                orgs.last().copied()
            };
            Ok(Refreshed {
                orgs: orgs.len(),
                changes,
                failed,
                next,
            })
        }
        .await;
        finish(&self.hook, activity::ACCOUNT_REFRESH_STANDING, result)
    }

    /// One page of the orgs with an account (the billing sweep's input).
    #[activity(name = activity::ACCOUNT_ORGS)]
    pub async fn orgs(
        self: Arc<Self>,
        _ctx: ActivityContext,
        page: OrgPage,
    ) -> Result<Vec<OrgId>, ActivityError> {
        let result = account::orgs(&self.pool, page.after, page.limit).await;
        finish(&self.hook, activity::ACCOUNT_ORGS, result)
    }

    #[activity(name = activity::ACCOUNT_MARK_DELINQUENT)]
    pub async fn mark_delinquent(
        self: Arc<Self>,
        _ctx: ActivityContext,
        org: OrgId,
    ) -> Result<BillingAccount, ActivityError> {
        let result = account::mark_delinquent(&self.pool, org).await;
        finish(&self.hook, activity::ACCOUNT_MARK_DELINQUENT, result)
    }
}
