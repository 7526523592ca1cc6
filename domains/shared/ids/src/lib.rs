//! Typed ids, so an instance id can never be passed where a node id is expected: in the domain,
//! in Temporal payloads, in the node contract and on the wire (all serialise as a bare UUID).
//!
//! No sqlx here, not even behind a feature: the node agent links this crate, and a workspace
//! build would unify such a feature into the agent. The domain crates bind ids with
//! [`NodeId::uuid`] and read them back with `From<Uuid>` (see
//! doc/architecture/0006-workspace-for-many-products.md).

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7 keeps B-tree inserts local).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// An id known at compile time (seeded rows, test fixtures).
            pub const fn from_u128(value: u128) -> Self {
                Self(Uuid::from_u128(value))
            }

            /// The bare UUID, for the database and other untyped boundaries.
            pub const fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

typed_id!(
    /// An organisation (`iam.orgs`).
    OrgId
);
typed_id!(
    /// A project; every resource belongs to one (`iam.projects`).
    ProjectId
);
typed_id!(
    /// A GPU host (`gpuaas.nodes`).
    NodeId
);
typed_id!(
    /// One physical GPU on a node (`gpuaas.gpus`).
    GpuId
);
typed_id!(
    /// A GPU instance (`gpuaas.instances`).
    InstanceId
);
typed_id!(
    /// An invoice or credit note (`billing.invoices`).
    InvoiceId
);
