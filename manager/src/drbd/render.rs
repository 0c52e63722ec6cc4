//! Renders a DRBD resource file (`/etc/drbd.d/<res>.res`) from plain input,
//! and checks a rendered file with drbdadm's real parser.
//!
//! The rendered text contains the resource's shared secret when one is
//! given: callers must write it with mode 0600 and must never log or print
//! it (DESIGN.md safety rule 8). Nothing in this module logs.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use std::time::Duration;

/// How long drbdadm may take to parse one file before it is killed.
pub const DRBDADM_TIMEOUT: Duration = Duration::from_secs(15);

/// Which drbd.conf dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// DRBD 9: every `on` section carries a `node-id`.
    V9,
    /// DRBD 8.4: no node ids.
    V84,
}

/// One host of a two-node resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResHost {
    /// The host's name as `uname -n` prints it (DRBD matches `on` by it).
    pub name: String,
    /// Peer-link address DRBD listens on.
    pub address: Ipv4Addr,
    pub device: PathBuf,
    pub minor: u32,
    /// Backing block device.
    pub disk: PathBuf,
}

/// Everything a `.res` file needs. `secret` is sensitive: see module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct ResInput {
    pub resource: String,
    pub port: u16,
    /// Replication protocol, `'C'` for ctmgr's synchronous stores.
    pub protocol: char,
    pub secret: Option<String>,
    pub hosts: Vec<ResHost>,
    /// The `ctmgr … drbd` command line DRBD runs as its fence-peer and
    /// unfence-peer handlers (safety rule 10), e.g. `/usr/sbin/ctmgr drbd`;
    /// `fence-peer` / `unfence-peer` is appended. Must pass [`handler_is_safe`].
    pub handler: String,
    /// The configuration the file was rendered from (named in its header).
    pub source: PathBuf,
}

/// DRBD runs a handler through `/bin/sh -c`: only plain paths and words
/// may go into it, so nothing in it is ever interpreted by the shell.
pub fn handler_is_safe(cmd: &str) -> bool {
    !cmd.is_empty()
        && cmd
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " /._-+=:,@".contains(c))
}

// Hand-written so that `{:?}` can never leak the secret into a log line.
impl std::fmt::Debug for ResInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResInput")
            .field("resource", &self.resource)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("hosts", &self.hosts)
            .field("handler", &self.handler)
            .field("source", &self.source)
            .finish()
    }
}

/// Why drbdadm did not accept a file.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("could not run `{argv}`")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` did not finish within {} s and was killed", timeout.as_secs())]
    Timeout { argv: String, timeout: Duration },
    #[error("`{argv}` rejected the file ({status}): {stderr}")]
    Rejected {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("`{argv}` accepted the file but it does not define resource {resource}")]
    Missing { argv: String, resource: String },
}

/// Quotes a drbd.conf string; drbdadm's scanner takes backslash escapes.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Renders the resource file. Host order gives the DRBD 9 node ids (0, 1, …).
pub fn render(input: &ResInput, format: Format) -> String {
    let mut s = String::new();
    // writeln! into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        s,
        "# Written by `ctmgr drbd render` from {}; edit that file instead.",
        input.source.display()
    );
    let _ = writeln!(
        s,
        "# fencing: DRBD asks ctmgr before promoting while the peer is not connected (safety rule 10)."
    );
    let _ = writeln!(s, "resource {} {{", input.resource);
    let _ = writeln!(s, "  net {{");
    let _ = writeln!(s, "    protocol {};", input.protocol);
    if let Some(secret) = &input.secret {
        let _ = writeln!(s, "    cram-hmac-alg sha1;");
        let _ = writeln!(s, "    shared-secret {};", quote(secret));
    }
    // DRBD 9 moved `fencing` from the disk to the net section; 8.4's
    // drbdadm rejects it there (both checked with drbd-utils 9.22).
    if format == Format::V9 {
        let _ = writeln!(s, "    fencing resource-only;");
    }
    let _ = writeln!(s, "  }}");
    if format == Format::V84 {
        let _ = writeln!(s, "  disk {{");
        let _ = writeln!(s, "    fencing resource-only;");
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "  handlers {{");
    let _ = writeln!(
        s,
        "    fence-peer {};",
        quote(&format!("{} fence-peer", input.handler))
    );
    let _ = writeln!(
        s,
        "    unfence-peer {};",
        quote(&format!("{} unfence-peer", input.handler))
    );
    let _ = writeln!(s, "  }}");
    for (id, host) in input.hosts.iter().enumerate() {
        let _ = writeln!(s, "  on {} {{", host.name);
        if format == Format::V9 {
            let _ = writeln!(s, "    node-id {id};");
        }
        let _ = writeln!(
            s,
            "    device {} minor {};",
            host.device.display(),
            host.minor
        );
        let _ = writeln!(s, "    disk {};", host.disk.display());
        let _ = writeln!(s, "    address ipv4 {}:{};", host.address, input.port);
        let _ = writeln!(s, "    meta-disk internal;");
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    s
}

/// Runs `drbdadm -c PATH dump all` (drbdadm's real parser) and checks that
/// it accepts the file and that the file defines `resource`. `dump all` is
/// used rather than `dump RES` because the latter also demands that this
/// machine's hostname has an `on` section, which a file rendered for the
/// pair need not have on the machine that checks it.
///
/// The child is killed after [`DRBDADM_TIMEOUT`]. drbdadm's stdout (which
/// echoes the shared secret) is read and dropped, never put in an error;
/// stderr is kept, and a parse error at the `shared-secret` line can quote
/// the offending token, so callers print this error only to the operator.
pub fn validate_with_drbdadm(
    path: &Path,
    resource: &str,
    drbdadm: &Path,
) -> Result<(), RenderError> {
    validate_with_timeout(path, resource, drbdadm, DRBDADM_TIMEOUT)
}

fn validate_with_timeout(
    path: &Path,
    resource: &str,
    drbdadm: &Path,
    timeout: Duration,
) -> Result<(), RenderError> {
    use crate::runner::{Cmd, RunError, Runner, SystemRunner};
    let cmd = Cmd::new(&drbdadm.display().to_string())
        .args(["--config-file", &path.display().to_string(), "dump", "all"])
        .timeout(timeout);
    let argv = cmd.display();
    // The one runner drains both pipes and kills the child at its deadline.
    let out = SystemRunner::default().run(&cmd).map_err(|e| match e {
        RunError::Timeout { .. } => RenderError::Timeout {
            argv: argv.clone(),
            timeout,
        },
        RunError::Spawn { source, .. } => RenderError::Spawn {
            argv: argv.clone(),
            source,
        },
        other => RenderError::Spawn {
            argv: argv.clone(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    let (stdout, stderr) = (out.stdout, out.stderr);
    if out.code != 0 {
        return Err(RenderError::Rejected {
            argv,
            status: format!("exit status: {}", out.code),
            stderr: relevant_stderr(&stderr),
        });
    }
    let wanted = format!("resource {resource} {{");
    let defined = stdout.lines().any(|l| l.trim() == wanted);
    if !defined {
        return Err(RenderError::Missing {
            argv,
            resource: resource.to_string(),
        });
    }
    Ok(())
}

/// The drbd-utils front ends for an 8.4 kernel, where distributions put them.
pub const DRBDADM_84_PATHS: [&str; 2] = ["/usr/lib/drbd/drbdadm-84", "/lib/drbd/drbdadm-84"];

/// Which parser checks a file of `format`: for 8.4 the 8.4 front end
/// (`drbdadm` dispatches to it only when an 8.4 kernel module is loaded, and
/// the 9 parser rejects 8.4's `disk { fencing … }`), else `drbdadm`.
pub fn parser_for(format: Format, drbdadm: &Path) -> PathBuf {
    if format == Format::V84 {
        if let Some(p) = DRBDADM_84_PATHS.iter().map(Path::new).find(|p| p.exists()) {
            return p.to_path_buf();
        }
    }
    drbdadm.to_path_buf()
}

/// drbd-utils probe the kernel module with `modinfo`; on hosts without it
/// that noise ("modinfo: not found") hides the parser's message.
fn relevant_stderr(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("modinfo"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const DRBDADM: &str = "/usr/sbin/drbdadm";

    fn input(secret: Option<&str>) -> ResInput {
        ResInput {
            resource: "r0".into(),
            port: 7788,
            protocol: 'C',
            secret: secret.map(str::to_string),
            hosts: vec![
                ResHost {
                    name: "node1".into(),
                    address: Ipv4Addr::new(10, 0, 254, 1),
                    device: "/dev/drbd0".into(),
                    minor: 0,
                    disk: "/dev/sdb1".into(),
                },
                ResHost {
                    name: "node2".into(),
                    address: Ipv4Addr::new(10, 0, 254, 2),
                    device: "/dev/drbd0".into(),
                    minor: 0,
                    disk: "/dev/sdb1".into(),
                },
            ],
            handler: "/usr/sbin/ctmgr drbd".into(),
            source: "/etc/ctmgr/cluster.toml".into(),
        }
    }

    fn write_temp(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".res")
            .tempfile()
            .expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn v9_has_node_ids_and_secret_v84_has_no_node_ids() {
        let v9 = render(&input(Some("s3cret")), Format::V9);
        assert!(v9.contains("    node-id 0;\n"));
        assert!(v9.contains("    node-id 1;\n"));
        assert!(v9.contains("    cram-hmac-alg sha1;\n    shared-secret \"s3cret\";\n"));
        assert!(v9.contains("    protocol C;\n"));
        assert!(v9.contains("    device /dev/drbd0 minor 0;\n"));
        assert!(v9.contains("    address ipv4 10.0.254.2:7788;\n"));
        assert_eq!(v9.matches("meta-disk internal;").count(), 2);
        let v84 = render(&input(None), Format::V84);
        assert!(!v84.contains("node-id"));
        assert!(!v84.contains("shared-secret"));
        assert!(!v84.contains("cram-hmac-alg"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", input(Some("do-not-log-me")));
        assert!(!shown.contains("do-not-log-me"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn real_drbdadm_accepts_v9_render() {
        let f = write_temp(&render(&input(Some("s3cret")), Format::V9));
        validate_with_drbdadm(f.path(), "r0", Path::new(DRBDADM)).expect("drbdadm accepts v9");
    }

    #[test]
    fn real_drbdadm_accepts_v84_render() {
        let f = write_temp(&render(&input(Some("s3cret")), Format::V84));
        // drbd-utils ship the 8.4 front end that an 8.4 kernel uses (scripts/deps installs it).
        let parser = parser_for(Format::V84, Path::new(DRBDADM));
        assert!(parser.ends_with("drbdadm-84"), "{}", parser.display());
        validate_with_drbdadm(f.path(), "r0", &parser).expect("drbdadm-84 accepts 8.4");
        // The 9 parser refuses 8.4's disk-section fencing: that is why parser_for exists.
        assert!(validate_with_drbdadm(f.path(), "r0", Path::new(DRBDADM)).is_err());
    }

    #[test]
    fn fencing_and_handlers_are_rendered_where_each_version_wants_them() {
        let v9 = render(&input(None), Format::V9);
        assert!(
            v9.contains("  net {\n    protocol C;\n    fencing resource-only;\n  }\n"),
            "{v9}"
        );
        assert!(!v9.contains("  disk {"));
        let v84 = render(&input(None), Format::V84);
        assert!(
            v84.contains("  disk {\n    fencing resource-only;\n  }\n"),
            "{v84}"
        );
        for text in [&v9, &v84] {
            assert!(text.contains("    fence-peer \"/usr/sbin/ctmgr drbd fence-peer\";\n"));
            assert!(text.contains("    unfence-peer \"/usr/sbin/ctmgr drbd unfence-peer\";\n"));
            assert!(text.contains("from /etc/ctmgr/cluster.toml;"));
        }
        // The real parsers agree, and keep the handler text.
        let f = write_temp(&v9);
        validate_with_drbdadm(f.path(), "r0", Path::new(DRBDADM)).expect("v9 with fencing");
    }

    #[test]
    fn handler_commands_carry_nothing_a_shell_would_read() {
        assert!(handler_is_safe(
            "/usr/sbin/ctmgr --config /etc/ctmgr/lab.toml drbd"
        ));
        for bad in [
            "",
            "/x;rm -rf /",
            "/a b/$(x)",
            "/x`y`",
            "/x|y",
            "/x\"y",
            "/x\ny",
            "/x'y",
        ] {
            assert!(!handler_is_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn secret_with_quote_and_backslash_round_trips_through_drbdadm() {
        let f = write_temp(&render(&input(Some(r#"a"b\c d"#)), Format::V9));
        validate_with_drbdadm(f.path(), "r0", Path::new(DRBDADM)).expect("escaped secret");
    }

    #[test]
    fn real_drbdadm_rejection_carries_argv_and_stderr() {
        let broken = render(&input(None), Format::V9).replace("meta-disk internal;", "meta-disk");
        let f = write_temp(&broken);
        match validate_with_drbdadm(f.path(), "r0", Path::new(DRBDADM)) {
            Err(RenderError::Rejected { argv, stderr, .. }) => {
                assert!(argv.contains(&f.path().display().to_string()), "{argv}");
                assert!(argv.ends_with("dump all"), "{argv}");
                assert!(
                    stderr.contains("arse error") || stderr.contains("expected"),
                    "{stderr}"
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn missing_resource_is_reported() {
        let f = write_temp(&render(&input(None), Format::V9));
        let err = validate_with_drbdadm(f.path(), "r7", Path::new(DRBDADM)).unwrap_err();
        assert!(matches!(err, RenderError::Missing { .. }), "{err:?}");
    }

    #[test]
    fn hung_tool_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().expect("dir");
        let fake = dir.path().join("drbdadm");
        std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").expect("write fake");
        let mut perms = std::fs::metadata(&fake).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&fake, perms).expect("chmod");
        let started = Instant::now();
        let err = validate_with_timeout(
            Path::new("/dev/null"),
            "r0",
            &fake,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, RenderError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_tool_is_a_spawn_error() {
        let err = validate_with_drbdadm(
            Path::new("/dev/null"),
            "r0",
            Path::new("/nonexistent/drbdadm"),
        )
        .unwrap_err();
        assert!(matches!(err, RenderError::Spawn { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with("could not run `/nonexistent/drbdadm --config-file"));
    }
}
