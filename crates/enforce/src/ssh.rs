//! The admin's own SSH session: never cut it.
//!
//! When palisade runs from an SSH session (`SSH_CONNECTION` is set), an
//! apply is refused if the new ruleset would not accept a new connection
//! from the session's client address to the port sshd answered on. The
//! decision comes from the compiler's tracer, the same model `palisade
//! trace` reports from, so what is refused here is what `trace` shows.

use std::net::IpAddr;

use palisade_compile::trace::{self, Endpoint, Query};
use palisade_compile::Ruleset;
use palisade_policy::{Policy, Proto};

/// The SSH session palisade was started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshSession {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
}

impl SshSession {
    /// Parses `SSH_CONNECTION` (`client_ip client_port server_ip
    /// server_port`). `None` if it is not in that form.
    pub fn parse(text: &str) -> Option<SshSession> {
        let mut it = text.split_whitespace();
        let ip = |s: &str| {
            // sshd may show an IPv4 client as ::ffff:a.b.c.d.
            s.parse::<IpAddr>().ok().map(|a| a.to_canonical())
        };
        let session = SshSession {
            client: ip(it.next()?)?,
            client_port: it.next()?.parse().ok()?,
            server: ip(it.next()?)?,
            server_port: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(session)
    }

    /// The session in `SSH_CONNECTION`, if palisade runs from one.
    pub fn from_env() -> Option<SshSession> {
        let text = std::env::var("SSH_CONNECTION").ok()?;
        let parsed = SshSession::parse(&text);
        if parsed.is_none() {
            tracing::warn!(
                ssh_connection = %text,
                "SSH_CONNECTION is set but not in the form `client port server port`; \
                 the SSH lockout check is skipped"
            );
        }
        parsed
    }
}

/// Whether `rs` (compiled from `policy`) accepts a new TCP connection from
/// `client` to the host's `port`.
pub fn ssh_session_allowed(
    policy: &Policy,
    rs: &Ruleset,
    client: IpAddr,
    port: u16,
) -> bool {
    let q = Query {
        src: Endpoint::Addr(client),
        dst: Endpoint::Host,
        port,
        proto: Proto::Tcp,
        ipv6: client.is_ipv6(),
    };
    let t = trace::trace(policy, rs, &q);
    tracing::debug!(
        ip = %client,
        port,
        accepted = t.accepted,
        rule = %t.decided_by,
        "ssh session check"
    );
    t.accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ssh_connection() {
        let s = SshSession::parse("198.51.100.10 52344 203.0.113.1 22").unwrap();
        assert_eq!(s.client, "198.51.100.10".parse::<IpAddr>().unwrap());
        assert_eq!(s.server_port, 22);
        let mapped =
            SshSession::parse("::ffff:198.51.100.10 1 2001:db8::1 2222").unwrap();
        assert!(mapped.client.is_ipv4());
        assert_eq!(SshSession::parse("198.51.100.10 52344"), None);
        assert_eq!(SshSession::parse("a b c d"), None);
    }

    #[test]
    fn builtin_policy_keeps_admin_and_refuses_others() {
        let policy = palisade_policy::builtin();
        let rs = palisade_compile::compile(&policy, &Default::default());
        let admin: IpAddr = "198.51.100.10".parse().unwrap();
        let admin6: IpAddr = "2001:db8:100::10".parse().unwrap();
        let stranger: IpAddr = "203.0.113.77".parse().unwrap();
        assert!(ssh_session_allowed(&policy, &rs, admin, 22));
        assert!(ssh_session_allowed(&policy, &rs, admin6, 22));
        assert!(!ssh_session_allowed(&policy, &rs, stranger, 22));
        assert!(!ssh_session_allowed(&policy, &rs, admin, 2222));
    }
}
