//! docker-compose files: what each service publishes and how it runs.
//!
//! Only the keys that matter to network exposure and container hardening
//! are read; everything else in a compose file is ignored. Values keep
//! their line so findings can point at them. `${VAR:-default}` in ports is
//! read as its default; a variable without a default is left unresolved
//! and reported as such rather than guessed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// A compose file, as far as palisade reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ComposeFile {
    pub services: BTreeMap<String, Spanned<ComposeService>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ComposeService {
    pub image: Option<String>,
    pub container_name: Option<String>,
    pub privileged: Option<Spanned<bool>>,
    pub network_mode: Option<Spanned<String>>,
    pub volumes: Vec<Spanned<Volume>>,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub read_only: Option<bool>,
    pub user: Option<Scalar>,
    pub security_opt: Vec<String>,
    pub environment: Option<Environment>,
    pub ports: Vec<Spanned<PortSpec>>,
    pub expose: Vec<Scalar>,
    pub depends_on: Option<DependsOn>,
    pub links: Vec<String>,
    pub labels: Option<Labels>,
}

/// A YAML scalar that may be written as a number or a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Volume {
    Short(String),
    Long {
        source: Option<String>,
        target: Option<String>,
    },
}

impl Volume {
    pub fn source(&self) -> Option<&str> {
        match self {
            Volume::Short(s) => s.split(':').next(),
            Volume::Long { source, .. } => source.as_deref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    List(Vec<Spanned<String>>),
    Map(BTreeMap<String, Spanned<Option<Scalar>>>),
}

impl Environment {
    /// (name, literal value, line); the value is `None` when it comes
    /// from the host's environment.
    pub fn pairs(&self) -> Vec<(String, Option<String>, usize)> {
        match self {
            Environment::List(list) => list
                .iter()
                .map(|e| {
                    let line = e.referenced.line() as usize;
                    match e.value.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string()), line),
                        None => (e.value.clone(), None, line),
                    }
                })
                .collect(),
            Environment::Map(map) => map
                .iter()
                .map(|(k, v)| {
                    let line = v.referenced.line() as usize;
                    (k.clone(), v.value.as_ref().map(Scalar::text), line)
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, serde::de::IgnoredAny>),
}

impl DependsOn {
    pub fn names(&self) -> Vec<String> {
        match self {
            DependsOn::List(l) => l.clone(),
            DependsOn::Map(m) => m.keys().cloned().collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    List(Vec<String>),
    Map(BTreeMap<String, Option<Scalar>>),
}

impl Labels {
    pub fn get(&self, key: &str) -> Option<String> {
        match self {
            Labels::List(l) => l.iter().find_map(|e| {
                e.split_once('=')
                    .filter(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }),
            Labels::Map(m) => m.get(key).and_then(|v| v.as_ref().map(Scalar::text)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Short(Scalar),
    Long {
        target: Scalar,
        published: Option<Scalar>,
        host_ip: Option<String>,
        protocol: Option<String>,
    },
}

/// One published (or only exposed) container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Address Docker binds on the host; `None` means all addresses.
    pub host_ip: Option<String>,
    /// Host port; `None` when only the container port is given (Docker
    /// then picks a random host port, see `random_host_port`) or unresolved.
    pub published: Option<u16>,
    /// Published on a host port Docker picks (`ports: ["9000"]`).
    pub random_host_port: bool,
    pub target: u16,
    pub proto: String,
    pub line: usize,
}

/// Why a compose file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ComposeError {
    pub file: String,
    pub message: String,
}

pub fn parse(text: &str, file: &str) -> Result<ComposeFile, ComposeError> {
    serde_saphyr::from_str(text).map_err(|e| ComposeError {
        file: file.to_string(),
        // The YAML reader names its input `<input>`; say which file it is.
        message: e.to_string().replace("<input>", file),
    })
}

/// `${VAR:-default}` and `${VAR-default}` become the default; plain
/// `${VAR}` cannot be resolved.
fn interpolate(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let inner = &after[..end];
        let default = inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
            .map(|(_, d)| d)?;
        out.push_str(default);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

impl ComposeService {
    /// Port entries that cannot be read (`"abc"`, `"70000:80"`), with their
    /// line. Entries with a variable that has no default are not counted.
    pub fn unreadable_ports(&self) -> Vec<(usize, String)> {
        self.ports
            .iter()
            .filter_map(|spec| match &spec.value {
                PortSpec::Short(s) => {
                    let text = interpolate(&s.text())?;
                    short_port(&text, 0)
                        .is_empty()
                        .then(|| (spec.referenced.line() as usize, s.text()))
                }
                PortSpec::Long { .. } => None,
            })
            .collect()
    }

    /// Every port mapping of the service. Ranges give one entry per port.
    pub fn ports(&self) -> Vec<Port> {
        let mut out = Vec::new();
        for spec in &self.ports {
            let line = spec.referenced.line() as usize;
            match &spec.value {
                PortSpec::Short(s) => {
                    let Some(text) = interpolate(&s.text()) else {
                        continue;
                    };
                    out.extend(short_port(&text, line));
                }
                PortSpec::Long {
                    target,
                    published,
                    host_ip,
                    protocol,
                } => {
                    let Some(target) =
                        interpolate(&target.text()).and_then(|t| t.parse().ok())
                    else {
                        continue;
                    };
                    let published = published
                        .as_ref()
                        .and_then(|p| interpolate(&p.text()))
                        .and_then(|p| p.parse().ok());
                    out.push(Port {
                        host_ip: host_ip.clone().filter(|h| h != "0.0.0.0" && h != "::"),
                        random_host_port: published.is_none(),
                        published,
                        target,
                        proto: protocol.clone().unwrap_or_else(|| "tcp".into()),
                        line,
                    });
                }
            }
        }
        for e in &self.expose {
            let text = e.text();
            let (port, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
            if let Ok(target) = port.parse() {
                out.push(Port {
                    host_ip: None,
                    published: None,
                    random_host_port: false,
                    target,
                    proto: proto.to_string(),
                    line: 0,
                });
            }
        }
        out
    }
}

/// `[IP:][HOST:]CONTAINER[/PROTO]`, with ranges `8000-8002:8000-8002`.
fn short_port(text: &str, line: usize) -> Vec<Port> {
    let (body, proto) = text.rsplit_once('/').unwrap_or((text, "tcp"));
    // An IPv6 host address is written in brackets.
    let (host_ip, rest) = match body.strip_prefix('[') {
        Some(r) => match r.split_once("]:") {
            Some((ip, rest)) => (Some(ip.to_string()), rest),
            None => return Vec::new(),
        },
        None => {
            let parts: Vec<&str> = body.split(':').collect();
            match parts.len() {
                3 => (Some(parts[0].to_string()), &body[parts[0].len() + 1..]),
                _ => (None, body),
            }
        }
    };
    let (published, target) = match rest.split_once(':') {
        Some((p, t)) => (Some(p), t),
        None => (None, rest),
    };
    let range = |s: &str| -> Option<(u16, u16)> {
        match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let p = s.parse().ok()?;
                Some((p, p))
            }
        }
    };
    let Some((t0, t1)) = range(target) else {
        return Vec::new();
    };
    let published = match published.filter(|p| !p.is_empty()) {
        Some(p) => match range(p) {
            Some(r) => Some(r),
            None => return Vec::new(),
        },
        None => None,
    };
    let host_ip = host_ip.filter(|h| !h.is_empty() && h != "0.0.0.0" && h != "::");
    (t0..=t1)
        .enumerate()
        .map(|(i, target)| Port {
            host_ip: host_ip.clone(),
            random_host_port: published.is_none(),
            published: published.map(|(p0, _)| p0 + i as u16),
            target,
            proto: proto.to_string(),
            line,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_port_forms() {
        let p = short_port("127.0.0.1:8080:80", 3);
        assert_eq!(p[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!((p[0].published, p[0].target), (Some(8080), 80));
        let p = short_port("9000", 1);
        assert_eq!((p[0].published, p[0].target), (None, 9000));
        let p = short_port("53:53/udp", 1);
        assert_eq!(p[0].proto, "udp");
        let p = short_port("8000-8002:9000-9002", 1);
        assert_eq!(p.len(), 3);
        assert_eq!((p[2].published, p[2].target), (Some(8002), 9002));
        let p = short_port("[::1]:80:80", 1);
        assert_eq!(p[0].host_ip.as_deref(), Some("::1"));
        assert!(short_port("x:y", 1).is_empty());
    }

    #[test]
    fn interpolation_takes_defaults_only() {
        assert_eq!(interpolate("${PORT:-80}:5001").as_deref(), Some("80:5001"));
        assert_eq!(interpolate("${PORT}:5001"), None);
    }
}
