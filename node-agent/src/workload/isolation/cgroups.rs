//! A workload's cgroups: one in the cgroup v2 (unified) hierarchy, which tracks every process of
//! the workload and kills them all at once (`cgroup.kill`), and, where the host has them, one per
//! cgroup v1 controller: `memory` (a limit), `pids` (a process limit, against fork bombs) and
//! `devices` (only its own GPUs' device nodes). Where v2 has the memory or pids controller, it
//! limits them itself. The workload's shell joins them all from `pre_exec`, before it drops its
//! privileges, so nothing of it ever runs outside them.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A controller hierarchy a workload's cgroup lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unified,
    Memory,
    Pids,
    Devices,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Unified => "unified",
            Kind::Memory => "memory",
            Kind::Pids => "pids",
            Kind::Devices => "devices",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Kind::Unified, Kind::Memory, Kind::Pids, Kind::Devices]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where the agent makes its workloads' cgroups: parents named `gpuaas`, discovered at start.
#[derive(Debug, Default)]
pub struct Layout {
    unified: Option<PathBuf>,
    unified_memory: bool,
    unified_pids: bool,
    v1: Vec<(Kind, PathBuf)>,
}

/// What a workload's cgroups enforce.
pub struct Limits<'a> {
    pub memory_bytes: u64,
    pub max_processes: u64,
    /// `devices.deny` rules (v1), one per line written.
    pub device_denies: &'a [String],
}

impl Layout {
    /// Finds the hierarchies and creates the `gpuaas` parents. `unified`: the v2 parent to use
    /// (default: `gpuaas` under `/sys/fs/cgroup/unified` on a hybrid host, `/sys/fs/cgroup` on a
    /// pure v2 one); `v1_root`: where v1 controllers are mounted. One that cannot be used is left
    /// out (and said so in `summary`).
    pub fn discover(unified: Option<&Path>, v1_root: &Path) -> Self {
        let mut layout = Layout::default();
        let unified = unified.map(Path::to_path_buf).or_else(|| {
            [v1_root.join("unified"), v1_root.to_path_buf()]
                .into_iter()
                .find(|m| m.join("cgroup.controllers").exists())
                .map(|m| m.join("gpuaas"))
        });
        if let Some(parent) = unified {
            match prepare_unified(&parent) {
                Ok((memory, pids)) => {
                    layout.unified = Some(parent);
                    layout.unified_memory = memory;
                    layout.unified_pids = pids;
                }
                Err(e) => {
                    tracing::warn!(cgroup = %parent.display(), error = %e, "the cgroup v2 parent for workloads is not usable")
                }
            }
        }
        for kind in [Kind::Memory, Kind::Pids, Kind::Devices] {
            if (kind == Kind::Memory && layout.unified_memory)
                || (kind == Kind::Pids && layout.unified_pids)
            {
                continue;
            }
            let mount = v1_root.join(kind.as_str());
            // A v1 hierarchy: has cgroup.procs, and no cgroup.controllers (that would be v2).
            if !mount.join("cgroup.procs").exists() || mount.join("cgroup.controllers").exists() {
                continue;
            }
            let parent = mount.join("gpuaas");
            match std::fs::create_dir_all(&parent) {
                Ok(()) => layout.v1.push((kind, parent)),
                Err(e) => {
                    tracing::warn!(cgroup = %parent.display(), error = %e, "a cgroup v1 controller is not usable")
                }
            }
        }
        for parent in layout.parents() {
            sweep(parent);
        }
        layout
    }

    fn parents(&self) -> impl Iterator<Item = &Path> {
        self.unified
            .as_deref()
            .into_iter()
            .chain(self.v1.iter().map(|(_, p)| p.as_path()))
    }

    pub fn has_memory(&self) -> bool {
        self.unified_memory || self.v1.iter().any(|(k, _)| *k == Kind::Memory)
    }

    pub fn has_pids(&self) -> bool {
        self.unified_pids || self.v1.iter().any(|(k, _)| *k == Kind::Pids)
    }

    pub fn has_devices(&self) -> bool {
        self.v1.iter().any(|(k, _)| *k == Kind::Devices)
    }

    pub fn has_any(&self) -> bool {
        self.unified.is_some() || !self.v1.is_empty()
    }

    /// One line for the startup log.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = &self.unified {
            let mut controllers = Vec::new();
            if self.unified_memory {
                controllers.push("memory");
            }
            if self.unified_pids {
                controllers.push("pids");
            }
            parts.push(format!("v2 {} {controllers:?}", u.display()));
        }
        for (kind, parent) in &self.v1 {
            parts.push(format!("v1 {} {}", kind.as_str(), parent.display()));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// Creates the workload's cgroups (named by its instance id) with their limits.
    pub fn create(&self, name: &str, limits: &Limits<'_>) -> io::Result<Cgroups> {
        let mut made = Cgroups::default();
        let result = self.create_into(&mut made, name, limits);
        if let Err(e) = result {
            made.remove();
            return Err(e);
        }
        Ok(made)
    }

    fn create_into(&self, made: &mut Cgroups, name: &str, limits: &Limits<'_>) -> io::Result<()> {
        if let Some(parent) = &self.unified {
            let dir = make(parent, name)?;
            made.dirs.push((Kind::Unified, dir.clone()));
            if self.unified_memory {
                write(&dir, "memory.max", &limits.memory_bytes.to_string())?;
                let _ = write(&dir, "memory.swap.max", "0");
            }
            if self.unified_pids {
                write(&dir, "pids.max", &limits.max_processes.to_string())?;
            }
        }
        for (kind, parent) in &self.v1 {
            let dir = make(parent, name)?;
            made.dirs.push((*kind, dir.clone()));
            match kind {
                Kind::Memory => {
                    write(
                        &dir,
                        "memory.limit_in_bytes",
                        &limits.memory_bytes.to_string(),
                    )?;
                    // No swap beyond the limit, where swap accounting exists.
                    let _ = write(
                        &dir,
                        "memory.memsw.limit_in_bytes",
                        &limits.memory_bytes.to_string(),
                    );
                }
                Kind::Pids => write(&dir, "pids.max", &limits.max_processes.to_string())?,
                Kind::Devices => {
                    // One rule per write(2): that is how the kernel parses devices.deny.
                    let mut deny = std::fs::OpenOptions::new()
                        .write(true)
                        .open(dir.join("devices.deny"))?;
                    for rule in limits.device_denies {
                        deny.write_all(rule.as_bytes())?;
                    }
                }
                Kind::Unified => unreachable!("v1 controllers only"),
            }
        }
        Ok(())
    }
}

fn prepare_unified(parent: &Path) -> io::Result<(bool, bool)> {
    std::fs::create_dir_all(parent)?;
    if !parent.join("cgroup.procs").exists() {
        return Err(io::Error::other("not a cgroup v2 directory"));
    }
    // Hand the memory and pids controllers down to the workloads' cgroups where v2 has them
    // (the parent holds no process itself, so it may).
    let available = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    for controller in ["memory", "pids"] {
        if available.split_whitespace().any(|c| c == controller) {
            let _ = write(parent, "cgroup.subtree_control", &format!("+{controller}"));
        }
    }
    let enabled =
        std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    let has = |c: &str| enabled.split_whitespace().any(|e| e == c);
    Ok((has("memory"), has("pids")))
}

/// Removes the empty workload cgroups under `parent` left by workloads no agent finished (their
/// state directory was deleted). Only old ones: a fresh, empty one may be about to be joined.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for dir in entries.flatten().map(|e| e.path()) {
        let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|procs| procs.trim().is_empty());
        let stale = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < old);
        if empty && stale {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn make(parent: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = parent.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(e),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

/// One workload's cgroups, as recorded in its agent directory (`cgroups`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cgroups {
    dirs: Vec<(Kind, PathBuf)>,
}

impl Cgroups {
    pub fn load(file: &Path) -> Self {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        Self {
            dirs: text
                .lines()
                .filter_map(|l| {
                    let (kind, path) = l.split_once(' ')?;
                    Some((Kind::parse(kind)?, PathBuf::from(path)))
                })
                .collect(),
        }
    }

    pub fn save(&self, file: &Path) -> io::Result<()> {
        let text: String = self
            .dirs
            .iter()
            .map(|(k, p)| format!("{} {}\n", k.as_str(), p.display()))
            .collect();
        std::fs::write(file, text)
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    pub fn dir(&self, kind: Kind) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.as_path())
    }

    /// `cgroup.procs` of each, opened for the workload's shell to join from `pre_exec`.
    pub fn open_procs(&self) -> io::Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|(_, d)| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
            })
            .collect()
    }

    /// The live processes in any of them.
    pub fn members(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|(_, d)| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .filter(|pid| super::procs::stat(*pid).is_some_and(|s| s.alive))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether the v2 cgroup still has a live process (`cgroup.events`: one atomic flag, unlike a
    /// scan of `/proc` that a forking process could outrun).
    pub fn populated(&self) -> bool {
        self.dir(Kind::Unified)
            .and_then(|d| std::fs::read_to_string(d.join("cgroup.events")).ok())
            .is_some_and(|events| events.lines().any(|l| l.trim() == "populated 1"))
    }

    /// SIGKILLs everything in the v2 cgroup at once; false where there is no `cgroup.kill`.
    pub fn kill(&self) -> bool {
        self.dir(Kind::Unified)
            .is_some_and(|d| std::fs::write(d.join("cgroup.kill"), "1").is_ok())
    }

    /// Removes the (empty) cgroups; one that still has a process stays.
    pub fn remove(&self) {
        for (_, dir) in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cgroups = Cgroups {
            dirs: vec![
                (
                    Kind::Unified,
                    PathBuf::from("/sys/fs/cgroup/unified/gpuaas/x"),
                ),
                (
                    Kind::Devices,
                    PathBuf::from("/sys/fs/cgroup/devices/gpuaas/x"),
                ),
            ],
        };
        cgroups.save(&dir.path().join("cgroups")).unwrap();
        assert_eq!(Cgroups::load(&dir.path().join("cgroups")), cgroups);
        assert_eq!(
            Cgroups::load(&dir.path().join("missing")),
            Cgroups::default()
        );
    }
}
