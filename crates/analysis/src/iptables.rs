//! `iptables-save` / `ip6tables-save` dumps, parsed.
//!
//! The format is a list of tables (`*filter`), chain headers
//! (`:INPUT ACCEPT [0:0]`), rules (`-A CHAIN ...`) and `COMMIT`. Rules are
//! kept as iptables wrote them, split into the core matches (addresses,
//! interfaces, protocol), the match modules with their options, and the
//! target. Modules the analysis does not model stay as options with their
//! raw values, so nothing is dropped silently: the evaluator treats a match
//! it cannot decide as "may match".
//!
//! Real dumps are messy. CRLF line ends, trailing blanks and the pre-1.4.3
//! negation syntax (`-d ! 10.0.0.0/8`) are accepted; anything else that is
//! not understood is an error with its line number.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// A whole dump: tables by name (`filter`, `nat`, `mangle`, `raw`,
/// `security`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dump {
    pub tables: BTreeMap<String, Table>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    /// Chains in the order the dump declares them.
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub name: String,
    /// `Some` for built-in chains (ACCEPT or DROP), `None` for user chains.
    pub policy: Option<String>,
    pub rules: Vec<Rule>,
    pub line: usize,
}

/// An address match with optional negation (`! -s 10.0.0.0/8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrMatch {
    pub negated: bool,
    pub net: IpNet,
}

/// An interface match; `wildcard` for a trailing `+` (`-i br-+`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IfaceMatch {
    pub negated: bool,
    pub name: String,
    pub wildcard: bool,
}

impl IfaceMatch {
    pub fn matches(&self, iface: &str) -> bool {
        let hit = if self.wildcard {
            iface.starts_with(&self.name)
        } else {
            iface == self.name
        };
        hit != self.negated
    }
}

/// One `--option value...` of a match module or target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opt {
    pub name: String,
    pub negated: bool,
    pub values: Vec<String>,
}

/// `-m NAME` and its options, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Module {
    pub name: String,
    pub options: Vec<Opt>,
}

impl Module {
    pub fn opt(&self, name: &str) -> Option<&Opt> {
        self.options.iter().find(|o| o.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "target", rename_all = "lowercase")]
pub enum Verdict {
    /// `-j TARGET` with its options.
    Jump(String),
    /// `-g CHAIN`.
    Goto(String),
    /// No target: the rule only counts.
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// 1-based line in the dump.
    pub line: usize,
    pub chain: String,
    pub protocol: Option<(bool, String)>,
    pub src: Option<AddrMatch>,
    pub dst: Option<AddrMatch>,
    pub in_iface: Option<IfaceMatch>,
    pub out_iface: Option<IfaceMatch>,
    /// `-f` / `! -f`.
    pub fragment: Option<bool>,
    pub modules: Vec<Module>,
    pub verdict: Verdict,
    pub target_options: Vec<Opt>,
    /// The rule as written, for reports.
    pub text: String,
}

impl Rule {
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name == name)
    }

    pub fn target(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Jump(t) | Verdict::Goto(t) => Some(t),
            Verdict::None => None,
        }
    }
}

/// What could not be understood, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
    pub text: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}\n  | {}",
            self.file, self.line, self.message, self.text
        )
    }
}

/// Parses a dump. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dump, ParseError> {
    let mut dump = Dump::default();
    let mut current: Option<(String, Table)> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches(['\r', ' ', '\t']).trim_start();
        let err = |message: String| ParseError {
            file: file.to_string(),
            line: line_no,
            message,
            text: line.to_string(),
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if let Some((open, _)) = &current {
                return Err(err(format!("table `{open}` has no COMMIT before this one")));
            }
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(err("expected a table name after `*`".into()));
            }
            current = Some((name.to_string(), Table::default()));
            continue;
        }
        let Some((table_name, table)) = current.as_mut() else {
            return Err(err(
                "expected `*TABLE` (e.g. `*filter`) before anything else; this does not \
                 look like iptables-save output"
                    .into(),
            ));
        };
        if line == "COMMIT" {
            let (name, table) = current.take().expect("open table");
            dump.tables.insert(name, table);
            continue;
        }
        if let Some(header) = line.strip_prefix(':') {
            let mut parts = header.split_whitespace();
            let name = parts.next().unwrap_or_default();
            let policy = parts.next().unwrap_or_default();
            if name.is_empty() || policy.is_empty() {
                return Err(err("expected `:CHAIN POLICY [packets:bytes]`".into()));
            }
            if table.chain(name).is_some() {
                return Err(err(format!(
                    "chain `{name}` is declared twice in `{table_name}`"
                )));
            }
            table.chains.push(Chain {
                name: name.to_string(),
                policy: (policy != "-").then(|| policy.to_string()),
                rules: Vec::new(),
                line: line_no,
            });
            continue;
        }
        if line.starts_with("-A ") || line.starts_with("-I ") || line.starts_with("[") {
            let rule = parse_rule(line, line_no).map_err(err)?;
            if table.chain(&rule.chain).is_none() && is_builtin(table_name, &rule.chain) {
                // iptables-restore creates built-in chains it was not told
                // about, with an ACCEPT policy.
                table.chains.push(Chain {
                    name: rule.chain.clone(),
                    policy: Some("ACCEPT".into()),
                    rules: Vec::new(),
                    line: line_no,
                });
            }
            let Some(chain) = table.chains.iter_mut().find(|c| c.name == rule.chain)
            else {
                let message = format!(
                    "rule for chain `{}`, which `{table_name}` does not declare",
                    rule.chain
                );
                return Err(err(message));
            };
            chain.rules.push(rule);
            continue;
        }
        return Err(err(
            "expected a rule (`-A CHAIN ...`), a chain (`:CHAIN POLICY`), `COMMIT` or a \
             comment"
                .into(),
        ));
    }
    if let Some((name, _)) = current {
        let lines = text.split('\n').count();
        return Err(ParseError {
            file: file.to_string(),
            line: lines,
            message: format!("table `{name}` ends without COMMIT"),
            text: String::new(),
        });
    }
    Ok(dump)
}

/// The chains a table has from the start.
pub fn is_builtin(table: &str, chain: &str) -> bool {
    let builtin: &[&str] = match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        "security" => &["INPUT", "FORWARD", "OUTPUT"],
        _ => &[],
    };
    builtin.contains(&chain)
}

/// Splits a rule line into words, honouring double quotes (comments and
/// log prefixes may contain blanks). Quoted words are marked so they are
/// never taken for options.
fn words(line: &str) -> Result<Vec<(String, bool)>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' {
            chars.next();
            let mut w = String::new();
            loop {
                match chars.next() {
                    Some('\\') => {
                        if let Some(n) = chars.next() {
                            w.push(n);
                        }
                    }
                    Some('"') => break,
                    Some(ch) => w.push(ch),
                    None => return Err("unterminated quote".into()),
                }
            }
            out.push((w, true));
            continue;
        }
        let mut w = String::new();
        while let Some(&ch) = chars.peek() {
            if ch.is_whitespace() {
                break;
            }
            w.push(ch);
            chars.next();
        }
        out.push((w, false));
    }
    Ok(out)
}

fn parse_rule(line: &str, line_no: usize) -> Result<Rule, String> {
    // iptables-save -c prefixes counters: "[12:345] -A ...".
    let line = match line.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .map(|(_, r)| r.trim_start())
            .unwrap_or(rest),
        None => line,
    };
    let w = words(line)?;
    let mut rule = Rule {
        line: line_no,
        chain: String::new(),
        protocol: None,
        src: None,
        dst: None,
        in_iface: None,
        out_iface: None,
        fragment: None,
        modules: Vec::new(),
        verdict: Verdict::None,
        target_options: Vec::new(),
        text: line.to_string(),
    };
    let mut i = 0;
    let mut negate = false;
    // Options after -j belong to the target; before it, to the last -m.
    let mut in_target = false;
    let value = |i: &mut usize, what: &str| -> Result<String, String> {
        *i += 1;
        w.get(*i)
            .map(|(v, _)| v.clone())
            .ok_or_else(|| format!("`{what}` needs a value"))
    };
    while i < w.len() {
        let (word, quoted) = (&w[i].0, w[i].1);
        if quoted {
            return Err(format!("unexpected quoted text \"{word}\""));
        }
        match word.as_str() {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-A" | "-I" => {
                rule.chain = value(&mut i, word)?;
                // `-I CHAIN 3`: a position may follow.
                if word == "-I"
                    && w.get(i + 1).is_some_and(|(v, _)| v.parse::<u32>().is_ok())
                {
                    i += 1;
                }
            }
            "-p" | "--protocol" => {
                let (neg, v) = old_negation(&w, &mut i, word)?;
                rule.protocol = Some((negate || neg, v.to_ascii_lowercase()));
            }
            "-s" | "--source" | "-d" | "--destination" => {
                let (neg, v) = old_negation(&w, &mut i, word)?;
                let net = parse_net(&v)?;
                let m = AddrMatch {
                    negated: negate || neg,
                    net,
                };
                if word.starts_with("-s") || word == "--source" {
                    rule.src = Some(m);
                } else {
                    rule.dst = Some(m);
                }
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let (neg, v) = old_negation(&w, &mut i, word)?;
                let (name, wildcard) = match v.strip_suffix('+') {
                    Some(n) => (n.to_string(), true),
                    None => (v.clone(), false),
                };
                let m = IfaceMatch {
                    negated: negate || neg,
                    name,
                    wildcard,
                };
                if word == "-i" || word == "--in-interface" {
                    rule.in_iface = Some(m);
                } else {
                    rule.out_iface = Some(m);
                }
            }
            "-f" | "--fragment" => rule.fragment = Some(!negate),
            "-m" | "--match" => {
                let name = value(&mut i, word)?;
                rule.modules.push(Module {
                    name,
                    options: Vec::new(),
                });
                in_target = false;
            }
            "-j" | "--jump" => {
                rule.verdict = Verdict::Jump(value(&mut i, word)?);
                in_target = true;
            }
            "-g" | "--goto" => {
                rule.verdict = Verdict::Goto(value(&mut i, word)?);
                in_target = true;
            }
            "-c" | "--set-counters" => {
                value(&mut i, word)?;
                value(&mut i, word)?;
            }
            opt if opt.starts_with("--") => {
                let mut values = Vec::new();
                let mut neg = negate;
                while let Some((v, q)) = w.get(i + 1) {
                    if !q && (v.starts_with("--") || v.starts_with('-') && v.len() == 2) {
                        break;
                    }
                    if !q && v == "!" {
                        // `--dport ! 22` (old syntax) or `! --next-opt`.
                        let next_is_value = w
                            .get(i + 2)
                            .is_some_and(|(n, nq)| *nq || !n.starts_with('-'));
                        if values.is_empty() && next_is_value {
                            neg = true;
                            i += 1;
                            continue;
                        }
                        break;
                    }
                    values.push(v.clone());
                    i += 1;
                }
                let o = Opt {
                    name: opt.trim_start_matches('-').to_string(),
                    negated: neg,
                    values,
                };
                if in_target {
                    rule.target_options.push(o);
                } else if let Some(m) = rule.modules.last_mut() {
                    m.options.push(o);
                } else if let Some((_, proto)) = &rule.protocol {
                    // `-p tcp --dport 22` without `-m tcp`: iptables loads
                    // the protocol's module implicitly.
                    rule.modules.push(Module {
                        name: proto.clone(),
                        options: vec![o],
                    });
                } else {
                    return Err(format!("option `{opt}` outside of any match or target"));
                }
            }
            other => {
                return Err(format!("unexpected `{other}`"));
            }
        }
        negate = false;
        i += 1;
    }
    if negate {
        return Err("`!` at the end of the rule".into());
    }
    if rule.chain.is_empty() {
        return Err("a rule without `-A CHAIN`".into());
    }
    Ok(rule)
}

/// Reads an option's value, accepting the old `-d ! 10.0.0.0/8` form.
fn old_negation(
    w: &[(String, bool)],
    i: &mut usize,
    what: &str,
) -> Result<(bool, String), String> {
    *i += 1;
    let Some((v, _)) = w.get(*i) else {
        return Err(format!("`{what}` needs a value"));
    };
    if v == "!" {
        *i += 1;
        let Some((v, _)) = w.get(*i) else {
            return Err(format!("`{what} !` needs a value"));
        };
        return Ok((true, v.clone()));
    }
    Ok((false, v.clone()))
}

/// `10.0.0.0/8`, `10.0.0.1`, `10.0.0.0/255.0.0.0`, IPv6 likewise.
fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    if let Some((addr, mask)) = text.split_once('/') {
        if let (Ok(addr), Ok(mask)) = (addr.parse::<IpAddr>(), mask.parse::<IpAddr>()) {
            if let Ok(prefix) = ipnet::ip_mask_to_prefix(mask) {
                if let Ok(net) = IpNet::new(addr, prefix) {
                    return Ok(net.trunc());
                }
            }
            return Err(format!("`{text}`: the netmask is not contiguous"));
        }
    }
    Err(format!(
        "`{text}` is not an address or network (expected e.g. 10.0.0.0/8)"
    ))
}
