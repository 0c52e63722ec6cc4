//! Safe Rust API over liblxc 5 (through the `lxc-sys` bindings).
//!
//! This is the only ctmgr crate with `unsafe` code; every `unsafe` block says
//! why it holds. C strings passed to liblxc are owned `CString`s that live for
//! the whole call, strings liblxc returns are copied and freed with `free`,
//! NUL bytes and non-UTF-8 text become [`Error`]s, and each [`Container`]
//! releases its `struct lxc_container` with `lxc_container_put` on drop.
//!
//! # Errors carry liblxc's own message
//!
//! liblxc reports failure as `false` and writes the reason to its log. Each
//! handle sends that log to a private file (`lxc.log.file` in a 0700
//! temporary directory, `lxc.log.level = WARN`); when a call fails, the ERROR
//! lines it appended (or, if none, the WARN lines) become the message of
//! [`Error::Lxc`]. These two settings never reach the container's config
//! file: [`Container::save_config`] and [`Container::create`] write the
//! container's own `lxc.log.*` values instead, and
//! [`Container::get_config_item`] returns those. Do not call `lxc_log_init`
//! in a process using this crate: it switches liblxc to one global log and
//! the per-handle capture would see nothing.
//!
//! # Threads and forks
//!
//! liblxc forks: `create` runs the template in a child, `start` with
//! daemonize forks twice, `ips` forks into the container's network namespace.
//! Forking from a multi-threaded process is unsafe (another thread may hold a
//! lock the child then needs; lxc issue #2245), and in liblxc 5 a daemonized
//! `start()` can leave the calling process moved into the container's monitor
//! cgroup (lxc issue #4269). Therefore:
//!
//! - [`Container`] is neither `Send` nor `Sync`;
//! - callers run `create`, `start` and `stop` in a short-lived child process
//!   (ctmgr re-executes itself as `ctmgr __lxc-start LXCPATH NAME`), and the
//!   parent waits for it with a deadline;
//! - this crate's own tests do the same: they re-execute the test binary to
//!   perform one lifecycle operation.
//!
//! Every wait this crate asks liblxc for is bounded: negative timeouts
//! (liblxc's "forever") are raised to 0 (or 1 for `shutdown`).
//!
//! ```no_run
//! use std::path::Path;
//! let c = lxc_bindings::Container::new("web", Path::new("/srv/store1/containers"))?;
//! if c.is_defined() {
//!     println!("{} is {}", c.name(), c.state());
//! }
//! # Ok::<(), lxc_bindings::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod container;
mod error;
mod log;
mod state;

pub use container::{list_defined, version, Container};
pub use error::Error;
pub use state::State;
