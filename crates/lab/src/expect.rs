//! What the policy intends, as a list of probes with expected outcomes.
//!
//! Expectations are computed from the validated [`Policy`] alone, never
//! from compiled rules:
//!
//! - a published host port is open from an outside address iff the policy
//!   publishes that port and its exposure admits the address (public: all;
//!   groups: inside one of the groups' networks; loopback and internal:
//!   nobody outside). Ports the lab published by mistake (internal ports
//!   mapped on all addresses) are therefore closed;
//! - sshd follows `[ssh] allow`;
//! - loopback-only ports are open from the VPS's own 127.0.0.1 and ::1;
//! - a container reaches another container's port iff a flow lists it
//!   (over IPv4, and over IPv6 too when both have an address there);
//! - a container or the host reaches an internet port iff one of its egress
//!   rules lists the protocol, the port and (if given) the destination;
//!   unfiltered host egress (`host.egress` absent) is open everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use palisade_policy::{Egress, Exposure, Policy};

use crate::docker::Running;
use crate::report::{Check, Proto, Reach};
use crate::topo::{Place, Site, INET4, INET6, OUTSIDE, VPS};

/// A host port the lab published on the VPS.
#[derive(Debug, Clone)]
pub struct Published {
    pub host_port: u16,
    pub proto: Proto,
    pub service: String,
    pub container_port: u16,
    /// The policy's exposure; `None` when the policy does not publish this
    /// port and the lab mapped it anyway, as a careless compose file does.
    pub exposure: Option<Exposure>,
}

/// The ports a careless compose file publishes for `policy`, on all host
/// addresses: each policy-published port as host:container, then each
/// internal port at the same number. A host port already taken (by sshd
/// or an earlier mapping) is skipped, as Docker would refuse it.
pub fn careless_publish(policy: &Policy, ssh_port: u16) -> Vec<Published> {
    let mut used: BTreeSet<(u16, Proto)> = BTreeSet::new();
    used.insert((ssh_port, Proto::Tcp));
    let mut out = Vec::new();
    for svc in policy.services.values() {
        for p in &svc.ports {
            if let Some(hp) = p.publish {
                if used.insert((hp, p.proto)) {
                    out.push(Published {
                        host_port: hp,
                        proto: p.proto,
                        service: svc.name.clone(),
                        container_port: p.port,
                        exposure: Some(p.expose.clone()),
                    });
                }
            }
        }
    }
    for svc in policy.services.values() {
        for p in &svc.ports {
            if p.publish.is_none() && used.insert((p.port, p.proto)) {
                out.push(Published {
                    host_port: p.port,
                    proto: p.proto,
                    service: svc.name.clone(),
                    container_port: p.port,
                    exposure: None,
                });
            }
        }
    }
    out
}

/// A probe before it runs.
#[derive(Debug, Clone)]
pub struct Planned {
    pub check: Check,
    pub from: String,
    pub place: Place,
    pub proto: Proto,
    pub addr: SocketAddr,
    pub what: String,
    pub expected: Reach,
}

/// Everything the planner needs to know about the running lab.
pub struct Layout<'a> {
    pub policy: &'a Policy,
    /// Namespace names by role ("client", "vps", ...).
    pub ns: BTreeMap<&'static str, String>,
    pub published: &'a [Published],
    /// Service name -> its running container.
    pub containers: &'a BTreeMap<String, Running>,
    /// Ports the internet answers on.
    pub inet_tcp: &'a [u16],
    pub inet_udp: &'a [u16],
}

fn open_if(b: bool) -> Reach {
    if b {
        Reach::Open
    } else {
        Reach::Closed
    }
}

/// Whether `exp` admits a connection from `ip` outside the host.
pub fn admits(policy: &Policy, exp: &Exposure, ip: IpAddr) -> bool {
    match exp {
        Exposure::Public => true,
        Exposure::Internal | Exposure::Loopback => false,
        Exposure::Groups(names) => names.iter().any(|n| {
            policy
                .groups
                .get(n)
                .is_some_and(|g| g.nets.iter().any(|net| net.contains(&ip)))
        }),
    }
}

fn egress_allows(rules: &[Egress], proto: Proto, port: u16, to: IpAddr) -> bool {
    rules.iter().any(|e| {
        e.proto == proto
            && e.ports.contains(&port)
            && (e.to.is_empty() || e.to.iter().any(|n| n.contains(&to)))
    })
}

impl Layout<'_> {
    fn place(&self, role: &str) -> Place {
        Place::Netns(self.ns.get(role).cloned().unwrap_or_default())
    }

    /// Outside hosts to every published port and to sshd.
    pub fn outside(&self) -> Vec<Planned> {
        let mut out = Vec::new();
        let ssh = self.policy.ssh.as_ref();
        for site in OUTSIDE {
            for ip in site_ips(&site) {
                let vps_ip = if ip.is_ipv4() {
                    IpAddr::V4(VPS.v4)
                } else {
                    IpAddr::V6(VPS.v6)
                };
                for p in self.published {
                    let (expected, what) = match &p.exposure {
                        Some(exp) => (
                            open_if(admits(self.policy, exp, ip)),
                            format!("{}:{} {exp}", p.service, p.container_port),
                        ),
                        None => (
                            Reach::Closed,
                            format!(
                                "{}:{} internal, mapped anyway",
                                p.service, p.container_port
                            ),
                        ),
                    };
                    out.push(Planned {
                        check: Check::Published,
                        from: site.role.to_string(),
                        place: self.place(site.role),
                        proto: p.proto,
                        addr: SocketAddr::new(vps_ip, p.host_port),
                        what,
                        expected,
                    });
                }
                if let Some(ssh) = ssh {
                    out.push(Planned {
                        check: Check::Ssh,
                        from: site.role.to_string(),
                        place: self.place(site.role),
                        proto: Proto::Tcp,
                        addr: SocketAddr::new(vps_ip, ssh.port),
                        what: format!("sshd {}", ssh.allow),
                        expected: open_if(admits(self.policy, &ssh.allow, ip)),
                    });
                }
            }
        }
        out
    }

    /// Probes from inside the VPS: loopback ports, container flows,
    /// container and host egress.
    pub fn inside(&self) -> Vec<Planned> {
        let mut out = Vec::new();
        let vps = self.place("vps");

        // Loopback-only ports from the host itself.
        for p in self.published {
            if p.exposure != Some(Exposure::Loopback) {
                continue;
            }
            for lo in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                out.push(Planned {
                    check: Check::Loopback,
                    from: "vps".into(),
                    place: vps.clone(),
                    proto: p.proto,
                    addr: SocketAddr::new(lo, p.host_port),
                    what: format!("{}:{} loopback", p.service, p.container_port),
                    expected: Reach::Open,
                });
            }
        }

        // Every ordered pair of containers, every port of the target.
        for (from, src) in self.containers {
            for (to, dst) in self.containers {
                if from == to {
                    continue;
                }
                for ip in target_addrs(src, dst) {
                    out.extend(self.flow_probes(from, src, to, ip));
                }
            }
        }

        // Containers to the internet; IPv6 only for containers that have it.
        for (name, c) in self.containers {
            let rules = self
                .policy
                .services
                .get(name)
                .map(|s| s.egress.as_slice())
                .unwrap_or_default();
            let has_v6 = c.addrs.values().any(|(_, v6)| v6.is_some());
            let dests: &[IpAddr] = if has_v6 { &[INET4, INET6] } else { &[INET4] };
            for &to in dests {
                out.extend(self.egress_probes(
                    Check::ContainerEgress,
                    name,
                    Place::Pid(c.pid),
                    to,
                    |proto, port| egress_allows(rules, proto, port, to),
                ));
            }
        }

        // The host itself.
        for to in [INET4, INET6] {
            let rules = self.policy.host.egress.as_deref();
            out.extend(self.egress_probes(
                Check::HostEgress,
                "vps",
                vps.clone(),
                to,
                |proto, port| rules.is_none_or(|r| egress_allows(r, proto, port, to)),
            ));
        }
        out
    }

    /// `from`'s container to every port of `to`'s at `ip`.
    fn flow_probes(
        &self,
        from: &str,
        src: &Running,
        to: &str,
        ip: IpAddr,
    ) -> Vec<Planned> {
        let Some(svc) = self.policy.services.get(to) else {
            return Vec::new();
        };
        svc.ports
            .iter()
            .map(|port| {
                let proto = port.proto;
                let allowed = self.policy.flows.iter().any(|f| {
                    f.from == from
                        && f.to == to
                        && f.port == port.port
                        && f.proto == proto
                });
                Planned {
                    check: Check::Flow,
                    from: from.to_string(),
                    place: Place::Pid(src.pid),
                    proto,
                    addr: SocketAddr::new(ip, port.port),
                    what: format!(
                        "{from} -> {to}:{} {}",
                        port.port,
                        if allowed { "flow" } else { "no flow" }
                    ),
                    expected: open_if(allowed),
                }
            })
            .collect()
    }

    fn egress_probes(
        &self,
        check: Check,
        from: &str,
        place: Place,
        to: IpAddr,
        allowed: impl Fn(Proto, u16) -> bool,
    ) -> Vec<Planned> {
        let ports = self
            .inet_tcp
            .iter()
            .map(|&p| (Proto::Tcp, p))
            .chain(self.inet_udp.iter().map(|&p| (Proto::Udp, p)));
        ports
            .map(|(proto, port)| {
                let ok = allowed(proto, port);
                Planned {
                    check,
                    from: from.to_string(),
                    place: place.clone(),
                    proto,
                    addr: SocketAddr::new(to, port),
                    what: format!(
                        "internet {}/{port} {}",
                        proto.as_str(),
                        if ok { "allowed" } else { "not listed" }
                    ),
                    expected: open_if(ok),
                }
            })
            .collect()
    }
}

/// Both addresses of an outside site.
pub fn site_ips(s: &Site) -> [IpAddr; 2] {
    [IpAddr::V4(s.v4), IpAddr::V6(s.v6)]
}

/// Where `src` reaches `dst`: its IPv4 address on a network both are on
/// (or its first address when they share none; the probe is then expected
/// to fail unless a flow says otherwise), and its IPv6 address there when
/// both have one.
fn target_addrs(src: &Running, dst: &Running) -> Vec<IpAddr> {
    let shared = dst
        .addrs
        .iter()
        .find(|(net, _)| src.addrs.contains_key(*net));
    let mut out = Vec::new();
    match shared {
        Some((net, (v4, v6))) => {
            out.extend(v4.map(IpAddr::V4));
            let src_v6 = src.addrs.get(net).and_then(|(_, v6)| *v6);
            if src_v6.is_some() {
                out.extend(v6.map(IpAddr::V6));
            }
        }
        None => out.extend(dst.addrs.values().find_map(|(v4, _)| v4.map(IpAddr::V4))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pid: u32, ip: [u8; 4]) -> Running {
        let mut addrs = BTreeMap::new();
        addrs.insert("trading".to_string(), (Some(Ipv4Addr::from(ip)), None));
        Running {
            name: String::new(),
            pid,
            addrs,
            netns: None,
        }
    }

    /// The built-in policy's plan, as the lab would make it.
    fn plan() -> Vec<Planned> {
        let policy = palisade_policy::builtin();
        let published = careless_publish(&policy, 22);
        let containers: BTreeMap<String, Running> = policy
            .services
            .keys()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    running(100 + i as u32, [192, 0, 2, 10 + i as u8]),
                )
            })
            .collect();
        let ns = ["client", "attacker", "admin", "vps", "inet"]
            .into_iter()
            .map(|r| (r, format!("t-{r}")))
            .collect();
        let layout = Layout {
            policy: &policy,
            ns,
            published: &published,
            containers: &containers,
            inet_tcp: &[25, 53, 80, 443, 587, 8443],
            inet_udp: &[53, 123, 5353],
        };
        let mut all = layout.outside();
        all.extend(layout.inside());
        all
    }

    fn expect(plan: &[Planned], from: &str, to: &str, proto: Proto) -> Reach {
        let to: SocketAddr = to.parse().expect("test address");
        let hits: Vec<&Planned> = plan
            .iter()
            .filter(|p| p.from == from && p.addr == to && p.proto == proto)
            .collect();
        assert_eq!(hits.len(), 1, "{from} -> {to}/{proto:?}: {hits:?}");
        hits[0].expected
    }

    #[test]
    fn careless_publishing_maps_internal_ports_too() {
        let policy = palisade_policy::builtin();
        let mut ports: Vec<u16> = careless_publish(&policy, 22)
            .iter()
            .map(|p| p.host_port)
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, [80, 443, 3000, 8000, 8765, 8767, 9000, 18080]);
    }

    #[test]
    fn published_ports_follow_exposure() {
        let p = plan();
        use Proto::Tcp;
        use Reach::{Closed, Open};
        // Public: everyone, both families.
        assert_eq!(expect(&p, "attacker", "203.0.113.10:80", Tcp), Open);
        assert_eq!(expect(&p, "client", "[2001:db8:113::10]:443", Tcp), Open);
        // Trusted groups: the admin host only.
        assert_eq!(expect(&p, "admin", "203.0.113.10:3000", Tcp), Open);
        assert_eq!(expect(&p, "admin", "[2001:db8:113::10]:8000", Tcp), Open);
        assert_eq!(expect(&p, "client", "203.0.113.10:3000", Tcp), Closed);
        // Loopback-only and internal ports: nobody outside.
        assert_eq!(expect(&p, "admin", "203.0.113.10:18080", Tcp), Closed);
        assert_eq!(expect(&p, "admin", "203.0.113.10:9000", Tcp), Closed);
        // sshd: admin only.
        assert_eq!(expect(&p, "admin", "[2001:db8:113::10]:22", Tcp), Open);
        assert_eq!(expect(&p, "client", "203.0.113.10:22", Tcp), Closed);
    }

    #[test]
    fn inside_follows_flows_and_egress() {
        let p = plan();
        use Proto::{Tcp, Udp};
        use Reach::{Closed, Open};
        // Loopback port from the host itself.
        assert_eq!(expect(&p, "vps", "127.0.0.1:18080", Tcp), Open);
        assert_eq!(expect(&p, "vps", "[::1]:18080", Tcp), Open);
        // Flows: bot (.10) -> memory (.14) yes; memory -> bot no.
        assert_eq!(expect(&p, "ai-trading-bot", "192.0.2.14:8765", Tcp), Open);
        assert_eq!(expect(&p, "mcp-memory", "192.0.2.10:9000", Tcp), Closed);
        assert_eq!(
            expect(&p, "dashboard-backend", "192.0.2.10:9000", Tcp),
            Open
        );
        // Container egress: 443 for the bot only, DNS for all, 8443 never.
        assert_eq!(expect(&p, "ai-trading-bot", "203.0.113.1:443", Tcp), Open);
        assert_eq!(expect(&p, "nginx", "203.0.113.1:443", Tcp), Closed);
        assert_eq!(expect(&p, "nginx", "203.0.113.1:53", Udp), Open);
        assert_eq!(expect(&p, "nginx", "203.0.113.1:5353", Udp), Closed);
        assert_eq!(
            expect(&p, "bluefin-service", "203.0.113.1:8443", Tcp),
            Closed
        );
        // Host egress, both families.
        assert_eq!(expect(&p, "vps", "203.0.113.1:25", Tcp), Open);
        assert_eq!(expect(&p, "vps", "[2001:db8:113::1]:123", Udp), Open);
        assert_eq!(expect(&p, "vps", "[2001:db8:113::1]:8443", Tcp), Closed);
        // Containers without IPv6 are not probed over IPv6.
        assert!(!p
            .iter()
            .any(|x| x.check == Check::ContainerEgress && x.addr.is_ipv6()));
    }
}
