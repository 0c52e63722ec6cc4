//! End-to-end tests of the `ctmgr` binary on the one-node sandbox: create, list, status,
//! start, stop, destroy, the guard hook, and bad input (exit codes, messages, nothing changed).
//! These need root and the workspace binaries (`cargo build --workspace --bins`).
#![forbid(unsafe_code)]

use ctmgr_tests::helpers::listed;
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use ctmgr_tests::Output;

const LXCPATH: &str = "/srv/store1/containers";

fn up() -> Lab {
    let bins = Bins::from_env().expect("the lab needs the workspace binaries");
    Lab::up(LabSpec::new(1), &bins).expect("sandbox up")
}

/// `find DIR -maxdepth 2`, sorted: what a refused or bad command must leave unchanged.
fn tree(n: &Node, dir: &str) -> Vec<String> {
    let out = n.cmd(&["find", dir, "-maxdepth", "2"]);
    out.assert_success();
    let mut v: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The value of the first `key = value` line of an LXC config.
fn conf_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Runs a ctmgr command that must fail with `code` and say `needle` on stderr.
#[track_caller]
fn refuses(n: &Node, args: &[&str], code: i32, needle: &str) -> Output {
    let out = n.ctmgr(args);
    out.assert_code(code);
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in stderr: {out}"
    );
    out
}

#[test]
fn create_list_start_stop_destroy() {
    let lab = up();
    let n = lab.node(1);

    // create: a Btrfs subvolume rootfs, the network, the guard hook.
    let out = n.ctmgr(&["create", "web", "--template", "busybox"]);
    out.assert_success();
    n.cmd(&[
        "btrfs",
        "subvolume",
        "show",
        "/srv/store1/containers/web/rootfs",
    ])
    .assert_success();
    let config = n.read_file("/srv/store1/containers/web/config").unwrap();
    assert_eq!(
        conf_value(&config, "lxc.net.0.type"),
        Some("veth"),
        "{config}"
    );
    assert_eq!(
        conf_value(&config, "lxc.net.0.link"),
        Some("br0"),
        "{config}"
    );
    assert_eq!(
        conf_value(&config, "lxc.net.0.flags"),
        Some("up"),
        "{config}"
    );
    let mac1 = conf_value(&config, "lxc.net.0.hwaddr").unwrap_or_default();
    assert!(mac1.starts_with("00:16:3e:"), "{config}");
    assert_eq!(mac1.len(), 17, "{config}");
    let hook = conf_value(&config, "lxc.hook.pre-start").unwrap_or_default();
    assert!(hook.contains("ctmgr-guard --store store1"), "{config}");
    assert_eq!(
        conf_value(&config, "lxc.rootfs.path"),
        Some("btrfs:/srv/store1/containers/web/rootfs"),
        "{config}"
    );

    n.ctmgr(&["create", "db"]).assert_success();
    let config2 = n.read_file("/srv/store1/containers/db/config").unwrap();
    let mac2 = conf_value(&config2, "lxc.net.0.hwaddr").unwrap_or_default();
    assert!(mac2.starts_with("00:16:3e:"), "{config2}");
    assert_ne!(mac1, mac2, "two containers got the same MAC");

    // list, list --json, status --json.
    let out = n.ctmgr(&["list"]);
    out.assert_success();
    for name in ["web", "db"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains("STOPPED")),
            "{out}"
        );
    }
    let web = listed(n, "web");
    assert_eq!(web["store"], "store1", "{web}");
    assert_eq!(web["state"], "STOPPED", "{web}");
    assert!(web["pid"].is_null(), "{web}");
    let status = n.ctmgr(&["--json", "status"]);
    status.assert_success();
    let st = status.json();
    assert_eq!(st["stores"][0]["name"], "store1", "{status}");
    assert_eq!(st["stores"][0]["held"], true, "{status}");
    assert_eq!(st["stores"][0]["lxcpath"], LXCPATH, "{status}");

    // start and stop with ctmgr.
    n.ctmgr(&["start", "web"]).assert_success();
    let web = listed(n, "web");
    assert_eq!(web["state"], "RUNNING", "{web}");
    let pid = web["pid"].as_u64().unwrap_or(0);
    assert!(pid > 0, "{web}");
    let out = n.ctmgr(&["list"]);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("web ")
            && l.contains("RUNNING")
            && l.contains(&pid.to_string())),
        "{out}"
    );
    // Starting a running container is "already so": 0.
    n.ctmgr(&["start", "web"]).assert_success();
    assert_eq!(listed(n, "web")["pid"].as_u64(), Some(pid));

    // destroy refuses a running container, and changes nothing.
    let before = tree(n, LXCPATH);
    refuses(n, &["destroy", "web"], 3, "RUNNING");
    assert_eq!(tree(n, LXCPATH), before);
    assert_eq!(listed(n, "web")["state"], "RUNNING");

    n.ctmgr(&["stop", "--timeout", "1", "web"]).assert_success();
    assert_eq!(listed(n, "web")["state"], "STOPPED");

    // A plain lxc-start: the guard lets the holder start it.
    n.cmd(&["lxc-start", "-n", "web", "-P", LXCPATH])
        .assert_success();
    let info = n.cmd(&["lxc-info", "-s", "-n", "web", "-P", LXCPATH]);
    assert!(info.stdout.contains("RUNNING"), "{info}");
    assert_eq!(listed(n, "web")["state"], "RUNNING");
    // -k: the busybox init does not act on LXC's halt signal; a clean stop would wait 60 s.
    n.cmd(&["lxc-stop", "-k", "-n", "web", "-P", LXCPATH])
        .assert_success();
    assert_eq!(listed(n, "web")["state"], "STOPPED");

    // destroy refuses a container with snapshots; --force destroys it and them.
    n.ctmgr(&["snapshot", "web"]).assert_success();
    let before = tree(n, LXCPATH);
    refuses(n, &["destroy", "web"], 3, "snapshot");
    assert_eq!(tree(n, LXCPATH), before);
    n.ctmgr(&["destroy", "--force", "web"]).assert_success();
    n.cmd(&["test", "-e", "/srv/store1/containers/web"])
        .assert_code(1);
    assert!(
        !n.ctmgr(&["list"]).stdout.contains("web"),
        "web still listed"
    );
    // The subvolumes went with it.
    let subs = n.cmd(&["btrfs", "subvolume", "list", "/srv/store1"]);
    assert!(!subs.stdout.contains("containers/web/"), "{subs}");

    // destroy --force of a running container without snapshots.
    n.ctmgr(&["start", "db"]).assert_success();
    n.ctmgr(&["destroy", "db", "--force"]).assert_success();
    n.cmd(&["test", "-e", "/srv/store1/containers/db"])
        .assert_code(1);
    assert_eq!(n.cmd(&["ls", "-A", LXCPATH]).stdout.trim(), "");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let lab = up();
    let n = lab.node(1);
    n.ctmgr(&["create", "web"]).assert_success();
    let before = tree(n, LXCPATH);

    // Names breaking the rule.
    refuses(n, &["create", "--", "../x"], 2, "\"../x\" contains \"..\"");
    refuses(n, &["create", "a b"], 2, "bad character ' '");
    refuses(
        n,
        &["create", "--", "-x"],
        2,
        "must start with a letter or a digit",
    );
    refuses(n, &["create", "a/b"], 2, "bad character '/'");
    refuses(n, &["create", ""], 2, "container name");
    let long = "a".repeat(64);
    refuses(n, &["create", &long], 2, "too long");
    // Without `--`, clap takes -x for an option: still bad usage.
    n.ctmgr(&["create", "-x"]).assert_code(2);
    // An existing name.
    refuses(n, &["create", "web"], 2, "already exists");
    // Unknown containers.
    for cmd in ["start", "stop", "destroy"] {
        refuses(n, &[cmd, "nosuch"], 2, "no container nosuch");
    }
    refuses(n, &["start", "../x"], 2, "contains \"..\"");
    // Unknown template: the message lists the known ones.
    let out = refuses(n, &["create", "t1", "--template", "nosuch"], 2, "nosuch");
    for known in ["busybox", "debian", "mysql"] {
        assert!(out.stderr.contains(known), "{out}");
    }
    refuses(n, &["create", "t1", "--store", "nope"], 2, "nope");
    refuses(n, &["list", "--store", "nope"], 2, "nope");
    // Usage errors.
    n.ctmgr(&["create"]).assert_code(2);
    n.ctmgr(&["frobnicate"]).assert_code(2);
    n.ctmgr(&["start"]).assert_code(2);

    // A config with an unknown key: file:line:col and the key.
    let good = n.read_file("/etc/ctmgr/cluster.toml").unwrap();
    let bad = good.replacen("name = \"lab\"\n", "name = \"lab\"\nfrobnicate = true\n", 1);
    assert_ne!(bad, good, "the lab's cluster.toml changed shape: {good}");
    let line = bad
        .lines()
        .position(|l| l.starts_with("frobnicate"))
        .unwrap()
        + 1;
    n.write_file("/root/bad.toml", bad.as_bytes()).unwrap();
    let out = refuses(
        n,
        &["--config", "/root/bad.toml", "create", "t1"],
        2,
        &format!("/root/bad.toml:{line}:1"),
    );
    assert!(out.stderr.contains("frobnicate"), "{out}");
    refuses(n, &["--config", "/root/bad.toml", "list"], 2, "frobnicate");
    // The same through CTMGR_CONFIG.
    let out = n.cmd(&["env", "CTMGR_CONFIG=/root/bad.toml", "ctmgr", "list"]);
    out.assert_code(2);
    assert!(out.stderr.contains("/root/bad.toml:"), "{out}");
    // A TOML syntax error.
    n.write_file("/root/syntax.toml", b"[cluster\n").unwrap();
    refuses(
        n,
        &["--config", "/root/syntax.toml", "list"],
        2,
        "/root/syntax.toml:1:",
    );
    // A missing config file.
    refuses(
        n,
        &["--config", "/root/none.toml", "create", "t1"],
        2,
        "/root/none.toml",
    );
    refuses(n, &["--config", "/root/none.toml", "list"], 2, "not found");
    // An unknown --node.
    refuses(n, &["--node", "node9", "create", "t1"], 2, "node9");

    assert_eq!(tree(n, LXCPATH), before, "bad input changed the store");

    // Help.
    let out = n.ctmgr(&["--help"]);
    out.assert_success();
    for s in [
        "Exit codes",
        "0 done",
        "2 bad usage",
        "3 refused",
        "--config",
        "takeover",
    ] {
        assert!(out.stdout.contains(s), "{s:?} missing from --help: {out}");
    }
    let out = n.ctmgr(&["takeover", "--help"]);
    out.assert_success();
    for s in ["STORE", "--dry-run", "--force", "--no-start", "--no-wait"] {
        assert!(
            out.stdout.contains(s),
            "{s:?} missing from takeover --help: {out}"
        );
    }

    // A copy of web's config in another lxcpath, to start it behind ctmgr's back later.
    n.cmd(&["mkdir", "-p", "/srv/other/web"]).assert_success();
    for f in ["config", "fstab"] {
        let src = format!("/srv/store1/containers/web/{f}");
        n.cmd(&["cp", &src, "/srv/other/web/"]).assert_success();
    }

    // No store held here: create is refused (3) and says why.
    n.cmd(&["umount", "/srv/store1"]).assert_success();
    let out = refuses(n, &["create", "x"], 3, "no store");
    assert!(out.stderr.contains("held"), "{out}");
    refuses(n, &["start", "web"], 2, "web");
    let status = n.ctmgr(&["--json", "status"]);
    status.assert_success();
    let st = status.json();
    assert_eq!(st["stores"][0]["held"], false, "{status}");
    assert!(
        st["stores"][0]["holding"]
            .as_str()
            .unwrap_or_default()
            .contains("not mounted"),
        "{status}"
    );
    assert_eq!(n.cmd(&["ls", "-A", "/srv/store1"]).stdout.trim(), "");

    // The guard refuses a plain lxc-start of the copy while store1 is not held here.
    let out = n.cmd(&[
        "lxc-start",
        "-n",
        "web",
        "-P",
        "/srv/other",
        "-l",
        "DEBUG",
        "-o",
        "/root/lxc.log",
    ]);
    assert!(!out.success(), "the guard let web start from a copy: {out}");
    let log = n.read_file("/root/lxc.log").unwrap();
    let said = format!("{}\n{}\n{log}", out.stdout, out.stderr);
    assert!(
        said.contains("ctmgr-guard: refusing to start container web"),
        "{said}"
    );
    assert!(said.contains("not mounted"), "{said}");
    let info = n.cmd(&["lxc-info", "-s", "-n", "web", "-P", "/srv/other"]);
    assert!(!info.stdout.contains("RUNNING"), "{info}");
}
