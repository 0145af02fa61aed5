//! Apply, confirm, roll back: the whole life of a ruleset change.
//!
//! [`apply`] goes through these steps, stopping at the first failure:
//!
//! 1. resolve the policy's services with Docker (or take a given
//!    resolution);
//! 2. compile and render the one-transaction replacement script;
//! 3. refuse if it would cut the admin's SSH session (see [`crate::ssh`]);
//! 4. `nft -c`: a script nft rejects changes nothing;
//! 5. (dry run: diff against what is loaded, and stop);
//! 6. save the loaded table as the rollback point;
//! 7. load, in one transaction: on failure the old table stays;
//! 8. read back and compare with the ruleset: on a mismatch the rollback
//!    point is restored;
//! 9. with a confirmation window, start a detached watcher process that
//!    restores the rollback point at the deadline unless [`confirm`] came
//!    first.
//!
//! An apply made while another waits for confirmation takes over its
//! rollback point (the last confirmed table) and stops its watcher, so an
//! unconfirmed table never becomes the way back.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_compile::build::ban_set;
use palisade_compile::ir::{Family, SetType};
use palisade_compile::{nft as render, Resolution, Ruleset};
use palisade_policy::Policy;
use serde::Serialize;

use crate::docker;
use crate::netns::Netns;
use crate::nft::{self, Nft};
use crate::ssh::{self, SshSession};
use crate::state::{Outcome, Pending, StateDir};
use crate::{Error, DEFAULT_STATE_DIR};

/// Confirmation window used when applying from an SSH session without
/// `--confirm-within` or `--yes`.
pub const SSH_DEFAULT_CONFIRM: Duration = Duration::from_secs(120);

/// How long a watcher sleeps between looks at its pending file.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// The program started (under `setsid`) as the rollback watcher: `program
/// args... --state-dir D --token T --deadline-unix S [--netns N]`.
#[derive(Debug, Clone)]
pub struct WatcherCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl WatcherCommand {
    /// `palisade rollback-watch`, via the running executable.
    pub fn current_exe() -> WatcherCommand {
        WatcherCommand {
            program: std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("palisade")),
            args: vec!["rollback-watch".into()],
        }
    }
}

/// Everything [`apply`] needs. [`ApplyOptions::new`] gives the defaults
/// of `palisade apply`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub policy: Policy,
    /// `--docker-host`; `DOCKER_HOST` or the default socket when `None`.
    pub docker_host: Option<String>,
    /// Use this instead of asking Docker (lab, tests).
    pub resolution: Option<Resolution>,
    pub state_dir: PathBuf,
    pub dry_run: bool,
    /// Roll back unless confirmed within this time.
    pub confirm_within: Option<Duration>,
    /// `--yes`: no implicit confirmation window for SSH sessions.
    pub yes: bool,
    /// `--force`: apply even if it would cut the SSH session, or if no
    /// rollback point can be made.
    pub force: bool,
    /// The SSH session applying, from `SSH_CONNECTION` by default.
    pub ssh: Option<SshSession>,
    pub nft: Nft,
    pub watcher: WatcherCommand,
}

impl ApplyOptions {
    pub fn new(policy: Policy) -> ApplyOptions {
        ApplyOptions {
            policy,
            docker_host: None,
            resolution: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            dry_run: false,
            confirm_within: None,
            yes: false,
            force: false,
            ssh: SshSession::from_env(),
            nft: Nft::host(),
            watcher: WatcherCommand::current_exe(),
        }
    }
}

/// What an apply did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub dry_run: bool,
    /// Where nft ran: "on the host" or "in network namespace NAME".
    pub place: String,
    /// Dry runs: unified diff of palisade's table, what is loaded against
    /// what would be, in nft's listing format without counters. Empty when
    /// nothing would change, and for real applies.
    pub diff: String,
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    /// Services with at least one running container.
    pub services_resolved: Vec<String>,
    /// Services with none: their sets are empty (fail closed).
    pub services_missing: Vec<String>,
    /// "absent", "table", "last-applied" (the listing did not load back,
    /// the last applied script stands in), or "inherited" (kept from an
    /// unconfirmed apply).
    pub rollback_point: Option<String>,
    /// Set when the apply rolls back unless confirmed.
    pub pending: Option<Pending>,
    pub warnings: Vec<String>,
}

/// Resolves, compiles, checks and loads the policy; see the module header.
pub fn apply(opts: &ApplyOptions) -> Result<ApplyReport, Error> {
    let nft = &opts.nft;

    // 1-2. What to load.
    let resolved = match &opts.resolution {
        Some(r) => resolved_from(&opts.policy, r.clone()),
        None => docker::resolve(&opts.policy, opts.docker_host.as_deref())?,
    };
    let rs = palisade_compile::compile(&opts.policy, &resolved.resolution);
    let base_script = render::replace_script(&rs);
    let mut script = base_script.clone();
    let mut report = ApplyReport {
        dry_run: opts.dry_run,
        place: nft.place(),
        diff: String::new(),
        chains: rs.chains.len(),
        rules: rs.chains.iter().map(|c| c.rules.len()).sum(),
        sets: rs.sets.len(),
        services_resolved: resolved
            .resolution
            .services
            .iter()
            .filter(|(_, s)| !s.containers.is_empty())
            .map(|(n, _)| n.clone())
            .collect(),
        services_missing: resolved.missing.clone(),
        rollback_point: None,
        pending: None,
        warnings: missing_warning(&resolved.missing)
            .into_iter()
            // Only Docker knows what it publishes.
            .chain(match opts.resolution {
                None => docker::publish_warnings(&opts.policy, &resolved),
                Some(_) => Vec::new(),
            })
            .collect(),
    };

    // 3. The admin's own session.
    if let Some(session) = &opts.ssh {
        if !ssh::ssh_session_allowed(
            &opts.policy,
            &rs,
            session.client,
            session.server_port,
        ) {
            if !opts.force {
                return Err(Error::SshLockout {
                    client: session.client,
                    port: session.server_port,
                });
            }
            report.warnings.push(format!(
                "--force: the new policy does not accept new SSH connections from {} to \
                 port {}",
                session.client, session.server_port
            ));
        }
    }

    // Bans outlive the replacement, in the same transaction. Only the ban
    // sets are read: listing the whole table costs most of a second next
    // to a large set.
    let ban_sets: Vec<String> = rs
        .sets
        .iter()
        .filter(|s| s.role == palisade_compile::ir::SetRole::Ban)
        .map(|s| s.name.clone())
        .collect();
    for listed in nft.list_ban_sets(&ban_sets)? {
        let bans = nft::carry_over_bans(&rs, &listed);
        if !bans.is_empty() {
            script.push_str("# bans carried over from the loaded table\n");
            script.push_str(&bans);
        }
    }

    // 4-5. Dry run: nft's own opinion of the new table, loaded into a
    // throwaway namespace, and the change against what is loaded. (A real
    // load needs no separate check: it is one transaction, all or nothing.)
    if opts.dry_run {
        nft.check(&script).map_err(|e| Error::Check(Box::new(e)))?;
        let before = nft.list_table_stateless()?.unwrap_or_default();
        let after = canonical_listing(&rs, &script, &mut report.warnings)?;
        report.diff = unified_diff(&before, &after);
        return Ok(report);
    }

    // 6. The way back.
    let state = StateDir::open(&opts.state_dir)?;
    let superseded = supersede_pending(&state)?;
    let rollback_ok = match &superseded {
        Some(_) => {
            report.rollback_point = Some("inherited".into());
            true
        }
        None => match save_rollback_point(&state, nft) {
            Ok(kind) => {
                report.rollback_point = Some(kind.into());
                true
            }
            Err(e) if opts.force => {
                // An older rollback point would now restore the wrong table.
                state.remove_rollback()?;
                report
                    .warnings
                    .push(format!("--force: applying without a rollback point: {e}"));
                false
            }
            Err(e) => return Err(e),
        },
    };

    // 7. Load: one transaction, all or nothing.
    if let Err(e) = nft.load(&script) {
        if superseded.is_some() {
            // The table in place was never confirmed and its watcher is
            // gone: do now what that watcher would have done.
            let _ = restore(&state, nft);
        }
        return Err(Error::Load(Box::new(e)));
    }

    // 8. Read back: the kernel must hold what was compiled. The table is
    // listed without set elements (group sets may hold hundreds of
    // thousands); the sets whose elements are compared, the services' and
    // the bridges', are listed one by one.
    let diffs = match nft.list_table_json_terse() {
        Ok(Some(mut listed)) => match fill_exact_sets(nft, &rs, &mut listed) {
            Ok(()) => nft::verify(&rs, &listed),
            Err(e) => vec![format!("cannot read a set back: {e}")],
        },
        Ok(None) => vec!["palisade's table is not there after the load".into()],
        Err(e) => vec![format!("cannot read the table back: {e}")],
    };
    if !diffs.is_empty() {
        let rolled_back = rollback_ok && restore(&state, nft).is_ok();
        return Err(Error::Verify { diffs, rolled_back });
    }
    // Without the carried bans: as a rollback point later, their timeouts
    // would be stale. The chain fingerprint tells the next apply whether
    // the loaded table is still this one.
    state.save_applied(&base_script)?;
    state.write(APPLIED_CHAINS, &nft.chain_fingerprint()?)?;

    // 9. Confirm or roll back.
    let window = opts.confirm_within.or(match (&opts.ssh, opts.yes) {
        (Some(_), false) => Some(SSH_DEFAULT_CONFIRM),
        _ => None,
    });
    if let Some(window) = window {
        if !rollback_ok {
            report
                .warnings
                .push("no rollback point: the confirmation window is skipped".into());
        } else {
            let pending = start_watcher(&state, opts, window)?;
            tracing::info!(
                token = %pending.token,
                deadline_unix = pending.deadline_unix,
                watcher_pid = pending.watcher_pid,
                "waiting for confirmation; the previous table comes back at the deadline"
            );
            report.pending = Some(pending);
        }
    }

    tracing::info!(
        place = %report.place,
        chains = report.chains,
        rules = report.rules,
        sets = report.sets,
        services_resolved = report.services_resolved.len(),
        services_missing = report.services_missing.len(),
        "palisade table loaded and verified"
    );
    Ok(report)
}

/// Puts the elements of the sets that `nft::verify` compares exactly (the
/// services' and the bridges', when they should hold any) into a terse
/// listing.
fn fill_exact_sets(
    nft: &Nft,
    rs: &Ruleset,
    listed: &mut serde_json::Value,
) -> Result<(), Error> {
    use palisade_compile::ir::SetRole;
    let exact = rs.sets.iter().filter(|s| {
        matches!(s.role, SetRole::Service(_) | SetRole::Bridges) && !s.elements.is_empty()
    });
    for set in exact {
        let out = nft.run(
            &[
                "-j",
                "list",
                "set",
                "inet",
                palisade_compile::ir::TABLE,
                &set.name,
            ],
            None,
        )?;
        let one: serde_json::Value =
            serde_json::from_str(&out.stdout).map_err(|e| Error::NftOutput {
                command: format!("nft -j list set inet palisade {}", set.name),
                detail: e.to_string(),
            })?;
        let elem = one["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|i| i.get("set").and_then(|s| s.get("elem")))
            .cloned();
        let Some(elem) = elem else {
            continue;
        };
        for item in listed["nftables"].as_array_mut().into_iter().flatten() {
            if let Some(obj) = item.get_mut("set").and_then(|s| s.as_object_mut()) {
                if obj.get("name").and_then(|n| n.as_str()) == Some(set.name.as_str()) {
                    obj.insert("elem".into(), elem.clone());
                }
            }
        }
    }
    Ok(())
}

/// One line for every service without a running container, however many.
fn missing_warning(missing: &[String]) -> Option<String> {
    let (n, shown) = match missing.len() {
        0 => return None,
        n if n <= 8 => (n, missing.join(", ")),
        n => (
            n,
            format!("{}, and {} more", missing[..8].join(", "), n - 8),
        ),
    };
    let (noun, verb) = if n == 1 {
        ("service", "has")
    } else {
        ("services", "have")
    };
    Some(format!(
        "{n} {noun} {verb} no running container, so {} sets are empty and their \
         rules match nothing: {shown}",
        if n == 1 { "its" } else { "their" }
    ))
}

fn resolved_from(policy: &Policy, resolution: Resolution) -> docker::Resolved {
    let missing = policy
        .services
        .keys()
        .filter(|n| {
            resolution.services.get(*n).is_none_or(|s| {
                s.containers.is_empty() && s.v4.is_empty() && s.v6.is_empty()
            })
        })
        .cloned()
        .collect();
    docker::Resolved {
        resolution,
        missing,
        published: Vec::new(),
    }
}

/// The new table as nft itself lists it: loaded into a throwaway network
/// namespace and listed there. Without the rights to make one, falls back
/// to palisade's own rendering (and says so).
fn canonical_listing(
    rs: &Ruleset,
    script: &str,
    warnings: &mut Vec<String>,
) -> Result<String, Error> {
    let ns = match Netns::create("palisade-dry") {
        Ok(ns) => ns,
        Err(e) => {
            warnings.push(format!(
                "cannot make a throwaway network namespace ({e}); the diff compares \
                 nft's listing with palisade's rendering, so formatting differences \
                 show up as changes"
            ));
            return Ok(render::render(rs));
        }
    };
    let scratch = Nft::in_netns(ns.name());
    scratch.load(script)?;
    Ok(scratch.list_table_stateless()?.unwrap_or_default())
}

/// Unified diff of two table listings; empty when they are equal. The
/// time a set element has left (`expires ...`) changes from one listing to
/// the next, so it is left out of the comparison.
pub fn unified_diff(before: &str, after: &str) -> String {
    let (before, after) = (without_expiry(before), without_expiry(after));
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header("loaded: table inet palisade", "new: table inet palisade")
        .to_string()
}

/// `text` without the ` expires DURATION` of set elements.
fn without_expiry(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" expires ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " expires ".len()..];
        let end = after.find([',', ' ', '}', '\n']).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Saves what is loaded now as `rollback.nft`. Returns "absent",
/// "table" (nft's listing of it) or "last-applied" (the script of the
/// last apply, when the listing does not load back).
/// File in the state directory with the chain fingerprint of the table
/// palisade loaded last.
const APPLIED_CHAINS: &str = "applied.chains";

fn save_rollback_point(state: &StateDir, nft: &Nft) -> Result<&'static str, Error> {
    let now = unix_now();

    // The table loaded is the one palisade loaded last (same chains, same
    // handles): its script is the rollback point, without listing a table
    // whose sets may hold hundreds of thousands of elements. Bans are
    // carried over when it is restored.
    let fingerprint = nft.chain_fingerprint()?;
    let recorded = std::fs::read_to_string(state.path().join(APPLIED_CHAINS)).ok();
    if !fingerprint.is_empty() && recorded.as_deref() == Some(fingerprint.as_str()) {
        if let Some(applied) = state.read_applied()? {
            let script = format!(
                "# palisade rollback point, saved at {now} (unix) from the last applied \
                 script, which the loaded table still is\n{applied}"
            );
            state.save_rollback(&script)?;
            return Ok("last-applied");
        }
    }

    let Some(listing) = nft.list_table()? else {
        let script = format!(
            "# palisade rollback point, saved at {now} (unix): no palisade table was \
             loaded\n{}",
            render::remove_script()
        );
        state.save_rollback(&script)?;
        return Ok("absent");
    };

    // nft's listing is the exact state, with bans and counters, but some
    // nft versions list rules in a form they do not parse back. Check it;
    // if it does not load, fall back to the script palisade loaded last.
    let listed = format!(
        "# palisade rollback point, saved at {now} (unix) from the loaded table\n\
         table inet palisade\ndelete table inet palisade\n{listing}"
    );
    let listed_err = match nft.check(&listed) {
        Ok(()) => {
            state.save_rollback(&listed)?;
            return Ok("table");
        }
        Err(e) => e,
    };
    if let Some(applied) = state.read_applied()? {
        if nft.check(&applied).is_ok() {
            tracing::warn!(
                "the loaded table's listing does not load back; the rollback point is \
                 the script of the last apply (bans added since are not kept)"
            );
            let script = format!(
                "# palisade rollback point, saved at {now} (unix) from the last applied \
                 script\n{applied}"
            );
            state.save_rollback(&script)?;
            return Ok("last-applied");
        }
    }
    Err(Error::NoRollbackPoint {
        detail: listed_err.to_string(),
    })
}

/// Loads the rollback point, keeping the bans of the loaded table when
/// the restored one has ban sets too.
fn restore(state: &StateDir, nft: &Nft) -> Result<(), Error> {
    let mut script = state
        .read_rollback()?
        .ok_or_else(|| Error::NoRollback(state.path().to_path_buf()))?;
    let ban_sets: Vec<(String, SetType)> = Family::BOTH
        .into_iter()
        .map(|f| {
            let ty = match f {
                Family::V4 => SetType::Ipv4Addr,
                Family::V6 => SetType::Ipv6Addr,
            };
            (ban_set(f), ty)
        })
        .filter(|(name, _)| script.contains(&format!("set {name} {{")))
        .collect();
    if !ban_sets.is_empty() {
        // A listing that cannot be read is no reason not to roll back.
        if let Ok(Some(listed)) = nft.list_table_json() {
            script.push_str(&nft::carry_over_elements(&ban_sets, &listed));
        }
    }
    match nft.load(&script) {
        Ok(()) => {
            tracing::info!(place = %nft.place(), "rollback point restored");
            Ok(())
        }
        Err(e) => {
            tracing::error!(place = %nft.place(), error = %e, "restoring the rollback point failed");
            Err(e)
        }
    }
}

/// Takes over an apply still waiting for confirmation: its watcher stops
/// and its rollback point stays. Returns the taken-over apply.
fn supersede_pending(state: &StateDir) -> Result<Option<Pending>, Error> {
    let Some(p) = state.pending()? else {
        return Ok(None);
    };
    if state.claim(&p.token, Outcome::Superseded)? {
        stop_watcher(&p);
        tracing::info!(token = %p.token, "took over an unconfirmed apply");
        return Ok(Some(p));
    }
    // Its watcher is restoring right now: let it finish, then start from
    // the restored table.
    wait_gone(p.watcher_pid, &p.token, Duration::from_secs(15));
    Ok(None)
}

fn start_watcher(
    state: &StateDir,
    opts: &ApplyOptions,
    window: Duration,
) -> Result<Pending, Error> {
    let window_secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    let token = new_token();
    let mut pending = Pending {
        token: token.clone(),
        deadline_unix: unix_now() + window_secs.max(1),
        watcher_pid: None,
        netns: opts.nft.netns.clone(),
    };
    state.clean_finished(&token);

    let fail = |detail: String| {
        let _ = state.claim(&token, Outcome::Superseded);
        let _ = restore(state, &opts.nft);
        Error::Watcher { detail }
    };

    // The pending file exists before the watcher starts: a watcher that
    // does not find its file takes that as "confirmed" and exits.
    state
        .write_pending(&pending)
        .map_err(|e| fail(e.to_string()))?;
    let log = state.log_path(&token);
    let open_log = || OpenOptions::new().create(true).append(true).open(&log);
    let (out, err) = match (open_log(), open_log()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return Err(fail(format!("cannot open {}: {e}", log.display())))
        }
    };
    let args = WatchArgs {
        state_dir: state.path().to_path_buf(),
        token: token.clone(),
        deadline_unix: pending.deadline_unix,
        netns: opts.nft.netns.clone(),
    };
    let mut cmd = Command::new("setsid");
    cmd.arg(&opts.watcher.program)
        .args(&opts.watcher.args)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if std::env::var_os("PALISADE_LOG").is_none() {
        cmd.env("PALISADE_LOG", "info");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run setsid: {e}")))?;
    pending.watcher_pid = Some(child.id());
    // Reap the watcher if this process outlives it (it does not in the
    // CLI, where the watcher is handed to init).
    std::thread::spawn(move || child.wait());
    state
        .write_pending(&pending)
        .map_err(|e| fail(e.to_string()))?;
    Ok(pending)
}

/// What a confirmation did.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmReport {
    pub token: String,
    pub deadline_unix: u64,
}

/// Confirms the apply waiting in `state_dir`: it stays, its watcher stops.
pub fn confirm(state_dir: &Path) -> Result<ConfirmReport, Error> {
    let state = StateDir::open(state_dir)?;
    let Some(p) = state.pending()? else {
        return Err(Error::NothingPending(state_dir.to_path_buf()));
    };
    if !state.claim(&p.token, Outcome::Confirmed)? {
        // The watcher claimed it a moment ago and is restoring.
        return Err(match state.outcome(&p.token) {
            Some(Outcome::Expired) => Error::TooLate { token: p.token },
            _ => Error::NothingPending(state_dir.to_path_buf()),
        });
    }
    stop_watcher(&p);
    tracing::info!(token = %p.token, "apply confirmed");
    Ok(ConfirmReport {
        token: p.token,
        deadline_unix: p.deadline_unix,
    })
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The pending apply that was cancelled, if one was waiting.
    pub cancelled: Option<String>,
    /// The first line of the rollback point (says what it holds).
    pub restored: String,
}

/// Restores the rollback point now, cancelling a pending confirmation.
pub fn rollback(state_dir: &Path, nft: &Nft) -> Result<RollbackReport, Error> {
    let state = StateDir::open(state_dir)?;
    let script = state
        .read_rollback()?
        .ok_or_else(|| Error::NoRollback(state_dir.to_path_buf()))?;
    let mut cancelled = None;
    if let Some(p) = state.pending()? {
        if state.claim(&p.token, Outcome::Superseded)? {
            stop_watcher(&p);
            cancelled = Some(p.token);
        }
    }
    restore(&state, nft)?;
    Ok(RollbackReport {
        cancelled,
        restored: script
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .to_string(),
    })
}

/// Arguments of the hidden `rollback-watch` verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchArgs {
    pub state_dir: PathBuf,
    pub token: String,
    pub deadline_unix: u64,
    pub netns: Option<String>,
}

impl WatchArgs {
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--state-dir".into(),
            self.state_dir.clone().into(),
            "--token".into(),
            self.token.clone().into(),
            "--deadline-unix".into(),
            self.deadline_unix.to_string().into(),
        ];
        if let Some(ns) = &self.netns {
            v.push("--netns".into());
            v.push(ns.into());
        }
        v
    }

    /// Parses `--state-dir D --token T --deadline-unix S [--netns N]`,
    /// ignoring anything before the first of them.
    pub fn parse(args: &[String]) -> Result<WatchArgs, Error> {
        let start = args
            .iter()
            .position(|a| a == "--state-dir")
            .ok_or_else(|| Error::WatchArgs("missing --state-dir".into()))?;
        let mut state_dir = None;
        let mut token = None;
        let mut deadline = None;
        let mut netns = None;
        let mut it = args[start..].iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| Error::WatchArgs(format!("{flag} needs a value")))?;
            match flag.as_str() {
                "--state-dir" => state_dir = Some(PathBuf::from(value)),
                "--token" => token = Some(value.clone()),
                "--deadline-unix" => {
                    deadline = Some(value.parse().map_err(|_| {
                        Error::WatchArgs(format!("--deadline-unix {value}: not a number"))
                    })?)
                }
                "--netns" => netns = Some(value.clone()),
                other => {
                    return Err(Error::WatchArgs(format!("unknown argument {other}")))
                }
            }
        }
        Ok(WatchArgs {
            state_dir: state_dir
                .ok_or_else(|| Error::WatchArgs("missing --state-dir".into()))?,
            token: token.ok_or_else(|| Error::WatchArgs("missing --token".into()))?,
            deadline_unix: deadline
                .ok_or_else(|| Error::WatchArgs("missing --deadline-unix".into()))?,
            netns,
        })
    }
}

/// What the watcher ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchOutcome {
    /// Confirmed, or taken over by a later apply or rollback.
    Released,
    /// The deadline passed: the rollback point was restored.
    RolledBack,
}

/// The watcher: waits for the deadline, then restores the rollback point
/// unless the pending apply was confirmed or taken over. Blocks.
pub fn rollback_watch(args: &WatchArgs) -> Result<WatchOutcome, Error> {
    let state = StateDir::open(&args.state_dir)?;
    let nft = Nft {
        netns: args.netns.clone(),
    };
    let deadline = UNIX_EPOCH + Duration::from_secs(args.deadline_unix);
    loop {
        if !state.is_pending(&args.token) {
            tracing::info!(token = %args.token, outcome = ?state.outcome(&args.token), "watcher released");
            return Ok(WatchOutcome::Released);
        }
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(WATCH_POLL));
    }
    if !state.claim(&args.token, Outcome::Expired)? {
        tracing::info!(token = %args.token, "confirmed at the deadline");
        return Ok(WatchOutcome::Released);
    }
    tracing::warn!(token = %args.token, "not confirmed in time: restoring the previous table");
    restore(&state, &nft)?;
    Ok(WatchOutcome::RolledBack)
}

/// Stops the watcher of `p`: it exits by itself within one poll once its
/// pending file is gone; after a grace period it is sent SIGTERM.
fn stop_watcher(p: &Pending) {
    let Some(pid) = p.watcher_pid else {
        return;
    };
    if wait_gone(Some(pid), &p.token, WATCH_POLL * 10) {
        return;
    }
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects; the pid was checked above to
    // still be the watcher for this token (its command line names it).
    let _ = unsafe { libc::kill(pid_t, libc::SIGTERM) };
    wait_gone(Some(pid), &p.token, WATCH_POLL * 10);
}

/// Waits until process `pid` is no longer the watcher for `token`.
/// `true` when it is gone within `limit`.
fn wait_gone(pid: Option<u32>, token: &str, limit: Duration) -> bool {
    let Some(pid) = pid else {
        return true;
    };
    let start = std::time::Instant::now();
    while is_watcher(pid, token) {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether `pid` is a live process whose command line names `token`.
/// A zombie has an empty command line, so it does not count.
fn is_watcher(pid: u32, token: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(token))
        .unwrap_or(false)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn new_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{:x}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_args_round_trip() {
        let a = WatchArgs {
            state_dir: "/run/palisade".into(),
            token: "abc".into(),
            deadline_unix: 1234,
            netns: Some("pe-1-x".into()),
        };
        let mut args: Vec<String> = vec!["palisade".into(), "rollback-watch".into()];
        args.extend(a.to_args().iter().map(|s| s.to_string_lossy().into_owned()));
        assert_eq!(WatchArgs::parse(&args).unwrap(), a);
        assert!(WatchArgs::parse(&["--token".into(), "x".into()]).is_err());
    }

    #[test]
    fn diff_is_empty_for_equal_tables() {
        assert_eq!(unified_diff("a\n", "a\n"), "");
        let d = unified_diff("a\nb\n", "a\nc\n");
        assert!(d.contains("-b") && d.contains("+c"), "{d}");
        let before =
            "elements = { 203.0.113.5 timeout 1h expires 59m58s, 203.0.113.6 }\n";
        let after =
            "elements = { 203.0.113.5 timeout 1h expires 59m57s10ms, 203.0.113.6 }\n";
        assert_eq!(unified_diff(before, after), "");
        assert_eq!(
            without_expiry(before),
            "elements = { 203.0.113.5 timeout 1h, 203.0.113.6 }\n"
        );
    }
}
