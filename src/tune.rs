//! Work-precision tuning: which fixed-step solver and grid is most accurate
//! for a model at a given number of network calls.
//!
//! [`tune`] draws a few hundred noise states from a [`Sampler`], integrates
//! them once with a tight adaptive reference (by default dopri5 with
//! independent per-sample steps, rtol = atol = 1e-7) and then with every
//! candidate: each fixed-step method × each grid × each call budget, from
//! the same noise. Each candidate's error is measured against the
//! reference, per sample, and summarised over the samples; the
//! [`TuneTable`] holds one [`TuneRow`] per candidate that ran, the
//! candidates that were skipped with their reasons, and
//! [`TuneTable::best`] picks the most accurate one for a budget.
//!
//! **Calls.** A budget is a number of batched network evaluations (NFE, as
//! [`Stats::nfe`](crate::solver::Stats::nfe) counts them: one call
//! evaluates every sample once). For each method the step count is the
//! largest whose solve costs at most the budget ([`steps_within`]):
//!
//! | method | calls for n steps |
//! |---|---|
//! | Runge–Kutta with s stages (euler 1, midpoint and heun 2, rk4 4) | s·n |
//! | first-same-as-last pairs (bosh3 4, dopri5 7, tsit5 7 stages) | 1 + (s − 1)·n (the last stage of a step is the first of the next) |
//! | ab2, ab3, dpmpp2m, unipc | n |
//! | pec2 | n + 1 |
//!
//! The adaptive pairs (bosh3, dopri5, tsit5) are candidates too, on fixed
//! steps with their main weights: that is how they run on a grid. A row
//! reports the NFE measured from the solve, which never exceeds its
//! budget; a budget below one step of a method skips it.
//!
//! **Error.** The error of sample i is the root mean square over its
//! components of x_i − x_ref,i (so it does not grow with the state's size);
//! a row gives the median, the 99th percentile (nearest rank: the
//! ⌈0.99·N⌉-th smallest) and the maximum over the N samples.
//!
//! **Skipped candidates.** A candidate a method refuses, a grid that does
//! not apply (the `edm` grid without the field's schedule; a grid that is
//! not strictly increasing at that step count), the flow schedulers
//! `dpmpp2m` and `unipc` on a schedule known not to be the straight path,
//! or a solve that fails (a non-finite state) is listed in
//! [`TuneTable::skipped`] with the reason, not an error. Errors of the
//! field itself (a model that fails to run) and of the reference end the
//! tuning.
//!
//! **Seconds** are the wall-clock time of each candidate's solve alone
//! (not the error measurement), on whatever the field runs on.

use std::sync::Arc;
use std::time::Instant;

use ndarray::ArrayD;

use crate::error::{ErrorKind, Report};
use crate::grid::{steps_for, EdmGrid, MAX_EXPLICIT_TIMES};
use crate::sampler::{Sampler, TimeSpan};
use crate::scheduler::Schedule;
use crate::solver::{AdaptiveOptions, Method, MethodKind, SolverConfig, StatePrecision, Steps};
use crate::{Error, Result};

/// The call budgets `fmrt tune` measures by default.
pub const DEFAULT_BUDGETS: [usize; 5] = [8, 12, 16, 24, 32];

/// The number of samples measured by default.
pub const DEFAULT_SAMPLES: usize = 256;

/// The largest call budget accepted (the longest grid a fixed-step run
/// takes, [`MAX_EXPLICIT_TIMES`]).
pub const MAX_BUDGET: usize = MAX_EXPLICIT_TIMES;

/// The shifts μ of the `shift` grid among the default candidates.
pub const DEFAULT_SHIFTS: [f64; 3] = [2.0, 3.0, 5.0];

/// A time grid by name with its params: a built-in `.fm` grid (`uniform`,
/// `shift`, `sway`, `cosine`), a `.fm` file, `edm` or `diffusers-flow`,
/// resolved as the command line's `--grid` and `--grid-param` are.
#[derive(Clone, Debug, PartialEq)]
pub struct GridSpec {
    /// The grid's name (or the path of a `.fm` grid file).
    pub name: String,
    /// Param overrides, e.g. `[("mu", 3.0)]` for the `shift` grid.
    pub params: Vec<(String, f64)>,
}

impl GridSpec {
    /// The grid `name` with the param overrides `params`.
    pub fn new(name: &str, params: &[(&str, f64)]) -> Self {
        Self {
            name: name.to_string(),
            params: params.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// The default candidates: `uniform`, `shift` with μ = 2, 3 and 5,
    /// `cosine`, `sway` (c = −1), `edm` (σ_min = 0.002, σ_max = 80, ρ = 7;
    /// needs the schedule), and `diffusers-flow` with shift 1 and 3 (the list
    /// diffusers builds for the method: UniPC's for `unipc`, DPM-Solver++'s
    /// for every other method).
    pub fn defaults() -> Vec<GridSpec> {
        let mut grids = vec![GridSpec::new("uniform", &[])];
        grids.extend(
            DEFAULT_SHIFTS
                .iter()
                .map(|&mu| GridSpec::new("shift", &[("mu", mu)])),
        );
        grids.push(GridSpec::new("cosine", &[]));
        grids.push(GridSpec::new("sway", &[]));
        grids.push(GridSpec::new("edm", &[]));
        for shift in [1.0, 3.0] {
            grids.push(GridSpec::new(
                crate::grid::DIFFUSERS_FLOW,
                &[("shift", shift)],
            ));
        }
        grids
    }

    /// The grid's name with its params, e.g. `shift mu=3` or `uniform`.
    pub fn label(&self) -> String {
        let mut text = self.name.clone();
        for (name, value) in &self.params {
            text.push_str(&format!(" {name}={value}"));
        }
        text
    }

    /// Checks that the grid exists and takes its params (a `.fm` grid
    /// loads, `edm` and `diffusers-flow` accept the values), whatever the
    /// method and step count: [`tune`] refuses a grid that fails this
    /// rather than skipping it.
    pub fn check(&self) -> Result<()> {
        match self.name.as_str() {
            "edm" => EdmGrid::with_params(&self.params).map(drop),
            crate::grid::DIFFUSERS_FLOW => {
                crate::grid::DiffusersFlowGrid::with_params(&self.params).map(drop)
            }
            _ => crate::grid::TimeGrid::open(&self.name, &self.params).map(drop),
        }
    }

    /// The fixed steps of this grid with `steps` steps for `method`;
    /// `schedule` is the schedule of the field's time, which `edm` needs.
    pub fn steps(
        &self,
        method: Method,
        steps: usize,
        schedule: Option<&Arc<dyn Schedule>>,
    ) -> Result<Steps> {
        if self.name == "edm" {
            let schedule = schedule.ok_or_else(|| {
                Error::InvalidArgument(
                    "the edm grid follows the field's schedule (its SNR), which is unknown: \
                     give the schedule (TuneOptions::schedule; --scheduler on the command line)"
                        .to_string(),
                )
            })?;
            let edm = EdmGrid::with_params(&self.params)?;
            return Ok(Steps::Grid(edm.points(schedule.as_ref(), steps)?));
        }
        steps_for(&self.name, &self.params, method, steps)
    }
}

impl std::fmt::Display for GridSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// What [`tune`] measures, and against what.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// The call budgets (each at least 1 and at most [`MAX_BUDGET`]; repeats
    /// are measured once). Default [`DEFAULT_BUDGETS`].
    pub budgets: Vec<usize>,
    /// The number of samples N (at least 1). Default [`DEFAULT_SAMPLES`].
    pub samples: usize,
    /// The seed of the noise (samples 0..N of the run it defines).
    pub seed: u64,
    /// The candidate methods (default: every method, [`Method::ALL`]; each
    /// runs on fixed steps).
    pub methods: Vec<Method>,
    /// The candidate grids (default [`GridSpec::defaults`]).
    pub grids: Vec<GridSpec>,
    /// The reference solve (default: dopri5 with independent per-sample
    /// adaptive steps, rtol = atol = 1e-7, see [`reference_solver`]).
    pub reference: SolverConfig,
    /// The schedule of the field's time, if known: the `edm` grid needs it,
    /// and `dpmpp2m` and `unipc` are skipped when it is not the straight
    /// path α = t, σ = 1 − t (with no schedule they run, assuming it).
    pub schedule: Option<Arc<dyn Schedule>>,
}

/// The default reference: dopri5 with independent per-sample adaptive
/// steps at rtol = atol = `tolerance`.
pub fn reference_solver(tolerance: f64) -> SolverConfig {
    SolverConfig::adaptive_with(
        Method::Dopri5,
        AdaptiveOptions {
            rtol: tolerance,
            atol: tolerance,
            ..AdaptiveOptions::default()
        },
    )
}

/// The default reference tolerance (rtol = atol).
pub const DEFAULT_REFERENCE_TOLERANCE: f64 = 1e-7;

impl Default for TuneOptions {
    fn default() -> Self {
        Self {
            budgets: DEFAULT_BUDGETS.to_vec(),
            samples: DEFAULT_SAMPLES,
            seed: 0,
            methods: Method::ALL.to_vec(),
            grids: GridSpec::defaults(),
            reference: reference_solver(DEFAULT_REFERENCE_TOLERANCE),
            schedule: None,
        }
    }
}

/// One measured candidate: a method on a grid within a call budget.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneRow {
    /// The method (on fixed steps).
    pub method: Method,
    /// The grid.
    pub grid: GridSpec,
    /// The call budget this candidate was sized for.
    pub budget: usize,
    /// The step count chosen for the budget.
    pub steps: usize,
    /// The network calls the solve made ([`Stats::nfe`](crate::solver::Stats::nfe)),
    /// at most `budget`.
    pub calls: usize,
    /// The median over the samples of the per-sample RMS error.
    pub median: f64,
    /// The 99th percentile (nearest rank) of the per-sample RMS error.
    pub p99: f64,
    /// The largest per-sample RMS error.
    pub max: f64,
    /// Wall-clock seconds of the solve.
    pub seconds: f64,
}

/// A candidate that did not run, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// The method.
    pub method: Method,
    /// The grid.
    pub grid: GridSpec,
    /// The call budget.
    pub budget: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// The reference solve of a tuning run.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceRun {
    /// Its solver configuration.
    pub solver: SolverConfig,
    /// The network calls it made.
    pub calls: usize,
    /// Wall-clock seconds of the solve.
    pub seconds: f64,
}

/// The result of [`tune`].
#[derive(Clone, Debug)]
pub struct TuneTable {
    /// The budgets measured, increasing, without repeats.
    pub budgets: Vec<usize>,
    /// The number of samples each error summarises.
    pub samples: usize,
    /// Every candidate that ran, by budget, then by median error (then
    /// calls, then the candidates' order).
    pub rows: Vec<TuneRow>,
    /// Every candidate that did not run, with its reason.
    pub skipped: Vec<Skipped>,
    /// The reference solve.
    pub reference: ReferenceRun,
}

impl TuneTable {
    /// The rows measured for `budget`, most accurate first.
    pub fn rows_for(&self, budget: usize) -> impl Iterator<Item = &TuneRow> {
        self.rows.iter().filter(move |r| r.budget == budget)
    }

    /// The most accurate candidate for `budget`: the smallest median error
    /// (ties: fewer calls, then the first in the candidates' order, methods
    /// before grids; never the timing, so the pick is reproducible); `None`
    /// when nothing ran for that budget.
    pub fn best(&self, budget: usize) -> Option<&TuneRow> {
        self.rows_for(budget)
            .filter(|r| r.median.is_finite())
            .min_by(|a, b| rank(a, b))
    }

    /// The row of `method` on `grid` for `budget`, if it ran.
    pub fn row(&self, method: Method, grid: &GridSpec, budget: usize) -> Option<&TuneRow> {
        self.rows_for(budget)
            .find(|r| r.method == method && &r.grid == grid)
    }
}

/// Orders rows by median error, then calls (a stable sort keeps the
/// candidates' order among equals).
fn rank(a: &TuneRow, b: &TuneRow) -> std::cmp::Ordering {
    a.median.total_cmp(&b.median).then(a.calls.cmp(&b.calls))
}

/// The network calls `method` makes for `steps` fixed steps (see the
/// module's table).
pub fn calls(method: Method, steps: usize) -> usize {
    match method.tableau() {
        Some(tableau) if tableau.is_fsal() && steps > 0 => 1 + (tableau.stages() - 1) * steps,
        Some(tableau) => tableau.stages() * steps,
        None if method == Method::Pec2 => steps + 1,
        None => steps,
    }
}

/// The most fixed steps of `method` whose solve makes at most `budget`
/// calls, or `None` when not even one step fits.
pub fn steps_within(method: Method, budget: usize) -> Option<usize> {
    let steps = match method.tableau() {
        Some(tableau) if tableau.is_fsal() => budget.saturating_sub(1) / (tableau.stages() - 1),
        Some(tableau) => budget / tableau.stages(),
        None if method == Method::Pec2 => budget.saturating_sub(1),
        None => budget,
    };
    (steps >= 1).then_some(steps)
}

/// The per-sample RMS error of `x` against `reference` (both `[N, ...]`):
/// sample i's root mean square over its components of the difference.
pub fn sample_errors(x: &ArrayD<f32>, reference: &ArrayD<f32>) -> Result<Vec<f64>> {
    if x.shape() != reference.shape() || x.ndim() == 0 {
        return Err(Error::Shape {
            tensor: "the candidate's samples".to_string(),
            expected: format!("{:?} (the reference's shape)", reference.shape()),
            actual: x.shape().to_vec(),
        });
    }
    let n = x.shape()[0];
    let (Some(a), Some(b)) = (x.as_slice(), reference.as_slice()) else {
        return Err(Error::internal("tuning: samples are not contiguous"));
    };
    let dim = a.len().checked_div(n).unwrap_or(0).max(1);
    Ok(a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(a, b)| {
            let sum: f64 = a
                .iter()
                .zip(b)
                .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
                .sum();
            let rms = (sum / dim as f64).sqrt();
            if rms.is_finite() {
                rms
            } else {
                f64::INFINITY
            }
        })
        .collect())
}

/// The median, 99th percentile (nearest rank) and maximum of `errors`
/// (NaN for none).
pub fn summarise(errors: &[f64]) -> (f64, f64, f64) {
    if errors.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut sorted = errors.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    };
    let rank = (0.99 * n as f64).ceil() as usize;
    let p99 = sorted[rank.clamp(1, n) - 1];
    (median, p99, sorted[n - 1])
}

/// Whether `schedule` is the straight path α = t, σ = 1 − t.
fn is_straight(schedule: &dyn Schedule) -> bool {
    (0..=10).all(|k| {
        let t = k as f64 / 10.0;
        let c = schedule.coefficients(t);
        (c.alpha - t).abs() < 1e-9 && (c.sigma - (1.0 - t)).abs() < 1e-9
    })
}

/// Checks the options (budgets, samples, methods and grids), returning the
/// budgets sorted without repeats.
fn checked_budgets(options: &TuneOptions) -> Result<Vec<usize>> {
    if options.budgets.is_empty() {
        return Err(Error::InvalidArgument(
            "tuning needs at least one call budget".to_string(),
        ));
    }
    if let Some(&b) = options.budgets.iter().find(|&&b| b == 0 || b > MAX_BUDGET) {
        return Err(Error::InvalidArgument(format!(
            "a call budget must be from 1 to {MAX_BUDGET}, got {b}"
        )));
    }
    if options.samples == 0 {
        return Err(Error::InvalidArgument(
            "tuning needs at least one sample".to_string(),
        ));
    }
    if options.methods.is_empty() || options.grids.is_empty() {
        return Err(Error::InvalidArgument(
            "tuning needs at least one method and one grid".to_string(),
        ));
    }
    for grid in &options.grids {
        grid.check()?;
    }
    let mut budgets = options.budgets.clone();
    budgets.sort_unstable();
    budgets.dedup();
    Ok(budgets)
}

/// Measures every candidate (method × grid × budget of `options`) on
/// `sampler`'s field, extras, state shape, noise scale and state precision
/// against the reference from the same noise; see the module documentation.
/// The reference always runs with an f64 state; with an f32 sampler
/// ([`Sampler::with_state_precision`]) the candidates that cannot step in
/// f32 (the multistep methods) are skipped, naming the precision.
///
/// Errors: [`Error::InvalidArgument`] for bad options (no budget, a budget
/// of 0 or above [`MAX_BUDGET`], no samples, no method or grid) or a
/// stochastic sampler; a grid that does not exist or refuses its params
/// ([`GridSpec::check`]; [`Error::Scheduler`] for a `.fm` grid); the
/// reference's errors; errors of the field. A candidate that cannot run is
/// skipped, not an error.
pub fn tune(sampler: &Sampler, options: &TuneOptions) -> Result<TuneTable> {
    let budgets = checked_budgets(options)?;
    let x0 = sampler.draw_noise(options.samples, options.seed)?;
    // The reference and one candidate's samples, in f32, beside the solver's
    // own (checked) working memory.
    crate::error::check_allocation(
        &[x0.len(), 2],
        std::mem::size_of::<f32>(),
        "tuning's samples",
    )?;
    // Candidates run in the sampler's state precision, so the table measures
    // what it runs; the reference always in f64.
    let run = |solver: &SolverConfig, precision: StatePrecision| {
        let started = Instant::now();
        let samples = sampler
            .clone()
            .with_solver(solver.clone())
            .with_state_precision(precision)
            .integrate(x0.view(), &TimeSpan::Full, &[])?;
        Ok::<_, Error>((samples, started.elapsed().as_secs_f64()))
    };
    let (reference, seconds) =
        run(&options.reference, StatePrecision::F64).map_err(in_reference)?;
    let reference_run = ReferenceRun {
        solver: options.reference.clone(),
        calls: reference.stats.nfe,
        seconds,
    };

    let straight = options.schedule.as_deref().map(is_straight);
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for &budget in &budgets {
        for &method in &options.methods {
            for grid in &options.grids {
                let skip = |reason: String| Skipped {
                    method,
                    grid: grid.clone(),
                    budget,
                    reason,
                };
                let Some(steps) = steps_within(method, budget) else {
                    skipped.push(skip(format!(
                        "{method} needs {} calls for one step",
                        calls(method, 1)
                    )));
                    continue;
                };
                if method.kind() == MethodKind::FlowMultistep && straight == Some(false) {
                    skipped.push(skip(format!(
                        "{method} assumes the straight path α = t, σ = 1 − t, and the field's \
                         schedule is another"
                    )));
                    continue;
                }
                let placed = match grid.steps(method, steps, options.schedule.as_ref()) {
                    Ok(placed) => placed,
                    Err(e) if skippable(&e) => {
                        skipped.push(skip(Report(&e).to_string()));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let solver = SolverConfig::fixed(method, placed);
                let (samples, seconds) = match run(&solver, sampler.state_precision()) {
                    Ok(done) => done,
                    Err(e) if skippable(&e) => {
                        skipped.push(skip(Report(&e).to_string()));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if samples.stats.nfe > budget {
                    return Err(Error::internal(format!(
                        "tuning: {method} with {steps} steps made {} calls, over its budget \
                         of {budget}",
                        samples.stats.nfe
                    )));
                }
                let errors = sample_errors(&samples.x, &reference.x)?;
                let (median, p99, max) = summarise(&errors);
                rows.push(TuneRow {
                    method,
                    grid: grid.clone(),
                    budget,
                    steps,
                    calls: samples.stats.nfe,
                    median,
                    p99,
                    max,
                    seconds,
                });
            }
        }
    }
    rows.sort_by(|a, b| a.budget.cmp(&b.budget).then(rank(a, b)));
    Ok(TuneTable {
        budgets,
        samples: options.samples,
        rows,
        skipped,
        reference: reference_run,
    })
}

/// Whether a candidate's error means "this candidate does not apply" (a
/// refused configuration, a grid that does not resolve, a solve that
/// diverged) rather than a failure of the field.
fn skippable(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::InvalidArgument | ErrorKind::Scheduler | ErrorKind::Solver | ErrorKind::Singular
    )
}

/// `error` of the reference solve, saying so where its kind allows.
fn in_reference(error: Error) -> Error {
    match error {
        Error::InvalidArgument(message) => {
            Error::InvalidArgument(format!("the reference solve: {message}"))
        }
        Error::NonFinite { which, location } => Error::NonFinite {
            which: format!("{which} of the reference solve"),
            location,
        },
        other => other,
    }
}
