//! A TTS decoder as CosyVoice ships it, sampled by fmrt against the same loop
//! written on bare ONNX Runtime.
//!
//! The stand-in `tests/fixtures/real/cosyvoice_b2.onnx` (the estimator's
//! inputs, dtypes and axes; fixed batch 2: the conditional and the
//! unconditional row) at T = 500 frames, guidance w = 0.7 with `mu`, `spks`
//! and `cond` zeroed as the null condition, 10 Euler steps on CosyVoice's
//! cosine grid t = 1 − cos(πu/2):
//! - bare: CosyVoice's `solve_euler` on a plain `Session::run`, one call of
//!   batch 2 per step, the guidance mix and the Euler update in plain Rust;
//! - fmrt: `Model` (guidance, fixed batch) + `Sampler` on the same inputs,
//!   with its default f64 solver state and with an f32 state
//!   (`StatePrecision::F32`, as the bare loop keeps it).
//!
//! Reported: the median time of each and the median of the ratios of
//! neighbouring runs (1.00 = fmrt costs nothing beyond the network; the
//! three loops take turns, so a change of the machine's load touches
//! neighbours alike), the model calls per step (1: guidance
//! halves in one call), the sessions after a second length (T = 300)
//! (1: no session per shape) and that length's first-call time. Medians of
//! repeated runs; nothing is asserted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fmrt::field::onnx::{ensure_runtime_for_development, ort_environment, OnnxField};
use fmrt::field::{ExtraTensor, Extras, NullCondition, NullValue, VelocityField};
use fmrt::grid::explicit_steps;
use fmrt::model::{Model, ModelOptions};
use fmrt::random::SeededRng;
use fmrt::sampler::Sampler;
use fmrt::solver::{Method, SolverConfig, StatePrecision};
use ndarray::{Array1, ArrayD, Axis};
use ort::session::Session;
use ort::value::TensorRef;

const STEPS: usize = 10;
const CFG: f32 = 0.7;
const REPEATS: usize = 51;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = SeededRng::new(seed);
    ArrayD::from_shape_simple_fn(shape.to_vec(), || rng.normal() as f32)
}

struct Inputs {
    x0: ArrayD<f32>,
    mask: ArrayD<f32>,
    mu: ArrayD<f32>,
    spks: ArrayD<f32>,
    cond: ArrayD<f32>,
}

fn inputs(channels: usize, frames: usize) -> Inputs {
    Inputs {
        x0: random(&[1, channels, frames], 1),
        mask: ArrayD::from_elem(vec![1, 1, frames], 1.0),
        mu: random(&[1, channels, frames], 2),
        spks: random(&[1, channels], 3),
        cond: random(&[1, channels, frames], 4),
    }
}

fn grid() -> Vec<f64> {
    (0..=STEPS)
        .map(|i| 1.0 - (std::f64::consts::FRAC_PI_2 * i as f64 / STEPS as f64).cos())
        .map(|t: f64| if (t - 1.0).abs() < 1e-15 { 1.0 } else { t })
        .collect()
}

/// CosyVoice's `solve_euler` on a bare session: per step one call of batch
/// 2, [conditional; unconditional], then x += dt·((1 + w)·c − w·u).
fn bare_loop(
    session: &mut Session,
    inp: &Inputs,
    times: &[f64],
) -> Result<ArrayD<f32>, Box<dyn std::error::Error>> {
    let both =
        |a: &ArrayD<f32>, b: &ArrayD<f32>| ndarray::concatenate(Axis(0), &[a.view(), b.view()]);
    let zeros = |a: &ArrayD<f32>| ArrayD::<f32>::zeros(a.raw_dim());
    let mask = both(&inp.mask, &inp.mask)?;
    let mu = both(&inp.mu, &zeros(&inp.mu))?;
    let spks = both(&inp.spks, &zeros(&inp.spks))?;
    let cond = both(&inp.cond, &zeros(&inp.cond))?;
    let mut x = inp.x0.clone();
    for w in times.windows(2) {
        let x2 = both(&x, &x)?;
        let t = Array1::<f32>::from_elem(2, w[0] as f32);
        let outputs = session.run(ort::inputs![
            "x" => TensorRef::from_array_view(x2.view())?,
            "mask" => TensorRef::from_array_view(mask.view())?,
            "mu" => TensorRef::from_array_view(mu.view())?,
            "t" => TensorRef::from_array_view(t.view())?,
            "spks" => TensorRef::from_array_view(spks.view())?,
            "cond" => TensorRef::from_array_view(cond.view())?,
        ])?;
        let v = outputs["estimator_out"].try_extract_array::<f32>()?;
        let dt = (w[1] - w[0]) as f32;
        let (c, u) = (v.index_axis(Axis(0), 0), v.index_axis(Axis(0), 1));
        let mut row = x.index_axis_mut(Axis(0), 0);
        ndarray::Zip::from(&mut row)
            .and(&c)
            .and(&u)
            .for_each(|x, &c, &u| {
                *x += dt * ((1.0 + CFG) * c - CFG * u);
            });
    }
    Ok(x)
}

fn fmrt_sampler(model: &Model, inp: &Inputs, times: &[f64]) -> Sampler {
    let extras = Extras::new()
        .with("mask", ExtraTensor::Float32(inp.mask.clone()))
        .with("mu", ExtraTensor::Float32(inp.mu.clone()))
        .with("spks", ExtraTensor::Float32(inp.spks.clone()))
        .with("cond", ExtraTensor::Float32(inp.cond.clone()));
    Sampler::new(
        model.field(),
        SolverConfig::fixed(Method::Euler, explicit_steps(times).expect("grid")),
    )
    .with_extras(extras)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    ensure_runtime_for_development(root)?;
    let path = PathBuf::from(root).join("tests/fixtures/real/cosyvoice_b2.onnx");
    let times = grid();

    let (environment, _) = ort_environment(None)?;
    // FMRT_BENCH_SPINNING=0 builds both sessions without intra-op spinning,
    // so neither loop's idle threads spin against the other's on few cores.
    let spinning = std::env::var("FMRT_BENCH_SPINNING").as_deref() != Ok("0");
    // FMRT_BENCH_THREADS=N gives both sessions N intra-op threads (default:
    // ONNX Runtime's choice); 1 keeps the two sessions' pools from sharing
    // the cores.
    let threads: Option<usize> = std::env::var("FMRT_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut builder = Session::builder(environment)?.with_intra_op_spinning(spinning)?;
    let mut network = OnnxField::builder().spinning(spinning);
    if let Some(n) = threads {
        builder = builder.with_intra_threads(n)?;
        network = network.intra_threads(n);
    }
    let mut session = builder.commit_from_file(&path)?;
    let null = NullCondition::new()
        .with("mu", NullValue::Zeros)
        .with("spks", NullValue::Zeros)
        .with("cond", NullValue::Zeros);
    let options = ModelOptions {
        guidance: f64::from(CFG),
        null_condition: Some(null),
        ..ModelOptions::default()
    };
    let network = network.load_file(&path)?;
    let model = Model::new(std::sync::Arc::new(network), options)?;
    let channels = model.network().inputs()[0].dims[1].fixed().unwrap_or(80);

    let long = inputs(channels, 500);
    let sampler = fmrt_sampler(&model, &long, &times);
    let sampler32 = sampler.clone().with_state_precision(StatePrecision::F32);
    // Same result first: the loops are the same computation.
    let bare_x = bare_loop(&mut session, &long, &times)?;
    let fmrt_out = sampler.sample_from_noise(long.x0.view(), &[])?;
    let fmrt32_out = sampler32.sample_from_noise(long.x0.view(), &[])?;
    let max_diff = |x: &ArrayD<f32>| (&bare_x - x).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!(
        "cosyvoice_b2 stand-in, T = 500, w = {CFG}, {STEPS} Euler steps on the cosine grid: \
         {} model calls ({} per step), max |fmrt - bare| = {:.2e} (f64 state), {:.2e} (f32)",
        fmrt_out.stats.nfe,
        fmrt_out.stats.nfe / STEPS,
        max_diff(&fmrt_out.x),
        max_diff(&fmrt32_out.x)
    );
    // [bare, fmrt f64, fmrt f32], each round in a rotated order so that no
    // loop always follows the same other.
    let mut runs: [Vec<f64>; 3] = Default::default();
    for k in 0..REPEATS {
        for j in 0..3 {
            let which = (j + k) % 3;
            let started = Instant::now();
            match which {
                0 => drop(std::hint::black_box(bare_loop(
                    &mut session,
                    &long,
                    &times,
                )?)),
                1 => drop(std::hint::black_box(
                    sampler.sample_from_noise(long.x0.view(), &[])?,
                )),
                _ => drop(std::hint::black_box(
                    sampler32.sample_from_noise(long.x0.view(), &[])?,
                )),
            }
            runs[which].push(started.elapsed().as_secs_f64());
        }
    }
    let paired = |ours: &[f64]| median(ours.iter().zip(&runs[0]).map(|(f, b)| f / b).collect());
    println!(
        "  bare Session::run loop {:.2} ms; fmrt {:.2} ms (f64 state), {:.2} ms (f32 state): \
         fmrt / bare = {:.3} (f64 state), {:.3} (f32 state)",
        median(runs[0].clone()) * 1e3,
        median(runs[1].clone()) * 1e3,
        median(runs[2].clone()) * 1e3,
        paired(&runs[1]),
        paired(&runs[2]),
    );

    // One call of the network alone: fmrt's OnnxField against Session::run
    // on the same packed batch of 2.
    let packed = |a: &ArrayD<f32>, b: ArrayD<f32>| {
        ExtraTensor::Float32(ndarray::concatenate(Axis(0), &[a.view(), b.view()]).expect("rows"))
    };
    let zeros = |a: &ArrayD<f32>| ArrayD::<f32>::zeros(a.raw_dim());
    let extras2 = Extras::new()
        .with("mask", packed(&long.mask, long.mask.clone()))
        .with("mu", packed(&long.mu, zeros(&long.mu)))
        .with("spks", packed(&long.spks, zeros(&long.spks)))
        .with("cond", packed(&long.cond, zeros(&long.cond)));
    let x2 = ndarray::concatenate(Axis(0), &[long.x0.view(), long.x0.view()])?;
    let mut v2 = ArrayD::<f32>::zeros(x2.raw_dim());
    let one_step = [times[0], times[1]];
    let extras1 = Extras::new()
        .with("mask", ExtraTensor::Float32(long.mask.clone()))
        .with("mu", ExtraTensor::Float32(long.mu.clone()))
        .with("spks", ExtraTensor::Float32(long.spks.clone()))
        .with("cond", ExtraTensor::Float32(long.cond.clone()));
    let mut v1 = ArrayD::<f32>::zeros(long.x0.raw_dim());
    // The three in one loop, so that a change of the machine's load touches
    // all of them alike.
    let (mut field_calls, mut bare_calls, mut guided_calls) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let started = Instant::now();
        model
            .network()
            .velocity(x2.view(), &[0.3], &extras2, v2.view_mut())?;
        field_calls.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        std::hint::black_box(bare_loop(&mut session, &long, &one_step)?);
        bare_calls.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        model
            .field()
            .velocity(long.x0.view(), &[0.3], &extras1, v1.view_mut())?;
        guided_calls.push(started.elapsed().as_secs_f64());
    }
    println!(
        "  one call of batch 2: OnnxField {:.2} ms, guided field {:.2} ms, bare step {:.2} ms",
        median(field_calls) * 1e3,
        median(guided_calls) * 1e3,
        median(bare_calls) * 1e3
    );

    // A second length through the same loaded model.
    let short = inputs(channels, 300);
    let other = fmrt_sampler(&model, &short, &times);
    let started = Instant::now();
    let first = other.sample_from_noise(short.x0.view(), &[])?;
    let first_run = started.elapsed().as_secs_f64();
    let started = Instant::now();
    std::hint::black_box(other.sample_from_noise(short.x0.view(), &[])?);
    let second_run = started.elapsed().as_secs_f64();
    println!(
        "  T = 300 on the same model: sessions {} (none created per shape), first run {:.2} ms, \
         next {:.2} ms, {} calls",
        model.network().sessions(),
        first_run * 1e3,
        second_run * 1e3,
        first.stats.nfe
    );
    Ok(())
}
