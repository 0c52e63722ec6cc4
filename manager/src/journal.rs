//! The node-local journal of takeovers, releases and other cluster actions:
//! one JSON object per line in `/var/lib/ctmgr/journal.jsonl`
//! ($CTMGR_STATE_DIR overrides the directory). Appends are fsynced, so the
//! record survives the crash it may be needed to explain.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The directory for node-local state (journal, sync hashes).
pub fn state_dir() -> PathBuf {
    std::env::var_os("CTMGR_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ctmgr"))
}

/// The journal file.
pub fn path() -> PathBuf {
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

/// Appends one entry (fsynced). A torn last line left by a crash is ended
/// first, so the new entry never glues onto it.
pub fn append(entry: &Entry) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    std::fs::create_dir_all(state_dir())?;
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path())?;
    let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    line.push('\n');
    if f.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

/// The journal as read: its entries and how many lines could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journal {
    /// Oldest first.
    pub entries: Vec<Entry>,
    /// Line numbers (1-based) of the lines that are not one entry (torn by
    /// a crash, not UTF-8, edited by hand); skipped, never hiding the lines
    /// after them.
    pub unreadable: Vec<usize>,
}

/// Parses journal text line by line. A line that does not parse is counted
/// and skipped; when an older ctmgr glued an entry onto a torn line, the
/// entry is recovered from where its `{"time":` begins.
pub fn parse(bytes: &[u8]) -> Journal {
    let mut j = Journal::default();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Ok(e) = serde_json::from_slice::<Entry>(line) {
            j.entries.push(e);
            continue;
        }
        j.unreadable.push(i + 1);
        let start = br#"{"time":"#;
        if let Some(e) = (1..line.len())
            .rev()
            .filter(|&i| line[i..].starts_with(start))
            .find_map(|i| serde_json::from_slice::<Entry>(&line[i..]).ok())
        {
            j.entries.push(e);
        }
    }
    j
}

/// The whole journal; see [`parse`].
pub fn read() -> Journal {
    std::fs::read(path()).map(|b| parse(&b)).unwrap_or_default()
}

/// Every entry, oldest first; unreadable lines are skipped (a torn or
/// non-UTF-8 line must not hide the rest).
pub fn read_all() -> Vec<Entry> {
    read().entries
}

/// The newest entry for `store` whose action is one of `actions`.
pub fn last_for(store: &str, actions: &[&str]) -> Option<Entry> {
    read().last_for(store, actions).cloned()
}

impl Journal {
    /// The newest entry for `store` whose action is one of `actions`.
    pub fn last_for(&self, store: &str, actions: &[&str]) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.store == store && actions.contains(&e.action.as_str()))
    }
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
        assert_eq!(
            last_for("store1", &["takeover", "release"]),
            Some(e.clone())
        );
        assert!(last_for("store2", &["takeover"]).is_none());
        // The next append ends the torn line instead of gluing onto it.
        let mut later = e.clone();
        later.action = "release".into();
        append(&later).unwrap();
        let j = read();
        assert_eq!(j.entries, vec![e, later]);
        assert_eq!(j.unreadable, [2]);
    }

    #[test]
    fn a_bad_line_hides_nothing_after_it() {
        let line = |action: &str| {
            format!(
                r#"{{"time":"2026-12-07T03:00:00Z","node":"node1","action":"{action}","store":"store1","outcome":"ok","total_ms":1,"steps":[]}}"#
            )
        };
        let mut text = Vec::new();
        text.extend_from_slice(line("takeover").as_bytes());
        text.extend_from_slice(b"\n\xff\xfe not utf-8\n");
        // A torn line an older ctmgr glued the next entry onto.
        text.extend_from_slice(br#"{"time":"2026-12-07T0"#);
        text.extend_from_slice(line("release").as_bytes());
        text.extend_from_slice(b"\n{\"half\": \n");
        text.extend_from_slice(line("migrate").as_bytes());
        text.extend_from_slice(b"\n");
        let j = parse(&text);
        let actions: Vec<&str> = j.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["takeover", "release", "migrate"]);
        assert_eq!(j.unreadable, [2, 3, 4]);
    }
}
