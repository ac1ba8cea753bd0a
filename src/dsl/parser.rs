//! The `.fm` parser (nom 8), following `grammar/fm.ebnf` rule by rule.
//!
//! The parser works one line at a time, so a mistake on one line does not hide
//! mistakes on the others. Every node gets the byte span of its text. While
//! parsing, spans are recorded as "bytes left until the end of the source" (all
//! that nom's `&str` input knows) and converted to offsets once a line is done.

use super::ast::{BinOp, Expr, ExprKind, Ident, Program, Span, Stmt};
use super::diag::{did_you_mean, Diagnostic};
use nom::bytes::complete::take_while;
use nom::character::complete::{char, digit1, satisfy};
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

/// Deepest expression accepted, in levels of its tree: a left-deep chain of N
/// operations (`t + t + … + t`) is N levels deep, and so are N nested
/// parentheses, unary minuses, exponents or calls. Checked while parsing, on the
/// way down (nesting) and on the tree as it is built, so no later pass (the
/// checks, the derivative, the simplifier, the kernel, dropping the tree) ever
/// sees a deeper tree; the same limit holds after lets are inlined.
pub const MAX_DEPTH: usize = 256;

/// Largest expression accepted, in nodes (numbers, names, operators and calls),
/// one statement at a time; the same limit holds after lets are inlined.
pub const MAX_NODES: usize = 5000;

/// Largest `.fm` source accepted, in bytes (1 MiB); checked before parsing.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// A parse error; positions are "bytes left" until [`PErr::into_diagnostic`].
#[derive(Debug)]
struct PErr {
    rest: usize,
    len: usize,
    text: Box<PErrText>,
}

#[derive(Debug)]
struct PErrText {
    message: String,
    label: Option<String>,
    hint: Option<String>,
}

impl PErr {
    fn at(input: &str, message: impl Into<String>) -> PErr {
        PErr {
            rest: input.len(),
            len: token_len(input),
            text: Box::new(PErrText {
                message: message.into(),
                label: None,
                hint: None,
            }),
        }
    }

    fn label(mut self, l: impl Into<String>) -> PErr {
        self.text.label = Some(l.into());
        self
    }

    fn hint(mut self, h: impl Into<String>) -> PErr {
        self.text.hint = Some(h.into());
        self
    }

    fn len(mut self, len: usize) -> PErr {
        self.len = len;
        self
    }

    fn into_diagnostic(self, total: usize) -> Diagnostic {
        let start = total - self.rest;
        let text = *self.text;
        let mut d = Diagnostic::error(text.message).at(Span::new(start, start + self.len));
        d.label = text.label;
        d.hint = text.hint;
        d
    }
}

impl ParseError<&str> for PErr {
    fn from_error_kind(input: &str, _kind: ErrorKind) -> Self {
        PErr::at(input, format!("unexpected {}", describe(input)))
    }

    fn append(_input: &str, _kind: ErrorKind, other: Self) -> Self {
        other
    }

    fn or(self, other: Self) -> Self {
        // Keep the error that got further into the input.
        if other.rest < self.rest {
            other
        } else {
            self
        }
    }
}

type Res<'a, T> = IResult<&'a str, T, PErr>;

/// An expression being parsed, with the depth and node count of its tree.
struct Node {
    expr: Expr,
    depth: usize,
    nodes: usize,
}

impl Node {
    fn leaf(kind: ExprKind, span: Span) -> Node {
        Node {
            expr: Expr { kind, span },
            depth: 1,
            nodes: 1,
        }
    }

    /// Depth and node count.
    fn size(&self) -> (usize, usize) {
        (self.depth, self.nodes)
    }

    /// A node over children of the given sizes, refused when it would make the tree deeper than
    /// [`MAX_DEPTH`] or larger than [`MAX_NODES`]; `at` is the input where the
    /// operator (or call) that makes it starts, for the diagnostic.
    fn over(
        at: &str,
        children: &[(usize, usize)],
        build: impl FnOnce() -> Expr,
    ) -> Result<Node, nom::Err<PErr>> {
        let depth = 1 + children.iter().map(|c| c.0).max().unwrap_or(0);
        let nodes = 1 + children.iter().map(|c| c.1).sum::<usize>();
        if depth > MAX_DEPTH {
            return Err(nom::Err::Failure(
                PErr::at(at, format!("expression too deep: more than {MAX_DEPTH} levels"))
                    .label(format!("here the expression gets more than {MAX_DEPTH} levels deep"))
                    .hint(format!(
                        "a chain of N operations is N levels deep; group terms with parentheses, e.g. `(a + b) + (c + d)` (the limit is {MAX_DEPTH} levels)"
                    )),
            ));
        }
        if nodes > MAX_NODES {
            return Err(nom::Err::Failure(
                PErr::at(at, format!("expression too large: more than {MAX_NODES} nodes"))
                    .label(format!("here the expression gets more than {MAX_NODES} nodes"))
                    .hint(format!(
                        "numbers, names, operators and calls count as one node each; at most {MAX_NODES} per expression"
                    )),
            ));
        }
        Ok(Node {
            expr: build(),
            depth,
            nodes,
        })
    }
}

fn binary_node(
    at: &str,
    op: BinOp,
    lhs: Node,
    rhs: Node,
    span: Span,
) -> Result<Node, nom::Err<PErr>> {
    Node::over(at, &[lhs.size(), rhs.size()], || Expr {
        kind: ExprKind::Binary(op, Box::new(lhs.expr), Box::new(rhs.expr)),
        span,
    })
}

fn fail<T>(e: PErr) -> Res<'static, T> {
    Err(nom::Err::Failure(e))
}

/// Raw span: bytes left before and after the node.
fn raw(before: &str, after: &str) -> Span {
    Span::new(before.len(), after.len())
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Length in bytes of the token at the start of `input` (at least one character
/// unless the input is at the end of a line).
fn token_len(input: &str) -> usize {
    let mut chars = input.char_indices();
    match chars.next() {
        None | Some((_, '\n')) | Some((_, '\r')) => 0,
        Some((_, c)) if is_ident_char(c) || c == '.' => input
            .find(|c: char| !(is_ident_char(c) || c == '.'))
            .unwrap_or(input.len()),
        Some((_, c)) => c.len_utf8(),
    }
}

/// A human description of what comes next: "`foo`" or "end of line".
fn describe(input: &str) -> String {
    match input.chars().next() {
        None | Some('\n') | Some('\r') | Some('#') => "end of line".to_string(),
        _ => format!("`{}`", &input[..token_len(input)]),
    }
}

/// `ws`: spaces, tabs and carriage returns (never newlines).
fn ws(i: &str) -> &str {
    let r: Res<&str> = take_while(|c: char| c == ' ' || c == '\t' || c == '\r').parse(i);
    match r {
        Ok((rest, _)) => rest,
        Err(_) => i,
    }
}

/// `name = letter_or_underscore { letter_or_underscore | digit }`
fn ident(i: &str) -> Res<'_, Ident> {
    let (rest, _) = satisfy(is_ident_start).parse(i)?;
    let (rest, _) = take_while(is_ident_char).parse(rest)?;
    let name = &i[..i.len() - rest.len()];
    Ok((
        rest,
        Ident {
            name: name.to_string(),
            span: raw(i, rest),
        },
    ))
}

/// `number = digits [ "." digits ] [ ("e" | "E") [ "+" | "-" ] digits`
///
/// A leading or trailing decimal point (`.5`, `1.`) is rejected, as is a number
/// run together with letters or another point (`1.2.3`, `3x`).
fn number(i: &str) -> Res<'_, (f64, Span)> {
    let malformed_len = i
        .find(|c: char| !(is_ident_char(c) || c == '.'))
        .unwrap_or(i.len());
    let malformed = |msg: &str| {
        PErr::at(i, format!("malformed number `{}`", &i[..malformed_len]))
            .len(malformed_len)
            .label(msg.to_string())
    };
    if let Some(after) = i.strip_prefix('.') {
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            return fail(
                malformed("a number must start with a digit")
                    .hint(format!("write `0{}`", &i[..malformed_len])),
            );
        }
    }
    let (mut rest, _) = digit1(i)?;
    if let Some(after) = rest.strip_prefix('.') {
        match digit1::<&str, PErr>(after) {
            Ok((r, _)) => rest = r,
            Err(_) => {
                return fail(
                    malformed("a decimal point must be followed by digits")
                        .hint("write `1.0` or `1`, not `1.`"),
                )
            }
        }
    }
    if let Some(after) = rest.strip_prefix(['e', 'E']) {
        let after = after.strip_prefix(['+', '-']).unwrap_or(after);
        match digit1::<&str, PErr>(after) {
            Ok((r, _)) => rest = r,
            Err(_) => {
                return fail(
                    malformed("the exponent has no digits")
                        .hint("write exponents like `1e-3`; to multiply by e write `2 * e`"),
                )
            }
        }
    }
    if rest.starts_with(|c: char| is_ident_char(c) || c == '.') {
        return fail(
            malformed("unexpected characters in a number")
                .hint("numbers look like `2`, `0.5`, `1e-3` or `2.5E+2`; use `*` to multiply"),
        );
    }
    let text = &i[..i.len() - rest.len()];
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok((rest, (v, raw(i, rest)))),
        _ => fail(malformed("the number is too large for an f64")),
    }
}

/// `expr = term { ("+" | "-") term }`
fn expr(i: &str, depth: usize) -> Res<'_, Node> {
    let (mut rest, mut lhs) = term(i, depth)?;
    loop {
        let j = ws(rest);
        let op = match j.chars().next() {
            Some('+') => BinOp::Add,
            Some('-') => BinOp::Sub,
            _ => return Ok((rest, lhs)),
        };
        let (r, rhs) = term(&j[1..], depth)?;
        let span = raw_cover(lhs.expr.span, rhs.expr.span);
        lhs = binary_node(j, op, lhs, rhs, span)?;
        rest = r;
    }
}

/// `term = unary { ("*" | "/") unary }`
fn term(i: &str, depth: usize) -> Res<'_, Node> {
    let (mut rest, mut lhs) = unary(i, depth)?;
    loop {
        let j = ws(rest);
        let op = match j.chars().next() {
            Some('*') => BinOp::Mul,
            Some('/') => BinOp::Div,
            _ => return Ok((rest, lhs)),
        };
        let (r, rhs) = unary(&j[1..], depth)?;
        let span = raw_cover(lhs.expr.span, rhs.expr.span);
        lhs = binary_node(j, op, lhs, rhs, span)?;
        rest = r;
    }
}

/// Covers two raw spans (raw spans count bytes left, so larger means earlier).
fn raw_cover(a: Span, b: Span) -> Span {
    Span::new(a.start.max(b.start), a.end.min(b.end))
}

/// `unary = "-" unary | power`
fn unary(i: &str, depth: usize) -> Res<'_, Node> {
    let i = ws(i);
    if depth > MAX_DEPTH {
        return fail(
            PErr::at(i, "expression nested too deeply")
                .label(format!("more than {MAX_DEPTH} levels of nesting")),
        );
    }
    if let Ok((r, _)) = char::<&str, PErr>('-')(i) {
        let (rest, inner) = unary(r, depth + 1)?;
        let span = raw(i, rest);
        let node = Node::over(i, &[inner.size()], || Expr {
            kind: ExprKind::Neg(Box::new(inner.expr)),
            span,
        })?;
        return Ok((rest, node));
    }
    power(i, depth)
}

/// `power = primary [ "^" unary ]` (right-associative; `-t^2` is `-(t^2)`)
fn power(i: &str, depth: usize) -> Res<'_, Node> {
    let (rest, base) = primary(i, depth)?;
    let j = ws(rest);
    if let Ok((r, _)) = char::<&str, PErr>('^')(j) {
        let (rest, exp) = unary(r, depth + 1)?;
        let span = raw(i, rest);
        return Ok((rest, binary_node(j, BinOp::Pow, base, exp, span)?));
    }
    Ok((rest, base))
}

/// `primary = number | call | name | "(" expr ")"`;
/// `call = name "(" [ expr { "," expr } ] ")"`
fn primary(i: &str, depth: usize) -> Res<'_, Node> {
    let i = ws(i);
    let c = i.chars().next();
    match c {
        Some(c) if c.is_ascii_digit() || c == '.' => {
            let (rest, (v, span)) = match number(i) {
                Ok(x) => x,
                Err(nom::Err::Error(_)) => {
                    return fail(PErr::at(
                        i,
                        format!("expected an expression, found {}", describe(i)),
                    ))
                }
                Err(e) => return Err(e),
            };
            Ok((rest, Node::leaf(ExprKind::Num(v), span)))
        }
        Some(c) if is_ident_start(c) => {
            let (rest, id) = ident(i)?;
            let j = ws(rest);
            if let Some(mut r) = j.strip_prefix('(') {
                let mut args = Vec::new();
                if let Some(r2) = ws(r).strip_prefix(')') {
                    r = r2;
                } else {
                    loop {
                        let (r2, a) = expr(r, depth + 1)?;
                        args.push(a);
                        let r2 = ws(r2);
                        if let Some(r3) = r2.strip_prefix(',') {
                            r = r3;
                        } else if let Some(r3) = r2.strip_prefix(')') {
                            r = r3;
                            break;
                        } else {
                            return fail(
                                PErr::at(
                                    r2,
                                    format!(
                                        "expected `,` or `)` in the arguments of `{}`, found {}",
                                        id.name,
                                        describe(r2)
                                    ),
                                )
                                .label("expected `,` or `)`")
                                .hint("every `(` needs a matching `)`"),
                            );
                        }
                    }
                }
                let span = raw(i, r);
                let sizes: Vec<(usize, usize)> = args.iter().map(Node::size).collect();
                let node = Node::over(i, &sizes, || Expr {
                    kind: ExprKind::Call {
                        name: id.name,
                        name_span: id.span,
                        args: args.into_iter().map(|a| a.expr).collect(),
                    },
                    span,
                })?;
                return Ok((r, node));
            }
            Ok((rest, Node::leaf(ExprKind::Name(id.name), id.span)))
        }
        Some('(') => {
            let (r, inner) = expr(&i[1..], depth + 1)?;
            let r2 = ws(r);
            match r2.strip_prefix(')') {
                Some(rest) => Ok((
                    rest,
                    Node {
                        expr: Expr {
                            kind: inner.expr.kind,
                            span: raw(i, rest),
                        },
                        ..inner
                    },
                )),
                None => fail(
                    PErr::at(i, "unbalanced parenthesis: this `(` is never closed")
                        .len(1)
                        .label("unclosed `(`")
                        .hint(format!("expected `)`, found {}", describe(r2))),
                ),
            }
        }
        _ => fail(
            PErr::at(i, format!("expected an expression, found {}", describe(i)))
                .label("expected a number, a name, a function call or `(`"),
        ),
    }
}

/// `end_of_line = [ comment ] ( newline | end of input )`, after a statement.
fn end_of_line(i: &str) -> Result<(), PErr> {
    let j = ws(i);
    match j.chars().next() {
        None | Some('\n') | Some('#') => Ok(()),
        Some(')') => {
            Err(PErr::at(j, "unbalanced parenthesis: unexpected `)`").label("no `(` to match this"))
        }
        _ => Err(PErr::at(
            j,
            format!("unexpected {} after the end of the statement", describe(j)),
        )
        .label("expected the end of the line")
        .hint("write one statement per line; use an operator such as `*` to combine terms")),
    }
}

/// `"="` after a statement head.
fn equals<'a>(i: &'a str, what: &str) -> Result<&'a str, PErr> {
    let j = ws(i);
    j.strip_prefix('=').ok_or_else(|| {
        PErr::at(
            j,
            format!("expected `=` after {what}, found {}", describe(j)),
        )
        .label("expected `=`")
    })
}

/// `statement = param_stmt | let_stmt | assign_stmt`
///
/// On failure also returns the name the statement would have defined, when its
/// head was understood.
fn statement(i: &str) -> Result<Stmt, (PErr, Option<Ident>)> {
    let head = match ident(i) {
        Ok((rest, id)) => (rest, id),
        Err(_) => {
            return Err((
                PErr::at(i, format!("expected a statement, found {}", describe(i)))
                    .label("expected `param`, `let`, `alpha` or `sigma`"),
                None,
            ))
        }
    };
    let (rest, kw) = head;
    match kw.name.as_str() {
        "param" => param_stmt(rest, &kw),
        "let" => let_stmt(rest),
        "alpha" | "sigma" | "grid" => assign_stmt(rest, kw),
        _ => {
            let is_assign = ws(rest).starts_with('=');
            let mut e = if is_assign {
                PErr::at(i, format!("unknown statement `{} = …`", kw.name))
                    .label("only `alpha` and `sigma` can be assigned")
            } else {
                PErr::at(i, format!("expected a statement, found `{}`", kw.name))
                    .label("expected `param`, `let`, `alpha` or `sigma`")
            };
            let hint = did_you_mean(&kw.name, ["alpha", "sigma", "param", "let"]);
            // A misspelt `alpha =` / `sigma =` still counts as that definition, so
            // the file is not also reported as missing it.
            let meant = ["alpha", "sigma"]
                .into_iter()
                .find(|t| is_assign && hint.as_deref() == Some(&format!("did you mean `{t}`?")))
                .map(|t| Ident {
                    name: t.to_string(),
                    span: kw.span,
                });
            e = match (hint, is_assign) {
                (Some(h), _) => e.hint(h),
                (None, true) => e.hint(format!("define helpers with `let {} = …`", kw.name)),
                (None, false) => e,
            };
            Err((e, meant))
        }
    }
}

/// `param_stmt = "param" name "=" [ "-" ] number`
fn param_stmt(i: &str, kw: &Ident) -> Result<Stmt, (PErr, Option<Ident>)> {
    let i = ws(i);
    let (rest, name) = ident(i).map_err(|_| {
        (
            PErr::at(
                i,
                format!(
                    "expected a parameter name after `param`, found {}",
                    describe(i)
                ),
            )
            .label("expected a name"),
            None,
        )
    })?;
    let _ = kw;
    let broken = |e: PErr| (e, Some(name.clone()));
    let rest = equals(rest, &format!("`param {}`", name.name)).map_err(broken)?;
    let j = ws(rest);
    let (neg, k) = match j.strip_prefix('-') {
        Some(k) => (true, ws(k)),
        None => (false, j),
    };
    let (rest, (v, _)) = match number(k) {
        Ok(x) => x,
        Err(nom::Err::Failure(e)) => return Err(broken(e)),
        Err(_) => {
            return Err(broken(
                PErr::at(k, format!("expected a number, found {}", describe(k)))
                    .label("a param's default must be a plain number")
                    .hint("compute derived values with `let`"),
            ))
        }
    };
    if let Err(e) = end_of_line(rest) {
        let j = ws(rest);
        if j.starts_with(')') {
            return Err(broken(e));
        }
        return Err(broken(
            PErr::at(j, "a param's value must be a single number")
                .label("expected the end of the line")
                .hint(format!(
                    "compute derived values with `let`, e.g. `let m = {} + 1`",
                    name.name
                )),
        ));
    }
    Ok(Stmt::Param {
        name: name.clone(),
        value: if neg { -v } else { v },
        value_span: raw(j, rest),
    })
}

/// `let_stmt = "let" name "=" expr`
fn let_stmt(i: &str) -> Result<Stmt, (PErr, Option<Ident>)> {
    let i = ws(i);
    let (rest, name) = ident(i).map_err(|_| {
        (
            PErr::at(
                i,
                format!("expected a name after `let`, found {}", describe(i)),
            )
            .label("expected a name"),
            None,
        )
    })?;
    let broken = |e: PErr| (e, Some(name.clone()));
    let rest = equals(rest, &format!("`let {}`", name.name)).map_err(broken)?;
    let (_, value) = full_expr(rest).map_err(broken)?;
    Ok(Stmt::Let {
        name: name.clone(),
        value,
    })
}

/// `assign_stmt = ("alpha" | "sigma" | "grid") "=" expr`
fn assign_stmt(i: &str, target: Ident) -> Result<Stmt, (PErr, Option<Ident>)> {
    let broken = |e: PErr| (e, Some(target.clone()));
    let rest = equals(i, &format!("`{}`", target.name)).map_err(broken)?;
    let (_, value) = full_expr(rest).map_err(broken)?;
    Ok(Stmt::Assign {
        target: target.clone(),
        value,
    })
}

/// An expression that must be followed by the end of the line.
fn full_expr(i: &str) -> Result<(&str, Expr), PErr> {
    let (rest, e) = match expr(i, 0) {
        Ok((rest, node)) => (rest, node.expr),
        Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => return Err(e),
        Err(nom::Err::Incomplete(_)) => return Err(PErr::at(i, "incomplete expression")),
    };
    end_of_line(rest)?;
    Ok((rest, e))
}

fn fix_span(s: &mut Span, total: usize) {
    *s = Span::new(total - s.start, total - s.end);
}

fn fix_expr(e: &mut Expr, total: usize) {
    fix_span(&mut e.span, total);
    match &mut e.kind {
        ExprKind::Num(_) | ExprKind::Name(_) => {}
        ExprKind::Neg(a) => fix_expr(a, total),
        ExprKind::Binary(_, a, b) => {
            fix_expr(a, total);
            fix_expr(b, total);
        }
        ExprKind::Call {
            name_span, args, ..
        } => {
            fix_span(name_span, total);
            for a in args {
                fix_expr(a, total);
            }
        }
    }
}

fn fix_stmt(s: &mut Stmt, total: usize) {
    match s {
        Stmt::Param {
            name, value_span, ..
        } => {
            fix_span(&mut name.span, total);
            fix_span(value_span, total);
        }
        Stmt::Let { name, value } => {
            fix_span(&mut name.span, total);
            fix_expr(value, total);
        }
        Stmt::Assign { target, value } => {
            fix_span(&mut target.span, total);
            fix_expr(value, total);
        }
        Stmt::Broken { name } => fix_span(&mut name.span, total),
    }
}

/// The error for a source of `len` bytes when that is more than
/// [`MAX_SOURCE_BYTES`].
pub fn source_too_large(len: usize) -> Option<Diagnostic> {
    (len > MAX_SOURCE_BYTES).then(|| {
        Diagnostic::error(format!(
            "the source is too large: {len} bytes, more than the limit of 1 MiB ({MAX_SOURCE_BYTES} bytes)"
        ))
        .hint("a scheduler is a few lines of `.fm`")
    })
}

/// Parses a whole file: `program = { line }`, `line = [ statement ] [ comment ] newline`.
///
/// Returns every statement that parsed (plus [`Stmt::Broken`] placeholders) and
/// one diagnostic per line that did not. A source of more than
/// [`MAX_SOURCE_BYTES`] is not parsed: it gives one error and no statements. An
/// expression deeper than [`MAX_DEPTH`] or larger than [`MAX_NODES`] is an error
/// on its line, found before its tree is complete.
pub fn parse_program(src: &str) -> (Program, Vec<Diagnostic>) {
    if let Some(d) = source_too_large(src.len()) {
        return (Program::default(), vec![d]);
    }
    let total = src.len();
    let mut program = Program::default();
    let mut diags = Vec::new();
    let mut pos = 0;
    while pos <= total {
        let line_end = src[pos..].find('\n').map_or(total, |k| pos + k);
        let rest = ws(&src[pos..]);
        let blank = rest.is_empty() || rest.starts_with('\n') || rest.starts_with('#');
        if !blank {
            match statement(rest) {
                Ok(mut s) => {
                    fix_stmt(&mut s, total);
                    program.stmts.push(s);
                }
                Err((e, name)) => {
                    diags.push(e.into_diagnostic(total));
                    if let Some(name) = name {
                        let mut s = Stmt::Broken { name };
                        fix_stmt(&mut s, total);
                        program.stmts.push(s);
                    }
                }
            }
        }
        pos = line_end + 1;
    }
    (program, diags)
}

/// Parses a single expression occupying all of `src` (surrounding spaces allowed).
pub fn parse_expr(src: &str) -> Result<Expr, Box<Diagnostic>> {
    if let Some(d) = source_too_large(src.len()) {
        return Err(Box::new(d));
    }
    let total = src.len();
    let (rest, mut e) = full_expr(src).map_err(|e| Box::new(e.into_diagnostic(total)))?;
    if !rest.trim().is_empty() {
        return Err(Box::new(
            PErr::at(rest, "unexpected text after the expression").into_diagnostic(total),
        ));
    }
    fix_expr(&mut e, total);
    Ok(e)
}
