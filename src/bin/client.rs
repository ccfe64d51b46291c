//! The terminal client: argument parsing and start-up. Everything else is in `client::app`.

use clap::Parser;
use groupshare::client::app::{self, Config};
use groupshare::client::peers::limit;
use groupshare::client::shares;
use groupshare::{cluster, runtime};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A groupshare client: share files with your groups, download from other members.
///
/// Commands are read one a line from standard input; type `help` for the list.
#[derive(Parser, Debug)]
#[command(name = "client", version, about)]
struct Args {
    /// IP:PORT to listen on for other peers and to advertise to them (port 0: a free port).
    /// A tracker's address here means "prefer that tracker" and listens on a free port.
    listen: String,
    /// The tracker_info file: one tracker IP:PORT a line (optionally followed by the tracker's
    /// key fingerprint), tracker 1 first.
    tracker_info: PathBuf,
    /// Where remembered shares are kept (default: $XDG_STATE_HOME/groupshare, else
    /// ~/.local/state/groupshare).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// At end of input keep running and seeding until SIGINT or SIGTERM.
    #[arg(long)]
    serve: bool,
    /// Limit all uploads of this client together to RATE bytes per second: plain bytes, or
    /// with K, M or G (1024, 1024², 1024³), e.g. 512K or 10M. Default: unlimited.
    #[arg(long, value_name = "RATE", value_parser = limit::parse_rate)]
    upload_limit: Option<u64>,
    /// More log output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
    /// Log level: error, warn, info, debug or trace (overrides -v/-q).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() {
    let args = Args::parse();
    match start(args) {
        Ok(config) => std::process::exit(app::run(config)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn start(args: Args) -> Result<Config, String> {
    // The default level is warn: a person at the prompt wants results, not the loop's news.
    let level = runtime::log_level(args.verbose, args.quiet + 1, args.log_level.as_deref())?;
    runtime::init_logging(level);
    let trackers = cluster::read_tracker_entries(&args.tracker_info)?;
    let asked: SocketAddr = args
        .listen
        .parse()
        .map_err(|_| format!("'{}' is not an IP:PORT address", args.listen))?;
    let (listen, preferred, announce) = match trackers.iter().position(|t| t.addr == asked) {
        Some(i) => {
            eprintln!(
                "note: {asked} is tracker {}'s address: preferring that tracker and listening for peers on a free port of {}",
                i + 1,
                asked.ip()
            );
            (SocketAddr::new(asked.ip(), 0), i, true)
        }
        None => (asked, 0, asked.port() == 0),
    };
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => shares::default_state_dir()
            .ok_or("no state directory: set HOME or XDG_STATE_HOME, or give --state-dir")?,
    };
    private_dir(&state_dir)?;
    Ok(Config {
        listen,
        trackers,
        info_file: args.tracker_info.display().to_string(),
        preferred,
        state_dir,
        serve: args.serve,
        upload_limit: args.upload_limit,
        announce_port: announce,
    })
}

/// The state directory holds remembered shares, download claims and known tracker keys:
/// private to its user (0700), tightened if an older version made it 0755.
fn private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let shown = dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the state directory {shown}: {e}"))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the state directory {shown}: {e}"))?
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make the state directory {shown} private: {e}"))?;
    }
    Ok(())
}
