//! Atomic file writes (safety rule 5): temp file in the same directory, fsync,
//! rename, fsync the directory. A crash leaves the old file or the new one,
//! never half of either.
//!
//! The temp file is `.<name>.ctmgr-tmp.<pid>.<random>`, created exclusively
//! (`O_EXCL`) with an unpredictable suffix, so nobody can plant it in advance.
//! A write killed before its rename leaves that file behind; the next write
//! into the same directory removes such leftovers of ours once their process
//! is gone and they are older than [`STALE_AFTER`].

use std::fs::{self, File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What marks a temp file as ours.
const MARK: &str = ".ctmgr-tmp.";

/// Leftover temp files younger than this are never swept, whoever wrote them.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Writes `bytes` to `path` atomically with the given permission bits.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_checked(path, bytes, mode, |_| Ok(()))
}

/// [`write_atomic`], with `check` run on the complete, synced temp file before
/// it replaces `path` (e.g. `drbdadm dump` of a rendered resource): when it
/// fails, the temp file is removed, `path` is untouched and its error returned.
pub fn write_atomic_checked(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    check: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    sweep_stale(dir, SystemTime::now());
    let prefix = format!(".{}{MARK}{}.", name.to_string_lossy(), std::process::id());
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(8)
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    // The umask may have narrowed the mode given at creation.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    check(tmp.path())?;
    // On failure the temp file is removed when `persist`'s error drops it.
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// The PID in a temp file name of ours (`.<name>.ctmgr-tmp.<pid>[.<random>]`,
/// the form without a suffix written by older versions), if it is one.
pub fn temp_owner(file_name: &str) -> Option<u32> {
    if !file_name.starts_with('.') {
        return None;
    }
    let (_, rest) = file_name.rsplit_once(MARK)?;
    let pid = rest.split('.').next()?;
    pid.parse().ok()
}

/// Removes temp files of ours in `dir` left by writes that were killed: their
/// process is gone and they are older than [`STALE_AFTER`]. Returns what it
/// removed. Never fails: a leftover it cannot remove is only untidy.
pub fn sweep_stale(dir: &Path, now: SystemTime) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if old && !process_alive(pid) {
            let p = e.path();
            if fs::remove_file(&p).is_ok() {
                tracing::info!("removed {} left by an interrupted write", p.display());
                removed.push(p);
            }
        }
    }
    removed
}

fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_rejected_check_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r0.res");
        write_atomic(&p, b"old", 0o600).unwrap();
        let mut seen = Vec::new();
        let err = write_atomic_checked(&p, b"new", 0o600, |tmp| {
            seen = fs::read(tmp)?;
            Err(std::io::Error::other("drbdadm said no"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "drbdadm said no");
        assert_eq!(seen, b"new", "the check sees the complete temp file");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        write_atomic_checked(&p, b"new", 0o600, |_| Ok(())).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"three", 0o644).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn temp_names_are_recognised() {
        assert_eq!(temp_owner(".config.ctmgr-tmp.123"), Some(123));
        assert_eq!(temp_owner(".config.ctmgr-tmp.123.Ab9xYz01"), Some(123));
        assert_eq!(temp_owner(".a.ctmgr-tmp.b.ctmgr-tmp.7.x"), Some(7));
        assert_eq!(temp_owner("config.ctmgr-tmp.123"), None);
        assert_eq!(temp_owner(".config.ctmgr-tmp.x"), None);
        assert_eq!(temp_owner(".config"), None);
    }

    /// D15: a write killed before its rename left its temp file; the next
    /// write into that directory removes it — but not a fresh one, not one
    /// whose process lives, and nothing that is not ours.
    #[test]
    fn interrupted_writes_are_swept_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let make = |name: &str, old: bool| {
            let p = d.join(name);
            fs::write(&p, b"half").unwrap();
            if old {
                File::options()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_modified(hour_ago)
                    .unwrap();
            }
            p
        };
        let stale_old_form = make(&format!(".config.ctmgr-tmp.{dead}"), true);
        let stale = make(&format!(".fstab.ctmgr-tmp.{dead}.AbCdEf12"), true);
        let fresh = make(&format!(".config.ctmgr-tmp.{dead}.Zz"), false);
        let alive = make(
            &format!(".config.ctmgr-tmp.{}.Yy", std::process::id()),
            true,
        );
        let foreign = make(".config.swp", true);
        write_atomic(&d.join("config"), b"new", 0o640).unwrap();
        assert!(!stale_old_form.exists());
        assert!(!stale.exists());
        assert!(fresh.exists() && alive.exists() && foreign.exists());
        assert_eq!(fs::read(d.join("config")).unwrap(), b"new");
    }
}
