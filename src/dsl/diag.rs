//! Diagnostics: errors and warnings with source positions, rendered with the
//! offending line and carets under the span.
//!
//! Layout (`w` = width of the largest line number shown):
//!
//! ```text
//! error: unknown function `sine`
//!   --> poly.fm:3:9
//!    |
//!  3 | alpha = sine(t)
//!    |         ^^^^ not a known function
//!    = hint: did you mean `sin`?
//! ```
//!
//! Columns count characters (not bytes) from 1. A diagnostic without a span
//! shows only `--> FILE`.

use super::ast::Span;
use std::fmt::Write as _;

/// How serious a diagnostic is. A scheduler with any error does not load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The scheduler still loads.
    Warning,
    /// The scheduler does not load.
    Error,
}

/// A secondary location shown under a diagnostic (e.g. "first defined here").
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// What the note says.
    pub message: String,
    /// Where it points.
    pub span: Span,
}

/// One message about a `.fm` source.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The headline.
    pub message: String,
    /// Where the problem is, when it has a place in the source.
    pub span: Option<Span>,
    /// Text printed after the carets.
    pub label: Option<String>,
    /// Secondary locations.
    pub notes: Vec<Note>,
    /// A suggestion, printed as `= hint: …`.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error with a headline and no position.
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span: None,
            label: None,
            notes: Vec::new(),
            hint: None,
        }
    }

    /// A warning with a headline and no position.
    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    /// Sets the primary span.
    pub fn at(mut self, span: Span) -> Diagnostic {
        self.span = Some(span);
        self
    }

    /// Sets the label printed after the carets.
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Sets the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the hint if there is one.
    pub fn maybe_hint(mut self, hint: Option<String>) -> Diagnostic {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }

    /// Adds a secondary location.
    pub fn note(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.notes.push(Note {
            message: message.into(),
            span,
        });
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic against the source it refers to; `file` is the name
    /// shown after `-->`. Ends with a newline.
    pub fn render(&self, file: &str, src: &str) -> String {
        let mut out = String::new();
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{sev}: {}", self.message);
        let mut width = 1;
        for span in self.span.iter().chain(self.notes.iter().map(|n| &n.span)) {
            width = width.max(digits(line_col(src, span.start).0));
        }
        match self.span {
            Some(span) => snippet(&mut out, file, src, span, self.label.as_deref(), width),
            None => {
                let _ = writeln!(out, "{:w$}--> {file}", "", w = width + 1);
            }
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{:w$}= hint: {hint}", "", w = width + 2);
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {}", note.message);
            snippet(&mut out, file, src, note.span, None, width);
        }
        out
    }
}

/// Renders every diagnostic, one after another, separated by blank lines.
pub fn render_all(diags: &[Diagnostic], file: &str, src: &str) -> String {
    let parts: Vec<String> = diags.iter().map(|d| d.render(file, src)).collect();
    parts.join("\n")
}

/// The 1-based line and character column of byte offset `pos` (clamped to the
/// text). A position in the `\r` of a `\r\n` line end (or on the `\n` after it)
/// counts as the end of the line's text, as it would with a plain `\n`.
pub fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let pos = visible_pos(src, pos);
    let before = &src[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = src[line_start..pos].chars().count() + 1;
    (line, col)
}

fn floor_boundary(src: &str, pos: usize) -> usize {
    let mut pos = pos.min(src.len());
    while !src.is_char_boundary(pos) {
        pos -= 1;
    }
    pos
}

/// The start and end (excluding trailing `\r`s) of the line holding byte `pos`.
fn line_bounds(src: &str, pos: usize) -> (usize, usize) {
    let start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
    let end = src[pos..].find('\n').map_or(src.len(), |i| pos + i);
    (start, start + src[start..end].trim_end_matches('\r').len())
}

/// `pos` on a character boundary and no further than the end of its line's
/// text: positions in a trailing `\r` run (a CRLF line end, or a `\r` ending the
/// file) or on the `\n` move back to where the text ends.
fn visible_pos(src: &str, pos: usize) -> usize {
    let pos = floor_boundary(src, pos);
    pos.min(line_bounds(src, pos).1)
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

fn snippet(out: &mut String, file: &str, src: &str, span: Span, label: Option<&str>, w: usize) {
    let start = visible_pos(src, span.start);
    let (line, col) = line_col(src, start);
    let _ = writeln!(out, "{:w$}--> {file}:{line}:{col}", "", w = w + 1);
    let (line_start, text_end) = line_bounds(src, start);
    // A lone `\r` inside the line is shown as a space so it cannot move the
    // terminal's cursor and the carets stay under the text.
    let text = src[line_start..text_end].replace('\r', " ");
    let end = floor_boundary(src, span.end.clamp(start, text_end));
    let pad: String = src[line_start..start]
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let carets = src[start..end].chars().count().max(1);
    let _ = writeln!(out, "{:w$} |", "", w = w + 1);
    let _ = writeln!(out, " {line:>w$} | {text}");
    let _ = write!(out, "{:w$} | {pad}{}", "", "^".repeat(carets), w = w + 1);
    match label {
        Some(l) => {
            let _ = writeln!(out, " {l}");
        }
        None => out.push('\n'),
    }
}

/// Levenshtein distance between two strings, counted in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a likely typo:
/// at most one edit for names of up to 3 characters, otherwise at most a third of
/// the name's length (rounded up). Ties go to the earlier candidate.
pub fn did_you_mean<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    let limit = name.chars().count().div_ceil(3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let d = edit_distance(name, c);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}
