//! The state directory: the rollback point and pending confirmations.
//!
//! Files (all small, written by rename so a reader never sees half of one):
//!
//! - `rollback.nft`: an `nft -f` script that brings back the table that
//!   was loaded before the last apply (or removes palisade's table if there
//!   was none). `nft -f /run/palisade/rollback.nft` by hand does what
//!   `palisade rollback` does.
//! - `applied.nft`: the script of the last successful apply.
//! - `pending-<token>.json`: an apply waiting for confirmation, with its
//!   deadline and watcher pid.
//!
//! Who acts on a pending apply is decided by renaming its file: `confirm`
//! renames it to `confirmed-<token>.json`, the watcher at the deadline to
//! `expired-<token>.json`, a later apply or rollback to
//! `superseded-<token>.json`. A rename succeeds for exactly one of them,
//! so a confirmation that races the deadline either wins or is told it
//! came too late; it never leaves the two half done.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

const ROLLBACK: &str = "rollback.nft";
const APPLIED: &str = "applied.nft";

/// An apply that rolls back unless confirmed by `deadline_unix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub token: String,
    /// Seconds since the Unix epoch.
    pub deadline_unix: u64,
    pub watcher_pid: Option<u32>,
    /// Network namespace the apply acted in, if not the host.
    pub netns: Option<String>,
}

/// What a pending apply became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    Expired,
    Superseded,
}

impl Outcome {
    fn prefix(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Expired => "expired",
            Outcome::Superseded => "superseded",
        }
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens `path`, creating it (mode 0700) if needed.
    pub fn open(path: &Path) -> Result<StateDir, Error> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| state_err(path, format!("cannot create it: {e}")))?;
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `name` through a temporary file and a rename.
    pub fn write(&self, name: &str, contents: &str) -> Result<(), Error> {
        let target = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(contents.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &target)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            state_err(&target, format!("cannot write: {e}"))
        })
    }

    fn read(&self, name: &str) -> Result<Option<String>, Error> {
        let p = self.file(name);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(state_err(&p, format!("cannot read: {e}"))),
        }
    }

    pub fn rollback_path(&self) -> PathBuf {
        self.file(ROLLBACK)
    }

    pub fn save_rollback(&self, script: &str) -> Result<(), Error> {
        self.write(ROLLBACK, script)
    }

    pub fn read_rollback(&self) -> Result<Option<String>, Error> {
        self.read(ROLLBACK)
    }

    pub fn remove_rollback(&self) -> Result<(), Error> {
        let p = self.rollback_path();
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(state_err(&p, format!("cannot remove: {e}"))),
        }
    }

    pub fn save_applied(&self, script: &str) -> Result<(), Error> {
        self.write(APPLIED, script)
    }

    pub fn read_applied(&self) -> Result<Option<String>, Error> {
        self.read(APPLIED)
    }

    fn pending_name(token: &str) -> String {
        format!("pending-{token}.json")
    }

    pub fn write_pending(&self, p: &Pending) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(p).map_err(|e| {
            state_err(&self.path, format!("cannot encode the pending apply: {e}"))
        })?;
        self.write(&StateDir::pending_name(&p.token), &text)
    }

    /// The apply waiting for confirmation, if any (the newest if several).
    pub fn pending(&self) -> Result<Option<Pending>, Error> {
        let entries = fs::read_dir(&self.path)
            .map_err(|e| state_err(&self.path, format!("cannot list: {e}")))?;
        let mut found: Vec<Pending> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("pending-") && name.ends_with(".json")) {
                continue;
            }
            // A file that vanished or does not parse is not a pending apply.
            let Ok(Some(text)) = self.read(&name) else {
                continue;
            };
            if let Ok(p) = serde_json::from_str::<Pending>(&text) {
                found.push(p);
            }
        }
        found.sort_by_key(|p| p.deadline_unix);
        Ok(found.pop())
    }

    pub fn is_pending(&self, token: &str) -> bool {
        self.file(&StateDir::pending_name(token)).exists()
    }

    /// Takes the pending apply `token` for `outcome`. `false` if someone
    /// else took it first (or it never existed).
    pub fn claim(&self, token: &str, outcome: Outcome) -> Result<bool, Error> {
        let from = self.file(&StateDir::pending_name(token));
        let to = self.file(&format!("{}-{token}.json", outcome.prefix()));
        match fs::rename(&from, &to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(state_err(&from, format!("cannot rename: {e}"))),
        }
    }

    /// What became of `token`, if it is decided.
    pub fn outcome(&self, token: &str) -> Option<Outcome> {
        [Outcome::Confirmed, Outcome::Expired, Outcome::Superseded]
            .into_iter()
            .find(|o| self.file(&format!("{}-{token}.json", o.prefix())).exists())
    }

    /// Log file of the watcher for `token`.
    pub fn log_path(&self, token: &str) -> PathBuf {
        self.file(&format!("watch-{token}.log"))
    }

    /// Removes records and logs of decided applies other than `keep`.
    pub fn clean_finished(&self, keep: &str) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let finished = ["confirmed-", "expired-", "superseded-", "watch-"]
                .iter()
                .any(|p| name.starts_with(p));
            if finished && !name.contains(keep) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn state_err(path: &Path, detail: String) -> Error {
    Error::State {
        path: path.to_path_buf(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_wins() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        let p = Pending {
            token: "t1".into(),
            deadline_unix: 10,
            watcher_pid: None,
            netns: None,
        };
        s.write_pending(&p).unwrap();
        assert_eq!(s.pending().unwrap(), Some(p));
        assert!(s.claim("t1", Outcome::Confirmed).unwrap());
        assert!(!s.claim("t1", Outcome::Expired).unwrap());
        assert_eq!(s.outcome("t1"), Some(Outcome::Confirmed));
        assert_eq!(s.pending().unwrap(), None);
    }
}
