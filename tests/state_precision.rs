//! An f32 solver state (`StatePrecision::F32`): the same steps as the f64
//! state, within f32 rounding; the methods' orders intact; trajectories and
//! per-sample intervals as with f64; every solver it does not apply to
//! refused by name.

use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::sampler::{Sampler, TimeSpan};
use fmrt::solver::{Method, SolverConfig, StatePrecision, Steps};
use fmrt::stochastic::Stochastic;
use ndarray::{Array2, ArrayD};

use crate::path::schedules::Ot;

/// Four components on a square, unequal weights.
fn mixture() -> Arc<GaussianMixture> {
    mixture_with_std(0.3)
}

/// The same components, each of standard deviation `std`.
fn mixture_with_std(std: f64) -> Arc<GaussianMixture> {
    let means = Array2::from_shape_vec((4, 2), vec![2.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.0, -2.0])
        .expect("means");
    let field = GaussianMixture::new(&[1.0, 2.0, 3.0, 4.0], means.view(), &[std; 4], Arc::new(Ot))
        .expect("mixture");
    Arc::new(field)
}

fn sampler(method: Method, steps: usize) -> Sampler {
    Sampler::new(mixture(), SolverConfig::fixed(method, Steps::Count(steps)))
}

/// `n` steps placed on a grid.
type PlaceSteps = fn(usize) -> Steps;

/// CosyVoice's cosine grid t = 1 − cos(πu/2) with `n` steps: a non-uniform
/// grid (small steps first), a smooth map of uniform u.
fn cosine_grid(n: usize) -> Steps {
    let points = (0..=n)
        .map(|k| 1.0 - (std::f64::consts::FRAC_PI_2 * k as f64 / n as f64).cos())
        .map(|t: f64| if (1.0 - t).abs() < 1e-15 { 1.0 } else { t })
        .collect();
    Steps::Grid(points)
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn an_f32_state_takes_the_f64_steps_within_f32_rounding() {
    for method in [
        Method::Euler,
        Method::Midpoint,
        Method::Heun,
        Method::Rk4,
        Method::Tsit5,
    ] {
        let f64_run = sampler(method, 20).sample(256, 7).unwrap();
        let f32_run = sampler(method, 20)
            .with_state_precision(StatePrecision::F32)
            .sample(256, 7)
            .unwrap();
        assert_eq!(f32_run.stats, f64_run.stats, "{method}");
        assert_eq!(f32_run.samples, f64_run.samples, "{method}");
        let d = max_abs_diff(&f32_run.x, &f64_run.x);
        assert!(d < 2e-5, "{method}: f32 and f64 states differ by {d:e}");
        assert!(d > 0.0, "{method}: the f32 run is the f64 run itself");
    }
}

#[test]
fn an_f32_state_keeps_the_order_of_the_method() {
    // Wide components: a smooth flow, where few steps are already in the
    // asymptotic regime and the errors stay far above f32 rounding.
    let field = mixture_with_std(0.8);
    let want = Sampler::new(
        field.clone(),
        SolverConfig::adaptive(Method::Dopri5, 1e-10, 1e-10),
    )
    .sample(256, 3)
    .unwrap()
    .x;
    let cases = [
        (Method::Euler, 1.0, 16),
        (Method::Heun, 2.0, 8),
        (Method::Rk4, 4.0, 4),
    ];
    let grids: [(&str, PlaceSteps); 2] = [("uniform", Steps::Count), ("cosine", cosine_grid)];
    for ((method, order, steps), (grid, place)) in cases
        .iter()
        .flat_map(|case| grids.iter().map(move |grid| (*case, *grid)))
    {
        let error = |steps: usize| {
            let got = Sampler::new(field.clone(), SolverConfig::fixed(method, place(steps)))
                .with_state_precision(StatePrecision::F32)
                .sample(256, 3)
                .unwrap();
            max_abs_diff(&got.x, &want)
        };
        let (coarse, fine) = (error(steps), error(2 * steps));
        let observed = (coarse / fine).log2();
        eprintln!("{method} on {grid}: errors {coarse:e} and {fine:e}, order {observed:.2}");
        assert!(
            observed > order - 0.4,
            "{method} on {grid}: order {observed:.2} from errors {coarse:e} and {fine:e}, \
             expected {order}"
        );
    }
}

#[test]
fn trajectories_and_per_sample_intervals_run_in_f32_as_in_f64() {
    let times = [0.3, 0.55, 1.0];
    let f64_run = sampler(Method::Rk4, 10).sample_at(64, 5, &times).unwrap();
    let f32_run = sampler(Method::Rk4, 10)
        .with_state_precision(StatePrecision::F32)
        .sample_at(64, 5, &times)
        .unwrap();
    assert_eq!(f32_run.trajectory.shape(), f64_run.trajectory.shape());
    let d = max_abs_diff(&f32_run.trajectory, &f64_run.trajectory);
    assert!(d < 2e-5, "trajectories differ by {d:e}");

    let x0 = sampler(Method::Rk4, 10).draw_noise(3, 9).unwrap();
    let span = TimeSpan::PerSample {
        starts: vec![0.0, 0.2, 0.5],
        ends: vec![1.0, 0.9, 0.6],
    };
    let f64_run = sampler(Method::Rk4, 10)
        .integrate(x0.view(), &span, &[])
        .unwrap();
    let f32_run = sampler(Method::Rk4, 10)
        .with_state_precision(StatePrecision::F32)
        .integrate(x0.view(), &span, &[])
        .unwrap();
    let d = max_abs_diff(&f32_run.x, &f64_run.x);
    assert!(d < 2e-5, "per-sample intervals differ by {d:e}");
}

#[test]
fn solvers_an_f32_state_does_not_apply_to_are_refused_by_name() {
    let f32_state = |config: SolverConfig| {
        Sampler::new(mixture(), config).with_state_precision(StatePrecision::F32)
    };
    let adaptive = f32_state(SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5));
    let message = adaptive.sample(4, 1).unwrap_err().to_string();
    assert!(
        message.contains("state precision f32") && message.contains("adaptive steps (dopri5)"),
        "{message}"
    );
    let multistep = f32_state(SolverConfig::fixed(Method::Ab2, Steps::Count(10)));
    let message = multistep.sample(4, 1).unwrap_err().to_string();
    assert!(message.contains("multistep method ab2"), "{message}");

    let stochastic = f32_state(SolverConfig::fixed(Method::Euler, Steps::Count(10)))
        .with_sde(Stochastic::new(Arc::new(Ot), 0.5).unwrap());
    let message = stochastic.sample(4, 1).unwrap_err().to_string();
    assert!(
        message.contains("state precision f32") && message.contains("Euler–Maruyama"),
        "{message}"
    );
}

#[test]
fn the_names_of_the_precisions_round_trip() {
    for precision in [StatePrecision::F64, StatePrecision::F32] {
        assert_eq!(
            StatePrecision::from_name(precision.name()).unwrap(),
            precision
        );
    }
    let message = StatePrecision::from_name("f16").unwrap_err().to_string();
    assert!(
        message.contains("`f16`") && message.contains("f64 or f32"),
        "{message}"
    );
    assert_eq!(StatePrecision::default(), StatePrecision::F64);
}
