//! A container's intended state (safety rule 11): whether it is meant to run.
//!
//! Recorded on the store itself, in `<lxcpath>/<name>/intent.toml`, so it
//! travels with DRBD to the peer: `ctmgr start` records `running`, `ctmgr stop`
//! records `stopped`; a release, a migrate or a crash never change it. A
//! container without the file (made before intents existed, or never started
//! or stopped through ctmgr) counts as meant to run: what takeover always did.
//!
//! Also the pure planners for a store's set: which containers takeover starts
//! (in start-order groups, lower first) and which it leaves stopped on
//! purpose, and the order release stops them in (the reverse), each within
//! its own `stop_timeout`. This module never starts or stops anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::container;

/// Name of the intent file in a container directory.
pub const INTENT_FILE: &str = "intent.toml";

/// What a container is meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    Running,
    Stopped,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Running => "running",
            Intent::Stopped => "stopped",
        }
    }
}

/// Parses an intent file's text: one `intent = "running"|"stopped"` line;
/// comments and blank lines are ignored, anything else is an error.
pub fn parse(text: &str) -> Result<Intent, String> {
    let mut found = None;
    for (n, line) in text.lines().enumerate() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.is_empty() {
            continue;
        }
        let Some((k, v)) = code.split_once('=') else {
            return Err(format!("line {}: expected `intent = \"running\"`", n + 1));
        };
        if k.trim() != "intent" {
            return Err(format!("line {}: unknown key {:?}", n + 1, k.trim()));
        }
        found = Some(match v.trim().trim_matches('"') {
            "running" => Intent::Running,
            "stopped" => Intent::Stopped,
            other => {
                return Err(format!(
                    "line {}: intent {other:?} is neither \"running\" nor \"stopped\"",
                    n + 1
                ))
            }
        });
    }
    found.ok_or_else(|| "no `intent = …` line".to_string())
}

/// The file's text for an intent.
pub fn render(intent: Intent) -> String {
    format!(
        "# written by ctmgr start/stop: is this container meant to run (docs/operator-guide.md)\nintent = \"{}\"\n",
        intent.as_str()
    )
}

/// The recorded intent of the container in `dir`: `Ok(None)` when none is
/// recorded, an error when the file cannot be read or parsed.
pub fn read(dir: &Path) -> Result<Option<Intent>> {
    let path = dir.join(INTENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Records the intent of the container in `dir` (atomically, rule 5).
pub fn record(dir: &Path, intent: Intent) -> Result<()> {
    let path = dir.join(INTENT_FILE);
    if read(dir).ok().flatten() == Some(intent) {
        return Ok(());
    }
    crate::fsutil::write_atomic(&path, render(intent).as_bytes(), 0o644)
        .with_context(|| format!("failed to record the intent in {}", path.display()))
}

/// One container of a set, as the planners see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub order: i64,
    /// `None`: nothing recorded (meant to run).
    pub intent: Option<Intent>,
}

impl Member {
    pub fn meant_to_run(&self) -> bool {
        self.intent != Some(Intent::Stopped)
    }
}

/// What takeover does with a set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StartPlan {
    /// Start-order groups, lower first; names sorted; only containers meant to run.
    pub groups: Vec<(i64, Vec<String>)>,
    /// Stopped on purpose (`ctmgr stop`): not started, reported.
    pub left_stopped: Vec<String>,
}

/// Plans the start of a set (pure).
pub fn plan_start(members: &[Member]) -> StartPlan {
    let mut groups: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut left_stopped = Vec::new();
    for m in members {
        if m.meant_to_run() {
            groups.entry(m.order).or_default().push(m.name.clone());
        } else {
            left_stopped.push(m.name.clone());
        }
    }
    for names in groups.values_mut() {
        names.sort();
    }
    left_stopped.sort();
    StartPlan {
        groups: groups.into_iter().collect(),
        left_stopped,
    }
}

/// Plans the stop of a set (pure): the reverse of the start order, higher
/// `lxc.start.order` first, equal orders together; intent does not matter
/// (a release stops whatever runs).
pub fn plan_stop(members: &[Member]) -> Vec<(i64, Vec<String>)> {
    let mut groups: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for m in members {
        groups.entry(m.order).or_default().push(m.name.clone());
    }
    groups
        .into_iter()
        .rev()
        .map(|(o, mut names)| {
            names.sort();
            (o, names)
        })
        .collect()
}

/// The containers of a store's lxcpath with their start order and intent.
/// An unreadable intent counts as meant to run and is logged: takeover must
/// not leave a service down because of a damaged file.
pub fn members(lxcpath: &Path) -> Vec<Member> {
    container::own_names(lxcpath)
        .into_iter()
        .map(|name| {
            let dir = lxcpath.join(&name);
            let text = container::read_config_text(&dir.join("config")).unwrap_or_default();
            let intent = match read(&dir) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!("{e:#}; treating {name} as meant to run");
                    None
                }
            };
            Member {
                order: container::start_order_of(&text),
                name,
                intent,
            }
        })
        .collect()
}

/// The seconds a container gets for a clean shutdown: its own
/// `stop_timeout` (ctmgr.toml), else its profile's, else `default`; never
/// above [`container::MAX_TIMEOUT_SECS`].
pub fn pick_stop_timeout(own: Option<u64>, profile: Option<u64>, default: u64) -> u64 {
    own.or(profile)
        .unwrap_or(default)
        .min(container::MAX_TIMEOUT_SECS)
}

/// [`pick_stop_timeout`] for the container in `dir`. A ctmgr.toml that
/// cannot be read falls back to `default` (logged).
pub fn stop_timeout(dir: &Path, default: u64) -> Duration {
    let (own, profile) = match container::settings(dir) {
        Ok(s) => {
            let profile = s.template.as_deref().and_then(|t| {
                crate::template::load(t, &crate::template::override_dir())
                    .ok()
                    .and_then(|t| t.stop_timeout)
            });
            (s.stop_timeout, profile)
        }
        Err(e) => {
            tracing::warn!("{e:#}; using a stop timeout of {default} s");
            (None, None)
        }
    };
    Duration::from_secs(pick_stop_timeout(own, profile, default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, order: i64, intent: Option<Intent>) -> Member {
        Member {
            name: name.into(),
            order,
            intent,
        }
    }

    #[test]
    fn parse_and_render_round_trip() {
        for i in [Intent::Running, Intent::Stopped] {
            assert_eq!(parse(&render(i)), Ok(i));
        }
        assert_eq!(parse("intent = stopped\n"), Ok(Intent::Stopped));
        assert_eq!(
            parse("# c\n\nintent=\"running\"  # why\n"),
            Ok(Intent::Running)
        );
        assert!(parse("").unwrap_err().contains("no `intent"));
        assert!(parse("intent = \"paused\"").unwrap_err().contains("paused"));
        assert!(parse("state = \"running\"")
            .unwrap_err()
            .contains("unknown key"));
        assert!(parse("running").unwrap_err().contains("line 1"));
    }

    #[test]
    fn start_plan_leaves_stopped_on_purpose_out() {
        let p = plan_start(&[
            m("web", 50, None),
            m("db", 10, Some(Intent::Running)),
            m("old", 10, Some(Intent::Stopped)),
            m("api", 50, Some(Intent::Running)),
        ]);
        assert_eq!(
            p.groups,
            vec![
                (10, vec!["db".into()]),
                (50, vec!["api".into(), "web".into()])
            ]
        );
        assert_eq!(p.left_stopped, vec!["old".to_string()]);
        assert_eq!(plan_start(&[]), StartPlan::default());
    }

    #[test]
    fn stop_plan_is_the_reverse_start_order_whatever_the_intent() {
        let p = plan_stop(&[
            m("db", 10, Some(Intent::Running)),
            m("web", 50, None),
            m("old", 10, Some(Intent::Stopped)),
            m("app", 90, None),
            m("api", 50, None),
        ]);
        assert_eq!(
            p,
            vec![
                (90, vec!["app".into()]),
                (50, vec!["api".into(), "web".into()]),
                (10, vec!["db".into(), "old".into()]),
            ]
        );
    }

    #[test]
    fn stop_timeout_own_then_profile_then_default() {
        assert_eq!(pick_stop_timeout(Some(5), Some(300), 30), 5);
        assert_eq!(pick_stop_timeout(None, Some(300), 30), 300);
        assert_eq!(pick_stop_timeout(None, None, 30), 30);
        assert_eq!(
            pick_stop_timeout(Some(u64::MAX), None, 30),
            container::MAX_TIMEOUT_SECS
        );
    }

    #[test]
    fn record_and_read_on_disk() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        record(d.path(), Intent::Stopped).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some(Intent::Stopped));
        record(d.path(), Intent::Running).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some(Intent::Running));
        std::fs::write(d.path().join(INTENT_FILE), "intent = \"maybe\"\n").unwrap();
        assert!(read(d.path()).is_err());
    }
}
