//! palisade's lab: proves a policy with real packets.
//!
//! [`run`] builds a small internet out of network namespaces (see
//! [`topo`]), starts a private dockerd in the "VPS" namespace with one
//! container per policy service, publishes ports the way a careless
//! compose file would, and probes every path the policy talks about,
//! twice: first with UFW configured the usual way (the "before" picture,
//! where Docker's published ports walk past UFW), then with palisade's
//! rules applied. Expectations come from the policy model (the intent),
//! never from compiled rules, so the lab checks the compiler too. The
//! result is a [`LabReport`]: every probe with expected and actual
//! outcome, JSON-serialisable, with a plain-text matrix from
//! [`LabReport::to_human`].
//!
//! The lab never opens a socket in the caller's namespace and never
//! touches the machine's firewall: everything happens in namespaces it
//! creates, with documentation addresses only. Sockets live in the
//! [`agent`] (`palisade lab-agent ...`), which the lab starts inside each
//! namespace. Everything the lab creates (namespaces, dockerd and its
//! containerd, mounts, `/etc/netns/<ns>`, temporary files, agents) is owned
//! by a guard and removed on every exit path: success, error, panic or
//! Ctrl-C. A full run of the built-in policy takes about 25 seconds.
//!
//! # Wiring into a command-line program
//!
//! - `palisade lab [POLICY]`: build [`LabOptions`] (`policy: None` for the
//!   built-in policy), call [`run`], print [`LabReport::to_human`] or the
//!   report as JSON, exit non-zero unless [`LabReport::passed`].
//! - `palisade lab-agent ARGS..` (hidden): `agent_main(&ARGS)`; its value
//!   is the exit code. Nothing else may write to stdout in this mode (the
//!   lab reads JSON lines from it); logs belong on stderr.
//!
//! The lab runs the program it lives in (`std::env::current_exe()`) as the
//! agent and, for [`Enforce::Apply`], as `apply`; both can be overridden
//! in [`LabOptions`].
//!
//! # Limitations
//!
//! - Listeners in containers are lab agents entered into each container's
//!   network namespace; the container's own process only sleeps. busybox
//!   httpd was dropped because its listen backlog of 9 cuts a connection
//!   flood by itself, which would look like a working rate limit.
//! - Container IPv6 is probed only for networks with `subnet6`; the lab
//!   then routes that subnet from the internet to the VPS (no NAT66).
//! - Floods go only at the first public, rate-limited TCP port and at
//!   sshd, over IPv4, from one source each; ICMP, country lists and bans
//!   are not probed.
//! - A flood counts as limited when some but not all connections got in
//!   and no more than `burst + rate x duration` (+25 %): a limit much
//!   looser than the policy's shows as a mismatch, a stricter one does not.
//! - The run fails when the machine's own nftables ruleset or /etc/ufw
//!   changes while it runs, even if something else changed them.

pub mod agent;
mod audit;
mod cleanup;
mod cmd;
mod docker;
mod expect;
mod lab;
pub mod report;
pub mod runner;
pub mod topo;
mod ufw;

use std::sync::atomic::{AtomicBool, Ordering};

pub use agent::agent_main;
pub use lab::{run, Enforce, LabOptions};
pub use report::{Check, LabReport, Phase, ProbeResult, Proto, Reach};

/// Set by Ctrl-C (or [`interrupt`]); the lab stops probing and tears down.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks a running lab to stop and tear down, as Ctrl-C does. For callers
/// that install their own Ctrl-C handler (the lab's handler is then not
/// installed, since a process can have only one).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}
