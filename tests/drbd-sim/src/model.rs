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

use crate::config::{Config, Fencing, Resource};
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
            res.fencing != Fencing::DontCare,
        );
    }
}

fn settle_one(
    r: &mut ResState,
    (a, b): (&str, &str),
    (size_a, size_b): (u64, u64),
    blocked: bool,
    step_ms: u64,
    fencing: bool,
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
        // A reconnect after exactly one side moved on: that side is the source of a
        // (bitmap) resync, which the sim completes at once (see below).
        let bitmap_source = match (na.primary_while_disconnected, nb.primary_while_disconnected) {
            (true, false) => Some(a),
            (false, true) => Some(b),
            _ => None,
        };
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
            // Connected: the peer's real disk state is known again.
            n.pdsk = None;
        }
        // DRBD calls unfence-peer on a SyncSource once the resync is done and both
        // disks are UpToDate (drbd_resync_finished). A full resync does it below.
        if let (true, Some(src)) = (fencing, bitmap_source) {
            let other = if src == a { b } else { a };
            let both_usable = r.nodes[src].disk == Disk::UpToDate
                && matches!(
                    r.nodes[other].disk,
                    Disk::UpToDate | Disk::Outdated | Disk::Consistent
                );
            if both_usable {
                r.nodes.get_mut(src).expect("node entry").unfence_pending = true;
            }
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
            if fencing {
                if let Some(n) = r.nodes.get_mut(&s.source) {
                    n.unfence_pending = true;
                }
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

    /// SS_NO_UP_TO_DATE_DISK: drbdsetup exits 17 for it (print_config_error()).
    pub fn no_uptodate(&self, cmd: &str, force: bool) -> Failure {
        Failure {
            code: 17,
            ..self.state_failed(cmd, force, "(-2) Need access to UpToDate data")
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
    // down demotes, then disconnects: a Secondary leaving a Primary outdates itself.
    state.node_res(&n.res.name, n.node).role = Role::Secondary;
    graceful_disconnect_fencing(state, n);
    let nr = state.node_res(&n.res.name, n.node);
    nr.up = false;
    nr.pdsk = None;
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

/// How many times drbd_set_role() tries a promotion (and so may call fence-peer).
pub const PRIMARY_TRIES: u32 = 4;

/// One promotion in progress: what the kernel's retry loop has decided so far
/// (drbd_set_role() in 8.4 drbd_nl.c; DRBD 9 follows the same steps).
#[derive(Debug, Clone, Copy, Default)]
pub struct Promotion {
    pub force: bool,
    /// `--force` made the local disk UpToDate ("Forced to consider local data as UpToDate!").
    pub forced_disk: bool,
    /// `--force` after a failed fence-peer: the peer counts as Outdated ("Forced into split
    /// brain situation!").
    pub forced_pdsk: bool,
}

/// The result of one try of the promotion loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Try {
    /// Promoted (or was Primary already).
    Done,
    /// Refused; the last failure.
    Fail(Failure),
    /// Try again (the promotion changed what it asks for).
    Again,
    /// The fence-peer handler must run (with the state lock released); then apply its
    /// exit code with [`fence_result`] and try again. `Fail` is what the caller reports
    /// if no try is left.
    FencePeer(Failure),
}

/// One try of drbd_set_role(). Pure; the caller loops at most [`PRIMARY_TRIES`] times.
pub fn primary_try(state: &mut State, n: &Names, p: &mut Promotion) -> Try {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        return Try::Fail(n.not_up("primary", p.force));
    }
    if cur.role == Role::Primary {
        return Try::Done;
    }
    let peer = peer_view(state, n);
    let connected = peer.as_ref().map(|p| p.0).unwrap_or(false);
    if let Some((true, peer)) = &peer {
        if peer.role == Role::Primary {
            return Try::Fail(n.state_failed(
                "primary",
                p.force,
                "(-1) Multiple primaries not allowed by config",
            ));
        }
    }
    let disk = if p.forced_disk {
        Disk::UpToDate
    } else {
        cur.disk
    };
    let fencing = n.res.fencing != Fencing::DontCare;
    // is_valid_state(): no UpToDate data first, then the fencing policy's demand.
    if disk != Disk::UpToDate && !connected {
        if p.force {
            p.forced_disk = true;
            return Try::Again;
        }
        if fencing && disk == Disk::Consistent && !p.forced_pdsk && cur.pdsk.is_none() {
            return Try::FencePeer(n.no_uptodate("primary", p.force));
        }
        return Try::Fail(n.no_uptodate("primary", p.force));
    }
    if disk != Disk::UpToDate && connected && !p.force {
        return Try::Fail(n.no_uptodate("primary", p.force));
    }
    let peer_unknown = !matches!(cur.pdsk, Some(Disk::Outdated | Disk::Inconsistent));
    if fencing && !connected && peer_unknown && !p.forced_pdsk {
        return Try::FencePeer(n.state_failed(
            "primary",
            p.force,
            "(-7) Refusing to be Primary while peer is not outdated",
        ));
    }
    let forced_new_data = disk != cur.disk || (cur.disk != Disk::UpToDate && p.force);
    let nr = state.node_res(&n.res.name, n.node);
    nr.role = Role::Primary;
    nr.disk = Disk::UpToDate;
    if p.forced_pdsk && !connected {
        nr.pdsk = Some(Disk::Outdated);
    }
    if forced_new_data && connected {
        if let Some((peer, _)) = n.res.peer_of(n.node) {
            state.node_res(&n.res.name, peer).disk = Disk::Inconsistent;
        }
    }
    Try::Done
}

/// Applies a fence-peer exit code as conn_try_outdate_peer() does; returns whether the
/// peer now counts as outdated (pdsk Outdated or worse). `force` (after a failure) makes
/// the next try treat the peer as Outdated. A result that arrives after the link came
/// back is ignored ("Ignoring fence-peer exit code").
pub fn fence_result(state: &mut State, n: &Names, code: Option<i32>, p: &mut Promotion) -> bool {
    let cur = state.get(&n.res.name, n.node);
    let connected = peer_view(state, n).map(|p| p.0).unwrap_or(false);
    let ok = if connected || !cur.up {
        false
    } else {
        apply_fence_code(state, n, code)
    };
    if !ok && p.force {
        p.forced_pdsk = true;
    }
    ok
}

/// The state change of a fence-peer exit code on an unconnected node (3: peer
/// Inconsistent, 4 and 7: peer Outdated, 5: peer Outdated when this disk is UpToDate,
/// 6: this disk Outdated unless Primary, anything else: nothing). Returns whether the
/// peer counts as outdated.
pub fn apply_fence_code(state: &mut State, n: &Names, code: Option<i32>) -> bool {
    let nr = state.node_res(&n.res.name, n.node);
    match code {
        Some(3) => nr.pdsk = Some(Disk::Inconsistent),
        Some(4 | 7) => nr.pdsk = Some(Disk::Outdated),
        Some(5) if nr.disk == Disk::UpToDate => nr.pdsk = Some(Disk::Outdated),
        // A Primary cannot be outdated: that state change fails and nothing changes.
        Some(6)
            if nr.role == Role::Secondary
                && matches!(nr.disk, Disk::Outdated | Disk::Consistent | Disk::UpToDate) =>
        {
            nr.disk = Disk::Outdated
        }
        _ => {}
    }
    matches!(nr.pdsk, Some(Disk::Outdated | Disk::Inconsistent))
}

/// Resources where `node` is Primary, not connected, with a fencing policy and the peer
/// not known outdated: DRBD's ping timeout makes the kernel call fence-peer for them.
pub fn ping_timeout_candidates<'a>(
    state: &State,
    cfg: &'a Config,
    node: &str,
) -> Vec<&'a Resource> {
    cfg.for_host(node)
        .into_iter()
        .filter(|r| r.fencing != Fencing::DontCare)
        .filter(|r| {
            let me = state.get(&r.name, node);
            let connected = state.resources.get(&r.name).is_some_and(|x| x.connected);
            me.up
                && me.role == Role::Primary
                && !connected
                && !matches!(me.pdsk, Some(Disk::Outdated | Disk::Inconsistent))
        })
        .collect()
}

/// `drbdadm outdate` (adm_outdate(): `drbdsetup outdate`, on exit 5 or when the minor is not
/// configured `drbdmeta outdate`). The Failure carries what drbdadm prints and its exit.
pub fn outdate(state: &mut State, n: &Names) -> Result<(), Failure> {
    let cur = state.get(&n.res.name, n.node);
    if !cur.up {
        // drbdmeta on the unattached disk: the meta data flags say Outdated.
        if !cur.md {
            return Err(Failure {
                lines: "ctmgr-drbd-sim: no meta data to outdate (create-md first)\n".into(),
                setup: String::new(),
                code: 20,
            });
        }
        let nr = state.node_res(&n.res.name, n.node);
        if matches!(nr.disk, Disk::UpToDate | Disk::Consistent) {
            nr.disk = Disk::Outdated;
        }
        return Ok(());
    }
    let connected = peer_view(state, n).map(|p| p.0).unwrap_or(false);
    if connected {
        // Connected: Outdated vanishes at once (sanitize_state()), a silent no-op. (Real 8.4
        // makes a connected *Inconsistent* disk UpToDate here; the sim leaves it.)
        return Ok(());
    }
    match cur.disk {
        Disk::UpToDate | Disk::Consistent | Disk::Outdated if cur.role == Role::Primary => {
            // SS_NO_UP_TO_DATE_DISK: drbdadm returns 17 and prints nothing.
            Err(Failure {
                lines: String::new(),
                setup: String::new(),
                code: 17,
            })
        }
        Disk::UpToDate | Disk::Consistent | Disk::Outdated => {
            state.node_res(&n.res.name, n.node).disk = Disk::Outdated;
            Ok(())
        }
        // SS_LOWER_THAN_OUTDATED (exit 5): drbdadm retries with drbdmeta, which refuses an
        // attached device; drbdadm then exits 5.
        Disk::Inconsistent | Disk::Diskless => {
            let what = "outdate";
            let mut f = n.configured(what);
            f.lines = format!(
                "{}Command '{}' terminated with exit code {}\n",
                f.lines, f.setup, f.code
            );
            f.setup = String::new();
            f.code = 5;
            Err(f)
        }
    }
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
    graceful_disconnect_fencing(state, n);
    let nr = state.node_res(&n.res.name, n.node);
    nr.standalone = true;
    nr.discard_my_data = false;
    Ok(())
}

/// A clean disconnect of a connected Primary/Secondary pair under a fencing policy
/// (conn_try_disconnect()): the Secondary's disk becomes Outdated and the Primary records
/// pdsk Outdated, whichever side disconnects; no handler runs. Disks below Outdated stay.
fn graceful_disconnect_fencing(state: &mut State, n: &Names) {
    if n.res.fencing == Fencing::DontCare {
        return;
    }
    let Some((true, peer)) = peer_view(state, n) else {
        return;
    };
    let Some((peer_name, _)) = n.res.peer_of(n.node) else {
        return;
    };
    let me = state.get(&n.res.name, n.node);
    let (sec, pri) = match (me.role, peer.role) {
        (Role::Secondary, Role::Primary) => (n.node, peer_name),
        (Role::Primary, Role::Secondary) => (peer_name, n.node),
        _ => return,
    };
    let s = state.node_res(&n.res.name, sec);
    if matches!(s.disk, Disk::UpToDate | Disk::Consistent) {
        s.disk = Disk::Outdated;
    }
    let sec_disk = s.disk;
    if sec_disk == Disk::Outdated {
        state.node_res(&n.res.name, pri).pdsk = Some(Disk::Outdated);
    }
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
