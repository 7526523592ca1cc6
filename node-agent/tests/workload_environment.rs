//! A workload's environment is its own, not the agent's: the agent holds platform secrets (its
//! join token, API tokens, in development a database URL). Its own test binary, so the one test
//! can set the agent's environment before any other thread runs.

use contract_node::{WorkloadSpec, WorkloadStatus};
use node_agent::workload::ProcessRuntime;
use shared_ids::InstanceId;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const SECRETS: &[(&str, &str)] = &[
    ("GPUAAS_JOIN_TOKEN", "gjt_fake-join-token-s3cret"),
    ("GPUAAS_API_TOKEN", "gpk_fake-api-key-s3cret"),
    ("DATABASE_URL", "postgres://admin:s3cret-db@db/gpuaas"),
    (
        "GPUAAS_DATABASE_URL",
        "postgres://admin:s3cret-db2@db/gpuaas",
    ),
];

/// What a workload's environment may hold (the last three its shell adds itself).
const ALLOWED: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "LANG",
    "GPUAAS_INSTANCE_ID",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "PWD",
    "OLDPWD",
    "SHLVL",
];

#[test]
fn a_workload_sees_none_of_the_agents_environment_and_its_command_is_not_in_argv() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: workload isolation needs root (CI runs as root)");
        return;
    }
    for (name, value) in SECRETS {
        // SAFETY: the only test of this binary, before it starts any thread of its own.
        unsafe { std::env::set_var(name, value) };
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = ProcessRuntime::new(dir.path(), Duration::from_millis(200), Duration::ZERO).unwrap();
    let spec = WorkloadSpec {
        instance_id: InstanceId::new(),
        command: "echo begin-env; env; echo end-env; echo not-in-argv-7f3a >/dev/null; sleep 600"
            .into(),
        gpu_indices: vec![1, 3],
        gpu_uuids: vec!["GPU-a".into(), "GPU-b".into()],
    };
    let id = spec.instance_id;
    rt.start(&spec).await.unwrap();
    let pid = match rt.await_running(id).await.unwrap() {
        WorkloadStatus::Running { pid } => pid,
        other => panic!("{other:?}"),
    };
    let log_file = dir
        .path()
        .join("instances")
        .join(id.to_string())
        .join("output.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        if log.contains("end-env") {
            break log;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (name, value) in SECRETS {
        assert!(
            !log.contains(value) && !log.contains(&format!("{name}=")),
            "{name} leaked: {log}"
        );
    }
    let env: Vec<&str> = log
        .lines()
        .skip_while(|l| *l != "begin-env")
        .skip(1)
        .take_while(|l| *l != "end-env")
        .collect();
    for var in &env {
        let name = var.split_once('=').map_or(*var, |(n, _)| n);
        assert!(ALLOWED.contains(&name), "unexpected {var} in {env:?}");
    }
    let uid = std::fs::read_to_string(
        dir.path()
            .join("instances")
            .join(id.to_string())
            .join("uid"),
    )
    .unwrap();
    for expected in [
        format!("GPUAAS_INSTANCE_ID={id}"),
        "CUDA_VISIBLE_DEVICES=1,3".into(),
        "NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b".into(),
        format!("USER=gpuaas-{}", uid.trim()),
        format!(
            "HOME={}",
            dir.path().join("workloads").join(id.to_string()).display()
        ),
    ] {
        assert!(
            env.contains(&expected.as_str()),
            "{expected} missing: {env:?}"
        );
    }
    // Other users see the workload's argv, never its command line.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("not-in-argv-7f3a"),
        "{cmdline:?}"
    );
    rt.stop(id).await.unwrap();
}
