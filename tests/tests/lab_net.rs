//! `ctmgr net check|render` and `ctmgr drbd render|lint` in the two-node lab:
//! a healthy node checks clean; an unreachable peer fails within its bound
//! with exit 1; rendered DRBD resources pass the real `drbdadm dump`.
#![forbid(unsafe_code)]

use ctmgr_tests::lab::{Bins, Lab, LabSpec};

#[test]
fn lab_net_check_render_and_drbd_render() {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    let lab = Lab::up(LabSpec::new(2), &bins).expect("lab up");
    let (n1, n2) = (lab.node(1), lab.node(2));

    let ok = n1.ctmgr(&["net", "check"]);
    ok.assert_success();
    assert!(ok.stdout.contains("peer-reach:link"), "{ok}");

    let render = n1.ctmgr(&["net", "render", "--format", "networkd"]);
    render.assert_success();
    assert!(render.stdout.contains("Address=10.1.0.5/24"), "{render}");
    assert!(render.stdout.contains("Address=10.0.254.1/30"), "{render}");
    let ifupdown = n1.ctmgr(&["net", "render"]);
    assert!(ifupdown.stdout.contains("bridge_ports eth0"), "{ifupdown}");

    // Rendered .res files: written 0600 and accepted by the real parser.
    n1.cmd(&["mkdir", "-p", "/root/drbd.d"]).assert_success();
    n1.ctmgr(&["drbd", "render", "--out", "/root/drbd.d"])
        .assert_success();
    let mode = n1.cmd(&["stat", "-c", "%a", "/root/drbd.d/r0.res"]);
    assert_eq!(mode.stdout.trim(), "600", "{mode}");
    n1.cmd(&[
        "sh",
        "-c",
        "printf 'include \"/root/drbd.d/*.res\";\\n' > /root/drbd.conf",
    ])
    .assert_success();
    n1.cmd(&["/usr/sbin/drbdadm", "-c", "/root/drbd.conf", "dump", "all"])
        .assert_success();
    let lint = n1.ctmgr(&["drbd", "lint", "/root/drbd.d/r0.res"]);
    lint.assert_success();

    // A crashed peer: net check ends (bounded probes) with exit 1 naming it.
    lab.crash(2);
    let bad = n1.ctmgr(&["net", "check"]);
    bad.assert_code(1);
    assert!(bad.stdout.contains("peer-reach"), "{bad}");
    let _ = n2;
}
