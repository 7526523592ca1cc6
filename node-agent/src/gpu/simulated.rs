//! Simulated GPUs for machines without any: a `--simulate-gpus` spec for discovery and a fault
//! file for health.

use super::{DiscoveredGpu, GpuDiscovery, GpuHealthProbe, GpuHealthSample, all_unhealthy};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Simulated GPUs from a spec such as `8xH100-80GB`. UUIDs derive from the node name, so a
/// restarted agent reports the same GPUs.
pub struct Simulated {
    pub spec: String,
    pub node_name: String,
}

impl GpuDiscovery for Simulated {
    fn source(&self) -> &'static str {
        "simulated"
    }

    fn discover(&self) -> anyhow::Result<Option<Vec<DiscoveredGpu>>> {
        let (count, model) = self.spec.split_once('x').ok_or_else(|| {
            anyhow::anyhow!(
                "--simulate-gpus must look like 8xH100-80GB, got '{}'",
                self.spec
            )
        })?;
        let count: i32 = count
            .parse()
            .map_err(|_| anyhow::anyhow!("bad GPU count in '{}'", self.spec))?;
        anyhow::ensure!(
            (1..=64).contains(&count),
            "simulated GPU count must be 1-64"
        );
        let gb: i64 = model
            .rsplit_once('-')
            .and_then(|(_, m)| m.trim_end_matches("GB").parse().ok())
            .ok_or_else(|| anyhow::anyhow!("model in '{}' must end in -<N>GB", self.spec))?;
        Ok(Some(
            (0..count)
                .map(|i| DiscoveredGpu {
                    index: i,
                    uuid: format!("GPU-sim-{}-{i}", self.node_name),
                    model: model.to_string(),
                    memory_mib: gb * 1024,
                    healthy: true,
                })
                .collect(),
        ))
    }
}

/// Health read from a fault file, for machines without GPUs: tests and operators inject faults
/// by editing it. Re-read every sample, so faults come and go without a restart.
pub struct SimulatedHealth {
    pub fault_file: PathBuf,
}

impl SimulatedHealth {
    pub fn new(fault_file: PathBuf) -> Self {
        Self { fault_file }
    }
}

impl GpuHealthProbe for SimulatedHealth {
    fn sample(&self, indices: &[i32]) -> Vec<GpuHealthSample> {
        let faults = match std::fs::read_to_string(&self.fault_file) {
            Ok(text) => parse_fault_file(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            // Unreadable is not "no faults": an injected fault must not be silently lost.
            Err(e) => {
                let reason = format!(
                    "cannot read simulated fault file {}: {e}",
                    self.fault_file.display()
                );
                return all_unhealthy(indices, &reason);
            }
        };
        indices
            .iter()
            .map(|&i| match faults.get(&i) {
                Some(reason) => GpuHealthSample::unhealthy(i, reason.clone()),
                None => GpuHealthSample::healthy(i),
            })
            .collect()
    }
}

/// Parses a fault file: one `<gpu index> <reason words...>` per line; `#` comment lines and
/// blank lines are ignored, bad lines skipped with a warning. Several faults for one GPU are
/// joined with `; `; an index alone means "simulated fault".
pub fn parse_fault_file(text: &str) -> BTreeMap<i32, String> {
    let mut faults: BTreeMap<i32, String> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (index, reason) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(i, r)| (i, r.trim()));
        let Some(index) = index.parse::<i32>().ok().filter(|i| *i >= 0) else {
            tracing::warn!(line = n + 1, text = line, "ignoring bad GPU fault line");
            continue;
        };
        let reason = if reason.is_empty() {
            "simulated fault"
        } else {
            reason
        };
        faults
            .entry(index)
            .and_modify(|r| {
                r.push_str("; ");
                r.push_str(reason);
            })
            .or_insert_with(|| reason.to_string());
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::health_probe;

    #[test]
    fn simulated_spec_is_stable_per_node() {
        let sim = Simulated {
            spec: "4xA100-40GB".into(),
            node_name: "n1".into(),
        };
        let gpus = sim.discover().unwrap().unwrap();
        assert_eq!(gpus.len(), 4);
        assert_eq!(gpus[3].uuid, "GPU-sim-n1-3");
        assert_eq!(gpus[0].model, "A100-40GB");
        assert_eq!(gpus[0].memory_mib, 40 * 1024);
        assert!(
            Simulated {
                spec: "eight".into(),
                node_name: "n".into()
            }
            .discover()
            .is_err()
        );
    }

    #[test]
    fn parses_fault_file() {
        let text = "# injected by the chaos test\n\
                    \n\
                    3 XID 79: GPU has fallen off the bus\n\
                    \t  5   uncorrectable ECC errors: 2  \n\
                    not-a-number broken\n\
                    -1 negative\n\
                    3 temperature 95 C\n\
                    6\n";
        let faults = parse_fault_file(text);
        assert_eq!(faults.len(), 3);
        assert_eq!(
            faults[&3],
            "XID 79: GPU has fallen off the bus; temperature 95 C"
        );
        assert_eq!(faults[&5], "uncorrectable ECC errors: 2");
        assert_eq!(faults[&6], "simulated fault");
        assert!(parse_fault_file("").is_empty());
        assert!(parse_fault_file("# only a comment\n\n").is_empty());
    }

    #[test]
    fn simulated_health_reads_the_fault_file_each_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpu-faults");
        let probe = health_probe("simulated", path.clone());
        // No file: all healthy.
        assert_eq!(
            probe.sample(&[0, 1]),
            vec![GpuHealthSample::healthy(0), GpuHealthSample::healthy(1)]
        );
        std::fs::write(&path, "1 XID 79: GPU has fallen off the bus\n").unwrap();
        assert_eq!(
            probe.sample(&[0, 1]),
            vec![
                GpuHealthSample::healthy(0),
                GpuHealthSample::unhealthy(1, "XID 79: GPU has fallen off the bus"),
            ]
        );
        std::fs::write(&path, "").unwrap();
        assert!(probe.sample(&[0, 1]).iter().all(|s| s.healthy));
        // Unreadable (a directory): unhealthy, not silently healthy.
        let s = health_probe("simulated", dir.path().to_path_buf()).sample(&[0]);
        assert!(!s[0].healthy);
        assert!(s[0].reason.as_deref().unwrap().contains("fault file"));
    }
}
