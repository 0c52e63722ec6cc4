//! Exit codes are part of ctmgr's interface (DESIGN.md §3): cron mail, Pacemaker
//! resource agents and shell scripts branch on them. This module is the one
//! place that decides which error means which code.

use std::fmt;

/// How a ctmgr run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done (including "already so").
    Done,
    /// 1: failed, or partly done (e.g. taken over but a container failed).
    Failed,
    /// 2: bad usage or configuration; nothing was changed.
    Usage,
    /// 3: refused for safety; nothing was changed.
    Refused,
    /// A code another program defines: DRBD's fence-peer handler protocol.
    Code(i32),
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Done => 0,
            ExitStatus::Failed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Refused => 3,
            ExitStatus::Code(c) => c,
        }
    }
}

/// A refusal for safety (exit 3). The message says why and what to check.
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// Bad usage that clap could not catch (exit 2): unknown container, bad name…
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Maps an error to its exit code by looking through its whole cause chain.
pub fn classify(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if cause.is::<Refused>() {
            return ExitStatus::Refused;
        }
        if cause.is::<UsageError>()
            || cause.is::<crate::config::ConfigError>()
            || cause.is::<crate::names::NameError>()
        {
            return ExitStatus::Usage;
        }
    }
    ExitStatus::Failed
}

/// Shorthand: `return Err(refuse("…"))`.
pub fn refuse(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refused(msg.into()))
}

/// Shorthand for a usage error (exit 2).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn refusal_wrapped_in_context_still_exits_3() {
        let err: anyhow::Result<()> = Err(refuse("peer is Primary"));
        let err = err.context("failed to take over store1").unwrap_err();
        assert_eq!(classify(&err), ExitStatus::Refused);
        assert_eq!(classify(&anyhow::anyhow!("boom")), ExitStatus::Failed);
        assert_eq!(classify(&usage("no such container")), ExitStatus::Usage);
    }
}
