//! A two-node "lab" for the simulator tests: a temp dir with `drbdadm`/`drbdsetup`
//! symlinks to the built binary, a drbd.conf, and a shared state dir. Commands run as one
//! node or the other through DRBD_SIM_NODE, with stdout and stderr captured into one
//! stream in the order they were written (as a terminal shows them).
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_ctmgr-drbd-sim");

pub const DRBD_CONF: &str = "resource r0 {
  on node1 { device /dev/drbd0 minor 0; disk /dev/loop-fake0; address 10.0.254.1:7788; meta-disk internal; }
  on node2 { device /dev/drbd0 minor 0; disk /dev/loop-fake0; address 10.0.254.2:7788; meta-disk internal; }
}
resource r1 {
  on node1 { device /dev/drbd1 minor 1; disk /dev/loop-fake1; address 10.0.254.1:7789; meta-disk internal; }
  on node2 { device /dev/drbd1 minor 1; disk /dev/loop-fake1; address 10.0.254.2:7789; meta-disk internal; }
}
";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Lab {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub state: PathBuf,
    pub conf: PathBuf,
    pub version: &'static str,
    /// Extra env for every command (e.g. DRBD_SIM_COLOR).
    pub extra_env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub out: String,
}

impl Lab {
    pub fn new(name: &str, version: &'static str) -> Lab {
        let dir = std::env::temp_dir().join(format!(
            "drbd-sim-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for n in ["drbdadm", "drbdsetup"] {
            std::os::unix::fs::symlink(BIN, bin.join(n)).unwrap();
        }
        let conf = dir.join("drbd.conf");
        fs::write(&conf, DRBD_CONF).unwrap();
        let statedir = dir.join("var-lib-drbd-sim");
        fs::create_dir_all(&statedir).unwrap();
        Lab {
            state: statedir.join("state.json"),
            dir,
            bin,
            conf,
            version,
            extra_env: vec![("DRBD_SIM_STEP_MS".into(), "0".into())],
        }
    }

    fn command(&self, node: &str, program: &Path, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let log = self.dir.join("output");
        let f = File::create(&log).unwrap();
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(program);
        c.args(args)
            .env("PATH", path)
            .env("DRBD_SIM_NODE", node)
            .env("DRBD_SIM_STATE", &self.state)
            .env("DRBD_SIM_CONF", &self.conf)
            .env("DRBD_SIM_VERSION", self.version)
            .env_remove("DRBD_SIM_HOLD_OPEN")
            .env_remove("DRBD_SIM_DISK_KB")
            .env_remove("DRBD_SIM_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        let status = c.status().expect("run simulator");
        Run {
            code: status.code().unwrap_or(-1),
            out: fs::read_to_string(&log).unwrap(),
        }
    }

    /// `drbdadm ARGS` or `drbdsetup ARGS` on a node (args[0] names the program).
    pub fn run_env(&self, node: &str, args: &[&str], extra: &[(&str, &str)]) -> Run {
        self.command(node, &self.bin.join(args[0]), &args[1..], extra)
    }

    pub fn run(&self, node: &str, args: &[&str]) -> Run {
        self.run_env(node, args, &[])
    }

    /// Runs and asserts success, returning the output.
    pub fn ok(&self, node: &str, args: &[&str]) -> String {
        let r = self.run(node, args);
        assert_eq!(r.code, 0, "{node}$ {}: {}", args.join(" "), r.out);
        r.out
    }

    /// A control command (`ctmgr-drbd-sim ARGS`).
    pub fn sim(&self, node: &str, args: &[&str]) -> Run {
        self.command(node, Path::new(BIN), args, &[])
    }

    pub fn proc_file(&self, node: &str) -> String {
        fs::read_to_string(
            self.state
                .parent()
                .unwrap()
                .join(format!("proc-drbd-{node}")),
        )
        .unwrap()
    }

    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(&self.state).unwrap()).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
