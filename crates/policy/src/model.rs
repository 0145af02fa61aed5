//! The validated policy: the only form of a policy that backends ever see.
//!
//! Every name in here has been resolved (groups exist, flows point at
//! declared ports), every address parsed, every default filled in. A value
//! of these types is correct by construction; backends never re-check it.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::Serialize;

/// A checked policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// Where the policy came from, for messages ("built-in" for the default).
    pub origin: String,
    pub host: Host,
    pub groups: BTreeMap<String, Group>,
    pub ssh: Option<Ssh>,
    pub icmp: Icmp,
    pub logging: Logging,
    pub networks: BTreeMap<String, Network>,
    pub services: BTreeMap<String, Service>,
    pub flows: Vec<Flow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub public_interfaces: Vec<String>,
    /// `None`: host egress is not filtered.
    pub egress: Option<Vec<Egress>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    /// Never empty; aggregated: sorted, IPv4 before IPv6, no overlaps.
    pub nets: Vec<IpNet>,
}

impl Group {
    /// Whether the group has networks of that family. (The nets are sorted,
    /// IPv4 first, so this looks at one end only.)
    pub fn has_family(&self, v6: bool) -> bool {
        let end = if v6 {
            self.nets.last()
        } else {
            self.nets.first()
        };
        end.is_some_and(|n| matches!(n, IpNet::V6(_)) == v6)
    }

    /// Whether `addr` is inside the group.
    pub fn contains(&self, addr: &std::net::IpAddr) -> bool {
        // The last network that starts at or before `addr` is the only one
        // that can hold it.
        let i = self.nets.partition_point(|n| match (n, addr) {
            (IpNet::V4(n), std::net::IpAddr::V4(a)) => n.network() <= *a,
            (IpNet::V6(n), std::net::IpAddr::V6(a)) => n.network() <= *a,
            (IpNet::V4(_), std::net::IpAddr::V6(_)) => true,
            (IpNet::V6(_), std::net::IpAddr::V4(_)) => false,
        });
        i > 0 && self.nets[i - 1].contains(addr)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ssh {
    pub port: u16,
    pub allow: Exposure,
    pub rate: Option<RateLimit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Icmp {
    pub echo: bool,
    pub rate: Option<RateLimit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Logging {
    pub drops: bool,
    pub rate: Rate,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub name: String,
    pub subnet: Option<ipnet::Ipv4Net>,
    pub subnet6: Option<ipnet::Ipv6Net>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// The compose service name (the key in the policy file).
    pub name: String,
    /// Container name to match instead of the compose service label.
    pub container: Option<String>,
    pub networks: Vec<String>,
    pub ports: Vec<ServicePort>,
    /// Explicit egress followed by the defaults, in that order.
    pub egress: Vec<Egress>,
}

impl Service {
    pub fn port(&self, port: u16, proto: Proto) -> Option<&ServicePort> {
        self.ports
            .iter()
            .find(|p| p.port == port && p.proto == proto)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePort {
    pub port: u16,
    pub proto: Proto,
    /// Host port Docker publishes this container port on.
    pub publish: Option<u16>,
    /// `Internal` exactly when `publish` is `None`.
    pub expose: Exposure,
    pub rate: Option<RateLimit>,
}

/// Who may reach something from outside the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// Not published: only container flows reach it.
    Internal,
    /// The host's loopback only.
    Loopback,
    /// Everyone.
    Public,
    /// Sources in these groups (names of `Policy::groups`).
    Groups(Vec<String>),
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposure::Internal => f.write_str("internal"),
            Exposure::Loopback => f.write_str("loopback"),
            Exposure::Public => f.write_str("public"),
            Exposure::Groups(g) => write!(f, "groups {}", g.join(", ")),
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An allowed outbound connection: protocol, ports, destinations.
#[derive(Debug, Clone, Serialize)]
pub struct Egress {
    /// Where it came from: "dns", "ntp" for presets, else "egress".
    pub name: String,
    pub proto: Proto,
    pub ports: Vec<u16>,
    /// Empty: anywhere.
    pub to: Vec<IpNet>,
}

/// An allowed container-to-container connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}:{}/{}",
            self.from, self.to, self.port, self.proto
        )
    }
}

/// Events per unit of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub count: u32,
    pub per: Per,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Second,
    Minute,
    Hour,
    Day,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
            Per::Day => "day",
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
            Per::Day => 86400,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.as_str())
    }
}

/// A per-source limit on new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub rate: Rate,
    /// Packets allowed above the rate before the limit bites.
    pub burst: u32,
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} burst {}", self.rate, self.burst)
    }
}
