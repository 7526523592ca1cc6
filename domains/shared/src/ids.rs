//! Typed ids, so an instance id can never be passed where a node id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7 keeps B-tree inserts local).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
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
