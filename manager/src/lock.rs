//! One lock per store (safety rule 4): an flock on `/run/ctmgr/<store>.lock`
//! ($CTMGR_RUN_DIR overrides). A second takeover, release, snapshot or prune
//! on the same store waits with a message, or fails at once under
//! `--no-wait`. The kernel drops the lock when the process dies, so a
//! `kill -9` never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the lock files live.
pub fn dir() -> PathBuf {
    std::env::var_os("CTMGR_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ctmgr"))
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("store {store} is locked by another ctmgr run ({holder}); not waiting (--no-wait)")]
    Busy { store: String, holder: String },
    #[error("store {store} is still locked by another ctmgr run ({holder}) after {secs} s")]
    TimedOut {
        store: String,
        holder: String,
        secs: u64,
    },
    #[error("cannot open lock file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    pub store: String,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// How to wait for a lock.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Fail at once when busy.
    No,
    /// Wait at most this long, saying so once.
    Upto(Duration),
}

/// Locks `store`. `on_wait` is called once if we have to wait (with the
/// holder's description) so the caller can tell the person at the terminal.
pub fn lock_store(store: &str, wait: Wait, on_wait: &dyn Fn(&str)) -> Result<StoreLock, LockError> {
    let dir = dir();
    let path = dir.join(format!("{store}.lock"));
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                let holder = if holder.is_empty() {
                    "unknown".to_string()
                } else {
                    holder
                };
                match wait {
                    Wait::No => {
                        return Err(LockError::Busy {
                            store: store.to_string(),
                            holder,
                        })
                    }
                    Wait::Upto(limit) if started.elapsed() >= limit => {
                        return Err(LockError::TimedOut {
                            store: store.to_string(),
                            holder,
                            secs: limit.as_secs(),
                        })
                    }
                    Wait::Upto(_) => {
                        if !told {
                            on_wait(&holder);
                            told = true;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    let me = format!(
        "pid {} ({})",
        std::process::id(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = file.set_len(0);
    let _ = file.write_all(me.as_bytes());
    Ok(StoreLock {
        file,
        store: store.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_busy_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        std::env::set_var("CTMGR_RUN_DIR", d.path());
        let first = lock_store("s1", Wait::No, &|_| {}).unwrap();
        let err = lock_store("s1", Wait::No, &|_| {}).unwrap_err();
        assert!(err.to_string().contains("--no-wait"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let told = std::cell::Cell::new(false);
        let err = lock_store("s1", Wait::Upto(Duration::from_millis(200)), &|_| {
            told.set(true)
        })
        .unwrap_err();
        assert!(matches!(err, LockError::TimedOut { .. }));
        assert!(told.get());
        lock_store("s2", Wait::No, &|_| {}).unwrap();
        drop(first);
        lock_store("s1", Wait::No, &|_| {}).unwrap();
    }
}
