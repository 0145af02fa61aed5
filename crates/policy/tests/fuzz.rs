//! Property tests: no input makes the policy front end panic, and every
//! error it reports points inside the file.

use palisade_policy::{parse, BUILTIN};
use proptest::prelude::*;

fn check_diagnostics(src: &str) {
    if let Err(d) = parse(src, "fuzz.toml") {
        assert!(!d.0.is_empty());
        let lines = src.split('\n').count().max(1);
        for e in &d.0 {
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            assert!(e.column >= 1);
            let _ = e.to_string();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,400}") {
        check_diagnostics(&src);
    }

    /// The reference policy with one byte range replaced: mostly almost
    /// valid input, which reaches the semantic checks.
    #[test]
    fn mutated_builtin_never_panics(
        at in 0usize..BUILTIN.len(),
        len in 0usize..12,
        with in "[a-z0-9\\[\\]{}=\",./:_ -]{0,8}",
    ) {
        let mut s = BUILTIN.to_string();
        let start = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        let mut end = (start + len).min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.replace_range(start..end, &with);
        check_diagnostics(&s);
    }
}

proptest! {
    /// Group membership by binary search agrees with a plain scan.
    #[test]
    fn group_membership_is_a_scan(
        nets in proptest::collection::vec((any::<u32>(), 8u8..=32), 1..40),
        probes in proptest::collection::vec(any::<u32>(), 1..40),
    ) {
        let list: Vec<String> = nets
            .iter()
            .map(|(a, len)| {
                let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(*a), *len).expect("len");
                net.trunc().to_string()
            })
            .collect();
        let quoted: Vec<String> = list.iter().map(|n| format!("\"{n}\"")).collect();
        let src = format!(
            "[host]\npublic_interfaces = [\"eth0\"]\n[groups]\ng = [{}]\n",
            quoted.join(", ")
        );
        let p = parse(&src, "g.toml").expect("valid");
        let g = &p.groups["g"];
        let raw: Vec<ipnet::IpNet> = list.iter().map(|n| n.parse().expect("net")).collect();
        for a in probes {
            let addr = std::net::IpAddr::V4(std::net::Ipv4Addr::from(a));
            prop_assert_eq!(g.contains(&addr), raw.iter().any(|n| n.contains(&addr)));
        }
    }
}
