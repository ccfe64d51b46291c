//! `tracker <tracker_info_file> <tracker_no> [options]`: argument parsing and start-up only;
//! the loop is `groupshare::tracker::server`.

use clap::Parser;
use groupshare::auth::ticket;
use groupshare::cluster;
use groupshare::runtime;
use groupshare::tracker::rates::{self, Rate, RateConfig};
use groupshare::tracker::server::{Config, Server};
use groupshare::tracker::state::{quota, Limits};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A tracker of the groupshare file-sharing system: holds users, groups and who shares what,
/// kept in sync with the other tracker listed in the tracker_info file.
#[derive(Parser)]
#[command(name = "tracker", version, about)]
struct Args {
    /// File with one IP:PORT a line, tracker 1 first
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
    let addrs = cluster::read_tracker_info(&args.tracker_info)?;
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

/// Reads the cluster key, creating it (atomically, so two trackers started together agree) if
/// it does not exist yet.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, String> {
    if !path.exists() {
        let mut key = [0u8; 32];
        runtime::random_bytes(&mut key).map_err(|e| format!("cannot make a cluster key: {e}"))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, groupshare::pieces::to_hex(&key))
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        // hard_link fails if the key appeared meanwhile; then the other one wins.
        let _ = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
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
