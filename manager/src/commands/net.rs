//! `ctmgr net render|check`: the bridge and peer-link configuration of this
//! node, and a check of the live network against it (docs/network.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ctmgr::exit::{usage, ExitStatus};
use ctmgr::net::{self, Finding, Rendered};

use super::{print_json, print_table, Session};

/// Where `net check` reads host names from.
const HOSTS_FILE: &str = "/etc/hosts";

#[derive(clap::Subcommand, Debug)]
pub enum NetCommand {
    /// Write this node's bridge and peer-link configuration (stdout unless --out)
    Render {
        /// Network manager to write for
        #[arg(long, value_enum, default_value = "interfaces")]
        format: FormatArg,
        /// Directory to write the files into, atomically (e.g. /etc/network/interfaces.d
        /// or /etc/systemd/network); without it the files are printed
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Check bridge, addresses, /etc/hosts, peer reachability and DRBD ports (exit 1 on any failure)
    Check,
}

/// `--format`
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// ifupdown: /etc/network/interfaces.d/ctmgr
    Interfaces,
    /// systemd-networkd: .netdev and .network units
    Networkd,
}

impl From<FormatArg> for net::Format {
    fn from(f: FormatArg) -> net::Format {
        match f {
            FormatArg::Interfaces => net::Format::Interfaces,
            FormatArg::Networkd => net::Format::Networkd,
        }
    }
}

/// `net render --json` (docs/network.md).
#[derive(serde::Serialize)]
struct RenderReport<'a> {
    node: &'a str,
    format: net::Format,
    files: &'a [net::RenderedFile],
    warnings: &'a [String],
}

/// `net check --json` (docs/network.md).
#[derive(serde::Serialize)]
struct CheckReport<'a> {
    node: &'a str,
    ok: bool,
    findings: &'a [Finding],
}

pub fn run(s: &Session, cmd: &NetCommand) -> Result<ExitStatus> {
    match cmd {
        NetCommand::Render { format, out } => render(s, (*format).into(), out.as_deref()),
        NetCommand::Check => check(s),
    }
}

fn render(s: &Session, format: net::Format, out: Option<&Path>) -> Result<ExitStatus> {
    let node = this_node(s)?;
    let rendered = net::render(&s.config, node, format)
        .with_context(|| format!("failed to render the network of node {}", node.name))?;
    for w in &rendered.warnings {
        if !s.quiet {
            eprintln!("ctmgr: warning: {w}");
        }
    }
    match out {
        Some(dir) => write_files(s, &rendered, dir)?,
        None if s.json => print_json(&RenderReport {
            node: &node.name,
            format,
            files: &rendered.files,
            warnings: &rendered.warnings,
        })?,
        None => print_files(&rendered)?,
    }
    Ok(ExitStatus::Done)
}

fn write_files(s: &Session, rendered: &Rendered, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(usage(format!(
            "--out {}: not a directory; create it or name another",
            dir.display()
        )));
    }
    for f in &rendered.files {
        let name = f
            .path
            .file_name()
            .with_context(|| format!("rendered path {} has no file name", f.path.display()))?;
        let target = dir.join(name);
        ctmgr::fsutil::write_atomic(&target, f.content.as_bytes(), 0o644)
            .with_context(|| format!("failed to write {}", target.display()))?;
        s.say(&format!(
            "wrote {} (belongs in {})",
            target.display(),
            f.path.display()
        ));
    }
    Ok(())
}

fn print_files(rendered: &Rendered) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for (i, f) in rendered.files.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "# ==> {} <==", f.path.display())?;
        out.write_all(f.content.as_bytes())?;
    }
    Ok(())
}

fn check(s: &Session) -> Result<ExitStatus> {
    let node = this_node(s)?;
    let (hosts_text, hosts_problem) = match std::fs::read_to_string(HOSTS_FILE) {
        Ok(text) => (text, None),
        Err(e) => (
            String::new(),
            Some(Finding {
                check: "hosts".to_owned(),
                ok: false,
                severity: net::Severity::Error,
                message: format!(
                    "cannot read {HOSTS_FILE}: {e}; node names cannot resolve to the peer link"
                ),
            }),
        ),
    };
    let mut findings: Vec<Finding> = hosts_problem.into_iter().collect();
    findings.extend(net::check(
        &s.config,
        node,
        &s.runner,
        &hosts_text,
        &net::tcp_probe,
    ));
    let all_ok = findings.iter().all(|f| f.ok);
    if s.json {
        print_json(&CheckReport {
            node: &node.name,
            ok: all_ok,
            findings: &findings,
        })?;
    } else {
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| {
                vec![
                    f.check.clone(),
                    status_word(f).to_owned(),
                    f.message.clone(),
                ]
            })
            .collect();
        print_table(&["CHECK", "STATUS", "MESSAGE"], &rows)?;
    }
    Ok(if all_ok {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

/// This node's entry; `Session::open` resolved it, so it exists.
fn this_node(s: &Session) -> Result<&ctmgr::config::Node> {
    s.config
        .node(&s.node)
        .with_context(|| format!("node {} is not in {}", s.node, s.config.path.display()))
}

fn status_word(f: &Finding) -> &'static str {
    match (f.ok, f.severity) {
        (true, _) => "OK",
        (false, net::Severity::Warning) => "WARN",
        (false, _) => "FAIL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: NetCommand,
    }

    #[test]
    fn format_defaults_to_interfaces_and_accepts_networkd() {
        let t = T::try_parse_from(["t", "render"]).unwrap();
        assert!(matches!(
            t.cmd,
            NetCommand::Render {
                format: FormatArg::Interfaces,
                out: None
            }
        ));
        let t =
            T::try_parse_from(["t", "render", "--format", "networkd", "--out", "/tmp/x"]).unwrap();
        match t.cmd {
            NetCommand::Render { format, out } => {
                assert_eq!(net::Format::from(format), net::Format::Networkd);
                assert_eq!(out.as_deref(), Some(Path::new("/tmp/x")));
            }
            NetCommand::Check => panic!("parsed as check"),
        }
        assert!(T::try_parse_from(["t", "render", "--format", "netplan"]).is_err());
    }

    #[test]
    fn failed_warnings_read_warn() {
        let f = |ok, severity| Finding {
            check: "x".into(),
            ok,
            severity,
            message: String::new(),
        };
        assert_eq!(status_word(&f(true, net::Severity::Info)), "OK");
        assert_eq!(status_word(&f(false, net::Severity::Warning)), "WARN");
        assert_eq!(status_word(&f(false, net::Severity::Error)), "FAIL");
    }
}
