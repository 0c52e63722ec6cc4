//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong when talking to liblxc.
///
/// liblxc reports failures as `false`/`-1` and writes the reason to its log;
/// [`Error::Lxc`] carries the ERROR (or, failing those, WARN) lines that the
/// failed call wrote to the handle's private log, so the caller sees liblxc's
/// own words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string passed to liblxc contains a NUL byte.
    #[error("{what} {value:?} contains a NUL byte")]
    Nul {
        /// Which argument (e.g. "config key").
        what: &'static str,
        /// The offending value, lossily converted.
        value: String,
    },
    /// liblxc returned text that is not UTF-8.
    #[error("liblxc returned {what} that is not valid UTF-8")]
    Utf8 {
        /// What liblxc returned (e.g. "a config value").
        what: &'static str,
    },
    /// `lxc_container_new` returned NULL.
    #[error(
        "liblxc could not open container {name} in {lxcpath} (bad name, or its config cannot be read)"
    )]
    Open {
        /// Container name.
        name: String,
        /// Its lxcpath.
        lxcpath: PathBuf,
    },
    /// The handle's private log file could not be set up.
    #[error("cannot set up the private liblxc log in {path}")]
    Log {
        /// The directory or file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A liblxc call failed; `message` is what liblxc logged for it.
    #[error("lxc {op} failed for container {container}: {message}")]
    Lxc {
        /// The liblxc operation (e.g. "create", "start").
        op: &'static str,
        /// Container name.
        container: String,
        /// liblxc's own error text.
        message: String,
    },
    /// `list_defined_containers` failed.
    #[error("liblxc could not list the containers in {lxcpath}")]
    List {
        /// The lxcpath that was listed.
        lxcpath: PathBuf,
    },
}
