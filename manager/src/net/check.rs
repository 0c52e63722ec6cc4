//! `ctmgr net check`: compares the live network of this node with cluster.toml.
//!
//! What is checked (each a [`Finding`] named by `check`):
//! - `bridge`: the bridge exists, is a bridge, is up and has carrier;
//! - `uplink`: the uplink exists, is a port of the bridge, is up, and carries
//!   no IPv4 address of its own (an address left there is not used);
//! - `lan-address`: the node's `lan_address/lan_prefix` is on the bridge;
//! - `peer-link`: `address/peer_prefix` is on the peer interface, which is up;
//! - `hosts:<node>`: /etc/hosts gives every node name its peer-link address
//!   first (DRBD's `on <name>` sections and ssh rely on the names);
//! - `peer-reach:link`, `peer-reach:lan`: the peer accepts a TCP connection
//!   on port 22 at its peer-link and LAN addresses within a bound;
//! - `drbd-port:<store>`: no program listens on a replicated store's DRBD
//!   port (a listener without a process is a kernel socket: DRBD's own).
//!
//! Unique DRBD ports are already enforced when cluster.toml is loaded, so
//! they are not checked here. The peer's DRBD ports are not probed: a stray
//! connection to a DRBD listener disturbs it.
//!
//! Links and addresses come from `ip -j`, listeners from `ss -Htlnp`, each
//! with a deadline; parsing is pure and tested on real outputs. Nothing here
//! changes the host.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NetError;
use crate::config::{Config, Node};
use crate::drbd::lint::{parse_hosts, HostsMap};
use crate::runner::{Cmd, Runner};

/// How long the peer gets to accept a TCP connection.
pub const PEER_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of each `ip` and `ss` run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(5);
/// The port probed on the peer: ssh, which `sync` and `migrate` need anyway.
pub const SSH_PORT: u16 = 22;

/// How much a finding matters. Passing findings are `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    /// Degrades the pair without breaking it.
    Warning,
    /// Breaks replication, ssh or failover.
    Error,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name: `bridge`, `uplink`, `lan-address`, `peer-link`,
    /// `hosts:<node>`, `peer-reach:link`, `peer-reach:lan`, `drbd-port:<store>`, `drbd-ports`.
    pub check: String,
    pub ok: bool,
    pub severity: Severity,
    /// What was found; when not ok, also what to fix.
    pub message: String,
}

impl Finding {
    fn pass(check: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            ok: true,
            severity: Severity::Info,
            message: message.into(),
        }
    }

    fn fail(check: impl Into<String>, severity: Severity, message: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            ok: false,
            severity,
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing `ip -j` output

/// One link of `ip -j [-d] {link|addr} show`, as far as ctmgr needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Link {
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub operstate: String,
    /// The bridge (or bond) this link is a port of.
    #[serde(default)]
    pub master: Option<String>,
    /// Present with `-d`.
    #[serde(default)]
    pub linkinfo: Option<LinkInfo>,
    /// Present with `addr show`.
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LinkInfo {
    #[serde(default)]
    pub info_kind: Option<String>,
}

/// One address of a link. Fields are optional because iproute2 prints
/// partial entries for some address kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AddrInfo {
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub local: Option<String>,
    #[serde(default)]
    pub prefixlen: Option<u8>,
}

impl Link {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Administratively up (`ip link set … up`).
    pub fn is_up(&self) -> bool {
        self.has_flag("UP")
    }

    /// Up with carrier. A bridge without ports reports `UNKNOWN` with
    /// `LOWER_UP`, which passes too.
    pub fn is_running(&self) -> bool {
        self.is_up()
            && !self.has_flag("NO-CARRIER")
            && (self.operstate == "UP"
                || (self.operstate == "UNKNOWN" && self.has_flag("LOWER_UP")))
    }

    /// IPv4 and IPv6 addresses with their prefix lengths.
    pub fn addresses(&self) -> Vec<(IpAddr, u8)> {
        self.addr_info
            .iter()
            .filter_map(|a| {
                let ip = a.local.as_deref()?.parse::<IpAddr>().ok()?;
                Some((ip, a.prefixlen?))
            })
            .collect()
    }

    fn ipv4_addresses(&self) -> Vec<String> {
        self.addresses()
            .into_iter()
            .filter(|(ip, _)| ip.is_ipv4())
            .map(|(ip, p)| format!("{ip}/{p}"))
            .collect()
    }

    fn kind(&self) -> Option<&str> {
        self.linkinfo.as_ref()?.info_kind.as_deref()
    }

    fn state_words(&self) -> String {
        format!(
            "operstate {}, flags {}",
            self.operstate,
            self.flags.join(",")
        )
    }
}

/// Parses the JSON of `ip -j [-d] {link|addr} show …`.
pub fn parse_ip_links(json: &str) -> Result<Vec<Link>, serde_json::Error> {
    serde_json::from_str(json)
}

// ---------------------------------------------------------------------------
// Parsing `ss -Htln[p]` output

/// One listening TCP socket from `ss -Htln[p]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The bound address as ss prints it, without brackets or `%iface`:
    /// `0.0.0.0`, `*`, `::`, `10.0.254.1`.
    pub address: String,
    pub port: u16,
    /// `name (pid N)` from `users:((…))`; `None` for kernel sockets (DRBD's
    /// listener) or when ss runs without the privilege to see the owner.
    pub process: Option<String>,
}

impl Listener {
    fn is_wildcard(&self) -> bool {
        matches!(self.address.as_str(), "*" | "0.0.0.0" | "::")
    }

    fn display_address(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// Parses `ss -Htln` / `ss -Htlnp` lines (`LISTEN 0 128 0.0.0.0:7788 0.0.0.0:* users:(("x",pid=1,fd=3))`).
/// Lines that are not TCP listeners are skipped.
pub fn parse_ss_listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 || fields[0] != "LISTEN" {
                return None;
            }
            let (addr, port) = fields[3].rsplit_once(':')?;
            let port = port.parse::<u16>().ok()?;
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            let addr = addr.split('%').next().unwrap_or(addr);
            let process = fields[5..]
                .iter()
                .find_map(|f| f.strip_prefix("users:(("))
                .and_then(process_of);
            Some(Listener {
                address: addr.to_owned(),
                port,
                process,
            })
        })
        .collect()
}

/// `"sshd",pid=812,fd=3))` → `sshd (pid 812)`.
fn process_of(users: &str) -> Option<String> {
    let rest = users.strip_prefix('"')?;
    let (name, rest) = rest.split_once('"')?;
    let pid = rest
        .split(',')
        .find_map(|p| p.strip_prefix("pid="))
        .map(|p| p.trim_end_matches(')'));
    Some(match pid {
        Some(pid) => format!("{name} (pid {pid})"),
        None => name.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Running the checks

/// What `ip` said about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Found(Link),
    Missing,
    /// `ip` could not be run or printed nonsense; the text says why.
    Unknown(String),
}

fn show(runner: &dyn Runner, args: &[&str]) -> Shown {
    let cmd = Cmd::new("ip").args(args).timeout(TOOL_TIMEOUT);
    let out = match runner.run(&cmd) {
        Ok(out) => out,
        Err(e) => return Shown::Unknown(error_text(&e)),
    };
    if !out.success() {
        if out.stderr.contains("does not exist") {
            return Shown::Missing;
        }
        let why = out.stderr.trim();
        return Shown::Unknown(format!(
            "`{}` failed with exit code {}: {why}",
            cmd.display(),
            out.code
        ));
    }
    match parse_ip_links(&out.stdout) {
        Ok(links) => links
            .into_iter()
            .next()
            .map_or(Shown::Missing, Shown::Found),
        Err(source) => Shown::Unknown(error_text(&NetError::IpJson {
            command: cmd.display(),
            source,
        })),
    }
}

/// An error with its causes, `a: b: c`.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Connects to `addr` within `timeout`; true when the peer accepted.
pub fn tcp_probe(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// Runs every check for `node`. `hosts_text` is the content of /etc/hosts;
/// `probe` connects within the given bound (use [`tcp_probe`]). The probes
/// run in parallel, so an unreachable peer costs one [`PEER_PROBE_TIMEOUT`].
pub fn check(
    config: &Config,
    node: &Node,
    runner: &dyn Runner,
    hosts_text: &str,
    probe: &(dyn Fn(SocketAddr, Duration) -> bool + Sync),
) -> Vec<Finding> {
    let bridge = config.network.bridge.as_str();
    let mut findings = Vec::new();

    let br = show(runner, &["-j", "-d", "addr", "show", "dev", bridge]);
    let uplink = show(runner, &["-j", "addr", "show", "dev", &node.uplink]);
    findings.push(bridge_finding(bridge, &node.uplink, &br));
    findings.push(uplink_finding(node, bridge, &uplink));
    findings.push(lan_address_finding(node, bridge, &br, &uplink));

    let peer_link = show(runner, &["-j", "addr", "show", "dev", &node.peer_interface]);
    findings.push(peer_link_finding(config, node, &peer_link));

    let hosts = parse_hosts(hosts_text);
    findings.extend(config.nodes.iter().map(|n| hosts_finding(n, &hosts)));

    findings.extend(reach_findings(config, node, probe, PEER_PROBE_TIMEOUT));
    findings.extend(drbd_port_findings(config, node, runner));
    findings
}

/// `bridge`
pub fn bridge_finding(bridge: &str, uplink: &str, shown: &Shown) -> Finding {
    const C: &str = "bridge";
    let link = match shown {
        Shown::Found(link) => link,
        Shown::Missing => {
            return Finding::fail(
                C,
                Severity::Error,
                format!(
                    "bridge {bridge} does not exist: install the files from `ctmgr net render` and bring it up (`ifup {bridge}`, or `networkctl reload`)"
                ),
            )
        }
        Shown::Unknown(why) => {
            return Finding::fail(C, Severity::Error, format!("cannot read {bridge}: {why}"))
        }
    };
    if let Some(kind) = link.kind().filter(|k| *k != "bridge") {
        return Finding::fail(
            C,
            Severity::Error,
            format!(
                "{bridge} is a {kind} device, not a bridge: the containers' veth interfaces cannot join it; make {bridge} a bridge (see `ctmgr net render`) or set network.bridge"
            ),
        );
    }
    if !link.is_up() {
        return Finding::fail(
            C,
            Severity::Error,
            format!(
                "bridge {bridge} is down ({}): bring it up with `ifup {bridge}` or `ip link set {bridge} up`",
                link.state_words()
            ),
        );
    }
    if !link.is_running() {
        return Finding::fail(
            C,
            Severity::Error,
            format!(
                "bridge {bridge} is up but has no carrier ({}): no port is up; check its uplink {uplink} (cable, switch port, `ip link show {uplink}`)",
                link.state_words()
            ),
        );
    }
    Finding::pass(
        C,
        format!("bridge {bridge} is up (operstate {})", link.operstate),
    )
}

/// `uplink`
pub fn uplink_finding(node: &Node, bridge: &str, shown: &Shown) -> Finding {
    const C: &str = "uplink";
    let up = node.uplink.as_str();
    let link = match shown {
        Shown::Found(link) => link,
        Shown::Missing => {
            return Finding::fail(
                C,
                Severity::Error,
                format!(
                    "uplink {up} does not exist: set `uplink` of node {:?} in cluster.toml to the LAN interface (see `ip link`)",
                    node.name
                ),
            )
        }
        Shown::Unknown(why) => {
            return Finding::fail(C, Severity::Error, format!("cannot read {up}: {why}"))
        }
    };
    if link.master.as_deref() != Some(bridge) {
        let master = link.master.as_deref().unwrap_or("none");
        return Finding::fail(
            C,
            Severity::Error,
            format!(
                "{up} is not a port of {bridge} (master: {master}): add it (`bridge_ports {up}`, or `Bridge={bridge}` for networkd; see `ctmgr net render`) and restart networking"
            ),
        );
    }
    if !link.is_up() {
        return Finding::fail(
            C,
            Severity::Error,
            format!("{up} is down: bring it up with `ifup {up}` or `ip link set {up} up`"),
        );
    }
    if !link.is_running() {
        return Finding::fail(
            C,
            Severity::Error,
            format!(
                "{up} has no carrier ({}): check the cable and the switch port",
                link.state_words()
            ),
        );
    }
    let stray = link.ipv4_addresses();
    if !stray.is_empty() {
        return Finding::fail(
            C,
            Severity::Warning,
            format!(
                "{up} is a port of {bridge} but carries {} itself: addresses on a bridge port are not used; remove them from {up} (the LAN address belongs on {bridge})",
                stray.join(", ")
            ),
        );
    }
    Finding::pass(C, format!("{up} is up and a port of {bridge}"))
}

/// `lan-address`
pub fn lan_address_finding(node: &Node, bridge: &str, br: &Shown, uplink: &Shown) -> Finding {
    const C: &str = "lan-address";
    let Some(lan) = node.lan_address else {
        return Finding::pass(
            C,
            format!(
                "node {:?} has no lan_address: nothing to check (optional; it gives takeover a second path to this node)",
                node.name
            ),
        );
    };
    let want = IpAddr::V4(lan);
    let link = match br {
        Shown::Found(link) => link,
        Shown::Missing => {
            return Finding::fail(
                C,
                Severity::Error,
                format!(
                "{lan}/{} cannot be on {bridge}: the bridge does not exist (see check `bridge`)",
                node.lan_prefix
            ),
            )
        }
        Shown::Unknown(why) => {
            return Finding::fail(C, Severity::Error, format!("cannot read {bridge}: {why}"))
        }
    };
    match link.addresses().into_iter().find(|(ip, _)| *ip == want) {
        Some((_, p)) if p == node.lan_prefix => {
            Finding::pass(C, format!("{lan}/{p} is on {bridge}"))
        }
        Some((_, p)) => Finding::fail(
            C,
            Severity::Error,
            format!(
                "{lan} is on {bridge} as /{p} but cluster.toml says lan_prefix {}: correct one of them",
                node.lan_prefix
            ),
        ),
        None => {
            let on_uplink = matches!(uplink, Shown::Found(u) if u.addresses().iter().any(|(ip, _)| *ip == want));
            let hint = if on_uplink {
                format!(" it is on the uplink {} instead: move it to the bridge", node.uplink)
            } else {
                format!(" configure it (see `ctmgr net render`) and `ifup {bridge}`")
            };
            Finding::fail(
                C,
                Severity::Error,
                format!("{lan}/{} is not on {bridge}:{hint}", node.lan_prefix),
            )
        }
    }
}

/// `peer-link`
pub fn peer_link_finding(config: &Config, node: &Node, shown: &Shown) -> Finding {
    const C: &str = "peer-link";
    let ifc = node.peer_interface.as_str();
    let peer = config
        .peer_of(&node.name)
        .map_or_else(|| "the peer".to_owned(), |p| p.name.clone());
    let link = match shown {
        Shown::Found(link) => link,
        Shown::Missing => {
            return Finding::fail(
                C,
                Severity::Error,
                format!(
                    "peer interface {ifc} does not exist: set `peer_interface` of node {:?} in cluster.toml to the interface cabled to {peer} (see `ip link`)",
                    node.name
                ),
            )
        }
        Shown::Unknown(why) => {
            return Finding::fail(C, Severity::Error, format!("cannot read {ifc}: {why}"))
        }
    };
    let want = IpAddr::V4(node.address);
    let addr = format!("{}/{}", node.address, node.peer_prefix);
    match link.addresses().into_iter().find(|(ip, _)| *ip == want) {
        None => {
            let have = link.ipv4_addresses();
            let have = if have.is_empty() {
                "no IPv4 address".to_owned()
            } else {
                have.join(", ")
            };
            return Finding::fail(
                C,
                Severity::Error,
                format!(
                    "{addr} is not on {ifc} (it has {have}): DRBD and ssh from {peer} use it; configure it (see `ctmgr net render`) and `ifup {ifc}`"
                ),
            );
        }
        Some((_, p)) if p != node.peer_prefix => {
            return Finding::fail(
                C,
                Severity::Error,
                format!(
                "{} is on {ifc} as /{p} but cluster.toml says peer_prefix {}: correct one of them",
                node.address, node.peer_prefix
            ),
            )
        }
        Some(_) => {}
    }
    if !link.is_up() {
        return Finding::fail(
            C,
            Severity::Error,
            format!("{ifc} is down: bring it up with `ifup {ifc}` or `ip link set {ifc} up`"),
        );
    }
    if !link.is_running() {
        return Finding::fail(
            C,
            Severity::Error,
            format!(
                "{ifc} has no carrier ({}): check the cable to {peer} and that {peer}'s end is up",
                link.state_words()
            ),
        );
    }
    Finding::pass(C, format!("{addr} is on {ifc}, which is up"))
}

/// `hosts:<node>`
pub fn hosts_finding(node: &Node, hosts: &HostsMap) -> Finding {
    let c = format!("hosts:{}", node.name);
    let want = IpAddr::V4(node.address);
    let entry = format!("{} {}", node.address, node.name);
    match hosts.resolve(&node.name) {
        None => Finding::fail(
            c,
            Severity::Error,
            format!(
                "/etc/hosts has no entry for {}: add `{entry}` (DRBD's `on {}` sections and ssh use the name)",
                node.name, node.name
            ),
        ),
        Some([first, ..]) if *first == want => {
            Finding::pass(c, format!("{} resolves to {want}", node.name))
        }
        Some(addrs) => {
            let first = addrs.first().map(ToString::to_string).unwrap_or_default();
            let extra = if first.starts_with("127.") {
                format!(" (remove {} from the `{first}` line the installer wrote)", node.name)
            } else {
                String::new()
            };
            let present = if addrs.contains(&want) {
                format!("; put `{entry}` above the line with {first}")
            } else {
                format!("; add `{entry}`")
            };
            Finding::fail(
                c,
                Severity::Error,
                format!(
                    "/etc/hosts resolves {} to {first}, not its peer-link address {want}{present}{extra}",
                    node.name
                ),
            )
        }
    }
}

/// `peer-reach:link` and `peer-reach:lan`, probed in parallel.
pub fn reach_findings(
    config: &Config,
    node: &Node,
    probe: &(dyn Fn(SocketAddr, Duration) -> bool + Sync),
    timeout: Duration,
) -> Vec<Finding> {
    let Some(peer) = config.peer_of(&node.name) else {
        return vec![Finding::pass(
            "peer-reach",
            "single host: no peer in cluster.toml to reach",
        )];
    };
    let mut targets = vec![(
        "peer-reach:link",
        SocketAddr::new(IpAddr::V4(peer.address), SSH_PORT),
        format!(
            "check the peer link (cable, {} here and {} on {}), that {} is up and sshd listens, and firewalls",
            node.peer_interface, peer.peer_interface, peer.name, peer.name
        ),
    )];
    if let Some(lan) = peer.lan_address {
        targets.push((
            "peer-reach:lan",
            SocketAddr::new(IpAddr::V4(lan), SSH_PORT),
            format!(
                "check the LAN path ({} on both nodes, the switch), that {} is up and sshd listens, and firewalls",
                config.network.bridge, peer.name
            ),
        ));
    }
    let answers: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(_, addr, _)| scope.spawn(move || probe(*addr, timeout)))
            .collect();
        // A panicking probe counts as no answer.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect()
    });
    targets
        .into_iter()
        .zip(answers)
        .map(|((check, addr, fix), answered)| {
            if answered {
                Finding::pass(check, format!("{} answers on {addr} (ssh)", peer.name))
            } else {
                Finding::fail(
                    check,
                    Severity::Error,
                    format!(
                        "{} does not answer on {addr} within {} s: {fix}",
                        peer.name,
                        timeout.as_secs_f32()
                    ),
                )
            }
        })
        .collect()
}

/// `drbd-port:<store>` for each replicated store (or one `drbd-ports`
/// finding when the listeners cannot be read).
pub fn drbd_port_findings(config: &Config, node: &Node, runner: &dyn Runner) -> Vec<Finding> {
    let stores: Vec<_> = config
        .stores
        .iter()
        .filter_map(|s| Some((s, s.drbd_resource.as_deref()?, s.drbd_port?)))
        .collect();
    if stores.is_empty() {
        return Vec::new();
    }
    let cmd = Cmd::new("ss").arg("-Htlnp").timeout(TOOL_TIMEOUT);
    let listeners = match runner.run_ok(&cmd) {
        Ok(out) => parse_ss_listeners(&out.stdout),
        Err(e) => {
            return vec![Finding::fail(
                "drbd-ports",
                Severity::Error,
                format!("cannot list TCP listeners: {}", error_text(&e)),
            )]
        }
    };
    stores
        .into_iter()
        .map(|(store, res, port)| port_finding(node, &store.name, res, port, &listeners))
        .collect()
}

/// One replicated store's DRBD port against the listeners of this node.
pub fn port_finding(
    node: &Node,
    store: &str,
    resource: &str,
    port: u16,
    listeners: &[Listener],
) -> Finding {
    let c = format!("drbd-port:{store}");
    let on_port: Vec<&Listener> = listeners.iter().filter(|l| l.port == port).collect();
    if let Some(l) = on_port.iter().find(|l| l.process.is_some()) {
        return Finding::fail(
            c,
            Severity::Error,
            format!(
                "port {port} of store {store} ({resource}) is taken by {} on {}: DRBD cannot listen there; stop that program or give the store another drbd_port on both nodes",
                l.process.as_deref().unwrap_or("a program"),
                l.display_address()
            ),
        );
    }
    let own = node.address.to_string();
    if let Some(l) = on_port
        .iter()
        .find(|l| !l.is_wildcard() && l.address != own)
    {
        return Finding::fail(
            c,
            Severity::Warning,
            format!(
                "a kernel listener (DRBD?) is on {} but {resource} should listen on the peer-link address {own}: check `address` in /etc/drbd.d/{resource}.res (`ctmgr drbd render`)",
                l.display_address()
            ),
        );
    }
    match on_port.first() {
        Some(l) => Finding::pass(
            c,
            format!("port {port} ({resource}) is held by a kernel socket on {} (DRBD)", l.display_address()),
        ),
        None => Finding::pass(
            c,
            format!("port {port} ({resource}) is free for DRBD (no listener: DRBD is connected or down)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::example;
    use crate::runner::RecordingRunner;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    // Real outputs, captured 2026-12-02 on Debian 12.11 (iproute2-6.1.0) in a
    // throwaway network namespace (`ip netns add …`, deleted afterwards).

    /// `ip -j -d addr show dev br0`: a bridge with eth0 (up) as port and 10.1.0.5/24.
    const BR0_UP: &str = r#"[{"ifindex":2,"ifname":"br0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"a2:14:93:1e:25:f2","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"bridge","info_data":{"forward_delay":1500,"hello_time":200,"max_age":2000,"ageing_time":30000,"stp_state":0,"priority":32768,"vlan_filtering":0,"bridge_id":"8000.a2:14:93:1e:25:f2","root_id":"8000.a2:14:93:1e:25:f2","root_port":0,"root_path_cost":0,"topology_change":0,"topology_change_detected":0,"hello_timer":0.00,"tcn_timer":0.00,"topology_change_timer":0.00,"gc_timer":299.70,"group_fwd_mask":"0","group_addr":"01:80:c2:00:00:00","mcast_snooping":1,"no_linklocal_learn":0,"mcast_vlan_snooping":0,"mcast_router":1,"mcast_query_use_ifaddr":0,"mcast_querier":0,"mcast_hash_elasticity":16,"mcast_hash_max":4096,"mcast_last_member_cnt":2,"mcast_startup_query_cnt":2,"mcast_last_member_intvl":100,"mcast_membership_intvl":26000,"mcast_querier_intvl":25500,"mcast_query_intvl":12500,"mcast_query_response_intvl":1000,"mcast_startup_query_intvl":3124,"mcast_stats_enabled":0,"mcast_igmp_version":2,"mcast_mld_version":1,"nf_call_iptables":0,"nf_call_ip6tables":0,"nf_call_arptables":0}},"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[{"family":"inet","local":"10.1.0.5","prefixlen":24,"scope":"global","label":"br0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::a014:93ff:fe1e:25f2","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
    /// `ip -j link show dev br0` of a fresh bridge (`ip link add br0 type bridge`).
    const BR0_FRESH: &str = r#"[{"ifindex":2,"ifname":"br0","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"06:a8:63:0b:a5:e3","broadcast":"ff:ff:ff:ff:ff:ff"}]"#;
    /// `ip -j link show dev br0`: set up, its only port eth0 has no carrier.
    const BR0_NO_CARRIER: &str = r#"[{"ifindex":2,"ifname":"br0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],"mtu":1500,"qdisc":"noqueue","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"52:b8:1f:4f:c2:db","broadcast":"ff:ff:ff:ff:ff:ff"}]"#;
    /// `ip -j addr show dev br0`: up, no ports at all, with 10.1.0.5/24.
    const BR0_NO_PORTS: &str = r#"[{"ifindex":2,"ifname":"br0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"ether","address":"06:a8:63:0b:a5:e3","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"10.1.0.5","prefixlen":24,"scope":"global","label":"br0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::4a8:63ff:fe0b:a5e3","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
    /// `ip -j -d addr show dev dummyx`: a veth, not a bridge.
    const VETH_D: &str = r#"[{"ifindex":6,"link":"dx","ifname":"dummyx","flags":["BROADCAST","MULTICAST","M-DOWN"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"f2:a7:53:35:7c:7b","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[]}]"#;
    /// `ip -j addr show dev eth0`: a veth enslaved to br0, up.
    const ETH0_PORT: &str = r#"[{"ifindex":4,"link":"eth0p","ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","master":"br0","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"0a:fe:9c:ce:bc:09","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet6","local":"fe80::8fe:9cff:fece:bc09","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
    /// `ip -j link show dev eth0`: enslaved, but its other end is down.
    const ETH0_LOWERDOWN: &str = r#"[{"ifindex":4,"link":"eth0p","ifname":"eth0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","M-DOWN"],"mtu":1500,"qdisc":"noqueue","master":"br0","operstate":"LOWERLAYERDOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"52:b8:1f:4f:c2:db","broadcast":"ff:ff:ff:ff:ff:ff"}]"#;
    /// `ip -j addr show dev eth1`: up with 10.0.254.1/30.
    const ETH1_UP: &str = r#"[{"ifindex":4,"link":"eth1p","ifname":"eth1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"de:e2:6a:a2:b1:c5","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"10.0.254.1","prefixlen":30,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::dce2:6aff:fea2:b1c5","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
    /// `ip -j addr show dev eth1`: 10.0.254.1/30 configured, link still down.
    const ETH1_DOWN: &str = r#"[{"ifindex":4,"link":"eth1p","ifname":"eth1","flags":["BROADCAST","MULTICAST","M-DOWN"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"de:e2:6a:a2:b1:c5","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"10.0.254.1","prefixlen":30,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
    /// `ip -j addr show dev eth1`: no address at all.
    const ETH1_BARE: &str = r#"[{"ifindex":6,"link":"eth1p","ifname":"eth1","flags":["BROADCAST","MULTICAST","M-DOWN"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"ce:ef:43:72:66:8f","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]}]"#;
    /// `ip -j link show dev nope`, on stderr with exit code 1.
    const NO_DEVICE: &str = "Device \"nope\" does not exist.\n";
    /// `ss -Htlnp` with two python listeners.
    const SS_P: &str = "LISTEN 0      128    10.0.254.1:22   0.0.0.0:* users:((\"python3\",pid=28557,fd=4))\n\
                        LISTEN 0      128       0.0.0.0:7789 0.0.0.0:* users:((\"python3\",pid=28557,fd=3))\n";
    /// `ss -Htln` of the same sockets (as non-root sees others' sockets).
    const SS_NO_P: &str = "LISTEN 0      128    10.0.254.1:22   0.0.0.0:*\n\
                           LISTEN 0      128       0.0.0.0:7789 0.0.0.0:*\n";
    /// `ss -Htlnp`: IPv4 loopback, IPv6 dual-stack wildcard.
    const SS_P_V6: &str = "LISTEN 0      128    127.0.0.1:7788 0.0.0.0:* users:((\"python3\",pid=29563,fd=4))\n\
                           LISTEN 0      128            *:2222       *:* users:((\"python3\",pid=29563,fd=3))\n";

    fn found(json: &str) -> Shown {
        Shown::Found(parse_ip_links(json).unwrap().remove(0))
    }

    fn node1(c: &Config) -> &Node {
        c.node("node1").unwrap()
    }

    #[test]
    fn ip_json_is_parsed() {
        let l = parse_ip_links(BR0_UP).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].ifname, "br0");
        assert_eq!(l[0].kind(), Some("bridge"));
        assert!(l[0].is_running());
        assert_eq!(
            l[0].addresses(),
            vec![
                ("10.1.0.5".parse().unwrap(), 24),
                ("fe80::a014:93ff:fe1e:25f2".parse().unwrap(), 64)
            ]
        );
        let eth0 = parse_ip_links(ETH0_PORT).unwrap().remove(0);
        assert_eq!(eth0.master.as_deref(), Some("br0"));
        assert!(eth0.ipv4_addresses().is_empty());
        assert!(!parse_ip_links(ETH0_LOWERDOWN).unwrap()[0].is_running());
        assert!(parse_ip_links("Device \"br0\" does not exist.").is_err());
    }

    #[test]
    fn bridge_states() {
        let f = bridge_finding("br0", "eth0", &found(BR0_UP));
        assert!(f.ok, "{f:?}");
        assert!(bridge_finding("br0", "eth0", &found(BR0_NO_PORTS)).ok);
        let f = bridge_finding("br0", "eth0", &found(BR0_FRESH));
        assert!(
            !f.ok && f.message.starts_with("bridge br0 is down"),
            "{f:?}"
        );
        let f = bridge_finding("br0", "eth0", &found(BR0_NO_CARRIER));
        assert!(
            !f.ok && f.message.contains("no carrier") && f.message.contains("eth0"),
            "{f:?}"
        );
        let f = bridge_finding("br0", "eth0", &found(VETH_D));
        assert!(
            !f.ok && f.message.contains("is a veth device, not a bridge"),
            "{f:?}"
        );
        let f = bridge_finding("br0", "eth0", &Shown::Missing);
        assert!(!f.ok && f.message.contains("does not exist") && f.message.contains("ifup br0"));
        assert_eq!(f.severity, Severity::Error);
    }

    #[test]
    fn uplink_states() {
        let c = example();
        let n = node1(&c);
        assert!(uplink_finding(n, "br0", &found(ETH0_PORT)).ok);
        let f = uplink_finding(n, "br0", &found(ETH0_LOWERDOWN));
        assert!(!f.ok && f.message.contains("no carrier"), "{f:?}");
        let f = uplink_finding(n, "br0", &found(ETH1_UP));
        assert!(
            !f.ok
                && f.message
                    .contains("eth0 is not a port of br0 (master: none)"),
            "{f:?}"
        );
        // An uplink that still carries the LAN address (the classic
        // half-migrated setup) is flagged.
        let with_addr = ETH0_PORT.replace(
            r#""addr_info":["#,
            r#""addr_info":[{"family":"inet","local":"10.1.0.5","prefixlen":24},"#,
        );
        let f = uplink_finding(n, "br0", &found(&with_addr));
        assert!(
            !f.ok && f.severity == Severity::Warning && f.message.contains("carries 10.1.0.5/24"),
            "{f:?}"
        );
        let f = lan_address_finding(n, "br0", &found(BR0_FRESH), &found(&with_addr));
        assert!(
            !f.ok && f.message.contains("on the uplink eth0 instead"),
            "{f:?}"
        );
    }

    #[test]
    fn lan_address_states() {
        let c = example();
        let n = node1(&c);
        let up = found(ETH0_PORT);
        assert!(lan_address_finding(n, "br0", &found(BR0_UP), &up).ok);
        let f = lan_address_finding(n, "br0", &found(BR0_FRESH), &up);
        assert!(
            !f.ok && f.message.starts_with("10.1.0.5/24 is not on br0"),
            "{f:?}"
        );
        let wrong = BR0_UP.replace(r#""prefixlen":24"#, r#""prefixlen":16"#);
        let f = lan_address_finding(n, "br0", &found(&wrong), &up);
        assert!(
            !f.ok
                && f.message
                    .contains("as /16 but cluster.toml says lan_prefix 24"),
            "{f:?}"
        );
        // node2 has no lan_address: nothing to fail.
        let f = lan_address_finding(c.node("node2").unwrap(), "br0", &Shown::Missing, &up);
        assert!(f.ok && f.message.contains("no lan_address"), "{f:?}");
    }

    #[test]
    fn peer_link_states() {
        let c = example();
        let n = node1(&c);
        assert!(peer_link_finding(&c, n, &found(ETH1_UP)).ok);
        let f = peer_link_finding(&c, n, &found(ETH1_DOWN));
        assert!(!f.ok && f.message.starts_with("eth1 is down"), "{f:?}");
        let f = peer_link_finding(&c, n, &found(ETH1_BARE));
        assert!(
            !f.ok
                && f.message
                    .contains("10.0.254.1/30 is not on eth1 (it has no IPv4 address)"),
            "{f:?}"
        );
        let f = peer_link_finding(&c, c.node("node2").unwrap(), &found(ETH1_UP));
        assert!(
            !f.ok
                && f.message
                    .contains("10.0.254.2/30 is not on eth1 (it has 10.0.254.1/30)"),
            "{f:?}"
        );
        let wrong = ETH1_UP.replacen(r#""prefixlen":30"#, r#""prefixlen":24"#, 1);
        let f = peer_link_finding(&c, n, &found(&wrong));
        assert!(
            !f.ok
                && f.message
                    .contains("as /24 but cluster.toml says peer_prefix 30"),
            "{f:?}"
        );
        let f = peer_link_finding(&c, n, &Shown::Missing);
        assert!(!f.ok && f.message.contains("cabled to node2"), "{f:?}");
    }

    #[test]
    fn hosts_entries() {
        let c = example();
        let n2 = c.node("node2").unwrap();
        let good =
            parse_hosts("127.0.0.1 localhost\n10.0.254.1 node1\n10.0.254.2 node2 node2.erp\n");
        assert!(hosts_finding(n2, &good).ok);
        let f = hosts_finding(n2, &parse_hosts("127.0.0.1 localhost\n10.0.254.1 node1\n"));
        assert!(
            !f.ok && f.check == "hosts:node2" && f.message.contains("add `10.0.254.2 node2`"),
            "{f:?}"
        );
        // Debian's installer line shadows the peer-link address.
        let f = hosts_finding(
            n2,
            &parse_hosts("127.0.1.1 node2.erp node2\n10.0.254.2 node2\n"),
        );
        assert!(
            !f.ok && f.message.contains("resolves node2 to 127.0.1.1"),
            "{f:?}"
        );
        assert!(
            f.message.contains("put `10.0.254.2 node2` above") && f.message.contains("installer"),
            "{f:?}"
        );
        // The LAN address alone is not what DRBD and ssh should use.
        let f = hosts_finding(n2, &parse_hosts("10.1.0.6 node2\n"));
        assert!(
            !f.ok && f.message.contains("add `10.0.254.2 node2`"),
            "{f:?}"
        );
    }

    #[test]
    fn ss_output_is_parsed() {
        let l = parse_ss_listeners(SS_P);
        assert_eq!(
            l,
            vec![
                Listener {
                    address: "10.0.254.1".into(),
                    port: 22,
                    process: Some("python3 (pid 28557)".into())
                },
                Listener {
                    address: "0.0.0.0".into(),
                    port: 7789,
                    process: Some("python3 (pid 28557)".into())
                },
            ]
        );
        assert!(parse_ss_listeners(SS_NO_P)
            .iter()
            .all(|l| l.process.is_none()));
        let v6 = parse_ss_listeners(SS_P_V6);
        assert_eq!(v6[1].address, "*");
        assert_eq!(v6[1].port, 2222);
        let bracketed = parse_ss_listeners(
            "LISTEN 0 4096 [::]:22 [::]:*\nLISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:*\ngarbage\n",
        );
        assert_eq!(bracketed[0].address, "::");
        assert_eq!(bracketed[0].display_address(), "[::]:22");
        assert_eq!(bracketed[1].address, "127.0.0.53");
    }

    #[test]
    fn drbd_port_owners() {
        let c = example();
        let n = node1(&c);
        let taken = parse_ss_listeners(&SS_P.replace(":7789", ":7788"));
        let f = port_finding(n, "store1", "r0", 7788, &taken);
        assert!(
            !f.ok
                && f.message
                    .contains("taken by python3 (pid 28557) on 0.0.0.0:7788"),
            "{f:?}"
        );
        // Kernel sockets (no owner) on the peer-link address are DRBD's own.
        let drbd = parse_ss_listeners("LISTEN 0 5 10.0.254.1:7788 0.0.0.0:*\n");
        assert!(port_finding(n, "store1", "r0", 7788, &drbd).ok);
        let elsewhere = parse_ss_listeners("LISTEN 0 5 10.1.0.5:7788 0.0.0.0:*\n");
        let f = port_finding(n, "store1", "r0", 7788, &elsewhere);
        assert!(
            !f.ok && f.severity == Severity::Warning && f.message.contains("/etc/drbd.d/r0.res"),
            "{f:?}"
        );
        let f = port_finding(n, "store1", "r0", 7788, &parse_ss_listeners(SS_P));
        assert!(f.ok && f.message.contains("free"), "{f:?}");
    }

    fn healthy_runner() -> RecordingRunner {
        let r = RecordingRunner::new();
        r.answer("ip -j -d addr show dev br0", 0, BR0_UP, "");
        r.answer("ip -j addr show dev eth0", 0, ETH0_PORT, "");
        r.answer("ip -j addr show dev eth1", 0, ETH1_UP, "");
        r.answer("ss -Htlnp", 0, SS_P, "");
        r
    }

    const HOSTS: &str = "127.0.0.1 localhost\n10.0.254.1 node1\n10.0.254.2 node2\n";

    #[test]
    fn healthy_node_passes_every_check() {
        let c = example();
        let r = healthy_runner();
        let probed = std::sync::Mutex::new(Vec::new());
        let probe = |a: SocketAddr, t: Duration| {
            probed.lock().unwrap().push((a, t));
            true
        };
        let f = check(&c, node1(&c), &r, HOSTS, &probe);
        let names: Vec<_> = f.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(
            names,
            [
                "bridge",
                "uplink",
                "lan-address",
                "peer-link",
                "hosts:node1",
                "hosts:node2",
                "peer-reach:link",
                "drbd-port:store1"
            ]
        );
        assert!(f.iter().all(|f| f.ok), "{f:#?}");
        assert_eq!(
            *probed.lock().unwrap(),
            vec![("10.0.254.2:22".parse().unwrap(), PEER_PROBE_TIMEOUT)]
        );
    }

    #[test]
    fn broken_node_fails_with_fixes() {
        let c = example();
        let r = RecordingRunner::new();
        r.answer(
            "ip -j -d addr show dev br0",
            1,
            "",
            "Device \"br0\" does not exist.\n",
        );
        r.answer("ip -j addr show dev eth0", 1, "", NO_DEVICE);
        r.answer("ip -j addr show dev eth1", 0, ETH1_DOWN, "");
        // ss is not scripted: the runner fails as if ss were missing.
        let f = check(&c, node1(&c), &r, "", &|_, _| false);
        assert!(f.iter().all(|f| !f.ok), "{f:#?}");
        assert!(
            f.iter()
                .any(|f| f.check == "drbd-ports"
                    && f.message.starts_with("cannot list TCP listeners"))
        );
        assert!(f
            .iter()
            .any(|f| f.check == "peer-reach:link" && f.message.contains("within 3 s")));
    }

    #[test]
    fn unparsable_ip_output_is_a_failed_check_not_a_panic() {
        let c = example();
        let r = healthy_runner();
        r.answer("ip -j -d addr show dev br0", 0, "[{\"ifname\": ", "");
        let f = check(&c, node1(&c), &r, HOSTS, &|_, _| true);
        assert!(
            !f[0].ok
                && f[0]
                    .message
                    .contains("cannot read the output of `ip -j -d addr show dev br0`"),
            "{:?}",
            f[0]
        );
    }

    #[test]
    fn peer_lan_address_is_probed_in_parallel() {
        let text = crate::net::tests::EXAMPLE.replace(
            "address = \"10.0.254.2\"",
            "address = \"10.0.254.2\"\nlan_address = \"10.1.0.6\"",
        );
        let c = Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
        // Parallel means both probes are in flight at once: each waits (bounded) for
        // the other to start. Sequential probes would each see only themselves.
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let waits_for_the_other = |_: SocketAddr, _: Duration| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let give_up = Instant::now() + Duration::from_secs(20);
            while most.load(Ordering::SeqCst) < 2 && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
            false
        };
        let f = reach_findings(
            &c,
            node1(&c),
            &waits_for_the_other,
            Duration::from_millis(300),
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "the probes ran one after the other"
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].check, "peer-reach:lan");
        assert!(
            !f[1].ok && f[1].message.contains("10.1.0.6:22"),
            "{:?}",
            f[1]
        );
    }

    #[test]
    fn tcp_probe_on_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        assert!(tcp_probe(open, Duration::from_secs(1)));
        drop(listener);
        // Nothing listens any more: refused at once.
        assert!(!tcp_probe(open, Duration::from_secs(1)));
    }

    #[test]
    fn tcp_probe_gives_up_within_its_bound() {
        // A listener that never accepts: once its queue is full the kernel
        // drops further SYNs, which is what an unreachable peer looks like.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let mut silent = false;
        for _ in 0..4096 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => held.push(s),
                Err(_) => {
                    silent = true;
                    break;
                }
            }
        }
        assert!(silent, "the accept queue never filled");
        let start = Instant::now();
        assert!(!tcp_probe(addr, Duration::from_millis(300)));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
