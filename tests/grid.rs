//! Time grids: built-ins against their closed forms, a grid-driven Euler solve
//! against a hand-written loop, and the checks on broken grids.

use std::f64::consts::PI;
use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::field::VelocityField;
use fmrt::grid::{self, TimeGrid, BUILTIN_GRIDS};
use fmrt::sampler::Sampler;
use fmrt::scheduler::Scheduler;
use fmrt::solver::{Method, SolverConfig};
use ndarray::{ArrayD, IxDyn};

const N: usize = 28;

/// The closed form of each built-in at its default params.
fn closed_form(name: &str, u: f64) -> f64 {
    match name {
        "uniform" => u,
        "shift" => {
            let (mu, s) = (3.0, 1.0 - u);
            1.0 - mu * s / (1.0 + (mu - 1.0) * s)
        }
        "sway" => u - ((PI * u / 2.0).cos() - 1.0 + u),
        "cosine" => 0.5 * (1.0 - (PI * u).cos()),
        other => panic!("no closed form for {other}"),
    }
}

#[test]
fn builtins_equal_their_closed_forms_at_28_steps() {
    for name in BUILTIN_GRIDS {
        let grid = TimeGrid::builtin(name, &[]).expect("built-in loads");
        let points = grid.points(N).expect("points");
        assert_eq!(points.len(), N + 1);
        assert_eq!((points[0], points[N]), (0.0, 1.0), "{name}");
        for (i, &t) in points.iter().enumerate() {
            let want = closed_form(name, i as f64 / N as f64);
            assert!((t - want).abs() < 1e-14, "{name}: t_{i} = {t}, want {want}");
        }
    }
    // Overridden params: shift with mu = 1 is uniform, sway with c = 0 too.
    for (name, param) in [("shift", ("mu", 1.0)), ("sway", ("c", 0.0))] {
        let grid = TimeGrid::builtin(name, &[(param.0.to_string(), param.1)]).unwrap();
        for (i, t) in grid.points(N).unwrap().into_iter().enumerate() {
            assert!((t - i as f64 / N as f64).abs() < 1e-15, "{name} {param:?}");
        }
    }
    // The shift grid spends its first steps near the noise: smaller steps there.
    let shift = TimeGrid::builtin("shift", &[]).unwrap().points(N).unwrap();
    assert!(shift[1] - shift[0] < 1.0 / N as f64 / 2.0);
}

/// Euler on the shift grid through the solver equals a hand-written Euler
/// loop on the same times, on the exact Gaussian-mixture field.
#[test]
fn shift_grid_euler_equals_a_hand_written_loop() {
    let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
    let field = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap());
    let grid = TimeGrid::builtin("shift", &[]).unwrap();
    let solver = SolverConfig::fixed(Method::Euler, grid.steps(N).unwrap());
    let sampler = Sampler::new(field.clone(), solver);
    let n = 64;
    let x0 = sampler.draw_noise(n, 3).unwrap();
    let got = sampler
        .integrate(x0.view(), &fmrt::sampler::TimeSpan::Full, &[])
        .unwrap();
    assert_eq!(got.stats.nfe, N);

    let mut x: ArrayD<f64> = x0.mapv(f64::from);
    let mut v = ArrayD::<f32>::zeros(IxDyn(&[n, 2]));
    for i in 0..N {
        let (t0, t1) = (
            closed_form("shift", i as f64 / N as f64),
            closed_form("shift", (i + 1) as f64 / N as f64),
        );
        let x32 = x.mapv(|e| e as f32);
        field
            .velocity(x32.view(), &[t0], fmrt::field::Extras::none(), v.view_mut())
            .unwrap();
        x = &x + &v.mapv(|e| f64::from(e) * (t1 - t0));
    }
    let diff = got
        .x
        .iter()
        .zip(x.iter())
        .fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - b).abs()));
    assert!(diff < 1e-5, "max difference {diff}");
    // And the grid matters: uniform Euler lands elsewhere.
    let uniform = Sampler::new(
        field,
        SolverConfig::fixed(Method::Euler, fmrt::solver::Steps::Count(N)),
    )
    .integrate(x0.view(), &fmrt::sampler::TimeSpan::Full, &[])
    .unwrap();
    let moved = uniform
        .x
        .iter()
        .zip(x.iter())
        .fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - b).abs()));
    assert!(moved > 1e-3, "uniform and shift grids agree to {moved}");
}

#[test]
fn broken_grids_are_reported_with_line_and_column() {
    // Out-of-range param: sway with c = -2 goes below 0 first.
    let err = TimeGrid::builtin("sway", &[("c".to_string(), -2.0)]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("not strictly increasing"), "{text}");
    assert!(text.contains("sway.fm:6:1"), "{text}");
    // A wrong endpoint in a user file.
    let err = TimeGrid::from_source("param k = 2\ngrid = k * u^2\n", "g.fm", &[]).unwrap_err();
    assert!(err.to_string().contains("g.fm:2:1"), "{err}");
    assert!(err.to_string().contains("t(1) = 2"), "{err}");
    // Not finite inside: reported, not integrated.
    let src = "grid = u + 0.001 * u * (1 - u) / (u - 0.5)^2\n";
    let err = TimeGrid::from_source(src, "inf.fm", &[]).unwrap_err();
    assert!(err.to_string().contains("infinite at u = 0.5"), "{err}");
    // Unknown names and built-ins.
    assert!(TimeGrid::open("shfit", &[])
        .unwrap_err()
        .to_string()
        .contains("did you mean `shift`"));
    assert!(TimeGrid::open("/nonexistent/g.fm", &[]).is_err());
    // Too few steps for a grid that is flat at this resolution.
    let flat = TimeGrid::from_source("grid = u^40\n", "flat.fm", &[]).unwrap();
    assert!(flat.points(0).is_err());
    assert!(flat.points(3).is_ok());
}

#[test]
fn grid_sources_are_told_from_schedulers() {
    assert!(grid::is_grid_source("param mu = 3\ngrid = u\n"));
    assert!(!grid::is_grid_source("alpha = t\nsigma = 1 - t\n"));
    let g = TimeGrid::builtin("shift", &[]).unwrap();
    assert_eq!(g.params(), &[("mu".to_string(), 3.0)]);
    assert!(g.expression().contains("mu"), "{}", g.expression());
}

/// The EDM grid equals Karras's spacing mapped through the SNR: for CondOT
/// t_i = 1/(1 + σ_i), for the cosine schedule t_i = (2/π)·atan(1/σ_i).
#[test]
fn edm_grid_equals_karras_through_the_snr() {
    let edm = grid::EdmGrid::default();
    let karras = |i: usize| {
        let (lo, hi) = (80f64.powf(1.0 / 7.0), 0.002f64.powf(1.0 / 7.0));
        (lo + i as f64 / (N - 1) as f64 * (hi - lo)).powf(7.0)
    };
    for (name, closed) in [
        ("ot", (|s: f64| 1.0 / (1.0 + s)) as fn(f64) -> f64),
        ("cosine", |s: f64| 2.0 / PI * (1.0 / s).atan()),
    ] {
        let schedule = Scheduler::builtin(name, &[]).unwrap();
        let points = edm.points(&schedule, N).unwrap();
        assert_eq!(points.len(), N + 1);
        assert_eq!((points[0], points[N]), (0.0, 1.0));
        for (i, &t) in points.iter().enumerate().take(N).skip(1) {
            let want = closed(karras(i));
            assert!((t - want).abs() < 1e-12, "{name}: t_{i} = {t}, want {want}");
        }
    }
    let bad = [("sigma_min".to_string(), 100.0)];
    assert!(grid::EdmGrid::with_params(&bad).is_err());
    assert!(grid::EdmGrid::with_params(&[("mu".to_string(), 1.0)]).is_err());
    let rho3 = grid::EdmGrid::with_params(&[("rho".to_string(), 3.0)]).unwrap();
    assert_eq!(rho3.rho, 3.0);
}
