//! Algebraic simplification.
//!
//! The smart constructors ([`add`], [`sub`], [`mul`], [`div`], [`pow`], [`neg`],
//! [`call`]) apply local rules as they build a node; [`simplify`] rebuilds a whole
//! tree through them, bottom-up. Rules:
//!
//! - constant folding of literals (only when the result is finite, so the printed
//!   form always parses back);
//! - `x + 0 = 0 + x = x`, `x - 0 = x`, `0 - x = -x`, `x + -y = x - y`, `x - -y = x + y`;
//! - `x * 1 = 1 * x = x`, `x * 0 = 0 * x = 0`, `x / 1 = x`, `0 / x = 0`,
//!   `-1 * x = -x`; a negation is pulled out of products and quotients;
//! - literal factors move to the front and merge: `x * 2 = 2 * x`,
//!   `2 * (3 * x) = 6 * x`, `(2 * x) / (4 * y) = 0.5 * (x / y)`, `(2 * x) / 4 = 0.5 * x`;
//! - `x ^ 1 = x`, `x ^ 0 = 1`, `1 ^ x = 1`;
//! - `--x = x`.
//!
//! `x * 0 = 0` and `0 / x = 0` assume x is finite, as usual in symbolic algebra;
//! the numeric checks run on the simplified expressions, so they judge what is
//! actually evaluated.
//!
//! Negative literals are kept in the canonical form `-(positive literal)` so that
//! printed output parses back to the same tree.

use super::ast::{BinOp, Expr, ExprKind, Func};

/// The value of a literal, looking through one negation.
pub fn as_const(e: &Expr) -> Option<f64> {
    match &e.kind {
        ExprKind::Num(v) => Some(*v),
        ExprKind::Neg(a) => match a.kind {
            ExprKind::Num(v) => Some(-v),
            _ => None,
        },
        _ => None,
    }
}

/// A literal in canonical form (negative values become `-(|v|)`).
pub fn num(v: f64) -> Expr {
    if v < 0.0 {
        Expr::negate(Expr::num(-v))
    } else {
        Expr::num(v + 0.0)
    }
}

fn is(e: &Expr, v: f64) -> bool {
    as_const(e) == Some(v)
}

fn fold(v: f64) -> Option<Expr> {
    v.is_finite().then(|| num(v))
}

fn strip_neg(e: Expr) -> Result<Expr, Expr> {
    match e.kind {
        ExprKind::Neg(a) if as_const(&a).is_none() => Ok(*a),
        kind => Err(Expr { kind, span: e.span }),
    }
}

/// `-a`, simplified.
pub fn neg(a: Expr) -> Expr {
    if let Some(v) = as_const(&a) {
        return num(-v);
    }
    match a.kind {
        ExprKind::Neg(inner) => *inner,
        kind => Expr::negate(Expr { kind, span: a.span }),
    }
}

/// `a + b`, simplified.
pub fn add(a: Expr, b: Expr) -> Expr {
    if let (Some(x), Some(y)) = (as_const(&a), as_const(&b)) {
        if let Some(e) = fold(x + y) {
            return e;
        }
    }
    if is(&a, 0.0) {
        return b;
    }
    if is(&b, 0.0) {
        return a;
    }
    if let Some(y) = as_const(&b).filter(|y| *y < 0.0) {
        return Expr::binary(BinOp::Sub, a, num(-y));
    }
    match strip_neg(b) {
        Ok(inner) => Expr::binary(BinOp::Sub, a, inner),
        Err(b) => Expr::binary(BinOp::Add, a, b),
    }
}

/// `a - b`, simplified.
pub fn sub(a: Expr, b: Expr) -> Expr {
    if let (Some(x), Some(y)) = (as_const(&a), as_const(&b)) {
        if let Some(e) = fold(x - y) {
            return e;
        }
    }
    if is(&b, 0.0) {
        return a;
    }
    if is(&a, 0.0) {
        return neg(b);
    }
    if let Some(y) = as_const(&b).filter(|y| *y < 0.0) {
        return Expr::binary(BinOp::Add, a, num(-y));
    }
    match strip_neg(b) {
        Ok(inner) => Expr::binary(BinOp::Add, a, inner),
        Err(b) => Expr::binary(BinOp::Sub, a, b),
    }
}

/// `a * b`, simplified.
pub fn mul(a: Expr, b: Expr) -> Expr {
    if let (Some(x), Some(y)) = (as_const(&a), as_const(&b)) {
        if let Some(e) = fold(x * y) {
            return e;
        }
    }
    if is(&a, 0.0) || is(&b, 0.0) {
        return num(0.0);
    }
    if is(&a, 1.0) {
        return b;
    }
    if is(&b, 1.0) {
        return a;
    }
    if is(&a, -1.0) {
        return neg(b);
    }
    if is(&b, -1.0) {
        return neg(a);
    }
    if let Some(x) = as_const(&a).filter(|x| *x < 0.0) {
        return neg(mul(num(-x), b));
    }
    if let Some(y) = as_const(&b).filter(|y| *y < 0.0) {
        return neg(mul(a, num(-y)));
    }
    // Literal factors go first and merge: `x * c = c * x`, `c1 * (c2 * x) = (c1 c2) * x`.
    if as_const(&b).is_some() && as_const(&a).is_none() {
        return mul(b, a);
    }
    if let (Some(c1), ExprKind::Binary(BinOp::Mul, l, r)) = (as_const(&a), &b.kind) {
        if let Some(c2) = as_const(l) {
            if (c1 * c2).is_finite() {
                return mul(num(c1 * c2), (**r).clone());
            }
        }
    }
    match (strip_neg(a), strip_neg(b)) {
        (Ok(x), Ok(y)) => mul(x, y),
        (Ok(x), Err(y)) | (Err(x), Ok(y)) => neg(mul(x, y)),
        (Err(x), Err(y)) => Expr::binary(BinOp::Mul, x, y),
    }
}

/// `a / b`, simplified.
pub fn div(a: Expr, b: Expr) -> Expr {
    if let (Some(x), Some(y)) = (as_const(&a), as_const(&b)) {
        if let Some(e) = fold(x / y) {
            return e;
        }
    }
    if is(&a, 0.0) && !is(&b, 0.0) {
        return num(0.0);
    }
    if is(&b, 1.0) {
        return a;
    }
    if is(&b, -1.0) {
        return neg(a);
    }
    if let Some(x) = as_const(&a).filter(|x| *x < 0.0) {
        return neg(div(num(-x), b));
    }
    // `(c1 * x) / (c2 * y) = (c1 / c2) * (x / y)`, `(c1 * x) / c2 = (c1 / c2) * x`.
    if let ExprKind::Binary(BinOp::Mul, l, x) = &a.kind {
        if let Some(c1) = as_const(l) {
            let (c2, y) = match &b.kind {
                ExprKind::Binary(BinOp::Mul, l2, y) => (as_const(l2), Some(y)),
                _ => (as_const(&b), None),
            };
            if let Some(c2) = c2.filter(|c2| (c1 / c2).is_finite() && c1 / c2 != 0.0) {
                let x = (**x).clone();
                return match y {
                    Some(y) => mul(num(c1 / c2), div(x, (**y).clone())),
                    None => mul(num(c1 / c2), x),
                };
            }
        }
    }
    if let Some(y) = as_const(&b).filter(|y| *y < 0.0) {
        return neg(div(a, num(-y)));
    }
    match (strip_neg(a), strip_neg(b)) {
        (Ok(x), Ok(y)) => div(x, y),
        (Ok(x), Err(y)) | (Err(x), Ok(y)) => neg(div(x, y)),
        (Err(x), Err(y)) => Expr::binary(BinOp::Div, x, y),
    }
}

/// `a ^ b`, simplified.
pub fn pow(a: Expr, b: Expr) -> Expr {
    if let (Some(x), Some(y)) = (as_const(&a), as_const(&b)) {
        if let Some(e) = fold(x.powf(y)) {
            return e;
        }
    }
    if is(&b, 1.0) {
        return a;
    }
    if is(&b, 0.0) || is(&a, 1.0) {
        return num(1.0);
    }
    Expr::binary(BinOp::Pow, a, b)
}

/// A call of `f`, folded when every argument is a literal.
pub fn call(f: Func, args: Vec<Expr>) -> Expr {
    let consts: Vec<f64> = args.iter().filter_map(as_const).collect();
    if consts.len() == args.len() && args.len() == f.arity() {
        let v = match f {
            Func::Pow => consts[0].powf(consts[1]),
            _ => f.apply1(consts[0]),
        };
        if let Some(e) = fold(v) {
            return e;
        }
    }
    Expr::call(f, args)
}

/// Applies the binary smart constructor for `op`.
pub fn binary(op: BinOp, a: Expr, b: Expr) -> Expr {
    match op {
        BinOp::Add => add(a, b),
        BinOp::Sub => sub(a, b),
        BinOp::Mul => mul(a, b),
        BinOp::Div => div(a, b),
        BinOp::Pow => pow(a, b),
    }
}

/// Rebuilds `e` bottom-up through the smart constructors. Spans are dropped.
/// Calls of unknown functions are kept as they are.
pub fn simplify(e: &Expr) -> Expr {
    match &e.kind {
        ExprKind::Num(v) => num(*v),
        ExprKind::Name(n) => Expr::name(n),
        ExprKind::Neg(a) => neg(simplify(a)),
        ExprKind::Binary(op, a, b) => binary(*op, simplify(a), simplify(b)),
        ExprKind::Call { name, args, .. } => {
            let args: Vec<Expr> = args.iter().map(simplify).collect();
            match Func::from_name(name) {
                Some(f) => call(f, args),
                None => Expr::new(ExprKind::Call {
                    name: name.clone(),
                    name_span: Default::default(),
                    args,
                }),
            }
        }
    }
}
