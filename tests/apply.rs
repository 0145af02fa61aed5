//! `palisade apply` as a user runs it, inside throwaway network namespaces:
//! a broken policy changes nothing, an unconfirmed apply rolls back by
//! itself, a confirmed one stays.

mod common;

use std::time::{Duration, Instant};

use common::Netns;

fn palisade() -> String {
    env!("CARGO_BIN_EXE_palisade").to_string()
}

fn table(ns: &Netns) -> String {
    let out = ns.exec(&["nft", "list", "table", "inet", "palisade"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(ns: &Netns, args: &[&str]) -> std::process::Output {
    let exe = palisade();
    let mut argv = vec![exe.as_str(), "apply", "--no-docker"];
    argv.extend_from_slice(args);
    ns.exec(&argv)
}

/// Waits (bounded) until `cond` holds.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

#[test]
fn a_broken_policy_changes_nothing() {
    let ns = Netns::new("broken");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().to_str().expect("utf8");
    let out = apply(&ns, &["--yes", "--state-dir", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = table(&ns);
    assert!(before.contains("chain forward"));

    let bad = state.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[host]\npublic_interfaces = [\"eth0\"]\n[ssh]\nallow = [\"nope\"]\n",
    )
    .expect("write");
    let out = apply(
        &ns,
        &["--yes", "--state-dir", dir, bad.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:4:10"), "{stderr}");
    assert_eq!(
        table(&ns),
        before,
        "a refused policy must leave the table alone"
    );
}

#[test]
fn an_unconfirmed_apply_rolls_back_by_itself() {
    let ns = Netns::new("unconfirmed");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().to_str().expect("utf8");
    let out = apply(&ns, &["--yes", "--state-dir", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = table(&ns);

    let minimal = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/nft/minimal/policy.toml"
    );
    let out = apply(
        &ns,
        &["--confirm-within", "1s", "--state-dir", dir, minimal],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("palisade confirm"));
    assert_ne!(table(&ns), before, "the new ruleset is loaded at first");

    assert!(
        eventually(Duration::from_secs(15), || table(&ns) == before),
        "the previous ruleset did not come back:\n{}",
        table(&ns)
    );
}

#[test]
fn a_confirmed_apply_stays() {
    let ns = Netns::new("confirmed");
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().to_str().expect("utf8");
    let out = apply(&ns, &["--confirm-within", "2s", "--state-dir", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = table(&ns);
    let exe = palisade();
    let out = ns.exec(&[exe.as_str(), "confirm", "--state-dir", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(table(&ns), applied);
}
