//! Failover as one unit: `takeover` (preflight, promote, mount, start the
//! set), `release` (stop the set, unmount, demote) and `migrate` (release on
//! the holder over ssh, then take over here).
//!
//! Every step checks the state first and reports "already" or "done"
//! (safety rule 3), so a rerun after a crash or a `kill -9` converges. The
//! caller holds the store lock (rule 4). Each run is journaled.

pub mod preflight;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::{Config, Store};
use crate::container;
use crate::drbd::status as drbd_status;
use crate::journal::Step;
use crate::mountinfo;
use crate::runner::{Cmd, Runner};
use crate::store::mount_is_store;

use preflight::{Evidence, Facts, MountFact};

/// File at the root of a store's filesystem naming the store; stamped by the
/// first takeover or create, checked after every mount.
pub const IDENTITY_FILE: &str = ".ctmgr-store";

/// Containers started at once within one start-order group.
pub const START_CONCURRENCY: usize = 8;

/// Containers stopped at once by a release (each mostly waits).
pub const STOP_CONCURRENCY: usize = 64;

/// What the mountpoint holds now.
pub fn observe_mount(store: &Store) -> Result<MountFact> {
    let mounts = mountinfo::read().context("failed to read /proc/self/mountinfo")?;
    Ok(match mountinfo::at(&mounts, &store.mountpoint) {
        None => MountFact::Free,
        Some(m) if mount_is_store(m, &store.device) => MountFact::Store,
        Some(m) => MountFact::Other {
            source: m.source.clone(),
            fstype: m.fstype.clone(),
        },
    })
}

/// The ssh argv prefix to reach a node (BatchMode: never prompt).
pub fn ssh_cmd(runner_program: &str, target: &str, remote: &[&str], timeout: Duration) -> Cmd {
    ssh_cmd_with(runner_program, target, remote, timeout, 5)
}

/// [`ssh_cmd`] with another `ConnectTimeout` (seconds).
pub fn ssh_cmd_with(
    runner_program: &str,
    target: &str,
    remote: &[&str],
    timeout: Duration,
    connect_secs: u32,
) -> Cmd {
    let connect = format!("ConnectTimeout={connect_secs}");
    Cmd::new(runner_program)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            connect.as_str(),
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=2",
            target,
            "--",
        ])
        .args(remote)
        .timeout(timeout)
}

/// Gathers the evidence about the peer (rules 2 and 10), all bounded in
/// time: every path probed at once, then — when anything answered — the
/// peer asked over ssh what it does with the store, under its own lock.
pub fn gather_evidence(
    config: &Config,
    node: &str,
    store: &Store,
    runner: &dyn Runner,
) -> Evidence {
    let liveness = crate::fence::probe_peer(config, node, runner);
    let mut ev = Evidence {
        liveness,
        ..Evidence::default()
    };
    let Some(peer) = config.peer_of(node) else {
        return ev;
    };
    if ev.liveness.alive() {
        match crate::fence::ask_peer(runner, peer, &ev.liveness, &store.name, false, &config.path) {
            Ok(r) => ev.peer = Some(r),
            Err(e) => ev.peer_error = Some(e),
        }
    }
    ev
}

/// Collects the facts for the preflight.
pub fn gather_facts(
    config: &Config,
    node: &str,
    store: &Store,
    runner: &dyn Runner,
    force: bool,
) -> Result<Facts> {
    let drbd = match &store.drbd_resource {
        Some(res) => {
            let (states, _) = drbd_status::gather(config, runner)?;
            drbd_status::resource(&states, res).cloned()
        }
        None => None,
    };
    let mut facts = Facts {
        store: store.name.clone(),
        resource: store.drbd_resource.clone(),
        drbd,
        mount: observe_mount(store)?,
        mountpoint: store.mountpoint.display().to_string(),
        evidence: None,
        force,
    };
    if preflight::Verdict::needs_evidence(&facts) {
        facts.evidence = Some(gather_evidence(config, node, store, runner));
    }
    Ok(facts)
}

/// Times one step and records it.
pub struct Timeline {
    started: Instant,
    pub steps: Vec<Step>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            started: Instant::now(),
            steps: Vec::new(),
        }
    }
}

impl Timeline {
    pub fn record(&mut self, step: &str, t0: Instant, outcome: &str, detail: impl Into<String>) {
        self.steps.push(Step {
            step: step.to_string(),
            outcome: outcome.to_string(),
            ms: t0.elapsed().as_millis() as u64,
            detail: detail.into(),
        });
    }
    pub fn total_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Promotes the store's resource here (`drbdadm primary RES`); `force` when
/// the operator overrode the local-disk check (DRBD itself refuses a
/// non-UpToDate disk without `--force`).
pub fn promote(runner: &dyn Runner, res: &str, force: bool) -> Result<()> {
    let mut cmd = Cmd::new("drbdadm").arg("primary");
    if force {
        cmd = cmd.arg("--force");
    }
    runner
        .run_ok(&cmd.arg(res).timeout(Duration::from_secs(60)))
        .with_context(|| format!("failed to promote {res}"))?;
    Ok(())
}

/// Mounts the store and checks it is the store's filesystem.
pub fn mount(runner: &dyn Runner, store: &Store) -> Result<()> {
    std::fs::create_dir_all(&store.mountpoint)
        .with_context(|| format!("failed to create {}", store.mountpoint.display()))?;
    let mut cmd = Cmd::new("mount").args(["-t", "btrfs"]);
    if let Some(o) = &store.mount_options {
        cmd = cmd.args(["-o", o]);
    }
    cmd = cmd
        .arg(store.device.display().to_string())
        .arg(store.mountpoint.display().to_string())
        .timeout(Duration::from_secs(120));
    runner.run_ok(&cmd).with_context(|| {
        format!(
            "failed to mount {} at {}",
            store.device.display(),
            store.mountpoint.display()
        )
    })?;
    verify_identity(runner, store)
}

/// Checks (or, the first time, stamps) the identity file; unmounts and fails
/// when the filesystem belongs to another store.
pub fn verify_identity(runner: &dyn Runner, store: &Store) -> Result<()> {
    let path = store.mountpoint.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("store = "))
                .map(|v| v.trim().trim_matches('"').to_string());
            if name.as_deref() != Some(store.name.as_str()) {
                let _ = runner.run(&Cmd::new("umount").arg(store.mountpoint.display().to_string()));
                bail!(
                    "the filesystem on {} belongs to store {:?}, not {} ({}); unmounted it again. Check `device` in cluster.toml",
                    store.device.display(),
                    name.unwrap_or_default(),
                    store.name,
                    path.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            stamp_identity(&store.mountpoint, &store.name)
        }
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Writes the identity file at the root of a mounted store.
pub fn stamp_identity(mountpoint: &Path, store: &str) -> Result<()> {
    let path = mountpoint.join(IDENTITY_FILE);
    if path.exists() {
        return Ok(());
    }
    crate::fsutil::write_atomic(
        &path,
        format!("# written by ctmgr: which store this filesystem is\nstore = \"{store}\"\n")
            .as_bytes(),
        0o644,
    )
    .with_context(|| format!("failed to write {}", path.display()))
}

/// The result of starting one container.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    pub name: String,
    pub order: i64,
    /// "started", "already", "failed"
    pub outcome: String,
    pub error: Option<String>,
    pub ms: u64,
}

/// Containers of a store grouped by start order (lower first), names sorted.
pub fn container_groups(lxcpath: &Path) -> Vec<(i64, Vec<String>)> {
    let mut groups: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
    for name in container::own_names(lxcpath) {
        let text =
            container::read_config_text(&lxcpath.join(&name).join("config")).unwrap_or_default();
        groups
            .entry(container::start_order_of(&text))
            .or_default()
            .push(name);
    }
    groups.into_iter().collect()
}

/// Starts the set: groups in start order, each group through a bounded
/// worker pool (a free worker takes the next container at once); one
/// failure never stops the others. Each start runs in its own child process.
pub fn start_set(lxcpath: &Path, on_started: &(dyn Fn(&Started) + Sync)) -> Vec<Started> {
    let mut results = Vec::new();
    for (order, names) in container_groups(lxcpath) {
        let batch = crate::pool::run(
            &names,
            START_CONCURRENCY,
            |name| {
                let t0 = Instant::now();
                let (outcome, error) = if is_running(lxcpath, name) {
                    ("already", None)
                } else {
                    match container::start(lxcpath, name, Duration::from_secs(60)) {
                        Ok(()) => ("started", None),
                        Err(e) => ("failed", Some(format!("{e:#}"))),
                    }
                };
                let r = Started {
                    name: name.clone(),
                    order,
                    outcome: outcome.to_string(),
                    error,
                    ms: t0.elapsed().as_millis() as u64,
                };
                on_started(&r);
                r
            },
            |name| Started {
                name: name.clone(),
                order,
                outcome: "failed".into(),
                error: Some("start thread panicked".into()),
                ms: 0,
            },
        );
        results.extend(batch);
    }
    results
}

/// Reads a container's state through liblxc's command socket (no fork).
/// Runs on a worker thread: the handle is created and dropped there.
pub fn is_running(lxcpath: &Path, name: &str) -> bool {
    lxc_bindings::Container::new(name, lxcpath).is_ok_and(|c| c.is_running())
}

/// Stops every running container of the set, all at once up to
/// `STOP_CONCURRENCY`: each stop mostly waits for its container's clean
/// shutdown, so they share one `timeout` instead of queueing behind it.
pub fn stop_set(lxcpath: &Path, timeout: Duration) -> Vec<Started> {
    let names = container::own_names(lxcpath);
    crate::pool::run(
        &names,
        STOP_CONCURRENCY,
        |name| {
            let t0 = Instant::now();
            let (outcome, error) = if !is_running(lxcpath, name) {
                ("already", None)
            } else {
                match container::stop(lxcpath, name, timeout) {
                    Ok(()) => ("stopped", None),
                    Err(e) => ("failed", Some(format!("{e:#}"))),
                }
            };
            Started {
                name: name.clone(),
                order: 0,
                outcome: outcome.into(),
                error,
                ms: t0.elapsed().as_millis() as u64,
            }
        },
        |name| Started {
            name: name.clone(),
            order: 0,
            outcome: "failed".into(),
            error: Some("stop thread panicked".into()),
            ms: 0,
        },
    )
}

/// Processes using files under `dir`: "PID (COMM)" for every process whose
/// cwd, root, executable or an open file lies there.
pub fn holders(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let base = p.path();
        let mut links: Vec<std::path::PathBuf> = ["cwd", "root", "exe"]
            .iter()
            .map(|l| base.join(l))
            .collect();
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        if links
            .iter()
            .any(|l| std::fs::read_link(l).is_ok_and(|t| t.starts_with(dir)))
        {
            let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_never_prompts() {
        let c = ssh_cmd(
            "ssh",
            "root@10.0.254.1",
            &["ctmgr", "release", "store1"],
            Duration::from_secs(5),
        );
        assert!(c
            .display()
            .starts_with("ssh -o BatchMode=yes -o ConnectTimeout=5"));
        assert!(c
            .display()
            .ends_with("root@10.0.254.1 -- ctmgr release store1"));
    }

    #[test]
    fn holders_finds_this_process_cwd() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join("x")).unwrap();
        let h = holders(d.path());
        assert!(
            h.iter()
                .any(|p| p.starts_with(&format!("{} ", std::process::id()))),
            "{h:?}"
        );
        drop(f);
    }
}
