//! The packet-path model reads palisade's own table back from the kernel
//! (`nft -j list ruleset` in a throwaway namespace, with a Docker-like
//! DNAT table beside it) and agrees with the compiler's tracer.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use palisade_analysis::eval::{evaluate, Fate, Firewall, HostInfo, Packet, L4};
use palisade_analysis::{iptables, nftjson};
use palisade_compile::{compile, nft, Resolution, ResolvedService};

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("pa{}-nfteval", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip");
        assert!(ok.success(), "cannot create a namespace (needs root)");
        Netns(name)
    }

    fn nft(&self, args: &[&str], stdin: &str) -> String {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn palisades_table_read_back_from_the_kernel_decides_like_the_tracer() {
    let policy = palisade_policy::builtin();
    let mut res = Resolution::default();
    for (name, addr) in [("nginx", "192.0.2.9"), ("dashboard-backend", "192.0.2.4")] {
        res.services.insert(
            name.into(),
            ResolvedService {
                containers: vec![name.into()],
                v4: vec![addr.parse().expect("v4")],
                v6: vec![],
            },
        );
    }
    res.bridges = vec!["br-lab".into()];
    let rs = compile(&policy, &res);
    let ns = Netns::new();
    ns.nft(&["-f", "-"], &nft::render(&rs));
    // What Docker's published ports look like in native nftables.
    ns.nft(
        &["-f", "-"],
        "table ip dockernat {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  \
         fib daddr type local tcp dport 80 dnat to 192.0.2.9:80\n  \
         fib daddr type local tcp dport 8000 dnat to 192.0.2.4:8000\n }\n}\n",
    );
    let json = ns.nft(&["-j", "list", "ruleset"], "");
    let rules = nftjson::parse(&json).expect("nft -j output parses");
    let empty = iptables::Dump::default();
    let fw = Firewall {
        iptables: &empty,
        nft: Some(&rules),
    };
    let host = HostInfo {
        local: vec![ip("203.0.113.10")],
        routes: vec![
            ("0.0.0.0/0".parse().expect("net"), "eth0".into()),
            ("192.0.2.0/24".parse().expect("net"), "br-lab".into()),
        ],
        ..Default::default()
    };
    let to_host = |src: &str, port: u16| Packet {
        src: ip(src),
        dst: ip("203.0.113.10"),
        proto: L4::Tcp,
        sport: 40000,
        dport: port,
        iif: Some("eth0".into()),
        oif: None,
        orig_dst: None,
    };

    // SSH: admins only; a source's first connection is under its limit.
    let d = evaluate(&fw, &host, &to_host("198.51.100.10", 22));
    assert_eq!(d.fate, Fate::Pass, "{:#?}", d.trail);
    let d = evaluate(&fw, &host, &to_host("203.0.113.99", 22));
    assert_eq!(d.fate, Fate::Blocked, "{:#?}", d.trail);

    // A published port through DNAT: public, per-source limited.
    let d = evaluate(&fw, &host, &to_host("203.0.113.99", 80));
    assert_eq!(d.fate, Fate::Pass, "{:#?}", d.trail);
    assert_eq!(d.packet.dst, ip("192.0.2.9"));

    // The dashboard backend: trusted sources only.
    let d = evaluate(&fw, &host, &to_host("198.51.100.77", 8000));
    assert_eq!(d.fate, Fate::Pass, "{:#?}", d.trail);
    let d = evaluate(&fw, &host, &to_host("203.0.113.99", 8000));
    assert_eq!(d.fate, Fate::Blocked, "{:#?}", d.trail);
    let last = d.trail.last().expect("trail");
    assert!(
        last.text.contains("forward-default") || last.text.contains("forward"),
        "{last:?}"
    );

    // An internal port, not published: dropped on input.
    let d = evaluate(&fw, &host, &to_host("203.0.113.99", 8765));
    assert_eq!(d.fate, Fate::Blocked);

    // Routed straight to a container, skipping DNAT: dropped.
    let mut direct = to_host("203.0.113.99", 80);
    direct.dst = ip("192.0.2.9");
    assert_eq!(evaluate(&fw, &host, &direct).fate, Fate::Blocked);
}
