//! Tearing a lab down from its directory alone, and sweeping labs whose owner died.
//!
//! Every step is tried even when an earlier one failed; the error lists all failures. Running
//! it twice, or on a lab that is half up, is fine. It must never touch anything outside the
//! lab: processes are chosen by namespace identity, mounts by path under the lab directory,
//! loop devices by backing file under the lab directory.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{umount2, MntFlags};

use super::node::Node;
use super::state::{Layout, LAB_ROOT};
use crate::procfs::{self, own_mounts};
use crate::run::{self, host};

const T: Duration = Duration::from_secs(30);

/// Takes the lab's lock (a flock on `lock` in its directory), waiting at most `timeout`.
pub(super) fn lock(layout: &Layout, timeout: Duration) -> Result<Flock<File>> {
    let path = layout.lock_file();
    let mut file = Some(
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?,
    );
    let mut locked = None;
    run::wait_until(timeout, Duration::from_millis(100), || {
        let Some(f) = file.take() else { return true };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => {
                locked = Some(l);
                true
            }
            Err((f, _)) => {
                file = Some(f);
                false
            }
        }
    });
    locked.with_context(|| {
        format!(
            "lab {} is busy: {} stayed locked for {timeout:?}",
            layout.name,
            path.display()
        )
    })
}

/// Tears down the lab in `layout.dir`.
pub(super) fn teardown(layout: &Layout) -> Result<()> {
    if !layout.dir.exists() {
        return Ok(());
    }
    let mut errors: Vec<String> = Vec::new();
    let mut err = |what: &str, e: anyhow::Error| errors.push(format!("{what}: {e:#}"));
    // Waiting for a lab being built is bounded; after that we tear down anyway.
    let _lock = match lock(layout, Duration::from_secs(60)) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("ctmgr-lab: {e:#}; tearing down anyway");
            None
        }
    };
    let mounts = own_mounts().unwrap_or_default();
    let nodes: Vec<Node> = (1..=2)
        .map(|n| Node::new(layout, n))
        .filter(|n| n.exists(&mounts))
        .collect();

    // Containers first, politely (lxc-stop -k lets LXC clean its cgroups), then everything
    // still running in the lab's namespaces or below their processes.
    for node in &nodes {
        if let Err(e) = node.stop_containers(Duration::from_secs(60)) {
            err(&format!("stopping containers in {}", node.name()), e);
        }
    }
    let mut ids: HashSet<String> = HashSet::new();
    for n in 1..=2 {
        ids.extend(Node::new(layout, n).ns_identities(&mounts));
    }
    if let Some(id) = procfs::ns_identity(&layout.ns_file("lan", "net"), "net", &mounts) {
        ids.insert(id);
    }
    if let Err(e) = procfs::kill_in_namespaces(&ids, Duration::from_secs(15)) {
        err("killing the lab's processes", e);
    }
    for node in &nodes {
        if let Err(e) = node.unmount_stores() {
            err(&format!("unmounting stores in {}", node.name()), e);
        }
    }

    // Every mount under the lab directory, deepest first: namespace files (which frees the
    // namespaces, their interfaces and their mounts) and the directory's own bind.
    if let Err(e) = unmount_under(&layout.dir) {
        err("unmounting", e);
    }
    if let Err(e) = detach_loops(&layout.dir) {
        err("detaching loop devices", e);
    }
    if layout.dir.exists() {
        if let Err(e) = fs::remove_dir_all(&layout.dir) {
            err(
                &format!("removing {}", layout.dir.display()),
                anyhow::Error::new(e),
            );
        }
    }
    super::errors_to_result(errors)
}

fn unmount_under(dir: &Path) -> Result<()> {
    let mut errors = Vec::new();
    // A mount can be stacked several times on one path: repeat while anything is left.
    for _ in 0..8 {
        let mut points: Vec<PathBuf> = own_mounts()?
            .into_iter()
            .map(|m| m.mountpoint)
            .filter(|p| p.starts_with(dir))
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        errors.clear();
        for p in points {
            if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
                errors.push(format!("umount {}: {e}", p.display()));
            }
        }
    }
    super::errors_to_result(errors)
}

/// Loop devices whose backing file is under `dir`.
fn lab_loops(dir: &Path) -> Result<Vec<String>> {
    let out = host(
        &["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"],
        T,
    )
    .check()?;
    let prefix = format!("{}/", dir.display());
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, back)| back.starts_with(&prefix))
        .map(|(name, _)| name.to_string())
        .collect())
}

fn detach_loops(dir: &Path) -> Result<()> {
    for dev in lab_loops(dir)? {
        // Busy (a mount namespace still going away): the kernel detaches it when released.
        let _ = host(&["losetup", "-d", &dev], T);
    }
    let mut left = Vec::new();
    let gone = run::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        left = lab_loops(dir).unwrap_or_default();
        left.is_empty()
    });
    anyhow::ensure!(gone, "loop devices still attached: {left:?}");
    Ok(())
}

/// Tears down labs left by processes that are gone (and half-made labs without a state file
/// older than ten minutes). Labs without an owner (`ctmgr-lab up`) are kept.
pub fn sweep() -> Result<()> {
    let root = Path::new(LAB_ROOT);
    if !root.exists() {
        return Ok(());
    }
    let mut errors = Vec::new();
    for entry in fs::read_dir(root).with_context(|| format!("listing {LAB_ROOT}"))? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if super::state::check_name(&name).is_err() {
            continue;
        }
        let layout = Layout::new(&name);
        let stale = match layout.read_state() {
            Ok(st) => match st.owner_pid {
                Some(pid) => !procfs::pid_alive(pid, st.owner_start),
                None => false,
            },
            Err(_) => entry
                .metadata()?
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > Duration::from_secs(600)),
        };
        if stale {
            eprintln!("ctmgr-lab: removing lab {name} left behind by a dead process");
            if let Err(e) = teardown(&layout) {
                errors.push(format!("lab {name}: {e:#}"));
            }
        }
    }
    super::errors_to_result(errors)
}
