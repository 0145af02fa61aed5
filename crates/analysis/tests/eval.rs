//! The packet-path model on a Docker host with UFW: published ports pass
//! UFW's deny, other ports do not, undecidable matches give "may pass".

use std::net::IpAddr;

use palisade_analysis::eval::{self, Fate, Firewall, HostInfo, Packet, L4};
use palisade_analysis::iptables;

fn dump() -> iptables::Dump {
    let text = include_str!("data/docker-ufw.iptables-save");
    iptables::parse(text, "docker-ufw.iptables-save").expect("parses")
}

fn evaluate(d: &iptables::Dump, host: &HostInfo, p: &Packet) -> eval::Decision {
    eval::evaluate(&Firewall::iptables(d), host, p)
}

fn host() -> HostInfo {
    HostInfo {
        local: vec![ip("203.0.113.10"), ip("192.0.2.1")],
        routes: vec![
            ("0.0.0.0/0".parse().expect("net"), "eth0".into()),
            ("203.0.113.0/28".parse().expect("net"), "eth0".into()),
            (
                "192.0.2.0/24".parse().expect("net"),
                "br-5348d0a9e4ea".into(),
            ),
        ],
        ..Default::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn from_internet(dport: u16) -> Packet {
    Packet {
        src: ip("198.51.100.7"),
        dst: ip("203.0.113.10"),
        proto: L4::Tcp,
        sport: 40000,
        dport,
        iif: Some("eth0".into()),
        oif: None,
        orig_dst: None,
    }
}

#[test]
fn a_published_port_passes_ufws_deny_through_dnat() {
    let d = evaluate(&dump(), &host(), &from_internet(8080));
    assert_eq!(d.fate, Fate::Pass, "{:#?}", d.trail);
    assert_eq!(d.packet.dst, ip("192.0.2.2"));
    assert_eq!(d.packet.dport, 80);
    assert_eq!(d.packet.oif.as_deref(), Some("br-5348d0a9e4ea"));
    let deciding = d
        .trail
        .iter()
        .rev()
        .find(|h| h.effect == "accept")
        .expect("accept");
    assert_eq!(deciding.chain, "DOCKER");
    assert!(d
        .trail
        .iter()
        .any(|h| h.effect.starts_with("dnat to 192.0.2.2:80")));
}

#[test]
fn an_unpublished_port_is_blocked_by_ufw() {
    let d = evaluate(&dump(), &host(), &from_internet(8765));
    assert_eq!(d.fate, Fate::Blocked, "{:#?}", d.trail);
    // UFW has no catch-all rule: INPUT's DROP policy decides.
    let last = d.trail.last().expect("trail");
    assert_eq!(
        (last.chain.as_str(), last.effect.as_str()),
        ("INPUT", "policy drop")
    );
}

#[test]
fn ssh_is_allowed_by_ufw() {
    let d = evaluate(&dump(), &host(), &from_internet(22));
    assert_eq!(d.fate, Fate::Pass);
    assert_eq!(
        d.trail.last().map(|h| h.chain.as_str()),
        Some("ufw-user-input")
    );
}

#[test]
fn a_per_source_limit_lets_a_sources_first_connection_pass() {
    // `ufw limit`: `recent` per source; a fresh source is in no list.
    let d = evaluate(&dump(), &host(), &from_internet(2222));
    assert_eq!(d.fate, Fate::Pass, "{:#?}", d.trail);
    assert_eq!(
        d.trail.last().map(|h| h.chain.as_str()),
        Some("ufw-user-limit-accept")
    );
}

#[test]
fn a_global_rate_limit_may_pass() {
    let text = "*filter\n:INPUT DROP [0:0]\n\
                -A INPUT -p tcp -m tcp --dport 25 -m limit --limit 3/min -j ACCEPT\nCOMMIT\n";
    let d = iptables::parse(text, "t").expect("parses");
    assert_eq!(
        evaluate(&d, &host(), &from_internet(25)).fate,
        Fate::MayPass
    );
    assert_eq!(
        evaluate(&d, &host(), &from_internet(26)).fate,
        Fate::Blocked
    );
}

#[test]
fn routing_straight_to_a_container_passes_docker_20_10_on_its_port_only() {
    let mut p = from_internet(80);
    p.dst = ip("192.0.2.2");
    // Not DNATed: DOCKER accepts by container address and port, which
    // Docker 20.10 does not tie to DNAT. The model must say it passes.
    let d = evaluate(&dump(), &host(), &p);
    assert_eq!(d.fate, Fate::Pass, "{:#?}", d.trail);
    p.dport = 81;
    assert_eq!(evaluate(&dump(), &host(), &p).fate, Fate::Blocked);
}

#[test]
fn the_host_may_open_new_connections() {
    let p = Packet {
        src: ip("203.0.113.10"),
        dst: ip("198.51.100.1"),
        proto: L4::Udp,
        sport: 40000,
        dport: 53,
        iif: None,
        oif: None,
        orig_dst: None,
    };
    assert_eq!(evaluate(&dump(), &host(), &p).fate, Fate::Pass);
}

#[test]
fn ipset_members_decide_set_matches() {
    let text = "*filter\n:INPUT DROP [0:0]\n\
                -A INPUT -p tcp -m tcp --dport 22 -m set --match-set admins src -j ACCEPT\n\
                -A INPUT -p tcp -m tcp --dport 23 -m set --match-set ports src,dst -j ACCEPT\n\
                COMMIT\n";
    let d = iptables::parse(text, "t").expect("parses");
    let mut h = host();
    h.ipsets = palisade_analysis::host::ipsets(
        "create admins hash:net family inet\nadd admins 198.51.100.0/24\n\
         create ports hash:ip,port family inet\nadd ports 198.51.100.7,tcp:23\n",
    );
    assert_eq!(evaluate(&d, &h, &from_internet(22)).fate, Fate::Pass);
    let mut stranger = from_internet(22);
    stranger.src = ip("203.0.113.50");
    assert_eq!(evaluate(&d, &h, &stranger).fate, Fate::Blocked);
    // Pairs are not modelled: may pass.
    assert_eq!(evaluate(&d, &h, &from_internet(23)).fate, Fate::MayPass);
    // A set the collection does not have: may pass, never blocked.
    h.ipsets.clear();
    assert_eq!(evaluate(&d, &h, &stranger).fate, Fate::MayPass);
}

mod docker_28 {
    //! Docker 28's layout: DOCKER-FORWARD, the ipset of bridges, raw drops
    //! against direct routing.

    use super::*;

    fn dump() -> iptables::Dump {
        iptables::parse(include_str!("data/docker-28.iptables-save"), "docker-28")
            .expect("parses")
    }

    fn host28() -> HostInfo {
        let mut h = host();
        h.routes = vec![
            ("0.0.0.0/0".parse().expect("net"), "eth0".into()),
            (
                "192.0.2.0/24".parse().expect("net"),
                "br-0a1b2c3d4e5f".into(),
            ),
        ];
        h.ipsets = palisade_analysis::host::ipsets(
            "create docker-ext-bridges-v4 hash:net family inet\nadd docker-ext-bridges-v4 192.0.2.0/24\n",
        );
        h
    }

    #[test]
    fn a_published_port_passes_through_docker_forward() {
        let d = evaluate(&dump(), &host28(), &from_internet(8080));
        assert_eq!(d.fate, Fate::Pass, "{:#?}", d.trail);
        assert_eq!(d.packet.dst, ip("192.0.2.2"));
        assert!(d.trail.iter().any(|h| h.chain == "DOCKER-FORWARD"));
    }

    #[test]
    fn routing_straight_to_the_container_is_dropped_in_raw() {
        let mut p = from_internet(80);
        p.dst = ip("192.0.2.2");
        let d = evaluate(&dump(), &host28(), &p);
        assert_eq!(d.fate, Fate::Blocked, "{:#?}", d.trail);
        assert_eq!(d.trail.last().map(|h| h.table.as_str()), Some("raw"));
        // An unpublished port of the container: DOCKER's final drop.
        p.dport = 5432;
        let d = evaluate(&dump(), &host28(), &p);
        assert_eq!(d.fate, Fate::Blocked, "{:#?}", d.trail);
        assert_eq!(d.trail.last().map(|h| h.chain.as_str()), Some("DOCKER"));
    }

    #[test]
    fn without_the_ipset_the_answer_is_may_pass_not_blocked() {
        let mut h = host28();
        h.ipsets.clear();
        let d = evaluate(&dump(), &h, &from_internet(8080));
        assert_eq!(d.fate, Fate::MayPass, "{:#?}", d.trail);
    }
}
