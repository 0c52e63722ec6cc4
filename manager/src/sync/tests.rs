//! Sender and receiver talking over in-memory pipes (no ssh), on a
//! two-store layout in a temporary directory; and the session's deadline.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::mountinfo::Mount;

struct Lab {
    _root: tempfile::TempDir,
    root: PathBuf,
    config: Config,
    state: PathBuf,
}

fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for p in ["srv/store1/containers", "srv/store2/containers", "state"] {
        fs::create_dir_all(root.join(p)).unwrap();
    }
    let text = format!(
        r#"
[cluster]
name = "erp"

[[node]]
name = "node1"
address = "10.0.254.1"

[[node]]
name = "node2"
address = "10.0.254.2"

[[store]]
name = "store1"
home = "node1"
mountpoint = "{r}/srv/store1"
device = "/dev/drbd0"
drbd_resource = "r0"

[[store]]
name = "store2"
home = "node2"
mountpoint = "{r}/srv/store2"
device = "/dev/drbd1"
drbd_resource = "r1"
"#,
        r = root.display()
    );
    let config = Config::parse(&text, Path::new("/etc/ctmgr/cluster.toml")).unwrap();
    Lab {
        state: root.join("state"),
        root,
        _root: dir,
        config,
    }
}

impl Lab {
    fn lxcpath(&self, store: &str) -> PathBuf {
        self.root.join("srv").join(store).join("containers")
    }

    fn store(&self, name: &str) -> &Store {
        self.config.store(name).unwrap()
    }

    /// A container of `store` here: config (with `extra` appended), fstab, rootfs.
    fn container(&self, store: &str, name: &str, extra: &[u8]) -> PathBuf {
        let dir = self.lxcpath(store).join(name);
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        let mut config = self.config_text(store, name).into_bytes();
        config.extend_from_slice(extra);
        fs::write(dir.join("config"), config).unwrap();
        fs::write(dir.join("fstab"), b"").unwrap();
        dir
    }

    /// The config ctmgr writes for a container of `store`.
    fn config_text(&self, store: &str, name: &str) -> String {
        format!(
            "lxc.uts.name = {name}\nlxc.rootfs.path = btrfs:{d}/rootfs\nlxc.mount.fstab = {d}/fstab\nlxc.hook.pre-start = /usr/local/sbin/ctmgr-guard --store {store} --mountpoint {mp} --device /dev/drbd9\n",
            d = self.lxcpath(store).join(name).display(),
            mp = self.root.join("srv").join(store).display()
        )
    }

    /// Where node2 keeps the replica of a store1 container.
    fn replica(&self, name: &str) -> PathBuf {
        self.lxcpath("store2").join(name)
    }

    /// node2's mount table: store2 mounted (or nothing).
    fn peer_mounts(&self, store2_mounted: bool) -> Vec<Mount> {
        if !store2_mounted {
            return Vec::new();
        }
        let line = format!(
            "301 22 0:52 / {}/srv/store2 rw,noatime - btrfs /dev/drbd1 rw\n",
            self.root.display()
        );
        crate::mountinfo::parse(&line).unwrap()
    }

    fn receiver_with<'a>(
        &'a self,
        mounts: &'a [Mount],
        running: &'a dyn Fn(&str, &Path) -> Result<bool, String>,
    ) -> Receiver<'a> {
        Receiver {
            config: &self.config,
            mounts,
            node: Some("node2"),
            is_running: running,
        }
    }
}

/// What a test run of sender against receiver produced.
struct Run {
    result: Result<(), SyncError>,
    report: Report,
}

#[derive(Clone, Copy)]
struct Peer {
    mounted: bool,
    running: bool,
    node: &'static str,
    cluster: &'static str,
}

const PEER: Peer = Peer {
    mounted: true,
    running: false,
    node: "node2",
    cluster: "erp",
};

/// Runs store1's sync from node1 against a receiver thread, over pipes.
fn sync_with(lab: &Lab, names: &[&str], mode: Mode, force: bool, peer: Peer) -> Run {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let stores = [lab.store("store1")];
    let mut plans = match plan(&stores, &names, &lab.state) {
        Ok(p) => p,
        Err(e) => {
            return Run {
                result: Err(e),
                report: Report::empty(mode, None, Vec::new()),
            }
        }
    };
    let (req_r, mut req_w) = std::io::pipe().unwrap();
    let (mut rep_r, rep_w) = std::io::pipe().unwrap();
    let mut peer_config = lab.config.clone();
    peer_config.cluster.name = peer.cluster.to_string();
    let mounts = lab.peer_mounts(peer.mounted);
    let receiver = std::thread::spawn(move || {
        let running = move |_: &str, _: &Path| Ok(peer.running);
        let rx = Receiver {
            config: &peer_config,
            mounts: &mounts,
            node: Some(peer.node),
            is_running: &running,
        };
        rx.serve(req_r, rep_w)
    });
    let parties = Parties {
        cluster: "erp",
        from: "node1",
        to: "node2",
        target: "root@10.0.254.2",
        state_dir: &lab.state,
        replica_dirs: BTreeMap::new(),
    };
    let mut rows = Vec::new();
    let result = converse(
        &parties, &mut plans, mode, force, &mut rep_r, &mut req_w, &mut rows,
    );
    drop(req_w);
    drop(rep_r);
    let _ = receiver.join().unwrap();
    if mode == Mode::Push {
        for p in &plans {
            p.state.compact(&lab.state).unwrap();
        }
    }
    Run {
        result,
        report: Report {
            mode,
            peer: Some("node2".into()),
            rows,
            notes: Vec::new(),
        },
    }
}

fn push(lab: &Lab) -> Report {
    let run = sync_with(lab, &[], Mode::Push, false, PEER);
    run.result.unwrap();
    run.report
}

fn outcomes(report: &Report) -> Vec<String> {
    report
        .rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.container,
                r.file.map(|f| f.as_str()).unwrap_or("-"),
                r.status.as_str()
            )
        })
        .collect()
}

#[test]
fn first_push_writes_byte_exact_then_nothing_is_rewritten() {
    let lab = lab();
    let dir = lab.container("store1", "web", b"# caf\xe9 \xff\n");
    fs::write(dir.join("fstab"), b"/srv/data srv none bind 0 0\n").unwrap();
    let report = push(&lab);
    assert_eq!(
        outcomes(&report),
        ["web config written", "web fstab written"]
    );
    assert_eq!(report.exit_status(), ExitStatus::Done);
    let replica = lab.replica("web");
    assert_eq!(
        fs::read(replica.join("config")).unwrap(),
        fs::read(dir.join("config")).unwrap()
    );
    assert_eq!(
        fs::read(replica.join("fstab")).unwrap(),
        b"/srv/data srv none bind 0 0\n"
    );
    assert!(
        !replica.join("rootfs").exists(),
        "only config and fstab are replicated"
    );
    let inode = fs::metadata(replica.join("config")).unwrap().ino();
    // State recorded on the sender.
    let state = StoreState::load(&lab.state, "store1").unwrap();
    assert_eq!(
        state.hash("web", SyncFile::Config),
        Some(sha256_hex(&fs::read(dir.join("config")).unwrap()).as_str())
    );

    let again = push(&lab);
    assert_eq!(
        outcomes(&again),
        ["web config unchanged", "web fstab unchanged"]
    );
    assert_eq!(
        fs::metadata(replica.join("config")).unwrap().ino(),
        inode,
        "not rewritten"
    );

    let check = sync_with(&lab, &[], Mode::Check, false, PEER);
    check.result.unwrap();
    assert_eq!(
        outcomes(&check.report),
        ["web config in sync", "web fstab in sync"]
    );
    assert_eq!(check.report.exit_status(), ExitStatus::Done);
}

#[test]
fn a_change_here_is_stale_until_pushed() {
    let lab = lab();
    let dir = lab.container("store1", "web", b"");
    push(&lab);
    fs::write(dir.join("fstab"), b"new\n").unwrap();
    let check = sync_with(&lab, &[], Mode::Check, false, PEER);
    assert_eq!(
        outcomes(&check.report),
        ["web config in sync", "web fstab stale"]
    );
    assert_eq!(check.report.exit_status(), ExitStatus::Done);
    assert_eq!(
        fs::read(lab.replica("web").join("fstab")).unwrap(),
        b"",
        "check writes nothing"
    );
    let report = push(&lab);
    assert_eq!(
        outcomes(&report),
        ["web config unchanged", "web fstab written"]
    );
    assert_eq!(
        fs::read(lab.replica("web").join("fstab")).unwrap(),
        b"new\n"
    );
}

#[test]
fn drift_on_the_peer_is_reported_with_a_diff_and_kept_without_force() {
    let lab = lab();
    lab.container("store1", "web", b"lxc.net.0.link = br0\n");
    push(&lab);
    let replica = lab.replica("web").join("config");
    let edited = fs::read_to_string(&replica).unwrap().replace("br0", "br9");
    fs::write(&replica, &edited).unwrap();

    let check = sync_with(&lab, &[], Mode::Check, false, PEER);
    assert_eq!(
        outcomes(&check.report),
        ["web config drift", "web fstab in sync"]
    );
    assert_eq!(check.report.exit_status(), ExitStatus::Failed);
    let diff = check.report.rows[0].diff.clone().unwrap();
    assert!(
        diff.contains("-lxc.net.0.link = br0\n+lxc.net.0.link = br9\n"),
        "{diff}"
    );
    assert!(diff.contains("config as last pushed"), "{diff}");

    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    assert_eq!(
        outcomes(&run.report),
        ["web config drift", "web fstab unchanged"]
    );
    assert_eq!(
        run.report.exit_status(),
        ExitStatus::Refused,
        "nothing changed"
    );
    assert!(
        run.report.rows[0].outcome().contains("--force"),
        "{}",
        run.report.rows[0].outcome()
    );
    assert_eq!(
        fs::read_to_string(&replica).unwrap(),
        edited,
        "not overwritten"
    );

    let forced = sync_with(&lab, &[], Mode::Push, true, PEER);
    assert_eq!(
        outcomes(&forced.report),
        ["web config written over drift", "web fstab unchanged"]
    );
    assert!(fs::read_to_string(&replica).unwrap().contains("br0"));
    let check = sync_with(&lab, &[], Mode::Check, false, PEER);
    assert_eq!(check.report.exit_status(), ExitStatus::Done);
}

#[test]
fn an_existing_replica_never_pushed_from_here_counts_as_drift() {
    let lab = lab();
    let dir = lab.container("store1", "web", b"");
    // The runbook's scp copy, slightly different.
    fs::create_dir_all(lab.replica("web")).unwrap();
    let mut old = fs::read(dir.join("config")).unwrap();
    old.extend_from_slice(b"# copied by hand\n");
    fs::write(lab.replica("web").join("config"), &old).unwrap();
    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    assert_eq!(
        outcomes(&run.report),
        ["web config drift", "web fstab written"]
    );
    assert!(run.report.rows[0].outcome().contains("never pushed"));
    assert_eq!(
        run.report.exit_status(),
        ExitStatus::Failed,
        "fstab was written"
    );
    assert_eq!(fs::read(lab.replica("web").join("config")).unwrap(), old);
}

#[test]
fn a_replica_store_not_mounted_on_the_peer_is_refused_and_nothing_written() {
    let lab = lab();
    lab.container("store1", "web", b"");
    let peer = Peer {
        mounted: false,
        ..PEER
    };
    let run = sync_with(&lab, &[], Mode::Push, false, peer);
    run.result.unwrap();
    assert_eq!(outcomes(&run.report), ["* - refused"]);
    let why = run.report.rows[0].outcome();
    assert!(
        why.contains("not mounted at") && why.contains("hidden"),
        "{why}"
    );
    assert!(
        !lab.replica("web").exists(),
        "nothing written into the bare mountpoint"
    );
    assert_eq!(run.report.exit_status(), ExitStatus::Refused);
}

#[test]
fn a_missing_replica_dir_is_refused() {
    let lab = lab();
    lab.container("store1", "web", b"");
    fs::remove_dir(lab.lxcpath("store2")).unwrap();
    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    assert!(
        run.report.rows[0].outcome().contains("is missing on node2"),
        "{:?}",
        run.report.rows
    );
    assert!(!lab.lxcpath("store2").exists());
}

#[test]
fn a_peer_container_with_the_same_name_is_a_collision() {
    let lab = lab();
    lab.container("store1", "web", b"");
    let theirs = lab.container("store2", "web", b"# node2's own web\n");
    let before = fs::read(theirs.join("config")).unwrap();
    let run = sync_with(&lab, &[], Mode::Push, true, PEER);
    assert_eq!(
        outcomes(&run.report),
        ["web config refused", "web fstab refused"]
    );
    assert!(
        run.report.rows[0].outcome().contains("collision"),
        "{}",
        run.report.rows[0].outcome()
    );
    assert_eq!(
        fs::read(theirs.join("config")).unwrap(),
        before,
        "--force does not override a collision"
    );
}

#[test]
fn symlinks_are_never_followed_on_either_side() {
    let lab = lab();
    let outside = lab.root.join("outside");
    fs::write(&outside, b"secret\n").unwrap();
    // Sender: fstab is a symlink out of the container.
    let dir = lab.container("store1", "web", b"");
    fs::remove_file(dir.join("fstab")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("fstab")).unwrap();
    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    assert_eq!(
        outcomes(&run.report),
        ["web config written", "web fstab refused"]
    );
    assert!(run.report.rows[1].outcome().contains("symlink"));
    assert!(!lab.replica("web").join("fstab").exists());

    // Receiver: the replica's fstab is a symlink out of the replica dir.
    fs::remove_file(dir.join("fstab")).unwrap();
    fs::write(dir.join("fstab"), b"x\n").unwrap();
    std::os::unix::fs::symlink(&outside, lab.replica("web").join("fstab")).unwrap();
    let run = sync_with(&lab, &[], Mode::Push, true, PEER);
    assert_eq!(
        outcomes(&run.report),
        ["web config unchanged", "web fstab refused"]
    );
    assert_eq!(fs::read(&outside).unwrap(), b"secret\n");

    // Receiver: the replica directory itself is a symlink.
    lab.container("store1", "db", b"");
    let elsewhere = lab.root.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, lab.replica("db")).unwrap();
    let run = sync_with(&lab, &["db"], Mode::Push, true, PEER);
    assert_eq!(
        outcomes(&run.report),
        ["db config refused", "db fstab refused"]
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn replicas_of_destroyed_containers_are_removed_unless_running_or_changed() {
    let lab = lab();
    let web = lab.container("store1", "web", b"");
    lab.container("store1", "db", b"");
    push(&lab);
    fs::remove_dir_all(&web).unwrap();

    let running = Peer {
        running: true,
        ..PEER
    };
    let run = sync_with(&lab, &[], Mode::Push, false, running);
    let rows = outcomes(&run.report);
    assert!(rows.contains(&"web - refused".to_string()), "{rows:?}");
    assert!(run
        .report
        .rows
        .iter()
        .any(|r| r.outcome().contains("is running on node2")));
    assert!(lab.replica("web").join("config").exists());

    let check = sync_with(&lab, &[], Mode::Check, false, PEER);
    assert!(outcomes(&check.report).contains(&"web - orphaned".to_string()));

    fs::write(lab.replica("web").join("fstab"), b"edited on node2\n").unwrap();
    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    assert!(outcomes(&run.report).contains(&"web - drift".to_string()));
    assert!(lab.replica("web").exists());

    fs::write(lab.replica("web").join("fstab"), b"").unwrap();
    fs::write(lab.replica("web").join("web.log"), b"lxc log\n").unwrap();
    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    let removed = run
        .report
        .rows
        .iter()
        .find(|r| r.container == "web")
        .unwrap();
    assert_eq!(removed.status, Status::Removed);
    assert!(
        removed.outcome().contains("web.log"),
        "{}",
        removed.outcome()
    );
    assert!(!lab.replica("web").join("config").exists());
    assert!(
        lab.replica("db").join("config").exists(),
        "other replicas untouched"
    );
    assert!(StoreState::load(&lab.state, "store1")
        .unwrap()
        .hash("web", SyncFile::Config)
        .is_none());
    // Converged: the next run has nothing to say about web.
    let again = push(&lab);
    assert!(
        again.rows.iter().all(|r| r.container != "web"),
        "{:?}",
        outcomes(&again)
    );
}

#[test]
fn an_orphan_never_pushed_from_here_is_only_removed_with_force() {
    let lab = lab();
    lab.container("store1", "web", b"");
    push(&lab);
    // A replica on node2 claiming to be store1's "ghost", unknown here.
    let ghost = lab.replica("ghost");
    fs::create_dir_all(&ghost).unwrap();
    let cfg = format!(
        "lxc.rootfs.path = btrfs:{}/ghost/rootfs\n",
        lab.lxcpath("store1").display()
    );
    fs::write(ghost.join("config"), cfg).unwrap();
    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    assert!(outcomes(&run.report).contains(&"ghost - orphaned".to_string()));
    assert!(ghost.join("config").exists());
    let named = sync_with(&lab, &["ghost"], Mode::Push, true, PEER);
    assert!(matches!(
        named.result,
        Err(SyncError::UnknownContainer { .. })
    ));
    let run = sync_with(&lab, &[], Mode::Push, true, PEER);
    assert_eq!(
        outcomes(&run.report),
        [
            "web config unchanged",
            "web fstab unchanged",
            "ghost - removed"
        ]
    );
    assert!(!ghost.exists());
}

#[test]
fn named_sync_touches_only_those_and_unknown_names_are_errors() {
    let lab = lab();
    lab.container("store1", "web", b"");
    lab.container("store1", "db", b"");
    let run = sync_with(&lab, &["db"], Mode::Push, false, PEER);
    assert_eq!(
        outcomes(&run.report),
        ["db config written", "db fstab written"]
    );
    assert!(!lab.replica("web").exists());
    let run = sync_with(&lab, &["nosuch"], Mode::Push, false, PEER);
    let err = run.result.unwrap_err();
    assert!(matches!(err, SyncError::UnknownContainer { .. }), "{err}");
    assert!(err.to_string().contains("store1"), "{err}");
    let run = sync_with(&lab, &["../etc"], Mode::Push, false, PEER);
    assert!(matches!(run.result, Err(SyncError::Name(_))));
}

#[test]
fn a_missing_fstab_is_skipped() {
    let lab = lab();
    let dir = lab.container("store1", "web", b"");
    fs::remove_file(dir.join("fstab")).unwrap();
    let report = push(&lab);
    assert_eq!(
        outcomes(&report),
        ["web config written", "web fstab skipped"]
    );
    assert_eq!(report.exit_status(), ExitStatus::Done);
}

#[test]
fn the_receiver_refuses_a_wrong_cluster_or_node() {
    let lab = lab();
    lab.container("store1", "web", b"");
    let run = sync_with(
        &lab,
        &[],
        Mode::Push,
        false,
        Peer {
            cluster: "other",
            ..PEER
        },
    );
    let err = run.result.unwrap_err();
    assert!(matches!(err, SyncError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("cluster \"other\""), "{err}");
    let run = sync_with(
        &lab,
        &[],
        Mode::Push,
        false,
        Peer {
            node: "node3",
            ..PEER
        },
    );
    assert!(run
        .result
        .unwrap_err()
        .to_string()
        .contains("this is node node3, not node2"));
    assert!(!lab.replica("web").exists());
}

#[test]
fn decide_writes_nothing_and_checks_the_pushed_config() {
    let lab = lab();
    let mounts = lab.peer_mounts(true);
    let running = |_: &str, _: &Path| Ok(false);
    let rx = lab.receiver_with(&mounts, &running);
    let good = lab.config_text("store1", "web");
    let req = Request::Push {
        store: "store1".into(),
        name: "web".into(),
        file: SyncFile::Config,
        expected: None,
        mode: 0o640,
        force: false,
    };
    let action = rx.decide(&req, good.as_bytes());
    assert!(
        matches!(
            action,
            receiver::Action::Write {
                create_dir: true,
                mode: 0o640,
                ..
            }
        ),
        "{action:?}"
    );
    assert!(!lab.replica("web").exists(), "decide only decides");
    let (reply, _) = rx.apply(action);
    assert!(matches!(
        reply,
        Reply::Outcome {
            outcome: Outcome::Written { over_drift: false },
            ..
        }
    ));
    assert_eq!(
        fs::metadata(lab.replica("web").join("config"))
            .unwrap()
            .mode()
            & 0o777,
        0o640
    );

    let bad = "lxc.rootfs.path = btrfs:/srv/elsewhere/web/rootfs\n";
    let (reply, _) = rx.handle(&req, bad.as_bytes());
    let Reply::Outcome {
        outcome: Outcome::Refused { reason },
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert!(reason.contains("is not under"), "{reason}");

    // Names that would escape the replica dir never reach a path.
    let evil = Request::Query {
        store: "store1".into(),
        name: "..".into(),
        file: SyncFile::Config,
    };
    assert!(matches!(
        rx.decide(&evil, b""),
        receiver::Action::Reply {
            outcome: Outcome::Refused { .. },
            ..
        }
    ));
    let unknown = Request::List {
        store: "store9".into(),
    };
    assert!(matches!(
        rx.decide(&unknown, b""),
        receiver::Action::Reply {
            outcome: Outcome::Refused { .. },
            ..
        }
    ));
}

#[test]
fn stores_to_sync_skips_stores_whose_replica_dir_is_held_here() {
    let lab = lab();
    let held = |s| crate::store::StoreHere {
        store: lab.store(s),
        holding: crate::store::Holding::Held,
    };
    let free = |s| crate::store::StoreHere {
        store: lab.store(s),
        holding: crate::store::Holding::NotMounted,
    };
    let (stores, notes) = stores_to_sync(&lab.config, &[held("store1"), free("store2")]);
    assert_eq!(
        stores.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["store1"]
    );
    assert!(notes.is_empty(), "{notes:?}");
    // Failed over: node holds both; replicas of each would go onto the other.
    let (stores, notes) = stores_to_sync(&lab.config, &[held("store1"), held("store2")]);
    assert!(stores.is_empty());
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("failed over"));
    let (stores, notes) = stores_to_sync(&lab.config, &[free("store1"), free("store2")]);
    assert!(stores.is_empty());
    assert!(notes[0].contains("no store is held here"));
}

#[test]
fn a_single_node_cluster_syncs_nothing() {
    let config = Config::parse(
        "[cluster]\nname = \"solo\"\n[[node]]\nname = \"n1\"\naddress = \"10.0.254.1\"\n[[store]]\nname = \"s1\"\nhome = \"n1\"\nmountpoint = \"/srv/s1\"\ndevice = \"/dev/sdb1\"\n",
        Path::new("/etc/ctmgr/cluster.toml"),
    )
    .unwrap();
    let opts = Options {
        names: &[],
        mode: Mode::Push,
        force: false,
        timeout: None,
    };
    let report = run_sync(&config, "n1", &SystemRunner::default(), &[], &opts).unwrap();
    assert!(report.rows.is_empty() && report.peer.is_none());
    assert!(report.notes[0].contains("single-node"));
    assert_eq!(report.exit_status(), ExitStatus::Done);
}

#[test]
fn remote_argv_passes_a_non_default_config_path_safely() {
    let lab = lab();
    assert_eq!(
        remote_argv(&lab.config).unwrap(),
        ["ctmgr", "__sync-receive"]
    );
    let mut c = lab.config.clone();
    c.path = PathBuf::from("/etc/ctmgr/lab.toml");
    assert_eq!(
        remote_argv(&c).unwrap(),
        ["ctmgr", "--config", "/etc/ctmgr/lab.toml", "__sync-receive"]
    );
    c.path = PathBuf::from("/tmp/x; rm -rf /");
    assert!(matches!(
        remote_argv(&c),
        Err(SyncError::RemoteConfigPath(_))
    ));
}

fn parties(lab: &Lab) -> Parties<'_> {
    Parties {
        cluster: "erp",
        from: "node1",
        to: "node2",
        target: "root@10.0.254.2",
        state_dir: &lab.state,
        replica_dirs: BTreeMap::new(),
    }
}

#[test]
fn a_hanging_peer_is_stopped_at_the_deadline() {
    let lab = lab();
    let cmd = Cmd::new("sleep")
        .arg("30")
        .timeout(Duration::from_millis(500));
    let opts = Options {
        names: &[],
        mode: Mode::Push,
        force: false,
        timeout: None,
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    let err = session(
        &SystemRunner::default(),
        &cmd,
        &parties(&lab),
        &mut [],
        &opts,
        &mut rows,
    )
    .unwrap_err();
    assert!(matches!(err, SyncError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_unreachable_peer_fails_with_what_ssh_said() {
    let lab = lab();
    // Real ssh failing before it connects anywhere: exit 255, its reason on stderr.
    let cmd = Cmd::new("ssh")
        .args(["-o", "NoSuchOption=yes", "root@10.0.254.2", "--", "true"])
        .timeout(Duration::from_secs(10));
    let opts = Options {
        names: &[],
        mode: Mode::Push,
        force: false,
        timeout: None,
    };
    let mut rows = Vec::new();
    let err = session(
        &SystemRunner::default(),
        &cmd,
        &parties(&lab),
        &mut [],
        &opts,
        &mut rows,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SyncError::Peer { .. }), "{msg}");
    assert!(
        msg.contains("Bad configuration option") && msg.contains("code 255"),
        "{msg}"
    );
    assert!(msg.contains("node2"), "{msg}");
}

#[test]
fn exit_status_rules() {
    let r = |status| row("s", "c", None, status, None);
    let report = |mode, rows| Report {
        mode,
        peer: None,
        rows,
        notes: Vec::new(),
    };
    assert_eq!(
        report(Mode::Push, vec![r(Status::Written), r(Status::Skipped)]).exit_status(),
        ExitStatus::Done
    );
    assert_eq!(
        report(Mode::Push, vec![r(Status::Unchanged), r(Status::Refused)]).exit_status(),
        ExitStatus::Refused
    );
    assert_eq!(
        report(Mode::Push, vec![r(Status::Written), r(Status::Drift)]).exit_status(),
        ExitStatus::Failed
    );
    assert_eq!(
        report(Mode::Push, vec![r(Status::Failed)]).exit_status(),
        ExitStatus::Failed
    );
    assert_eq!(
        report(Mode::Check, vec![r(Status::Stale), r(Status::Missing)]).exit_status(),
        ExitStatus::Done
    );
    assert_eq!(
        report(Mode::Check, vec![r(Status::Drift)]).exit_status(),
        ExitStatus::Failed
    );
}

#[test]
fn a_config_whose_guard_is_cleared_is_not_pushed() {
    let lab = lab();
    let dir = lab.container("store1", "web", b"");
    lab.container("store1", "db", b"");
    // Cleared through an include: the file text still has the hook line.
    fs::write(dir.join("clear.conf"), "lxc.hook.pre-start =\n").unwrap();
    let mut text = fs::read(dir.join("config")).unwrap();
    text.extend_from_slice(format!("lxc.include = {}/clear.conf\n", dir.display()).as_bytes());
    fs::write(dir.join("config"), text).unwrap();
    let run = sync_with(&lab, &[], Mode::Push, false, PEER);
    run.result.unwrap();
    let all = outcomes(&run.report);
    assert!(all.contains(&"web - refused".to_string()), "{all:?}");
    assert!(all.contains(&"db config written".to_string()), "{all:?}");
    let detail = run
        .report
        .rows
        .iter()
        .find(|r| r.container == "web")
        .and_then(|r| r.detail.clone())
        .unwrap();
    assert!(
        detail.contains("container web") && detail.contains("lxc.hook.pre-start"),
        "{detail}"
    );
    assert!(!lab.replica("web").join("config").exists());
    assert_eq!(run.report.exit_status(), ExitStatus::Failed);
}

/// D17, defence in depth: even with a config that names a replica dir
/// outside every store (cluster.toml refuses it at load), the receiver
/// refuses to write there, with `--force` too.
#[test]
fn the_receiver_never_writes_outside_a_store() {
    let lab = lab();
    let outside = lab.root.join("etc-cron.d");
    fs::create_dir_all(&outside).unwrap();
    let mut config = lab.config.clone();
    config.stores[0].replica_dir = Some(outside.clone());
    let mounts = lab.peer_mounts(true);
    let running = |_: &str, _: &Path| Ok(false);
    let rx = Receiver {
        config: &config,
        mounts: &mounts,
        node: Some("node2"),
        is_running: &running,
    };
    let payload = format!(
        "lxc.rootfs.path = btrfs:{}/web/rootfs\n",
        lab.lxcpath("store1").display()
    );
    let req = Request::Push {
        store: "store1".into(),
        name: "web".into(),
        file: SyncFile::Config,
        expected: None,
        mode: 0o644,
        force: true,
    };
    let (reply, _) = rx.handle(&req, payload.as_bytes());
    match reply {
        Reply::Outcome {
            outcome: Outcome::Refused { reason },
            ..
        } => assert!(reason.contains("is not on any store"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!outside.join("web").exists(), "nothing written outside");
}

/// A session killed (issue 10, D11): the receiver carries out requests as
/// usual but, at the `kill_at`-th push or remove (1-based), does it and then
/// hangs up without answering; the sender's in-memory state is thrown away
/// unsaved, as `kill -9` would. Returns the sender's error.
fn killed_sync(lab: &Lab, kill_at: usize) -> SyncError {
    let stores = [lab.store("store1")];
    let mut plans = plan(&stores, &[], &lab.state).unwrap();
    let (mut req_r, mut req_w) = std::io::pipe().unwrap();
    let (mut rep_r, mut rep_w) = std::io::pipe().unwrap();
    let config = lab.config.clone();
    let mounts = lab.peer_mounts(true);
    let receiver = std::thread::spawn(move || {
        let running = |_: &str, _: &Path| Ok(false);
        let rx = Receiver {
            config: &config,
            mounts: &mounts,
            node: Some("node2"),
            is_running: &running,
        };
        let hello = protocol::read_frame::<_, Request>(&mut req_r)
            .unwrap()
            .unwrap();
        protocol::write_frame(&mut rep_w, &rx.hello(&hello.header).unwrap(), b"").unwrap();
        let mut writes = 0;
        while let Some(frame) = protocol::read_frame::<_, Request>(&mut req_r).unwrap() {
            let (reply, payload) = rx.handle(&frame.header, &frame.payload);
            if matches!(frame.header, Request::Push { .. } | Request::Remove { .. }) {
                writes += 1;
                if writes == kill_at {
                    return; // done on disk, never answered
                }
            }
            protocol::write_frame(&mut rep_w, &reply, &payload).unwrap();
        }
    });
    let parties = parties(lab);
    let mut rows = Vec::new();
    let err = converse(
        &parties,
        &mut plans,
        Mode::Push,
        false,
        &mut rep_r,
        &mut req_w,
        &mut rows,
    )
    .unwrap_err();
    drop(req_w);
    drop(rep_r);
    receiver.join().unwrap();
    drop(plans); // killed: nothing compacted, nothing saved
    err
}

fn append(path: &Path, line: &[u8]) {
    let mut bytes = fs::read(path).unwrap();
    bytes.extend_from_slice(line);
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_killed_first_push_leaves_no_false_drift() {
    let lab = lab();
    let web = lab.container("store1", "web", b"");
    let db = lab.container("store1", "db", b"");
    // Pushes in order: db config, db fstab, web config (killed), web fstab.
    let err = killed_sync(&lab, 3);
    assert!(
        matches!(err, SyncError::Protocol(ProtocolError::Closed)),
        "{err}"
    );
    assert!(
        lab.replica("web").join("config").exists(),
        "the peer wrote it"
    );
    assert!(!lab.replica("web").join("fstab").exists());
    assert!(
        !state::state_path(&lab.state, "store1").exists(),
        "nothing compacted"
    );
    let folded = StoreState::load(&lab.state, "store1").unwrap();
    assert!(folded.hash("db", SyncFile::Fstab).is_some(), "acknowledged");
    assert!(
        folded.hash("web", SyncFile::Config).is_none(),
        "never acknowledged, so never recorded"
    );
    assert!(folded.pending("web", SyncFile::Config).is_some());

    // Changed here since: what the peer holds is what we sent, not drift.
    append(&web.join("config"), b"# v2\n");
    append(&db.join("config"), b"# v2\n");
    let check = sync_with(&lab, &[], Mode::Check, false, PEER);
    assert_eq!(
        outcomes(&check.report),
        [
            "db config stale",
            "db fstab in sync",
            "web config stale",
            "web fstab missing"
        ]
    );
    let run = push(&lab);
    assert_eq!(
        outcomes(&run),
        [
            "db config written",
            "db fstab unchanged",
            "web config written",
            "web fstab written"
        ]
    );
    for (name, dir) in [("web", &web), ("db", &db)] {
        assert_eq!(
            fs::read(lab.replica(name).join("config")).unwrap(),
            fs::read(dir.join("config")).unwrap()
        );
    }
    let state = StoreState::load(&lab.state, "store1").unwrap();
    assert!(state.pending.is_empty(), "{:?}", state.pending);
    assert!(!state::log_path(&lab.state, "store1").exists(), "compacted");
    assert_eq!(
        sync_with(&lab, &[], Mode::Check, false, PEER)
            .report
            .exit_status(),
        ExitStatus::Done
    );
}

#[test]
fn a_hand_edit_after_a_killed_push_is_still_drift() {
    let lab = lab();
    let web = lab.container("store1", "web", b"");
    let db = lab.container("store1", "db", b"");
    push(&lab);
    append(&web.join("config"), b"# v2\n");
    append(&db.join("config"), b"# v2\n");
    // db config written and acknowledged; web config written, no answer.
    killed_sync(&lab, 3);
    assert!(fs::read_to_string(lab.replica("web").join("config"))
        .unwrap()
        .contains("# v2"));
    for name in ["web", "db"] {
        append(&lab.replica(name).join("config"), b"# by hand on node2\n");
    }
    append(&web.join("config"), b"# v3\n");
    let run = push(&lab);
    assert_eq!(
        outcomes(&run),
        [
            "db config drift",
            "db fstab unchanged",
            "web config drift",
            "web fstab unchanged"
        ]
    );
    for name in ["web", "db"] {
        assert!(fs::read_to_string(lab.replica(name).join("config"))
            .unwrap()
            .contains("# by hand on node2"));
    }
    // --check sees the same.
    let check = sync_with(&lab, &[], Mode::Check, false, PEER);
    assert_eq!(check.report.exit_status(), ExitStatus::Failed);
}

#[test]
fn a_replica_pushed_by_a_killed_session_is_removed_without_force() {
    let lab = lab();
    let web = lab.container("store1", "web", b"");
    // web config and fstab written; the fstab never answered.
    killed_sync(&lab, 2);
    assert!(lab.replica("web").join("fstab").exists());
    fs::remove_dir_all(&web).unwrap();
    let run = push(&lab);
    assert_eq!(outcomes(&run), ["web - removed"]);
    assert!(!lab.replica("web").exists());
    let state = StoreState::load(&lab.state, "store1").unwrap();
    assert!(!state.knows("web"), "{state:?}");
}

#[test]
fn the_receiver_refuses_a_pushed_config_without_the_guard() {
    // An old or hostile sender that skips its own check (issue 10, D8).
    let lab = lab();
    let mounts = lab.peer_mounts(true);
    let running = |_: &str, _: &Path| Ok(false);
    let rx = lab.receiver_with(&mounts, &running);
    let good = lab.config_text("store1", "web");
    let hook = good
        .lines()
        .find(|l| l.starts_with("lxc.hook.pre-start"))
        .unwrap()
        .to_string();
    let req = Request::Push {
        store: "store1".into(),
        name: "web".into(),
        file: SyncFile::Config,
        expected: None,
        mode: 0o640,
        force: false,
    };
    let cases = [
        (
            good.replace(&format!("{hook}\n"), ""),
            "no ctmgr-guard pre-start hook",
        ),
        (
            format!("{good}lxc.hook.pre-start =\n"),
            "no ctmgr-guard pre-start hook",
        ),
        (
            format!("{good}lxc.hook =\n"),
            "no ctmgr-guard pre-start hook",
        ),
        (
            good.replace("--store store1 --mountpoint", "--store store2 --mountpoint")
                .replace("/srv/store1 --device", "/srv/store2 --device"),
            "does not name this container's store",
        ),
        (
            format!("{good}lxc.include = /etc/clear-hooks.conf\n"),
            "lxc.include",
        ),
        (format!("{good}lxc.hook.version = 1\n"), "lxc.hook.version"),
    ];
    for (config, why) in cases {
        let (reply, _) = rx.handle(&req, config.as_bytes());
        let Reply::Outcome {
            outcome: Outcome::Refused { reason },
            ..
        } = reply
        else {
            panic!("{config}: {reply:?}")
        };
        assert!(reason.contains(why), "{config}: {reason}");
        assert!(
            reason.contains("refuses the pushed config of web"),
            "{reason}"
        );
        assert!(!lab.replica("web").exists(), "nothing written for {config}");
    }
    // A comment that mentions the key clears nothing; quoted values (as
    // ctmgr writes them) are liblxc's values.
    let commented = format!("{good}# lxc.hook.pre-start =\n")
        .replace("lxc.uts.name = web", "lxc.uts.name = \"web\"");
    assert!(commented.contains("\"web\""));
    let (reply, _) = rx.handle(&req, commented.as_bytes());
    assert!(
        matches!(
            reply,
            Reply::Outcome {
                outcome: Outcome::Written { .. },
                ..
            }
        ),
        "{reply:?}"
    );

    // End to end: a sender that pushes it anyway gets a refused row.
    let lab = self::lab();
    let dir = lab.container("store1", "web", b"");
    let good = lab.config_text("store1", "web");
    let hookless: String = good
        .lines()
        .filter(|l| !l.starts_with("lxc.hook.pre-start"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(dir.join("config"), hookless).unwrap();
    let stores = [lab.store("store1")];
    let mut plans = plan(&stores, &[], &lab.state).unwrap();
    let (req_r, mut req_w) = std::io::pipe().unwrap();
    let (mut rep_r, rep_w) = std::io::pipe().unwrap();
    let config = lab.config.clone();
    let receiver = std::thread::spawn(move || {
        let running = |_: &str, _: &Path| Ok(false);
        let mounts = lab_mounts_for(&config);
        let rx = Receiver {
            config: &config,
            mounts: &mounts,
            node: Some("node2"),
            is_running: &running,
        };
        rx.serve(req_r, rep_w)
    });
    // The old sender's loop: every file, no check of its own.
    let parties = parties(&lab);
    let mut conv = Conversation {
        input: &mut rep_r,
        output: &mut req_w,
        peer: "node2",
    };
    let hello = Request::Hello {
        version: protocol::VERSION,
        cluster: "erp".into(),
        from: "node1".into(),
        to: "node2".into(),
    };
    conv.call(&hello, b"").unwrap();
    let row = sync_file(
        &parties,
        &mut plans[0],
        "web",
        SyncFile::Config,
        Mode::Push,
        false,
        &mut conv,
    )
    .unwrap();
    protocol::write_frame(conv.output, &Request::Bye, b"").unwrap();
    drop(req_w);
    receiver.join().unwrap().unwrap();
    assert_eq!(row.status, Status::Refused, "{row:?}");
    assert!(
        row.outcome().contains("no ctmgr-guard pre-start hook"),
        "{}",
        row.outcome()
    );
    assert!(!lab.replica("web").join("config").exists());
    assert!(
        StoreState::load(&lab.state, "store1")
            .unwrap()
            .hash("web", SyncFile::Config)
            .is_none(),
        "a refused push is not recorded"
    );
}

/// node2's mounts for a lab config (store2 mounted at its mountpoint).
fn lab_mounts_for(config: &Config) -> Vec<Mount> {
    let mp = &config.store("store2").unwrap().mountpoint;
    let line = format!(
        "301 22 0:52 / {} rw,noatime - btrfs /dev/drbd1 rw\n",
        mp.display()
    );
    crate::mountinfo::parse(&line).unwrap()
}
