//! ctmgr: LXC containers on DRBD-replicated Btrfs stores, run as one safe
//! tool. The library owns behaviour; the binary (`main.rs`, `commands/`) only
//! parses arguments, calls in here and prints.
#![forbid(unsafe_code)]

pub mod btrfs;
pub mod config;
pub mod container;
pub mod doctor;
pub mod drbd;
pub mod exit;
pub mod fence;
pub mod freeze;
pub mod fsutil;
pub mod guard;
pub mod intent;
pub mod journal;
pub mod lock;
pub mod mountinfo;
pub mod names;
pub mod names_peer;
pub mod net;
pub mod pool;
pub mod reserved;
pub mod retention;
pub mod runner;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod takeover;
pub mod template;
pub mod text;
