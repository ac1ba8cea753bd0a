//! Semantic and numeric checks, and the pipeline from source text to a compiled kernel.
//!
//! **Names.** A name may be used on any line after the one defining it: `t`,
//! `pi` and `e` always; params, lets, `alpha` and `sigma` once defined. Lets,
//! `alpha` and `sigma` are *inlined*: every use is replaced by the definition, so
//! α, σ and their derivatives are single expressions of `t` and the params. Params
//! stay symbolic in the printed expressions and become constants in the kernel.
//! Reserved words (`t`, `pi`, `e`, `alpha`, `sigma`, `param`, `let` and the
//! function names) cannot be defined.
//!
//! **Numeric checks** run on the simplified, compiled α, σ, α', σ' on the grid
//! t = i / [`GRID`], i = 0‥=GRID (1,999 interior points and both endpoints):
//! - boundary values α(0)=0, σ(0)=1, α(1)=1, σ(1)=0: an error when off by more
//!   than [`BOUNDARY_ERROR`] (or not finite), a warning when off by more than
//!   [`BOUNDARY_WARNING`] (VP's α(0) ≈ 0.0066 is a warning);
//! - α' or σ' not finite at t = 0 or t = 1: a warning naming the endpoint;
//! - any of the four not finite inside (0, 1): an error naming the first such t;
//! - the SNR α/σ must strictly increase across the interior grid (an error naming
//!   the first pair of points where it does not).

use super::ast::{Expr, ExprKind, Func, Program, Span, Stmt};
use super::deriv::derivative;
use super::diag::{did_you_mean, Diagnostic};
use super::eval::Kernel;
use super::simplify::simplify;
use std::collections::HashMap;

/// Number of grid intervals on [0, 1] for the numeric checks.
pub const GRID: usize = 2000;
/// Boundary values further than this from their target are errors.
pub const BOUNDARY_ERROR: f64 = 0.05;
/// Boundary values further than this (but within [`BOUNDARY_ERROR`]) are warnings.
pub const BOUNDARY_WARNING: f64 = 1e-9;
/// Largest expression (in nodes) that inlining lets may produce: the parser's
/// [`MAX_NODES`](super::parser::MAX_NODES). The size of a definition once its
/// lets are inlined is computed (a use of a let counts as the let's whole
/// expanded body) before anything is inlined.
pub const MAX_NODES: usize = super::parser::MAX_NODES;
/// Deepest expression (in levels) that inlining lets may produce: the parser's
/// [`MAX_DEPTH`](super::parser::MAX_DEPTH), computed before inlining.
pub const MAX_INLINED_DEPTH: usize = super::parser::MAX_DEPTH;

/// Names that cannot be defined by `param` or `let`.
pub const RESERVED: [&str; 7] = ["t", "pi", "e", "alpha", "sigma", "param", "let"];

/// What a `.fm` file defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A scheduler: `alpha` and `sigma` over the time `t`.
    Scheduler,
    /// A time grid: `grid` over the uniform position `u` ∈ [0, 1].
    Grid,
}

impl FileKind {
    /// The variable of the file's expressions (`t` or `u`).
    pub fn variable(self) -> &'static str {
        match self {
            FileKind::Scheduler => "t",
            FileKind::Grid => "u",
        }
    }

    /// The names the file must assign (`alpha`, `sigma`; or `grid`).
    pub fn targets(self) -> &'static [&'static str] {
        match self {
            FileKind::Scheduler => &["alpha", "sigma"],
            FileKind::Grid => &["grid"],
        }
    }

    /// Names that cannot be defined by `param` or `let` in such a file.
    pub fn reserved(self) -> &'static [&'static str] {
        match self {
            FileKind::Scheduler => &RESERVED,
            FileKind::Grid => &GRID_RESERVED,
        }
    }
}

/// Names that cannot be defined by `param` or `let` in a grid file.
pub const GRID_RESERVED: [&str; 9] = [
    "u", "pi", "e", "grid", "t", "alpha", "sigma", "param", "let",
];

/// A schedule that passed every check.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Every param with its effective value (default or override), in source order.
    pub params: Vec<(String, f64)>,
    /// Simplified α, σ, α', σ' (params symbolic), in that order.
    pub exprs: [Expr; 4],
    /// The same four expressions compiled together (outputs in the same order)
    /// with the effective param values.
    pub program: Kernel,
}

/// Everything [`analyze`] found out about a source.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The compiled schedule, present exactly when there is no error.
    pub compiled: Option<Compiled>,
    /// Every diagnostic, errors and warnings, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Clone, Copy, Debug)]
enum Def<'p> {
    Param,
    /// A let, `alpha` or `sigma`; `None` when its definition had errors.
    Value(Option<Value<'p>>),
}

/// A checked definition, kept as written: only α and σ are ever inlined.
#[derive(Clone, Copy, Debug)]
struct Value<'p> {
    /// The definition as parsed (its names all refer to earlier definitions).
    body: &'p Expr,
    /// Node count and depth of the body with every let inlined.
    size: Size,
}

/// Node count and depth of a tree (saturating, so hostile sizes cannot wrap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Size {
    nodes: usize,
    depth: usize,
}

impl Size {
    const LEAF: Size = Size { nodes: 1, depth: 1 };

    /// A node over children of these sizes.
    fn over(children: impl IntoIterator<Item = Size>) -> Size {
        children.into_iter().fold(Size::LEAF, |acc, c| Size {
            nodes: acc.nodes.saturating_add(c.nodes),
            depth: acc.depth.max(c.depth.saturating_add(1)),
        })
    }
}

struct Entry<'p> {
    def: Def<'p>,
    name_span: Span,
    /// The whole statement, for numeric diagnostics.
    stmt_span: Span,
}

struct Resolver<'p> {
    /// What the file defines: a scheduler (over `t`) or a time grid (over `u`).
    kind: FileKind,
    scope: HashMap<String, Entry<'p>>,
    order: Vec<String>,
    /// First definition of every name in the file, to tell "defined later" from unknown.
    all: HashMap<&'p str, Span>,
    diags: Vec<Diagnostic>,
}

fn stmt_name(s: &Stmt) -> &super::ast::Ident {
    match s {
        Stmt::Param { name, .. } | Stmt::Let { name, .. } | Stmt::Broken { name } => name,
        Stmt::Assign { target, .. } => target,
    }
}

impl<'p> Resolver<'p> {
    fn candidates(&self) -> Vec<&str> {
        let mut c: Vec<&str> = vec![self.kind.variable(), "pi", "e"];
        c.extend(self.order.iter().map(String::as_str));
        c
    }

    /// Checks the names and calls of `e`, reporting what is wrong; returns the
    /// size `e` will have once its lets are inlined (`None` if it has errors).
    /// Nothing is inlined here, so a let used many times costs nothing yet.
    fn measure(&mut self, e: &Expr, uses: &mut HashMap<String, usize>) -> Option<Size> {
        match &e.kind {
            ExprKind::Num(_) => Some(Size::LEAF),
            ExprKind::Name(n) => {
                let size = self.measure_name(n, e.span)?;
                if size != Size::LEAF {
                    *uses.entry(n.clone()).or_default() += 1;
                }
                Some(size)
            }
            ExprKind::Neg(a) => Some(Size::over([self.measure(a, uses)?])),
            ExprKind::Binary(_, a, b) => {
                let a = self.measure(a, uses);
                let b = self.measure(b, uses);
                Some(Size::over([a?, b?]))
            }
            ExprKind::Call {
                name,
                name_span,
                args,
            } => {
                let sizes: Vec<Option<Size>> = args.iter().map(|a| self.measure(a, uses)).collect();
                let ok = self.check_call(name, *name_span, e.span, args.len());
                let sizes: Option<Vec<Size>> = sizes.into_iter().collect();
                if !ok {
                    return None;
                }
                Some(Size::over(sizes?))
            }
        }
    }

    /// `e` with every let, `alpha` and `sigma` replaced by its definition. Only
    /// called on definitions that [`Resolver::measure`] accepted, so the result
    /// is within [`MAX_NODES`] and [`MAX_INLINED_DEPTH`].
    fn inline(&self, e: &Expr) -> Expr {
        let kind = match &e.kind {
            ExprKind::Num(v) => ExprKind::Num(*v),
            ExprKind::Name(n) => match self.scope.get(n.as_str()).map(|entry| entry.def) {
                Some(Def::Value(Some(v))) => return self.inline(v.body),
                _ => ExprKind::Name(n.clone()),
            },
            ExprKind::Neg(a) => ExprKind::Neg(Box::new(self.inline(a))),
            ExprKind::Binary(op, a, b) => {
                ExprKind::Binary(*op, Box::new(self.inline(a)), Box::new(self.inline(b)))
            }
            ExprKind::Call {
                name,
                name_span,
                args,
            } => ExprKind::Call {
                name: name.clone(),
                name_span: *name_span,
                args: args.iter().map(|a| self.inline(a)).collect(),
            },
        };
        Expr { kind, span: e.span }
    }

    fn check_call(&mut self, name: &str, name_span: Span, span: Span, n: usize) -> bool {
        let Some(f) = Func::from_name(name) else {
            let mut d = Diagnostic::error(format!("unknown function `{name}`"))
                .at(name_span)
                .label("not a known function");
            d = match did_you_mean(name, Func::ALL.map(Func::name)) {
                Some(h) => d.hint(h),
                None if self.scope.contains_key(name) || self.kind.reserved().contains(&name) => d
                    .hint(format!(
                        "`{name}` is a value, not a function; use `*` to multiply"
                    )),
                None => {
                    d.hint("the functions are sin, cos, tan, exp, log, sqrt, tanh, sigmoid and pow")
                }
            };
            self.diags.push(d);
            return false;
        };
        if n != f.arity() {
            let (want, example) = match f.arity() {
                2 => ("2 arguments", format!("`{name}(x, y)`")),
                _ => ("1 argument", format!("`{name}(x)`")),
            };
            let given = match n {
                1 => "1 was given".to_string(),
                k => format!("{k} were given"),
            };
            self.diags.push(
                Diagnostic::error(format!("`{name}` takes {want} but {given}"))
                    .at(span)
                    .label(format!("expected {want}"))
                    .hint(format!("write {example}")),
            );
            return false;
        }
        true
    }

    fn measure_name(&mut self, n: &str, span: Span) -> Option<Size> {
        if n == self.kind.variable() || matches!(n, "pi" | "e") {
            return Some(Size::LEAF);
        }
        if let Some(entry) = self.scope.get(n) {
            return match &entry.def {
                Def::Param => Some(Size::LEAF),
                Def::Value(v) => v.map(|v| v.size),
            };
        }
        if let Some(def_span) = self.all.get(n) {
            self.diags.push(
                Diagnostic::error(format!("`{n}` is used before it is defined"))
                    .at(span)
                    .label("used here")
                    .note(*def_span, format!("`{n}` is defined later, here"))
                    .hint("move the definition above its first use"),
            );
            return None;
        }
        let mut d = Diagnostic::error(format!("unknown name `{n}`"))
            .at(span)
            .label("not defined");
        d = match did_you_mean(n, self.candidates()) {
            Some(h) => d.hint(h),
            None if Func::from_name(n).is_some() => {
                d.hint(format!("`{n}` is a function; call it as `{n}(…)`"))
            }
            None => d.hint(format!(
                "names are `{}`, `pi`, `e`, and params or lets defined above",
                self.kind.variable()
            )),
        };
        self.diags.push(d);
        None
    }

    /// Registers a definition, reporting reserved and duplicate names.
    fn define(
        &mut self,
        name: &str,
        name_span: Span,
        stmt_span: Span,
        def: Def<'p>,
        user_name: bool,
    ) {
        let reserved = self.kind.reserved();
        if user_name && (reserved.contains(&name) || Func::from_name(name).is_some()) {
            let listed: Vec<String> = reserved.iter().map(|r| format!("`{r}`")).collect();
            self.diags.push(
                Diagnostic::error(format!("`{name}` is a reserved name"))
                    .at(name_span)
                    .label("cannot be defined")
                    .hint(format!(
                        "pick another name; {} and function names are built in",
                        listed.join(", ")
                    )),
            );
            return;
        }
        if let Some(first) = self.scope.get(name) {
            self.diags.push(
                Diagnostic::error(format!("`{name}` is defined more than once"))
                    .at(name_span)
                    .label("defined again here")
                    .note(first.name_span, "first defined here"),
            );
            return;
        }
        self.order.push(name.to_string());
        self.scope.insert(
            name.to_string(),
            Entry {
                def,
                name_span,
                stmt_span,
            },
        );
    }

    /// Checks a definition and enforces [`MAX_NODES`] and [`MAX_INLINED_DEPTH`]
    /// on its size once its lets are inlined, before inlining anything.
    fn resolve_def(&mut self, name: &str, value: &'p Expr) -> Option<Value<'p>> {
        let mut uses = HashMap::new();
        let size = self.measure(value, &mut uses)?;
        if size.nodes <= MAX_NODES && size.depth <= MAX_INLINED_DEPTH {
            return Some(Value { body: value, size });
        }
        let what = if size.nodes > MAX_NODES {
            format!("{} nodes, more than the limit of {MAX_NODES}", size.nodes)
        } else {
            format!(
                "{} levels deep, more than the limit of {MAX_INLINED_DEPTH}",
                size.depth
            )
        };
        // The let that contributes most, to say where the size comes from.
        let biggest = uses
            .iter()
            .filter_map(
                |(n, &count)| match self.scope.get(n.as_str()).map(|e| e.def) {
                    Some(Def::Value(Some(v))) => {
                        Some((v.size.nodes.saturating_mul(count), n, count, v))
                    }
                    _ => None,
                },
            )
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
        let label = match biggest {
            Some((_, n, 1, v)) => format!(
                "uses `{n}` ({} nodes, {} levels) once",
                v.size.nodes, v.size.depth
            ),
            Some((_, n, count, v)) => format!(
                "uses `{n}` ({} nodes, {} levels) {count} times",
                v.size.nodes, v.size.depth
            ),
            None => "expands to a very large expression".to_string(),
        };
        self.diags.push(
            Diagnostic::error(format!(
                "`{name}` is too large once its lets are expanded: {what} (at most {MAX_NODES} nodes and {MAX_INLINED_DEPTH} levels)"
            ))
            .at(value.span)
            .label(label)
            .hint("lets are inlined: every use copies the whole definition; avoid using a large let many times"),
        );
        None
    }
}

/// Formats a value for messages: 6 significant decimals, trailing zeros removed.
fn fmt_val(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v != 0.0 && v.abs() < 1e-4 {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Like [`fmt_val`] with 10 decimals, to show small differences.
fn fmt_precise(v: f64) -> String {
    if !v.is_finite() || (v != 0.0 && v.abs() < 1e-4) {
        return fmt_val(v);
    }
    let s = format!("{v:.10}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn non_finite_word(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else {
        "infinite"
    }
}

/// Parses, checks, differentiates, simplifies and compiles a `.fm` source with
/// the given param overrides, collecting every diagnostic.
pub fn analyze(src: &str, overrides: &[(String, f64)]) -> Analysis {
    if let Some(d) = super::parser::source_too_large(src.len()) {
        return Analysis {
            compiled: None,
            diagnostics: vec![d],
        };
    }
    let (program, mut diags) = super::parser::parse_program(src);
    let (compiled, more) = check_program(&program, overrides);
    diags.extend(more);
    let has_error = diags.iter().any(Diagnostic::is_error);
    Analysis {
        compiled: if has_error { None } else { compiled },
        diagnostics: diags,
    }
}

/// Checks a parsed program; returns the compiled schedule when no error was found
/// by these checks (parse errors are the caller's to weigh).
pub fn check_program(
    program: &Program,
    overrides: &[(String, f64)],
) -> (Option<Compiled>, Vec<Diagnostic>) {
    let (r, params) = resolve(program, overrides, FileKind::Scheduler);
    compile_scheduler(r, params)
}

/// Resolves the names of `program` as a file of `kind` and applies the param
/// overrides. Returns the resolver (with its diagnostics) and the effective
/// params.
fn resolve<'p>(
    program: &'p Program,
    overrides: &[(String, f64)],
    kind: FileKind,
) -> (Resolver<'p>, Vec<(String, f64)>) {
    let mut all = HashMap::new();
    for s in &program.stmts {
        let id = stmt_name(s);
        all.entry(id.name.as_str()).or_insert(id.span);
    }
    let mut r = Resolver {
        kind,
        scope: HashMap::new(),
        order: Vec::new(),
        all,
        diags: Vec::new(),
    };
    let mut params: Vec<(String, f64)> = Vec::new();
    for s in &program.stmts {
        match s {
            Stmt::Param {
                name,
                value,
                value_span,
            } => {
                let before = r.order.len();
                r.define(
                    &name.name,
                    name.span,
                    name.span.to(*value_span),
                    Def::Param,
                    true,
                );
                if r.order.len() > before {
                    params.push((name.name.clone(), *value));
                }
            }
            Stmt::Let { name, value } => {
                let e = r.resolve_def(&name.name, value);
                r.define(
                    &name.name,
                    name.span,
                    name.span.to(value.span),
                    Def::Value(e),
                    true,
                );
            }
            Stmt::Assign { target, value } => {
                if !kind.targets().contains(&target.name.as_str()) {
                    r.diags.push(misplaced_target(kind, target));
                    continue;
                }
                let e = r.resolve_def(&target.name, value);
                r.define(
                    &target.name,
                    target.span,
                    target.span.to(value.span),
                    Def::Value(e),
                    false,
                );
            }
            Stmt::Broken { name } => {
                let user = !matches!(name.name.as_str(), "alpha" | "sigma" | "grid");
                r.define(&name.name, name.span, name.span, Def::Value(None), user);
            }
        }
    }
    for &target in kind.targets() {
        if !r.scope.contains_key(target) {
            let hint = match target {
                "alpha" => "every scheduler defines both alpha and sigma, e.g. `alpha = t`",
                "sigma" => "every scheduler defines both alpha and sigma, e.g. `sigma = 1 - t`",
                _ => "a grid file defines the time of each uniform position u, e.g. `grid = u^2`",
            };
            r.diags
                .push(Diagnostic::error(format!("`{target}` is never defined")).hint(hint));
        }
    }
    for (name, value) in overrides {
        let Some(slot) = params.iter_mut().find(|(p, _)| p == name) else {
            let names: Vec<&str> = params.iter().map(|(p, _)| p.as_str()).collect();
            let what_file = match kind {
                FileKind::Scheduler => "scheduler",
                FileKind::Grid => "grid",
            };
            let hint = did_you_mean(name, names.iter().copied()).or_else(|| {
                Some(if names.is_empty() {
                    format!("this {what_file} has no params")
                } else {
                    format!("its params are: {}", names.join(", "))
                })
            });
            let what = if r.scope.contains_key(name.as_str()) {
                format!("cannot override `{name}`: it is not a param")
            } else {
                format!("cannot override `{name}`: no such param")
            };
            r.diags.push(Diagnostic::error(what).maybe_hint(hint));
            continue;
        };
        if !value.is_finite() {
            let span = r.scope.get(name.as_str()).map(|e| e.stmt_span);
            let mut d = Diagnostic::error(format!(
                "cannot override `{name}` with {}: not a finite number",
                fmt_val(*value)
            ))
            .hint("param values must be finite");
            if let Some(s) = span {
                d = d.at(s).label("param declared here");
            }
            r.diags.push(d);
            continue;
        }
        slot.1 = *value;
    }
    (r, params)
}

/// The error for `alpha`/`sigma` in a grid file or `grid` in a scheduler.
fn misplaced_target(kind: FileKind, target: &super::ast::Ident) -> Diagnostic {
    let (label, hint) = match kind {
        FileKind::Scheduler => (
            "a scheduler defines alpha and sigma",
            "`grid = …` belongs in a time-grid file (used with --grid), not in a scheduler",
        ),
        FileKind::Grid => (
            "a grid file defines only `grid`",
            "alpha and sigma belong in a scheduler file; a grid maps u = i/N to the time t",
        ),
    };
    Diagnostic::error(format!("`{}` cannot be defined here", target.name))
        .at(target.span)
        .label(label)
        .hint(hint)
}

/// The scheduler part of [`check_program`]: α, σ and their derivatives
/// compiled and checked numerically.
fn compile_scheduler(
    mut r: Resolver<'_>,
    params: Vec<(String, f64)>,
) -> (Option<Compiled>, Vec<Diagnostic>) {
    if r.diags.iter().any(Diagnostic::is_error) {
        return (None, r.diags);
    }
    let (Some(alpha), Some(sigma)) = (r.scope.get("alpha"), r.scope.get("sigma")) else {
        return (None, r.diags);
    };
    let (Def::Value(Some(a)), Def::Value(Some(s))) = (&alpha.def, &sigma.def) else {
        return (None, r.diags);
    };
    let spans = [alpha.stmt_span, sigma.stmt_span];
    let a = simplify(&r.inline(a.body));
    let s = simplify(&r.inline(s.body));
    let da = derivative(&a);
    let ds = derivative(&s);
    let exprs = [a, s, da, ds];
    let lookup = |n: &str| params.iter().find(|(p, _)| p == n).map(|(_, v)| *v);
    let program = match Kernel::compile(&exprs, &lookup) {
        Ok(p) => p,
        Err(msg) => {
            r.diags.push(
                Diagnostic::error(format!("cannot compile α, σ, α', σ': {msg}"))
                    .at(spans[0].to(spans[1])),
            );
            return (None, r.diags);
        }
    };
    numeric_checks(&program, spans, &mut r.diags);
    let ok = !r.diags.iter().any(Diagnostic::is_error);
    let compiled = ok.then_some(Compiled {
        params,
        exprs,
        program,
    });
    (compiled, r.diags)
}

const QUANTITY: [&str; 4] = ["α", "σ", "α'", "σ'"];

fn numeric_checks(program: &Kernel, spans: [Span; 2], diags: &mut Vec<Diagnostic>) {
    let at = |t: f64| {
        let mut out = [0.0; 4];
        program.eval_into(t, &mut out);
        out
    };
    // Boundary values.
    for (k, t, want) in [(0, 0.0, 0.0), (1, 0.0, 1.0), (0, 1.0, 1.0), (1, 1.0, 0.0)] {
        let v = at(t)[k];
        let off = (v - want).abs();
        let q = QUANTITY[k];
        let head = format!(
            "{q}({}) = {}, expected {}",
            fmt_val(t),
            fmt_val(v),
            fmt_val(want)
        );
        if !off.is_finite() || off > BOUNDARY_ERROR {
            diags.push(
                Diagnostic::error(format!("wrong boundary value: {head}"))
                    .at(spans[k])
                    .label(format!("{q}({}) must be {}", fmt_val(t), fmt_val(want)))
                    .hint("paths start at noise (α(0) = 0, σ(0) = 1) and end at data (α(1) = 1, σ(1) = 0)"),
            );
        } else if off > BOUNDARY_WARNING {
            diags.push(
                Diagnostic::warning(format!("inexact boundary value: {head}"))
                    .at(spans[k])
                    .label(format!("off by {}", fmt_val(off)))
                    .hint(format!(
                        "accepted: within {BOUNDARY_ERROR} of the exact value; samples start (or end) slightly off the ideal path"
                    )),
            );
        }
    }
    // Endpoint derivatives.
    for k in [2, 3] {
        for t in [0.0, 1.0] {
            let v = at(t)[k];
            if !v.is_finite() {
                let q = QUANTITY[k];
                diags.push(
                    Diagnostic::warning(format!(
                        "{q} is {} at t = {}",
                        non_finite_word(v),
                        fmt_val(t)
                    ))
                    .at(spans[k % 2])
                    .label(format!("{q} is the derivative of this"))
                    .hint(format!(
                        "solvers and conversions must not evaluate {q} exactly at t = {}",
                        fmt_val(t)
                    )),
                );
            }
        }
    }
    // Interior finiteness.
    let mut interior_ok = [true; 4];
    for k in 0..4 {
        for i in 1..GRID {
            let t = i as f64 / GRID as f64;
            let v = at(t)[k];
            if !v.is_finite() {
                let q = QUANTITY[k];
                let mut d = Diagnostic::error(format!(
                    "{q} is {} at t = {}, inside (0, 1)",
                    non_finite_word(v),
                    fmt_val(t)
                ))
                .at(spans[k % 2]);
                d = d.label(if k >= 2 {
                    format!("{q} is the derivative of this")
                } else {
                    format!("{q} is defined here")
                });
                diags.push(
                    d.hint("schedules must be finite, with finite derivatives, on all of (0, 1)"),
                );
                interior_ok[k] = false;
                break;
            }
        }
    }
    // Monotone SNR.
    if interior_ok[0] && interior_ok[1] {
        let snr = |t: f64| {
            let q = at(t);
            q[0] / q[1]
        };
        let mut prev = snr(1.0 / GRID as f64);
        for i in 2..GRID {
            let t = i as f64 / GRID as f64;
            let cur = snr(t);
            if cur.partial_cmp(&prev) != Some(std::cmp::Ordering::Greater) {
                let t0 = (i - 1) as f64 / GRID as f64;
                diags.push(
                    Diagnostic::error(format!(
                        "the signal-to-noise ratio α/σ is not strictly increasing: it goes from {} at t = {} to {} at t = {}",
                        fmt_precise(prev),
                        fmt_val(t0),
                        fmt_precise(cur),
                        fmt_val(t)
                    ))
                    .at(spans[1])
                    .label("α/σ must increase with t")
                    .note(spans[0], "α is defined here")
                    .hint("the SNR must increase from noise to data (needed to change schedules)"),
                );
                break;
            }
            prev = cur;
        }
    }
}

/// A time grid that passed every check.
#[derive(Clone, Debug)]
pub struct CompiledGrid {
    /// Every param with its effective value, in source order.
    pub params: Vec<(String, f64)>,
    /// The simplified grid expression over `u` (params symbolic).
    pub expr: Expr,
    /// The expression compiled with the effective param values; its one
    /// output is t(u) (the kernel's variable is `u`).
    pub program: Kernel,
}

/// Everything [`analyze_grid`] found out about a grid source.
#[derive(Clone, Debug)]
pub struct GridAnalysis {
    /// The compiled grid, present exactly when there is no error.
    pub compiled: Option<CompiledGrid>,
    /// Every diagnostic, errors and warnings, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

/// Grid endpoints further than this from 0 and 1 are errors.
pub const GRID_ENDPOINT_ERROR: f64 = 1e-9;

/// Parses and checks a time-grid source (`grid = EXPR` over `u`, with params
/// and lets) with the given param overrides, collecting every diagnostic.
///
/// Numeric checks on u = i / [`GRID`], i = 0‥=GRID: t(0) = 0 and t(1) = 1
/// within [`GRID_ENDPOINT_ERROR`]; t finite everywhere; t strictly increasing
/// from each point to the next. Each is an error at the `grid` statement
/// naming the first u where it fails.
pub fn analyze_grid(src: &str, overrides: &[(String, f64)]) -> GridAnalysis {
    if let Some(d) = super::parser::source_too_large(src.len()) {
        return GridAnalysis {
            compiled: None,
            diagnostics: vec![d],
        };
    }
    let (program, mut diags) = super::parser::parse_program(src);
    let (r, params) = resolve(&program, overrides, FileKind::Grid);
    let (compiled, more) = compile_grid(r, params);
    diags.extend(more);
    let has_error = diags.iter().any(Diagnostic::is_error);
    GridAnalysis {
        compiled: if has_error { None } else { compiled },
        diagnostics: diags,
    }
}

fn compile_grid(
    mut r: Resolver<'_>,
    params: Vec<(String, f64)>,
) -> (Option<CompiledGrid>, Vec<Diagnostic>) {
    if r.diags.iter().any(Diagnostic::is_error) {
        return (None, r.diags);
    }
    let Some(entry) = r.scope.get("grid") else {
        return (None, r.diags);
    };
    let (Def::Value(Some(g)), span) = (&entry.def, entry.stmt_span) else {
        return (None, r.diags);
    };
    let expr = simplify(&r.inline(g.body));
    // The kernel's variable is `t`; a grid's is `u`.
    let lookup = |n: &str| params.iter().find(|(p, _)| p == n).map(|(_, v)| *v);
    let program = match Kernel::compile(&[rename(&expr, "u", "t")], &lookup) {
        Ok(p) => p,
        Err(msg) => {
            r.diags
                .push(Diagnostic::error(format!("cannot compile the grid: {msg}")).at(span));
            return (None, r.diags);
        }
    };
    grid_checks(&program, span, &mut r.diags);
    let ok = !r.diags.iter().any(Diagnostic::is_error);
    let compiled = ok.then_some(CompiledGrid {
        params,
        expr,
        program,
    });
    (compiled, r.diags)
}

/// `e` with every name `from` replaced by `to`.
fn rename(e: &Expr, from: &str, to: &str) -> Expr {
    let kind = match &e.kind {
        ExprKind::Num(v) => ExprKind::Num(*v),
        ExprKind::Name(n) if n == from => ExprKind::Name(to.to_string()),
        ExprKind::Name(n) => ExprKind::Name(n.clone()),
        ExprKind::Neg(a) => ExprKind::Neg(Box::new(rename(a, from, to))),
        ExprKind::Binary(op, a, b) => ExprKind::Binary(
            *op,
            Box::new(rename(a, from, to)),
            Box::new(rename(b, from, to)),
        ),
        ExprKind::Call {
            name,
            name_span,
            args,
        } => ExprKind::Call {
            name: name.clone(),
            name_span: *name_span,
            args: args.iter().map(|a| rename(a, from, to)).collect(),
        },
    };
    Expr { kind, span: e.span }
}

fn grid_checks(program: &Kernel, span: Span, diags: &mut Vec<Diagnostic>) {
    let at = |u: f64| {
        let mut out = [0.0];
        program.eval_into(u, &mut out);
        out[0]
    };
    let mut ok = true;
    for (u, want) in [(0.0, 0.0), (1.0, 1.0)] {
        let v = at(u);
        let off = (v - want).abs();
        if off.is_nan() || off > GRID_ENDPOINT_ERROR {
            diags.push(
                Diagnostic::error(format!(
                    "wrong endpoint: t({}) = {}, expected {}",
                    fmt_val(u),
                    fmt_precise(v),
                    fmt_val(want)
                ))
                .at(span)
                .label(format!("t({}) must be {}", fmt_val(u), fmt_val(want)))
                .hint("a grid runs from the noise (t(0) = 0) to the data (t(1) = 1)"),
            );
            ok = false;
        }
    }
    for i in 1..GRID {
        let u = i as f64 / GRID as f64;
        let v = at(u);
        if !v.is_finite() {
            diags.push(
                Diagnostic::error(format!(
                    "t is {} at u = {}, inside (0, 1)",
                    non_finite_word(v),
                    fmt_val(u)
                ))
                .at(span)
                .label("t(u) is defined here")
                .hint("a grid must be finite on all of [0, 1]"),
            );
            return;
        }
    }
    if !ok {
        return;
    }
    let mut prev = at(0.0);
    for i in 1..=GRID {
        let u = i as f64 / GRID as f64;
        let cur = at(u);
        if cur.partial_cmp(&prev) != Some(std::cmp::Ordering::Greater) {
            diags.push(
                Diagnostic::error(format!(
                    "the grid is not strictly increasing: t goes from {} at u = {} to {} at u = {}",
                    fmt_precise(prev),
                    fmt_val((i - 1) as f64 / GRID as f64),
                    fmt_precise(cur),
                    fmt_val(u)
                ))
                .at(span)
                .label("t(u) must increase with u")
                .hint("steps go forward in time: every step must end after it starts"),
            );
            return;
        }
        prev = cur;
    }
}
