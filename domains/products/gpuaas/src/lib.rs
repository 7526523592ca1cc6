//! Product domain `gpuaas`: SKUs, nodes and their GPUs, GPU placement and allocation, instances,
//! node lifecycle (liveness, drain, GPU health), orphan reconciliation and the fleet event log.
//!
//! Plain async Rust over sqlx; owns the `gpuaas` schema. Knows nothing of Temporal or HTTP:
//! the API and the activities call these functions and map [`DomainError`]s themselves. Workflow
//! ids, task queues and the workflows' step names are Temporal's vocabulary and live outside this
//! crate (`activities::gpuaas::vocabulary`); an instance's `current_step` is opaque text here,
//! except `queued` (before any workflow step) and the state's own word, which the transitions
//! this crate decides itself (a drain, a decommission, a vanished workload) write.
//!
//! [`DomainError`]: shared_kernel::DomainError

pub mod events;
pub mod instance;
pub mod node;
pub mod node_lifecycle;
pub mod placement;
pub mod reconcile;
pub mod sku;
pub mod stats;

pub use instance::{FailureReason, Instance, InstanceState, NewInstance, Transition};
pub use node::{GpuHealth, GpuSpec, Node, NodeGpu, NodeRegistration, NodeState};
pub use placement::{Allocation, Placement};
pub use sku::Sku;
