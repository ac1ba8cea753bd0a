//! ONNX models through ONNX Runtime: outputs against PyTorch's, input-role
//! detection, clear errors for broken models, chunking and the session pool,
//! and the exact Gaussian-mixture model against the analytic field.
//!
//! The fixtures and their `NAME.io.json` sidecars are described in
//! `tests/fixtures/README.md`. The ONNX Runtime library is fetched on demand
//! (`scripts/fetch-onnxruntime.sh`) when it is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::field::onnx::{
    self, InputMapping, LibrarySource, MappingSource, OnnxField, SearchPlaces, TimeLayout,
};
use fmrt::field::{ExtraTensor, Extras, VelocityField};
use fmrt::path::Prediction;
use fmrt::random::SeededRng;
use fmrt::sampler::Sampler;
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{Method, SolverConfig, Steps};
use fmrt::Error;
use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Loads ONNX Runtime (fetching it into .ort/lib/ if missing) before any model.
fn runtime() {
    if let Err(e) =
        onnx::ensure_runtime_for_development(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
    {
        panic!("ONNX Runtime is not available: {e}");
    }
}

fn load(name: &str) -> OnnxField {
    runtime();
    OnnxField::load_file(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load_err(builder: onnx::OnnxFieldBuilder, name: &str) -> String {
    runtime();
    match builder.load_file(fixture(name)) {
        Ok(_) => panic!("{name} loaded, but it should not"),
        Err(e) => fmrt::error::Report(&e).to_string(),
    }
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "the message should contain {part:?}:\n{message}"
        );
    }
}

/// One tensor of a sidecar file.
enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

/// A sidecar: inputs by name, and the outputs PyTorch computed.
struct IoCase {
    inputs: Vec<(String, Tensor)>,
    output: ArrayD<f32>,
}

fn tensor(v: &Value) -> (String, Tensor) {
    let name = v["name"].as_str().expect("name").to_string();
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data = v["data"].as_array().expect("data");
    let t = match v["dtype"].as_str().expect("dtype") {
        "float32" => Tensor::F32(
            ArrayD::from_shape_vec(
                IxDyn(&shape),
                data.iter().map(|d| d.as_f64().expect("f") as f32).collect(),
            )
            .expect("shape fits data"),
        ),
        "int64" => Tensor::I64(
            ArrayD::from_shape_vec(
                IxDyn(&shape),
                data.iter().map(|d| d.as_i64().expect("i")).collect(),
            )
            .expect("shape fits data"),
        ),
        other => panic!("unexpected dtype {other}"),
    };
    (name, t)
}

fn io_case(model: &str) -> IoCase {
    let path = fixture(&model.replace(".onnx", ".io.json"));
    let text = std::fs::read_to_string(&path).expect("sidecar");
    let v: Value = serde_json::from_str(&text).expect("json");
    let inputs = v["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(tensor)
        .collect();
    let output = match tensor(&v["outputs"][0]).1 {
        Tensor::F32(a) => a,
        Tensor::I64(_) => panic!("int output"),
    };
    IoCase { inputs, output }
}

/// Runs the field on a sidecar's inputs, mapped by the field's own mapping.
fn run_case(field: &OnnxField, case: &IoCase) -> fmrt::Result<ArrayD<f32>> {
    let m = field.mapping();
    let mut x = None;
    let mut t = Vec::new();
    let mut extras = Extras::new();
    for (name, value) in &case.inputs {
        match value {
            Tensor::F32(a) if *name == m.state => x = Some(a.clone()),
            Tensor::F32(a) if *name == m.time => t = a.iter().map(|&s| s as f64).collect(),
            Tensor::F32(a) => extras.insert(name.clone(), ExtraTensor::Float32(a.clone())),
            Tensor::I64(a) => extras.insert(name.clone(), ExtraTensor::Int64(a.clone())),
        }
    }
    let x = x.expect("the sidecar has the state input");
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    field.velocity(x.view(), &t, &extras, out.view_mut())?;
    Ok(out)
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(p, q)| (*p as f64 - *q as f64).abs())
        .fold(0.0, f64::max)
}

fn random(shape: &[usize], scale: f64, seed: u64) -> ArrayD<f32> {
    let mut rng = SeededRng::new(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || (scale * rng.normal()) as f32)
}

const VALID: &[&str] = &[
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
];

#[test]
fn every_fixture_matches_pytorch() {
    for name in VALID {
        let field = load(name);
        let case = io_case(name);
        let out = run_case(&field, &case).unwrap_or_else(|e| panic!("{name}: {e}"));
        let diff = max_abs_diff(&out, &case.output);
        println!("{name}: max |onnxruntime - pytorch| = {diff:e}");
        assert!(diff <= 1e-5, "{name}: max abs diff {diff:e} > 1e-5");
    }
}

fn mapping(name: &str) -> InputMapping {
    load(name).mapping().clone()
}

#[test]
fn time_layouts_are_detected() {
    for (name, layout) in [
        ("time_b.onnx", TimeLayout::Batch),
        ("time_b1.onnx", TimeLayout::Column),
        ("time_scalar.onnx", TimeLayout::Scalar),
        ("time_concat.onnx", TimeLayout::Batch),
    ] {
        let m = mapping(name);
        assert_eq!(m.time_layout, layout, "{name}");
        assert_eq!((m.state.as_str(), m.time.as_str()), ("x", "t"), "{name}");
        assert_eq!(m.state_from, MappingSource::Detected, "{name}");
        assert_eq!(m.time_from, MappingSource::Detected, "{name}");
        assert_eq!(m.output, "v", "{name}");
        assert!(m.extras.is_empty(), "{name}");
    }
}

#[test]
fn the_time_layouts_compute_the_same_function_with_per_sample_times() {
    // time_b, time_b1, time_scalar and named_inputs share their weights. The
    // scalar-time model gets different times per sample: it runs once per group
    // of equal times and must match the per-sample models.
    let x = random(&[9, 2], 1.5, 11);
    let t: Vec<f64> = (0..9).map(|i| [0.1, 0.5, 0.9][i % 3]).collect();
    let eval = |name: &str| {
        let field = load(name);
        let mut out = ArrayD::<f32>::zeros(x.raw_dim());
        field
            .velocity(x.view(), &t, Extras::none(), out.view_mut())
            .expect(name);
        out
    };
    let reference = eval("time_b.onnx");
    for name in ["time_b1.onnx", "time_scalar.onnx", "named_inputs.onnx"] {
        let diff = max_abs_diff(&eval(name), &reference);
        assert!(diff <= 1e-6, "{name} differs from time_b by {diff:e}");
    }
    // Sanity: the times matter, so the grouping is really exercised.
    let field = load("time_scalar.onnx");
    let mut same_t = ArrayD::<f32>::zeros(x.raw_dim());
    field
        .velocity(x.view(), &[0.1], Extras::none(), same_t.view_mut())
        .unwrap();
    assert!(max_abs_diff(&same_t, &reference) > 1e-3);
}

#[test]
fn metadata_and_explicit_names_override_detection() {
    let m = mapping("named_inputs.onnx");
    assert_eq!(
        (m.state.as_str(), m.state_from),
        ("sample", MappingSource::Metadata)
    );
    assert_eq!(
        (m.time.as_str(), m.time_from),
        ("timestep", MappingSource::Metadata)
    );
    assert_eq!(m.output, "velocity");

    runtime();
    let path = fixture("named_inputs.onnx");
    let field = OnnxField::builder()
        .state_input("sample")
        .time_input("timestep")
        .load_file(&path)
        .unwrap();
    assert_eq!(field.mapping().state_from, MappingSource::Explicit);
    assert_eq!(field.mapping().time_from, MappingSource::Explicit);

    // Explicit names win over the metadata even when they are wrong.
    let err = load_err(
        OnnxField::builder()
            .state_input("timestep")
            .time_input("sample"),
        "named_inputs.onnx",
    );
    assert_contains(
        &err,
        &["named_inputs.onnx", "time input `sample`", "[B, 2]"],
    );
    let err = load_err(OnnxField::builder().time_input("tau"), "time_b.onnx");
    assert_contains(
        &err,
        &["time_b.onnx", "`tau`", "not an input", "x: float32 [B, 2]"],
    );

    // The ambiguous model loads once the state is named.
    let field = OnnxField::builder()
        .state_input("input_0")
        .load_file(fixture("ambiguous_inputs.onnx"))
        .unwrap();
    assert_eq!(field.mapping().time, "t");
    assert_eq!(field.extra_inputs().len(), 1);
    assert_eq!(field.extra_inputs()[0].name, "input_1");
}

#[test]
fn an_image_shaped_state_works() {
    let field = load("image_state.onnx");
    assert_eq!(field.state_shape(), Some(&[1, 8, 8][..]));
    let x = random(&[5, 1, 8, 8], 1.0, 3);
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    field
        .velocity(x.view(), &[0.3], Extras::none(), out.view_mut())
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    assert!(out.iter().any(|v| v.abs() > 1e-6));
    // A wrongly shaped state is a shape error naming `x`.
    let bad = random(&[5, 8, 8], 1.0, 3);
    let mut out = ArrayD::<f32>::zeros(bad.raw_dim());
    let err = field
        .velocity(bad.view(), &[0.3], Extras::none(), out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { tensor, .. } if tensor == "x"),
        "{err}"
    );
    assert_contains(&err.to_string(), &["[B, 1, 8, 8]", "[5, 8, 8]"]);
}

#[test]
fn the_label_extra_is_passed_and_required() {
    let field = load("label_input.onnx");
    let extras = field.extra_inputs();
    assert_eq!(extras.len(), 1);
    assert_eq!(
        (extras[0].name.as_str(), extras[0].dtype.as_str()),
        ("label", "int64")
    );

    let x = random(&[4, 2], 1.0, 5);
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    let err = field
        .velocity(x.view(), &[0.5], Extras::none(), out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Extra { input, .. } if input == "label"),
        "{err:?}"
    );
    assert_eq!(err.kind(), fmrt::error::ErrorKind::InvalidArgument);
    assert_contains(
        &err.to_string(),
        &["label_input.onnx", "`label`", "int64 [B]"],
    );

    let labels = |l: &[i64]| Extras::new().with("label", ExtraTensor::labels(l));
    let unknown = labels(&[0, 1, 2, 3]).with("mask", ExtraTensor::labels(&[0, 0, 0, 0]));
    let err = field
        .velocity(x.view(), &[0.5], &unknown, out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Extra { input, .. } if input == "mask"),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &["`mask`", "not an input", "`label` int64 [B]"],
    );

    let wrong_type = Extras::new().with("label", ExtraTensor::Float32(ArrayD::zeros(IxDyn(&[4]))));
    let err = field
        .velocity(x.view(), &[0.5], &wrong_type, out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Extra { input, .. } if input == "label"),
        "{err:?}"
    );
    assert_contains(&err.to_string(), &["`label`", "float32", "int64"]);

    let err = field
        .velocity(x.view(), &[0.5], &labels(&[0, 1]), out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { tensor, .. } if tensor == "label"),
        "{err}"
    );

    // Different labels give different velocities.
    let mut a = ArrayD::<f32>::zeros(x.raw_dim());
    let mut b = ArrayD::<f32>::zeros(x.raw_dim());
    field
        .velocity(x.view(), &[0.5], &labels(&[0, 0, 0, 0]), a.view_mut())
        .unwrap();
    field
        .velocity(x.view(), &[0.5], &labels(&[1, 1, 1, 1]), b.view_mut())
        .unwrap();
    assert!(max_abs_diff(&a, &b) > 1e-4);

    // The null condition from the metadata: label 3 for every sample.
    assert_eq!(field.null_condition(), Some("3"));
    let null = field.null_extras(4).unwrap().expect("declared");
    assert_eq!(null.get("label"), Some(&ExtraTensor::labels(&[3, 3, 3, 3])));
}

#[test]
fn broken_models_give_their_own_clear_errors() {
    let b = OnnxField::builder;
    let err = load_err(b(), "wrong_output_shape.onnx");
    assert_contains(
        &err,
        &[
            "wrong_output_shape.onnx",
            "output `v`",
            "[1, 3]",
            "expected [1, 2]",
            "`x`",
        ],
    );
    let err = load_err(b(), "missing_time_input.onnx");
    assert_contains(
        &err,
        &[
            "missing_time_input.onnx",
            "no input looks like the time input",
            "x: float32 [B, 2]",
        ],
    );
    let err = load_err(b(), "truncated.onnx");
    assert_contains(&err, &["truncated.onnx", "cannot load the model"]);
    let err = load_err(b(), "non_float_state.onnx");
    assert_contains(
        &err,
        &[
            "non_float_state.onnx",
            "state input `x`",
            "float64 [B, 2]",
            "float32",
        ],
    );
    let err = load_err(b(), "ambiguous_inputs.onnx");
    assert_contains(
        &err,
        &[
            "ambiguous_inputs.onnx",
            "`input_0` or `input_1`",
            "input_0: float32 [B, 2]",
            "input_1: float32 [B, 2]",
            "t: float32 [B]",
            ".state_input(",
            "fmrt.state_input",
        ],
    );
    let err = load_err(b(), "no_such_model.onnx");
    assert_contains(&err, &["no_such_model.onnx"]);
    let err = load_err(b().output("velocity"), "time_b.onnx");
    assert_contains(&err, &["time_b.onnx", "`velocity`", "`v` float32 [B, 2]"]);

    runtime();
    let err = OnnxField::builder().load_bytes(b"not a model").unwrap_err();
    assert_contains(&err.to_string(), &["<memory>", "cannot load the model"]);
}

#[test]
fn chunked_batches_equal_the_unchunked_result() {
    runtime();
    let whole = load("mlp256.onnx");
    let chunked = OnnxField::builder()
        .max_batch(7)
        .load_file(fixture("mlp256.onnx"))
        .unwrap();
    assert_eq!(chunked.max_batch(), 7);
    let x = random(&[50, 2], 2.0, 7);
    let t: Vec<f64> = (0..50).map(|i| i as f64 / 49.0).collect();
    let mut a = ArrayD::<f32>::zeros(x.raw_dim());
    let mut b = ArrayD::<f32>::zeros(x.raw_dim());
    whole
        .velocity(x.view(), &t, Extras::none(), a.view_mut())
        .unwrap();
    chunked
        .velocity(x.view(), &t, Extras::none(), b.view_mut())
        .unwrap();
    assert_eq!(a, b);

    // Extras are chunked with the states.
    let whole = load("label_input.onnx");
    let chunked = OnnxField::builder()
        .max_batch(7)
        .load_file(fixture("label_input.onnx"))
        .unwrap();
    let labels: Vec<i64> = (0..50).map(|i| i % 4).collect();
    let extras = Extras::new().with("label", ExtraTensor::labels(&labels));
    whole.velocity(x.view(), &t, &extras, a.view_mut()).unwrap();
    chunked
        .velocity(x.view(), &t, &extras, b.view_mut())
        .unwrap();
    assert_eq!(a, b);

    // A non-contiguous state (every other row) gives the rows' own results.
    let strided = x.slice_axis(Axis(0), ndarray::Slice::new(0, None, 2));
    let mut c = ArrayD::<f32>::zeros(strided.raw_dim());
    let t_strided: Vec<f64> = t.iter().step_by(2).copied().collect();
    let strided_labels =
        ExtraTensor::labels(&labels.iter().step_by(2).copied().collect::<Vec<_>>());
    chunked
        .velocity(
            strided,
            &t_strided,
            &Extras::new().with("label", strided_labels),
            c.view_mut(),
        )
        .unwrap();
    assert_eq!(c, a.slice_axis(Axis(0), ndarray::Slice::new(0, None, 2)));
}

#[test]
fn a_model_with_a_fixed_batch_of_one_runs_sample_by_sample() {
    // static_batch_label.onnx is label_input.onnx with every batch axis fixed to 1.
    let fixed = load("static_batch_label.onnx");
    assert_eq!(fixed.max_batch(), 1);
    assert_eq!(fixed.state_shape(), Some(&[2][..]));
    let dynamic = load("label_input.onnx");
    let x = random(&[5, 2], 1.0, 8);
    let t = [0.0, 0.2, 0.4, 0.6, 1.0];
    let extras = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2, 3, 1]));
    let mut a = ArrayD::<f32>::zeros(x.raw_dim());
    let mut b = ArrayD::<f32>::zeros(x.raw_dim());
    fixed.velocity(x.view(), &t, &extras, a.view_mut()).unwrap();
    dynamic
        .velocity(x.view(), &t, &extras, b.view_mut())
        .unwrap();
    assert_eq!(a, b);
    let null = fixed.null_extras(5).unwrap().expect("declared");
    assert_eq!(null.get("label"), Some(&ExtraTensor::labels(&[3; 5])));
}

#[test]
fn a_scalar_time_model_groups_equal_times_and_slices_extras_with_them() {
    // scalar_time_label.onnx is label_input.onnx with t a scalar broadcast in
    // the graph. Different times per sample run as one call per time group
    // (here in chunks of at most 2), with the labels of those samples.
    runtime();
    let scalar = OnnxField::builder()
        .max_batch(2)
        .load_file(fixture("scalar_time_label.onnx"))
        .unwrap();
    assert_eq!(scalar.mapping().time_layout, TimeLayout::Scalar);
    let per_sample = load("label_input.onnx");
    let x = random(&[11, 2], 1.2, 12);
    let t: Vec<f64> = (0..11).map(|i| [0.25, 0.75, 0.5][i % 3]).collect();
    let labels: Vec<i64> = (0..11).map(|i| (i * 7 % 4) as i64).collect();
    let extras = Extras::new().with("label", ExtraTensor::labels(&labels));
    let mut a = ArrayD::<f32>::zeros(x.raw_dim());
    let mut b = ArrayD::<f32>::zeros(x.raw_dim());
    scalar
        .velocity(x.view(), &t, &extras, a.view_mut())
        .unwrap();
    per_sample
        .velocity(x.view(), &t, &extras, b.view_mut())
        .unwrap();
    let diff = max_abs_diff(&a, &b);
    assert!(diff <= 1e-6, "scalar-time grouping differs by {diff:e}");
}

#[test]
fn a_session_pool_used_from_threads_matches_serial_calls() {
    runtime();
    let field = Arc::new(
        OnnxField::builder()
            .sessions(2)
            .intra_threads(1)
            .load_file(fixture("mlp256.onnx"))
            .unwrap(),
    );
    assert_eq!(field.sessions(), 2);
    assert_eq!(
        field.jvp_sessions(),
        Some(2),
        "the tangent model opens as many sessions"
    );
    let inputs: Vec<(ArrayD<f32>, f64)> = (0..4)
        .map(|k| (random(&[33, 2], 1.0, 100 + k), 0.2 * k as f64 + 0.1))
        .collect();
    let serial: Vec<ArrayD<f32>> = inputs
        .iter()
        .map(|(x, t)| {
            let mut out = ArrayD::<f32>::zeros(x.raw_dim());
            field
                .velocity(x.view(), &[*t], Extras::none(), out.view_mut())
                .unwrap();
            out
        })
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = inputs
        .into_iter()
        .map(|(x, t)| {
            let field = Arc::clone(&field);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut results = Vec::new();
                for _ in 0..20 {
                    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
                    field
                        .velocity(x.view(), &[t], Extras::none(), out.view_mut())
                        .unwrap();
                    results.push(out);
                }
                results
            })
        })
        .collect();
    for (k, h) in handles.into_iter().enumerate() {
        for out in h.join().expect("thread") {
            assert_eq!(out, serial[k], "thread {k}");
        }
    }
}

fn ring() -> GaussianMixture {
    let ot = Scheduler::builtin("ot", &[]).unwrap();
    GaussianMixture::ring(8, 4.0, 0.3, Arc::new(ot)).unwrap()
}

#[test]
fn the_gmm_model_equals_the_analytic_field() {
    let field = load("gmm_ot.onnx");
    let exact = ring();
    let n = 2000;
    let x = random(&[n, 2], 2.5, 21);
    let mut rng = SeededRng::new(22);
    let t: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
    let mut a = ArrayD::<f32>::zeros(x.raw_dim());
    let mut b = ArrayD::<f32>::zeros(x.raw_dim());
    field
        .velocity(x.view(), &t, Extras::none(), a.view_mut())
        .unwrap();
    exact
        .velocity(x.view(), &t, Extras::none(), b.view_mut())
        .unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (*p as f64 - *q as f64).abs() / (1.0 + (*q as f64).abs()))
        .fold(0.0, f64::max);
    println!("gmm_ot: max |onnx - analytic| / (1 + |analytic|) = {worst:e}");
    assert!(worst <= 1e-5, "relative error {worst:e}");
}

#[test]
fn the_gmm_model_carries_its_training_setup() {
    let field = load("gmm_ot.onnx");
    assert_eq!(field.prediction(), Some(Prediction::Velocity));
    let scheduler = field.scheduler(&[]).unwrap().expect("fmrt.scheduler");
    let ot = Scheduler::builtin("ot", &[]).unwrap();
    for t in [0.0, 0.3, 1.0] {
        assert_eq!(scheduler.coefficients(t), ot.coefficients(t));
    }
    let x1 = load("gmm_ot_x1.onnx");
    assert_eq!(x1.prediction(), Some(Prediction::X1));
    assert!(x1.scheduler_source().is_some());
    assert!(load("time_b.onnx").scheduler(&[]).unwrap().is_none());

    let d = field.describe();
    assert_eq!(d.provider, "CPU");
    assert_eq!(d.state_shape, Some(vec![2]));
    assert!(d
        .metadata
        .iter()
        .any(|(k, v)| k == "fmrt.prediction" && v == "velocity"));
    let text = d.to_string();
    assert_contains(
        &text,
        &[
            "gmm_ot.onnx",
            "state (detected)",
            "time [B] (detected)",
            "fmrt.scheduler",
            "provider: CPU",
        ],
    );
}

#[test]
fn sampling_the_gmm_model_matches_the_analytic_field() {
    let field: Arc<dyn VelocityField> = Arc::new(load("gmm_ot.onnx"));
    let exact: Arc<dyn VelocityField> = Arc::new(ring());
    for solver in [
        SolverConfig::adaptive(Method::Dopri5, 1e-6, 1e-6),
        SolverConfig::fixed(Method::Midpoint, Steps::Count(100)),
    ] {
        let a = Sampler::new(Arc::clone(&field), solver.clone())
            .sample(500, 9)
            .unwrap();
        let b = Sampler::new(Arc::clone(&exact), solver.clone())
            .sample(500, 9)
            .unwrap();
        let diff = max_abs_diff(&a.x, &b.x);
        println!(
            "{}: max |onnx - analytic| samples = {diff:e}",
            solver.method
        );
        assert!(diff <= 1e-4, "{}: {diff:e}", solver.method);
    }
}

#[test]
fn an_explicit_bad_library_path_is_an_error_naming_it() {
    runtime();
    let bad = Path::new("/nonexistent/fmrt-test/libonnxruntime.so");
    let err = onnx::init_runtime(Some(bad)).unwrap_err().to_string();
    assert_contains(&err, &["/nonexistent/fmrt-test/libonnxruntime.so"]);
    let err = load_err(OnnxField::builder().ort_library(bad), "time_b.onnx");
    assert_contains(&err, &["/nonexistent/fmrt-test/libonnxruntime.so"]);
    // A file that exists but is not the loaded library is refused by name too.
    let other = fixture("time_b.onnx");
    let err = onnx::init_runtime(Some(&other)).unwrap_err().to_string();
    assert_contains(&err, &["time_b.onnx"]);
}

#[test]
fn a_missing_library_error_lists_the_places_and_the_fetch_command() {
    let empty = std::env::temp_dir().join("fmrt-no-onnxruntime-here");
    let places = SearchPlaces {
        explicit: None,
        environment: None,
        folders: vec![(LibrarySource::Project, empty.clone())],
        system: Some("libfmrt-test-no-such-onnxruntime.so".to_string()),
    };
    let err = onnx::locate(&places).unwrap_err().to_string();
    assert_contains(
        &err,
        &[
            &empty.display().to_string(),
            "libfmrt-test-no-such-onnxruntime.so",
            "bash scripts/fetch-onnxruntime.sh",
            "ORT_DYLIB_PATH",
        ],
    );
    // The standard places name no folder of the source tree: a shipped
    // library must not load what is planted there. The development places,
    // asked for with the checkout, find the library that the tests use.
    runtime();
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let standard = SearchPlaces::standard(None);
    for folder in onnx::checkout_folders(checkout) {
        assert!(!standard.folders.contains(&folder), "{folder:?}");
    }
    let (path, _) = onnx::locate(&SearchPlaces::development(None, checkout)).unwrap();
    assert!(path.exists() || path.to_string_lossy().starts_with("libonnxruntime"));
    let info = onnx::runtime_info().expect("loaded");
    println!("ONNX Runtime: {} ({})", info.library.display(), info.source);
}

#[test]
fn cuda_is_required_or_falls_back_with_a_note() {
    use fmrt::field::onnx::{ExecutionProvider, ProviderPolicy};
    let cuda = ExecutionProvider::Cuda { device_id: 0 };
    // What CUDA lacks here: the feature, or (with it) a GPU build of the library.
    let why = if cfg!(feature = "cuda") {
        "has no CUDA execution provider"
    } else {
        "--features cuda"
    };
    runtime();
    let required = OnnxField::builder()
        .execution_provider(cuda)
        .load_file(fixture("time_b.onnx"));
    let gpu_library = cfg!(feature = "cuda")
        && onnx::runtime_info().is_some_and(|i| i.library.to_string_lossy().contains("/gpu/"));
    let why = match required {
        // A GPU build of fmrt and of the library, and a working CUDA: it runs there.
        Ok(field) if gpu_library => {
            assert_eq!(field.provider(), "CUDA:0");
            assert!(field.provider_notes().is_empty());
            return;
        }
        Ok(field) => panic!("CUDA cannot run here, yet {} loaded", field.provider()),
        Err(e) => {
            let err = e.to_string();
            // The GPU library without CUDA's own libraries fails to start the provider.
            let why = if gpu_library {
                "cannot start the CUDA provider"
            } else {
                why
            };
            println!("CUDA required: {err}");
            assert_contains(&err, &["time_b.onnx", why]);
            why
        }
    };
    let field = OnnxField::builder()
        .execution_provider(cuda)
        .provider_policy(ProviderPolicy::Prefer)
        .sessions(2)
        .load_file(fixture("time_b.onnx"))
        .unwrap();
    assert_eq!(field.provider(), "CPU");
    assert_eq!(field.provider_notes().len(), 1);
    assert_contains(
        &field.provider_notes()[0],
        &[why, "running on the CPU instead"],
    );
    assert_contains(&field.describe().to_string(), &["provider: CPU", "note:"]);
}
