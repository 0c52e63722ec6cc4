//! Reads the DRBD configuration through the REAL `drbdadm -c FILE dump all`, so the lab
//! uses drbd-utils' own parser and its normalised output (one statement per line, as
//! printed by drbd-utils `user/v9/drbdadm_dump.c`). This module never interprets the raw
//! config file itself.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the real `drbdadm dump` may take before it is killed.
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);

/// One `on HOST { ... }` section of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSection {
    pub device: String,
    pub minor: u32,
    pub disk: String,
    pub address: String,
    pub port: u16,
    pub node_id: Option<u32>,
}

/// The `fencing` policy (drbd.conf(5): `disk` section in 8.4, `net` section in 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fencing {
    #[default]
    DontCare,
    ResourceOnly,
    ResourceAndStonith,
}

impl Fencing {
    fn parse(s: &str) -> Option<Fencing> {
        match s {
            "dont-care" => Some(Fencing::DontCare),
            "resource-only" => Some(Fencing::ResourceOnly),
            "resource-and-stonith" | "stonith" => Some(Fencing::ResourceAndStonith),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// Host sections in the order the dump lists them.
    pub hosts: Vec<(String, HostSection)>,
    /// From the resource's `disk`/`net` section, else `common`'s.
    pub fencing: Fencing,
    /// `handlers { fence-peer "CMD"; }` (resource, else common): a `/bin/sh -c` string.
    pub fence_peer: Option<String>,
    pub unfence_peer: Option<String>,
}

impl Resource {
    pub fn host(&self, node: &str) -> Option<&HostSection> {
        self.hosts.iter().find(|(h, _)| h == node).map(|(_, s)| s)
    }

    /// The other host of a two-node resource.
    pub fn peer_of(&self, node: &str) -> Option<(&str, &HostSection)> {
        self.hosts
            .iter()
            .find(|(h, _)| h != node)
            .map(|(h, s)| (h.as_str(), s))
    }

    /// The node-id DRBD uses: explicit in the dump (drbd-utils 9 assigns them), else the
    /// position of the `on` section.
    pub fn node_id(&self, node: &str) -> u32 {
        self.hosts
            .iter()
            .position(|(h, _)| h == node)
            .map(|i| self.hosts[i].1.node_id.unwrap_or(i as u32))
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub resources: BTreeMap<String, Resource>,
}

impl Config {
    /// Resources that have an `on NODE` section, sorted by name.
    pub fn for_host(&self, node: &str) -> Vec<&Resource> {
        self.resources
            .values()
            .filter(|r| r.host(node).is_some())
            .collect()
    }
}

/// The kernel version drbd-utils is told to assume for an 8.4 config: its drbdadm then
/// parses with the 8.4 grammar (`disk { fencing ...; }`), as it does on an 8.4 kernel.
pub const OVERRIDE_84: (&str, &str) = ("DRBD_DRIVER_VERSION_OVERRIDE", "8.4.11");

/// `REAL -c FILE dump ARGS`. With `v84`, a config the 9 grammar rejects is parsed again
/// with the 8.4 grammar (drbd-utils dispatches to drbdadm-84 on an 8.4 kernel).
pub fn dump(
    real_drbdadm: &Path,
    conf: &Path,
    args: &[String],
    v84: bool,
) -> Result<(Option<i32>, String, String), String> {
    let run = |override84: bool| {
        let mut c = Command::new(real_drbdadm);
        c.arg("-c").arg(conf).arg("dump").args(args);
        if override84 {
            c.env(OVERRIDE_84.0, OVERRIDE_84.1);
        }
        run_with_timeout(&mut c, DUMP_TIMEOUT)
    };
    let out = run(false)?;
    if out.0 != Some(0) && v84 {
        let again = run(true)?;
        if again.0 == Some(0) {
            return Ok(again);
        }
    }
    Ok(out)
}

/// Runs `REAL -c FILE dump all` with a timeout and parses its output.
pub fn load(real_drbdadm: &Path, conf: &Path, v84: bool) -> Result<Config, String> {
    let out = dump(real_drbdadm, conf, &["all".to_string()], v84)?;
    if out.0 != Some(0) {
        return Err(format!(
            "'{} -c {} dump all' failed (exit {:?}): {}",
            real_drbdadm.display(),
            conf.display(),
            out.0,
            out.2.trim()
        ));
    }
    parse_dump(&out.1)
}

/// Runs a command, collecting stdout and stderr, killing it after `timeout`.
/// Returns (exit code, stdout, stderr).
pub fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<(Option<i32>, String, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} did not finish within {}s and was killed",
                    cmd.get_program(),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {:?}: {e}", cmd.get_program())),
        }
    };
    let o = out_t.join().unwrap_or_default();
    let e = err_t.join().unwrap_or_default();
    Ok((status.code(), o, e))
}

/// Parses the normalised dump: `resource NAME {`, `on HOST {`, `device /dev/drbdN minor N;`,
/// `disk PATH;`, `address [ipv4] A:P;`, `node-id N;`, `}`. Nested blocks (`volume 0 {}` inside
/// `on`) are walked; the first device/disk found in an `on` section is used (one volume).
pub fn parse_dump(text: &str) -> Result<Config, String> {
    let mut cfg = Config::default();
    let mut stack: Vec<String> = Vec::new();
    let mut cur_res: Option<Resource> = None;
    let mut cur_host: Option<(String, PartialHost)> = None;
    let mut common = Options::default();
    let mut opts = Options::default();
    for (lineno, raw) in text.lines().enumerate() {
        // Handler strings may contain '#': options are read before comments are cut.
        let in_common = stack.first().map(String::as_str) == Some("common");
        let in_res = stack.first().map(String::as_str) == Some("resource");
        if (in_common || in_res) && !raw.trim_end().ends_with('{') && raw.trim() != "}" {
            let target = if in_common { &mut common } else { &mut opts };
            let inner = stack.last().map(String::as_str).unwrap_or("");
            target
                .statement(inner, raw.trim())
                .map_err(|e| format!("dump line {}: {e}", lineno + 1))?;
        }
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(head) = line.strip_suffix('{') {
            let words: Vec<&str> = head.split_whitespace().collect();
            match (stack.len(), words.as_slice()) {
                (0, ["resource", name]) => {
                    opts = Options::default();
                    cur_res = Some(Resource {
                        name: name.to_string(),
                        hosts: Vec::new(),
                        fencing: Fencing::DontCare,
                        fence_peer: None,
                        unfence_peer: None,
                    })
                }
                (1, ["on", host]) if cur_res.is_some() => {
                    cur_host = Some((host.to_string(), PartialHost::default()))
                }
                _ => {}
            }
            stack.push(words.first().copied().unwrap_or("").to_string());
            continue;
        }
        if line == "}" {
            let closed = stack.pop();
            match (stack.len(), closed.as_deref()) {
                (1, Some("on")) => {
                    if let (Some((host, p)), Some(res)) = (cur_host.take(), cur_res.as_mut()) {
                        let section = p.finish(&res.name, &host)?;
                        res.hosts.push((host, section));
                    }
                }
                (0, Some("resource")) => {
                    if let Some(mut res) = cur_res.take() {
                        res.fencing = opts.fencing.or(common.fencing).unwrap_or_default();
                        res.fence_peer = opts.fence_peer.take().or(common.fence_peer.clone());
                        res.unfence_peer = opts.unfence_peer.take().or(common.unfence_peer.clone());
                        cfg.resources.insert(res.name.clone(), res);
                    }
                }
                (_, None) => return Err(format!("dump line {}: unbalanced '}}'", lineno + 1)),
                _ => {}
            }
            continue;
        }
        let Some((_, p)) = cur_host.as_mut() else {
            continue;
        };
        let stmt = line.trim_end_matches(';');
        let words: Vec<&str> = stmt.split_whitespace().collect();
        match words.as_slice() {
            ["device", dev, "minor", m] => {
                p.device.get_or_insert_with(|| dev.to_string());
                p.minor
                    .get_or_insert(m.parse().map_err(|_| bad(lineno, raw))?);
            }
            ["device", "minor", m] => {
                p.minor
                    .get_or_insert(m.parse().map_err(|_| bad(lineno, raw))?);
            }
            ["device", dev] => {
                p.device.get_or_insert_with(|| dev.to_string());
            }
            ["disk", d] => {
                p.disk.get_or_insert_with(|| d.to_string());
            }
            ["address", rest @ ..] => {
                let ap = rest.last().ok_or_else(|| bad(lineno, raw))?;
                let (a, port) = ap.rsplit_once(':').ok_or_else(|| bad(lineno, raw))?;
                p.address = Some(a.to_string());
                p.port = Some(port.parse().map_err(|_| bad(lineno, raw))?);
            }
            ["node-id", n] => p.node_id = Some(n.parse().map_err(|_| bad(lineno, raw))?),
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("dump output ends inside a block".into());
    }
    Ok(cfg)
}

/// Fencing and handler options of one `resource` or of `common`.
#[derive(Default)]
struct Options {
    fencing: Option<Fencing>,
    fence_peer: Option<String>,
    unfence_peer: Option<String>,
}

impl Options {
    /// One statement inside block `inner` (`net`, `disk`, `handlers`, ...).
    fn statement(&mut self, inner: &str, stmt: &str) -> Result<(), String> {
        let (key, rest) = stmt.split_once(char::is_whitespace).unwrap_or((stmt, ""));
        let rest = rest.trim();
        match (inner, key) {
            ("net" | "disk", "fencing") => {
                let v = rest.trim_end_matches(';').trim();
                self.fencing =
                    Some(Fencing::parse(v).ok_or_else(|| format!("unknown fencing policy '{v}'"))?);
            }
            ("handlers", "fence-peer") => self.fence_peer = Some(unquote(rest)?),
            ("handlers", "unfence-peer") => self.unfence_peer = Some(unquote(rest)?),
            _ => {}
        }
        Ok(())
    }
}

/// A dumped string value: `"text";` with `\"` and `\\` escapes (drbdadm_dump.c quotes
/// handler strings).
fn unquote(v: &str) -> Result<String, String> {
    let v = v.trim();
    let v = v.strip_suffix(';').unwrap_or(v).trim_end();
    let Some(inner) = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) else {
        return Ok(v.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => return Err(format!("bad string {v}")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn bad(lineno: usize, raw: &str) -> String {
    format!("dump line {}: cannot parse '{}'", lineno + 1, raw.trim())
}

#[derive(Default)]
struct PartialHost {
    device: Option<String>,
    minor: Option<u32>,
    disk: Option<String>,
    address: Option<String>,
    port: Option<u16>,
    node_id: Option<u32>,
}

impl PartialHost {
    fn finish(self, res: &str, host: &str) -> Result<HostSection, String> {
        let minor = match (self.minor, self.device.as_deref()) {
            (Some(m), _) => m,
            (None, Some(d)) => d
                .trim_start_matches("/dev/drbd")
                .parse()
                .map_err(|_| format!("resource {res} on {host}: no minor for device {d}"))?,
            (None, None) => return Err(format!("resource {res} on {host}: no device")),
        };
        Ok(HostSection {
            device: self.device.unwrap_or_else(|| format!("/dev/drbd{minor}")),
            minor,
            disk: self
                .disk
                .ok_or_else(|| format!("resource {res} on {host}: no disk"))?,
            address: self.address.unwrap_or_default(),
            port: self.port.unwrap_or(0),
            node_id: self.node_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Literal output of drbd-utils 9.22 `drbdadm -c drbd.conf dump all` for the lab config.
    const DUMP: &str = "# /tmp/simx/drbd.conf
# resource r0 on vm: ignored, not stacked
# defined at /tmp/simx/drbd.conf:1
resource r0 {
    on node1 {
        node-id 1;
        device           /dev/drbd0 minor 0;
        disk             /dev/loop-fake0;
        meta-disk        internal;
        address          ipv4 10.0.254.1:7788;
    }
    on node2 {
        node-id 0;
        device           /dev/drbd0 minor 0;
        disk             /dev/loop-fake0;
        meta-disk        internal;
        address          ipv4 10.0.254.2:7788;
    }
}
";

    #[test]
    fn parses_normalised_dump() {
        let cfg = parse_dump(DUMP).unwrap();
        let r0 = &cfg.resources["r0"];
        let n1 = r0.host("node1").unwrap();
        assert_eq!(n1.device, "/dev/drbd0");
        assert_eq!(n1.minor, 0);
        assert_eq!(n1.disk, "/dev/loop-fake0");
        assert_eq!((n1.address.as_str(), n1.port), ("10.0.254.1", 7788));
        assert_eq!(r0.node_id("node1"), 1);
        assert_eq!(r0.node_id("node2"), 0);
        assert_eq!(r0.peer_of("node1").unwrap().0, "node2");
        assert!(cfg.for_host("node3").is_empty());
    }

    #[test]
    fn rejects_unbalanced_dump() {
        assert!(parse_dump("resource r0 {\n}\n}\n").is_err());
        assert!(parse_dump("resource r0 {\n on a {\n").is_err());
    }
}
