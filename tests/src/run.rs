//! Running external programs with a deadline.
//!
//! Every program the lab starts goes through [`run`]: argument vectors only, stdin is
//! `/dev/null` (or a file with the given bytes), stdout and stderr go to anonymous temp files
//! (never pipes, so a daemon that keeps them open cannot block us), and the child runs in its
//! own process group, which is killed with SIGKILL when the deadline passes. This module must
//! never wait without a deadline.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Default deadline for a command run inside a node.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long we wait for a SIGKILLed child to be reaped before giving up on it.
const REAP_GRACE: Duration = Duration::from_secs(10);

/// Read at most this much of a child's stdout or stderr.
const MAX_CAPTURE: u64 = 16 << 20;

/// PATH for programs the lab runs on the machine itself (not inside a node).
pub const HOST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The result of one command: exit status and captured output.
#[derive(Debug, Clone)]
pub struct Output {
    pub argv: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The deadline passed and the process group was killed.
    pub timed_out: bool,
}

impl Output {
    /// stdout as one JSON document (`--json` output); panics, showing the whole output,
    /// when it is not one.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self}"))
    }

    /// Exited with 0 within the deadline.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// The exit code, `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `Ok(self)` when the command succeeded, else an error naming argv, status and output.
    pub fn check(self) -> anyhow::Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            Err(anyhow::anyhow!("{self}"))
        }
    }

    /// Panics with the full command report unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        if self.timed_out || self.code() != Some(code) {
            panic!("expected exit code {code}: {self}");
        }
        self
    }

    /// Panics with the full command report unless the command succeeded.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    fn spawn_failure(argv: Vec<String>, err: String) -> Output {
        Output {
            argv,
            // 127: what a shell reports for a program it could not run.
            status: ExitStatus::from_raw(127 << 8),
            stdout: String::new(),
            stderr: err,
            timed_out: false,
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ", self.argv.join(" "))?;
        if self.timed_out {
            write!(f, "timed out and was killed")?;
        } else {
            match (self.status.code(), self.status.signal()) {
                (Some(c), _) => write!(f, "exited with {c}")?,
                (None, Some(s)) => write!(f, "was killed by signal {s}")?,
                (None, None) => write!(f, "ended with {}", self.status)?,
            }
        }
        let out = self.stdout.trim_end();
        let err = self.stderr.trim_end();
        if !out.is_empty() {
            write!(f, "\n--- stdout:\n{out}")?;
        }
        if !err.is_empty() {
            write!(f, "\n--- stderr:\n{err}")?;
        }
        Ok(())
    }
}

/// How to run one command.
#[derive(Debug, Clone)]
pub struct Opts {
    pub timeout: Duration,
    /// Start from an empty environment (then `env` is all the child sees).
    pub env_clear: bool,
    pub env: Vec<(String, String)>,
    /// Bytes for stdin; `None` means `/dev/null`.
    pub stdin: Option<Vec<u8>>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            timeout: DEFAULT_TIMEOUT,
            env_clear: false,
            env: Vec::new(),
            stdin: None,
        }
    }
}

impl Opts {
    pub fn timeout(timeout: Duration) -> Opts {
        Opts {
            timeout,
            ..Opts::default()
        }
    }
}

/// Runs a program on the machine itself with `PATH` = [`HOST_PATH`].
pub fn host(argv: &[&str], timeout: Duration) -> Output {
    let opts = Opts {
        timeout,
        env: vec![("PATH".into(), HOST_PATH.into())],
        ..Opts::default()
    };
    run(argv, &opts)
}

/// Like [`host`], but an error unless it succeeds.
pub fn host_ok(argv: &[&str], timeout: Duration) -> anyhow::Result<Output> {
    host(argv, timeout).check()
}

/// Runs `argv` with the deadline in `opts`. Never fails: a program that cannot be started is
/// reported as exit code 127 with the reason in stderr.
pub fn run(argv: &[&str], opts: &Opts) -> Output {
    let owned: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    match run_inner(argv, opts) {
        Ok(out) => out,
        Err(e) => Output::spawn_failure(owned, format!("{e:#}")),
    }
}

fn run_inner(argv: &[&str], opts: &Opts) -> anyhow::Result<Output> {
    use anyhow::Context;
    let (prog, args) = argv.split_first().context("empty argument vector")?;
    let stdout = tempfile::tempfile().context("creating a temp file for stdout")?;
    let stderr = tempfile::tempfile().context("creating a temp file for stderr")?;
    let stdin = match &opts.stdin {
        None => Stdio::null(),
        Some(bytes) => {
            let mut f = tempfile::tempfile().context("creating a temp file for stdin")?;
            f.write_all(bytes).context("writing stdin temp file")?;
            f.seek(SeekFrom::Start(0))?;
            Stdio::from(f)
        }
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(stdin)
        .stdout(Stdio::from(stdout.try_clone()?))
        .stderr(Stdio::from(stderr.try_clone()?))
        .process_group(0);
    if opts.env_clear {
        cmd.env_clear();
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("cannot run {prog}"))?;
    let deadline = Instant::now() + opts.timeout;
    let mut pause = Duration::from_millis(1);
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for child")? {
            break st;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // The child leads its own process group: take its helpers down with it.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let grace = Instant::now() + REAP_GRACE;
            break loop {
                if let Some(st) = child.try_wait().context("waiting for killed child")? {
                    break st;
                }
                if Instant::now() >= grace {
                    // Stuck in the kernel (D state). Leave it; report what we have.
                    break ExitStatus::from_raw(libc::SIGKILL);
                }
                sleep(Duration::from_millis(20));
            };
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    };
    Ok(Output {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        status,
        stdout: read_all(stdout),
        stderr: read_all(stderr),
        timed_out,
    })
}

fn read_all(mut f: File) -> String {
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = (&mut f).take(MAX_CAPTURE).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Polls `f` until it returns `true` or `timeout` passes; returns the last answer.
pub fn wait_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_code() {
        let out = host(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            DEFAULT_TIMEOUT,
        );
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(!out.success());
    }

    #[test]
    fn kills_on_deadline_even_with_a_lingering_grandchild() {
        // Not a speed check: returning before the grandchild's 300 s shows it did not wait.
        let t = Instant::now();
        let out = host(
            &["sh", "-c", "sleep 300 & sleep 300"],
            Duration::from_millis(300),
        );
        assert!(out.timed_out, "{out}");
        assert!(t.elapsed() < Duration::from_secs(200), "{:?}", t.elapsed());
    }

    #[test]
    fn a_daemon_holding_stdout_does_not_block() {
        // Not a speed check: returning long before the daemon's 60 s shows it did not wait.
        let t = Instant::now();
        let out = host(&["sh", "-c", "(sleep 60 &) ; echo done"], DEFAULT_TIMEOUT);
        assert!(out.success(), "{out}");
        assert_eq!(out.stdout, "done\n");
        assert!(t.elapsed() < Duration::from_secs(45), "{:?}", t.elapsed());
    }

    #[test]
    fn missing_program_is_127() {
        let out = host(&["/nonexistent/prog"], DEFAULT_TIMEOUT);
        assert_eq!(out.code(), Some(127));
        assert!(out.stderr.contains("cannot run"));
    }

    #[test]
    fn stdin_bytes() {
        let opts = Opts {
            stdin: Some(b"hello".to_vec()),
            ..Opts::default()
        };
        let out = run(&["cat"], &opts);
        assert_eq!(out.stdout, "hello");
    }
}
