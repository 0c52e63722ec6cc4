//! Which stores this node holds right now.
//!
//! A store is *held here* when its Btrfs filesystem is mounted at its
//! mountpoint from its device in this mount namespace, and — for a replicated
//! store — DRBD says this node is Primary. The guard hook and every command
//! that touches containers ask the same question through `holding`.

use std::path::{Path, PathBuf};

use crate::config::{Config, Store};
use crate::mountinfo::{self, Mount};
use crate::runner::{Cmd, Runner};

/// The answer to "may this node use the store now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// Mounted at its mountpoint from its device, and Primary if replicated.
    Held,
    /// Nothing is mounted at the mountpoint.
    NotMounted,
    /// Something else occupies the mountpoint.
    Occupied { source: String, fstype: String },
    /// Mounted, but DRBD does not say Primary here (it should never happen:
    /// DRBD refuses to open a Secondary; reported all the same).
    NotPrimary { role: String },
    /// The DRBD role could not be read.
    RoleUnknown { error: String },
}

impl Holding {
    pub fn is_held(&self) -> bool {
        matches!(self, Holding::Held)
    }

    /// A short phrase for tables and messages.
    pub fn describe(&self, mountpoint: &Path) -> String {
        match self {
            Holding::Held => "held here".to_string(),
            Holding::NotMounted => format!("not mounted at {}", mountpoint.display()),
            Holding::Occupied { source, fstype } => format!(
                "{} is occupied by {source} ({fstype}), not the store's device",
                mountpoint.display()
            ),
            Holding::NotPrimary { role } => format!("mounted but DRBD role here is {role}"),
            Holding::RoleUnknown { error } => format!("DRBD role unknown: {error}"),
        }
    }
}

/// Canonical form of a device path (follows /dev/drbd/by-res/… symlinks).
pub fn canonical_device(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Is `mount` the store's filesystem from its device?
pub fn mount_is_store(mount: &Mount, device: &Path) -> bool {
    mount.fstype == "btrfs"
        && canonical_device(Path::new(&mount.source)) == canonical_device(device)
}

/// Asks DRBD for this node's role of `resource` (`drbdadm role RES`; 8.4 prints
/// `Primary/Secondary`, 9 prints `Primary`).
pub fn drbd_role(runner: &dyn Runner, resource: &str) -> Result<String, String> {
    let out = runner
        .run_ok(&Cmd::new("drbdadm").args(["role", resource]))
        .map_err(|e| e.to_string())?;
    let role = crate::drbd::state::parse_role(&out.stdout).map_err(|e| e.to_string())?;
    Ok(role.local.to_string())
}

/// The one check behind "held here", shared by commands and the guard hook.
pub fn holding(
    mountpoint: &Path,
    device: &Path,
    drbd_resource: Option<&str>,
    runner: &dyn Runner,
    mounts: &[Mount],
) -> Holding {
    match mountinfo::at(mounts, mountpoint) {
        None => return Holding::NotMounted,
        Some(m) if !mount_is_store(m, device) => {
            return Holding::Occupied {
                source: m.source.clone(),
                fstype: m.fstype.clone(),
            }
        }
        Some(_) => {}
    }
    if let Some(res) = drbd_resource {
        match drbd_role(runner, res) {
            Ok(role) if role == "Primary" => {}
            Ok(role) => return Holding::NotPrimary { role },
            Err(error) => return Holding::RoleUnknown { error },
        }
    }
    Holding::Held
}

/// "Held here" asked again, from a fresh mount table and DRBD role: for a
/// command that has just taken the store lock (it may have waited while a
/// release or a takeover changed the answer it saw at its start).
pub fn holding_now(store: &Store, runner: &dyn Runner) -> Holding {
    match mountinfo::read() {
        Ok(mounts) => holding(
            &store.mountpoint,
            &store.device,
            store.drbd_resource.as_deref(),
            runner,
            &mounts,
        ),
        Err(e) => Holding::RoleUnknown {
            error: format!("cannot read the mount table: {e}"),
        },
    }
}

/// One configured store as seen from this node.
#[derive(Debug, Clone)]
pub struct StoreHere<'c> {
    pub store: &'c Store,
    pub holding: Holding,
}

impl StoreHere<'_> {
    pub fn held(&self) -> bool {
        self.holding.is_held()
    }
}

/// Every configured store, as seen from this node.
pub fn survey<'c>(config: &'c Config, runner: &dyn Runner, mounts: &[Mount]) -> Vec<StoreHere<'c>> {
    config
        .stores
        .iter()
        .map(|store| StoreHere {
            store,
            holding: holding(
                &store.mountpoint,
                &store.device,
                store.drbd_resource.as_deref(),
                runner,
                mounts,
            ),
        })
        .collect()
}

/// Lxcpaths that exist on this node: every store mounted here (held or not,
/// since the peer's replicas live in our own store's directory).
pub fn local_lxcpaths(config: &Config, mounts: &[Mount]) -> Vec<PathBuf> {
    config
        .stores
        .iter()
        .filter(|s| {
            mountinfo::at(mounts, &s.mountpoint).is_some_and(|m| mount_is_store(m, &s.device))
        })
        .map(|s| s.lxcpath())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    fn mounts(line: &str) -> Vec<Mount> {
        mountinfo::parse(line).unwrap()
    }

    #[test]
    fn held_needs_mount_device_and_primary() {
        let r = RecordingRunner::new();
        r.answer("drbdadm role r0", 0, "Primary\n", "");
        let m = mounts("301 22 0:52 / /srv/store1 rw - btrfs /dev/drbd0 rw\n");
        let mp = Path::new("/srv/store1");
        let dev = Path::new("/dev/drbd0");
        assert_eq!(holding(mp, dev, Some("r0"), &r, &m), Holding::Held);
        assert_eq!(holding(mp, dev, None, &r, &m), Holding::Held);
        assert_eq!(
            holding(Path::new("/srv/store2"), dev, None, &r, &m),
            Holding::NotMounted
        );
        let other = holding(mp, Path::new("/dev/drbd9"), None, &r, &m);
        assert!(matches!(other, Holding::Occupied { .. }), "{other:?}");
    }

    #[test]
    fn secondary_or_unreadable_role_is_not_held() {
        let r = RecordingRunner::new();
        r.answer("drbdadm role r0", 0, "Secondary/Primary\n", "");
        let m = mounts("301 22 0:52 / /srv/store1 rw - btrfs /dev/drbd0 rw\n");
        let h = holding(
            Path::new("/srv/store1"),
            Path::new("/dev/drbd0"),
            Some("r0"),
            &r,
            &m,
        );
        assert_eq!(
            h,
            Holding::NotPrimary {
                role: "Secondary".into()
            }
        );
        let h = holding(
            Path::new("/srv/store1"),
            Path::new("/dev/drbd0"),
            Some("r9"),
            &r,
            &m,
        );
        assert!(matches!(h, Holding::RoleUnknown { .. }));
    }

    #[test]
    fn a_tmpfs_on_the_mountpoint_is_not_the_store() {
        let r = RecordingRunner::new();
        let m = mounts("301 22 0:52 / /srv/store1 rw - tmpfs tmpfs rw\n");
        let h = holding(
            Path::new("/srv/store1"),
            Path::new("/dev/drbd0"),
            None,
            &r,
            &m,
        );
        assert!(h
            .describe(Path::new("/srv/store1"))
            .contains("occupied by tmpfs"));
    }
}
