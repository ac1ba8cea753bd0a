//! Rules for the normalizations: LayerNormalization, InstanceNormalization and
//! GroupNormalization (through the exact derivative of x ↦ (x − μ)/σ), and
//! BatchNormalization in inference mode.

use super::{one, Builder, Ctx, Out, RuleResult};
use crate::graph::proto::{AttributeProto, TensorProto};

/// LayerNormalization: the normalized tangent over the axes from `axis` on,
/// times the scale; the mean and inverse deviation outputs get no tangent (an
/// error if they are used).
pub(super) fn layer_norm(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let node = cx.node;
    let a = cx.a;
    let dt = cx.dt;
    let ad = cx.only_first("the scale or bias")?;
    let axis = node.attr_i("axis", -1);
    let eps = node.attr_f("epsilon", 1e-5);
    let f = vec![AttributeProto::int("axis", axis)];
    let x2 = b.emit("Flatten", &[a], f.clone());
    let d2 = if b.is_stacked() {
        // [P, outer, inner]: Flatten would fold P into the outer axis.
        let shape = b.stacked_shape_of(&x2)?;
        b.op2("Reshape", &ad, &shape)
    } else {
        b.emit("Flatten", &[&ad], f)
    };
    let n = normalized_tangent(b, &x2, &d2, last_axis(b, 1)?, eps, dt);
    let shape = if b.is_stacked() {
        b.stacked_shape_of(a)?
    } else {
        b.op1("Shape", a)
    };
    let r = b.op2("Reshape", &n, &shape);
    let mut outs = vec![Out::Tangent(b.op2("Mul", &r, cx.input(1).unwrap_or("")))];
    outs.extend((1..node.output.len()).map(|_| Out::Opaque));
    Ok(outs)
}

/// InstanceNormalization and GroupNormalization: the normalized tangent per
/// instance (or group), times the per-channel (or, before opset 21,
/// per-group) scale.
pub(super) fn instance_group_norm(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let op = cx.op;
    let node = cx.node;
    let a = cx.a;
    let dt = cx.dt;
    let ad = cx.only_first("the scale or bias")?;
    let eps = node.attr_f("epsilon", 1e-5);
    let groups = node.attr_i("num_groups", 0);
    let spec = if op == "InstanceNormalization" {
        b.ints(&[0, 0, -1])
    } else {
        b.ints(&[0, groups, -1])
    };
    let x3 = b.op2("Reshape", a, &spec);
    let stacked = b.is_stacked();
    let d3 = if stacked {
        // [P, N, groups, rest]
        let shape = b.stacked_shape_of(&x3)?;
        b.op2("Reshape", &ad, &shape)
    } else {
        b.op2("Reshape", &ad, &spec)
    };
    let mut n = normalized_tangent(b, &x3, &d3, last_axis(b, 2)?, eps, dt);
    if stacked {
        // The channel scale below wants [N, C, ...]: the tangent axis is
        // merged into the batch axis until the end.
        let merged = b.merged_shape_of(&x3);
        n = b.op2("Reshape", &n, &merged);
    }
    let scale = cx.input(1).unwrap_or("");
    let per_group = op == "GroupNormalization" && b.opset < 21;
    if per_group {
        n = channel_scale(b, &n, scale, dt);
    }
    let shape = if stacked {
        b.merged_shape_of(a)
    } else {
        b.op1("Shape", a)
    };
    let mut r = b.op2("Reshape", &n, &shape);
    if !per_group {
        r = channel_scale(b, &r, scale, dt);
    }
    if stacked {
        let split = b.stacked_shape_of(a)?;
        r = b.op2("Reshape", &r, &split);
    }
    one(r)
}

/// BatchNormalization (inference): affine in the input, so the same node with
/// zero bias and mean.
pub(super) fn batch_norm(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let node = cx.node;
    let dt = cx.dt;
    if node.attr_i("training_mode", 0) != 0 || node.output.len() > 1 {
        return Err("training mode is not supported (export for inference)".into());
    }
    let ad = cx.only_first("a parameter")?;
    let bias = cx.input(2).unwrap_or("");
    let mean = cx.input(3).unwrap_or("");
    let zb = b.zeros_like(bias, dt);
    let zm = b.zeros_like(mean, dt);
    let r = b.emit(
        "BatchNormalization",
        &[
            &ad,
            cx.input(1).unwrap_or(""),
            &zb,
            &zm,
            cx.input(4).unwrap_or(""),
        ],
        node.attribute.clone(),
    );
    one(r)
}

/// The axis the normalisation reduces over, the last one, for an operand
/// of rank `last + 1`: −1 from opset 11 on, which also serves a stacked
/// tangent of one more axis; `last` before it, where reductions take no
/// negative axes (and the stacked form is refused).
fn last_axis(b: &Builder, last: i64) -> std::result::Result<i64, String> {
    if b.opset >= 11 {
        Ok(-1)
    } else if b.is_stacked() {
        Err("a normalisation before opset 11 with stacked tangents".into())
    } else {
        Ok(last)
    }
}

/// The tangent of the normalization of `x` over its last axis `axis`: with
/// x̂ = (x − μ)/σ, x̂' = (ẋc − x̂·mean(x̂·ẋc))/σ where ẋc = ẋ − mean(ẋ).
/// `xd` may carry a leading tangent axis when `axis` is −1: every
/// reduction is over the last axis and the rest broadcasts.
fn normalized_tangent(b: &mut Builder, x: &str, xd: &str, axis: i64, eps: f32, dt: i32) -> String {
    let axes = &[axis];
    let mu = b.reduce("ReduceMean", x, axes);
    let xc = b.op2("Sub", x, &mu);
    let sq = b.op2("Mul", &xc, &xc);
    let var = b.reduce("ReduceMean", &sq, axes);
    let e = b.scalar(dt, eps as f64);
    let ve = b.op2("Add", &var, &e);
    let sigma = b.op1("Sqrt", &ve);
    let xhat = b.op2("Div", &xc, &sigma);
    let mud = b.reduce("ReduceMean", xd, axes);
    let xdc = b.op2("Sub", xd, &mud);
    let prod = b.op2("Mul", &xhat, &xdc);
    let m = b.reduce("ReduceMean", &prod, axes);
    let corr = b.op2("Mul", &xhat, &m);
    let num = b.op2("Sub", &xdc, &corr);
    b.op2("Div", &num, &sigma)
}

/// `t` (shaped `[N, C, …]`) times a per-channel `scale` of shape `[C]`,
/// done by an inference BatchNormalization with zero mean and unit variance.
fn channel_scale(b: &mut Builder, t: &str, scale: &str, dt: i32) -> String {
    let shape = b.op1("Shape", scale);
    let mut zero = TensorProto::scalar("", dt, 0.0);
    zero.dims = vec![1];
    let mut one = TensorProto::scalar("", dt, 1.0);
    one.dims = vec![1];
    let zeros = b.emit(
        "ConstantOfShape",
        &[&shape],
        vec![AttributeProto::tensor("value", zero)],
    );
    let ones = b.emit(
        "ConstantOfShape",
        &[&shape],
        vec![AttributeProto::tensor("value", one)],
    );
    b.emit(
        "BatchNormalization",
        &[t, scale, &zeros, &zeros, &ones],
        vec![AttributeProto::float("epsilon", 0.0)],
    )
}
