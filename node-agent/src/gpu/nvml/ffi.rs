//! The NVML C API, loaded with `dlopen`: its types and codes, and the entry points health needs.

use super::{XidTracker, critical_xid};
use std::collections::HashSet;
use std::ffi::{CStr, c_char, c_int, c_uint, c_ulonglong, c_void};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

const NVML_SUCCESS: c_int = 0;
const NVML_ERROR_NOT_SUPPORTED: c_int = 3;
const NVML_ERROR_TIMEOUT: c_int = 10;
const NVML_ERROR_GPU_IS_LOST: c_int = 15;
const NVML_EVENT_TYPE_XID_CRITICAL_ERROR: c_ulonglong = 0x8;
const NVML_MEMORY_ERROR_TYPE_UNCORRECTED: c_int = 1;
const NVML_VOLATILE_ECC: c_int = 0;
const NVML_TEMPERATURE_GPU: c_int = 0;
const NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: c_int = 1;

pub(super) type NvmlDevice = *mut c_void;
#[repr(C)]
pub(super) struct NvmlMemory {
    pub(super) total: c_ulonglong,
    pub(super) free: c_ulonglong,
    pub(super) used: c_ulonglong,
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

#[derive(Default)]
pub(super) struct NvmlState {
    /// GPUs whose XID events go to the event set (or that cannot have them).
    pub(super) registered: HashSet<c_uint>,
    pub(super) xids: XidTracker,
}

type NvmlGetByIndex = unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> c_int;

/// The NVML entry points health needs, valid while `_lib` is loaded.
pub(super) struct NvmlApi {
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
    pub(super) state: Mutex<NvmlState>,
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
    pub(super) fn load() -> Result<Self, String> {
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
    pub(super) fn drain_xids(&self, xids: &mut XidTracker, now: Instant) {
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
    pub(super) fn read(&self, index: i32, registered: &mut HashSet<c_uint>) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_event_data_matches_the_c_layout() {
        // device pointer, two u64s, two u32s.
        assert_eq!(std::mem::size_of::<NvmlEventData>(), 32);
        assert_eq!(std::mem::align_of::<NvmlEventData>(), 8);
    }
}
