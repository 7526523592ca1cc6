//! Every control-plane activity, run twice (as Temporal may), is harmless. Real Postgres; the
//! activities run through the SDK's ActivityEnvironment, exactly as a worker would call them.

use activities::gpuaas::instance::{FailInstance, InstanceActivities, TerminatedNote};
use activities::gpuaas::{FailureReason, InstanceState, Placement, Transition};
use activities::no_hook;
use product_gpuaas::{GpuHealth, GpuSpec, NewInstance, NodeRegistration, instance, node};
use shared_ids::{InstanceId, NodeId};
use sqlx::PgPool;
use temporalio_sdk::testing::ActivityEnvironment;
use uuid::Uuid;

async fn setup(gpus: i32) -> (PgPool, ActivityEnvironment) {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let reg = NodeRegistration {
        name: "n".into(),
        agent_version: "test".into(),
        discovery: "simulated".into(),
        gpus: (0..gpus)
            .map(|i| GpuSpec {
                index: i,
                uuid: format!("GPU-{i}"),
                model: "H100-80GB".into(),
                memory_mib: 1,
                health: GpuHealth::Healthy,
            })
            .collect(),
    };
    node::register(&pool, shared_ids::NodeId::new(), &reg)
        .await
        .unwrap();
    let env = ActivityEnvironment::builder()
        .register_activities(InstanceActivities::new(pool.clone(), no_hook()))
        .build();
    (pool, env)
}

async fn new_instance(pool: &PgPool, gpus: i32) -> InstanceId {
    let req = NewInstance {
        project_id: platform_iam::DEFAULT_PROJECT,
        name: None,
        sku: "h100-80gb-sxm".into(),
        gpu_count: gpus,
        command: None,
        capacity_timeout_s: None,
    };
    instance::create(pool, &crate::harness::tenant_context(), &req, None)
        .await
        .unwrap()
        .instance
        .id
}

async fn live(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gpuaas.allocations WHERE released_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn free(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT free_gpus FROM gpuaas.nodes")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_happy_path_activities_run_twice_are_harmless() {
    let (pool, env) = setup(8).await;
    let id = new_instance(&pool, 2).await;

    let first = env.run(InstanceActivities::allocate, id).await.unwrap();
    let second = env.run(InstanceActivities::allocate, id).await.unwrap();
    assert_eq!(first, second);
    assert!(matches!(first, Placement::Placed(_)));
    assert_eq!((live(&pool).await, free(&pool).await), (2, 6));

    assert_eq!(
        env.run(InstanceActivities::mark_running, id).await.unwrap(),
        Transition::Applied
    );
    assert_eq!(
        env.run(InstanceActivities::mark_running, id).await.unwrap(),
        Transition::AlreadyThere
    );

    instance::begin_termination(&pool, &crate::harness::tenant_context(), id)
        .await
        .unwrap();
    assert_eq!(env.run(InstanceActivities::release, id).await.unwrap(), 2);
    assert_eq!(env.run(InstanceActivities::release, id).await.unwrap(), 0);
    assert_eq!((live(&pool).await, free(&pool).await), (0, 8));

    let note = TerminatedNote {
        instance_id: id,
        message: None,
    };
    assert_eq!(
        env.run(InstanceActivities::mark_terminated, note.clone())
            .await
            .unwrap(),
        Transition::Applied
    );
    assert_eq!(
        env.run(InstanceActivities::mark_terminated, note)
            .await
            .unwrap(),
        Transition::AlreadyThere
    );
    // A late failure report cannot move a terminated instance backwards.
    let late = FailInstance {
        instance_id: id,
        reason: FailureReason::Timeout,
        message: "late".into(),
        output: None,
    };
    assert!(matches!(
        env.run(InstanceActivities::mark_failed, late)
            .await
            .unwrap(),
        Transition::Refused(_)
    ));
}

#[tokio::test]
async fn the_failure_path_activities_run_twice_are_harmless() {
    let (pool, env) = setup(2).await;
    let holder = new_instance(&pool, 2).await;
    env.run(InstanceActivities::allocate, holder).await.unwrap();
    let starved = new_instance(&pool, 2).await;
    for _ in 0..2 {
        let placement = env
            .run(InstanceActivities::allocate, starved)
            .await
            .unwrap();
        assert!(
            matches!(placement, Placement::NoCapacity { .. }),
            "{placement:?}"
        );
    }
    assert_eq!(live(&pool).await, 2, "a failed placement holds nothing");
    // The undo of a never-made allocation is a no-op.
    assert_eq!(
        env.run(InstanceActivities::release, starved).await.unwrap(),
        0
    );
    let fail = FailInstance {
        instance_id: starved,
        reason: FailureReason::InsufficientCapacity,
        message: "full".into(),
        output: None,
    };
    assert_eq!(
        env.run(InstanceActivities::mark_failed, fail.clone())
            .await
            .unwrap(),
        Transition::Applied
    );
    assert_eq!(
        env.run(InstanceActivities::mark_failed, fail)
            .await
            .unwrap(),
        Transition::AlreadyThere
    );
    let failed = instance::get(
        &pool,
        &shared_kernel::OperationContext::system("test"),
        starved,
    )
    .await
    .unwrap();
    assert_eq!(
        failed.failure_reason,
        Some(FailureReason::InsufficientCapacity)
    );
}

#[tokio::test]
async fn concurrent_duplicate_allocates_hold_one_allocation() {
    let (pool, env) = setup(8).await;
    let id = new_instance(&pool, 4).await;
    let (a, b) = tokio::join!(
        env.run(InstanceActivities::allocate, id),
        env.run(InstanceActivities::allocate, id)
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!((live(&pool).await, free(&pool).await), (4, 4));
}

#[tokio::test]
async fn allocating_for_a_deleted_instance_allocates_nothing_and_says_so() {
    let (pool, env) = setup(8).await;
    let id = new_instance(&pool, 1).await;
    instance::begin_termination(&pool, &crate::harness::tenant_context(), id)
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            env.run(InstanceActivities::allocate, id).await.unwrap(),
            Placement::NotWanted {
                state: InstanceState::Terminating
            }
        );
    }
    assert_eq!(live(&pool).await, 0);
}

async fn events_of_kind(pool: &PgPool, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gpuaas.events WHERE kind = $1")
        .bind(kind)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_fleet_activities_run_twice_are_harmless() {
    use activities::gpuaas::node_lifecycle::{
        HealthReport, NodeDown, NodeGrace, NodeLifecycleActivities,
    };
    use activities::gpuaas::reconcile::{ApplyFix, PlanInput, ReconcileActivities};
    use activities::gpuaas::{FixKind, NodeState};
    use contract_node::{GpuHealthReport, WorkloadReport};

    let (pool, _) = setup(4).await;
    let env = ActivityEnvironment::builder()
        .register_activities(InstanceActivities::new(pool.clone(), no_hook()))
        .register_activities(NodeLifecycleActivities::new(pool.clone(), no_hook()))
        .register_activities(ReconcileActivities::new(pool.clone(), no_hook()))
        .build();
    let node: Uuid = sqlx::query_scalar("SELECT id FROM gpuaas.nodes")
        .fetch_one(&pool)
        .await
        .unwrap();
    let node = NodeId::from(node);
    let id = new_instance(&pool, 2).await;
    env.run(InstanceActivities::allocate, id).await.unwrap();
    env.run(InstanceActivities::mark_running, id).await.unwrap();

    // The same bad-GPU report twice: the GPU leaves service and the node is cordoned once.
    let report = HealthReport {
        node_id: node,
        gpus: vec![GpuHealthReport {
            index: 3,
            healthy: false,
            reason: Some("XID 79".into()),
        }],
        recovery_s: 300,
    };
    let first = env
        .run(NodeLifecycleActivities::apply_report, report.clone())
        .await
        .unwrap();
    let second = env
        .run(NodeLifecycleActivities::apply_report, report)
        .await
        .unwrap();
    assert_eq!(first.health.unhealthy, vec![3]);
    assert_eq!(second.health.unhealthy, vec![3]);
    assert!(second.health.changes.is_empty(), "{second:?}");
    assert_eq!(second.state, NodeState::Cordoned);
    assert_eq!(free(&pool).await, 1, "4 GPUs - 2 allocated - 1 unhealthy");
    assert_eq!(events_of_kind(&pool, "gpu.unhealthy").await, 1);
    assert_eq!(events_of_kind(&pool, "node.auto_cordoned").await, 1);

    // Down twice: one transition. The grace expiry twice: the instance fails once.
    let down = NodeDown {
        node_id: node,
        why: "test".into(),
    };
    assert!(
        env.run(NodeLifecycleActivities::mark_down, down.clone())
            .await
            .unwrap()
    );
    assert!(
        !env.run(NodeLifecycleActivities::mark_down, down)
            .await
            .unwrap()
    );
    let grace = NodeGrace {
        node_id: node,
        down_for_s: 120,
    };
    assert_eq!(
        env.run(NodeLifecycleActivities::fail_unreachable, grace.clone())
            .await
            .unwrap(),
        vec![id]
    );
    assert!(
        env.run(NodeLifecycleActivities::fail_unreachable, grace)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        live(&pool).await,
        2,
        "fenced: a failed instance keeps its GPUs until fenced"
    );

    // The agent is back and still runs the failed instance's process: the plan says stop it;
    // the same fix applied twice releases once and records once.
    let plan = PlanInput {
        node_id: node,
        workloads: vec![WorkloadReport {
            instance_id: id,
            running: true,
        }],
        read_at_ms: chrono_now_ms(),
    };
    let fixes = env
        .run(ReconcileActivities::plan, plan.clone())
        .await
        .unwrap();
    assert_eq!(fixes.len(), 1, "{fixes:?}");
    assert_eq!(fixes[0].kind, FixKind::StopOrphan);
    assert_eq!(
        env.run(ReconcileActivities::plan, plan).await.unwrap(),
        fixes,
        "planning reads, never writes"
    );
    let apply = ApplyFix {
        node_id: node,
        fix: fixes[0].clone(),
        dedupe_key: "test/1".into(),
        by_reconciler: false,
    };
    assert!(
        env.run(ReconcileActivities::apply, apply.clone())
            .await
            .unwrap()
    );
    assert!(!env.run(ReconcileActivities::apply, apply).await.unwrap());
    assert_eq!(live(&pool).await, 0);
    assert_eq!(free(&pool).await, 3, "released once; the bad GPU stays out");
    assert_eq!(events_of_kind(&pool, "reconciler.orphan_stopped").await, 1);

    // Back up twice: one transition, to where it was (cordoned by the bad GPU).
    assert_eq!(
        env.run(NodeLifecycleActivities::mark_up, node)
            .await
            .unwrap(),
        Some(NodeState::Cordoned)
    );
    assert_eq!(
        env.run(NodeLifecycleActivities::mark_up, node)
            .await
            .unwrap(),
        None
    );
    assert_eq!(events_of_kind(&pool, "node.down").await, 1);
    assert_eq!(events_of_kind(&pool, "node.up").await, 1);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
