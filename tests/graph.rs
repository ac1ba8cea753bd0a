//! ONNX graphs: protobuf round trips through ONNX Runtime, every tangent rule
//! against central finite differences, whole fixtures, the likelihood of ONNX
//! Gaussian-mixture models through the tangent graph, unsupported operators.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::field::onnx::{self, OnnxField};
use fmrt::field::{ExtraTensor, Extras, VelocityField};
use fmrt::graph::proto::{
    data_type, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TypeProto, ValueInfoProto,
};
use fmrt::graph::{decode_model, encode_model, tangent_model, unsupported_ops, TangentOptions};
use fmrt::likelihood::Likelihood;
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{Method, SolverConfig};
use fmrt::source::SeededRng;
use ndarray::{Array2, ArrayD, IxDyn};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn runtime() {
    if let Err(e) = onnx::ensure_runtime_for_development() {
        panic!("ONNX Runtime is not available: {e}");
    }
}

fn random(shape: &[usize], lo: f64, hi: f64, seed: u64) -> ArrayD<f64> {
    let mut rng = SeededRng::new(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || lo + (hi - lo) * rng.uniform())
}

fn normal(shape: &[usize], scale: f64, seed: u64) -> ArrayD<f32> {
    let mut rng = SeededRng::new(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || (scale * rng.normal()) as f32)
}

// ---------------------------------------------------------------------------
// Running graphs directly in ONNX Runtime.

/// Creates a session, or returns ONNX Runtime's message.
fn session(bytes: &[u8]) -> Result<Session, String> {
    runtime();
    let (env, _) = onnx::ort_environment(None).map_err(|e| e.to_string())?;
    Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(1)
        .map_err(|e| e.to_string())?
        .commit_from_memory(bytes)
        .map_err(|e| e.to_string())
}

/// Runs `session` on float inputs of element type `dtype`, returns output `y`.
fn run(session: &mut Session, dtype: i32, inputs: &[(&str, &ArrayD<f64>)], y: &str) -> ArrayD<f64> {
    let f32s: Vec<ArrayD<f32>> = inputs.iter().map(|(_, a)| a.mapv(|v| v as f32)).collect();
    let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
    for (k, (name, a)) in inputs.iter().enumerate() {
        let value: SessionInputValue<'_> = if dtype == data_type::DOUBLE {
            TensorRef::from_array_view(a.view()).expect("input").into()
        } else {
            TensorRef::from_array_view(f32s[k].view())
                .expect("input")
                .into()
        };
        values.push((Cow::Borrowed(*name), value));
    }
    let outputs = session.run(values).expect("ONNX Runtime run");
    let value = &outputs[y];
    if dtype == data_type::DOUBLE {
        value
            .try_extract_array::<f64>()
            .expect("f64 output")
            .to_owned()
    } else {
        value
            .try_extract_array::<f32>()
            .expect("f32 output")
            .mapv(|v| v as f64)
    }
}

// ---------------------------------------------------------------------------
// Small graphs built in Rust.

/// A graph under construction: nodes, constants, element type, opset.
struct G {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    dtype: i32,
    seed: u64,
}

impl G {
    fn n(&mut self, op: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{op}_{}", self.nodes.len())),
            op_type: Some(op.to_string()),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// A float constant with values in [lo, hi].
    fn c(&mut self, name: &str, dims: &[usize], lo: f64, hi: f64) {
        self.seed += 1;
        let values = random(dims, lo, hi, 1000 + self.seed);
        self.cv(name, dims, values.iter().copied().collect());
    }

    fn cv(&mut self, name: &str, dims: &[usize], values: Vec<f64>) {
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let raw: Vec<u8> = if self.dtype == data_type::DOUBLE {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            values
                .iter()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect()
        };
        self.inits.push(TensorProto {
            name: Some(name.to_string()),
            dims,
            data_type: Some(self.dtype),
            raw_data: Some(raw),
            ..Default::default()
        });
    }

    fn ci(&mut self, name: &str, values: &[i64]) {
        self.inits
            .push(TensorProto::from_i64(name, &[values.len() as i64], values));
    }

    fn cb(&mut self, name: &str, dims: &[i64], values: &[bool]) {
        self.inits.push(TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(data_type::BOOL),
            raw_data: Some(values.iter().map(|&b| b as u8).collect()),
            ..Default::default()
        });
    }
}

fn tensor_value(name: &str, dtype: i32, dims: Option<&[usize]>) -> ValueInfoProto {
    match dims {
        Some(d) => {
            let d: Vec<Option<i64>> = d.iter().map(|&n| Some(n as i64)).collect();
            ValueInfoProto::tensor(name, dtype, &d, "")
        }
        None => ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(dtype),
                    shape: None,
                })),
                denotation: None,
            }),
            ..Default::default()
        },
    }
}

/// A model with input `x` of `x_dims` and output `y` built by `build`.
fn model(opset: i64, dtype: i32, x_dims: &[usize], build: &dyn Fn(&mut G)) -> ModelProto {
    let mut g = G {
        nodes: Vec::new(),
        inits: Vec::new(),
        dtype,
        seed: 0,
    };
    build(&mut g);
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("fmrt tests".into()),
        graph: Some(GraphProto {
            node: g.nodes,
            name: Some("case".into()),
            initializer: g.inits,
            input: vec![tensor_value("x", dtype, Some(x_dims))],
            output: vec![tensor_value("y", dtype, None)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One tangent-rule case: a graph from `x` to `y`, inputs drawn from [lo, hi].
struct Case {
    name: &'static str,
    opset: i64,
    x: Vec<usize>,
    lo: f64,
    hi: f64,
    build: Box<dyn Fn(&mut G)>,
}

fn case(
    name: &'static str,
    opset: i64,
    x: &[usize],
    (lo, hi): (f64, f64),
    build: impl Fn(&mut G) + 'static,
) -> Case {
    Case {
        name,
        opset,
        x: x.to_vec(),
        lo,
        hi,
        build: Box::new(build),
    }
}

fn a_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto::int(name, v)
}

fn a_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto::float(name, v)
}

fn unary(name: &'static str, range: (f64, f64), attrs: Vec<AttributeProto>) -> Case {
    let opset = if name == "Gelu" { 20 } else { 17 };
    case(name, opset, &[3, 4], range, move |g| {
        g.n(name, &["x"], &["y"], attrs.clone())
    })
}

fn cases() -> Vec<Case> {
    let std = (-1.5, 1.5);
    let pos = (0.5, 2.0);
    let mut v = vec![
        unary("Relu", std, vec![]),
        unary("LeakyRelu", std, vec![a_f("alpha", 0.2)]),
        unary("Elu", std, vec![a_f("alpha", 0.7)]),
        unary("Sigmoid", std, vec![]),
        unary("Tanh", std, vec![]),
        unary("Exp", std, vec![]),
        unary("Log", pos, vec![]),
        unary("Sqrt", pos, vec![]),
        unary("Reciprocal", pos, vec![]),
        unary("Erf", std, vec![]),
        unary("Softplus", std, vec![]),
        unary("Gelu", std, vec![]),
        unary("Sin", std, vec![]),
        unary("Cos", std, vec![]),
        unary("Abs", std, vec![]),
        unary("Neg", std, vec![]),
        unary("Identity", std, vec![]),
        unary("Softmax", std, vec![a_i("axis", 1)]),
        unary("LogSoftmax", std, vec![a_i("axis", 0)]),
        unary("Flatten", std, vec![a_i("axis", 1)]),
        unary(
            "Transpose",
            std,
            vec![AttributeProto::ints("perm", &[1, 0])],
        ),
    ];
    v.push(case("Gelu(tanh)", 20, &[3, 4], std, |g| {
        g.n(
            "Gelu",
            &["x"],
            &["y"],
            vec![AttributeProto::string("approximate", "tanh")],
        )
    }));
    v.push(case("Add+broadcast", 17, &[3, 4], std, |g| {
        g.c("c", &[2, 3, 4], -1.0, 1.0);
        g.n("Add", &["x", "c"], &["y"], vec![]);
    }));
    v.push(case("Add(x,f(x))", 17, &[3, 4], std, |g| {
        g.n("Sin", &["x"], &["s"], vec![]);
        g.n("Add", &["x", "s"], &["y"], vec![]);
    }));
    v.push(case("Sub(c,x)", 17, &[3, 4], std, |g| {
        g.c("c", &[2, 1, 4], -1.0, 1.0);
        g.n("Sub", &["c", "x"], &["y"], vec![]);
    }));
    v.push(case("Sub(x,f(x))", 17, &[3, 4], std, |g| {
        g.n("Exp", &["x"], &["s"], vec![]);
        g.n("Sub", &["x", "s"], &["y"], vec![]);
    }));
    v.push(case("Mul(x,c)", 17, &[3, 4], std, |g| {
        g.c("c", &[4], -2.0, 2.0);
        g.n("Mul", &["x", "c"], &["y"], vec![]);
    }));
    v.push(case("Mul(x,f(x))", 17, &[3, 4], std, |g| {
        g.n("Tanh", &["x"], &["s"], vec![]);
        g.n("Mul", &["x", "s"], &["y"], vec![]);
    }));
    v.push(case("Div(c,x)", 17, &[3, 4], pos, |g| {
        g.c("c", &[3, 1], -2.0, 2.0);
        g.n("Div", &["c", "x"], &["y"], vec![]);
    }));
    v.push(case("Div(x,c)", 17, &[3, 4], std, |g| {
        g.c("c", &[4], 0.5, 2.0);
        g.n("Div", &["x", "c"], &["y"], vec![]);
    }));
    v.push(case("Div(f(x),x)", 17, &[3, 4], pos, |g| {
        g.n("Sin", &["x"], &["s"], vec![]);
        g.n("Div", &["s", "x"], &["y"], vec![]);
    }));
    v.push(case("Pow(x,c)", 17, &[3, 4], pos, |g| {
        g.c("c", &[4], 0.5, 3.0);
        g.n("Pow", &["x", "c"], &["y"], vec![]);
    }));
    v.push(case("Pow(c,x)", 17, &[3, 4], std, |g| {
        g.c("c", &[4], 0.5, 3.0);
        g.n("Pow", &["c", "x"], &["y"], vec![]);
    }));
    v.push(case("Pow(x,x)", 17, &[3, 4], pos, |g| {
        g.n("Pow", &["x", "x"], &["y"], vec![]);
    }));
    v.push(case("MatMul(x,W)", 17, &[3, 4], std, |g| {
        g.c("w", &[4, 5], -1.0, 1.0);
        g.n("MatMul", &["x", "w"], &["y"], vec![]);
    }));
    v.push(case("MatMul(W,x)", 17, &[3, 4], std, |g| {
        g.c("w", &[2, 3], -1.0, 1.0);
        g.n("MatMul", &["w", "x"], &["y"], vec![]);
    }));
    v.push(case("MatMul(x,xT)", 17, &[3, 4], std, |g| {
        g.n(
            "Transpose",
            &["x"],
            &["xt"],
            vec![AttributeProto::ints("perm", &[1, 0])],
        );
        g.n("MatMul", &["x", "xt"], &["y"], vec![]);
    }));
    v.push(case("Gemm(x,W,C)", 17, &[3, 4], std, |g| {
        g.c("w", &[5, 4], -1.0, 1.0);
        g.c("b", &[5], -1.0, 1.0);
        let attrs = vec![a_i("transB", 1), a_f("alpha", 0.7), a_f("beta", 1.3)];
        g.n("Gemm", &["x", "w", "b"], &["y"], attrs);
    }));
    v.push(case("Gemm(x,x,f(x))", 17, &[4, 4], std, |g| {
        g.n("Sin", &["x"], &["s"], vec![]);
        let attrs = vec![a_i("transA", 1), a_f("alpha", 0.5), a_f("beta", 2.0)];
        g.n("Gemm", &["x", "x", "s"], &["y"], attrs);
    }));
    v.push(case("Max(x,f(x),c)", 17, &[3, 4], std, |g| {
        g.c("c", &[4], -1.0, 1.0);
        g.n("Cos", &["x"], &["s"], vec![]);
        g.n("Max", &["x", "s", "c"], &["y"], vec![]);
    }));
    v.push(case("Min(c,x)", 17, &[3, 4], std, |g| {
        g.c("c", &[2, 3, 4], -1.0, 1.0);
        g.n("Min", &["c", "x"], &["y"], vec![]);
    }));
    v.push(case("Clip", 17, &[3, 4], std, |g| {
        g.cv("lo", &[], vec![-0.5]);
        g.cv("hi", &[], vec![0.6]);
        g.n("Clip", &["x", "lo", "hi"], &["y"], vec![]);
    }));
    v.push(case("Where(c,x,f(x))", 17, &[3, 4], std, |g| {
        let mask: Vec<bool> = (0..12).map(|i| i % 3 == 0).collect();
        g.cb("m", &[3, 4], &mask);
        g.n("Sin", &["x"], &["s"], vec![]);
        g.n("Where", &["m", "x", "s"], &["y"], vec![]);
    }));
    v.push(case("Where(c,k,x)", 17, &[4], std, |g| {
        let mask: Vec<bool> = (0..12).map(|i| i % 2 == 0).collect();
        g.cb("m", &[3, 4], &mask);
        g.c("k", &[3, 4], -1.0, 1.0);
        g.n("Where", &["m", "k", "x"], &["y"], vec![]);
    }));
    v.push(case("Concat", 17, &[3, 4], std, |g| {
        g.c("c", &[3, 2], -1.0, 1.0);
        g.n("Sin", &["x"], &["s"], vec![]);
        g.n("Concat", &["x", "c", "s"], &["y"], vec![a_i("axis", 1)]);
    }));
    v.push(case("Split+Mul", 17, &[3, 4], std, |g| {
        g.ci("sp", &[2, 2]);
        g.n("Split", &["x", "sp"], &["p", "q"], vec![a_i("axis", 1)]);
        g.n("Mul", &["p", "q"], &["y"], vec![]);
    }));
    v.push(case("Reshape(Shape)", 17, &[3, 4], std, |g| {
        g.ci("s", &[2, 6]);
        g.n("Reshape", &["x", "s"], &["r"], vec![]);
        g.n("Shape", &["x"], &["xs"], vec![]);
        g.n("Sin", &["r"], &["q"], vec![]);
        g.n("Reshape", &["q", "xs"], &["y"], vec![]);
    }));
    v.push(case("Unsqueeze+Squeeze", 17, &[3, 4], std, |g| {
        g.ci("a0", &[0]);
        g.ci("a1", &[2]);
        g.n("Unsqueeze", &["x", "a0"], &["u"], vec![]);
        g.n("Tanh", &["u"], &["w"], vec![]);
        g.n("Unsqueeze", &["w", "a1"], &["w2"], vec![]);
        g.n("Squeeze", &["w2", "a1"], &["y"], vec![]);
    }));
    v.push(case("Slice", 17, &[3, 4], std, |g| {
        g.ci("st", &[1]);
        g.ci("en", &[4]);
        g.ci("ax", &[1]);
        g.n("Slice", &["x", "st", "en", "ax"], &["y"], vec![]);
    }));
    v.push(case("Gather", 17, &[3, 4], std, |g| {
        g.ci("i", &[2, 0, 2]);
        g.n("Gather", &["x", "i"], &["y"], vec![a_i("axis", 1)]);
    }));
    v.push(case("Expand", 17, &[3, 1], std, |g| {
        g.ci("s", &[2, 3, 4]);
        g.n("Expand", &["x", "s"], &["y"], vec![]);
    }));
    v.push(case("Tile", 17, &[3, 4], std, |g| {
        g.ci("r", &[2, 1]);
        g.n("Tile", &["x", "r"], &["y"], vec![]);
    }));
    v.push(case("Pad(constant 1)", 17, &[3, 4], std, |g| {
        g.ci("p", &[1, 0, 0, 2]);
        g.cv("v", &[], vec![1.0]);
        g.n("Pad", &["x", "p", "v"], &["y"], vec![]);
    }));
    v.push(case("Pad(reflect)", 17, &[3, 4], std, |g| {
        g.ci("p", &[0, 1, 0, 2]);
        let mode = vec![AttributeProto::string("mode", "reflect")];
        g.n("Pad", &["x", "p"], &["y"], mode);
    }));
    v.push(case("Dropout", 17, &[3, 4], std, |g| {
        g.n("Dropout", &["x"], &["y"], vec![]);
    }));
    v.push(case("Cast+Cast", 17, &[3, 4], std, |g| {
        g.n(
            "Cast",
            &["x"],
            &["d"],
            vec![a_i("to", data_type::DOUBLE as i64)],
        );
        g.n("Sin", &["d"], &["s"], vec![]);
        let to = g.dtype as i64;
        g.n("Cast", &["s"], &["y"], vec![a_i("to", to)]);
    }));
    v.push(case("Cast to int", 17, &[3, 4], std, |g| {
        g.n(
            "Cast",
            &["x"],
            &["i"],
            vec![a_i("to", data_type::INT64 as i64)],
        );
        let to = g.dtype as i64;
        g.n("Cast", &["i"], &["f"], vec![a_i("to", to)]);
        g.n("Add", &["x", "f"], &["y"], vec![]);
    }));
    v.push(case("ReduceSum", 17, &[3, 4], std, |g| {
        g.ci("ax", &[1]);
        g.n("Mul", &["x", "x"], &["q"], vec![]);
        g.n("ReduceSum", &["q", "ax"], &["y"], vec![a_i("keepdims", 0)]);
    }));
    v.push(case("ReduceMean", 17, &[3, 4], std, |g| {
        g.n("Exp", &["x"], &["q"], vec![]);
        let axes = AttributeProto::ints("axes", &[0]);
        g.n("ReduceMean", &["q"], &["y"], vec![axes]);
    }));
    v.push(case("Softmax[2,3,4]", 17, &[2, 3, 4], std, |g| {
        g.n("Softmax", &["x"], &["y"], vec![a_i("axis", -2)]);
    }));
    v.push(case("Softmax(opset 11)", 11, &[2, 3, 4], std, |g| {
        g.n("Softmax", &["x"], &["y"], vec![a_i("axis", 1)]);
    }));
    v.push(case("LayerNormalization", 17, &[3, 4], std, |g| {
        g.c("s", &[4], 0.5, 1.5);
        g.c("b", &[4], -1.0, 1.0);
        g.n("LayerNormalization", &["x", "s", "b"], &["y"], vec![]);
    }));
    v.push(case(
        "LayerNormalization(axis 1)",
        17,
        &[2, 3, 4],
        std,
        |g| {
            g.c("s", &[3, 4], 0.5, 1.5);
            let attrs = vec![a_i("axis", 1), a_f("epsilon", 1e-3)];
            g.n("LayerNormalization", &["x", "s"], &["y"], attrs);
        },
    ));
    v.push(case("Conv", 17, &[2, 2, 5, 5], std, |g| {
        g.c("w", &[3, 2, 3, 3], -1.0, 1.0);
        g.c("b", &[3], -1.0, 1.0);
        let attrs = vec![AttributeProto::ints("pads", &[1, 1, 1, 1])];
        g.n("Conv", &["x", "w", "b"], &["y"], attrs);
    }));
    v.push(case("ConvTranspose", 17, &[2, 2, 4, 4], std, |g| {
        g.c("w", &[2, 3, 3, 3], -1.0, 1.0);
        g.c("b", &[3], -1.0, 1.0);
        let attrs = vec![AttributeProto::ints("strides", &[2, 2])];
        g.n("ConvTranspose", &["x", "w", "b"], &["y"], attrs);
    }));
    v.push(case("BatchNormalization", 17, &[2, 3, 4, 4], std, |g| {
        g.c("s", &[3], 0.5, 1.5);
        g.c("b", &[3], -1.0, 1.0);
        g.c("m", &[3], -0.5, 0.5);
        g.c("v", &[3], 0.5, 2.0);
        g.n(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            vec![],
        );
    }));
    v.push(case("InstanceNormalization", 17, &[2, 3, 4, 4], std, |g| {
        g.c("s", &[3], 0.5, 1.5);
        g.c("b", &[3], -1.0, 1.0);
        g.n("InstanceNormalization", &["x", "s", "b"], &["y"], vec![]);
    }));
    // Opset 21 computes in float32 (stash_type) even on float64 data: tested in f32.
    v.push(case(
        "GroupNormalization(21, f32)",
        21,
        &[2, 4, 3, 3],
        std,
        |g| {
            g.c("s", &[4], 0.5, 1.5);
            g.c("b", &[4], -1.0, 1.0);
            let attrs = vec![a_i("num_groups", 2)];
            g.n("GroupNormalization", &["x", "s", "b"], &["y"], attrs);
        },
    ));
    v.push(case(
        "GroupNormalization(18)",
        18,
        &[2, 4, 3, 3],
        std,
        |g| {
            g.c("s", &[2], 0.5, 1.5);
            g.c("b", &[2], -1.0, 1.0);
            let attrs = vec![a_i("num_groups", 2)];
            g.n("GroupNormalization", &["x", "s", "b"], &["y"], attrs);
        },
    ));
    v.push(case("AveragePool", 17, &[1, 2, 4, 4], std, |g| {
        let attrs = vec![AttributeProto::ints("kernel_shape", &[2, 2])];
        g.n("AveragePool", &["x"], &["y"], attrs);
    }));
    v
}

/// JVP and central differences of `model` at random x along random v:
/// (max |jvp − fd|, max |fd|). `Err` if ORT rejects the element type.
fn fd_compare(m: &ModelProto, c: &Case, dtype: i32, seed: u64) -> Result<(f64, f64), String> {
    let tangent = tangent_model(m, &TangentOptions::default()).map_err(|e| format!("{e}"))?;
    let mut s = session(&encode_model(m))?;
    let mut st = session(&encode_model(&tangent))?;
    let x = random(&c.x, c.lo, c.hi, seed);
    let v = random(&c.x, -1.0, 1.0, seed + 1);
    let jvp = run(&mut st, dtype, &[("x", &x), ("x_dot", &v)], "y_dot");
    let eps = if dtype == data_type::DOUBLE {
        1e-6
    } else {
        1e-2
    };
    let plus = run(&mut s, dtype, &[("x", &(&x + &(&v * eps)))], "y");
    let minus = run(&mut s, dtype, &[("x", &(&x - &(&v * eps)))], "y");
    let fd = (plus - minus) / (2.0 * eps);
    if fd.shape() != jvp.shape() {
        return Err(format!(
            "tangent shape {:?} differs from output shape {:?}",
            jvp.shape(),
            fd.shape()
        ));
    }
    let err = jvp
        .iter()
        .zip(&fd)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = fd.iter().map(|a| a.abs()).fold(0.0, f64::max);
    Ok((err, scale))
}

/// Relative tolerances: float64 graphs (ε = 1e-6) and float32 graphs (ε = 1e-2).
const TOL_F64: f64 = 1e-6;
const TOL_F32: f64 = 3e-3;

#[test]
fn every_tangent_rule_matches_central_differences() {
    let mut failures = Vec::new();
    for c in cases() {
        // float64 where ONNX Runtime has the kernels, float32 otherwise.
        let m64 = model(c.opset, data_type::DOUBLE, &c.x, &*c.build);
        let tried = if c.name.ends_with("f32)") {
            Err("float32 only".to_string())
        } else {
            fd_compare(&m64, &c, data_type::DOUBLE, 7)
        };
        let (dtype, result) = match tried {
            Ok(r) => (data_type::DOUBLE, Ok(r)),
            Err(e64) if !e64.contains("cannot differentiate") => {
                let m32 = model(c.opset, data_type::FLOAT, &c.x, &*c.build);
                (data_type::FLOAT, fd_compare(&m32, &c, data_type::FLOAT, 7))
            }
            Err(e) => (data_type::DOUBLE, Err(e)),
        };
        let (tol, kind) = if dtype == data_type::DOUBLE {
            (TOL_F64, "f64")
        } else {
            (TOL_F32, "f32")
        };
        match result {
            Ok((err, scale)) => {
                let rel = err / scale.max(1.0);
                println!(
                    "{:28} {kind}  max|jvp-fd| = {err:.2e}  (max|fd| = {scale:.2})",
                    c.name
                );
                if !(rel <= tol) {
                    failures.push(format!("{}: {kind} error {err:e} (scale {scale})", c.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", c.name)),
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
