//! `ctmgr takeover STORE`, `ctmgr release STORE`, `ctmgr migrate STORE`

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use ctmgr::config::Store;
use ctmgr::exit::{refuse, usage, ExitStatus};
use ctmgr::journal::{self, Entry};
use ctmgr::runner::{Cmd, Runner};
use ctmgr::takeover::{self, preflight, Outcome, Started, Timeline};

use super::{print_json, Session};

#[derive(clap::Args, Debug)]
pub struct TakeoverArgs {
    /// Store name from cluster.toml (e.g. store1)
    pub store: String,
    /// Print the plan and the preflight verdict; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Override the disk and peer-evidence refusals (risk of split brain; journaled)
    #[arg(long)]
    pub force: bool,
    /// Promote and mount only; start no container
    #[arg(long)]
    pub no_start: bool,
    /// Fail at once if another ctmgr run holds the store's lock
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// Store name from cluster.toml
    pub store: String,
    /// Seconds each container without its own `stop_timeout` gets for a clean shutdown before it is killed (0-86400)
    #[arg(long, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=ctmgr::container::MAX_TIMEOUT_SECS))]
    pub timeout: u64,
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Store to move to this node
    pub store: String,
    /// Seconds each container without its own `stop_timeout` gets for a clean shutdown on the old holder (0-86400)
    #[arg(long, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=ctmgr::container::MAX_TIMEOUT_SECS))]
    pub timeout: u64,
}

fn store_of<'a>(s: &'a Session, name: &str) -> Result<&'a Store> {
    ctmgr::names::validate("store", name)?;
    s.config
        .store(name)
        .ok_or_else(|| usage(format!("no store {name:?} in {}", s.config.path.display())))
}

fn entry(s: &Session, action: &str, store: &str, tl: &Timeline) -> Entry {
    Entry {
        time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        node: s.node.clone(),
        action: action.into(),
        store: store.into(),
        outcome: String::new(),
        forced: false,
        refused_by: None,
        error: None,
        total_ms: tl.total_ms(),
        steps: tl.steps.clone(),
    }
}

fn print_steps(s: &Session, tl: &Timeline) {
    if s.quiet || s.json {
        return;
    }
    println!("timeline:");
    for st in &tl.steps {
        println!(
            "  {:>7} ms  {:<22} {:<8} {}",
            st.ms, st.step, st.outcome, st.detail
        );
    }
    println!("  {:>7} ms  total", tl.total_ms());
}

pub fn takeover(s: &Session, args: &TakeoverArgs) -> Result<ExitStatus> {
    let store = store_of(s, &args.store)?;
    let _lock = if args.dry_run {
        None
    } else {
        Some(super::lock_store(&store.name, args.no_wait, 1800)?)
    };
    let mut tl = Timeline::default();
    let t0 = Instant::now();
    let facts = takeover::gather_facts(&s.config, &s.node, store, &s.runner, args.force)?;
    let verdict = preflight::decide(&facts);
    tl.record(
        "preflight",
        t0,
        if verdict.refusal().is_some() {
            "refused"
        } else {
            "done"
        },
        "",
    );
    if !s.quiet && !s.json {
        println!("preflight for takeover of {} on {}:", store.name, s.node);
        for c in &verdict.checks {
            println!("  [{:<6}] {:<13} {}", c.verdict, c.name, c.message);
        }
    }
    let plan = takeover::start_plan(&store.lxcpath());
    if args.dry_run {
        if s.json {
            print_json(
                &serde_json::json!({ "store": store.name, "verdict": verdict, "facts": {
                "mount": facts.mount, "drbd": facts.drbd, "evidence": facts.evidence }, "start_groups": plan.groups,
                "left_stopped": plan.left_stopped }),
            )?;
        } else {
            println!("plan:");
            if let Some(res) = &store.drbd_resource {
                println!(
                    "  promote  drbdadm primary {res}{}",
                    if verdict.promote {
                        ""
                    } else {
                        "  (already Primary: skip)"
                    }
                );
            }
            println!(
                "  mount    {} at {}{}",
                store.device.display(),
                store.mountpoint.display(),
                if verdict.mount {
                    ""
                } else {
                    "  (already mounted: skip)"
                }
            );
            if args.no_start {
                println!("  start    nothing (--no-start)");
            } else if plan.groups.is_empty() && plan.left_stopped.is_empty() {
                println!("  start    the containers found on the store once mounted that are meant to run, lower lxc.start.order first");
            }
            for (order, names) in &plan.groups {
                println!("  start    order {order}: {}", names.join(" "));
            }
            if !plan.left_stopped.is_empty() {
                println!(
                    "  leave    {}: stopped on purpose, not started",
                    plan.left_stopped.join(" ")
                );
            }
            println!("dry run: nothing changed");
        }
        return Ok(match verdict.refusal() {
            Some(_) => ExitStatus::Refused,
            None => ExitStatus::Done,
        });
    }
    let mut e = entry(s, "takeover", &store.name, &tl);
    e.forced = verdict.forced;
    if let Some(r) = verdict.refusal() {
        e.outcome = "refused".into();
        e.refused_by = Some(r.name.to_string());
        e.steps = tl.steps.clone();
        journal::append(&e).context("failed to write the journal")?;
        return Err(refuse(format!(
            "takeover of {}: {} ({})",
            store.name, r.message, r.name
        )));
    }
    if verdict.forced {
        tracing::warn!(
            "takeover of {} forced past a refusal: check for split brain",
            store.name
        );
    }
    let result = takeover_steps(s, store, &verdict, args.no_start, &mut tl);
    e.steps = tl.steps.clone();
    e.total_ms = tl.total_ms();
    let status = match &result {
        Ok(started) => {
            let failed: Vec<&Started> = started
                .iter()
                .filter(|r| r.outcome == Outcome::Failed)
                .collect();
            e.outcome = if failed.is_empty() {
                "ok".into()
            } else {
                "partial".into()
            };
            if s.json {
                print_json(
                    &serde_json::json!({ "store": store.name, "verdict": verdict, "containers": started, "steps": tl.steps, "total_ms": tl.total_ms() }),
                )?;
            } else if !s.quiet {
                print_containers(started);
            }
            print_steps(s, &tl);
            if failed.is_empty() {
                ExitStatus::Done
            } else {
                for f in &failed {
                    eprintln!(
                        "ctmgr: error: container {} failed to start: {}",
                        f.name,
                        f.error.as_deref().unwrap_or("")
                    );
                }
                eprintln!(
                    "ctmgr: store {} is taken over, but {} container(s) failed",
                    store.name,
                    failed.len()
                );
                ExitStatus::Failed
            }
        }
        Err(err) => {
            e.outcome = "failed".into();
            e.error = Some(format!("{err:#}"));
            print_steps(s, &tl);
            ExitStatus::Failed
        }
    };
    journal::append(&e).context("failed to write the journal")?;
    result
        .map(|_| status)
        .with_context(|| format!("failed to take over store {}", store.name))
}

/// The per-container lines of a takeover or release report.
fn print_containers(rows: &[Started]) {
    println!("containers:");
    for r in rows {
        let note = r.note();
        println!(
            "  {:<20} order {:<4} {:<11} {} ms{}",
            r.name,
            r.order,
            r.outcome,
            r.ms,
            if note.is_empty() {
                String::new()
            } else {
                format!("  {note}")
            }
        );
    }
}

fn takeover_steps(
    s: &Session,
    store: &Store,
    verdict: &preflight::Verdict,
    no_start: bool,
    tl: &mut Timeline,
) -> Result<Vec<Started>> {
    if let Some(res) = &store.drbd_resource {
        let t = Instant::now();
        if verdict.promote {
            // Any override reaches DRBD too: without --force its fence-peer
            // handler (ctmgr) would refuse what the operator forced here.
            takeover::promote(&s.runner, res, verdict.forced)
                .inspect_err(|e| tl.record("promote", t, "failed", format!("{e:#}")))?;
            tl.record("promote", t, "done", format!("drbdadm primary {res}"));
        } else {
            tl.record("promote", t, "already", format!("{res} is Primary"));
        }
    }
    let t = Instant::now();
    // Re-check: a concurrent mount or a rerun after a kill may have mounted it.
    match takeover::observe_mount(store)? {
        preflight::MountFact::Store => {
            takeover::verify_identity(&s.runner, store)?;
            tl.record(
                "mount",
                t,
                "already",
                store.mountpoint.display().to_string(),
            );
        }
        preflight::MountFact::Free => {
            takeover::mount(&s.runner, store)
                .inspect_err(|e| tl.record("mount", t, "failed", format!("{e:#}")))?;
            tl.record(
                "mount",
                t,
                "done",
                format!(
                    "{} at {}",
                    store.device.display(),
                    store.mountpoint.display()
                ),
            );
        }
        preflight::MountFact::Other { source, fstype } => {
            tl.record("mount", t, "failed", format!("occupied by {source}"));
            return Err(refuse(format!(
                "{} became occupied by {source} ({fstype})",
                store.mountpoint.display()
            )));
        }
    }
    if no_start {
        tl.record("start", Instant::now(), "skipped", "--no-start");
        return Ok(Vec::new());
    }
    let t = Instant::now();
    let first = std::sync::Mutex::new(None::<u64>);
    let quiet = s.quiet || s.json;
    let started = takeover::start_set(&store.lxcpath(), &|r| {
        if let Ok(mut f) = first.lock() {
            if f.is_none() && matches!(r.outcome, Outcome::Started | Outcome::Already) {
                *f = Some(t.elapsed().as_millis() as u64);
            }
        }
        if !quiet && std::io::stderr().is_terminal() {
            eprintln!("  {} {}", r.name, r.outcome);
        }
    });
    let failed = started
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count();
    let left: Vec<&str> = started
        .iter()
        .filter(|r| r.outcome == Outcome::NotStarted)
        .map(|r| r.name.as_str())
        .collect();
    if let Ok(Some(ms)) = first.lock().map(|f| *f) {
        tl.steps.push(ctmgr::journal::Step {
            step: "first-container".into(),
            outcome: "done".into(),
            ms,
            detail: "time to the first container running".into(),
        });
    }
    tl.record(
        "start",
        t,
        if failed == 0 { "done" } else { "failed" },
        format!(
            "{} container(s), {failed} failed{}",
            started.len() - left.len(),
            if left.is_empty() {
                String::new()
            } else {
                format!("; stopped on purpose, not started: {}", left.join(" "))
            }
        ),
    );
    Ok(started)
}

pub fn release(s: &Session, args: &ReleaseArgs) -> Result<ExitStatus> {
    let store = store_of(s, &args.store)?;
    let _lock = super::lock_store(&store.name, args.no_wait, 1800)?;
    let mut tl = Timeline::default();
    let mut stopped = Vec::new();
    let result = release_steps(s, store, args.timeout, &mut tl, &mut stopped);
    let mut e = entry(s, "release", &store.name, &tl);
    e.outcome = if result.is_ok() {
        "ok".into()
    } else {
        "failed".into()
    };
    e.error = result.as_ref().err().map(|e| format!("{e:#}"));
    journal::append(&e).context("failed to write the journal")?;
    if s.json {
        print_json(
            &serde_json::json!({ "store": store.name, "containers": stopped, "steps": tl.steps, "total_ms": tl.total_ms(), "error": e.error }),
        )?;
    } else if !s.quiet && !stopped.is_empty() {
        print_containers(&stopped);
    }
    print_steps(s, &tl);
    let killed: Vec<&str> = stopped
        .iter()
        .filter(|r| r.outcome == Outcome::Killed)
        .map(|r| r.name.as_str())
        .collect();
    if !killed.is_empty() {
        tracing::warn!(
            "{} did not shut down cleanly within their stop timeout and were killed",
            killed.join(", ")
        );
    }
    result.with_context(|| format!("failed to release store {}", store.name))?;
    Ok(ExitStatus::Done)
}

fn release_steps(
    s: &Session,
    store: &Store,
    timeout: u64,
    tl: &mut Timeline,
    stopped_out: &mut Vec<Started>,
) -> Result<()> {
    // The peer is about to need the replicas: push them first (a failure
    // is a warning; the release goes on).
    if s.stores()
        .iter()
        .any(|st| st.store.name == store.name && st.held())
    {
        let t = Instant::now();
        match super::sync::sync_after_change(s, &[]) {
            Ok(()) => tl.record("sync", t, "done", "replicas pushed to the peer"),
            Err(why) => tl.record("sync", t, "warning", why),
        }
    }
    let t = Instant::now();
    match takeover::observe_mount(store)? {
        preflight::MountFact::Store => {
            let stopped = takeover::stop_set(&store.lxcpath(), Duration::from_secs(timeout));
            // One journal step per container, in the order they were
            // stopped: the reverse start order shows, and a kill is a kill.
            for r in &stopped {
                tl.steps.push(ctmgr::journal::Step {
                    step: format!("stop:{}", r.name),
                    outcome: r.outcome.to_string(),
                    ms: r.ms,
                    detail: format!(
                        "order {}, stop timeout {} s{}",
                        r.order,
                        r.stop_timeout_s.unwrap_or(timeout),
                        match r.note() {
                            n if n.is_empty() => String::new(),
                            n => format!(": {n}"),
                        }
                    ),
                });
            }
            let failed: Vec<String> = stopped
                .iter()
                .filter(|r| r.outcome == Outcome::Failed)
                .map(|r| format!("{}: {}", r.name, r.error.as_deref().unwrap_or("")))
                .collect();
            let count = |o: Outcome| stopped.iter().filter(|r| r.outcome == o).count();
            let (n, killed) = (count(Outcome::Stopped), count(Outcome::Killed));
            *stopped_out = stopped;
            if !failed.is_empty() {
                tl.record("stop", t, "failed", failed.join("; "));
                anyhow::bail!("could not stop: {}", failed.join("; "));
            }
            tl.record(
                "stop",
                t,
                if n + killed == 0 { "already" } else { "done" },
                format!("{n} container(s) stopped cleanly, {killed} killed"),
            );
            let t = Instant::now();
            let out = s.runner.run(
                &Cmd::new("umount")
                    .arg(store.mountpoint.display().to_string())
                    .timeout(Duration::from_secs(120)),
            )?;
            if !out.success() {
                let own = ctmgr::container::own_names(&store.lxcpath());
                let holders = takeover::holders(&store.mountpoint, &own);
                let who = if holders.is_empty() {
                    "no process found by /proc scan".to_string()
                } else {
                    holders.join(", ")
                };
                tl.record("unmount", t, "failed", format!("busy: {who}"));
                anyhow::bail!(
                    "{} is busy, used by: {who}. Stop those processes and run `ctmgr release {}` again (ctmgr never unmounts lazily)",
                    store.mountpoint.display(),
                    store.name
                );
            }
            tl.record("unmount", t, "done", store.mountpoint.display().to_string());
        }
        preflight::MountFact::Free => {
            tl.record("stop", t, "already", "store not mounted here");
            tl.record("unmount", t, "already", "not mounted");
        }
        preflight::MountFact::Other { source, .. } => {
            tl.record(
                "unmount",
                t,
                "skipped",
                format!(
                    "{} holds {source}, not the store",
                    store.mountpoint.display()
                ),
            );
        }
    }
    if let Some(res) = &store.drbd_resource {
        let t = Instant::now();
        let role = ctmgr::store::drbd_role(&s.runner, res);
        match role {
            Ok(r) if r == "Primary" => {
                s.runner
                    .run_ok(
                        &Cmd::new("drbdadm")
                            .args(["secondary", res])
                            .timeout(Duration::from_secs(60)),
                    )
                    .map_err(|e| {
                        // "(-12) Device is held open": say by whom.
                        let who = takeover::device_holders(&store.device);
                        let who = if who.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; {} is held by: {}",
                                store.device.display(),
                                who.join(", ")
                            )
                        };
                        tl.record("demote", t, "failed", format!("{e}{who}"));
                        anyhow::Error::new(e).context(format!("failed to demote {res}{who}"))
                    })?;
                tl.record("demote", t, "done", format!("drbdadm secondary {res}"));
            }
            Ok(r) => tl.record("demote", t, "already", format!("{res} is {r}")),
            Err(e) => tl.record("demote", t, "skipped", format!("role unknown: {e}")),
        }
    }
    Ok(())
}

/// The containers a release on the peer reports (its `--json`), as far as
/// migrate needs them.
#[derive(serde::Deserialize, Default)]
struct RemoteRelease {
    #[serde(default)]
    containers: Vec<RemoteContainer>,
}

#[derive(serde::Deserialize)]
struct RemoteContainer {
    name: String,
    outcome: String,
}

/// `ctmgr [--config C] ARGS…` as run on the peer over ssh.
fn remote_ctmgr(cli_config: Option<&std::path::Path>, args: &[&str]) -> Vec<String> {
    let mut remote = vec!["ctmgr".to_string()];
    if let Some(c) = cli_config {
        remote.extend(["--config".to_string(), c.display().to_string()]);
    }
    remote.extend(args.iter().map(|a| a.to_string()));
    remote
}

pub fn migrate(
    s: &Session,
    args: &MigrateArgs,
    cli_config: Option<&std::path::Path>,
) -> Result<ExitStatus> {
    let store = store_of(s, &args.store)?;
    let peer = s
        .config
        .peer_of(&s.node)
        .ok_or_else(|| usage("migrate needs a peer node in cluster.toml"))?;
    let timeout = args.timeout.to_string();
    let remote = remote_ctmgr(
        cli_config,
        &["--json", "release", &store.name, "--timeout", &timeout],
    );
    let remote_ref: Vec<&str> = remote.iter().map(String::as_str).collect();
    s.say(&format!(
        "releasing {} on {} ({}) …",
        store.name, peer.name, peer.ssh
    ));
    let out = s.runner.run(&takeover::ssh_cmd(
        "ssh",
        &peer.ssh,
        &remote_ref,
        takeover::remote_release_deadline(args.timeout),
    ))?;
    if !out.success() {
        let msg = format!("{}{}", out.stdout, out.stderr);
        anyhow::bail!(
            "release of {} on {} failed (exit {}); nothing was promoted here. The peer said:\n{}",
            store.name,
            peer.name,
            out.code,
            msg.trim()
        );
    }
    let released: RemoteRelease = serde_json::from_str(out.stdout.trim()).unwrap_or_default();
    if !s.quiet && !s.json {
        println!("released on {}:", peer.name);
        for c in &released.containers {
            println!("  {:<20} {}", c.name, c.outcome);
        }
    }
    for c in released.containers.iter().filter(|c| c.outcome == "killed") {
        tracing::warn!(
            "{} on {} did not shut down cleanly within its stop timeout and was killed",
            c.name,
            peer.name
        );
    }
    s.say(&format!("released on {}; taking over here", peer.name));
    let result = takeover(
        s,
        &TakeoverArgs {
            store: store.name.clone(),
            dry_run: false,
            force: false,
            no_start: false,
            no_wait: false,
        },
    );
    let err = match result {
        Ok(status) => return Ok(status),
        Err(e) => e,
    };
    // D21: the peer released, this node could not take over. The set is
    // stopped; give the store back to the peer through its own normal
    // takeover (every check, no --force), or say loudly what is down where.
    let stopped: Vec<String> = released
        .containers
        .iter()
        .filter(|c| matches!(c.outcome.as_str(), "stopped" | "killed"))
        .map(|c| c.name.clone())
        .collect();
    let names = if stopped.is_empty() {
        "its containers".to_string()
    } else {
        stopped.join(", ")
    };
    eprintln!(
        "ctmgr: error: takeover of {} here failed after {} released it: {err:#}",
        store.name, peer.name
    );
    eprintln!("ctmgr: giving {} back to {} …", store.name, peer.name);
    let back = give_back(s, store, peer, cli_config, args.timeout);
    let mut tl = Timeline::default();
    let mut e = entry(s, "migrate", &store.name, &tl);
    let message = match &back {
        Ok(()) => format!(
            "migrate of {} failed: takeover here failed ({err:#}); the store is back on {}, which started its containers meant to run ({names} had been stopped)",
            store.name, peer.name
        ),
        Err(why) => {
            let here = ctmgr::store::holding_now(store, &s.runner).describe(&store.mountpoint);
            format!(
                "migrate of {} failed and could not be undone: {names} on store {} are STOPPED. Takeover here failed ({err:#}); giving it back to {} failed ({why:#}). On {}: {here}. Fix the cause and run `ctmgr takeover {}` on the node that should hold it",
                store.name, store.name, peer.name, s.node, store.name
            )
        }
    };
    tl.record(
        "give-back",
        Instant::now(),
        if back.is_ok() { "done" } else { "failed" },
        format!("takeover {} on {}", store.name, peer.name),
    );
    e.steps = tl.steps.clone();
    e.outcome = "failed".into();
    e.error = Some(message.clone());
    journal::append(&e).context("failed to write the journal")?;
    // A plain error (exit 1): something was changed, so never exit 3.
    Err(anyhow::anyhow!(message))
}

/// Undoes a migrate whose takeover here failed: demotes here (if promoted),
/// then runs the peer's own `ctmgr takeover STORE` over ssh.
fn give_back(
    s: &Session,
    store: &Store,
    peer: &ctmgr::config::Node,
    cli_config: Option<&std::path::Path>,
    timeout: u64,
) -> Result<()> {
    let primary_here = store
        .drbd_resource
        .as_deref()
        .is_some_and(|r| ctmgr::store::drbd_role(&s.runner, r).as_deref() == Ok("Primary"));
    let mounted_here = matches!(takeover::observe_mount(store)?, preflight::MountFact::Store);
    if primary_here || mounted_here {
        release(
            s,
            &ReleaseArgs {
                store: store.name.clone(),
                timeout,
                no_wait: false,
            },
        )
        .context("failed to release the store here again")?;
    }
    let remote = remote_ctmgr(cli_config, &["takeover", &store.name]);
    let remote_ref: Vec<&str> = remote.iter().map(String::as_str).collect();
    let out = s.runner.run(&takeover::ssh_cmd(
        "ssh",
        &peer.ssh,
        &remote_ref,
        takeover::remote_takeover_deadline(),
    ))?;
    if !s.quiet && !s.json {
        print!("{}", out.stdout);
    }
    if !out.success() {
        anyhow::bail!(
            "`ctmgr takeover {}` on {} exited {}: {}",
            store.name,
            peer.name,
            out.code,
            out.stderr.trim()
        );
    }
    Ok(())
}
