//! Tests against the real liblxc, on a loop-backed Btrfs filesystem.
//!
//! They need root and loop devices (the CI runs as root) and fail with a
//! clear message without them. Lifecycle operations (create, start, freeze,
//! shutdown, stop, destroy) are never run in this multi-threaded test
//! process: liblxc forks, and forking from a threaded process is unsafe (lxc
//! issues #2245, #4269). The test re-executes its own binary with
//! `--exact <test> --nocapture` and `LXC_BINDINGS_TEST_OP` set; the child
//! performs that one operation, prints its result and exits. Every child and
//! every external command runs under a deadline, and guards undo what the
//! tests made (container, mount, loop device, temp dirs) even on panic.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lxc_bindings::{list_defined, Container, Error, State};

const OP_ENV: &str = "LXC_BINDINGS_TEST_OP";
const LXCPATH_ENV: &str = "LXC_BINDINGS_TEST_LXCPATH";
const NAME_ENV: &str = "LXC_BINDINGS_TEST_NAME";
const RESULT_TAG: &str = "LXC-BINDINGS-TEST-RESULT:";

/// Hang protection only (nothing asserts on durations): a child or tool
/// still running after this is killed and the test fails.
const TOOL_LIMIT: Duration = Duration::from_secs(60);
const CHILD_LIMIT: Duration = Duration::from_secs(180);

// ----- bounded external commands ------------------------------------------

struct Finished {
    /// `None`: killed at the deadline.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

fn read_all(mut f: File) -> String {
    let mut s = String::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_string(&mut s);
    s
}

/// Runs `cmd` with output going to anonymous files (a daemon inheriting a
/// pipe could otherwise block us), killing it at the deadline.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Finished {
    let out = tempfile::tempfile().expect("cannot create a temp file for stdout");
    let err = tempfile::tempfile().expect("cannot create a temp file for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("cannot clone temp file"))
        .stderr(err.try_clone().expect("cannot clone temp file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot wait for {cmd:?}: {e}"),
        }
    };
    Finished {
        status,
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

fn tool(argv: &[&str]) -> Finished {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    run_bounded(&mut cmd, TOOL_LIMIT)
}

fn must(argv: &[&str]) -> String {
    let f = tool(argv);
    assert!(
        f.ok(),
        "{argv:?} failed ({}): {}{}",
        f.status
            .map_or("killed at the deadline".to_owned(), |s| s.to_string()),
        f.stdout,
        f.stderr
    );
    f.stdout
}

// ----- child-process lifecycle operations ---------------------------------

/// If this process is a child started by `in_child`, performs its one
/// operation, prints the result and exits; otherwise returns.
fn child_entry() {
    let Ok(op) = std::env::var(OP_ENV) else {
        return;
    };
    let lxcpath = PathBuf::from(std::env::var(LXCPATH_ENV).unwrap_or_default());
    let name = std::env::var(NAME_ENV).unwrap_or_default();
    // `perform` drops its handle before we exit (exit skips destructors).
    let (code, line) = match perform(&op, &lxcpath, &name) {
        Ok(detail) => (0, format!("{RESULT_TAG} ok {detail}")),
        Err(e) => (1, format!("{RESULT_TAG} err {e}")),
    };
    // Own line: libtest may have printed "test NAME ... " without a newline.
    println!("\n{line}");
    std::process::exit(code);
}

fn perform(op: &str, lxcpath: &Path, name: &str) -> Result<String, Error> {
    let c = Container::new(name, lxcpath)?;
    let detail = match op {
        "create" => {
            // /etc/lxc/default.conf wants veth on lxcbr0, which may not exist.
            c.clear_config_item("lxc.net")?;
            c.set_config_item("lxc.net.0.type", "empty")?;
            c.create("busybox", Some("btrfs"), &[])?;
            String::new()
        }
        "start" => c.start().map(|()| String::new())?,
        "start-undefined" => {
            // Should be refused before liblxc is called; if not, make sure
            // liblxc fails on the rootfs instead of booting the host's `/`.
            c.set_config_item("lxc.rootfs.path", "/nonexistent/ctmgr-test-rootfs")?;
            c.start().map(|()| String::new())?
        }
        "freeze" => c.freeze().map(|()| String::new())?,
        "unfreeze" => c.unfreeze().map(|()| String::new())?,
        "shutdown" => format!("stopped={}", c.shutdown(60)?),
        "stop" => c.stop().map(|()| String::new())?,
        "destroy" => c.destroy().map(|()| String::new())?,
        "ips" => c.ips(Some("inet")).join(","),
        other => format!("unknown op {other}"),
    };
    Ok(detail)
}

/// Runs `op` on the container in a re-executed copy of this test binary.
/// `Ok(detail)` or `Err(error text)` as the child reported it.
fn in_child(test: &str, op: &str, lxcpath: &Path, name: &str) -> Result<String, String> {
    let exe = std::env::current_exe().expect("cannot find the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(OP_ENV, op)
        .env(LXCPATH_ENV, lxcpath)
        .env(NAME_ENV, name);
    let f = run_bounded(&mut cmd, CHILD_LIMIT);
    let status = f.status.unwrap_or_else(|| {
        panic!(
            "child {op} of {name} killed at the deadline\nstdout:\n{}\nstderr:\n{}",
            f.stdout, f.stderr
        )
    });
    let line = f
        .stdout
        .lines()
        .find_map(|l| l.split_once(RESULT_TAG).map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child {op} of {name} ({status}) printed no result\nstdout:\n{}\nstderr:\n{}",
                f.stdout, f.stderr
            )
        })
        .trim()
        .to_owned();
    match line.split_once(' ').unwrap_or((line.as_str(), "")) {
        ("ok", detail) if status.success() => Ok(detail.to_owned()),
        ("err", error) => Err(error.to_owned()),
        _ => panic!("child {op} of {name} ({status}) reported {line:?}"),
    }
}

// ----- guards ---------------------------------------------------------------

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests drive real liblxc, loop devices and mounts: run them as root"
    );
}

/// A 512 MiB sparse image with Btrfs, on a loop device, mounted on a temp
/// dir. Drop unmounts, detaches and removes it.
struct LoopBtrfs {
    dir: tempfile::TempDir,
    loopdev: Option<String>,
    mounted: bool,
}

impl LoopBtrfs {
    fn new() -> LoopBtrfs {
        let dir = tempfile::Builder::new()
            .prefix("lxc-bindings-test.")
            .tempdir()
            .expect("cannot create a temp dir");
        let mut fs = LoopBtrfs {
            dir,
            loopdev: None,
            mounted: false,
        };
        let img = fs.dir.path().join("store.img");
        File::create(&img)
            .and_then(|f| f.set_len(512 * 1024 * 1024))
            .expect("cannot create the sparse image");
        let img = img.to_str().expect("temp path is not utf-8").to_owned();
        must(&["mkfs.btrfs", "-q", &img]);
        let attach = tool(&["losetup", "--find", "--show", &img]);
        assert!(
            attach.ok(),
            "cannot attach a loop device (does this machine have /dev/loop-control \
             and are we root?): {}",
            attach.stderr
        );
        fs.loopdev = Some(attach.stdout.trim().to_owned());
        let mnt = fs.mountpoint();
        std::fs::create_dir(&mnt).expect("cannot create the mountpoint");
        let dev = fs.loopdev.clone().unwrap_or_default();
        must(&[
            "mount",
            "-t",
            "btrfs",
            &dev,
            mnt.to_str().unwrap_or_default(),
        ]);
        fs.mounted = true;
        fs
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let mnt = self.mountpoint();
        let mnt = mnt.to_str().unwrap_or_default();
        if self.mounted && !tool(&["umount", mnt]).ok() {
            // Something still holds it; detach it so the loop device frees
            // itself when that goes away.
            let _ = tool(&["umount", "-l", mnt]);
        }
        if let Some(dev) = &self.loopdev {
            let _ = tool(&["losetup", "-d", dev]);
        }
    }
}

/// Stops and destroys the container if a test left it behind (external
/// tools, bounded, so cleanup never forks from this process).
struct ContainerGuard {
    lxcpath: PathBuf,
    name: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let p = self.lxcpath.to_str().unwrap_or_default();
        if self.lxcpath.join(&self.name).exists() {
            let _ = tool(&["lxc-stop", "-P", p, "-n", &self.name, "-k"]);
            let _ = tool(&["lxc-destroy", "-P", p, "-n", &self.name]);
        }
    }
}

// ----- tests ---------------------------------------------------------------

const LIFECYCLE: &str = "real_container_lifecycle_on_btrfs";

#[test]
fn real_container_lifecycle_on_btrfs() {
    child_entry();
    require_root();
    let fs = LoopBtrfs::new();
    let lxcpath = fs.mountpoint().join("containers");
    std::fs::create_dir(&lxcpath).expect("cannot create the lxcpath");
    let name = "ct1";
    let _guard = ContainerGuard {
        lxcpath: lxcpath.clone(),
        name: name.to_owned(),
    };
    let child = |op: &str| in_child(LIFECYCLE, op, &lxcpath, name);

    let c = Container::new(name, &lxcpath).unwrap();
    assert!(!c.is_defined());
    assert_eq!(c.name(), name);
    assert_eq!(c.lxcpath(), lxcpath);
    assert!(list_defined(&lxcpath).unwrap().is_empty());
    drop(c);

    // create
    child("create").unwrap_or_else(|e| panic!("create failed: {e}"));
    let c = Container::new(name, &lxcpath).unwrap();
    assert!(c.is_defined());
    assert_eq!(c.state(), State::Stopped);
    assert!(!c.is_running());
    assert_eq!(c.init_pid(), None);
    let config = lxcpath.join(name).join("config");
    assert_eq!(c.config_file_name(), Some(config.clone()));
    let rootfs = lxcpath.join(name).join("rootfs");
    // liblxc keeps the "btrfs:" type prefix in the file, not in the value.
    assert_eq!(
        c.get_config_item("lxc.rootfs.path").unwrap(),
        Some(rootfs.display().to_string())
    );
    must(&[
        "btrfs",
        "subvolume",
        "show",
        rootfs.to_str().unwrap_or_default(),
    ]);
    assert_eq!(
        c.get_config_item("lxc.net.0.type").unwrap().as_deref(),
        Some("empty")
    );
    assert_eq!(list_defined(&lxcpath).unwrap(), vec![name.to_owned()]);
    let text = std::fs::read_to_string(&config).unwrap();
    let rootfs_line = format!("lxc.rootfs.path = btrfs:{}", rootfs.display());
    assert!(text.contains(&rootfs_line), "{text}");
    assert!(
        !text.contains("lxc.log"),
        "the handle's log settings leaked into the config:\n{text}"
    );

    // config round trip: set, save, re-read through a fresh handle
    assert_eq!(c.get_config_item("lxc.group").unwrap(), None);
    c.set_config_item("lxc.group", "ctmgrtest").unwrap();
    assert_eq!(
        c.get_config_item("lxc.group").unwrap().as_deref(),
        Some("ctmgrtest")
    );
    // A failed start carries liblxc's text, logged by its forked children.
    c.clear_config_item("lxc.net").unwrap();
    c.set_config_item("lxc.net.0.type", "veth").unwrap();
    c.set_config_item("lxc.net.0.link", "ctmgr-nobr0").unwrap();
    c.save_config(None).unwrap();
    let err = child("start").expect_err("start with a missing bridge succeeded");
    assert!(
        err.starts_with("lxc start failed for container ct1: ")
            && err.contains("bridge \"ctmgr-nobr0\""),
        "{err}"
    );
    assert_eq!(c.state(), State::Stopped);

    // A veth without a bridge gives the container a static address for
    // ips(). The busybox template's rcS runs udhcpc, whose deconfig step
    // flushes addresses: there is no DHCP server here, so take it out.
    let rcs = rootfs.join("etc/init.d/rcS");
    let script = std::fs::read_to_string(&rcs).unwrap();
    assert!(
        script.contains("/bin/udhcpc"),
        "template changed:\n{script}"
    );
    std::fs::write(&rcs, script.replace("/bin/udhcpc", "")).unwrap();
    c.clear_config_item("lxc.net").unwrap();
    c.set_config_item("lxc.net.0.type", "veth").unwrap();
    c.set_config_item("lxc.net.0.flags", "up").unwrap();
    c.set_config_item("lxc.net.0.ipv4.address", "192.0.2.10/24")
        .unwrap();
    c.save_config(None).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("lxc.group = ctmgrtest"), "{text}");
    assert!(
        !text.contains("lxc.log") && !text.contains(c.log_file().to_str().unwrap()),
        "the handle's log settings leaked into the config:\n{text}"
    );
    let alt = fs.dir.path().join("alt.conf");
    c.save_config(Some(&alt)).unwrap();
    let alt_text = std::fs::read_to_string(&alt).unwrap();
    assert!(alt_text.contains("lxc.group = ctmgrtest"), "{alt_text}");
    assert!(!alt_text.contains("lxc.log"), "{alt_text}");
    {
        let again = Container::new(name, &lxcpath).unwrap();
        assert_eq!(
            again.get_config_item("lxc.group").unwrap().as_deref(),
            Some("ctmgrtest")
        );
        assert_eq!(
            again
                .get_config_item("lxc.net.0.ipv4.address")
                .unwrap()
                .as_deref(),
            Some("192.0.2.10/24")
        );
        assert_eq!(again.get_config_item("lxc.log.file").unwrap(), None);
    }
    // The container's own lxc.log.* values are kept apart from the handle's
    // private log: what the caller sets is what gets saved.
    c.set_config_item("lxc.log.level", "INFO").unwrap();
    assert_eq!(
        c.get_config_item("lxc.log.level").unwrap().as_deref(),
        Some("INFO")
    );
    c.save_config(None).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("lxc.log.level = INFO"), "{text}");
    assert!(!text.contains("lxc.log.file"), "{text}");
    c.clear_config_item("lxc.log.level").unwrap();
    c.clear_config_item("lxc.group").unwrap();
    assert_eq!(c.get_config_item("lxc.group").unwrap(), None);
    c.save_config(None).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("lxc.group"), "{text}");
    assert!(!text.contains("lxc.log"), "{text}");

    // start, inspect
    child("start").unwrap_or_else(|e| panic!("start failed: {e}"));
    assert!(c.wait("RUNNING", 30), "not RUNNING: {}", c.state());
    assert_eq!(c.state(), State::Running);
    assert!(c.is_running());
    let pid = c.init_pid().expect("running container without init pid");
    assert!(pid > 0 && Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(child("ips").unwrap(), "192.0.2.10");

    // freeze, unfreeze
    child("freeze").unwrap_or_else(|e| panic!("freeze failed: {e}"));
    assert_eq!(c.state(), State::Frozen);
    child("unfreeze").unwrap_or_else(|e| panic!("unfreeze failed: {e}"));
    assert_eq!(c.state(), State::Running);

    // clean shutdown
    assert_eq!(child("shutdown").unwrap(), "stopped=true");
    assert!(c.wait("STOPPED", 30), "not STOPPED: {}", c.state());
    assert_eq!(c.state(), State::Stopped);
    assert_eq!(c.init_pid(), None);

    // start again, hard stop
    child("start").unwrap_or_else(|e| panic!("second start failed: {e}"));
    assert_eq!(c.state(), State::Running);
    child("stop").unwrap_or_else(|e| panic!("stop failed: {e}"));
    assert!(c.wait("STOPPED", 30), "not STOPPED: {}", c.state());
    assert!(!c.is_running());

    // destroy
    child("destroy").unwrap_or_else(|e| panic!("destroy failed: {e}"));
    assert!(!c.is_defined());
    assert!(!lxcpath.join(name).exists());
    assert!(list_defined(&lxcpath).unwrap().is_empty());
}

#[test]
fn real_create_with_missing_template_carries_liblxc_message() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let c = Container::new("ct-missing-template", dir.path()).unwrap();
    // liblxc looks the template up before forking, so this is safe here.
    let err = c.create("no-such-template-xyz", None, &[]).unwrap_err();
    match &err {
        Error::Lxc {
            op,
            container,
            message,
        } => {
            assert_eq!(*op, "create");
            assert_eq!(container, "ct-missing-template");
            // liblxc's text (lxccontainer.c: "Template \"%s\" not found").
            assert!(
                message.contains("Template \"no-such-template-xyz\" not found"),
                "{message}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().starts_with("lxc create failed"), "{err}");
    assert!(!c.is_defined());
}

const START_UNDEFINED: &str = "real_start_of_undefined_container_is_refused";

#[test]
fn real_start_of_undefined_container_is_refused() {
    child_entry();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let err = in_child(
        START_UNDEFINED,
        "start-undefined",
        dir.path(),
        "ct-undefined",
    )
    .expect_err("starting an undefined container succeeded");
    assert!(
        err.starts_with("lxc start failed for container ct-undefined: container is not defined"),
        "{err}"
    );
    assert!(!Container::new("ct-undefined", dir.path())
        .unwrap()
        .is_running());
}

#[test]
fn real_bad_arguments_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Container::new("a\0b", dir.path()),
        Err(Error::Nul { .. })
    ));
    let c = Container::new("ct-args", dir.path()).unwrap();
    assert!(matches!(
        c.set_config_item("lxc.uts.name", "x\0y"),
        Err(Error::Nul { .. })
    ));
    match c.get_config_item("lxc.no.such.key") {
        Err(Error::Lxc { message, .. }) => {
            assert!(message.contains("Unsupported config key"), "{message}")
        }
        other => panic!("unknown key gave {other:?}"),
    }
    // A known key that is not set is not an error.
    assert_eq!(c.get_config_item("lxc.net.7.type").unwrap(), None);
    assert_eq!(c.get_config_item("lxc.group").unwrap(), None);
    let err = c
        .set_config_item("lxc.no.such.key", "1")
        .expect_err("unknown key accepted");
    assert!(matches!(err, Error::Lxc { .. }), "{err:?}");
    assert!(!c.wait("NOT-A-STATE\0", 0));
    assert!(matches!(
        list_defined(&dir.path().join("missing")),
        Err(Error::List { .. })
    ));
    assert!(list_defined(dir.path()).unwrap().is_empty());
    assert!(lxc_bindings::version().starts_with("5."));
}
