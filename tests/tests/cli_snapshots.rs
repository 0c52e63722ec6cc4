//! End-to-end tests of `ctmgr snapshot`, `snapshots`, `prune` and `restore` on the one-node
//! sandbox, with LXC's and Btrfs's own tools as witnesses. These need root and the workspace
//! binaries (`cargo build --workspace --bins`).
#![forbid(unsafe_code)]

use ctmgr_tests::helpers::listed;
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use serde_json::Value;

const LXCPATH: &str = "/srv/store1/containers";
const WEB: &str = "/srv/store1/containers/web";
const SNAPS: &str = "/srv/store1/containers/web/snaps";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(1), &bins).expect("sandbox up")
}

/// `ls -A DIR`, sorted.
fn ls(n: &Node, dir: &str) -> Vec<String> {
    let out = n.cmd(&["ls", "-A", dir]);
    out.assert_success();
    let mut v: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// `ctmgr --json snapshots ARGS`: the snapshots array.
#[track_caller]
fn snapshots(n: &Node, args: &[&str]) -> Vec<Value> {
    let mut argv = vec!["--json", "snapshots"];
    argv.extend_from_slice(args);
    let out = n.ctmgr(&argv);
    out.assert_success();
    out.json()["snapshots"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no snapshots array: {out}"))
}

/// Takes a snapshot of `name` and returns its name, found as the one new entry in snaps/.
#[track_caller]
fn snapshot(n: &Node, name: &str, extra: &[&str]) -> String {
    let dir = format!("{LXCPATH}/{name}/snaps");
    let before = if n.cmd(&["test", "-d", &dir]).success() {
        ls(n, &dir)
    } else {
        Vec::new()
    };
    let mut argv = vec!["snapshot", name];
    argv.extend_from_slice(extra);
    let out = n.ctmgr(&argv);
    out.assert_success();
    let new: Vec<String> = ls(n, &dir)
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(new.len(), 1, "one new snapshot expected: {new:?} {out}");
    new[0].clone()
}

/// A copy of the node's cluster.toml with `section` appended, written to `path` in the node.
fn config_with(n: &Node, path: &str, section: &str) {
    let mut text = n.read_file("/etc/ctmgr/cluster.toml").unwrap();
    text.push('\n');
    text.push_str(section);
    n.write_file(path, text.as_bytes()).unwrap();
}

const KEEP_LAST_2: &str = "[snapshots]\nkeep_last = 2\nkeep_hourly = 0\nkeep_daily = 0\n\
                           keep_weekly = 0\nkeep_monthly = 0\nkeep_yearly = 0\n";
const KEEP_LAST_1: &str = "[snapshots]\nkeep_last = 1\nkeep_hourly = 0\nkeep_daily = 0\n\
                           keep_weekly = 0\nkeep_monthly = 0\nkeep_yearly = 0\n";
const KEEP_NOTHING: &str = "[snapshots]\nkeep_last = 0\nkeep_hourly = 0\nkeep_daily = 0\n\
                            keep_weekly = 0\nkeep_monthly = 0\nkeep_yearly = 0\n";

#[test]
fn snapshot_running_container_freeze_all_and_restore() {
    let lab = up();
    let n = lab.node(1);
    n.ctmgr(&["create", "web", "--template", "busybox"])
        .assert_success();
    n.ctmgr(&["create", "db"]).assert_success();
    n.ctmgr(&["start", "web"]).assert_success();
    let pid = listed(n, "web")["pid"].as_u64();
    assert!(pid.is_some(), "web has a pid");

    // A running container is snapshotted and keeps running.
    let snap = snapshot(n, "web", &["--comment", "c1"]);
    let web = listed(n, "web");
    assert_eq!(web["state"], "RUNNING", "{web}");
    assert_eq!(web["pid"].as_u64(), pid, "web was restarted: {web}");

    let out = n.ctmgr(&["snapshots", "web"]);
    out.assert_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(&snap) && l.contains("c1") && !l.contains("DAMAGED")),
        "{out}"
    );
    let list = snapshots(n, &["web"]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["container"], "web");
    assert_eq!(list[0]["name"], snap.as_str());
    assert_eq!(list[0]["comment"], "c1");
    assert_eq!(list[0]["read_only"], true);
    assert!(list[0]["damaged"].is_null(), "{list:?}");
    assert!(list[0]["time"].as_str().unwrap_or("").ends_with('Z'));
    // LXC's layout: lxc-snapshot lists it; btrfs send takes its rootfs.
    let sdir = format!("{SNAPS}/{snap}");
    for f in ["config", "fstab", "ts", "comment"] {
        n.cmd(&["test", "-f", &format!("{sdir}/{f}")])
            .assert_success();
    }
    let lxc = n.cmd(&["lxc-snapshot", "-L", "-n", "web", "-P", LXCPATH]);
    lxc.assert_success();
    assert!(lxc.stdout.contains(&snap), "{lxc}");
    let rootfs = format!("{sdir}/rootfs");
    n.cmd(&["btrfs", "send", "-q", "-f", "/root/x.send", &rootfs])
        .assert_success();
    n.cmd(&["test", "-s", "/root/x.send"]).assert_success();
    // Its config points into the snapshot and keeps the guard.
    let cfg = n.read_file(&format!("{sdir}/config")).unwrap();
    assert!(cfg.contains(&format!("btrfs:{rootfs}")), "{cfg}");
    assert!(cfg.contains("ctmgr-guard --store store1"), "{cfg}");

    // --freeze: the container is RUNNING (not FROZEN) afterwards.
    let frozen = snapshot(n, "web", &["--freeze"]);
    let web = listed(n, "web");
    assert_eq!(web["state"], "RUNNING", "{web}");
    assert_eq!(web["pid"].as_u64(), pid, "{web}");
    let info = n.cmd(&["lxc-info", "-s", "-n", "web", "-P", LXCPATH]);
    assert!(info.stdout.contains("RUNNING"), "{info}");

    // --all: every container, running or not.
    let before_web = ls(n, SNAPS);
    let out = n.ctmgr(&["snapshot", "--all"]);
    out.assert_success();
    assert_eq!(ls(n, SNAPS).len(), before_web.len() + 1, "{out}");
    assert_eq!(ls(n, "/srv/store1/containers/db/snaps").len(), 1, "{out}");
    let all = snapshots(n, &[]);
    assert_eq!(all.iter().filter(|s| s["container"] == "db").count(), 1);
    assert_eq!(all.iter().filter(|s| s["container"] == "web").count(), 3);
    assert!(all.iter().any(|s| s["name"] == frozen.as_str()));

    // Restore: a file written, snapshotted, deleted, brought back.
    n.write_file(&format!("{WEB}/rootfs/root/f"), b"precious\n")
        .unwrap();
    let good = snapshot(n, "web", &[]);
    n.cmd(&["rm", &format!("{WEB}/rootfs/root/f")])
        .assert_success();
    let before = ls(n, SNAPS);
    let count = before.len();
    let out = n.ctmgr(&["restore", "web", &good]);
    out.assert_code(3);
    assert!(out.stderr.contains("RUNNING"), "{out}");
    assert_eq!(
        ls(n, SNAPS).len(),
        count,
        "a refused restore took a snapshot"
    );
    assert_eq!(listed(n, "web")["state"], "RUNNING");

    n.ctmgr(&["stop", "--timeout", "1", "web"]).assert_success();
    let out = n.ctmgr(&["restore", "web", &good]);
    out.assert_success();
    assert_eq!(
        n.read_file(&format!("{WEB}/rootfs/root/f")).unwrap(),
        "precious\n"
    );
    let after = ls(n, SNAPS);
    assert_eq!(after.len(), count + 1, "{out}");
    let safety = after
        .iter()
        .find(|s| !before.contains(s))
        .unwrap_or_else(|| panic!("no safety snapshot in {after:?}: {out}"));
    assert!(
        out.stdout.contains(safety.as_str()),
        "the output names the safety snapshot {safety}: {out}"
    );
    let list = snapshots(n, &["web"]);
    assert!(
        list.iter()
            .any(|s| s["name"] == safety.as_str() && s["damaged"].is_null()),
        "{list:?}"
    );
    // The safety snapshot holds the state before the restore: no file.
    n.cmd(&["test", "-e", &format!("{SNAPS}/{safety}/rootfs/root/f")])
        .assert_code(1);
    // The restored container is a working one: writable rootfs, starts.
    n.cmd(&["btrfs", "subvolume", "show", &format!("{WEB}/rootfs")])
        .assert_success();
    let ro = n.cmd(&["btrfs", "property", "get", &format!("{WEB}/rootfs"), "ro"]);
    assert_eq!(ro.stdout.trim(), "ro=false", "{ro}");
    let cfg = n.read_file(&format!("{WEB}/config")).unwrap();
    assert!(cfg.contains(&format!("btrfs:{WEB}/rootfs")), "{cfg}");
    n.ctmgr(&["start", "web"]).assert_success();
    assert_eq!(listed(n, "web")["state"], "RUNNING");

    // Bad input.
    let out = n.ctmgr(&["restore", "web", "nosuch"]);
    out.assert_code(2);
    assert!(out.stderr.contains("nosuch"), "{out}");
    n.ctmgr(&["stop", "--timeout", "1", "web"]).assert_success();
    let count = ls(n, SNAPS).len();
    for bad in ["nosuch", "../x", "a/b"] {
        n.ctmgr(&["restore", "web", bad]).assert_code(2);
    }
    assert_eq!(ls(n, SNAPS).len(), count);
    for args in [
        &["snapshot", "nosuch"][..],
        &["snapshots", "nosuch"],
        &["prune", "nosuch"],
        &["restore", "nosuch", &good],
        &["snapshot", "--", "../x"],
    ] {
        let out = n.ctmgr(args);
        out.assert_code(2);
        assert!(out.stderr.contains("ctmgr: error:"), "{out}");
    }
    n.ctmgr(&["snapshot"]).assert_code(2);
    n.ctmgr(&["snapshot", "--all", "web"]).assert_code(2);
    n.ctmgr(&["prune"]).assert_code(2);
}

#[test]
fn prune_policy_damage_and_leftovers() {
    let lab = up();
    let n = lab.node(1);
    n.ctmgr(&["create", "web"]).assert_success();
    config_with(n, "/root/keep2.toml", KEEP_LAST_2);
    let k2 = ["--config", "/root/keep2.toml"];

    // Four snapshots (same-second ones get -1, -2 suffixes).
    let mut taken = Vec::new();
    for _ in 0..4 {
        taken.push(snapshot(n, "web", &[]));
    }
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 4, "{taken:?}");

    // --dry-run: keep/delete and the rule for each, nothing deleted.
    let out = n.ctmgr(&[k2[0], k2[1], "prune", "--dry-run", "web"]);
    out.assert_success();
    // CONTAINER SNAPSHOT ACTION KEPT-BY…
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 3 && taken.iter().any(|s| s == f[1]))
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    let keep: Vec<&Vec<&str>> = rows.iter().filter(|f| f[2] == "keep").collect();
    assert_eq!(keep.len(), 2, "{out}");
    assert_eq!(rows.iter().filter(|f| f[2] == "delete").count(), 2, "{out}");
    assert!(
        keep.iter().all(|f| f[3..].join(" ").contains("last")),
        "{out}"
    );
    assert_eq!(
        keep.iter()
            .filter(|f| f[3..].join(" ").contains("newest"))
            .count(),
        1,
        "{out}"
    );
    assert!(
        rows.iter()
            .filter(|f| f[2] == "delete")
            .all(|f| f.len() == 3),
        "a deleted snapshot has no rule: {out}"
    );
    assert_eq!(ls(n, SNAPS), taken, "--dry-run deleted something");

    let out = n.ctmgr(&[k2[0], k2[1], "--json", "prune", "--dry-run", "web"]);
    out.assert_success();
    let plan = out.json();
    assert_eq!(plan["dry_run"], true, "{out}");
    let decisions = plan["decisions"].as_array().cloned().unwrap_or_default();
    assert_eq!(decisions.len(), 4, "{out}");
    let kept: Vec<&Value> = decisions.iter().filter(|d| d["keep"] == true).collect();
    assert_eq!(kept.len(), 2, "{out}");
    for d in &kept {
        let reasons = d["reasons"].as_array().cloned().unwrap_or_default();
        assert!(reasons.iter().any(|r| r == "last"), "{out}");
    }
    assert_eq!(ls(n, SNAPS), taken);

    // prune: deletes 2, leaves 2; a rerun deletes nothing.
    let out = n.ctmgr(&[k2[0], k2[1], "prune", "web"]);
    out.assert_success();
    let left = ls(n, SNAPS);
    assert_eq!(left.len(), 2, "{out}");
    let listed: Vec<String> = snapshots(n, &["web"])
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, left, "{listed:?}");
    let subs = n.cmd(&["btrfs", "subvolume", "list", "/srv/store1"]);
    assert_eq!(
        subs.stdout.matches("containers/web/snaps/").count(),
        2,
        "{subs}"
    );
    n.ctmgr(&[k2[0], k2[1], "prune", "web"]).assert_success();
    assert_eq!(ls(n, SNAPS), left, "a rerun of prune deleted more");

    // Policies that are errors: exit 2, nothing deleted.
    config_with(n, "/root/keep0.toml", KEEP_NOTHING);
    let out = n.ctmgr(&["--config", "/root/keep0.toml", "prune", "web"]);
    out.assert_code(2);
    assert!(out.stderr.contains("/root/keep0.toml:"), "{out}");
    assert!(out.stderr.contains("keeps nothing"), "{out}");
    config_with(n, "/root/minus2.toml", "[snapshots]\nkeep_daily = -2\n");
    let out = n.ctmgr(&["--config", "/root/minus2.toml", "prune", "web"]);
    out.assert_code(2);
    assert!(out.stderr.contains("keep_daily"), "{out}");
    assert!(out.stderr.contains("/root/minus2.toml:"), "{out}");
    config_with(n, "/root/unknown.toml", "[snapshots]\nkeep_forever = 1\n");
    let out = n.ctmgr(&["--config", "/root/unknown.toml", "prune", "web"]);
    out.assert_code(2);
    assert!(out.stderr.contains("keep_forever"), "{out}");
    assert_eq!(ls(n, SNAPS), left);

    // Damaged snapshot directories: listed as DAMAGED, never crash a listing, left alone.
    n.cmd(&["mkdir", &format!("{SNAPS}/broken")])
        .assert_success();
    n.cmd(&["mkdir", "-p", &format!("{SNAPS}/plain/rootfs")])
        .assert_success();
    n.cmd(&[
        "cp",
        &format!("{WEB}/config"),
        &format!("{SNAPS}/plain/config"),
    ])
    .assert_success();
    let out = n.ctmgr(&["snapshots", "web"]);
    out.assert_success();
    for bad in ["broken", "plain"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains(bad) && l.contains("DAMAGED")),
            "{out}"
        );
    }
    let list = snapshots(n, &["web"]);
    assert_eq!(list.len(), 4, "{list:?}");
    for bad in ["broken", "plain"] {
        let s = list.iter().find(|s| s["name"] == bad).unwrap();
        assert!(
            s["damaged"].as_str().unwrap_or("").contains("missing ts"),
            "{s}"
        );
    }
    let plain = list.iter().find(|s| s["name"] == "plain").unwrap();
    assert!(
        plain["damaged"]
            .as_str()
            .unwrap_or("")
            .contains("not a Btrfs subvolume"),
        "{plain}"
    );
    for good in &left {
        let s = list.iter().find(|s| s["name"] == good.as_str()).unwrap();
        assert!(s["damaged"].is_null(), "{s}");
    }
    // Listing all containers copes too.
    n.ctmgr(&["snapshots"]).assert_success();
    let lxc = n.cmd(&["lxc-snapshot", "-L", "-n", "web", "-P", LXCPATH]);
    lxc.assert_success();
    for good in &left {
        assert!(lxc.stdout.contains(good.as_str()), "{lxc}");
    }
    // A restore from a damaged snapshot is refused and changes nothing.
    let before = ls(n, SNAPS);
    let out = n.ctmgr(&["restore", "web", "broken"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("damaged"), "{out}");
    assert_eq!(ls(n, SNAPS), before);
    n.cmd(&["btrfs", "subvolume", "show", &format!("{WEB}/rootfs")])
        .assert_success();

    let out = n.ctmgr(&[k2[0], k2[1], "prune", "web"]);
    out.assert_success();
    for bad in ["broken", "plain"] {
        assert!(
            out.stderr.contains(bad) && out.stderr.contains("damaged"),
            "prune warns about {bad}: {out}"
        );
    }
    assert_eq!(ls(n, SNAPS), before, "prune touched a damaged snapshot");
    n.cmd(&[
        "rm",
        "-r",
        &format!("{SNAPS}/broken"),
        &format!("{SNAPS}/plain"),
    ])
    .assert_success();

    // Crash leftovers: never listed; the next prune removes them, and so does the next snapshot.
    let leftovers = |n: &Node| {
        n.cmd(&["mkdir", "-p", &format!("{WEB}/.ctmgr-partial-x/rootfs")])
            .assert_success();
        n.cmd(&["mkdir", "-p", &format!("{WEB}/.ctmgr-deleting-y")])
            .assert_success();
        n.cmd(&[
            "btrfs",
            "subvolume",
            "create",
            &format!("{WEB}/.ctmgr-partial-z"),
        ])
        .assert_success();
    };
    let clean = ls(n, WEB);
    leftovers(n);
    let out = n.ctmgr(&["snapshots", "web"]);
    out.assert_success();
    assert!(!out.stdout.contains(".ctmgr-"), "{out}");
    assert_eq!(snapshots(n, &["web"]).len(), 2);
    let lxc = n.cmd(&["lxc-snapshot", "-L", "-n", "web", "-P", LXCPATH]);
    lxc.assert_success();
    assert!(!lxc.stdout.contains(".ctmgr-"), "{lxc}");
    n.ctmgr(&[k2[0], k2[1], "prune", "web"]).assert_success();
    assert_eq!(ls(n, WEB), clean, "prune left crash leftovers");
    assert_eq!(ls(n, SNAPS), left);

    leftovers(n);
    snapshot(n, "web", &[]);
    assert_eq!(ls(n, WEB), clean, "snapshot left crash leftovers");
    let subs = n.cmd(&["btrfs", "subvolume", "list", "/srv/store1"]);
    assert!(!subs.stdout.contains(".ctmgr-"), "{subs}");

    // -q: a scheduled run prints nothing when all is well.
    let out = n.ctmgr(&["-q", "snapshot", "web"]);
    out.assert_success();
    assert_eq!(format!("{}{}", out.stdout, out.stderr), "", "{out}");
    let out = n.ctmgr(&[k2[0], k2[1], "-q", "prune", "web"]);
    out.assert_success();
    assert_eq!(format!("{}{}", out.stdout, out.stderr), "", "{out}");
    assert_eq!(ls(n, SNAPS).len(), 2);
}

/// Two snapshots taken in one second are named `T` and `T-1`: `T-1` is the newer one, and
/// `ctmgr snapshots` lists it first. Prune must agree and never delete it (safety rule 6).
#[test]
fn prune_keeps_the_newest_of_snapshots_taken_in_one_second() {
    let lab = up();
    let n = lab.node(1);
    n.ctmgr(&["create", "web"]).assert_success();
    config_with(n, "/root/keep1.toml", KEEP_LAST_1);
    // Two snapshots as if taken within one second (renamed: the clock is not ours to set).
    let first = snapshot(n, "web", &[]);
    n.cmd(&[
        "mv",
        &format!("{SNAPS}/{first}"),
        &format!("{SNAPS}/20200101T000000Z"),
    ])
    .assert_success();
    let second = snapshot(n, "web", &[]);
    n.cmd(&[
        "mv",
        &format!("{SNAPS}/{second}"),
        &format!("{SNAPS}/20200101T000000Z-1"),
    ])
    .assert_success();

    let list = snapshots(n, &["web"]);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(
        list[0]["name"], "20200101T000000Z-1",
        "newest first: {list:?}"
    );

    let out = n.ctmgr(&[
        "--config",
        "/root/keep1.toml",
        "--json",
        "prune",
        "--dry-run",
        "web",
    ]);
    out.assert_success();
    let plan = out.json();
    let kept: Vec<&str> = plan["decisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["keep"] == true)
                .filter_map(|d| d["snapshot"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        kept,
        vec!["20200101T000000Z-1"],
        "prune would delete the snapshot taken last: {out}"
    );
    n.ctmgr(&["--config", "/root/keep1.toml", "prune", "web"])
        .assert_success();
    assert_eq!(ls(n, SNAPS), vec!["20200101T000000Z-1".to_string()]);
}

/// DESIGN.md §3 and docs/snapshots.md: ctmgr "stays quiet under cron (`-q`, or no TTY)" and
/// "prints nothing unless something fails"; contrib/cron.d/ctmgr relies on it. The lab runs
/// commands with no TTY (stdin /dev/null, stdout and stderr files).
#[test]
fn snapshot_is_quiet_without_a_tty() {
    let lab = up();
    let n = lab.node(1);
    n.ctmgr(&["create", "web"]).assert_success();
    let out = n.ctmgr(&["snapshot", "--all"]);
    out.assert_success();
    assert_eq!(ls(n, SNAPS).len(), 1);
    assert_eq!(
        format!("{}{}", out.stdout, out.stderr),
        "",
        "a successful snapshot without a TTY printed something: {out}"
    );
}
