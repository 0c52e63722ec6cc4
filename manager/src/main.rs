//! The `ctmgr` command line. Parsing and printing only; behaviour lives in
//! the library (`ctmgr::…`) and in `commands/`, one file per verb.
#![forbid(unsafe_code)]

mod commands;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ctmgr::exit::classify;

/// Safe failover, snapshots and replicas for LXC containers on a two-node
/// DRBD + Btrfs cluster.
///
/// Exit codes: 0 done; 1 failed; 2 bad usage or config; 3 refused for safety
/// (nothing was changed).
#[derive(Parser, Debug)]
#[command(name = "ctmgr", version, about, long_about = None, after_help = "Exit codes: 0 done, 1 failed, 2 bad usage or config, 3 refused for safety (nothing changed).\nConfiguration: /etc/ctmgr/cluster.toml (--config or CTMGR_CONFIG). Docs: docs/operator-guide.md")]
pub struct Cli {
    /// Cluster configuration file [env: CTMGR_CONFIG] [default: /etc/ctmgr/cluster.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// This node's name in cluster.toml [env: CTMGR_NODE] [default: the hostname]
    #[arg(long, global = true, value_name = "NAME")]
    pub node: Option<String>,
    /// More detail (repeat for debug output)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output (see docs/json.md)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a Btrfs-backed container on the store held here
    Create(commands::create::Args),
    /// List containers of the stores held here
    List(commands::list::ListArgs),
    /// Stores, DRBD roles, mounts and containers of this node
    Status,
    /// Start containers (of stores held here)
    Start(commands::lifecycle::StartArgs),
    /// Stop containers: clean shutdown within --timeout, then kill
    Stop(commands::lifecycle::StopArgs),
    /// Destroy a container (refuses a running one or one with snapshots without --force)
    Destroy(commands::lifecycle::DestroyArgs),
    /// Snapshot running or stopped containers (read-only Btrfs, LXC layout)
    Snapshot(commands::snapshot::SnapshotArgs),
    /// List snapshots, newest first
    Snapshots(commands::snapshot::SnapshotsArgs),
    /// Apply the retention policy (restic `forget` semantics)
    Prune(commands::snapshot::PruneArgs),
    /// Roll a stopped container back to a snapshot (after a safety snapshot)
    Restore(commands::snapshot::RestoreArgs),
    /// Make this node the holder: preflight, promote, mount, start the set
    ///
    /// Refuses with exit 3, changing nothing, when: the peer is Primary and
    /// connected (use `migrate`, or `release` on the peer; --force does not
    /// override this); the local DRBD disk is not UpToDate; the mountpoint
    /// holds something else; or DRBD cannot see the peer and there is no
    /// evidence it is down (peer silent on the peer link AND the LAN while
    /// this node reaches its gateway). --force overrides the disk and the
    /// evidence refusals and risks a split brain: check the peer by hand
    /// first. Exit 1: taken over
    /// but a container failed (named in the report). Safe to re-run.
    Takeover(commands::takeover::TakeoverArgs),
    /// Stop the set, unmount, demote
    Release(commands::takeover::ReleaseArgs),
    /// Planned switchover: release on the holder over ssh, then take over here
    Migrate(commands::takeover::MigrateArgs),
    /// DRBD: state of the stores' resources, render .res files, lint a drbd.conf
    #[command(subcommand)]
    Drbd(commands::drbd::DrbdCommand),
    /// Bridge and peer-link config; live checks
    #[command(subcommand)]
    Net(commands::net::NetCommand),
    /// Push config+fstab replicas to the peer in one connection; --check only reports drift
    Sync(commands::sync::SyncArgs),
    /// Everything checkable, as one report (exit 1 when problems are found)
    Doctor,
    #[command(name = "__sync-receive", hide = true)]
    SyncReceive,
    /// The peer's side of the fence-peer question (asked over ssh)
    #[command(name = "__fence-answer", hide = true)]
    FenceAnswer {
        store: String,
        #[arg(long)]
        outdate: bool,
    },
    /// The peer's side of create's "is this name free?" question (asked over ssh)
    #[command(name = "__name-answer", hide = true)]
    NameAnswer { name: String },
    #[command(name = "__lxc-start", hide = true)]
    LxcStart {
        lxcpath: PathBuf,
        name: String,
        secs: i32,
    },
    #[command(name = "__lxc-stop", hide = true)]
    LxcStop {
        lxcpath: PathBuf,
        name: String,
        secs: i32,
    },
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CTMGR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour escapes in cron mail or the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let status = match commands::run(cli) {
        Ok(status) => status,
        Err(err) => {
            if is_broken_pipe(&err) {
                std::process::exit(141);
            }
            eprintln!("ctmgr: error: {err:#}");
            classify(&err)
        }
    };
    std::process::exit(status.code());
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
