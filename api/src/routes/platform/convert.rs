//! Domain objects of the platform domains → wire types.

use api_types::platform as wire;
use platform_iam::api_keys::{ApiKey, KeyOwner};
use platform_iam::{members, orgs, service_accounts, users};

pub fn user(u: users::User) -> wire::User {
    wire::User {
        id: u.id,
        email: u.email,
        platform_role: u.platform_role.map(|r| r.as_str().to_string()),
        created_at: u.created_at,
    }
}

pub fn org(o: orgs::Org) -> wire::Org {
    wire::Org {
        id: o.id,
        name: o.name,
        created_at: o.created_at,
    }
}

pub fn project(p: orgs::Project) -> wire::Project {
    wire::Project {
        id: p.id,
        org_id: p.org_id,
        name: p.name,
        is_default: p.is_default,
        created_at: p.created_at,
    }
}

pub fn member(m: members::Member) -> wire::Member {
    wire::Member {
        user_id: m.user_id,
        email: m.email,
        role: m.role.as_str().to_string(),
        joined_at: m.joined_at,
    }
}

pub fn project_member(m: members::ProjectMember) -> wire::ProjectMember {
    wire::ProjectMember {
        user_id: m.user_id,
        email: m.email,
        role: m.role.as_str().to_string(),
        joined_at: m.joined_at,
    }
}

pub fn invitation(i: members::Invitation) -> wire::Invitation {
    wire::Invitation {
        id: i.id,
        org_id: i.org_id,
        email: i.email,
        role: i.role.as_str().to_string(),
        created_at: i.created_at,
        expires_at: i.expires_at,
        accepted_at: i.accepted_at,
    }
}

pub fn service_account(s: service_accounts::ServiceAccount) -> wire::ServiceAccount {
    wire::ServiceAccount {
        id: s.id,
        project_id: s.project_id,
        name: s.name,
        role: s.role.as_str().to_string(),
        created_at: s.created_at,
    }
}

pub fn api_key(k: ApiKey) -> wire::ApiKey {
    let (owner_kind, owner_id) = match k.owner {
        KeyOwner::User(id) => ("user", id),
        KeyOwner::ServiceAccount(id) => ("service_account", id),
    };
    wire::ApiKey {
        id: k.id,
        prefix: k.prefix,
        name: k.name,
        owner_kind: owner_kind.to_string(),
        owner_id,
        org_id: k.org_id,
        project_id: k.project_id,
        scopes: k
            .scopes
            .map(|s| s.into_iter().map(|p| p.as_str().to_string()).collect()),
        created_at: k.created_at,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
    }
}

pub fn audit_event(e: platform_audit::AuditEvent) -> wire::AuditEvent {
    wire::AuditEvent {
        seq: e.seq,
        chain: e.chain.to_string(),
        chain_seq: e.chain_seq,
        at: e.at,
        actor: e.actor,
        actor_name: e.actor_name,
        actor_kind: e.actor_kind,
        auth_method: e.auth_method,
        credential_id: e.credential_id,
        org_id: e.org_id,
        project_id: e.project_id,
        action: e.action,
        resource: e.resource,
        outcome: match e.outcome {
            platform_audit::Outcome::Success => "success".into(),
            platform_audit::Outcome::Failure => "failure".into(),
        },
        status: e.status,
        error_code: e.error_code,
        request_id: e.request_id,
        source_ip: e.source_ip,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

pub fn anchor(a: platform_audit::Anchor) -> wire::AuditAnchor {
    wire::AuditAnchor {
        chain: a.chain.to_string(),
        chain_seq: a.chain_seq,
        hash: a.hash,
        at: a.at,
        key_id: a.key_id,
        signature: a.signature,
    }
}

pub fn role(name: &str) -> Result<platform_iam::Role, crate::problem::ApiError> {
    platform_iam::Role::parse(name).ok_or_else(|| {
        crate::problem::ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_role",
            "role is owner, admin, member or viewer",
        )
    })
}
