//! `tracker <tracker_info_file> <tracker_no> [options]`: argument parsing and start-up only;
//! the loop is `groupshare::tracker::server`.

use clap::Parser;
use groupshare::auth::ticket;
use groupshare::cluster;
use groupshare::net::identity::Identity;
use groupshare::runtime;
use groupshare::tracker::rates::{self, Rate, RateConfig};
use groupshare::tracker::server::{Config, Server};
use groupshare::tracker::state::{quota, Limits};
use groupshare::tracker::status;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A tracker of the groupshare file-sharing system: holds users, groups and who shares what,
/// kept in sync with the other tracker listed in the tracker_info file.
#[derive(Parser)]
#[command(name = "tracker", version, about)]
struct Args {
    /// File with one IP:PORT a line (optionally followed by the tracker's key fingerprint),
    /// tracker 1 first
    tracker_info: PathBuf,
    /// Which line of the file is this tracker (1-based)
    tracker_no: u8,
    /// Where the state is kept [default: beside the info file, <info>.tracker<N>]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shared secret of the tracker pair; created if missing [default: .cluster.key beside the info file]
    #[arg(long)]
    cluster_key: Option<PathBuf>,
    /// Refuse connections beyond this many [default: from the open-file limit]
    #[arg(long)]
    max_connections: Option<usize>,
    /// Journal size in bytes that triggers a snapshot [default: 64 MiB]
    #[arg(long)]
    compact_bytes: Option<u64>,
    /// New users one source address may register at once
    #[arg(long, default_value_t = rates::REGISTRATION_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    registration_burst: u32,
    /// New users one source address may register a minute once its burst is spent
    #[arg(long, default_value_t = rates::REGISTRATIONS_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    registrations_per_minute: u32,
    /// Failed logins one source address may make at once before its logins are refused
    #[arg(long, default_value_t = rates::FAILED_LOGIN_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    failed_login_burst: u32,
    /// Failed logins one source address may make a minute once its burst is spent
    #[arg(long, default_value_t = rates::FAILED_LOGINS_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    failed_logins_per_minute: u32,
    /// Users the tracker holds at most (when it leads; a follower uses the leader's quotas)
    #[arg(long, default_value_t = quota::MAX_USERS)]
    max_users: u64,
    /// Groups the tracker holds at most
    #[arg(long, default_value_t = quota::MAX_GROUPS)]
    max_groups: u64,
    /// Files (over all groups) the tracker holds at most
    #[arg(long, default_value_t = quota::MAX_FILES)]
    max_files: u64,
    /// Piece hashes (over all files) the tracker holds at most
    #[arg(long, default_value_t = quota::MAX_STATE_PIECES)]
    max_state_pieces: u64,
    /// Groups one user may create (own) at most
    #[arg(long, default_value_t = quota::MAX_GROUPS_PER_USER)]
    max_groups_per_user: u64,
    /// Files one group may hold at most
    #[arg(long, default_value_t = quota::MAX_FILES_PER_GROUP)]
    max_files_per_group: u64,
    /// Pending join requests one group may have at most
    #[arg(long, default_value_t = quota::MAX_REQUESTS_PER_GROUP)]
    max_requests_per_group: u64,
    /// PBKDF2 iterations clients use for new users' passwords (at least 4096; tests and the
    /// demo use 4096 for speed). Clients pay them at each login; the tracker never does
    #[arg(long, default_value_t = groupshare::auth::scram::DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(
              groupshare::auth::scram::MIN_ITERATIONS as i64..=groupshare::auth::scram::MAX_ITERATIONS as i64))]
    kdf_iterations: u32,
    /// How long a peer ticket stays valid, in seconds (`2s` or `2`), 1 to 30 [default: 30s]
    #[arg(long, value_parser = parse_lifetime)]
    ticket_lifetime: Option<u64>,
    /// Print this tracker's key fingerprint (made in its data directory if missing) and exit
    #[arg(long)]
    print_fingerprint: bool,
    /// Write this tracker's fingerprint after its address in the tracker_info file and exit
    #[arg(long, conflicts_with = "print_fingerprint")]
    write_pin: bool,
    /// Connect to this tracker over the secure channel, print its role, log position and
    /// digest, and exit
    #[arg(long, conflicts_with_all = ["print_fingerprint", "write_pin"])]
    status: bool,
    /// More log output (repeat for more)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output (repeat for less)
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
    /// Log level: error, warn, info, debug or trace
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    groupshare::tracker::journal::reexec_with_huge_pages();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    runtime::init_logging(runtime::log_level(
        args.verbose,
        args.quiet,
        args.log_level.as_deref(),
    )?);
    let entries = cluster::read_tracker_entries(&args.tracker_info)?;
    let addrs: Vec<_> = entries.iter().map(|e| e.addr).collect();
    if args.tracker_no == 0 || usize::from(args.tracker_no) > addrs.len() {
        return Err(format!(
            "tracker number {} is not in {}, which lists {} tracker(s)",
            args.tracker_no,
            args.tracker_info.display(),
            addrs.len()
        ));
    }
    let beside = args
        .tracker_info
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let info_name = args
        .tracker_info
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tracker_info".into());
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| beside.join(format!("{info_name}.tracker{}", args.tracker_no)));
    let no = usize::from(args.tracker_no);
    if args.status {
        let entry = &entries[no - 1];
        let st = status::query(entry)?;
        println!("{}", st.line(no, entry));
        return Ok(());
    }
    let identity = open_identity(&data_dir)?;
    if args.print_fingerprint {
        println!("{}", identity.fingerprint());
        return Ok(());
    }
    if args.write_pin {
        return write_pin(&args.tracker_info, addrs[no - 1], &identity);
    }
    log::info!("tracker {no} key {}", identity.fingerprint());
    let cluster_key = if addrs.len() > 1 {
        let path = args
            .cluster_key
            .unwrap_or_else(|| beside.join(".cluster.key"));
        load_or_create_key(&path)?
    } else {
        Vec::new()
    };
    let mut server = Server::new(Config {
        addrs,
        me: args.tracker_no,
        data_dir,
        cluster_key,
        identity,
        max_connections: args.max_connections,
        compact_bytes: args.compact_bytes,
        limits: Limits {
            users: args.max_users,
            groups: args.max_groups,
            files: args.max_files,
            pieces: args.max_state_pieces,
            groups_per_user: args.max_groups_per_user,
            files_per_group: args.max_files_per_group,
            requests_per_group: args.max_requests_per_group,
        },
        rates: RateConfig {
            registrations: Rate {
                burst: args.registration_burst,
                per_minute: args.registrations_per_minute,
            },
            failed_logins: Rate {
                burst: args.failed_login_burst,
                per_minute: args.failed_logins_per_minute,
            },
        },
        kdf_iterations: args.kdf_iterations,
        ticket_lifetime: args.ticket_lifetime.unwrap_or(ticket::DEFAULT_LIFETIME),
    })?;
    server.run()
}

/// `--ticket-lifetime`: whole seconds, with or without an `s`; longer than
/// `ticket::MAX_LIFETIME` would break the promise that leaving a group ends access in a minute.
fn parse_lifetime(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .strip_suffix('s')
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds (e.g. 30s)"))?;
    if n == 0 || n > ticket::MAX_LIFETIME {
        return Err(format!(
            "the ticket lifetime must be 1 to {} seconds",
            ticket::MAX_LIFETIME
        ));
    }
    Ok(n)
}

/// The data directory (0700, tightened if it was created looser) and the tracker's key in it.
fn open_identity(data_dir: &Path) -> Result<Identity, String> {
    let shown = data_dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| format!("cannot create the data directory {shown}: {e}"))?;
    let meta = std::fs::metadata(data_dir)
        .map_err(|e| format!("cannot read the data directory {shown}: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        // Made by an older version (0755): it holds password verifiers and session secrets.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make the data directory {shown} private: {e}"))?;
    }
    Identity::load_or_create(&data_dir.join("identity.key"))
}

/// Records this tracker's fingerprint on its tracker_info line (`make run-tracker1/2`): the
/// file is rewritten through a temporary name and a rename, under a lock so two trackers
/// pinning at once do not lose each other's line.
fn write_pin(info: &Path, addr: std::net::SocketAddr, id: &Identity) -> Result<(), String> {
    let lock_path = info.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let text = std::fs::read_to_string(info)
        .map_err(|e| format!("cannot read {}: {e}", info.display()))?;
    let fp = id.fingerprint();
    let new = cluster::set_pin(&text, addr, &fp).map_err(|e| format!("{}: {e}", info.display()))?;
    if new != text {
        let tmp = info.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, new).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        if let Ok(m) = std::fs::metadata(info) {
            let _ = std::fs::set_permissions(&tmp, m.permissions());
        }
        std::fs::rename(&tmp, info)
            .map_err(|e| format!("cannot replace {}: {e}", info.display()))?;
    }
    println!("{} {addr} {fp}", info.display());
    Ok(())
}

/// Reads the cluster key, creating it (atomically, so two trackers started together agree) if
/// it does not exist yet.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, String> {
    if !path.exists() {
        let mut key = [0u8; 32];
        runtime::random_bytes(&mut key).map_err(|e| format!("cannot make a cluster key: {e}"))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp); // left by a crashed process with our pid
                                            // 0600 from the start: the key is never readable by others, not even for an instant.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(groupshare::pieces::to_hex(&key).as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        // hard_link fails if the key appeared meanwhile; then the other one wins.
        let _ = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the cluster key {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the cluster key {} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        ));
    }
    let key = std::fs::read(path)
        .map_err(|e| format!("cannot read the cluster key {}: {e}", path.display()))?;
    if key.len() < 16 {
        return Err(format!(
            "the cluster key {} is too short (at least 16 bytes)",
            path.display()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;

    #[test]
    fn ticket_lifetimes_are_whole_seconds_up_to_the_maximum() {
        assert_eq!(parse_lifetime("2s"), Ok(2));
        assert_eq!(parse_lifetime("30"), Ok(30));
        for bad in ["0", "0s", "31s", "-1", "2m", "", "s", "1.5s"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }
}
