//! The node's network as cluster.toml describes it (DESIGN.md §1): the LAN
//! bridge (`br0`, its uplink, the node's `lan_address`) and the point-to-point
//! peer link that DRBD and ssh use.
//!
//! [`render`] turns the configuration into ifupdown or systemd-networkd files
//! (pure: text in, text out). [`check`] compares the live host with the
//! configuration: links and addresses through `ip -j`, listeners through
//! `ss`, names through /etc/hosts, the peer through a bounded TCP connect.
//!
//! This module never changes the host's network: it neither adds addresses
//! or routes nor brings links up or down. Installing rendered files and
//! applying them is the administrator's decision.

pub mod check;
pub mod render;

pub use check::{check, tcp_probe, Finding, Severity, PEER_PROBE_TIMEOUT};
pub use render::{render, Format, Rendered, RenderedFile};

use thiserror::Error;

/// Errors of this module. Live problems are [`Finding`]s, not errors: an
/// error means ctmgr could not do its job at all.
#[derive(Debug, Error)]
pub enum NetError {
    /// The node passed in is not one of the configuration's nodes.
    #[error("node {node:?} is not defined in {}", path.display())]
    UnknownNode {
        node: String,
        path: std::path::PathBuf,
    },
    /// Two roles that need distinct interfaces were given the same one.
    #[error(
        "node {node:?}: peer_interface {interface:?} is also the bridge name (network.bridge); the peer link needs its own interface"
    )]
    InterfaceClash { node: String, interface: String },
    /// `ip -j` printed something that is not its JSON link list.
    #[error("cannot read the output of `{command}` as iproute2 JSON")]
    IpJson {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::config::Config;
    use std::path::Path;

    /// DESIGN.md §2's example, as far as the network is concerned.
    pub(crate) const EXAMPLE: &str = r#"
[cluster]
name = "erp"

[[node]]
name = "node1"
address = "10.0.254.1"
ssh = "root@10.0.254.1"
lan_address = "10.1.0.5"

[[node]]
name = "node2"
address = "10.0.254.2"

[[store]]
name = "store1"
home = "node1"
mountpoint = "/srv/store1"
device = "/dev/drbd0"
mount_options = "noatime"
drbd_resource = "r0"
backing_disk = "/dev/sdb1"
drbd_port = 7788

[network]
bridge = "br0"
gateway = "10.1.0.1"
"#;

    pub(crate) fn example() -> Config {
        match Config::parse(EXAMPLE, Path::new("test.toml")) {
            Ok(c) => c,
            Err(e) => panic!("example config: {e}"),
        }
    }
}
