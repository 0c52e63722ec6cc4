//! `ctmgr drbd status|render|lint`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ctmgr::config::Config;
use ctmgr::drbd::{self, render::Format, status};
use ctmgr::exit::{usage, ExitStatus};

use super::{print_json, print_table, Session};

#[derive(clap::Subcommand, Debug)]
pub enum DrbdCommand {
    /// DRBD role, disk and connection of every replicated store
    Status,
    /// Write one .res per replicated store from cluster.toml, each checked by `drbdadm dump`
    Render {
        /// DRBD version to write for [default: [drbd] version, else 9]
        #[arg(long, value_parser = ["9", "8.4"])]
        format: Option<String>,
        /// Directory to write into
        #[arg(long, default_value = "/etc/drbd.d")]
        out: PathBuf,
    },
    /// DRBD's fence-peer handler (rendered into every .res; not for people)
    ///
    /// DRBD runs it before promoting while the peer is not connected, with
    /// DRBD_RESOURCE set. Exit 4: the peer confirmed it is Secondary with
    /// nothing mounted or running and outdated its disk; 5: the peer is
    /// silent on every path while this node reaches its gateway; 6: the peer
    /// is Primary or uses the store (DRBD then refuses); 1: not proven, DRBD
    /// refuses. The reason goes to stderr, the log and the journal.
    FencePeer,
    /// DRBD's unfence-peer handler: logs that the peer is back in sync (exit 0)
    UnfencePeer,
    /// Find mistakes in a drbd.conf or .res file (exit 1 when errors are found)
    Lint {
        file: PathBuf,
        /// hosts file to resolve `on` names with
        #[arg(long, default_value = "/etc/hosts")]
        hosts: PathBuf,
    },
}

pub fn status(s: &Session) -> Result<ExitStatus> {
    let (states, source) = status::gather(&s.config, &s.runner)?;
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for st in s.config.stores.iter().filter(|st| st.is_replicated()) {
        let res = st.drbd_resource.as_deref().unwrap_or_default();
        let state = status::resource(&states, res);
        json.push(serde_json::json!({ "store": st.name, "resource": res, "state": state }));
        rows.push(match state {
            Some(r) => vec![
                st.name.clone(),
                res.to_string(),
                r.role.to_string(),
                r.disk.to_string(),
                r.connection.as_str().to_string(),
                r.peer_role.to_string(),
                r.peer_disk.to_string(),
                r.sync_percent
                    .map(|p| format!("{p:.1}%"))
                    .unwrap_or_else(|| "-".into()),
            ],
            None => vec![
                st.name.clone(),
                res.to_string(),
                "down".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        });
    }
    if s.json {
        print_json(&serde_json::json!({ "node": s.node, "source": source, "resources": json }))?;
    } else {
        print_table(
            &[
                "STORE",
                "RESOURCE",
                "ROLE",
                "DISK",
                "CONNECTION",
                "PEER ROLE",
                "PEER DISK",
                "SYNC",
            ],
            &rows,
        )?;
    }
    Ok(ExitStatus::Done)
}

fn read_secret(config: &Config) -> Result<Option<String>> {
    let Some(path) = &config.drbd.secret_file else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the DRBD secret file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(usage(format!(
            "the DRBD secret file {} is readable by others; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let secret =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(secret.trim().to_string()))
}

/// The DRBD device for a `.res` file: the store's device when it is a DRBD
/// device (`/dev/drbdN`, `/dev/drbd_NAME`), else `/dev/drbd<minor>` — as in
/// the lab, where the store's device is the loop device DRBD stands for.
fn drbd_device(device: &Path, minor: u32) -> PathBuf {
    if device.to_string_lossy().starts_with("/dev/drbd") {
        device.to_path_buf()
    } else {
        PathBuf::from(format!("/dev/drbd{minor}"))
    }
}

/// The handler command DRBD runs: this very binary, with `--config` when the
/// configuration is not at the default path.
fn handler_command(config: &Config) -> Result<String> {
    let exe = std::env::current_exe().context("cannot tell where this ctmgr binary is")?;
    let mut cmd = exe.display().to_string();
    if config.path != Path::new(ctmgr::config::DEFAULT_PATH) {
        let abs = std::path::absolute(&config.path)
            .with_context(|| format!("cannot make {} absolute", config.path.display()))?;
        cmd.push_str(&format!(" --config {}", abs.display()));
    }
    cmd.push_str(" drbd");
    if !drbd::handler_is_safe(&cmd) {
        return Err(usage(format!(
            "the fence-peer handler would be `{cmd}`, but DRBD runs handlers through a shell: \
             install ctmgr and cluster.toml at paths made of letters, digits and / . _ - only"
        )));
    }
    Ok(cmd)
}

/// The render input for every replicated store.
pub fn inputs(config: &Config, secret: Option<&str>) -> Result<Vec<drbd::ResInput>> {
    let handler = handler_command(config)?;
    let mut out = Vec::new();
    for st in config.stores.iter().filter(|st| st.is_replicated()) {
        let res = st.drbd_resource.clone().unwrap_or_default();
        let minor = st.minor().ok_or_else(|| {
            usage(format!(
                "store {}: set drbd_minor or use a /dev/drbdN device so the minor is known",
                st.name
            ))
        })?;
        let disk = st.backing_disk.clone().ok_or_else(|| {
            usage(format!(
                "store {}: backing_disk is needed to render its DRBD resource {res}",
                st.name
            ))
        })?;
        out.push(drbd::ResInput {
            resource: res,
            port: st.drbd_port.unwrap_or(7788 + minor as u16),
            protocol: 'C',
            secret: secret.map(str::to_string),
            hosts: config
                .nodes
                .iter()
                .map(|n| drbd::ResHost {
                    name: n.name.clone(),
                    address: n.address,
                    device: drbd_device(&st.device, minor),
                    minor,
                    disk: disk.clone(),
                })
                .collect(),
            handler: handler.clone(),
            source: config.path.clone(),
        });
    }
    Ok(out)
}

pub fn render(s: &Session, format: Option<&str>, out: &Path) -> Result<ExitStatus> {
    let format = match format.or(s.config.drbd.version.as_deref()) {
        Some("8.4") => Format::V84,
        _ => Format::V9,
    };
    let secret = read_secret(&s.config)?;
    let drbdadm = drbd::parser_for(format, &s.runner.resolve("drbdadm")?);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for input in inputs(&s.config, secret.as_deref())? {
        let text = drbd::render(&input, format);
        let path = out.join(format!("{}.res", input.resource));
        // 0600 whatever the content: the file may hold the shared secret (rule 8).
        // drbdadm judges the complete temp file; a rejected render leaves the old one.
        let mut rejected = None;
        let written = ctmgr::fsutil::write_atomic_checked(&path, text.as_bytes(), 0o600, |tmp| {
            drbd::validate_with_drbdadm(tmp, &input.resource, &drbdadm).map_err(|e| {
                rejected = Some(e);
                std::io::Error::other("rejected by drbdadm")
            })
        });
        if let Some(e) = rejected {
            return Err(anyhow::Error::new(e)
                .context(format!("drbdadm rejected the rendered {}", path.display())));
        }
        written.with_context(|| format!("cannot write {}", path.display()))?;
        s.say(&format!(
            "wrote {} (checked by drbdadm dump)",
            path.display()
        ));
    }
    Ok(ExitStatus::Done)
}

/// `drbd lint` works without cluster.toml; with it, homes sharpen the checks.
pub fn lint(config: Option<&Config>, file: &Path, hosts: &Path, json: bool) -> Result<ExitStatus> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let hosts_text = std::fs::read_to_string(hosts).unwrap_or_default();
    let hosts_map = drbd::parse_hosts(&hosts_text);
    let homes: BTreeMap<String, String> = config
        .map(|c| {
            c.stores
                .iter()
                .filter_map(|s| Some((s.drbd_resource.clone()?, s.home.clone())))
                .collect()
        })
        .unwrap_or_default();
    let findings =
        drbd::lint_with_homes(&text, file, &hosts_map, &homes).map_err(|e| usage(e.to_string()))?;
    let errors = findings
        .iter()
        .filter(|f| matches!(f.severity, drbd::Severity::Error))
        .count();
    if json {
        let items: Vec<_> = findings
            .iter()
            .map(|f| serde_json::json!({"line": f.line, "severity": format!("{:?}", f.severity).to_lowercase(), "message": f.message}))
            .collect();
        print_json(&serde_json::json!({ "file": file, "findings": items }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for f in &findings {
            writeln!(
                out,
                "{}:{}: {}: {}",
                file.display(),
                f.line,
                format!("{:?}", f.severity).to_lowercase(),
                f.message
            )?;
        }
        if findings.is_empty() {
            writeln!(out, "{}: no problems found", file.display())?;
        }
    }
    Ok(if errors > 0 {
        ExitStatus::Failed
    } else {
        ExitStatus::Done
    })
}

/// `ctmgr drbd fence-peer`, as DRBD runs it: the resource comes from
/// DRBD_RESOURCE; the exit code is DRBD's (see [`ctmgr::fence`]).
pub fn fence_peer(s: &Session) -> Result<ExitStatus> {
    let report = match std::env::var("DRBD_RESOURCE") {
        Err(_) => {
            eprintln!("ctmgr drbd fence-peer: DRBD_RESOURCE is not set; DRBD runs this handler itself (refusing)");
            return Ok(ExitStatus::Code(ctmgr::fence::FenceOutcome::Refused.code()));
        }
        Ok(res) => match s
            .config
            .stores
            .iter()
            .find(|st| st.drbd_resource.as_deref() == Some(res.as_str()))
        {
            None => {
                eprintln!(
                    "ctmgr drbd fence-peer: no store of {} uses DRBD resource {res:?} (refusing)",
                    s.config.path.display()
                );
                return Ok(ExitStatus::Code(ctmgr::fence::FenceOutcome::Refused.code()));
            }
            Some(store) => ctmgr::fence::fence_peer(&s.config, &s.node, store, &s.runner),
        },
    };
    let line = format!(
        "fence-peer {} (store {}): exit {} ({:?}): {}",
        report.resource, report.store, report.exit_code, report.outcome, report.reason
    );
    if report.outcome == ctmgr::fence::FenceOutcome::Refused {
        tracing::warn!("{line}");
    } else {
        tracing::info!("{line}");
    }
    eprintln!("ctmgr: {line}");
    ctmgr::fence::journal(&s.node, &report);
    if s.json {
        print_json(&report)?;
    }
    Ok(ExitStatus::Code(report.exit_code))
}

/// `ctmgr drbd unfence-peer`: DRBD says the peer is UpToDate again.
pub fn unfence_peer(s: &Session) -> Result<ExitStatus> {
    let res = std::env::var("DRBD_RESOURCE").unwrap_or_default();
    eprintln!(
        "ctmgr: unfence-peer {res}: the peer of {} is in sync again",
        s.node
    );
    tracing::info!("unfence-peer {res}: the peer is in sync again");
    Ok(ExitStatus::Done)
}

/// `ctmgr __fence-answer STORE [--outdate]`: the peer's side of the
/// question, asked over ssh; prints a [`ctmgr::fence::PeerReport`].
pub fn fence_answer(s: &Session, store: &str, outdate: bool) -> Result<ExitStatus> {
    let st = s
        .config
        .store(store)
        .ok_or_else(|| usage(format!("no store {store} in {}", s.config.path.display())))?;
    print_json(&ctmgr::fence::answer(&s.runner, &s.node, st, outdate))?;
    Ok(ExitStatus::Done)
}
