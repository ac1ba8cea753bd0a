//! Sampling the exact Gaussian-mixture field must reproduce the mixture; the
//! flow must be invertible; trajectories and prediction conversions must agree
//! with the path.

use std::f64::consts::TAU;
use std::sync::Arc;

use fmrt::field::adapt::Predicted;
use fmrt::field::analytic::GaussianMixture;
use fmrt::field::VelocityField;
use fmrt::path::{AffinePath, Prediction};
use fmrt::random::SeededRng;
use fmrt::sampler::{Sampler, TimeSpan};
use fmrt::scheduler::Schedule;
use fmrt::solver::{Method, SolverConfig, Steps};
use fmrt::source::{Source, StandardNormal};
use fmrt::stochastic::Stochastic;
use fmrt::Error;
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMutD, Axis, Ix2};

use crate::path::schedules::{Cosine, Ot};
use crate::stats_util::sliced_wasserstein;

const N: usize = 20_000;
const RADIUS: f64 = 4.0;
const STD: f64 = 0.25;

/// Eight components on a circle of radius 4 with unequal weights (k+1)/36, so
/// that a sampler which ignored the weights would fail the occupancy check.
fn ring8(schedule: Arc<dyn Schedule>) -> GaussianMixture {
    let k = 8;
    let means = Array2::from_shape_fn((k, 2), |(j, c)| {
        let angle = TAU * j as f64 / k as f64;
        RADIUS * if c == 0 { angle.cos() } else { angle.sin() }
    });
    let weights: Vec<f64> = (0..k).map(|j| (j + 1) as f64).collect();
    GaussianMixture::new(&weights, means.view(), &vec![STD; k], schedule).expect("valid mixture")
}

fn dopri5(tol: f64) -> SolverConfig {
    SolverConfig::adaptive(Method::Dopri5, tol, tol)
}

fn fixed(method: Method, steps: usize) -> SolverConfig {
    SolverConfig::fixed(method, Steps::Count(steps))
}

fn as_2d(x: &ArrayD<f32>) -> ArrayView2<'_, f32> {
    x.view().into_dimensionality::<Ix2>().expect("2-D samples")
}

/// Checks occupancy, component means and the sliced Wasserstein distance of
/// `samples` against the mixture; returns every failure as text.
fn mixture_failures(
    field: &GaussianMixture,
    samples: ArrayView2<'_, f32>,
    label: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    let n = samples.nrows() as f64;
    let labels = field.assign(samples).expect("assign");
    let k = field.num_components();
    let mut counts = vec![0usize; k];
    let mut sums = vec![[0.0f64; 2]; k];
    for (row, &c) in samples.rows().into_iter().zip(&labels) {
        counts[c] += 1;
        sums[c][0] += f64::from(row[0]);
        sums[c][1] += f64::from(row[1]);
    }
    for c in 0..k {
        let weight = field.weights()[c];
        let occupancy = counts[c] as f64 / n;
        // The bound is 2 percentage points; the binomial 4-sigma bound is
        // tighter for every weight here (at most 0.012), so both are enforced.
        let binomial = 4.0 * (weight * (1.0 - weight) / n).sqrt();
        if (occupancy - weight).abs() > 0.02_f64.min(binomial) {
            failures.push(format!(
                "{label}: component {c} occupancy {occupancy:.4} vs weight {weight:.4} (bound {:.4})",
                0.02_f64.min(binomial)
            ));
        }
        let mean = [sums[c][0] / counts[c] as f64, sums[c][1] / counts[c] as f64];
        let means = field.means();
        let mu = means.row(c);
        let err = ((mean[0] - mu[0]).powi(2) + (mean[1] - mu[1]).powi(2)).sqrt();
        if err > 0.05 {
            failures.push(format!(
                "{label}: component {c} mean ({:.3}, {:.3}) is {err:.4} from ({:.3}, {:.3})",
                mean[0], mean[1], mu[0], mu[1]
            ));
        }
    }
    failures
}

/// The two-sample statistic: the points assigned to each component are
/// compared with as many exact draws from that component by the sliced
/// 1-Wasserstein distance, and the distances are averaged with the occupancies
/// as weights. Conditioning on the assignment keeps the binomial noise of the
/// occupancies (checked on their own above) out of the statistic, so it sees the
/// shape of every component.
fn per_component_distance(field: &GaussianMixture, samples: ArrayView2<'_, f32>, seed: u64) -> f64 {
    let labels = field.assign(samples).expect("assign");
    let mut rng = SeededRng::new(seed);
    let n = samples.nrows() as f64;
    let means = field.means();
    let mut total = 0.0;
    for c in 0..field.num_components() {
        let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        if rows.is_empty() {
            continue;
        }
        let generated = samples.select(Axis(0), &rows);
        let std = field.stds()[c];
        let exact = Array2::from_shape_fn((rows.len(), 2), |(_, d)| {
            (means[[c, d]] + std * rng.normal()) as f32
        });
        total += rows.len() as f64 / n * sliced_wasserstein(generated.view(), exact.view(), 32);
    }
    total
}

/// The threshold for [`per_component_distance`]: twice the largest value the
/// same procedure gives for N exact mixture draws, over four seeds. A correct
/// sampler is itself an (almost) exact draw, so it sits at that null level; the
/// factor 2 leaves room for solver error far below what a wrong mixture
/// produces (checked in `mixture_checks_detect_a_wrong_mixture`).
fn distance_threshold(field: &GaussianMixture) -> f64 {
    (0..4)
        .map(|i| {
            let exact = field.sample_data(N, 1000 + i);
            per_component_distance(field, exact.view(), 2000 + i)
        })
        .fold(0.0, f64::max)
        * 2.0
}

fn check_sampler_reproduces_mixture(config: SolverConfig, label: &str) {
    let field = Arc::new(ring8(Arc::new(Cosine)));
    let sampler = Sampler::new(field.clone(), config);
    let samples = sampler.sample(N, 7).expect("sampling succeeds");
    check_samples_reproduce_mixture(&field, &samples.x, label);
}

/// The occupancy, mean and per-component sliced-Wasserstein checks on `N`
/// samples of `field`.
fn check_samples_reproduce_mixture(field: &GaussianMixture, samples: &ArrayD<f32>, label: &str) {
    assert_eq!(samples.shape(), &[N, 2]);
    let field = field.clone();
    let x = as_2d(samples);

    let mut failures = mixture_failures(&field, x, label);
    let threshold = distance_threshold(&field);
    let distance = per_component_distance(&field, x, 99);
    eprintln!("{label}: per-component sliced W1 {distance} (threshold {threshold})");
    if distance > threshold {
        failures.push(format!(
            "{label}: per-component sliced W1 {distance:.4} exceeds {threshold:.4}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dopri5_reproduces_the_mixture() {
    check_sampler_reproduces_mixture(dopri5(1e-5), "dopri5");
}

#[test]
fn midpoint_100_steps_reproduces_the_mixture() {
    check_sampler_reproduces_mixture(fixed(Method::Midpoint, 100), "midpoint");
}

/// The checks can fail: a mixture whose components are 20% too wide, or whose
/// ring is 2% too large, exceeds the distance threshold, and equal weights fail
/// the occupancy check.
#[test]
fn mixture_checks_detect_a_wrong_mixture() {
    let field = ring8(Arc::new(Cosine));
    let threshold = distance_threshold(&field);
    let mut distances = Vec::new();

    let wider = GaussianMixture::new(
        field.weights(),
        field.means(),
        &[STD * 1.2; 8],
        Arc::new(Cosine),
    )
    .expect("valid mixture");
    distances.push((
        "wider",
        per_component_distance(&field, wider.sample_data(N, 5).view(), 99),
    ));

    let bigger_ring = field.means().mapv(|m| m * 1.02);
    let shifted = GaussianMixture::new(
        field.weights(),
        bigger_ring.view(),
        &[STD; 8],
        Arc::new(Cosine),
    )
    .expect("valid mixture");
    distances.push((
        "larger ring",
        per_component_distance(&field, shifted.sample_data(N, 5).view(), 99),
    ));

    for (what, distance) in distances {
        eprintln!("{what}: {distance} vs threshold {threshold}");
        assert!(distance > threshold, "{what}: {distance} <= {threshold}");
    }

    let equal_weights = GaussianMixture::new(&[1.0; 8], field.means(), &[STD; 8], Arc::new(Cosine))
        .expect("valid mixture");
    let wrong = equal_weights.sample_data(N, 5);
    assert!(
        !mixture_failures(&field, wrong.view(), "equal weights").is_empty(),
        "occupancy check must notice equal weights"
    );
}

/// Data → noise → data with Dopri5 at 1e-7 returns the starting points.
#[test]
fn backward_then_forward_returns_the_starting_points() {
    let field = Arc::new(ring8(Arc::new(Ot)));
    let sampler = Sampler::new(field.clone(), dopri5(1e-7));
    let x1 = field.sample_data(2000, 3).into_dyn();
    let back = sampler
        .integrate(
            x1.view(),
            &TimeSpan::Common {
                start: 1.0,
                end: 0.0,
            },
            &[],
        )
        .expect("backward solve");
    let forth = sampler
        .integrate(back.x.view(), &TimeSpan::Full, &[])
        .expect("forward solve");
    let max_error = (&forth.x - &x1).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(max_error < 1e-4, "round trip max error {max_error}");
    // The noise end of the trip is a standard normal: mean near 0, variance near 1.
    let noise = as_2d(&back.x);
    let mean = noise.mean_axis(Axis(0)).expect("non-empty");
    let var = noise.var_axis(Axis(0), 1.0);
    for c in 0..2 {
        assert!(mean[c].abs() < 0.1, "noise mean {mean}");
        assert!((var[c] - 1.0).abs() < 0.1, "noise variance {var}");
    }
}

/// States saved at t = 0, 0.5, 1 are the noise, a draw from p_0.5, and the samples.
#[test]
fn trajectory_hits_the_path_marginals() {
    let field = Arc::new(ring8(Arc::new(Ot)));
    let sampler = Sampler::new(field.clone(), dopri5(1e-6));
    let times = [0.0, 0.5, 1.0];
    let n = 5000;
    let samples = sampler.sample_at(n, 11, &times).expect("sampling");
    assert_eq!(samples.trajectory.shape(), &[3, n, 2]);
    let noise = sampler.draw_noise(n, 11).expect("noise");
    assert_eq!(samples.trajectory.index_axis(Axis(0), 0), noise.view());
    assert_eq!(samples.trajectory.index_axis(Axis(0), 2), samples.x.view());

    // Compare the mean log-density of the saved states at t = 0.5 with that of an
    // exact draw x_t = α x1 + σ x0 from the path: equal within 5 standard errors.
    let path = AffinePath::new(Arc::new(Ot));
    let (x1, _) = field.sample_data_labeled(n, 21);
    let x0 = StandardNormal::new().sample(&[n, 2], 22).expect("noise");
    let mut exact = ArrayD::<f32>::zeros(vec![n, 2]);
    path.point_into(x1.view().into_dyn(), x0.view(), &[0.5], exact.view_mut())
        .expect("path point");
    let mid = samples.trajectory.index_axis(Axis(0), 1).to_owned();
    let lp_flow = field
        .log_density(
            mid.view().into_dimensionality::<Ix2>().expect("2-D"),
            &[0.5],
        )
        .expect("log density");
    let lp_exact = field
        .log_density(as_2d(&exact), &[0.5])
        .expect("log density");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let sd = |v: &[f64]| {
        let m = mean(v);
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    };
    let se = (sd(&lp_flow).powi(2) / n as f64 + sd(&lp_exact).powi(2) / n as f64).sqrt();
    let diff = (mean(&lp_flow) - mean(&lp_exact)).abs();
    assert!(
        diff < 5.0 * se,
        "mean log p_0.5 differs by {diff} (se {se})"
    );
}

/// A field that outputs x1-predictions of the mixture's flow.
struct X1Predictor {
    inner: Arc<GaussianMixture>,
    path: AffinePath,
}

impl VelocityField for X1Predictor {
    fn state_shape(&self) -> Option<&[usize]> {
        self.inner.state_shape()
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &fmrt::field::Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        let mut u = ArrayD::<f32>::zeros(x.raw_dim());
        self.inner
            .velocity(x.view(), t, fmrt::field::Extras::none(), u.view_mut())?;
        self.path.from_velocity(Prediction::X1, u.view(), x, t, out)
    }
}

/// An x1-predicting field seen through the `Predicted` adapter samples the same flow.
#[test]
fn x1_prediction_is_converted_to_the_same_flow() {
    let field = Arc::new(ring8(Arc::new(Cosine)));
    let predictor = Arc::new(X1Predictor {
        inner: field.clone(),
        path: AffinePath::new(Arc::new(Cosine)),
    });
    // Midpoint never evaluates at t = 1; RK4's last stage does, where σ = 0
    // and the adapter reads the model at the edge of its endpoint margin.
    let adapted = Arc::new(Predicted::new(predictor, Arc::new(Cosine), Prediction::X1));
    // Bounds about 3× the differences measured (2.0e-6, 2.2e-4).
    for (config, bound) in [
        (fixed(Method::Midpoint, 50), 6e-6),
        (fixed(Method::Rk4, 25), 7e-4),
    ] {
        let direct = Sampler::new(field.clone(), config.clone())
            .sample(500, 4)
            .expect("velocity sampling");
        let converted = Sampler::new(adapted.clone(), config.clone())
            .sample(500, 4)
            .expect("x1 sampling");
        let max_error = (&direct.x - &converted.x)
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        println!("{:?}: max difference {max_error:e}", config.method);
        assert!(
            max_error < bound,
            "{:?}: max difference {max_error}",
            config.method
        );
        assert_eq!(direct.stats.nfe, converted.stats.nfe);
    }
}

/// Per-sample spans that are all [0, 1] give the same result as the full span;
/// a sample with an empty span does not move.
#[test]
fn per_sample_spans() {
    let field = Arc::new(ring8(Arc::new(Ot)));
    let sampler = Sampler::new(field, fixed(Method::Rk4, 20));
    let x0 = sampler.draw_noise(4, 8).expect("noise");
    let full = sampler
        .integrate(x0.view(), &TimeSpan::Full, &[])
        .expect("full");
    let per = sampler
        .integrate(
            x0.view(),
            &TimeSpan::PerSample {
                starts: vec![0.0; 4],
                ends: vec![1.0; 4],
            },
            &[],
        )
        .expect("per sample");
    assert_eq!(full.x, per.x);

    let partial = sampler
        .integrate(
            x0.view(),
            &TimeSpan::PerSample {
                starts: vec![0.0, 0.5, 0.3, 0.0],
                ends: vec![1.0, 0.5, 0.9, 0.5],
            },
            &[],
        )
        .expect("partial spans");
    assert_eq!(
        partial.x.index_axis(Axis(0), 0),
        full.x.index_axis(Axis(0), 0)
    );
    assert_eq!(partial.x.index_axis(Axis(0), 1), x0.index_axis(Axis(0), 1));
    assert_ne!(
        partial.x.index_axis(Axis(0), 3),
        full.x.index_axis(Axis(0), 3)
    );
}

#[test]
fn wrong_noise_shape_names_the_tensor() {
    let field = Arc::new(ring8(Arc::new(Ot)));
    let sampler = Sampler::new(field, fixed(Method::Euler, 4));
    let bad = ArrayD::<f32>::zeros(vec![5, 3]);
    match sampler.integrate(bad.view(), &TimeSpan::Full, &[]) {
        Err(Error::Shape { tensor, actual, .. }) => {
            assert_eq!(tensor, "x0");
            assert_eq!(actual, vec![5, 3]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    let outside = sampler.sample_at(2, 0, &[1.5]);
    assert!(
        matches!(outside, Err(Error::InvalidArgument(_))),
        "{outside:?}"
    );
}

/// An unconditional field refuses extras instead of ignoring them, and the
/// sampler checks that every extra has one row per sample.
#[test]
fn extras_are_checked() {
    use fmrt::field::{ExtraTensor, Extras};
    let field = Arc::new(ring8(Arc::new(Ot)));
    let labels = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2]));
    let sampler = Sampler::new(field, fixed(Method::Euler, 2)).with_extras(labels);
    match sampler.sample(3, 0) {
        Err(Error::Extra { input, reason, .. }) => {
            assert_eq!(input, "label");
            assert!(reason.contains("`label` int64 [3]"), "{reason}")
        }
        other => panic!("expected an extras error, got {other:?}"),
    }
    match sampler.sample(4, 0) {
        Err(Error::Shape { tensor, actual, .. }) => {
            assert_eq!(tensor, "label");
            assert_eq!(actual, vec![3]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

/// Sample i depends on (seed, i) only: shards of a fixed-step run concatenate
/// to the unsharded run bit for bit, trajectories included.
#[test]
fn shards_concatenate_bit_for_bit() {
    let field = Arc::new(ring8(Arc::new(Ot)));
    let sampler = Sampler::new(field, fixed(Method::Rk4, 12));
    let times = [0.0, 0.5];
    let whole = sampler.sample_at(11, 3, &times).expect("sampling");
    let mut x = Vec::new();
    let mut traj: Vec<Vec<f32>> = vec![Vec::new(); times.len()];
    for (first, n) in [(0, 4), (4, 1), (5, 6)] {
        let shard = sampler.sample_rows(first, n, 3, &times).expect("shard");
        x.extend(shard.x.iter().copied());
        for (k, saved) in shard.trajectory.outer_iter().enumerate() {
            traj[k].extend(saved.iter().copied());
        }
    }
    assert_eq!(x, whole.x.iter().copied().collect::<Vec<_>>());
    for (k, saved) in whole.trajectory.outer_iter().enumerate() {
        assert_eq!(traj[k], saved.iter().copied().collect::<Vec<_>>());
    }
    // Another seed gives other samples.
    let other = sampler.sample_rows(0, 4, 4, &[]).expect("sampling");
    assert_ne!(other.x.iter().next(), whole.x.iter().next());
}

/// Stochastic sampling (Euler–Maruyama, 200 steps) at G = 0.5 and 1 keeps the
/// ODE's marginals: the mean exact log-density of 8,192 samples is within
/// 0.05 nats of E_q[log q], and the ODE sampler's mixture checks pass. G = 0
/// is the Euler ODE sampler bit for bit.
#[test]
fn sde_sampling_reproduces_the_mixture() {
    let schedule: Arc<dyn Schedule> = Arc::new(Cosine);
    let field = Arc::new(ring8(schedule.clone()));
    let euler = fixed(Method::Euler, 200);
    // E_q[log q] from 400,000 exact draws (standard error about 0.002 nats).
    let (exact, _) = field.sample_data_labeled(400_000, 5);
    let target: f64 = field
        .log_density(exact.view(), &[1.0])
        .expect("log q")
        .iter()
        .sum::<f64>()
        / exact.nrows() as f64;
    for g in [0.5, 1.0] {
        let sde = Stochastic::new(schedule.clone(), g).expect("sde");
        let sampler = Sampler::new(field.clone(), euler.clone()).with_sde(sde);
        let samples = sampler.sample(N, 17).expect("sde sampling");
        assert_eq!(samples.stats.nfe, 200);
        let x = as_2d(&samples.x);
        let first = x.slice(ndarray::s![..8192, ..]);
        let lp = field.log_density(first, &[1.0]).expect("log q");
        let mean = lp.iter().sum::<f64>() / lp.len() as f64;
        eprintln!("G = {g}: mean log q {mean:.4}, target {target:.4}");
        assert!(
            (mean - target).abs() < 0.05,
            "G = {g}: mean log q {mean} vs {target}"
        );
        check_samples_reproduce_mixture(&field, &samples.x, &format!("sde G = {g}"));
        // Different noise than the ODE: the SDE really is stochastic.
        let ode = Sampler::new(field.clone(), euler.clone())
            .sample(4, 17)
            .unwrap();
        assert_ne!(
            ode.x.view(),
            samples.x.slice(ndarray::s![..4, ..]).into_dyn()
        );
    }
    let zero = Stochastic::new(schedule.clone(), 0.0).expect("sde");
    let a = Sampler::new(field.clone(), euler.clone())
        .with_sde(zero)
        .sample(500, 3)
        .unwrap();
    let b = Sampler::new(field.clone(), euler.clone())
        .sample(500, 3)
        .unwrap();
    assert_eq!(
        a.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

/// SDE samples shard like ODE samples, and bad configurations are errors.
#[test]
fn sde_shards_and_errors() {
    let schedule: Arc<dyn Schedule> = Arc::new(Ot);
    let field = Arc::new(ring8(schedule.clone()));
    let sde = Stochastic::new(schedule.clone(), 1.0).unwrap();
    let sampler = Sampler::new(field.clone(), fixed(Method::Euler, 30)).with_sde(sde.clone());
    let whole = sampler.sample(9, 2).unwrap();
    let a = sampler.sample_rows(0, 4, 2, &[]).unwrap();
    let b = sampler.sample_rows(4, 5, 2, &[]).unwrap();
    let joined: Vec<f32> = a.x.iter().chain(b.x.iter()).copied().collect();
    assert_eq!(joined, whole.x.iter().copied().collect::<Vec<_>>());
    for bad in [fixed(Method::Heun, 30), dopri5(1e-5)] {
        let err = Sampler::new(field.clone(), bad)
            .with_sde(sde.clone())
            .sample(2, 0)
            .unwrap_err();
        assert!(err.to_string().contains("Euler–Maruyama"), "{err}");
    }
    assert!(sampler.sample_at(2, 0, &[0.5]).is_err());
    // integrate and sample_from_noise run the ODE: a stochastic sampler
    // refuses them instead of silently dropping its noise (G = 0 is the ODE).
    let x0 = sampler.draw_noise(2, 0).unwrap();
    for refused in [
        sampler.integrate(x0.view(), &TimeSpan::Full, &[]),
        sampler.sample_from_noise(x0.view(), &[]),
    ] {
        let err = refused.unwrap_err();
        assert_eq!(err.kind(), fmrt::error::ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("stochastic"), "{err}");
    }
    let ode_like = Sampler::new(field.clone(), fixed(Method::Euler, 30))
        .with_sde(Stochastic::new(schedule.clone(), 0.0).unwrap());
    assert!(ode_like.integrate(x0.view(), &TimeSpan::Full, &[]).is_ok());
    assert!(Stochastic::new(schedule.clone(), -1.0).is_err());
    assert!(Stochastic::new(schedule, f64::NAN).is_err());
    // The endpoints are finite: at t = 0 the drift is u − G x, at t = 1 it is u.
    let c0 = Stochastic::new(Arc::new(Ot), 2.0)
        .unwrap()
        .coefficients(0.0)
        .unwrap();
    assert_eq!((c0.u_factor, c0.x_factor), (1.0, 2.0));
    let c1 = Stochastic::new(Arc::new(Ot), 2.0)
        .unwrap()
        .coefficients(1.0)
        .unwrap();
    assert_eq!((c1.u_factor, c1.x_factor, c1.diffusion), (1.0, 0.0, 0.0));
}

/// `sample_chunks` hands over chunks that concatenate to the one-batch run,
/// bit for bit (fixed steps and independent adaptive steps), with extras of
/// one row per sample split along with the chunks.
#[test]
fn chunks_concatenate_to_one_batch() {
    use fmrt::field::{ExtraTensor, Extras};
    let field = Arc::new(ring8(Arc::new(Ot)));
    for solver in [fixed(Method::Rk4, 10), dopri5(1e-5)] {
        let sampler = Sampler::new(field.clone(), solver);
        let whole = sampler.sample_rows(7, 50, 2, &[0.5]).unwrap();
        let mut x = Vec::new();
        let mut trajectory = Vec::new();
        let mut offsets = Vec::new();
        let stats = sampler
            .sample_chunks(7, 50, 2, &[0.5], 16, |offset, chunk| -> fmrt::Result<()> {
                offsets.push(offset);
                x.extend(chunk.x.iter().copied());
                trajectory.extend(chunk.trajectory.iter().copied());
                Ok(())
            })
            .unwrap();
        assert_eq!(offsets, [0, 16, 32, 48]);
        assert_eq!(x, whole.x.iter().copied().collect::<Vec<_>>());
        assert_eq!(
            trajectory,
            whole.trajectory.iter().copied().collect::<Vec<_>>()
        );
        assert!(stats.nfe >= whole.stats.nfe);
    }
    // Extras of one row per sample follow their chunk; a sink's error stops the run.
    let labelled = Sampler::new(field, fixed(Method::Euler, 2))
        .with_extras(Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2, 3, 4])));
    let err = labelled
        .sample_chunks(0, 5, 0, &[], 2, |_, _| -> fmrt::Result<()> { Ok(()) })
        .unwrap_err();
    assert!(
        matches!(err, Error::Extra { .. }),
        "the ring takes no label: {err:?}"
    );
    let extras = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2, 3, 4]));
    let part = extras.for_rows(5, 2..4).unwrap();
    assert_eq!(part.get("label"), Some(&ExtraTensor::labels(&[2, 3])));
    assert!(matches!(extras.for_rows(6, 0..2), Err(Error::Shape { .. })));
}
