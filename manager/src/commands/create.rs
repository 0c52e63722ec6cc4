//! `ctmgr create NAME [--template T] [--store S] [--start] [--force] [--no-wait]`,
//! and the peer's side of its name question (`ctmgr __name-answer NAME`).

use anyhow::{Context, Result};
use ctmgr::container::{self, CreateRequest, NameHere};
use ctmgr::exit::{usage, ExitStatus};
use ctmgr::names_peer;
use ctmgr::template;

use super::lifecycle::LOCK_WAIT_SECS;
use super::Session;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Container name: letters, digits, `_.-`, at most 63 characters
    pub name: String,
    /// Profile from templates/ or /etc/ctmgr/templates (busybox, debian, mysql…) [default: the name if it is a template, else busybox]
    #[arg(long, short)]
    pub template: Option<String>,
    /// Store to create it on [default: the only store held here]
    #[arg(long)]
    pub store: Option<String>,
    /// Start it once created
    #[arg(long)]
    pub start: bool,
    /// Create it even when the peer cannot be asked whether the name is free
    /// (names are unique in the cluster; only when the peer is down and you
    /// know it has no container of that name)
    #[arg(long)]
    pub force: bool,
    /// Fail at once when the store is locked or the name is being created by
    /// another ctmgr run [default: wait up to 600 s]
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(s: &Session, args: &Args) -> Result<ExitStatus> {
    ctmgr::names::validate("container", &args.name)?;
    let dir = template::override_dir();
    // `ctmgr create mysql` does the obvious thing: the mysql profile.
    let tname = match &args.template {
        Some(t) => t.clone(),
        None if template::known(&dir).contains(&args.name) => args.name.clone(),
        None => "busybox".to_string(),
    };
    let tmpl = template::load(&tname, &dir).map_err(|e| usage(e.to_string()))?;
    let stores = s.stores();
    let store = container::choose_store(&stores, args.store.as_deref())?;
    let guard = container::find_guard()?;
    // Rule 4 (D14): the store lock, and the store still held once we have it.
    let _store_lock = super::lock_held_store(s, store, args.no_wait, LOCK_WAIT_SECS)?;
    // D19: the name reserved here from before the peer is asked until the
    // container's directory exists (`container::create` puts it there first).
    let reserved = reserve_name(&args.name, args.no_wait)?;
    let mounts = ctmgr::container::mounts()?;
    let lxcpaths =
        names_peer::with_replica_dirs(&s.config, ctmgr::store::local_lxcpaths(&s.config, &mounts));
    if let NameHere::Taken(why) = container::name_here(&args.name, &store.lxcpath(), &lxcpaths) {
        return Err(usage(format!("cannot create {}: {why}", args.name)));
    }
    if let Some(warning) =
        names_peer::check_cluster(&s.config, &s.node, &args.name, &s.runner, args.force)
            .into_result()?
    {
        eprintln!("ctmgr: warning: {warning}");
    }
    ctmgr::takeover::stamp_identity(&store.mountpoint, &store.name)?;
    s.say(&format!(
        "creating {} on {} from template {} ({})",
        args.name, store.name, tname, tmpl.description
    ));
    let dir = container::create(&CreateRequest {
        name: &args.name,
        template: &tmpl,
        store,
        bridge: &s.config.network.bridge,
        guard: &guard,
        replica_dir: s.config.replica_dir(store).as_deref(),
        lxcpaths: &lxcpaths,
    })
    .with_context(|| format!("failed to create container {}", args.name))?;
    drop(reserved);
    s.say(&format!("created {} in {}", args.name, dir.display()));
    let _ = super::sync::sync_after_change(s, std::slice::from_ref(&args.name));
    if args.start {
        container::start(&store.lxcpath(), &args.name, super::secs(60))
            .with_context(|| format!("created {} but failed to start it", args.name))?;
        s.say(&format!("started {}", args.name));
    }
    Ok(ExitStatus::Done)
}

/// Reserves the name on this node (a second create of it here waits).
fn reserve_name(name: &str, no_wait: bool) -> Result<ctmgr::lock::NameLock> {
    use std::io::IsTerminal;
    let wait = if no_wait {
        ctmgr::lock::Wait::No
    } else {
        ctmgr::lock::Wait::Upto(super::secs(LOCK_WAIT_SECS))
    };
    Ok(ctmgr::lock::lock_name(name, wait, &|holder| {
        let msg = format!(
            "the container name {name} is being created by {holder}; waiting (use --no-wait to fail instead)…"
        );
        if std::io::stderr().is_terminal() {
            eprintln!("{msg}");
        } else {
            tracing::warn!("{msg}");
        }
    })?)
}

/// `ctmgr __name-answer NAME`: this node's answer to the peer's create, as
/// one line of JSON (docs/json.md); exit 0 whatever the answer.
pub fn name_answer(s: &Session, name: &str) -> Result<ExitStatus> {
    let lxcpaths = names_peer::with_replica_dirs(&s.config, s.lxcpaths());
    let answer = names_peer::answer(&s.node, name, &lxcpaths);
    println!(
        "{}",
        serde_json::to_string(&answer).context("failed to encode the answer")?
    );
    Ok(ExitStatus::Done)
}
