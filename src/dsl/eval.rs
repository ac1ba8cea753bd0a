//! Fast evaluation: expressions compiled to a flat postfix tape.
//!
//! A [`Tape`] is a list of stack-machine instructions with every param already
//! replaced by its value. [`Tape::eval`] runs it on a fixed-size stack array that
//! lives on the call stack: no allocation, no locking; tapes are `Send + Sync`.
//! [`eval_tree`] is a slow tree walker used as a reference in tests.

use super::ast::{BinOp, Expr, ExprKind, Func};

/// The most stack slots a tape may need; deeper expressions fail to compile.
pub const STACK_SIZE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Const(f64),
    T,
    Neg,
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Call(Func),
}

/// A compiled expression of one variable `t`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tape {
    ops: Vec<Op>,
    /// Stack slots the tape needs (at most [`STACK_SIZE`]).
    depth: usize,
}

/// Looks up the value of a name other than `t`, `pi` and `e` (a param).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<f64>;

fn constant(name: &str, lookup: Lookup) -> Option<f64> {
    match name {
        "pi" => Some(std::f64::consts::PI),
        "e" => Some(std::f64::consts::E),
        _ => lookup(name),
    }
}

impl Tape {
    /// Compiles `e`. Fails (with a message) on a name `lookup` does not know, an
    /// unknown function or wrong argument count, or an expression needing more
    /// than [`STACK_SIZE`] stack slots.
    pub fn compile(e: &Expr, lookup: Lookup) -> Result<Tape, String> {
        let mut ops = Vec::new();
        let depth = emit(e, lookup, &mut ops)?;
        if depth > STACK_SIZE {
            return Err(format!(
                "expression needs {depth} evaluation stack slots, more than the {STACK_SIZE} supported"
            ));
        }
        Ok(Tape { ops, depth })
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the tape is empty (never true for a compiled tape).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Evaluates the expression at `t`. Does not allocate: the stack is an array
    /// on the call stack, sized to the tape (8, 16 or [`STACK_SIZE`] slots).
    pub fn eval(&self, t: f64) -> f64 {
        match self.depth {
            0..=8 => self.run::<8>(t),
            9..=16 => self.run::<16>(t),
            _ => self.run::<STACK_SIZE>(t),
        }
    }

    fn run<const N: usize>(&self, t: f64) -> f64 {
        let mut stack = [0.0f64; N];
        let mut sp = 0usize;
        for op in &self.ops {
            match *op {
                Op::Const(v) => {
                    stack[sp] = v;
                    sp += 1;
                }
                Op::T => {
                    stack[sp] = t;
                    sp += 1;
                }
                Op::Neg => stack[sp - 1] = -stack[sp - 1],
                Op::Call(f) => stack[sp - 1] = f.apply1(stack[sp - 1]),
                Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow => {
                    sp -= 1;
                    let b = stack[sp];
                    let a = stack[sp - 1];
                    stack[sp - 1] = match *op {
                        Op::Add => a + b,
                        Op::Sub => a - b,
                        Op::Mul => a * b,
                        Op::Div => a / b,
                        _ => a.powf(b),
                    };
                }
            }
        }
        stack[0]
    }
}

/// Appends the postfix code of `e`; returns the stack depth it needs.
fn emit(e: &Expr, lookup: Lookup, ops: &mut Vec<Op>) -> Result<usize, String> {
    match &e.kind {
        ExprKind::Num(v) => {
            ops.push(Op::Const(*v));
            Ok(1)
        }
        ExprKind::Name(n) if n == "t" => {
            ops.push(Op::T);
            Ok(1)
        }
        ExprKind::Name(n) => {
            let v = constant(n, lookup).ok_or_else(|| format!("unknown name `{n}`"))?;
            ops.push(Op::Const(v));
            Ok(1)
        }
        ExprKind::Neg(a) => {
            let d = emit(a, lookup, ops)?;
            ops.push(Op::Neg);
            Ok(d)
        }
        ExprKind::Binary(op, a, b) => {
            let da = emit(a, lookup, ops)?;
            let db = emit(b, lookup, ops)?;
            ops.push(binop(*op));
            Ok(da.max(db + 1))
        }
        ExprKind::Call { name, args, .. } => {
            let f = Func::from_name(name).ok_or_else(|| format!("unknown function `{name}`"))?;
            if args.len() != f.arity() {
                return Err(format!("`{name}` takes {} argument(s)", f.arity()));
            }
            if f == Func::Pow {
                let da = emit(&args[0], lookup, ops)?;
                let db = emit(&args[1], lookup, ops)?;
                ops.push(Op::Pow);
                Ok(da.max(db + 1))
            } else {
                let d = emit(&args[0], lookup, ops)?;
                ops.push(Op::Call(f));
                Ok(d)
            }
        }
    }
}

fn binop(op: BinOp) -> Op {
    match op {
        BinOp::Add => Op::Add,
        BinOp::Sub => Op::Sub,
        BinOp::Mul => Op::Mul,
        BinOp::Div => Op::Div,
        BinOp::Pow => Op::Pow,
    }
}

/// Evaluates `e` at `t` by walking the tree (reference implementation; slow).
/// Unknown names and malformed calls evaluate to NaN.
pub fn eval_tree(e: &Expr, t: f64, lookup: Lookup) -> f64 {
    match &e.kind {
        ExprKind::Num(v) => *v,
        ExprKind::Name(n) if n == "t" => t,
        ExprKind::Name(n) => constant(n, lookup).unwrap_or(f64::NAN),
        ExprKind::Neg(a) => -eval_tree(a, t, lookup),
        ExprKind::Binary(op, a, b) => {
            let (a, b) = (eval_tree(a, t, lookup), eval_tree(b, t, lookup));
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                BinOp::Pow => a.powf(b),
            }
        }
        ExprKind::Call { name, args, .. } => match (Func::from_name(name), args.as_slice()) {
            (Some(Func::Pow), [a, b]) => eval_tree(a, t, lookup).powf(eval_tree(b, t, lookup)),
            (Some(f), [a]) if f.arity() == 1 => f.apply1(eval_tree(a, t, lookup)),
            _ => f64::NAN,
        },
    }
}
