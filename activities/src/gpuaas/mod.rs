//! The gpuaas product's activities, one module per resource, and its Temporal vocabulary.

pub mod instance;
pub mod metrics;
pub mod node_call;
pub mod node_lifecycle;
pub mod reconcile;
pub mod vocabulary;

// The domain types that cross the workflow boundary, so workflows need not name the domain crate.
pub use product_gpuaas::node_lifecycle::{DrainProgress, DrainTermination, HealthOutcome};
pub use product_gpuaas::reconcile::{Fix, FixKind};
pub use product_gpuaas::{
    Allocation, FailureReason, InstanceState, NodeState, Placement, Transition,
};
