//! `ctmgr-guard`: the LXC pre-start hook that refuses to start a container on
//! a node that does not hold its store (DESIGN.md safety rule 1), even for a
//! plain `lxc-start`. Installed by `ctmgr create` as
//! `lxc.hook.pre-start = ctmgr-guard --store S --mountpoint M --device D [--drbd-resource R]`.
//!
//! It fails closed: bad arguments, an unreadable mount table or an unknown
//! DRBD role all refuse. The reason goes to stderr (which `lxc-start` shows)
//! and to stdout, since liblxc logs a hook's output at ERROR level.
#![forbid(unsafe_code)]

use ctmgr::guard;
use ctmgr::runner::SystemRunner;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verdict = guard::parse_args(&args)
        .map_err(|e| format!("ctmgr-guard: refusing to start: bad hook arguments: {e}"))
        .and_then(|a| {
            let config = std::env::var_os("LXC_CONFIG_FILE").map(std::path::PathBuf::from);
            guard::check(&a, config.as_deref(), &SystemRunner::default())
        });
    if let Err(msg) = verdict {
        println!("{msg}");
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
