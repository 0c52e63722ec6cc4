//! The LXC pre-start guard's decision (safety rule 1): a container may start
//! only on the node that holds its store. The hook gets the store's facts on
//! its command line (written into the container config at create), so it
//! works for a plain `lxc-start` from a replica config, without cluster.toml.
//! It fails closed: anything it cannot verify is a refusal.

use std::path::PathBuf;

use crate::mountinfo;
use crate::runner::Runner;
use crate::store::{holding, Holding};

/// What the hook was told about the container's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardArgs {
    pub store: String,
    pub mountpoint: PathBuf,
    pub device: PathBuf,
    pub drbd_resource: Option<String>,
    /// Where the peer keeps replicas of this store's containers.
    pub replica_dir: Option<PathBuf>,
    /// What LXC appends: container name, section, hook type.
    pub lxc_args: Vec<String>,
}

/// Parses the hook's arguments: `--store S --mountpoint M --device D
/// [--drbd-resource R]` followed by LXC's own `NAME lxc pre-start`.
pub fn parse_args(args: &[String]) -> Result<GuardArgs, String> {
    let mut store = None;
    let mut mountpoint = None;
    let mut device = None;
    let mut drbd_resource = None;
    let mut replica_dir = None;
    let mut lxc_args = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--store" => store = Some(value("--store")?),
            "--mountpoint" => mountpoint = Some(PathBuf::from(value("--mountpoint")?)),
            "--device" => device = Some(PathBuf::from(value("--device")?)),
            "--drbd-resource" => drbd_resource = Some(value("--drbd-resource")?),
            "--replica-dir" => replica_dir = Some(PathBuf::from(value("--replica-dir")?)),
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            other => lxc_args.push(other.to_string()),
        }
    }
    Ok(GuardArgs {
        store: store.ok_or("--store is required")?,
        mountpoint: mountpoint.ok_or("--mountpoint is required")?,
        device: device.ok_or("--device is required")?,
        drbd_resource,
        replica_dir,
        lxc_args,
    })
}

/// Ok when the store is held here; otherwise the refusal message.
/// `config_file` is the config being started (LXC passes it to hooks as
/// `LXC_CONFIG_FILE`).
pub fn check(
    args: &GuardArgs,
    config_file: Option<&std::path::Path>,
    runner: &dyn Runner,
) -> Result<(), String> {
    let container = args
        .lxc_args
        .first()
        .cloned()
        .or_else(|| std::env::var("LXC_NAME").ok())
        .unwrap_or_else(|| "?".to_string());
    let mounts = mountinfo::read().map_err(|e| {
        format!("ctmgr-guard: refusing to start {container}: cannot read the mount table: {e}")
    })?;
    match holding(
        &args.mountpoint,
        &args.device,
        args.drbd_resource.as_deref(),
        runner,
        &mounts,
    ) {
        Holding::Held => not_running_elsewhere(args, config_file, &container),
        other => Err(format!(
            "ctmgr-guard: refusing to start container {container}: its store {} is not held by this node ({}). \
             Start it on the node that holds {}, or move the store here with `ctmgr takeover {}`.",
            args.store,
            other.describe(&args.mountpoint),
            args.store,
            args.store
        )),
    }
}

/// The same container started from its own config and from its replica
/// (another lxcpath) would boot one rootfs twice: refuse the second start.
fn not_running_elsewhere(
    args: &GuardArgs,
    config: Option<&std::path::Path>,
    container: &str,
) -> Result<(), String> {
    if !crate::names::is_valid(container) {
        return Err(format!(
            "ctmgr-guard: refusing to start {container:?}: not a valid container name"
        ));
    }
    let own = args.mountpoint.join("containers");
    let from_own = config.is_none_or(|c| c.starts_with(&own));
    let mut others = Vec::new();
    if from_own {
        others.extend(args.replica_dir.clone());
    } else {
        others.push(own);
    }
    for lxcpath in others {
        if lxcpath.join(container).join("config").exists()
            && lxc_bindings::Container::new(container, &lxcpath).is_ok_and(|c| c.is_running())
        {
            return Err(format!(
                "ctmgr-guard: refusing to start container {container}: it is already running from {} on this node; one rootfs must never run twice",
                lxcpath.join(container).display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_hook_arguments_with_lxc_suffix() {
        let a = parse_args(&s(&[
            "--store",
            "store1",
            "--mountpoint",
            "/srv/store1",
            "--device",
            "/dev/drbd0",
            "--drbd-resource",
            "r0",
            "web",
            "lxc",
            "pre-start",
        ]))
        .unwrap();
        assert_eq!(a.store, "store1");
        assert_eq!(a.drbd_resource.as_deref(), Some("r0"));
        assert_eq!(a.lxc_args, s(&["web", "lxc", "pre-start"]));
        assert!(parse_args(&s(&["--store"])).is_err());
        assert!(parse_args(&s(&["--mountpoint", "/x", "--device", "/d"])).is_err());
        assert!(parse_args(&s(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn refuses_when_the_store_is_not_mounted() {
        let a = parse_args(&s(&[
            "--store",
            "store9",
            "--mountpoint",
            "/nonexistent/ctmgr-store9",
            "--device",
            "/dev/null",
            "web",
        ]))
        .unwrap();
        let runner = crate::runner::RecordingRunner::new();
        let msg = check(&a, None, &runner).unwrap_err();
        assert!(msg.contains("refusing to start container web"), "{msg}");
        assert!(
            msg.contains("not mounted at /nonexistent/ctmgr-store9"),
            "{msg}"
        );
    }
}
