//! What a credential may do: the principal, its platform role, its roles per org and project,
//! and, for an API key, the org, project and scopes the key is bound to. Resolved once per
//! request from the database, so a deleted user, a removed member or a revoked key loses its
//! rights at the next request.

use crate::api_keys::{self, KeyOwner};
use crate::authz::{Permission, PlatformRole, Role};
use shared_ids::{OrgId, ProjectId};
use shared_kernel::{AuthMethod, DomainResult, Principal, PrincipalKind};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Authority {
    pub principal: Principal,
    pub auth_method: AuthMethod,
    pub credential_id: Option<String>,
    pub platform_role: Option<PlatformRole>,
    pub org_roles: Vec<(OrgId, Role)>,
    /// `(project, its org, role)`.
    pub project_roles: Vec<(ProjectId, OrgId, Role)>,
    /// The project requests act in when they name none, with its org.
    pub default_project: Option<(ProjectId, OrgId)>,
    /// An API key's binding: only this org (and project, when set) is reachable through it.
    pub bound_org: Option<OrgId>,
    pub bound_project: Option<ProjectId>,
    /// An API key's scopes; None: everything its owner may do.
    pub scopes: Option<Vec<Permission>>,
    /// Access tokens issued at or before this Unix second are refused.
    pub tokens_not_before: i64,
}

/// How a permission check came out. `Invisible`: the caller may not even know the object exists
/// (the API answers 404); `Forbidden`: it sees the object but may not do this (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Forbidden,
    Invisible,
}

impl Authority {
    fn scoped(&self, permission: Permission) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|scopes| scopes.contains(&permission))
    }

    /// Whether `role`, held where the request acts, and the key's scopes allow `permission`. A
    /// scope-only permission (posting usage) is held by a key that names it, whatever its role.
    fn holds(&self, role: Role, permission: Permission) -> bool {
        if permission.scope_only() {
            return permission.scope_grants(self.scopes.as_deref());
        }
        role.grants(permission) && self.scoped(permission)
    }

    /// A platform permission (nodes, join tokens, creating orgs).
    pub fn platform(&self, permission: Permission) -> Decision {
        match self.platform_role {
            Some(role) if role.grants(permission) && self.scoped(permission) => Decision::Allowed,
            _ => Decision::Invisible,
        }
    }

    pub fn is_operator(&self) -> bool {
        self.platform_role == Some(PlatformRole::Operator)
    }

    /// The caller's role in an org, if it may see the org at all.
    pub fn role_in_org(&self, org: OrgId) -> Option<Role> {
        if self.bound_org.is_some_and(|b| b != org) || self.bound_project.is_some() {
            // A key bound to a project reaches that project, not its org's settings.
            return None;
        }
        self.org_roles
            .iter()
            .find(|(o, _)| *o == org)
            .map(|(_, r)| *r)
    }

    /// The caller's role in a project: the stronger of its org role and its project role.
    pub fn role_in_project(&self, project: ProjectId, org: OrgId) -> Option<Role> {
        if self.bound_org.is_some_and(|b| b != org)
            || self.bound_project.is_some_and(|b| b != project)
        {
            return None;
        }
        let via_org = self
            .org_roles
            .iter()
            .find(|(o, _)| *o == org)
            .map(|(_, r)| *r);
        let direct = self
            .project_roles
            .iter()
            .find(|(p, _, _)| *p == project)
            .map(|(_, _, r)| *r);
        via_org.max(direct)
    }

    pub fn in_org(&self, org: OrgId, permission: Permission) -> Decision {
        match self.role_in_org(org) {
            None => Decision::Invisible,
            Some(role) if self.holds(role, permission) => Decision::Allowed,
            Some(_) => Decision::Forbidden,
        }
    }

    pub fn in_project(&self, project: ProjectId, org: OrgId, permission: Permission) -> Decision {
        // Operators read any project's instances (support: why is it pending, on which node).
        if permission == Permission::InstancesRead
            && self.is_operator()
            && self.scoped(permission)
            && self.bound_project.is_none()
        {
            return Decision::Allowed;
        }
        match self.role_in_project(project, org) {
            None => Decision::Invisible,
            Some(role) if self.holds(role, permission) => Decision::Allowed,
            Some(_) => Decision::Forbidden,
        }
    }

    /// The orgs the caller can see.
    pub fn orgs(&self) -> Vec<OrgId> {
        let mut orgs: Vec<OrgId> = self.org_roles.iter().map(|(o, _)| *o).collect();
        orgs.extend(self.project_roles.iter().map(|(_, o, _)| *o));
        orgs.sort();
        orgs.dedup();
        if let Some(bound) = self.bound_org {
            orgs.retain(|o| *o == bound);
        }
        orgs
    }

    /// The project a request acts in when it names none.
    pub fn implicit_project(&self) -> Option<(ProjectId, OrgId)> {
        if let Some(p) = self.bound_project {
            return self
                .project_roles
                .iter()
                .find(|(id, _, _)| *id == p)
                .map(|(id, org, _)| (*id, *org))
                .or(self.default_project.filter(|(id, _)| *id == p));
        }
        self.default_project
            .filter(|(_, org)| self.bound_org.is_none_or(|b| b == *org))
    }
}

type UserRow = (
    String,
    Option<String>,
    i64,
    Vec<Uuid>,
    Vec<String>,
    Vec<Uuid>,
    Vec<Uuid>,
    Vec<String>,
    Option<Uuid>,
    Option<Uuid>,
);

/// The authority of a user (from an access token), or None when the user no longer exists.
pub async fn of_user(pool: &PgPool, user: Uuid) -> DomainResult<Option<Authority>> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT u.email, u.platform_role,
                CASE WHEN u.tokens_not_before = '-infinity' THEN 0 ELSE date_part('epoch', u.tokens_not_before)::int8 END,
                coalesce(om.orgs, '{}'), coalesce(om.roles, '{}'),
                coalesce(pm.projects, '{}'), coalesce(pm.orgs, '{}'), coalesce(pm.roles, '{}'),
                d.id, d.org_id
         FROM iam.users u
         LEFT JOIN LATERAL (SELECT array_agg(org_id ORDER BY created_at) orgs, array_agg(role ORDER BY created_at) roles
                            FROM iam.org_members WHERE user_id = u.id) om ON true
         LEFT JOIN LATERAL (SELECT array_agg(m.project_id) projects, array_agg(p.org_id) orgs, array_agg(m.role) roles
                            FROM iam.project_members m JOIN iam.projects p ON p.id = m.project_id
                            WHERE m.user_id = u.id) pm ON true
         LEFT JOIN LATERAL (SELECT p.id, p.org_id FROM iam.org_members m
                            JOIN iam.projects p ON p.org_id = m.org_id AND p.is_default
                            WHERE m.user_id = u.id ORDER BY m.created_at LIMIT 1) d ON true
         WHERE u.id = $1 AND u.deleted_at IS NULL",
    )
    .bind(user)
    .fetch_optional(pool)
    .await?;
    let Some((
        email,
        platform_role,
        tokens_not_before,
        orgs,
        roles,
        projects,
        project_orgs,
        project_role_names,
        default_id,
        default_org,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(Authority {
        principal: Principal {
            kind: PrincipalKind::User,
            id: user,
            name: email,
        },
        auth_method: AuthMethod::AccessToken,
        credential_id: None,
        platform_role: platform_role.as_deref().and_then(PlatformRole::parse),
        org_roles: orgs
            .into_iter()
            .zip(roles)
            .filter_map(|(o, r)| Some((o.into(), Role::parse(&r)?)))
            .collect(),
        project_roles: projects
            .into_iter()
            .zip(project_orgs)
            .zip(project_role_names)
            .filter_map(|((p, o), r)| Some((p.into(), o.into(), Role::parse(&r)?)))
            .collect(),
        default_project: default_id
            .zip(default_org)
            .map(|(p, o)| (p.into(), o.into())),
        bound_org: None,
        bound_project: None,
        scopes: None,
        tokens_not_before,
    }))
}

/// The authority of an API key (its text as presented), or None for an unknown, revoked or
/// expired key. One indexed lookup of the key's hash, then the owner's roles.
pub async fn of_api_key(pool: &PgPool, text: &str) -> DomainResult<Option<Authority>> {
    let Some(key) = api_keys::resolve(pool, text).await? else {
        return Ok(None);
    };
    let mut authority = match key.owner {
        KeyOwner::User(user) => match of_user(pool, user).await? {
            Some(a) => a,
            None => return Ok(None),
        },
        KeyOwner::ServiceAccount(sa) => {
            let row: Option<(String, Uuid, Uuid, String)> = sqlx::query_as(
                "SELECT s.name, s.project_id, p.org_id, s.role FROM iam.service_accounts s
                 JOIN iam.projects p ON p.id = s.project_id
                 WHERE s.id = $1 AND s.deleted_at IS NULL",
            )
            .bind(sa)
            .fetch_optional(pool)
            .await?;
            let Some((name, project, org, role)) = row else {
                return Ok(None);
            };
            let (project, org): (ProjectId, OrgId) = (project.into(), org.into());
            Authority {
                principal: Principal {
                    kind: PrincipalKind::ServiceAccount,
                    id: sa,
                    name,
                },
                auth_method: AuthMethod::ApiKey,
                credential_id: None,
                platform_role: None,
                org_roles: Vec::new(),
                project_roles: Role::parse(&role)
                    .map(|r| vec![(project, org, r)])
                    .unwrap_or_default(),
                default_project: Some((project, org)),
                bound_org: Some(org),
                bound_project: Some(project),
                scopes: None,
                tokens_not_before: 0,
            }
        }
    };
    authority.auth_method = AuthMethod::ApiKey;
    authority.credential_id = Some(key.id.to_string());
    authority.bound_org = Some(key.org_id);
    if key.project_id.is_some() {
        authority.bound_project = key.project_id;
    }
    authority.scopes = key.scopes;
    if authority.bound_project.is_none() {
        // A key bound to an org acts, by default, in that org's default project.
        authority.default_project = authority
            .default_project
            .filter(|(_, org)| *org == key.org_id);
    }
    // A user's key keeps its owner's platform role only when not bound to a tenant project.
    if authority.bound_project.is_some() {
        authority.platform_role = None;
    }
    Ok(Some(authority))
}
