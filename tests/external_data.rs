//! Models whose weights are stored as external data (what
//! `onnx.save(..., save_as_external_data=True)` writes, and every export over
//! 2 GB): they load from their file, and sample, differentiate and give
//! likelihoods exactly like the same model with its weights inline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::field::onnx::{self, OnnxField};
use fmrt::field::VelocityField;
use fmrt::likelihood::{Divergence, Likelihood};
use fmrt::random::SeededRng;
use fmrt::sampler::Sampler;
use fmrt::solver::{Method, SolverConfig, Steps};
use ndarray::ArrayD;

#[path = "support/external_data.rs"]
mod support;
use support::save_with_external_data;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn runtime() {
    onnx::ensure_runtime_for_development(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("ONNX Runtime is available");
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
    inline
        .velocity(x.view(), &t, fmrt::field::Extras::none(), a.view_mut())
        .unwrap();
    external
        .velocity(x.view(), &t, fmrt::field::Extras::none(), b.view_mut())
        .unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0, "velocities differ");

    assert!(
        external.derivatives().jvp,
        "{:?}",
        external.jvp_unavailable_reason()
    );
    let v = ArrayD::from_shape_fn(vec![64, 2], |_| rng.normal() as f32);
    inline
        .jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            a.view_mut(),
        )
        .unwrap();
    external
        .jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            b.view_mut(),
        )
        .unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0, "JVPs differ");

    // One copy of the weights for all sessions: the same numbers up to the
    // rounding of unpacked matrix products.
    let shared = OnnxField::builder()
        .share_weights(true)
        .load_file(&path)
        .unwrap_or_else(|e| panic!("{e}"));
    inline
        .velocity(x.view(), &t, fmrt::field::Extras::none(), a.view_mut())
        .unwrap();
    shared
        .velocity(x.view(), &t, fmrt::field::Extras::none(), b.view_mut())
        .unwrap();
    assert!(
        max_abs_diff(&a, &b) <= 1e-5,
        "shared-weight velocities differ"
    );
    inline
        .jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            a.view_mut(),
        )
        .unwrap();
    shared
        .jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            b.view_mut(),
        )
        .unwrap();
    assert!(max_abs_diff(&a, &b) <= 1e-5, "shared-weight JVPs differ");

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
    let x = ArrayD::<f32>::zeros(vec![2, field.state_shape().unwrap()[0]]);
    let mut out = x.clone();
    field
        .velocity(
            x.view(),
            &[0.5],
            fmrt::field::Extras::none(),
            out.view_mut(),
        )
        .expect("samples");
    assert!(!field.derivatives().jvp);
    let reason = field.jvp_unavailable_reason().expect("a reason");
    assert!(reason.contains("Hardmax"), "{reason}");
}

/// Hidden width of the widened benchmark MLP: its two N×N layers hold
/// 2·N²·4 bytes = 210 MB, the weights of a model worth storing externally.
const WIDE: usize = 5120;

/// Writes the benchmark MLP widened to [`WIDE`] hidden units, its weights
/// (random, scaled 1/√fan-in so activations stay O(1)) in an external-data
/// file; returns the model's path and the bytes of weights.
fn write_wide_external_mlp(dir: &Path) -> (PathBuf, usize) {
    use std::io::Write;
    let mut proto =
        fmrt::graph::decode_model(&std::fs::read(fixture("mlp256.onnx")).unwrap()).unwrap();
    let data_name = "wide.onnx.data";
    let mut data = std::io::BufWriter::new(std::fs::File::create(dir.join(data_name)).unwrap());
    let mut rng = SeededRng::new(11);
    let mut written = 0usize;
    for tensor in &mut proto.graph.as_mut().unwrap().initializer {
        let dims: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
        let wide = |d: usize| if d == 256 { WIDE } else { d };
        let dims: Vec<usize> = dims.into_iter().map(wide).collect();
        let count: usize = dims.iter().product();
        let fan_in = *dims.last().unwrap() as f64;
        let bytes: Vec<u8> = (0..count)
            .flat_map(|_| {
                (((rng.uniform() * 2.0 - 1.0) * (3.0 / fan_in).sqrt()) as f32).to_le_bytes()
            })
            .collect();
        tensor.dims = dims.iter().map(|&d| d as i64).collect();
        tensor.raw_data = None;
        tensor.float_data.clear();
        let pad = written.div_ceil(4096) * 4096 - written;
        data.write_all(&vec![0; pad]).unwrap();
        support::externalize(tensor, data_name, written + pad, bytes.len());
        data.write_all(&bytes).unwrap();
        written += pad + bytes.len();
    }
    data.flush().unwrap();
    let path = dir.join("wide.onnx");
    std::fs::write(&path, fmrt::graph::encode_model(&proto)).unwrap();
    let weights = 2 * WIDE * WIDE * 4;
    (path, weights)
}

/// The process's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

/// Peak resident memory of a process that opens a model with 210 MB of
/// external weights, samples, and then takes a JVP (which creates the tangent
/// model's session) and a stacked call (the likelihoods' stacked tangent
/// model, whose Gemm rule once made ONNX Runtime fold a transposed copy of
/// every weight), measured in a child process (this test binary, running
/// only [`peak_memory_of_one_model`]) so nothing else of the test run counts:
/// under 2.5× the weights after sampling by default, since ONNX Runtime reads
/// the weights from their file and fmrt holds no copy; and with
/// `share_weights` one copy for all sessions (a second copy would add 1×).
#[test]
#[cfg(target_os = "linux")]
fn a_large_external_data_model_loads_within_its_memory_budget() {
    runtime();
    let dir = scratch("external-wide");
    let (path, weights) = write_wide_external_mlp(&dir);
    let measure = |share: bool| {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "external_data::peak_memory_of_one_model",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FMRT_PEAK_MEMORY_MODEL", &path)
            .env("FMRT_PEAK_MEMORY_SHARE", if share { "1" } else { "0" })
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout).into_owned();
        assert!(
            child.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&child.stderr)
        );
        let figure = |key: &str| -> f64 {
            let line = out
                .lines()
                .find_map(|l| l.split_once(key))
                .unwrap_or_else(|| panic!("no `{key}` line in:\n{out}"));
            line.1.trim().parse::<f64>().unwrap() / weights as f64
        };
        let figures = (
            figure("peak after loading ONNX Runtime:"),
            figure("peak after sampling:"),
            figure("peak after a JVP:"),
            figure("peak after a stacked JVP:"),
        );

        println!(
            "{} MB of external weights, share_weights({share}): peak RSS {:.2}× the weights \
             with ONNX Runtime loaded, {:.2}× after opening and sampling, {:.2}× after a JVP \
             (tangent model), {:.2}× after a stacked call (the likelihoods' tangent model)",
            weights / 1_000_000,
            figures.0,
            figures.1,
            figures.2,
            figures.3
        );
        figures
    };
    let (_, sampled, _, _) = measure(false);
    assert!(
        sampled < 2.5,
        "opening and sampling peaked at {sampled:.2}× the weights"
    );
    let (_, sampled, derived, stacked) = measure(true);
    assert!(
        sampled < 1.5 && derived < 1.5 && stacked < 1.5,
        "with shared weights, sampling peaked at {sampled:.2}×, a JVP at {derived:.2}× and a \
         stacked call at {stacked:.2}× the weights: a second copy was made"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The child of [`a_large_external_data_model_loads_within_its_memory_budget`]:
/// runs only when it names a model in `FMRT_PEAK_MEMORY_MODEL`.
#[test]
#[ignore = "run by a_large_external_data_model_loads_within_its_memory_budget in its own process"]
fn peak_memory_of_one_model() {
    let Some(path) = std::env::var_os("FMRT_PEAK_MEMORY_MODEL") else {
        return;
    };
    let share = std::env::var("FMRT_PEAK_MEMORY_SHARE").as_deref() == Ok("1");
    runtime();
    println!("peak after loading ONNX Runtime: {}", peak_rss());
    let builder = OnnxField::builder().share_weights(share);
    let model = fmrt::model::Model::open_with(builder, &path, fmrt::model::ModelOptions::default())
        .unwrap();
    let samples = model
        .sampler(SolverConfig::fixed(Method::Euler, Steps::Count(2)))
        .sample(8, 1)
        .unwrap();
    assert!(samples.x.iter().all(|v| v.is_finite()));
    println!("peak after sampling: {}", peak_rss());
    let field = model.field();
    let x = samples.x;
    let mut out = ArrayD::zeros(x.raw_dim());
    field
        .jvp(
            x.view(),
            &[0.5],
            fmrt::field::Extras::none(),
            x.view(),
            out.view_mut(),
        )
        .unwrap();
    println!("peak after a JVP: {}", peak_rss());
    let v = x.clone().insert_axis(ndarray::Axis(0));
    let mut vel = ArrayD::zeros(x.raw_dim());
    let mut prod = ArrayD::zeros(v.raw_dim());
    field
        .velocity_and_jvps(
            x.view(),
            &[0.5],
            fmrt::field::Extras::none(),
            v.view(),
            vel.view_mut(),
            prod.view_mut(),
        )
        .unwrap();
    println!("peak after a stacked JVP: {}", peak_rss());
}
