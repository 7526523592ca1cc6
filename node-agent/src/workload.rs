//! Workload processes. Each instance runs as its own process group, in its own working
//! directory, with its output captured to a log file and only its GPUs visible.
//!
//! State lives on disk (`<root>/instances/<id>/`), not in memory, so a restarted agent re-adopts
//! running workloads instead of forgetting them:
//! - `identity`: the workload's pid and start time, written right after spawning;
//! - `pid`: also written by the workload's own shell before it execs the command, so a workload
//!   is found even if the agent died between spawning it and writing `identity`;
//! - `output.log`: stdout and stderr;
//! - `exit_code`: written when the agent reaps the process;
//! - `stopped`: written before a stop, so a late, retried start never resurrects the instance.
//!
//! A pid is trusted only if its start time matches `identity`, or (without one) if
//! `/proc/<pid>/environ` carries the instance id: pids get reused.

use contract_node::{WorkloadSpec, WorkloadStatus};
use shared_ids::InstanceId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const LOG_TAIL_BYTES: u64 = 2048;

pub struct ProcessRuntime {
    root: PathBuf,
    /// How long a workload must stay up before it counts as running.
    settle: Duration,
    /// How long a stop waits after SIGTERM before SIGKILL.
    stop_grace: Duration,
    /// Serialises start/stop of the same instance (activities may run concurrently).
    busy: Mutex<HashSet<InstanceId>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("workload of instance {0} exited during start: {1}")]
    StartFailed(InstanceId, String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProcessRuntime {
    pub fn new(
        root: impl Into<PathBuf>,
        settle: Duration,
        stop_grace: Duration,
    ) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("instances"))?;
        Ok(Self {
            root,
            settle,
            stop_grace,
            busy: Mutex::new(HashSet::new()),
        })
    }

    fn dir(&self, id: InstanceId) -> PathBuf {
        self.root.join("instances").join(id.to_string())
    }

    /// Starts the workload unless it was started (or stopped) before. Idempotent by instance id.
    pub async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, RuntimeError> {
        let _guard = self.lock(spec.instance_id).await;
        let dir = self.dir(spec.instance_id);
        if ["identity", "pid", "stopped"]
            .iter()
            .any(|f| dir.join(f).exists())
        {
            return Ok(self.status_of(spec.instance_id));
        }
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("output.log"))?;
        let visible: Vec<String> = spec.gpu_indices.iter().map(|i| i.to_string()).collect();
        let mut command = tokio::process::Command::new("sh");
        command
            // The shell records its pid, then becomes the workload (same pid, same group).
            .args([
                "-c",
                "echo $$ > pid.tmp && mv pid.tmp pid && exec sh -c \"$GPUAAS_COMMAND\"",
            ])
            .current_dir(&dir)
            .env("GPUAAS_COMMAND", &spec.command)
            .env("GPUAAS_INSTANCE_ID", spec.instance_id.to_string())
            .env("CUDA_VISIBLE_DEVICES", visible.join(","))
            .env("NVIDIA_VISIBLE_DEVICES", spec.gpu_uuids.join(","))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn()?;
        // The child is the workload's shell: record its identity before anything can race us.
        // (If the agent dies right here, the shell's own `pid` file lets a restart find it.)
        if let Some(stat) = child
            .id()
            .and_then(|pid| proc_stat(pid as i32).map(|s| (pid, s)))
        {
            std::fs::write(
                dir.join("identity"),
                format!("{} {}", stat.0, stat.1.started),
            )?;
        }
        let exit_file = dir.join("exit_code");
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let code = status
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "signal".into());
                let _ = std::fs::write(exit_file, code);
            }
        });
        tracing::info!(instance_id = %spec.instance_id, gpus = ?spec.gpu_indices, "workload started");
        Ok(self.status_of(spec.instance_id))
    }

    /// Waits until the workload has been up for the settle period; fails if it exits first.
    pub async fn await_running(&self, id: InstanceId) -> Result<WorkloadStatus, RuntimeError> {
        loop {
            let status = self.status_of(id);
            match &status {
                WorkloadStatus::Running { .. } => {
                    let started = std::fs::metadata(self.dir(id).join("identity"))?.modified()?;
                    let up = SystemTime::now()
                        .duration_since(started)
                        .unwrap_or_default();
                    if up >= self.settle {
                        return Ok(status);
                    }
                    tokio::time::sleep((self.settle - up).min(Duration::from_millis(200))).await;
                }
                WorkloadStatus::Exited {
                    exit_code,
                    log_tail,
                } => {
                    let code = exit_code
                        .map_or("none (killed by a signal)".to_string(), |c| c.to_string());
                    return Err(RuntimeError::StartFailed(
                        id,
                        format!(
                            "the workload exited (exit code {code}); last output: {log_tail:?}"
                        ),
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

    /// Stops the workload's whole process group: SIGTERM, then SIGKILL after the grace period.
    /// Idempotent: stopping an unknown or exited workload succeeds.
    pub async fn stop(&self, id: InstanceId) -> Result<WorkloadStatus, RuntimeError> {
        let _guard = self.lock(id).await;
        let dir = self.dir(id);
        if !dir.exists() {
            // Never started here: record the stop so a late start cannot run it.
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("stopped"), "")?;
            return Ok(WorkloadStatus::Unknown);
        }
        std::fs::write(dir.join("stopped"), "")?;
        if let Some(pid) = self.live_pid(id) {
            signal_group(pid, libc::SIGTERM);
            let deadline = tokio::time::Instant::now() + self.stop_grace;
            while self.live_pid(id).is_some() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // SIGKILL whatever is left of the group, children that outlived the leader included.
            loop {
                let members = self.group_members(pid, id);
                if members.is_empty() {
                    break;
                }
                for member in members {
                    // SAFETY: kill(2) on a process verified to belong to this workload.
                    unsafe {
                        libc::kill(member, libc::SIGKILL);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::info!(instance_id = %id, pid, "workload stopped");
        }
        Ok(self.status_of(id))
    }

    /// What is known of an instance's process.
    pub fn status_of(&self, id: InstanceId) -> WorkloadStatus {
        let dir = self.dir(id);
        if !dir.exists() {
            return WorkloadStatus::Unknown;
        }
        if let Some(pid) = self.live_pid(id) {
            return WorkloadStatus::Running { pid };
        }
        let exit_code = std::fs::read_to_string(dir.join("exit_code"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        WorkloadStatus::Exited {
            exit_code,
            log_tail: log_tail(&dir.join("output.log")),
        }
    }

    /// Every workload on disk with its status, except those stopped for good: what the agent
    /// reports to the reconciler. A workload marked stopped whose process still lives (a stop
    /// cut short by a crash, or a process stuck in the kernel) is reported running, so its GPUs
    /// stay fenced and the stop is retried.
    pub fn known(&self) -> Vec<(InstanceId, WorkloadStatus)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("instances")) else {
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
                let status = self.status_of(id);
                let stopped = entry.path().join("stopped").exists();
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
                    tracing::info!(instance_id = %id, pid, "re-adopted running workload")
                }
                other => {
                    tracing::warn!(instance_id = %id, status = ?other, "workload vanished while the agent was away")
                }
            }
        }
        found
    }

    /// The workload's pid if that process is alive and really is this instance's. Identity is
    /// (pid, start time), recorded once; it survives `exec`, unlike a read of the environment
    /// while the shell is replacing itself.
    fn live_pid(&self, id: InstanceId) -> Option<i32> {
        let dir = self.dir(id);
        if let Some((pid, started)) = read_identity(&dir.join("identity")) {
            let stat = proc_stat(pid)?;
            return (stat.alive && stat.started == started).then_some(pid);
        }
        // No identity yet (the agent died before recording it): trust the environment once.
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = proc_stat(pid)?;
        if !stat.alive || !carries_instance(pid, id) {
            return None;
        }
        let _ = std::fs::write(dir.join("identity"), format!("{pid} {}", stat.started));
        Some(pid)
    }

    /// Every process of the workload's group that still carries the instance id, so a process
    /// group id reused by someone else after the leader died is never signalled.
    fn group_members(&self, pgid: i32, id: InstanceId) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                proc_stat(*pid).is_some_and(|s| s.alive && s.pgrp == pgid)
                    && carries_instance(*pid, id)
            })
            .collect()
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

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    alive: bool,
    pgrp: i32,
    /// Start time in clock ticks since boot: with the pid, a process's identity.
    started: u64,
}

/// Reads `/proc/<pid>/stat`: state (a zombie is dead), process group and start time.
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, starting at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(ProcStat {
        alive: *fields.first()? != "Z",
        pgrp: fields.get(2)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

fn carries_instance(pid: i32, id: InstanceId) -> bool {
    let marker = format!("GPUAAS_INSTANCE_ID={id}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
}

fn read_identity(path: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (pid, started) = text.trim().split_once(' ')?;
    Some((pid.parse().ok()?, started.parse().ok()?))
}

fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}
