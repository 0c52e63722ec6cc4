//! Convergence after interruptions (issue 10, D9 D10 D13 D15 D16 D20) in the two-node lab,
//! with real containers: a restore killed between its two renames is finished by a rerun; a
//! freeze left by a killed `snapshot --freeze` is thawed by the next `list` while a freeze
//! an admin made is only reported; out-of-range durations are usage errors; one broken
//! `ctmgr.toml` does not stop `prune --all` for the others; bad journal lines hide nothing;
//! temp files of interrupted atomic writes are swept, foreign look-alikes are not.
//!
//! Where a kill at the exact moment cannot be made reliable (the two renames of a restore
//! are microseconds apart), the state is built by hand exactly as the code leaves it (see
//! `ctmgr::snapshot::forward`). Every step is followed by [`assert_never_double`]. These
//! need root and the workspace binaries (`cargo build --workspace --bins`).
#![forbid(unsafe_code)]

use std::time::Duration;

use ctmgr_tests::invariants::assert_never_double;
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use ctmgr_tests::Output;

/// Deadline for one state query inside a node.
const Q: Duration = Duration::from_secs(30);

const LXCPATH: &str = "/srv/store1/containers";
const WEB: &str = "/srv/store1/containers/web";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

/// `sh -c SCRIPT` inside the node; must succeed (test set-up only, never product code).
#[track_caller]
fn sh(node: &Node, script: &str) -> Output {
    let out = node.cmd(&["sh", "-c", script]);
    out.assert_success();
    out
}

fn exists(node: &Node, path: &str) -> bool {
    node.cmd(&["test", "-e", path]).success()
}

#[track_caller]
fn assert_mentions(out: &Output, what: &str) {
    assert!(
        out.stdout.contains(what) || out.stderr.contains(what),
        "expected {what:?} in the output of {out}"
    );
}

#[track_caller]
fn assert_no_panic(out: &Output) {
    assert_ne!(out.code(), Some(101), "ctmgr panicked: {out}");
    assert!(!out.stderr.contains("panicked"), "ctmgr panicked: {out}");
}

/// `ctmgr snapshot NAME [ARGS]` inside the node; the new snapshot's name (ctmgr prints
/// nothing without a terminal: the one name that was not there before).
#[track_caller]
fn snapshot(node: &Node, name: &str, args: &[&str]) -> String {
    let before = snapshots(node, name);
    let mut argv = vec!["snapshot", name];
    argv.extend_from_slice(args);
    let out = node.ctmgr(&argv);
    out.assert_success();
    let new: Vec<String> = snapshots(node, name)
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(new.len(), 1, "one new snapshot expected: {new:?}\n{out}");
    new[0].clone()
}

/// The snapshot names of container `name`, sorted.
fn snapshots(node: &Node, name: &str) -> Vec<String> {
    let out = node.ctmgr(&["--json", "snapshots", name]);
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("snapshots --json");
    let mut names: Vec<String> = v["snapshots"]
        .as_array()
        .expect("snapshots array")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    names
}

/// The LXC state of `name` in store1 (`lxc-info -s -H`).
fn lxc_state(node: &Node, name: &str) -> String {
    let out = node.cmd_timeout(&["lxc-info", "-n", name, "-P", LXCPATH, "-s", "-H"], Q);
    assert!(out.success(), "{out}");
    out.stdout.trim().to_string()
}

/// The state `ctmgr --json list` gives container `name`, with the run's output.
fn listed_state(node: &Node, name: &str) -> (String, Output) {
    let out = node.ctmgr(&["--json", "list"]);
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("list --json");
    let state = v["containers"]
        .as_array()
        .expect("containers array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {out}"))["state"]
        .as_str()
        .expect("state")
        .to_string();
    (state, out)
}

/// A PID that no process has (a child of this test, waited for).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = c.id();
    c.wait().expect("wait true");
    pid
}

// ---------------------------------------------------------------------------------------
// D9: a restore killed between its two renames.

/// Leaves container `web` exactly as `ctmgr restore web SNAP` leaves it when killed between
/// its two renames (`snapshot::restore` → `forward`): the safety snapshot taken, the intent
/// `.ctmgr-restoring` written, the restored copy `.ctmgr-restore-rootfs` made, the live
/// rootfs moved aside to `.ctmgr-old-rootfs`, and no `rootfs`. Returns the safety snapshot.
fn killed_between_renames(node: &Node, snap: &str) -> String {
    let safety = snapshot(
        node,
        "web",
        &[
            "--comment",
            &format!("safety snapshot before restoring {snap}"),
        ],
    );
    let intent = serde_json::json!({
        "snapshot": snap,
        "safety_snapshot": safety,
        "swapped": false,
    });
    node.write_file(
        &format!("{WEB}/.ctmgr-restoring"),
        serde_json::to_string_pretty(&intent).unwrap().as_bytes(),
    )
    .unwrap();
    node.cmd(&[
        "btrfs",
        "-q",
        "subvolume",
        "snapshot",
        &format!("{WEB}/snaps/{snap}/rootfs"),
        &format!("{WEB}/.ctmgr-restore-rootfs"),
    ])
    .assert_success();
    node.cmd(&[
        "mv",
        &format!("{WEB}/rootfs"),
        &format!("{WEB}/.ctmgr-old-rootfs"),
    ])
    .assert_success();
    assert!(!exists(node, &format!("{WEB}/rootfs")));
    safety
}

fn marker(node: &Node, rootfs: &str) -> String {
    node.read_file(&format!("{rootfs}/marker"))
        .unwrap_or_else(|e| panic!("no marker in {rootfs}: {e:#}"))
        .trim()
        .to_string()
}

fn set_marker(node: &Node, text: &str) {
    node.write_file(
        &format!("{WEB}/rootfs/marker"),
        format!("{text}\n").as_bytes(),
    )
    .unwrap();
}

/// No restore leftovers in web's directory.
#[track_caller]
fn assert_restore_done(node: &Node) {
    for left in [
        ".ctmgr-restoring",
        ".ctmgr-restore-rootfs",
        ".ctmgr-old-rootfs",
    ] {
        assert!(
            !exists(node, &format!("{WEB}/{left}")),
            "{left} left behind"
        );
    }
}

#[test]
fn lab_convergence_d9_restore_killed_between_renames_is_finished_by_a_rerun() {
    let lab = up();
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "web"]).assert_success();
    assert_never_double(&lab);
    set_marker(n1, "snap-A");
    let a = snapshot(n1, "web", &[]);
    assert_never_double(&lab);
    set_marker(n1, "live-B");

    let safety = killed_between_renames(n1, &a);
    assert_never_double(&lab);
    assert_eq!(snapshots(n1, "web"), {
        let mut v = vec![a.clone(), safety.clone()];
        v.sort();
        v
    });

    // What is pending is named, not "rootfs missing" or StatfsFailed.
    let doc = n1.ctmgr(&["doctor"]);
    assert!(!doc.success(), "{doc}");
    assert_mentions(&doc, &format!("rerun `ctmgr restore web {a}`"));
    let snap = n1.ctmgr(&["snapshot", "web"]);
    assert!(
        !snap.success(),
        "a snapshot of a half-restored container: {snap}"
    );
    assert_mentions(&snap, &format!("ctmgr restore web {a}"));
    assert_no_panic(&snap);
    assert_never_double(&lab);

    // The rerun finishes the restore: no second safety snapshot, the snapshot's content.
    let out = n1.ctmgr(&["restore", "web", &a]);
    out.assert_success();
    assert_mentions(&out, &format!("finished an interrupted restore from {a}"));
    assert_mentions(
        &out,
        &format!("safety snapshot of the previous state: {safety}"),
    );
    assert_never_double(&lab);
    assert_restore_done(n1);
    assert_eq!(marker(n1, &format!("{WEB}/rootfs")), "snap-A");
    assert_eq!(
        marker(n1, &format!("{WEB}/snaps/{safety}/rootfs")),
        "live-B",
        "the safety snapshot keeps the state before the restore"
    );
    let mut want = vec![a.clone(), safety.clone()];
    want.sort();
    assert_eq!(snapshots(n1, "web"), want, "no extra safety snapshot");

    // The container starts from the restored rootfs.
    n1.ctmgr(&["start", "web"]).assert_success();
    assert_never_double(&lab);
    assert_eq!(lxc_state(n1, "web"), "RUNNING");
    n1.ctmgr(&["stop", "web", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
    let doc = n1.ctmgr(&["--json", "doctor"]);
    assert!(
        !doc.stdout.contains("restore:web") && !doc.stdout.contains("was interrupted"),
        "doctor still reports the restore: {doc}"
    );
}

/// A rerun that names ANOTHER snapshot while a restore is pending: the pending one is
/// finished first (its safety snapshot keeps the state before it), then the new restore
/// runs as usual (with a safety snapshot of the finished one). Nothing is lost, the output
/// says both.
#[test]
fn lab_convergence_d9_rerun_with_another_snapshot_finishes_the_pending_one_first() {
    let lab = up();
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "web"]).assert_success();
    assert_never_double(&lab);
    set_marker(n1, "snap-A");
    let a = snapshot(n1, "web", &[]);
    set_marker(n1, "snap-B");
    let b = snapshot(n1, "web", &[]);
    set_marker(n1, "live-C");
    assert_never_double(&lab);

    let safety1 = killed_between_renames(n1, &a);
    assert_never_double(&lab);

    let out = n1.ctmgr(&["restore", "web", &b]);
    out.assert_success();
    assert_mentions(&out, &format!("finished an interrupted restore from {a}"));
    assert_mentions(&out, &format!("safety snapshot {safety1}"));
    assert_mentions(&out, &format!("restored web from snapshot {b}"));
    assert_never_double(&lab);
    assert_restore_done(n1);
    assert_eq!(marker(n1, &format!("{WEB}/rootfs")), "snap-B");
    assert_eq!(
        marker(n1, &format!("{WEB}/snaps/{safety1}/rootfs")),
        "live-C"
    );
    let all = snapshots(n1, "web");
    assert_eq!(all.len(), 4, "A, B, and two safety snapshots: {all:?}");
    let safety2 = all
        .iter()
        .find(|s| ![&a, &b, &safety1].contains(s))
        .expect("a second safety snapshot");
    assert_mentions(
        &out,
        &format!("safety snapshot of the previous state: {safety2}"),
    );
    assert_eq!(
        marker(n1, &format!("{WEB}/snaps/{safety2}/rootfs")),
        "snap-A",
        "the finished restore's state is kept too"
    );
    n1.ctmgr(&["start", "web"]).assert_success();
    assert_never_double(&lab);
    assert_eq!(lxc_state(n1, "web"), "RUNNING");
}

// ---------------------------------------------------------------------------------------
// D10: freezes left by a killed `snapshot --freeze`, and freezes an admin made.

/// Writes the record `snapshot --freeze` writes before it freezes (`freeze::record`), as
/// process `pid` started at `pid_start`.
fn write_freeze_record(node: &Node, name: &str, pid: u32, pid_start: u64) -> std::path::PathBuf {
    let r = ctmgr::freeze::Record {
        store: "store1".into(),
        lxcpath: LXCPATH.into(),
        name: name.into(),
        pid,
        pid_start,
        time: "2026-12-07T03:00:00Z".into(),
    };
    let dir = node.path_in("/run/ctmgr/frozen").unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("store1.{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    path
}

fn freeze(node: &Node, name: &str) {
    node.cmd_timeout(&["lxc-freeze", "-n", name, "-P", LXCPATH], Q)
        .assert_success();
    assert_eq!(lxc_state(node, name), "FROZEN");
}

#[test]
fn lab_convergence_d10_abandoned_freeze_is_thawed_an_admins_freeze_is_only_reported() {
    let lab = up();
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "web", "--start"]).assert_success();
    assert_never_double(&lab);

    // 1. Frozen by a `snapshot --freeze` that was killed: its record names a dead process.
    freeze(n1, "web");
    let record = write_freeze_record(n1, "web", dead_pid(), 4242);
    assert_never_double(&lab);
    let (state, out) = listed_state(n1, "web");
    assert_eq!(state, "RUNNING", "list did not thaw it: {out}");
    assert_mentions(&out, "thawed container web");
    assert_eq!(lxc_state(n1, "web"), "RUNNING");
    assert!(!record.exists(), "the record outlived the thaw");
    assert_never_double(&lab);

    // 2. A record whose process still runs belongs to a snapshot in progress: not thawed.
    freeze(n1, "web");
    let me = std::process::id();
    let record = write_freeze_record(n1, "web", me, ctmgr::freeze::process_start(me).unwrap());
    let (state, out) = listed_state(n1, "web");
    assert_eq!(state, "FROZEN", "{out}");
    assert!(record.exists());
    std::fs::remove_file(&record).unwrap();
    assert_never_double(&lab);

    // 3. Frozen by hand, no record: list leaves it FROZEN, doctor flags it.
    let (state, out) = listed_state(n1, "web");
    assert_eq!(state, "FROZEN", "list thawed an admin's freeze: {out}");
    assert!(!out.stderr.contains("thawed"), "{out}");
    let doc = n1.ctmgr(&["--json", "doctor"]);
    doc.assert_code(1);
    let v: serde_json::Value = serde_json::from_str(&doc.stdout).expect("doctor --json");
    assert_eq!(v["healthy"], false);
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "frozen:web")
        .unwrap_or_else(|| panic!("doctor does not flag the frozen container: {doc}"));
    assert_eq!(f["severity"], "warning", "{f}");
    assert!(
        f["fix"].as_str().unwrap().contains("lxc-unfreeze -n web"),
        "{f}"
    );
    assert_eq!(lxc_state(n1, "web"), "FROZEN", "doctor thawed it");
    let text = n1.ctmgr(&["doctor"]);
    text.assert_code(1);
    assert_mentions(&text, "container web is FROZEN");
    assert_never_double(&lab);

    // 4. snapshot --freeze leaves an admin's freeze as it found it.
    let snap = n1.ctmgr(&["snapshot", "web", "--freeze"]);
    snap.assert_success();
    assert_eq!(lxc_state(n1, "web"), "FROZEN");
    n1.cmd_timeout(&["lxc-unfreeze", "-n", "web", "-P", LXCPATH], Q)
        .assert_success();
    assert_never_double(&lab);

    // 5. A snapshot --freeze that runs to its end leaves no record and a RUNNING container.
    n1.ctmgr(&["snapshot", "web", "--freeze"]).assert_success();
    assert_eq!(lxc_state(n1, "web"), "RUNNING");
    let dir = n1.path_in("/run/ctmgr/frozen").unwrap();
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
    assert_never_double(&lab);
}

/// Starts `ctmgr ARGS` inside node `n` without waiting (nsenter execs it: the child's PID is
/// ctmgr's).
fn spawn_ctmgr(lab: &Lab, n: usize, args: &[&str]) -> std::process::Child {
    let ns = |kind: &str| {
        lab.layout()
            .ns_file(&format!("node{n}"), kind)
            .display()
            .to_string()
    };
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns("net")))
        .arg(format!("--mount={}", ns("mnt")))
        .arg(format!("--uts={}", ns("uts")))
        .args(["--wd=/", "--", "ctmgr"])
        .args(args)
        .env_clear()
        .env("PATH", ctmgr_tests::lab::NODE_PATH)
        .env("HOME", "/root")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn nsenter ctmgr")
}

/// Has someone asked the kernel to freeze the cgroup of process `pid`? cgroup v1: its
/// `freezer.state` is not THAWED; v2: `cgroup.freeze` is 1 on it or above.
fn freeze_requested(pid: u32) -> bool {
    let cg =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("the container's cgroup");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    if let Some(rel) = cg
        .lines()
        .find_map(|l| l.split_once(":freezer:").map(|x| x.1))
    {
        let p = std::path::Path::new("/sys/fs/cgroup/freezer").join(rel.trim_start_matches('/'));
        let st = read(p.join("freezer.state"));
        return !st.trim().is_empty() && st.trim() != "THAWED";
    }
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup line")
        .trim_start_matches('/');
    let root = std::path::Path::new("/sys/fs/cgroup");
    root.join(rel)
        .ancestors()
        .take_while(|p| *p != root)
        .any(|p| read(p.join("cgroup.freeze")).trim() == "1")
}

/// A real `kill -9` of `snapshot --freeze` while the container is FROZEN: the run is
/// stopped (SIGSTOP) as soon as its freeze record appears, let on in small steps until
/// it asked the kernel to freeze the container, then killed. An attempt whose run got past the thaw first is
/// repeated (a few at most); every attempt must end with the container RUNNING after
/// the next `list`, and no record left.
#[test]
fn lab_convergence_d10_kill9_of_snapshot_freeze_is_thawed_by_the_next_list() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let lab = up();
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "web", "--start"]).assert_success();
    assert_never_double(&lab);
    let record = n1.path_in("/run/ctmgr/frozen/store1.web.json").unwrap();
    let init: u32 = {
        let out = n1.ctmgr(&["--json", "list"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("list --json");
        v["containers"][0]["pid"].as_u64().expect("web's init pid") as u32
    };
    assert!(!freeze_requested(init));
    let mut caught = 0;
    for attempt in 1..=10 {
        let mut child = spawn_ctmgr(&lab, 1, &["snapshot", "web", "--freeze"]);
        let pid = Pid::from_raw(child.id() as i32);
        let mut frozen_when_killed = false;
        loop {
            if record.exists() {
                kill(pid, Signal::SIGSTOP).unwrap();
                // Stopped: look, then let it run a little until it froze or finished.
                let mut steps = 0;
                loop {
                    if !record.exists() {
                        break;
                    }
                    // Judged from the kernel (the container's cgroup.freeze), not by asking
                    // liblxc: its monitor may wait on the stopped run.
                    if freeze_requested(init) {
                        frozen_when_killed = true;
                        break;
                    }
                    steps += 1;
                    if steps > 200 {
                        break;
                    }
                    kill(pid, Signal::SIGCONT).unwrap();
                    std::thread::sleep(Duration::from_micros(500));
                    kill(pid, Signal::SIGSTOP).unwrap();
                }
                kill(pid, Signal::SIGKILL).unwrap();
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::yield_now();
        }
        let _ = child.wait();
        assert_never_double(&lab);
        if frozen_when_killed {
            caught += 1;
            let st = lxc_state(n1, "web");
            assert!(["FROZEN", "FREEZING"].contains(&st.as_str()), "{st}");
            assert!(
                record.exists(),
                "attempt {attempt}: no record of the freeze"
            );
        }
        let (state, out) = listed_state(n1, "web");
        assert_eq!(state, "RUNNING", "attempt {attempt}: {out}");
        if frozen_when_killed {
            assert_mentions(&out, "thawed container web");
        }
        assert!(!record.exists(), "attempt {attempt}: record left");
        assert_eq!(lxc_state(n1, "web"), "RUNNING");
        assert_never_double(&lab);
        eprintln!("attempt {attempt}: killed while frozen: {frozen_when_killed}");
        if caught >= 2 {
            break;
        }
    }
    assert!(
        caught >= 1,
        "no attempt caught the container FROZEN under a killed snapshot --freeze"
    );
}

// ---------------------------------------------------------------------------------------
// D13: durations out of range are usage errors (exit 2), never a panic (101).

#[test]
fn lab_convergence_d13_out_of_range_durations_are_usage_errors() {
    let lab = up();
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.ctmgr(&["create", "web", "--start"]).assert_success();
    assert_never_double(&lab);

    let bad = [
        "99999999999",
        "86401",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "abc",
        "1.5",
        "",
    ];
    for t in bad {
        let out = n1.ctmgr(&["stop", "web", "--timeout", t]);
        assert_no_panic(&out);
        out.assert_code(2);
        if !t.starts_with('-') {
            // clap reads `-1` as an unknown flag rather than a value.
            assert_mentions(&out, "--timeout");
        }
        assert_eq!(lxc_state(n1, "web"), "RUNNING", "stop --timeout {t:?}");
        assert_never_double(&lab);

        let out = n1.ctmgr(&["release", "store1", "--timeout", t]);
        assert_no_panic(&out);
        out.assert_code(2);
        assert_eq!(lxc_state(n1, "web"), "RUNNING", "release --timeout {t:?}");
        assert_never_double(&lab);

        let out = n2.ctmgr(&["migrate", "store1", "--timeout", t]);
        assert_no_panic(&out);
        out.assert_code(2);
        assert_eq!(lxc_state(n1, "web"), "RUNNING", "migrate --timeout {t:?}");
        assert_never_double(&lab);
    }

    // keep_within is the other duration a user writes: too large or malformed is named
    // (exit 2 for one container), never a panic, and nothing is deleted.
    snapshot(n1, "web", &[]);
    snapshot(n1, "web", &[]);
    let before = snapshots(n1, "web");
    let settings = n1.read_file(&format!("{WEB}/ctmgr.toml")).unwrap();
    for within in ["99999999999y", "4294967296h", "-1d", "abc", "1x", ""] {
        n1.write_file(
            &format!("{WEB}/ctmgr.toml"),
            format!("{settings}[snapshots]\nkeep_last = 1\nkeep_within = {within:?}\n").as_bytes(),
        )
        .unwrap();
        let out = n1.ctmgr(&["prune", "web"]);
        assert_no_panic(&out);
        out.assert_code(2);
        assert_mentions(&out, "keep_within");
        assert_eq!(snapshots(n1, "web"), before, "keep_within {within:?}");
        assert_never_double(&lab);
    }
    n1.write_file(&format!("{WEB}/ctmgr.toml"), settings.as_bytes())
        .unwrap();

    // --timeout 0: no grace beyond the one second liblxc needs, then the kill.
    n1.ctmgr(&["stop", "web", "--timeout", "0"])
        .assert_success();
    assert_eq!(lxc_state(n1, "web"), "STOPPED");
    assert_never_double(&lab);
    // The range's upper end is accepted (on the stopped container: busybox ignores the
    // halt signal, a running one would get the whole day).
    n1.ctmgr(&["stop", "web", "--timeout", "86400"])
        .assert_success();
    assert_eq!(lxc_state(n1, "web"), "STOPPED");
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// D20: one broken ctmgr.toml skips that container only.

/// Retention of 2 (every other rule off) in the container's own ctmgr.toml.
fn keep_two(node: &Node, name: &str) {
    let path = format!("{LXCPATH}/{name}/ctmgr.toml");
    let text = node.read_file(&path).unwrap();
    node.write_file(
        &path,
        format!(
            "{text}[snapshots]\nkeep_last = 2\nkeep_hourly = 0\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\nkeep_yearly = 0\n"
        )
        .as_bytes(),
    )
    .unwrap();
}

#[test]
fn lab_convergence_d20_one_broken_ctmgr_toml_does_not_stop_prune_all() {
    let lab = up();
    let n1 = lab.node(1);
    // The broken one, `a`, comes first: before the fix its error stopped the whole run.
    for c in ["a", "x", "y"] {
        n1.ctmgr(&["create", c]).assert_success();
        keep_two(n1, c);
    }
    n1.ctmgr(&["start", "x"]).assert_success();
    assert_never_double(&lab);
    for _ in 0..4 {
        n1.ctmgr(&["snapshot", "x", "y", "a"]).assert_success();
    }
    assert_never_double(&lab);
    let broken_before = snapshots(n1, "a");
    assert_eq!(broken_before.len(), 4);
    let broken_toml = format!("{LXCPATH}/a/ctmgr.toml");
    let good = n1.read_file(&broken_toml).unwrap();

    // (what, how to break it). An empty file counts as broken: ctmgr always writes one
    // with a `template` line, and its emptiness would silently fall back to the defaults.
    let breakers: [(&str, &str); 4] = [
        ("garbage", "printf 'keep_last = = [\\n' > F"),
        ("non-UTF-8", "printf 'template = \"\\377\\376\"\\n' > F"),
        ("empty", ": > F"),
        ("a directory", "rm -f F && mkdir F"),
    ];
    for (i, (what, script)) in breakers.iter().enumerate() {
        if i > 0 {
            for _ in 0..2 {
                n1.ctmgr(&["snapshot", "x", "y"]).assert_success();
            }
        }
        assert_eq!(snapshots(n1, "x").len(), 4);
        assert_eq!(snapshots(n1, "y").len(), 4);
        sh(n1, &script.replace('F', &broken_toml));
        let newest = |c: &str| -> Vec<String> {
            let all = snapshots(n1, c);
            all[all.len() - 2..].to_vec()
        };
        let (want_x, want_y) = (newest("x"), newest("y"));

        let out = n1.ctmgr(&["prune", "--all"]);
        assert_no_panic(&out);
        out.assert_code(1);
        assert_mentions(&out, &broken_toml);
        assert!(
            out.stderr.contains("a not pruned"),
            "{what}: the broken container is not named: {out}"
        );
        assert_eq!(snapshots(n1, "x"), want_x, "{what}: x pruned to its policy");
        assert_eq!(snapshots(n1, "y"), want_y, "{what}: y pruned to its policy");
        assert_eq!(
            snapshots(n1, "a"),
            broken_before,
            "{what}: the broken one's snapshots untouched"
        );
        assert_never_double(&lab);
        sh(n1, &format!("rm -rf {broken_toml}"));
        n1.write_file(&broken_toml, good.as_bytes()).unwrap();
    }
    // Fixed, a is pruned like the others.
    n1.ctmgr(&["prune", "--all"]).assert_success();
    assert_eq!(snapshots(n1, "a"), broken_before[2..].to_vec());
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// D16: one torn or non-UTF-8 journal line hides nothing after it.

#[test]
fn lab_convergence_d16_bad_journal_lines_hide_nothing() {
    let lab = up();
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "web", "--start"]).assert_success();
    assert_never_double(&lab);
    n1.ctmgr(&["release", "store1", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);

    let journal = n1.path_in("/var/lib/ctmgr/journal.jsonl").unwrap();
    let mut text = std::fs::read(&journal).expect("release journaled");
    let good = text.iter().filter(|b| **b == b'\n').count();
    assert!(good >= 1, "no journal entry after release");
    // A non-UTF-8 line, then a line torn by a crash (no newline).
    text.extend_from_slice(b"\xff\xfe not UTF-8 \xc3\x28\n");
    text.extend_from_slice(br#"{"time":"2026-12-07T03:00:00Z","node":"node1","act"#);
    std::fs::write(&journal, &text).unwrap();
    let (bad1, bad2) = (good + 1, good + 2);

    // A command that journals after the damage.
    n1.ctmgr(&["takeover", "store1"]).assert_success();
    assert_never_double(&lab);
    assert_eq!(lxc_state(n1, "web"), "RUNNING");

    // The torn line was ended before the new entry: the last line is whole.
    let after = std::fs::read(&journal).unwrap();
    let last = after
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap();
    let e: serde_json::Value = serde_json::from_slice(last).expect("the last line is JSON");
    assert_eq!(e["action"], "takeover");

    // status shows the takeover, and a warning names the journal and the bad lines.
    let out = n1.ctmgr(&["status"]);
    out.assert_success();
    assert_mentions(&out, "last takeover of store1 here: ok");
    assert!(
        out.stderr.contains(&journal_inside())
            && out.stderr.contains("unreadable")
            && out.stderr.contains(&format!("{bad1}, {bad2}")),
        "the warning names the journal and its bad lines {bad1}, {bad2}: {out}"
    );
    let json = n1.ctmgr(&["--json", "status"]);
    json.assert_success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let st = v["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "store1")
        .unwrap();
    assert_eq!(st["last_action"]["action"], "takeover", "{json}");
    assert_never_double(&lab);
}

fn journal_inside() -> String {
    "/var/lib/ctmgr/journal.jsonl".to_string()
}

// ---------------------------------------------------------------------------------------
// D15: temp files of interrupted atomic writes are swept; look-alikes are not.

/// Plants, in `dir` inside the node, the leftovers of writes to `file` killed before their
/// rename (ours, old, dead writer: both name forms) and files that only look like them.
/// Returns (ours that must go, the others that must stay).
fn plant(node: &Node, dir: &str, file: &str) -> (Vec<String>, Vec<String>) {
    let dead = dead_pid();
    let ours = vec![
        format!("{dir}/.{file}.ctmgr-tmp.{dead}.AbCdEf12"),
        format!("{dir}/.{file}.ctmgr-tmp.{dead}"),
    ];
    let old_foreign = vec![
        // Not ours: no leading dot, no PID, someone else's suffix.
        format!("{dir}/{file}.ctmgr-tmp.{dead}"),
        format!("{dir}/.{file}.ctmgr-tmp.notapid"),
        format!("{dir}/.{file}.swp"),
        // Ours, but its writer (PID 1) still lives.
        format!("{dir}/.{file}.ctmgr-tmp.1.Qq"),
    ];
    // Ours, dead writer, but too young to be judged abandoned.
    let young = format!("{dir}/.{file}.ctmgr-tmp.{dead}.Young1");
    for p in ours.iter().chain(&old_foreign) {
        node.write_file(p, b"half").unwrap();
        node.cmd(&["touch", "-d", "2 hours ago", p])
            .assert_success();
    }
    node.write_file(&young, b"half").unwrap();
    let mut keep = old_foreign;
    keep.push(young);
    (ours, keep)
}

#[track_caller]
fn assert_swept(node: &Node, what: &str, planted: &(Vec<String>, Vec<String>)) {
    for p in &planted.0 {
        assert!(!exists(node, p), "{what}: {p} was not swept");
    }
    for p in &planted.1 {
        assert!(exists(node, p), "{what}: {p} is not ours and was removed");
    }
}

#[test]
fn lab_convergence_d15_stale_temp_files_are_swept_foreign_ones_kept() {
    let lab = up();
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.ctmgr(&["create", "web"]).assert_success();
    n1.ctmgr(&["sync"]).assert_success();
    assert_never_double(&lab);
    let snap = snapshot(n1, "web", &[]);

    // Next to the container's own config: swept by the next write there (restore).
    let own = plant(n1, WEB, "config");
    n1.ctmgr(&["restore", "web", &snap]).assert_success();
    assert_never_double(&lab);
    assert_swept(n1, "container dir", &own);

    // Next to the replica on the peer and in the sync state dir: swept by the next sync
    // that writes there.
    let replica = plant(n2, "/srv/store2/containers/web", "config");
    let state = plant(n1, "/var/lib/ctmgr/sync", "store1.json");
    let copies = plant(n1, "/var/lib/ctmgr/sync/store1/web", "config");
    sh(n1, &format!("echo '# touched by the test' >> {WEB}/config"));
    n1.ctmgr(&["sync"]).assert_success();
    assert_never_double(&lab);
    assert_swept(n2, "replica dir", &replica);
    assert_swept(n1, "sync state dir", &state);
    assert_swept(n1, "sync copies dir", &copies);
    assert!(n2
        .read_file("/srv/store2/containers/web/config")
        .unwrap()
        .contains("# touched by the test"));
    n1.ctmgr(&["start", "web"]).assert_success();
    assert_never_double(&lab);
}
