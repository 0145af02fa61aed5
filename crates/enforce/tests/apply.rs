//! apply, confirm, rollback and dry run against a real kernel, each test
//! inside its own throwaway network namespace (root only; skipped
//! otherwise). Run: `cargo test -p palisade-enforce --test apply`.

mod common;

use std::time::Duration;

use common::*;
use palisade_enforce::apply::{self, WatchArgs};
use palisade_enforce::ssh::SshSession;
use palisade_enforce::state::{Outcome, StateDir};
use palisade_enforce::{Error, Nft};

/// Not a test: the rollback watcher the tests start. `apply` runs this
/// binary as `... --exact watcher_entry -- --state-dir D ...`; in a plain
/// test run there is no `--` and this returns at once.
#[test]
fn watcher_entry() {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "--") else {
        return;
    };
    let watch = WatchArgs::parse(&args[at + 1..]).expect("watcher arguments");
    let outcome = apply::rollback_watch(&watch);
    eprintln!("rollback-watch {}: {outcome:?}", watch.token);
}

const LIMIT: Duration = Duration::from_secs(15);

#[test]
fn apply_loads_and_verifies() {
    if !can_run("apply_loads_and_verifies") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let policy = palisade_policy::builtin();
    let opts = options(policy, &ns, dir.path(), resolution("nginx", "203.0.113.80"));

    let report = apply::apply(&opts).expect("apply");

    assert!(!report.dry_run);
    assert_eq!(report.rollback_point.as_deref(), Some("absent"));
    assert_eq!(report.services_resolved, vec!["nginx".to_string()]);
    assert!(report
        .services_missing
        .contains(&"ai-trading-bot".to_string()));
    assert!(report.pending.is_none());
    // Only dry runs compute a diff: listing a table costs most of a second
    // next to a large set.
    assert!(report.diff.is_empty(), "{}", report.diff);
    let listed = opts.nft.list_table().unwrap().expect("the table is loaded");
    assert!(listed.contains("203.0.113.80"), "{listed}");
    let json = opts.nft.list_table_json().unwrap().unwrap();
    let rs = palisade_compile::compile(&opts.policy, opts.resolution.as_ref().unwrap());
    assert_eq!(
        palisade_enforce::nft::verify(&rs, &json),
        Vec::<String>::new()
    );
    assert_eq!(
        palisade_enforce::nft::Loaded::from_json(&json).rule_count(),
        report.rules
    );
}

#[test]
fn verify_reports_a_table_that_differs() {
    if !can_run("verify_reports_a_table_that_differs") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(&ns, dir.path());
    apply::apply(&opts).expect("apply");

    // Someone removes a rule behind palisade's back.
    let json = opts.nft.list_table_json().unwrap().unwrap();
    let handle = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| {
            let r = i.get("rule")?;
            (r["chain"] == "input" && r["comment"] == "ssh")
                .then(|| r["handle"].as_i64())?
        })
        .expect("the ssh rule");
    let handle = handle.to_string();
    opts.nft
        .run(
            &[
                "delete", "rule", "inet", "palisade", "input", "handle", &handle,
            ],
            None,
        )
        .unwrap();

    let json = opts.nft.list_table_json().unwrap().unwrap();
    let rs = palisade_compile::compile(&opts.policy, opts.resolution.as_ref().unwrap());
    let diffs = palisade_enforce::nft::verify(&rs, &json);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].starts_with("chain input holds"), "{diffs:?}");
}

#[test]
fn broken_script_leaves_previous_table_unchanged() {
    if !can_run("broken_script_leaves_previous_table_unchanged") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(&ns, dir.path());
    apply::apply(&opts).expect("apply");
    let before = opts.nft.list_table().unwrap().unwrap();

    // Deletes the table, then fails half-way through the new one: the
    // transaction must leave the old table as it was.
    let broken = "table inet palisade\ndelete table inet palisade\n\
                  table inet palisade {\n\tchain input {\n\t\ttcp dport 22 accept\n\
                  \t\tjump no_such_chain\n\t}\n}\n";
    let err = opts.nft.load(broken).expect_err("a broken script fails");
    assert!(err.to_string().contains("no_such_chain"), "{err}");

    let after = opts.nft.list_table().unwrap().unwrap();
    assert_eq!(before, after);
}

#[test]
fn unconfirmed_apply_rolls_back_to_absent() {
    if !can_run("unconfirmed_apply_rolls_back_to_absent") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small_options(&ns, dir.path());
    opts.confirm_within = Some(Duration::from_secs(2));

    let report = apply::apply(&opts).expect("apply");
    let pending = report.pending.expect("waiting for confirmation");
    assert!(opts.nft.has_table().unwrap());

    let nft = opts.nft.clone();
    assert!(
        eventually(LIMIT, || !nft.has_table().unwrap()),
        "the table was not removed by the watcher; log:\n{}",
        std::fs::read_to_string(dir.path().join(format!("watch-{}.log", pending.token)))
            .unwrap_or_default()
    );
    let state = StateDir::open(dir.path()).unwrap();
    assert_eq!(state.outcome(&pending.token), Some(Outcome::Expired));
    assert!(matches!(
        apply::confirm(dir.path()),
        Err(Error::NothingPending(_))
    ));
}

#[test]
fn unconfirmed_apply_rolls_back_to_previous_table() {
    if !can_run("unconfirmed_apply_rolls_back_to_previous_table") {
        return;
    }
    // The table palisade loaded last is restored from its script; a table
    // palisade has no record of (another state directory) from its listing.
    for (name, policy, point, fresh_state) in [
        ("small", small_policy(), "last-applied", false),
        ("builtin", palisade_policy::builtin(), "last-applied", false),
        ("small-unrecorded", small_policy(), "table", true),
        (
            "builtin-unrecorded",
            palisade_policy::builtin(),
            "table",
            true,
        ),
    ] {
        let ns = netns();
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let svc = if name.starts_with("small") {
            "web"
        } else {
            "nginx"
        };
        let first = options(
            policy.clone(),
            &ns,
            dir.path(),
            resolution(svc, "203.0.113.8"),
        );
        apply::apply(&first).expect("first apply");
        let previous = first.nft.list_table_stateless().unwrap().unwrap();

        let state = if fresh_state {
            other.path()
        } else {
            dir.path()
        };
        let mut second = options(policy, &ns, state, resolution(svc, "203.0.113.9"));
        second.confirm_within = Some(Duration::from_secs(2));
        let report = apply::apply(&second).expect("second apply");
        let got = report.rollback_point.as_deref().unwrap_or_default();
        assert_eq!(got, point, "{name}: rollback point");
        let nft = second.nft.clone();
        assert_ne!(nft.list_table_stateless().unwrap().unwrap(), previous);

        assert!(
            eventually(LIMIT, || nft.list_table_stateless().unwrap().as_ref()
                == Some(&previous)),
            "{name}: the previous table did not come back"
        );
    }
}

#[test]
fn confirmed_apply_stays() {
    if !can_run("confirmed_apply_stays") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small_options(&ns, dir.path());
    opts.confirm_within = Some(Duration::from_secs(2));

    let report = apply::apply(&opts).expect("apply");
    let pending = report.pending.expect("waiting for confirmation");
    let confirmed = apply::confirm(dir.path()).expect("confirm");
    assert_eq!(confirmed.token, pending.token);

    // Past the deadline, with margin: the table is still there and the
    // watcher is gone.
    std::thread::sleep(Duration::from_secs(4));
    assert!(opts.nft.has_table().unwrap());
    let pid = pending.watcher_pid.unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(cmdline.is_empty(), "the watcher {pid} is still running");
    assert!(matches!(
        apply::confirm(dir.path()),
        Err(Error::NothingPending(_))
    ));
}

#[test]
fn rollback_restores_now() {
    if !can_run("rollback_restores_now") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let first = small_options(&ns, dir.path());
    apply::apply(&first).expect("first apply");
    let previous = first.nft.list_table_stateless().unwrap().unwrap();

    // A second apply waiting for confirmation, then a third that takes it
    // over: the rollback point stays the first table.
    let mut second = options(
        small_policy(),
        &ns,
        dir.path(),
        resolution("web", "203.0.113.9"),
    );
    second.confirm_within = Some(Duration::from_secs(60));
    let pending = apply::apply(&second).expect("second").pending.unwrap();
    let third = options(
        small_policy(),
        &ns,
        dir.path(),
        resolution("web", "203.0.113.10"),
    );
    let report = apply::apply(&third).expect("third");
    assert_eq!(report.rollback_point.as_deref(), Some("inherited"));
    let state = StateDir::open(dir.path()).unwrap();
    assert_eq!(state.outcome(&pending.token), Some(Outcome::Superseded));

    let rolled = apply::rollback(dir.path(), &first.nft).expect("rollback");
    assert!(rolled.cancelled.is_none());
    assert_eq!(first.nft.list_table_stateless().unwrap().unwrap(), previous);

    // Rollback to "absent" too, in a fresh namespace and state dir.
    let ns2 = netns();
    let dir2 = tempfile::tempdir().unwrap();
    let mut only = small_options(&ns2, dir2.path());
    only.confirm_within = Some(Duration::from_secs(60));
    let pending = apply::apply(&only).expect("apply").pending.unwrap();
    let rolled = apply::rollback(dir2.path(), &only.nft).expect("rollback");
    assert_eq!(rolled.cancelled.as_deref(), Some(pending.token.as_str()));
    assert!(!only.nft.has_table().unwrap());
}

#[test]
fn dry_run_changes_nothing() {
    if !can_run("dry_run_changes_nothing") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();

    // Against no table: the whole table is new.
    let mut dry = small_options(&ns, dir.path());
    dry.dry_run = true;
    let report = apply::apply(&dry).expect("dry run");
    assert!(
        report.diff.contains("+table inet palisade {"),
        "{}",
        report.diff
    );
    assert!(!dry.nft.has_table().unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Against a loaded table: only the changed element, nothing applied.
    let real = small_options(&ns, dir.path());
    apply::apply(&real).expect("apply");
    let before = real.nft.list_table().unwrap().unwrap();
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    let mut dry = options(
        small_policy(),
        &ns,
        dir.path(),
        resolution("web", "203.0.113.9"),
    );
    dry.dry_run = true;
    let report = apply::apply(&dry).expect("dry run");
    let changed: Vec<&str> = report
        .diff
        .lines()
        .filter(|l| (l.starts_with('+') || l.starts_with('-')) && !l.starts_with("+++"))
        .filter(|l| !l.starts_with("---"))
        .collect();
    assert_eq!(
        changed,
        vec![
            "-\t\telements = { 203.0.113.8 }",
            "+\t\telements = { 203.0.113.9 }"
        ],
        "{}",
        report.diff
    );
    assert_eq!(real.nft.list_table().unwrap().unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), files);

    // The same policy again: no change at all.
    let mut same = small_options(&ns, dir.path());
    same.dry_run = true;
    assert_eq!(apply::apply(&same).expect("dry run").diff, "");
}

#[test]
fn ssh_session_is_never_cut() {
    if !can_run("ssh_session_is_never_cut") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small_options(&ns, dir.path());

    // A stranger's session: refused, nothing loaded.
    opts.ssh = SshSession::parse("203.0.113.77 50000 192.0.2.1 22");
    let err = apply::apply(&opts).expect_err("refused");
    assert!(matches!(err, Error::SshLockout { port: 22, .. }), "{err}");
    assert!(err.is_bad_input());
    assert!(!opts.nft.has_table().unwrap());

    // --force: loaded, and from SSH that means confirm-or-roll-back.
    opts.force = true;
    let report = apply::apply(&opts).expect("forced");
    assert!(report.pending.is_some());
    assert!(!report.warnings.is_empty());
    apply::rollback(dir.path(), &opts.nft).expect("rollback");

    // The admin's session: allowed; 120 s window by default, none with --yes.
    opts.force = false;
    opts.ssh = SshSession::parse("198.51.100.10 50000 192.0.2.1 22");
    let report = apply::apply(&opts).expect("admin");
    let pending = report.pending.expect("a default confirmation window");
    assert!(pending.deadline_unix >= now() + 100, "{pending:?}");
    apply::confirm(dir.path()).expect("confirm");
    opts.yes = true;
    assert!(apply::apply(&opts).expect("--yes").pending.is_none());
}

#[test]
fn unreachable_docker_is_an_error() {
    let mut opts = palisade_enforce::ApplyOptions::new(small_policy());
    opts.ssh = None;
    opts.nft = Nft::in_netns("pe-never-created");
    opts.docker_host = Some("unix:///nonexistent/palisade-test.sock".into());
    let err = apply::apply(&opts).expect_err("no Docker");
    let text = err.to_string();
    assert!(matches!(err, Error::Docker { .. }), "{text}");
    assert!(
        text.contains("cannot reach Docker at unix:///nonexistent"),
        "{text}"
    );
    assert!(text.contains("--docker-host"), "{text}");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn bans_survive_an_apply() {
    if !can_run("bans_survive_an_apply") {
        return;
    }
    let ns = netns();
    let dir = tempfile::tempdir().unwrap();
    let opts = small_options(&ns, dir.path());
    apply::apply(&opts).expect("apply");
    opts.nft
        .run(
            &[
                "add",
                "element",
                "inet",
                "palisade",
                "ban4",
                "{ 203.0.113.66 timeout 1h }",
            ],
            None,
        )
        .unwrap();

    let again = options(
        small_policy(),
        &ns,
        dir.path(),
        resolution("web", "203.0.113.9"),
    );
    let report = apply::apply(&again).expect("apply again");
    assert!(!report.diff.contains("203.0.113.66"), "{}", report.diff);
    let listed = again.nft.list_table().unwrap().unwrap();
    assert!(listed.contains("203.0.113.66 timeout"), "{listed}");

    // A ban added after the apply survives a rollback too.
    again
        .nft
        .run(
            &[
                "add",
                "element",
                "inet",
                "palisade",
                "ban4",
                "{ 203.0.113.67 timeout 1h }",
            ],
            None,
        )
        .unwrap();
    apply::rollback(dir.path(), &again.nft).expect("rollback");
    let listed = again.nft.list_table().unwrap().unwrap();
    assert!(listed.contains("203.0.113.8"), "{listed}");
    assert!(listed.contains("203.0.113.66 timeout"), "{listed}");
    assert!(listed.contains("203.0.113.67 timeout"), "{listed}");
}
