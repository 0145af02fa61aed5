//! The nftables target: renders a [`Ruleset`] as an `nft -f` script.
//!
//! Output is deterministic: the same policy and resolution always give the
//! same bytes, so golden files and `--dry-run` diffs are meaningful. The
//! replacement script creates, deletes and redefines palisade's table in one
//! file, which `nft -f` loads as one transaction: either the new table is
//! in place or the old one is untouched.

use std::fmt::Write;

use crate::ir::*;

/// The table definition alone (`table inet palisade { ... }`).
pub fn render(rs: &Ruleset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table inet {TABLE} {{");
    for s in &rs.sets {
        render_set(&mut out, s);
        out.push('\n');
    }
    for (i, c) in rs.chains.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_chain(&mut out, c);
    }
    out.push_str("}\n");
    out
}

/// A script that atomically replaces palisade's table (and only it).
pub fn replace_script(rs: &Ruleset) -> String {
    let mut out = String::new();
    out.push_str("#!/usr/sbin/nft -f\n");
    out.push_str("# palisade: replaces table inet palisade in one transaction\n");
    let _ = writeln!(out, "table inet {TABLE}");
    let _ = writeln!(out, "delete table inet {TABLE}");
    out.push_str(&render(rs));
    out
}

/// A script that removes palisade's table if it exists.
pub fn remove_script() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

fn render_set(out: &mut String, s: &Set) {
    let _ = writeln!(out, "\tset {} {{", s.name);
    let ty = match s.ty {
        SetType::Ipv4Addr => "ipv4_addr",
        SetType::Ipv6Addr => "ipv6_addr",
        SetType::Ifname => "ifname",
    };
    let _ = writeln!(out, "\t\ttype {ty}");
    let mut flags = Vec::new();
    if s.interval {
        flags.push("interval");
    }
    if s.dynamic {
        flags.push("dynamic");
    }
    if s.timeout.is_some() || s.timeouts {
        flags.push("timeout");
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(t) = s.timeout {
        let _ = writeln!(out, "\t\ttimeout {t}s");
    }
    if let Some(size) = s.size {
        let _ = writeln!(out, "\t\tsize {size}");
    }
    let _ = writeln!(out, "\t\tcomment \"{}\"", s.comment);
    if !s.elements.is_empty() {
        let elems: Vec<String> = s
            .elements
            .iter()
            .map(|e| match s.ty {
                SetType::Ifname => format!("\"{e}\""),
                _ => e.clone(),
            })
            .collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
    }
    out.push_str("\t}\n");
}

fn render_chain(out: &mut String, c: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", c.name);
    if let Some(b) = &c.base {
        let policy = if b.policy_accept { "accept" } else { "drop" };
        let _ = writeln!(
            out,
            "\t\ttype filter hook {} priority {}; policy {policy};",
            b.hook.as_str(),
            b.priority
        );
    }
    for r in &c.rules {
        let _ = writeln!(out, "\t\t{}", rule_text(r));
    }
    out.push_str("\t}\n");
}

/// One rule as nft syntax, with its id as a comment.
pub fn rule_text(r: &Rule) -> String {
    let mut parts: Vec<String> = r.matches.iter().map(match_text).collect();
    parts.push(match &r.action {
        Action::Accept => "accept".to_string(),
        Action::Drop => "counter drop".to_string(),
        Action::Jump(c) => format!("jump {c}"),
        Action::Log(prefix) => format!("log prefix \"{prefix}\" level warn"),
    });
    parts.push(format!("comment \"{}\"", r.id));
    parts.join(" ")
}

fn family_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn list<T: ToString>(items: &[T], quote: bool) -> String {
    let shown: Vec<String> = items
        .iter()
        .map(|i| match quote {
            true => format!("\"{}\"", i.to_string()),
            false => i.to_string(),
        })
        .collect();
    match shown.len() {
        1 => shown[0].clone(),
        _ => format!("{{ {} }}", shown.join(", ")),
    }
}

fn addrs_text(a: &Addrs) -> String {
    match a {
        Addrs::Set(name) => format!("@{name}"),
        Addrs::Nets(nets) => list(nets, false),
    }
}

fn ifaces_text(i: &Ifaces, negate: bool) -> String {
    let op = if negate { "!= " } else { "" };
    match i {
        Ifaces::Set(name) => format!("{op}@{name}"),
        Ifaces::Names(names) => format!("{op}{}", list(names, true)),
    }
}

fn match_text(m: &Match) -> String {
    match m {
        Match::Family(Family::V4) => "meta nfproto ipv4".into(),
        Match::Family(Family::V6) => "meta nfproto ipv6".into(),
        Match::IifLo => "iif \"lo\"".into(),
        Match::OifLo => "oif \"lo\"".into(),
        Match::Iifname { ifaces, negate } => {
            format!("iifname {}", ifaces_text(ifaces, *negate))
        }
        Match::Oifname { ifaces, negate } => {
            format!("oifname {}", ifaces_text(ifaces, *negate))
        }
        Match::Saddr { family, addrs } => {
            format!("{} saddr {}", family_kw(*family), addrs_text(addrs))
        }
        Match::Daddr { family, addrs } => {
            format!("{} daddr {}", family_kw(*family), addrs_text(addrs))
        }
        Match::L4 { proto, dports } if dports.is_empty() => {
            format!("meta l4proto {proto}")
        }
        Match::L4 { proto, dports } => format!("{proto} dport {}", list(dports, false)),
        Match::CtOrigDport { proto, port } => {
            // nft needs the protocol before it can compare a port.
            format!("meta l4proto {proto} ct original proto-dst {port}")
        }
        Match::CtDnat => "ct status dnat".into(),
        Match::CtState(states) => {
            let s: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            format!("ct state {}", s.join(","))
        }
        Match::Icmp { family, types } => {
            let kw = match family {
                Family::V4 => "icmp",
                Family::V6 => "icmpv6",
            };
            format!("{kw} type {}", list(types, false))
        }
        Match::RateOver { set, family, limit } => format!(
            "update @{set} {{ {} saddr limit rate over {}/{} burst {} packets }}",
            family_kw(*family),
            limit.rate.count,
            limit.rate.per.as_str(),
            limit.burst
        ),
        Match::Limit { rate, burst } => format!(
            "limit rate {}/{} burst {burst} packets",
            rate.count,
            rate.per.as_str()
        ),
    }
}
