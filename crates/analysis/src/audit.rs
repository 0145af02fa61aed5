//! The audit of a live (or collected) host: what the internet reaches, and
//! why, with findings.
//!
//! Candidate ports are every port the host's state mentions: published
//! ports (DNAT rules), listening sockets, and ports in filter rules. Each
//! is traced from an internet address through the packet-path model, for
//! IPv4 and IPv6, to each of the host's public addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

use crate::eval::{evaluate, Fate, Firewall, Packet, L4};
use crate::findings::{Finding, Severity};
use crate::host::HostState;

/// Where the audit's internet packets come from.
pub const INTERNET_V4: &str = "203.0.113.254";
pub const INTERNET_V6: &str = "2001:db8:ffff::254";

/// One port as seen from the internet.
#[derive(Debug, Clone, Serialize)]
pub struct Exposure {
    /// Where the connection comes from.
    pub source: IpAddr,
    pub proto: L4,
    pub port: u16,
    pub addr: IpAddr,
    pub fate: Fate,
    /// Where the connection ends up: "host" or the DNAT target.
    pub reaches: String,
    /// The rule that decided, as `table chain:line text`.
    pub why: String,
    /// Published through DNAT while the host's INPUT path would block the
    /// same port: the classic "UFW says closed, Docker says open".
    pub bypasses_input: bool,
}

/// The exposure matrix from the internet.
pub fn exposure(st: &HostState) -> Vec<Exposure> {
    let v4 = INTERNET_V4.parse().expect("constant");
    let v6 = INTERNET_V6.parse().expect("constant");
    exposure_from(st, v4, v6)
}

/// The exposure matrix as seen from the given outside addresses.
pub fn exposure_from(st: &HostState, src_v4: IpAddr, src_v6: IpAddr) -> Vec<Exposure> {
    let ports = candidate_ports(st);
    let mut out = Vec::new();
    for addr in &st.public_addrs {
        let (dump, src) = match addr {
            IpAddr::V4(_) => (&st.v4, src_v4),
            IpAddr::V6(_) => (&st.v6, src_v6),
        };
        let iif = st
            .iface_addrs
            .iter()
            .find(|(_, a)| a == addr)
            .map(|(i, _)| i.clone());
        for &(proto, port) in &ports {
            let pkt = Packet::new(src, *addr, proto, port, iif.clone());
            let fw = Firewall {
                iptables: dump,
                nft: st.nft.as_ref(),
            };
            let d = evaluate(&fw, &st.info, &pkt);
            let fate = d.fate;
            let dnat = d.packet.orig_dst.is_some();
            let reaches = if dnat {
                format!("{}:{}", d.packet.dst, d.packet.dport)
            } else {
                "host".to_string()
            };
            let why = d.deciding_rule();
            let bypasses_input =
                dnat && fate != Fate::Blocked && input_blocks(&fw, st, &pkt);
            out.push(Exposure {
                source: src,
                proto,
                port,
                addr: *addr,
                fate,
                reaches,
                why,
                bypasses_input,
            });
        }
    }
    out
}

/// Would the filter INPUT path alone block this packet (as if nothing
/// were published)?
fn input_blocks(fw: &Firewall, st: &HostState, pkt: &Packet) -> bool {
    let mut without_nat = fw.iptables.clone();
    without_nat.tables.remove("nat");
    let fw = Firewall {
        iptables: &without_nat,
        nft: fw.nft,
    };
    evaluate(&fw, &st.info, pkt).fate == Fate::Blocked
}

/// Every port the host state mentions: DNAT and filter rules, sockets.
pub fn candidate_ports(st: &HostState) -> Vec<(L4, u16)> {
    let mut set: BTreeSet<(L4, u16)> = BTreeSet::new();
    for dump in [&st.v4, &st.v6] {
        for table in dump.tables.values() {
            for chain in &table.chains {
                for rule in &chain.rules {
                    let proto = match rule.protocol.as_ref().map(|(_, p)| p.as_str()) {
                        Some("tcp") | Some("6") => L4::Tcp,
                        Some("udp") | Some("17") => L4::Udp,
                        _ => continue,
                    };
                    for m in &rule.modules {
                        for o in &m.options {
                            if !matches!(
                                o.name.as_str(),
                                "dport" | "dports" | "destination-port"
                            ) {
                                continue;
                            }
                            for v in o.values.iter().flat_map(|v| v.split(',')) {
                                if let Ok(p) = v.parse::<u16>() {
                                    set.insert((proto, p));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(nft) = &st.nft {
        for chain in &nft.chains {
            for rule in &chain.rules {
                for e in &rule.expr {
                    nft_ports(e, &mut set);
                }
            }
        }
    }
    for l in &st.listeners {
        if l.addr.is_some_and(|a| a.is_loopback()) {
            continue;
        }
        let proto = match l.proto.as_str() {
            "tcp" => L4::Tcp,
            "udp" => L4::Udp,
            _ => continue,
        };
        set.insert((proto, l.port));
    }
    set.into_iter().collect()
}

/// Ports compared in an nftables match (`tcp dport 22`, `th dport { 80,
/// 443 }`, `ct original proto-dst 8080` after `meta l4proto tcp`).
fn nft_ports(e: &serde_json::Value, set: &mut BTreeSet<(L4, u16)>) {
    let Some(m) = e.get("match") else {
        return;
    };
    let left = &m["left"];
    let protos: &[L4] = match left["payload"]["protocol"].as_str() {
        Some("tcp") => &[L4::Tcp],
        Some("udp") => &[L4::Udp],
        Some("th") => &[L4::Tcp, L4::Udp],
        _ if left["ct"]["key"] == "proto-dst" => &[L4::Tcp, L4::Udp],
        _ => return,
    };
    if left["payload"]["field"]
        .as_str()
        .is_some_and(|f| f != "dport")
    {
        return;
    }
    let right = &m["right"];
    let mut ports: Vec<u64> = right.as_u64().into_iter().collect();
    if let Some(items) = right.get("set").and_then(|s| s.as_array()) {
        ports.extend(items.iter().filter_map(|v| v.as_u64()));
    }
    for p in ports {
        if let Ok(p) = u16::try_from(p) {
            for proto in protos {
                set.insert((*proto, p));
            }
        }
    }
}

/// Findings from the exposure matrix.
pub fn findings(matrix: &[Exposure], source: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in matrix {
        if e.bypasses_input {
            out.push(Finding {
                id: "host/published-past-firewall",
                severity: Severity::High,
                subject: format!("{}/{} on {}", e.port, proto_name(e.proto), e.addr),
                file: source.to_string(),
                line: 0,
                message: format!(
                    "the host firewall's INPUT rules block this port, but Docker publishes it \
                     (DNAT to {}) and the internet reaches it: {}",
                    e.reaches, e.why
                ),
                fix: "publish the port on 127.0.0.1 if only the host needs it, or let \
                      palisade decide who reaches it (rules before Docker's, matched on the \
                      original port)"
                    .into(),
            });
        }
    }
    // IPv6 open where IPv4 is closed.
    for e6 in matrix
        .iter()
        .filter(|e| e.addr.is_ipv6() && e.fate != Fate::Blocked)
    {
        let v4_closed = matrix
            .iter()
            .filter(|e| e.addr.is_ipv4() && e.port == e6.port && e.proto == e6.proto)
            .any(|e| e.fate == Fate::Blocked);
        if v4_closed {
            out.push(Finding {
                id: "host/ipv6-open-ipv4-closed",
                severity: Severity::High,
                subject: format!("{}/{}", e6.port, proto_name(e6.proto)),
                file: source.to_string(),
                line: 0,
                message: format!(
                    "reachable over IPv6 ({}) but blocked over IPv4: {}",
                    e6.addr, e6.why
                ),
                fix: "give ip6tables the same rules as iptables".into(),
            });
        }
    }
    out
}

fn proto_name(p: L4) -> &'static str {
    match p {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
    }
}

/// Findings about the rules themselves: limits shared by every source, and
/// interface names that exist nowhere on the host (rules that never match).
pub fn rule_findings(st: &HostState, source: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let ifaces: BTreeSet<&str> = st.iface_addrs.iter().map(|(i, _)| i.as_str()).collect();
    for (family, dump) in [("iptables", &st.v4), ("ip6tables", &st.v6)] {
        for (table, t) in &dump.tables {
            for chain in &t.chains {
                for rule in &chain.rules {
                    let at = format!(
                        "{family} {table} {chain}:{}",
                        rule.line,
                        chain = chain.name
                    );
                    // `-m limit` is one bucket for everyone: a flood from one
                    // source uses up the rate of all the others.
                    let limit = rule.module("limit").is_some();
                    let accepts = matches!(rule.target(), Some("ACCEPT"));
                    if limit && accepts {
                        out.push(Finding {
                            id: "host/shared-rate-limit",
                            severity: Severity::Medium,
                            subject: at.clone(),
                            file: source.to_string(),
                            line: 0,
                            message: format!(
                                "a rate limit shared by all sources decides what is accepted: \
                                 one flooding source locks everyone else out: {}",
                                rule.text
                            ),
                            fix: "limit per source (hashlimit with --hashlimit-mode srcip, or \
                                  palisade's per-source rate)"
                                .into(),
                        });
                    }
                    // Only meaningful when the collection knows the interfaces.
                    if ifaces.is_empty() {
                        continue;
                    }
                    for m in [&rule.in_iface, &rule.out_iface].into_iter().flatten() {
                        let exists = if m.wildcard {
                            ifaces.iter().any(|i| i.starts_with(&m.name))
                        } else {
                            ifaces.contains(m.name.as_str())
                        };
                        if !exists && !m.negated {
                            out.push(Finding {
                                id: "host/unknown-interface",
                                severity: Severity::Low,
                                subject: at.clone(),
                                file: source.to_string(),
                                line: 0,
                                message: format!(
                                    "interface `{}{}` exists nowhere on this host, so the rule \
                                     never matches: {}",
                                    m.name,
                                    if m.wildcard { "+" } else { "" },
                                    rule.text
                                ),
                                fix: "fix the interface name, or remove the rule".into(),
                            });
                        }
                    }
                }
            }
        }
    }
    if let Some(nft) = &st.nft {
        for chain in &nft.chains {
            for rule in &chain.rules {
                let global_limit = rule.expr.iter().any(|e| e.get("limit").is_some());
                let accepts = rule.expr.iter().any(|e| e.get("accept").is_some());
                if global_limit && accepts {
                    out.push(Finding {
                        id: "host/shared-rate-limit",
                        severity: Severity::Medium,
                        subject: format!(
                            "nft {} {} {}",
                            chain.family,
                            chain.table,
                            crate::nftjson::describe(rule)
                        ),
                        file: source.to_string(),
                        line: 0,
                        message: format!(
                            "a rate limit shared by all sources decides what chain {} accepts",
                            chain.name
                        ),
                        fix: "use a per-source meter: update @set { ip saddr limit rate ... }"
                            .into(),
                    });
                }
            }
        }
    }
    out
}

/// The bridge driver's options Docker knows. Any other
/// `com.docker.network.*` key is accepted by `docker network create` and
/// then ignored: a misspelt `enable_icc` leaves containers talking freely.
const BRIDGE_OPTIONS: &[&str] = &[
    "com.docker.network.bridge.name",
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.bridge.host_binding_ipv4",
    "com.docker.network.bridge.default_bridge",
    "com.docker.network.bridge.gateway_mode_ipv4",
    "com.docker.network.bridge.gateway_mode_ipv6",
    "com.docker.network.bridge.inhibit_ipv4",
    "com.docker.network.bridge.trusted_host_interfaces",
    "com.docker.network.driver.mtu",
    "com.docker.network.container_iface_prefix",
];

/// Findings about Docker's networks: options Docker ignores, and
/// inter-container traffic left open.
pub fn docker_findings(st: &HostState, source: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for n in st.docker_networks.iter().filter(|n| n.driver == "bridge") {
        for key in n.options.keys() {
            if key.starts_with("com.docker.network.")
                && !BRIDGE_OPTIONS.contains(&key.as_str())
            {
                let near = BRIDGE_OPTIONS
                    .iter()
                    .min_by_key(|k| strsim::levenshtein(k, key))
                    .copied()
                    .unwrap_or_default();
                out.push(Finding {
                    id: "docker/ignored-network-option",
                    severity: Severity::High,
                    subject: format!("network {}", n.name),
                    file: source.to_string(),
                    line: 0,
                    message: format!(
                        "option `{key}` is not one Docker's bridge driver knows: Docker ignores it"
                    ),
                    fix: format!("did you mean `{near}`? Recreate the network with it"),
                });
            }
        }
        let icc = n
            .options
            .get("com.docker.network.bridge.enable_icc")
            .is_none_or(|v| v != "false");
        if icc {
            out.push(Finding {
                id: "docker/inter-container-open",
                severity: Severity::Medium,
                subject: format!("network {}", n.name),
                file: source.to_string(),
                line: 0,
                message:
                    "Docker lets every container on this network reach every port of \
                          every other one"
                        .into(),
                fix: "list the flows that are needed in a palisade policy (it drops the \
                      rest), or set com.docker.network.bridge.enable_icc=false"
                    .into(),
            });
        }
    }
    out
}

/// Ports a rule matches by destination (`--dport`, `--dports`), `None`
/// when it does not look at the port.
fn rule_dports(rule: &crate::iptables::Rule) -> Option<BTreeSet<u16>> {
    let mut out: Option<BTreeSet<u16>> = None;
    for m in &rule.modules {
        for o in &m.options {
            if !matches!(o.name.as_str(), "dport" | "dports" | "destination-port") {
                continue;
            }
            if o.negated {
                return None;
            }
            let set = out.get_or_insert_with(BTreeSet::new);
            for v in o.values.iter().flat_map(|v| v.split(',')) {
                match v.split_once(':') {
                    Some((a, b)) => {
                        let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
                            return None;
                        };
                        // Wide ranges are not worth listing port by port.
                        if b.saturating_sub(a) > 4096 {
                            return None;
                        }
                        set.extend(a..=b);
                    }
                    None => {
                        set.insert(v.parse().ok()?);
                    }
                }
            }
        }
    }
    out
}

/// Whether an earlier rule `a` catches every packet a later rule `b` would,
/// so `b` never decides anything. Conservative: only plain matches
/// (protocol, addresses, interfaces, destination ports, comments) count; a
/// rule with any other module never shadows.
fn shadows(a: &crate::iptables::Rule, b: &crate::iptables::Rule) -> bool {
    let plain =
        |r: &crate::iptables::Rule| {
            r.modules.iter().all(|m| {
                matches!(m.name.as_str(), "tcp" | "udp" | "multiport" | "comment")
            }) && r.modules.iter().flat_map(|m| m.options.iter()).all(|o| {
                matches!(
                    o.name.as_str(),
                    "dport" | "dports" | "destination-port" | "comment"
                )
            }) && r.fragment.is_none()
        };
    if !plain(a) || !matches!(a.target(), Some("ACCEPT" | "DROP" | "REJECT")) {
        return false;
    }
    if let Some((neg, p)) = &a.protocol {
        if *neg || b.protocol.as_ref() != Some(&(false, p.clone())) {
            return false;
        }
    }
    let covers_addr =
        |x: &Option<crate::iptables::AddrMatch>,
         y: &Option<crate::iptables::AddrMatch>| match (x, y) {
            (None, _) => true,
            (Some(x), Some(y)) => !x.negated && !y.negated && x.net.contains(&y.net),
            (Some(_), None) => false,
        };
    let covers_if =
        |x: &Option<crate::iptables::IfaceMatch>,
         y: &Option<crate::iptables::IfaceMatch>| match (x, y) {
            (None, _) => true,
            (Some(x), Some(y)) => x == y,
            (Some(_), None) => false,
        };
    if !covers_addr(&a.src, &b.src)
        || !covers_addr(&a.dst, &b.dst)
        || !covers_if(&a.in_iface, &b.in_iface)
        || !covers_if(&a.out_iface, &b.out_iface)
    {
        return false;
    }
    match (rule_dports(a), rule_dports(b)) {
        (None, _) => a
            .modules
            .iter()
            .all(|m| m.options.iter().all(|o| o.name == "comment")),
        (Some(pa), Some(pb)) => pb.is_subset(&pa),
        (Some(_), None) => false,
    }
}

/// Findings from the rules' structure: rules an earlier rule shadows, and
/// ports a firewall allows from loopback only while Docker publishes them
/// on every address.
pub fn structure_findings(st: &HostState, source: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (family, dump) in [("iptables", &st.v4), ("ip6tables", &st.v6)] {
        for (table, t) in &dump.tables {
            for chain in &t.chains {
                for (j, b) in chain.rules.iter().enumerate() {
                    let Some(a) = chain.rules[..j].iter().find(|a| shadows(a, b)) else {
                        continue;
                    };
                    out.push(Finding {
                        id: "host/shadowed-rule",
                        severity: Severity::Medium,
                        subject: format!("{family} {table} {}:{}", chain.name, b.line),
                        file: source.to_string(),
                        line: b.line,
                        message: format!(
                            "never decides anything: line {} (`{}`) catches every packet first: {}",
                            a.line, a.text, b.text
                        ),
                        fix: "move the rule above the one that shadows it, or remove it".into(),
                    });
                }
            }
        }
        // Allowed from loopback only on INPUT, DNATed from everywhere.
        let dnat_ports: BTreeSet<u16> = dump
            .tables
            .get("nat")
            .into_iter()
            .flat_map(|t| t.chains.iter())
            .flat_map(|c| c.rules.iter())
            .filter(|r| r.target() == Some("DNAT"))
            .filter(|r| {
                r.dst
                    .as_ref()
                    .is_none_or(|d| !d.net.addr().is_loopback() || d.negated)
            })
            .filter_map(rule_dports)
            .flatten()
            .collect();
        let filter = dump.tables.get("filter");
        for c in filter.into_iter().flat_map(|t| t.chains.iter()) {
            for r in &c.rules {
                let loopback_only = r
                    .src
                    .as_ref()
                    .is_some_and(|s| !s.negated && s.net.addr().is_loopback());
                if !loopback_only || r.target() != Some("ACCEPT") {
                    continue;
                }
                for port in rule_dports(r).unwrap_or_default() {
                    if dnat_ports.contains(&port) {
                        out.push(Finding {
                            id: "host/loopback-port-published",
                            severity: Severity::High,
                            subject: format!("{port}/tcp"),
                            file: source.to_string(),
                            line: r.line,
                            message: format!(
                                "meant for loopback (`{}`), but Docker publishes port {port} on \
                                 every address, and its DNAT skips this rule",
                                r.text
                            ),
                            fix: format!(
                                "publish it as 127.0.0.1:{port}:... in the compose file, or \
                                 expose it as \"loopback\" in a palisade policy"
                            ),
                        });
                    }
                }
            }
        }
    }
    out
}
