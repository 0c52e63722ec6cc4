//! Replicas of container configs on the peer (DESIGN.md §1 "replica", §4
//! rules 3, 5 and 7): `ctmgr sync` pushes `config` and `fstab` of every
//! container of the stores held here into the peer's replica dir, so the
//! peer can `lxc-start -n NAME` them after a failover.
//!
//! One ssh session carries the whole run: `ssh … PEER -- ctmgr
//! __sync-receive`, speaking the framed protocol of [`protocol`] over its
//! stdin/stdout. The receiver ([`receiver`]) decides from its own
//! cluster.toml and mount table and writes each file atomically. What was
//! pushed is remembered here, node-local ([`state`]), so a replica changed on
//! the peer since the last push is reported as drift and not overwritten
//! without `--force` (rule 5).
//!
//! Everything is bounded in time: ssh gets `ConnectTimeout=5` and server
//! alive probes, and a watchdog kills the session at its deadline. This
//! module never follows a symlink out of a container directory, never writes
//! on this node outside the state dir, and never runs a shell.

pub mod diff;
pub mod protocol;
pub mod receiver;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{Config, Store};
use crate::exit::ExitStatus;
use crate::mountinfo::Mount;
use crate::runner::{Cmd, KillOnDrop, RunError, SystemRunner};
use crate::store::StoreHere;

pub use protocol::SyncFile;
use protocol::{Outcome, ProtocolError, Reply, Request};
pub use receiver::{receive, Receiver};
use state::{AckLog, StoreState};

/// The hidden subcommand the peer runs.
pub const RECEIVE_COMMAND: &str = "__sync-receive";
/// Deadline of a session: this much, plus [`TIMEOUT_PER_FILE`] per file.
pub const BASE_TIMEOUT: Duration = Duration::from_secs(60);
pub const TIMEOUT_PER_FILE: Duration = Duration::from_secs(2);
/// How long a second sync of the same store waits for the first.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How long ssh gets to exit after the session ended.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Most of ssh's stderr kept for messages.
const STDERR_LIMIT: u64 = 64 * 1024;

/// Errors of a sync run.
#[derive(Debug, Error)]
pub enum SyncError {
    #[error("no container {name} on the stores held here ({held}); see `ctmgr list`")]
    UnknownContainer { name: String, held: String },
    #[error("bad container name")]
    Name(#[from] crate::names::NameError),
    #[error("cannot read the sync state {}", path.display())]
    StateRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sync state {} is unreadable; move it away to start afresh (the next push then reports every replica that differs as drift)", path.display())]
    StateParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("sync state {} is {what}, not this store's; move it away to start afresh", path.display())]
    StateMismatch { path: PathBuf, what: String },
    #[error("cannot write the sync state {}", path.display())]
    StateWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another sync of store {store} is running")]
    Lock {
        store: String,
        #[source]
        source: crate::lock::LockError,
    },
    #[error("config path {} cannot be passed to the peer's ctmgr over ssh (use only letters, digits and _.,/+@:-)", .0.display())]
    RemoteConfigPath(PathBuf),
    #[error("cannot start the sync session")]
    Spawn(#[source] RunError),
    #[error("the sync session with {peer} ({target}) did not finish within {secs} s and was stopped; is the peer overloaded, or the link flapping?")]
    Timeout {
        peer: String,
        target: String,
        secs: u64,
    },
    #[error("the sync session with {peer} ({target}) failed{detail}")]
    Peer {
        peer: String,
        target: String,
        /// ssh's exit code and stderr, formatted for the message.
        detail: String,
        #[source]
        source: ProtocolError,
    },
    #[error("{peer} refused the sync session: {message}")]
    Rejected { peer: String, message: String },
    #[error("unexpected answer from {peer}: {what}")]
    Unexpected { peer: String, what: String },
    #[error("sync protocol error")]
    Protocol(#[from] ProtocolError),
    #[error("cannot read this node's configuration")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot read the mount table")]
    Mounts(#[source] std::io::Error),
}

/// Why a file is not read: the container directory is never left through a
/// symlink, and only regular files are replicated.
#[derive(Debug)]
pub enum FileProblem {
    Symlink,
    NotRegular,
    Io(std::io::Error),
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileProblem::Symlink => f.write_str("is a symlink; not followed"),
            FileProblem::NotRegular => f.write_str("is not a regular file"),
            FileProblem::Io(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

/// Reads a regular file without following a symlink: `Ok(None)` when it does
/// not exist; otherwise its bytes and permission bits.
pub fn read_regular(path: &Path) -> Result<Option<(Vec<u8>, u32)>, FileProblem> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileProblem::Io(e)),
        Ok(m) if m.file_type().is_symlink() => return Err(FileProblem::Symlink),
        Ok(m) if !m.is_file() => return Err(FileProblem::NotRegular),
        Ok(_) => {}
    }
    // O_NOFOLLOW: a symlink swapped in since the check fails with ELOOP;
    // O_NONBLOCK: a FIFO swapped in cannot block the open.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => FileProblem::Symlink,
            _ => FileProblem::Io(e),
        })?;
    let meta = f.metadata().map_err(FileProblem::Io)?;
    if !meta.is_file() {
        return Err(FileProblem::NotRegular);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).map_err(FileProblem::Io)?;
    Ok(Some((bytes, meta.permissions().mode() & 0o777)))
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Push replicas, or only compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Push,
    Check,
}

/// What happened to one replica file (or a whole container or store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Push: written on the peer.
    Written,
    /// Push with `--force`: written over a replica that had drifted.
    Forced,
    /// Push: the peer already had this content.
    Unchanged,
    /// Check: the peer has the same content as here.
    InSync,
    /// Check: changed here since the last push; the next push writes it.
    Stale,
    /// Check: no replica on the peer; the next push writes it.
    Missing,
    /// The replica changed on the peer since the last push; left alone.
    Drift,
    /// The replica of a container destroyed here was removed.
    Removed,
    /// A replica on the peer of a container that is not here any more.
    Orphaned,
    /// Not done for safety; the detail says why.
    Refused,
    /// Could not be done (a local file unreadable…).
    Failed,
    /// Nothing to do (no fstab here).
    Skipped,
}

impl Status {
    /// The word shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Written => "written",
            Status::Forced => "written over drift",
            Status::Unchanged => "unchanged",
            Status::InSync => "in sync",
            Status::Stale => "stale",
            Status::Missing => "missing",
            Status::Drift => "drift",
            Status::Removed => "removed",
            Status::Orphaned => "orphaned",
            Status::Refused => "refused",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }

    pub fn is_problem(self) -> bool {
        matches!(self, Status::Drift | Status::Refused | Status::Failed)
    }

    fn is_change(self) -> bool {
        matches!(self, Status::Written | Status::Forced | Status::Removed)
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub store: String,
    /// `*` for a row about the whole store.
    pub container: String,
    /// `None` for a row about a whole container or store.
    pub file: Option<SyncFile>,
    pub status: Status,
    pub detail: Option<String>,
    /// For drift: how the peer's file differs from what was last pushed.
    pub diff: Option<String>,
}

impl Row {
    /// `status` and `detail` as one phrase: `refused: …`.
    pub fn outcome(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.status.as_str()),
            None => self.status.as_str().to_string(),
        }
    }
}

/// The result of a sync run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// The peer's node name; `None` in a single-node cluster.
    pub peer: Option<String>,
    pub rows: Vec<Row>,
    /// Why stores were left out, and similar remarks.
    pub notes: Vec<String>,
}

impl Report {
    fn empty(mode: Mode, peer: Option<String>, notes: Vec<String>) -> Report {
        Report {
            mode,
            peer,
            rows: Vec::new(),
            notes,
        }
    }

    /// Any replica that drifted on the peer?
    pub fn drift(&self) -> bool {
        self.rows.iter().any(|r| r.status == Status::Drift)
    }

    /// 0 when all is well. `--check`: 1 on drift or on anything it could not
    /// check. Push: 3 when only refusals and drift kept it from doing
    /// anything (nothing was changed), else 1 when anything went wrong.
    pub fn exit_status(&self) -> ExitStatus {
        let problems: Vec<Status> = self
            .rows
            .iter()
            .map(|r| r.status)
            .filter(|s| s.is_problem())
            .collect();
        if problems.is_empty() {
            return ExitStatus::Done;
        }
        let changed = self.rows.iter().any(|r| r.status.is_change());
        match self.mode {
            Mode::Check => ExitStatus::Failed,
            Mode::Push if !changed && !problems.contains(&Status::Failed) => ExitStatus::Refused,
            Mode::Push => ExitStatus::Failed,
        }
    }
}

/// What to sync for one store, with its state (loaded under the sync lock).
#[derive(Debug)]
pub struct StorePlan<'c> {
    pub store: &'c Store,
    /// Its containers here (own ones, not replicas), limited to the names asked.
    pub containers: Vec<String>,
    /// The names asked for, if any: orphans outside them are left alone.
    pub only: Option<BTreeSet<String>>,
    pub state: StoreState,
    /// Where the session records each acknowledgement as it arrives.
    pub log: AckLog,
}

impl StorePlan<'_> {
    fn file_count(&self) -> usize {
        self.containers.len() * SyncFile::ALL.len()
            + self.state.containers.len()
            + self.state.pending.len()
    }
}

/// Chooses the stores to sync: those held here whose replicas have a
/// place on the peer. Returns them, and notes on the ones left out.
pub fn stores_to_sync<'c>(
    config: &'c Config,
    here: &[StoreHere<'c>],
) -> (Vec<&'c Store>, Vec<String>) {
    let mut chosen = Vec::new();
    let mut notes = Vec::new();
    for s in here.iter().filter(|s| s.held()) {
        let Some(dir) = config.replica_dir(s.store) else {
            notes.push(format!(
                "store {}: no replica_dir, and the peer homes no store; nothing to sync",
                s.store.name
            ));
            continue;
        };
        // A replica dir on a store held here cannot be mounted on the peer
        // (we are failed over): there is no place for replicas right now.
        if let Some(host) = here
            .iter()
            .filter(|h| h.held() && dir.starts_with(&h.store.mountpoint))
            .max_by_key(|h| h.store.mountpoint.components().count())
        {
            notes.push(format!(
                "store {}: its replicas go to {}, on store {} which is held here, not on the peer; no replicas while failed over",
                s.store.name,
                dir.display(),
                host.store.name
            ));
            continue;
        }
        chosen.push(s.store);
    }
    if here.iter().all(|s| !s.held()) {
        notes.push("no store is held here; nothing to sync".to_string());
    }
    (chosen, notes)
}

/// Plans a sync of `stores` (held here), limited to `names` when given.
/// A name that is neither a container here nor a replica recorded in the
/// sync state (a container destroyed here) is an error.
pub fn plan<'c>(
    stores: &[&'c Store],
    names: &[String],
    state_dir: &Path,
) -> Result<Vec<StorePlan<'c>>, SyncError> {
    for n in names {
        crate::names::validate("container", n)?;
    }
    let only: Option<BTreeSet<String>> =
        (!names.is_empty()).then(|| names.iter().cloned().collect());
    let mut plans = Vec::new();
    let mut known = BTreeSet::new();
    for store in stores {
        let state = StoreState::load(state_dir, &store.name)?;
        let mut containers = crate::container::own_names(&store.lxcpath());
        known.extend(containers.iter().cloned());
        known.extend(state.containers.keys().cloned());
        known.extend(state.pending.keys().cloned());
        if let Some(only) = &only {
            containers.retain(|c| only.contains(c));
        }
        plans.push(StorePlan {
            store,
            containers,
            only: only.clone(),
            state,
            log: AckLog::new(state_dir, &store.name),
        });
    }
    if let Some(missing) = names.iter().find(|n| !known.contains(*n)) {
        let held: Vec<&str> = stores.iter().map(|s| s.name.as_str()).collect();
        return Err(SyncError::UnknownContainer {
            name: missing.clone(),
            held: if held.is_empty() {
                "none held".to_string()
            } else {
                held.join(", ")
            },
        });
    }
    Ok(plans)
}

/// Who is talking to whom, for the hello and for messages.
#[derive(Debug, Clone)]
pub struct Parties<'a> {
    pub cluster: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// The peer's ssh destination (for messages).
    pub target: &'a str,
    /// Where this node's sync state lives.
    pub state_dir: &'a Path,
    /// The peer's replica dir per store (from our config), for labels.
    pub replica_dirs: BTreeMap<String, PathBuf>,
}

struct Conversation<'a, R, W> {
    input: &'a mut R,
    output: &'a mut W,
    peer: &'a str,
}

impl<R: Read, W: Write> Conversation<'_, R, W> {
    fn call(&mut self, req: &Request, payload: &[u8]) -> Result<(Reply, Vec<u8>), SyncError> {
        protocol::write_frame(self.output, req, payload)?;
        match protocol::read_frame::<_, Reply>(self.input)? {
            Some(frame) => match frame.header {
                Reply::Error { message } => Err(SyncError::Rejected {
                    peer: self.peer.to_string(),
                    message,
                }),
                header => Ok((header, frame.payload)),
            },
            None => Err(ProtocolError::Closed.into()),
        }
    }

    fn unexpected(&self, reply: &Reply) -> SyncError {
        SyncError::Unexpected {
            peer: self.peer.to_string(),
            what: format!("{reply:?}"),
        }
    }
}

/// Runs the whole session over any transport: hello, then per store the
/// replica list, every file, the orphans; then bye. Rows are appended as
/// they happen and each plan's state is updated, so a session cut halfway
/// still records what was done.
pub fn converse<R: Read, W: Write>(
    parties: &Parties<'_>,
    plans: &mut [StorePlan<'_>],
    mode: Mode,
    force: bool,
    input: &mut R,
    output: &mut W,
    rows: &mut Vec<Row>,
) -> Result<(), SyncError> {
    let mut conv = Conversation {
        input,
        output,
        peer: parties.to,
    };
    let hello = Request::Hello {
        version: protocol::VERSION,
        cluster: parties.cluster.to_string(),
        from: parties.from.to_string(),
        to: parties.to.to_string(),
    };
    match conv.call(&hello, b"")? {
        (Reply::Hello { node, .. }, _) => {
            if let Some(node) = node.filter(|n| n != parties.to) {
                return Err(SyncError::Unexpected {
                    peer: parties.to.to_string(),
                    what: format!("the ssh target answered as node {node}"),
                });
            }
        }
        (other, _) => return Err(conv.unexpected(&other)),
    }
    for plan in plans.iter_mut() {
        sync_store(parties, plan, mode, force, &mut conv, rows)?;
    }
    protocol::write_frame(conv.output, &Request::Bye, b"")?;
    Ok(())
}

fn row(
    store: &str,
    container: &str,
    file: Option<SyncFile>,
    status: Status,
    detail: Option<String>,
) -> Row {
    Row {
        store: store.to_string(),
        container: container.to_string(),
        file,
        status,
        detail,
        diff: None,
    }
}

fn sync_store<R: Read, W: Write>(
    parties: &Parties<'_>,
    plan: &mut StorePlan<'_>,
    mode: Mode,
    force: bool,
    conv: &mut Conversation<'_, R, W>,
    rows: &mut Vec<Row>,
) -> Result<(), SyncError> {
    let store = plan.store.name.clone();
    let on_peer = match conv.call(
        &Request::List {
            store: store.clone(),
        },
        b"",
    )? {
        (Reply::Names { names }, _) => names,
        (
            Reply::Outcome {
                outcome: Outcome::Refused { reason },
                ..
            },
            _,
        ) => {
            // The same reason would refuse every file of the store.
            rows.push(row(&store, "*", None, Status::Refused, Some(reason)));
            return Ok(());
        }
        (other, _) => return Err(conv.unexpected(&other)),
    };
    for name in plan.containers.clone() {
        // Never give the peer a config it could start without ctmgr's guard
        // (issue 10, D8): judged as liblxc sees it, after includes.
        if mode == Mode::Push {
            let problems = crate::reserved::problems_with(&plan.store.lxcpath(), &name, &|_| true);
            if !problems.is_empty() {
                rows.push(row(
                    &store,
                    &name,
                    None,
                    Status::Refused,
                    Some(format!(
                        "not pushed: {}; then run `ctmgr sync` again (`ctmgr doctor` shows the same)",
                        crate::reserved::describe(&name, &problems)
                    )),
                ));
                continue;
            }
        }
        for file in SyncFile::ALL {
            let r = sync_file(parties, plan, &name, file, mode, force, conv)?;
            rows.push(r);
        }
    }
    // Replicas on the peer, or recorded here, of containers not here any more.
    let here: BTreeSet<String> = crate::container::own_names(&plan.store.lxcpath())
        .into_iter()
        .collect();
    let mut orphans: BTreeSet<String> = on_peer.iter().cloned().collect();
    orphans.extend(plan.state.containers.keys().cloned());
    orphans.extend(plan.state.pending.keys().cloned());
    orphans.retain(|n| !here.contains(n) && plan.only.as_ref().is_none_or(|o| o.contains(n)));
    for name in orphans {
        // Pushed from here, acknowledged or not (a killed session).
        let recorded = plan.state.knows(&name);
        let listed = on_peer.contains(&name);
        if mode == Mode::Check || (!recorded && !force) {
            if !listed {
                continue; // only in our state: the next push forgets it
            }
            let detail = if recorded {
                format!("replica of a container no longer on {store} here; `ctmgr sync` removes it")
            } else {
                format!("replica of a container not on {store} here, never pushed from this node; check it on {} and remove it there, or run `ctmgr sync --force` (which also overwrites drifted replicas)", parties.to)
            };
            rows.push(row(&store, &name, None, Status::Orphaned, Some(detail)));
            continue;
        }
        let mut expected: BTreeMap<SyncFile, String> = SyncFile::ALL
            .iter()
            .filter_map(|f| plan.state.hash(&name, *f).map(|h| (*f, h.to_string())))
            .collect();
        // A file the peer holds in a content sent from here whose
        // acknowledgement never arrived is ours: ask again expecting it
        // (once per file at most).
        let mut tries = 0;
        let answer = loop {
            let req = Request::Remove {
                store: store.clone(),
                name: name.clone(),
                expected: expected.clone(),
                force,
            };
            let answer = conv.call(&req, b"")?;
            if let (
                Reply::Outcome {
                    outcome: Outcome::Drift,
                    current: Some(cur),
                    ..
                },
                _,
            ) = &answer
            {
                let ours: Vec<SyncFile> = SyncFile::ALL
                    .into_iter()
                    .filter(|f| {
                        expected.get(f) != Some(cur)
                            && plan
                                .state
                                .pending(&name, *f)
                                .is_some_and(|p| p.contains(cur))
                    })
                    .collect();
                if !ours.is_empty() && tries < SyncFile::ALL.len() {
                    tries += 1;
                    for f in ours {
                        expected.insert(f, cur.clone());
                    }
                    continue;
                }
            }
            break answer;
        };
        match answer {
            (
                Reply::Outcome {
                    outcome: Outcome::Removed,
                    detail,
                    ..
                },
                _,
            ) => {
                plan.state.forget(parties.state_dir, &mut plan.log, &name)?;
                rows.push(row(&store, &name, None, Status::Removed, detail));
            }
            (
                Reply::Outcome {
                    outcome: Outcome::Missing,
                    ..
                },
                _,
            ) => {
                plan.state.forget(parties.state_dir, &mut plan.log, &name)?;
            }
            (
                Reply::Outcome {
                    outcome: Outcome::Drift,
                    ..
                },
                _,
            ) => {
                rows.push(row(
                    &store,
                    &name,
                    None,
                    Status::Drift,
                    Some(format!("the replica of a container destroyed here changed on {} since the last push; not removed (--force removes it)", parties.to)),
                ));
            }
            (
                Reply::Outcome {
                    outcome: Outcome::Refused { reason },
                    ..
                },
                _,
            ) => {
                rows.push(row(&store, &name, None, Status::Refused, Some(reason)));
            }
            (other, _) => return Err(conv.unexpected(&other)),
        }
    }
    Ok(())
}

/// The diff of the peer's current file against what was last pushed (or,
/// when no copy was kept, against the file here).
fn drift_diff(
    parties: &Parties<'_>,
    plan: &StorePlan<'_>,
    name: &str,
    file: SyncFile,
    local: &[u8],
    current: &[u8],
) -> String {
    let peer_path = parties
        .replica_dirs
        .get(&plan.store.name)
        .map(|d| d.join(name).join(file.as_str()).display().to_string())
        .unwrap_or_else(|| format!("{name}/{file}"));
    let new_label = format!("{}:{peer_path} (now)", parties.to);
    match plan.state.pushed_copy(parties.state_dir, name, file) {
        Some(pushed) => diff::unified(
            &pushed,
            current,
            &format!("{file} as last pushed"),
            &new_label,
        ),
        None => diff::unified(local, current, &format!("{file} here"), &new_label),
    }
}

#[allow(clippy::too_many_arguments)]
fn sync_file<R: Read, W: Write>(
    parties: &Parties<'_>,
    plan: &mut StorePlan<'_>,
    name: &str,
    file: SyncFile,
    mode: Mode,
    force: bool,
    conv: &mut Conversation<'_, R, W>,
) -> Result<Row, SyncError> {
    let store = plan.store.name.clone();
    let path = plan.store.lxcpath().join(name).join(file.as_str());
    let mk = |status, detail: Option<String>| row(&store, name, Some(file), status, detail);
    let (local, perm) = match read_regular(&path) {
        Ok(Some(x)) => x,
        Ok(None) if file == SyncFile::Fstab => {
            return Ok(mk(Status::Skipped, Some("no fstab here".to_string())))
        }
        Ok(None) => {
            return Ok(mk(
                Status::Failed,
                Some(format!("{} vanished", path.display())),
            ))
        }
        Err(FileProblem::Io(e)) => {
            return Ok(mk(
                Status::Failed,
                Some(format!("{} cannot be read: {e}", path.display())),
            ))
        }
        Err(problem) => {
            return Ok(mk(
                Status::Refused,
                Some(format!("{} {problem}", path.display())),
            ))
        }
    };
    let local_hash = sha256_hex(&local);
    let last = plan.state.hash(name, file).map(str::to_string);
    match mode {
        Mode::Push => {
            // Logged before the request goes out: if this session dies
            // before the answer arrives, the next one knows the peer may
            // hold this content, and that it is ours (issue 10, D11).
            // (Not needed when it is the content recorded already: then
            // an unchanged file costs no write here at all.)
            if last.as_deref() != Some(local_hash.as_str()) {
                plan.state.sending(&mut plan.log, name, file, &local_hash)?;
            }
            let mut expected = last.clone();
            let mut retried = false;
            let (outcome, detail, current, payload) = loop {
                let req = Request::Push {
                    store: store.clone(),
                    name: name.to_string(),
                    file,
                    expected: expected.clone(),
                    mode: perm,
                    force,
                };
                let (reply, payload) = conv.call(&req, &local)?;
                let Reply::Outcome {
                    outcome,
                    detail,
                    current,
                } = reply
                else {
                    return Err(conv.unexpected(&reply));
                };
                // The replica holds a content sent from here whose
                // acknowledgement never arrived: ours, not drift; push
                // again expecting it.
                if let (Outcome::Drift, Some(cur), false) = (&outcome, &current, retried) {
                    if expected.as_deref() != Some(cur.as_str()) && plan.state.sent(name, file, cur)
                    {
                        expected = Some(cur.clone());
                        retried = true;
                        continue;
                    }
                }
                break (outcome, detail, current, payload);
            };
            Ok(match outcome {
                Outcome::Written { over_drift } => {
                    plan.state
                        .record(parties.state_dir, &mut plan.log, name, file, &local)?;
                    mk(
                        if over_drift {
                            Status::Forced
                        } else {
                            Status::Written
                        },
                        detail,
                    )
                }
                Outcome::Unchanged => {
                    if last.as_deref() != Some(local_hash.as_str()) {
                        plan.state
                            .record(parties.state_dir, &mut plan.log, name, file, &local)?;
                    } else {
                        // The peer holds what is recorded: nothing else
                        // sent is there.
                        plan.state.settle(&mut plan.log, name, file)?;
                    }
                    mk(Status::Unchanged, detail)
                }
                Outcome::Drift => {
                    // Nothing sent from here is on the peer any more.
                    if current
                        .as_deref()
                        .is_some_and(|c| !plan.state.sent(name, file, c))
                    {
                        plan.state.settle(&mut plan.log, name, file)?;
                    }
                    let why = if last.is_some() {
                        format!("changed on {} since the last push; not overwritten (--force overwrites)", parties.to)
                    } else {
                        format!("the replica on {} differs and was never pushed from here; not overwritten (--force overwrites)", parties.to)
                    };
                    let mut r = mk(Status::Drift, Some(why));
                    r.diff = Some(drift_diff(parties, plan, name, file, &local, &payload));
                    r
                }
                Outcome::Refused { reason } => mk(Status::Refused, Some(reason)),
                other => {
                    return Err(SyncError::Unexpected {
                        peer: parties.to.to_string(),
                        what: format!("{other:?} for a push"),
                    })
                }
            })
        }
        Mode::Check => {
            let req = Request::Query {
                store: store.clone(),
                name: name.to_string(),
                file,
            };
            let (reply, payload) = conv.call(&req, b"")?;
            let Reply::Outcome {
                outcome, current, ..
            } = reply
            else {
                return Err(conv.unexpected(&reply));
            };
            Ok(match outcome {
                Outcome::Present if current.as_deref() == Some(local_hash.as_str()) => {
                    mk(Status::InSync, None)
                }
                Outcome::Present
                    if current
                        .as_deref()
                        .is_some_and(|c| plan.state.sent(name, file, c)) =>
                {
                    mk(
                        Status::Stale,
                        Some(
                            "changed here since the last push; `ctmgr sync` pushes it".to_string(),
                        ),
                    )
                }
                Outcome::Present => {
                    let why = if last.is_some() {
                        format!("changed on {} since the last push", parties.to)
                    } else {
                        format!("differs on {} and was never pushed from here", parties.to)
                    };
                    let mut r = mk(Status::Drift, Some(why));
                    r.diff = Some(drift_diff(parties, plan, name, file, &local, &payload));
                    r
                }
                Outcome::Missing => mk(
                    Status::Missing,
                    Some(format!("no replica on {}", parties.to)),
                ),
                Outcome::Refused { reason } => mk(Status::Refused, Some(reason)),
                other => {
                    return Err(SyncError::Unexpected {
                        peer: parties.to.to_string(),
                        what: format!("{other:?} for a query"),
                    })
                }
            })
        }
    }
}

// ---------------------------------------------------------------------------
// The ssh session

/// Kills the session when its deadline passes.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn arm(pid: u32, deadline: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                flag.store(true, Ordering::SeqCst);
                // The child is not reaped before the watchdog is disarmed
                // (see `PeerLink::finish`), so this pid is still ours.
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        });
        Watchdog {
            cancel: Some(tx),
            thread: Some(thread),
            fired,
        }
    }

    /// Stops the watchdog (waits for its thread); true when it had fired.
    fn disarm(&mut self) -> bool {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

/// How a session's child ended.
#[derive(Debug, Default)]
pub struct LinkEnd {
    pub timed_out: bool,
    pub code: Option<i32>,
    pub stderr: String,
}

/// A child process (ssh) whose stdin/stdout carry the protocol, killed at
/// its deadline and on drop.
pub struct PeerLink {
    child: KillOnDrop,
    pub stdin: Option<ChildStdin>,
    pub stdout: ChildStdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
    watchdog: Watchdog,
    started: Instant,
    deadline: Duration,
}

impl PeerLink {
    /// Starts `cmd`; the session may last `cmd.timeout` in all.
    pub fn open(runner: &SystemRunner, cmd: &Cmd) -> Result<PeerLink, SyncError> {
        let mut child = runner.spawn_piped(cmd).map_err(SyncError::Spawn)?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let child = KillOnDrop(child);
        let Some(stdout) = stdout else {
            return Err(SyncError::Spawn(RunError::Spawn {
                line: cmd.display(),
                source: std::io::Error::other("no stdout pipe"),
            }));
        };
        let stderr = stderr.map(|e: ChildStderr| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut e = e;
                let _ = (&mut e).take(STDERR_LIMIT).read_to_end(&mut kept);
                let _ = std::io::copy(&mut e, &mut std::io::sink());
                kept
            })
        });
        Ok(PeerLink {
            child,
            stdin,
            stdout,
            stderr,
            watchdog: Watchdog::arm(pid, cmd.timeout),
            started: Instant::now(),
            deadline: cmd.timeout,
        })
    }

    /// Ends the session: closes stdin, disarms the watchdog, gives the child
    /// a bounded time to exit (then kills it) and collects its stderr.
    pub fn finish(mut self) -> LinkEnd {
        drop(self.stdin.take());
        let timed_out = self.watchdog.disarm();
        let grace = self
            .deadline
            .saturating_sub(self.started.elapsed())
            .clamp(Duration::from_millis(100), EXIT_GRACE);
        let until = Instant::now() + grace;
        let code = loop {
            match self.child.0.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.0.kill();
                    break self.child.0.wait().ok().and_then(|s| s.code());
                }
            }
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        LinkEnd {
            timed_out,
            code,
            stderr,
        }
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        // Disarm before the child is reaped (KillOnDrop runs after this).
        self.watchdog.disarm();
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// Only these containers (empty: all on the stores held here).
    pub names: &'a [String],
    pub mode: Mode,
    /// Overwrite (or remove) replicas that drifted on the peer.
    pub force: bool,
    /// Overrides the session deadline (tests).
    pub timeout: Option<Duration>,
}

/// The argv the peer runs.
pub fn remote_argv(config: &Config) -> Result<Vec<String>, SyncError> {
    let mut argv = vec!["ctmgr".to_string()];
    if config.path != Path::new(crate::config::DEFAULT_PATH) {
        // The remote side of ssh hands the command line to a shell.
        let ok = config.path.to_str().is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.,/+@:-".contains(c))
        });
        if !ok {
            return Err(SyncError::RemoteConfigPath(config.path.clone()));
        }
        argv.extend(["--config".to_string(), config.path.display().to_string()]);
    }
    argv.push(RECEIVE_COMMAND.to_string());
    Ok(argv)
}

/// `ctmgr sync`: pushes (or checks) the replicas of the containers of the
/// stores held by `node`, over one ssh session to its peer.
pub fn run_sync(
    config: &Config,
    node: &str,
    runner: &SystemRunner,
    mounts: &[Mount],
    opts: &Options<'_>,
) -> Result<Report, SyncError> {
    let Some(peer) = config.peer_of(node) else {
        return Ok(Report::empty(
            opts.mode,
            None,
            vec!["single-node cluster: there is no peer to keep replicas on".to_string()],
        ));
    };
    let here = crate::store::survey(config, runner, mounts);
    let (stores, notes) = stores_to_sync(config, &here);
    if stores.is_empty() {
        if let Some(n) = opts.names.first() {
            crate::names::validate("container", n)?;
            return Err(SyncError::UnknownContainer {
                name: n.clone(),
                held: "none held with a replica dir on the peer".to_string(),
            });
        }
        return Ok(Report::empty(opts.mode, Some(peer.name.clone()), notes));
    }
    // One sync per store at a time, so the state file sees every push.
    let mut locks = Vec::new();
    for s in &stores {
        let key = format!("{}.sync", s.name);
        let lock = crate::lock::lock_store(&key, crate::lock::Wait::Upto(LOCK_WAIT), &|holder| {
            tracing::warn!("store {} is being synced by {holder}; waiting", s.name)
        })
        .map_err(|source| SyncError::Lock {
            store: s.name.clone(),
            source,
        })?;
        locks.push(lock);
    }
    let state_dir = crate::journal::state_dir();
    let mut plans = plan(&stores, opts.names, &state_dir)?;
    for p in &mut plans {
        p.state.peer = peer.name.clone();
    }
    let files: usize = plans.iter().map(StorePlan::file_count).sum();
    let timeout = opts.timeout.unwrap_or(
        BASE_TIMEOUT + TIMEOUT_PER_FILE * u32::try_from(files).unwrap_or(u32::MAX / 4).min(1000),
    );
    let argv = remote_argv(config)?;
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let cmd = crate::takeover::ssh_cmd("ssh", &peer.ssh, &argv_ref, timeout);
    let parties = Parties {
        cluster: &config.cluster.name,
        from: node,
        to: &peer.name,
        target: &peer.ssh,
        state_dir: &state_dir,
        replica_dirs: stores
            .iter()
            .filter_map(|s| config.replica_dir(s).map(|d| (s.name.clone(), d)))
            .collect(),
    };
    let mut rows = Vec::new();
    let result = session(runner, &cmd, &parties, &mut plans, opts, &mut rows);
    if opts.mode == Mode::Push {
        // Every acknowledgement is in the log already; fold it into the
        // state file, also when the session broke off.
        for p in &plans {
            if let Err(e) = p.state.compact(&state_dir) {
                if result.is_ok() {
                    return Err(e);
                }
                tracing::error!("{e}");
            }
        }
    }
    drop(locks);
    result?;
    Ok(Report {
        mode: opts.mode,
        peer: Some(peer.name.clone()),
        rows,
        notes,
    })
}

/// Runs [`converse`] over an ssh session and turns a broken session into
/// an error that says what ssh said.
pub fn session(
    runner: &SystemRunner,
    cmd: &Cmd,
    parties: &Parties<'_>,
    plans: &mut [StorePlan<'_>],
    opts: &Options<'_>,
    rows: &mut Vec<Row>,
) -> Result<(), SyncError> {
    let target = parties.target.to_string();
    let mut link = PeerLink::open(runner, cmd)?;
    let result = match link.stdin.take() {
        Some(mut stdin) => {
            let r = converse(
                parties,
                plans,
                opts.mode,
                opts.force,
                &mut link.stdout,
                &mut stdin,
                rows,
            );
            drop(stdin);
            r
        }
        None => Err(ProtocolError::Closed.into()),
    };
    let end = link.finish();
    if end.timed_out {
        return Err(SyncError::Timeout {
            peer: parties.to.to_string(),
            target,
            secs: cmd.timeout.as_secs(),
        });
    }
    match result {
        Err(SyncError::Protocol(source)) => {
            let mut detail = String::new();
            if let Some(code) = end.code {
                detail.push_str(&format!(" ({} exited with code {code})", cmd.program));
            }
            if !end.stderr.is_empty() {
                let tail: Vec<&str> = end.stderr.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                detail.push_str(": ");
                detail.push_str(&tail.join(" / "));
            }
            Err(SyncError::Peer {
                peer: parties.to.to_string(),
                target,
                detail,
                source,
            })
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
