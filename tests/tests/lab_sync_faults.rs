//! Faults of replica sync in the two-node lab (issue 10, D11): a `ctmgr
//! sync` killed with SIGKILL in the middle of its session must leave no
//! false drift behind (the peer wrote files whose acknowledgement the
//! sender never saved), and must not hide real drift either (a replica
//! edited by hand after the kill is still drift). The session is slowed
//! down by a ProxyCommand that delays what ssh sends to the peer, so the
//! kill lands while files are still going over.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use ctmgr_tests::invariants::assert_never_double;
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};

/// Containers c000 … c(N-1) on store1.
const N: usize = 60;
const SRC: &str = "/srv/store1/containers";
const REPLICAS: &str = "/srv/store2/containers";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

fn sh(node: &Node, script: &str) -> String {
    let out = node.cmd(&["sh", "-c", script]);
    out.assert_success();
    out.stdout
}

/// c000 made by ctmgr; the others are copies of its config and fstab with
/// the name replaced (sync replicates only those two files).
fn many_containers(lab: &Lab) {
    let n1 = lab.node(1);
    n1.ctmgr(&["create", "c000"]).assert_success();
    sh(
        n1,
        &format!(
            "set -e; for i in $(seq 1 {last}); do n=$(printf c%03d $i); d={SRC}/$n; \
             mkdir -p $d/rootfs; sed \"s/c000/$n/g\" {SRC}/c000/config > $d/config; \
             cp {SRC}/c000/fstab $d/fstab; done",
            last = N - 1
        ),
    );
}

/// Appends a line to every config on node1.
fn change_all(lab: &Lab, line: &str) {
    sh(
        lab.node(1),
        &format!("set -e; for c in {SRC}/c*/config; do echo '{line}' >> $c; done"),
    );
}

/// How many replicas on node2 hold `line`.
fn replicas_with(lab: &Lab, line: &str) -> usize {
    let out = lab.node(2).cmd(&[
        "sh",
        "-c",
        &format!("grep -lx -- '{line}' {REPLICAS}/c*/config 2>/dev/null | wc -l"),
    ]);
    out.stdout.trim().parse().unwrap_or(0)
}

/// sha256 of every config and fstab, by relative path: the sources on
/// node1, the replicas on node2.
fn hashes(node: &Node, dir: &str) -> String {
    sh(node, &format!("cd {dir} && sha256sum c*/config c*/fstab"))
}

fn assert_replicas_equal_sources(lab: &Lab) {
    let src = hashes(lab.node(1), SRC);
    assert_eq!(src.lines().count(), 2 * N, "{src}");
    assert_eq!(src, hashes(lab.node(2), REPLICAS), "replicas differ");
}

/// A ProxyCommand for ssh that holds every chunk going to the peer for
/// 30 ms: each request of the sync session then takes that much longer.
const SLOW_RELAY: &str = r#"import os, socket, sys, threading, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        time.sleep(0.03)
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    b = s.recv(65536)
    if not b:
        break
    os.write(1, b)
"#;

/// Runs `ctmgr sync` on node1 with a slow ssh (a wrapper first on its PATH
/// that adds [`SLOW_RELAY`] as ProxyCommand) and SIGKILLs its process
/// group once `line` reached some replicas but not all.
fn killed_sync(lab: &Lab, line: &str) {
    let n1 = lab.node(1);
    // The node directory has the same path inside the node.
    let dir = n1.dir().join("slow-ssh");
    std::fs::create_dir_all(&dir).unwrap();
    let relay = dir.join("relay.py");
    std::fs::write(&relay, SLOW_RELAY).unwrap();
    let wrapper = dir.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -o 'ProxyCommand=python3 {} %h %p' \"$@\"\n",
            relay.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pidfile = dir.join("sync.pid");
    let _ = std::fs::remove_file(&pidfile);
    let script = format!(
        "PATH={}:$PATH setsid ctmgr sync >/dev/null 2>&1 & echo $! > {}; wait $!; echo rc=$?",
        dir.display(),
        pidfile.display()
    );
    std::thread::scope(|s| {
        let run = s.spawn(|| n1.cmd(&["sh", "-c", &script]));
        let deadline = Instant::now() + Duration::from_secs(120);
        while replicas_with(lab, line) < 5 {
            assert!(
                Instant::now() < deadline && !run.is_finished(),
                "the sync never got going"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = std::fs::read_to_string(&pidfile).expect("pid file");
        let group = format!("-{}", pid.trim());
        n1.cmd(&["kill", "-KILL", "--", &group]).assert_success();
        let out = run.join().unwrap();
        assert!(out.stdout.contains("rc=137"), "killed by SIGKILL: {out}");
    });
    let done = replicas_with(lab, line);
    assert!(
        (5..N).contains(&done),
        "killed in the middle: {done} of {N} replicas got the change"
    );
}

/// The rows of `ctmgr --json sync` with the given status.
fn rows_with(json: &str, status: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(json).expect(json);
    doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| format!("{}/{}", r["container"], r["file"]))
        .collect()
}

#[test]
fn lab_sync_killed_mid_session_leaves_no_false_drift_and_hides_no_real_drift() {
    let lab = up();
    let (n1, n2) = (lab.node(1), lab.node(2));
    many_containers(&lab);
    n1.ctmgr(&["sync"]).assert_success();
    assert_replicas_equal_sources(&lab);
    assert_never_double(&lab);

    // 1. Killed mid-push; changed here since: the rerun pushes everything
    // and reports no drift.
    change_all(&lab, "# v2");
    killed_sync(&lab, "# v2");
    assert_never_double(&lab);
    change_all(&lab, "# v3");
    let rerun = n1.ctmgr(&["--json", "sync"]);
    assert_eq!(
        rows_with(&rerun.stdout, "drift"),
        Vec::<String>::new(),
        "no false drift: {rerun}"
    );
    rerun.assert_success();
    assert_replicas_equal_sources(&lab);
    n1.ctmgr(&["sync", "--check"]).assert_success();
    assert_never_double(&lab);

    // 2. Killed again, then a replica that the killed session wrote is
    // edited by hand on node2: that stays drift, nothing else is.
    change_all(&lab, "# v4");
    killed_sync(&lab, "# v4");
    assert_never_double(&lab);
    let edited = sh(
        n2,
        &format!("grep -lx -- '# v4' {REPLICAS}/c*/config | head -n 1"),
    );
    let edited = edited.trim().to_string();
    let name = edited
        .trim_start_matches(&format!("{REPLICAS}/"))
        .trim_end_matches("/config")
        .to_string();
    sh(n2, &format!("echo '# by hand on node2' >> {edited}"));
    change_all(&lab, "# v5");
    let rerun = n1.ctmgr(&["--json", "sync"]);
    assert_eq!(
        rows_with(&rerun.stdout, "drift"),
        [format!("\"{name}\"/\"config\"")],
        "{rerun}"
    );
    assert_ne!(rerun.code(), Some(0), "drift is not success: {rerun}");
    assert!(
        n2.read_file(&edited)
            .unwrap()
            .contains("# by hand on node2"),
        "the hand edit is kept"
    );
    assert_never_double(&lab);
    let check = n1.ctmgr(&["sync", "--check"]);
    check.assert_code(1);
    assert!(check.stdout.contains("drift"), "{check}");
    n1.ctmgr(&["sync", "--force", &name]).assert_success();
    assert_replicas_equal_sources(&lab);
    n1.ctmgr(&["sync", "--check"]).assert_success();
    assert_never_double(&lab);
}
