//! `ctmgr start NAME…`, `ctmgr stop NAME… [--timeout S]`, `ctmgr destroy NAME [--force]`

use anyhow::{Context, Result};
use ctmgr::container::{self, Located};
use ctmgr::exit::{refuse, ExitStatus};

use super::Session;

/// How long start, stop, destroy (and create) wait for a store lock held by
/// a takeover, release, snapshot or prune of the same store.
pub const LOCK_WAIT_SECS: u64 = 600;

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
    /// Seconds to wait for a clean shutdown before killing (0-86400)
    #[arg(long, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=container::MAX_TIMEOUT_SECS))]
    pub timeout: u64,
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
        match container::stop(&c.lxcpath, &c.name, super::secs(args.timeout)) {
            Ok(()) => s.say(&format!("{}: STOPPED", c.name)),
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
    super::sync::sync_after_change(s, &[]);
    Ok(ExitStatus::Done)
}
