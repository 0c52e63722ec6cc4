//! The takeover preflight: a pure decision over gathered facts (DESIGN.md §4
//! rules 1 and 2). No I/O here, so every refusal is unit-tested.

use serde::Serialize;

use crate::drbd::{DiskState, ResourceState, Role};

/// What occupies the store's mountpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MountFact {
    Free,
    /// The store's own filesystem is mounted there.
    Store,
    Other {
        source: String,
        fstype: String,
    },
}

/// Evidence about the peer, gathered only when DRBD cannot see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Each peer address probed and whether it answered.
    pub probes: Vec<(String, bool)>,
    /// Whether this node reaches its LAN gateway (None: no gateway configured).
    pub gateway: Option<bool>,
    /// What the peer said when asked over ssh: Some(true) it holds the store,
    /// Some(false) it does not, None it could not be asked.
    pub peer_holds: Option<bool>,
    pub peer_error: Option<String>,
}

impl Evidence {
    pub fn peer_answers(&self) -> bool {
        self.probes.iter().any(|(_, ok)| *ok)
    }
}

/// Everything the decision needs.
#[derive(Debug, Clone)]
pub struct Facts {
    pub store: String,
    pub resource: Option<String>,
    /// DRBD's view here; None when the resource is not up on this node.
    pub drbd: Option<ResourceState>,
    pub mount: MountFact,
    pub mountpoint: String,
    /// Gathered only when the peer is not visible through DRBD.
    pub evidence: Option<Evidence>,
    pub force: bool,
}

/// One preflight check as shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    /// "ok", "info", "warn" (overridden by --force), "refuse"
    pub verdict: &'static str,
    pub message: String,
}

/// The decision.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub checks: Vec<Check>,
    pub promote: bool,
    pub mount: bool,
    /// Whether `--force` overrode a refusal (journaled).
    pub forced: bool,
}

impl Verdict {
    /// The first refusing check, if any.
    pub fn refusal(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.verdict == "refuse")
    }
    /// Does DRBD need the peer evidence (not connected)?
    pub fn needs_evidence(facts: &Facts) -> bool {
        facts.resource.is_some()
            && facts
                .drbd
                .as_ref()
                .is_some_and(|d| d.role != Role::Primary && !d.connection.is_connected())
    }
}

fn check(name: &'static str, verdict: &'static str, message: String) -> Check {
    Check {
        name,
        verdict,
        message,
    }
}

/// Decides whether a takeover may proceed and which steps it needs.
pub fn decide(f: &Facts) -> Verdict {
    let mut checks = Vec::new();
    let mut forced = false;
    let mut refuse_or_force =
        |checks: &mut Vec<Check>, name: &'static str, msg: String, forced: &mut bool| {
            if f.force {
                *forced = true;
                checks.push(check(
                    name,
                    "warn",
                    format!("{msg} — overridden by --force"),
                ));
            } else {
                checks.push(check(name, "refuse", msg));
            }
        };

    match &f.mount {
        MountFact::Other { source, fstype } => checks.push(check(
            "mountpoint",
            "refuse",
            format!(
                "{} is occupied by {source} ({fstype}), not store {}; unmount it or fix the store's mountpoint in cluster.toml",
                f.mountpoint, f.store
            ),
        )),
        MountFact::Store => checks.push(check("mountpoint", "ok", format!("store already mounted at {}", f.mountpoint))),
        MountFact::Free => checks.push(check("mountpoint", "ok", format!("{} is free", f.mountpoint))),
    }

    let mut promote = false;
    if let Some(res) = &f.resource {
        match &f.drbd {
            None => checks.push(check(
                "drbd-up",
                "refuse",
                format!("DRBD resource {res} is not up on this node; run `drbdadm up {res}` and check `drbdadm status {res}`"),
            )),
            Some(d) => {
                let connected = d.connection.is_connected();
                if d.role == Role::Primary {
                    checks.push(check("drbd-role", "ok", format!("{res} is already Primary here")));
                } else {
                    promote = true;
                    checks.push(check("drbd-role", "ok", format!("{res} is {} here; will promote", d.role)));
                }
                if connected && d.peer_role == Role::Primary && d.role != Role::Primary {
                    checks.push(check(
                        "peer-primary",
                        "refuse",
                        format!(
                            "the peer is Primary for {res} and connected: it holds store {}. Run `ctmgr migrate {}` for a planned switchover, or `ctmgr release {}` on the peer first",
                            f.store, f.store, f.store
                        ),
                    ));
                }
                if d.disk != DiskState::UpToDate {
                    refuse_or_force(
                        &mut checks,
                        "local-disk",
                        format!(
                            "the local disk of {res} is {}, not UpToDate: promoting would serve stale or incomplete data. Check `drbdadm status {res}`; wait for the resync to finish, or use --force only if the peer's data is lost for good",
                            d.disk
                        ),
                        &mut forced,
                    );
                } else {
                    checks.push(check("local-disk", "ok", "UpToDate".to_string()));
                }
                if connected {
                    checks.push(check(
                        "peer",
                        "ok",
                        format!("connected; peer is {} with disk {}", d.peer_role, d.peer_disk),
                    ));
                } else if d.role != Role::Primary {
                    peer_evidence(f, res, &mut checks, &mut forced, &mut refuse_or_force);
                }
            }
        }
    }
    Verdict {
        mount: f.mount == MountFact::Free,
        promote,
        checks,
        forced,
    }
}

type RefuseOrForce<'a> = dyn FnMut(&mut Vec<Check>, &'static str, String, &mut bool) + 'a;

/// DRBD cannot see the peer: a dead peer and a cut link look the same, so we
/// need evidence that the peer is down (rule 2).
fn peer_evidence(
    f: &Facts,
    res: &str,
    checks: &mut Vec<Check>,
    forced: &mut bool,
    refuse_or_force: &mut RefuseOrForce<'_>,
) {
    let split = format!(
        "DRBD cannot see the peer for {res}; if the peer is alive and Primary, promoting here makes a split brain (both sides write, one side's changes are lost)"
    );
    let Some(ev) = &f.evidence else {
        refuse_or_force(
            checks,
            "peer-evidence",
            format!("{split}. No evidence was gathered"),
            forced,
        );
        return;
    };
    let probes: Vec<String> = ev
        .probes
        .iter()
        .map(|(a, ok)| format!("{a} {}", if *ok { "answers" } else { "silent" }))
        .collect();
    checks.push(check("peer-probe", "info", probes.join(", ")));
    if ev.peer_answers() {
        match ev.peer_holds {
            Some(true) => refuse_or_force(
                checks,
                "peer-holds",
                format!(
                    "{split}. The peer answers and says it holds store {}: the DRBD link is down, not the peer. Repair the peer link (`drbdadm connect {res}` on both) or release the store on the peer; --force here WILL cause a split brain",
                    f.store
                ),
                forced,
            ),
            Some(false) => checks.push(check(
                "peer-holds",
                "ok",
                format!("the peer answers and says it does not hold store {}", f.store),
            )),
            None => refuse_or_force(
                checks,
                "peer-alive",
                format!(
                    "{split}. The peer answers on the network but could not say whether it holds store {} ({}); check it by hand",
                    f.store,
                    ev.peer_error.as_deref().unwrap_or("no answer from ctmgr over ssh")
                ),
                forced,
            ),
        }
        return;
    }
    match ev.gateway {
        Some(true) => checks.push(check(
            "peer-down",
            "ok",
            "the peer is silent on every address while this node reaches its gateway: the peer is down".to_string(),
        )),
        Some(false) => refuse_or_force(
            checks,
            "gateway",
            format!("{split}. The peer is silent, but this node cannot reach its LAN gateway either: this node may be the isolated one. Check this node's network"),
            forced,
        ),
        None => refuse_or_force(
            checks,
            "gateway",
            format!("{split}. The peer is silent, but no gateway is configured ([network] gateway) to prove this node is not the isolated one"),
            forced,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drbd::ConnState;

    fn drbd(
        role: Role,
        disk: DiskState,
        conn: ConnState,
        peer_role: Role,
    ) -> Option<ResourceState> {
        Some(ResourceState {
            name: "r0".into(),
            minor: Some(0),
            role,
            disk,
            connection: conn,
            peer_role,
            peer_disk: DiskState::UpToDate,
            sync_percent: None,
            peer_node: Some("node1".into()),
        })
    }

    fn facts(d: Option<ResourceState>) -> Facts {
        Facts {
            store: "store1".into(),
            resource: Some("r0".into()),
            drbd: d,
            mount: MountFact::Free,
            mountpoint: "/srv/store1".into(),
            evidence: None,
            force: false,
        }
    }

    #[test]
    fn connected_secondary_peer_allows_promote() {
        let v = decide(&facts(drbd(
            Role::Secondary,
            DiskState::UpToDate,
            ConnState::Connected,
            Role::Secondary,
        )));
        assert!(v.refusal().is_none(), "{:?}", v.checks);
        assert!(v.promote && v.mount);
    }

    #[test]
    fn peer_primary_and_connected_is_refused_even_with_force() {
        let mut f = facts(drbd(
            Role::Secondary,
            DiskState::UpToDate,
            ConnState::Connected,
            Role::Primary,
        ));
        f.force = true;
        let v = decide(&f);
        assert_eq!(v.refusal().unwrap().name, "peer-primary");
        assert!(v
            .refusal()
            .unwrap()
            .message
            .contains("ctmgr migrate store1"));
    }

    #[test]
    fn outdated_disk_refused_unless_forced() {
        let mut f = facts(drbd(
            Role::Secondary,
            DiskState::Outdated,
            ConnState::Connected,
            Role::Secondary,
        ));
        assert_eq!(decide(&f).refusal().unwrap().name, "local-disk");
        f.force = true;
        let v = decide(&f);
        assert!(v.refusal().is_none() && v.forced);
    }

    #[test]
    fn dead_peer_needs_silence_and_gateway() {
        let mut f = facts(drbd(
            Role::Secondary,
            DiskState::UpToDate,
            ConnState::Connecting,
            Role::Unknown,
        ));
        assert!(Verdict::needs_evidence(&f));
        assert_eq!(decide(&f).refusal().unwrap().name, "peer-evidence");
        f.evidence = Some(Evidence {
            probes: vec![
                ("10.0.254.1:22".into(), false),
                ("10.1.0.5:22".into(), false),
            ],
            gateway: Some(true),
            ..Default::default()
        });
        assert!(decide(&f).refusal().is_none());
        f.evidence.as_mut().unwrap().gateway = Some(false);
        assert_eq!(decide(&f).refusal().unwrap().name, "gateway");
        f.evidence.as_mut().unwrap().gateway = None;
        assert_eq!(decide(&f).refusal().unwrap().name, "gateway");
    }

    #[test]
    fn cut_link_with_peer_holding_is_refused_and_force_warns() {
        let mut f = facts(drbd(
            Role::Secondary,
            DiskState::UpToDate,
            ConnState::StandAlone,
            Role::Unknown,
        ));
        f.evidence = Some(Evidence {
            probes: vec![
                ("10.0.254.1:22".into(), false),
                ("10.1.0.5:22".into(), true),
            ],
            gateway: Some(true),
            peer_holds: Some(true),
            peer_error: None,
        });
        let v = decide(&f);
        assert_eq!(v.refusal().unwrap().name, "peer-holds");
        assert!(v.refusal().unwrap().message.contains("split brain"));
        f.force = true;
        let v = decide(&f);
        assert!(v.refusal().is_none() && v.forced);
        f.force = false;
        f.evidence.as_mut().unwrap().peer_holds = None;
        assert_eq!(decide(&f).refusal().unwrap().name, "peer-alive");
        f.evidence.as_mut().unwrap().peer_holds = Some(false);
        assert!(decide(&f).refusal().is_none());
    }

    #[test]
    fn occupied_mountpoint_and_down_resource_are_refused() {
        let mut f = facts(drbd(
            Role::Secondary,
            DiskState::UpToDate,
            ConnState::Connected,
            Role::Secondary,
        ));
        f.mount = MountFact::Other {
            source: "tmpfs".into(),
            fstype: "tmpfs".into(),
        };
        assert_eq!(decide(&f).refusal().unwrap().name, "mountpoint");
        let f = facts(None);
        assert_eq!(decide(&f).refusal().unwrap().name, "drbd-up");
    }

    #[test]
    fn already_primary_and_mounted_needs_no_step() {
        let mut f = facts(drbd(
            Role::Primary,
            DiskState::UpToDate,
            ConnState::Connecting,
            Role::Unknown,
        ));
        f.mount = MountFact::Store;
        let v = decide(&f);
        assert!(v.refusal().is_none());
        assert!(!v.promote && !v.mount);
        assert!(!Verdict::needs_evidence(&f));
    }

    #[test]
    fn single_host_store_has_no_drbd_checks() {
        let mut f = facts(None);
        f.resource = None;
        let v = decide(&f);
        assert!(v.refusal().is_none());
        assert!(!v.promote && v.mount);
    }
}
