//! A host's network state, live or from a folder `palisade collect` wrote.
//!
//! The folder holds the tools' own output, unchanged, so a user can share
//! it and anyone can re-run the analysis offline:
//!
//! | file | from |
//! |---|---|
//! | `iptables-save.txt`, `ip6tables-save.txt` | `iptables-save`, `ip6tables-save` |
//! | `nft.json` | `nft -j list ruleset` |
//! | `ip-addr.json`, `ip-route.json`, `ip6-route.json` | `ip -j addr`, `ip -j route`, `ip -6 -j route` |
//! | `listen.txt` | `ss -Hlntu` |
//! | `ipset.txt` | `ipset save` |
//! | `docker-networks.json` | the Docker Engine API's network list |
//!
//! A missing file is an empty state for that part, and is said so in
//! `HostState::missing`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipnet::IpNet;
use serde::Serialize;

use crate::eval::HostInfo;
use crate::iptables::{self, Dump};

/// The files of a collection and the commands that make them.
pub const SOURCES: &[(&str, &[&str])] = &[
    ("iptables-save.txt", &["iptables-save"]),
    ("ip6tables-save.txt", &["ip6tables-save"]),
    ("nft.json", &["nft", "-j", "list", "ruleset"]),
    ("ip-addr.json", &["ip", "-j", "addr"]),
    ("ip-route.json", &["ip", "-j", "route"]),
    ("ip6-route.json", &["ip", "-6", "-j", "route"]),
    ("listen.txt", &["ss", "-Hlntu"]),
    ("ipset.txt", &["ipset", "save"]),
];

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(#[from] iptables::ParseError),
    #[error("{path}: not the JSON `{what}` prints: {detail}")]
    Json {
        path: PathBuf,
        what: String,
        detail: String,
    },
}

/// A Docker network as the Engine API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DockerNetwork {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub options: std::collections::BTreeMap<String, String>,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub proto: String,
    pub addr: Option<IpAddr>,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostState {
    pub v4: Dump,
    pub v6: Dump,
    pub info: HostInfo,
    /// Interfaces with a default route: where the internet comes in.
    pub uplinks: Vec<String>,
    /// Addresses on the uplinks: what the internet connects to.
    pub public_addrs: Vec<IpAddr>,
    pub listeners: Vec<Listener>,
    /// The whole nftables ruleset, when collected.
    #[serde(skip)]
    pub nft: Option<crate::nftjson::NftRuleset>,
    /// Native nftables tables (not iptables-nft's own `ip filter`, `ip
    /// nat`, ...) that have base chains, for reports.
    pub other_nft_tables: Vec<String>,
    /// Every address with its interface.
    pub iface_addrs: Vec<(String, IpAddr)>,
    /// Docker's networks, when the collection reached Docker.
    pub docker_networks: Vec<DockerNetwork>,
    /// Files the collection lacked.
    pub missing: Vec<String>,
}

/// Runs the collection commands and writes their output into `dir`.
/// Returns the files that could not be made, with the reason.
pub fn collect(dir: &Path) -> Result<Vec<String>, HostError> {
    std::fs::create_dir_all(dir).map_err(|source| HostError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut failed = Vec::new();
    for (file, argv) in SOURCES {
        let out = Command::new(argv[0]).args(&argv[1..]).output();
        match out {
            Ok(o) if o.status.success() => {
                let path = dir.join(file);
                std::fs::write(&path, &o.stdout)
                    .map_err(|source| HostError::Io { path, source })?;
            }
            Ok(o) => failed.push(format!(
                "{file}: `{}` failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            // A tool the host does not have (ipset, often) leaves its file
            // out; `HostState::missing` says so when it is loaded.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failed.push(format!("{file}: cannot run `{}`: {e}", argv[0])),
        }
    }
    Ok(failed)
}

/// Loads a collection folder.
pub fn load(dir: &Path) -> Result<HostState, HostError> {
    let mut st = HostState::default();
    let read =
        |name: &str, missing: &mut Vec<String>| -> Result<Option<String>, HostError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    missing.push(name.to_string());
                    Ok(None)
                }
                Err(source) => Err(HostError::Io { path, source }),
            }
        };
    let mut missing = Vec::new();
    if let Some(t) = read("iptables-save.txt", &mut missing)? {
        st.v4 =
            iptables::parse(&t, &dir.join("iptables-save.txt").display().to_string())?;
    }
    if let Some(t) = read("ip6tables-save.txt", &mut missing)? {
        st.v6 =
            iptables::parse(&t, &dir.join("ip6tables-save.txt").display().to_string())?;
    }
    if let Some(t) = read("ip-addr.json", &mut missing)? {
        let addrs = addresses(&t).map_err(|detail| HostError::Json {
            path: dir.join("ip-addr.json"),
            what: "ip -j addr".into(),
            detail,
        })?;
        st.info.local = addrs.iter().map(|(_, a)| *a).collect();
        st.iface_addrs = addrs;
    }
    for name in ["ip-route.json", "ip6-route.json"] {
        if let Some(t) = read(name, &mut missing)? {
            let (routes, uplinks) = routes(&t).map_err(|detail| HostError::Json {
                path: dir.join(name),
                what: "ip -j route".into(),
                detail,
            })?;
            st.info.routes.extend(routes);
            for u in uplinks {
                if !st.uplinks.contains(&u) {
                    st.uplinks.push(u);
                }
            }
        }
    }
    st.public_addrs = st
        .iface_addrs
        .iter()
        .filter(|(i, a)| st.uplinks.contains(i) && !is_link_local(a))
        .map(|(_, a)| *a)
        .collect();
    if let Some(t) = read("docker-networks.json", &mut missing)? {
        st.docker_networks = serde_json::from_str(&t).map_err(|e| HostError::Json {
            path: dir.join("docker-networks.json"),
            what: "the Docker network list".into(),
            detail: e.to_string(),
        })?;
    }
    if let Some(t) = read("ipset.txt", &mut missing)? {
        st.info.ipsets = ipsets(&t);
    }
    if let Some(t) = read("listen.txt", &mut missing)? {
        st.listeners = listeners(&t);
    }
    if let Some(t) = read("nft.json", &mut missing)? {
        st.other_nft_tables = native_tables(&t);
        st.nft = Some(crate::nftjson::parse(&t).map_err(|detail| HostError::Json {
            path: dir.join("nft.json"),
            what: "nft -j list ruleset".into(),
            detail,
        })?);
    }
    st.missing = missing;
    Ok(st)
}

fn addresses(text: &str) -> Result<Vec<(String, IpAddr)>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for iface in v.as_array().ok_or("expected a list of interfaces")? {
        let name = iface["ifname"].as_str().unwrap_or_default().to_string();
        for a in iface["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str().and_then(|s| s.parse().ok()) {
                out.push((name.clone(), ip));
            }
        }
    }
    Ok(out)
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

type Routes = (Vec<(IpNet, String)>, Vec<String>);

fn routes(text: &str) -> Result<Routes, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut uplinks = Vec::new();
    for r in v.as_array().ok_or("expected a list of routes")? {
        let (Some(dst), Some(dev)) = (r["dst"].as_str(), r["dev"].as_str()) else {
            continue;
        };
        let v6 = r["gateway"].as_str().is_some_and(|g| g.contains(':'))
            || dst.contains(':')
            || r["prefsrc"].as_str().is_some_and(|p| p.contains(':'));
        let net = if dst == "default" {
            uplinks.push(dev.to_string());
            if v6 {
                "::/0".parse().ok()
            } else {
                "0.0.0.0/0".parse().ok()
            }
        } else {
            dst.parse::<IpNet>()
                .ok()
                .or_else(|| dst.parse::<IpAddr>().ok().map(IpNet::from))
        };
        if let Some(net) = net {
            out.push((net, dev.to_string()));
        }
    }
    Ok((out, uplinks))
}

/// `ss -Hlntu` lines: `tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*`.
fn listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let proto = cols.first()?.to_string();
            let local = cols.get(4)?;
            let (addr, port) = local.rsplit_once(':')?;
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            let addr = addr.split('%').next().unwrap_or(addr);
            let addr = match addr {
                "*" | "0.0.0.0" | "::" => None,
                a => a.parse().ok(),
            };
            Some(Listener {
                proto,
                addr,
                port: port.parse().ok()?,
            })
        })
        .collect()
}

/// Tables in `nft -j list ruleset` with base chains that iptables-nft did
/// not make (iptables-nft's tables are `ip`/`ip6` filter, nat, mangle, raw,
/// security and hold only its own chains).
fn native_tables(text: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let iptables_names = ["filter", "nat", "mangle", "raw", "security"];
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(chain) = item.get("chain") else {
            continue;
        };
        if chain.get("hook").is_none() {
            continue;
        }
        let family = chain["family"].as_str().unwrap_or_default();
        let table = chain["table"].as_str().unwrap_or_default();
        let ours = matches!(family, "ip" | "ip6") && iptables_names.contains(&table);
        let name = format!("{family} {table}");
        if !ours && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// `ipset save` output: the address sets (`hash:ip`, `hash:net`,
/// `bitmap:ip`) with their members. Sets of other types (ports, pairs) are
/// left out, so the model treats them as unknown.
pub fn ipsets(text: &str) -> std::collections::BTreeMap<String, Vec<IpNet>> {
    let mut kinds: std::collections::BTreeMap<String, bool> = Default::default();
    let mut out: std::collections::BTreeMap<String, Vec<IpNet>> = Default::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, kind, ..] => {
                let addresses = matches!(*kind, "hash:ip" | "hash:net" | "bitmap:ip");
                kinds.insert(name.to_string(), addresses);
                if addresses {
                    out.insert(name.to_string(), Vec::new());
                }
            }
            ["add", name, member, ..] if kinds.get(*name) == Some(&true) => {
                let net = member
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| member.parse::<IpAddr>().ok().map(IpNet::from));
                match (net, out.get_mut(*name)) {
                    (Some(n), Some(list)) => list.push(n),
                    // A member the model cannot read: the set is unknown.
                    _ => {
                        out.remove(*name);
                        kinds.insert(name.to_string(), false);
                    }
                }
            }
            _ => {}
        }
    }
    out
}
