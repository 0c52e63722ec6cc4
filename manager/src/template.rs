//! Container profiles: which LXC template to run, its arguments, extra config
//! items, start order and snapshot-policy overrides.
//!
//! Built-in profiles come from `templates/` (compiled in); a file
//! `/etc/ctmgr/templates/NAME.toml` (or `$CTMGR_TEMPLATE_DIR`) overrides or
//! adds one. Profiles are data: parsing never runs anything.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::PolicyOverride;

/// Start order used when a container's config has no `lxc.start.order`.
pub const DEFAULT_START_ORDER: i64 = 50;

const BUILTIN: &[(&str, &str)] = &[
    ("busybox", include_str!("../../templates/busybox.toml")),
    ("debian", include_str!("../../templates/debian.toml")),
    ("mysql", include_str!("../../templates/mysql.toml")),
];

/// One container profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub source: String,
    pub description: String,
    /// The LXC template (`/usr/share/lxc/templates/lxc-<name>`).
    pub lxc_template: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// `lxc.start.order`: lower starts first.
    #[serde(default = "default_order")]
    pub start_order: i64,
    /// Whether the template works without network access.
    #[serde(default)]
    pub offline: bool,
    /// Extra LXC config items, applied in order.
    #[serde(default)]
    pub config: Vec<(String, String)>,
    /// A path inside the container that gets its own Btrfs subvolume.
    pub data_subvolume: Option<String>,
    /// Snapshot policy overrides for containers made from this profile.
    pub snapshots: Option<PolicyOverride>,
    /// Seconds a container of this profile gets for a clean shutdown before
    /// it is killed (release, migrate, `stop` without `--timeout`); a
    /// container's own `stop_timeout` in its ctmgr.toml wins.
    pub stop_timeout: Option<u64>,
}

fn default_order() -> i64 {
    DEFAULT_START_ORDER
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template {name:?}; known: {known}")]
    Unknown { name: String, known: String },
    #[error("template {name:?} in {source_name}: {message}")]
    Invalid {
        name: String,
        source_name: String,
        message: String,
    },
    #[error("{source_name}:{line}: template {name:?}: config item {key} is reserved: {why}; remove it (ctmgr writes this key itself, see docs/guard.md)")]
    Reserved {
        name: String,
        source_name: String,
        line: usize,
        key: String,
        why: &'static str,
    },
    #[error("could not read template file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where operators put their own profiles.
pub fn override_dir() -> PathBuf {
    std::env::var_os("CTMGR_TEMPLATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ctmgr/templates"))
}

/// Parses one profile's text.
pub fn parse(name: &str, source_name: &str, text: &str) -> Result<Template, TemplateError> {
    let mut t: Template = toml::from_str(text).map_err(|e| TemplateError::Invalid {
        name: name.to_string(),
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    t.name = name.to_string();
    t.source = source_name.to_string();
    if t.data_subvolume
        .as_deref()
        .is_some_and(|p| p.starts_with('/') || p.split('/').any(|c| c == ".." || c.is_empty()))
    {
        return Err(TemplateError::Invalid {
            name: name.to_string(),
            source_name: source_name.to_string(),
            message: "data_subvolume must be a relative path without '..'".to_string(),
        });
    }
    if t.stop_timeout
        .is_some_and(|s| s > crate::container::MAX_TIMEOUT_SECS)
    {
        return Err(TemplateError::Invalid {
            name: name.to_string(),
            source_name: source_name.to_string(),
            message: format!(
                "stop_timeout must be at most {} seconds",
                crate::container::MAX_TIMEOUT_SECS
            ),
        });
    }
    if let Some((index, key, why)) = crate::reserved::check_items(&t.config) {
        return Err(TemplateError::Reserved {
            name: name.to_string(),
            source_name: source_name.to_string(),
            line: item_line(text, &key, index),
            key,
            why,
        });
    }
    Ok(t)
}

/// The 1-based line of the `index`th `config` item, found as the `index`th
/// quoted `"key"` after the `config` key (outside comments); 0 when not
/// found.
fn item_line(text: &str, key: &str, index: usize) -> usize {
    let quoted = format!("\"{key}\"");
    let mut in_config = false;
    let mut seen = 0;
    for (n, line) in text.lines().enumerate() {
        let code = line.split('#').next().unwrap_or("");
        if code.trim_start().starts_with("config") {
            in_config = true;
        }
        if !in_config {
            continue;
        }
        // Items before this one may name other keys: count the items.
        for _ in code
            .matches('[')
            .skip(usize::from(code.trim_start().starts_with("config")))
        {
            seen += 1;
        }
        if code.contains(&quoted) && seen > index {
            return n + 1;
        }
    }
    0
}

/// Names of every available profile (built-in and from `dir`).
pub fn known(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                if let Some(stem) = p.file_stem() {
                    names.push(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Finds a profile: `dir/NAME.toml` first, then the built-in one.
pub fn load(name: &str, dir: &Path) -> Result<Template, TemplateError> {
    crate::names::validate("template", name).map_err(|e| TemplateError::Invalid {
        name: name.to_string(),
        source_name: "command line".to_string(),
        message: e.to_string(),
    })?;
    let file = dir.join(format!("{name}.toml"));
    match std::fs::read_to_string(&file) {
        Ok(text) => return parse(name, &file.display().to_string(), &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(TemplateError::Io { path: file, source }),
    }
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => parse(name, &format!("built-in templates/{name}.toml"), text),
        None => Err(TemplateError::Unknown {
            name: name.to_string(),
            known: known(dir).join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses() {
        let none = Path::new("/nonexistent-template-dir");
        for (name, _) in BUILTIN {
            let t = load(name, none).unwrap();
            assert!(!t.lxc_template.is_empty());
        }
        let mysql = load("mysql", none).unwrap();
        assert_eq!(mysql.data_subvolume.as_deref(), Some("var/lib/mysql"));
        assert!(mysql.start_order < load("busybox", none).unwrap().start_order);
        assert!(mysql.args.iter().any(|a| a == "mariadb-server"));
        assert!(load("busybox", none).unwrap().offline);
    }

    #[test]
    fn unknown_template_lists_the_known_ones() {
        let err = load("nope", Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("busybox, debian, mysql"), "{err}");
    }

    #[test]
    fn a_local_file_overrides_the_builtin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("debian.toml"),
            "description = \"local\"\nlxc_template = \"debian\"\nargs = [\"--mirror\", \"http://mirror.lan/debian\"]\n",
        )
        .unwrap();
        let t = load("debian", dir.path()).unwrap();
        assert_eq!(t.description, "local");
        assert_eq!(t.start_order, DEFAULT_START_ORDER);
        assert!(known(dir.path()).contains(&"debian".to_string()));
    }

    #[test]
    fn bad_profiles_are_refused() {
        let err = parse(
            "x",
            "test",
            "lxc_template = \"busybox\"\ndescription=\"d\"\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = parse(
            "x",
            "test",
            "lxc_template = \"b\"\ndescription=\"d\"\ndata_subvolume = \"../etc\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("data_subvolume"));
        assert!(load("../x", Path::new("/")).is_err());
    }

    #[test]
    fn reserved_keys_are_refused_with_file_and_line() {
        let text = "description = \"d\"\nlxc_template = \"busybox\"\n# the key \"lxc.hook.pre-start\" is ctmgr's\nconfig = [\n  [\"lxc.start.delay\", \"0\"],\n  [\"lxc.hook.pre-start\", \"\"],\n]\n";
        let err = parse("nohook", "/etc/ctmgr/templates/nohook.toml", text).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/ctmgr/templates/nohook.toml:6: template \"nohook\": config item lxc.hook.pre-start is reserved"),
            "{msg}"
        );
        let text = "description = \"d\"\nlxc_template = \"busybox\"\nconfig = [[\"lxc.rootfs.path\", \"dir:/\"]]\n";
        let msg = parse("x", "x.toml", text).unwrap_err().to_string();
        assert!(
            msg.starts_with("x.toml:3:") && msg.contains("lxc.rootfs.path"),
            "{msg}"
        );
    }
}
