//! Bringing a lab up, step by step. Each step records in state.json what teardown must undo
//! before it does it, so a lab that fails half-way is torn down completely.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

use super::files;
use super::node::{bind_mounts, Node};
use super::state::{Layout, State};
use super::{Bins, Lab};
use crate::run::{self, host_ok};

const T_SHORT: Duration = Duration::from_secs(30);
const T_LONG: Duration = Duration::from_secs(120);

pub(super) fn bring_up(lab: &Lab, mut st: State, bins: &Bins) -> Result<()> {
    let layout = lab.layout();
    private_bind(&layout.dir)?;
    make_dirs(layout, st.nodes)?;
    link_bins(layout, bins)?;
    if st.drbd_version != "9" {
        write(&layout.sim_dir().join("version"), &st.drbd_version)?;
    }

    // Stores: the image and its loop device, recorded before anything uses them.
    let count = st.nodes; // one store per node
    let mut images = Vec::new();
    for i in 1..=count {
        let store = format!("store{i}");
        let image = layout.image(&store);
        let f =
            fs::File::create(&image).with_context(|| format!("creating {}", image.display()))?;
        f.set_len(st.image_mib << 20)
            .with_context(|| format!("sizing {}", image.display()))?;
        drop(f);
        let img = image.to_string_lossy().into_owned();
        host_ok(&["mkfs.btrfs", "-q", "-f", "-L", &store, &img], T_LONG)?;
        let dev = host_ok(&["losetup", "--find", "--show", &img], T_SHORT)?
            .stdout
            .trim()
            .to_string();
        anyhow::ensure!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        images.push((img, dev));
        st.stores = files::plan_stores(st.nodes, &images);
        layout.write_state(&st)?;
    }

    write_node_files(layout, &st)?;
    make_keys(layout, st.nodes)?;

    // The LAN: switch and gateway.
    let lan = layout.ns_file("lan", "net");
    fs::write(&lan, "")?;
    let lan_arg = format!("--net={}", lan.display());
    host_ok(&["unshare", &lan_arg, "true"], T_SHORT)?;
    let gw = format!("{}/{}", files::GATEWAY, files::LAN_PREFIX);
    for argv in [
        vec!["ip", "link", "set", "lo", "up"],
        vec![
            "ip",
            "link",
            "add",
            "lan",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
        vec!["ip", "addr", "add", &gw, "dev", "lan"],
        vec!["ip", "link", "set", "lan", "up"],
        // The peer link's cable: no address, not joined to the LAN.
        vec![
            "ip",
            "link",
            "add",
            "wire",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
        vec!["ip", "link", "set", "wire", "up"],
    ] {
        lab.lan_cmd(&argv).check()?;
    }

    for node in lab.nodes() {
        make_node(layout, node)?;
        lan_uplink(lab, node)?;
    }
    if st.nodes == 2 {
        peer_link(lab)?;
        // The real drbdadm must accept the config the stand-in reads (for 8.4 its
        // 8.4 front end, which a real 8.4 kernel makes drbdadm dispatch to).
        let parser = if st.drbd_version == "8.4" {
            ["/usr/lib/drbd/drbdadm-84", "/lib/drbd/drbdadm-84"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("/usr/sbin/drbdadm")
        } else {
            "/usr/sbin/drbdadm"
        };
        lab.node(1)
            .cmd_timeout(&[parser, "-c", "/etc/drbd.conf", "dump", "all"], T_SHORT)
            .check()
            .context("the lab's DRBD config does not parse")?;
        for node in lab.nodes() {
            node.start_sshd()?;
        }
        let (n1, n2) = (lab.node(1), lab.node(2));
        n1.wait_ssh(&files::peer_addr(2), T_SHORT)?;
        n2.wait_ssh(&files::peer_addr(1), T_SHORT)?;

        for node in lab.nodes() {
            for store in &st.stores {
                if let Some((res, _, _)) = &store.drbd {
                    node.cmd(&["drbdadm", "create-md", res]).check()?;
                }
            }
            node.cmd(&["drbdadm", "up", "all"]).check()?;
        }
        for store in &st.stores {
            if let Some((res, _, _)) = &store.drbd {
                lab.node(store.home)
                    .cmd(&["drbdadm", "primary", "--force", res])
                    .check()?;
            }
        }
        wait_in_sync(lab)?;
    }

    for store in &st.stores {
        let node = lab.node(store.home);
        let dev = store
            .loop_dev
            .as_deref()
            .context("store without loop device")?;
        let mp = format!("/srv/{}", store.name);
        node.cmd(&["mount", "-t", "btrfs", "-o", "noatime", dev, &mp])
            .check()?;
        node.cmd(&["mkdir", "-p", &format!("{mp}/containers")])
            .check()?;
    }
    Ok(())
}

/// Waits (bounded) until the initial resync is done: both disks UpToDate for
/// every resource, as an operator would before putting the pair in service.
fn wait_in_sync(lab: &Lab) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = lab
            .node(1)
            .cmd_timeout(&["drbdadm", "status", "all"], T_SHORT);
        let text = out.stdout.clone();
        let busy = [
            "Inconsistent",
            "SyncSource",
            "SyncTarget",
            "Connecting",
            "WFConnection",
        ]
        .iter()
        .any(|w| text.contains(w));
        if out.success() && !busy {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("DRBD did not finish its initial resync within 30 s:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Bind the lab directory on itself, private: namespace files can be bind-mounted in it and
/// nothing propagates to or from the machine's other mounts.
fn private_bind(dir: &Path) -> Result<()> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("bind-mounting {} on itself", dir.display()))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .with_context(|| format!("making {} private", dir.display()))?;
    Ok(())
}

fn make_dirs(layout: &Layout, nodes: usize) -> Result<()> {
    let mut dirs = vec![layout.dir.join("ns"), layout.bin_dir(), layout.sim_dir()];
    for n in 1..=nodes {
        let d = layout.node_dir(n);
        for sub in [
            "etc-ctmgr",
            "drbd.d",
            "var-lib-ctmgr",
            "run-ctmgr",
            "srv/store1",
            "srv/store2",
            "cgtmp",
            "priv",
        ] {
            dirs.push(d.join(sub));
        }
    }
    for d in dirs {
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    for n in 1..=nodes {
        let ssh = layout.node_dir(n).join("ssh");
        fs::create_dir_all(&ssh)?;
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn link_bins(layout: &Layout, bins: &Bins) -> Result<()> {
    let bin = layout.bin_dir();
    for (name, target) in [
        ("ctmgr", &bins.ctmgr),
        ("ctmgr-guard", &bins.guard),
        ("ctmgr-drbd-sim", &bins.drbd_sim),
        ("drbdadm", &bins.drbd_sim),
        ("drbdsetup", &bins.drbd_sim),
    ] {
        symlink(target, bin.join(name))
            .with_context(|| format!("linking {name} to {}", target.display()))?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_node_files(layout: &Layout, st: &State) -> Result<()> {
    for n in 1..=st.nodes {
        let d = layout.node_dir(n);
        write(&d.join("hosts"), &files::hosts(st.nodes))?;
        write(
            &d.join("etc-ctmgr/cluster.toml"),
            &files::cluster_toml(st.nodes, &st.stores),
        )?;
        write(&d.join("drbd.conf"), &files::drbd_conf())?;
        for store in &st.stores {
            if let Some((name, text)) = files::drbd_res(store, st.nodes, &st.drbd_version) {
                write(&d.join("drbd.d").join(name), &text)?;
            }
        }
        write(
            &d.join("sshd_config"),
            &files::sshd_config(&d.to_string_lossy()),
        )?;
        write(&d.join("ssh/config"), &files::ssh_client_config())?;
    }
    Ok(())
}

/// Host keys and root's client key per node; every node trusts every node.
fn make_keys(layout: &Layout, nodes: usize) -> Result<()> {
    let mut known = String::new();
    let mut authorized = String::new();
    for n in 1..=nodes {
        let d = layout.node_dir(n);
        let host_key = d.join("ssh_host_ed25519_key");
        let client_key = d.join("ssh/id_ed25519");
        for (key, comment) in [
            (&host_key, format!("node{n}")),
            (&client_key, format!("root@node{n}")),
        ] {
            let k = key.to_string_lossy();
            host_ok(
                &[
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    &comment,
                    "-f",
                    &k,
                ],
                T_SHORT,
            )?;
        }
        let host_pub = fs::read_to_string(host_key.with_extension("pub"))?;
        known.push_str(&files::known_hosts_line(n, &host_pub));
        authorized.push_str(&fs::read_to_string(client_key.with_extension("pub"))?);
    }
    for n in 1..=nodes {
        let ssh = layout.node_dir(n).join("ssh");
        write(&ssh.join("known_hosts"), &known)?;
        write(&ssh.join("authorized_keys"), &authorized)?;
        for f in ["config", "known_hosts", "authorized_keys"] {
            fs::set_permissions(ssh.join(f), fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Creates the node's namespaces and its view of the file system.
fn make_node(layout: &Layout, node: &Node) -> Result<()> {
    let mut args = vec!["unshare".to_string()];
    for (kind, file) in node.ns_files() {
        fs::write(file, "")?;
        let flag = if kind == "mnt" { "mount" } else { kind };
        args.push(format!("--{flag}={}", file.display()));
    }
    args.extend(["--propagation".into(), "private".into(), "true".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    host_ok(&argv, T_SHORT)
        .with_context(|| format!("creating the namespaces of {}", node.name()))?;

    let d = node.dir();
    let p = |rel: &str| d.join(rel).to_string_lossy().into_owned();
    let (cg, privd) = (p("cgtmp"), p("priv"));
    let in_node = |argv: &[&str]| -> Result<()> {
        node.cmd_timeout(argv, T_SHORT)
            .check()
            .with_context(|| format!("setting up {}", node.name()))?;
        Ok(())
    };
    in_node(&["hostname", node.name()])?;
    // A sysfs of the node's own network namespace (as `ip netns exec` does), keeping the
    // machine's cgroup mounts for LXC.
    in_node(&["mount", "--rbind", "/sys/fs/cgroup", &cg])?;
    in_node(&["umount", "-l", "/sys"])?;
    in_node(&["mount", "-t", "sysfs", "sysfs", "/sys"])?;
    in_node(&["mount", "--move", &cg, "/sys/fs/cgroup"])?;
    // Node-private scratch space: overlay upper dirs and the node's /run.
    in_node(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=256m,mode=0700",
        "ctmgr-lab",
        &privd,
    ])?;
    for (target, key) in [("/etc", "etc"), ("/var/lib", "varlib")] {
        let (u, w) = (format!("{privd}/{key}/u"), format!("{privd}/{key}/w"));
        in_node(&["mkdir", "-p", &u, &w])?;
        let o = format!("lowerdir={target},upperdir={u},workdir={w}");
        in_node(&["mount", "-t", "overlay", "-o", &o, "ctmgr-lab", target])?;
    }
    // root's home starts empty: the machine's dotfiles (PATH, aliases) stay out of the nodes.
    in_node(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=16m,mode=0700",
        "ctmgr-lab-root",
        "/root",
    ])?;
    // Mount points, created in the overlays (never on the machine's own /etc or /var/lib).
    in_node(&[
        "mkdir",
        "-p",
        "/etc/ctmgr",
        "/etc/drbd.d",
        "/var/lib/ctmgr",
        "/var/lib/drbd-sim",
        "/root/.ssh",
    ])?;
    in_node(&["touch", "/etc/drbd.conf", "/etc/hosts"])?;
    for (inside, src) in bind_mounts() {
        let src = match src.split_once(':') {
            Some(("node", rel)) => p(rel),
            Some((_, rel)) => layout.dir.join(rel).to_string_lossy().into_owned(),
            None => unreachable!("bind sources have a prefix"),
        };
        in_node(&["mount", "--bind", &src, inside])?;
    }
    // The node's own /run: sshd's privilege separation dir, /run/ctmgr (locks), LXC's
    // locks, and the lab directory at its usual path.
    let run = format!("{privd}/run");
    let lab_inside = format!("{run}/ctmgr-lab/{}", layout.name);
    in_node(&["mkdir", "-p", &run])?;
    in_node(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=64m,mode=0755",
        "ctmgr-lab-run",
        &run,
    ])?;
    in_node(&[
        "mkdir",
        "-p",
        &format!("{run}/sshd"),
        &format!("{run}/ctmgr"),
        &format!("{run}/lock"),
        &format!("{run}/lxc"),
        &format!("{run}/mount"),
        &lab_inside,
    ])?;
    in_node(&["mount", "--bind", &p("run-ctmgr"), &format!("{run}/ctmgr")])?;
    in_node(&[
        "mount",
        "--bind",
        &layout.dir.to_string_lossy(),
        &lab_inside,
    ])?;
    // -n: there is no /run/mount/utab to update until the move is done.
    in_node(&["mount", "-n", "--move", &run, "/run"])?;
    in_node(&["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// br0 in the node, its uplink eth0 plugged into the LAN bridge, default route to the gateway.
fn lan_uplink(lab: &Lab, node: &Node) -> Result<()> {
    let n = node.index();
    let port = format!("n{n}");
    let lan = lab
        .layout()
        .ns_file("lan", "net")
        .to_string_lossy()
        .into_owned();
    let addr = format!("{}/{}", files::lan_addr(n), files::LAN_PREFIX);
    for argv in [
        vec![
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", &port,
        ],
        vec!["ip", "link", "set", &port, "netns", &lan],
        vec![
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
        vec!["ip", "link", "set", "eth0", "master", "br0"],
        vec!["ip", "link", "set", "eth0", "up"],
        vec!["ip", "addr", "add", &addr, "dev", "br0"],
        vec!["ip", "link", "set", "br0", "up"],
    ] {
        node.net_cmd(&argv, T_SHORT).check()?;
    }
    for argv in [
        vec!["ip", "link", "set", &port, "master", "lan"],
        vec!["ip", "link", "set", &port, "up"],
    ] {
        lab.lan_cmd(&argv).check()?;
    }
    node.net_cmd(
        &["ip", "route", "add", "default", "via", files::GATEWAY],
        T_SHORT,
    )
    .check()?;
    let ok = run::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        node.net_cmd(&["ping", "-c", "1", "-W", "1", files::GATEWAY], T_SHORT)
            .success()
    });
    anyhow::ensure!(ok, "{} cannot ping the LAN gateway", node.name());
    Ok(())
}

/// The peer link: eth1 in each node, cabled through the `wire` bridge of the LAN namespace
/// (ports p1, p2) so that cutting it there leaves both eth1 administratively up with no
/// carrier, as a pulled cable does. Its names never appear in the machine's own namespace.
fn peer_link(lab: &Lab) -> Result<()> {
    let lan = lab
        .layout()
        .ns_file("lan", "net")
        .to_string_lossy()
        .into_owned();
    for node in lab.nodes() {
        let n = node.index();
        let port = format!("p{n}");
        let addr = format!("{}/{}", files::peer_addr(n), files::PEER_PREFIX);
        for argv in [
            vec![
                "ip", "link", "add", "eth1", "type", "veth", "peer", "name", &port,
            ],
            vec!["ip", "link", "set", &port, "netns", &lan],
            vec!["ip", "addr", "add", &addr, "dev", "eth1"],
            vec!["ip", "link", "set", "eth1", "up"],
        ] {
            node.net_cmd(&argv, T_SHORT).check()?;
        }
        for argv in [
            vec!["ip", "link", "set", &port, "master", "wire"],
            vec!["ip", "link", "set", &port, "up"],
        ] {
            lab.lan_cmd(&argv).check()?;
        }
    }
    // Bounded wait for the link to carry traffic.
    let n1 = lab.node(1);
    let ok = run::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        n1.net_cmd(
            &["ping", "-c", "1", "-W", "1", &files::peer_addr(2)],
            T_SHORT,
        )
        .success()
    });
    anyhow::ensure!(ok, "node1 cannot ping node2 over the new peer link");
    Ok(())
}
