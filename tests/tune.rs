//! Work-precision tuning (`fmrt::tune`) on the 8-component ring mixture
//! with its exact velocity: the pick for 10 calls against Euler, the
//! reference's own accuracy, the call accounting, the skipped candidates
//! and the refusal of bad options.

use std::sync::Arc;

use fmrt::error::ErrorKind;
use fmrt::field::analytic::GaussianMixture;
use fmrt::sampler::{Sampler, TimeSpan};
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{Method, SolverConfig, StatePrecision, Steps};
use fmrt::tune::{
    calls, reference_solver, sample_errors, steps_within, summarise, tune, GridSpec, TuneOptions,
};

fn builtin(name: &str) -> Arc<dyn Schedule> {
    Arc::new(Scheduler::builtin(name, &[]).expect("built-in scheduler"))
}

/// The 8-component ring mixture on `schedule`, sampled with a placeholder
/// solver (tuning replaces it).
fn ring_sampler(schedule: Arc<dyn Schedule>) -> Sampler {
    let field = GaussianMixture::ring(8, 4.0, 0.3, schedule).expect("valid mixture");
    Sampler::new(
        Arc::new(field),
        SolverConfig::fixed(Method::Euler, Steps::Count(1)),
    )
}

fn options(budgets: &[usize], samples: usize, schedule: Arc<dyn Schedule>) -> TuneOptions {
    TuneOptions {
        budgets: budgets.to_vec(),
        samples,
        seed: 7,
        schedule: Some(schedule),
        ..TuneOptions::default()
    }
}

#[test]
fn tune_beats_euler_on_the_uniform_grid_by_half_at_10_calls() {
    let ot = builtin("ot");
    let table = tune(&ring_sampler(ot.clone()), &options(&[10], 256, ot)).unwrap();
    let euler = table
        .row(Method::Euler, &GridSpec::new("uniform", &[]), 10)
        .expect("euler on the uniform grid ran");
    let best = table.best(10).expect("a best candidate");
    assert!(
        best.median <= 0.5 * euler.median,
        "best {} on {} has median {:e}, euler uniform {:e}",
        best.method,
        best.grid,
        best.median,
        euler.median
    );
    assert!(best.calls <= 10);
    // The best is the row with the smallest median for the budget.
    assert!(table.rows_for(10).all(|r| r.median >= best.median));
    assert_eq!(table.samples, 256);
}

#[test]
fn the_reference_is_far_more_accurate_than_the_errors_it_measures() {
    let ot = builtin("ot");
    let sampler = ring_sampler(ot.clone());
    let opts = options(&[32], 256, ot);
    let table = tune(&sampler, &opts).unwrap();
    // The reference against a hundred times tighter one, from the same noise.
    let x0 = sampler.draw_noise(opts.samples, opts.seed).unwrap();
    let run = |tol: f64| {
        sampler
            .clone()
            .with_solver(reference_solver(tol))
            .integrate(x0.view(), &TimeSpan::Full, &[])
            .unwrap()
            .x
    };
    let (reference, tighter) = (run(1e-7), run(1e-9));
    let (median, _, worst) = summarise(&sample_errors(&reference, &tighter).unwrap());
    let best = table.best(32).unwrap();
    // The states are float32 (4e-7 apart near the ring's radius 4): the
    // reference is within a few of their steps of the tighter one.
    assert!(
        median <= 0.01 * best.median && worst <= 0.05 * best.median,
        "the reference is off by {median:e} (median), up to {worst:e}; the best median at \
         32 calls is {:e}",
        best.median
    );
    assert!(table.reference.calls > 32);
}

#[test]
fn every_row_spends_at_most_its_budget_and_the_most_steps_that_fit() {
    let ot = builtin("ot");
    let table = tune(&ring_sampler(ot.clone()), &options(&[8, 13], 32, ot)).unwrap();
    assert_eq!(table.budgets, vec![8, 13]);
    assert!(!table.rows.is_empty());
    for row in &table.rows {
        assert!(row.calls <= row.budget, "{row:?}");
        assert_eq!(row.calls, calls(row.method, row.steps), "{row:?}");
        assert!(
            calls(row.method, row.steps + 1) > row.budget,
            "{row:?}: one more step would fit"
        );
        assert!(row.median <= row.p99 && row.p99 <= row.max, "{row:?}");
        assert!(row.seconds >= 0.0);
    }
    // The counts of the module's table, as the solver makes them.
    assert_eq!(steps_within(Method::Rk4, 13), Some(3));
    assert_eq!(steps_within(Method::Dopri5, 13), Some(2));
    assert_eq!(steps_within(Method::Pec2, 13), Some(12));
    assert_eq!(steps_within(Method::Unipc, 13), Some(13));
    assert_eq!(steps_within(Method::Rk4, 3), None);
    // Every method ran on the uniform grid at 13 calls: the adaptive pairs
    // on fixed steps too.
    for method in Method::ALL {
        assert!(
            table
                .row(method, &GridSpec::new("uniform", &[]), 13)
                .is_some(),
            "{method} did not run"
        );
    }
}

#[test]
fn rows_measure_the_same_noise_as_a_direct_run() {
    let ot = builtin("ot");
    let sampler = ring_sampler(ot.clone());
    let opts = options(&[12], 64, ot);
    let table = tune(&sampler, &opts).unwrap();
    let x0 = sampler.draw_noise(opts.samples, opts.seed).unwrap();
    let run = |solver: SolverConfig| {
        sampler
            .clone()
            .with_solver(solver)
            .integrate(x0.view(), &TimeSpan::Full, &[])
            .unwrap()
            .x
    };
    let reference = run(reference_solver(1e-7));
    let grid = GridSpec::new("shift", &[("mu", 3.0)]);
    let heun = run(SolverConfig::fixed(
        Method::Heun,
        grid.steps(Method::Heun, 6, None).unwrap(),
    ));
    let (median, p99, max) = summarise(&sample_errors(&heun, &reference).unwrap());
    let row = table.row(Method::Heun, &grid, 12).unwrap();
    assert_eq!((row.steps, row.calls), (6, 12));
    assert_eq!((row.median, row.p99, row.max), (median, p99, max));
}

#[test]
fn candidates_that_do_not_apply_are_skipped_with_their_reason() {
    // The cosine schedule is not the straight path: dpmpp2m and unipc are
    // skipped; without a schedule the edm grid is.
    let cosine = builtin("cosine");
    let mut opts = options(&[3], 16, cosine.clone());
    opts.grids = vec![GridSpec::new("uniform", &[]), GridSpec::new("edm", &[])];
    let table = tune(&ring_sampler(cosine.clone()), &opts).unwrap();
    let reason = |method: Method, grid: &str| {
        table
            .skipped
            .iter()
            .find(|s| s.method == method && s.grid.name == grid)
            .map(|s| s.reason.clone())
    };
    assert!(reason(Method::Dpmpp2m, "uniform")
        .unwrap()
        .contains("straight path"));
    assert!(reason(Method::Unipc, "edm")
        .unwrap()
        .contains("straight path"));
    assert!(reason(Method::Rk4, "uniform").unwrap().contains("4 calls"));
    assert!(table
        .row(Method::Euler, &GridSpec::new("edm", &[]), 3)
        .is_some());

    opts.schedule = None;
    let table = tune(&ring_sampler(cosine), &opts).unwrap();
    let edm = table
        .skipped
        .iter()
        .find(|s| s.method == Method::Euler && s.grid.name == "edm")
        .expect("edm skipped without a schedule");
    assert!(edm.reason.contains("schedule"), "{}", edm.reason);
    // Without a schedule the flow schedulers run, assuming the straight path.
    assert!(table
        .row(Method::Unipc, &GridSpec::new("uniform", &[]), 3)
        .is_some());
}

#[test]
fn an_f32_sampler_tunes_its_own_precision_against_an_f64_reference() {
    // The reference runs in f64 (an adaptive solve, which f32 refuses); the
    // Runge–Kutta candidates run in f32 and match a direct f32 run, the
    // multistep ones are skipped naming the precision.
    let ot = builtin("ot");
    let sampler = ring_sampler(ot.clone()).with_state_precision(StatePrecision::F32);
    let opts = options(&[12], 64, ot);
    let table = tune(&sampler, &opts).unwrap();
    let x0 = sampler.draw_noise(opts.samples, opts.seed).unwrap();
    let run = |solver: SolverConfig, precision: StatePrecision| {
        sampler
            .clone()
            .with_solver(solver)
            .with_state_precision(precision)
            .integrate(x0.view(), &TimeSpan::Full, &[])
            .unwrap()
            .x
    };
    let reference = run(reference_solver(1e-7), StatePrecision::F64);
    let grid = GridSpec::new("uniform", &[]);
    let heun = run(
        SolverConfig::fixed(Method::Heun, grid.steps(Method::Heun, 6, None).unwrap()),
        StatePrecision::F32,
    );
    let (median, _, _) = summarise(&sample_errors(&heun, &reference).unwrap());
    assert_eq!(table.row(Method::Heun, &grid, 12).unwrap().median, median);
    let ab2 = table
        .skipped
        .iter()
        .find(|s| s.method == Method::Ab2 && s.grid.name == "uniform")
        .expect("ab2 skipped in f32");
    assert!(ab2.reason.contains("state precision f32"), "{}", ab2.reason);
}

#[test]
fn bad_options_are_refused() {
    let ot = builtin("ot");
    let sampler = ring_sampler(ot.clone());
    let bad = [
        TuneOptions {
            budgets: vec![],
            ..options(&[], 8, ot.clone())
        },
        options(&[8, 0], 8, ot.clone()),
        options(&[usize::MAX], 8, ot.clone()),
        options(&[8], 0, ot.clone()),
        TuneOptions {
            methods: vec![],
            ..options(&[8], 8, ot.clone())
        },
        TuneOptions {
            samples: usize::MAX / 2,
            ..options(&[8], 8, ot.clone())
        },
    ];
    for opts in bad {
        let e = tune(&sampler, &opts).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    // A grid that does not exist, or refuses its params, is an error rather
    // than a skipped candidate.
    for (grid, kind) in [
        (GridSpec::new("nowhere", &[]), ErrorKind::Scheduler),
        (GridSpec::new("shift", &[("nu", 3.0)]), ErrorKind::Scheduler),
        (
            GridSpec::new("edm", &[("rho", -1.0)]),
            ErrorKind::InvalidArgument,
        ),
        (
            GridSpec::new("diffusers-flow", &[("shift", 0.0)]),
            ErrorKind::InvalidArgument,
        ),
    ] {
        let opts = TuneOptions {
            grids: vec![grid.clone()],
            ..options(&[8], 8, ot.clone())
        };
        let e = tune(&sampler, &opts).expect_err("refused");
        assert_eq!(e.kind(), kind, "{grid}: {e}");
    }
}

#[test]
fn summaries_use_the_documented_quantiles() {
    let errors: Vec<f64> = (1..=200).map(f64::from).collect();
    assert_eq!(summarise(&errors), (100.5, 198.0, 200.0));
    assert_eq!(summarise(&[3.0, 1.0, 2.0]), (2.0, 3.0, 3.0));
    let a = ndarray::arr2(&[[1.0f32, 1.0], [0.0, 0.0]]).into_dyn();
    let b = ndarray::arr2(&[[0.0f32, 0.0], [3.0, 4.0]]).into_dyn();
    let e = sample_errors(&a, &b).unwrap();
    assert_eq!(e[0], 1.0);
    assert!((e[1] - (12.5f64).sqrt()).abs() < 1e-12);
}
