//! What `/proc` says about processes: liveness, process group, start time, user ids.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Not a zombie (a zombie has released its memory, files and devices).
    pub alive: bool,
    pub pgrp: i32,
    /// Start time in clock ticks since boot: with the pid, a process's identity.
    pub started: u64,
}

/// Reads `/proc/<pid>/stat`: state, process group and start time.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, starting at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let state = *fields.first()?;
    Some(ProcStat {
        alive: state != "Z" && state != "X",
        pgrp: fields.get(2)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

/// The real, effective, saved and filesystem uids of a live process (`None`: gone or a zombie).
pub fn uids(pid: i32) -> Option<[u32; 4]> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_status(status: &str) -> Option<[u32; 4]> {
    let mut uids = None;
    for line in status.lines() {
        if let Some(state) = line.strip_prefix("State:") {
            let state = state.trim_start();
            if state.starts_with('Z') || state.starts_with('X') {
                return None;
            }
        } else if let Some(ids) = line.strip_prefix("Uid:") {
            let ids: Vec<u32> = ids
                .split_whitespace()
                .filter_map(|u| u.parse().ok())
                .collect();
            uids = Some([*ids.first()?, *ids.get(1)?, *ids.get(2)?, *ids.get(3)?]);
        }
    }
    uids
}

/// Every pid in `/proc`.
pub fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Live processes any of whose uids is `uid` (a workload's processes cannot change their uids).
pub fn of_uid(uid: u32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|pid| uids(*pid).is_some_and(|ids| ids.contains(&uid)))
        .collect()
}

/// Live processes by uid, for the uids `wanted` accepts: one pass over `/proc`.
pub fn by_uid(wanted: impl Fn(u32) -> bool) -> HashMap<u32, Vec<i32>> {
    let mut out: HashMap<u32, Vec<i32>> = HashMap::new();
    for pid in pids() {
        let Some(mut ids) = uids(pid) else { continue };
        ids.sort_unstable();
        for (i, uid) in ids.into_iter().enumerate() {
            if wanted(uid) && (i == 0 || ids[i - 1] != uid) {
                out.entry(uid).or_default().push(pid);
            }
        }
    }
    out
}

/// Whether `pid` carries `GPUAAS_INSTANCE_ID=<id>` in its environment (only workloads without
/// isolation are recognised this way; an isolated one is recognised by its uid and cgroup).
pub fn carries_env(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_every_uid_and_zombies_none() {
        let live = "Name:\tsleep\nState:\tS (sleeping)\nUid:\t200001\t200002\t200003\t200004\n";
        assert_eq!(parse_status(live), Some([200001, 200002, 200003, 200004]));
        let zombie = "Name:\tsh\nState:\tZ (zombie)\nUid:\t5\t5\t5\t5\n";
        assert_eq!(parse_status(zombie), None);
    }

    #[test]
    fn this_process_is_found_by_its_uid() {
        // SAFETY: getuid(2) has no preconditions.
        let me = unsafe { libc::getuid() };
        let pid = std::process::id() as i32;
        assert!(of_uid(me).contains(&pid));
        assert!(by_uid(|u| u == me)[&me].contains(&pid));
        assert!(stat(pid).unwrap().alive);
    }
}
