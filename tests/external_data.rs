//! Models whose weights are stored as external data (what
//! `onnx.save(..., save_as_external_data=True)` writes, and every export over
//! 2 GB): they load from their file, and sample, differentiate and give
//! likelihoods exactly like the same model with its weights inline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::field::onnx::{self, OnnxField};
use fmrt::field::VelocityField;
use fmrt::graph::proto::{StringStringEntryProto, TensorProto};
use fmrt::graph::{decode_model, encode_model};
use fmrt::likelihood::{Divergence, Likelihood};
use fmrt::random::SeededRng;
use fmrt::sampler::Sampler;
use fmrt::solver::{Method, SolverConfig, Steps};
use ndarray::ArrayD;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn runtime() {
    onnx::ensure_runtime_for_development(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("ONNX Runtime is available");
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    }
}

/// Writes `model` into `dir` as `name` with every initializer of at least
/// 64 bytes moved to the external file `name.data` (offsets aligned to 4 KiB,
/// as onnx does for large tensors); returns the model's path and how many
/// bytes went external.
fn save_with_external_data(model: &Path, dir: &Path, name: &str) -> (PathBuf, usize) {
    let mut proto = decode_model(&std::fs::read(model).unwrap()).unwrap();
    let data_name = format!("{name}.data");
    let mut data: Vec<u8> = Vec::new();
    let graph = proto.graph.as_mut().expect("a graph");
    let mut moved = 0;
    for tensor in &mut graph.initializer {
        let raw = match tensor.raw_data.take() {
            Some(raw) => raw,
            None if !tensor.float_data.is_empty() => {
                let raw = tensor
                    .float_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                tensor.float_data.clear();
                raw
            }
            None => continue,
        };
        if raw.len() < 64 {
            tensor.raw_data = Some(raw);
            continue;
        }
        data.resize(data.len().div_ceil(4096) * 4096, 0);
        let offset = data.len();
        data.extend_from_slice(&raw);
        moved += raw.len();
        externalize(tensor, &data_name, offset, raw.len());
    }
    assert!(moved > 0, "{}: no initializer was moved", model.display());
    std::fs::write(dir.join(&data_name), &data).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, encode_model(&proto)).unwrap();
    (path, moved)
}

fn externalize(tensor: &mut TensorProto, location: &str, offset: usize, length: usize) {
    tensor.data_location = Some(1);
    tensor.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", length.to_string()),
    ];
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The external copy of the benchmark MLP (2→256→256→256→2, 0.5 MB of
/// weights) matches the inline one in velocities, JVPs, samples and exact
/// log-likelihoods.
#[test]
fn an_external_data_model_matches_its_inline_twin() {
    runtime();
    let dir = scratch("external-mlp");
    let (path, moved) = save_with_external_data(&fixture("mlp256.onnx"), &dir, "mlp256_ext.onnx");
    let model_size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(
        model_size < moved,
        "the .onnx file ({model_size} bytes) should no longer hold the {moved} bytes of weights"
    );
    let inline = Arc::new(OnnxField::load_file(fixture("mlp256.onnx")).unwrap());
    let external = Arc::new(OnnxField::load_file(&path).unwrap_or_else(|e| panic!("{e}")));

    let mut rng = SeededRng::new(3);
    let x = ArrayD::from_shape_fn(vec![64, 2], |_| rng.normal() as f32 * 2.0);
    let t: Vec<f64> = (0..64).map(|i| i as f64 / 63.0).collect();
    let mut a = ArrayD::zeros(x.raw_dim());
    let mut b = ArrayD::zeros(x.raw_dim());
    inline.velocity(x.view(), &t, a.view_mut()).unwrap();
    external.velocity(x.view(), &t, b.view_mut()).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0, "velocities differ");

    assert!(
        external.provides_jvp(),
        "{:?}",
        external.jvp_unavailable_reason()
    );
    let v = ArrayD::from_shape_fn(vec![64, 2], |_| rng.normal() as f32);
    inline.jvp(x.view(), &t, v.view(), a.view_mut()).unwrap();
    external.jvp(x.view(), &t, v.view(), b.view_mut()).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0, "JVPs differ");

    let solver = SolverConfig::fixed(Method::Midpoint, Steps::Count(20));
    let s_inline = Sampler::new(inline.clone(), solver.clone())
        .sample(32, 7)
        .unwrap();
    let s_external = Sampler::new(external.clone(), solver.clone())
        .sample(32, 7)
        .unwrap();
    assert_eq!(
        max_abs_diff(&s_inline.x, &s_external.x),
        0.0,
        "samples differ"
    );

    let data = s_inline.x.clone();
    let lp = |field: Arc<OnnxField>| {
        Likelihood::new(field, solver.clone())
            .with_divergence(Divergence::Exact)
            .log_likelihood(data.view())
            .unwrap()
            .log_p
    };
    let (la, lb) = (lp(inline), lp(external));
    for (p, q) in la.iter().zip(&lb) {
        assert!((p - q).abs() <= 1e-5, "log p {p} vs {q}");
    }
}

/// A sampling-only user never pays for the tangent model: loading with
/// derivatives enabled derives nothing until a derivative is asked for, and a
/// model whose tangent cannot be built still loads and samples.
#[test]
fn the_tangent_model_is_derived_on_first_use() {
    runtime();
    let field = OnnxField::load_file(fixture("unsupported_op.onnx")).expect("loads");
    let x = ArrayD::<f32>::zeros(vec![2, field.state_shape()[0]]);
    let mut out = x.clone();
    field
        .velocity(x.view(), &[0.5], out.view_mut())
        .expect("samples");
    assert!(!field.provides_jvp());
    let reason = field.jvp_unavailable_reason().expect("a reason");
    assert!(reason.contains("Hardmax"), "{reason}");
}
