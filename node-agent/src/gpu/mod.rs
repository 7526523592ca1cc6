//! GPU discovery behind one interface, tried in order: NVML (loaded at run time; absent is not an
//! error), then `nvidia-smi`, then a `--simulate-gpus` spec for machines without GPUs.
//! Per-GPU health probing (critical XIDs, uncorrectable ECC, thermal slowdown) has the same three
//! sources, picked by the one that found the GPUs; simulated faults come from a fault file.

mod nvidia_smi;
mod nvml;
mod simulated;

pub use nvidia_smi::{NvidiaSmi, NvidiaSmiHealth, parse_nvidia_smi, parse_nvidia_smi_health};
pub use nvml::{Nvml, NvmlHealth};
pub use simulated::{Simulated, SimulatedHealth, parse_fault_file};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredGpu {
    pub index: i32,
    pub uuid: String,
    /// Normalised model, e.g. `H100-80GB`, the key SKUs match on.
    pub model: String,
    pub memory_mib: i64,
    pub healthy: bool,
}

/// One way of finding the host's GPUs.
pub trait GpuDiscovery {
    /// `nvml`, `nvidia-smi` or `simulated`.
    fn source(&self) -> &'static str;
    /// `Ok(None)` means "not available here, try the next source".
    fn discover(&self) -> anyhow::Result<Option<Vec<DiscoveredGpu>>>;
}

/// Runs the sources in order and returns the first that is available.
pub fn discover(
    sources: &[Box<dyn GpuDiscovery>],
) -> anyhow::Result<(&'static str, Vec<DiscoveredGpu>)> {
    for source in sources {
        match source.discover() {
            Ok(Some(gpus)) => return Ok((source.source(), gpus)),
            Ok(None) => tracing::debug!(
                source = source.source(),
                "GPU discovery source not available"
            ),
            Err(e) => {
                tracing::warn!(source = source.source(), error = %e, "GPU discovery source failed")
            }
        }
    }
    anyhow::bail!("no GPUs found: no NVML, no nvidia-smi, and no --simulate-gpus spec")
}

/// The default order: NVML, nvidia-smi, then the simulation spec if one was given.
pub fn default_sources(simulate: Option<String>, node_name: &str) -> Vec<Box<dyn GpuDiscovery>> {
    let mut sources: Vec<Box<dyn GpuDiscovery>> = vec![Box::new(Nvml), Box::new(NvidiaSmi)];
    if let Some(spec) = simulate {
        sources.push(Box::new(Simulated {
            spec,
            node_name: node_name.to_string(),
        }));
    }
    sources
}

/// Nominal memory sizes (GB) that marketing names use; reported sizes are a little smaller.
const NOMINAL_GB: [i64; 12] = [8, 12, 16, 24, 32, 40, 48, 64, 80, 94, 141, 192];

/// `NVIDIA H100 80GB HBM3`, 81559 MiB → `H100-80GB`; `NVIDIA A100-SXM4-40GB` → `A100-40GB`;
/// `NVIDIA L40S`, 46068 MiB → `L40S-48GB`.
pub fn normalise_model(name: &str, memory_mib: i64) -> String {
    let chip = name
        .split_whitespace()
        .filter(|w| !w.eq_ignore_ascii_case("nvidia") && !w.eq_ignore_ascii_case("tesla"))
        .find(|w| w.chars().any(|c| c.is_ascii_digit()))
        .and_then(|w| w.split('-').next())
        .unwrap_or(name)
        .to_ascii_uppercase();
    let gib = memory_mib / 1024;
    let nominal = NOMINAL_GB
        .iter()
        .copied()
        .find(|&n| n >= gib)
        .unwrap_or(gib);
    format!("{chip}-{nominal}GB")
}

/// Health of one GPU at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuHealthSample {
    pub index: i32,
    pub healthy: bool,
    /// Why unhealthy, e.g. `XID 79: GPU has fallen off the bus`, `uncorrectable ECC errors: 3`,
    /// `temperature 95 C >= slowdown threshold 90 C`. `None` when healthy.
    pub reason: Option<String>,
}

impl GpuHealthSample {
    pub fn healthy(index: i32) -> Self {
        Self {
            index,
            healthy: true,
            reason: None,
        }
    }

    pub fn unhealthy(index: i32, reason: impl Into<String>) -> Self {
        Self {
            index,
            healthy: false,
            reason: Some(reason.into()),
        }
    }

    /// Healthy when there are no reasons; otherwise all of them, `; `-separated.
    fn from_reasons(index: i32, reasons: Vec<String>) -> Self {
        if reasons.is_empty() {
            Self::healthy(index)
        } else {
            Self::unhealthy(index, reasons.join("; "))
        }
    }
}

/// One way of checking the health of the host's GPUs.
pub trait GpuHealthProbe: Send + Sync {
    /// One sample per GPU index in `indices`, in that order. Must never panic; a GPU that cannot
    /// be read is unhealthy with a reason.
    fn sample(&self, indices: &[i32]) -> Vec<GpuHealthSample>;
}

/// The probe matching the discovery source that found the GPUs (`nvml`, `nvidia-smi`,
/// `simulated`). Only the simulated probe reads `fault_file`.
pub fn health_probe(discovery_source: &str, fault_file: PathBuf) -> Box<dyn GpuHealthProbe> {
    match discovery_source {
        "nvml" => Box::new(NvmlHealth::new()),
        "nvidia-smi" => Box::new(NvidiaSmiHealth::new()),
        "simulated" => Box::new(SimulatedHealth::new(fault_file)),
        // Unhealthy rather than silently healthy: a GPU nobody watches should not take work.
        other => Box::new(Unprobeable(format!(
            "no health probe for GPU discovery source '{other}'"
        ))),
    }
}

fn all_unhealthy(indices: &[i32], reason: &str) -> Vec<GpuHealthSample> {
    indices
        .iter()
        .map(|&i| GpuHealthSample::unhealthy(i, reason))
        .collect()
}

/// Reports every GPU unhealthy for one fixed reason.
struct Unprobeable(String);

impl GpuHealthProbe for Unprobeable {
    fn sample(&self, indices: &[i32]) -> Vec<GpuHealthSample> {
        all_unhealthy(indices, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_real_device_names() {
        assert_eq!(normalise_model("NVIDIA H100 80GB HBM3", 81559), "H100-80GB");
        assert_eq!(normalise_model("NVIDIA A100-SXM4-40GB", 40960), "A100-40GB");
        assert_eq!(normalise_model("NVIDIA L40S", 46068), "L40S-48GB");
        assert_eq!(normalise_model("NVIDIA H200", 143771), "H200-141GB");
    }

    #[test]
    fn discovery_falls_through_to_simulation() {
        struct Absent;
        impl GpuDiscovery for Absent {
            fn source(&self) -> &'static str {
                "absent"
            }
            fn discover(&self) -> anyhow::Result<Option<Vec<DiscoveredGpu>>> {
                Ok(None)
            }
        }
        let sources: Vec<Box<dyn GpuDiscovery>> = vec![
            Box::new(Absent),
            Box::new(Simulated {
                spec: "2xL40S-48GB".into(),
                node_name: "x".into(),
            }),
        ];
        let (source, gpus) = discover(&sources).unwrap();
        assert_eq!(source, "simulated");
        assert_eq!(gpus.len(), 2);
        assert!(discover(&[Box::new(Absent) as Box<dyn GpuDiscovery>]).is_err());
    }

    #[test]
    fn every_probe_answers_for_every_index() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NvmlHealth>();
        let dir = tempfile::tempdir().unwrap();
        let indices = [0, 1, 2];
        for source in ["nvml", "nvidia-smi", "simulated", "bogus"] {
            let samples = health_probe(source, dir.path().join("faults")).sample(&indices);
            let got: Vec<i32> = samples.iter().map(|s| s.index).collect();
            assert_eq!(got, indices, "{source}");
            for s in &samples {
                assert_eq!(s.healthy, s.reason.is_none(), "{source}: {s:?}");
            }
        }
        let bogus = health_probe("bogus", dir.path().join("faults")).sample(&[0]);
        assert!(!bogus[0].healthy);
        // SAFETY: only probes whether the library exists on this host.
        if unsafe { libloading::Library::new("libnvidia-ml.so.1") }.is_err() {
            let s = NvmlHealth::new().sample(&[0]);
            assert!(
                s[0].reason
                    .as_deref()
                    .unwrap()
                    .starts_with("NVML unavailable")
            );
        }
    }

    #[test]
    fn health_samples_round_trip_as_json() {
        let s = GpuHealthSample::unhealthy(2, "uncorrectable ECC errors: 3");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"index":2,"healthy":false,"reason":"uncorrectable ECC errors: 3"}"#
        );
        assert_eq!(serde_json::from_str::<GpuHealthSample>(&json).unwrap(), s);
    }
}
