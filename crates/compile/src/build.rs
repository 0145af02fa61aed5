//! Policy to ruleset: the semantics of every policy statement, in one place.
//!
//! The table has four base chains. `prerouting` (raw priority) drops banned
//! sources and martian loopback traffic before conntrack. `input`, `forward`
//! and, when the policy filters host egress, `output` run at priority -10,
//! before Docker's and UFW's iptables-nft chains: their drop policy is final,
//! and what they accept still meets Docker's own chains afterwards.
//!
//! Published ports are matched on the port the client used (`ct original
//! proto-dst`) together with `ct status dnat`, so neither Docker's DNAT nor
//! routing straight to a container address gets around an exposure. The
//! same exposure is also allowed on `input`, where IPv6 clients arrive when
//! Docker's userland proxy answers them.

use std::collections::BTreeMap;

use ipnet::IpNet;
use palisade_policy::{Exposure, Policy, Proto, RateLimit};

use crate::ir::*;
use crate::resolve::Resolution;

/// ICMPv6 that IPv6 cannot work without (neighbour and router discovery,
/// path MTU, errors). Accepted on input whatever the policy says.
const ICMPV6_ESSENTIAL: &[&str] = &[
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-query",
];

const ICMP_ESSENTIAL: &[&str] = &[
    "destination-unreachable",
    "time-exceeded",
    "parameter-problem",
];

/// Compiles `policy` with the addresses in `res`.
pub fn compile(policy: &Policy, res: &Resolution) -> Ruleset {
    let mut b = Builder {
        policy,
        sets: Vec::new(),
        chains: Vec::new(),
    };
    b.sets(res);
    b.prerouting();
    b.input();
    b.forward();
    if policy.host.egress.is_some() {
        b.output();
    }
    Ruleset::new(b.sets, b.chains)
}

pub fn group_set(name: &str, f: Family) -> String {
    format!("group{}_{name}", f.suffix())
}

pub fn service_set(name: &str, f: Family) -> String {
    format!("svc{}_{name}", f.suffix())
}

pub const BRIDGES: &str = "bridges";

pub fn ban_set(f: Family) -> String {
    format!("ban{}", f.suffix())
}

struct Builder<'p> {
    policy: &'p Policy,
    sets: Vec<Set>,
    chains: Vec<Chain>,
}

fn addr_type(f: Family) -> SetType {
    match f {
        Family::V4 => SetType::Ipv4Addr,
        Family::V6 => SetType::Ipv6Addr,
    }
}

fn plain_set(name: String, role: SetRole, ty: SetType, comment: String) -> Set {
    Set {
        name,
        role,
        ty,
        interval: false,
        dynamic: false,
        timeout: None,
        timeouts: false,
        size: None,
        elements: Vec::new(),
        comment,
    }
}

fn rule(id: impl Into<String>, matches: Vec<Match>, action: Action) -> Rule {
    Rule {
        id: id.into(),
        matches,
        action,
    }
}

fn ct(states: &[CtState]) -> Match {
    Match::CtState(states.to_vec())
}

fn names(list: &[String]) -> Ifaces {
    Ifaces::Names(list.to_vec())
}

impl Builder<'_> {
    fn sets(&mut self, res: &Resolution) {
        for f in Family::BOTH {
            let mut s = plain_set(
                ban_set(f),
                SetRole::Ban,
                addr_type(f),
                "banned sources, dropped before conntrack".into(),
            );
            s.timeouts = true;
            self.sets.push(s);
        }
        for (name, g) in &self.policy.groups {
            for f in Family::BOTH {
                let nets: Vec<IpNet> =
                    g.nets.iter().filter(|n| f.contains(n)).copied().collect();
                let mut s = plain_set(
                    group_set(name, f),
                    SetRole::Group(name.clone()),
                    addr_type(f),
                    format!("group {name}"),
                );
                // Group nets are already aggregated. A group of single
                // addresses is a plain hash set, which nft loads and looks up
                // faster than an interval set.
                s.interval = nets.iter().any(|n| n.prefix_len() != n.max_prefix_len());
                s.elements = nets
                    .iter()
                    .map(|n| match n.prefix_len() == n.max_prefix_len() {
                        true => n.addr().to_string(),
                        false => n.to_string(),
                    })
                    .collect();
                self.sets.push(s);
            }
        }
        for name in self.policy.services.keys() {
            let r = res.services.get(name);
            for f in Family::BOTH {
                let mut s = plain_set(
                    service_set(name, f),
                    SetRole::Service(name.clone()),
                    addr_type(f),
                    format!("containers of service {name}"),
                );
                let mut elements: Vec<String> = match (f, r) {
                    (Family::V4, Some(r)) => r.v4.iter().map(|a| a.to_string()).collect(),
                    (Family::V6, Some(r)) => r.v6.iter().map(|a| a.to_string()).collect(),
                    _ => Vec::new(),
                };
                elements.sort();
                elements.dedup();
                s.elements = elements;
                self.sets.push(s);
            }
        }
        let mut bridges = plain_set(
            BRIDGES.into(),
            SetRole::Bridges,
            SetType::Ifname,
            "Docker bridge interfaces".into(),
        );
        bridges.elements = res.bridges.clone();
        bridges.elements.sort();
        bridges.elements.dedup();
        self.sets.push(bridges);
    }

    /// A per-source meter set, and the rate match that uses it.
    fn meter(&mut self, name: &str, f: Family, limit: RateLimit) -> Match {
        let set = format!("meter{}_{name}", f.suffix());
        if self.set_exists(&set) {
            return Match::RateOver {
                set,
                family: f,
                limit,
            };
        }
        let mut s = plain_set(
            set.clone(),
            SetRole::Meter,
            addr_type(f),
            format!("per-source rate state for {name}"),
        );
        s.dynamic = true;
        s.timeout = Some(limit.rate.per.seconds().max(60));
        s.size = Some(65535);
        self.sets.push(s);
        Match::RateOver {
            set,
            family: f,
            limit,
        }
    }

    fn set_exists(&self, name: &str) -> bool {
        self.sets.iter().any(|s| s.name == name)
    }

    /// A chain that logs (rate-limited) and drops; returns the verdict that
    /// jumps to it, or a plain drop when logging is off.
    fn drop_to(&mut self, reason: &str) -> Action {
        let logging = &self.policy.logging;
        if !logging.drops {
            return Action::Drop;
        }
        let name = format!("drop_{}", reason.replace('-', "_"));
        if self.chains.iter().all(|c| c.name != name) {
            let prefix = format!("{}:{} ", logging.prefix, reason);
            let burst = logging.rate.count.clamp(1, 5);
            self.chains.push(Chain {
                name: name.clone(),
                base: None,
                rules: vec![
                    rule(
                        format!("log-{reason}"),
                        vec![Match::Limit {
                            rate: logging.rate,
                            burst,
                        }],
                        Action::Log(prefix),
                    ),
                    rule(reason.to_string(), vec![], Action::Drop),
                ],
            });
        }
        Action::Jump(name)
    }

    /// Source matches for an exposure: one list of matches per rule to emit.
    /// Empty for exposures no outside source satisfies.
    fn sources(&self, expose: &Exposure, f: Family) -> Vec<Vec<Match>> {
        match expose {
            Exposure::Public => vec![vec![Match::Family(f)]],
            Exposure::Groups(groups) => groups
                .iter()
                .filter(|g| {
                    // A group without addresses of this family matches
                    // nothing; leave its rule out.
                    self.policy.groups[g.as_str()].has_family(f == Family::V6)
                })
                .map(|g| {
                    vec![Match::Saddr {
                        family: f,
                        addrs: Addrs::Set(group_set(g, f)),
                    }]
                })
                .collect(),
            Exposure::Internal | Exposure::Loopback => Vec::new(),
        }
    }

    /// Rules for new connections from `expose`'s sources: an optional
    /// per-source limit (jump to a logging drop), then accept.
    #[allow(clippy::too_many_arguments)]
    fn exposed(
        &mut self,
        rules: &mut Vec<Rule>,
        id: &str,
        f: Family,
        expose: &Exposure,
        base: Vec<Match>,
        rate: Option<RateLimit>,
        meter: &str,
    ) {
        for source in self.sources(expose, f) {
            let mut m = source;
            m.extend(base.iter().cloned());
            if let Some(limit) = rate {
                let over = self.meter(meter, f, limit);
                let mut limited = m.clone();
                limited.push(over);
                let action = self.drop_to(&format!("{id}-rate"));
                rules.push(rule(format!("{id}-rate"), limited, action));
            }
            rules.push(rule(id, m, Action::Accept));
        }
    }

    fn prerouting(&mut self) {
        let mut rules = Vec::new();
        for f in Family::BOTH {
            rules.push(rule(
                "ban",
                vec![Match::Saddr {
                    family: f,
                    addrs: Addrs::Set(ban_set(f)),
                }],
                Action::Drop,
            ));
        }
        self.chains.push(Chain {
            name: "prerouting".into(),
            base: Some(BaseChain {
                hook: Hook::Prerouting,
                priority: RAW_PRIORITY,
                policy_accept: true,
            }),
            rules,
        });
    }

    fn input(&mut self) {
        let p = self.policy;
        let mut rules = vec![
            rule("loopback", vec![Match::IifLo], Action::Accept),
            // Most packets belong to an established connection: one rule
            // and they are through.
            rule(
                "established",
                vec![ct(&[CtState::Established, CtState::Related])],
                Action::Accept,
            ),
            rule("invalid", vec![ct(&[CtState::Invalid])], Action::Drop),
        ];
        // New connections from outside addressed to the loopback range:
        // with route_localnet (which Docker may set) they would reach
        // services bound to 127.0.0.1. Here on input, not in prerouting:
        // forwarded traffic never pays for the check (a DNATed one is
        // judged by its original port in forward).
        let lo_nets: [(Family, IpNet); 2] = [
            (Family::V4, "127.0.0.0/8".parse().expect("constant")),
            (Family::V6, "::1/128".parse().expect("constant")),
        ];
        for (f, net) in lo_nets {
            rules.push(rule(
                "martian-loopback",
                vec![
                    Match::Daddr {
                        family: f,
                        addrs: Addrs::Nets(vec![net]),
                    },
                    Match::Iifname {
                        ifaces: Ifaces::Names(vec!["lo".into()]),
                        negate: true,
                    },
                ],
                Action::Drop,
            ));
        }
        rules.extend([
            rule(
                "icmp-essential",
                vec![Match::Icmp {
                    family: Family::V4,
                    types: ICMP_ESSENTIAL.iter().map(|s| s.to_string()).collect(),
                }],
                Action::Accept,
            ),
            rule(
                "icmpv6-essential",
                vec![Match::Icmp {
                    family: Family::V6,
                    types: ICMPV6_ESSENTIAL.iter().map(|s| s.to_string()).collect(),
                }],
                Action::Accept,
            ),
        ]);
        if p.icmp.echo {
            for f in Family::BOTH {
                let echo = vec![Match::Icmp {
                    family: f,
                    types: vec!["echo-request".into()],
                }];
                self.exposed(
                    &mut rules,
                    "ping",
                    f,
                    &Exposure::Public,
                    echo,
                    p.icmp.rate,
                    "ping",
                );
            }
        }
        if let Some(ssh) = &p.ssh {
            for f in Family::BOTH {
                let base = vec![
                    Match::L4 {
                        proto: Proto::Tcp,
                        dports: vec![ssh.port],
                    },
                    ct(&[CtState::New]),
                ];
                self.exposed(&mut rules, "ssh", f, &ssh.allow, base, ssh.rate, "ssh");
            }
        }
        // Published ports reached without DNAT: Docker's userland proxy
        // listens on the host (IPv6 clients when Docker has no ip6tables).
        for (svc, port) in self.published() {
            let host_port = port.publish.expect("published");
            let id = format!("publish-{svc}-{host_port}-{}", port.proto);
            for f in Family::BOTH {
                let base = vec![
                    Match::L4 {
                        proto: port.proto,
                        dports: vec![host_port],
                    },
                    ct(&[CtState::New]),
                ];
                let meter = format!("{svc}_{host_port}_{}", port.proto);
                self.exposed(&mut rules, &id, f, &port.expose, base, port.rate, &meter);
            }
        }
        let action = self.drop_to("input");
        rules.push(rule("input-default", vec![], action));
        self.chains.push(Chain {
            name: "input".into(),
            base: Some(BaseChain {
                hook: Hook::Input,
                priority: FILTER_PRIORITY,
                policy_accept: false,
            }),
            rules,
        });
    }

    fn published(&self) -> Vec<(String, palisade_policy::ServicePort)> {
        let mut out = Vec::new();
        for (name, s) in &self.policy.services {
            for port in &s.ports {
                if port.publish.is_some() {
                    out.push((name.clone(), port.clone()));
                }
            }
        }
        out
    }

    fn forward(&mut self) {
        let p = self.policy;
        let public = names(&p.host.public_interfaces);
        let mut rules = vec![
            // Most packets belong to an established connection: one rule
            // and they are through.
            rule(
                "established",
                vec![ct(&[CtState::Established, CtState::Related])],
                Action::Accept,
            ),
            rule("invalid", vec![ct(&[CtState::Invalid])], Action::Drop),
            // Neighbour discovery between containers on one bridge passes
            // the forward hook (Docker enables br_netfilter); without it no
            // IPv6 flow between them works. It never leaves the link.
            rule(
                "icmpv6-neighbour",
                vec![Match::Icmp {
                    family: Family::V6,
                    types: ["nd-neighbor-solicit", "nd-neighbor-advert"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                }],
                Action::Accept,
            ),
        ];
        // Published ports, DNAT path: the client's original port, the
        // container it was translated to, and the container port.
        for (svc, port) in self.published() {
            let host_port = port.publish.expect("published");
            let id = format!("publish-{svc}-{host_port}-{}", port.proto);
            for f in Family::BOTH {
                // The transport match comes first: nft lists `ct original
                // proto-dst` without its protocol dependency when one is
                // already there, and only then can it read its own listing
                // back (the rollback point is such a listing).
                let base = vec![
                    Match::Daddr {
                        family: f,
                        addrs: Addrs::Set(service_set(&svc, f)),
                    },
                    Match::L4 {
                        proto: port.proto,
                        dports: vec![port.port],
                    },
                    Match::CtDnat,
                    Match::CtOrigDport {
                        proto: port.proto,
                        port: host_port,
                    },
                    ct(&[CtState::New]),
                ];
                let meter = format!("{svc}_{host_port}_{}", port.proto);
                self.exposed(&mut rules, &id, f, &port.expose, base, port.rate, &meter);
            }
        }
        for flow in &p.flows {
            let id = format!(
                "flow-{}-{}-{}-{}",
                flow.from, flow.to, flow.port, flow.proto
            );
            for f in Family::BOTH {
                rules.push(rule(
                    id.clone(),
                    vec![
                        Match::Saddr {
                            family: f,
                            addrs: Addrs::Set(service_set(&flow.from, f)),
                        },
                        Match::Daddr {
                            family: f,
                            addrs: Addrs::Set(service_set(&flow.to, f)),
                        },
                        Match::L4 {
                            proto: flow.proto,
                            dports: vec![flow.port],
                        },
                        ct(&[CtState::New]),
                    ],
                    Action::Accept,
                ));
            }
        }
        // Container egress leaves through a public interface only, so an
        // egress rule never opens a path to another container.
        for (name, s) in &p.services {
            for (proto, ports, to, label) in merge_egress(&s.egress) {
                let id = format!("egress-{name}-{label}");
                for f in Family::BOTH {
                    let nets: Vec<IpNet> =
                        to.iter().filter(|n| f.contains(n)).copied().collect();
                    if !to.is_empty() && nets.is_empty() {
                        continue;
                    }
                    let mut m = vec![
                        Match::Saddr {
                            family: f,
                            addrs: Addrs::Set(service_set(name, f)),
                        },
                        Match::Oifname {
                            ifaces: public.clone(),
                            negate: false,
                        },
                    ];
                    if !nets.is_empty() {
                        m.push(Match::Daddr {
                            family: f,
                            addrs: Addrs::Nets(nets),
                        });
                    }
                    m.push(Match::L4 {
                        proto,
                        dports: ports.clone(),
                    });
                    m.push(ct(&[CtState::New]));
                    rules.push(rule(id.clone(), m, Action::Accept));
                }
            }
        }
        let action = self.drop_to("forward");
        rules.push(rule("forward-default", vec![], action));
        self.chains.push(Chain {
            name: "forward".into(),
            base: Some(BaseChain {
                hook: Hook::Forward,
                priority: FILTER_PRIORITY,
                policy_accept: false,
            }),
            rules,
        });
    }

    fn output(&mut self) {
        let p = self.policy;
        let mut rules = vec![
            rule("loopback", vec![Match::OifLo], Action::Accept),
            // Most packets belong to an established connection: one rule
            // and they are through.
            rule(
                "established",
                vec![ct(&[CtState::Established, CtState::Related])],
                Action::Accept,
            ),
            rule("invalid", vec![ct(&[CtState::Invalid])], Action::Drop),
            // The host talks to its containers: Docker's userland proxy,
            // health checks.
            rule(
                "to-containers",
                vec![Match::Oifname {
                    ifaces: Ifaces::Set(BRIDGES.into()),
                    negate: false,
                }],
                Action::Accept,
            ),
            rule(
                "icmp",
                vec![Match::Icmp {
                    family: Family::V4,
                    types: [ICMP_ESSENTIAL, &["echo-request"]]
                        .concat()
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                }],
                Action::Accept,
            ),
            rule(
                "icmpv6",
                vec![Match::Icmp {
                    family: Family::V6,
                    types: [ICMPV6_ESSENTIAL, &["echo-request", "mld-listener-report"]]
                        .concat()
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                }],
                Action::Accept,
            ),
        ];
        let egress = p.host.egress.as_deref().unwrap_or_default();
        for (proto, ports, to, label) in merge_egress(egress) {
            let id = format!("host-egress-{label}");
            for f in Family::BOTH {
                let nets: Vec<IpNet> =
                    to.iter().filter(|n| f.contains(n)).copied().collect();
                if !to.is_empty() && nets.is_empty() {
                    continue;
                }
                let mut m = Vec::new();
                if nets.is_empty() {
                    // Keep the rule per family for IPv4/IPv6 parity in traces.
                    m.push(Match::Daddr {
                        family: f,
                        addrs: Addrs::Nets(vec![any(f)]),
                    });
                } else {
                    m.push(Match::Daddr {
                        family: f,
                        addrs: Addrs::Nets(nets),
                    });
                }
                m.push(Match::L4 {
                    proto,
                    dports: ports.clone(),
                });
                m.push(ct(&[CtState::New]));
                rules.push(rule(id.clone(), m, Action::Accept));
            }
        }
        let action = self.drop_to("output");
        rules.push(rule("output-default", vec![], action));
        self.chains.push(Chain {
            name: "output".into(),
            base: Some(BaseChain {
                hook: Hook::Output,
                priority: FILTER_PRIORITY,
                policy_accept: false,
            }),
            rules,
        });
    }
}

fn any(f: Family) -> IpNet {
    match f {
        Family::V4 => "0.0.0.0/0".parse().expect("constant"),
        Family::V6 => "::/0".parse().expect("constant"),
    }
}

/// Egress entries with the same protocol and destinations become one rule
/// with a port set. Returns (proto, ports, destinations, label).
fn merge_egress(
    list: &[palisade_policy::Egress],
) -> Vec<(Proto, Vec<u16>, Vec<IpNet>, String)> {
    let mut merged: BTreeMap<(Proto, Vec<IpNet>), Vec<u16>> = BTreeMap::new();
    for e in list {
        merged
            .entry((e.proto, e.to.clone()))
            .or_default()
            .extend(e.ports.iter().copied());
    }
    merged
        .into_iter()
        .map(|((proto, to), mut ports)| {
            ports.sort();
            ports.dedup();
            let shown: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            let label = format!("{}-{}", proto, shown.join("-"));
            (proto, ports, to, label)
        })
        .collect()
}
