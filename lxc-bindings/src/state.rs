//! Container states as liblxc names them.

use std::fmt;

/// The state of a container, as reported by liblxc's `state()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// `STOPPED`
    Stopped,
    /// `STARTING`
    Starting,
    /// `RUNNING`
    Running,
    /// `STOPPING`
    Stopping,
    /// `ABORTING`
    Aborting,
    /// `FREEZING`
    Freezing,
    /// `FROZEN`
    Frozen,
    /// `THAWED`
    Thawed,
    /// Anything else liblxc returned (empty when it returned nothing).
    Unknown(String),
}

impl State {
    /// Parses liblxc's spelling (`"RUNNING"`, ...); anything else is kept as
    /// [`State::Unknown`].
    pub fn from_lxc(s: &str) -> State {
        match s {
            "STOPPED" => State::Stopped,
            "STARTING" => State::Starting,
            "RUNNING" => State::Running,
            "STOPPING" => State::Stopping,
            "ABORTING" => State::Aborting,
            "FREEZING" => State::Freezing,
            "FROZEN" => State::Frozen,
            "THAWED" => State::Thawed,
            other => State::Unknown(other.to_owned()),
        }
    }

    /// liblxc's spelling of the state, as `lxc-info` and `lxc-wait` use it.
    pub fn as_str(&self) -> &str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Stopping => "STOPPING",
            State::Aborting => "ABORTING",
            State::Freezing => "FREEZING",
            State::Frozen => "FROZEN",
            State::Thawed => "THAWED",
            State::Unknown(s) => s,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lxc_state_round_trips() {
        for s in [
            "STOPPED", "STARTING", "RUNNING", "STOPPING", "ABORTING", "FREEZING", "FROZEN",
            "THAWED",
        ] {
            let state = State::from_lxc(s);
            assert!(!matches!(state, State::Unknown(_)), "{s} not recognised");
            assert_eq!(state.as_str(), s);
            assert_eq!(state.to_string(), s);
        }
    }

    #[test]
    fn unknown_state_keeps_its_text() {
        assert_eq!(State::from_lxc("running"), State::Unknown("running".into()));
        assert_eq!(State::from_lxc("").as_str(), "");
    }
}
