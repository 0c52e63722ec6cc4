//! End-to-end tests of replica sync and `ctmgr doctor` in the two-node lab:
//! create replicates to the peer by itself; an edited replica is drift that
//! `sync --check` reports and `sync` refuses to overwrite; after a failover
//! the runbook's plain `lxc-start` works from the replica on the peer; doctor
//! is healthy on a healthy lab and names each problem on a broken one.
#![forbid(unsafe_code)]

use ctmgr_tests::lab::{Bins, Lab, LabSpec};

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

#[test]
fn lab_sync_create_replicates_drift_is_refused_and_failover_starts_from_replica() {
    let lab = up();
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.ctmgr(&["create", "web", "--start"]).assert_success();

    // create pushed the replica without a separate command, byte for byte.
    let own = n1.read_file("/srv/store1/containers/web/config").unwrap();
    let replica = n2.read_file("/srv/store2/containers/web/config").unwrap();
    assert_eq!(own, replica);
    assert!(
        replica.contains("ctmgr-guard --store store1"),
        "guard is part of the replica"
    );
    assert!(n2
        .cmd(&["test", "-f", "/srv/store2/containers/web/fstab"])
        .success());
    n1.ctmgr(&["sync", "--check"]).assert_success();

    // The guard refuses the replica on node2 while node1 holds store1.
    let out = n2.cmd(&["lxc-start", "-n", "web", "-P", "/srv/store2/containers"]);
    assert!(
        !out.success(),
        "a replica must not start on the non-holder: {out}"
    );

    // A hand edit on node2 is drift: reported with a diff, not overwritten.
    n2.cmd(&[
        "sh",
        "-c",
        "echo '# edited by hand' >> /srv/store2/containers/web/config",
    ])
    .assert_success();
    let check = n1.ctmgr(&["sync", "--check"]);
    check.assert_code(1);
    assert!(check.stdout.contains("drift"), "{check}");
    assert!(
        check.stdout.contains("+# edited by hand"),
        "diff shown: {check}"
    );
    let push = n1.ctmgr(&["sync"]);
    assert_ne!(push.code(), Some(0), "{push}");
    assert!(
        n2.read_file("/srv/store2/containers/web/config")
            .unwrap()
            .contains("# edited by hand"),
        "drifted replica must not be overwritten without --force"
    );
    let doctor = n1.ctmgr(&["doctor"]);
    doctor.assert_code(1);
    assert!(
        doctor.stdout.contains("replica:web"),
        "doctor names the drift: {doctor}"
    );
    n1.ctmgr(&["sync", "--force"]).assert_success();
    assert_eq!(
        n2.read_file("/srv/store2/containers/web/config").unwrap(),
        own
    );

    // Failover: node1 crashes, node2 takes store1 over without starting the
    // set, and the runbook's plain lxc-start on node2's own lxcpath works.
    lab.crash(1);
    n2.ctmgr(&["takeover", "store1", "--no-start"])
        .assert_success();
    n2.cmd(&["lxc-start", "-n", "web", "-P", "/srv/store2/containers"])
        .assert_success();
    let running = n2.cmd(&["lxc-ls", "--running", "-P", "/srv/store2/containers"]);
    assert!(running.stdout.contains("web"), "{running}");
    // …and ctmgr refuses to start the same rootfs a second time.
    let twice = n2.ctmgr(&["start", "web"]);
    twice.assert_code(1);
    assert!(
        twice.stderr.contains("one rootfs must never run twice"),
        "{twice}"
    );
    n2.cmd(&[
        "lxc-stop",
        "-k",
        "-n",
        "web",
        "-P",
        "/srv/store2/containers",
    ])
    .assert_success();
}

#[test]
fn lab_sync_destroy_removes_replica_and_doctor_judges_health() {
    let lab = up();
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.ctmgr(&["create", "db"]).assert_success();
    n1.ctmgr(&["snapshot", "db"]).assert_success();
    let healthy = n1.ctmgr(&["doctor"]);
    healthy.assert_success();
    assert!(healthy.stdout.contains("healthy"), "{healthy}");
    let json = n1.ctmgr(&["--json", "doctor"]);
    json.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["healthy"], true);

    // Break things: the peer's cluster.toml differs, and the link is cut.
    n2.cmd(&[
        "sh",
        "-c",
        "echo '# local change' >> /etc/ctmgr/cluster.toml",
    ])
    .assert_success();
    let broken = n1.ctmgr(&["doctor"]);
    broken.assert_code(1);
    assert!(broken.stdout.contains("config:peer"), "{broken}");
    lab.cut_link();
    let cut = n1.ctmgr(&["doctor"]);
    cut.assert_code(1);
    assert!(
        cut.stdout.contains("drbd:r0"),
        "DRBD disconnected is named: {cut}"
    );
    lab.heal_link();

    // destroy removes the replica on the next sync.
    n1.ctmgr(&["destroy", "db", "--force"]).assert_success();
    n1.ctmgr(&["sync"]).assert_success();
    assert!(!n2
        .cmd(&["test", "-e", "/srv/store2/containers/db"])
        .success());
}
