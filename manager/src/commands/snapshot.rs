//! `ctmgr snapshot`, `snapshots`, `prune`, `restore`

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use chrono::{Local, Utc};
use ctmgr::container::{self, Located};
use ctmgr::exit::{refuse, usage, ExitStatus};
use ctmgr::lock;
use ctmgr::{freeze, retention, snapshot};
use serde::Serialize;

use super::{print_json, print_table, Session};

/// Containers snapshotted at once by `snapshot --all`.
const SNAPSHOT_CONCURRENCY: usize = 16;

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// Containers to snapshot
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Every container of the stores held on this node (safe in the same cron line on both nodes)
    #[arg(long)]
    pub all: bool,
    /// Stored in the snapshot's `comment` file
    #[arg(long)]
    pub comment: Option<String>,
    /// Freeze each running container while its snapshot is taken [default: [snapshots] freeze]
    #[arg(long)]
    pub freeze: bool,
    /// Fail at once if another ctmgr run holds the store's lock
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct SnapshotsArgs {
    /// Only this container [default: all containers of the stores held here]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Every container of the stores held here
    #[arg(long)]
    pub all: bool,
    /// Print keep/delete with the rule that kept each; delete nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    pub name: String,
    pub snapshot: String,
}

/// The containers named, or all of the held stores.
fn targets<'s>(s: &'s Session, names: &[String], all: bool) -> Result<Vec<Located<'s>>> {
    let stores = s.stores();
    if all {
        let mut out = Vec::new();
        for st in stores.iter().filter(|st| st.held()) {
            let lxcpath = st.store.lxcpath();
            for name in container::own_names(&lxcpath) {
                out.push(Located {
                    name,
                    store: st.store,
                    lxcpath: lxcpath.clone(),
                });
            }
        }
        return Ok(out);
    }
    names
        .iter()
        .map(|n| container::locate(n, &stores))
        .collect()
}

/// Locks every store touched by `targets`, in name order (no deadlock),
/// and checks each is still held here once locked (D14).
fn lock_stores(
    s: &Session,
    targets: &[Located<'_>],
    no_wait: bool,
) -> Result<Vec<lock::StoreLock>> {
    super::lock_held_stores(s, targets.iter().map(|t| t.store), no_wait, 3600)
}

/// Thaws containers left FROZEN by a killed `snapshot --freeze` and says so
/// on stderr (D10). Every snapshot, snapshots, prune, list and status run
/// calls this; doctor reports the same as findings.
pub fn thaw_abandoned() {
    for r in freeze::recover() {
        eprintln!("ctmgr: warning: {}", r.describe());
    }
}

pub fn snapshot(s: &Session, args: &SnapshotArgs) -> Result<ExitStatus> {
    thaw_abandoned();
    let targets = targets(s, &args.names, args.all)?;
    let _locks = lock_stores(s, &targets, args.no_wait)?;
    let freeze = args.freeze || s.config.snapshots.freeze;
    // Snapshots of different containers run side by side: each Btrfs
    // snapshot ends in a transaction commit, and concurrent ones share it.
    let results = ctmgr::pool::run(
        &targets,
        SNAPSHOT_CONCURRENCY,
        |t| {
            // The freeze is recorded before it happens (D10): a run killed
            // while the container is frozen leaves the record, and the next
            // run thaws it. A container someone else froze is left as it is.
            let we_froze = std::cell::Cell::new(false);
            let do_freeze = || -> Result<()> {
                let c = lxc_bindings::Container::new(&t.name, &t.lxcpath)?;
                if c.is_running() && c.state() != lxc_bindings::State::Frozen {
                    freeze::record(&t.store.name, &t.lxcpath, &t.name)?;
                    we_froze.set(true);
                    c.freeze()?;
                }
                Ok(())
            };
            let do_thaw = || -> Result<()> {
                if !we_froze.get() {
                    return Ok(());
                }
                let c = lxc_bindings::Container::new(&t.name, &t.lxcpath)?;
                if freeze::is_frozen(&c.state()) {
                    freeze::unfreeze(&c)?;
                }
                freeze::forget(&t.store.name, &t.name);
                Ok(())
            };
            let hooks: Option<snapshot::FreezeHooks> = freeze.then_some((&do_freeze, &do_thaw));
            snapshot::prepare(&t.dir(), args.comment.as_deref(), Utc::now(), hooks)
                .map_err(|e| format!("{e:#}"))
        },
        |_| Err("snapshot thread panicked".to_string()),
    );
    // One flush per store makes every prepared snapshot durable, then they
    // become visible, then one more flush keeps the renames.
    let stores: BTreeSet<&std::path::Path> = targets
        .iter()
        .map(|t| t.store.mountpoint.as_path())
        .collect();
    let flush = |what: &str| -> Result<()> {
        for mp in &stores {
            snapshot::sync_fs(mp)
                .with_context(|| format!("failed to flush {} {what}", mp.display()))?;
        }
        Ok(())
    };
    if let Err(e) = flush("before publishing snapshots") {
        results.iter().flatten().for_each(snapshot::discard);
        return Err(e);
    }
    let results: Vec<Result<String, String>> = results
        .into_iter()
        .map(|r| {
            r.and_then(|p| {
                snapshot::publish(&p)
                    .map(|i| i.name)
                    .map_err(|e| format!("{e:#}"))
            })
        })
        .collect();
    flush("after publishing snapshots")?;
    let mut failed = 0;
    for (t, r) in targets.iter().zip(results) {
        match r {
            Ok(name) => s.say(&format!("{}: snapshot {name}", t.name)),
            Err(e) => {
                failed += 1;
                eprintln!("ctmgr: error: failed to snapshot {}: {e}", t.name);
            }
        }
    }
    Ok(if failed == 0 {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

pub fn snapshots(s: &Session, args: &SnapshotsArgs) -> Result<ExitStatus> {
    thaw_abandoned();
    let names: Vec<String> = args.name.iter().cloned().collect();
    let targets = targets(s, &names, args.name.is_none())?;
    let all: Vec<snapshot::SnapshotInfo> = targets
        .iter()
        .flat_map(|t| snapshot::list(&t.dir()))
        .collect();
    if s.json {
        print_json(&serde_json::json!({ "snapshots": all }))?;
        return Ok(ExitStatus::Done);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            // One line per snapshot whatever the comment holds (newlines,
            // terminal escapes): control characters are shown escaped.
            ctmgr::text::row(vec![
                i.container.clone(),
                i.name.clone(),
                i.time
                    .map(|t| {
                        t.with_timezone(&Local)
                            .format("%Y-%m-%d %H:%M:%S %Z")
                            .to_string()
                    })
                    .unwrap_or_else(|| "?".into()),
                match i.read_only {
                    Some(true) => "ro".into(),
                    Some(false) => "rw".into(),
                    None => "-".into(),
                },
                i.damaged
                    .as_ref()
                    .map(|d| format!("DAMAGED: {d}"))
                    .unwrap_or_else(|| i.comment.clone()),
            ])
        })
        .collect();
    print_table(&["CONTAINER", "SNAPSHOT", "TIME", "RO", "COMMENT"], &rows)?;
    Ok(ExitStatus::Done)
}

/// The retention policy for one container: cluster defaults, overridden by
/// its template profile and its own `ctmgr.toml`.
pub fn policy_for(s: &Session, t: &Located<'_>) -> Result<retention::Policy> {
    // ctmgr always writes a `template` line: an empty file was truncated,
    // and its defaults could delete what the container's own policy keeps.
    let settings = t.dir().join(ctmgr::container::SETTINGS_FILE);
    if std::fs::read(&settings).is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace)) {
        return Err(usage(format!(
            "{} is empty (ctmgr writes at least its `template` line); not pruning by the defaults",
            settings.display()
        )));
    }
    let p = ctmgr::container::effective_policy(&s.config.snapshots, &t.dir())?;
    let policy = p
        .to_retention()
        .map_err(|e| usage(format!("keep_within of {}: {e}", t.name)))?;
    policy
        .validate()
        .map_err(|e| usage(format!("snapshot policy of {}: {e}", t.name)))?;
    Ok(policy)
}

#[derive(Serialize)]
struct PruneJson {
    container: String,
    snapshot: String,
    keep: bool,
    reasons: Vec<String>,
}

pub fn prune(s: &Session, args: &PruneArgs) -> Result<ExitStatus> {
    thaw_abandoned();
    let targets = targets(s, &args.names, args.all)?;
    let _locks = if args.dry_run {
        Vec::new()
    } else {
        lock_stores(s, &targets, args.no_wait)?
    };
    // Containers named on the command line: a broken policy is a usage
    // error (exit 2) before anything is deleted.
    if !args.all {
        for t in &targets {
            policy_for(s, t)?;
        }
    }
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut failed = 0;
    for t in &targets {
        // With --all, one container's broken ctmgr.toml must not stop the
        // others' prune: it is named, skipped, and the run exits 1.
        let policy = match policy_for(s, t) {
            Ok(p) => p,
            Err(e) => {
                failed += 1;
                eprintln!(
                    "ctmgr: error: {} not pruned: {e:#} (fix {}; the other containers were pruned)",
                    t.name,
                    t.dir().join(ctmgr::container::SETTINGS_FILE).display()
                );
                continue;
            }
        };
        if !args.dry_run {
            snapshot::cleanup(&t.dir())?;
        }
        let listed = snapshot::list_brief(&t.dir());
        // Damaged snapshots are reported and never deleted by retention.
        for d in listed
            .iter()
            .filter(|i| i.damaged.is_some() || i.time.is_none())
        {
            eprintln!(
                "ctmgr: warning: {} snapshot {} is damaged ({}); left alone — inspect {}",
                t.name,
                d.name,
                d.damaged.as_deref().unwrap_or("no time"),
                d.path.display()
            );
        }
        let snaps: Vec<retention::Snap> = listed
            .iter()
            .filter(|i| i.damaged.is_none())
            .filter_map(|i| {
                i.time.map(|time| retention::Snap {
                    name: &i.name,
                    time,
                })
            })
            .collect();
        // Backups are not implemented yet, so no snapshot is a backup parent.
        let protected = BTreeSet::new();
        let plan = retention::plan(&snaps, &policy, &protected, &Local)
            .map_err(|e| usage(format!("snapshot policy of {}: {e}", t.name)))?;
        for d in &plan {
            let reasons: Vec<String> = d
                .reasons
                .iter()
                .map(|r| {
                    if d.oldest.contains(r) {
                        format!("oldest {r}")
                    } else {
                        r.to_string()
                    }
                })
                .collect();
            let mut verdict = if d.keep { "keep" } else { "delete" }.to_string();
            if !d.keep && !args.dry_run {
                match snapshot::delete(&t.dir(), d.name) {
                    Ok(()) => verdict = "deleted".into(),
                    Err(e) => {
                        failed += 1;
                        verdict = "FAILED".into();
                        eprintln!(
                            "ctmgr: error: failed to delete {} snapshot {}: {e:#}",
                            t.name, d.name
                        );
                    }
                }
            }
            rows.push(ctmgr::text::row(vec![
                t.name.clone(),
                d.name.to_string(),
                verdict,
                reasons.join(", "),
            ]));
            json.push(PruneJson {
                container: t.name.clone(),
                snapshot: d.name.to_string(),
                keep: d.keep,
                reasons,
            });
        }
    }
    if s.json {
        print_json(&serde_json::json!({ "dry_run": args.dry_run, "decisions": json }))?;
    } else if args.dry_run || !s.quiet {
        print_table(&["CONTAINER", "SNAPSHOT", "ACTION", "KEPT BY"], &rows)?;
    }
    Ok(if failed == 0 {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

pub fn restore(s: &Session, args: &RestoreArgs) -> Result<ExitStatus> {
    let stores = s.stores();
    let t = container::locate(&args.name, &stores)?;
    ctmgr::names::validate("snapshot", &args.snapshot)?;
    if !t.snaps_dir().join(&args.snapshot).exists() {
        return Err(usage(format!(
            "container {} has no snapshot {}; see `ctmgr snapshots {}`",
            t.name, args.snapshot, t.name
        )));
    }
    let _lock = super::lock_held_store(s, t.store, false, 3600)?;
    let state = container::info(&t.name, t.store, &t.lxcpath).state;
    if state != "STOPPED" {
        return Err(refuse(format!(
            "container {} is {state}; stop it first (`ctmgr stop {}`): restoring under a running container would corrupt it",
            t.name, t.name
        )));
    }
    let r = snapshot::restore(&t.dir(), &args.snapshot, Utc::now())
        .with_context(|| format!("failed to restore {} from {}", t.name, args.snapshot))?;
    // The config may have changed: refresh its replica on the peer.
    let _ = super::sync::sync_after_change(s, std::slice::from_ref(&t.name));
    if s.json {
        print_json(&r)?;
    } else {
        if let Some(x) = &r.resumed {
            println!("{}: {}", t.name, x.describe());
        }
        println!("restored {} from snapshot {}", t.name, args.snapshot);
        println!(
            "safety snapshot of the previous state: {}",
            r.safety_snapshot
        );
        println!(
            "rootfs: replaced{}",
            if r.data_restored {
                "; data subvolume: replaced"
            } else {
                ""
            }
        );
        if r.config_changes.is_empty() {
            println!("config: unchanged");
        } else {
            println!("config changes:");
            for c in &r.config_changes {
                println!("  {c}");
            }
        }
        println!(
            "fstab: {}",
            if r.fstab_changed {
                "restored (changed)"
            } else {
                "unchanged"
            }
        );
    }
    Ok(ExitStatus::Done)
}
