//! The lab agent: the small program that runs inside each namespace.
//!
//! The lab never opens sockets in its own network namespace. It starts the
//! agent (`palisade lab-agent ...`) inside a namespace with `ip netns exec`
//! or, for containers, `nsenter --net=/proc/PID/ns/net`, and talks to it
//! over stdin and stdout:
//!
//! ```text
//! lab-agent serve [--tcp P,P..] [--udp P,P..] [--bind ADDR].. [--max-secs N]
//! lab-agent probe [--timeout-ms N] [--parallel N]     # requests on stdin
//! lab-agent probe tcp|udp ADDR:PORT [--timeout-ms N]  # one probe
//! lab-agent burst ADDR:PORT [--count N] [--timeout-ms N]
//! ```
//!
//! `serve` accepts TCP connections and echoes UDP datagrams on every given
//! port (on `[::]`, which also takes IPv4, unless `--bind` says otherwise),
//! prints one `{"ready":..}` line once every socket is bound, and exits when
//! its stdin closes or after `--max-secs` (default 900), whichever is first,
//! so a lab that dies can never leave a server running for long.
//!
//! `probe` reads one JSON request per line (`{"id":1,"proto":"tcp",
//! "addr":"203.0.113.10:80"}`), runs them concurrently and prints one JSON
//! result per line as each finishes. Open means a TCP handshake completed or
//! a UDP datagram came back; anything else (timeout, reset, refused,
//! unreachable) is closed, and `detail` says which.
//!
//! `burst` opens `--count` TCP connections at once, as an attacker would,
//! and prints how many completed.

use std::collections::BTreeSet;
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::report::Proto;

/// Default connect / reply timeout of one probe.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Longest a `serve` agent lives without being told to stop.
const DEFAULT_MAX_SECS: u64 = 900;
/// Upper bound on `burst --count`.
const MAX_BURST: usize = 2000;

/// One probe the lab asks an agent to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub id: usize,
    pub proto: Proto,
    pub addr: SocketAddr,
}

/// What the agent saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    pub id: usize,
    pub open: bool,
    /// "connected", "echoed", "timeout", "refused", "reset", ...
    pub detail: String,
    pub ms: u64,
}

/// Counts printed by `burst`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BurstReply {
    pub attempts: usize,
    pub connected: usize,
    pub timeout: usize,
    pub refused: usize,
    pub reset: usize,
    pub other: usize,
    pub ms: u64,
}

/// Runs the agent with the arguments that follow `lab-agent`.
///
/// Returns the process exit code: 0 on success, 2 on bad arguments.
pub fn agent_main(args: &[String]) -> Result<i32> {
    let mut args = args.to_vec();
    if args.first().map(String::as_str) == Some("lab-agent") {
        args.remove(0);
    }
    let Some((verb, rest)) = args.split_first() else {
        bail!("lab-agent: expected serve, probe or burst");
    };
    match verb.as_str() {
        "serve" => serve(&Flags::parse(rest)?),
        "probe" => probe_cmd(rest),
        "burst" => burst_cmd(rest),
        other => {
            bail!("lab-agent: unknown verb {other:?}; expected serve, probe or burst")
        }
    }
}

/// Flags shared by the verbs; each verb reads the ones it knows.
#[derive(Debug, Default)]
struct Flags {
    positional: Vec<String>,
    tcp: Vec<u16>,
    udp: Vec<u16>,
    bind: Vec<IpAddr>,
    max_secs: Option<u64>,
    timeout_ms: Option<u64>,
    parallel: Option<usize>,
    count: Option<usize>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags> {
        let mut f = Flags::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("lab-agent: {a} needs a value"))
            };
            match a.as_str() {
                "--tcp" => f.tcp.extend(ports(&value()?)?),
                "--udp" => f.udp.extend(ports(&value()?)?),
                "--bind" => {
                    let v = value()?;
                    f.bind.push(
                        v.parse()
                            .with_context(|| format!("lab-agent: bad address {v:?}"))?,
                    );
                }
                "--max-secs" => f.max_secs = Some(number(&value()?)?),
                "--timeout-ms" => f.timeout_ms = Some(number(&value()?)?),
                "--parallel" => f.parallel = Some(number(&value()?)?),
                "--count" => f.count = Some(number(&value()?)?),
                s if s.starts_with("--") => bail!("lab-agent: unknown flag {s}"),
                _ => f.positional.push(a.clone()),
            }
        }
        Ok(f)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1))
    }
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse()
        .ok()
        .with_context(|| format!("lab-agent: {s:?} is not a number"))
}

fn ports(s: &str) -> Result<Vec<u16>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .ok()
                .filter(|&p: &u16| p != 0)
                .with_context(|| format!("lab-agent: {p:?} is not a port"))
        })
        .collect()
}

// ---------------------------------------------------------------- serve

fn serve(f: &Flags) -> Result<i32> {
    let binds = if f.bind.is_empty() {
        vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    } else {
        f.bind.clone()
    };

    // Bind everything first, so "ready" means every socket is listening.
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for &ip in &binds {
        for &port in &dedup(&f.tcp) {
            let at = SocketAddr::new(ip, port);
            tcp.push(listen(at).with_context(|| format!("bind {at}/tcp"))?);
        }
        for &port in &dedup(&f.udp) {
            let at = SocketAddr::new(ip, port);
            udp.push(bind_udp(at).with_context(|| format!("bind {at}/udp"))?);
        }
    }
    for l in tcp {
        thread::spawn(move || accept_loop(l));
    }
    for s in udp {
        thread::spawn(move || echo_loop(s));
    }
    let ready = serde_json::json!({ "ready": true, "tcp": f.tcp, "udp": f.udp });
    println!("{ready}");
    io::stdout().flush()?;

    // Stop on stdin EOF (the lab went away) or after the time bound.
    let (tx, rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let bound = Duration::from_secs(f.max_secs.unwrap_or(DEFAULT_MAX_SECS));
    let _ = rx.recv_timeout(bound);
    Ok(0)
}

/// A TCP listener with a deep accept queue. std's default of 128 lets a
/// flood of a few hundred simultaneous connects overflow the queue, and
/// the kernel then drops SYNs: that would look like a rate limit where
/// there is none.
fn listen(at: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(
        Domain::for_address(at),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    if at.is_ipv6() {
        // Also take IPv4 on [::], whatever the namespace's default.
        s.set_only_v6(false)?;
    }
    s.bind(&at.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A UDP socket; on `[::]` it takes IPv4 too.
fn bind_udp(at: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(at),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if at.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.bind(&at.into())?;
    Ok(s.into())
}

fn dedup(ports: &[u16]) -> Vec<u16> {
    ports
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn accept_loop(listener: TcpListener) {
    // The handshake is the answer; the connection itself carries nothing.
    // Closing at once keeps the agent from holding thousands of sockets.
    for conn in listener.incoming() {
        drop(conn);
    }
}

fn echo_loop(sock: UdpSocket) {
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        let _ = sock.send_to(&buf[..n], from);
    }
}

// ---------------------------------------------------------------- probe

fn probe_cmd(args: &[String]) -> Result<i32> {
    let f = Flags::parse(args)?;
    match f.positional.as_slice() {
        [] => probe_batch(&f),
        [proto, addr] => {
            let proto = match proto.as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                p => bail!("lab-agent probe: {p:?} is not tcp or udp"),
            };
            let addr = parse_addr(addr)?;
            let reply = probe_one(&ProbeRequest { id: 0, proto, addr }, f.timeout());
            println!("{}", serde_json::to_string(&reply)?);
            Ok(0)
        }
        _ => bail!("lab-agent probe: expected nothing or `tcp|udp ADDR:PORT`"),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr> {
    s.parse().with_context(|| {
        format!("lab-agent: {s:?} is not ADDR:PORT ([v6]:PORT for IPv6)")
    })
}

/// A counting semaphore: at most `n` probes in flight.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn take(&self) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    fn give(&self) {
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_one();
    }
}

fn probe_batch(f: &Flags) -> Result<i32> {
    let timeout = f.timeout();
    let slots = Arc::new(Slots {
        free: Mutex::new(f.parallel.unwrap_or(32).max(1)),
        cv: Condvar::new(),
    });
    let out = Arc::new(Mutex::new(io::stdout()));
    let mut workers = Vec::new();

    for line in io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req: ProbeRequest = serde_json::from_str(&line)
            .with_context(|| format!("lab-agent probe: bad request {line:?}"))?;
        slots.take();
        let (slots, out) = (slots.clone(), out.clone());
        workers.push(thread::spawn(move || {
            let reply = probe_one(&req, timeout);
            if let Ok(text) = serde_json::to_string(&reply) {
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            slots.give();
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(0)
}

/// Runs one probe. Never fails: every outcome is a reply.
pub fn probe_one(req: &ProbeRequest, timeout: Duration) -> ProbeReply {
    let start = Instant::now();
    let (open, detail) = match req.proto {
        Proto::Tcp => match TcpStream::connect_timeout(&req.addr, timeout) {
            Ok(_) => (true, "connected".to_string()),
            Err(e) => (false, describe(&e)),
        },
        Proto::Udp => udp_probe(req.addr, timeout),
    };
    ProbeReply {
        id: req.id,
        open,
        detail,
        ms: start.elapsed().as_millis() as u64,
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout".into(),
        ErrorKind::ConnectionRefused => "refused".into(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "reset".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        // What a local nftables drop on output looks like to the sender.
        ErrorKind::PermissionDenied => "dropped locally".into(),
        _ => format!("error: {e}"),
    }
}

fn udp_probe(addr: SocketAddr, timeout: Duration) -> (bool, String) {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("constant address")
    } else {
        "[::]:0".parse().expect("constant address")
    };
    let sock = match UdpSocket::bind(local).and_then(|s| s.connect(addr).map(|()| s)) {
        Ok(s) => s,
        Err(e) => return (false, describe(&e)),
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nonce = format!(
        "palisade-lab {} {}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );

    // Two sends, the second halfway through, in case the first is lost
    // while neighbours are still being resolved.
    let deadline = Instant::now() + timeout;
    let resend_at = Instant::now() + timeout / 2;
    let mut sent_twice = false;
    if let Err(e) = sock.send(nonce.as_bytes()) {
        return (false, describe(&e));
    }
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return (false, "timeout".into());
        }
        let wait = if sent_twice {
            deadline - now
        } else {
            resend_at
                .saturating_duration_since(now)
                .max(Duration::from_millis(1))
        };
        if sock.set_read_timeout(Some(wait)).is_err() {
            return (false, "error: cannot set a timeout".into());
        }
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == nonce.as_bytes() => return (true, "echoed".into()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !sent_twice {
                    sent_twice = true;
                    let _ = sock.send(nonce.as_bytes());
                }
            }
            Err(e) => return (false, describe(&e)),
        }
    }
}

// ---------------------------------------------------------------- burst

fn burst_cmd(args: &[String]) -> Result<i32> {
    let f = Flags::parse(args)?;
    let [addr] = f.positional.as_slice() else {
        bail!("lab-agent burst: expected ADDR:PORT");
    };
    let addr = parse_addr(addr)?;
    let count = f.count.unwrap_or(200).clamp(1, MAX_BURST);
    let reply = burst(addr, count, f.timeout());
    println!("{}", serde_json::to_string(&reply)?);
    Ok(0)
}

/// Opens `count` connections at once; keeps the ones that complete open
/// until every attempt is over, as a flood would.
pub fn burst(addr: SocketAddr, count: usize, timeout: Duration) -> BurstReply {
    let start = Instant::now();
    // Every thread waits on the read side until all are spawned, then they
    // connect together.
    let gate = Arc::new(RwLock::new(()));
    let open_gate = gate.write().unwrap_or_else(|e| e.into_inner());
    let held = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::with_capacity(count);
    for _ in 0..count {
        let (gate, held) = (gate.clone(), held.clone());
        let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            drop(gate.read().unwrap_or_else(|e| e.into_inner()));
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    held.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                    None
                }
                Err(e) => Some(e.kind()),
            }
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => break,
        }
    }
    drop(open_gate);

    let mut r = BurstReply {
        attempts: threads.len(),
        ..BurstReply::default()
    };
    for t in threads {
        match t.join() {
            Ok(None) => r.connected += 1,
            Ok(Some(ErrorKind::TimedOut | ErrorKind::WouldBlock)) => r.timeout += 1,
            Ok(Some(ErrorKind::ConnectionRefused)) => r.refused += 1,
            Ok(Some(ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted)) => {
                r.reset += 1
            }
            _ => r.other += 1,
        }
    }
    r.ms = start.elapsed().as_millis() as u64;
    r
}
