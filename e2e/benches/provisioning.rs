//! Provisioning throughput and latency against the Temporal dev server, compared in the same run
//! with a minimal workflow of the same shape: 4 no-op activities, 2 on the control queue and 2 on
//! a node queue served by a second worker. The ratio is the platform's own overhead.
//!
//!     scripts/bench provisioning [--instances N] [--rounds R]

use e2e::harness;

use harness::{Options, Platform};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temporalio_client::{Client, WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ActivityOptions, LocalActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext,
    WorkflowResult,
};
use workflows::gpuaas::vocabulary::{self as vocabulary};

#[workflow]
#[derive(Default)]
pub struct BaselineProvision;

#[workflow_methods]
impl BaselineProvision {
    #[run]
    /// `local`: run the two control activities as local activities, the shape ProvisionInstance
    /// has; otherwise all four are regular activities.
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: (String, bool)) -> WorkflowResult<()> {
        let (node_queue, local) = input;
        let control = ActivityOptions::start_to_close_timeout(Duration::from_secs(30));
        let control_local = LocalActivityOptions::builder()
            .start_to_close_timeout(Duration::from_secs(30))
            .build();
        let node = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
            .task_queue(node_queue)
            .schedule_to_start_timeout(Duration::from_secs(30))
            .build();
        for on_node in [false, true, true, false] {
            if on_node {
                ctx.execute_activity(BaselineActivities::noop, (), node.clone())
                    .await?;
            } else if local {
                ctx.execute_local_activity(BaselineActivities::noop, (), control_local.clone())
                    .await?;
            } else {
                ctx.execute_activity(BaselineActivities::noop, (), control.clone())
                    .await?;
            }
        }
        Ok(())
    }
}

pub struct BaselineActivities;

#[activities]
impl BaselineActivities {
    #[activity]
    pub async fn noop(_ctx: ActivityContext) -> Result<(), ActivityError> {
        Ok(())
    }
}

struct Stats {
    throughput: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(mut latencies: Vec<Duration>, wall: Duration) -> Stats {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    Stats {
        throughput: latencies.len() as f64 / wall.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn spawn_worker(options: WorkerOptions) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = harness::temporal_args().connect("bench").await.unwrap();
            let runtime = Runtime::from_current_tokio(Default::default()).unwrap();
            let mut worker = Worker::new(&runtime, client, options).unwrap();
            let _ = worker.run().await;
        });
    })
}

async fn baseline_round(
    client: &Client,
    n: usize,
    queue: &str,
    node_queue: &str,
    local: bool,
) -> Stats {
    let started = Instant::now();
    let runs = (0..n).map(|i| {
        let client = client.clone();
        let (queue, node_queue) = (queue.to_string(), node_queue.to_string());
        async move {
            let t0 = Instant::now();
            let id = format!("bench-baseline-{}-{i}", uuid::Uuid::new_v4().simple());
            let handle = client
                .start_workflow(
                    BaselineProvision::run,
                    (node_queue, local),
                    WorkflowStartOptions::new(queue, id).build(),
                )
                .await
                .unwrap();
            handle
                .get_result(WorkflowGetResultOptions::default())
                .await
                .unwrap();
            t0.elapsed()
        }
    });
    let latencies = futures::future::join_all(runs).await;
    stats(latencies, started.elapsed())
}

async fn platform_round(p: &Platform, client: &Client, n: usize) -> Stats {
    let started = Instant::now();
    let runs = (0..n).map(|_| async move {
        let t0 = Instant::now();
        let id = p
            .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": "sleep 600"}))
            .await;
        let handle = client.get_workflow_handle::<workflows::gpuaas::ProvisionInstance>(
            vocabulary::instance_provision_id(id),
        );
        let outcome = handle
            .get_result(WorkflowGetResultOptions::default())
            .await
            .unwrap();
        assert!(
            matches!(outcome, workflows::gpuaas::ProvisionOutcome::Running { .. }),
            "{outcome:?}"
        );
        (id, t0.elapsed())
    });
    let results = futures::future::join_all(runs).await;
    let wall = started.elapsed();
    // Free the fleet for the next round (not timed).
    for (id, _) in &results {
        p.delete(*id).await;
    }
    for (id, _) in &results {
        p.wait_state(*id, &["terminated"], Duration::from_secs(120))
            .await;
    }
    stats(results.into_iter().map(|(_, l)| l).collect(), wall)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = arg("--instances", 100);
    let rounds = arg("--rounds", 3);

    // Baseline workers: one for the workflow and its "control" activities, one for the "node" queue.
    let queue = format!("bench-base-{}", uuid::Uuid::new_v4().simple());
    let node_queue = format!("{queue}-node");
    spawn_worker(
        WorkerOptions::new(queue.clone())
            .register_workflow::<BaselineProvision>()
            .unwrap()
            .register_activities(BaselineActivities)
            .build(),
    );
    spawn_worker(
        WorkerOptions::new(node_queue.clone())
            .register_activities(BaselineActivities)
            .build(),
    );

    // The platform: API, worker, and enough agents (real processes) for N one-GPU instances.
    let mut p = Platform::start(Options {
        node_schedule_to_start_s: 30,
        ..Options::default()
    })
    .await;
    for a in 0..n.div_ceil(64) {
        p.start_agent(&format!("bench-{a}"), "64xH100-80GB", 0)
            .await;
    }
    let client = harness::temporal_args().connect("bench").await.unwrap();
    let client = Arc::new(client);

    // Warm every path up, then alternate rounds so drift hits all of them equally.
    baseline_round(&client, 10, &queue, &node_queue, false).await;
    baseline_round(&client, 10, &queue, &node_queue, true).await;
    platform_round(&p, &client, 10).await;
    let (mut regular, mut local, mut plat) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let r = baseline_round(&client, n, &queue, &node_queue, false).await;
        let l = baseline_round(&client, n, &queue, &node_queue, true).await;
        let q = platform_round(&p, &client, n).await;
        println!(
            "round {round}: 4 regular {:.1}/s | 2 local + 2 regular {:.1}/s | platform {:.1}/s (p50 {:?}, p99 {:?})",
            r.throughput, l.throughput, q.throughput, q.p50, q.p99
        );
        regular.push(r);
        local.push(l);
        plat.push(q);
    }
    let mean = |v: &[Stats], f: fn(&Stats) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let ms = |v: &[Stats], f: fn(&Stats) -> Duration| {
        v.iter().map(|s| f(s).as_secs_f64() * 1000.0).sum::<f64>() / v.len() as f64
    };
    let row = |name: &str, v: &[Stats]| {
        println!(
            "| {name} | {:.1} | {:.0} | {:.0} |",
            mean(v, |s| s.throughput),
            ms(v, |s| s.p50),
            ms(v, |s| s.p99)
        );
    };
    let pt = mean(&plat, |s| s.throughput);
    println!();
    println!("| {n} concurrent, mean of {rounds} rounds | workflows/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    row("minimal workflow, 4 no-op activities", &regular);
    row(
        "minimal workflow, same shape: 2 local + 2 regular no-op activities",
        &local,
    );
    row(
        "ProvisionInstance through the API (real DB, real processes)",
        &plat,
    );
    println!(
        "| ratio to 4 no-op activities (aim >= 0.8) | {:.2} | | |",
        pt / mean(&regular, |s| s.throughput)
    );
    println!(
        "| ratio to the same shape (the platform's own overhead) | {:.2} | | |",
        pt / mean(&local, |s| s.throughput)
    );
    drop(p);
    std::process::exit(0);
}
