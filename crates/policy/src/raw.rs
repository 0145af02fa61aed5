//! The policy file as written: serde types that mirror the TOML one to one.
//!
//! This layer only knows shapes: which keys exist and what type each value
//! has. Unknown keys are errors here. Whether a value makes sense (a group
//! that exists, a port that is published once) is `validate`'s job, which
//! turns these types into the model in `model`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// A palisade policy file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "palisade policy")]
pub struct RawPolicy {
    /// Format version of this file. Only 1 exists.
    pub version: Option<u32>,
    /// The host itself: its public interfaces and what it may send out.
    #[serde(default)]
    pub host: RawHost,
    /// Named address groups: CIDRs (IPv4 and IPv6) or single addresses.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// SSH to the host.
    pub ssh: Option<RawSsh>,
    /// ICMP and ICMPv6 handling.
    #[serde(default)]
    pub icmp: RawIcmp,
    /// Logging of dropped packets.
    #[serde(default)]
    pub logging: RawLogging,
    /// Defaults applied to every service.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// Docker networks the services run on.
    #[serde(default)]
    pub networks: BTreeMap<String, RawNetwork>,
    /// Services, keyed by their docker-compose service name.
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    /// Allowed container-to-container flows. Everything else between
    /// containers is dropped.
    #[serde(default)]
    pub flows: Vec<RawFlow>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// Interfaces that face the internet, e.g. ["eth0"].
    #[serde(default)]
    pub public_interfaces: Vec<String>,
    /// What the host itself may send out. Absent: host egress is not filtered.
    pub egress: Option<Vec<RawEgress>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    /// TCP port sshd listens on (default 22).
    pub port: Option<u16>,
    /// Who may connect: "public" or a list of group names.
    pub allow: RawExposure,
    /// New connections per source, e.g. "10/minute".
    pub rate: Option<String>,
    /// Burst allowed above the rate, in packets.
    pub burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIcmp {
    /// Answer echo requests (ping), IPv4 and IPv6. Default true.
    pub echo: Option<bool>,
    /// Echo requests per source, e.g. "5/second".
    pub rate: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// Log dropped packets (rate limited). Default true.
    pub drops: Option<bool>,
    /// Log lines per drop rule, e.g. "10/minute".
    pub rate: Option<String>,
    /// Prefix of every log line; the rule name follows it. Default "palisade".
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Egress every container gets: named presets ("dns", "ntp").
    /// Default ["dns", "ntp"].
    pub container_egress: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// IPv4 subnet of the Docker network, e.g. "192.0.2.0/24".
    pub subnet: Option<String>,
    /// IPv6 subnet of the Docker network, e.g. "2001:db8:c0::/64".
    pub subnet6: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Container name to match instead of the compose service name.
    pub container: Option<String>,
    /// Networks the service is attached to (default: all networks).
    pub networks: Option<Vec<String>>,
    /// Ports the container listens on.
    #[serde(default)]
    pub ports: Vec<RawPort>,
    /// Connections the container may open to the internet.
    #[serde(default)]
    pub egress: Vec<RawEgress>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    /// Port inside the container.
    pub port: u16,
    /// "tcp" (default) or "udp".
    pub proto: Option<String>,
    /// Host port Docker publishes this container port on.
    pub publish: Option<u16>,
    /// Who may reach the published port: "public", "loopback" or a list of
    /// group names. "internal" (the default) means not published.
    pub expose: Option<RawExposure>,
    /// New connections per source to the published port, e.g. "50/second".
    pub rate: Option<String>,
    /// Burst allowed above the rate, in packets.
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    /// "tcp" (default) or "udp".
    pub proto: Option<String>,
    /// Destination ports.
    pub ports: Vec<u16>,
    /// Destination CIDRs or group names; absent means anywhere.
    pub to: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    /// Client service.
    pub from: String,
    /// Server service.
    pub to: String,
    /// Container port on the server.
    pub port: u16,
    /// "tcp" (default) or "udp".
    pub proto: Option<String>,
}

/// `"public"`, `"internal"`, `"loopback"` or a list of group names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawExposure {
    Word(String),
    Groups(Vec<String>),
}

impl<'de> Deserialize<'de> for RawExposure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawExposure;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "\"public\", \"internal\", \"loopback\" or a list of group names",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawExposure, E> {
                Ok(RawExposure::Word(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawExposure, A::Error> {
                let mut groups = Vec::new();
                while let Some(g) = seq.next_element::<String>()? {
                    groups.push(g);
                }
                Ok(RawExposure::Groups(groups))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawExposure {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Exposure".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Who may reach it: \"public\", \"internal\", \"loopback\" or a list of group names.",
            "oneOf": [
                { "type": "string", "enum": ["public", "internal", "loopback"] },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 }
            ]
        })
    }
}
