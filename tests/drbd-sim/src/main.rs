//! `ctmgr-drbd-sim`: a stand-in for DRBD's `drbdadm` and `drbdsetup` in the ctmgr lab,
//! where no DRBD kernel module exists. It dispatches on the name it is called by
//! (`drbdadm`, `drbdsetup`, anything else: control commands), keeps both nodes' simulated
//! kernel state in one shared JSON file under an exclusive flock, and prints DRBD's own
//! texts. The interface (env variables, control commands, hooks) is in README.md.
//! It never touches real block devices and never needs root.
#![forbid(unsafe_code)]

mod config;
mod handler;
mod host;
mod model;
mod render84;
mod render9;
mod state;
mod sync;
mod view;

use config::{Config, Resource};
use model::{Failure, Names, Version};
use state::{Disk, Locked};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use view::{Ctx, View};

/// Exit code for the sim's own failures (bad environment, corrupt state): drbdadm's
/// E_EXEC_ERROR.
const EXIT_SIM: i32 = 20;
/// drbdadm's E_USAGE (drbd-utils shared_main.h), also for unknown resources.
const EXIT_USAGE: i32 = 1;

/// What a command prints, in order, and its exit code.
#[derive(Default)]
struct Out {
    chunks: Vec<(bool, String)>,
    code: i32,
}

impl Out {
    fn out(&mut self, s: impl Into<String>) {
        self.chunks.push((false, s.into()));
    }
    fn err(&mut self, s: impl Into<String>) {
        self.chunks.push((true, s.into()));
    }
    fn fail(code: i32, msg: impl Into<String>) -> Out {
        let mut o = Out::default();
        o.err(msg);
        o.code = code;
        o
    }
    fn emit(self) -> i32 {
        let mut so = std::io::stdout().lock();
        let mut se = std::io::stderr().lock();
        for (is_err, s) in self.chunks {
            // Write errors (a closed pipe) cannot be reported anywhere better.
            if is_err {
                let _ = so.flush();
                let _ = se.write_all(s.as_bytes());
                let _ = se.flush();
            } else {
                let _ = so.write_all(s.as_bytes());
                let _ = so.flush();
            }
        }
        self.code
    }
}

/// Settings from the environment (README.md lists them).
struct Env {
    node: String,
    conf: PathBuf,
    state_path: PathBuf,
    real_drbdadm: PathBuf,
    version: Version,
    step_ms: u64,
    hold_open: Vec<String>,
    disk_kb: Option<u64>,
    colors: bool,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// The real parser for the version played: drbdadm dispatches to the 8.4 front end only
/// when an 8.4 module is loaded, and the 9 parser rejects 8.4-only syntax such as
/// `disk { fencing resource-only; }`.
fn default_parser(version: Version) -> PathBuf {
    if version == Version::V84 {
        for p in ["/usr/lib/drbd/drbdadm-84", "/lib/drbd/drbdadm-84"] {
            if Path::new(p).exists() {
                return PathBuf::from(p);
            }
        }
    }
    PathBuf::from("/usr/sbin/drbdadm")
}

impl Env {
    fn load() -> Result<Env, String> {
        let node = match env_var("DRBD_SIM_NODE") {
            Some(n) => n,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_err(|e| format!("cannot read /proc/sys/kernel/hostname: {e}"))?
                .trim()
                .to_string(),
        };
        let state_path = PathBuf::from(
            env_var("DRBD_SIM_STATE").unwrap_or_else(|| "/var/lib/drbd-sim/state.json".into()),
        );
        let version_text = match env_var("DRBD_SIM_VERSION") {
            Some(v) => v,
            None => std::fs::read_to_string(state_dir(&state_path).join("version"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "9".into()),
        };
        let version = match version_text.as_str() {
            "9" | "" => Version::V9,
            "8.4" => Version::V84,
            other => return Err(format!("DRBD_SIM_VERSION must be 9 or 8.4, not '{other}'")),
        };
        let step_ms = match env_var("DRBD_SIM_STEP_MS") {
            Some(s) => s
                .parse()
                .map_err(|_| format!("DRBD_SIM_STEP_MS must be a number, not '{s}'"))?,
            None => 250,
        };
        let disk_kb = match env_var("DRBD_SIM_DISK_KB") {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| format!("DRBD_SIM_DISK_KB must be a number, not '{s}'"))?,
            ),
            None => None,
        };
        let colors = match env_var("DRBD_SIM_COLOR").as_deref() {
            Some("always") => true,
            Some("never") => false,
            _ => std::io::stdout().is_terminal(),
        };
        Ok(Env {
            node,
            conf: PathBuf::from(
                env_var("DRBD_SIM_CONF").unwrap_or_else(|| "/etc/drbd.conf".into()),
            ),
            state_path,
            real_drbdadm: env_var("DRBD_SIM_REAL_DRBDADM")
                .map(PathBuf::from)
                .unwrap_or_else(|| default_parser(version)),
            version,
            step_ms,
            hold_open: env_var("DRBD_SIM_HOLD_OPEN")
                .map(|s| {
                    s.split([',', ':'])
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            disk_kb,
            colors,
        })
    }

    fn disk_kb(&self, res: &Resource, node: &str) -> u64 {
        self.disk_kb
            .or_else(|| res.host(node).and_then(|h| host::block_size_kb(&h.disk)))
            .unwrap_or(host::DEFAULT_DISK_KB)
    }

    fn size_kb(&self, res: &Resource, node: &str) -> u64 {
        host::usable_kb(self.disk_kb(res, node))
    }

    /// Only this node's mount namespace is visible to us.
    fn open(&self, res: &Resource, node: &str) -> bool {
        node == self.node
            && res
                .host(node)
                .is_some_and(|h| host::held_open(&h.device, &h.disk, &self.hold_open))
    }
}

fn state_dir(state: &Path) -> PathBuf {
    state
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One invocation's session: config, locked state, bookkeeping around each command.
struct Sim {
    env: Env,
    cfg: Config,
    st: Locked,
    /// A drbdadm/drbdsetup invocation: runs this node's pending unfence-peer handlers when
    /// it finishes (control commands do not).
    helpers: bool,
}

impl Sim {
    fn open(mut env: Env, conf: Option<PathBuf>, tick: bool) -> Result<Sim, String> {
        if let Some(c) = conf {
            env.conf = c;
        }
        let cfg = config::load(&env.real_drbdadm, &env.conf, env.version == Version::V84)?;
        let mut st = Locked::open(&env.state_path)?;
        if tick {
            model::tick(&mut st.state);
        }
        let mut sim = Sim {
            env,
            cfg,
            st,
            helpers: false,
        };
        sim.settle();
        Ok(sim)
    }

    /// Runs a handler of `res` (`fence-peer` or `unfence-peer`) as drbdadm does, with the
    /// state lock released meanwhile (the handler may call drbdadm on either node), then
    /// re-reads and settles the state. None: not configured (drbdadm then returns 0).
    fn run_handler(&mut self, res: &Resource, which: &str) -> Result<Option<i32>, String> {
        let cmd = match which {
            "fence-peer" => res.fence_peer.clone(),
            _ => res.unfence_peer.clone(),
        };
        let Some(cmd) = cmd else {
            return Ok(None);
        };
        self.settle();
        if self.env.version == Version::V84 {
            self.write_proc_files()?;
        }
        self.st.unlock()?;
        let env = handler::env(res, &self.env.node, self.env.version, &self.env.conf);
        let r = handler::run(&cmd, &env, handler::TIMEOUT);
        self.st.relock()?;
        self.settle();
        // Killed or timed out: a broken handler, as any code the kernel does not know.
        Ok(Some(r.unwrap_or(-1)))
    }

    /// drbd_set_role(): the promotion loop, calling fence-peer (lock released) when the
    /// fencing policy asks for it.
    fn promote(&mut self, res: &Resource, force: bool) -> Result<(), Failure> {
        let node = self.env.node.clone();
        let version = self.env.version;
        let names = Names {
            version,
            res,
            node: &node,
        };
        let mut p = model::Promotion {
            force,
            ..Default::default()
        };
        let mut last = None;
        for _ in 0..model::PRIMARY_TRIES {
            match model::primary_try(&mut self.st.state, &names, &mut p) {
                model::Try::Done => return Ok(()),
                model::Try::Fail(f) => return Err(f),
                model::Try::Again => {}
                model::Try::FencePeer(f) => {
                    last = Some(f);
                    let code = match self.run_handler(res, "fence-peer") {
                        // Not defined: drbdadm runs nothing and returns 0 ("broken").
                        Ok(c) => c.unwrap_or(0),
                        Err(e) => {
                            return Err(Failure {
                                lines: format!("ctmgr-drbd-sim: {e}\n"),
                                setup: String::new(),
                                code: EXIT_SIM,
                            })
                        }
                    };
                    model::fence_result(&mut self.st.state, &names, Some(code), &mut p);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            names.state_failed(
                "primary",
                force,
                "(-7) Refusing to be Primary while peer is not outdated",
            )
        }))
    }

    /// Runs (and clears) this node's pending unfence-peer calls.
    fn run_unfence(&mut self) -> Result<(), String> {
        let node = self.env.node.clone();
        if self.st.state.crashed.contains(&node) {
            return Ok(());
        }
        let mut due = Vec::new();
        for r in self.cfg.for_host(&node) {
            let nr = self.st.state.node_res(&r.name, &node);
            if nr.unfence_pending {
                nr.unfence_pending = false;
                due.push(r.clone());
            }
        }
        for r in due {
            // The exit code of unfence-peer is only logged by the kernel.
            self.run_handler(&r, "unfence-peer")?;
        }
        Ok(())
    }

    fn settle(&mut self) {
        let env = &self.env;
        model::settle(&mut self.st.state, &self.cfg, env.step_ms, &|r, n| {
            env.size_kb(r, n)
        });
    }

    /// Settles, saves and (8.4) rewrites the /proc/drbd stand-in files.
    fn finish(mut self, mut out: Out) -> Out {
        self.settle();
        if self.helpers {
            if let Err(e) = self.run_unfence() {
                out.err(format!("ctmgr-drbd-sim: {e}\n"));
                out.code = EXIT_SIM;
            }
        }
        if let Err(e) = self.st.save() {
            out.err(format!("ctmgr-drbd-sim: {e}\n"));
            out.code = EXIT_SIM;
            return out;
        }
        if self.env.version == Version::V84 {
            if let Err(e) = self.write_proc_files() {
                out.err(format!("ctmgr-drbd-sim: {e}\n"));
                out.code = EXIT_SIM;
            }
        }
        out
    }

    fn views(&self, node: &str) -> Vec<View> {
        let env = &self.env;
        let size = |r: &Resource, n: &str| env.size_kb(r, n);
        let open = |r: &Resource, n: &str| env.open(r, n);
        let ctx = Ctx {
            state: &self.st.state,
            step_ms: env.step_ms,
            size_kb: &size,
            open: &open,
        };
        self.cfg
            .for_host(node)
            .into_iter()
            .map(|r| view::view(&ctx, r, node))
            .collect()
    }

    fn view(&self, res: &str) -> View {
        self.views(&self.env.node)
            .into_iter()
            .find(|v| v.name == res)
            .expect("resource checked against config")
    }

    /// Path template from `<statedir>/proc_drbd_path`, `{node}` replaced by the node name.
    fn write_proc_files(&self) -> Result<(), String> {
        let dir = state_dir(&self.env.state_path);
        let template = std::fs::read_to_string(dir.join("proc_drbd_path"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{}/proc-drbd-{{node}}", dir.display()));
        let mut nodes = vec![self.env.node.clone()];
        if template.contains("{node}") {
            for r in self.cfg.resources.values() {
                for (h, _) in &r.hosts {
                    if !nodes.contains(h) {
                        nodes.push(h.clone());
                    }
                }
            }
        }
        for n in nodes {
            let text = render84::proc_drbd(&self.views(&n));
            let path = PathBuf::from(template.replace("{node}", &n));
            state::write_atomic(&path, text.as_bytes())?;
        }
        Ok(())
    }

    fn names<'a>(&'a self, res: &'a Resource) -> Names<'a> {
        Names {
            version: self.env.version,
            res,
            node: &self.env.node,
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let args = &argv[argv.len().min(1)..];
    let out = match Env::load() {
        Err(e) => Out::fail(EXIT_SIM, format!("ctmgr-drbd-sim: {e}\n")),
        Ok(env) => match prog.as_str() {
            "drbdadm" => drbdadm(env, args),
            "drbdsetup" => drbdsetup(env, args),
            _ => control(env, args),
        },
    };
    std::process::exit(out.emit());
}

fn refuse_if_crashed(sim: &Sim) -> Option<Out> {
    sim.st.state.crashed.contains(&sim.env.node).then(|| {
        Out::fail(
            EXIT_SIM,
            format!(
                "ctmgr-drbd-sim: node {0} is crashed; run 'ctmgr-drbd-sim revive {0}' first\n",
                sim.env.node
            ),
        )
    })
}

/// Prints a failure as drbdadm does: drbdsetup's lines, then the Command line.
fn adm_failure(out: &mut Out, f: &Failure) {
    out.err(f.lines.clone());
    if !f.setup.is_empty() {
        out.err(format!(
            "Command '{}' terminated with exit code {}\n",
            f.setup, f.code
        ));
    }
    out.code = f.code;
}

fn drbdadm(env: Env, args: &[String]) -> Out {
    let mut conf = None;
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        let a = &args[i];
        if a == "-c" || a == "--config-file" {
            match args.get(i + 1) {
                Some(f) => conf = Some(PathBuf::from(f)),
                None => return Out::fail(EXIT_USAGE, "drbdadm: option -c needs a file\n"),
            }
            i += 2;
        } else if let Some(f) = a.strip_prefix("--config-file=") {
            conf = Some(PathBuf::from(f));
            i += 1;
        } else if let Some(f) = a.strip_prefix("-c") {
            conf = Some(PathBuf::from(f));
            i += 1;
        } else {
            return Out::fail(
                EXIT_USAGE,
                format!("ctmgr-drbd-sim: drbdadm option '{a}' is not simulated\n"),
            );
        }
    }
    let Some(cmd) = args.get(i) else {
        return Out::fail(
            EXIT_USAGE,
            "USAGE: drbdadm COMMAND [OPTION...] {all|RESOURCE...}\n",
        );
    };
    let rest = &args[i + 1..];
    if cmd == "dump" {
        let conf = conf.unwrap_or_else(|| env.conf.clone());
        return delegate_dump(&env, &conf, rest);
    }
    let flags: Vec<&str> = rest
        .iter()
        .filter(|a| a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let names: Vec<&str> = rest
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let force = flags.contains(&"--force");
    let discard = flags.contains(&"--discard-my-data");
    let known = [
        "create-md",
        "up",
        "down",
        "primary",
        "secondary",
        "connect",
        "disconnect",
        "adjust",
        "outdate",
        "status",
        "role",
        "dstate",
        "cstate",
    ];
    if !known.contains(&cmd.as_str()) {
        return Out::fail(
            EXIT_SIM,
            format!("ctmgr-drbd-sim: drbdadm '{cmd}' is not simulated\n"),
        );
    }
    let mut sim = match Sim::open(env, conf, true) {
        Ok(s) => s,
        Err(e) => return Out::fail(EXIT_SIM, format!("ctmgr-drbd-sim: {e}\n")),
    };
    sim.helpers = true;
    if let Some(o) = refuse_if_crashed(&sim) {
        return sim.finish(o);
    }
    let node = sim.env.node.clone();
    let mine: Vec<Resource> = sim.cfg.for_host(&node).into_iter().cloned().collect();
    let mut out = Out::default();
    // drbdadm_main.c: "no resources defined!" / "'%s' not defined in your config (for this
    // host).", both E_USAGE (exit 1; checked with drbdadm 9.22).
    if mine.is_empty() {
        out.err("no resources defined!\n");
        out.code = EXIT_USAGE;
        return sim.finish(out);
    }
    let targets: Vec<Resource> = if names.is_empty() || names == ["all"] {
        if names.is_empty() && cmd != "status" {
            out.err(format!(
                "USAGE: drbdadm {cmd} {{all|RESOURCE...}}\nNo resource names specified\n"
            ));
            out.code = EXIT_USAGE;
            return sim.finish(out);
        }
        mine.clone()
    } else {
        let mut v = Vec::new();
        for n in &names {
            match mine.iter().find(|r| r.name == *n) {
                Some(r) => v.push(r.clone()),
                None => {
                    out.err(format!(
                        "'{n}' not defined in your config (for this host).\n"
                    ));
                    out.code = EXIT_USAGE;
                    return sim.finish(out);
                }
            }
        }
        v
    };
    if cmd == "status" {
        let all = names.is_empty() || names == ["all"];
        status_cmd(&sim, &mut out, &targets, all, false, sim.env.colors, true);
        return sim.finish(out);
    }
    for res in &targets {
        let held = sim.env.open(res, &node);
        if cmd == "primary" {
            if let Err(f) = sim.promote(res, force) {
                adm_failure(&mut out, &f);
                return sim.finish(out);
            }
            sim.settle();
            continue;
        }
        let r = {
            let names = Names {
                version: sim.env.version,
                res,
                node: &node,
            };
            let st = &mut sim.st.state;
            match cmd.as_str() {
                "create-md" => {
                    let disk_kb = sim.env.disk_kb(res, &node);
                    model::create_md(st, &names, force).map(|_| {
                        // drbdmeta.c prints these on stdout, the bitmap line on stderr.
                        let mut o = Out::default();
                        o.out("initializing activity log\n");
                        o.err(format!(
                            "initializing bitmap ({}) to all zero\n",
                            host::ppsize(host::bitmap_kb(disk_kb))
                        ));
                        o.out("Writing meta data...\n");
                        o.out("New drbd meta data block successfully created.\n");
                        o
                    })
                }
                "up" => model::up(st, &names).map(|_| Out::default()),
                "down" => model::down(st, &names, held).map(|_| Out::default()),
                "outdate" => model::outdate(st, &names).map(|_| Out::default()),
                "secondary" => model::secondary(st, &names, held).map(|_| Out::default()),
                "connect" => model::connect(st, &names, discard).map(|_| Out::default()),
                "disconnect" => model::disconnect(st, &names).map(|_| Out::default()),
                "adjust" => model::adjust(st, &names).map(|_| Out::default()),
                _ => Ok(Out::default()),
            }
        };
        match r {
            Ok(o) => out.chunks.extend(o.chunks),
            Err(f) => {
                adm_failure(&mut out, &f);
                return sim.finish(out);
            }
        }
        sim.settle();
        if matches!(cmd.as_str(), "role" | "dstate" | "cstate") {
            match query(&sim, res, cmd, true) {
                Ok(text) => out.out(text),
                Err(f) => {
                    adm_failure(&mut out, &f);
                    return sim.finish(out);
                }
            }
        }
    }
    sim.finish(out)
}

/// role / dstate / cstate of one resource on this node (`adm`: as drbdadm runs it).
fn query(sim: &Sim, res: &Resource, cmd: &str, adm: bool) -> Result<String, Failure> {
    let v = sim.view(&res.name);
    let names = sim.names(res);
    let me = sim.st.state.get(&res.name, &sim.env.node);
    if !v.up && adm && cmd == "dstate" && sim.env.version == Version::V84 && me.md {
        // drbdadm-84 falls back to `drbdmeta dstate`: the meta data cannot tell UpToDate
        // from Consistent (the capture's BONUS B0).
        let d = match me.disk {
            Disk::UpToDate => Disk::Consistent,
            d => d,
        };
        return Ok(format!("{}\n", d.as_str()));
    }
    if !v.up {
        let lines = match (sim.env.version, cmd) {
            (Version::V9, "role") => format!("{}: Unknown resource\n", res.name),
            (Version::V9, "cstate") => format!("{}: No such connection\n", res.name),
            (Version::V9, _) => format!("{}: No such device\n", v.minor),
            (Version::V84, _) => format!(
                "{}: Failure: (127) Device minor not allocated\nadditional info from kernel:\nunknown minor\n",
                v.minor
            ),
        };
        return Err(Failure {
            lines,
            setup: names.setup(cmd, false),
            code: 10,
        });
    }
    Ok(match (sim.env.version, cmd) {
        (Version::V84, "role") => render84::role(&v),
        (Version::V84, "dstate") => render84::dstate(&v),
        (Version::V84, _) => format!("{}\n", render84::cstate(&v)),
        (Version::V9, "role") => format!("{}\n", v.role.as_str()),
        (Version::V9, "dstate") => render9::dstate(&v),
        (Version::V9, _) => format!("{}\n", render9::cstate(&v)),
    })
}

/// `status` for drbdadm (`adm` true: failures get the Command line) and drbdsetup.
fn status_cmd(
    sim: &Sim,
    out: &mut Out,
    targets: &[Resource],
    all: bool,
    json: bool,
    colors: bool,
    adm: bool,
) {
    let views: Vec<View> = sim.views(&sim.env.node);
    let mut shown: Vec<&View> = Vec::new();
    for res in targets {
        let v = views.iter().find(|v| v.name == res.name).expect("view");
        if v.up {
            shown.push(v);
        } else if !all {
            let f = Failure {
                lines: format!("{}: No such resource\n", res.name),
                setup: sim.names(res).setup("status", false),
                code: 10,
            };
            if adm {
                adm_failure(out, &f);
            } else {
                out.err(f.lines);
                out.code = 10;
            }
            return;
        }
    }
    if json {
        out.out(render9::status_json(&shown));
        return;
    }
    if shown.is_empty() && sim.env.version == Version::V9 {
        out.out("# No currently configured DRBD found.\n");
    }
    for v in shown {
        out.out(match sim.env.version {
            Version::V9 => render9::status(v, colors),
            Version::V84 => render84::status(v, colors),
        });
    }
}

fn delegate_dump(env: &Env, conf: &Path, rest: &[String]) -> Out {
    match config::dump(&env.real_drbdadm, conf, rest, env.version == Version::V84) {
        Ok((code, so, se)) => {
            let mut o = Out::default();
            o.out(so);
            o.err(se);
            o.code = code.unwrap_or(EXIT_SIM);
            o
        }
        Err(e) => Out::fail(EXIT_SIM, format!("ctmgr-drbd-sim: {e}\n")),
    }
}

fn drbdsetup(env: Env, args: &[String]) -> Out {
    let Some(cmd) = args.first().cloned() else {
        return Out::fail(
            EXIT_SIM,
            "USAGE: drbdsetup COMMAND {ARGUMENTS...} [OPTIONS...]\n",
        );
    };
    let rest = &args[1..];
    let flags: Vec<&str> = rest
        .iter()
        .filter(|a| a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let objs: Vec<&str> = rest
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let version = env.version;
    if version == Version::V84 {
        // drbdsetup-84 has no --json; getopt's message, then the command's usage
        // (the capture omits the usage text; this is drbdsetup-84's option list).
        if let Some(bad) = flags.iter().find(|f| f.starts_with("--json")) {
            let mut o = Out::default();
            o.err(format!("{cmd}: unrecognized option '{bad}'\n"));
            o.err(format!(
                "USAGE: {cmd} {{resource}} [{{--verbose|--statistics|--color={{always|auto|never}}}}]\n"
            ));
            o.code = 20;
            return o;
        }
    }
    let mut colors = env.colors;
    for f in &flags {
        match *f {
            "--color=always" | "--color" => colors = true,
            "--color=never" => colors = false,
            _ => {}
        }
    }
    let mut sim = match Sim::open(env, None, true) {
        Ok(s) => s,
        Err(e) => return Out::fail(EXIT_SIM, format!("ctmgr-drbd-sim: {e}\n")),
    };
    sim.helpers = true;
    if let Some(o) = refuse_if_crashed(&sim) {
        return sim.finish(o);
    }
    let node = sim.env.node.clone();
    let mine: Vec<Resource> = sim.cfg.for_host(&node).into_iter().cloned().collect();
    // Objects are resource names, or minors where drbdsetup takes a minor.
    let find = |o: &str| -> Option<Resource> {
        mine.iter()
            .find(|r| r.name == o || r.host(&node).is_some_and(|h| h.minor.to_string() == o))
            .cloned()
    };
    let mut out = Out::default();
    match cmd.as_str() {
        "status" | "events2" => {
            let obj = objs.first().copied().unwrap_or("all");
            let targets: Vec<Resource> = if obj == "all" {
                mine.clone()
            } else {
                match find(obj) {
                    Some(r) => vec![r],
                    None => {
                        out.err(format!("{obj}: No such resource\n"));
                        out.code = 10;
                        return sim.finish(out);
                    }
                }
            };
            if cmd == "status" {
                let json = flags.contains(&"--json");
                status_cmd(&sim, &mut out, &targets, obj == "all", json, colors, false);
            } else {
                if !flags.contains(&"--now") {
                    out.err("ctmgr-drbd-sim: events2 without --now is not simulated\n");
                    out.code = EXIT_SIM;
                    return sim.finish(out);
                }
                let conn_name = |v: &View| match sim.env.version {
                    Version::V9 => v.peer.clone(),
                    // drbdsetup-84 events2: "Always use 'peer' as connection name".
                    Version::V84 => "peer".to_string(),
                };
                for v in sim.views(&node) {
                    if v.up && targets.iter().any(|t| t.name == v.name) {
                        out.out(render9::events2(&v, &conn_name(&v)));
                    }
                }
                out.out("exists -\n");
            }
        }
        "role" | "dstate" | "cstate" | "primary" | "secondary" | "down" | "connect"
        | "disconnect" => {
            let Some(obj) = objs.first() else {
                out.err(format!("USAGE: drbdsetup {cmd} {{resource|minor}}\n"));
                out.code = 20;
                return sim.finish(out);
            };
            let Some(res) = find(obj) else {
                let msg = match cmd.as_str() {
                    "role" => format!("{obj}: Unknown resource\n"),
                    "dstate" => format!("{obj}: No such device\n"),
                    "cstate" => format!("{obj}: No such connection\n"),
                    "down" => String::new(),
                    _ => format!("{obj}: Failure: (158) Unknown resource\n"),
                };
                out.err(msg);
                out.code = if cmd == "down" { 0 } else { 10 };
                return sim.finish(out);
            };
            let held = sim.env.open(&res, &node);
            let r = if matches!(cmd.as_str(), "role" | "dstate" | "cstate") {
                query(&sim, &res, &cmd, false).map(|t| {
                    out.out(t);
                })
            } else if cmd == "primary" {
                sim.promote(&res, flags.contains(&"--force"))
            } else {
                let names = Names {
                    version: sim.env.version,
                    res: &res,
                    node: &node,
                };
                let st = &mut sim.st.state;
                match cmd.as_str() {
                    "secondary" => model::secondary(st, &names, held),
                    "down" => model::down(st, &names, held),
                    "connect" => model::connect(st, &names, flags.contains(&"--discard-my-data")),
                    _ => model::disconnect(st, &names),
                }
            };
            if let Err(f) = r {
                out.err(f.lines);
                out.code = f.code;
            }
        }
        other => {
            out.err(format!(
                "ctmgr-drbd-sim: drbdsetup '{other}' is not simulated\n"
            ));
            out.code = EXIT_SIM;
        }
    }
    sim.finish(out)
}

/// `ping-timeout NODE`: the fence-peer call of a Primary that lost its peer (the capture's
/// STEP 7b, ~9.5 s after the cut). The handler runs from this process, so in NODE's
/// namespaces when the command is run inside NODE.
fn ping_timeout(mut sim: Sim, node: &str) -> Out {
    let mut out = Out::default();
    if sim.st.state.crashed.contains(node) {
        return sim.finish(Out::fail(
            2,
            format!("ctmgr-drbd-sim: node {node} is crashed\n"),
        ));
    }
    sim.env.node = node.to_string();
    let due: Vec<Resource> = model::ping_timeout_candidates(&sim.st.state, &sim.cfg, node)
        .into_iter()
        .cloned()
        .collect();
    for res in due {
        let code = match sim.run_handler(&res, "fence-peer") {
            Ok(c) => c.unwrap_or(0),
            Err(e) => return sim.finish(Out::fail(EXIT_SIM, format!("ctmgr-drbd-sim: {e}\n"))),
        };
        // Re-check: the link may be back, or the node demoted, while the handler ran.
        let still = model::ping_timeout_candidates(&sim.st.state, &sim.cfg, node)
            .iter()
            .any(|r| r.name == res.name);
        if still {
            let names = Names {
                version: sim.env.version,
                res: &res,
                node,
            };
            model::apply_fence_code(&mut sim.st.state, &names, Some(code));
        }
        out.out(format!("{} {code}\n", res.name));
    }
    sim.finish(out)
}

const CONTROL_USAGE: &str = "usage: ctmgr-drbd-sim COMMAND
  crash NODE                 NODE's resources vanish (its Primary is gone)
  revive NODE                NODE may run 'drbdadm up' again
  cut-link | heal-link       cut / restore the replication link of all resources
  set-disk NODE RES STATE    force a disk state (UpToDate, Outdated, Inconsistent, ...)
  set-stats NODE RES K:V...  set /proc/drbd counters (ns nr dw dr al bm lo pe ua ap ep)
  tick                       count one invocation (advance handshakes and resyncs)
  ping-timeout NODE          DRBD's ping timeout on NODE (run it inside NODE): its kernel
                             calls fence-peer for each resource it is Primary of, not
                             connected, peer not known outdated; prints 'RES EXIT' lines
  show                       print the shared state as JSON
";

fn control(env: Env, args: &[String]) -> Out {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(&cmd) = a.first() else {
        return Out::fail(2, CONTROL_USAGE);
    };
    let valid = matches!(
        (cmd, a.len()),
        ("crash" | "revive" | "ping-timeout", 2)
            | ("cut-link" | "heal-link" | "tick" | "show", 1)
            | ("set-disk", 4)
    ) || (cmd == "set-stats" && a.len() >= 4);
    if !valid {
        return Out::fail(2, CONTROL_USAGE);
    }
    // Only `tick` counts as an invocation: fault injection must not move transitions on.
    let mut sim = match Sim::open(env, None, cmd == "tick") {
        Ok(s) => s,
        Err(e) => return Out::fail(EXIT_SIM, format!("ctmgr-drbd-sim: {e}\n")),
    };
    let mut out = Out::default();
    let known_node = |sim: &Sim, n: &str| {
        sim.cfg
            .resources
            .values()
            .any(|r| r.hosts.iter().any(|(h, _)| h == n))
    };
    if matches!(
        cmd,
        "crash" | "revive" | "set-disk" | "set-stats" | "ping-timeout"
    ) && !known_node(&sim, a[1])
    {
        return sim.finish(Out::fail(
            2,
            format!("ctmgr-drbd-sim: unknown node '{}'\n", a[1]),
        ));
    }
    if matches!(cmd, "set-disk" | "set-stats") && !sim.cfg.resources.contains_key(a[2]) {
        return sim.finish(Out::fail(
            2,
            format!("ctmgr-drbd-sim: unknown resource '{}'\n", a[2]),
        ));
    }
    match cmd {
        "crash" => model::crash(&mut sim.st.state, a[1]),
        "revive" => {
            let cfg = sim.cfg.clone();
            model::revive(&mut sim.st.state, &cfg, a[1]);
        }
        "ping-timeout" => return ping_timeout(sim, a[1]),
        "cut-link" => sim.st.state.link_cut = true,
        "heal-link" => sim.st.state.link_cut = false,
        "set-disk" => match Disk::parse(a[3]) {
            Some(d) => sim.st.state.node_res(a[2], a[1]).disk = d,
            None => {
                return sim.finish(Out::fail(
                    2,
                    format!("ctmgr-drbd-sim: unknown disk state '{}'\n", a[3]),
                ))
            }
        },
        "set-stats" => {
            for kv in &a[3..] {
                let parsed = kv
                    .split_once(':')
                    .and_then(|(k, v)| v.parse::<u64>().ok().map(|v| (k, v)));
                let stats = &mut sim.st.state.node_res(a[2], a[1]).stats;
                match parsed {
                    Some((k, v)) if stats.set(k, v) => {}
                    _ => {
                        return sim.finish(Out::fail(
                            2,
                            format!("ctmgr-drbd-sim: bad counter '{kv}'\n"),
                        ))
                    }
                }
            }
        }
        "show" => match serde_json::to_string_pretty(&sim.st.state) {
            Ok(s) => out.out(format!("{s}\n")),
            Err(e) => return sim.finish(Out::fail(EXIT_SIM, format!("ctmgr-drbd-sim: {e}\n"))),
        },
        _ => {}
    }
    sim.finish(out)
}
