//! What the policy's services are on this host, asked of Docker.
//!
//! A policy service is made of the running containers that carry the
//! compose label `com.docker.compose.service` with its name, or whose
//! container name is the service's `container` (or, if unset, the service
//! name). Their addresses on every network they are on fill the service's
//! sets; the bridge interfaces of those networks fill the `bridges` set.
//!
//! A service with no running container is reported, not refused: its sets
//! stay empty, which matches nothing, so the policy fails closed for it.
//!
//! Limitations: containers are matched by name only, so two compose
//! projects on one host with the same service name both count; networks of
//! drivers other than `bridge` contribute addresses but no interface.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use palisade_compile::{Resolution, ResolvedService};
use palisade_policy::Policy;

use crate::Error;

/// Compose's label naming a container's service.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// Default socket when neither `--docker-host` nor `DOCKER_HOST` is set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds before a request to Docker is given up.
const TIMEOUT_SECS: u64 = 10;

/// A [`Resolution`] and the services that had no running container.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub resolution: Resolution,
    /// Policy services with no running container (their sets stay empty).
    pub missing: Vec<String>,
    /// What Docker publishes for the policy's services: (service, port).
    pub published: Vec<(String, Published)>,
}

/// One port Docker publishes on the host for a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    /// The host address it is bound to; `None` for every address.
    pub host_ip: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: palisade_policy::Proto,
}

/// What Docker publishes against what the policy says, as warnings: ports
/// Docker publishes that the policy does not list (palisade drops them from
/// outside), and ports the policy publishes that Docker does not (nothing
/// answers there).
pub fn publish_warnings(policy: &Policy, resolved: &Resolved) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: BTreeSet<(String, u16, palisade_policy::Proto)> = BTreeSet::new();
    for (name, p) in &resolved.published {
        seen.insert((name.clone(), p.host_port, p.proto));
        let listed = policy.services.get(name).is_some_and(|s| {
            s.ports.iter().any(|sp| {
                sp.publish == Some(p.host_port)
                    && sp.port == p.container_port
                    && sp.proto == p.proto
            })
        });
        if !listed {
            let at = p.host_ip.map_or("0.0.0.0".to_string(), |a| a.to_string());
            out.push(format!(
                "service {name}: Docker publishes {at}:{}->{}/{}, which the policy does not \
                 list; palisade drops it from outside",
                p.host_port, p.container_port, p.proto
            ));
        }
    }
    for (name, svc) in &policy.services {
        if resolved.missing.contains(name) {
            continue;
        }
        for sp in &svc.ports {
            let Some(host) = sp.publish else {
                continue;
            };
            if !seen.contains(&(name.clone(), host, sp.proto)) {
                out.push(format!(
                    "service {name}: the policy publishes host port {host}/{} but Docker \
                     does not publish it; nothing answers there",
                    sp.proto
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The Docker endpoint to use: `explicit`, else `DOCKER_HOST`, else the
/// default socket. A bare path is taken as a unix socket.
pub fn docker_host(explicit: Option<&str>) -> String {
    let host = explicit
        .map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    match host.starts_with('/') {
        true => format!("unix://{host}"),
        false => host,
    }
}

/// One container as far as resolution cares.
#[derive(Debug, Clone, Default)]
pub struct Container {
    pub id: String,
    /// Names without Docker's leading `/`.
    pub names: Vec<String>,
    pub labels: HashMap<String, String>,
    /// One per network the container is on.
    pub endpoints: Vec<Endpoint>,
    /// Ports Docker publishes on the host for it.
    pub published: Vec<Published>,
}

#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub network_id: String,
    pub network_name: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// A Docker network: its name, driver and options.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub options: HashMap<String, String>,
}

/// The Linux bridge behind a network, `None` for non-bridge drivers.
pub fn bridge_name(net: &NetworkInfo) -> Option<String> {
    if net.driver != "bridge" {
        return None;
    }
    if let Some(name) = net.options.get("com.docker.network.bridge.name") {
        if !name.is_empty() {
            return Some(name.clone());
        }
    }
    if net.name == "bridge" {
        return Some("docker0".into());
    }
    let short: String = net.id.chars().take(12).collect();
    Some(format!("br-{short}"))
}

/// Whether `c` belongs to policy service `name` (with container name
/// `container`, if the policy sets one).
pub fn belongs(c: &Container, name: &str, container: Option<&str>) -> bool {
    if c.labels.get(COMPOSE_SERVICE_LABEL).map(String::as_str) == Some(name) {
        return true;
    }
    let want = container.unwrap_or(name);
    c.names.iter().any(|n| n == want)
}

/// Maps the policy's services onto `containers` (running ones) on
/// `networks` (by id). Pure, so it is tested without Docker.
pub fn map_services(
    policy: &Policy,
    containers: &[Container],
    networks: &BTreeMap<String, NetworkInfo>,
) -> Resolved {
    let mut out = Resolved::default();
    let mut bridges = BTreeSet::new();
    for (name, svc) in &policy.services {
        let mut r = ResolvedService::default();
        for c in containers
            .iter()
            .filter(|c| belongs(c, name, svc.container.as_deref()))
        {
            r.containers
                .push(c.names.first().cloned().unwrap_or_else(|| c.id.clone()));
            for p in &c.published {
                out.published.push((name.clone(), p.clone()));
            }
            for ep in &c.endpoints {
                r.v4.extend(ep.v4);
                r.v6.extend(ep.v6);
                if let Some(b) = networks.get(&ep.network_id).and_then(bridge_name) {
                    bridges.insert(b);
                }
            }
        }
        r.v4.sort();
        r.v4.dedup();
        r.v6.sort();
        r.v6.dedup();
        if r.containers.is_empty() {
            out.missing.push(name.clone());
        }
        out.resolution.services.insert(name.clone(), r);
    }
    out.resolution.bridges = bridges.into_iter().collect();
    out
}

/// A client for `host`, speaking the daemon's API version.
async fn connect(host: &str) -> Result<Docker, Error> {
    let fail = |detail: String| Error::Docker {
        host: host.to_string(),
        detail,
    };
    let docker = match host.strip_prefix("unix://") {
        Some(path) => {
            Docker::connect_with_unix(path, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        None => Docker::connect_with_host(host),
    }
    .map_err(|e| fail(e.to_string()))?;
    // Older daemons refuse a client that speaks a newer API than theirs.
    docker
        .negotiate_version()
        .await
        .map_err(|e| fail(e.to_string()))
}

/// Every network the daemon has, with its driver options (for the audit).
pub fn networks(docker_host_arg: Option<&str>) -> Result<Vec<NetworkInfo>, Error> {
    let host = docker_host(docker_host_arg);
    let fail = |detail: String| Error::Docker {
        host: host.clone(),
        detail,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let docker = connect(&host).await?;
        let list = docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(|e| fail(format!("listing networks: {e}")))?;
        Ok(list
            .into_iter()
            .map(|n| NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                driver: n.driver.unwrap_or_default(),
                options: n.options.unwrap_or_default(),
            })
            .collect())
    })
}

/// Asks Docker at `host` (see [`docker_host`]) for the policy's services.
pub async fn resolve_async(policy: &Policy, host: &str) -> Result<Resolved, Error> {
    let fail = |detail: String| Error::Docker {
        host: host.to_string(),
        detail,
    };
    let docker = connect(host).await?;

    let summaries = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            ..Default::default()
        }))
        .await
        .map_err(|e| fail(format!("listing containers: {e}")))?;

    let mut containers = Vec::new();
    let mut network_ids = BTreeSet::new();
    for s in summaries {
        let mut c = Container {
            id: s.id.unwrap_or_default(),
            names: s
                .names
                .unwrap_or_default()
                .into_iter()
                .map(|n| n.trim_start_matches('/').to_string())
                .collect(),
            labels: s.labels.unwrap_or_default(),
            endpoints: Vec::new(),
            published: published_ports(s.ports.unwrap_or_default()),
        };
        let nets = s
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        for (net_name, ep) in nets {
            let network_id = ep.network_id.unwrap_or_default();
            if !network_id.is_empty() {
                network_ids.insert(network_id.clone());
            }
            c.endpoints.push(Endpoint {
                network_id,
                network_name: net_name,
                v4: ep.ip_address.and_then(|a| a.parse().ok()),
                v6: ep.global_ipv6_address.and_then(|a| a.parse().ok()),
            });
        }
        containers.push(c);
    }

    let mut networks = BTreeMap::new();
    for id in network_ids {
        let n = docker
            .inspect_network(&id, None)
            .await
            .map_err(|e| fail(format!("inspecting network {id}: {e}")))?;
        networks.insert(
            id.clone(),
            NetworkInfo {
                id: n.id.unwrap_or(id),
                name: n.name.unwrap_or_default(),
                driver: n.driver.unwrap_or_default(),
                options: n.options.unwrap_or_default(),
            },
        );
    }

    let resolved = map_services(policy, &containers, &networks);
    for name in &resolved.missing {
        tracing::debug!(
            service = %name,
            "no running container for this service: its sets stay empty"
        );
    }
    Ok(resolved)
}

/// The published ports of a container summary. Docker lists a port bound
/// on both 0.0.0.0 and :: twice; both mean "every address".
fn published_ports(ports: Vec<bollard::models::PortSummary>) -> Vec<Published> {
    use bollard::models::PortSummaryTypeEnum as T;
    let mut out: Vec<Published> = ports
        .into_iter()
        .filter_map(|p| {
            let host_port = p.public_port?;
            let proto = match p.typ {
                Some(T::UDP) => palisade_policy::Proto::Udp,
                Some(T::TCP) | None | Some(T::EMPTY) => palisade_policy::Proto::Tcp,
                Some(T::SCTP) => return None,
            };
            let host_ip =
                p.ip.as_deref()
                    .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                    .filter(|ip| !ip.is_unspecified());
            Some(Published {
                host_ip,
                host_port,
                container_port: p.private_port,
                proto,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Blocking [`resolve_async`]: runs it on a current-thread runtime.
pub fn resolve(
    policy: &Policy,
    docker_host_arg: Option<&str>,
) -> Result<Resolved, Error> {
    let host = docker_host(docker_host_arg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Docker {
            host: host.clone(),
            detail: format!("cannot start the async runtime: {e}"),
        })?;
    rt.block_on(resolve_async(policy, &host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(id: &str, name: &str, opts: &[(&str, &str)]) -> NetworkInfo {
        NetworkInfo {
            id: id.into(),
            name: name.into(),
            driver: "bridge".into(),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn bridge_names() {
        let id = "0123456789abcdef0123";
        assert_eq!(
            bridge_name(&net(id, "app_default", &[])).unwrap(),
            "br-0123456789ab"
        );
        assert_eq!(bridge_name(&net(id, "bridge", &[])).unwrap(), "docker0");
        let named = net(id, "x", &[("com.docker.network.bridge.name", "br-trading")]);
        assert_eq!(bridge_name(&named).unwrap(), "br-trading");
        let mut host = net(id, "host", &[]);
        host.driver = "host".into();
        assert_eq!(bridge_name(&host), None);
    }

    #[test]
    fn maps_by_label_and_by_name() {
        let policy = palisade_policy::builtin();
        let nets: BTreeMap<String, NetworkInfo> =
            [("n1".to_string(), net("n1aaaaaaaaaaaaaa", "trading", &[]))].into();
        let ep = |v4: &str| Endpoint {
            network_id: "n1".into(),
            network_name: "trading".into(),
            v4: Some(v4.parse().unwrap()),
            v6: None,
        };
        let tcp = |host: u16, container: u16| Published {
            host_ip: None,
            host_port: host,
            container_port: container,
            proto: palisade_policy::Proto::Tcp,
        };
        let containers = vec![
            Container {
                id: "c1".into(),
                names: vec!["stack-nginx-1".into()],
                labels: [(COMPOSE_SERVICE_LABEL.to_string(), "nginx".to_string())].into(),
                endpoints: vec![ep("192.0.2.10")],
                // 80 as the policy says; 443 not published; 8081 extra.
                published: vec![tcp(80, 80), tcp(8081, 8081)],
            },
            Container {
                id: "c2".into(),
                names: vec!["mcp-memory".into()],
                labels: HashMap::new(),
                endpoints: vec![ep("192.0.2.11")],
                published: vec![tcp(8765, 8765)],
            },
            Container {
                id: "c3".into(),
                names: vec!["unrelated".into()],
                labels: HashMap::new(),
                endpoints: vec![ep("192.0.2.12")],
                published: vec![tcp(9999, 9999)],
            },
        ];
        let r = map_services(&policy, &containers, &nets);
        let nginx = &r.resolution.services["nginx"];
        assert_eq!(nginx.v4, vec!["192.0.2.10".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(nginx.containers, vec!["stack-nginx-1".to_string()]);
        assert_eq!(r.resolution.services["mcp-memory"].v4.len(), 1);
        assert_eq!(r.resolution.bridges, vec!["br-n1aaaaaaaaaa".to_string()]);
        assert!(r.missing.contains(&"ai-trading-bot".to_string()));
        assert!(!r.missing.contains(&"nginx".to_string()));

        let w = publish_warnings(&policy, &r);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0]
            .starts_with("service mcp-memory: Docker publishes 0.0.0.0:8765->8765/tcp"));
        assert!(
            w[1].starts_with("service nginx: Docker publishes 0.0.0.0:8081->8081/tcp")
        );
        assert!(w[2].starts_with("service nginx: the policy publishes host port 443/tcp"));
    }
}
