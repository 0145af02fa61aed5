//! Where each value sits in the policy file, so that checks done after
//! deserialisation can still point at line and column.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a path into the document: a table key or an array index.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Seg<'a> {
    fn from(k: &'a str) -> Self {
        Seg::Key(k)
    }
}

impl From<usize> for Seg<'_> {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Builds a path from keys and indexes: `path!["services", name, "ports", 0]`.
#[macro_export]
#[doc(hidden)]
macro_rules! path {
    ($($seg:expr),* $(,)?) => { &[$($crate::spans::Seg::from($seg)),*][..] };
}

/// Parsed only when the first problem needs a position: a valid policy
/// (the usual case, and a large one) is read once.
pub struct Spans<'i> {
    src: &'i str,
    root: std::cell::OnceCell<Option<Spanned<DeTable<'i>>>>,
    len: usize,
}

impl<'i> Spans<'i> {
    pub fn new(src: &'i str) -> Spans<'i> {
        Spans {
            src,
            root: std::cell::OnceCell::new(),
            len: src.len(),
        }
    }

    /// The span of the value at `path`, or of its nearest existing parent.
    pub fn value(&self, path: &[Seg]) -> Range<usize> {
        let root = self.root.get_or_init(|| DeTable::parse(self.src).ok());
        let Some(root) = root else {
            return 0..0;
        };
        let mut best = root.span();
        let mut table: Option<&DeTable> = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue>]> = None;
        for seg in path {
            let next = match *seg {
                Seg::Key(k) => table.and_then(|t| {
                    t.iter().find(|(key, _)| key.get_ref() == k).map(|(_, v)| v)
                }),
                Seg::Index(i) => array.and_then(|a| a.get(i)),
            };
            let Some(next) = next else {
                break;
            };
            best = next.span();
            table = next.get_ref().as_table();
            array = next.get_ref().as_array().map(|a| &a[..]);
        }
        if best.start >= self.len && self.len > 0 {
            return self.len - 1..self.len;
        }
        best
    }
}
