//! The compiled ruleset keeps every promise of the policy, and nothing
//! more, for the reference policy and the golden edge cases.

use palisade_compile::{compile, selfcheck, trace, Resolution};

fn policies() -> Vec<palisade_policy::Policy> {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/nft");
    let mut out = vec![palisade_policy::builtin()];
    for entry in std::fs::read_dir(root).expect("golden folder") {
        let dir = entry.expect("entry").path();
        out.push(palisade_policy::load(&dir.join("policy.toml")).expect("valid policy"));
    }
    out
}

#[test]
fn every_policy_passes_its_own_selfcheck() {
    for p in policies() {
        let rs = compile(&p, &Resolution::default());
        let bad = selfcheck(&p, &rs);
        assert!(bad.is_empty(), "{}: {bad:#?}", p.origin);
    }
}

/// The self-check is not vacuous: a ruleset that lost its flow rules
/// breaks it.
#[test]
fn the_selfcheck_catches_a_missing_rule() {
    let p = palisade_policy::builtin();
    let mut rs = compile(&p, &Resolution::default());
    for chain in &mut rs.chains {
        chain
            .rules
            .retain(|r| !r.id.starts_with("flow-ai-trading-bot-mcp-memory"));
    }
    let bad = selfcheck(&p, &rs);
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(bad.iter().all(|m| m.expected));
}

fn verdict(src: &str, dst: &str) -> (bool, String) {
    let p = palisade_policy::builtin();
    let rs = compile(&p, &Resolution::default());
    let q = trace::parse_query(&p, src, dst, false).expect("query");
    let t = trace::trace(&p, &rs, &q);
    (t.accepted, t.decided_by)
}

#[test]
fn traces_name_the_deciding_rule() {
    assert_eq!(
        verdict("admin", "host:22/tcp"),
        (true, "input:ssh".to_string())
    );
    assert_eq!(
        verdict("203.0.113.9", "host:8080/tcp"),
        (false, "input:input-default".to_string())
    );
    assert_eq!(
        verdict("203.0.113.9", "host:18080/tcp"),
        (false, "forward:forward-default".to_string())
    );
    assert_eq!(
        verdict("dashboard-frontend", "dashboard-backend:8000/tcp"),
        (
            true,
            "forward:flow-dashboard-frontend-dashboard-backend-8000-tcp".to_string()
        )
    );
    assert_eq!(
        verdict("nginx", "203.0.113.1:443/tcp"),
        (false, "forward:forward-default".to_string())
    );
    assert!(verdict("loopback", "host:18080/tcp").0);
    assert!(verdict("2001:db8:100::7", "host:3000/tcp").0);
    assert!(!verdict("2001:db8:200::7", "host:3000/tcp").0);
}

#[test]
fn bad_queries_are_refused_with_a_reason() {
    let p = palisade_policy::builtin();
    let e = trace::parse_query(&p, "nowhere", "host:22/tcp", false).unwrap_err();
    assert!(e.contains("`nowhere` is not a service"), "{e}");
    let e = trace::parse_query(&p, "admin", "host:99999/tcp", false).unwrap_err();
    assert!(e.contains("not a port"), "{e}");
    let e = trace::parse_query(&p, "admin", "host:22/sctp", false).unwrap_err();
    assert!(e.contains("unknown protocol"), "{e}");
    let e = trace::parse_query(&p, "198.51.100.10", "[::1]:22", false).unwrap_err();
    assert!(e.contains("not of one family"), "{e}");
    assert!(trace::parse_query(&p, "[2001:db8::1]", "host:22/TCP", false).is_ok());
}
