//! ONNX sampling overhead and a Python onnxruntime baseline.
//!
//! On `tests/fixtures/mlp256.onnx` (a 2→256→256→256→2 MLP) at batch 4096:
//! - the bare `Session::run` time of one call (plain ort, same inputs);
//! - fmrt's sampling time with midpoint and RK4, reported as
//!   overhead = total time / (NFE × bare call time); 1 means everything besides
//!   the network (solver arithmetic, f64↔f32 copies, adapters) is free;
//! - when a Python with `onnxruntime` and `numpy` is found (`FMRT_BENCH_PYTHON`,
//!   else `python3`), `benches/python_midpoint.py` runs the same midpoint loop
//!   with Python onnxruntime, and the throughput ratio is printed.
//!
//! - then, for a cheap field under adaptive steps, the same overhead for
//!   `tests/fixtures/gmm_ot.onnx` (the exact velocity of an 8-component
//!   mixture, a few hundred flops per sample) with dopri5 at rtol = atol =
//!   1e-5, with the per-sample and the batch error norm: there the solver's
//!   own work per stage is no longer hidden behind the network.
//!
//! - per call, `OnnxField::velocity` against a bare `Session::run` at batch
//!   1, 256 and 4096 (one intra-op thread).
//!
//! Medians of repeated runs; nothing is asserted.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use fmrt::field::onnx::{ensure_runtime_for_development, ort_environment, OnnxField};
use fmrt::sampler::{Sampler, TimeSpan};
use fmrt::solver::{AdaptiveOptions, ErrorNorm, Method, SolverConfig, Steps};
use ndarray::{Array1, Array2};
use ort::session::Session;
use ort::value::TensorRef;

const BATCH: usize = 4096;
const STEPS: usize = 50;
const REPEATS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median time of `repeats` plain `Session::run` calls on (`x`, `t`),
/// after 3 warm-up calls.
fn bare_call_median(
    session: &mut Session,
    x: &Array2<f32>,
    t: &Array1<f32>,
    repeats: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut call = || -> Result<f64, Box<dyn std::error::Error>> {
        let started = Instant::now();
        let outputs = session.run(ort::inputs![
            "x" => TensorRef::from_array_view(x.view())?,
            "t" => TensorRef::from_array_view(t.view())?,
        ])?;
        let v = outputs["v"].try_extract_array::<f32>()?;
        std::hint::black_box(v.sum());
        Ok(started.elapsed().as_secs_f64())
    };
    for _ in 0..3 {
        call()?;
    }
    Ok(median(
        (0..repeats).map(|_| call()).collect::<Result<_, _>>()?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ensure_runtime_for_development(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))?;
    let model_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlp256.onnx");

    // The bare call: one plain ort session, the same inputs every time.
    let (environment, _) = ort_environment(None)?;
    let mut session = Session::builder(environment)?.commit_from_file(&model_path)?;
    let x = Array2::<f32>::from_shape_fn((BATCH, 2), |(i, j)| {
        ((i * 31 + j * 17) % 97) as f32 / 48.0 - 1.0
    });
    let t = Array1::<f32>::from_elem(BATCH, 0.5);
    let bare = bare_call_median(&mut session, &x, &t, 20)?;
    println!(
        "mlp256, batch {BATCH}: bare Session::run {:.3} ms",
        bare * 1e3
    );

    call_overhead_by_batch(&model_path)?;

    let field = Arc::new(OnnxField::load_file(&model_path)?);
    let sampler = Sampler::new(
        field,
        SolverConfig::fixed(Method::Midpoint, Steps::Count(STEPS)),
    );
    let x0 = sampler.draw_noise(BATCH, 0)?;
    println!(
        "{:<22} {:>6} {:>12} {:>10}",
        "method", "nfe", "total ms", "overhead"
    );
    let mut midpoint_seconds = 0.0;
    for (name, method, steps) in [
        ("midpoint, 50 steps", Method::Midpoint, STEPS),
        ("rk4, 25 steps", Method::Rk4, 25),
    ] {
        let sampler = sampler
            .clone()
            .with_solver(SolverConfig::fixed(method, Steps::Count(steps)));
        let mut nfe = 0;
        let mut times = Vec::new();
        for _ in 0..REPEATS {
            let started = Instant::now();
            let samples = sampler.integrate(x0.view(), &TimeSpan::Full, &[])?;
            times.push(started.elapsed().as_secs_f64());
            nfe = samples.stats.nfe;
        }
        let total = median(times);
        if method == Method::Midpoint {
            midpoint_seconds = total;
        }
        println!(
            "{name:<22} {nfe:>6} {:>12.1} {:>10.3}",
            total * 1e3,
            total / (nfe as f64 * bare)
        );
    }

    // The bare call again, after the sampling runs: the spread between the two
    // measurements shows how much the machine drifted during the run. (Bare
    // calls are not interleaved with the solves: ONNX Runtime's worker threads
    // spin for a while after each run and would slow the other session.)
    std::thread::sleep(std::time::Duration::from_millis(200));
    let bare_after = bare_call_median(&mut session, &x, &t, 20)?;
    println!(
        "bare Session::run after the runs: {:.3} ms ({:+.1}% against before)",
        bare_after * 1e3,
        100.0 * (bare_after / bare - 1.0)
    );

    cheap_field_overhead(environment)?;

    let python = std::env::var("FMRT_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let has_onnxruntime = Command::new(&python)
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_onnxruntime {
        println!("python baseline skipped: `{python}` has no onnxruntime (set FMRT_BENCH_PYTHON)");
        return Ok(());
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python_midpoint.py");
    let output = Command::new(&python)
        .arg(&script)
        .args(["--model", &model_path.display().to_string()])
        .args([
            "--batch",
            &BATCH.to_string(),
            "--steps",
            &STEPS.to_string(),
            "--repeats",
            &REPEATS.to_string(),
        ])
        .output()?;
    if !output.status.success() {
        println!(
            "python baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return Ok(());
    }
    let python_seconds: f64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    println!(
        "python onnxruntime midpoint loop: {:.1} ms; fmrt / python time ratio {:.3} (below 1: fmrt is faster)",
        python_seconds * 1e3,
        midpoint_seconds / python_seconds
    );
    Ok(())
}

/// One `OnnxField::velocity` call against one bare `Session::run` of the
/// same inputs, at batch sizes from 1 (where fmrt's per-call checks weigh
/// most) to 4096, one intra-op thread each.
fn call_overhead_by_batch(model_path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let (environment, _) = ort_environment(None)?;
    println!(
        "{:>6} {:>12} {:>14} {:>8}",
        "batch", "bare µs", "OnnxField µs", "ratio"
    );
    for batch in [1usize, 256, 4096] {
        let mut session = Session::builder(environment)?
            .with_intra_threads(1)?
            .commit_from_file(model_path)?;
        let field = OnnxField::builder()
            .intra_threads(1)
            .load_file(model_path)?;
        let x = Array2::<f32>::from_shape_fn((batch, 2), |(i, j)| {
            ((i * 31 + j * 17) % 97) as f32 / 48.0 - 1.0
        });
        let t = Array1::<f32>::from_elem(batch, 0.5);
        let t64 = vec![0.5f64; batch];
        let repeats = (100_000 / batch).clamp(20, 5_000);
        let bare = bare_call_median(&mut session, &x, &t, repeats)?;
        let x = x.into_dyn();
        let mut out = x.clone();
        let mut call = || -> Result<f64, Box<dyn std::error::Error>> {
            let started = Instant::now();
            use fmrt::field::VelocityField;
            field.velocity(x.view(), &t64, fmrt::field::Extras::none(), out.view_mut())?;
            std::hint::black_box(out[[0, 0]]);
            Ok(started.elapsed().as_secs_f64())
        };
        for _ in 0..3 {
            call()?;
        }
        let ours = median((0..repeats).map(|_| call()).collect::<Result<_, _>>()?);
        println!(
            "{batch:>6} {:>12.1} {:>14.1} {:>8.3}",
            bare * 1e6,
            ours * 1e6,
            ours / bare
        );
    }
    Ok(())
}

/// The overhead of adaptive dopri5 sampling on the cheap mixture field.
fn cheap_field_overhead(
    environment: &ort::environment::Environment,
) -> Result<(), Box<dyn std::error::Error>> {
    let model_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gmm_ot.onnx");
    let mut session = Session::builder(environment)?.commit_from_file(&model_path)?;
    let field = Arc::new(OnnxField::load_file(&model_path)?);
    let sampler = Sampler::new(field, SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5));
    let x0 = sampler.draw_noise(BATCH, 1)?;
    let x = x0.clone().into_dimensionality::<ndarray::Ix2>()?;
    let t = Array1::<f32>::from_elem(BATCH, 0.5);
    let bare = bare_call_median(&mut session, &x, &t, 30)?;
    println!(
        "gmm_ot, batch {BATCH}: bare Session::run {:.3} ms",
        bare * 1e3
    );
    for (name, norm) in [
        ("dopri5, per-sample norm", ErrorNorm::PerSample),
        ("dopri5, batch norm", ErrorNorm::Batch),
    ] {
        let sampler = sampler.clone().with_solver(SolverConfig::adaptive_with(
            Method::Dopri5,
            AdaptiveOptions {
                rtol: 1e-5,
                atol: 1e-5,
                norm,
                ..AdaptiveOptions::default()
            },
        ));
        let mut nfe = 0;
        let mut times = Vec::new();
        for _ in 0..REPEATS {
            let started = Instant::now();
            let samples = sampler.integrate(x0.view(), &TimeSpan::Full, &[])?;
            times.push(started.elapsed().as_secs_f64());
            nfe = samples.stats.nfe;
        }
        let total = median(times);
        println!(
            "{name:<24} {nfe:>4} NFE {:>8.1} ms  overhead {:.3}",
            total * 1e3,
            total / (nfe as f64 * bare)
        );
    }
    Ok(())
}
