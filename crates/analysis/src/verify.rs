//! A host's real state against a policy's intent.
//!
//! Every promise of the policy, and every connection it does not allow
//! among the ports the host actually has, becomes a concrete packet: from a
//! stranger and from an address of each group to each public address and
//! port, from each container to each other container's ports and to the
//! internet. Each is followed through the packet-path model of the live
//! rules (iptables and nftables together, Docker's and UFW's included).
//! Where the outcome differs from the intent, the packet is the
//! counterexample and the deciding rule is named.

use std::net::IpAddr;

use ipnet::IpNet;
use palisade_compile::Resolution;
use palisade_policy::{Exposure, Policy, Proto};
use serde::Serialize;

use crate::audit::candidate_ports;
use crate::eval::{evaluate, Fate, Firewall, Packet, L4};
use crate::host::HostState;

/// One expectation that the host does not meet.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// What the policy says, in words.
    pub intent: String,
    pub expected_open: bool,
    pub fate: Fate,
    /// The counterexample.
    pub packet: Packet,
    /// The rule that decided, as `table chain:line text`.
    pub decided_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub checked: usize,
    pub differences: Vec<Difference>,
}

fn l4(p: Proto) -> L4 {
    match p {
        Proto::Tcp => L4::Tcp,
        Proto::Udp => L4::Udp,
    }
}

/// A host address inside `net` (its first usable one).
fn inside(net: &IpNet) -> IpAddr {
    if net.prefix_len() == net.max_prefix_len() {
        return net.addr();
    }
    net.hosts().next().unwrap_or(net.addr())
}

/// An address of the family in no group of the policy and not local.
fn stranger(policy: &Policy, st: &HostState, v6: bool) -> IpAddr {
    let candidates: &[&str] = if v6 {
        &[
            "2001:db8:ffff::254",
            "2001:db8:eeee::254",
            "2001:db8:dddd::254",
        ]
    } else {
        &[
            "203.0.113.254",
            "192.0.2.254",
            "198.51.100.254",
            "203.0.113.222",
        ]
    };
    candidates
        .iter()
        .map(|c| c.parse::<IpAddr>().expect("constant"))
        .find(|a| {
            !st.info.is_local(a)
                && !policy
                    .groups
                    .values()
                    .flat_map(|g| g.nets.iter())
                    .any(|n| n.contains(a))
        })
        .unwrap_or_else(|| candidates[0].parse().expect("constant"))
}

pub fn verify(policy: &Policy, res: &Resolution, st: &HostState) -> Verification {
    let mut v = Verification {
        checked: 0,
        differences: Vec::new(),
    };
    let fw4 = Firewall {
        iptables: &st.v4,
        nft: st.nft.as_ref(),
    };
    let fw6 = Firewall {
        iptables: &st.v6,
        nft: st.nft.as_ref(),
    };
    let mut check = |intent: String, expected_open: bool, pkt: Packet| {
        let fw = if pkt.dst.is_ipv6() { &fw6 } else { &fw4 };
        let d = evaluate(fw, &st.info, &pkt);
        v.checked += 1;
        let holds = match d.fate {
            Fate::Pass => expected_open,
            Fate::Blocked => !expected_open,
            Fate::MayPass => false,
        };
        if !holds {
            let decided_by = d.deciding_rule();
            v.differences.push(Difference {
                intent,
                expected_open,
                fate: d.fate,
                packet: d.packet,
                decided_by,
            });
        }
    };

    // From outside to the host's public addresses.
    let ssh_port = policy.ssh.as_ref().map(|s| s.port);
    let mut ports: Vec<(L4, u16)> = candidate_ports(st);
    for s in policy.services.values() {
        for p in &s.ports {
            if let Some(h) = p.publish {
                ports.push((l4(p.proto), h));
            }
        }
    }
    if let Some(p) = ssh_port {
        ports.push((L4::Tcp, p));
    }
    ports.sort();
    ports.dedup();
    for addr in &st.public_addrs {
        let v6 = addr.is_ipv6();
        let iif = st
            .iface_addrs
            .iter()
            .find(|(_, a)| a == addr)
            .map(|(i, _)| i.clone());
        let mut sources: Vec<(String, IpAddr)> =
            vec![("a stranger".into(), stranger(policy, st, v6))];
        for g in policy.groups.values() {
            if let Some(net) = g.nets.iter().find(|n| n.addr().is_ipv6() == v6) {
                sources.push((format!("group {}", g.name), inside(net)));
            }
        }
        for &(proto, port) in &ports {
            let (what, exposure) = intent_for(policy, proto, port);
            for (who, src) in &sources {
                let open = match &exposure {
                    Exposure::Public => true,
                    Exposure::Groups(gs) => gs
                        .iter()
                        .any(|g| policy.groups[g].nets.iter().any(|n| n.contains(src))),
                    Exposure::Internal | Exposure::Loopback => false,
                };
                let pkt = Packet::new(*src, *addr, proto, port, iif.clone());
                check(format!("{what}, from {who}"), open, pkt);
            }
        }
    }

    // Between containers, and from containers to the internet (IPv4, the
    // first address of each service).
    let first = |name: &str| -> Option<IpAddr> {
        res.services
            .get(name)
            .and_then(|r| r.v4.first())
            .map(|a| IpAddr::V4(*a))
    };
    for a in policy.services.values() {
        let Some(src) = first(&a.name) else {
            continue;
        };
        let iif = st.info.route(&src).map(str::to_string);
        for b in policy.services.values() {
            if a.name == b.name {
                continue;
            }
            let Some(dst) = first(&b.name) else {
                continue;
            };
            for p in &b.ports {
                let open = policy.flows.iter().any(|f| {
                    f.from == a.name
                        && f.to == b.name
                        && f.port == p.port
                        && f.proto == p.proto
                });
                let pkt = Packet::new(src, dst, l4(p.proto), p.port, iif.clone());
                let word = if open { "may" } else { "may not" };
                check(
                    format!("{} {word} reach {}:{}/{}", a.name, b.name, p.port, p.proto),
                    open,
                    pkt,
                );
            }
        }
        let internet = stranger(policy, st, false);
        let mut egress_ports: Vec<(Proto, u16)> = a
            .egress
            .iter()
            .filter(|e| e.to.is_empty() || e.to.iter().any(|n| n.contains(&internet)))
            .flat_map(|e| e.ports.iter().map(move |p| (e.proto, *p)))
            .collect();
        egress_ports.sort();
        egress_ports.dedup();
        let unlisted = (1..=u16::MAX)
            .rev()
            .find(|p| !egress_ports.contains(&(Proto::Tcp, *p)))
            .unwrap_or(1);
        let mut probes: Vec<(Proto, u16, bool)> =
            egress_ports.iter().map(|(pr, p)| (*pr, *p, true)).collect();
        probes.push((Proto::Tcp, unlisted, false));
        for (proto, port, open) in probes {
            let pkt = Packet::new(src, internet, l4(proto), port, iif.clone());
            let word = if open { "may" } else { "may not" };
            check(
                format!("{} {word} connect out to {port}/{proto}", a.name),
                open,
                pkt,
            );
        }
    }
    v
}

/// What the policy says about a host port from outside.
fn intent_for(policy: &Policy, proto: L4, port: u16) -> (String, Exposure) {
    if let Some(ssh) = &policy.ssh {
        if proto == L4::Tcp && port == ssh.port {
            return (format!("ssh {port}/tcp ({})", ssh.allow), ssh.allow.clone());
        }
    }
    for s in policy.services.values() {
        for p in &s.ports {
            if p.publish == Some(port) && l4(p.proto) == proto {
                return (
                    format!("{} published on {port}/{} ({})", s.name, p.proto, p.expose),
                    p.expose.clone(),
                );
            }
        }
    }
    let name = match proto {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
    };
    (
        format!("host port {port}/{name} (not in the policy)"),
        Exposure::Internal,
    )
}
