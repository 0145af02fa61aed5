//! The compiler checks its own output: every promise of the policy is
//! traced through the compiled ruleset, and so is every connection the
//! policy does not allow. A disagreement is a compiler bug, never a user
//! error, and stops the ruleset from being used.

use std::net::IpAddr;

use ipnet::IpNet;
use palisade_policy::{Exposure, Policy, Proto};

use crate::ir::Ruleset;
use crate::trace::{trace, Endpoint, Query};

/// One expectation that the ruleset does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub query: String,
    pub expected: bool,
    pub decided_by: String,
}

/// Traces every promised and a sample of forbidden connections.
pub fn selfcheck(policy: &Policy, rs: &Ruleset) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut expect = |q: Query, want: bool| {
        let t = trace(policy, rs, &q);
        if t.accepted != want {
            out.push(Mismatch {
                query: format!("{} -> {} {}/{}", q.src, q.dst, q.port, q.proto),
                expected: want,
                decided_by: t.decided_by,
            });
        }
    };
    let q = |src: Endpoint, dst: Endpoint, port, proto, ipv6| Query {
        src,
        dst,
        port,
        proto,
        ipv6,
    };

    // Container to container: every listed flow open; for each port, the
    // first few services without a flow to it closed (all pairs of a large
    // policy would be quadratic and prove no more).
    for f in &policy.flows {
        for ipv6 in [false, true] {
            let src = Endpoint::Service(f.from.clone());
            let dst = Endpoint::Service(f.to.clone());
            expect(q(src, dst, f.port, f.proto, ipv6), true);
        }
    }
    for b in policy.services.values() {
        for port in &b.ports {
            let strangers = policy
                .services
                .keys()
                .filter(|a| **a != b.name)
                .filter(|a| {
                    !policy.flows.iter().any(|f| {
                        f.from == **a
                            && f.to == b.name
                            && f.port == port.port
                            && f.proto == port.proto
                    })
                })
                .take(3);
            for a in strangers {
                for ipv6 in [false, true] {
                    let src = Endpoint::Service(a.clone());
                    let dst = Endpoint::Service(b.name.clone());
                    expect(q(src, dst, port.port, port.proto, ipv6), false);
                }
            }
        }
    }

    // Published ports from outside: by exposure, both families; never by
    // routing to the container directly.
    let outsiders = [stranger(policy, false), stranger(policy, true)];
    for s in policy.services.values() {
        for port in &s.ports {
            let Some(host_port) = port.publish else {
                continue;
            };
            for addr in outsiders.iter().flatten() {
                let open = port.expose == Exposure::Public;
                expect(
                    q(
                        Endpoint::Addr(*addr),
                        Endpoint::Host,
                        host_port,
                        port.proto,
                        false,
                    ),
                    open,
                );
                expect(
                    q(
                        Endpoint::Addr(*addr),
                        Endpoint::Service(s.name.clone()),
                        port.port,
                        port.proto,
                        false,
                    ),
                    false,
                );
            }
            if let Exposure::Groups(groups) = &port.expose {
                for g in groups {
                    for net in samples(&policy.groups[g].nets) {
                        expect(
                            q(
                                Endpoint::Addr(net.addr()),
                                Endpoint::Host,
                                host_port,
                                port.proto,
                                false,
                            ),
                            true,
                        );
                    }
                }
            }
            if port.expose == Exposure::Loopback {
                expect(
                    q(
                        Endpoint::Loopback,
                        Endpoint::Host,
                        host_port,
                        port.proto,
                        false,
                    ),
                    true,
                );
            }
        }
    }

    // SSH: the allowed groups in, strangers out.
    if let Some(ssh) = &policy.ssh {
        for addr in outsiders.iter().flatten() {
            let open = ssh.allow == Exposure::Public;
            expect(
                q(
                    Endpoint::Addr(*addr),
                    Endpoint::Host,
                    ssh.port,
                    Proto::Tcp,
                    false,
                ),
                open,
            );
        }
        if let Exposure::Groups(groups) = &ssh.allow {
            for g in groups {
                for net in samples(&policy.groups[g].nets) {
                    expect(
                        q(
                            Endpoint::Addr(net.addr()),
                            Endpoint::Host,
                            ssh.port,
                            Proto::Tcp,
                            false,
                        ),
                        true,
                    );
                }
            }
        }
    }

    // Container egress: listed ports out, an unlisted one not.
    let internet = [
        "203.0.113.1".parse::<IpAddr>().expect("constant"),
        "2001:db8:113::1".parse().expect("constant"),
    ];
    for s in policy.services.values() {
        for e in &s.egress {
            for port in &e.ports {
                for addr in internet {
                    let inside =
                        e.to.is_empty() || e.to.iter().any(|n| n.contains(&addr));
                    if inside {
                        let src = Endpoint::Service(s.name.clone());
                        expect(q(src, Endpoint::Addr(addr), *port, e.proto, false), true);
                    }
                }
            }
        }
        let unlisted = (1..=u16::MAX).rev().find(|p| {
            !s.egress
                .iter()
                .any(|e| e.ports.contains(p) && e.proto == Proto::Tcp)
        });
        if let Some(port) = unlisted {
            for addr in internet {
                let src = Endpoint::Service(s.name.clone());
                expect(q(src, Endpoint::Addr(addr), port, Proto::Tcp, false), false);
            }
        }
    }
    out
}

/// A few members of a group, whatever its size: the first and last
/// network of each family. Checking all of a 100,000-network group against
/// every port would take minutes and prove nothing more.
fn samples(nets: &[IpNet]) -> Vec<&IpNet> {
    let mut out: Vec<&IpNet> = Vec::new();
    for v6 in [false, true] {
        let fam: Vec<&IpNet> = nets.iter().filter(|n| n.addr().is_ipv6() == v6).collect();
        out.extend(fam.first().copied());
        if fam.len() > 1 {
            out.extend(fam.last().copied());
        }
    }
    out
}

/// An address of the given family in no group of the policy.
fn stranger(policy: &Policy, v6: bool) -> Option<IpAddr> {
    let candidates: &[&str] = if v6 {
        &["2001:db8:ffff::99", "2001:db8:eeee::99", "2001:db8::99"]
    } else {
        &["203.0.113.254", "192.0.2.254", "198.51.100.254"]
    };
    candidates
        .iter()
        .map(|c| c.parse::<IpAddr>().expect("constant"))
        .find(|a| {
            !policy
                .groups
                .values()
                .flat_map(|g| g.nets.iter())
                .any(|n: &IpNet| n.contains(a))
        })
}
