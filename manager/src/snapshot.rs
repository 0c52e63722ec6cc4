//! Snapshots of running or stopped containers, in LXC's own layout so that
//! `lxc-snapshot -L` lists them and `lxc-snapshot -r` restores them:
//!
//! ```text
//! <lxcpath>/<name>/snaps/<snap>/config   the container's config, rootfs path rewritten
//! <lxcpath>/<name>/snaps/<snap>/fstab
//! <lxcpath>/<name>/snaps/<snap>/rootfs/  read-only Btrfs snapshot (usable by `btrfs send`)
//! <lxcpath>/<name>/snaps/<snap>/data/    read-only snapshot of a data subvolume, if any
//! <lxcpath>/<name>/snaps/<snap>/ts       "YYYY:MM:DD HH:MM:SS", as lxc-snapshot writes it
//! <lxcpath>/<name>/snaps/<snap>/comment  optional
//! ```
//!
//! The rootfs snapshot itself is read-only, rather than a writable snapshot
//! with a read-only twin: `btrfs send` needs read-only, LXC's restore clones
//! it into a new writable subvolume anyway, and one subvolume per snapshot
//! halves the metadata work. Snapshot names are the UTC time,
//! `20261124T235555Z`: sortable, unique per second, and the same on both nodes.
//!
//! Crash safety: a snapshot is assembled in `<name>/.ctmgr-partial-<snap>`
//! and renamed into `snaps/` only when complete; a deletion first renames the
//! snapshot out to `<name>/.ctmgr-deleting-<snap>`. Listings never see either,
//! and `cleanup` (run by every snapshot and prune) finishes or removes them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::btrfs;
use crate::container::{config_values, read_config_text, SNAPS_DIR};
use crate::fsutil::write_atomic;

const PARTIAL: &str = ".ctmgr-partial-";
const DELETING: &str = ".ctmgr-deleting-";
const NAME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const TS_FORMAT: &str = "%Y:%m:%d %H:%M:%S";

/// Freeze and thaw callbacks wrapped around the Btrfs snapshots.
pub type FreezeHooks<'a> = (&'a dyn Fn() -> Result<()>, &'a dyn Fn() -> Result<()>);

/// One snapshot as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub container: String,
    pub name: String,
    /// RFC 3339 UTC; absent when neither the name nor `ts` gives a time.
    pub time: Option<DateTime<Utc>>,
    pub comment: String,
    pub read_only: Option<bool>,
    /// Btrfs UUID of the snapshot's rootfs and of the subvolume it was taken from.
    pub uuid: Option<String>,
    pub parent_uuid: Option<String>,
    /// Why this snapshot directory is damaged, if it is (never deleted silently).
    pub damaged: Option<String>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The name a snapshot taken at `now` gets (with a suffix if taken twice in a second).
pub fn name_for(now: DateTime<Utc>, snaps_dir: &Path) -> String {
    let base = now.format(NAME_FORMAT).to_string();
    if !snaps_dir.join(&base).exists() {
        return base;
    }
    (1..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !snaps_dir.join(n).exists())
        .unwrap_or(base)
}

/// Parses a ctmgr snapshot name back into its time. Snapshots taken in the
/// same second get `-1`, `-2`… suffixes; the suffix counts as nanoseconds so
/// that the last one taken is the newest (retention never deletes the newest).
pub fn time_from_name(name: &str) -> Option<DateTime<Utc>> {
    let stem = name.get(..16)?;
    let base = NaiveDateTime::parse_from_str(stem, NAME_FORMAT)
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))?;
    match name.get(16..) {
        Some("") => Some(base),
        Some(rest) => {
            let n: i64 = rest.strip_prefix('-')?.parse().ok()?;
            Some(base + chrono::Duration::nanoseconds(n))
        }
        None => Some(base),
    }
}

/// Rewrites `lxc.rootfs.path` (and `lxc.mount.fstab`, a data subvolume's
/// fstab source) from one container directory to another.
pub fn rewrite_paths(config: &str, from_dir: &Path, to_dir: &Path) -> String {
    let from = from_dir.display().to_string();
    let to = to_dir.display().to_string();
    let mut out = String::with_capacity(config.len());
    for line in config.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        let rewritten = match key {
            Some("lxc.rootfs.path") | Some("lxc.mount.fstab") => {
                line.replacen(&format!("{from}/"), &format!("{to}/"), 1)
            }
            _ => line.to_string(),
        };
        out.push_str(&rewritten);
        out.push('\n');
    }
    out
}

fn rewrite_fstab(fstab: &str, from_dir: &Path, to_dir: &Path) -> String {
    let from = format!("{}/", from_dir.display());
    let to = format!("{}/", to_dir.display());
    fstab
        .lines()
        .map(|l| {
            if l.starts_with(&from) {
                l.replacen(&from, &to, 1)
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// Removes what a crash left behind: half-built and half-deleted snapshots.
pub fn cleanup(container_dir: &Path) -> Result<usize> {
    let mut cleaned = 0;
    let Ok(entries) = fs::read_dir(container_dir) else {
        return Ok(0);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(PARTIAL) || name.starts_with(DELETING) {
            remove_snapshot_dir(&e.path())?;
            cleaned += 1;
        }
    }
    Ok(cleaned)
}

/// Flushes the whole filesystem holding `dir` (one Btrfs commit).
pub fn sync_fs(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir).with_context(|| format!("failed to open {}", dir.display()))?;
    nix::unistd::syncfs(f.as_raw_fd())
        .with_context(|| format!("syncfs on {} failed", dir.display()))
}

/// Deletes a snapshot directory's subvolumes and then the directory.
fn remove_snapshot_dir(dir: &Path) -> Result<()> {
    for sub in ["rootfs", "data"] {
        let p = dir.join(sub);
        if btrfs::is_subvolume(&p) {
            btrfs::delete_subvolume(&p)?;
        }
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("failed to remove {}", dir.display()))?;
    }
    Ok(())
}

/// Takes one snapshot of the container in `container_dir`, durable and
/// visible when this returns. When `freeze` is given, it is called before
/// and `thaw` after the Btrfs snapshots (thaw runs even when the snapshot
/// failed). For many containers at once, use `prepare`, one `sync_fs`, and
/// `publish`, which share the flushes.
pub fn take(
    container_dir: &Path,
    comment: Option<&str>,
    now: DateTime<Utc>,
    freeze: Option<FreezeHooks<'_>>,
) -> Result<SnapshotInfo> {
    let p = prepare(container_dir, comment, now, freeze)?;
    if let Err(e) = sync_fs(container_dir) {
        discard(&p);
        return Err(e);
    }
    let info = publish(&p)?;
    sync_fs(container_dir)?;
    Ok(info)
}

/// A snapshot assembled in its hidden `.ctmgr-partial-` directory, not yet
/// visible to any listing.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub container: String,
    pub name: String,
    partial: PathBuf,
    final_dir: PathBuf,
}

/// Assembles a snapshot (Btrfs snapshots, config, fstab, ts, comment) in
/// `<name>/.ctmgr-partial-<snap>`, with plain writes: the caller flushes
/// with `sync_fs` before `publish`, so one flush serves many snapshots
/// (per-file fsyncs cost a Btrfs log commit each).
pub fn prepare(
    container_dir: &Path,
    comment: Option<&str>,
    now: DateTime<Utc>,
    freeze: Option<FreezeHooks<'_>>,
) -> Result<Prepared> {
    let container = container_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    cleanup(container_dir)?;
    if let Some(p) = pending_restore(container_dir) {
        bail!("not snapshotting {container}: {p}");
    }
    let snaps = container_dir.join(SNAPS_DIR);
    fs::create_dir_all(&snaps).with_context(|| format!("failed to create {}", snaps.display()))?;
    let name = name_for(now, &snaps);
    let partial = container_dir.join(format!("{PARTIAL}{name}"));
    let final_dir = snaps.join(&name);
    fs::create_dir(&partial).with_context(|| format!("failed to create {}", partial.display()))?;
    let result = (|| -> Result<()> {
        let has_data = btrfs::is_subvolume(&container_dir.join("data"));
        if let Some((f, _)) = &freeze {
            f().context("failed to freeze the container")?;
        }
        let snap_result = (|| -> Result<()> {
            btrfs::snapshot(&container_dir.join("rootfs"), &partial.join("rootfs"), true)?;
            if has_data {
                btrfs::snapshot(&container_dir.join("data"), &partial.join("data"), true)?;
            }
            Ok(())
        })();
        if let Some((_, thaw)) = &freeze {
            let thawed = thaw();
            if let Err(e) = thawed {
                snap_result?;
                return Err(e.context("failed to thaw the container after its snapshot"));
            }
        }
        snap_result?;
        let config = read_config_text(&container_dir.join("config"))
            .with_context(|| format!("failed to read {}/config", container_dir.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            fs::write(partial.join(name), bytes)
                .with_context(|| format!("failed to write {}", partial.join(name).display()))
        };
        write(
            "config",
            rewrite_paths(&config, container_dir, &final_dir).as_bytes(),
        )?;
        let fstab = fs::read_to_string(container_dir.join("fstab")).unwrap_or_default();
        write(
            "fstab",
            rewrite_fstab(&fstab, container_dir, &final_dir).as_bytes(),
        )?;
        let ts = now.with_timezone(&Local).format(TS_FORMAT).to_string();
        write("ts", ts.as_bytes())?;
        if let Some(c) = comment {
            write("comment", format!("{c}\n").as_bytes())?;
        }
        Ok(())
    })();
    let p = Prepared {
        container,
        name,
        partial,
        final_dir,
    };
    if let Err(e) = result {
        discard(&p);
        return Err(e);
    }
    Ok(p)
}

/// Makes a prepared snapshot visible (one rename). Call after `sync_fs`:
/// durable before visible. A crash before the next flush at worst loses the
/// rename, and the next run removes the hidden directory.
pub fn publish(p: &Prepared) -> Result<SnapshotInfo> {
    if let Err(e) = fs::rename(&p.partial, &p.final_dir) {
        discard(p);
        return Err(e).with_context(|| {
            format!("failed to move the snapshot into {}", p.final_dir.display())
        });
    }
    Ok(describe(&p.container, &p.name, &p.final_dir))
}

/// Removes a prepared snapshot that will not be published.
pub fn discard(p: &Prepared) {
    let _ = remove_snapshot_dir(&p.partial);
}

/// Facts about one snapshot directory (damage reported, never fatal).
pub fn describe(container: &str, name: &str, dir: &Path) -> SnapshotInfo {
    describe_with(container, name, dir, true)
}

/// Like `describe`; `full = false` skips what retention does not need (the
/// Btrfs UUIDs, the read-only flag, the comment), which dominates the cost
/// of listing thousands of snapshots.
fn describe_with(container: &str, name: &str, dir: &Path, full: bool) -> SnapshotInfo {
    let mut damaged = Vec::new();
    let ts = if full || time_from_name(name).is_none() {
        fs::read_to_string(dir.join("ts")).ok()
    } else {
        dir.join("ts").exists().then(String::new)
    };
    if ts.is_none() {
        damaged.push("missing ts".to_string());
    }
    let rootfs = dir.join("rootfs");
    let is_sub = btrfs::is_subvolume(&rootfs);
    if !is_sub {
        damaged.push(if rootfs.exists() {
            "rootfs is not a Btrfs subvolume".to_string()
        } else {
            "missing rootfs".to_string()
        });
    }
    if !dir.join("config").exists() {
        damaged.push("missing config".to_string());
    }
    let time = time_from_name(name).or_else(|| {
        ts.as_deref()
            .and_then(|t| NaiveDateTime::parse_from_str(t.trim(), TS_FORMAT).ok())
            .and_then(|n| Local.from_local_datetime(&n).earliest())
            .map(|t| t.with_timezone(&Utc))
    });
    let (uuid, parent_uuid) = if is_sub && full {
        btrfs::uuids(&rootfs)
            .map(|(u, p)| (Some(u), p))
            .unwrap_or((None, None))
    } else {
        (None, None)
    };
    SnapshotInfo {
        container: container.to_string(),
        name: name.to_string(),
        time,
        comment: if full {
            fs::read(dir.join("comment"))
                .map(|c| String::from_utf8_lossy(&c).trim().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        },
        read_only: (is_sub && full)
            .then(|| btrfs::is_read_only(&rootfs).ok())
            .flatten(),
        uuid,
        parent_uuid,
        damaged: (!damaged.is_empty()).then(|| damaged.join(", ")),
        path: dir.to_path_buf(),
    }
}

/// Every snapshot of a container, newest first (ties by name, descending);
/// damaged ones included and marked.
pub fn list(container_dir: &Path) -> Vec<SnapshotInfo> {
    list_with(container_dir, true)
}

/// `list` without UUIDs, read-only flags and comments: what retention and
/// age checks need, at a fraction of the cost.
pub fn list_brief(container_dir: &Path) -> Vec<SnapshotInfo> {
    list_with(container_dir, false)
}

fn list_with(container_dir: &Path, full: bool) -> Vec<SnapshotInfo> {
    let container = container_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let snaps = container_dir.join(SNAPS_DIR);
    let mut out: Vec<SnapshotInfo> = match fs::read_dir(&snaps) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                describe_with(&container, &name, &e.path(), full)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    out
}

/// Deletes one snapshot: renamed out of `snaps/` first, so a crash leaves
/// nothing a listing chokes on.
pub fn delete(container_dir: &Path, name: &str) -> Result<()> {
    crate::names::validate("snapshot", name)?;
    let dir = container_dir.join(SNAPS_DIR).join(name);
    if !dir.exists() {
        bail!(
            "no snapshot {name} in {}",
            container_dir.join(SNAPS_DIR).display()
        );
    }
    let doomed = container_dir.join(format!("{DELETING}{name}"));
    fs::rename(&dir, &doomed).with_context(|| format!("failed to move {} aside", dir.display()))?;
    remove_snapshot_dir(&doomed)
}

/// What `restore` changed.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub safety_snapshot: String,
    pub config_changes: Vec<String>,
    pub fstab_changed: bool,
    pub data_restored: bool,
    /// What an earlier, interrupted restore had left and what was done with
    /// it before this one (absent when there was nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
}

/// The intent file of a restore in progress, `<name>/.ctmgr-restoring`,
/// written (atomically) after the safety snapshot and before the first
/// rename; removed when the restore is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreIntent {
    pub snapshot: String,
    pub safety_snapshot: String,
    /// Set once every subvolume is swapped and config and fstab are written:
    /// only the previous subvolumes remain to be deleted.
    #[serde(default)]
    pub swapped: bool,
}

const RESTORE_INTENT: &str = ".ctmgr-restoring";
const RESTORE_FRESH: &str = ".ctmgr-restore-";
const RESTORE_OLD: &str = ".ctmgr-old-";
const SUBVOLUMES: [&str; 2] = ["rootfs", "data"];

/// Where one subvolume (`rootfs`, `data`) of a container stands in a
/// restore, judged from the names on disk alone: `<sub>` (live),
/// `.ctmgr-restore-<sub>` (the restored copy) and `.ctmgr-old-<sub>` (the
/// previous live). A restore goes Untouched → FreshMade → (rename live
/// aside) BetweenRenames → (rename the copy in) Swapped → (delete old)
/// Untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapState {
    /// No restore leftovers for this subvolume.
    Untouched,
    /// The restored copy exists; live (if any) is still in place.
    FreshMade,
    /// Killed between the two renames: live moved aside, the copy not yet
    /// in place, so there is no `<sub>`.
    BetweenRenames,
    /// Both renames done; the previous live waits to be deleted.
    Swapped,
    /// Only the previous live is left, moved aside (the copy vanished).
    AsideOnly,
    /// All three names: no sequence of ours leaves this.
    Inconsistent,
}

/// Classifies one subvolume from which of its three names exist.
pub fn swap_state(live: bool, fresh: bool, old: bool) -> SwapState {
    match (live, fresh, old) {
        (_, false, false) => SwapState::Untouched,
        (_, true, false) => SwapState::FreshMade,
        (false, true, true) => SwapState::BetweenRenames,
        (true, false, true) => SwapState::Swapped,
        (false, false, true) => SwapState::AsideOnly,
        (true, true, true) => SwapState::Inconsistent,
    }
}

/// What to do with an interrupted restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeAction {
    /// Nothing interrupted.
    Nothing,
    /// Finish it: the intent names a snapshot that is still there.
    Finish,
    /// Undo it: the snapshot it restored from is gone (put every previous
    /// subvolume and the safety snapshot's config back).
    RollBack,
    /// Everything is swapped: only delete the previous subvolumes.
    Clean,
    /// Leftovers of a restore without an intent (an older ctmgr): put back
    /// what was moved aside, keep what was swapped, delete the rest.
    Legacy,
    /// Names that no sequence of ours leaves: stop and ask a person.
    Stuck,
}

/// Decides what a rerun does with the leftovers of an interrupted restore.
pub fn plan_resume(
    intent: Option<&RestoreIntent>,
    states: &[SwapState],
    snapshot_usable: bool,
) -> ResumeAction {
    if states.contains(&SwapState::Inconsistent) {
        return ResumeAction::Stuck;
    }
    match intent {
        None if states.iter().all(|s| *s == SwapState::Untouched) => ResumeAction::Nothing,
        None => ResumeAction::Legacy,
        Some(i) if i.swapped => ResumeAction::Clean,
        Some(_) if snapshot_usable => ResumeAction::Finish,
        Some(_) => ResumeAction::RollBack,
    }
}

/// An interrupted restore found and dealt with by the next one.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    pub action: ResumeAction,
    /// The snapshot the interrupted restore was restoring (unknown for
    /// leftovers of an older ctmgr).
    pub snapshot: Option<String>,
    pub safety_snapshot: Option<String>,
    /// Each subvolume's state as found.
    pub found: Vec<(String, SwapState)>,
}

impl Resumed {
    /// One line for a person.
    pub fn describe(&self) -> String {
        let found: Vec<String> = self
            .found
            .iter()
            .filter(|(_, s)| *s != SwapState::Untouched)
            .map(|(sub, s)| format!("{sub} {s:?}"))
            .collect();
        let what = match self.action {
            ResumeAction::Nothing => "nothing to resume".to_string(),
            ResumeAction::Finish => format!(
                "finished an interrupted restore from {}",
                self.snapshot.as_deref().unwrap_or("?")
            ),
            ResumeAction::RollBack => format!(
                "rolled back an interrupted restore from {} (that snapshot is gone)",
                self.snapshot.as_deref().unwrap_or("?")
            ),
            ResumeAction::Clean => format!(
                "completed the cleanup of the restore from {}",
                self.snapshot.as_deref().unwrap_or("?")
            ),
            ResumeAction::Legacy => {
                "repaired the leftovers of an interrupted restore (put back what was moved aside)"
                    .to_string()
            }
            ResumeAction::Stuck => "cannot resume".to_string(),
        };
        let safety = self
            .safety_snapshot
            .as_deref()
            .map(|s| format!("; the state before it is in safety snapshot {s}"))
            .unwrap_or_default();
        format!("{what} (found: {}){safety}", found.join(", "))
    }
}

fn intent_path(container_dir: &Path) -> PathBuf {
    container_dir.join(RESTORE_INTENT)
}

fn read_intent(container_dir: &Path) -> Result<Option<RestoreIntent>> {
    let p = intent_path(container_dir);
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{} is unreadable; inspect it and the .ctmgr-restore-*/.ctmgr-old-* subvolumes next to it", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", p.display())),
    }
}

fn write_intent(container_dir: &Path, i: &RestoreIntent) -> Result<()> {
    let p = intent_path(container_dir);
    write_atomic(&p, &serde_json::to_vec_pretty(i)?, 0o644)
        .with_context(|| format!("failed to write {}", p.display()))
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn names_of(container_dir: &Path, sub: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        container_dir.join(sub),
        container_dir.join(format!("{RESTORE_FRESH}{sub}")),
        container_dir.join(format!("{RESTORE_OLD}{sub}")),
    )
}

fn states_of(container_dir: &Path) -> Vec<(String, SwapState)> {
    SUBVOLUMES
        .iter()
        .map(|sub| {
            let (live, fresh, old) = names_of(container_dir, sub);
            (
                sub.to_string(),
                swap_state(exists(&live), exists(&fresh), exists(&old)),
            )
        })
        .collect()
}

/// A restore interrupted here, if any: what `doctor` and `snapshot` report.
pub fn pending_restore(container_dir: &Path) -> Option<String> {
    let name = container_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let intent = read_intent(container_dir).ok().flatten();
    let states = states_of(container_dir);
    let only: Vec<SwapState> = states.iter().map(|(_, s)| *s).collect();
    if intent.is_none() && only.iter().all(|s| *s == SwapState::Untouched) {
        return None;
    }
    let found: Vec<String> = states
        .iter()
        .filter(|(_, s)| *s != SwapState::Untouched)
        .map(|(sub, s)| format!("{sub} {s:?}"))
        .collect();
    Some(match intent {
        Some(i) => format!(
            "a restore from snapshot {} was interrupted (found: {}); rerun `ctmgr restore {name} {}` to finish it",
            i.snapshot,
            found.join(", "),
            i.snapshot
        ),
        None => format!(
            "an interrupted restore left {} behind; rerun `ctmgr restore {name} SNAPSHOT` to repair it",
            found.join(", ")
        ),
    })
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("failed to rename {} to {}", from.display(), to.display()))
}

fn delete_sub(p: &Path) -> Result<()> {
    if btrfs::is_subvolume(p) {
        btrfs::delete_subvolume(p)?;
    } else if exists(p) {
        bail!(
            "{} is not a Btrfs subvolume; not deleting it (inspect it)",
            p.display()
        );
    }
    Ok(())
}

/// Finds what an interrupted restore left in `container_dir` and finishes
/// it, rolls it back or repairs it (see [`plan_resume`]). The container
/// must be STOPPED and its store locked. `None` when nothing was
/// interrupted.
pub fn resume_restore(container_dir: &Path) -> Result<Option<(Resumed, Option<Restored>)>> {
    let intent = read_intent(container_dir)?;
    let found = states_of(container_dir);
    let states: Vec<SwapState> = found.iter().map(|(_, s)| *s).collect();
    let usable = intent.as_ref().is_some_and(|i| {
        let d = container_dir.join(SNAPS_DIR).join(&i.snapshot);
        d.exists() && describe("", &i.snapshot, &d).damaged.is_none()
    });
    let action = plan_resume(intent.as_ref(), &states, usable);
    let resumed = Resumed {
        action,
        snapshot: intent.as_ref().map(|i| i.snapshot.clone()),
        safety_snapshot: intent.as_ref().map(|i| i.safety_snapshot.clone()),
        found,
    };
    let mut restored = None;
    match action {
        ResumeAction::Nothing => return Ok(None),
        ResumeAction::Stuck => bail!(
            "{}: {} — a restore left names no restore of ours leaves; inspect the subvolumes and remove the wrong one by hand",
            container_dir.display(),
            resumed.describe()
        ),
        ResumeAction::Finish => {
            let i = intent.expect("Finish has an intent");
            restored = Some(forward(container_dir, &i)?);
        }
        ResumeAction::Clean => finish_cleanup(container_dir)?,
        ResumeAction::RollBack => {
            let i = intent.expect("RollBack has an intent");
            for sub in SUBVOLUMES {
                let (live, fresh, old) = names_of(container_dir, sub);
                match swap_state(exists(&live), exists(&fresh), exists(&old)) {
                    SwapState::Swapped => {
                        delete_sub(&live)?;
                        rename(&old, &live)?;
                    }
                    SwapState::BetweenRenames | SwapState::AsideOnly => rename(&old, &live)?,
                    _ => {}
                }
                delete_sub(&fresh)?;
            }
            let sdir = container_dir.join(SNAPS_DIR).join(&i.safety_snapshot);
            if sdir.join("config").exists() {
                put_back_files(container_dir, &sdir)?;
            }
            sync_fs(container_dir)?;
            fs::remove_file(intent_path(container_dir))
                .with_context(|| format!("failed to remove {RESTORE_INTENT}"))?;
        }
        ResumeAction::Legacy => {
            for sub in SUBVOLUMES {
                let (live, fresh, old) = names_of(container_dir, sub);
                match swap_state(exists(&live), exists(&fresh), exists(&old)) {
                    SwapState::BetweenRenames | SwapState::AsideOnly => rename(&old, &live)?,
                    SwapState::Swapped => delete_sub(&old)?,
                    _ => {}
                }
                delete_sub(&fresh)?;
            }
            sync_fs(container_dir)?;
        }
    }
    Ok(Some((resumed, restored)))
}

/// Writes config and fstab from snapshot directory `sdir`, paths pointing
/// back at the container; returns (config changes, fstab changed).
fn put_back_files(container_dir: &Path, sdir: &Path) -> Result<(Vec<String>, bool)> {
    let current = read_config_text(&container_dir.join("config")).unwrap_or_default();
    let snap_config = read_config_text(&sdir.join("config"))?;
    let restored = rewrite_paths(&snap_config, sdir, container_dir);
    let before: BTreeSet<&str> = current.lines().collect();
    let after: BTreeSet<&str> = restored.lines().collect();
    let mut config_changes: Vec<String> = before
        .difference(&after)
        .map(|l| format!("- {l}"))
        .collect();
    config_changes.extend(after.difference(&before).map(|l| format!("+ {l}")));
    write_atomic(&container_dir.join("config"), restored.as_bytes(), 0o640)?;
    let cur_fstab = fs::read_to_string(container_dir.join("fstab")).unwrap_or_default();
    let snap_fstab = fs::read_to_string(sdir.join("fstab")).unwrap_or_default();
    let new_fstab = rewrite_fstab(&snap_fstab, sdir, container_dir);
    write_atomic(&container_dir.join("fstab"), new_fstab.as_bytes(), 0o644)?;
    Ok((config_changes, cur_fstab != new_fstab))
}

/// Deletes the previous subvolumes and the intent of a swapped restore.
fn finish_cleanup(container_dir: &Path) -> Result<()> {
    for sub in SUBVOLUMES {
        let (_, fresh, old) = names_of(container_dir, sub);
        delete_sub(&old)?;
        delete_sub(&fresh)?;
    }
    let p = intent_path(container_dir);
    if exists(&p) {
        fs::remove_file(&p).with_context(|| format!("failed to remove {}", p.display()))?;
    }
    sync_fs(container_dir)
}

/// Carries a restore recorded in `intent` forward from wherever it stands
/// to the end. Every step checks the names first, so a rerun after a kill
/// at any point continues where the kill left it.
fn forward(container_dir: &Path, intent: &RestoreIntent) -> Result<Restored> {
    let sdir = container_dir.join(SNAPS_DIR).join(&intent.snapshot);
    let mut data_restored = false;
    // All restored copies first, then the renames: once a rename happened,
    // every copy it needs exists.
    for sub in SUBVOLUMES {
        let src = sdir.join(sub);
        if !btrfs::is_subvolume(&src) {
            continue;
        }
        let (live, fresh, old) = names_of(container_dir, sub);
        match swap_state(exists(&live), exists(&fresh), exists(&old)) {
            SwapState::Untouched => btrfs::snapshot(&src, &fresh, false)?,
            SwapState::AsideOnly => {
                // The copy vanished after live was moved aside: put live
                // back and make the copy again.
                rename(&old, &live)?;
                btrfs::snapshot(&src, &fresh, false)?;
            }
            _ => {}
        }
    }
    for sub in SUBVOLUMES {
        if !btrfs::is_subvolume(&sdir.join(sub)) {
            continue;
        }
        let (live, fresh, old) = names_of(container_dir, sub);
        if swap_state(exists(&live), exists(&fresh), exists(&old)) == SwapState::FreshMade
            && exists(&live)
        {
            rename(&live, &old)
                .with_context(|| format!("failed to move {} aside", live.display()))?;
        }
        if exists(&fresh) {
            rename(&fresh, &live)
                .with_context(|| format!("failed to put the restored {sub} in place"))?;
        }
        data_restored |= sub == "data";
    }
    let (config_changes, fstab_changed) = put_back_files(container_dir, &sdir)?;
    sync_fs(container_dir)?;
    write_intent(
        container_dir,
        &RestoreIntent {
            swapped: true,
            ..intent.clone()
        },
    )?;
    finish_cleanup(container_dir)?;
    Ok(Restored {
        safety_snapshot: intent.safety_snapshot.clone(),
        config_changes,
        fstab_changed,
        data_restored,
        resumed: None,
    })
}

/// Rolls a STOPPED container back to `snap`: a safety snapshot of the current
/// state first, then the rootfs (and data) subvolumes swapped by rename, and
/// config and fstab restored with paths pointing back at the container.
///
/// Resumable (D9): the intent is recorded before the first rename, every
/// step is judged from the names on disk, and a rerun after a kill at any
/// point first finishes (or, when the snapshot is gone, rolls back) the
/// interrupted restore — see [`resume_restore`]. Rerunning the same
/// restore finishes it without another safety snapshot.
pub fn restore(container_dir: &Path, snap: &str, now: DateTime<Utc>) -> Result<Restored> {
    crate::names::validate("snapshot", snap)?;
    let resumed = resume_restore(container_dir)?;
    if let Some((r, Some(done))) = &resumed {
        if r.snapshot.as_deref() == Some(snap) {
            return Ok(Restored {
                resumed: Some(r.clone()),
                ..done.clone()
            });
        }
    }
    let sdir = container_dir.join(SNAPS_DIR).join(snap);
    let info = describe("", snap, &sdir);
    if !sdir.exists() {
        bail!(
            "no snapshot {snap} in {}",
            container_dir.join(SNAPS_DIR).display()
        );
    }
    if let Some(d) = info.damaged {
        bail!("snapshot {snap} is damaged ({d}); not restoring from it");
    }
    let safety = take(
        container_dir,
        Some(&format!("safety snapshot before restoring {snap}")),
        now,
        None,
    )?;
    let intent = RestoreIntent {
        snapshot: snap.to_string(),
        safety_snapshot: safety.name,
        swapped: false,
    };
    write_intent(container_dir, &intent)?;
    let mut r = forward(container_dir, &intent)?;
    r.resumed = resumed.map(|(r, _)| r);
    Ok(r)
}

/// The hook line of a config, for checks that the guard survives snapshots.
pub fn hook_of(config: &str) -> Option<String> {
    config_values(config, "lxc.hook.pre-start")
        .pop()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_parse_back() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 23, 55, 55).unwrap();
        let d = tempfile::tempdir().unwrap();
        assert_eq!(name_for(t, d.path()), "20261124T235555Z");
        fs::create_dir(d.path().join("20261124T235555Z")).unwrap();
        assert_eq!(name_for(t, d.path()), "20261124T235555Z-1");
        assert_eq!(
            time_from_name("20261124T235555Z-1"),
            Some(t + chrono::Duration::nanoseconds(1))
        );
        assert!(time_from_name("20261124T235555Z-10") > time_from_name("20261124T235555Z-9"));
        assert_eq!(time_from_name("20261124T235555Zx"), None);
        assert_eq!(time_from_name("snap0"), None);
    }

    #[test]
    fn swap_states_follow_the_names_on_disk() {
        use SwapState::*;
        // (live, fresh, old)
        assert_eq!(swap_state(true, false, false), Untouched);
        assert_eq!(swap_state(false, false, false), Untouched);
        assert_eq!(swap_state(true, true, false), FreshMade);
        assert_eq!(swap_state(false, true, false), FreshMade);
        // D9: killed between the renames: no live rootfs.
        assert_eq!(swap_state(false, true, true), BetweenRenames);
        assert_eq!(swap_state(true, false, true), Swapped);
        assert_eq!(swap_state(false, false, true), AsideOnly);
        assert_eq!(swap_state(true, true, true), Inconsistent);
    }

    #[test]
    fn an_interrupted_restore_is_finished_rolled_back_or_repaired() {
        use ResumeAction::*;
        use SwapState::*;
        let i = RestoreIntent {
            snapshot: "S".into(),
            safety_snapshot: "T".into(),
            swapped: false,
        };
        let done = RestoreIntent {
            swapped: true,
            ..i.clone()
        };
        assert_eq!(plan_resume(None, &[Untouched, Untouched], true), Nothing);
        assert_eq!(
            plan_resume(Some(&i), &[BetweenRenames, Untouched], true),
            Finish
        );
        assert_eq!(plan_resume(Some(&i), &[Untouched, Untouched], true), Finish);
        assert_eq!(
            plan_resume(Some(&i), &[BetweenRenames, Untouched], false),
            RollBack
        );
        assert_eq!(plan_resume(Some(&done), &[Swapped, Swapped], false), Clean);
        assert_eq!(
            plan_resume(None, &[BetweenRenames, Untouched], true),
            Legacy
        );
        assert_eq!(
            plan_resume(Some(&i), &[Inconsistent, Untouched], true),
            Stuck
        );
        assert_eq!(plan_resume(None, &[Untouched, Inconsistent], true), Stuck);
    }

    #[test]
    fn paths_are_rewritten_only_in_path_keys() {
        let cfg = "lxc.rootfs.path = btrfs:/srv/s/containers/web/rootfs\nlxc.mount.fstab = /srv/s/containers/web/fstab\nlxc.uts.name = web\n";
        let out = rewrite_paths(
            cfg,
            Path::new("/srv/s/containers/web"),
            Path::new("/srv/s/containers/web/snaps/X"),
        );
        assert!(out.contains("btrfs:/srv/s/containers/web/snaps/X/rootfs"));
        assert!(out.contains("lxc.mount.fstab = /srv/s/containers/web/snaps/X/fstab"));
        assert!(out.contains("lxc.uts.name = web"));
        let back = rewrite_paths(
            &out,
            Path::new("/srv/s/containers/web/snaps/X"),
            Path::new("/srv/s/containers/web"),
        );
        assert_eq!(back, cfg);
    }

    #[test]
    fn damaged_snapshot_dirs_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("web");
        fs::create_dir_all(c.join("snaps/20260101T000000Z/rootfs")).unwrap();
        fs::create_dir_all(c.join("snaps/broken")).unwrap();
        let l = list(&c);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].name, "20260101T000000Z");
        assert!(l[0]
            .damaged
            .as_deref()
            .unwrap()
            .contains("rootfs is not a Btrfs subvolume"));
        assert!(l[1].damaged.as_deref().unwrap().contains("missing ts"));
        assert_eq!(l[1].time, None);
    }
}
