//! Host-wide uid claims. Every workload runs as a uid of its own from a configured range; a uid
//! is claimed under an exclusive `flock` on `<claims dir>/.lock`, so agents sharing a host (the
//! dev stack runs two) never hand out the same one. A claim is a file `<claims dir>/<uid>` naming
//! the instance directory that owns it. A uid is free when it has no claim, or its claim is stale
//! (the owner's directory is gone or marks the workload gone), **and** no process has it: a uid
//! is never reused while anything of its last workload lives. Claims are handed out round-robin
//! (`.next`), so a uid comes back only after the whole range has been used.

use super::{GONE, procs};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct UidPool {
    base: u32,
    count: u32,
    dir: PathBuf,
}

/// The claims lock; unlocked explicitly on drop (a forked child's copy of the descriptor must
/// not keep it held until it execs).
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock(2) on a descriptor this value owns.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl UidPool {
    pub fn new(base: u32, count: u32, dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        if count == 0 || base == 0 || base.checked_add(count).is_none() {
            return Err(io::Error::other(format!(
                "bad workload uid range: base {base}, count {count}"
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self { base, count, dir })
    }

    pub fn range(&self) -> std::ops::Range<u32> {
        self.base..self.base + self.count
    }

    fn lock(&self) -> io::Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(".lock"))?;
        loop {
            // SAFETY: flock(2) on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// The instance directory that holds `uid`, if any.
    pub fn owner(&self, uid: u32) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.dir.join(uid.to_string())).ok()?;
        Some(PathBuf::from(text.trim_end_matches('\n')))
    }

    fn write_claim(&self, uid: u32, owner: &Path) -> io::Result<()> {
        // Readers take no lock: the claim appears whole (rename), never half written.
        let tmp = self.dir.join(format!(".{uid}.tmp"));
        std::fs::write(&tmp, format!("{}\n", owner.display()))?;
        std::fs::rename(tmp, self.dir.join(uid.to_string()))
    }

    /// Claims a free uid for the workload whose agent directory is `owner`.
    pub fn claim(&self, owner: &Path) -> io::Result<u32> {
        let _lock = self.lock()?;
        let range = self.range();
        let live = procs::by_uid(|u| range.contains(&u));
        let next = std::fs::read_to_string(self.dir.join(".next"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|u| range.contains(u))
            .unwrap_or(self.base);
        for step in 0..self.count {
            let offset = ((next - self.base) as u64 + step as u64) % self.count as u64;
            let uid = self.base + offset as u32;
            if live.contains_key(&uid) {
                continue;
            }
            if self.owner(uid).is_some_and(|o| !stale(&o)) {
                continue;
            }
            self.write_claim(uid, owner)?;
            let after = if uid + 1 >= range.end {
                self.base
            } else {
                uid + 1
            };
            std::fs::write(self.dir.join(".next"), after.to_string())?;
            return Ok(uid);
        }
        Err(io::Error::other(format!(
            "no free workload uid in {}..{}: every one is claimed or still has a process",
            range.start, range.end
        )))
    }

    /// Gives `uid` back, if `owner` holds it (once nothing of its workload is left).
    pub fn release(&self, uid: u32, owner: &Path) {
        let Ok(_lock) = self.lock() else { return };
        if self.owner(uid).as_deref() == Some(owner) {
            let _ = std::fs::remove_file(self.dir.join(uid.to_string()));
        }
    }

    /// Whether `owner` holds `uid`, so that the processes of `uid` are its workload's. A claim
    /// lost while processes of the uid still live (the claims directory was wiped) is taken
    /// back: nobody else can have been given a uid that has live processes.
    pub fn holds(&self, uid: u32, owner: &Path) -> bool {
        if let Some(current) = self.owner(uid) {
            return current == owner;
        }
        let Ok(_lock) = self.lock() else { return false };
        match self.owner(uid) {
            Some(current) => current == owner,
            None if procs::of_uid(uid).is_empty() => false,
            None => self.write_claim(uid, owner).is_ok(),
        }
    }
}

/// A claim whose workload can no longer run anything (its directory is gone, or marks it gone).
fn stale(owner: &Path) -> bool {
    !owner.exists() || owner.join(GONE).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn root() -> bool {
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("skipped: needs root (runs a process as another uid)");
        }
        root
    }

    #[test]
    fn claims_are_unique_round_robin_and_reclaimed_only_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        // A range far from the agent's default, so other tests' workloads are never in it.
        let pool = UidPool::new(3_900_000_000, 3, dir.path().join("claims")).unwrap();
        let owners: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("i{i}"))).collect();
        for o in &owners {
            std::fs::create_dir(o).unwrap();
        }
        let a = pool.claim(&owners[0]).unwrap();
        let b = pool.claim(&owners[1]).unwrap();
        let c = pool.claim(&owners[2]).unwrap();
        assert_eq!(
            vec![a, b, c],
            vec![3_900_000_000, 3_900_000_001, 3_900_000_002]
        );
        assert!(pool.claim(&owners[3]).is_err(), "all three are live");
        assert!(pool.holds(b, &owners[1]) && !pool.holds(b, &owners[0]));
        // Its owner is gone: b is free again, and is what comes next.
        std::fs::write(owners[1].join(GONE), "").unwrap();
        assert_eq!(pool.claim(&owners[3]).unwrap(), b);
        pool.release(a, &owners[2]);
        assert_eq!(
            pool.owner(a).as_deref(),
            Some(owners[0].as_path()),
            "not c's to give back"
        );
        pool.release(a, &owners[0]);
        assert_eq!(pool.owner(a), None);
    }

    #[test]
    fn a_uid_with_a_live_process_is_never_handed_out() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pool = UidPool::new(3_900_000_100, 2, dir.path().join("claims")).unwrap();
        // A process of the first uid, which has no claim (left over from a wiped claims dir).
        let mut straggler = std::process::Command::new("sleep")
            .arg("30")
            .uid(3_900_000_100)
            .gid(3_900_000_100)
            .spawn()
            .unwrap();
        let owner = dir.path().join("x");
        std::fs::create_dir(&owner).unwrap();
        assert_eq!(pool.claim(&owner).unwrap(), 3_900_000_101);
        // The first uid's claim went missing while its process lives: its owner takes it back.
        let old = dir.path().join("old");
        std::fs::create_dir(&old).unwrap();
        assert!(pool.holds(3_900_000_100, &old));
        assert_eq!(pool.owner(3_900_000_100).as_deref(), Some(old.as_path()));
        straggler.kill().unwrap();
        straggler.wait().unwrap();
    }

    #[test]
    fn agents_sharing_a_host_never_share_a_uid() {
        let dir = tempfile::tempdir().unwrap();
        let claims = dir.path().join("claims");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let claims = claims.clone();
                let base = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    // Each thread is an agent of its own, with its own pool over the same claims.
                    let pool = UidPool::new(3_900_000_200, 64, claims).unwrap();
                    (0..16)
                        .map(|i| {
                            let owner = base.join(format!("t{t}-{i}"));
                            std::fs::create_dir(&owner).unwrap();
                            pool.claim(&owner).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u32> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 64);
    }
}
