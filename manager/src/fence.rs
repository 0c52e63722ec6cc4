//! Peer fencing the DRBD way (DESIGN.md §4 rules 2 and 10).
//!
//! Rendered resources carry `fencing resource-only` and ctmgr as their `fence-peer`
//! handler, so DRBD itself calls `ctmgr drbd fence-peer` before any promotion while the
//! peer is not connected — a takeover's, and the runbook's own manual `drbdadm primary`.
//! The handler answers with DRBD's exit codes (drbd.conf(5), `fence-peer`):
//!
//! | exit | meaning to DRBD | when ctmgr says it |
//! |---|---|---|
//! | 4 | peer was fenced (outdated): promote | the peer, asked over ssh under its own store lock, is Secondary, has nothing of the store mounted or running, and outdated its disk |
//! | 5 | peer unreachable, assumed dead: promote | every probe on every path (TCP to its ssh port, ICMP) timed out, there are two paths, and this node reaches its gateway |
//! | 6 | peer is Primary: DRBD outdates THIS node and refuses | the peer says it is Primary, or has the store mounted or containers of it running |
//! | 1 | refuse (`(-7) Refusing to be Primary while peer is not outdated`) | anything else: the peer answers but cannot be asked, its role is unknown, its lock is busy, one path only, this node isolated |
//!
//! Any answer at all is life: a TCP connection accepted OR reset (RST: a live kernel whose
//! sshd is down or firewalled), an ICMP echo reply. The takeover preflight asks the peer
//! the same question (without outdating) so its refusals are clear before DRBD is asked.
//!
//! The peer's side (`ctmgr __fence-answer STORE [--outdate]`) takes its own store lock
//! without waiting long, so two concurrent takeovers from both sides refuse rather than
//! both win. Nothing here may wait without a deadline.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Node, Store};
use crate::runner::{Cmd, Runner};

/// Bound for each probe of one peer address (TCP connect, ICMP echo).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the peer waits for its own store lock before answering "busy".
pub const ANSWER_LOCK_WAIT: Duration = Duration::from_secs(3);

/// Bound for one ssh question to the peer (connect, lock, `drbdadm outdate`, answer).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(40);

/// What a TCP connect to the peer's ssh port found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpAnswer {
    /// sshd (or something) accepted the connection.
    Accepted,
    /// Connection refused: the peer's kernel answered with a RST. Alive.
    Reset,
    /// Timed out or no route: nothing answered.
    Silent,
}

/// One path (address) to the peer and what answered on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathProbe {
    /// "peer-link" or "lan".
    pub path: &'static str,
    pub address: Ipv4Addr,
    pub port: u16,
    pub tcp: TcpAnswer,
    /// An ICMP echo reply came back.
    pub icmp: bool,
}

impl PathProbe {
    /// Anything at all answered on this path.
    pub fn alive(&self) -> bool {
        self.tcp != TcpAnswer::Silent || self.icmp
    }

    pub fn describe(&self) -> String {
        let tcp = match self.tcp {
            TcpAnswer::Accepted => "accepts",
            TcpAnswer::Reset => "resets (RST: alive)",
            TcpAnswer::Silent => "silent",
        };
        format!(
            "{} {}: tcp/{} {tcp}, ping {}",
            self.path,
            self.address,
            self.port,
            if self.icmp { "answers" } else { "silent" }
        )
    }
}

/// Is the peer alive, on which paths, and does this node reach its gateway?
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Liveness {
    pub paths: Vec<PathProbe>,
    /// None: no gateway configured.
    pub gateway: Option<bool>,
}

impl Liveness {
    pub fn alive(&self) -> bool {
        self.paths.iter().any(PathProbe::alive)
    }

    /// Only one path to the peer is configured: silence on it proves nothing.
    pub fn single_path(&self) -> bool {
        self.paths.len() < 2
    }

    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.paths.iter().map(PathProbe::describe).collect();
        parts.push(match self.gateway {
            Some(true) => "gateway answers".into(),
            Some(false) => "gateway silent".into(),
            None => "no gateway configured".into(),
        });
        parts.join("; ")
    }
}

/// What the peer says about its side of a store, under its own store lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    pub node: String,
    pub store: String,
    /// Another ctmgr run holds the store's lock there (its description).
    pub busy: Option<String>,
    /// `drbdadm role` there: "Primary", "Secondary"; None when unknown.
    pub role: Option<String>,
    pub role_error: Option<String>,
    /// The store's device is mounted somewhere there.
    pub mounted: bool,
    /// Containers of the store running there.
    pub running: Vec<String>,
    /// `--outdate` was asked and the disk there is Outdated now.
    pub outdated: bool,
    /// The disk state there after the request (`drbdadm dstate`, local part).
    pub disk: Option<String>,
    pub error: Option<String>,
}

/// The peer's report judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerVerdict {
    /// Secondary, nothing mounted or running (and outdated, when that was asked).
    Safe,
    /// Primary, or using the store: it holds it.
    Holds(String),
    /// Could not be decided: busy lock, unknown role, an error, not outdated.
    Unsure(String),
}

/// Judges a report; `want_outdated`: the peer was asked to outdate itself.
pub fn judge(r: &PeerReport, want_outdated: bool) -> PeerVerdict {
    if let Some(holder) = &r.busy {
        return PeerVerdict::Unsure(format!(
            "store {} is locked on {} by another ctmgr run ({holder}); it may be taking the store over right now",
            r.store, r.node
        ));
    }
    if r.role.as_deref() == Some("Primary") {
        return PeerVerdict::Holds(format!("{} is Primary for store {}", r.node, r.store));
    }
    if r.mounted {
        return PeerVerdict::Holds(format!("{} has store {} mounted", r.node, r.store));
    }
    if !r.running.is_empty() {
        return PeerVerdict::Holds(format!(
            "{} runs containers of store {}: {}",
            r.node,
            r.store,
            r.running.join(", ")
        ));
    }
    if let Some(e) = &r.error {
        return PeerVerdict::Unsure(format!("{}: {e}", r.node));
    }
    match r.role.as_deref() {
        Some("Secondary") => {}
        Some(other) => {
            return PeerVerdict::Unsure(format!("{} reports DRBD role {other}", r.node));
        }
        None => {
            return PeerVerdict::Unsure(format!(
                "{} cannot tell its DRBD role ({})",
                r.node,
                r.role_error.as_deref().unwrap_or("no answer")
            ))
        }
    }
    if want_outdated && !r.outdated {
        return PeerVerdict::Unsure(format!(
            "{} is Secondary but its disk did not become Outdated (it is {}; a CONNECTED Secondary ignores `drbdadm outdate`)",
            r.node,
            r.disk.as_deref().unwrap_or("unknown")
        ));
    }
    PeerVerdict::Safe
}

/// The handler's answer to DRBD, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceOutcome {
    /// 4: the peer outdated its disk.
    Outdated,
    /// 5: the peer is unreachable on every path and we are not isolated.
    Unreachable,
    /// 6: the peer is Primary (DRBD then outdates this node).
    PeerActive,
    /// 1: not proven: DRBD refuses the promotion.
    Refused,
}

impl FenceOutcome {
    pub fn code(self) -> i32 {
        match self {
            FenceOutcome::Outdated => 4,
            FenceOutcome::Unreachable => 5,
            FenceOutcome::PeerActive => 6,
            FenceOutcome::Refused => 1,
        }
    }
}

/// The handler's decision over what it found (pure). `asked`: the peer's report over
/// ssh, or why it could not be had; None when nothing answered (not asked).
pub fn decide(
    live: &Liveness,
    asked: Option<&Result<PeerReport, String>>,
) -> (FenceOutcome, String) {
    if live.alive() {
        return match asked {
            Some(Ok(r)) => match judge(r, true) {
                PeerVerdict::Safe => (
                    FenceOutcome::Outdated,
                    format!(
                        "{} confirmed Secondary, nothing mounted or running, and outdated its disk",
                        r.node
                    ),
                ),
                PeerVerdict::Holds(why) => (FenceOutcome::PeerActive, why),
                PeerVerdict::Unsure(why) => (FenceOutcome::Refused, why),
            },
            Some(Err(e)) => (
                FenceOutcome::Refused,
                format!(
                    "the peer is alive ({}) but could not be asked over ssh: {e}",
                    live.describe()
                ),
            ),
            None => (
                FenceOutcome::Refused,
                format!("the peer is alive ({}) but was not asked", live.describe()),
            ),
        };
    }
    if live.single_path() {
        return (
            FenceOutcome::Refused,
            format!(
                "the peer is silent, but only one path to it is configured ({}): a cut cable looks the same as a dead peer. Give both nodes a lan_address in cluster.toml",
                live.describe()
            ),
        );
    }
    match live.gateway {
        Some(true) => (
            FenceOutcome::Unreachable,
            format!("the peer is silent on every path while this node reaches its gateway ({})", live.describe()),
        ),
        Some(false) => (
            FenceOutcome::Refused,
            format!("the peer is silent, but so is this node's gateway: this node may be the isolated one ({})", live.describe()),
        ),
        None => (
            FenceOutcome::Refused,
            format!("the peer is silent, but no gateway is configured ([network] gateway) to prove this node is not the isolated one ({})", live.describe()),
        ),
    }
}

/// TCP connect within `timeout`: accepted, reset (refused) or silent.
pub fn probe_tcp(addr: SocketAddr, timeout: Duration) -> TcpAnswer {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => TcpAnswer::Accepted,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => TcpAnswer::Reset,
        Err(_) => TcpAnswer::Silent,
    }
}

/// One ICMP echo within [`PROBE_TIMEOUT`].
pub fn probe_icmp(runner: &dyn Runner, addr: Ipv4Addr) -> bool {
    runner
        .run(
            &Cmd::new("ping")
                .args(["-n", "-c", "1", "-W", "2", &addr.to_string()])
                .timeout(Duration::from_secs(5)),
        )
        .is_ok_and(|o| o.success())
}

/// The port ssh will use for `target` (`ssh -G` prints the effective client config,
/// including a `Port` from ~/.ssh/config); 22 when it cannot be read.
pub fn ssh_port(runner: &dyn Runner, target: &str) -> u16 {
    runner
        .run(
            &Cmd::new("ssh")
                .args(["-G", target])
                .timeout(Duration::from_secs(5)),
        )
        .ok()
        .filter(|o| o.success())
        .and_then(|o| parse_ssh_port(&o.stdout))
        .unwrap_or(22)
}

/// The `port N` line of `ssh -G` output.
pub fn parse_ssh_port(text: &str) -> Option<u16> {
    text.lines()
        .find_map(|l| l.strip_prefix("port "))
        .and_then(|p| p.trim().parse().ok())
}

/// The peer's addresses: (path name, address), peer link first.
pub fn peer_paths(peer: &Node) -> Vec<(&'static str, Ipv4Addr)> {
    let mut v = vec![("peer-link", peer.address)];
    v.extend(peer.lan_address.map(|a| ("lan", a)));
    v
}

/// Probes every path to the peer and this node's gateway, all at once: the whole
/// question is bounded by about one [`PROBE_TIMEOUT`].
pub fn probe_peer(config: &Config, node: &str, runner: &dyn Runner) -> Liveness {
    let Some(peer) = config.peer_of(node) else {
        return Liveness::default();
    };
    let port = ssh_port(runner, &peer.ssh);
    let gateway = config.node(node).and_then(|me| config.gateway_for(me));
    std::thread::scope(|s| {
        let paths: Vec<_> = peer_paths(peer)
            .into_iter()
            .map(|(path, address)| {
                s.spawn(move || {
                    let tcp = s.spawn(move || {
                        probe_tcp(SocketAddr::new(IpAddr::V4(address), port), PROBE_TIMEOUT)
                    });
                    let icmp = probe_icmp(runner, address);
                    PathProbe {
                        path,
                        address,
                        port,
                        tcp: tcp.join().unwrap_or(TcpAnswer::Silent),
                        icmp,
                    }
                })
            })
            .collect();
        let gw = gateway.map(|gw| s.spawn(move || probe_icmp(runner, gw)));
        Liveness {
            paths: paths.into_iter().filter_map(|h| h.join().ok()).collect(),
            gateway: gw.map(|h| h.join().unwrap_or(false)),
        }
    })
}

/// The ssh destination for one address of the peer: its configured `ssh` when that
/// names this address, else the same user at this address.
pub fn ssh_target_for(peer: &Node, address: Ipv4Addr) -> String {
    let host = address.to_string();
    let (user, dest) = match peer.ssh.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, peer.ssh.as_str()),
    };
    if dest == host {
        return peer.ssh.clone();
    }
    match user {
        Some(u) => format!("{u}@{host}"),
        None => host,
    }
}

/// Asks the peer `ctmgr __fence-answer STORE [--outdate]` over every path that answered,
/// first answer wins. `config_path`: passed on when it is not the default.
pub fn ask_peer(
    runner: &dyn Runner,
    peer: &Node,
    live: &Liveness,
    store: &str,
    outdate: bool,
    config_path: &Path,
) -> Result<PeerReport, String> {
    let targets: Vec<String> = live
        .paths
        .iter()
        .filter(|p| p.alive())
        .map(|p| ssh_target_for(peer, p.address))
        .collect();
    let question = Question {
        store,
        outdate,
        config_path,
        connect_secs: 5,
        timeout: ASK_TIMEOUT,
    };
    ask_targets(runner, &targets, &question)
}

/// One `__fence-answer` question and its bounds.
pub struct Question<'a> {
    pub store: &'a str,
    pub outdate: bool,
    pub config_path: &'a Path,
    /// ssh's `ConnectTimeout` for each target.
    pub connect_secs: u32,
    /// Bound for the whole question on one target.
    pub timeout: Duration,
}

/// Asks `question` of each ssh target in turn (each once), first answer wins.
pub fn ask_targets(
    runner: &dyn Runner,
    targets: &[String],
    question: &Question<'_>,
) -> Result<PeerReport, String> {
    let store = question.store;
    let mut remote: Vec<String> = vec!["ctmgr".into()];
    if question.config_path != Path::new(crate::config::DEFAULT_PATH) {
        remote.extend([
            "--config".into(),
            question.config_path.display().to_string(),
        ]);
    }
    remote.extend(["__fence-answer".into(), store.to_string()]);
    if question.outdate {
        remote.push("--outdate".into());
    }
    let remote: Vec<&str> = remote.iter().map(String::as_str).collect();
    let mut errors = Vec::new();
    let mut tried = HashSet::new();
    for target in targets {
        if !tried.insert(target.clone()) {
            continue;
        }
        let cmd = crate::takeover::ssh_cmd_with(
            "ssh",
            target,
            &remote,
            question.timeout,
            question.connect_secs,
        );
        match runner.run_ok(&cmd) {
            Ok(out) => match serde_json::from_str::<PeerReport>(out.stdout.trim()) {
                Ok(r) if r.store == store => return Ok(r),
                Ok(r) => errors.push(format!("{target}: answered for store {:?}", r.store)),
                Err(e) => errors.push(format!("{target}: unreadable answer ({e})")),
            },
            Err(e) => errors.push(format!("{target}: {e}")),
        }
    }
    if errors.is_empty() {
        errors.push("no path to the peer answered".into());
    }
    Err(errors.join("; "))
}

/// The peer's side: what this node says about `store`, under the store's lock (waiting at
/// most [`ANSWER_LOCK_WAIT`]); with `outdate`, a Secondary that uses nothing of the store
/// outdates its disk (`drbdadm outdate`) and reports the disk state after it.
pub fn answer(runner: &dyn Runner, node: &str, store: &Store, outdate: bool) -> PeerReport {
    let mut r = PeerReport {
        node: node.to_string(),
        store: store.name.clone(),
        ..PeerReport::default()
    };
    let _lock = match crate::lock::lock_store(
        &store.name,
        crate::lock::Wait::Upto(ANSWER_LOCK_WAIT),
        &|_| {},
    ) {
        Ok(l) => l,
        Err(crate::lock::LockError::Busy { holder, .. })
        | Err(crate::lock::LockError::TimedOut { holder, .. }) => {
            r.busy = Some(holder);
            return r;
        }
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
    };
    let Some(res) = store.drbd_resource.as_deref() else {
        r.error = Some(format!("store {} is not replicated", store.name));
        return r;
    };
    match crate::store::drbd_role(runner, res) {
        Ok(role) => r.role = Some(role),
        Err(e) => r.role_error = Some(e),
    }
    match crate::mountinfo::read() {
        Ok(mounts) => {
            r.mounted = mounts
                .iter()
                .any(|m| crate::store::mount_is_store(m, &store.device))
                || crate::mountinfo::at(&mounts, &store.mountpoint).is_some();
        }
        Err(e) => r.error = Some(format!("cannot read the mount table: {e}")),
    }
    if r.mounted {
        let lxcpath = store.lxcpath();
        r.running = crate::container::own_names(&lxcpath)
            .into_iter()
            .filter(|n| crate::takeover::is_running(&lxcpath, n))
            .collect();
    }
    if outdate && r.role.as_deref() == Some("Secondary") && !r.mounted && r.error.is_none() {
        if let Err(e) = runner.run_ok(
            &Cmd::new("drbdadm")
                .args(["outdate", res])
                .timeout(Duration::from_secs(30)),
        ) {
            r.error = Some(format!("drbdadm outdate {res} failed: {e}"));
        }
        match runner.run_ok(
            &Cmd::new("drbdadm")
                .args(["dstate", res])
                .timeout(Duration::from_secs(10)),
        ) {
            Ok(out) => {
                let disk = crate::drbd::state::parse_dstate(&out.stdout)
                    .ok()
                    .and_then(|v| v.first().map(|d| d.local.to_string()));
                r.outdated = disk.as_deref() == Some("Outdated");
                r.disk = disk;
            }
            Err(e) => r.error = Some(format!("drbdadm dstate {res} failed: {e}")),
        }
    }
    r
}

/// What the handler did, for the log and the journal.
#[derive(Debug, Clone, Serialize)]
pub struct FenceReport {
    pub store: String,
    pub resource: String,
    pub outcome: FenceOutcome,
    pub exit_code: i32,
    pub reason: String,
    pub liveness: Liveness,
    pub peer: Option<PeerReport>,
}

/// The `fence-peer` handler: probe, ask the peer to outdate itself, decide.
pub fn fence_peer(config: &Config, node: &str, store: &Store, runner: &dyn Runner) -> FenceReport {
    let resource = store.drbd_resource.clone().unwrap_or_default();
    let Some(peer) = config.peer_of(node) else {
        return FenceReport {
            store: store.name.clone(),
            resource,
            outcome: FenceOutcome::Refused,
            exit_code: FenceOutcome::Refused.code(),
            reason: format!("no peer of {node} in {}", config.path.display()),
            liveness: Liveness::default(),
            peer: None,
        };
    };
    let live = probe_peer(config, node, runner);
    let asked = live
        .alive()
        .then(|| ask_peer(runner, peer, &live, &store.name, true, &config.path));
    let (outcome, reason) = decide(&live, asked.as_ref());
    FenceReport {
        store: store.name.clone(),
        resource,
        outcome,
        exit_code: outcome.code(),
        reason,
        liveness: live,
        peer: asked.and_then(Result::ok),
    }
}

/// Records the handler's decision in the journal (a failure to write it is
/// logged: the answer to DRBD matters more).
pub fn journal(node: &str, report: &FenceReport) {
    let entry = crate::journal::Entry {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        node: node.to_string(),
        action: "fence-peer".into(),
        store: report.store.clone(),
        outcome: match report.outcome {
            FenceOutcome::Refused => "refused".into(),
            _ => "ok".into(),
        },
        forced: false,
        refused_by: (report.outcome == FenceOutcome::Refused).then(|| "fence-peer".into()),
        error: None,
        total_ms: 0,
        steps: vec![crate::journal::Step {
            step: "fence-peer".into(),
            outcome: format!("exit {}", report.exit_code),
            ms: 0,
            detail: report.reason.clone(),
        }],
    };
    if let Err(e) = crate::journal::append(&entry) {
        tracing::warn!("cannot write the journal: {e}");
    }
}

/// Safety rule 2 needs two independent paths to the peer: the warning when a
/// replicated store's nodes lack a `lan_address` (None when all is well).
pub fn single_path_warning(config: &Config) -> Option<String> {
    if config.nodes.len() < 2 || !config.stores.iter().any(Store::is_replicated) {
        return None;
    }
    let lacking: Vec<&str> = config
        .nodes
        .iter()
        .filter(|n| n.lan_address.is_none())
        .map(|n| n.name.as_str())
        .collect();
    if lacking.is_empty() {
        return None;
    }
    Some(format!(
        "{}: node {} {} no lan_address, so there is only one path to the peer (the peer link): \
         a cut cable looks the same as a dead peer, and takeover without a DRBD connection \
         refuses (single-path) unless --force. Set lan_address for both nodes",
        config.path.display(),
        lacking.join(" and "),
        if lacking.len() > 1 { "have" } else { "has" }
    ))
}

/// Addresses configured on this machine's interfaces (`getifaddrs`).
pub fn local_addresses() -> std::io::Result<HashSet<Ipv4Addr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .collect())
}

/// Safety rule 10's last sentence: the node a command runs as must have its configured
/// addresses here. Returns the addresses that are missing (pure).
pub fn missing_addresses(node: &Node, local: &HashSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
    std::iter::once(node.address)
        .chain(node.lan_address)
        .filter(|a| !local.contains(a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            address: Ipv4Addr::new(10, 0, 254, 1),
            ssh: "root@10.0.254.1".into(),
            lan_address: None,
            uplink: "eth0".into(),
            lan_prefix: 24,
            peer_interface: "eth1".into(),
            peer_prefix: 30,
            gateway: None,
        }
    }

    fn path(name: &'static str, tcp: TcpAnswer, icmp: bool) -> PathProbe {
        PathProbe {
            path: name,
            address: Ipv4Addr::new(10, 0, 254, 1),
            port: 22,
            tcp,
            icmp,
        }
    }

    fn two(tcp: TcpAnswer, icmp: bool, gateway: Option<bool>) -> Liveness {
        Liveness {
            paths: vec![
                path("peer-link", TcpAnswer::Silent, false),
                path("lan", tcp, icmp),
            ],
            gateway,
        }
    }

    fn secondary() -> PeerReport {
        PeerReport {
            node: "node1".into(),
            store: "store1".into(),
            role: Some("Secondary".into()),
            outdated: true,
            disk: Some("Outdated".into()),
            ..PeerReport::default()
        }
    }

    #[test]
    fn any_answer_is_life() {
        assert!(path("lan", TcpAnswer::Reset, false).alive());
        assert!(path("lan", TcpAnswer::Accepted, false).alive());
        assert!(path("lan", TcpAnswer::Silent, true).alive());
        assert!(!path("lan", TcpAnswer::Silent, false).alive());
        // A RST from a live peer whose sshd is down is never "peer down".
        let live = two(TcpAnswer::Reset, false, Some(true));
        let (o, why) = decide(&live, Some(&Err("connection refused".into())));
        assert_eq!(o, FenceOutcome::Refused, "{why}");
        let (o, _) = decide(&live, None);
        assert_eq!(o, FenceOutcome::Refused);
        let live = two(TcpAnswer::Silent, true, Some(true));
        assert_eq!(decide(&live, None).0, FenceOutcome::Refused);
    }

    #[test]
    fn outdated_secondary_is_fenced() {
        let live = two(TcpAnswer::Accepted, true, Some(true));
        assert_eq!(
            decide(&live, Some(&Ok(secondary()))).0,
            FenceOutcome::Outdated
        );
    }

    #[test]
    fn primary_mounted_or_running_peer_is_active() {
        let live = two(TcpAnswer::Accepted, true, Some(true));
        for r in [
            PeerReport {
                role: Some("Primary".into()),
                outdated: false,
                ..secondary()
            },
            PeerReport {
                mounted: true,
                ..secondary()
            },
            PeerReport {
                running: vec!["web".into()],
                ..secondary()
            },
        ] {
            assert_eq!(
                decide(&live, Some(&Ok(r.clone()))).0,
                FenceOutcome::PeerActive,
                "{r:?}"
            );
        }
    }

    #[test]
    fn unsure_answers_refuse() {
        let live = two(TcpAnswer::Accepted, true, Some(true));
        for r in [
            PeerReport {
                busy: Some("pid 7 (ctmgr takeover)".into()),
                ..secondary()
            },
            PeerReport {
                role: None,
                role_error: Some("role unknown".into()),
                ..secondary()
            },
            PeerReport {
                outdated: false,
                disk: Some("UpToDate".into()),
                ..secondary()
            },
            PeerReport {
                error: Some("drbdadm outdate failed".into()),
                ..secondary()
            },
        ] {
            assert_eq!(
                decide(&live, Some(&Ok(r.clone()))).0,
                FenceOutcome::Refused,
                "{r:?}"
            );
        }
        // Busy wins over Primary: a locked peer says nothing for sure... but Primary is
        // still judged Holds when not busy.
        assert!(matches!(
            judge(
                &PeerReport {
                    role: Some("Primary".into()),
                    ..secondary()
                },
                false
            ),
            PeerVerdict::Holds(_)
        ));
        // Without --outdate (the preflight's question) a plain Secondary is safe.
        assert_eq!(
            judge(
                &PeerReport {
                    outdated: false,
                    ..secondary()
                },
                false
            ),
            PeerVerdict::Safe
        );
    }

    #[test]
    fn silence_needs_two_paths_and_the_gateway() {
        let silent = two(TcpAnswer::Silent, false, Some(true));
        assert_eq!(decide(&silent, None).0, FenceOutcome::Unreachable);
        let isolated = two(TcpAnswer::Silent, false, Some(false));
        assert_eq!(decide(&isolated, None).0, FenceOutcome::Refused);
        let no_gw = two(TcpAnswer::Silent, false, None);
        assert_eq!(decide(&no_gw, None).0, FenceOutcome::Refused);
        let single = Liveness {
            paths: vec![path("peer-link", TcpAnswer::Silent, false)],
            gateway: Some(true),
        };
        let (o, why) = decide(&single, None);
        assert_eq!(o, FenceOutcome::Refused);
        assert!(why.contains("only one path"), "{why}");
    }

    #[test]
    fn exit_codes_are_drbds() {
        assert_eq!(FenceOutcome::Outdated.code(), 4);
        assert_eq!(FenceOutcome::Unreachable.code(), 5);
        assert_eq!(FenceOutcome::PeerActive.code(), 6);
        assert_eq!(FenceOutcome::Refused.code(), 1);
    }

    #[test]
    fn ssh_port_from_ssh_g() {
        assert_eq!(
            parse_ssh_port("user root\nport 2222\nhostname x\n"),
            Some(2222)
        );
        assert_eq!(parse_ssh_port("user root\n"), None);
    }

    #[test]
    fn a_real_rst_is_reset_and_a_listener_accepts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(probe_tcp(addr, PROBE_TIMEOUT), TcpAnswer::Accepted);
        drop(l);
        // Nothing listens there now: the kernel answers with a RST.
        assert_eq!(probe_tcp(addr, PROBE_TIMEOUT), TcpAnswer::Reset);
    }

    #[test]
    fn node_addresses_must_be_local() {
        let node = Node {
            name: "node1".into(),
            address: Ipv4Addr::new(10, 0, 254, 1),
            ssh: "root@10.0.254.1".into(),
            lan_address: Some(Ipv4Addr::new(10, 1, 0, 5)),
            ..node("node1")
        };
        let local: HashSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 254, 1)].into_iter().collect();
        assert_eq!(
            missing_addresses(&node, &local),
            vec![Ipv4Addr::new(10, 1, 0, 5)]
        );
        let both: HashSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 254, 1), Ipv4Addr::new(10, 1, 0, 5)]
            .into_iter()
            .collect();
        assert!(missing_addresses(&node, &both).is_empty());
    }

    #[test]
    fn ssh_target_follows_the_address() {
        let mut n = node("node1");
        n.ssh = "admin@10.0.254.1".into();
        assert_eq!(
            ssh_target_for(&n, Ipv4Addr::new(10, 0, 254, 1)),
            "admin@10.0.254.1"
        );
        assert_eq!(
            ssh_target_for(&n, Ipv4Addr::new(10, 1, 0, 5)),
            "admin@10.1.0.5"
        );
        n.ssh = "10.0.254.1".into();
        assert_eq!(ssh_target_for(&n, Ipv4Addr::new(10, 1, 0, 5)), "10.1.0.5");
    }
}
