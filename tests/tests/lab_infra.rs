//! The lab itself: nodes, links, ssh, shared store bytes, failures, and a clean teardown.
//! These need root, the workspace binaries (`cargo build --workspace --bins`) and a few
//! seconds each.
#![forbid(unsafe_code)]

use std::time::Duration;

use ctmgr_tests::lab::{lan_addr, peer_addr, Bins, Footprint, Lab, LabSpec, GATEWAY};

fn bins() -> Bins {
    Bins::from_env().expect("the lab needs the workspace binaries")
}

fn up(nodes: usize) -> Lab {
    Lab::up(LabSpec::new(nodes), &bins()).expect("lab up")
}

fn ping(lab: &Lab, from: usize, addr: &str) -> bool {
    lab.node(from)
        .cmd_timeout(
            &["ping", "-c", "1", "-W", "1", addr],
            Duration::from_secs(10),
        )
        .success()
}

fn ssh(lab: &Lab, from: usize, addr: &str) -> ctmgr_tests::Output {
    let target = format!("root@{addr}");
    lab.node(from)
        .cmd_timeout(&["ssh", &target, "hostname"], Duration::from_secs(20))
}

#[track_caller]
fn assert_gone(fp: &Footprint) {
    let left = fp.leftovers();
    assert!(left.is_empty(), "lab {} left behind: {left:#?}", fp.name);
}

#[test]
fn lab_two_nodes() {
    let lab = up(2);
    let (n1, n2) = (lab.node(1), lab.node(2));

    // Hostnames and the lab's files.
    n1.cmd(&["hostname"]).assert_success();
    assert_eq!(n1.cmd(&["hostname"]).stdout.trim(), "node1");
    assert_eq!(n2.cmd(&["hostname"]).stdout.trim(), "node2");
    let toml = n2.read_file("/etc/ctmgr/cluster.toml").unwrap();
    assert!(toml.contains("drbd_resource = \"r1\""), "{toml}");
    assert_eq!(
        toml,
        std::fs::read_to_string(n2.path_in("/etc/ctmgr/cluster.toml").unwrap()).unwrap()
    );
    let which = n1.cmd(&["sh", "-c", "command -v drbdadm"]);
    assert_eq!(which.stdout.trim(), "/usr/local/sbin/drbdadm");
    if let Ok(own) = std::fs::read_to_string("/etc/ctmgr/cluster.toml") {
        assert_ne!(own, toml, "the machine's own /etc is never the lab's");
    }

    // Both paths, both ways, and the gateway.
    for (from, to) in [(1, 2), (2, 1)] {
        assert!(
            ping(&lab, from, &peer_addr(to)),
            "peer ping node{from}->node{to}"
        );
        assert!(
            ping(&lab, from, &lan_addr(to)),
            "LAN ping node{from}->node{to}"
        );
        assert!(ping(&lab, from, GATEWAY), "gateway ping from node{from}");
        for addr in [peer_addr(to), lan_addr(to), format!("node{to}")] {
            let out = ssh(&lab, from, &addr);
            out.assert_success();
            assert_eq!(out.stdout.trim(), format!("node{to}"));
        }
    }

    // The stores are mounted at home, and their bytes are shared: what node1 writes to
    // store1 is what node2 reads from the same device.
    assert_eq!(
        n1.store_mounts().unwrap(),
        vec!["/srv/store1".into()] as Vec<std::path::PathBuf>
    );
    assert_eq!(
        n2.store_mounts().unwrap(),
        vec!["/srv/store2".into()] as Vec<std::path::PathBuf>
    );
    n1.write_file("/srv/store1/containers/hello", b"from node1\n")
        .unwrap();
    n1.cmd(&["umount", "/srv/store1"]).assert_success();
    let dev = lab.store_device("store1").unwrap();
    n2.cmd(&["mount", "-t", "btrfs", "-o", "noatime", &dev, "/srv/store1"])
        .assert_success();
    assert_eq!(
        n2.read_file("/srv/store1/containers/hello").unwrap(),
        "from node1\n"
    );
    n2.cmd(&["umount", "/srv/store1"]).assert_success();
    n1.cmd(&["mount", "-t", "btrfs", "-o", "noatime", &dev, "/srv/store1"])
        .assert_success();
    // Mounted only inside the node, never on the machine.
    assert!(ctmgr_tests::procfs::own_mounts()
        .unwrap()
        .iter()
        .all(|m| m.source != dev));

    // A cut peer link leaves the LAN.
    lab.cut_link();
    assert!(!ping(&lab, 1, &peer_addr(2)));
    assert!(!ping(&lab, 2, &peer_addr(1)));
    assert!(ping(&lab, 1, &lan_addr(2)));
    ssh(&lab, 1, &lan_addr(2)).assert_success();
    // A pulled cable: eth1 stays up (no carrier), so DRBD's config check still finds the
    // node's peer-link address.
    for node in [n1, n2] {
        let link = node.cmd(&["ip", "link", "show", "dev", "eth1"]);
        assert!(link.stdout.contains("NO-CARRIER"), "{link}");
        node.cmd(&["/usr/sbin/drbdadm", "-c", "/etc/drbd.conf", "dump", "all"])
            .assert_success();
    }
    lab.heal_link();
    assert!(ping(&lab, 1, &peer_addr(2)));

    // A crashed node is gone on both paths; revived, it answers again.
    lab.crash(2);
    assert!(!ping(&lab, 1, &peer_addr(2)));
    assert!(!ping(&lab, 1, &lan_addr(2)));
    assert!(!ssh(&lab, 1, &lan_addr(2)).success());
    assert!(n2.store_mounts().unwrap().is_empty());
    assert!(
        ping(&lab, 1, GATEWAY),
        "the survivor still reaches its gateway"
    );
    lab.revive(2);
    ssh(&lab, 1, &peer_addr(2)).assert_success();
    ssh(&lab, 2, &lan_addr(1)).assert_success();

    let status = lab.status();
    assert!(status.contains("node2:"), "{status}");

    let fp = lab.footprint().unwrap();
    assert!(!fp.processes.is_empty(), "sshd runs in the nodes");
    assert_eq!(fp.loops.len(), 2);
    lab.down().unwrap();
    assert_gone(&fp);
}

#[test]
fn lab_sandbox_one_node() {
    let lab = up(1);
    let n1 = lab.node(1);
    assert_eq!(n1.cmd(&["hostname"]).stdout.trim(), "node1");
    assert!(ping(&lab, 1, GATEWAY));
    assert_eq!(
        n1.store_mounts().unwrap(),
        vec![std::path::PathBuf::from("/srv/store1")]
    );
    n1.cmd(&["test", "-d", "/srv/store1/containers"])
        .assert_success();
    let fstype = n1.cmd(&["stat", "-f", "-c", "%T", "/srv/store1"]);
    assert_eq!(fstype.stdout.trim(), "btrfs");
    let toml = n1.read_file("/etc/ctmgr/cluster.toml").unwrap();
    assert!(!toml.contains("drbd") && !toml.contains("node2"), "{toml}");
    // LXC sees the bridge through the node's own sysfs.
    n1.cmd(&["test", "-d", "/sys/class/net/br0/bridge"])
        .assert_success();
    let fp = lab.footprint().unwrap();
    lab.down().unwrap();
    assert_gone(&fp);
}

#[test]
fn lab_up_down_repeated() {
    // The lab issue's bar: up/down ten times in a row leaves nothing behind.
    for _ in 0..10 {
        let lab = up(2);
        ssh(&lab, 1, &peer_addr(2)).assert_success();
        let fp = lab.footprint().unwrap();
        lab.down().unwrap();
        assert_gone(&fp);
    }
}

#[test]
fn lab_torn_down_when_a_test_panics() {
    let mut fp = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = up(2);
        fp = Some(lab.footprint().unwrap());
        panic!("a failing test");
    }));
    assert!(result.is_err());
    assert_gone(&fp.expect("the lab came up"));
}

#[test]
fn lab_down_by_name_and_sweep() {
    // A lab left up on purpose is torn down by name from its directory alone.
    let lab = up(2);
    let name = lab.name().to_string();
    let fp = lab.footprint().unwrap();
    lab.persist().unwrap();
    assert!(fp.leftovers().len() > 1, "a persisted lab stays up");
    let again = Lab::attach(&name).unwrap();
    again.node(1).cmd(&["true"]).assert_success();
    drop(again); // attached labs are not torn down on drop
    assert!(fp.dir.exists());
    Lab::down_by_name(&name).unwrap();
    assert_gone(&fp);
    Lab::down_by_name(&name).unwrap(); // idempotent

    // A lab whose owner died is swept.
    let lab = up(1);
    let fp = lab.footprint().unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id() as i32;
    dead.wait().unwrap();
    let mut st = lab.state().unwrap();
    lab.persist().unwrap();
    st.owner_pid = Some(dead_pid);
    ctmgr_tests::lab::Layout::new(&fp.name)
        .write_state(&st)
        .unwrap();
    ctmgr_tests::lab::sweep().unwrap();
    assert_gone(&fp);
}
