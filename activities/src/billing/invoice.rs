//! Invoice activities: build (or rebuild) a draft, finalize it (which posts it to the ledger),
//! bill a period's corrections after a metering rerun, and mark one uncollectible when its
//! collection ran out of attempts (or hit a hard decline). Each is idempotent.

use super::vocabulary::activity;
use crate::{FinishHook, finish};
use platform_billing::Period;
use platform_billing::invoice::{self, Invoice, InvoiceKind, InvoiceState};
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

/// What [`InvoiceActivities::bill_corrections`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Corrections {
    /// The correction (kind `adjusting` or `credit_note`) this call finalized.
    pub finalized: Option<Invoice>,
    /// The period's draft of kind `invoice`, left for its `BillingCycle` to finalize.
    pub left_for_cycle: Option<InvoiceId>,
    /// The period's finalized corrections that are open with something due, oldest first: to
    /// collect (a collection already running or done is not started again: its id is the
    /// invoice's). Also holds one finalized by an earlier try whose answer was lost.
    pub to_collect: Vec<Invoice>,
}

async fn bill_corrections(
    pool: &sqlx::PgPool,
    input: DraftFor,
) -> shared_kernel::DomainResult<Corrections> {
    let mut out = Corrections::default();
    match invoice::build_draft(pool, input.org, input.period).await? {
        Some(draft) if matches!(draft.kind, InvoiceKind::Adjusting | InvoiceKind::CreditNote) => {
            out.finalized = Some(invoice::finalize(pool, draft.id).await?);
        }
        // Late usage of a period whose cycle ended with nothing to bill: nobody else will
        // finalize this draft.
        Some(draft) if invoice::period_closed(pool, input.org, input.period).await? => {
            out.finalized = Some(invoice::finalize(pool, draft.id).await?);
        }
        Some(draft) => out.left_for_cycle = Some(draft.id),
        None => {}
    }
    let late_invoice = out.finalized.as_ref().map(|i| i.id);
    out.to_collect = invoice::unpaid(pool, input.org)
        .await?
        .into_iter()
        .filter(|i| {
            i.period == input.period
                && (i.kind == InvoiceKind::Adjusting || Some(i.id) == late_invoice)
                && i.state == InvoiceState::Open
                && i.amount_due_minor > 0
        })
        .collect();
    Ok(out)
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

    /// After a metering run of the period: (re)builds its draft and, when that draft corrects an
    /// already finalized invoice (kind `adjusting` or `credit_note`), finalizes it. A draft of
    /// kind `invoice` is left for the period's `BillingCycle`, unless that cycle has ended (the
    /// period is closed): then it is late usage, finalized here.
    /// Idempotent: a retry finds nothing unbilled and answers what is left to collect.
    #[activity(name = activity::INVOICE_BILL_CORRECTIONS)]
    pub async fn bill_corrections(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DraftFor,
    ) -> Result<Corrections, ActivityError> {
        let result = bill_corrections(&self.pool, input).await;
        finish(&self.hook, activity::INVOICE_BILL_CORRECTIONS, result)
    }

    /// The period's cycle has ended: later usage of it is invoiced by the run that rates it.
    #[activity(name = activity::INVOICE_CLOSE_PERIOD)]
    pub async fn close_period(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DraftFor,
    ) -> Result<(), ActivityError> {
        let result = invoice::close_period(&self.pool, input.org, input.period).await;
        finish(&self.hook, activity::INVOICE_CLOSE_PERIOD, result)
    }

    /// open → uncollectible; an invoice settled meanwhile (paid, or by a credit note) comes back
    /// as it is (`Paid`), which the caller checks before marking its org delinquent.
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
