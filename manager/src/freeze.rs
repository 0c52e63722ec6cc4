//! Freezes that ctmgr owes a thaw. `snapshot --freeze` records each freeze
//! in `/run/ctmgr/frozen/<store>.<name>.json` ($CTMGR_RUN_DIR overrides
//! /run/ctmgr) BEFORE freezing, and removes the record after the thaw. A run
//! killed in between (kill -9, OOM) leaves the container FROZEN and the
//! record behind; the next `snapshot`, `snapshots`, `prune`, `list`,
//! `status` or `doctor` finds the record, sees that its process is gone, and
//! thaws the container. /run is the right lifetime: a freeze does not
//! survive a reboot either.
//!
//! Never thaws what ctmgr did not freeze: without a record a FROZEN
//! container is only reported (by `doctor`), and a record whose process is
//! still alive belongs to a snapshot in progress.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::Utc;
use serde::{Deserialize, Serialize};

/// One recorded freeze.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub store: String,
    pub lxcpath: PathBuf,
    pub name: String,
    /// The ctmgr process that froze it, and that process's start time
    /// (clock ticks after boot, `/proc/PID/stat` field 22) against PID reuse.
    pub pid: u32,
    pub pid_start: u64,
    /// RFC 3339 UTC.
    pub time: String,
}

/// Where the records live.
pub fn dir() -> PathBuf {
    crate::lock::dir().join("frozen")
}

fn path_of(store: &str, name: &str) -> PathBuf {
    dir().join(format!("{store}.{name}.json"))
}

/// The start time of process `pid`, `None` when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'. Field 22 (starttime) is the 20th after it.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process that wrote `r` still running?
pub fn owner_alive(r: &Record) -> bool {
    process_start(r.pid) == Some(r.pid_start)
}

/// Records that this process is about to freeze `name` (durably, before
/// the freeze).
pub fn record(store: &str, lxcpath: &Path, name: &str) -> Result<()> {
    let pid = std::process::id();
    let r = Record {
        store: store.to_string(),
        lxcpath: lxcpath.to_path_buf(),
        name: name.to_string(),
        pid,
        pid_start: process_start(pid).unwrap_or(0),
        time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let d = dir();
    fs::create_dir_all(&d).with_context(|| format!("failed to create {}", d.display()))?;
    let p = path_of(store, name);
    let json = serde_json::to_vec(&r)?;
    crate::fsutil::write_atomic(&p, &json, 0o600)
        .with_context(|| format!("failed to record the freeze of {name} in {}", p.display()))
}

/// Removes the record after the thaw.
pub fn forget(store: &str, name: &str) {
    let _ = fs::remove_file(path_of(store, name));
}

/// Every record, with the file it came from; unreadable files are skipped.
pub fn records() -> Vec<(PathBuf, Record)> {
    let Ok(entries) = fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Record)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let r = serde_json::from_slice(&fs::read(&p).ok()?).ok()?;
            Some((p, r))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What `recover` did with one abandoned record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Recovery {
    /// The container was FROZEN and is thawed now.
    Thawed,
    /// The container was not frozen (any more): only the record was removed.
    NotFrozen,
    /// The thaw failed; the record stays for the next run.
    Failed { error: String },
}

/// One abandoned freeze and what was done about it.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub record: Record,
    #[serde(flatten)]
    pub recovery: Recovery,
}

impl Recovered {
    /// One line for a person.
    pub fn describe(&self) -> String {
        let r = &self.record;
        let why = format!(
            "left FROZEN by an interrupted `ctmgr snapshot --freeze` (pid {}, {})",
            r.pid, r.time
        );
        match &self.recovery {
            Recovery::Thawed => format!("thawed container {}: {why}", r.name),
            Recovery::NotFrozen => format!(
                "container {} was recorded as frozen by pid {} ({}) but is not frozen; record removed",
                r.name, r.pid, r.time
            ),
            Recovery::Failed { error } => format!(
                "container {} is still FROZEN: {why}; thawing failed: {error}. Try `lxc-unfreeze -n {} -P {}`",
                r.name,
                r.name,
                r.lxcpath.display()
            ),
        }
    }
}

/// Thaws every container whose recorded freeze outlived its process.
pub fn recover() -> Vec<Recovered> {
    let mut out = Vec::new();
    for (path, r) in records() {
        if owner_alive(&r) {
            continue;
        }
        let recovery = match thaw(&r) {
            Ok(true) => Recovery::Thawed,
            Ok(false) => Recovery::NotFrozen,
            Err(e) => Recovery::Failed {
                error: format!("{e:#}"),
            },
        };
        if !matches!(recovery, Recovery::Failed { .. }) {
            let _ = fs::remove_file(&path);
        }
        out.push(Recovered {
            record: r,
            recovery,
        });
    }
    out
}

/// Is this state a freeze (done or under way)? A run killed inside
/// liblxc's freeze leaves the container FREEZING for good: the kernel froze
/// it, but the FROZEN state was never reported.
pub fn is_frozen(state: &lxc_bindings::State) -> bool {
    matches!(
        state,
        lxc_bindings::State::Frozen | lxc_bindings::State::Freezing
    )
}

/// Thaws a FROZEN or FREEZING container and checks that it is thawed.
/// liblxc unfreezes only a FROZEN one: a freeze cut off half way (cgroup v1
/// `freezer.state` stays FREEZING until FROZEN is written again) is
/// finished first.
pub fn unfreeze(c: &lxc_bindings::Container) -> Result<()> {
    if c.state() == lxc_bindings::State::Freezing {
        c.freeze()?;
    }
    c.unfreeze()?;
    let after = c.state();
    if is_frozen(&after) {
        anyhow::bail!("the container is still {after:?} after the thaw");
    }
    Ok(())
}

/// Thaws the recorded container if it is FROZEN (or FREEZING); whether it was.
fn thaw(r: &Record) -> Result<bool> {
    let c = lxc_bindings::Container::new(&r.name, &r.lxcpath)?;
    if !is_frozen(&c.state()) {
        return Ok(false);
    }
    unfreeze(&c)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_start_reads_this_process_and_not_a_dead_one() {
        let me = std::process::id();
        assert!(process_start(me).is_some());
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        assert_eq!(process_start(dead), None);
        let r = Record {
            store: "store1".into(),
            lxcpath: "/srv/store1/containers".into(),
            name: "web".into(),
            pid: me,
            pid_start: process_start(me).unwrap(),
            time: String::new(),
        };
        assert!(owner_alive(&r));
        assert!(!owner_alive(&Record {
            pid_start: r.pid_start + 1,
            ..r.clone()
        }));
        assert!(!owner_alive(&Record { pid: dead, ..r }));
    }

    #[test]
    fn freezing_counts_as_frozen() {
        use lxc_bindings::State;
        assert!(is_frozen(&State::Frozen));
        assert!(is_frozen(&State::Freezing));
        assert!(!is_frozen(&State::Running));
        assert!(!is_frozen(&State::Thawed));
    }
}
