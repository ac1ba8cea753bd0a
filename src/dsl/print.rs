//! Printing expressions as `.fm` source.
//!
//! The output parses back to the same tree (modulo spans) and uses the fewest
//! parentheses the grammar allows: `+ -` (left-assoc) < `* /` (left-assoc) <
//! unary minus < `^` (right-assoc, base must be a primary, exponent a unary).
//! Binary operators are surrounded by spaces except `^`.

use super::ast::{BinOp, Expr, ExprKind};
use std::fmt::Write as _;

/// Precedence levels of the grammar, loosest first.
const SUM: u8 = 1;
const PRODUCT: u8 = 2;
const UNARY: u8 = 3;
const POWER: u8 = 4;
const PRIMARY: u8 = 5;

fn level(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Num(v) if *v < 0.0 || (*v == 0.0 && v.is_sign_negative()) => UNARY,
        ExprKind::Num(_) | ExprKind::Name(_) | ExprKind::Call { .. } => PRIMARY,
        ExprKind::Neg(_) => UNARY,
        ExprKind::Binary(BinOp::Add | BinOp::Sub, ..) => SUM,
        ExprKind::Binary(BinOp::Mul | BinOp::Div, ..) => PRODUCT,
        ExprKind::Binary(BinOp::Pow, ..) => POWER,
    }
}

/// Formats a literal so that the lexer reads back exactly the same f64.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-5..1e16).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// Prints `e` as `.fm` source.
pub fn print(e: &Expr) -> String {
    let mut s = String::new();
    write_expr(&mut s, e);
    s
}

fn write_child(out: &mut String, e: &Expr, min_level: u8) {
    if level(e) < min_level {
        out.push('(');
        write_expr(out, e);
        out.push(')');
    } else {
        write_expr(out, e);
    }
}

fn write_expr(out: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Num(v) => out.push_str(&format_number(*v)),
        ExprKind::Name(n) => out.push_str(n),
        ExprKind::Neg(a) => {
            out.push('-');
            write_child(out, a, UNARY);
        }
        ExprKind::Binary(op, a, b) => {
            let (left, right) = match op {
                BinOp::Add | BinOp::Sub => (SUM, PRODUCT),
                BinOp::Mul | BinOp::Div => (PRODUCT, UNARY),
                BinOp::Pow => (PRIMARY, UNARY),
            };
            write_child(out, a, left);
            if *op == BinOp::Pow {
                out.push('^');
            } else {
                let _ = write!(out, " {} ", op.symbol());
            }
            write_child(out, b, right);
        }
        ExprKind::Call { name, args, .. } => {
            out.push_str(name);
            out.push('(');
            for (k, a) in args.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                write_expr(out, a);
            }
            out.push(')');
        }
    }
}
