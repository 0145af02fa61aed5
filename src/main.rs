//! `palisade`: one policy file for a Docker host, enforced and proven.
//!
//! This file only parses the command line and prints; every verb lives in
//! a crate: policy (check), compile (compile, trace), enforce (apply,
//! confirm, rollback) and lab.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use palisade_policy::{LoadError, Policy};

/// Exit codes every verb keeps to.
const EXIT_OK: u8 = 0;
const EXIT_FINDINGS: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(name = "palisade", version, about, long_about = None)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
    /// SARIF 2.1.0 (audit findings; other verbs print JSON).
    Sarif,
}

#[derive(Subcommand)]
enum Command {
    /// Check a policy file; exit 2 with every error if it is broken.
    Check {
        /// Policy file; the built-in trading-bot policy if omitted.
        policy: Option<PathBuf>,
    },
    /// Compile a policy to nftables and print the ruleset.
    Compile {
        /// Policy file; the built-in trading-bot policy if omitted.
        policy: Option<PathBuf>,
        /// Output target.
        #[arg(long, value_enum, default_value_t = Target::Nft)]
        target: Target,
    },
    /// Follow one new connection through the compiled policy and print
    /// the verdict and the rule that decides it.
    ///
    /// With --live (or --from DIR): follow it through the host's real
    /// chains instead, with SRC an address (or `host`) and DST ADDR:PORT.
    #[command(override_usage = "palisade trace POLICY SRC DST:PORT[/PROTO]\n       \
                                palisade trace --live SRC DST:PORT[/PROTO]")]
    Trace {
        /// POLICY SRC DST, or SRC DST with --live or --from. SRC: an
        /// address, a service, a group, `host` or `loopback`; DST:
        /// DST:PORT[/PROTO], e.g. `host:22/tcp`, `nginx:80`.
        #[arg(num_args = 2..=3, required = true)]
        args: Vec<String>,
        /// Use IPv6 when neither end is an address.
        #[arg(short = '6', long)]
        ipv6: bool,
        /// Trace through the live host's rules.
        #[arg(long)]
        live: bool,
        /// Trace through a collection made by `palisade collect`.
        #[arg(long, conflicts_with = "live")]
        from: Option<PathBuf>,
    },
    /// Audit what the internet reaches on this host (or a collection made
    /// by `palisade collect`), or how a compose file's containers run.
    /// Exit 1 when findings at or above --fail-on exist.
    Audit {
        /// Read the host's state from this folder instead of the live host.
        #[arg(long, conflicts_with = "compose")]
        from: Option<PathBuf>,
        /// Audit a docker-compose file instead of a host.
        #[arg(long)]
        compose: Option<PathBuf>,
        /// Where the connections come from (an IPv4 and/or an IPv6 address;
        /// default: addresses in no network of yours).
        #[arg(long = "source", value_name = "ADDR")]
        sources: Vec<std::net::IpAddr>,
        /// Lowest severity that makes the exit code 1.
        #[arg(long, value_enum, default_value_t = FailOn::High)]
        fail_on: FailOn,
    },
    /// Save the host's firewall and network state into DIR for offline use.
    Collect {
        /// Folder to write the files into (made if missing).
        dir: PathBuf,
        /// Docker Engine API address (default: DOCKER_HOST or the socket).
        #[arg(long)]
        docker_host: Option<String>,
    },
    /// Check the host's real rules against a policy: every difference with
    /// a concrete packet and the rule that decides it. Exit 1 on any.
    Verify {
        /// Policy file; the built-in trading-bot policy if omitted.
        policy: Option<PathBuf>,
        /// Read the host's state from this folder instead of the live host
        /// (container addresses from `resolution.json` in it, if present).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Docker Engine API address, for container addresses (live only).
        #[arg(long)]
        docker_host: Option<String>,
    },
    /// Write a starting policy for a compose file to stdout.
    Init {
        /// docker-compose file to start from.
        #[arg(long)]
        from_compose: PathBuf,
    },
    /// Apply a policy: resolve its services through Docker, load palisade's
    /// table in one transaction, and roll back unless confirmed in time.
    Apply {
        /// Policy file; the built-in trading-bot policy if omitted.
        policy: Option<PathBuf>,
        /// Print the exact change against what is loaded; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Roll back by itself unless `palisade confirm` runs within this
        /// time (e.g. 60s, 2m). Default from an SSH session: 120s.
        #[arg(long, value_parser = humantime::parse_duration)]
        confirm_within: Option<std::time::Duration>,
        /// No implicit confirmation window for SSH sessions.
        #[arg(long)]
        yes: bool,
        /// Apply even if it would cut the SSH session this runs from.
        #[arg(long)]
        force: bool,
        /// Docker Engine API address (default: DOCKER_HOST or the socket).
        #[arg(long)]
        docker_host: Option<String>,
        /// Do not ask Docker: service sets stay empty (match nothing).
        #[arg(long, conflicts_with = "docker_host")]
        no_docker: bool,
        /// Where the rollback point and pending confirmation live.
        #[arg(long, default_value = palisade_enforce::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Keep the ruleset applied last; its automatic rollback is cancelled.
    Confirm {
        #[arg(long, default_value = palisade_enforce::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Go back to the ruleset from before the last apply, now.
    Rollback {
        #[arg(long, default_value = palisade_enforce::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// The detached process that rolls back an unconfirmed apply.
    #[command(hide = true)]
    RollbackWatch {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        token: String,
        #[arg(long)]
        deadline_unix: u64,
        #[arg(long)]
        netns: Option<String>,
    },
    /// Prove a policy with real packets: network namespaces stand in for a
    /// VPS and the internet, a private dockerd runs the services; probed
    /// before (UFW the usual way) and after `palisade apply`. Needs root.
    Lab {
        /// Policy file; the built-in trading-bot policy if omitted.
        policy: Option<PathBuf>,
        /// Skip the "before" picture with UFW.
        #[arg(long)]
        no_ufw: bool,
        /// Load this nftables file in the VPS instead of `palisade apply`.
        #[arg(long, value_name = "FILE")]
        ruleset: Option<PathBuf>,
        /// How long a probe waits before it counts as blocked.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Probes in flight at once.
        #[arg(long, default_value_t = 16)]
        parallel: usize,
    },
    /// The lab's probe and listener, run inside its namespaces.
    #[command(hide = true)]
    LabAgent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the JSON Schema of the policy format.
    Schema,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl FailOn {
    fn severity(self) -> palisade_analysis::findings::Severity {
        use palisade_analysis::findings::Severity;
        match self {
            FailOn::Info => Severity::Info,
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// nftables script for `nft -f` (palisade's table only).
    Nft,
    /// The ruleset model as JSON.
    Ir,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cli = Cli::parse();
    // SARIF is a format for findings; every other verb answers in JSON.
    if cli.format == Format::Sarif && !matches!(cli.command, Command::Audit { .. }) {
        cli.format = Format::Json;
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("palisade: {e:#}");
            ExitCode::from(EXIT_FINDINGS)
        }
    }
}

/// Loads the policy at `path`, or the built-in one. Errors are printed
/// here; `None` means exit 2.
fn load(path: Option<&PathBuf>, format: Format) -> Option<Policy> {
    let Some(path) = path else {
        return Some(palisade_policy::builtin());
    };
    match palisade_policy::load(path) {
        Ok(p) => Some(p),
        Err(LoadError::Invalid(diags)) => {
            match format {
                Format::Human => eprintln!("{diags}"),
                Format::Json | Format::Sarif => {
                    println!("{}", serde_json::json!({ "ok": false, "errors": diags.0 }))
                }
            }
            None
        }
        Err(e) => {
            eprintln!("palisade: {e}");
            None
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let format = cli.format;
    match cli.command {
        Command::Check { policy } => {
            let Some(p) = load(policy.as_ref(), format) else {
                return Ok(EXIT_BAD_INPUT);
            };
            match format {
                Format::Human => println!(
                    "{}: ok ({}, {}, {})",
                    p.origin,
                    count(p.services.len(), "service"),
                    count(p.flows.len(), "flow"),
                    count(p.groups.len(), "group")
                ),
                Format::Json | Format::Sarif => {
                    println!("{}", serde_json::json!({ "ok": true, "policy": p }))
                }
            }
            Ok(EXIT_OK)
        }
        Command::Compile { policy, target } => {
            let Some(p) = load(policy.as_ref(), format) else {
                return Ok(EXIT_BAD_INPUT);
            };
            let rs = palisade_compile::compile(&p, &Default::default());
            let bad = palisade_compile::selfcheck(&p, &rs);
            if !bad.is_empty() {
                anyhow::bail!(
                    "internal error: the compiled ruleset does not keep the policy \
                     (please report this): {bad:?}"
                );
            }
            let text = match target {
                Target::Nft => palisade_compile::nft::render(&rs),
                Target::Ir => serde_json::to_string_pretty(&rs)? + "\n",
            };
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing the ruleset")?;
            Ok(EXIT_OK)
        }
        Command::Trace {
            args,
            ipv6,
            live,
            from,
        } => {
            if live || from.is_some() {
                let [src, dst] = &args[..] else {
                    eprintln!("palisade: trace --live takes SRC and DST:PORT[/PROTO]");
                    return Ok(EXIT_BAD_INPUT);
                };
                return trace_live(from.as_deref(), src, dst, format);
            }
            let [policy, src, dst] = &args[..] else {
                eprintln!("palisade: trace takes POLICY SRC DST:PORT[/PROTO] (or --live SRC DST)");
                return Ok(EXIT_BAD_INPUT);
            };
            let (src, dst) = (src.clone(), dst.clone());
            let Some(p) = load(Some(&PathBuf::from(policy)), format) else {
                return Ok(EXIT_BAD_INPUT);
            };
            let query = match palisade_compile::trace::parse_query(&p, &src, &dst, ipv6) {
                Ok(q) => q,
                Err(e) => {
                    eprintln!("palisade: trace: {e}");
                    return Ok(EXIT_BAD_INPUT);
                }
            };
            let rs = palisade_compile::compile(&p, &Default::default());
            let t = palisade_compile::trace::trace(&p, &rs, &query);
            match format {
                Format::Json | Format::Sarif => {
                    println!("{}", serde_json::to_string_pretty(&t)?)
                }
                Format::Human => print_trace(&t),
            }
            Ok(EXIT_OK)
        }
        Command::Audit {
            from,
            compose,
            sources,
            fail_on,
        } => {
            let findings = match compose {
                Some(compose) => {
                    let Some((file, text, shown)) = read_compose(&compose) else {
                        return Ok(EXIT_BAD_INPUT);
                    };
                    palisade_analysis::runtime::audit(&file, &text, &shown)
                }
                None => {
                    let Some(findings) = audit_host(from.as_deref(), &sources, format)?
                    else {
                        return Ok(EXIT_BAD_INPUT);
                    };
                    findings
                }
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
                Format::Sarif => println!(
                    "{}",
                    serde_json::to_string_pretty(&palisade_analysis::sarif::to_sarif(
                        &findings
                    ))?
                ),
                Format::Human => {
                    for f in &findings {
                        println!("{f}");
                    }
                    println!("{} findings", findings.len());
                }
            }
            let worst = findings.iter().map(|f| f.severity).max();
            Ok(match worst {
                Some(w) if w >= fail_on.severity() => EXIT_FINDINGS,
                _ => EXIT_OK,
            })
        }
        Command::Verify {
            policy,
            from,
            docker_host,
        } => {
            let Some(p) = load(policy.as_ref(), format) else {
                return Ok(EXIT_BAD_INPUT);
            };
            verify(&p, from.as_deref(), docker_host.as_deref(), format)
        }
        Command::Collect { dir, docker_host } => {
            collect(&dir, docker_host.as_deref())?;
            println!("collected into {}", dir.display());
            Ok(EXIT_OK)
        }
        Command::Init { from_compose } => {
            let Some((file, _, shown)) = read_compose(&from_compose) else {
                return Ok(EXIT_BAD_INPUT);
            };
            print!(
                "{}",
                palisade_analysis::init::policy_from_compose(&file, &shown)
            );
            Ok(EXIT_OK)
        }
        Command::Apply {
            policy,
            dry_run,
            confirm_within,
            yes,
            force,
            docker_host,
            no_docker,
            state_dir,
        } => {
            let Some(p) = load(policy.as_ref(), format) else {
                return Ok(EXIT_BAD_INPUT);
            };
            let mut o = palisade_enforce::ApplyOptions::new(p);
            o.dry_run = dry_run;
            o.confirm_within = confirm_within;
            o.yes = yes;
            o.force = force;
            o.docker_host = docker_host;
            o.state_dir = state_dir;
            if no_docker {
                o.resolution = Some(Default::default());
            }
            let report = match palisade_enforce::apply(&o) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("palisade: apply: {e}");
                    return Ok(if e.is_bad_input() {
                        EXIT_BAD_INPUT
                    } else {
                        EXIT_FINDINGS
                    });
                }
            };
            match format {
                Format::Json | Format::Sarif => {
                    println!("{}", serde_json::to_string_pretty(&report)?)
                }
                Format::Human => print_apply(&report),
            }
            Ok(EXIT_OK)
        }
        Command::Confirm { state_dir } => {
            let r = palisade_enforce::confirm(&state_dir)?;
            match format {
                Format::Json | Format::Sarif => {
                    println!("{}", serde_json::to_string(&r)?)
                }
                Format::Human => println!("confirmed: the ruleset stays ({})", r.token),
            }
            Ok(EXIT_OK)
        }
        Command::Rollback { state_dir } => {
            let r =
                palisade_enforce::rollback(&state_dir, &palisade_enforce::Nft::host())?;
            match format {
                Format::Json | Format::Sarif => {
                    println!("{}", serde_json::to_string(&r)?)
                }
                Format::Human => println!("rolled back: {}", r.restored),
            }
            Ok(EXIT_OK)
        }
        Command::RollbackWatch {
            state_dir,
            token,
            deadline_unix,
            netns,
        } => {
            let args = palisade_enforce::WatchArgs {
                state_dir,
                token,
                deadline_unix,
                netns,
            };
            let outcome = palisade_enforce::rollback_watch(&args)?;
            tracing::info!(?outcome, "rollback watcher done");
            Ok(EXIT_OK)
        }
        Command::Lab {
            policy,
            no_ufw,
            ruleset,
            timeout_ms,
            parallel,
        } => {
            if policy.is_some() && load(policy.as_ref(), format).is_none() {
                return Ok(EXIT_BAD_INPUT);
            }
            let opts = palisade_lab::LabOptions {
                policy,
                enforce: match ruleset {
                    Some(f) => palisade_lab::Enforce::Ruleset(f),
                    None => palisade_lab::Enforce::Apply { exe: None },
                },
                compare_ufw: !no_ufw,
                timeout: std::time::Duration::from_millis(timeout_ms),
                parallel,
                ..Default::default()
            };
            let report = palisade_lab::run(opts)?;
            match format {
                Format::Json | Format::Sarif => {
                    println!("{}", serde_json::to_string_pretty(&report)?)
                }
                Format::Human => print!("{}", report.to_human()),
            }
            Ok(if report.passed {
                EXIT_OK
            } else {
                EXIT_FINDINGS
            })
        }
        Command::LabAgent { args } => {
            Ok(u8::try_from(palisade_lab::agent_main(&args)?).unwrap_or(EXIT_FINDINGS))
        }
        Command::Schema => {
            println!("{}", palisade_policy::json_schema());
            Ok(EXIT_OK)
        }
    }
}

fn print_trace(t: &palisade_compile::trace::Trace) {
    let q = &t.query;
    println!("{} -> {} port {}/{}", q.src, q.dst, q.port, q.proto);
    for s in &t.steps {
        println!("  {:<10} {:<8} {}", s.chain, s.effect, s.text);
    }
    for n in &t.notes {
        println!("  note: {n}");
    }
    let verdict = if t.accepted { "ACCEPT" } else { "DROP" };
    println!("verdict: {verdict} by {} ({})", t.decided_by, t.rule_text);
}

/// Reads and parses a compose file; errors are printed here.
fn read_compose(
    path: &std::path::Path,
) -> Option<(palisade_analysis::compose::ComposeFile, String, String)> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("palisade: {shown}: cannot read the compose file: {e}");
            return None;
        }
    };
    match palisade_analysis::compose::parse(&text, &shown) {
        Ok(file) => Some((file, text, shown)),
        Err(e) => {
            eprintln!("palisade: {e}");
            None
        }
    }
}

fn print_apply(r: &palisade_enforce::ApplyReport) {
    if r.dry_run {
        if r.diff.is_empty() {
            println!("dry run {}: no change", r.place);
        } else {
            println!("dry run {}: this change would be applied:", r.place);
            print!("{}", r.diff);
        }
    } else {
        println!(
            "applied {}: {} chains, {} rules, {} sets; services resolved: {}",
            r.place,
            r.chains,
            r.rules,
            r.sets,
            r.services_resolved.len()
        );
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    if let Some(p) = &r.pending {
        println!(
            "run `palisade confirm` within {}s or the previous ruleset comes back \
             (token {})",
            p.deadline_unix.saturating_sub(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ),
            p.token
        );
    }
}

/// Audits a host, live or collected; prints the exposure matrix (human
/// format) and returns the findings. `None`: bad input, already printed.
fn audit_host(
    from: Option<&std::path::Path>,
    sources: &[std::net::IpAddr],
    format: Format,
) -> anyhow::Result<Option<Vec<palisade_analysis::findings::Finding>>> {
    use palisade_analysis::audit;
    let source = from.map_or("live host".to_string(), |d| d.display().to_string());
    let Some(state) = host_state(from, "audit")? else {
        return Ok(None);
    };
    // Each given source is followed separately; without one, an address
    // of the internet in no network of yours, per family.
    let v4: Vec<std::net::IpAddr> =
        sources.iter().filter(|a| a.is_ipv4()).copied().collect();
    let v6: Vec<std::net::IpAddr> =
        sources.iter().filter(|a| a.is_ipv6()).copied().collect();
    let v4 = if v4.is_empty() {
        vec![audit::INTERNET_V4.parse().expect("constant")]
    } else {
        v4
    };
    let v6 = if v6.is_empty() {
        vec![audit::INTERNET_V6.parse().expect("constant")]
    } else {
        v6
    };
    let pairs = v4.len().max(v6.len());
    let mut matrix = Vec::new();
    for i in 0..pairs {
        let (src4, src6) = (v4[i.min(v4.len() - 1)], v6[i.min(v6.len() - 1)]);
        for e in audit::exposure_from(&state, src4, src6) {
            // A family with fewer sources repeats its last: keep it once.
            if !matrix.iter().any(|m: &audit::Exposure| {
                m.source == e.source
                    && m.addr == e.addr
                    && m.port == e.port
                    && m.proto == e.proto
            }) {
                matrix.push(e);
            }
        }
    }
    if format == Format::Human {
        println!("What reaches {source}, from where:");
        println!(
            "{:<20} {:<24} {:<10} {:<9} {:<22} DECIDED BY",
            "FROM", "ADDRESS", "PORT", "VERDICT", "REACHES"
        );
        for e in &matrix {
            let verdict = match e.fate {
                palisade_analysis::eval::Fate::Pass => "open",
                palisade_analysis::eval::Fate::Blocked => "blocked",
                palisade_analysis::eval::Fate::MayPass => "may-pass",
            };
            let port = format!("{}/{:?}", e.port, e.proto).to_lowercase();
            println!(
                "{:<20} {:<24} {:<10} {:<9} {:<22} {}",
                e.source.to_string(),
                e.addr.to_string(),
                port,
                verdict,
                e.reaches,
                e.why
            );
        }
        if !state.other_nft_tables.is_empty() {
            println!(
                "nftables tables evaluated besides iptables: {}",
                state.other_nft_tables.join(", ")
            );
        }
        println!();
    }
    let mut findings = audit::findings(&matrix, &source);
    findings.extend(audit::rule_findings(&state, &source));
    findings.extend(audit::docker_findings(&state, &source));
    findings.extend(audit::structure_findings(&state, &source));
    Ok(Some(findings))
}

fn verify(
    policy: &Policy,
    from: Option<&std::path::Path>,
    docker_host: Option<&str>,
    format: Format,
) -> anyhow::Result<u8> {
    let Some(state) = host_state(from, "verify")? else {
        return Ok(EXIT_BAD_INPUT);
    };
    let resolution = match from {
        Some(d) => match std::fs::read_to_string(d.join("resolution.json")) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!("{}: not a resolution", d.join("resolution.json").display())
            })?,
            Err(_) => {
                eprintln!(
                    "palisade: verify: no resolution.json in {}: containers are not checked",
                    d.display()
                );
                Default::default()
            }
        },
        None => match palisade_enforce::resolve(policy, docker_host) {
            Ok(r) => r.resolution,
            Err(e) => {
                eprintln!("palisade: verify: {e}\n  containers are not checked");
                Default::default()
            }
        },
    };
    let v = palisade_analysis::verify::verify(policy, &resolution, &state);
    match format {
        Format::Json | Format::Sarif => println!("{}", serde_json::to_string_pretty(&v)?),
        Format::Human => {
            for d in &v.differences {
                let p = &d.packet;
                let want = if d.expected_open { "open" } else { "closed" };
                let got = match d.fate {
                    palisade_analysis::eval::Fate::Pass => "open",
                    palisade_analysis::eval::Fate::Blocked => "blocked",
                    palisade_analysis::eval::Fate::MayPass => "may pass",
                };
                println!("DIFFERENCE {}: intended {want}, host says {got}", d.intent);
                let orig = match p.orig_dst {
                    Some((a, port)) => format!(" (sent to {a}:{port}, DNAT)"),
                    None => String::new(),
                };
                println!(
                    "  packet: {} -> {}:{}/{:?}{orig} in on {}",
                    p.src,
                    p.dst,
                    p.dport,
                    p.proto,
                    p.iif.as_deref().unwrap_or("-")
                );
                println!("  decided by: {}", d.decided_by);
            }
            println!(
                "{} of {} expectations hold",
                v.checked - v.differences.len(),
                v.checked
            );
        }
    }
    Ok(if v.differences.is_empty() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

/// `trace --live`: one packet through the host's real chains.
fn trace_live(
    from: Option<&std::path::Path>,
    src: &str,
    dst: &str,
    format: Format,
) -> anyhow::Result<u8> {
    use palisade_analysis::eval::{evaluate, Firewall, Packet, L4};
    let Some(state) = host_state(from, "trace")? else {
        return Ok(EXIT_BAD_INPUT);
    };
    let bad = |msg: String| {
        eprintln!("palisade: trace: {msg}");
        Ok(EXIT_BAD_INPUT)
    };
    let (rest, proto) = match dst.rsplit_once('/') {
        Some((r, "tcp")) => (r, L4::Tcp),
        Some((r, "udp")) => (r, L4::Udp),
        Some((_, p)) => {
            return bad(format!("unknown protocol `{p}`; expected tcp or udp"))
        }
        None => (dst, L4::Tcp),
    };
    let Some((addr, port)) = rest.rsplit_once(':') else {
        return bad(format!("`{dst}`: expected ADDR:PORT[/PROTO]"));
    };
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
        return bad(format!("`{port}` is not a port (1-65535)"));
    };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let first_public = |v6: bool| {
        state
            .public_addrs
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .copied()
    };
    let src_ip: Option<std::net::IpAddr> = if src == "host" {
        None
    } else {
        match src.parse() {
            Ok(a) => Some(a),
            Err(_) => return bad(format!("`{src}` is not an IP address or `host`")),
        }
    };
    let v6 = src_ip.is_some_and(|a| a.is_ipv6()) || addr.contains(':');
    let dst_ip = if addr == "host" {
        match first_public(v6) {
            Some(a) => a,
            None => return bad("the host has no public address of that family".into()),
        }
    } else {
        match addr.parse() {
            Ok(a) => a,
            Err(_) => return bad(format!("`{addr}` is not an IP address or `host`")),
        }
    };
    let (src_ip, iif) = match src_ip {
        // Sent by the host itself, from its public address.
        None => (first_public(dst_ip.is_ipv6()).unwrap_or(dst_ip), None),
        Some(a) if state.info.is_local(&a) => (a, None),
        Some(a) => (a, state.info.route(&a).map(str::to_string)),
    };
    let pkt = Packet::new(src_ip, dst_ip, proto, port, iif);
    let dump = if dst_ip.is_ipv6() {
        &state.v6
    } else {
        &state.v4
    };
    let fw = Firewall {
        iptables: dump,
        nft: state.nft.as_ref(),
    };
    let d = evaluate(&fw, &state.info, &pkt);
    match format {
        Format::Json | Format::Sarif => println!("{}", serde_json::to_string_pretty(&d)?),
        Format::Human => {
            println!(
                "{} -> {}:{}/{:?} in on {}",
                pkt.src,
                pkt.dst,
                pkt.dport,
                pkt.proto,
                pkt.iif.as_deref().unwrap_or("(sent by the host)")
            );
            for h in &d.trail {
                let maybe = if h.maybe { " (undecidable match)" } else { "" };
                println!(
                    "  {:<16} {:<24} {:<10} {}{maybe}",
                    h.table,
                    format!("{}:{}", h.chain, h.line),
                    h.effect,
                    h.text
                );
            }
            let verdict = match d.fate {
                palisade_analysis::eval::Fate::Pass => "PASS",
                palisade_analysis::eval::Fate::Blocked => "BLOCKED",
                palisade_analysis::eval::Fate::MayPass => "MAY PASS",
            };
            let out = match &d.packet.oif {
                Some(o) => format!(" out on {o}"),
                None => String::new(),
            };
            println!(
                "verdict: {verdict}, reaching {}:{}{out}",
                d.packet.dst, d.packet.dport
            );
        }
    }
    Ok(EXIT_OK)
}

/// The host's state, from a collection folder or collected live into a
/// temporary one. Errors are printed here; `None` means bad input.
fn host_state(
    from: Option<&std::path::Path>,
    verb: &str,
) -> anyhow::Result<Option<palisade_analysis::host::HostState>> {
    use palisade_analysis::host;
    let live;
    let dir = match from {
        Some(d) => d,
        None => {
            live = tempfile::tempdir().context("making a temporary folder")?;
            collect(live.path(), None)?;
            live.path()
        }
    };
    match host::load(dir) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            eprintln!("palisade: {verb}: {e}");
            Ok(None)
        }
    }
}

/// "1 flow", "2 flows".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Collects the host's state into `dir`: the firewall and network files,
/// and Docker's networks when Docker answers. What fails is said on stderr.
fn collect(dir: &std::path::Path, docker_host: Option<&str>) -> anyhow::Result<()> {
    for f in palisade_analysis::host::collect(dir)? {
        eprintln!("palisade: collect: {f}");
    }
    match palisade_enforce::docker::networks(docker_host) {
        Ok(nets) => std::fs::write(
            dir.join("docker-networks.json"),
            serde_json::to_string_pretty(&nets)?,
        )
        .context("writing docker-networks.json")?,
        Err(e) => eprintln!("palisade: collect: Docker's networks are left out: {e}"),
    }
    Ok(())
}
