//! UFW configured the usual way inside the VPS, and removed again.
//!
//! This is the "before" picture: what a careful admin does with UFW on a
//! Docker host. Default deny incoming, allow ssh, allow each published
//! port from the sources the policy names, and allow internal and
//! loopback-only ports from 127.0.0.1 only. Docker's DNAT sends published
//! ports through FORWARD, past all of it, which the probes then show.
//!
//! UFW runs through `ip netns exec`, which mounts `/etc/netns/<vps>/*`
//! over `/etc/*` for that command only: the lab gives it private copies of
//! `/etc/ufw` and `/etc/default` (with an empty `sysctl.conf`, so UFW's
//! init script changes no sysctl), and the machine's own files stay as
//! they are. [`Ufw::remove`] disables UFW, deletes its chains and jumps,
//! and puts back the built-in chain policies from before (Docker's FORWARD
//! DROP); Docker's own chains are never touched.

use std::fs;
use std::path::Path;

use anyhow::{bail, Result};
use palisade_policy::{Exposure, Policy};

use crate::cleanup::{EtcNetns, NewFile};
use crate::cmd::{command, run30};
use crate::expect::Published;
use crate::topo::Netns;

const TOOLS: [&str; 2] = ["iptables", "ip6tables"];

/// UFW, enabled in the VPS. Dropping it removes the private /etc files;
/// [`Ufw::remove`] also takes its rules out.
pub struct Ufw<'a> {
    vps: &'a Netns,
    /// `-P` lines of each family's filter table from before UFW.
    policies: Vec<(&'static str, String)>,
    _etc: EtcNetns,
    _lock: NewFile,
}

impl<'a> Ufw<'a> {
    pub fn enable(
        vps: &'a Netns,
        policy: &Policy,
        published: &[Published],
    ) -> Result<Ufw<'a>> {
        let etc = EtcNetns::new(&vps.name)?;
        for d in ["ufw", "default"] {
            run30(&mut command(
                "cp",
                &[
                    "-a".as_ref(),
                    Path::new("/etc").join(d).as_os_str(),
                    etc.path.join(d).as_os_str(),
                ],
            ))?;
        }
        fs::write(etc.path.join("ufw/sysctl.conf"), "")?;

        let mut policies = Vec::new();
        for tool in TOOLS {
            let s = run30(&mut vps.exec(&tool, &["-S"]))?;
            for l in s.lines().filter(|l| l.starts_with("-P ")) {
                policies.push((tool, l.to_string()));
            }
        }
        let ufw = Ufw {
            vps,
            policies,
            _etc: etc,
            // UFW's lock lives in the machine's /run; it goes if UFW made it.
            _lock: NewFile::watch("/run/ufw.lock"),
        };

        ufw.run(&["--force", "reset"])?;
        ufw.run(&["default", "deny", "incoming"])?;
        let ssh = policy.ssh.as_ref().map_or(22, |s| s.port);
        ufw.run(&["allow", &format!("{ssh}/tcp")])?;
        for p in published {
            let port = p.host_port.to_string();
            let proto = p.proto.as_str();
            let from_all = |from: &str| {
                ufw.run(&[
                    "allow", "proto", proto, "from", from, "to", "any", "port", &port,
                ])
            };
            match &p.exposure {
                Some(Exposure::Public) => {
                    ufw.run(&["allow", &format!("{port}/{proto}")])?;
                }
                Some(Exposure::Groups(groups)) => {
                    let nets = groups
                        .iter()
                        .filter_map(|g| policy.groups.get(g))
                        .flat_map(|g| &g.nets);
                    for net in nets {
                        from_all(&net.to_string())?;
                    }
                }
                None | Some(Exposure::Loopback | Exposure::Internal) => {
                    from_all("127.0.0.1")?;
                }
            }
        }
        ufw.run(&["--force", "enable"])?;
        Ok(ufw)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        run30(&mut self.vps.exec(&"ufw", args))
    }

    /// UFW off, its chains gone, the built-in policies as they were.
    pub fn remove(self) -> Result<()> {
        self.run(&["disable"])?;
        let vps = self.vps;
        for tool in TOOLS {
            let rules = run30(&mut vps.exec(&tool, &["-S"]))?;
            let chains: Vec<&str> = rules
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| c.starts_with("ufw"))
                .collect();

            // Jumps from the built-in chains into UFW's go first.
            for l in rules.lines() {
                let Some(rest) = l.strip_prefix("-A ") else {
                    continue;
                };
                let chain = rest.split(' ').next().unwrap_or("");
                if chain.starts_with("ufw") || !rest.contains(" -j ufw") {
                    continue;
                }
                let mut args = vec!["-D"];
                args.extend(rest.split(' '));
                run30(&mut vps.exec(&tool, &args))?;
            }
            for c in &chains {
                run30(&mut vps.exec(&tool, &["-F", c]))?;
            }
            for c in &chains {
                run30(&mut vps.exec(&tool, &["-X", c]))?;
            }
        }

        for (tool, p) in &self.policies {
            let args: Vec<&str> = p.split(' ').collect();
            run30(&mut vps.exec(tool, &args))?;
        }
        for tool in TOOLS {
            let left = run30(&mut vps.exec(&tool, &["-S"]))?;
            if left.contains("ufw") {
                bail!(
                    "{tool} in the VPS still has UFW rules after removing them:\n{left}"
                );
            }
        }
        Ok(())
    }
}
