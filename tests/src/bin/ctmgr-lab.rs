//! `ctmgr-lab`: bring the two-node lab (or the one-node sandbox) up and down by hand, run
//! commands in its nodes, and play failures. The lab's state lives in /run/ctmgr-lab/<name>,
//! so every subcommand can run from a different process.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ctmgr_tests::lab::{Bins, Lab, LabSpec};
use ctmgr_tests::run::Opts;

#[derive(Parser)]
#[command(name = "ctmgr-lab", about = "The ctmgr two-node lab on one machine")]
struct Cli {
    /// Lab name (at most 8 characters a-z0-9)
    #[arg(long, global = true, default_value = "ctlab")]
    name: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab and leave it up
    Up {
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
        nodes: u8,
        /// DRBD version the stand-in plays: 9 or 8.4
        #[arg(long, default_value = "9")]
        drbd: String,
        /// Size of each store image in MiB
        #[arg(long, default_value_t = 512)]
        image_mib: u64,
    },
    /// Tear the lab down
    Down,
    /// Run a command inside a node; its exit code is passed through
    Exec {
        /// node1 or node2 (or 1, 2)
        node: String,
        /// Deadline in seconds
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// Power-fail a node
    Crash { node: String },
    /// Bring a crashed node back
    Revive { node: String },
    /// Cut the peer link (the LAN stays)
    CutLink,
    /// Heal the peer link
    HealLink,
    /// Show the lab
    Status,
    /// Remove labs left behind by dead processes
    Sweep,
}

fn node_index(s: &str) -> Result<usize> {
    match s.trim_start_matches("node") {
        "1" => Ok(1),
        "2" => Ok(2),
        _ => anyhow::bail!("unknown node {s:?}: use node1 or node2"),
    }
}

/// Prints to stdout, ignoring a closed pipe (`ctmgr-lab status | head`).
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ctmgr-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let name = cli.name.as_str();
    match cli.cmd {
        Cmd::Up {
            nodes,
            drbd,
            image_mib,
        } => {
            let bins = Bins::from_env()?;
            let spec = LabSpec {
                name: name.to_string(),
                nodes: nodes as usize,
                image_mib,
                drbd_version: Some(drbd),
            };
            let lab = Lab::up(spec, &bins)?;
            out(&lab.status());
            lab.persist()?;
            out(&format!(
                "lab {name} is up; `ctmgr-lab --name {name} exec node1 CMD…`, `ctmgr-lab --name {name} down` when done\n"
            ));
        }
        Cmd::Down => {
            Lab::down_by_name(name).with_context(|| format!("tearing down lab {name}"))?;
            out(&format!("lab {name} is down\n"));
        }
        Cmd::Exec {
            node,
            timeout,
            argv,
        } => {
            let lab = Lab::attach(name)?;
            let n = node_index(&node)?;
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let output = lab
                .node(n)
                .cmd_with(&argv, &Opts::timeout(Duration::from_secs(timeout)));
            out(&output.stdout);
            eprint!("{}", output.stderr);
            if output.timed_out {
                eprintln!("ctmgr-lab: killed after {timeout} s");
                return Ok(ExitCode::from(124));
            }
            let code = output.code().unwrap_or(128 + 9);
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Cmd::Crash { node } => Lab::attach(name)?.try_crash(node_index(&node)?)?,
        Cmd::Revive { node } => Lab::attach(name)?.try_revive(node_index(&node)?)?,
        Cmd::CutLink => Lab::attach(name)?.try_cut_link()?,
        Cmd::HealLink => Lab::attach(name)?.try_heal_link()?,
        Cmd::Status => out(&Lab::attach(name)?.status()),
        Cmd::Sweep => ctmgr_tests::lab::sweep()?,
    }
    Ok(ExitCode::SUCCESS)
}
