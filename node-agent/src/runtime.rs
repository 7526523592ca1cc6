//! Workload processes. Each instance runs as its own process group, in its own working
//! directory, with its output captured to a log file and only its GPUs visible.
//!
//! State lives on disk (`<root>/instances/<id>/`), not in memory, so a restarted agent re-adopts
//! running workloads instead of forgetting them:
//! - `pid`: written by the workload's own shell before it execs the command, so it exists even if
//!   the agent dies right after spawning;
//! - `output.log`: stdout and stderr;
//! - `exit_code`: written when the agent reaps the process;
//! - `stopped`: written before a stop, so a late, retried start never resurrects the instance.
//!
//! A pid is trusted only if `/proc/<pid>/environ` carries the instance id (pids get reused).

use gpuaas_activities::node::{WorkloadSpec, WorkloadStatus};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

const LOG_TAIL_BYTES: u64 = 2048;

pub struct ProcessRuntime {
    root: PathBuf,
    /// How long a workload must stay up before it counts as running.
    settle: Duration,
    /// How long a stop waits after SIGTERM before SIGKILL.
    stop_grace: Duration,
    /// Serialises start/stop of the same instance (activities may run concurrently).
    busy: Mutex<HashSet<Uuid>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("workload of instance {0} exited during start: {1}")]
    StartFailed(Uuid, String),
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

    fn dir(&self, id: Uuid) -> PathBuf {
        self.root.join("instances").join(id.to_string())
    }

    /// Starts the workload unless it was started (or stopped) before. Idempotent by instance id.
    pub async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, RuntimeError> {
        let _guard = self.lock(spec.instance_id).await;
        let dir = self.dir(spec.instance_id);
        if dir.join("pid").exists() || dir.join("stopped").exists() {
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
        // Wait for the shell to record its pid (milliseconds) so status answers precisely.
        for _ in 0..100 {
            if dir.join("pid").exists() || dir.join("exit_code").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(instance_id = %spec.instance_id, gpus = ?spec.gpu_indices, "workload started");
        Ok(self.status_of(spec.instance_id))
    }

    /// Waits until the workload has been up for the settle period; fails if it exits first.
    pub async fn await_running(&self, id: Uuid) -> Result<WorkloadStatus, RuntimeError> {
        loop {
            let status = self.status_of(id);
            match &status {
                WorkloadStatus::Running { .. } => {
                    let started = std::fs::metadata(self.dir(id).join("pid"))?.modified()?;
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
    pub async fn stop(&self, id: Uuid) -> Result<WorkloadStatus, RuntimeError> {
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
            // Also catches children that outlived the group leader.
            signal_group(pid, libc::SIGKILL);
            while self.live_pid(id).is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::info!(instance_id = %id, pid, "workload stopped");
        }
        Ok(self.status_of(id))
    }

    /// What is known of an instance's process.
    pub fn status_of(&self, id: Uuid) -> WorkloadStatus {
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

    /// Workloads on disk and whether each is still running: after a restart the agent re-adopts
    /// the running ones and reports the vanished ones.
    pub fn adopt(&self) -> Vec<(Uuid, WorkloadStatus)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("instances")) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(id) = entry.file_name().to_string_lossy().parse::<Uuid>() else {
                continue;
            };
            if entry.path().join("stopped").exists() {
                continue;
            }
            let status = self.status_of(id);
            match &status {
                WorkloadStatus::Running { pid } => {
                    tracing::info!(instance_id = %id, pid, "re-adopted running workload")
                }
                other => {
                    tracing::warn!(instance_id = %id, status = ?other, "workload vanished while the agent was away")
                }
            }
            found.push((id, status));
        }
        found
    }

    /// The workload's pid if that process is alive and really is this instance's.
    fn live_pid(&self, id: Uuid) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir(id).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Field 3 (after the parenthesised name) is the state; a zombie is dead.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state == Some("Z") {
            return None;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let marker = format!("GPUAAS_INSTANCE_ID={id}");
        environ
            .split(|b| *b == 0)
            .any(|kv| kv == marker.as_bytes())
            .then_some(pid)
    }

    async fn lock(&self, id: Uuid) -> BusyGuard<'_> {
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
    id: Uuid,
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
