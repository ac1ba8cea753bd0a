//! The `.fm` scheduler language.
//!
//! A `.fm` file defines α(t) and σ(t) (see `grammar/fm.ebnf`). The pipeline:
//! [`parser`] → [`check`] (names, arity, inlining of lets) → [`deriv`] (symbolic
//! d/dt) → [`simplify`] → [`eval`] (one register kernel for α, σ, α', σ' with
//! shared subexpressions) → numeric checks ([`check`]).
//! Problems are reported as [`diag::Diagnostic`]s with spans; [`print`] turns
//! expressions back into source text.

pub mod ast;
pub mod check;
pub mod deriv;
pub mod diag;
pub mod eval;
pub mod parser;
pub mod print;
pub mod simplify;

pub use ast::{Expr, Span};
pub use check::{analyze, Analysis, Compiled};
pub use diag::{render_all, Diagnostic, Severity};
pub use eval::{Kernel, Tape};
pub use parser::{parse_expr, parse_program};
pub use print::print;
