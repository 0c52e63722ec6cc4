//! ctmgr: LXC containers on DRBD-replicated Btrfs stores, run as one safe tool.
#![forbid(unsafe_code)]
