//! Rules for the shape and data-movement operators not in `LINEAR_FIRST`:
//! Dropout, Pad, Cast, CastLike and Concat.

use super::{one, Builder, Ctx, Out, RuleResult};
use crate::graph::proto::data_type;

/// Dropout (inference): the identity on the tangent; the mask has none.
pub(super) fn dropout(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let node = cx.node;
    let ad = cx.only_first("the ratio or training mode")?;
    let mut outs = vec![Out::Tangent(b.op1("Identity", &ad))];
    outs.extend((1..node.output.len()).map(|_| Out::Zero));
    Ok(outs)
}

/// Pad: the tangent padded the same way (with zeros in constant mode).
pub(super) fn pad(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ins = cx.ins;
    let node = cx.node;
    let ad = cx.only_first("pads or a pad value")?;
    let mode = node.attr_s("mode").unwrap_or_else(|| "constant".into());
    let mut inputs: Vec<&str> = ins.iter().map(String::as_str).collect();
    inputs[0] = &ad;
    let mut attrs = node.attribute.clone();
    if mode == "constant" {
        // The tangent is padded with zeros.
        if inputs.len() > 2 {
            inputs[2] = "";
        }
        attrs.retain(|a| a.name.as_deref() != Some("value"));
    }
    while inputs.last() == Some(&"") {
        inputs.pop();
    }
    one(b.emit("Pad", &inputs, attrs))
}

/// Cast: the tangent cast likewise; no tangent for a non-float target.
pub(super) fn cast(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let node = cx.node;
    let to = node.attr_i("to", 0) as i32;
    if !data_type::is_float(to) {
        return Ok(vec![Out::Zero]);
    }
    let ad = cx.only_first("")?;
    one(b.emit("Cast", &[&ad], node.attribute.clone()))
}

/// CastLike: the tangent cast to the target's type.
pub(super) fn cast_like(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ad = cx.only_first("the target")?;
    one(b.op2("CastLike", &ad, cx.input(1).unwrap_or("")))
}

/// Concat: the tangents concatenated, zeros for inputs without one.
pub(super) fn concat(b: &mut Builder, cx: &Ctx) -> RuleResult {
    let ins = cx.ins;
    let node = cx.node;
    let dt = cx.dt;
    let mut parts = Vec::new();
    for k in 0..ins.len() {
        match cx.t(k) {
            Some(s) => parts.push(s),
            None => parts.push(b.zeros_like(cx.input(k).unwrap_or(""), dt)),
        }
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    one(b.emit("Concat", &refs, node.attribute.clone()))
}
