//! Failover in the two-node lab, fault by fault: `takeover`, `release` and `migrate` against
//! a live peer, a crashed peer, a cut link, stale disks, a damaged filesystem, a broken
//! container, kills at every step, a held lock and a busy mount; and the pre-start guard
//! against a plain `lxc-start` on the node that does not hold the store.
//!
//! Every test asserts the exit code, the check or message that explains it, and the state on
//! BOTH nodes afterwards (DRBD roles, mounts, running containers), then the invariant
//! [`assert_never_double`]. No timing thresholds: every wait polls a condition under a
//! generous deadline. These need root and the workspace binaries
//! (`cargo build --workspace --bins`).
#![forbid(unsafe_code)]

use std::time::Duration;

use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use ctmgr_tests::run::wait_until;
use ctmgr_tests::Output;

/// The lab's stores: (store, DRBD resource, mountpoint, home node).
const STORES: [(&str, &str, &str, usize); 2] = [
    ("store1", "r0", "/srv/store1", 1),
    ("store2", "r1", "/srv/store2", 2),
];

/// Deadline for one state query inside a node.
const Q: Duration = Duration::from_secs(30);

/// Deadline for polling a condition (never reached when things work).
const POLL: Duration = Duration::from_secs(30);

/// `--timeout` for release and migrate: the lab's busybox containers never finish their
/// boot script (udhcpc finds no DHCP server), so busybox init ignores the halt signal and
/// every clean shutdown would wait the whole timeout before the kill.
const STOP_SECS: &str = "1";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

fn store_info(store: &str) -> (&'static str, &'static str, &'static str, usize) {
    *STORES
        .iter()
        .find(|s| s.0 == store)
        .unwrap_or_else(|| panic!("no store {store} in the lab"))
}

fn lxcpath(store: &str) -> String {
    format!("{}/containers", store_info(store).2)
}

fn crashed(lab: &Lab) -> Vec<usize> {
    lab.state().expect("lab state").crashed
}

use ctmgr_tests::invariants::{mounted, role};

#[track_caller]
fn assert_role(lab: &Lab, n: usize, res: &str, want: &str) {
    let got = role(lab.node(n), res);
    assert_eq!(
        got.as_deref(),
        Some(want),
        "node{n} role of {res}\n{}",
        lab.status()
    );
}

/// Names of the containers running inside the node from `lxcpath`, sorted.
fn running_in(node: &Node, lxcpath: &str) -> Vec<String> {
    let out = node.cmd_timeout(&["lxc-ls", "--running", "-1", "-P", lxcpath], Q);
    assert!(out.success(), "{out}");
    let mut v: Vec<String> = out.stdout.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

/// Containers of `store` running on node `n`.
fn running(lab: &Lab, n: usize, store: &str) -> Vec<String> {
    running_in(lab.node(n), &lxcpath(store))
}

/// The shared invariants ([`ctmgr_tests::invariants::assert_never_double`]: one Primary,
/// one mount, one instance of each rootfs) plus, by name, never one container running on
/// both nodes (names are unique across the lab's stores in these tests).
#[track_caller]
fn assert_never_double(lab: &Lab) {
    ctmgr_tests::invariants::assert_never_double(lab);
    let on = |n: usize| -> Vec<String> {
        let mut v: Vec<String> = STORES
            .iter()
            .flat_map(|(s, ..)| running(lab, n, s))
            .collect();
        v.sort();
        v
    };
    let (one, two) = (on(1), on(2));
    let both: Vec<&String> = one.iter().filter(|c| two.contains(c)).collect();
    assert!(
        both.is_empty(),
        "containers {both:?} run on both nodes (node1 {one:?}, node2 {two:?})\n{}",
        lab.status()
    );
}

/// Node `n` holds `store`: Primary, mounted, and the other node neither (when it is up).
#[track_caller]
fn assert_holds(lab: &Lab, n: usize, store: &str) {
    let (_, res, mp, _) = store_info(store);
    assert_role(lab, n, res, "Primary");
    assert!(mounted(lab.node(n), mp), "{store} not mounted on node{n}");
    let other = 3 - n;
    assert!(
        !mounted(lab.node(other), mp),
        "{store} also mounted on node{other}"
    );
    if !crashed(lab).contains(&other) {
        assert_role(lab, other, res, "Secondary");
    }
    assert!(
        running(lab, other, store).is_empty(),
        "containers of {store} run on node{other}"
    );
}

/// Node `n` does not have `store`: Secondary (when up), not mounted, none of its containers.
#[track_caller]
fn assert_not_here(lab: &Lab, n: usize, store: &str) {
    let (_, res, mp, _) = store_info(store);
    if !crashed(lab).contains(&n) {
        assert_role(lab, n, res, "Secondary");
    }
    assert!(!mounted(lab.node(n), mp), "{store} mounted on node{n}");
    assert!(
        running(lab, n, store).is_empty(),
        "containers of {store} run on node{n}"
    );
}

#[track_caller]
fn assert_mentions(out: &Output, what: &str) {
    assert!(
        out.stdout.contains(what) || out.stderr.contains(what),
        "expected {what:?} in the output of {out}"
    );
}

/// `ctmgr create NAME --start` on node `n` (busybox, offline).
#[track_caller]
fn create_started(lab: &Lab, n: usize, names: &[&str]) {
    for name in names {
        lab.node(n)
            .ctmgr(&["create", name, "--start"])
            .assert_success();
    }
}

/// The last journal entry of node `n` (`/var/lib/ctmgr/journal.jsonl`).
fn last_journal(lab: &Lab, n: usize) -> serde_json::Value {
    let path = lab
        .node(n)
        .path_in("/var/lib/ctmgr/journal.jsonl")
        .expect("journal path");
    let text = std::fs::read_to_string(&path).expect("reading the journal");
    let last = text.lines().last().expect("the journal has an entry");
    serde_json::from_str(last).expect("journal line is JSON")
}

/// The lines of the `containers:` section of a takeover's stdout.
fn container_lines(out: &Output) -> Vec<String> {
    out.stdout
        .lines()
        .skip_while(|l| l.trim() != "containers:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The outcome word of container `name` in a takeover's `containers:` section.
#[track_caller]
fn outcome_of(out: &Output, name: &str) -> String {
    container_lines(out)
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.nth(2).unwrap_or_default().to_string())
        })
        .unwrap_or_else(|| panic!("container {name} not listed in {out}"))
}

/// The outcome of timeline step `step` in a command's stdout (`  12 ms  promote  done …`).
#[track_caller]
fn step_outcome(out: &Output, step: &str) -> String {
    out.stdout
        .lines()
        .skip_while(|l| l.trim() != "timeline:")
        .skip(1)
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 4 && w[1] == "ms" && w[2] == step).then(|| w[3].to_string())
        })
        .unwrap_or_else(|| panic!("no step {step} in the timeline of {out}"))
}

// ---------------------------------------------------------------------------------------
// 1. Rule 1 is absolute: never promote while the peer is connected and Primary.

#[test]
fn lab_takeover_refused_while_peer_primary_and_connected() {
    let lab = up();
    create_started(&lab, 1, &["web", "db"]);
    let n2 = lab.node(2);

    for args in [
        &["takeover", "store1"][..],
        &["takeover", "store1", "--force"],
        &["takeover", "store1", "--dry-run"],
        &["takeover", "store1", "--dry-run", "--force"],
    ] {
        let out = n2.ctmgr(args);
        out.assert_code(3);
        assert_mentions(&out, "peer-primary");
        assert!(out.stdout.contains("[refuse] peer-primary"), "{out}");
        if args.contains(&"--dry-run") {
            assert!(out.stdout.contains("plan:"), "{out}");
            assert!(out.stdout.contains("promote  drbdadm primary r0"), "{out}");
            // node2 cannot see the store's containers before it is mounted there.
            assert!(
                out.stdout
                    .contains("the containers found on the store once mounted"),
                "{out}"
            );
            assert!(out.stdout.contains("dry run: nothing changed"), "{out}");
        } else {
            assert!(out.stderr.contains("ctmgr migrate store1"), "{out}");
            assert!(!out.stdout.contains("timeline:"), "no step ran: {out}");
            let j = last_journal(&lab, 2);
            assert_eq!(j["outcome"], "refused", "{j}");
            assert_eq!(j["refused_by"], "peer-primary", "{j}");
        }
        // Nothing changed, on either node.
        assert_holds(&lab, 1, "store1");
        assert_eq!(running(&lab, 1, "store1"), ["db", "web"]);
        assert_not_here(&lab, 2, "store1");
        assert_holds(&lab, 2, "store2");
        assert_never_double(&lab);
    }
    let status = n2.ctmgr(&["status"]);
    status.assert_success();
    assert!(
        status.stdout.contains("refused by peer-primary"),
        "{status}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. The peer crashed: the takeover finds the evidence, promotes, mounts, starts the set in
//    start order; a rerun says `already`; the revived peer stays out.

#[test]
fn lab_takeover_after_peer_crash() {
    let lab = up();
    create_started(&lab, 1, &["web", "db", "app"]);
    // app starts first on the new holder: a lower lxc.start.order.
    lab.node(1)
        .cmd(&[
            "sed",
            "-i",
            "s/^lxc.start.order = .*/lxc.start.order = 10/",
            "/srv/store1/containers/app/config",
        ])
        .assert_success();
    lab.crash(1);
    assert_never_double(&lab);

    let n2 = lab.node(2);
    let dry = n2.ctmgr(&["takeover", "store1", "--dry-run"]);
    dry.assert_success();
    assert!(dry.stdout.contains("dry run: nothing changed"), "{dry}");
    assert_not_here(&lab, 2, "store1");

    let out = n2.ctmgr(&["takeover", "store1"]);
    out.assert_success();
    for check in ["[ok    ] peer-down", "[ok    ] local-disk", "peer-probe"] {
        assert!(out.stdout.contains(check), "{check}: {out}");
    }
    for step in ["preflight", "promote", "mount", "start"] {
        assert_eq!(step_outcome(&out, step), "done", "{step}: {out}");
    }
    assert!(out.stdout.contains("first-container"), "{out}");
    assert!(out.stdout.contains(" ms  total"), "{out}");
    let lines = container_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("app ") && lines[0].contains("order 10"),
        "{out}"
    );
    for c in ["app", "db", "web"] {
        assert_eq!(outcome_of(&out, c), "started", "{out}");
    }
    assert_holds(&lab, 2, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["app", "db", "web"]);
    assert_never_double(&lab);

    // A rerun changes nothing and says so.
    let again = n2.ctmgr(&["takeover", "store1"]);
    again.assert_success();
    assert_eq!(step_outcome(&again, "promote"), "already", "{again}");
    assert_eq!(step_outcome(&again, "mount"), "already", "{again}");
    for c in ["app", "db", "web"] {
        assert_eq!(outcome_of(&again, c), "already", "{again}");
    }
    assert_eq!(running(&lab, 2, "store1"), ["app", "db", "web"]);

    let status = n2.ctmgr(&["status"]);
    status.assert_success();
    assert!(
        status.stdout.contains("last takeover of store1 here: ok"),
        "{status}"
    );
    let j = last_journal(&lab, 2);
    assert_eq!(
        (&j["action"], &j["outcome"], &j["forced"]),
        (
            &serde_json::json!("takeover"),
            &serde_json::json!("ok"),
            &serde_json::json!(false)
        ),
        "{j}"
    );

    // The old holder comes back: it stays out, and cannot take the store back.
    lab.revive(1);
    assert_not_here(&lab, 1, "store1");
    assert_holds(&lab, 2, "store1");
    assert_never_double(&lab);
    let back = lab.node(1).ctmgr(&["takeover", "store1"]);
    back.assert_code(3);
    assert_mentions(&back, "peer-primary");
    assert_holds(&lab, 2, "store1");
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// 3. Rule 2: a local disk that is not UpToDate refuses, naming local-disk; nothing changes.

fn refused_with_disk(disk: &str) -> Lab {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    lab.crash(1);
    let st = lab.state().unwrap();
    lab.sim(&st, &["set-disk", "node2", "r0", disk]).unwrap();

    let out = lab.node(2).ctmgr(&["takeover", "store1"]);
    out.assert_code(3);
    assert!(out.stdout.contains("[refuse] local-disk"), "{out}");
    assert!(out.stderr.contains("(local-disk)"), "{out}");
    assert!(out.stderr.contains(disk), "{out}");
    assert_not_here(&lab, 2, "store1");
    assert_not_here(&lab, 1, "store1");
    assert!(ctmgr_tests::invariants::sim_primaries(&lab, "r0").is_empty());
    assert_holds(&lab, 2, "store2");
    assert_never_double(&lab);
    let j = last_journal(&lab, 2);
    assert_eq!(j["refused_by"], "local-disk", "{j}");
    lab
}

#[test]
fn lab_takeover_refused_with_outdated_disk() {
    refused_with_disk("Outdated");
}

#[test]
fn lab_takeover_refused_with_inconsistent_disk() {
    refused_with_disk("Inconsistent");
}

/// `--force` overrides the local-disk refusal (operator guide: "yes, with a warning").
fn forced_past_disk(disk: &str) {
    let lab = refused_with_disk(disk);
    let out = lab.node(2).ctmgr(&["takeover", "store1", "--force"]);
    // Whatever happens, never a double Primary.
    assert_never_double(&lab);
    out.assert_success();
    assert!(out.stdout.contains("[warn  ] local-disk"), "{out}");
    assert!(out.stdout.contains("overridden by --force"), "{out}");
    assert_holds(&lab, 2, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["web"]);
    let j = last_journal(&lab, 2);
    assert_eq!(j["forced"], true, "{j}");
    assert_eq!(j["outcome"], "ok", "{j}");
}

#[test]
fn lab_takeover_forced_past_outdated_disk() {
    forced_past_disk("Outdated");
}

#[test]
fn lab_takeover_forced_past_inconsistent_disk() {
    forced_past_disk("Inconsistent");
}

// ---------------------------------------------------------------------------------------
// 4. The peer link is cut but the peer is alive on the LAN and holds the store: refuse.
//    (Never with --force here: that is the split brain the check exists for.)

/// Cuts the link and checks that a takeover of store1 on node2 is refused by a peer-evidence
/// check with nothing changed; returns the refusal.
fn link_cut_refusal(lab: &Lab) -> Output {
    lab.cut_link();
    let out = lab.node(2).ctmgr(&["takeover", "store1"]);
    out.assert_code(3);
    // The LAN address answered, the cut peer link did not.
    assert!(out.stdout.contains("lan 10.1.0.5: tcp/22 accepts"), "{out}");
    assert!(
        out.stdout
            .contains("peer-link 10.0.254.1: tcp/22 silent, ping silent"),
        "{out}"
    );
    assert!(out.stderr.contains("split brain"), "{out}");
    assert_holds(lab, 1, "store1");
    assert_eq!(running(lab, 1, "store1"), ["web"]);
    assert_not_here(lab, 2, "store1");
    assert_holds(lab, 2, "store2");
    assert_never_double(lab);
    out
}

#[test]
fn lab_takeover_link_cut_peer_still_primary() {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    let out = link_cut_refusal(&lab);
    let refused_by = last_journal(&lab, 2)["refused_by"].clone();
    assert!(
        refused_by == "peer-holds" || refused_by == "peer-alive",
        "refused by {refused_by}: {out}"
    );
    assert!(
        out.stdout
            .contains(&format!("[refuse] {}", refused_by.as_str().unwrap())),
        "{out}"
    );

    // The same from node1's side for node2's store.
    let out = lab.node(1).ctmgr(&["takeover", "store2"]);
    out.assert_code(3);
    assert!(out.stderr.contains("split brain"), "{out}");
    assert_holds(&lab, 2, "store2");
    assert_holds(&lab, 1, "store1");
    assert_never_double(&lab);

    // Healed, DRBD sees the peer again and the refusal is peer-primary; nothing changes.
    lab.heal_link();
    let ok = wait_until(POLL, Duration::from_millis(100), || {
        let s = lab.node(2).cmd_timeout(&["drbdadm", "status", "r0"], Q);
        s.success() && s.stdout.contains("node1 role:Primary")
    });
    assert!(ok, "r0 did not reconnect\n{}", lab.status());
    let out = lab.node(2).ctmgr(&["takeover", "store1"]);
    out.assert_code(3);
    assert_mentions(&out, "peer-primary");
    assert_holds(&lab, 1, "store1");
    assert_not_here(&lab, 2, "store1");
    assert_never_double(&lab);
}

/// The guide: "If the peer answers anywhere, ctmgr asks it whether it holds the store.
/// Yes refuses; no proceeds". With the peer link cut it must ask over the LAN.
#[test]
fn lab_takeover_link_cut_asks_peer_over_lan() {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    let out = link_cut_refusal(&lab);
    assert!(out.stdout.contains("[refuse] peer-holds"), "{out}");
    assert!(out.stderr.contains("(peer-holds)"), "{out}");
    assert_eq!(last_journal(&lab, 2)["refused_by"], "peer-holds");

    // The peer gives the store up while the link is still cut: now the takeover proceeds.
    lab.node(1)
        .ctmgr(&["release", "store1", "--timeout", STOP_SECS])
        .assert_success();
    assert_not_here(&lab, 1, "store1");
    let out = lab.node(2).ctmgr(&["takeover", "store1"]);
    assert_never_double(&lab);
    out.assert_success();
    assert!(out.stdout.contains("[ok    ] peer-secondary"), "{out}");
    assert_holds(&lab, 2, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["web"]);
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// 5. The mount fails (damaged filesystem): exit 1, Primary here and not mounted, nothing
//    started; a rerun converges to the same; release demotes.

#[test]
fn lab_takeover_mount_fails() {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    lab.crash(1);
    let dev = lab.store_device("store1").unwrap();
    let of = format!("of={dev}");
    // Zero the primary Btrfs superblock (64 KiB into the device, 4 KiB); this image
    // belongs to this lab only.
    lab.node(2)
        .cmd(&[
            "dd",
            "if=/dev/zero",
            &of,
            "bs=4096",
            "seek=16",
            "count=1",
            "conv=notrunc,fsync",
            "status=none",
        ])
        .assert_success();

    for run in 0..2 {
        let out = lab.node(2).ctmgr(&["takeover", "store1"]);
        out.assert_code(1);
        assert!(out.stderr.contains("failed to mount"), "{out}");
        assert_eq!(step_outcome(&out, "mount"), "failed", "{out}");
        let promote = if run == 0 { "done" } else { "already" };
        assert_eq!(step_outcome(&out, "promote"), promote, "{out}");
        assert!(
            !out.stdout.contains("containers:"),
            "nothing started: {out}"
        );
        // The documented state: Primary here, not mounted, no container.
        assert_role(&lab, 2, "r0", "Primary");
        assert!(!mounted(lab.node(2), "/srv/store1"));
        assert!(running(&lab, 2, "store1").is_empty());
        assert_eq!(last_journal(&lab, 2)["outcome"], "failed");
        assert_not_here(&lab, 1, "store1");
        assert_never_double(&lab);
    }

    // The way out the guide names: release demotes.
    lab.node(2)
        .ctmgr(&["release", "store1", "--timeout", STOP_SECS])
        .assert_success();
    assert_not_here(&lab, 2, "store1");
    assert_holds(&lab, 2, "store2");
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// 6. One container is broken: the others start, exit 1 names the broken one.

#[test]
fn lab_takeover_one_broken_container() {
    let lab = up();
    create_started(&lab, 1, &["web", "db", "app"]);
    // Break db's network: its bridge does not exist (the config still parses, so the
    // running db is killed normally at the crash; it cannot start again).
    lab.node(1)
        .cmd(&[
            "sed",
            "-i",
            "s/^lxc.net.0.link = .*/lxc.net.0.link = nosuchbr/",
            "/srv/store1/containers/db/config",
        ])
        .assert_success();
    lab.crash(1);

    let out = lab.node(2).ctmgr(&["takeover", "store1"]);
    out.assert_code(1);
    assert!(out.stderr.contains("container db failed to start"), "{out}");
    assert!(out.stderr.contains("1 container(s) failed"), "{out}");
    assert!(
        !out.stderr.contains("container web failed")
            && !out.stderr.contains("container app failed"),
        "{out}"
    );
    assert_eq!(outcome_of(&out, "db"), "failed", "{out}");
    assert_eq!(outcome_of(&out, "web"), "started", "{out}");
    assert_eq!(outcome_of(&out, "app"), "started", "{out}");
    assert_eq!(step_outcome(&out, "start"), "failed", "{out}");
    assert_holds(&lab, 2, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["app", "web"]);
    assert_eq!(last_journal(&lab, 2)["outcome"], "partial");
    assert_never_double(&lab);

    // A rerun retries only the broken one, still exit 1, the others stay up.
    let again = lab.node(2).ctmgr(&["takeover", "store1"]);
    again.assert_code(1);
    assert_eq!(outcome_of(&again, "web"), "already", "{again}");
    assert_eq!(outcome_of(&again, "db"), "failed", "{again}");
    assert_eq!(running(&lab, 2, "store1"), ["app", "web"]);
    assert_never_double(&lab);
}

/// A container whose `lxc.rootfs.path` was damaged to point outside its directory is taken
/// for a peer's replica and silently left out of the set: the takeover says 0 and never
/// names it.
#[test]
fn lab_takeover_names_container_with_damaged_rootfs_path() {
    let lab = up();
    create_started(&lab, 1, &["web", "db"]);
    lab.node(1)
        .cmd(&[
            "sed",
            "-i",
            "s#^lxc.rootfs.path = .*#lxc.rootfs.path = dir:/nonexistent/rootfs#",
            "/srv/store1/containers/db/config",
        ])
        .assert_success();
    lab.crash(1);
    let out = lab.node(2).ctmgr(&["takeover", "store1"]);
    assert_never_double(&lab);
    out.assert_code(1);
    assert!(out.stderr.contains("db"), "{out}");
    assert_eq!(outcome_of(&out, "web"), "started", "{out}");
    assert_eq!(running(&lab, 2, "store1"), ["web"]);
}

// ---------------------------------------------------------------------------------------
// 7. Rule 3: a takeover killed after any step converges when run again. The states a kill
//    leaves are made by hand, each from a released store.

#[test]
fn lab_takeover_kill9_converges() {
    let lab = up();
    create_started(&lab, 1, &["web", "db"]);
    lab.crash(1);
    let n2 = lab.node(2);
    let dev = lab.store_device("store1").unwrap();
    let mount_by_hand = || {
        n2.cmd(&["mount", "-t", "btrfs", "-o", "noatime", &dev, "/srv/store1"])
            .assert_success();
    };

    // Killed after promote.
    n2.cmd(&["drbdadm", "primary", "r0"]).assert_success();
    let out = n2.ctmgr(&["takeover", "store1"]);
    out.assert_success();
    assert_eq!(step_outcome(&out, "promote"), "already", "{out}");
    assert_eq!(step_outcome(&out, "mount"), "done", "{out}");
    assert_holds(&lab, 2, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["db", "web"]);
    assert_never_double(&lab);
    n2.ctmgr(&["release", "store1", "--timeout", STOP_SECS])
        .assert_success();
    assert_not_here(&lab, 2, "store1");
    assert_never_double(&lab);

    // Killed after mount.
    n2.cmd(&["drbdadm", "primary", "r0"]).assert_success();
    mount_by_hand();
    let out = n2.ctmgr(&["takeover", "store1"]);
    out.assert_success();
    assert_eq!(step_outcome(&out, "promote"), "already", "{out}");
    assert_eq!(step_outcome(&out, "mount"), "already", "{out}");
    assert_eq!(outcome_of(&out, "web"), "started", "{out}");
    assert_holds(&lab, 2, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["db", "web"]);
    assert_never_double(&lab);
    n2.ctmgr(&["release", "store1", "--timeout", STOP_SECS])
        .assert_success();
    assert_not_here(&lab, 2, "store1");

    // Killed in the middle of starting the set: web runs, db does not.
    n2.cmd(&["drbdadm", "primary", "r0"]).assert_success();
    mount_by_hand();
    n2.cmd(&["lxc-start", "-n", "web", "-P", "/srv/store1/containers"])
        .assert_success();
    assert_eq!(running(&lab, 2, "store1"), ["web"]);
    let out = n2.ctmgr(&["takeover", "store1"]);
    out.assert_success();
    assert_eq!(outcome_of(&out, "web"), "already", "{out}");
    assert_eq!(outcome_of(&out, "db"), "started", "{out}");
    assert_holds(&lab, 2, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["db", "web"]);
    assert_never_double(&lab);

    // And a real SIGKILL of a run holding the lock leaves no stale lock behind.
    let killed = n2.cmd(&[
        "sh",
        "-c",
        "ctmgr takeover store1 >/dev/null 2>&1 & kill -9 $!; wait $!; exit 0",
    ]);
    killed.assert_success();
    let out = n2.ctmgr(&["takeover", "store1", "--no-wait"]);
    out.assert_success();
    assert_eq!(running(&lab, 2, "store1"), ["db", "web"]);
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// 8. Rule 4: one lock per store. A second run fails under --no-wait, or waits and then
//    finds nothing to do.

#[test]
fn lab_two_takeovers_at_once_one_waits() {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    let n1 = lab.node(1).clone();
    let go = "/run/ctmgr/test-go";
    // Hold the store lock until told to let go (the file `go` appears).
    let script = format!("while [ ! -e {go} ]; do sleep 0.05; done");
    let holder = std::thread::spawn({
        let n1 = n1.clone();
        move || {
            n1.cmd_timeout(
                &["flock", "/run/ctmgr/store1.lock", "sh", "-c", &script],
                Duration::from_secs(120),
            )
        }
    });
    let held = wait_until(POLL, Duration::from_millis(20), || {
        n1.cmd_timeout(&["flock", "-n", "/run/ctmgr/store1.lock", "true"], Q)
            .code()
            == Some(1)
    });
    assert!(held, "the test's flock never took the lock");

    let out = n1.ctmgr(&["takeover", "store1", "--no-wait"]);
    out.assert_code(1);
    assert!(out.stderr.contains("locked"), "{out}");
    assert!(out.stderr.contains("--no-wait"), "{out}");
    assert!(!out.stdout.contains("timeline:"), "{out}");
    let out = n1.ctmgr(&["release", "store1", "--no-wait"]);
    out.assert_code(1);
    assert!(out.stderr.contains("locked"), "{out}");
    // Another store is not locked by it.
    lab.node(2)
        .ctmgr(&["takeover", "store2", "--no-wait"])
        .assert_success();

    // Without --no-wait the second run waits (saying so), then finds everything done.
    let waiter = std::thread::spawn({
        let n1 = n1.clone();
        move || {
            n1.cmd_timeout(
                &[
                    "sh",
                    "-c",
                    "exec ctmgr takeover store1 2>/run/ctmgr/test-waiter.err",
                ],
                Duration::from_secs(120),
            )
        }
    });
    let err_file = n1.path_in("/run/ctmgr/test-waiter.err").unwrap();
    let waiting = wait_until(POLL, Duration::from_millis(20), || {
        std::fs::read_to_string(&err_file).is_ok_and(|s| s.contains("waiting"))
    });
    // While it waits, nothing has moved.
    assert_holds(&lab, 1, "store1");
    n1.cmd(&["touch", go]).assert_success();
    let held_out = holder.join().expect("holder thread");
    assert!(held_out.success(), "{held_out}");
    let out = waiter.join().expect("waiter thread");
    let err = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert!(waiting, "the second run never said it waits: {err}\n{out}");
    out.assert_success();
    assert!(err.contains("store store1 is locked by"), "{err}");
    assert_eq!(step_outcome(&out, "promote"), "already", "{out}");
    assert_eq!(step_outcome(&out, "mount"), "already", "{out}");
    assert_eq!(outcome_of(&out, "web"), "already", "{out}");
    assert_holds(&lab, 1, "store1");
    assert_not_here(&lab, 2, "store1");
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// 9. release never unmounts lazily: a busy mount names the processes and exits 1.

#[test]
fn lab_release_busy_mount_names_pids() {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    let n1 = lab.node(1).clone();
    n1.write_file("/srv/store1/busyfile", b"busy\n").unwrap();
    let pid_file = "/run/ctmgr/test-tail.pid";
    let tail = std::thread::spawn({
        let n1 = n1.clone();
        move || {
            n1.cmd_timeout(
                &[
                    "sh",
                    "-c",
                    &format!("echo $$ > {pid_file}; exec tail -f /srv/store1/busyfile"),
                ],
                Duration::from_secs(120),
            )
        }
    });
    let pid_path = n1.path_in(pid_file).unwrap();
    let mut pid = String::new();
    let ready = wait_until(POLL, Duration::from_millis(20), || {
        pid = std::fs::read_to_string(&pid_path)
            .unwrap_or_default()
            .trim()
            .to_string();
        !pid.is_empty()
            && n1
                .cmd_timeout(&["ls", "-l", &format!("/proc/{pid}/fd")], Q)
                .stdout
                .contains("/srv/store1/busyfile")
    });
    assert!(ready, "tail never opened the file");

    let out = n1.ctmgr(&["release", "store1", "--timeout", STOP_SECS]);
    out.assert_code(1);
    assert!(out.stderr.contains("is busy"), "{out}");
    assert!(out.stderr.contains(&format!("{pid} (tail)")), "{out}");
    assert!(out.stderr.contains("never unmounts lazily"), "{out}");
    assert_eq!(step_outcome(&out, "unmount"), "failed", "{out}");
    // Observed state: the set is stopped, the store still mounted and Primary here.
    assert_role(&lab, 1, "r0", "Primary");
    assert!(mounted(&n1, "/srv/store1"));
    assert!(running(&lab, 1, "store1").is_empty());
    assert_not_here(&lab, 2, "store1");
    assert_never_double(&lab);
    assert_eq!(last_journal(&lab, 1)["outcome"], "failed");

    // Gone the holder, release converges.
    n1.cmd(&["kill", &pid]).assert_success();
    let t = tail.join().expect("tail thread");
    assert!(!t.timed_out, "{t}");
    let out = n1.ctmgr(&["release", "store1", "--timeout", STOP_SECS]);
    out.assert_success();
    assert_eq!(step_outcome(&out, "stop"), "already", "{out}");
    assert_eq!(step_outcome(&out, "unmount"), "done", "{out}");
    assert_eq!(step_outcome(&out, "demote"), "done", "{out}");
    assert_not_here(&lab, 1, "store1");
    assert_not_here(&lab, 2, "store1");
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// 10. A planned switchover there and back keeps the data.

#[test]
fn lab_migrate_round_trip_keeps_data() {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    let attach = |n: usize, script: &str| -> Output {
        lab.node(n).cmd(&[
            "lxc-attach",
            "-n",
            "web",
            "-P",
            "/srv/store1/containers",
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    attach(1, "echo hello > /root/f").assert_success();

    let out = lab
        .node(2)
        .ctmgr(&["migrate", "store1", "--timeout", STOP_SECS]);
    out.assert_success();
    assert_holds(&lab, 2, "store1");
    assert_not_here(&lab, 1, "store1");
    assert_eq!(running(&lab, 2, "store1"), ["web"]);
    assert_never_double(&lab);
    let f = attach(2, "cat /root/f");
    f.assert_success();
    assert_eq!(f.stdout, "hello\n");
    attach(2, "echo again >> /root/f").assert_success();

    let out = lab
        .node(1)
        .ctmgr(&["migrate", "store1", "--timeout", STOP_SECS]);
    out.assert_success();
    assert_holds(&lab, 1, "store1");
    assert_not_here(&lab, 2, "store1");
    assert_eq!(running(&lab, 1, "store1"), ["web"]);
    assert_never_double(&lab);
    let f = attach(1, "cat /root/f");
    f.assert_success();
    assert_eq!(f.stdout, "hello\nagain\n");
    // node2's own store never moved.
    assert_holds(&lab, 2, "store2");
}

// ---------------------------------------------------------------------------------------
// 11. The pre-start guard refuses a plain lxc-start on the node that does not hold the
//     store, even from a replica config; the holder starts it.

#[test]
fn lab_guard_refuses_plain_lxc_start_on_non_holder() {
    let lab = up();
    create_started(&lab, 1, &["web"]);
    let (n1, n2) = (lab.node(1), lab.node(2));
    n2.cmd(&["mkdir", "-p", "/srv/store2/containers/web"])
        .assert_success();
    for f in ["config", "fstab"] {
        let text = n1
            .read_file(&format!("/srv/store1/containers/web/{f}"))
            .unwrap();
        n2.write_file(&format!("/srv/store2/containers/web/{f}"), text.as_bytes())
            .unwrap();
    }
    let config = n2.read_file("/srv/store2/containers/web/config").unwrap();
    assert!(config.contains("ctmgr-guard --store store1"), "{config}");

    let out = n2.cmd(&[
        "lxc-start",
        "-n",
        "web",
        "-P",
        "/srv/store2/containers",
        "-l",
        "DEBUG",
        "-o",
        "/root/web.log",
    ]);
    assert!(
        !out.success(),
        "a plain lxc-start on node2 started web: {out}"
    );
    // liblxc (5.0) logs a hook's output at DEBUG only: the reason is in the log file.
    let log = n2.read_file("/root/web.log").unwrap_or_default();
    let all = format!("{}{}{log}", out.stdout, out.stderr);
    assert!(
        all.contains("ctmgr-guard: refusing to start container web"),
        "{out}\n--- log:\n{log}"
    );
    assert!(all.contains("store1"), "{out}\n--- log:\n{log}");
    assert!(running_in(n2, "/srv/store2/containers").is_empty());
    assert_holds(&lab, 1, "store1");
    assert_eq!(running(&lab, 1, "store1"), ["web"]);
    assert_never_double(&lab);

    // On the holder a plain lxc-start works.
    n1.cmd(&[
        "lxc-stop",
        "-k",
        "-n",
        "web",
        "-P",
        "/srv/store1/containers",
    ])
    .assert_success();
    assert!(running(&lab, 1, "store1").is_empty());
    n1.cmd(&["lxc-start", "-n", "web", "-P", "/srv/store1/containers"])
        .assert_success();
    assert_eq!(running(&lab, 1, "store1"), ["web"]);
    assert_never_double(&lab);

    // After a crash of the holder, node2 still refuses the replica: it does not hold store1
    // until a takeover.
    lab.crash(1);
    let out = n2.cmd(&["lxc-start", "-n", "web", "-P", "/srv/store2/containers"]);
    assert!(!out.success(), "{out}");
    assert!(running_in(n2, "/srv/store2/containers").is_empty());
    assert_never_double(&lab);
}
