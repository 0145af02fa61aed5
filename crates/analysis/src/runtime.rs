//! Container runtime audit of a compose file: how each service runs.
//!
//! These are the settings that decide how much an attacker who gets into
//! one container can do to the host and its neighbours: privileges,
//! capabilities, the Docker socket, the host network, a writable root, the
//! user, secrets in plain environment variables, and ports published on
//! every address (which Docker's DNAT lets past a host firewall like UFW).

use crate::compose::ComposeFile;
use crate::findings::{Finding, Severity};

const SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// Words in an environment variable's name that mark a secret.
const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
];

/// Audits `compose`, parsed from `text` (for line numbers the parser does
/// not keep) read from `file`.
pub fn audit(compose: &ComposeFile, text: &str, file: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, svc) in &compose.services {
        let line = svc.referenced.line() as usize;
        let s = &svc.value;
        let mut add = |id, severity, line, message: String, fix: &str| {
            out.push(Finding {
                id,
                severity,
                subject: name.clone(),
                file: file.to_string(),
                line,
                message,
                fix: fix.to_string(),
            });
        };
        if let Some(p) = s.privileged.as_ref().filter(|p| p.value) {
            add(
                "compose/privileged",
                Severity::Critical,
                p.referenced.line() as usize,
                "runs privileged: root in the container is root on the host".into(),
                "remove `privileged: true`; grant only the capabilities it needs with cap_add",
            );
        }
        if let Some(m) = s.network_mode.as_ref().filter(|m| m.value == "host") {
            add(
                "compose/host-network",
                Severity::High,
                m.referenced.line() as usize,
                "uses the host's network: every port it opens is a host port, outside \
                 Docker's networks and palisade's per-container rules"
                    .into(),
                "use a Docker network and publish only the ports it needs",
            );
        }
        for v in &s.volumes {
            if v.value.source().is_some_and(|src| SOCKETS.contains(&src)) {
                add(
                    "compose/docker-socket",
                    Severity::Critical,
                    v.referenced.line() as usize,
                    "mounts the Docker socket: whoever controls the container controls \
                     the host"
                        .into(),
                    "remove the mount, or put a filtering socket proxy in front of it \
                     and mount that read-only",
                );
            }
        }
        if !s.cap_drop.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
            add(
                "compose/no-cap-drop",
                Severity::Medium,
                line,
                "keeps Docker's default capabilities (NET_RAW, CHOWN, SETUID, ...)"
                    .into(),
                "add `cap_drop: [ALL]` and cap_add only what it needs",
            );
        }
        if s.read_only != Some(true) {
            add(
                "compose/writable-root",
                Severity::Low,
                line,
                "the root filesystem is writable".into(),
                "add `read_only: true` and mount tmpfs or volumes where it writes",
            );
        }
        let user = s.user.as_ref().map(|u| u.text());
        let root = match user.as_deref() {
            None => true,
            Some(u) => {
                let id = u.split(':').next().unwrap_or(u);
                id == "root" || id == "0"
            }
        };
        if root {
            let message = match user {
                None => "sets no user: it runs as the image's default, root unless the \
                         image says otherwise"
                    .to_string(),
                Some(u) => format!("runs as `{u}` (root)"),
            };
            add(
                "compose/root-user",
                Severity::Medium,
                line,
                message,
                "set `user:` to an unprivileged uid:gid",
            );
        }
        let nnp = s.security_opt.iter().any(|o| {
            o.replace('=', ":").starts_with("no-new-privileges") && !o.ends_with("false")
        });
        if !nnp {
            add(
                "compose/no-new-privileges",
                Severity::Low,
                line,
                "processes may gain privileges through setuid binaries".into(),
                "add `security_opt: [\"no-new-privileges:true\"]`",
            );
        }
        if let Some(env) = &s.environment {
            for (key, value, line) in env.pairs() {
                let upper = key.to_ascii_uppercase();
                let secret = SECRET_WORDS.iter().any(|w| upper.contains(w));
                // A value taken from the host's environment or interpolated
                // from it is not written in the file.
                let literal = value
                    .as_deref()
                    .is_some_and(|v| !v.is_empty() && !v.contains("${"));
                if secret && literal {
                    let line = if line > 0 {
                        line
                    } else {
                        find_key_line(text, svc.referenced.line() as usize, &key)
                    };
                    add(
                        "compose/plain-secret",
                        Severity::High,
                        line,
                        format!(
                            "`{key}` holds a secret in plain text in the compose file"
                        ),
                        "use Docker secrets, or an env_file kept out of version control",
                    );
                }
            }
        }
        for (line, text) in s.unreadable_ports() {
            add(
                "compose/unreadable-port",
                Severity::Medium,
                line,
                format!("port entry `{text}` is not [IP:][HOST:]CONTAINER[/PROTO]"),
                "fix the entry; Docker refuses it, and palisade cannot tell what it publishes",
            );
        }
        for p in s.ports() {
            if p.random_host_port && p.host_ip.is_none() {
                add(
                    "compose/published-everywhere",
                    Severity::Medium,
                    p.line,
                    format!(
                        "port {}/{} is published on every address, on a host port Docker \
                         picks; Docker's DNAT lets it past host firewalls such as UFW",
                        p.target, p.proto
                    ),
                    "name the host port and publish on 127.0.0.1 if only the host needs it, \
                     or use `expose:` if only other containers do",
                );
                continue;
            }
            if p.published.is_some() && p.host_ip.is_none() {
                add(
                    "compose/published-everywhere",
                    Severity::Medium,
                    p.line,
                    format!(
                        "port {}/{} is published on every address; Docker's DNAT lets it \
                         past host firewalls such as UFW",
                        p.target, p.proto
                    ),
                    "publish on 127.0.0.1 if only the host needs it, or let palisade \
                     decide who reaches it",
                );
            }
        }
    }
    out.sort_by(|a, b| (&a.subject, a.line, a.id).cmp(&(&b.subject, b.line, b.id)));
    out
}

/// The first line at or after `from` (1-based) that sets `key` (`KEY=` in
/// a list, `KEY:` in a map); 0 if none. Entries of list-or-map values lose
/// their position in the YAML parser, so they are found in the text.
fn find_key_line(text: &str, from: usize, key: &str) -> usize {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| {
            let l = l.trim_start().trim_start_matches('-').trim_start();
            let l = l.trim_start_matches(['"', '\'']);
            l.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('=') || rest.starts_with(':'))
        })
        .map_or(0, |(i, _)| i + 1)
}
