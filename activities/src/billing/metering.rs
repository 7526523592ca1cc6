//! Metering activities: `platform_billing::metering::run`, which writes only the difference from
//! what is already rated (a rerun with unchanged inputs writes nothing).

use super::vocabulary::activity;
use crate::{FinishHook, finish};
use platform_billing::Period;
use platform_billing::metering::{self, RunOutcome};
use serde::{Deserialize, Serialize};
use shared_ids::OrgId;
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct MeteringActivities {
    pool: PgPool,
    hook: FinishHook,
}

impl MeteringActivities {
    pub fn new(pool: PgPool, hook: FinishHook) -> Self {
        Self { pool, hook }
    }
}

/// One metering run of an org's period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeterPeriod {
    pub org: OrgId,
    pub period: Period,
    /// `None`: the price book version in effect at the period's start.
    pub price_version: Option<i32>,
    /// Who asked, as a principal's label (`system:billing-cycle`, `user:<id>`).
    pub by: String,
}

#[activities]
impl MeteringActivities {
    #[activity(name = activity::METERING_RUN)]
    pub async fn run(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: MeterPeriod,
    ) -> Result<RunOutcome, ActivityError> {
        let result = metering::run(
            &self.pool,
            input.org,
            input.period,
            input.price_version,
            &input.by,
        )
        .await;
        finish(&self.hook, activity::METERING_RUN, result)
    }
}
