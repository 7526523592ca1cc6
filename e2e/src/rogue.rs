//! A hostile host for the tests: a Temporal worker of its own on another node's task queue
//! (Temporal does not authenticate workers). It keeps every command it gets and answers each with
//! the reply that would release the node's GPUs, signed with its own key.

use crate::harness::{ThreadTask, temporal_args};
use contract_node::{
    SealedCommand, SessionReport, SignedReport, WorkloadReport, WorkloadStatus, definitions,
};
use shared_ids::NodeId;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// A host that polls another node's task queue: it keeps every command it gets and answers each
/// with a reply that would release the node's GPUs, signed with its own key.
pub struct RogueHost {
    seen: Arc<Mutex<Vec<SealedCommand>>>,
    key: ring::signature::Ed25519KeyPair,
}

impl RogueHost {
    fn forge<T: serde::Serialize>(&self, sealed: SealedCommand, reply: &T) -> SignedReport {
        let report = SignedReport::sign(&sealed, reply, |m| self.key.sign(m).as_ref().to_vec());
        self.seen.lock().unwrap().push(sealed);
        report
    }
}

fn gone() -> WorkloadStatus {
    WorkloadStatus::Exited {
        exit_code: Some(0),
        log_tail: String::new(),
        output: None,
    }
}

#[activities]
impl RogueHost {
    #[activity(definition = definitions::StartWorkload)]
    pub async fn start_workload(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        Ok(self.forge(sealed, &WorkloadStatus::Running { pid: 1 }))
    }

    #[activity(definition = definitions::AwaitWorkloadRunning)]
    pub async fn await_workload_running(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        Ok(self.forge(sealed, &WorkloadStatus::Running { pid: 1 }))
    }

    #[activity(definition = definitions::StopWorkload)]
    pub async fn stop_workload(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        Ok(self.forge(sealed, &gone()))
    }

    #[activity(definition = definitions::Session)]
    pub async fn session(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        let report = SessionReport {
            gpus: vec![],
            workloads: vec![],
        };
        Ok(self.forge(sealed, &report))
    }

    #[activity(definition = definitions::ListWorkloads)]
    pub async fn list_workloads(
        self: Arc<Self>,
        _ctx: ActivityContext,
        sealed: SealedCommand,
    ) -> Result<SignedReport, ActivityError> {
        Ok(self.forge(sealed, &Vec::<WorkloadReport>::new()))
    }
}

pub fn new_key() -> ring::signature::Ed25519KeyPair {
    let der = platform_iam::tokens::generate_pkcs8();
    ring::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap()
}

/// Starts a rogue worker on `node`'s task queue; returns it and what it receives.
pub fn start_rogue(node: NodeId) -> (ThreadTask, Arc<Mutex<Vec<SealedCommand>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rogue = RogueHost {
        seen: seen.clone(),
        key: new_key(),
    };
    let queue = contract_node::vocabulary::task_queue(node);
    let task = ThreadTask::spawn("rogue", move |stop| async move {
        let client = temporal_args().connect("rogue-host").await?;
        let sdk = Runtime::from_current_tokio(Default::default())?;
        let options = WorkerOptions::new(queue)
            .register_activities(rogue)
            .graceful_shutdown_period(Duration::from_secs(1))
            .build();
        let mut worker = Worker::new(&sdk, client, options)?;
        let shutdown = worker.shutdown_handle();
        let run = worker.run();
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => result?,
            _ = stop => {
                shutdown();
                run.await?;
            }
        }
        Ok(())
    });
    (task, seen)
}
