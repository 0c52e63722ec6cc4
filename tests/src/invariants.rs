//! The safety invariants every lab test asserts after every step (DESIGN.md §4 rules 1 and
//! 9): never two Primaries for a resource, never a store mounted twice or mounted where it
//! is not Primary, never one rootfs running twice — whatever name, lxcpath or config started
//! it.
//!
//! "Running twice" is decided from the kernel, not from LXC's lists: every container is a
//! PID namespace of its own; its root mount (from `/proc/PID/mountinfo`) names the block
//! device and the path inside that filesystem (the rootfs subvolume). Two PID namespaces
//! whose root is the same (device, path) on one of the lab's store devices are one rootfs
//! booted twice. The lab's nodes share this machine's kernel, so one scan sees both nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::lab::{Lab, Node};

/// Deadline for one state query inside a node.
const Q: Duration = Duration::from_secs(30);

/// The lab's replicated stores: (store, DRBD resource, mountpoint).
pub const STORES: [(&str, &str, &str); 2] = [
    ("store1", "r0", "/srv/store1"),
    ("store2", "r1", "/srv/store2"),
];

/// `drbdadm role RES` inside the node (DRBD 9 prints `Primary`, 8.4 `Primary/Secondary`);
/// `None` when the node cannot say (crashed, resource down).
pub fn role(node: &Node, res: &str) -> Option<String> {
    let out = node.cmd_timeout(&["drbdadm", "role", res], Q);
    out.success().then(|| {
        let r = out.stdout.trim();
        r.split('/').next().unwrap_or(r).to_string()
    })
}

/// Is `mountpoint` a mount point inside the node?
pub fn mounted(node: &Node, mountpoint: &str) -> bool {
    node.store_mounts()
        .expect("reading the node's mounts")
        .iter()
        .any(|m| m == &PathBuf::from(mountpoint))
}

/// Nodes the stand-in's shared state says are up and Primary for `res` (the truth across
/// both nodes, also for a crashed node).
pub fn sim_primaries(lab: &Lab, res: &str) -> Vec<String> {
    let st = lab.state().expect("lab state");
    let out = lab.sim(&st, &["show"]).expect("ctmgr-drbd-sim show");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("sim show is JSON");
    let mut p: Vec<String> = v["resources"][res]["nodes"]
        .as_object()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|(_, n)| n["up"] == true && n["role"] == "Primary")
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    p.sort();
    p
}

/// One running container instance as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// The PID namespace (`pid:[4026532281]`).
    pub pidns: String,
    /// A process in it.
    pub pid: i32,
}

/// The root mount of a process: (source device, path inside that filesystem).
fn root_of(pid: i32) -> Option<(String, String)> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        if f.get(4) != Some(&"/") {
            return None;
        }
        let source = right.split(' ').nth(1)?;
        Some((source.to_string(), f.get(3)?.to_string()))
    })
}

/// Every container instance whose root lies on one of `devices`, keyed by (device, path).
pub fn rootfs_instances(devices: &[String]) -> BTreeMap<(String, String), BTreeSet<Instance>> {
    let own = fs::read_link("/proc/self/ns/pid").ok();
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<(String, String), BTreeSet<Instance>> = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/pid")) else {
            continue;
        };
        if Some(&ns) == own.as_ref() || !seen.insert(ns.clone()) {
            continue;
        }
        if let Some(root) = root_of(pid).filter(|(dev, _)| devices.contains(dev)) {
            out.entry(root).or_default().insert(Instance {
                pidns: ns.display().to_string(),
                pid,
            });
        }
    }
    out
}

/// Roots on the lab's store devices that more than one container instance runs from.
pub fn rootfs_twice(lab: &Lab) -> Vec<String> {
    let devices: Vec<String> = lab
        .state()
        .expect("lab state")
        .stores
        .into_iter()
        .filter_map(|s| s.loop_dev)
        .collect();
    rootfs_instances(&devices)
        .into_iter()
        .filter(|(_, inst)| inst.len() > 1)
        .map(|((dev, path), inst)| format!("{dev}:{path} runs {} times: {inst:?}", inst.len()))
        .collect()
}

/// The invariants of safety rules 1 and 9 after any sequence of failures and commands:
/// at most one Primary per resource (by the stand-in's state and by `drbdadm role` on every
/// live node), no store mounted on both nodes or where it is not Primary, and no rootfs
/// running twice on the machine.
#[track_caller]
pub fn assert_never_double(lab: &Lab) {
    let down = lab.state().expect("lab state").crashed;
    let live: Vec<usize> = (1..=lab.nodes().len())
        .filter(|n| !down.contains(n))
        .collect();
    for (store, res, mp) in STORES {
        let sim = sim_primaries(lab, res);
        assert!(
            sim.len() <= 1,
            "{res} is Primary on {sim:?}\n{}",
            lab.status()
        );
        let adm: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&n| role(lab.node(n), res).as_deref() == Some("Primary"))
            .collect();
        assert!(
            adm.len() <= 1,
            "drbdadm role {res} says Primary on nodes {adm:?}\n{}",
            lab.status()
        );
        let mounts: Vec<usize> = (1..=lab.nodes().len())
            .filter(|&n| mounted(lab.node(n), mp))
            .collect();
        assert!(
            mounts.len() <= 1,
            "{store} mounted on nodes {mounts:?}\n{}",
            lab.status()
        );
        for &n in &mounts {
            assert!(
                adm.contains(&n),
                "{store} is mounted on node{n}, which is not Primary for {res}\n{}",
                lab.status()
            );
        }
    }
    let twice = rootfs_twice(lab);
    assert!(
        twice.is_empty(),
        "one rootfs runs more than once:\n{}\n{}",
        twice.join("\n"),
        lab.status()
    );
}
