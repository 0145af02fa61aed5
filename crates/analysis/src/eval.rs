//! The packet-path model of an iptables host: follows one new connection
//! through raw, mangle, nat and filter in the kernel's order, with user
//! chains, jump/goto/return, chain policies and DNAT, and says whether it
//! passes and which rules decide.
//!
//! Matches are three-valued. What the model knows (addresses, interfaces
//! with `+` wildcards, protocols, ports, multiport, iprange, addrtype,
//! conntrack state of a new connection, DNAT status) is decided. The packet
//! is a source's first new connection, so per-source state is known too: a
//! `recent` list does not hold it yet and per-source limits (`hashlimit` by
//! source, nft meters with `limit rate over`) are not reached. What the
//! model cannot know (global rate limits, ipsets without their contents,
//! marks, MACs, owners, unknown modules) is "maybe", and both outcomes are
//! followed. A connection is reported `Pass` or `Blocked` only when every
//! path agrees; otherwise it `MayPass`. The model never claims a block it
//! cannot prove.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::iptables::{Dump, Module, Rule, Verdict};
use crate::nftjson::{self, NftChain, NftRuleset};
use serde_json::Value;

/// What the host looks like around its firewall.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostInfo {
    /// Addresses that belong to the host (any interface).
    pub local: Vec<IpAddr>,
    /// Routes: destination network and outgoing interface.
    pub routes: Vec<(IpNet, String)>,
    /// ipsets of address types (`hash:ip`, `hash:net`, ...) by name, from
    /// `ipset save`. A set not here is unknown: its matches are "maybe".
    #[serde(default)]
    pub ipsets: std::collections::BTreeMap<String, Vec<IpNet>>,
}

impl HostInfo {
    pub fn is_local(&self, a: &IpAddr) -> bool {
        a.is_loopback() || self.local.contains(a)
    }

    /// The interface the host would send `dst` out of (longest prefix).
    pub fn route(&self, dst: &IpAddr) -> Option<&str> {
        self.routes
            .iter()
            .filter(|(net, _)| net.contains(dst))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, dev)| dev.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }

    fn number(self) -> &'static str {
        match self {
            L4::Tcp => "6",
            L4::Udp => "17",
        }
    }
}

/// A new connection's first packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: L4,
    pub sport: u16,
    pub dport: u16,
    /// Input interface; `None` for packets the host itself sends.
    pub iif: Option<String>,
    /// Output interface, set once routed.
    pub oif: Option<String>,
    /// Original destination before DNAT, if DNAT happened.
    pub orig_dst: Option<(IpAddr, u16)>,
}

impl Packet {
    /// The first packet of a new connection from `src` to `dst:dport`,
    /// arriving on `iif` (`None`: sent by the host itself).
    pub fn new(
        src: IpAddr,
        dst: IpAddr,
        proto: L4,
        dport: u16,
        iif: Option<String>,
    ) -> Packet {
        Packet {
            src,
            dst,
            proto,
            sport: 40000,
            dport,
            iif,
            oif: None,
            orig_dst: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Pass,
    Blocked,
    /// Some paths pass, others do not, or a match could not be decided.
    MayPass,
}

/// One rule that matched on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub table: String,
    pub chain: String,
    /// Line in the dump; 0 for a chain policy.
    pub line: usize,
    pub text: String,
    pub effect: String,
    /// The match was not decidable.
    pub maybe: bool,
}

impl Decision {
    /// The rule that decided, as `table chain:line text`: the last accept,
    /// drop or chain policy on the path shown.
    pub fn deciding_rule(&self) -> String {
        self.trail
            .iter()
            .rev()
            .find(|h| {
                matches!(h.effect.as_str(), "accept" | "drop")
                    || h.effect.starts_with("policy")
            })
            .map(|h| format!("{} {}:{} {}", h.table, h.chain, h.line, h.text))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub fate: Fate,
    /// The packet as it finally looks (after DNAT, routed).
    pub packet: Packet,
    /// The rules met on one deciding path (a passing one if any passes).
    pub trail: Vec<Hit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Maybe,
}

impl Tri {
    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Yes, Tri::Yes) => Tri::Yes,
            _ => Tri::Maybe,
        }
    }

    fn from(b: bool) -> Tri {
        if b {
            Tri::Yes
        } else {
            Tri::No
        }
    }

    fn negate_if(self, neg: bool) -> Tri {
        match (self, neg) {
            (Tri::Yes, true) => Tri::No,
            (Tri::No, true) => Tri::Yes,
            (t, _) => t,
        }
    }
}

/// How a chain walk ended for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Accept,
    Drop,
    /// RETURN, or the end of a user chain.
    Return,
}

#[derive(Debug, Clone)]
struct Path {
    pkt: Packet,
    trail: Vec<Hit>,
    maybe: bool,
}

const NON_TERMINAL: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "MARK",
    "CONNMARK",
    "TCPMSS",
    "NOTRACK",
    "CT",
    "CHECKSUM",
    "TTL",
    "HL",
    "DSCP",
    "TOS",
    "SET",
    "AUDIT",
    "CLASSIFY",
    "TRACE",
    "CONNSECMARK",
    "SECMARK",
    "IDLETIMER",
    "LED",
    "RATEEST",
    "TEE",
];

/// The firewall of a host: iptables tables (legacy or iptables-nft, as
/// `iptables-save` shows them) and native nftables chains.
#[derive(Debug, Clone, Copy)]
pub struct Firewall<'a> {
    pub iptables: &'a Dump,
    pub nft: Option<&'a NftRuleset>,
}

impl<'a> Firewall<'a> {
    pub fn iptables(dump: &'a Dump) -> Firewall<'a> {
        Firewall {
            iptables: dump,
            nft: None,
        }
    }
}

/// A base chain on a hook: an iptables table's built-in chain or a native
/// nftables chain.
#[derive(Debug, Clone)]
enum Stage<'a> {
    Iptables(&'static str),
    Nft(&'a NftChain),
}

/// iptables tables on each hook, with the priorities iptables-nft and the
/// legacy tables register at.
fn iptables_stages(hook: &str) -> &'static [(&'static str, i32)] {
    match hook {
        "PREROUTING" => &[("raw", -300), ("mangle", -150), ("nat", -100)],
        "INPUT" => &[
            ("mangle", -150),
            ("filter", 0),
            ("security", 50),
            ("nat", 100),
        ],
        "FORWARD" => &[("mangle", -150), ("filter", 0), ("security", 50)],
        "OUTPUT" => &[
            ("raw", -300),
            ("mangle", -150),
            ("nat", -100),
            ("filter", 0),
            ("security", 50),
        ],
        "POSTROUTING" => &[("mangle", -150), ("nat", 100)],
        _ => &[],
    }
}

fn stages<'a>(fw: &Firewall<'a>, hook: &str, v6: bool) -> Vec<(i32, Stage<'a>)> {
    let mut out: Vec<(i32, Stage<'a>)> = iptables_stages(hook)
        .iter()
        .filter(|(t, _)| fw.iptables.tables.contains_key(*t))
        .map(|(t, p)| (*p, Stage::Iptables(t)))
        .collect();
    if let Some(nft) = fw.nft {
        let family = if v6 { "ip6" } else { "ip" };
        let lower = hook.to_ascii_lowercase();
        for c in &nft.chains {
            let Some((h, prio)) = &c.base else {
                continue;
            };
            if *h != lower || !(c.family == "inet" || c.family == family) {
                continue;
            }
            // iptables-nft's own tables are read from iptables-save.
            let iptables_made = c.family == family
                && fw.iptables.tables.contains_key(c.table.as_str())
                && ["filter", "nat", "mangle", "raw", "security"]
                    .contains(&c.table.as_str());
            if !iptables_made {
                out.push((*prio, Stage::Nft(c)));
            }
        }
    }
    out.sort_by_key(|(p, _)| *p);
    out
}

/// Follows `pkt` through the firewall `fw` on `host`.
pub fn evaluate(fw: &Firewall, host: &HostInfo, pkt: &Packet) -> Decision {
    let v6 = pkt.dst.is_ipv6();
    let start = Path {
        pkt: pkt.clone(),
        trail: Vec::new(),
        maybe: false,
    };
    let mut finished: Vec<(bool, Path)> = Vec::new();
    let mut paths = vec![start];
    let run = |hook: &str, paths: Vec<Path>, finished: &mut Vec<(bool, Path)>| {
        let mut paths = paths;
        for (_, stage) in stages(fw, hook, v6) {
            paths = match stage {
                Stage::Iptables(table) => {
                    through(fw.iptables, host, table, hook, paths, finished)
                }
                Stage::Nft(chain) => through_nft(fw, host, chain, paths, finished),
            };
        }
        paths
    };

    if pkt.iif.is_none() {
        // Locally generated: OUTPUT (routed first), then POSTROUTING.
        for p in &mut paths {
            p.pkt.oif = host.route(&p.pkt.dst).map(str::to_string);
        }
        paths = run("OUTPUT", paths, &mut finished);
        paths = run("POSTROUTING", paths, &mut finished);
        finished.extend(paths.into_iter().map(|p| (true, p)));
    } else {
        paths = run("PREROUTING", paths, &mut finished);
        // Routing: to the host itself, or forwarded.
        let (local, mut forward): (Vec<Path>, Vec<Path>) =
            paths.into_iter().partition(|p| host.is_local(&p.pkt.dst));
        for p in &mut forward {
            p.pkt.oif = host.route(&p.pkt.dst).map(str::to_string);
        }
        let local = run("INPUT", local, &mut finished);
        finished.extend(local.into_iter().map(|p| (true, p)));
        let forward = run("FORWARD", forward, &mut finished);
        let forward = run("POSTROUTING", forward, &mut finished);
        finished.extend(forward.into_iter().map(|p| (true, p)));
    }

    let any_pass = finished.iter().any(|(pass, _)| *pass);
    let all_sure_pass = finished.iter().all(|(pass, p)| *pass && !p.maybe);
    let all_blocked = finished.iter().all(|(pass, p)| !*pass && !p.maybe);
    let fate = if all_sure_pass {
        Fate::Pass
    } else if all_blocked {
        Fate::Blocked
    } else {
        Fate::MayPass
    };
    let shown = finished
        .iter()
        .find(|(pass, _)| *pass == any_pass)
        .or(finished.first())
        .map(|(_, p)| p.clone())
        .unwrap_or(Path {
            pkt: pkt.clone(),
            trail: Vec::new(),
            maybe: false,
        });
    Decision {
        fate,
        packet: shown.pkt,
        trail: shown.trail,
    }
}

/// Runs every path through one table's built-in chain for a hook. Paths
/// that are dropped go to `finished`; the others continue.
fn through(
    dump: &Dump,
    host: &HostInfo,
    table: &str,
    hook: &str,
    paths: Vec<Path>,
    finished: &mut Vec<(bool, Path)>,
) -> Vec<Path> {
    let Some(t) = dump.tables.get(table) else {
        return paths;
    };
    let Some(chain) = t.chain(hook) else {
        return paths;
    };
    let policy = chain.policy.as_deref().unwrap_or("ACCEPT");
    // An ACCEPT policy of raw, mangle or nat decides nothing worth showing.
    let shown = (table == "filter" || policy != "ACCEPT").then(|| Hit {
        table: table.into(),
        chain: hook.into(),
        line: chain.line,
        text: format!(":{hook} {policy}"),
        effect: format!("policy {}", policy.to_ascii_lowercase()),
        maybe: false,
    });
    let mut out = Vec::new();
    for p in paths {
        for (end, path) in walk(dump, host, table, hook, p, 0) {
            settle(
                end,
                path,
                policy == "DROP",
                shown.as_ref(),
                &mut out,
                finished,
            );
        }
    }
    dedupe(out)
}

/// A path at the end of a base chain. Falling off the end applies the
/// chain's policy (`policy_hit` records it on the trail); dropped paths are
/// finished, the others go on to the next chain.
fn settle(
    end: End,
    mut path: Path,
    drop_policy: bool,
    policy_hit: Option<&Hit>,
    out: &mut Vec<Path>,
    finished: &mut Vec<(bool, Path)>,
) {
    let end = match end {
        End::Return => {
            path.trail.extend(policy_hit.cloned());
            if drop_policy {
                End::Drop
            } else {
                End::Accept
            }
        }
        e => e,
    };
    match end {
        End::Drop => finished.push((false, path)),
        _ => out.push(path),
    }
}

/// Paths that continue in the same state are one path.
fn dedupe(paths: Vec<Path>) -> Vec<Path> {
    let mut out: Vec<Path> = Vec::new();
    for p in paths {
        if let Some(q) = out.iter_mut().find(|q| q.pkt == p.pkt) {
            q.maybe |= p.maybe;
        } else {
            out.push(p);
        }
    }
    out
}

fn walk(
    dump: &Dump,
    host: &HostInfo,
    table: &str,
    chain_name: &str,
    start: Path,
    depth: usize,
) -> Vec<(End, Path)> {
    let mut ended = Vec::new();
    let Some(chain) = dump.tables.get(table).and_then(|t| t.chain(chain_name)) else {
        return vec![(End::Return, start)];
    };
    if depth > 64 {
        // A loop or absurd nesting: do not claim anything.
        let mut p = start;
        p.maybe = true;
        return vec![(End::Accept, p)];
    }
    let mut live = vec![start];
    for rule in &chain.rules {
        // A rule that only logs, counts or marks cannot change where the
        // packet goes, whatever it matches.
        let inert = match &rule.verdict {
            Verdict::None => true,
            Verdict::Jump(t) => NON_TERMINAL.contains(&t.as_str()),
            Verdict::Goto(_) => false,
        };
        if inert {
            continue;
        }
        let mut next = Vec::new();
        for p in live {
            let m = rule_matches(rule, &p.pkt, host);
            if m == Tri::No {
                next.push(p);
                continue;
            }
            let maybe = m == Tri::Maybe;
            if maybe {
                let mut skip = p.clone();
                skip.maybe = true;
                next.push(skip);
            }
            let mut taken = p;
            taken.maybe |= maybe;
            for (end, path) in target(dump, host, table, chain_name, rule, taken, depth) {
                match end {
                    Some(e) => ended.push((e, path)),
                    None => next.push(path),
                }
            }
        }
        live = dedupe(next);
        if live.is_empty() {
            break;
        }
    }
    ended.extend(live.into_iter().map(|p| (End::Return, p)));
    ended
}

/// Applies a matched rule's target. `None` as the end means "go on with
/// the next rule".
fn target(
    dump: &Dump,
    host: &HostInfo,
    table: &str,
    chain: &str,
    rule: &Rule,
    mut p: Path,
    depth: usize,
) -> Vec<(Option<End>, Path)> {
    let hit = |effect: &str, maybe: bool| Hit {
        table: table.into(),
        chain: chain.into(),
        line: rule.line,
        text: rule.text.clone(),
        effect: effect.into(),
        maybe,
    };
    let maybe = p.maybe;
    let (name, goto) = match &rule.verdict {
        Verdict::None => return vec![(None, p)],
        Verdict::Jump(t) => (t.as_str(), false),
        Verdict::Goto(t) => (t.as_str(), true),
    };
    match name {
        "ACCEPT" => {
            p.trail.push(hit("accept", maybe));
            vec![(Some(End::Accept), p)]
        }
        "DROP" | "REJECT" => {
            p.trail.push(hit("drop", maybe));
            vec![(Some(End::Drop), p)]
        }
        "RETURN" => {
            p.trail.push(hit("return", maybe));
            vec![(Some(End::Return), p)]
        }
        "DNAT" | "REDIRECT" if table == "nat" => {
            let to = rule
                .target_options
                .iter()
                .find(|o| o.name == "to-destination" || o.name == "to-ports")
                .and_then(|o| o.values.first())
                .cloned()
                .unwrap_or_default();
            let before = (p.pkt.dst, p.pkt.dport);
            if name == "REDIRECT" {
                if let Some(port) = first_port(&to) {
                    p.pkt.dport = port;
                }
                p.pkt.dst = host.local.first().copied().unwrap_or(p.pkt.dst);
            } else if let Some((addr, port)) = parse_to_destination(&to) {
                if let Some(a) = addr {
                    p.pkt.dst = a;
                }
                if let Some(port) = port {
                    p.pkt.dport = port;
                }
            } else {
                p.maybe = true;
            }
            p.pkt.orig_dst.get_or_insert(before);
            p.trail.push(hit(
                &format!("dnat to {}:{}", p.pkt.dst, p.pkt.dport),
                maybe,
            ));
            vec![(Some(End::Accept), p)]
        }
        "SNAT" | "MASQUERADE" | "NETMAP" if table == "nat" => {
            p.trail.push(hit("snat", maybe));
            vec![(Some(End::Accept), p)]
        }
        t if NON_TERMINAL.contains(&t) => vec![(None, p)],
        user if dump
            .tables
            .get(table)
            .is_some_and(|tb| tb.chain(user).is_some()) =>
        {
            p.trail.push(hit(if goto { "goto" } else { "jump" }, maybe));
            walk(dump, host, table, user, p, depth + 1)
                .into_iter()
                .map(|(end, path)| match end {
                    // Back from the user chain: a jump goes on here; a goto
                    // returns from this chain too.
                    End::Return if goto => (Some(End::Return), path),
                    End::Return => (None, path),
                    e => (Some(e), path),
                })
                .collect()
        }
        _ => {
            // QUEUE, NFQUEUE, a chain the dump does not have, an unknown
            // target: it may let the packet through or not.
            let mut on = p.clone();
            on.maybe = true;
            p.maybe = true;
            p.trail.push(hit(&format!("{name} (not modelled)"), true));
            vec![(Some(End::Accept), p), (None, on)]
        }
    }
}

fn first_port(text: &str) -> Option<u16> {
    text.split(['-', ':']).next()?.parse().ok()
}

/// `ADDR[:PORT]`, `[V6]:PORT`, `:PORT`, ranges take their first value.
fn parse_to_destination(text: &str) -> Option<(Option<IpAddr>, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, port) = rest.split_once(']')?;
        let port = port.strip_prefix(':').and_then(first_port);
        return Some((Some(addr.parse().ok()?), port));
    }
    if let Ok(a) = text.parse::<IpAddr>() {
        return Some((Some(a), None));
    }
    let (addr, port) = text.rsplit_once(':')?;
    let addr = addr.split('-').next().unwrap_or(addr);
    let addr = if addr.is_empty() {
        None
    } else {
        Some(addr.parse().ok()?)
    };
    Some((addr, first_port(port)))
}

fn rule_matches(rule: &Rule, p: &Packet, host: &HostInfo) -> Tri {
    let mut t = Tri::Yes;
    if let Some((neg, proto)) = &rule.protocol {
        let hit = proto == "all"
            || proto == "0"
            || proto == p.proto.name()
            || proto == p.proto.number();
        t = t.and(Tri::from(hit).negate_if(*neg));
    }
    for (m, addr) in [(&rule.src, p.src), (&rule.dst, p.dst)] {
        if let Some(m) = m {
            let same_family = m.net.addr().is_ipv4() == addr.is_ipv4();
            t = t.and(
                Tri::from(same_family && m.net.contains(&addr)).negate_if(m.negated),
            );
        }
    }
    if let Some(m) = &rule.in_iface {
        t = t.and(match &p.iif {
            Some(i) => Tri::from(m.matches(i)),
            // No input interface on OUTPUT: iptables refuses -i there.
            None => Tri::Maybe,
        });
    }
    if let Some(m) = &rule.out_iface {
        t = t.and(match &p.oif {
            Some(o) => Tri::from(m.matches(o)),
            None => Tri::Maybe,
        });
    }
    if let Some(f) = rule.fragment {
        // A connection's first packet is not a later fragment.
        t = t.and(Tri::from(!f));
    }
    for m in &rule.modules {
        if t == Tri::No {
            return t;
        }
        t = t.and(module_matches(m, p, host));
    }
    t
}

fn module_matches(m: &Module, p: &Packet, host: &HostInfo) -> Tri {
    let mut t = Tri::Yes;
    match m.name.as_str() {
        "tcp" | "udp" => {
            if m.name != p.proto.name() {
                return Tri::No;
            }
            for o in &m.options {
                let r = match o.name.as_str() {
                    "dport" | "destination-port" => ports_hit(&o.values, p.dport),
                    "sport" | "source-port" => ports_hit(&o.values, p.sport),
                    // A new connection starts with a bare SYN.
                    "syn" => Tri::Yes,
                    "tcp-flags" => tcp_flags_hit(&o.values),
                    _ => Tri::Maybe,
                };
                t = t.and(r.negate_if(o.negated));
            }
        }
        "multiport" => {
            for o in &m.options {
                let r = match o.name.as_str() {
                    "dports" | "destination-ports" => ports_hit(&o.values, p.dport),
                    "sports" | "source-ports" => ports_hit(&o.values, p.sport),
                    "ports" => {
                        let d = ports_hit(&o.values, p.dport);
                        let s = ports_hit(&o.values, p.sport);
                        if d == Tri::Yes || s == Tri::Yes {
                            Tri::Yes
                        } else {
                            d.and(s)
                        }
                    }
                    _ => Tri::Maybe,
                };
                t = t.and(r.negate_if(o.negated));
            }
        }
        "state" | "conntrack" => {
            for o in &m.options {
                let r = match o.name.as_str() {
                    "state" | "ctstate" => {
                        let states: Vec<String> = o
                            .values
                            .iter()
                            .flat_map(|v| v.split(','))
                            .map(|s| s.to_ascii_uppercase())
                            .collect();
                        // DNAT status is a ctstate too.
                        let dnat =
                            states.iter().any(|s| s == "DNAT") && p.orig_dst.is_some();
                        Tri::from(states.iter().any(|s| s == "NEW") || dnat)
                    }
                    "ctstatus" => {
                        let has_dnat = o.values.iter().any(|v| v.contains("DNAT"));
                        if has_dnat {
                            Tri::from(p.orig_dst.is_some())
                        } else {
                            Tri::Maybe
                        }
                    }
                    "ctorigdstport" => match p.orig_dst {
                        Some((_, port)) => ports_hit(&o.values, port),
                        None => ports_hit(&o.values, p.dport),
                    },
                    "ctorigdst" => {
                        let dst = p.orig_dst.map_or(p.dst, |(a, _)| a);
                        nets_hit(&o.values, dst)
                    }
                    "ctorigsrc" => nets_hit(&o.values, p.src),
                    "ctproto" => Tri::from(
                        o.values
                            .iter()
                            .any(|v| v == p.proto.name() || v == p.proto.number()),
                    ),
                    "ctdir" => Tri::from(o.values.iter().any(|v| v == "ORIGINAL")),
                    _ => Tri::Maybe,
                };
                t = t.and(r.negate_if(o.negated));
            }
        }
        "addrtype" => {
            for o in &m.options {
                let addr = match o.name.as_str() {
                    "dst-type" => p.dst,
                    "src-type" => p.src,
                    "limit-iface-in" | "limit-iface-out" => continue,
                    _ => return Tri::Maybe,
                };
                let types: Vec<&str> =
                    o.values.iter().flat_map(|v| v.split(',')).collect();
                let local = host.is_local(&addr);
                let r = if types.iter().all(|t| *t == "LOCAL") {
                    Tri::from(local)
                } else if (types.contains(&"LOCAL") && local)
                    || (types.contains(&"UNICAST") && !local)
                {
                    Tri::Yes
                } else if types
                    .iter()
                    .all(|t| matches!(*t, "BROADCAST" | "MULTICAST" | "ANYCAST"))
                {
                    Tri::from(addr.is_multicast() || broadcast(&addr))
                } else {
                    Tri::Maybe
                };
                t = t.and(r.negate_if(o.negated));
            }
        }
        "iprange" => {
            for o in &m.options {
                let addr = match o.name.as_str() {
                    "src-range" => p.src,
                    "dst-range" => p.dst,
                    _ => return Tri::Maybe,
                };
                let r = o
                    .values
                    .first()
                    .and_then(|v| v.split_once('-'))
                    .and_then(|(a, b)| {
                        Some((a.parse::<IpAddr>().ok()?, b.parse::<IpAddr>().ok()?))
                    })
                    .map_or(Tri::Maybe, |(a, b)| {
                        Tri::from(a.is_ipv4() == addr.is_ipv4() && a <= addr && addr <= b)
                    });
                t = t.and(r.negate_if(o.negated));
            }
        }
        "comment" => {}
        "set" => {
            for o in &m.options {
                if o.name != "match-set" {
                    continue;
                }
                let (Some(name), Some(dirs)) = (o.values.first(), o.values.get(1)) else {
                    return Tri::Maybe;
                };
                // Only single-dimension address sets are modelled.
                let addr = match dirs.as_str() {
                    "src" => p.src,
                    "dst" => p.dst,
                    _ => return Tri::Maybe,
                };
                let r = match host.ipsets.get(name) {
                    Some(nets) => Tri::from(nets.iter().any(|n| n.contains(&addr))),
                    None => Tri::Maybe,
                };
                t = t.and(r.negate_if(o.negated));
            }
        }
        // Unicast is what a new TCP/UDP connection to one address is.
        "pkttype" => {
            for o in &m.options {
                let r = Tri::from(o.values.iter().any(|v| v == "unicast"));
                t = t.and(r.negate_if(o.negated));
            }
        }
        "icmp" | "icmp6" | "icmpv6" => return Tri::No,
        // IPv6 extension headers a new TCP or UDP connection does not carry:
        // these modules match only packets that have them.
        "rt" | "frag" | "hbh" | "dst" | "ah" | "esp" | "mh" => return Tri::No,
        // Per-source state, seen by a source's first connection: not in
        // any list yet, far below any per-source limit.
        "recent" => {
            for o in &m.options {
                let r = match o.name.as_str() {
                    "set" => Tri::Yes,
                    "rcheck" | "update" | "remove" => Tri::No,
                    _ => continue,
                };
                t = t.and(r.negate_if(o.negated));
            }
        }
        "hashlimit" => {
            let above = m.options.iter().any(|o| o.name == "hashlimit-above");
            let per_source = m.options.iter().any(|o| {
                o.name == "hashlimit-mode" && o.values.iter().any(|v| v.contains("srcip"))
            });
            return match (per_source, above) {
                (true, true) => Tri::No,
                (true, false) => Tri::Yes,
                // One bucket for everyone: depends on all other traffic.
                (false, _) => Tri::Maybe,
            };
        }
        "connlimit" => {
            for o in &m.options {
                let r = match o.name.as_str() {
                    "connlimit-above" => Tri::No,
                    "connlimit-upto" => Tri::Yes,
                    _ => continue,
                };
                t = t.and(r.negate_if(o.negated));
            }
        }
        _ => return Tri::Maybe,
    }
    t
}

fn broadcast(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V4(v4) if v4.is_broadcast() || v4.octets()[3] == 255)
}

/// A bare SYN is what a new TCP connection starts with.
fn tcp_flags_hit(values: &[String]) -> Tri {
    let [mask, set] = values else {
        return Tri::Maybe;
    };
    let syn_only = ["SYN"];
    let mask: Vec<&str> = if mask == "ALL" {
        vec!["FIN", "SYN", "RST", "PSH", "ACK", "URG"]
    } else {
        mask.split(',').collect()
    };
    let set: Vec<&str> = if set == "NONE" {
        Vec::new()
    } else {
        set.split(',').collect()
    };
    let expected: Vec<&str> = mask
        .iter()
        .copied()
        .filter(|f| syn_only.contains(f))
        .collect();
    let mut got: Vec<&str> = set;
    got.sort();
    let mut expected = expected;
    expected.sort();
    Tri::from(got == expected)
}

/// `22`, `1000:2000`, `22,80,443`, `8000:8080,9000`.
fn ports_hit(values: &[String], port: u16) -> Tri {
    let mut known = true;
    for v in values.iter().flat_map(|v| v.split(',')) {
        let parsed = match v.split_once(':') {
            Some((a, b)) => {
                let a = if a.is_empty() {
                    Some(0)
                } else {
                    a.parse().ok()
                };
                let b = if b.is_empty() {
                    Some(u16::MAX)
                } else {
                    b.parse().ok()
                };
                a.zip(b)
            }
            None => v.parse::<u16>().ok().map(|p| (p, p)),
        };
        match parsed {
            Some((a, b)) if a <= port && port <= b => return Tri::Yes,
            Some(_) => {}
            // Service names (`ssh`) are not resolved.
            None => known = false,
        }
    }
    if known {
        Tri::No
    } else {
        Tri::Maybe
    }
}

fn nets_hit(values: &[String], addr: IpAddr) -> Tri {
    for v in values.iter().flat_map(|v| v.split(',')) {
        let net = v
            .parse::<IpNet>()
            .ok()
            .or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            Some(n) if n.contains(&addr) => return Tri::Yes,
            Some(_) => {}
            None => return Tri::Maybe,
        }
    }
    Tri::No
}

/// Runs every path through one native nftables base chain. An accept ends
/// only this chain; a drop is final.
fn through_nft(
    fw: &Firewall,
    host: &HostInfo,
    chain: &NftChain,
    paths: Vec<Path>,
    finished: &mut Vec<(bool, Path)>,
) -> Vec<Path> {
    let hit = Hit {
        table: format!("{} {}", chain.family, chain.table),
        chain: chain.name.clone(),
        line: 0,
        text: "(end of the chain)".into(),
        effect: format!("policy {}", chain.policy),
        maybe: false,
    };
    let mut out = Vec::new();
    for p in paths {
        for (end, path) in walk_nft(fw, host, chain, p, 0) {
            settle(
                end,
                path,
                chain.policy == "drop",
                Some(&hit),
                &mut out,
                finished,
            );
        }
    }
    dedupe(out)
}

fn walk_nft(
    fw: &Firewall,
    host: &HostInfo,
    chain: &NftChain,
    start: Path,
    depth: usize,
) -> Vec<(End, Path)> {
    if depth > 64 {
        let mut p = start;
        p.maybe = true;
        return vec![(End::Accept, p)];
    }
    let nft = fw.nft.expect("nft chains come from an nft ruleset");
    let table = format!("{} {}", chain.family, chain.table);
    let mut ended = Vec::new();
    let mut live = vec![start];
    for rule in &chain.rules {
        // Logging, counting and meter updates without a verdict cannot
        // change where the packet goes.
        if !rule.expr.iter().any(is_verdict) {
            continue;
        }
        let mut next = Vec::new();
        'paths: for p in live {
            // Statements run in order; matches narrow, the first verdict
            // ends the rule.
            let mut cur = vec![p];
            for e in &rule.expr {
                let mut after = Vec::new();
                for mut q in cur {
                    match nft_step(nft, chain, host, e, &mut q) {
                        Step::Continue => after.push(q),
                        Step::Miss => next.push(q),
                        Step::Maybe => {
                            let mut skip = q.clone();
                            skip.maybe = true;
                            next.push(skip);
                            q.maybe = true;
                            after.push(q);
                        }
                        Step::Verdict(v) => {
                            let hit = Hit {
                                table: table.clone(),
                                chain: chain.name.clone(),
                                line: rule.handle as usize,
                                text: nftjson::describe(rule),
                                effect: v.clone(),
                                maybe: q.maybe,
                            };
                            match v.as_str() {
                                "accept" | "dnat" | "snat" => {
                                    q.trail.push(hit);
                                    ended.push((End::Accept, q));
                                }
                                "drop" | "reject" => {
                                    q.trail.push(hit);
                                    ended.push((End::Drop, q));
                                }
                                "return" => {
                                    q.trail.push(hit);
                                    ended.push((End::Return, q));
                                }
                                jump => {
                                    let (goto, target) = match jump.split_once(' ') {
                                        Some(("goto", t)) => (true, t),
                                        Some((_, t)) => (false, t),
                                        None => (false, ""),
                                    };
                                    let Some(c) =
                                        nft.chain(&chain.family, &chain.table, target)
                                    else {
                                        q.maybe = true;
                                        ended.push((End::Accept, q));
                                        continue;
                                    };
                                    q.trail.push(hit);
                                    for (end, r) in walk_nft(fw, host, c, q, depth + 1) {
                                        match end {
                                            End::Return if goto => {
                                                ended.push((End::Return, r))
                                            }
                                            End::Return => next.push(r),
                                            e => ended.push((e, r)),
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                cur = after;
                if cur.is_empty() {
                    continue 'paths;
                }
            }
            // No verdict: on to the next rule.
            next.extend(cur);
        }
        live = dedupe(next);
        if live.is_empty() {
            break;
        }
    }
    ended.extend(live.into_iter().map(|p| (End::Return, p)));
    ended
}

fn is_verdict(e: &Value) -> bool {
    e.as_object()
        .and_then(|o| o.keys().next())
        .is_some_and(|k| {
            matches!(
                k.as_str(),
                "accept"
                    | "drop"
                    | "reject"
                    | "return"
                    | "jump"
                    | "goto"
                    | "dnat"
                    | "snat"
                    | "masquerade"
                    | "redirect"
                    | "queue"
            )
        })
}

enum Step {
    Continue,
    Miss,
    Maybe,
    /// "accept", "drop", "reject", "return", "dnat", "snat",
    /// "jump NAME", "goto NAME".
    Verdict(String),
}

fn nft_step(
    nft: &NftRuleset,
    chain: &NftChain,
    host: &HostInfo,
    e: &Value,
    p: &mut Path,
) -> Step {
    let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
        return Step::Maybe;
    };
    match key.as_str() {
        "match" => match nft_match(nft, chain, host, body, &p.pkt) {
            Tri::Yes => Step::Continue,
            Tri::No => Step::Miss,
            Tri::Maybe => Step::Maybe,
        },
        "counter" | "log" | "notrack" | "mangle" | "meta" | "ct" | "quota" => {
            Step::Continue
        }
        // A global rate limit passes some packets and not others, whatever
        // the source.
        "limit" => Step::Maybe,
        // `update @meter { ip saddr limit rate over R }`: a per-source limit,
        // which a source's first connection is far below. Other set updates
        // only record.
        "set" => match body["stmt"].as_array().and_then(|s| {
            s.iter()
                .find_map(|st| st.get("limit").map(|l| l["inv"] == true))
        }) {
            Some(true) => Step::Miss,
            _ => Step::Continue,
        },
        "accept" => Step::Verdict("accept".into()),
        "drop" => Step::Verdict("drop".into()),
        "reject" => Step::Verdict("reject".into()),
        "return" => Step::Verdict("return".into()),
        "continue" => Step::Continue,
        "jump" => Step::Verdict(format!(
            "jump {}",
            body["target"].as_str().unwrap_or_default()
        )),
        "goto" => Step::Verdict(format!(
            "goto {}",
            body["target"].as_str().unwrap_or_default()
        )),
        "dnat" | "redirect" => {
            let before = (p.pkt.dst, p.pkt.dport);
            if key == "redirect" {
                p.pkt.dst = host.local.first().copied().unwrap_or(p.pkt.dst);
            } else if let Some(a) = body["addr"].as_str().and_then(|a| a.parse().ok()) {
                p.pkt.dst = a;
            } else {
                p.maybe = true;
            }
            if let Some(port) = body["port"].as_u64() {
                p.pkt.dport = port as u16;
            }
            p.pkt.orig_dst.get_or_insert(before);
            Step::Verdict("dnat".into())
        }
        "snat" | "masquerade" => Step::Verdict("snat".into()),
        _ => Step::Maybe,
    }
}

/// A packet field as the model knows it.
enum Field {
    Addr(IpAddr),
    Int(u64),
    Str(String),
    Flags(Vec<&'static str>),
    Unknown,
    /// The field does not exist for this packet (wrong family/protocol):
    /// the match fails.
    Absent,
}

fn field(left: &Value, pkt: &Packet, host: &HostInfo) -> Field {
    if let Some(m) = left.get("meta") {
        return match m["key"].as_str().unwrap_or_default() {
            "iifname" | "iif" => pkt.iif.clone().map_or(Field::Unknown, Field::Str),
            "oifname" | "oif" => pkt.oif.clone().map_or(Field::Unknown, Field::Str),
            "l4proto" | "protocol" if m["key"] == "l4proto" => {
                Field::Str(pkt.proto.name().into())
            }
            "nfproto" => {
                Field::Str(if pkt.dst.is_ipv6() { "ipv6" } else { "ipv4" }.into())
            }
            _ => Field::Unknown,
        };
    }
    if let Some(pl) = left.get("payload") {
        let proto = pl["protocol"].as_str().unwrap_or_default();
        let f = pl["field"].as_str().unwrap_or_default();
        return match (proto, f) {
            ("ip", "saddr") | ("ip6", "saddr") => family_addr(proto, pkt.src),
            ("ip", "daddr") | ("ip6", "daddr") => family_addr(proto, pkt.dst),
            ("tcp" | "udp", "dport") if proto == pkt.proto.name() => {
                Field::Int(pkt.dport.into())
            }
            ("tcp" | "udp", "sport") if proto == pkt.proto.name() => {
                Field::Int(pkt.sport.into())
            }
            ("th", "dport") => Field::Int(pkt.dport.into()),
            ("th", "sport") => Field::Int(pkt.sport.into()),
            ("tcp" | "udp" | "icmp" | "icmpv6", _) => Field::Absent,
            _ => Field::Unknown,
        };
    }
    if let Some(ct) = left.get("ct") {
        let original = ct["dir"].as_str().is_none_or(|d| d == "original");
        return match ct["key"].as_str().unwrap_or_default() {
            "state" => Field::Flags(vec!["new"]),
            "status" => Field::Flags(if pkt.orig_dst.is_some() {
                vec!["dnat"]
            } else {
                vec![]
            }),
            "proto-dst" if original => {
                Field::Int(pkt.orig_dst.map_or(pkt.dport, |(_, p)| p).into())
            }
            "daddr" | "ip daddr" | "ip6 daddr" if original => {
                Field::Addr(pkt.orig_dst.map_or(pkt.dst, |(a, _)| a))
            }
            "saddr" | "ip saddr" | "ip6 saddr" if original => Field::Addr(pkt.src),
            "direction" => Field::Str("original".into()),
            _ => Field::Unknown,
        };
    }
    if let Some(fib) = left.get("fib") {
        let daddr = fib["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "daddr"));
        if fib["result"] == "type" && daddr {
            let t = if host.is_local(&pkt.dst) {
                "local"
            } else {
                "unicast"
            };
            return Field::Str(t.into());
        }
    }
    Field::Unknown
}

fn family_addr(proto: &str, a: IpAddr) -> Field {
    if (proto == "ip6") == a.is_ipv6() {
        Field::Addr(a)
    } else {
        Field::Absent
    }
}

fn nft_match(
    nft: &NftRuleset,
    chain: &NftChain,
    host: &HostInfo,
    m: &Value,
    pkt: &Packet,
) -> Tri {
    let op = m["op"].as_str().unwrap_or("==");
    let f = field(&m["left"], pkt, host);
    let hit = match &f {
        Field::Unknown => return Tri::Maybe,
        Field::Absent => return Tri::No,
        _ => contains(nft, chain, &m["right"], &f),
    };
    let Some(hit) = hit else {
        return Tri::Maybe;
    };
    match op {
        "==" | "in" => Tri::from(hit),
        "!=" => Tri::from(!hit),
        _ => Tri::Maybe,
    }
}

/// Whether `right` (a value, set, prefix, range or `@set`) holds the field.
/// `None` when the model cannot tell.
fn contains(
    nft: &NftRuleset,
    chain: &NftChain,
    right: &Value,
    f: &Field,
) -> Option<bool> {
    match right {
        Value::Array(items) => any_of(nft, chain, items, f),
        Value::Object(o) if o.contains_key("set") => {
            any_of(nft, chain, o["set"].as_array()?, f)
        }
        Value::String(s) if s.starts_with('@') => {
            let set = nft.set(&chain.family, &chain.table, &s[1..])?;
            any_of(nft, chain, &set.elem, f)
        }
        _ => one(right, f),
    }
}

fn any_of(
    nft: &NftRuleset,
    chain: &NftChain,
    items: &[Value],
    f: &Field,
) -> Option<bool> {
    let mut unknown = false;
    for i in items {
        // Set elements with timeouts or counters come as {"elem": {...}}.
        let v = i.get("elem").and_then(|e| e.get("val")).unwrap_or(i);
        match contains(nft, chain, v, f) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    if unknown {
        None
    } else {
        Some(false)
    }
}

fn one(v: &Value, f: &Field) -> Option<bool> {
    match f {
        Field::Addr(a) => {
            if let Some(p) = v.get("prefix") {
                let net: IpNet =
                    format!("{}/{}", p["addr"].as_str()?, p["len"].as_u64()?)
                        .parse()
                        .ok()?;
                return Some(net.contains(a));
            }
            if let Some(r) = v.get("range").and_then(Value::as_array) {
                let lo: IpAddr = r.first()?.as_str()?.parse().ok()?;
                let hi: IpAddr = r.get(1)?.as_str()?.parse().ok()?;
                return Some(lo.is_ipv4() == a.is_ipv4() && lo <= *a && *a <= hi);
            }
            let addr: IpAddr = v.as_str()?.parse().ok()?;
            Some(addr == *a)
        }
        Field::Int(n) => {
            if let Some(r) = v.get("range").and_then(Value::as_array) {
                let lo = r.first()?.as_u64()?;
                let hi = r.get(1)?.as_u64()?;
                return Some(lo <= *n && *n <= hi);
            }
            match v {
                Value::Number(x) => Some(x.as_u64()? == *n),
                // Service names (`ssh`) are not resolved.
                _ => None,
            }
        }
        Field::Str(s) => {
            let want = v.as_str()?;
            Some(match want.strip_suffix('*') {
                Some(prefix) => s.starts_with(prefix),
                None => s == want,
            })
        }
        Field::Flags(flags) => match v {
            Value::String(w) => Some(flags.contains(&w.as_str())),
            _ => None,
        },
        Field::Unknown | Field::Absent => None,
    }
}
