//! Roles and the permissions they grant. Tenant roles (`owner`, `admin`, `member`, `viewer`) hold
//! at org level (every project of the org) or project level; platform roles (`operator`,
//! `finance`) are separate from every tenant role and never grant a tenant's objects.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A tenant role, ordered from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role grants `permission` in the org or project it is held in.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        let least = match permission {
            InstancesRead | ProjectsRead | OrgRead | QuotaRead | CapacityRead => Role::Viewer,
            InstancesWrite => Role::Member,
            ProjectsWrite | MembersManage | ServiceAccountsManage | ApiKeysManage | AuditRead => {
                Role::Admin
            }
            // Platform permissions are never a tenant's.
            NodesRead | NodesWrite | JoinTokensCreate | OrgsCreate | QuotaWrite | PlatformAudit
            | BillingManage => return false,
            UsageWrite => return false,
        };
        self >= least
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A platform role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformRole {
    /// Sees and changes nodes: cordon, drain, decommission, join tokens; creates orgs.
    Operator,
    /// Metering reruns, the price book, every org's invoices.
    Finance,
}

impl PlatformRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Finance => "finance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(Self::Operator),
            "finance" => Some(Self::Finance),
            _ => None,
        }
    }

    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Self::Operator => matches!(
                permission,
                NodesRead | NodesWrite | JoinTokensCreate | OrgsCreate | QuotaWrite | PlatformAudit
            ),
            Self::Finance => matches!(permission, BillingManage | PlatformAudit),
        }
    }
}

/// What a route needs. The names double as API key scopes (`instances:read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    InstancesRead,
    InstancesWrite,
    CapacityRead,
    ProjectsRead,
    ProjectsWrite,
    OrgRead,
    MembersManage,
    ServiceAccountsManage,
    ApiKeysManage,
    AuditRead,
    QuotaRead,
    // platform
    NodesRead,
    NodesWrite,
    JoinTokensCreate,
    OrgsCreate,
    QuotaWrite,
    PlatformAudit,
    BillingManage,
    /// Posting usage events (a producer's service account key).
    UsageWrite,
}

impl Permission {
    pub const ALL: [Permission; 19] = [
        Permission::InstancesRead,
        Permission::InstancesWrite,
        Permission::CapacityRead,
        Permission::ProjectsRead,
        Permission::ProjectsWrite,
        Permission::OrgRead,
        Permission::MembersManage,
        Permission::ServiceAccountsManage,
        Permission::ApiKeysManage,
        Permission::AuditRead,
        Permission::QuotaRead,
        Permission::NodesRead,
        Permission::NodesWrite,
        Permission::JoinTokensCreate,
        Permission::OrgsCreate,
        Permission::QuotaWrite,
        Permission::PlatformAudit,
        Permission::BillingManage,
        Permission::UsageWrite,
    ];

    pub fn as_str(self) -> &'static str {
        use Permission::*;
        match self {
            InstancesRead => "instances:read",
            InstancesWrite => "instances:write",
            CapacityRead => "capacity:read",
            ProjectsRead => "projects:read",
            ProjectsWrite => "projects:write",
            OrgRead => "org:read",
            MembersManage => "members:manage",
            ServiceAccountsManage => "serviceaccounts:manage",
            ApiKeysManage => "apikeys:manage",
            AuditRead => "audit:read",
            QuotaRead => "quota:read",
            NodesRead => "nodes:read",
            NodesWrite => "nodes:write",
            JoinTokensCreate => "jointokens:create",
            OrgsCreate => "orgs:create",
            QuotaWrite => "quota:write",
            PlatformAudit => "platform:audit",
            BillingManage => "billing:manage",
            UsageWrite => "usage:write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether only a platform role can hold it.
    pub fn is_platform(self) -> bool {
        !Role::Owner.grants(self) && self != Permission::UsageWrite
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_grant_upwards() {
        for p in Permission::ALL {
            for pair in Role::ALL.windows(2) {
                // A stronger role grants everything a weaker one does.
                assert!(!pair[1].grants(p) || pair[0].grants(p), "{p} {:?}", pair);
            }
        }
        assert!(!Role::Viewer.grants(Permission::InstancesWrite));
        assert!(Role::Member.grants(Permission::InstancesWrite));
        assert!(!Role::Member.grants(Permission::ApiKeysManage));
        assert!(Role::Admin.grants(Permission::ApiKeysManage));
    }

    #[test]
    fn no_tenant_role_reaches_the_fleet() {
        for role in Role::ALL {
            for p in [
                Permission::NodesRead,
                Permission::NodesWrite,
                Permission::JoinTokensCreate,
            ] {
                assert!(!role.grants(p), "{role} must not grant {p}");
            }
        }
        assert!(PlatformRole::Operator.grants(Permission::NodesWrite));
        assert!(!PlatformRole::Operator.grants(Permission::InstancesRead));
        assert!(!PlatformRole::Finance.grants(Permission::NodesRead));
    }

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
