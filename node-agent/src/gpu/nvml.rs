//! NVML discovery and health. The loaded library is in [`ffi`].

mod ffi;

use super::{
    DiscoveredGpu, GpuDiscovery, GpuHealthProbe, GpuHealthSample, all_unhealthy, normalise_model,
};
use ffi::{NvmlApi, NvmlDevice, NvmlMemory};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_uint};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// NVIDIA's management library, loaded with `dlopen` so the agent runs on hosts without it.
pub struct Nvml;

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
            let init: libloading::Symbol<'_, unsafe extern "C" fn() -> c_int> =
                lib.get(b"nvmlInit_v2")?;
            let shutdown: libloading::Symbol<'_, unsafe extern "C" fn() -> c_int> =
                lib.get(b"nvmlShutdown")?;
            let count: libloading::Symbol<'_, unsafe extern "C" fn(*mut c_uint) -> c_int> =
                lib.get(b"nvmlDeviceGetCount_v2")?;
            let by_index: libloading::Symbol<
                '_,
                unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> c_int,
            > = lib.get(b"nvmlDeviceGetHandleByIndex_v2")?;
            let get_name: libloading::Symbol<
                '_,
                unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int,
            > = lib.get(b"nvmlDeviceGetName")?;
            let get_uuid: libloading::Symbol<
                '_,
                unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int,
            > = lib.get(b"nvmlDeviceGetUUID")?;
            let get_memory: libloading::Symbol<
                '_,
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

/// XIDs after which a GPU should take no new work: they mean corrupted or retired memory, a
/// lost GPU, a broken link or dead firmware, which need a drain and reset. NVML reports every
/// XID as "critical"; the rest (e.g. 13, 31, 43) are usually the workload's own faults.
const CRITICAL_XIDS: [(u64, &str); 11] = [
    (48, "double-bit ECC error"),
    (62, "internal micro-controller halt"),
    (63, "ECC page retirement or row remapping event"),
    (64, "ECC page retirement or row remapping failure"),
    (74, "NVLink error"),
    (79, "GPU has fallen off the bus"),
    (92, "high single-bit ECC error rate"),
    (94, "contained ECC error"),
    (95, "uncontained ECC error"),
    (119, "GSP RPC timeout"),
    (120, "GSP error"),
];

fn critical_xid(xid: u64) -> Option<&'static str> {
    CRITICAL_XIDS
        .iter()
        .find(|(x, _)| *x == xid)
        .map(|(_, what)| *what)
}

/// How long a GPU stays unhealthy after its last critical XID. It becomes healthy again only
/// when a sample taken at least this long after the XID reads the GPU fine; until then, and
/// for the rest of the probe's life if the GPU never reads fine, the XID is reported.
const XID_HOLD: Duration = Duration::from_secs(60);

/// Last critical XID per GPU index (sticky, see [`XID_HOLD`]).
#[derive(Default)]
struct XidTracker {
    last: HashMap<i32, (u64, Instant)>,
}

impl XidTracker {
    fn record(&mut self, index: i32, xid: u64, at: Instant) {
        self.last.insert(index, (xid, at));
    }

    /// The XID reason to report for `index`, clearing it once the GPU has read fine for long enough.
    fn check(&mut self, index: i32, read_fine: bool, now: Instant) -> Option<String> {
        let &(xid, at) = self.last.get(&index)?;
        if read_fine && now.saturating_duration_since(at) >= XID_HOLD {
            self.last.remove(&index);
            return None;
        }
        Some(format!(
            "XID {xid}: {}",
            critical_xid(xid).unwrap_or("critical error")
        ))
    }
}

/// Health from NVML: lost GPUs, uncorrected ECC, thermal slowdown and critical XIDs. NVML stays
/// loaded and initialised for the probe's life, since XID events only reach a registered set.
pub struct NvmlHealth {
    api: Result<NvmlApi, String>,
}

impl NvmlHealth {
    /// Loads and initialises NVML; when that fails every GPU is reported unhealthy.
    pub fn new() -> Self {
        let api = NvmlApi::load();
        if let Err(e) = &api {
            tracing::warn!(error = %e, "NVML unavailable: GPUs will be reported unhealthy");
        }
        Self { api }
    }
}

impl Default for NvmlHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl GpuHealthProbe for NvmlHealth {
    fn sample(&self, indices: &[i32]) -> Vec<GpuHealthSample> {
        let api = match &self.api {
            Ok(api) => api,
            Err(e) => return all_unhealthy(indices, &format!("NVML unavailable: {e}")),
        };
        let mut guard = api.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        let now = Instant::now();
        api.drain_xids(&mut state.xids, now);
        indices
            .iter()
            .map(|&index| {
                let mut reasons = api.read(index, &mut state.registered);
                if let Some(xid) = state.xids.check(index, reasons.is_empty(), now) {
                    reasons.push(xid);
                }
                GpuHealthSample::from_reasons(index, reasons)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids_are_sticky_until_the_gpu_reads_fine_after_the_hold() {
        let t0 = Instant::now();
        let mut xids = XidTracker::default();
        assert_eq!(xids.check(0, true, t0), None);
        xids.record(0, 79, t0);
        let lost = Some("XID 79: GPU has fallen off the bus".to_string());
        assert_eq!(xids.check(0, true, t0 + Duration::from_secs(1)), lost);
        assert_eq!(xids.check(1, true, t0), None, "other GPUs unaffected");
        // Past the hold but still reading badly: stays unhealthy.
        assert_eq!(xids.check(0, false, t0 + XID_HOLD * 2), lost);
        // A newer XID restarts the hold.
        xids.record(0, 48, t0 + XID_HOLD);
        assert_eq!(
            xids.check(0, true, t0 + XID_HOLD + Duration::from_secs(30)),
            Some("XID 48: double-bit ECC error".to_string())
        );
        assert_eq!(xids.check(0, true, t0 + XID_HOLD * 2), None);
        // Cleared for good.
        assert_eq!(xids.check(0, false, t0 + XID_HOLD * 2), None);
    }

    #[test]
    fn only_listed_xids_are_critical() {
        for xid in [48, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120] {
            assert!(critical_xid(xid).is_some(), "XID {xid}");
        }
        for xid in [13, 31, 43, 45, 0] {
            assert!(critical_xid(xid).is_none(), "XID {xid}");
        }
    }
}
