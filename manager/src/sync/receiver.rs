//! The peer's side of `ctmgr sync`: `ctmgr __sync-receive`, run over ssh.
//!
//! The receiver trusts nothing in a request but the store name, the
//! container name and the bytes: where a replica goes comes from its OWN
//! cluster.toml (`replica_dir`) and its OWN mount table. [`Receiver::decide`]
//! turns one request into an [`Action`] after every check (reading files,
//! writing nothing); [`Receiver::apply`] carries the action out. It refuses:
//! - a replica dir on a store that is not mounted here (files written into a
//!   bare mountpoint vanish under the next mount of the store);
//! - a missing replica dir, or a symlink anywhere it would write;
//! - a target directory that is another container (one of this node's own
//!   containers with that name, or any config whose rootfs is not the
//!   pushed container's);
//! - a replica changed here since the sender last pushed it (drift), unless
//!   the sender says `--force`;
//! - a pushed config a plain `lxc-start` could run without ctmgr's guard
//!   (no `ctmgr-guard` pre-start hook for its store, one cleared later in
//!   the file, a foreign `lxc.include` …: [`text_view`] judged by
//!   [`crate::reserved::judge`], as the sender judges liblxc's view);
//! - removing a replica that is running here.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::protocol::{self, Outcome, Reply, Request, SyncFile, VERSION};
use super::{read_regular, sha256_hex, SyncError};
use crate::config::{Config, Store};
use crate::container::rootfs_of;
use crate::fsutil::write_atomic;
use crate::mountinfo::{self, Mount};
use crate::store::mount_is_store;

/// Tells whether a container is running: (name, lxcpath) → running?
pub type RunningCheck<'a> = &'a dyn Fn(&str, &Path) -> Result<bool, String>;

/// Everything the receiver decides from: its own config and mounts.
pub struct Receiver<'a> {
    pub config: &'a Config,
    pub mounts: &'a [Mount],
    /// This node's name, when it could be resolved.
    pub node: Option<&'a str>,
    pub is_running: RunningCheck<'a>,
}

/// What to do for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reply without touching anything.
    Reply {
        outcome: Outcome,
        current: Option<String>,
        payload: Vec<u8>,
    },
    /// Write `dir/file` atomically (creating `dir` first when `create_dir`).
    Write {
        dir: PathBuf,
        create_dir: bool,
        path: PathBuf,
        bytes: Vec<u8>,
        mode: u32,
        over_drift: bool,
    },
    /// Remove these files, then `dir` if nothing else is left in it.
    Remove { dir: PathBuf, files: Vec<PathBuf> },
    /// Answer a `List`.
    Names(Vec<String>),
}

fn refused(reason: impl Into<String>) -> Action {
    Action::Reply {
        outcome: Outcome::Refused {
            reason: reason.into(),
        },
        current: None,
        payload: Vec::new(),
    }
}

/// Where the replicas of one store go on this node, after the checks that
/// do not depend on the container.
struct ReplicaDir<'c> {
    store: &'c Store,
    dir: PathBuf,
}

/// One container's replica directory, checked.
struct Target<'c> {
    store: &'c Store,
    replica_dir: PathBuf,
    dir: PathBuf,
    exists: bool,
}

impl Receiver<'_> {
    fn here(&self) -> &str {
        self.node.unwrap_or("this node")
    }

    fn replica_dir(&self, store_name: &str) -> Result<ReplicaDir<'_>, String> {
        crate::names::validate("store", store_name).map_err(|e| e.to_string())?;
        let store = self.config.store(store_name).ok_or_else(|| {
            format!(
                "store {store_name} is not in {}'s {}",
                self.here(),
                self.config.path.display()
            )
        })?;
        let dir = self.config.replica_dir(store).ok_or_else(|| {
            format!(
                "{}'s {} gives store {store_name} no replica_dir (and the peer of its home homes no store)",
                self.here(),
                self.config.path.display()
            )
        })?;
        if dir.starts_with(&store.mountpoint) {
            return Err(format!(
                "replica_dir {} of store {store_name} is inside that store itself; point it at a store homed on the other node",
                dir.display()
            ));
        }
        // The store (if any) that the replica dir lives on must be mounted
        // here, or files would land in the bare mountpoint directory.
        let host = self
            .config
            .stores
            .iter()
            .filter(|s| dir.starts_with(&s.mountpoint))
            .max_by_key(|s| s.mountpoint.components().count());
        // Never outside a store: cluster.toml refuses such a replica_dir at
        // load, and the receiver does not rely on that alone.
        let Some(host) = host else {
            return Err(format!(
                "replica dir {} of store {store_name} is not on any store of {}'s {}; refusing to write outside a store",
                dir.display(),
                self.here(),
                self.config.path.display()
            ));
        };
        {
            match mountinfo::at(self.mounts, &host.mountpoint) {
                Some(m) if mount_is_store(m, &host.device) => {}
                Some(m) => {
                    return Err(format!(
                        "replica dir {} is on store {}, but {} on {} holds {} ({}), not the store's device {}",
                        dir.display(),
                        host.name,
                        host.mountpoint.display(),
                        self.here(),
                        m.source,
                        m.fstype,
                        host.device.display()
                    ))
                }
                None => {
                    return Err(format!(
                        "replica dir {} is on store {}, which is not mounted at {} on {}: files written there would be hidden by the next mount; take the store over there first",
                        dir.display(),
                        host.name,
                        host.mountpoint.display(),
                        self.here()
                    ))
                }
            }
        }
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => Err(format!(
                "replica dir {} on {} is a symlink; not followed",
                dir.display(),
                self.here()
            )),
            Ok(m) if m.is_dir() => Ok(ReplicaDir { store, dir }),
            Ok(_) => Err(format!(
                "replica dir {} on {} is not a directory",
                dir.display(),
                self.here()
            )),
            Err(_) => Err(format!(
                "replica dir {} is missing on {}; create it (mkdir) once the store is mounted",
                dir.display(),
                self.here()
            )),
        }
    }

    fn target(&self, store_name: &str, name: &str) -> Result<Target<'_>, String> {
        crate::names::validate("container", name).map_err(|e| e.to_string())?;
        let ReplicaDir {
            store,
            dir: replica_dir,
        } = self.replica_dir(store_name)?;
        let dir = replica_dir.join(name);
        let exists = match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} on {} is a symlink; not followed",
                    dir.display(),
                    self.here()
                ))
            }
            Ok(m) if m.is_dir() => true,
            Ok(_) => {
                return Err(format!(
                    "{} on {} is not a directory",
                    dir.display(),
                    self.here()
                ))
            }
            Err(_) => false,
        };
        if exists {
            self.check_not_another_container(store, name, &dir)?;
        }
        Ok(Target {
            store,
            replica_dir,
            dir,
            exists,
        })
    }

    /// A collision: the directory where the replica would go holds some
    /// other container.
    fn check_not_another_container(
        &self,
        store: &Store,
        name: &str,
        dir: &Path,
    ) -> Result<(), String> {
        match read_regular(&dir.join("config")) {
            Ok(Some((bytes, _))) => {
                let text = String::from_utf8_lossy(&bytes);
                if let Some(rootfs) = rootfs_of(&text) {
                    if rootfs.starts_with(dir) {
                        return Err(format!(
                            "collision: {} is {}'s own container {name} (its rootfs is {}); container names must be unique in the cluster, so rename one of them",
                            dir.display(),
                            self.here(),
                            rootfs.display()
                        ));
                    }
                    // Under the pushed store but another name: an edited
                    // replica, left to the drift check (and --force).
                    if !rootfs.starts_with(store.lxcpath()) {
                        return Err(format!(
                            "collision: {} on {} holds a container whose rootfs is {}, not a replica of {}/{name}",
                            dir.display(),
                            self.here(),
                            rootfs.display(),
                            store.name
                        ));
                    }
                }
            }
            Ok(None) => {}
            Err(problem) => {
                return Err(format!(
                    "{} on {}: {problem}",
                    dir.join("config").display(),
                    self.here()
                ))
            }
        }
        if fs::symlink_metadata(dir.join("rootfs")).is_ok() {
            return Err(format!(
                "collision: {} on {} has a rootfs of its own; it is not a replica",
                dir.display(),
                self.here()
            ));
        }
        Ok(())
    }

    /// Decides what to do for one request. Reads, never writes.
    pub fn decide(&self, req: &Request, payload: &[u8]) -> Action {
        match req {
            Request::Push {
                store,
                name,
                file,
                expected,
                mode,
                force,
            } => self.decide_push(
                store,
                name,
                *file,
                expected.as_deref(),
                *mode,
                *force,
                payload,
            ),
            Request::Query { store, name, file } => self.decide_query(store, name, *file),
            Request::List { store } => match self.list(store) {
                Ok(names) => Action::Names(names),
                Err(reason) => refused(reason),
            },
            Request::Remove {
                store,
                name,
                expected,
                force,
            } => self.decide_remove(store, name, expected, *force),
            Request::Hello { .. } | Request::Bye => {
                refused("unexpected hello or bye in the middle of a session")
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_push(
        &self,
        store: &str,
        name: &str,
        file: SyncFile,
        expected: Option<&str>,
        mode: u32,
        force: bool,
        payload: &[u8],
    ) -> Action {
        let t = match self.target(store, name) {
            Ok(t) => t,
            Err(reason) => return refused(reason),
        };
        if file == SyncFile::Config {
            // The pushed config must itself be a container of that store, or
            // the replica would start something else on failover.
            let want = t.store.lxcpath().join(name);
            match rootfs_of(&String::from_utf8_lossy(payload)) {
                Some(r) if r.starts_with(&want) => {}
                Some(r) => {
                    return refused(format!(
                        "the pushed config's lxc.rootfs.path {} is not under {}",
                        r.display(),
                        want.display()
                    ))
                }
                None => return refused("the pushed config has no lxc.rootfs.path"),
            }
            // Never keep a replica that a plain lxc-start could run without
            // ctmgr's guard, whatever the sender checked (issue 10, D8).
            let problems =
                crate::reserved::judge(name, &t.store.lxcpath(), &text_view(payload), &|_| true);
            if !problems.is_empty() {
                return refused(format!(
                    "{} refuses the pushed config of {name}: {}. It keeps its replica as it was; upgrade ctmgr on the sending node (its sync refuses such configs) and fix the config there",
                    self.here(),
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        let path = t.dir.join(file.as_str());
        let current = match read_regular(&path) {
            Ok(c) => c,
            Err(problem) => {
                return refused(format!("{} on {}: {problem}", path.display(), self.here()))
            }
        };
        let new_hash = sha256_hex(payload);
        let write = |over_drift| Action::Write {
            dir: t.dir.clone(),
            create_dir: !t.exists,
            path: path.clone(),
            bytes: payload.to_vec(),
            mode: mode & 0o777,
            over_drift,
        };
        match current {
            None => write(false),
            Some((bytes, _)) => {
                let cur = sha256_hex(&bytes);
                if cur == new_hash {
                    Action::Reply {
                        outcome: Outcome::Unchanged,
                        current: Some(cur),
                        payload: Vec::new(),
                    }
                } else if expected == Some(cur.as_str()) {
                    write(false)
                } else if force {
                    write(true)
                } else {
                    Action::Reply {
                        outcome: Outcome::Drift,
                        current: Some(cur),
                        payload: bytes,
                    }
                }
            }
        }
    }

    fn decide_query(&self, store: &str, name: &str, file: SyncFile) -> Action {
        let t = match self.target(store, name) {
            Ok(t) => t,
            Err(reason) => return refused(reason),
        };
        let path = t.dir.join(file.as_str());
        match read_regular(&path) {
            Ok(Some((bytes, _))) => Action::Reply {
                outcome: Outcome::Present,
                current: Some(sha256_hex(&bytes)),
                payload: bytes,
            },
            Ok(None) => Action::Reply {
                outcome: Outcome::Missing,
                current: None,
                payload: Vec::new(),
            },
            Err(problem) => refused(format!("{} on {}: {problem}", path.display(), self.here())),
        }
    }

    fn decide_remove(
        &self,
        store: &str,
        name: &str,
        expected: &std::collections::BTreeMap<SyncFile, String>,
        force: bool,
    ) -> Action {
        let t = match self.target(store, name) {
            Ok(t) => t,
            Err(reason) => return refused(reason),
        };
        if !t.exists {
            return Action::Reply {
                outcome: Outcome::Missing,
                current: None,
                payload: Vec::new(),
            };
        }
        match (self.is_running)(name, &t.replica_dir) {
            Ok(false) => {}
            Ok(true) => {
                return refused(format!(
                    "replica {name} is running on {} (started from {}); stop it there first",
                    self.here(),
                    t.dir.display()
                ))
            }
            Err(e) => {
                return refused(format!(
                    "cannot tell whether {name} is running on {}: {e}",
                    self.here()
                ))
            }
        }
        let mut files = Vec::new();
        for file in SyncFile::ALL {
            let path = t.dir.join(file.as_str());
            match read_regular(&path) {
                Ok(None) => {}
                Ok(Some((bytes, _))) => {
                    let cur = sha256_hex(&bytes);
                    if !force && expected.get(&file) != Some(&cur) {
                        return Action::Reply {
                            outcome: Outcome::Drift,
                            current: Some(cur),
                            payload: bytes,
                        };
                    }
                    files.push(path);
                }
                Err(problem) => {
                    return refused(format!("{} on {}: {problem}", path.display(), self.here()))
                }
            }
        }
        Action::Remove { dir: t.dir, files }
    }

    /// Replicas of `store`'s containers in its replica dir here.
    fn list(&self, store_name: &str) -> Result<Vec<String>, String> {
        let ReplicaDir { store, dir } = self.replica_dir(store_name)?;
        let entries =
            fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| crate::names::validate("container", n).is_ok())
            .filter(|n| match read_regular(&dir.join(n).join("config")) {
                Ok(Some((bytes, _))) => rootfs_of(&String::from_utf8_lossy(&bytes))
                    .is_some_and(|r| r.starts_with(store.lxcpath().join(n))),
                _ => false,
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Carries out an action; returns the reply and its payload.
    pub fn apply(&self, action: Action) -> (Reply, Vec<u8>) {
        let outcome = |outcome, current, detail| Reply::Outcome {
            outcome,
            current,
            detail,
        };
        match action {
            Action::Reply {
                outcome: o,
                current,
                payload,
            } => (outcome(o, current, None), payload),
            Action::Names(names) => (Reply::Names { names }, Vec::new()),
            Action::Write {
                dir,
                create_dir,
                path,
                bytes,
                mode,
                over_drift,
            } => {
                let result = (|| -> std::io::Result<()> {
                    if create_dir {
                        fs::DirBuilder::new().create(&dir)?;
                        fs::File::open(dir.parent().unwrap_or(&dir))?.sync_all()?;
                    }
                    // Re-checked right before the rename: never through a symlink.
                    if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                        return Err(std::io::Error::other("not a regular file"));
                    }
                    write_atomic(&path, &bytes, mode)
                })();
                match result {
                    Ok(()) => (
                        outcome(
                            Outcome::Written { over_drift },
                            Some(sha256_hex(&bytes)),
                            None,
                        ),
                        Vec::new(),
                    ),
                    Err(e) => (
                        outcome(
                            Outcome::Refused {
                                reason: format!(
                                    "cannot write {} on {}: {e}",
                                    path.display(),
                                    self.here()
                                ),
                            },
                            None,
                            None,
                        ),
                        Vec::new(),
                    ),
                }
            }
            Action::Remove { dir, files } => {
                // fstab before config: until the config goes, what is left
                // is still recognisably the replica.
                let mut files = files;
                files.sort_by_key(|p| p.file_name() == Some(std::ffi::OsStr::new("config")));
                for f in &files {
                    if let Err(e) = fs::remove_file(f) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            let reason =
                                format!("cannot remove {} on {}: {e}", f.display(), self.here());
                            return (outcome(Outcome::Refused { reason }, None, None), Vec::new());
                        }
                    }
                }
                let detail = match fs::remove_dir(&dir) {
                    Ok(()) => None,
                    Err(_) => {
                        let left: Vec<String> = fs::read_dir(&dir)
                            .map(|rd| {
                                rd.flatten()
                                    .map(|e| e.file_name().to_string_lossy().into_owned())
                                    .collect()
                            })
                            .unwrap_or_default();
                        Some(format!(
                            "directory {} kept on {}: it still holds {}",
                            dir.display(),
                            self.here(),
                            left.join(", ")
                        ))
                    }
                };
                if let Some(parent) = dir.parent() {
                    let _ = fs::File::open(parent).and_then(|d| d.sync_all());
                }
                (outcome(Outcome::Removed, None, detail), Vec::new())
            }
        }
    }

    /// Decides and applies one request.
    pub fn handle(&self, req: &Request, payload: &[u8]) -> (Reply, Vec<u8>) {
        let action = self.decide(req, payload);
        self.apply(action)
    }

    /// Answers the hello: checks version, cluster and that this is the node
    /// the sender meant to reach.
    pub fn hello(&self, req: &Request) -> Result<Reply, String> {
        let Request::Hello {
            version,
            cluster,
            from,
            to,
        } = req
        else {
            return Err("the session must start with a hello".to_string());
        };
        if *version != VERSION {
            return Err(format!(
                "{} speaks sync protocol version {VERSION}, the sender version {version}: install the same ctmgr on both nodes",
                self.here()
            ));
        }
        if *cluster != self.config.cluster.name {
            return Err(format!(
                "{} is in cluster {:?}, not {cluster:?}: check the node's ssh setting in cluster.toml",
                self.here(),
                self.config.cluster.name
            ));
        }
        if let Some(me) = self.node {
            if me != to {
                return Err(format!(
                    "this is node {me}, not {to}: check node {to}'s ssh setting in cluster.toml"
                ));
            }
            if me == from {
                return Err(format!("node {me} cannot sync with itself"));
            }
        }
        Ok(Reply::Hello {
            version: VERSION,
            node: self.node.map(str::to_string),
        })
    }

    /// Serves one session: hello, then requests until `Bye` or the end of input.
    pub fn serve<R: Read, W: Write>(&self, mut input: R, mut output: W) -> Result<(), SyncError> {
        let Some(first) = protocol::read_frame::<_, Request>(&mut input)? else {
            return Ok(());
        };
        match self.hello(&first.header) {
            Ok(reply) => protocol::write_frame(&mut output, &reply, b"")?,
            Err(message) => {
                protocol::write_frame(
                    &mut output,
                    &Reply::Error {
                        message: message.clone(),
                    },
                    b"",
                )?;
                return Err(SyncError::Rejected {
                    peer: "the sender".to_string(),
                    message,
                });
            }
        }
        while let Some(frame) = protocol::read_frame::<_, Request>(&mut input)? {
            if frame.header == Request::Bye {
                break;
            }
            tracing::debug!(request = ?frame.header, "sync request");
            let (reply, payload) = self.handle(&frame.header, &frame.payload);
            if let Reply::Outcome { outcome, .. } = &reply {
                tracing::info!(request = ?request_summary(&frame.header), ?outcome, "sync");
            }
            protocol::write_frame(&mut output, &reply, &payload)?;
        }
        Ok(())
    }
}

/// A pushed config as liblxc reads it, from its text alone (the receiver
/// has no container to load): lines in order, a later value replacing an
/// earlier one, one pair of quotes dropped, an empty `lxc.hook.pre-start` or `lxc.hook` clearing the
/// pre-start hooks, legacy spellings counted as their keys. Includes are
/// listed, not followed: only LXC's own may be named at all.
pub fn text_view(payload: &[u8]) -> crate::reserved::Effective {
    let text = String::from_utf8_lossy(payload);
    let mut eff = crate::reserved::Effective::default();
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        // liblxc drops one pair of quotes around a value.
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
            .unwrap_or(v);
        match k.trim() {
            "lxc.hook.pre-start" if v.is_empty() => eff.pre_start.clear(),
            "lxc.hook.pre-start" => eff.pre_start.push(v.to_string()),
            "lxc.hook" if v.is_empty() => eff.pre_start.clear(),
            "lxc.hook.version" => eff.hook_version = some(v),
            "lxc.rootfs.path" | "lxc.rootfs" => eff.rootfs = some(v),
            "lxc.mount.fstab" | "lxc.mount" => eff.fstab = some(v),
            "lxc.uts.name" | "lxc.utsname" => eff.uts_name = some(v),
            "lxc.include" => eff.includes.push(v.to_string()),
            _ => {}
        }
    }
    eff
}

fn request_summary(req: &Request) -> String {
    match req {
        Request::Push {
            store, name, file, ..
        } => format!("push {store}/{name}/{file}"),
        Request::Query { store, name, file } => format!("query {store}/{name}/{file}"),
        Request::Remove { store, name, .. } => format!("remove {store}/{name}"),
        Request::List { store } => format!("list {store}"),
        Request::Hello { .. } => "hello".to_string(),
        Request::Bye => "bye".to_string(),
    }
}

/// Is the container running here? Asks liblxc (in process, through the
/// container's command socket).
pub fn lxc_is_running(name: &str, lxcpath: &Path) -> Result<bool, String> {
    lxc_bindings::Container::new(name, lxcpath)
        .map(|c| c.is_running())
        .map_err(|e| e.to_string())
}

/// Body of `ctmgr __sync-receive`: loads this node's config and mount table
/// and serves one session on `input`/`output`.
pub fn receive<R: Read, W: Write>(
    input: R,
    output: W,
    config_path: &Path,
    node: Option<&str>,
) -> Result<(), SyncError> {
    let config = Config::load(config_path)?;
    let mounts = mountinfo::read().map_err(SyncError::Mounts)?;
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let me = config
        .resolve_node(node, &hostname)
        .ok()
        .map(|n| n.name.clone());
    let receiver = Receiver {
        config: &config,
        mounts: &mounts,
        node: me.as_deref(),
        is_running: &lxc_is_running,
    };
    receiver.serve(input, output)
}
