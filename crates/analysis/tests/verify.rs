//! `verify` on a Docker host with UFW: the published port UFW "closes"
//! is a difference with its counterexample packet and Docker's rule.

use std::net::IpAddr;

use palisade_analysis::eval::{Fate, HostInfo};
use palisade_analysis::host::HostState;
use palisade_analysis::{iptables, verify};
use palisade_compile::{Resolution, ResolvedService};

const POLICY: &str = r#"
[host]
public_interfaces = ["eth0"]
[groups]
admin = ["198.51.100.10"]
[ssh]
allow = ["admin"]
[services.web]
ports = [{ port = 80, publish = 8080, expose = "loopback" }]
"#;

fn state() -> HostState {
    let text = include_str!("data/docker-ufw.iptables-save");
    let ip = |s: &str| s.parse::<IpAddr>().expect("address");
    HostState {
        v4: iptables::parse(text, "docker-ufw").expect("parses"),
        info: HostInfo {
            local: vec![ip("203.0.113.10"), ip("192.0.2.1")],
            routes: vec![
                ("0.0.0.0/0".parse().expect("net"), "eth0".into()),
                (
                    "192.0.2.0/24".parse().expect("net"),
                    "br-5348d0a9e4ea".into(),
                ),
            ],
            ..Default::default()
        },
        uplinks: vec!["eth0".into()],
        public_addrs: vec![ip("203.0.113.10")],
        iface_addrs: vec![("eth0".into(), ip("203.0.113.10"))],
        ..Default::default()
    }
}

#[test]
fn a_port_meant_for_loopback_that_docker_publishes_is_a_difference() {
    let policy = palisade_policy::parse(POLICY, "p.toml").expect("valid");
    let mut res = Resolution::default();
    res.services.insert(
        "web".into(),
        ResolvedService {
            containers: vec!["web".into()],
            v4: vec!["192.0.2.2".parse().expect("v4")],
            v6: vec![],
        },
    );
    let v = verify::verify(&policy, &res, &state());
    let web: Vec<_> = v
        .differences
        .iter()
        .filter(|d| d.packet.orig_dst.is_some_and(|(_, p)| p == 8080))
        .collect();
    assert!(!web.is_empty(), "{:#?}", v.differences);
    let d = web[0];
    assert!(!d.expected_open);
    assert_eq!(d.fate, Fate::Pass);
    assert_eq!(d.packet.dst, "192.0.2.2".parse::<IpAddr>().expect("v4"));
    assert!(d.decided_by.contains("DOCKER"), "{}", d.decided_by);

    // UFW lets every source reach SSH; the policy only the admin.
    assert!(v
        .differences
        .iter()
        .any(|d| d.intent.starts_with("ssh 22/tcp") && d.intent.ends_with("a stranger")));
    assert!(
        !v.differences
            .iter()
            .any(|d| d.intent.starts_with("ssh 22/tcp")
                && d.intent.ends_with("group admin"))
    );
}

#[test]
fn shared_limits_and_unknown_interfaces_are_findings() {
    let mut st = state();
    let extra = "*filter\n:INPUT DROP [0:0]\n\
                 -A INPUT -p tcp -m tcp --dport 25 -m limit --limit 3/min -j ACCEPT\n\
                 -A INPUT -i wg0 -p tcp -m tcp --dport 26 -j ACCEPT\n\
                 -A INPUT -i eth+ -p tcp -m tcp --dport 27 -j ACCEPT\nCOMMIT\n";
    st.v4 = iptables::parse(extra, "extra").expect("parses");
    let f = palisade_analysis::audit::rule_findings(&st, "extra");
    let ids: Vec<&str> = f.iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        ["host/shared-rate-limit", "host/unknown-interface"],
        "{f:#?}"
    );
    assert!(f[1].message.contains("`wg0`"));
}

#[test]
fn docker_options_docker_ignores_and_open_networks_are_findings() {
    use palisade_analysis::host::DockerNetwork;
    let mut st = state();
    let net = |name: &str, opts: &[(&str, &str)]| DockerNetwork {
        id: format!("{name}-id"),
        name: name.into(),
        driver: "bridge".into(),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    st.docker_networks = vec![
        net(
            "typo",
            &[("com.docker.network.bridge.enable_icc_", "false")],
        ),
        net(
            "closed",
            &[("com.docker.network.bridge.enable_icc", "false")],
        ),
    ];
    let f = palisade_analysis::audit::docker_findings(&st, "c");
    let got: Vec<(&str, &str)> = f.iter().map(|f| (f.id, f.subject.as_str())).collect();
    assert_eq!(
        got,
        [
            ("docker/ignored-network-option", "network typo"),
            ("docker/inter-container-open", "network typo"),
        ]
    );
    assert!(
        f[0].fix.contains("com.docker.network.bridge.enable_icc`"),
        "{}",
        f[0].fix
    );
}

#[test]
fn shadowed_rules_and_loopback_ports_published_everywhere() {
    // The UFW host: 8080 allowed "from 127.0.0.1" while Docker DNATs it.
    let f = palisade_analysis::audit::structure_findings(&state(), "ufw");
    let lo: Vec<_> = f
        .iter()
        .filter(|f| f.id == "host/loopback-port-published")
        .collect();
    assert_eq!(lo.len(), 1, "{f:#?}");
    assert_eq!(lo[0].subject, "8080/tcp");

    let mut st = state();
    st.v4 = iptables::parse(
        "*filter\n:INPUT DROP [0:0]\n\
         -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
         -A INPUT -p tcp -m tcp --dport 22 -m limit --limit 3/min -j DROP\n\
         -A INPUT -s 198.51.100.0/24 -p tcp -m multiport --dports 80,443 -j ACCEPT\n\
         -A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 443 -j DROP\n\
         -A INPUT -p tcp -m tcp --dport 443 -j DROP\nCOMMIT\n",
        "shadow",
    )
    .expect("parses");
    let lines: Vec<usize> = palisade_analysis::audit::structure_findings(&st, "s")
        .iter()
        .filter(|f| f.id == "host/shadowed-rule")
        .map(|f| f.line)
        .collect();
    // Line 4 (the limit below the allow) and line 6 (a /32 inside the
    // allowed /24); line 7 reaches sources outside the /24.
    assert_eq!(lines, [4, 6]);
}
