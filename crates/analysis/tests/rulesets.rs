//! Every real dump in `../shared/rulesets` parses, or fails with a line
//! number and a message that says what was not understood.

mod shared;

use std::path::PathBuf;

use palisade_analysis::iptables;

fn shared() -> PathBuf {
    shared::dir("rulesets")
}

/// (path, expected result from the dataset's index: "ok" or "FAIL: why").
fn index() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(shared().join("net-network-index.tsv"))
        .expect("the shared rulesets (../shared/rulesets) are missing");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Some((cols.first()?.to_string(), cols.last()?.to_string()))
        })
        .collect()
}

/// Dumps iptables itself refuses, and what palisade must say about them.
/// Formatting noise iptables rejects (CRLF, trailing blanks, old negation)
/// palisade reads; placeholders that are not addresses it refuses by line.
fn expected_failure(path: &str) -> Option<&'static str> {
    match path {
        p if p.contains("configs_chair_for_Network") => None,
        p if p.contains("blog_a-unikernel") => Some("expected `*TABLE`"),
        p if p.contains("config_private_root") => {
            Some("`<private_ip>/32` is not an address")
        }
        p if p.contains("corny_docker/docker.txt") => Some("expected"),
        _ => None,
    }
}

#[test]
fn every_shared_dump_parses_or_fails_with_a_line_number() {
    let mut parsed = 0;
    let mut rules = 0;
    for (path, _status) in index() {
        let file = shared().join(&path);
        let text =
            String::from_utf8_lossy(&std::fs::read(&file).expect("dump")).into_owned();
        match (iptables::parse(&text, &path), expected_failure(&path)) {
            (Ok(dump), None) => {
                parsed += 1;
                rules += dump
                    .tables
                    .values()
                    .flat_map(|t| t.chains.iter())
                    .map(|c| c.rules.len())
                    .sum::<usize>();
            }
            (Ok(_), Some(why)) => panic!("{path}: parsed, but should fail with `{why}`"),
            (Err(e), Some(why)) => {
                assert!(e.line >= 1, "{path}: no line");
                assert!(e.message.contains(why), "{path}: {e}");
            }
            (Err(e), None) => panic!("{path}: {e}"),
        }
    }
    assert!(parsed >= 40, "only {parsed} dumps parsed");
    assert!(rules >= 30_000, "only {rules} rules");
}

#[test]
fn rule_counts_match_the_index() {
    // The index lists rules per table for each dump; compare the totals.
    let text =
        std::fs::read_to_string(shared().join("net-network-index.tsv")).expect("index");
    for l in text.lines().skip(1) {
        let cols: Vec<&str> = l.split('\t').collect();
        let (path, total) = (cols[0], cols[3].parse::<usize>().unwrap_or(0));
        if expected_failure(path).is_some() {
            continue;
        }
        let dump_text =
            String::from_utf8_lossy(&std::fs::read(shared().join(path)).expect("dump"))
                .into_owned();
        let dump = iptables::parse(&dump_text, path).expect("parses");
        let got: usize = dump
            .tables
            .values()
            .flat_map(|t| t.chains.iter())
            .map(|c| c.rules.len())
            .sum();
        assert_eq!(got, total, "{path}");
    }
}

#[test]
fn options_negations_and_targets_are_kept() {
    let dump = iptables::parse(
        "*filter\n:INPUT DROP [0:0]\n:X - [0:0]\n\
         -A INPUT ! -s 10.0.0.0/255.0.0.0 -i br-+ -p tcp -m tcp ! --dport 22 -m comment --comment \"a b\" -j LOG --log-prefix \"drop: \"\n\
         -A INPUT -d ! 192.0.2.1 -p udp --dport 53 -g X\r\nCOMMIT  \n",
        "t",
    )
    .expect("parses");
    let input = dump.tables["filter"].chain("INPUT").expect("INPUT");
    assert_eq!(input.policy.as_deref(), Some("DROP"));
    let r = &input.rules[0];
    assert!(r
        .src
        .as_ref()
        .is_some_and(|s| s.negated && s.net.to_string() == "10.0.0.0/8"));
    assert!(r
        .in_iface
        .as_ref()
        .is_some_and(|i| i.wildcard && i.matches("br-abc")));
    let tcp = r.module("tcp").expect("tcp");
    assert!(tcp
        .opt("dport")
        .is_some_and(|o| o.negated && o.values == ["22"]));
    assert_eq!(
        r.module("comment")
            .and_then(|m| m.opt("comment"))
            .map(|o| o.values[0].as_str()),
        Some("a b")
    );
    assert_eq!(r.target(), Some("LOG"));
    assert_eq!(r.target_options[0].values, ["drop: "]);
    let r = &input.rules[1];
    assert!(r.dst.as_ref().is_some_and(|d| d.negated));
    assert_eq!(
        r.module("udp")
            .and_then(|m| m.opt("dport"))
            .map(|o| o.values.clone()),
        Some(vec!["53".to_string()])
    );
    assert!(matches!(&r.verdict, iptables::Verdict::Goto(c) if c == "X"));
}

#[test]
fn errors_name_the_line() {
    let e = iptables::parse(
        "*filter\n:INPUT ACCEPT [0:0]\n-A MINE -j DROP\nCOMMIT\n",
        "t",
    )
    .unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("does not declare"), "{e}");
    let e = iptables::parse("*filter\n:INPUT ACCEPT [0:0]\n", "t").unwrap_err();
    assert!(e.message.contains("without COMMIT"), "{e}");
    let e = iptables::parse(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 300.0.0.1 -j DROP\nCOMMIT\n",
        "t",
    )
    .unwrap_err();
    assert_eq!(e.line, 3);
}
