//! One host must not act for another (doc/architecture/0010-hosts-that-lie.md). Temporal does
//! not authenticate workers, so these tests play the hostile host for real: a Temporal worker of
//! its own on another node's queue, registrations with someone else's name, a rotated key.

use crate::harness::{Options, Platform, temporal_args};
use e2e::rogue::{new_key, start_rogue};
use serde_json::{Value, json};
use shared_ids::NodeId;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);
const SECRET: &str = "SECRET-MARKER-7f3a";

fn node_id(node: &Value) -> NodeId {
    node["id"].as_str().unwrap().parse().unwrap()
}

/// A rogue worker on another node's queue gets only sealed commands it cannot read, and its
/// forged replies (a stop that "succeeded", an empty workload list, a clean session) release
/// nothing: the GPUs stay fenced until the real agent answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_worker_on_another_nodes_queue_reads_nothing_and_releases_nothing() {
    let mut p = Platform::start(Options {
        reconcile_every_s: 2,
        ..Options::default()
    })
    .await;
    p.start_agent("victim", "2xH100-80GB", 200).await;
    let node = node_id(&p.node("victim").await);
    let id = p
        .create_running(json!({
            "sku": "h100-80gb-sxm", "gpu_count": 2,
            "command": format!("sleep 600 # {SECRET}"),
        }))
        .await;
    assert_eq!(p.live_allocations(id).await, 2);

    // The real agent goes away (its workload keeps running); a rogue polls its queue.
    p.stop_agent("victim");
    let (rogue, seen) = start_rogue(node);
    assert_eq!(p.delete(id).await, 202);
    let ended = p.wait_state(id, &["terminated"], LONG).await;
    assert!(
        ended
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("fenced")),
        "the forged stop is not a stop: {ended:?}"
    );
    // Reconciler passes run every 2 s meanwhile; none of them frees the GPUs.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        p.live_allocations(id).await,
        2,
        "a forged reply released GPUs"
    );
    assert_eq!(p.live_workloads().len(), 1, "the workload still runs");

    // What the rogue received is sealed: no plaintext, and its own keys open nothing.
    let commands = seen.lock().unwrap().clone();
    assert!(
        commands
            .iter()
            .any(|c| c.activity == contract_node::vocabulary::activity::STOP_WORKLOAD),
        "the rogue got the stop: {commands:?}"
    );
    for command in &commands {
        assert!(!serde_json::to_string(command).unwrap().contains(SECRET));
        let opened = command.open::<contract_node::envelope::StopWorkload>(
            node,
            &contract_node::envelope::new_encryption_secret(),
            |_| None,
        );
        assert!(opened.is_err());
    }
    // Nor does the tenant's command sit in the provisioning's history.
    let client = temporal_args().connect("reader").await.unwrap();
    let history = client
        .get_workflow_handle::<workflows::gpuaas::ProvisionInstance>(
            workflows::gpuaas::vocabulary::instance_provision_id(id),
        )
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .unwrap();
    let history = String::from_utf8_lossy(&history);
    assert!(!history.contains(SECRET), "the command is in the history");

    // The rogue leaves and the real agent returns: it fences, stops the process, releases.
    rogue.stop();
    p.start_agent("victim", "2xH100-80GB", 200).await;
    p.eventually(LONG, "the real agent releases the fenced GPUs", || async {
        p.live_allocations(id).await == 0 && p.live_workloads().is_empty()
    })
    .await;
}

/// Registration is not a hijack: a join token claims no existing node's name, and a node's own
/// re-registration with fewer GPUs takes the missing ones out of placement (its model stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_cannot_take_over_a_node_and_lost_gpus_leave_placement() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("owned", "4xH100-80GB", 200).await;
    let before = p.node("owned").await;
    let node = node_id(&before);
    let key_before: Vec<u8> =
        sqlx::query_scalar("SELECT public_key FROM iam.node_credentials WHERE node_id = $1")
            .bind(node.uuid())
            .fetch_one(&p.pool)
            .await
            .unwrap();
    let (http, url) = (p.http.clone(), format!("{}/v1/nodes/register", p.api_url));
    let register = |authorization: String, body: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let resp = http
                .post(url)
                .header("authorization", authorization)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let b64 =
        |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
    use ring::signature::KeyPair;
    let attacker = new_key();
    let claim = json!({
        "name": "owned", "agent_version": "x", "discovery": "simulated",
        "gpus": [{"index": 0, "uuid": "GPU-phantom", "model": "H100-80GB", "memory_mib": 81920, "healthy": true}],
        "public_key": b64(attacker.public_key().as_ref()),
        "encryption_key": b64(&contract_node::envelope::encryption_public_key(
            &contract_node::envelope::new_encryption_secret())),
    });
    let (status, body) = register(format!("Bearer {}", p.join_token().await), claim).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("node_name_taken")),
        "{body}"
    );
    let after = p.node("owned").await;
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["gpu_model"], before["gpu_model"]);
    assert_eq!(after["gpus"], before["gpus"], "no phantom GPU, none lost");
    let key_after: Vec<u8> =
        sqlx::query_scalar("SELECT public_key FROM iam.node_credentials WHERE node_id = $1")
            .bind(node.uuid())
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!(key_after, key_before, "the node's credential is untouched");

    // The node itself (its own key) reports two of its four GPUs: the others leave placement.
    p.stop_agent("owned");
    let identity =
        node_agent::identity::Identity::load_or_create(&p.state_dir.join("agents").join("owned"))
            .unwrap();
    let uuids: Vec<String> =
        sqlx::query_scalar("SELECT uuid FROM gpuaas.gpus WHERE node_id = $1 ORDER BY idx")
            .bind(node.uuid())
            .fetch_all(&p.pool)
            .await
            .unwrap();
    let report = |gpus: &[String]| {
        json!({
            "name": "owned", "agent_version": "x", "discovery": "simulated",
            "gpus": gpus.iter().enumerate().map(|(i, u)| json!({
                "index": i, "uuid": u, "model": "H100-80GB", "memory_mib": 81920, "healthy": true,
            })).collect::<Vec<_>>(),
        })
    };
    let (status, body) = register(
        format!("Node {}", identity.assertion(node)),
        report(&uuids[..2]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT uuid FROM gpuaas.gpus WHERE node_id = $1 AND health = 'unhealthy' ORDER BY idx",
    )
    .bind(node.uuid())
    .fetch_all(&p.pool)
    .await
    .unwrap();
    assert_eq!(missing, uuids[2..].to_vec());
    let (free, model): (i32, Option<String>) =
        sqlx::query_as("SELECT free_gpus, gpu_model FROM gpuaas.nodes WHERE id = $1")
            .bind(node.uuid())
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!(free, 2);
    // Reporting no GPUs at all does not null the model (which would drop it from placement
    // views); every GPU is out of placement instead.
    let (status, _) = register(format!("Node {}", identity.assertion(node)), report(&[])).await;
    assert_eq!(status, 200);
    let (free_now, model_now): (i32, Option<String>) =
        sqlx::query_as("SELECT free_gpus, gpu_model FROM gpuaas.nodes WHERE id = $1")
            .bind(node.uuid())
            .fetch_one(&p.pool)
            .await
            .unwrap();
    assert_eq!((free_now, model_now), (0, model));
}

/// A node's keys rotate when they are old: the agent registers a new pair with an assertion of
/// the old one, the old key stops working at once, and commands reach the node under the new
/// encryption key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_keys_rotate_and_the_old_key_stops_working() {
    let mut p = Platform::start(Options::default()).await;
    p.start_agent("rot", "2xH100-80GB", 200).await;
    let node = node_id(&p.node("rot").await);
    p.stop_agent("rot");
    let dir = p.state_dir.join("agents").join("rot");
    let old = node_agent::identity::Identity::load_or_create(&dir).unwrap();
    let aged = std::process::Command::new("touch")
        .args(["-d", "40 days ago"])
        .arg(dir.join("node.key"))
        .status()
        .unwrap();
    assert!(aged.success());
    p.start_agent("rot", "2xH100-80GB", 200).await;
    // The node was ready before the restart: wait for the agent's registration itself.
    p.eventually(LONG, "the agent re-registers with new keys", || async {
        !dir.join("node.key.next").exists()
            && sqlx::query_scalar::<_, bool>(
                "SELECT rotated_at IS NOT NULL FROM iam.node_credentials WHERE node_id = $1",
            )
            .bind(node.uuid())
            .fetch_one(&p.pool)
            .await
            .unwrap()
    })
    .await;

    let (key, rotated): (Vec<u8>, bool) = sqlx::query_as(
        "SELECT public_key, rotated_at IS NOT NULL FROM iam.node_credentials WHERE node_id = $1",
    )
    .bind(node.uuid())
    .fetch_one(&p.pool)
    .await
    .unwrap();
    assert!(rotated);
    assert_ne!(
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &key),
        old.public_key()
    );
    let resp = p
        .http
        .post(format!("{}/v1/nodes/register", p.api_url))
        .header("authorization", format!("Node {}", old.assertion(node)))
        .json(&json!({"name": "rot", "agent_version": "x", "discovery": "simulated", "gpus": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the old key still works");
    // Sealed for the new key, the commands still reach the node (once it is up again).
    p.wait_node_until("rot", |s| s == "ready").await;
    let id = p
        .create_running(json!({"sku": "h100-80gb-sxm", "gpu_count": 1}))
        .await;
    assert_eq!(p.live_allocations(id).await, 1);
}
