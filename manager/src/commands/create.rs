//! `ctmgr create NAME [--template T] [--store S] [--start]`

use anyhow::{Context, Result};
use ctmgr::container::{self, CreateRequest};
use ctmgr::exit::ExitStatus;
use ctmgr::template;

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
    let tmpl = template::load(&tname, &dir).map_err(|e| ctmgr::exit::usage(e.to_string()))?;
    let stores = s.stores();
    let store = container::choose_store(&stores, args.store.as_deref())?;
    let guard = container::find_guard()?;
    ctmgr::takeover::stamp_identity(&store.mountpoint, &store.name)?;
    let lxcpaths = s.lxcpaths();
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
    s.say(&format!("created {} in {}", args.name, dir.display()));
    super::sync::sync_after_change(s, std::slice::from_ref(&args.name));
    if args.start {
        container::start(&store.lxcpath(), &args.name, super::secs(60))
            .with_context(|| format!("created {} but failed to start it", args.name))?;
        s.say(&format!("started {}", args.name));
    }
    Ok(ExitStatus::Done)
}
