//! Policy in the allocation transaction, against a real Postgres: per-project GPU quotas hold
//! under concurrent allocators, and SKUs the org's plan does not entitle are refused.

mod common;
use common::add_node;

use platform_iam::{DEFAULT_ORG, DEFAULT_PROJECT};
use product_gpuaas::{FailureReason, InstanceState, NewInstance, Placement, instance, placement};
use shared_ids::{InstanceId, ProjectId};
use shared_kernel::OperationContext;
use sqlx::PgPool;

fn system() -> OperationContext {
    OperationContext::system("quota-test")
}

async fn new_instance_in(pool: &PgPool, project: ProjectId, sku: &str, gpus: i32) -> InstanceId {
    let req = NewInstance {
        project_id: project,
        name: None,
        sku: sku.into(),
        gpu_count: gpus,
        command: None,
        capacity_timeout_s: None,
    };
    instance::create(pool, &system(), &req, None)
        .await
        .unwrap()
        .instance
        .id
}

async fn new_instance(pool: &PgPool, sku: &str, gpus: i32) -> InstanceId {
    new_instance_in(pool, DEFAULT_PROJECT, sku, gpus).await
}

/// Live allocations (one per GPU) of the project's instances.
async fn live_gpus(pool: &PgPool, project: ProjectId) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM gpuaas.allocations a JOIN gpuaas.instances i ON i.id = a.instance_id
         WHERE i.project_id = $1 AND a.released_at IS NULL",
    )
    .bind(project.uuid())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Live allocations of one instance.
async fn live_gpus_of(pool: &PgPool, instance: InstanceId) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM gpuaas.allocations WHERE instance_id = $1 AND released_at IS NULL",
    )
    .bind(instance.uuid())
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn free_gpus(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT sum(free_gpus) FROM gpuaas.nodes")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn refusal(p: &Placement) -> Option<(&str, &str)> {
    match p {
        Placement::Refused { code, reason } => Some((code, reason)),
        _ => None,
    }
}

#[tokio::test]
async fn concurrent_allocators_never_exceed_a_project_quota() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    for n in 0..3 {
        add_node(&pool, &format!("n{n}"), 8, "H100-80GB").await;
    }
    platform_policy::set_project_quota(&pool, DEFAULT_ORG, DEFAULT_PROJECT, Some(4))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(new_instance(&pool, "h100-80gb-sxm", 1).await);
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let pool = pool.clone();
            tokio::spawn(async move { (id, placement::allocate(&pool, id).await.unwrap()) })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }

    let placed: Vec<InstanceId> = results
        .iter()
        .filter(|(_, p)| matches!(p, Placement::Placed(_)))
        .map(|(id, _)| *id)
        .collect();
    let refused: Vec<InstanceId> = results
        .iter()
        .filter(|(_, p)| refusal(p).is_some())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(placed.len(), 4, "exactly the quota: {results:?}");
    assert_eq!(refused.len(), 16, "{results:?}");
    for (_, p) in &results {
        if let Some((code, reason)) = refusal(p) {
            assert_eq!(code, "quota_exceeded");
            // Serialised: every refusal saw the 4 GPUs the placed ones hold, never fewer.
            assert!(
                reason.contains(&format!("project {DEFAULT_PROJECT} uses 4 of 4 GPUs")),
                "{reason}"
            );
        }
    }
    assert_eq!(live_gpus(&pool, DEFAULT_PROJECT).await, 4);
    assert_eq!(free_gpus(&pool).await, 24 - 4, "counters agree");
    for &id in &refused {
        let i = instance::get(&pool, &system(), id).await.unwrap();
        assert_eq!(i.state, InstanceState::Pending, "a refusal changes nothing");
        assert_eq!((i.node_id, i.gpu_indices.len()), (None, 0));
        assert_eq!(live_gpus_of(&pool, id).await, 0);
    }

    // A retried allocate of a placed instance gets its GPUs back, quota full or not.
    assert!(matches!(
        placement::allocate(&pool, placed[0]).await.unwrap(),
        Placement::Placed(_)
    ));
    // Releasing one lets exactly one more in.
    assert_eq!(placement::release(&pool, placed[0]).await.unwrap(), 1);
    assert!(matches!(
        placement::allocate(&pool, refused[0]).await.unwrap(),
        Placement::Placed(_)
    ));
    let again = placement::allocate(&pool, refused[1]).await.unwrap();
    assert_eq!(refusal(&again).map(|r| r.0), Some("quota_exceeded"));
    assert_eq!(live_gpus(&pool, DEFAULT_PROJECT).await, 4);

    // Raising the quota applies to the next allocation; lifting it lets everything in.
    platform_policy::set_project_quota(&pool, DEFAULT_ORG, DEFAULT_PROJECT, Some(5))
        .await
        .unwrap();
    assert!(matches!(
        placement::allocate(&pool, refused[1]).await.unwrap(),
        Placement::Placed(_)
    ));
    platform_policy::set_project_quota(&pool, DEFAULT_ORG, DEFAULT_PROJECT, None)
        .await
        .unwrap();
    for &id in &refused[2..] {
        assert!(matches!(
            placement::allocate(&pool, id).await.unwrap(),
            Placement::Placed(_)
        ));
    }
    assert_eq!(live_gpus(&pool, DEFAULT_PROJECT).await, 19);
}

#[tokio::test]
async fn the_quota_counts_every_live_gpu_of_the_project_and_only_its_own() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "a", 8, "H100-80GB").await;
    add_node(&pool, "b", 8, "H100-80GB").await;
    platform_policy::set_project_quota(&pool, DEFAULT_ORG, DEFAULT_PROJECT, Some(4))
        .await
        .unwrap();
    // Larger than the quota itself: refused at once, though the fleet has room.
    let whole = new_instance(&pool, "h100-80gb-sxm", 8).await;
    let p = placement::allocate(&pool, whole).await.unwrap();
    assert_eq!(refusal(&p).map(|r| r.0), Some("quota_exceeded"), "{p:?}");

    // A failed instance whose GPUs stay fenced still holds them: they count.
    let fenced = new_instance(&pool, "h100-80gb-sxm", 2).await;
    assert!(matches!(
        placement::allocate(&pool, fenced).await.unwrap(),
        Placement::Placed(_)
    ));
    instance::mark_failed(&pool, fenced, FailureReason::StartFailed, "fenced")
        .await
        .unwrap();
    let three = new_instance(&pool, "h100-80gb-sxm", 4).await;
    let p = placement::allocate(&pool, three).await.unwrap();
    let (code, reason) = refusal(&p).expect("2 held + 4 asked > 4");
    assert_eq!(code, "quota_exceeded");
    assert!(reason.contains("uses 2 of 4 GPUs"), "{reason}");
    let two = new_instance(&pool, "h100-80gb-sxm", 2).await;
    assert!(matches!(
        placement::allocate(&pool, two).await.unwrap(),
        Placement::Placed(_)
    ));

    // Another org's project with its own quota is counted apart (the default project is full).
    let (org, project) = platform_iam::orgs::create(&pool, "elsewhere")
        .await
        .unwrap();
    let (org, other) = (org.id, project.id);
    platform_policy::set_project_quota(&pool, org, other, Some(2))
        .await
        .unwrap();
    let theirs = new_instance_in(&pool, other, "h100-80gb-sxm", 2).await;
    assert!(matches!(
        placement::allocate(&pool, theirs).await.unwrap(),
        Placement::Placed(_)
    ));
    assert_eq!(live_gpus(&pool, DEFAULT_PROJECT).await, 4);
    assert_eq!(live_gpus(&pool, other).await, 2);
}

#[tokio::test]
async fn a_sku_the_org_plan_does_not_entitle_is_refused() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "h100", 8, "H100-80GB").await;
    add_node(&pool, "l40s", 4, "L40S-48GB").await;
    platform_policy::set_org_plan(&pool, DEFAULT_ORG, "free")
        .await
        .unwrap();
    let big = new_instance(&pool, "h100-80gb-sxm", 1).await;
    let p = placement::allocate(&pool, big).await.unwrap();
    let (code, reason) = refusal(&p).expect("free does not include H100");
    assert_eq!(code, "sku_not_entitled");
    assert!(
        reason.contains("plan free does not include SKU h100-80gb-sxm"),
        "{reason}"
    );
    assert_eq!(live_gpus_of(&pool, big).await, 0);
    assert_eq!(free_gpus(&pool).await, 12);
    let small = new_instance(&pool, "l40s-48gb", 2).await;
    assert!(matches!(
        placement::allocate(&pool, small).await.unwrap(),
        Placement::Placed(_)
    ));
    // Back on a plan with every SKU, the same instance is placed.
    platform_policy::set_org_plan(&pool, DEFAULT_ORG, "standard")
        .await
        .unwrap();
    assert!(matches!(
        placement::allocate(&pool, big).await.unwrap(),
        Placement::Placed(_)
    ));
}

#[tokio::test]
async fn an_instance_of_a_project_iam_does_not_know_is_refused() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    add_node(&pool, "n", 8, "H100-80GB").await;
    // Refused at creation (billing's admission needs the project's org)...
    let req = NewInstance {
        project_id: ProjectId::new(),
        name: None,
        sku: "h100-80gb-sxm".into(),
        gpu_count: 1,
        command: None,
        capacity_timeout_s: None,
    };
    let Err(refused) = instance::create(&pool, &system(), &req, None).await else {
        panic!("created an instance in a project IAM does not know");
    };
    assert_eq!(refused.code(), "project_not_found");
    // ...and at allocation, for an instance whose project IAM no longer knows.
    let stray = new_instance(&pool, "h100-80gb-sxm", 1).await;
    sqlx::query("UPDATE gpuaas.instances SET project_id = $2 WHERE id = $1")
        .bind(stray.uuid())
        .bind(ProjectId::new().uuid())
        .execute(&pool)
        .await
        .unwrap();
    let p = placement::allocate(&pool, stray).await.unwrap();
    assert_eq!(refusal(&p).map(|r| r.0), Some("project_not_found"), "{p:?}");
    assert_eq!(free_gpus(&pool).await, 8);
}
