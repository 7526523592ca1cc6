//! `PaymentCollection`: the dunning of one finalized invoice. Attempt 1 at once, then one attempt
//! after each delay of its [`RetrySchedule`], waiting on durable timers (a worker restart loses
//! nothing). A pending charge is looked at again after a short timer under the same attempt
//! number (so it is charged once), at most `max_pending_looks` times, after which the attempt
//! counts as a soft failure and the schedule goes on. A hard decline stops the attempts; it and
//! the last attempt failing both mark the invoice uncollectible and, if it still is (a manual
//! payment or a credit note may have settled it meanwhile), its org delinquent, so a postpaid org
//! with a dead card cannot keep launching. Each attempt's idempotency key is derived from the
//! invoice and the attempt number, so a retried or replayed attempt charges once.

use super::options::{billing_options, payment_options};
use super::vocabulary::{self, BillingStep, search, workflow};
use super::{AttemptResult, InvoiceState, RetrySchedule, step};
use crate::failure::ActivityFailure;
use activities::billing::account::AccountActivities;
use activities::billing::invoice::InvoiceActivities;
use activities::billing::payment::{Attempt, PaymentActivities};
use serde::{Deserialize, Serialize};
use shared_ids::{InvoiceId, OrgId};
use std::time::Duration;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdConflictPolicy, WorkflowStartOptions};
use temporalio_common::search_attributes::{SearchAttributeUpdate, SearchAttributes};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ChildWorkflowOptions, WorkflowContext, WorkflowResult};

/// How long a pending charge waits before it is looked at again, by default.
pub const PENDING_RECHECK_S: u64 = 5;

fn default_pending_recheck_s() -> u64 {
    PENDING_RECHECK_S
}

/// How many times one pending attempt is looked at, by default, before it counts as failed.
pub const MAX_PENDING_LOOKS: u32 = 60;

fn default_max_pending_looks() -> u32 {
    MAX_PENDING_LOOKS
}

/// The domain's code for "not open" (a void or draft invoice is never made uncollectible).
const INVOICE_NOT_OPEN: &str = "invoice_not_open";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectionInput {
    pub invoice: InvoiceId,
    /// The invoice's org (its search attribute).
    pub org: OrgId,
    pub schedule: RetrySchedule,
    /// Seconds before a pending charge is looked at again.
    #[serde(default = "default_pending_recheck_s")]
    pub pending_recheck_s: u64,
    /// Looks at one pending attempt (at least 1) before it counts as a soft failure
    /// (`RetryLater`) and the schedule goes on.
    #[serde(default = "default_max_pending_looks")]
    pub max_pending_looks: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CollectionOutcome {
    /// Paid on attempt `attempts` (or nothing was due).
    Paid { attempts: i32 },
    /// A hard decline on attempt `attempts`: no more attempts; the invoice is uncollectible and
    /// the org delinquent (as when every attempt failed), unless it was void.
    Stopped { attempts: i32, reason: String },
    /// Every attempt failed: the invoice is uncollectible and the org delinquent.
    Uncollectible { attempts: i32, reason: String },
    /// The collection gave up after `attempts`, but the invoice had been settled meanwhile (a
    /// manual payment, a credit note): nothing uncollectible, nobody delinquent.
    Settled { attempts: i32 },
}

pub fn workflow_id(invoice: InvoiceId) -> String {
    vocabulary::payment_collection_id(invoice)
}

fn search_attributes(input: &CollectionInput) -> Vec<SearchAttributeUpdate> {
    vec![
        search::ORG_ID.value_set(input.org.to_string()),
        search::STEP.value_set(BillingStep::Collecting.as_str().to_string()),
    ]
}

/// Starts the invoice's collection, or finds it running or completed: an invoice is collected by
/// one run (a failed run may be followed by a new one: every step is idempotent).
pub async fn start(
    client: &Client,
    task_queue: &str,
    input: CollectionInput,
) -> Result<(), WorkflowStartError> {
    let options = WorkflowStartOptions::new(task_queue.to_string(), workflow_id(input.invoice))
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(temporalio_client::WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .search_attributes(SearchAttributes::new(search_attributes(&input)))
        .build();
    match client
        .start_workflow(PaymentCollection::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options to start it from a billing cycle: it outlives the cycle, under the invoice's own id.
pub(crate) fn child_options(input: &CollectionInput) -> ChildWorkflowOptions {
    ChildWorkflowOptions::builder()
        .workflow_id(workflow_id(input.invoice))
        .parent_close_policy(temporalio_sdk::ParentClosePolicy::Abandon)
        .id_reuse_policy(temporalio_sdk::WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .search_attributes(SearchAttributes::new(search_attributes(input)))
        .build()
}

#[workflow]
#[derive(Default)]
pub struct PaymentCollection;

#[workflow_methods]
impl PaymentCollection {
    #[run(name = workflow::PAYMENT_COLLECTION)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: CollectionInput,
    ) -> WorkflowResult<CollectionOutcome> {
        let ctx = &*ctx;
        let id = input.invoice;
        let last = input.schedule.attempts() as i32;
        let max_looks = input.max_pending_looks.max(1);
        let mut attempt: i32 = 1;
        let mut looks = 0u32;
        loop {
            step(
                ctx,
                BillingStep::Collecting,
                format!("invoice {id}: attempt {attempt} of {last}"),
            );
            let result = ctx
                .execute_activity(
                    PaymentActivities::attempt,
                    Attempt {
                        invoice: id,
                        attempt,
                    },
                    payment_options(),
                )
                .await?;
            let reason = match result {
                AttemptResult::Paid => {
                    step(
                        ctx,
                        BillingStep::Paid,
                        format!("invoice {id}: paid on attempt {attempt}"),
                    );
                    return Ok(CollectionOutcome::Paid { attempts: attempt });
                }
                AttemptResult::Stop { reason } => {
                    return give_up(ctx, id, attempt, reason, Ending::HardDecline).await;
                }
                AttemptResult::Pending if looks + 1 < max_looks => {
                    looks += 1;
                    step(
                        ctx,
                        BillingStep::WaitingToRetry,
                        format!(
                            "invoice {id}: attempt {attempt} pending, looking again (look {looks} of {max_looks})"
                        ),
                    );
                    let _ = ctx
                        .timer(Duration::from_secs(input.pending_recheck_s.max(1)))
                        .await;
                    continue;
                }
                AttemptResult::Pending => {
                    format!("still pending after {max_looks} look(s)")
                }
                AttemptResult::RetryLater { reason } => reason,
            };
            if attempt >= last {
                return give_up(ctx, id, attempt, reason, Ending::Exhausted).await;
            }
            let delay = input.schedule.delays[(attempt - 1) as usize];
            step(
                ctx,
                BillingStep::WaitingToRetry,
                format!(
                    "invoice {id}: attempt {attempt} failed ({reason}); attempt {} in {}s",
                    attempt + 1,
                    delay.as_secs()
                ),
            );
            let _ = ctx.timer(delay).await;
            attempt += 1;
            looks = 0;
        }
    }
}

/// Why the collection gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A hard decline: retrying cannot help.
    HardDecline,
    /// The last attempt failed.
    Exhausted,
}

/// No more attempts: the invoice is marked uncollectible and, if it is (it was not settled
/// meanwhile), its org delinquent.
async fn give_up(
    ctx: &WorkflowContext<PaymentCollection>,
    id: InvoiceId,
    attempts: i32,
    reason: String,
    ending: Ending,
) -> WorkflowResult<CollectionOutcome> {
    let (shown, why) = match ending {
        Ending::HardDecline => (
            BillingStep::Stopped,
            format!("attempt {attempts} declined for good ({reason}): no more attempts"),
        ),
        Ending::Exhausted => (
            BillingStep::Uncollectible,
            format!("{attempts} attempt(s) failed (last: {reason})"),
        ),
    };
    step(
        ctx,
        shown,
        format!("invoice {id}: {why}; marking it uncollectible"),
    );
    let stopped = || match ending {
        Ending::HardDecline => CollectionOutcome::Stopped {
            attempts,
            reason: reason.clone(),
        },
        Ending::Exhausted => CollectionOutcome::Uncollectible {
            attempts,
            reason: reason.clone(),
        },
    };
    let invoice = match ctx
        .execute_activity(InvoiceActivities::mark_uncollectible, id, billing_options())
        .await
    {
        Ok(invoice) => invoice,
        // Void (a hard decline's `Stop`): nothing is owed on it any more.
        Err(e)
            if ActivityFailure::of(&e)
                == (ActivityFailure::Failed {
                    type_name: INVOICE_NOT_OPEN.to_string(),
                }) =>
        {
            ctx.set_current_details(format!("invoice {id}: {why}; it is not open (void)"));
            return Ok(stopped());
        }
        Err(e) => return Err(e.into()),
    };
    if invoice.state != InvoiceState::Uncollectible {
        step(
            ctx,
            BillingStep::Paid,
            format!(
                "invoice {id}: {why}, but it was settled meanwhile ({:?})",
                invoice.state
            ),
        );
        return Ok(CollectionOutcome::Settled { attempts });
    }
    ctx.execute_activity(
        AccountActivities::mark_delinquent,
        invoice.org,
        billing_options(),
    )
    .await?;
    ctx.set_current_details(format!(
        "invoice {id}: {why}; uncollectible, org {} delinquent",
        invoice.org
    ));
    Ok(stopped())
}
