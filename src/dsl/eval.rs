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

/// The most registers a [`Kernel`] may use; larger programs fail to compile.
pub const MAX_REGISTERS: usize = 1024;

/// A node of the shared expression graph (hash-consed, so equal subtrees of all
/// outputs are one node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Node {
    Const(u64),
    T,
    Neg(usize),
    Bin(u8, usize, usize),
    Call(u8, usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Inst {
    Const { dst: u16, v: f64 },
    T { dst: u16 },
    Neg { dst: u16, a: u16 },
    Bin { op: BinOp, dst: u16, a: u16, b: u16 },
    Call { f: Func, dst: u16, a: u16 },
}

/// Several expressions of `t` compiled together: common subexpressions (across
/// all outputs) are computed once, into registers reused after their last use.
///
/// [`Kernel::eval_into`] runs on a register array on the call stack (16, 64,
/// 256 or [`MAX_REGISTERS`] slots, whichever fits): no allocation, and results
/// bit-identical to [`eval_tree`] (same operations in the same order).
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    insts: Vec<Inst>,
    registers: usize,
    outputs: Vec<u16>,
}

const FUNCS: [Func; 9] = Func::ALL;
const BINOPS: [BinOp; 5] = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Pow];

struct Graph {
    nodes: Vec<Node>,
    ids: std::collections::HashMap<Node, usize>,
}

impl Graph {
    fn intern(&mut self, n: Node) -> usize {
        if let Some(&id) = self.ids.get(&n) {
            return id;
        }
        self.nodes.push(n);
        self.ids.insert(n, self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    fn add(&mut self, e: &Expr, lookup: Lookup) -> Result<usize, String> {
        let node = match &e.kind {
            ExprKind::Num(v) => Node::Const(v.to_bits()),
            ExprKind::Name(n) if n == "t" => Node::T,
            ExprKind::Name(n) => {
                let v = constant(n, lookup).ok_or_else(|| format!("unknown name `{n}`"))?;
                Node::Const(v.to_bits())
            }
            ExprKind::Neg(a) => Node::Neg(self.add(a, lookup)?),
            ExprKind::Binary(op, a, b) => {
                let a = self.add(a, lookup)?;
                let b = self.add(b, lookup)?;
                Node::Bin(BINOPS.iter().position(|o| o == op).unwrap_or(0) as u8, a, b)
            }
            ExprKind::Call { name, args, .. } => {
                let f =
                    Func::from_name(name).ok_or_else(|| format!("unknown function `{name}`"))?;
                match (f, args.as_slice()) {
                    (Func::Pow, [a, b]) => {
                        let a = self.add(a, lookup)?;
                        let b = self.add(b, lookup)?;
                        Node::Bin(4, a, b)
                    }
                    (_, [a]) if f != Func::Pow => {
                        let a = self.add(a, lookup)?;
                        Node::Call(FUNCS.iter().position(|g| *g == f).unwrap_or(0) as u8, a)
                    }
                    _ => return Err(format!("`{name}` takes {} argument(s)", f.arity())),
                }
            }
        };
        Ok(self.intern(node))
    }
}

impl Kernel {
    /// Compiles `exprs` (params looked up with `lookup`) into one program with
    /// `exprs.len()` outputs.
    pub fn compile(exprs: &[Expr], lookup: Lookup) -> Result<Kernel, String> {
        let mut g = Graph {
            nodes: Vec::new(),
            ids: std::collections::HashMap::new(),
        };
        let mut roots = Vec::with_capacity(exprs.len());
        for e in exprs {
            roots.push(g.add(e, lookup)?);
        }
        // Last instruction reading each node; outputs live to the end.
        let n = g.nodes.len();
        let mut last_use = vec![0usize; n];
        for (i, node) in g.nodes.iter().enumerate() {
            match *node {
                Node::Neg(a) | Node::Call(_, a) => last_use[a] = i,
                Node::Bin(_, a, b) => {
                    last_use[a] = i;
                    last_use[b] = i;
                }
                Node::Const(_) | Node::T => {}
            }
        }
        for &r in &roots {
            last_use[r] = usize::MAX;
        }
        let mut reg = vec![0u16; n];
        let mut free: Vec<u16> = Vec::new();
        let mut registers = 0usize;
        let mut insts = Vec::with_capacity(n);
        for (i, node) in g.nodes.iter().enumerate() {
            // Operands whose last use is this node free their registers first, so
            // the result may overwrite one of them.
            let operands: &[usize] = match node {
                Node::Neg(a) | Node::Call(_, a) => &[*a],
                Node::Bin(_, a, b) if a == b => &[*a],
                Node::Bin(_, a, b) => &[*a, *b],
                _ => &[],
            };
            for &o in operands {
                if last_use[o] == i {
                    free.push(reg[o]);
                }
            }
            let dst = match free.pop() {
                Some(r) => r,
                None => {
                    registers += 1;
                    if registers > MAX_REGISTERS {
                        return Err(format!(
                            "the expressions need more than {MAX_REGISTERS} registers"
                        ));
                    }
                    (registers - 1) as u16
                }
            };
            reg[i] = dst;
            insts.push(match *node {
                Node::Const(bits) => Inst::Const {
                    dst,
                    v: f64::from_bits(bits),
                },
                Node::T => Inst::T { dst },
                Node::Neg(a) => Inst::Neg { dst, a: reg[a] },
                Node::Bin(op, a, b) => Inst::Bin {
                    op: BINOPS[op as usize],
                    dst,
                    a: reg[a],
                    b: reg[b],
                },
                Node::Call(f, a) => Inst::Call {
                    f: FUNCS[f as usize],
                    dst,
                    a: reg[a],
                },
            });
        }
        Ok(Kernel {
            insts,
            registers,
            outputs: roots.iter().map(|&r| reg[r]).collect(),
        })
    }

    /// Number of instructions (one per distinct subexpression).
    pub fn len(&self) -> usize {
        self.insts.len()
    }

    /// Whether the program has no instructions (only when compiled from no expressions).
    pub fn is_empty(&self) -> bool {
        self.insts.is_empty()
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.outputs.len()
    }

    /// Evaluates every output at `t` into `out` (extra outputs or extra slots of
    /// `out` are left alone). Does not allocate.
    pub fn eval_into(&self, t: f64, out: &mut [f64]) {
        match self.registers {
            0..=16 => self.run::<16>(t, out),
            17..=64 => self.run::<64>(t, out),
            65..=256 => self.run::<256>(t, out),
            _ => self.run::<MAX_REGISTERS>(t, out),
        }
    }

    fn run<const N: usize>(&self, t: f64, out: &mut [f64]) {
        let mut r = [0.0f64; N];
        for inst in &self.insts {
            match *inst {
                Inst::Const { dst, v } => r[dst as usize] = v,
                Inst::T { dst } => r[dst as usize] = t,
                Inst::Neg { dst, a } => r[dst as usize] = -r[a as usize],
                Inst::Call { f, dst, a } => r[dst as usize] = f.apply1(r[a as usize]),
                Inst::Bin { op, dst, a, b } => {
                    let (x, y) = (r[a as usize], r[b as usize]);
                    r[dst as usize] = match op {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        BinOp::Div => x / y,
                        BinOp::Pow => x.powf(y),
                    };
                }
            }
        }
        for (o, &reg) in out.iter_mut().zip(&self.outputs) {
            *o = r[reg as usize];
        }
    }
}
