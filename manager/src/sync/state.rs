//! What this node last pushed to the peer, kept node-local on the sender:
//! `<state dir>/sync/<store>.json` holds the sha256 of every replica file as
//! pushed, and `<state dir>/sync/<store>/<name>/<file>` a copy of its bytes
//! (to show a drifted replica as a diff against what was pushed). Both are
//! written atomically. Losing them is safe: the next push then treats every
//! replica that differs from the local file as drift.

use std::collections::BTreeMap;
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
}

/// One file as last pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pushed {
    pub sha256: String,
    /// RFC 3339 UTC time of the push that wrote or confirmed it.
    pub time: String,
}

/// `<state_dir>/sync`
pub fn sync_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sync")
}

/// `<state_dir>/sync/<store>.json`
pub fn state_path(state_dir: &Path, store: &str) -> PathBuf {
    sync_dir(state_dir).join(format!("{store}.json"))
}

/// Where the copy of a pushed file is kept.
pub fn copy_path(state_dir: &Path, store: &str, name: &str, file: SyncFile) -> PathBuf {
    sync_dir(state_dir)
        .join(store)
        .join(name)
        .join(file.as_str())
}

impl StoreState {
    /// Reads the state of `store`; an absent file is an empty state.
    pub fn load(state_dir: &Path, store: &str) -> Result<StoreState, SyncError> {
        let path = state_path(state_dir, store);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StoreState {
                    version: STATE_VERSION,
                    store: store.to_string(),
                    ..StoreState::default()
                })
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

    /// The hash last pushed for one file.
    pub fn hash(&self, name: &str, file: SyncFile) -> Option<&str> {
        self.containers
            .get(name)
            .and_then(|files| files.get(&file))
            .map(|p| p.sha256.as_str())
    }

    /// Records that the peer now has `bytes` for this file, and keeps a copy.
    pub fn record(
        &mut self,
        state_dir: &Path,
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
        self.containers.entry(name.to_string()).or_default().insert(
            file,
            Pushed {
                sha256: sha256_hex(bytes),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        );
        Ok(())
    }

    /// Forgets a container whose replica is gone, with its copies.
    pub fn forget(&mut self, state_dir: &Path, name: &str) -> Result<(), SyncError> {
        self.containers.remove(name);
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
        s.record(d.path(), "web", SyncFile::Config, b"a = b\n")
            .unwrap();
        s.save(d.path()).unwrap();
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
        s.record(d.path(), "web", SyncFile::Fstab, b"one\n")
            .unwrap();
        std::fs::write(
            copy_path(d.path(), "store1", "web", SyncFile::Fstab),
            b"two\n",
        )
        .unwrap();
        assert!(s.pushed_copy(d.path(), "web", SyncFile::Fstab).is_none());
        s.forget(d.path(), "web").unwrap();
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
}
