//! Symbolic differentiation with respect to `t`.
//!
//! The input is an *inlined* expression: lets, `alpha` and `sigma` have already
//! been replaced by their definitions (see `check`), so the chain rule through
//! them is just the chain rule through the substituted tree. The only names left
//! are `t` (derivative 1) and constants — `pi`, `e` and params (derivative 0).
//!
//! The result is built with the simplifying constructors, so trivial terms
//! (`0 * x`, `x * 1`, …) never appear; `u / c` and `u ^ c` with `c` free of `t`
//! use the short rules `u' / c` and `c * u^(c - 1) * u'`.

use super::ast::{BinOp, Expr, ExprKind, Func};
use super::simplify::{add, as_const, call, div, mul, neg, num, pow, sub};

/// Whether `e` depends on `t`.
pub fn depends_on_t(e: &Expr) -> bool {
    e.mentions("t")
}

/// d`e`/dt. Calls of unknown functions or with the wrong number of arguments
/// (which the checks reject before this runs) differentiate to NaN.
pub fn derivative(e: &Expr) -> Expr {
    match &e.kind {
        ExprKind::Num(_) => num(0.0),
        ExprKind::Name(n) => num(if n == "t" { 1.0 } else { 0.0 }),
        ExprKind::Neg(a) => neg(derivative(a)),
        ExprKind::Binary(op, a, b) => binary(*op, a, b),
        ExprKind::Call { name, args, .. } => match (Func::from_name(name), args.as_slice()) {
            (Some(Func::Pow), [a, b]) => power(a, b),
            (Some(f), [a]) if f.arity() == 1 => chain(f, a),
            _ => Expr::num(f64::NAN),
        },
    }
}

fn binary(op: BinOp, a: &Expr, b: &Expr) -> Expr {
    match op {
        BinOp::Add => add(derivative(a), derivative(b)),
        BinOp::Sub => sub(derivative(a), derivative(b)),
        BinOp::Mul => {
            let da = derivative(a);
            let db = derivative(b);
            add(mul(da, b.clone()), mul(a.clone(), db))
        }
        BinOp::Div => {
            let da = derivative(a);
            if !depends_on_t(b) {
                return div(da, b.clone());
            }
            let db = derivative(b);
            div(
                sub(mul(da, b.clone()), mul(a.clone(), db)),
                pow(b.clone(), num(2.0)),
            )
        }
        BinOp::Pow => power(a, b),
    }
}

/// d(a^b)/dt.
fn power(a: &Expr, b: &Expr) -> Expr {
    let a_t = depends_on_t(a);
    let b_t = depends_on_t(b);
    match (a_t, b_t) {
        (false, false) => num(0.0),
        // c * a^(c-1) * a'
        (true, false) => {
            let c1 = match as_const(b) {
                Some(c) => num(c - 1.0),
                None => sub(b.clone(), num(1.0)),
            };
            mul(mul(b.clone(), pow(a.clone(), c1)), derivative(a))
        }
        // a^b * ln(a) * b'
        (false, true) => mul(
            mul(pow(a.clone(), b.clone()), call(Func::Log, vec![a.clone()])),
            derivative(b),
        ),
        // a^b * (b' ln a + b a' / a)
        (true, true) => mul(
            pow(a.clone(), b.clone()),
            add(
                mul(derivative(b), call(Func::Log, vec![a.clone()])),
                div(mul(b.clone(), derivative(a)), a.clone()),
            ),
        ),
    }
}

/// d f(a)/dt = f'(a) · a'.
fn chain(f: Func, a: &Expr) -> Expr {
    let da = derivative(a);
    let a1 = || a.clone();
    let outer = match f {
        Func::Sin => call(Func::Cos, vec![a1()]),
        Func::Cos => neg(call(Func::Sin, vec![a1()])),
        Func::Tan => div(num(1.0), pow(call(Func::Cos, vec![a1()]), num(2.0))),
        Func::Exp => call(Func::Exp, vec![a1()]),
        Func::Log => return div(da, a1()),
        Func::Sqrt => return div(da, mul(num(2.0), call(Func::Sqrt, vec![a1()]))),
        Func::Tanh => sub(num(1.0), pow(call(Func::Tanh, vec![a1()]), num(2.0))),
        Func::Sigmoid => mul(
            call(Func::Sigmoid, vec![a1()]),
            sub(num(1.0), call(Func::Sigmoid, vec![a1()])),
        ),
        Func::Pow => return Expr::num(f64::NAN),
    };
    mul(outer, da)
}
