//! The REST contract over real HTTP: Idempotency-Key, problem+json errors, auth, pagination.

use crate::harness::{Options, Platform, TOKEN};
use serde_json::{Value, json};

async fn instance_count(p: &Platform) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gpuaas.instances")
        .fetch_one(&p.pool)
        .await
        .unwrap()
}

/// Asserts a response is the problem+json error `code` with `status`.
async fn expect_problem(resp: reqwest::Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    assert_problem(got, &resp.json().await.unwrap(), status, code);
}

fn assert_problem(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(body["status"], want_status);
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "request_id present: {body}"
    );
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_instance_and_rejects_another_body() {
    let p = Platform::start(Options::default()).await;
    let body = json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "name": "idem"});
    let (s1, first) = p.create(body.clone(), Some("key-1")).await;
    let (s2, again) = p.create(body.clone(), Some("key-1")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["id"], again["id"], "same key and body: same instance");

    let (s3, conflict) = p
        .create(
            json!({"sku": "h100-80gb-sxm", "gpu_count": 2, "name": "idem"}),
            Some("key-1"),
        )
        .await;
    assert_problem(s3, &conflict, 409, "idempotency_key_reused");
    assert_eq!(instance_count(&p).await, 1, "nothing else was written");

    // Without a key, the same body creates a second instance.
    let (s4, other) = p.create(body, None).await;
    assert_eq!(s4, 202);
    assert_ne!(other["id"], first["id"]);
    assert_eq!(instance_count(&p).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_and_writes_nothing() {
    let p = Platform::start(Options::default()).await;
    let cases = [
        (json!({"sku": "tpu-v5", "gpu_count": 1}), 422, "unknown_sku"),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 3}),
            422,
            "invalid_gpu_count",
        ),
        (
            json!({"sku": "l40s-48gb", "gpu_count": 8}),
            422,
            "invalid_gpu_count",
        ),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "name": "Not OK"}),
            422,
            "invalid_name",
        ),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "capacity_timeout_seconds": -5}),
            422,
            "invalid_capacity_timeout",
        ),
        (json!({"sku": "h100-80gb-sxm"}), 422, "invalid_body"),
        (
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "gpus": 2}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let (s, problem) = p.create(body.clone(), None).await;
        assert_problem(s, &problem, status, code);
    }
    // Malformed JSON, with the problem content type.
    let resp = p
        .http
        .post(format!("{}/v1/instances", p.api_url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"sku\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    expect_problem(resp, 400, "malformed_json").await;
    // A key that is not printable ASCII, and a query string that does not parse.
    let resp = p
        .http
        .post(format!("{}/v1/instances", p.api_url))
        .bearer_auth(TOKEN)
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .json(&json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 422, "invalid_idempotency_key").await;
    let resp = p
        .http
        .get(format!("{}/v1/instances?limit=abc", p.api_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 400, "invalid_query").await;
    assert_eq!(instance_count(&p).await, 0, "no bad request wrote anything");

    // Unknown ids: 404, whether well-formed or not.
    for path in [
        format!("/v1/instances/{}", uuid::Uuid::now_v7()),
        "/v1/instances/not-a-uuid".into(),
    ] {
        let resp = p
            .http
            .get(format!("{}{path}", p.api_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        expect_problem(resp, 404, "instance_not_found").await;
    }
    let resp = p
        .http
        .get(format!("{}/v1/nodes/{}", p.api_url, uuid::Uuid::now_v7()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 404, "node_not_found").await;

    // No token, wrong token, and the join token are all refused for the user API.
    for token in [None, Some("wrong"), Some(crate::harness::JOIN_TOKEN)] {
        let mut req = p.http.get(format!("{}/v1/instances", p.api_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        expect_problem(resp, 401, "unauthorized").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_page_by_cursor_newest_first() {
    let p = Platform::start(Options::default()).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            p.create_ok(json!({"sku": "a100-40gb", "gpu_count": 1, "name": format!("page-{i}")}))
                .await,
        );
    }
    let first = p.get_json("/v1/instances?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = p
        .get_json(&format!("/v1/instances?limit=2&cursor={cursor}"))
        .await;
    let third = p
        .get_json(&format!(
            "/v1/instances?limit=2&cursor={}",
            second["next_cursor"].as_str().unwrap()
        ))
        .await;
    let ids: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|page| {
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
        })
        .collect();
    let mut expected: Vec<String> = created.iter().map(|id| id.to_string()).collect();
    expected.reverse();
    assert_eq!(ids, expected, "every instance once, newest first");
    assert!(third["next_cursor"].is_null());
    let resp = p
        .http
        .get(format!("{}/v1/instances?limit=0", p.api_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 400, "invalid_limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let p = Platform::start(Options::default()).await;
    for (method, path) in gpuaas_api::ROUTES {
        let url = format!(
            "{}{}",
            p.api_url,
            path.replace("{id}", &uuid::Uuid::now_v7().to_string())
        );
        let req = p
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(TOKEN)
            .json(&json!({}));
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(body["code"], "route_not_found", "{method} {path} is routed");
        assert_ne!(
            body["code"], "method_not_allowed",
            "{method} {path} is routed"
        );
        assert!(status < 500, "{method} {path}: {status} {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_fleet_in_prometheus_format() {
    let mut p = Platform::start(Options::default()).await;
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
async fn a_cordoned_node_takes_no_new_instances_until_uncordoned() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("h100", "4xH100-80GB", 100).await;
    let node = p.get_json("/v1/nodes").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |verb: &'static str, id: String| {
        let req = p
            .http
            .post(format!("{}/v1/nodes/{id}/{verb}", p.api_url))
            .bearer_auth(TOKEN);
        async move { req.send().await.unwrap() }
    };
    for _ in 0..2 {
        let resp = post("cordon", node.clone()).await;
        assert_eq!(resp.status(), 200, "cordoning is idempotent");
        assert_eq!(resp.json::<Value>().await.unwrap()["state"], "cordoned");
    }
    let refused = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    let failed = p
        .wait_state(
            refused,
            &["failed", "running"],
            std::time::Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("insufficient_capacity")
    );
    assert!(
        failed
            .status_message
            .unwrap()
            .contains("cordoned: 1 node(s) (h100 by operator)")
    );

    assert_eq!(
        post("uncordon", node.clone())
            .await
            .json::<Value>()
            .await
            .unwrap()["state"],
        "ready"
    );
    let placed = p
        .create_ok(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    assert_eq!(
        p.wait_state(
            placed,
            &["failed", "running"],
            std::time::Duration::from_secs(60)
        )
        .await
        .state,
        "running"
    );

    // Unknown nodes are 404; a node whose state forbids it is a 409.
    expect_problem(
        post("cordon", uuid::Uuid::now_v7().to_string()).await,
        404,
        "node_not_found",
    )
    .await;
    sqlx::query("UPDATE gpuaas.nodes SET state = 'down'")
        .execute(&p.pool)
        .await
        .unwrap();
    expect_problem(
        post("cordon", node.clone()).await,
        409,
        "node_state_conflict",
    )
    .await;
    // Cordoning never touched the running instance.
    assert_eq!(p.instance(placed).await.state, "running");
}
