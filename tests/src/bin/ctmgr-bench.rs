//! `ctmgr-bench`: the benchmarks behind docs/PERFORMANCE.md.
//!
//! Every subcommand builds its own lab (sandbox or two-node), sets up the same state for
//! every contender, then measures the contenders interleaved (the order rotates each round)
//! and prints the median of the rounds and the ratio to ctmgr. Wall times are taken inside
//! the node by bash (`$EPOCHREALTIME` around the contender), so the lab's process runner and
//! `nsenter` are not part of any figure. The machine is shared and noisy: read the ratios,
//! not the absolute times. Nothing is written anywhere but the lab; the lab is torn down at
//! the end, also on failure. Every command has a deadline.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Duration as TimeDelta, Timelike, Utc};
use clap::{Parser, Subcommand};
use ctmgr::retention::{self, Policy, Snap};
use ctmgr_tests::lab::{Bins, Lab, LabSpec, Node};
use ctmgr_tests::run::Opts;

#[derive(Parser, Debug)]
#[command(about = "ctmgr benchmarks (see docs/PERFORMANCE.md)")]
struct Cli {
    /// Measured rounds per contender (each round runs every contender once, order rotated)
    #[arg(long, default_value_t = 5, global = true)]
    rounds: usize,
    #[command(subcommand)]
    cmd: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// `ctmgr list --json` vs `lxc-ls -f` over N containers, half running (sandbox)
    List {
        #[arg(long, default_value_t = 100)]
        containers: usize,
    },
    /// Takeover on node2: runbook script vs parallel floor vs `ctmgr takeover` (two nodes)
    Takeover {
        /// Set sizes, measured one after the other in the same lab (e.g. 20,100)
        #[arg(long, value_delimiter = ',', default_value = "20")]
        containers: Vec<usize>,
    },
    /// `ctmgr snapshot --all` vs a btrfs loop vs `btrbk run` over N running containers
    Snapshot {
        #[arg(long, default_value_t = 100)]
        containers: usize,
    },
    /// Retention planning over N snapshots: ctmgr's planner, `ctmgr prune --dry-run`,
    /// `btrbk --dry-run prune`
    PrunePlan {
        #[arg(long, default_value_t = 10_000)]
        snapshots: usize,
    },
    /// `ctmgr sync` vs scp per file vs one rsync, N containers (two nodes)
    Sync {
        #[arg(long, default_value_t = 100)]
        containers: usize,
    },
}

const LXCPATH: &str = "/srv/store1/containers";

/// Times `argv` inside the node with bash's `$EPOCHREALTIME`. Returns seconds and stdout.
/// Fails when the contender fails or passes `timeout`.
fn timed(
    node: &Node,
    argv: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<(f64, String)> {
    let wrapper = r#"s=$EPOCHREALTIME; "$@"; rc=$?; e=$EPOCHREALTIME
echo "BENCH-TIME $rc ${s/./} ${e/./}" >&2; exit $rc"#;
    let mut full = vec!["bash", "-c", wrapper, "bench"];
    full.extend_from_slice(argv);
    let opts = Opts {
        timeout,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Opts::default()
    };
    let out = node.cmd_with(&full, &opts);
    let line = out
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("BENCH-TIME "))
        .map(str::to_owned);
    let out = out.check().context("contender failed")?;
    let line = line.context("no timing line")?;
    let f: Vec<&str> = line.split_whitespace().collect();
    ensure!(f.len() == 4, "bad timing line {line:?}");
    let (s, e): (i64, i64) = (f[2].parse()?, f[3].parse()?);
    Ok(((e - s) as f64 / 1e6, out.stdout))
}

/// Runs a bash script inside the node (setup and checks, not measured).
fn sh(node: &Node, script: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let mut full = vec!["bash", "-c", script, "bench"];
    full.extend_from_slice(args);
    Ok(node.cmd_timeout(&full, timeout).check()?.stdout)
}

fn names(n: usize, from: usize) -> Vec<String> {
    (from..=n).map(|i| format!("c{i:03}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Measurements per contender, in the order contenders were declared.
struct Table {
    title: String,
    rows: Vec<(String, Vec<f64>)>,
}

impl Table {
    fn new(title: impl Into<String>, contenders: &[&str]) -> Table {
        Table {
            title: title.into(),
            rows: contenders
                .iter()
                .map(|c| (c.to_string(), Vec::new()))
                .collect(),
        }
    }

    fn push(&mut self, contender: &str, secs: f64) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.0 == contender) {
            r.1.push(secs);
        }
    }

    fn median_of(&self, contender: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.0 == contender)
            .map_or(f64::NAN, |r| median(&r.1))
    }

    /// Prints every run, the median and the ratio of each median to `base`'s.
    fn print(&self, base: &str) {
        let b = self.median_of(base);
        println!();
        println!("== {}", self.title);
        println!(
            "{:<34} {:>10} {:>12}  runs (ms)",
            "contender", "median ms", "/ median of"
        );
        for (name, v) in &self.rows {
            let m = median(v);
            let runs: Vec<String> = v.iter().map(|x| format!("{:.0}", x * 1e3)).collect();
            println!(
                "{:<34} {:>10.1} {:>12}  {}",
                name,
                m * 1e3,
                format!("{:.3}", m / b),
                runs.join(" ")
            );
        }
        println!("(ratio column: the contender's median / {base}'s median)");
    }
}

/// Rotates the contender order each round: every contender runs first as often as the others.
fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

fn lab_up(nodes: usize, image_mib: u64) -> Result<Lab> {
    let bins = Bins::from_env()?;
    let mut spec = LabSpec::new(nodes);
    spec.image_mib = image_mib;
    let t = Instant::now();
    let lab = Lab::up(spec, &bins)?;
    eprintln!(
        "bench: lab {} up ({} node(s)) in {:.1} s",
        lab.name(),
        nodes,
        t.elapsed().as_secs_f64()
    );
    Ok(lab)
}

/// `ctmgr create` each name, in one in-node loop.
fn create(node: &Node, names: &[String]) -> Result<()> {
    let t = Instant::now();
    let script = r#"for n in "$@"; do ctmgr -q create "$n" >/dev/null || { echo "create $n failed" >&2; exit 1; }; done"#;
    sh(
        node,
        script,
        &refs(names),
        Duration::from_secs(60 + 10 * names.len() as u64),
    )?;
    eprintln!(
        "bench: created {} containers in {:.1} s",
        names.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn running_count(node: &Node) -> Result<usize> {
    let out = sh(
        node,
        "lxc-ls --running -1 -P /srv/store1/containers",
        &[],
        Duration::from_secs(60),
    )?;
    Ok(out.split_whitespace().count())
}

fn machine() {
    let date = ctmgr_tests::run::host(&["date", "-u"], Duration::from_secs(5));
    let uname = ctmgr_tests::run::host(&["uname", "-r"], Duration::from_secs(5));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {} | {} core(s) | kernel {} | {}",
        date.stdout.trim(),
        cores,
        uname.stdout.trim(),
        cpu
    );
}

// ---------------------------------------------------------------------------------------
// list

fn bench_list(rounds: usize, n: usize) -> Result<()> {
    let lab = lab_up(1, 2048)?;
    let node = lab.node(1);
    let all = names(n, 1);
    create(node, &all)?;
    sh(
        node,
        r#"ctmgr -q start "$@""#,
        &refs(&all[..n / 2]),
        Duration::from_secs(600),
    )?;
    ensure!(running_count(node)? == n / 2, "expected {} running", n / 2);
    let t = Duration::from_secs(120);
    let contenders = ["ctmgr list --json", "lxc-ls -f"];
    let run = |c: &str| -> Result<f64> {
        let (secs, out) = match c {
            "ctmgr list --json" => timed(node, &["ctmgr", "--json", "list"], &[], t)?,
            _ => timed(node, &["lxc-ls", "-f", "-P", LXCPATH], &[], t)?,
        };
        // Both must have seen every container.
        let seen = all
            .iter()
            .filter(|name| out.contains(name.as_str()))
            .count();
        ensure!(seen == n, "{c} listed {seen} of {n} containers");
        Ok(secs)
    };
    for c in contenders {
        run(c)?; // warm-up: page cache and liblxc's first-run costs
    }
    let mut table = Table::new(
        format!("list: {n} containers ({} running), sandbox", n / 2),
        &contenders,
    );
    for r in 0..rounds {
        for c in rotated(&contenders, r) {
            table.push(c, run(c)?);
        }
    }
    table.print("lxc-ls -f");
    lab.down()
}

// ---------------------------------------------------------------------------------------
// takeover

const RUNBOOK: &str = r#"dev=$1; shift
s=$EPOCHREALTIME
drbdadm primary r0 || exit 1
mount -t btrfs -o noatime "$dev" /srv/store1 || exit 1
first=
for c in "$@"; do
  lxc-start -d -n "$c" -P /srv/store1/containers || exit 1
  [ -n "$first" ] || first=$EPOCHREALTIME
done
echo "first_us $(( ${first/./} - ${s/./} ))""#;

const FLOOR: &str = r#"dev=$1; shift
s=$EPOCHREALTIME
drbdadm primary r0
mount -t btrfs -o noatime "$dev" /srv/store1
for c in "$@"; do lxc-start -d -n "$c" -P /srv/store1/containers & done
wait -n
first=$EPOCHREALTIME
wait
echo "first_us $(( ${first/./} - ${s/./} ))""#;

/// node2 is Secondary and connected, store1 not mounted there.
fn takeover_ready(node: &Node) -> Result<()> {
    let role = sh(node, "drbdadm role r0", &[], Duration::from_secs(30))?;
    ensure!(
        role.trim().starts_with("Secondary"),
        "node2 is {} for r0",
        role.trim()
    );
    let cs = sh(node, "drbdadm cstate r0", &[], Duration::from_secs(30))?;
    ensure!(
        cs.trim() == "Connected",
        "r0 connection state {}",
        cs.trim()
    );
    let mounted = node
        .cmd_timeout(
            &["mountpoint", "-q", "/srv/store1"],
            Duration::from_secs(30),
        )
        .success();
    ensure!(!mounted, "/srv/store1 is mounted on node2");
    Ok(())
}

fn first_us(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("first_us "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|us| us / 1e6)
}

/// Time from the start of takeover to the first running container, from ctmgr's timeline.
fn ctmgr_first(stdout: &str) -> Result<f64> {
    let v: serde_json::Value =
        serde_json::from_str(stdout).context("parsing `ctmgr --json takeover`")?;
    let steps = v["steps"].as_array().context("no steps in takeover JSON")?;
    let mut before = 0u64;
    for s in steps {
        let ms = s["ms"].as_u64().unwrap_or(0);
        if s["step"] == "first-container" {
            return Ok((before + ms) as f64 / 1e3);
        }
        before += ms;
    }
    bail!("no first-container step in {stdout}")
}

fn bench_takeover(rounds: usize, sizes: &[usize]) -> Result<()> {
    let lab = lab_up(2, 2048)?;
    let (n1, n2) = (lab.node(1), lab.node(2));
    let dev = lab.store_device("store1")?;
    let mut have = 0;
    let long = Duration::from_secs(900);
    for &n in sizes {
        ensure!(n > have, "sizes must grow: {sizes:?}");
        // node1 must hold store1 to create containers there.
        if have > 0 {
            n1.cmd_timeout(&["ctmgr", "-q", "takeover", "store1"], long)
                .check()?;
        }
        let new = names(n, have + 1);
        create(n1, &new)?;
        have = n;
        n1.cmd_timeout(&["ctmgr", "-q", "release", "store1"], long)
            .check()?;
        takeover_ready(n2)?;
        let all = names(n, 1);
        let contenders = [
            "runbook (sequential)",
            "floor (parallel, no checks)",
            "ctmgr takeover",
        ];
        let mut table = Table::new(
            format!("takeover: {n} containers, node2, peer connected"),
            &contenders,
        );
        let mut firsts = Table::new(
            format!("takeover: {n} containers, time to the first container RUNNING"),
            &contenders,
        );
        let mut releases = Vec::new();
        for r in 0..rounds {
            for c in rotated(&contenders, r) {
                takeover_ready(n2)?;
                let mut args = vec![dev.as_str()];
                args.extend(refs(&all));
                let (secs, out) = match c {
                    "runbook (sequential)" => {
                        let mut a = vec!["bash", "-c", RUNBOOK, "runbook"];
                        a.extend(&args);
                        timed(n2, &a, &[], long)?
                    }
                    "floor (parallel, no checks)" => {
                        let mut a = vec!["bash", "-c", FLOOR, "floor"];
                        a.extend(&args);
                        timed(n2, &a, &[], long)?
                    }
                    _ => timed(n2, &["ctmgr", "--json", "takeover", "store1"], &[], long)?,
                };
                let first = if c == "ctmgr takeover" {
                    ctmgr_first(&out)?
                } else {
                    first_us(&out).context("no first_us line")?
                };
                let up = running_count(n2)?;
                ensure!(up == n, "{c}: {up} of {n} containers RUNNING");
                table.push(c, secs);
                firsts.push(c, first);
                // Reset (not measured). busybox ignores lxc.signal.halt, so every clean
                // shutdown runs into its timeout: keep it short.
                let t = Instant::now();
                n2.cmd_timeout(
                    &["ctmgr", "-q", "release", "store1", "--timeout", "1"],
                    long,
                )
                .check()?;
                releases.push(t.elapsed().as_secs_f64());
            }
        }
        table.print("ctmgr takeover");
        firsts.print("ctmgr takeover");
        println!(
            "(reset between runs: `ctmgr release store1` on node2, median {:.0} ms)",
            median(&releases) * 1e3
        );
        // Hand store1 back to node1 for the next size.
        takeover_ready(n2)?;
    }
    lab.down()
}

// ---------------------------------------------------------------------------------------
// snapshot

const SNAP_CLEAN: &str = r#"shopt -s nullglob
subs=(/srv/store1/containers/*/snaps/*/rootfs /srv/store1/bench-loop/* /srv/store1/bench-btrbk/*)
if [ ${#subs[@]} -gt 0 ]; then btrfs subvolume delete "${subs[@]}" >/dev/null || exit 1; fi
rm -rf /srv/store1/containers/*/snaps/* /srv/store1/bench-loop /srv/store1/bench-btrbk
mkdir -p /srv/store1/bench-loop /srv/store1/bench-btrbk
sync
btrfs subvolume sync /srv/store1 >/dev/null"#;

const SNAP_LOOP: &str = r#"for c in /srv/store1/containers/*/; do
  c=${c%/}
  btrfs subvolume snapshot -r "$c/rootfs" "/srv/store1/bench-loop/${c##*/}" >/dev/null || exit 1
done"#;

const SNAP_COUNT: &str = r#"shopt -s nullglob
a=(/srv/store1/containers/*/snaps/*/rootfs); b=(/srv/store1/bench-loop/*); c=(/srv/store1/bench-btrbk/*)
echo "${#a[@]} ${#b[@]} ${#c[@]}""#;

fn bench_snapshot(rounds: usize, n: usize) -> Result<()> {
    let lab = lab_up(1, 4096)?;
    let node = lab.node(1);
    let all = names(n, 1);
    create(node, &all)?;
    sh(
        node,
        r#"ctmgr -q start "$@""#,
        &refs(&all),
        Duration::from_secs(900),
    )?;
    ensure!(running_count(node)? == n, "expected {n} running");
    let mut conf = String::from(
        "# ctmgr-bench: snapshots only\ntimestamp_format long-iso\nsnapshot_create always\n\
         snapshot_preserve_min all\nvolume /srv/store1\n  snapshot_dir bench-btrbk\n",
    );
    for name in &all {
        conf.push_str(&format!(
            "  subvolume containers/{name}/rootfs\n    snapshot_name {name}\n"
        ));
    }
    node.write_file("/srv/store1/bench-btrbk.conf", conf.as_bytes())?;
    let long = Duration::from_secs(900);
    let contenders = [
        "ctmgr snapshot --all",
        "btrfs subvolume snapshot loop",
        "btrbk run",
    ];
    let run = |c: &str| -> Result<f64> {
        sh(node, SNAP_CLEAN, &[], long)?;
        let (secs, _) = match c {
            "ctmgr snapshot --all" => {
                timed(node, &["ctmgr", "-q", "snapshot", "--all"], &[], long)?
            }
            "btrfs subvolume snapshot loop" => timed(node, &["bash", "-c", SNAP_LOOP], &[], long)?,
            _ => timed(
                node,
                &["btrbk", "-q", "-c", "/srv/store1/bench-btrbk.conf", "run"],
                &[],
                long,
            )?,
        };
        let counts = sh(node, SNAP_COUNT, &[], long)?;
        let counts: Vec<usize> = counts
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let made = match c {
            "ctmgr snapshot --all" => counts[0],
            "btrfs subvolume snapshot loop" => counts[1],
            _ => counts[2],
        };
        ensure!(made == n, "{c} made {made} of {n} snapshots");
        Ok(secs)
    };
    for c in contenders {
        run(c)?; // warm-up
    }
    let mut table = Table::new(
        format!("snapshot: {n} running containers, sandbox"),
        &contenders,
    );
    for r in 0..rounds {
        for c in rotated(&contenders, r) {
            table.push(c, run(c)?);
        }
    }
    sh(node, SNAP_CLEAN, &[], long)?;
    table.print("ctmgr snapshot --all");
    lab.down()
}

// ---------------------------------------------------------------------------------------
// prune-plan

fn default_policy() -> Policy {
    // cluster.toml's [snapshots] defaults (DESIGN.md §2), which the lab's config uses.
    Policy {
        keep_last: 3,
        keep_hourly: 24,
        keep_daily: 7,
        keep_weekly: 4,
        keep_monthly: 6,
        keep_yearly: 0,
        keep_within: None,
    }
}

const BTRBK_PRUNE_CONF: &str = "# ctmgr-bench: the [snapshots] defaults as btrbk sees them\n\
timestamp_format long\nsnapshot_create no\nsnapshot_preserve_min latest\n\
snapshot_preserve 24h 7d 4w 6m\npreserve_day_of_week monday\npreserve_hour_of_day 0\n\
volume /srv/store1\n  snapshot_dir bench-btrbk\n  subvolume bench-src\n    snapshot_name c001\n";

/// Reads `name ctmgr_ts btrbk_name` lines on stdin and makes the snapshot subvolumes in
/// ctmgr's layout (c001) and in btrbk's (bench-btrbk/). `ts` comes as `YYYY:MM:DD_HH:MM:SS`
/// (`read` splits on spaces) and is written back as lxc-snapshot writes it.
const PRUNE_FILL: &str = r#"set -e
cd /srv/store1
btrfs subvolume create bench-src >/dev/null
mkdir -p bench-btrbk containers/c001/snaps
cfg=$(<containers/c001/config)
while read -r name ts bb; do
  d=containers/c001/snaps/$name
  mkdir "$d"
  btrfs subvolume snapshot -r bench-src "$d/rootfs" >/dev/null
  printf '%s' "${ts/_/ }" > "$d/ts"
  printf '%s\n' "$cfg" > "$d/config"
  : > "$d/fstab"
  btrfs subvolume snapshot -r bench-src "bench-btrbk/$bb" >/dev/null
done"#;

fn bench_prune(rounds: usize, n: usize) -> Result<()> {
    ensure!(n >= 2, "need at least 2 snapshots");
    // Hourly snapshots, the newest 10 minutes ago (whole minutes: btrbk's `long` format).
    let now = Utc::now();
    let newest = (now - TimeDelta::minutes(10))
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .context("time")?;
    let times: Vec<DateTime<Utc>> = (0..n)
        .map(|i| newest - TimeDelta::hours(i as i64))
        .collect();
    let cnames: Vec<String> = times
        .iter()
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .collect();
    let bnames: Vec<String> = times
        .iter()
        .map(|t| format!("c001.{}", t.format("%Y%m%dT%H%M")))
        .collect();

    // 1. The planner alone, in this process.
    let policy = default_policy();
    let snaps: Vec<Snap> = cnames
        .iter()
        .zip(&times)
        .map(|(name, &time)| Snap { name, time })
        .collect();
    let protected = BTreeSet::new();
    let mut plan_secs = Vec::new();
    let mut kept_plan = 0;
    for _ in 0..rounds.max(3) {
        let t = Instant::now();
        let d = retention::plan(&snaps, &policy, &protected, &Utc)?;
        plan_secs.push(t.elapsed().as_secs_f64());
        kept_plan = d.iter().filter(|d| d.keep).count();
    }

    // 2. End to end, on real subvolumes in a sandbox.
    let lab = lab_up(1, 4096)?;
    let node = lab.node(1);
    create(node, &names(1, 1))?;
    let mut input = String::new();
    for ((c, t), b) in cnames.iter().zip(&times).zip(&bnames) {
        input.push_str(&format!("{c} {} {b}\n", t.format("%Y:%m:%d_%H:%M:%S")));
    }
    let t = Instant::now();
    let opts = Opts {
        stdin: Some(input.into_bytes()),
        timeout: Duration::from_secs(60 + n as u64 / 10),
        ..Opts::default()
    };
    node.cmd_with(&["bash", "-c", PRUNE_FILL], &opts)
        .check()
        .context("making the snapshot subvolumes")?;
    eprintln!(
        "bench: made 2 x {n} snapshot subvolumes in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    node.write_file("/srv/store1/bench-btrbk.conf", BTRBK_PRUNE_CONF.as_bytes())?;
    let env = [("TZ", "UTC")];
    let long = Duration::from_secs(900);
    let contenders = ["ctmgr prune --dry-run", "btrbk --dry-run prune"];
    let mut kept: HashMap<&str, BTreeSet<usize>> = HashMap::new();
    let index_c: HashMap<&str, usize> = cnames
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let index_b: HashMap<&str, usize> = bnames
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut run = |c: &'static str| -> Result<f64> {
        let (secs, out) = if c == "ctmgr prune --dry-run" {
            timed(
                node,
                &["ctmgr", "--json", "prune", "c001", "--dry-run"],
                &env,
                long,
            )?
        } else {
            timed(
                node,
                &[
                    "btrbk",
                    "-c",
                    "/srv/store1/bench-btrbk.conf",
                    "--dry-run",
                    "--print-schedule",
                    "prune",
                ],
                &env,
                long,
            )?
        };
        let mut keep = BTreeSet::new();
        let mut seen = 0;
        if c == "ctmgr prune --dry-run" {
            let v: serde_json::Value = serde_json::from_str(&out)?;
            for d in v["decisions"].as_array().context("no decisions")? {
                let name = d["snapshot"].as_str().unwrap_or_default();
                let i = *index_c.get(name).context("unknown snapshot")?;
                seen += 1;
                if d["keep"] == true {
                    keep.insert(i);
                }
            }
        } else {
            // SNAPSHOT SCHEDULE lines: ACTION SUBVOLUME SCHEME REASON
            for line in out.lines() {
                let mut f = line.split_whitespace();
                let (Some(action), Some(path)) = (f.next(), f.next()) else {
                    continue;
                };
                let Some(base) = path.rsplit('/').next() else {
                    continue;
                };
                // Only the schedule's rows ("delete" or "-"); the summary repeats deletions
                // as "--- PATH".
                if action != "delete" && action != "-" {
                    continue;
                }
                if let Some(&i) = index_b.get(base) {
                    seen += 1;
                    if action != "delete" {
                        keep.insert(i);
                    }
                }
            }
        }
        ensure!(seen == n, "{c} decided on {seen} of {n} snapshots");
        kept.insert(c, keep);
        Ok(secs)
    };
    for c in contenders {
        run(c)?;
    }
    let mut table = Table::new(
        format!("prune planning: {n} hourly snapshots of one container, sandbox, TZ=UTC"),
        &contenders,
    );
    for r in 0..rounds {
        for c in rotated(&contenders, r) {
            table.push(c, run(c)?);
        }
    }
    table.print("ctmgr prune --dry-run");
    println!(
        "ctmgr::retention::plan alone (in process): median {:.2} ms over {} runs ({}); \
         btrbk / planner = {:.0}x",
        median(&plan_secs) * 1e3,
        plan_secs.len(),
        plan_secs
            .iter()
            .map(|s| format!("{:.2}", s * 1e3))
            .collect::<Vec<_>>()
            .join(" "),
        table.median_of("btrbk --dry-run prune") / median(&plan_secs)
    );
    let empty = BTreeSet::new();
    let kc = kept.get("ctmgr prune --dry-run").unwrap_or(&empty);
    let kb = kept.get("btrbk --dry-run prune").unwrap_or(&empty);
    ensure!(
        kc.len() == kept_plan,
        "ctmgr prune kept {} but the planner {}",
        kc.len(),
        kept_plan
    );
    let ages = |s: &BTreeSet<usize>| -> String {
        s.iter()
            .map(|i| format!("{}h", i))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("keep sets (age of each kept snapshot in hours, newest = 0h):");
    println!("  ctmgr ({}): {}", kc.len(), ages(kc));
    println!("  btrbk ({}): {}", kb.len(), ages(kb));
    println!(
        "  both: {}, only ctmgr: {}, only btrbk: {}",
        kc.intersection(kb).count(),
        kc.difference(kb).count(),
        kb.difference(kc).count()
    );
    lab.down()
}

// ---------------------------------------------------------------------------------------
// sync

const SCP_SYNC: &str = r#"for c in "$@"; do
  ssh root@10.0.254.2 mkdir -p "/srv/store2/containers/$c" || exit 1
  scp -q "/srv/store1/containers/$c/config" "root@10.0.254.2:/srv/store2/containers/$c/" || exit 1
  scp -q "/srv/store1/containers/$c/fstab" "root@10.0.254.2:/srv/store2/containers/$c/" || exit 1
done"#;

fn bench_sync(rounds: usize, n: usize) -> Result<()> {
    let help = ctmgr_tests::run::host(
        &[
            Bins::from_env()?.ctmgr.to_string_lossy().as_ref(),
            "sync",
            "--help",
        ],
        Duration::from_secs(10),
    );
    if !help.success() {
        bail!("`ctmgr sync` is not available in this build: {help}");
    }
    let lab = lab_up(2, 2048)?;
    let (n1, n2) = (lab.node(1), lab.node(2));
    let all = names(n, 1);
    create(n1, &all)?;
    let long = Duration::from_secs(900);
    let wipe = || -> Result<()> {
        sh(
            n2,
            r#"for c in "$@"; do rm -rf "/srv/store2/containers/$c"; done; rm -rf /var/lib/ctmgr/sync* 2>/dev/null; true"#,
            &refs(&all),
            long,
        )?;
        sh(
            n1,
            "rm -rf /var/lib/ctmgr/sync* 2>/dev/null; true",
            &[],
            long,
        )?;
        Ok(())
    };
    let verify = |what: &str| -> Result<()> {
        let out = sh(
            n2,
            r#"k=0; for c in "$@"; do [ -f "/srv/store2/containers/$c/config" ] && [ -f "/srv/store2/containers/$c/fstab" ] && k=$((k+1)); done; echo $k"#,
            &refs(&all),
            long,
        )?;
        ensure!(
            out.trim() == n.to_string(),
            "{what}: {} of {n} replicas",
            out.trim()
        );
        Ok(())
    };
    let contenders = [
        "ctmgr sync (first push)",
        "ctmgr sync (no change)",
        "scp x2 per container",
        "rsync -a (one run)",
    ];
    let mut scp_args = vec!["bash", "-c", SCP_SYNC, "scp"];
    scp_args.extend(refs(&all));
    let run = |c: &str| -> Result<f64> {
        if c != "ctmgr sync (no change)" {
            wipe()?;
        }
        let (secs, _) = match c {
            "ctmgr sync (first push)" | "ctmgr sync (no change)" => {
                timed(n1, &["ctmgr", "-q", "sync"], &[], long)?
            }
            "scp x2 per container" => timed(n1, &scp_args, &[], long)?,
            _ => timed(
                n1,
                &[
                    "rsync",
                    "-a",
                    "--include=*/",
                    "--include=config",
                    "--include=fstab",
                    "--exclude=*",
                    "/srv/store1/containers/",
                    "root@10.0.254.2:/srv/store2/containers/",
                ],
                &[],
                long,
            )?,
        };
        verify(c)?;
        Ok(secs)
    };
    let mut table = Table::new(
        format!("sync: {n} containers, node1 -> node2 over ssh"),
        &contenders,
    );
    for r in 0..rounds {
        // "no change" must directly follow a first push.
        let order = rotated(&[0usize, 1, 2], r);
        for k in order {
            match k {
                0 => {
                    table.push(contenders[0], run(contenders[0])?);
                    table.push(contenders[1], run(contenders[1])?);
                }
                1 => table.push(contenders[2], run(contenders[2])?),
                _ => table.push(contenders[3], run(contenders[3])?),
            }
        }
    }
    table.print("ctmgr sync (first push)");
    lab.down()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    machine();
    let rounds = cli.rounds.max(1);
    let result = match &cli.cmd {
        Bench::List { containers } => bench_list(rounds, *containers),
        Bench::Takeover { containers } => bench_takeover(rounds, containers),
        Bench::Snapshot { containers } => bench_snapshot(rounds, *containers),
        Bench::PrunePlan { snapshots } => bench_prune(rounds, *snapshots),
        Bench::Sync { containers } => bench_sync(rounds, *containers),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctmgr-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
