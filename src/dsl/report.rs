//! [`CheckReport`]: the outcome of checking a `.fm` file, for schedulers and
//! time grids alike.

use super::diag::{render_all, Diagnostic};
use crate::{Error, Result};

/// Every diagnostic of a checked `.fm` file, and what it defines (a
/// [`Scheduler`](crate::scheduler::Scheduler) or a
/// [`TimeGrid`](crate::grid::TimeGrid)) when there was no error.
#[derive(Debug)]
pub struct CheckReport<T> {
    /// The file name used in the diagnostics (`<builtin>.fm` for built-ins).
    pub file: String,
    /// The source text that was checked (empty when it could not be read).
    pub source: String,
    /// Every error and warning, in the order found.
    pub diagnostics: Vec<Diagnostic>,
    /// What the file defines, `None` when there was an error.
    pub loaded: Option<T>,
}

impl<T> CheckReport<T> {
    /// A report for a file that could not be read or found: one diagnostic,
    /// nothing loaded.
    pub fn unread(file: &str, diagnostic: Diagnostic) -> Self {
        CheckReport {
            file: file.to_string(),
            source: String::new(),
            diagnostics: vec![diagnostic],
            loaded: None,
        }
    }

    /// Whether any diagnostic is an error (nothing was loaded).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Every diagnostic rendered with file, line, column, source line and
    /// carets, separated by blank lines; empty when there are none.
    pub fn rendered(&self) -> String {
        render_all(&self.diagnostics, &self.file, &self.source)
    }

    /// What was loaded, or [`Error::Scheduler`] holding every rendered
    /// diagnostic.
    pub fn into_result(self) -> Result<T> {
        let report = self.rendered();
        self.loaded.ok_or(Error::Scheduler {
            name: self.file,
            report,
        })
    }
}
