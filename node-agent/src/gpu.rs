//! GPU discovery behind one interface, tried in order: NVML (loaded at run time; absent is not an
//! error), then `nvidia-smi`, then a `--simulate-gpus` spec for machines without GPUs.

use serde::{Deserialize, Serialize};
use std::ffi::{CStr, c_char, c_int, c_uint, c_ulonglong, c_void};

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

/// NVIDIA's management library, loaded with `dlopen` so the agent runs on hosts without it.
pub struct Nvml;

type NvmlDevice = *mut c_void;
#[repr(C)]
struct NvmlMemory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

impl GpuDiscovery for Nvml {
    fn source(&self) -> &'static str {
        "nvml"
    }

    fn discover(&self) -> anyhow::Result<Option<Vec<DiscoveredGpu>>> {
        // SAFETY: symbols are NVML's documented C ABI; the library stays loaded for the calls.
        unsafe {
            let lib = match libloading::Library::new("libnvidia-ml.so.1") {
                Ok(lib) => lib,
                Err(_) => return Ok(None),
            };
            let init: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
                lib.get(b"nvmlInit_v2")?;
            let shutdown: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
                lib.get(b"nvmlShutdown")?;
            let count: libloading::Symbol<unsafe extern "C" fn(*mut c_uint) -> c_int> =
                lib.get(b"nvmlDeviceGetCount_v2")?;
            let by_index: libloading::Symbol<
                unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> c_int,
            > = lib.get(b"nvmlDeviceGetHandleByIndex_v2")?;
            let get_name: libloading::Symbol<
                unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int,
            > = lib.get(b"nvmlDeviceGetName")?;
            let get_uuid: libloading::Symbol<
                unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int,
            > = lib.get(b"nvmlDeviceGetUUID")?;
            let get_memory: libloading::Symbol<
                unsafe extern "C" fn(NvmlDevice, *mut NvmlMemory) -> c_int,
            > = lib.get(b"nvmlDeviceGetMemoryInfo")?;
            if init() != 0 {
                return Ok(None); // library present but no driver/devices
            }
            let mut n: c_uint = 0;
            let mut gpus = Vec::new();
            let mut failure = None;
            if count(&mut n) == 0 {
                for i in 0..n {
                    let mut dev: NvmlDevice = std::ptr::null_mut();
                    let mut name = [0 as c_char; 96];
                    let mut uuid = [0 as c_char; 96];
                    let mut mem = NvmlMemory {
                        total: 0,
                        free: 0,
                        used: 0,
                    };
                    if by_index(i, &mut dev) != 0
                        || get_name(dev, name.as_mut_ptr(), 96) != 0
                        || get_uuid(dev, uuid.as_mut_ptr(), 96) != 0
                        || get_memory(dev, &mut mem) != 0
                    {
                        failure = Some(format!("NVML could not read GPU {i}"));
                        break;
                    }
                    let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
                    let memory_mib = (mem.total / (1024 * 1024)) as i64;
                    gpus.push(DiscoveredGpu {
                        index: i as i32,
                        uuid: CStr::from_ptr(uuid.as_ptr()).to_string_lossy().into_owned(),
                        model: normalise_model(&name, memory_mib),
                        memory_mib,
                        healthy: true,
                    });
                }
            }
            shutdown();
            match failure {
                Some(f) => anyhow::bail!(f),
                None if gpus.is_empty() => Ok(None),
                None => Ok(Some(gpus)),
            }
        }
    }
}

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
}
