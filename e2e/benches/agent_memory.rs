//! Node agent resident memory while idle with 8 GPUs, against a bare Temporal activity worker
//! (the SDK's own floor) measured in the same run. Both run as release binaries built by
//! `scripts/bench agent-memory`, which passes their paths.

use e2e::harness;

use harness::{Options, Platform};
use std::process::{Child, Command};
use std::time::Duration;

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn spawn(path: &str, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(path);
    cmd.env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap_or_else(|e| panic!("start {path}: {e}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agent = std::env::var("GPUAAS_AGENT_BIN")
        .expect("GPUAAS_AGENT_BIN (run through scripts/bench agent-memory)");
    let bare = std::env::var("GPUAAS_BARE_WORKER_BIN").expect("GPUAAS_BARE_WORKER_BIN");
    let p = Platform::start(Options::default()).await;
    let temporal = harness::temporal_address();
    let state = tempfile_dir();
    let mut agent_child = spawn(
        &agent,
        &[
            ("GPUAAS_NODE_NAME", "mem-node".into()),
            ("GPUAAS_API_URL", p.api_url.clone()),
            ("GPUAAS_JOIN_TOKEN", p.join_token().await),
            ("GPUAAS_TEMPORAL_ADDRESS", temporal.clone()),
            ("GPUAAS_SIMULATE_GPUS", "8xH100-80GB".into()),
            ("GPUAAS_AGENT_STATE_DIR", state.clone()),
        ],
    );
    let mut bare_child = spawn(&bare, &[("GPUAAS_TEMPORAL_ADDRESS", temporal)]);
    p.eventually(Duration::from_secs(30), "the agent registers", || async {
        p.get_json("/v1/nodes").await["items"]
            .as_array()
            .is_some_and(|n| n.len() == 1)
    })
    .await;
    // Idle: let pollers settle, then sample.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (agent_rss, agent_hwm) = rss_kib(agent_child.id());
    let (bare_rss, bare_hwm) = rss_kib(bare_child.id());
    println!("| process (idle, after 10 s) | RSS MiB | peak RSS MiB |");
    println!("|---|---|---|");
    println!(
        "| bare Temporal activity worker (baseline) | {:.1} | {:.1} |",
        bare_rss as f64 / 1024.0,
        bare_hwm as f64 / 1024.0
    );
    println!(
        "| gpuaas-node-agent, 8 simulated GPUs | {:.1} | {:.1} |",
        agent_rss as f64 / 1024.0,
        agent_hwm as f64 / 1024.0
    );
    println!(
        "| agent over baseline | {:+.1} | |",
        (agent_rss as f64 - bare_rss as f64) / 1024.0
    );
    println!(
        "aim: agent RSS < 30 MiB: {}",
        if agent_rss < 30 * 1024 {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = agent_child.kill();
    let _ = bare_child.kill();
    let _ = agent_child.wait();
    let _ = bare_child.wait();
    let _ = std::fs::remove_dir_all(&state);
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!("gpuaas-mem-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}
