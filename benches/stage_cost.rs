//! The cost of one likelihood stage of an ONNX model, in forward-call units.
//!
//! On `tests/fixtures/mlp256.onnx` (a 2→256→256→256→2 SiLU MLP) at batch
//! 1024 it times, in the same run:
//! - one forward call (`velocity` on B rows): the unit;
//! - the per-direction stage: the velocity call plus one JVP call on the K·B
//!   rows of the states repeated K times (the primal replayed per direction);
//! - the stacked stage: one `velocity_and_jvps` call, the states given once
//!   and the K directions on a leading axis.
//!
//! for K = 1, 4 and 16 Hutchinson probes and for the exact divergence (the
//! D = 2 basis directions), with the field as `OnnxField::load_file` opens it
//! (the velocity session spinning, the tangent sessions not). Then, for
//! K = 1, both stages with ONNX Runtime's intra-op threads spinning and not
//! spinning in every session of the field.
//! Medians of repeated runs; nothing is asserted.
//! Set `FMRT_BENCH_MODEL` to time another model with a `[B, D]` state and a
//! `[B]` time.

use std::path::PathBuf;
use std::time::Instant;

use fmrt::field::onnx::{ensure_runtime_for_development, OnnxField};
use fmrt::field::{Extras, VelocityField};
use fmrt::random::SeededRng;
use ndarray::{Array2, Array3, Axis};

const BATCH: usize = 1024;
const REPEATS: usize = 15;

fn median(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[REPEATS / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ensure_runtime_for_development(&root)?;
    let path = std::env::var_os("FMRT_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures/mlp256.onnx"));
    let field = OnnxField::load_file(&path)?;
    let dim = field.state_shape().unwrap().iter().product::<usize>();
    if !field.derivatives().stacked_jvp {
        println!(
            "{}: no stacked JVPs: {}",
            path.display(),
            field.stacked_jvp_unavailable_reason().unwrap_or_default()
        );
        return Ok(());
    }
    let mut rng = SeededRng::new(5);
    let x = Array2::<f32>::from_shape_fn((BATCH, dim), |_| rng.normal() as f32).into_dyn();
    let t = vec![0.5; BATCH];
    let mut out = x.clone();
    let forward = median(|| {
        field
            .velocity(x.view(), &t, Extras::none(), out.view_mut())
            .unwrap()
    });
    println!(
        "{} at batch {BATCH}: one forward call {:.3} ms",
        path.display(),
        forward * 1e3
    );
    println!("directions   per-direction stage   stacked stage   (forward-call units)");
    let mut cases: Vec<(String, usize)> = [1, 4, 16]
        .iter()
        .map(|&k| (format!("K = {k}"), k))
        .collect();
    cases.push((format!("exact (D = {dim})"), dim));
    for (label, p) in cases {
        let (separate, stacked) = stage_times(&field, &x, p, &mut rng);
        println!(
            "{label:<12} {:>10.2} {:>20.2}",
            separate / forward,
            stacked / forward
        );
    }
    drop(field);
    println!("K = 1, seconds:    forward    per-direction    stacked");
    for (label, spinning) in [("spinning", true), ("not spinning", false)] {
        // One field at a time, so that no other session's threads spin.
        let field = OnnxField::builder().spinning(spinning).load_file(&path)?;
        let mut out = x.clone();
        let forward = median(|| {
            field
                .velocity(x.view(), &t, Extras::none(), out.view_mut())
                .unwrap()
        });
        let (separate, stacked) = stage_times(&field, &x, 1, &mut rng);
        println!("{label:<15} {forward:>9.4} {separate:>12.4} {stacked:>12.4}");
    }
    Ok(())
}

/// The median times of the per-direction and the stacked stage with `p`
/// directions per sample at `x`.
fn stage_times(
    field: &OnnxField,
    x: &ndarray::ArrayD<f32>,
    p: usize,
    rng: &mut SeededRng,
) -> (f64, f64) {
    let dim = x.shape()[1];
    let t = vec![0.5; BATCH];
    let extras = Extras::new();
    let mut out = x.clone();
    let v = Array3::<f32>::from_shape_fn((p, BATCH, dim), |_| rng.normal() as f32).into_dyn();
    // The per-direction form: x repeated P times, directions sample-major.
    let x_rep = ndarray::concatenate(Axis(0), &vec![x.view(); p]).expect("repeat x");
    let v_rep = v
        .to_shape((p * BATCH, dim))
        .expect("reshape v")
        .to_owned()
        .into_dyn();
    {
        let t_rep = vec![0.5; p * BATCH];
        let mut jv_rep = x_rep.clone();
        let separate = median(|| {
            field
                .velocity(x.view(), &t, Extras::none(), out.view_mut())
                .unwrap();
            field
                .jvp(
                    x_rep.view(),
                    &t_rep,
                    Extras::none(),
                    v_rep.view(),
                    jv_rep.view_mut(),
                )
                .unwrap();
        });
        let mut products = v.clone();
        let stacked = median(|| {
            field
                .velocity_and_jvps(
                    x.view(),
                    &t,
                    &extras,
                    v.view(),
                    out.view_mut(),
                    products.view_mut(),
                )
                .unwrap();
        });
        (separate, stacked)
    }
}
