//! Containers of the stores held here: find, create, list, start, stop,
//! destroy.
//!
//! liblxc forks, and in liblxc 5 the process that calls `start` can be moved
//! into the container's monitor cgroup; so every start and stop runs in a
//! short-lived child (`ctmgr __lxc-start` / `__lxc-stop`, see `child_op`),
//! never in the ctmgr process itself. Reads (state, pid, config) happen in
//! process through liblxc's command socket.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lxc_bindings::Container;
use serde::Serialize;

#[cfg(test)]
use crate::config::Config;
use crate::config::Store;
use crate::exit::{refuse, usage};
use crate::mountinfo::Mount;
use crate::runner::{self, Cmd};
use crate::store::StoreHere;
use crate::template::Template;

/// The subdirectory of a container that holds LXC-style snapshots.
pub const SNAPS_DIR: &str = "snaps";

/// Written into a container directory before anything else of a `create`,
/// removed as its very last step (D22): a container dir that still has it is
/// a create that was interrupted. Such a container is *incomplete*: not one
/// of the store's containers (`own_names`), never synced, started,
/// snapshotted or started by takeover; `list` and `doctor` show it, and a
/// rerun of the same `create` removes it and makes it again.
pub const CREATING_MARKER: &str = ".ctmgr-creating";

/// Is the container directory `dir` an interrupted create?
pub fn is_incomplete(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(CREATING_MARKER)).is_ok()
}

/// Names of the incomplete containers (interrupted creates) in an lxcpath.
pub fn incomplete_names(lxcpath: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(lxcpath) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| crate::names::validate("container", n).is_ok())
            .filter(|n| is_incomplete(&lxcpath.join(n)))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn incomplete_refusal(name: &str, store: &str) -> anyhow::Error {
    refuse(format!(
        "container {name} on {store} is incomplete: its create was interrupted; rerun `ctmgr create {name} --store {store}` (it is removed and made again) or `ctmgr destroy {name}`"
    ))
}

/// A container found on a store held here.
#[derive(Debug, Clone)]
pub struct Located<'c> {
    pub name: String,
    pub store: &'c Store,
    pub lxcpath: PathBuf,
}

impl Located<'_> {
    pub fn dir(&self) -> PathBuf {
        self.lxcpath.join(&self.name)
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("config")
    }
    pub fn snaps_dir(&self) -> PathBuf {
        self.dir().join(SNAPS_DIR)
    }
}

/// Reads a container config as text; non-UTF-8 bytes are shown replaced, since
/// LXC itself only needs the keys we look at to be ASCII.
pub fn read_config_text(path: &Path) -> std::io::Result<String> {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// All values of `key` in an LXC config text (`key = value` lines).
pub fn config_values<'t>(text: &'t str, key: &str) -> Vec<&'t str> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then_some(v.trim())
        })
        .collect()
}

/// The directory an LXC config's rootfs lives in (from `lxc.rootfs.path`,
/// `btrfs:` or `dir:` prefixes stripped).
pub fn rootfs_of(config_text: &str) -> Option<PathBuf> {
    let v = config_values(config_text, "lxc.rootfs.path").pop()?;
    let path = v.split_once(':').map(|(_, p)| p).unwrap_or(v);
    Some(PathBuf::from(path))
}

/// The arguments of a config's ctmgr guard hook (without LXC's suffix),
/// if it has one.
pub fn guard_hook_args(config_text: &str) -> Option<Vec<String>> {
    let hook = config_values(config_text, "lxc.hook.pre-start")
        .into_iter()
        .find(|h| h.contains("ctmgr-guard"))?;
    Some(
        hook.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect(),
    )
}

/// The store mountpoint named by a config's ctmgr guard hook, if it has one.
pub fn guard_mountpoint(config_text: &str) -> Option<PathBuf> {
    let args = guard_hook_args(config_text)?;
    crate::guard::parse_args(&args).ok().map(|a| a.mountpoint)
}

/// Does the container directory `dir` belong to the store it lies in,
/// rather than being the peer's replica kept in our lxcpath? The guard hook
/// names the container's store; without one, its rootfs location decides.
/// A container whose rootfs path is damaged still counts as its store's, so
/// takeover tries it and reports the failure instead of skipping it.
pub fn is_own(dir: &Path) -> bool {
    let Ok(text) = read_config_text(&dir.join("config")) else {
        return false;
    };
    match (guard_mountpoint(&text), dir.parent()) {
        (Some(mp), Some(lxcpath)) => lxcpath == mp.join("containers"),
        _ => rootfs_of(&text).is_some_and(|r| r.starts_with(dir)),
    }
}

/// Names of the container directories in an lxcpath that belong to its
/// store; incomplete ones (see [`CREATING_MARKER`]) are not among them.
pub fn own_names(lxcpath: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(lxcpath) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| crate::names::validate("container", n).is_ok())
            .filter(|n| is_own(&lxcpath.join(n)) && !is_incomplete(&lxcpath.join(n)))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Finds a container on the stores held here. Unknown → exit 2; known only as
/// a replica or on a store not held here, or incomplete → exit 3.
pub fn locate<'c>(name: &str, stores: &[StoreHere<'c>]) -> Result<Located<'c>> {
    let found = locate_any(name, stores)?;
    if is_incomplete(&found.dir()) {
        return Err(incomplete_refusal(name, &found.store.name));
    }
    Ok(found)
}

/// [`locate`] that also finds an incomplete container (for `destroy`).
pub fn locate_any<'c>(name: &str, stores: &[StoreHere<'c>]) -> Result<Located<'c>> {
    crate::names::validate("container", name)?;
    for s in stores.iter().filter(|s| s.held()) {
        let lxcpath = s.store.lxcpath();
        if is_incomplete(&lxcpath.join(name)) {
            return Ok(Located {
                name: name.to_string(),
                store: s.store,
                lxcpath,
            });
        }
        if lxcpath.join(name).join("config").exists() && is_own(&lxcpath.join(name)) {
            return Ok(Located {
                name: name.to_string(),
                store: s.store,
                lxcpath,
            });
        }
    }
    for s in stores.iter().filter(|s| !s.held()) {
        if s.store.lxcpath().join(name).join("config").exists() {
            return Err(refuse(format!(
                "container {name} is a replica here: its store {} is not held by this node ({}); run `ctmgr takeover {}` first",
                s.store.name,
                s.holding.describe(&s.store.mountpoint),
                s.store.name
            )));
        }
    }
    if stores
        .iter()
        .any(|s| s.held() && s.store.lxcpath().join(name).exists())
    {
        return Err(refuse(format!(
            "container {name} here is a replica of a container on the peer's store; start it on the node that holds that store"
        )));
    }
    Err(usage(format!(
        "no container {name} on the stores held here ({}); see `ctmgr list`",
        held_names(stores)
    )))
}

fn held_names(stores: &[StoreHere<'_>]) -> String {
    let held: Vec<&str> = stores
        .iter()
        .filter(|s| s.held())
        .map(|s| s.store.name.as_str())
        .collect();
    if held.is_empty() {
        "none held".to_string()
    } else {
        held.join(", ")
    }
}

/// Picks the store for a new container: `--store`, else the only one held here.
pub fn choose_store<'c>(stores: &[StoreHere<'c>], wanted: Option<&str>) -> Result<&'c Store> {
    if let Some(name) = wanted {
        let s = stores
            .iter()
            .find(|s| s.store.name == name)
            .ok_or_else(|| usage(format!("no store {name:?} in cluster.toml")))?;
        if !s.held() {
            return Err(refuse(format!(
                "store {name} is not held by this node: {}",
                s.holding.describe(&s.store.mountpoint)
            )));
        }
        return Ok(s.store);
    }
    let held: Vec<&StoreHere> = stores.iter().filter(|s| s.held()).collect();
    match held.as_slice() {
        [one] => Ok(one.store),
        [] => Err(refuse(
            "no store is held by this node (mounted at its mountpoint and DRBD Primary); see `ctmgr status`".to_string(),
        )),
        _ => Err(usage(format!(
            "several stores are held here ({}); choose one with --store",
            held_names(stores)
        ))),
    }
}

/// Everything `create` needs besides the config and stores.
pub struct CreateRequest<'a> {
    pub name: &'a str,
    pub template: &'a Template,
    pub store: &'a Store,
    pub bridge: &'a str,
    /// Absolute path of the guard executable for `lxc.hook.pre-start`.
    pub guard: &'a Path,
    /// Where the peer keeps this store's replicas (for the guard).
    pub replica_dir: Option<&'a Path>,
    /// Every lxcpath visible on this node, for name and MAC uniqueness.
    pub lxcpaths: &'a [PathBuf],
}

/// Every hwaddr used in the configs of the given lxcpaths (own containers,
/// replicas and snapshots).
pub fn used_hwaddrs(lxcpaths: &[PathBuf]) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for lp in lxcpaths {
        for entry in walkdir::WalkDir::new(lp)
            .max_depth(4)
            .into_iter()
            .flatten()
            .filter(|e| e.file_name() == "config" && e.file_type().is_file())
        {
            if let Ok(text) = read_config_text(entry.path()) {
                for l in text.lines() {
                    if let Some((k, v)) = l.split_once('=') {
                        if k.trim().starts_with("lxc.net.") && k.trim().ends_with(".hwaddr") {
                            used.insert(v.trim().to_ascii_lowercase());
                        }
                    }
                }
            }
        }
    }
    used
}

/// A random locally administered MAC in Xen's 00:16:3e range (what LXC's own
/// `xx:xx:xx` expansion uses), not in `used`.
pub fn new_hwaddr(used: &BTreeSet<String>) -> Result<String> {
    let mut bytes = [0u8; 3 * 64];
    let mut f = fs::File::open("/dev/urandom").context("failed to open /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes).context("failed to read /dev/urandom")?;
    for c in bytes.chunks(3) {
        let mac = format!("00:16:3e:{:02x}:{:02x}:{:02x}", c[0] & 0x7f, c[1], c[2]);
        if !used.contains(&mac) {
            return Ok(mac);
        }
    }
    bail!("could not find an unused MAC address after 64 tries")
}

/// The `lxc.hook.pre-start` line for a container of `store` whose replicas
/// live in `replica_dir` on the peer.
pub fn guard_hook(guard: &Path, store: &Store, replica_dir: Option<&Path>) -> String {
    let mut line = format!(
        "{} --store {} --mountpoint {} --device {}",
        guard.display(),
        store.name,
        store.mountpoint.display(),
        store.device.display()
    );
    if let Some(res) = &store.drbd_resource {
        line.push_str(&format!(" --drbd-resource {res}"));
    }
    if let Some(dir) = replica_dir {
        line.push_str(&format!(" --replica-dir {}", dir.display()));
    }
    line
}

/// Finds the guard executable: `ctmgr-guard` on PATH, else next to ctmgr.
pub fn find_guard() -> Result<PathBuf> {
    if let Some(p) = runner::find_on_path("ctmgr-guard") {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the ctmgr executable")?;
    let beside = exe.with_file_name("ctmgr-guard");
    if beside.exists() {
        return Ok(beside);
    }
    bail!("the guard hook `ctmgr-guard` is not installed (not on PATH, not next to {}); install it beside ctmgr", exe.display())
}

/// What is in the way of a new container `name`, on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameHere {
    Free,
    /// An interrupted create on the store asked for: made again.
    Incomplete(PathBuf),
    /// Anything else (a container, a replica, an interrupted create on
    /// another store): refused.
    Taken(String),
}

/// Is `name` free for a new container of the store with `lxcpath`, given
/// every lxcpath visible here?
pub fn name_here(name: &str, lxcpath: &Path, lxcpaths: &[PathBuf]) -> NameHere {
    let mut seen: Vec<&Path> = lxcpaths.iter().map(PathBuf::as_path).collect();
    if !seen.contains(&lxcpath) {
        seen.push(lxcpath);
    }
    for lp in seen {
        let dir = lp.join(name);
        if fs::symlink_metadata(&dir).is_err() {
            continue;
        }
        if lp == lxcpath && is_incomplete(&dir) {
            return NameHere::Incomplete(dir);
        }
        let what = if is_incomplete(&dir) {
            "an interrupted create of that name is"
        } else {
            "a container (or replica) of that name already exists"
        };
        return NameHere::Taken(format!(
            "{what} in {} (names are unique in the cluster)",
            lp.display()
        ));
    }
    NameHere::Free
}

/// Creates a container (liblxc, Btrfs backing) and configures network, guard
/// hook, start order and fstab. The [`CREATING_MARKER`] goes in first and
/// comes out last; on failure nothing is left behind, and an interrupted
/// create of the same name on the same store is removed and made again.
pub fn create(req: &CreateRequest<'_>) -> Result<PathBuf> {
    crate::names::validate("container", req.name)?;
    let lxcpath = req.store.lxcpath();
    match name_here(req.name, &lxcpath, req.lxcpaths) {
        NameHere::Free => {}
        NameHere::Taken(why) => return Err(usage(format!("cannot create {}: {why}", req.name))),
        NameHere::Incomplete(dir) => {
            // liblxc is not asked about it (it may be half a config); a
            // running process on its rootfs would show as a busy subvolume.
            tracing::warn!(
                "{} is an interrupted create; removing it to make it again",
                dir.display()
            );
            destroy_dir(&lxcpath, req.name).with_context(|| {
                format!(
                    "failed to remove the interrupted create {} before making it again",
                    dir.display()
                )
            })?;
        }
    }
    fs::create_dir_all(&lxcpath)
        .with_context(|| format!("failed to create {}", lxcpath.display()))?;
    let hwaddr = new_hwaddr(&used_hwaddrs(req.lxcpaths))?;
    let dir = lxcpath.join(req.name);
    let result = start_marker(&dir, req)
        .and_then(|()| create_inner(req, &lxcpath, &hwaddr))
        .and_then(|()| end_marker(&dir));
    if result.is_err() {
        let _ = destroy_dir(&lxcpath, req.name);
    }
    result.map(|()| dir)
}

/// The container dir with the creation marker in it, both on disk for good.
fn start_marker(dir: &Path, req: &CreateRequest<'_>) -> Result<()> {
    fs::create_dir(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let text = format!(
        "# ctmgr create of {} from template {} is in progress or was interrupted (pid {}, {}).\n# Rerun `ctmgr create {} --store {}` to make it again, or `ctmgr destroy {}`.\n",
        req.name,
        req.template.name,
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        req.name,
        req.store.name,
        req.name
    );
    crate::fsutil::write_atomic(&dir.join(CREATING_MARKER), text.as_bytes(), 0o644)?;
    if let Some(parent) = dir.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("failed to sync {}", parent.display()))?;
    }
    Ok(())
}

/// Removes the creation marker once everything else is on disk.
fn end_marker(dir: &Path) -> Result<()> {
    // Everything written so far reaches the disk before the marker goes.
    for f in ["config", "fstab", SETTINGS_FILE] {
        if let Ok(file) = fs::File::open(dir.join(f)) {
            let _ = file.sync_all();
        }
    }
    let marker = dir.join(CREATING_MARKER);
    fs::remove_file(&marker).with_context(|| format!("failed to remove {}", marker.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to sync {}", dir.display()))
}

fn create_inner(req: &CreateRequest<'_>, lxcpath: &Path, hwaddr: &str) -> Result<()> {
    let c = Container::new(req.name, lxcpath)?;
    // The host's /etc/lxc/default.conf may name lxcbr0; ours is the bridge.
    c.clear_config_item("lxc.net")?;
    let args: Vec<&str> = req.template.args.iter().map(String::as_str).collect();
    c.create(&req.template.lxc_template, Some("btrfs"), &args)
        .with_context(|| {
            format!(
                "LXC template {} failed for container {}",
                req.template.lxc_template, req.name
            )
        })?;
    // Re-open: the template may have rewritten the config.
    drop(c);
    let c = Container::new(req.name, lxcpath)?;
    let dir = lxcpath.join(req.name);
    let fstab = dir.join("fstab");
    if !fstab.exists() {
        crate::fsutil::write_atomic(&fstab, b"", 0o644)?;
    }
    c.clear_config_item("lxc.net")?;
    c.clear_config_item("lxc.hook.pre-start")?;
    let items: Vec<(String, String)> = vec![
        ("lxc.net.0.type".into(), "veth".into()),
        ("lxc.net.0.link".into(), req.bridge.into()),
        ("lxc.net.0.flags".into(), "up".into()),
        ("lxc.net.0.hwaddr".into(), hwaddr.into()),
        ("lxc.mount.fstab".into(), fstab.display().to_string()),
        (
            "lxc.start.order".into(),
            req.template.start_order.to_string(),
        ),
        (
            "lxc.hook.pre-start".into(),
            guard_hook(req.guard, req.store, req.replica_dir),
        ),
    ];
    for (k, v) in items.iter().chain(req.template.config.iter()) {
        c.set_config_item(k, v)
            .with_context(|| format!("failed to set {k} = {v}"))?;
    }
    if let Some(sub) = &req.template.data_subvolume {
        let data = dir.join("data");
        crate::btrfs::create_subvolume(&data)?;
        let mut text = fs::read_to_string(&fstab).unwrap_or_default();
        text.push_str(&format!(
            "{} {sub} none bind,create=dir 0 0\n",
            data.display()
        ));
        crate::fsutil::write_atomic(&fstab, text.as_bytes(), 0o644)?;
    }
    c.save_config(None)?;
    drop(c);
    // What liblxc will run (after the template's includes) must carry the
    // guard, the rootfs subvolume, the fstab and the name ctmgr wrote.
    let problems = crate::reserved::problems(lxcpath, req.name);
    if !problems.is_empty() {
        return Err(usage(format!(
            "template {}: {}",
            req.template.name,
            crate::reserved::describe(req.name, &problems)
        )));
    }
    let settings = format!(
        "# ctmgr settings for this container (docs/snapshots.md)\ntemplate = {:?}\n",
        req.template.name
    );
    crate::fsutil::write_atomic(&dir.join(SETTINGS_FILE), settings.as_bytes(), 0o644)?;
    Ok(())
}

/// Removes a container directory: snapshots' subvolumes, the rootfs
/// subvolume, any data subvolume, then the directory.
pub fn destroy_dir(lxcpath: &Path, name: &str) -> Result<()> {
    let dir = lxcpath.join(name);
    if !dir.exists() {
        return Ok(());
    }
    // Deepest first: snaps/*/rootfs, rootfs, data.
    let mut subvols: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
        .max_depth(3)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir() && crate::btrfs::is_subvolume(e.path()))
        .map(|e| e.into_path())
        .collect();
    subvols.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for sv in subvols {
        crate::btrfs::delete_subvolume(&sv)?;
    }
    fs::remove_dir_all(&dir).with_context(|| format!("failed to remove {}", dir.display()))
}

/// Facts about one container for `list`/`status`.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub name: String,
    pub store: String,
    pub state: String,
    pub pid: Option<i32>,
    pub ips: Vec<String>,
    pub start_order: i64,
    pub template: Option<String>,
}

/// An incomplete container (interrupted create) for `list`: liblxc is not
/// asked about it (its config may be half written).
pub fn incomplete_info(name: &str, store: &Store, lxcpath: &Path) -> Info {
    let text = read_config_text(&lxcpath.join(name).join("config")).unwrap_or_default();
    Info {
        name: name.to_string(),
        store: store.name.clone(),
        state: "INCOMPLETE".to_string(),
        pid: None,
        ips: Vec::new(),
        start_order: start_order_of(&text),
        template: None,
    }
}

/// State, pid and addresses of one container (in process, no fork).
pub fn info(name: &str, store: &Store, lxcpath: &Path) -> Info {
    let text = read_config_text(&lxcpath.join(name).join("config")).unwrap_or_default();
    let start_order = start_order_of(&text);
    let (state, pid) = match Container::new(name, lxcpath) {
        Ok(c) => {
            let state = c.state();
            let pid = if state.as_str() == "STOPPED" {
                None
            } else {
                c.init_pid()
            };
            (state.as_str().to_string(), pid)
        }
        Err(e) => (format!("ERROR: {e}"), None),
    };
    Info {
        name: name.to_string(),
        store: store.name.clone(),
        state,
        pid,
        ips: pid.map(ips_of_pid).unwrap_or_default(),
        start_order,
        template: settings(&lxcpath.join(name)).ok().and_then(|s| s.template),
    }
}

/// `lxc.start.order` of a config text.
pub fn start_order_of(config_text: &str) -> i64 {
    config_values(config_text, "lxc.start.order")
        .pop()
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::template::DEFAULT_START_ORDER)
}

/// IPv4 and IPv6 addresses in the network namespace of `pid`, read from
/// /proc without entering the namespace (no fork, unlike liblxc's get_ips).
pub fn ips_of_pid(pid: i32) -> Vec<String> {
    let mut ips = Vec::new();
    if let Ok(trie) = fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
        ips.extend(parse_fib_trie_locals(&trie));
    }
    if let Ok(v6) = fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        ips.extend(parse_if_inet6(&v6));
    }
    ips
}

/// Local (host) IPv4 addresses from /proc/net/fib_trie, loopback excluded.
pub fn parse_fib_trie_locals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last_leaf: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("|-- ") {
            last_leaf = Some(rest.trim());
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last_leaf {
                if !ip.starts_with("127.") && !out.iter().any(|o| o == ip) {
                    out.push(ip.to_string());
                }
            }
        }
    }
    out
}

/// Global IPv6 addresses from /proc/net/if_inet6 (scope 00), loopback excluded.
pub fn parse_if_inet6(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[3] != "00" || f[5] == "lo" || f[0].len() != 32 {
                return None;
            }
            let groups: Vec<String> = (0..8).map(|i| f[0][i * 4..i * 4 + 4].to_string()).collect();
            let addr: std::net::Ipv6Addr = groups.join(":").parse().ok()?;
            Some(addr.to_string())
        })
        .collect()
}

/// A lifecycle operation run in a child process (see the module docs).
/// Returns the child's standard output.
pub fn child_op(op: &str, lxcpath: &Path, name: &str, timeout: Duration) -> Result<String> {
    // /proc/self/exe still runs this very binary when a package upgrade has
    // replaced the file on disk during a failover.
    let exe = PathBuf::from("/proc/self/exe");
    // The child takes an i32 (liblxc's); arguments are range-checked by clap,
    // this only keeps a library caller from overflowing.
    let secs = timeout.as_secs().clamp(1, MAX_TIMEOUT_SECS);
    let cmd = Cmd::new(&exe.display().to_string())
        .args([op, &lxcpath.display().to_string(), name, &secs.to_string()])
        .timeout(Duration::from_secs(secs + 30));
    let mut child = Command::new(&exe)
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {}", cmd.display()))?;
    let out = runner::wait_with_deadline(&mut child, &cmd)?;
    if out.success() {
        Ok(out.stdout)
    } else {
        let msg = out.stderr.trim();
        let msg = msg.strip_prefix("ctmgr: error: ").unwrap_or(msg);
        bail!(
            "{}",
            if msg.is_empty() {
                "failed without a message"
            } else {
                msg
            }
        )
    }
}

/// The longest `--timeout` any command accepts (one day); longer values are
/// refused by clap with exit 2 rather than overflowing a deadline.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Starts a container (in a child) and waits until it is RUNNING.
pub fn start(lxcpath: &Path, name: &str, timeout: Duration) -> Result<()> {
    child_op("__lxc-start", lxcpath, name, timeout).map(|_| ())
}

/// How a stop ended (safety rule 11: a kill is never shown as a clean stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopOutcome {
    /// It was not running.
    Already,
    /// It shut down cleanly (its init obeyed `lxc.signal.halt`) in time.
    Clean,
    /// It did not shut down within its timeout and was killed.
    Killed,
}

impl StopOutcome {
    /// The word `__lxc-stop` prints for its parent.
    pub fn as_str(self) -> &'static str {
        match self {
            StopOutcome::Already => "already",
            StopOutcome::Clean => "clean",
            StopOutcome::Killed => "killed",
        }
    }

    /// Reads the child's report (its last non-empty stdout line).
    pub fn parse(stdout: &str) -> Option<StopOutcome> {
        match stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())?
        {
            "already" => Some(StopOutcome::Already),
            "clean" => Some(StopOutcome::Clean),
            "killed" => Some(StopOutcome::Killed),
            _ => None,
        }
    }
}

/// Stops a container: clean shutdown within `timeout`, then kill; says
/// which of the two it was.
pub fn stop(lxcpath: &Path, name: &str, timeout: Duration) -> Result<StopOutcome> {
    let out = child_op("__lxc-stop", lxcpath, name, timeout)?;
    StopOutcome::parse(&out).with_context(|| {
        format!(
            "container {name}: the stop child did not say how it ended (stdout {:?})",
            out.trim()
        )
    })
}

/// Body of `ctmgr __lxc-start LXCPATH NAME SECS` (runs in the child).
pub fn start_here(lxcpath: &Path, name: &str, secs: i32) -> Result<()> {
    let c = Container::new(name, lxcpath)?;
    if !c.is_defined() {
        bail!("container {name} is not defined in {}", lxcpath.display());
    }
    if c.is_running() {
        return Ok(());
    }
    // The keys ctmgr owns, as liblxc will see them (after includes): never
    // start a container whose guard was switched off or whose rootfs is not
    // its own, and say so before liblxc's "exited with status 127" when the
    // guard executable is missing.
    let problems = crate::reserved::problems(lxcpath, name);
    if !problems.is_empty() {
        return Err(refuse(format!(
            "not starting {name}: {}",
            crate::reserved::describe(name, &problems)
        )));
    }
    if let Err(e) = c.start() {
        // liblxc only says that the pre-start hook failed: ask the guard
        // for its reason, in its own words.
        if let Some(msg) = guard_refusal(lxcpath, name) {
            bail!("{msg}");
        }
        return Err(e.into());
    }
    if !c.wait("RUNNING", secs) {
        bail!(
            "container {name} did not reach RUNNING within {secs} s (state {}); see `lxc-start -n {name} -P {} -F -l DEBUG`",
            c.state(),
            lxcpath.display()
        );
    }
    Ok(())
}

/// The guard's refusal for this container, if its hook would refuse now.
fn guard_refusal(lxcpath: &Path, name: &str) -> Option<String> {
    let config_path = lxcpath.join(name).join("config");
    let text = read_config_text(&config_path).ok()?;
    let mut args = guard_hook_args(&text)?;
    args.push(name.to_string());
    crate::guard::parse_args(&args)
        .and_then(|a| {
            crate::guard::check(
                &a,
                Some(&config_path),
                &crate::runner::SystemRunner::default(),
            )
        })
        .err()
}

/// Body of `ctmgr __lxc-stop LXCPATH NAME SECS` (runs in the child). Prints
/// how it ended ([`StopOutcome::as_str`]) as its last stdout line: the
/// parent ([`stop`]) reads it.
pub fn stop_here(lxcpath: &Path, name: &str, secs: i32) -> Result<()> {
    let outcome = stop_in_process(lxcpath, name, secs)?;
    println!("{}", outcome.as_str());
    Ok(())
}

fn stop_in_process(lxcpath: &Path, name: &str, secs: i32) -> Result<StopOutcome> {
    let c = Container::new(name, lxcpath)?;
    if !c.is_running() {
        return Ok(StopOutcome::Already);
    }
    // liblxc's shutdown sends lxc.signal.halt and waits; `true` only when
    // the container reached STOPPED on its own within `secs`.
    let clean = c.shutdown(secs).unwrap_or(false);
    let outcome = if !clean && c.is_running() {
        tracing::warn!(
            container = name,
            "did not shut down within {secs} s; killing it"
        );
        c.stop()?;
        StopOutcome::Killed
    } else {
        StopOutcome::Clean
    };
    if !c.wait("STOPPED", 10) {
        bail!("container {name} is still {} after stop", c.state());
    }
    Ok(outcome)
}

/// Mounts seen in this namespace are needed by callers that list stores.
pub fn mounts() -> Result<Vec<Mount>> {
    crate::mountinfo::read().context("failed to read /proc/self/mountinfo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_outcome_is_read_from_the_last_line() {
        assert_eq!(StopOutcome::parse("clean\n"), Some(StopOutcome::Clean));
        assert_eq!(
            StopOutcome::parse("noise\nkilled\n\n"),
            Some(StopOutcome::Killed)
        );
        assert_eq!(StopOutcome::parse("already"), Some(StopOutcome::Already));
        assert_eq!(StopOutcome::parse(""), None);
        assert_eq!(StopOutcome::parse("stopped"), None);
    }

    #[test]
    fn config_parsing_helpers() {
        let text = "lxc.rootfs.path = btrfs:/srv/store1/containers/web/rootfs\nlxc.start.order = 10\nlxc.net.0.hwaddr = 00:16:3E:aa:bb:cc\n";
        assert_eq!(
            rootfs_of(text).unwrap(),
            PathBuf::from("/srv/store1/containers/web/rootfs")
        );
        assert_eq!(start_order_of(text), 10);
        assert_eq!(start_order_of(""), 50);
    }

    #[test]
    fn hwaddrs_are_unique_and_in_the_lxc_range() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a")).unwrap();
        fs::write(
            dir.path().join("a/config"),
            "lxc.net.0.hwaddr = 00:16:3E:AA:BB:CC\n",
        )
        .unwrap();
        let used = used_hwaddrs(&[dir.path().to_path_buf()]);
        assert!(used.contains("00:16:3e:aa:bb:cc"));
        let mac = new_hwaddr(&used).unwrap();
        assert!(mac.starts_with("00:16:3e:") && mac.len() == 17 && !used.contains(&mac));
    }

    #[test]
    fn fib_trie_and_if_inet6() {
        // From /proc/net/fib_trie of a busybox container with 10.1.0.50/24.
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     +-- 10.1.0.0/24 2 0 2\n        |-- 10.1.0.0\n           /24 link UNICAST\n        |-- 10.1.0.50\n           /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n        |-- 10.1.0.50\n           /32 host LOCAL\n";
        assert_eq!(parse_fib_trie_locals(trie), vec!["10.1.0.50"]);
        let v6 = "fe8000000000000002163efffe000001 02 40 20 80 eth0\n20010db8000000000000000000000005 02 40 00 80 eth0\n00000000000000000000000000000001 01 80 10 80 lo\n";
        assert_eq!(parse_if_inet6(v6), vec!["2001:db8::5"]);
    }

    #[test]
    fn guard_hook_names_the_store() {
        let config = Config::parse(
            "[cluster]\nname = \"t\"\n[[node]]\nname = \"n1\"\naddress = \"10.0.254.1\"\n[[store]]\nname = \"store1\"\nhome = \"n1\"\nmountpoint = \"/srv/store1\"\ndevice = \"/dev/drbd0\"\ndrbd_resource = \"r0\"\ndrbd_port = 7788\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let line = guard_hook(
            Path::new("/usr/local/sbin/ctmgr-guard"),
            &config.stores[0],
            None,
        );
        assert_eq!(line, "/usr/local/sbin/ctmgr-guard --store store1 --mountpoint /srv/store1 --device /dev/drbd0 --drbd-resource r0");
    }
}

/// Per-container settings kept in `<lxcpath>/<name>/ctmgr.toml`: which
/// profile made it, and its own snapshot-policy overrides.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub template: Option<String>,
    pub snapshots: Option<crate::config::PolicyOverride>,
    /// Seconds for a clean shutdown before the container is killed (rule 11).
    pub stop_timeout: Option<u64>,
}

/// Name of the per-container settings file.
pub const SETTINGS_FILE: &str = "ctmgr.toml";

/// Reads a container's settings (absent file: defaults).
pub fn settings(dir: &Path) -> Result<Settings> {
    let path = dir.join(SETTINGS_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// The snapshot policy of a container: cluster defaults, then its template's
/// overrides, then its own.
pub fn effective_policy(
    defaults: &crate::config::SnapshotPolicy,
    dir: &Path,
) -> Result<crate::config::SnapshotPolicy> {
    let s = settings(dir)?;
    let mut p = defaults.clone();
    if let Some(t) = &s.template {
        if let Ok(t) = crate::template::load(t, &crate::template::override_dir()) {
            if let Some(ov) = &t.snapshots {
                p = p.overlay(ov);
            }
        }
    }
    if let Some(ov) = &s.snapshots {
        p = p.overlay(ov);
    }
    Ok(p)
}
