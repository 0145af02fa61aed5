//! Shared by the integration tests: root check, throwaway namespaces,
//! apply options that act inside a namespace, and bounded polling.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_compile::{Resolution, ResolvedService};
use palisade_enforce::apply::{ApplyOptions, WatcherCommand};
use palisade_enforce::netns::Netns;
use palisade_enforce::Nft;
use palisade_policy::Policy;

/// Whether these tests can run: root, with `ip` and `nft` available.
/// Prints why not, so a skipped test is visible in the output.
pub fn can_run(test: &str) -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        eprintln!("skipping {test}: needs root (network namespaces, nft)");
        return false;
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").output().is_ok()
            || Command::new(tool).arg("--version").output().is_ok();
        if !found {
            eprintln!("skipping {test}: `{tool}` is not installed");
            return false;
        }
    }
    true
}

/// A namespace named `pe-<pid>-<n>`, deleted on drop.
pub fn netns() -> Netns {
    Netns::create("pe").expect("create a network namespace")
}

/// A policy with only SSH from one admin address and no published ports:
/// nft 1.0.6 lists its table in a form that loads back as it is.
pub const SMALL: &str = r#"
version = 1

[host]
public_interfaces = ["eth0"]

[groups]
admin = ["198.51.100.10"]

[ssh]
port = 22
allow = ["admin"]

[services.web]
ports = [{ port = 8080 }]
"#;

pub fn small_policy() -> Policy {
    palisade_policy::parse(SMALL, "small.toml").expect("the small policy is valid")
}

/// A resolution putting `service` at `addr`.
pub fn resolution(service: &str, addr: &str) -> Resolution {
    let mut r = Resolution::default();
    r.services.insert(
        service.to_string(),
        ResolvedService {
            containers: vec![format!("{service}-1")],
            v4: vec![addr.parse().expect("an IPv4 address")],
            v6: Vec::new(),
        },
    );
    r.bridges = vec!["br-pe0".into()];
    r
}

/// Apply options acting in `ns` with state in `state_dir`; the rollback
/// watcher is this test binary running the `watcher_entry` test.
pub fn options(
    policy: Policy,
    ns: &Netns,
    state_dir: &Path,
    res: Resolution,
) -> ApplyOptions {
    let mut o = ApplyOptions::new(policy);
    o.nft = Nft::in_netns(ns.name());
    o.state_dir = state_dir.to_path_buf();
    o.resolution = Some(res);
    o.ssh = None;
    o.watcher = WatcherCommand {
        program: std::env::current_exe().expect("the test binary"),
        args: [
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "watcher_entry",
            "--",
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
    };
    o
}

/// Polls `f` every 100 ms until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Options for the small policy with `web` at 203.0.113.8, the setup most
/// tests start from.
pub fn small_options(ns: &Netns, state_dir: &Path) -> ApplyOptions {
    options(
        small_policy(),
        ns,
        state_dir,
        resolution("web", "203.0.113.8"),
    )
}
