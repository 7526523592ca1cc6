//! Platform IAM: who a caller is and what it may do. Orgs (tenants) and their projects, users
//! with roles at org and project level, service accounts, API keys, login sessions (refresh
//! tokens) and access tokens, node join tokens and per-node credentials, and the platform roles
//! (`operator`, `finance`). Owns schema `iam`.

pub mod api_keys;
pub mod authority;
pub mod authz;
pub mod members;
pub mod nodes;
pub mod orgs;
pub mod passwords;
pub mod secrets;
pub mod service_accounts;
pub mod sessions;
pub mod tokens;
pub mod users;

pub use authority::{Authority, Decision};
pub use authz::{Permission, PlatformRole, Role};
pub use orgs::{Org, Project, get_project};

use shared_ids::{OrgId, ProjectId};

/// The org seeded by the first iam migration (resources created before IAM live there).
pub const DEFAULT_ORG: OrgId = OrgId::from_u128(0x00000000_0000_7000_8000_000000000001);
/// The seeded org's default project.
pub const DEFAULT_PROJECT: ProjectId = ProjectId::from_u128(0x00000000_0000_7000_8000_000000000002);
