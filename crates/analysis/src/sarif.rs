//! Findings as SARIF 2.1.0, for code-scanning dashboards.

use serde_json::{json, Value};

use crate::findings::{Finding, Severity};

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// A SARIF log with one run of palisade holding `findings`.
pub fn to_sarif(findings: &[Finding]) -> Value {
    let mut rule_ids: Vec<&str> = findings.iter().map(|f| f.id).collect();
    rule_ids.sort();
    rule_ids.dedup();
    let rules: Vec<Value> = rule_ids
        .iter()
        .map(|id| {
            let f = findings.iter().find(|f| f.id == *id).expect("listed");
            json!({
                "id": id,
                "shortDescription": { "text": id.replace(['/', '-'], " ") },
                "help": { "text": f.fix },
                "defaultConfiguration": { "level": level(f.severity) },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut region = json!({});
            if f.line > 0 {
                region = json!({ "startLine": f.line });
            }
            json!({
                "ruleId": f.id,
                "level": level(f.severity),
                "message": { "text": format!("{}: {} (fix: {})", f.subject, f.message, f.fix) },
                "properties": { "severity": f.severity.as_str(), "subject": f.subject },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": f.file },
                        "region": region,
                    }
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "palisade",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}
