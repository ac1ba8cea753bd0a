//! Rules for elementwise operators: the product and quotient rules (Mul, Div,
//! Pow), the activations (the rectifiers, the smooth unary functions, Gelu and
//! the hard sigmoids), and the selections Clip, Max/Min and Where.

use std::f64::consts::PI;

use super::{one, Builder, Ctx, Out, RuleResult};
use crate::graph::proto::{AttributeProto, NodeProto};

/// Mul: the product rule.
pub(super) fn mul(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let a = cx.a;
    let bb = cx.input(1).unwrap_or("");
    let r = match (cx.t(0), cx.t(1)) {
        (Some(ad), Some(bd)) => {
            let p = b.op2("Mul", &ad, bb);
            let q = b.op2("Mul", a, &bd);
            b.op2("Add", &p, &q)
        }
        (Some(ad), None) => b.op2("Mul", &ad, bb),
        (None, Some(bd)) => b.op2("Mul", a, &bd),
        (None, None) => return Ok(vec![Out::Zero]),
    };
    one(r)
}

/// Div: the quotient rule.
pub(super) fn div(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let y = cx.y;
    let bb = cx.input(1).unwrap_or("");
    let quotient_term = |b: &mut Builder, bd: &str| {
        let p = b.op2("Mul", y, bd);
        b.op2("Div", &p, bb)
    };
    let r = match (cx.t(0), cx.t(1)) {
        (Some(ad), Some(bd)) => {
            let p = b.op2("Div", &ad, bb);
            let q = quotient_term(b, &bd);
            b.op2("Sub", &p, &q)
        }
        (Some(ad), None) => b.op2("Div", &ad, bb),
        (None, Some(bd)) => {
            let q = quotient_term(b, &bd);
            b.op1("Neg", &q)
        }
        (None, None) => return Ok(vec![Out::Zero]),
    };
    one(r)
}

/// Pow: through the base and through the exponent.
pub(super) fn pow(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let y = cx.y;
    let a = cx.a;
    let dt = cx.dt;
    let e = cx.input(1).unwrap_or("");
    let mut terms = Vec::new();
    if let Some(ad) = cx.t(0) {
        // d(a^e) = e·a^(e−1)·da
        let e_dt = b.emit("Cast", &[e], vec![AttributeProto::int("to", dt as i64)]);
        let one_c = b.scalar(dt, 1.0);
        let em1 = b.op2("Sub", &e_dt, &one_c);
        let p = b.op2("Pow", a, &em1);
        let q = b.op2("Mul", &p, &e_dt);
        terms.push(b.op2("Mul", &q, &ad));
    }
    if let Some(ed) = cx.t(1) {
        // d(a^e) = a^e·ln a·de
        let l = b.op1("Log", a);
        let p = b.op2("Mul", y, &l);
        terms.push(b.op2("Mul", &p, &ed));
    }
    let mut r = terms.pop().ok_or("no varying input")?;
    for s in terms {
        r = b.op2("Add", &s, &r);
    }
    one(b.expand_like(&r, y))
}

/// Relu, LeakyRelu, PRelu and Elu: the tangent where the input is positive,
/// the negative branch's derivative times it elsewhere.
pub(super) fn rectifier(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let op = cx.op;
    let node = cx.node;
    let y = cx.y;
    let a = cx.a;
    let dt = cx.dt;
    let ad = cx.only_first("the slope")?;
    let zero = b.scalar(dt, 0.0);
    let pos = b.op2("Greater", a, &zero);
    let neg = match op {
        "Relu" => zero,
        "LeakyRelu" => {
            let alpha = b.scalar(dt, node.attr_f("alpha", 0.01) as f64);
            b.op2("Mul", &ad, &alpha)
        }
        "PRelu" => b.op2("Mul", &ad, cx.input(1).unwrap_or("")),
        _ => {
            let alpha = b.scalar(dt, node.attr_f("alpha", 1.0) as f64);
            let s = b.op2("Add", y, &alpha);
            b.op2("Mul", &ad, &s)
        }
    };
    let w = b.emit("Where", &[&pos, &ad, &neg], vec![]);
    one(b.expand_like(&w, y))
}

/// Smooth (or almost everywhere smooth) unary functions: the tangent times the
/// derivative, written in terms of the input `a` or the output `y`.
pub(super) fn activation(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let op = cx.op;
    let node = cx.node;
    let y = cx.y;
    let a = cx.a;
    let dt = cx.dt;
    let ad = cx.only_first("")?;
    let d = match op {
        "Sigmoid" => {
            let one_c = b.scalar(dt, 1.0);
            let c = b.op2("Sub", &one_c, y);
            b.op2("Mul", y, &c)
        }
        "Tanh" => {
            let one_c = b.scalar(dt, 1.0);
            let sq = b.op2("Mul", y, y);
            b.op2("Sub", &one_c, &sq)
        }
        "Exp" => y.to_string(),
        "Log" => return one(b.op2("Div", &ad, a)),
        "Sqrt" => {
            let two = b.scalar(dt, 2.0);
            let den = b.op2("Mul", y, &two);
            return one(b.op2("Div", &ad, &den));
        }
        "Reciprocal" => {
            let sq = b.op2("Mul", y, y);
            let p = b.op2("Mul", &ad, &sq);
            return one(b.op1("Neg", &p));
        }
        "Erf" => {
            let c = b.scalar(dt, 2.0 / PI.sqrt());
            let sq = b.op2("Mul", a, a);
            let n = b.op1("Neg", &sq);
            let e = b.op1("Exp", &n);
            b.op2("Mul", &e, &c)
        }
        "Softplus" => b.op1("Sigmoid", a),
        "Sin" => b.op1("Cos", a),
        "Cos" => {
            let s = b.op1("Sin", a);
            b.op1("Neg", &s)
        }
        "Abs" => b.op1("Sign", a),
        "Tan" => {
            let one_c = b.scalar(dt, 1.0);
            let sq = b.op2("Mul", y, y);
            b.op2("Add", &sq, &one_c)
        }
        "Atan" => {
            let one_c = b.scalar(dt, 1.0);
            let sq = b.op2("Mul", a, a);
            let den = b.op2("Add", &sq, &one_c);
            return one(b.op2("Div", &ad, &den));
        }
        "Sinh" => b.op1("Cosh", a),
        "Cosh" => b.op1("Sinh", a),
        "Softsign" => {
            // 1/(1+|a|)² = (1 − |y|)²
            let one_c = b.scalar(dt, 1.0);
            let m = b.op1("Abs", y);
            let c = b.op2("Sub", &one_c, &m);
            b.op2("Mul", &c, &c)
        }
        "Mish" => {
            // tanh(sp) + a·(1 − tanh²(sp))·σ(a), sp = softplus(a)
            let one_c = b.scalar(dt, 1.0);
            let sp = b.op1("Softplus", a);
            let th = b.op1("Tanh", &sp);
            let th2 = b.op2("Mul", &th, &th);
            let sech2 = b.op2("Sub", &one_c, &th2);
            let sg = b.op1("Sigmoid", a);
            let p = b.op2("Mul", &sech2, &sg);
            let q = b.op2("Mul", &p, a);
            b.op2("Add", &th, &q)
        }
        "HardSigmoid" => {
            let alpha = node.attr_f("alpha", 0.2) as f64;
            hard_sigmoid_slope(b, y, alpha, dt)
        }
        "HardSwish" => {
            // y = a·h(a), h = HardSigmoid(a; 1/6, 1/2): h + a·h'
            let h = b.emit(
                "HardSigmoid",
                &[a],
                vec![
                    AttributeProto::float("alpha", 1.0 / 6.0),
                    AttributeProto::float("beta", 0.5),
                ],
            );
            let slope = hard_sigmoid_slope(b, &h, 1.0 / 6.0, dt);
            let p = b.op2("Mul", &slope, a);
            b.op2("Add", &h, &p)
        }
        "Selu" | "Celu" => {
            // Selu: γ for a > 0, else y + γα; Celu: 1, else y/α + 1.
            let (pos_slope, neg) = if op == "Selu" {
                let alpha = node.attr_f("alpha", 1.673_263_2) as f64;
                let gamma = node.attr_f("gamma", 1.050_701) as f64;
                let ga = b.scalar(dt, gamma * alpha);
                (b.scalar(dt, gamma), b.op2("Add", y, &ga))
            } else {
                let alpha = node.attr_f("alpha", 1.0) as f64;
                let inv = b.scalar(dt, 1.0 / alpha);
                let one_c = b.scalar(dt, 1.0);
                let q = b.op2("Mul", y, &inv);
                let neg = b.op2("Add", &q, &one_c);
                (one_c, neg)
            };
            let zero = b.scalar(dt, 0.0);
            let pos = b.op2("Greater", a, &zero);
            b.emit("Where", &[&pos, &pos_slope, &neg], vec![])
        }
        _ => gelu_derivative(b, node, a, dt)?,
    };
    one(b.op2("Mul", &ad, &d))
}

/// The tangent of a SiLU y = a·σ(a) (exported as Sigmoid and Mul), given
/// a's tangent `ad`, σ(a) `s` and the primal output `y`:
/// ȧ·σ(a)·(1 + a − y), since a·(1 − σ(a)) = a − y. The derivative is
/// computed on the primal alone in three elementwise passes (one fewer than
/// the textbook form), so the tangent costs one product.
pub(in crate::graph::tangent) fn silu(
    b: &mut Builder,
    ad: &str,
    a: &str,
    s: &str,
    y: &str,
    dt: i32,
) -> String {
    let one_c = b.scalar(dt, 1.0);
    let gap = b.op2("Sub", a, y);
    let p = b.op2("Add", &gap, &one_c);
    let d = b.op2("Mul", s, &p);
    b.op2("Mul", ad, &d)
}

/// Clip: the tangent where the input is not clipped, else 0.
pub(super) fn clip(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let y = cx.y;
    let a = cx.a;
    let dt = cx.dt;
    let ad = cx.only_first("a bound")?;
    let same = b.op2("Equal", y, a);
    let zero = b.scalar(dt, 0.0);
    one(b.emit("Where", &[&same, &ad, &zero], vec![]))
}

/// Max and Min: the tangent of the input that is selected (the first on ties).
pub(super) fn max_min(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ins = cx.ins;
    let y = cx.y;
    let dt = cx.dt;
    let n = ins.len();
    let zero = b.scalar(dt, 0.0);
    let last = cx.t(n - 1).unwrap_or_else(|| zero.clone());
    let mut r = b.expand_like(&last, y);
    for k in (0..n - 1).rev() {
        let ak = cx.input(k).unwrap_or("");
        let pick = b.op2("Equal", y, ak);
        let tk = cx.t(k).unwrap_or_else(|| zero.clone());
        r = b.emit("Where", &[&pick, &tk, &r], vec![]);
    }
    one(r)
}

/// Where: the branches' tangents selected by the condition, which must not
/// vary.
pub(super) fn select(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let y = cx.y;
    let dt = cx.dt;
    if cx.t(0).is_some() {
        return Err("a condition depending on the state".into());
    }
    let zero = b.scalar(dt, 0.0);
    let ad = cx.t(1).unwrap_or_else(|| zero.clone());
    let bd = cx.t(2).unwrap_or(zero);
    let w = b.emit("Where", &[cx.input(0).unwrap_or(""), &ad, &bd], vec![]);
    one(b.expand_like(&w, y))
}

/// α where 0 < `h` < 1 (the slope of a hard sigmoid with output `h`), else 0.
fn hard_sigmoid_slope(b: &mut Builder, h: &str, alpha: f64, dt: i32) -> String {
    let zero = b.scalar(dt, 0.0);
    let one_c = b.scalar(dt, 1.0);
    let above = b.op2("Greater", h, &zero);
    let below = b.op2("Less", h, &one_c);
    let inside = b.op2("And", &above, &below);
    let al = b.scalar(dt, alpha);
    b.emit("Where", &[&inside, &al, &zero], vec![])
}

/// The derivative of Gelu at `a` (exact or tanh approximation).
fn gelu_derivative(
    b: &mut Builder,
    node: &NodeProto,
    a: &str,
    dt: i32,
) -> std::result::Result<String, String> {
    let approx = node.attr_s("approximate").unwrap_or_else(|| "none".into());
    let half = b.scalar(dt, 0.5);
    let one_c = b.scalar(dt, 1.0);
    match approx.as_str() {
        "none" => {
            // Φ(a) + a·φ(a)
            let inv_sqrt2 = b.scalar(dt, std::f64::consts::FRAC_1_SQRT_2);
            let s = b.op2("Mul", a, &inv_sqrt2);
            let e = b.op1("Erf", &s);
            let e1 = b.op2("Add", &e, &one_c);
            let cdf = b.op2("Mul", &e1, &half);
            let sq = b.op2("Mul", a, a);
            let hs = b.op2("Mul", &sq, &half);
            let n = b.op1("Neg", &hs);
            let ex = b.op1("Exp", &n);
            let c = b.scalar(dt, 1.0 / (2.0 * PI).sqrt());
            let pdf = b.op2("Mul", &ex, &c);
            let apdf = b.op2("Mul", a, &pdf);
            Ok(b.op2("Add", &cdf, &apdf))
        }
        "tanh" => {
            // y = ½a(1 + tanh u), u = k(a + c·a³)
            let k = b.scalar(dt, (2.0 / PI).sqrt());
            let c = b.scalar(dt, 0.044715);
            let c3 = b.scalar(dt, 3.0 * 0.044715);
            let sq = b.op2("Mul", a, a);
            let cube = b.op2("Mul", &sq, a);
            let cc = b.op2("Mul", &cube, &c);
            let inner = b.op2("Add", a, &cc);
            let u = b.op2("Mul", &inner, &k);
            let th = b.op1("Tanh", &u);
            let p1 = b.op2("Add", &th, &one_c);
            let first = b.op2("Mul", &p1, &half);
            let th2 = b.op2("Mul", &th, &th);
            let sech2 = b.op2("Sub", &one_c, &th2);
            let c3sq = b.op2("Mul", &sq, &c3);
            let du0 = b.op2("Add", &c3sq, &one_c);
            let du = b.op2("Mul", &du0, &k);
            let ha = b.op2("Mul", a, &half);
            let s1 = b.op2("Mul", &ha, &sech2);
            let second = b.op2("Mul", &s1, &du);
            Ok(b.op2("Add", &first, &second))
        }
        other => Err(format!("unknown Gelu approximation `{other}`")),
    }
}
