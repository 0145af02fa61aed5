//! A private, real dockerd inside the VPS namespace, and the containers the
//! lab runs on it.
//!
//! dockerd runs as `nsenter --net=/run/netns/<vps> dockerd ...` with its
//! data root, exec root, socket, pid file and config all under the lab's
//! work directory, so it shares nothing with a Docker the machine may run.
//! (`ip netns exec` would also remount /sys and hide the cgroups dockerd
//! needs.) The only image is imported from a tar holding the machine's
//! static busybox, so no registry is needed.
//!
//! Teardown, in order: remove the containers (SIGKILL, no grace period),
//! stop dockerd (SIGTERM, then SIGKILL), stop its containerd if it
//! outlived dockerd, kill whatever still lives in a container's network
//! namespace, and unmount everything under the work directory.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::cleanup::{kill_in_netns, netns_id, unmount_under};
use crate::cmd::{self, check_interrupt, command, run30, wait_for};
use crate::report::Proto;
use crate::topo::Netns;

/// The lab's only image.
pub const IMAGE: &str = "palisade-lab/busybox:1";
/// The compose project the lab's containers claim to belong to.
pub const PROJECT: &str = "palisade-lab";

/// A container to run.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    /// The compose service name (label `com.docker.compose.service`).
    pub service: String,
    /// Networks to attach, first one at creation, with a fixed IPv4 if set.
    pub networks: Vec<(String, Option<Ipv4Addr>)>,
    /// (host port, container port, protocol), on all host addresses.
    pub publish: Vec<(u16, u16, Proto)>,
}

/// A running container as the lab needs to know it.
#[derive(Debug, Clone)]
pub struct Running {
    pub name: String,
    pub pid: u32,
    /// Network name -> addresses.
    pub addrs: BTreeMap<String, (Option<Ipv4Addr>, Option<Ipv6Addr>)>,
    pub(crate) netns: Option<(u64, u64)>,
}

/// A private dockerd; stopped and cleaned up on drop.
pub struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
    pub host: String,
    containers: Vec<Running>,
}

impl Dockerd {
    /// Starts dockerd in `vps` and waits until it answers.
    pub fn start(vps: &Netns, dir: &Path) -> Result<Dockerd> {
        fs::create_dir_all(dir.join("cli"))?;
        fs::write(dir.join("daemon.json"), "{}\n")?;
        let log = fs::File::create(dir.join("dockerd.log"))?;
        let host = format!("unix://{}", dir.join("docker.sock").display());
        let p = |s: &str| dir.join(s).display().to_string();

        let mut c = command(
            "nsenter",
            &[
                format!("--net={}", vps.path()),
                "dockerd".into(),
                "--data-root".into(),
                p("d"),
                "--exec-root".into(),
                p("x"),
                "-H".into(),
                host.clone(),
                "--pidfile".into(),
                p("docker.pid"),
                "--config-file".into(),
                p("daemon.json"),
                "--bridge=none".into(),
                "--shutdown-timeout=2".into(),
            ],
        );
        let child = c
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start dockerd")?;
        let mut d = Dockerd {
            dir: dir.to_path_buf(),
            child: Some(child),
            host,
            containers: Vec::new(),
        };
        d.wait_ready()?;
        Ok(d)
    }

    /// `docker -H <private socket> args..`, with a private CLI config.
    pub fn docker<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = command("docker", &["-H", self.host.as_str()]);
        c.args(args).env("DOCKER_CONFIG", self.dir.join("cli"));
        c
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            check_interrupt()?;
            let o = cmd::output(
                &mut self.docker(&["version", "--format", "{{.Server.Version}}"]),
                Duration::from_secs(10),
            )?;
            if o.ok {
                return Ok(());
            }
            let exited = matches!(
                self.child.as_mut().map(Child::try_wait),
                Some(Ok(Some(_))) | None
            );
            if exited || Instant::now() > deadline {
                bail!(
                    "dockerd did not come up{}; its log ends with:\n{}",
                    if exited {
                        " (it exited)"
                    } else {
                        " within 40s"
                    },
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Imports the busybox image from the machine's static busybox.
    pub fn import_busybox(&self, busybox: &Path) -> Result<()> {
        let root = self.dir.join("image");
        fs::create_dir_all(root.join("bin"))?;
        fs::copy(busybox, root.join("bin/busybox"))
            .with_context(|| format!("cannot copy {}", busybox.display()))?;
        let tar = self.dir.join("busybox.tar");
        run30(&mut command(
            "tar",
            &[
                "-C".as_ref(),
                root.as_os_str(),
                "-cf".as_ref(),
                tar.as_os_str(),
                "bin".as_ref(),
            ],
        ))?;
        run30(&mut self.docker(&[
            "import".as_ref(),
            "-c".as_ref(),
            r#"CMD ["/bin/busybox","sh"]"#.as_ref(),
            tar.as_os_str(),
            IMAGE.as_ref(),
        ]))?;
        Ok(())
    }

    pub fn create_network(
        &self,
        name: &str,
        v4: Ipv4Net,
        v6: Option<Ipv6Net>,
    ) -> Result<()> {
        let mut args = vec![
            "network".to_string(),
            "create".into(),
            "--driver".into(),
            "bridge".into(),
            "--subnet".into(),
            v4.to_string(),
            "--label".into(),
            format!("com.docker.compose.project={PROJECT}"),
            "--label".into(),
            format!("com.docker.compose.network={name}"),
        ];
        if let Some(v6) = v6 {
            args.extend(["--ipv6".into(), "--subnet".into(), v6.to_string()]);
        }
        args.push(name.to_string());
        run30(&mut self.docker(&args))?;
        Ok(())
    }

    /// Runs a container that only sleeps; the lab serves its ports from
    /// inside its network namespace.
    pub fn run_container(&mut self, spec: &ContainerSpec) -> Result<Running> {
        let Some((first, first_ip)) = spec.networks.first() else {
            bail!("container {} has no network", spec.name);
        };
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            spec.name.clone(),
            "--network".into(),
            first.clone(),
            "--label".into(),
            format!("com.docker.compose.service={}", spec.service),
            "--label".into(),
            format!("com.docker.compose.project={PROJECT}"),
            "--label".into(),
            "com.docker.compose.oneoff=False".into(),
        ];
        if let Some(ip) = first_ip {
            args.extend(["--ip".into(), ip.to_string()]);
        }
        for (host, cont, proto) in &spec.publish {
            args.extend(["-p".into(), format!("{host}:{cont}/{}", proto.as_str())]);
        }
        args.extend([
            IMAGE.into(),
            "/bin/busybox".into(),
            "sleep".into(),
            "2147483647".into(),
        ]);
        run(&mut self.docker(&args))?;

        for (net, ip) in &spec.networks[1..] {
            let mut a = vec!["network".to_string(), "connect".into()];
            if let Some(ip) = ip {
                a.extend(["--ip".into(), ip.to_string()]);
            }
            a.extend([net.clone(), spec.name.clone()]);
            run30(&mut self.docker(&a))?;
        }

        let running = self.inspect(&spec.name)?;
        self.containers.push(running.clone());
        Ok(running)
    }

    fn inspect(&self, name: &str) -> Result<Running> {
        let out = run30(&mut self.docker(&["inspect", name]))?;
        let v: serde_json::Value =
            serde_json::from_str(&out).context("docker inspect: bad JSON")?;
        let c = &v[0];
        let pid = c["State"]["Pid"].as_u64().unwrap_or(0) as u32;
        if pid == 0 {
            bail!("container {name} is not running");
        }
        let mut addrs = BTreeMap::new();
        if let Some(nets) = c["NetworkSettings"]["Networks"].as_object() {
            for (net, n) in nets {
                let v4 = n["IPAddress"].as_str().and_then(|s| s.parse().ok());
                let v6 = n["GlobalIPv6Address"].as_str().and_then(|s| s.parse().ok());
                addrs.insert(net.clone(), (v4, v6));
            }
        }
        Ok(Running {
            name: name.to_string(),
            pid,
            addrs,
            netns: netns_id(&format!("/proc/{pid}/ns/net")),
        })
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };

        // Containers first, killed at once: their sleep ignores SIGTERM.
        if matches!(child.try_wait(), Ok(None)) {
            // Every container, including one whose `run` failed halfway.
            let listed =
                cmd::output(&mut self.docker(&["ps", "-aq"]), Duration::from_secs(10));
            let mut names: Vec<String> =
                self.containers.iter().map(|c| c.name.clone()).collect();
            if let Ok(o) = listed {
                names.extend(o.stdout.split_whitespace().map(str::to_string));
            }
            names.sort();
            names.dedup();
            if !names.is_empty() {
                let mut args = vec!["rm".to_string(), "-f".into()];
                args.extend(names);
                let _ = cmd::output(&mut self.docker(&args), Duration::from_secs(30));
            }
            cmd::signal(child.id(), "TERM");
        }
        if wait_for(&mut child, Duration::from_secs(15)).is_none() {
            eprintln!("lab: dockerd did not stop in 15s; killed");
        }

        // A containerd that dockerd started normally stops with it; not
        // when dockerd was killed.
        let pidfile = self.dir.join("x/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours =
                String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy());
            if ours && cmd::alive(pid) {
                cmd::signal(pid, "TERM");
                let end = Instant::now() + Duration::from_secs(5);
                while cmd::alive(pid) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if cmd::alive(pid) {
                    cmd::signal(pid, "KILL");
                }
            }
        }

        // Anything still in a container's namespace (a shim's child whose
        // shim died) goes too.
        for c in &self.containers {
            if let Some(id) = c.netns {
                kill_in_netns(id);
            }
        }
        unmount_under(&self.dir);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `run` with room for a slow first container start.
fn run(c: &mut Command) -> Result<String> {
    cmd::run(c, Duration::from_secs(60))
}
