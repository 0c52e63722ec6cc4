//! The shared state file: what the simulated kernels of both nodes know, stored as JSON and
//! changed only under an exclusive flock on a sibling lock file (bounded wait).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a command waits for the state lock before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Role {
    Primary,
    #[default]
    Secondary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "Primary",
            Role::Secondary => "Secondary",
        }
    }
}

/// DRBD disk states (names as in drbd-utils `drbd_strings.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Disk {
    Diskless,
    #[default]
    Inconsistent,
    Outdated,
    Consistent,
    UpToDate,
}

impl Disk {
    pub fn as_str(self) -> &'static str {
        match self {
            Disk::Diskless => "Diskless",
            Disk::Inconsistent => "Inconsistent",
            Disk::Outdated => "Outdated",
            Disk::Consistent => "Consistent",
            Disk::UpToDate => "UpToDate",
        }
    }

    pub fn parse(s: &str) -> Option<Disk> {
        [
            Disk::Diskless,
            Disk::Inconsistent,
            Disk::Outdated,
            Disk::Consistent,
            Disk::UpToDate,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(s))
    }
}

/// The 8.4 /proc/drbd counters (KiB), see drbd_proc.c. `oos` is derived, not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stats {
    pub ns: u64,
    pub nr: u64,
    pub dw: u64,
    pub dr: u64,
    pub al: u64,
    pub bm: u64,
    pub lo: u64,
    pub pe: u64,
    pub ua: u64,
    pub ap: u64,
    pub ep: u64,
}

impl Stats {
    pub fn fresh() -> Stats {
        Stats {
            ep: 1,
            ..Stats::default()
        }
    }

    /// Sets one counter by its /proc/drbd name.
    pub fn set(&mut self, key: &str, v: u64) -> bool {
        let slot = match key {
            "ns" => &mut self.ns,
            "nr" => &mut self.nr,
            "dw" => &mut self.dw,
            "dr" => &mut self.dr,
            "al" => &mut self.al,
            "bm" => &mut self.bm,
            "lo" => &mut self.lo,
            "pe" => &mut self.pe,
            "ua" => &mut self.ua,
            "ap" => &mut self.ap,
            "ep" => &mut self.ep,
            _ => return false,
        };
        *slot = v;
        true
    }
}

/// One resource as one node's kernel sees it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NodeRes {
    /// `create-md` was run on this node's disk.
    pub md: bool,
    /// The resource is configured in the (simulated) kernel.
    pub up: bool,
    pub role: Role,
    pub disk: Disk,
    /// Net config removed by `disconnect`: StandAlone until `connect`.
    pub standalone: bool,
    /// StandAlone because DRBD detected split brain on the last handshake.
    pub split_brain: bool,
    /// Was Primary while not connected: its data generation moved on.
    pub primary_while_disconnected: bool,
    /// `connect --discard-my-data` was given: lose a split-brain handshake.
    pub discard_my_data: bool,
    pub stats: Stats,
    /// What this node's kernel recorded about the peer's disk while not connected
    /// (`pdsk`): Outdated or Inconsistent after fencing, None = DUnknown. Cleared when
    /// the link is up again (then the peer's real disk shows).
    #[serde(default)]
    pub pdsk: Option<Disk>,
    /// A resync with this node as source finished under a fencing policy: DRBD calls
    /// `unfence-peer` here (run by the next drbdadm/drbdsetup invocation on this node).
    #[serde(default)]
    pub unfence_pending: bool,
}

/// A transition that completes after a number of command invocations or wall time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub started_ms: u64,
    pub calls: u64,
}

impl Progress {
    pub fn start() -> Progress {
        Progress {
            started_ms: now_ms(),
            calls: 0,
        }
    }

    /// Steps done: one per invocation, or one per `step_ms` of wall time, whichever is more.
    pub fn steps(&self, step_ms: u64) -> u64 {
        // step_ms == 0: driven by invocations only.
        let by_time = now_ms()
            .saturating_sub(self.started_ms)
            .checked_div(step_ms)
            .unwrap_or(0);
        self.calls.max(by_time)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resync {
    pub source: String,
    pub target: String,
    pub progress: Progress,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ResState {
    pub nodes: BTreeMap<String, NodeRes>,
    /// The replication link is established (both sides see each other).
    pub connected: bool,
    /// UUID/bitmap exchange in flight on a reconnect after the data diverged.
    pub handshake: Option<Progress>,
    pub resync: Option<Resync>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub crashed: BTreeSet<String>,
    pub link_cut: bool,
    pub resources: BTreeMap<String, ResState>,
}

impl State {
    pub fn node_res(&mut self, res: &str, node: &str) -> &mut NodeRes {
        self.resources
            .entry(res.to_string())
            .or_default()
            .nodes
            .entry(node.to_string())
            .or_default()
    }

    pub fn get(&self, res: &str, node: &str) -> NodeRes {
        self.resources
            .get(res)
            .and_then(|r| r.nodes.get(node))
            .cloned()
            .unwrap_or_default()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The state file held under its lock; dropping it releases the lock.
pub struct Locked {
    path: PathBuf,
    lock: File,
    pub state: State,
}

impl Locked {
    pub fn open(path: &Path) -> Result<Locked, String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open lock {}: {e}", lock_path.display()))?;
        acquire(&lock, &lock_path)?;
        let state = read_state(path)?;
        Ok(Locked {
            path: path.to_path_buf(),
            lock,
            state,
        })
    }

    /// Saves the state and releases the lock (while a handler runs that may call the
    /// sim itself). Until [`Locked::relock`], `state` is a stale copy.
    pub fn unlock(&mut self) -> Result<(), String> {
        self.save()?;
        self.lock
            .unlock()
            .map_err(|e| format!("cannot unlock {}: {e}", lock_path(&self.path).display()))
    }

    /// Takes the lock again and re-reads the state others may have changed meanwhile.
    pub fn relock(&mut self) -> Result<(), String> {
        acquire(&self.lock, &lock_path(&self.path))?;
        self.state = read_state(&self.path)?;
        Ok(())
    }

    /// Writes the state atomically (temp file, fsync, rename).
    pub fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.state).map_err(|e| e.to_string())?;
        write_atomic(&self.path, text.as_bytes())
    }
}

/// Takes the exclusive flock, waiting at most [`LOCK_TIMEOUT`].
fn acquire(lock: &File, lock_path: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "state lock {} still held after {}s",
                    lock_path.display(),
                    LOCK_TIMEOUT.as_secs()
                ))
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()))
            }
        }
    }
    Ok(())
}

fn read_state(path: &Path) -> Result<State, String> {
    match fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(State::default()),
        Ok(s) => serde_json::from_str(&s)
            .map_err(|e| format!("corrupt state file {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))
}
