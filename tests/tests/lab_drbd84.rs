//! The same failover in a lab whose DRBD stand-in plays DRBD 8.4 (the
//! in-kernel module of the runbook's hosts): `drbdsetup status --json` does
//! not exist there, so ctmgr reads `drbdadm status`; the refusals and the
//! takeover after a crash behave as with DRBD 9.
#![forbid(unsafe_code)]

use ctmgr_tests::lab::{Bins, Lab, LabSpec};

#[test]
fn lab_drbd84_status_refusal_and_takeover() {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    let mut spec = LabSpec::new(2);
    spec.drbd_version = Some("8.4".into());
    let lab = Lab::up(spec, &bins).expect("lab up");
    let (n1, n2) = (lab.node(1), lab.node(2));

    let st = n1.ctmgr(&["--json", "drbd", "status"]);
    st.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_ne!(
        doc["source"], "drbdsetup-json",
        "8.4 has no JSON status: {st}"
    );
    assert_eq!(doc["resources"][0]["state"]["role"], "Primary", "{st}");

    n1.ctmgr(&["create", "web", "--start"]).assert_success();
    let refused = n2.ctmgr(&["takeover", "store1"]);
    refused.assert_code(3);
    assert!(refused.stdout.contains("peer-primary"), "{refused}");
    assert!(n2
        .cmd(&["drbdadm", "role", "r0"])
        .stdout
        .starts_with("Secondary"));

    lab.crash(1);
    let t = n2.ctmgr(&["takeover", "store1"]);
    t.assert_success();
    assert!(t.stdout.contains("peer-down"), "{t}");
    let list = n2.ctmgr(&["--json", "list"]);
    let doc: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(doc["containers"][0]["state"], "RUNNING", "{list}");
}
