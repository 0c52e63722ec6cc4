//! One file per verb: parse arguments, call the library, print. Shared
//! plumbing (loading the config, finding this node, printing tables and
//! JSON) lives here.

pub mod create;
pub mod doctor;
pub mod drbd;
pub mod lifecycle;
pub mod list;
pub mod net;
pub mod snapshot;
pub mod sync;
pub mod takeover;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ctmgr::config::Config;
use ctmgr::exit::ExitStatus;
use ctmgr::mountinfo::Mount;
use ctmgr::runner::SystemRunner;
use ctmgr::store::{self, StoreHere};

use crate::{Cli, Command};

/// Everything a command needs: config, this node, the runner, the mounts.
pub struct Session {
    pub config: Config,
    pub node: String,
    pub runner: SystemRunner,
    pub mounts: Vec<Mount>,
    pub json: bool,
    pub quiet: bool,
}

impl Session {
    pub fn open(cli: &Cli) -> Result<Session> {
        let path = cli
            .config
            .clone()
            .or_else(|| std::env::var_os("CTMGR_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(ctmgr::config::DEFAULT_PATH));
        let config = Config::load(&path)?;
        if let Some(w) = ctmgr::fence::single_path_warning(&config) {
            tracing::warn!("{w}");
        }
        let explicit = cli
            .node
            .clone()
            .or_else(|| std::env::var("CTMGR_NODE").ok());
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let me = config.resolve_node(explicit.as_deref(), &hostname)?;
        if !reads_only(&cli.command) {
            check_identity(&config, me, explicit.is_some())?;
        }
        let node = me.name.clone();
        let tools = ctmgr::config::Tools::PROGRAMS
            .iter()
            .filter_map(|p| {
                config
                    .tools
                    .get(p)
                    .map(|path| (p.to_string(), path.to_path_buf()))
            })
            .collect();
        let runner = SystemRunner::new(tools);
        let mounts = ctmgr::container::mounts()?;
        Ok(Session {
            config,
            node,
            runner,
            mounts,
            json: cli.json,
            quiet: cli.quiet,
        })
    }

    pub fn stores(&self) -> Vec<StoreHere<'_>> {
        store::survey(&self.config, &self.runner, &self.mounts)
    }

    pub fn lxcpaths(&self) -> Vec<PathBuf> {
        store::local_lxcpaths(&self.config, &self.mounts)
    }

    /// Progress for people: on stderr when it is a terminal, never under
    /// `-q` (DESIGN §3: quiet under cron). The log gets it at info level.
    pub fn say(&self, msg: &str) {
        use std::io::IsTerminal;
        if !self.quiet && std::io::stderr().is_terminal() {
            eprintln!("{msg}");
        } else {
            tracing::info!("{msg}");
        }
    }
}

/// Commands that only read: they work on a machine that is not the node it
/// names (the escape hatch of safety rule 10's identity check).
fn reads_only(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::List(_)
            | Command::Status
            | Command::Snapshots(_)
            | Command::Doctor
            | Command::Net(_)
            | Command::Drbd(
                drbd::DrbdCommand::Status
                    | drbd::DrbdCommand::Render { .. }
                    | drbd::DrbdCommand::Lint { .. }
            )
    ) || matches!(cmd, Command::Sync(a) if a.check)
}

/// Safety rule 10: this machine must be the node it says it is — the node's
/// `address` (and `lan_address`) configured on a local interface — or the
/// peer checks would ask this very machine about "the peer" (route D5).
/// A one-node configuration has no peer to confuse and is not checked.
fn check_identity(config: &Config, me: &ctmgr::config::Node, explicit: bool) -> Result<()> {
    if config.peer_of(&me.name).is_none() {
        return Ok(());
    }
    let local = ctmgr::fence::local_addresses()
        .context("cannot list this machine's addresses (getifaddrs)")?;
    let missing = ctmgr::fence::missing_addresses(me, &local);
    if missing.is_empty() {
        return Ok(());
    }
    let mut here: Vec<String> = local
        .iter()
        .filter(|a| !a.is_loopback())
        .map(|a| a.to_string())
        .collect();
    here.sort();
    let source = if explicit {
        "--node / CTMGR_NODE"
    } else {
        "the hostname"
    };
    Err(ctmgr::exit::usage(format!(
        "this machine is not node {} ({source} says it is): {} {} not on any local interface (here: {}). \
         Fix --node / CTMGR_NODE or the hostname; read-only commands (status, list, doctor) still work",
        me.name,
        if missing.len() > 1 { "its addresses" } else { "its address" },
        missing
            .iter()
            .map(|a| format!("{a} ({})", config.path.display()))
            .collect::<Vec<_>>()
            .join(" and ")
            + if missing.len() > 1 { " are" } else { " is" },
        if here.is_empty() { "none".to_string() } else { here.join(", ") },
    )))
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitStatus> {
    match &cli.command {
        Command::LxcStart {
            lxcpath,
            name,
            secs,
        } => {
            ctmgr::container::start_here(lxcpath, name, *secs)?;
            return Ok(ExitStatus::Done);
        }
        Command::LxcStop {
            lxcpath,
            name,
            secs,
        } => {
            ctmgr::container::stop_here(lxcpath, name, *secs)?;
            return Ok(ExitStatus::Done);
        }
        Command::SyncReceive => {
            return sync::receive_main(cli.config.as_deref(), cli.node.as_deref());
        }
        _ => {}
    }
    if let Command::Drbd(drbd::DrbdCommand::FencePeer) = &cli.command {
        // DRBD reads every exit code but 3..=7 as "refuse": so must a
        // configuration error here.
        return match Session::open(&cli) {
            Ok(s) => drbd::fence_peer(&s),
            Err(e) => {
                eprintln!("ctmgr drbd fence-peer: refusing: {e:#}");
                Ok(ExitStatus::Code(ctmgr::fence::FenceOutcome::Refused.code()))
            }
        };
    }
    if let Command::Drbd(drbd::DrbdCommand::Lint { file, hosts }) = &cli.command {
        let session = Session::open(&cli).ok();
        return drbd::lint(session.as_ref().map(|s| &s.config), file, hosts, cli.json);
    }
    let session = Session::open(&cli)?;
    match &cli.command {
        Command::Create(args) => create::run(&session, args),
        Command::List(args) => list::list(&session, args),
        Command::Status => list::status(&session),
        Command::Start(args) => lifecycle::start(&session, args),
        Command::Stop(args) => lifecycle::stop(&session, args),
        Command::Destroy(args) => lifecycle::destroy(&session, args),
        Command::Snapshot(args) => snapshot::snapshot(&session, args),
        Command::Snapshots(args) => snapshot::snapshots(&session, args),
        Command::Prune(args) => snapshot::prune(&session, args),
        Command::Restore(args) => snapshot::restore(&session, args),
        Command::Takeover(args) => takeover::takeover(&session, args),
        Command::Release(args) => takeover::release(&session, args),
        Command::Migrate(args) => takeover::migrate(&session, args, cli.config.as_deref()),
        Command::Drbd(drbd::DrbdCommand::Status) => drbd::status(&session),
        Command::Drbd(drbd::DrbdCommand::Render { format, out }) => {
            drbd::render(&session, format.as_deref(), out)
        }
        Command::Drbd(drbd::DrbdCommand::UnfencePeer) => drbd::unfence_peer(&session),
        Command::FenceAnswer { store, outdate } => drbd::fence_answer(&session, store, *outdate),
        Command::Drbd(drbd::DrbdCommand::Lint { .. } | drbd::DrbdCommand::FencePeer) => {
            Ok(ExitStatus::Done)
        }
        Command::Net(cmd) => net::run(&session, cmd),
        Command::Sync(args) => sync::run(&session, args),
        Command::Doctor => doctor::run(&session),
        Command::LxcStart { .. } | Command::LxcStop { .. } | Command::SyncReceive => {
            Ok(ExitStatus::Done)
        }
    }
}

/// Prints rows as an aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    // Every cell on one line, escapes shown, whatever the caller passed.
    let rows: Vec<Vec<String>> = rows.iter().map(|r| ctmgr::text::row(r.clone())).collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("failed to encode JSON")?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// `--timeout S` as a Duration.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Takes the store lock (safety rule 4): waits up to `wait_secs` with one
/// message (on the terminal, or in the log under cron), or fails at once
/// under `--no-wait`.
pub fn lock_store(store: &str, no_wait: bool, wait_secs: u64) -> Result<ctmgr::lock::StoreLock> {
    use std::io::IsTerminal;
    let wait = if no_wait {
        ctmgr::lock::Wait::No
    } else {
        ctmgr::lock::Wait::Upto(Duration::from_secs(wait_secs))
    };
    Ok(ctmgr::lock::lock_store(store, wait, &|holder| {
        let msg = format!(
            "store {store} is locked by {holder}; waiting (use --no-wait to fail instead)…"
        );
        if std::io::stderr().is_terminal() {
            eprintln!("{msg}");
        } else {
            tracing::warn!("{msg}");
        }
    })?)
}

/// Takes the lock of a store that a command found held here, then asks
/// again whether it is still held (D14): a command that waited for a
/// release or takeover must not go on as if nothing happened (exit 3,
/// naming the store, where it is now, and whose lock it waited for).
pub fn lock_held_store(
    s: &Session,
    store: &ctmgr::config::Store,
    no_wait: bool,
    wait_secs: u64,
) -> Result<ctmgr::lock::StoreLock> {
    use std::io::IsTerminal;
    let wait = if no_wait {
        ctmgr::lock::Wait::No
    } else {
        ctmgr::lock::Wait::Upto(Duration::from_secs(wait_secs))
    };
    let waited_for = std::cell::RefCell::new(None::<String>);
    let lock = ctmgr::lock::lock_store(&store.name, wait, &|holder| {
        *waited_for.borrow_mut() = Some(holder.to_string());
        let msg = format!(
            "store {} is locked by {holder}; waiting (use --no-wait to fail instead)…",
            store.name
        );
        if std::io::stderr().is_terminal() {
            eprintln!("{msg}");
        } else {
            tracing::warn!("{msg}");
        }
    })?;
    let now = store::holding_now(store, &s.runner);
    if !now.is_held() {
        let after = match waited_for.into_inner() {
            Some(holder) => format!(" after waiting for its lock (held by {holder})"),
            None => String::new(),
        };
        return Err(ctmgr::exit::refuse(format!(
            "store {} is no longer held by {}{after}: {}; nothing done (see `ctmgr status`)",
            store.name,
            s.node,
            now.describe(&store.mountpoint)
        )));
    }
    Ok(lock)
}

/// [`lock_held_store`] for every distinct store, in name order (no deadlock).
pub fn lock_held_stores<'c>(
    s: &Session,
    stores: impl IntoIterator<Item = &'c ctmgr::config::Store>,
    no_wait: bool,
    wait_secs: u64,
) -> Result<Vec<ctmgr::lock::StoreLock>> {
    let mut by_name: std::collections::BTreeMap<&str, &ctmgr::config::Store> = Default::default();
    for st in stores {
        by_name.insert(st.name.as_str(), st);
    }
    by_name
        .into_values()
        .map(|st| lock_held_store(s, st, no_wait, wait_secs))
        .collect()
}
