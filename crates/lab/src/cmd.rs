//! Running the outside programs the lab drives (`ip`, `nsenter`, `docker`,
//! `ufw`, `nft`, ...), with a time bound and errors that show the command.
//!
//! Every child is put in its own process group, so a Ctrl-C at the terminal
//! reaches only the lab, which then tears down in order instead of having
//! dockerd and the agents die under it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A command with the lab's defaults: own process group, no stdin.
pub fn command<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Command {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null()).process_group(0);
    c
}

/// The command line, for messages.
pub fn shown(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Output of a finished command.
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `c` to completion, killing it after `limit`.
pub fn output(c: &mut Command, limit: Duration) -> Result<Output> {
    let line = shown(c);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;

    // Drain both pipes on threads so a chatty child cannot block on a full
    // pipe while we wait for it.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_for(&mut child, limit);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(st) => Ok(Output {
            ok: st.success(),
            stdout,
            stderr,
        }),
        None => bail!("`{line}` did not finish within {}s", limit.as_secs()),
    }
}

/// Runs `c`, failing unless it exits 0; returns its stdout.
pub fn run(c: &mut Command, limit: Duration) -> Result<String> {
    let line = shown(c);
    let o = output(c, limit)?;
    if !o.ok {
        bail!("`{line}` failed: {}", o.stderr.trim());
    }
    Ok(o.stdout)
}

/// `run` with the usual 30 s bound.
pub fn run30(c: &mut Command) -> Result<String> {
    run(c, Duration::from_secs(30))
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    })
}

/// Waits up to `limit`; kills the child when it is exceeded.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Sends `signal` (e.g. "TERM") to one process by pid.
pub fn signal(pid: u32, signal: &str) {
    let _ = command("kill", &[format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

/// Fails when the user pressed Ctrl-C.
pub fn check_interrupt() -> Result<()> {
    if crate::INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C or SIGTERM); the lab was torn down");
    }
    Ok(())
}
