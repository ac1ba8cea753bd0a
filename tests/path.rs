//! Affine path, prediction conversions and the training loss.

use std::sync::Arc;

use fmrt::path::{flow_matching_loss, AffinePath, Prediction};
use fmrt::random::SeededRng;
use fmrt::scheduler::{Coefficients, Schedule};
use fmrt::Error;
use ndarray::{ArrayD, IxDyn};

/// Test schedules defined by formula (the `.fm`-backed ones live elsewhere).
pub mod schedules {
    use super::*;
    use std::f64::consts::FRAC_PI_2;

    /// CondOT: α = t, σ = 1 − t.
    #[derive(Debug)]
    pub struct Ot;
    impl Schedule for Ot {
        fn coefficients(&self, t: f64) -> Coefficients {
            Coefficients {
                alpha: t,
                sigma: 1.0 - t,
                d_alpha: 1.0,
                d_sigma: -1.0,
            }
        }
    }

    /// Variance-preserving cosine: α = sin(πt/2), σ = cos(πt/2).
    #[derive(Debug)]
    pub struct Cosine;
    impl Schedule for Cosine {
        fn coefficients(&self, t: f64) -> Coefficients {
            let (s, c) = (FRAC_PI_2 * t).sin_cos();
            Coefficients {
                alpha: s,
                sigma: c,
                d_alpha: FRAC_PI_2 * c,
                d_sigma: -FRAC_PI_2 * s,
            }
        }
    }

    /// Linear VP: α = t, σ = √(1 − t²) (σ' is infinite at t = 1).
    #[derive(Debug)]
    pub struct LinearVp;
    impl Schedule for LinearVp {
        fn coefficients(&self, t: f64) -> Coefficients {
            let s = (1.0 - t * t).sqrt();
            Coefficients {
                alpha: t,
                sigma: s,
                d_alpha: 1.0,
                d_sigma: -t / s,
            }
        }
    }

    /// Polynomial n = 2: α = t², σ = 1 − t² (α'σ − ασ' = 2t vanishes at t = 0).
    #[derive(Debug)]
    pub struct Poly2;
    impl Schedule for Poly2 {
        fn coefficients(&self, t: f64) -> Coefficients {
            Coefficients {
                alpha: t * t,
                sigma: 1.0 - t * t,
                d_alpha: 2.0 * t,
                d_sigma: -2.0 * t,
            }
        }
    }

    /// All test schedules with names, for loops.
    pub fn all() -> Vec<(&'static str, Arc<dyn Schedule>)> {
        vec![
            ("ot", Arc::new(Ot)),
            ("cosine", Arc::new(Cosine)),
            ("linear_vp", Arc::new(LinearVp)),
            ("poly2", Arc::new(Poly2)),
        ]
    }
}

use schedules::{Cosine, LinearVp, Ot, Poly2};

fn normal_array(shape: &[usize], rng: &mut SeededRng) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.normal() as f32)
}

fn times(n: usize, lo: f64, hi: f64, rng: &mut SeededRng) -> Vec<f64> {
    (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

/// Runs one conversion into a fresh array.
fn convert(
    path: &AffinePath,
    from: Prediction,
    to: Prediction,
    m: &ArrayD<f32>,
    x_t: &ArrayD<f32>,
    t: &[f64],
) -> fmrt::Result<ArrayD<f32>> {
    let mut out = ArrayD::zeros(x_t.raw_dim());
    path.convert(from, to, m.view(), x_t.view(), t, out.view_mut())?;
    Ok(out)
}

#[test]
fn prediction_names_parse_and_print() {
    for p in Prediction::ALL {
        assert_eq!(p.name().parse::<Prediction>().unwrap(), p);
        assert_eq!(p.to_string(), p.name());
    }
    assert_eq!(Prediction::Velocity.name(), "velocity");
    assert_eq!(Prediction::X1.name(), "x1");
    assert_eq!(Prediction::X0.name(), "x0");
    assert_eq!(" Epsilon ".parse::<Prediction>().unwrap(), Prediction::X0);
    assert_eq!("data".parse::<Prediction>().unwrap(), Prediction::X1);
    let err = "score".parse::<Prediction>().unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("score")));
}

#[test]
fn point_and_velocity_follow_the_definition_per_sample() {
    let mut rng = SeededRng::new(1);
    let shape = [5, 2, 3];
    let x1 = normal_array(&shape, &mut rng);
    let x0 = normal_array(&shape, &mut rng);
    let t = times(5, 0.0, 1.0, &mut rng);
    for (name, schedule) in schedules::all() {
        let path = AffinePath::new(schedule.clone());
        let batch = path.training_batch(x1.view(), x0.view(), &t).unwrap();
        for ((idx, &a), &b) in x1.indexed_iter().zip(x0.iter()) {
            let c = schedule.coefficients(t[idx[0]]);
            let want_x = c.alpha * f64::from(a) + c.sigma * f64::from(b);
            let want_v = c.d_alpha * f64::from(a) + c.d_sigma * f64::from(b);
            assert!(
                (f64::from(batch.x_t[&idx]) - want_x).abs() <= 1e-6 * (1.0 + want_x.abs()),
                "{name}"
            );
            assert!(
                (f64::from(batch.target[&idx]) - want_v).abs() <= 1e-6 * (1.0 + want_v.abs()),
                "{name}"
            );
        }
    }
}

#[test]
fn a_single_time_applies_to_every_sample() {
    let mut rng = SeededRng::new(2);
    let x1 = normal_array(&[4, 3], &mut rng);
    let x0 = normal_array(&[4, 3], &mut rng);
    let path = AffinePath::new(Arc::new(Cosine));
    let one = path.training_batch(x1.view(), x0.view(), &[0.3]).unwrap();
    let many = path
        .training_batch(x1.view(), x0.view(), &[0.3; 4])
        .unwrap();
    assert_eq!(one, many);
    // And the times really matter.
    let other = path.training_batch(x1.view(), x0.view(), &[0.6]).unwrap();
    assert!(max_abs_diff(&one.x_t, &other.x_t) > 1e-3);
}

#[test]
fn conversions_round_trip_for_every_pair_and_schedule() {
    let mut rng = SeededRng::new(3);
    let shape = [64, 4];
    let x_t = normal_array(&shape, &mut rng);
    let m = normal_array(&shape, &mut rng);
    let t = times(64, 0.1, 0.9, &mut rng);
    for (name, schedule) in schedules::all() {
        let path = AffinePath::new(schedule);
        for from in Prediction::ALL {
            for to in Prediction::ALL {
                let there = convert(&path, from, to, &m, &x_t, &t).unwrap();
                let back = convert(&path, to, from, &there, &x_t, &t).unwrap();
                let err = max_abs_diff(&back, &m);
                assert!(err < 1e-4, "{name}: {from} -> {to} -> {from}: error {err}");
            }
        }
    }
}

#[test]
fn conversions_agree_with_the_definitions_on_the_path() {
    let mut rng = SeededRng::new(4);
    let shape = [32, 2, 2];
    let x1 = normal_array(&shape, &mut rng);
    let x0 = normal_array(&shape, &mut rng);
    let t = times(32, 0.05, 0.95, &mut rng);
    for (name, schedule) in schedules::all() {
        let path = AffinePath::new(schedule);
        let b = path.training_batch(x1.view(), x0.view(), &t).unwrap();
        let truth = |p: Prediction| match p {
            Prediction::Velocity => &b.target,
            Prediction::X1 => &x1,
            Prediction::X0 => &x0,
        };
        for from in Prediction::ALL {
            for to in Prediction::ALL {
                let got = convert(&path, from, to, truth(from), &b.x_t, &t).unwrap();
                let err = max_abs_diff(&got, truth(to));
                assert!(err < 2e-4, "{name}: {from} -> {to}: error {err}");
            }
        }
    }
}

#[test]
fn x1_and_x0_predictions_use_the_documented_formulas() {
    let mut rng = SeededRng::new(5);
    let x_t = normal_array(&[8, 3], &mut rng);
    let m = normal_array(&[8, 3], &mut rng);
    let t = times(8, 0.1, 0.9, &mut rng);
    let schedule = Arc::new(Cosine);
    let path = AffinePath::new(schedule.clone());
    let mut u1 = ArrayD::zeros(x_t.raw_dim());
    let mut u0 = ArrayD::zeros(x_t.raw_dim());
    path.to_velocity(Prediction::X1, m.view(), x_t.view(), &t, u1.view_mut())
        .unwrap();
    path.to_velocity(Prediction::X0, m.view(), x_t.view(), &t, u0.view_mut())
        .unwrap();
    for (idx, &x) in x_t.indexed_iter() {
        let c = schedule.coefficients(t[idx[0]]);
        let (x, mv) = (f64::from(x), f64::from(m[&idx]));
        let want1 = (c.d_sigma / c.sigma) * x + (c.d_alpha - c.alpha * c.d_sigma / c.sigma) * mv;
        let want0 = (c.d_alpha / c.alpha) * x + (c.d_sigma - c.sigma * c.d_alpha / c.alpha) * mv;
        assert!((f64::from(u1[&idx]) - want1).abs() < 1e-5 * (1.0 + want1.abs()));
        assert!((f64::from(u0[&idx]) - want0).abs() < 1e-5 * (1.0 + want0.abs()));
    }
    // from_velocity is the inverse of to_velocity.
    let mut back = ArrayD::zeros(x_t.raw_dim());
    path.from_velocity(Prediction::X1, u1.view(), x_t.view(), &t, back.view_mut())
        .unwrap();
    assert!(max_abs_diff(&back, &m) < 1e-4);
}

#[test]
fn singular_conversions_are_reported_with_their_time() {
    let ot = AffinePath::new(Arc::new(Ot));
    let x = ArrayD::<f32>::ones(IxDyn(&[2, 3]));
    let expect_singular = |path: &AffinePath, from, to, t: &[f64], needle: &str| {
        let err = convert(path, from, to, &x, &x, t).unwrap_err();
        match err {
            Error::Singular { reason } => {
                assert!(reason.contains(needle), "{reason} should mention {needle}")
            }
            other => panic!("expected Singular, got {other:?}"),
        }
    };
    // σ(1) = 0: an x1 prediction carries no information about the velocity.
    expect_singular(
        &ot,
        Prediction::X1,
        Prediction::Velocity,
        &[0.5, 1.0],
        "t = 1",
    );
    expect_singular(&ot, Prediction::X1, Prediction::X0, &[1.0], "sigma(t) = 0");
    // α(0) = 0 for x0 predictions.
    expect_singular(&ot, Prediction::X0, Prediction::Velocity, &[0.0], "t = 0");
    expect_singular(&ot, Prediction::X0, Prediction::X1, &[0.0], "alpha(t) = 0");
    // cos(π/2) ≈ 6e-17 counts as zero, not as a huge finite factor.
    let cosine = AffinePath::new(Arc::new(Cosine));
    expect_singular(
        &cosine,
        Prediction::X1,
        Prediction::Velocity,
        &[1.0],
        "t = 1",
    );
    // poly(2): the velocity at t = 0 is zero whatever the endpoints are.
    let poly = AffinePath::new(Arc::new(Poly2));
    expect_singular(&poly, Prediction::Velocity, Prediction::X1, &[0.0], "t = 0");
    // The regular directions at the endpoints work: velocity -> x1 at t = 1 is x_t.
    let x1 = convert(
        &ot,
        Prediction::Velocity,
        Prediction::X1,
        &x,
        &x.mapv(|v| 2.0 * v),
        &[1.0],
    )
    .unwrap();
    assert!(x1.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    let same = convert(&ot, Prediction::X1, Prediction::X1, &x, &x, &[1.0]).unwrap();
    assert_eq!(same, x);
}

#[test]
fn infinite_schedule_coefficients_are_reported() {
    let path = AffinePath::new(Arc::new(LinearVp));
    let x = ArrayD::<f32>::ones(IxDyn(&[1, 2]));
    let mut out = ArrayD::zeros(IxDyn(&[1, 2]));
    // x_t itself is fine at t = 1 ...
    path.point_into(x.view(), x.view(), &[1.0], out.view_mut())
        .unwrap();
    assert_eq!(out, x);
    // ... but σ'(1) = −∞.
    let err = path
        .velocity_into(x.view(), x.view(), &[1.0], out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Singular { reason } if reason.contains("d_sigma") && reason.contains("(1)"))
    );
}

#[test]
fn loss_is_zero_for_the_exact_target_and_the_mean_square_otherwise() {
    let mut rng = SeededRng::new(6);
    let x1 = normal_array(&[16, 3], &mut rng);
    let x0 = normal_array(&[16, 3], &mut rng);
    let t = times(16, 0.0, 1.0, &mut rng);
    let path = AffinePath::new(Arc::new(Ot));
    let b = path.training_batch(x1.view(), x0.view(), &t).unwrap();
    assert_eq!(
        flow_matching_loss(b.target.view(), b.target.view()).unwrap(),
        0.0
    );
    assert!(
        path.loss(b.target.view(), x1.view(), x0.view(), &t)
            .unwrap()
            < 1e-12
    );
    let off = b.target.mapv(|v| v + 0.5);
    let l = flow_matching_loss(off.view(), b.target.view()).unwrap();
    assert!((l - 0.25).abs() < 1e-6, "{l}");
    let l2 = path.loss(off.view(), x1.view(), x0.view(), &t).unwrap();
    assert!((l2 - 0.25).abs() < 1e-5, "{l2}");
}

#[test]
fn shape_errors_name_the_tensor() {
    let path = AffinePath::new(Arc::new(Ot));
    let a = ArrayD::<f32>::zeros(IxDyn(&[3, 2]));
    let b = ArrayD::<f32>::zeros(IxDyn(&[3, 4]));
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[3, 2]));
    let tensor_of = |e: Error| match e {
        Error::Shape { tensor, .. } => tensor,
        other => panic!("expected a shape error, got {other:?}"),
    };
    let e = path
        .point_into(a.view(), b.view(), &[0.5], out.view_mut())
        .unwrap_err();
    assert_eq!(tensor_of(e), "x0");
    let e = path
        .velocity_into(a.view(), a.view(), &[0.5, 0.5], out.view_mut())
        .unwrap_err();
    assert_eq!(tensor_of(e), "t");
    let mut wrong = ArrayD::<f32>::zeros(IxDyn(&[2, 2]));
    let e = path
        .point_into(a.view(), a.view(), &[0.5], wrong.view_mut())
        .unwrap_err();
    assert_eq!(tensor_of(e), "x_t");
    let e = path
        .convert(
            Prediction::X1,
            Prediction::Velocity,
            b.view(),
            a.view(),
            &[0.5],
            out.view_mut(),
        )
        .unwrap_err();
    assert_eq!(tensor_of(e), "m");
    let e = flow_matching_loss(a.view(), b.view()).unwrap_err();
    assert_eq!(tensor_of(e), "u");
    let scalar = ArrayD::<f32>::zeros(IxDyn(&[]));
    let e = path
        .training_batch(scalar.view(), scalar.view(), &[0.5])
        .unwrap_err();
    assert_eq!(tensor_of(e), "x1");
    let e = path
        .point_into(a.view(), a.view(), &[f64::NAN], out.view_mut())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
}
