//! Contract tests: `doc/api/openapi.yaml` against what the code serves. The routes against
//! `api::routes()`, the component schemas against the serialised wire types, the problem
//! responses against the problem+json convention, the enums against the domain's states, and the
//! documented error codes against the codes the API and the domain emit. No database or Temporal.

use api_types::gpuaas::{
    CreateInstanceRequest, DrainNodeRequest, Gpu, GpuReport, Instance, Node, NodeEvent,
    RegisterNodeRequest, RegisterNodeResponse, Sku,
};
use api_types::{List, Page, Problem};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared_ids::{InstanceId, NodeId, ProjectId};
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
fn spec() -> Value {
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
                public_key: None,
                name: "gpu-node-1.example".into(),
                agent_version: "0.1.0".into(),
                discovery: "nvml".into(),
                gpus: vec![gpu_report(0), gpu_report(1)],
            },
            RegisterNodeRequest {
                public_key: None,
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
        "NodeList",
        &[List {
            items: vec![node_full(), node_bare()],
        }],
        &mut errors,
    );
    errors
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

/// Operation hygiene: unique operationIds, summaries, a success response, 401 where a token is
/// needed, declared path parameters, and the handlers' 202s and `Location`.
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
        if secured != responses.contains_key("401") {
            errors.push(format!(
                "{at}: secured={secured} but 401 documented={}",
                responses.contains_key("401")
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
    if register != Some(&json!([{ "joinToken": [] }])) {
        errors.push(format!(
            "POST /v1/nodes/register must use only the join token, has {register:?}"
        ));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
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

// ---------------------------------------------------------------------------------------------
// Error codes

/// The codes listed in the description of `Problem.code`, as `code -> status`, from lines
/// shaped "- `code` (status): meaning".
fn documented_codes(spec: &Value) -> BTreeMap<String, u16> {
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

/// The sources whose codes reach API callers: the API itself, the shared error type, and the
/// parts of the gpuaas domain the handlers call (placement runs only inside workflows).
fn api_sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("api/src"), &mut files);
    for f in [
        "domains/shared/kernel/src/error.rs",
        "domains/products/gpuaas/src/instance.rs",
        "domains/products/gpuaas/src/node.rs",
        "domains/products/gpuaas/src/node_lifecycle.rs",
        "domains/products/gpuaas/src/events.rs",
        "domains/products/gpuaas/src/sku.rs",
    ] {
        files.push(root.join(f));
    }
    files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f, text)
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
        "PAYLOAD_TOO_LARGE" => 413,
        "UNSUPPORTED_MEDIA_TYPE" => 415,
        "UNPROCESSABLE_ENTITY" => 422,
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

/// Codes the sources emit with a literal code, as `code -> statuses`. A call whose code is not a
/// literal (e.g. `e.code()`) is skipped: its codes come from the calls that built `e`.
fn emitted_codes(sources: &[(PathBuf, String)]) -> BTreeMap<String, BTreeSet<u16>> {
    const CALLS: &[(&str, Status)] = &[
        ("DomainError::invalid(", Status::Fixed(422)),
        ("DomainError::not_found(", Status::Fixed(404)),
        ("DomainError::conflict(", Status::Fixed(409)),
        ("ApiError::bad_request(", Status::Fixed(400)),
        ("ApiError::new(", Status::Argument),
        // Inside `impl ApiError` (e.g. `internal`).
        ("Self::new(", Status::MaybeArgument),
    ];
    let mut codes: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (file, text) in sources {
        for (call, how) in CALLS {
            for (start, _) in text.match_indices(call) {
                let args = &text[start + call.len()..];
                let Some(quote) = args.find('"') else {
                    continue;
                };
                let before = &args[..quote];
                if before.contains([')', ';', '{']) {
                    continue; // not a literal code
                }
                let code = args[quote + 1..].split('"').next().unwrap();
                let named = before.split_once("StatusCode::").map(|(_, rest)| {
                    let name = rest.trim_end_matches(|c: char| c == ',' || c.is_whitespace());
                    status_named(name).unwrap_or_else(|| {
                        panic!("{}: unknown status {name} for `{code}`", file.display())
                    })
                });
                let status = match (how, named) {
                    (Status::Fixed(status), _) => *status,
                    (_, Some(status)) => status,
                    (Status::Argument, None) => panic!(
                        "{}: cannot read the status of {call}..\"{code}\"",
                        file.display()
                    ),
                    (Status::MaybeArgument, None) => continue,
                };
                codes.entry(code.to_string()).or_default().insert(status);
            }
        }
    }
    codes
}

#[test]
fn problem_codes_are_documented() {
    let spec = spec();
    let documented = documented_codes(&spec);
    let sources = api_sources();
    let emitted = emitted_codes(&sources);
    assert!(
        ["unknown_sku", "unauthorized", "internal"]
            .iter()
            .all(|c| emitted.contains_key(*c)),
        "the source scan found too little: {emitted:?}"
    );
    let mut errors = Vec::new();
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
    // Stale entries: every documented code must still occur in the sources.
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

    assert!(schema_errors(&good).is_empty());
    assert!(problem_response_errors(&good).1.is_empty());
}
