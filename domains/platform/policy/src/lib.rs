//! Platform policy: plans and quotas. Owns schema `policy`.
//!
//! A **plan** says which SKUs an org may launch and how many GPUs each of its projects may hold
//! at once by default; an org is on one plan ([`DEFAULT_PLAN`] until [`set_org_plan`] says
//! otherwise); a project may carry its own quota, which overrides the plan's default
//! ([`set_project_quota`]). Seeded plans: `free` (small SKUs, 8 GPUs per project), `standard`
//! (every SKU, 64), `unlimited` (every SKU, no quota; the seeded default org is on it).
//!
//! Policy owns the limits, never the usage: a product counts the GPUs a project holds in its own
//! tables and asks [`admit`] inside its allocation transaction, after
//! [`lock_project_allocations`] (doc/architecture/0007: no SQL here names another schema).
//!
//! Org and project ids are IAM's; nothing here checks that they exist (no foreign key crosses
//! schemas). Callers pass the org a project belongs to, as IAM says.

use serde::{Deserialize, Serialize};
use shared_ids::{OrgId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::{Connection, PgConnection, PgPool};

/// The plan of an org that was never given one.
pub const DEFAULT_PLAN: &str = "standard";

/// Error codes of refusals ([`admit`], [`check_sku`]).
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
pub const SKU_NOT_ENTITLED: &str = "sku_not_entitled";

/// What a project of an org may launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// The org's plan.
    pub plan: String,
    /// The SKU names the plan entitles; `None`: every SKU.
    pub skus: Option<Vec<String>>,
    /// The most GPUs the project may hold at once (its own quota, else the plan's default);
    /// `None`: no limit.
    pub project_gpu_quota: Option<i32>,
}

impl Entitlement {
    pub fn entitles(&self, sku: &str) -> bool {
        self.skus
            .as_ref()
            .is_none_or(|skus| skus.iter().any(|s| s == sku))
    }

    /// The decision of [`admit`], on an entitlement already read.
    pub fn admit(
        &self,
        project: ProjectId,
        sku: &str,
        requested_gpus: i32,
        gpus_in_use: i64,
    ) -> DomainResult<()> {
        if requested_gpus <= 0 || gpus_in_use < 0 {
            return Err(DomainError::invalid(
                "invalid_gpu_count",
                format!("cannot admit {requested_gpus} GPU(s) with {gpus_in_use} in use"),
            ));
        }
        if !self.entitles(sku) {
            return Err(self.not_entitled(sku));
        }
        if let Some(quota) = self.project_gpu_quota
            && gpus_in_use + i64::from(requested_gpus) > i64::from(quota)
        {
            return Err(DomainError::conflict(
                QUOTA_EXCEEDED,
                format!(
                    "project {project} uses {gpus_in_use} of {quota} GPUs; \
                     {requested_gpus} more would exceed its quota"
                ),
            ));
        }
        Ok(())
    }

    fn not_entitled(&self, sku: &str) -> DomainError {
        let offered = self.skus.as_deref().unwrap_or_default().join(", ");
        DomainError::invalid(
            SKU_NOT_ENTITLED,
            format!(
                "plan {} does not include SKU {sku} (it includes: {offered})",
                self.plan
            ),
        )
    }
}

/// A plan as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    /// `None`: every SKU.
    pub skus: Option<Vec<String>>,
    /// `None`: no limit.
    pub default_project_gpus: Option<i32>,
}

/// `NULL` and `'{*}'` both mean every SKU.
fn every_sku_is_none(skus: Option<Vec<String>>) -> Option<Vec<String>> {
    skus.filter(|s| !s.iter().any(|x| x == "*"))
}

#[derive(sqlx::FromRow)]
struct PlanRow {
    name: String,
    description: String,
    skus: Option<Vec<String>>,
    default_project_gpus: Option<i32>,
}

impl From<PlanRow> for Plan {
    fn from(r: PlanRow) -> Self {
        Self {
            name: r.name,
            description: r.description,
            skus: every_sku_is_none(r.skus),
            default_project_gpus: r.default_project_gpus,
        }
    }
}

/// Every plan, by name.
pub async fn plans(pool: &PgPool) -> DomainResult<Vec<Plan>> {
    let rows: Vec<PlanRow> = sqlx::query_as(
        "SELECT name, description, skus, default_project_gpus FROM policy.plans ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Plan::from).collect())
}

/// The plan an org is on ([`DEFAULT_PLAN`] if it was never given one).
pub async fn org_plan(pool: &PgPool, org: OrgId) -> DomainResult<Plan> {
    let row: PlanRow = sqlx::query_as(
        "SELECT name, description, skus, default_project_gpus FROM policy.plans
         WHERE name = coalesce((SELECT plan FROM policy.org_plans WHERE org_id = $1), $2)",
    )
    .bind(org.uuid())
    .bind(DEFAULT_PLAN)
    .fetch_one(pool)
    .await?;
    Ok(row.into())
}

/// What `project` of `org` may launch now.
pub async fn entitlement(
    pool: &PgPool,
    org: OrgId,
    project: ProjectId,
) -> DomainResult<Entitlement> {
    let mut conn = pool.acquire().await?;
    entitlement_on(&mut conn, org, project).await
}

/// [`entitlement`] on the caller's connection (inside its transaction): one query.
pub async fn entitlement_on(
    conn: &mut PgConnection,
    org: OrgId,
    project: ProjectId,
) -> DomainResult<Entitlement> {
    let (plan, skus, quota): (String, Option<Vec<String>>, Option<i32>) = sqlx::query_as(
        "SELECT p.name, p.skus,
                CASE WHEN q.project_id IS NULL THEN p.default_project_gpus ELSE q.max_concurrent_gpus END
         FROM policy.plans p LEFT JOIN policy.project_quotas q ON q.project_id = $2
         WHERE p.name = coalesce((SELECT plan FROM policy.org_plans WHERE org_id = $1), $3)",
    )
    .bind(org.uuid())
    .bind(project.uuid())
    .bind(DEFAULT_PLAN)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Entitlement {
        plan,
        skus: every_sku_is_none(skus),
        project_gpu_quota: quota,
    })
}

/// Puts `org` on `plan`. Unknown plan: `invalid("unknown_plan")`, nothing changed.
pub async fn set_org_plan(pool: &PgPool, org: OrgId, plan: &str) -> DomainResult<()> {
    let set: Option<(uuid::Uuid,)> = sqlx::query_as(
        "INSERT INTO policy.org_plans (org_id, plan)
         SELECT $1, name FROM policy.plans WHERE name = $2
         ON CONFLICT (org_id) DO UPDATE SET plan = excluded.plan, updated_at = now()
         RETURNING org_id",
    )
    .bind(org.uuid())
    .bind(plan)
    .fetch_optional(pool)
    .await?;
    if set.is_none() {
        let known: Vec<String> = plans(pool).await?.into_iter().map(|p| p.name).collect();
        return Err(DomainError::invalid(
            "unknown_plan",
            format!("no plan named {plan:?}; plans: {}", known.join(", ")),
        ));
    }
    Ok(())
}

/// Gives `project` (of `org`) its own quota, overriding its plan's default: at most
/// `max_concurrent_gpus` GPUs at once, or no limit for `None`. Negative: `invalid("invalid_quota")`.
/// A quota below what the project holds now takes nothing away; it only refuses new allocations.
/// [`clear_project_quota`] returns the project to its plan's default.
pub async fn set_project_quota(
    pool: &PgPool,
    org: OrgId,
    project: ProjectId,
    max_concurrent_gpus: Option<i32>,
) -> DomainResult<()> {
    if max_concurrent_gpus.is_some_and(|n| n < 0) {
        return Err(DomainError::invalid(
            "invalid_quota",
            "max_concurrent_gpus must be 0 or more",
        ));
    }
    sqlx::query(
        "INSERT INTO policy.project_quotas (project_id, org_id, max_concurrent_gpus)
         VALUES ($1, $2, $3)
         ON CONFLICT (project_id) DO UPDATE
             SET org_id = excluded.org_id, max_concurrent_gpus = excluded.max_concurrent_gpus,
                 updated_at = now()",
    )
    .bind(project.uuid())
    .bind(org.uuid())
    .bind(max_concurrent_gpus)
    .execute(pool)
    .await?;
    Ok(())
}

/// Drops the project's own quota: its plan's default applies again. Returns whether it had one.
pub async fn clear_project_quota(pool: &PgPool, project: ProjectId) -> DomainResult<bool> {
    let done = sqlx::query("DELETE FROM policy.project_quotas WHERE project_id = $1")
        .bind(project.uuid())
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether `org`'s plan includes `sku`: `invalid("sku_not_entitled")` if not. For a request's
/// early answer; [`admit`] checks it again where it counts.
pub async fn check_sku(pool: &PgPool, org: OrgId, sku: &str) -> DomainResult<()> {
    let plan = org_plan(pool, org).await?;
    let entitlement = Entitlement {
        plan: plan.name,
        skus: plan.skus,
        project_gpu_quota: plan.default_project_gpus,
    };
    if entitlement.entitles(sku) {
        Ok(())
    } else {
        Err(entitlement.not_entitled(sku))
    }
}

/// The advisory-lock class of "allocations of one project" (two-key form, whose key space does
/// not overlap the one-key form's): ASCII `pol` and 1.
const PROJECT_ALLOCATIONS_LOCK: i32 = 0x706f_6c01;

/// The second lock key: the project id folded to 32 bits. Two projects that fold alike only
/// share a lock (they serialise), which is never wrong.
fn project_lock_key(project: ProjectId) -> i32 {
    let b = project.uuid().into_bytes();
    let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (word(0) ^ word(4) ^ word(8) ^ word(12)) as i32
}

/// Inside the allocation transaction: serialises allocations of one project
/// (`pg_advisory_xact_lock`, held until the transaction ends), so that the GPUs the product
/// counts next are all the project holds, and concurrent allocators can never exceed its quota.
/// Outside a transaction: `invalid("transaction_required")` (the lock would end at once).
pub async fn lock_project_allocations(
    conn: &mut PgConnection,
    project: ProjectId,
) -> DomainResult<()> {
    if !conn.is_in_transaction() {
        return Err(DomainError::invalid(
            "transaction_required",
            "lock_project_allocations must run inside the allocation transaction",
        ));
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(PROJECT_ALLOCATIONS_LOCK)
        .bind(project_lock_key(project))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inside the allocation transaction, after [`lock_project_allocations`], with the GPUs the
/// project holds now (counted by the product): whether `requested_gpus` more of `sku` may be
/// allocated. Refusals: `conflict("quota_exceeded")`, `invalid("sku_not_entitled")`. Reads the
/// entitlement on `conn`, so a quota changed before the lock was taken applies.
pub async fn admit(
    conn: &mut PgConnection,
    org: OrgId,
    project: ProjectId,
    sku: &str,
    requested_gpus: i32,
    gpus_in_use: i64,
) -> DomainResult<()> {
    entitlement_on(conn, org, project)
        .await?
        .admit(project, sku, requested_gpus, gpus_in_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(skus: Option<&[&str]>, quota: Option<i32>) -> Entitlement {
        Entitlement {
            plan: "p".into(),
            skus: skus.map(|s| s.iter().map(|x| x.to_string()).collect()),
            project_gpu_quota: quota,
        }
    }

    #[test]
    fn admit_counts_what_is_held_plus_what_is_asked() {
        let p = ProjectId::new();
        let e = ent(None, Some(4));
        assert!(e.admit(p, "x", 4, 0).is_ok());
        assert!(e.admit(p, "x", 1, 3).is_ok());
        assert_eq!(e.admit(p, "x", 1, 4).unwrap_err().code(), QUOTA_EXCEEDED);
        assert_eq!(e.admit(p, "x", 5, 0).unwrap_err().code(), QUOTA_EXCEEDED);
        assert!(ent(None, None).admit(p, "x", 1000, 1_000_000).is_ok());
        assert_eq!(
            ent(None, Some(0)).admit(p, "x", 1, 0).unwrap_err().code(),
            QUOTA_EXCEEDED
        );
        assert_eq!(
            e.admit(p, "x", 0, 0).unwrap_err().code(),
            "invalid_gpu_count"
        );
    }

    #[test]
    fn skus_are_checked_before_the_quota() {
        let p = ProjectId::new();
        let e = ent(Some(&["small"]), Some(1));
        assert!(e.admit(p, "small", 1, 0).is_ok());
        assert_eq!(
            e.admit(p, "big", 1, 5).unwrap_err().code(),
            SKU_NOT_ENTITLED
        );
        assert_eq!(every_sku_is_none(Some(vec!["*".into()])), None);
    }

    #[test]
    fn lock_keys_differ_per_project() {
        let a = ProjectId::new();
        let b = ProjectId::new();
        assert_eq!(project_lock_key(a), project_lock_key(a));
        assert_ne!(project_lock_key(a), project_lock_key(b));
    }
}
