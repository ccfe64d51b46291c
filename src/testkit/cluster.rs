//! Trackers on free loopback ports, numbered from 1 as on their command line, in one
//! temporary directory that holds their info file, cluster key, data directories
//! (`t<n>/`), logs (`t<n>.log`, printed if a test panics) and the clients' state.

use super::conn::LineConn;
use super::net::{free_addrs, wait_for, wait_listening};
use super::process::{kill_and_reap, signal, spawn_child};
use super::tempdir::TempDir;
use crate::auth::scram::MIN_ITERATIONS as MIN_KDF;
use crate::protocol::tracker::{Reply, Verb};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a tracker gets to start serving or to pair: well under a second when right,
/// generous for a loaded machine, still bounded so that a hang fails instead of stalling.
const START_LIMIT: Duration = Duration::from_secs(20);

/// How much the trackers write to their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerLog {
    /// `-v`: for tests, whose failures print the logs.
    Verbose,
    /// `-q`: for the bench and the demo, which measure and show the system, not its logging.
    Quiet,
}

/// Trackers (started or not) with their files; every tracker still running is killed on drop.
pub struct Cluster {
    pub dir: TempDir,
    /// The tracker info file every tracker and client reads.
    pub info: PathBuf,
    pub key: PathBuf,
    pub addrs: Vec<SocketAddr>,
    /// Tracker `n`'s process at `procs[n - 1]`; a test may put a tracker it started itself here
    /// (under `prlimit`, say) for the cluster to stop.
    pub procs: Vec<Option<Child>>,
    tracker_bin: PathBuf,
    log: TrackerLog,
}

impl Cluster {
    /// Writes the info and key files for `n` trackers; starts none. `tag` names the temporary
    /// directory (`groupshare-<tag>-…`).
    pub fn new(
        tracker_bin: &Path,
        n: usize,
        tag: &str,
        log: TrackerLog,
    ) -> Result<Cluster, String> {
        let dir = TempDir::new(tag)?;
        let addrs = free_addrs(n)?;
        let info = dir.path().join("info");
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&info, text).map_err(|e| format!("cannot write {}: {e}", info.display()))?;
        let key = dir.path().join("key");
        let mut k = [0u8; 32];
        crate::runtime::random_bytes(&mut k).map_err(|e| format!("no random cluster key: {e}"))?;
        // 0600, as the tracker requires of a cluster key.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .and_then(|mut f| f.write_all(crate::pieces::to_hex(&k).as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
        Ok(Cluster {
            dir,
            info,
            key,
            addrs,
            procs: (0..n).map(|_| None).collect(),
            tracker_bin: tracker_bin.to_path_buf(),
            log,
        })
    }

    /// A cluster with every tracker started and serving, and a pair paired.
    pub fn start(
        tracker_bin: &Path,
        n: usize,
        tag: &str,
        log: TrackerLog,
    ) -> Result<Cluster, String> {
        let mut c = Cluster::new(tracker_bin, n, tag, log)?;
        for i in 1..=n {
            c.spawn(i)?;
        }
        for i in 1..=n {
            c.wait_serving(i)?;
        }
        if n == 2 {
            c.wait_paired()?;
        }
        Ok(c)
    }

    /// The temporary directory: trackers' files, clients' state, test files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("t{n}"))
    }

    pub fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("t{n}.log"))
    }

    /// Where a client called `name` keeps its state, so that a client restarted under the same
    /// name finds its shares.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("state-{name}"))
    }

    /// Starts tracker `n` (not waiting for it).
    pub fn spawn(&mut self, n: usize) -> Result<(), String> {
        self.spawn_with(n, &[])
    }

    /// Starts tracker `n` with extra options; `--cluster-key` among them replaces the
    /// cluster's key.
    pub fn spawn_with(&mut self, n: usize, extra: &[&str]) -> Result<(), String> {
        let log_path = self.log_path(n);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(&self.tracker_bin);
        cmd.arg(&self.info)
            .arg(n.to_string())
            .arg("--data-dir")
            .arg(self.data_dir(n));
        if !extra.contains(&"--cluster-key") {
            cmd.arg("--cluster-key").arg(&self.key);
        }
        // Logins at the fewest iterations: each costs the test client ~1 ms, not ~0.3 s.
        if !extra.contains(&"--kdf-iterations") {
            cmd.arg("--kdf-iterations").arg(MIN_KDF.to_string());
        }
        cmd.args(extra)
            .arg(match self.log {
                TrackerLog::Verbose => "-v",
                TrackerLog::Quiet => "-q",
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = spawn_child(&format!("tracker {n}"), &mut cmd)?;
        if let Some(mut old) = self.procs[n - 1].replace(child) {
            kill_and_reap(&mut old);
        }
        Ok(())
    }

    /// Starts (or restarts) tracker `n` and waits only until it accepts connections (not
    /// until it serves: see `wait_serving`).
    pub fn restart(&mut self, n: usize) -> Result<(), String> {
        self.kill(n);
        self.spawn(n)?;
        wait_listening(self.addrs[n - 1], START_LIMIT)
            .map_err(|e| format!("tracker {n} did not start listening: {e}"))
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut c) = self.procs[n - 1].take() {
            kill_and_reap(&mut c);
        }
    }

    /// SIGTERM and wait (10 s at most, then SIGKILL) for a clean exit; true if it exited
    /// successfully.
    pub fn terminate(&mut self, n: usize) -> bool {
        let Some(mut c) = self.procs[n - 1].take() else {
            return false;
        };
        signal(&c, libc::SIGTERM);
        let exited = wait_for("a clean exit", Duration::from_secs(10), || {
            match c.try_wait() {
                Ok(Some(st)) => Some(st.success()),
                _ => None,
            }
        });
        match exited {
            Ok(success) => success,
            Err(_) => {
                kill_and_reap(&mut c);
                false
            }
        }
    }

    /// Sends a signal to tracker `n`, e.g. SIGSTOP to freeze it mid-request.
    pub fn signal(&self, n: usize, sig: libc::c_int) {
        if let Some(child) = &self.procs[n - 1] {
            signal(child, sig);
        }
    }

    /// Tracker `n`'s pid, 0 if it is not running.
    pub fn pid(&self, n: usize) -> u32 {
        self.procs[n - 1].as_ref().map(Child::id).unwrap_or(0)
    }

    /// Err if a tracker has exited, with its status, so that a crash is noticed.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            let n = i + 1;
            match p.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => {}
                Some(Ok(Some(st))) => return Err(format!("tracker {n} exited unexpectedly: {st}")),
                Some(Err(e)) => return Err(format!("tracker {n}: cannot check its status: {e}")),
                None => return Err(format!("tracker {n} is not running")),
            }
        }
        Ok(())
    }

    /// The role word of tracker `n`'s `digest` reply (`leader-paired`, `follower`, ...);
    /// None if it does not answer.
    pub fn role(&self, n: usize) -> Option<String> {
        let mut c = LineConn::connect(self.addrs[n - 1]).ok()?;
        match c.req(&Verb::Digest).ok()? {
            Reply::Ok(words) => words.get(2).cloned(),
            _ => None,
        }
    }

    /// Which tracker leads the paired set, once both agree.
    pub fn paired_leader(&self) -> Option<usize> {
        match (self.role(1).as_deref(), self.role(2).as_deref()) {
            (Some("leader-paired"), Some("follower")) => Some(1),
            (Some("follower"), Some("leader-paired")) => Some(2),
            _ => None,
        }
    }

    /// Waits until the two trackers are linked, one leading and one following; returns the
    /// leader's number.
    pub fn wait_paired(&self) -> Result<usize, String> {
        wait_for(
            "the trackers to pair (leader-paired + follower)",
            START_LIMIT,
            || self.paired_leader(),
        )
        .map_err(|e| format!("{e}; roles now {:?} {:?}", self.role(1), self.role(2)))
    }

    /// Waits until tracker `n` answers `hello` with ok.
    pub fn wait_serving(&self, n: usize) -> Result<(), String> {
        wait_for(&format!("tracker {n} to serve"), START_LIMIT, || {
            let mut c = LineConn::connect(self.addrs[n - 1]).ok()?;
            let r = c.req(&Verb::Hello { instance: 1 }).ok()?;
            matches!(r, Reply::Ok(_)).then_some(())
        })
    }

    /// The last ten lines of every tracker's log, for an error message.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.addrs.len() {
            let text = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(10);
            s.push_str(&format!("--- tracker {n} log (tail) ---\n"));
            for l in &lines[from..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Prints the trackers' whole logs on standard error (for a failing test's output).
    pub fn dump_logs(&self) {
        for n in 1..=self.addrs.len() {
            eprintln!(
                "--- tracker {n} log ---\n{}",
                std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in 1..=self.procs.len() {
            self.kill(n);
        }
    }
}
