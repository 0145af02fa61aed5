//! A starting policy from a compose file (`palisade init --from-compose`).
//!
//! The policy keeps what the compose file does today, made explicit: each
//! published port stays published, with the exposure the compose file
//! implies (ports bound to 127.0.0.1 become `loopback`, the rest `public`),
//! unless a `palisade.expose` label on the service says otherwise
//! (`public`, `loopback`, `internal`, or group names separated by commas,
//! which become placeholder groups). `depends_on` and `links` become
//! flows to every port of the dependency. The result passes `palisade
//! check`; every line is meant to be reviewed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::compose::{ComposeFile, Port};

/// The policy text for `compose`, read from `file`.
pub fn policy_from_compose(compose: &ComposeFile, file: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# palisade policy generated from {file}.");
    out.push_str(
        "# A starting point: review every line, then `palisade check` and\n\
         # `palisade apply --dry-run`.\nversion = 1\n\n\
         [host]\n# The interfaces that face the internet (`ip route show default`).\n\
         public_interfaces = [\"eth0\"]\n\n",
    );

    // Ports per service, and placeholder groups named by labels.
    let mut groups: BTreeSet<String> = BTreeSet::new();
    let mut used_host_ports: BTreeSet<(u16, String)> = BTreeSet::new();
    let mut ports_of: BTreeMap<String, Vec<(u16, String)>> = BTreeMap::new();
    let mut body = String::new();
    for (name, svc) in &compose.services {
        let s = &svc.value;
        let key = toml_key(name);
        let _ = writeln!(body, "[services.{key}]");
        if s.network_mode.as_ref().is_some_and(|m| m.value == "host") {
            body.push_str(
                "# network_mode: host: this service uses the host's network, so its\n\
                 # ports are host ports that palisade cannot tell apart from the host's.\n",
            );
        }
        let label = s.labels.as_ref().and_then(|l| l.get("palisade.expose"));
        let mut seen: BTreeSet<(u16, String)> = BTreeSet::new();
        let mut entries = Vec::new();
        for p in s.ports() {
            if !seen.insert((p.target, p.proto.clone())) {
                let _ = writeln!(
                    body,
                    "# container port {}/{} is mapped more than once in compose; only \
                     the first mapping is kept",
                    p.target, p.proto
                );
                continue;
            }
            entries.push(port_entry(
                &p,
                label.as_deref(),
                &mut groups,
                &mut used_host_ports,
            ));
            ports_of
                .entry(name.clone())
                .or_default()
                .push((p.target, p.proto.clone()));
        }
        if entries.is_empty() {
            body.push_str("ports = []\n");
        } else {
            body.push_str("ports = [\n");
            for e in entries {
                let _ = writeln!(body, "  {e},");
            }
            body.push_str("]\n");
        }
        body.push_str("# egress = [{ proto = \"tcp\", ports = [443] }]\n\n");
    }

    if !groups.is_empty() {
        out.push_str("[groups]\n# Placeholders named by palisade.expose labels: put your addresses here.\n");
        for g in &groups {
            let _ = writeln!(out, "{} = [\"192.0.2.0/24\"]", toml_key(g));
        }
        out.push('\n');
    }
    out.push_str(
        "[ssh]\nport = 22\n# Restrict to your own addresses with a group, e.g. allow = [\"admin\"].\n\
         allow = \"public\"\nrate = \"10/minute\"\n\n",
    );
    out.push_str(&body);

    // Flows from dependencies.
    for (name, svc) in &compose.services {
        let s = &svc.value;
        let mut deps: Vec<String> =
            s.depends_on.as_ref().map(|d| d.names()).unwrap_or_default();
        deps.extend(
            s.links
                .iter()
                .map(|l| l.split(':').next().unwrap_or(l).to_string()),
        );
        deps.sort();
        deps.dedup();
        for dep in deps {
            if dep == *name || !compose.services.contains_key(&dep) {
                continue;
            }
            match ports_of.get(&dep) {
                Some(ports) => {
                    for (port, proto) in ports {
                        let _ = writeln!(
                            out,
                            "[[flows]]\nfrom = \"{name}\"\nto = \"{dep}\"\nport = {port}\nproto = \"{proto}\"\n"
                        );
                    }
                }
                None => {
                    let _ = writeln!(
                        out,
                        "# {name} depends on {dep}, whose ports the compose file does not \
                         name: declare them under [services.{}] and add a flow.\n",
                        toml_key(&dep)
                    );
                }
            }
        }
    }
    out
}

fn port_entry(
    p: &Port,
    label: Option<&str>,
    groups: &mut BTreeSet<String>,
    used: &mut BTreeSet<(u16, String)>,
) -> String {
    let proto = if p.proto == "tcp" {
        String::new()
    } else {
        format!(", proto = \"{}\"", p.proto)
    };
    let internal = format!("{{ port = {}{proto} }}", p.target);
    let Some(host) = p.published else {
        if p.random_host_port {
            // Docker picks the host port: palisade needs to know it.
            return format!(
                "{internal}, # compose publishes it on a random host port: add \
                 publish = PORT and expose"
            );
        }
        return internal;
    };
    if !used.insert((host, p.proto.clone())) {
        return internal;
    }
    let loopback = p
        .host_ip
        .as_deref()
        .is_some_and(|ip| ip.starts_with("127.") || ip == "::1");
    let expose = match label.map(str::trim) {
        Some("internal") => return internal,
        Some("public") => "\"public\"".to_string(),
        Some("loopback") => "\"loopback\"".to_string(),
        Some(list) if !list.is_empty() => {
            let names: Vec<String> = list
                .split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| is_group_name(g))
                .collect();
            if names.is_empty() {
                "\"public\"".to_string()
            } else {
                groups.extend(names.iter().cloned());
                let quoted: Vec<String> =
                    names.iter().map(|g| format!("\"{g}\"")).collect();
                format!("[{}]", quoted.join(", "))
            }
        }
        _ if loopback => "\"loopback\"".to_string(),
        _ => "\"public\"".to_string(),
    };
    format!(
        "{{ port = {}{proto}, publish = {host}, expose = {expose} }}",
        p.target
    )
}

fn is_group_name(g: &str) -> bool {
    !g.is_empty()
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !["public", "internal", "loopback", "any"].contains(&g)
}

/// A TOML key, quoted when it is not a bare key.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        k.to_string()
    } else {
        format!("\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
