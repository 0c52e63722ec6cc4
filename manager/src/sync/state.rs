//! What this node last pushed to the peer, kept node-local on the sender:
//! `<state dir>/sync/<store>.json` holds the sha256 of every replica file as
//! pushed, and `<state dir>/sync/<store>/<name>/<file>` a copy of its bytes
//! (to show a drifted replica as a diff against what was pushed). Both are
//! written atomically. Losing them is safe: the next push then treats every
//! replica that differs from the local file as drift.
//!
//! A session records as it goes (issue 10, D11): `<store>.acks`, an
//! append-only log of one line per event, gets a `sending` line before a
//! file is pushed, a `pushed` line once the peer acknowledged that it holds
//! the file, a `forgot` line once the peer acknowledged a removal. [`load`]
//! folds the log into the JSON ([`StoreState::apply`]); the end of a
//! session writes the JSON and removes the log ([`StoreState::compact`]).
//! So a session killed at any point leaves a state that knows every file
//! the peer acknowledged, and every file it may have written without the
//! acknowledgement arriving (`pending`): a replica whose content is one
//! this node sent is never drift, any other content always is.
//!
//! The log is not fsynced per line (a push stays one fsync of the copy, as
//! before): a line survives a kill of ctmgr (it is in the page cache) and
//! is lost only with the machine. A lost line only ever makes the next sync
//! see a mismatch, which it reports as drift — the safe direction; a hash
//! is never recorded before the peer acknowledged it.
//!
//! [`load`]: StoreState::load

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::protocol::SyncFile;
use super::{read_regular, sha256_hex, SyncError};
use crate::fsutil::write_atomic;

/// Format version of the state file.
pub const STATE_VERSION: u32 = 1;

/// The sync state of one store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreState {
    pub version: u32,
    pub store: String,
    /// The peer the hashes were pushed to.
    pub peer: String,
    /// Container name → file name (`config`, `fstab`) → pushed content.
    pub containers: BTreeMap<String, BTreeMap<SyncFile, Pushed>>,
    /// Contents sent to the peer whose acknowledgement never arrived (the
    /// session was killed or broke off): the peer may hold any of them.
    /// Container → file → sha256s. Cleared per file by the peer's next
    /// definite answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, BTreeMap<SyncFile, BTreeSet<String>>>,
}

/// One file as last pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pushed {
    pub sha256: String,
    /// RFC 3339 UTC time of the push that wrote or confirmed it.
    pub time: String,
}

/// One line of the acknowledgement log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// About to send this content (written before the request).
    Sending {
        name: String,
        file: SyncFile,
        sha256: String,
    },
    /// The peer acknowledged that it holds this content.
    Pushed {
        name: String,
        file: SyncFile,
        sha256: String,
        time: String,
    },
    /// The peer answered for this file and holds none of the pending
    /// contents (it reported drift with another content).
    Settled { name: String, file: SyncFile },
    /// The peer acknowledged that the replica is gone.
    Forgot { name: String },
}

/// `<state_dir>/sync`
pub fn sync_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sync")
}

/// `<state_dir>/sync/<store>.json`
pub fn state_path(state_dir: &Path, store: &str) -> PathBuf {
    sync_dir(state_dir).join(format!("{store}.json"))
}

/// `<state_dir>/sync/<store>.acks`: the log of the session running or
/// killed since the last compaction.
pub fn log_path(state_dir: &Path, store: &str) -> PathBuf {
    sync_dir(state_dir).join(format!("{store}.acks"))
}

/// Where the copy of a pushed file is kept.
pub fn copy_path(state_dir: &Path, store: &str, name: &str, file: SyncFile) -> PathBuf {
    sync_dir(state_dir)
        .join(store)
        .join(name)
        .join(file.as_str())
}

/// The acknowledgement log of one store, opened for appending on the first
/// line written.
#[derive(Debug)]
pub struct AckLog {
    path: PathBuf,
    file: Option<File>,
}

impl AckLog {
    pub fn new(state_dir: &Path, store: &str) -> AckLog {
        AckLog {
            path: log_path(state_dir, store),
            file: None,
        }
    }

    /// Appends one line (one `write`, no fsync: see the module doc).
    pub fn append(&mut self, entry: &Entry) -> Result<(), SyncError> {
        let err = |path: &Path, source| SyncError::StateWrite {
            path: path.to_path_buf(),
            source,
        };
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
            }
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&self.path)
                .map_err(|e| err(&self.path, e))?;
            // A line torn by a crash must not swallow the next one.
            if ends_torn(&self.path) {
                (&f).write_all(b"\n").map_err(|e| err(&self.path, e))?;
            }
            self.file = Some(f);
        }
        let mut line = serde_json::to_vec(entry)
            .map_err(std::io::Error::other)
            .map_err(|e| err(&self.path, e))?;
        line.push(b'\n');
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&line).map_err(|e| err(&self.path, e))
    }
}

/// Does the file end inside a line (not empty and no final newline)?
fn ends_torn(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    if f.seek(SeekFrom::End(-1)).is_err() {
        return false; // empty
    }
    let mut last = [0u8; 1];
    f.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl StoreState {
    fn empty(store: &str) -> StoreState {
        StoreState {
            version: STATE_VERSION,
            store: store.to_string(),
            ..StoreState::default()
        }
    }

    /// Reads the state of `store` as last compacted (the JSON alone); an
    /// absent file is an empty state.
    pub fn load_compacted(state_dir: &Path, store: &str) -> Result<StoreState, SyncError> {
        let path = state_path(state_dir, store);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StoreState::empty(store))
            }
            Err(source) => return Err(SyncError::StateRead { path, source }),
        };
        let state: StoreState =
            serde_json::from_slice(&bytes).map_err(|source| SyncError::StateParse {
                path: path.clone(),
                source,
            })?;
        if state.version != STATE_VERSION || state.store != store {
            return Err(SyncError::StateMismatch {
                path,
                what: format!("version {} of store {:?}", state.version, state.store),
            });
        }
        Ok(state)
    }

    /// Reads the state of `store`: the JSON with the acknowledgement log of
    /// a session killed since folded in. A line that cannot be read (torn
    /// by a crash) is skipped: losing a line only makes a mismatch drift.
    pub fn load(state_dir: &Path, store: &str) -> Result<StoreState, SyncError> {
        let mut state = StoreState::load_compacted(state_dir, store)?;
        let path = log_path(state_dir, store);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(source) => return Err(SyncError::StateRead { path, source }),
        };
        for (i, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
            let line = line.map_err(|source| SyncError::StateRead {
                path: path.clone(),
                source,
            })?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Entry>(&line) {
                Ok(entry) => state.apply(&entry),
                Err(e) => tracing::warn!(
                    "{} line {}: skipped, unreadable ({e}); a file it recorded counts as drift if it differs",
                    path.display(),
                    i + 1
                ),
            }
        }
        Ok(state)
    }

    /// Folds one log entry in. Replaying a log twice gives the same state.
    pub fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::Sending { name, file, sha256 } => {
                self.pending
                    .entry(name.clone())
                    .or_default()
                    .entry(*file)
                    .or_default()
                    .insert(sha256.clone());
            }
            Entry::Pushed {
                name,
                file,
                sha256,
                time,
            } => {
                self.containers.entry(name.clone()).or_default().insert(
                    *file,
                    Pushed {
                        sha256: sha256.clone(),
                        time: time.clone(),
                    },
                );
                self.clear_pending(name, *file);
            }
            Entry::Settled { name, file } => self.clear_pending(name, *file),
            Entry::Forgot { name } => {
                self.containers.remove(name);
                self.pending.remove(name);
            }
        }
    }

    fn clear_pending(&mut self, name: &str, file: SyncFile) {
        if let Some(files) = self.pending.get_mut(name) {
            files.remove(&file);
            if files.is_empty() {
                self.pending.remove(name);
            }
        }
    }

    /// Writes the state atomically (creating the directory).
    pub fn save(&self, state_dir: &Path) -> Result<(), SyncError> {
        let path = state_path(state_dir, &self.store);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(sync_dir(state_dir))?;
            let mut json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            json.push(b'\n');
            write_atomic(&path, &json, 0o600)
        };
        write().map_err(|source| SyncError::StateWrite { path, source })
    }

    /// End of a session: writes the JSON (when it changed or a log is there)
    /// and then removes the log. A crash in between leaves a log whose
    /// entries the JSON already holds; folding them again changes nothing.
    pub fn compact(&self, state_dir: &Path) -> Result<(), SyncError> {
        let log = log_path(state_dir, &self.store);
        let has_log = std::fs::symlink_metadata(&log).is_ok();
        if has_log
            || StoreState::load_compacted(state_dir, &self.store)
                .ok()
                .as_ref()
                != Some(self)
        {
            self.save(state_dir)?;
        }
        if has_log {
            match std::fs::remove_file(&log) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SyncError::StateWrite { path: log, source }),
            }
        }
        Ok(())
    }

    /// The hash last pushed for one file.
    pub fn hash(&self, name: &str, file: SyncFile) -> Option<&str> {
        self.containers
            .get(name)
            .and_then(|files| files.get(&file))
            .map(|p| p.sha256.as_str())
    }

    /// Contents sent for one file whose acknowledgement never arrived.
    pub fn pending(&self, name: &str, file: SyncFile) -> Option<&BTreeSet<String>> {
        self.pending.get(name).and_then(|files| files.get(&file))
    }

    /// Is `sha256` a content this node sent for that file (acknowledged or
    /// not)? Such a replica is ours, not drift.
    pub fn sent(&self, name: &str, file: SyncFile, sha256: &str) -> bool {
        self.hash(name, file) == Some(sha256)
            || self.pending(name, file).is_some_and(|p| p.contains(sha256))
    }

    /// Is anything recorded or pending for this container?
    pub fn knows(&self, name: &str) -> bool {
        self.containers.contains_key(name) || self.pending.contains_key(name)
    }

    /// Notes, before it is sent, that `sha256` is about to be pushed.
    pub fn sending(
        &mut self,
        log: &mut AckLog,
        name: &str,
        file: SyncFile,
        sha256: &str,
    ) -> Result<(), SyncError> {
        if self.pending(name, file).is_some_and(|p| p.contains(sha256)) {
            return Ok(());
        }
        let entry = Entry::Sending {
            name: name.to_string(),
            file,
            sha256: sha256.to_string(),
        };
        log.append(&entry)?;
        self.apply(&entry);
        Ok(())
    }

    /// Records that the peer acknowledged holding `bytes` for this file:
    /// keeps a copy, then logs it.
    pub fn record(
        &mut self,
        state_dir: &Path,
        log: &mut AckLog,
        name: &str,
        file: SyncFile,
        bytes: &[u8],
    ) -> Result<(), SyncError> {
        let path = copy_path(state_dir, &self.store, name, file);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_atomic(&path, bytes, 0o600)
        };
        write().map_err(|source| SyncError::StateWrite {
            path: path.clone(),
            source,
        })?;
        let entry = Entry::Pushed {
            name: name.to_string(),
            file,
            sha256: sha256_hex(bytes),
            time: now(),
        };
        log.append(&entry)?;
        self.apply(&entry);
        Ok(())
    }

    /// The peer answered for this file with a content none of the pending
    /// ones: they are not on the peer.
    pub fn settle(
        &mut self,
        log: &mut AckLog,
        name: &str,
        file: SyncFile,
    ) -> Result<(), SyncError> {
        if self.pending(name, file).is_none() {
            return Ok(());
        }
        let entry = Entry::Settled {
            name: name.to_string(),
            file,
        };
        log.append(&entry)?;
        self.apply(&entry);
        Ok(())
    }

    /// Forgets a container whose replica the peer acknowledged gone, with
    /// its copies.
    pub fn forget(
        &mut self,
        state_dir: &Path,
        log: &mut AckLog,
        name: &str,
    ) -> Result<(), SyncError> {
        let entry = Entry::Forgot {
            name: name.to_string(),
        };
        log.append(&entry)?;
        self.apply(&entry);
        let dir = sync_dir(state_dir).join(&self.store).join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SyncError::StateWrite { path: dir, source }),
        }
    }

    /// The kept copy of what was last pushed, if it matches the recorded hash.
    pub fn pushed_copy(&self, state_dir: &Path, name: &str, file: SyncFile) -> Option<Vec<u8>> {
        let want = self.hash(name, file)?;
        let path = copy_path(state_dir, &self.store, name, file);
        let (bytes, _) = read_regular(&path).ok()??;
        (sha256_hex(&bytes) == want).then_some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_state_is_empty_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StoreState::load(d.path(), "store1").unwrap();
        assert!(s.containers.is_empty());
        s.peer = "node2".into();
        let mut log = AckLog::new(d.path(), "store1");
        s.record(d.path(), &mut log, "web", SyncFile::Config, b"a = b\n")
            .unwrap();
        s.compact(d.path()).unwrap();
        let back = StoreState::load(d.path(), "store1").unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.hash("web", SyncFile::Config),
            Some(sha256_hex(b"a = b\n").as_str())
        );
        assert_eq!(
            back.pushed_copy(d.path(), "web", SyncFile::Config).unwrap(),
            b"a = b\n"
        );
        assert!(back.hash("web", SyncFile::Fstab).is_none());
        let text = std::fs::read_to_string(state_path(d.path(), "store1")).unwrap();
        assert!(text.contains("\"config\""), "{text}");
    }

    #[test]
    fn a_tampered_copy_is_not_shown_as_what_was_pushed() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StoreState::load(d.path(), "store1").unwrap();
        let mut log = AckLog::new(d.path(), "store1");
        s.record(d.path(), &mut log, "web", SyncFile::Fstab, b"one\n")
            .unwrap();
        std::fs::write(
            copy_path(d.path(), "store1", "web", SyncFile::Fstab),
            b"two\n",
        )
        .unwrap();
        assert!(s.pushed_copy(d.path(), "web", SyncFile::Fstab).is_none());
        s.forget(d.path(), &mut log, "web").unwrap();
        assert!(s.containers.is_empty());
        assert!(!sync_dir(d.path()).join("store1/web").exists());
    }

    #[test]
    fn unreadable_or_foreign_state_is_an_error_not_a_fresh_start() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sync_dir(d.path())).unwrap();
        std::fs::write(state_path(d.path(), "store1"), b"{not json").unwrap();
        let err = StoreState::load(d.path(), "store1").unwrap_err();
        assert!(matches!(err, SyncError::StateParse { .. }), "{err}");
        let other = StoreState {
            version: STATE_VERSION,
            store: "store9".into(),
            ..StoreState::default()
        };
        std::fs::write(
            state_path(d.path(), "store1"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            StoreState::load(d.path(), "store1"),
            Err(SyncError::StateMismatch { .. })
        ));
    }

    fn h(s: &str) -> String {
        sha256_hex(s.as_bytes())
    }

    #[test]
    fn acknowledgements_are_logged_as_they_come_and_folded_by_load() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let mut s = StoreState::load(dir, "store1").unwrap();
        let mut log = AckLog::new(dir, "store1");
        s.sending(&mut log, "web", SyncFile::Config, &h("v1"))
            .unwrap();
        s.record(dir, &mut log, "web", SyncFile::Config, b"v1")
            .unwrap();
        s.sending(&mut log, "db", SyncFile::Config, &h("d1"))
            .unwrap();
        s.sending(&mut log, "db", SyncFile::Config, &h("d1"))
            .unwrap();
        s.sending(&mut log, "old", SyncFile::Fstab, &h("o"))
            .unwrap();
        s.forget(dir, &mut log, "old").unwrap();
        // "Killed" here: nothing compacted, yet load sees all of it.
        assert!(!state_path(dir, "store1").exists());
        let text = std::fs::read_to_string(log_path(dir, "store1")).unwrap();
        assert_eq!(
            text.lines().count(),
            5,
            "a pending content is logged once: {text}"
        );
        let back = StoreState::load(dir, "store1").unwrap();
        assert_eq!(back, s);
        assert_eq!(back.hash("web", SyncFile::Config), Some(h("v1").as_str()));
        assert!(
            back.pending("web", SyncFile::Config).is_none(),
            "acknowledged"
        );
        assert!(back.sent("db", SyncFile::Config, &h("d1")));
        assert!(
            back.hash("db", SyncFile::Config).is_none(),
            "never acknowledged"
        );
        assert!(!back.sent("db", SyncFile::Config, &h("d2")));
        assert!(!back.knows("old"));

        // Compaction: the JSON holds it all, the log is gone.
        let mut s = back;
        s.compact(dir).unwrap();
        assert!(!log_path(dir, "store1").exists());
        assert_eq!(StoreState::load_compacted(dir, "store1").unwrap(), s);
        // A crash between the JSON write and the log's removal: the log is
        // folded a second time, which changes nothing.
        std::fs::write(log_path(dir, "store1"), &text).unwrap();
        assert_eq!(StoreState::load(dir, "store1").unwrap(), s);

        // Settled clears the pending contents of that file only.
        let mut log = AckLog::new(dir, "store1");
        s.sending(&mut log, "db", SyncFile::Fstab, &h("f")).unwrap();
        s.settle(&mut log, "db", SyncFile::Config).unwrap();
        assert!(s.pending("db", SyncFile::Config).is_none());
        assert!(s.knows("db"));
        assert_eq!(StoreState::load(dir, "store1").unwrap(), s);
        s.compact(dir).unwrap();
        let json = std::fs::read_to_string(state_path(dir, "store1")).unwrap();
        assert!(json.contains("\"pending\""), "{json}");
    }

    #[test]
    fn a_torn_line_is_skipped_and_does_not_swallow_the_next() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir_all(sync_dir(dir)).unwrap();
        let good = serde_json::to_string(&Entry::Sending {
            name: "web".into(),
            file: SyncFile::Config,
            sha256: h("v1"),
        })
        .unwrap();
        // A power loss tore the last line of the previous session.
        std::fs::write(
            log_path(dir, "store1"),
            format!("{good}\n{{\"op\":\"pushed\",\"na"),
        )
        .unwrap();
        let mut s = StoreState::load(dir, "store1").unwrap();
        assert!(s.sent("web", SyncFile::Config, &h("v1")));
        assert!(
            s.hash("web", SyncFile::Config).is_none(),
            "torn ack lost, not invented"
        );
        let mut log = AckLog::new(dir, "store1");
        s.record(dir, &mut log, "web", SyncFile::Config, b"v1")
            .unwrap();
        let back = StoreState::load(dir, "store1").unwrap();
        assert_eq!(back.hash("web", SyncFile::Config), Some(h("v1").as_str()));
        assert_eq!(back, s);
    }

    #[test]
    fn a_state_without_pending_reads_and_writes_as_before() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sync_dir(d.path())).unwrap();
        let old = r#"{"version":1,"store":"store1","peer":"node2","containers":{"web":{"config":{"sha256":"ab","time":"2026-12-01T00:00:00Z"}}}}"#;
        std::fs::write(state_path(d.path(), "store1"), old).unwrap();
        let s = StoreState::load(d.path(), "store1").unwrap();
        assert_eq!(s.hash("web", SyncFile::Config), Some("ab"));
        assert!(!serde_json::to_string(&s).unwrap().contains("pending"));
    }
}
