//! The node-local journal of takeovers, releases and other cluster actions:
//! one JSON object per line in `/var/lib/ctmgr/journal.jsonl`
//! ($CTMGR_STATE_DIR overrides the directory). Appends are fsynced, so the
//! record survives the crash it may be needed to explain.

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The directory for node-local state (journal, sync hashes).
pub fn state_dir() -> PathBuf {
    std::env::var_os("CTMGR_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ctmgr"))
}

fn path() -> PathBuf {
    state_dir().join("journal.jsonl")
}

/// One step of an action with its outcome and duration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub step: String,
    /// "done", "already", "failed", "skipped"
    pub outcome: String,
    pub ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One journaled action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// RFC 3339 UTC start time.
    pub time: String,
    pub node: String,
    pub action: String,
    pub store: String,
    /// "ok", "partial", "failed", "refused", "dry-run"
    pub outcome: String,
    #[serde(default)]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub total_ms: u64,
    pub steps: Vec<Step>,
}

/// Appends one entry (fsynced).
pub fn append(entry: &Entry) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir())?;
    let mut f = OpenOptions::new().create(true).append(true).open(path())?;
    let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

/// Every entry, oldest first; unreadable lines are skipped (a torn last line
/// after a crash must not hide the rest).
pub fn read_all() -> Vec<Entry> {
    let Ok(f) = std::fs::File::open(path()) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The newest entry for `store` whose action is one of `actions`.
pub fn last_for(store: &str, actions: &[&str]) -> Option<Entry> {
    read_all()
        .into_iter()
        .rev()
        .find(|e| e.store == store && actions.contains(&e.action.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back_skipping_torn_lines() {
        let d = tempfile::tempdir().unwrap();
        std::env::set_var("CTMGR_STATE_DIR", d.path());
        let e = Entry {
            time: "2026-12-02T03:00:00Z".into(),
            node: "node2".into(),
            action: "takeover".into(),
            store: "store1".into(),
            outcome: "ok".into(),
            forced: false,
            refused_by: None,
            error: None,
            total_ms: 1234,
            steps: vec![Step {
                step: "promote".into(),
                outcome: "done".into(),
                ms: 12,
                detail: String::new(),
            }],
        };
        append(&e).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(path())
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        assert_eq!(last_for("store1", &["takeover", "release"]), Some(e));
        assert!(last_for("store2", &["takeover"]).is_none());
    }
}
