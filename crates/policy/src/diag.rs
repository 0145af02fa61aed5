//! Diagnostics: what went wrong in a policy file, where, and how to fix it.
//!
//! Every error palisade reports about a policy names the file, the line and
//! the column, quotes the offending text and, when the fix is known, ends
//! with a hint. Spans are byte ranges into the source; they are turned into
//! line and column only when a diagnostic is rendered.

use std::fmt;
use std::ops::Range;

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line of the start of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the start of the offending text.
    pub column: usize,
    pub message: String,
    /// The whole source line the error starts on.
    pub source_line: String,
    /// How many characters of `source_line` to underline.
    pub width: usize,
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Builds a diagnostic for `span` in `src`.
    pub fn at(
        file: &str,
        src: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let mut start = span.start.min(src.len());
        while !src.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.clamp(start, src.len());
        while !src.is_char_boundary(end) {
            end += 1;
        }
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
        let line = src[..start].matches('\n').count() + 1;
        let column = src[line_start..start].chars().count() + 1;
        let source_line = src[line_start..line_end].trim_end_matches('\r').to_string();
        let width = src[start..end.min(line_end)].chars().count().max(1);
        Diagnostic {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
            source_line,
            width,
            hint,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        writeln!(f, "  --> {}:{}:{}", self.file, self.line, self.column)?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        let pad: String = self
            .source_line
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{:gutter$} | {}{}", "", pad, "^".repeat(self.width))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{:gutter$} = hint: {}", "", hint)?;
        }
        Ok(())
    }
}

/// All problems found in one policy file. Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        let at = src.find("\"x\"").unwrap();
        let d = Diagnostic::at("p.toml", src, at..at + 3, "bad", None);
        assert_eq!((d.line, d.column, d.width), (2, 6, 3));
        assert_eq!(d.source_line, "bé = \"x\"");
        let shown = d.to_string();
        assert!(shown.contains("p.toml:2:6"), "{shown}");
        assert!(shown.ends_with("|      ^^^"), "{shown}");
    }

    #[test]
    fn spans_inside_a_character_are_widened_to_it() {
        let src = "a = \"\u{FFFD}\"\n";
        let d = Diagnostic::at("p.toml", src, 6..7, "bad", None);
        assert_eq!((d.line, d.column, d.width), (1, 6, 1));
    }

    #[test]
    fn span_past_the_end_is_clamped() {
        let d = Diagnostic::at("p.toml", "x", 5..9, "eof", None);
        assert_eq!((d.line, d.column), (1, 2));
    }
}
