//! The whole lab with a real dockerd: the built-in policy, and a small
//! policy with UDP and no networks, at the same time (which also shows two
//! labs can run at once).
//!
//! Enforcement is `palisade apply` when `PALISADE_BIN` names a palisade
//! binary. Otherwise the built-in policy gets the hand-written ruleset in
//! `tests/data/trading-bot.nft` (which checks the lab's own expectations
//! against rules written from the policy by hand) and the small policy
//! gets nothing. Needs root and dockerd; skipped with a message otherwise.
//! Takes about 30 seconds.
//!
//!     sudo cargo test -p palisade-lab --test lab -- --nocapture
//!     sudo PALISADE_BIN=target/debug/palisade cargo test -p palisade-lab --test lab

use std::path::{Path, PathBuf};

use palisade_lab::{Check, Enforce, LabOptions, LabReport, Phase, Proto, Reach};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines().any(|l| {
                l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")
            })
        })
        .unwrap_or(false)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn can_run() -> bool {
    if !is_root() {
        eprintln!("skipped: the lab needs root (network namespaces, dockerd)");
        return false;
    }
    if !on_path("dockerd") || !Path::new("/bin/busybox").is_file() {
        eprintln!("skipped: the lab needs dockerd and /bin/busybox (busybox-static)");
        return false;
    }
    true
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn options(policy: Option<PathBuf>, fallback: Enforce) -> LabOptions {
    let enforce = match std::env::var_os("PALISADE_BIN") {
        Some(bin) => Enforce::Apply {
            exe: Some(PathBuf::from(bin)),
        },
        None => fallback,
    };
    LabOptions {
        policy,
        agent_exe: Some(env!("CARGO_BIN_EXE_palisade-lab-agent").into()),
        enforce,
        ..LabOptions::default()
    }
}

/// No namespace or /etc/netns entry of this run is left.
fn assert_nothing_left(report: &LabReport) {
    let prefix = &report.run_id;
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix.as_str()))
                .collect()
        })
        .unwrap_or_default();
    assert!(netns.is_empty(), "namespaces left: {netns:?}");
    let etc_left = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix.as_str()))
        })
        .unwrap_or(false);
    assert!(!etc_left, "/etc/netns entries left");
}

fn find<'a>(
    report: &'a LabReport,
    from: &str,
    to: &str,
    proto: Proto,
) -> &'a palisade_lab::ProbeResult {
    report
        .probes
        .iter()
        .find(|p| {
            p.phase == Phase::Palisade && p.from == from && p.to == to && p.proto == proto
        })
        .unwrap_or_else(|| panic!("no probe {from} -> {to}/{proto:?}"))
}

#[test]
fn built_in_policy_holds_and_ufw_alone_leaks() {
    if !can_run() {
        return;
    }
    let opts = options(None, Enforce::Ruleset(data("trading-bot.nft")));
    let report = palisade_lab::run(opts).expect("the lab runs");
    println!("{}", report.to_human());
    let json = serde_json::to_value(&report).expect("the report serialises");
    assert!(json["probes"].as_array().is_some_and(|p| !p.is_empty()));

    assert!(
        report.host_unchanged,
        "the machine's firewall or /etc/ufw changed"
    );
    assert_eq!(report.mismatches, 0, "palisade-phase probes that disagree");
    assert!(report.passed);

    // Every kind of check ran, and the flood was cut.
    for check in [
        Check::Published,
        Check::Ssh,
        Check::Loopback,
        Check::Flow,
        Check::ContainerEgress,
        Check::HostEgress,
        Check::RateLimit,
    ] {
        assert!(
            report
                .probes
                .iter()
                .any(|p| p.phase == Phase::Palisade && p.check == check),
            "no {check:?} probe"
        );
    }
    assert!(report
        .probes
        .iter()
        .any(|p| p.check == Check::RateLimit && p.actual == Reach::Limited));

    // The "before" picture shows Docker's published ports past UFW.
    if on_path("ufw") {
        assert!(
            report.ufw_leaks > 0,
            "UFW alone should leak published ports"
        );
    }
    assert_nothing_left(&report);
}

#[test]
fn udp_loopback_and_no_networks() {
    if !can_run() {
        return;
    }
    let opts = options(Some(data("udp-and-loopback.toml")), Enforce::Nothing);
    let applied = matches!(opts.enforce, Enforce::Apply { .. });
    let report = palisade_lab::run(opts).expect("the lab runs");
    println!("{}", report.to_human());

    // The public UDP port answers over both families, through Docker.
    for to in ["203.0.113.10:5300", "[2001:db8:113::10]:5300"] {
        let p = find(&report, "client", to, Proto::Udp);
        assert_eq!(p.actual, Reach::Open, "{p:?}");
    }
    // The loopback-only port, from the host itself.
    let lo = find(&report, "vps", "127.0.0.1:9090", Proto::Tcp);
    assert_eq!(lo.actual, Reach::Open, "{lo:?}");
    // No [ssh] section: no ssh probes; no rate limit: no flood.
    assert!(!report.probes.iter().any(|p| p.check == Check::Ssh));
    assert!(!report.probes.iter().any(|p| p.check == Check::RateLimit));

    let internal = find(&report, "attacker", "203.0.113.10:8080", Proto::Tcp);
    assert_eq!(internal.expected, Reach::Closed);
    if applied {
        assert!(report.passed, "palisade apply should hold this policy");
    } else {
        // Nothing enforced: the careless mapping is wide open.
        assert_eq!(internal.actual, Reach::Open);
    }
    assert_nothing_left(&report);
}

#[test]
fn ipv6_containers_flows_and_egress() {
    if !can_run() {
        return;
    }
    let mut opts = options(Some(data("ipv6-network.toml")), Enforce::Nothing);
    opts.compare_ufw = false;
    let applied = matches!(opts.enforce, Enforce::Apply { .. });
    let report = palisade_lab::run(opts).expect("the lab runs");
    println!("{}", report.to_human());

    let v6 = |check: Check| {
        report
            .probes
            .iter()
            .filter(|p| p.check == check && p.to.starts_with('['))
            .collect::<Vec<_>>()
    };
    // web -> db over IPv6 is a flow; db -> web is not.
    let flows = v6(Check::Flow);
    assert!(
        flows.iter().any(|p| p.from == "web"
            && p.expected == Reach::Open
            && p.actual == Reach::Open),
        "{flows:?}"
    );
    assert!(flows
        .iter()
        .any(|p| p.from == "db" && p.expected == Reach::Closed));
    // Containers reach the internet over IPv6 (DNS is allowed for all).
    let egress = v6(Check::ContainerEgress);
    assert!(
        egress
            .iter()
            .any(|p| p.to == "[2001:db8:113::1]:53" && p.actual == Reach::Open),
        "{egress:?}"
    );
    if applied {
        assert!(report.passed, "palisade apply should hold this policy");
    }
    assert_nothing_left(&report);
}
