//! The Gaussian-mixture oracle field: its velocity, divergence, JVP and
//! log-density are checked against each other and against finite differences.

use std::sync::Arc;

use fmrt::field::analytic::{GaussianMixture, MAX_RING_COMPONENTS};
use fmrt::field::VelocityField;
use fmrt::random::SeededRng;
use fmrt::scheduler::Schedule;
use fmrt::source::{Source, StandardNormal, LN_2PI};
use fmrt::Error;
use ndarray::{arr2, Array1, Array2, ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

use crate::path::schedules::{self, Cosine, LinearVp, Ot};

/// A 3-component mixture in 3-D with unequal weights and spreads.
fn mixture3(schedule: Arc<dyn Schedule>) -> GaussianMixture {
    let means = arr2(&[[1.5, -0.5, 0.0], [-1.0, 1.0, 2.0], [0.0, -2.0, -1.0]]);
    GaussianMixture::new(&[2.0, 1.0, 3.0], means.view(), &[0.3, 0.7, 0.5], schedule).unwrap()
}

/// Points spread around the mixture (and a little beyond).
fn points(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = SeededRng::new(seed);
    Array2::from_shape_simple_fn((n, d), || 1.5 * rng.normal())
}

fn row(x: &Array2<f64>, i: usize) -> Array2<f64> {
    x.row(i).to_owned().insert_axis(ndarray::Axis(0))
}

/// Central finite-difference gradient of f at x (one sample).
fn fd_grad(f: impl Fn(&Array2<f64>) -> f64, x: &Array2<f64>, h: f64) -> Array1<f64> {
    Array1::from_shape_fn(x.ncols(), |j| {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[[0, j]] += h;
        xm[[0, j]] -= h;
        (f(&xp) - f(&xm)) / (2.0 * h)
    })
}

#[test]
fn velocity_divergence_and_density_satisfy_the_continuity_equation() {
    // ∂_t log p_t + div u + u·∇ log p_t = 0, with the time and space derivatives of
    // log p_t by central differences and div u, u from the closed forms.
    let x = points(20, 3, 1);
    let mut rng = SeededRng::new(2);
    let mut worst = 0.0f64;
    for (name, schedule) in schedules::all() {
        let g = mixture3(schedule);
        for i in 0..x.nrows() {
            let xi = row(&x, i);
            let t = 0.05 + 0.9 * rng.uniform();
            let h = 1e-5;
            let lp = |y: &Array2<f64>, s: f64| g.log_density(y.view(), &[s]).unwrap()[0];
            let dt = (lp(&xi, t + h) - lp(&xi, t - h)) / (2.0 * h);
            let grad = fd_grad(|y| lp(y, t), &xi, 1e-5);
            let u = g.velocity_f64(xi.view(), &[t]).unwrap();
            let div = g.divergence_f64(xi.view(), &[t]).unwrap()[0];
            let transport: f64 = u.row(0).dot(&grad);
            let residual = dt + div + transport;
            let scale = 1.0 + dt.abs() + div.abs() + transport.abs();
            worst = worst.max(residual.abs() / scale);
            assert!(
                residual.abs() < 1e-6 * scale,
                "{name}: t = {t}, residual {residual} (dt {dt}, div {div}, u·∇ {transport})"
            );
        }
    }
    println!("continuity: worst relative residual {worst:e}");
}

#[test]
fn the_continuity_check_detects_a_wrong_velocity() {
    // The same check fails for a velocity off by 1%: it has power.
    let g = mixture3(Arc::new(Ot));
    let xi = row(&points(1, 3, 3), 0);
    let t = 0.4;
    let h = 1e-5;
    let lp = |y: &Array2<f64>, s: f64| g.log_density(y.view(), &[s]).unwrap()[0];
    let dt = (lp(&xi, t + h) - lp(&xi, t - h)) / (2.0 * h);
    let grad = fd_grad(|y| lp(y, t), &xi, 1e-5);
    let u = g.velocity_f64(xi.view(), &[t]).unwrap() * 1.01;
    let div = 1.01 * g.divergence_f64(xi.view(), &[t]).unwrap()[0];
    let residual = dt + div + u.row(0).dot(&grad);
    assert!(residual.abs() > 1e-4, "residual {residual}");
}

#[test]
fn score_is_the_gradient_of_the_log_density() {
    let g = mixture3(Arc::new(Cosine));
    let x = points(10, 3, 4);
    let t = [0.7];
    let score = g.score(x.view(), &t).unwrap();
    for i in 0..x.nrows() {
        let fd = fd_grad(
            |y| g.log_density(y.view(), &t).unwrap()[0],
            &row(&x, i),
            1e-5,
        );
        for j in 0..3 {
            assert!((score[[i, j]] - fd[j]).abs() < 1e-6 * (1.0 + fd[j].abs()));
        }
    }
}

#[test]
fn divergence_is_the_trace_of_the_finite_difference_jacobian() {
    let x = points(15, 3, 5);
    let mut rng = SeededRng::new(6);
    for (name, schedule) in schedules::all() {
        let g = mixture3(schedule);
        let t: Vec<f64> = (0..x.nrows()).map(|_| 0.05 + 0.9 * rng.uniform()).collect();
        let div = g.divergence_f64(x.view(), &t).unwrap();
        for i in 0..x.nrows() {
            let h = 1e-5;
            let mut trace = 0.0;
            for j in 0..3 {
                let (mut xp, mut xm) = (row(&x, i), row(&x, i));
                xp[[0, j]] += h;
                xm[[0, j]] -= h;
                let up = g.velocity_f64(xp.view(), &[t[i]]).unwrap();
                let um = g.velocity_f64(xm.view(), &[t[i]]).unwrap();
                trace += (up[[0, j]] - um[[0, j]]) / (2.0 * h);
            }
            assert!(
                (div[i] - trace).abs() < 1e-6 * (1.0 + trace.abs()),
                "{name}: div {} vs trace {trace}",
                div[i]
            );
        }
    }
}

#[test]
fn jvp_matches_finite_differences_and_the_trait_version() {
    let x = points(12, 3, 7);
    let v = points(12, 3, 8);
    for (name, schedule) in schedules::all() {
        let g = mixture3(schedule);
        let t = [0.35];
        let jv = g.jvp_f64(x.view(), &t, v.view()).unwrap();
        let h = 1e-5;
        let up = g.velocity_f64((&x + &(&v * h)).view(), &t).unwrap();
        let um = g.velocity_f64((&x - &(&v * h)).view(), &t).unwrap();
        let fd = (up - um) / (2.0 * h);
        for (a, b) in jv.iter().zip(fd.iter()) {
            assert!(
                (a - b).abs() < 1e-6 * (1.0 + b.abs()),
                "{name}: jvp {a} vs fd {b}"
            );
        }
        // The f32 trait method gives the same numbers to f32 precision.
        let x32 = x.mapv(|a| a as f32).into_dyn();
        let v32 = v.mapv(|a| a as f32).into_dyn();
        let mut out = ArrayD::<f32>::zeros(x32.raw_dim());
        assert!(g.derivatives().jvp);
        VelocityField::jvp(
            &g,
            x32.view(),
            &t,
            fmrt::field::Extras::none(),
            v32.view(),
            out.view_mut(),
        )
        .unwrap();
        let jv32 = g
            .jvp_f64(
                x32.view().into_dimensionality().unwrap(),
                &t,
                v32.view().into_dimensionality().unwrap(),
            )
            .unwrap();
        for (a, b) in out.iter().zip(jv32.iter()) {
            assert!((f64::from(*a) - b).abs() < 1e-5 * (1.0 + b.abs()));
        }
    }
}

#[test]
fn log_density_integrates_to_one_in_one_dimension() {
    let means = arr2(&[[-2.0], [0.5], [3.0]]);
    for (name, schedule) in schedules::all() {
        let g = GaussianMixture::new(&[0.2, 0.5, 0.3], means.view(), &[0.4, 0.2, 1.0], schedule)
            .unwrap();
        for t in [0.0, 0.3, 0.8, 0.999] {
            // Trapezoid rule on [−15, 15]; the integrand is smooth and the tails are
            // below 1e-20, so the error is far below the tolerance.
            let n = 60_001;
            let (lo, hi) = (-15.0, 15.0);
            let step = (hi - lo) / (n - 1) as f64;
            let grid = Array2::from_shape_fn((n, 1), |(i, _)| lo + step * i as f64);
            let lp = g.log_density(grid.view(), &[t]).unwrap();
            let mut integral = 0.0;
            for (i, l) in lp.iter().enumerate() {
                let w = if i == 0 || i == n - 1 { 0.5 } else { 1.0 };
                integral += w * l.exp() * step;
            }
            assert!(
                (integral - 1.0).abs() < 1e-7,
                "{name}, t = {t}: integral {integral}"
            );
        }
    }
}

#[test]
fn one_component_matches_the_gaussian_closed_forms() {
    let mean = arr2(&[[1.0, -2.0, 0.5, 3.0]]);
    let s = 0.6;
    let schedule: Arc<dyn Schedule> = Arc::new(Cosine);
    let g = GaussianMixture::new(&[5.0], mean.view(), &[s], schedule.clone()).unwrap();
    assert_eq!(g.weights(), &[1.0]);
    let x = points(6, 4, 9);
    let mut rng = SeededRng::new(10);
    for i in 0..x.nrows() {
        let t = 0.02 + 0.96 * rng.uniform();
        let c = schedule.coefficients(t);
        let v = c.alpha * c.alpha * s * s + c.sigma * c.sigma;
        let xi = row(&x, i);
        let r: Vec<f64> = (0..4)
            .map(|j| xi[[0, j]] - c.alpha * mean[[0, j]])
            .collect();
        let r2: f64 = r.iter().map(|a| a * a).sum();
        let want_lp = -2.0 * (LN_2PI + v.ln()) - r2 / (2.0 * v);
        let lp = g.log_density(xi.view(), &[t]).unwrap()[0];
        assert!((lp - want_lp).abs() < 1e-12 * (1.0 + want_lp.abs()));
        // The flow map of a pure Gaussian flow: x_t = α μ + √v_t z. Its time
        // derivative (by central differences) is the velocity at x_t.
        let z: Vec<f64> = r.iter().map(|a| a / v.sqrt()).collect();
        let map = |tt: f64| {
            let c = schedule.coefficients(tt);
            let vt: f64 = c.alpha * c.alpha * s * s + c.sigma * c.sigma;
            Array2::from_shape_fn((1, 4), |(_, j)| c.alpha * mean[[0, j]] + vt.sqrt() * z[j])
        };
        let h = 1e-6;
        let dmap = (map(t + h) - map(t - h)) / (2.0 * h);
        let u = g.velocity_f64(map(t).view(), &[t]).unwrap();
        for (a, b) in u.iter().zip(dmap.iter()) {
            assert!(
                (a - b).abs() < 1e-7 * (1.0 + b.abs()),
                "t = {t}: {a} vs {b}"
            );
        }
        // The divergence of a pure Gaussian flow is D·β = D·v'/(2v).
        let beta = (c.alpha * c.d_alpha * s * s + c.sigma * c.d_sigma) / v;
        let div = g.divergence_f64(xi.view(), &[t]).unwrap()[0];
        assert!((div - 4.0 * beta).abs() < 1e-10 * (1.0 + beta.abs()));
    }
}

#[test]
fn endpoints_are_the_source_and_the_data() {
    let x = points(10, 3, 11);
    let x32 = x.mapv(|a| a as f32);
    let source = StandardNormal::new()
        .log_density(x32.view().into_dyn())
        .unwrap();
    for schedule in [Arc::new(Ot) as Arc<dyn Schedule>, Arc::new(Cosine)] {
        let g = mixture3(schedule);
        let at0 = g.log_density(x32.view(), &[0.0]).unwrap();
        let at1 = g.log_density(x.view(), &[1.0]).unwrap();
        let data = g.data_log_density(x.view()).unwrap();
        for i in 0..x.nrows() {
            assert!(
                (at0[i] - source[i]).abs() < 1e-10,
                "{} vs {}",
                at0[i],
                source[i]
            );
            assert!((at1[i] - data[i]).abs() < 1e-9 * (1.0 + data[i].abs()));
        }
        // At the data end the velocity is finite too (no 0/0 with positive stds).
        let u = g.velocity_f64(x.view(), &[1.0]).unwrap();
        assert!(u.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn far_away_points_give_finite_stable_values() {
    let g = mixture3(Arc::new(Ot));
    let x = arr2(&[[1e4f32, -1e4, 3e3], [-3e7, 1e6, 5e5], [3e18, 0.0, 0.0]]);
    let t = [0.5];
    let u = g.velocity_f64(x.view(), &t).unwrap();
    let div = g.divergence_f64(x.view(), &t).unwrap();
    let lp = g.log_density(x.view(), &t).unwrap();
    assert!(
        u.iter().chain(&div).chain(&lp).all(|v| v.is_finite()),
        "{u:?} {div:?} {lp:?}"
    );
    // Far away one component dominates: the velocity is that component's linear field.
    let c = Ot.coefficients(0.5);
    let post = g.posterior(x.view(), &t).unwrap();
    for i in 0..3 {
        let k = (0..3)
            .max_by(|&a, &b| post[[i, a]].total_cmp(&post[[i, b]]))
            .unwrap();
        assert!(post[[i, k]] > 0.999_999);
        let s2 = g.stds()[k].powi(2);
        let v = c.alpha * c.alpha * s2 + c.sigma * c.sigma;
        let beta = (c.alpha * c.d_alpha * s2 + c.sigma * c.d_sigma) / v;
        for j in 0..3 {
            let m = g.means()[[k, j]];
            let want = c.d_alpha * m + beta * (f64::from(x[[i, j]]) - c.alpha * m);
            assert!((u[[i, j]] - want).abs() <= 1e-9 * want.abs().max(1.0));
        }
    }
    // The f32 trait path stays finite as well.
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[3, 3]));
    g.velocity(
        x.view().into_dyn(),
        &t,
        fmrt::field::Extras::none(),
        out.view_mut(),
    )
    .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn trait_velocity_matches_the_f64_velocity() {
    let g: Arc<dyn VelocityField> = Arc::new(mixture3(Arc::new(Cosine)));
    assert_eq!(g.state_shape(), Some(&[3][..]));
    assert!(g.derivatives().divergence);
    let x = points(8, 3, 12).mapv(|a| a as f32);
    let t: Vec<f64> = (0..8).map(|i| i as f64 / 7.0).collect();
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[8, 3]));
    g.velocity(
        x.view().into_dyn(),
        &t,
        fmrt::field::Extras::none(),
        out.view_mut(),
    )
    .unwrap();
    let direct = mixture3(Arc::new(Cosine));
    let want = direct.velocity_f64(x.view(), &t).unwrap();
    for (a, b) in out.iter().zip(want.iter()) {
        assert_eq!(*a, *b as f32);
    }
    // Per-sample times are used: a single time gives different velocities.
    let mut single = ArrayD::<f32>::zeros(IxDyn(&[8, 3]));
    g.velocity(
        x.view().into_dyn(),
        &[0.5],
        fmrt::field::Extras::none(),
        single.view_mut(),
    )
    .unwrap();
    assert_ne!(out, single);
    let mut div = vec![0.0; 8];
    g.divergence(
        x.view().into_dyn(),
        &t,
        fmrt::field::Extras::none(),
        &mut div,
    )
    .unwrap();
    assert_eq!(div, direct.divergence_f64(x.view(), &t).unwrap());
}

#[test]
fn sampling_is_reproducible_and_follows_the_mixture() {
    let g = mixture3(Arc::new(Ot));
    let n = 60_000;
    let (x, labels) = g.sample_data_labeled(n, 21);
    assert_eq!(x, g.sample_data(n, 21));
    assert_ne!(x, g.sample_data(n, 22));
    // Component frequencies match the weights (1/3, 1/6, 1/2) within 5 standard errors.
    for k in 0..3 {
        let p = g.weights()[k];
        let freq = labels.iter().filter(|&&l| l == k).count() as f64 / n as f64;
        assert!(
            (freq - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt(),
            "component {k}: {freq}"
        );
        // Per-component mean and spread.
        let rows: Vec<usize> = (0..n).filter(|&i| labels[i] == k).collect();
        let m = rows.len() as f64;
        let s = g.stds()[k];
        for j in 0..3 {
            let mean = rows.iter().map(|&i| f64::from(x[[i, j]])).sum::<f64>() / m;
            let var = rows
                .iter()
                .map(|&i| (f64::from(x[[i, j]]) - mean).powi(2))
                .sum::<f64>()
                / m;
            assert!((mean - g.means()[[k, j]]).abs() < 5.0 * s / m.sqrt());
            assert!((var / (s * s) - 1.0).abs() < 5.0 * (2.0 / m).sqrt());
        }
    }
}

#[test]
fn assignment_recovers_the_labels_of_a_well_separated_ring() {
    let g = GaussianMixture::ring(8, 4.0, 0.1, Arc::new(Ot)).unwrap();
    assert_eq!((g.num_components(), g.dim()), (8, 2));
    for k in 0..8 {
        let angle = 2.0 * std::f64::consts::PI * k as f64 / 8.0;
        assert!((g.means()[[k, 0]] - 4.0 * angle.cos()).abs() < 1e-12);
        assert!((g.means()[[k, 1]] - 4.0 * angle.sin()).abs() < 1e-12);
    }
    let (x, labels) = g.sample_data_labeled(2000, 5);
    assert_eq!(g.assign(x.view()).unwrap(), labels);
    // All labels occur.
    assert!((0..8).all(|k| labels.contains(&k)));
}

#[test]
fn invalid_parameters_are_rejected() {
    let s: Arc<dyn Schedule> = Arc::new(Ot);
    let means = arr2(&[[0.0, 0.0], [1.0, 1.0]]);
    let invalid = |r: fmrt::Result<GaussianMixture>| match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(invalid(GaussianMixture::new(
        &[1.0, 1.0],
        means.view(),
        &[-0.1, 1.0],
        s.clone()
    ))
    .contains("standard deviation 0"));
    invalid(GaussianMixture::new(
        &[1.0, 1.0],
        means.view(),
        &[0.0, 1.0],
        s.clone(),
    ));
    assert!(invalid(GaussianMixture::new(
        &[1.0, 0.0],
        means.view(),
        &[1.0, 1.0],
        s.clone()
    ))
    .contains("weight 1"));
    invalid(GaussianMixture::new(
        &[1.0, f64::NAN],
        means.view(),
        &[1.0, 1.0],
        s.clone(),
    ));
    invalid(GaussianMixture::new(
        &[f64::MAX, f64::MAX],
        means.view(),
        &[1.0, 1.0],
        s.clone(),
    ));
    let bad_means = arr2(&[[0.0, f64::INFINITY], [1.0, 1.0]]);
    invalid(GaussianMixture::new(
        &[1.0, 1.0],
        bad_means.view(),
        &[1.0, 1.0],
        s.clone(),
    ));
    invalid(GaussianMixture::new(
        &[],
        Array2::zeros((0, 2)).view(),
        &[],
        s.clone(),
    ));
    invalid(GaussianMixture::ring(0, 1.0, 0.1, s.clone()));
    invalid(GaussianMixture::ring(3, -1.0, 0.1, s.clone()));
    invalid(GaussianMixture::ring(3, 1.0, f64::NAN, s.clone()));
    // Found by the c_abi fuzz target: a ring of usize::MAX components
    // panicked in ndarray (its shape overflows); 2^32 would allocate 64 GB.
    for k in [usize::MAX, 1 << 32, MAX_RING_COMPONENTS + 1] {
        match GaussianMixture::ring(k, 1.0, 0.1, s.clone()) {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.contains(&k.to_string()) && m.contains("1048576"), "{m}")
            }
            other => panic!("ring({k}): expected an invalid argument, got {other:?}"),
        }
    }
    match GaussianMixture::new(&[1.0], means.view(), &[1.0, 1.0], s.clone()) {
        Err(Error::Shape { tensor, actual, .. }) => {
            assert_eq!((tensor.as_str(), actual), ("weights", vec![1]))
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn shape_and_time_errors_name_the_problem() {
    let g = mixture3(Arc::new(Ot));
    let tensor_of = |e: Error| match e {
        Error::Shape { tensor, .. } => tensor,
        other => panic!("expected a shape error, got {other:?}"),
    };
    let x = Array2::<f32>::zeros((4, 3));
    let wrong = Array2::<f32>::zeros((4, 2));
    assert_eq!(
        tensor_of(g.log_density(wrong.view(), &[0.5]).unwrap_err()),
        "x"
    );
    assert_eq!(
        tensor_of(g.velocity_f64(x.view(), &[0.5, 0.5]).unwrap_err()),
        "t"
    );
    assert_eq!(
        tensor_of(g.jvp_f64(x.view(), &[0.5], wrong.view()).unwrap_err()),
        "v"
    );
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[4, 2]));
    assert_eq!(
        tensor_of(
            g.velocity(
                x.view().into_dyn(),
                &[0.5],
                fmrt::field::Extras::none(),
                out.view_mut()
            )
            .unwrap_err()
        ),
        "out"
    );
    let x3 = ArrayD::<f32>::zeros(IxDyn(&[4, 3, 1]));
    let mut out3 = ArrayD::<f32>::zeros(IxDyn(&[4, 3, 1]));
    assert_eq!(
        tensor_of(
            g.velocity(
                x3.view(),
                &[0.5],
                fmrt::field::Extras::none(),
                out3.view_mut()
            )
            .unwrap_err()
        ),
        "x"
    );
    let mut div = vec![0.0; 3];
    assert_eq!(
        tensor_of(
            VelocityField::divergence(
                &g,
                x.view().into_dyn(),
                &[0.5],
                fmrt::field::Extras::none(),
                &mut div
            )
            .unwrap_err()
        ),
        "out"
    );
    // Non-finite inputs and coefficients are reported, not turned into NaN.
    let nan = arr2(&[[f32::NAN, 0.0, 0.0]]);
    assert!(
        matches!(g.velocity_f64(nan.view(), &[0.5]), Err(Error::InvalidArgument(m)) if m.contains("sample 0"))
    );
    assert!(matches!(
        g.log_density(x.view(), &[f64::INFINITY]),
        Err(Error::InvalidArgument(_))
    ));
    let vp = mixture3(Arc::new(LinearVp));
    assert!(
        matches!(vp.velocity_f64(x.view(), &[1.0]), Err(Error::Singular { reason }) if reason.contains("t = 1"))
    );
}

/// A field without derivatives, for the trait's defaults.
struct Plain;
impl VelocityField for Plain {
    fn state_shape(&self) -> Option<&[usize]> {
        Some(&[1])
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        _t: &[f64],
        extras: &fmrt::field::Extras,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        out.assign(&x);
        Ok(())
    }
}

#[test]
fn fields_without_derivatives_say_so() {
    let f = Plain;
    assert!(!f.derivatives().jvp && !f.derivatives().divergence);
    let x = ArrayD::<f32>::zeros(IxDyn(&[2, 1]));
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[2, 1]));
    assert!(matches!(
        f.jvp(
            x.view(),
            &[0.5],
            fmrt::field::Extras::none(),
            x.view(),
            out.view_mut()
        ),
        Err(Error::Unsupported { .. })
    ));
    let mut div = vec![0.0; 2];
    assert!(matches!(
        f.divergence(x.view(), &[0.5], fmrt::field::Extras::none(), &mut div),
        Err(Error::Unsupported { .. })
    ));
}
