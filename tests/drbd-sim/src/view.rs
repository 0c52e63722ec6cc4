//! One node's view of one resource, derived from the shared state: what its kernel would
//! report. Both output formats (8.4, 9) render from this.

use crate::config::Resource;
use crate::state::{Disk, Role, State, Stats};
use crate::sync::{self, Frame};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// `net` is true when a net config still exists (split brain), false after `disconnect`.
    StandAlone {
        net: bool,
    },
    Connecting,
    Connected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repl {
    Off,
    Established,
    SyncSource,
    SyncTarget,
}

#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub node_id: u32,
    pub minor: u32,
    pub disk_path: String,
    pub local_addr: String,
    pub peer: String,
    pub peer_id: u32,
    pub peer_addr: String,
    pub up: bool,
    pub role: Role,
    pub disk: Disk,
    pub conn: Conn,
    pub repl: Repl,
    /// None: Unknown (not connected).
    pub peer_role: Option<Role>,
    /// None: DUnknown.
    pub peer_disk: Option<Disk>,
    pub size_kb: u64,
    pub oos: u64,
    pub stats: Stats,
    pub frame: Option<Frame>,
    pub open: bool,
}

pub struct Ctx<'a> {
    pub state: &'a State,
    pub step_ms: u64,
    pub size_kb: &'a dyn Fn(&Resource, &str) -> u64,
    pub open: &'a dyn Fn(&Resource, &str) -> bool,
}

pub fn view(ctx: &Ctx, res: &Resource, node: &str) -> View {
    let me = ctx.state.get(&res.name, node);
    let host = res.host(node).cloned();
    let (peer, peer_host) = res
        .peer_of(node)
        .map(|(p, h)| (p.to_string(), Some(h.clone())))
        .unwrap_or_default();
    let rs = ctx.state.resources.get(&res.name);
    let connected = me.up && rs.map(|r| r.connected).unwrap_or(false);
    let other = ctx.state.get(&res.name, &peer);
    let size_kb = (ctx.size_kb)(res, node);
    let conn = if me.standalone {
        Conn::StandAlone {
            net: me.split_brain,
        }
    } else if connected {
        Conn::Connected
    } else {
        Conn::Connecting
    };
    let mut frame = None;
    let mut repl = if connected {
        Repl::Established
    } else {
        Repl::Off
    };
    let mut stats = me.stats;
    if let (true, Some(s)) = (connected, rs.and_then(|r| r.resync.as_ref())) {
        if let Some(fr) = sync::frame(s.progress.steps(ctx.step_ms), size_kb) {
            if s.source == node {
                repl = Repl::SyncSource;
                stats.ns += fr.ns;
                stats.dr += fr.dr;
            } else {
                repl = Repl::SyncTarget;
                stats.nr += fr.ns;
                stats.dw += fr.ns;
            }
            stats.pe = fr.pe;
            stats.ua = fr.ua;
            frame = Some(fr);
        }
    }
    let oos = match (&frame, connected) {
        (Some(f), _) => f.left,
        (None, true) if me.disk == Disk::Inconsistent || other.disk == Disk::Inconsistent => {
            size_kb
        }
        _ => 0,
    };
    let addr = |h: &Option<crate::config::HostSection>| {
        h.as_ref()
            .map(|h| format!("{}:{}", h.address, h.port))
            .unwrap_or_default()
    };
    View {
        name: res.name.clone(),
        node_id: res.node_id(node),
        minor: host.as_ref().map(|h| h.minor).unwrap_or(0),
        disk_path: host.as_ref().map(|h| h.disk.clone()).unwrap_or_default(),
        local_addr: addr(&host),
        peer_id: res.node_id(&peer),
        peer_addr: addr(&peer_host),
        peer,
        up: me.up,
        role: me.role,
        disk: me.disk,
        conn,
        repl,
        peer_role: connected.then_some(other.role),
        // Not connected: what this kernel recorded (fencing), else DUnknown.
        peer_disk: if connected {
            Some(other.disk)
        } else {
            me.pdsk.filter(|_| me.up)
        },
        size_kb,
        oos,
        stats,
        frame,
        open: me.up && (ctx.open)(res, node),
    }
}

pub fn role_str(r: Option<Role>) -> &'static str {
    r.map(Role::as_str).unwrap_or("Unknown")
}

pub fn disk_str(d: Option<Disk>) -> &'static str {
    d.map(Disk::as_str).unwrap_or("DUnknown")
}

/// Colour escapes of drbd-utils `drbdsetup_colors.c` (identical tables in v84 and v9).
pub mod color {
    use crate::state::{Disk, Role};

    const STOP: &str = "\x1b[0m";

    #[derive(Clone, Copy)]
    enum Class {
        Transitional,
        Normal,
        Primary,
        Good,
        Bad,
    }

    fn code(c: Class, local: bool) -> Option<&'static str> {
        match (c, local) {
            (Class::Transitional, true) => Some("\x1b[1m"),
            (Class::Primary, true) => Some("\x1b[1;36m"),
            (Class::Good, true) => Some("\x1b[1;32m"),
            (Class::Bad, true) => Some("\x1b[1;31m"),
            (Class::Primary, false) => Some("\x1b[36m"),
            (Class::Good, false) => Some("\x1b[32m"),
            (Class::Bad, false) => Some("\x1b[31m"),
            (Class::Transitional | Class::Normal, _) => None,
        }
    }

    fn wrap(on: bool, c: Class, local: bool, text: &str) -> String {
        match (on, code(c, local)) {
            (true, Some(start)) => format!("{start}{text}{STOP}"),
            _ => text.to_string(),
        }
    }

    pub fn role(on: bool, r: Option<Role>, local: bool) -> String {
        let c = match r {
            Some(Role::Primary) => Class::Primary,
            Some(Role::Secondary) => Class::Normal,
            None => Class::Transitional,
        };
        wrap(on, c, local, super::role_str(r))
    }

    pub fn disk(on: bool, d: Option<Disk>, local: bool) -> String {
        let c = match d {
            Some(Disk::Diskless | Disk::Inconsistent | Disk::Outdated) => Class::Bad,
            Some(Disk::UpToDate) => Class::Good,
            Some(Disk::Consistent) | None => Class::Transitional,
        };
        wrap(on, c, local, super::disk_str(d))
    }

    /// Connection states: StandAlone and Connecting are "bad", always local colours.
    pub fn cstate(on: bool, name: &str) -> String {
        let c = match name {
            "StandAlone" | "Connecting" => Class::Bad,
            "Connected" => Class::Normal,
            _ => Class::Transitional,
        };
        wrap(on, c, true, name)
    }

    /// Replication states; SyncTarget uses the local colours (is_local_repl_state()).
    pub fn repl(on: bool, name: &str) -> String {
        let (c, local) = match name {
            "Established" => (Class::Normal, false),
            "SyncSource" => (Class::Bad, false),
            "SyncTarget" => (Class::Bad, true),
            _ => (Class::Transitional, false),
        };
        wrap(on, c, local, name)
    }
}
