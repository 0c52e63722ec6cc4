//! Fencing as real DRBD 8.4.11 does it (/work/shared/fixtures/drbd-8.4.11-real/
//! outdate-transcript.txt, STEP 2-7d), in both version modes: the fence-peer handler
//! called on promotion while not connected and by the ping timeout, its exit codes, the
//! state lock released while it runs, `drbdadm outdate`, clean disconnects under a
//! fencing policy and unfence-peer after the resync. The handler is the capture's
//! /lib/drbd/test-fence-peer.sh (logs its environment, exits with the code in a file),
//! which here also asks the peer for its role, as ctmgr's handler does over ssh.
mod common;

use common::Lab;
use std::fs;

/// The capture's fence-peer log line for a handler run on node2 (peer node1).
const LOG_ON_NODE2: &str = "fence-peer called: args=[] DRBD_RESOURCE=r0 DRBD_MINOR=0 DRBD_PEER_ADDRESS=10.0.254.1 DRBD_PEER_AF=ipv4 DRBD_PEERS=node1";
/// ... and on node1 (STEP 7b).
const LOG_ON_NODE1: &str = "fence-peer called: args=[] DRBD_RESOURCE=r0 DRBD_MINOR=0 DRBD_PEER_ADDRESS=10.0.254.2 DRBD_PEER_AF=ipv4 DRBD_PEERS=node2";

/// Version-specific texts.
struct Mode {
    version: &'static str,
}

impl Mode {
    fn v84(&self) -> bool {
        self.version == "8.4"
    }
    /// `drbdadm role r0` of a node that does not see its peer.
    fn role_alone(&self, role: &str) -> String {
        if self.v84() {
            format!("{role}/Unknown\n")
        } else {
            format!("{role}\n")
        }
    }
    fn role_pair(&self, me: &str, peer: &str) -> String {
        if self.v84() {
            format!("{me}/{peer}\n")
        } else {
            format!("{me}\n")
        }
    }
    fn waiting(&self) -> &'static str {
        if self.v84() {
            "WFConnection\n"
        } else {
            "Connecting\n"
        }
    }
    /// drbdadm's failure text for `primary r0` (minor 0).
    fn primary_failed(&self, text: &str, code: i32) -> String {
        if self.v84() {
            format!("0: State change failed: {text}\nCommand 'drbdsetup-84 primary 0' terminated with exit code {code}\n")
        } else {
            format!("r0: State change failed: {text}\nCommand 'drbdsetup primary r0' terminated with exit code {code}\n")
        }
    }
    fn fencing_section(&self) -> &'static str {
        // 8.4 grammar: `disk { fencing }`; 9: `net { fencing }` (drbd.conf(5)).
        if self.v84() {
            "disk { fencing resource-only; }"
        } else {
            "net { fencing resource-only; }"
        }
    }
}

const MODES: [Mode; 2] = [Mode { version: "8.4" }, Mode { version: "9" }];

/// A lab whose r0 has `fencing resource-only` and the test handlers (`handlers` false:
/// fencing without any handler defined).
fn fenced_lab(name: &str, m: &Mode, handlers: bool) -> Lab {
    let lab = Lab::new(name, m.version);
    let d = lab.dir.display().to_string();
    let fence = format!(
        "#!/bin/sh\n\
         rc=$(cat {d}/fence_rc 2>/dev/null || echo 4)\n\
         role=$(DRBD_SIM_NODE=$DRBD_PEERS drbdadm role \"$DRBD_RESOURCE\" 2>&1)\n\
         echo \"$role\" >> {d}/peer-role.log\n\
         {{ echo \"fence-peer called: args=[$*] DRBD_RESOURCE=$DRBD_RESOURCE DRBD_MINOR=$DRBD_MINOR DRBD_PEER_ADDRESS=$DRBD_PEER_ADDRESS DRBD_PEER_AF=$DRBD_PEER_AF DRBD_PEERS=$DRBD_PEERS -> exit $rc\"; }} >> {d}/fence.log\n\
         exit $rc\n"
    );
    let unfence = format!(
        "#!/bin/sh\necho \"unfence-peer called: args=[$*] DRBD_RESOURCE=$DRBD_RESOURCE DRBD_PEERS=$DRBD_PEERS\" >> {d}/unfence.log\nexit 0\n"
    );
    for (f, text) in [("fence.sh", fence), ("unfence.sh", unfence)] {
        let p = lab.dir.join(f);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let h = if handlers {
        format!("handlers {{ fence-peer \"{d}/fence.sh\"; unfence-peer \"{d}/unfence.sh\"; }}")
    } else {
        String::new()
    };
    let conf = format!(
        "resource r0 {{
  {}
  {h}
  on node1 {{ device /dev/drbd0 minor 0; disk /dev/loop-fake0; address 10.0.254.1:7788; meta-disk internal; }}
  on node2 {{ device /dev/drbd0 minor 0; disk /dev/loop-fake0; address 10.0.254.2:7788; meta-disk internal; }}
}}
",
        m.fencing_section()
    );
    fs::write(&lab.conf, conf).unwrap();
    lab
}

fn set_rc(lab: &Lab, rc: i32) {
    fs::write(lab.dir.join("fence_rc"), format!("{rc}\n")).unwrap();
}

fn lines(lab: &Lab, file: &str) -> Vec<String> {
    fs::read_to_string(lab.dir.join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Both nodes up, Secondary, UpToDate, Connected (no initial sync: the disks are set).
fn connected_pair(lab: &Lab) {
    for n in ["node1", "node2"] {
        lab.ok(n, &["drbdadm", "create-md", "r0"]);
        assert_eq!(lab.sim(n, &["set-disk", n, "r0", "UpToDate"]).code, 0);
    }
    for n in ["node1", "node2"] {
        lab.ok(n, &["drbdadm", "up", "r0"]);
    }
    wait_cstate(lab, "node1", "Connected\n");
}

/// Polls `drbdadm cstate` on `node` (each call is one step) until it prints `want`.
fn wait_cstate(lab: &Lab, node: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..20 {
        last = lab.ok(node, &["drbdadm", "cstate", "r0"]);
        if last == want {
            return;
        }
    }
    panic!("{node}: cstate stays {last:?}, wanted {want:?}");
}

fn dstate(lab: &Lab, node: &str) -> String {
    lab.ok(node, &["drbdadm", "dstate", "r0"])
}

/// STEP 7: node1 disconnects (both Secondary), node2 is promoted, its handler exits `rc`;
/// then the capture's reset: node2 secondary, node1 connect, unfence-peer after resync.
fn promote_with_handler_exit(m: &Mode, rc: i32) {
    let lab = fenced_lab(&format!("fence{rc}-{}", m.version), m, true);
    connected_pair(&lab);
    lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
    assert_eq!(lab.ok("node2", &["drbdadm", "cstate", "r0"]), m.waiting());
    assert_eq!(dstate(&lab, "node2"), "UpToDate/DUnknown\n");
    set_rc(&lab, rc);
    let r = lab.run("node2", &["drbdadm", "primary", "r0"]);
    let log = lines(&lab, "fence.log");
    let line = format!("{LOG_ON_NODE2} -> exit {rc}");
    // The handler asked node1 for its role while node2's drbdadm waited: the lock was free.
    let peer_roles = lines(&lab, "peer-role.log");
    assert!(
        !peer_roles.is_empty()
            && peer_roles
                .iter()
                .all(|l| format!("{l}\n") == m.role_alone("Secondary")),
        "exit {rc}: the handler's drbdadm on the peer failed: {peer_roles:?}"
    );
    match rc {
        3 | 4 | 5 | 7 => {
            assert_eq!((r.code, r.out.as_str()), (0, ""), "exit {rc}");
            assert_eq!(log, vec![line], "exit {rc}: called once");
            assert_eq!(
                lab.ok("node2", &["drbdadm", "role", "r0"]),
                m.role_alone("Primary")
            );
            let pdsk = if rc == 3 { "Inconsistent" } else { "Outdated" };
            assert_eq!(dstate(&lab, "node2"), format!("UpToDate/{pdsk}\n"));
            if m.v84() {
                assert!(
                    lab.proc_file("node2").contains(&format!(
                        " 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/{pdsk} C r-----\n"
                    )),
                    "{}",
                    lab.proc_file("node2")
                );
            }
            // The sim does not outdate the peer: that is the handler's job.
            assert_eq!(dstate(&lab, "node1"), "UpToDate/DUnknown\n");
        }
        6 => {
            assert_eq!(r.code, 17);
            assert_eq!(
                r.out,
                m.primary_failed("(-2) Need access to UpToDate data", 17)
            );
            assert_eq!(log, vec![line], "exit 6: called once");
            assert_eq!(
                lab.ok("node2", &["drbdadm", "role", "r0"]),
                m.role_alone("Secondary")
            );
            assert_eq!(dstate(&lab, "node2"), "Outdated/DUnknown\n");
        }
        _ => {
            assert_eq!(r.code, 11);
            assert_eq!(
                r.out,
                m.primary_failed("(-7) Refusing to be Primary while peer is not outdated", 11)
            );
            assert_eq!(log, vec![line; 4], "exit {rc}: called 4 times");
            assert_eq!(
                lab.ok("node2", &["drbdadm", "role", "r0"]),
                m.role_alone("Secondary")
            );
            assert_eq!(dstate(&lab, "node2"), "UpToDate/DUnknown\n");
        }
    }
    // Reset as in the capture.
    lab.ok("node2", &["drbdadm", "secondary", "r0"]);
    lab.ok("node1", &["drbdadm", "connect", "r0"]);
    wait_cstate(&lab, "node2", "Connected\n");
    lab.ok("node2", &["drbdadm", "cstate", "r0"]);
    assert_eq!(dstate(&lab, "node2"), "UpToDate/UpToDate\n");
    assert_eq!(dstate(&lab, "node1"), "UpToDate/UpToDate\n");
    // unfence-peer runs on the node that was SyncSource (node2, which had moved on);
    // not after 6, 1, 0 (no Primary, no resync).
    let unf = lines(&lab, "unfence.log");
    if matches!(rc, 3 | 4 | 5 | 7) {
        assert_eq!(
            unf,
            vec!["unfence-peer called: args=[] DRBD_RESOURCE=r0 DRBD_PEERS=node1".to_string()],
            "exit {rc}"
        );
    } else {
        assert!(unf.is_empty(), "exit {rc}: {unf:?}");
    }
    assert_eq!(lines(&lab, "fence.log").len(), log.len(), "no more calls");
}

#[test]
fn handler_exit_4_peer_fenced() {
    for m in &MODES {
        promote_with_handler_exit(m, 4);
    }
}

#[test]
fn handler_exit_5_peer_unreachable() {
    for m in &MODES {
        promote_with_handler_exit(m, 5);
    }
}

#[test]
fn handler_exit_7_peer_stonithed() {
    for m in &MODES {
        promote_with_handler_exit(m, 7);
    }
}

#[test]
fn handler_exit_3_peer_inconsistent() {
    for m in &MODES {
        promote_with_handler_exit(m, 3);
    }
}

#[test]
fn handler_exit_6_outdates_this_node() {
    for m in &MODES {
        promote_with_handler_exit(m, 6);
    }
}

#[test]
fn handler_exit_1_refused_after_four_calls() {
    for m in &MODES {
        promote_with_handler_exit(m, 1);
    }
}

#[test]
fn handler_exit_0_refused_after_four_calls() {
    for m in &MODES {
        promote_with_handler_exit(m, 0);
    }
}

#[test]
fn no_handler_is_refused_like_exit_0() {
    for m in &MODES {
        let lab = fenced_lab(&format!("nohandler-{}", m.version), m, false);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        let r = lab.run("node2", &["drbdadm", "primary", "r0"]);
        assert_eq!(r.code, 11, "{}", r.out);
        assert_eq!(
            r.out,
            m.primary_failed("(-7) Refusing to be Primary while peer is not outdated", 11)
        );
    }
}

#[test]
fn connected_promotion_calls_no_handler() {
    for m in &MODES {
        let lab = fenced_lab(&format!("connpri-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "primary", "r0"]);
        assert!(lines(&lab, "fence.log").is_empty());
        assert_eq!(
            lab.ok("node1", &["drbdadm", "role", "r0"]),
            m.role_pair("Primary", "Secondary")
        );
    }
}

#[test]
fn forced_promotion_proceeds_after_a_failed_handler() {
    for m in &MODES {
        let lab = fenced_lab(&format!("force-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        set_rc(&lab, 1);
        let r = lab.run("node2", &["drbdadm", "primary", "--force", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(
            lines(&lab, "fence.log").len(),
            1,
            "called once, then forced"
        );
        assert_eq!(dstate(&lab, "node2"), "UpToDate/Outdated\n");
        // An Outdated disk: --force makes it UpToDate, then the handler is asked (exit 6
        // outdates this node, --force overrides that too).
        let lab = fenced_lab(&format!("force6-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        set_rc(&lab, 6);
        lab.ok("node2", &["drbdadm", "primary", "--force", "r0"]);
        assert_eq!(lines(&lab, "fence.log").len(), 1);
        assert_eq!(dstate(&lab, "node2"), "UpToDate/Outdated\n");
    }
}

#[test]
fn drbdsetup_primary_calls_the_handler_too() {
    for m in &MODES {
        let lab = fenced_lab(&format!("setup-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        set_rc(&lab, 0);
        let obj = if m.v84() { "0" } else { "r0" };
        let r = lab.run("node2", &["drbdsetup", "primary", obj]);
        assert_eq!(r.code, 11);
        assert_eq!(
            r.out,
            format!("{obj}: State change failed: (-7) Refusing to be Primary while peer is not outdated\n")
        );
        assert_eq!(lines(&lab, "fence.log").len(), 4);
        set_rc(&lab, 4);
        lab.ok("node2", &["drbdsetup", "primary", obj]);
        assert_eq!(dstate(&lab, "node2"), "UpToDate/Outdated\n");
    }
}

/// STEP 2, 3, 4, 6a, 6c and BONUS B0/B1 (no fencing needed for outdate).
#[test]
fn outdate_semantics() {
    for m in &MODES {
        let lab = fenced_lab(&format!("outdate-{}", m.version), m, true);
        connected_pair(&lab);
        // Connected Secondary (6a): a silent no-op, stays UpToDate.
        let r = lab.run("node2", &["drbdadm", "outdate", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(dstate(&lab, "node2"), "UpToDate/UpToDate\n");
        lab.ok("node1", &["drbdadm", "primary", "r0"]);
        let r = lab.run("node2", &["drbdadm", "outdate", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(dstate(&lab, "node2"), "UpToDate/UpToDate\n");
        // Connected Primary: 0, unchanged.
        let r = lab.run("node1", &["drbdadm", "outdate", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(dstate(&lab, "node1"), "UpToDate/UpToDate\n");
        // Disconnected Primary (3): 17, nothing printed, unchanged.
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        let r = lab.run("node1", &["drbdadm", "outdate", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (17, ""));
        assert_eq!(dstate(&lab, "node1"), "UpToDate/Outdated\n");
        lab.ok("node1", &["drbdadm", "connect", "r0"]);
        wait_cstate(&lab, "node1", "Connected\n");
        lab.ok("node1", &["drbdadm", "secondary", "r0"]);
        // Disconnected Secondary (2): Outdated, silent; again: 0 unchanged.
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        let r = lab.run("node2", &["drbdadm", "outdate", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(dstate(&lab, "node2"), "Outdated/DUnknown\n");
        let r = lab.run("node2", &["drbdadm", "outdate", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(dstate(&lab, "node2"), "Outdated/DUnknown\n");
        // Promote an Outdated disk (4, 6c): (-2), 17, no handler; --force overrides.
        let r = lab.run("node2", &["drbdadm", "primary", "r0"]);
        assert_eq!(r.code, 17);
        assert_eq!(
            r.out,
            m.primary_failed("(-2) Need access to UpToDate data", 17)
        );
        assert!(lines(&lab, "fence.log").is_empty());
        lab.ok("node2", &["drbdadm", "secondary", "r0"]);
        // Down resource (B0): drbdmeta outdates the meta data.
        lab.ok("node2", &["drbdadm", "down", "r0"]);
        lab.ok("node1", &["drbdadm", "down", "r0"]);
        assert_eq!(
            lab.sim("node1", &["set-disk", "node1", "r0", "UpToDate"])
                .code,
            0
        );
        if m.v84() {
            assert_eq!(dstate(&lab, "node1"), "Consistent\n");
        }
        let r = lab.run("node1", &["drbdadm", "outdate", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        if m.v84() {
            assert_eq!(dstate(&lab, "node1"), "Outdated\n");
        }
        lab.ok("node1", &["drbdadm", "up", "r0"]);
        assert_eq!(dstate(&lab, "node1"), "Outdated/DUnknown\n");
        // Inconsistent, not connected (B1): drbdmeta refuses, drbdadm exits 5.
        assert_eq!(
            lab.sim("node1", &["set-disk", "node1", "r0", "Inconsistent"])
                .code,
            0
        );
        let r = lab.run("node1", &["drbdadm", "outdate", "r0"]);
        assert_eq!(r.code, 5);
        let fmt = if m.v84() { "v08" } else { "v09" };
        assert_eq!(
            r.out,
            format!("Device '0' is configured!\nCommand 'drbdmeta 0 {fmt} /dev/loop-fake0 internal outdate' terminated with exit code 20\n")
        );
        assert_eq!(dstate(&lab, "node1"), "Inconsistent/DUnknown\n");
    }
}

/// STEP 7c: the Secondary disconnects from a Primary: it outdates itself, no handler.
#[test]
fn disconnect_on_secondary_outdates_itself() {
    for m in &MODES {
        let lab = fenced_lab(&format!("disc-sec-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "primary", "r0"]);
        let r = lab.run("node2", &["drbdadm", "disconnect", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(dstate(&lab, "node2"), "Outdated/DUnknown\n");
        assert_eq!(
            lab.ok("node2", &["drbdadm", "cstate", "r0"]),
            "StandAlone\n"
        );
        assert_eq!(dstate(&lab, "node1"), "UpToDate/Outdated\n");
        assert_eq!(
            lab.ok("node1", &["drbdadm", "role", "r0"]),
            m.role_alone("Primary")
        );
        assert_eq!(lab.ok("node1", &["drbdadm", "cstate", "r0"]), m.waiting());
        assert!(lines(&lab, "fence.log").is_empty());
        // Reconnect: resync from node1, then unfence-peer on node1.
        lab.ok("node2", &["drbdadm", "connect", "r0"]);
        wait_cstate(&lab, "node1", "Connected\n");
        lab.ok("node1", &["drbdadm", "cstate", "r0"]);
        assert_eq!(dstate(&lab, "node1"), "UpToDate/UpToDate\n");
        assert_eq!(
            lines(&lab, "unfence.log"),
            vec!["unfence-peer called: args=[] DRBD_RESOURCE=r0 DRBD_PEERS=node2".to_string()]
        );
    }
}

/// STEP 7d: the Primary disconnects: the peer becomes Outdated, no handler.
#[test]
fn disconnect_on_primary_outdates_the_peer() {
    for m in &MODES {
        let lab = fenced_lab(&format!("disc-pri-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "primary", "r0"]);
        let r = lab.run("node1", &["drbdadm", "disconnect", "r0"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(dstate(&lab, "node1"), "UpToDate/Outdated\n");
        assert_eq!(
            lab.ok("node1", &["drbdadm", "cstate", "r0"]),
            "StandAlone\n"
        );
        assert_eq!(dstate(&lab, "node2"), "Outdated/DUnknown\n");
        assert_eq!(lab.ok("node2", &["drbdadm", "cstate", "r0"]), m.waiting());
        assert!(lines(&lab, "fence.log").is_empty());
        if m.v84() {
            assert!(lab
                .proc_file("node1")
                .contains(" 0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/Outdated   r-----\n"));
        }
    }
}

/// Both Secondary: a disconnect outdates nobody (STEP 7's preparation).
#[test]
fn disconnect_between_secondaries_outdates_nobody() {
    for m in &MODES {
        let lab = fenced_lab(&format!("disc-ss-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        assert_eq!(dstate(&lab, "node1"), "UpToDate/DUnknown\n");
        assert_eq!(dstate(&lab, "node2"), "UpToDate/DUnknown\n");
    }
}

/// STEP 7b: the Primary loses the link; its ping timeout calls the handler (exit 4).
#[test]
fn ping_timeout_calls_the_primarys_handler() {
    for m in &MODES {
        let lab = fenced_lab(&format!("ping-{}", m.version), m, true);
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "primary", "r0"]);
        assert_eq!(lab.sim("node1", &["cut-link"]).code, 0);
        assert_eq!(lab.ok("node1", &["drbdadm", "cstate", "r0"]), m.waiting());
        assert_eq!(dstate(&lab, "node1"), "UpToDate/DUnknown\n");
        assert!(
            lines(&lab, "fence.log").is_empty(),
            "not before the timeout"
        );
        let r = lab.sim("node1", &["ping-timeout", "node1"]);
        assert_eq!((r.code, r.out.as_str()), (0, "r0 4\n"));
        assert_eq!(
            lines(&lab, "fence.log"),
            vec![format!("{LOG_ON_NODE1} -> exit 4")]
        );
        assert_eq!(
            lines(&lab, "peer-role.log"),
            vec![m.role_alone("Secondary").trim_end().to_string()]
        );
        assert_eq!(dstate(&lab, "node1"), "UpToDate/Outdated\n");
        assert_eq!(
            lab.ok("node1", &["drbdadm", "role", "r0"]),
            m.role_alone("Primary")
        );
        // The test handler does not outdate node2.
        assert_eq!(dstate(&lab, "node2"), "UpToDate/DUnknown\n");
        // Once recorded, no further call; a Secondary never calls.
        let r = lab.sim("node1", &["ping-timeout", "node1"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        let r = lab.sim("node2", &["ping-timeout", "node2"]);
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        assert_eq!(lines(&lab, "fence.log").len(), 1);
        // Link back: resync from node1, unfence-peer on node1, pdsk back to UpToDate.
        assert_eq!(lab.sim("node1", &["heal-link"]).code, 0);
        wait_cstate(&lab, "node1", "Connected\n");
        lab.ok("node1", &["drbdadm", "cstate", "r0"]);
        assert_eq!(dstate(&lab, "node1"), "UpToDate/UpToDate\n");
        assert_eq!(dstate(&lab, "node2"), "UpToDate/UpToDate\n");
        assert_eq!(
            lines(&lab, "unfence.log"),
            vec!["unfence-peer called: args=[] DRBD_RESOURCE=r0 DRBD_PEERS=node2".to_string()]
        );
    }
}

/// The handler's exit 6 on a Primary's ping timeout changes nothing (a Primary cannot be
/// outdated); exit 1 neither.
#[test]
fn ping_timeout_failed_handler_changes_nothing() {
    for m in &MODES {
        for rc in [1, 6] {
            let lab = fenced_lab(&format!("ping{rc}-{}", m.version), m, true);
            connected_pair(&lab);
            lab.ok("node1", &["drbdadm", "primary", "r0"]);
            assert_eq!(lab.sim("node1", &["cut-link"]).code, 0);
            set_rc(&lab, rc);
            let r = lab.sim("node1", &["ping-timeout", "node1"]);
            assert_eq!((r.code, r.out), (0, format!("r0 {rc}\n")));
            assert_eq!(dstate(&lab, "node1"), "UpToDate/DUnknown\n");
            assert_eq!(
                lab.ok("node1", &["drbdadm", "role", "r0"]),
                m.role_alone("Primary")
            );
        }
    }
}

/// Handler strings come from the real `drbdadm dump`, quoting included; `common` supplies
/// the fencing policy and handlers a resource does not set.
#[test]
fn policy_and_handlers_from_common() {
    for m in &MODES {
        let lab = fenced_lab(&format!("common-{}", m.version), m, true);
        let d = lab.dir.display().to_string();
        let section = if m.v84() { "disk" } else { "net" };
        fs::write(
            &lab.conf,
            format!(
                "common {{
  {section} {{ fencing resource-only; }}
  handlers {{ fence-peer \"{d}/fence.sh 'a b'\"; }}
}}
resource r0 {{
  on node1 {{ device /dev/drbd0 minor 0; disk /dev/loop-fake0; address 10.0.254.1:7788; meta-disk internal; }}
  on node2 {{ device /dev/drbd0 minor 0; disk /dev/loop-fake0; address 10.0.254.2:7788; meta-disk internal; }}
}}
"
            ),
        )
        .unwrap();
        connected_pair(&lab);
        lab.ok("node1", &["drbdadm", "disconnect", "r0"]);
        lab.ok("node2", &["drbdadm", "primary", "r0"]);
        assert_eq!(
            lines(&lab, "fence.log"),
            vec![LOG_ON_NODE2.replace("args=[]", "args=[a b]") + " -> exit 4"]
        );
    }
}
