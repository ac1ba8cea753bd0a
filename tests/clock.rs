//! A network on its own clock ([`Clock`]): a velocity network trained the
//! diffusers way (time σ = 1 − t, fed K·σ, returning dx/dσ) must, once read
//! through `Clock`, be the mixture's own field in fmrt's time — its velocity,
//! JVPs, divergence, samples and exact log-density. Also: explicit time
//! lists that start after t = 0, and the noise scale.

use std::sync::Arc;

use fmrt::field::adapt::{Clock, TimeDirection};
use fmrt::field::analytic::GaussianMixture;
use fmrt::field::VelocityField;
use fmrt::grid::explicit_steps;
use fmrt::likelihood::Likelihood;
use fmrt::path::Prediction;
use fmrt::random::SeededRng;
use fmrt::sampler::{Sampler, TimeSpan};
use fmrt::scheduler::Scheduler;
use fmrt::solver::{Method, SolverConfig, Steps};
use fmrt::source::{Source, StandardNormal};
use fmrt::Error;
use ndarray::{Array2, ArrayD, ArrayViewD, ArrayViewMutD};

fn ring() -> Arc<GaussianMixture> {
    let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
    Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap())
}

fn points(n: usize, seed: u64) -> ArrayD<f32> {
    let mut rng = SeededRng::new(seed);
    Array2::from_shape_simple_fn((n, 2), || (2.5 * rng.normal()) as f32).into_dyn()
}

/// The ring mixture as a diffusers-style network: fed τ = K·σ with
/// σ = 1 − t, it returns dx/dσ = −u(x, t).
struct SigmaClockNet {
    mixture: Arc<GaussianMixture>,
    scale: f64,
}

impl SigmaClockNet {
    fn fmrt_times(&self, tau: &[f64]) -> Vec<f64> {
        tau.iter().map(|&tau| 1.0 - tau / self.scale).collect()
    }
}

impl VelocityField for SigmaClockNet {
    fn state_shape(&self) -> Option<&[usize]> {
        self.mixture.state_shape()
    }

    fn derivatives(&self) -> fmrt::field::Derivatives {
        fmrt::field::Derivatives {
            jvp: true,
            stacked_jvp: false,
            divergence: true,
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        tau: &[f64],
        extras: &fmrt::field::Extras,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        self.mixture.velocity(
            x,
            &self.fmrt_times(tau),
            fmrt::field::Extras::none(),
            out.view_mut(),
        )?;
        out.mapv_inplace(|v| -v);
        Ok(())
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        tau: &[f64],
        extras: &fmrt::field::Extras,
        v: ArrayViewD<'_, f32>,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        self.mixture.jvp(
            x,
            &self.fmrt_times(tau),
            fmrt::field::Extras::none(),
            v,
            out.view_mut(),
        )?;
        out.mapv_inplace(|v| -v);
        Ok(())
    }

    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        tau: &[f64],
        extras: &fmrt::field::Extras,
        out: &mut [f64],
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        self.mixture
            .divergence(x, &self.fmrt_times(tau), fmrt::field::Extras::none(), out)?;
        out.iter_mut().for_each(|d| *d = -*d);
        Ok(())
    }
}

fn reversed(scale: f64) -> (Arc<GaussianMixture>, Clock) {
    let mixture = ring();
    let net = Arc::new(SigmaClockNet {
        mixture: mixture.clone(),
        scale,
    });
    let clock = Clock::new(net, TimeDirection::Reversed, scale, Prediction::Velocity).unwrap();
    (mixture, clock)
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    (a - b).iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[test]
fn a_reversed_scaled_network_is_the_field_in_fmrt_time() {
    let (mixture, clock) = reversed(1000.0);
    let x = points(32, 1);
    let t: Vec<f64> = (0..32).map(|i| i as f64 / 31.0).collect();
    let v = points(32, 2);
    let mut want = ArrayD::zeros(x.raw_dim());
    let mut got = ArrayD::zeros(x.raw_dim());
    mixture
        .velocity(x.view(), &t, fmrt::field::Extras::none(), want.view_mut())
        .unwrap();
    clock
        .velocity(x.view(), &t, fmrt::field::Extras::none(), got.view_mut())
        .unwrap();
    // The time goes through 1000·(1 − t) and back: rounding only.
    assert!(
        max_diff(&want, &got) < 1e-4,
        "velocity off by {}",
        max_diff(&want, &got)
    );
    mixture
        .jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            want.view_mut(),
        )
        .unwrap();
    clock
        .jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            got.view_mut(),
        )
        .unwrap();
    assert!(
        max_diff(&want, &got) < 1e-4,
        "JVP off by {}",
        max_diff(&want, &got)
    );
    let (mut dw, mut dg) = (vec![0.0; 32], vec![0.0; 32]);
    mixture
        .divergence(x.view(), &t, fmrt::field::Extras::none(), &mut dw)
        .unwrap();
    clock
        .divergence(x.view(), &t, fmrt::field::Extras::none(), &mut dg)
        .unwrap();
    let worst = dw
        .iter()
        .zip(&dg)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst < 1e-6 * 1000.0, "divergence off by {worst}");
    assert!(clock.derivatives().jvp && clock.derivatives().divergence);
}

#[test]
fn a_reversed_network_samples_and_scores_like_the_mixture() {
    let (mixture, clock) = reversed(1.0);
    let solver = SolverConfig::adaptive(Method::Dopri5, 1e-7, 1e-7);
    let x0 = points(64, 3);
    let direct = Sampler::new(mixture.clone(), solver.clone())
        .integrate(x0.view(), &TimeSpan::Full, &[])
        .unwrap();
    let clocked = Sampler::new(Arc::new(clock), solver.clone())
        .integrate(x0.view(), &TimeSpan::Full, &[])
        .unwrap();
    assert!(max_diff(&direct.x, &clocked.x) < 1e-4);
    let (_, clock) = reversed(1.0);
    let data = direct.x;
    let scored = Likelihood::new(Arc::new(clock), solver)
        .log_likelihood(data.view())
        .unwrap();
    let exact = mixture
        .log_density(
            data.view().into_dimensionality::<ndarray::Ix2>().unwrap(),
            &[1.0],
        )
        .unwrap();
    let worst = exact
        .iter()
        .zip(&scored.log_p)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst < 1e-3, "log p off the exact density by {worst}");
}

#[test]
fn a_point_predicting_network_keeps_its_sign() {
    // An x1 network on a reversed clock returns a point: only its time moves.
    let mixture = ring();
    let clock = Clock::new(
        mixture.clone(),
        TimeDirection::Reversed,
        1.0,
        Prediction::X1,
    )
    .unwrap();
    let x = points(4, 5);
    let (mut a, mut b) = (ArrayD::zeros(x.raw_dim()), ArrayD::zeros(x.raw_dim()));
    clock
        .velocity(x.view(), &[0.25], fmrt::field::Extras::none(), a.view_mut())
        .unwrap();
    mixture
        .velocity(x.view(), &[0.75], fmrt::field::Extras::none(), b.view_mut())
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_clock_settings_are_refused_by_name() {
    for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = Clock::new(ring(), TimeDirection::Reversed, k, Prediction::Velocity)
            .err()
            .expect("refused");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    assert!(matches!(
        "backwards".parse::<TimeDirection>(),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        "reversed".parse::<TimeDirection>().unwrap(),
        TimeDirection::Reversed
    );
}

#[test]
fn a_time_list_may_start_after_zero() {
    let mixture = ring();
    let times = vec![0.2, 0.35, 0.5, 0.8, 1.0];
    let steps = explicit_steps(&times).unwrap();
    let sampler = Sampler::new(mixture.clone(), SolverConfig::fixed(Method::Euler, steps));
    let x0 = points(16, 7);
    let got = sampler.integrate(x0.view(), &TimeSpan::Full, &[]).unwrap();
    // By hand: Euler from t = 0.2 on the listed times.
    let mut x = x0.clone();
    let mut v = ArrayD::zeros(x.raw_dim());
    for w in times.windows(2) {
        mixture
            .velocity(x.view(), &[w[0]], fmrt::field::Extras::none(), v.view_mut())
            .unwrap();
        x = &x + &(&v * (w[1] - w[0]) as f32);
    }
    assert!(
        max_diff(&got.x, &x) < 1e-5,
        "off by {}",
        max_diff(&got.x, &x)
    );
    assert_eq!(got.stats.nfe, 4);
    for bad in [
        vec![0.5],
        vec![0.0, 0.5],
        vec![0.0, 0.6, 0.6, 1.0],
        vec![-0.1, 1.0],
        vec![0.0, f64::NAN, 1.0],
    ] {
        assert!(
            matches!(explicit_steps(&bad), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn the_noise_scale_scales_draws_and_the_source_density() {
    let mixture = ring();
    let plain = Sampler::new(
        mixture.clone(),
        SolverConfig::fixed(Method::Euler, Steps::Count(1)),
    );
    let scaled = plain.clone().with_noise_scale(0.667).unwrap();
    let z = plain.draw_noise(8, 11).unwrap();
    let x0 = scaled.draw_noise(8, 11).unwrap();
    assert_eq!(x0, z.mapv(|v| v * 0.667f32));
    let source = StandardNormal::new().scaled(0.5).unwrap();
    let x = points(3, 2);
    let got = source.log_density(x.view()).unwrap();
    for (row, lp) in x.outer_iter().zip(got) {
        let want: f64 = row
            .iter()
            .map(|&v| {
                let v = f64::from(v);
                -0.5 * (v / 0.5).powi(2) - 0.5f64.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum();
        assert!((lp - want).abs() < 1e-12);
    }
    assert!(plain.clone().with_noise_scale(0.0).is_err());
    assert!(plain.with_noise_scale(f64::NAN).is_err());
}
