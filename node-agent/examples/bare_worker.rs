//! The memory baseline for the agent: a bare Temporal activity worker with one no-op activity,
//! on the same runtime settings as the agent. `scripts/bench agent-memory` compares the two.

use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

pub struct Noop;

#[activities]
impl Noop {
    #[activity]
    pub async fn noop(_ctx: ActivityContext) -> Result<(), ActivityError> {
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let address =
        std::env::var("GPUAAS_TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client =
            runtime::temporal::connect(&address, "default", "bare-worker", Duration::from_secs(30))
                .await?;
        let runtime = Runtime::from_current_tokio(Default::default())?;
        let options = WorkerOptions::new(format!("bare-{}", std::process::id()))
            .register_activities(Noop)
            .build();
        let mut worker = Worker::new(&runtime, client, options)?;
        worker.run().await?;
        Ok(())
    })
}
