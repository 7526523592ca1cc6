//! Instances: a request for N GPUs of one SKU running a command, and its lifecycle.
//!
//! State changes are compare-and-set on `state`, so an activity run twice, or two workflows
//! racing (provision vs. terminate), can never move an instance backwards.

use crate::sku;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared_ids::{InstanceId, NodeId, ProjectId};
use shared_kernel::{DomainError, DomainResult, OperationContext};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Pending,
    Provisioning,
    Running,
    Terminating,
    Terminated,
    Failed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "provisioning" => Self::Provisioning,
            "running" => Self::Running,
            "terminating" => Self::Terminating,
            "terminated" => Self::Terminated,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Terminated | Self::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    InsufficientCapacity,
    NodeUnreachable,
    StartFailed,
    Timeout,
    /// The instance was running, then its process exited or its node forgot it.
    WorkloadVanished,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientCapacity => "insufficient_capacity",
            Self::NodeUnreachable => "node_unreachable",
            Self::StartFailed => "start_failed",
            Self::Timeout => "timeout",
            Self::WorkloadVanished => "workload_vanished",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "insufficient_capacity" => Self::InsufficientCapacity,
            "node_unreachable" => Self::NodeUnreachable,
            "start_failed" => Self::StartFailed,
            "timeout" => Self::Timeout,
            "workload_vanished" => Self::WorkloadVanished,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: InstanceId,
    pub project_id: ProjectId,
    pub name: String,
    pub sku_id: String,
    pub gpu_count: i32,
    pub command: String,
    pub capacity_timeout_s: i32,
    pub state: InstanceState,
    pub failure_reason: Option<FailureReason>,
    pub status_message: Option<String>,
    pub node_id: Option<NodeId>,
    pub gpu_indices: Vec<i32>,
    /// What the instance's workflow does now, as it reported it (opaque text here: the step
    /// names are the workflow's vocabulary); `queued` until a workflow took its first step.
    pub current_step: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub running_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct InstanceRow {
    id: Uuid,
    project_id: Uuid,
    name: String,
    sku_id: String,
    gpu_count: i32,
    command: String,
    capacity_timeout_s: i32,
    state: String,
    failure_reason: Option<String>,
    status_message: Option<String>,
    node_id: Option<Uuid>,
    gpu_indices: Vec<i32>,
    current_step: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    running_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// Selected only where an Idempotency-Key retry is checked.
    #[sqlx(default)]
    request_hash: Option<String>,
}

impl From<InstanceRow> for Instance {
    fn from(r: InstanceRow) -> Self {
        Self {
            id: r.id.into(),
            project_id: r.project_id.into(),
            name: r.name,
            sku_id: r.sku_id,
            gpu_count: r.gpu_count,
            command: r.command,
            capacity_timeout_s: r.capacity_timeout_s,
            state: InstanceState::parse(&r.state).unwrap_or(InstanceState::Failed),
            failure_reason: r.failure_reason.as_deref().and_then(FailureReason::parse),
            status_message: r.status_message,
            node_id: r.node_id.map(NodeId::from),
            gpu_indices: r.gpu_indices,
            current_step: r.current_step,
            created_at: r.created_at,
            updated_at: r.updated_at,
            running_at: r.running_at,
            ended_at: r.ended_at,
        }
    }
}

const COLUMNS: &str = "id, project_id, name, sku_id, gpu_count, command, capacity_timeout_s, state, \
    failure_reason, status_message, node_id, gpu_indices, current_step, created_at, \
    updated_at, running_at, ended_at";

/// Gets an instance and, while it waits on its node, says for what and for how long. The text is
/// computed at read time, so it stays current without the workflow writing every second.
/// Operators read node names ("waiting 42s for the agent of node X (node X is down …)");
/// tenants read about capacity and "the host", never a node's name or id.
pub async fn get_explained(
    pool: &PgPool,
    ctx: &OperationContext,
    id: InstanceId,
) -> DomainResult<Instance> {
    let instance = get(pool, ctx, id).await?;
    let on_node = matches!(
        instance.state,
        InstanceState::Provisioning | InstanceState::Terminating
    );
    let node = instance.node_id;
    // What the caller may read first; then the wait, worded for them.
    let mut instance = for_caller(ctx, instance);
    if let (Some(node), true) = (node, on_node) {
        explain_wait(pool, &mut instance, node, ctx.operator).await?;
    }
    Ok(instance)
}

async fn explain_wait(
    pool: &PgPool,
    instance: &mut Instance,
    node: NodeId,
    name_nodes: bool,
) -> DomainResult<()> {
    let row: Option<(String, String, f64, Option<f64>)> = sqlx::query_as(
        "SELECT n.name, n.state, extract(epoch FROM now() - i.updated_at)::float8,
                extract(epoch FROM now() - n.last_seen_at)::float8
         FROM gpuaas.nodes n JOIN gpuaas.instances i ON i.id = $2 WHERE n.id = $1",
    )
    .bind(node.uuid())
    .bind(instance.id.uuid())
    .fetch_optional(pool)
    .await?;
    let Some((name, state, waiting_s, seen_s)) = row else {
        return Ok(());
    };
    let what = match instance.state {
        InstanceState::Terminating => "to stop the workload",
        _ => "to start the workload",
    };
    let host = if name_nodes {
        format!("node {name}")
    } else {
        "the host".to_string()
    };
    let node_note = match (state.as_str(), seen_s) {
        ("down", _) => format!("{host} is down: its agent stopped answering"),
        (s, Some(seen)) => format!("{host} is {s}, its agent last answered {seen:.0}s ago"),
        (s, None) => format!("{host} is {s}"),
    };
    let agent = if name_nodes {
        format!("the agent of node {name}")
    } else {
        "the host's agent".to_string()
    };
    let detail = format!("waiting {waiting_s:.0}s for {agent} {what} ({node_note})");
    let existing = instance.status_message.take().filter(|_| name_nodes);
    instance.status_message = Some(match existing {
        Some(existing) => format!("{existing}; {detail}"),
        None => detail,
    });
    Ok(())
}

/// What a caller may read of an instance: operators everything; tenants no node id, and status
/// texts written for operators (which name nodes) replaced by ones about capacity and the host.
pub fn for_caller(ctx: &OperationContext, mut instance: Instance) -> Instance {
    if ctx.operator {
        return instance;
    }
    instance.node_id = None;
    instance.status_message = tenant_message(&instance);
    instance
}

fn tenant_message(i: &Instance) -> Option<String> {
    use InstanceState::*;
    // The policy's refusals speak of the tenant's own quota and plan: theirs to read.
    let policy = i.status_message.as_ref().filter(|m| {
        m.starts_with(platform_policy::QUOTA_EXCEEDED)
            || m.starts_with(platform_policy::SKU_NOT_ENTITLED)
    });
    if let (Failed, Some(message)) = (i.state, policy) {
        return Some(message.clone());
    }
    match (i.state, i.failure_reason) {
        (Pending, _) => i.status_message.as_ref().map(|_| {
            format!(
                "waiting for capacity: no host has {} free GPUs of this SKU right now",
                i.gpu_count
            )
        }),
        (Failed, Some(FailureReason::InsufficientCapacity)) => {
            Some("no capacity for this SKU and GPU count within the capacity timeout".into())
        }
        (Failed, Some(FailureReason::NodeUnreachable)) => Some("the host stopped answering".into()),
        (Failed, Some(FailureReason::StartFailed)) => i.status_message.as_ref().map(|m| {
            format!(
                "the workload failed to start: {}",
                m.rsplit(": ").next().unwrap_or(m)
            )
        }),
        (Failed, Some(FailureReason::Timeout)) => Some("the host did not confirm in time".into()),
        (Failed, Some(FailureReason::WorkloadVanished)) => {
            Some("the workload stopped: its process exited or its host lost it".into())
        }
        _ => None,
    }
}

/// Instances still in flight (`pending`, `provisioning`, `terminating`) that have not changed for
/// `older_than`, oldest first, at most `limit`: the reconciler checks that a workflow still
/// carries each one (an API that died or lost Temporal between recording a change and starting
/// its workflow leaves one nobody carries). A stuck instance never changes, so it stays at the
/// front of the batch; healthy ones change or finish.
pub async fn unfinished(
    pool: &PgPool,
    older_than: std::time::Duration,
    limit: i64,
) -> DomainResult<Vec<Instance>> {
    let rows: Vec<InstanceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM gpuaas.instances
         WHERE state IN ('pending', 'provisioning', 'terminating')
           AND updated_at < now() - make_interval(secs => $1)
         ORDER BY updated_at LIMIT $2"
    ))
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The longest a request may wait for capacity.
pub const MAX_CAPACITY_TIMEOUT_S: i32 = 24 * 3600;
pub const DEFAULT_COMMAND: &str = "sleep infinity";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewInstance {
    pub project_id: ProjectId,
    pub name: Option<String>,
    pub sku: String,
    pub gpu_count: i32,
    pub command: Option<String>,
    pub capacity_timeout_s: Option<i32>,
}

impl NewInstance {
    /// Fingerprint of the request, to tell a retry (same body) from a reused key (other body).
    fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("NewInstance serialises");
        hex::encode(Sha256::digest(canonical))
    }

    fn validate(&self) -> DomainResult<()> {
        if let Some(name) = &self.name {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-');
            if !ok {
                return Err(DomainError::invalid(
                    "invalid_name",
                    "name must be 1-63 characters of lowercase letters, digits and '-', not starting with '-'",
                ));
            }
        }
        // Control characters other than tab and newline (NUL above all: Postgres refuses it).
        if let Some(cmd) = &self.command
            && (cmd.trim().is_empty()
                || cmd.chars().count() > 4096
                || cmd
                    .chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')))
        {
            return Err(DomainError::invalid(
                "invalid_command",
                "command must be 1-4096 characters without control characters other than tab and newline",
            ));
        }
        if let Some(t) = self.capacity_timeout_s
            && !(0..=MAX_CAPACITY_TIMEOUT_S).contains(&t)
        {
            return Err(DomainError::invalid(
                "invalid_capacity_timeout",
                format!("capacity_timeout must be between 0 and {MAX_CAPACITY_TIMEOUT_S} seconds"),
            ));
        }
        Ok(())
    }
}

/// Result of [`create`]: the instance, and whether this call created it (false for a retry that
/// matched an earlier request with the same idempotency key).
pub struct Created {
    pub instance: Instance,
    pub created: bool,
}

/// Validates and records a new `pending` instance. With an idempotency key, the same key and body
/// return the earlier instance; the same key with another body is a conflict. Nothing is written
/// when validation fails.
pub async fn create(
    pool: &PgPool,
    ctx: &OperationContext,
    req: &NewInstance,
    idempotency_key: Option<&str>,
) -> DomainResult<Created> {
    if visible_project(ctx)?.is_some_and(|p| p != req.project_id) {
        return Err(DomainError::invalid(
            "project_mismatch",
            "an instance is created in the project the request acts in",
        ));
    }
    req.validate()?;
    let sku = sku::get(pool, &req.sku).await?;
    sku.check_gpu_count(req.gpu_count)?;
    // Billing refuses now what allocation would refuse later: an org out of credit, over its
    // spend limit or delinquent (allocation asks again, inside its transaction).
    let org = crate::placement::org_of(pool, req.project_id).await?;
    platform_billing::account::admit(&mut *pool.acquire().await?, org).await?;
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > 255)
    {
        return Err(DomainError::invalid(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 characters",
        ));
    }
    let id = InstanceId::new();
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", sku.id, &id.uuid().simple().to_string()[24..]));
    let fingerprint = req.fingerprint();
    let inserted: Option<InstanceRow> = sqlx::query_as(&format!(
        "INSERT INTO gpuaas.instances (id, project_id, name, sku_id, gpu_count, command, capacity_timeout_s,
             state, current_step, idempotency_key, request_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 'queued', $8, $9)
         ON CONFLICT (project_id, idempotency_key) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(id.uuid())
    .bind(req.project_id.uuid())
    .bind(&name)
    .bind(&sku.id)
    .bind(req.gpu_count)
    .bind(req.command.as_deref().unwrap_or(DEFAULT_COMMAND))
    .bind(req.capacity_timeout_s.unwrap_or(0))
    .bind(idempotency_key)
    .bind(&fingerprint)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = inserted {
        return Ok(Created {
            instance: row.into(),
            created: true,
        });
    }
    // The key was used before: same body is a retry, another body a conflict.
    let earlier: InstanceRow = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, request_hash FROM gpuaas.instances WHERE project_id = $1 AND idempotency_key = $2"
    ))
    .bind(req.project_id.uuid())
    .bind(idempotency_key)
    .fetch_one(pool)
    .await?;
    if earlier.request_hash.as_deref() != Some(fingerprint.as_str()) {
        return Err(DomainError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
        ));
    }
    Ok(Created {
        instance: earlier.into(),
        created: false,
    })
}

/// The project a context may see instances of: its own, or every project for the system.
fn visible_project(ctx: &OperationContext) -> DomainResult<Option<ProjectId>> {
    if ctx.is_system() {
        Ok(None)
    } else {
        ctx.require_project().map(Some)
    }
}

/// An instance the context may see: one of its project's (the system sees every project's).
/// Another project's instance is "not found", exactly like one that does not exist.
pub async fn get(pool: &PgPool, ctx: &OperationContext, id: InstanceId) -> DomainResult<Instance> {
    let project = visible_project(ctx)?;
    sqlx::query_as::<_, InstanceRow>(&format!(
        "SELECT {COLUMNS} FROM gpuaas.instances WHERE id = $1 AND ($2::uuid IS NULL OR project_id = $2)"
    ))
    .bind(id.uuid())
    .bind(project.map(ProjectId::uuid))
    .fetch_optional(pool)
    .await?
    .map(Into::into)
    .ok_or_else(instance_not_found)
}

/// The same answer for an instance that does not exist and one the caller may not see: no id
/// in the text, so the two bodies are identical.
/// The instance's command, for the step that seals it for its node: the command never travels
/// through a workflow's own input or history in plaintext.
pub async fn command_of(pool: &PgPool, id: InstanceId) -> DomainResult<String> {
    Ok(get_system(pool, id).await?.command)
}

pub fn instance_not_found() -> DomainError {
    DomainError::not_found("instance_not_found", "instance not found")
}

async fn get_system(pool: &PgPool, id: InstanceId) -> DomainResult<Instance> {
    get(pool, &OperationContext::system("gpuaas"), id).await
}

/// One page of a project's instances, newest first. `after` is the last id of the previous page
/// (ids are UUIDv7, so id order is creation order).
pub async fn list(
    pool: &PgPool,
    ctx: &OperationContext,
    limit: i64,
    after: Option<InstanceId>,
) -> DomainResult<Vec<Instance>> {
    let project = ctx.require_project()?;
    let rows: Vec<InstanceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM gpuaas.instances
         WHERE project_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(project.uuid())
    .bind(after.map(InstanceId::uuid))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// What a state change tells billing.
#[derive(sqlx::FromRow)]
struct UsageFacts {
    project_id: Uuid,
    sku_id: String,
    gpu_count: i32,
    running_at: DateTime<Utc>,
    at: DateTime<Utc>,
}

async fn record_usage(
    tx: &mut sqlx::PgConnection,
    id: InstanceId,
    to: InstanceState,
    org: Option<shared_ids::OrgId>,
    facts: &UsageFacts,
) -> DomainResult<()> {
    use platform_billing::usage;
    match (to, org) {
        (InstanceState::Running, Some(org)) => {
            let span = usage::SpanStart {
                id: usage_span_id(id),
                org,
                project: Some(ProjectId::from(facts.project_id)),
                meter: usage::GPU_SECONDS.into(),
                sku: facts.sku_id.clone(),
                units: facts.gpu_count,
                started_at: facts.running_at,
            };
            usage::open_span(tx, &span).await?;
        }
        _ if to.is_terminal() => close_usage(tx, id, facts.at).await?,
        _ => {}
    }
    Ok(())
}

/// Ends an instance's usage at `at`: the last moment its agent confirmed it running. A no-op for
/// an instance that never ran or whose usage already ended.
pub(crate) async fn close_usage(
    tx: &mut sqlx::PgConnection,
    id: InstanceId,
    at: DateTime<Utc>,
) -> DomainResult<()> {
    platform_billing::usage::close_span(tx, &usage_span_id(id), at).await?;
    Ok(())
}

/// What a compare-and-set state change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transition {
    /// The state changed now.
    Applied,
    /// The instance was already in the target state (an activity retried).
    AlreadyThere,
    /// The instance is in another state that forbids the change; it was left alone.
    Refused(InstanceState),
}

/// Moves `id` to `to` if it is in one of `from`. Columns in `set` are extra assignments.
///
/// Usage follows the state in the same transaction (ADR 0007): reaching `running` opens the
/// instance's usage span in billing, leaving it closes the span now. An instance that never ran
/// has no span, so no charge.
async fn transition(
    pool: &PgPool,
    id: InstanceId,
    from: &[InstanceState],
    to: InstanceState,
    set: &str,
    reason: Option<FailureReason>,
    message: Option<&str>,
) -> DomainResult<Transition> {
    // IAM's answer is read before the transaction opens (it is cached after the first).
    let org = match to {
        InstanceState::Running => {
            let project = get_system(pool, id).await?.project_id;
            Some(crate::placement::org_of(pool, project).await?)
        }
        _ => None,
    };
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let mut tx = pool.begin().await?;
    let applied: Option<UsageFacts> = sqlx::query_as(&format!(
        "UPDATE gpuaas.instances SET state = $3, updated_at = now() {set}
         WHERE id = $1 AND state = ANY($2)
         RETURNING project_id, sku_id, gpu_count, coalesce(running_at, now()) AS running_at, now() AS at"
    ))
    .bind(id.uuid())
    .bind(&from)
    .bind(to.as_str())
    .bind(reason.map(FailureReason::as_str))
    .bind(message)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(facts) = applied {
        record_usage(&mut tx, id, to, org, &facts).await?;
        tx.commit().await?;
        return Ok(Transition::Applied);
    }
    drop(tx);
    let current = get_system(pool, id).await?.state;
    Ok(if current == to {
        Transition::AlreadyThere
    } else {
        Transition::Refused(current)
    })
}

/// Records the provisioning workflow's current step and a human explanation (why it waits), for
/// the API. Only while the instance is being provisioned: a deletion (`terminating`) that raced
/// the workflow keeps its own step.
pub async fn set_step(
    pool: &PgPool,
    id: InstanceId,
    step: &str,
    message: Option<&str>,
) -> DomainResult<()> {
    sqlx::query(
        "UPDATE gpuaas.instances SET current_step = $2, status_message = $3, updated_at = now()
         WHERE id = $1 AND state IN ('pending', 'provisioning')",
    )
    .bind(id.uuid())
    .bind(step)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(())
}

/// The id of an instance's usage span in billing (`instance/<id>`): one span per instance,
/// from agent-confirmed running to agent-confirmed stopped.
pub fn usage_span_id(id: InstanceId) -> String {
    format!("instance/{id}")
}

pub async fn mark_running(pool: &PgPool, id: InstanceId) -> DomainResult<Transition> {
    use InstanceState::*;
    let set = ", running_at = now(), current_step = 'running', status_message = NULL";
    transition(pool, id, &[Provisioning], Running, set, None, None).await
}

pub async fn mark_failed(
    pool: &PgPool,
    id: InstanceId,
    reason: FailureReason,
    message: &str,
) -> DomainResult<Transition> {
    use InstanceState::*;
    let set =
        ", failure_reason = $4, status_message = $5, ended_at = now(), current_step = 'failed'";
    // `Running` too: the provisioning workflow owns the instance until it returns, and a
    // failure it decides after `mark_running` committed (its completion lost) must still win.
    transition(
        pool,
        id,
        &[Pending, Provisioning, Running],
        Failed,
        set,
        Some(reason),
        Some(message),
    )
    .await
}

/// Starts termination. Returns the state the instance was in, which tells the caller what to
/// undo: a `running` one needs TerminateInstance, a `pending`/`provisioning` one needs its
/// provisioning cancelled, a terminal one needs nothing.
pub async fn begin_termination(
    pool: &PgPool,
    ctx: &OperationContext,
    id: InstanceId,
) -> DomainResult<(InstanceState, Instance)> {
    let project = ctx.require_project()?;
    let previous: Option<(String,)> = sqlx::query_as(
        "WITH old AS (SELECT state FROM gpuaas.instances WHERE id = $1 AND project_id = $2 FOR UPDATE)
         UPDATE gpuaas.instances i SET state = 'terminating', current_step = 'terminating', updated_at = now()
         FROM old WHERE i.id = $1 AND old.state IN ('pending', 'provisioning', 'running')
         RETURNING old.state",
    )
    .bind(id.uuid())
    .bind(project.uuid())
    .fetch_optional(pool)
    .await?;
    let instance = get(pool, ctx, id).await?;
    let previous = previous
        .and_then(|(s,)| InstanceState::parse(&s))
        .unwrap_or(instance.state);
    Ok((previous, instance))
}

/// Ends termination; `message` says anything the user should know (e.g. GPUs still fenced).
pub async fn mark_terminated(
    pool: &PgPool,
    id: InstanceId,
    message: Option<&str>,
) -> DomainResult<Transition> {
    use InstanceState::*;
    let set = ", ended_at = now(), current_step = 'terminated', status_message = $5";
    transition(pool, id, &[Terminating], Terminated, set, None, message).await
}

/// The running instances of `projects` (credit enforcement stops them through
/// `TerminateInstance`), with their project, oldest first.
pub async fn running_in_projects(
    pool: &PgPool,
    projects: &[ProjectId],
) -> DomainResult<Vec<(InstanceId, ProjectId)>> {
    let ids: Vec<Uuid> = projects.iter().map(|p| p.uuid()).collect();
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, project_id FROM gpuaas.instances
         WHERE project_id = ANY($1) AND state = 'running' ORDER BY created_at, id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, project)| (id.into(), project.into()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_differs_by_body_and_is_stable() {
        let a = NewInstance {
            project_id: ProjectId::new(),
            name: None,
            sku: "h100-80gb-sxm".into(),
            gpu_count: 1,
            command: None,
            capacity_timeout_s: None,
        };
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.gpu_count = 2;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn validation_rejects_bad_names_and_timeouts() {
        let ok = NewInstance {
            project_id: ProjectId::new(),
            name: Some("train-1".into()),
            sku: "x".into(),
            gpu_count: 1,
            command: Some("python train.py".into()),
            capacity_timeout_s: Some(60),
        };
        assert!(ok.validate().is_ok());
        let bad_name = NewInstance {
            name: Some("Bad Name".into()),
            ..ok.clone()
        };
        assert_eq!(bad_name.validate().unwrap_err().code(), "invalid_name");
        let bad_timeout = NewInstance {
            capacity_timeout_s: Some(-1),
            ..ok.clone()
        };
        assert_eq!(
            bad_timeout.validate().unwrap_err().code(),
            "invalid_capacity_timeout"
        );
        let bad_cmd = NewInstance {
            command: Some("  ".into()),
            ..ok.clone()
        };
        assert_eq!(bad_cmd.validate().unwrap_err().code(), "invalid_command");
        let nul = NewInstance {
            command: Some("echo \0".into()),
            ..ok.clone()
        };
        assert_eq!(nul.validate().unwrap_err().code(), "invalid_command");
        let script = NewInstance {
            command: Some("set -e\n\tpython train.py".into()),
            ..ok
        };
        assert!(script.validate().is_ok());
    }
}
