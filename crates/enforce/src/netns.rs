//! Throwaway network namespaces, deleted when dropped.
//!
//! `--dry-run` loads the new table into one of these so that both sides of
//! its diff are in nft's own listing format; the tests enforce inside one
//! so that the host's firewall is never touched.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Error;

/// A network namespace created by palisade; `ip netns del` on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Creates namespace `<prefix>-<pid>-<n>`, unique within this process.
    pub fn create(prefix: &str) -> Result<Netns, Error> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        Netns::create_named(&name)
    }

    /// Creates namespace `name` (which must not exist yet).
    pub fn create_named(name: &str) -> Result<Netns, Error> {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Netns {
                name: name.to_string(),
                detail: format!("cannot run ip: {source}"),
            })?;
        if !out.status.success() {
            return Err(Error::Netns {
                name: name.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let ns = Netns {
            name: name.to_string(),
        };
        // Loopback up, as on any real host: `iif "lo"` rules need it to
        // exist, and tests send packets over it.
        let _ = Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .stdin(Stdio::null())
            .output();
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output();
        if !matches!(&deleted, Ok(o) if o.status.success()) {
            tracing::warn!(netns = %self.name, "could not delete network namespace");
        }
    }
}
