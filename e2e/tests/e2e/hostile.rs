//! Hostile input and hostile clients, over real HTTP and real TCP: NUL bytes and oversized
//! strings in every kind of field, bodies that are not objects, paths that are not UTF-8,
//! oversized bodies, long values echoed back; clients that trickle their headers or their body,
//! too many requests at once; `/metrics` behind its scrape token and cached; `/readyz` without
//! detail; `GET /v1/nodes` a page at a time. (The contract fuzzing is `fuzz.rs`.)

use crate::harness::{Options, Platform};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROBLEM_JSON: &str = "application/problem+json";

/// The row count of every table of the schemas requests write (the audit trail aside).
pub async fn row_counts(pool: &PgPool) -> BTreeMap<String, i64> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
         WHERE table_type = 'BASE TABLE' AND table_schema IN ('iam', 'gpuaas', 'policy')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".\"{table}\""))
            .fetch_one(pool)
            .await
            .unwrap();
        counts.insert(format!("{schema}.{table}"), n);
    }
    counts
}

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        body,
    }
}

/// A refusal: `status`, problem+json, `code`.
fn refused(what: &str, a: &Answer, status: u16, code: &str) {
    assert_eq!(
        (a.status, a.content_type.as_str(), a.body["code"].as_str()),
        (status, PROBLEM_JSON, Some(code)),
        "{what}: {}",
        a.body
    );
}

/// NUL (which Postgres refuses: a 500 before) and oversized strings in body fields of every
/// kind, in query parameters and in node registrations are refused before any SQL, with the
/// field's code, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_oversized_strings_are_refused_before_any_sql() {
    let p = Platform::start(Options::default()).await;
    let join = p.join_token().await;
    let before = row_counts(&p.pool).await;
    let url = |path: &str| format!("{}{path}", p.api_url);
    let long = "a".repeat(5000);
    let bodies: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "POST",
            "/v1/instances",
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": "echo \u{0}"}),
            422,
            "invalid_command",
        ),
        (
            "POST",
            "/v1/instances",
            json!({"sku": "h100\u{0}", "gpu_count": 1}),
            422,
            "unknown_sku",
        ),
        (
            "POST",
            "/v1/instances",
            json!({"sku": "x".repeat(65), "gpu_count": 1}),
            422,
            "unknown_sku",
        ),
        (
            "POST",
            "/v1/instances",
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": long}),
            422,
            "invalid_command",
        ),
        (
            "POST",
            "/v1/instances",
            json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "name": "a\u{0}"}),
            422,
            "invalid_name",
        ),
        (
            "POST",
            "/v1/auth/login",
            json!({"email": "a\u{0}@b.c", "password": "x"}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/auth/login",
            json!({"email": "a@b.c", "password": long}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/auth/signup",
            json!({"email": "a@b.c", "password": "p\u{0}ssword-long-enough", "org_name": "acme"}),
            422,
            "weak_password",
        ),
        (
            "POST",
            "/v1/auth/refresh",
            json!({"refresh_token": "gpr_\u{0}"}),
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/api-keys",
            json!({"name": "ci\u{0}"}),
            422,
            "invalid_api_key_name",
        ),
        (
            "POST",
            "/v1/api-keys",
            json!({"name": "ci", "scopes": ["instances:read\u{0}"]}),
            422,
            "invalid_scope",
        ),
        (
            "POST",
            "/v1/service-accounts",
            json!({"name": "ci", "role": "member\u{0}"}),
            422,
            "invalid_role",
        ),
        // A field the type does not know is ignored, but may not smuggle NUL either.
        (
            "POST",
            "/v1/auth/login",
            json!({"email": "a@b.c", "password": "x", "extra": "\u{0}"}),
            422,
            "invalid_field",
        ),
    ];
    for (method, path, body, status, code) in bodies {
        let a = send(
            p.http
                .request(method.parse().unwrap(), url(path))
                .bearer_auth(&p.tenant_token)
                .json(&body),
        )
        .await;
        refused(&format!("{method} {path}"), &a, status, code);
    }
    // An org whose owner cannot be invited used to be created before the invitation failed.
    let a = send(
        p.http
            .post(url("/v1/orgs"))
            .bearer_auth(&p.operator_token)
            .json(&json!({"name": "acme-two", "owner_email": "useratexample.com"})),
    )
    .await;
    refused("POST /v1/orgs", &a, 422, "invalid_email");
    let gpu = |uuid: &str, model: &str| json!({"index": 0, "uuid": uuid, "model": model, "memory_mib": 1, "healthy": true});
    let registrations = [
        (
            json!({"name": "n\u{0}", "agent_version": "1", "discovery": "simulated", "gpus": []}),
            "invalid_node_name",
        ),
        (
            json!({"name": "n1", "agent_version": "1\u{0}", "discovery": "simulated", "gpus": []}),
            "invalid_field",
        ),
        (
            json!({"name": "n1", "agent_version": "1", "discovery": "simulated", "gpus": [gpu("GPU-\u{0}", "H100")]}),
            "invalid_gpus",
        ),
        (
            json!({"name": "n1", "agent_version": "1", "discovery": "simulated", "gpus": [gpu("GPU-1", "H\u{0}")]}),
            "invalid_gpus",
        ),
        (
            json!({"name": "n1", "agent_version": "1", "discovery": "simulated",
                "gpus": (0..65).map(|i| gpu(&format!("GPU-{i}"), "H100")).collect::<Vec<_>>()}),
            "invalid_gpus",
        ),
        (
            json!({"name": "n1", "agent_version": "1", "discovery": "simulated", "gpus": [], "public_key": "k\u{0}"}),
            "invalid_public_key",
        ),
    ];
    for (body, code) in registrations {
        let a = send(
            p.http
                .post(url("/v1/nodes/register"))
                .bearer_auth(&join)
                .json(&body),
        )
        .await;
        refused("POST /v1/nodes/register", &a, 422, code);
    }
    let queries = [
        (
            "/v1/instances?project=a%00b",
            &p.tenant_token,
            404,
            "project_not_found",
        ),
        (
            "/v1/instances?cursor=a%00b",
            &p.tenant_token,
            400,
            "invalid_cursor",
        ),
        (
            "/v1/instances?limit=1%00",
            &p.tenant_token,
            400,
            "invalid_limit",
        ),
        (
            "/v1/instances?nonsense=%00",
            &p.tenant_token,
            400,
            "invalid_query",
        ),
        (
            "/v1/audit-events?actor=user:%00",
            &p.tenant_token,
            400,
            "invalid_query",
        ),
        (
            "/v1/audit-events?action=x%00",
            &p.tenant_token,
            400,
            "invalid_query",
        ),
        (
            "/v1/nodes?cursor=%00",
            &p.operator_token,
            400,
            "invalid_cursor",
        ),
    ];
    for (path, token, status, code) in queries {
        let a = send(p.http.get(url(path)).bearer_auth(token)).await;
        refused(path, &a, status, code);
    }
    let long_project = format!("/v1/quota?project={}", "a".repeat(64));
    let a = send(p.http.get(url(&long_project)).bearer_auth(&p.tenant_token)).await;
    refused("a 64-character project", &a, 404, "project_not_found");
    assert_eq!(
        row_counts(&p.pool).await,
        before,
        "a refused request wrote rows"
    );
    // Nothing was used up: the token still joins a host.
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        rand::random::<[u8; 32]>(),
    );
    let joined = send(p.http.post(url("/v1/nodes/register")).bearer_auth(&join).json(
        &json!({"name": "n1", "agent_version": "1", "discovery": "simulated", "gpus": [], "public_key": key, "encryption_key": key}),
    ))
    .await;
    assert_eq!(joined.status, 200, "{}", joined.body);
}

/// A create request must be a JSON object: an array used to pass as one (serde reads structs
/// from sequences), and every other rejection of the extractors is problem+json with a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_objects_and_other_rejections_are_problems() {
    let p = Platform::start(Options {
        auth: api::AuthConfig {
            max_body_bytes: 4096,
            ..api::AuthConfig::for_tests()
        },
        ..Options::default()
    })
    .await;
    let before = row_counts(&p.pool).await;
    let create = || {
        p.http
            .post(format!("{}/v1/instances", p.api_url))
            .bearer_auth(&p.tenant_token)
    };
    for body in [
        json!(["train-1", "h100-80gb-sxm", 1]),
        json!("h100-80gb-sxm"),
        json!(1),
        json!(null),
    ] {
        let a = send(create().json(&body)).await;
        refused(&format!("body {body}"), &a, 422, "invalid_body");
    }
    let big = json!({"sku": "h100-80gb-sxm", "gpu_count": 1, "command": "x".repeat(5000)});
    refused(
        "an oversized body",
        &send(create().json(&big)).await,
        413,
        "body_too_large",
    );
    refused(
        "malformed JSON",
        &send(
            create()
                .header("content-type", "application/json")
                .body("{"),
        )
        .await,
        400,
        "malformed_json",
    );
    refused(
        "no content type",
        &send(create().body("{}")).await,
        415,
        "unsupported_media_type",
    );
    let a = send(
        p.http
            .get(format!("{}/v1/instances?limit=abc", p.api_url))
            .bearer_auth(&p.tenant_token),
    )
    .await;
    refused("limit=abc", &a, 400, "invalid_query");
    // Paths that are not UTF-8 once decoded answer like any unknown path (axum: 400 text/plain).
    for path in [
        "/v1/instances/%FF",
        "/v1/orgs/%C0%AF/members",
        "/v1/nodes/%ff%fe",
    ] {
        let a = send(
            p.http
                .get(format!("{}{path}", p.api_url))
                .bearer_auth(&p.operator_token),
        )
        .await;
        refused(path, &a, 404, "route_not_found");
    }
    assert_eq!(
        row_counts(&p.pool).await,
        before,
        "a refused request wrote rows"
    );
}

/// Error messages repeat at most 64 characters of what the caller sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_echo_at_most_64_characters_of_a_value() {
    let p = Platform::start(Options::default()).await;
    let long = "z".repeat(10_000);
    let a = send(
        p.http
            .post(format!("{}/v1/instances", p.api_url))
            .bearer_auth(&p.tenant_token)
            .json(&json!({"sku": "h100-80gb-sxm", "gpu_count": long})),
    )
    .await;
    refused("a mistyped gpu_count", &a, 422, "invalid_body");
    let detail = a.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{}…", "z".repeat(64))) && !detail.contains(&"z".repeat(65)),
        "{detail}"
    );
    let a = send(
        p.http
            .get(format!("{}/v1/instances?limit={long}", p.api_url))
            .bearer_auth(&p.tenant_token),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body["detail"].as_str().unwrap().len() < 600, "{}", a.body);
}

/// Reads whatever the server sends until it closes the connection; `None` if it keeps it open
/// past `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A healthy client is served quickly.
async fn served_quickly(p: &Platform) {
    let start = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("{}/healthz", p.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

fn slow_client_limits() -> Options {
    Options {
        auth: api::AuthConfig {
            header_timeout_ms: 1000,
            body_timeout_ms: 1500,
            ..api::AuthConfig::for_tests()
        },
        ..Options::default()
    }
}

/// Headers sent a byte at a time (slowloris): the connection is cut at the header timeout,
/// while other clients are served; an idle keep-alive connection is closed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trickled_byte_by_byte_are_cut_at_the_header_timeout() {
    let p = Platform::start(slow_client_limits()).await;
    let addr = p.api_url.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let start = Instant::now();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (mut read, mut write) = slow.split();
    let writer = async {
        for b in head {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reader = async {
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some((got, start.elapsed())),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        served_quickly(&p).await;
    };
    let ((), got, ()) = tokio::join!(writer, reader, meanwhile);
    let (got, cut_after) = got.expect("the server kept a trickling connection open for 10 s");
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "the trickled request was served"
    );
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(4),
        "cut after {cut_after:?} (timeout 1 s, headers take 6 s)"
    );

    // Idle keep-alive: one request, then silence.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let answer = read_until_closed(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection stayed open for 10 s");
    assert!(answer.contains("200 OK"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

/// A body sent a byte every 100 ms (never idle long enough for an idle timeout): answered
/// 408 `request_timeout` at the body timeout and the connection closed, while other clients are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_trickled_slowly_are_cut_at_the_body_timeout() {
    let p = Platform::start(slow_client_limits()).await;
    let addr = p.api_url.trim_start_matches("http://").to_string();
    let before = row_counts(&p.pool).await;
    let body = json!({"email": "tenant@gpuaas.test", "password": "x".repeat(200)}).to_string();
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let (mut read, mut write) = slow.split();
    let writer = async {
        for b in body.as_bytes() {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reader = async {
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some((got, start.elapsed())),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        served_quickly(&p).await;
    };
    let writer = tokio::time::timeout(Duration::from_secs(12), writer);
    let (_, got, ()) = tokio::join!(writer, reader, meanwhile);
    let (got, closed_after) = got.expect("the server kept a trickling body open for 10 s");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        got.contains(PROBLEM_JSON) && got.contains("request_timeout"),
        "{got}"
    );
    assert!(
        closed_after >= Duration::from_millis(1400) && closed_after < Duration::from_secs(5),
        "closed after {closed_after:?} (timeout 1.5 s, the body takes {} s)",
        body.len() / 10
    );
    assert_eq!(row_counts(&p.pool).await, before);
}

/// Beyond the concurrency limit a request is shed at once: 503 `overloaded` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_are_shed_with_503() {
    let p = Platform::start(Options {
        auth: api::AuthConfig {
            max_concurrent_requests: 2,
            body_timeout_ms: 2000,
            ..api::AuthConfig::for_tests()
        },
        ..Options::default()
    })
    .await;
    let addr = p.api_url.trim_start_matches("http://").to_string();
    // Two requests in flight, each waiting for a body that never comes.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = reqwest::get(format!("{}/healthz", p.api_url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], PROBLEM_JSON);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "overloaded");
    // Once they time out, the API serves again.
    for mut s in holders {
        let answer = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(answer.is_some_and(|a| a.contains("408")));
    }
    served_quickly(&p).await;
}

/// The CLI gives up on an API that accepts connections but never answers (exit 7), instead of
/// hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gives_up_on_a_stalled_api() {
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = black_hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            open.push(s);
        }
    });
    let config = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = tokio::process::Command::new(crate::harness::binary("gpuaas"))
        .args(["sku", "list"])
        .env("GPUAAS_API_URL", format!("http://{addr}"))
        .env("GPUAAS_TOKEN", "gpk_x")
        .env("GPUAAS_CONFIG", config.path().join("config.json"))
        .env("GPUAAS_HTTP_TIMEOUT_SECONDS", "1")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("the CLI hung on a stalled API")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    held.abort();
}

async fn scrape(p: &Platform, token: Option<&str>) -> (u16, String) {
    let mut req = p.http.get(format!("{}/metrics", p.api_url));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn add_node(pool: &PgPool, name: &str, gpus: i32) -> shared_ids::NodeId {
    let registration = product_gpuaas::NodeRegistration {
        name: name.into(),
        agent_version: "1".into(),
        discovery: "simulated".into(),
        gpus: (0..gpus)
            .map(|i| product_gpuaas::GpuSpec {
                index: i,
                uuid: format!("GPU-{name}-{i}"),
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_mib: 81_559,
                health: if i == 0 {
                    product_gpuaas::GpuHealth::Unhealthy
                } else {
                    product_gpuaas::GpuHealth::Healthy
                },
            })
            .collect(),
    };
    product_gpuaas::node::register(pool, shared_ids::NodeId::new(), &registration)
        .await
        .unwrap()
}

/// `/metrics` is off without a scrape token, refuses scrapes without it, and counts from the
/// database at most once per refresh period however often it is scraped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_scrape_token_and_are_cached() {
    let off = Platform::start(Options::default()).await;
    let (status, body) = scrape(&off, Some(&off.operator_token)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics_disabled"), "{body}");
    drop(off);

    let p = Platform::start(Options {
        auth: api::AuthConfig {
            metrics_token: Some("s3cret-scrape".into()),
            metrics_refresh_seconds: 3600,
            ..api::AuthConfig::for_tests()
        },
        ..Options::default()
    })
    .await;
    for token in [None, Some("wrong"), Some(p.operator_token.as_str())] {
        let (status, body) = scrape(&p, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body.contains("\"unauthorized\""), "{body}");
    }
    let (status, first) = scrape(&p, Some("s3cret-scrape")).await;
    assert_eq!(status, 200, "{first}");
    assert!(first.lines().any(|l| l == "gpuaas_gpus 0"), "{first}");
    add_node(&p.pool, "cached", 2).await;
    let (_, second) = scrape(&p, Some("s3cret-scrape")).await;
    assert!(
        second.lines().any(|l| l == "gpuaas_gpus 0"),
        "a scrape within the refresh period counted again:\n{second}"
    );
    drop(p);

    let fresh = Platform::start(Options {
        auth: api::AuthConfig {
            metrics_token: Some("t".into()),
            metrics_refresh_seconds: 0,
            ..api::AuthConfig::for_tests()
        },
        ..Options::default()
    })
    .await;
    scrape(&fresh, Some("t")).await;
    add_node(&fresh.pool, "counted", 2).await;
    let (_, body) = scrape(&fresh, Some("t")).await;
    assert!(body.lines().any(|l| l == "gpuaas_gpus 2"), "{body}");
}

/// `/readyz` tells anyone only that the database does not answer, not how.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_no_database_detail() {
    let p = Platform::start(Options::default()).await;
    let ready = send(p.http.get(format!("{}/readyz", p.api_url))).await;
    assert_eq!(ready.status, 200);
    p.api.pool.close().await;
    let a = send(p.http.get(format!("{}/readyz", p.api_url))).await;
    refused("readyz without a database", &a, 503, "not_ready");
    assert_eq!(
        a.body["detail"], "not ready: the database does not answer",
        "{}",
        a.body
    );
}

/// `GET /v1/nodes` is a cursor list of summaries (GPUs counted); a node's GPUs are on
/// `GET /v1/nodes/{id}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_listed_a_page_at_a_time_with_gpus_counted() {
    let p = Platform::start(Options::default()).await;
    let b = add_node(&p.pool, "node-b", 3).await;
    add_node(&p.pool, "node-a", 2).await;
    add_node(&p.pool, "node-c", 1).await;
    let first = p.get_json("/v1/nodes?limit=2").await;
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-a", "node-b"], "{first}");
    assert_eq!(first["next_cursor"], "node-b");
    let node_b = &first["items"][1];
    assert_eq!(
        (
            &node_b["gpu_count"],
            &node_b["unhealthy_gpus"],
            &node_b["free_gpus"]
        ),
        (&json!(3), &json!(1), &json!(2)),
        "{node_b}"
    );
    assert!(node_b.get("gpus").is_none(), "{node_b}");
    let rest = p.get_json("/v1/nodes?limit=2&cursor=node-b").await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["items"][0]["name"], "node-c");
    assert_eq!(rest["next_cursor"], Value::Null);
    let detail = p.get_json(&format!("/v1/nodes/{b}")).await;
    assert_eq!(detail["gpus"].as_array().unwrap().len(), 3, "{detail}");
}
