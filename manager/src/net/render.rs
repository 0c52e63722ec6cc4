//! Renders the bridge and peer-link configuration of one node, as ifupdown
//! (`/etc/network/interfaces.d/ctmgr`, the runbook's format) or as
//! systemd-networkd units (`/etc/systemd/network/NN-ctmgr-*.{netdev,network}`).
//!
//! Pure: reads only the [`Config`], returns text. What the configuration
//! does not say (a node without `lan_address`) is left out, with a comment in
//! the file and a warning in [`Rendered::warnings`]; nothing is guessed.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::NetError;
use crate::config::{Config, Node};

/// Where ifupdown's rendered file goes.
pub const INTERFACES_PATH: &str = "/etc/network/interfaces.d/ctmgr";
/// Where systemd-networkd's rendered files go.
pub const NETWORKD_DIR: &str = "/etc/systemd/network";

/// Which network manager to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Debian's ifupdown (`/etc/network/interfaces.d/`), with bridge-utils.
    Interfaces,
    /// systemd-networkd `.netdev` and `.network` units.
    Networkd,
}

/// One file to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedFile {
    /// Where the file belongs on the node.
    pub path: PathBuf,
    pub content: String,
}

/// The files of one node, plus what could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub files: Vec<RenderedFile>,
    /// Parts left out for lack of configuration, and what to set.
    pub warnings: Vec<String>,
}

/// Renders `node`'s network files in `format`.
pub fn render(config: &Config, node: &Node, format: Format) -> Result<Rendered, NetError> {
    if config.node(&node.name).is_none() {
        return Err(NetError::UnknownNode {
            node: node.name.clone(),
            path: config.path.clone(),
        });
    }
    let bridge = config.network.bridge.as_str();
    if node.peer_interface == bridge {
        return Err(NetError::InterfaceClash {
            node: node.name.clone(),
            interface: node.peer_interface.clone(),
        });
    }
    let plan = Plan::new(config, node);
    let files = match format {
        Format::Interfaces => vec![interfaces(&plan)],
        Format::Networkd => networkd(&plan),
    };
    Ok(Rendered {
        files,
        warnings: plan.warnings(),
    })
}

/// What both formats need, with the gaps found once.
struct Plan<'a> {
    cluster: &'a str,
    source: String,
    node: &'a Node,
    peer: Option<&'a Node>,
    bridge: &'a str,
    gateway: Option<std::net::Ipv4Addr>,
}

impl<'a> Plan<'a> {
    fn new(config: &'a Config, node: &'a Node) -> Plan<'a> {
        Plan {
            cluster: &config.cluster.name,
            source: config.path.display().to_string(),
            node,
            peer: config.peer_of(&node.name),
            bridge: &config.network.bridge,
            gateway: config.gateway_for(node),
        }
    }

    fn no_lan_address(&self) -> String {
        format!(
            "node {:?} has no lan_address in {}: {} gets no address (containers still reach the LAN through it); set lan_address (and lan_prefix) to give the node a second path",
            self.node.name, self.source, self.bridge
        )
    }

    fn unused_gateway(&self, gw: std::net::Ipv4Addr) -> String {
        format!(
            "gateway {gw} is not rendered for node {:?}: a default route needs an address on {}; set lan_address",
            self.node.name, self.bridge
        )
    }

    fn no_gateway(&self) -> String {
        format!(
            "no gateway for node {:?}: no default route via {} is rendered; set network.gateway or the node's gateway",
            self.node.name, self.bridge
        )
    }

    fn warnings(&self) -> Vec<String> {
        match (self.node.lan_address, self.gateway) {
            (None, Some(gw)) => vec![self.no_lan_address(), self.unused_gateway(gw)],
            (None, None) => vec![self.no_lan_address()],
            (Some(_), None) => vec![self.no_gateway()],
            (Some(_), Some(_)) => Vec::new(),
        }
    }

    fn header(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# Written by `ctmgr net render` for node {} of cluster {} from {}.",
            self.node.name, self.cluster, self.source
        );
        let _ = writeln!(
            out,
            "# Change cluster.toml and render again rather than editing this file."
        );
    }

    fn peer_comment(&self) -> String {
        match self.peer {
            Some(p) => format!(
                "Peer link to {} ({}): DRBD replication and ssh.",
                p.name, p.address
            ),
            None => {
                "Peer link (no peer node in cluster.toml yet): DRBD replication and ssh.".to_owned()
            }
        }
    }

    /// Comment lines (without `# `) for the gaps, placed in the files.
    fn gap_comments(&self) -> Vec<String> {
        self.warnings()
    }
}

fn comment(out: &mut String, text: &str) {
    let _ = writeln!(out, "# {text}");
}

fn interfaces(p: &Plan<'_>) -> RenderedFile {
    let n = p.node;
    let mut s = String::new();
    p.header(&mut s);
    comment(
        &mut s,
        "Needs bridge-utils; /etc/network/interfaces must `source /etc/network/interfaces.d/*`",
    );
    let _ = writeln!(
        s,
        "# and must not configure {} or {} itself.",
        n.uplink, n.peer_interface
    );
    s.push('\n');

    let _ = writeln!(
        s,
        "# LAN uplink: a port of {}, no address of its own.",
        p.bridge
    );
    let _ = writeln!(s, "auto {}", n.uplink);
    let _ = writeln!(s, "iface {} inet manual", n.uplink);
    s.push('\n');

    let _ = writeln!(
        s,
        "# LAN bridge: the containers' veth interfaces join it; the node's LAN address lives here."
    );
    for gap in p.gap_comments() {
        comment(&mut s, &gap);
    }
    let _ = writeln!(s, "auto {}", p.bridge);
    match n.lan_address {
        Some(addr) => {
            let _ = writeln!(s, "iface {} inet static", p.bridge);
            let _ = writeln!(s, "    address {addr}/{}", n.lan_prefix);
            if let Some(gw) = p.gateway {
                let _ = writeln!(s, "    gateway {gw}");
            }
        }
        None => {
            let _ = writeln!(s, "iface {} inet manual", p.bridge);
        }
    }
    let _ = writeln!(s, "    bridge_ports {}", n.uplink);
    let _ = writeln!(s, "    bridge_stp off");
    let _ = writeln!(s, "    bridge_fd 0");
    s.push('\n');

    comment(&mut s, &p.peer_comment());
    let _ = writeln!(s, "auto {}", n.peer_interface);
    let _ = writeln!(s, "iface {} inet static", n.peer_interface);
    let _ = writeln!(s, "    address {}/{}", n.address, n.peer_prefix);

    RenderedFile {
        path: PathBuf::from(INTERFACES_PATH),
        content: s,
    }
}

fn networkd(p: &Plan<'_>) -> Vec<RenderedFile> {
    let n = p.node;
    let dir = PathBuf::from(NETWORKD_DIR);
    let file = |name: String, body: String| {
        let mut content = String::new();
        p.header(&mut content);
        content.push_str(&body);
        RenderedFile {
            path: dir.join(name),
            content,
        }
    };

    let netdev = format!(
        "# LAN bridge: the containers' veth interfaces join it.\n\
         [NetDev]\nName={br}\nKind=bridge\n\n[Bridge]\nSTP=no\nForwardDelaySec=0\n",
        br = p.bridge
    );

    let uplink = format!(
        "# LAN uplink: a port of {br}, no address of its own.\n\
         [Match]\nName={up}\n\n[Network]\nBridge={br}\n",
        br = p.bridge,
        up = n.uplink
    );

    let mut bridge = String::from("# The node's LAN address lives on the bridge.\n");
    for gap in p.gap_comments() {
        comment(&mut bridge, &gap);
    }
    let _ = write!(bridge, "[Match]\nName={}\n\n[Network]\n", p.bridge);
    match n.lan_address {
        Some(addr) => {
            let _ = writeln!(bridge, "Address={addr}/{}", n.lan_prefix);
            if let Some(gw) = p.gateway {
                let _ = writeln!(bridge, "Gateway={gw}");
            }
        }
        None => {
            // Still managed, so networkd brings the bridge up for the containers.
            let _ = writeln!(bridge, "LinkLocalAddressing=no");
        }
    }
    let _ = writeln!(bridge, "ConfigureWithoutCarrier=yes");

    let peer = format!(
        "# {}\n[Match]\nName={}\n\n[Network]\nAddress={}/{}\n",
        p.peer_comment(),
        n.peer_interface,
        n.address,
        n.peer_prefix
    );

    vec![
        file(format!("10-ctmgr-{}.netdev", p.bridge), netdev),
        file(format!("20-ctmgr-{}.network", n.uplink), uplink),
        file(format!("30-ctmgr-{}.network", p.bridge), bridge),
        file(format!("40-ctmgr-{}.network", n.peer_interface), peer),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::net::tests::{example, EXAMPLE};

    fn node<'a>(c: &'a Config, name: &str) -> &'a Node {
        c.node(name).unwrap()
    }

    #[test]
    fn interfaces_for_node1_matches_the_runbook() {
        let c = example();
        let r = render(&c, node(&c, "node1"), Format::Interfaces).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.files.len(), 1);
        assert_eq!(
            r.files[0].path,
            Path::new("/etc/network/interfaces.d/ctmgr")
        );
        assert_eq!(
            r.files[0].content,
            "\
# Written by `ctmgr net render` for node node1 of cluster erp from test.toml.
# Change cluster.toml and render again rather than editing this file.
# Needs bridge-utils; /etc/network/interfaces must `source /etc/network/interfaces.d/*`
# and must not configure eth0 or eth1 itself.

# LAN uplink: a port of br0, no address of its own.
auto eth0
iface eth0 inet manual

# LAN bridge: the containers' veth interfaces join it; the node's LAN address lives here.
auto br0
iface br0 inet static
    address 10.1.0.5/24
    gateway 10.1.0.1
    bridge_ports eth0
    bridge_stp off
    bridge_fd 0

# Peer link to node2 (10.0.254.2): DRBD replication and ssh.
auto eth1
iface eth1 inet static
    address 10.0.254.1/30
"
        );
    }

    #[test]
    fn node_without_lan_address_gets_a_bare_bridge_and_a_warning() {
        let c = example();
        let r = render(&c, node(&c, "node2"), Format::Interfaces).unwrap();
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("no lan_address"));
        assert!(r.warnings[1].contains("gateway 10.1.0.1 is not rendered"));
        let text = &r.files[0].content;
        assert!(text.contains("iface br0 inet manual\n    bridge_ports eth0\n"));
        assert!(!text.contains("gateway 10.1.0.1\n"), "{text}");
        assert!(text.contains("# node \"node2\" has no lan_address in test.toml"));
        assert!(text.contains(
            "# Peer link to node1 (10.0.254.1): DRBD replication and ssh.\nauto eth1\niface eth1 inet static\n    address 10.0.254.2/30\n"
        ));
    }

    #[test]
    fn networkd_for_node1() {
        let c = example();
        let r = render(&c, node(&c, "node1"), Format::Networkd).unwrap();
        assert!(r.warnings.is_empty());
        let paths: Vec<_> = r
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/etc/systemd/network/10-ctmgr-br0.netdev",
                "/etc/systemd/network/20-ctmgr-eth0.network",
                "/etc/systemd/network/30-ctmgr-br0.network",
                "/etc/systemd/network/40-ctmgr-eth1.network",
            ]
        );
        let header =
            "# Written by `ctmgr net render` for node node1 of cluster erp from test.toml.\n\
                      # Change cluster.toml and render again rather than editing this file.\n";
        let bodies = [
            "# LAN bridge: the containers' veth interfaces join it.\n\
             [NetDev]\nName=br0\nKind=bridge\n\n[Bridge]\nSTP=no\nForwardDelaySec=0\n",
            "# LAN uplink: a port of br0, no address of its own.\n\
             [Match]\nName=eth0\n\n[Network]\nBridge=br0\n",
            "# The node's LAN address lives on the bridge.\n\
             [Match]\nName=br0\n\n[Network]\nAddress=10.1.0.5/24\nGateway=10.1.0.1\nConfigureWithoutCarrier=yes\n",
            "# Peer link to node2 (10.0.254.2): DRBD replication and ssh.\n\
             [Match]\nName=eth1\n\n[Network]\nAddress=10.0.254.1/30\n",
        ];
        for (f, body) in r.files.iter().zip(bodies) {
            assert_eq!(f.content, format!("{header}{body}"), "{}", f.path.display());
        }
    }

    #[test]
    fn networkd_without_lan_address_keeps_the_bridge_managed() {
        let c = example();
        let r = render(&c, node(&c, "node2"), Format::Networkd).unwrap();
        assert_eq!(r.warnings.len(), 2);
        let bridge = &r.files[2].content;
        assert!(
            bridge.contains("[Network]\nLinkLocalAddressing=no\n"),
            "{bridge}"
        );
        assert!(!bridge.contains("Address="), "{bridge}");
        assert!(!bridge.contains("Gateway="), "{bridge}");
        assert!(bridge.contains("# node \"node2\" has no lan_address"));
        assert!(r.files[3].content.ends_with("Address=10.0.254.2/30\n"));
    }

    #[test]
    fn per_node_interfaces_prefixes_and_gateway_are_used() {
        let text = EXAMPLE.replace(
            "lan_address = \"10.1.0.5\"",
            "lan_address = \"192.168.7.5\"\nlan_prefix = 23\ngateway = \"192.168.6.1\"\n\
             uplink = \"enp3s0\"\npeer_interface = \"enp4s0\"\npeer_prefix = 31",
        );
        let c = Config::parse(&text, Path::new("test.toml")).unwrap();
        let r = render(&c, node(&c, "node1"), Format::Interfaces).unwrap();
        let t = &r.files[0].content;
        assert!(t.contains("iface enp3s0 inet manual"));
        assert!(t.contains(
            "address 192.168.7.5/23\n    gateway 192.168.6.1\n    bridge_ports enp3s0\n"
        ));
        assert!(t.contains("iface enp4s0 inet static\n    address 10.0.254.1/31\n"));
        let n = render(&c, node(&c, "node1"), Format::Networkd).unwrap();
        assert_eq!(
            n.files[1].path,
            Path::new("/etc/systemd/network/20-ctmgr-enp3s0.network")
        );
        assert_eq!(
            n.files[3].path,
            Path::new("/etc/systemd/network/40-ctmgr-enp4s0.network")
        );
    }

    #[test]
    fn missing_gateway_is_a_warning_not_a_guess() {
        let text = EXAMPLE.replace("gateway = \"10.1.0.1\"\n", "");
        let c = Config::parse(&text, Path::new("test.toml")).unwrap();
        let r = render(&c, node(&c, "node1"), Format::Interfaces).unwrap();
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].starts_with("no gateway for node \"node1\""));
        assert!(!r.files[0].content.contains("    gateway"));
        assert!(r.files[0].content.contains("# no gateway for node"));
    }

    #[test]
    fn peer_interface_named_like_the_bridge_is_refused() {
        let text = EXAMPLE.replace(
            "address = \"10.0.254.2\"",
            "address = \"10.0.254.2\"\npeer_interface = \"br0\"",
        );
        let c = Config::parse(&text, Path::new("test.toml")).unwrap();
        let err = render(&c, node(&c, "node2"), Format::Networkd).unwrap_err();
        assert!(matches!(err, NetError::InterfaceClash { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("peer_interface \"br0\" is also the bridge"));
    }

    #[test]
    fn a_node_of_another_config_is_refused() {
        let c = example();
        let mut stranger = node(&c, "node1").clone();
        stranger.name = "node9".into();
        let err = render(&c, &stranger, Format::Interfaces).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node \"node9\" is not defined in test.toml"
        );
    }
}
