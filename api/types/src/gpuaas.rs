//! Wire types of the gpuaas route family: SKUs, nodes (operators and agents), instances.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId, ProjectId};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sku {
    pub id: String,
    pub gpu_model: String,
    pub display_name: String,
    pub memory_gib: i32,
    pub form_factor: String,
    pub allowed_gpu_counts: Vec<i32>,
    /// Price per GPU-hour in minor units of `currency` (cents for USD), rounded: billing's price
    /// book version in effect now.
    pub price_per_gpu_hour_minor: i64,
    pub currency: String,
    /// The price book version the price comes from; `null` when billing prices no such SKU (the
    /// SKU's list price is shown).
    pub price_version: Option<i32>,
    /// Free GPUs of this SKU right now, fleet-wide.
    pub available_gpus: i64,
    /// The most GPUs one instance of this SKU could get right now (on one host).
    pub max_gpus_now: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gpu {
    pub index: i32,
    pub uuid: String,
    pub model: String,
    pub memory_mib: i64,
    /// `healthy` or `unhealthy` (out of service until healthy for the recovery period).
    pub health: String,
    /// Why an unhealthy GPU is out of service, e.g. `XID 79: GPU has fallen off the bus`.
    pub health_reason: Option<String>,
    pub allocated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    /// `registering`, `ready`, `cordoned`, `draining`, `down` or `decommissioned`.
    pub state: String,
    /// Why a cordoned node is cordoned: `operator`, `gpu_unhealthy` or `drained`.
    pub cordon_reason: Option<String>,
    pub gpu_model: Option<String>,
    pub gpu_count: usize,
    pub free_gpus: i32,
    pub discovery: Option<String>,
    pub agent_version: Option<String>,
    pub registered_at: DateTime<Utc>,
    /// When the node's agent last answered its liveness session.
    pub last_seen_at: Option<DateTime<Utc>>,
    pub down_since: Option<DateTime<Utc>>,
    /// While draining: when the instances still on the node are terminated.
    pub drain_deadline: Option<DateTime<Utc>>,
    pub gpus: Vec<Gpu>,
}

/// A node as `GET /v1/nodes` lists it: counts instead of its GPUs (those are on
/// `GET /v1/nodes/{id}`), so a page stays small however big the hosts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeSummary {
    pub id: NodeId,
    pub name: String,
    pub state: String,
    pub cordon_reason: Option<String>,
    pub gpu_model: Option<String>,
    pub gpu_count: usize,
    pub free_gpus: i32,
    /// GPUs reported unhealthy (out of service).
    pub unhealthy_gpus: usize,
    pub discovery: Option<String>,
    pub agent_version: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub down_since: Option<DateTime<Utc>>,
    pub drain_deadline: Option<DateTime<Utc>>,
}

impl Node {
    /// The node as a list shows it.
    pub fn summary(&self) -> NodeSummary {
        NodeSummary {
            id: self.id,
            name: self.name.clone(),
            state: self.state.clone(),
            cordon_reason: self.cordon_reason.clone(),
            gpu_model: self.gpu_model.clone(),
            gpu_count: self.gpu_count,
            free_gpus: self.free_gpus,
            unhealthy_gpus: self.gpus.iter().filter(|g| g.health != "healthy").count(),
            discovery: self.discovery.clone(),
            agent_version: self.agent_version.clone(),
            registered_at: self.registered_at,
            last_seen_at: self.last_seen_at,
            down_since: self.down_since,
            drain_deadline: self.drain_deadline,
        }
    }
}

/// `POST /v1/nodes/{id}/drain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrainNodeRequest {
    /// Seconds the node's instances get to end on their own before they are terminated
    /// (default 3600, at most 604800).
    pub deadline_seconds: Option<u64>,
}

/// Something that happened to a node: an operator action, an automatic transition, a fix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// e.g. `node.cordoned`, `node.down`, `gpu.unhealthy`, `reconciler.orphan_stopped`.
    pub kind: String,
    /// `operator:<caller>`, `node-lifecycle` or `reconciler`.
    pub actor: String,
    pub instance_id: Option<InstanceId>,
    pub gpu_index: Option<i32>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub id: InstanceId,
    pub project_id: ProjectId,
    pub name: String,
    pub sku: String,
    pub gpu_count: i32,
    pub command: String,
    pub capacity_timeout_seconds: i32,
    /// `pending`, `provisioning`, `running`, `terminating`, `terminated` or `failed`.
    pub state: String,
    /// On `failed`: `insufficient_capacity`, `node_unreachable`, `start_failed`, `timeout` or
    /// `workload_vanished`.
    pub failure_reason: Option<String>,
    /// Why it waits, or why it failed, in words.
    pub status_message: Option<String>,
    pub node_id: Option<NodeId>,
    pub gpu_indices: Vec<i32>,
    pub workflow_id: String,
    pub current_step: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub running_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// What it has cost so far, in minor units of the price book's currency, rounded (half away
    /// from zero). Only `GET /v1/instances/{id}` reads it; `null` elsewhere, and when the
    /// instance never ran (nothing to pay).
    pub cost_so_far_minor: Option<i64>,
    /// The same, exact: a decimal string of minor units.
    pub cost_exact_minor: Option<String>,
}

impl Instance {
    pub fn is_terminal(&self) -> bool {
        self.state == "terminated" || self.state == "failed"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub sku: String,
    pub gpu_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Seconds to wait for capacity when nothing fits now; 0 (the default) fails at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_timeout_seconds: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GpuReport {
    pub index: i32,
    pub uuid: String,
    pub model: String,
    pub memory_mib: i64,
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegisterNodeRequest {
    pub name: String,
    pub agent_version: String,
    /// How the GPUs were found: `nvml`, `nvidia-smi` or `simulated`.
    pub discovery: String,
    pub gpus: Vec<GpuReport>,
    /// The node's Ed25519 public key (32 bytes, base64url), generated on the host: required
    /// when joining with a join token; with the node's credential, a different key rotates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The node's X25519 public key (32 bytes, base64url): commands to the node are sealed for
    /// it. Required when joining; with the credential, a different key replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterNodeResponse {
    pub node_id: NodeId,
    /// The Temporal task queue this node's agent must poll.
    pub task_queue: String,
}
