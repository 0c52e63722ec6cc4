//! DRBD, seen from ctmgr: typed resource state parsed from the tools' own
//! output, `.res` files rendered from plain input, and a linter for
//! hand-written `drbd.conf` files.
//!
//! Everything here is pure (text in, data out) except
//! [`render::validate_with_drbdadm`], which runs drbdadm's real config
//! parser with a deadline. This module never changes DRBD state and never
//! logs a shared secret.

pub mod lint;
pub mod render;
pub mod state;
pub mod status;

pub use lint::{lint, lint_with_homes, parse_hosts, Finding, HostsMap, LintError, Severity};
pub use render::{
    handler_is_safe, parser_for, render, validate_with_drbdadm, Format, RenderError, ResHost,
    ResInput,
};
pub use state::{
    parse_cstate, parse_dstate, parse_proc_drbd, parse_role, parse_status_json, parse_status_text,
    ConnState, DiskState, ParseError, Peered, ResourceState, Role,
};
