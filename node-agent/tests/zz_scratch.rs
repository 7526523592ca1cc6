use node_agent::workload::{ProcessRuntime, WorkloadArgs};
use std::time::Duration;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::with_args(
        dir.path(),
        Duration::from_millis(200),
        Duration::from_millis(500),
        &WorkloadArgs {
            workload_max_processes: 64,
            ..Default::default()
        },
        4,
    )
    .unwrap();
    let s = contract_node::WorkloadSpec {
        instance_id: shared_ids::InstanceId::new(),
        command: "f() { while :; do f & done; }; (sleep 0.3; f) & exec sleep 5".into(),
        gpu_indices: vec![0],
        gpu_uuids: vec![],
    };
    rt.start(&s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let id = s.instance_id.to_string();
    for f in [
        "/sys/fs/cgroup/pids/gpuaas/ID/pids.current",
        "/sys/fs/cgroup/pids/gpuaas/ID/pids.max",
        "/sys/fs/cgroup/pids/gpuaas/ID/pids.events",
        "/sys/fs/cgroup/memory/gpuaas/ID/memory.failcnt",
        "/sys/fs/cgroup/memory/gpuaas/ID/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/gpuaas/ID/memory.usage_in_bytes",
    ] {
        let f = f.replace("ID", &id);
        eprintln!("{f}: {:?}", std::fs::read_to_string(&f));
    }
    let log =
        std::fs::read_to_string(dir.path().join("instances").join(&id).join("output.log")).unwrap();
    eprintln!("{}", &log[..log.len().min(500)]);
    rt.stop(s.instance_id).await.unwrap();
}
