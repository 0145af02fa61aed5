//! The agent in a pair of namespaces joined by a veth: serve, probe,
//! burst, and a per-source limit loaded into the server's namespace.
//! Needs root; skipped (with a message) otherwise. Takes a few seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use palisade_lab::runner::{self, Job, Server};
use palisade_lab::topo::{unique_prefix, Netns, Place};
use palisade_lab::Proto;

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_palisade-lab-agent"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines().any(|l| {
                l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")
            })
        })
        .unwrap_or(false)
}

/// Two namespaces, `a` (192.0.2.1, 2001:db8::1) and `b` (192.0.2.2,
/// 2001:db8::2), joined by a veth; deleted when dropped.
fn pair() -> (Netns, Netns) {
    let p = unique_prefix();
    let a = Netns::add(&format!("{p}a")).expect("netns a");
    let b = Netns::add(&format!("{p}b")).expect("netns b");
    a.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name,
    ])
    .expect("veth");
    for (ns, v4, v6) in [
        (&a, "192.0.2.1/24", "2001:db8::1/64"),
        (&b, "192.0.2.2/24", "2001:db8::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", "eth0"]).expect("v4");
        ns.ip(&["-6", "addr", "add", v6, "dev", "eth0", "nodad"])
            .expect("v6");
        ns.ip(&["link", "set", "eth0", "up"]).expect("up");
        ns.ip(&["link", "set", "lo", "up"]).expect("lo");
    }
    a.wait_link("eth0").expect("a ready");
    b.wait_link("eth0").expect("b ready");
    (a, b)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn serve_and_probe_tcp_udp_v4_v6() {
    if !is_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let (a, b) = pair();
    let _server = Server::start(
        &agent(),
        &Place::Netns(b.name.clone()),
        &[80, 22],
        &[53],
        &[],
        "test server",
    )
    .expect("server starts");

    let from = Place::Netns(a.name.clone());
    let cases = [
        (Proto::Tcp, "192.0.2.2:80", true),
        (Proto::Tcp, "[2001:db8::2]:22", true),
        (Proto::Tcp, "192.0.2.2:81", false),
        (Proto::Udp, "192.0.2.2:53", true),
        (Proto::Udp, "[2001:db8::2]:53", true),
        (Proto::Udp, "192.0.2.2:54", false),
        // Nobody there: a timeout.
        (Proto::Tcp, "192.0.2.9:80", false),
    ];
    let jobs: Vec<Job> = cases
        .iter()
        .map(|(proto, to, _)| Job {
            place: from.clone(),
            proto: *proto,
            addr: addr(to),
        })
        .collect();
    let mut seen = 0;
    let replies = runner::probe_all(
        &agent(),
        &jobs,
        4,
        Duration::from_millis(500),
        |_, _, _, _| seen += 1,
    )
    .expect("probes run");
    assert_eq!(seen, cases.len());
    for ((proto, to, open), r) in cases.iter().zip(&replies) {
        assert_eq!(r.open, *open, "{to}/{proto:?}: {}", r.detail);
    }
    assert_eq!(replies[2].detail, "refused");
    assert_eq!(replies[6].detail, "timeout");
}

#[test]
fn flood_gets_through_without_a_limit_and_is_cut_with_one() {
    if !is_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let (a, b) = pair();
    let _server = Server::start(
        &agent(),
        &Place::Netns(b.name.clone()),
        &[80],
        &[],
        &[],
        "test server",
    )
    .expect("server starts");
    let from = Place::Netns(a.name.clone());
    let to = addr("192.0.2.2:80");

    // No firewall: the listener itself must not cut a flood, or the lab
    // would report rate limits that do not exist.
    let r = runner::burst(&agent(), &from, to, 300, Duration::from_millis(500))
        .expect("burst runs");
    assert_eq!((r.attempts, r.connected), (300, 300), "{r:?}");

    // A per-source limit in b's namespace cuts the same flood.
    let rules = "table inet t {
        set m { type ipv4_addr; flags dynamic,timeout; timeout 1m; }
        chain input {
            type filter hook input priority 0; policy accept;
            tcp dport 80 ct state new update @m { ip saddr limit rate over 10/second burst 20 packets } drop
        }
    }";
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), rules).expect("write rules");
    let ok = b
        .exec(&"nft", &["-f", &file.path().display().to_string()])
        .status()
        .expect("nft runs")
        .success();
    assert!(ok, "nft loads the test limit");
    let r = runner::burst(&agent(), &from, to, 300, Duration::from_millis(500))
        .expect("burst runs");
    assert!(r.connected >= 10 && r.connected <= 40, "{r:?}");
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    assert!(palisade_lab::agent_main(&[]).is_err());
    assert!(palisade_lab::agent_main(&args(&["dance"])).is_err());
    assert!(palisade_lab::agent_main(&args(&["serve", "--tcp", "http"])).is_err());
    assert!(palisade_lab::agent_main(&args(&["serve", "--tcp", "0"])).is_err());
    assert!(palisade_lab::agent_main(&args(&["probe", "tcp", "nowhere"])).is_err());
    assert!(palisade_lab::agent_main(&args(&["burst"])).is_err());
    assert!(palisade_lab::agent_main(&args(&[
        "lab-agent",
        "probe",
        "sctp",
        "192.0.2.1:1"
    ]))
    .is_err());
}
