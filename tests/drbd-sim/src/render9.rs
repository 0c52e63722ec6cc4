//! DRBD 9 output formats, following drbd-utils `user/v9/drbdsetup.c` (`status_cmd`,
//! `resource_status`, `device_status`, `connection_status`, `peer_device_status`, the
//! `*_status_json` functions, `role_cmd`, `cstate_cmd`, `dstate_cmd`) and
//! `user/v9/drbdsetup_events2.c` for `events2 --now`. Statistics and kernel features the
//! sim does not model (quorum, `open:` in plain status) are printed as an older kernel
//! without that information would.

use crate::render84::done;
use crate::view::{color, disk_str, role_str, Conn, Repl, View};

pub fn cstate(v: &View) -> &'static str {
    match v.conn {
        Conn::StandAlone { .. } => "StandAlone",
        Conn::Connecting => "Connecting",
        Conn::Connected => "Connected",
    }
}

pub fn repl(v: &View) -> &'static str {
    match v.repl {
        Repl::Off => "Off",
        Repl::Established => "Established",
        Repl::SyncSource => "SyncSource",
        Repl::SyncTarget => "SyncTarget",
    }
}

/// `drbdsetup status RES` text (ends with an empty line).
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
        Conn::Connected => {
            s.push_str(&format!(
                "  {} role:{}\n",
                v.peer,
                color::role(colors, v.peer_role, false)
            ));
            s.push_str("    ");
            if v.repl != Repl::Established {
                s.push_str(&format!("replication:{} ", color::repl(colors, repl(v))));
            }
            s.push_str(&format!(
                "peer-disk:{}",
                color::disk(colors, v.peer_disk, false)
            ));
            if v.frame.is_some() {
                s.push_str(&format!(" done:{}", done(v)));
            }
            s.push('\n');
        }
        _ => s.push_str(&format!(
            "  {} connection:{}\n",
            v.peer,
            color::cstate(colors, cstate(v))
        )),
    }
    s.push('\n');
    s
}

fn b(x: bool) -> &'static str {
    if x {
        "true"
    } else {
        "false"
    }
}

fn addr_json(addr: &str, indent: &str) -> String {
    let (a, p) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    format!("{indent}\"address\": \"{a}\",\n{indent}\"port\": {p},\n{indent}\"family\": \"ipv4\"\n")
}

/// One resource of `drbdsetup status --json`, byte layout as drbdsetup prints it.
pub fn status_json_resource(v: &View) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{{\n  \"name\": \"{}\",\n  \"node-id\": {},\n  \"role\": \"{}\",\n  \"suspended\": false,\n  \"suspended-user\": false,\n  \"suspended-no-data\": false,\n  \"suspended-fencing\": false,\n  \"suspended-quorum\": false,\n  \"force-io-failures\": false,\n  \"write-ordering\": \"flush\",\n  \"devices\": [\n",
        v.name,
        v.node_id,
        v.role.as_str()
    ));
    let st = &v.stats;
    s.push_str(&format!(
        "    {{\n      \"volume\": 0,\n      \"minor\": {},\n      \"disk-state\": \"{}\",\n      \"client\": false,\n      \"open\": {},\n      \"quorum\": true,\n      \"size\": {},\n      \"read\": {},\n      \"written\": {},\n      \"al-writes\": {},\n      \"bm-writes\": {},\n      \"upper-pending\": 0,\n      \"lower-pending\": {}\n    }}",
        v.minor,
        v.disk.as_str(),
        b(v.open),
        v.size_kb,
        st.dr,
        st.dw,
        st.al,
        st.bm,
        st.lo
    ));
    s.push_str(" ],\n  \"connections\": [\n");
    let established = v.conn == Conn::Connected;
    s.push_str(&format!(
        "    {{\n      \"peer-node-id\": {},\n      \"name\": \"{}\",\n      \"connection-state\": \"{}\", \n      \"congested\": false,\n      \"peer-role\": \"{}\",\n      \"tls\": false,\n      \"ap-in-flight\": 0,\n      \"rs-in-flight\": 0,\n",
        v.peer_id,
        v.peer,
        cstate(v),
        role_str(v.peer_role)
    ));
    s.push_str("      \"paths\": [\n");
    s.push_str("        {\n          \"this_host\": {\n");
    s.push_str(&addr_json(&v.local_addr, "            "));
    s.push_str("          },\n          \"remote_host\": {\n");
    s.push_str(&addr_json(&v.peer_addr, "            "));
    s.push_str(&format!(
        "          }},\n          \"established\": {}\n        }}",
        b(established)
    ));
    s.push_str(" ],\n");
    s.push_str("      \"peer_devices\": [\n");
    let in_sync = if v.size_kb == 0 {
        0.0
    } else {
        100.0 * (1.0 - v.oos as f64 / v.size_kb as f64)
    };
    let resyncing = v.frame.is_some();
    s.push_str(&format!(
        "        {{\n          \"volume\": 0,\n          \"replication-state\": \"{}\",\n          \"peer-disk-state\": \"{}\",\n          \"peer-client\": false,\n          \"resync-suspended\": \"no\",\n          \"received\": {},\n          \"sent\": {},\n          \"out-of-sync\": {},\n          \"pending\": {},\n          \"unacked\": {},\n          \"has-sync-details\": false,\n          \"has-online-verify-details\": false,\n          \"percent-in-sync\": {:.2}{}\n",
        repl(v),
        disk_str(v.peer_disk),
        st.nr,
        st.ns,
        v.oos,
        st.pe,
        st.ua,
        in_sync,
        if resyncing { "," } else { "" }
    ));
    if resyncing {
        s.push_str(&format!(
            "          \"percent-resync-done\": {:.2}\n",
            in_sync
        ));
    }
    s.push_str("        }");
    s.push_str(" ]\n    }");
    s.push_str(" ]\n}\n");
    s
}

pub fn status_json(views: &[&View]) -> String {
    let mut s = String::from("[\n");
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        s.push_str(&status_json_resource(v));
    }
    s.push_str("]\n\n");
    s
}

/// `drbdsetup events2 --now` lines for one resource (without the `exists -` terminator).
pub fn events2(v: &View, conn_name: &str) -> String {
    let yn = |x: bool| if x { "yes" } else { "no" };
    let may_promote = v.role == crate::state::Role::Secondary
        && v.disk == crate::state::Disk::UpToDate
        && v.peer_role != Some(crate::state::Role::Primary);
    // promotion_score: the kernel's score rises with UpToDate data; the sim reports 10101
    // when promotion is possible and 0 when not (documented simplification).
    let mut s = format!(
        "exists resource name:{} role:{} suspended:no force-io-failures:no may_promote:{} promotion_score:{}\n",
        v.name,
        v.role.as_str(),
        yn(may_promote),
        if may_promote { 10101 } else { 0 }
    );
    s.push_str(&format!(
        "exists connection name:{} peer-node-id:{} conn-name:{} connection:{} role:{}\n",
        v.name,
        v.peer_id,
        conn_name,
        cstate(v),
        role_str(v.peer_role)
    ));
    s.push_str(&format!(
        "exists path name:{} peer-node-id:{} conn-name:{} local:ipv4:{} peer:ipv4:{} established:{}\n",
        v.name,
        v.peer_id,
        conn_name,
        v.local_addr,
        v.peer_addr,
        yn(v.conn == Conn::Connected)
    ));
    s.push_str(&format!(
        "exists device name:{} volume:0 minor:{} backing_dev:{} disk:{} client:no open:{} quorum:yes\n",
        v.name,
        v.minor,
        v.disk_path,
        v.disk.as_str(),
        yn(v.open)
    ));
    s.push_str(&format!(
        "exists peer-device name:{} peer-node-id:{} conn-name:{} volume:0 replication:{} peer-disk:{} peer-client:no resync-suspended:no\n",
        v.name,
        v.peer_id,
        conn_name,
        repl(v),
        disk_str(v.peer_disk)
    ));
    s
}

/// `drbdsetup dstate`: local disk, then one `/peer-disk` per peer device.
pub fn dstate(v: &View) -> String {
    format!("{}/{}\n", v.disk.as_str(), disk_str(v.peer_disk))
}
