//! Safety rule 11 in the two-node lab: a container's intended state travels with its store,
//! takeover starts only what was meant to run, release stops in reverse start order within
//! each container's own `stop_timeout`, and a container that had to be killed is reported
//! `killed`, never `stopped`. Also D21 (a failed migrate gives the store back) and D13
//! (`--timeout` ranges of release and migrate).
//!
//! Every step is followed by [`assert_never_double`]. No timing thresholds: order is checked
//! from the report's own begin/end offsets, which the stop groups produce one after another.
#![forbid(unsafe_code)]

use std::time::Duration;

use ctmgr_tests::invariants::{mounted, role};
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use ctmgr_tests::Output;

const Q: Duration = Duration::from_secs(30);
const LXCPATH: &str = "/srv/store1/containers";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(2), &bins).expect("lab up")
}

#[track_caller]
fn assert_never_double(lab: &Lab) {
    ctmgr_tests::invariants::assert_never_double(lab);
}

fn running(node: &Node) -> Vec<String> {
    let out = node.cmd_timeout(&["lxc-ls", "--running", "-1", "-P", LXCPATH], Q);
    assert!(out.success(), "{out}");
    let mut v: Vec<String> = out.stdout.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

/// The `containers` entry of `name` in a takeover/release `--json` report.
#[track_caller]
fn entry<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

fn create_started(lab: &Lab, names: &[&str]) {
    for name in names {
        lab.node(1)
            .ctmgr(&["create", name, "--start"])
            .assert_success();
        assert_never_double(lab);
    }
}

/// Appends `line` to a file of container `name` on store1 (inside node1).
fn append(lab: &Lab, name: &str, file: &str, line: &str) {
    let path = format!("{LXCPATH}/{name}/{file}");
    let mut text = lab.node(1).read_file(&path).expect("read");
    text.push_str(line);
    text.push('\n');
    lab.node(1)
        .write_file(&path, text.as_bytes())
        .expect("write");
}

fn intent_file(node: &Node, name: &str) -> String {
    node.read_file(&format!("{LXCPATH}/{name}/intent.toml"))
        .unwrap_or_default()
}

fn last_journal(node: &Node) -> serde_json::Value {
    let path = node
        .path_in("/var/lib/ctmgr/journal.jsonl")
        .expect("journal path");
    let text = std::fs::read_to_string(path).expect("reading the journal");
    serde_json::from_str(text.lines().last().expect("an entry")).expect("JSON line")
}

// ---------------------------------------------------------------------------------------

#[test]
fn lab_intent_stopped_on_purpose_stays_stopped_after_failover() {
    let lab = up();
    create_started(&lab, &["web", "db", "old"]);
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.ctmgr(&["stop", "old", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
    assert!(intent_file(n1, "old").contains("intent = \"stopped\""));
    assert_eq!(running(n1), ["db", "web"]);

    // A release changes no intent.
    n1.ctmgr(&["release", "store1", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
    assert!(running(n1).is_empty());

    // The dry run already says what takeover will leave alone.
    let dry = n2.ctmgr(&["takeover", "store1", "--dry-run"]);
    dry.assert_success();
    assert_never_double(&lab);

    let out = n2.ctmgr(&["--json", "takeover", "store1"]);
    out.assert_success();
    assert_never_double(&lab);
    let report = out.json();
    assert_eq!(running(n2), ["db", "web"], "{out}");
    assert_eq!(entry(&report, "old")["outcome"], "not-started", "{report}");
    assert_eq!(entry(&report, "old")["intent"], "stopped", "{report}");
    assert_eq!(entry(&report, "web")["outcome"], "started", "{report}");
    let start = report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["step"] == "start"))
        .expect("a start step");
    assert!(
        start["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped on purpose, not started: old"),
        "{report}"
    );
    // The intent went with the store: read on node2 now.
    assert!(intent_file(n2, "old").contains("intent = \"stopped\""));

    // And back by migrate: still only the two that are meant to run, in the human report too.
    let out = n1.ctmgr(&["migrate", "store1", "--timeout", "1"]);
    out.assert_success();
    assert_never_double(&lab);
    assert_eq!(running(n1), ["db", "web"], "{out}");
    assert!(
        out.stdout.contains("stopped on purpose, not started"),
        "{out}"
    );

    // `ctmgr start` makes it meant to run again.
    n1.ctmgr(&["start", "old"]).assert_success();
    assert_never_double(&lab);
    assert!(intent_file(n1, "old").contains("intent = \"running\""));
    assert_eq!(running(n1), ["db", "old", "web"]);
}

// ---------------------------------------------------------------------------------------

#[test]
fn lab_intent_release_stops_in_reverse_start_order_and_reports_kills() {
    let lab = up();
    create_started(&lab, &["first", "mid", "last", "mid2"]);
    let n1 = lab.node(1);
    // Start orders: first 10, mid and mid2 50 (default), last 90. Busybox init never sees
    // LXC's halt signal (SIGPWR), so each must be killed after its own stop_timeout of 1 s.
    for (name, order) in [("first", 10), ("last", 90)] {
        let path = format!("{LXCPATH}/{name}/config");
        let text = n1.read_file(&path).expect("config");
        let text = text.replace(
            "lxc.start.order = 50",
            &format!("lxc.start.order = {order}"),
        );
        n1.write_file(&path, text.as_bytes()).expect("config");
    }
    for name in ["first", "mid", "last", "mid2"] {
        append(&lab, name, "ctmgr.toml", "stop_timeout = 1");
    }

    // --timeout 600 is only the default: each container's own stop_timeout (1 s) applies.
    let out = n1.ctmgr(&["--json", "release", "store1", "--timeout", "600"]);
    out.assert_success();
    assert_never_double(&lab);
    let report = out.json();
    for name in ["first", "mid", "mid2", "last"] {
        let c = entry(&report, name);
        assert_eq!(c["outcome"], "killed", "{name}: {report}");
        assert_eq!(c["stop_timeout_s"], 1, "{name}: {report}");
    }

    // Reverse start order: 90, then 50, then 10; each group only after the one before ended.
    let names: Vec<&str> = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["last", "mid", "mid2", "first"], "{report}");
    let end = |n: &str| {
        let c = entry(&report, n);
        c["begin_ms"].as_u64().unwrap() + c["ms"].as_u64().unwrap()
    };
    let begin = |n: &str| entry(&report, n)["begin_ms"].as_u64().unwrap();
    assert!(begin("mid") >= end("last"), "{report}");
    assert!(begin("mid2") >= end("last"), "{report}");
    assert!(begin("first") >= end("mid").max(end("mid2")), "{report}");

    // The journal says the same, in the same order, and a kill is a kill.
    let j = last_journal(n1);
    assert_eq!(j["action"], "release");
    let stops: Vec<(String, String)> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let step = s["step"].as_str()?;
            let name = step.strip_prefix("stop:")?;
            Some((name.to_string(), s["outcome"].as_str()?.to_string()))
        })
        .collect();
    assert_eq!(
        stops,
        [
            ("last".to_string(), "killed".to_string()),
            ("mid".to_string(), "killed".to_string()),
            ("mid2".to_string(), "killed".to_string()),
            ("first".to_string(), "killed".to_string()),
        ],
        "{j}"
    );
    assert!(running(n1).is_empty());
    assert_eq!(role(n1, "r0").as_deref(), Some("Secondary"));
}

// ---------------------------------------------------------------------------------------
// D21: a migrate whose takeover fails after the peer released gives the store back.

#[test]
fn lab_intent_failed_migrate_gives_the_store_back() {
    let lab = up();
    create_started(&lab, &["web", "db", "old"]);
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.ctmgr(&["stop", "old", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
    // A real fault on node2: its mountpoint is a file, so the mount after the promote fails.
    n2.cmd(&["rmdir", "/srv/store1"]).assert_success();
    n2.cmd(&["touch", "/srv/store1"]).assert_success();

    let out = n2.ctmgr(&["migrate", "store1", "--timeout", "1"]);
    assert_never_double(&lab);
    out.assert_code(1);
    assert!(out.stderr.contains("back on node1"), "{out}");
    assert!(out.stderr.contains("db, web"), "{out}");
    // The old holder holds it again and runs what was meant to run; node2 demoted.
    assert_eq!(role(n1, "r0").as_deref(), Some("Primary"));
    assert!(mounted(n1, "/srv/store1"));
    assert_eq!(running(n1), ["db", "web"], "{out}");
    assert_eq!(role(n2, "r0").as_deref(), Some("Secondary"));
    let j = last_journal(n2);
    assert_eq!(j["action"], "migrate", "{j}");
    assert_eq!(j["outcome"], "failed", "{j}");

    // With the fault repaired the same migrate goes through, still leaving `old` stopped.
    n2.cmd(&["rm", "/srv/store1"]).assert_success();
    n2.cmd(&["mkdir", "/srv/store1"]).assert_success();
    n2.ctmgr(&["migrate", "store1", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
    assert_eq!(running(n2), ["db", "web"]);
    assert!(running(n1).is_empty());
}

// ---------------------------------------------------------------------------------------
// D13: durations beyond one day are usage errors (exit 2, clap's message), not overflows.

#[test]
fn cli_intent_release_and_migrate_timeouts_are_range_checked() {
    let bins = Bins::from_env().expect("the workspace binaries");
    for args in [
        &["release", "store1", "--timeout", "18446744073709551615"][..],
        &["release", "store1", "--timeout", "86401"],
        &["migrate", "store1", "--timeout", "4611686018427387904"],
        &["stop", "web", "--timeout", "86401"],
    ] {
        let out = std::process::Command::new(&bins.ctmgr)
            .args(args)
            .env("CTMGR_CONFIG", "/nonexistent/cluster.toml")
            .output()
            .expect("run ctmgr");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("0..=86400"), "{args:?}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// Release's busy list names only processes that hold THIS node's store: not a process of
// the other node (another mount namespace) whose cwd is its own, empty /srv/store1.

/// Runs `sh -c SCRIPT` in node `n` on a thread; waits until it wrote its PID to `pid_file`.
fn background(
    node: &Node,
    script: String,
    pid_file: &str,
) -> (String, std::thread::JoinHandle<Output>) {
    let h = std::thread::spawn({
        let node = node.clone();
        move || node.cmd_timeout(&["sh", "-c", &script], Duration::from_secs(120))
    });
    let path = node.path_in(pid_file).unwrap();
    let mut pid = String::new();
    let ok = ctmgr_tests::run::wait_until(Q, Duration::from_millis(20), || {
        pid = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .trim()
            .to_string();
        !pid.is_empty()
    });
    assert!(ok, "{pid_file} never written");
    (pid, h)
}

#[test]
fn lab_intent_busy_list_names_only_this_nodes_holders() {
    let lab = up();
    create_started(&lab, &["web"]);
    let (n1, n2) = (lab.node(1), lab.node(2));
    n1.write_file("/srv/store1/busyfile", b"busy\n").unwrap();
    let (ours, t1) = background(
        n1,
        "echo $$ > /run/ctmgr/t-ours.pid; exec tail -f /srv/store1/busyfile".into(),
        "/run/ctmgr/t-ours.pid",
    );
    let (theirs, t2) = background(
        n2,
        "cd /srv/store1 && echo $$ > /run/ctmgr/t-theirs.pid && exec sleep 100".into(),
        "/run/ctmgr/t-theirs.pid",
    );
    let ready = ctmgr_tests::run::wait_until(Q, Duration::from_millis(20), || {
        n1.cmd_timeout(&["ls", "-l", &format!("/proc/{ours}/fd")], Q)
            .stdout
            .contains("/srv/store1/busyfile")
    });
    assert!(ready, "tail never opened the file");

    let out = n1.ctmgr(&["release", "store1", "--timeout", "1"]);
    assert_never_double(&lab);
    out.assert_code(1);
    assert!(out.stderr.contains(&format!("{ours} (tail)")), "{out}");
    assert!(
        !out.stderr.contains(&format!("{theirs} (sleep)")),
        "node2's process is not a holder of node1's store: {out}"
    );

    n1.cmd(&["kill", &ours]).assert_success();
    n2.cmd(&["kill", &theirs]).assert_success();
    let _ = (t1.join(), t2.join());
    n1.ctmgr(&["release", "store1", "--timeout", "1"])
        .assert_success();
    assert_never_double(&lab);
}
