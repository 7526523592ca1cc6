//! Capped workload output logs. A workload writes `output.log` through the `O_APPEND` descriptor
//! it was started with (it cannot open the file itself: it lives in the agent's directory), so the
//! agent rotates by copytruncate: past the cap, the newest `cap` bytes are copied to
//! `output.log.1` and `output.log` is truncated; the workload's next write lands at the new end.
//! The descriptor survives an agent restart, and so does the cap (checked periodically and on
//! every read). On disk: at most about twice the cap, plus what is written between two checks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The rotated log next to `log` (`output.log.1`).
pub fn rotated(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    log.with_file_name(name)
}

/// Rotates `log` if it has grown past `cap` bytes; true if it did.
pub fn cap(log: &Path, cap: u64) -> io::Result<bool> {
    let len = match std::fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= cap {
        return Ok(false);
    }
    let mut source = File::open(log)?;
    source.seek(SeekFrom::Start(len.saturating_sub(cap)))?;
    let keep = rotated(log);
    let tmp = keep.with_extension("1.tmp");
    let mut copy = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    io::copy(&mut source.take(cap), &mut copy)?;
    std::fs::rename(&tmp, &keep)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// The last `bytes` of the output: of `log`, preceded by the end of its rotated copy when `log`
/// holds less (it was just rotated).
pub fn tail(log: &Path, bytes: u64) -> String {
    let mut out = last(log, bytes);
    if (out.len() as u64) < bytes {
        let mut before = last(&rotated(log), bytes - out.len() as u64);
        before.extend_from_slice(&out);
        out = before;
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

fn last(path: &Path, bytes: u64) -> Vec<u8> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = file.take(bytes).read_to_end(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_past_its_cap_keeps_its_newest_bytes_and_its_writer_appends_at_the_new_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("output.log");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        for i in 0..1000 {
            writeln!(writer, "line {i:04}").unwrap();
        }
        assert!(!cap(&log, 1 << 20).unwrap(), "under the cap: untouched");
        assert!(cap(&log, 100).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        let kept = std::fs::read_to_string(rotated(&log)).unwrap();
        assert_eq!(kept.len(), 100);
        assert!(kept.ends_with("line 0999\n"));
        writeln!(writer, "after").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n", "no hole");
        assert!(tail(&log, 30).ends_with("line 0999\nafter"));
    }
}
