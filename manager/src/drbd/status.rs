//! Gathers the DRBD state of the configured resources through the runner:
//! DRBD 9's `drbdsetup status --json` first, then `drbdadm status` text (also
//! what drbd-utils prints for an 8.4 kernel), then 8.4's `/proc/drbd`
//! ($CTMGR_PROC_DRBD overrides the path). The first source that answers wins;
//! the error of each is kept for the message when none does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::runner::{Cmd, Runner};

use super::state::{parse_proc_drbd, parse_status_json, parse_status_text, ResourceState};

/// Which source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    DrbdsetupJson,
    DrbdadmStatus,
    ProcDrbd,
}

#[derive(Debug, thiserror::Error)]
#[error("could not read DRBD state: {tried}")]
pub struct StatusError {
    pub tried: String,
}

fn proc_path() -> PathBuf {
    std::env::var_os("CTMGR_PROC_DRBD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/drbd"))
}

/// minor → resource name, from cluster.toml.
pub fn minor_names(config: &Config) -> BTreeMap<u32, String> {
    config
        .stores
        .iter()
        .filter_map(|s| Some((s.minor()?, s.drbd_resource.clone()?)))
        .collect()
}

/// The state of every DRBD resource this node knows, and where it came from.
pub fn gather(
    config: &Config,
    runner: &dyn Runner,
) -> Result<(Vec<ResourceState>, Source), StatusError> {
    let t = Duration::from_secs(15);
    let mut tried = Vec::new();
    match runner.run_ok(&Cmd::new("drbdsetup").args(["status", "--json"]).timeout(t)) {
        Ok(out) => match parse_status_json(&out.stdout) {
            Ok(s) => return Ok((s, Source::DrbdsetupJson)),
            Err(e) => tried.push(format!("drbdsetup status --json: {e}")),
        },
        Err(e) => tried.push(e.to_string()),
    }
    match runner.run_ok(&Cmd::new("drbdadm").args(["status", "all"]).timeout(t)) {
        Ok(out) => match parse_status_text(&out.stdout) {
            Ok(s) => return Ok((s, Source::DrbdadmStatus)),
            Err(e) => tried.push(format!("drbdadm status: {e}")),
        },
        Err(e) => tried.push(e.to_string()),
    }
    let path = proc_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => match parse_proc_drbd(&text, &minor_names(config)) {
            Ok(s) => return Ok((s, Source::ProcDrbd)),
            Err(e) => tried.push(format!("{}: {e}", path.display())),
        },
        Err(e) => tried.push(format!("{}: {e}", path.display())),
    }
    Err(StatusError {
        tried: tried.join("; "),
    })
}

/// The state of one resource (None when DRBD does not list it: down here).
pub fn resource<'a>(states: &'a [ResourceState], name: &str) -> Option<&'a ResourceState> {
    states.iter().find(|s| s.name == name)
}
