//! The LXC pre-start guard's decision (safety rule 1): a container may start
//! only on the node that holds its store. The hook gets the store's facts on
//! its command line (written into the container config at create), so it
//! works for a plain `lxc-start` from a replica config, without cluster.toml.
//! It fails closed: anything it cannot verify is a refusal.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::drbd::state::{parse_status_text, ResourceState, Role};
use crate::fence::{PeerReport, PeerVerdict};
use crate::mountinfo;
use crate::runner::{Cmd, Runner};
use crate::store::{holding, Holding};

/// What the hook was told about the container's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardArgs {
    pub store: String,
    pub mountpoint: PathBuf,
    pub device: PathBuf,
    pub drbd_resource: Option<String>,
    /// Where the peer keeps replicas of this store's containers.
    pub replica_dir: Option<PathBuf>,
    /// What LXC appends: container name, section, hook type.
    pub lxc_args: Vec<String>,
}

/// Parses the hook's arguments: `--store S --mountpoint M --device D
/// [--drbd-resource R]` followed by LXC's own `NAME lxc pre-start`.
pub fn parse_args(args: &[String]) -> Result<GuardArgs, String> {
    let mut store = None;
    let mut mountpoint = None;
    let mut device = None;
    let mut drbd_resource = None;
    let mut replica_dir = None;
    let mut lxc_args = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--store" => store = Some(value("--store")?),
            "--mountpoint" => mountpoint = Some(PathBuf::from(value("--mountpoint")?)),
            "--device" => device = Some(PathBuf::from(value("--device")?)),
            "--drbd-resource" => drbd_resource = Some(value("--drbd-resource")?),
            "--replica-dir" => replica_dir = Some(PathBuf::from(value("--replica-dir")?)),
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            other => lxc_args.push(other.to_string()),
        }
    }
    Ok(GuardArgs {
        store: store.ok_or("--store is required")?,
        mountpoint: mountpoint.ok_or("--mountpoint is required")?,
        device: device.ok_or("--device is required")?,
        drbd_resource,
        replica_dir,
        lxc_args,
    })
}

/// Ok when the store is held here, the rootfs runs nowhere here and the peer
/// (when it must be asked) does not use the store; otherwise the refusal
/// message. Ok carries notes for the log (a peer that could not be asked).
/// `config_file` is the config being started (LXC passes it to hooks as
/// `LXC_CONFIG_FILE`).
pub fn check(
    args: &GuardArgs,
    config_file: Option<&Path>,
    runner: &dyn Runner,
) -> Result<Vec<String>, String> {
    let container = args
        .lxc_args
        .first()
        .cloned()
        .or_else(|| std::env::var("LXC_NAME").ok())
        .unwrap_or_else(|| "?".to_string());
    let mounts = mountinfo::read().map_err(|e| {
        format!("ctmgr-guard: refusing to start {container}: cannot read the mount table: {e}")
    })?;
    match holding(
        &args.mountpoint,
        &args.device,
        args.drbd_resource.as_deref(),
        runner,
        &mounts,
    ) {
        Holding::Held => {
            not_running_elsewhere(args, config_file, &container)?;
            peer_not_using(args, &container, runner)
        }
        other => Err(format!(
            "ctmgr-guard: refusing to start container {container}: its store {} is not held by this node ({}). \
             Start it on the node that holds {}, or move the store here with `ctmgr takeover {}`.",
            args.store,
            other.describe(&args.mountpoint),
            args.store,
            args.store
        )),
    }
}

/// The identity of a directory on this node: device and inode, as `stat`
/// gives them. A Btrfs subvolume has a device of its own (every subvolume
/// root is inode 256), so this tells one rootfs subvolume from every other,
/// whatever path or bind mount it is reached by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let md = std::fs::metadata(path)?;
        Ok(FileId {
            dev: md.dev(),
            ino: md.ino(),
        })
    }
}

/// The root directory of every process on this node, by pid, from
/// `/proc/PID/root` (the kernel's view: it names the root of a process in
/// any mount namespace, also where no path of ours reaches it). Processes
/// that end while we look are left out.
pub fn process_roots() -> std::io::Result<Vec<(i32, FileId)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        let Some(pid) = e?.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(id) = FileId::of(Path::new(&format!("/proc/{pid}/root"))) {
            out.push((pid, id));
        }
    }
    Ok(out)
}

/// Pids of the processes whose root is `rootfs`: a container booted from
/// it, whatever its name, lxcpath or config. Pure; sorted.
pub fn running_from(rootfs: FileId, roots: &[(i32, FileId)]) -> Vec<i32> {
    let mut pids: Vec<i32> = roots
        .iter()
        .filter(|(_, id)| *id == rootfs)
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// The directory an `lxc.rootfs.path` value names: `btrfs:` and `dir:`
/// prefixes stripped, a plain absolute path as is. Other storage types
/// (overlay, loop, lvm, zfs …) are not what ctmgr makes: `None`.
pub fn rootfs_dir(value: &str) -> Option<PathBuf> {
    let path = match value.split_once(':') {
        Some(("btrfs" | "dir", p)) => p,
        Some(_) => return None,
        None => value,
    };
    path.starts_with('/').then(|| PathBuf::from(path))
}

/// The rootfs being started: LXC tells hooks in `LXC_ROOTFS_PATH` (the
/// config's `lxc.rootfs.path`); without it (ctmgr asking the guard for its
/// reason), the config file says.
fn rootfs_value(config_file: Option<&Path>) -> Option<String> {
    if let Some(v) = std::env::var_os("LXC_ROOTFS_PATH") {
        return Some(v.to_string_lossy().into_owned());
    }
    let text = crate::container::read_config_text(config_file?).ok()?;
    crate::container::config_values(&text, "lxc.rootfs.path")
        .pop()
        .map(str::to_string)
}

/// One rootfs runs once: refuse when the rootfs being started is not a
/// container directory of the store the hook names, or when any process on
/// this node already has it as its root (another name, another lxcpath, a
/// copied config — D7 of issue 10).
fn not_running_elsewhere(
    args: &GuardArgs,
    config: Option<&Path>,
    container: &str,
) -> Result<(), String> {
    if !crate::names::is_valid(container) {
        return Err(format!(
            "ctmgr-guard: refusing to start {container:?}: not a valid container name"
        ));
    }
    let refuse =
        |why: String| format!("ctmgr-guard: refusing to start container {container}: {why}");
    let value = rootfs_value(config).ok_or_else(|| {
        refuse(
            "cannot tell its rootfs (no LXC_ROOTFS_PATH, no lxc.rootfs.path in its config)"
                .to_string(),
        )
    })?;
    let dir = rootfs_dir(&value).ok_or_else(|| {
        refuse(format!(
            "its rootfs {value:?} is not a directory or Btrfs subvolume path; ctmgr containers boot from <store>/containers/NAME/rootfs"
        ))
    })?;
    let real = std::fs::canonicalize(&dir).map_err(|e| {
        refuse(format!(
            "its rootfs {} cannot be resolved: {e}",
            dir.display()
        ))
    })?;
    let containers = std::fs::canonicalize(args.mountpoint.join("containers"))
        .unwrap_or_else(|_| args.mountpoint.join("containers"));
    if !real.starts_with(&containers) || real == containers {
        return Err(refuse(format!(
            "its rootfs {} is not on its store {} (under {}); one rootfs on the store is what the guard protects",
            real.display(),
            args.store,
            containers.display()
        )));
    }
    let id = FileId::of(&real)
        .map_err(|e| refuse(format!("cannot stat its rootfs {}: {e}", real.display())))?;
    let roots = process_roots().map_err(|e| {
        refuse(format!(
            "cannot read /proc to see what runs from its rootfs: {e}"
        ))
    })?;
    let pids = running_from(id, &roots);
    if let Some(pid) = pids.first() {
        return Err(refuse(format!(
            "its rootfs {} is already running on this node (process {pid}{}, under whatever name or lxcpath started it); one rootfs must never run twice. Stop that instance first.",
            real.display(),
            if pids.len() > 1 {
                format!(" and {} more", pids.len() - 1)
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}

/// Bound for the guard's question to the peer on one path: a start waits on it.
const PEER_ASK_TIMEOUT: Duration = Duration::from_secs(8);

/// Does the guard have to ask the peer? Not when DRBD shows it connected and
/// Secondary: a connected Secondary cannot open the device (no
/// allow-two-primaries in ctmgr's resources), so nothing there runs from the
/// store. Anything else — disconnected, the peer Primary or unknown, no state —
/// is asked. Pure.
pub fn must_ask_peer(state: Option<&ResourceState>) -> bool {
    !matches!(state, Some(s) if s.connection.is_connected() && s.peer_role == Role::Secondary)
}

/// What the peer's answer means for this start: `Err` when it holds or uses the
/// store (two Primaries already, or its containers run from it); `Ok(note)`
/// otherwise. Pure.
pub fn peer_verdict(
    container: &str,
    asked: Result<PeerReport, String>,
) -> Result<Option<String>, String> {
    match asked {
        Ok(report) => match crate::fence::judge(&report, false) {
            PeerVerdict::Holds(why) => Err(format!(
                "ctmgr-guard: refusing to start container {container}: {why}, while this node holds store {} too; one rootfs must never run twice (both nodes may be Primary: see docs/safety.md, split brain)",
                report.store
            )),
            PeerVerdict::Safe => Ok(None),
            PeerVerdict::Unsure(why) => Ok(Some(format!(
                "ctmgr-guard: starting {container}: the peer could not confirm it leaves store {} alone ({why}); this node holds the store",
                report.store
            ))),
        },
        Err(why) => Ok(Some(format!(
            "ctmgr-guard: starting {container}: the peer was not asked whether it uses the store ({why}); this node holds the store"
        ))),
    }
}

/// The peer's side of "one rootfs runs once" (issue 10 §4): when DRBD does not
/// show the peer connected and Secondary, ask it over ssh — bounded, every
/// path once — whether it is Primary, has the store mounted or runs any of its
/// containers. The peer is found in cluster.toml (`CTMGR_CONFIG` or the
/// default path; `CTMGR_NODE` or the hostname for this node); without one the
/// hook cannot ask and lets the start go on (the store is held here), saying so.
fn peer_not_using(
    args: &GuardArgs,
    container: &str,
    runner: &dyn Runner,
) -> Result<Vec<String>, String> {
    let Some(res) = args.drbd_resource.as_deref() else {
        return Ok(Vec::new());
    };
    let state = runner
        .run_ok(
            &Cmd::new("drbdadm")
                .args(["status", res])
                .timeout(Duration::from_secs(10)),
        )
        .ok()
        .and_then(|out| parse_status_text(&out.stdout).ok())
        .and_then(|v| v.into_iter().find(|s| s.name == res));
    if !must_ask_peer(state.as_ref()) {
        return Ok(Vec::new());
    }
    let asked = peer_targets().and_then(|(targets, config_path)| {
        let question = crate::fence::Question {
            store: &args.store,
            outdate: false,
            config_path: &config_path,
            connect_secs: 2,
            timeout: PEER_ASK_TIMEOUT,
        };
        crate::fence::ask_targets(runner, &targets, &question)
    });
    Ok(peer_verdict(container, asked)?.into_iter().collect())
}

/// The peer's ssh targets (its peer-link address first, then its LAN address)
/// and the cluster.toml they came from.
fn peer_targets() -> Result<(Vec<String>, PathBuf), String> {
    let path = std::env::var_os("CTMGR_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    let config = crate::config::Config::load(&path).map_err(|e| e.to_string())?;
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let explicit = std::env::var("CTMGR_NODE").ok();
    let me = config
        .resolve_node(explicit.as_deref(), &hostname)
        .map_err(|e| e.to_string())?;
    let peer = config
        .peer_of(&me.name)
        .ok_or_else(|| format!("{} names no peer of {}", path.display(), me.name))?;
    let targets = crate::fence::peer_paths(peer)
        .into_iter()
        .map(|(_, a)| crate::fence::ssh_target_for(peer, a))
        .collect();
    Ok((targets, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_hook_arguments_with_lxc_suffix() {
        let a = parse_args(&s(&[
            "--store",
            "store1",
            "--mountpoint",
            "/srv/store1",
            "--device",
            "/dev/drbd0",
            "--drbd-resource",
            "r0",
            "web",
            "lxc",
            "pre-start",
        ]))
        .unwrap();
        assert_eq!(a.store, "store1");
        assert_eq!(a.drbd_resource.as_deref(), Some("r0"));
        assert_eq!(a.lxc_args, s(&["web", "lxc", "pre-start"]));
        assert!(parse_args(&s(&["--store"])).is_err());
        assert!(parse_args(&s(&["--mountpoint", "/x", "--device", "/d"])).is_err());
        assert!(parse_args(&s(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn refuses_when_the_store_is_not_mounted() {
        let a = parse_args(&s(&[
            "--store",
            "store9",
            "--mountpoint",
            "/nonexistent/ctmgr-store9",
            "--device",
            "/dev/null",
            "web",
        ]))
        .unwrap();
        let runner = crate::runner::RecordingRunner::new();
        let msg = check(&a, None, &runner).unwrap_err();
        assert!(msg.contains("refusing to start container web"), "{msg}");
        assert!(
            msg.contains("not mounted at /nonexistent/ctmgr-store9"),
            "{msg}"
        );
    }

    #[test]
    fn rootfs_identity_not_path_decides() {
        let a = FileId { dev: 50, ino: 256 };
        let b = FileId { dev: 51, ino: 256 };
        let host = FileId { dev: 2049, ino: 2 };
        let roots = [(1, host), (900, a), (77, a), (901, b), (902, host)];
        assert_eq!(running_from(a, &roots), vec![77, 900]);
        assert_eq!(running_from(b, &roots), vec![901]);
        assert!(running_from(FileId { dev: 50, ino: 257 }, &roots).is_empty());
    }

    #[test]
    fn the_same_directory_by_two_paths_is_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("rootfs");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("alias")).unwrap();
        assert_eq!(
            FileId::of(&real).unwrap(),
            FileId::of(&dir.path().join("alias")).unwrap()
        );
        assert_ne!(FileId::of(&real).unwrap(), FileId::of(dir.path()).unwrap());
        // This process's own root is among the roots the kernel lists.
        let me = std::process::id() as i32;
        let roots = process_roots().unwrap();
        assert!(running_from(FileId::of(Path::new("/")).unwrap(), &roots).contains(&me));
    }

    #[test]
    fn rootfs_values() {
        assert_eq!(
            rootfs_dir("btrfs:/srv/store1/containers/web/rootfs"),
            Some(PathBuf::from("/srv/store1/containers/web/rootfs"))
        );
        assert_eq!(rootfs_dir("dir:/"), Some(PathBuf::from("/")));
        assert_eq!(rootfs_dir("/srv/x"), Some(PathBuf::from("/srv/x")));
        assert_eq!(rootfs_dir("overlay:/a:/b"), None);
        assert_eq!(rootfs_dir("relative"), None);
    }

    #[test]
    fn refuses_a_rootfs_off_the_store() {
        let store = tempfile::tempdir().unwrap();
        let rootfs = store.path().join("containers/web/rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let config = store.path().join("containers/web/config");
        let a = |v: &str| {
            std::fs::write(&config, format!("lxc.rootfs.path = {v}\n")).unwrap();
            parse_args(&s(&[
                "--store",
                "s",
                "--mountpoint",
                &store.path().display().to_string(),
                "--device",
                "/dev/null",
                "web",
            ]))
            .unwrap()
        };
        if std::env::var_os("LXC_ROOTFS_PATH").is_some() {
            return; // the environment would decide, not the config
        }
        let args = a("dir:/");
        let msg = not_running_elsewhere(&args, Some(&config), "web").unwrap_err();
        assert!(msg.contains("is not on its store s"), "{msg}");
        let args = a(&format!("btrfs:{}", rootfs.display()));
        not_running_elsewhere(&args, Some(&config), "web").unwrap();
    }

    fn state(conn: &str, peer: Role) -> ResourceState {
        use crate::drbd::state::{ConnState, DiskState};
        ResourceState {
            name: "r0".into(),
            minor: Some(0),
            role: Role::Primary,
            disk: DiskState::UpToDate,
            connection: ConnState::from_drbd(conn),
            peer_role: peer,
            peer_disk: DiskState::UpToDate,
            sync_percent: None,
            peer_node: None,
        }
    }

    #[test]
    fn the_peer_is_asked_unless_drbd_shows_it_connected_and_secondary() {
        assert!(!must_ask_peer(Some(&state("Connected", Role::Secondary))));
        assert!(must_ask_peer(Some(&state("Connected", Role::Primary))));
        assert!(must_ask_peer(Some(&state("Connected", Role::Unknown))));
        assert!(must_ask_peer(Some(&state("StandAlone", Role::Secondary))));
        assert!(must_ask_peer(Some(&state("WFConnection", Role::Unknown))));
        assert!(must_ask_peer(None), "no DRBD state: ask");
    }

    #[test]
    fn a_peer_that_holds_the_store_refuses_the_start_and_silence_does_not() {
        let report = |f: &dyn Fn(&mut PeerReport)| {
            let mut r = PeerReport {
                node: "node1".into(),
                store: "store1".into(),
                role: Some("Secondary".into()),
                ..PeerReport::default()
            };
            f(&mut r);
            r
        };
        let primary = report(&|r| r.role = Some("Primary".into()));
        let e = peer_verdict("web", Ok(primary)).unwrap_err();
        assert!(e.contains("node1 is Primary") && e.contains("web"), "{e}");
        let mounted = report(&|r| r.mounted = true);
        assert!(peer_verdict("web", Ok(mounted)).is_err());
        let running = report(&|r| r.running = vec!["db".into()]);
        assert!(peer_verdict("web", Ok(running)).is_err());

        assert_eq!(peer_verdict("web", Ok(report(&|_| {}))), Ok(None));
        let busy = report(&|r| r.busy = Some("ctmgr takeover (pid 7)".into()));
        let note = peer_verdict("web", Ok(busy)).unwrap().unwrap();
        assert!(note.contains("could not confirm"), "{note}");
        let unreachable = peer_verdict("web", Err("node1: ssh: timed out".into()))
            .unwrap()
            .unwrap();
        assert!(unreachable.contains("not asked"), "{unreachable}");
    }
}
