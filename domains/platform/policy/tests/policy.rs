//! Plans, entitlements, quotas and admission against a real Postgres (no product involved).

use platform_policy::{self as policy, Entitlement, QUOTA_EXCEEDED, SKU_NOT_ENTITLED};
use shared_ids::{OrgId, ProjectId};
use std::time::Duration;

/// The org and project the first iam migration seeds (policy puts the org on `unlimited`).
const DEFAULT_ORG: OrgId = OrgId::from_u128(0x00000000_0000_7000_8000_000000000001);
const DEFAULT_PROJECT: ProjectId = ProjectId::from_u128(0x00000000_0000_7000_8000_000000000002);

#[tokio::test]
async fn seeded_plans_and_what_an_org_without_a_plan_gets() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let plans = policy::plans(&pool).await.unwrap();
    let summary: Vec<_> = plans
        .iter()
        .map(|p| (p.name.as_str(), p.skus.clone(), p.default_project_gpus))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "free",
                Some(vec!["l40s-48gb".to_string(), "a100-40gb".to_string()]),
                Some(8)
            ),
            ("standard", None, Some(64)),
            ("unlimited", None, None),
        ]
    );
    // An org policy never heard of is on the default plan.
    let (org, project) = (OrgId::new(), ProjectId::new());
    assert_eq!(
        policy::entitlement(&pool, org, project).await.unwrap(),
        Entitlement {
            plan: policy::DEFAULT_PLAN.into(),
            skus: None,
            project_gpu_quota: Some(64),
        }
    );
    assert_eq!(policy::DEFAULT_PLAN, "standard");
    // The seeded default org is not limited (the dev stack and e2e tests launch whole hosts).
    assert_eq!(
        policy::entitlement(&pool, DEFAULT_ORG, DEFAULT_PROJECT)
            .await
            .unwrap(),
        Entitlement {
            plan: "unlimited".into(),
            skus: None,
            project_gpu_quota: None,
        }
    );
}

#[tokio::test]
async fn org_plans_change_and_unknown_plans_are_refused() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (org, project) = (OrgId::new(), ProjectId::new());
    policy::set_org_plan(&pool, org, "free").await.unwrap();
    let e = policy::entitlement(&pool, org, project).await.unwrap();
    assert_eq!(e.plan, "free");
    assert_eq!(e.project_gpu_quota, Some(8));
    assert!(e.entitles("l40s-48gb") && !e.entitles("h100-80gb-sxm"));
    assert_eq!(policy::org_plan(&pool, org).await.unwrap().name, "free");

    let err = policy::set_org_plan(&pool, org, "platinum")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_plan");
    assert!(matches!(err, shared_kernel::DomainError::Invalid { .. }));
    assert!(
        err.to_string().contains("free, standard, unlimited"),
        "{err}"
    );
    assert_eq!(
        policy::org_plan(&pool, org).await.unwrap().name,
        "free",
        "a refused change changes nothing"
    );

    // Changing again updates the one row; other orgs are untouched.
    policy::set_org_plan(&pool, org, "unlimited").await.unwrap();
    let e = policy::entitlement(&pool, org, project).await.unwrap();
    assert_eq!((e.plan.as_str(), e.project_gpu_quota), ("unlimited", None));
    assert_eq!(
        policy::org_plan(&pool, OrgId::new()).await.unwrap().name,
        "standard"
    );
}

#[tokio::test]
async fn a_plan_of_star_entitles_every_sku() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    sqlx::query(
        "INSERT INTO policy.plans (name, description, skus, default_project_gpus)
         VALUES ('starry', 'test', '{*}', 2)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let org = OrgId::new();
    policy::set_org_plan(&pool, org, "starry").await.unwrap();
    let e = policy::entitlement(&pool, org, ProjectId::new())
        .await
        .unwrap();
    assert_eq!(e.skus, None);
    policy::check_sku(&pool, org, "anything").await.unwrap();
}

#[tokio::test]
async fn project_quotas_override_the_plan_and_can_be_cleared() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    let (project, sibling) = (ProjectId::new(), ProjectId::new());
    let quota = |p| {
        let pool = pool.clone();
        async move {
            policy::entitlement(&pool, org, p)
                .await
                .unwrap()
                .project_gpu_quota
        }
    };
    policy::set_project_quota(&pool, org, project, Some(4))
        .await
        .unwrap();
    assert_eq!(quota(project).await, Some(4));
    assert_eq!(quota(sibling).await, Some(64), "a sibling keeps the plan's");
    // An own quota outlives a plan change: it is the project's, not the plan's.
    policy::set_org_plan(&pool, org, "free").await.unwrap();
    assert_eq!(quota(project).await, Some(4));
    assert_eq!(quota(sibling).await, Some(8));
    // Zero is a quota (nothing may be allocated); None lifts the limit for this project.
    policy::set_project_quota(&pool, org, project, Some(0))
        .await
        .unwrap();
    assert_eq!(quota(project).await, Some(0));
    policy::set_project_quota(&pool, org, project, None)
        .await
        .unwrap();
    assert_eq!(quota(project).await, None);
    // Negative: refused, unchanged.
    let err = policy::set_project_quota(&pool, org, project, Some(-1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_quota");
    assert_eq!(quota(project).await, None);
    // Cleared: the plan's default again.
    assert!(policy::clear_project_quota(&pool, project).await.unwrap());
    assert!(!policy::clear_project_quota(&pool, project).await.unwrap());
    assert_eq!(quota(project).await, Some(8));
}

#[tokio::test]
async fn check_sku_follows_the_org_plan() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let org = OrgId::new();
    policy::check_sku(&pool, org, "h100-80gb-sxm")
        .await
        .expect("the default plan includes every SKU");
    policy::set_org_plan(&pool, org, "free").await.unwrap();
    policy::check_sku(&pool, org, "l40s-48gb").await.unwrap();
    let err = policy::check_sku(&pool, org, "h100-80gb-sxm")
        .await
        .unwrap_err();
    assert_eq!(err.code(), SKU_NOT_ENTITLED);
    assert!(matches!(err, shared_kernel::DomainError::Invalid { .. }));
    assert!(
        err.to_string()
            .contains("plan free does not include SKU h100-80gb-sxm"),
        "{err}"
    );
}

#[tokio::test]
async fn admit_refuses_over_quota_and_unentitled_skus() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (org, project) = (OrgId::new(), ProjectId::new());
    policy::set_org_plan(&pool, org, "free").await.unwrap();
    policy::set_project_quota(&pool, org, project, Some(4))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    policy::lock_project_allocations(&mut tx, project)
        .await
        .unwrap();
    policy::admit(&mut tx, org, project, "l40s-48gb", 4, 0)
        .await
        .unwrap();
    policy::admit(&mut tx, org, project, "l40s-48gb", 1, 3)
        .await
        .unwrap();
    let over = policy::admit(&mut tx, org, project, "l40s-48gb", 2, 3)
        .await
        .unwrap_err();
    assert_eq!(over.code(), QUOTA_EXCEEDED);
    assert!(matches!(over, shared_kernel::DomainError::Conflict { .. }));
    assert!(
        over.to_string()
            .contains(&format!("project {project} uses 3 of 4 GPUs")),
        "{over}"
    );
    let whole = policy::admit(&mut tx, org, project, "l40s-48gb", 5, 0)
        .await
        .unwrap_err();
    assert_eq!(whole.code(), QUOTA_EXCEEDED, "larger than the quota itself");
    let sku = policy::admit(&mut tx, org, project, "h100-80gb-sxm", 1, 0)
        .await
        .unwrap_err();
    assert_eq!(sku.code(), SKU_NOT_ENTITLED);
    tx.rollback().await.unwrap();

    // A quota raised meanwhile applies to the next admission.
    policy::set_project_quota(&pool, org, project, Some(6))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    policy::admit(&mut conn, org, project, "a100-40gb", 2, 4)
        .await
        .unwrap();
    // The unlimited plan admits anything.
    policy::set_org_plan(&pool, org, "unlimited").await.unwrap();
    policy::clear_project_quota(&pool, project).await.unwrap();
    policy::admit(&mut conn, org, project, "h100-80gb-sxm", 8, 10_000)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_project_lock_serialises_one_project_only_and_needs_a_transaction() {
    let (pool, _) = shared_kernel::db::testing::fresh_database().await;
    let (project, other) = (ProjectId::new(), ProjectId::new());

    let mut conn = pool.acquire().await.unwrap();
    let err = policy::lock_project_allocations(&mut conn, project)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "transaction_required");
    drop(conn);

    let mut first = pool.begin().await.unwrap();
    policy::lock_project_allocations(&mut first, project)
        .await
        .unwrap();
    // Another project is not held up.
    let mut unrelated = pool.begin().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        policy::lock_project_allocations(&mut unrelated, other),
    )
    .await
    .expect("another project's lock is free")
    .unwrap();
    unrelated.commit().await.unwrap();
    // The same project waits until the first transaction ends.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut second = pool.begin().await.unwrap();
            policy::lock_project_allocations(&mut second, project)
                .await
                .unwrap();
            second.commit().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the second allocator must wait");
    first.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the lock is released at commit")
        .unwrap();
}
