//! Workload processes. Each instance runs `sh` with its command, isolated (`isolation`: its own
//! uid, network namespace, private `/tmp` and `/dev/shm`, cgroups and limits), with an explicit minimal environment, only its
//! GPUs visible, and its output captured to a capped log.
//!
//! Two directories per instance:
//! - `<root>/instances/<id>/`, the agent's, root-owned, 0700 (the workload cannot even look in):
//!   - `uid`: the workload's uid, claimed before it is spawned; `cgroups`: its cgroups;
//!   - `identity`: its shell's pid and start time, written right after spawning; `pid` too;
//!   - `output.log` (and `output.log.1`): stdout and stderr;
//!   - `exit_code`: written when the agent reaps the shell;
//!   - `stopped`: written before a stop, so a late, retried start never resurrects the instance;
//!   - `gone`: nothing of the workload is left; its uid and cgroups are given back.
//! - `<root>/workloads/<id>/`, the workload's: its working directory and `HOME` (`tmp/` is its
//!   `TMPDIR`), owned by its uid, 0700; deleted once nothing of the workload is left.
//!
//! A workload is everything in its cgroups and every process of its uid (unique to it while
//! anything of it lives): that is what status reports running, what a stop kills, and what a
//! restarted agent re-adopts. Its shell is its main process: when the shell ends, the rest of the
//! workload is killed (as a container's processes are when its init exits).
//!
//! The command is passed in the environment (readable only by the workload's own uid), not in
//! argv (`/proc/<pid>/cmdline` is world-readable).

pub mod isolation;
pub mod logs;
#[cfg(test)]
mod tests;

pub use isolation::{IsolationMode, WorkloadArgs};

use contract_node::{WorkloadSpec, WorkloadStatus};
use isolation::{GONE, Isolation, cgroups::Cgroups, procs};
use shared_ids::InstanceId;
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const LOG_TAIL_BYTES: u64 = 2048;
/// How often output logs are checked against their cap.
const LOG_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a stop keeps SIGKILLing before it reports the workload still running.
const KILL_WINDOW: Duration = Duration::from_secs(10);
/// How long a status read waits for the rest of a workload whose shell has ended to die.
const STRAGGLERS_WAIT: Duration = Duration::from_secs(1);

const IDENTITY: &str = "identity";
const PID: &str = "pid";
const UID: &str = "uid";
const CGROUPS: &str = "cgroups";
const EXIT_CODE: &str = "exit_code";
const STOPPED: &str = "stopped";
const LOG: &str = "output.log";

/// The workload's shell: takes its command from the environment, keeps it out of its children's.
const SHELL: &str = "/bin/sh";
const WRAPPER: &str = "c=$GPUAAS_COMMAND; unset GPUAAS_COMMAND; eval \"$c\"";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct ProcessRuntime {
    inner: Arc<Inner>,
    /// How long a workload must stay up before it counts as running.
    settle: Duration,
    /// How long a stop waits after SIGTERM before SIGKILL.
    stop_grace: Duration,
    /// Serialises start/stop of the same instance (activities may run concurrently).
    busy: Mutex<HashSet<InstanceId>>,
}

/// What the runtime shares with the tasks that reap workloads and cap their logs.
struct Inner {
    root: PathBuf,
    isolation: Isolation,
    /// Instances whose logs may still grow.
    active: Mutex<HashSet<InstanceId>>,
    /// Instances whose shell this agent spawned and has not reaped yet: one that just ended
    /// counts as running until its exit code is recorded.
    reaping: Mutex<HashSet<InstanceId>>,
    /// One log rotation at a time.
    rotating: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("workload of instance {0} exited during start: {1}")]
    StartFailed(InstanceId, String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// What the agent recorded of one workload.
struct Record {
    id: InstanceId,
    dir: PathBuf,
    uid: Option<u32>,
    cgroups: Cgroups,
}

impl ProcessRuntime {
    /// A runtime with strict isolation and default limits (needs root).
    pub fn new(
        root: impl Into<PathBuf>,
        settle: Duration,
        stop_grace: Duration,
    ) -> std::io::Result<Self> {
        Self::with_args(root, settle, stop_grace, &WorkloadArgs::default(), 0)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
    }

    /// A runtime isolating workloads as `args` says, on a host with `host_gpus` GPUs. Fails with
    /// one line when strict isolation cannot be had.
    pub fn with_args(
        root: impl Into<PathBuf>,
        settle: Duration,
        stop_grace: Duration,
        args: &WorkloadArgs,
        host_gpus: usize,
    ) -> anyhow::Result<Self> {
        let isolation = Isolation::prepare(args, host_gpus)?;
        let root = root.into();
        std::fs::create_dir_all(root.join("instances"))?;
        std::fs::create_dir_all(root.join("workloads"))?;
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        };
        mode(&root.join("instances"), 0o700)?;
        if isolation.is_strict() {
            // Workloads may pass through to their own directory, never list the others.
            mode(&root, 0o711)?;
            mode(&root.join("workloads"), 0o711)?;
            if let Some(closed) = root
                .ancestors()
                .skip(1)
                .find(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
            {
                tracing::warn!(dir = %closed.display(), "workloads cannot reach their HOME by its path: this directory is not searchable by others");
            }
        }
        let inner = Arc::new(Inner {
            root,
            isolation,
            active: Mutex::new(HashSet::new()),
            reaping: Mutex::new(HashSet::new()),
            rotating: Mutex::new(()),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&inner);
            handle.spawn(async move {
                let mut tick = tokio::time::interval(LOG_CHECK_EVERY);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    let _ = tokio::task::spawn_blocking(move || inner.cap_logs()).await;
                }
            });
        }
        Ok(Self {
            inner,
            settle,
            stop_grace,
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// Starts the workload unless it was started (or stopped) before. Idempotent by instance id.
    pub async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, RuntimeError> {
        let _guard = self.lock(spec.instance_id).await;
        let inner = &self.inner;
        let id = spec.instance_id;
        let dir = inner.agent_dir(id);
        if [IDENTITY, PID, UID, STOPPED]
            .iter()
            .any(|f| dir.join(f).exists())
        {
            return Ok(inner.status_of(id));
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(LOG))?;
        let mut child = match inner.isolation.uids() {
            Some(_) => inner.spawn_isolated(spec, log)?,
            None => inner.spawn_plain(spec, log)?,
        };
        // Record its identity before anything can race us. (If the agent dies right here, a
        // restart still finds the workload by its uid and cgroups.)
        if let Some(pid) = child.id().map(|p| p as i32)
            && let Some(stat) = procs::stat(pid)
        {
            std::fs::write(dir.join(IDENTITY), format!("{pid} {}", stat.started))?;
            std::fs::write(dir.join(PID), pid.to_string())?;
        }
        inner.active.lock().expect("active set poisoned").insert(id);
        inner
            .reaping
            .lock()
            .expect("reaping set poisoned")
            .insert(id);
        let reaper = self.inner.clone();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let code = status
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "signal".into());
                let _ = std::fs::write(reaper.agent_dir(id).join(EXIT_CODE), code);
            }
            reaper
                .reaping
                .lock()
                .expect("reaping set poisoned")
                .remove(&id);
            reaper.finish(id).await;
        });
        tracing::info!(instance_id = %id, gpus = ?spec.gpu_indices, "workload started");
        Ok(inner.status_of(id))
    }

    /// Waits until the workload has been up for the settle period; fails if it exits first.
    pub async fn await_running(&self, id: InstanceId) -> Result<WorkloadStatus, RuntimeError> {
        loop {
            let status = self.status_of(id);
            match &status {
                WorkloadStatus::Running { .. } => {
                    // Spawned when its identity was written (or, if the agent died before
                    // that, right after its uid was).
                    let dir = self.inner.agent_dir(id);
                    let started = std::fs::metadata(dir.join(IDENTITY))
                        .or_else(|_| std::fs::metadata(dir.join(UID)))
                        .and_then(|m| m.modified())
                        .unwrap_or_else(|_| SystemTime::now());
                    let up = SystemTime::now()
                        .duration_since(started)
                        .unwrap_or_default();
                    if up >= self.settle {
                        return Ok(status);
                    }
                    tokio::time::sleep((self.settle - up).min(Duration::from_millis(200))).await;
                }
                // No output in the message: the exit itself is what the caller reports.
                WorkloadStatus::Exited { exit_code, .. } => {
                    let code = exit_code
                        .map_or("none (killed by a signal)".to_string(), |c| c.to_string());
                    return Err(RuntimeError::StartFailed(
                        id,
                        format!("the workload exited (exit code {code})"),
                    ));
                }
                WorkloadStatus::Unknown => {
                    return Err(RuntimeError::StartFailed(
                        id,
                        "the agent has no such workload".into(),
                    ));
                }
            }
        }
    }

    /// Stops all of the workload: SIGTERM to every process of it, then after the grace period
    /// SIGKILL (`cgroup.kill`, and every process of its uid) until nothing of it is left. Only
    /// then does it answer stopped; if something outlives SIGKILL (stuck in the kernel), it fails
    /// and the workload stays reported running, so its GPUs stay fenced and the stop is retried.
    /// Idempotent: stopping an unknown or exited workload succeeds.
    pub async fn stop(&self, id: InstanceId) -> Result<WorkloadStatus, RuntimeError> {
        let _guard = self.lock(id).await;
        let inner = &self.inner;
        let dir = inner.agent_dir(id);
        if !dir.exists() {
            // Never started here: record the stop so a late start cannot run it.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            std::fs::write(dir.join(STOPPED), "")?;
            return Ok(WorkloadStatus::Unknown);
        }
        std::fs::write(dir.join(STOPPED), "")?;
        if dir.join(GONE).exists() {
            return Ok(inner.status_of(id));
        }
        let record = inner.record(id);
        if !inner.is_empty(&record) {
            inner.signal(&record, libc::SIGTERM);
            let deadline = tokio::time::Instant::now() + self.stop_grace;
            while !inner.is_empty(&record) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let deadline = tokio::time::Instant::now() + KILL_WINDOW;
            while !inner.is_empty(&record) {
                if tokio::time::Instant::now() >= deadline {
                    let left = inner.members(&record);
                    return Err(RuntimeError::Io(std::io::Error::other(format!(
                        "the workload of instance {id} still has {} process(es) after SIGKILL ({left:?}); it stays reported running",
                        left.len()
                    ))));
                }
                inner.hard_kill(&record);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::info!(instance_id = %id, "workload stopped: nothing of it is left");
        }
        // We hold the instance: no start is spawning it, so an empty workload is over.
        inner.finalize(&record);
        Ok(inner.status_of(id))
    }

    /// What is known of an instance's workload.
    pub fn status_of(&self, id: InstanceId) -> WorkloadStatus {
        self.inner.status_of(id)
    }

    /// Every workload on disk with its status, except those stopped for good: what the agent
    /// reports to the reconciler. A workload marked stopped of which something still lives (a
    /// stop cut short by a crash, or a process stuck in the kernel) is reported running, so its
    /// GPUs stay fenced and the stop is retried.
    pub fn known(&self) -> Vec<(InstanceId, WorkloadStatus)> {
        let Ok(entries) = std::fs::read_dir(self.inner.root.join("instances")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let id = entry
                    .file_name()
                    .to_string_lossy()
                    .parse::<InstanceId>()
                    .ok()?;
                let stopped = entry.path().join(STOPPED).exists();
                if stopped && entry.path().join(GONE).exists() {
                    return None;
                }
                let status = self.inner.status_of(id);
                (!stopped || matches!(status, WorkloadStatus::Running { .. }))
                    .then_some((id, status))
            })
            .collect()
    }

    /// After a restart: re-adopts the running workloads and reports the vanished ones.
    pub fn adopt(&self) -> Vec<(InstanceId, WorkloadStatus)> {
        let found = self.known();
        for (id, status) in &found {
            match status {
                WorkloadStatus::Running { pid } => {
                    self.inner
                        .active
                        .lock()
                        .expect("active set poisoned")
                        .insert(*id);
                    tracing::info!(instance_id = %id, pid, "re-adopted running workload")
                }
                other => {
                    tracing::warn!(instance_id = %id, status = ?other, "workload vanished while the agent was away")
                }
            }
        }
        found
    }

    async fn lock(&self, id: InstanceId) -> BusyGuard<'_> {
        loop {
            if self.busy.lock().expect("busy set poisoned").insert(id) {
                return BusyGuard { runtime: self, id };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Inner {
    fn agent_dir(&self, id: InstanceId) -> PathBuf {
        self.root.join("instances").join(id.to_string())
    }

    fn work_dir(&self, id: InstanceId) -> PathBuf {
        self.root.join("workloads").join(id.to_string())
    }

    fn record(&self, id: InstanceId) -> Record {
        let dir = self.agent_dir(id);
        Record {
            id,
            uid: std::fs::read_to_string(dir.join(UID))
                .ok()
                .and_then(|u| u.trim().parse().ok()),
            cgroups: Cgroups::load(&dir.join(CGROUPS)),
            dir,
        }
    }

    /// The workload's directory, and the command that runs its shell there with only its own
    /// environment, its GPUs, and `log` as stdout and stderr.
    fn command(
        &self,
        spec: &WorkloadSpec,
        user: &str,
        log: std::fs::File,
    ) -> std::io::Result<(PathBuf, tokio::process::Command)> {
        let work = self.work_dir(spec.instance_id);
        let visible: Vec<String> = spec.gpu_indices.iter().map(|i| i.to_string()).collect();
        let mut command = tokio::process::Command::new(SHELL);
        command
            .args(["-c", WRAPPER])
            .current_dir(&work)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &work)
            .env("TMPDIR", work.join("tmp"))
            .env("USER", user)
            .env("LOGNAME", user)
            .env("LANG", "C.UTF-8")
            .env("GPUAAS_INSTANCE_ID", spec.instance_id.to_string())
            .env("CUDA_VISIBLE_DEVICES", visible.join(","))
            .env("NVIDIA_VISIBLE_DEVICES", spec.gpu_uuids.join(","))
            .env("GPUAAS_COMMAND", &spec.command)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        Ok((work, command))
    }

    /// Claims a uid, makes the workload's directory and cgroups, and spawns its shell into them.
    /// On failure nothing is left claimed, so a retried start begins afresh.
    fn spawn_isolated(
        &self,
        spec: &WorkloadSpec,
        log: std::fs::File,
    ) -> std::io::Result<tokio::process::Child> {
        let id = spec.instance_id;
        let dir = self.agent_dir(id);
        let pool = self.isolation.uids().expect("strict isolation has uids");
        let uid = pool.claim(&dir)?;
        let mut cgroups = Cgroups::default();
        let spawned = (|| {
            std::fs::write(dir.join(UID), uid.to_string())?;
            let (work, mut command) = self.command(spec, &format!("gpuaas-{uid}"), log)?;
            for d in [work.clone(), work.join("tmp")] {
                match std::fs::DirBuilder::new().mode(0o700).create(&d) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                std::os::unix::fs::chown(&d, Some(uid), Some(uid))?;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            }
            cgroups = self
                .isolation
                .create_cgroups(&id.to_string(), &spec.gpu_indices)?;
            cgroups.save(&dir.join(CGROUPS))?;
            let procs = cgroups.open_procs()?;
            let plan = self.isolation.plan(
                uid,
                spec.gpu_indices.len(),
                procs.iter().map(|f| f.as_raw_fd()).collect(),
                Some(&work),
            )?;
            // SAFETY: `enter` makes only async-signal-safe system calls (ExecPlan::enter).
            unsafe {
                command.pre_exec(move || plan.enter());
            }
            let child = command.spawn();
            drop(procs);
            child
        })();
        if spawned.is_err() {
            cgroups.remove();
            let _ = std::fs::remove_file(dir.join(CGROUPS));
            let _ = std::fs::remove_file(dir.join(UID));
            let _ = std::fs::remove_dir_all(self.work_dir(id));
            pool.release(uid, &dir);
        }
        spawned
    }

    /// Without isolation: the agent's own user, network and limits (`--workload-isolation=none`).
    fn spawn_plain(
        &self,
        spec: &WorkloadSpec,
        log: std::fs::File,
    ) -> std::io::Result<tokio::process::Child> {
        let user = std::env::var("USER").unwrap_or_else(|_| "gpuaas".into());
        let (work, mut command) = self.command(spec, &user, log)?;
        std::fs::create_dir_all(work.join("tmp"))?;
        command.spawn()
    }

    /// The workload's shell, if it is alive.
    fn leader(&self, record: &Record) -> Option<i32> {
        if let Some((pid, started)) = read_identity(&record.dir.join(IDENTITY)) {
            let stat = procs::stat(pid)?;
            return (stat.alive && stat.started == started).then_some(pid);
        }
        // No identity (the agent died while writing it): the pid it wrote, if that process is
        // this workload's.
        let pid: i32 = std::fs::read_to_string(record.dir.join(PID))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = procs::stat(pid)?;
        let ours = match record.uid {
            Some(uid) => procs::uids(pid).is_some_and(|ids| ids.contains(&uid)),
            None => procs::carries_env(pid, &marker(record.id)),
        };
        if !stat.alive || !ours {
            return None;
        }
        let _ = std::fs::write(record.dir.join(IDENTITY), format!("{pid} {}", stat.started));
        Some(pid)
    }

    /// Every live process of the workload: its cgroups' and its uid's (or, without isolation,
    /// its process group's that carry its instance id).
    fn members(&self, record: &Record) -> Vec<i32> {
        let mut pids = record.cgroups.members();
        match (record.uid, self.isolation.uids()) {
            (Some(uid), Some(pool)) => {
                if pool.holds(uid, &record.dir) {
                    pids.extend(procs::of_uid(uid));
                }
            }
            (Some(uid), None) => pids.extend(procs::of_uid(uid)),
            (None, _) => {
                if let Some((pgid, _)) = read_identity(&record.dir.join(IDENTITY)) {
                    let marker = marker(record.id);
                    pids.extend(procs::pids().into_iter().filter(|pid| {
                        procs::stat(*pid).is_some_and(|s| s.alive && s.pgrp == pgid)
                            && procs::carries_env(*pid, &marker)
                    }));
                }
            }
        }
        pids.extend(self.leader(record));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Nothing of the workload lives (its v2 cgroup's atomic flag agrees with the scans).
    fn is_empty(&self, record: &Record) -> bool {
        self.members(record).is_empty() && !record.cgroups.populated()
    }

    fn signal(&self, record: &Record, signal: libc::c_int) {
        if let (Some(uid), Some(pool)) = (record.uid, self.isolation.uids())
            && pool.holds(uid, &record.dir)
            && let Err(e) = isolation::signal_uid(uid, signal)
        {
            tracing::warn!(instance_id = %record.id, uid, error = %e, "could not signal the workload's uid");
        }
        if record.uid.is_none()
            && let Some(leader) = self.leader(record)
        {
            // SAFETY: kill(2) of the process group of a verified live workload shell.
            unsafe {
                libc::kill(-leader, signal);
            }
        }
        for pid in self.members(record) {
            // SAFETY: kill(2) of a process verified to be the workload's.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    fn hard_kill(&self, record: &Record) {
        record.cgroups.kill();
        self.signal(record, libc::SIGKILL);
    }

    /// After the shell ended: the rest of the workload goes too; once nothing is left, its uid
    /// and cgroups are given back.
    async fn finish(&self, id: InstanceId) {
        let record = self.record(id);
        let deadline = tokio::time::Instant::now() + KILL_WINDOW;
        while !self.is_empty(&record) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(instance_id = %id, left = ?self.members(&record), "processes of an ended workload outlive SIGKILL");
                return;
            }
            self.hard_kill(&record);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.finalize(&record);
    }

    /// Nothing of the workload is left: its directory is closed and deleted, its cgroups removed,
    /// and its uid given back (in that order: a later holder of the uid finds nothing of it).
    fn finalize(&self, record: &Record) {
        if record.dir.join(GONE).exists() {
            return;
        }
        let work = self.work_dir(record.id);
        if work.exists() {
            let _ = std::os::unix::fs::chown(&work, Some(0), Some(0));
            let _ = std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700));
            let doomed = work.with_extension("deleting");
            if std::fs::rename(&work, &doomed).is_ok() {
                std::thread::spawn(move || std::fs::remove_dir_all(doomed));
            }
        }
        record.cgroups.remove();
        if std::fs::write(record.dir.join(GONE), "").is_err() {
            return;
        }
        if let (Some(uid), Some(pool)) = (record.uid, self.isolation.uids()) {
            pool.release(uid, &record.dir);
        }
        self.active
            .lock()
            .expect("active set poisoned")
            .remove(&record.id);
    }

    fn status_of(&self, id: InstanceId) -> WorkloadStatus {
        let dir = self.agent_dir(id);
        if !dir.exists() {
            return WorkloadStatus::Unknown;
        }
        if !dir.join(GONE).exists() {
            let record = self.record(id);
            if let Some(pid) = self.leader(&record) {
                return WorkloadStatus::Running { pid };
            }
            if self
                .reaping
                .lock()
                .expect("reaping set poisoned")
                .contains(&id)
                && let Some((pid, _)) = read_identity(&dir.join(IDENTITY))
            {
                // It just ended; its exit code is being recorded (then the rest is killed).
                return WorkloadStatus::Running { pid };
            }
            // The shell ended (or was never recorded: then a start may be spawning it).
            let ended = dir.join(IDENTITY).exists() || dir.join(EXIT_CODE).exists();
            let mut rest = self.members(&record);
            if !rest.is_empty() && ended {
                rest = self.kill_stragglers(&record);
            }
            if let Some(pid) = rest.first() {
                return WorkloadStatus::Running { pid: *pid };
            }
            if ended && self.is_empty(&record) && self.is_empty(&record) {
                self.finalize(&record);
            }
        }
        let exit_code = std::fs::read_to_string(dir.join(EXIT_CODE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        WorkloadStatus::Exited {
            exit_code,
            log_tail: self.tail(id),
            output: None,
        }
    }

    /// SIGKILLs what is left of a workload whose shell ended and waits briefly for it to go;
    /// returns what still lives.
    fn kill_stragglers(&self, record: &Record) -> Vec<i32> {
        let deadline = std::time::Instant::now() + STRAGGLERS_WAIT;
        loop {
            self.hard_kill(record);
            std::thread::sleep(Duration::from_millis(5));
            let rest = self.members(record);
            if rest.is_empty() || std::time::Instant::now() >= deadline {
                return rest;
            }
        }
    }

    fn tail(&self, id: InstanceId) -> String {
        let log = self.agent_dir(id).join(LOG);
        self.cap_log(&log);
        logs::tail(&log, LOG_TAIL_BYTES)
    }

    fn cap_log(&self, log: &Path) {
        let _rotating = self.rotating.lock().expect("rotation lock poisoned");
        if let Err(e) = logs::cap(log, self.isolation.log_max_bytes) {
            tracing::warn!(log = %log.display(), error = %e, "could not rotate a workload log");
        }
    }

    /// Caps the logs of the workloads that may still write.
    fn cap_logs(&self) {
        let active: Vec<InstanceId> = self
            .active
            .lock()
            .expect("active set poisoned")
            .iter()
            .copied()
            .collect();
        for id in active {
            let dir = self.agent_dir(id);
            self.cap_log(&dir.join(LOG));
            if dir.join(GONE).exists() {
                self.active.lock().expect("active set poisoned").remove(&id);
            }
        }
    }
}

struct BusyGuard<'a> {
    runtime: &'a ProcessRuntime,
    id: InstanceId,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.runtime
            .busy
            .lock()
            .expect("busy set poisoned")
            .remove(&self.id);
    }
}

fn marker(id: InstanceId) -> String {
    format!("GPUAAS_INSTANCE_ID={id}")
}

fn read_identity(path: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (pid, started) = text.trim().split_once(' ')?;
    Some((pid.parse().ok()?, started.parse().ok()?))
}
