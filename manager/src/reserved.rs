//! The LXC config keys ctmgr owns (issue 10, D8; safety rules 1 and 9).
//!
//! A container's config carries ctmgr's guard hook, its rootfs subvolume on
//! the store, its fstab and its name. A profile's `config` items are applied
//! after ctmgr's own lines, and liblxc lets a later line (or an included
//! file) set, add to or clear any key: so a profile may not name these keys
//! at all ([`check_items`], refused when the profile is loaded, exit 2), and
//! every container is judged by its *effective* config — liblxc's view after
//! includes, not the file text ([`effective`], [`judge`]) — before ctmgr
//! starts it, before `sync` pushes it, and in `doctor`.
//!
//! The list and why each key is ctmgr's:
//! - `lxc.hook.pre-start`: the guard (rule 1). An empty value clears every
//!   pre-start hook, so even "adding" one is refused in a profile.
//! - `lxc.hook` (all hooks at once: an empty value clears them all) and
//!   `lxc.hook.version` (version 1 moves the hook's arguments into the
//!   environment and changes what the guard is told).
//! - `lxc.rootfs.path`: the rootfs subvolume the guard protects; `dir:/`
//!   would boot the node's own root. `lxc.rootfs.options`: mount options of
//!   that rootfs, which could mount something else than the guard checked.
//! - `lxc.include`: an included file can set or clear all of the above.
//!   ctmgr keeps the includes LXC templates write (LXC's own
//!   `/usr/share/lxc/config/`); liblxc's effective view still catches what
//!   such a file does.
//! - `lxc.mount.fstab`: ctmgr's fstab (data subvolumes), which `sync` keeps
//!   on the peer.
//! - `lxc.uts.name`: the container's name, which is its identity in the
//!   cluster.
//! - Legacy spellings liblxc 2 knew (`lxc.rootfs`, `lxc.utsname`,
//!   `lxc.mount`), in case an older liblxc reads the file.
//!
//! Other hooks (`lxc.hook.pre-mount`, `lxc.hook.start` …) run after the
//! pre-start hook, so they cannot bypass the guard; they stay the
//! operator's.

use std::path::{Path, PathBuf};

/// The keys ctmgr owns, with why.
pub const RESERVED: &[(&str, &str)] = &[
    (
        "lxc.hook.pre-start",
        "it carries ctmgr's guard (ctmgr-guard), which keeps a container from starting on a node that does not hold its store",
    ),
    (
        "lxc.hook",
        "an empty value clears every hook, ctmgr's guard included",
    ),
    (
        "lxc.hook.version",
        "it changes how hooks get their arguments, and so what ctmgr's guard is told",
    ),
    (
        "lxc.rootfs.path",
        "the rootfs is the container's subvolume on its store, which ctmgr's guard protects",
    ),
    (
        "lxc.rootfs.options",
        "mount options of the rootfs could mount something else than ctmgr's guard checked",
    ),
    (
        "lxc.include",
        "an included file can set or clear the keys ctmgr owns",
    ),
    (
        "lxc.mount.fstab",
        "it is ctmgr's fstab (data subvolumes), which sync keeps on the peer",
    ),
    ("lxc.uts.name", "it is the container's name in the cluster"),
    ("lxc.rootfs", "legacy spelling of lxc.rootfs.path"),
    ("lxc.utsname", "legacy spelling of lxc.uts.name"),
    ("lxc.mount", "legacy spelling of lxc.mount.fstab"),
];

/// Where the LXC package keeps the config files its templates include.
pub const LXC_CONFIG_DIR: &str = "/usr/share/lxc/config";

/// Why `key` is ctmgr's, or `None` when a profile may set it.
pub fn reserved(key: &str) -> Option<&'static str> {
    let key = key.trim();
    RESERVED
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, why)| *why)
}

/// The first profile item that names a reserved key: (index, key, why).
pub fn check_items(items: &[(String, String)]) -> Option<(usize, String, &'static str)> {
    items
        .iter()
        .enumerate()
        .find_map(|(i, (k, _))| reserved(k).map(|why| (i, k.trim().to_string(), why)))
}

/// Is this `lxc.include` one an LXC template writes (LXC's own config
/// dir, no `..`)?
pub fn is_lxc_include(path: &str) -> bool {
    let p = Path::new(path.trim());
    p.starts_with(LXC_CONFIG_DIR) && !p.components().any(|c| c.as_os_str() == "..")
}

/// A container's config as liblxc sees it after includes (the values ctmgr
/// judges), plus the includes its file names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    /// Every pre-start hook, in order.
    pub pre_start: Vec<String>,
    pub hook_version: Option<String>,
    pub rootfs: Option<String>,
    pub fstab: Option<String>,
    pub uts_name: Option<String>,
    /// `lxc.include` lines of the config file itself.
    pub includes: Vec<String>,
}

/// One way a container's effective config differs from what ctmgr wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// What a container `name` in `lxcpath` (`<mountpoint>/containers`) must
/// have: ctmgr's guard for its store, its own rootfs subvolume and fstab,
/// its name. `guard_exists` says whether a hook's executable is there (a
/// missing guard fails every start with "exited with status 127").
pub fn judge(
    name: &str,
    lxcpath: &Path,
    eff: &Effective,
    guard_exists: &dyn Fn(&Path) -> bool,
) -> Vec<Problem> {
    let dir = lxcpath.join(name);
    let mountpoint = lxcpath.parent().unwrap_or(lxcpath);
    let mut out = Vec::new();
    let mut p = |key: &'static str, message: String| out.push(Problem { key, message });

    let guards: Vec<(PathBuf, Option<crate::guard::GuardArgs>)> = eff
        .pre_start
        .iter()
        .filter_map(|h| {
            let mut words = h.split_whitespace();
            let exe = PathBuf::from(words.next()?);
            (exe.file_name()? == "ctmgr-guard").then(|| {
                let args: Vec<String> = words.map(str::to_string).collect();
                (exe, crate::guard::parse_args(&args).ok())
            })
        })
        .collect();
    match guards
        .iter()
        .find(|(_, a)| a.as_ref().is_some_and(|a| a.mountpoint == mountpoint))
    {
        None if guards.is_empty() => p(
            "lxc.hook.pre-start",
            format!(
                "the effective config (after includes) has no ctmgr-guard pre-start hook{}: a plain lxc-start could run it on a node that does not hold its store",
                if eff.pre_start.is_empty() {
                    String::new()
                } else {
                    format!(" (its pre-start hooks: {})", eff.pre_start.join("; "))
                }
            ),
        ),
        None => p(
            "lxc.hook.pre-start",
            format!(
                "the effective ctmgr-guard hook does not name this container's store at {}: {}",
                mountpoint.display(),
                eff.pre_start.join("; ")
            ),
        ),
        Some((exe, _)) if !guard_exists(exe) => p(
            "lxc.hook.pre-start",
            format!(
                "the guard {} named by its pre-start hook is missing (not an executable file there); every start would fail. Install ctmgr-guard at {}",
                exe.display(),
                exe.display()
            ),
        ),
        Some(_) => {}
    }
    if let Some(v) = eff.hook_version.as_deref().filter(|v| *v != "0") {
        p(
            "lxc.hook.version",
            format!("is {v}; ctmgr's guard expects 0 (arguments on its command line)"),
        );
    }
    let want_rootfs = dir.join("rootfs");
    match eff.rootfs.as_deref() {
        Some(v) if crate::guard::rootfs_dir(v).as_deref() == Some(want_rootfs.as_path()) => {}
        other => p(
            "lxc.rootfs.path",
            format!(
                "the effective rootfs is {}, not its subvolume {}",
                other.map_or("unset".to_string(), |v| format!("{v:?}")),
                want_rootfs.display()
            ),
        ),
    }
    let want_fstab = dir.join("fstab");
    if eff.fstab.as_deref().map(Path::new) != Some(want_fstab.as_path()) {
        p(
            "lxc.mount.fstab",
            format!(
                "the effective fstab is {}, not {}",
                eff.fstab
                    .as_deref()
                    .map_or("unset".to_string(), |v| format!("{v:?}")),
                want_fstab.display()
            ),
        );
    }
    if eff.uts_name.as_deref() != Some(name) {
        p(
            "lxc.uts.name",
            format!(
                "the effective hostname is {}, not the container's name {name}",
                eff.uts_name
                    .as_deref()
                    .map_or("unset".to_string(), |v| format!("{v:?}"))
            ),
        );
    }
    for inc in eff.includes.iter().filter(|i| !is_lxc_include(i)) {
        p(
            "lxc.include",
            format!(
                "includes {inc}; only LXC's own {LXC_CONFIG_DIR}/ files may be included (an include can set or clear the keys ctmgr owns)"
            ),
        );
    }
    out
}

/// Reads a container's effective config through liblxc (which follows its
/// includes) and the includes its file names.
pub fn effective(lxcpath: &Path, name: &str) -> anyhow::Result<Effective> {
    use anyhow::Context;
    let c = lxc_bindings::Container::new(name, lxcpath).with_context(|| {
        format!(
            "liblxc cannot load container {name} in {}",
            lxcpath.display()
        )
    })?;
    let get = |key: &str| -> anyhow::Result<Option<String>> {
        c.get_config_item(key)
            .with_context(|| format!("liblxc cannot read {key} of container {name}"))
    };
    let text = crate::container::read_config_text(&lxcpath.join(name).join("config"))
        .with_context(|| format!("cannot read the config of container {name}"))?;
    Ok(Effective {
        pre_start: get("lxc.hook.pre-start")?
            .map(|v| {
                v.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        hook_version: get("lxc.hook.version")?,
        rootfs: get("lxc.rootfs.path")?,
        fstab: get("lxc.mount.fstab")?,
        uts_name: get("lxc.uts.name")?,
        includes: crate::container::config_values(&text, "lxc.include")
            .into_iter()
            .map(str::to_string)
            .collect(),
    })
}

/// Is `path` an executable regular file?
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The problems of container `name` in `lxcpath`, from liblxc's view: an
/// unreadable config is one problem.
pub fn problems(lxcpath: &Path, name: &str) -> Vec<Problem> {
    problems_with(lxcpath, name, &is_executable)
}

/// [`problems`] with another test for the guard executable (`sync` judges
/// the config it pushes, not this node's installation).
pub fn problems_with(
    lxcpath: &Path,
    name: &str,
    guard_exists: &dyn Fn(&Path) -> bool,
) -> Vec<Problem> {
    match effective(lxcpath, name) {
        Ok(eff) => judge(name, lxcpath, &eff, guard_exists),
        Err(e) => vec![Problem {
            key: "config",
            message: format!("{e:#}"),
        }],
    }
}

/// All problems as one sentence for an error message.
pub fn describe(name: &str, problems: &[Problem]) -> String {
    format!(
        "the config of container {name} is not what ctmgr wrote: {}. Fix or remove the offending lines (and includes) in its config, or recreate it with ctmgr",
        problems
            .iter()
            .map(Problem::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn profiles_may_not_name_reserved_keys() {
        assert_eq!(check_items(&items(&[("lxc.start.delay", "0")])), None);
        for key in [
            "lxc.hook.pre-start",
            " lxc.hook.pre-start ",
            "lxc.hook",
            "lxc.hook.version",
            "lxc.rootfs.path",
            "lxc.rootfs.options",
            "lxc.include",
            "lxc.mount.fstab",
            "lxc.uts.name",
            "lxc.rootfs",
        ] {
            let (i, k, why) = check_items(&items(&[("lxc.start.delay", "0"), (key, "")])).unwrap();
            assert_eq!((i, k.as_str()), (1, key.trim()));
            assert!(!why.is_empty());
        }
        // Other hooks run after the guard: the operator's.
        assert_eq!(
            check_items(&items(&[("lxc.hook.start-host", "/bin/true")])),
            None
        );
        assert_eq!(
            check_items(&items(&[("lxc.mount.entry", "a b none bind 0 0")])),
            None
        );
    }

    #[test]
    fn lxc_own_includes_only() {
        assert!(is_lxc_include("/usr/share/lxc/config/common.conf"));
        assert!(is_lxc_include(" /usr/share/lxc/config/debian.common.conf"));
        assert!(!is_lxc_include("/usr/share/lxc/config/../../../etc/x.conf"));
        assert!(!is_lxc_include("/srv/store1/containers/web/clear.conf"));
        assert!(!is_lxc_include("/usr/share/lxc/configx/a.conf"));
    }

    fn good() -> Effective {
        Effective {
            pre_start: vec!["/usr/local/sbin/ctmgr-guard --store store1 --mountpoint /srv/store1 --device /dev/drbd0 --drbd-resource r0".into()],
            hook_version: Some("0".into()),
            rootfs: Some("btrfs:/srv/store1/containers/web/rootfs".into()),
            fstab: Some("/srv/store1/containers/web/fstab".into()),
            uts_name: Some("web".into()),
            includes: vec!["/usr/share/lxc/config/common.conf".into()],
        }
    }

    fn keys(eff: &Effective) -> Vec<&'static str> {
        judge("web", Path::new("/srv/store1/containers"), eff, &|_| true)
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    #[test]
    fn the_effective_config_is_judged() {
        assert!(keys(&good()).is_empty());
        // Cleared through an include: liblxc reports no pre-start hook.
        let mut e = good();
        e.pre_start.clear();
        e.includes
            .push("/srv/store1/containers/web/clear.conf".into());
        assert_eq!(keys(&e), ["lxc.hook.pre-start", "lxc.include"]);
        // Another hook instead of the guard.
        let mut e = good();
        e.pre_start = vec!["/bin/true".into()];
        let p = judge("web", Path::new("/srv/store1/containers"), &e, &|_| true);
        assert!(p[0].message.contains("/bin/true"), "{p:?}");
        // The guard of another store.
        let mut e = good();
        e.pre_start = vec!["/usr/local/sbin/ctmgr-guard --store store2 --mountpoint /srv/store2 --device /dev/drbd1".into()];
        assert_eq!(keys(&e), ["lxc.hook.pre-start"]);
        // A further hook after the guard is fine.
        let mut e = good();
        e.pre_start.push("/usr/local/bin/net-setup".into());
        assert!(keys(&e).is_empty());
        // dir:/ and friends.
        for v in [
            "dir:/",
            "btrfs:/srv/store1/containers/db/rootfs",
            "overlay:/a:/b",
        ] {
            let mut e = good();
            e.rootfs = Some(v.into());
            assert_eq!(keys(&e), ["lxc.rootfs.path"], "{v}");
        }
        let mut e = good();
        e.rootfs = Some("/srv/store1/containers/web/rootfs".into());
        assert!(keys(&e).is_empty());
        let mut e = good();
        e.uts_name = Some("web2".into());
        e.fstab = None;
        e.hook_version = Some("1".into());
        assert_eq!(
            keys(&e),
            ["lxc.hook.version", "lxc.mount.fstab", "lxc.uts.name"]
        );
    }

    #[test]
    fn a_missing_guard_says_where_it_was_expected() {
        let p = judge("web", Path::new("/srv/store1/containers"), &good(), &|_| {
            false
        });
        assert_eq!(p.len(), 1);
        assert!(
            p[0].message.contains("/usr/local/sbin/ctmgr-guard")
                && p[0].message.contains("missing"),
            "{p:?}"
        );
        assert!(is_executable(Path::new("/bin/sh")));
        assert!(!is_executable(Path::new("/nonexistent/ctmgr-guard")));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("ctmgr-guard");
        std::fs::write(&plain, "").unwrap();
        assert!(!is_executable(&plain));
        assert!(!is_executable(dir.path()));
    }
}
