//! `create` against the faults of issue 10: one name created on both nodes at once (D19),
//! a name that exists only on the peer, a peer that cannot be asked; a create killed
//! half-way (D22); and a start or create that waited for the store lock while the store
//! went away (D14).
//!
//! node1 holds store1, node2 holds store2 (the lab's start). Every test asserts the exit
//! code, the message and the state on both nodes, and [`assert_never_double`] after every
//! step. No timing thresholds: the "gated" profile (busybox behind a gate file the test
//! opens) holds a create inside its LXC template for as long as the test needs, so "at the
//! same moment" and "killed mid-way" are states, not races.
#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ctmgr_tests::invariants::{assert_never_double, mounted};
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use ctmgr_tests::run::wait_until;
use ctmgr_tests::Output;

const Q: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_secs(60);

/// Opened by the test: the gated template waits for it (per node).
const GATE: &str = "/run/ctmgr/test-gate";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

/// Installs the profile `gated` on both nodes: LXC's busybox template, run only once the
/// node's [`GATE`] exists.
fn install_gated(lab: &Lab) {
    for node in lab.nodes() {
        let dir = node.path_in("/etc/ctmgr/templates").unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("lxc-gated");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# busybox, once the test opens the gate\nwhile [ ! -e {GATE} ]; do sleep 0.05; done\nexec /usr/share/lxc/templates/lxc-busybox \"$@\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.join("gated.toml"),
            "description = \"busybox behind the test's gate\"\nlxc_template = \"/etc/ctmgr/templates/lxc-gated\"\noffline = true\nconfig = [[\"lxc.start.delay\", \"0\"]]\n",
        )
        .unwrap();
    }
}

fn open_gate(node: &Node) {
    std::fs::write(node.path_in(GATE).unwrap(), b"").unwrap();
}

fn exists(node: &Node, path: &str) -> bool {
    node.cmd_timeout(&["test", "-e", path], Q).success()
}

/// The creation marker of `name` in `lxcpath` on `node` (D22).
fn marker(node: &Node, lxcpath: &str, name: &str) -> bool {
    exists(node, &format!("{lxcpath}/{name}/.ctmgr-creating"))
}

#[track_caller]
fn assert_mentions(out: &Output, what: &str) {
    assert!(
        out.stdout.contains(what) || out.stderr.contains(what),
        "expected {what:?} in the output of {out}"
    );
}

/// The `--store` of the guard hook in `name`'s config in `lxcpath` on `node`.
fn guard_store(node: &Node, lxcpath: &str, name: &str) -> Option<String> {
    let text = node.read_file(&format!("{lxcpath}/{name}/config")).ok()?;
    let hook = text
        .lines()
        .find(|l| l.trim_start().starts_with("lxc.hook.pre-start") && l.contains("ctmgr-guard"))?;
    let mut w = hook.split_whitespace();
    w.find(|x| *x == "--store")?;
    w.next().map(str::to_string)
}

fn running(node: &Node, lxcpath: &str) -> Vec<String> {
    let out = node.cmd_timeout(&["lxc-ls", "--running", "-1", "-P", lxcpath], Q);
    assert!(out.success(), "{out}");
    out.stdout.split_whitespace().map(String::from).collect()
}

// ---------------------------------------------------------------------------------------
// D19: container names are unique in the cluster.

/// Both nodes create `web` at the same moment, each on its own store: at most one
/// succeeds, the other exits 2 (taken) or 3 (busy), and after `sync` on both the one
/// `web` is the same container everywhere. On the old code both were created (each
/// checked only its own lxcpaths) and sync then met two different `web`s.
#[test]
fn lab_d19_same_name_on_both_nodes_at_once_at_most_one_wins() {
    let lab = up();
    install_gated(&lab);
    assert_never_double(&lab);
    let spawn = |n: usize| {
        let node = lab.node(n).clone();
        std::thread::spawn(move || node.ctmgr(&["create", "web", "--template", "gated"]))
    };
    let (h1, h2) = (spawn(1), spawn(2));
    // Let go once each create has either ended or is inside its template (its
    // container directory exists): on the old code both are inside.
    let lxc = ["/srv/store1/containers", "/srv/store2/containers"];
    let settled = wait_until(POLL, Duration::from_millis(50), || {
        (h1.is_finished() || marker(lab.node(1), lxc[0], "web"))
            && (h2.is_finished() || marker(lab.node(2), lxc[1], "web"))
    });
    assert!(
        settled,
        "the creates neither ended nor reached the template"
    );
    assert_never_double(&lab);
    open_gate(lab.node(1));
    open_gate(lab.node(2));
    let outs = [h1.join().unwrap(), h2.join().unwrap()];
    assert_never_double(&lab);
    eprintln!(
        "concurrent creates: node1 exit {:?}, node2 exit {:?}",
        outs[0].code(),
        outs[1].code()
    );
    let won: Vec<usize> = (0..2).filter(|&i| outs[i].success()).collect();
    assert!(
        won.len() <= 1,
        "both nodes created web:\n{}\n{}",
        outs[0],
        outs[1]
    );
    for (i, out) in outs.iter().enumerate() {
        if !out.success() {
            assert!(
                matches!(out.code(), Some(2) | Some(3)),
                "node{} create: {out}",
                i + 1
            );
            assert_mentions(out, "web");
            // A refused create leaves nothing of its own behind (the winner's replica
            // may already be there: no rootfs, no marker).
            assert!(
                !exists(lab.node(i + 1), &format!("{}/web/rootfs", lxc[i]))
                    && !marker(lab.node(i + 1), lxc[i], "web"),
                "node{} kept a web of its own after refusing",
                i + 1
            );
        }
    }
    // Both may refuse (each heard "busy" from the other): a retry then works.
    let winner = match won.first() {
        Some(&i) => i + 1,
        None => {
            lab.node(1)
                .ctmgr(&["create", "web", "--template", "gated"])
                .assert_success();
            1
        }
    };
    assert_never_double(&lab);
    for n in [1, 2] {
        lab.node(n).ctmgr(&["sync"]).assert_success();
        assert_never_double(&lab);
    }
    let store = format!("store{winner}");
    for n in [1, 2] {
        let lp = format!("/srv/store{n}/containers");
        assert_eq!(
            guard_store(lab.node(n), &lp, "web").as_deref(),
            Some(store.as_str()),
            "node{n}'s web is not node{winner}'s"
        );
        assert!(!marker(lab.node(n), &lp, "web"));
    }
    // The loser's node now refuses the name locally too.
    let loser = 3 - winner;
    let out = lab.node(loser).ctmgr(&["create", "web"]);
    assert_never_double(&lab);
    out.assert_code(2);
}

/// `web` exists on node2 but its replica is not on node1 (not synced yet): node1's create
/// exits 2 naming node2 and where. The old code created a second `web`.
#[test]
fn lab_d19_name_only_on_the_peer_is_refused_naming_the_peer() {
    let lab = up();
    lab.node(2).ctmgr(&["create", "web"]).assert_success();
    assert_never_double(&lab);
    // As if the sync had not happened yet.
    lab.node(1)
        .cmd(&["rm", "-rf", "/srv/store1/containers/web"])
        .assert_success();
    assert_never_double(&lab);
    let out = lab.node(1).ctmgr(&["create", "web"]);
    assert_never_double(&lab);
    out.assert_code(2);
    assert_mentions(
        &out,
        "web already exists on node2 in /srv/store2/containers; names are unique in the cluster",
    );
    assert!(!exists(lab.node(1), "/srv/store1/containers/web"));
    // Another name is free on both.
    lab.node(1).ctmgr(&["create", "db"]).assert_success();
    assert_never_double(&lab);
    lab.node(2).ctmgr(&["sync"]).assert_success();
    assert_never_double(&lab);
    assert_eq!(
        guard_store(lab.node(1), "/srv/store1/containers", "web").as_deref(),
        Some("store2")
    );
}

/// node2 rejects ssh on every address (TCP reset): node1 cannot ask it, so create exits 3
/// naming what failed and --force; with --force it creates. The old code never asked.
#[test]
fn lab_d19_peer_that_cannot_be_asked_refuses_unless_forced() {
    let lab = up();
    let n2 = lab.node(2);
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
    ] {
        n2.cmd_timeout(argv, Q).check().expect("nft in node2");
    }
    assert_never_double(&lab);
    let out = lab.node(1).ctmgr(&["create", "web"]);
    assert_never_double(&lab);
    out.assert_code(3);
    assert_mentions(&out, "could not ask node2 whether the name is free");
    assert_mentions(&out, "Connection refused");
    assert_mentions(&out, "--force");
    assert!(!exists(lab.node(1), "/srv/store1/containers/web"));

    let out = lab.node(1).ctmgr(&["create", "web", "--force"]);
    assert_never_double(&lab);
    out.assert_success();
    assert_mentions(&out, "creating it anyway (--force)");
    assert!(exists(lab.node(1), "/srv/store1/containers/web/config"));
    assert!(!marker(lab.node(1), "/srv/store1/containers", "web"));

    n2.cmd_timeout(&["nft", "delete", "table", "inet", "faults"], Q)
        .check()
        .unwrap();
    lab.node(1).ctmgr(&["sync"]).assert_success();
    assert_never_double(&lab);
    assert_eq!(
        guard_store(n2, "/srv/store2/containers", "web").as_deref(),
        Some("store1")
    );
}

// ---------------------------------------------------------------------------------------
// D22: a create killed half-way is INCOMPLETE, never synced or started; a rerun makes it.

#[test]
fn lab_d22_create_killed_midway_is_incomplete_and_a_rerun_makes_it() {
    let lab = up();
    install_gated(&lab);
    let n1 = lab.node(1).clone();
    let pid_file = "/run/ctmgr/test-create.pid";
    let create = std::thread::spawn({
        let n1 = n1.clone();
        move || {
            n1.cmd(&[
                "sh",
                "-c",
                &format!("echo $$ > {pid_file}; exec ctmgr create web --template gated"),
            ])
        }
    });
    let lp = "/srv/store1/containers";
    let inside = wait_until(POLL, Duration::from_millis(20), || marker(&n1, lp, "web"));
    assert!(inside, "the create never put its marker in place");
    assert_never_double(&lab);
    let pid = std::fs::read_to_string(n1.path_in(pid_file).unwrap())
        .unwrap()
        .trim()
        .to_string();
    // sh exec'd ctmgr, and the lab runs each command in a process group of its own.
    n1.cmd(&["kill", "-9", "--", &format!("-{pid}")])
        .assert_success();
    let out = create.join().unwrap();
    assert!(!out.success(), "the create was not killed: {out}");
    assert_never_double(&lab);
    assert!(marker(&n1, lp, "web"), "the marker is gone after the kill");

    let out = n1.ctmgr(&["list"]);
    out.assert_success();
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("web"))
        .unwrap_or_else(|| panic!("web not listed: {out}"));
    assert!(line.contains("INCOMPLETE"), "{out}");
    assert_never_double(&lab);

    n1.ctmgr(&["sync"]).assert_success();
    assert_never_double(&lab);
    assert!(
        !exists(lab.node(2), "/srv/store2/containers/web/config"),
        "sync pushed the incomplete web to node2"
    );

    let out = n1.ctmgr(&["start", "web"]);
    assert_never_double(&lab);
    out.assert_code(3);
    assert_mentions(&out, "incomplete");
    assert!(running(&n1, lp).is_empty());

    open_gate(&n1);
    n1.ctmgr(&["create", "web", "--template", "gated"])
        .assert_success();
    assert_never_double(&lab);
    assert!(!marker(&n1, lp, "web"));
    n1.ctmgr(&["start", "web"]).assert_success();
    assert_never_double(&lab);
    assert_eq!(running(&n1, lp), ["web"]);
    n1.ctmgr(&["sync"]).assert_success();
    assert!(exists(lab.node(2), "/srv/store2/containers/web/config"));
    assert_never_double(&lab);
}

// ---------------------------------------------------------------------------------------
// D14: a start or create that waited for the store lock re-checks that the store is held.

/// Holds node1's store1 lock (the same flock ctmgr takes) until `go` appears.
fn hold_store1_lock(n1: &Node, go: &'static str) -> std::thread::JoinHandle<Output> {
    let script = format!("while [ ! -e {go} ]; do sleep 0.05; done");
    let h = std::thread::spawn({
        let n1 = n1.clone();
        move || {
            n1.cmd_timeout(
                &["flock", "/run/ctmgr/store1.lock", "sh", "-c", &script],
                Duration::from_secs(180),
            )
        }
    });
    let held = wait_until(POLL, Duration::from_millis(20), || {
        n1.cmd_timeout(&["flock", "-n", "/run/ctmgr/store1.lock", "true"], Q)
            .code()
            == Some(1)
    });
    assert!(held, "the test's flock never took the lock");
    h
}

/// Runs `ctmgr ARGS` on node1 in the background, stderr to `err`; returns once it says
/// it waits for the lock.
fn waiting_ctmgr(n1: &Node, args: &str, err: &str) -> std::thread::JoinHandle<Output> {
    let h = std::thread::spawn({
        let n1 = n1.clone();
        let cmd = format!("exec ctmgr {args} 2>{err}");
        move || n1.cmd_timeout(&["sh", "-c", &cmd], Duration::from_secs(180))
    });
    let err_file = n1.path_in(err).unwrap();
    let waiting = wait_until(POLL, Duration::from_millis(20), || {
        std::fs::read_to_string(&err_file).is_ok_and(|s| s.contains("waiting"))
    });
    assert!(
        waiting,
        "`ctmgr {args}` never said it waits for the lock: {}",
        std::fs::read_to_string(&err_file).unwrap_or_default()
    );
    h
}

#[test]
fn lab_d14_start_and_create_that_waited_refuse_when_the_store_went_away() {
    let lab = up();
    let n1 = lab.node(1).clone();
    n1.ctmgr(&["create", "web"]).assert_success();
    assert_never_double(&lab);

    for (args, err, go) in [
        (
            "start web",
            "/run/ctmgr/test-start.err",
            "/run/ctmgr/test-go-1",
        ),
        (
            "create db",
            "/run/ctmgr/test-create.err",
            "/run/ctmgr/test-go-2",
        ),
    ] {
        let holder = hold_store1_lock(&n1, go);
        let waiter = waiting_ctmgr(&n1, args, err);
        assert_never_double(&lab);
        // The store goes away while it waits (as a release killed after its unmount).
        n1.cmd_timeout(&["umount", "/srv/store1"], Q)
            .assert_success();
        assert!(!mounted(&n1, "/srv/store1"));
        assert_never_double(&lab);
        n1.cmd(&["touch", go]).assert_success();
        holder.join().unwrap().assert_success();
        let out = waiter.join().unwrap();
        let stderr = std::fs::read_to_string(n1.path_in(err).unwrap()).unwrap_or_default();
        assert_never_double(&lab);
        assert_eq!(out.code(), Some(3), "`ctmgr {args}`: {out}\n{stderr}");
        assert!(
            stderr.contains("store store1 is no longer held by node1 after waiting for its lock"),
            "`ctmgr {args}`: {stderr}"
        );
        assert!(!stderr.contains("StatfsFailed"), "{stderr}");
        // Mounted again (node1 is still Primary): nothing was done.
        n1.ctmgr(&["takeover", "store1", "--no-start"])
            .assert_success();
        assert_never_double(&lab);
        assert!(running(&n1, "/srv/store1/containers").is_empty());
        assert!(!exists(&n1, "/srv/store1/containers/db"));
    }
    n1.ctmgr(&["start", "web"]).assert_success();
    assert_never_double(&lab);
}
