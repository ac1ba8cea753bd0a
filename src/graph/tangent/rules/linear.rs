//! Rules for operators linear in the state: the `LINEAR_FIRST` operators apply
//! unchanged to the tangent; Add/Sub, Sum and Mean add tangents; MatMul, Gemm,
//! Conv/ConvTranspose and Einsum are (multi)linear, one term per varying
//! operand.

use super::{one, Builder, Ctx, Out, RuleResult};
use crate::graph::proto::AttributeProto;

/// Operators linear in their first input, the others being parameters that
/// must not depend on x; emitted as the same node on the tangent.
pub(super) const LINEAR_FIRST: &[&str] = &[
    "Identity",
    "Neg",
    "Reshape",
    "Transpose",
    "Unsqueeze",
    "Squeeze",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Expand",
    "Flatten",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "ReduceSum",
    "ReduceMean",
    "Split",
    "AveragePool",
    "GlobalAveragePool",
    "CumSum",
    "Resize",
    "Trilu",
    "ReverseSequence",
];

/// A `LINEAR_FIRST` operator: the same node applied to the first input's
/// tangent.
pub(super) fn first_input(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let (op, ins, node) = (cx.op, cx.ins, cx.node);
    let ad = cx.only_first("an input other than the first")?;
    let mut inputs: Vec<&str> = ins.iter().map(String::as_str).collect();
    inputs[0] = &ad;
    let outs = b.emit_n(op, &inputs, node.output.len(), node.attribute.clone());
    Ok(outs.into_iter().map(Out::Tangent).collect())
}

/// Add and Sub: the sum (difference) of the tangents, broadcast to the output.
pub(super) fn add_sub(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let op = cx.op;
    let y = cx.y;
    let (ad, bd) = (cx.t(0), cx.t(1));
    let r = match (ad, bd) {
        (Some(ad), Some(bd)) => b.op2(op, &ad, &bd),
        (Some(ad), None) => b.expand_like(&ad, y),
        (None, Some(bd)) => {
            let s = if op == "Sub" { b.op1("Neg", &bd) } else { bd };
            b.expand_like(&s, y)
        }
        (None, None) => return Ok(vec![Out::Zero]),
    };
    one(r)
}

/// Sum: the sum of the tangents, broadcast to the output.
pub(super) fn sum(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ins = cx.ins;
    let y = cx.y;
    let ts: Vec<String> = (0..ins.len()).filter_map(|k| cx.t(k)).collect();
    let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    let s = b.emit("Sum", &refs, vec![]);
    one(b.expand_like(&s, y))
}

/// Mean: the sum of the tangents over the input count, broadcast to the output.
pub(super) fn mean(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ins = cx.ins;
    let y = cx.y;
    let dt = cx.dt;
    let ts: Vec<String> = (0..ins.len()).filter_map(|k| cx.t(k)).collect();
    let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    let s = b.emit("Sum", &refs, vec![]);
    let n = b.scalar(dt, ins.len() as f64);
    let m = b.op2("Div", &s, &n);
    one(b.expand_like(&m, y))
}

/// MatMul: bilinear, one product per varying operand.
pub(super) fn matmul(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let a = cx.a;
    let bb = cx.input(1).unwrap_or("");
    let r = match (cx.t(0), cx.t(1)) {
        (Some(ad), Some(bd)) => {
            let p = b.op2("MatMul", &ad, bb);
            let q = b.op2("MatMul", a, &bd);
            b.op2("Add", &p, &q)
        }
        (Some(ad), None) => b.op2("MatMul", &ad, bb),
        (None, Some(bd)) => b.op2("MatMul", a, &bd),
        (None, None) => return Ok(vec![Out::Zero]),
    };
    one(r)
}

/// Gemm: bilinear in A and B, linear in C (scaled by beta).
pub(super) fn gemm(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let node = cx.node;
    let y = cx.y;
    let a = cx.a;
    let dt = cx.dt;
    let bb = cx.input(1).unwrap_or("");
    let attrs: Vec<AttributeProto> = node
        .attribute
        .iter()
        .filter(|x| x.name.as_deref() != Some("beta"))
        .cloned()
        .collect();
    let mut terms = Vec::new();
    if let Some(ad) = cx.t(0) {
        terms.push(b.emit("Gemm", &[&ad, bb], attrs.clone()));
    }
    if let Some(bd) = cx.t(1) {
        terms.push(b.emit("Gemm", &[a, &bd], attrs.clone()));
    }
    if let Some(cd) = cx.t(2) {
        let beta = b.scalar(dt, node.attr_f("beta", 1.0) as f64);
        let c = b.op2("Mul", &cd, &beta);
        terms.push(b.expand_like(&c, y));
    }
    let mut r = terms.pop().ok_or("no varying input")?;
    for s in terms {
        r = b.op2("Add", &s, &r);
    }
    one(r)
}

/// Conv and ConvTranspose: bilinear in the input and the weights; the bias
/// must not vary.
pub(super) fn conv(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let op = cx.op;
    let node = cx.node;
    let a = cx.a;
    if cx.t(2).is_some() {
        return Err("a bias depending on the state is not supported".into());
    }
    let w = cx.input(1).unwrap_or("");
    let mut terms = Vec::new();
    if let Some(xd) = cx.t(0) {
        terms.push(b.emit(op, &[&xd, w], node.attribute.clone()));
    }
    if let Some(wd) = cx.t(1) {
        terms.push(b.emit(op, &[a, &wd], node.attribute.clone()));
    }
    let mut r = terms.pop().ok_or("no varying input")?;
    for s in terms {
        r = b.op2("Add", &s, &r);
    }
    one(r)
}

/// Einsum: multilinear, one term per varying operand.
pub(super) fn einsum(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ins = cx.ins;
    let node = cx.node;
    // Multilinear: one term per varying operand.
    let mut terms = Vec::new();
    for k in 0..ins.len() {
        if let Some(tk) = cx.t(k) {
            let mut inputs: Vec<&str> = ins.iter().map(String::as_str).collect();
            inputs[k] = &tk;
            terms.push(b.emit("Einsum", &inputs, node.attribute.clone()));
        }
    }
    let mut r = terms.pop().ok_or("no varying input")?;
    for s in terms {
        r = b.op2("Add", &s, &r);
    }
    one(r)
}
