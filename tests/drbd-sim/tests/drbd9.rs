//! DRBD 9 mode: the safety-relevant refusals with DRBD's exact texts, failure scenarios
//! (peer crash, cut link, split brain) and the output formats product code parses.
mod common;

use common::Lab;
use std::time::{Duration, Instant};

/// Enough invocations for any handshake and resync to finish (step-driven lab).
fn settle(lab: &Lab) {
    for _ in 0..10 {
        assert_eq!(lab.sim("node1", &["tick"]).code, 0);
    }
}

/// Both nodes up, r0 Primary on node1 after the initial full sync, r1 untouched (down).
fn primary_pair(name: &str) -> Lab {
    let lab = Lab::new(name, "9");
    for n in ["node1", "node2"] {
        lab.ok(n, &["drbdadm", "create-md", "r0"]);
        lab.ok(n, &["drbdadm", "up", "r0"]);
    }
    lab.ok("node1", &["drbdadm", "primary", "--force", "r0"]);
    settle(&lab);
    lab
}

const STATUS_N1_PRIMARY: &str =
    "r0 role:Primary\n  disk:UpToDate\n  node2 role:Secondary\n    peer-disk:UpToDate\n\n";

#[test]
fn create_md_prints_drbdmeta_text() {
    let lab = Lab::new("createmd", "9");
    assert_eq!(
        lab.ok("node1", &["drbdadm", "create-md", "r0"]),
        "initializing activity log\ninitializing bitmap (8 KB) to all zero\nWriting meta data...\nNew drbd meta data block successfully created.\n"
    );
    lab.ok("node1", &["drbdadm", "up", "r0"]);
    let r = lab.run("node1", &["drbdadm", "create-md", "r0"]);
    assert_eq!(r.code, 20);
    assert_eq!(
        r.out,
        "Device '0' is configured!\nCommand 'drbdmeta 0 v09 /dev/loop-fake0 internal create-md 1' terminated with exit code 20\n"
    );
}

#[test]
fn status_after_initial_sync() {
    let lab = primary_pair("status");
    assert_eq!(
        lab.ok("node1", &["drbdadm", "status", "r0"]),
        STATUS_N1_PRIMARY
    );
    assert_eq!(
        lab.ok("node2", &["drbdadm", "status"]),
        "r0 role:Secondary\n  disk:UpToDate\n  node1 role:Primary\n    peer-disk:UpToDate\n\n"
    );
    assert_eq!(lab.ok("node1", &["drbdadm", "role", "r0"]), "Primary\n");
    assert_eq!(
        lab.ok("node1", &["drbdadm", "dstate", "r0"]),
        "UpToDate/UpToDate\n"
    );
    assert_eq!(lab.ok("node1", &["drbdadm", "cstate", "r0"]), "Connected\n");
    assert_eq!(lab.ok("node2", &["drbdsetup", "role", "r0"]), "Secondary\n");
    // r1 is down: drbdsetup says so, drbdadm adds its Command line.
    let r = lab.run("node1", &["drbdadm", "status", "r1"]);
    assert_eq!(r.code, 10);
    assert_eq!(
        r.out,
        "r1: No such resource\nCommand 'drbdsetup status r1' terminated with exit code 10\n"
    );
}

#[test]
fn second_primary_is_refused_with_drbd_text() {
    let lab = primary_pair("twoprim");
    let r = lab.run("node2", &["drbdadm", "primary", "r0"]);
    assert_eq!(r.code, 11);
    assert_eq!(
        r.out,
        "r0: State change failed: (-1) Multiple primaries not allowed by config\nCommand 'drbdsetup primary r0' terminated with exit code 11\n"
    );
    // --force does not help against a connected Primary.
    let r = lab.run("node2", &["drbdadm", "primary", "--force", "r0"]);
    assert_eq!(r.code, 11);
    let r = lab.run("node2", &["drbdsetup", "primary", "r0"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (
            11,
            "r0: State change failed: (-1) Multiple primaries not allowed by config\n"
        )
    );
    assert_eq!(lab.ok("node2", &["drbdadm", "role", "r0"]), "Secondary\n");
}

#[test]
fn unknown_resource_and_host() {
    let lab = Lab::new("unknown", "9");
    let r = lab.run("node1", &["drbdadm", "role", "r7"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (1, "'r7' not defined in your config (for this host).\n")
    );
    let r = lab.run("node3", &["drbdadm", "up", "r0"]);
    assert_eq!((r.code, r.out.as_str()), (1, "no resources defined!\n"));
    let r = lab.run("node1", &["drbdadm", "up", "r0"]);
    assert_eq!(r.code, 10, "up without create-md: {}", r.out);
    assert!(r.out.contains("No valid meta-data signature found"));
}

#[test]
fn primary_needs_uptodate_data_unless_forced() {
    let lab = primary_pair("uptodate");
    lab.sim("node1", &["crash", "node1"]);
    let r = lab.sim("node1", &["set-disk", "node2", "r0", "Outdated"]);
    assert_eq!(r.code, 0, "{}", r.out);
    let r = lab.run("node2", &["drbdadm", "primary", "r0"]);
    assert_eq!(r.code, 17);
    assert_eq!(
        r.out,
        "r0: State change failed: (-2) Need access to UpToDate data\nCommand 'drbdsetup primary r0' terminated with exit code 17\n"
    );
    lab.ok("node2", &["drbdadm", "primary", "--force", "r0"]);
    assert_eq!(
        lab.ok("node2", &["drbdadm", "dstate", "r0"]),
        "UpToDate/DUnknown\n"
    );
}

#[test]
fn peer_crash_then_takeover_then_revive() {
    let lab = primary_pair("crash");
    assert_eq!(lab.sim("node1", &["crash", "node1"]).code, 0);
    assert_eq!(
        lab.ok("node2", &["drbdadm", "status", "r0"]),
        "r0 role:Secondary\n  disk:UpToDate\n  node1 connection:Connecting\n\n"
    );
    assert_eq!(
        lab.ok("node2", &["drbdadm", "cstate", "r0"]),
        "Connecting\n"
    );
    assert_eq!(
        lab.ok("node2", &["drbdadm", "dstate", "r0"]),
        "UpToDate/DUnknown\n"
    );
    // A crashed node runs nothing.
    assert_eq!(lab.run("node1", &["drbdadm", "role", "r0"]).code, 20);
    // The Primary is gone: promotion succeeds.
    lab.ok("node2", &["drbdadm", "primary", "r0"]);
    assert_eq!(lab.ok("node2", &["drbdadm", "role", "r0"]), "Primary\n");
    // node1 boots: resource down, disk Outdated (peer promoted meanwhile).
    assert_eq!(lab.sim("node1", &["revive", "node1"]).code, 0);
    let r = lab.run("node1", &["drbdadm", "role", "r0"]);
    assert_eq!(r.code, 10);
    assert_eq!(
        r.out,
        "r0: Unknown resource\nCommand 'drbdsetup role r0' terminated with exit code 10\n"
    );
    lab.ok("node1", &["drbdadm", "up", "r0"]);
    assert_eq!(
        lab.ok("node1", &["drbdadm", "dstate", "r0"]),
        "Outdated/DUnknown\n"
    );
    settle(&lab);
    assert_eq!(
        lab.ok("node1", &["drbdadm", "status", "r0"]),
        "r0 role:Secondary\n  disk:UpToDate\n  node2 role:Primary\n    peer-disk:UpToDate\n\n"
    );
}

#[test]
fn cut_link_and_heal() {
    let lab = primary_pair("cut");
    lab.sim("node1", &["cut-link"]);
    for (n, peer, role) in [
        ("node1", "node2", "Primary"),
        ("node2", "node1", "Secondary"),
    ] {
        assert_eq!(
            lab.ok(n, &["drbdadm", "status", "r0"]),
            format!("r0 role:{role}\n  disk:UpToDate\n  {peer} connection:Connecting\n\n")
        );
    }
    lab.sim("node1", &["heal-link"]);
    // node1 was Primary while cut: the handshake takes its steps, then connects.
    assert_eq!(
        lab.ok("node1", &["drbdadm", "cstate", "r0"]),
        "Connecting\n"
    );
    settle(&lab);
    assert_eq!(
        lab.ok("node1", &["drbdadm", "status", "r0"]),
        STATUS_N1_PRIMARY
    );
}

#[test]
fn split_brain_after_both_promoted_while_cut() {
    let lab = primary_pair("splitbrain");
    lab.sim("node1", &["cut-link"]);
    // Cut link: DRBD cannot tell, the second promotion is allowed.
    lab.ok("node2", &["drbdadm", "primary", "r0"]);
    lab.sim("node1", &["heal-link"]);
    settle(&lab);
    for (n, peer) in [("node1", "node2"), ("node2", "node1")] {
        assert_eq!(
            lab.ok(n, &["drbdadm", "status", "r0"]),
            format!("r0 role:Primary\n  disk:UpToDate\n  {peer} connection:StandAlone\n\n")
        );
    }
    // Not merged silently: it stays split until resolved by hand.
    settle(&lab);
    assert_eq!(
        lab.ok("node2", &["drbdadm", "cstate", "r0"]),
        "StandAlone\n"
    );
    // Resolution as in the DRBD user's guide: the victim discards its data.
    lab.ok("node2", &["drbdadm", "secondary", "r0"]);
    lab.ok("node2", &["drbdadm", "connect", "--discard-my-data", "r0"]);
    lab.ok("node1", &["drbdadm", "connect", "r0"]);
    settle(&lab);
    let st = lab.state_json();
    assert_eq!(st["resources"]["r0"]["connected"], true);
    assert_eq!(
        lab.ok("node1", &["drbdadm", "status", "r0"]),
        STATUS_N1_PRIMARY
    );
}

#[test]
fn secondary_refused_while_held_open() {
    let lab = primary_pair("heldopen");
    let hold = [("DRBD_SIM_HOLD_OPEN", "/dev/drbd0")];
    let r = lab.run_env("node1", &["drbdadm", "secondary", "r0"], &hold);
    assert_eq!(r.code, 11);
    assert_eq!(
        r.out,
        "r0: State change failed: (-12) Device is held open by someone\nCommand 'drbdsetup secondary r0' terminated with exit code 11\n"
    );
    // Holding the backing disk counts too.
    let r = lab.run_env(
        "node1",
        &["drbdadm", "secondary", "r0"],
        &[("DRBD_SIM_HOLD_OPEN", "/dev/loop-fake0")],
    );
    assert_eq!(r.code, 11);
    lab.ok("node1", &["drbdadm", "secondary", "r0"]);
}

#[test]
fn disconnect_is_standalone_peer_sees_connecting() {
    let lab = primary_pair("disconnect");
    lab.ok("node2", &["drbdadm", "disconnect", "r0"]);
    assert_eq!(
        lab.ok("node2", &["drbdadm", "cstate", "r0"]),
        "StandAlone\n"
    );
    assert_eq!(
        lab.ok("node1", &["drbdadm", "cstate", "r0"]),
        "Connecting\n"
    );
    assert_eq!(lab.ok("node1", &["drbdadm", "role", "r0"]), "Primary\n");
    lab.ok("node2", &["drbdadm", "adjust", "r0"]);
    settle(&lab);
    assert_eq!(lab.ok("node2", &["drbdadm", "cstate", "r0"]), "Connected\n");
}

#[test]
fn json_status_has_drbd_field_names() {
    let lab = primary_pair("json");
    let out = lab.ok("node1", &["drbdsetup", "status", "r0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let r = &v[0];
    assert_eq!(r["name"], "r0");
    assert_eq!(r["node-id"], 1);
    assert_eq!(r["role"], "Primary");
    assert_eq!(r["devices"][0]["disk-state"], "UpToDate");
    assert_eq!(r["devices"][0]["minor"], 0);
    assert_eq!(r["devices"][0]["size"], 262100);
    let c = &r["connections"][0];
    assert_eq!(c["name"], "node2");
    assert_eq!(c["peer-node-id"], 0);
    assert_eq!(c["connection-state"], "Connected");
    assert_eq!(c["peer-role"], "Secondary");
    assert_eq!(c["paths"][0]["remote_host"]["port"], 7788);
    let pd = &c["peer_devices"][0];
    assert_eq!(pd["replication-state"], "Established");
    assert_eq!(pd["peer-disk-state"], "UpToDate");
    assert_eq!(pd["percent-in-sync"], 100.0);
    // All resources: only the configured (up) one is listed.
    let all: serde_json::Value =
        serde_json::from_str(&lab.ok("node2", &["drbdsetup", "status", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["connections"][0]["peer-role"], "Primary");
}

#[test]
fn events2_now_lines() {
    let lab = primary_pair("events2");
    let out = lab.ok("node1", &["drbdsetup", "events2", "--now", "r0"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "exists resource name:r0 role:Primary suspended:no force-io-failures:no may_promote:no promotion_score:0",
            "exists connection name:r0 peer-node-id:0 conn-name:node2 connection:Connected role:Secondary",
            "exists path name:r0 peer-node-id:0 conn-name:node2 local:ipv4:10.0.254.1:7788 peer:ipv4:10.0.254.2:7788 established:yes",
            "exists device name:r0 volume:0 minor:0 backing_dev:/dev/loop-fake0 disk:UpToDate client:no open:no quorum:yes",
            "exists peer-device name:r0 peer-node-id:0 conn-name:node2 volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no",
            "exists -",
        ]
    );
    lab.sim("node1", &["crash", "node1"]);
    let out = lab.ok("node2", &["drbdsetup", "events2", "--now"]);
    assert!(out.starts_with(
        "exists resource name:r0 role:Secondary suspended:no force-io-failures:no may_promote:yes"
    ));
    assert!(out.contains(" connection:Connecting role:Unknown\n"));
    assert!(out.ends_with("exists -\n"));
}

#[test]
fn resync_progresses_and_finishes_in_bounded_wall_time() {
    let mut lab = Lab::new("resync", "9");
    lab.extra_env = vec![("DRBD_SIM_STEP_MS".into(), "250".into())];
    for n in ["node1", "node2"] {
        lab.ok(n, &["drbdadm", "create-md", "r0"]);
        lab.ok(n, &["drbdadm", "up", "r0"]);
    }
    lab.ok("node1", &["drbdadm", "primary", "--force", "r0"]);
    let start = Instant::now();
    let mut saw_progress = false;
    loop {
        let st = lab.ok("node2", &["drbdadm", "status", "r0"]);
        if st.contains("replication:SyncTarget peer-disk:UpToDate done:") {
            assert!(
                st.starts_with("r0 role:Secondary\n  disk:Inconsistent\n"),
                "{st}"
            );
            saw_progress = true;
        }
        if st.contains("  disk:UpToDate\n") {
            assert_eq!(
                st,
                "r0 role:Secondary\n  disk:UpToDate\n  node1 role:Primary\n    peer-disk:UpToDate\n\n"
            );
            break;
        }
        // A poll deadline, not a speed check: the stand-in finishes in ~2 s.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "resync did not finish: {st}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_progress, "no SyncTarget frame was shown");
}

#[test]
fn concurrent_commands_keep_state_consistent() {
    let lab = primary_pair("concurrent");
    std::thread::scope(|s| {
        for i in 0..8 {
            let lab = &lab;
            s.spawn(move || {
                let node = if i % 2 == 0 { "node1" } else { "node2" };
                for _ in 0..5 {
                    assert_eq!(lab.sim(node, &["tick"]).code, 0);
                }
            });
        }
    });
    assert_eq!(
        lab.ok("node1", &["drbdadm", "status", "r0"]),
        STATUS_N1_PRIMARY
    );
}
