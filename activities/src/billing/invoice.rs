//! Invoice activities: build (or rebuild) a draft, finalize it (which posts it to the ledger),
//! and mark one uncollectible when its collection ran out of attempts. Each is idempotent.

use super::vocabulary::activity;
use crate::{FinishHook, finish};
use platform_billing::Period;
use platform_billing::invoice::{self, Invoice};
use serde::{Deserialize, Serialize};
use shared_ids::{InvoiceId, OrgId};
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct InvoiceActivities {
    pool: PgPool,
    hook: FinishHook,
}

impl InvoiceActivities {
    pub fn new(pool: PgPool, hook: FinishHook) -> Self {
        Self { pool, hook }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DraftFor {
    pub org: OrgId,
    pub period: Period,
}

#[activities]
impl InvoiceActivities {
    /// The org's draft for the period from its unbilled rated lines; `None`: nothing to bill.
    #[activity(name = activity::INVOICE_BUILD_DRAFT)]
    pub async fn build_draft(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DraftFor,
    ) -> Result<Option<Invoice>, ActivityError> {
        let result = invoice::build_draft(&self.pool, input.org, input.period).await;
        finish(&self.hook, activity::INVOICE_BUILD_DRAFT, result)
    }

    /// draft → open, posted to the ledger (or straight to paid when nothing is due).
    #[activity(name = activity::INVOICE_FINALIZE)]
    pub async fn finalize(
        self: Arc<Self>,
        _ctx: ActivityContext,
        id: InvoiceId,
    ) -> Result<Invoice, ActivityError> {
        let result = invoice::finalize(&self.pool, id).await;
        finish(&self.hook, activity::INVOICE_FINALIZE, result)
    }

    #[activity(name = activity::INVOICE_MARK_UNCOLLECTIBLE)]
    pub async fn mark_uncollectible(
        self: Arc<Self>,
        _ctx: ActivityContext,
        id: InvoiceId,
    ) -> Result<Invoice, ActivityError> {
        let result = invoice::mark_uncollectible(&self.pool, id).await;
        finish(&self.hook, activity::INVOICE_MARK_UNCOLLECTIBLE, result)
    }
}
