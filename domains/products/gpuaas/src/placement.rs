//! GPU placement and allocation.
//!
//! Best-fit: the fullest ready node of the SKU's GPU model that still has room, so large requests
//! still find a whole host. Concurrent allocators lock the candidate node row with
//! `FOR UPDATE SKIP LOCKED` and move on to the next candidate instead of queueing behind each
//! other. The guarantee against double-booking is the unique index
//! `allocations_one_live_per_gpu`, not this choreography: a racing insert fails instead of
//! leasing a GPU twice.
//!
//! Policy (`platform-policy`) decides whether the instance's project may have the GPUs at all:
//! inside the allocation transaction, after the instance row is locked and before a node is
//! picked, the org's plan must entitle the SKU and, where the project has a GPU quota, the GPUs
//! it holds (counted here, in this product's own tables) plus the request must fit. Allocations
//! of a project with a quota are serialised by a per-project lock; a project without one takes
//! no lock, so the hot path pays one policy read.

use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, OrgId, ProjectId};
use shared_kernel::{DomainError, DomainResult};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use uuid::Uuid;

/// The GPUs an instance holds on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub instance_id: InstanceId,
    pub node_id: NodeId,
    pub node_name: String,
    pub gpu_indices: Vec<i32>,
    pub gpu_uuids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    Placed(Allocation),
    /// No node fits now; the text says why, per kind of node.
    NoCapacity {
        explanation: String,
    },
    /// The instance no longer wants GPUs (it was deleted while waiting): nothing was allocated.
    NotWanted {
        state: crate::InstanceState,
    },
    /// Policy refused the GPUs (the project's quota, the plan's SKUs): nothing was allocated, and
    /// retrying the same request will not help. `code` is the refusal's stable code
    /// (`quota_exceeded`, `sku_not_entitled`, `project_not_found`), `reason` says why in words.
    Refused {
        code: String,
        reason: String,
    },
}

/// Allocates GPUs for a `pending`/`provisioning` instance. Idempotent: an instance that already
/// holds a live allocation gets that allocation back.
pub async fn allocate(pool: &PgPool, instance: InstanceId) -> DomainResult<Placement> {
    for attempt in 0..MAX_ATTEMPTS {
        match try_allocate(pool, instance).await {
            Ok(Attempt::Done(placement)) => return Ok(placement),
            // Every fitting node is locked by another allocator for a moment: try again soon
            // rather than report "no capacity" while capacity exists.
            Ok(Attempt::CandidatesBusy) => {
                tokio::time::sleep(std::time::Duration::from_millis(1 + (attempt % 4) as u64))
                    .await;
            }
            // The first allocation of a project in this process: ask IAM for its org (outside
            // any transaction), then go again.
            Ok(Attempt::OrgUnknown(project)) => {
                if let Some(refused) = learn_org(pool, project).await? {
                    return Ok(refused);
                }
            }
            // The unique index refused a GPU another allocator took first, or Postgres broke a
            // lock cycle: neither left anything behind, so try again with fresh data.
            Err(DomainError::Database(sqlx::Error::Database(e)))
                if e.is_unique_violation()
                    || matches!(e.code().as_deref(), Some("40P01" | "40001")) => {}
            Err(e) => return Err(e),
        }
    }
    Err(DomainError::Busy {
        code: "allocation_contention",
        message: format!("could not allocate for instance {instance}: placement stayed contended"),
    })
}

const MAX_ATTEMPTS: u32 = 2000;

enum Attempt {
    Done(Placement),
    CandidatesBusy,
    OrgUnknown(ProjectId),
}

/// The org of each project this process has allocated for, as IAM says (this product stores
/// no org; policy needs it). A project never changes org, so an entry cannot go stale; projects
/// IAM does not know are not cached. Saves IAM's read on every allocation but a project's first.
static ORG_OF: LazyLock<RwLock<HashMap<ProjectId, OrgId>>> = LazyLock::new(Default::default);
/// Past this many projects the cache starts over (a few MiB at most).
const ORG_CACHE_MAX: usize = 100_000;

fn cached_org(project: ProjectId) -> Option<OrgId> {
    ORG_OF
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&project)
        .copied()
}

/// The org of `project`, from the cache or IAM.
pub(crate) async fn org_of(pool: &PgPool, project: ProjectId) -> DomainResult<OrgId> {
    if let Some(org) = cached_org(project) {
        return Ok(org);
    }
    let org = platform_iam::get_project(pool, project).await?.org_id;
    let mut cache = ORG_OF.write().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= ORG_CACHE_MAX {
        cache.clear();
    }
    cache.insert(project, org);
    Ok(org)
}

/// Reads the project's org through IAM's API into the cache; a project IAM does not know is a
/// refusal.
async fn learn_org(pool: &PgPool, project: ProjectId) -> DomainResult<Option<Placement>> {
    match platform_iam::get_project(pool, project).await {
        Ok(p) => {
            let mut cache = ORG_OF.write().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= ORG_CACHE_MAX {
                cache.clear();
            }
            cache.insert(project, p.org_id);
            Ok(None)
        }
        Err(e @ DomainError::NotFound { .. }) => Ok(Some(Placement::Refused {
            code: e.code().to_string(),
            reason: e.to_string(),
        })),
        Err(e) => Err(e),
    }
}

/// The project an instance belongs to and that project's org.
#[derive(Debug, Clone, Copy)]
struct Owner {
    org: OrgId,
    project: ProjectId,
}

/// Billing's and policy's answer for `gpu_count` GPUs of `sku` for the owner's project, inside the
/// allocation transaction `tx` (whose instance row is locked): `Some(refusal)`, or `None` to go on.
///
/// Policy: one read when the project has no quota. With a quota: the per-project lock, then the
/// GPUs the project holds counted (a fresh statement after the lock, so it sees every allocation
/// committed by the allocator that held the lock before), then admission, which reads the
/// entitlement again under the lock. A quota set while an unlocked allocation of the same
/// project is in flight does not apply to that allocation: the same as if it had committed just
/// before the change (a quota never takes GPUs away).
async fn admission(
    tx: &mut Transaction<'_, Postgres>,
    owner: Owner,
    instance: InstanceId,
    sku: &str,
    gpu_count: i32,
) -> DomainResult<Option<Placement>> {
    // Billing first: an org out of credit, over its spend limit or delinquent launches nothing
    // (one read of its account row).
    let decision = match platform_billing::account::admit(tx, owner.org).await {
        Ok(()) => project_admission(tx, owner, instance, sku, gpu_count).await,
        refused => refused,
    };
    match decision {
        Ok(()) => Ok(None),
        // Billing or policy said no; anything else (the database) is worth a retry and
        // propagates.
        Err(e @ (DomainError::Invalid { .. } | DomainError::Conflict { .. })) => {
            Ok(Some(Placement::Refused {
                code: e.code().to_string(),
                reason: e.to_string(),
            }))
        }
        Err(e) => Err(e),
    }
}

/// Policy's decision on the project's entitlement and quota.
async fn project_admission(
    tx: &mut Transaction<'_, Postgres>,
    owner: Owner,
    instance: InstanceId,
    sku: &str,
    gpu_count: i32,
) -> DomainResult<()> {
    let entitlement = platform_policy::entitlement_on(tx, owner.org, owner.project).await?;
    if entitlement.project_gpu_quota.is_none() {
        entitlement.admit(owner.project, sku, gpu_count, 0)
    } else {
        platform_policy::lock_project_allocations(tx, owner.project).await?;
        let in_use = gpus_held(tx, owner.project, instance).await?;
        platform_policy::admit(tx, owner.org, owner.project, sku, gpu_count, in_use).await
    }
}

/// The GPUs `project` holds now (live allocations of its instances, fenced ones included),
/// other than `instance`'s. Walks the project's instance ids on `instances_project_created` and
/// their live allocations on `allocations_live_by_instance`.
async fn gpus_held(
    tx: &mut Transaction<'_, Postgres>,
    project: ProjectId,
    instance: InstanceId,
) -> DomainResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM gpuaas.allocations a JOIN gpuaas.instances i ON i.id = a.instance_id
         WHERE i.project_id = $1 AND a.released_at IS NULL AND a.instance_id <> $2",
    )
    .bind(project.uuid())
    .bind(instance.uuid())
    .fetch_one(&mut **tx)
    .await?)
}

async fn try_allocate(pool: &PgPool, instance: InstanceId) -> DomainResult<Attempt> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, Uuid, String, String, i32)> = sqlx::query_as(
        "SELECT i.state, i.project_id, s.id, s.gpu_model, i.gpu_count
         FROM gpuaas.instances i JOIN gpuaas.skus s ON s.id = i.sku_id
         WHERE i.id = $1 FOR UPDATE OF i",
    )
    .bind(instance.uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((state, project, sku, gpu_model, gpu_count)) = row else {
        return Err(DomainError::not_found(
            "instance_not_found",
            format!("instance {instance} not found"),
        ));
    };
    match crate::InstanceState::parse(&state) {
        Some(crate::InstanceState::Pending | crate::InstanceState::Provisioning) => {}
        other => {
            let state = other.unwrap_or(crate::InstanceState::Failed);
            return Ok(Attempt::Done(Placement::NotWanted { state }));
        }
    }
    if let Some(existing) = live_allocation(&mut tx, instance).await? {
        tx.commit().await?;
        return Ok(Attempt::Done(Placement::Placed(existing)));
    }
    let project = ProjectId::from(project);
    let Some(org) = cached_org(project) else {
        tx.rollback().await?;
        return Ok(Attempt::OrgUnknown(project));
    };
    let owner = Owner { org, project };
    if let Some(refused) = admission(&mut tx, owner, instance, &sku, gpu_count).await? {
        tx.rollback().await?;
        return Ok(Attempt::Done(refused));
    }
    // Lock the best-fit node, skipping nodes other allocators hold, so concurrent allocators
    // spread over the fleet instead of queueing behind one row.
    let Some(node) = lock_best_node(&mut tx, &gpu_model, gpu_count).await? else {
        let busy = any_fitting_node(&mut tx, &gpu_model, gpu_count).await?;
        tx.rollback().await?;
        if busy {
            return Ok(Attempt::CandidatesBusy);
        }
        let explanation = explain_no_capacity(pool, &gpu_model, gpu_count).await?;
        return Ok(Attempt::Done(Placement::NoCapacity { explanation }));
    };
    // A fresh statement, so its snapshot sees every allocation committed before the lock.
    let picked = pick_and_insert(&mut tx, node, gpu_count, instance).await?;
    if picked.len() != gpu_count as usize {
        tracing::warn!(%instance, %node, "placement counter was stale; nothing allocated");
        tx.rollback().await?;
        let explanation = explain_no_capacity(pool, &gpu_model, gpu_count).await?;
        return Ok(Attempt::Done(Placement::NoCapacity { explanation }));
    }
    let node_id = NodeId::from(picked[0].0);
    let allocation = Allocation {
        instance_id: instance,
        node_id,
        node_name: picked[0].1.clone(),
        gpu_indices: picked.iter().map(|p| p.2).collect(),
        gpu_uuids: picked.iter().map(|p| p.3.clone()).collect(),
    };
    sqlx::query("UPDATE gpuaas.nodes SET free_gpus = free_gpus - $2 WHERE id = $1")
        .bind(node_id.uuid())
        .bind(gpu_count)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE gpuaas.instances SET state = 'provisioning', node_id = $2, gpu_indices = $3,
             status_message = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(instance.uuid())
    .bind(node_id.uuid())
    .bind(&allocation.gpu_indices)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Attempt::Done(Placement::Placed(allocation)))
}

/// Locks the fullest ready node of the model that still has `gpu_count` free GPUs, skipping
/// nodes locked by other allocators. The row is re-checked once locked.
async fn lock_best_node(
    tx: &mut Transaction<'_, Postgres>,
    gpu_model: &str,
    gpu_count: i32,
) -> DomainResult<Option<NodeId>> {
    let node: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM gpuaas.nodes
         WHERE state = 'ready' AND gpu_model = $1 AND free_gpus >= $2
         ORDER BY free_gpus, id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(gpu_model)
    .bind(gpu_count)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(node.map(NodeId::from))
}

/// Whether any node fits, locked or not: one step down `nodes_placement` (an `EXISTS` here
/// becomes a full scan once Postgres switches the prepared statement to a generic plan).
async fn any_fitting_node(
    tx: &mut Transaction<'_, Postgres>,
    gpu_model: &str,
    gpu_count: i32,
) -> DomainResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(max(free_gpus), 0) >= $2 FROM gpuaas.nodes WHERE state = 'ready' AND gpu_model = $1",
    )
    .bind(gpu_model)
    .bind(gpu_count)
    .fetch_one(&mut **tx)
    .await?)
}

/// Takes the lowest-numbered free healthy GPUs of a locked node and records their allocation.
async fn pick_and_insert(
    tx: &mut Transaction<'_, Postgres>,
    node: NodeId,
    gpu_count: i32,
    instance: InstanceId,
) -> DomainResult<Vec<(Uuid, String, i32, String)>> {
    Ok(sqlx::query_as(
        "WITH picked AS (
             SELECT g.id, g.idx, g.uuid, g.node_id, n.name
             FROM gpuaas.gpus g JOIN gpuaas.nodes n ON n.id = g.node_id
             WHERE g.node_id = $1 AND g.health = 'healthy'
               AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a WHERE a.gpu_id = g.id AND a.released_at IS NULL)
             ORDER BY g.idx LIMIT $2
         ), inserted AS (
             INSERT INTO gpuaas.allocations (instance_id, gpu_id, node_id, gpu_index)
             SELECT $3, id, node_id, idx FROM picked
             RETURNING gpu_id
         )
         SELECT p.node_id, p.name, p.idx, p.uuid FROM picked p JOIN inserted i ON i.gpu_id = p.id ORDER BY p.idx",
    )
    .bind(node.uuid())
    .bind(gpu_count)
    .bind(instance.uuid())
    .fetch_all(&mut **tx)
    .await?)
}

async fn live_allocation(
    tx: &mut Transaction<'_, Postgres>,
    instance: InstanceId,
) -> DomainResult<Option<Allocation>> {
    let rows: Vec<(Uuid, String, i32, String)> = sqlx::query_as(
        "SELECT a.node_id, n.name, a.gpu_index, g.uuid
         FROM gpuaas.allocations a
         JOIN gpuaas.nodes n ON n.id = a.node_id
         JOIN gpuaas.gpus g ON g.id = a.gpu_id
         WHERE a.instance_id = $1 AND a.released_at IS NULL ORDER BY a.gpu_index",
    )
    .bind(instance.uuid())
    .fetch_all(&mut **tx)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(Allocation {
        instance_id: instance,
        node_id: first.0.into(),
        node_name: first.1.clone(),
        gpu_indices: rows.iter().map(|r| r.2).collect(),
        gpu_uuids: rows.iter().map(|r| r.3.clone()).collect(),
    }))
}

/// Releases every live allocation of an instance. Idempotent: returns how many GPUs it freed now
/// (0 when a previous run already released them).
pub async fn release(pool: &PgPool, instance: InstanceId) -> DomainResult<i64> {
    let mut tx = pool.begin().await?;
    lock_nodes_holding(&mut tx, instance).await?;
    let freed = release_locked(&mut tx, instance, None).await?;
    tx.commit().await?;
    Ok(freed)
}

/// Locks, in id order, the nodes where `instance` holds GPUs: a health report (which takes the
/// same lock) then cannot change a GPU's health between our reading it and counting it.
pub(crate) async fn lock_nodes_holding(
    tx: &mut Transaction<'_, Postgres>,
    instance: InstanceId,
) -> DomainResult<()> {
    sqlx::query(
        "SELECT 1 FROM gpuaas.nodes WHERE id IN (
             SELECT node_id FROM gpuaas.allocations WHERE instance_id = $1 AND released_at IS NULL)
         ORDER BY id FOR UPDATE",
    )
    .bind(instance.uuid())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Releases the instance's live allocations (on `node` only, when given) and gives their
/// healthy GPUs back to the placement counter. The caller holds the nodes' locks.
pub(crate) async fn release_locked(
    tx: &mut Transaction<'_, Postgres>,
    instance: InstanceId,
    node: Option<NodeId>,
) -> DomainResult<i64> {
    let freed: Vec<(i64,)> = sqlx::query_as(
        "WITH released AS (
             UPDATE gpuaas.allocations SET released_at = now()
             WHERE instance_id = $1 AND released_at IS NULL AND ($2::uuid IS NULL OR node_id = $2)
             RETURNING node_id, gpu_id
         ), per_node AS (
             SELECT r.node_id, count(*) AS gpus,
                    count(*) FILTER (WHERE g.health = 'healthy') AS healthy
             FROM released r JOIN gpuaas.gpus g ON g.id = r.gpu_id GROUP BY r.node_id
         ), bumped AS (
             UPDATE gpuaas.nodes n SET free_gpus = n.free_gpus + p.healthy
             FROM per_node p WHERE n.id = p.node_id RETURNING n.id
         )
         SELECT gpus FROM per_node",
    )
    .bind(instance.uuid())
    .bind(node.map(NodeId::uuid))
    .fetch_all(&mut **tx)
    .await?;
    Ok(freed.iter().map(|(n,)| n).sum())
}

/// Why nothing fits: per reason (full, cordoned, draining, unhealthy GPUs, down, another GPU
/// model), the number of nodes and the first few of them by name, so the text stays short on a
/// fleet of thousands.
pub async fn explain_no_capacity(
    pool: &PgPool,
    gpu_model: &str,
    gpu_count: i32,
) -> DomainResult<String> {
    let rows: Vec<(String, i64, Vec<String>)> = sqlx::query_as(
        "WITH unhealthy_free AS (
             -- Few rows: a partial index holds only unhealthy GPUs.
             SELECT g.node_id, count(*) AS n FROM gpuaas.gpus g
             WHERE g.health <> 'healthy'
               AND NOT EXISTS (SELECT 1 FROM gpuaas.allocations a
                               WHERE a.gpu_id = g.id AND a.released_at IS NULL)
             GROUP BY g.node_id
         ), judged AS (
             SELECT n.id,
                    CASE
                        WHEN n.gpu_model IS DISTINCT FROM $1 THEN 'another GPU model'
                        WHEN n.state = 'cordoned' THEN 'cordoned'
                        WHEN n.state <> 'ready' THEN n.state
                        WHEN n.free_gpus + coalesce(u.n, 0) >= $2 THEN 'unhealthy GPUs'
                        ELSE 'full'
                    END AS reason
             FROM gpuaas.nodes n LEFT JOIN unhealthy_free u ON u.node_id = n.id
             WHERE n.state <> 'decommissioned'
         ), grouped AS (
             -- Counting is cheap; words are built for the three examples per reason only.
             SELECT reason, count(*) AS nodes, (array_agg(id))[1:3] AS examples
             FROM judged GROUP BY reason
         )
         SELECT g.reason, g.nodes, ARRAY(
                    SELECT CASE
                               WHEN n.gpu_model IS DISTINCT FROM $1 THEN n.name || ' has ' || coalesce(n.gpu_model, 'no GPUs')
                               WHEN n.state = 'cordoned' THEN n.name || ' by ' || coalesce(n.cordon_reason, 'operator')
                               WHEN n.state = 'ready' THEN n.name || ': ' || n.free_gpus || ' free'
                               ELSE n.name
                           END
                    FROM gpuaas.nodes n WHERE n.id = ANY(g.examples) ORDER BY n.name)
         FROM grouped g ORDER BY g.nodes DESC, g.reason",
    )
    .bind(gpu_model)
    .bind(gpu_count)
    .fetch_all(pool)
    .await?;
    let parts: Vec<String> = rows
        .into_iter()
        .map(|(reason, nodes, examples)| {
            let more = if nodes > examples.len() as i64 {
                ", …"
            } else {
                ""
            };
            format!("{reason}: {nodes} node(s) ({}{more})", examples.join(", "))
        })
        .collect();
    let summary = if parts.is_empty() {
        "there are no nodes".to_string()
    } else {
        parts.join("; ")
    };
    Ok(format!(
        "no node has {gpu_count} free {gpu_model} GPU(s): {summary}"
    ))
}
