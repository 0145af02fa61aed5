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
        policy: Option<PathBuf>,
        /// Output target.
        #[arg(long, value_enum, default_value_t = Target::Nft)]
        target: Target,
    },
    /// Follow one new connection through the compiled policy and print
    /// the verdict and the rule that decides it.
    Trace {
        /// Policy file.
        policy: PathBuf,
        /// Source: an address, a service, a group, `host` or `loopback`.
        src: String,
        /// Destination as DST:PORT[/PROTO], e.g. `host:22/tcp`, `nginx:80`.
        dst: String,
        /// Use IPv6 when neither end is an address.
        #[arg(short = '6', long)]
        ipv6: bool,
    },
    /// Print the JSON Schema of the policy format.
    Schema,
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
        .init();
    let cli = Cli::parse();
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
                Format::Json => {
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
                    "{}: ok ({} services, {} flows, {} groups)",
                    p.origin,
                    p.services.len(),
                    p.flows.len(),
                    p.groups.len()
                ),
                Format::Json => {
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
            policy,
            src,
            dst,
            ipv6,
        } => {
            let Some(p) = load(Some(&policy), format) else {
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
                Format::Json => println!("{}", serde_json::to_string_pretty(&t)?),
                Format::Human => print_trace(&t),
            }
            Ok(EXIT_OK)
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
