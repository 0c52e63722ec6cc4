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
use nix::sys::stat::{major, minor};
use std::os::unix::fs::MetadataExt;

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

    // Loop devices before the lab directory's mounts go: identified by image inode.
    let images = image_ids(&layout.dir);
    if let Err(e) = detach_loops(&images) {
        err("detaching loop devices", e);
    }
    // Every mount under the lab directory, deepest first: namespace files (which frees the
    // namespaces, their interfaces and their mounts) and the directory's own bind.
    if let Err(e) = unmount_under(&layout.dir) {
        err("unmounting", e);
    }
    if let Err(e) = wait_loops_gone(&images) {
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

/// (major:minor, inode) of the store images in `dir`: what identifies their loop devices even
/// after the path they were attached by is gone.
fn image_ids(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
        .filter_map(|e| e.metadata().ok())
        .map(|md| {
            let dev = md.dev();
            (format!("{}:{}", major(dev), minor(dev)), md.ino())
        })
        .collect()
}

/// Loop devices backed by one of `images`.
fn lab_loops(images: &[(String, u64)]) -> Result<Vec<String>> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let out = host(
        &[
            "losetup",
            "--list",
            "--json",
            "--output",
            "NAME,BACK-INO,BACK-MAJ:MIN",
        ],
        T,
    )
    .check()?;
    if out.stdout.trim().is_empty() {
        return Ok(Vec::new()); // no loop device at all
    }
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).context("parsing losetup --json")?;
    let devs = v["loopdevices"].as_array().cloned().unwrap_or_default();
    Ok(devs
        .iter()
        .filter(|d| {
            let majmin = d["back-maj:min"].as_str().unwrap_or("").trim().to_string();
            let ino = match &d["back-ino"] {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            images
                .iter()
                .any(|(mm, i)| *mm == majmin && Some(*i) == ino)
        })
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect())
}

/// `losetup -d`: a device still in use (its Btrfs in a mount namespace that is going away)
/// is detached by the kernel when released, which [`wait_loops_gone`] waits for.
fn detach_loops(images: &[(String, u64)]) -> Result<()> {
    for dev in lab_loops(images)? {
        let _ = host(&["losetup", "-d", &dev], T);
    }
    Ok(())
}

fn wait_loops_gone(images: &[(String, u64)]) -> Result<()> {
    let mut left = Vec::new();
    let gone = run::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        left = lab_loops(images).unwrap_or_default();
        left.is_empty()
    });
    if !gone {
        // A second try, now that the namespaces are gone.
        detach_loops(images)?;
        anyhow::ensure!(
            run::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
                lab_loops(images).map(|l| l.is_empty()).unwrap_or(false)
            }),
            "loop devices still attached: {left:?}"
        );
    }
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

/// What a lab occupies on the machine, recorded while it is up, so a test can check after
/// `down` that nothing is left. Exact even with other labs running: processes are matched by
/// pid and start time, loop devices by name, backing inode and a path not in another lab.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub name: String,
    pub dir: PathBuf,
    pub processes: Vec<(i32, u64)>,
    pub loops: Vec<String>,
    images: Vec<(String, u64)>,
}

impl Footprint {
    pub(super) fn of(layout: &Layout) -> Result<Footprint> {
        let mounts = own_mounts()?;
        let mut ids: HashSet<String> = HashSet::new();
        for n in 1..=2 {
            ids.extend(Node::new(layout, n).ns_identities(&mounts));
        }
        ids.extend(procfs::ns_identity(
            &layout.ns_file("lan", "net"),
            "net",
            &mounts,
        ));
        let processes = procfs::processes_in(&ids)
            .into_iter()
            .filter_map(|pid| procfs::proc_info(pid).map(|p| (pid, p.start)))
            .collect();
        let images = image_ids(&layout.dir);
        Ok(Footprint {
            name: layout.name.clone(),
            dir: layout.dir.clone(),
            processes,
            loops: lab_loops(&images)?,
            images,
        })
    }

    /// Everything of the lab still present, described; empty when the lab is fully gone.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if self.dir.exists() {
            left.push(format!("directory {}", self.dir.display()));
        }
        for m in own_mounts().unwrap_or_default() {
            if m.mountpoint.starts_with(&self.dir) {
                left.push(format!("mount {}", m.mountpoint.display()));
            }
        }
        for &(pid, start) in &self.processes {
            if procfs::pid_alive(pid, Some(start)) {
                left.push(format!("process {pid}"));
            }
        }
        let ours = format!("{}/", self.dir.display());
        let out = host(
            &[
                "losetup",
                "--list",
                "--json",
                "--output",
                "NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN",
            ],
            T,
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        for d in v["loopdevices"].as_array().cloned().unwrap_or_default() {
            let name = d["name"].as_str().unwrap_or("");
            let back = d["back-file"].as_str().unwrap_or("");
            let majmin = d["back-maj:min"].as_str().unwrap_or("").trim();
            let ino = d["back-ino"].as_u64();
            let same_file = self
                .images
                .iter()
                .any(|(mm, i)| mm == majmin && Some(*i) == ino);
            let other_lab = back.starts_with(LAB_ROOT) && !back.starts_with(&ours);
            if back.starts_with(&ours)
                || (self.loops.iter().any(|l| l == name) && same_file && !other_lab)
            {
                left.push(format!("loop device {name} ({back})"));
            }
        }
        left
    }
}
