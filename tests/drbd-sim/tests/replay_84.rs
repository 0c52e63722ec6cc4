//! Replays the real DRBD 8.4.11 capture against the simulator in 8.4 mode: every
//! command on its node, asserting exit code and output byte for byte.
//!
//! Data-driven: the scenario is the capture itself (`### nodeX$ CMD`, `### exit code N`,
//! then the output), so the same file can be replayed on real DRBD. Harness rules:
//! - `cat /proc/drbd` runs `ctmgr-drbd-sim tick` on that node (one read = one step of a
//!   handshake or resync, as in the lab), then reads the node's /proc/drbd stand-in file;
//! - `mount -t btrfs DEV DIR` / `umount DIR` are emulated by the test-only hook
//!   DRBD_SIM_HOLD_OPEN=DEV on that node (the device is held open while mounted);
//! - `cat /mnt/...` reads a file system the simulator does not have: such steps are checked
//!   for their exit code only, and the test asserts exactly which ones they are;
//! - the capture was taken on a TTY, so the replay sets DRBD_SIM_COLOR=always;
//! - a block in the capture cannot end with an empty line (the empty line separates
//!   blocks), so output ending in "\n\n" (drbdsetup status) matches a block ending "\n";
//! - `[usage text omitted]` in the capture matches any usage text;
//! - data/drbd-8.4.11-transcript.io sets the counters that I/O outside DRBD changed.
mod common;

use common::Lab;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

struct Step {
    node: String,
    cmd: String,
    code: i32,
    output: String,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn parse_transcript(text: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(head) = lines[i].strip_prefix("### ") else {
            i += 1;
            continue;
        };
        let (node, cmd) = head.split_once("$ ").expect("### nodeX$ CMD");
        let code: i32 = lines[i + 1]
            .strip_prefix("### exit code ")
            .expect("### exit code N")
            .parse()
            .unwrap();
        let mut j = i + 2;
        let mut out: Vec<&str> = Vec::new();
        while j < lines.len() && !lines[j].starts_with("### ") {
            out.push(lines[j]);
            j += 1;
        }
        // One empty line separates a block from the next header.
        if j < lines.len() && out.last() == Some(&"") {
            out.pop();
        }
        let mut output = out.join("\n");
        if !out.is_empty() {
            output.push('\n');
        }
        steps.push(Step {
            node: node.to_string(),
            cmd: cmd.to_string(),
            code,
            output,
        });
        i = j;
    }
    steps
}

fn io_hooks() -> HashMap<usize, Vec<(String, String, Vec<String>)>> {
    let mut m: HashMap<usize, Vec<_>> = HashMap::new();
    for line in fs::read_to_string(data("drbd-8.4.11-transcript.io"))
        .unwrap()
        .lines()
    {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        m.entry(w[0].parse().unwrap()).or_default().push((
            w[1].to_string(),
            w[2].to_string(),
            w[3..].iter().map(|s| s.to_string()).collect(),
        ));
    }
    m
}

fn matches(expected: &str, actual: &str) -> bool {
    if let Some((before, _)) = expected.split_once("[usage text omitted]\n") {
        return actual.starts_with(before) && actual.len() > before.len();
    }
    actual == expected || (actual.ends_with("\n\n") && &actual[..actual.len() - 1] == expected)
}

#[test]
fn fixture_copy_is_the_shared_capture() {
    let shared = PathBuf::from("/work/shared/fixtures/drbd-8.4.11-real/transcript.txt");
    if let Ok(orig) = fs::read(&shared) {
        assert_eq!(orig, fs::read(data("drbd-8.4.11-transcript.txt")).unwrap());
    }
}

#[test]
fn replay_real_drbd_84_capture() {
    let steps = parse_transcript(&fs::read_to_string(data("drbd-8.4.11-transcript.txt")).unwrap());
    assert_eq!(steps.len(), 49, "capture parsed into its blocks");
    let hooks = io_hooks();
    let mut lab = Lab::new("replay84", "8.4");
    lab.extra_env
        .push(("DRBD_SIM_COLOR".into(), "always".into()));
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    let mut unchecked = Vec::new();
    for (idx, step) in steps.iter().enumerate() {
        let n = idx + 1;
        for (node, res, kv) in hooks.get(&n).into_iter().flatten() {
            let mut args = vec!["set-stats", node.as_str(), res.as_str()];
            args.extend(kv.iter().map(String::as_str));
            let r = lab.sim(node, &args);
            assert_eq!(r.code, 0, "set-stats before step {n}: {}", r.out);
        }
        let node = step.node.as_str();
        let mut out = String::new();
        let mut code = 0;
        let mut comparable = true;
        for part in step.cmd.split(" && ") {
            let words: Vec<&str> = part.split_whitespace().collect();
            let hold = held.get(node).map(|v| v.join(",")).unwrap_or_default();
            match words.as_slice() {
                ["cat", "/proc/drbd"] => {
                    let r = lab.sim(node, &["tick"]);
                    assert_eq!(r.code, 0, "tick: {}", r.out);
                    out.push_str(&lab.proc_file(node));
                }
                ["drbdadm" | "drbdsetup", ..] => {
                    let r = lab.run_env(node, &words, &[("DRBD_SIM_HOLD_OPEN", &hold)]);
                    out.push_str(&r.out);
                    code = r.code;
                }
                ["mount", "-t", "btrfs", dev, _dir] => held
                    .entry(node.to_string())
                    .or_default()
                    .push(dev.to_string()),
                ["umount", _dir] => {
                    held.remove(node);
                }
                ["cat", path] if path.starts_with("/mnt/") => comparable = false,
                _ => panic!("step {n}: no rule to replay '{part}'"),
            }
            if code != 0 {
                break;
            }
        }
        assert_eq!(
            code, step.code,
            "step {n} {node}$ {}: exit code; output:\n{out}",
            step.cmd
        );
        if comparable {
            assert!(
                matches(&step.output, &out),
                "step {n} {node}$ {}\n--- expected\n{:?}\n--- actual\n{:?}",
                step.cmd,
                step.output,
                out
            );
        } else {
            unchecked.push(n);
        }
    }
    // Only the two reads of /mnt/f.txt (a file system, not DRBD) are not compared.
    assert_eq!(unchecked, vec![19, 20]);
}
