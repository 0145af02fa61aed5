//! nftables rulesets from `nft -j list ruleset`, for the packet-path model.
//!
//! Only what the model needs is kept: base chains with hook, priority and
//! policy, regular chains, rules as their JSON expressions, and named sets
//! with their elements. Expressions are interpreted when a packet is
//! evaluated (see [`crate::eval`]); any expression the model does not know
//! is "maybe" there, never a silent match or miss.

use serde_json::Value;

#[derive(Debug, Clone, Default)]
pub struct NftRuleset {
    pub chains: Vec<NftChain>,
    pub sets: Vec<NftSet>,
}

#[derive(Debug, Clone)]
pub struct NftChain {
    pub family: String,
    pub table: String,
    pub name: String,
    /// `Some((hook, priority))` for base chains.
    pub base: Option<(String, i32)>,
    /// "accept" or "drop" for base chains.
    pub policy: String,
    pub rules: Vec<NftRule>,
}

#[derive(Debug, Clone)]
pub struct NftRule {
    pub handle: u64,
    pub expr: Vec<Value>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NftSet {
    pub family: String,
    pub table: String,
    pub name: String,
    pub elem: Vec<Value>,
}

impl NftRuleset {
    pub fn chain(&self, family: &str, table: &str, name: &str) -> Option<&NftChain> {
        self.chains
            .iter()
            .find(|c| c.family == family && c.table == table && c.name == name)
    }

    pub fn set(&self, family: &str, table: &str, name: &str) -> Option<&NftSet> {
        self.sets
            .iter()
            .find(|s| s.family == family && s.table == table && s.name == name)
    }
}

/// Named priorities nft prints for some families.
fn priority(v: &Value) -> i32 {
    if let Some(n) = v.as_i64() {
        return n as i32;
    }
    match v.as_str().unwrap_or_default() {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => 0,
    }
}

/// Parses `nft -j list ruleset` output.
pub fn parse(text: &str) -> Result<NftRuleset, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let items = v["nftables"]
        .as_array()
        .ok_or("expected an object with an `nftables` list")?;
    let mut rs = NftRuleset::default();
    for item in items {
        if let Some(c) = item.get("chain") {
            let base = c["hook"]
                .as_str()
                .map(|h| (h.to_string(), priority(&c["prio"])));
            rs.chains.push(NftChain {
                family: c["family"].as_str().unwrap_or_default().into(),
                table: c["table"].as_str().unwrap_or_default().into(),
                name: c["name"].as_str().unwrap_or_default().into(),
                base,
                policy: c["policy"].as_str().unwrap_or("accept").into(),
                rules: Vec::new(),
            });
        } else if let Some(r) = item.get("rule") {
            let (family, table, chain) = (
                r["family"].as_str().unwrap_or_default(),
                r["table"].as_str().unwrap_or_default(),
                r["chain"].as_str().unwrap_or_default(),
            );
            let rule = NftRule {
                handle: r["handle"].as_u64().unwrap_or(0),
                expr: r["expr"].as_array().cloned().unwrap_or_default(),
                comment: r["comment"].as_str().map(str::to_string),
            };
            match rs
                .chains
                .iter_mut()
                .find(|c| c.family == family && c.table == table && c.name == chain)
            {
                Some(c) => c.rules.push(rule),
                None => {
                    return Err(format!(
                        "rule for unknown chain {family} {table} {chain}"
                    ))
                }
            }
        } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            rs.sets.push(NftSet {
                family: s["family"].as_str().unwrap_or_default().into(),
                table: s["table"].as_str().unwrap_or_default().into(),
                name: s["name"].as_str().unwrap_or_default().into(),
                elem: s["elem"].as_array().cloned().unwrap_or_default(),
            });
        }
    }
    Ok(rs)
}

/// One rule as short text for reports: its comment, else its handle.
pub fn describe(rule: &NftRule) -> String {
    match &rule.comment {
        Some(c) => format!("handle {} \"{c}\"", rule.handle),
        None => format!("handle {}", rule.handle),
    }
}
