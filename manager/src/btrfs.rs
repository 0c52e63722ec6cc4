//! In-process Btrfs subvolume operations through libbtrfsutil: no `btrfs`
//! process per snapshot. Errors name the path and what was being done.

use std::path::{Path, PathBuf};

use btrfsutil::subvolume::{DeleteFlags, SnapshotFlags, Subvolume};

#[derive(Debug, thiserror::Error)]
#[error("failed to {op} {path}: {message}")]
pub struct BtrfsError {
    pub op: &'static str,
    pub path: PathBuf,
    pub message: String,
}

fn err(op: &'static str, path: &Path, e: impl std::fmt::Debug) -> BtrfsError {
    BtrfsError {
        op,
        path: path.to_path_buf(),
        message: explain(path, &format!("{e:?}")),
    }
}

/// libbtrfsutil answers a missing path with its own error names
/// (`StatfsFailed`, `OpenFailed`); say what is missing instead.
fn explain(path: &Path, raw: &str) -> String {
    let missing = |p: &Path| matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    if !missing(path) {
        return raw.to_string();
    }
    if path.file_name() == Some(std::ffi::OsStr::new("rootfs")) {
        return format!("rootfs missing at {} ({raw})", path.display());
    }
    let what = match path.parent() {
        Some(parent) if missing(parent) => format!("{} does not exist", parent.display()),
        _ => format!("{} does not exist", path.display()),
    };
    format!("{what} ({raw})")
}

/// Creates an empty subvolume at `path`.
pub fn create_subvolume(path: &Path) -> Result<(), BtrfsError> {
    Subvolume::create(path, None)
        .map(|_| ())
        .map_err(|e| err("create subvolume", path, e))
}

/// Snapshots subvolume `src` to `dst`, read-only or writable.
pub fn snapshot(src: &Path, dst: &Path, read_only: bool) -> Result<(), BtrfsError> {
    let sv = Subvolume::get(src).map_err(|e| err("open subvolume", src, e))?;
    let flags = read_only.then_some(SnapshotFlags::READ_ONLY);
    sv.snapshot(dst, flags, None)
        .map(|_| ())
        .map_err(|e| err("snapshot", dst, e))
}

/// Deletes subvolume `path` (and subvolumes nested in it).
pub fn delete_subvolume(path: &Path) -> Result<(), BtrfsError> {
    let sv = Subvolume::get(path).map_err(|e| err("open subvolume", path, e))?;
    sv.delete(DeleteFlags::RECURSIVE)
        .map_err(|e| err("delete subvolume", path, e))
}

/// Whether subvolume `path` is read-only.
pub fn is_read_only(path: &Path) -> Result<bool, BtrfsError> {
    let sv = Subvolume::get(path).map_err(|e| err("open subvolume", path, e))?;
    sv.is_ro().map_err(|e| err("read flags of", path, e))
}

/// Sets or clears the read-only flag of subvolume `path`.
pub fn set_read_only(path: &Path, ro: bool) -> Result<(), BtrfsError> {
    let sv = Subvolume::get(path).map_err(|e| err("open subvolume", path, e))?;
    sv.set_ro(ro)
        .map_err(|e| err("set read-only flag of", path, e))
}

/// UUID and parent UUID of subvolume `path`.
pub fn uuids(path: &Path) -> Result<(String, Option<String>), BtrfsError> {
    let sv = Subvolume::get(path).map_err(|e| err("open subvolume", path, e))?;
    let info = sv.info().map_err(|e| err("read info of", path, e))?;
    Ok((
        info.uuid.to_string(),
        info.parent_uuid.map(|u| u.to_string()),
    ))
}

/// Whether `path` is the root of a Btrfs subvolume.
pub fn is_subvolume(path: &Path) -> bool {
    Subvolume::is_subvolume(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UX: a missing rootfs read "StatfsFailed".
    #[test]
    fn a_missing_rootfs_is_named_not_statfs_failed() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("containers/web/rootfs");
        let e = snapshot(&rootfs, &d.path().join("snap"), true).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("rootfs missing at {}", rootfs.display())),
            "{text}"
        );
        let e = delete_subvolume(&d.path().join("gone/data")).unwrap_err();
        assert!(e.to_string().contains("gone does not exist"), "{e}");
    }
}
