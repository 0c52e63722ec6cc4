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
use crate::container::{self, StopOutcome};
use crate::drbd::status as drbd_status;
use crate::intent::{self, Intent, StartPlan};
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

/// How long a store lock may be waited for by takeover and release.
pub const LOCK_WAIT_SECS: u64 = 1800;

/// The deadline migrate gives the peer's `ctmgr release` over ssh: its lock
/// wait, then every stop group within at least the `--timeout` (or the 300 s
/// a database profile may set) with room, unmount and demote. Saturating:
/// never overflows whatever the timeout.
pub fn remote_release_deadline(timeout_secs: u64) -> Duration {
    let per_group = timeout_secs.max(300);
    Duration::from_secs(
        LOCK_WAIT_SECS
            .saturating_add(per_group.saturating_mul(4))
            .saturating_add(120)
            .min(7 * 86_400),
    )
}

/// The deadline for the peer's `ctmgr takeover` over ssh (lock wait,
/// preflight, promote, mount and starts).
pub fn remote_takeover_deadline() -> Duration {
    Duration::from_secs(LOCK_WAIT_SECS + 900)
}

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

/// What happened to one container of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Takeover started it.
    Started,
    /// It already was as wanted (running for takeover, stopped for release).
    Already,
    /// Stopped on purpose (`ctmgr stop`): takeover did not start it.
    NotStarted,
    /// Release stopped it cleanly within its stop timeout.
    Stopped,
    /// It did not shut down within its stop timeout and was killed.
    Killed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Already => "already",
            Outcome::NotStarted => "not-started",
            Outcome::Stopped => "stopped",
            Outcome::Killed => "killed",
            Outcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The result of starting or stopping one container.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    pub name: String,
    pub order: i64,
    pub outcome: Outcome,
    /// The recorded intent (`None`: nothing recorded, meant to run).
    pub intent: Option<Intent>,
    pub error: Option<String>,
    /// Milliseconds from the start of the whole set's work to this
    /// container's own begin; `ms` is how long it took.
    pub begin_ms: u64,
    pub ms: u64,
    /// Stops only: the seconds it was given for a clean shutdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout_s: Option<u64>,
}

impl Started {
    fn new(name: &str, order: i64, outcome: Outcome, intent: Option<Intent>) -> Started {
        Started {
            name: name.to_string(),
            order,
            outcome,
            intent,
            error: None,
            begin_ms: 0,
            ms: 0,
            stop_timeout_s: None,
        }
    }

    /// What the human report shows after the outcome.
    pub fn note(&self) -> String {
        match (self.outcome, &self.error) {
            (_, Some(e)) => e.clone(),
            (Outcome::NotStarted, None) => "stopped on purpose, not started".into(),
            (Outcome::Killed, None) => format!(
                "no clean shutdown within {} s: killed",
                self.stop_timeout_s.unwrap_or(0)
            ),
            _ => String::new(),
        }
    }
}

/// What takeover will start: the set's start-order groups of containers
/// meant to run, and those stopped on purpose (rule 11).
pub fn start_plan(lxcpath: &Path) -> StartPlan {
    intent::plan_start(&intent::members(lxcpath))
}

/// Starts the containers of the set that are meant to run: groups in start
/// order, each group through a bounded worker pool (a free worker takes the
/// next container at once); one failure never stops the others. Each start
/// runs in its own child process. Containers stopped on purpose are
/// reported as `not-started` and left alone.
pub fn start_set(lxcpath: &Path, on_started: &(dyn Fn(&Started) + Sync)) -> Vec<Started> {
    let members = intent::members(lxcpath);
    let intent_of = |name: &str| {
        members
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.intent)
    };
    let plan = intent::plan_start(&members);
    let t_set = Instant::now();
    let mut results = Vec::new();
    for (order, names) in &plan.groups {
        let order = *order;
        let batch = crate::pool::run(
            names,
            START_CONCURRENCY,
            |name| {
                let begin_ms = t_set.elapsed().as_millis() as u64;
                let t0 = Instant::now();
                let mut r = Started::new(name, order, Outcome::Already, intent_of(name));
                if !is_running(lxcpath, name) {
                    match container::start(lxcpath, name, Duration::from_secs(60)) {
                        Ok(()) => r.outcome = Outcome::Started,
                        Err(e) => {
                            r.outcome = Outcome::Failed;
                            r.error = Some(format!("{e:#}"));
                        }
                    }
                }
                r.begin_ms = begin_ms;
                r.ms = t0.elapsed().as_millis() as u64;
                on_started(&r);
                r
            },
            |name| {
                let mut r = Started::new(name, order, Outcome::Failed, intent_of(name));
                r.error = Some("start thread panicked".into());
                r
            },
        );
        results.extend(batch);
    }
    for name in &plan.left_stopped {
        let order = members
            .iter()
            .find(|m| &m.name == name)
            .map_or(crate::template::DEFAULT_START_ORDER, |m| m.order);
        // Running anyway (a plain lxc-start): say so rather than "not started".
        let outcome = if is_running(lxcpath, name) {
            Outcome::Already
        } else {
            Outcome::NotStarted
        };
        let r = Started::new(name, order, outcome, Some(Intent::Stopped));
        on_started(&r);
        results.push(r);
    }
    results
}

/// Reads a container's state through liblxc's command socket (no fork).
/// Runs on a worker thread: the handle is created and dropped there.
pub fn is_running(lxcpath: &Path, name: &str) -> bool {
    lxc_bindings::Container::new(name, lxcpath).is_ok_and(|c| c.is_running())
}

/// Stops every running container of the set in the reverse of the start
/// order (higher `lxc.start.order` first, rule 11); within a group all at
/// once up to `STOP_CONCURRENCY`, each within its own stop timeout (its
/// ctmgr.toml, else its profile, else `default_timeout`). A container that
/// had to be killed is reported `killed`. Intents are not changed.
pub fn stop_set(lxcpath: &Path, default_timeout: Duration) -> Vec<Started> {
    let members = intent::members(lxcpath);
    let t_set = Instant::now();
    let mut results = Vec::new();
    for (order, names) in intent::plan_stop(&members) {
        let intent_of = |name: &str| {
            members
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.intent)
        };
        let batch = crate::pool::run(
            &names,
            STOP_CONCURRENCY,
            |name| {
                let begin_ms = t_set.elapsed().as_millis() as u64;
                let t0 = Instant::now();
                let timeout = intent::stop_timeout(&lxcpath.join(name), default_timeout.as_secs());
                let mut r = Started::new(name, order, Outcome::Already, intent_of(name));
                r.stop_timeout_s = Some(timeout.as_secs());
                if is_running(lxcpath, name) {
                    match container::stop(lxcpath, name, timeout) {
                        Ok(StopOutcome::Already) => {}
                        Ok(StopOutcome::Clean) => r.outcome = Outcome::Stopped,
                        Ok(StopOutcome::Killed) => r.outcome = Outcome::Killed,
                        Err(e) => {
                            r.outcome = Outcome::Failed;
                            r.error = Some(format!("{e:#}"));
                        }
                    }
                }
                r.begin_ms = begin_ms;
                r.ms = t0.elapsed().as_millis() as u64;
                r
            },
            |name| {
                let mut r = Started::new(name, order, Outcome::Failed, intent_of(name));
                r.error = Some("stop thread panicked".into());
                r
            },
        );
        results.extend(batch);
    }
    results
}

/// The container a process belongs to, from its `/proc/PID/cgroup` text:
/// liblxc puts a container's processes under `lxc.payload.NAME`.
pub fn payload_name(cgroup_text: &str) -> Option<String> {
    cgroup_text.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        path.split('/').find_map(|c| {
            c.strip_prefix("lxc.payload.")
                .filter(|n| crate::names::validate("container", n).is_ok())
                .map(str::to_string)
        })
    })
}

/// Processes using files under `dir`: "PID (COMM)" for every process of
/// this mount namespace whose cwd, root, executable or an open file lies
/// there, and "container NAME (PID COMM)" for a process of one of the
/// store's own containers (`own` names; its own mount namespace). Processes
/// of other mount namespaces (the other node in the lab, unrelated
/// containers) see other filesystems under the same paths and are left out.
pub fn holders(dir: &Path, own: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let our_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut containers = std::collections::BTreeSet::new();
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let base = p.path();
        let same_ns = our_ns.is_some() && std::fs::read_link(base.join("ns/mnt")).ok() == our_ns;
        let container = if same_ns {
            None
        } else {
            match std::fs::read_to_string(base.join("cgroup"))
                .ok()
                .as_deref()
                .and_then(payload_name)
            {
                Some(n) if own.contains(&n) => Some(n),
                _ => continue,
            }
        };
        let comm = || {
            std::fs::read_to_string(base.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        if let Some(name) = container {
            // A container's processes hold its rootfs by construction: name
            // the container once, by its first process found.
            if !containers.contains(&name) {
                out.push(format!("container {name} ({pid} {})", comm()));
                containers.insert(name);
            }
            continue;
        }
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
            out.push(format!("{pid} ({})", comm()));
        }
    }
    out
}

/// Processes holding a block device open: an open file descriptor on it
/// (this mount namespace's /dev), or a mount of it in another mount
/// namespace ("PID (COMM) mounts it at PATH", one process per namespace).
/// Names who makes DRBD answer "(-12) Device is held open" to a demote.
pub fn device_holders(device: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let dev = crate::store::canonical_device(device);
    let our_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut seen_ns = std::collections::BTreeSet::new();
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let base = p.path();
        let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
        let has_fd = std::fs::read_dir(base.join("fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|f| std::fs::read_link(f.path()).is_ok_and(|t| t == dev || t == device))
        });
        if has_fd {
            out.push(format!("{pid} ({}) has it open", comm.trim()));
            continue;
        }
        let Ok(ns) = std::fs::read_link(base.join("ns/mnt")) else {
            continue;
        };
        if Some(&ns) == our_ns.as_ref() || !seen_ns.insert(ns) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(base.join("mountinfo")) else {
            continue;
        };
        if let Some(m) = mountinfo::parse(&text)
            .ok()
            .into_iter()
            .flatten()
            .find(|m| {
                crate::store::canonical_device(Path::new(&m.source)) == dev
                    || Path::new(&m.source) == device
            })
        {
            out.push(format!(
                "{pid} ({}) mounts it at {} in another mount namespace",
                comm.trim(),
                m.mountpoint.display()
            ));
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
    fn remote_deadlines_never_overflow() {
        assert_eq!(
            remote_release_deadline(30),
            Duration::from_secs(1800 + 4 * 300 + 120)
        );
        assert_eq!(
            remote_release_deadline(1000),
            Duration::from_secs(1800 + 4000 + 120)
        );
        assert_eq!(
            remote_release_deadline(u64::MAX),
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn payload_name_from_cgroup() {
        // cgroup v2 (one line) and v1 (several) as liblxc 5 lays them out.
        assert_eq!(
            payload_name("0::/lxc.payload.web/init.scope\n").as_deref(),
            Some("web")
        );
        assert_eq!(
            payload_name("12:pids:/lxc.payload.db\n11:memory:/lxc.payload.db\n").as_deref(),
            Some("db")
        );
        assert_eq!(payload_name("0::/lxc.monitor.web\n"), None);
        assert_eq!(payload_name("0::/user.slice/session-1.scope\n"), None);
        assert_eq!(payload_name("0::/lxc.payload.../x\n"), None);
    }

    #[test]
    fn holders_finds_this_process_cwd() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join("x")).unwrap();
        let h = holders(d.path(), &[]);
        assert!(
            h.iter()
                .any(|p| p.starts_with(&format!("{} ", std::process::id()))),
            "{h:?}"
        );
        drop(f);
    }
}
