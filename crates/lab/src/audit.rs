//! `palisade audit` checked against the packets.
//!
//! After a phase's probes, the VPS's state is collected the way `palisade
//! collect` does it (iptables-save, ip6tables-save, `nft -j`, addresses,
//! routes, sockets, run inside the VPS namespace) and the audit's packet
//! model decides, for every port the client probed, whether the client
//! reaches it. Each verdict becomes a row of the `audit` phase, matched
//! against what the client's packets did. A "may pass" never matches: the
//! lab wants the audit to be decisive where the packets are.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_analysis::eval::{Fate, L4};
use palisade_analysis::{audit, host};

use crate::cmd;
use crate::report::{Check, Phase, ProbeResult, Proto, Reach};
use crate::topo::{Netns, CLIENT};

/// Collects the VPS's state into `dir`, audits it from the client's
/// addresses and compares with the client's probes among `seen`.
pub fn against_probes(
    vps: &Netns,
    dir: &Path,
    seen: &[ProbeResult],
) -> Result<Vec<ProbeResult>> {
    std::fs::create_dir_all(dir)?;
    for (file, argv) in host::SOURCES {
        let mut c = vps.exec(&argv[0], &argv[1..]);
        let o = cmd::output(&mut c, Duration::from_secs(30))?;
        if o.ok {
            std::fs::write(dir.join(file), o.stdout.as_bytes())?;
        }
    }
    let state = host::load(dir).with_context(|| format!("auditing {}", dir.display()))?;
    let matrix =
        audit::exposure_from(&state, IpAddr::V4(CLIENT.v4), IpAddr::V6(CLIENT.v6));

    let mut out = Vec::new();
    for p in seen {
        if p.from != "client" || !matches!(p.check, Check::Published | Check::Ssh) {
            continue;
        }
        let Some((addr, port)) = split(&p.to) else {
            continue;
        };
        let proto = match p.proto {
            Proto::Tcp => L4::Tcp,
            Proto::Udp => L4::Udp,
        };
        let found = matrix
            .iter()
            .find(|e| e.addr == addr && e.port == port && e.proto == proto);
        let (expected, what) = match found {
            Some(e) => {
                let reach = match e.fate {
                    Fate::Pass => Reach::Open,
                    Fate::Blocked => Reach::Closed,
                    Fate::MayPass => Reach::Error,
                };
                let via = if e.reaches == "host" {
                    String::new()
                } else {
                    format!("via {} ", e.reaches)
                };
                (reach, format!("{via}{}", e.why))
            }
            None => (Reach::Error, "the audit did not consider this port".into()),
        };
        out.push(ProbeResult {
            phase: Phase::Audit,
            check: Check::Audit,
            from: "audit".into(),
            to: p.to.clone(),
            proto: p.proto,
            what,
            expected,
            actual: p.actual,
            detail: format!("client {}", p.detail),
            ms: 0,
            matches: expected == p.actual,
        });
    }
    Ok(out)
}

/// `203.0.113.10:80` or `[2001:db8::1]:80`.
fn split(to: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = to.rsplit_once(':')?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    Some((addr.parse().ok()?, port.parse().ok()?))
}
