//! `palisade lab` as the README runs it: a passing run on the built-in
//! policy and one that fails, with the report in JSON. Needs root, like
//! every kernel test; the lab builds and removes its own namespaces.

use std::process::Command;

fn lab(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["--format", "json", "lab", "--no-ufw"])
        .args(args)
        .output()
        .expect("running palisade lab");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[test]
fn the_builtin_policy_passes_and_a_wrong_ruleset_fails() {
    let (code, report) = lab(&[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["mismatches"], 0);
    assert!(report["probes"].as_array().expect("probes").len() > 100);

    // The same lab with a ruleset that forgets the container flows must
    // fail: the probes are real, not a reading of the policy.
    let rules = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("compile")
        .output()
        .expect("compile");
    let text = String::from_utf8(rules.stdout).expect("utf8");
    let broken: String = text
        .lines()
        .filter(|l| !l.contains("comment \"flow-"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.nft");
    std::fs::write(&path, broken).expect("write");
    let (code, report) = lab(&["--ruleset", path.to_str().expect("utf8")]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["passed"], false);
    assert!(report["mismatches"].as_u64().expect("count") >= 6);
}
