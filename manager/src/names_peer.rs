//! Container names are unique in the cluster (D19): before `create` makes a
//! container it asks the peer, over ssh and bounded in time, whether the name
//! is free there — the peer may hold a container of that name that is not
//! synced here yet, or be creating one at this very moment.
//!
//! Both sides take the node-local name reservation
//! ([`crate::lock::lock_name`]): the asking `create` holds its own from before
//! the question until the new container's directory (with its creation
//! marker) exists, and the peer answers under ITS reservation, waiting at most
//! [`ANSWER_LOCK_WAIT`]. So when both nodes create one name at the same
//! moment, each hears "busy" or "taken" from the other: at most one succeeds
//! (both may refuse — retrying one of them then works).
//!
//! This module decides (pure: [`parse_answer`], [`decide`], [`taken_in`]) and
//! asks ([`ask_peer`]); it never creates or removes anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Node};
use crate::container::{is_incomplete, is_own};
use crate::exit::{refuse, usage};
use crate::lock::{LockError, Wait};
use crate::runner::Runner;

/// The hidden subcommand the peer runs to answer.
pub const SUBCOMMAND: &str = "__name-answer";

/// How long the answering peer waits for its own name reservation.
pub const ANSWER_LOCK_WAIT: Duration = Duration::from_secs(3);

/// Deadline for one ssh question (connect 5 s, the peer's config load and
/// its [`ANSWER_LOCK_WAIT`], with a margin).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the peer says about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing of that name on the peer.
    Free,
    /// A container, replica or interrupted create of that name is there.
    Taken,
    /// The peer is creating a container of that name right now.
    Busy,
    /// The peer could not check (its reason says why).
    Error,
}

/// The peer's one-line JSON answer to `ctmgr __name-answer NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameAnswer {
    /// The answering node.
    pub node: String,
    pub name: String,
    pub answer: Verdict,
    /// For taken, busy and error: why, in the peer's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every lxcpath where a container name lives on this node: `mounted` (the
/// lxcpaths of the stores mounted here: own containers, the peer's replicas,
/// interrupted creates) and every configured replica dir that exists here.
pub fn with_replica_dirs(config: &Config, mounted: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut paths = mounted;
    for st in &config.stores {
        if let Some(dir) = config.replica_dir(st) {
            if dir.is_dir() && !paths.contains(&dir) {
                paths.push(dir);
            }
        }
    }
    paths
}

/// What of `name` is in `lxcpaths` on node `node`, as a sentence for the
/// other node's person ("web already exists on node2 in /srv/store2/containers").
pub fn taken_in(node: &str, name: &str, lxcpaths: &[PathBuf]) -> Option<String> {
    lxcpaths.iter().find_map(|lp| {
        let dir = lp.join(name);
        std::fs::symlink_metadata(&dir).ok()?;
        Some(if is_incomplete(&dir) {
            format!(
                "an interrupted create of {name} is on {node} in {} (`ctmgr list` there shows it INCOMPLETE)",
                lp.display()
            )
        } else if is_own(&dir) {
            format!("{name} already exists on {node} in {}", lp.display())
        } else {
            format!(
                "{name} already exists on {node} in {} (a replica of a container of the other store)",
                lp.display()
            )
        })
    })
}

/// The peer's side: under this node's reservation of `name` (waiting at most
/// [`ANSWER_LOCK_WAIT`]), is the name free in `lxcpaths`?
pub fn answer(node: &str, name: &str, lxcpaths: &[PathBuf]) -> NameAnswer {
    if let Err(e) = crate::names::validate("container", name) {
        return reply(node, name, Verdict::Error, Some(e.to_string()));
    }
    let reserved = crate::lock::lock_name(name, Wait::Upto(ANSWER_LOCK_WAIT), &|_| {});
    answer_reserved(node, name, lxcpaths, reserved.as_ref().map(|_| ()))
}

/// [`answer`] once the reservation was tried (`Ok`: held by the caller).
fn answer_reserved(
    node: &str,
    name: &str,
    lxcpaths: &[PathBuf],
    reserved: Result<(), &LockError>,
) -> NameAnswer {
    match reserved {
        Ok(()) => match taken_in(node, name, lxcpaths) {
            Some(why) => reply(node, name, Verdict::Taken, Some(why)),
            None => reply(node, name, Verdict::Free, None),
        },
        Err(LockError::NameBusy { holder, .. } | LockError::NameTimedOut { holder, .. }) => reply(
            node,
            name,
            Verdict::Busy,
            Some(format!(
                "{node} is creating a container named {name} right now ({holder})"
            )),
        ),
        Err(e) => reply(node, name, Verdict::Error, Some(format!("{e:#}"))),
    }
}

fn reply(node: &str, name: &str, answer: Verdict, reason: Option<String>) -> NameAnswer {
    NameAnswer {
        node: node.to_string(),
        name: name.to_string(),
        answer,
        reason,
    }
}

/// Reads the peer's answer: the last non-empty line of its stdout, which must
/// be about `name`.
pub fn parse_answer(stdout: &str, name: &str) -> Result<NameAnswer, String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| "answered nothing".to_string())?;
    let a: NameAnswer =
        serde_json::from_str(line).map_err(|e| format!("unreadable answer {line:?} ({e})"))?;
    if a.name != name {
        return Err(format!("answered for the name {:?}, not {name}", a.name));
    }
    Ok(a)
}

/// The ssh destinations of the peer, in the order to try them: its `ssh`,
/// then the same user at its LAN address (a second path when the peer link
/// is down).
pub fn ssh_targets(peer: &Node) -> Vec<String> {
    let mut v = vec![peer.ssh.clone()];
    if let Some(lan) = peer.lan_address {
        let t = crate::fence::ssh_target_for(peer, lan);
        if !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

/// Asks the peer `ctmgr [--config C] __name-answer NAME` over ssh (BatchMode,
/// ConnectTimeout, [`ASK_TIMEOUT`]), trying the next path only when ssh itself
/// could not connect (exit 255) or timed out. `config_path` is passed on when
/// it is not the default.
pub fn ask_peer(
    runner: &dyn Runner,
    peer: &Node,
    name: &str,
    config_path: &Path,
) -> Result<NameAnswer, String> {
    let mut remote: Vec<String> = vec!["ctmgr".into()];
    if config_path != Path::new(crate::config::DEFAULT_PATH) {
        remote.extend(["--config".into(), config_path.display().to_string()]);
    }
    remote.extend([SUBCOMMAND.into(), name.to_string()]);
    let remote: Vec<&str> = remote.iter().map(String::as_str).collect();
    let mut errors = Vec::new();
    for target in ssh_targets(peer) {
        let cmd = crate::takeover::ssh_cmd("ssh", &target, &remote, ASK_TIMEOUT);
        match runner.run(&cmd) {
            Ok(out) if out.success() => {
                return parse_answer(&out.stdout, name).map_err(|e| format!("{target}: {e}"))
            }
            Ok(out) => {
                let msg = first_line(&out.stderr).unwrap_or("no message");
                if out.code == 255 {
                    // ssh could not connect or authenticate: try the next path.
                    errors.push(format!("{target}: ssh failed: {msg}"));
                    continue;
                }
                if out.stderr.contains("unrecognized subcommand") {
                    errors.push(format!(
                        "{target}: the ctmgr there does not know `{SUBCOMMAND}` (an older version? update it)"
                    ));
                } else {
                    errors.push(format!(
                        "{target}: `ctmgr {SUBCOMMAND}` exited with {}: {msg}",
                        out.code
                    ));
                }
                break;
            }
            Err(e) => errors.push(format!("{target}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn first_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .map(|l| l.strip_prefix("ctmgr: error: ").unwrap_or(l))
        .find(|l| !l.is_empty())
}

/// What `create` does after asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The peer says the name is free (or there is no peer).
    Proceed,
    /// The peer could not be asked and `--force` was given: go on, warning.
    Forced(String),
    /// The name exists on the peer: exit 2.
    Taken(String),
    /// The peer is creating that name right now: exit 3, retry.
    Busy(String),
    /// The peer could not be asked: exit 3 unless `--force`.
    Unasked(String),
}

/// Decides from the peer's answer (or why there is none). `--force` only
/// overrides a peer that cannot be asked, never a name it says it has.
pub fn decide(peer: &str, name: &str, asked: Result<NameAnswer, String>, force: bool) -> Decision {
    let unasked = |why: String| {
        if force {
            Decision::Forced(format!(
                "could not ask {peer} whether the name {name} is free ({why}); creating it anyway (--force): if {peer} has a container {name} that is not synced here, the names now collide"
            ))
        } else {
            Decision::Unasked(format!(
                "cannot create {name}: could not ask {peer} whether the name is free ({why}). Names are unique in the cluster and {peer} may have a container {name} not yet synced here. Check ssh to {peer} (`ctmgr doctor`) and retry; --force creates it without asking (only when {peer} is down and you know it has no {name})"
            ))
        }
    };
    let a = match asked {
        Ok(a) => a,
        Err(why) => return unasked(why),
    };
    if a.node != peer {
        return unasked(format!("the answer came from {:?}, not {peer}", a.node));
    }
    let reason = a.reason.unwrap_or_default();
    match a.answer {
        Verdict::Free => Decision::Proceed,
        Verdict::Taken => Decision::Taken(format!(
            "cannot create {name}: {reason}; names are unique in the cluster (choose another name, or destroy that one on {peer} first)"
        )),
        Verdict::Busy => Decision::Busy(format!(
            "cannot create {name}: {reason}; retry when it is done (`ctmgr list` on {peer} shows it)"
        )),
        Verdict::Error => unasked(format!("{peer} could not check: {reason}")),
    }
}

impl Decision {
    /// `Ok(None)`: go on; `Ok(Some(warning))`: go on, print the warning;
    /// `Err`: exit 2 (taken) or 3 (busy, unasked).
    pub fn into_result(self) -> anyhow::Result<Option<String>> {
        match self {
            Decision::Proceed => Ok(None),
            Decision::Forced(w) => Ok(Some(w)),
            Decision::Taken(m) => Err(usage(m)),
            Decision::Busy(m) | Decision::Unasked(m) => Err(refuse(m)),
        }
    }
}

/// Asks the peer of `node` about `name` and decides; a one-node cluster has
/// no one to ask.
pub fn check_cluster(
    config: &Config,
    node: &str,
    name: &str,
    runner: &dyn Runner,
    force: bool,
) -> Decision {
    let Some(peer) = config.peer_of(node) else {
        return Decision::Proceed;
    };
    decide(
        &peer.name,
        name,
        ask_peer(runner, peer, name, &config.path),
        force,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{classify, ExitStatus};
    use crate::runner::RecordingRunner;

    fn ans(node: &str, verdict: Verdict, reason: Option<&str>) -> NameAnswer {
        NameAnswer {
            node: node.into(),
            name: "web".into(),
            answer: verdict,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn answers_are_one_line_of_json_both_ways() {
        let a = ans(
            "node2",
            Verdict::Taken,
            Some("web already exists on node2 in /srv/store2/containers"),
        );
        let line = serde_json::to_string(&a).unwrap();
        assert_eq!(
            line,
            r#"{"node":"node2","name":"web","answer":"taken","reason":"web already exists on node2 in /srv/store2/containers"}"#
        );
        assert_eq!(parse_answer(&format!("\n{line}\n\n"), "web").unwrap(), a);
        let free = parse_answer(r#"{"node":"node2","name":"web","answer":"free"}"#, "web");
        assert_eq!(free.unwrap(), ans("node2", Verdict::Free, None));
        assert!(parse_answer("", "web")
            .unwrap_err()
            .contains("answered nothing"));
        assert!(parse_answer("Usage: ctmgr", "web")
            .unwrap_err()
            .contains("unreadable"));
        assert!(
            parse_answer(r#"{"node":"node2","name":"db","answer":"free"}"#, "web")
                .unwrap_err()
                .contains("\"db\"")
        );
        assert!(parse_answer(r#"{"node":"node2","name":"web","answer":"maybe"}"#, "web").is_err());
    }

    fn code(d: Decision) -> ExitStatus {
        match d.into_result() {
            Ok(_) => ExitStatus::Done,
            Err(e) => classify(&e),
        }
    }

    #[test]
    fn the_decision() {
        let free = || Ok(ans("node2", Verdict::Free, None));
        assert_eq!(decide("node2", "web", free(), false), Decision::Proceed);
        let taken = || {
            Ok(ans(
                "node2",
                Verdict::Taken,
                Some("web already exists on node2 in /srv/store2/containers"),
            ))
        };
        let d = decide("node2", "web", taken(), false);
        assert!(
            matches!(&d, Decision::Taken(m) if m.contains("web already exists on node2 in /srv/store2/containers; names are unique in the cluster")),
            "{d:?}"
        );
        assert_eq!(code(d), ExitStatus::Usage);
        // --force never overrides a name the peer has.
        assert_eq!(
            code(decide("node2", "web", taken(), true)),
            ExitStatus::Usage
        );
        let busy = || {
            Ok(ans(
                "node2",
                Verdict::Busy,
                Some("node2 is creating a container named web right now (pid 7)"),
            ))
        };
        let d = decide("node2", "web", busy(), false);
        assert!(matches!(&d, Decision::Busy(m) if m.contains("right now") && m.contains("retry")));
        assert_eq!(code(d), ExitStatus::Refused);
        assert_eq!(
            code(decide("node2", "web", busy(), true)),
            ExitStatus::Refused
        );
        // Cannot ask: exit 3, --force goes on with a warning.
        let down = || Err("root@10.0.254.2: ssh failed: Connection refused".to_string());
        let d = decide("node2", "web", down(), false);
        assert!(
            matches!(&d, Decision::Unasked(m) if m.contains("Connection refused") && m.contains("--force")),
            "{d:?}"
        );
        assert_eq!(code(d), ExitStatus::Refused);
        let d = decide("node2", "web", down(), true);
        assert!(matches!(&d, Decision::Forced(m) if m.contains("--force")));
        assert_eq!(code(d), ExitStatus::Done);
        // An answer from another node, or an error there, is no answer.
        let d = decide("node2", "web", Ok(ans("node1", Verdict::Free, None)), false);
        assert!(matches!(&d, Decision::Unasked(m) if m.contains("\"node1\"")));
        let d = decide(
            "node2",
            "web",
            Ok(ans("node2", Verdict::Error, Some("cannot open lock file"))),
            false,
        );
        assert!(matches!(&d, Decision::Unasked(m) if m.contains("cannot open lock file")));
    }

    fn peer() -> Node {
        let config = Config::parse(
            "[cluster]\nname = \"t\"\n[[node]]\nname = \"node1\"\naddress = \"10.0.254.1\"\n[[node]]\nname = \"node2\"\naddress = \"10.0.254.2\"\nlan_address = \"10.1.0.6\"\n",
            Path::new("test.toml"),
        )
        .unwrap();
        config.node("node2").unwrap().clone()
    }

    const SSH: &str = "ssh -o BatchMode=yes -o ConnectTimeout=5 -o ServerAliveInterval=5 -o ServerAliveCountMax=2";

    #[test]
    fn asks_over_the_peer_link_then_the_lan_only_when_ssh_cannot_connect() {
        let p = peer();
        assert_eq!(ssh_targets(&p), ["root@10.0.254.2", "root@10.1.0.6"]);
        let r = RecordingRunner::new();
        let q = |t: &str| format!("{SSH} {t} -- ctmgr --config /t.toml __name-answer web");
        r.answer(
            &q("root@10.0.254.2"),
            255,
            "",
            "ssh: connect to host 10.0.254.2 port 22: No route to host\n",
        );
        r.answer(
            &q("root@10.1.0.6"),
            0,
            "{\"node\":\"node2\",\"name\":\"web\",\"answer\":\"free\"}\n",
            "",
        );
        let a = ask_peer(&r, &p, "web", Path::new("/t.toml")).unwrap();
        assert_eq!(a.answer, Verdict::Free);
        assert_eq!(r.commands().len(), 2);

        // An old ctmgr on the peer: no second try, and it is named.
        let r = RecordingRunner::new();
        r.answer(
            &q("root@10.0.254.2"),
            2,
            "",
            "error: unrecognized subcommand '__name-answer'\n",
        );
        let e = ask_peer(&r, &p, "web", Path::new("/t.toml")).unwrap_err();
        assert!(e.contains("does not know `__name-answer`"), "{e}");
        assert_eq!(r.commands().len(), 1);

        // Both paths down: both named.
        let r = RecordingRunner::new();
        r.answer(
            &q("root@10.0.254.2"),
            255,
            "",
            "ssh: connect to host 10.0.254.2 port 22: Connection refused\n",
        );
        r.answer(
            &q("root@10.1.0.6"),
            255,
            "",
            "ssh: connect to host 10.1.0.6 port 22: Connection refused\n",
        );
        let e = ask_peer(&r, &p, "web", Path::new("/t.toml")).unwrap_err();
        assert!(e.contains("10.0.254.2") && e.contains("10.1.0.6"), "{e}");
    }

    #[test]
    fn taken_in_names_what_is_there() {
        let d = tempfile::tempdir().unwrap();
        let lp = d.path().join("containers");
        std::fs::create_dir_all(lp.join("web")).unwrap();
        std::fs::write(
            lp.join("web/config"),
            format!("lxc.rootfs.path = btrfs:{}/web/rootfs\n", lp.display()),
        )
        .unwrap();
        let paths = vec![lp.clone()];
        assert_eq!(taken_in("node2", "db", &paths), None);
        assert_eq!(
            taken_in("node2", "web", &paths).unwrap(),
            format!("web already exists on node2 in {}", lp.display())
        );
        std::fs::create_dir_all(lp.join("half")).unwrap();
        std::fs::write(lp.join("half").join(crate::container::CREATING_MARKER), "").unwrap();
        assert!(taken_in("node2", "half", &paths)
            .unwrap()
            .contains("interrupted create"));
        std::fs::create_dir_all(lp.join("rep")).unwrap();
        std::fs::write(
            lp.join("rep/config"),
            "lxc.rootfs.path = btrfs:/srv/store1/containers/rep/rootfs\n",
        )
        .unwrap();
        assert!(taken_in("node2", "rep", &paths)
            .unwrap()
            .contains("replica"));
    }

    #[test]
    fn the_answer_is_busy_while_the_name_is_reserved_here() {
        let d = tempfile::tempdir().unwrap();
        let paths = vec![d.path().join("containers")];
        let busy = LockError::NameTimedOut {
            name: "web".into(),
            holder: "pid 7 (ctmgr create web)".into(),
            secs: 3,
        };
        let a = answer_reserved("node2", "web", &paths, Err(&busy));
        assert_eq!(a.answer, Verdict::Busy, "{a:?}");
        assert_eq!(
            a.reason.unwrap(),
            "node2 is creating a container named web right now (pid 7 (ctmgr create web))"
        );
        let a = answer_reserved("node2", "web", &paths, Ok(()));
        assert_eq!(a.answer, Verdict::Free);
        assert_eq!(answer("node2", "../x", &paths).answer, Verdict::Error);
    }
}
