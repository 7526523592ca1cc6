//! Which NVIDIA device nodes a workload may open (cgroup v1 `devices`). Its cgroup starts from
//! the host's allow-all and gets deny rules for:
//! - every `/dev/nvidiaN` (major 195) but its own GPUs' minors, and `nvidia-modeset` (195:254);
//!   `nvidiactl` (195:255) stays open: every CUDA process needs it, and it reaches no GPU by itself;
//! - every other NVIDIA major (`nvidia-caps` for MIG, `nvidia-nvswitch`, `nvidia-nvlink`, ...).
//!
//! `nvidia-uvm` (and `-tools`) stays open: CUDA cannot initialise without it, and it maps only the
//! memory of GPUs whose device node the process has opened (the NVIDIA container runtime grants it
//! to every GPU container the same way).
//!
//! A GPU's minor number is read from `/proc/driver/nvidia/gpus/<PCI address>/information` in PCI
//! order, which is NVML's default index order; without that directory (simulated GPUs) the minor
//! is the index.

use std::path::Path;

/// `/dev/nvidia0..N`, `nvidia-modeset` (254), `nvidiactl` (255).
pub const NVIDIA_MAJOR: u32 = 195;
const NVIDIACTL_MINOR: u32 = 255;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLayout {
    /// Minor number of each GPU, by index.
    minors: Vec<u32>,
    /// Other NVIDIA character majors, denied whole.
    other_majors: Vec<u32>,
}

impl DeviceLayout {
    /// Reads `<proc>/devices` and `<proc>/driver/nvidia/gpus` (`proc`: `/proc` but in tests).
    pub fn discover(proc: &Path) -> Self {
        let devices = std::fs::read_to_string(proc.join("devices")).unwrap_or_default();
        let other_majors = devices
            .lines()
            .skip_while(|l| !l.starts_with("Character devices"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty() && !l.starts_with("Block devices"))
            .filter_map(|l| {
                let (major, name) = l.trim().split_once(' ')?;
                let major: u32 = major.parse().ok()?;
                (name.starts_with("nvidia") && name != "nvidia-uvm" && major != NVIDIA_MAJOR)
                    .then_some(major)
            })
            .collect();
        let mut gpus: Vec<_> = std::fs::read_dir(proc.join("driver/nvidia/gpus"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        gpus.sort();
        let minors = gpus
            .iter()
            .filter_map(|g| {
                let info = std::fs::read_to_string(g.join("information")).ok()?;
                info.lines()
                    .find_map(|l| l.strip_prefix("Device Minor:"))
                    .and_then(|m| m.trim().parse().ok())
            })
            .collect();
        Self {
            minors,
            other_majors,
        }
    }

    pub fn minor_of(&self, index: i32) -> u32 {
        self.minors
            .get(index as usize)
            .copied()
            .unwrap_or(index as u32)
    }

    /// The `devices.deny` rules of a workload given `gpu_indices`.
    pub fn denies(&self, gpu_indices: &[i32]) -> Vec<String> {
        let own: Vec<u32> = gpu_indices.iter().map(|i| self.minor_of(*i)).collect();
        let mut rules: Vec<String> = (0..NVIDIACTL_MINOR)
            .filter(|m| !own.contains(m))
            .map(|m| format!("c {NVIDIA_MAJOR}:{m} rwm"))
            .collect();
        rules.extend(self.other_majors.iter().map(|m| format!("c {m}:* rwm")));
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minors_come_from_the_driver_in_pci_order_and_other_nvidia_majors_are_denied() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::write(
            proc.path().join("devices"),
            "Character devices:\n  1 mem\n195 nvidia-frontend\n 10 misc\n237 nvidia-caps\n\
             238 nvidia-uvm\n239 nvidia-nvswitch\n\nBlock devices:\n  7 loop\n",
        )
        .unwrap();
        for (pci, minor) in [("0000:b1:00.0", 3), ("0000:1a:00.0", 0)] {
            let dir = proc.path().join("driver/nvidia/gpus").join(pci);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("information"),
                format!(
                    "Model: \t\t NVIDIA H100\nDevice Minor: \t {minor}\nBus Location: \t {pci}\n"
                ),
            )
            .unwrap();
        }
        let layout = DeviceLayout::discover(proc.path());
        assert_eq!((layout.minor_of(0), layout.minor_of(1)), (0, 3));
        let rules = layout.denies(&[1]);
        assert!(rules.contains(&"c 195:0 rwm".to_string()));
        assert!(!rules.contains(&"c 195:3 rwm".to_string()), "its own GPU");
        assert!(
            rules.contains(&"c 195:254 rwm".to_string()),
            "nvidia-modeset"
        );
        assert!(
            !rules.iter().any(|r| r.starts_with("c 195:255 ")),
            "nvidiactl"
        );
        assert!(rules.contains(&"c 237:* rwm".to_string()));
        assert!(rules.contains(&"c 239:* rwm".to_string()));
        assert!(!rules.iter().any(|r| r.starts_with("c 238:")), "nvidia-uvm");
        assert_eq!(rules.len(), 254 + 2);
    }

    #[test]
    fn without_a_driver_the_minor_is_the_index() {
        let layout = DeviceLayout::discover(Path::new("/nonexistent"));
        assert_eq!(layout.minor_of(5), 5);
        assert_eq!(layout.denies(&[0, 5]).len(), 253);
    }
}
