//! `ctmgr-guard`: the LXC pre-start hook that refuses to start a container on
//! a node that does not hold its store (DESIGN.md safety rule 1), even for a
//! plain `lxc-start`. Installed by `ctmgr create` as
//! `lxc.hook.pre-start = ctmgr-guard --store S --mountpoint M --device D [--drbd-resource R]`.
//!
//! It fails closed: bad arguments, an unreadable mount table or an unknown
//! DRBD role all refuse. The reason goes to stdout and stderr (liblxc 5 logs
//! a hook's output only at DEBUG level) and to syslog, where an operator who
//! ran a plain `lxc-start` finds it.
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
    match verdict {
        Ok(notes) => {
            for note in notes {
                eprintln!("{note}");
                to_syslog(&note);
            }
        }
        Err(msg) => {
            println!("{msg}");
            eprintln!("{msg}");
            to_syslog(&msg);
            std::process::exit(1);
        }
    }
}

/// Best effort: one line to the local syslog socket (RFC 3164 framing,
/// facility daemon, severity err). No syslog, no harm.
fn to_syslog(msg: &str) {
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    // Never wait on a busy syslog daemon: the start is waiting on us.
    let _ = sock.set_nonblocking(true);
    let line = format!("<27>ctmgr-guard[{}]: {msg}", std::process::id());
    let _ = sock.send_to(line.as_bytes(), "/dev/log");
}
