//! The cluster configuration, `/etc/ctmgr/cluster.toml` (DESIGN.md §2).
//!
//! Loading is strict: unknown keys, wrong types, dangling references,
//! duplicates and names that break safety rule 7 are all errors, and every
//! error names `FILE:LINE:COLUMN` and the key path (`store[1].mountpoint`).
//! The file is first read into raw structs whose fields carry their byte
//! spans (`toml::Spanned`), checked, and only then turned into the plain
//! [`Config`] the rest of ctmgr uses.
//!
//! This module is pure: apart from reading the file in [`Config::load`] it
//! never touches the system. Checks that need the live host (the mode of the
//! DRBD secret file, whether a tool exists) belong to `doctor` and to the
//! modules that use them.
//!
//! Choices where DESIGN.md is silent, documented here and in the errors:
//! - `drbd_port = 0` is refused; ports below 1024 are allowed (DRBD does not
//!   care, and the admin may have a reason).
//! - A replicated store (one with `drbd_resource`) needs a DRBD minor, taken
//!   from `drbd_minor` or from a `/dev/drbdN` device. Its `drbd_port` is
//!   optional and defaults to 7788 + minor, which is what the runbook uses;
//!   [`Store::drbd_port`] always holds the effective port of a replicated store.
//! - `drbd_port`, `drbd_minor` and `backing_disk` without `drbd_resource` are
//!   errors: they would be silently ignored otherwise.
//! - Omitted keys of `[snapshots]` take their defaults, so a policy that keeps
//!   nothing must be written out; it is then refused (DESIGN.md §5).
//! - A backup target's `ssh://` path may only use `[A-Za-z0-9_.,/+@:-]`,
//!   because the remote side of ssh hands the command line to a shell.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::Spanned;

use crate::names;

/// Where the configuration lives unless `--config` or `CTMGR_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/ctmgr/cluster.toml";
/// The DRBD port of minor 0 when a replicated store does not set `drbd_port`.
pub const DEFAULT_DRBD_BASE_PORT: u16 = 7788;
/// A ctmgr cluster is one host or a pair.
pub const MAX_NODES: usize = 2;

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file this was read from (used in messages).
    pub path: PathBuf,
    pub cluster: Cluster,
    pub nodes: Vec<Node>,
    pub stores: Vec<Store>,
    pub network: Network,
    pub snapshots: SnapshotPolicy,
    pub backup_targets: Vec<BackupTarget>,
    pub tools: Tools,
    pub drbd: DrbdSettings,
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub name: String,
}

/// One `[[node]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// Peer-link address: DRBD and ssh use it.
    pub address: Ipv4Addr,
    /// ssh destination; default `root@<address>`.
    pub ssh: String,
    /// The node's br0 address: a second path to it (safety rule 2).
    pub lan_address: Option<Ipv4Addr>,
    /// The interface enslaved to the bridge; default `eth0`.
    pub uplink: String,
    /// Prefix length of `lan_address`; default 24.
    pub lan_prefix: u8,
    /// The peer-link interface; default `eth1`.
    pub peer_interface: String,
    /// Prefix length of `address`; default 30.
    pub peer_prefix: u8,
    /// Overrides `network.gateway` for this node.
    pub gateway: Option<Ipv4Addr>,
}

/// One `[[store]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Store {
    pub name: String,
    /// The node the store normally runs on.
    pub home: String,
    pub mountpoint: PathBuf,
    pub device: PathBuf,
    pub mount_options: Option<String>,
    /// Absent: not replicated (single host, or a local store).
    pub drbd_resource: Option<String>,
    pub backing_disk: Option<PathBuf>,
    /// For a replicated store always set: as written, or 7788 + minor.
    pub drbd_port: Option<u16>,
    /// As written; see [`Store::minor`] for the effective minor.
    pub drbd_minor: Option<u32>,
    /// As written; see [`Config::replica_dir`] for the effective directory.
    pub replica_dir: Option<PathBuf>,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Default `br0`.
    pub bridge: String,
    /// Reachable from a healthy node (safety rule 2).
    pub gateway: Option<Ipv4Addr>,
}

/// Retention and snapshot behaviour, `[snapshots]` (DESIGN.md §5).
///
/// Counts: -1 = unlimited, 0 = rule off, N > 0 = keep N.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicy {
    pub keep_last: i64,
    pub keep_hourly: i64,
    pub keep_daily: i64,
    pub keep_weekly: i64,
    pub keep_monthly: i64,
    pub keep_yearly: i64,
    /// restic's `--keep-within` duration, e.g. `"2d"` or `"1y2m3d4h"`.
    pub keep_within: Option<String>,
    /// Freeze the container while its snapshot is taken.
    pub freeze: bool,
}

/// Part of a [`SnapshotPolicy`] that a template or a container overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    pub keep_last: Option<i64>,
    pub keep_hourly: Option<i64>,
    pub keep_daily: Option<i64>,
    pub keep_weekly: Option<i64>,
    pub keep_monthly: Option<i64>,
    pub keep_yearly: Option<i64>,
    pub keep_within: Option<String>,
    pub freeze: Option<bool>,
}

/// One `[[backup_target]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupTarget {
    pub name: String,
    /// An absolute path, or `ssh://[user@]host[:port]/path`.
    pub path: String,
    pub keep_last: i64,
    pub keep_hourly: i64,
    pub keep_daily: i64,
    pub keep_weekly: i64,
    pub keep_monthly: i64,
    pub keep_yearly: i64,
    pub keep_within: Option<String>,
}

/// Where a backup target lives, parsed from [`BackupTarget::path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetLocation {
    Local(PathBuf),
    Ssh {
        /// `host` or `user@host`, ready for ssh's argument vector.
        destination: String,
        port: Option<u16>,
        path: PathBuf,
    },
}

/// `[drbd]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrbdSettings {
    /// A 0600 file holding the shared secret (safety rule 8).
    pub secret_file: Option<PathBuf>,
    /// `"9"` or `"8.4"`: the format `drbd render` writes by default.
    pub version: Option<String>,
}

/// Errors of the whole configuration. The binary maps every one to exit code 2.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Anything wrong inside the file, with its position and key path.
    #[error("{}:{line}:{column}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error(
        "{}: config file not found; write it, or name another file with --config PATH or CTMGR_CONFIG",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error("{}: cannot read config file", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: node {name:?} (from --node or CTMGR_NODE) is not defined; known nodes: {}",
        path.display(),
        .known.join(", ")
    )]
    UnknownNode {
        path: PathBuf,
        name: String,
        known: Vec<String>,
    },
    #[error(
        "{}: this host's name {hostname:?} matches no node; known nodes: {}; name this node with --node NAME or CTMGR_NODE",
        path.display(),
        .known.join(", ")
    )]
    HostNotANode {
        path: PathBuf,
        hostname: String,
        known: Vec<String>,
    },
}

/// Errors of a retention policy on its own (templates check theirs with it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("{rule} = {value} is invalid: use -1 (unlimited), 0 (off) or a positive count")]
    BadCount { rule: &'static str, value: i64 },
    #[error("policy keeps nothing: set a keep_* count other than 0, or keep_within")]
    KeepsNothing,
    #[error("keep_within: {0}")]
    Within(#[from] crate::retention::PolicyError),
}

// ---------------------------------------------------------------------------
// Look-ups

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Config::parse(&text, path)
    }

    /// Checks `text`; `path` is only used in messages and kept in [`Config::path`].
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let ctx = Ctx { text, path };
        let tree = toml::from_str::<Loose>(text).map_err(|e| ctx.syntax_error(&e))?;
        let raw = toml::from_str::<RawFile>(text).map_err(|e| ctx.serde_error(&e, &tree))?;
        build(&ctx, raw)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn store(&self, name: &str) -> Option<&Store> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// The other node of a pair; `None` for a single host or an unknown node.
    pub fn peer_of(&self, node: &str) -> Option<&Node> {
        self.node(node)?;
        self.nodes.iter().find(|n| n.name != node)
    }

    pub fn stores_homed_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Store> + 'a {
        self.stores.iter().filter(move |s| s.home == node)
    }

    /// Where the replicas of `store`'s containers are kept on the peer:
    /// `replica_dir` when set, else the lxcpath of the first store homed on
    /// the peer of the store's home, else `None` (no peer, or it homes nothing).
    pub fn replica_dir(&self, store: &Store) -> Option<PathBuf> {
        if let Some(dir) = &store.replica_dir {
            return Some(dir.clone());
        }
        let peer = self.peer_of(&store.home)?;
        self.stores_homed_on(&peer.name).next().map(Store::lxcpath)
    }

    /// The node's own gateway, else `network.gateway`.
    pub fn gateway_for(&self, node: &Node) -> Option<Ipv4Addr> {
        node.gateway.or(self.network.gateway)
    }

    /// Which node this is: `explicit` (from `--node` / `CTMGR_NODE`) when
    /// given, else the hostname, else the hostname's part before the first dot.
    pub fn resolve_node(
        &self,
        explicit: Option<&str>,
        hostname: &str,
    ) -> Result<&Node, ConfigError> {
        let known = || self.nodes.iter().map(|n| n.name.clone()).collect();
        if let Some(name) = explicit {
            return self.node(name).ok_or_else(|| ConfigError::UnknownNode {
                path: self.path.clone(),
                name: name.to_owned(),
                known: known(),
            });
        }
        let short = hostname.split('.').next().unwrap_or(hostname);
        self.node(hostname)
            .or_else(|| self.node(short))
            .ok_or_else(|| ConfigError::HostNotANode {
                path: self.path.clone(),
                hostname: hostname.to_owned(),
                known: known(),
            })
    }
}

impl Store {
    /// `<mountpoint>/containers`
    pub fn lxcpath(&self) -> PathBuf {
        self.mountpoint.join("containers")
    }

    pub fn is_replicated(&self) -> bool {
        self.drbd_resource.is_some()
    }

    /// `drbd_minor`, else N of a `/dev/drbdN` device.
    pub fn minor(&self) -> Option<u32> {
        self.drbd_minor.or_else(|| minor_of_device(&self.device))
    }
}

impl Default for Network {
    fn default() -> Self {
        Network {
            bridge: "br0".to_owned(),
            gateway: None,
        }
    }
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            keep_last: 3,
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            keep_yearly: 0,
            keep_within: None,
            freeze: false,
        }
    }
}

impl SnapshotPolicy {
    /// This policy with every field that `ov` sets replaced.
    pub fn overlay(&self, ov: &PolicyOverride) -> SnapshotPolicy {
        SnapshotPolicy {
            keep_last: ov.keep_last.unwrap_or(self.keep_last),
            keep_hourly: ov.keep_hourly.unwrap_or(self.keep_hourly),
            keep_daily: ov.keep_daily.unwrap_or(self.keep_daily),
            keep_weekly: ov.keep_weekly.unwrap_or(self.keep_weekly),
            keep_monthly: ov.keep_monthly.unwrap_or(self.keep_monthly),
            keep_yearly: ov.keep_yearly.unwrap_or(self.keep_yearly),
            keep_within: ov.keep_within.clone().or_else(|| self.keep_within.clone()),
            freeze: ov.freeze.unwrap_or(self.freeze),
        }
    }

    /// The count rules by their key names, in restic's order.
    pub fn counts(&self) -> [(&'static str, i64); 6] {
        [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ]
    }

    /// The parsed `keep_within`.
    /// One parser for restic's duration syntax: the retention planner's.
    pub fn within(
        &self,
    ) -> Result<Option<crate::retention::Within>, crate::retention::PolicyError> {
        self.keep_within
            .as_deref()
            .map(crate::retention::parse_within)
            .transpose()
    }

    /// Counts are -1 or more, `keep_within` parses, and something is kept.
    pub fn check(&self) -> Result<(), PolicyError> {
        use crate::retention::PolicyError as R;
        self.to_retention()
            .and_then(|p| p.validate().map(|()| p))
            .map(|_| ())
            .map_err(|e| match e {
                R::NegativeCount { key, value } => PolicyError::BadCount { rule: key, value },
                R::KeepsNothing => PolicyError::KeepsNothing,
                other => PolicyError::Within(other),
            })
    }

    /// The policy as the retention planner takes it (`keep_within` parsed;
    /// counts not yet validated: see `retention::Policy::validate`).
    pub fn to_retention(&self) -> Result<crate::retention::Policy, crate::retention::PolicyError> {
        Ok(crate::retention::Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.within()?,
        })
    }
}

impl BackupTarget {
    /// The target's retention as a policy (`freeze` is meaningless here).
    pub fn policy(&self) -> SnapshotPolicy {
        SnapshotPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.clone(),
            freeze: false,
        }
    }

    /// Local directory or ssh destination (checked at load time).
    pub fn location(&self) -> Result<TargetLocation, String> {
        parse_target_path(&self.path)
    }
}

fn check_count(rule: &'static str, value: i64) -> Result<(), PolicyError> {
    if value < -1 {
        return Err(PolicyError::BadCount { rule, value });
    }
    Ok(())
}

fn minor_of_device(device: &Path) -> Option<u32> {
    let digits = device.to_str()?.strip_prefix("/dev/drbd")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---------------------------------------------------------------------------
// Tools

macro_rules! tools {
    ($($field:ident => $program:literal),* $(,)?) => {
        /// `[tools]`: absolute paths of external programs; an unset one is
        /// looked up on PATH. Keys are program names with '-' written '_'.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        pub struct Tools {
            $(pub $field: Option<PathBuf>,)*
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawTools {
            $($field: Option<Spanned<PathBuf>>,)*
        }

        impl Tools {
            /// The programs that can be configured, by program name.
            pub const PROGRAMS: &'static [&'static str] = &[$($program),*];

            /// The configured path of `program` ("lxc-start", "drbdadm", ...).
            pub fn get(&self, program: &str) -> Option<&Path> {
                match program {
                    $($program => self.$field.as_deref(),)*
                    _ => None,
                }
            }
        }

        fn build_tools(ctx: &Ctx<'_>, raw: RawTools) -> Result<Tools, ConfigError> {
            Ok(Tools {
                $($field: match raw.$field {
                    Some(p) => {
                        ctx.check(
                            p.span(),
                            concat!("tools.", stringify!($field)),
                            check_abs_path(p.get_ref()),
                        )?;
                        Some(p.into_inner())
                    }
                    None => None,
                },)*
            })
        }
    };
}

tools! {
    drbdadm => "drbdadm",
    drbdsetup => "drbdsetup",
    btrfs => "btrfs",
    ssh => "ssh",
    mount => "mount",
    umount => "umount",
    ip => "ip",
    ping => "ping",
    lxc_start => "lxc-start",
    lxc_stop => "lxc-stop",
    lxc_info => "lxc-info",
    lxc_attach => "lxc-attach",
    lxc_create => "lxc-create",
    lxc_destroy => "lxc-destroy",
    lxc_snapshot => "lxc-snapshot",
    lxc_freeze => "lxc-freeze",
    lxc_unfreeze => "lxc-unfreeze",
    lxc_ls => "lxc-ls",
}

// ---------------------------------------------------------------------------
// Raw, spanned form of the file

type Sp<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster: Sp<RawCluster>,
    #[serde(default)]
    node: Vec<Sp<RawNode>>,
    #[serde(default)]
    store: Vec<Sp<RawStore>>,
    network: Option<Sp<RawNetwork>>,
    snapshots: Option<Sp<RawPolicy>>,
    #[serde(default)]
    backup_target: Vec<Sp<RawTarget>>,
    tools: Option<Sp<RawTools>>,
    drbd: Option<Sp<RawDrbd>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Sp<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Sp<String>,
    address: Sp<Ipv4Addr>,
    ssh: Option<Sp<String>>,
    lan_address: Option<Sp<Ipv4Addr>>,
    uplink: Option<Sp<String>>,
    lan_prefix: Option<Sp<u8>>,
    peer_interface: Option<Sp<String>>,
    peer_prefix: Option<Sp<u8>>,
    gateway: Option<Sp<Ipv4Addr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    name: Sp<String>,
    home: Sp<String>,
    mountpoint: Sp<PathBuf>,
    device: Sp<PathBuf>,
    mount_options: Option<Sp<String>>,
    drbd_resource: Option<Sp<String>>,
    backing_disk: Option<Sp<PathBuf>>,
    drbd_port: Option<Sp<u16>>,
    drbd_minor: Option<Sp<u32>>,
    replica_dir: Option<Sp<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bridge: Option<Sp<String>>,
    gateway: Option<Sp<Ipv4Addr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    keep_last: Option<Sp<i64>>,
    keep_hourly: Option<Sp<i64>>,
    keep_daily: Option<Sp<i64>>,
    keep_weekly: Option<Sp<i64>>,
    keep_monthly: Option<Sp<i64>>,
    keep_yearly: Option<Sp<i64>>,
    keep_within: Option<Sp<String>>,
    freeze: Option<Sp<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Sp<String>,
    path: Sp<String>,
    keep_last: Option<Sp<i64>>,
    keep_hourly: Option<Sp<i64>>,
    keep_daily: Option<Sp<i64>>,
    keep_weekly: Option<Sp<i64>>,
    keep_monthly: Option<Sp<i64>>,
    keep_yearly: Option<Sp<i64>>,
    keep_within: Option<Sp<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrbd {
    secret_file: Option<Sp<PathBuf>>,
    version: Option<Sp<String>>,
}

/// Any TOML document with the span of every value, used only to name the
/// key path of an error that serde reports with a bare byte span.
enum Loose {
    Table(Vec<(String, Sp<Loose>)>),
    Array(Vec<Sp<Loose>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any toml value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose, E> {
        Ok(Loose::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose, E> {
        Ok(Loose::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose, E> {
        Ok(Loose::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose, E> {
        Ok(Loose::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Loose, E> {
        Ok(Loose::Scalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Sp<Loose>>()? {
            items.push(item);
        }
        Ok(Loose::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Sp<Loose>>()? {
            entries.push((key, value));
        }
        Ok(Loose::Table(entries))
    }
}

/// The key path (`store[1].drbd_port`) of the innermost value around
/// `offset`, and that value's span (`None` for the document itself).
fn key_path_at(tree: &Loose, offset: usize) -> (String, Option<Range<usize>>) {
    fn contains(span: &Range<usize>, offset: usize) -> bool {
        span.start <= offset && (offset < span.end || span.start == span.end)
    }
    let mut path = String::new();
    let mut node = tree;
    let mut span = None;
    loop {
        let next = match node {
            Loose::Table(entries) => entries
                .iter()
                .find(|(_, v)| contains(&v.span(), offset))
                .map(|(k, v)| {
                    push_key(&mut path, k);
                    (v.span(), v.get_ref())
                }),
            Loose::Array(items) => items
                .iter()
                .enumerate()
                .find(|(_, v)| contains(&v.span(), offset))
                .map(|(i, v)| {
                    path.push_str(&format!("[{i}]"));
                    (v.span(), v.get_ref())
                }),
            Loose::Scalar => None,
        };
        match next {
            Some((s, n)) => {
                span = Some(s);
                node = n;
            }
            None => return (path, span),
        }
    }
}

/// For syntax errors, where no tree exists: the last table header before
/// `offset` (arrays of tables counted), plus the key on the error's line.
fn key_path_by_scan(text: &str, offset: usize) -> String {
    let offset = floor_char_boundary(text, offset);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut header = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in text[..line_start].lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = counts.entry(name.clone()).or_insert(0);
            header = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            header = name.trim().to_owned();
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = match line.split_once('=') {
        Some((k, _)) if !k.trim_start().starts_with('[') => k.trim(),
        _ => "",
    };
    match (header.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".to_owned(),
        (true, false) => key.to_owned(),
        (false, true) => header,
        (false, false) => format!("{header}.{key}"),
    }
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

// ---------------------------------------------------------------------------
// Validation

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.position(span.start);
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    fn check<E: fmt::Display>(
        &self,
        span: Range<usize>,
        key: &str,
        result: Result<(), E>,
    ) -> Result<(), ConfigError> {
        result.map_err(|e| self.err(span, key, e.to_string()))
    }

    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let key = key_path_by_scan(self.text, span.start);
        self.err(
            span,
            key,
            format!("toml syntax error: {}", one_line(e.message())),
        )
    }

    /// Turns serde's "unknown field `x`" / "missing field `x`" into key
    /// paths ending in `x`; other messages are kept as they are.
    fn serde_error(&self, e: &toml::de::Error, tree: &Loose) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let (mut key, around) = key_path_at(tree, span.start);
        // An unknown table's own header lies inside that table's span: its
        // key path already ends with the unknown name.
        let in_header = around.is_some_and(|s| {
            let head = &self.text[s.start..floor_char_boundary(self.text, span.start)];
            head.starts_with('[') && !head.contains('\n')
        });
        let message = one_line(e.message());
        let named = |prefix: &str| {
            let rest = message.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once('`')?;
            Some((
                name.to_owned(),
                tail.trim_start_matches(',').trim().to_owned(),
            ))
        };
        let message = if let Some((name, tail)) = named("unknown field `") {
            if !in_header {
                push_key(&mut key, &name);
            }
            if tail.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key; {tail}")
            }
        } else if let Some((name, _)) = named("missing field `") {
            push_key(&mut key, &name);
            "missing required key".to_owned()
        } else {
            message
        };
        if key.is_empty() {
            key = "(top level)".to_owned();
        }
        self.err(span, key, message)
    }
}

fn push_key(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

/// Remembers the first key that used a value, to report duplicates with
/// both places.
struct Seen<K> {
    first: HashMap<K, (String, usize)>,
}

impl<K: std::hash::Hash + Eq> Seen<K> {
    fn new() -> Self {
        Seen {
            first: HashMap::new(),
        }
    }

    /// `Some((owner, line))` of the earlier use, or records this one.
    fn insert(&mut self, value: K, owner: String, line: usize) -> Option<(String, usize)> {
        if let Some(prev) = self.first.get(&value) {
            return Some(prev.clone());
        }
        self.first.insert(value, (owner, line));
        None
    }
}

fn build(ctx: &Ctx<'_>, raw: RawFile) -> Result<Config, ConfigError> {
    let cluster_name = raw.cluster.into_inner().name;
    ctx.check(
        cluster_name.span(),
        "cluster.name",
        names::validate("cluster", cluster_name.get_ref()),
    )?;

    let network = build_network(ctx, raw.network)?;
    let nodes = build_nodes(ctx, raw.node, &network)?;
    let stores = build_stores(ctx, raw.store, &nodes)?;
    let snapshots = build_snapshots(ctx, raw.snapshots)?;
    let backup_targets = build_targets(ctx, raw.backup_target)?;
    let tools = match raw.tools {
        Some(t) => build_tools(ctx, t.into_inner())?,
        None => Tools::default(),
    };
    let drbd = match raw.drbd {
        Some(d) => build_drbd(ctx, d.into_inner())?,
        None => DrbdSettings::default(),
    };

    Ok(Config {
        path: ctx.path.to_owned(),
        cluster: Cluster {
            name: cluster_name.into_inner(),
        },
        nodes,
        stores,
        network: network.value,
        snapshots,
        backup_targets,
        tools,
        drbd,
    })
}

struct BuiltNetwork {
    value: Network,
    gateway_span: Option<Range<usize>>,
}

fn build_network(ctx: &Ctx<'_>, raw: Option<Sp<RawNetwork>>) -> Result<BuiltNetwork, ConfigError> {
    let Some(raw) = raw else {
        return Ok(BuiltNetwork {
            value: Network::default(),
            gateway_span: None,
        });
    };
    let raw = raw.into_inner();
    let mut value = Network::default();
    if let Some(bridge) = raw.bridge {
        ctx.check(
            bridge.span(),
            "network.bridge",
            check_ifname(bridge.get_ref()),
        )?;
        value.bridge = bridge.into_inner();
    }
    let gateway_span = raw.gateway.as_ref().map(Spanned::span);
    value.gateway = raw.gateway.map(Spanned::into_inner);
    Ok(BuiltNetwork {
        value,
        gateway_span,
    })
}

fn build_nodes(
    ctx: &Ctx<'_>,
    raw: Vec<Sp<RawNode>>,
    network: &BuiltNetwork,
) -> Result<Vec<Node>, ConfigError> {
    if raw.is_empty() {
        return Err(ctx.err(
            0..0,
            "node",
            "no [[node]] defined: a cluster has one or two nodes",
        ));
    }
    if let Some(extra) = raw.get(MAX_NODES) {
        return Err(ctx.err(
            extra.span(),
            format!("node[{MAX_NODES}]"),
            format!(
                "a cluster has at most {MAX_NODES} nodes, this file defines {}",
                raw.len()
            ),
        ));
    }
    let mut names = Seen::new();
    let mut addresses = Seen::new();
    let mut nodes = Vec::new();
    for (i, spanned) in raw.into_iter().enumerate() {
        let k = format!("node[{i}]");
        let n = spanned.into_inner();
        let name = n.name.get_ref().clone();
        ctx.check(
            n.name.span(),
            &format!("{k}.name"),
            names::validate("node", &name),
        )?;
        if let Some((other, line)) = names.insert(name.clone(), k.clone(), ctx.line(&n.name.span()))
        {
            return Err(ctx.err(
                n.name.span(),
                format!("{k}.name"),
                format!("node name {name:?} is already used by {other} (line {line})"),
            ));
        }
        let mut addrs = vec![("address", n.address.clone())];
        if let Some(lan) = &n.lan_address {
            addrs.push(("lan_address", lan.clone()));
        }
        for (field, addr) in addrs {
            let owner = format!("{field} of node {name:?}");
            if let Some((other, line)) =
                addresses.insert(*addr.get_ref(), owner, ctx.line(&addr.span()))
            {
                return Err(ctx.err(
                    addr.span(),
                    format!("{k}.{field}"),
                    format!("{} is already the {other} (line {line})", addr.get_ref()),
                ));
            }
        }

        let ssh = match n.ssh {
            Some(ssh) => {
                ctx.check(
                    ssh.span(),
                    &format!("{k}.ssh"),
                    check_ssh_destination(ssh.get_ref()),
                )?;
                ssh.into_inner()
            }
            None => format!("root@{}", n.address.get_ref()),
        };
        let uplink = ifname_or(ctx, n.uplink, &format!("{k}.uplink"), "eth0")?;
        let peer_interface = ifname_or(
            ctx,
            n.peer_interface,
            &format!("{k}.peer_interface"),
            "eth1",
        )?;
        if uplink.0 == peer_interface.0 {
            return Err(ctx.err(
                peer_interface
                    .1
                    .or(uplink.1)
                    .unwrap_or_else(|| n.name.span()),
                format!("{k}.peer_interface"),
                format!(
                    "{:?} is also the uplink of the bridge; the peer link needs its own interface",
                    peer_interface.0
                ),
            ));
        }
        if uplink.0 == network.value.bridge {
            return Err(ctx.err(
                uplink.1.clone().unwrap_or_else(|| n.name.span()),
                format!("{k}.uplink"),
                format!(
                    "{:?} is the bridge itself; the uplink is the interface enslaved to it",
                    uplink.0
                ),
            ));
        }
        let lan_prefix = prefix_or(ctx, n.lan_prefix, &format!("{k}.lan_prefix"), 24)?;
        let peer_prefix = prefix_or(ctx, n.peer_prefix, &format!("{k}.peer_prefix"), 30)?;

        let lan_address = n.lan_address.map(Spanned::into_inner);
        let gateway_span = n.gateway.as_ref().map(Spanned::span);
        let gateway = n.gateway.map(Spanned::into_inner);
        if let (Some(lan), Some(gw)) = (lan_address, gateway.or(network.value.gateway)) {
            let (span, key) = match gateway_span {
                Some(span) => (span, format!("{k}.gateway")),
                None => (
                    network.gateway_span.clone().unwrap_or(0..0),
                    "network.gateway".to_owned(),
                ),
            };
            if gw == lan {
                return Err(ctx.err(
                    span,
                    key,
                    format!("gateway {gw} is node {name:?}'s own lan_address"),
                ));
            }
            if !same_subnet(lan, gw, lan_prefix) {
                return Err(ctx.err(
                    span,
                    key,
                    format!(
                        "gateway {gw} is outside node {name:?}'s LAN {lan}/{lan_prefix}; set lan_prefix or a per-node gateway"
                    ),
                ));
            }
        }

        nodes.push(Node {
            name,
            address: n.address.into_inner(),
            ssh,
            lan_address,
            uplink: uplink.0,
            lan_prefix,
            peer_interface: peer_interface.0,
            peer_prefix,
            gateway,
        });
    }
    Ok(nodes)
}

fn ifname_or(
    ctx: &Ctx<'_>,
    raw: Option<Sp<String>>,
    key: &str,
    default: &str,
) -> Result<(String, Option<Range<usize>>), ConfigError> {
    match raw {
        Some(s) => {
            ctx.check(s.span(), key, check_ifname(s.get_ref()))?;
            let span = s.span();
            Ok((s.into_inner(), Some(span)))
        }
        None => Ok((default.to_owned(), None)),
    }
}

fn prefix_or(
    ctx: &Ctx<'_>,
    raw: Option<Sp<u8>>,
    key: &str,
    default: u8,
) -> Result<u8, ConfigError> {
    match raw {
        Some(p) if (1..=32).contains(p.get_ref()) => Ok(*p.get_ref()),
        Some(p) => Err(ctx.err(
            p.span(),
            key,
            format!("prefix length {} is out of range 1..=32", p.get_ref()),
        )),
        None => Ok(default),
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

fn build_stores(
    ctx: &Ctx<'_>,
    raw: Vec<Sp<RawStore>>,
    nodes: &[Node],
) -> Result<Vec<Store>, ConfigError> {
    let mut names = Seen::new();
    let mut mountpoints = Seen::new();
    let mut devices = Seen::new();
    let mut backing = Seen::new();
    let mut resources = Seen::new();
    let mut minors = Seen::new();
    let mut ports = Seen::new();
    let mut stores = Vec::new();
    // (mountpoint, owner, line) of the stores so far, for nesting.
    let mut placed: Vec<(PathBuf, String, usize)> = Vec::new();
    // (store index, key, span) of each explicit replica_dir, checked once
    // every store is known (it may name a later one).
    let mut replica_dirs: Vec<(usize, String, Range<usize>)> = Vec::new();
    for (i, spanned) in raw.into_iter().enumerate() {
        let k = format!("store[{i}]");
        let s = spanned.into_inner();
        let name = s.name.get_ref().clone();
        let key = |field: &str| format!("{k}.{field}");
        let owner = format!("store {name:?}");

        ctx.check(s.name.span(), &key("name"), names::validate("store", &name))?;
        if let Some((other, line)) = names.insert(name.clone(), k.clone(), ctx.line(&s.name.span()))
        {
            return Err(ctx.err(
                s.name.span(),
                key("name"),
                format!("store name {name:?} is already used by {other} (line {line})"),
            ));
        }

        let home = s.home.get_ref();
        if !nodes.iter().any(|n| &n.name == home) {
            let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(ctx.err(
                s.home.span(),
                key("home"),
                format!("unknown node {home:?}; nodes are: {}", known.join(", ")),
            ));
        }

        ctx.check(
            s.mountpoint.span(),
            &key("mountpoint"),
            check_hook_path(s.mountpoint.get_ref()),
        )?;
        if s.mountpoint.get_ref() == Path::new("/") {
            return Err(ctx.err(
                s.mountpoint.span(),
                key("mountpoint"),
                "a store cannot be mounted on /",
            ));
        }
        unique(
            ctx,
            &mut mountpoints,
            &s.mountpoint,
            key("mountpoint"),
            &owner,
            "mountpoint",
        )?;
        // Nested stores: mounting one hides (or is hidden by) the other, and
        // a container path would belong to two stores at once.
        let mp = s.mountpoint.get_ref();
        if let Some((other_mp, other, line)) = placed
            .iter()
            .find(|(o, _, _)| mp.starts_with(o) || o.starts_with(mp))
        {
            let how = if mp.starts_with(other_mp) {
                "inside"
            } else {
                "around"
            };
            return Err(ctx.err(
                s.mountpoint.span(),
                key("mountpoint"),
                format!(
                    "{:?} is {how} {:?}, the mountpoint of {other} (line {line}); store mountpoints must not nest",
                    mp.display().to_string(),
                    other_mp.display().to_string()
                ),
            ));
        }
        placed.push((mp.clone(), owner.clone(), ctx.line(&s.mountpoint.span())));
        ctx.check(
            s.device.span(),
            &key("device"),
            check_hook_path(s.device.get_ref()),
        )?;
        unique(
            ctx,
            &mut devices,
            &s.device,
            key("device"),
            &owner,
            "device",
        )?;

        if let Some(opts) = &s.mount_options {
            ctx.check(
                opts.span(),
                &key("mount_options"),
                check_mount_options(opts.get_ref()),
            )?;
        }

        let not_replicated = |span: Range<usize>, field: &str| {
            ctx.err(
                span,
                key(field),
                format!("{field} is set but drbd_resource is not; a store without drbd_resource is not replicated"),
            )
        };
        let mut drbd_port = None;
        match &s.drbd_resource {
            None => {
                if let Some(p) = &s.drbd_port {
                    return Err(not_replicated(p.span(), "drbd_port"));
                }
                if let Some(m) = &s.drbd_minor {
                    return Err(not_replicated(m.span(), "drbd_minor"));
                }
                if let Some(b) = &s.backing_disk {
                    return Err(not_replicated(b.span(), "backing_disk"));
                }
            }
            Some(res) => {
                ctx.check(
                    res.span(),
                    &key("drbd_resource"),
                    names::validate("drbd resource", res.get_ref()),
                )?;
                unique(
                    ctx,
                    &mut resources,
                    res,
                    key("drbd_resource"),
                    &owner,
                    "drbd_resource",
                )?;
                if let Some(b) = &s.backing_disk {
                    ctx.check(b.span(), &key("backing_disk"), check_abs_path(b.get_ref()))?;
                    unique(
                        ctx,
                        &mut backing,
                        b,
                        key("backing_disk"),
                        &owner,
                        "backing_disk",
                    )?;
                }
                let from_device = minor_of_device(s.device.get_ref());
                let (minor, minor_span, minor_key) = match (&s.drbd_minor, from_device) {
                    (Some(m), Some(d)) if *m.get_ref() != d => {
                        return Err(ctx.err(
                            m.span(),
                            key("drbd_minor"),
                            format!(
                                "drbd_minor {} contradicts device {} (minor {d})",
                                m.get_ref(),
                                s.device.get_ref().display()
                            ),
                        ))
                    }
                    (Some(m), _) => (*m.get_ref(), m.span(), key("drbd_minor")),
                    (None, Some(d)) => (d, s.device.span(), key("device")),
                    (None, None) => {
                        return Err(ctx.err(
                            s.device.span(),
                            key("device"),
                            format!(
                                "replicated store needs a DRBD minor: use a /dev/drbdN device (not {}) or set drbd_minor",
                                s.device.get_ref().display()
                            ),
                        ))
                    }
                };
                if let Some((other, line)) =
                    minors.insert(minor, owner.clone(), ctx.line(&minor_span))
                {
                    return Err(ctx.err(
                        minor_span,
                        minor_key,
                        format!("DRBD minor {minor} is already used by {other} (line {line})"),
                    ));
                }
                let (port, port_span, port_key, how) = match &s.drbd_port {
                    Some(p) if *p.get_ref() == 0 => {
                        return Err(ctx.err(
                            p.span(),
                            key("drbd_port"),
                            "port 0 is not a valid DRBD port",
                        ));
                    }
                    Some(p) => (*p.get_ref(), p.span(), key("drbd_port"), String::new()),
                    None => {
                        let port = u16::try_from(minor)
                            .ok()
                            .and_then(|m| DEFAULT_DRBD_BASE_PORT.checked_add(m))
                            .ok_or_else(|| {
                                ctx.err(
                                    res.span(),
                                    key("drbd_port"),
                                    format!("default port 7788 + minor {minor} is not a TCP port; set drbd_port"),
                                )
                            })?;
                        (
                            port,
                            res.span(),
                            key("drbd_resource"),
                            format!(" (default 7788 + minor {minor})"),
                        )
                    }
                };
                if let Some((other, line)) = ports.insert(port, owner.clone(), ctx.line(&port_span))
                {
                    return Err(ctx.err(
                        port_span,
                        port_key,
                        format!("DRBD port {port}{how} is already used by {other} (line {line})"),
                    ));
                }
                drbd_port = Some(port);
            }
        }

        if let Some(dir) = &s.replica_dir {
            ctx.check(
                dir.span(),
                &key("replica_dir"),
                check_hook_path(dir.get_ref()),
            )?;
            if dir.get_ref() == &s.mountpoint.get_ref().join("containers") {
                return Err(ctx.err(
                    dir.span(),
                    key("replica_dir"),
                    "replica_dir is this store's own lxcpath; replicas would overwrite the originals",
                ));
            }
            replica_dirs.push((i, key("replica_dir"), dir.span()));
        }

        stores.push(Store {
            name,
            home: s.home.into_inner(),
            mountpoint: s.mountpoint.into_inner(),
            device: s.device.into_inner(),
            mount_options: s.mount_options.map(Spanned::into_inner),
            drbd_resource: s.drbd_resource.map(Spanned::into_inner),
            backing_disk: s.backing_disk.map(Spanned::into_inner),
            drbd_port,
            drbd_minor: s.drbd_minor.map(Spanned::into_inner),
            replica_dir: s.replica_dir.map(Spanned::into_inner),
        });
    }
    for (i, key, span) in replica_dirs {
        ctx.check(span, &key, check_replica_dir(&stores, &stores[i]))?;
    }
    Ok(stores)
}

/// An explicit `replica_dir` must lie inside a store homed on another node
/// than `store` (safety: the peer writes there, and only into a store it
/// mounts; never into `/etc` or the root file system).
fn check_replica_dir(stores: &[Store], store: &Store) -> Result<(), String> {
    let Some(dir) = &store.replica_dir else {
        return Ok(());
    };
    let shown = dir.display().to_string();
    let host = stores
        .iter()
        .filter(|s| dir.starts_with(&s.mountpoint))
        .max_by_key(|s| s.mountpoint.components().count());
    match host {
        None => Err(format!(
            "{shown:?} is not inside any store's mountpoint; the peer writes replicas there, so it must be a directory on a store homed on the other node (e.g. that store's lxcpath <mountpoint>/containers)"
        )),
        Some(h) if h.name == store.name => Err(format!(
            "{shown:?} is inside store {:?} itself; point it at a store homed on the other node",
            store.name
        )),
        Some(h) if h.home == store.home => Err(format!(
            "{shown:?} is on store {:?}, homed on {} like store {:?} itself; replicas must live on a store homed on the other node",
            h.name, h.home, store.name
        )),
        Some(_) => Ok(()),
    }
}

/// Fails when another store already uses `value` for `what`.
fn unique<T: Clone + std::hash::Hash + Eq + fmt::Debug>(
    ctx: &Ctx<'_>,
    seen: &mut Seen<T>,
    value: &Sp<T>,
    key: String,
    owner: &str,
    what: &str,
) -> Result<(), ConfigError> {
    match seen.insert(
        value.get_ref().clone(),
        owner.to_owned(),
        ctx.line(&value.span()),
    ) {
        Some((other, line)) => Err(ctx.err(
            value.span(),
            key,
            format!(
                "{:?} is already the {what} of {other} (line {line})",
                value.get_ref()
            ),
        )),
        None => Ok(()),
    }
}

/// Checks counts and `keep_within` with their own spans, then the whole policy.
fn build_policy(
    ctx: &Ctx<'_>,
    prefix: &str,
    span: Range<usize>,
    counts: [(&'static str, Option<Sp<i64>>); 6],
    within: Option<Sp<String>>,
    defaults: &SnapshotPolicy,
) -> Result<SnapshotPolicy, ConfigError> {
    let mut values = defaults.counts().map(|(_, v)| v);
    for (slot, (rule, raw)) in values.iter_mut().zip(counts) {
        if let Some(v) = raw {
            ctx.check(
                v.span(),
                &format!("{prefix}.{rule}"),
                check_count(rule, *v.get_ref()),
            )?;
            *slot = *v.get_ref();
        }
    }
    if let Some(w) = &within {
        ctx.check(
            w.span(),
            &format!("{prefix}.keep_within"),
            crate::retention::parse_within(w.get_ref()).map(|_| ()),
        )?;
    }
    let [keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly] = values;
    let policy = SnapshotPolicy {
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        keep_within: within
            .map(Spanned::into_inner)
            .or_else(|| defaults.keep_within.clone()),
        freeze: defaults.freeze,
    };
    ctx.check(span, prefix, policy.check())?;
    Ok(policy)
}

fn build_snapshots(
    ctx: &Ctx<'_>,
    raw: Option<Sp<RawPolicy>>,
) -> Result<SnapshotPolicy, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SnapshotPolicy::default());
    };
    let span = raw.span();
    let r = raw.into_inner();
    let mut policy = build_policy(
        ctx,
        "snapshots",
        span,
        [
            ("keep_last", r.keep_last),
            ("keep_hourly", r.keep_hourly),
            ("keep_daily", r.keep_daily),
            ("keep_weekly", r.keep_weekly),
            ("keep_monthly", r.keep_monthly),
            ("keep_yearly", r.keep_yearly),
        ],
        r.keep_within,
        &SnapshotPolicy::default(),
    )?;
    if let Some(freeze) = r.freeze {
        policy.freeze = freeze.into_inner();
    }
    Ok(policy)
}

fn build_targets(ctx: &Ctx<'_>, raw: Vec<Sp<RawTarget>>) -> Result<Vec<BackupTarget>, ConfigError> {
    let none = SnapshotPolicy {
        keep_last: 0,
        keep_hourly: 0,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
        keep_yearly: 0,
        keep_within: None,
        freeze: false,
    };
    let mut names = Seen::new();
    let mut targets = Vec::new();
    for (i, spanned) in raw.into_iter().enumerate() {
        let k = format!("backup_target[{i}]");
        let span = spanned.span();
        let t = spanned.into_inner();
        let name = t.name.get_ref().clone();
        ctx.check(
            t.name.span(),
            &format!("{k}.name"),
            names::validate("backup target", &name),
        )?;
        if let Some((other, line)) = names.insert(name.clone(), k.clone(), ctx.line(&t.name.span()))
        {
            return Err(ctx.err(
                t.name.span(),
                format!("{k}.name"),
                format!("backup target name {name:?} is already used by {other} (line {line})"),
            ));
        }
        ctx.check(
            t.path.span(),
            &format!("{k}.path"),
            parse_target_path(t.path.get_ref()).map(|_| ()),
        )?;
        let policy = build_policy(
            ctx,
            &k,
            span,
            [
                ("keep_last", t.keep_last),
                ("keep_hourly", t.keep_hourly),
                ("keep_daily", t.keep_daily),
                ("keep_weekly", t.keep_weekly),
                ("keep_monthly", t.keep_monthly),
                ("keep_yearly", t.keep_yearly),
            ],
            t.keep_within,
            &none,
        )?;
        targets.push(BackupTarget {
            name,
            path: t.path.into_inner(),
            keep_last: policy.keep_last,
            keep_hourly: policy.keep_hourly,
            keep_daily: policy.keep_daily,
            keep_weekly: policy.keep_weekly,
            keep_monthly: policy.keep_monthly,
            keep_yearly: policy.keep_yearly,
            keep_within: policy.keep_within,
        });
    }
    Ok(targets)
}

fn build_drbd(ctx: &Ctx<'_>, raw: RawDrbd) -> Result<DrbdSettings, ConfigError> {
    if let Some(f) = &raw.secret_file {
        ctx.check(f.span(), "drbd.secret_file", check_abs_path(f.get_ref()))?;
    }
    if let Some(v) = &raw.version {
        if !matches!(v.get_ref().as_str(), "9" | "8.4") {
            return Err(ctx.err(
                v.span(),
                "drbd.version",
                format!(
                    "unsupported DRBD version {:?}; use \"9\" or \"8.4\"",
                    v.get_ref()
                ),
            ));
        }
    }
    Ok(DrbdSettings {
        secret_file: raw.secret_file.map(Spanned::into_inner),
        version: raw.version.map(Spanned::into_inner),
    })
}

// ---------------------------------------------------------------------------
// Value checks (messages are completed with the key path by the caller)

fn check_abs_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!(
            "{:?} is not an absolute path",
            path.display().to_string()
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{:?} contains \"..\"", path.display().to_string()));
    }
    Ok(())
}

/// An absolute path that ends up on a container's `lxc.hook.pre-start`
/// line, which LXC hands to a shell: plain path characters only.
fn check_hook_path(path: &Path) -> Result<(), String> {
    check_abs_path(path)?;
    if let Some(c) = path
        .to_string_lossy()
        .chars()
        .find(|c| c.is_whitespace() || "'\"\\$`;&|<>()*?[]{}!#~".contains(*c))
    {
        return Err(format!(
            "{:?} contains {c:?}; use a path of letters, digits and / . _ - + , : @ = (it is written on the LXC hook line, which LXC runs through a shell)",
            path.display().to_string()
        ));
    }
    Ok(())
}

/// Linux interface names: 1 to 15 bytes; we also keep to name characters.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "interface name {name:?} must be 1 to 15 characters"
        ));
    }
    if name == "."
        || name.starts_with('-')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "interface name {name:?} may only use letters, digits, '_', '.', '-' and must not start with '-'"
        ));
    }
    Ok(())
}

/// An ssh destination becomes one argument of ssh: no option, no spaces.
fn check_ssh_destination(dest: &str) -> Result<(), String> {
    if dest.is_empty() {
        return Err("ssh destination is empty".to_owned());
    }
    if dest.starts_with('-') {
        return Err(format!("ssh destination {dest:?} must not start with '-'"));
    }
    if dest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "ssh destination {dest:?} must not contain whitespace"
        ));
    }
    Ok(())
}

fn check_mount_options(opts: &str) -> Result<(), String> {
    if opts.is_empty()
        || opts.starts_with('-')
        || opts.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "mount options {opts:?} must be a comma-separated list without spaces, as for mount -o"
        ));
    }
    Ok(())
}

/// `/abs/path` or `ssh://[user@]host[:port]/abs/path`.
fn parse_target_path(text: &str) -> Result<TargetLocation, String> {
    let Some(rest) = text.strip_prefix("ssh://") else {
        let path = Path::new(text);
        check_abs_path(path)
            .map_err(|e| format!("{e}; use an absolute path or ssh://host/path"))?;
        return Ok(TargetLocation::Local(path.to_owned()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => {
            return Err(format!(
                "{text:?} has no path after the host; use ssh://host/path"
            ))
        }
    };
    let (destination, port) = match authority.rsplit_once(':') {
        Some((dest, port)) => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{text:?} has an invalid port {port:?}"))?;
            (dest, Some(port))
        }
        None => (authority, None),
    };
    let host = destination.rsplit('@').next().unwrap_or(destination);
    if host.is_empty() {
        return Err(format!("{text:?} has no host; use ssh://host/path"));
    }
    check_ssh_destination(destination).map_err(|e| format!("{text:?}: {e}"))?;
    if path == "/" {
        return Err(format!(
            "{text:?}: the remote path must name a directory below /"
        ));
    }
    check_abs_path(Path::new(path)).map_err(|e| format!("{text:?}: {e}"))?;
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.,/+@:-".contains(*c)))
    {
        return Err(format!(
            "{text:?}: remote path contains {bad:?}; the remote shell would interpret it (allowed: letters, digits, _ . , / + @ : -)"
        ));
    }
    Ok(TargetLocation::Ssh {
        destination: destination.to_owned(),
        port,
        path: PathBuf::from(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNBOOK: &str = include_str!("../tests/fixtures/config/runbook.toml");
    const SINGLE: &str = include_str!("../tests/fixtures/config/single-host.toml");

    /// Lines 1-17; whatever a test appends starts on line 18.
    const BASE: &str = r#"[cluster]
name = "erp"

[[node]]
name = "node1"
address = "10.0.254.1"

[[node]]
name = "node2"
address = "10.0.254.2"

[[store]]
name = "store1"
home = "node1"
mountpoint = "/srv/store1"
device = "/dev/drbd0"
drbd_resource = "r0"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(DEFAULT_PATH))
    }

    /// (line, column, key, message) of the error `text` must produce.
    fn invalid(text: &str) -> (usize, usize, String, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line,
                column,
                key,
                message,
                ..
            }) => (line, column, key, message),
            other => panic!("expected a position error, got {other:?}"),
        }
    }

    /// Asserts the error's line, key and a part of its message.
    fn assert_invalid(text: &str, line: usize, key: &str, message_part: &str) {
        let (l, _, k, m) = invalid(text);
        assert_eq!(
            (l, k.as_str()),
            (line, key),
            "message was: {m}\n--- text:\n{text}"
        );
        assert!(m.contains(message_part), "{m:?} lacks {message_part:?}");
    }

    fn base_with(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    // --- the fixtures -----------------------------------------------------

    #[test]
    fn runbook_fixture_parses_completely() {
        let c = Config::parse(RUNBOOK, Path::new("/etc/ctmgr/cluster.toml")).unwrap();
        assert_eq!(c.path, Path::new("/etc/ctmgr/cluster.toml"));
        assert_eq!(c.cluster.name, "erp");
        assert_eq!(c.nodes.len(), 2);
        let n1 = c.node("node1").unwrap();
        assert_eq!(n1.address, Ipv4Addr::new(10, 0, 254, 1));
        assert_eq!(n1.ssh, "root@10.0.254.1");
        assert_eq!(n1.lan_address, Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!(
            (
                n1.uplink.as_str(),
                n1.lan_prefix,
                n1.peer_interface.as_str(),
                n1.peer_prefix
            ),
            ("eth0", 24, "eth1", 30)
        );
        let n2 = c.node("node2").unwrap();
        assert_eq!(n2.ssh, "root@10.0.254.2", "default ssh destination");
        assert_eq!(n2.lan_address, Some(Ipv4Addr::new(10, 1, 0, 6)));
        assert_eq!(n2.gateway, None);

        let s1 = c.store("store1").unwrap();
        assert_eq!(s1.home, "node1");
        assert_eq!(s1.mountpoint, Path::new("/srv/store1"));
        assert_eq!(s1.lxcpath(), Path::new("/srv/store1/containers"));
        assert_eq!(s1.device, Path::new("/dev/drbd0"));
        assert_eq!(s1.mount_options.as_deref(), Some("noatime"));
        assert_eq!(s1.drbd_resource.as_deref(), Some("r0"));
        assert_eq!(s1.backing_disk.as_deref(), Some(Path::new("/dev/sdb1")));
        assert_eq!((s1.drbd_port, s1.minor()), (Some(7788), Some(0)));
        assert!(s1.is_replicated());
        let s2 = c.store("store2").unwrap();
        assert_eq!((s2.drbd_port, s2.minor()), (Some(7789), Some(1)));
        assert_eq!(s2.home, "node2");

        assert_eq!(c.network.bridge, "br0");
        assert_eq!(c.network.gateway, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(c.gateway_for(n1), Some(Ipv4Addr::new(10, 1, 0, 1)));

        assert_eq!(
            c.snapshots,
            SnapshotPolicy {
                keep_within: Some("2d".into()),
                ..SnapshotPolicy::default()
            }
        );
        assert_eq!(c.backup_targets.len(), 1);
        let nas = &c.backup_targets[0];
        assert_eq!(
            (nas.name.as_str(), nas.path.as_str()),
            ("nas", "/backup/ctmgr")
        );
        assert_eq!(
            (
                nas.keep_last,
                nas.keep_daily,
                nas.keep_weekly,
                nas.keep_monthly,
                nas.keep_yearly
            ),
            (0, 14, 8, 12, 0)
        );
        assert_eq!(
            nas.location(),
            Ok(TargetLocation::Local(PathBuf::from("/backup/ctmgr")))
        );
        assert_eq!(c.tools.get("drbdadm"), Some(Path::new("/usr/sbin/drbdadm")));
        assert_eq!(c.tools.get("btrfs"), Some(Path::new("/usr/bin/btrfs")));
        assert_eq!(c.tools.get("lxc-start"), None);
        assert_eq!(c.drbd.version.as_deref(), Some("9"));
        assert_eq!(
            c.drbd.secret_file.as_deref(),
            Some(Path::new("/etc/ctmgr/drbd-secret"))
        );
    }

    #[test]
    fn single_host_fixture_parses_with_defaults() {
        let c = parse(SINGLE).unwrap();
        assert_eq!(c.nodes.len(), 1);
        let host = &c.nodes[0];
        assert_eq!(host.ssh, "root@192.168.10.2");
        assert_eq!(c.peer_of("host1"), None);
        let data = c.store("data").unwrap();
        assert!(!data.is_replicated());
        assert_eq!((data.drbd_port, data.minor()), (None, None));
        assert_eq!(data.device, Path::new("/dev/vdb"));
        assert_eq!(c.replica_dir(data), None, "no peer, no replica");
        assert_eq!(c.network, Network::default());
        assert_eq!(c.network.bridge, "br0");
        assert_eq!(c.snapshots, SnapshotPolicy::default());
        assert_eq!(c.snapshots.keep_last, 3);
        assert!(c.backup_targets.is_empty());
        assert_eq!(c.tools, Tools::default());
        assert_eq!(c.drbd, DrbdSettings::default());
        assert_eq!(c.gateway_for(host), None);
    }

    #[test]
    fn replica_dir_defaults_to_the_peer_store_lxcpath() {
        let explicit = "replica_dir = \"/srv/store2/containers\"\n";
        assert!(RUNBOOK.contains(explicit));
        let c = parse(&RUNBOOK.replace(explicit, "")).unwrap();
        let s1 = c.store("store1").unwrap();
        assert_eq!(s1.replica_dir, None);
        assert_eq!(
            c.replica_dir(s1),
            Some(PathBuf::from("/srv/store2/containers"))
        );
        assert_eq!(
            c.replica_dir(c.store("store2").unwrap()),
            Some(PathBuf::from("/srv/store1/containers"))
        );

        // An explicit replica_dir wins.
        let text = RUNBOOK.replace(explicit, "replica_dir = \"/srv/store2/replicas\"\n");
        let c = parse(&text).unwrap();
        assert_eq!(
            c.replica_dir(c.store("store1").unwrap()),
            Some(PathBuf::from("/srv/store2/replicas"))
        );

        // A peer that homes no store gives no default.
        let c = parse(BASE).unwrap();
        assert_eq!(c.replica_dir(c.store("store1").unwrap()), None);
    }

    #[test]
    fn look_ups() {
        let c = parse(RUNBOOK).unwrap();
        assert_eq!(c.peer_of("node1").map(|n| n.name.as_str()), Some("node2"));
        assert_eq!(c.peer_of("node2").map(|n| n.name.as_str()), Some("node1"));
        assert_eq!(c.peer_of("node3"), None);
        assert!(c.node("nodeX").is_none());
        assert!(c.store("store3").is_none());
        let homed: Vec<&str> = c
            .stores_homed_on("node2")
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(homed, ["store2"]);
        assert_eq!(c.stores_homed_on("node3").count(), 0);
    }

    #[test]
    fn per_node_gateway_overrides_network_gateway() {
        let text = RUNBOOK.replace(
            "lan_address = \"10.1.0.6\"\n",
            "lan_address = \"10.1.0.6\"\ngateway = \"10.1.0.254\"\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.gateway_for(c.node("node2").unwrap()),
            Some(Ipv4Addr::new(10, 1, 0, 254))
        );
        assert_eq!(
            c.gateway_for(c.node("node1").unwrap()),
            Some(Ipv4Addr::new(10, 1, 0, 1))
        );
    }

    #[test]
    fn resolve_node_by_flag_hostname_and_short_hostname() {
        let c = parse(RUNBOOK).unwrap();
        assert_eq!(
            c.resolve_node(Some("node2"), "node1").unwrap().name,
            "node2"
        );
        assert_eq!(c.resolve_node(None, "node1").unwrap().name, "node1");
        assert_eq!(
            c.resolve_node(None, "node2.erp.example.com").unwrap().name,
            "node2"
        );
        let err = c.resolve_node(Some("node9"), "node1").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownNode { .. }));
        assert_eq!(
            err.to_string(),
            "/etc/ctmgr/cluster.toml: node \"node9\" (from --node or CTMGR_NODE) is not defined; known nodes: node1, node2"
        );
        let err = c.resolve_node(None, "backup.example.com").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::HostNotANode { .. }));
        assert!(text.contains("\"backup.example.com\""), "{text}");
        assert!(text.contains("known nodes: node1, node2"), "{text}");
        assert!(text.contains("--node NAME or CTMGR_NODE"), "{text}");
    }

    // --- load ---------------------------------------------------------------

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, RUNBOOK).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.path, path);
        assert_eq!(c.stores.len(), 2);
    }

    #[test]
    fn load_of_a_missing_file_names_it_and_the_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound { .. }));
        let text = err.to_string();
        assert!(text.starts_with(&path.display().to_string()), "{text}");
        assert!(text.contains("--config PATH"), "{text}");
        assert!(text.contains("CTMGR_CONFIG"), "{text}");
    }

    #[test]
    fn load_of_an_unreadable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn load_reports_errors_with_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, base_with("bogus = 1\n")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:", path.display())), "{err}");
    }

    // --- syntax, unknown keys, types ---------------------------------------------

    #[test]
    fn error_display_is_file_line_column_key_message() {
        let text = RUNBOOK.replace(
            "mountpoint = \"/srv/store2\"",
            "mountpoint = \"/srv/store1\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        let line = text
            .lines()
            .position(|l| l.starts_with("mountpoint = \"/srv/store1\""))
            .unwrap()
            + 1;
        assert_eq!(line, 25);
        assert_eq!(
            err,
            format!(
                "/etc/ctmgr/cluster.toml:36:14: store[1].mountpoint: \"/srv/store1\" is already the mountpoint of store \"store1\" (line {line})"
            )
        );
    }

    #[test]
    fn toml_syntax_error() {
        let (line, column, key, message) = invalid(&base_with("backing_disk = \n"));
        assert_eq!((line, column), (18, 16));
        assert_eq!(key, "store[0].backing_disk");
        assert!(message.starts_with("toml syntax error: "), "{message}");
        assert!(!message.contains('\n'));

        let (line, _, key, _) = invalid("[cluster\nname = \"x\"\n");
        assert_eq!((line, key.as_str()), (1, "(top level)"));
        // Duplicate keys are TOML errors too.
        assert_invalid(
            &base_with("name = \"again\"\n"),
            18,
            "store[0].name",
            "duplicate key",
        );
    }

    #[test]
    fn unknown_top_level_key() {
        let (line, column, key, message) = invalid(&base_with("[extra]\nx = 1\n"));
        assert_eq!((line, column, key.as_str()), (18, 2, "extra"));
        assert!(
            message.starts_with("unknown key; expected one of"),
            "{message}"
        );
        assert!(message.contains("`store`"), "{message}");
        let (line, column, key, _) = invalid(&format!("colour = \"blue\"\n{BASE}"));
        assert_eq!((line, column, key.as_str()), (1, 1, "colour"));
    }

    #[test]
    fn unknown_key_in_a_table() {
        assert_invalid(
            &base_with("[network]\nbridge = \"br0\"\ngatway = \"10.1.0.1\"\n"),
            20,
            "network.gatway",
            "unknown key",
        );
        assert_invalid(
            &format!("{BASE}[snapshots]\nkeep_hourlies = 3\n"),
            19,
            "snapshots.keep_hourlies",
            "unknown key",
        );
    }

    #[test]
    fn unknown_key_in_an_array_of_tables() {
        let text = base_with(
            "\n[[store]]\nname = \"store2\"\nhome = \"node2\"\nmountpoint = \"/srv/store2\"\ndevice = \"/dev/drbd1\"\ndrbd_resource = \"r1\"\ndrbd_prot = 7789\n",
        );
        let (line, column, key, message) = invalid(&text);
        assert_eq!((line, column, key.as_str()), (25, 1, "store[1].drbd_prot"));
        assert!(
            message.contains("`drbd_port`"),
            "expected keys listed: {message}"
        );
        assert_invalid(
            &BASE.replace(
                "address = \"10.0.254.2\"",
                "address = \"10.0.254.2\"\nrole = \"primary\"",
            ),
            11,
            "node[1].role",
            "unknown key",
        );
    }

    #[test]
    fn unknown_tool_is_an_error() {
        assert_invalid(
            &base_with("[tools]\nrsync = \"/usr/bin/rsync\"\n"),
            19,
            "tools.rsync",
            "unknown key",
        );
    }

    #[test]
    fn missing_required_keys() {
        assert_invalid(
            &BASE.replace("device = \"/dev/drbd0\"\n", ""),
            12,
            "store[0].device",
            "missing required key",
        );
        assert_invalid(
            &BASE.replace("address = \"10.0.254.2\"\n", ""),
            8,
            "node[1].address",
            "missing required key",
        );
        let (_, _, key, message) = invalid(&BASE.replace("[cluster]\nname = \"erp\"\n", ""));
        assert_eq!(key, "cluster");
        assert_eq!(message, "missing required key");
        assert_invalid(
            &BASE.replace("name = \"erp\"", ""),
            1,
            "cluster.name",
            "missing required key",
        );
    }

    #[test]
    fn wrong_types() {
        let (line, column, key, message) = invalid(&base_with("drbd_port = \"7788\"\n"));
        assert_eq!((line, column, key.as_str()), (18, 13, "store[0].drbd_port"));
        assert!(
            message.contains("invalid type: string \"7788\", expected u16"),
            "{message}"
        );
        assert_invalid(
            &base_with("drbd_port = 70000\n"),
            18,
            "store[0].drbd_port",
            "expected u16",
        );
        assert_invalid(
            &BASE.replace("\"10.0.254.2\"", "\"10.0.254.300\""),
            10,
            "node[1].address",
            "invalid IPv4 address syntax",
        );
        assert_invalid(
            &BASE.replace("name = \"erp\"", "name = 7"),
            2,
            "cluster.name",
            "invalid type",
        );
        assert_invalid(
            &base_with("[snapshots]\nfreeze = \"yes\"\n"),
            19,
            "snapshots.freeze",
            "expected a boolean",
        );
        assert_invalid(
            &base_with("[snapshots]\nkeep_last = 1.5\n"),
            19,
            "snapshots.keep_last",
            "invalid type",
        );
        // A single [node] table where an array of tables belongs.
        let (_, _, key, message) =
            invalid("[cluster]\nname = \"x\"\n[node]\nname = \"a\"\naddress = \"10.0.0.1\"\n");
        assert_eq!(key, "node");
        assert!(message.contains("expected a sequence"), "{message}");
    }

    // --- nodes ------------------------------------------------------------------

    #[test]
    fn zero_nodes_is_an_error() {
        let (_, _, key, message) = invalid("[cluster]\nname = \"solo\"\n");
        assert_eq!(key, "node");
        assert!(message.contains("one or two nodes"), "{message}");
    }

    #[test]
    fn three_nodes_is_an_error() {
        let text = BASE.replace(
            "[[store]]",
            "[[node]]\nname = \"node3\"\naddress = \"10.0.254.3\"\n\n[[store]]",
        );
        assert_invalid(&text, 12, "node[2]", "at most 2 nodes, this file defines 3");
    }

    #[test]
    fn duplicate_node_name() {
        assert_invalid(
            &BASE.replace("name = \"node2\"", "name = \"node1\""),
            9,
            "node[1].name",
            "node name \"node1\" is already used by node[0] (line 5)",
        );
    }

    #[test]
    fn duplicate_node_addresses() {
        assert_invalid(
            &BASE.replace("\"10.0.254.2\"", "\"10.0.254.1\""),
            10,
            "node[1].address",
            "10.0.254.1 is already the address of node \"node1\" (line 6)",
        );
        // A LAN address equal to another node's peer-link address.
        assert_invalid(
            &BASE.replace(
                "address = \"10.0.254.2\"",
                "address = \"10.0.254.2\"\nlan_address = \"10.0.254.1\"",
            ),
            11,
            "node[1].lan_address",
            "is already the address of node \"node1\"",
        );
        // Or a node's own two addresses.
        assert_invalid(
            &BASE.replace(
                "address = \"10.0.254.2\"",
                "address = \"10.0.254.2\"\nlan_address = \"10.0.254.2\"",
            ),
            11,
            "node[1].lan_address",
            "is already the address of node \"node2\"",
        );
    }

    #[test]
    fn node_names_follow_rule_7() {
        assert_invalid(
            &BASE.replace("\"node2\"", "\"-node2\""),
            9,
            "node[1].name",
            "node name \"-node2\" must start with a letter or a digit",
        );
        assert_invalid(
            &BASE.replace("name = \"erp\"", "name = \"e r p\""),
            2,
            "cluster.name",
            "bad character ' '",
        );
    }

    #[test]
    fn ssh_destination_is_one_safe_argument() {
        let with_ssh = |ssh: &str| {
            BASE.replace(
                "address = \"10.0.254.2\"",
                &format!("address = \"10.0.254.2\"\nssh = {ssh:?}"),
            )
        };
        assert_invalid(
            &with_ssh("root@node2 -p 22"),
            11,
            "node[1].ssh",
            "must not contain whitespace",
        );
        assert_invalid(
            &with_ssh("-oProxyCommand=x"),
            11,
            "node[1].ssh",
            "must not start with '-'",
        );
        assert_invalid(&with_ssh(""), 11, "node[1].ssh", "empty");
        let c = parse(&with_ssh("admin@node2.lan")).unwrap();
        assert_eq!(c.node("node2").unwrap().ssh, "admin@node2.lan");
    }

    #[test]
    fn network_settings_of_a_node() {
        let with = |extra: &str| {
            BASE.replace(
                "address = \"10.0.254.2\"",
                &format!("address = \"10.0.254.2\"\n{extra}"),
            )
        };
        assert_invalid(
            &with("lan_prefix = 33"),
            11,
            "node[1].lan_prefix",
            "out of range 1..=32",
        );
        assert_invalid(
            &with("peer_prefix = 0"),
            11,
            "node[1].peer_prefix",
            "out of range 1..=32",
        );
        assert_invalid(
            &with("uplink = \"eth1\""),
            11,
            "node[1].peer_interface",
            "also the uplink",
        );
        assert_invalid(
            &with("uplink = \"br0\""),
            11,
            "node[1].uplink",
            "the bridge itself",
        );
        assert_invalid(
            &with("uplink = \"a-very-long-interface\""),
            11,
            "node[1].uplink",
            "1 to 15",
        );
        assert_invalid(
            &with("peer_interface = \"eth 1\""),
            11,
            "node[1].peer_interface",
            "may only use",
        );
        let c = parse(&with(
            "uplink = \"enp1s0\"\npeer_interface = \"enp2s0\"\nlan_prefix = 16",
        ))
        .unwrap();
        let n2 = c.node("node2").unwrap();
        assert_eq!(
            (
                n2.uplink.as_str(),
                n2.peer_interface.as_str(),
                n2.lan_prefix
            ),
            ("enp1s0", "enp2s0", 16)
        );
    }

    #[test]
    fn gateway_must_be_on_the_nodes_lan() {
        let outside = RUNBOOK.replace("gateway = \"10.1.0.1\"", "gateway = \"10.2.0.1\"");
        let line = outside
            .lines()
            .position(|l| l.contains("10.2.0.1"))
            .unwrap()
            + 1;
        assert_invalid(
            &outside,
            line,
            "network.gateway",
            "outside node \"node1\"'s LAN 10.1.0.5/24",
        );
        let own = RUNBOOK.replace(
            "lan_address = \"10.1.0.6\"\n",
            "lan_address = \"10.1.0.6\"\ngateway = \"10.1.0.6\"\n",
        );
        assert_invalid(&own, 21, "node[1].gateway", "own lan_address");
        // A wider prefix brings it in.
        let text = outside
            .replace("lan_prefix = 24", "lan_prefix = 14")
            .replace(
                "lan_address = \"10.1.0.6\"",
                "lan_address = \"10.1.0.6\"\nlan_prefix = 14",
            );
        parse(&text).unwrap();
    }

    // --- stores -----------------------------------------------------------------

    const STORE2: &str = "\n[[store]]\nname = \"store2\"\nhome = \"node2\"\nmountpoint = \"/srv/store2\"\ndevice = \"/dev/drbd1\"\ndrbd_resource = \"r1\"\n";

    /// BASE plus a second replicated store (lines 19-24), changed by `edit`.
    fn two_stores(from: &str, to: &str) -> String {
        let store2 = STORE2.replace(from, to);
        assert_ne!(store2, STORE2, "{from:?} not found");
        base_with(&store2)
    }

    #[test]
    fn home_must_be_a_known_node() {
        assert_invalid(
            &BASE.replace("home = \"node1\"", "home = \"node3\""),
            14,
            "store[0].home",
            "unknown node \"node3\"; nodes are: node1, node2",
        );
    }

    #[test]
    fn duplicate_store_name() {
        assert_invalid(
            &two_stores("\"store2\"", "\"store1\""),
            20,
            "store[1].name",
            "store name \"store1\" is already used by store[0] (line 13)",
        );
    }

    #[test]
    fn store_names_follow_rule_7() {
        assert_invalid(
            &BASE.replace("\"store1\"", "\"../store1\""),
            13,
            "store[0].name",
            "store name \"../store1\" contains \"..\"",
        );
        assert_invalid(
            &BASE.replace("\"r0\"", "\"r 0\""),
            17,
            "store[0].drbd_resource",
            "drbd resource name \"r 0\" contains bad character ' '",
        );
    }

    #[test]
    fn two_stores_on_one_mountpoint() {
        let (line, column, key, message) = invalid(&two_stores("/srv/store2", "/srv/store1/"));
        assert_eq!(
            (line, column, key.as_str()),
            (22, 14, "store[1].mountpoint")
        );
        assert_eq!(
            message,
            "\"/srv/store1/\" is already the mountpoint of store \"store1\" (line 15)"
        );
    }

    #[test]
    fn two_stores_on_one_device() {
        assert_invalid(
            &two_stores("/dev/drbd1", "/dev/drbd0"),
            23,
            "store[1].device",
            "\"/dev/drbd0\" is already the device of store \"store1\" (line 16)",
        );
    }

    #[test]
    fn two_stores_with_one_drbd_resource() {
        assert_invalid(
            &two_stores("\"r1\"", "\"r0\""),
            24,
            "store[1].drbd_resource",
            "\"r0\" is already the drbd_resource of store \"store1\" (line 17)",
        );
    }

    #[test]
    fn two_stores_on_one_drbd_port() {
        // Explicit against explicit.
        let text = BASE.replace(
            "drbd_resource = \"r0\"",
            "drbd_resource = \"r0\"\ndrbd_port = 7800",
        ) + &STORE2.replace("\"r1\"", "\"r1\"\ndrbd_port = 7800");
        assert_invalid(
            &text,
            26,
            "store[1].drbd_port",
            "DRBD port 7800 is already used by store \"store1\" (line 18)",
        );
        // Explicit against the default 7788 + minor of the other.
        let text = base_with(&STORE2.replace("\"r1\"", "\"r1\"\ndrbd_port = 7788"));
        assert_invalid(
            &text,
            25,
            "store[1].drbd_port",
            "DRBD port 7788 is already used by store \"store1\"",
        );
        // Default against explicit: the message says where the port came from.
        let text = BASE.replace(
            "drbd_resource = \"r0\"",
            "drbd_resource = \"r0\"\ndrbd_port = 7789",
        ) + STORE2;
        assert_invalid(
            &text,
            25,
            "store[1].drbd_resource",
            "DRBD port 7789 (default 7788 + minor 1) is already used by store \"store1\" (line 18)",
        );
    }

    #[test]
    fn drbd_port_defaults_to_7788_plus_minor() {
        let c = parse(&base_with(STORE2)).unwrap();
        assert_eq!(c.store("store1").unwrap().drbd_port, Some(7788));
        assert_eq!(c.store("store2").unwrap().drbd_port, Some(7789));
        let c = parse(&BASE.replace("/dev/drbd0", "/dev/drbd12")).unwrap();
        assert_eq!(c.stores[0].drbd_port, Some(7800));
        assert_eq!(c.stores[0].minor(), Some(12));
    }

    #[test]
    fn drbd_port_zero_is_invalid() {
        assert_invalid(
            &base_with("drbd_port = 0\n"),
            18,
            "store[0].drbd_port",
            "port 0 is not a valid DRBD port",
        );
        // Low ports are the admin's business.
        let c = parse(&base_with("drbd_port = 700\n")).unwrap();
        assert_eq!(c.stores[0].drbd_port, Some(700));
    }

    #[test]
    fn drbd_settings_without_drbd_resource_are_errors() {
        let local = BASE.replace("drbd_resource = \"r0\"\n", "");
        assert_invalid(
            &format!("{local}drbd_port = 7788\n"),
            17,
            "store[0].drbd_port",
            "drbd_port is set but drbd_resource is not",
        );
        assert_invalid(
            &format!("{local}drbd_minor = 0\n"),
            17,
            "store[0].drbd_minor",
            "drbd_resource is not",
        );
        assert_invalid(
            &format!("{local}backing_disk = \"/dev/sdb1\"\n"),
            17,
            "store[0].backing_disk",
            "drbd_resource is not",
        );
        // Without them it is a fine local store.
        assert!(!parse(&local).unwrap().stores[0].is_replicated());
    }

    #[test]
    fn replicated_store_needs_a_minor() {
        let text = BASE.replace("/dev/drbd0", "/dev/drbd/by-res/r0/0");
        assert_invalid(&text, 16, "store[0].device", "needs a DRBD minor");
        let c = parse(&format!("{text}drbd_minor = 5\n")).unwrap();
        assert_eq!(
            (c.stores[0].minor(), c.stores[0].drbd_port),
            (Some(5), Some(7793))
        );
        assert_invalid(
            &base_with("drbd_minor = 3\n"),
            18,
            "store[0].drbd_minor",
            "contradicts device /dev/drbd0 (minor 0)",
        );
        // Two stores on one minor.
        let text = base_with(&STORE2.replace(
            "\"/dev/drbd1\"",
            "\"/dev/drbd/by-res/r1/0\"\ndrbd_minor = 0",
        ));
        assert_invalid(
            &text,
            24,
            "store[1].drbd_minor",
            "DRBD minor 0 is already used by store \"store1\"",
        );
        // Huge minors have no default port.
        let text = BASE.replace("/dev/drbd0", "/dev/drbd70000");
        assert_invalid(&text, 17, "store[0].drbd_port", "set drbd_port");
        assert!(parse(&format!("{text}drbd_port = 7000\n")).is_ok());
    }

    #[test]
    fn store_paths_must_not_need_shell_quoting() {
        let text = RUNBOOK.replace(
            "mountpoint = \"/srv/store1\"",
            "mountpoint = \"/srv/store 1\"",
        );
        let err = Config::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mountpoint") && err.contains("' '"), "{err}");
    }

    #[test]
    fn store_paths_must_be_absolute() {
        assert_invalid(
            &BASE.replace("\"/srv/store1\"", "\"srv/store1\""),
            15,
            "store[0].mountpoint",
            "\"srv/store1\" is not an absolute path",
        );
        assert_invalid(
            &BASE.replace("\"/dev/drbd0\"", "\"drbd0\""),
            16,
            "store[0].device",
            "not an absolute path",
        );
        assert_invalid(
            &BASE.replace("\"/srv/store1\"", "\"/srv/../etc\""),
            15,
            "store[0].mountpoint",
            "contains \"..\"",
        );
        assert_invalid(
            &BASE.replace("\"/srv/store1\"", "\"/\""),
            15,
            "store[0].mountpoint",
            "cannot be mounted on /",
        );
        assert_invalid(
            &base_with("backing_disk = \"sdb1\"\n"),
            18,
            "store[0].backing_disk",
            "not an absolute path",
        );
        assert_invalid(
            &base_with("replica_dir = \"replicas\"\n"),
            18,
            "store[0].replica_dir",
            "not an absolute path",
        );
    }

    /// D17: the peer writes replicas into `replica_dir`; outside every
    /// store (`/etc/...`, the root file system) it is refused at load.
    #[test]
    fn replica_dir_must_be_on_a_store_of_the_other_node() {
        for outside in ["/etc/cron.d", "/srv/replicas", "/srv/store", "/"] {
            assert_invalid(
                &two_stores(
                    "drbd_resource = \"r1\"\n",
                    &format!("drbd_resource = \"r1\"\nreplica_dir = \"{outside}\"\n"),
                ),
                25,
                "store[1].replica_dir",
                "is not inside any store's mountpoint",
            );
        }
        // Inside its own store (not its lxcpath) is refused too.
        assert_invalid(
            &base_with("replica_dir = \"/srv/store1/replicas\"\n"),
            18,
            "store[0].replica_dir",
            "inside store \"store1\" itself",
        );
        // On a store of the same home: that store fails over with it.
        let same_home = two_stores("home = \"node2\"", "home = \"node1\"");
        assert_invalid(
            &same_home.replace(
                "drbd_resource = \"r0\"\n",
                "drbd_resource = \"r0\"\nreplica_dir = \"/srv/store2/containers\"\n",
            ),
            18,
            "store[0].replica_dir",
            "homed on node1 like store \"store1\"",
        );
        // A store declared later may host it.
        let ok = base_with(STORE2).replace(
            "drbd_resource = \"r0\"\n",
            "drbd_resource = \"r0\"\nreplica_dir = \"/srv/store2/replicas\"\n",
        );
        let c = parse(&ok).unwrap();
        assert_eq!(
            c.replica_dir(c.store("store1").unwrap()),
            Some(PathBuf::from("/srv/store2/replicas"))
        );
    }

    /// D18: one store's mountpoint inside (or around) another's.
    #[test]
    fn store_mountpoints_must_not_nest() {
        let (line, _, key, message) = invalid(&two_stores("/srv/store2", "/srv/store1/sub"));
        assert_eq!(
            (line, key.as_str()),
            (22, "store[1].mountpoint"),
            "{message}"
        );
        assert_eq!(
            message,
            "\"/srv/store1/sub\" is inside \"/srv/store1\", the mountpoint of store \"store1\" (line 15); store mountpoints must not nest"
        );
        let (line, _, key, message) = invalid(&two_stores("/srv/store2", "/srv"));
        assert_eq!(
            (line, key.as_str()),
            (22, "store[1].mountpoint"),
            "{message}"
        );
        assert!(message.contains("is around \"/srv/store1\""), "{message}");
        // A common prefix of characters is not nesting.
        parse(&two_stores("/srv/store2", "/srv/store10")).unwrap();
    }

    #[test]
    fn replica_dir_cannot_be_the_stores_own_lxcpath() {
        assert_invalid(
            &base_with("replica_dir = \"/srv/store1/containers\"\n"),
            18,
            "store[0].replica_dir",
            "would overwrite the originals",
        );
    }

    #[test]
    fn mount_options_are_one_argument() {
        assert_invalid(
            &base_with("mount_options = \"noatime, compress=zstd\"\n"),
            18,
            "store[0].mount_options",
            "without spaces",
        );
        assert_invalid(
            &base_with("mount_options = \"\"\n"),
            18,
            "store[0].mount_options",
            "without spaces",
        );
        let c = parse(&base_with("mount_options = \"noatime,compress=zstd\"\n")).unwrap();
        assert_eq!(
            c.stores[0].mount_options.as_deref(),
            Some("noatime,compress=zstd")
        );
    }

    // --- snapshots and backup targets ---------------------------------------------

    #[test]
    fn snapshot_policy_defaults_fill_missing_keys() {
        let c = parse(&base_with("[snapshots]\nkeep_daily = 30\nfreeze = true\n")).unwrap();
        assert_eq!(
            c.snapshots,
            SnapshotPolicy {
                keep_daily: 30,
                freeze: true,
                ..SnapshotPolicy::default()
            }
        );
        let c = parse(&base_with("[snapshots]\nkeep_last = -1\n")).unwrap();
        assert_eq!(c.snapshots.keep_last, -1);
    }

    #[test]
    fn counts_below_minus_one_are_errors() {
        assert_invalid(
            &base_with("[snapshots]\nkeep_weekly = -2\n"),
            19,
            "snapshots.keep_weekly",
            "keep_weekly = -2 is invalid",
        );
        assert_invalid(
            &base_with("[[backup_target]]\nname = \"nas\"\npath = \"/b\"\nkeep_daily = -5\n"),
            21,
            "backup_target[0].keep_daily",
            "keep_daily = -5 is invalid",
        );
    }

    #[test]
    fn policy_that_keeps_nothing_is_an_error() {
        let zeros = "[snapshots]\nkeep_last = 0\nkeep_hourly = 0\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\nkeep_yearly = 0\n";
        assert_invalid(&base_with(zeros), 18, "snapshots", "policy keeps nothing");
        assert_invalid(
            &base_with(&format!("{zeros}keep_within = \"0d\"\n")),
            18,
            "snapshots",
            "policy keeps nothing",
        );
        let c = parse(&base_with(&format!("{zeros}keep_within = \"7d\"\n"))).unwrap();
        assert_eq!(
            c.snapshots.within(),
            Ok(Some(crate::retention::parse_within("7d").unwrap()))
        );
        // A backup target's counts default to 0, so it must say what it keeps.
        assert_invalid(
            &base_with("[[backup_target]]\nname = \"nas\"\npath = \"/backup\"\n"),
            18,
            "backup_target[0]",
            "policy keeps nothing",
        );
    }

    #[test]
    fn keep_within_must_parse() {
        assert_invalid(
            &base_with("[snapshots]\nkeep_within = \"2 days\"\n"),
            19,
            "snapshots.keep_within",
            "unknown unit ' ' after number 2",
        );
        assert_invalid(
            &base_with("[[backup_target]]\nname = \"nas\"\npath = \"/b\"\nkeep_within = \"1w\"\n"),
            21,
            "backup_target[0].keep_within",
            "unknown unit 'w'",
        );
    }

    #[test]
    fn duplicate_backup_target_name() {
        let t = "[[backup_target]]\nname = \"nas\"\npath = \"/backup/a\"\nkeep_daily = 1\n";
        assert_invalid(
            &base_with(&format!("{t}{}", t.replace("/backup/a", "/backup/b"))),
            23,
            "backup_target[1].name",
            "backup target name \"nas\" is already used by backup_target[0] (line 19)",
        );
        assert_invalid(
            &base_with(&t.replace("\"nas\"", "\"nas/offsite\"")),
            19,
            "backup_target[0].name",
            "bad character '/'",
        );
    }

    #[test]
    fn backup_target_paths() {
        let with = |path: &str| {
            base_with(&format!(
                "[[backup_target]]\nname = \"t\"\npath = {path:?}\nkeep_last = 1\n"
            ))
        };
        let c = parse(&with("ssh://backup@nas:2222/srv/backup")).unwrap();
        assert_eq!(
            c.backup_targets[0].location(),
            Ok(TargetLocation::Ssh {
                destination: "backup@nas".into(),
                port: Some(2222),
                path: PathBuf::from("/srv/backup"),
            })
        );
        assert_eq!(
            parse(&with("ssh://nas/b")).unwrap().backup_targets[0].location(),
            Ok(TargetLocation::Ssh {
                destination: "nas".into(),
                port: None,
                path: PathBuf::from("/b"),
            })
        );
        for (path, why) in [
            ("backup", "not an absolute path"),
            ("/backup/../etc", "contains \"..\""),
            ("ssh://nas", "no path after the host"),
            ("ssh:///backup", "no host"),
            ("ssh://-oProxyCommand=x/b", "must not start with '-'"),
            ("ssh://nas:0/b", "invalid port"),
            ("ssh://nas/", "below /"),
            ("ssh://nas/b;rm -rf x", "remote shell"),
            ("ssh://nas/b$(id)", "remote shell"),
        ] {
            assert_invalid(&with(path), 20, "backup_target[0].path", why);
        }
    }

    // --- tools and drbd -------------------------------------------------------

    #[test]
    fn tools_must_be_absolute() {
        assert_invalid(
            &base_with("[tools]\nlxc_start = \"lxc-start\"\n"),
            19,
            "tools.lxc_start",
            "\"lxc-start\" is not an absolute path",
        );
        let c = parse(&base_with(
            "[tools]\nlxc_start = \"/opt/lxc/bin/lxc-start\"\n",
        ))
        .unwrap();
        assert_eq!(
            c.tools.get("lxc-start"),
            Some(Path::new("/opt/lxc/bin/lxc-start"))
        );
        assert_eq!(
            c.tools.lxc_start.as_deref(),
            Some(Path::new("/opt/lxc/bin/lxc-start"))
        );
        assert_eq!(c.tools.get("no-such-tool"), None);
        assert!(Tools::PROGRAMS.contains(&"drbdsetup"));
    }

    #[test]
    fn drbd_settings() {
        assert_invalid(
            &base_with("[drbd]\nversion = \"8.3\"\n"),
            19,
            "drbd.version",
            "unsupported DRBD version \"8.3\"",
        );
        assert_invalid(
            &base_with("[drbd]\nsecret_file = \"secret\"\n"),
            19,
            "drbd.secret_file",
            "not an absolute path",
        );
        let c = parse(&base_with("[drbd]\nversion = \"8.4\"\n")).unwrap();
        assert_eq!(c.drbd.version.as_deref(), Some("8.4"));
        assert_eq!(c.drbd.secret_file, None);
    }

    // --- positions ---------------------------------------------------------------

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = base_with("mount_options = \"é\" # ü\nbogus = 1\n");
        let (line, column, ..) = invalid(&text);
        assert_eq!((line, column), (19, 1));
        let text = base_with("backing_disk = \"é\"\n");
        let (line, column, ..) = invalid(&text);
        assert_eq!((line, column), (18, 16));
        let text = "[cluster]\nname = \"ü\" ; oops\n";
        let (line, column, ..) = invalid(text);
        assert_eq!((line, column), (2, 12));
    }

    // --- policy helpers ---------------------------------------------------------

    #[test]
    fn overlay_replaces_only_what_is_set() {
        let base = SnapshotPolicy::default();
        assert_eq!(base.overlay(&PolicyOverride::default()), base);
        let ov = PolicyOverride {
            keep_daily: Some(30),
            keep_yearly: Some(-1),
            keep_within: Some("1m".into()),
            freeze: Some(true),
            ..PolicyOverride::default()
        };
        let p = base.overlay(&ov);
        assert_eq!(
            p,
            SnapshotPolicy {
                keep_daily: 30,
                keep_yearly: -1,
                keep_within: Some("1m".into()),
                freeze: true,
                ..SnapshotPolicy::default()
            }
        );
        // Overrides come from template files and are as strict.
        let parsed: PolicyOverride = toml::from_str("keep_last = 10\n").unwrap();
        assert_eq!(parsed.keep_last, Some(10));
        assert!(toml::from_str::<PolicyOverride>("keep_lots = 10\n").is_err());
    }

    #[test]
    fn policy_check() {
        assert_eq!(SnapshotPolicy::default().check(), Ok(()));
        let nothing = PolicyOverride {
            keep_last: Some(0),
            keep_hourly: Some(0),
            keep_daily: Some(0),
            keep_weekly: Some(0),
            keep_monthly: Some(0),
            keep_yearly: Some(0),
            ..PolicyOverride::default()
        };
        let p = SnapshotPolicy::default().overlay(&nothing);
        assert_eq!(p.check(), Err(PolicyError::KeepsNothing));
        assert_eq!(
            p.check().unwrap_err().to_string(),
            "policy keeps nothing: set a keep_* count other than 0, or keep_within"
        );
        let p = SnapshotPolicy::default().overlay(&PolicyOverride {
            keep_monthly: Some(-3),
            ..PolicyOverride::default()
        });
        assert_eq!(
            p.check(),
            Err(PolicyError::BadCount {
                rule: "keep_monthly",
                value: -3
            })
        );
        let p = SnapshotPolicy::default().overlay(&PolicyOverride {
            keep_within: Some("x".into()),
            ..PolicyOverride::default()
        });
        assert!(matches!(p.check(), Err(PolicyError::Within(_))));
    }

    #[test]
    fn backup_target_policy() {
        let c = parse(RUNBOOK).unwrap();
        let p = c.backup_targets[0].policy();
        assert_eq!(
            p.counts(),
            [
                ("keep_last", 0),
                ("keep_hourly", 0),
                ("keep_daily", 14),
                ("keep_weekly", 8),
                ("keep_monthly", 12),
                ("keep_yearly", 0)
            ]
        );
        assert!(!p.freeze);
    }
}
