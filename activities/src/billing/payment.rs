//! Payment activities: one attempt at collecting an invoice, through whichever
//! [`PaymentProvider`] the worker was given (the sandbox today, a Stripe adapter later: swapped
//! at the worker, no workflow changes). The attempt's idempotency key is derived from the invoice
//! and the attempt number, so a retried activity charges once.

use super::vocabulary::activity;
use crate::{FinishHook, finish};
use platform_billing::payment::{self, AttemptResult, PaymentProvider};
use serde::{Deserialize, Serialize};
use shared_ids::InvoiceId;
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct PaymentActivities {
    pool: PgPool,
    provider: Arc<dyn PaymentProvider>,
    hook: FinishHook,
}

impl PaymentActivities {
    pub fn new(pool: PgPool, provider: Arc<dyn PaymentProvider>, hook: FinishHook) -> Self {
        Self {
            pool,
            provider,
            hook,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    pub invoice: InvoiceId,
    /// From 1. A pending charge is looked at again with the same number.
    pub attempt: i32,
}

#[activities]
impl PaymentActivities {
    #[activity(name = activity::PAYMENT_ATTEMPT)]
    pub async fn attempt(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: Attempt,
    ) -> Result<AttemptResult, ActivityError> {
        let result = payment::attempt_invoice(
            &self.pool,
            self.provider.as_ref(),
            input.invoice,
            input.attempt,
        )
        .await;
        finish(&self.hook, activity::PAYMENT_ATTEMPT, result)
    }
}
