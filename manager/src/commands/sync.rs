//! `ctmgr sync [NAME…] [--check] [--force]`, the hidden `ctmgr
//! __sync-receive` the peer runs over ssh, and the replica refresh that
//! `create` (and other commands that change a container) run afterwards.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ctmgr::exit::{usage, ExitStatus};
use ctmgr::sync::{self, Mode, Options, Report, Status, SyncError};

use super::{print_json, print_table, Session};

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// Containers to sync [default: every container of the stores held here]
    pub names: Vec<String>,
    /// Only compare the peer's replicas with this node's files; change nothing (exit 1 on drift)
    #[arg(long, conflicts_with = "force")]
    pub check: bool,
    /// Overwrite (or remove) replicas that were changed on the peer since the last sync
    #[arg(long)]
    pub force: bool,
}

fn is_problem(status: Status) -> bool {
    matches!(status, Status::Drift | Status::Refused | Status::Failed)
}

/// Library errors that are the operator's doing map to exit 2.
fn classify(err: SyncError) -> anyhow::Error {
    match err {
        SyncError::UnknownContainer { .. } => usage(err.to_string()),
        other => anyhow::Error::new(other),
    }
}

fn run_report(s: &Session, names: &[String], mode: Mode, force: bool) -> Result<Report> {
    let opts = Options {
        names,
        mode,
        force,
        timeout: None,
    };
    let peer = s
        .config
        .peer_of(&s.node)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "the peer".to_string());
    sync::run_sync(&s.config, &s.node, &s.runner, &s.mounts, &opts)
        .map_err(classify)
        .with_context(|| match mode {
            Mode::Push => format!("failed to sync replicas to {peer}"),
            Mode::Check => format!("failed to check replicas on {peer}"),
        })
}

pub fn run(s: &Session, args: &SyncArgs) -> Result<ExitStatus> {
    let mode = if args.check { Mode::Check } else { Mode::Push };
    let report = run_report(s, &args.names, mode, args.force)?;
    for note in &report.notes {
        s.say(note);
    }
    if s.json {
        print_json(&report)?;
    } else {
        // Under -q (cron) only what needs a person: drift, refusals, failures.
        let shown: Vec<&ctmgr::sync::Row> = report
            .rows
            .iter()
            .filter(|r| !s.quiet || is_problem(r.status))
            .collect();
        if shown.is_empty() {
            if let (Some(peer), true) = (&report.peer, report.rows.is_empty()) {
                s.say(&format!("no replicas to sync with {peer}"));
            }
            return Ok(report.exit_status());
        }
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|r| {
                vec![
                    r.container.clone(),
                    r.file
                        .map(|f| f.to_string())
                        .unwrap_or_else(|| "-".to_string()),
                    r.outcome(),
                ]
            })
            .collect();
        print_table(&["CONTAINER", "FILE", "OUTCOME"], &rows)?;
        for r in shown.iter().filter(|r| r.diff.is_some()) {
            if let Some(diff) = &r.diff {
                println!();
                println!(
                    "{} {}:",
                    r.container,
                    r.file.map(|f| f.to_string()).unwrap_or_default()
                );
                print!("{diff}");
            }
        }
    }
    Ok(report.exit_status())
}

/// Body of `ctmgr [--config PATH] [--node NAME] __sync-receive` on the peer:
/// one session on stdin/stdout. Nothing else may be printed on stdout.
pub fn receive_main(config: Option<&Path>, node: Option<&str>) -> Result<ExitStatus> {
    let path = config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CTMGR_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(ctmgr::config::DEFAULT_PATH));
    let env_node = std::env::var("CTMGR_NODE").ok();
    let node = node.or(env_node.as_deref());
    sync::receive(
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        &path,
        node,
    )
    .context("failed to receive replicas")?;
    Ok(ExitStatus::Done)
}

/// Refreshes the replicas of `names` after a command changed them. A
/// failure is a warning, not a failure of that command: the container is
/// fine here, only its replica on the peer is behind. The warning is printed
/// here and returned, for the caller's record.
pub fn sync_after_change(s: &Session, names: &[String]) -> Result<(), String> {
    if s.config.peer_of(&s.node).is_none() {
        return Ok(());
    }
    let peer_name = s
        .config
        .peer_of(&s.node)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "the peer".to_string());
    let what = replicas_phrase(names);
    let hint = format!(
        "run `ctmgr sync{}` once the peer is reachable",
        names.iter().map(|n| format!(" {n}")).collect::<String>()
    );
    match run_report(s, names, Mode::Push, false) {
        Ok(report) => {
            let problems: Vec<String> = report
                .rows
                .iter()
                .filter(|r| is_problem(r.status))
                .map(|r| {
                    let file = r.file.map(|f| format!(" {f}")).unwrap_or_default();
                    format!("{}{file}: {}", r.container, r.outcome())
                })
                .collect();
            if problems.is_empty() {
                if let Some(peer) = &report.peer {
                    if !report.rows.is_empty() {
                        s.say(&format!("{what} synced to {peer}"));
                    }
                }
                for note in &report.notes {
                    s.say(note);
                }
                Ok(())
            } else {
                let msg = format!(
                    "{what} on {peer_name} {} not up to date: {}; see `ctmgr sync --check`",
                    if names.len() == 1 { "is" } else { "are" },
                    problems.join("; ")
                );
                eprintln!("ctmgr: warning: {msg}");
                Err(msg)
            }
        }
        Err(e) => {
            let msg = format!(
                "{what} on {peer_name} {} not synced: {e:#}; {hint}",
                if names.len() == 1 { "was" } else { "were" }
            );
            eprintln!("ctmgr: warning: {msg}");
            Err(msg)
        }
    }
}

/// "the replica of web", "the replicas of web, db", or — after a destroy,
/// which syncs everything — "the replicas of the stores held here".
fn replicas_phrase(names: &[String]) -> String {
    match names {
        [] => "the replicas of the stores held here".to_string(),
        [one] => format!("the replica of {one}"),
        many => format!("the replicas of {}", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::replicas_phrase;

    /// UX: destroy syncs with no names; the warning named nobody ("the
    /// replica of  is not up to date").
    #[test]
    fn the_replicas_phrase_always_names_something() {
        assert_eq!(replicas_phrase(&[]), "the replicas of the stores held here");
        assert_eq!(replicas_phrase(&["web".into()]), "the replica of web");
        assert_eq!(
            replicas_phrase(&["web".into(), "db".into()]),
            "the replicas of web, db"
        );
    }
}
