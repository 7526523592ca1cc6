//! Contract tests: `doc/api/openapi.yaml` against what the code serves. The routes against
//! `api::routes()`, each operation's `x-gpuaas-access` and `x-gpuaas-audit-action` (and the
//! security, parameters and responses they imply) against `api::route_table()`, the component
//! schemas against the serialised wire types, the problem responses against the problem+json
//! convention, the enums against the domain's values, and the documented error codes against the
//! codes the API and the domain emit. No database or Temporal.

use api_types::gpuaas::{
    CreateInstanceRequest, DrainNodeRequest, Gpu, GpuReport, Instance, Node, NodeEvent,
    RegisterNodeRequest, RegisterNodeResponse, Sku,
};
use api_types::platform::{
    AcceptInvitationRequest, ApiKey, AuditAnchor, AuditBundle, AuditEvent, AuditVerifyReport,
    CreateApiKeyRequest, CreateInvitationRequest, CreateJoinTokenRequest, CreateOrgRequest,
    CreateOrgResponse, CreateProjectRequest, CreateServiceAccountRequest, CreatedApiKey,
    CreatedInvitation, Invitation, JoinToken, LoginRequest, Me, Member, Membership, Org, Project,
    ProjectMember, Quota, RefreshRequest, ServiceAccount, SetPlanRequest, SetQuotaRequest,
    SetRoleRequest, SignupRequest, SignupResponse, TokenResponse, User,
};
use api_types::{List, Page, Problem};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared_ids::{InstanceId, NodeId, OrgId, ProjectId};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use uuid::Uuid;

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../doc/api/openapi.yaml");
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];
const PROBLEM_REF: &str = "#/components/schemas/Problem";
const PROBLEM_JSON: &str = "application/problem+json";

/// The spec; `GPUAAS_OPENAPI_SPEC` points the tests at another copy (to see them fail on a
/// broken one without touching the real file).
pub(crate) fn spec() -> Value {
    match std::env::var_os("GPUAAS_OPENAPI_SPEC") {
        Some(path) => load_spec(Path::new(&path)),
        None => load_spec(Path::new(SPEC_PATH)),
    }
}

fn load_spec(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    // Integer keys (an unquoted `200:`) become strings here, like the quoted ones.
    serde_json::to_value(yaml)
        .unwrap_or_else(|e| panic!("{} is not JSON-compatible: {e}", path.display()))
}

/// Follows `$ref`s (local JSON pointers) until a non-reference.
fn resolve<'a>(spec: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are supported, not {reference}"));
        value = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {reference} points at nothing"));
    }
    panic!("$ref chain too long (a cycle?)")
}

/// Every operation as `(method, path, operation)`, method lowercase.
fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let paths = spec["paths"].as_object().expect("`paths` is a map");
    let mut ops = Vec::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("path {path} is not a map"));
        for (key, op) in item {
            if METHODS.contains(&key.as_str()) {
                ops.push((key.clone(), path.clone(), op));
            } else {
                assert!(
                    ["parameters", "summary", "description", "servers"].contains(&key.as_str()),
                    "path {path} has unexpected key {key:?} (a misspelt method?)"
                );
            }
        }
    }
    ops
}

/// How many operations the contract lists (the fuzzing checks it reached them all).
pub(crate) fn operation_count(spec: &Value) -> usize {
    operations(spec).len()
}

fn schema<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec.pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("no component schema {name}"))
}

fn string_set<'a>(values: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    values.into_iter().map(str::to_string).collect()
}

fn required_of(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| string_set(r.iter().filter_map(Value::as_str)))
        .unwrap_or_default()
}

fn properties_of(schema: &Value) -> BTreeSet<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Routes

#[test]
fn spec_lists_exactly_the_routes_the_router_serves() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = operations(&spec)
        .into_iter()
        .map(|(method, path, _)| (method.to_uppercase(), path))
        .collect();
    let routes = api::routes();
    let served: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(served.len(), routes.len(), "ROUTES lists a route twice");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "doc/api/openapi.yaml and api::routes() disagree\n  \
         served but missing from the spec: {undocumented:?}\n  \
         in the spec but not served: {unserved:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Schemas

fn ts(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, minute, 5).unwrap()
}

fn sku() -> Sku {
    Sku {
        id: "h100-80gb-sxm".into(),
        gpu_model: "NVIDIA H100 80GB HBM3".into(),
        display_name: "H100 80GB SXM".into(),
        memory_gib: 80,
        form_factor: "sxm".into(),
        allowed_gpu_counts: vec![1, 2, 4, 8],
        price_per_gpu_hour_minor: 249,
        currency: "USD".into(),
        price_version: Some(1),
        available_gpus: 12,
        max_gpus_now: 8,
    }
}

fn gpu(index: i32, allocated: bool) -> Gpu {
    Gpu {
        index,
        uuid: format!("GPU-{}", Uuid::from_u128(index as u128 + 1)),
        model: "NVIDIA H100 80GB HBM3".into(),
        memory_mib: 81_559,
        health: if allocated { "healthy" } else { "unhealthy" }.into(),
        health_reason: (!allocated).then(|| "XID 79: GPU has fallen off the bus".into()),
        allocated,
    }
}

/// Every `Option` is `Some`, so every field is on the wire.
fn node_full() -> Node {
    Node {
        id: NodeId::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0001),
        name: "gpu-node-1.example".into(),
        state: "ready".into(),
        cordon_reason: Some("gpu_unhealthy".into()),
        gpu_model: Some("NVIDIA H100 80GB HBM3".into()),
        gpu_count: 2,
        free_gpus: 1,
        discovery: Some("nvml".into()),
        agent_version: Some("0.1.0".into()),
        registered_at: ts(0),
        last_seen_at: Some(ts(1)),
        down_since: Some(ts(2)),
        drain_deadline: Some(ts(3)),
        gpus: vec![gpu(0, true), gpu(1, false)],
    }
}

fn node_bare() -> Node {
    Node {
        state: "registering".into(),
        cordon_reason: None,
        last_seen_at: None,
        down_since: None,
        drain_deadline: None,
        gpu_model: None,
        gpu_count: 0,
        free_gpus: 0,
        discovery: None,
        agent_version: None,
        gpus: vec![],
        ..node_full()
    }
}

/// Every `Option` is `Some`, so every field is on the wire.
fn instance_full() -> Instance {
    Instance {
        id: InstanceId::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0002),
        project_id: ProjectId::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0003),
        name: "train-1".into(),
        sku: "h100-80gb-sxm".into(),
        gpu_count: 2,
        command: "python train.py".into(),
        capacity_timeout_seconds: 600,
        state: "failed".into(),
        failure_reason: Some("start_failed".into()),
        status_message: Some("exit status 1".into()),
        node_id: Some(node_full().id),
        gpu_indices: vec![0, 1],
        workflow_id: "instance-provision-0195".into(),
        current_step: "failed".into(),
        created_at: ts(0),
        updated_at: ts(2),
        running_at: Some(ts(1)),
        ended_at: Some(ts(2)),
        cost_so_far_minor: Some(17),
        cost_exact_minor: Some("16.6111111".into()),
    }
}

fn instance_pending() -> Instance {
    Instance {
        command: "sleep infinity".into(),
        capacity_timeout_seconds: 0,
        state: "pending".into(),
        failure_reason: None,
        status_message: None,
        node_id: None,
        gpu_indices: vec![],
        current_step: "queued".into(),
        running_at: None,
        ended_at: None,
        cost_so_far_minor: None,
        cost_exact_minor: None,
        ..instance_full()
    }
}

fn gpu_report(index: i32) -> GpuReport {
    GpuReport {
        index,
        uuid: format!("GPU-{}", Uuid::from_u128(index as u128 + 1)),
        model: "NVIDIA H100 80GB HBM3".into(),
        memory_mib: 81_559,
        healthy: index == 0,
    }
}

fn problem() -> Problem {
    Problem {
        type_uri: "https://docs.gpuaas.dev/problems/unknown_sku".into(),
        title: "Unprocessable Entity".into(),
        status: 422,
        detail: "unknown SKU 'nope'".into(),
        code: "unknown_sku".into(),
        request_id: "req_0195abc".into(),
    }
}

// Platform wire types. As above, a `*_full` sample sets every `Option`.

const ORG: OrgId = OrgId::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0010);
const USER: Uuid = Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0011);
const ACCOUNT: Uuid = Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0012);

fn project_id() -> ProjectId {
    instance_full().project_id
}

fn tokens() -> TokenResponse {
    TokenResponse {
        access_token: "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.c2lnbmF0dXJl".into(),
        refresh_token: "gpr_0123456789abcdefghijklmnopqrstuvwxyz".into(),
        token_type: "Bearer".into(),
        expires_in: 900,
    }
}

fn user(platform_role: Option<&str>) -> User {
    User {
        id: USER,
        email: "ada@example.com".into(),
        platform_role: platform_role.map(str::to_string),
        created_at: ts(0),
    }
}

fn org() -> Org {
    Org {
        id: ORG,
        name: "acme".into(),
        created_at: ts(0),
    }
}

fn project() -> Project {
    Project {
        id: project_id(),
        org_id: ORG,
        name: "default".into(),
        is_default: true,
        created_at: ts(0),
    }
}

fn me_full() -> Me {
    Me {
        kind: "user".into(),
        id: USER,
        name: "ada@example.com".into(),
        platform_role: Some("operator".into()),
        auth_method: "access_token".into(),
        default_project_id: Some(project_id()),
        memberships: vec![
            Membership {
                org_id: ORG,
                project_id: Some(project_id()),
                role: "member".into(),
            },
            Membership {
                org_id: ORG,
                project_id: None,
                role: "owner".into(),
            },
        ],
    }
}

fn me_bare() -> Me {
    Me {
        kind: "service_account".into(),
        id: ACCOUNT,
        name: "ci".into(),
        platform_role: None,
        auth_method: "api_key".into(),
        default_project_id: None,
        memberships: vec![],
    }
}

fn member() -> Member {
    Member {
        user_id: USER,
        email: "ada@example.com".into(),
        role: "admin".into(),
        joined_at: ts(1),
    }
}

fn project_member() -> ProjectMember {
    ProjectMember {
        user_id: USER,
        email: "grace@example.com".into(),
        role: "member".into(),
        joined_at: ts(2),
    }
}

fn invitation_full() -> Invitation {
    Invitation {
        id: Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0013),
        org_id: ORG,
        email: "grace@example.com".into(),
        role: "viewer".into(),
        created_at: ts(0),
        expires_at: ts(9),
        accepted_at: Some(ts(1)),
    }
}

fn invitation_pending() -> Invitation {
    Invitation {
        accepted_at: None,
        ..invitation_full()
    }
}

fn created_invitation() -> CreatedInvitation {
    CreatedInvitation {
        invitation: invitation_pending(),
        token: "gpi_0123456789abcdefghijklmnopqrstuvwxyz".into(),
    }
}

fn service_account() -> ServiceAccount {
    ServiceAccount {
        id: ACCOUNT,
        project_id: project_id(),
        name: "ci".into(),
        role: "member".into(),
        created_at: ts(0),
    }
}

fn api_key_full() -> ApiKey {
    ApiKey {
        id: Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0014),
        prefix: "gpk_01234567".into(),
        name: "ci deploys".into(),
        owner_kind: "service_account".into(),
        owner_id: ACCOUNT,
        org_id: ORG,
        project_id: Some(project_id()),
        scopes: Some(vec!["instances:read".into(), "instances:write".into()]),
        created_at: ts(0),
        expires_at: Some(ts(9)),
        last_used_at: Some(ts(2)),
        revoked_at: Some(ts(3)),
    }
}

fn api_key_bare() -> ApiKey {
    ApiKey {
        owner_kind: "user".into(),
        owner_id: USER,
        project_id: None,
        scopes: None,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        ..api_key_full()
    }
}

fn quota_full() -> Quota {
    Quota {
        project_id: project_id(),
        plan: "standard".into(),
        entitled_skus: Some(vec!["h100-80gb-sxm".into()]),
        max_concurrent_gpus: Some(16),
    }
}

fn quota_bare() -> Quota {
    Quota {
        entitled_skus: None,
        max_concurrent_gpus: None,
        ..quota_full()
    }
}

fn audit_event_full() -> AuditEvent {
    AuditEvent {
        seq: 42,
        chain: format!("org:{}/3", ORG.uuid()),
        chain_seq: 7,
        at: ts(4),
        actor: format!("user:{USER}"),
        actor_name: "ada@example.com".into(),
        actor_kind: "user".into(),
        auth_method: "api_key".into(),
        credential_id: Some(api_key_full().id.to_string()),
        org_id: Some(ORG),
        project_id: Some(project_id()),
        action: "instance.create".into(),
        resource: "/v1/instances".into(),
        outcome: "failure".into(),
        status: 422,
        error_code: Some("unknown_sku".into()),
        request_id: "req_0195abc".into(),
        source_ip: Some("192.0.2.7".into()),
        prev_hash: "00".repeat(32),
        hash: "ab".repeat(32),
    }
}

fn audit_event_bare() -> AuditEvent {
    AuditEvent {
        chain: "platform/0".into(),
        actor: "anonymous".into(),
        actor_name: "anonymous".into(),
        actor_kind: "anonymous".into(),
        auth_method: "none".into(),
        credential_id: None,
        org_id: None,
        project_id: None,
        action: "auth.login".into(),
        resource: "/v1/auth/login".into(),
        outcome: "success".into(),
        status: 200,
        error_code: None,
        source_ip: None,
        ..audit_event_full()
    }
}

fn audit_anchor() -> AuditAnchor {
    AuditAnchor {
        chain: format!("org:{}/3", ORG.uuid()),
        chain_seq: 7,
        hash: "ab".repeat(32),
        at: ts(5),
        key_id: "k1".into(),
        signature: "c2lnbmF0dXJl".into(),
    }
}

/// Checks one wire type against its component schema. `samples[0]` must put every field on the
/// wire (every `Option` set): its keys must be exactly the schema's `properties`. Every sample
/// must validate against the schema. `required` must be exactly the fields the Rust type cannot
/// do without, and `additionalProperties: false` must be there exactly when it refuses unknown
/// fields (`deny_unknown_fields`).
fn check_type<T: Serialize + DeserializeOwned>(
    spec: &Value,
    name: &str,
    samples: &[T],
    errors: &mut Vec<String>,
) {
    let schema = resolve(spec, schema(spec, name));
    let full = serde_json::to_value(&samples[0]).expect("sample serialises");
    let object = full.as_object().expect("wire types are JSON objects");
    let keys: BTreeSet<String> = object.keys().cloned().collect();
    let properties = properties_of(schema);
    let required = required_of(schema);

    if keys != properties {
        errors.push(format!(
            "{name}: serialised keys and schema properties differ\n    \
             on the wire but not in the schema: {:?}\n    \
             in the schema but not on the wire: {:?}",
            keys.difference(&properties).collect::<Vec<_>>(),
            properties.difference(&keys).collect::<Vec<_>>(),
        ));
    }
    let absent: Vec<_> = required.difference(&keys).collect();
    if !absent.is_empty() {
        errors.push(format!(
            "{name}: required {absent:?} missing from the serialised sample"
        ));
    }

    // What the Rust type itself needs: a field whose absence fails deserialisation is required.
    let needed: BTreeSet<String> = object
        .keys()
        .filter(|key| {
            let mut without = object.clone();
            without.remove(*key);
            serde_json::from_value::<T>(Value::Object(without)).is_err()
        })
        .cloned()
        .collect();
    if needed != required {
        errors.push(format!(
            "{name}: `required` is {required:?}, but the Rust type needs exactly {needed:?}"
        ));
    }

    let mut extended = object.clone();
    extended.insert("not_a_field_of_any_wire_type".into(), json!(1));
    let denies_unknown = serde_json::from_value::<T>(Value::Object(extended)).is_err();
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    if denies_unknown != closed {
        errors.push(format!(
            "{name}: the Rust type {} unknown fields but the schema {} `additionalProperties: false`",
            if denies_unknown { "refuses" } else { "accepts" },
            if closed { "has" } else { "lacks" },
        ));
    }

    for (i, sample) in samples.iter().enumerate() {
        let value = serde_json::to_value(sample).expect("sample serialises");
        validate(spec, schema, &value, &format!("{name}[sample {i}]"), errors);
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A small JSON Schema check, enough for this spec: `$ref`, `oneOf`, `type`, `enum`, `const`,
/// `properties`, `required`, `additionalProperties: false`, `items`, `format` (uuid, date-time),
/// string lengths and numeric bounds.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = alternatives
            .iter()
            .filter(|alt| {
                let mut e = Vec::new();
                validate(spec, alt, value, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!(
                "{at}: {value} matches {matching} `oneOf` branches, not 1"
            ));
        }
    }
    if let Some(ty) = schema.get("type") {
        let allowed: Vec<&str> = match ty {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => panic!("{at}: bad `type` {other}"),
        };
        let actual = json_type(value);
        if !allowed
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
        {
            errors.push(format!(
                "{at}: {value} is {actual}, schema allows {allowed:?}"
            ));
            return;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {values:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        errors.push(format!("{at}: {value} is not {constant}"));
    }
    match value {
        Value::Object(map) => {
            for key in required_of(schema) {
                if !map.contains_key(&key) {
                    errors.push(format!("{at}: required `{key}` missing"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, v) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(s) => validate(spec, s, v, &format!("{at}.{key}"), errors),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{at}: `{key}` is not allowed"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(spec, item_schema, item, &format!("{at}[{i}]"), errors);
                }
            }
        }
        Value::String(s) => {
            let ok = match schema.get("format").and_then(Value::as_str) {
                Some("uuid") => Uuid::parse_str(s).is_ok(),
                Some("date-time") => DateTime::parse_from_rfc3339(s).is_ok(),
                _ => true,
            };
            if !ok {
                errors.push(format!(
                    "{at}: {s:?} does not match format {}",
                    schema["format"]
                ));
            }
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!("{at}: {s:?} is shorter than {min}"));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!("{at}: {s:?} is longer than {max}"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        _ => {}
    }
}

fn schema_errors(spec: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_type(spec, "Sku", &[sku()], &mut errors);
    check_type(spec, "Gpu", &[gpu(0, true), gpu(1, false)], &mut errors);
    check_type(spec, "Node", &[node_full(), node_bare()], &mut errors);
    check_type(
        spec,
        "Instance",
        &[instance_full(), instance_pending()],
        &mut errors,
    );
    check_type(
        spec,
        "CreateInstanceRequest",
        &[
            CreateInstanceRequest {
                name: Some("train-1".into()),
                sku: "h100-80gb-sxm".into(),
                gpu_count: 8,
                command: Some("python train.py".into()),
                capacity_timeout_seconds: Some(600),
            },
            CreateInstanceRequest {
                sku: "h100-80gb-sxm".into(),
                gpu_count: 1,
                ..Default::default()
            },
        ],
        &mut errors,
    );
    check_type(
        spec,
        "GpuReport",
        &[gpu_report(0), gpu_report(1)],
        &mut errors,
    );
    check_type(
        spec,
        "RegisterNodeRequest",
        &[
            RegisterNodeRequest {
                public_key: Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()),
                encryption_key: Some("hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo".into()),
                name: "gpu-node-1.example".into(),
                agent_version: "0.1.0".into(),
                discovery: "nvml".into(),
                gpus: vec![gpu_report(0), gpu_report(1)],
            },
            RegisterNodeRequest {
                public_key: None,
                encryption_key: None,
                name: "cpu-only".into(),
                agent_version: "0.1.0".into(),
                discovery: "simulated".into(),
                gpus: vec![],
            },
        ],
        &mut errors,
    );
    check_type(
        spec,
        "RegisterNodeResponse",
        &[RegisterNodeResponse {
            node_id: node_full().id,
            task_queue: contract_node::vocabulary::task_queue(node_full().id),
        }],
        &mut errors,
    );
    check_type(spec, "Problem", &[problem()], &mut errors);
    check_type(
        spec,
        "DrainNodeRequest",
        &[
            DrainNodeRequest {
                deadline_seconds: Some(600),
            },
            DrainNodeRequest::default(),
        ],
        &mut errors,
    );
    let event = NodeEvent {
        id: 7,
        at: ts(4),
        kind: "gpu.unhealthy".into(),
        actor: "node-lifecycle".into(),
        instance_id: Some(instance_full().id),
        gpu_index: Some(3),
        message: "GPU 3 unhealthy: XID 79".into(),
    };
    let bare_event = NodeEvent {
        instance_id: None,
        gpu_index: None,
        ..event.clone()
    };
    check_type(
        spec,
        "NodeEventList",
        &[List {
            items: vec![event, bare_event],
        }],
        &mut errors,
    );
    check_type(
        spec,
        "InstancePage",
        &[
            Page {
                items: vec![instance_full(), instance_pending()],
                next_cursor: Some(instance_pending().id.to_string()),
            },
            Page {
                items: vec![],
                next_cursor: None,
            },
        ],
        &mut errors,
    );
    check_type(
        spec,
        "SkuList",
        &[List { items: vec![sku()] }, List { items: vec![] }],
        &mut errors,
    );
    check_type(
        spec,
        "NodeSummary",
        &[node_full().summary(), node_bare().summary()],
        &mut errors,
    );
    check_type(
        spec,
        "NodePage",
        &[
            Page {
                items: vec![node_full().summary(), node_bare().summary()],
                next_cursor: Some(node_bare().name),
            },
            Page {
                items: vec![],
                next_cursor: None,
            },
        ],
        &mut errors,
    );
    platform_schema_errors(spec, &mut errors);
    billing_schema_errors(spec, &mut errors);
    errors
}

fn platform_schema_errors(spec: &Value, errors: &mut Vec<String>) {
    let password = "correct horse battery staple";
    check_type(
        spec,
        "SignupRequest",
        &[SignupRequest {
            email: "ada@example.com".into(),
            password: password.into(),
            org_name: "acme".into(),
        }],
        errors,
    );
    check_type(
        spec,
        "LoginRequest",
        &[LoginRequest {
            email: "ada@example.com".into(),
            password: password.into(),
        }],
        errors,
    );
    check_type(
        spec,
        "RefreshRequest",
        &[RefreshRequest {
            refresh_token: tokens().refresh_token,
        }],
        errors,
    );
    check_type(
        spec,
        "AcceptInvitationRequest",
        &[AcceptInvitationRequest {
            token: created_invitation().token,
            password: password.into(),
        }],
        errors,
    );
    check_type(spec, "TokenResponse", &[tokens()], errors);
    check_type(
        spec,
        "SignupResponse",
        &[SignupResponse {
            user: user(None),
            org: org(),
            project: project(),
            tokens: tokens(),
        }],
        errors,
    );
    check_type(spec, "User", &[user(Some("finance")), user(None)], errors);
    check_type(spec, "Me", &[me_full(), me_bare()], errors);
    check_type(spec, "Membership", &me_full().memberships, errors);
    check_type(spec, "Org", &[org()], errors);
    check_type(spec, "OrgList", &[List { items: vec![org()] }], errors);
    check_type(
        spec,
        "CreateOrgRequest",
        &[CreateOrgRequest {
            name: "acme".into(),
            owner_email: "ada@example.com".into(),
        }],
        errors,
    );
    check_type(
        spec,
        "CreateOrgResponse",
        &[CreateOrgResponse {
            org: org(),
            project: project(),
            invitation: created_invitation(),
        }],
        errors,
    );
    check_type(spec, "Project", &[project()], errors);
    check_type(
        spec,
        "ProjectList",
        &[List {
            items: vec![project()],
        }],
        errors,
    );
    check_type(
        spec,
        "CreateProjectRequest",
        &[CreateProjectRequest {
            name: "research".into(),
        }],
        errors,
    );
    check_type(spec, "Member", &[member()], errors);
    check_type(
        spec,
        "MemberList",
        &[List {
            items: vec![member()],
        }],
        errors,
    );
    check_type(spec, "ProjectMember", &[project_member()], errors);
    check_type(
        spec,
        "ProjectMemberList",
        &[List {
            items: vec![project_member()],
        }],
        errors,
    );
    check_type(
        spec,
        "SetRoleRequest",
        &[SetRoleRequest {
            role: "viewer".into(),
        }],
        errors,
    );
    check_type(
        spec,
        "CreateInvitationRequest",
        &[
            CreateInvitationRequest {
                email: "grace@example.com".into(),
                role: "member".into(),
                ttl_seconds: Some(86_400),
            },
            CreateInvitationRequest {
                email: "grace@example.com".into(),
                role: "owner".into(),
                ttl_seconds: None,
            },
        ],
        errors,
    );
    check_type(
        spec,
        "Invitation",
        &[invitation_full(), invitation_pending()],
        errors,
    );
    check_type(
        spec,
        "InvitationList",
        &[List {
            items: vec![invitation_full(), invitation_pending()],
        }],
        errors,
    );
    check_type(spec, "CreatedInvitation", &[created_invitation()], errors);
    check_type(spec, "ServiceAccount", &[service_account()], errors);
    check_type(
        spec,
        "ServiceAccountList",
        &[List {
            items: vec![service_account()],
        }],
        errors,
    );
    check_type(
        spec,
        "CreateServiceAccountRequest",
        &[CreateServiceAccountRequest {
            name: "ci".into(),
            role: "member".into(),
        }],
        errors,
    );
    check_type(
        spec,
        "CreateApiKeyRequest",
        &[
            CreateApiKeyRequest {
                name: "ci deploys".into(),
                service_account_id: Some(ACCOUNT),
                bind_to_project: Some(true),
                scopes: Some(vec!["instances:read".into()]),
                expires_in_seconds: Some(3600),
            },
            CreateApiKeyRequest {
                name: "laptop".into(),
                service_account_id: None,
                bind_to_project: None,
                scopes: None,
                expires_in_seconds: None,
            },
        ],
        errors,
    );
    check_type(spec, "ApiKey", &[api_key_full(), api_key_bare()], errors);
    check_type(
        spec,
        "ApiKeyList",
        &[List {
            items: vec![api_key_full(), api_key_bare()],
        }],
        errors,
    );
    check_type(
        spec,
        "CreatedApiKey",
        &[CreatedApiKey {
            api_key: api_key_bare(),
            key: "gpk_0123456789abcdefghijklmnopqrstuvwxyz01".into(),
        }],
        errors,
    );
    check_type(
        spec,
        "CreateJoinTokenRequest",
        &[
            CreateJoinTokenRequest {
                ttl_seconds: Some(600),
            },
            CreateJoinTokenRequest { ttl_seconds: None },
        ],
        errors,
    );
    check_type(
        spec,
        "JoinToken",
        &[JoinToken {
            id: Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0015),
            token: "gpj_0123456789abcdefghijklmnopqrstuvwxyz".into(),
            expires_at: ts(9),
        }],
        errors,
    );
    check_type(spec, "Quota", &[quota_full(), quota_bare()], errors);
    check_type(
        spec,
        "SetPlanRequest",
        &[SetPlanRequest {
            plan: "standard".into(),
        }],
        errors,
    );
    check_type(
        spec,
        "SetQuotaRequest",
        &[
            SetQuotaRequest {
                max_concurrent_gpus: Some(8),
            },
            SetQuotaRequest {
                max_concurrent_gpus: None,
            },
        ],
        errors,
    );
    check_type(
        spec,
        "AuditEvent",
        &[audit_event_full(), audit_event_bare()],
        errors,
    );
    check_type(
        spec,
        "AuditEventPage",
        &[
            Page {
                items: vec![audit_event_full(), audit_event_bare()],
                next_cursor: Some("42".into()),
            },
            Page {
                items: vec![],
                next_cursor: None,
            },
        ],
        errors,
    );
    check_type(spec, "AuditAnchor", &[audit_anchor()], errors);
    check_type(
        spec,
        "AuditVerifyReport",
        &[
            AuditVerifyReport {
                ok: false,
                events_checked: 1200,
                chains_checked: 9,
                problems: vec!["chain platform/0: event 7 does not link to event 6".into()],
            },
            AuditVerifyReport {
                ok: true,
                events_checked: 0,
                chains_checked: 0,
                problems: vec![],
            },
        ],
        errors,
    );
    check_type(
        spec,
        "AuditBundle",
        &[
            AuditBundle {
                format: platform_audit::BUNDLE_FORMAT.into(),
                org: Some(ORG),
                since: ts(0),
                until: ts(9),
                events: vec![audit_event_full()],
                context: vec![audit_event_full()],
                heads: vec![audit_anchor()],
            },
            AuditBundle {
                format: platform_audit::BUNDLE_FORMAT.into(),
                org: None,
                since: ts(0),
                until: ts(9),
                events: vec![],
                context: vec![],
                heads: vec![],
            },
        ],
        errors,
    );
}

fn billing_account() -> api_types::billing::BillingAccount {
    api_types::billing::BillingAccount {
        org_id: ORG,
        mode: "prepaid".into(),
        currency: "USD".into(),
        credit_minor: 10_000,
        unbilled_minor: 17,
        available_minor: 9_983,
        spent_this_month_minor: 17,
        monthly_spend_limit_minor: Some(50_000),
        receivable_minor: 0,
        standing: "good".into(),
    }
}

fn invoice_full() -> api_types::billing::Invoice {
    api_types::billing::Invoice {
        id: shared_ids::InvoiceId::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0031),
        org_id: ORG,
        period: "2026-01".into(),
        period_start: ts(0),
        period_end: ts(9),
        kind: "adjusting".into(),
        corrects: Some(shared_ids::InvoiceId::from_u128(0x32)),
        state: "paid".into(),
        currency: "USD".into(),
        total_minor: 299,
        credit_applied_minor: 100,
        amount_due_minor: 0,
        created_at: ts(1),
        finalized_at: Some(ts(2)),
        paid_at: Some(ts(3)),
        lines: vec![api_types::billing::InvoiceLine {
            line_no: 1,
            meter: "gpu_seconds".into(),
            sku: "h100-80gb-sxm".into(),
            price_version: 1,
            description: "H100 GPU-hours".into(),
            quantity: "3600".into(),
            amount_exact_minor: "299".into(),
            amount_minor: 299,
        }],
    }
}

fn billing_schema_errors(spec: &Value, errors: &mut Vec<String>) {
    use api_types::billing::*;
    let account = billing_account();
    let bare_account = BillingAccount {
        monthly_spend_limit_minor: None,
        ..account.clone()
    };
    check_type(
        spec,
        "BillingAccount",
        &[account.clone(), bare_account],
        errors,
    );
    check_type(
        spec,
        "UsageReport",
        &[UsageReport {
            from: ts(0),
            to: ts(9),
            items: vec![DailyUsage {
                day: ts(0).date_naive(),
                meter: "gpu_seconds".into(),
                sku: "h100-80gb-sxm".into(),
                quantity: "7200".into(),
            }],
        }],
        errors,
    );
    let rated = RatedUsage {
        meter: "input_tokens".into(),
        sku: "".into(),
        quantity: "37".into(),
        unit_label: "million input tokens".into(),
        price_version: 1,
        amount_minor: 0,
        amount_exact_minor: "0.000555".into(),
        currency: "USD".into(),
    };
    check_type(spec, "RatedUsage", std::slice::from_ref(&rated), errors);
    check_type(
        spec,
        "LiveUsage",
        &[LiveUsage {
            period: "2026-01".into(),
            period_start: ts(0),
            period_end: ts(9),
            currency: "USD".into(),
            total_minor: 0,
            total_exact_minor: "0.000555".into(),
            items: vec![rated],
        }],
        errors,
    );
    check_type(
        spec,
        "SetSpendLimitRequest",
        &[
            SetSpendLimitRequest {
                monthly_spend_limit_minor: Some(5_000),
            },
            SetSpendLimitRequest::default(),
        ],
        errors,
    );
    check_type(
        spec,
        "SetBillingModeRequest",
        &[SetBillingModeRequest {
            mode: "postpaid".into(),
        }],
        errors,
    );
    let method = Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0033);
    check_type(
        spec,
        "TopUpRequest",
        &[TopUpRequest {
            amount_minor: 5_000,
            payment_method_id: method,
            idempotency_key: Some("topup-1".into()),
        }],
        errors,
    );
    let paid = PaymentOutcome {
        result: "paid".into(),
        reason: None,
    };
    let declined = PaymentOutcome {
        result: "declined".into(),
        reason: Some("card reported stolen".into()),
    };
    check_type(
        spec,
        "PaymentOutcome",
        &[declined.clone(), paid.clone()],
        errors,
    );
    check_type(
        spec,
        "TopUp",
        &[TopUp {
            outcome: paid,
            billing: account.clone(),
        }],
        errors,
    );
    check_type(
        spec,
        "PayRequest",
        &[
            PayRequest {
                payment_method_id: Some(method),
                idempotency_key: Some("pay-1".into()),
            },
            PayRequest::default(),
        ],
        errors,
    );
    check_type(
        spec,
        "Payments",
        &[Payments {
            items: vec![InvoicePayment {
                invoice_id: invoice_full().id,
                outcome: declined,
            }],
            billing: account,
        }],
        errors,
    );
    let pm = PaymentMethod {
        id: method,
        org_id: ORG,
        provider: "sandbox".into(),
        label: "card".into(),
        is_default: true,
        created_at: ts(0),
    };
    check_type(spec, "PaymentMethod", std::slice::from_ref(&pm), errors);
    check_type(
        spec,
        "PaymentMethodList",
        &[List { items: vec![pm] }],
        errors,
    );
    check_type(
        spec,
        "AddPaymentMethodRequest",
        &[AddPaymentMethodRequest {
            token: "pm_sandbox_success".into(),
            label: Some("ops card".into()),
            make_default: Some(true),
        }],
        errors,
    );
    let bare_invoice = Invoice {
        kind: "invoice".into(),
        corrects: None,
        state: "draft".into(),
        finalized_at: None,
        paid_at: None,
        lines: vec![],
        ..invoice_full()
    };
    check_type(
        spec,
        "Invoice",
        &[invoice_full(), bare_invoice.clone()],
        errors,
    );
    check_type(
        spec,
        "InvoicePage",
        &[
            Page {
                items: vec![bare_invoice],
                next_cursor: Some(invoice_full().id.to_string()),
            },
            Page {
                items: vec![],
                next_cursor: None,
            },
        ],
        errors,
    );
    check_type(
        spec,
        "MeteringRunRequest",
        &[MeteringRunRequest {
            period: "2026-01".into(),
            price_version: Some(2),
        }],
        errors,
    );
    let change = LineChange {
        line_id: Uuid::from_u128(0x34),
        kind: "adjustment".into(),
        meter: "gpu_seconds".into(),
        sku: "h100-80gb-sxm".into(),
        price_version: 2,
        quantity_before: "3600".into(),
        quantity_after: "3600".into(),
        amount_before_exact_minor: "299".into(),
        amount_after_exact_minor: "249".into(),
    };
    check_type(spec, "LineChange", std::slice::from_ref(&change), errors);
    let run = MeteringRunOutcome {
        org_id: ORG,
        period: "2026-01".into(),
        price_version: 2,
        run_id: Some(Uuid::from_u128(0x35)),
        changes: vec![change],
        total_before_exact_minor: "299".into(),
        total_after_exact_minor: "249".into(),
    };
    let unchanged = MeteringRunOutcome {
        run_id: None,
        changes: vec![],
        total_before_exact_minor: "249".into(),
        ..run.clone()
    };
    check_type(spec, "MeteringRunOutcome", &[run, unchanged], errors);
    let price = Price {
        meter: "gpu_seconds".into(),
        sku: "h100-80gb-sxm".into(),
        unit_price_minor: "299".into(),
        per_units: 3600,
        unit_label: "GPU-hour".into(),
        currency: "USD".into(),
    };
    check_type(spec, "Price", std::slice::from_ref(&price), errors);
    let version = PriceBookVersion {
        version: 2,
        effective_from: ts(0),
        note: "cheaper H100s".into(),
        created_by: "user:0195".into(),
        created_at: ts(1),
        prices: vec![price.clone()],
    };
    check_type(
        spec,
        "PriceBookVersion",
        std::slice::from_ref(&version),
        errors,
    );
    check_type(
        spec,
        "PriceBookVersionList",
        &[List {
            items: vec![version],
        }],
        errors,
    );
    check_type(
        spec,
        "NewPriceBookVersion",
        &[NewPriceBookVersion {
            effective_from: ts(0),
            note: "cheaper H100s".into(),
            prices: vec![price],
        }],
        errors,
    );
    let event = UsageEvent {
        id: "req-0195/input".into(),
        meter: "input_tokens".into(),
        sku: Some("llama-3-70b".into()),
        quantity: Quantity::Decimal("1500.5".into()),
        started_at: ts(0),
        ended_at: ts(1),
        project_id: Some(project_id()),
    };
    let bare_event = UsageEvent {
        sku: None,
        quantity: Quantity::Whole(37),
        project_id: None,
        ..event.clone()
    };
    check_type(
        spec,
        "UsageEvent",
        &[event.clone(), bare_event.clone()],
        errors,
    );
    check_type(
        spec,
        "UsageEventBatch",
        &[UsageEventBatch {
            events: vec![event, bare_event],
        }],
        errors,
    );
    check_type(
        spec,
        "UsageBatchOutcome",
        &[UsageBatchOutcome {
            accepted: 2,
            duplicates: 1,
        }],
        errors,
    );
}

#[test]
fn schemas_match_wire_types() {
    let errors = schema_errors(&spec());
    assert!(
        errors.is_empty(),
        "doc/api/openapi.yaml schemas disagree with api-types:\n  {}",
        errors.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Responses

fn problem_response_errors(spec: &Value) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut errors = Vec::new();
    for (method, path, op) in operations(spec) {
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        for (status, response) in responses {
            if status.starts_with('2') {
                continue;
            }
            checked += 1;
            let at = format!("{} {path} {status}", method.to_uppercase());
            let response = resolve(spec, response);
            let content = response.get("content").and_then(Value::as_object);
            let media: Vec<&String> = content.map(|c| c.keys().collect()).unwrap_or_default();
            if media != [PROBLEM_JSON] {
                errors.push(format!(
                    "{at}: content is {media:?}, not only {PROBLEM_JSON}"
                ));
                continue;
            }
            let reference = content.unwrap()[PROBLEM_JSON]
                .pointer("/schema/$ref")
                .and_then(Value::as_str);
            if reference != Some(PROBLEM_REF) {
                errors.push(format!("{at}: schema is {reference:?}, not {PROBLEM_REF}"));
            }
        }
    }
    (checked, errors)
}

#[test]
fn every_problem_response_uses_problem_json() {
    let spec = spec();
    schema(&spec, "Problem");
    let (checked, errors) = problem_response_errors(&spec);
    assert!(checked > 0, "the spec documents no error responses at all");
    assert!(
        errors.is_empty(),
        "error responses must be {PROBLEM_JSON} with schema {PROBLEM_REF}:\n  {}",
        errors.join("\n  ")
    );
}

/// Operation hygiene: unique operationIds, summaries, a success response, 401 where a credential
/// is needed (and never the credential's 401 where none is), declared path parameters, and the
/// handlers' 202s and `Location`.
#[test]
fn operations_are_complete() {
    let spec = spec();
    let default_security = spec.get("security").cloned().unwrap_or(json!([]));
    let mut ids = BTreeMap::new();
    let mut errors = Vec::new();
    for (method, path, op) in operations(&spec) {
        let at = format!("{} {path}", method.to_uppercase());
        match op.get("operationId").and_then(Value::as_str) {
            Some(id) => {
                if let Some(other) = ids.insert(id.to_string(), at.clone()) {
                    errors.push(format!("{at}: operationId {id} also used by {other}"));
                }
            }
            None => errors.push(format!("{at}: no operationId")),
        }
        if op
            .get("summary")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errors.push(format!("{at}: no summary"));
        }
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        let successes: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
        if successes.is_empty() {
            errors.push(format!("{at}: no 2xx response"));
        }
        let security = op.get("security").unwrap_or(&default_security);
        let secured = security.as_array().is_some_and(|s| !s.is_empty());
        // A public route may answer 401 of its own (a wrong password, a used refresh token), but
        // never the missing-credential 401.
        let credential_401 = responses.get("401").and_then(|r| r.get("$ref"))
            == Some(&json!("#/components/responses/Unauthorized"));
        if secured && !responses.contains_key("401") {
            errors.push(format!("{at}: secured but documents no 401"));
        }
        if !secured && credential_401 {
            errors.push(format!(
                "{at}: takes no credential but documents the credential 401 `unauthorized`"
            ));
        }
        if path.starts_with("/v1/") && !responses.contains_key("500") {
            errors.push(format!("{at}: no 500 response"));
        }
        let declared: BTreeSet<String> = op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| resolve(&spec, p))
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect();
        let templated: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_string)
            .collect();
        if declared != templated {
            errors.push(format!(
                "{at}: path parameters {templated:?} but declared {declared:?}"
            ));
        }
        // The handlers answer 202 Accepted for create and delete, and create sets Location.
        if path.starts_with("/v1/instances") && (method == "post" || method == "delete") {
            if successes != ["202"] {
                errors.push(format!(
                    "{at}: success must be exactly 202, is {successes:?}"
                ));
            }
            if method == "post"
                && responses
                    .get("202")
                    .and_then(|r| r.pointer("/headers/Location"))
                    .is_none()
            {
                errors.push(format!("{at}: 202 must document the Location header"));
            }
        }
    }
    let register = spec.pointer("/paths/~1v1~1nodes~1register/post/security");
    if register != Some(&json!([{ "nodeAuth": [] }])) {
        errors.push(format!(
            "POST /v1/nodes/register must use only the node scheme, has {register:?}"
        ));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Access

const TOO_MANY_REQUESTS: &str = "#/components/responses/TooManyRequests";
const LOGIN_THROTTLED: &str = "#/components/responses/LoginThrottled";

fn has_param(spec: &Value, op: &Value, location: &str, name: &str) -> bool {
    op.get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| resolve(spec, p))
        .any(|p| p["in"] == location && p["name"] == name)
}

/// Every operation's `x-gpuaas-access` and `x-gpuaas-audit-action` against the route table, and
/// what the access implies: the security, the `project`/`org` parameter, the 401/403/404s the
/// middleware answers, the 429 every route can answer and the 413 every body can.
fn access_errors(spec: &Value) -> Vec<String> {
    use api::auth::Access;
    let mut errors = Vec::new();
    let default_security = spec.get("security").cloned().unwrap_or(json!([]));
    let table: BTreeMap<(String, String), api::auth::Route> = api::route_table()
        .into_iter()
        .map(|r| ((r.method.to_lowercase(), r.path.to_string()), r))
        .collect();
    for (method, path, op) in operations(spec) {
        let at = format!("{} {path}", method.to_uppercase());
        let Some(route) = table.get(&(method.clone(), path.clone())) else {
            errors.push(format!("{at}: not in api::route_table()"));
            continue;
        };
        let access = route.access.describe();
        match op.get("x-gpuaas-access").and_then(Value::as_str) {
            Some(documented) if documented == access => {}
            Some(documented) => errors.push(format!(
                "{at}: x-gpuaas-access is {documented:?}, the route table says {access:?}"
            )),
            None => errors.push(format!("{at}: no x-gpuaas-access (should be {access:?})")),
        }
        match op.get("x-gpuaas-audit-action").and_then(Value::as_str) {
            Some(documented) if documented == route.action => {}
            Some(documented) => errors.push(format!(
                "{at}: x-gpuaas-audit-action is {documented:?}, the route table says {:?}",
                route.action
            )),
            None => errors.push(format!(
                "{at}: no x-gpuaas-audit-action (should be {:?})",
                route.action
            )),
        }

        let security = op.get("security").unwrap_or(&default_security);
        let expected_security = match route.access {
            Access::Public => json!([]),
            Access::Node => json!([{ "nodeAuth": [] }]),
            _ => json!([{ "bearerAuth": [] }]),
        };
        if *security != expected_security {
            errors.push(format!(
                "{at}: access {access} needs security {expected_security}, has {security}"
            ));
        }
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        let mut need = |status: &str, why: &str| {
            if !responses.contains_key(status) {
                errors.push(format!("{at}: access {access} can answer {status} ({why})"));
            }
        };
        match route.access {
            Access::Project(_) => {
                need("403", "forbidden");
                need("404", "project_not_found");
                need("422", "ambiguous_project");
            }
            Access::Org(_) | Access::OrgOrPlatform(..) => {
                need("403", "forbidden");
                need("404", "org_not_found");
            }
            Access::Platform(_) => need("404", "route_not_found"),
            Access::Public | Access::Authenticated | Access::Node => {}
        }
        need("429", "rate_limited");
        if op.get("requestBody").is_some() {
            need("413", "body_too_large");
        }
        let throttled = responses
            .get("429")
            .and_then(|r| r.get("$ref"))
            .and_then(Value::as_str);
        if responses.contains_key("429")
            && !matches!(throttled, Some(TOO_MANY_REQUESTS | LOGIN_THROTTLED))
        {
            errors.push(format!(
                "{at}: 429 must be {TOO_MANY_REQUESTS} or {LOGIN_THROTTLED} (with Retry-After)"
            ));
        }
        let parameter = match route.access {
            Access::Project(_) => Some(("query", "project")),
            Access::OrgOrPlatform(..) => Some(("query", "org")),
            Access::Org(_) => Some(("path", "org")),
            _ => None,
        };
        if let Some((location, name)) = parameter
            && !has_param(spec, op, location, name)
        {
            errors.push(format!(
                "{at}: access {access} reads the {location} parameter `{name}`; document it"
            ));
        }
    }
    let documented: BTreeSet<(String, String)> = operations(spec)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    for (method, path) in table.keys() {
        if !documented.contains(&(method.clone(), path.clone())) {
            errors.push(format!(
                "{} {path}: in api::route_table() but not in the spec",
                method.to_uppercase()
            ));
        }
    }
    for name in ["TooManyRequests", "LoginThrottled"] {
        let retry = spec.pointer(&format!("/components/responses/{name}/headers/Retry-After"));
        if retry.is_none() {
            errors.push(format!(
                "response {name} must document the Retry-After header"
            ));
        }
    }
    errors
}

#[test]
fn access_matches_the_route_table() {
    let spec = spec();
    let errors = access_errors(&spec);
    assert!(
        errors.is_empty(),
        "doc/api/openapi.yaml disagrees with api::route_table():\n  {}",
        errors.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Enums

fn enum_of(spec: &Value, name: &str) -> BTreeSet<String> {
    schema(spec, name)["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no enum"))
        .iter()
        .map(|v| v.as_str().expect("string enum").to_string())
        .collect()
}

fn wire_name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn enums_match_the_domain() {
    use product_gpuaas::{FailureReason, GpuHealth, InstanceState, NodeState};
    let spec = spec();

    // Each match is exhaustive: a new variant stops this compiling until it is listed here (and
    // then in the spec).
    let instance_states = [
        InstanceState::Pending,
        InstanceState::Provisioning,
        InstanceState::Running,
        InstanceState::Terminating,
        InstanceState::Terminated,
        InstanceState::Failed,
    ]
    .map(|s| match s {
        InstanceState::Pending
        | InstanceState::Provisioning
        | InstanceState::Running
        | InstanceState::Terminating
        | InstanceState::Terminated
        | InstanceState::Failed => s.as_str(),
    });
    let failure_reasons = [
        FailureReason::InsufficientCapacity,
        FailureReason::NodeUnreachable,
        FailureReason::StartFailed,
        FailureReason::Timeout,
        FailureReason::WorkloadVanished,
    ]
    .map(|r| match r {
        FailureReason::InsufficientCapacity
        | FailureReason::NodeUnreachable
        | FailureReason::StartFailed
        | FailureReason::Timeout
        | FailureReason::WorkloadVanished => r.as_str(),
    });
    let node_states = [
        NodeState::Registering,
        NodeState::Ready,
        NodeState::Cordoned,
        NodeState::Draining,
        NodeState::Down,
        NodeState::Decommissioned,
    ]
    .map(|s| match s {
        NodeState::Registering
        | NodeState::Ready
        | NodeState::Cordoned
        | NodeState::Draining
        | NodeState::Down
        | NodeState::Decommissioned => s.as_str(),
    });
    let gpu_health = [GpuHealth::Healthy, GpuHealth::Unhealthy].map(|h| match h {
        GpuHealth::Healthy | GpuHealth::Unhealthy => wire_name(h),
    });

    assert_eq!(enum_of(&spec, "InstanceState"), string_set(instance_states));
    assert_eq!(enum_of(&spec, "FailureReason"), string_set(failure_reasons));
    assert_eq!(enum_of(&spec, "NodeState"), string_set(node_states));
    assert_eq!(
        enum_of(&spec, "GpuHealth"),
        string_set(gpu_health.iter().map(String::as_str))
    );
}

#[test]
fn platform_enums_match_the_domain() {
    use platform_iam::{Permission, PlatformRole, Role};
    use shared_kernel::{AuthMethod, PrincipalKind};
    let spec = spec();

    // `ALL` lists every variant (the domain's own tests keep it whole); the matches below are
    // exhaustive, so a new variant stops this compiling until it is listed (and then in the spec).
    let roles = Role::ALL.map(|r| match r {
        Role::Owner | Role::Admin | Role::Member | Role::Viewer => r.as_str(),
    });
    let platform_roles = [PlatformRole::Operator, PlatformRole::Finance].map(|r| match r {
        PlatformRole::Operator | PlatformRole::Finance => r.as_str(),
    });
    let scopes = Permission::ALL.map(Permission::as_str);
    let principal_kinds = [
        PrincipalKind::User,
        PrincipalKind::ServiceAccount,
        PrincipalKind::Node,
        PrincipalKind::System,
        PrincipalKind::Anonymous,
    ]
    .map(|k| match k {
        PrincipalKind::User
        | PrincipalKind::ServiceAccount
        | PrincipalKind::Node
        | PrincipalKind::System
        | PrincipalKind::Anonymous => wire_name(k),
    });
    let auth_methods = [
        AuthMethod::AccessToken,
        AuthMethod::ApiKey,
        AuthMethod::NodeCredential,
        AuthMethod::JoinToken,
        AuthMethod::System,
        AuthMethod::None,
    ]
    .map(|m| match m {
        AuthMethod::AccessToken
        | AuthMethod::ApiKey
        | AuthMethod::NodeCredential
        | AuthMethod::JoinToken
        | AuthMethod::System
        | AuthMethod::None => m.as_str(),
    });
    let outcomes = [
        platform_audit::Outcome::Success,
        platform_audit::Outcome::Failure,
    ]
    .map(|o| match o {
        platform_audit::Outcome::Success | platform_audit::Outcome::Failure => o.as_str(),
    });

    assert_eq!(enum_of(&spec, "Role"), string_set(roles));
    assert_eq!(enum_of(&spec, "PlatformRole"), string_set(platform_roles));
    assert_eq!(enum_of(&spec, "Scope"), string_set(scopes));
    assert_eq!(
        enum_of(&spec, "PrincipalKind"),
        string_set(principal_kinds.iter().map(String::as_str))
    );
    assert_eq!(enum_of(&spec, "AuthMethod"), string_set(auth_methods));
    assert_eq!(enum_of(&spec, "AuditOutcome"), string_set(outcomes));
}

// ---------------------------------------------------------------------------------------------
// Request limits

fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// A request schema's strings and arrays as `(path, schema)`, paths as `api_types::limits`
/// spells them (`name`, `list[]`, `list[].name`), through `$ref`s and `oneOf`s.
fn leaves<'a>(spec: &'a Value, schema: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    let schema = resolve(spec, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        for alternative in alternatives {
            leaves(spec, alternative, path, out);
        }
        return;
    }
    let types = types_of(schema);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let at = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            leaves(spec, property, &at, out);
        }
    } else if types.contains(&"array") {
        out.push((path.to_string(), schema));
        if let Some(items) = schema.get("items") {
            leaves(spec, items, &format!("{path}[]"), out);
        }
    } else if types.contains(&"string") || schema.get("enum").is_some() {
        out.push((path.to_string(), schema));
    }
}

fn is_array(schema: &Value) -> bool {
    types_of(schema).contains(&"array")
}

/// What an operation takes: its JSON body's schema (if any) and its parameters.
fn request_parts<'a>(spec: &'a Value, op: &'a Value) -> (Option<&'a Value>, Vec<&'a Value>) {
    let body = op.pointer("/requestBody/content/application~1json/schema");
    let parameters = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| resolve(spec, p))
        .collect();
    (body, parameters)
}

/// Every string a request can carry (body fields, parameters) must be bounded: `maxLength`, or
/// a `format`, `enum` or `const` that bounds it; every array of a body, `maxItems`.
fn unbounded_request_strings(spec: &Value) -> Vec<String> {
    let bounded = |s: &Value| {
        ["maxLength", "format", "enum", "const"]
            .iter()
            .any(|k| s.get(*k).is_some())
    };
    let mut errors = Vec::new();
    for (method, path, op) in operations(spec) {
        let at = format!("{} {path}", method.to_uppercase());
        let (body, parameters) = request_parts(spec, op);
        if let Some(body) = body {
            let mut found = Vec::new();
            leaves(spec, body, "", &mut found);
            for (field, schema) in found {
                if is_array(schema) {
                    if schema.get("maxItems").is_none() {
                        errors.push(format!("{at}: body array `{field}` has no maxItems"));
                    }
                } else if !bounded(schema) {
                    errors.push(format!(
                        "{at}: body string `{field}` has neither maxLength nor a format or enum"
                    ));
                }
            }
        }
        for parameter in parameters {
            let schema = resolve(spec, &parameter["schema"]);
            if types_of(schema).contains(&"string") && !bounded(schema) {
                errors.push(format!(
                    "{at}: {} parameter `{}` has neither maxLength nor a format or enum",
                    parameter["in"].as_str().unwrap_or("?"),
                    parameter["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    errors
}

#[test]
fn every_request_string_is_bounded() {
    let errors = unbounded_request_strings(&spec());
    assert!(
        errors.is_empty(),
        "doc/api/openapi.yaml lets requests carry unbounded strings:\n  {}",
        errors.join("\n  ")
    );
}

/// One documented string against the code's rule: its length and its pattern (or format); a
/// documented `enum` instead must lie within the rule.
fn compare_rule(at: &str, rule: &api_types::limits::Rule, s: &Value, errors: &mut Vec<String>) {
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        for value in values.iter().filter_map(Value::as_str) {
            if rule.check(at, value).is_err() {
                errors.push(format!(
                    "{at}: the enum value {value:?} breaks the code's rule {rule:?}"
                ));
            }
        }
        return;
    }
    let number = |key: &str| s.get(key).and_then(Value::as_u64).map(|n| n as usize);
    let format = s.get("format").and_then(Value::as_str);
    match (number("maxLength"), format) {
        (Some(max), _) if max != rule.max => errors.push(format!(
            "{at}: maxLength is {max}, the code allows {}",
            rule.max
        )),
        (None, None) => errors.push(format!("{at}: no maxLength (the code allows {})", rule.max)),
        _ => {}
    }
    if number("maxLength").is_some() && number("minLength").unwrap_or(0) != rule.min {
        errors.push(format!(
            "{at}: minLength is {:?}, the code needs {}",
            number("minLength"),
            rule.min
        ));
    }
    let pattern = s.get("pattern").and_then(Value::as_str);
    match (rule.chars.pattern(), rule.chars.format()) {
        (Some(code), _) if format.is_none() && pattern != Some(code) => errors.push(format!(
            "{at}: pattern is {pattern:?}, the code checks {code:?}"
        )),
        (None, Some(code)) if format != Some(code) => errors.push(format!(
            "{at}: format is {format:?}, the code checks {code:?}"
        )),
        _ => {}
    }
}

/// The documented limits against `api_types::limits`: every string field of every request
/// body and every query parameter, and the codes of their violations.
fn limit_errors(spec: &Value) -> Vec<String> {
    use api_types::limits::{ALL, QUERY};
    let mut errors = Vec::new();
    let mut bodies = BTreeSet::new();
    for (method, path, op) in operations(spec) {
        let (body, parameters) = request_parts(spec, op);
        if let Some(name) = body
            .and_then(|b| b.get("$ref"))
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
        {
            bodies.insert(name.to_string());
        }
        for parameter in parameters.iter().filter(|p| p["in"] == "query") {
            let name = parameter["name"].as_str().unwrap_or_default();
            let at = format!("{} {path} ?{name}", method.to_uppercase());
            let schema = resolve(spec, &parameter["schema"]);
            match QUERY.iter().find(|f| f.path == name) {
                None => errors.push(format!("{at}: no rule in api_types::limits::QUERY")),
                Some(_) if !types_of(schema).contains(&"string") => {}
                Some(f) => compare_rule(&at, &f.rule, schema, &mut errors),
            }
        }
    }
    let codes = documented_codes(spec);
    let mut expect_code = |at: &str, code: &str, status: u16| match codes.get(code) {
        Some(documented) if *documented == status => {}
        other => errors.push(format!(
            "{at}: a violation answers `{code}` ({status}), documented as {other:?}"
        )),
    };
    for f in QUERY {
        let status = api::extract::query_status(f.rule.code).as_u16();
        expect_code(&format!("?{}", f.path), f.rule.code, status);
    }
    expect_code(
        "other query parameters",
        api_types::limits::OTHER_QUERY.code,
        400,
    );
    for limits in ALL {
        for f in limits.strings {
            expect_code(&format!("{}.{}", limits.schema, f.path), f.rule.code, 422);
        }
        for a in limits.arrays {
            expect_code(&format!("{}.{}", limits.schema, a.path), a.code, 422);
        }
    }
    expect_code("NUL in a body", api_types::limits::INVALID_FIELD, 422);
    for limits in ALL {
        let name = limits.schema;
        if !bodies.remove(name) {
            errors.push(format!(
                "{name}: has limits but no operation takes it as its body"
            ));
            continue;
        }
        let mut found = Vec::new();
        leaves(spec, schema(spec, name), "", &mut found);
        for (path, s) in &found {
            let at = format!("{name}.{path}");
            if is_array(s) {
                match limits.arrays.iter().find(|a| a.path == path) {
                    None => errors.push(format!("{at}: an array the code does not bound")),
                    Some(a) if s.get("maxItems").and_then(Value::as_u64) != Some(a.max as u64) => {
                        errors.push(format!(
                            "{at}: maxItems is {:?}, the code allows {}",
                            s.get("maxItems"),
                            a.max
                        ))
                    }
                    Some(_) => {}
                }
                continue;
            }
            // A uuid or a date-time is a typed field: serde parses it, nothing else gets through.
            let typed = matches!(
                s.get("format").and_then(Value::as_str),
                Some("uuid" | "date-time")
            );
            match limits.strings.iter().find(|f| f.path == path) {
                None if typed => {}
                None => errors.push(format!("{at}: a string the code has no rule for")),
                Some(f) => compare_rule(&at, &f.rule, s, &mut errors),
            }
        }
        let documented: BTreeSet<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        for path in limits
            .strings
            .iter()
            .map(|f| f.path)
            .chain(limits.arrays.iter().map(|a| a.path))
        {
            if !documented.contains(path) {
                errors.push(format!(
                    "{name}.{path}: the code has a rule for a field the schema lacks"
                ));
            }
        }
    }
    for name in bodies {
        errors.push(format!(
            "{name}: a request body missing from api_types::limits::ALL"
        ));
    }
    errors
}

#[test]
fn documented_limits_are_the_codes() {
    let errors = limit_errors(&spec());
    assert!(
        errors.is_empty(),
        "doc/api/openapi.yaml and api_types::limits disagree:\n  {}",
        errors.join("\n  ")
    );
}

/// A character class of a `pattern`: `[...]` or `[^...]`, with ranges and `\uXXXX` escapes.
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != self.negated
    }
}

/// The patterns `api_types::limits` states: `^`, classes each taken once, `*` or `+` times,
/// then `$` (where a repeated class comes last, greedy matching is exact).
fn parse_pattern(pattern: &str) -> Vec<(Class, char)> {
    let body = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or_else(|| panic!("{pattern}: not anchored"));
    let mut chars = body.chars().peekable();
    let mut out = Vec::new();
    let read = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> char {
        match chars.next().expect("unterminated class") {
            '\\' => match chars.next() {
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap()
                }
                Some(c) => c,
                None => panic!("{pattern}: dangling escape"),
            },
            c => c,
        }
    };
    while let Some(open) = chars.next() {
        assert_eq!(open, '[', "{pattern}: only classes are supported");
        let negated = chars.next_if_eq(&'^').is_some();
        let mut ranges = Vec::new();
        while chars.peek() != Some(&']') {
            let lo = read(&mut chars);
            let hi = if chars.peek() == Some(&'-') {
                chars.next();
                if chars.peek() == Some(&']') {
                    ranges.push(('-', '-'));
                    lo
                } else {
                    read(&mut chars)
                }
            } else {
                lo
            };
            ranges.push((lo, hi));
        }
        chars.next();
        let quantifier = chars.next_if(|c| *c == '*' || *c == '+').unwrap_or('1');
        out.push((Class { negated, ranges }, quantifier));
    }
    out
}

fn pattern_matches(pattern: &[(Class, char)], s: &str) -> bool {
    let mut chars = s.chars().peekable();
    for (class, quantifier) in pattern {
        let mut taken = 0;
        while (*quantifier != '1' || taken == 0) && chars.next_if(|c| class.contains(*c)).is_some()
        {
            taken += 1;
        }
        if taken == 0 && *quantifier != '*' {
            return false;
        }
    }
    chars.next().is_none()
}

/// The patterns the contract states say what the code checks: `Chars::pattern` and
/// `Chars::allows` agree on every character below U+0200 and a few beyond, alone and in
/// company.
#[test]
fn patterns_say_what_the_code_checks() {
    use api_types::limits::Chars;
    let mut samples: Vec<String> = (0u32..0x200)
        .chain([0x2028, 0x200b, 0xfeff, 0x4e2d, 0x1f600])
        .filter_map(char::from_u32)
        .flat_map(|c| [c.to_string(), format!("a{c}"), format!("{c}a-1")])
        .collect();
    samples.extend(
        [
            "",
            "a",
            "-a",
            "a-",
            "train-1",
            "GPU-1/0",
            "0.1.0+dev",
            "x y",
            "é",
        ]
        .map(String::from),
    );
    for chars in [
        Chars::Slug,
        Chars::Host,
        Chars::Ident,
        Chars::Token,
        Chars::Base64Url,
        Chars::Line,
        Chars::Text,
    ] {
        let pattern = chars.pattern().expect("a pattern");
        let parsed = parse_pattern(pattern);
        for s in &samples {
            // The code's rules come with a minimum length; the pattern of the empty string is
            // moot where it is at least 1.
            if s.is_empty() {
                continue;
            }
            assert_eq!(
                pattern_matches(&parsed, s),
                chars.allows(s),
                "{chars:?}: pattern {pattern} and the code disagree on {s:?}"
            );
        }
    }
    assert!(Chars::Email.pattern().is_none() && Chars::Email.format() == Some("email"));
    assert!(Chars::Email.allows("a@b.c") && Chars::Email.allows("a+b@c.d.e"));
    for bad in ["a b@c.d", "a@b", "@b.c", "abc", "a@b.c\u{0}", "a\t@b.c"] {
        assert!(!Chars::Email.allows(bad), "{bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Error codes

/// The codes listed in the description of `Problem.code`, as `code -> status`, from lines
/// shaped "- `code` (status): meaning".
pub(crate) fn documented_codes(spec: &Value) -> BTreeMap<String, u16> {
    let description = spec
        .pointer("/components/schemas/Problem/properties/code/description")
        .and_then(Value::as_str)
        .expect("Problem.code has a description");
    description
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("- `")?;
            let (code, rest) = rest.split_once('`')?;
            let status = rest.trim().strip_prefix('(')?.split_once(')')?.0;
            Some((
                code.to_string(),
                status
                    .parse()
                    .unwrap_or_else(|_| panic!("bad status for {code}")),
            ))
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The sources whose codes reach API callers, besides `api/src` itself: the shared error type and
/// the operation context; the parts of the gpuaas domain the handlers call (placement runs only
/// inside workflows); the IAM modules the handlers and the auth middleware call; the policy crate
/// (plans, quotas, entitlements); the audit reads. (The audit's `append` is left out: the
/// middleware logs its failures, it never answers them.)
const DOMAIN_SOURCES: &[&str] = &[
    "domains/shared/kernel/src/error.rs",
    "domains/shared/kernel/src/context.rs",
    "domains/products/gpuaas/src/instance.rs",
    "domains/products/gpuaas/src/node.rs",
    "domains/products/gpuaas/src/node_lifecycle.rs",
    "domains/products/gpuaas/src/events.rs",
    "domains/products/gpuaas/src/sku.rs",
    "domains/platform/iam/src/orgs.rs",
    "domains/platform/iam/src/users.rs",
    "domains/platform/iam/src/members.rs",
    "domains/platform/iam/src/service_accounts.rs",
    "domains/platform/iam/src/api_keys.rs",
    "domains/platform/iam/src/sessions.rs",
    "domains/platform/iam/src/nodes.rs",
    "domains/platform/iam/src/passwords.rs",
    "domains/platform/iam/src/authority.rs",
    "domains/platform/policy/src/lib.rs",
    "domains/platform/audit/src/lib.rs",
    "domains/platform/audit/src/list.rs",
    "domains/platform/audit/src/export.rs",
    "domains/platform/audit/src/verify.rs",
    // Billing: what its routes, and admission on `POST /v1/instances`, answer.
    "domains/platform/billing/src/account.rs",
    "domains/platform/billing/src/invoice.rs",
    "domains/platform/billing/src/ledger.rs",
    "domains/platform/billing/src/metering.rs",
    "domains/platform/billing/src/payment.rs",
    "domains/platform/billing/src/period.rs",
    "domains/platform/billing/src/price_book.rs",
    "domains/platform/billing/src/usage.rs",
];

/// Codes a scanned file emits that no caller ever gets: `(file, code, why)`.
const NOT_ANSWERED: &[(&str, &str, &str)] = &[
    (
        "domains/shared/kernel/src/context.rs",
        "project_required",
        "the auth middleware resolves the project before a project-scoped handler runs",
    ),
    (
        "domains/platform/iam/src/users.rs",
        "user_not_found",
        "no route reads or deletes a user by id",
    ),
    (
        "domains/products/gpuaas/src/instance.rs",
        "project_mismatch",
        "the handler creates the instance in the project the request acts in",
    ),
    (
        "domains/platform/policy/src/lib.rs",
        "transaction_required",
        "only placement, inside workflows, takes the allocation lock",
    ),
    (
        "domains/platform/policy/src/lib.rs",
        "quota_exceeded",
        "only placement, inside workflows, admits allocations",
    ),
    (
        "domains/platform/audit/src/list.rs",
        "audit_filter_invalid",
        "the handler never filters by an org and by platform events at once",
    ),
    (
        "domains/platform/audit/src/export.rs",
        "audit_range_invalid",
        "the handler answers `invalid_range` first",
    ),
    (
        "domains/platform/billing/src/ledger.rs",
        "empty_transaction",
        "the ledger is posted only by billing itself, with entries it builds",
    ),
    (
        "domains/platform/billing/src/ledger.rs",
        "unbalanced_transaction",
        "the ledger is posted only by billing itself, with balanced entries it builds",
    ),
    (
        "domains/platform/billing/src/ledger.rs",
        "ledger_key_reused",
        "billing derives every ledger key from what it posts",
    ),
    (
        "domains/platform/billing/src/ledger.rs",
        "ledger_transaction_not_found",
        "no route reads or corrects a ledger transaction by id",
    ),
    (
        "domains/platform/billing/src/invoice.rs",
        "invoice_build_raced",
        "only the billing cycle workflow builds drafts",
    ),
    (
        "domains/platform/billing/src/invoice.rs",
        "invoice_not_voidable",
        "no route voids an invoice",
    ),
    (
        "domains/platform/billing/src/invoice.rs",
        "invoice_void",
        "only the billing cycle workflow finalizes invoices",
    ),
    (
        "domains/platform/billing/src/invoice.rs",
        "mixed_currencies",
        "only the billing cycle workflow builds drafts",
    ),
    (
        "domains/platform/billing/src/payment.rs",
        "invalid_attempt",
        "only the payment retry workflow numbers attempts",
    ),
    (
        "domains/platform/billing/src/usage.rs",
        "invalid_org",
        "the handler stamps every event with the key's org",
    ),
];

/// Domain codes a handler answers at another status, the code unchanged: `(domain file, code,
/// status answered, handler file, the domain call)`. Every statement of the handler file that
/// makes the call must name the code (its `map_err` to the API's error).
const REMAPPED: &[(&str, &str, u16, &str, &str)] = &[
    (
        "domains/platform/iam/src/users.rs",
        "invalid_credentials",
        401,
        "api/src/routes/platform/auth.rs",
        "users::authenticate(",
    ),
    (
        "domains/platform/iam/src/members.rs",
        "invalid_credentials",
        401,
        "api/src/routes/platform/auth.rs",
        "members::accept(",
    ),
    (
        "domains/platform/iam/src/sessions.rs",
        "invalid_refresh_token",
        401,
        "api/src/routes/platform/auth.rs",
        "sessions::rotate(",
    ),
    (
        "domains/platform/iam/src/sessions.rs",
        "invalid_refresh_token",
        401,
        "api/src/routes/platform/auth.rs",
        "sessions::logout(",
    ),
];

/// The scanned sources as `(path relative to the workspace, text)`.
fn api_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("api/src"), &mut files);
    // The request limits name the codes of their violations.
    files.push(root.join("api/types/src/limits.rs"));
    files.extend(DOMAIN_SOURCES.iter().map(|f| root.join(f)));
    files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let relative = f.strip_prefix(&root).unwrap_or(&f).to_string_lossy();
            (relative.replace('\\', "/"), text)
        })
        .collect()
}

fn status_named(name: &str) -> Option<u16> {
    Some(match name {
        "BAD_REQUEST" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "NOT_FOUND" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "CONFLICT" => 409,
        "REQUEST_TIMEOUT" => 408,
        "PAYLOAD_TOO_LARGE" => 413,
        "UNSUPPORTED_MEDIA_TYPE" => 415,
        "UNPROCESSABLE_ENTITY" => 422,
        "TOO_MANY_REQUESTS" => 429,
        "INTERNAL_SERVER_ERROR" => 500,
        "SERVICE_UNAVAILABLE" => 503,
        _ => return None,
    })
}

/// How a call names its status.
enum Status {
    /// Fixed by the call (e.g. `DomainError::invalid` is always 422).
    Fixed(u16),
    /// A `StatusCode::NAME` argument before the code.
    Argument,
    /// As `Argument` where there is one; otherwise the call is not an `ApiError` and is skipped.
    MaybeArgument,
}

/// `(call, how it names its status, string literals before the code)`.
const CALLS: &[(&str, Status, usize)] = &[
    ("DomainError::invalid(", Status::Fixed(422), 0),
    ("DomainError::not_found(", Status::Fixed(404), 0),
    ("DomainError::conflict(", Status::Fixed(409), 0),
    ("ApiError::bad_request(", Status::Fixed(400), 0),
    ("ApiError::new(", Status::Argument, 0),
    // Inside `impl ApiError` (e.g. `internal`).
    ("Self::new(", Status::MaybeArgument, 0),
    // IAM's `check_name(what, code, name)`: an invalid name, the code second.
    ("check_name(", Status::Fixed(422), 1),
];

fn is_code(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The code a call passes, from the text after its `(`: the argument after an optional
/// `…StatusCode::NAME,` and `skip` string literals, when it is a string literal or names a
/// `const NAME: &str = "…"` of the same file. Returns the status's name too, if there was one.
/// `None` for anything else (`e.code()`, a variable): those codes come from the calls that made
/// them.
fn code_argument<'a>(args: &'a str, skip: usize, file: &str) -> Option<(Option<&'a str>, String)> {
    let mut rest = args.trim_start();
    let mut status = None;
    if let Some((first, after)) = rest.split_once(',') {
        let first = first.trim();
        if let Some((_, name)) = first.rsplit_once("StatusCode::")
            && first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            status = Some(name);
            rest = after.trim_start();
        }
    }
    for _ in 0..skip {
        let literal = rest.strip_prefix('"')?;
        let end = literal.find('"')?;
        rest = literal[end + 1..]
            .trim_start()
            .strip_prefix(',')?
            .trim_start();
    }
    let code = if let Some(literal) = rest.strip_prefix('"') {
        literal[..literal.find('"')?].to_string()
    } else {
        let ident_len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let (ident, after) = rest.split_at(ident_len);
        if ident.is_empty() || !after.trim_start().starts_with([',', ')']) {
            return None;
        }
        let definition = format!("const {ident}: &str = \"");
        let value = &file[file.find(&definition)? + definition.len()..];
        value[..value.find('"')?].to_string()
    };
    is_code(&code).then_some((status, code))
}

/// Every literal code the sources emit, as `(file, code, status)`.
fn emissions(sources: &[(String, String)]) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for (file, text) in sources {
        for (call, how, skip) in CALLS {
            for (start, _) in text.match_indices(call) {
                // `check_name(` must not be the tail of a longer name.
                if text[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let args = &text[start + call.len()..];
                let Some((named, code)) = code_argument(args, *skip, text) else {
                    continue;
                };
                let named = named.map(|name| {
                    status_named(name)
                        .unwrap_or_else(|| panic!("{file}: unknown status {name} for `{code}`"))
                });
                let status = match (how, named) {
                    (Status::Fixed(status), _) => *status,
                    (_, Some(status)) => status,
                    (Status::Argument, None) => {
                        panic!("{file}: cannot read the status of {call}..\"{code}\"")
                    }
                    (Status::MaybeArgument, None) => continue,
                };
                out.push((file.clone(), code, status));
            }
        }
    }
    out
}

/// The codes callers can get, as `code -> statuses`, and the problems with `NOT_ANSWERED` and
/// `REMAPPED` (stale entries, a remap the handler does not make).
fn emitted_codes(sources: &[(String, String)]) -> (BTreeMap<String, BTreeSet<u16>>, Vec<String>) {
    let mut errors = Vec::new();
    let mut codes: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut used_not_answered = BTreeSet::new();
    let mut used_remapped = BTreeSet::new();
    for (file, code, status) in emissions(sources) {
        if let Some(i) = NOT_ANSWERED
            .iter()
            .position(|(f, c, _)| *f == file && *c == code)
        {
            used_not_answered.insert(i);
            continue;
        }
        let mut status = status;
        for (i, remap) in REMAPPED.iter().enumerate() {
            if remap.0 == file && remap.1 == code {
                used_remapped.insert(i);
                status = remap.2;
            }
        }
        codes.entry(code).or_default().insert(status);
    }
    for (i, (file, code, why)) in NOT_ANSWERED.iter().enumerate() {
        if !used_not_answered.contains(&i) {
            errors.push(format!(
                "NOT_ANSWERED: {file} no longer emits `{code}` ({why}); drop the entry"
            ));
        }
    }
    for (i, (file, code, status, handler, call)) in REMAPPED.iter().enumerate() {
        if !used_remapped.contains(&i) {
            errors.push(format!(
                "REMAPPED: {file} no longer emits `{code}`; drop the entry"
            ));
        }
        let text = &sources
            .iter()
            .find(|(f, _)| f == handler)
            .unwrap_or_else(|| panic!("REMAPPED: no source {handler}"))
            .1;
        let calls: Vec<&str> = text
            .match_indices(call)
            .map(|(start, _)| text[start..].split(';').next().unwrap())
            .collect();
        if calls.is_empty() {
            errors.push(format!(
                "REMAPPED: {handler} no longer calls {call}..); drop the entry"
            ));
        }
        for statement in calls {
            if !statement.contains(code) {
                errors.push(format!(
                    "{handler}: `{call}..)` passes the domain's `{code}` through unchanged; \
                     map it to the {status} `{code}` the API documents (`.map_err(..)`)"
                ));
            }
        }
    }
    (codes, errors)
}

#[test]
fn problem_codes_are_documented() {
    let spec = spec();
    let documented = documented_codes(&spec);
    let sources = api_sources();
    let (emitted, mut errors) = emitted_codes(&sources);
    let expected = [
        "unknown_sku",
        "unauthorized",
        "internal",
        "weak_password",
        "sku_not_entitled",
        "invalid_org_name",
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|c| !emitted.contains_key(**c))
        .collect();
    assert!(
        missing.is_empty(),
        "the source scan found too little (no {missing:?}): {emitted:?}"
    );
    for (code, statuses) in &emitted {
        match documented.get(code) {
            None => errors.push(format!(
                "`{code}` ({statuses:?}) is emitted but not listed in Problem.code"
            )),
            Some(status) if statuses.len() != 1 || !statuses.contains(status) => errors.push(
                format!("`{code}` is documented as {status} but emitted as {statuses:?}"),
            ),
            Some(_) => {}
        }
    }
    // Stale entries: every documented code must still occur in the sources (codes passed on by a
    // helper, like the 429s of `limits.rs`, occur as literals at its callers).
    for code in documented.keys() {
        let literal = format!("\"{code}\"");
        if !sources.iter().any(|(_, text)| text.contains(&literal)) {
            errors.push(format!(
                "`{code}` is listed in Problem.code but no longer occurs in the sources"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The scanner reads the shapes of call the sources use.
#[test]
fn the_code_scanner_reads_every_shape_of_call() {
    let source = r#"
        pub const TAKEN: &str = "name_taken";
        fn a() { ApiError::new(StatusCode::FORBIDDEN, "one", "d") }
        fn b() { ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "two",
            format!("x"),
        ) }
        fn c() { DomainError::conflict(TAKEN, format!("an org named {name} exists")) }
        fn d() { DomainError::invalid(code, format!("{what} names are 1-63 characters")) }
        fn e() { orgs::check_name("org", "three", name)?; }
        fn f() { Self::new(status, e.code(), e.to_string()) }
        fn g() { ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, detail) }
        fn h() { my_check_name("x", "not_this", y) }
    "#;
    let found: BTreeSet<(String, u16)> = emissions(&[("x.rs".into(), source.into())])
        .into_iter()
        .map(|(_, code, status)| (code, status))
        .collect();
    let expected: BTreeSet<(String, u16)> = [
        ("one", 403),
        ("two", 422),
        ("name_taken", 409),
        ("three", 422),
    ]
    .into_iter()
    .map(|(c, s)| (c.to_string(), s))
    .collect();
    assert_eq!(found, expected);
}

// ---------------------------------------------------------------------------------------------
// The checks can fail

/// The checks above must notice drift: break a copy of the spec in each way and expect errors.
#[test]
fn checks_catch_a_broken_spec() {
    let good = load_spec(Path::new(SPEC_PATH));

    let mut spec = good.clone();
    let instance = spec
        .pointer_mut("/components/schemas/Instance/properties")
        .unwrap()
        .as_object_mut()
        .unwrap();
    instance.remove("node_id");
    instance.insert("sku_id".into(), json!({ "type": "string" }));
    let errors = schema_errors(&spec).join("\n");
    assert!(
        errors.contains("node_id") && errors.contains("sku_id"),
        "{errors}"
    );

    let mut spec = good.clone();
    spec.pointer_mut("/components/schemas/CreateInstanceRequest")
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("additionalProperties");
    spec.pointer_mut("/components/schemas/Problem/required")
        .unwrap()
        .as_array_mut()
        .unwrap()
        .pop();
    let errors = schema_errors(&spec).join("\n");
    assert!(
        errors.contains("CreateInstanceRequest: the Rust type refuses unknown fields")
            && errors.contains("Problem: `required`"),
        "{errors}"
    );

    let mut spec = good.clone();
    *spec
        .pointer_mut("/components/schemas/InstanceState/enum")
        .unwrap() = json!(["pending"]);
    let errors = schema_errors(&spec).join("\n");
    assert!(errors.contains("\"failed\" is not one of"), "{errors}");

    let mut spec = good.clone();
    *spec
        .pointer_mut("/components/responses/Unauthorized/content")
        .unwrap() = json!({ "application/json": { "schema": { "type": "object" } } });
    let (_, errors) = problem_response_errors(&spec);
    assert!(
        errors.iter().any(|e| e.contains("GET /v1/skus 401")),
        "{errors:?}"
    );

    let mut spec = good.clone();
    *spec
        .pointer_mut("/paths/~1v1~1skus/get/x-gpuaas-access")
        .unwrap() = json!("public");
    spec.pointer_mut("/paths/~1v1~1instances/post")
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("x-gpuaas-audit-action");
    let quota = spec
        .pointer_mut("/paths/~1v1~1quota/get")
        .unwrap()
        .as_object_mut()
        .unwrap();
    quota.remove("parameters");
    quota["responses"].as_object_mut().unwrap().remove("403");
    let errors = access_errors(&spec).join("\n");
    assert!(
        errors.contains("GET /v1/skus: x-gpuaas-access is \"public\"")
            && errors.contains("POST /v1/instances: no x-gpuaas-audit-action")
            && errors.contains("GET /v1/quota: access project:quota:read can answer 403")
            && errors.contains(
                "GET /v1/quota: access project:quota:read reads the query parameter `project`"
            ),
        "{errors}"
    );

    let mut spec = good.clone();
    spec.pointer_mut("/components/schemas/CreateInstanceRequest/properties/command")
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("maxLength");
    *spec
        .pointer_mut("/components/parameters/Cursor/schema/pattern")
        .unwrap() = json!("^.*$");
    spec.pointer_mut("/components/schemas/RegisterNodeRequest/properties/gpus")
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("maxItems");
    *spec
        .pointer_mut("/components/schemas/SignupRequest/properties/org_name/maxLength")
        .unwrap() = json!(64);
    let unbounded = unbounded_request_strings(&spec).join("\n");
    let limits = limit_errors(&spec).join("\n");
    assert!(
        unbounded.contains("POST /v1/instances: body string `command` has neither")
            && unbounded.contains("POST /v1/nodes/register: body array `gpus` has no maxItems"),
        "{unbounded}"
    );
    assert!(
        limits.contains("CreateInstanceRequest.command: no maxLength")
            && limits.contains("?cursor: pattern is Some(\"^.*$\")")
            && limits.contains("RegisterNodeRequest.gpus: maxItems is None")
            && limits.contains("SignupRequest.org_name: maxLength is 64, the code allows 63"),
        "{limits}"
    );

    assert!(schema_errors(&good).is_empty());
    assert!(problem_response_errors(&good).1.is_empty());
    assert!(access_errors(&good).is_empty());
    assert!(unbounded_request_strings(&good).is_empty());
    assert!(limit_errors(&good).is_empty());
}
