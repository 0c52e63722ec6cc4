//! The text of the files the lab writes for its nodes: cluster.toml, DRBD config, /etc/hosts,
//! sshd and ssh client config. Pure functions over the lab's plan; no I/O here.

use std::fmt::Write;

use super::state::StoreState;

/// Peer-link address of node `n` (1-based).
pub fn peer_addr(n: usize) -> String {
    format!("10.0.254.{n}")
}

/// LAN (br0) address of node `n` (1-based).
pub fn lan_addr(n: usize) -> String {
    format!("10.1.0.{}", 4 + n)
}

pub const GATEWAY: &str = "10.1.0.1";
pub const PEER_PREFIX: u8 = 30;
pub const LAN_PREFIX: u8 = 24;

pub fn node_name(n: usize) -> String {
    format!("node{n}")
}

/// The stores of a lab with `nodes` nodes; `loops[i]` is the loop device of store i+1.
pub fn plan_stores(nodes: usize, images: &[(String, String)]) -> Vec<StoreState> {
    images
        .iter()
        .enumerate()
        .map(|(i, (image, dev))| StoreState {
            name: format!("store{}", i + 1),
            home: i + 1,
            image: image.into(),
            loop_dev: Some(dev.clone()),
            drbd: (nodes == 2).then(|| (format!("r{i}"), 7788 + i as u16, i as u32)),
        })
        .collect()
}

pub fn hosts(nodes: usize) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for n in 1..=nodes {
        let _ = writeln!(s, "{}\t{}", peer_addr(n), node_name(n));
    }
    for n in 1..=nodes {
        let _ = writeln!(s, "{}\t{}-lan", lan_addr(n), node_name(n));
    }
    let _ = writeln!(s, "{GATEWAY}\tgateway");
    s
}

pub fn cluster_toml(nodes: usize, stores: &[StoreState]) -> String {
    let mut s = String::from("# written by the ctmgr lab\n[cluster]\nname = \"lab\"\n");
    for n in 1..=nodes {
        let _ = write!(s, "\n[[node]]\nname = \"{}\"\n", node_name(n));
        if nodes == 1 {
            // No peer link in the sandbox: the node's only address is its LAN one.
            let _ = writeln!(s, "address = \"{}\"", lan_addr(n));
        } else {
            let _ = writeln!(s, "address = \"{}\"", peer_addr(n));
            let _ = writeln!(s, "ssh = \"root@{}\"", peer_addr(n));
            let _ = writeln!(s, "lan_address = \"{}\"", lan_addr(n));
        }
    }
    for st in stores {
        let dev = st.loop_dev.as_deref().unwrap_or("");
        let _ = write!(
            s,
            "\n[[store]]\nname = \"{}\"\nhome = \"{}\"\nmountpoint = \"/srv/{}\"\ndevice = \"{dev}\"\nmount_options = \"noatime\"\n",
            st.name,
            node_name(st.home),
            st.name,
        );
        if let Some((res, port, minor)) = &st.drbd {
            let _ = write!(
                s,
                "drbd_resource = \"{res}\"\nbacking_disk = \"{dev}\"\ndrbd_port = {port}\ndrbd_minor = {minor}\n"
            );
        }
    }
    let _ = write!(
        s,
        "\n[network]\nbridge = \"br0\"\ngateway = \"{GATEWAY}\"\n"
    );
    s
}

/// ctmgr inside the nodes (the lab's bin dir is bound over /usr/local/sbin).
pub const CTMGR: &str = "/usr/local/sbin/ctmgr";

pub fn drbd_conf() -> String {
    "# written by the ctmgr lab\ninclude \"drbd.d/*.res\";\n".to_string()
}

/// One .res file per replicated store; `None` for a store without DRBD.
/// Fencing as `ctmgr drbd render` writes it (safety rule 10): DRBD asks the
/// node's ctmgr before a promotion while the peer is not connected.
/// `version`: "9" (fencing in `net`) or "8.4" (in `disk`).
pub fn drbd_res(st: &StoreState, nodes: usize, version: &str) -> Option<(String, String)> {
    let (res, port, minor) = st.drbd.as_ref()?;
    let dev = st.loop_dev.as_deref().unwrap_or("");
    let mut s = format!("# written by the ctmgr lab\nresource {res} {{\n");
    let section = if version == "8.4" { "disk" } else { "net" };
    let _ = write!(
        s,
        "  {section} {{\n    fencing resource-only;\n  }}\n  handlers {{\n    fence-peer \"{CTMGR} drbd fence-peer\";\n    unfence-peer \"{CTMGR} drbd unfence-peer\";\n  }}\n"
    );
    for n in 1..=nodes {
        let _ = write!(
            s,
            "  on {} {{\n    device /dev/drbd{minor} minor {minor};\n    disk {dev};\n    address {}:{port};\n    meta-disk internal;\n  }}\n",
            node_name(n),
            peer_addr(n),
        );
    }
    s.push_str("}\n");
    Some((format!("{res}.res"), s))
}

/// sshd config for node `n`: `dir` holds its host key and pid file (same path inside the node).
pub fn sshd_config(dir: &str) -> String {
    format!(
        "# written by the ctmgr lab\n\
         Port 22\n\
         ListenAddress 0.0.0.0\n\
         HostKey {dir}/ssh_host_ed25519_key\n\
         PidFile {dir}/sshd.pid\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         AuthorizedKeysFile /root/.ssh/authorized_keys\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         MaxStartups 100\n\
         LoginGraceTime 20\n\
         LogLevel ERROR\n\
         Subsystem sftp internal-sftp\n"
    )
}

pub fn ssh_client_config() -> String {
    "# written by the ctmgr lab\n\
     Host *\n\
     \x20 User root\n\
     \x20 BatchMode yes\n\
     \x20 StrictHostKeyChecking yes\n\
     \x20 UserKnownHostsFile /root/.ssh/known_hosts\n\
     \x20 GlobalKnownHostsFile /dev/null\n\
     \x20 IdentityFile /root/.ssh/id_ed25519\n\
     \x20 IdentitiesOnly yes\n\
     \x20 ConnectTimeout 5\n\
     \x20 ServerAliveInterval 5\n\
     \x20 ServerAliveCountMax 3\n\
     \x20 LogLevel ERROR\n"
        .to_string()
}

/// known_hosts line for node `n` from its public host key (`ssh-ed25519 AAAA… comment`).
pub fn known_hosts_line(n: usize, host_pub: &str) -> String {
    let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    format!(
        "{},{},{},{}-lan {}\n",
        node_name(n),
        peer_addr(n),
        lan_addr(n),
        node_name(n),
        key.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<StoreState> {
        plan_stores(
            2,
            &[
                ("/x/store1.img".into(), "/dev/loop3".into()),
                ("/x/store2.img".into(), "/dev/loop4".into()),
            ],
        )
    }

    #[test]
    fn cluster_toml_two_nodes() {
        let t = cluster_toml(2, &two());
        assert!(t.contains("name = \"node2\"\naddress = \"10.0.254.2\"\nssh = \"root@10.0.254.2\"\nlan_address = \"10.1.0.6\""));
        assert!(t.contains("name = \"store2\"\nhome = \"node2\"\nmountpoint = \"/srv/store2\"\ndevice = \"/dev/loop4\""));
        assert!(t.contains("drbd_resource = \"r1\"\nbacking_disk = \"/dev/loop4\"\ndrbd_port = 7789\ndrbd_minor = 1"));
        assert!(t.contains("[network]\nbridge = \"br0\"\ngateway = \"10.1.0.1\""));
    }

    #[test]
    fn sandbox_store_is_not_replicated() {
        let st = plan_stores(1, &[("/x/store1.img".into(), "/dev/loop3".into())]);
        let t = cluster_toml(1, &st);
        assert!(!t.contains("drbd"));
        assert!(!t.contains("node2"));
        assert!(drbd_res(&st[0], 1, "9").is_none());
    }

    #[test]
    fn res_file() {
        let (name, text) = drbd_res(&two()[0], 2, "9").unwrap();
        assert_eq!(name, "r0.res");
        assert!(text.contains("  net {\n    fencing resource-only;\n  }\n"));
        assert!(text.contains("fence-peer \"/usr/local/sbin/ctmgr drbd fence-peer\";"));
        let (_, v84) = drbd_res(&two()[0], 2, "8.4").unwrap();
        assert!(v84.contains("  disk {\n    fencing resource-only;\n  }\n"));
        assert!(text.contains("on node2 {\n    device /dev/drbd0 minor 0;\n    disk /dev/loop3;\n    address 10.0.254.2:7788;\n    meta-disk internal;\n  }"));
    }

    #[test]
    fn known_hosts() {
        let l = known_hosts_line(2, "ssh-ed25519 AAAAC3 root@node2\n");
        assert_eq!(
            l,
            "node2,10.0.254.2,10.1.0.6,node2-lan ssh-ed25519 AAAAC3\n"
        );
    }
}
