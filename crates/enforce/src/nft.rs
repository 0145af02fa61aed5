//! Running the `nft` binary: load, check, list and read back.
//!
//! palisade talks to the kernel only through `nft`, the way an admin would,
//! so every error is the one `nft` prints and every script can be replayed
//! by hand. An [`Nft`] handle may carry a network namespace name; then each
//! call runs as `ip netns exec NAME nft ...`. The lab and the tests use
//! that to enforce inside a namespace and never touch the host's firewall.
//!
//! [`verify`] compares what the kernel holds after a load with the
//! [`Ruleset`] that was meant: set names, chain names and hooks, the rule
//! ids of every chain in order, and the element count of every set filled
//! from Docker.
//!
//! [`carry_over_bans`] keeps the bans of the loaded table across a
//! replacement, with the time they have left.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use palisade_compile::ir::{Ruleset, SetRole, SetType, TABLE};
use serde_json::Value;

use crate::Error;

/// How to run `nft`: on the host, or inside a named network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nft {
    /// `ip netns exec NAME` in front of every call when set.
    pub netns: Option<String>,
}

/// What `nft` printed for a call that succeeded.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Nft {
    /// `nft` on the host (the real firewall).
    pub fn host() -> Nft {
        Nft { netns: None }
    }

    /// `nft` inside network namespace `name`.
    pub fn in_netns(name: impl Into<String>) -> Nft {
        Nft {
            netns: Some(name.into()),
        }
    }

    /// Where this handle acts, for messages: "on the host" or "in
    /// network namespace NAME".
    pub fn place(&self) -> String {
        match &self.netns {
            Some(ns) => format!("in network namespace {ns}"),
            None => "on the host".into(),
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        }
    }

    /// Runs `nft ARGS`, feeding `stdin` if given. A non-zero exit is an
    /// error carrying nft's stderr.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
        let shown = format!("nft {}", args.join(" "));
        let mut cmd = self.command();
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().map_err(|source| Error::NftSpawn {
            command: shown.clone(),
            source,
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error means nft exited early; its status and stderr
            // below say why, so the error itself adds nothing.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(|source| Error::NftSpawn {
            command: shown.clone(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(Error::Nft {
                command: shown,
                place: self.place(),
                status: match out.status.code() {
                    Some(code) => format!("exit {code}"),
                    None => "killed by a signal".into(),
                },
                stderr: stderr.trim_end().to_string(),
            });
        }
        Ok(Output { stdout, stderr })
    }

    /// Loads `script` as one transaction (`nft -f -`).
    pub fn load(&self, script: &str) -> Result<(), Error> {
        self.run(&["-f", "-"], Some(script)).map(|_| ())
    }

    /// Checks `script` without loading it (`nft -c -f -`).
    pub fn check(&self, script: &str) -> Result<(), Error> {
        self.run(&["-c", "-f", "-"], Some(script)).map(|_| ())
    }

    /// Whether palisade's table exists.
    ///
    /// Asks for chains, not tables: nft 1.0.6 fetches every set element of
    /// every table for `list tables`, which takes most of a second next to a
    /// large set, while `list chains` fetches no rules and no elements.
    /// palisade's table always has chains.
    pub fn has_table(&self) -> Result<bool, Error> {
        Ok(!self.chain_fingerprint()?.is_empty())
    }

    /// The names and handles of palisade's chains, one per line; empty when
    /// the table is absent. Handles are new each time the table is made, so
    /// an equal fingerprint means the very table palisade loaded last.
    pub fn chain_fingerprint(&self) -> Result<String, Error> {
        let out = self.run(&["-j", "list", "chains"], None)?;
        let v: Value =
            serde_json::from_str(&out.stdout).map_err(|e| Error::NftOutput {
                command: "nft -j list chains".into(),
                detail: e.to_string(),
            })?;
        let mut lines: Vec<String> = items(&v)
            .filter(|(kind, obj)| {
                *kind == "chain"
                    && obj.get("family").and_then(Value::as_str) == Some("inet")
                    && obj.get("table").and_then(Value::as_str) == Some(TABLE)
            })
            .map(|(_, obj)| {
                format!(
                    "{} {}",
                    obj.get("name").and_then(Value::as_str).unwrap_or_default(),
                    obj.get("handle")
                        .and_then(Value::as_u64)
                        .unwrap_or_default()
                )
            })
            .collect();
        lines.sort();
        Ok(lines.join("\n"))
    }

    /// The ban sets' elements as `nft -j` JSON, one listing per set; empty
    /// when the table is absent. Cheap: only these sets are fetched.
    pub fn list_ban_sets(&self, names: &[String]) -> Result<Vec<Value>, Error> {
        if !self.has_table()? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for name in names {
            // A set that does not exist (an older table) has no bans.
            let Ok(o) = self.run(&["-j", "list", "set", "inet", TABLE, name], None)
            else {
                continue;
            };
            if let Ok(v) = serde_json::from_str(&o.stdout) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// palisade's table as `nft list table` prints it, `None` if absent.
    pub fn list_table(&self) -> Result<Option<String>, Error> {
        self.list_table_with(&[])
    }

    /// Like [`Nft::list_table`] without counters and other state
    /// (`nft -s`), for comparing two tables by their rules.
    pub fn list_table_stateless(&self) -> Result<Option<String>, Error> {
        self.list_table_with(&["-s"])
    }

    fn list_table_with(&self, flags: &[&str]) -> Result<Option<String>, Error> {
        if !self.has_table()? {
            return Ok(None);
        }
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["list", "table", "inet", TABLE]);
        Ok(Some(self.run(&args, None)?.stdout))
    }

    /// palisade's table as `nft -j` JSON, `None` if absent.
    pub fn list_table_json(&self) -> Result<Option<Value>, Error> {
        self.list_table_json_with(&[])
    }

    /// Like [`Nft::list_table_json`] without set elements (`nft -t`): enough
    /// to count chains, rules and sets.
    pub fn list_table_json_terse(&self) -> Result<Option<Value>, Error> {
        self.list_table_json_with(&["-t"])
    }

    fn list_table_json_with(&self, flags: &[&str]) -> Result<Option<Value>, Error> {
        if !self.has_table()? {
            return Ok(None);
        }
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-j", "list", "table", "inet", TABLE]);
        let out = self.run(&args, None)?;
        serde_json::from_str(&out.stdout)
            .map(Some)
            .map_err(|e| Error::NftOutput {
                command: format!("nft -j list table inet {TABLE}"),
                detail: e.to_string(),
            })
    }
}

/// The `(kind, object)` pairs of an `nft -j` listing.
fn items(v: &Value) -> impl Iterator<Item = (&str, &Value)> {
    v.get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_object()?.iter().next())
        .map(|(k, v)| (k.as_str(), v))
}

/// What the kernel holds of palisade's table, reduced to what [`verify`]
/// compares.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Set name to element count.
    pub sets: BTreeMap<String, usize>,
    /// Chain name to (hook, priority, policy) for base chains.
    pub chains: BTreeMap<String, Option<(String, i64, String)>>,
    /// Chain name to the comments (palisade's rule ids) of its rules.
    pub rules: BTreeMap<String, Vec<String>>,
}

impl Loaded {
    /// Reads an `nft -j list table` document.
    pub fn from_json(v: &Value) -> Loaded {
        let mut out = Loaded::default();
        let ours = |o: &Value| o.get("table").and_then(Value::as_str) == Some(TABLE);
        for (kind, obj) in items(v) {
            let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
            match kind {
                "set" if ours(obj) => {
                    let n = obj
                        .get("elem")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    out.sets.insert(name.to_string(), n);
                }
                "chain" if ours(obj) => {
                    let base = obj.get("hook").and_then(Value::as_str).map(|hook| {
                        (
                            hook.to_string(),
                            obj.get("prio").and_then(Value::as_i64).unwrap_or_default(),
                            obj.get("policy")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        )
                    });
                    out.chains.insert(name.to_string(), base);
                    out.rules.entry(name.to_string()).or_default();
                }
                "rule" if ours(obj) => {
                    let chain =
                        obj.get("chain").and_then(Value::as_str).unwrap_or_default();
                    let comment = obj
                        .get("comment")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    out.rules
                        .entry(chain.to_string())
                        .or_default()
                        .push(comment.to_string());
                }
                _ => {}
            }
        }
        out
    }

    pub fn rule_count(&self) -> usize {
        self.rules.values().map(Vec::len).sum()
    }
}

/// Compares what the kernel holds (`nft -j list table`) with `rs`.
/// Returns every difference; empty means the load is what was meant.
pub fn verify(rs: &Ruleset, listed: &Value) -> Vec<String> {
    let got = Loaded::from_json(listed);
    let mut diffs = Vec::new();

    // Sets: the same names; Docker-filled sets with every element. Group
    // sets are interval sets, which nft may list merged, and meters and
    // bans fill at run time, so only their presence is compared.
    for s in &rs.sets {
        match got.sets.get(&s.name) {
            None => diffs.push(format!("set {} is missing", s.name)),
            Some(&n) => {
                let exact = matches!(s.role, SetRole::Service(_) | SetRole::Bridges);
                if exact && n != s.elements.len() {
                    diffs.push(format!(
                        "set {} holds {n} elements, expected {}",
                        s.name,
                        s.elements.len()
                    ));
                }
            }
        }
    }
    for name in got.sets.keys() {
        if rs.set(name).is_none() {
            diffs.push(format!("unexpected set {name}"));
        }
    }

    // Chains: the same names, hooks, priorities and policies, and the same
    // rules in the same order (each rule carries its id as comment).
    for c in &rs.chains {
        let Some(base) = got.chains.get(&c.name) else {
            diffs.push(format!("chain {} is missing", c.name));
            continue;
        };
        let want = c.base.as_ref().map(|b| {
            let policy = if b.policy_accept { "accept" } else { "drop" };
            (
                b.hook.as_str().to_string(),
                i64::from(b.priority),
                policy.to_string(),
            )
        });
        if *base != want {
            diffs.push(format!(
                "chain {} is attached as {base:?}, expected {want:?}",
                c.name
            ));
        }
        let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
        let got_ids: Vec<&str> = got
            .rules
            .get(&c.name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if ids != got_ids {
            diffs.push(format!(
                "chain {} holds {} rules {:?}, expected {} rules {:?}",
                c.name,
                got_ids.len(),
                got_ids,
                ids.len(),
                ids
            ));
        }
    }
    for name in got.chains.keys() {
        if rs.chain(name).is_none() {
            diffs.push(format!("unexpected chain {name}"));
        }
    }
    diffs
}

/// `add element` lines that put the bans of the loaded table (`listed`,
/// from `nft -j`) into the new one, each with the time it has left.
/// Appended to the replacement script, they load in the same transaction.
/// Entries about to expire, and anything that is not an address of the
/// set's family, are left out.
pub fn carry_over_bans(rs: &Ruleset, listed: &Value) -> String {
    let sets: Vec<(String, SetType)> = rs
        .sets
        .iter()
        .filter(|s| s.role == SetRole::Ban)
        .map(|s| (s.name.clone(), s.ty))
        .collect();
    carry_over_elements(&sets, listed)
}

/// Like [`carry_over_bans`], for the sets named in `sets` (name, type).
pub fn carry_over_elements(sets: &[(String, SetType)], listed: &Value) -> String {
    let mut out = String::new();
    for (kind, obj) in items(listed) {
        if kind != "set" || obj.get("table").and_then(Value::as_str) != Some(TABLE) {
            continue;
        }
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
        let Some((_, ty)) = sets.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let elems = obj.get("elem").and_then(Value::as_array);
        let mut kept = Vec::new();
        for e in elems.into_iter().flatten() {
            let (val, left) = match e {
                Value::String(v) => (v.as_str(), None),
                Value::Object(o) => {
                    let inner = o.get("elem").unwrap_or(e);
                    let Some(v) = inner.get("val").and_then(Value::as_str) else {
                        continue;
                    };
                    let expires = inner.get("expires").and_then(Value::as_u64);
                    let timeout = inner.get("timeout").and_then(Value::as_u64);
                    match (timeout, expires) {
                        (_, Some(0)) => continue,
                        (Some(t), Some(left)) => {
                            (v, Some(format!(" timeout {t}s expires {left}s")))
                        }
                        (Some(t), None) => (v, Some(format!(" timeout {t}s"))),
                        (None, _) => (v, None),
                    }
                }
                _ => continue,
            };
            let family_ok = matches!(
                (val.parse::<IpAddr>(), ty),
                (Ok(IpAddr::V4(_)), SetType::Ipv4Addr)
                    | (Ok(IpAddr::V6(_)), SetType::Ipv6Addr)
            );
            if !family_ok {
                continue;
            }
            kept.push(format!("{val}{}", left.unwrap_or_default()));
        }
        if !kept.is_empty() {
            let _ = writeln!(
                out,
                "add element inet {TABLE} {name} {{ {} }}",
                kept.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_are_carried_with_the_time_they_have_left() {
        let rs =
            palisade_compile::compile(&palisade_policy::builtin(), &Default::default());
        let listed: Value = serde_json::from_str(
            r#"{"nftables": [
              {"metainfo": {"version": "1.0.6"}},
              {"set": {"family": "inet", "name": "ban4", "table": "palisade",
                "type": "ipv4_addr", "flags": ["timeout"], "elem": [
                  {"elem": {"val": "203.0.113.5", "timeout": 3600, "expires": 3599}},
                  {"elem": {"val": "203.0.113.6", "timeout": 3600, "expires": 0}},
                  "203.0.113.7",
                  "2001:db8::1",
                  "}; flush ruleset; {"
              ]}},
              {"set": {"family": "inet", "name": "ban6", "table": "palisade",
                "type": "ipv6_addr", "elem": ["2001:db8::2"]}},
              {"set": {"family": "inet", "name": "group4_admin", "table": "palisade",
                "type": "ipv4_addr", "elem": ["198.51.100.10"]}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            carry_over_bans(&rs, &listed),
            "add element inet palisade ban4 { 203.0.113.5 timeout 3600s expires 3599s, \
             203.0.113.7 }\n\
             add element inet palisade ban6 { 2001:db8::2 }\n"
        );
    }
}
