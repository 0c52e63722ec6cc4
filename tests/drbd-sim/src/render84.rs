//! DRBD 8.4 output formats. Sources: the real 8.4.11 capture
//! (/work/shared/fixtures/drbd-8.4.11-real/transcript.txt), the kernel's `drbd_proc.c`
//! for /proc/drbd, drbd-utils `user/v84/drbdsetup.c` (`status_cmd`, `resource_status`,
//! `device_status`, `connection_status`, `peer_device_status`) for `drbdadm status`.

use crate::sync;
use crate::view::{color, disk_str, role_str, Conn, Repl, View};

/// The capture's header lines; note the trailing space after the srcversion.
pub const PROC_HEADER: &str =
    "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: F73C670A7EC572DB9CF3E5B \n";

/// The 8.4 connection-state name (drbd_strings.c): WFConnection where 9 says Connecting.
pub fn cstate(v: &View) -> &'static str {
    match (v.conn, v.repl) {
        (Conn::StandAlone { .. }, _) => "StandAlone",
        (Conn::Connecting, _) => "WFConnection",
        (Conn::Connected, Repl::SyncSource) => "SyncSource",
        (Conn::Connected, Repl::SyncTarget) => "SyncTarget",
        (Conn::Connected, _) => "Connected",
    }
}

/// /proc/drbd: header, then one block per configured minor in minor order (a blank line
/// where minors are skipped, as drbd_proc.c does).
pub fn proc_drbd(views: &[View]) -> String {
    let mut s = String::from(PROC_HEADER);
    let mut up: Vec<&View> = views.iter().filter(|v| v.up).collect();
    up.sort_by_key(|v| v.minor);
    let mut prev: i64 = -1;
    for v in up {
        if i64::from(v.minor) != prev + 1 {
            s.push('\n');
        }
        prev = i64::from(v.minor);
        // The protocol letter is blank when there is no net config (after disconnect).
        let proto = match v.conn {
            Conn::StandAlone { net: false } => ' ',
            _ => 'C',
        };
        s.push_str(&format!(
            "{:2}: cs:{} ro:{}/{} ds:{}/{} {} r-----\n",
            v.minor,
            cstate(v),
            v.role.as_str(),
            role_str(v.peer_role),
            v.disk.as_str(),
            disk_str(v.peer_disk),
            proto
        ));
        let st = &v.stats;
        s.push_str(&format!(
            "    ns:{} nr:{} dw:{} dr:{} al:{} bm:{} lo:{} pe:{} ua:{} ap:{} ep:{} wo:f oos:{}\n",
            st.ns, st.nr, st.dw, st.dr, st.al, st.bm, st.lo, st.pe, st.ua, st.ap, st.ep, v.oos
        ));
        if let Some(fr) = &v.frame {
            s.push_str(&sync::proc_lines(fr, v.size_kb, v.repl == Repl::SyncTarget));
        }
    }
    s
}

/// `drbdadm status RES` as drbdsetup-84 prints it (always ends with an empty line).
pub fn status(v: &View, colors: bool) -> String {
    let mut s = format!(
        "{} role:{}\n",
        v.name,
        color::role(colors, Some(v.role), true)
    );
    s.push_str(&format!(
        "  disk:{}\n",
        color::disk(colors, Some(v.disk), true)
    ));
    match v.conn {
        // After `disconnect` 8.4 has no connection object at all: nothing is printed.
        Conn::StandAlone { net: false } => {}
        Conn::StandAlone { net: true } => s.push_str(&format!(
            "  peer connection:{}\n",
            color::cstate(colors, "StandAlone")
        )),
        Conn::Connecting => s.push_str(&format!(
            "  peer connection:{}\n",
            color::cstate(colors, "Connecting")
        )),
        Conn::Connected => {
            s.push_str(&format!(
                "  peer role:{}\n",
                color::role(colors, v.peer_role, false)
            ));
            let repl = match v.repl {
                Repl::SyncSource => "SyncSource",
                Repl::SyncTarget => "SyncTarget",
                _ => "Established",
            };
            s.push_str(&format!(
                "    replication:{} peer-disk:{}",
                color::repl(colors, repl),
                color::disk(colors, v.peer_disk, false)
            ));
            if v.frame.is_some() {
                s.push_str(&format!(" done:{}", done(v)));
            }
            s.push('\n');
        }
    }
    s.push('\n');
    s
}

/// `done:%.2f` of drbdsetup: 100 * (1 - out_of_sync / size).
pub fn done(v: &View) -> String {
    if v.size_kb == 0 {
        return "0.00".into();
    }
    format!("{:.2}", 100.0 * (1.0 - v.oos as f64 / v.size_kb as f64))
}

/// `drbdadm role`: local/peer (drbdsetup-84 role).
pub fn role(v: &View) -> String {
    format!("{}/{}\n", v.role.as_str(), role_str(v.peer_role))
}

pub fn dstate(v: &View) -> String {
    format!("{}/{}\n", v.disk.as_str(), disk_str(v.peer_disk))
}
