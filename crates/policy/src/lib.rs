//! palisade's policy: one TOML file that says what may reach what.
//!
//! Two stages, as in a compiler front end: `raw` mirrors the file and
//! rejects unknown keys and wrong types; `validate` resolves names, parses
//! addresses, fills in defaults and runs every semantic check, producing a
//! [`Policy`]. Every problem is a [`Diagnostic`] with file, line, column,
//! the offending text and, when known, a hint.

pub mod diag;
pub mod model;
pub mod raw;
pub mod spans;
pub mod validate;

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics};
pub use model::*;
pub use validate::{parse, parse_rate};

/// The reference deployment's policy, built into the binary.
pub const BUILTIN: &str = include_str!("../../../examples/trading-bot/policy.toml");

/// Name under which the built-in policy appears in messages.
pub const BUILTIN_ORIGIN: &str = "built-in:trading-bot";

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read the policy: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Reads and checks the policy at `path`.
pub fn load(path: &Path) -> Result<Policy, LoadError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: shown.clone(),
        source,
    })?;
    let src = String::from_utf8(bytes).map_err(|e| {
        // Show the text up to the first bad byte, which stands as U+FFFD.
        let at = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
        let text = format!("{valid}\u{FFFD}");
        let bad = e.as_bytes()[at];
        LoadError::Invalid(Diagnostics(vec![Diagnostic::at(
            &shown,
            &text,
            at..text.len(),
            format!("the policy is not valid UTF-8 (byte 0x{bad:02x})"),
            Some("save the file as UTF-8".into()),
        )]))
    })?;
    parse(&src, &shown).map_err(LoadError::Invalid)
}

/// The built-in reference policy.
pub fn builtin() -> Policy {
    parse(BUILTIN, BUILTIN_ORIGIN).expect("the built-in policy is valid")
}

/// JSON Schema of the policy format, for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(raw::RawPolicy);
    serde_json::to_string_pretty(&schema).expect("a schema serialises")
}
