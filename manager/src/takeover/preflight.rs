//! The takeover preflight: a pure decision over gathered facts (DESIGN.md §4
//! rules 1 and 2). No I/O here, so every refusal is unit-tested.

use serde::Serialize;

use crate::drbd::{DiskState, ResourceState, Role};
use crate::fence::{judge, Liveness, PeerReport, PeerVerdict};

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

/// Evidence about the peer, gathered whenever DRBD cannot see it (also when
/// this node is already Primary: rule 10, route D4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Every path to the peer probed (TCP to its ssh port, ICMP) and the gateway.
    pub liveness: Liveness,
    /// What the peer said over ssh, under its own store lock (not asked to
    /// outdate itself: DRBD's fence-peer handler does that at the promote).
    pub peer: Option<PeerReport>,
    /// Why the peer could not be asked although something answered.
    pub peer_error: Option<String>,
}

impl Evidence {
    pub fn peer_answers(&self) -> bool {
        self.liveness.alive()
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

/// What one check says; serialized as `ok`, `info`, `warn`, `refuse` (docs/json.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckVerdict {
    Ok,
    /// Said for the record (e.g. what the peer probe found); decides nothing.
    Info,
    /// A refusal overridden by `--force`.
    Warn,
    Refuse,
}

impl CheckVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckVerdict::Ok => "ok",
            CheckVerdict::Info => "info",
            CheckVerdict::Warn => "warn",
            CheckVerdict::Refuse => "refuse",
        }
    }
}

impl std::fmt::Display for CheckVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`: the table's `{:<6}` width applies.
        f.pad(self.as_str())
    }
}

/// One preflight check as shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: CheckVerdict,
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
        self.checks
            .iter()
            .find(|c| c.verdict == CheckVerdict::Refuse)
    }
    /// Does the decision need evidence about the peer? Whenever DRBD cannot
    /// see it — also when this node is already Primary: a Primary that lost
    /// its link may face a peer that was promoted meanwhile (D4).
    pub fn needs_evidence(facts: &Facts) -> bool {
        facts.resource.is_some()
            && facts
                .drbd
                .as_ref()
                .is_some_and(|d| !d.connection.is_connected())
    }
}

fn check(name: &'static str, verdict: CheckVerdict, message: String) -> Check {
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
                    CheckVerdict::Warn,
                    format!("{msg} — overridden by --force"),
                ));
            } else {
                checks.push(check(name, CheckVerdict::Refuse, msg));
            }
        };

    match &f.mount {
        MountFact::Other { source, fstype } => checks.push(check(
            "mountpoint",
            CheckVerdict::Refuse,
            format!(
                "{} is occupied by {source} ({fstype}), not store {}; unmount it or fix the store's mountpoint in cluster.toml",
                f.mountpoint, f.store
            ),
        )),
        MountFact::Store => checks.push(check("mountpoint", CheckVerdict::Ok, format!("store already mounted at {}", f.mountpoint))),
        MountFact::Free => checks.push(check("mountpoint", CheckVerdict::Ok, format!("{} is free", f.mountpoint))),
    }

    let mut promote = false;
    if let Some(res) = &f.resource {
        match &f.drbd {
            None => checks.push(check(
                "drbd-up",
                CheckVerdict::Refuse,
                format!("DRBD resource {res} is not up on this node; run `drbdadm up {res}` and check `drbdadm status {res}`"),
            )),
            Some(d) => {
                let connected = d.connection.is_connected();
                if d.role == Role::Primary {
                    checks.push(check("drbd-role", CheckVerdict::Ok, format!("{res} is already Primary here")));
                } else {
                    promote = true;
                    checks.push(check("drbd-role", CheckVerdict::Ok, format!("{res} is {} here; will promote", d.role)));
                }
                if connected && d.peer_role == Role::Primary && d.role != Role::Primary {
                    checks.push(check(
                        "peer-primary",
                        CheckVerdict::Refuse,
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
                    checks.push(check("local-disk", CheckVerdict::Ok, "UpToDate".to_string()));
                }
                if connected {
                    checks.push(check(
                        "peer",
                        CheckVerdict::Ok,
                        format!("connected; peer is {} with disk {}", d.peer_role, d.peer_disk),
                    ));
                } else {
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
    checks.push(check(
        "peer-probe",
        CheckVerdict::Info,
        ev.liveness.describe(),
    ));
    if ev.liveness.alive() {
        let Some(report) = &ev.peer else {
            refuse_or_force(
                checks,
                "peer-alive",
                format!(
                    "{split}. The peer answers on the network but could not be asked whether it uses store {} ({}); check it by hand",
                    f.store,
                    ev.peer_error.as_deref().unwrap_or("no answer from ctmgr over ssh")
                ),
                forced,
            );
            return;
        };
        match judge(report, false) {
            PeerVerdict::Safe => checks.push(check(
                "peer-secondary",
                CheckVerdict::Ok,
                format!(
                    "{} answers: Secondary for {res}, store {} not mounted, nothing of it running",
                    report.node, f.store
                ),
            )),
            PeerVerdict::Holds(why) => refuse_or_force(
                checks,
                "peer-holds",
                format!(
                    "{split}. {why}: the DRBD link is down, not the peer. Repair the peer link (`drbdadm connect {res}` on both) or run `ctmgr release {}` on the peer; --force here WILL cause a split brain",
                    f.store
                ),
                forced,
            ),
            PeerVerdict::Unsure(why) => refuse_or_force(
                checks,
                "peer-unsure",
                format!("{split}. {why}; try again, or check the peer by hand"),
                forced,
            ),
        }
        return;
    }
    if ev.liveness.single_path() {
        refuse_or_force(
            checks,
            "single-path",
            format!(
                "{split}. The peer is silent, but only one path to it is configured: a cut cable looks the same as a dead peer. Give both nodes a lan_address in cluster.toml (safety rule 2)"
            ),
            forced,
        );
        return;
    }
    match ev.liveness.gateway {
        Some(true) => checks.push(check(
            "peer-down",
            CheckVerdict::Ok,
            "the peer is silent on every path (TCP and ICMP) while this node reaches its gateway: the peer is down".to_string(),
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

    use crate::fence::{PathProbe, TcpAnswer};
    use std::net::Ipv4Addr;

    fn live(
        link: (TcpAnswer, bool),
        lan: Option<(TcpAnswer, bool)>,
        gateway: Option<bool>,
    ) -> Liveness {
        let probe = |path, address, (tcp, icmp)| PathProbe {
            path,
            address,
            port: 22,
            tcp,
            icmp,
        };
        let mut paths = vec![probe("peer-link", Ipv4Addr::new(10, 0, 254, 1), link)];
        paths.extend(lan.map(|l| probe("lan", Ipv4Addr::new(10, 1, 0, 5), l)));
        Liveness { paths, gateway }
    }

    const SILENT: (TcpAnswer, bool) = (TcpAnswer::Silent, false);
    const UP: (TcpAnswer, bool) = (TcpAnswer::Accepted, true);

    fn report(role: Option<&str>) -> PeerReport {
        PeerReport {
            node: "node1".into(),
            store: "store1".into(),
            role: role.map(str::to_string),
            ..PeerReport::default()
        }
    }

    fn cut(role: Role) -> Facts {
        facts(drbd(
            role,
            DiskState::UpToDate,
            ConnState::Connecting,
            Role::Unknown,
        ))
    }

    #[test]
    fn dead_peer_needs_silence_on_two_paths_and_the_gateway() {
        let mut f = cut(Role::Secondary);
        assert!(Verdict::needs_evidence(&f));
        assert_eq!(decide(&f).refusal().unwrap().name, "peer-evidence");
        f.evidence = Some(Evidence {
            liveness: live(SILENT, Some(SILENT), Some(true)),
            ..Default::default()
        });
        assert!(decide(&f).refusal().is_none(), "{:?}", decide(&f).checks);
        f.evidence.as_mut().unwrap().liveness.gateway = Some(false);
        assert_eq!(decide(&f).refusal().unwrap().name, "gateway");
        f.evidence.as_mut().unwrap().liveness.gateway = None;
        assert_eq!(decide(&f).refusal().unwrap().name, "gateway");
    }

    #[test]
    fn a_reset_or_an_echo_reply_is_life_not_death() {
        // D3: sshd down or REJECT-firewalled answers with a RST; ping still answers.
        for lan in [(TcpAnswer::Reset, false), (TcpAnswer::Silent, true)] {
            let mut f = cut(Role::Secondary);
            f.evidence = Some(Evidence {
                liveness: live(SILENT, Some(lan), Some(true)),
                peer: None,
                peer_error: Some(
                    "ssh: connect to host 10.1.0.5 port 22: Connection refused".into(),
                ),
            });
            let v = decide(&f);
            assert_eq!(
                v.refusal().unwrap().name,
                "peer-alive",
                "{lan:?}: {:?}",
                v.checks
            );
        }
    }

    #[test]
    fn one_path_is_not_enough() {
        // D6: no lan_address: a cut peer link alone must not count as "peer down".
        let mut f = cut(Role::Secondary);
        f.evidence = Some(Evidence {
            liveness: live(SILENT, None, Some(true)),
            ..Default::default()
        });
        let v = decide(&f);
        assert_eq!(v.refusal().unwrap().name, "single-path");
        assert!(v.refusal().unwrap().message.contains("lan_address"));
        f.force = true;
        let v = decide(&f);
        assert!(v.refusal().is_none() && v.forced);
    }

    #[test]
    fn a_primary_peer_holds_the_store_mounted_or_not() {
        // D1: Primary but unmounted (a release killed after its unmount) is holding.
        let mut f = cut(Role::Secondary);
        for r in [
            report(Some("Primary")),
            PeerReport {
                mounted: true,
                ..report(Some("Secondary"))
            },
            PeerReport {
                running: vec!["web".into()],
                ..report(Some("Secondary"))
            },
        ] {
            f.evidence = Some(Evidence {
                liveness: live(SILENT, Some(UP), Some(true)),
                peer: Some(r.clone()),
                peer_error: None,
            });
            let v = decide(&f);
            assert_eq!(v.refusal().unwrap().name, "peer-holds", "{r:?}");
            assert!(v.refusal().unwrap().message.contains("split brain"));
        }
        f.force = true;
        let v = decide(&f);
        assert!(v.refusal().is_none() && v.forced);
    }

    #[test]
    fn an_unsure_peer_refuses() {
        // D1: "role unknown" is not "Secondary"; D2: a busy lock may be a takeover there.
        let mut f = cut(Role::Secondary);
        for r in [
            PeerReport {
                role_error: Some("drbdadm role r0: exit 10".into()),
                ..report(None)
            },
            PeerReport {
                busy: Some("pid 77 (ctmgr takeover store1)".into()),
                ..report(None)
            },
            PeerReport {
                error: Some("cannot read the mount table".into()),
                ..report(Some("Secondary"))
            },
        ] {
            f.evidence = Some(Evidence {
                liveness: live(SILENT, Some(UP), Some(true)),
                peer: Some(r.clone()),
                peer_error: None,
            });
            assert_eq!(decide(&f).refusal().unwrap().name, "peer-unsure", "{r:?}");
        }
        f.evidence.as_mut().unwrap().peer = Some(report(Some("Secondary")));
        let v = decide(&f);
        assert!(v.refusal().is_none(), "{:?}", v.checks);
        assert!(v.checks.iter().any(|c| c.name == "peer-secondary"));
    }

    #[test]
    fn already_primary_but_cut_off_still_asks_the_peer() {
        // D4: the rerun on the old holder must not mount when the peer is Primary.
        let mut f = cut(Role::Primary);
        assert!(Verdict::needs_evidence(&f));
        assert_eq!(decide(&f).refusal().unwrap().name, "peer-evidence");
        f.evidence = Some(Evidence {
            liveness: live(SILENT, Some(UP), Some(true)),
            peer: Some(report(Some("Primary"))),
            peer_error: None,
        });
        let v = decide(&f);
        assert_eq!(v.refusal().unwrap().name, "peer-holds");
        assert!(!v.promote);
        f.evidence.as_mut().unwrap().peer = Some(report(Some("Secondary")));
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
    fn already_primary_connected_and_mounted_needs_no_step() {
        let mut f = facts(drbd(
            Role::Primary,
            DiskState::UpToDate,
            ConnState::Connected,
            Role::Secondary,
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
