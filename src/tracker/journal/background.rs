//! Compaction in a child process, as Redis' BGSAVE does (`rdbSaveBackground`): the tracker has
//! one thread, so `fork` is safe; the child sees the state as it was at the fork
//! (copy-on-write), writes it as the snapshot and `_exit`s. The parent keeps serving and
//! learns of the end with `waitpid(WNOHANG)`, polled once a loop turn.
//!
//! The child only writes its file: it closes every inherited descriptor first (so sockets the
//! parent closes really close, and nothing of the loop can be touched), restores the default
//! SIGINT/SIGTERM actions, runs niced with idle I/O priority, dies with its parent (`PR_SET_PDEATHSIG`), and ends with `_exit`, so
//! no destructor and no buffered output of the parent runs twice. Its exit code is the errno of
//! the failure, which the parent turns back into a message.

use super::files;
use super::Position;
use crate::tracker::state::State;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// First wait after a failed snapshot; doubled after each further failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between tries: a disk that stays full is retried once a minute.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// The child's nice value: far below the loop, still a share of a busy CPU.
const CHILD_NICE: i32 = 10;

/// `ioprio_set(IOPRIO_WHO_PROCESS, self, IOPRIO_CLASS_IDLE)` (linux/ioprio.h).
const IOPRIO_WHO_PROCESS: i32 = 1;
const IOPRIO_IDLE: i32 = 3 << 13;

/// Exit codes of the child other than an errno.
const EXIT_PARENT_GONE: i32 = 125;
const EXIT_UNKNOWN: i32 = 126;

/// A child writing a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pub pid: i32,
    /// The snapshot is at this position ...
    pub pos: Position,
    /// ... and journal segment `segment` follows it.
    pub segment: u64,
    pub started: Instant,
}

/// The compaction's state: plain data, its transitions pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub running: Option<Child>,
    /// After a failure, no new try before this.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    delay: Duration,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            running: None,
            retry_at: None,
            delay: RETRY_FIRST,
        }
    }
}

impl Compaction {
    /// May a new snapshot start now?
    pub fn may_start(&self, now: Instant) -> bool {
        self.running.is_none() && self.retry_at.is_none_or(|t| now >= t)
    }

    /// When a new try is allowed after a failure.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn started(&mut self, child: Child) {
        self.running = Some(child);
    }

    /// The snapshot failed (or could not start): returns the wait before the next try, which
    /// doubles with each failure in a row.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.delay;
        self.running = None;
        self.retry_at = Some(now + delay);
        self.delay = (delay * 2).min(RETRY_MAX);
        delay
    }

    pub fn succeeded(&mut self) {
        *self = Compaction::default();
    }
}

/// Runs the tracker again (`exec`, same process) with glibc's heap on transparent huge pages
/// (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), unless `GLIBC_TUNABLES` is set already. `fork`
/// copies the page tables, one entry per 4 KiB page without this and per 2 MiB with it: for a
/// state of 1,000,000 users (about 250 MiB) the loop's pause at a fork drops from 7–15 ms to
/// about 0.5 ms on the benchmark machine. Call first thing in `main`; returns if there is
/// nothing to do or the `exec` fails (the tracker then runs as it is).
pub fn reexec_with_huge_pages() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(TUNABLES).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let _failed = cmd.args(args).env(TUNABLES, HUGE_HEAP).exec();
}

const TUNABLES: &str = "GLIBC_TUNABLES";
const HUGE_HEAP: &str = "glibc.malloc.hugetlb=1";

/// Forks a child that writes `state` at `pos` as the snapshot followed by `segment`.
pub fn spawn(dir: &Path, state: &State, pos: Position, segment: u64) -> io::Result<i32> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the tracker runs one thread, so the child inherits no lock held by another
    // thread; the child runs `child` only and leaves with `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => child(dir, state, pos, segment, parent),
        pid => Ok(pid),
    }
}

fn child(dir: &Path, state: &State, pos: Position, segment: u64, parent: i32) -> ! {
    // SAFETY: plain syscalls in the child; closing its copies of the descriptors leaves the
    // parent's open (and its epoll registrations with them).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(EXIT_PARENT_GONE);
        }
        // The loop comes first: the child yields the CPU to it (niced, not SCHED_IDLE, which
        // starves on a busy machine until the journal outgrows the disk), and its writes
        // yield to the journal's.
        libc::setpriority(libc::PRIO_PROCESS, 0, CHILD_NICE);
        libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_IDLE);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..1024 {
                libc::close(fd);
            }
        }
    }
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lines = state.snapshot_lines();
        files::write_snapshot_file(dir, lines.iter().map(String::as_str), pos, segment)
    })) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e
            .raw_os_error()
            .filter(|c| (1..EXIT_PARENT_GONE).contains(c))
            .unwrap_or(EXIT_UNKNOWN),
        Err(_) => EXIT_UNKNOWN,
    };
    // SAFETY: ends the child without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Whether the child has ended: `None` while it runs, else its outcome.
pub fn poll(pid: i32) -> Option<Result<(), String>> {
    let mut status = 0;
    // SAFETY: waits only for our own child, without blocking.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        0 => None,
        -1 => Some(Err(format!(
            "lost track of the snapshot process {pid}: {}",
            io::Error::last_os_error()
        ))),
        _ => Some(outcome(status)),
    }
}

/// Stops a running child and waits for it (a snapshot from the leader replaces ours, or the
/// tracker stops).
pub fn kill(pid: i32) {
    let mut status = 0;
    // SAFETY: `pid` is our own unreaped child, so the number cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

fn outcome(status: i32) -> Result<(), String> {
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            EXIT_PARENT_GONE => Err("the snapshot process found its parent gone".into()),
            EXIT_UNKNOWN => Err("the snapshot process failed".into()),
            errno => Err(io::Error::from_raw_os_error(errno).to_string()),
        }
    } else if libc::WIFSIGNALED(status) {
        Err(format!(
            "the snapshot process was killed by signal {}",
            libc::WTERMSIG(status)
        ))
    } else {
        Err(format!("the snapshot process ended with status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_doubling_up_to_the_cap_and_success_resets() {
        let t0 = Instant::now();
        let mut c = Compaction::default();
        assert!(c.may_start(t0));
        assert_eq!(c.failed(t0), RETRY_FIRST);
        assert!(!c.may_start(t0));
        assert!(c.may_start(t0 + RETRY_FIRST));
        let mut last = RETRY_FIRST;
        for _ in 0..10 {
            last = c.failed(t0);
        }
        assert_eq!(last, RETRY_MAX);
        c.succeeded();
        assert!(c.may_start(t0));
        assert_eq!(c.failed(t0), RETRY_FIRST);
    }

    #[test]
    fn a_running_child_blocks_a_second_one_and_its_failure_keeps_doubling() {
        let t0 = Instant::now();
        let mut c = Compaction::default();
        c.failed(t0);
        let child = Child {
            pid: 42,
            pos: Position::default(),
            segment: 3,
            started: t0,
        };
        c.started(child);
        assert!(!c.may_start(t0 + RETRY_MAX));
        assert_eq!(c.failed(t0), RETRY_FIRST * 2);
        assert!(c.running.is_none());
    }

    #[test]
    fn exit_codes_become_messages() {
        assert_eq!(outcome(0), Ok(()));
        let enospc = outcome(libc::ENOSPC << 8).expect_err("failure");
        assert!(enospc.contains("No space left"), "{enospc}");
        let killed = outcome(libc::SIGKILL).expect_err("failure");
        assert!(killed.contains("signal 9"), "{killed}");
    }
}
