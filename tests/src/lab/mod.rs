//! The lab: one sandbox node or two HA nodes on this machine, built from namespaces.
//!
//! Each node is a network namespace, a UTS namespace (hostname `node1`/`node2`) and a
//! persistent mount namespace: /etc and /var/lib are overlays, /root and /run fresh tmpfs,
//! and the lab paths (/etc/hosts, /etc/ctmgr, /etc/drbd.conf, /etc/drbd.d, /var/lib/ctmgr,
//! /run/ctmgr, /var/lib/drbd-sim, /usr/local/sbin, /srv, /root/.ssh) are bind mounts of files
//! in the lab directory /run/ctmgr-lab/<name>/. The nodes reach each other over a peer link
//! (eth1, 10.0.254.1/30 ↔ .2, cabled through the `wire` bridge of the LAN namespace so it can
//! be cut like a pulled cable) and over a LAN: a bridge (10.1.0.1/24, the gateway) in that
//! namespace into which each node's br0 has an uplink (eth0). Stores are loop-backed Btrfs
//! images; the DRBD stand-in (`ctmgr-drbd-sim`) is first on the nodes' PATH as
//! `drbdadm`/`drbdsetup`.
//!
//! The lab never adds addresses or routes to the machine's own network namespace, never
//! writes the machine's own /etc, and never waits without a deadline. Teardown works from the
//! lab directory alone (`Lab::down_by_name`), is idempotent and also runs on `Drop`.

mod files;
mod node;
mod setup;
pub mod state;
mod teardown;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

pub use files::{lan_addr, peer_addr, GATEWAY};
pub use node::{Node, NODE_PATH};
pub use state::{Layout, State, StoreState, LAB_ROOT};
pub use teardown::{sweep, Footprint};

use crate::run::{self, Opts, Output};

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Unique prefix, at most 8 characters `[a-z0-9]` starting with a letter.
    pub name: String,
    /// 1 (sandbox: one non-replicated store) or 2 (HA pair: two replicated stores).
    pub nodes: usize,
    /// Size of each sparse store image.
    pub image_mib: u64,
    /// DRBD version the stand-in plays: "9" (default) or "8.4".
    pub drbd_version: Option<String>,
}

impl LabSpec {
    /// A lab of `nodes` nodes with a name unique to this process and call.
    pub fn new(nodes: usize) -> LabSpec {
        LabSpec {
            name: unique_name(),
            nodes,
            image_mib: 512,
            drbd_version: None,
        }
    }

    pub fn named(name: &str, nodes: usize) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            ..LabSpec::new(nodes)
        }
    }
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec::new(2)
    }
}

/// "t" + pid and a per-process counter in base 36: at most 8 characters.
pub fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed) % (36 * 36);
    format!("t{}{}", base36(std::process::id()), base36(c))
}

fn base36(mut v: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The freshly built programs the lab puts on the nodes' PATH.
#[derive(Debug, Clone)]
pub struct Bins {
    pub ctmgr: PathBuf,
    pub guard: PathBuf,
    pub drbd_sim: PathBuf,
}

impl Bins {
    /// `$CTMGR_BIN_DIR`, else the directory of the running executable and its parent (cargo
    /// puts test binaries in target/debug/deps and bins in target/debug).
    pub fn from_env() -> Result<Bins> {
        let dirs: Vec<PathBuf> = match std::env::var_os("CTMGR_BIN_DIR") {
            Some(d) => vec![PathBuf::from(d)],
            None => {
                let exe = std::env::current_exe().context("finding the running executable")?;
                exe.ancestors()
                    .skip(1)
                    .take(2)
                    .map(Path::to_path_buf)
                    .collect()
            }
        };
        for d in &dirs {
            if let Ok(b) = Bins::in_dir(d) {
                return Ok(b);
            }
        }
        anyhow::bail!(
            "ctmgr, ctmgr-guard and ctmgr-drbd-sim not all found in {dirs:?}: \
             run cargo build --workspace --bins first"
        )
    }

    /// The three programs in `dir`, made absolute.
    pub fn in_dir(dir: &Path) -> Result<Bins> {
        let get = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            anyhow::ensure!(p.is_file(), "{} is missing", p.display());
            p.canonicalize()
                .with_context(|| format!("resolving {}", p.display()))
        };
        Ok(Bins {
            ctmgr: get("ctmgr")?,
            guard: get("ctmgr-guard")?,
            drbd_sim: get("ctmgr-drbd-sim")?,
        })
    }
}

/// A running lab. Dropping an owned lab tears it down.
#[derive(Debug)]
pub struct Lab {
    layout: Layout,
    nodes: Vec<Node>,
    /// Tear down on drop.
    owned: bool,
    done: bool,
}

impl Lab {
    /// Builds a lab. Labs left behind by dead processes are swept first. On failure what was
    /// built is torn down again.
    pub fn up(spec: LabSpec, bins: &Bins) -> Result<Lab> {
        state::check_name(&spec.name)?;
        anyhow::ensure!(
            spec.nodes == 1 || spec.nodes == 2,
            "a lab has 1 or 2 nodes, not {}",
            spec.nodes
        );
        let version = spec.drbd_version.clone().unwrap_or_else(|| "9".into());
        anyhow::ensure!(
            version == "9" || version == "8.4",
            "DRBD version {version:?}: use \"9\" or \"8.4\""
        );
        if let Err(e) = sweep() {
            eprintln!("ctmgr-lab: sweeping stale labs: {e:#}");
        }
        let layout = Layout::new(&spec.name);
        std::fs::create_dir_all(LAB_ROOT).with_context(|| format!("creating {LAB_ROOT}"))?;
        // mkdir is the claim on the name: atomic, and fails when the lab exists.
        std::fs::create_dir(&layout.dir).with_context(|| {
            format!(
                "creating {} (a lab named {} exists? `ctmgr-lab down --name {}`)",
                layout.dir.display(),
                spec.name,
                spec.name
            )
        })?;
        let state = State {
            name: spec.name.clone(),
            nodes: spec.nodes,
            image_mib: spec.image_mib,
            drbd_version: version,
            owner_pid: Some(std::process::id() as i32),
            owner_start: Some(crate::procfs::self_start_time()),
            stores: Vec::new(),
            link_cut: false,
            crashed: Vec::new(),
        };
        layout.write_state(&state)?;
        let lab = Lab::from_layout(layout, spec.nodes, true);
        let lock = teardown::lock(&lab.layout, Duration::from_secs(30))?;
        // On error, `lab` drops here and tears down what was built.
        setup::bring_up(&lab, state, bins)
            .with_context(|| format!("bringing up lab {}", spec.name))?;
        drop(lock);
        Ok(lab)
    }

    /// Operates on an existing lab (e.g. one made by `ctmgr-lab up`); not torn down on drop.
    pub fn attach(name: &str) -> Result<Lab> {
        state::check_name(name)?;
        let layout = Layout::new(name);
        let st = layout
            .read_state()
            .with_context(|| format!("no lab named {name} here"))?;
        Ok(Lab::from_layout(layout, st.nodes, false))
    }

    fn from_layout(layout: Layout, nodes: usize, owned: bool) -> Lab {
        let nodes = (1..=nodes).map(|n| Node::new(&layout, n)).collect();
        Lab {
            layout,
            nodes,
            owned,
            done: false,
        }
    }

    /// Leaves the lab up after this process ends: no owner, not swept, not torn down on drop.
    pub fn persist(mut self) -> Result<()> {
        let mut st = self.state()?;
        st.owner_pid = None;
        st.owner_start = None;
        self.layout.write_state(&st)?;
        self.owned = false;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.layout.name
    }

    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn state(&self) -> Result<State> {
        self.layout.read_state()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// 1-based: `node(1)` is node1. Panics on a node the lab does not have.
    #[track_caller]
    pub fn node(&self, n: usize) -> &Node {
        assert!(
            (1..=self.nodes.len()).contains(&n),
            "lab {} has no node{n}",
            self.name()
        );
        &self.nodes[n - 1]
    }

    /// The loop device of a store (`store1`, `store2`).
    pub fn store_device(&self, store: &str) -> Result<String> {
        self.state()?
            .stores
            .into_iter()
            .find(|s| s.name == store)
            .and_then(|s| s.loop_dev)
            .with_context(|| format!("lab {} has no store {store}", self.name()))
    }

    /// Runs `argv` in the LAN namespace (the switch and gateway, 10.1.0.1).
    pub fn lan_cmd(&self, argv: &[&str]) -> Output {
        let net = format!("--net={}", self.layout.ns_file("lan", "net").display());
        let mut full = vec!["nsenter", net.as_str(), "--"];
        full.extend_from_slice(argv);
        let opts = Opts {
            env: vec![("PATH".into(), run::HOST_PATH.into())],
            ..Opts::default()
        };
        run::run(&full, &opts)
    }

    /// What the lab occupies now, to check after `down` that nothing is left.
    pub fn footprint(&self) -> Result<Footprint> {
        Footprint::of(&self.layout)
    }

    /// Tears the lab down; an error lists every step that failed (all steps are tried).
    pub fn down(mut self) -> Result<()> {
        self.done = true;
        teardown::teardown(&self.layout)
    }

    /// Tears down the lab `name` from its directory alone (for another process).
    pub fn down_by_name(name: &str) -> Result<()> {
        state::check_name(name)?;
        teardown::teardown(&Layout::new(name))
    }

    /// Power loss of node `n`: containers killed, every process in the node killed, stores
    /// unmounted, eth0 and eth1 down, the stand-in told. Panics on failure.
    #[track_caller]
    pub fn crash(&self, n: usize) {
        if let Err(e) = self.try_crash(n) {
            panic!("crashing node{n} of lab {}: {e:#}", self.name());
        }
    }

    /// Brings node `n` back: links up (eth1 only when the link is not cut), sshd, the
    /// stand-in told, `drbdadm up all`. Stores stay unmounted. Panics on failure.
    #[track_caller]
    pub fn revive(&self, n: usize) {
        if let Err(e) = self.try_revive(n) {
            panic!("reviving node{n} of lab {}: {e:#}", self.name());
        }
    }

    /// Cuts the peer link (eth1 down on both nodes, the stand-in told). Panics on failure.
    #[track_caller]
    pub fn cut_link(&self) {
        if let Err(e) = self.try_cut_link() {
            panic!("cutting the peer link of lab {}: {e:#}", self.name());
        }
    }

    /// DRBD's ping timeout on node `n` after a cut link (the capture's STEP 7b, ~9.5 s after
    /// the cut on real DRBD): the stand-in runs, inside node `n` (its PATH, network and
    /// config), the fence-peer handler of every resource `n` is Primary of while not
    /// connected and the peer not known outdated, and records the result (4/5/7: peer
    /// Outdated). Returns (resource, handler exit) per call; -1 = killed or timed out.
    /// [`Lab::cut_link`] does not do this by itself.
    pub fn ping_timeout(&self, n: usize) -> Result<Vec<(String, i32)>> {
        let node = self.node_checked(n)?;
        // The handler has 120 s in the stand-in; leave it that and a margin.
        let out = node
            .cmd_timeout(
                &["ctmgr-drbd-sim", "ping-timeout", node.name()],
                Duration::from_secs(150),
            )
            .check()?;
        let mut calls = Vec::new();
        for line in out.stdout.lines() {
            let (res, code) = line
                .split_once(' ')
                .and_then(|(r, c)| Some((r.to_string(), c.trim().parse::<i32>().ok()?)))
                .with_context(|| format!("ctmgr-drbd-sim ping-timeout printed {line:?}"))?;
            calls.push((res, code));
        }
        Ok(calls)
    }

    /// Heals the peer link. Panics on failure.
    #[track_caller]
    pub fn heal_link(&self) {
        if let Err(e) = self.try_heal_link() {
            panic!("healing the peer link of lab {}: {e:#}", self.name());
        }
    }

    pub fn try_crash(&self, n: usize) -> Result<()> {
        let node = self.node_checked(n)?;
        let mut st = self.state()?;
        let mut errors = Vec::new();
        if let Err(e) = node.stop_containers(Duration::from_secs(60)) {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = crate::procfs::kill_in_namespaces(
            &node.ns_identities(&crate::procfs::own_mounts()?),
            Duration::from_secs(15),
        ) {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = node.unmount_stores() {
            errors.push(format!("{e:#}"));
        }
        // The stand-in first: it may check its config against the node's addresses.
        if st.nodes == 2 {
            if let Err(e) = node.cmd(&["ctmgr-drbd-sim", "crash", node.name()]).check() {
                errors.push(format!("{e:#}"));
            }
        }
        for dev in ["eth0", "eth1"] {
            if node.has_link(dev) {
                if let Err(e) = node.cmd(&["ip", "link", "set", dev, "down"]).check() {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if !st.crashed.contains(&n) {
            st.crashed.push(n);
        }
        self.layout.write_state(&st)?;
        errors_to_result(errors)
    }

    pub fn try_revive(&self, n: usize) -> Result<()> {
        let node = self.node_checked(n)?;
        let mut st = self.state()?;
        node.cmd(&["ip", "link", "set", "eth0", "up"]).check()?;
        if st.nodes == 2 {
            // A cut link stays cut: that is done on the wire, not on eth1.
            node.cmd(&["ip", "link", "set", "eth1", "up"]).check()?;
            node.start_sshd()?;
            node.cmd(&["ctmgr-drbd-sim", "revive", node.name()])
                .check()?;
            node.cmd(&["drbdadm", "up", "all"]).check()?;
        }
        st.crashed.retain(|&c| c != n);
        self.layout.write_state(&st)?;
        // Return once the peer can reach the node again (ARP remembers the failures).
        self.flush_neighbours();
        if let Some(peer) = self.nodes.iter().find(|p| p.index() != n) {
            if !st.crashed.contains(&peer.index()) {
                let t = Duration::from_secs(20);
                peer.wait_ssh(&lan_addr(n), t)?;
                if !st.link_cut {
                    peer.wait_ssh(&peer_addr(n), t)?;
                }
            }
        }
        Ok(())
    }

    fn flush_neighbours(&self) {
        for node in &self.nodes {
            let _ = node.net_cmd(&["ip", "neigh", "flush", "all"], Duration::from_secs(10));
        }
    }

    pub fn try_cut_link(&self) -> Result<()> {
        let mut st = self.state()?;
        anyhow::ensure!(st.nodes == 2, "a one-node lab has no peer link");
        self.sim(&st, &["cut-link"])?;
        // Pull the cable: the wire's ports go down, each eth1 stays up without carrier.
        for port in ["p1", "p2"] {
            self.lan_cmd(&["ip", "link", "set", port, "down"]).check()?;
        }
        st.link_cut = true;
        self.layout.write_state(&st)
    }

    pub fn try_heal_link(&self) -> Result<()> {
        let mut st = self.state()?;
        anyhow::ensure!(st.nodes == 2, "a one-node lab has no peer link");
        for port in ["p1", "p2"] {
            self.lan_cmd(&["ip", "link", "set", port, "up"]).check()?;
        }
        self.sim(&st, &["heal-link"])?;
        st.link_cut = false;
        self.layout.write_state(&st)?;
        self.flush_neighbours();
        if st.crashed.is_empty() {
            let ok = run::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                self.nodes[0]
                    .net_cmd(
                        &["ping", "-c", "1", "-W", "1", &peer_addr(2)],
                        Duration::from_secs(5),
                    )
                    .success()
            });
            anyhow::ensure!(ok, "node1 cannot ping node2 over the healed peer link");
        }
        Ok(())
    }

    /// Runs a control command of the DRBD stand-in (`ctmgr-drbd-sim ARGS`) in a node that
    /// is not crashed (its state is shared; the node only matters for its view of the
    /// config and addresses).
    pub fn sim(&self, st: &State, args: &[&str]) -> Result<Output> {
        let node = self
            .nodes
            .iter()
            .find(|n| !st.crashed.contains(&n.index()))
            .unwrap_or(&self.nodes[0]);
        let mut argv = vec!["ctmgr-drbd-sim"];
        argv.extend_from_slice(args);
        node.cmd(&argv).check()
    }

    fn node_checked(&self, n: usize) -> Result<&Node> {
        anyhow::ensure!(
            (1..=self.nodes.len()).contains(&n),
            "lab {} has no node{n}",
            self.name()
        );
        Ok(&self.nodes[n - 1])
    }

    /// A human summary: stores, per-node links and mounts, the stand-in's view.
    pub fn status(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let st = match self.state() {
            Ok(st) => st,
            Err(e) => return format!("lab {}: {e:#}\n", self.name()),
        };
        let owner = st
            .owner_pid
            .map_or("none (left up on purpose)".to_string(), |p| p.to_string());
        let _ = writeln!(
            s,
            "lab {} in {}: {} node(s), DRBD {}, owner pid {owner}, peer link {}",
            st.name,
            self.dir().display(),
            st.nodes,
            st.drbd_version,
            if st.link_cut { "CUT" } else { "up" }
        );
        for store in &st.stores {
            let _ = writeln!(
                s,
                "  {}: home node{}, {} on {}{}",
                store.name,
                store.home,
                store.loop_dev.as_deref().unwrap_or("(no loop device)"),
                store.image.display(),
                store
                    .drbd
                    .as_ref()
                    .map_or(String::new(), |(r, p, m)| format!(
                        ", DRBD {r} port {p} minor {m}"
                    ))
            );
        }
        let short = Duration::from_secs(10);
        for node in &self.nodes {
            let crashed = if st.crashed.contains(&node.index()) {
                " (CRASHED)"
            } else {
                ""
            };
            let _ = writeln!(s, "{}{crashed}:", node.name());
            let addrs = node.cmd_timeout(&["ip", "-br", "addr"], short);
            for line in addrs.stdout.lines() {
                let _ = writeln!(s, "    {line}");
            }
            match node.store_mounts() {
                Ok(m) if m.is_empty() => {
                    let _ = writeln!(s, "    no store mounted");
                }
                Ok(m) => {
                    for mp in m {
                        let _ = writeln!(s, "    mounted: {}", mp.display());
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "    mounts: {e:#}");
                }
            }
        }
        if st.nodes == 2 {
            let out = match self.sim(&st, &["show"]) {
                Ok(o) => o,
                Err(e) => {
                    let _ = writeln!(s, "drbd-sim: {e:#}");
                    return s;
                }
            };
            let _ = writeln!(s, "drbd-sim:");
            for line in out.stdout.lines().chain(out.stderr.lines()) {
                let _ = writeln!(s, "    {line}");
            }
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned && !self.done {
            self.done = true;
            if let Err(e) = teardown::teardown(&self.layout) {
                eprintln!("ctmgr-lab: tearing down lab {}: {e:#}", self.layout.name);
            }
        }
    }
}

pub(crate) fn errors_to_result(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(errors.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.len() <= 8, "{a}");
        state::check_name(&a).unwrap();
        assert_eq!(base36(4194304).len(), 5);
        assert_eq!(base36(0), "0");
    }
}
