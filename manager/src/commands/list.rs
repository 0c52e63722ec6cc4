//! `ctmgr list [--store S]` and `ctmgr status`

use anyhow::Result;
use ctmgr::container::{self, Info};
use ctmgr::exit::{usage, ExitStatus};
use serde::Serialize;

use super::{print_json, print_table, Session};

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this store
    #[arg(long)]
    pub store: Option<String>,
}

/// Containers of the held stores (optionally one store).
pub fn gather(s: &Session, only: Option<&str>) -> Result<Vec<Info>> {
    if let Some(name) = only {
        if s.config.store(name).is_none() {
            return Err(usage(format!("no store {name:?} in cluster.toml")));
        }
    }
    let mut all = Vec::new();
    for st in s.stores().iter().filter(|st| st.held()) {
        if only.is_some_and(|n| n != st.store.name) {
            continue;
        }
        let lxcpath = st.store.lxcpath();
        for name in container::own_names(&lxcpath) {
            all.push(container::info(&name, st.store, &lxcpath));
        }
        // Interrupted creates show as INCOMPLETE (D22).
        for name in container::incomplete_names(&lxcpath) {
            all.push(container::incomplete_info(&name, st.store, &lxcpath));
        }
    }
    Ok(all)
}

fn rows(infos: &[Info]) -> Vec<Vec<String>> {
    infos
        .iter()
        .map(|i| {
            ctmgr::text::row(vec![
                i.name.clone(),
                i.store.clone(),
                i.state.clone(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                if i.ips.is_empty() {
                    "-".into()
                } else {
                    i.ips.join(",")
                },
                i.start_order.to_string(),
            ])
        })
        .collect()
}

#[derive(Serialize)]
struct ListJson<'a> {
    node: &'a str,
    containers: &'a [Info],
}

pub fn list(s: &Session, args: &ListArgs) -> Result<ExitStatus> {
    super::snapshot::thaw_abandoned();
    let infos = gather(s, args.store.as_deref())?;
    if s.json {
        print_json(&ListJson {
            node: &s.node,
            containers: &infos,
        })?;
    } else {
        print_table(
            &["NAME", "STORE", "STATE", "PID", "IPS", "ORDER"],
            &rows(&infos),
        )?;
    }
    Ok(ExitStatus::Done)
}

#[derive(Serialize)]
struct StoreJson {
    name: String,
    home: String,
    held: bool,
    holding: String,
    device: String,
    mountpoint: String,
    lxcpath: String,
    drbd_resource: Option<String>,
    /// The newest takeover or release of this store journaled on this node.
    last_action: Option<ctmgr::journal::Entry>,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    node: &'a str,
    cluster: &'a str,
    stores: Vec<StoreJson>,
    containers: &'a [Info],
}

pub fn status(s: &Session) -> Result<ExitStatus> {
    super::snapshot::thaw_abandoned();
    let journal = ctmgr::journal::read();
    if !journal.unreadable.is_empty() {
        let lines: Vec<String> = journal.unreadable.iter().map(|n| n.to_string()).collect();
        eprintln!(
            "ctmgr: warning: skipped unreadable line(s) {} of {} (torn by a crash or edited by hand); the entries after them are shown",
            lines.join(", "),
            ctmgr::journal::path().display()
        );
    }
    let stores: Vec<StoreJson> = s
        .stores()
        .iter()
        .map(|st| StoreJson {
            name: st.store.name.clone(),
            home: st.store.home.clone(),
            held: st.held(),
            holding: st.holding.describe(&st.store.mountpoint),
            device: st.store.device.display().to_string(),
            mountpoint: st.store.mountpoint.display().to_string(),
            lxcpath: st.store.lxcpath().display().to_string(),
            drbd_resource: st.store.drbd_resource.clone(),
            last_action: journal
                .last_for(&st.store.name, &["takeover", "release"])
                .cloned(),
        })
        .collect();
    let infos = gather(s, None)?;
    if s.json {
        return print_json(&StatusJson {
            node: &s.node,
            cluster: &s.config.cluster.name,
            stores,
            containers: &infos,
        })
        .map(|()| ExitStatus::Done);
    }
    println!("node {} in cluster {}", s.node, s.config.cluster.name);
    println!();
    let store_rows: Vec<Vec<String>> = stores
        .iter()
        .map(|st| {
            ctmgr::text::row(vec![
                st.name.clone(),
                st.home.clone(),
                if st.held { "yes".into() } else { "no".into() },
                st.device.clone(),
                st.mountpoint.clone(),
                st.drbd_resource.clone().unwrap_or_else(|| "-".into()),
                st.holding.clone(),
            ])
        })
        .collect();
    print_table(
        &[
            "STORE",
            "HOME",
            "HELD",
            "DEVICE",
            "MOUNTPOINT",
            "DRBD",
            "STATE",
        ],
        &store_rows,
    )?;
    println!();
    print_table(
        &["NAME", "STORE", "STATE", "PID", "IPS", "ORDER"],
        &rows(&infos),
    )?;
    let actions: Vec<String> = stores
        .iter()
        .filter_map(|st| {
            let e = st.last_action.as_ref()?;
            Some(format!(
                "last {} of {} here: {} at {} ({} ms{})",
                e.action,
                st.name,
                e.outcome,
                e.time,
                e.total_ms,
                e.refused_by
                    .as_ref()
                    .map(|r| format!(", refused by {r}"))
                    .unwrap_or_default()
            ))
        })
        .collect();
    if !actions.is_empty() {
        println!();
        for a in actions {
            println!("{a}");
        }
    }
    Ok(ExitStatus::Done)
}
