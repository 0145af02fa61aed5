//! The lab's network: namespaces, veth pairs, addresses and routes.
//!
//! ```text
//!             client 203.0.113.70/27   2001:db8:64::70/64
//!               |
//!  attacker ---inet--- vps (eth0) 203.0.113.10/28  2001:db8:113::10/64
//!  .99/27       |        the Docker host under test
//!             admin  198.51.100.10/24  2001:db8:100::10/64
//! ```
//!
//! `inet` is a router and also "the internet": it answers on 203.0.113.1 and
//! 2001:db8:113::1. Every name carries a per-run prefix (`pl<pid><n>-`) so
//! several labs can run at once. Only documentation ranges are used. A
//! [`Netns`] deletes its namespace when dropped, so an error, a panic or a
//! Ctrl-C never leaves one behind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;

use crate::cmd::{self, command, run30};

/// A network namespace this lab created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn add(name: &str) -> Result<Netns> {
        run30(&mut command("ip", &["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
        };
        // No duplicate address detection on interfaces that arrive later:
        // IPv6 works at once, not a second or two after the link is up.
        run30(&mut ns.exec(
            &"sysctl",
            &[
                "-qw",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.accept_dad=0",
            ],
        ))?;
        Ok(ns)
    }

    /// `ip netns exec NAME program args..`, with the lab's command defaults.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, program: &S, args: &[&str]) -> Command {
        let mut c = command("ip", &["netns", "exec", &self.name]);
        c.arg(program).args(args);
        c
    }

    /// `ip -n NAME args..`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run30(&mut command("ip", &all))
    }

    /// Waits (up to 3 s) until the kernel has activated `dev`. Right after
    /// `link set up` a veth still has the `noop` qdisc, which drops every
    /// packet, until the link watcher runs (up to a second later).
    pub fn wait_link(&self, dev: &str) -> Result<()> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let out = self.ip(&["link", "show", "dev", dev])?;
            if !out.contains("qdisc noop") || std::time::Instant::now() > end {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Whatever still runs in it (a stray agent or docker-proxy) would
        // keep the namespace alive after its name is gone.
        if let Some(id) = crate::cleanup::netns_id(&self.path()) {
            crate::cleanup::kill_in_netns(id);
        }
        let _ = cmd::output(
            &mut command("ip", &["netns", "del", &self.name]),
            std::time::Duration::from_secs(10),
        );
    }
}

/// Where a program runs: a named namespace or a container's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Netns(String),
    /// The network namespace of this process (a container's main process).
    Pid(u32),
}

impl Place {
    pub fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut c = match self {
            Place::Netns(ns) => command("ip", &["netns", "exec", ns.as_str()]),
            Place::Pid(pid) => command("nsenter", &[format!("--net=/proc/{pid}/ns/net")]),
        };
        c.arg(program).args(args);
        c
    }
}

/// One end host of the topology.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    pub role: &'static str,
    pub v4: Ipv4Addr,
    pub len4: u8,
    pub gw4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub gw6: Ipv6Addr,
}

const fn v6(a: u16, b: u16, c: u16, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(a, b, c, 0, 0, 0, 0, last)
}

pub const VPS: Site = Site {
    role: "vps",
    v4: Ipv4Addr::new(203, 0, 113, 10),
    len4: 28,
    gw4: Ipv4Addr::new(203, 0, 113, 1),
    v6: v6(0x2001, 0xdb8, 0x113, 0x10),
    gw6: v6(0x2001, 0xdb8, 0x113, 1),
};
pub const CLIENT: Site = Site {
    role: "client",
    v4: Ipv4Addr::new(203, 0, 113, 70),
    len4: 27,
    gw4: Ipv4Addr::new(203, 0, 113, 65),
    v6: v6(0x2001, 0xdb8, 0x64, 0x70),
    gw6: v6(0x2001, 0xdb8, 0x64, 1),
};
pub const ATTACKER: Site = Site {
    role: "attacker",
    v4: Ipv4Addr::new(203, 0, 113, 99),
    len4: 27,
    gw4: Ipv4Addr::new(203, 0, 113, 97),
    v6: v6(0x2001, 0xdb8, 0x96, 0x99),
    gw6: v6(0x2001, 0xdb8, 0x96, 1),
};
pub const ADMIN: Site = Site {
    role: "admin",
    v4: Ipv4Addr::new(198, 51, 100, 10),
    len4: 24,
    gw4: Ipv4Addr::new(198, 51, 100, 1),
    v6: v6(0x2001, 0xdb8, 0x100, 0x10),
    gw6: v6(0x2001, 0xdb8, 0x100, 1),
};

/// The internet's own addresses (where egress probes go).
pub const INET4: IpAddr = IpAddr::V4(VPS.gw4);
pub const INET6: IpAddr = IpAddr::V6(VPS.gw6);

/// The outside hosts that probe the VPS.
pub const OUTSIDE: [Site; 3] = [CLIENT, ATTACKER, ADMIN];

/// All namespaces of one lab. Dropping it deletes them.
#[derive(Debug)]
pub struct Topology {
    pub prefix: String,
    pub inet: Netns,
    pub vps: Netns,
    pub client: Netns,
    pub attacker: Netns,
    pub admin: Netns,
}

/// A name prefix unique to this process and call: `pl<pid><n>-`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "pl{}{}-",
        std::process::id(),
        (b'a' + (n % 26) as u8) as char
    )
}

impl Topology {
    /// Creates the namespaces and wires them up.
    pub fn build(prefix: &str) -> Result<Topology> {
        // Each namespace is owned as soon as it exists, so a failure halfway
        // still deletes the ones already made.
        let inet = Netns::add(&format!("{prefix}inet"))?;
        let vps = Netns::add(&format!("{prefix}vps"))?;
        let client = Netns::add(&format!("{prefix}client"))?;
        let attacker = Netns::add(&format!("{prefix}attacker"))?;
        let admin = Netns::add(&format!("{prefix}admin"))?;
        let t = Topology {
            prefix: prefix.to_string(),
            inet,
            vps,
            client,
            attacker,
            admin,
        };

        t.inet.ip(&["link", "set", "lo", "up"])?;
        run30(&mut t.inet.exec(
            &"sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        ))?;
        for (site, ns) in [
            (VPS, &t.vps),
            (CLIENT, &t.client),
            (ATTACKER, &t.attacker),
            (ADMIN, &t.admin),
        ] {
            wire(&t.inet, ns, &site)?;
        }
        for (site, ns) in [
            (VPS, &t.vps),
            (CLIENT, &t.client),
            (ATTACKER, &t.attacker),
            (ADMIN, &t.admin),
        ] {
            t.inet.wait_link(&format!("v-{}", site.role))?;
            ns.wait_link("eth0")?;
        }
        Ok(t)
    }

    pub fn site_ns(&self, role: &str) -> &Netns {
        match role {
            "client" => &self.client,
            "attacker" => &self.attacker,
            "admin" => &self.admin,
            "inet" => &self.inet,
            _ => &self.vps,
        }
    }
}

/// A veth from the router to `ns` (named `eth0` inside), with addresses
/// and default routes.
fn wire(inet: &Netns, ns: &Netns, s: &Site) -> Result<()> {
    let near = format!("v-{}", s.role);
    inet.ip(&[
        "link", "add", &near, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;

    let gw4 = format!("{}/{}", s.gw4, s.len4);
    let gw6 = format!("{}/64", s.gw6);
    inet.ip(&["addr", "add", &gw4, "dev", &near])?;
    inet.ip(&["-6", "addr", "add", &gw6, "dev", &near, "nodad"])?;
    inet.ip(&["link", "set", &near, "up"])?;

    let me4 = format!("{}/{}", s.v4, s.len4);
    let me6 = format!("{}/64", s.v6);
    ns.ip(&["link", "set", "lo", "up"])?;
    ns.ip(&["addr", "add", &me4, "dev", "eth0"])?;
    ns.ip(&["-6", "addr", "add", &me6, "dev", "eth0", "nodad"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["route", "add", "default", "via", &s.gw4.to_string()])?;
    ns.ip(&["-6", "route", "add", "default", "via", &s.gw6.to_string()])?;
    Ok(())
}
