//! The command line as a user meets it: exit codes, messages, output.

use assert_cmd::Command;

fn palisade() -> Command {
    Command::cargo_bin("palisade").expect("binary")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn check_accepts_the_builtin_and_the_example() {
    palisade().arg("check").assert().success();
    let out = palisade()
        .args(["check", "examples/trading-bot/policy.toml"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains("ok (7 services, 6 flows, 2 groups)"),
        "{stdout}"
    );
}

#[test]
fn a_broken_policy_exits_2_naming_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "broken.toml",
        "[host]\npublic_interfaces = [\"eth0\"]\n[ssh]\nallow = [\"admins\"]\n",
    );
    let out = palisade().arg("check").arg(&path).assert().code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let place = format!("{}:4:10", path.display());
    assert!(stderr.contains(&place), "{stderr}");
    assert!(stderr.contains("unknown group `admins`"), "{stderr}");
    assert!(
        stderr.contains("hint: define it under [groups]"),
        "{stderr}"
    );
}

#[test]
fn check_json_lists_every_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "b.toml", "[groups]\na = []\n");
    let out = palisade()
        .args(["--format", "json", "check"])
        .arg(&path)
        .assert()
        .code(2);
    let v: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"].as_array().expect("errors").len(), 2);
    assert_eq!(v["errors"][0]["line"], 2);
}

#[test]
fn a_missing_file_is_bad_input() {
    let out = palisade()
        .args(["check", "/nonexistent/p.toml"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("/nonexistent/p.toml: cannot read the policy"),
        "{stderr}"
    );
}

#[test]
fn compile_is_deterministic_and_only_touches_palisades_table() {
    let a = palisade().arg("compile").assert().success();
    let b = palisade().arg("compile").assert().success();
    let a = a.get_output().stdout.clone();
    assert_eq!(a, b.get_output().stdout);
    let text = String::from_utf8(a).expect("utf8");
    assert!(text.starts_with("table inet palisade {"));
    assert_eq!(text.matches("\ntable ").count(), 0, "one table only");
}

#[test]
fn trace_prints_verdict_and_rule() {
    let out = palisade()
        .args([
            "trace",
            "examples/trading-bot/policy.toml",
            "203.0.113.9",
            "host:8765/tcp",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains("verdict: DROP by input:input-default"),
        "{stdout}"
    );
    let out = palisade()
        .args([
            "--format",
            "json",
            "trace",
            "examples/trading-bot/policy.toml",
            "ai-trading-bot",
            "mcp-memory:8765/tcp",
        ])
        .assert()
        .success();
    let v: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["accepted"], true);
}

#[test]
fn schema_is_json() {
    let out = palisade().arg("schema").assert().success();
    let v: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["title"], "palisade policy");
}

/// The policy the README shows passes `check`, so the README stays true.
#[test]
fn the_readme_policy_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + readme[start..].find("```").expect("its end");
    palisade_policy::parse(&readme[start..end], "README.md")
        .expect("the README's policy is valid");
}
