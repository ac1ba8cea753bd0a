//! Rules for the nonlinear reductions: ReduceMax/ReduceMin/ReduceL2/
//! ReduceSumSquare/ReduceLogSumExp, MaxPool, Softmax and LogSoftmax. (ReduceSum
//! and ReduceMean are linear: see `LINEAR_FIRST` in `linear`.)

use super::{one, Builder, Ctx, Out, RuleResult};
use crate::graph::proto::{AttributeProto, NodeProto};

/// ReduceMax, ReduceMin, ReduceL2, ReduceSumSquare and ReduceLogSumExp.
pub(super) fn reduce(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let op = cx.op;
    let node = cx.node;
    let y = cx.y;
    let a = cx.a;
    let dt = cx.dt;
    let ad = cx.only_first("the axes")?;
    let keep = reduce_copy(b, node, op, a, Some(1));
    let r = match op {
        "ReduceMax" | "ReduceMin" => {
            // The mean of the tangent over the positions attaining the extremum.
            let hit = b.op2("Equal", a, &keep);
            let mask = b.emit("Cast", &[&hit], vec![AttributeProto::int("to", dt as i64)]);
            let masked = b.op2("Mul", &ad, &mask);
            let num = reduce_copy(b, node, "ReduceSum", &masked, None);
            let den = reduce_copy(b, node, "ReduceSum", &mask, None);
            b.op2("Div", &num, &den)
        }
        "ReduceL2" => {
            let p = b.op2("Mul", a, &ad);
            let s = reduce_copy(b, node, "ReduceSum", &p, None);
            b.op2("Div", &s, y)
        }
        "ReduceSumSquare" => {
            let p = b.op2("Mul", a, &ad);
            let s = reduce_copy(b, node, "ReduceSum", &p, None);
            let two = b.scalar(dt, 2.0);
            b.op2("Mul", &s, &two)
        }
        _ => {
            let d = b.op2("Sub", a, &keep);
            let w = b.op1("Exp", &d);
            let p = b.op2("Mul", &w, &ad);
            reduce_copy(b, node, "ReduceSum", &p, None)
        }
    };
    one(r)
}

/// MaxPool: the tangent at the position each window selects.
pub(super) fn max_pool(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let node = cx.node;
    let a = cx.a;
    // The tangent at the selected positions: gather by the flat indices.
    let ad = cx.only_first("")?;
    let outs = b.emit_n("MaxPool", &[a], 2, node.attribute.clone());
    let minus_one = b.ints(&[-1]);
    let flat = b.op2("Reshape", &ad, &minus_one);
    let mut result = vec![Out::Tangent(b.op2("Gather", &flat, &outs[1]))];
    result.extend((1..node.output.len()).map(|_| Out::Zero));
    Ok(result)
}

/// Softmax and LogSoftmax: ẏ = y·(ȧ − Σ y·ȧ) and ẏ = ȧ − Σ softmax·ȧ.
pub(super) fn softmax(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let op = cx.op;
    let node = cx.node;
    let y = cx.y;
    let ad = cx.only_first("")?;
    let axis = node.attr_i("axis", if b.opset >= 13 { -1 } else { 1 });
    let (yy, aa, ax) = if b.opset >= 13 {
        (y.to_string(), ad, axis)
    } else {
        // Before opset 13 the input is coerced to 2-D at `axis`.
        let f = vec![AttributeProto::int("axis", axis)];
        let y2 = b.emit("Flatten", &[y], f.clone());
        let a2 = b.emit("Flatten", &[&ad], f);
        (y2, a2, 1)
    };
    let p = if op == "Softmax" {
        yy.clone()
    } else {
        b.op1("Exp", &yy)
    };
    let pa = b.op2("Mul", &p, &aa);
    let s = b.reduce("ReduceSum", &pa, &[ax]);
    let c = b.op2("Sub", &aa, &s);
    let mut r = if op == "Softmax" {
        b.op2("Mul", &yy, &c)
    } else {
        c
    };
    if b.opset < 13 {
        let shape = b.op1("Shape", y);
        r = b.op2("Reshape", &r, &shape);
    }
    one(r)
}

/// The reduction `op` over the same axes as the reduction `node`, applied to
/// `input`, with `keepdims` overridden if given; axes are spelled as `op`
/// wants them in this opset.
fn reduce_copy(
    b: &mut Builder,
    node: &NodeProto,
    op: &str,
    input: &str,
    keepdims: Option<i64>,
) -> String {
    let keep = keepdims.unwrap_or_else(|| node.attr_i("keepdims", 1));
    let mut attrs: Vec<AttributeProto> = node
        .attribute
        .iter()
        .filter(|a| !matches!(a.name.as_deref(), Some("keepdims" | "axes")))
        .cloned()
        .collect();
    attrs.push(AttributeProto::int("keepdims", keep));
    let axes_as_input = match op {
        "ReduceSum" => b.opset >= 13,
        _ => b.opset >= 18,
    };
    let from_input = node.input.get(1).filter(|s| !s.is_empty()).cloned();
    let from_attr = node.attr_ints("axes").map(<[i64]>::to_vec);
    if axes_as_input {
        let axes = match (from_input, from_attr) {
            (Some(name), _) => Some(name),
            (None, Some(list)) => Some(b.ints(&list)),
            (None, None) => None,
        };
        match axes {
            Some(axes) => b.emit(op, &[input, &axes], attrs),
            None => b.emit(op, &[input], attrs),
        }
    } else {
        // Axes as an attribute (this op in an opset before 13 or 18).
        if let Some(list) = from_attr {
            attrs.push(AttributeProto::ints("axes", &list));
        }
        b.emit(op, &[input], attrs)
    }
}
