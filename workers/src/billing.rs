//! What the worker runs for billing: its workflows and activities on the billing task queue
//! (`billing-control`, beside the gpuaas queue in the same process), the payment provider the
//! payment activities hold, and two Schedules: the billing sweep (a `BillingCycle` per org and
//! period) and credit enforcement.

use crate::{GRACEFUL_SHUTDOWN, WorkerConfig};
use activities::FinishHook;
use activities::billing::account::AccountActivities;
use activities::billing::enforcement::EnforcementActivities;
use activities::billing::invoice::InvoiceActivities;
use activities::billing::metering::MeteringActivities;
use activities::billing::payment::PaymentActivities;
use activities::billing::{PaymentProvider, RetrySchedule, SandboxProvider};
use shared_kernel::db::Pool as PgPool;
use std::sync::Arc;
use std::time::Duration;
use temporalio_client::Client;
use temporalio_sdk::WorkerOptions;
use workflows::billing::billing_sweep::{self, SweepInput};
use workflows::billing::credit_enforcement::{self, EnforcementInput};
use workflows::billing::{
    BillingCycle, BillingSweep, CreditEnforcement, MeteringRun, PaymentCollection, ScheduleChange,
    vocabulary,
};

#[derive(Debug, Clone, clap::Args)]
pub struct BillingWorkerConfig {
    /// Task queue for the billing workflows and activities.
    #[arg(long = "billing-task-queue", env = "GPUAAS_BILLING_TASK_QUEUE", default_value = vocabulary::TASK_QUEUE)]
    pub billing_task_queue: String,
    /// Length of a billing period in seconds; 0: calendar months. Short periods are for tests and
    /// demos.
    #[arg(
        long = "billing-period-seconds",
        env = "GPUAAS_BILLING_PERIOD_S",
        default_value_t = 0
    )]
    pub period_seconds: u64,
    /// How long after a period's end its cycle still takes in late usage before finalizing.
    #[arg(
        long = "billing-grace-seconds",
        env = "GPUAAS_BILLING_GRACE_S",
        default_value_t = 3600
    )]
    pub cycle_grace_seconds: u64,
    /// Seconds between billing sweeps (a Schedule that starts every org's cycles); 0: none.
    #[arg(
        long = "billing-sweep-every-seconds",
        env = "GPUAAS_BILLING_SWEEP_EVERY_S",
        default_value_t = 3600
    )]
    pub sweep_every_seconds: u64,
    /// Seconds between credit-enforcement passes (a Schedule); 0: none.
    #[arg(
        long = "billing-enforce-every-seconds",
        env = "GPUAAS_BILLING_ENFORCE_EVERY_S",
        default_value_t = 60
    )]
    pub enforce_every_seconds: u64,
    /// How long an org may stay out of credit, over its limit or delinquent before enforcement
    /// stops its running instances.
    #[arg(
        long = "billing-enforcement-grace-seconds",
        env = "GPUAAS_BILLING_ENFORCEMENT_GRACE_S",
        default_value_t = 86_400
    )]
    pub enforcement_grace_seconds: u64,
    /// Delays in seconds before payment attempts 2, 3, … (`1,1,1`: 4 attempts a second apart);
    /// empty: the default schedule (8 attempts over 14 days).
    #[arg(
        long = "billing-retry-delays-seconds",
        env = "GPUAAS_BILLING_RETRY_DELAYS_S",
        value_delimiter = ','
    )]
    pub retry_delays_seconds: Vec<u64>,
    /// Seconds before a pending charge is looked at again.
    #[arg(
        long = "billing-pending-recheck-seconds",
        env = "GPUAAS_BILLING_PENDING_RECHECK_S",
        default_value_t = 5
    )]
    pub pending_recheck_seconds: u64,
    /// How long the sandbox provider keeps `pm_sandbox_slow_confirm` pending, in seconds.
    #[arg(
        long = "billing-sandbox-confirm-seconds",
        env = "GPUAAS_BILLING_SANDBOX_CONFIRM_S",
        default_value_t = 3
    )]
    pub sandbox_confirm_seconds: u64,
    /// Credit thresholds (percent left of the last top-up) recorded as account events.
    #[arg(long = "billing-credit-thresholds-percent", env = "GPUAAS_BILLING_CREDIT_THRESHOLDS", value_delimiter = ',', default_values_t = [50u8, 25, 10])]
    pub credit_thresholds_percent: Vec<u8>,
}

impl BillingWorkerConfig {
    /// The dunning schedule: the configured delays, or the default.
    pub fn retry_schedule(&self) -> RetrySchedule {
        if self.retry_delays_seconds.is_empty() {
            RetrySchedule::default()
        } else {
            RetrySchedule {
                delays: self
                    .retry_delays_seconds
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
            }
        }
    }

    /// What each scheduled sweep starts cycles with.
    pub fn sweep_input(&self) -> SweepInput {
        SweepInput {
            period_s: self.period_seconds,
            grace_s: self.cycle_grace_seconds,
            collection: self.retry_schedule(),
            pending_recheck_s: self.pending_recheck_seconds,
            after: None,
            at_ms: None,
        }
    }

    /// What each scheduled enforcement pass runs with; `gpuaas_task_queue` runs the product's
    /// `TerminateInstance`.
    pub fn enforcement_input(&self, gpuaas_task_queue: &str) -> EnforcementInput {
        EnforcementInput {
            grace_s: self.enforcement_grace_seconds,
            thresholds_percent: self.credit_thresholds_percent.clone(),
            gpuaas_task_queue: gpuaas_task_queue.to_string(),
        }
    }

    /// Tests' defaults: no Schedules, fast dunning (3 attempts a second apart), quick sandbox.
    pub fn for_tests(task_queue: String) -> Self {
        Self {
            billing_task_queue: task_queue,
            period_seconds: 0,
            cycle_grace_seconds: 1,
            sweep_every_seconds: 0,
            enforce_every_seconds: 0,
            enforcement_grace_seconds: 0,
            retry_delays_seconds: vec![1, 1],
            pending_recheck_seconds: 1,
            sandbox_confirm_seconds: 1,
            credit_thresholds_percent: vec![50, 25, 10],
        }
    }
}

/// Creates (or updates) the sweep's and enforcement's Schedules, unless turned off.
pub async fn ensure_schedules(client: &Client, config: &WorkerConfig) -> anyhow::Result<()> {
    let billing = &config.billing;
    let queue = &billing.billing_task_queue;
    if billing.sweep_every_seconds > 0 {
        let every = Duration::from_secs(billing.sweep_every_seconds);
        let change =
            billing_sweep::ensure_schedule(client, queue, every, billing.sweep_input()).await?;
        log_change(change, vocabulary::sweep_schedule_id(queue), every);
    }
    if billing.enforce_every_seconds > 0 {
        let every = Duration::from_secs(billing.enforce_every_seconds);
        let input = billing.enforcement_input(&config.gpuaas.task_queue);
        let change = credit_enforcement::ensure_schedule(client, queue, every, input).await?;
        log_change(change, vocabulary::enforcement_schedule_id(queue), every);
    }
    Ok(())
}

fn log_change(change: ScheduleChange, schedule: String, every: Duration) {
    let every_s = every.as_secs();
    match change {
        ScheduleChange::Created => tracing::info!(%schedule, every_s, "billing schedule created"),
        ScheduleChange::Updated => tracing::info!(%schedule, every_s, "billing schedule updated"),
    }
}

/// The payment provider the worker charges through: the sandbox. A Stripe adapter implementing
/// `PaymentProvider` goes here, and nothing else changes.
pub fn payment_provider(config: &BillingWorkerConfig, pool: PgPool) -> Arc<dyn PaymentProvider> {
    Arc::new(SandboxProvider {
        pool,
        confirm_after: Duration::from_secs(config.sandbox_confirm_seconds),
    })
}

/// The billing worker's options: every billing workflow and activity, on the billing queue.
pub fn worker_options(
    config: &WorkerConfig,
    pool: PgPool,
    hook: FinishHook,
) -> anyhow::Result<WorkerOptions> {
    let provider = payment_provider(&config.billing, pool.clone());
    Ok(
        WorkerOptions::new(config.billing.billing_task_queue.clone())
            .register_workflow::<MeteringRun>()?
            .register_workflow::<BillingCycle>()?
            .register_workflow::<PaymentCollection>()?
            .register_workflow::<CreditEnforcement>()?
            .register_workflow::<BillingSweep>()?
            .register_activities(MeteringActivities::new(pool.clone(), hook.clone()))
            .register_activities(InvoiceActivities::new(pool.clone(), hook.clone()))
            .register_activities(PaymentActivities::new(pool.clone(), provider, hook.clone()))
            .register_activities(AccountActivities::new(pool.clone(), hook.clone()))
            .register_activities(EnforcementActivities::new(pool, hook))
            .max_cached_workflows(config.max_cached_workflows)
            .graceful_shutdown_period(GRACEFUL_SHUTDOWN)
            .build(),
    )
}
