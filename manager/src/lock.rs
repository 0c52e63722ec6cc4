//! One lock per store (safety rule 4): an flock on `/run/ctmgr/<store>.lock`
//! ($CTMGR_RUN_DIR overrides). A second takeover, release, snapshot or prune
//! on the same store waits with a message, or fails at once under
//! `--no-wait`. The kernel drops the lock when the process dies, so a
//! `kill -9` never leaves a stale lock behind.
//!
//! Besides the store locks there is one node-local *name reservation* per
//! container name (`/run/ctmgr/names/<name>.lock`, D19): `create` holds it
//! from before it asks the peer whether the name is free until the new
//! container's directory exists, and the peer's answer (`__name-answer`)
//! takes it too, so two creates of one name on the two nodes cannot both
//! hear "free".

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
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
    #[error("the container name {name} is reserved by another ctmgr run ({holder}); not waiting (--no-wait)")]
    NameBusy { name: String, holder: String },
    #[error("the container name {name} is still reserved by another ctmgr run ({holder}) after {secs} s")]
    NameTimedOut {
        name: String,
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
    let path = dir().join(format!("{store}.lock"));
    match acquire(&path, wait, on_wait) {
        Ok(file) => Ok(StoreLock {
            file,
            store: store.to_string(),
        }),
        Err(Acquire::Busy(holder)) => Err(LockError::Busy {
            store: store.to_string(),
            holder,
        }),
        Err(Acquire::TimedOut(holder, secs)) => Err(LockError::TimedOut {
            store: store.to_string(),
            holder,
            secs,
        }),
        Err(Acquire::Io(source)) => Err(LockError::Io { path, source }),
    }
}

/// A held name reservation (see the module docs); released on drop.
#[derive(Debug)]
pub struct NameLock {
    file: File,
    pub name: String,
}

impl Drop for NameLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Where the name reservations live (apart from the store locks, so no
/// store name can meet a container name).
pub fn names_dir() -> PathBuf {
    dir().join("names")
}

/// Reserves the container name `name` on this node (it must be a valid
/// name: it becomes a file name). Waits like [`lock_store`].
pub fn lock_name(name: &str, wait: Wait, on_wait: &dyn Fn(&str)) -> Result<NameLock, LockError> {
    let path = names_dir().join(format!("{name}.lock"));
    match acquire(&path, wait, on_wait) {
        Ok(file) => Ok(NameLock {
            file,
            name: name.to_string(),
        }),
        Err(Acquire::Busy(holder)) => Err(LockError::NameBusy {
            name: name.to_string(),
            holder,
        }),
        Err(Acquire::TimedOut(holder, secs)) => Err(LockError::NameTimedOut {
            name: name.to_string(),
            holder,
            secs,
        }),
        Err(Acquire::Io(source)) => Err(LockError::Io { path, source }),
    }
}

/// Why a lock file could not be taken.
enum Acquire {
    Busy(String),
    TimedOut(String, u64),
    Io(std::io::Error),
}

/// Takes the flock on `path` (made with its directory when missing) and
/// writes who holds it into the file.
fn acquire(path: &Path, wait: Wait, on_wait: &dyn Fn(&str)) -> Result<File, Acquire> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Acquire::Io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Acquire::Io)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(path)
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                let holder = if holder.is_empty() {
                    "unknown".to_string()
                } else {
                    holder
                };
                match wait {
                    Wait::No => return Err(Acquire::Busy(holder)),
                    Wait::Upto(limit) if started.elapsed() >= limit => {
                        return Err(Acquire::TimedOut(holder, limit.as_secs()))
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
            Err(std::fs::TryLockError::Error(e)) => return Err(Acquire::Io(e)),
        }
    }
    let me = format!(
        "pid {} ({})",
        std::process::id(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = file.set_len(0);
    let _ = file.write_all(me.as_bytes());
    Ok(file)
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

        // Name reservations are apart from the store locks.
        let web = lock_name("web", Wait::No, &|_| {}).unwrap();
        lock_store("web", Wait::No, &|_| {}).unwrap();
        let err = lock_name("web", Wait::No, &|_| {}).unwrap_err();
        assert!(matches!(err, LockError::NameBusy { .. }), "{err}");
        assert!(err.to_string().contains("name web is reserved"), "{err}");
        let err = lock_name("web", Wait::Upto(Duration::from_millis(100)), &|_| {}).unwrap_err();
        assert!(matches!(err, LockError::NameTimedOut { .. }), "{err}");
        drop(web);
        lock_name("web", Wait::No, &|_| {}).unwrap();
    }
}
