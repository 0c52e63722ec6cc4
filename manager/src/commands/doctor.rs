//! `ctmgr doctor [--json]`: one report of everything checkable. Exit 0
//! healthy, 1 problems found.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use ctmgr::doctor::{self, Finding, Severity};
use ctmgr::drbd::{self, status as drbd_status, DiskState, Role};
use ctmgr::exit::ExitStatus;
use ctmgr::runner::Runner;
use ctmgr::{container, snapshot, takeover};
use sha2::{Digest, Sha256};

use super::{print_json, Session};

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// cluster.toml here and on the peer.
fn config_findings(s: &Session, out: &mut Vec<Finding>) {
    out.push(Finding::ok(
        "config",
        format!("{} is valid", s.config.path.display()),
    ));
    if let Some(w) = ctmgr::fence::single_path_warning(&s.config) {
        out.push(Finding::new(
            "config:paths",
            Severity::Warning,
            w,
            "give every node a lan_address (its br0 address) in cluster.toml",
        ));
    }
    let Some(peer) = s.config.peer_of(&s.node) else {
        return;
    };
    let mine = std::fs::read(&s.config.path).unwrap_or_default();
    let path = s.config.path.display().to_string();
    let cmd = takeover::ssh_cmd("ssh", &peer.ssh, &["cat", &path], Duration::from_secs(15));
    match s.runner.run_ok(&cmd) {
        Ok(o) if sha(o.stdout.as_bytes()) == sha(&mine) => out.push(Finding::ok(
            "config:peer",
            format!("{} on {} is identical", path, peer.name),
        )),
        Ok(_) => out.push(Finding::new(
            "config:peer",
            Severity::Error,
            format!("{path} differs between {} and {}", s.node, peer.name),
            format!(
                "copy the right one to both nodes (`scp {path} {}:{path}`) and run doctor again",
                peer.ssh
            ),
        )),
        Err(e) => out.push(Finding::new(
            "ssh",
            Severity::Error,
            format!("cannot reach {} over ssh ({}): {e}", peer.name, peer.ssh),
            "check sshd on the peer, the peer link, and root's ssh keys (BatchMode: no passwords)",
        )),
    }
}

fn drbd_findings(s: &Session, out: &mut Vec<Finding>) {
    let replicated: Vec<_> = s
        .config
        .stores
        .iter()
        .filter(|st| st.is_replicated())
        .collect();
    if replicated.is_empty() {
        return;
    }
    let states = match drbd_status::gather(&s.config, &s.runner) {
        Ok((st, _)) => st,
        Err(e) => {
            out.push(Finding::new(
                "drbd",
                Severity::Error,
                e.to_string(),
                "install drbd-utils and check `drbdadm status`",
            ));
            return;
        }
    };
    for st in replicated {
        let res = st.drbd_resource.as_deref().unwrap_or_default();
        let check = format!("drbd:{res}");
        match drbd_status::resource(&states, res) {
            None => out.push(Finding::new(
                check,
                Severity::Error,
                format!("{res} is not up here"),
                format!("`drbdadm up {res}`"),
            )),
            Some(r) => {
                let mut problems = Vec::new();
                if !r.connection.is_connected() {
                    problems.push(format!("not connected ({})", r.connection.as_str()));
                }
                if r.disk != DiskState::UpToDate {
                    problems.push(format!("local disk {}", r.disk));
                }
                if r.connection.is_connected() && r.peer_disk != DiskState::UpToDate {
                    problems.push(format!("peer disk {}", r.peer_disk));
                }
                if problems.is_empty() {
                    out.push(Finding::ok(
                        check,
                        format!(
                            "{} {}, peer {} {}",
                            r.role, r.disk, r.peer_role, r.peer_disk
                        ),
                    ));
                } else {
                    out.push(Finding::new(
                        check,
                        Severity::Error,
                        format!("{res}: {}", problems.join(", ")),
                        format!("see `drbdadm status {res}`; reconnect with `drbdadm connect {res}` or wait for the resync"),
                    ));
                }
                let held_here = r.role == Role::Primary;
                if held_here && st.home != s.node {
                    out.push(Finding::new(
                        format!("home:{}", st.name),
                        Severity::Info,
                        format!(
                            "store {} runs here, away from its home {}",
                            st.name, st.home
                        ),
                        format!(
                            "when {} is healthy again: `ctmgr migrate {}` on {}",
                            st.home, st.name, st.home
                        ),
                    ));
                }
            }
        }
    }
    for conf in ["/etc/drbd.conf".to_string()].into_iter().chain(
        std::fs::read_dir("/etc/drbd.d")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension().is_some_and(|x| x == "res")).then(|| p.display().to_string())
            }),
    ) {
        let Ok(text) = std::fs::read_to_string(&conf) else {
            continue;
        };
        let hosts = drbd::parse_hosts(&std::fs::read_to_string("/etc/hosts").unwrap_or_default());
        match drbd::lint(&text, std::path::Path::new(&conf), &hosts) {
            Ok(f) if f.is_empty() => {
                out.push(Finding::ok(format!("lint:{conf}"), "no problems found"))
            }
            Ok(f) => {
                for x in f {
                    let sev = if matches!(x.severity, drbd::Severity::Error) {
                        Severity::Error
                    } else {
                        Severity::Warning
                    };
                    out.push(Finding::new(
                        format!("lint:{conf}:{}", x.line),
                        sev,
                        x.message,
                        format!("`ctmgr drbd lint {conf}`"),
                    ));
                }
            }
            Err(e) => out.push(Finding::new(
                format!("lint:{conf}"),
                Severity::Warning,
                e.to_string(),
                "",
            )),
        }
    }
}

fn store_and_container_findings(s: &Session, out: &mut Vec<Finding>) {
    let stores = s.stores();
    let peer_running = peer_running(s);
    for st in &stores {
        let check = format!("store:{}", st.store.name);
        if st.held() {
            out.push(Finding::ok(
                check,
                format!("held here at {}", st.store.mountpoint.display()),
            ));
        } else {
            out.push(Finding::new(
                check,
                Severity::Info,
                st.holding.describe(&st.store.mountpoint),
                "",
            ));
            continue;
        }
        let lxcpath = st.store.lxcpath();
        for name in container::incomplete_names(&lxcpath) {
            out.push(Finding::new(
                format!("incomplete:{name}"),
                Severity::Warning,
                format!(
                    "container {name} on {} is incomplete: its create was interrupted ({} is still there); it is not synced, started or snapshotted",
                    st.store.name,
                    lxcpath.join(&name).join(container::CREATING_MARKER).display()
                ),
                format!(
                    "rerun `ctmgr create {name} --store {}` (removes it and makes it again) or `ctmgr destroy {name}`",
                    st.store.name
                ),
            ));
        }
        let policy_defaults = &s.config.snapshots;
        for name in container::own_names(&lxcpath) {
            let dir = lxcpath.join(&name);
            out.push(doctor::judge_config(
                &name,
                &ctmgr::reserved::problems(&lxcpath, &name),
            ));
            let state = container::info(&name, st.store, &lxcpath).state;
            out.extend(doctor::judge_frozen(&name, &lxcpath, &state));
            out.extend(doctor::judge_restore(&name, &dir));
            if let Some(list) = &peer_running {
                if list.contains(&name) && takeover::is_running(&lxcpath, &name) {
                    out.push(Finding::new(
                        format!("running:{name}"),
                        Severity::Error,
                        format!("{name} runs here AND on the peer"),
                        format!(
                            "stop the copy on the node that does not hold {}",
                            st.store.name
                        ),
                    ));
                }
            }
            match container::effective_policy(policy_defaults, &dir) {
                Ok(p) => {
                    let newest = snapshot::list_brief(&dir)
                        .into_iter()
                        .filter(|i| i.damaged.is_none())
                        .find_map(|i| i.time);
                    out.push(doctor::judge_snapshot_age(&name, newest, &p, Utc::now()));
                }
                Err(e) => out.push(Finding::new(
                    format!("policy:{name}"),
                    Severity::Error,
                    format!("{e:#}"),
                    "fix its ctmgr.toml",
                )),
            }
        }
    }
    // Replicas kept here for the peer's stores carry the guard too.
    for st in stores.iter().filter(|st| st.held()) {
        let lxcpath = st.store.lxcpath();
        let Ok(entries) = std::fs::read_dir(&lxcpath) else {
            continue;
        };
        for e in entries.flatten() {
            let dir = e.path();
            if dir.join("config").exists()
                && !container::is_own(&dir)
                && !container::is_incomplete(&dir)
            {
                let name = e.file_name().to_string_lossy().into_owned();
                let what = format!("replica:{name}");
                // A replica names its home store's paths: judge it against them.
                let home = container::read_config_text(&dir.join("config"))
                    .ok()
                    .and_then(|t| container::guard_mountpoint(&t));
                out.push(match home {
                    Some(mp) => match ctmgr::reserved::effective(&lxcpath, &name) {
                        Ok(eff) => doctor::judge_config(
                            &what,
                            &ctmgr::reserved::judge(
                                &name,
                                &mp.join("containers"),
                                &eff,
                                &ctmgr::reserved::is_executable,
                            ),
                        ),
                        Err(e) => Finding::new(
                            format!("guard:{what}"),
                            Severity::Error,
                            format!("{e:#}"),
                            "check the replica's config; `ctmgr sync` from the peer rewrites it",
                        ),
                    },
                    None => doctor::judge_guard(&what, &dir.join("config")),
                });
            }
        }
    }
    out.push(Finding::new(
        "backups",
        Severity::Info,
        "`ctmgr backup` is not implemented yet: no backup ages to check",
        "",
    ));
}

/// Containers running on the peer, from `ctmgr --json list` over ssh.
fn peer_running(s: &Session) -> Option<Vec<String>> {
    let peer = s.config.peer_of(&s.node)?;
    let out = s
        .runner
        .run_ok(&takeover::ssh_cmd(
            "ssh",
            &peer.ssh,
            &["ctmgr", "--json", "list"],
            Duration::from_secs(20),
        ))
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    Some(
        v["containers"]
            .as_array()?
            .iter()
            .filter(|c| c["state"] == "RUNNING")
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Replica drift, from a `sync --check` conversation with the peer.
fn sync_findings(s: &Session, out: &mut Vec<Finding>) {
    if s.config.peer_of(&s.node).is_none() {
        return;
    }
    let opts = ctmgr::sync::Options {
        names: &[],
        mode: ctmgr::sync::Mode::Check,
        force: false,
        timeout: None,
    };
    match ctmgr::sync::run_sync(&s.config, &s.node, &s.runner, &s.mounts, &opts) {
        Ok(report) => {
            let problems: Vec<_> = report
                .rows
                .iter()
                .filter(|r| r.status.is_problem())
                .collect();
            if problems.is_empty() {
                out.push(Finding::ok(
                    "replicas",
                    format!(
                        "{} replica file(s) in sync with the peer",
                        report.rows.len()
                    ),
                ));
            }
            for r in problems {
                out.push(Finding::new(
                    format!("replica:{}", r.container),
                    Severity::Error,
                    format!(
                        "{}{}: {:?}{}",
                        r.container,
                        r.file.map(|f| format!("/{f:?}").to_lowercase()).unwrap_or_default(),
                        r.status,
                        r.detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
                    ),
                    "`ctmgr sync --check` shows the diff; `ctmgr sync` (or `--force` after checking) repairs it",
                ));
            }
        }
        Err(e) => out.push(Finding::new(
            "replicas",
            Severity::Error,
            format!("cannot check replicas: {e}"),
            "see `ctmgr sync --check`",
        )),
    }
}

fn net_findings(s: &Session, out: &mut Vec<Finding>) {
    let Some(node) = s.config.node(&s.node) else {
        return;
    };
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for f in ctmgr::net::check(
        &s.config,
        node,
        &s.runner as &dyn Runner,
        &hosts,
        &ctmgr::net::tcp_probe,
    ) {
        let sev = match (f.ok, f.severity) {
            (true, _) => Severity::Ok,
            (false, ctmgr::net::Severity::Error) => Severity::Error,
            (false, ctmgr::net::Severity::Warning) => Severity::Warning,
            (false, ctmgr::net::Severity::Info) => Severity::Info,
        };
        out.push(Finding::new(
            format!("net:{}", f.check),
            sev,
            f.message,
            if f.ok {
                ""
            } else {
                "see `ctmgr net check` and docs/network.md"
            },
        ));
    }
}

pub fn run(s: &Session) -> Result<ExitStatus> {
    // Thaws first what a killed `snapshot --freeze` left FROZEN, and says so.
    let mut findings: Vec<Finding> = ctmgr::freeze::recover()
        .iter()
        .map(doctor::judge_recovered_freeze)
        .collect();
    config_findings(s, &mut findings);
    drbd_findings(s, &mut findings);
    store_and_container_findings(s, &mut findings);
    sync_findings(s, &mut findings);
    net_findings(s, &mut findings);
    let healthy = doctor::healthy(&findings);
    if s.json {
        print_json(
            &serde_json::json!({ "node": s.node, "healthy": healthy, "findings": findings }),
        )?;
    } else {
        let mut o = std::io::stdout().lock();
        for f in &findings {
            if s.quiet && !f.is_problem() {
                continue;
            }
            let tag = match f.severity {
                Severity::Ok => "ok",
                Severity::Info => "info",
                Severity::Warning => "WARN",
                Severity::Error => "ERROR",
            };
            writeln!(o, "[{tag:<5}] {:<28} {}", f.check, f.message)?;
            if !f.fix.is_empty() && f.is_problem() {
                writeln!(o, "        fix: {}", f.fix)?;
            }
        }
        let problems = findings.iter().filter(|f| f.is_problem()).count();
        writeln!(
            o,
            "{}",
            if healthy {
                "healthy".to_string()
            } else {
                format!("{problems} problem(s) found")
            }
        )?;
    }
    Ok(if healthy {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}
