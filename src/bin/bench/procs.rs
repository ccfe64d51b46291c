//! What the bench starts and its clean-up come from the shared harness (`groupshare::testkit`:
//! child processes killed on drop and with the bench, temporary directories, free loopback
//! ports, bounded waits); this file adds the /proc readings (RSS, open files).

pub use groupshare::testkit::{piped, wait_for, wait_listening, Proc, TempDir};

/// VmRSS of a process in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS line in {path}"))
}

/// Number of open descriptors of a process.
pub fn open_fds(pid: u32) -> Result<usize, String> {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .map(|d| d.count())
        .map_err(|e| format!("cannot list {path}: {e}"))
}
