//! Helpers shared by the integration tests: throwaway network namespaces.
//!
//! Every kernel test runs inside a namespace it creates and that is deleted
//! when the guard drops, also when the test fails. The host's own firewall
//! is never touched.

#![allow(dead_code)]

use std::process::{Command, Output};

/// A network namespace that exists for the guard's lifetime.
pub struct Netns {
    pub name: String,
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Netns {
    /// Creates `pt<pid>-<n>-<tag>`. Panics when namespaces cannot be made:
    /// the kernel tests must run as root (CI does).
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("pt{}-{n}-{tag}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "cannot create a network namespace (kernel tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("running ip netns exec")
    }

    /// Runs `nft` with `script` on stdin inside the namespace.
    pub fn nft_stdin(&self, args: &[&str], script: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("writing the script");
        child.wait_with_output().expect("waiting for nft")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
