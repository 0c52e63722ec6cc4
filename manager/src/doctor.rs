//! `ctmgr doctor`: everything checkable, as one list of findings, each with
//! a severity and what to do. The pure judgements live here (tested on
//! data); gathering is in the command.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::SnapshotPolicy;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Area and check, e.g. `drbd:r0`, `guard:web`, `snapshots:web`.
    pub check: String,
    pub severity: Severity,
    pub message: String,
    /// What to do; empty when nothing is to be done.
    pub fix: String,
}

impl Finding {
    pub fn new(
        check: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            severity,
            message: message.into(),
            fix: fix.into(),
        }
    }
    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(check, Severity::Ok, message, "")
    }
    pub fn is_problem(&self) -> bool {
        self.severity >= Severity::Warning
    }
}

/// The longest a healthy container may go without a snapshot under `policy`:
/// twice the finest bucket the policy keeps (hourly → 2 h, daily → 2 days …).
/// None when the policy asks for no periodic snapshots.
pub fn max_snapshot_age(policy: &SnapshotPolicy) -> Option<Duration> {
    let rules = [
        (policy.keep_hourly, Duration::hours(2)),
        (policy.keep_daily, Duration::days(2)),
        (policy.keep_weekly, Duration::weeks(2)),
        (policy.keep_monthly, Duration::days(62)),
        (policy.keep_yearly, Duration::days(731)),
    ];
    rules.iter().find(|(n, _)| *n != 0).map(|(_, d)| *d)
}

/// Judges the age of a container's newest snapshot against its policy.
pub fn judge_snapshot_age(
    container: &str,
    newest: Option<DateTime<Utc>>,
    policy: &SnapshotPolicy,
    now: DateTime<Utc>,
) -> Finding {
    let check = format!("snapshots:{container}");
    let Some(limit) = max_snapshot_age(policy) else {
        return Finding::ok(check, "policy asks for no periodic snapshots");
    };
    match newest {
        None => Finding::new(
            check,
            Severity::Warning,
            "no snapshot yet",
            "schedule `ctmgr snapshot --all` (contrib/cron.d/ctmgr or ctmgr-snapshot.timer)",
        ),
        Some(t) if now - t > limit => Finding::new(
            check,
            Severity::Warning,
            format!(
                "newest snapshot is {} h old; the policy expects one at least every {} h",
                (now - t).num_hours(),
                limit.num_hours() / 2
            ),
            "check that the snapshot timer or cron job runs, and its mail",
        ),
        Some(t) => Finding::ok(
            check,
            format!("newest snapshot {} min old", (now - t).num_minutes()),
        ),
    }
}

/// Does this config text carry ctmgr's guard hook?
pub fn has_guard(config_text: &str) -> bool {
    crate::container::config_values(config_text, "lxc.hook.pre-start")
        .iter()
        .any(|v| v.contains("ctmgr-guard") && v.contains("--store"))
}

/// Guard finding for one container or replica config file.
pub fn judge_guard(what: &str, config_path: &Path) -> Finding {
    let check = format!("guard:{what}");
    match crate::container::read_config_text(config_path) {
        Ok(text) if has_guard(&text) => Finding::ok(check, "pre-start guard hook present"),
        Ok(_) => Finding::new(
            check,
            Severity::Error,
            format!("{} has no ctmgr-guard pre-start hook: a plain lxc-start could run it on the wrong node", config_path.display()),
            "recreate it with ctmgr, or add the lxc.hook.pre-start line of another container of the same store",
        ),
        Err(e) => Finding::new(check, Severity::Error, format!("cannot read {}: {e}", config_path.display()), "check the file"),
    }
}

/// Finding for a container's effective config (liblxc's view after
/// includes, [`crate::reserved::judge`]): its guard hook, rootfs, fstab and
/// name as ctmgr wrote them, and the guard executable in place.
pub fn judge_config(what: &str, problems: &[crate::reserved::Problem]) -> Finding {
    let check = format!("guard:{what}");
    if problems.is_empty() {
        return Finding::ok(
            check,
            "effective config carries ctmgr's guard, its rootfs subvolume and fstab",
        );
    }
    let missing_guard = problems
        .iter()
        .any(|p| p.message.contains("named by its pre-start hook is missing"));
    Finding::new(
        check,
        Severity::Error,
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        if missing_guard {
            "install ctmgr-guard where the hook names it (it is part of the ctmgr package)"
        } else {
            "remove the lines (or includes) that change these keys from its config, or recreate it with ctmgr; see docs/guard.md"
        },
    )
}

/// A container that is FROZEN with no ctmgr run owing it a thaw (D10):
/// its processes do not run, and nothing will thaw it by itself.
pub fn judge_frozen(name: &str, lxcpath: &Path, state: &str) -> Option<Finding> {
    (state == "FROZEN" || state == "FREEZING").then(|| {
        Finding::new(
            format!("frozen:{name}"),
            Severity::Warning,
            format!("container {name} is {state}: its processes are stopped (not by a ctmgr run in progress)"),
            format!(
                "if nobody froze it on purpose: `lxc-unfreeze -n {name} -P {}`",
                lxcpath.display()
            ),
        )
    })
}

/// What the thaw of an abandoned `snapshot --freeze` did, as a finding.
pub fn judge_recovered_freeze(r: &crate::freeze::Recovered) -> Finding {
    use crate::freeze::Recovery;
    let check = format!("frozen:{}", r.record.name);
    match &r.recovery {
        Recovery::Thawed => Finding::new(
            check,
            Severity::Warning,
            r.describe(),
            "nothing left to do; look for what killed the snapshot run (OOM, timeout of its cron job)",
        ),
        Recovery::NotFrozen => Finding::new(check, Severity::Info, r.describe(), ""),
        Recovery::Failed { .. } => Finding::new(
            check,
            Severity::Error,
            r.describe(),
            format!(
                "`lxc-unfreeze -n {} -P {}`",
                r.record.name,
                r.record.lxcpath.display()
            ),
        ),
    }
}

/// A restore of this container that was interrupted (D9).
pub fn judge_restore(name: &str, container_dir: &Path) -> Option<Finding> {
    crate::snapshot::pending_restore(container_dir).map(|m| {
        Finding::new(
            format!("restore:{name}"),
            Severity::Error,
            format!("{name}: {m}"),
            "rerun the restore as the message says (it finishes or rolls back; nothing is lost)",
        )
    })
}

/// Exit status of a report: healthy when no finding is a problem.
pub fn healthy(findings: &[Finding]) -> bool {
    !findings.iter().any(Finding::is_problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy(h: i64, d: i64) -> SnapshotPolicy {
        let cfg = crate::config::Config::parse(
            "[cluster]\nname = \"t\"\n[[node]]\nname = \"n1\"\naddress = \"10.0.254.1\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let mut p = cfg.snapshots.clone();
        p.keep_hourly = h;
        p.keep_daily = d;
        p
    }

    #[test]
    fn snapshot_age_follows_the_finest_bucket() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let p = policy(24, 7);
        assert_eq!(
            judge_snapshot_age("web", Some(now - Duration::minutes(30)), &p, now).severity,
            Severity::Ok
        );
        assert_eq!(
            judge_snapshot_age("web", Some(now - Duration::hours(3)), &p, now).severity,
            Severity::Warning
        );
        assert_eq!(
            judge_snapshot_age("web", None, &p, now).severity,
            Severity::Warning
        );
        let daily = policy(0, 7);
        assert_eq!(
            judge_snapshot_age("web", Some(now - Duration::hours(30)), &daily, now).severity,
            Severity::Ok
        );
    }

    #[test]
    fn frozen_containers_are_flagged() {
        let lxcpath = Path::new("/srv/store1/containers");
        assert!(judge_frozen("web", lxcpath, "RUNNING").is_none());
        let f = judge_frozen("web", lxcpath, "FROZEN").unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(f
            .fix
            .contains("lxc-unfreeze -n web -P /srv/store1/containers"));
        // A freeze whose run was killed inside liblxc stays FREEZING.
        let f = judge_frozen("web", lxcpath, "FREEZING").unwrap();
        assert!(f.message.contains("is FREEZING"), "{}", f.message);
    }

    #[test]
    fn guard_presence() {
        assert!(has_guard("lxc.hook.pre-start = /usr/local/sbin/ctmgr-guard --store store1 --mountpoint /srv/store1 --device /dev/drbd0\n"));
        assert!(!has_guard("lxc.hook.pre-start = /bin/true\n"));
        assert!(!has_guard(""));
    }

    #[test]
    fn config_findings_name_the_key() {
        assert_eq!(judge_config("web", &[]).severity, Severity::Ok);
        let p = crate::reserved::Problem {
            key: "lxc.hook.pre-start",
            message: "the effective config (after includes) has no ctmgr-guard pre-start hook"
                .into(),
        };
        let f = judge_config("web", &[p]);
        assert_eq!(
            (f.severity, f.check.as_str()),
            (Severity::Error, "guard:web")
        );
        assert!(
            f.message.starts_with("lxc.hook.pre-start: the effective"),
            "{}",
            f.message
        );
    }
}
