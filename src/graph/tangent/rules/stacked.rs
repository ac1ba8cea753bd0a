//! Rules for the stacked form: P tangents of one primal, with a leading
//! tangent axis (`[P, ...shape]` for a value of shape `[...shape]`).
//!
//! The primal is computed once and broadcast against the P tangents by ONNX's
//! own broadcasting, which aligns shapes from the right. The rules keep one
//! invariant: the tangent of a value of rank r has rank r + 1, its axis 0 the
//! tangent axis. So the ordinary rules of elementwise operators hold as they
//! are once the tangents of lower-rank operands are unsqueezed to the
//! output's rank (after the tangent axis); operators that name axes get them
//! shifted by one; reshapes reshape to `[P, ...output shape]`; Gemm, which is
//! 2-D only, runs on the tangent axis merged into the batch axis against its
//! weight as stored (a varying weight's tangent as MatMul); convolutions,
//! pooling and Resize, which want `[N, C, ...]`, run on the tangent axis
//! merged into the batch axis; the
//! normalisations reduce over trailing axes, which broadcasting leaves
//! alone. Operators outside this set have no stacked rule: the transform
//! then fails and the caller uses the per-direction form.

use std::collections::HashMap;

use super::{one, Builder, Ctx, RuleResult};
use crate::graph::proto::{data_type, AttributeProto};
use crate::graph::tangent::rank::Ranks;

/// Operators whose ordinary rule holds once the tangents are aligned to the
/// output's rank.
const BROADCASTING: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Where", "Max", "Min", "Sum", "Mean", "MatMul",
];

/// Operators of one varying input whose ordinary rule holds unchanged.
const UNCHANGED: &[&str] = &[
    "Identity",
    "Neg",
    "Relu",
    "LeakyRelu",
    "Elu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "Softplus",
    "Sin",
    "Cos",
    "Abs",
    "Gelu",
    "Tan",
    "Atan",
    "Sinh",
    "Cosh",
    "Softsign",
    "Mish",
    "HardSigmoid",
    "HardSwish",
    "Selu",
    "Celu",
    "Clip",
    "Cast",
    "CastLike",
    "Dropout",
];

/// Operators linear in their first input that treat axis 0 as a batch of
/// independent samples and want it first (`[N, C, ...]`): their stacked
/// tangent runs on the tangent axis merged into the batch axis.
const BATCHWISE: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "AveragePool",
    "GlobalAveragePool",
    "DepthToSpace",
    "SpaceToDepth",
    "Resize",
    "BatchNormalization",
];

/// Whether `op` has a stacked rule.
pub(super) fn supported(op: &str) -> bool {
    BROADCASTING.contains(&op)
        || UNCHANGED.contains(&op)
        || BATCHWISE.contains(&op)
        || matches!(
            op,
            "Gemm"
                | "Concat"
                | "Unsqueeze"
                | "Squeeze"
                | "ReduceSum"
                | "ReduceMean"
                | "Transpose"
                | "Reshape"
                | "Flatten"
                | "Softmax"
                | "LogSoftmax"
                | "LayerNormalization"
                | "InstanceNormalization"
                | "GroupNormalization"
                | "Slice"
                | "Gather"
                | "Split"
                | "Expand"
                | "Tile"
                | "Pad"
        )
}

/// The stacked rule of the node in `cx` (see the module documentation).
pub(super) fn rule(b: &mut Builder, cx: &Ctx, ranks: &Ranks) -> RuleResult {
    let op = cx.op;
    if !supported(op) {
        return Err("no rule for stacked tangents (a leading tangent axis)".into());
    }
    if UNCHANGED.contains(&op) {
        return super::ordinary(b, cx);
    }
    if BROADCASTING.contains(&op) {
        let out_rank = rank(ranks, cx.y)?;
        let mut aligned: HashMap<String, String> = HashMap::new();
        for k in 0..cx.ins.len() {
            let (Some(input), Some(t)) = (cx.input(k), cx.t(k)) else {
                continue;
            };
            let r = rank(ranks, input)?;
            if op == "MatMul" && r < 2 {
                return Err("a 1-D operand of MatMul with stacked tangents".into());
            }
            let t = if r < out_rank {
                let axes: Vec<i64> = (1..=(out_rank - r) as i64).collect();
                unsqueeze(b, &t, &axes)
            } else {
                t
            };
            aligned.insert(input.to_string(), t);
        }
        let tangent_of = |name: &str| aligned.get(name).cloned();
        let inner = Ctx {
            tangent_of: &tangent_of,
            ..*cx
        };
        return super::ordinary(b, &inner);
    }
    match op {
        "Gemm" => gemm(b, cx, ranks),
        "Concat" => concat(b, cx),
        "Unsqueeze" | "Squeeze" | "ReduceSum" | "ReduceMean" => with_axes(b, cx),
        "Transpose" => transpose(b, cx, ranks),
        "Softmax" | "LogSoftmax" => softmax(b, cx),
        op if BATCHWISE.contains(&op) => batchwise(b, cx),
        "Slice" => slice(b, cx),
        "Gather" | "Split" => with_axis(b, cx),
        "Expand" => expand(b, cx, ranks),
        "Tile" => tile(b, cx),
        "Pad" => pad(b, cx, ranks),
        // The normalisations handle both forms themselves.
        "LayerNormalization" => super::normalisation::layer_norm(b, cx),
        "InstanceNormalization" | "GroupNormalization" => {
            super::normalisation::instance_group_norm(b, cx)
        }
        // Reshape and Flatten: the tangent reshaped to [P, ...output shape].
        _ => {
            let ad = cx.only_first("a shape")?;
            let target = b.stacked_shape_of(cx.y)?;
            one(b.op2("Reshape", &ad, &target))
        }
    }
}

/// The rank of `name`, or why the stacked rule cannot proceed.
fn rank(ranks: &Ranks, name: &str) -> std::result::Result<usize, String> {
    ranks
        .get(name)
        .ok_or_else(|| format!("the rank of `{name}` is not known statically"))
}

/// An axis of a value as seen on its stacked tangent.
fn shift(axis: i64) -> i64 {
    if axis >= 0 {
        // Saturating: an absurd axis from a hostile model stays absurd (and
        // is refused by ONNX Runtime) instead of overflowing.
        axis.saturating_add(1)
    } else {
        axis
    }
}

/// `t` with new axes of size 1 at `axes`.
fn unsqueeze(b: &mut Builder, t: &str, axes: &[i64]) -> String {
    if b.opset >= 13 {
        let axes = b.ints(axes);
        b.op2("Unsqueeze", t, &axes)
    } else {
        b.emit("Unsqueeze", &[t], vec![AttributeProto::ints("axes", axes)])
    }
}

/// An axes input shifted for the stacked tangent (ONNX Runtime folds this
/// when the axes are constant).
fn shift_axes_input(b: &mut Builder, axes: &str) -> String {
    let zero = b.scalar(data_type::INT64, 0.0);
    let one_c = b.scalar(data_type::INT64, 1.0);
    let negative = b.op2("Less", axes, &zero);
    let plus = b.op2("Add", axes, &one_c);
    b.emit("Where", &[&negative, axes, &plus], vec![])
}

/// Unsqueeze, Squeeze, ReduceSum and ReduceMean: the same node on the tangent
/// with its axes shifted. Without axes they would act on the tangent axis
/// too, so that is refused.
fn with_axes(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ad = cx.only_first("axes")?;
    let mut attrs = cx.node.attribute.clone();
    if let Some(list) = cx.node.attr_ints("axes") {
        let shifted: Vec<i64> = list.iter().map(|&a| shift(a)).collect();
        attrs.retain(|a| a.name.as_deref() != Some("axes"));
        attrs.push(AttributeProto::ints("axes", &shifted));
        return one(b.emit(cx.op, &[&ad], attrs));
    }
    let Some(axes) = cx.input(1) else {
        return Err(format!(
            "{} over all axes would reduce the tangent axis too",
            cx.op
        ));
    };
    let shifted = shift_axes_input(b, axes);
    one(b.emit(cx.op, &[&ad, &shifted], attrs))
}

/// Concat: the tangents concatenated along the shifted axis, stacked zeros
/// for inputs without one.
fn concat(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let axis = shift(cx.node.attr_i("axis", 0));
    let mut parts = Vec::new();
    for k in 0..cx.ins.len() {
        match cx.t(k) {
            Some(s) => parts.push(s),
            None => {
                let input = cx.input(k).unwrap_or("");
                parts.push(b.stacked_zeros_like(input, cx.dt)?);
            }
        }
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    one(b.emit("Concat", &refs, vec![AttributeProto::int("axis", axis)]))
}

/// Transpose: the tangent axis stays first.
fn transpose(b: &mut Builder, cx: &Ctx, ranks: &Ranks) -> RuleResult {
    let ad = cx.only_first("")?;
    let perm: Vec<i64> = match cx.node.attr_ints("perm") {
        Some(p) => p.to_vec(),
        None => (0..rank(ranks, cx.a)? as i64).rev().collect(),
    };
    let mut stacked = vec![0];
    stacked.extend(perm.iter().map(|&p| p.saturating_add(1)));
    one(b.emit(
        "Transpose",
        &[&ad],
        vec![AttributeProto::ints("perm", &stacked)],
    ))
}

/// Gemm, 2-D only, as MatMul on the stacked tangents: one product per
/// varying operand, scaled by alpha; C's tangent scaled by beta.
fn gemm(b: &mut Builder, cx: &Ctx, ranks: &Ranks) -> RuleResult {
    let node = cx.node;
    let dt = cx.dt;
    let a = cx.a;
    let w = cx.input(1).unwrap_or("");
    let trans = |name: &str| node.attr_i(name, 0) != 0;
    let swap_last = vec![AttributeProto::ints("perm", &[0, 2, 1])];
    let mut terms = Vec::new();
    if let Some(ad) = cx.t(0) {
        let ad = if trans("transA") {
            b.emit("Transpose", &[&ad], swap_last.clone())
        } else {
            ad
        };
        // [P, B, K] flattened to [P·B, K] for one Gemm against B as stored,
        // then back to [P, B, N]. Transposing B instead (MatMul on the
        // stacked tangent) would have ONNX Runtime fold the Transpose of an
        // initializer into a second copy of the weights.
        let flat = b.emit("Flatten", &[&ad], vec![AttributeProto::int("axis", 2)]);
        let attrs = if trans("transB") {
            vec![AttributeProto::int("transB", 1)]
        } else {
            Vec::new()
        };
        let product = b.emit("Gemm", &[&flat, w], attrs);
        let shape = b.stacked_shape_of(cx.y)?;
        terms.push(b.emit("Reshape", &[&product, &shape], vec![]));
    }
    if let Some(wd) = cx.t(1) {
        let a = if trans("transA") {
            b.op1("Transpose", a)
        } else {
            a.to_string()
        };
        let wd = if trans("transB") {
            b.emit("Transpose", &[&wd], swap_last)
        } else {
            wd
        };
        terms.push(b.op2("MatMul", &a, &wd));
    }
    let alpha = f64::from(node.attr_f("alpha", 1.0));
    let mut r = match terms.pop() {
        Some(mut r) => {
            for s in terms {
                r = b.op2("Add", &s, &r);
            }
            if alpha != 1.0 {
                let al = b.scalar(dt, alpha);
                r = b.op2("Mul", &r, &al);
            }
            Some(r)
        }
        None => None,
    };
    if let Some(cd) = cx.t(2) {
        let c = cx.input(2).unwrap_or("");
        let rc = rank(ranks, c)?;
        let cd = if rc < 2 {
            let axes: Vec<i64> = (1..=(2 - rc) as i64).collect();
            unsqueeze(b, &cd, &axes)
        } else {
            cd
        };
        let beta = b.scalar(dt, f64::from(node.attr_f("beta", 1.0)));
        let scaled = b.op2("Mul", &cd, &beta);
        let term = b.expand_like(&scaled, cx.y);
        r = Some(match r {
            Some(r) => b.op2("Add", &r, &term),
            None => term,
        });
    }
    one(r.ok_or("no varying input")?)
}

/// Softmax and LogSoftmax (opset 13 on): ẏ = y·(ȧ − Σ y·ȧ) and
/// ẏ = ȧ − Σ softmax·ȧ, the sum over the shifted axis.
fn softmax(b: &mut Builder, cx: &Ctx) -> RuleResult {
    if b.opset < 13 {
        return Err("Softmax before opset 13 (2-D coercion) with stacked tangents".into());
    }
    let ad = cx.only_first("")?;
    let y = cx.y;
    let axis = shift(cx.node.attr_i("axis", -1));
    let p = if cx.op == "Softmax" {
        y.to_string()
    } else {
        b.op1("Exp", y)
    };
    let pa = b.op2("Mul", &p, &ad);
    let s = b.reduce("ReduceSum", &pa, &[axis]);
    let c = b.op2("Sub", &ad, &s);
    one(if cx.op == "Softmax" {
        b.op2("Mul", y, &c)
    } else {
        c
    })
}

/// The `BATCHWISE` operators (convolutions with constant weights, average
/// pooling, depth/space rearrangements, Resize, inference batch
/// normalisation): the tangent axis is merged into the batch axis
/// (`[P·B, C, ...]`), the operator's per-direction rule runs once on all P
/// directions (a Resize given `sizes` for every axis gets the merged batch
/// as its first size), and the tangent axis is split off again
/// (`[P, ...shape of y]`).
fn batchwise(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let xd = cx.only_first("a parameter (weights, bias, scales, sizes or statistics)")?;
    let merged_shape = b.merged_shape_of(cx.a);
    let merged = b.op2("Reshape", &xd, &merged_shape);
    let applied = if cx.op == "Resize" {
        let mut inputs: Vec<String> = cx.ins.to_vec();
        inputs[0] = merged;
        if let (Some(sizes), None) = (cx.input(3), cx.node.attr_ints("axes")) {
            let merged_dims = b.op1("Shape", &inputs[0]);
            let batch = b.slice_1d(&merged_dims, 0, 1);
            let rest = b.slice_1d(sizes, 1, i64::MAX);
            inputs[3] = b.emit(
                "Concat",
                &[&batch, &rest],
                vec![AttributeProto::int("axis", 0)],
            );
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        b.emit(cx.op, &refs, cx.node.attribute.clone())
    } else {
        let first = cx.a;
        let tangent_of = |name: &str| (name == first).then(|| merged.clone());
        let inner = Ctx {
            tangent_of: &tangent_of,
            ..*cx
        };
        match super::ordinary(b, &inner)?.into_iter().next() {
            Some(super::Out::Tangent(t)) => t,
            _ => return Err(format!("{} gave no tangent", cx.op)),
        }
    };
    let split_shape = b.stacked_shape_of(cx.y)?;
    one(b.op2("Reshape", &applied, &split_shape))
}

/// Slice: the same slice of the tangent, on the shifted axes (the default
/// axes, 0 to n − 1 for n starts, become 1 to n).
fn slice(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ad = cx.only_first("starts, ends, axes or steps")?;
    if b.opset < 10 {
        let count = cx.node.attr_ints("starts").map_or(0, <[i64]>::len) as i64;
        let shifted: Vec<i64> = match cx.node.attr_ints("axes") {
            Some(axes) => axes.iter().map(|&a| shift(a)).collect(),
            None => (1..=count).collect(),
        };
        let mut attrs = cx.node.attribute.clone();
        attrs.retain(|a| a.name.as_deref() != Some("axes"));
        attrs.push(AttributeProto::ints("axes", &shifted));
        return one(b.emit("Slice", &[&ad], attrs));
    }
    let (Some(starts), Some(ends)) = (cx.input(1), cx.input(2)) else {
        return Err("a Slice without starts or ends".into());
    };
    let axes = match cx.input(3) {
        Some(axes) => shift_axes_input(b, axes),
        None => {
            let count = b.op1("Size", starts);
            let one_c = b.scalar(data_type::INT64, 1.0);
            let limit = b.op2("Add", &count, &one_c);
            b.emit("Range", &[&one_c, &limit, &one_c], vec![])
        }
    };
    let mut inputs = vec![ad.as_str(), starts, ends, axes.as_str()];
    if let Some(steps) = cx.input(4) {
        inputs.push(steps);
    }
    one(b.emit("Slice", &inputs, cx.node.attribute.clone()))
}

/// Expand: the tangent, its new axes inserted after the tangent axis,
/// expanded to `[P, ...output shape]` (Expand broadcasts from the right, so
/// the tangent axis must not meet the target's leading axes).
fn expand(b: &mut Builder, cx: &Ctx, ranks: &Ranks) -> RuleResult {
    let ad = cx.only_first("a target shape")?;
    let (r_in, r_out) = (rank(ranks, cx.input(0).unwrap_or(""))?, rank(ranks, cx.y)?);
    let aligned = if r_in < r_out {
        let axes: Vec<i64> = (1..=(r_out - r_in) as i64).collect();
        unsqueeze(b, &ad, &axes)
    } else {
        ad
    };
    let target = b.stacked_shape_of(cx.y)?;
    one(b.op2("Expand", &aligned, &target))
}

/// Tile: the tangent tiled likewise, once along the tangent axis.
fn tile(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ad = cx.only_first("the repeats")?;
    let repeats = cx.input(1).ok_or("a Tile without repeats")?;
    let once = b.ints(&[1]);
    let stacked = b.emit(
        "Concat",
        &[&once, repeats],
        vec![AttributeProto::int("axis", 0)],
    );
    one(b.op2("Tile", &ad, &stacked))
}

/// Pad: the tangent padded like the value (zeros in constant mode) and not
/// at all along the tangent axis: `pads` (`[b₁…b_r, e₁…e_r]`) gains a 0 at
/// the front of each half, or, where the node names its axes, they shift.
fn pad(b: &mut Builder, cx: &Ctx, ranks: &Ranks) -> RuleResult {
    let ad = cx.only_first("pads or a pad value")?;
    let mode = cx.node.attr_s("mode").unwrap_or_else(|| "constant".into());
    let mut attrs = cx.node.attribute.clone();
    attrs.retain(|a| !matches!(a.name.as_deref(), Some("value") | Some("pads")));
    if b.opset < 11 {
        let pads = cx.node.attr_ints("pads").unwrap_or(&[]);
        let half = pads.len() / 2;
        let mut stacked = vec![0];
        stacked.extend_from_slice(&pads[..half]);
        stacked.push(0);
        stacked.extend_from_slice(&pads[half..]);
        attrs.push(AttributeProto::ints("pads", &stacked));
        return one(b.emit("Pad", &[&ad], attrs));
    }
    let pads = cx.input(1).ok_or("a Pad without pads")?;
    let mut inputs: Vec<String> = vec![ad, String::new(), String::new()];
    if mode != "constant" {
        // Only constant mode takes a pad value; the tangent's is zero.
        inputs[2] = cx.input(2).unwrap_or("").to_string();
    }
    match cx.input(3) {
        Some(axes) => {
            inputs[1] = pads.to_string();
            inputs.push(shift_axes_input(b, axes));
        }
        None => {
            let r = rank(ranks, cx.input(0).unwrap_or(""))? as i64;
            let zero = b.ints(&[0]);
            let begins = b.slice_1d(pads, 0, r);
            let ends = b.slice_1d(pads, r, 2 * r);
            inputs[1] = b.emit(
                "Concat",
                &[&zero, &begins, &zero, &ends],
                vec![AttributeProto::int("axis", 0)],
            );
        }
    }
    while inputs.last().is_some_and(String::is_empty) {
        inputs.pop();
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    one(b.emit("Pad", &refs, attrs))
}

/// Gather (of the state, at constant indices) and Split: the same node on
/// the tangent with its `axis` shifted.
fn with_axis(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ad = cx.only_first("indices or split sizes")?;
    let axis = shift(cx.node.attr_i("axis", 0));
    let mut attrs = cx.node.attribute.clone();
    attrs.retain(|a| a.name.as_deref() != Some("axis"));
    attrs.push(AttributeProto::int("axis", axis));
    let mut inputs: Vec<&str> = cx.ins.iter().map(String::as_str).collect();
    inputs[0] = &ad;
    let outs = b.emit_n(cx.op, &inputs, cx.node.output.len(), attrs);
    Ok(outs.into_iter().map(super::Out::Tangent).collect())
}
