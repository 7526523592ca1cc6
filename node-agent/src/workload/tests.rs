//! Workload isolation with real processes (no mocks): own uid, network namespace, private
//! `/tmp` and `/dev/shm`, cgroups, limits, an environment of its own, agent state out of the
//! workload's reach, complete stops, capped logs. They need root (CI runs as root); as another user each says so and passes.

use super::isolation::{self, procs};
use super::{ProcessRuntime, RuntimeError, WorkloadArgs};
use contract_node::{WorkloadSpec, WorkloadStatus};
use shared_ids::InstanceId;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: workload isolation needs root (CI runs as root)");
    }
    root
}

/// A state directory workloads can reach by path (tempdirs are 0700).
fn state_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A host directory for files a workload must see: its /tmp and /dev/shm are its own.
fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn runtime_with(dir: &Path, args: WorkloadArgs) -> Arc<ProcessRuntime> {
    Arc::new(
        ProcessRuntime::with_args(
            dir,
            Duration::from_millis(200),
            Duration::from_millis(500),
            &args,
            4,
        )
        .unwrap(),
    )
}

fn runtime(dir: &Path) -> Arc<ProcessRuntime> {
    runtime_with(dir, WorkloadArgs::default())
}

fn spec(command: &str) -> WorkloadSpec {
    WorkloadSpec {
        instance_id: InstanceId::new(),
        command: command.into(),
        gpu_indices: vec![0],
        gpu_uuids: vec!["GPU-a".into()],
    }
}

fn agent_dir(dir: &Path, id: InstanceId) -> PathBuf {
    dir.join("instances").join(id.to_string())
}

fn log_of(dir: &Path, id: InstanceId) -> String {
    std::fs::read_to_string(agent_dir(dir, id).join("output.log")).unwrap_or_default()
}

fn uid_of(dir: &Path, id: InstanceId) -> u32 {
    std::fs::read_to_string(agent_dir(dir, id).join("uid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the workload's log holds every one of `needles`; returns the log.
async fn wait_log(dir: &Path, id: InstanceId, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = log_of(dir, id);
        if needles.iter().all(|n| log.contains(n)) {
            return log;
        }
        assert!(Instant::now() < deadline, "log lacks {needles:?}: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_running(rt: &ProcessRuntime, spec: &WorkloadSpec) -> i32 {
    rt.start(spec).await.unwrap();
    match rt.await_running(spec.instance_id).await.unwrap() {
        WorkloadStatus::Running { pid } => pid,
        other => panic!("not running: {other:?}"),
    }
}

/// Asserts nothing of the workload is left: no process of its uid, no cgroup, uid given back.
fn assert_nothing_left(dir: &Path, id: InstanceId, uid: u32) {
    assert_eq!(
        procs::of_uid(uid),
        Vec::<i32>::new(),
        "processes of uid {uid}"
    );
    let cgroups = std::fs::read_to_string(agent_dir(dir, id).join("cgroups")).unwrap_or_default();
    for line in cgroups.lines() {
        let path = line.split_once(' ').unwrap().1;
        assert!(!Path::new(path).exists(), "cgroup {path} still there");
    }
    assert!(agent_dir(dir, id).join("gone").exists());
    let claims = Path::new(isolation::DEFAULT_UID_CLAIMS_DIR);
    let claim = std::fs::read_to_string(claims.join(uid.to_string())).unwrap_or_default();
    assert!(
        !claim.contains(&id.to_string()),
        "uid {uid} still claimed by it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_runs_as_an_unprivileged_user_of_its_own() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let rt = runtime(dir.path());
    // A setuid-root copy of `id`: with no-new-privs it cannot make the workload root again.
    let tools = host_dir();
    let setuid_id = tools.path().join("id");
    std::fs::copy("/usr/bin/id", &setuid_id).unwrap();
    std::fs::set_permissions(&setuid_id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let command = format!(
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G) euid-via-setuid=$({} -u) home=$HOME pwd=$(pwd); \
         grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; echo ready; sleep 600",
        setuid_id.display()
    );
    let (a, b) = (spec(&command), spec(&command));
    start_running(&rt, &a).await;
    start_running(&rt, &b).await;
    let mut uids = Vec::new();
    for s in [&a, &b] {
        let log = wait_log(dir.path(), s.instance_id, &["ready"]).await;
        let uid = uid_of(dir.path(), s.instance_id);
        let work = dir.path().join("workloads").join(s.instance_id.to_string());
        assert!(uid >= 200_000, "{log}");
        assert!(
            log.contains(&format!(
                "uid={uid} gid={uid} groups={uid} euid-via-setuid={uid} home={} pwd={}",
                work.display(),
                work.display()
            )),
            "{log}"
        );
        assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
        assert!(log.contains("NoNewPrivs:\t1"), "{log}");
        // Its own directory is its uid's and closed to others; the agent's is closed to it.
        let meta = std::fs::metadata(&work).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&meta),
                meta.permissions().mode() & 0o777
            ),
            (uid, 0o700)
        );
        let agent = std::fs::metadata(agent_dir(dir.path(), s.instance_id)).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&agent),
                agent.permissions().mode() & 0o777
            ),
            (0, 0o700)
        );
        uids.push(uid);
    }
    assert_ne!(uids[0], uids[1], "two live instances never share a uid");
    for s in [&a, &b] {
        rt.stop(s.instance_id).await.unwrap();
    }
    for (s, uid) in [&a, &b].into_iter().zip(uids) {
        assert_nothing_left(dir.path(), s.instance_id, uid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setsid_child_and_a_fork_bomb_are_stopped_entirely() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let rt = runtime_with(
        dir.path(),
        WorkloadArgs {
            workload_max_processes: 64,
            ..WorkloadArgs::default()
        },
    );
    // A child in a session of its own that ignores SIGTERM, then a fork bomb that ignores it too
    // and keeps forking whatever fails.
    let s = spec(
        "setsid sh -c 'trap \"\" TERM; echo escaped; sleep 1000' & sleep 0.3; \
         exec python3 -c 'import os, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
         while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n'",
    );
    start_running(&rt, &s).await;
    wait_log(dir.path(), s.instance_id, &["escaped"]).await;
    let uid = uid_of(dir.path(), s.instance_id);
    // Each scan of /proc is slow while the bomb holds both cores: a few are enough.
    let mut most = 0;
    let sampling = Instant::now();
    while most < 48 && sampling.elapsed() < Duration::from_secs(3) {
        most = most.max(procs::of_uid(uid).len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most > 10,
        "the bomb forks: {most}: {}",
        log_of(dir.path(), s.instance_id)
    );
    assert!(most <= 64, "RLIMIT_NPROC/pids.max hold it at 64: {most}");
    let stopped = rt.stop(s.instance_id).await.unwrap();
    assert!(
        matches!(stopped, WorkloadStatus::Exited { .. }),
        "{stopped:?}"
    );
    assert_nothing_left(dir.path(), s.instance_id, uid);
    assert!(rt.known().is_empty(), "a stopped workload is not reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_whose_shell_ends_leaves_nothing_behind() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let rt = runtime(dir.path());
    let s = spec("setsid sleep 1000 & echo left-a-child; exit 0");
    rt.start(&s).await.unwrap();
    let failed = rt.await_running(s.instance_id).await;
    // The failure names the exit, never the output (that travels sealed, in the reply).
    assert!(
        matches!(&failed, Err(RuntimeError::StartFailed(_, why)) if why.contains("exit code 0") && !why.contains("left-a-child")),
        "{failed:?}"
    );
    assert!(
        matches!(rt.status_of(s.instance_id), WorkloadStatus::Exited { ref log_tail, .. } if log_tail.contains("left-a-child")),
        "the agent keeps the output for the reply"
    );
    assert_nothing_left(dir.path(), s.instance_id, uid_of(dir.path(), s.instance_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_finds_all_of_a_workload_and_stops_it() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let s = spec("setsid sh -c 'trap \"\" TERM; sleep 1000' & echo up; sleep 1000");
    let pid = {
        let first = runtime(dir.path());
        start_running(&first, &s).await
    };
    wait_log(dir.path(), s.instance_id, &["up"]).await;
    let uid = uid_of(dir.path(), s.instance_id);
    assert_eq!(
        procs::of_uid(uid).len(),
        4,
        "the shell and its sleep, the escaped shell and its sleep"
    );
    let second = runtime(dir.path());
    assert_eq!(
        second.adopt(),
        vec![(s.instance_id, WorkloadStatus::Running { pid })]
    );
    second.stop(s.instance_id).await.unwrap();
    assert_nothing_left(dir.path(), s.instance_id, uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workloads_listen_on_one_port_and_reach_only_their_own_loopback() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let rt = runtime(dir.path());
    // The host's loopback holds the port too, and answers "host".
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in host.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &conn, b"host");
        }
    });
    let script = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.bind(("127.0.0.1", port))
srv.listen()
def serve():
    while True:
        c, _ = srv.accept()
        c.sendall(name.encode())
        c.close()
threading.Thread(target=serve, daemon=True).start()
c = socket.create_connection(("127.0.0.1", port), timeout=5)
print("reached", c.recv(16).decode(), flush=True)
for addr in (("127.0.0.1", 5432), ("8.8.8.8", 53)):
    try:
        socket.create_connection(addr, timeout=2)
        print("open", addr[0], flush=True)
    except OSError as e:
        print("closed", addr[0], type(e).__name__, flush=True)
print("interfaces", [n for _, n in socket.if_nameindex()], flush=True)
threading.Event().wait()
"#;
    let specs: Vec<WorkloadSpec> = ["alpha", "beta"]
        .iter()
        .map(|name| spec(&format!("exec python3 -c '{script}' {name} {port}")))
        .collect();
    for s in &specs {
        start_running(&rt, s).await;
    }
    for (s, name) in specs.iter().zip(["alpha", "beta"]) {
        let log = wait_log(dir.path(), s.instance_id, &["interfaces"]).await;
        assert!(
            log.contains(&format!("reached {name}")),
            "its own server: {log}"
        );
        assert!(
            log.contains("closed 127.0.0.1"),
            "the host's loopback (Postgres) is out of reach: {log}"
        );
        assert!(log.contains("closed 8.8.8.8"), "no egress: {log}");
        assert!(log.contains("interfaces ['lo']"), "{log}");
    }
    // Both still listen on the port the host holds: three loopbacks.
    for s in &specs {
        assert!(matches!(
            rt.status_of(s.instance_id),
            WorkloadStatus::Running { .. }
        ));
        rt.stop(s.instance_id).await.unwrap();
    }
    let mut reply = String::new();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Read::read_to_string(&mut conn, &mut reply).unwrap();
    assert_eq!(reply, "host");
}

/// The lines of the host's mount table for `/tmp` and `/dev/shm`.
fn host_tmp_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" /tmp ") || l.contains(" /dev/shm "))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_has_a_private_tmp_and_dev_shm() {
    if !root() {
        return;
    }
    let mounts_before = host_tmp_mounts();
    let dir = state_dir();
    let rt = runtime_with(
        dir.path(),
        WorkloadArgs {
            workload_tmp_mib: 8,
            workload_shm_mib: 4,
            ..WorkloadArgs::default()
        },
    );
    // A world-readable file of the host's /tmp.
    let host = tempfile::Builder::new()
        .prefix("gpuaas-host-")
        .tempfile_in("/tmp")
        .unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let file = |id: InstanceId| format!("gpuaas-test-{id}");
    // Each writes its files, waits for `go` in its HOME (reachable at its path even where the
    // state directory lies under the host's /tmp), then looks for the other's and the host's.
    let command = |me: InstanceId, other: InstanceId| {
        let (mine, theirs) = (file(me), file(other));
        format!(
            "echo {me} > /tmp/{mine} && echo {me} > /dev/shm/{mine} && echo wrote; \
             while [ ! -e \"$HOME/go\" ]; do sleep 0.05; done; \
             for f in /tmp/{mine} /dev/shm/{mine} /tmp/{theirs} /dev/shm/{theirs} {host}; do \
               if [ -e $f ]; then echo \"sees $f\"; else echo \"hidden $f\"; fi; done; \
             echo modes $(stat -c %a /tmp /dev/shm); grep -E ' /(tmp|dev/shm) ' /proc/self/mounts; \
             dd if=/dev/zero of=/tmp/{mine}-big bs=1M count=16 2>/dev/null && echo tmp-unbounded || echo tmp-full; \
             dd if=/dev/zero of=/dev/shm/{mine}-big bs=1M count=8 2>/dev/null && echo shm-unbounded || echo shm-full; \
             echo checked; sleep 600",
            host = host.path().display(),
        )
    };
    let specs = [
        WorkloadSpec {
            instance_id: a,
            ..spec(&command(a, b))
        },
        WorkloadSpec {
            instance_id: b,
            ..spec(&command(b, a))
        },
    ];
    for s in &specs {
        start_running(&rt, s).await;
    }
    for s in &specs {
        wait_log(dir.path(), s.instance_id, &["wrote"]).await;
    }
    for s in &specs {
        let work = dir.path().join("workloads").join(s.instance_id.to_string());
        std::fs::write(work.join("go"), "").unwrap();
    }
    for (me, other) in [(a, b), (b, a)] {
        let log = wait_log(dir.path(), me, &["checked"]).await;
        for seen in [
            format!("/tmp/{}", file(me)),
            format!("/dev/shm/{}", file(me)),
        ] {
            assert!(log.contains(&format!("sees {seen}")), "{log}");
        }
        for hidden in [
            format!("/tmp/{}", file(other)),
            format!("/dev/shm/{}", file(other)),
            host.path().display().to_string(),
        ] {
            assert!(log.contains(&format!("hidden {hidden}")), "{log}");
        }
        assert!(log.contains("modes 1777 1777"), "{log}");
        assert!(
            log.contains("tmpfs /tmp tmpfs rw,nosuid,nodev") && log.contains("size=8192k"),
            "{log}"
        );
        assert!(
            log.contains("tmpfs /dev/shm tmpfs rw,nosuid,nodev") && log.contains("size=4096k"),
            "{log}"
        );
        assert!(
            log.contains("tmp-full") && log.contains("shm-full"),
            "{log}"
        );
    }
    // Nothing of theirs reached the host: no files, no mounts.
    for id in [a, b] {
        for d in ["/tmp", "/dev/shm"] {
            let path = Path::new(d).join(file(id));
            assert!(!path.exists(), "{} on the host", path.display());
        }
    }
    assert_eq!(host_tmp_mounts(), mounts_before);
    for s in &specs {
        rt.stop(s.instance_id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_identity_cannot_make_the_agent_signal_another_process() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let rt = runtime(dir.path());
    let mut victim = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let v = victim.id();
    // It copies the victim's real start time, and writes where the agent used to keep state.
    let s = spec(&format!(
        "st=$(cut -d' ' -f22 /proc/{v}/stat); echo \"{v} $st\" > identity; echo {v} > pid; \
         mkdir -p instances/$GPUAAS_INSTANCE_ID && echo \"{v} $st\" > instances/$GPUAAS_INSTANCE_ID/identity; \
         (echo \"{v} $st\" > ../../instances/$GPUAAS_INSTANCE_ID/identity) 2>/dev/null || echo agent-dir-closed; \
         echo planted; sleep 600"
    ));
    let pid = start_running(&rt, &s).await;
    let log = wait_log(dir.path(), s.instance_id, &["planted"]).await;
    assert!(log.contains("agent-dir-closed"), "{log}");
    assert_ne!(pid, v as i32);
    assert_eq!(rt.status_of(s.instance_id), WorkloadStatus::Running { pid });
    let stopped = rt.stop(s.instance_id).await.unwrap();
    assert!(matches!(stopped, WorkloadStatus::Exited { .. }));
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the agent signalled a process that is not the workload's"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_logs_are_capped_and_keep_being_written() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let cap: u64 = 64 << 10;
    let rt = runtime_with(
        dir.path(),
        WorkloadArgs {
            workload_log_max_bytes: cap,
            ..WorkloadArgs::default()
        },
    );
    // About 2 MB at once, then a line every 100 ms.
    let s = spec(
        "i=0; while [ $i -lt 20000 ]; do echo \"line $i .........................................................................................\"; i=$((i+1)); done; \
         while :; do echo tick; sleep 0.1; done",
    );
    start_running(&rt, &s).await;
    let log = agent_dir(dir.path(), s.instance_id).join("output.log");
    let rotated = agent_dir(dir.path(), s.instance_id).join("output.log.1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let kept = std::fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if kept > 0 && text.contains("tick") && !text.contains("line ") {
            assert!(kept <= cap, "{kept}");
            assert!(
                len <= cap,
                "{len}: the writer appends at the new end, no hole"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not rotated: {len} bytes, {kept} kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On read too: the tail the agent reports is of the capped log.
    match rt.status_of(s.instance_id) {
        WorkloadStatus::Running { .. } => {}
        other => panic!("{other:?}"),
    }
    rt.stop(s.instance_id).await.unwrap();
    let total: u64 = [&log, &rotated]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(total <= 2 * cap + (64 << 10), "{total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_limited() {
    if !root() {
        return;
    }
    let dir = state_dir();
    let rt = runtime_with(
        dir.path(),
        WorkloadArgs {
            workload_memory_mib: 64,
            ..WorkloadArgs::default()
        },
    );
    let s = spec(
        "python3 -c 'b = bytearray(256 << 20); print(\"allocated\")'; echo status=$?; \
         echo files=$(ulimit -n) processes=$(ulimit -p); sleep 600",
    );
    start_running(&rt, &s).await;
    let log = wait_log(dir.path(), s.instance_id, &["files="]).await;
    assert!(!log.contains("allocated"), "{log}");
    assert!(!log.contains("status=0"), "{log}");
    let expected = |resource, default: u64| {
        let mut rlim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) into a local.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut rlim) }, 0);
        default.min(rlim.rlim_max)
    };
    let limits = format!(
        "files={} processes={}",
        expected(libc::RLIMIT_NOFILE, 65536),
        expected(libc::RLIMIT_NPROC, 16384)
    );
    assert!(log.contains(&limits), "{limits}: {log}");
    rt.stop(s.instance_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_own_gpus_device_nodes_open() {
    if !root() {
        return;
    }
    if !Path::new("/sys/fs/cgroup/devices/devices.deny").exists() {
        eprintln!("skipped: this host has no cgroup v1 devices controller");
        return;
    }
    let dir = state_dir();
    let rt = runtime(dir.path());
    // Simulated hosts have no /dev/nvidia*: nodes of the same numbers, with no driver behind
    // them, open with ENXIO where the cgroup lets them through and EPERM where it does not.
    let dev = host_dir();
    for (name, minor) in [("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)] {
        let path = dev.path().join(name);
        let made = std::process::Command::new("mknod")
            .arg(&path)
            .args(["c", "195", &minor.to_string()])
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let script = r#"
import errno, os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDWR))
        print(os.path.basename(path), "opened", flush=True)
    except OSError as e:
        print(os.path.basename(path), errno.errorcode[e.errno], flush=True)
print("done", flush=True)
"#;
    let d = dev.path().display();
    let s = spec(&format!(
        "python3 -c '{script}' {d}/nvidia0 {d}/nvidia1 {d}/nvidiactl; sleep 600"
    ));
    start_running(&rt, &s).await;
    let log = wait_log(dir.path(), s.instance_id, &["done"]).await;
    assert!(log.contains("nvidia0 ENXIO"), "its own GPU: {log}");
    assert!(log.contains("nvidia1 EPERM"), "another GPU: {log}");
    assert!(log.contains("nvidiactl ENXIO"), "{log}");
    rt.stop(s.instance_id).await.unwrap();
}

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

/// Set in the child process the environment test runs itself in.
const CHILD: &str = "GPUAAS_TEST_ENVIRONMENT_CHILD";

#[test]
fn a_workload_sees_none_of_the_agents_environment_and_its_command_is_not_in_argv() {
    if !root() {
        return;
    }
    if std::env::var_os(CHILD).is_some() {
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(environment_check());
    }
    // The agent's environment holds the secrets: this very test, run again in a process of its
    // own started with them (setting them here would race the other tests' threads).
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "workload::tests::a_workload_sees_none_of_the_agents_environment_and_its_command_is_not_in_argv",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .envs(SECRETS.iter().copied())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("1 passed"), "the check ran: {printed}");
}

async fn environment_check() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_isolation_a_workload_runs_as_the_agent_and_still_starts_and_stops() {
    let dir = state_dir();
    let rt = runtime_with(
        dir.path(),
        WorkloadArgs {
            isolation: isolation::IsolationMode::None,
            ..WorkloadArgs::default()
        },
    );
    let s = spec("echo uid=$(id -u); sleep 600 & wait");
    let pid = start_running(&rt, &s).await;
    // SAFETY: getuid(2) has no preconditions.
    let me = unsafe { libc::getuid() };
    wait_log(dir.path(), s.instance_id, &[&format!("uid={me}")]).await;
    assert!(!agent_dir(dir.path(), s.instance_id).join("uid").exists());
    let stopped = rt.stop(s.instance_id).await.unwrap();
    assert!(
        matches!(stopped, WorkloadStatus::Exited { .. }),
        "{stopped:?}"
    );
    assert!(!procs::stat(pid).is_some_and(|s| s.alive));
    assert!(rt.known().is_empty());
}
