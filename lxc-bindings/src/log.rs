//! The private log file of one container handle, and the parser that pulls
//! liblxc's error messages out of it.
//!
//! liblxc does not return error text: it writes it to the log of the
//! container's `lxc_conf` (`lxc.log.file`). Each handle points that log at a
//! file in its own 0700 temporary directory, remembers the file size before
//! a call and, when the call fails, reads what was appended.

use std::fs::{DirBuilder, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// The most we read back from the log after one failed call: a runaway log
/// must not turn an error message into megabytes.
const MAX_READ: u64 = 256 * 1024;
/// At most this many liblxc lines go into one error message.
const MAX_LINES: usize = 8;

/// A per-handle log file in a private temporary directory, removed on drop.
#[derive(Debug)]
pub(crate) struct HandleLog {
    dir: PathBuf,
    file: PathBuf,
}

impl HandleLog {
    pub(crate) fn create() -> Result<HandleLog, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last_err = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("lxc-bindings.{}.{n}.{nanos:x}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let file = dir.join("lxc.log");
                    return Ok(HandleLog { dir, file });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(source) => return Err(Error::Log { path: dir, source }),
            }
        }
        Err(Error::Log {
            path: base,
            source: last_err.unwrap_or_else(|| io::Error::other("no unique name found")),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.file
    }

    /// Current end of the log; what a call appends starts here.
    pub(crate) fn position(&self) -> u64 {
        std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0)
    }

    /// liblxc's messages logged since `pos`: the ERROR lines, or when there
    /// are none the WARN lines. Empty when nothing useful was logged.
    pub(crate) fn messages_since(&self, pos: u64) -> Vec<String> {
        let text = match read_from(&self.file, pos) {
            Ok(text) => text,
            Err(_) => return Vec::new(),
        };
        messages(&text)
    }
}

impl Drop for HandleLog {
    fn drop(&mut self) {
        // A daemonized monitor may still hold the file open; unlinking it is
        // fine, the monitor keeps writing to the orphaned inode.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_from(path: &Path, pos: u64) -> io::Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    // The log can only grow while we hold the handle; if it shrank, read all.
    let start = if pos > len { 0 } else { pos };
    let start = start.max(len.saturating_sub(MAX_READ));
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAX_READ).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Log priority of a liblxc log line, as far as we care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Error,
    Warn,
    Other,
}

/// Splits one liblxc log line,
/// `"[prefix] [name] DATE LEVEL    category - file.c:func:line - message"`
/// (format string in liblxc's `log.c`, `log_append_logfile`), into its level
/// and message. Lines that do not look like that are `None`.
fn parse_line(line: &str) -> Option<(Level, &str)> {
    let (head, rest) = line.split_once(" - ")?;
    let level = head.split_whitespace().find_map(|word| match word {
        "ERROR" | "CRIT" | "ALERT" | "FATAL" => Some(Level::Error),
        "WARN" => Some(Level::Warn),
        "TRACE" | "DEBUG" | "INFO" | "NOTICE" => Some(Level::Other),
        _ => None,
    })?;
    // `rest` is "file.c:func:123 - message"; keep the message.
    let message = match rest.split_once(" - ") {
        Some((_location, message)) => message,
        None => rest,
    };
    Some((level, message.trim_end()))
}

fn messages(text: &str) -> Vec<String> {
    let parsed: Vec<(Level, &str)> = text.lines().filter_map(parse_line).collect();
    let pick = |want: Level| -> Vec<String> {
        let all: Vec<&str> = parsed
            .iter()
            .filter(|(level, _)| *level == want)
            .map(|(_, m)| *m)
            .collect();
        // Keep the last lines: the final ones say what finally failed.
        let skip = all.len().saturating_sub(MAX_LINES);
        all[skip..].iter().map(|m| (*m).to_owned()).collect()
    };
    let errors = pick(Level::Error);
    if errors.is_empty() {
        pick(Level::Warn)
    } else {
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as liblxc 5.0.2 writes them (taken from this crate's own test
    // runs against the real library).
    const ERR: &str = "lxc c1 20240301101010.123 ERROR    lxccontainer - ../src/lxc/lxccontainer.c:__lxcapi_create:1960 - Template \"nope\" not found";
    const WARN: &str = "lxc c1 20240301101010.124 WARN     cgfsng - ../src/lxc/cgroups/cgfsng.c:fchowmodat:1611 - No such file or directory - Failed to fchownat(44, memory.oom.group, 1000000000, 0, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW )";
    const INFO: &str = "lxc c1 20240301101010.125 INFO     start - ../src/lxc/start.c:lxc_init:882 - Container \"c1\" is initialized";

    #[test]
    fn error_line_gives_its_message() {
        assert_eq!(
            parse_line(ERR),
            Some((Level::Error, "Template \"nope\" not found"))
        );
    }

    #[test]
    fn message_with_dashes_is_kept_whole() {
        let (level, msg) = parse_line(WARN).unwrap();
        assert_eq!(level, Level::Warn);
        assert!(msg.starts_with("No such file or directory - Failed to fchownat"));
    }

    #[test]
    fn errors_win_over_warnings_and_info_is_ignored() {
        let text = format!("{INFO}\n{WARN}\n{ERR}\n");
        assert_eq!(messages(&text), vec!["Template \"nope\" not found"]);
        let text = format!("{INFO}\n{WARN}\n");
        assert_eq!(messages(&text).len(), 1);
        assert!(messages(&format!("{INFO}\n")).is_empty());
        assert!(messages("template output, not a log line\n").is_empty());
    }

    #[test]
    fn only_the_last_lines_are_kept() {
        let text: String = (0..20)
            .map(|i| format!("lxc c 2024 ERROR    x - f.c:g:1 - line {i}\n"))
            .collect();
        let m = messages(&text);
        assert_eq!(m.len(), MAX_LINES);
        assert_eq!(m.last().map(String::as_str), Some("line 19"));
    }

    #[test]
    fn reads_only_what_was_appended() {
        let log = HandleLog::create().unwrap();
        std::fs::write(log.path(), format!("{ERR}\n")).unwrap();
        let pos = log.position();
        assert!(log.messages_since(pos).is_empty());
        let mut text = std::fs::read_to_string(log.path()).unwrap();
        text.push_str("lxc c1 2024 ERROR    start - start.c:f:1 - second failure\n");
        std::fs::write(log.path(), text).unwrap();
        assert_eq!(log.messages_since(pos), vec!["second failure"]);
        let dir = log.path().parent().unwrap().to_path_buf();
        drop(log);
        assert!(!dir.exists(), "log dir must be removed on drop");
    }
}
