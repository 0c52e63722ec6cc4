//! One node of the lab: running programs inside it, and the node-local chores (containers,
//! store mounts, sshd) that crash, revive and teardown share.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::state::Layout;
use crate::procfs::{self, Mount};
use crate::run::{self, Opts, Output};

/// PATH inside the nodes: /usr/local/sbin (the lab's ctmgr, ctmgr-guard and DRBD stand-in)
/// before /usr/sbin (the real drbdadm).
pub const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths inside a node that are bind mounts of lab files, and where those live on the
/// machine, relative to the node directory (`node:`) or the lab directory (`lab:`).
const MAPPED: &[(&str, &str)] = &[
    ("/etc/hosts", "node:hosts"),
    ("/etc/ctmgr", "node:etc-ctmgr"),
    ("/etc/drbd.conf", "node:drbd.conf"),
    ("/etc/drbd.d", "node:drbd.d"),
    ("/var/lib/ctmgr", "node:var-lib-ctmgr"),
    ("/run/ctmgr", "node:run-ctmgr"),
    ("/root/.ssh", "node:ssh"),
    ("/var/lib/drbd-sim", "lab:drbd-sim"),
    ("/usr/local/sbin", "lab:bin"),
];

/// Bind mounts made in every node, in order (after the overlays).
pub(crate) fn bind_mounts() -> impl Iterator<Item = (&'static str, &'static str)> {
    MAPPED
        .iter()
        .copied()
        .filter(|(inside, _)| *inside != "/run/ctmgr")
        .chain([("/srv", "node:srv")])
}

#[derive(Debug, Clone)]
pub struct Node {
    name: String,
    index: usize,
    net: PathBuf,
    mnt: PathBuf,
    uts: PathBuf,
    dir: PathBuf,
    lab_dir: PathBuf,
}

impl Node {
    pub(crate) fn new(layout: &Layout, n: usize) -> Node {
        let name = format!("node{n}");
        Node {
            net: layout.ns_file(&name, "net"),
            mnt: layout.ns_file(&name, "mnt"),
            uts: layout.ns_file(&name, "uts"),
            dir: layout.node_dir(n),
            lab_dir: layout.dir.clone(),
            name,
            index: n,
        }
    }

    /// `node1` or `node2`: also its hostname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 1-based.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The node's directory in the lab directory (same path inside the node).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn ns_files(&self) -> [(&'static str, &Path); 3] {
        [("net", &self.net), ("mnt", &self.mnt), ("uts", &self.uts)]
    }

    /// Runs `argv` inside the node (its network, mount and UTS namespaces) with PATH =
    /// [`NODE_PATH`], HOME=/root, stdin /dev/null, and a 120 s deadline.
    pub fn cmd(&self, argv: &[&str]) -> Output {
        self.cmd_with(argv, &Opts::default())
    }

    pub fn cmd_timeout(&self, argv: &[&str], timeout: Duration) -> Output {
        self.cmd_with(argv, &Opts::timeout(timeout))
    }

    /// Like [`Node::cmd`] with more environment (added to the node's base set), stdin bytes
    /// or another deadline from `opts`.
    pub fn cmd_with(&self, argv: &[&str], opts: &Opts) -> Output {
        let net = format!("--net={}", self.net.display());
        let mnt = format!("--mount={}", self.mnt.display());
        let uts = format!("--uts={}", self.uts.display());
        let mut full = vec!["nsenter", &net, &mnt, &uts, "--wd=/", "--"];
        full.extend_from_slice(argv);
        let mut env: Vec<(String, String)> = [
            ("PATH", NODE_PATH),
            ("HOME", "/root"),
            ("USER", "root"),
            ("LOGNAME", "root"),
            ("LANG", "C.UTF-8"),
            ("TERM", "dumb"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for k in ["RUST_BACKTRACE", "RUST_LOG", "NO_COLOR"] {
            if let Ok(v) = std::env::var(k) {
                env.push((k.to_string(), v));
            }
        }
        env.extend(opts.env.iter().cloned());
        let opts = Opts {
            env_clear: true,
            env,
            ..opts.clone()
        };
        // nsenter itself is found on the machine's PATH; it execs argv[0] with the node's.
        let mut out = run::run(&full, &opts);
        out.argv = argv.iter().map(|s| s.to_string()).collect();
        out.argv.insert(0, format!("[{}]", self.name));
        out
    }

    /// Runs `argv` in the node's network namespace only (the machine's file system, PATH
    /// and hostname): for network set-up that names namespace files of the lab.
    pub fn net_cmd(&self, argv: &[&str], timeout: Duration) -> Output {
        let net = format!("--net={}", self.net.display());
        let mut full = vec!["nsenter", net.as_str(), "--"];
        full.extend_from_slice(argv);
        let mut out = run::host(&full, timeout);
        out.argv = argv.iter().map(|s| s.to_string()).collect();
        out.argv.insert(0, format!("[{} net]", self.name));
        out
    }

    /// Runs `ctmgr ARGS` inside the node.
    pub fn ctmgr(&self, args: &[&str]) -> Output {
        let mut argv = vec!["ctmgr"];
        argv.extend_from_slice(args);
        self.cmd(&argv)
    }

    /// Where the node's `inside` path (or a path below it) lives on the machine, for the
    /// lab's bind-mounted paths: /etc/hosts, /etc/ctmgr, /etc/drbd.conf, /etc/drbd.d,
    /// /var/lib/ctmgr, /run/ctmgr, /root/.ssh, /var/lib/drbd-sim, /usr/local/sbin. Store
    /// contents (/srv/...) exist only inside the node: use [`Node::read_file`].
    pub fn path_in(&self, inside: impl AsRef<Path>) -> Result<PathBuf> {
        let inside = inside.as_ref();
        for (mapped, host) in MAPPED {
            if let Ok(rest) = inside.strip_prefix(mapped) {
                let base = match host.split_once(':') {
                    Some(("node", rel)) => self.dir.join(rel),
                    Some((_, rel)) => self.lab_dir.join(rel),
                    None => unreachable!("MAPPED entries have a prefix"),
                };
                return Ok(if rest.as_os_str().is_empty() {
                    base
                } else {
                    base.join(rest)
                });
            }
        }
        anyhow::bail!(
            "{} in {} is not a lab-mapped path; read it with node.read_file()",
            inside.display(),
            self.name
        )
    }

    /// Reads a file inside the node.
    pub fn read_file(&self, inside: &str) -> Result<String> {
        Ok(self.cmd(&["cat", "--", inside]).check()?.stdout)
    }

    /// Writes a file inside the node (via `dd`, not atomic).
    pub fn write_file(&self, inside: &str, contents: &[u8]) -> Result<()> {
        let of = format!("of={inside}");
        let opts = Opts {
            stdin: Some(contents.to_vec()),
            ..Opts::default()
        };
        self.cmd_with(&["dd", &of, "status=none"], &opts).check()?;
        Ok(())
    }

    /// The identities of this node's namespaces that still exist.
    pub(crate) fn ns_identities(&self, host_mounts: &[Mount]) -> HashSet<String> {
        self.ns_files()
            .iter()
            .filter_map(|(kind, f)| procfs::ns_identity(f, kind, host_mounts))
            .collect()
    }

    /// Does the node's mount namespace still exist?
    pub(crate) fn exists(&self, host_mounts: &[Mount]) -> bool {
        procfs::ns_identity(&self.mnt, "mnt", host_mounts).is_some()
            && procfs::ns_identity(&self.net, "net", host_mounts).is_some()
            && procfs::ns_identity(&self.uts, "uts", host_mounts).is_some()
    }

    pub(crate) fn has_link(&self, dev: &str) -> bool {
        self.cmd_timeout(&["ip", "link", "show", "dev", dev], Duration::from_secs(10))
            .success()
    }

    /// Mount points under /srv/ inside the node (the stores), deepest first.
    pub fn store_mounts(&self) -> Result<Vec<PathBuf>> {
        let text = self
            .cmd_timeout(&["cat", "/proc/self/mountinfo"], Duration::from_secs(20))
            .check()?
            .stdout;
        let mut v: Vec<PathBuf> = procfs::parse_mountinfo(&text)
            .into_iter()
            .map(|m| m.mountpoint)
            .filter(|p| p.starts_with("/srv") && p != Path::new("/srv"))
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        v.dedup();
        Ok(v)
    }

    /// Unmounts every store inside the node (lazily when busy).
    pub(crate) fn unmount_stores(&self) -> Result<()> {
        let mut errors = Vec::new();
        for mp in self.store_mounts()? {
            let mp = mp.to_string_lossy().into_owned();
            let t = Duration::from_secs(30);
            if !self.cmd_timeout(&["umount", &mp], t).success() {
                if let Err(e) = self.cmd_timeout(&["umount", "-l", &mp], t).check() {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        super::errors_to_result(errors)
    }

    /// `lxc-stop -k` every running container of every mounted store, within `budget`.
    pub fn stop_containers(&self, budget: Duration) -> Result<()> {
        let deadline = Instant::now() + budget;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1))
        };
        let mut errors = Vec::new();
        for mp in self.store_mounts()? {
            let lxcpath = mp.join("containers");
            let lxcpath = lxcpath.to_string_lossy();
            let ls = self.cmd_timeout(
                &["lxc-ls", "--running", "-1", "-P", &lxcpath],
                left().min(Duration::from_secs(20)),
            );
            if !ls.success() {
                // No containers directory (yet): nothing to stop.
                continue;
            }
            for name in ls.stdout.split_whitespace() {
                let out = self.cmd_timeout(
                    &["lxc-stop", "-k", "-P", &lxcpath, "-n", name],
                    left().min(Duration::from_secs(30)),
                );
                if !out.success() {
                    errors.push(format!("{out}"));
                }
            }
        }
        super::errors_to_result(errors)
    }

    /// Starts the node's sshd (daemonizes; its pid file is in the node directory).
    pub(crate) fn start_sshd(&self) -> Result<()> {
        let cfg = self.dir.join("sshd_config");
        let log = self.dir.join("sshd.log");
        let cfg = cfg.to_string_lossy();
        let log = log.to_string_lossy();
        self.cmd_timeout(
            &["/usr/sbin/sshd", "-f", &cfg, "-E", &log],
            Duration::from_secs(30),
        )
        .check()
        .with_context(|| format!("starting sshd in {}", self.name))?;
        Ok(())
    }

    /// Runs `ssh root@ADDR true` from this node until it works or `timeout` passes.
    pub fn wait_ssh(&self, addr: &str, timeout: Duration) -> Result<()> {
        let target = format!("root@{addr}");
        let mut last = None;
        let ok = run::wait_until(timeout, Duration::from_millis(200), || {
            let out = self.cmd_timeout(&["ssh", &target, "true"], Duration::from_secs(15));
            let ok = out.success();
            last = Some(out);
            ok
        });
        if ok {
            Ok(())
        } else {
            let last = last.map_or(String::new(), |o| o.to_string());
            anyhow::bail!(
                "ssh from {} to {addr} failed for {timeout:?}: {last}",
                self.name
            )
        }
    }
}
