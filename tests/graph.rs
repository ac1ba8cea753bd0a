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
use fmrt::random::SeededRng;
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{Method, SolverConfig};
use ndarray::{Array2, ArrayD, IxDyn};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn runtime() {
    if let Err(e) =
        onnx::ensure_runtime_for_development(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
    {
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
    let opset = match name {
        "Gelu" => 20,
        "Mish" => 18,
        _ => 17,
    };
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
        unary("Tan", (-1.0, 1.0), vec![]),
        unary("Atan", std, vec![]),
        unary("Sinh", std, vec![]),
        unary("Cosh", std, vec![]),
        unary("Softsign", std, vec![]),
        unary("Mish", std, vec![]),
        unary("HardSigmoid", (-2.0, 2.0), vec![a_f("alpha", 0.4)]),
        unary("HardSwish", (-4.0, 4.0), vec![]),
        unary("Selu", std, vec![]),
        unary("Celu", std, vec![a_f("alpha", 0.8)]),
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
    v.push(case("Pow(x,c) opset 13", 13, &[3, 4], pos, |g| {
        g.ci("c", &[2]);
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
    v.push(case("SiLU(x·σ(x))", 17, &[3, 4], (-4.0, 4.0), |g| {
        g.n("Sigmoid", &["x"], &["s"], vec![]);
        g.n("Mul", &["x", "s"], &["y"], vec![]);
    }));
    v.push(case("SiLU(σ(Wx)·Wx)", 17, &[3, 4], (-4.0, 4.0), |g| {
        g.c("w", &[4, 4], -1.0, 1.0);
        g.n("MatMul", &["x", "w"], &["h"], vec![]);
        g.n("Sigmoid", &["h"], &["s"], vec![]);
        g.n("Mul", &["s", "h"], &["y"], vec![]);
    }));
    v.push(case(
        "σ(x) shared by SiLU and Add",
        17,
        &[3, 4],
        std,
        |g| {
            // The Sigmoid has a second consumer: not fused.
            g.n("Sigmoid", &["x"], &["s"], vec![]);
            g.n("Mul", &["x", "s"], &["m"], vec![]);
            g.n("Add", &["m", "s"], &["y"], vec![]);
        },
    ));
    v.push(case("Mul(x,sum0(x))", 17, &[3, 4], std, |g| {
        // A rank-1 value depending on x broadcast against a rank-2 one.
        g.ci("ax", &[0]);
        g.n("ReduceSum", &["x", "ax"], &["r"], vec![a_i("keepdims", 0)]);
        g.n("Mul", &["x", "r"], &["y"], vec![]);
    }));
    v.push(case("Gemm(xT,WT,sum1(x))", 17, &[5, 3], std, |g| {
        // Y = ½·xᵀ·Wᵀ + 2·sin(Σ₁ x): C is a rank-1 value depending on x.
        g.c("w", &[4, 5], -1.0, 1.0);
        g.ci("ax", &[1]);
        g.n("ReduceSum", &["x", "ax"], &["r"], vec![a_i("keepdims", 0)]);
        g.c("w2", &[5, 4], -1.0, 1.0);
        g.n("Sin", &["r"], &["s"], vec![]);
        g.n("Unsqueeze", &["s", "ax"], &["s2"], vec![]);
        g.n("Mul", &["s2", "w2"], &["c2"], vec![]);
        g.ci("ax0", &[0]);
        g.n(
            "ReduceSum",
            &["c2", "ax0"],
            &["c"],
            vec![a_i("keepdims", 0)],
        );
        let attrs = vec![
            a_i("transA", 1),
            a_i("transB", 1),
            a_f("alpha", 0.5),
            a_f("beta", 2.0),
        ];
        g.n("Gemm", &["x", "w", "c"], &["y"], attrs);
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
    v.push(case("Slice(default axes, steps)", 17, &[3, 4], std, |g| {
        g.ci("st", &[2, 3]);
        g.ci("en", &[0, 0]);
        g.n("Slice", &["x", "st", "en", "", "sp"], &["y"], vec![]);
        g.ci("sp", &[-1, -2]);
    }));
    v.push(case("Gather", 17, &[3, 4], std, |g| {
        g.ci("i", &[2, 0, 2]);
        g.n("Gather", &["x", "i"], &["y"], vec![a_i("axis", 1)]);
    }));
    v.push(case("Gather(axis -1)", 17, &[3, 4], std, |g| {
        g.ci("i", &[3, 1]);
        g.n("Gather", &["x", "i"], &["y"], vec![a_i("axis", -1)]);
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
    v.push(case("Pad(axes)", 18, &[3, 4], std, |g| {
        g.ci("p", &[2, 1]);
        g.ci("a", &[-1]);
        g.n("Pad", &["x", "p", "", "a"], &["y"], vec![]);
    }));
    v.push(case("Pad(edge, opset 2)", 2, &[3, 4], std, |g| {
        let attrs = vec![
            AttributeProto::string("mode", "edge"),
            AttributeProto::ints("pads", &[1, 0, 0, 2]),
        ];
        g.n("Pad", &["x"], &["y"], attrs);
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
    // Before opset 11 reductions take no negative axes.
    v.push(case(
        "InstanceNormalization(opset 9)",
        9,
        &[2, 3, 4, 4],
        std,
        |g| {
            g.c("s", &[3], 0.5, 1.5);
            g.c("b", &[3], -1.0, 1.0);
            g.n("InstanceNormalization", &["x", "s", "b"], &["y"], vec![]);
        },
    ));
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
    v.push(case("Mean", 17, &[3, 4], std, |g| {
        g.c("c", &[4], -1.0, 1.0);
        g.n("Sin", &["x"], &["s"], vec![]);
        g.n("Mean", &["x", "s", "c"], &["y"], vec![]);
    }));
    v.push(case("Einsum", 17, &[3, 4], std, |g| {
        g.c("w", &[4, 5], -1.0, 1.0);
        let eq = vec![AttributeProto::string("equation", "ij,jk,ij->ik")];
        g.n("Sin", &["x"], &["s"], vec![]);
        g.n("Einsum", &["x", "w", "s"], &["y"], eq);
    }));
    v.push(case("Trilu", 17, &[4, 4], std, |g| {
        g.n("Trilu", &["x"], &["y"], vec![a_i("upper", 0)]);
    }));
    v.push(case("MaxPool", 17, &[2, 2, 4, 4], std, |g| {
        let attrs = vec![
            AttributeProto::ints("kernel_shape", &[2, 2]),
            AttributeProto::ints("strides", &[1, 2]),
        ];
        g.n("MaxPool", &["x"], &["y"], attrs);
    }));
    v.push(case("ReduceMax(attr axes)", 17, &[3, 4], std, |g| {
        let attrs = vec![AttributeProto::ints("axes", &[1]), a_i("keepdims", 0)];
        g.n("ReduceMax", &["x"], &["y"], attrs);
    }));
    v.push(case("ReduceMin(all, opset 18)", 18, &[3, 4], std, |g| {
        g.n("ReduceMin", &["x"], &["y"], vec![]);
    }));
    v.push(case("ReduceL2", 18, &[3, 4], std, |g| {
        g.ci("ax", &[0]);
        g.n("ReduceL2", &["x", "ax"], &["y"], vec![a_i("keepdims", 0)]);
    }));
    v.push(case("ReduceSumSquare", 17, &[3, 4], std, |g| {
        g.n(
            "ReduceSumSquare",
            &["x"],
            &["y"],
            vec![AttributeProto::ints("axes", &[1])],
        );
    }));
    v.push(case("ReduceLogSumExp", 17, &[2, 3, 4], std, |g| {
        let attrs = vec![AttributeProto::ints("axes", &[0, 2]), a_i("keepdims", 0)];
        g.n("ReduceLogSumExp", &["x"], &["y"], attrs);
    }));
    v.push(case("AveragePool", 17, &[1, 2, 4, 4], std, |g| {
        let attrs = vec![AttributeProto::ints("kernel_shape", &[2, 2])];
        g.n("AveragePool", &["x"], &["y"], attrs);
    }));
    v.push(case("GlobalAveragePool", 17, &[2, 3, 4, 4], std, |g| {
        g.n("GlobalAveragePool", &["x"], &["y"], vec![]);
    }));
    v.push(case("DepthToSpace", 17, &[2, 4, 2, 3], std, |g| {
        g.n("DepthToSpace", &["x"], &["y"], vec![a_i("blocksize", 2)]);
    }));
    v.push(case(
        "Resize(scales, nearest)",
        17,
        &[2, 2, 3, 3],
        std,
        |g| {
            g.cv("sc", &[4], vec![1.0, 1.0, 2.0, 2.0]);
            g.n("Resize", &["x", "", "sc"], &["y"], vec![]);
        },
    ));
    v.push(case("Resize(sizes, linear)", 17, &[2, 2, 3, 3], std, |g| {
        g.ci("sz", &[2, 2, 5, 4]);
        let attrs = vec![AttributeProto::string("mode", "linear")];
        g.n("Resize", &["x", "", "", "sz"], &["y"], attrs);
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
                if rel.is_nan() || rel > tol {
                    failures.push(format!("{}: {kind} error {err:e} (scale {scale})", c.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", c.name)),
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

/// The stacked form (P = 3 directions on a leading axis, the primal given
/// once) equals the per-direction tangent, itself checked against central
/// differences above, on every case it covers; the cases it refuses are
/// refused by name.
#[test]
fn stacked_tangents_equal_per_direction_tangents() {
    let stacked = TangentOptions {
        stacked: true,
        ..Default::default()
    };
    let (mut checked, mut refused, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let p = 3;
    for c in cases() {
        let m = model(c.opset, data_type::FLOAT, &c.x, &*c.build);
        let Ok(single) = tangent_model(&m, &TangentOptions::default()) else {
            continue;
        };
        let together = match tangent_model(&m, &stacked) {
            Ok(t) => t,
            Err(e) => {
                assert!(e.to_string().contains("stacked"), "{}: {e}", c.name);
                refused.push(c.name);
                continue;
            }
        };
        let (Ok(mut s1), Ok(mut sp)) = (
            session(&encode_model(&single)),
            session(&encode_model(&together)),
        ) else {
            continue;
        };
        let x = random(&c.x, c.lo, c.hi, 7);
        let mut shape = vec![p];
        shape.extend_from_slice(&c.x);
        let v = random(&shape, -1.0, 1.0, 8);
        let all = run(
            &mut sp,
            data_type::FLOAT,
            &[("x", &x), ("x_dot", &v)],
            "y_dot",
        );
        let mut err = 0.0f64;
        for k in 0..p {
            let vk = v.index_axis(ndarray::Axis(0), k).to_owned();
            let one = run(
                &mut s1,
                data_type::FLOAT,
                &[("x", &x), ("x_dot", &vk)],
                "y_dot",
            );
            let got = all.index_axis(ndarray::Axis(0), k);
            if got.shape() != one.shape() {
                failures.push(format!(
                    "{}: shape {:?} vs {:?}",
                    c.name,
                    got.shape(),
                    one.shape()
                ));
                err = f64::NAN;
                break;
            }
            let scale = one.iter().fold(1.0f64, |m, a| m.max(a.abs()));
            err = got
                .iter()
                .zip(&one)
                .fold(err, |m, (a, b)| m.max((a - b).abs() / scale));
        }
        if err.is_nan() || err > 1e-5 {
            failures.push(format!("{}: relative difference {err:e}", c.name));
        }
        checked.push(c.name);
    }
    println!(
        "stacked: {} cases checked, refused: {refused:?}",
        checked.len()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    // The operators of exported MLPs and of the mixture fixtures are covered.
    for name in [
        "Sigmoid",
        "SiLU(x·σ(x))",
        "SiLU(σ(Wx)·Wx)",
        "σ(x) shared by SiLU and Add",
        "Tanh",
        "Softplus",
        "Erf",
        "MatMul(x,W)",
        "MatMul(W,x)",
        "MatMul(x,xT)",
        "Gemm(x,W,C)",
        "Gemm(xT,WT,sum1(x))",
        "Mul(x,sum0(x))",
        "Concat",
        "Softmax[2,3,4]",
        "ReduceSum",
        "ReduceMean",
        "Unsqueeze+Squeeze",
        "Reshape(Shape)",
        "Conv",
        "ConvTranspose",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization(21, f32)",
        "GroupNormalization(18)",
        "Slice",
        "Slice(default axes, steps)",
        "Gather",
        "Gather(axis -1)",
        "Split+Mul",
        "AveragePool",
        "GlobalAveragePool",
        "DepthToSpace",
        "Resize(scales, nearest)",
        "Resize(sizes, linear)",
        "BatchNormalization",
        "Expand",
        "Tile",
        "Pad(constant 1)",
        "Pad(reflect)",
        "Pad(axes)",
        "Pad(edge, opset 2)",
    ] {
        assert!(
            checked.contains(&name),
            "{name} was not checked in stacked form"
        );
    }
}

/// A shape constant that claims 10^12 entries (and holds none) does not make
/// the stacked transform build a list of that many axes: the rank it would
/// give stays unknown and the transform refuses the node that needs it.
#[test]
fn a_huge_claimed_shape_does_not_become_a_huge_rank() {
    let m = model(17, data_type::FLOAT, &[3, 4], &|g| {
        g.inits.push(TensorProto {
            name: Some("huge".into()),
            dims: vec![1_000_000_000_000],
            data_type: Some(data_type::INT64),
            ..Default::default()
        });
        g.n("Reshape", &["x", "huge"], &["r"], vec![]);
        g.ci("one", &[1]);
        g.n("Unsqueeze", &["x", "one"], &["u"], vec![]);
        g.n("Add", &["r", "u"], &["y"], vec![]);
    });
    let stacked = TangentOptions {
        stacked: true,
        ..Default::default()
    };
    let err = tangent_model(&m, &stacked).expect_err("the rank of r is unknown");
    assert!(err.to_string().contains("not known statically"), "{err}");
}

/// A SiLU's tangent is one fused expression: fewer nodes than the product
/// rule through the Sigmoid's own tangent (which it still gets when the
/// Sigmoid has other consumers). Prints the node counts of the fixtures'
/// forward, tangent and stacked tangent graphs.
#[test]
fn silu_tangents_are_fused_and_node_counts_are_reported() {
    let added = |build: &dyn Fn(&mut G)| {
        let m = model(17, data_type::FLOAT, &[3, 4], build);
        let t = tangent_model(&m, &TangentOptions::default()).unwrap();
        let count = |m: &ModelProto| m.graph.as_ref().unwrap().node.len();
        count(&t) - count(&m)
    };
    let fused = added(&|g| {
        g.n("Sigmoid", &["x"], &["s"], vec![]);
        g.n("Mul", &["x", "s"], &["y"], vec![]);
    });
    let unfused = added(&|g| {
        g.n("Sigmoid", &["x"], &["s"], vec![]);
        g.n("Mul", &["x", "s"], &["m"], vec![]);
        g.n("Identity", &["s"], &["s2"], vec![]);
        g.n("Mul", &["m", "s2"], &["y"], vec![]);
    });
    // The unfused graph adds one more Mul's tangent (3 nodes) on top.
    assert!(fused + 3 < unfused, "fused {fused} vs unfused {unfused}");
    println!("fixture            forward  tangent  stacked  (nodes)");
    for name in FIXTURES {
        let m = decode_model(&read(name)).unwrap();
        let count = |m: &ModelProto| m.graph.as_ref().unwrap().node.len().to_string();
        let single = tangent_model(&m, &TangentOptions::default());
        let stacked = tangent_model(
            &m,
            &TangentOptions {
                stacked: true,
                ..Default::default()
            },
        );
        println!(
            "{name:<20} {:>6} {:>8} {:>8}",
            count(&m),
            single.map_or("-".into(), |t| count(&t)),
            stacked.map_or("-".into(), |t| count(&t)),
        );
    }
}

// ---------------------------------------------------------------------------
// Protobuf round trip.

const FIXTURES: &[&str] = &[
    "time_b.onnx",
    "time_b1.onnx",
    "time_scalar.onnx",
    "time_concat.onnx",
    "image_state.onnx",
    "label_input.onnx",
    "gmm_ot.onnx",
    "gmm_ot_x1.onnx",
    "mlp256.onnx",
    "named_inputs.onnx",
    "attention_block.onnx",
    "conv_norm.onnx",
    "gmm16_ot.onnx",
];

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Extras the fixture needs, for a batch of `b`.
fn extras_for(name: &str, b: usize) -> Extras {
    if name.contains("label") {
        let labels = ArrayD::from_shape_fn(IxDyn(&[b]), |i| (i[0] % 4) as i64);
        Extras::new().with("label", ExtraTensor::Int64(labels))
    } else {
        Extras::new()
    }
}

fn times(b: usize) -> Vec<f64> {
    (0..b).map(|i| i as f64 / (b.max(2) - 1) as f64).collect()
}

#[test]
fn every_fixture_survives_a_protobuf_round_trip_with_identical_outputs() {
    runtime();
    for name in FIXTURES {
        let bytes = read(name);
        let model = decode_model(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = encode_model(&model);
        let back = decode_model(&again).expect("re-decodes");
        assert_eq!(back, model, "{name}: decode(encode(m)) != m");
        let graph = model.graph.as_ref().expect("graph");
        assert!(!graph.node.is_empty() && !graph.initializer.is_empty() || name.contains("gmm"));
        println!(
            "{name}: {} bytes, re-encoded {} bytes, byte-identical: {}",
            bytes.len(),
            again.len(),
            bytes == again
        );

        let a = OnnxField::builder()
            .with_jvp(false)
            .load_bytes(&bytes)
            .unwrap();
        let b = OnnxField::builder()
            .with_jvp(false)
            .load_bytes(&again)
            .unwrap();
        assert_eq!(a.describe().metadata, b.describe().metadata, "{name}");
        assert_eq!(a.describe().inputs, b.describe().inputs, "{name}");
        let mut shape = vec![5];
        shape.extend_from_slice(a.state_shape().unwrap());
        let x = normal(&shape, 1.5, 3);
        let (mut va, mut vb) = (x.clone(), x.clone());
        let extras = extras_for(name, 5);
        a.velocity(x.view(), &times(5), &extras, va.view_mut())
            .unwrap();
        b.velocity(x.view(), &times(5), &extras, vb.view_mut())
            .unwrap();
        assert!(
            va.iter().zip(&vb).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name}: outputs differ after the round trip"
        );
    }
}

#[test]
fn the_round_trip_keeps_attributes_of_every_kind() {
    let mut m = model(17, data_type::FLOAT, &[2], &|g| {
        g.n("Identity", &["x"], &["y"], vec![])
    });
    let g = m.graph.as_mut().unwrap();
    let sub = GraphProto {
        name: Some("sub".into()),
        ..Default::default()
    };
    g.node[0].attribute = vec![
        AttributeProto::float("f", 0.0),
        AttributeProto::int("i", 0),
        AttributeProto::string("s", ""),
        AttributeProto::ints("ints", &[1, -2]),
        AttributeProto::tensor("t", TensorProto::from_f32("w", &[2], &[1.0, 2.0])),
        AttributeProto {
            name: Some("g".into()),
            r#type: Some(5),
            g: Some(sub.clone()),
            ..Default::default()
        },
        AttributeProto {
            name: Some("many".into()),
            floats: vec![0.5, 1.5],
            strings: vec![b"a".to_vec()],
            graphs: vec![sub],
            tp: Some(TypeProto::default()),
            ..Default::default()
        },
    ];
    g.doc_string = Some("doc".into());
    m.metadata_props
        .push(fmrt::graph::proto::StringStringEntryProto {
            key: Some("k".into()),
            value: Some(String::new()),
        });
    let back = decode_model(&encode_model(&m)).unwrap();
    assert_eq!(back, m);
    // Defaults that were present stay present.
    let attrs = &back.graph.as_ref().unwrap().node[0].attribute;
    assert_eq!(attrs[0].f, Some(0.0));
    assert_eq!(attrs[1].i, Some(0));
    assert_eq!(attrs[2].s.as_deref(), Some(&b""[..]));
}

#[test]
fn a_truncated_model_is_an_error_not_a_panic() {
    let bytes = read("truncated.onnx");
    assert!(decode_model(&bytes).is_err());
}

// ---------------------------------------------------------------------------
// Whole fixtures through OnnxField.

fn load(name: &str) -> OnnxField {
    runtime();
    OnnxField::load_file(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (max |jvp − fd|, max |fd|) for a fixture at random x, v; f32 central
/// differences with step `eps`.
fn fixture_fd(field: &OnnxField, name: &str, scale: f64, eps: f32) -> (f64, f64) {
    let b = 6;
    let mut shape = vec![b];
    shape.extend_from_slice(field.state_shape().unwrap());
    let x = normal(&shape, scale, 11);
    let v = normal(&shape, 1.0, 12);
    let t = times(b);
    let extras = extras_for(name, b);
    let mut jvp = x.clone();
    field
        .jvp(x.view(), &t, &extras, v.view(), jvp.view_mut())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let (mut up, mut down) = (x.clone(), x.clone());
    let xp = &x + &(&v * eps);
    let xm = &x - &(&v * eps);
    field
        .velocity(xp.view(), &t, &extras, up.view_mut())
        .unwrap();
    field
        .velocity(xm.view(), &t, &extras, down.view_mut())
        .unwrap();
    let mut err: f64 = 0.0;
    let mut size: f64 = 0.0;
    for ((j, u), d) in jvp.iter().zip(&up).zip(&down) {
        let fd = (*u as f64 - *d as f64) / (2.0 * eps as f64);
        err = err.max((*j as f64 - fd).abs());
        size = size.max(fd.abs());
    }
    (err, size)
}

#[test]
fn whole_fixtures_match_central_differences() {
    // f32 differences at ε = 1e-2 (1e-3 for the sharp mixtures): truncation
    // O(ε²) and rounding O(1e-7/ε); relative to max |fd| (at least 1e-2).
    for name in [
        "time_b.onnx",
        "time_b1.onnx",
        "time_scalar.onnx",
        "time_concat.onnx",
        "image_state.onnx",
        "label_input.onnx",
        "mlp256.onnx",
        "named_inputs.onnx",
        "static_batch_label.onnx",
        "scalar_time_label.onnx",
        "attention_block.onnx",
        "conv_norm.onnx",
        "gmm_ot.onnx",
        "gmm16_ot.onnx",
    ] {
        let field = load(name);
        assert!(
            field.derivatives().jvp,
            "{name}: {:?}",
            field.jvp_unavailable_reason()
        );
        let eps = if name.starts_with("gmm") { 1e-3 } else { 1e-2 };
        let (err, size) = fixture_fd(&field, name, 1.0, eps);
        let rel = err / size.max(1e-2);
        println!("{name:22} max|jvp-fd| = {err:.2e} (max|fd| = {size:.2}), relative {rel:.1e}");
        assert!(rel < 2e-3, "{name}: {err:e} against {size}");
    }
}

#[test]
fn the_attention_block_jvp_equals_pytorch_forward_mode() {
    let field = load("attention_block.onnx");
    let text = std::fs::read_to_string(fixture("attention_block.jvp.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vec_of = |k: &str| -> Vec<f32> {
        json[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let shape = [3, 4, 8];
    let x = ArrayD::from_shape_vec(IxDyn(&shape), vec_of("x")).unwrap();
    let v = ArrayD::from_shape_vec(IxDyn(&shape), vec_of("v")).unwrap();
    let want = ArrayD::from_shape_vec(IxDyn(&shape), vec_of("jvp")).unwrap();
    let t: Vec<f64> = json["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut got = x.clone();
    field
        .jvp(x.view(), &t, Extras::none(), v.view(), got.view_mut())
        .unwrap();
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    let size = want.iter().map(|a| a.abs() as f64).fold(0.0, f64::max);
    println!("attention block: max |onnx - torch.func.jvp| = {err:.2e} (max {size:.2})");
    assert!(err < 1e-4 * size.max(1.0), "{err:e}");
}

/// An ONNX field seen without its stacked JVPs: likelihoods through it take
/// the per-direction form (a velocity call and a JVP call on the states
/// repeated per direction).
struct PerDirection(OnnxField);

impl VelocityField for PerDirection {
    fn state_shape(&self) -> Option<&[usize]> {
        self.0.state_shape()
    }

    fn derivatives(&self) -> fmrt::field::Derivatives {
        fmrt::field::Derivatives {
            jvp: true,
            stacked_jvp: false,
            divergence: false,
        }
    }

    fn velocity(
        &self,
        x: ndarray::ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ndarray::ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.0.velocity(x, t, extras, out)
    }

    fn jvp(
        &self,
        x: ndarray::ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ndarray::ArrayViewD<'_, f32>,
        out: ndarray::ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.0.jvp(x, t, extras, v, out)
    }
}

/// Likelihoods through the stacked tangent model (one call per stage) equal
/// those through the per-direction form, for the exact divergence and for
/// Hutchinson's estimator (the same probes reach the same samples), with
/// extras, scalar-time models and chunking by memory, for MLPs, the mixture,
/// convolutions, instance normalisation and an attention block.
#[test]
fn stacked_likelihoods_equal_per_direction_likelihoods() {
    use fmrt::likelihood::Divergence;
    let cases: &[(&str, usize)] = &[
        ("mlp256.onnx", usize::MAX),
        ("gmm16_ot.onnx", usize::MAX),
        ("label_input.onnx", usize::MAX),
        ("time_scalar.onnx", usize::MAX),
        ("time_concat.onnx", 3 * 4 * 4 * 5),
        // Convolutions: the tangent axis merged into the batch axis.
        ("image_state.onnx", usize::MAX),
        // Convolutions and instance normalisations.
        ("conv_norm.onnx", usize::MAX),
        // Attention: LayerNormalization, Slice, Softmax, MatMul of two
        // varying operands.
        ("attention_block.onnx", usize::MAX),
    ];
    for &(name, max_bytes) in cases {
        let stacked = Arc::new(load(name));
        assert!(stacked.derivatives().stacked_jvp, "{name}");
        let plain = Arc::new(PerDirection(load(name)));
        let b = 6;
        let dim: usize = stacked.state_shape().unwrap().iter().product();
        let mut shape = vec![b];
        shape.extend_from_slice(stacked.state_shape().unwrap());
        let x = normal(&[b, dim], 1.0, 41)
            .into_shape_with_order(shape)
            .expect("state shape");
        let starts: Vec<f64> = (0..b).map(|i| 0.4 + 0.1 * i as f64).collect();
        for divergence in [Divergence::Exact, Divergence::hutchinson(3)] {
            let run = |field: Arc<dyn VelocityField>| {
                Likelihood::new(
                    field,
                    SolverConfig::fixed(Method::Rk4, fmrt::solver::Steps::Count(8)),
                )
                .with_divergence(divergence.clone())
                .with_extras(extras_for(name, b))
                .with_seed(9)
                .with_max_bytes(max_bytes)
                .log_likelihood_at(x.view(), &starts)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
            };
            let one = run(stacked.clone());
            let per = run(plain.clone());
            assert_eq!(one.calls.velocity + one.calls.jvp, 0, "{name}");
            assert!(one.calls.stacked >= one.stats.nfe, "{name}");
            assert_eq!(per.calls.stacked, 0, "{name}");
            for i in 0..b {
                let (a, c) = (one.log_p[i], per.log_p[i]);
                assert!(
                    (a - c).abs() <= 1e-5 * c.abs().max(1.0),
                    "{name} {divergence:?} sample {i}: stacked {a} vs per direction {c}"
                );
            }
        }
    }
}

fn ot() -> Arc<dyn Schedule> {
    Arc::new(Scheduler::builtin("ot", &[]).expect("ot"))
}

fn ring() -> GaussianMixture {
    GaussianMixture::ring(8, 4.0, 0.3, ot()).expect("ring")
}

fn mixture16() -> GaussianMixture {
    let text = std::fs::read_to_string(fixture("gmm16_ot.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let means: Vec<f64> = json["means"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(list)
        .collect();
    let k = json["weights"].as_array().unwrap().len();
    let means = Array2::from_shape_vec((k, means.len() / k), means).unwrap();
    GaussianMixture::new(
        &list(&json["weights"]),
        means.view(),
        &list(&json["stds"]),
        ot(),
    )
    .expect("mixture")
}

#[test]
fn the_gmm_jvp_equals_the_analytic_jvp() {
    for (name, exact) in [("gmm_ot.onnx", ring()), ("gmm16_ot.onnx", mixture16())] {
        let field = load(name);
        let d = exact.dim();
        let x = normal(&[64, d], 2.0, 21);
        let v = normal(&[64, d], 1.0, 22);
        let t: Vec<f64> = (0..64).map(|i| i as f64 / 63.0).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        field
            .jvp(x.view(), &t, Extras::none(), v.view(), a.view_mut())
            .unwrap();
        exact
            .jvp(x.view(), &t, Extras::none(), v.view(), b.view_mut())
            .unwrap();
        let err = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs() as f64)
            .fold(0.0, f64::max);
        let size = b.iter().map(|q| q.abs() as f64).fold(0.0, f64::max);
        println!("{name}: max |onnx jvp - analytic jvp| = {err:.2e} (max {size:.2})");
        assert!(err < 1e-4 * size.max(1.0), "{name}: {err:e}");
    }
}

#[test]
fn chunked_and_grouped_jvp_calls_equal_one_call() {
    runtime();
    let whole = load("time_b.onnx");
    let chunked = OnnxField::builder()
        .max_batch(3)
        .load_file(fixture("time_b.onnx"))
        .unwrap();
    let scalar = load("time_scalar.onnx");
    let x = normal(&[7, 2], 1.0, 31);
    let v = normal(&[7, 2], 1.0, 32);
    let t = times(7);
    let mut outs = Vec::new();
    for f in [&whole, &chunked, &scalar] {
        let mut o = x.clone();
        f.jvp(x.view(), &t, Extras::none(), v.view(), o.view_mut())
            .unwrap();
        outs.push(o);
    }
    let diff = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    assert_eq!(diff(&outs[0], &outs[1]), 0.0);
    assert!(
        diff(&outs[0], &outs[2]) < 1e-5,
        "{}",
        diff(&outs[0], &outs[2])
    );
    // Shapes are checked.
    let mut wrong = ArrayD::<f32>::zeros(IxDyn(&[7, 3]));
    assert!(whole
        .jvp(x.view(), &t, Extras::none(), v.view(), wrong.view_mut())
        .is_err());
    // Switched off: no JVPs, and the reason says why.
    let off = OnnxField::builder()
        .with_jvp(false)
        .load_file(fixture("time_b.onnx"))
        .unwrap();
    assert!(!off.derivatives().jvp);
    let mut o = x.clone();
    let e = off
        .jvp(x.view(), &t, Extras::none(), v.view(), o.view_mut())
        .unwrap_err();
    assert!(e.to_string().contains("with_jvp(false)"), "{e}");
}

// ---------------------------------------------------------------------------
// Likelihood through the tangent graph.

/// `n` held-out points of a mixture: component k drawn by weight, then
/// μ_k + s_k·N(0, I).
fn mixture_points(m: &GaussianMixture, n: usize, seed: u64) -> ArrayD<f32> {
    let mut rng = SeededRng::new(seed);
    let d = m.dim();
    let w = m.weights();
    let total: f64 = w.iter().sum();
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[n, d]));
    for i in 0..n {
        let mut u = rng.uniform() * total;
        let mut k = 0;
        while k + 1 < w.len() && u >= w[k] {
            u -= w[k];
            k += 1;
        }
        for j in 0..d {
            x[[i, j]] = (m.means()[[k, j]] + m.stds()[k] * rng.normal()) as f32;
        }
    }
    x
}

fn likelihood_error(name: &str, exact: &GaussianMixture, n: usize) -> f64 {
    let field = Arc::new(load(name));
    assert!(!field.derivatives().divergence, "must take the JVP path");
    let solver = SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5);
    let lik = Likelihood::new(field, solver);
    let x = mixture_points(exact, n, 77);
    let got = lik.log_likelihood(x.view()).unwrap();
    // The velocity and all D basis directions of a stage go through one
    // call of the stacked tangent graph.
    assert_eq!(got.calls.stacked, got.stats.nfe);
    assert_eq!((got.calls.velocity, got.calls.jvp), (0, 0));
    let x2 = x.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let want = exact.log_density(x2, &[1.0]).unwrap();
    let mae = got
        .log_p
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / n as f64;
    println!(
        "{name}: {n} points, mean |log p - exact| = {mae:.2e} nats, NFE {}, JVP calls {:?}",
        got.stats.nfe, got.calls
    );
    mae
}

#[test]
fn onnx_likelihood_of_the_ring_mixture_is_exact() {
    let mae = likelihood_error("gmm_ot.onnx", &ring(), 512);
    assert!(mae < 2e-4, "{mae:e}");
}

#[test]
fn onnx_likelihood_of_the_16d_mixture_is_exact() {
    let mae = likelihood_error("gmm16_ot.onnx", &mixture16(), 512);
    assert!(mae < 5e-4, "{mae:e}");
}

// ---------------------------------------------------------------------------
// Unsupported operators.

fn with_unsupported() -> ModelProto {
    model(17, data_type::FLOAT, &[3, 4], &|g| {
        g.c("c", &[4], 0.5, 1.0);
        // Unsupported, but off the state's path: fine.
        g.n("Selu", &["c"], &["sc"], vec![]);
        g.n("Mul", &["x", "sc"], &["m"], vec![]);
        g.nodes.push(NodeProto {
            input: vec!["m".into()],
            output: vec!["h".into()],
            name: Some("my_hardmax".into()),
            op_type: Some("Hardmax".into()),
            ..Default::default()
        });
        g.n("Add", &["h", "m"], &["y"], vec![]);
    })
}

#[test]
fn an_unsupported_operator_is_named_with_its_node() {
    let m = with_unsupported();
    let e = tangent_model(&m, &TangentOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`Hardmax`") && e.contains("`my_hardmax`"), "{e}");
    assert!(!e.contains("Selu"), "{e}");
    let list = unsupported_ops(&m, None).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].op_type, "Hardmax");
    assert_eq!(list[0].node, "my_hardmax");
}

#[test]
fn a_field_with_an_unsupported_operator_reports_it_on_jvp() {
    runtime();
    // time_b with its first Sigmoid replaced by an operator without a rule.
    let mut m = decode_model(&read("time_b.onnx")).unwrap();
    let g = m.graph.as_mut().unwrap();
    let node = g
        .node
        .iter_mut()
        .find(|n| n.op() == "Sigmoid")
        .expect("time_b has a Sigmoid");
    node.op_type = Some("Hardmax".into());
    let node_name = node.node_name().to_string();
    let field = OnnxField::builder().load_bytes(&encode_model(&m)).unwrap();
    assert!(!field.derivatives().jvp);
    let reason = field.jvp_unavailable_reason().unwrap().to_string();
    assert!(
        reason.contains("Hardmax") && reason.contains(&node_name),
        "{reason}"
    );
    let x = normal(&[2, 2], 1.0, 1);
    let mut o = x.clone();
    let e = field
        .jvp(x.view(), &[0.5], Extras::none(), x.view(), o.view_mut())
        .unwrap_err();
    assert!(e.to_string().contains("Hardmax"), "{e}");
    // Sampling still works.
    field
        .velocity(x.view(), &[0.5], Extras::none(), o.view_mut())
        .unwrap();
}

#[test]
fn the_tangent_model_keeps_the_model_and_adds_one_input_and_one_output() {
    for name in FIXTURES {
        let m = decode_model(&read(name)).unwrap();
        let t = tangent_model(&m, &TangentOptions::default()).unwrap();
        let (g, tg) = (m.graph.as_ref().unwrap(), t.graph.as_ref().unwrap());
        let names = |v: &[ValueInfoProto]| -> Vec<String> {
            v.iter()
                .map(|i| i.name.clone().unwrap_or_default())
                .collect()
        };
        let mut want_in = names(&g.input);
        want_in.insert(1, format!("{}_dot", want_in[0]));
        assert_eq!(names(&tg.input), want_in, "{name}");
        let mut want_out = names(&g.output);
        want_out.push(format!("{}_dot", want_out[0]));
        assert_eq!(names(&tg.output), want_out, "{name}");
        assert_eq!(t.opset_import, m.opset_import, "{name}");
        assert_eq!(t.metadata_props, m.metadata_props, "{name}");
        assert_eq!(tg.initializer, g.initializer, "{name}");
        // The original nodes come first in their order; names stay unique.
        let orig: Vec<&NodeProto> = tg.node.iter().filter(|n| g.node.contains(n)).collect();
        assert_eq!(orig.len(), g.node.len(), "{name}");
        let mut node_names = std::collections::HashSet::new();
        let mut produced = std::collections::HashSet::new();
        for n in &tg.node {
            if let Some(nm) = &n.name {
                assert!(
                    node_names.insert(nm.clone()),
                    "{name}: node name {nm} twice"
                );
            }
            for o in &n.output {
                assert!(
                    produced.insert(o.clone()),
                    "{name}: value {o} produced twice"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The class-label input.

#[test]
fn the_label_input_is_the_only_int64_extra() {
    runtime();
    let labelled = OnnxField::load_file(fixture("label_input.onnx")).unwrap();
    assert_eq!(labelled.label_input().unwrap(), "label");

    let plain = OnnxField::load_file(fixture("gmm_ot.onnx")).unwrap();
    match plain.label_input() {
        Err(fmrt::Error::InvalidArgument(m)) => assert!(m.contains("no int64 input"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    // label_input with a second (unused) int64 input: which one is the label
    // is unclear, and both are named.
    let mut m = decode_model(&read("label_input.onnx")).unwrap();
    let g = m.graph.as_mut().unwrap();
    let mut second = g
        .input
        .iter()
        .find(|i| i.name.as_deref() == Some("label"))
        .expect("label_input has `label`")
        .clone();
    second.name = Some("style".into());
    g.input.push(second);
    let two = OnnxField::builder().load_bytes(&encode_model(&m)).unwrap();
    match two.label_input() {
        Err(fmrt::Error::InvalidArgument(m)) => {
            assert!(m.contains("`label`") && m.contains("`style`"), "{m}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}
