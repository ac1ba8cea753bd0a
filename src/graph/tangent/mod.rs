//! The forward-mode tangent transform of an ONNX graph.
//!
//! From a graph computing `v = f(x, …)` [`tangent_model`] builds a graph with an
//! extra input `x_dot` (shaped like `x`) and an extra output `v_dot` =
//! (∂f/∂x)·`x_dot`. Each node on the path from `x` gets tangent nodes emitted
//! right after it: linear operators act on tangents, products use the product
//! rule, elementwise nonlinearities multiply by their derivative, and softmax
//! and the normalizations use their exact derivative formulas expanded into
//! primitive operators. Values that do not depend on `x` (weights, time paths,
//! integer and shape computations) carry no tangent.
//!
//! Every tangent has exactly the shape of its primal value. An operator on the
//! `x` path without a rule is an error naming the operator type and the node;
//! [`unsupported_ops`] lists all of them (for `fmrt inspect`).
//!
//! The code is laid out by what it does: this file holds the API and the driver
//! that walks the nodes and decides which values carry tangents; `builder`
//! emits the new nodes; `rules` picks the rule for a node's operator, the rules
//! themselves being grouped by kind of operator (`linear`, `elementwise`,
//! `reductions`, `normalisation`, `shape`).

mod builder;
mod rank;
mod rules;

use std::collections::{BTreeSet, HashMap, HashSet};

use super::proto::{
    data_type, type_proto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    ValueInfoProto,
};
pub use crate::error::UnsupportedOp;
use crate::{Error, Result};
use builder::Builder;
use rank::Ranks;
use rules::{rule, Out};

/// What to transform and how to name the new input and output.
#[derive(Clone, Debug, Default)]
pub struct TangentOptions {
    /// The state input x (default: the first graph input).
    pub state_input: Option<String>,
    /// The output v to differentiate (default: the first graph output).
    pub output: Option<String>,
    /// The name of the tangent input (default: `<state>_dot`).
    pub tangent_input: Option<String>,
    /// The name of the tangent output (default: `<output>_dot`). It may equal
    /// the output's own name when `drop_outputs` is set: the primal value is
    /// then renamed inside the graph.
    pub tangent_output: Option<String>,
    /// Remove the original outputs, keeping only the tangent output.
    pub drop_outputs: bool,
    /// The stacked form: the tangent input carries a leading tangent axis,
    /// `[P, ...shape of x]`, so P directions share one evaluation of the
    /// primal, and the tangent output is `[P, ...shape of the output]`. It
    /// covers the operators of MLPs, convolutional nets and attention blocks
    /// (elementwise functions, MatMul, Gemm, Conv, ConvTranspose, average
    /// pooling, Resize, DepthToSpace, SpaceToDepth, Concat, Slice, Gather,
    /// Split, axis and reshape operators, Softmax, Layer-, Instance-, Group-
    /// and inference BatchNormalization); any other operator on the state's path (MaxPool,
    /// Expand, Tile...) makes the transform fail, naming it, and the
    /// per-direction form remains available.
    pub stacked: bool,
}

/// Builds the tangent model of `model` (see the module documentation).
///
/// The result keeps the model's opsets, metadata, functions and initializers.
/// Errors: the state input or output is missing or not floating point, or an
/// operator on the path from the state to the output has no tangent rule (the
/// message names each such operator and its node).
pub fn tangent_model(model: &ModelProto, options: &TangentOptions) -> Result<ModelProto> {
    let (out, problems) = transform(model, options)?;
    match out {
        Some(m) => Ok(m),
        None => {
            let mut problems = problems.into_iter();
            let first = problems.next().unwrap_or_else(|| UnsupportedOp {
                op_type: String::new(),
                node: String::new(),
                reason: "no rule".to_string(),
            });
            Err(Error::UnsupportedOperator {
                file: "the model".to_string(),
                op_type: first.op_type,
                node: first.node,
                reason: first.reason,
                others: problems.collect(),
            })
        }
    }
}

/// Every node depending on the state input whose operator has no tangent rule
/// (empty: [`tangent_model`] succeeds for the first output).
pub fn unsupported_ops(
    model: &ModelProto,
    state_input: Option<&str>,
) -> Result<Vec<UnsupportedOp>> {
    let options = TangentOptions {
        state_input: state_input.map(str::to_string),
        ..Default::default()
    };
    Ok(transform(model, &options)?.1)
}

/// The tangent of one value.
#[derive(Clone, Debug)]
enum Tan {
    /// Depends on x; the name of its tangent.
    Value(String),
    /// Depends on x but has no tangent; the problems that caused it.
    Opaque(BTreeSet<usize>),
}

/// Operators whose outputs never carry a tangent (shapes, comparisons, integer
/// results, piecewise-constant functions).
const NO_TANGENT: &[&str] = &[
    "Shape",
    "Size",
    "ConstantOfShape",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "IsInf",
    "ArgMax",
    "ArgMin",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "NonZero",
    "Range",
    "EyeLike",
    "RandomNormalLike",
    "RandomUniformLike",
    "BitShift",
    "Mod",
];

fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
}

/// Names every value of `graph` (and of nested graphs) uses.
fn collect_names(graph: &GraphProto, used: &mut HashSet<String>) {
    for v in graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
    {
        if let Some(n) = &v.name {
            used.insert(n.clone());
        }
    }
    for t in &graph.initializer {
        if let Some(n) = &t.name {
            used.insert(n.clone());
        }
    }
    for node in &graph.node {
        used.extend(node.input.iter().cloned());
        used.extend(node.output.iter().cloned());
        if let Some(n) = &node.name {
            used.insert(n.clone());
        }
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                collect_names(g, used);
            }
        }
    }
}

/// Names a nested graph reads (inputs of its nodes, recursively).
fn subgraph_reads(graph: &GraphProto, out: &mut HashSet<String>) {
    for node in &graph.node {
        out.extend(node.input.iter().cloned());
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                subgraph_reads(g, out);
            }
        }
    }
}

/// The transform; `None` when some operator on the output's path has no rule.
fn transform(
    model: &ModelProto,
    options: &TangentOptions,
) -> Result<(Option<ModelProto>, Vec<UnsupportedOp>)> {
    let fail = |m: String| Error::model_load("the model", format!("tangent transform: {m}"));
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model has no graph".into()))?;
    let opset = default_opset(model)
        .ok_or_else(|| fail("the model imports no default-domain opset".into()))?;
    let initializers: HashSet<&str> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let real_inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_deref().unwrap_or("")))
        .collect();
    let state = match &options.state_input {
        Some(s) => real_inputs
            .iter()
            .find(|i| i.name.as_deref() == Some(s))
            .ok_or_else(|| fail(format!("the model has no input `{s}`")))?,
        None => real_inputs
            .first()
            .ok_or_else(|| fail("the model has no inputs".into()))?,
    };
    let state_name = state.name.clone().unwrap_or_default();
    let state_dtype = state.elem_type().unwrap_or(0);
    if !data_type::is_float(state_dtype) {
        return Err(fail(format!(
            "the state input `{state_name}` is not a floating-point tensor"
        )));
    }
    let output = match &options.output {
        Some(s) => graph
            .output
            .iter()
            .find(|o| o.name.as_deref() == Some(s))
            .ok_or_else(|| fail(format!("the model has no output `{s}`")))?,
        None => graph
            .output
            .first()
            .ok_or_else(|| fail("the model has no outputs".into()))?,
    };
    let mut output_name = output.name.clone().unwrap_or_default();
    let tangent_input = options
        .tangent_input
        .clone()
        .unwrap_or_else(|| format!("{state_name}_dot"));
    let tangent_output = options
        .tangent_output
        .clone()
        .unwrap_or_else(|| format!("{output_name}_dot"));

    let mut used = HashSet::new();
    collect_names(graph, &mut used);
    let mut graph = graph.clone();
    if tangent_output == output_name && options.drop_outputs {
        // The tangent takes the output's name: rename the primal value.
        if !graph.node.iter().any(|n| n.output.contains(&output_name)) {
            return Err(fail(format!(
                "the output `{output_name}` is not computed by a node (it is a graph input or \
                 initializer), so its tangent cannot take its name"
            )));
        }
        let mut k = 0;
        let renamed = loop {
            k += 1;
            let n = format!("{output_name}__primal{k}");
            if !used.contains(&n) {
                break n;
            }
        };
        for node in &mut graph.node {
            for s in node.input.iter_mut().chain(node.output.iter_mut()) {
                if *s == output_name {
                    *s = renamed.clone();
                }
            }
        }
        used.insert(renamed.clone());
        output_name = renamed;
    } else if used.contains(&tangent_output) {
        return Err(fail(format!(
            "the tangent output name `{tangent_output}` is already used in the graph"
        )));
    }
    if used.contains(&tangent_input) {
        return Err(fail(format!(
            "the tangent input name `{tangent_input}` is already used in the graph"
        )));
    }
    used.insert(tangent_input.clone());
    used.insert(tangent_output.clone());

    let mut b = Builder::new(graph.node.len() * 4, used, opset);
    let mut ranks = options.stacked.then(|| Ranks::of_graph(&graph));
    if options.stacked {
        b.stack_on(&tangent_input);
    }
    let silu = silu_patterns(&graph);
    let mut tan: HashMap<String, Tan> = HashMap::new();
    let mut dtypes: HashMap<String, i32> = HashMap::new();
    tan.insert(state_name.clone(), Tan::Value(tangent_input.clone()));
    dtypes.insert(tangent_input.clone(), state_dtype);
    let mut problems: Vec<UnsupportedOp> = Vec::new();

    for node in &graph.node {
        b.nodes.push(node.clone());
        if let Some(ranks) = &mut ranks {
            ranks.record(node);
        }
        let mut opaque: BTreeSet<usize> = BTreeSet::new();
        let mut varying = false;
        for i in &node.input {
            match tan.get(i) {
                Some(Tan::Value(_)) => varying = true,
                Some(Tan::Opaque(p)) => opaque.extend(p),
                None => {}
            }
        }
        let mut sub_reads = HashSet::new();
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                subgraph_reads(g, &mut sub_reads);
            }
        }
        let sub_varying = sub_reads.iter().any(|n| tan.contains_key(n));
        let op = node.op();
        let domain = node.domain.as_deref().unwrap_or("");
        let default_domain = domain.is_empty() || domain == "ai.onnx";
        if (!varying && opaque.is_empty() && !sub_varying)
            || (default_domain && NO_TANGENT.contains(&op))
        {
            continue;
        }
        let mark_opaque = |tan: &mut HashMap<String, Tan>, set: &BTreeSet<usize>| {
            for o in &node.output {
                if !o.is_empty() {
                    tan.insert(o.clone(), Tan::Opaque(set.clone()));
                }
            }
        };
        if !opaque.is_empty() {
            mark_opaque(&mut tan, &opaque);
            continue;
        }
        if let Some(pattern) = silu.get(node.output.first().map_or("", String::as_str)) {
            match (op, tan.get(&pattern.input)) {
                // The Sigmoid of a SiLU: its tangent is folded into the Mul's.
                ("Sigmoid", _) => continue,
                ("Mul", Some(Tan::Value(ad))) => {
                    let ad = ad.clone();
                    let dt = dtypes.get(&ad).copied().unwrap_or(state_dtype);
                    let name = rules::silu(
                        &mut b,
                        &ad,
                        &pattern.input,
                        &pattern.sigmoid,
                        &node.output[0],
                        dt,
                    );
                    dtypes.insert(name.clone(), dt);
                    tan.insert(node.output[0].clone(), Tan::Value(name));
                    continue;
                }
                _ => {}
            }
        }
        let mark = b.nodes.len();
        let result = if !default_domain {
            Err(format!(
                "operators of domain `{domain}` have no tangent rule"
            ))
        } else if sub_varying {
            Err("a nested graph reads a value depending on the state".to_string())
        } else {
            let tangent_of = |name: &str| match tan.get(name) {
                Some(Tan::Value(t)) => Some(t.clone()),
                _ => None,
            };
            let dt = node
                .input
                .iter()
                .find_map(|i| tangent_of(i))
                .and_then(|t| dtypes.get(&t).copied())
                .unwrap_or(state_dtype);
            rule(&mut b, node, &tangent_of, dt, ranks.as_ref()).map(|outs| (outs, dt))
        };
        match result {
            Ok((outs, dt)) => {
                for (o, t) in node.output.iter().zip(outs) {
                    if o.is_empty() {
                        continue;
                    }
                    match t {
                        Out::Tangent(name) => {
                            let d = if op == "Cast" {
                                node.attr_i("to", dt as i64) as i32
                            } else {
                                dt
                            };
                            dtypes.insert(name.clone(), d);
                            tan.insert(o.clone(), Tan::Value(name));
                        }
                        Out::Zero => {}
                        Out::Opaque => {
                            problems.push(UnsupportedOp {
                                op_type: op.to_string(),
                                node: node.node_name().to_string(),
                                reason: format!("its output `{o}` has no tangent"),
                            });
                            let set = BTreeSet::from([problems.len() - 1]);
                            tan.insert(o.clone(), Tan::Opaque(set));
                        }
                    }
                }
            }
            Err(reason) => {
                b.nodes.truncate(mark);
                let op_type = if default_domain {
                    op.to_string()
                } else {
                    format!("{domain}.{op}")
                };
                problems.push(UnsupportedOp {
                    op_type,
                    node: node.node_name().to_string(),
                    reason,
                });
                mark_opaque(&mut tan, &BTreeSet::from([problems.len() - 1]));
            }
        }
    }

    let out_tangent = match tan.get(&output_name).cloned() {
        Some(Tan::Value(t)) => t,
        Some(Tan::Opaque(set)) => {
            let relevant: Vec<UnsupportedOp> = set.iter().map(|&i| problems[i].clone()).collect();
            return Ok((None, relevant));
        }
        None => {
            let dt = output.elem_type().unwrap_or(state_dtype);
            if b.is_stacked() {
                b.stacked_zeros_like(&output_name, dt).map_err(fail)?
            } else {
                b.zeros_like(&output_name, dt)
            }
        }
    };
    let final_name = b.fresh("fmrt_tangent_output");
    b.nodes.push(NodeProto {
        input: vec![out_tangent],
        output: vec![tangent_output.clone()],
        name: Some(final_name),
        op_type: Some("Identity".to_string()),
        ..Default::default()
    });

    let mut x_dot = (*state).clone();
    x_dot.name = Some(tangent_input);
    x_dot.doc_string = Some("tangent direction of the state".to_string());
    let mut v_dot = output.clone();
    v_dot.name = Some(tangent_output);
    v_dot.doc_string = Some("Jacobian-vector product of the output".to_string());
    if options.stacked {
        with_tangent_axis(&mut x_dot);
        with_tangent_axis(&mut v_dot);
    }
    graph.node = b.nodes;
    // The tangent input goes right after the state input.
    let at = graph
        .input
        .iter()
        .position(|i| i.name.as_deref() == Some(state_name.as_str()))
        .map_or(graph.input.len(), |p| p + 1);
    graph.input.insert(at, x_dot);
    if options.drop_outputs {
        graph.output.clear();
    }
    graph.output.push(v_dot);
    let mut out = model.clone();
    out.graph = Some(graph);
    Ok((Some(out), problems))
}

/// A SiLU as exported, y = a·σ(a): a Sigmoid node whose only consumer is
/// `Mul(a, σ(a))` (either order).
struct Silu {
    /// a.
    input: String,
    /// σ(a).
    sigmoid: String,
}

/// The SiLU patterns of `graph`, keyed by both the Sigmoid's and the Mul's
/// output: their tangent is emitted as one fused expression,
/// ẏ = ȧ·σ(a)·(1 + a·(1 − σ(a))), with the derivative computed on the
/// primal alone (once for all directions in the stacked form).
fn silu_patterns(graph: &GraphProto) -> HashMap<String, Silu> {
    // How often each value is read; a read by a nested graph counts twice,
    // so such a value is never fused.
    let mut consumers: HashMap<String, usize> = HashMap::new();
    for node in &graph.node {
        for i in &node.input {
            *consumers.entry(i.clone()).or_default() += 1;
        }
        let mut reads = HashSet::new();
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                subgraph_reads(g, &mut reads);
            }
        }
        for r in reads {
            *consumers.entry(r).or_default() += 2;
        }
    }
    let outputs: HashSet<&str> = graph
        .output
        .iter()
        .filter_map(|o| o.name.as_deref())
        .collect();
    let sigmoid_of: HashMap<&str, &str> = graph
        .node
        .iter()
        .filter(|n| n.op() == "Sigmoid" && is_default_domain(n) && n.input.len() == 1)
        .filter_map(|n| Some((n.output.first()?.as_str(), n.input[0].as_str())))
        .collect();
    let mut found = HashMap::new();
    for node in &graph.node {
        if node.op() != "Mul" || !is_default_domain(node) || node.input.len() != 2 {
            continue;
        }
        let (p, q) = (node.input[0].as_str(), node.input[1].as_str());
        let (a, s) = match (sigmoid_of.get(q), sigmoid_of.get(p)) {
            (Some(&arg), _) if arg == p => (p, q),
            (_, Some(&arg)) if arg == q => (q, p),
            _ => continue,
        };
        if consumers.get(s) != Some(&1) || outputs.contains(s) {
            continue;
        }
        let pattern = || Silu {
            input: a.to_string(),
            sigmoid: s.to_string(),
        };
        found.insert(s.to_string(), pattern());
        if let Some(y) = node.output.first() {
            found.insert(y.clone(), pattern());
        }
    }
    found
}

fn is_default_domain(node: &NodeProto) -> bool {
    matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

/// Prepends the tangent axis `P` to a declared tensor shape (stacked form).
fn with_tangent_axis(value: &mut ValueInfoProto) {
    let Some(type_proto::Value::TensorType(t)) =
        value.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        return;
    };
    if let Some(shape) = &mut t.shape {
        shape.dim.insert(
            0,
            Dimension {
                value: Some(DimensionValue::DimParam("P".to_string())),
                denotation: None,
            },
        );
    }
}
