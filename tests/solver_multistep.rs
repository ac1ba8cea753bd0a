//! Multistep solvers (ab2, ab3, pec2): convergence order on uniform and
//! non-uniform grids, evaluation counts, per-sample intervals, saved states,
//! non-finite states and the refusal of adaptive steps.

use fmrt::solver::{solve, Interval, Method, MethodKind, OdeSystem, Solution, SolverConfig, Steps};
use fmrt::{Error, Result};
use ndarray::{array, Array2, ArrayView2, ArrayViewMut2, Axis};

const MULTISTEP: [Method; 3] = [Method::Ab2, Method::Ab3, Method::Pec2];

/// A rotation at rate ω with time-varying damping:
/// y' = −cos(t)·y + ω·J·y, J the rotation generator in the plane. The two
/// parts commute, so y(t) = exp(sin t0 − sin t)·R(ω·(t − t0))·y(t0).
struct DampedRotation {
    calls: usize,
}

const OMEGA: f64 = 1.3;

impl DampedRotation {
    fn new() -> Self {
        Self { calls: 0 }
    }

    fn exact(t0: f64, t1: f64, y: [f64; 2]) -> [f64; 2] {
        let decay = (t0.sin() - t1.sin()).exp();
        let (s, c) = (OMEGA * (t1 - t0)).sin_cos();
        [decay * (c * y[0] - s * y[1]), decay * (s * y[0] + c * y[1])]
    }
}

impl OdeSystem for DampedRotation {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        assert_eq!(t.len(), y.nrows(), "one time per sample");
        self.calls += 1;
        for ((&t, y), mut dy) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            let a = -t.cos();
            dy[0] = a * y[0] - OMEGA * y[1];
            dy[1] = OMEGA * y[0] + a * y[1];
        }
        Ok(())
    }
}

const T_END: f64 = 3.0;

fn y0() -> Array2<f64> {
    array![[1.0, 0.0], [0.0, 2.0], [-0.5, 0.3], [3.0, -1.0]]
}

fn common() -> Interval {
    Interval::Common {
        start: 0.0,
        end: T_END,
    }
}

fn run(config: &SolverConfig, interval: &Interval, save_at: &[f64]) -> Result<Solution> {
    solve(
        &mut DampedRotation::new(),
        y0().view(),
        config,
        interval,
        save_at,
    )
}

/// The closed form of every sample at physical time `t`, from time 0.
fn exact_at(t: f64) -> Array2<f64> {
    let y0 = y0();
    let mut out = Array2::zeros(y0.raw_dim());
    for (i, row) in y0.rows().into_iter().enumerate() {
        let e = DampedRotation::exact(0.0, t, [row[0], row[1]]);
        out[[i, 0]] = e[0];
        out[[i, 1]] = e[1];
    }
    out
}

fn max_diff(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    (&a - &b).iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// The shift grid t = μ·u / (1 + (μ − 1)·u) over n uniform u: steps shrink
/// towards the end by a factor of μ² overall (μ = 3 here).
fn shift_grid(n: usize, mu: f64) -> Vec<f64> {
    (0..=n)
        .map(|k| {
            let u = k as f64 / n as f64;
            mu * u / (1.0 + (mu - 1.0) * u)
        })
        .collect()
}

fn sci(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.3e}")).collect();
    parts.join(" ")
}

/// The least-squares slope of log(error) against log(1/n).
fn fitted_order(ns: &[usize], errors: &[f64]) -> f64 {
    let xs: Vec<f64> = ns.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errors.iter().map(|e| e.ln()).collect();
    let k = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / k, ys.iter().sum::<f64>() / k);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    -sxy / sxx
}

fn convergence(method: Method, steps: impl Fn(usize) -> Steps) -> (f64, Vec<f64>) {
    let ns = [20, 40, 80, 160, 320];
    let errors: Vec<f64> = ns
        .iter()
        .map(|&n| {
            let sol = run(&SolverConfig::fixed(method, steps(n)), &common(), &[]).unwrap();
            max_diff(sol.y.view(), exact_at(T_END).view())
        })
        .collect();
    assert!(
        errors.iter().all(|&e| e > 1e-12),
        "{method}: errors {} reach round-off",
        sci(&errors)
    );
    (fitted_order(&ns, &errors), errors)
}

#[test]
fn multistep_methods_converge_at_their_order_on_uniform_and_shift_grids() {
    for method in MULTISTEP {
        assert_eq!(method.kind(), MethodKind::Multistep);
        assert!(method.tableau().is_none());
        let expected = method.order() as f64;
        let (uniform, errors) = convergence(method, Steps::Count);
        println!(
            "{method} uniform: order {uniform:.3}, errors {}",
            sci(&errors)
        );
        let (shifted, errors) = convergence(method, |n| Steps::Grid(shift_grid(n, 3.0)));
        println!(
            "{method} shift μ=3: order {shifted:.3}, errors {}",
            sci(&errors)
        );
        for (grid, order) in [("uniform", uniform), ("shift", shifted)] {
            assert!(
                (order - expected).abs() < 0.2,
                "{method} on the {grid} grid: fitted order {order}, expected {expected}"
            );
        }
    }
}

#[test]
fn multistep_orders_hold_with_an_uneven_grid_and_saved_states() {
    // A grid whose steps alternate between long and short (ratio 3) and a
    // save time inside every other step: neither may cost accuracy.
    for method in MULTISTEP {
        let errors: Vec<f64> = [60, 120, 240]
            .iter()
            .map(|&n| {
                let mut grid = vec![0.0];
                for k in 0..n {
                    let h = if k % 2 == 0 { 1.5 } else { 0.5 };
                    grid.push(grid[k] + h);
                }
                let total = grid[n];
                grid.iter_mut().for_each(|g| *g /= total);
                grid[n] = 1.0;
                let save_at: Vec<f64> = (0..n / 2)
                    .map(|k| 0.5 * (grid[2 * k] + grid[2 * k + 1]))
                    .collect();
                let config = SolverConfig::fixed(method, Steps::Grid(grid));
                let sol = run(&config, &common(), &save_at).unwrap();
                let mut worst = max_diff(sol.y.view(), exact_at(T_END).view());
                for (k, &s) in save_at.iter().enumerate() {
                    let exact = exact_at(s * T_END);
                    worst = worst.max(max_diff(sol.saved.index_axis(Axis(0), k), exact.view()));
                }
                worst
            })
            .collect();
        let order = fitted_order(&[60, 120, 240], &errors);
        println!(
            "{method} alternating grid with saves: order {order:.3}, errors {}",
            sci(&errors)
        );
        assert!(
            (order - method.order() as f64).abs() < 0.25,
            "{method}: fitted order {order} with saves on an uneven grid"
        );
    }
}

#[test]
fn multistep_methods_evaluate_once_per_step() {
    for method in MULTISTEP {
        for n in [1, 2, 3, 10, 57] {
            let mut system = DampedRotation::new();
            let config = SolverConfig::fixed(method, Steps::Count(n));
            let sol = solve(&mut system, y0().view(), &config, &common(), &[]).unwrap();
            // pec2 also evaluates the initial slope; ab2 and ab3 evaluate at
            // the start of every step and never at the end.
            let expected = if method == Method::Pec2 { n + 1 } else { n };
            assert_eq!(sol.stats.nfe, expected, "{method}, {n} steps");
            assert_eq!(system.calls, expected, "{method}: nfe counts the calls");
            assert_eq!((sol.stats.accepted, sol.stats.rejected), (n, 0));
        }
        // Saving off the grid changes neither the steps nor the result.
        let config = SolverConfig::fixed(method, Steps::Count(10));
        let plain = run(&config, &common(), &[]).unwrap();
        let saving = run(&config, &common(), &[0.33, 0.0, 1.0, 0.5, 0.77]).unwrap();
        assert_eq!(plain.y, saving.y, "{method}");
        assert_eq!(plain.stats, saving.stats, "{method}");
        assert_eq!(saving.saved.index_axis(Axis(0), 1), y0());
        assert_eq!(saving.saved.index_axis(Axis(0), 2), saving.y);
    }
}

#[test]
fn a_single_step_is_euler_and_two_steps_start_with_the_trapezoid() {
    // One step of ab2/ab3 is a forward Euler step.
    let euler = run(
        &SolverConfig::fixed(Method::Euler, Steps::Count(1)),
        &common(),
        &[],
    )
    .unwrap();
    for method in [Method::Ab2, Method::Ab3] {
        let one = run(
            &SolverConfig::fixed(method, Steps::Count(1)),
            &common(),
            &[],
        )
        .unwrap();
        assert_eq!(one.y, euler.y, "{method}");
    }
    // One step of pec2 is Heun's method (Euler predictor, trapezoid corrector).
    let heun = run(
        &SolverConfig::fixed(Method::Heun, Steps::Count(1)),
        &common(),
        &[],
    )
    .unwrap();
    let pec = run(
        &SolverConfig::fixed(Method::Pec2, Steps::Count(1)),
        &common(),
        &[],
    )
    .unwrap();
    assert!(max_diff(pec.y.view(), heun.y.view()) < 1e-14);
}

/// Sample intervals, including a backward one and an empty one.
fn per_sample() -> (Vec<f64>, Vec<f64>) {
    (vec![0.0, 0.5, 2.5, 0.3], vec![1.0, 3.0, 0.2, 0.3])
}

#[test]
fn multistep_per_sample_intervals_match_solving_each_sample_alone() {
    let (starts, ends) = per_sample();
    let interval = Interval::PerSample {
        starts: starts.clone(),
        ends: ends.clone(),
    };
    let y0 = y0();
    for method in MULTISTEP {
        let config = SolverConfig::fixed(method, Steps::Grid(shift_grid(160, 3.0)));
        let batch = run(&config, &interval, &[0.4]).unwrap();
        for i in 0..y0.nrows() {
            let single = y0.slice(ndarray::s![i..i + 1, ..]);
            let alone = Interval::Common {
                start: starts[i],
                end: ends[i],
            };
            let one = solve(&mut DampedRotation::new(), single, &config, &alone, &[0.4]).unwrap();
            // The same steps and coefficients, row by row: identical results.
            assert_eq!(one.y.row(0), batch.y.row(i), "{method}, sample {i}");
            assert_eq!(
                one.saved.index_axis(Axis(0), 0).row(0),
                batch.saved.index_axis(Axis(0), 0).row(i),
                "{method}, sample {i}, saved"
            );
            let exact = DampedRotation::exact(starts[i], ends[i], [y0[[i, 0]], y0[[i, 1]]]);
            let err = (batch.y[[i, 0]] - exact[0])
                .abs()
                .max((batch.y[[i, 1]] - exact[1]).abs());
            assert!(err < 1e-2, "{method}, sample {i}: error {err:e}");
        }
        // The empty interval leaves its sample untouched.
        assert_eq!(batch.y.row(3), y0.row(3));
    }
}

#[test]
fn multistep_methods_refuse_adaptive_steps() {
    for method in MULTISTEP {
        match run(&SolverConfig::adaptive(method, 1e-6, 1e-6), &common(), &[]) {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains(method.name()), "{msg}");
                assert!(msg.contains("fixed-step multistep"), "{msg}");
            }
            Err(other) => panic!("{method}: expected InvalidArgument, got {other}"),
            Ok(_) => panic!("{method}: adaptive steps were accepted"),
        }
        assert!(!method.is_adaptive());
        assert_eq!(Method::from_name(method.name()).unwrap(), method);
        // Invalid steps are refused as for the Runge–Kutta methods.
        let zero = run(
            &SolverConfig::fixed(method, Steps::Count(0)),
            &common(),
            &[],
        );
        assert!(matches!(zero, Err(Error::InvalidArgument(m)) if m.contains("at least 1")));
        let bad = Steps::Grid(vec![0.0, 0.6, 0.4, 1.0]);
        let bad = run(&SolverConfig::fixed(method, bad), &common(), &[]);
        assert!(matches!(bad, Err(Error::InvalidArgument(m)) if m.contains("strictly")));
    }
}

/// Produces NaN for samples whose time passes `after`.
struct NanAfter {
    after: f64,
}

impl OdeSystem for NanAfter {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((&t, y), mut dy) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            let v = if t > self.after { f64::NAN } else { -y[0] };
            dy.fill(v);
        }
        Ok(())
    }
}

#[test]
fn a_non_finite_multistep_state_names_the_step() {
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    let y = array![[1.0, 1.0], [2.0, 2.0]];
    // ab2 and ab3 evaluate at the start of each step: the slope at 0.8 spoils
    // the step from 0.8 to 0.9. pec2 evaluates at the end of each step: the
    // slope at 0.8 spoils the step from 0.7 to 0.8.
    for (method, at, from) in [
        (Method::Ab2, "0.9", "0.8"),
        (Method::Ab3, "0.9", "0.8"),
        (Method::Pec2, "0.8", "0.7"),
    ] {
        let config = SolverConfig::fixed(method, Steps::Count(10));
        let result = solve(
            &mut NanAfter { after: 0.75 },
            y.view(),
            &config,
            &interval,
            &[],
        );
        match result {
            Err(e @ Error::NonFinite { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("state of sample 0"), "{msg}");
                assert!(msg.contains(&format!("non-finite at t = {at}")), "{msg}");
                assert!(msg.contains(&format!("from t = {from}")), "{msg}");
            }
            Err(other) => panic!("{method}: expected NonFinite, got {other}"),
            Ok(_) => panic!("{method}: a NaN slope went unnoticed"),
        }
    }
}

#[test]
fn multistep_methods_solve_an_empty_batch() {
    let y = Array2::<f64>::zeros((0, 2));
    for method in MULTISTEP {
        let config = SolverConfig::fixed(method, Steps::Count(3));
        let sol = solve(
            &mut DampedRotation::new(),
            y.view(),
            &config,
            &common(),
            &[0.5],
        )
        .unwrap();
        assert_eq!(sol.y.shape(), &[0, 2]);
        assert_eq!(sol.saved.shape(), &[1, 0, 2]);
    }
}
