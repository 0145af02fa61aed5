//! palisade's enforcement: puts the compiled policy into the kernel and
//! makes sure a bad policy cannot lock the admin out.
//!
//! - [`docker`] asks Docker which containers and bridges the policy's
//!   services are right now.
//! - [`nft`] runs the `nft` binary: atomic load, check, list, read back.
//! - [`apply`](mod@apply) is the whole apply: resolve, compile, check, save a
//!   rollback point, load, verify, and confirm-or-roll-back.
//! - [`state`] owns the files in the state directory (rollback point,
//!   pending confirmation).
//! - [`ssh`] decides whether the new policy keeps the admin's own SSH
//!   session reachable.
//! - [`netns`] makes throwaway network namespaces (dry runs, tests).
//!
//! # Limitations
//!
//! - Replacing the table empties its per-source rate-limit state (the
//!   meters); bans are carried over with the time they have left.
//! - Two `apply` runs at the same moment are not serialised against each
//!   other; a pending confirmation is handed over, see [`apply`](mod@apply).
//! - nft 1.0.6 lists `meta l4proto tcp ct original proto-dst N` without
//!   the protocol when nothing else in the rule supplies it, and then
//!   cannot load its own listing. palisade's compiler always puts the
//!   transport match first, so its tables list and load back; for a table
//!   that does not, the rollback point is the script of the last apply.
//! - `--dry-run` needs the same rights as an apply: it reads the loaded
//!   table and loads the new one into a throwaway network namespace.
//! - The SSH check asks the tracer about one new TCP connection from the
//!   client address to the host's SSH port, with the per-source rate limit
//!   not exceeded; it does not model a client that reconnects faster than
//!   the policy's SSH rate.

pub mod apply;
pub mod docker;
pub mod netns;
pub mod nft;
pub mod ssh;
pub mod state;

use std::path::PathBuf;

pub use apply::{
    apply, confirm, rollback, rollback_watch, ApplyOptions, ApplyReport, ConfirmReport,
    RollbackReport, WatchArgs, WatchOutcome, WatcherCommand,
};
pub use docker::{resolve, Resolved};
pub use nft::Nft;

/// Default state directory (rollback point, pending confirmation).
pub const DEFAULT_STATE_DIR: &str = "/run/palisade";

/// Why an enforcement step failed. One variant per step; messages start
/// with what was being done and end with a hint when the fix is known.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach Docker at {host}: {detail}\n  hint: start dockerd, pass \
         --docker-host unix:///path/to/docker.sock, or set DOCKER_HOST"
    )]
    Docker { host: String, detail: String },

    #[error(
        "cannot run `{command}`: {source}\n  hint: is nftables installed (nft in PATH)?"
    )]
    NftSpawn {
        command: String,
        source: std::io::Error,
    },

    #[error("`{command}` failed {place} ({status}):\n{stderr}")]
    Nft {
        command: String,
        place: String,
        /// "exit N" or "killed by a signal".
        status: String,
        stderr: String,
    },

    #[error("`{command}` printed something palisade cannot read: {detail}")]
    NftOutput { command: String, detail: String },

    #[error("the new ruleset does not pass `nft -c`; nothing was changed:\n{0}")]
    Check(Box<Error>),

    #[error(
        "loading the new ruleset failed; the previous table is still in place:\n{0}"
    )]
    Load(Box<Error>),

    #[error(
        "the loaded table is not what was compiled ({}); {}",
        diffs.join("; "),
        if *rolled_back { "the previous table was restored" } else { "restoring the previous table failed too" }
    )]
    Verify {
        diffs: Vec<String>,
        rolled_back: bool,
    },

    #[error(
        "refusing to apply: the new policy would not accept a new SSH connection from \
         {client} to port {port}/tcp, which would cut this session off\n  hint: add \
         {client} to the ssh allow list, or pass --force if you have another way in"
    )]
    SshLockout { client: std::net::IpAddr, port: u16 },

    #[error("state directory {path}: {detail}")]
    State { path: PathBuf, detail: String },

    #[error(
        "cannot make a rollback point: the loaded table cannot be saved in a form nft \
         loads again ({detail})\n  hint: `palisade rollback` first, or pass --force to \
         apply without a way back"
    )]
    NoRollbackPoint { detail: String },

    #[error(
        "cannot start the rollback watcher: {detail}; the previous table was restored"
    )]
    Watcher { detail: String },

    #[error("nothing to confirm: no apply is waiting for confirmation in {0}")]
    NothingPending(PathBuf),

    #[error(
        "too late: the confirmation window of apply {token} closed and the previous \
         table was restored\n  hint: apply again and confirm within the window"
    )]
    TooLate { token: String },

    #[error("no rollback point in {0}: nothing was applied from there yet")]
    NoRollback(PathBuf),

    #[error("network namespace {name}: {detail}")]
    Netns { name: String, detail: String },

    #[error("rollback-watch: {0}")]
    WatchArgs(String),
}

impl Error {
    /// Whether the CLI should exit 2 (bad input) rather than 1.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::SshLockout { .. } | Error::WatchArgs(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
