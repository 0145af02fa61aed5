//! Every compose file in `../shared/compose` audited, with the findings
//! written out: (service, check, line).

mod shared;

use palisade_analysis::{compose, runtime};

fn audit(name: &str) -> Vec<(String, &'static str, usize)> {
    let path = shared::dir("compose").join(name);
    let text =
        std::fs::read_to_string(&path).expect("the shared compose files are missing");
    let file = compose::parse(&text, name).expect("parses");
    runtime::audit(&file, &text, name)
        .into_iter()
        .map(|f| (f.subject, f.id, f.line))
        .collect()
}

/// The four checks every unhardened service fails, reported at the first
/// line of the service's body.
fn unhardened(service: &str, line: usize) -> Vec<(String, &'static str, usize)> {
    [
        "compose/no-cap-drop",
        "compose/no-new-privileges",
        "compose/root-user",
        "compose/writable-root",
    ]
    .into_iter()
    .map(|id| (service.to_string(), id, line))
    .collect()
}

fn sorted(
    mut v: Vec<(String, &'static str, usize)>,
) -> Vec<(String, &'static str, usize)> {
    v.sort();
    v
}

#[test]
fn freqtrade() {
    // Its API is published on 127.0.0.1 only: no exposure finding.
    assert_eq!(
        sorted(audit("freqtrade-docker-compose.yml")),
        sorted(unhardened("freqtrade", 4))
    );
}

#[test]
fn hummingbot() {
    let mut want = unhardened("hummingbot", 3);
    want.push(("hummingbot".into(), "compose/host-network", 26));
    want.extend(unhardened("gateway", 41));
    want.push(("gateway".into(), "compose/published-everywhere", 46));
    want.push(("gateway".into(), "compose/plain-secret", 52));
    assert_eq!(sorted(audit("hummingbot-docker-compose.yml")), sorted(want));
}

#[test]
fn jesse() {
    let mut want = unhardened("jesse", 6);
    for line in [14, 16, 18, 20] {
        want.push(("jesse".into(), "compose/published-everywhere", line));
    }
    want.extend(unhardened("postgres", 28));
    want.push(("postgres".into(), "compose/plain-secret", 32));
    want.extend(unhardened("redis", 40));
    assert_eq!(
        sorted(audit("jesse-project-template-docker-compose.yml")),
        sorted(want)
    );
}

#[test]
fn n8n() {
    // Secrets come from the host's environment (`${...}` or bare names):
    // no plain-secret finding.
    let mut want = unhardened("postgres", 7);
    want.extend(unhardened("n8n", 25));
    want.push(("n8n".into(), "compose/published-everywhere", 38));
    want.extend(unhardened("n8n-runner", 48));
    assert_eq!(
        sorted(audit("n8n-hosting-withPostgres-docker-compose.yml")),
        sorted(want)
    );
}

#[test]
fn octobot() {
    let mut want = unhardened("octobot", 5);
    want.push(("octobot".into(), "compose/published-everywhere", 12));
    want.extend(unhardened("watchtower", 16));
    want.push(("watchtower".into(), "compose/docker-socket", 20));
    assert_eq!(sorted(audit("octobot-docker-compose.yml")), sorted(want));
}

#[test]
fn random_host_ports_and_unreadable_entries_are_findings() {
    let text = "services:\n  web:\n    ports:\n      - 9999\n      - \"8080\"\n      - \"abc\"\n      - \"70000:80\"\n      - \"127.0.0.1::5000\"\n";
    let file = compose::parse(text, "c.yml").expect("parses");
    let found: Vec<(&str, usize)> = runtime::audit(&file, text, "c.yml")
        .iter()
        .filter(|f| {
            f.id == "compose/published-everywhere" || f.id == "compose/unreadable-port"
        })
        .map(|f| (f.id, f.line))
        .collect();
    assert_eq!(
        found,
        [
            ("compose/published-everywhere", 4),
            ("compose/published-everywhere", 5),
            ("compose/unreadable-port", 6),
            ("compose/unreadable-port", 7),
        ]
    );
    let policy = palisade_analysis::init::policy_from_compose(&file, "c.yml");
    assert!(policy.contains("random host port"), "{policy}");
    palisade_policy::parse(&policy, "g.toml").expect("still valid");
}
