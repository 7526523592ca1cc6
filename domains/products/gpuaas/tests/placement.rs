//! Placement and allocation against a real Postgres.

mod common;
use common::add_node;

use product_gpuaas::{NewInstance, Placement, instance, placement};
use shared_ids::InstanceId;
use sqlx::PgPool;

async fn new_instance(pool: &PgPool, sku: &str, gpus: i32) -> InstanceId {
    let req = NewInstance {
        project_id: platform_iam::DEFAULT_PROJECT,
        name: None,
        sku: sku.into(),
        gpu_count: gpus,
        command: None,
        capacity_timeout_s: None,
    };
    instance::create(
        pool,
        &shared_kernel::OperationContext::system("placement-test"),
        &req,
        None,
    )
    .await
    .unwrap()
    .instance
    .id
}

fn placed(p: Placement) -> product_gpuaas::Allocation {
    match p {
        Placement::Placed(a) => a,
        other => panic!("expected a placement, got {other:?}"),
    }
}

async fn double_booked(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT gpu_id FROM gpuaas.allocations WHERE released_at IS NULL
                               GROUP BY gpu_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn best_fit_prefers_the_fullest_node_that_still_fits() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let roomy = add_node(&pool, "roomy", 8, "H100-80GB").await;
    let tight = add_node(&pool, "tight", 4, "H100-80GB").await;
    add_node(&pool, "other-model", 8, "A100-40GB").await;

    let a = placed(
        placement::allocate(&pool, new_instance(&pool, "h100-80gb-sxm", 2).await)
            .await
            .unwrap(),
    );
    assert_eq!(
        a.node_id, tight,
        "2 GPUs go to the 4-GPU node, keeping the 8-GPU node whole"
    );
    let b = placed(
        placement::allocate(&pool, new_instance(&pool, "h100-80gb-sxm", 8).await)
            .await
            .unwrap(),
    );
    assert_eq!(
        b.node_id, roomy,
        "a whole-host request still finds a whole host"
    );
    assert_eq!(b.gpu_indices, (0..8).collect::<Vec<_>>());
    let c = placed(
        placement::allocate(&pool, new_instance(&pool, "h100-80gb-sxm", 2).await)
            .await
            .unwrap(),
    );
    assert_eq!((c.node_id, c.gpu_indices.clone()), (tight, vec![2, 3]));
    match placement::allocate(&pool, new_instance(&pool, "h100-80gb-sxm", 1).await)
        .await
        .unwrap()
    {
        Placement::NoCapacity { explanation } => {
            assert!(
                explanation.contains("no node has 1 free H100-80GB"),
                "{explanation}"
            );
            assert!(explanation.contains("another GPU model"), "{explanation}");
        }
        other => panic!("fleet is full, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_allocations_never_double_book() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    for n in 0..3 {
        add_node(&pool, &format!("n{n}"), 8, "H100-80GB").await;
    }
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(new_instance(&pool, "h100-80gb-sxm", 1).await);
    }
    let tasks = ids.into_iter().map(|id| {
        let pool = pool.clone();
        tokio::spawn(async move { placement::allocate(&pool, id).await.unwrap() })
    });
    let results = futures_join(tasks).await;
    let placed = results
        .iter()
        .filter(|p| matches!(p, Placement::Placed(_)))
        .count();
    assert_eq!(placed, 24, "exactly the fleet's 24 GPUs");
    assert_eq!(results.len() - placed, 16);
    assert_eq!(double_booked(&pool).await, 0);
    let free: i64 = sqlx::query_scalar("SELECT sum(free_gpus) FROM gpuaas.nodes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(free, 0, "placement counters agree with the allocations");
}

async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_database_refuses_a_second_live_allocation_of_a_gpu() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "n", 1, "H100-80GB").await;
    let first = new_instance(&pool, "h100-80gb-sxm", 1).await;
    let second = new_instance(&pool, "h100-80gb-sxm", 1).await;
    placed(placement::allocate(&pool, first).await.unwrap());
    // Bypass placement entirely: the unique index alone must refuse the double booking.
    let forced = sqlx::query(
        "INSERT INTO gpuaas.allocations (instance_id, gpu_id, node_id, gpu_index)
         SELECT $1, gpu_id, node_id, gpu_index FROM gpuaas.allocations WHERE instance_id = $2",
    )
    .bind(second.uuid())
    .bind(first.uuid())
    .execute(&pool)
    .await;
    let err = forced.expect_err("double booking must be refused");
    assert!(
        err.as_database_error().unwrap().is_unique_violation(),
        "{err}"
    );
    // Once released, the GPU can be leased again.
    assert_eq!(placement::release(&pool, first).await.unwrap(), 1);
    placed(placement::allocate(&pool, second).await.unwrap());
}

#[tokio::test]
async fn allocate_and_release_are_idempotent() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "n", 8, "H100-80GB").await;
    let id = new_instance(&pool, "h100-80gb-sxm", 4).await;
    let once = placed(placement::allocate(&pool, id).await.unwrap());
    let twice = placed(placement::allocate(&pool, id).await.unwrap());
    assert_eq!(once, twice, "a retried allocate returns the same GPUs");
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gpuaas.allocations WHERE released_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live, 4);
    assert_eq!(placement::release(&pool, id).await.unwrap(), 4);
    assert_eq!(
        placement::release(&pool, id).await.unwrap(),
        0,
        "a retried release frees nothing more"
    );
    let free: i32 = sqlx::query_scalar("SELECT free_gpus FROM gpuaas.nodes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(free, 8, "the counter was restored exactly once");
}

#[tokio::test]
async fn no_capacity_is_explained_per_node_reason() {
    use product_gpuaas::events::Actor;
    use product_gpuaas::node_lifecycle::{self, GpuSample};
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "full-1", 2, "H100-80GB").await;
    let sick = add_node(&pool, "sick-1", 4, "H100-80GB").await;
    let gone = add_node(&pool, "gone-1", 4, "H100-80GB").await;
    let parked = add_node(&pool, "parked-1", 4, "H100-80GB").await;
    add_node(&pool, "a100-1", 8, "A100-40GB").await;
    // sick-1: one bad GPU, so 3 of its 4 are free; uncordoned by an operator anyway.
    let bad = [GpuSample {
        index: 0,
        healthy: false,
        reason: Some("XID 79".into()),
    }];
    node_lifecycle::apply_gpu_health(&pool, sick, &bad, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let op = Actor::Operator("test".into());
    node_lifecycle::uncordon(&pool, sick, &op).await.unwrap();
    node_lifecycle::mark_down(&pool, gone, "test")
        .await
        .unwrap();
    node_lifecycle::cordon(&pool, parked, &op).await.unwrap();

    let why = placement::explain_no_capacity(&pool, "H100-80GB", 4)
        .await
        .unwrap();
    assert!(
        why.starts_with("no node has 4 free H100-80GB GPU(s): "),
        "{why}"
    );
    for part in [
        "full: 1 node(s) (full-1: 2 free)",
        "unhealthy GPUs: 1 node(s) (sick-1: 3 free)",
        "down: 1 node(s) (gone-1)",
        "cordoned: 1 node(s) (parked-1 by operator)",
        "another GPU model: 1 node(s) (a100-1 has A100-40GB)",
    ] {
        assert!(why.contains(part), "missing {part:?} in {why}");
    }
}

/// Nodes whose placement counter disagrees with their healthy GPUs without a live allocation.
async fn drifted_counters(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM gpuaas.nodes n WHERE n.free_gpus <> (
             SELECT count(*) FROM gpuaas.gpus g WHERE g.node_id = n.id AND g.health = 'healthy'
               AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a WHERE a.gpu_id = g.id AND a.released_at IS NULL))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn releases_racing_gpu_health_reports_keep_the_counter_exact() {
    use product_gpuaas::node_lifecycle::{self, GpuSample};
    use std::time::Duration;
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let node = add_node(&pool, "racy", 8, "H100-80GB").await;
    let report = |healthy: bool| -> Vec<GpuSample> {
        (0..8)
            .map(|index| GpuSample {
                index,
                healthy,
                reason: (!healthy).then(|| "XID 79".to_string()),
            })
            .collect()
    };
    let op = product_gpuaas::events::Actor::Operator("test".into());
    for round in 0..6 {
        let mut held = Vec::new();
        for _ in 0..8 {
            let id = new_instance(&pool, "h100-80gb-sxm", 1).await;
            placed(placement::allocate(&pool, id).await.unwrap());
            held.push(id);
        }
        // Even rounds: every GPU fails while its allocation is released. Odd rounds: they
        // failed while allocated and heal (recovery 0 s) while released.
        let failing = round % 2 == 0;
        if !failing {
            node_lifecycle::apply_gpu_health(&pool, node, &report(false), Duration::ZERO)
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for id in held {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                placement::release(&pool, id).await.unwrap();
            }));
        }
        for _ in 0..3 {
            let (pool, samples) = (pool.clone(), report(!failing));
            tasks.push(tokio::spawn(async move {
                node_lifecycle::apply_gpu_health(&pool, node, &samples, Duration::ZERO)
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(drifted_counters(&pool).await, 0, "round {round}");
        // Back to all healthy and schedulable for the next round.
        for _ in 0..2 {
            node_lifecycle::apply_gpu_health(&pool, node, &report(true), Duration::ZERO)
                .await
                .unwrap();
        }
        let _ = node_lifecycle::uncordon(&pool, node, &op).await;
        assert_eq!(drifted_counters(&pool).await, 0, "round {round}, healed");
    }
}
