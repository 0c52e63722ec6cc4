//! What the two simulated DRBD kernels do: state transitions for every command and the
//! "settle" step that derives the replication link from both nodes' facts. Pure over
//! [`State`] and [`Config`]; no I/O here.
//!
//! Connection model (documented in README.md):
//! - the link is possible when both nodes have the resource up, neither is crashed,
//!   the link is not cut and neither side is StandAlone (after `disconnect` or split brain);
//! - a node that is Primary while not connected is marked `primary_while_disconnected`
//!   (its data generation moved on, as DRBD's current UUID does);
//! - if neither side moved on, the link comes up at once; otherwise the UUID/bitmap
//!   handshake takes [`HANDSHAKE_STEPS`] steps (Connecting/WFConnection meanwhile), then:
//!   both moved on → split brain: StandAlone on both, as DRBD does after detecting it;
//!   resolve with `secondary` + `connect --discard-my-data` on the victim and `connect` on
//!   the survivor (the victim then resyncs as SyncTarget);
//! - connected with one side UpToDate and the other Inconsistent → resync, shown over
//!   [`crate::sync::RESYNC_DONE_STEP`] steps (see `sync.rs`); Outdated next to UpToDate
//!   becomes UpToDate at once (a bitmap-based resync of the few changed blocks).

use crate::config::{Config, Resource};
use crate::state::{Disk, NodeRes, Progress, ResState, Resync, Role, State, Stats};
use crate::sync::RESYNC_DONE_STEP;

/// Steps a diverged reconnect spends in the handshake (matches the 8.4 capture, where two
/// reads of /proc/drbd after `connect` show WFConnection, then Connected).
pub const HANDSHAKE_STEPS: u64 = 2;

/// Which DRBD generation the sim imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V9,
    V84,
}

/// A refused or failed kernel operation, printed DRBD's way: `lines` as drbdsetup prints
/// them, and (by drbdadm only) `Command '<setup>' terminated with exit code <code>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub lines: String,
    pub setup: String,
    pub code: i32,
}

/// Counts one invocation on every transition in flight.
pub fn tick(state: &mut State) {
    for r in state.resources.values_mut() {
        if let Some(h) = r.handshake.as_mut() {
            h.calls += 1;
        }
        if let Some(s) = r.resync.as_mut() {
            s.progress.calls += 1;
        }
    }
}

/// Brings every two-node resource's link state up to date.
pub fn settle(
    state: &mut State,
    cfg: &Config,
    step_ms: u64,
    size_kb: &dyn Fn(&Resource, &str) -> u64,
) {
    let link_cut = state.link_cut;
    for res in cfg.resources.values() {
        let (Some((a, _)), Some((b, _))) = (res.hosts.first(), res.hosts.get(1)) else {
            continue;
        };
        let crashed_a = state.crashed.contains(a);
        let crashed_b = state.crashed.contains(b);
        let sizes = (size_kb(res, a), size_kb(res, b));
        let r = state.resources.entry(res.name.clone()).or_default();
        settle_one(
            r,
            (a, b),
            sizes,
            crashed_a || crashed_b || link_cut,
            step_ms,
        );
    }
}

fn settle_one(
    r: &mut ResState,
    (a, b): (&str, &str),
    (size_a, size_b): (u64, u64),
    blocked: bool,
    step_ms: u64,
) {
    let na = r.nodes.entry(a.to_string()).or_default().clone();
    let nb = r.nodes.entry(b.to_string()).or_default().clone();
    let possible = na.up && nb.up && !blocked && !na.standalone && !nb.standalone;
    if !possible {
        r.connected = false;
        r.handshake = None;
        r.resync = None;
        for n in r.nodes.values_mut() {
            if n.up && n.role == Role::Primary {
                n.primary_while_disconnected = true;
            }
        }
        return;
    }
    if !r.connected {
        let diverged = na.primary_while_disconnected
            || nb.primary_while_disconnected
            || na.discard_my_data
            || nb.discard_my_data;
        if diverged {
            let steps = r
                .handshake
                .get_or_insert_with(Progress::start)
                .steps(step_ms);
            if steps < HANDSHAKE_STEPS {
                return;
            }
            r.handshake = None;
            let discard = na.discard_my_data || nb.discard_my_data;
            if na.primary_while_disconnected && nb.primary_while_disconnected && !discard {
                for n in r.nodes.values_mut() {
                    n.standalone = true;
                    n.split_brain = true;
                }
                return;
            }
            for n in r.nodes.values_mut() {
                if n.discard_my_data {
                    n.disk = Disk::Inconsistent;
                }
            }
        }
        r.connected = true;
        for n in r.nodes.values_mut() {
            n.primary_while_disconnected = false;
            n.discard_my_data = false;
            n.split_brain = false;
        }
    }
    let da = r.nodes[a].disk;
    let db = r.nodes[b].disk;
    for (me, other) in [(a, db), (b, da)] {
        let n = r.nodes.get_mut(me).expect("node entry");
        if n.disk == Disk::Outdated && other == Disk::UpToDate {
            n.disk = Disk::UpToDate;
        }
    }
    if r.resync.is_none() {
        let (da, db) = (r.nodes[a].disk, r.nodes[b].disk);
        let pair = match (da, db) {
            (Disk::UpToDate, Disk::Inconsistent) => Some((a, b)),
            (Disk::Inconsistent, Disk::UpToDate) => Some((b, a)),
            _ => None,
        };
        if let Some((src, tgt)) = pair {
            r.resync = Some(Resync {
                source: src.to_string(),
                target: tgt.to_string(),
                progress: Progress::start(),
            });
        }
    }
    if let Some(s) = r.resync.clone() {
        if s.progress.steps(step_ms) >= RESYNC_DONE_STEP {
            r.resync = None;
            // The whole device went over the wire: drbd_proc.c counts it as ns/dr on the
            // source and nr/dw on the target.
            let total = if s.source == a { size_a } else { size_b };
            if let Some(n) = r.nodes.get_mut(&s.source) {
                n.stats.ns += total;
                n.stats.dr += total;
            }
            if let Some(t) = r.nodes.get_mut(&s.target) {
                t.disk = Disk::UpToDate;
                t.stats.nr += total;
                t.stats.dw += total;
            }
        }
    }
}

/// Names used in failure messages: 9 addresses resources by name, 8.4's drbdsetup by minor.
pub struct Names<'a> {
    pub version: Version,
    pub res: &'a Resource,
    pub node: &'a str,
}

impl Names<'_> {
    fn minor(&self) -> u32 {
        self.res.host(self.node).map(|h| h.minor).unwrap_or(0)
    }

    fn peer_id(&self) -> u32 {
        self.res
            .peer_of(self.node)
            .map(|(p, _)| self.res.node_id(p))
            .unwrap_or(0)
    }

    fn addrs(&self) -> String {
        let me = self.res.host(self.node);
        let peer = self.res.peer_of(self.node).map(|(_, s)| s);
        match (me, peer) {
            (Some(m), Some(p)) => format!(
                "ipv4:{}:{} ipv4:{}:{}",
                m.address, m.port, p.address, p.port
            ),
            _ => String::new(),
        }
    }

    /// The drbdsetup command line drbdadm would have run (drbd-utils `drbdadm -d` output,
    /// checked with drbdadm 9.22; 8.4 names from the capture: `drbdsetup-84 primary 0`).
    pub fn setup(&self, cmd: &str, force: bool) -> String {
        let name = &self.res.name;
        let minor = self.minor();
        let f = if force { " --force" } else { "" };
        match (self.version, cmd) {
            (Version::V9, "connect" | "disconnect" | "cstate") => {
                format!("drbdsetup {cmd} {name} {}", self.peer_id())
            }
            (Version::V9, "dstate") => format!("drbdsetup dstate {minor}"),
            (Version::V9, _) => format!("drbdsetup {cmd} {name}{f}"),
            (Version::V84, "primary" | "secondary" | "role" | "dstate" | "cstate") => {
                format!("drbdsetup-84 {cmd} {minor}{f}")
            }
            (Version::V84, "connect") => {
                format!("drbdsetup-84 connect {name} {}", self.addrs())
            }
            (Version::V84, "disconnect") => format!("drbdsetup-84 disconnect {}", self.addrs()),
            (Version::V84, _) => format!("drbdsetup-84 {cmd} {name}"),
        }
    }

    /// The object a kernel message is about: `r0:` in 9, the minor `0:` in 8.4.
    pub fn obj(&self) -> String {
        match self.version {
            Version::V9 => self.res.name.clone(),
            Version::V84 => self.minor().to_string(),
        }
    }

    /// A state change the kernel refused (exit 11, as in the capture).
    pub fn state_failed(&self, cmd: &str, force: bool, text: &str) -> Failure {
        Failure {
            lines: format!("{}: State change failed: {text}\n", self.obj()),
            setup: self.setup(cmd, force),
            code: 11,
        }
    }

    /// The resource is not configured in the kernel.
    pub fn not_up(&self, cmd: &str, force: bool) -> Failure {
        let lines = match self.version {
            Version::V9 => format!("{}: Failure: (158) Unknown resource\n", self.res.name),
            Version::V84 => format!(
                "{}: Failure: (127) Device minor not allocated\nadditional info from kernel:\nunknown minor\n",
                self.minor()
            ),
        };
        Failure {
            lines,
            setup: self.setup(cmd, force),
            code: 10,
        }
    }

    fn drbdmeta(&self, what: &str) -> String {
        let disk = self
            .res
            .host(self.node)
            .map(|h| h.disk.as_str())
            .unwrap_or("");
        let fmt = match self.version {
            Version::V9 => "v09",
            Version::V84 => "v08",
        };
        format!("drbdmeta {} {fmt} {disk} internal {what}", self.minor())
    }

    /// drbdmeta refuses to touch the meta data of an attached device (drbdmeta.c).
    pub fn configured(&self, what: &str) -> Failure {
        Failure {
            lines: format!("Device '{}' is configured!\n", self.minor()),
            setup: self.drbdmeta(what),
            code: 20,
        }
    }
}

/// drbdmeta create-md (the caller prints drbdmeta's messages).
pub fn create_md(state: &mut State, n: &Names, force: bool) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if cur.up {
        let what = match n.version {
            Version::V9 => "create-md 1",
            Version::V84 => "create-md",
        };
        return Err(n.configured(what));
    }
    if cur.md && !force {
        return Err(Failure {
            lines: format!(
                "ctmgr-drbd-sim: meta data already exists on {} (real drbdmeta asks to confirm); use 'drbdadm create-md --force {}'\n",
                n.res.host(n.node).map(|h| h.disk.as_str()).unwrap_or("?"),
                n.res.name
            ),
            setup: String::new(),
            code: 20,
        });
    }
    let nr = state.node_res(&n.res.name, n.node);
    *nr = NodeRes {
        md: true,
        disk: Disk::Inconsistent,
        stats: Stats::fresh(),
        ..NodeRes::default()
    };
    Ok(())
}

pub fn up(state: &mut State, n: &Names) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if cur.up {
        return Err(n.configured("apply-al"));
    }
    if !cur.md {
        let disk = n
            .res
            .host(n.node)
            .map(|h| h.disk.clone())
            .unwrap_or_default();
        return Err(Failure {
            lines: format!(
                "{}: Failure: (119) No valid meta-data signature found.\n\n\t==> Use 'drbdadm create-md res' to initialize meta-data area. <==\n\n",
                n.minor()
            ),
            setup: match n.version {
                Version::V9 => format!("drbdsetup attach {} {disk} {disk} internal", n.minor()),
                Version::V84 => {
                    format!("drbdsetup-84 attach {} {disk} {disk} internal", n.minor())
                }
            },
            code: 10,
        });
    }
    let nr = state.node_res(&n.res.name, n.node);
    nr.up = true;
    nr.role = Role::Secondary;
    nr.standalone = false;
    nr.split_brain = false;
    nr.discard_my_data = false;
    nr.stats = Stats::fresh();
    Ok(())
}

pub fn down(state: &mut State, n: &Names, held_open: bool) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        return Ok(());
    }
    if cur.role == Role::Primary && held_open {
        return Err(n.state_failed("down", false, "(-12) Device is held open by someone"));
    }
    let nr = state.node_res(&n.res.name, n.node);
    nr.up = false;
    nr.role = Role::Secondary;
    nr.standalone = false;
    nr.split_brain = false;
    nr.discard_my_data = false;
    Ok(())
}

fn peer_view(state: &State, n: &Names) -> Option<(bool, NodeRes)> {
    let (peer, _) = n.res.peer_of(n.node)?;
    let connected = state
        .resources
        .get(&n.res.name)
        .map(|r| r.connected)
        .unwrap_or(false);
    Some((connected, state.get(&n.res.name, peer)))
}

pub fn primary(state: &mut State, n: &Names, force: bool) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        return Err(n.not_up("primary", force));
    }
    if cur.role == Role::Primary {
        return Ok(());
    }
    let peer = peer_view(state, n);
    let connected = peer.as_ref().map(|p| p.0).unwrap_or(false);
    if let Some((true, p)) = &peer {
        if p.role == Role::Primary {
            return Err(n.state_failed(
                "primary",
                force,
                "(-1) Multiple primaries not allowed by config",
            ));
        }
    }
    if cur.disk != Disk::UpToDate && !force {
        return Err(n.state_failed("primary", force, "(-2) Need access to UpToDate data"));
    }
    let forced_new_data = cur.disk != Disk::UpToDate;
    let nr = state.node_res(&n.res.name, n.node);
    nr.role = Role::Primary;
    nr.disk = Disk::UpToDate;
    if forced_new_data && connected {
        if let Some((peer, _)) = n.res.peer_of(n.node) {
            state.node_res(&n.res.name, peer).disk = Disk::Inconsistent;
        }
    }
    Ok(())
}

pub fn secondary(state: &mut State, n: &Names, held_open: bool) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        return Err(n.not_up("secondary", false));
    }
    if cur.role == Role::Secondary {
        return Ok(());
    }
    if held_open {
        return Err(n.state_failed("secondary", false, "(-12) Device is held open by someone"));
    }
    state.node_res(&n.res.name, n.node).role = Role::Secondary;
    Ok(())
}

pub fn connect(state: &mut State, n: &Names, discard: bool) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        return Err(n.not_up("connect", false));
    }
    if !cur.standalone {
        return match n.version {
            // DRBD 9: connecting an existing connection is nothing to do.
            Version::V9 => Ok(()),
            Version::V84 => Err(Failure {
                lines: format!(
                    "{}: Failure: (125) Device has a net-config (use disconnect first)\n",
                    n.minor()
                ),
                setup: n.setup("connect", false),
                code: 10,
            }),
        };
    }
    let nr = state.node_res(&n.res.name, n.node);
    nr.standalone = false;
    nr.split_brain = false;
    nr.discard_my_data = discard;
    // drbd 8.4 drbd_adm_connect() resets the per-device send/receive counters.
    nr.stats.ns = 0;
    nr.stats.nr = 0;
    Ok(())
}

pub fn disconnect(state: &mut State, n: &Names) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        return Err(n.not_up("disconnect", false));
    }
    let nr = state.node_res(&n.res.name, n.node);
    nr.standalone = true;
    nr.discard_my_data = false;
    Ok(())
}

/// `adjust`: make the kernel match the config: bring up what is down, reconnect what the
/// admin disconnected.
pub fn adjust(state: &mut State, n: &Names) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        return up(state, n);
    }
    if cur.standalone {
        return connect(state, n, false);
    }
    Ok(())
}

/// Control: the node dies. Its resources vanish; a Primary there is gone.
pub fn crash(state: &mut State, node: &str) {
    state.crashed.insert(node.to_string());
    for r in state.resources.values_mut() {
        if let Some(n) = r.nodes.get_mut(node) {
            n.up = false;
            n.role = Role::Secondary;
            n.standalone = false;
            n.discard_my_data = false;
            n.primary_while_disconnected = false;
        }
    }
}

/// Control: the node boots again (resources stay down until `up`). A disk whose peer was
/// promoted meanwhile comes back Outdated; it becomes UpToDate once reconnected.
pub fn revive(state: &mut State, cfg: &Config, node: &str) {
    state.crashed.remove(node);
    for res in cfg.resources.values() {
        let Some((peer, _)) = res.peer_of(node) else {
            continue;
        };
        let p = state.get(&res.name, peer);
        let me = state.node_res(&res.name, node);
        if p.primary_while_disconnected && me.disk == Disk::UpToDate {
            me.disk = Disk::Outdated;
        }
    }
}
