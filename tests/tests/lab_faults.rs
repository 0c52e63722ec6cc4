//! The fault matrix of issue 10: one test per route to a split brain found in the
//! adversarial run of 2026-12-07 (D1–D6; D7/D8 are in lab_guard.rs) and for DRBD's own
//! fencing through ctmgr's fence-peer handler. Each test first builds the state the route
//! needs, then tries it exactly as the finding describes, and asserts after EVERY step that
//! at most one node is Primary, no store is mounted twice and no rootfs runs twice
//! ([`assert_never_double`]), and that nothing was lost (the holder still holds).
//!
//! Every one of these promoted a second Primary on the main of 2026-12-07 (ffd0c1e..a5fbb71).
#![forbid(unsafe_code)]

use std::time::Duration;

use ctmgr_tests::invariants::{assert_never_double, mounted, role, sim_primaries};
use ctmgr_tests::lab::{Bins, Lab, LabSpec};
use ctmgr_tests::run::wait_until;
use ctmgr_tests::Output;

const Q: Duration = Duration::from_secs(30);

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

#[track_caller]
fn assert_role(lab: &Lab, n: usize, res: &str, want: &str) {
    assert_eq!(
        role(lab.node(n), res).as_deref(),
        Some(want),
        "node{n} role of {res}\n{}",
        lab.status()
    );
}

/// node1 holds store1 with `web` running on it.
fn node1_runs_web(lab: &Lab) {
    lab.node(1)
        .ctmgr(&["create", "web", "--start"])
        .assert_success();
    assert_never_double(lab);
}

/// node2's `takeover store1` is refused (exit 3) by `check`, changing nothing on node2.
#[track_caller]
fn refused_on_node2(lab: &Lab, args: &[&str], check: &str) -> Output {
    let out = lab.node(2).ctmgr(args);
    assert_never_double(lab);
    out.assert_code(3);
    assert!(
        out.stdout.contains(&format!("[refuse] {check}")),
        "expected the {check} check to refuse: {out}"
    );
    assert_role(lab, 2, "r0", "Secondary");
    assert!(
        !mounted(lab.node(2), "/srv/store1"),
        "store1 mounted on node2"
    );
    out
}

/// The stand-in's view of the disk of `res` on node `n` (`drbdadm dstate`, local part).
fn dstate(lab: &Lab, n: usize, res: &str) -> String {
    let out = lab.node(n).cmd_timeout(&["drbdadm", "dstate", res], Q);
    out.stdout
        .trim()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Journal entries of node `n` with `action`.
fn journal(lab: &Lab, n: usize, action: &str) -> Vec<serde_json::Value> {
    let path = lab
        .node(n)
        .path_in("/var/lib/ctmgr/journal.jsonl")
        .expect("journal path");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == action)
        .collect()
}

// ---------------------------------------------------------------------------------------
// DRBD asks ctmgr: the runbook's own manual promote behind a cut link.

/// Done-when of issue 10: the runbook's manual `drbdadm primary r0` on node2, while node1
/// holds store1 behind a cut peer link, is refused by DRBD through ctmgr's handler: node1
/// says it is Primary (exit 6), DRBD outdates node2 and refuses with (-2), exit 17.
#[test]
fn fault_manual_drbdadm_primary_behind_cut_link_is_refused_by_the_handler() {
    let lab = up();
    node1_runs_web(&lab);
    lab.cut_link();
    assert_never_double(&lab);

    let out = lab
        .node(2)
        .cmd_timeout(&["drbdadm", "primary", "r0"], Duration::from_secs(120));
    assert_never_double(&lab);
    assert_eq!(out.code(), Some(17), "{out}");
    assert!(
        out.stderr
            .contains("State change failed: (-2) Need access to UpToDate data"),
        "{out}"
    );
    assert_role(&lab, 2, "r0", "Secondary");
    assert_role(&lab, 1, "r0", "Primary");
    assert_eq!(
        dstate(&lab, 2, "r0"),
        "Outdated",
        "DRBD outdates the asker on 6"
    );
    let fenced = journal(&lab, 2, "fence-peer");
    let last = fenced.last().expect("the handler journaled its answer");
    assert_eq!(last["steps"][0]["outcome"], "exit 6", "{last}");
    assert!(
        last["steps"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("node1 is Primary"),
        "{last}"
    );

    // Now ctmgr's own takeover is refused too (by the peer's answer, before DRBD is asked).
    refused_on_node2(&lab, &["takeover", "store1"], "peer-holds");

    // Healed: node2 resyncs from node1 and is UpToDate again; node1 never stopped.
    lab.heal_link();
    let ok = wait_until(Q, Duration::from_millis(200), || {
        dstate(&lab, 2, "r0") == "UpToDate"
    });
    assert!(ok, "node2 did not become UpToDate\n{}", lab.status());
    assert_never_double(&lab);
    assert_role(&lab, 1, "r0", "Primary");
}

/// The other half of the handler: when the peer really gave the store up, a manual promote
/// behind a cut link outdates the peer (exit 4) and proceeds; the peer then cannot promote
/// (its disk is Outdated) — never two Primaries, whichever side the operator is on.
#[test]
fn fault_manual_promote_outdates_a_released_peer_first() {
    let lab = up();
    node1_runs_web(&lab);
    lab.node(1)
        .ctmgr(&["release", "store1", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
    lab.cut_link();

    let out = lab
        .node(2)
        .cmd_timeout(&["drbdadm", "primary", "r0"], Duration::from_secs(120));
    assert_never_double(&lab);
    out.assert_success();
    assert_role(&lab, 2, "r0", "Primary");
    assert_eq!(
        dstate(&lab, 1, "r0"),
        "Outdated",
        "the handler outdated node1"
    );
    let last = journal(&lab, 2, "fence-peer");
    assert_eq!(
        last.last().expect("journaled")["steps"][0]["outcome"],
        "exit 4"
    );

    // The runbook on node1 now: DRBD itself refuses the Outdated disk.
    let out = lab
        .node(1)
        .cmd_timeout(&["drbdadm", "primary", "r0"], Duration::from_secs(120));
    assert_never_double(&lab);
    assert_eq!(out.code(), Some(17), "{out}");
    assert_role(&lab, 1, "r0", "Secondary");
    // And ctmgr's takeover on node1 says why.
    let out = lab.node(1).ctmgr(&["takeover", "store1"]);
    assert_never_double(&lab);
    out.assert_code(3);
    assert!(out.stdout.contains("[refuse] local-disk"), "{out}");
    assert_eq!(sim_primaries(&lab, "r0"), ["node2"]);
}

// ---------------------------------------------------------------------------------------
// D1: the evidence asked "mounted AND Primary"; a Primary that is not mounted is holding.

#[test]
fn fault_d1_primary_but_unmounted_peer_holds_the_store() {
    let lab = up();
    node1_runs_web(&lab);
    // A release killed after its unmount: containers stopped, unmounted, still Primary.
    lab.node(1)
        .ctmgr(&["stop", "web", "--timeout", "1"])
        .assert_success();
    lab.node(1)
        .cmd_timeout(&["umount", "/srv/store1"], Q)
        .check()
        .expect("umount on node1");
    assert_role(&lab, 1, "r0", "Primary");
    assert_never_double(&lab);
    lab.cut_link();
    assert_never_double(&lab);

    let out = refused_on_node2(&lab, &["takeover", "store1"], "peer-holds");
    assert!(
        out.stdout.contains("node1 is Primary for store store1"),
        "{out}"
    );
    // --dry-run says the same and changes nothing.
    refused_on_node2(&lab, &["takeover", "store1", "--dry-run"], "peer-holds");

    lab.heal_link();
    assert_never_double(&lab);
    let ok = wait_until(Q, Duration::from_millis(200), || {
        lab.node(2)
            .cmd_timeout(&["drbdadm", "cstate", "r0"], Q)
            .stdout
            .contains("Connected")
    });
    assert!(ok, "r0 reconnects without a split brain\n{}", lab.status());
}

// ---------------------------------------------------------------------------------------
// D2: concurrent takeovers from both sides behind a cut link.

#[test]
fn fault_d2_concurrent_takeovers_end_with_at_most_one_primary() {
    let lab = up();
    node1_runs_web(&lab);
    lab.node(1)
        .ctmgr(&["release", "store1", "--timeout", "1"])
        .assert_success();
    lab.cut_link();
    assert_never_double(&lab);
    for round in 0..2 {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| lab.node(1).ctmgr(&["takeover", "store1", "--no-start"]));
            let b = s.spawn(|| lab.node(2).ctmgr(&["takeover", "store1", "--no-start"]));
            (
                a.join().expect("node1 thread"),
                b.join().expect("node2 thread"),
            )
        });
        assert_never_double(&lab);
        let primaries = sim_primaries(&lab, "r0");
        assert!(
            primaries.len() <= 1,
            "round {round}: {primaries:?}\n{a}\n{b}"
        );
        // Each side either took the store or was refused (exit 3): never a half state.
        for (n, out) in [(1, &a), (2, &b)] {
            assert!(
                out.code() == Some(0) || out.code() == Some(3),
                "round {round}: node{n} exit {}: {out}",
                out.code().unwrap_or(-1)
            );
            let held = role(lab.node(n), "r0").as_deref() == Some("Primary");
            assert_eq!(held, out.code() == Some(0), "round {round}: node{n}: {out}");
            assert_eq!(
                mounted(lab.node(n), "/srv/store1"),
                held,
                "round {round} node{n}"
            );
        }
        // Give whatever won back, so both race again.
        for n in [1, 2] {
            lab.node(n)
                .ctmgr(&["release", "store1", "--timeout", "1"])
                .assert_success();
        }
        // A winner outdated the loser's disk; heal and resync so the next round is equal.
        lab.heal_link();
        let ok = wait_until(Q, Duration::from_millis(200), || {
            dstate(&lab, 1, "r0") == "UpToDate" && dstate(&lab, 2, "r0") == "UpToDate"
        });
        assert!(ok, "resync after round {round}\n{}", lab.status());
        lab.cut_link();
        assert_never_double(&lab);
    }
}

// ---------------------------------------------------------------------------------------
// D3: a TCP RST is an answer: the peer's kernel is alive.

#[test]
fn fault_d3_reset_from_a_firewalled_sshd_is_life() {
    let lab = up();
    node1_runs_web(&lab);
    // node1 rejects ssh with a TCP reset on every address (the finding's nft rule).
    let n1 = lab.node(1);
    for argv in [
        &["nft", "add", "table", "inet", "faults"][..],
        &[
            "nft", "add", "chain", "inet", "faults", "input", "{", "type", "filter", "hook",
            "input", "priority", "0", ";", "}",
        ],
        &[
            "nft", "add", "rule", "inet", "faults", "input", "tcp", "dport", "22", "reject",
            "with", "tcp", "reset",
        ],
        // …and answers no ping either: only the RST says it is alive.
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "faults",
            "input",
            "icmp",
            "type",
            "echo-request",
            "drop",
        ],
    ] {
        n1.cmd_timeout(argv, Q).check().expect("nft in node1");
    }
    lab.cut_link();
    assert_never_double(&lab);

    let out = refused_on_node2(&lab, &["takeover", "store1"], "peer-alive");
    assert!(out.stdout.contains("resets (RST: alive)"), "{out}");
    // DRBD's own promote asks the handler, which judges the same way (exit 1 → -7, 11).
    let out = lab
        .node(2)
        .cmd_timeout(&["drbdadm", "primary", "r0"], Duration::from_secs(180));
    assert_never_double(&lab);
    assert_eq!(out.code(), Some(11), "{out}");
    assert!(
        out.stderr
            .contains("(-7) Refusing to be Primary while peer is not outdated"),
        "{out}"
    );
    assert_role(&lab, 1, "r0", "Primary");
    assert!(mounted(lab.node(1), "/srv/store1"));
}

/// D3's second half: the probe uses the peer's real ssh port (from `ssh -G`), not 22.
#[test]
fn fault_d3_probe_uses_the_configured_ssh_port() {
    let lab = up();
    node1_runs_web(&lab);
    // node1 runs a second sshd on port 2222, its port 22 is silent (dropped) and so is
    // ping: a probe of port 22 would see death where there is life.
    let n1 = lab.node(1);
    let dir = n1.dir().display().to_string();
    n1.cmd_timeout(
        &[
            "/usr/sbin/sshd",
            "-f",
            &format!("{dir}/sshd_config"),
            "-p",
            "2222",
            "-o",
            &format!("PidFile={dir}/sshd-2222.pid"),
            "-E",
            &format!("{dir}/sshd-2222.log"),
        ],
        Q,
    )
    .check()
    .expect("a second sshd in node1");
    for argv in [
        &["nft", "add", "table", "inet", "faults"][..],
        &[
            "nft", "add", "chain", "inet", "faults", "input", "{", "type", "filter", "hook",
            "input", "priority", "0", ";", "}",
        ],
        &[
            "nft", "add", "rule", "inet", "faults", "input", "tcp", "dport", "22", "drop",
        ],
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "faults",
            "input",
            "icmp",
            "type",
            "echo-request",
            "drop",
        ],
    ] {
        n1.cmd_timeout(argv, Q).check().expect("nft in node1");
    }
    let n2 = lab.node(2);
    let ssh_cfg = n2.read_file("/root/.ssh/config").unwrap_or_default();
    n2.write_file(
        "/root/.ssh/config",
        format!("Host *\n    Port 2222\n{ssh_cfg}").as_bytes(),
    )
    .expect("ssh config in node2");
    lab.cut_link();
    assert_never_double(&lab);
    let out = refused_on_node2(&lab, &["takeover", "store1"], "peer-holds");
    assert!(out.stdout.contains("tcp/2222 accepts"), "{out}");
}

// ---------------------------------------------------------------------------------------
// D4: already Primary is not a reason to skip the peer check.

#[test]
fn fault_d4_rerun_on_a_cut_off_primary_asks_the_peer() {
    let lab = up();
    node1_runs_web(&lab);
    lab.node(1)
        .ctmgr(&["stop", "web", "--timeout", "1"])
        .assert_success();
    lab.node(1)
        .cmd_timeout(&["umount", "/srv/store1"], Q)
        .check()
        .expect("umount on node1");
    lab.cut_link();
    // The operator forces node2 past every check (journaled, warned): the split brain the
    // route starts from. Only the mounts must stay single from here on.
    let forced = lab
        .node(2)
        .ctmgr(&["takeover", "store1", "--force", "--no-start"]);
    forced.assert_success();
    assert!(mounted(lab.node(2), "/srv/store1"));
    let once = |lab: &Lab| {
        assert!(
            ctmgr_tests::invariants::rootfs_twice(lab).is_empty(),
            "{}",
            lab.status()
        );
        let both = mounted(lab.node(1), "/srv/store1") && mounted(lab.node(2), "/srv/store1");
        assert!(!both, "store1 mounted on both nodes\n{}", lab.status());
    };
    once(&lab);

    // The docs' convergence rerun on the old holder: refused, nothing mounted or started.
    for args in [
        &["takeover", "store1", "--no-start"][..],
        &["takeover", "store1"],
        &["takeover", "store1", "--dry-run"],
    ] {
        let out = lab.node(1).ctmgr(args);
        once(&lab);
        out.assert_code(3);
        assert!(out.stdout.contains("[refuse] peer-holds"), "{out}");
        assert!(out.stdout.contains("already Primary here"), "{out}");
        assert!(!mounted(lab.node(1), "/srv/store1"));
    }
}

// ---------------------------------------------------------------------------------------
// D5: this machine must be the node it says it is.

#[test]
fn fault_d5_wrong_node_name_is_refused_before_anything_runs() {
    let lab = up();
    node1_runs_web(&lab);
    lab.cut_link();
    let n1 = lab.node(1);
    for out in [
        n1.ctmgr(&["--node", "node2", "takeover", "store2", "--dry-run"]),
        n1.ctmgr(&["--node", "node2", "takeover", "store2"]),
        n1.cmd_timeout(
            &["env", "CTMGR_NODE=node2", "ctmgr", "takeover", "store2"],
            Q,
        ),
        n1.ctmgr(&["--node", "node2", "release", "store1"]),
    ] {
        assert_never_double(&lab);
        out.assert_code(2);
        assert!(
            out.stderr.contains("this machine is not node node2"),
            "{out}"
        );
        assert!(out.stderr.contains("10.0.254.2"), "{out}");
    }
    // Read-only commands still work as another node (the escape hatch).
    n1.ctmgr(&["--node", "node2", "status"]).assert_success();
    assert_role(&lab, 2, "r1", "Primary");
    assert!(mounted(lab.node(2), "/srv/store2"));
    assert!(!mounted(lab.node(1), "/srv/store2"));
}

// ---------------------------------------------------------------------------------------
// D6: one path to the peer is not evidence.

#[test]
fn fault_d6_no_lan_address_means_no_evidence_based_takeover() {
    let lab = up();
    node1_runs_web(&lab);
    // node2's cluster.toml without lan_address lines: the peer link is the only path.
    let n2 = lab.node(2);
    let toml = n2
        .read_file("/etc/ctmgr/cluster.toml")
        .expect("cluster.toml");
    let single: String = toml
        .lines()
        .filter(|l| !l.starts_with("lan_address"))
        .map(|l| format!("{l}\n"))
        .collect();
    n2.write_file("/etc/ctmgr/cluster.toml", single.as_bytes())
        .expect("write cluster.toml");
    lab.cut_link();
    assert_never_double(&lab);

    let out = refused_on_node2(&lab, &["takeover", "store1"], "single-path");
    assert!(out.stdout.contains("lan_address"), "{out}");
    // Loading such a config warns, and doctor says so.
    assert!(out.stderr.contains("only one path"), "{out}");
    let doc = n2.ctmgr(&["doctor"]);
    assert!(doc.stdout.contains("only one path"), "{doc}");
    assert_role(&lab, 1, "r0", "Primary");
}

// ---------------------------------------------------------------------------------------
// The Primary's own fence-peer call after a cut link (DRBD's ping timeout), then its death.

/// node1 holds store1 and loses the peer link: DRBD on node1 calls ctmgr's fence-peer
/// handler (the capture's STEP 7b), which reaches node2 over the LAN and outdates it (exit
/// 4). node1 then keeps writing and dies. node2's disk is Outdated — it misses what node1
/// wrote after the cut — so its takeover is refused (`local-disk`), and a manual `drbdadm
/// primary` is refused by DRBD itself; only an operator's `--force` may serve that data.
#[test]
fn fault_primary_fences_its_peer_after_a_cut_link_and_the_outdated_peer_never_takes_over() {
    let lab = up();
    node1_runs_web(&lab);
    lab.cut_link();
    assert_never_double(&lab);

    let calls = lab.ping_timeout(1).expect("ping timeout on node1");
    assert_never_double(&lab);
    assert_eq!(calls, [("r0".to_string(), 4)], "{}", lab.status());
    assert_eq!(dstate(&lab, 2, "r0"), "Outdated", "{}", lab.status());
    assert_role(&lab, 1, "r0", "Primary");
    let fenced = journal(&lab, 1, "fence-peer");
    let last = fenced.last().expect("node1's handler journaled its answer");
    assert_eq!(last["steps"][0]["outcome"], "exit 4", "{last}");

    // node1 writes on after the cut, then dies.
    lab.node(1)
        .cmd_timeout(&["touch", "/srv/store1/after-the-cut"], Q)
        .assert_success();
    lab.crash(1);
    assert_never_double(&lab);

    let out = refused_on_node2(&lab, &["takeover", "store1"], "local-disk");
    assert!(out.stdout.contains("Outdated"), "{out}");
    let manual = lab
        .node(2)
        .cmd_timeout(&["drbdadm", "primary", "r0"], Duration::from_secs(120));
    assert_never_double(&lab);
    assert_eq!(manual.code(), Some(17), "{manual}");
    assert_role(&lab, 2, "r0", "Secondary");
    assert!(sim_primaries(&lab, "r0").len() <= 1);
}
