//! Driving agents from the lab: servers that live for the whole run, and
//! the probe dispatcher.
//!
//! Probes run through one `lab-agent probe` process per source (a
//! namespace or a container), started on first use and fed requests on its
//! stdin. A single dispatcher keeps at most `parallel` probes in flight over
//! all sources together and collects the replies as they arrive, so the
//! whole matrix costs about (closed probes / parallel) × timeout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::agent::{BurstReply, ProbeReply, ProbeRequest};
use crate::cmd::{self, check_interrupt, shown, wait_for};
use crate::report::Proto;
use crate::topo::Place;

/// A `lab-agent serve` process; stopped on drop.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Server {
    /// Starts a server and waits until every socket is bound.
    pub fn start(
        exe: &Path,
        place: &Place,
        tcp: &[u16],
        udp: &[u16],
        bind: &[IpAddr],
        what: &str,
    ) -> Result<Server> {
        let mut args = vec!["lab-agent".to_string(), "serve".into()];
        let list = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        if !tcp.is_empty() {
            args.extend(["--tcp".into(), list(tcp)]);
        }
        if !udp.is_empty() {
            args.extend(["--udp".into(), list(udp)]);
        }
        for b in bind {
            args.extend(["--bind".into(), b.to_string()]);
        }
        let (mut child, line) = spawn_agent(exe, place, &args)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();

        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            if let Some(out) = stdout {
                let mut out = BufReader::new(out);
                // Skip anything a wrapper may print before the agent's own
                // "ready" line.
                let mut line = String::new();
                while matches!(out.read_line(&mut line), Ok(n) if n > 0) {
                    if line.contains("\"ready\"") {
                        break;
                    }
                    line.clear();
                }
                let _ = tx.send(line);
                // Keep draining so the agent never blocks on stdout.
                let mut sink = Vec::new();
                let _ = out.read_to_end(&mut sink);
            }
        });
        let mut server = Server { child, stdin };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(l) if l.contains("\"ready\"") => {
                // stderr is not needed any more; let it drain quietly.
                if let Some(mut e) = stderr.take() {
                    thread::spawn(move || {
                        let mut sink = Vec::new();
                        let _ = e.read_to_end(&mut sink);
                    });
                }
                Ok(server)
            }
            _ => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                let mut msg = String::new();
                if let Some(mut e) = stderr.take() {
                    let _ = e.read_to_string(&mut msg);
                }
                bail!("{what}: the agent did not start (`{line}`): {}", msg.trim())
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // EOF on stdin tells the agent to exit; kill it if it lingers.
        self.stdin.take();
        wait_for(&mut self.child, Duration::from_secs(2));
    }
}

/// One probe to run: from where, to what.
#[derive(Debug, Clone)]
pub struct Job {
    pub place: Place,
    pub proto: Proto,
    pub addr: SocketAddr,
}

enum Msg {
    Reply(ProbeReply),
    Ended(Place, String),
}

struct Conn {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Runs every job; `progress(done, total, job index, reply)` sees each
/// reply. Replies come back in job order.
pub fn probe_all(
    exe: &Path,
    jobs: &[Job],
    parallel: usize,
    timeout: Duration,
    mut progress: impl FnMut(usize, usize, usize, &ProbeReply),
) -> Result<Vec<ProbeReply>> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut conns: BTreeMap<Place, Conn> = BTreeMap::new();
    let mut replies: Vec<Option<ProbeReply>> = vec![None; jobs.len()];
    let mut sent_at: BTreeMap<usize, (Instant, Place)> = BTreeMap::new();
    let (mut next, mut done) = (0, 0);
    let parallel = parallel.max(1);
    let answer_within = timeout * 2 + Duration::from_secs(10);

    let result = (|| -> Result<()> {
        while done < jobs.len() {
            check_interrupt()?;

            // Fill the window.
            while next < jobs.len() && sent_at.len() < parallel {
                let job = &jobs[next];
                let req = ProbeRequest {
                    id: next,
                    proto: job.proto,
                    addr: job.addr,
                };
                let conn = match conns.get_mut(&job.place) {
                    Some(c) => c,
                    None => {
                        let c = spawn_prober(exe, &job.place, parallel, timeout, &tx)?;
                        conns.entry(job.place.clone()).or_insert(c)
                    }
                };
                let line = serde_json::to_string(&req)? + "\n";
                let wrote = conn
                    .stdin
                    .as_mut()
                    .map(|s| s.write_all(line.as_bytes()).and_then(|()| s.flush()));
                sent_at.insert(next, (Instant::now(), job.place.clone()));
                if !matches!(wrote, Some(Ok(()))) {
                    let _ = tx.send(Msg::Reply(failed(next, "agent is gone")));
                }
                next += 1;
            }

            // Collect.
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Reply(r)) => {
                    if r.id < jobs.len() && replies[r.id].is_none() {
                        sent_at.remove(&r.id);
                        done += 1;
                        progress(done, jobs.len(), r.id, &r);
                        let id = r.id;
                        replies[id] = Some(r);
                    }
                }
                Ok(Msg::Ended(place, why)) => {
                    // Everything still pending there will never be answered.
                    let lost: Vec<usize> = sent_at
                        .iter()
                        .filter(|(_, (_, p))| *p == place)
                        .map(|(&id, _)| id)
                        .collect();
                    for id in lost {
                        let _ = tx
                            .send(Msg::Reply(failed(id, &format!("agent ended: {why}"))));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let stale: Vec<usize> = sent_at
                        .iter()
                        .filter(|(_, (t, _))| now.duration_since(*t) > answer_within)
                        .map(|(&id, _)| id)
                        .collect();
                    for id in stale {
                        let _ =
                            tx.send(Msg::Reply(failed(id, "no answer from the agent")));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => bail!("probe channel closed"),
            }
        }
        Ok(())
    })();

    // Close every agent's stdin; they finish and exit.
    for (_, mut c) in conns {
        c.stdin.take();
        wait_for(&mut c.child, Duration::from_secs(3));
    }
    result?;
    Ok(replies
        .into_iter()
        .enumerate()
        .map(|(id, r)| r.unwrap_or_else(|| failed(id, "not run")))
        .collect())
}

fn failed(id: usize, why: &str) -> ProbeReply {
    ProbeReply {
        id,
        open: false,
        detail: format!("error: {why}"),
        ms: 0,
    }
}

/// Starts `exe args` at `place` with all three standard streams piped;
/// returns the child and the command line, for messages.
fn spawn_agent(
    exe: &Path,
    place: &Place,
    args: &[String],
) -> Result<(std::process::Child, String)> {
    let mut c = place.command(exe, args);
    let line = shown(&c);
    let child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    Ok((child, line))
}

fn spawn_prober(
    exe: &Path,
    place: &Place,
    parallel: usize,
    timeout: Duration,
    tx: &mpsc::Sender<Msg>,
) -> Result<Conn> {
    let args = [
        "lab-agent".to_string(),
        "probe".into(),
        "--parallel".into(),
        parallel.to_string(),
        "--timeout-ms".into(),
        timeout.as_millis().to_string(),
    ];
    let (mut child, _) = spawn_agent(exe, place, &args)?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let tx = tx.clone();
    let place = place.clone();
    thread::spawn(move || {
        if let Some(out) = stdout {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if let Ok(r) = serde_json::from_str::<ProbeReply>(&l) {
                    let _ = tx.send(Msg::Reply(r));
                }
            }
        }
        let mut why = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut why);
        }
        let _ = tx.send(Msg::Ended(place, why.trim().to_string()));
    });
    Ok(Conn { child, stdin })
}

/// Runs `lab-agent burst` at `place` and returns its counts.
pub fn burst(
    exe: &Path,
    place: &Place,
    addr: SocketAddr,
    count: usize,
    timeout: Duration,
) -> Result<BurstReply> {
    let args = [
        "lab-agent".to_string(),
        "burst".into(),
        addr.to_string(),
        "--count".into(),
        count.to_string(),
        "--timeout-ms".into(),
        timeout.as_millis().to_string(),
    ];
    let mut c = place.command(exe, &args);
    let out = cmd::run(&mut c, Duration::from_secs(60))?;
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .with_context(|| format!("burst: no counts in the agent's output {out:?}"))
}

/// The program that has the `lab-agent` subcommand.
pub fn default_exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the running program for `lab-agent`")
}
