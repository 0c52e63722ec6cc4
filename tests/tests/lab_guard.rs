//! One rootfs runs once, whatever started it (issue 10, routes D7 and D8): the pre-start
//! guard judges "already running" by the rootfs's identity (device and inode, seen through
//! every running process's root), not by container name or lxcpath; and the keys ctmgr owns
//! in a container's LXC config (the guard hook, the rootfs, includes, fstab, the hostname)
//! cannot be set or cleared by a profile, are refused by `sync`, and are checked by `doctor`
//! in liblxc's effective view (after includes).
//!
//! Every step is followed by [`assert_never_double`]: at most one Primary, one mount, one
//! instance of each rootfs (from the kernel). These need root and the workspace binaries
//! (`cargo build --workspace --bins`).
#![forbid(unsafe_code)]

use std::time::Duration;

use ctmgr_tests::invariants::assert_never_double;
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use ctmgr_tests::run::Opts;
use ctmgr_tests::Output;

/// Deadline for one state query inside a node.
const Q: Duration = Duration::from_secs(30);

const CONFIG: &str = "/srv/store1/containers/web/config";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

/// Names of the containers running inside the node from `lxcpath`, sorted.
fn running_in(node: &Node, lxcpath: &str) -> Vec<String> {
    let out = node.cmd_timeout(&["lxc-ls", "--running", "-1", "-P", lxcpath], Q);
    assert!(out.success(), "{out}");
    let mut v: Vec<String> = out.stdout.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

/// An `lxc-start` that must be refused: it fails, and the original `web` still runs alone.
#[track_caller]
fn assert_refused(lab: &Lab, out: &Output, what: &str) {
    assert!(!out.success(), "{what} started a second web: {out}");
    assert_never_double(lab);
    assert_eq!(
        running_in(lab.node(1), "/srv/store1/containers"),
        ["web"],
        "after {what}"
    );
}

/// `lxc-start ARGS -l DEBUG -o LOG` inside node1; the output and the log (liblxc 5 logs a
/// hook's words at DEBUG only), for messages.
fn lxc_start(node: &Node, args: &[&str], log: &str) -> (Output, String) {
    let mut argv = vec!["lxc-start"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["-l", "DEBUG", "-o", log]);
    let out = node.cmd(&argv);
    let text = node.read_file(log).unwrap_or_default();
    (out, text)
}

// ---------------------------------------------------------------------------------------
// D7: the same rootfs started under another lxcpath, another name, or the default lxcpath.

#[test]
fn lab_guard_refuses_a_second_start_of_one_rootfs_by_any_name_or_lxcpath() {
    let lab = up();
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "web", "--start"]).assert_success();
    assert_never_double(&lab);
    assert_eq!(running_in(n1, "/srv/store1/containers"), ["web"]);

    // 1. Its own config, another lxcpath.
    let other = format!("{}/x", n1.dir().display());
    n1.cmd(&["mkdir", "-p", &other]).assert_success();
    let (out, log) = lxc_start(
        n1,
        &["-n", "web", "-P", &other, "-f", CONFIG],
        "/root/attack1.log",
    );
    assert_refused(&lab, &out, "lxc-start -n web -P OTHER -f CONFIG");
    assert!(
        log.contains("ctmgr-guard: refusing to start container web")
            && log.contains("already running"),
        "the guard's reason is not in the log:\n{log}"
    );

    // 2. A copy of the config with another hostname, started under another name.
    let text = n1.read_file(CONFIG).unwrap();
    assert!(text.contains("ctmgr-guard --store store1"), "{text}");
    let copy: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("lxc.uts.name") {
                "lxc.uts.name = web2".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let copy_path = format!("{}/web2.config", n1.dir().display());
    n1.write_file(&copy_path, format!("{copy}\n").as_bytes())
        .unwrap();
    let web2 = format!("web2-{}", std::process::id());
    let (out, log) = lxc_start(n1, &["-n", &web2, "-f", &copy_path], "/root/attack2.log");
    assert_refused(&lab, &out, "lxc-start -n web2 -f COPY");
    assert!(log.contains("already running"), "{log}");

    // 3. What Pacemaker's ocf:heartbeat:lxc runs: the config, the default lxcpath.
    let (out, log) = lxc_start(n1, &["-n", "web", "-f", CONFIG], "/root/attack3.log");
    assert_refused(&lab, &out, "lxc-start -n web -f CONFIG");
    assert!(log.contains("already running"), "{log}");

    // The guard still lets the container itself start again once it is stopped.
    n1.ctmgr(&["stop", "web", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
    let (out, log) = lxc_start(
        n1,
        &["-n", "web", "-P", "/srv/store1/containers"],
        "/root/restart.log",
    );
    assert!(out.success(), "{out}\n{log}");
    assert_never_double(&lab);
    assert_eq!(running_in(n1, "/srv/store1/containers"), ["web"]);
}

// ---------------------------------------------------------------------------------------
// D8: a profile cannot switch the guard off; an include that clears it is seen by doctor
// and stops sync.

/// `ctmgr ARGS` inside node `n` with the node's own profile directory.
fn ctmgr_env(node: &Node, args: &[&str]) -> Output {
    let mut argv = vec!["ctmgr"];
    argv.extend_from_slice(args);
    node.cmd_with(
        &argv,
        &Opts {
            env: vec![(
                "CTMGR_TEMPLATE_DIR".to_string(),
                "/etc/ctmgr/templates".to_string(),
            )],
            ..Opts::default()
        },
    )
}

#[test]
fn lab_guard_reserved_keys_cannot_switch_the_guard_off() {
    let lab = up();
    let n1 = lab.node(1);
    n1.cmd(&["mkdir", "-p", "/etc/ctmgr/templates"])
        .assert_success();
    for (name, key, value) in [
        ("nohook", "lxc.hook.pre-start", ""),
        ("rootdir", "lxc.rootfs.path", "dir:/"),
        ("incl", "lxc.include", "/etc/ctmgr/templates/x.conf"),
    ] {
        let profile = format!(
            "description = \"attack\"\nlxc_template = \"busybox\"\noffline = true\nconfig = [\n  [\"{key}\", \"{value}\"],\n]\n"
        );
        n1.write_file(
            &format!("/etc/ctmgr/templates/{name}.toml"),
            profile.as_bytes(),
        )
        .unwrap();
        let out = ctmgr_env(n1, &["create", "c1", "--template", name]);
        out.assert_code(2);
        assert!(
            out.stderr.contains(key) && out.stderr.contains(&format!("{name}.toml:5")),
            "{out}"
        );
        assert!(
            !n1.cmd(&["test", "-e", "/srv/store1/containers/c1"])
                .success(),
            "a refused create left c1 behind"
        );
        assert_never_double(&lab);
    }

    // A config that an include clears the hook of: doctor sees it, sync refuses it.
    n1.ctmgr(&["create", "web"]).assert_success();
    assert_never_double(&lab);
    n1.ctmgr(&["sync"]).assert_success();
    assert_never_double(&lab);
    n1.write_file(
        "/srv/store1/containers/web/clear.conf",
        b"lxc.hook.pre-start =\n",
    )
    .unwrap();
    let text = n1.read_file(CONFIG).unwrap();
    n1.write_file(
        CONFIG,
        format!("{text}lxc.include = /srv/store1/containers/web/clear.conf\n").as_bytes(),
    )
    .unwrap();
    let out = n1.ctmgr(&["doctor"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("guard:web") && l.contains("effective")),
        "{out}"
    );
    assert_never_double(&lab);
    let out = n1.ctmgr(&["sync"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stdout.contains("web") && out.stdout.contains("guard"),
        "{out}"
    );
    let replica = lab
        .node(2)
        .read_file("/srv/store2/containers/web/config")
        .unwrap_or_default();
    assert!(
        !replica.contains("clear.conf"),
        "sync pushed the hookless config:\n{replica}"
    );
    // ctmgr's own start refuses it too, naming the key.
    let out = n1.ctmgr(&["start", "web"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("lxc.hook.pre-start"), "{out}");
    assert!(running_in(n1, "/srv/store1/containers").is_empty());
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// §4: the peer is asked when DRBD cannot vouch for it.

/// Two Primaries made by hand (an operator's `drbdadm primary --force` behind a cut link
/// overrides fencing): node2 mounts store1 while node1 holds it too (Primary, mounted, `web`
/// not running). A plain `lxc-start` of web on node2 passes every local check (node2 holds
/// the store, nothing runs the rootfs) — the guard asks node1 over the LAN, hears
/// "Primary", refuses. (A running web would be caught before that by the rootfs identity:
/// the lab's nodes share one kernel's process table.)
#[test]
fn lab_guard_asks_the_peer_and_refuses_when_it_holds_the_store_too() {
    let lab = up();
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.ctmgr(&["create", "web"]).assert_success();
    assert_never_double(&lab);
    lab.cut_link();
    assert_never_double(&lab);

    let out = n2.cmd_timeout(&["drbdadm", "primary", "--force", "r0"], Q);
    assert!(out.success(), "{out}");
    let device = lab.store_device("store1").expect("store1 device");
    n2.cmd_timeout(&["mount", &device, "/srv/store1"], Q)
        .assert_success();
    // Two Primaries on purpose here: only the rootfs rule is checked from now on.
    assert!(ctmgr_tests::invariants::rootfs_twice(&lab).is_empty());

    let (out, log) = lxc_start(
        n2,
        &["-n", "web", "-P", "/srv/store1/containers"],
        "/root/peer.log",
    );
    assert!(!out.success(), "node2 started a second web: {out}");
    assert!(
        ctmgr_tests::invariants::rootfs_twice(&lab).is_empty(),
        "{:?}",
        ctmgr_tests::invariants::rootfs_twice(&lab)
    );
    assert!(
        log.contains("node1 is Primary for store store1") && log.contains("never run twice"),
        "the refusal should name the peer's state: {out}\n{log}"
    );
    assert!(running_in(n2, "/srv/store1/containers").is_empty());

    // Undo the operator's split brain so the lab tears down cleanly.
    n2.cmd_timeout(&["umount", "/srv/store1"], Q)
        .assert_success();
    n2.cmd_timeout(&["drbdadm", "secondary", "r0"], Q)
        .assert_success();
    assert_never_double(&lab);
}

/// Connected with a Secondary peer, the guard does not ask (the peer cannot open the
/// device): a start works with the peer's sshd gone, and nothing is logged about it.
#[test]
fn lab_guard_does_not_ask_a_connected_secondary_peer() {
    let lab = up();
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "web"]).assert_success();
    // node2 rejects ssh: had the guard asked, it would log that the peer was not asked.
    for argv in [
        &["nft", "add", "table", "inet", "guard"][..],
        &[
            "nft", "add", "chain", "inet", "guard", "input", "{", "type", "filter", "hook",
            "input", "priority", "0", ";", "}",
        ],
        &[
            "nft", "add", "rule", "inet", "guard", "input", "tcp", "dport", "22", "reject", "with",
            "tcp", "reset",
        ],
    ] {
        lab.node(2)
            .cmd_timeout(argv, Q)
            .check()
            .expect("nft in node2");
    }
    let (out, log) = lxc_start(
        n1,
        &["-n", "web", "-P", "/srv/store1/containers"],
        "/root/c.log",
    );
    assert!(out.success(), "{out}\n{log}");
    assert_never_double(&lab);
    assert!(
        !log.contains("peer was not asked") && !log.contains("could not confirm"),
        "{log}"
    );
    assert_eq!(running_in(n1, "/srv/store1/containers"), ["web"]);
}
