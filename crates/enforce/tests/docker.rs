//! `resolve` against a real Docker daemon: a private dockerd inside a
//! throwaway network namespace, a busybox image imported from the host's
//! /bin/busybox, and two containers on a user network (root only; skipped
//! without dockerd). Run: `cargo test -p palisade-enforce --test docker`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use palisade_enforce::docker;

/// A dockerd in `ns` with everything under `dir`; stopped, unmounted and
/// removed on drop.
struct Dockerd {
    child: Child,
    dir: PathBuf,
    host: String,
}

impl Dockerd {
    fn start(ns: &str, dir: &Path) -> Dockerd {
        let host = format!("unix://{}/docker.sock", dir.display());
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .args(["-H", &host])
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["--bridge=none", "--iptables=false", "--storage-driver=vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        Dockerd {
            child,
            dir: dir.to_path_buf(),
            host,
        }
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.host])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn ready(&self) -> bool {
        Command::new("docker")
            .args(["-H", &self.host, "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first (their shims outlive dockerd), then dockerd.
        let _ = Command::new("docker")
            .args(["-H", &self.host, "rm", "-f", "pe-web-1", "db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stopped = eventually(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // dockerd leaves mounts under its roots when it dies hard.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let root = self.dir.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn resolve_finds_container_address_and_bridge() {
    if !can_run("resolve_finds_container_address_and_bridge") {
        return;
    }
    for tool in ["dockerd", "docker", "nsenter"] {
        if !have(tool) {
            eprintln!("skipping resolve_finds_container_address_and_bridge: no {tool}");
            return;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping resolve_finds_container_address_and_bridge: no /bin/busybox");
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let d = Dockerd::start(ns.name(), dir.path());
    assert!(
        eventually(Duration::from_secs(30), || d.ready()),
        "dockerd did not come up: {}",
        std::fs::read_to_string(dir.path().join("dockerd.log")).unwrap_or_default()
    );

    // An image holding only busybox.
    let img = dir.path().join("img");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", img.join("bin/busybox")).unwrap();
    let tar = dir.path().join("img.tar");
    let tarred = Command::new("tar")
        .arg("-C")
        .arg(&img)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(tarred.success());
    d.docker(&["import", &tar.display().to_string(), "pe-busybox:1"]);

    let net_id = d.docker(&[
        "network",
        "create",
        "--subnet",
        "203.0.113.0/24",
        "pe-trading",
    ]);
    // One container found by its compose label, one by its name.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "pe-web-1",
        "--network",
        "pe-trading",
        "--label",
        "com.docker.compose.service=web",
        "pe-busybox:1",
        "/bin/busybox",
        "sleep",
        "300",
    ]);
    let web_ip = d.docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        "pe-web-1",
    ]);

    let policy = palisade_policy::parse(
        &format!("{SMALL}\n[services.db]\nports = [{{ port = 5432 }}]\n"),
        "small.toml",
    )
    .unwrap();
    let r = docker::resolve(&policy, Some(&d.host)).expect("resolve");

    let web = &r.resolution.services["web"];
    assert_eq!(web.containers, vec!["pe-web-1".to_string()]);
    assert_eq!(
        web.v4,
        vec![web_ip.parse::<std::net::Ipv4Addr>().unwrap()],
        "{r:?}"
    );
    assert!(web.v4[0].octets()[..3] == [203, 0, 113]);
    let bridge = format!("br-{}", &net_id[..12]);
    assert_eq!(r.resolution.bridges, vec![bridge]);
    assert_eq!(r.missing, vec!["db".to_string()]);

    // By container name: a container named like the service counts too.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "pe-trading",
        "-p",
        "127.0.0.1:15432:5432",
        "pe-busybox:1",
        "/bin/busybox",
        "sleep",
        "300",
    ]);
    let r = docker::resolve(&policy, Some(&d.host)).expect("resolve");
    assert_eq!(r.resolution.services["db"].v4.len(), 1, "{r:?}");
    assert!(r.missing.is_empty());
    // Docker publishes a port the policy keeps internal: said, with the
    // address Docker bound it to.
    let w = docker::publish_warnings(&policy, &r);
    assert!(
        w.iter().any(|w| w.starts_with(
            "service db: Docker publishes 127.0.0.1:15432->5432/tcp, which the policy does not list"
        )),
        "{w:#?}"
    );
    let _ = Command::new("docker")
        .args(["-H", &d.host, "rm", "-f", "db"])
        .output();
}
