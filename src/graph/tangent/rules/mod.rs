//! The tangent rules: `rule` picks the rule for a node by its operator type.
//! Every rule is a function of the `Builder` and a `Ctx` describing the
//! node; the rules are grouped by kind of operator, one file per group.

mod elementwise;
mod linear;
mod normalisation;
mod reductions;
mod shape;
mod stacked;

use super::builder::Builder;
use super::rank::Ranks;
use crate::graph::proto::NodeProto;

/// The tangents of a node's outputs as a rule computes them.
pub(super) enum Out {
    Tangent(String),
    Zero,
    Opaque,
}

/// What a rule returns: the tangents of the node's outputs, or why there is
/// no rule.
type RuleResult = std::result::Result<Vec<Out>, String>;

/// The node a rule differentiates, with its inputs' tangents.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    node: &'a NodeProto,
    /// The operator type.
    op: &'a str,
    /// The node's inputs (`""` for an omitted one).
    ins: &'a [String],
    /// The node's first output (`""` if none).
    y: &'a str,
    /// The node's first input (`""` if none).
    a: &'a str,
    /// The element type of the tangents.
    dt: i32,
    tangent_of: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Ctx<'a> {
    /// Input `k`, unless it is absent or omitted.
    fn input(&self, k: usize) -> Option<&'a str> {
        self.ins
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The tangent of input `k`, if it has one.
    fn t(&self, k: usize) -> Option<String> {
        self.input(k).and_then(self.tangent_of)
    }

    /// The tangent of the first input, requiring that no other input has one
    /// (`what` names the others in the error).
    fn only_first(&self, what: &str) -> std::result::Result<String, String> {
        if (1..self.ins.len()).any(|k| self.t(k).is_some()) {
            return Err(format!("{what} depending on the state is not supported"));
        }
        self.t(0)
            .ok_or_else(|| format!("{what} depending on the state is not supported"))
    }
}

pub(super) use elementwise::silu;

/// A single output's tangent `s`.
fn one(s: String) -> RuleResult {
    Ok(vec![Out::Tangent(s)])
}

/// The tangent rule of one node; `Err` holds why there is none. `ranks` is
/// given for the stacked form (a leading tangent axis, see `stacked`).
pub(super) fn rule(
    b: &mut Builder,
    node: &NodeProto,
    tangent_of: &dyn Fn(&str) -> Option<String>,
    dt: i32,
    ranks: Option<&Ranks>,
) -> RuleResult {
    let cx = Ctx {
        node,
        op: node.op(),
        ins: &node.input,
        y: node.output.first().map_or("", String::as_str),
        a: node.input.first().map_or("", String::as_str),
        dt,
        tangent_of,
    };
    match ranks {
        Some(ranks) => stacked::rule(b, &cx, ranks),
        None => ordinary(b, &cx),
    }
}

/// The rule of one node with tangents shaped like their primals.
fn ordinary(b: &mut Builder, cx: &Ctx) -> RuleResult {
    if linear::LINEAR_FIRST.contains(&cx.op) {
        return linear::first_input(b, cx);
    }
    match cx.op {
        "Dropout" => shape::dropout(b, cx),
        "Pad" => shape::pad(b, cx),
        "Cast" => shape::cast(b, cx),
        "CastLike" => shape::cast_like(b, cx),
        "Concat" => shape::concat(b, cx),
        "Add" | "Sub" => linear::add_sub(b, cx),
        "Sum" => linear::sum(b, cx),
        "Mean" => linear::mean(b, cx),
        "MatMul" => linear::matmul(b, cx),
        "Gemm" => linear::gemm(b, cx),
        "Conv" | "ConvTranspose" => linear::conv(b, cx),
        "Einsum" => linear::einsum(b, cx),
        "Mul" => elementwise::mul(b, cx),
        "Div" => elementwise::div(b, cx),
        "Pow" => elementwise::pow(b, cx),
        "Relu" | "LeakyRelu" | "PRelu" | "Elu" => elementwise::rectifier(b, cx),
        "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Reciprocal" | "Erf" | "Softplus" | "Sin"
        | "Cos" | "Abs" | "Gelu" | "Tan" | "Atan" | "Sinh" | "Cosh" | "Softsign" | "Mish"
        | "HardSigmoid" | "HardSwish" | "Selu" | "Celu" => elementwise::activation(b, cx),
        "Clip" => elementwise::clip(b, cx),
        "Max" | "Min" => elementwise::max_min(b, cx),
        "Where" => elementwise::select(b, cx),
        "ReduceMax" | "ReduceMin" | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSumExp" => {
            reductions::reduce(b, cx)
        }
        "MaxPool" => reductions::max_pool(b, cx),
        "Softmax" | "LogSoftmax" => reductions::softmax(b, cx),
        "LayerNormalization" => normalisation::layer_norm(b, cx),
        "InstanceNormalization" | "GroupNormalization" => normalisation::instance_group_norm(b, cx),
        "BatchNormalization" => normalisation::batch_norm(b, cx),
        _ => Err("no tangent rule for this operator".into()),
    }
}
