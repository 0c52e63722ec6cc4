//! `ctmgr-demo`: the README's main job. Brings the two-node lab up, creates
//! containers on both stores, snapshots one, crashes node1 and takes its
//! store over on node2 — printing every command and its output so a person
//! can follow — then tears the lab down (also when a step fails).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::{bail, Result};
use ctmgr_tests::lab::{Bins, Lab, LabSpec};

fn banner(text: &str) {
    println!();
    println!("━━━ {text}");
}

/// Runs `ctmgr ARGS` in a node, echoing it like a shell session.
fn run(lab: &Lab, node: usize, args: &[&str], expect: i32) -> Result<String> {
    let n = lab.node(node);
    println!("{}# {}", n.name(), args.join(" "));
    let out = n.cmd(args);
    print!("{}", out.stdout);
    if !out.stderr.trim().is_empty() {
        for line in out.stderr.lines() {
            println!("  {line}");
        }
    }
    match out.code() {
        Some(c) if c == expect => {
            if expect != 0 {
                println!("  (exit {c}, as expected)");
            }
            Ok(out.stdout.clone())
        }
        other => bail!(
            "`{}` on {} exited {:?}, expected {expect}",
            args.join(" "),
            n.name(),
            other
        ),
    }
}

fn demo(lab: &Lab) -> Result<()> {
    banner("The lab: node1 holds store1 (DRBD r0), node2 holds store2 (r1); peer link 10.0.254.0/30, LAN 10.1.0.0/24");
    run(lab, 1, &["ctmgr", "status"], 0)?;
    run(lab, 1, &["ctmgr", "drbd", "status"], 0)?;
    run(lab, 2, &["ctmgr", "status"], 0)?;
    run(lab, 2, &["ctmgr", "drbd", "status"], 0)?;

    banner("Create containers: two on store1 (node1), one on store2 (node2)");
    run(
        lab,
        1,
        &["ctmgr", "create", "web", "--template", "busybox", "--start"],
        0,
    )?;
    run(lab, 1, &["ctmgr", "create", "app", "--start"], 0)?;
    run(lab, 2, &["ctmgr", "create", "mail", "--start"], 0)?;
    run(lab, 1, &["ctmgr", "list"], 0)?;
    run(lab, 2, &["ctmgr", "list"], 0)?;
    println!(
        "(each create also pushed the container's config and fstab to the peer's replica dir)"
    );
    run(lab, 1, &["ctmgr", "sync", "--check"], 0)?;

    banner("Snapshot a running container (lxc-snapshot would refuse it), list it, and see LXC list it too");
    run(
        lab,
        1,
        &[
            "ctmgr",
            "snapshot",
            "web",
            "--comment",
            "before the failover",
        ],
        0,
    )?;
    run(lab, 1, &["ctmgr", "snapshots"], 0)?;
    run(
        lab,
        1,
        &[
            "lxc-snapshot",
            "-L",
            "-n",
            "web",
            "-P",
            "/srv/store1/containers",
        ],
        0,
    )?;
    run(lab, 1, &["ctmgr", "prune", "--all", "--dry-run"], 0)?;

    banner("Safety: node2 may not take store1 while node1 is Primary and connected (exit 3, nothing changed)");
    run(lab, 2, &["ctmgr", "takeover", "store1"], 3)?;

    banner("node1 crashes (links down, processes killed, DRBD gone)");
    lab.try_crash(1)?;
    println!("lab: node1 crashed");
    run(lab, 2, &["ctmgr", "drbd", "status"], 0)?;

    banner("Takeover on node2: preflight finds node1 silent on both paths and the gateway reachable, then promote, mount, start");
    run(lab, 2, &["ctmgr", "takeover", "store1"], 0)?;
    run(lab, 2, &["ctmgr", "status"], 0)?;

    banner("Run it again: every step is already done");
    run(lab, 2, &["ctmgr", "takeover", "store1"], 0)?;

    banner("node1 comes back as Secondary: it holds nothing now, and DRBD has it catch up");
    lab.try_revive(1)?;
    println!("lab: node1 revived");
    run(lab, 1, &["ctmgr", "drbd", "status"], 0)?;
    run(lab, 1, &["ctmgr", "status"], 0)?;
    Ok(())
}

fn main() -> ExitCode {
    let bins = match Bins::from_env() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ctmgr-demo: {e:#}");
            return ExitCode::from(1);
        }
    };
    println!("ctmgr demo: a two-node DRBD + Btrfs + LXC cluster in namespaces on this machine");
    let lab = match Lab::up(LabSpec::named("demo", 2), &bins) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ctmgr-demo: could not bring the lab up: {e:#}");
            return ExitCode::from(1);
        }
    };
    let result = demo(&lab);
    banner("Tearing the lab down");
    let down = lab.down();
    match (result, down) {
        (Ok(()), Ok(())) => {
            println!("demo finished: everything above ran for real (liblxc, Btrfs, sshd, drbdadm's parser; DRBD itself is the lab's stand-in)");
            ExitCode::SUCCESS
        }
        (Err(e), _) => {
            eprintln!("ctmgr-demo: {e:#}");
            ExitCode::from(1)
        }
        (_, Err(e)) => {
            eprintln!("ctmgr-demo: teardown: {e:#}");
            ExitCode::from(1)
        }
    }
}
