//! Workload isolation (`--workload-isolation=strict`, the default). Each workload:
//! - runs as an unprivileged uid (and gid) of its own, no supplementary groups, with
//!   `PR_SET_NO_NEW_PRIVS` (a setuid binary cannot regain root): [`uids`];
//! - has its own network namespace with only `lo`, up: its own loopback, no egress;
//! - has its own mount namespace (propagation private, so nothing reaches the host) in which
//!   `/tmp` and `/dev/shm` are fresh, size-limited tmpfs of its own (mode 1777): no tenant sees
//!   another's (or the host's) files there. A working directory under one of them (a state
//!   directory under `/tmp`, as in tests) is bind-mounted back at its path;
//! - is limited: `RLIMIT_NPROC` (per uid, so per workload), `RLIMIT_NOFILE`, and memory and
//!   processes through cgroups where the host has them (else `RLIMIT_DATA` for memory);
//! - lives in cgroups that track and kill all of it and fence its GPUs' device nodes:
//!   [`cgroups`], [`devices`].
//!
//! The shell of a workload enters all of this in `pre_exec` (between fork and exec, as root):
//! join the cgroups, `unshare(CLONE_NEWNET)` and bring `lo` up, `unshare(CLONE_NEWNS)` and mount
//! its `/tmp` and `/dev/shm`, set the limits, `setgroups([])`,
//! `setresgid`, `setresuid`, no-new-privs; then it execs the command. Nothing of the workload
//! ever runs as root or outside its cgroups.
//!
//! `--workload-isolation=none` (a non-root developer machine only) runs workloads as the agent's
//! own user, sharing its network; the agent says so loudly at start.

pub mod cgroups;
pub mod devices;
pub mod procs;
pub mod uids;

use anyhow::Context;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Marks a workload of which nothing is left: its uid and cgroups are given back.
pub const GONE: &str = "gone";

pub const DEFAULT_UID_BASE: u32 = 200_000;
pub const DEFAULT_UID_COUNT: u32 = 65_536;
pub const DEFAULT_UID_CLAIMS_DIR: &str = "/run/gpuaas-agent/uids";
pub const DEFAULT_MAX_PROCESSES: u64 = 16_384;
pub const DEFAULT_MAX_OPEN_FILES: u64 = 65_536;
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 << 20;
pub const DEFAULT_CGROUP_V1_ROOT: &str = "/sys/fs/cgroup";
pub const DEFAULT_TMP_MIB: u64 = 1024;
pub const DEFAULT_SHM_MIB: u64 = 1024;
/// Where each workload gets a private tmpfs, in its own mount namespace.
const PRIVATE_TMPFS: [&CStr; 2] = [c"/tmp", c"/dev/shm"];
/// A workload's memory by default: this share of the host's memory, split by GPUs.
const HOST_MEMORY_SHARE_PERCENT: u64 = 90;
/// The uid the start-up probe runs as (`nobody`): never one a workload may hold.
const PROBE_UID: u32 = 65_534;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationMode {
    /// Own uid, network namespace, cgroups and limits per workload; needs root.
    Strict,
    /// None at all: workloads run as the agent's user (non-root developer machines only).
    None,
}

/// How workloads are isolated and limited, and how big their logs may grow.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadArgs {
    /// `strict`: each workload runs as its own unprivileged user, in its own network namespace
    /// and cgroups, with limits; the agent refuses to start if it cannot. `none`: no isolation at
    /// all (a non-root developer machine only).
    #[arg(long = "workload-isolation", env = "GPUAAS_WORKLOAD_ISOLATION", value_enum, default_value_t = IsolationMode::Strict)]
    pub isolation: IsolationMode,
    /// First uid (and gid) handed to workloads, one per instance.
    #[arg(long, env = "GPUAAS_WORKLOAD_UID_BASE", default_value_t = DEFAULT_UID_BASE)]
    pub workload_uid_base: u32,
    /// How many uids workloads may use.
    #[arg(long, env = "GPUAAS_WORKLOAD_UID_COUNT", default_value_t = DEFAULT_UID_COUNT)]
    pub workload_uid_count: u32,
    /// Host-wide uid claims, shared by every agent on the host.
    #[arg(long, env = "GPUAAS_WORKLOAD_UID_CLAIMS_DIR", default_value = DEFAULT_UID_CLAIMS_DIR)]
    pub workload_uid_claims_dir: PathBuf,
    /// Processes (threads included) a workload may have: RLIMIT_NPROC of its uid and pids.max.
    #[arg(long, env = "GPUAAS_WORKLOAD_MAX_PROCESSES", default_value_t = DEFAULT_MAX_PROCESSES)]
    pub workload_max_processes: u64,
    /// Open files per process of a workload (RLIMIT_NOFILE).
    #[arg(long, env = "GPUAAS_WORKLOAD_MAX_OPEN_FILES", default_value_t = DEFAULT_MAX_OPEN_FILES)]
    pub workload_max_open_files: u64,
    /// Memory of a workload in MiB; 0: its share of 90% of the host's memory, by its GPUs.
    #[arg(long, env = "GPUAAS_WORKLOAD_MEMORY_MIB", default_value_t = 0)]
    pub workload_memory_mib: u64,
    /// The cgroup v2 directory under which each workload gets one named by its instance id.
    /// Default: `gpuaas` under `<v1 root>/unified` (hybrid hosts) or `<v1 root>` (pure v2).
    #[arg(long, env = "GPUAAS_WORKLOAD_CGROUP")]
    pub workload_cgroup: Option<PathBuf>,
    /// Where the cgroup v1 controllers (memory, pids, devices) are mounted.
    #[arg(long, env = "GPUAAS_CGROUP_V1_ROOT", default_value = DEFAULT_CGROUP_V1_ROOT)]
    pub cgroup_v1_root: PathBuf,
    /// A workload's output log is rotated (copytruncate to `output.log.1`) past this size.
    #[arg(long, env = "GPUAAS_WORKLOAD_LOG_MAX_BYTES", default_value_t = DEFAULT_LOG_MAX_BYTES)]
    pub workload_log_max_bytes: u64,
    /// Size in MiB of a workload's private `/tmp` (a tmpfs of its own, in strict isolation).
    #[arg(long, env = "GPUAAS_WORKLOAD_TMP_MIB", default_value_t = DEFAULT_TMP_MIB, value_parser = clap::value_parser!(u64).range(1..))]
    pub workload_tmp_mib: u64,
    /// Size in MiB of a workload's private `/dev/shm` (a tmpfs of its own, in strict isolation).
    #[arg(long, env = "GPUAAS_WORKLOAD_SHM_MIB", default_value_t = DEFAULT_SHM_MIB, value_parser = clap::value_parser!(u64).range(1..))]
    pub workload_shm_mib: u64,
}

impl Default for WorkloadArgs {
    fn default() -> Self {
        Self {
            isolation: IsolationMode::Strict,
            workload_uid_base: DEFAULT_UID_BASE,
            workload_uid_count: DEFAULT_UID_COUNT,
            workload_uid_claims_dir: DEFAULT_UID_CLAIMS_DIR.into(),
            workload_max_processes: DEFAULT_MAX_PROCESSES,
            workload_max_open_files: DEFAULT_MAX_OPEN_FILES,
            workload_memory_mib: 0,
            workload_cgroup: None,
            cgroup_v1_root: DEFAULT_CGROUP_V1_ROOT.into(),
            workload_log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            workload_tmp_mib: DEFAULT_TMP_MIB,
            workload_shm_mib: DEFAULT_SHM_MIB,
        }
    }
}

/// The isolation the agent found it can give, ready for each workload.
#[derive(Debug)]
pub struct Isolation {
    uids: Option<uids::UidPool>,
    cgroups: cgroups::Layout,
    devices: devices::DeviceLayout,
    max_processes: u64,
    max_open_files: u64,
    memory_fixed: Option<u64>,
    host_memory: u64,
    host_gpus: usize,
    /// tmpfs options of the workload's `/tmp` and `/dev/shm` (as PRIVATE_TMPFS).
    tmpfs_options: [CString; 2],
    pub log_max_bytes: u64,
}

impl Isolation {
    /// Checks that workloads can be isolated as `args` asks, on a host with `host_gpus` GPUs.
    /// Strict isolation that cannot be had is an error of one line saying why.
    pub fn prepare(args: &WorkloadArgs, host_gpus: usize) -> anyhow::Result<Self> {
        let mut isolation = Self {
            uids: None,
            cgroups: cgroups::Layout::default(),
            devices: devices::DeviceLayout::default(),
            // Never more than the agent's own hard limits (raising them needs CAP_SYS_RESOURCE).
            max_processes: args
                .workload_max_processes
                .min(hard_limit(libc::RLIMIT_NPROC)),
            max_open_files: args
                .workload_max_open_files
                .min(hard_limit(libc::RLIMIT_NOFILE)),
            memory_fixed: (args.workload_memory_mib > 0).then_some(args.workload_memory_mib << 20),
            host_memory: host_memory(),
            host_gpus,
            tmpfs_options: [args.workload_tmp_mib, args.workload_shm_mib]
                .map(|mib| tmpfs_options(mib.saturating_mul(1 << 20))),
            log_max_bytes: args.workload_log_max_bytes,
        };
        if args.isolation == IsolationMode::None {
            tracing::warn!(
                "WORKLOAD ISOLATION IS OFF (--workload-isolation=none): workloads run as the agent's own user, share its network, and can read and signal whatever it can. Developer machines only."
            );
            return Ok(isolation);
        }
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!(
                "cannot isolate workloads: the agent is not root (each workload runs as a user of its own); run it as root, or pass --workload-isolation=none on a developer machine"
            );
        }
        let range = args.workload_uid_base
            ..args
                .workload_uid_base
                .saturating_add(args.workload_uid_count);
        if range.contains(&PROBE_UID) {
            anyhow::bail!(
                "cannot isolate workloads: the workload uid range {range:?} holds {PROBE_UID} (nobody); choose another --workload-uid-base"
            );
        }
        if let Some((name, uid)) = passwd_user_in(&range) {
            anyhow::bail!(
                "cannot isolate workloads: the workload uid range {range:?} holds the host's user {name} ({uid}); choose another --workload-uid-base"
            );
        }
        let pool = uids::UidPool::new(
            args.workload_uid_base,
            args.workload_uid_count,
            &args.workload_uid_claims_dir,
        )
        .with_context(|| {
            format!(
                "cannot isolate workloads: uid claims in {}",
                args.workload_uid_claims_dir.display()
            )
        })?;
        isolation.uids = Some(pool);
        isolation.cgroups =
            cgroups::Layout::discover(args.workload_cgroup.as_deref(), &args.cgroup_v1_root);
        isolation.devices = devices::DeviceLayout::discover(Path::new("/proc"));
        isolation.probe().map_err(|e| {
            anyhow::anyhow!(
                "cannot isolate workloads: a probe could not enter a network and mount namespace (private /tmp and /dev/shm) and an unprivileged user of its own: {e}; pass --workload-isolation=none on a developer machine"
            )
        })?;
        if !isolation.cgroups.has_any() {
            tracing::warn!(
                "no usable cgroup for workloads: a stop kills every process of the workload's uid instead, and memory is limited per process (RLIMIT_DATA)"
            );
        } else if !isolation.cgroups.has_memory() {
            tracing::warn!(
                "no memory cgroup for workloads: memory is limited per process (RLIMIT_DATA)"
            );
        }
        if !isolation.cgroups.has_devices() && Path::new("/dev/nvidiactl").exists() {
            tracing::warn!(
                "no cgroup v1 devices controller: workloads are not fenced from the device nodes of other GPUs (CUDA_VISIBLE_DEVICES only)"
            );
        }
        tracing::info!(
            uids = ?range,
            cgroups = %isolation.cgroups.summary(),
            max_processes = isolation.max_processes,
            max_open_files = isolation.max_open_files,
            "workloads are isolated: own uid, network and mount namespace, cgroups and limits"
        );
        Ok(isolation)
    }

    pub fn is_strict(&self) -> bool {
        self.uids.is_some()
    }

    pub fn uids(&self) -> Option<&uids::UidPool> {
        self.uids.as_ref()
    }

    /// The memory a workload with `gpus` GPUs may use.
    pub fn memory_for(&self, gpus: usize) -> u64 {
        self.memory_fixed.unwrap_or_else(|| {
            let usable = self.host_memory / 100 * HOST_MEMORY_SHARE_PERCENT;
            let host_gpus = self.host_gpus.max(1) as u64;
            usable / host_gpus * (gpus.max(1) as u64).min(host_gpus)
        })
    }

    /// Creates the cgroups of the workload named `name` (its instance id) on `gpu_indices`.
    pub fn create_cgroups(&self, name: &str, gpu_indices: &[i32]) -> io::Result<cgroups::Cgroups> {
        let denies = self.devices.denies(gpu_indices);
        self.cgroups.create(
            name,
            &cgroups::Limits {
                memory_bytes: self.memory_for(gpu_indices.len()),
                max_processes: self.max_processes,
                device_denies: &denies,
            },
        )
    }

    /// What the shell of a workload with `gpus` GPUs, run as `uid` in `work`, enters before exec.
    pub fn plan(
        &self,
        uid: u32,
        gpus: usize,
        cgroup_procs: Vec<RawFd>,
        work: Option<&Path>,
    ) -> io::Result<ExecPlan> {
        // A working directory under a private tmpfs would be hidden by it: it is bind-mounted
        // back at its path, on directories made for it in the tmpfs.
        let mut rebind = Vec::new();
        if let Some(work) = work {
            let work = std::fs::canonicalize(work)?;
            if let Some(top) = PRIVATE_TMPFS
                .iter()
                .map(|m| Path::new(std::ffi::OsStr::from_bytes(m.to_bytes())))
                .find(|m| work.starts_with(m) && work != *m)
            {
                let mut dirs: Vec<&Path> = work.ancestors().take_while(|a| *a != top).collect();
                dirs.reverse();
                for dir in dirs {
                    rebind.push(CString::new(dir.as_os_str().as_bytes())?);
                }
            }
        }
        Ok(ExecPlan {
            uid,
            netns: true,
            tmpfs_options: Some(self.tmpfs_options.clone()),
            rebind,
            max_processes: self.max_processes,
            max_open_files: self.max_open_files,
            data_limit: (!self.cgroups.has_memory()).then(|| self.memory_for(gpus)),
            cgroup_procs,
        })
    }

    /// Runs `/bin/sh -c 'exit 0'` the way a workload runs (without cgroups), as `nobody`.
    fn probe(&self) -> io::Result<()> {
        let plan = self.plan(PROBE_UID, 1, Vec::new(), None)?;
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", "exit 0"]).env_clear();
        // SAFETY: `enter` makes only async-signal-safe system calls (see ExecPlan::enter).
        unsafe {
            command.pre_exec(move || plan.enter());
        }
        let status = command.status()?;
        if !status.success() {
            return Err(io::Error::other(format!("the probe exited with {status}")));
        }
        Ok(())
    }
}

/// What a workload's shell does between fork and exec, as root: see the module docs.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    uid: u32,
    netns: bool,
    /// Options of the private tmpfs mounted on each of PRIVATE_TMPFS, in a mount namespace of
    /// its own; `None`: the host's mounts.
    tmpfs_options: Option<[CString; 2]>,
    /// The working directory and its ancestors below a private tmpfs, outermost first (empty
    /// where it lies under none): made in the tmpfs, and the last bind-mounted from the host's.
    rebind: Vec<CString>,
    max_processes: u64,
    max_open_files: u64,
    data_limit: Option<u64>,
    /// Opened `cgroup.procs` of the workload's cgroups (the parent closes them after spawning).
    cgroup_procs: Vec<RawFd>,
}

impl ExecPlan {
    /// Enters the workload's cgroups, network and mount namespaces, limits and user.
    ///
    /// # Safety
    /// Only between fork and exec: it changes the calling process for good. It makes only
    /// async-signal-safe system calls and allocates nothing, as a forked child of a
    /// multi-threaded process must.
    pub unsafe fn enter(&self) -> io::Result<()> {
        let ok = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // SAFETY (all below): plain system calls on values this function owns.
        unsafe {
            for &fd in &self.cgroup_procs {
                // "0": the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if self.netns {
                ok(libc::unshare(libc::CLONE_NEWNET))?;
                loopback_up()?;
            }
            if let Some(options) = &self.tmpfs_options {
                self.private_tmpfs(options)?;
            }
            let limit = |resource, value: u64| {
                let rlim = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                ok(libc::setrlimit(resource, &rlim))
            };
            limit(libc::RLIMIT_NPROC, self.max_processes)?;
            limit(libc::RLIMIT_NOFILE, self.max_open_files)?;
            if let Some(bytes) = self.data_limit {
                limit(libc::RLIMIT_DATA, bytes)?;
            }
            ok(libc::setgroups(0, std::ptr::null()))?;
            ok(libc::setresgid(self.uid, self.uid, self.uid))?;
            ok(libc::setresuid(self.uid, self.uid, self.uid))?;
            ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        Ok(())
    }

    /// Enters a mount namespace of its own with private propagation (nothing mounted in it
    /// reaches the host) and mounts a fresh tmpfs on `/tmp` and `/dev/shm`.
    ///
    /// # Safety
    /// As [`ExecPlan::enter`]: system calls only, on values prepared before the fork.
    unsafe fn private_tmpfs(&self, options: &[CString; 2]) -> io::Result<()> {
        let ok = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY (all below): plain system calls on NUL-terminated strings this plan owns.
        unsafe {
            ok(libc::unshare(libc::CLONE_NEWNS))?;
            ok(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // The working directory, opened (in the new namespace: a bind needs its mount there)
            // before a tmpfs may hide it.
            let work = match self.rebind.last() {
                Some(path) => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    );
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Some((path, fd))
                }
                None => None,
            };
            for (target, data) in PRIVATE_TMPFS.iter().zip(options) {
                ok(libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                ))?;
            }
            if let Some((path, fd)) = work {
                for dir in &self.rebind {
                    if libc::mkdir(dir.as_ptr(), 0o711) != 0
                        && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                // "." is the host's directory (through the descriptor), bound over the new one;
                // then the workload starts in the bound one, at its path.
                ok(libc::fchdir(fd))?;
                ok(libc::mount(
                    c".".as_ptr(),
                    path.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                ok(libc::chdir(path.as_ptr()))?;
                libc::close(fd);
            }
        }
        Ok(())
    }
}

/// `size=<bytes>,mode=1777`: the options of a private tmpfs of `bytes`.
fn tmpfs_options(bytes: u64) -> CString {
    CString::new(format!("size={bytes},mode=1777")).expect("no NUL in digits")
}

/// Brings `lo` up in the calling process's network namespace (SIOCSIFFLAGS).
///
/// # Safety
/// System calls only; safe between fork and exec.
unsafe fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl/close on a descriptor this function owns and a zeroed ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(io::Error::last_os_error());
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(io::Error::last_os_error());
            }
        }
        libc::close(fd);
        result
    }
}

/// Sends `signal` to every process of `uid` at once: a forked child takes the uid and calls
/// `kill(-1)`, which the kernel applies to all processes it may signal (exactly those of `uid`)
/// in one pass, so a forking workload cannot outrun it.
pub fn signal_uid(uid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: the child makes only async-signal-safe system calls and leaves with _exit.
    let child = unsafe { libc::fork() };
    match child {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: in the forked child: raw system calls, then _exit.
            unsafe {
                let id = uid as libc::c_long;
                if libc::syscall(libc::SYS_setresuid, id, id, id) != 0 {
                    libc::_exit(1);
                }
                libc::kill(-1, signal);
                libc::_exit(0)
            }
        }
        pid => {
            let mut status = 0;
            loop {
                // SAFETY: waiting for the child forked above.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r == pid || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// The calling process's hard limit of `resource`.
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) into a local.
    if unsafe { libc::getrlimit(resource, &mut rlim) } != 0 {
        return u64::MAX;
    }
    rlim.rlim_max
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX / 2, |kib| kib << 10)
}

/// A user of the host's /etc/passwd whose uid lies in `range`.
fn passwd_user_in(range: &std::ops::Range<u32>) -> Option<(String, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut fields = l.split(':');
        let name = fields.next()?;
        let uid: u32 = fields.nth(1)?.parse().ok()?;
        range.contains(&uid).then(|| (name.to_string(), uid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isolation(memory_mib: u64, host_gpus: usize) -> Isolation {
        Isolation {
            uids: None,
            cgroups: cgroups::Layout::default(),
            devices: devices::DeviceLayout::default(),
            max_processes: 1,
            max_open_files: 1,
            memory_fixed: (memory_mib > 0).then_some(memory_mib << 20),
            host_memory: 100 << 30,
            host_gpus,
            tmpfs_options: [tmpfs_options(1), tmpfs_options(1)],
            log_max_bytes: 1,
        }
    }

    #[test]
    fn a_workload_gets_its_gpus_share_of_the_host_memory_unless_told() {
        assert_eq!(
            isolation(0, 8).memory_for(2),
            (100u64 << 30) / 100 * 90 / 8 * 2
        );
        assert_eq!(
            isolation(0, 8).memory_for(16),
            isolation(0, 8).memory_for(8)
        );
        assert_eq!(isolation(0, 0).memory_for(1), (100 << 30) / 100 * 90);
        assert_eq!(isolation(512, 8).memory_for(2), 512 << 20);
    }

    #[test]
    fn no_isolation_needs_nothing_of_the_host() {
        let args = WorkloadArgs {
            isolation: IsolationMode::None,
            ..WorkloadArgs::default()
        };
        assert!(!Isolation::prepare(&args, 8).unwrap().is_strict());
    }
}
