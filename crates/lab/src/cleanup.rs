//! Guards that undo what the lab did to the machine outside its
//! namespaces: the work directory (and anything mounted under it),
//! `/etc/netns/<ns>` overlays, and stray processes left in a namespace.
//!
//! Teardown never follows a path it did not create: mounts are found in
//! `/proc/self/mountinfo` under the work directory only, and a process is
//! killed only when its network namespace is one of the lab's own.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd::{self, command};

/// A private temporary directory, removed on drop once nothing is mounted
/// under it.
#[derive(Debug)]
pub struct WorkDir {
    pub path: PathBuf,
}

impl WorkDir {
    pub fn new() -> Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix("palisade-lab-")
            .tempdir()
            .context("cannot create the lab's work directory")?;
        Ok(WorkDir { path: dir.keep() })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        unmount_under(&self.path);
        if mounts_under(&self.path).is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            eprintln!(
                "lab: {} still has mounts; left in place",
                self.path.display()
            );
        }
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unmounts everything below `dir`, lazily if a plain unmount fails.
pub fn unmount_under(dir: &Path) {
    // Mounts can stack; a few rounds take care of that.
    for _ in 0..4 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let plain =
                cmd::output(&mut command("umount", &[&m]), Duration::from_secs(10));
            if !matches!(plain, Ok(ref o) if o.ok) {
                let _ = cmd::output(
                    &mut command("umount", &["-l", &m]),
                    Duration::from_secs(10),
                );
            }
        }
    }
}

/// `/etc/netns/<ns>`: files `ip netns exec` mounts over `/etc` for that
/// namespace only. Removed on drop.
#[derive(Debug)]
pub struct EtcNetns {
    pub path: PathBuf,
    /// Whether this guard created /etc/netns itself.
    made_parent: bool,
}

impl EtcNetns {
    pub fn new(ns: &str) -> Result<EtcNetns> {
        let parent = Path::new("/etc/netns");
        let made_parent = !parent.exists();
        let path = parent.join(ns);
        fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(EtcNetns { path, made_parent })
    }
}

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        if self.made_parent {
            // Fails, and so stays, if another namespace uses it meanwhile.
            let _ = fs::remove_dir("/etc/netns");
        }
    }
}

/// A file outside the lab that a tool it runs may create (UFW's lock in
/// /run): removed on drop unless it existed before.
#[derive(Debug)]
pub struct NewFile {
    path: PathBuf,
    existed: bool,
}

impl NewFile {
    pub fn watch(path: &str) -> NewFile {
        let path = PathBuf::from(path);
        NewFile {
            existed: path.exists(),
            path,
        }
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.existed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The identity of a network namespace: (device, inode) of its nsfs file.
pub fn netns_id(path: &str) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Kills every process whose network namespace is `id`.
pub fn kill_in_netns(id: (u64, u64)) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if netns_id(&format!("/proc/{pid}/ns/net")) == Some(id) {
            cmd::signal(pid, "KILL");
        }
    }
}
