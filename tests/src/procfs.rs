//! Reading /proc: mount tables, namespace identities, processes; killing what lives in a
//! namespace.
//!
//! Used by the lab's teardown, which must work from the on-disk state alone, so nothing here
//! keeps state between calls. It must never signal the calling process or its ancestors.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::run::wait_until;

/// One line of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo text (see proc(5)); lines it cannot read are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            Some(Mount {
                mountpoint: PathBuf::from(unescape_octal(mountpoint)),
                fstype: fstype.to_string(),
                source: unescape_octal(source),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The calling process's mounts.
pub fn own_mounts() -> Result<Vec<Mount>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// The identity (`net:[4026532281]`) of the namespace bind-mounted at `file`, or `None` when
/// `file` is not an nsfs mount (a namespace file whose namespace is gone is a plain file).
pub fn ns_identity(file: &Path, kind: &str, mounts: &[Mount]) -> Option<String> {
    mounts
        .iter()
        .any(|m| m.mountpoint == file && m.fstype == "nsfs")
        .then(|| fs::metadata(file).ok())
        .flatten()
        .map(|md| format!("{kind}:[{}]", md.ino()))
}

/// A process as seen in /proc/PID/stat.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub start: u64,
}

/// Parses /proc/PID/stat; the command name may contain spaces and parentheses.
pub fn parse_stat(pid: i32, text: &str) -> Option<Proc> {
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); starttime is field 22.
    Some(Proc {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

pub fn proc_info(pid: i32) -> Option<Proc> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// All processes; ones that vanish while we look are skipped.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_info)
        .collect()
}

/// The start time (clock ticks since boot) of this process: with the pid, it tells a live
/// owner from a recycled pid.
pub fn self_start_time() -> u64 {
    proc_info(std::process::id() as i32)
        .map(|p| p.start)
        .unwrap_or(0)
}

/// Is `pid` alive and (when given) the process that started at `start`?
pub fn pid_alive(pid: i32, start: Option<u64>) -> bool {
    match proc_info(pid) {
        Some(p) if p.state != 'Z' && p.state != 'X' => match start {
            Some(s) => s == p.start,
            None => true,
        },
        _ => false,
    }
}

/// Processes in any of the namespaces `ids` (as `net:[N]`, `mnt:[N]`, …), plus all their
/// descendants (a container's init runs in its own namespaces but is a child of the LXC
/// monitor, which runs in the node's). Never includes this process or its ancestors.
pub fn processes_in(ids: &HashSet<String>) -> Vec<i32> {
    if ids.is_empty() {
        return Vec::new();
    }
    let procs = processes();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut protected: HashSet<i32> = HashSet::from([0, 1]);
    let mut cur = std::process::id() as i32;
    while protected.insert(cur) {
        match proc_info(cur) {
            Some(p) if p.ppid > 0 => cur = p.ppid,
            _ => break,
        }
    }
    let mut found: Vec<i32> = procs
        .iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            ["net", "mnt", "uts"].iter().any(|k| {
                fs::read_link(format!("/proc/{}/ns/{k}", p.pid))
                    .ok()
                    .and_then(|l| l.to_str().map(|s| ids.contains(s)))
                    .unwrap_or(false)
            })
        })
        .map(|p| p.pid)
        .collect();
    let mut seen: HashSet<i32> = found.iter().copied().collect();
    let mut i = 0;
    while i < found.len() {
        for &c in children.get(&found[i]).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                found.push(c);
            }
        }
        i += 1;
    }
    found.retain(|p| !protected.contains(p));
    found
}

/// SIGKILLs every process in the namespaces `ids` (and descendants), repeatedly, until none is
/// left or `timeout` passes. Returns how many were signalled; an error names the survivors.
pub fn kill_in_namespaces(ids: &HashSet<String>, timeout: Duration) -> Result<usize> {
    let mut killed = HashSet::new();
    let gone = wait_until(timeout, Duration::from_millis(50), || {
        let pids = processes_in(ids);
        for &pid in &pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed.insert(pid);
            }
        }
        pids.is_empty()
    });
    if !gone {
        anyhow::bail!(
            "processes still alive in the lab's namespaces after {timeout:?}: {:?}",
            processes_in(ids)
        );
    }
    Ok(killed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    600 25 0:4 net:[4026532281] /run/ctmgr-lab/t/ns/node1.net rw shared:5 - nsfs nsfs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[0].source, "/dev/root");
        assert_eq!(m[1].fstype, "nsfs");
    }

    #[test]
    fn stat_with_odd_comm() {
        let text =
            "1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let p = parse_stat(1234, text).unwrap();
        assert_eq!(p.state, 'S');
        assert_eq!(p.ppid, 77);
        assert_eq!(p.start, 98765);
    }

    #[test]
    fn self_is_alive_and_never_a_victim() {
        let me = std::process::id() as i32;
        assert!(pid_alive(me, Some(self_start_time())));
        assert!(!pid_alive(me, Some(self_start_time() + 1)));
        let my_net = fs::read_link("/proc/self/ns/net").unwrap();
        let ids = HashSet::from([my_net.to_str().unwrap().to_string()]);
        assert!(!processes_in(&ids).contains(&me));
    }
}
