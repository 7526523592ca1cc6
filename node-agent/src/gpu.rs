//! GPU discovery behind one interface, tried in order: NVML (loaded at run time; absent is not an
//! error), then `nvidia-smi`, then a `--simulate-gpus` spec for machines without GPUs.
//! Per-GPU health probing (critical XIDs, uncorrectable ECC, thermal slowdown) has the same three
//! sources, picked by the one that found the GPUs; simulated faults come from a fault file.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, c_char, c_int, c_uint, c_ulonglong, c_void};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

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

const NVML_SUCCESS: c_int = 0;
const NVML_ERROR_NOT_SUPPORTED: c_int = 3;
const NVML_ERROR_TIMEOUT: c_int = 10;
const NVML_ERROR_GPU_IS_LOST: c_int = 15;
const NVML_EVENT_TYPE_XID_CRITICAL_ERROR: c_ulonglong = 0x8;
const NVML_MEMORY_ERROR_TYPE_UNCORRECTED: c_int = 1;
const NVML_VOLATILE_ECC: c_int = 0;
const NVML_TEMPERATURE_GPU: c_int = 0;
const NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: c_int = 1;

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

type NvmlEventSet = *mut c_void;

/// `nvmlEventData_t`.
#[repr(C)]
struct NvmlEventData {
    device: NvmlDevice,
    event_type: c_ulonglong,
    /// The XID, for XID events.
    event_data: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
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

#[derive(Default)]
struct NvmlState {
    /// GPUs whose XID events go to the event set (or that cannot have them).
    registered: HashSet<c_uint>,
    xids: XidTracker,
}

type NvmlGetByIndex = unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> c_int;

/// The NVML entry points health needs, valid while `_lib` is loaded.
struct NvmlApi {
    shutdown: unsafe extern "C" fn() -> c_int,
    by_index: NvmlGetByIndex,
    get_index: unsafe extern "C" fn(NvmlDevice, *mut c_uint) -> c_int,
    total_ecc: unsafe extern "C" fn(NvmlDevice, c_int, c_int, *mut c_ulonglong) -> c_int,
    temperature: unsafe extern "C" fn(NvmlDevice, c_int, *mut c_uint) -> c_int,
    threshold: unsafe extern "C" fn(NvmlDevice, c_int, *mut c_uint) -> c_int,
    register_events: unsafe extern "C" fn(NvmlDevice, c_ulonglong, NvmlEventSet) -> c_int,
    event_wait: unsafe extern "C" fn(NvmlEventSet, *mut NvmlEventData, c_uint) -> c_int,
    event_free: unsafe extern "C" fn(NvmlEventSet) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    /// Whether `nvmlInit_v2` succeeded, so `Drop` must shut NVML down.
    initialised: bool,
    /// Null when NVML cannot create one; XIDs are then not watched.
    events: NvmlEventSet,
    state: Mutex<NvmlState>,
    // Declared last so it unloads after `Drop::drop` has shut NVML down.
    _lib: libloading::Library,
}

// SAFETY: NVML documents its API as thread-safe; the raw pointers are opaque NVML handles only
// passed back to NVML, and all Rust-side mutable state is behind `state`'s mutex.
unsafe impl Send for NvmlApi {}
// SAFETY: as for `Send`.
unsafe impl Sync for NvmlApi {}

/// Copies a function pointer out of `lib`.
///
/// # Safety
/// `T` must be the symbol's real C signature, and the pointer must not outlive `lib`.
unsafe fn nvml_symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
    // SAFETY: upheld by the caller.
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| format!("{name}: {e}"))
}

impl NvmlApi {
    fn load() -> Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; libnvidia-ml is NVIDIA's driver library.
        let lib =
            unsafe { libloading::Library::new("libnvidia-ml.so.1") }.map_err(|e| e.to_string())?;
        // SAFETY: each symbol has its documented NVML C signature, and every pointer is kept in
        // the returned value next to `lib`, so none outlives the library.
        let api = unsafe {
            let init: unsafe extern "C" fn() -> c_int = nvml_symbol(&lib, "nvmlInit_v2")?;
            let count: unsafe extern "C" fn(*mut c_uint) -> c_int =
                nvml_symbol(&lib, "nvmlDeviceGetCount_v2")?;
            let event_create: unsafe extern "C" fn(*mut NvmlEventSet) -> c_int =
                nvml_symbol(&lib, "nvmlEventSetCreate")?;
            let mut api = Self {
                shutdown: nvml_symbol(&lib, "nvmlShutdown")?,
                by_index: nvml_symbol(&lib, "nvmlDeviceGetHandleByIndex_v2")?,
                get_index: nvml_symbol(&lib, "nvmlDeviceGetIndex")?,
                total_ecc: nvml_symbol(&lib, "nvmlDeviceGetTotalEccErrors")?,
                temperature: nvml_symbol(&lib, "nvmlDeviceGetTemperature")?,
                threshold: nvml_symbol(&lib, "nvmlDeviceGetTemperatureThreshold")?,
                register_events: nvml_symbol(&lib, "nvmlDeviceRegisterEvents")?,
                event_wait: nvml_symbol(&lib, "nvmlEventSetWait_v2")?,
                event_free: nvml_symbol(&lib, "nvmlEventSetFree")?,
                error_string: nvml_symbol(&lib, "nvmlErrorString")?,
                initialised: false,
                events: std::ptr::null_mut(),
                state: Mutex::new(NvmlState::default()),
                _lib: lib,
            };
            let rc = init();
            if rc != NVML_SUCCESS {
                return Err(format!("nvmlInit failed: {}", api.error(rc))); // library present but no driver/devices
            }
            api.initialised = true;
            let mut events: NvmlEventSet = std::ptr::null_mut();
            let rc = event_create(&mut events);
            if rc == NVML_SUCCESS {
                api.events = events;
            } else {
                tracing::warn!(error = %api.error(rc), "NVML event set unavailable: XIDs not watched");
            }
            // Register every GPU now, so XIDs before the first sample are not missed.
            let mut n: c_uint = 0;
            let mut registered = HashSet::new();
            if count(&mut n) == NVML_SUCCESS {
                for i in 0..n {
                    let mut dev: NvmlDevice = std::ptr::null_mut();
                    if (api.by_index)(i, &mut dev) == NVML_SUCCESS {
                        api.register(&mut registered, i, dev);
                    }
                }
            }
            api.state
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .registered = registered;
            api
        };
        Ok(api)
    }

    /// `nvmlErrorString` with the numeric code, e.g. `GPU is lost (15)`.
    fn error(&self, rc: c_int) -> String {
        // SAFETY: nvmlErrorString accepts any code and returns a static NUL-terminated string
        // (or null, which is checked).
        let text = unsafe {
            let p = (self.error_string)(rc);
            if p.is_null() {
                return format!("NVML error {rc}");
            }
            CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        format!("{text} ({rc})")
    }

    /// Sends `dev`'s XIDs to the event set, once per GPU.
    fn register(&self, registered: &mut HashSet<c_uint>, index: c_uint, dev: NvmlDevice) {
        if self.events.is_null() || registered.contains(&index) {
            return;
        }
        // SAFETY: `dev` came from nvmlDeviceGetHandleByIndex_v2 and `events` from
        // nvmlEventSetCreate, both on this initialised library.
        let rc =
            unsafe { (self.register_events)(dev, NVML_EVENT_TYPE_XID_CRITICAL_ERROR, self.events) };
        if rc != NVML_SUCCESS {
            tracing::warn!(gpu = index, error = %self.error(rc), "cannot watch XIDs of this GPU");
        }
        // Also on failure: retrying every sample would only repeat the warning.
        registered.insert(index);
    }

    /// Records the critical XIDs that arrived since the last call.
    fn drain_xids(&self, xids: &mut XidTracker, now: Instant) {
        if self.events.is_null() {
            return;
        }
        // Bounded so a flood of events cannot stall a sample.
        for _ in 0..1024 {
            let mut data = NvmlEventData {
                device: std::ptr::null_mut(),
                event_type: 0,
                event_data: 0,
                gpu_instance_id: 0,
                compute_instance_id: 0,
            };
            // SAFETY: `events` is a live event set and `data` a writable nvmlEventData_t;
            // a zero timeout never blocks.
            let rc = unsafe { (self.event_wait)(self.events, &mut data, 0) };
            match rc {
                NVML_SUCCESS => {}
                NVML_ERROR_TIMEOUT => return,
                rc => {
                    tracing::warn!(error = %self.error(rc), "reading NVML XID events failed");
                    return;
                }
            }
            if data.event_type & NVML_EVENT_TYPE_XID_CRITICAL_ERROR == 0 {
                continue;
            }
            let xid = data.event_data;
            let mut index: c_uint = 0;
            // SAFETY: `data.device` is the handle NVML reported the event for (checked non-null).
            if data.device.is_null()
                || unsafe { (self.get_index)(data.device, &mut index) } != NVML_SUCCESS
            {
                tracing::warn!(xid, "XID on a GPU NVML cannot name");
                continue;
            }
            match critical_xid(xid) {
                Some(what) => {
                    tracing::warn!(gpu = index, xid, what, "critical XID: GPU marked unhealthy");
                    xids.record(index as i32, xid, now);
                }
                None => tracing::info!(gpu = index, xid, "XID not treated as a GPU fault"),
            }
        }
    }

    /// Reasons `index` is unhealthy right now (XIDs aside); empty when it reads fine.
    fn read(&self, index: i32, registered: &mut HashSet<c_uint>) -> Vec<String> {
        let Ok(i) = c_uint::try_from(index) else {
            return vec![format!("invalid GPU index {index}")];
        };
        let mut dev: NvmlDevice = std::ptr::null_mut();
        // SAFETY: `dev` is a writable handle slot.
        match unsafe { (self.by_index)(i, &mut dev) } {
            NVML_SUCCESS => {}
            NVML_ERROR_GPU_IS_LOST => return vec![GPU_LOST.to_string()],
            rc => return vec![format!("NVML cannot open GPU: {}", self.error(rc))],
        }
        self.register(registered, i, dev);
        let mut reasons = Vec::new();
        let mut ecc: c_ulonglong = 0;
        // SAFETY: `dev` is a valid handle and `ecc` a writable counter.
        let rc = unsafe {
            (self.total_ecc)(
                dev,
                NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                NVML_VOLATILE_ECC,
                &mut ecc,
            )
        };
        if self.supported(rc, "ECC errors", &mut reasons) && ecc > 0 {
            reasons.push(format!("uncorrectable ECC errors: {ecc}"));
        }
        let (mut temp, mut slowdown): (c_uint, c_uint) = (0, 0);
        // SAFETY: `dev` is a valid handle and `temp` a writable value.
        let rc = unsafe { (self.temperature)(dev, NVML_TEMPERATURE_GPU, &mut temp) };
        if self.supported(rc, "temperature", &mut reasons) {
            // SAFETY: as above, for `slowdown`.
            let rc = unsafe {
                (self.threshold)(dev, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, &mut slowdown)
            };
            if self.supported(rc, "slowdown temperature", &mut reasons) && temp >= slowdown {
                reasons.push(format!(
                    "temperature {temp} C >= slowdown threshold {slowdown} C"
                ));
            }
        }
        reasons
    }

    /// Whether a read returned a value; a failure other than "not supported" becomes a reason.
    fn supported(&self, rc: c_int, what: &str, reasons: &mut Vec<String>) -> bool {
        let reason = match rc {
            NVML_SUCCESS => return true,
            NVML_ERROR_NOT_SUPPORTED => return false,
            NVML_ERROR_GPU_IS_LOST => GPU_LOST.to_string(),
            rc => format!("NVML cannot read {what}: {}", self.error(rc)),
        };
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
        false
    }
}

const GPU_LOST: &str = "GPU has fallen off the bus";

impl Drop for NvmlApi {
    fn drop(&mut self) {
        if !self.initialised {
            return;
        }
        // SAFETY: NVML is initialised, `events` is null or a live set, and the library is still
        // loaded (`_lib` drops after this).
        unsafe {
            if !self.events.is_null() {
                (self.event_free)(self.events);
            }
            (self.shutdown)();
        }
    }
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

    #[test]
    fn nvml_event_data_matches_the_c_layout() {
        // device pointer, two u64s, two u32s.
        assert_eq!(std::mem::size_of::<NvmlEventData>(), 32);
        assert_eq!(std::mem::align_of::<NvmlEventData>(), 8);
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
