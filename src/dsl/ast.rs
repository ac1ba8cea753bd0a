//! The syntax tree of a `.fm` file.
//!
//! Every node keeps the byte range of the source text it came from ([`Span`]).
//! Trees built by the derivative and the simplifier carry [`Span::default`].

/// A half-open byte range `start..end` into the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte of the range.
    pub start: usize,
    /// One past the last byte of the range.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `a ^ b` (right-associative)
    Pow,
}

impl BinOp {
    /// The operator's symbol in source text.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
        }
    }
}

/// A built-in function of the language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `sin(x)`
    Sin,
    /// `cos(x)`
    Cos,
    /// `tan(x)`
    Tan,
    /// `exp(x)`
    Exp,
    /// `log(x)`, the natural logarithm.
    Log,
    /// `sqrt(x)`
    Sqrt,
    /// `tanh(x)`
    Tanh,
    /// `sigmoid(x) = 1 / (1 + exp(-x))`
    Sigmoid,
    /// `pow(x, y) = x ^ y`
    Pow,
}

impl Func {
    /// Every function, in the order the documentation lists them.
    pub const ALL: [Func; 9] = [
        Func::Sin,
        Func::Cos,
        Func::Tan,
        Func::Exp,
        Func::Log,
        Func::Sqrt,
        Func::Tanh,
        Func::Sigmoid,
        Func::Pow,
    ];

    /// The function's name in source text.
    pub fn name(self) -> &'static str {
        match self {
            Func::Sin => "sin",
            Func::Cos => "cos",
            Func::Tan => "tan",
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Sqrt => "sqrt",
            Func::Tanh => "tanh",
            Func::Sigmoid => "sigmoid",
            Func::Pow => "pow",
        }
    }

    /// The function called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    /// How many arguments the function takes.
    pub fn arity(self) -> usize {
        match self {
            Func::Pow => 2,
            _ => 1,
        }
    }

    /// Applies a one-argument function (`pow` is handled as `x ^ y` by callers).
    pub fn apply1(self, x: f64) -> f64 {
        match self {
            Func::Sin => x.sin(),
            Func::Cos => x.cos(),
            Func::Tan => x.tan(),
            Func::Exp => x.exp(),
            Func::Log => x.ln(),
            Func::Sqrt => x.sqrt(),
            Func::Tanh => x.tanh(),
            Func::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Func::Pow => f64::NAN,
        }
    }
}

/// The shape of an expression node.
#[derive(Clone, Debug)]
pub enum ExprKind {
    /// A non-negative literal such as `2.5e-3` (a leading minus is [`ExprKind::Neg`]).
    Num(f64),
    /// A name: `t`, `pi`, `e`, a param, a let, `alpha` or `sigma`.
    Name(String),
    /// Unary minus.
    Neg(Box<Expr>),
    /// A binary operation.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A function call; the name is kept as written so unknown names can be reported.
    Call {
        /// The function name as written.
        name: String,
        /// Where the name is.
        name_span: Span,
        /// The arguments, in order.
        args: Vec<Expr>,
    },
}

/// An expression with its source span.
#[derive(Clone, Debug)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Where it came from ([`Span::default`] for generated nodes).
    pub span: Span,
}

impl Expr {
    /// A node without a source position.
    pub fn new(kind: ExprKind) -> Expr {
        Expr {
            kind,
            span: Span::default(),
        }
    }

    /// A literal.
    pub fn num(v: f64) -> Expr {
        Expr::new(ExprKind::Num(v))
    }

    /// A name.
    pub fn name(n: &str) -> Expr {
        Expr::new(ExprKind::Name(n.to_string()))
    }

    /// A binary node.
    pub fn binary(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::new(ExprKind::Binary(op, Box::new(a), Box::new(b)))
    }

    /// A negation.
    pub fn negate(a: Expr) -> Expr {
        Expr::new(ExprKind::Neg(Box::new(a)))
    }

    /// A call of a known function.
    pub fn call(f: Func, args: Vec<Expr>) -> Expr {
        Expr::new(ExprKind::Call {
            name: f.name().to_string(),
            name_span: Span::default(),
            args,
        })
    }

    /// Structural equality ignoring spans (literals compare bit for bit).
    pub fn same_tree(&self, other: &Expr) -> bool {
        match (&self.kind, &other.kind) {
            (ExprKind::Num(a), ExprKind::Num(b)) => a.to_bits() == b.to_bits(),
            (ExprKind::Name(a), ExprKind::Name(b)) => a == b,
            (ExprKind::Neg(a), ExprKind::Neg(b)) => a.same_tree(b),
            (ExprKind::Binary(o1, a1, b1), ExprKind::Binary(o2, a2, b2)) => {
                o1 == o2 && a1.same_tree(a2) && b1.same_tree(b2)
            }
            (
                ExprKind::Call {
                    name: n1, args: a1, ..
                },
                ExprKind::Call {
                    name: n2, args: a2, ..
                },
            ) => n1 == n2 && a1.len() == a2.len() && a1.iter().zip(a2).all(|(x, y)| x.same_tree(y)),
            _ => false,
        }
    }

    /// Whether the expression mentions the name `name` anywhere.
    pub fn mentions(&self, name: &str) -> bool {
        match &self.kind {
            ExprKind::Num(_) => false,
            ExprKind::Name(n) => n == name,
            ExprKind::Neg(a) => a.mentions(name),
            ExprKind::Binary(_, a, b) => a.mentions(name) || b.mentions(name),
            ExprKind::Call { args, .. } => args.iter().any(|a| a.mentions(name)),
        }
    }
}

/// A name together with where it was written.
#[derive(Clone, Debug)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Its position.
    pub span: Span,
}

/// One statement (one line) of a `.fm` file.
#[derive(Clone, Debug)]
pub enum Stmt {
    /// `param NAME = number`
    Param {
        /// The parameter's name.
        name: Ident,
        /// Its default value.
        value: f64,
        /// Where the value is written.
        value_span: Span,
    },
    /// `let NAME = expr`
    Let {
        /// The helper's name.
        name: Ident,
        /// Its definition.
        value: Expr,
    },
    /// `alpha = expr`, `sigma = expr` or `grid = expr`; `target.name` is
    /// `alpha`, `sigma` or `grid`.
    Assign {
        /// `alpha`, `sigma` or `grid`, with the keyword's span.
        target: Ident,
        /// The definition.
        value: Expr,
    },
    /// A statement whose head was understood but whose rest failed to parse; it
    /// still defines its name so later uses do not cascade into more errors.
    Broken {
        /// The name the statement would have defined.
        name: Ident,
    },
}

/// A parsed `.fm` file.
#[derive(Clone, Debug, Default)]
pub struct Program {
    /// The statements in source order.
    pub stmts: Vec<Stmt>,
}
