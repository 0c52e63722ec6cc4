//! `ctmgr drbd lint`: finds the mistakes that break a two-node DRBD pair in
//! a hand-written drbd.conf, before drbdadm or a failover finds them.
//!
//! A small tokenizer (words, quoted strings, `{ } ;`, `#` comments, with
//! line numbers) feeds a tree parser; the checks walk the tree. A file that
//! is not a DRBD configuration, or is cut short, is a [`LintError`] (the CLI
//! exits 2); mistakes in a well-formed file are [`Finding`]s, each saying
//! what is wrong and what to write instead. Lint only reads text: it never
//! runs DRBD tools and never prints a `shared-secret` value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The file could not be read as a DRBD configuration at all.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("{}:{line}: not a drbd configuration: expected `resource`, `common`, `global` or `include`, found {found:?}", file.display())]
    NotDrbd {
        file: PathBuf,
        line: usize,
        found: String,
    },
    #[error("{}: not a drbd configuration: the file defines nothing", file.display())]
    Empty { file: PathBuf },
    #[error("{}:{line}: `}}` closes no open section", file.display())]
    Unbalanced { file: PathBuf, line: usize },
    #[error("{}:{line}: section `{section}` opened here is not closed before the end of the file (truncated?)", file.display())]
    Truncated {
        file: PathBuf,
        line: usize,
        section: String,
    },
    #[error("{}:{line}: quoted string is not closed before the end of the line", file.display())]
    Unterminated { file: PathBuf, line: usize },
    #[error("{}:{line}: statement `{statement}` does not end with `;` (truncated?)", file.display())]
    Incomplete {
        file: PathBuf,
        line: usize,
        statement: String,
    },
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// How bad a finding is: errors break the pair, warnings are suspicious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One mistake, at a line of the linted file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub line: usize,
    pub severity: Severity,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Names from /etc/hosts and the addresses they resolve to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsMap {
    by_name: BTreeMap<String, Vec<IpAddr>>,
}

impl HostsMap {
    /// Addresses of `name` (host names compare case-insensitively).
    pub fn resolve(&self, name: &str) -> Option<&[IpAddr]> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// Every name that resolves to `addr`, sorted.
    pub fn names_for(&self, addr: IpAddr) -> Vec<&str> {
        self.by_name
            .iter()
            .filter(|(_, addrs)| addrs.contains(&addr))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Reads /etc/hosts text: `ADDRESS NAME [ALIAS…]`, `#` comments. Lines whose
/// first field is not an IP address are skipped, as the resolver does.
pub fn parse_hosts(text: &str) -> HostsMap {
    let mut map = HostsMap::default();
    for line in text.lines() {
        let data = line.split('#').next().unwrap_or_default();
        let mut fields = data.split_whitespace();
        let Some(Ok(addr)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            let addrs = map.by_name.entry(name.to_ascii_lowercase()).or_default();
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    map
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Semi,
}

fn tokenize(text: &str, file: &Path) -> Result<Vec<(Tok, usize)>, LintError> {
    let mut out = Vec::new();
    for (idx, line_text) in text.lines().enumerate() {
        let line = idx + 1;
        let mut chars = line_text.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '#' => break,
                c if c.is_whitespace() => {
                    chars.next();
                }
                '{' | '}' | ';' => {
                    chars.next();
                    let tok = match c {
                        '{' => Tok::Open,
                        '}' => Tok::Close,
                        _ => Tok::Semi,
                    };
                    out.push((tok, line));
                }
                '"' => {
                    chars.next();
                    let mut s = String::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some(n) = chars.next() {
                                    s.push(n);
                                }
                            }
                            '"' => {
                                closed = true;
                                break;
                            }
                            _ => s.push(c),
                        }
                    }
                    if !closed {
                        return Err(LintError::Unterminated {
                            file: file.to_path_buf(),
                            line,
                        });
                    }
                    out.push((Tok::Str(s), line));
                }
                _ => {
                    let mut w = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"' | '#') {
                            break;
                        }
                        w.push(c);
                        chars.next();
                    }
                    out.push((Tok::Word(w), line));
                }
            }
        }
    }
    Ok(out)
}

/// One statement: `words… ;` (an option) or `words… { body }` (a section).
#[derive(Debug, Clone)]
struct Stmt {
    words: Vec<String>,
    line: usize,
    body: Option<Vec<Stmt>>,
}

impl Stmt {
    fn keyword(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or_default()
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(String::as_str)
    }
    fn children(&self) -> &[Stmt] {
        self.body.as_deref().unwrap_or_default()
    }
}

const TOP_LEVEL: [&str; 5] = ["global", "common", "resource", "skip", "include"];

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    file: &'a Path,
}

impl Parser<'_> {
    fn block(&mut self, opener: Option<(usize, String)>) -> Result<Vec<Stmt>, LintError> {
        let top = opener.is_none();
        let mut stmts = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut start = 0;
        while self.pos < self.toks.len() {
            let (tok, line) = self.toks[self.pos].clone();
            self.pos += 1;
            match tok {
                Tok::Word(w) | Tok::Str(w) => {
                    if words.is_empty() {
                        start = line;
                        if top && !TOP_LEVEL.contains(&w.as_str()) {
                            return Err(LintError::NotDrbd {
                                file: self.file.to_path_buf(),
                                line,
                                found: w,
                            });
                        }
                    }
                    words.push(w);
                }
                Tok::Semi => {
                    if words.is_empty() {
                        return Err(self.syntax(line, "`;` without a statement"));
                    }
                    stmts.push(Stmt {
                        words: std::mem::take(&mut words),
                        line: start,
                        body: None,
                    });
                }
                Tok::Open => {
                    if words.is_empty() {
                        return Err(self.syntax(line, "`{` without a section name"));
                    }
                    let name = words.join(" ");
                    let body = self.block(Some((start, name)))?;
                    stmts.push(Stmt {
                        words: std::mem::take(&mut words),
                        line: start,
                        body: Some(body),
                    });
                }
                Tok::Close => {
                    if !words.is_empty() {
                        return Err(self.syntax(
                            start,
                            &format!("statement `{}` does not end with `;`", words.join(" ")),
                        ));
                    }
                    if top {
                        return Err(LintError::Unbalanced {
                            file: self.file.to_path_buf(),
                            line,
                        });
                    }
                    return Ok(stmts);
                }
            }
        }
        if !words.is_empty() {
            return Err(LintError::Incomplete {
                file: self.file.to_path_buf(),
                line: start,
                statement: words.join(" "),
            });
        }
        match opener {
            Some((line, section)) => Err(LintError::Truncated {
                file: self.file.to_path_buf(),
                line,
                section,
            }),
            None => Ok(stmts),
        }
    }

    fn syntax(&self, line: usize, message: &str) -> LintError {
        LintError::Syntax {
            file: self.file.to_path_buf(),
            line,
            message: message.to_string(),
        }
    }
}

fn parse(text: &str, file: &Path) -> Result<Vec<Stmt>, LintError> {
    let toks = tokenize(text, file)?;
    let mut parser = Parser { toks, pos: 0, file };
    let stmts = parser.block(None)?;
    if stmts.is_empty() {
        return Err(LintError::Empty {
            file: file.to_path_buf(),
        });
    }
    Ok(stmts)
}

/// One volume of one `on` section, with resource-level defaults applied.
#[derive(Debug, Clone, Default)]
struct VolumeCfg {
    device: Option<String>,
    minor: Option<u32>,
    device_line: Option<usize>,
    meta_disk: bool,
}

#[derive(Debug)]
struct HostCfg {
    name: String,
    line: usize,
    address: Option<(IpAddr, u16, usize)>,
    volumes: BTreeMap<String, VolumeCfg>,
}

#[derive(Debug)]
struct ResourceCfg {
    name: String,
    line: usize,
    hosts: Vec<HostCfg>,
    become_primary_on: Vec<(String, usize)>,
    /// `fencing POLICY` in the resource (any section) and its line.
    fencing: Option<(String, usize)>,
    /// A `fence-peer` handler is set in the resource.
    fence_peer: bool,
}

/// Reads `device /dev/drbdN [minor M]` or `device minor M`.
fn device_minor(stmt: &Stmt) -> (Option<String>, Option<u32>) {
    let args = &stmt.words[1..];
    let explicit = args
        .iter()
        .position(|w| w == "minor")
        .and_then(|i| args.get(i + 1))
        .and_then(|m| m.parse().ok());
    let path = args.first().filter(|w| w.as_str() != "minor").cloned();
    let from_path = path
        .as_deref()
        .and_then(|p| p.strip_prefix("/dev/drbd"))
        .and_then(|n| n.parse().ok());
    (path, explicit.or(from_path))
}

/// Reads `address [ipv4|ipv6|…] IP:PORT`.
fn address(stmt: &Stmt) -> Option<(IpAddr, u16)> {
    let spec = stmt.words.last()?;
    let (ip, port) = spec.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some((ip.parse().ok()?, port.parse().ok()?))
}

fn apply_volume_option(vol: &mut VolumeCfg, stmt: &Stmt) {
    match stmt.keyword() {
        "device" => {
            let (device, minor) = device_minor(stmt);
            vol.device = device;
            vol.minor = minor;
            vol.device_line = Some(stmt.line);
        }
        "meta-disk" => vol.meta_disk = true,
        _ => {}
    }
}

const IMPLICIT_VOLUME: &str = "0";

/// Collects options given directly in `parent` and in its `volume N {}`.
fn volumes_of(
    parent: &[Stmt],
    defaults: &BTreeMap<String, VolumeCfg>,
) -> BTreeMap<String, VolumeCfg> {
    let mut vols = defaults.clone();
    for stmt in parent {
        if stmt.keyword() == "volume" && stmt.body.is_some() {
            let id = stmt.arg(0).unwrap_or_default().to_string();
            let vol = vols.entry(id).or_default();
            for opt in stmt.children() {
                apply_volume_option(vol, opt);
            }
        } else if stmt.body.is_none() {
            // options outside any `volume` section describe the implicit volume 0
            apply_volume_option(vols.entry(IMPLICIT_VOLUME.to_string()).or_default(), stmt);
        }
    }
    vols
}

fn find_all<'a>(stmts: &'a [Stmt], keyword: &str, out: &mut Vec<&'a Stmt>) {
    for stmt in stmts {
        if stmt.keyword() == keyword {
            out.push(stmt);
        }
        find_all(stmt.children(), keyword, out);
    }
}

fn resource_cfg(stmt: &Stmt) -> ResourceCfg {
    let body = stmt.children();
    let defaults = volumes_of(
        &body
            .iter()
            .filter(|s| s.keyword() != "on" && s.keyword() != "floating")
            .cloned()
            .collect::<Vec<_>>(),
        &BTreeMap::new(),
    );
    let hosts = body
        .iter()
        .filter(|s| s.keyword() == "on" && s.body.is_some())
        .map(|on| HostCfg {
            name: on.arg(0).unwrap_or_default().to_string(),
            line: on.line,
            address: on
                .children()
                .iter()
                .filter(|s| s.keyword() == "address")
                .find_map(|s| address(s).map(|(ip, port)| (ip, port, s.line))),
            volumes: volumes_of(on.children(), &defaults),
        })
        .collect();
    let mut bpo = Vec::new();
    find_all(body, "become-primary-on", &mut bpo);
    let mut fencing = Vec::new();
    find_all(body, "fencing", &mut fencing);
    let mut handlers = Vec::new();
    find_all(body, "fence-peer", &mut handlers);
    ResourceCfg {
        name: stmt.arg(0).unwrap_or_default().to_string(),
        line: stmt.line,
        fencing: fencing
            .first()
            .and_then(|s| s.arg(0).map(|p| (p.to_string(), s.line))),
        fence_peer: !handlers.is_empty(),
        hosts,
        become_primary_on: bpo
            .iter()
            .filter_map(|s| s.arg(0).map(|n| (n.to_string(), s.line)))
            .collect(),
    }
}

fn error(line: usize, message: String) -> Finding {
    Finding {
        line,
        severity: Severity::Error,
        message,
    }
}

/// Lints a drbd.conf (or one `.res` file). `file` is only used in errors.
pub fn lint(text: &str, file: &Path, hosts: &HostsMap) -> Result<Vec<Finding>, LintError> {
    lint_with_homes(text, file, hosts, &BTreeMap::new())
}

/// Like [`lint`], also checking `become-primary-on` against each resource's
/// home node (`homes`: resource → node, from cluster.toml; may be empty,
/// since a drbd.conf alone does not say where a store belongs).
pub fn lint_with_homes(
    text: &str,
    file: &Path,
    hosts: &HostsMap,
    homes: &BTreeMap<String, String>,
) -> Result<Vec<Finding>, LintError> {
    let tree = parse(text, file)?;
    let mut findings = Vec::new();

    let mut syncers = Vec::new();
    find_all(&tree, "syncer", &mut syncers);
    for s in syncers.iter().filter(|s| s.body.is_some()) {
        let rate = s
            .children()
            .iter()
            .find(|o| o.keyword() == "rate")
            .and_then(|o| o.arg(0))
            .unwrap_or("100M");
        findings.push(error(
            s.line,
            format!(
                "the `syncer` section is DRBD 8.3 syntax, removed in 8.4 (drbdadm refuses it): \
                 write `disk {{ resync-rate {rate}; }}` instead, or let the dynamic resync \
                 controller pace it with `disk {{ c-plan-ahead 20; c-max-rate {rate}; }}`"
            ),
        ));
    }

    let resources: Vec<ResourceCfg> = tree
        .iter()
        .filter(|s| s.keyword() == "resource" && s.body.is_some())
        .map(resource_cfg)
        .collect();

    // `common` settings apply to every resource that does not set its own.
    let common: Vec<&Stmt> = tree.iter().filter(|s| s.keyword() == "common").collect();
    let mut common_fencing = Vec::new();
    let mut common_handlers = Vec::new();
    for c in &common {
        find_all(c.children(), "fencing", &mut common_fencing);
        find_all(c.children(), "fence-peer", &mut common_handlers);
    }
    let common_fencing = common_fencing
        .first()
        .and_then(|s| s.arg(0).map(|p| (p.to_string(), s.line)));
    for res in &resources {
        check_fencing(
            res,
            common_fencing.as_ref(),
            !common_handlers.is_empty(),
            &mut findings,
        );
        check_minors(res, &mut findings);
        check_meta_disk(res, &mut findings);
        check_hostnames(res, hosts, &mut findings);
        check_duplicate_addresses(res, &mut findings);
    }
    check_shared_ports(&resources, &mut findings);
    check_become_primary(&resources, homes, &mut findings);

    findings.sort_by(|a, b| a.line.cmp(&b.line).then(a.severity.cmp(&b.severity)));
    Ok(findings)
}

/// Safety rule 10: without `fencing resource-only` and a fence-peer handler,
/// DRBD promotes a node whose peer it cannot see — the manual runbook's
/// `drbdadm primary` on the wrong side of a cut cable is a split brain.
fn check_fencing(
    res: &ResourceCfg,
    common_fencing: Option<&(String, usize)>,
    common_handler: bool,
    findings: &mut Vec<Finding>,
) {
    if res.hosts.len() < 2 {
        return;
    }
    let fix = "`ctmgr drbd render` writes `fencing resource-only;` (DRBD 9: in `net`, 8.4: in \
               `disk`) and `handlers { fence-peer \"/usr/sbin/ctmgr drbd fence-peer\"; }`";
    match res.fencing.as_ref().or(common_fencing) {
        None => findings.push(error(
            res.line,
            format!(
                "resource {} has no fencing policy: DRBD will promote a node that cannot see \
                 its peer, so a cut peer link plus a `drbdadm primary` is a split brain. {fix}",
                res.name
            ),
        )),
        Some((policy, line)) if policy == "dont-care" => findings.push(error(
            *line,
            format!(
                "resource {} has `fencing dont-care`: DRBD promotes without asking anyone. {fix}",
                res.name
            ),
        )),
        Some((_, line)) if !res.fence_peer && !common_handler => findings.push(error(
            *line,
            format!(
                "resource {} sets fencing but no `fence-peer` handler: DRBD has nobody to ask \
                 and refuses every promotion while the peer is away. {fix}",
                res.name
            ),
        )),
        Some(_) => {}
    }
}

fn check_minors(res: &ResourceCfg, findings: &mut Vec<Finding>) {
    let volume_ids: BTreeSet<&String> = res.hosts.iter().flat_map(|h| h.volumes.keys()).collect();
    for vol_id in volume_ids {
        let mut first: Option<(&str, u32)> = None;
        for host in &res.hosts {
            let Some(vol) = host.volumes.get(vol_id) else {
                continue;
            };
            let Some(minor) = vol.minor else { continue };
            match first {
                None => first = Some((&host.name, minor)),
                Some((first_host, first_minor)) if first_minor != minor => {
                    findings.push(error(
                        vol.device_line.unwrap_or(host.line),
                        format!(
                            "resource {}: device minor {minor} on {} differs from minor \
                             {first_minor} on {first_host}; the store must be the same \
                             /dev/drbdN on both nodes for mounts and failover: write \
                             `device /dev/drbd{first_minor} minor {first_minor};` on {}",
                            res.name, host.name, host.name
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
}

fn check_meta_disk(res: &ResourceCfg, findings: &mut Vec<Finding>) {
    for host in &res.hosts {
        for (id, vol) in &host.volumes {
            if !vol.meta_disk {
                let which = if host.volumes.len() == 1 {
                    String::new()
                } else {
                    format!(" volume {id}")
                };
                findings.push(error(
                    host.line,
                    format!(
                        "resource {}{which} on {} has no `meta-disk`: write `meta-disk internal;` \
                         next to its `disk` line",
                        res.name, host.name
                    ),
                ));
            }
        }
    }
}

fn check_hostnames(res: &ResourceCfg, hosts: &HostsMap, findings: &mut Vec<Finding>) {
    for host in &res.hosts {
        if hosts.resolve(&host.name).is_some() {
            continue;
        }
        // Prefer the name /etc/hosts gives the section's own address, then
        // the short name of a mistyped FQDN.
        let by_address = host
            .address
            .map(|(ip, _, _)| hosts.names_for(ip))
            .and_then(|names| names.first().map(|n| n.to_string()));
        let short = host
            .name
            .split_once('.')
            .map(|(short, _)| short)
            .filter(|short| hosts.resolve(short).is_some())
            .map(str::to_string);
        let suggestion = by_address.or(short);
        let fix = match suggestion {
            Some(name) => format!("write `on {name} {{`"),
            None => "write the node's hostname (`uname -n`) and add it to /etc/hosts".to_string(),
        };
        findings.push(error(
            host.line,
            format!(
                "resource {}: host `{}` is not in /etc/hosts; DRBD picks its `on` section by \
                 hostname, so no node will use this one; {fix}",
                res.name, host.name
            ),
        ));
    }
}

fn check_duplicate_addresses(res: &ResourceCfg, findings: &mut Vec<Finding>) {
    let mut seen: BTreeMap<(IpAddr, u16), (&str, usize)> = BTreeMap::new();
    for host in &res.hosts {
        let Some((ip, port, line)) = host.address else {
            continue;
        };
        if let Some((other, other_line)) = seen.get(&(ip, port)) {
            findings.push(error(
                line,
                format!(
                    "resource {}: address {ip}:{port} of {} repeats the address of {other} \
                     (line {other_line}); each node listens on its own peer-link address: \
                     write {}'s address here",
                    res.name, host.name, host.name
                ),
            ));
        } else {
            seen.insert((ip, port), (&host.name, line));
        }
    }
}

fn check_shared_ports(resources: &[ResourceCfg], findings: &mut Vec<Finding>) {
    let all_ports: BTreeSet<u16> = resources
        .iter()
        .flat_map(|r| r.hosts.iter().filter_map(|h| h.address.map(|a| a.1)))
        .collect();
    let mut taken: BTreeSet<u16> = all_ports.clone();
    let mut owner: BTreeMap<u16, &str> = BTreeMap::new();
    for res in resources {
        let mut reported = BTreeSet::new();
        for host in &res.hosts {
            let Some((_, port, line)) = host.address else {
                continue;
            };
            match owner.get(&port) {
                Some(other) if *other != res.name && reported.insert(port) => {
                    let free = (port..=u16::MAX)
                        .find(|p| !taken.contains(p))
                        .unwrap_or(port);
                    taken.insert(free);
                    findings.push(error(
                        line,
                        format!(
                            "resources {other} and {} both use port {port}; each resource needs \
                             its own port: use {free} in every `address` of {}",
                            res.name, res.name
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    owner.insert(port, &res.name);
                }
            }
        }
    }
}

fn check_become_primary(
    resources: &[ResourceCfg],
    homes: &BTreeMap<String, String>,
    findings: &mut Vec<Finding>,
) {
    let mut by_node: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
    let mut wrong_home = BTreeSet::new();
    for res in resources {
        for (node, line) in &res.become_primary_on {
            if node == "both" {
                continue;
            }
            by_node.entry(node).or_default().push((&res.name, *line));
            if let Some(home) = homes.get(&res.name) {
                if home != node {
                    wrong_home.insert(res.name.as_str());
                    findings.push(error(
                        *line,
                        format!(
                            "resource {} becomes primary on {node} at boot, but its home is \
                             {home}: write `become-primary-on {home};`",
                            res.name
                        ),
                    ));
                }
            }
        }
    }
    for (node, list) in by_node {
        let names: BTreeSet<&str> = list.iter().map(|(n, _)| *n).collect();
        if names.len() < 2 || names.iter().any(|n| wrong_home.contains(n)) {
            continue;
        }
        let all_homed_here = names
            .iter()
            .all(|n| homes.get(*n).map(String::as_str) == Some(node));
        if all_homed_here {
            continue;
        }
        let listed = names.iter().copied().collect::<Vec<_>>().join(" and ");
        for (_, line) in list.iter().skip(1) {
            findings.push(Finding {
                line: *line,
                severity: Severity::Warning,
                message: format!(
                    "resources {listed} all become primary on {node} at boot, so {node} takes \
                     every store and its peer none; name each resource's home node in its \
                     `become-primary-on`"
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNBOOK: &str = include_str!("../../tests/fixtures/drbd/runbook-drbd.conf");
    const FIXED: &str = include_str!("../../tests/fixtures/drbd/runbook-fixed.conf");
    const HOSTS: &str = include_str!("../../tests/fixtures/drbd/runbook-hosts");
    const MISSING_META: &str = include_str!("../../tests/fixtures/drbd/missing-meta-disk.conf");
    const DUP_ADDR: &str = include_str!("../../tests/fixtures/drbd/duplicate-address.conf");
    const TRUNCATED: &str = include_str!("../../tests/fixtures/drbd/truncated.conf");
    const NOT_DRBD: &str = include_str!("../../tests/fixtures/drbd/not-drbd.toml");

    fn file() -> &'static Path {
        Path::new("drbd.conf")
    }

    fn runbook() -> Vec<Finding> {
        lint(RUNBOOK, file(), &parse_hosts(HOSTS)).expect("runbook parses")
    }

    /// Findings other than the missing fencing (checked on its own).
    fn but_fencing(findings: Vec<Finding>) -> Vec<Finding> {
        findings
            .into_iter()
            .filter(|f| !f.message.contains("fencing"))
            .collect()
    }

    fn at(findings: &[Finding], needle: &str) -> Vec<Finding> {
        findings
            .iter()
            .filter(|f| f.message.contains(needle))
            .cloned()
            .collect()
    }

    fn line_of(text: &str, needle: &str, nth: usize) -> usize {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .nth(nth)
            .map(|(i, _)| i + 1)
            .expect("needle in fixture")
    }

    #[test]
    fn hosts_file_maps_names_and_aliases() {
        let hosts = parse_hosts(HOSTS);
        assert_eq!(
            hosts.resolve("NODE2"),
            Some(&["10.0.254.2".parse::<IpAddr>().expect("ip")][..])
        );
        assert_eq!(hosts.resolve("ip6-loopback").map(<[IpAddr]>::len), Some(1));
        assert_eq!(hosts.resolve("node3"), None);
        assert_eq!(
            hosts.names_for("10.0.254.1".parse().expect("ip")),
            vec!["node1"]
        );
    }

    #[test]
    fn runbook_r1_minor_differs_between_nodes() {
        let found = at(
            &runbook(),
            "device minor 2 on node2.lan differs from minor 1 on node1",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, line_of(RUNBOOK, "/dev/drbd2", 0));
        assert_eq!(found[0].severity, Severity::Error);
        assert!(found[0]
            .message
            .contains("write `device /dev/drbd1 minor 1;`"));
    }

    #[test]
    fn runbook_syncer_section_is_reported_with_its_replacement() {
        let found = at(&runbook(), "`syncer`");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, line_of(RUNBOOK, "syncer {", 0));
        assert!(
            found[0].message.contains("resync-rate 100M"),
            "{}",
            found[0].message
        );
        assert!(found[0].message.contains("c-plan-ahead"));
    }

    #[test]
    fn runbook_without_fencing_is_an_error_per_resource() {
        let found = at(&runbook(), "no fencing policy");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|f| f.severity == Severity::Error));
        assert!(found[0].message.contains("ctmgr drbd render"));
    }

    #[test]
    fn fencing_without_handler_or_dont_care_is_an_error() {
        let base = FIXED.replace("    fence-peer \"/usr/sbin/ctmgr drbd fence-peer\";\n", "");
        let found = lint(&base, file(), &parse_hosts(HOSTS)).expect("parses");
        assert_eq!(at(&found, "no `fence-peer` handler").len(), 2, "{found:?}");
        let dont = FIXED.replace("fencing resource-only;", "fencing dont-care;");
        let found = lint(&dont, file(), &parse_hosts(HOSTS)).expect("parses");
        assert_eq!(at(&found, "fencing dont-care").len(), 2, "{found:?}");
        // Set per resource instead of in common: also fine.
        let per_res = FIXED
            .replace("    fencing resource-only;\n", "")
            .replace(
                "resource r0 {\n",
                "resource r0 {\n  disk { fencing resource-only; }\n",
            )
            .replace(
                "resource r1 {\n",
                "resource r1 {\n  disk { fencing resource-only; }\n",
            );
        let found = lint(&per_res, file(), &parse_hosts(HOSTS)).expect("parses");
        assert!(at(&found, "fencing").is_empty(), "{found:?}");
    }

    #[test]
    fn runbook_two_resources_on_one_port() {
        let found = at(&runbook(), "both use port 7788");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("resources r0 and r1"));
        assert!(
            found[0].message.contains("use 7789"),
            "{}",
            found[0].message
        );
        assert_eq!(found[0].line, line_of(RUNBOOK, "10.0.254.1:7788", 1));
    }

    #[test]
    fn runbook_both_become_primary_on_node1_without_homes_is_a_warning() {
        let found = at(&runbook(), "become primary on node1");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(found[0].line, line_of(RUNBOOK, "become-primary-on", 1));
    }

    #[test]
    fn runbook_become_primary_on_wrong_home_is_an_error_with_homes() {
        let homes = BTreeMap::from([
            ("r0".to_string(), "node1".to_string()),
            ("r1".to_string(), "node2".to_string()),
        ]);
        let findings =
            lint_with_homes(RUNBOOK, file(), &parse_hosts(HOSTS), &homes).expect("parses");
        let found = at(&findings, "its home is node2");
        assert_eq!(found.len(), 1, "{findings:?}");
        assert_eq!(found[0].severity, Severity::Error);
        assert!(found[0]
            .message
            .contains("write `become-primary-on node2;`"));
        assert!(at(&findings, "all become primary").is_empty());
        // homes that agree with the file: nothing to say
        let both_node1 = BTreeMap::from([
            ("r0".to_string(), "node1".to_string()),
            ("r1".to_string(), "node1".to_string()),
        ]);
        let findings = but_fencing(
            lint_with_homes(RUNBOOK, file(), &parse_hosts(HOSTS), &both_node1).expect("parses"),
        );
        assert!(at(&findings, "primary").is_empty(), "{findings:?}");
    }

    #[test]
    fn runbook_misspelled_host_is_not_in_etc_hosts() {
        let found = at(&runbook(), "not in /etc/hosts");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("`node2.lan`"));
        assert!(
            found[0].message.contains("write `on node2 {`"),
            "{}",
            found[0].message
        );
        assert_eq!(found[0].line, line_of(RUNBOOK, "on node2.lan", 0));
        // with an empty hosts file every host is unresolved
        let none = lint(RUNBOOK, file(), &HostsMap::default()).expect("parses");
        assert_eq!(at(&none, "not in /etc/hosts").len(), 4);
    }

    #[test]
    fn runbook_has_exactly_its_known_mistakes() {
        let findings = runbook();
        // Five mistakes of its own, and no fencing in either resource.
        assert_eq!(but_fencing(findings.clone()).len(), 5, "{findings:#?}");
        assert_eq!(findings.len(), 7, "{findings:#?}");
    }

    #[test]
    fn fixed_runbook_lints_clean() {
        let findings = lint(FIXED, file(), &parse_hosts(HOSTS)).expect("parses");
        assert!(findings.is_empty(), "{findings:#?}");
        let homes = BTreeMap::from([
            ("r0".to_string(), "node1".to_string()),
            ("r1".to_string(), "node2".to_string()),
        ]);
        let findings = lint_with_homes(FIXED, file(), &parse_hosts(HOSTS), &homes).expect("ok");
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn missing_meta_disk_is_reported_on_its_host() {
        let findings =
            but_fencing(lint(MISSING_META, file(), &parse_hosts(HOSTS)).expect("parses"));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(findings[0]
            .message
            .contains("r0 on node2 has no `meta-disk`"));
        assert!(findings[0].message.contains("meta-disk internal;"));
        assert_eq!(findings[0].line, line_of(MISSING_META, "on node2", 0));
    }

    #[test]
    fn duplicated_address_within_a_resource_is_reported() {
        let findings = but_fencing(lint(DUP_ADDR, file(), &parse_hosts(HOSTS)).expect("parses"));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(findings[0]
            .message
            .contains("address 10.0.254.1:7788 of node2 repeats the address of node1"));
        assert_eq!(findings[0].line, line_of(DUP_ADDR, "10.0.254.1:7788", 1));
    }

    #[test]
    fn resource_level_device_and_volumes_are_inherited() {
        let text = "resource r5 {\n  device /dev/drbd5;\n  meta-disk internal;\n  disk /dev/sdd;\n  \
                    on node1 { address 10.0.254.1:7795; }\n  on node2 {\n    volume 0 { device /dev/drbd6; }\n    \
                    address 10.0.254.2:7795;\n  }\n}\n";
        let findings = but_fencing(lint(text, file(), &parse_hosts(HOSTS)).expect("parses"));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(findings[0]
            .message
            .contains("minor 6 on node2 differs from minor 5"));
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_open_section() {
        let err = lint(TRUNCATED, file(), &parse_hosts(HOSTS)).unwrap_err();
        match &err {
            LintError::Truncated { line, section, .. } => {
                assert_eq!(section, "on node2");
                assert_eq!(*line, line_of(TRUNCATED, "on node2", 0));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("drbd.conf:9: section `on node2`"),
            "{err}"
        );
        match lint(
            "resource r0 {\n  on node1 {\n    device /dev/drbd0",
            file(),
            &HostsMap::default(),
        ) {
            Err(LintError::Incomplete {
                line: 3, statement, ..
            }) => {
                assert_eq!(statement, "device /dev/drbd0")
            }
            other => panic!("unexpected {other:?}"),
        }
        let cut = "resource r0 {\n  on node1 {\n    device /dev/drbd0;\n";
        match lint(cut, file(), &HostsMap::default()) {
            Err(LintError::Truncated {
                line: 2, section, ..
            }) => assert_eq!(section, "on node1"),
            other => panic!("unexpected {other:?}"),
        }
        match lint("resource r0 {\n}\n}\n", file(), &HostsMap::default()) {
            Err(LintError::Unbalanced { line: 3, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        match lint(
            "resource r0 { net { shared-secret \"abc; } }\n",
            file(),
            &HostsMap::default(),
        ) {
            Err(LintError::Unterminated { line: 1, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn non_drbd_file_is_an_error_with_its_line() {
        let err = lint(NOT_DRBD, file(), &HostsMap::default()).unwrap_err();
        match &err {
            LintError::NotDrbd { line, found, .. } => {
                assert_eq!(*line, 2);
                assert_eq!(found, "[cluster]");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("not a drbd configuration"));
        assert!(matches!(
            lint("# only a comment\n", file(), &HostsMap::default()),
            Err(LintError::Empty { .. })
        ));
    }

    #[test]
    fn fixed_runbook_passes_real_drbdadm_and_broken_one_does_not() {
        let dir = tempfile::tempdir().expect("dir");
        let fixed = dir.path().join("fixed.conf");
        std::fs::write(&fixed, FIXED).expect("write");
        for res in ["r0", "r1"] {
            crate::drbd::render::validate_with_drbdadm(&fixed, res, Path::new("/usr/sbin/drbdadm"))
                .expect("drbdadm accepts the fixed runbook");
        }
        let broken = dir.path().join("runbook.conf");
        std::fs::write(&broken, RUNBOOK).expect("write");
        let err = crate::drbd::render::validate_with_drbdadm(
            &broken,
            "r0",
            Path::new("/usr/sbin/drbdadm"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("syncer"), "{err}");
    }
}
