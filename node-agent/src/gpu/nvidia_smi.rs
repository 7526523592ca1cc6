//! `nvidia-smi` discovery and health, for hosts whose NVML cannot be loaded directly.

use super::{
    DiscoveredGpu, GpuDiscovery, GpuHealthProbe, GpuHealthSample, all_unhealthy, normalise_model,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `nvidia-smi --query-gpu`, for hosts whose NVML cannot be loaded directly.
pub struct NvidiaSmi;

impl GpuDiscovery for NvidiaSmi {
    fn source(&self) -> &'static str {
        "nvidia-smi"
    }

    fn discover(&self) -> anyhow::Result<Option<Vec<DiscoveredGpu>>> {
        let output = match std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=index,uuid,name,memory.total",
                "--format=csv,noheader,nounits",
            ])
            .output()
        {
            Ok(o) if o.status.success() => o,
            _ => return Ok(None),
        };
        let gpus = parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))?;
        Ok(if gpus.is_empty() { None } else { Some(gpus) })
    }
}

/// Parses `index, uuid, name, memory.total [MiB]` CSV lines.
pub fn parse_nvidia_smi(csv: &str) -> anyhow::Result<Vec<DiscoveredGpu>> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            anyhow::ensure!(f.len() == 4, "unexpected nvidia-smi line: {line}");
            let memory_mib: i64 = f[3].parse()?;
            Ok(DiscoveredGpu {
                index: f[0].parse()?,
                uuid: f[1].to_string(),
                model: normalise_model(f[2], memory_mib),
                memory_mib,
                healthy: true,
            })
        })
        .collect()
}

/// `nvidia-smi` health query; thermal slowdown is read from the throttle flag, not a threshold.
const NVIDIA_SMI_HEALTH_QUERY: &str = "--query-gpu=index,temperature.gpu,ecc.errors.uncorrected.volatile.total,clocks_throttle_reasons.hw_thermal_slowdown";

const NOT_LISTED: &str = "not listed by nvidia-smi: fallen off the bus?";

/// Health from `nvidia-smi`, for hosts whose NVML cannot be loaded directly.
pub struct NvidiaSmiHealth {
    program: PathBuf,
    /// nvidia-smi can hang on a wedged GPU; a sample must still come back.
    timeout: Duration,
}

impl NvidiaSmiHealth {
    pub fn new() -> Self {
        Self {
            program: PathBuf::from("nvidia-smi"),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Default for NvidiaSmiHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl GpuHealthProbe for NvidiaSmiHealth {
    fn sample(&self, indices: &[i32]) -> Vec<GpuHealthSample> {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args([NVIDIA_SMI_HEALTH_QUERY, "--format=csv,noheader,nounits"]);
        nvidia_smi_health(run_with_timeout(cmd, self.timeout), indices)
    }
}

fn nvidia_smi_health(run: Result<String, CommandFailure>, indices: &[i32]) -> Vec<GpuHealthSample> {
    match run {
        Ok(csv) => parse_nvidia_smi_health(&csv, indices),
        Err(CommandFailure { error, stdout }) => {
            let error = format!("nvidia-smi failed: {error}");
            // With one GPU lost nvidia-smi exits non-zero but still lists the others.
            let rows = nvidia_smi_health_rows(&stdout);
            if rows.is_empty() {
                all_unhealthy(indices, &error)
            } else {
                health_from_rows(&rows, indices, &format!("{NOT_LISTED} ({error})"))
            }
        }
    }
}

/// Parses `index, temperature.gpu, ecc.errors.uncorrected.volatile.total,
/// clocks_throttle_reasons.hw_thermal_slowdown` CSV lines into one sample per `indices` entry.
/// Unhealthy: uncorrected ECC > 0, hardware thermal slowdown `Active`, or not listed at all.
pub fn parse_nvidia_smi_health(csv: &str, indices: &[i32]) -> Vec<GpuHealthSample> {
    health_from_rows(&nvidia_smi_health_rows(csv), indices, NOT_LISTED)
}

fn health_from_rows(
    rows: &HashMap<i32, Vec<String>>,
    indices: &[i32],
    missing: &str,
) -> Vec<GpuHealthSample> {
    indices
        .iter()
        .map(|&i| match rows.get(&i) {
            Some(reasons) => GpuHealthSample::from_reasons(i, reasons.clone()),
            None => GpuHealthSample::unhealthy(i, missing),
        })
        .collect()
}

/// Reasons per listed GPU index (empty when healthy); unparseable lines are skipped.
fn nvidia_smi_health_rows(csv: &str) -> HashMap<i32, Vec<String>> {
    // `[N/A]`, `[Not Supported]` and the like carry no reading.
    fn value(field: &str) -> Option<&str> {
        (!field.is_empty() && !field.starts_with('[') && !field.eq_ignore_ascii_case("N/A"))
            .then_some(field)
    }
    let mut rows: HashMap<i32, Vec<String>> = HashMap::new();
    for line in csv.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(index) = f
            .first()
            .and_then(|i| i.parse::<i32>().ok())
            .filter(|_| f.len() == 4)
        else {
            tracing::warn!(line, "unexpected nvidia-smi health line");
            continue;
        };
        let reasons = rows.entry(index).or_default();
        if let Some(ecc) = value(f[2]).and_then(|v| v.parse::<u64>().ok())
            && ecc > 0
        {
            reasons.push(format!("uncorrectable ECC errors: {ecc}"));
        }
        if value(f[3]).is_some_and(|v| v.eq_ignore_ascii_case("Active")) {
            reasons.push(match value(f[1]) {
                Some(t) => format!("hardware thermal slowdown active at {t} C"),
                None => "hardware thermal slowdown active".to_string(),
            });
        }
    }
    rows
}

struct CommandFailure {
    error: String,
    /// Whatever it printed before failing.
    stdout: String,
}

/// Runs `cmd` to completion and returns its stdout, killing it after `timeout`.
fn run_with_timeout(
    mut cmd: std::process::Command,
    timeout: Duration,
) -> Result<String, CommandFailure> {
    use std::io::Read;
    use std::process::Stdio;
    let fail = |error: String| CommandFailure {
        error,
        stdout: String::new(),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot run {}: {e}",
                cmd.get_program().to_string_lossy()
            ))
        })?;
    // Read on threads so a full pipe cannot block the child while we wait for it.
    fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("timed out after {timeout:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                return Err(fail(format!("cannot wait for it: {e}")));
            }
        }
    };
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    if status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    // nvidia-smi prints its own errors on stdout.
    let said = [stderr.trim(), stdout.trim()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    Err(CommandFailure {
        error: if said.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {said}")
        },
        stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_csv() {
        let csv =
            "0, GPU-aaa, NVIDIA H100 80GB HBM3, 81559\n1, GPU-bbb, NVIDIA H100 80GB HBM3, 81559\n";
        let gpus = parse_nvidia_smi(csv).unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].uuid, "GPU-bbb");
        assert_eq!(gpus[1].model, "H100-80GB");
        assert!(parse_nvidia_smi("garbage").is_err());
    }

    #[test]
    fn parses_nvidia_smi_health_csv() {
        let csv = "0, 45, 0, Not Active\n\
                   1, 97, 0, Active\n\
                   2, 50, 3, Not Active\n\
                   3, [N/A], [Not Supported], [N/A]\n\
                   4, [N/A], 0, Active\n\
                   garbage line\n\
                   5, 40\n\n";
        let s = parse_nvidia_smi_health(csv, &[0, 1, 2, 3, 4, 5, 7]);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0], GpuHealthSample::healthy(0));
        assert_eq!(
            s[1],
            GpuHealthSample::unhealthy(1, "hardware thermal slowdown active at 97 C")
        );
        assert_eq!(
            s[2],
            GpuHealthSample::unhealthy(2, "uncorrectable ECC errors: 3")
        );
        assert_eq!(s[3], GpuHealthSample::healthy(3), "N/A values are ignored");
        assert_eq!(
            s[4].reason.as_deref(),
            Some("hardware thermal slowdown active")
        );
        // A malformed row does not count as listed.
        assert_eq!(s[5], GpuHealthSample::unhealthy(5, NOT_LISTED));
        assert_eq!(s[6], GpuHealthSample::unhealthy(7, NOT_LISTED));
        assert!(parse_nvidia_smi_health("", &[]).is_empty());
    }

    #[test]
    fn failed_nvidia_smi_makes_gpus_unhealthy() {
        let failed = |stdout: &str| {
            Err(CommandFailure {
                error: "exit status: 15: Unable to determine the device handle".into(),
                stdout: stdout.into(),
            })
        };
        let all = nvidia_smi_health(failed(""), &[0, 1]);
        assert!(all.iter().all(|s| !s.healthy));
        assert_eq!(
            all[1].reason.as_deref(),
            Some("nvidia-smi failed: exit status: 15: Unable to determine the device handle")
        );
        // Partial output: the GPUs it still lists keep their own verdict.
        let partial = nvidia_smi_health(failed("0, 40, 0, Not Active\n"), &[0, 1]);
        assert!(partial[0].healthy);
        let reason = partial[1].reason.as_deref().unwrap();
        assert!(reason.starts_with(NOT_LISTED) && reason.contains("device handle"));

        let missing = NvidiaSmiHealth {
            program: "/nonexistent/nvidia-smi".into(),
            timeout: Duration::from_secs(5),
        };
        let s = missing.sample(&[0, 1]);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| !s.healthy));
        assert!(
            s[0].reason
                .as_deref()
                .unwrap()
                .starts_with("nvidia-smi failed: cannot run")
        );
    }

    #[test]
    fn commands_are_killed_after_the_timeout() {
        let sh = |script: &str| {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", script]);
            c
        };
        let out = run_with_timeout(sh("echo '0, 40, 0, Not Active'"), Duration::from_secs(10));
        assert_eq!(out.ok().as_deref(), Some("0, 40, 0, Not Active\n"));
        let start = Instant::now();
        let slow = run_with_timeout(sh("sleep 30"), Duration::from_millis(200));
        assert!(slow.unwrap_err().error.starts_with("timed out"));
        assert!(start.elapsed() < Duration::from_secs(10));
        let failed = run_with_timeout(sh("echo oops >&2; exit 3"), Duration::from_secs(10));
        let failed = failed.unwrap_err();
        assert!(failed.error.contains("oops"), "{}", failed.error);
    }
}
