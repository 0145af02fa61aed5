//! One lab run, start to finish: build, the UFW picture, enforce, probe,
//! tear down.
//!
//! Steps of [`run`]:
//!
//! 1. Topology (see [`crate::topo`]) and "the internet": an agent on the
//!    router answers TCP 25 53 80 443 587 8443 and UDP 53 123 5353, plus
//!    every port an egress rule of the policy names. 8443/tcp and 5353/udp
//!    are there to show unlisted egress is dropped.
//! 2. The VPS: an agent stands in for sshd; a private dockerd creates the
//!    policy's networks (or `palisade-lab` on 192.0.2.0/24) and one
//!    container per service, named and labelled as docker-compose would.
//!    Ports are published carelessly: each policy-published port on all
//!    addresses, and each internal port too, at the same number. An agent
//!    in each container's network namespace listens on all its ports.
//!    (busybox httpd was tried and dropped: its listen backlog of 9 cuts a
//!    connection flood by itself, which would fake a rate limit.)
//! 3. The "before" picture: UFW the usual way (see [`crate::ufw`]), probed
//!    from outside, then removed.
//! 4. Enforcement: `palisade apply` inside the VPS (or a ruleset file).
//! 5. Probes from every side, then the floods: the attacker at the first
//!    public rate-limited port, and an admitted host at sshd when it is
//!    rate-limited; each followed by another source that must get in.
//!
//! Teardown is the drop of `Lab`: agents, then dockerd, then the
//! namespaces, then the work directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::{IpNet, Ipv4Net};
use palisade_policy::{Exposure, Policy};

use crate::agent::BurstReply;
use crate::cleanup::WorkDir;
use crate::cmd::{self, check_interrupt, command, run30};
use crate::docker::{ContainerSpec, Dockerd, Running};
use crate::expect::{self, careless_publish, Layout, Planned, Published};
use crate::report::{Check, LabReport, Phase, ProbeResult, Proto, Reach};
use crate::runner::{self, Job, Server};
use crate::topo::{
    self, Place, Site, Topology, ADMIN, ATTACKER, CLIENT, INET4, INET6, OUTSIDE, VPS,
};
use crate::ufw::Ufw;

/// TCP ports the internet always answers on.
const INET_TCP: [u16; 6] = [25, 53, 80, 443, 587, 8443];
/// UDP ports the internet always answers on.
const INET_UDP: [u16; 3] = [53, 123, 5353];
/// Network created when the policy declares none.
const DEFAULT_NET: &str = "palisade-lab";

/// How palisade's rules get into the VPS for the second phase.
#[derive(Debug, Clone)]
pub enum Enforce {
    /// `<exe> apply POLICY --docker-host unix://.. --state-dir .. --yes`
    /// inside the VPS namespace; `None`: the running program.
    Apply { exe: Option<PathBuf> },
    /// `nft -f FILE` inside the VPS namespace: a ruleset written by hand
    /// or compiled elsewhere.
    Ruleset(PathBuf),
    /// Nothing: the probes show the bare Docker host.
    Nothing,
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The policy file; `None` runs the built-in reference policy.
    pub policy: Option<PathBuf>,
    pub enforce: Enforce,
    /// A program with the `lab-agent` subcommand; `None`: the running one.
    pub agent_exe: Option<PathBuf>,
    /// Show UFW configured the usual way first (skipped if ufw is missing).
    pub compare_ufw: bool,
    /// Probes in flight at once.
    pub parallel: usize,
    /// Connect / reply timeout of one probe.
    pub timeout: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
    /// The static busybox copied into the lab's image.
    pub busybox: PathBuf,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            policy: None,
            enforce: Enforce::Apply { exe: None },
            agent_exe: None,
            compare_ufw: true,
            parallel: 16,
            timeout: Duration::from_millis(1000),
            progress: true,
            busybox: PathBuf::from("/bin/busybox"),
        }
    }
}

/// Builds the lab, probes it, tears it down and reports.
///
/// Needs root, `ip`, `nsenter`, `nft`, `dockerd`, `docker` and a static
/// busybox; `ufw` only for the "before" picture. Errors (including Ctrl-C)
/// come back after teardown.
pub fn run(opts: LabOptions) -> Result<LabReport> {
    install_ctrlc();
    crate::INTERRUPTED.store(false, Ordering::SeqCst);
    let started = Instant::now();
    preflight(&opts)?;

    let host_before = host_fingerprint();
    let mut lab = Lab::setup(&opts)?;
    let mut probes = Vec::new();
    let mut notes = Vec::new();

    if opts.compare_ufw {
        if which("ufw") {
            lab.phase_ufw(&opts, &mut probes)?;
        } else {
            notes.push("ufw is not installed; the \"before\" picture was skipped".into());
        }
    }
    check_interrupt()?;
    let enforcement = lab.enforce(&opts)?;
    tracing::info!(run = %lab.topo.prefix, enforcement = %enforcement, "lab: rules in place");
    lab.phase_palisade(&opts, &mut probes, &mut notes)?;
    let policy = lab.policy.origin.clone();
    let run_id = lab.topo.prefix.clone();

    lab.say("tearing down");
    drop(lab);
    let host_unchanged = host_fingerprint() == host_before;
    if !host_unchanged {
        notes.push(
            "the machine's own nftables ruleset or /etc/ufw changed during the run"
                .into(),
        );
    }

    let mismatches = probes
        .iter()
        .filter(|p| p.phase != Phase::Ufw && !p.matches)
        .count();
    let ufw_leaks = probes
        .iter()
        .filter(|p| {
            p.phase == Phase::Ufw
                && p.expected == Reach::Closed
                && p.actual == Reach::Open
        })
        .count();
    Ok(LabReport {
        run_id,
        policy,
        enforcement,
        mismatches,
        ufw_leaks,
        host_unchanged,
        passed: mismatches == 0 && host_unchanged,
        probes,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn install_ctrlc() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A caller with its own handler forwards Ctrl-C via `interrupt()`.
        let _ = ctrlc::set_handler(crate::interrupt);
    });
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join(program).is_file())
    })
}

fn preflight(opts: &LabOptions) -> Result<()> {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        bail!("the lab creates network namespaces and runs dockerd: run it as root");
    }
    for p in [
        "ip",
        "nsenter",
        "sysctl",
        "nft",
        "iptables",
        "dockerd",
        "docker",
        "containerd",
        "tar",
    ] {
        if !which(p) {
            bail!("the lab needs `{p}`, which is not on PATH");
        }
    }
    if !opts.busybox.is_file() {
        bail!(
            "the lab needs a static busybox at {} (Debian: busybox-static)",
            opts.busybox.display()
        );
    }
    Ok(())
}

/// The machine's own firewall and UFW configuration, to prove the lab
/// left them alone.
fn host_fingerprint() -> String {
    let mut s = cmd::output(
        &mut command("nft", &["list", "ruleset"]),
        Duration::from_secs(10),
    )
    .map(|o| o.stdout)
    .unwrap_or_default();
    let mut files = vec![PathBuf::from("/etc/default/ufw")];
    if let Ok(dir) = fs::read_dir("/etc/ufw") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    files.sort();
    for f in files {
        s.push_str(&format!("\n== {}\n", f.display()));
        s.push_str(&String::from_utf8_lossy(&fs::read(&f).unwrap_or_default()));
    }
    s
}

/// A flood to try: from where, at what, under which limit, and who must
/// still get in afterwards.
struct Flood {
    from: Site,
    addr: SocketAddr,
    limit: palisade_policy::RateLimit,
    what: String,
    after: Option<(Site, SocketAddr)>,
}

/// Everything one run owns. Fields drop in order: agents, dockerd,
/// namespaces, work directory.
struct Lab {
    servers: Vec<Server>,
    docker: Option<Dockerd>,
    topo: Topology,
    work: WorkDir,

    progress: bool,
    policy: Policy,
    policy_path: PathBuf,
    agent: PathBuf,
    published: Vec<Published>,
    containers: BTreeMap<String, Running>,
    inet_tcp: Vec<u16>,
    inet_udp: Vec<u16>,
}

impl Lab {
    fn say(&self, msg: &str) {
        if self.progress {
            eprintln!("lab: {msg}");
        }
    }

    fn setup(opts: &LabOptions) -> Result<Lab> {
        let work = WorkDir::new()?;

        // The policy: loaded for the expectations, and as a file for apply.
        let (policy, policy_path) = match &opts.policy {
            Some(p) => (palisade_policy::load(p)?, p.clone()),
            None => {
                let path = work.path.join("policy.toml");
                fs::write(&path, palisade_policy::BUILTIN)?;
                (palisade_policy::builtin(), path)
            }
        };
        let agent = match &opts.agent_exe {
            Some(p) => p.clone(),
            None => runner::default_exe()?,
        };

        let prefix = topo::unique_prefix();
        if opts.progress {
            eprintln!("lab: building namespaces {prefix}*");
        }
        let topo = Topology::build(&prefix)?;
        let mut lab = Lab {
            servers: Vec::new(),
            docker: None,
            topo,
            work,
            progress: opts.progress,
            policy,
            policy_path,
            agent,
            published: Vec::new(),
            containers: BTreeMap::new(),
            inet_tcp: Vec::new(),
            inet_udp: Vec::new(),
        };
        check_interrupt()?;

        // The internet answers on the usual ports and on every port an
        // egress rule names.
        let (mut tcp, mut udp): (BTreeSet<u16>, BTreeSet<u16>) = (
            INET_TCP.into_iter().collect(),
            INET_UDP.into_iter().collect(),
        );
        let rules = lab
            .policy
            .host
            .egress
            .iter()
            .flatten()
            .chain(lab.policy.services.values().flat_map(|s| &s.egress));
        for e in rules {
            let set = match e.proto {
                Proto::Tcp => &mut tcp,
                Proto::Udp => &mut udp,
            };
            set.extend(e.ports.iter().copied().take(32));
        }
        lab.inet_tcp = tcp.into_iter().collect();
        lab.inet_udp = udp.into_iter().collect();
        let inet = Server::start(
            &lab.agent,
            &Place::Netns(lab.topo.inet.name.clone()),
            &lab.inet_tcp,
            &lab.inet_udp,
            &[INET4, INET6],
            "internet",
        )?;
        lab.servers.push(inet);

        let ssh_port = lab.policy.ssh.as_ref().map_or(22, |s| s.port);
        let sshd = Server::start(
            &lab.agent,
            &Place::Netns(lab.topo.vps.name.clone()),
            &[ssh_port],
            &[],
            &[],
            "sshd stand-in",
        )?;
        lab.servers.push(sshd);

        lab.say("starting a private dockerd in the VPS");
        let docker = Dockerd::start(&lab.topo.vps, &lab.work.path.join("docker"))?;
        lab.docker = Some(docker);
        lab.containers(opts, ssh_port)?;
        Ok(lab)
    }

    fn docker(&mut self) -> Result<&mut Dockerd> {
        self.docker.as_mut().context("dockerd is not running")
    }

    /// Networks, containers, careless port mappings, listeners.
    fn containers(&mut self, opts: &LabOptions, ssh_port: u16) -> Result<()> {
        let busybox = opts.busybox.clone();
        self.docker()?.import_busybox(&busybox)?;

        // Networks: the policy's, with a documentation subnet where it
        // gives none; one default network when it declares none at all.
        let mut nets: Vec<(String, Ipv4Net, Option<ipnet::Ipv6Net>)> = Vec::new();
        let taken: Vec<Ipv4Net> = self
            .policy
            .networks
            .values()
            .filter_map(|n| n.subnet)
            .collect();
        let mut spare = "192.0.2.0/24"
            .parse::<Ipv4Net>()
            .map(|n| {
                n.subnets(26)
                    .map(|s| s.collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !taken.iter().any(|t| t.contains(s) || s.contains(t)));
        for n in self.policy.networks.values() {
            let v4 = match n.subnet {
                Some(s) => s,
                None => spare.next().with_context(|| {
                    format!(
                        "network {}: give it a subnet; the lab ran out of spare ones",
                        n.name
                    )
                })?,
            };
            let lab_ranges: [IpNet; 2] = [
                "203.0.113.0/24".parse().context("constant")?,
                "198.51.100.0/24".parse().context("constant")?,
            ];
            if lab_ranges
                .iter()
                .any(|r| r.contains(&IpNet::V4(v4)) || IpNet::V4(v4).contains(r))
            {
                bail!(
                    "network {}: subnet {v4} overlaps the lab's own ranges \
                     (203.0.113.0/24, 198.51.100.0/24); use another one to run the lab",
                    n.name
                );
            }
            if let Some(v6) = n.subnet6 {
                let clash = [CLIENT, ATTACKER, ADMIN, VPS].iter().any(|s| {
                    ipnet::Ipv6Net::new(s.v6, 64)
                        .map(|lan| lan.trunc())
                        .is_ok_and(|lan| lan.contains(&v6) || v6.contains(&lan))
                });
                if clash {
                    bail!(
                        "network {}: subnet6 {v6} overlaps the lab's own IPv6 \
                         networks; use another one to run the lab",
                        n.name
                    );
                }
            }
            nets.push((n.name.clone(), v4, n.subnet6));
        }
        if nets.is_empty() {
            nets.push((DEFAULT_NET.into(), "192.0.2.0/24".parse()?, None));
        }
        for (name, v4, v6) in &nets {
            self.docker()?.create_network(name, *v4, *v6)?;
            if let Some(v6) = v6 {
                // Containers keep their own v6 addresses; the internet
                // routes them through the VPS.
                self.topo.inet.ip(&[
                    "-6",
                    "route",
                    "add",
                    &v6.to_string(),
                    "via",
                    &VPS.v6.to_string(),
                ])?;
                run30(
                    &mut self
                        .topo
                        .vps
                        .exec(&"sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]),
                )?;
            }
        }

        self.published = careless_publish(&self.policy, ssh_port);

        // One container per service, fixed addresses from .10 up so a
        // hand-written ruleset can name them.
        let services: Vec<_> = self.policy.services.values().cloned().collect();
        for (i, svc) in services.iter().enumerate() {
            check_interrupt()?;
            let mut networks = Vec::new();
            for (name, v4, _) in &nets {
                if svc.networks.is_empty() && networks.is_empty()
                    || svc.networks.contains(name)
                {
                    let ip = v4.hosts().nth(9 + i);
                    networks.push((name.clone(), ip));
                }
            }
            if networks.is_empty() {
                networks.push((nets[0].0.clone(), nets[0].1.hosts().nth(9 + i)));
            }
            let spec = ContainerSpec {
                name: svc.container.clone().unwrap_or_else(|| svc.name.clone()),
                service: svc.name.clone(),
                networks,
                publish: self
                    .published
                    .iter()
                    .filter(|p| p.service == svc.name)
                    .map(|p| (p.host_port, p.container_port, p.proto))
                    .collect(),
            };
            self.say(&format!("container {}", spec.name));
            let running = self.docker()?.run_container(&spec)?;

            let tcp: Vec<u16> = svc
                .ports
                .iter()
                .filter(|p| p.proto == palisade_policy::Proto::Tcp)
                .map(|p| p.port)
                .collect();
            let udp: Vec<u16> = svc
                .ports
                .iter()
                .filter(|p| p.proto == palisade_policy::Proto::Udp)
                .map(|p| p.port)
                .collect();
            if !tcp.is_empty() || !udp.is_empty() {
                let server = Server::start(
                    &self.agent,
                    &Place::Pid(running.pid),
                    &tcp,
                    &udp,
                    &[],
                    &format!("listener in {}", spec.name),
                )?;
                self.servers.push(server);
            }
            self.containers.insert(svc.name.clone(), running);
        }
        Ok(())
    }

    fn layout(&self) -> Layout<'_> {
        let t = &self.topo;
        let ns = [
            ("client", &t.client),
            ("attacker", &t.attacker),
            ("admin", &t.admin),
            ("vps", &t.vps),
            ("inet", &t.inet),
        ]
        .into_iter()
        .map(|(r, n)| (r, n.name.clone()))
        .collect();
        Layout {
            policy: &self.policy,
            ns,
            published: &self.published,
            containers: &self.containers,
            inet_tcp: &self.inet_tcp,
            inet_udp: &self.inet_udp,
        }
    }

    /// Runs planned probes and turns them into results.
    fn probe(
        &self,
        opts: &LabOptions,
        phase: Phase,
        plan: Vec<Planned>,
    ) -> Result<Vec<ProbeResult>> {
        let jobs: Vec<Job> = plan
            .iter()
            .map(|p| Job {
                place: p.place.clone(),
                proto: p.proto,
                addr: p.addr,
            })
            .collect();
        let step = (jobs.len() / 10).max(1);
        let progress = self.progress;
        let replies = runner::probe_all(
            &self.agent,
            &jobs,
            opts.parallel,
            opts.timeout,
            |done, total, i, r| {
                let p = &plan[i];
                let actual = if r.open { Reach::Open } else { Reach::Closed };
                tracing::debug!(
                    check = p.check.as_str(),
                    from = %p.from,
                    to = %p.addr,
                    proto = p.proto.as_str(),
                    expected = p.expected.as_str(),
                    actual = actual.as_str(),
                    detail = %r.detail,
                    "probe"
                );
                if !progress {
                    return;
                }
                if phase == Phase::Palisade && actual != p.expected {
                    eprintln!(
                        "lab:   MISMATCH {} {} -> {}/{}: expected {}, got {} ({})",
                        p.check.as_str(),
                        p.from,
                        p.addr,
                        p.proto.as_str(),
                        p.expected.as_str(),
                        actual.as_str(),
                        r.detail
                    );
                }
                if done % step == 0 || done == total {
                    eprintln!("lab:   {done}/{total} probes");
                }
            },
        )?;
        Ok(plan
            .into_iter()
            .zip(replies)
            .map(|(p, r)| {
                let actual = if r.detail.starts_with("error") {
                    Reach::Error
                } else if r.open {
                    Reach::Open
                } else {
                    Reach::Closed
                };
                ProbeResult {
                    phase,
                    check: p.check,
                    from: p.from,
                    to: p.addr.to_string(),
                    proto: p.proto,
                    what: p.what,
                    expected: p.expected,
                    actual,
                    detail: r.detail,
                    ms: r.ms,
                    matches: actual == p.expected,
                }
            })
            .collect())
    }

    /// Where floods go: the first public, rate-limited TCP port (from the
    /// attacker; then the client must still get in), and sshd when it is
    /// rate-limited (from the first admitted outside host over IPv4; then
    /// the same host over IPv6, a different source, must still get in).
    fn flood_targets(&self) -> Vec<Flood> {
        let mut out = Vec::new();
        let web = self.policy.services.values().find_map(|s| {
            s.ports
                .iter()
                .find_map(|p| match (p.publish, p.rate, &p.expose) {
                    (Some(hp), Some(limit), Exposure::Public)
                        if p.proto == palisade_policy::Proto::Tcp =>
                    {
                        Some((
                            hp,
                            limit,
                            format!("{}:{} public, {limit} per source", s.name, p.port),
                        ))
                    }
                    _ => None,
                })
        });
        if let Some((port, limit, what)) = web {
            let addr = SocketAddr::new(IpAddr::V4(VPS.v4), port);
            out.push(Flood {
                from: ATTACKER,
                addr,
                limit,
                what,
                after: Some((CLIENT, addr)),
            });
        }
        if let Some(ssh) = &self.policy.ssh {
            let admitted = |ip: IpAddr| expect::admits(&self.policy, &ssh.allow, ip);
            let site = OUTSIDE.into_iter().find(|s| admitted(IpAddr::V4(s.v4)));
            if let (Some(limit), Some(site)) = (ssh.rate, site) {
                let after = admitted(IpAddr::V6(site.v6))
                    .then(|| (site, SocketAddr::new(IpAddr::V6(VPS.v6), ssh.port)));
                out.push(Flood {
                    from: site,
                    addr: SocketAddr::new(IpAddr::V4(VPS.v4), ssh.port),
                    limit,
                    what: format!("sshd {}, {limit} per source", ssh.allow),
                    after,
                });
            }
        }
        out
    }

    /// One flood of new connections. The verdict: limited when some but
    /// not all got through and no more than the limit allows.
    fn flood(&self, phase: Phase, f: &Flood) -> Result<ProbeResult> {
        let per_sec = f64::from(f.limit.rate.count) / f.limit.rate.per.seconds() as f64;
        let count =
            ((f64::from(f.limit.burst) + per_sec) * 2.0).clamp(200.0, 1000.0) as usize;
        self.say(&format!(
            "{} floods {} with {count} connections",
            f.from.role, f.addr
        ));
        let r: BurstReply = runner::burst(
            &self.agent,
            &Place::Netns(self.topo.site_ns(f.from.role).name.clone()),
            f.addr,
            count,
            Duration::from_millis(500),
        )?;
        let ceiling = (f64::from(f.limit.burst) + per_sec * (r.ms as f64 / 1000.0 + 1.0))
            * 1.25
            + 5.0;
        let actual = if r.attempts == 0 {
            Reach::Error
        } else if r.connected == 0 {
            Reach::Closed
        } else if r.connected < r.attempts && (r.connected as f64) <= ceiling {
            Reach::Limited
        } else {
            Reach::Open
        };
        Ok(ProbeResult {
            phase,
            check: Check::RateLimit,
            from: f.from.role.into(),
            to: f.addr.to_string(),
            proto: Proto::Tcp,
            what: f.what.clone(),
            expected: Reach::Limited,
            actual,
            detail: format!(
                "{}/{} connected in {} ms, at most {} allowed",
                r.connected, r.attempts, r.ms, ceiling as u64
            ),
            ms: r.ms,
            matches: actual == Reach::Limited,
        })
    }

    /// Every flood, each followed (under palisade) by a connection from
    /// another source that must still succeed.
    fn floods(&self, opts: &LabOptions, phase: Phase) -> Result<Vec<ProbeResult>> {
        let mut out = Vec::new();
        for f in self.flood_targets() {
            check_interrupt()?;
            out.push(self.flood(phase, &f)?);
            if let (Phase::Palisade, Some((site, addr))) = (phase, f.after) {
                let after = Planned {
                    check: Check::RateLimit,
                    from: site.role.into(),
                    place: Place::Netns(self.topo.site_ns(site.role).name.clone()),
                    proto: Proto::Tcp,
                    addr,
                    what: format!("another source right after the flood on {}", f.addr),
                    expected: Reach::Open,
                };
                out.extend(self.probe(opts, phase, vec![after])?);
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------------ phases

    fn phase_ufw(&self, opts: &LabOptions, probes: &mut Vec<ProbeResult>) -> Result<()> {
        self.say("before: UFW the usual way, next to Docker");
        let ufw = Ufw::enable(&self.topo.vps, &self.policy, &self.published)?;
        check_interrupt()?;

        let plan = self.layout().outside();
        let seen = self.probe(opts, Phase::Ufw, plan)?;
        if let Some(v) = self.verify(opts)? {
            let checked = v["checked"].as_u64().unwrap_or(0);
            let differences = v["differences"].as_array().map_or(0, Vec::len);
            self.say(&format!(
                "palisade verify on the UFW host: {} of {checked} expectations hold",
                checked as usize - differences
            ));
        }
        self.say("auditing the host as UFW and Docker left it");
        let audited = crate::audit::against_probes(
            &self.topo.vps,
            &self.work.path.join("audit-ufw"),
            &seen,
        )?;
        probes.extend(seen);
        probes.extend(audited);
        probes.extend(self.floods(opts, Phase::Ufw)?);
        ufw.remove()
    }

    /// The private dockerd's API address, as `--docker-host` takes it.
    fn docker_host(&self) -> String {
        self.docker
            .as_ref()
            .map(|d| d.host.clone())
            .unwrap_or_default()
    }

    /// `palisade verify` inside the VPS, as JSON; `None` when the lab does
    /// not run a palisade binary (it enforces a ruleset file or nothing).
    fn verify(&self, opts: &LabOptions) -> Result<Option<serde_json::Value>> {
        let Some(exe) = palisade_exe(opts)? else {
            return Ok(None);
        };
        let host = self.docker_host();
        self.say("checking the live rules against the policy with `palisade verify`");
        let policy = self.policy_path.display().to_string();
        let args = [
            "--format",
            "json",
            "verify",
            &policy,
            "--docker-host",
            &host,
        ];
        let mut c = self.topo.vps.exec(&exe, &args);
        let o = cmd::output(&mut c, Duration::from_secs(120))?;
        let v: serde_json::Value =
            serde_json::from_str(&o.stdout).with_context(|| {
                format!(
                    "`palisade verify` printed no report:\n{}{}",
                    o.stdout, o.stderr
                )
            })?;
        Ok(Some(v))
    }

    fn enforce(&mut self, opts: &LabOptions) -> Result<String> {
        let vps = &self.topo.vps;
        match &opts.enforce {
            Enforce::Apply { .. } => {
                let exe = palisade_exe(opts)?.expect("enforcing with palisade apply");
                let host = self.docker_host();
                let state = self.work.path.join("state");
                fs::create_dir_all(&state)?;
                self.say("applying the policy with `palisade apply`");
                let args = [
                    "apply".to_string(),
                    self.policy_path.display().to_string(),
                    "--docker-host".into(),
                    host,
                    "--state-dir".into(),
                    state.display().to_string(),
                    "--yes".into(),
                ];
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut c = vps.exec(&exe, &args);
                // The lab's VPS has no SSH session, whatever the terminal
                // the lab runs from: apply must not guard one.
                for var in ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"] {
                    c.env_remove(var);
                }
                let line = cmd::shown(&c);
                let o = cmd::output(&mut c, Duration::from_secs(120))?;
                if !o.ok {
                    bail!("`{line}` failed:\n{}{}", o.stdout, o.stderr);
                }
                let said = o.stdout.lines().next().unwrap_or("").trim().to_string();
                Ok(if said.is_empty() {
                    "palisade apply".into()
                } else {
                    format!("palisade apply ({said})")
                })
            }
            Enforce::Ruleset(file) => {
                self.say(&format!("loading {} with nft", file.display()));
                let f = file.display().to_string();
                run30(&mut vps.exec(&"nft", &["-f", &f]))?;
                Ok(format!("nft -f {f}"))
            }
            Enforce::Nothing => Ok("nothing".into()),
        }
    }

    fn phase_palisade(
        &self,
        opts: &LabOptions,
        probes: &mut Vec<ProbeResult>,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        self.say("probing with palisade's rules in place");
        let layout = self.layout();
        let mut plan = layout.outside();
        plan.extend(layout.inside());
        if self
            .containers
            .values()
            .all(|c| c.addrs.values().all(|(_, v6)| v6.is_none()))
        {
            notes.push(
                "the containers have no IPv6 (no subnet6): container IPv6 not probed"
                    .into(),
            );
        }
        let seen = self.probe(opts, Phase::Palisade, plan)?;
        self.say("auditing the host with palisade's rules in place");
        let audited = crate::audit::against_probes(
            &self.topo.vps,
            &self.work.path.join("audit-palisade"),
            &seen,
        )?;
        probes.extend(seen);
        probes.extend(audited);
        if let Some(v) = self.verify(opts)? {
            probes.extend(verify_rows(&v));
        }
        check_interrupt()?;

        let floods = self.floods(opts, Phase::Palisade)?;
        if floods.is_empty() {
            notes.push("no rate-limited port or sshd: no flood was tried".into());
        }
        probes.extend(floods);
        Ok(())
    }
}

/// Rows for a `palisade verify` report: one per difference (each fails the
/// run), or one saying that every expectation holds.
fn verify_rows(v: &serde_json::Value) -> Vec<ProbeResult> {
    let checked = v["checked"].as_u64().unwrap_or(0);
    let diffs = v["differences"].as_array().cloned().unwrap_or_default();
    let row =
        |to: String, what: String, expected: Reach, actual: Reach, detail: String| {
            ProbeResult {
                phase: Phase::Audit,
                check: Check::Verify,
                from: "verify".into(),
                to,
                proto: Proto::Tcp,
                what,
                expected,
                actual,
                detail,
                ms: 0,
                matches: expected == actual,
            }
        };
    if diffs.is_empty() {
        return vec![row(
            "policy".into(),
            format!("{checked} expectations checked against the live rules"),
            Reach::Closed,
            Reach::Closed,
            "no difference".into(),
        )];
    }
    diffs
        .iter()
        .map(|d| {
            let p = &d["packet"];
            let expected = if d["expected_open"] == true {
                Reach::Open
            } else {
                Reach::Closed
            };
            let actual = match d["fate"].as_str() {
                Some("pass") => Reach::Open,
                Some("blocked") => Reach::Closed,
                _ => Reach::Error,
            };
            row(
                format!("{} -> {}:{}", p["src"], p["dst"], p["dport"]).replace('"', ""),
                d["intent"].as_str().unwrap_or_default().to_string(),
                expected,
                actual,
                d["decided_by"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The palisade binary the lab runs (`apply`, `verify`), when it enforces
/// with `palisade apply`.
fn palisade_exe(opts: &LabOptions) -> Result<Option<PathBuf>> {
    match &opts.enforce {
        Enforce::Apply { exe: Some(e) } => Ok(Some(e.clone())),
        Enforce::Apply { exe: None } => Ok(Some(runner::default_exe()?)),
        _ => Ok(None),
    }
}
