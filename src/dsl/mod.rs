//! The `.fm` scheduler language.
//!
//! A `.fm` file defines α(t) and σ(t) (see `grammar/fm.ebnf`). The pipeline:
//! [`parser`] → [`check`] (names, arity, inlining of lets) → [`deriv`] (symbolic
//! d/dt) → [`simplify`] → [`eval`] (one register kernel for α, σ, α', σ' with
//! shared subexpressions) → numeric checks ([`check`]).
//! Problems are reported as [`diag::Diagnostic`]s with spans; [`print()`] turns
//! expressions back into source text.
//!
//! **Limits.** Hostile sources are ordinary errors, never a crash of the host:
//! a source is at most [`parser::MAX_SOURCE_BYTES`] (1 MiB); an expression at
//! most [`parser::MAX_DEPTH`] (256) levels deep, counted on its tree (a chain
//! of N operations is N levels deep), and at most [`parser::MAX_NODES`] (5,000)
//! nodes. The parser checks them while it builds a tree, so no recursive pass
//! (the checks, [`deriv`], [`simplify`], [`eval`], dropping the tree) sees a
//! deeper one; [`check`] enforces the same limits on the size a definition will
//! have once its lets are inlined, computed before anything is inlined.

pub mod ast;
pub mod check;
pub mod deriv;
pub mod diag;
pub mod eval;
mod load;
pub mod parser;
pub mod print;
pub mod report;
pub mod simplify;

pub use ast::{Expr, Span};
pub use check::{analyze, analyze_grid, Analysis, Compiled, CompiledGrid, FileKind, GridAnalysis};
pub use diag::{render_all, Diagnostic, Severity};
pub use eval::{Kernel, Tape};
pub use load::read_source_file;
pub(crate) use load::{looks_like_path, read_limited};
pub use parser::{parse_expr, parse_program};
pub use print::print;
pub use report::CheckReport;
