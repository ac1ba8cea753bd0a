//! Solver overhead benchmark.
//!
//! For two cheap analytic fields at batch 4096 in 2-D it measures the bare
//! right-hand-side time and, per method, the solve time per evaluation; the
//! ratio (solve time per NFE) / (bare rhs time) is the solver's overhead
//! factor (1 would mean stage arithmetic, copies and step control are free).
//! The fields are far cheaper than a network, so this is a worst case.
//! Medians of repeated runs; nothing is asserted.
//!
//! It then compares the step-size controllers (I and PI) of the adaptive
//! methods: evaluations and achieved error on problems with a closed form
//! or a tight reference solution. `cargo bench --bench solver -- controllers`
//! (or, faster to build, `cargo test --bench solver -- controllers`) runs
//! only that comparison.
//!
//! Last, it compares the adaptive step modes: independent steps per sample
//! (`ErrorNorm::Independent`, the default) against one shared step with the
//! per-sample norm and with the batch norm: batched calls, the row
//! evaluations that advanced a sample ("useful") against all rows evaluated,
//! rejections, error and time. `-- steps` runs only that comparison.

use std::hint::black_box;
use std::time::Instant;

use fmrt::solver::{
    solve, AdaptiveOptions, Controller, ErrorNorm, Interval, Method, OdeSystem, SolverConfig, Steps,
};
use fmrt::Result;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

const BATCH: usize = 4096;
const REPEATS: usize = 9;

/// A rotation with slow decay: the cheapest possible field.
struct Rotation;

impl OdeSystem for Rotation {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((&t, y), mut dy) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            let w = 1.0 + t;
            dy[0] = -0.1 * y[0] - w * y[1];
            dy[1] = w * y[0] - 0.1 * y[1];
        }
        Ok(())
    }
}

/// The exact marginal velocity of the straight (α = t, σ = 1 − t) path from
/// N(0, I) to an isotropic 8-component Gaussian mixture in the plane.
struct Mixture {
    means: Vec<[f64; 2]>,
    var: f64,
}

impl Mixture {
    fn new() -> Self {
        let means = (0..8)
            .map(|k| {
                let a = k as f64 * std::f64::consts::TAU / 8.0;
                [4.0 * a.cos(), 4.0 * a.sin()]
            })
            .collect();
        Self { means, var: 0.25 }
    }
}

impl OdeSystem for Mixture {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((&t, x), mut u) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            let (alpha, sigma) = (t, 1.0 - t);
            let v = alpha * alpha * self.var + sigma * sigma;
            let gain = (alpha * self.var - sigma) / v;
            // Posterior weights by a max-shifted softmax, accumulated in one pass.
            let logit = |m: &[f64; 2]| {
                let (d0, d1) = (x[0] - alpha * m[0], x[1] - alpha * m[1]);
                -(d0 * d0 + d1 * d1) / (2.0 * v)
            };
            let top = self
                .means
                .iter()
                .map(logit)
                .fold(f64::NEG_INFINITY, f64::max);
            let (mut total, mut u0, mut u1) = (0.0, 0.0, 0.0);
            for m in &self.means {
                let w = (logit(m) - top).exp();
                total += w;
                u0 += w * (m[0] + gain * (x[0] - alpha * m[0]));
                u1 += w * (m[1] + gain * (x[1] - alpha * m[1]));
            }
            u[0] = u0 / total;
            u[1] = u1 / total;
        }
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds for `calls` bare rhs evaluations on the batch, with times spread
/// over [0, 1] as in a solve.
fn bare_rhs_time(system: &mut dyn OdeSystem, y: &Array2<f64>, calls: usize) -> f64 {
    let mut t = vec![0.0; BATCH];
    let mut dy = Array2::zeros(y.raw_dim());
    let start = Instant::now();
    for k in 0..calls {
        t.fill(k as f64 / calls as f64);
        system.rhs(&t, y.view(), dy.view_mut()).unwrap();
        black_box(&dy);
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "controllers") {
        compare_controllers();
        return;
    }
    if std::env::args().any(|a| a == "steps") {
        compare_step_modes();
        return;
    }
    overhead();
    compare_controllers();
    compare_step_modes();
}

fn with_norm(method: Method, tol: f64, norm: ErrorNorm) -> SolverConfig {
    SolverConfig::adaptive_with(
        method,
        AdaptiveOptions {
            rtol: tol,
            atol: tol,
            norm,
            ..AdaptiveOptions::default()
        },
    )
}

fn overhead() {
    let y0 = Array2::from_shape_fn((BATCH, 2), |(i, j)| {
        // Deterministic spread-out starting points.
        let a = i as f64 * 0.618_033_988_75;
        if j == 0 {
            (a * 7.0).sin() * 1.5
        } else {
            (a * 3.0).cos() * 1.5
        }
    });
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    let configs = [
        (
            "euler, 100 steps",
            SolverConfig::fixed(Method::Euler, Steps::Count(100)),
        ),
        (
            "heun, 50 steps",
            SolverConfig::fixed(Method::Heun, Steps::Count(50)),
        ),
        (
            "rk4, 100 steps",
            SolverConfig::fixed(Method::Rk4, Steps::Count(100)),
        ),
        (
            "dopri5, 20 steps",
            SolverConfig::fixed(Method::Dopri5, Steps::Count(20)),
        ),
        (
            "bosh3, tol 1e-5",
            SolverConfig::adaptive(Method::Bosh3, 1e-5, 1e-5),
        ),
        (
            "dopri5, tol 1e-5",
            SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5),
        ),
        (
            "tsit5, tol 1e-5",
            SolverConfig::adaptive(Method::Tsit5, 1e-5, 1e-5),
        ),
        (
            "dopri5, shared",
            with_norm(Method::Dopri5, 1e-5, ErrorNorm::PerSample),
        ),
        (
            "tsit5, shared",
            with_norm(Method::Tsit5, 1e-5, ErrorNorm::PerSample),
        ),
    ];
    let fields: [(&str, &mut dyn OdeSystem); 2] = [
        ("rotation", &mut Rotation),
        ("8-gaussian mixture", &mut Mixture::new()),
    ];
    for (field_name, system) in fields {
        let bare = median(
            (0..REPEATS)
                .map(|_| bare_rhs_time(system, &y0, 100) / 100.0)
                .collect(),
        );
        println!(
            "\n{field_name}, batch {BATCH} x 2: bare rhs {:.2} us",
            bare * 1e6
        );
        println!(
            "{:<18} {:>6} {:>6} {:>12} {:>12} {:>9}",
            "method", "nfe", "steps", "us/step", "us/nfe", "overhead"
        );
        for (name, config) in &configs {
            // Each repeat times a solve and then as many bare evaluations as it
            // made, so both see the same machine load; medians of both.
            let mut times = Vec::new();
            let mut ratios = Vec::new();
            let mut stats = None;
            for _ in 0..REPEATS {
                let start = Instant::now();
                let sol = solve(system, y0.view(), config, &interval, &[]).unwrap();
                let elapsed = start.elapsed().as_secs_f64();
                let bare = bare_rhs_time(system, &y0, sol.stats.nfe);
                times.push(elapsed);
                ratios.push(elapsed / bare);
                stats = Some(sol.stats);
                black_box(sol);
            }
            let time = median(times);
            let stats = stats.unwrap();
            let steps = stats.accepted + stats.rejected;
            println!(
                "{name:<18} {:>6} {:>6} {:>12.2} {:>12.2} {:>9.2}",
                stats.nfe,
                steps,
                time / steps as f64 * 1e6,
                time / stats.nfe as f64 * 1e6,
                median(ratios)
            );
        }
    }
}

/// y' = −(t/2)·y + (1 + t)·J·y: y(t) = exp(−(t² − t0²)/4)·R(Θ(t) − Θ(t0))·y0
/// with Θ(t) = t + t²/2 (the solver tests' spiral).
struct Spiral;

impl OdeSystem for Spiral {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((&t, y), mut dy) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            let (a, w) = (-0.5 * t, 1.0 + t);
            dy[0] = a * y[0] - w * y[1];
            dy[1] = w * y[0] + a * y[1];
        }
        Ok(())
    }
}

/// The Arenstorf orbit of the restricted three-body problem (Hairer,
/// Nørsett & Wanner, *Solving ODEs I*, §II.0): periodic, so the state after
/// one period is the initial one. The classic test of step-size control.
struct Arenstorf;

const ARENSTORF_MU: f64 = 0.012277471;
const ARENSTORF_PERIOD: f64 = 17.065_216_560_157_96;

impl OdeSystem for Arenstorf {
    fn rhs(
        &mut self,
        _: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        let (mu, nu) = (ARENSTORF_MU, 1.0 - ARENSTORF_MU);
        for (y, mut dy) in y.rows().into_iter().zip(dy.rows_mut()) {
            let (x1, x2, v1, v2) = (y[0], y[1], y[2], y[3]);
            let d1 = ((x1 + mu).powi(2) + x2 * x2).powf(1.5);
            let d2 = ((x1 - nu).powi(2) + x2 * x2).powf(1.5);
            dy[0] = v1;
            dy[1] = v2;
            dy[2] = x1 + 2.0 * v2 - nu * (x1 + mu) / d1 - mu * (x1 - nu) / d2;
            dy[3] = x2 - 2.0 * v1 - nu * x2 / d1 - mu * x2 / d2;
        }
        Ok(())
    }
}

/// y' = −λᵢ·y per sample: 15 samples with λ = 1, one with λ = 40.
struct Decay;

const DECAY_RATES: [f64; 16] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 40.0,
];

impl OdeSystem for Decay {
    fn rhs(
        &mut self,
        _: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((lambda, y), mut dy) in DECAY_RATES.iter().zip(y.rows()).zip(dy.rows_mut()) {
            dy[0] = -lambda * y[0];
        }
        Ok(())
    }
}

/// y' = −λ·(y − cos t) with λ = 500 (one sample per λ-scaled copy): after
/// a fast transient the solution follows the slow cos t, and the step of an
/// explicit method is limited by stability rather than accuracy, where the
/// I controller oscillates between accepted and rejected steps.
/// y(t) = (λ² cos t + λ sin t)/(λ² + 1) − λ²/(λ² + 1)·exp(−λ t) from y(0) = 0.
struct Relaxation;

const RELAX_LAMBDA: f64 = 500.0;

impl OdeSystem for Relaxation {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((&t, y), mut dy) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            dy[0] = -RELAX_LAMBDA * (y[0] - t.cos());
        }
        Ok(())
    }
}

fn relaxation_exact(t: f64) -> f64 {
    let l = RELAX_LAMBDA;
    (l * l * t.cos() + l * t.sin()) / (l * l + 1.0) - l * l / (l * l + 1.0) * (-l * t).exp()
}

/// One test problem: the system, its start, its interval and its exact (or
/// reference) final state.
struct Problem {
    name: &'static str,
    system: Box<dyn OdeSystem>,
    y0: Array2<f64>,
    end: f64,
    exact: Array2<f64>,
    tolerances: &'static [f64],
}

fn problems() -> Vec<Problem> {
    let spiral_y0 = ndarray::array![[1.0, 0.0], [0.0, 2.0], [-0.5, 0.3], [3.0, -1.0]];
    let spiral_exact = Array2::from_shape_fn((4, 2), |(i, j)| {
        let angle = 2.0 + 0.5 * 4.0;
        let decay = (-1.0f64).exp();
        let (s, c) = f64::sin_cos(angle);
        let (a, b) = (spiral_y0[[i, 0]], spiral_y0[[i, 1]]);
        decay * if j == 0 { c * a - s * b } else { s * a + c * b }
    });
    let arenstorf_y0 = ndarray::array![[0.994, 0.0, 0.0, -2.001_585_106_379_082_5]];
    let decay_y0 = Array2::ones((16, 1));
    let decay_exact = Array2::from_shape_fn((16, 1), |(i, _)| (-DECAY_RATES[i]).exp());
    // The mixture has no closed-form trajectory: a tight I-controlled
    // dopri5 solve serves as the reference.
    let mixture_y0 = Array2::from_shape_fn((256, 2), |(i, j)| {
        let a = i as f64 * 0.618_033_988_75;
        if j == 0 {
            (a * 7.0).sin() * 1.5
        } else {
            (a * 3.0).cos() * 1.5
        }
    });
    let reference = SolverConfig::adaptive_with(
        Method::Dopri5,
        AdaptiveOptions {
            rtol: 1e-13,
            atol: 1e-13,
            controller: Controller::I,
            ..AdaptiveOptions::default()
        },
    );
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    let mixture_exact = solve(
        &mut Mixture::new(),
        mixture_y0.view(),
        &reference,
        &interval,
        &[],
    )
    .unwrap()
    .y;
    vec![
        Problem {
            name: "spiral",
            system: Box::new(Spiral),
            y0: spiral_y0,
            end: 2.0,
            exact: spiral_exact,
            tolerances: &[1e-4, 1e-6, 1e-8],
        },
        Problem {
            name: "decay 15+1",
            system: Box::new(Decay),
            y0: decay_y0,
            end: 1.0,
            exact: decay_exact,
            tolerances: &[1e-4, 1e-6, 1e-8],
        },
        Problem {
            name: "mixture 256",
            system: Box::new(Mixture::new()),
            y0: mixture_y0,
            end: 1.0,
            exact: mixture_exact,
            tolerances: &[1e-4, 1e-6, 1e-8],
        },
        Problem {
            name: "relaxation",
            system: Box::new(Relaxation),
            y0: Array2::zeros((1, 1)),
            end: 2.0,
            exact: Array2::from_elem((1, 1), relaxation_exact(2.0)),
            tolerances: &[1e-3, 1e-4, 1e-6],
        },
        Problem {
            name: "arenstorf",
            system: Box::new(Arenstorf),
            exact: arenstorf_y0.clone(),
            y0: arenstorf_y0,
            end: ARENSTORF_PERIOD,
            tolerances: &[1e-6, 1e-8, 1e-10],
        },
    ]
}

/// Evaluations and achieved error (max abs) of I and PI on every problem,
/// method and tolerance, with the totals the issue asks about.
fn compare_controllers() {
    println!("\nstep-size controllers: I vs PI (nfe, max abs error at the end)");
    println!(
        "{:<12} {:<7} {:>7} {:>6} {:>4} {:>10} {:>6} {:>4} {:>10} {:>9} {:>9}",
        "problem",
        "method",
        "tol",
        "nfe I",
        "rej",
        "err I",
        "nfe PI",
        "rej",
        "err PI",
        "nfe PI/I",
        "err PI/I"
    );
    let mut total = [0usize; 2];
    let mut log_err_ratio = 0.0;
    let mut cases = 0usize;
    let mut per_method: Vec<(Method, usize, usize)> = Vec::new();
    for mut problem in problems() {
        let interval = Interval::Common {
            start: 0.0,
            end: problem.end,
        };
        for method in [Method::Bosh3, Method::Dopri5, Method::Tsit5] {
            for &tol in problem.tolerances {
                let mut results = [(0usize, 0usize, 0.0f64); 2];
                for (slot, controller) in [Controller::I, Controller::PI].into_iter().enumerate() {
                    let config = SolverConfig::adaptive_with(
                        method,
                        AdaptiveOptions {
                            rtol: tol,
                            atol: tol,
                            controller,
                            // The shared step the comparison was first run
                            // with, so its numbers stay reproducible.
                            norm: ErrorNorm::PerSample,
                            ..AdaptiveOptions::default()
                        },
                    );
                    let sol = solve(
                        problem.system.as_mut(),
                        problem.y0.view(),
                        &config,
                        &interval,
                        &[],
                    )
                    .unwrap();
                    let err = (&sol.y - &problem.exact)
                        .iter()
                        .fold(0.0f64, |m, v| m.max(v.abs()));
                    results[slot] = (sol.stats.nfe, sol.stats.rejected, err);
                }
                let [(nfe_i, rej_i, err_i), (nfe_pi, rej_pi, err_pi)] = results;
                println!(
                    "{:<12} {:<7} {:>7.0e} {:>6} {:>4} {:>10.3e} {:>6} {:>4} {:>10.3e} {:>9.3} {:>9.3}",
                    problem.name,
                    method.name(),
                    tol,
                    nfe_i,
                    rej_i,
                    err_i,
                    nfe_pi,
                    rej_pi,
                    err_pi,
                    nfe_pi as f64 / nfe_i as f64,
                    err_pi / err_i
                );
                total[0] += nfe_i;
                total[1] += nfe_pi;
                log_err_ratio += (err_pi / err_i).ln();
                cases += 1;
                match per_method.iter_mut().find(|(m, _, _)| *m == method) {
                    Some(entry) => {
                        entry.1 += nfe_i;
                        entry.2 += nfe_pi;
                    }
                    None => per_method.push((method, nfe_i, nfe_pi)),
                }
            }
        }
    }
    for (method, nfe_i, nfe_pi) in per_method {
        println!(
            "{method}: total nfe I {nfe_i}, PI {nfe_pi} (PI/I {:.3})",
            nfe_pi as f64 / nfe_i as f64
        );
    }
    println!(
        "all: total nfe I {}, PI {} (PI/I {:.3}); geometric mean error ratio PI/I {:.3} over {cases} cases",
        total[0],
        total[1],
        total[1] as f64 / total[0] as f64,
        (log_err_ratio / cases as f64).exp()
    );
}

/// Independent steps against the shared modes on every problem, method and
/// tolerance, and on the 4096-sample mixture of the overhead table: batched
/// calls, useful row evaluations (the sum over samples of the calls that
/// advanced them; every row for a shared step), all rows evaluated
/// (calls × batch), rejections (summed over samples for independent steps),
/// max abs error and median time of five solves.
fn compare_step_modes() {
    println!("\nadaptive step modes: independent per sample vs one shared step");
    println!(
        "{:<13} {:<7} {:>6} {:<11} {:>6} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "problem", "method", "tol", "mode", "calls", "useful", "rows", "rej", "max err", "time us"
    );
    let modes = [
        ("independent", ErrorNorm::Independent),
        ("per-sample", ErrorNorm::PerSample),
        ("batch", ErrorNorm::Batch),
    ];
    let mut cases = problems();
    let big_y0 = Array2::from_shape_fn((BATCH, 2), |(i, j)| {
        let a = i as f64 * 0.618_033_988_75;
        if j == 0 {
            (a * 7.0).sin() * 1.5
        } else {
            (a * 3.0).cos() * 1.5
        }
    });
    let big_reference = solve(
        &mut Mixture::new(),
        big_y0.view(),
        &SolverConfig::adaptive_with(
            Method::Dopri5,
            AdaptiveOptions {
                rtol: 1e-13,
                atol: 1e-13,
                ..AdaptiveOptions::default()
            },
        ),
        &Interval::Common {
            start: 0.0,
            end: 1.0,
        },
        &[],
    )
    .unwrap()
    .y;
    cases.push(Problem {
        name: "mixture 4096",
        system: Box::new(Mixture::new()),
        y0: big_y0,
        end: 1.0,
        exact: big_reference,
        tolerances: &[1e-5, 1e-8],
    });
    // Totals per mode: calls, useful rows, all rows, time.
    let mut totals = [(0usize, 0usize, 0usize, 0.0f64); 3];
    for mut problem in cases {
        let interval = Interval::Common {
            start: 0.0,
            end: problem.end,
        };
        let batch = problem.y0.nrows();
        for method in [Method::Bosh3, Method::Dopri5, Method::Tsit5] {
            for &tol in problem.tolerances {
                for (slot, (mode, norm)) in modes.iter().enumerate() {
                    let config = with_norm(method, tol, *norm);
                    let mut times = Vec::new();
                    let mut last = None;
                    for _ in 0..5 {
                        let start = Instant::now();
                        let sol = solve(
                            problem.system.as_mut(),
                            problem.y0.view(),
                            &config,
                            &interval,
                            &[],
                        )
                        .unwrap();
                        times.push(start.elapsed().as_secs_f64());
                        last = Some(sol);
                    }
                    let sol = last.unwrap();
                    let useful: usize = sol.samples.iter().map(|p| p.evals).sum();
                    let rows = sol.stats.nfe * batch;
                    let err = (&sol.y - &problem.exact)
                        .iter()
                        .fold(0.0f64, |m, v| m.max(v.abs()));
                    let time = median(times);
                    println!(
                        "{:<13} {:<7} {:>6.0e} {:<11} {:>6} {:>9} {:>9} {:>7} {:>10.3e} {:>10.1}",
                        problem.name,
                        method.name(),
                        tol,
                        mode,
                        sol.stats.nfe,
                        useful,
                        rows,
                        sol.stats.rejected,
                        err,
                        time * 1e6
                    );
                    let total = &mut totals[slot];
                    total.0 += sol.stats.nfe;
                    total.1 += useful;
                    total.2 += rows;
                    total.3 += time;
                }
            }
        }
    }
    let base = totals[1];
    for ((mode, _), (calls, useful, rows, time)) in modes.iter().zip(totals) {
        println!(
            "{mode}: calls {calls} ({:.3} of per-sample), useful rows {useful} ({:.3}), \
             rows evaluated {rows} ({:.3}), time {:.1} ms ({:.3})",
            calls as f64 / base.0 as f64,
            useful as f64 / base.1 as f64,
            rows as f64 / base.2 as f64,
            time * 1e3,
            time / base.3
        );
    }
}
