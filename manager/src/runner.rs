//! The one way ctmgr runs external programs (drbdadm, mount, ssh, …).
//!
//! Argument vectors only, never a shell (safety rule 7). Every run has a
//! deadline, and a failure carries the command line, exit status and stderr.
//! Program names are resolved through `[tools]` in cluster.toml, else PATH, so
//! the lab can put its DRBD stand-in first on PATH and the product code stays
//! the same on real hosts. `RecordingRunner` is the scripted fake for unit tests.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default deadline for one external program.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One external program run: name and arguments, plus a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: Duration,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Cmd {
        self.args.push(arg.as_ref().to_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// The command line as a person would type it (for messages only).
    pub fn display(&self) -> String {
        let mut line = self.program.clone();
        for a in &self.args {
            line.push(' ');
            if a.is_empty() || a.contains(char::is_whitespace) {
                line.push_str(&format!("{a:?}"));
            } else {
                line.push_str(a);
            }
        }
        line
    }
}

/// What a finished program printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("`{program}` not found on PATH{hint}")]
    NotFound { program: String, hint: String },
    #[error("could not run `{line}`")]
    Spawn {
        line: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{line}` did not finish within {secs} s and was killed")]
    Timeout { line: String, secs: u64 },
    #[error("`{line}` failed with exit code {code}: {stderr}")]
    Failed {
        line: String,
        code: i32,
        stderr: String,
    },
}

/// Runs external programs. `run` returns the output whatever the exit code;
/// `run_ok` turns a non-zero exit into `RunError::Failed`.
pub trait Runner: Sync {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;

    fn run_ok(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = self.run(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            let stderr = if out.stderr.trim().is_empty() {
                out.stdout.trim().to_string()
            } else {
                out.stderr.trim().to_string()
            };
            Err(RunError::Failed {
                line: cmd.display(),
                code: out.code,
                stderr,
            })
        }
    }
}

/// Runs real programs, resolving names through `[tools]` overrides then PATH.
#[derive(Debug, Default, Clone)]
pub struct SystemRunner {
    tools: BTreeMap<String, PathBuf>,
}

/// Which Debian package provides a program, for "not found" messages.
fn package_hint(program: &str) -> &'static str {
    match program {
        "drbdadm" | "drbdsetup" => " (install drbd-utils)",
        "btrfs" => " (install btrfs-progs)",
        "ssh" => " (install openssh-client)",
        "lxc-start" | "lxc-stop" | "lxc-ls" => " (install lxc)",
        "mount" | "umount" | "losetup" => " (install util-linux)",
        "ip" => " (install iproute2)",
        _ => "",
    }
}

impl SystemRunner {
    pub fn new(tools: BTreeMap<String, PathBuf>) -> SystemRunner {
        SystemRunner { tools }
    }

    /// Resolves a program name to the path that will run.
    pub fn resolve(&self, program: &str) -> Result<PathBuf, RunError> {
        if let Some(path) = self.tools.get(program) {
            return Ok(path.clone());
        }
        if program.contains('/') {
            return Ok(PathBuf::from(program));
        }
        find_on_path(program).ok_or_else(|| RunError::NotFound {
            program: program.to_string(),
            hint: package_hint(program).to_string(),
        })
    }

    /// Starts `cmd` with piped stdin/stdout for a long conversation (an ssh
    /// session). The caller owns the child; wrap it in `KillOnDrop`.
    pub fn spawn_piped(&self, cmd: &Cmd) -> Result<Child, RunError> {
        let path = self.resolve(&cmd.program)?;
        Command::new(path)
            .args(&cmd.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn {
                line: cmd.display(),
                source,
            })
    }
}

/// Looks a program up on PATH (first executable match).
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let path = self.resolve(&cmd.program)?;
        tracing::debug!(command = %cmd.display(), "running");
        let mut child = Command::new(path)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn {
                line: cmd.display(),
                source,
            })?;
        wait_with_deadline(&mut child, cmd)
    }
}

/// Collects a child's output, killing it when the deadline passes. Pipes are
/// drained on threads so a chatty program cannot block on a full pipe.
pub fn wait_with_deadline(child: &mut Child, cmd: &Cmd) -> Result<Output, RunError> {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + cmd.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout {
                    line: cmd.display(),
                    secs: cmd.timeout.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => {
                return Err(RunError::Spawn {
                    line: cmd.display(),
                    source,
                })
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(Output {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Kills and reaps a child when dropped (an ssh session, a `btrfs send`).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A scripted fake: records every command and answers from a script keyed by
/// the command line (`"drbdadm role r0"`), for unit tests of the planners and
/// executors.
#[derive(Default)]
pub struct RecordingRunner {
    script: Mutex<BTreeMap<String, Output>>,
    log: Mutex<Vec<String>>,
}

impl RecordingRunner {
    pub fn new() -> RecordingRunner {
        RecordingRunner::default()
    }

    /// Scripts the answer for one command line.
    pub fn answer(&self, line: &str, code: i32, stdout: &str, stderr: &str) {
        if let Ok(mut script) = self.script.lock() {
            script.insert(
                line.to_string(),
                Output {
                    code,
                    stdout: stdout.to_string(),
                    stderr: stderr.to_string(),
                },
            );
        }
    }

    /// Every command line run so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let line = cmd.display();
        if let Ok(mut log) = self.log.lock() {
            log.push(line.clone());
        }
        let script = self.script.lock().map(|s| s.get(&line).cloned());
        match script {
            Ok(Some(out)) => Ok(out),
            _ => Err(RunError::NotFound {
                program: line,
                hint: " (not scripted in this test)".to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_argv_code_and_stderr() {
        let runner = SystemRunner::default();
        let cmd = Cmd::new("ls").arg("/nonexistent-ctmgr-path");
        let err = runner.run_ok(&cmd).unwrap_err().to_string();
        assert!(
            err.contains("`ls /nonexistent-ctmgr-path` failed with exit code 2"),
            "{err}"
        );
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn deadline_kills_a_hanging_program() {
        let runner = SystemRunner::default();
        let cmd = Cmd::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(200));
        let started = Instant::now();
        let err = runner.run(&cmd).unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(25));
    }

    #[test]
    fn missing_program_names_its_package() {
        let err = SystemRunner::default()
            .run(&Cmd::new("drbdadm-does-not-exist"))
            .unwrap_err();
        assert!(err.to_string().contains("not found on PATH"));
        let hint = package_hint("drbdadm");
        assert!(hint.contains("drbd-utils"));
    }

    #[test]
    fn arguments_are_never_interpreted_by_a_shell() {
        let out = SystemRunner::default()
            .run_ok(&Cmd::new("echo").arg("$(id); `x` && y"))
            .unwrap();
        assert_eq!(out.stdout, "$(id); `x` && y\n");
    }

    #[test]
    fn recording_runner_answers_from_its_script() {
        let r = RecordingRunner::new();
        r.answer("drbdadm role r0", 0, "Primary\n", "");
        assert_eq!(
            r.run(&Cmd::new("drbdadm").args(["role", "r0"]))
                .unwrap()
                .stdout,
            "Primary\n"
        );
        assert!(r.run(&Cmd::new("drbdadm").arg("up")).is_err());
        assert_eq!(r.commands(), vec!["drbdadm role r0", "drbdadm up"]);
    }
}
