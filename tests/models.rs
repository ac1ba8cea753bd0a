//! The trained example models shipped in `examples/models/`, sampled through
//! ONNX Runtime: two moons against fresh two-moons data, the class-conditional
//! model against its class regions, and schedule changes on the exact mixture.

use std::path::PathBuf;
use std::sync::Arc;

use fmrt::field::adapt::{Guided, ScheduleChange};
use fmrt::field::analytic::GaussianMixture;
use fmrt::field::onnx::{ensure_runtime_for_development, OnnxField};
use fmrt::field::{ExtraTensor, Extras, VelocityField};
use fmrt::sampler::Sampler;
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{Method, SolverConfig, Steps};
use ndarray::{ArrayView2, Ix2};

use crate::stats_util::{energy_distance, two_moons};

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn load(path: &str) -> Arc<OnnxField> {
    ensure_runtime_for_development(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("ONNX Runtime is available");
    Arc::new(OnnxField::load_file(repo_file(path)).expect("model loads"))
}

fn midpoint(steps: usize) -> SolverConfig {
    SolverConfig::fixed(Method::Midpoint, Steps::Count(steps))
}

/// The energy distance between 1500 samples and 1500 fresh two-moons points must
/// stay below twice the largest distance between two fresh two-moons sets of
/// that size over four seed pairs (the null level: a perfect model is itself a
/// fresh draw). A standard normal, the model's own source, must exceed it, so
/// the threshold separates "learnt the moons" from "learnt nothing".
#[test]
fn two_moons_samples_pass_a_two_sample_test() {
    let model = load("examples/models/two_moons.onnx");
    let n = 1500;
    let null = (0..4)
        .map(|i| {
            energy_distance(
                two_moons(n, 100 + 2 * i).view(),
                two_moons(n, 101 + 2 * i).view(),
            )
        })
        .fold(0.0, f64::max);
    let threshold = 2.0 * null;

    let sampler = Sampler::new(model, midpoint(100));
    let samples = sampler.sample(n, 3).expect("sampling");
    let x = samples.x.view().into_dimensionality::<Ix2>().expect("2-D");
    let fresh = two_moons(n, 7);
    let distance = energy_distance(x, fresh.view());
    assert!(
        distance < threshold,
        "energy distance {distance} >= {threshold} (null {null})"
    );

    let noise = sampler.draw_noise(n, 4).expect("noise");
    let noise = noise.view().into_dimensionality::<Ix2>().expect("2-D");
    let baseline = energy_distance(noise, fresh.view());
    assert!(
        baseline > threshold,
        "the test cannot tell noise from moons: {baseline} <= {threshold}"
    );
}

/// Class k's region of `examples/train/conditional.py`: the disc of radius 1.4
/// around 3·(cos(π/2 + 2πk/3), sin(π/2 + 2πk/3)).
fn share_in_region(x: ArrayView2<'_, f32>, class: usize) -> f64 {
    let angle = std::f64::consts::FRAC_PI_2 + std::f64::consts::TAU * class as f64 / 3.0;
    let centre = (3.0 * angle.cos(), 3.0 * angle.sin());
    let inside = x
        .rows()
        .into_iter()
        .filter(|p| (f64::from(p[0]) - centre.0).hypot(f64::from(p[1]) - centre.1) < 1.4)
        .count();
    inside as f64 / x.nrows() as f64
}

#[test]
fn conditional_model_puts_each_label_in_its_region() {
    let model = load("examples/models/conditional.onnx");
    let null = model
        .null_extras(1)
        .expect("valid metadata")
        .expect("declares a null label");
    let n = 500;
    for guidance in [0.0, 2.0] {
        let field: Arc<dyn VelocityField> = if guidance == 0.0 {
            model.clone()
        } else {
            Arc::new(Guided::new(model.clone(), guidance, null.clone()).expect("guided"))
        };
        for class in 0..3 {
            let labels = Extras::new().with("label", ExtraTensor::labels(&vec![class as i64; n]));
            let samples = Sampler::new(field.clone(), midpoint(50))
                .with_extras(labels)
                .sample(n, 10 + class as u64)
                .expect("sampling");
            let x = samples.x.view().into_dimensionality::<Ix2>().expect("2-D");
            let share = share_in_region(x, class);
            assert!(
                share >= 0.95,
                "w = {guidance}, class {class}: {share} in its region"
            );
        }
    }
}

/// The exact mixture fixture, trained with `ot`, sampled along `cosine`, gives
/// the same samples as the analytic mixture under `cosine` (the flow maps are
/// the same), and the same distribution as sampling it along `ot`.
#[test]
fn gmm_fixture_sampled_along_another_schedule() {
    let model = load("tests/fixtures/gmm_ot.onnx");
    let ot: Arc<dyn Schedule> =
        Arc::new(model.scheduler(&[]).expect("parses").expect("has metadata"));
    let cosine: Arc<dyn Schedule> = Arc::new(Scheduler::builtin("cosine", &[]).expect("built-in"));
    let changed = Arc::new(ScheduleChange::new(model.clone(), ot, cosine.clone()));
    let solver = SolverConfig::adaptive(Method::Dopri5, 1e-6, 1e-6);
    let n = 2000;
    let along_cosine = Sampler::new(changed, solver.clone())
        .sample(n, 21)
        .expect("sampling");
    let analytic = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, cosine).expect("mixture"));
    let exact = Sampler::new(analytic.clone(), solver.clone())
        .sample(n, 21)
        .expect("sampling");
    let diff = (&along_cosine.x - &exact.x)
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        diff < 1e-3,
        "max difference to the analytic cosine flow {diff}"
    );

    let along_ot = Sampler::new(model, solver).sample(n, 22).expect("sampling");
    let a = along_cosine
        .x
        .view()
        .into_dimensionality::<Ix2>()
        .expect("2-D");
    let b = along_ot.x.view().into_dimensionality::<Ix2>().expect("2-D");
    // Threshold: twice the largest distance between two exact draws of the
    // same size over four seed pairs, as in the two-moons test.
    let null = (0..4)
        .map(|i| {
            energy_distance(
                analytic.sample_data(n, 30 + 2 * i).view(),
                analytic.sample_data(n, 31 + 2 * i).view(),
            )
        })
        .fold(0.0, f64::max);
    let distance = energy_distance(a, b);
    assert!(
        distance < 2.0 * null,
        "energy distance {distance} vs null {null}"
    );
}

/// Hutchinson's estimator on a trained MLP (two moons) is unbiased: over 200
/// probe seeds the mean log-likelihood is within 3 standard errors of the
/// exact-divergence result, for every point. Exact and Hutchinson runs share
/// the fixed-step solver, so they integrate the same path and differ only in
/// the divergence estimate.
#[test]
fn hutchinson_is_unbiased_on_the_two_moons_mlp() {
    use fmrt::likelihood::{Divergence, Likelihood};
    let model = load("examples/models/two_moons.onnx");
    let x = two_moons(6, 55).into_dyn();
    let solver = SolverConfig::fixed(Method::Rk4, Steps::Count(10));
    let exact = Likelihood::new(model.clone(), solver.clone())
        .log_likelihood(x.view())
        .expect("exact likelihood");
    let seeds = 200;
    let mut estimates: Vec<Vec<f64>> = (0..6).map(|_| Vec::with_capacity(seeds)).collect();
    for seed in 0..seeds as u64 {
        let noisy = Likelihood::new(model.clone(), solver.clone())
            .with_divergence(Divergence::hutchinson(1))
            .with_seed(seed)
            .log_likelihood(x.view())
            .expect("Hutchinson likelihood");
        for (i, lp) in noisy.log_p.iter().enumerate() {
            estimates[i].push(*lp);
        }
    }
    let mut spread = 0.0;
    for (i, values) in estimates.iter().enumerate() {
        let mean = values.iter().sum::<f64>() / seeds as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (seeds - 1) as f64;
        let se = (var / seeds as f64).sqrt();
        spread += var.sqrt();
        assert!(
            (mean - exact.log_p[i]).abs() < 3.0 * se,
            "point {i}: mean {mean} vs exact {} (se {se})",
            exact.log_p[i]
        );
    }
    // The MLP's Jacobian is not diagonal, so single probes really vary.
    assert!(
        spread / 6.0 > 1e-3,
        "Hutchinson estimates barely vary: {spread}"
    );
}
