//! [`Container`]: one liblxc `struct lxc_container` handle.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

use lxc_sys as sys;

use crate::log::HandleLog;
use crate::{Error, State};

const LOG_FILE_KEY: &str = "lxc.log.file";
const LOG_LEVEL_KEY: &str = "lxc.log.level";
/// WARN rather than ERROR: a few failures (e.g. a halt signal that cannot be
/// sent in `shutdown`) are only logged as warnings.
const HANDLE_LOG_LEVEL: &str = "WARN";

/// Reads a function-pointer field of the `lxc_container`.
macro_rules! method {
    ($self:ident . $field:ident) => {
        // SAFETY: `ptr` came from `lxc_container_new`, is non-null and holds
        // a reference we release only in `Drop`, so it points to a live
        // struct. The field is copied out by value through the raw pointer
        // (no reference is created); liblxc sets these fields once at
        // allocation and never changes them.
        unsafe { (*$self.ptr.as_ptr()).$field }
    };
}

/// The `lxc.log.*` values the container's own config has: the handle
/// replaces them with its private log while it lives, and puts them back
/// whenever liblxc writes the config, so they are what gets saved.
#[derive(Debug, Default)]
struct SavedLogKeys {
    file: Option<String>,
    level: Option<String>,
}

/// A handle on one LXC container (`struct lxc_container`).
///
/// The handle is neither `Send` nor `Sync` (`PhantomData<*mut ()>`): liblxc
/// keeps per-thread state (the "current config" that routes its log) and
/// locks the struct only partly, and several calls fork (`create`, `start`,
/// `ips`). Forking from a multi-threaded process is unsafe (lxc issue #2245),
/// and a daemonized `start()` in liblxc 5 can leave the calling process in the
/// container's monitor cgroup (lxc issue #4269). Keep a handle on the thread
/// that made it, and run `start`/`stop` in a short-lived child process; see
/// the crate documentation.
pub struct Container {
    ptr: NonNull<sys::lxc_container>,
    name: String,
    lxcpath: PathBuf,
    log: HandleLog,
    saved_log: RefCell<SavedLogKeys>,
    _not_send_sync: PhantomData<*mut ()>,
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.name)
            .field("lxcpath", &self.lxcpath)
            .finish_non_exhaustive()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference, taken by `lxc_container_new`;
        // after this call `ptr` is never used again.
        unsafe {
            sys::lxc_container_put(self.ptr.as_ptr());
        }
    }
}

fn cstring(what: &'static str, value: &str) -> Result<CString, Error> {
    CString::new(value).map_err(|_| Error::Nul {
        what,
        value: value.to_owned(),
    })
}

fn path_cstring(what: &'static str, path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Nul {
        what,
        value: path.display().to_string(),
    })
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |s| s.as_ptr())
}

/// Copies a string liblxc allocated with malloc, then frees it.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string from malloc that nobody else frees.
unsafe fn take_c_string(p: *mut c_char, what: &'static str) -> Result<Option<String>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: per the contract, `p` is a valid NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) }
        .to_str()
        .map(str::to_owned)
        .map_err(|_| Error::Utf8 { what });
    // SAFETY: `p` came from malloc and ownership was passed to us; it is
    // not used after this.
    unsafe { libc::free(p.cast()) };
    s.map(Some)
}

/// Copies and frees a malloc'd array of malloc'd strings: `count` entries,
/// or up to the NULL terminator when `count` is `None`. Everything is freed
/// even when an entry is not UTF-8.
///
/// # Safety
/// `arr` is NULL or a malloc'd array of `count` (or NULL-terminated) malloc'd
/// NUL-terminated strings, owned by the caller.
unsafe fn take_c_string_array(
    arr: *mut *mut c_char,
    count: Option<usize>,
    what: &'static str,
) -> Result<Vec<String>, Error> {
    if arr.is_null() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut bad = false;
    let mut i = 0;
    loop {
        if count.is_some_and(|n| i >= n) {
            break;
        }
        // SAFETY: `i` is below `count`, or (NULL-terminated case) we have not
        // yet passed the terminator, so `arr.add(i)` is inside the array.
        let p = unsafe { *arr.add(i) };
        if p.is_null() {
            if count.is_none() {
                break;
            }
        } else {
            // SAFETY: each entry is an owned malloc'd string (contract).
            match unsafe { take_c_string(p, what) } {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(_) => bad = true,
            }
        }
        i += 1;
    }
    // SAFETY: the array itself came from malloc and is ours; its entries
    // were freed above.
    unsafe { libc::free(arr.cast()) };
    if bad {
        Err(Error::Utf8 { what })
    } else {
        Ok(out)
    }
}

impl Container {
    /// Opens the container `name` under `lxcpath` (`lxc_container_new`).
    ///
    /// The container does not have to exist. If it is not defined yet, the
    /// system default config (`lxc.default_config`, normally
    /// `/etc/lxc/default.conf`) is loaded, as `lxc-create` does, so that
    /// `set_config_item` before [`Container::create`] edits on top of it.
    /// The handle's liblxc log goes to a private file (see the crate docs).
    pub fn new(name: &str, lxcpath: &Path) -> Result<Container, Error> {
        let c_name = cstring("container name", name)?;
        let c_path = path_cstring("lxcpath", lxcpath)?;
        let log = HandleLog::create()?;
        // SAFETY: both arguments are valid NUL-terminated strings that live
        // until the call returns; liblxc copies them.
        let raw = unsafe { sys::lxc_container_new(c_name.as_ptr(), c_path.as_ptr()) };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::Open {
            name: name.to_owned(),
            lxcpath: lxcpath.to_owned(),
        })?;
        let c = Container {
            ptr,
            name: name.to_owned(),
            lxcpath: lxcpath.to_owned(),
            log,
            saved_log: RefCell::new(SavedLogKeys::default()),
            _not_send_sync: PhantomData,
        };
        if !c.is_defined() {
            c.load_default_config()?;
        }
        {
            let mut saved = c.saved_log.borrow_mut();
            saved.file = c.raw_get_config_item(LOG_FILE_KEY)?;
            saved.level = c
                .raw_get_config_item(LOG_LEVEL_KEY)?
                .filter(|l| l != "NOTSET");
        }
        c.use_private_log()?;
        Ok(c)
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding the container's directory.
    pub fn lxcpath(&self) -> &Path {
        &self.lxcpath
    }

    /// The file the handle's liblxc log goes to (removed when the handle is
    /// dropped).
    pub fn log_file(&self) -> &Path {
        self.log.path()
    }

    fn raw(&self) -> *mut sys::lxc_container {
        self.ptr.as_ptr()
    }

    fn lxc_error(&self, op: &'static str, pos: u64, fallback: &str) -> Error {
        let lines = self.log.messages_since(pos);
        let message = if lines.is_empty() {
            fallback.to_owned()
        } else {
            lines.join("; ")
        };
        Error::Lxc {
            op,
            container: self.name.clone(),
            message,
        }
    }

    fn missing(&self, op: &'static str) -> Error {
        Error::Lxc {
            op,
            container: self.name.clone(),
            message: "liblxc does not provide this operation".to_owned(),
        }
    }

    /// Runs one liblxc call that reports success as `true`; on failure the
    /// error carries what the call logged.
    fn call(&self, op: &'static str, f: impl FnOnce() -> bool) -> Result<(), Error> {
        let pos = self.log.position();
        if f() {
            Ok(())
        } else {
            Err(self.lxc_error(op, pos, "liblxc logged no reason"))
        }
    }

    fn load_default_config(&self) -> Result<(), Error> {
        let key = cstring("global config key", "lxc.default_config")?;
        // SAFETY: `key` is a valid C string; the result is NULL or points to
        // liblxc-owned static storage that we only read.
        let p = unsafe { sys::lxc_get_global_config_item(key.as_ptr()) };
        if p.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL, NUL-terminated, owned by liblxc (see above).
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(
            unsafe { CStr::from_ptr(p) }.to_bytes(),
        ));
        if !path.exists() {
            return Ok(());
        }
        let c_path = path_cstring("default config path", &path)?;
        let f = method!(self.load_config).ok_or_else(|| self.missing("load default config"))?;
        // SAFETY: live handle; `c_path` outlives the call, liblxc only reads it.
        if unsafe { f(self.raw(), c_path.as_ptr()) } {
            Ok(())
        } else {
            Err(Error::Lxc {
                op: "load default config",
                container: self.name.clone(),
                message: format!("cannot load {}", path.display()),
            })
        }
    }

    // ----- config items -------------------------------------------------

    fn raw_set_config_item(&self, key: &str, value: &str) -> Result<(), Error> {
        let k = cstring("config key", key)?;
        let v = cstring("config value", value)?;
        let f = method!(self.set_config_item).ok_or_else(|| self.missing("set config item"))?;
        let pos = self.log.position();
        // SAFETY: live handle; `k` and `v` outlive the call, liblxc copies them.
        if unsafe { f(self.raw(), k.as_ptr(), v.as_ptr()) } {
            Ok(())
        } else {
            Err(self.lxc_error(
                "set config item",
                pos,
                &format!("cannot set {key} = {value}"),
            ))
        }
    }

    fn raw_clear_config_item(&self, key: &str) -> Result<(), Error> {
        let k = cstring("config key", key)?;
        let f = method!(self.clear_config_item).ok_or_else(|| self.missing("clear config item"))?;
        let pos = self.log.position();
        // SAFETY: live handle; `k` outlives the call.
        if unsafe { f(self.raw(), k.as_ptr()) } {
            Ok(())
        } else {
            Err(self.lxc_error("clear config item", pos, &format!("cannot clear {key}")))
        }
    }

    fn raw_get_config_item(&self, key: &str) -> Result<Option<String>, Error> {
        let k = cstring("config key", key)?;
        let f = method!(self.get_config_item).ok_or_else(|| self.missing("get config item"))?;
        // Two-call pattern: ask for the length, then fetch into a buffer one
        // byte larger (for the NUL). Retry if the value grew in between.
        for _ in 0..4 {
            let pos = self.log.position();
            // SAFETY: live handle; with a NULL buffer and length 0 liblxc
            // only computes the length.
            let len = unsafe { f(self.raw(), k.as_ptr(), ptr::null_mut(), 0) };
            if len < 0 && !self.log.messages_since(pos).is_empty() {
                // An unknown key: liblxc logs "Unsupported config key".
                return Err(self.lxc_error("get config item", pos, ""));
            }
            if len <= 0 {
                // Negative without a logged error: not set (e.g. a network
                // index that does not exist); zero: empty, which LXC
                // treats as unset.
                return Ok(None);
            }
            let Ok(cap) = usize::try_from(len) else {
                return Ok(None);
            };
            let mut buf = vec![0u8; cap + 1];
            let inlen = len.saturating_add(1);
            // SAFETY: `buf` has `inlen` writable bytes; liblxc writes at
            // most `inlen` bytes including the terminating NUL.
            let got = unsafe { f(self.raw(), k.as_ptr(), buf.as_mut_ptr().cast(), inlen) };
            if got <= 0 {
                return Ok(None);
            }
            if got > len {
                continue;
            }
            let mut end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            // List-valued keys come back one value per line, each ending in
            // '\n'; drop the last newline so single values are clean.
            if end > 0 && buf[end - 1] == b'\n' {
                end -= 1;
            }
            buf.truncate(end);
            return String::from_utf8(buf).map(Some).map_err(|_| Error::Utf8 {
                what: "a config value",
            });
        }
        Err(Error::Lxc {
            op: "get config item",
            container: self.name.clone(),
            message: format!("the value of {key} kept changing while it was read"),
        })
    }

    /// Points the log at the private file. The `lxc.log.*` lines this adds to
    /// the in-memory config are taken out again by `with_saved_log_keys`
    /// whenever liblxc writes the config.
    fn use_private_log(&self) -> Result<(), Error> {
        let file = self
            .log
            .path()
            .to_str()
            .ok_or(Error::Log {
                path: self.log.path().to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "temporary directory path is not utf-8",
                ),
            })?
            .to_owned();
        self.raw_set_config_item(LOG_FILE_KEY, &file)?;
        self.raw_set_config_item(LOG_LEVEL_KEY, HANDLE_LOG_LEVEL)
    }

    /// Runs `f` (which makes liblxc write the config file) with the
    /// container's own `lxc.log.*` settings in place of the private ones.
    ///
    /// Clearing `lxc.log.file` only forgets the path: the open log fd stays,
    /// so failures inside `f` are still captured, unless the container has a
    /// log file of its own, which then receives them.
    fn with_saved_log_keys<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        self.raw_clear_config_item(LOG_FILE_KEY)?;
        self.raw_clear_config_item(LOG_LEVEL_KEY)?;
        let restored = (|| {
            let saved = self.saved_log.borrow();
            if let Some(level) = &saved.level {
                self.raw_set_config_item(LOG_LEVEL_KEY, level)?;
            }
            if let Some(file) = &saved.file {
                self.raw_set_config_item(LOG_FILE_KEY, file)?;
            }
            Ok(())
        })();
        let result = restored.map(|()| f());
        self.raw_clear_config_item(LOG_FILE_KEY)?;
        self.raw_clear_config_item(LOG_LEVEL_KEY)?;
        self.use_private_log()?;
        result
    }

    /// Reads a config item (`get_config_item`). `Ok(None)` when it is unset
    /// or empty; an error for a key liblxc does not know. Keys with several
    /// values (`lxc.group`, `lxc.mount.entry`, ...) give one value per line,
    /// without a final newline. Numeric keys report their default (e.g.
    /// `"0"`) when unset, as liblxc does.
    ///
    /// `lxc.log.file` and `lxc.log.level` return the container's own values,
    /// not the handle's private log.
    pub fn get_config_item(&self, key: &str) -> Result<Option<String>, Error> {
        match key {
            LOG_FILE_KEY => Ok(self.saved_log.borrow().file.clone()),
            LOG_LEVEL_KEY => Ok(self.saved_log.borrow().level.clone()),
            _ => self.raw_get_config_item(key),
        }
    }

    /// Sets a config item in memory (`set_config_item`); call
    /// [`Container::save_config`] to write it.
    ///
    /// `lxc.log.file` and `lxc.log.level` are recorded and written by
    /// `save_config`, but the handle keeps logging to its private file.
    pub fn set_config_item(&self, key: &str, value: &str) -> Result<(), Error> {
        match key {
            LOG_FILE_KEY | LOG_LEVEL_KEY => {
                cstring("config value", value)?;
                let mut saved = self.saved_log.borrow_mut();
                let slot = if key == LOG_FILE_KEY {
                    &mut saved.file
                } else {
                    &mut saved.level
                };
                *slot = (!value.is_empty()).then(|| value.to_owned());
                Ok(())
            }
            _ => self.raw_set_config_item(key, value),
        }
    }

    /// Removes a config item (`clear_config_item`), e.g. `lxc.net` drops all
    /// network interfaces.
    pub fn clear_config_item(&self, key: &str) -> Result<(), Error> {
        match key {
            LOG_FILE_KEY => {
                self.saved_log.borrow_mut().file = None;
                Ok(())
            }
            LOG_LEVEL_KEY => {
                self.saved_log.borrow_mut().level = None;
                Ok(())
            }
            _ => self.raw_clear_config_item(key),
        }
    }

    /// Writes the in-memory config (`save_config`) to `path`, or to the
    /// container's config file when `None`. The handle's private log
    /// settings are never written.
    pub fn save_config(&self, path: Option<&Path>) -> Result<(), Error> {
        let alt = path.map(|p| path_cstring("config path", p)).transpose()?;
        let f = method!(self.save_config).ok_or_else(|| self.missing("save config"))?;
        let pos = self.log.position();
        // SAFETY: live handle; `alt` is NULL or a C string outliving the call.
        let ok = self.with_saved_log_keys(|| unsafe { f(self.raw(), opt_ptr(&alt)) })?;
        if ok {
            Ok(())
        } else {
            Err(self.lxc_error("save config", pos, "liblxc logged no reason"))
        }
    }

    /// The path of the container's config file (`config_file_name`).
    pub fn config_file_name(&self) -> Option<PathBuf> {
        let f = method!(self.config_file_name)?;
        // SAFETY: live handle; the result is NULL or a malloc'd string that
        // the caller owns (lxccontainer.h: "caller must free").
        let p = unsafe { f(self.raw()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-NULL NUL-terminated string, read before it is freed.
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(
            unsafe { CStr::from_ptr(p) }.to_bytes(),
        ));
        // SAFETY: malloc'd by liblxc, owned by us, not used after this.
        unsafe { libc::free(p.cast()) };
        Some(path)
    }

    // ----- state --------------------------------------------------------

    /// Whether the container has a config file (`is_defined`).
    pub fn is_defined(&self) -> bool {
        match method!(self.is_defined) {
            // SAFETY: live handle.
            Some(f) => unsafe { f(self.raw()) },
            None => false,
        }
    }

    /// The container's state (`state`), asked of its monitor.
    pub fn state(&self) -> State {
        let Some(f) = method!(self.state) else {
            return State::Unknown(String::new());
        };
        // SAFETY: live handle; the result is NULL or a static string in
        // liblxc (`lxc_state2str`) that we only read.
        let p = unsafe { f(self.raw()) };
        if p.is_null() {
            return State::Unknown(String::new());
        }
        // SAFETY: non-NULL static NUL-terminated string (see above).
        let s = unsafe { CStr::from_ptr(p) };
        State::from_lxc(&s.to_string_lossy())
    }

    /// Whether the container is running (`is_running`).
    pub fn is_running(&self) -> bool {
        match method!(self.is_running) {
            // SAFETY: live handle.
            Some(f) => unsafe { f(self.raw()) },
            None => false,
        }
    }

    /// PID of the container's init in the host's PID namespace (`init_pid`),
    /// `None` when it is not running.
    pub fn init_pid(&self) -> Option<i32> {
        let f = method!(self.init_pid)?;
        // SAFETY: live handle.
        let pid = unsafe { f(self.raw()) };
        (pid > 0).then_some(pid)
    }

    /// Waits until the container reaches `state` (e.g. `"RUNNING"`), at most
    /// `timeout_secs` seconds (`wait`). A negative timeout, which liblxc
    /// takes as "forever", is treated as 0 so the call is always bounded.
    pub fn wait(&self, state: &str, timeout_secs: i32) -> bool {
        let Ok(s) = CString::new(state) else {
            return false;
        };
        let Some(f) = method!(self.wait) else {
            return false;
        };
        // SAFETY: live handle; `s` outlives the call.
        unsafe { f(self.raw(), s.as_ptr(), timeout_secs.max(0)) }
    }

    /// IP addresses of the running container's interfaces except `lo`
    /// (`get_ips` with no interface and scope 0); `family` is `"inet"` or
    /// `"inet6"`, `None` for both. Empty when it is not running.
    ///
    /// liblxc forks a child that enters the container's network namespace.
    pub fn ips(&self, family: Option<&str>) -> Vec<String> {
        let Ok(fam) = family.map(CString::new).transpose() else {
            return Vec::new();
        };
        let Some(f) = method!(self.get_ips) else {
            return Vec::new();
        };
        // SAFETY: live handle; `fam` is NULL or a C string outliving the call.
        let arr = unsafe { f(self.raw(), ptr::null(), opt_ptr(&fam), 0) };
        // SAFETY: get_ips returns NULL or a malloc'd NULL-terminated array
        // of malloc'd strings that the caller frees.
        unsafe { take_c_string_array(arr, None, "an ip address") }.unwrap_or_default()
    }

    // ----- lifecycle ----------------------------------------------------

    /// Creates the container (`create`) from `template` (e.g. `"busybox"`),
    /// with its rootfs on `bdev_type` (e.g. `Some("btrfs")`; `None` lets
    /// liblxc choose) and `args` passed to the template. Its config is the
    /// handle's in-memory config. Template output goes to this process's
    /// stdout/stderr.
    ///
    /// Forks to run the template: call it from a single-threaded process.
    pub fn create(
        &self,
        template: &str,
        bdev_type: Option<&str>,
        args: &[&str],
    ) -> Result<(), Error> {
        let t = cstring("template", template)?;
        let bdev = bdev_type
            .map(|b| cstring("backing store type", b))
            .transpose()?;
        let c_args = args
            .iter()
            .map(|a| cstring("template argument", a))
            .collect::<Result<Vec<_>, _>>()?;
        // liblxc's prototype is `char *const argv[]` but it only reads them.
        let mut argv: Vec<*mut c_char> = c_args.iter().map(|a| a.as_ptr().cast_mut()).collect();
        argv.push(ptr::null_mut());
        let f = method!(self.create).ok_or_else(|| self.missing("create"))?;
        let pos = self.log.position();
        // create() saves the config itself: keep the private log keys out.
        let ok = self.with_saved_log_keys(|| {
            // SAFETY: live handle; `t`, `bdev` and `c_args` (which `argv`
            // points into) outlive the call; `argv` is NULL-terminated; NULL
            // specs means liblxc's defaults; flags 0 keeps template output.
            unsafe {
                f(
                    self.raw(),
                    t.as_ptr(),
                    opt_ptr(&bdev),
                    ptr::null_mut(),
                    0 as c_int,
                    argv.as_ptr(),
                )
            }
        })?;
        if ok {
            Ok(())
        } else {
            Err(self.lxc_error("create", pos, "liblxc logged no reason"))
        }
    }

    /// Starts the container in the background: `want_daemonize(true)`, then
    /// `start(0, NULL)`. Returns once liblxc has seen it RUNNING.
    ///
    /// Refuses a container that is not defined: liblxc would start it with
    /// the in-memory default config, whose rootfs is the host's `/`.
    ///
    /// Forks twice; call it from a short-lived single-threaded child process
    /// (see the crate docs).
    pub fn start(&self) -> Result<(), Error> {
        if !self.is_defined() {
            return Err(Error::Lxc {
                op: "start",
                container: self.name.clone(),
                message: format!(
                    "container is not defined (no config in {})",
                    self.lxcpath.join(&self.name).display()
                ),
            });
        }
        let daemonize = method!(self.want_daemonize).ok_or_else(|| self.missing("start"))?;
        let start = method!(self.start).ok_or_else(|| self.missing("start"))?;
        // SAFETY: live handle.
        if !unsafe { daemonize(self.raw(), true) } {
            return Err(Error::Lxc {
                op: "start",
                container: self.name.clone(),
                message: "cannot switch to daemonized start".to_owned(),
            });
        }
        // SAFETY: live handle; useinit 0 and a NULL argv mean "run the
        // configured init". With daemonize set, liblxc's children `_exit`
        // and never return into Rust code.
        self.call("start", || unsafe { start(self.raw(), 0, ptr::null()) })
    }

    /// Asks the container to halt (its `lxc.signal.halt`, `shutdown`) and
    /// waits up to `timeout_secs` (at least 1: liblxc reads 0 as "do not wait"
    /// and -1 as "forever"). `Ok(true)` when it stopped, `Ok(false)` when it
    /// is still running at the deadline.
    pub fn shutdown(&self, timeout_secs: i32) -> Result<bool, Error> {
        let f = method!(self.shutdown).ok_or_else(|| self.missing("shutdown"))?;
        let pos = self.log.position();
        // SAFETY: live handle.
        let ok = unsafe { f(self.raw(), timeout_secs.max(1)) };
        if ok || !self.is_running() {
            return Ok(true);
        }
        let lines = self.log.messages_since(pos);
        if lines.is_empty() {
            Ok(false)
        } else {
            Err(self.lxc_error("shutdown", pos, ""))
        }
    }

    /// Kills the container (`stop`): SIGKILL to its init via the monitor.
    pub fn stop(&self) -> Result<(), Error> {
        let f = method!(self.stop).ok_or_else(|| self.missing("stop"))?;
        // SAFETY: live handle.
        self.call("stop", || unsafe { f(self.raw()) })
    }

    /// Freezes all the container's processes (`freeze`).
    pub fn freeze(&self) -> Result<(), Error> {
        let f = method!(self.freeze).ok_or_else(|| self.missing("freeze"))?;
        // SAFETY: live handle.
        self.call("freeze", || unsafe { f(self.raw()) })
    }

    /// Thaws a frozen container (`unfreeze`).
    pub fn unfreeze(&self) -> Result<(), Error> {
        let f = method!(self.unfreeze).ok_or_else(|| self.missing("unfreeze"))?;
        // SAFETY: live handle.
        self.call("unfreeze", || unsafe { f(self.raw()) })
    }

    /// Deletes the stopped container: its rootfs (a Btrfs subvolume is
    /// deleted as one) and its directory (`destroy`). Fails if it has
    /// snapshots.
    pub fn destroy(&self) -> Result<(), Error> {
        let f = method!(self.destroy).ok_or_else(|| self.missing("destroy"))?;
        // SAFETY: live handle.
        self.call("destroy", || unsafe { f(self.raw()) })
    }
}

/// Names of the containers defined (having a config file) under `lxcpath`
/// (`list_defined_containers`), in liblxc's order (sorted by name).
pub fn list_defined(lxcpath: &Path) -> Result<Vec<String>, Error> {
    let p = path_cstring("lxcpath", lxcpath)?;
    let mut names: *mut *mut c_char = ptr::null_mut();
    // SAFETY: `p` outlives the call; `names` is a valid out-pointer; a NULL
    // `cret` asks for names only.
    let n = unsafe { sys::list_defined_containers(p.as_ptr(), &mut names, ptr::null_mut()) };
    let Ok(count) = usize::try_from(n) else {
        // On failure liblxc has freed whatever it had collected.
        return Err(Error::List {
            lxcpath: lxcpath.to_owned(),
        });
    };
    // SAFETY: on success `names` is NULL or a malloc'd array of exactly
    // `count` malloc'd strings (no terminator), owned by the caller.
    unsafe { take_c_string_array(names, Some(count), "a container name") }
}

/// liblxc's version string (`lxc_get_version`), e.g. `"5.0.2"`.
pub fn version() -> String {
    // SAFETY: returns NULL or a static NUL-terminated string.
    let p = unsafe { sys::lxc_get_version() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL static string (see above), only read.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
