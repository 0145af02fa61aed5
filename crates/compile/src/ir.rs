//! The ruleset model: what palisade enforces, independent of syntax.
//!
//! The compiler builds a [`Ruleset`] from the policy; the nftables target
//! renders it and the tracer evaluates it. Both read the same values, so
//! what `trace` reports is what the kernel is given.

use std::fmt;

use ipnet::IpNet;
use palisade_policy::{Proto, Rate, RateLimit};
use serde::Serialize;

/// Name of palisade's nftables table (family `inet`). palisade owns this
/// table and nothing else.
pub const TABLE: &str = "palisade";

/// Base chain priority: just before the `filter` priority at which Docker's
/// and UFW's chains (iptables-nft) run, so a drop here is final for them.
pub const FILTER_PRIORITY: i32 = -10;

/// Base chain priority for early drops (bans): the raw priority, before
/// connection tracking sees the packet.
pub const RAW_PRIORITY: i32 = -300;

#[derive(Debug, Clone, Serialize)]
pub struct Ruleset {
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
    /// Set positions by name, built on the first lookup: a large policy
    /// has thousands of sets and the tracer looks them up per rule.
    #[serde(skip)]
    pub(crate) set_index: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
}

impl Ruleset {
    pub fn new(sets: Vec<Set>, chains: Vec<Chain>) -> Ruleset {
        Ruleset {
            sets,
            chains,
            set_index: std::sync::OnceLock::new(),
        }
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        let index = self.set_index.get_or_init(|| {
            self.sets
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect()
        });
        // Sets added after the first lookup are still found, by a scan.
        match index.get(name).and_then(|i| self.sets.get(*i)) {
            Some(s) if s.name == name => Some(s),
            _ => self.sets.iter().find(|s| s.name == name),
        }
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The base chain attached to `hook`, if any.
    pub fn base(&self, hook: Hook) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|c| c.base.as_ref().is_some_and(|b| b.hook == hook))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }

    pub fn contains(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

/// What a named set holds; the tracer uses it to decide membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum SetRole {
    /// Addresses of an address group of the policy.
    Group(String),
    /// Container addresses of a service, filled in from Docker.
    Service(String),
    /// Docker bridge interfaces, filled in from Docker.
    Bridges,
    /// Banned sources (with per-entry timeouts).
    Ban,
    /// Per-source rate-limit state, filled by the kernel.
    Meter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetType {
    Ipv4Addr,
    Ipv6Addr,
    Ifname,
}

#[derive(Debug, Clone, Serialize)]
pub struct Set {
    pub name: String,
    pub role: SetRole,
    pub ty: SetType,
    pub interval: bool,
    pub dynamic: bool,
    /// Default timeout of elements, in seconds (timeout flag set).
    pub timeout: Option<u64>,
    /// Whether elements may carry their own timeouts.
    pub timeouts: bool,
    pub size: Option<u32>,
    pub elements: Vec<String>,
    pub comment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    /// What happens to a packet no rule decides: accept or drop.
    pub policy_accept: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// One rule. `id` names it in traces, logs and golden files.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: String,
    pub matches: Vec<Match>,
    pub action: Action,
}

/// Addresses a match compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Addrs {
    /// A named set of the ruleset.
    Set(String),
    /// Literal networks (all of one family).
    Nets(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ifaces {
    Set(String),
    Names(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

impl CtState {
    pub fn as_str(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// The packet is IPv4 or IPv6 (`meta nfproto`).
    Family(Family),
    /// Input interface is the loopback (`iif "lo"`).
    IifLo,
    /// Output interface is the loopback.
    OifLo,
    /// Input interface name is (or, negated, is not) one of these.
    Iifname {
        ifaces: Ifaces,
        negate: bool,
    },
    Oifname {
        ifaces: Ifaces,
        negate: bool,
    },
    Saddr {
        family: Family,
        addrs: Addrs,
    },
    Daddr {
        family: Family,
        addrs: Addrs,
    },
    /// Transport protocol, and destination port if given.
    L4 {
        proto: Proto,
        dports: Vec<u16>,
    },
    /// The destination port the client used, before any DNAT.
    CtOrigDport {
        proto: Proto,
        port: u16,
    },
    /// The connection was destination-NATed (a Docker published port).
    CtDnat,
    CtState(Vec<CtState>),
    /// ICMP (v4) or ICMPv6 types by nft name.
    Icmp {
        family: Family,
        types: Vec<String>,
    },
    /// Per-source limit in dynamic set `set`: matches when the source has
    /// exceeded it. Always the last match of its rule.
    RateOver {
        set: String,
        family: Family,
        limit: RateLimit,
    },
    /// A global rate limit (used only to rate-limit logging).
    Limit {
        rate: Rate,
        burst: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    /// Drop, counting.
    Drop,
    Jump(String),
    /// Log with this prefix and go on to the next rule.
    Log(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Accept => f.write_str("accept"),
            Action::Drop => f.write_str("drop"),
            Action::Jump(c) => write!(f, "jump {c}"),
            Action::Log(p) => write!(f, "log \"{p}\""),
        }
    }
}
