//! `collect`, `audit`, `verify` and `trace --live` on a namespace that
//! stands in for a host with palisade applied.

mod common;

use common::Netns;

fn host_with_palisade() -> (Netns, tempfile::TempDir) {
    let ns = Netns::new("analysis");
    for argv in [
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ][..],
        &["ip", "link", "set", "eth0", "up"],
        &["ip", "link", "set", "peer0", "up"],
        &["ip", "addr", "add", "203.0.113.10/28", "dev", "eth0"],
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "203.0.113.1",
            "dev",
            "eth0",
            "onlink",
        ],
    ] {
        let out = ns.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let state = tempfile::tempdir().expect("tempdir");
    let out = ns.exec(&[
        env!("CARGO_BIN_EXE_palisade"),
        "apply",
        "--no-docker",
        "--yes",
        "--state-dir",
        state.path().to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ns, state)
}

fn json(ns: &Netns, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut argv = vec![env!("CARGO_BIN_EXE_palisade"), "--format", "json"];
    argv.extend_from_slice(args);
    let out = ns.exec(&argv);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{args:?}: {e}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code(), v)
}

#[test]
fn the_live_rules_keep_the_policy_and_the_audit_sees_it() {
    let (ns, dir) = host_with_palisade();

    let (code, v) = json(&ns, &["verify"]);
    assert_eq!(code, Some(0), "{v:#}");
    assert!(v["checked"].as_u64().expect("checked") > 20);
    assert_eq!(v["differences"].as_array().expect("list").len(), 0);

    let (code, d) = json(&ns, &["trace", "--live", "198.51.100.10", "host:22/tcp"]);
    assert_eq!(code, Some(0));
    assert_eq!(d["fate"], "pass", "{d:#}");
    let (_, d) = json(&ns, &["trace", "--live", "203.0.113.99", "host:22/tcp"]);
    assert_eq!(d["fate"], "blocked", "{d:#}");

    // The matrix from two sources: the admin reaches SSH, a stranger not.
    let out = ns.exec(&[
        env!("CARGO_BIN_EXE_palisade"),
        "audit",
        "--source",
        "198.51.100.10",
        "--source",
        "203.0.113.99",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |from: &str| {
        text.lines()
            .find(|l| l.starts_with(from) && l.contains(" 22/tcp "))
            .unwrap_or_else(|| panic!("no 22/tcp row from {from}:\n{text}"))
            .to_string()
    };
    assert!(row("198.51.100.10").contains(" open "), "{text}");
    assert!(row("203.0.113.99").contains(" blocked "), "{text}");

    // Offline: the same answers from a collection.
    let saved = dir.path().join("collected");
    let saved = saved.to_str().expect("utf8");
    let out = ns.exec(&[env!("CARGO_BIN_EXE_palisade"), "collect", saved]);
    assert!(out.status.success());
    let (code, findings) = json(&ns, &["audit", "--from", saved]);
    assert_eq!(code, Some(0), "{findings:#}");
    assert_eq!(findings.as_array().expect("list").len(), 0);
    let (_, d) = json(
        &ns,
        &["trace", "--from", saved, "203.0.113.99", "host:80/tcp"],
    );
    assert_eq!(d["fate"], "pass", "{d:#}");
}

#[test]
fn verify_names_the_difference_when_the_rules_are_not_the_policy() {
    let (ns, _dir) = host_with_palisade();
    // The host runs the built-in policy; verify it against one that opens
    // SSH to everyone.
    let other = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(
        other.path(),
        "[host]\npublic_interfaces = [\"eth0\"]\n[ssh]\nallow = \"public\"\n",
    )
    .expect("write");
    let (code, v) = json(&ns, &["verify", other.path().to_str().expect("utf8")]);
    assert_eq!(code, Some(1), "{v:#}");
    let diffs = v["differences"].as_array().expect("list");
    let ssh = diffs
        .iter()
        .find(|d| {
            d["intent"]
                .as_str()
                .is_some_and(|i| i.starts_with("ssh 22/tcp"))
        })
        .expect("an ssh difference");
    assert_eq!(ssh["expected_open"], true);
    assert_eq!(ssh["fate"], "blocked");
    assert!(ssh["decided_by"]
        .as_str()
        .expect("rule")
        .contains("inet palisade"));
}
