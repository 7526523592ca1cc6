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
            // Billing: an org's admins read it and pay (top-ups, spend limit, payment methods).
            ProjectsWrite
            | MembersManage
            | ServiceAccountsManage
            | ApiKeysManage
            | AuditRead
            | BillingRead
            | BillingWrite => Role::Admin,
            // Platform permissions are never a tenant's.
            NodesRead | NodesWrite | JoinTokensCreate | OrgsCreate | QuotaWrite | PlatformAudit
            | BillingManage | PriceBookWrite => return false,
            // No role grants it: only a key whose scopes name it (`Authority` checks the scopes).
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
    /// Every org's billing and invoices, metering reruns, billing modes, the price book.
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
                NodesRead
                    | NodesWrite
                    | JoinTokensCreate
                    | OrgsCreate
                    | QuotaWrite
                    | PlatformAudit
                    | PriceBookWrite
            ),
            Self::Finance => matches!(permission, BillingManage | PlatformAudit | PriceBookWrite),
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
    /// An org's billing: balance, usage, invoices, payment methods.
    BillingRead,
    /// Paying: top-ups, the spend limit, payment methods, paying unpaid invoices.
    BillingWrite,
    // platform
    NodesRead,
    NodesWrite,
    JoinTokensCreate,
    OrgsCreate,
    QuotaWrite,
    PlatformAudit,
    /// Every org's billing (finance): reads, metering reruns, billing modes.
    BillingManage,
    /// Publishing price book versions (finance and operators).
    PriceBookWrite,
    /// Posting usage events: only an API key whose scopes name it explicitly (a producer's
    /// service account key); no role grants it.
    UsageWrite,
}

impl Permission {
    pub const ALL: [Permission; 22] = [
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
        Permission::BillingRead,
        Permission::BillingWrite,
        Permission::NodesRead,
        Permission::NodesWrite,
        Permission::JoinTokensCreate,
        Permission::OrgsCreate,
        Permission::QuotaWrite,
        Permission::PlatformAudit,
        Permission::BillingManage,
        Permission::PriceBookWrite,
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
            BillingRead => "billing:read",
            BillingWrite => "billing:write",
            NodesRead => "nodes:read",
            NodesWrite => "nodes:write",
            JoinTokensCreate => "jointokens:create",
            OrgsCreate => "orgs:create",
            QuotaWrite => "quota:write",
            PlatformAudit => "platform:audit",
            BillingManage => "billing:manage",
            PriceBookWrite => "pricebook:write",
            UsageWrite => "usage:write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether only a platform role can hold it.
    pub fn is_platform(self) -> bool {
        !Role::Owner.grants(self) && !self.scope_only()
    }

    /// Whether only an API key's explicit scope grants it (no role does, and a key without
    /// scopes, or a user's access token, never holds it): posting usage.
    pub fn scope_only(self) -> bool {
        self == Permission::UsageWrite
    }

    /// Whether a credential with `scopes` (`None`: unscoped) holds a scope-only permission.
    pub fn scope_grants(self, scopes: Option<&[Permission]>) -> bool {
        self.scope_only() && scopes.is_some_and(|s| s.contains(&self))
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
    fn billing_is_for_admins_finance_and_scoped_producers() {
        for p in [Permission::BillingRead, Permission::BillingWrite] {
            assert!(Role::Owner.grants(p) && Role::Admin.grants(p), "{p}");
            assert!(!Role::Member.grants(p) && !Role::Viewer.grants(p), "{p}");
            assert!(!p.is_platform(), "{p}");
            assert!(!PlatformRole::Finance.grants(p) && !PlatformRole::Operator.grants(p));
        }
        assert!(PlatformRole::Finance.grants(Permission::BillingManage));
        assert!(!PlatformRole::Operator.grants(Permission::BillingManage));
        for role in [PlatformRole::Finance, PlatformRole::Operator] {
            assert!(role.grants(Permission::PriceBookWrite), "{role:?}");
        }
        for p in [Permission::BillingManage, Permission::PriceBookWrite] {
            assert!(p.is_platform(), "{p}");
            assert!(Role::ALL.iter().all(|r| !r.grants(p)), "{p}");
        }
        // Usage: no role, no platform role, no unscoped credential; only the explicit scope.
        let usage = Permission::UsageWrite;
        assert!(usage.scope_only() && !usage.is_platform());
        assert!(Role::ALL.iter().all(|r| !r.grants(usage)));
        assert!(!PlatformRole::Finance.grants(usage) && !PlatformRole::Operator.grants(usage));
        assert!(!usage.scope_grants(None));
        assert!(!usage.scope_grants(Some(&[Permission::InstancesWrite])));
        assert!(usage.scope_grants(Some(&[Permission::InstancesRead, usage])));
        assert!(!Permission::BillingRead.scope_grants(Some(&[Permission::BillingRead])));
        assert_eq!(Permission::parse("usage:write"), Some(usage));
        assert_eq!(
            Permission::parse("billing:read"),
            Some(Permission::BillingRead)
        );
        assert_eq!(
            Permission::parse("billing:write"),
            Some(Permission::BillingWrite)
        );
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
