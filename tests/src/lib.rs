//! Test infrastructure for ctmgr: a one-node sandbox and the two-node HA lab built from
//! namespaces on this machine ([`lab`]), and the bounded command runner everything uses
//! ([`run`]).
//!
//! Nothing here may wait without a deadline or touch the machine's own network namespace
//! or /etc: see DESIGN.md §8.
#![forbid(unsafe_code)]

pub mod helpers;
pub mod invariants;
pub mod lab;
pub mod procfs;
pub mod run;

pub use lab::{Bins, Lab, LabSpec, Node};
pub use run::Output;
