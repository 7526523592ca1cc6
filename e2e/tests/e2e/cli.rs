//! The `gpuaas` CLI against a real platform: node operations, `-o json`, and exit codes that
//! scripts can trust.

use crate::harness::{Options, Platform};
use serde_json::Value;
use std::time::Duration;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn gpuaas(p: &Platform, args: &[&str]) -> Run {
    let binary = crate::harness::binary("gpuaas");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --bins` (scripts/test does)",
        binary.display()
    );
    let mut command = std::process::Command::new(binary);
    command
        .args(args)
        .env("GPUAAS_API_URL", &p.api_url)
        .env("GPUAAS_TOKEN", &p.operator_token)
        .env("GPUAAS_PROFILE", "/nonexistent/profile.json");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_node_operations_with_scriptable_exit_codes() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "8xH100-80GB", 200).await;
    let id = p.node("h100").await["id"].as_str().unwrap().to_string();

    let listed = gpuaas(&p, &["node", "list", "-o", "json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(json(&listed)[0]["state"], "ready");

    let cordoned = gpuaas(&p, &["node", "cordon", &id, "-o", "json"]).await;
    assert_eq!(cordoned.code, 0, "{}", cordoned.stderr);
    assert_eq!(json(&cordoned)[0]["cordon_reason"], "operator");

    let unknown = gpuaas(&p, &["node", "cordon", &uuid::Uuid::nil().to_string()]).await;
    assert_eq!(unknown.code, 4, "not found: {}", unknown.stderr);
    assert!(
        unknown.stderr.contains("node_not_found"),
        "{}",
        unknown.stderr
    );

    // An empty node drains at once; --wait returns when it is cordoned by the drain.
    let drained = tokio::time::timeout(
        Duration::from_secs(60),
        gpuaas(
            &p,
            &[
                "node",
                "drain",
                &id,
                "--deadline",
                "5",
                "--wait",
                "-o",
                "json",
            ],
        ),
    )
    .await
    .expect("drain --wait returns");
    assert_eq!(drained.code, 0, "{}", drained.stderr);
    assert_eq!(json(&drained)[0]["state"], "cordoned");
    assert_eq!(json(&drained)[0]["cordon_reason"], "drained");

    let events = gpuaas(&p, &["node", "events", &id, "-o", "json"]).await;
    assert_eq!(events.code, 0);
    let events = json(&events);
    let cordon = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "node.cordoned")
        .expect("cordon audited");
    // The principal behind the CLI's credential, not a name the client chose.
    assert_eq!(
        cordon["actor"],
        format!("operator:user:{} ({})", p.operator_id, crate::harness::OPERATOR_EMAIL)
    );
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "node.drained"),
        "{events}"
    );

    // A node that is up and schedulable cannot be decommissioned: refused, exit 3.
    assert_eq!(gpuaas(&p, &["node", "uncordon", &id]).await.code, 0);
    let refused = gpuaas(&p, &["node", "decommission", &id]).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("node_state_conflict"),
        "{}",
        refused.stderr
    );
}
