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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::f64::consts::PI;

use super::proto::{
    data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use crate::{Error, Result};

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
}

/// An operator on the state's path that has no tangent rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// The operator type (with its domain if not the default one).
    pub op_type: String,
    /// The node's name (`""` if the node has none).
    pub node: String,
    /// Why it is not supported.
    pub reason: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "operator `{}` (node `{}`): {}",
            self.op_type, self.node, self.reason
        )
    }
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
        None => Err(Error::Field(format!(
            "cannot differentiate the model: {}",
            problems
                .iter()
                .map(UnsupportedOp::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))),
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

/// The tangents of a node's outputs as a rule computes them.
enum Out {
    Tangent(String),
    Zero,
    Opaque,
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

/// Operators linear in their first input, the others being parameters that
/// must not depend on x; emitted as the same node on the tangent.
const LINEAR_FIRST: &[&str] = &[
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

struct Builder {
    nodes: Vec<NodeProto>,
    used: HashSet<String>,
    counter: usize,
    opset: i64,
    consts: HashMap<(i32, u64), String>,
}

impl Builder {
    fn fresh(&mut self, base: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("{base}__t{}", self.counter);
            if self.used.insert(name.clone()) {
                return name;
            }
        }
    }

    fn emit_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..outputs).map(|_| self.fresh("tan")).collect();
        let name = self.fresh(&format!("fmrt_tangent_{op}"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: Some(name),
            op_type: Some(op.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        outs
    }

    fn emit(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.emit_n(op, inputs, 1, attrs).remove(0)
    }

    fn op2(&mut self, op: &str, a: &str, b: &str) -> String {
        self.emit(op, &[a, b], vec![])
    }

    fn op1(&mut self, op: &str, a: &str) -> String {
        self.emit(op, &[a], vec![])
    }

    fn constant(&mut self, tensor: TensorProto) -> String {
        self.emit(
            "Constant",
            &[],
            vec![AttributeProto::tensor("value", tensor)],
        )
    }

    /// A scalar constant of element type `dtype`, shared between uses.
    fn scalar(&mut self, dtype: i32, value: f64) -> String {
        let key = (dtype, value.to_bits());
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let name = self.constant(TensorProto::scalar("", dtype, value));
        self.consts.insert(key, name.clone());
        name
    }

    fn ints(&mut self, values: &[i64]) -> String {
        self.constant(TensorProto::from_i64("", &[values.len() as i64], values))
    }

    /// Zeros shaped like `a`, of element type `dtype`.
    fn zeros_like(&mut self, a: &str, dtype: i32) -> String {
        let shape = self.op1("Shape", a);
        let mut value = TensorProto::scalar("", dtype, 0.0);
        value.dims = vec![1];
        self.emit(
            "ConstantOfShape",
            &[&shape],
            vec![AttributeProto::tensor("value", value)],
        )
    }

    /// `t` broadcast to the shape of `y`.
    fn expand_like(&mut self, t: &str, y: &str) -> String {
        let shape = self.op1("Shape", y);
        self.op2("Expand", t, &shape)
    }

    /// A reduction over `axes` keeping dimensions, as the opset spells it.
    fn reduce(&mut self, op: &str, a: &str, axes: &[i64]) -> String {
        let axes_as_input = match op {
            "ReduceSum" => self.opset >= 13,
            _ => self.opset >= 18,
        };
        let keep = AttributeProto::int("keepdims", 1);
        if axes_as_input {
            let axes = self.ints(axes);
            self.emit(op, &[a, &axes], vec![keep])
        } else {
            self.emit(op, &[a], vec![keep, AttributeProto::ints("axes", axes)])
        }
    }

    /// The tangent of the normalization of `x` over `axes`: with x̂ = (x − μ)/σ,
    /// x̂' = (ẋc − x̂·mean(x̂·ẋc))/σ where ẋc = ẋ − mean(ẋ).
    fn normalized_tangent(&mut self, x: &str, xd: &str, axes: &[i64], eps: f32, dt: i32) -> String {
        let mu = self.reduce("ReduceMean", x, axes);
        let xc = self.op2("Sub", x, &mu);
        let sq = self.op2("Mul", &xc, &xc);
        let var = self.reduce("ReduceMean", &sq, axes);
        let e = self.scalar(dt, eps as f64);
        let ve = self.op2("Add", &var, &e);
        let sigma = self.op1("Sqrt", &ve);
        let xhat = self.op2("Div", &xc, &sigma);
        let mud = self.reduce("ReduceMean", xd, axes);
        let xdc = self.op2("Sub", xd, &mud);
        let prod = self.op2("Mul", &xhat, &xdc);
        let m = self.reduce("ReduceMean", &prod, axes);
        let corr = self.op2("Mul", &xhat, &m);
        let num = self.op2("Sub", &xdc, &corr);
        self.op2("Div", &num, &sigma)
    }

    /// `t` (shaped `[N, C, …]`) times a per-channel `scale` of shape `[C]`,
    /// done by an inference BatchNormalization with zero mean and unit variance.
    fn channel_scale(&mut self, t: &str, scale: &str, dt: i32) -> String {
        let shape = self.op1("Shape", scale);
        let mut zero = TensorProto::scalar("", dt, 0.0);
        zero.dims = vec![1];
        let mut one = TensorProto::scalar("", dt, 1.0);
        one.dims = vec![1];
        let zeros = self.emit(
            "ConstantOfShape",
            &[&shape],
            vec![AttributeProto::tensor("value", zero)],
        );
        let ones = self.emit(
            "ConstantOfShape",
            &[&shape],
            vec![AttributeProto::tensor("value", one)],
        );
        self.emit(
            "BatchNormalization",
            &[t, scale, &zeros, &zeros, &ones],
            vec![AttributeProto::float("epsilon", 0.0)],
        )
    }
}

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
    let fail = |m: String| Error::Field(format!("tangent transform: {m}"));
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

    let mut b = Builder {
        nodes: Vec::with_capacity(graph.node.len() * 4),
        used,
        counter: 0,
        opset,
        consts: HashMap::new(),
    };
    let mut tan: HashMap<String, Tan> = HashMap::new();
    let mut dtypes: HashMap<String, i32> = HashMap::new();
    tan.insert(state_name.clone(), Tan::Value(tangent_input.clone()));
    dtypes.insert(tangent_input.clone(), state_dtype);
    let mut problems: Vec<UnsupportedOp> = Vec::new();

    for node in &graph.node {
        b.nodes.push(node.clone());
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
            rule(&mut b, node, &tangent_of, dt).map(|outs| (outs, dt))
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
            b.zeros_like(&output_name, dt)
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

/// The tangent rule of one node; `Err` holds why there is none.
fn rule(
    b: &mut Builder,
    node: &NodeProto,
    tangent_of: &dyn Fn(&str) -> Option<String>,
    dt: i32,
) -> std::result::Result<Vec<Out>, String> {
    let op = node.op();
    let ins = &node.input;
    let input = |k: usize| ins.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let t = |k: usize| input(k).and_then(tangent_of);
    let y = node.output.first().cloned().unwrap_or_default();
    let a = input(0).unwrap_or("").to_string();
    let one = |s: String| Ok(vec![Out::Tangent(s)]);
    let only_first = |what: &str| -> std::result::Result<String, String> {
        if (1..ins.len()).any(|k| t(k).is_some()) {
            return Err(format!("{what} depending on the state is not supported"));
        }
        t(0).ok_or_else(|| format!("{what} depending on the state is not supported"))
    };

    if LINEAR_FIRST.contains(&op) {
        let ad = only_first("an input other than the first")?;
        let mut inputs: Vec<&str> = ins.iter().map(String::as_str).collect();
        inputs[0] = &ad;
        let outs = b.emit_n(op, &inputs, node.output.len(), node.attribute.clone());
        return Ok(outs.into_iter().map(Out::Tangent).collect());
    }

    match op {
        "Dropout" => {
            let ad = only_first("the ratio or training mode")?;
            let mut outs = vec![Out::Tangent(b.op1("Identity", &ad))];
            outs.extend((1..node.output.len()).map(|_| Out::Zero));
            Ok(outs)
        }
        "Pad" => {
            let ad = only_first("pads or a pad value")?;
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
        "Cast" => {
            let to = node.attr_i("to", 0) as i32;
            if !data_type::is_float(to) {
                return Ok(vec![Out::Zero]);
            }
            let ad = only_first("")?;
            one(b.emit("Cast", &[&ad], node.attribute.clone()))
        }
        "CastLike" => {
            let ad = only_first("the target")?;
            one(b.op2("CastLike", &ad, input(1).unwrap_or("")))
        }
        "Add" | "Sub" => {
            let (ad, bd) = (t(0), t(1));
            let r = match (ad, bd) {
                (Some(ad), Some(bd)) => b.op2(op, &ad, &bd),
                (Some(ad), None) => b.expand_like(&ad, &y),
                (None, Some(bd)) => {
                    let s = if op == "Sub" { b.op1("Neg", &bd) } else { bd };
                    b.expand_like(&s, &y)
                }
                (None, None) => return Ok(vec![Out::Zero]),
            };
            one(r)
        }
        "Mean" => {
            let ts: Vec<String> = (0..ins.len()).filter_map(t).collect();
            let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
            let s = b.emit("Sum", &refs, vec![]);
            let n = b.scalar(dt, ins.len() as f64);
            let m = b.op2("Div", &s, &n);
            one(b.expand_like(&m, &y))
        }
        "Einsum" => {
            // Multilinear: one term per varying operand.
            let mut terms = Vec::new();
            for k in 0..ins.len() {
                if let Some(tk) = t(k) {
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
        "MaxPool" => {
            // The tangent at the selected positions: gather by the flat indices.
            let ad = only_first("")?;
            let outs = b.emit_n("MaxPool", &[&a], 2, node.attribute.clone());
            let minus_one = b.ints(&[-1]);
            let flat = b.op2("Reshape", &ad, &minus_one);
            let mut result = vec![Out::Tangent(b.op2("Gather", &flat, &outs[1]))];
            result.extend((1..node.output.len()).map(|_| Out::Zero));
            Ok(result)
        }
        "ReduceMax" | "ReduceMin" | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSumExp" => {
            let ad = only_first("the axes")?;
            let keep = reduce_copy(b, node, op, &a, Some(1));
            let r = match op {
                "ReduceMax" | "ReduceMin" => {
                    // The mean of the tangent over the positions attaining the extremum.
                    let hit = b.op2("Equal", &a, &keep);
                    let mask = b.emit("Cast", &[&hit], vec![AttributeProto::int("to", dt as i64)]);
                    let masked = b.op2("Mul", &ad, &mask);
                    let num = reduce_copy(b, node, "ReduceSum", &masked, None);
                    let den = reduce_copy(b, node, "ReduceSum", &mask, None);
                    b.op2("Div", &num, &den)
                }
                "ReduceL2" => {
                    let p = b.op2("Mul", &a, &ad);
                    let s = reduce_copy(b, node, "ReduceSum", &p, None);
                    b.op2("Div", &s, &y)
                }
                "ReduceSumSquare" => {
                    let p = b.op2("Mul", &a, &ad);
                    let s = reduce_copy(b, node, "ReduceSum", &p, None);
                    let two = b.scalar(dt, 2.0);
                    b.op2("Mul", &s, &two)
                }
                _ => {
                    let d = b.op2("Sub", &a, &keep);
                    let w = b.op1("Exp", &d);
                    let p = b.op2("Mul", &w, &ad);
                    reduce_copy(b, node, "ReduceSum", &p, None)
                }
            };
            one(r)
        }
        "Sum" => {
            let ts: Vec<String> = (0..ins.len()).filter_map(t).collect();
            let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
            let s = b.emit("Sum", &refs, vec![]);
            one(b.expand_like(&s, &y))
        }
        "Mul" => {
            let bb = input(1).unwrap_or("");
            let r = match (t(0), t(1)) {
                (Some(ad), Some(bd)) => {
                    let p = b.op2("Mul", &ad, bb);
                    let q = b.op2("Mul", &a, &bd);
                    b.op2("Add", &p, &q)
                }
                (Some(ad), None) => b.op2("Mul", &ad, bb),
                (None, Some(bd)) => b.op2("Mul", &a, &bd),
                (None, None) => return Ok(vec![Out::Zero]),
            };
            one(r)
        }
        "Div" => {
            let bb = input(1).unwrap_or("");
            let quotient_term = |b: &mut Builder, bd: &str| {
                let p = b.op2("Mul", &y, bd);
                b.op2("Div", &p, bb)
            };
            let r = match (t(0), t(1)) {
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
        "MatMul" => {
            let bb = input(1).unwrap_or("");
            let r = match (t(0), t(1)) {
                (Some(ad), Some(bd)) => {
                    let p = b.op2("MatMul", &ad, bb);
                    let q = b.op2("MatMul", &a, &bd);
                    b.op2("Add", &p, &q)
                }
                (Some(ad), None) => b.op2("MatMul", &ad, bb),
                (None, Some(bd)) => b.op2("MatMul", &a, &bd),
                (None, None) => return Ok(vec![Out::Zero]),
            };
            one(r)
        }
        "Gemm" => {
            let bb = input(1).unwrap_or("");
            let attrs: Vec<AttributeProto> = node
                .attribute
                .iter()
                .filter(|x| x.name.as_deref() != Some("beta"))
                .cloned()
                .collect();
            let mut terms = Vec::new();
            if let Some(ad) = t(0) {
                terms.push(b.emit("Gemm", &[&ad, bb], attrs.clone()));
            }
            if let Some(bd) = t(1) {
                terms.push(b.emit("Gemm", &[&a, &bd], attrs.clone()));
            }
            if let Some(cd) = t(2) {
                let beta = b.scalar(dt, node.attr_f("beta", 1.0) as f64);
                let c = b.op2("Mul", &cd, &beta);
                terms.push(b.expand_like(&c, &y));
            }
            let mut r = terms.pop().ok_or("no varying input")?;
            for s in terms {
                r = b.op2("Add", &s, &r);
            }
            one(r)
        }
        "Conv" | "ConvTranspose" => {
            if t(2).is_some() {
                return Err("a bias depending on the state is not supported".into());
            }
            let w = input(1).unwrap_or("");
            let mut terms = Vec::new();
            if let Some(xd) = t(0) {
                terms.push(b.emit(op, &[&xd, w], node.attribute.clone()));
            }
            if let Some(wd) = t(1) {
                terms.push(b.emit(op, &[&a, &wd], node.attribute.clone()));
            }
            let mut r = terms.pop().ok_or("no varying input")?;
            for s in terms {
                r = b.op2("Add", &s, &r);
            }
            one(r)
        }
        "Pow" => {
            let e = input(1).unwrap_or("");
            let mut terms = Vec::new();
            if let Some(ad) = t(0) {
                // d(a^e) = e·a^(e−1)·da
                let e_dt = b.emit("Cast", &[e], vec![AttributeProto::int("to", dt as i64)]);
                let one_c = b.scalar(dt, 1.0);
                let em1 = b.op2("Sub", &e_dt, &one_c);
                let p = b.op2("Pow", &a, &em1);
                let q = b.op2("Mul", &p, &e_dt);
                terms.push(b.op2("Mul", &q, &ad));
            }
            if let Some(ed) = t(1) {
                // d(a^e) = a^e·ln a·de
                let l = b.op1("Log", &a);
                let p = b.op2("Mul", &y, &l);
                terms.push(b.op2("Mul", &p, &ed));
            }
            let mut r = terms.pop().ok_or("no varying input")?;
            for s in terms {
                r = b.op2("Add", &s, &r);
            }
            one(b.expand_like(&r, &y))
        }
        "Relu" | "LeakyRelu" | "PRelu" | "Elu" => {
            let ad = only_first("the slope")?;
            let zero = b.scalar(dt, 0.0);
            let pos = b.op2("Greater", &a, &zero);
            let neg = match op {
                "Relu" => zero,
                "LeakyRelu" => {
                    let alpha = b.scalar(dt, node.attr_f("alpha", 0.01) as f64);
                    b.op2("Mul", &ad, &alpha)
                }
                "PRelu" => b.op2("Mul", &ad, input(1).unwrap_or("")),
                _ => {
                    let alpha = b.scalar(dt, node.attr_f("alpha", 1.0) as f64);
                    let s = b.op2("Add", &y, &alpha);
                    b.op2("Mul", &ad, &s)
                }
            };
            let w = b.emit("Where", &[&pos, &ad, &neg], vec![]);
            one(b.expand_like(&w, &y))
        }
        "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Reciprocal" | "Erf" | "Softplus" | "Sin"
        | "Cos" | "Abs" | "Gelu" | "Tan" | "Atan" | "Sinh" | "Cosh" | "Softsign" | "Mish"
        | "HardSigmoid" | "HardSwish" | "Selu" | "Celu" => {
            let ad = only_first("")?;
            let d = match op {
                "Sigmoid" => {
                    let one_c = b.scalar(dt, 1.0);
                    let c = b.op2("Sub", &one_c, &y);
                    b.op2("Mul", &y, &c)
                }
                "Tanh" => {
                    let one_c = b.scalar(dt, 1.0);
                    let sq = b.op2("Mul", &y, &y);
                    b.op2("Sub", &one_c, &sq)
                }
                "Exp" => y.clone(),
                "Log" => return one(b.op2("Div", &ad, &a)),
                "Sqrt" => {
                    let two = b.scalar(dt, 2.0);
                    let den = b.op2("Mul", &y, &two);
                    return one(b.op2("Div", &ad, &den));
                }
                "Reciprocal" => {
                    let sq = b.op2("Mul", &y, &y);
                    let p = b.op2("Mul", &ad, &sq);
                    return one(b.op1("Neg", &p));
                }
                "Erf" => {
                    let c = b.scalar(dt, 2.0 / PI.sqrt());
                    let sq = b.op2("Mul", &a, &a);
                    let n = b.op1("Neg", &sq);
                    let e = b.op1("Exp", &n);
                    b.op2("Mul", &e, &c)
                }
                "Softplus" => b.op1("Sigmoid", &a),
                "Sin" => b.op1("Cos", &a),
                "Cos" => {
                    let s = b.op1("Sin", &a);
                    b.op1("Neg", &s)
                }
                "Abs" => b.op1("Sign", &a),
                "Tan" => {
                    let one_c = b.scalar(dt, 1.0);
                    let sq = b.op2("Mul", &y, &y);
                    b.op2("Add", &sq, &one_c)
                }
                "Atan" => {
                    let one_c = b.scalar(dt, 1.0);
                    let sq = b.op2("Mul", &a, &a);
                    let den = b.op2("Add", &sq, &one_c);
                    return one(b.op2("Div", &ad, &den));
                }
                "Sinh" => b.op1("Cosh", &a),
                "Cosh" => b.op1("Sinh", &a),
                "Softsign" => {
                    // 1/(1+|a|)² = (1 − |y|)²
                    let one_c = b.scalar(dt, 1.0);
                    let m = b.op1("Abs", &y);
                    let c = b.op2("Sub", &one_c, &m);
                    b.op2("Mul", &c, &c)
                }
                "Mish" => {
                    // tanh(sp) + a·(1 − tanh²(sp))·σ(a), sp = softplus(a)
                    let one_c = b.scalar(dt, 1.0);
                    let sp = b.op1("Softplus", &a);
                    let th = b.op1("Tanh", &sp);
                    let th2 = b.op2("Mul", &th, &th);
                    let sech2 = b.op2("Sub", &one_c, &th2);
                    let sg = b.op1("Sigmoid", &a);
                    let p = b.op2("Mul", &sech2, &sg);
                    let q = b.op2("Mul", &p, &a);
                    b.op2("Add", &th, &q)
                }
                "HardSigmoid" => {
                    let alpha = node.attr_f("alpha", 0.2) as f64;
                    hard_sigmoid_slope(b, &y, alpha, dt)
                }
                "HardSwish" => {
                    // y = a·h(a), h = HardSigmoid(a; 1/6, 1/2): h + a·h'
                    let h = b.emit(
                        "HardSigmoid",
                        &[&a],
                        vec![
                            AttributeProto::float("alpha", 1.0 / 6.0),
                            AttributeProto::float("beta", 0.5),
                        ],
                    );
                    let slope = hard_sigmoid_slope(b, &h, 1.0 / 6.0, dt);
                    let p = b.op2("Mul", &slope, &a);
                    b.op2("Add", &h, &p)
                }
                "Selu" | "Celu" => {
                    // Selu: γ for a > 0, else y + γα; Celu: 1, else y/α + 1.
                    let (pos_slope, neg) = if op == "Selu" {
                        let alpha = node.attr_f("alpha", 1.673_263_2) as f64;
                        let gamma = node.attr_f("gamma", 1.050_701) as f64;
                        let ga = b.scalar(dt, gamma * alpha);
                        (b.scalar(dt, gamma), b.op2("Add", &y, &ga))
                    } else {
                        let alpha = node.attr_f("alpha", 1.0) as f64;
                        let inv = b.scalar(dt, 1.0 / alpha);
                        let one_c = b.scalar(dt, 1.0);
                        let q = b.op2("Mul", &y, &inv);
                        let neg = b.op2("Add", &q, &one_c);
                        (one_c, neg)
                    };
                    let zero = b.scalar(dt, 0.0);
                    let pos = b.op2("Greater", &a, &zero);
                    b.emit("Where", &[&pos, &pos_slope, &neg], vec![])
                }
                _ => gelu_derivative(b, node, &a, dt)?,
            };
            one(b.op2("Mul", &ad, &d))
        }
        "Clip" => {
            let ad = only_first("a bound")?;
            let same = b.op2("Equal", &y, &a);
            let zero = b.scalar(dt, 0.0);
            one(b.emit("Where", &[&same, &ad, &zero], vec![]))
        }
        "Max" | "Min" => {
            let n = ins.len();
            let zero = b.scalar(dt, 0.0);
            let last = t(n - 1).unwrap_or_else(|| zero.clone());
            let mut r = b.expand_like(&last, &y);
            for k in (0..n - 1).rev() {
                let ak = input(k).unwrap_or("");
                let pick = b.op2("Equal", &y, ak);
                let tk = t(k).unwrap_or_else(|| zero.clone());
                r = b.emit("Where", &[&pick, &tk, &r], vec![]);
            }
            one(r)
        }
        "Where" => {
            if t(0).is_some() {
                return Err("a condition depending on the state".into());
            }
            let zero = b.scalar(dt, 0.0);
            let ad = t(1).unwrap_or_else(|| zero.clone());
            let bd = t(2).unwrap_or(zero);
            let w = b.emit("Where", &[input(0).unwrap_or(""), &ad, &bd], vec![]);
            one(b.expand_like(&w, &y))
        }
        "Concat" => {
            let mut parts = Vec::new();
            for k in 0..ins.len() {
                match t(k) {
                    Some(s) => parts.push(s),
                    None => parts.push(b.zeros_like(input(k).unwrap_or(""), dt)),
                }
            }
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            one(b.emit("Concat", &refs, node.attribute.clone()))
        }
        "Softmax" | "LogSoftmax" => {
            let ad = only_first("")?;
            let axis = node.attr_i("axis", if b.opset >= 13 { -1 } else { 1 });
            let (yy, aa, ax) = if b.opset >= 13 {
                (y.clone(), ad, axis)
            } else {
                // Before opset 13 the input is coerced to 2-D at `axis`.
                let f = vec![AttributeProto::int("axis", axis)];
                let y2 = b.emit("Flatten", &[&y], f.clone());
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
                let shape = b.op1("Shape", &y);
                r = b.op2("Reshape", &r, &shape);
            }
            one(r)
        }
        "LayerNormalization" => {
            let ad = only_first("the scale or bias")?;
            let axis = node.attr_i("axis", -1);
            let eps = node.attr_f("epsilon", 1e-5);
            let f = vec![AttributeProto::int("axis", axis)];
            let x2 = b.emit("Flatten", &[&a], f.clone());
            let d2 = b.emit("Flatten", &[&ad], f);
            let n = b.normalized_tangent(&x2, &d2, &[1], eps, dt);
            let shape = b.op1("Shape", &a);
            let r = b.op2("Reshape", &n, &shape);
            let mut outs = vec![Out::Tangent(b.op2("Mul", &r, input(1).unwrap_or("")))];
            outs.extend((1..node.output.len()).map(|_| Out::Opaque));
            Ok(outs)
        }
        "InstanceNormalization" | "GroupNormalization" => {
            let ad = only_first("the scale or bias")?;
            let eps = node.attr_f("epsilon", 1e-5);
            let groups = node.attr_i("num_groups", 0);
            let spec = if op == "InstanceNormalization" {
                b.ints(&[0, 0, -1])
            } else {
                b.ints(&[0, groups, -1])
            };
            let x3 = b.op2("Reshape", &a, &spec);
            let d3 = b.op2("Reshape", &ad, &spec);
            let mut n = b.normalized_tangent(&x3, &d3, &[2], eps, dt);
            let scale = input(1).unwrap_or("");
            let per_group = op == "GroupNormalization" && b.opset < 21;
            if per_group {
                n = b.channel_scale(&n, scale, dt);
            }
            let shape = b.op1("Shape", &a);
            let mut r = b.op2("Reshape", &n, &shape);
            if !per_group {
                r = b.channel_scale(&r, scale, dt);
            }
            one(r)
        }
        "BatchNormalization" => {
            if node.attr_i("training_mode", 0) != 0 || node.output.len() > 1 {
                return Err("training mode is not supported (export for inference)".into());
            }
            let ad = only_first("a parameter")?;
            let bias = input(2).unwrap_or("");
            let mean = input(3).unwrap_or("");
            let zb = b.zeros_like(bias, dt);
            let zm = b.zeros_like(mean, dt);
            let r = b.emit(
                "BatchNormalization",
                &[
                    &ad,
                    input(1).unwrap_or(""),
                    &zb,
                    &zm,
                    input(4).unwrap_or(""),
                ],
                node.attribute.clone(),
            );
            one(r)
        }
        _ => Err("no tangent rule for this operator".into()),
    }
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
