//! What a lab run found: every probe with what the policy intends and what
//! the packets did, serialisable to JSON, and a plain-text matrix.
//!
//! Probes of the `ufw` phase show the host protected the usual way (UFW
//! plus Docker) and never fail the run; they are the "before" picture.
//! Probes of the `palisade` phase are the proof: any mismatch there fails
//! the run. Rows of the `audit` phase hold `palisade audit`'s verdict,
//! computed from the host's rules alone, against what the packets did in
//! the phase before it; a disagreement fails the run too.

use std::fmt::Write as _;

use serde::Serialize;

/// TCP or UDP, as the policy names them.
pub use palisade_policy::Proto;

/// Reachability, as intended or as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    Open,
    Closed,
    /// A flood was cut by a per-source limit while others still got in.
    Limited,
    /// The probe itself failed; never matches an expectation.
    Error,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Open => "open",
            Reach::Closed => "closed",
            Reach::Limited => "limited",
            Reach::Error => "error",
        }
    }
}

/// Which firewall was in place when a probe ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// UFW configured the usual way, next to Docker. Informational.
    Ufw,
    /// palisade's rules applied. Every mismatch fails the run.
    Palisade,
    /// `palisade audit`'s verdicts against the packets of the phase before.
    /// Every mismatch fails the run.
    Audit,
}

/// What a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Outside host to a port published on the VPS.
    Published,
    /// Outside host to sshd.
    Ssh,
    /// The VPS's own loopback to a loopback-only published port.
    Loopback,
    /// Container to container.
    Flow,
    /// Container to the internet.
    ContainerEgress,
    /// The VPS itself to the internet.
    HostEgress,
    /// A flood of new connections from one source.
    RateLimit,
    /// The audit's verdict for a port the client probed.
    Audit,
    /// `palisade verify`: the live rules against the policy's intent.
    Verify,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Published => "published",
            Check::Ssh => "ssh",
            Check::Loopback => "loopback",
            Check::Flow => "flow",
            Check::ContainerEgress => "container-egress",
            Check::HostEgress => "host-egress",
            Check::RateLimit => "rate-limit",
            Check::Audit => "audit",
            Check::Verify => "verify",
        }
    }
}

/// One probe and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub phase: Phase,
    pub check: Check,
    /// "client", "admin", "vps", a container name, ...
    pub from: String,
    /// Address and port probed.
    pub to: String,
    pub proto: Proto,
    /// What the policy says about the target, e.g. "nginx:80 public".
    pub what: String,
    pub expected: Reach,
    pub actual: Reach,
    /// "connected", "timeout", "87/200 connected", ...
    pub detail: String,
    pub ms: u64,
    pub matches: bool,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// Prefix of every namespace name of this run (`pl<pid><n>-`).
    pub run_id: String,
    /// Where the policy came from.
    pub policy: String,
    /// How palisade's rules were put in place.
    pub enforcement: String,
    /// Every probe of both phases.
    pub probes: Vec<ProbeResult>,
    /// Probes of the `palisade` phase that disagree with the policy.
    pub mismatches: usize,
    /// Probes of the `ufw` phase that reached something the policy closes.
    pub ufw_leaks: usize,
    /// Whether the machine's own firewall and /etc/ufw were the same after
    /// the run as before it.
    pub host_unchanged: bool,
    /// Things worth knowing that are not probes (skipped checks, ...).
    pub notes: Vec<String>,
    pub seconds: f64,
    /// True when every `palisade` probe matched and the host is unchanged.
    pub passed: bool,
}

impl LabReport {
    /// The expected/actual matrix as a plain-text table.
    pub fn to_human(&self) -> String {
        let mut s = String::new();
        for (phase, title) in [
            (Phase::Ufw, "Before: UFW the usual way, next to Docker"),
            (Phase::Palisade, "With palisade"),
            (
                Phase::Audit,
                "palisade audit, from the host's rules alone, against the packets",
            ),
        ] {
            let rows: Vec<&ProbeResult> =
                self.probes.iter().filter(|p| p.phase == phase).collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(s, "{title}");
            let header = ["check", "from", "to", "what", "expected", "actual", ""];
            let cells: Vec<[String; 7]> = rows
                .iter()
                .map(|p| {
                    let verdict = match (phase, p.matches) {
                        (_, true) => "ok",
                        (Phase::Ufw, false) if p.actual == Reach::Open => "LEAK",
                        (Phase::Ufw, false) => "differs",
                        (Phase::Palisade | Phase::Audit, false) => "MISMATCH",
                    };
                    [
                        p.check.as_str().to_string(),
                        p.from.clone(),
                        format!("{}/{}", p.to, p.proto.as_str()),
                        p.what.clone(),
                        p.expected.as_str().to_string(),
                        format!("{} ({})", p.actual.as_str(), p.detail),
                        verdict.to_string(),
                    ]
                })
                .collect();
            let mut width = header.map(str::len);
            for row in &cells {
                for (w, c) in width.iter_mut().zip(row) {
                    *w = (*w).max(c.len());
                }
            }
            let line = |s: &mut String, row: &[String]| {
                let mut l = String::from("  ");
                for (i, c) in row.iter().enumerate() {
                    let _ = write!(l, "{:<w$}  ", c, w = width[i]);
                }
                let _ = writeln!(s, "{}", l.trim_end());
            };
            line(&mut s, &header.map(String::from));
            for row in &cells {
                line(&mut s, row);
            }
            s.push('\n');
        }
        // One line per check: how many probes went as the policy says.
        let mut tally: Vec<(Phase, Check, usize, usize)> = Vec::new();
        for p in &self.probes {
            match tally
                .iter_mut()
                .find(|(ph, c, _, _)| *ph == p.phase && *c == p.check)
            {
                Some(t) => {
                    t.2 += usize::from(p.matches);
                    t.3 += 1;
                }
                None => tally.push((p.phase, p.check, usize::from(p.matches), 1)),
            }
        }
        for (phase, check, ok, all) in tally {
            let phase = match phase {
                Phase::Ufw => "ufw",
                Phase::Palisade => "palisade",
                Phase::Audit => "audit",
            };
            let _ = writeln!(
                s,
                "{phase:<9} {:<17} {ok:>4} of {all:<4} as intended",
                check.as_str()
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let enforced = self.probes.iter().filter(|p| p.phase != Phase::Ufw).count();
        let _ = writeln!(
            s,
            "policy {}, enforced by {}: {} of {} probes as intended{}; \
             host firewall {}; {:.1}s",
            self.policy,
            self.enforcement,
            enforced - self.mismatches,
            enforced,
            if self.probes.iter().any(|p| p.phase == Phase::Ufw) {
                format!(", UFW alone leaked {}", self.ufw_leaks)
            } else {
                String::new()
            },
            if self.host_unchanged {
                "unchanged"
            } else {
                "CHANGED"
            },
            self.seconds,
        );
        let _ = writeln!(s, "{}", if self.passed { "PASS" } else { "FAIL" });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(phase: Phase, expected: Reach, actual: Reach) -> ProbeResult {
        ProbeResult {
            phase,
            check: Check::Published,
            from: "client".into(),
            to: "203.0.113.10:9000".into(),
            proto: Proto::Tcp,
            what: "ai-trading-bot:9000 internal, mapped anyway".into(),
            expected,
            actual,
            detail: "connected".into(),
            ms: 1,
            matches: expected == actual,
        }
    }

    fn report(probes: Vec<ProbeResult>) -> LabReport {
        let mismatches = probes
            .iter()
            .filter(|p| p.phase != Phase::Ufw && !p.matches)
            .count();
        LabReport {
            run_id: "pl1a-".into(),
            policy: "built-in:trading-bot".into(),
            enforcement: "nothing".into(),
            mismatches,
            ufw_leaks: 1,
            host_unchanged: true,
            passed: mismatches == 0,
            probes,
            notes: vec![],
            seconds: 1.0,
        }
    }

    #[test]
    fn matrix_marks_leaks_and_mismatches() {
        let r = report(vec![
            probe(Phase::Ufw, Reach::Closed, Reach::Open),
            probe(Phase::Palisade, Reach::Closed, Reach::Open),
        ]);
        let text = r.to_human();
        assert!(text.contains("LEAK"), "{text}");
        assert!(text.contains("MISMATCH"), "{text}");
        assert!(text.contains("0 of 1 probes as intended"), "{text}");
        assert!(text.trim_end().ends_with("FAIL"), "{text}");

        let json = serde_json::to_value(&r).expect("serialises");
        assert_eq!(json["probes"][0]["phase"], "ufw");
        assert_eq!(json["probes"][1]["expected"], "closed");
        assert_eq!(json["probes"][1]["check"], "published");
    }

    #[test]
    fn all_as_intended_passes() {
        let r = report(vec![probe(Phase::Palisade, Reach::Closed, Reach::Closed)]);
        assert!(r.to_human().trim_end().ends_with("PASS"));
    }
}
