//! `ctmgr start NAME…`, `ctmgr stop NAME… [--timeout S]`, `ctmgr destroy NAME [--force]`

use anyhow::{Context, Result};
use ctmgr::container::{self, Located, StopOutcome};
use ctmgr::exit::{refuse, ExitStatus};
use ctmgr::intent::{self, Intent};

use super::Session;

/// How long start, stop, destroy (and create) wait for a store lock held by
/// a takeover, release, snapshot or prune of the same store.
pub const LOCK_WAIT_SECS: u64 = 600;

/// `stop`'s clean-shutdown wait when neither `--timeout` nor the container
/// (its ctmgr.toml or profile) says.
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 30;

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Containers to start
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Fail at once when the store is locked by another ctmgr run [default: wait up to 600 s]
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Containers to stop
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Seconds to wait for a clean shutdown before killing (0-86400) [default: the container's stop_timeout, else 30]
    #[arg(long,
          value_parser = clap::value_parser!(u64).range(0..=container::MAX_TIMEOUT_SECS))]
    pub timeout: Option<u64>,
    /// Fail at once when the store is locked by another ctmgr run [default: wait up to 600 s]
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct DestroyArgs {
    pub name: String,
    /// Also destroy a running container (stopped first) and its snapshots
    #[arg(long)]
    pub force: bool,
    /// Fail at once when the store is locked by another ctmgr run [default: wait up to 600 s]
    #[arg(long)]
    pub no_wait: bool,
}

/// Locates every name first, so a typo changes nothing.
fn locate_all<'s>(s: &'s Session, names: &[String]) -> Result<Vec<Located<'s>>> {
    let stores = s.stores();
    names
        .iter()
        .map(|n| container::locate(n, &stores))
        .collect()
}

pub fn start(s: &Session, args: &StartArgs) -> Result<ExitStatus> {
    let found = locate_all(s, &args.names)?;
    let _locks = super::lock_held_stores(
        s,
        found.iter().map(|c| c.store),
        args.no_wait,
        LOCK_WAIT_SECS,
    )?;
    let mut failed = 0;
    for c in &found {
        // Meant to run from now on, on whichever node takes the store over
        // (rule 11); recorded first, so a failed start is retried there.
        if let Err(e) = intent::record(&c.dir(), Intent::Running) {
            failed += 1;
            eprintln!("ctmgr: error: not starting {}: {e:#}", c.name);
            continue;
        }
        match container::start(&c.lxcpath, &c.name, super::secs(60)) {
            Ok(()) => s.say(&format!("{}: RUNNING", c.name)),
            Err(e) => {
                failed += 1;
                eprintln!("ctmgr: error: failed to start {}: {e:#}", c.name);
            }
        }
    }
    Ok(if failed == 0 {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

pub fn stop(s: &Session, args: &StopArgs) -> Result<ExitStatus> {
    let found = locate_all(s, &args.names)?;
    let _locks = super::lock_held_stores(
        s,
        found.iter().map(|c| c.store),
        args.no_wait,
        LOCK_WAIT_SECS,
    )?;
    let mut failed = 0;
    for c in &found {
        // Stopped on purpose: takeover and migrate leave it stopped (rule 11).
        if let Err(e) = intent::record(&c.dir(), Intent::Stopped) {
            failed += 1;
            eprintln!("ctmgr: error: not stopping {}: {e:#}", c.name);
            continue;
        }
        let timeout = match args.timeout {
            Some(t) => super::secs(t),
            None => intent::stop_timeout(&c.dir(), DEFAULT_STOP_TIMEOUT_SECS),
        };
        match container::stop(&c.lxcpath, &c.name, timeout) {
            Ok(StopOutcome::Clean | StopOutcome::Already) => s.say(&format!("{}: STOPPED", c.name)),
            Ok(StopOutcome::Killed) => eprintln!(
                "ctmgr: warning: {} did not shut down cleanly within {} s: KILLED",
                c.name,
                timeout.as_secs()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("ctmgr: error: failed to stop {}: {e:#}", c.name);
            }
        }
    }
    Ok(if failed == 0 {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

pub fn destroy(s: &Session, args: &DestroyArgs) -> Result<ExitStatus> {
    // An incomplete container (interrupted create) can be destroyed too.
    let stores = s.stores();
    let c = &container::locate_any(&args.name, &stores)?;
    let lock = super::lock_held_store(s, c.store, args.no_wait, LOCK_WAIT_SECS)?;
    let info = if container::is_incomplete(&c.dir()) {
        container::incomplete_info(&c.name, c.store, &c.lxcpath)
    } else {
        container::info(&c.name, c.store, &c.lxcpath)
    };
    let snaps = std::fs::read_dir(c.snaps_dir())
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    let stopped = matches!(info.state.as_str(), "STOPPED" | "INCOMPLETE");
    if !args.force {
        if !stopped {
            return Err(refuse(format!(
                "container {} is {}; stop it first or use --force",
                c.name, info.state
            )));
        }
        if snaps > 0 {
            return Err(refuse(format!(
                "container {} has {snaps} snapshot(s) in {}; they would be lost. Use --force to destroy them too",
                c.name,
                c.snaps_dir().display()
            )));
        }
    }
    if !stopped {
        container::stop(&c.lxcpath, &c.name, super::secs(10))
            .with_context(|| format!("failed to stop {} before destroying it", c.name))?;
    }
    container::destroy_dir(&c.lxcpath, &c.name)
        .with_context(|| format!("failed to destroy {}", c.name))?;
    s.say(&format!(
        "destroyed {} ({} snapshot(s) removed)",
        c.name, snaps
    ));
    drop(lock);
    // Removes the replica on the peer (a full push removes replicas of
    // containers that no longer exist here).
    let _ = super::sync::sync_after_change(s, &[]);
    Ok(ExitStatus::Done)
}
