//! Solver overhead benchmark.
//!
//! For two cheap analytic fields at batch 4096 in 2-D it measures the bare
//! right-hand-side time and, per method, the solve time per evaluation; the
//! ratio (solve time per NFE) / (bare rhs time) is the solver's overhead
//! factor (1 would mean stage arithmetic, copies and step control are free).
//! The fields are far cheaper than a network, so this is a worst case.
//! Medians of repeated runs; nothing is asserted.

use std::hint::black_box;
use std::time::Instant;

use fmrt::solver::{solve, Interval, Method, OdeSystem, SolverConfig, Steps};
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
