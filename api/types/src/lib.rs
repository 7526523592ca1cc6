//! Wire types of the REST API (`/v1`). The server converts domain objects into these; clients
//! (the CLI, the node agent) deserialise them. `doc/api/openapi.yaml` describes the same shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sku {
    pub id: String,
    pub gpu_model: String,
    pub display_name: String,
    pub memory_gib: i32,
    pub form_factor: String,
    pub allowed_gpu_counts: Vec<i32>,
    /// Price per GPU-hour in minor units of `currency` (cents for USD).
    pub price_per_gpu_hour_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gpu {
    pub index: i32,
    pub uuid: String,
    pub model: String,
    pub memory_mib: i64,
    /// `healthy` or `unhealthy`.
    pub health: String,
    pub allocated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub id: Uuid,
    pub name: String,
    /// `registering`, `ready`, `cordoned`, `draining` or `down`.
    pub state: String,
    pub gpu_model: Option<String>,
    pub gpu_count: usize,
    pub free_gpus: i32,
    pub discovery: Option<String>,
    pub agent_version: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub gpus: Vec<Gpu>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub sku: String,
    pub gpu_count: i32,
    pub command: String,
    pub capacity_timeout_seconds: i32,
    /// `pending`, `provisioning`, `running`, `terminating`, `terminated` or `failed`.
    pub state: String,
    /// On `failed`: `insufficient_capacity`, `node_unreachable`, `start_failed` or `timeout`.
    pub failure_reason: Option<String>,
    /// Why it waits, or why it failed, in words.
    pub status_message: Option<String>,
    pub node_id: Option<Uuid>,
    pub gpu_indices: Vec<i32>,
    pub workflow_id: String,
    pub current_step: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub running_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
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
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` once a page comes back short.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct List<T> {
    pub items: Vec<T>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegisterNodeResponse {
    pub node_id: Uuid,
    /// The Temporal task queue this node's agent must poll.
    pub task_queue: String,
}

/// RFC 9457 problem details, with a stable machine `code` and the `request_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    pub request_id: String,
}
