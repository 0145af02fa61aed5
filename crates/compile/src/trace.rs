//! Follows one packet through the ruleset model and names the rule that
//! decides it.
//!
//! Endpoints may be symbolic: a service stands for its containers whatever
//! their addresses, a group name for an address inside the group. The
//! packet path is the one a Docker host gives: `prerouting` first for
//! packets from outside, then `input` for the host, `forward` for
//! containers (after Docker's DNAT when a published port is used) and
//! `output` for what the host sends. Per-source rate limits are assumed not
//! exceeded (the first connection of a source); the trace says so.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_policy::{Policy, Proto};
use serde::Serialize;

use crate::ir::*;

/// One end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Endpoint {
    /// An address outside the host.
    Addr(IpAddr),
    /// The containers of a service.
    Service(String),
    /// The host, on its public address.
    Host,
    /// The host's loopback.
    Loopback,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            Endpoint::Service(s) => write!(f, "service {s}"),
            Endpoint::Host => f.write_str("host"),
            Endpoint::Loopback => f.write_str("host loopback"),
        }
    }
}

/// A new connection to trace.
#[derive(Debug, Clone, Serialize)]
pub struct Query {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub port: u16,
    pub proto: Proto,
    /// Family when neither end is an address; ignored otherwise.
    pub ipv6: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub chain: String,
    pub rule: String,
    pub text: String,
    pub effect: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub query: Query,
    pub accepted: bool,
    /// The chain and rule id that decided, or the chain's policy.
    pub decided_by: String,
    /// nft text of the deciding rule, or the chain policy.
    pub rule_text: String,
    /// Every rule that matched on the way, in order.
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// What the packet looks like at one hook.
#[derive(Debug, Clone)]
struct Packet {
    family: Family,
    src: Endpoint,
    dst: Endpoint,
    iif: Iface,
    oif: Iface,
    proto: Proto,
    dport: u16,
    orig_dport: u16,
    dnat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Iface {
    Lo,
    Named(String),
    Bridge,
    None,
}

/// Traces `q` through `rs`, compiled from `policy`.
pub fn trace(policy: &Policy, rs: &Ruleset, q: &Query) -> Trace {
    let mut t = Trace {
        query: q.clone(),
        accepted: true,
        decided_by: String::new(),
        rule_text: String::new(),
        steps: Vec::new(),
        notes: Vec::new(),
    };
    let family = match (&q.src, &q.dst) {
        (Endpoint::Addr(IpAddr::V6(_)), _) | (_, Endpoint::Addr(IpAddr::V6(_))) => {
            Family::V6
        }
        (Endpoint::Addr(IpAddr::V4(_)), _) | (_, Endpoint::Addr(IpAddr::V4(_))) => {
            Family::V4
        }
        _ if q.ipv6 => Family::V6,
        _ => Family::V4,
    };
    let public = policy
        .host
        .public_interfaces
        .first()
        .cloned()
        .unwrap_or_else(|| "eth0".into());
    let mut p = Packet {
        family,
        src: q.src.clone(),
        dst: q.dst.clone(),
        iif: Iface::None,
        oif: Iface::None,
        proto: q.proto,
        dport: q.port,
        orig_dport: q.port,
        dnat: false,
    };

    // Work out the path the packet takes on a Docker host.
    let mut hooks = Vec::new();
    match (&q.src, &q.dst) {
        (Endpoint::Loopback, _) | (_, Endpoint::Loopback) => {
            p.iif = Iface::Lo;
            p.oif = Iface::Lo;
            hooks.push(Hook::Output);
            hooks.push(Hook::Input);
            t.notes
                .push("loopback traffic stays on the host (lo)".into());
        }
        (Endpoint::Host, Endpoint::Service(_)) => {
            p.oif = Iface::Bridge;
            hooks.push(Hook::Output);
        }
        (Endpoint::Host, _) => {
            p.oif = Iface::Named(public.clone());
            hooks.push(Hook::Output);
        }
        (Endpoint::Service(_), Endpoint::Host) => {
            p.iif = Iface::Bridge;
            hooks.extend([Hook::Prerouting, Hook::Input]);
        }
        (Endpoint::Service(_), Endpoint::Service(_)) => {
            p.iif = Iface::Bridge;
            p.oif = Iface::Bridge;
            hooks.extend([Hook::Prerouting, Hook::Forward]);
        }
        (Endpoint::Service(_), Endpoint::Addr(_)) => {
            p.iif = Iface::Bridge;
            p.oif = Iface::Named(public.clone());
            hooks.extend([Hook::Prerouting, Hook::Forward]);
        }
        (Endpoint::Addr(_), Endpoint::Host) => {
            p.iif = Iface::Named(public.clone());
            let published = policy.services.values().find_map(|s| {
                s.ports
                    .iter()
                    .find(|sp| sp.publish == Some(q.port) && sp.proto == q.proto)
                    .map(|sp| (s.name.clone(), sp.port))
            });
            match published {
                Some((svc, cport)) if family == Family::V4 => {
                    t.notes.push(format!(
                        "host port {}/{} is published: Docker's DNAT sends it to \
                         service {svc} port {cport}",
                        q.port, q.proto
                    ));
                    p.dst = Endpoint::Service(svc);
                    p.dport = cport;
                    p.dnat = true;
                    p.oif = Iface::Bridge;
                    hooks.extend([Hook::Prerouting, Hook::Forward]);
                }
                Some((svc, _)) => {
                    t.notes.push(format!(
                        "host port {}/{} is published by {svc}; IPv6 clients reach \
                         Docker's userland proxy on the host unless Docker's ip6tables \
                         is enabled",
                        q.port, q.proto
                    ));
                    hooks.extend([Hook::Prerouting, Hook::Input]);
                }
                None => hooks.extend([Hook::Prerouting, Hook::Input]),
            }
        }
        (Endpoint::Addr(_), Endpoint::Service(_)) => {
            p.iif = Iface::Named(public.clone());
            p.oif = Iface::Bridge;
            t.notes.push(
                "addressed to the container directly (routed, not DNAT): a published \
                 port is not used"
                    .into(),
            );
            hooks.extend([Hook::Prerouting, Hook::Forward]);
        }
        (Endpoint::Addr(_), Endpoint::Addr(_)) => {
            t.notes.push(
                "both ends are outside the host, so this is traffic routed through it; \
                 to reach the host itself write `host:PORT`"
                    .into(),
            );
            p.iif = Iface::Named(public.clone());
            p.oif = Iface::Named(public.clone());
            hooks.extend([Hook::Prerouting, Hook::Forward]);
        }
    }

    for hook in hooks {
        let Some(chain) = rs.base(hook) else {
            t.notes
                .push(format!("no palisade chain on {}: passes", hook.as_str()));
            continue;
        };
        let policy_accept = chain.base.as_ref().is_some_and(|b| b.policy_accept);
        match run_chain(policy, rs, chain, &p, &mut t, 0) {
            Some((accepted, id, text)) => {
                t.decided_by = id;
                t.rule_text = text;
                if !accepted {
                    t.accepted = false;
                    return t;
                }
            }
            None => {
                let verdict = if policy_accept { "accept" } else { "drop" };
                t.decided_by = format!("{}:policy", chain.name);
                t.rule_text = format!("policy {verdict}");
                if !policy_accept {
                    t.accepted = false;
                    return t;
                }
            }
        }
    }
    t
}

/// Runs one chain. `Some((accepted, id, text))` when a verdict is reached.
fn run_chain(
    policy: &Policy,
    rs: &Ruleset,
    chain: &Chain,
    p: &Packet,
    t: &mut Trace,
    depth: usize,
) -> Option<(bool, String, String)> {
    if depth > 16 {
        return None;
    }
    for r in &chain.rules {
        // Ports and protocols first: they rule out most rules of a large
        // policy without looking up a set.
        let cheap = |m: &&Match| !matches!(m, Match::Saddr { .. } | Match::Daddr { .. });
        if !r
            .matches
            .iter()
            .filter(cheap)
            .filter(|m| !matches!(m, Match::RateOver { .. }))
            .all(|m| matches(policy, rs, m, p))
        {
            continue;
        }
        let mut rate_limited = None;
        let all = r.matches.iter().all(|m| {
            if let Match::RateOver { limit, .. } = m {
                rate_limited = Some(*limit);
                return false;
            }
            matches(policy, rs, m, p)
        });
        if let Some(limit) = rate_limited {
            let rest = r
                .matches
                .iter()
                .filter(|m| !matches!(m, Match::RateOver { .. }))
                .all(|m| matches(policy, rs, m, p));
            if rest {
                t.notes.push(format!(
                    "a per-source limit of {limit} applies ({}:{}); beyond it new \
                     connections are dropped",
                    chain.name, r.id
                ));
            }
            continue;
        }
        if !all {
            continue;
        }
        let text = crate::nft::rule_text(r);
        let id = format!("{}:{}", chain.name, r.id);
        match &r.action {
            Action::Accept => {
                t.steps.push(step(chain, r, &text, "accept"));
                return Some((true, id, text));
            }
            Action::Drop => {
                t.steps.push(step(chain, r, &text, "drop"));
                return Some((false, id, text));
            }
            Action::Log(_) => t.steps.push(step(chain, r, &text, "log")),
            Action::Jump(target) => {
                t.steps.push(step(chain, r, &text, "jump"));
                if let Some(c) = rs.chain(target) {
                    if let Some((accepted, _, inner)) =
                        run_chain(policy, rs, c, p, t, depth + 1)
                    {
                        // Name the rule that sent the packet there: that is
                        // the policy statement a user recognises.
                        return Some((accepted, id, format!("{text} -> {inner}")));
                    }
                }
            }
        }
    }
    None
}

fn step(chain: &Chain, r: &Rule, text: &str, effect: &str) -> Step {
    Step {
        chain: chain.name.clone(),
        rule: r.id.clone(),
        text: text.to_string(),
        effect: effect.to_string(),
    }
}

fn matches(policy: &Policy, rs: &Ruleset, m: &Match, p: &Packet) -> bool {
    match m {
        Match::Family(f) => *f == p.family,
        Match::IifLo => p.iif == Iface::Lo,
        Match::OifLo => p.oif == Iface::Lo,
        Match::Iifname { ifaces, negate } => iface_in(rs, ifaces, &p.iif) != *negate,
        Match::Oifname { ifaces, negate } => iface_in(rs, ifaces, &p.oif) != *negate,
        Match::Saddr { family, addrs } => {
            *family == p.family && addr_in(policy, rs, addrs, &p.src)
        }
        Match::Daddr { family, addrs } => {
            *family == p.family && addr_in(policy, rs, addrs, &p.dst)
        }
        Match::L4 { proto, dports } => {
            *proto == p.proto && (dports.is_empty() || dports.contains(&p.dport))
        }
        Match::CtOrigDport { proto, port } => *proto == p.proto && *port == p.orig_dport,
        Match::CtDnat => p.dnat,
        Match::CtState(states) => states.contains(&CtState::New),
        Match::Icmp { .. } => false,
        Match::RateOver { .. } => false,
        Match::Limit { .. } => true,
    }
}

fn iface_in(rs: &Ruleset, ifaces: &Ifaces, iface: &Iface) -> bool {
    match (ifaces, iface) {
        (Ifaces::Set(name), Iface::Bridge) => {
            rs.set(name).is_some_and(|s| s.role == SetRole::Bridges)
        }
        (Ifaces::Names(names), Iface::Named(n)) => names.contains(n),
        (Ifaces::Names(names), Iface::Lo) => names.iter().any(|n| n == "lo"),
        _ => false,
    }
}

fn addr_in(policy: &Policy, rs: &Ruleset, addrs: &Addrs, e: &Endpoint) -> bool {
    match addrs {
        Addrs::Nets(nets) => nets.iter().any(|n| net_has(n, e)),
        Addrs::Set(name) => {
            let Some(set) = rs.set(name) else {
                return false;
            };
            match (&set.role, e) {
                (SetRole::Service(s), Endpoint::Service(t)) => s == t,
                (SetRole::Group(g), Endpoint::Addr(a)) => {
                    policy.groups.get(g).is_some_and(|g| g.contains(a))
                }
                _ => false,
            }
        }
    }
}

fn net_has(n: &IpNet, e: &Endpoint) -> bool {
    match e {
        Endpoint::Addr(a) => n.contains(a),
        Endpoint::Loopback => match n {
            IpNet::V4(v4) => v4.contains(&std::net::Ipv4Addr::LOCALHOST),
            IpNet::V6(v6) => v6.contains(&std::net::Ipv6Addr::LOCALHOST),
        },
        // The host's and the containers' addresses are only known on a
        // live host; only "anywhere" is sure to contain them.
        _ => n.prefix_len() == 0,
    }
}

/// Parses `DST:PORT/PROTO` (`host:22/tcp`, `nginx:80`, `[2001:db8::1]:443/tcp`)
/// and a source word into a query. Names are services first, then groups
/// (an address inside the group), then `host` and `loopback`, then addresses.
pub fn parse_query(
    policy: &Policy,
    src: &str,
    dst: &str,
    ipv6: bool,
) -> Result<Query, String> {
    let (rest, proto) = match dst.rsplit_once('/') {
        Some((rest, p)) if p.eq_ignore_ascii_case("tcp") => (rest, Proto::Tcp),
        Some((rest, p)) if p.eq_ignore_ascii_case("udp") => (rest, Proto::Udp),
        Some((_, other)) => {
            return Err(format!("unknown protocol `{other}`; expected tcp or udp"))
        }
        None => (dst, Proto::Tcp),
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("`{dst}`: expected DST:PORT[/PROTO], e.g. host:22/tcp"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{port}` is not a port (1-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let src = src.trim_start_matches('[').trim_end_matches(']');
    let q = Query {
        src: endpoint(policy, src, ipv6)?,
        dst: endpoint(policy, host, ipv6)?,
        port,
        proto,
        ipv6,
    };
    if let (Endpoint::Addr(a), Endpoint::Addr(b)) = (&q.src, &q.dst) {
        if a.is_ipv4() != b.is_ipv4() {
            return Err(format!("{a} and {b} are not of one family (IPv4 and IPv6)"));
        }
    }
    Ok(q)
}

fn endpoint(policy: &Policy, word: &str, ipv6: bool) -> Result<Endpoint, String> {
    if policy.services.contains_key(word) {
        return Ok(Endpoint::Service(word.to_string()));
    }
    if let Some(g) = policy.groups.get(word) {
        let net = g
            .nets
            .iter()
            .find(|n| matches!(n, IpNet::V6(_)) == ipv6)
            .or_else(|| g.nets.first())
            .ok_or_else(|| format!("group `{word}` is empty"))?;
        return Ok(Endpoint::Addr(net.addr()));
    }
    match word {
        "host" => return Ok(Endpoint::Host),
        "loopback" | "localhost" => return Ok(Endpoint::Loopback),
        _ => {}
    }
    word.parse::<IpAddr>().map(Endpoint::Addr).map_err(|_| {
        format!("`{word}` is not a service, a group, `host`, `loopback` or an IP address")
    })
}
