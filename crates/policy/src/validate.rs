//! From the file as written to the checked model.
//!
//! Runs every check and collects every problem instead of stopping at the
//! first, so a user fixes a broken policy in one round. Each problem points
//! at the value that causes it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::path;
use crate::raw::*;
use crate::spans::{Seg, Spans};

/// Names of the built-in egress presets, for `defaults.container_egress`.
pub const EGRESS_PRESETS: &[&str] = &["dns", "ntp"];

const RESERVED_GROUPS: &[&str] = &["public", "internal", "loopback", "any"];

/// Parses and checks a policy. `origin` names the file in messages.
pub fn parse(src: &str, origin: &str) -> Result<Policy, Diagnostics> {
    let raw: RawPolicy = match toml::from_str(src) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            let hint = if message.starts_with("unknown field") {
                Some(
                    "check the spelling; `palisade schema` prints every key the \
                     format knows"
                        .to_string(),
                )
            } else {
                None
            };
            let d = Diagnostic::at(origin, src, span, message, hint);
            return Err(Diagnostics(vec![d]));
        }
    };
    let mut v = Validator {
        src,
        origin,
        spans: Spans::new(src),
        errors: Vec::new(),
    };
    let policy = v.policy(raw);
    if v.errors.is_empty() {
        Ok(policy)
    } else {
        Err(Diagnostics(v.errors))
    }
}

struct Validator<'a> {
    src: &'a str,
    origin: &'a str,
    spans: Spans<'a>,
    errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, path: &[Seg], message: impl Into<String>, hint: Option<String>) {
        let span = self.spans.value(path);
        self.error_at(span, message, hint);
    }

    fn error_at(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let d = Diagnostic::at(self.origin, self.src, span, message, hint);
        self.errors.push(d);
    }

    fn policy(&mut self, raw: RawPolicy) -> Policy {
        if let Some(v) = raw.version {
            if v != 1 {
                self.error(
                    path!["version"],
                    format!("unsupported policy version {v}; expected 1"),
                    None,
                );
            }
        }
        let groups = self.groups(&raw.groups);
        let host = self.host(raw.host, &groups);
        let ssh = raw.ssh.map(|s| self.ssh(s, &groups));
        let icmp = Icmp {
            echo: raw.icmp.echo.unwrap_or(true),
            rate: raw
                .icmp
                .rate
                .as_deref()
                .and_then(|r| self.rate(path!["icmp", "rate"], r))
                .map(|rate| RateLimit {
                    rate,
                    burst: rate.count.max(5),
                }),
        };
        let logging = self.logging(raw.logging);
        let networks = self.networks(&raw.networks);
        let defaults = self.default_egress(raw.defaults);
        let services = self.services(raw.services, &groups, &networks, &defaults);
        self.host_ports(&services, ssh.as_ref());
        let flows = self.flows(raw.flows, &services);
        Policy {
            origin: self.origin.to_string(),
            host,
            groups,
            ssh,
            icmp,
            logging,
            networks,
            services,
            flows,
        }
    }

    fn groups(&mut self, raw: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Group> {
        let mut groups = BTreeMap::new();
        for (name, entries) in raw {
            if !is_name(name) || RESERVED_GROUPS.contains(&name.as_str()) {
                self.error(
                    path!["groups", name.as_str()],
                    format!("`{name}` cannot name a group"),
                    Some(
                        "use letters, digits, `-` and `_`; public, internal, loopback \
                         and any are reserved"
                            .into(),
                    ),
                );
            }
            if entries.is_empty() {
                self.error(
                    path!["groups", name.as_str()],
                    format!("group `{name}` is empty"),
                    Some("list at least one address or CIDR, or remove the group".into()),
                );
            }
            let mut nets = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                if let Some(net) = self.net(path!["groups", name.as_str(), i], entry) {
                    nets.push(net);
                }
            }
            // Sorted and without overlaps, so membership is a binary search.
            let nets = IpNet::aggregate(&nets);
            groups.insert(
                name.clone(),
                Group {
                    name: name.clone(),
                    nets,
                },
            );
        }
        groups
    }

    /// An address or CIDR. Host bits set are an error: `10.0.0.1/8` almost
    /// always means a typo, and silently widening it would open too much.
    fn net(&mut self, at: &[Seg], text: &str) -> Option<IpNet> {
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Some(IpNet::from(addr));
        }
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => Some(net),
            Ok(net) => {
                self.error(
                    at,
                    format!("`{text}` has host bits set"),
                    Some(format!("did you mean `{}`?", net.trunc())),
                );
                None
            }
            Err(_) => {
                self.error(
                    at,
                    format!("`{text}` is not an IP address or CIDR"),
                    Some("write e.g. `198.51.100.0/24` or `2001:db8::/32`".into()),
                );
                None
            }
        }
    }

    fn host(&mut self, raw: RawHost, groups: &BTreeMap<String, Group>) -> Host {
        if raw.public_interfaces.is_empty() {
            self.error(
                path!["host", "public_interfaces"],
                "host.public_interfaces is missing or empty",
                Some(
                    "name the interfaces that face the internet, e.g. \
                     public_interfaces = [\"eth0\"]"
                        .into(),
                ),
            );
        }
        for (i, ifname) in raw.public_interfaces.iter().enumerate() {
            if !is_ifname(ifname) {
                self.error(
                    path!["host", "public_interfaces", i],
                    format!("`{ifname}` is not a valid interface name"),
                    Some("1 to 15 characters, no spaces, `/` or quotes".into()),
                );
            }
        }
        let egress = raw.egress.map(|list| {
            list.into_iter()
                .enumerate()
                .filter_map(|(i, e)| self.egress(path!["host", "egress", i], e, groups))
                .collect()
        });
        Host {
            public_interfaces: raw.public_interfaces,
            egress,
        }
    }

    fn ssh(&mut self, raw: RawSsh, groups: &BTreeMap<String, Group>) -> Ssh {
        let port = raw.port.unwrap_or(22);
        if port == 0 {
            self.error(path!["ssh", "port"], "port 0 is not a port", None);
        }
        // An unknown word is reported once; no second error about it.
        let allow = self
            .exposure(path!["ssh", "allow"], &raw.allow, groups)
            .unwrap_or(Exposure::Groups(Vec::new()));
        if matches!(allow, Exposure::Internal | Exposure::Loopback) {
            self.error(
                path!["ssh", "allow"],
                format!("ssh.allow cannot be `{allow}`"),
                Some("use \"public\" or a list of groups such as [\"admin\"]".into()),
            );
        }
        let rate = self.rate_limit(path!["ssh"], raw.rate.as_deref(), raw.burst);
        Ssh { port, allow, rate }
    }

    fn logging(&mut self, raw: RawLogging) -> Logging {
        let rate = raw
            .rate
            .as_deref()
            .and_then(|r| self.rate(path!["logging", "rate"], r))
            .unwrap_or(Rate {
                count: 10,
                per: Per::Minute,
            });
        let prefix = raw.prefix.unwrap_or_else(|| "palisade".into());
        let ok = !prefix.is_empty()
            && prefix.len() <= 24
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !ok {
            self.error(
                path!["logging", "prefix"],
                format!("log prefix `{prefix}` is not allowed"),
                Some("1 to 24 characters: letters, digits, `-`, `_`, `.`, `:`".into()),
            );
        }
        Logging {
            drops: raw.drops.unwrap_or(true),
            rate,
            prefix,
        }
    }

    fn networks(
        &mut self,
        raw: &BTreeMap<String, RawNetwork>,
    ) -> BTreeMap<String, Network> {
        let mut out = BTreeMap::new();
        for (name, n) in raw {
            if !is_name(name) {
                self.error(
                    path!["networks", name.as_str()],
                    format!("`{name}` cannot name a network"),
                    None,
                );
            }
            let subnet = n.subnet.as_deref().and_then(|s| {
                match self.net(path!["networks", name.as_str(), "subnet"], s) {
                    Some(IpNet::V4(v4)) => Some(v4),
                    Some(IpNet::V6(_)) => {
                        self.error(
                            path!["networks", name.as_str(), "subnet"],
                            "`subnet` takes an IPv4 CIDR",
                            Some("put IPv6 subnets in `subnet6`".into()),
                        );
                        None
                    }
                    None => None,
                }
            });
            let subnet6 = n.subnet6.as_deref().and_then(|s| {
                match self.net(path!["networks", name.as_str(), "subnet6"], s) {
                    Some(IpNet::V6(v6)) => Some(v6),
                    Some(IpNet::V4(_)) => {
                        self.error(
                            path!["networks", name.as_str(), "subnet6"],
                            "`subnet6` takes an IPv6 CIDR",
                            Some("put IPv4 subnets in `subnet`".into()),
                        );
                        None
                    }
                    None => None,
                }
            });
            out.insert(
                name.clone(),
                Network {
                    name: name.clone(),
                    subnet,
                    subnet6,
                },
            );
        }
        out
    }

    fn default_egress(&mut self, raw: RawDefaults) -> Vec<Egress> {
        let names = raw
            .container_egress
            .unwrap_or_else(|| EGRESS_PRESETS.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match preset(name) {
                Some(mut list) => out.append(&mut list),
                None => self.error(
                    path!["defaults", "container_egress", i],
                    format!("unknown egress preset `{name}`"),
                    Some(format!("known presets: {}", EGRESS_PRESETS.join(", "))),
                ),
            }
        }
        out
    }

    fn services(
        &mut self,
        raw: BTreeMap<String, RawService>,
        groups: &BTreeMap<String, Group>,
        networks: &BTreeMap<String, Network>,
        defaults: &[Egress],
    ) -> BTreeMap<String, Service> {
        let mut out = BTreeMap::new();
        for (name, s) in raw {
            let at = |rest: &[Seg<'static>]| -> Vec<Seg<'_>> {
                let mut p = vec![Seg::Key("services"), Seg::Key(name.as_str())];
                p.extend_from_slice(rest);
                p
            };
            if !is_service_name(&name) {
                self.error(
                    &at(&[]),
                    format!("`{name}` cannot name a service"),
                    Some(
                        "letters, digits, `.`, `-` and `_`, as in docker-compose".into(),
                    ),
                );
            }
            let service_networks = match s.networks {
                Some(list) => {
                    for (i, n) in list.iter().enumerate() {
                        if !networks.contains_key(n) {
                            let hint = suggest(n, networks.keys());
                            self.error(
                                &at(&[Seg::Key("networks"), Seg::Index(i)]),
                                format!("unknown network `{n}`"),
                                hint,
                            );
                        }
                    }
                    list
                }
                None => networks.keys().cloned().collect(),
            };
            let mut ports: Vec<ServicePort> = Vec::new();
            for (i, p) in s.ports.into_iter().enumerate() {
                let here = at(&[Seg::Key("ports"), Seg::Index(i)]);
                if let Some(port) = self.port(&here, &name, p, groups) {
                    if ports
                        .iter()
                        .any(|q| q.port == port.port && q.proto == port.proto)
                    {
                        let mut p = here.clone();
                        p.push(Seg::Key("port"));
                        self.error(
                            &p,
                            format!(
                                "{name} lists port {}/{} twice",
                                port.port, port.proto
                            ),
                            Some("merge the two entries into one".into()),
                        );
                    }
                    ports.push(port);
                }
            }
            let mut egress: Vec<Egress> = s
                .egress
                .into_iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    self.egress(&at(&[Seg::Key("egress"), Seg::Index(i)]), e, groups)
                })
                .collect();
            egress.extend(defaults.iter().cloned());
            out.insert(
                name.clone(),
                Service {
                    name: name.clone(),
                    container: s.container,
                    networks: service_networks,
                    ports,
                    egress,
                },
            );
        }
        out
    }

    fn port(
        &mut self,
        here: &[Seg],
        service: &str,
        p: RawPort,
        groups: &BTreeMap<String, Group>,
    ) -> Option<ServicePort> {
        let sub = |k: &'static str| -> Vec<Seg> {
            let mut v = here.to_vec();
            v.push(Seg::Key(k));
            v
        };
        if p.port == 0 {
            self.error(&sub("port"), "port 0 is not a port", None);
        }
        let proto = self.proto(&sub("proto"), p.proto.as_deref())?;
        let expose = match p
            .expose
            .as_ref()
            .map(|e| self.exposure(&sub("expose"), e, groups))
        {
            // Unknown: reported once, and nothing else is said about it.
            Some(None) => return None,
            Some(Some(e)) => Some(e),
            None => None,
        };
        let expose = match (p.publish, expose) {
            (Some(0), _) => {
                self.error(&sub("publish"), "host port 0 is not a port", None);
                return None;
            }
            (None, None) | (None, Some(Exposure::Internal)) => Exposure::Internal,
            (None, Some(e)) => {
                self.error(
                    &sub("expose"),
                    format!(
                        "{service} port {} is exposed as {e} but not published",
                        p.port
                    ),
                    Some(format!(
                        "add `publish = {}` (the host port), or remove `expose`",
                        p.port
                    )),
                );
                return None;
            }
            (Some(_), Some(Exposure::Internal)) => {
                self.error(
                    &sub("expose"),
                    format!("{service} port {} is published but marked internal", p.port),
                    Some(
                        "an internal port is not published: remove `publish`, or expose \
                         it as \"public\", \"loopback\" or a list of groups"
                            .into(),
                    ),
                );
                return None;
            }
            (Some(host), None) => {
                self.error(
                    &sub("publish"),
                    format!("published port {host} does not say who may reach it"),
                    Some(
                        "add `expose = \"public\"`, `\"loopback\"` or a list of groups"
                            .into(),
                    ),
                );
                return None;
            }
            (Some(_), Some(e)) => e,
        };
        let mut rate = self.rate_limit(here, p.rate.as_deref(), p.burst);
        if rate.is_some() && matches!(expose, Exposure::Internal | Exposure::Loopback) {
            self.error(
                &sub("rate"),
                format!("a rate limit on a port exposed as {expose} has no effect"),
                Some("rate limits apply to published ports reached from outside".into()),
            );
            rate = None;
        }
        Some(ServicePort {
            port: p.port,
            proto,
            publish: p.publish,
            expose,
            rate,
        })
    }

    /// Two services on one host port, or a service on SSH's port.
    fn host_ports(&mut self, services: &BTreeMap<String, Service>, ssh: Option<&Ssh>) {
        let mut seen: BTreeMap<(u16, Proto), String> = BTreeMap::new();
        if let Some(ssh) = ssh {
            seen.insert((ssh.port, Proto::Tcp), "ssh".into());
        }
        for s in services.values() {
            for (i, p) in s.ports.iter().enumerate() {
                let Some(host) = p.publish else {
                    continue;
                };
                if let Some(other) = seen.get(&(host, p.proto)) {
                    let message = format!(
                        "host port {host}/{} is published by both {other} and {}",
                        p.proto, s.name
                    );
                    self.error(
                        path!["services", s.name.as_str(), "ports", i, "publish"],
                        message,
                        Some("a host port can be published by one service only".into()),
                    );
                } else {
                    seen.insert((host, p.proto), s.name.clone());
                }
            }
        }
    }

    fn flows(
        &mut self,
        raw: Vec<RawFlow>,
        services: &BTreeMap<String, Service>,
    ) -> Vec<Flow> {
        let mut out: Vec<Flow> = Vec::new();
        for (i, f) in raw.into_iter().enumerate() {
            let mut ok = true;
            for (key, name) in [("from", &f.from), ("to", &f.to)] {
                if !services.contains_key(name) {
                    let hint = suggest(name, services.keys());
                    self.error(
                        path!["flows", i, key],
                        format!("flow names unknown service `{name}`"),
                        hint.or_else(|| Some("declare it under [services]".into())),
                    );
                    ok = false;
                }
            }
            let Some(proto) = self.proto(path!["flows", i, "proto"], f.proto.as_deref())
            else {
                continue;
            };
            if !ok {
                continue;
            }
            if f.from == f.to {
                self.error(
                    path!["flows", i],
                    format!("flow from {} to itself", f.from),
                    Some("a container always reaches itself; remove this flow".into()),
                );
                continue;
            }
            let to = &services[&f.to];
            if to.port(f.port, proto).is_none() {
                let listed: Vec<String> = to
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", p.port, p.proto))
                    .collect();
                self.error(
                    path!["flows", i, "port"],
                    format!("{} does not listen on {}/{proto}", f.to, f.port),
                    Some(if listed.is_empty() {
                        format!("declare the port under [services.{}]", f.to)
                    } else {
                        format!("{} listens on {}", f.to, listed.join(", "))
                    }),
                );
                continue;
            }
            let flow = Flow {
                from: f.from,
                to: f.to,
                port: f.port,
                proto,
            };
            if out.contains(&flow) {
                self.error(
                    path!["flows", i],
                    format!("flow {flow} is listed twice"),
                    Some("remove one of them".into()),
                );
                continue;
            }
            out.push(flow);
        }
        out
    }

    fn egress(
        &mut self,
        here: &[Seg],
        e: RawEgress,
        groups: &BTreeMap<String, Group>,
    ) -> Option<Egress> {
        let sub = |k: &'static str| -> Vec<Seg> {
            let mut v = here.to_vec();
            v.push(Seg::Key(k));
            v
        };
        let proto = self.proto(&sub("proto"), e.proto.as_deref())?;
        if e.ports.is_empty() {
            self.error(
                &sub("ports"),
                "egress without ports",
                Some("list the destination ports, e.g. ports = [443]".into()),
            );
            return None;
        }
        if e.ports.contains(&0) {
            self.error(&sub("ports"), "port 0 is not a port", None);
            return None;
        }
        let mut to = Vec::new();
        for (i, dest) in e.to.unwrap_or_default().iter().enumerate() {
            let mut at = sub("to");
            at.push(Seg::Index(i));
            if let Some(g) = groups.get(dest) {
                to.extend(g.nets.iter().copied());
            } else if let Some(net) = self.net(&at, dest) {
                to.push(net);
            }
        }
        to.sort();
        to.dedup();
        let mut ports = e.ports;
        ports.sort();
        ports.dedup();
        Some(Egress {
            name: "egress".into(),
            proto,
            ports,
            to,
        })
    }

    /// `None` for a word that names no exposure (reported here).
    fn exposure(
        &mut self,
        at: &[Seg],
        raw: &RawExposure,
        groups: &BTreeMap<String, Group>,
    ) -> Option<Exposure> {
        Some(match raw {
            RawExposure::Word(w) => match w.as_str() {
                "public" => Exposure::Public,
                "internal" => Exposure::Internal,
                "loopback" => Exposure::Loopback,
                other => {
                    let hint = if groups.contains_key(other) {
                        Some(format!("a group is written as a list: [\"{other}\"]"))
                    } else {
                        Some("use \"public\", \"internal\", \"loopback\" or a list of groups".into())
                    };
                    self.error(at, format!("unknown exposure `{other}`"), hint);
                    return None;
                }
            },
            RawExposure::Groups(list) => {
                if list.is_empty() {
                    self.error(
                        at,
                        "an empty list of groups lets nobody in",
                        Some("name at least one group, or use \"internal\"".into()),
                    );
                }
                for (i, g) in list.iter().enumerate() {
                    if !groups.contains_key(g) {
                        let mut p = at.to_vec();
                        p.push(Seg::Index(i));
                        let hint = if RESERVED_GROUPS.contains(&g.as_str()) {
                            Some(format!("`{g}` is written as a plain string: \"{g}\""))
                        } else {
                            suggest(g, groups.keys())
                                .or_else(|| Some("define it under [groups]".into()))
                        };
                        self.error(&p, format!("unknown group `{g}`"), hint);
                    }
                }
                let mut list = list.clone();
                list.sort();
                list.dedup();
                Exposure::Groups(list)
            }
        })
    }

    fn proto(&mut self, at: &[Seg], raw: Option<&str>) -> Option<Proto> {
        match raw {
            None | Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some(other) => {
                self.error(
                    at,
                    format!("unknown protocol `{other}`"),
                    Some("use \"tcp\" or \"udp\"".into()),
                );
                None
            }
        }
    }

    fn rate_limit(
        &mut self,
        parent: &[Seg],
        rate: Option<&str>,
        burst: Option<u32>,
    ) -> Option<RateLimit> {
        let mut at = parent.to_vec();
        at.push(Seg::Key("rate"));
        let rate = match rate {
            Some(r) => self.rate(&at, r)?,
            None => {
                if burst.is_some() {
                    at.pop();
                    at.push(Seg::Key("burst"));
                    self.error(
                        &at,
                        "`burst` without `rate`",
                        Some("add e.g. rate = \"10/minute\"".into()),
                    );
                }
                return None;
            }
        };
        if burst == Some(0) {
            at.pop();
            at.push(Seg::Key("burst"));
            self.error(
                &at,
                "`burst` must be at least 1",
                Some("the burst is how many packets may pass at once; leave it out for the default".into()),
            );
            return None;
        }
        Some(RateLimit {
            rate,
            burst: burst.unwrap_or(rate.count.max(5)),
        })
    }

    fn rate(&mut self, at: &[Seg], text: &str) -> Option<Rate> {
        match parse_rate(text) {
            Some(r) => Some(r),
            None => {
                self.error(
                    at,
                    format!("`{text}` is not a rate"),
                    Some(
                        "write COUNT/UNIT with a count of at least 1 and a unit of \
                         second, minute, hour or day, e.g. \"10/minute\""
                            .into(),
                    ),
                );
                None
            }
        }
    }
}

/// `"10/minute"` and friends.
pub fn parse_rate(text: &str) -> Option<Rate> {
    let (count, unit) = text.split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
    let per = match unit.trim() {
        "second" | "s" | "sec" => Per::Second,
        "minute" | "m" | "min" => Per::Minute,
        "hour" | "h" => Per::Hour,
        "day" | "d" => Per::Day,
        _ => return None,
    };
    Some(Rate { count, per })
}

/// The egress rules of a built-in preset.
pub fn preset(name: &str) -> Option<Vec<Egress>> {
    let rule = |proto, port| Egress {
        name: name.to_string(),
        proto,
        ports: vec![port],
        to: Vec::new(),
    };
    match name {
        "dns" => Some(vec![rule(Proto::Udp, 53), rule(Proto::Tcp, 53)]),
        "ntp" => Some(vec![rule(Proto::Udp, 123)]),
        _ => None,
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn is_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !"/\"'\\".contains(c))
}

/// "did you mean" for a misspelt name.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> Option<String> {
    known
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!("did you mean `{k}`?"))
}
