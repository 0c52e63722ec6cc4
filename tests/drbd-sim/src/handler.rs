//! DRBD's user-mode helpers (`fence-peer`, `unfence-peer`) as drbdadm runs them: the
//! handler string from the config through `/bin/sh -c` (drbd-utils `adm_khelper()`), no
//! arguments, stdin from /dev/null, with the DRBD_* environment the kernel and drbdadm
//! set. The sim adds a deadline: after [`TIMEOUT`] the handler's process group is killed
//! and the call counts as a broken handler.

use crate::config::Resource;
use crate::model::Version;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a handler may run (the kernel waits for ever; the lab must not).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The environment of a handler call for `res` on `node`: DRBD_RESOURCE, DRBD_MINOR,
/// DRBD_PEER_ADDRESS, DRBD_PEER_AF, DRBD_PEERS as in the 8.4 capture; 9 adds
/// DRBD_PEER_NODE_ID. DRBD_SIM_CONF names the config this call used, so a drbdadm the
/// handler runs on this node sees the same one.
pub fn env(res: &Resource, node: &str, version: Version, conf: &Path) -> Vec<(String, String)> {
    let minor = res.host(node).map(|h| h.minor).unwrap_or(0);
    let (peer, addr) = res
        .peer_of(node)
        .map(|(p, h)| (p.to_string(), h.address.clone()))
        .unwrap_or_default();
    let mut v = vec![
        ("DRBD_RESOURCE".to_string(), res.name.clone()),
        ("DRBD_MINOR".to_string(), minor.to_string()),
        ("DRBD_PEER_ADDRESS".to_string(), addr),
        ("DRBD_PEER_AF".to_string(), "ipv4".to_string()),
        ("DRBD_PEERS".to_string(), peer.clone()),
    ];
    if version == Version::V9 {
        v.push((
            "DRBD_PEER_NODE_ID".to_string(),
            res.node_id(&peer).to_string(),
        ));
    }
    v.push(("DRBD_SIM_CONF".to_string(), conf.display().to_string()));
    v
}

/// Runs `sh -c CMD` in its own process group and returns its exit code; None when it
/// could not run, was killed by a signal or overran `timeout` (then its whole process
/// group is killed). Output goes to `$DRBD_SIM_HANDLER_LOG` when set, else nowhere (the
/// kernel's helpers have no terminal).
pub fn run(cmd: &str, env: &[(String, String)], timeout: Duration) -> Option<i32> {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null()).process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    let log = std::env::var_os("DRBD_SIM_HANDLER_LOG")
        .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    match log
        .as_ref()
        .and_then(|f| Some((f.try_clone().ok()?, f.try_clone().ok()?)))
    {
        Some((o, e)) => {
            c.stdout(o).stderr(e);
        }
        None => {
            c.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let mut child = c.spawn().ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.code(),
            Ok(None) if start.elapsed() > timeout => {
                // No unsafe here: kill(1) signals the group (negative pid).
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
}
