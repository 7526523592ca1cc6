//! The platform route family and the operators' metrics: every documented route is served,
//! the API's fleet gauges, and the `/metrics` endpoint of the worker process.

use crate::harness::{Options, Platform};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let p = Platform::start(Options::default()).await;
    // Platform routes answer 404 `route_not_found` to whoever lacks their role: each route is
    // tried as the operator, then as finance (billing modes and reruns are finance's only).
    let finance = platform_iam::users::ensure_platform_user(
        &p.pool,
        "finance@routes.test",
        crate::harness::PASSWORD,
        platform_iam::PlatformRole::Finance,
    )
    .await
    .unwrap();
    let finance = p.keys.issue_access(finance, uuid::Uuid::now_v7());
    for (method, path) in api::routes() {
        let url = format!(
            "{}{}",
            p.api_url,
            path.replace("{id}", &uuid::Uuid::now_v7().to_string())
        );
        let mut answers = vec![];
        for token in [&p.operator_token, &finance] {
            let req = p
                .http
                .request(method.parse().unwrap(), &url)
                .bearer_auth(token)
                .json(&json!({}));
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(status < 500, "{method} {path}: {status} {body}");
            answers.push(body["code"].as_str().unwrap_or_default().to_string());
        }
        assert!(
            answers
                .iter()
                .any(|code| code != "route_not_found" && code != "method_not_allowed"),
            "{method} {path} is routed for neither the operator nor finance: {answers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_fleet_in_prometheus_format() {
    let mut p = Platform::start(Options {
        auth: api::AuthConfig {
            metrics_token: Some("scrape-token".into()),
            ..api::AuthConfig::for_tests()
        },
        ..Options::default()
    })
    .await;
    p.start_agent("h100", "8xH100-80GB", 100).await;
    let running = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 2}))
        .await;
    p.wait_state(running, &["running"], std::time::Duration::from_secs(60))
        .await;
    let failed = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 8}))
        .await;
    p.wait_state(failed, &["failed"], std::time::Duration::from_secs(60))
        .await;
    let resp = p
        .http
        .get(format!("{}/metrics", p.api_url))
        .bearer_auth("scrape-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = resp.text().await.unwrap();
    for line in [
        "# TYPE gpuaas_instances gauge",
        "gpuaas_instances{state=\"running\"} 1",
        "gpuaas_instances{state=\"failed\"} 1",
        "gpuaas_instances{state=\"pending\"} 0",
        "gpuaas_nodes{state=\"ready\"} 1",
        "gpuaas_gpus 8",
        "gpuaas_gpus_allocated 2",
        "gpuaas_gpus_unhealthy 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing `{line}` in:\n{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_process_serves_its_metrics_over_http() {
    let mut p = Platform::start(Options {
        in_process_worker: false,
        ..Options::default()
    })
    .await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    p.start_worker_process_serving_metrics(listen);
    p.start_agent("h100", "8xH100-80GB", 200).await;
    p.create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 2}))
        .await;
    let page = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .expect("the worker answers on its metrics address")
        .text()
        .await
        .unwrap();
    // Our buckets (a default recorder would render a summary, not buckets up to 600 s).
    assert!(
        page.contains(r#"gpuaas_provisioning_duration_seconds_bucket{le="600"} 1"#),
        "{page}"
    );
    assert!(
        page.contains("# HELP gpuaas_provisioning_duration_seconds"),
        "{page}"
    );
    assert!(
        page.contains("# TYPE gpuaas_provisioning_duration_seconds histogram"),
        "{page}"
    );
}

/// The agent counts a failed activity by its failure type on its own endpoint (the worker and
/// the agent share `runtime::metrics`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_process_counts_failed_activities_on_its_metrics_endpoint() {
    let mut p = Platform::start(Options::default()).await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    p.start_agent_process_serving_metrics("h100", "8xH100-80GB", listen)
        .await;
    let id = p
        // Up at start, gone within the settle period: await_workload_running fails StartFailed.
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": "sleep 0.1; exit 3"}))
        .await;
    let failed = p
        .wait_state(
            id,
            &["failed", "running"],
            std::time::Duration::from_secs(60),
        )
        .await;
    assert_eq!(failed.failure_reason.as_deref(), Some("start_failed"));
    let response = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let page = response.text().await.unwrap();
    let start_failed = format!(
        "gpuaas_activity_failures_total{{activity=\"{}\",type=\"{}\"}} 1",
        contract_node::vocabulary::activity::AWAIT_WORKLOAD_RUNNING,
        contract_node::vocabulary::NodeFailure::StartFailed.as_str()
    );
    assert!(page.contains(&start_failed), "{page}");
    assert!(
        page.contains("# HELP gpuaas_activity_failures_total"),
        "{page}"
    );
    assert!(
        page.contains("gpuaas_agent_workloads{status=\"exited\"}"),
        "{page}"
    );
    assert!(
        page.contains("# TYPE gpuaas_agent_sessions_total counter"),
        "{page}"
    );
}

/// Every binary parses its own flags: clap checks a parser (duplicate argument ids, say) only
/// when it runs, so a clash between a binary's flags and a shared group's would otherwise show
/// first as a panic at start, in the dev stack or in production.
#[test]
fn every_binary_parses_its_flags() {
    for name in ["gpuaas-api", "gpuaas-worker", "gpuaas-node-agent", "gpuaas"] {
        let out = std::process::Command::new(crate::harness::binary(name))
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} --help: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
