//! What a lab leaves on disk under /run/ctmgr-lab/<name>/: the directory layout and
//! state.json. Everything a later process needs to operate on or tear down the lab is here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where labs live. Each lab's directory is a private bind mount on itself, so namespace
/// files can be bind-mounted inside it.
pub const LAB_ROOT: &str = "/run/ctmgr-lab";

/// One store of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreState {
    pub name: String,
    /// 1-based home node.
    pub home: usize,
    pub image: PathBuf,
    pub loop_dev: Option<String>,
    /// (resource, port, minor) when replicated.
    pub drbd: Option<(String, u16, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub nodes: usize,
    pub image_mib: u64,
    pub drbd_version: String,
    /// The process whose lab this is; `None` for a lab left up on purpose (`ctmgr-lab up`).
    pub owner_pid: Option<i32>,
    pub owner_start: Option<u64>,
    pub stores: Vec<StoreState>,
    pub link_cut: bool,
    pub crashed: Vec<usize>,
}

/// Paths of one lab, on the machine (the lab directory is visible at the same path inside
/// the nodes).
#[derive(Debug, Clone)]
pub struct Layout {
    pub name: String,
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(name: &str) -> Layout {
        Layout {
            name: name.to_string(),
            dir: Path::new(LAB_ROOT).join(name),
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// A namespace file: `who` is node1, node2 or lan; `kind` net, mnt or uts.
    pub fn ns_file(&self, who: &str, kind: &str) -> PathBuf {
        self.dir.join("ns").join(format!("{who}.{kind}"))
    }
    /// Bound over /usr/local/sbin in every node.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }
    /// Bound over /var/lib/drbd-sim in every node: the DRBD stand-in's shared state.
    pub fn sim_dir(&self) -> PathBuf {
        self.dir.join("drbd-sim")
    }
    pub fn node_dir(&self, n: usize) -> PathBuf {
        self.dir.join(format!("node{n}"))
    }
    pub fn image(&self, store: &str) -> PathBuf {
        self.dir.join(format!("{store}.img"))
    }

    pub fn read_state(&self) -> Result<State> {
        let path = self.state_file();
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Atomic: temp file, fsync, rename.
    pub fn write_state(&self, state: &State) -> Result<()> {
        let path = self.state_file();
        let tmp = self.dir.join("state.json.tmp");
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }
}

/// Lab names become directory names and parts of interface names: short and plain.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 8
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.as_bytes()[0].is_ascii_alphabetic();
    anyhow::ensure!(
        ok,
        "bad lab name {name:?}: 1 to 8 characters a-z0-9, starting with a letter"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("ctlab").is_ok());
        assert!(check_name("t2hzs0a1").is_ok());
        assert!(check_name("toolongname").is_err());
        assert!(check_name("../x").is_err());
        assert!(check_name("1abc").is_err());
        assert!(check_name("").is_err());
    }
}
