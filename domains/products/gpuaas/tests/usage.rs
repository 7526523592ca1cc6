//! Usage reaches billing in the same transaction as the instance's state (ADR 0007), against a
//! real Postgres with the real billing crate: a span opens when the instance runs and closes when
//! it ends, once each, and an instance that never ran has none. Billing's standing is asked
//! before anything is created or allocated.

mod common;
use common::add_node;

use platform_billing::usage;
use platform_iam::{DEFAULT_ORG, DEFAULT_PROJECT};
use product_gpuaas::{
    FailureReason, InstanceState, NewInstance, Placement, Transition, instance, node_lifecycle,
    placement,
};
use shared_ids::{InstanceId, NodeId};
use shared_kernel::OperationContext;
use sqlx::PgPool;
use std::time::Duration;

fn system() -> OperationContext {
    OperationContext::system("usage-test")
}

fn request(gpus: i32) -> NewInstance {
    NewInstance {
        project_id: DEFAULT_PROJECT,
        name: None,
        sku: "h100-80gb-sxm".into(),
        gpu_count: gpus,
        command: None,
        capacity_timeout_s: None,
    }
}

/// Creates an instance and allocates it a node: `provisioning`.
async fn provisioning(pool: &PgPool, gpus: i32) -> (InstanceId, NodeId) {
    let id = instance::create(pool, &system(), &request(gpus), None)
        .await
        .unwrap()
        .instance
        .id;
    match placement::allocate(pool, id).await.unwrap() {
        Placement::Placed(a) => (id, a.node_id),
        other => panic!("not placed: {other:?}"),
    }
}

async fn span_count(pool: &PgPool, id: InstanceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM billing.usage_spans WHERE id = $1")
        .bind(instance::usage_span_id(id))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn running_opens_the_span_ending_closes_it_once_and_retries_change_nothing() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "u-1", 8, "H100-80GB").await;
    let (id, _) = provisioning(&pool, 4).await;
    assert_eq!(
        span_count(&pool, id).await,
        0,
        "provisioning is not charged"
    );

    assert_eq!(
        instance::mark_running(&pool, id).await.unwrap(),
        Transition::Applied
    );
    let span_id = instance::usage_span_id(id);
    let opened = usage::span(&pool, &span_id).await.unwrap().unwrap();
    let running_at = instance::get(&pool, &system(), id)
        .await
        .unwrap()
        .running_at
        .unwrap();
    assert_eq!(
        (opened.meter.as_str(), opened.sku.as_str(), opened.units),
        (usage::GPU_SECONDS, "h100-80gb-sxm", 4)
    );
    assert_eq!(
        opened.started_at, running_at,
        "from agent-confirmed running"
    );
    assert_eq!(opened.ended_at, None);
    // A retried activity: the state is already there, and billing sees nothing new.
    assert_eq!(
        instance::mark_running(&pool, id).await.unwrap(),
        Transition::AlreadyThere
    );
    assert_eq!(span_count(&pool, id).await, 1);

    let in_project = OperationContext {
        project: Some(DEFAULT_PROJECT),
        org: Some(DEFAULT_ORG),
        ..system()
    };
    instance::begin_termination(&pool, &in_project, id)
        .await
        .unwrap();
    assert_eq!(
        usage::span(&pool, &span_id)
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        None,
        "still running until the agent confirms the stop"
    );
    instance::mark_terminated(&pool, id, None).await.unwrap();
    let closed = usage::span(&pool, &span_id).await.unwrap().unwrap();
    let ended_at = instance::get(&pool, &system(), id)
        .await
        .unwrap()
        .ended_at
        .unwrap();
    assert_eq!(
        closed.ended_at,
        Some(ended_at),
        "to agent-confirmed stopped"
    );
    // A retried termination moves nothing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    instance::mark_terminated(&pool, id, None).await.unwrap();
    assert_eq!(
        usage::span(&pool, &span_id)
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        Some(ended_at)
    );
}

#[tokio::test]
async fn an_instance_that_failed_to_boot_has_no_usage() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "u-2", 8, "H100-80GB").await;
    let (id, _) = provisioning(&pool, 1).await;
    instance::mark_failed(&pool, id, FailureReason::StartFailed, "exit 1")
        .await
        .unwrap();
    assert_eq!(
        instance::get(&pool, &system(), id).await.unwrap().state,
        InstanceState::Failed
    );
    assert_eq!(span_count(&pool, id).await, 0);
}

#[tokio::test]
async fn a_fenced_node_ends_usage_at_the_agents_last_answer() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "u-3", 8, "H100-80GB").await;
    let (id, node) = provisioning(&pool, 2).await;
    instance::mark_running(&pool, id).await.unwrap();
    let (deleting, same_node) = provisioning(&pool, 2).await;
    assert_eq!(
        same_node, node,
        "best fit packs the second onto the same node"
    );
    instance::mark_running(&pool, deleting).await.unwrap();
    let in_project = OperationContext {
        project: Some(DEFAULT_PROJECT),
        org: Some(DEFAULT_ORG),
        ..system()
    };
    instance::begin_termination(&pool, &in_project, deleting)
        .await
        .unwrap();
    // It ran a while; the agent last answered half a second ago, and the grace runs out now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let last_seen: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE gpuaas.nodes SET last_seen_at = now() - interval '500 milliseconds' WHERE id = $1
         RETURNING last_seen_at",
    )
    .bind(node.uuid())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        node_lifecycle::mark_down(&pool, node, "test")
            .await
            .unwrap()
    );
    let failed = node_lifecycle::fail_unreachable_instances(&pool, node, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(failed, vec![id]);
    // Both end at the last answer: the one still running, and the one whose stop the user asked
    // for but the agent never confirmed (its termination gives up minutes later).
    for id in [id, deleting] {
        let span = usage::span(&pool, &instance::usage_span_id(id))
            .await
            .unwrap()
            .unwrap();
        let ended = span.ended_at.expect("closed");
        assert!(
            (ended - last_seen).num_milliseconds().abs() < 1,
            "usage ends at the last answer {last_seen}, not {ended}"
        );
    }
    instance::mark_terminated(&pool, deleting, Some("stop unconfirmed"))
        .await
        .unwrap();
    let span = usage::span(&pool, &instance::usage_span_id(deleting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        span.ended_at
            .map(|e| (e - last_seen).num_milliseconds().abs() < 1),
        Some(true)
    );
}

#[tokio::test]
async fn an_org_billing_refuses_gets_no_instance_and_no_allocation() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "u-4", 8, "H100-80GB").await;
    // An instance created while the org was in good standing...
    let pending = instance::create(&pool, &system(), &request(1), None)
        .await
        .unwrap()
        .instance
        .id;
    // ...then the org became delinquent (what the payment workflow records).
    sqlx::query(
        "INSERT INTO billing.accounts (org_id, mode, delinquent_since) VALUES ($1, 'postpaid', now())
         ON CONFLICT (org_id) DO UPDATE SET delinquent_since = now()",
    )
    .bind(DEFAULT_ORG.uuid())
    .execute(&pool)
    .await
    .unwrap();
    let Err(refused) = instance::create(&pool, &system(), &request(1), None).await else {
        panic!("created an instance for a delinquent org");
    };
    assert_eq!(refused.code(), "org_delinquent", "{refused}");
    let instances: i64 = sqlx::query_scalar("SELECT count(*) FROM gpuaas.instances")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(instances, 1, "nothing half-written");
    // Allocation asks again inside its transaction.
    match placement::allocate(&pool, pending).await.unwrap() {
        Placement::Refused { code, .. } => assert_eq!(code, "org_delinquent"),
        other => panic!("allocated for a delinquent org: {other:?}"),
    }
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gpuaas.allocations WHERE released_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live, 0);
}
