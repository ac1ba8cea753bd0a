//! Log-likelihoods of flow-matching models: the augmented reverse-time solve.
//!
//! For a sample x taken at time t_start (1 for data), the state (x, L) is
//! integrated from t_start back to 0 with
//! dx/dt = u(x, t), dL/dt = div u(x, t), L(t_start) = 0,
//! and then log p_{t_start}(x) = log p0(x0) + L(0), with x0 = x(0) and p0 the
//! source density (standard normal unless configured). L(0) = −∫₀^{t_start} div u dt.
//!
//! Any [`SolverConfig`] works, adaptive ones included: L is part of the state,
//! so the step control measures its error too, with its own norm beside x's
//! (the mixed norm, [`Likelihood::with_mixed_norm`]) so that its tolerance
//! does not dilute as one of D + 1 components. The divergence comes from the
//! field's exact divergence, basis-direction or Hutchinson Jacobian–vector
//! products, or finite differences ([`Divergence`]). A field with stacked
//! Jacobian–vector products
//! ([`VelocityField::velocity_and_jvps`])
//! gets the velocity and every direction's product of a stage from one call.
//!
//! [`Likelihood::most_probable_time`] searches, per sample, the time t at
//! which the sample is most likely under p_t.
//!
//! ```
//! use std::sync::Arc;
//! use fmrt::field::analytic::GaussianMixture;
//! use fmrt::likelihood::{Divergence, Likelihood};
//! use fmrt::scheduler::Scheduler;
//! use fmrt::solver::{Method, SolverConfig};
//!
//! let ot = Arc::new(Scheduler::builtin("ot", &[])?);
//! let field = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot)?);
//! let x = field.sample_data(4, 1);
//! let lik = Likelihood::new(field.clone(), SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5));
//! let exact = lik.log_likelihood(x.view().into_dyn())?;
//! let oracle = field.log_density(x.view(), &[1.0])?;
//! assert!((exact.log_p[0] - oracle[0]).abs() < 1e-3);
//! // Hutchinson's estimator: 4 Rademacher probes per sample, seeded.
//! let noisy = lik.with_divergence(Divergence::hutchinson(4)).with_seed(7);
//! assert_eq!(noisy.log_likelihood(x.view().into_dyn())?.log_p.len(), 4);
//! # Ok::<(), fmrt::Error>(())
//! ```

mod divergence;
mod forward;
mod stacked;
mod time;

use std::sync::Arc;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, IxDyn};

pub use divergence::{Directions, Divergence, FieldCalls, ProbeDistribution};
pub use forward::SamplesWithLogProb;
pub use time::{MostProbableTime, TimeSearch};

use crate::field::{Derivatives, Extras, VelocityField};
use crate::solver::{self, Interval, OdeSystem, SampleStats, SolverConfig, Stats, Steps};
use crate::source::{Source, StandardNormal};
use crate::{Error, Result};
use divergence::{draw_probes, ChunkLimits, ProbeEstimator};
use stacked::StackedEstimator;

/// Default bound on the rows of one derivative call.
const DEFAULT_MAX_ROWS: usize = 65_536;
/// Default bound on the f32 tensors of one derivative call (256 MiB).
const DEFAULT_MAX_BYTES: usize = 256 << 20;

/// Computes log-likelihoods of samples under a velocity field by integrating
/// the augmented state (x, L) from the sample's time back to noise.
///
/// Configured with builder methods; the defaults are the exact divergence,
/// the standard normal source, no extras and seed 0.
#[derive(Clone)]
pub struct Likelihood {
    field: Arc<dyn VelocityField>,
    solver: SolverConfig,
    source: Arc<dyn Source>,
    extras: Extras,
    divergence: Divergence,
    seed: u64,
    /// The run index of the first row (see `with_first_index`).
    first_index: u64,
    limits: ChunkLimits,
    /// Whether log p's columns have their own error norm.
    mixed_norm: bool,
    /// Whether failed samples stop alone.
    partial: bool,
}

/// The log-likelihoods of a batch and what was computed on the way.
#[derive(Clone, Debug)]
pub struct LogLikelihood {
    /// log p_{t_start}(x) per sample, in nats.
    pub log_p: Vec<f64>,
    /// The standard error of each `log_p` when the divergence is an
    /// estimate (Hutchinson's, or finite differences along Hutchinson
    /// probes), `None` when it is exact (or deterministic). Each of the K
    /// probes of a sample has its own integral (K log-density columns of
    /// the augmented state, no extra field calls), `log_p` uses their mean,
    /// and the standard error is their sample standard deviation over √K.
    /// With K = 1 there is no spread to measure, and every entry is NaN:
    /// still an estimate, but of unknown error. It covers the probes'
    /// randomness only, not the solver's error.
    pub log_p_std_error: Option<Vec<f64>>,
    /// The states reached at t = 0, shaped like the input.
    pub x0: ArrayD<f32>,
    /// log p0(x0) per sample (the source's log-density).
    pub log_p0: Vec<f64>,
    /// ∫₀^{t_start} div u(x_t, t) dt per sample, so that
    /// log p = log p0(x0) − divergence_integral.
    pub divergence_integral: Vec<f64>,
    /// Bits per dimension, −log p / (D ln 2), with D the elements of one sample.
    pub bits_per_dim: Vec<f64>,
    /// The start time of each sample.
    pub t_start: Vec<f64>,
    /// Solver counters (NFE counts augmented right-hand-side evaluations).
    pub stats: Stats,
    /// Each sample's steps, rejections, evaluations and status (see
    /// [`SampleStats`]).
    pub samples: Vec<SampleStats>,
    /// Field calls: velocity, Jacobian–vector products, divergences.
    pub calls: FieldCalls,
}

/// The raw outcome of one augmented solve.
struct Solved {
    /// `[N, D + C]`: x(0) and the C log-density columns L(0).
    y: Array2<f64>,
    stats: Stats,
    samples: Vec<SampleStats>,
    calls: FieldCalls,
}

/// A grid's first time within this of 0 counts as 0 (as the solvers snap).
const GRID_SNAP: f64 = 1e-12;

impl Likelihood {
    /// Log-likelihoods under `field`, integrated with `solver`, with the exact
    /// divergence and a standard normal source.
    pub fn new(field: Arc<dyn VelocityField>, solver: SolverConfig) -> Self {
        let source = Arc::new(StandardNormal::for_shape(field.state_shape()));
        Self {
            field,
            solver,
            source,
            extras: Extras::new(),
            divergence: Divergence::Exact,
            seed: 0,
            first_index: 0,
            limits: ChunkLimits {
                max_rows: DEFAULT_MAX_ROWS,
                max_bytes: DEFAULT_MAX_BYTES,
            },
            mixed_norm: true,
            partial: false,
        }
    }

    /// Whether adaptive steps measure the log-density column with its own
    /// error norm (default: yes).
    ///
    /// The augmented state of a sample is (x, L), D + 1 values (D + K with
    /// K Hutchinson probes, one L column each). With the mixed norm the
    /// error of a step is the larger of the RMS over x's D scaled errors
    /// and L's own (the RMS over the K probe columns), as torchdiffeq's
    /// mixed norm measures the tuple state (x, log p) of PyTorch's
    /// `flow_matching` likelihoods: per sample with
    /// [`ErrorNorm::Independent`](crate::solver::ErrorNorm::Independent)
    /// and `PerSample`, and with `Batch` each group's RMS over the whole
    /// batch, then the larger, as torchdiffeq does. L meets `atol +
    /// rtol·|L|` whatever D is. Without it L is one of D + 1 components of
    /// one RMS, so its error may reach √(D + 1) times the tolerance, and its
    /// tolerance dilutes as D grows. Fixed steps are not affected. The
    /// setting exists for comparisons with the diluted norm (what fmrt did
    /// before); the command line and C always use the mixed norm.
    pub fn with_mixed_norm(mut self, mixed: bool) -> Self {
        self.mixed_norm = mixed;
        self
    }

    /// Whether a sample whose integration fails stops alone instead of
    /// failing the whole batch (default: no), as
    /// [`Sampler::allow_partial`](crate::sampler::Sampler::allow_partial)
    /// describes: with independent adaptive steps the others finish bit for
    /// bit as in a full run, and [`LogLikelihood::samples`] tells each
    /// one's status. A sample that did not reach t = 0 has no
    /// log-likelihood: its `log_p`, `log_p0`, `divergence_integral`,
    /// `bits_per_dim` (and standard error) are NaN, its `x0` the state
    /// where it stopped.
    pub fn allow_partial(mut self, allow: bool) -> Self {
        self.partial = allow;
        self
    }

    /// Whether failed samples stop alone (see [`Likelihood::allow_partial`]).
    pub fn partial(&self) -> bool {
        self.partial
    }

    /// Whether log p has its own error norm (see [`Likelihood::with_mixed_norm`]).
    pub fn mixed_norm(&self) -> bool {
        self.mixed_norm
    }

    /// Selects how the divergence is computed.
    pub fn with_divergence(mut self, divergence: Divergence) -> Self {
        self.divergence = divergence;
        self
    }

    /// Replaces the source distribution p0 whose log-density ends the solve.
    pub fn with_source(mut self, source: Arc<dyn Source>) -> Self {
        self.source = source;
        self
    }

    /// Scales the source: log p0 is that of N(0, s²·I), the distribution a
    /// sampler with the same noise scale draws from (see
    /// [`Sampler::with_noise_scale`](crate::sampler::Sampler::with_noise_scale)).
    /// Errors unless s is positive and finite.
    pub fn with_noise_scale(mut self, scale: f64) -> Result<Self> {
        self.source = Arc::new(StandardNormal::new().scaled(scale)?);
        Ok(self)
    }

    /// Conditioning inputs passed to the field with every call; each needs one
    /// row per sample of the next computation (or one row for all of them).
    pub fn with_extras(mut self, extras: Extras) -> Self {
        self.extras = extras;
        self
    }

    /// The seed of the Hutchinson probes (drawn once per solve).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The index of the first row of the next computations within a larger
    /// run (default 0): row i's Hutchinson probes are those of sample
    /// `first + i` of the run `seed` defines, so a run computed in chunks or
    /// shards draws the probes of the whole run.
    pub fn with_first_index(mut self, first: u64) -> Self {
        self.first_index = first;
        self
    }

    /// Replaces the solver configuration.
    pub fn with_solver(mut self, solver: SolverConfig) -> Self {
        self.solver = solver;
        self
    }

    /// Bounds the rows (batch entries) of one derivative call: Jacobian–vector
    /// product calls of B·P rows (P directions per sample), stacked calls of
    /// B samples with P directions each (B·P rows), and finite-difference
    /// velocity calls of 2·B·P rows are split so that none exceeds `max_rows`
    /// (at least one direction, or for stacked calls one sample, per call).
    /// Default 65 536.
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.limits.max_rows = max_rows;
        self
    }

    /// Bounds the memory of one derivative call: the f32 state-shaped tensors it
    /// reads and writes (x, v and J·v for a JVP call; x, its velocity and the
    /// P directions and products of a stacked call; the stacked x ± εv and
    /// their velocities for finite differences) stay under `max_bytes` (at
    /// least one direction, or one sample, per call). Default 256 MiB.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.limits.max_bytes = max_bytes;
        self
    }

    /// The field whose likelihood is computed.
    pub fn field(&self) -> &Arc<dyn VelocityField> {
        &self.field
    }

    /// The divergence mode.
    pub fn divergence(&self) -> &Divergence {
        &self.divergence
    }

    /// log p1(x) of data samples `x` (`[B, ...state_shape]`): the likelihood
    /// solve from t = 1.
    pub fn log_likelihood(&self, x: ArrayViewD<'_, f32>) -> Result<LogLikelihood> {
        self.log_likelihood_at(x, &[1.0])
    }

    /// log p_t(x) of samples `x` (`[B, ...state_shape]`) taken at the times
    /// `t_start` (one per sample, or one for all; each in [0, 1]).
    ///
    /// Errors: [`Error::Shape`] naming `x`, `t_start` or an extra;
    /// [`Error::InvalidArgument`] for times outside [0, 1] or invalid divergence
    /// parameters; [`Error::Unsupported`] for a field without Jacobian–vector
    /// products in a mode that needs them; solver and field errors are passed
    /// through.
    pub fn log_likelihood_at(
        &self,
        x: ArrayViewD<'_, f32>,
        t_start: &[f64],
    ) -> Result<LogLikelihood> {
        let (batch, dim, extras) = self.check_input(x.shape())?;
        let starts = expand_times("t_start", t_start, batch)?;
        self.check_mode()?;
        let probes = self.draw_probes(batch, dim)?;
        let y0 = state_rows(x.view(), batch, dim, self.log_p_columns())?;
        let solved = self.solve_rows(y0.view(), &x.shape()[1..], &starts, 0.0, &extras, probes)?;
        self.finish(solved, starts, x.shape())
    }

    /// Checks `x`'s shape and the extras; returns (B, D) and the extras for
    /// B samples.
    fn check_input(&self, shape: &[usize]) -> Result<(usize, usize, Extras)> {
        let fits = match self.field.state_shape() {
            Some(fixed) => shape.len() == fixed.len() + 1 && &shape[1..] == fixed,
            None => !shape.is_empty(),
        };
        if !fits {
            let expected = match self.field.state_shape() {
                Some(fixed) => {
                    let dims: Vec<String> = fixed.iter().map(|d| d.to_string()).collect();
                    format!("[B, {}]", dims.join(", "))
                }
                None => "[B, ...] (a batch axis first)".to_string(),
            };
            return Err(Error::Shape {
                tensor: "x".to_string(),
                expected,
                actual: shape.to_vec(),
            });
        }
        let state_shape = &shape[1..];
        let dim = crate::error::checked_product(state_shape, "the state size")?;
        if dim == 0 {
            return Err(Error::InvalidArgument(format!(
                "the field's state shape {state_shape:?} has no elements"
            )));
        }
        let extras = self.extras.for_batch(shape[0])?;
        Ok((shape[0], dim, extras))
    }

    /// Checks the divergence mode against the field's capabilities.
    fn check_mode(&self) -> Result<()> {
        self.divergence.check_available(self.field.as_ref())
    }

    /// The random probes of `n` samples, when the mode uses them.
    fn draw_probes(&self, n: usize, dim: usize) -> Result<Option<Vec<f32>>> {
        self.divergence
            .random_probes()
            .map(|(k, distribution)| {
                draw_probes(n, k, dim, distribution, self.seed, self.first_index)
            })
            .transpose()
    }

    /// The log-density columns of the augmented state: one per random probe
    /// (each probe's own integral, so that their spread gives the standard
    /// error of the estimate), one otherwise.
    fn log_p_columns(&self) -> usize {
        self.divergence.random_probes().map_or(1, |(k, _)| k.max(1))
    }

    /// Integrates the augmented states `[N, D + C]` (L = 0) from `starts` to
    /// `end` (0 for likelihoods, 1 for sampling with log-probabilities).
    fn solve_rows(
        &self,
        y0: ArrayView2<'_, f64>,
        state_shape: &[usize],
        starts: &[f64],
        end: f64,
        extras: &Extras,
        probes: Option<Vec<f32>>,
    ) -> Result<Solved> {
        let n = y0.nrows();
        if n == 0 {
            return Ok(Solved {
                y: y0.to_owned(),
                stats: Stats::default(),
                samples: Vec::new(),
                calls: FieldCalls::default(),
            });
        }
        // Finite differences need no derivatives: asking would derive an ONNX
        // model's tangent model for nothing.
        let offered = match self.divergence {
            Divergence::FiniteDifference { .. } => Derivatives::NONE,
            _ => self.field.derivatives(),
        };
        let estimator =
            match &self.divergence {
                Divergence::Exact if offered.divergence => Estimator::Exact,
                Divergence::Exact if offered.stacked_jvp => Estimator::Stacked(
                    StackedEstimator::new(None, n, state_shape, extras, self.limits)?,
                ),
                Divergence::Hutchinson { probes: k, .. } if offered.stacked_jvp => {
                    let values = probes.ok_or_else(|| {
                        Error::internal("random probes are missing for this solve")
                    })?;
                    Estimator::Stacked(StackedEstimator::new(
                        Some((*k, values)),
                        n,
                        state_shape,
                        extras,
                        self.limits,
                    )?)
                }
                _ => Estimator::Probes(ProbeEstimator::new(
                    &self.divergence,
                    probes,
                    n,
                    state_shape,
                    extras,
                    self.limits,
                )?),
            };
        let columns = y0
            .ncols()
            .saturating_sub(state_shape.iter().product::<usize>());
        let mut system = Augmented::new(
            self.field.as_ref(),
            extras,
            state_shape,
            n,
            columns,
            estimator,
        );
        if self.mixed_norm {
            system.groups = vec![system.dim];
        }
        let interval = Interval::PerSample {
            starts: starts.to_vec(),
            ends: vec![end; n],
        };
        let solver = self.solver_towards(end)?;
        let solution = if self.partial {
            solver::check_partial(&solver)?;
            solver::solve_partial(&mut system, y0, &solver, &interval, &[])?
        } else {
            solver::solve(&mut system, y0, &solver, &interval, &[])?
        };
        Ok(Solved {
            y: solution.y,
            stats: solution.stats,
            samples: solution.samples,
            calls: system.calls,
        })
    }

    /// The solver configuration of a solve towards `end`. A grid of fixed
    /// steps is given in the sampling direction, its normalised times from 0
    /// (noise) to 1 (data), as a sampler takes it; a solve down to t = 0
    /// walks the same times backwards (a full likelihood visits exactly the
    /// grid's times). A grid that starts after t = 0 (an explicit time list
    /// such as diffusers' DPM-Solver++ one) cannot end a likelihood at the
    /// source, and is refused.
    fn solver_towards(&self, end: f64) -> Result<std::borrow::Cow<'_, SolverConfig>> {
        use std::borrow::Cow;
        let Some(Steps::Grid(points)) = self.solver.steps() else {
            return Ok(Cow::Borrowed(&self.solver));
        };
        if end > 0.0 {
            return Ok(Cow::Borrowed(&self.solver));
        }
        match points.first() {
            Some(&first) if first > GRID_SNAP => Err(Error::InvalidArgument(format!(
                "the time grid starts at t = {first}, after 0; a likelihood integrates down \
                 to the source at t = 0, so its grid must start at 0"
            ))),
            _ => {
                let reversed = points.iter().rev().map(|&p| 1.0 - p).collect();
                Ok(Cow::Owned(SolverConfig::fixed(
                    self.solver.method,
                    Steps::Grid(reversed),
                )))
            }
        }
    }

    /// Turns a solve into per-sample results; `shape` is the input's shape.
    fn finish(&self, solved: Solved, starts: Vec<f64>, shape: &[usize]) -> Result<LogLikelihood> {
        let dim = crate::error::checked_product(&shape[1..], "the state size")?;
        let x0_64 = ArrayD::from_shape_vec(
            IxDyn(shape),
            solved
                .y
                .rows()
                .into_iter()
                .flat_map(|row| row.into_iter().take(dim).copied().collect::<Vec<_>>())
                .collect(),
        )
        .map_err(|e| Error::internal(format!("state layout: {e}")))?;
        let mut log_p0 = self.source.log_density_f64(x0_64.view())?;
        // L(0) = −∫ div u dt, per probe when there are several.
        let (mut divergence_integral, mut log_p_std_error) = self.integrals(&solved.y, dim, -1.0);
        // A sample that stopped early has no log-likelihood.
        for i in crate::sampler::unfinished(&solved.samples) {
            log_p0[i] = f64::NAN;
            divergence_integral[i] = f64::NAN;
            if let Some(errors) = log_p_std_error.as_mut() {
                errors[i] = f64::NAN;
            }
        }
        let log_p: Vec<f64> = log_p0
            .iter()
            .zip(&divergence_integral)
            .map(|(p0, int)| p0 - int)
            .collect();
        let per_bit = dim as f64 * std::f64::consts::LN_2;
        Ok(LogLikelihood {
            bits_per_dim: log_p.iter().map(|lp| -lp / per_bit).collect(),
            log_p,
            log_p_std_error,
            x0: x0_64.mapv(|v| v as f32),
            log_p0,
            divergence_integral,
            t_start: starts,
            stats: solved.stats,
            samples: solved.samples,
            calls: solved.calls,
        })
    }

    /// The divergence integral of every row of a solved augmented state
    /// (`[N, D + C]`, its log-density columns times `sign` being the
    /// integrals: −1 for a solve down to 0, 1 for one up to 1), with the
    /// standard error of the estimate when the divergence is stochastic.
    ///
    /// With C = K random probes, column p holds probe p's own integral, so
    /// the estimate is their mean and its standard error the sample
    /// standard deviation over the K probes (n − 1 in the denominator) over
    /// √K; with one probe there is no spread to measure it from, and it is
    /// NaN. `None` when the divergence is not an estimate.
    fn integrals(&self, y: &Array2<f64>, dim: usize, sign: f64) -> (Vec<f64>, Option<Vec<f64>>) {
        let columns = y.ncols().saturating_sub(dim).max(1);
        let mut integrals = Vec::with_capacity(y.nrows());
        let mut errors = Vec::with_capacity(y.nrows());
        for row in y.rows() {
            let l = row.slice(ndarray::s![dim..]);
            if columns == 1 {
                integrals.push(sign * l[0]);
                errors.push(f64::NAN);
                continue;
            }
            let k = columns as f64;
            let mean = l.iter().sum::<f64>() / k;
            let var = l.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (k - 1.0);
            integrals.push(sign * mean);
            errors.push((var / k).sqrt());
        }
        let stochastic = self.divergence.random_probes().is_some();
        (integrals, stochastic.then_some(errors))
    }
}

/// One time per sample from `t` (one value or `batch` values), each in [0, 1].
fn expand_times(tensor: &str, t: &[f64], batch: usize) -> Result<Vec<f64>> {
    if t.len() != 1 && t.len() != batch {
        return Err(Error::Shape {
            tensor: tensor.to_string(),
            expected: format!("[{batch}] (one per sample) or [1]"),
            actual: vec![t.len()],
        });
    }
    if let Some((i, v)) = t
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(Error::InvalidArgument(format!(
            "{tensor}[{i}] = {v} is outside [0, 1]; start times lie between noise (0) and data (1)"
        )));
    }
    Ok(if t.len() == batch {
        t.to_vec()
    } else {
        vec![t[0]; batch]
    })
}

/// The augmented f64 rows `[B, D + C]` of f32 states `[B, ...]`, with C
/// log-density columns L = 0.
fn state_rows(
    x: ArrayViewD<'_, f32>,
    batch: usize,
    dim: usize,
    columns: usize,
) -> Result<Array2<f64>> {
    let flat: Vec<f32> = x.iter().copied().collect();
    if let Some(pos) = flat.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "x is not finite: sample {} element {} is {}",
            pos / dim,
            pos % dim,
            flat[pos]
        )));
    }
    let width = dim.checked_add(columns).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the augmented state of {dim} values and {columns} log-density columns overflows"
        ))
    })?;
    crate::error::check_allocation(
        &[batch, width],
        std::mem::size_of::<f64>(),
        "the augmented states",
    )?;
    let mut y = Array2::zeros((batch, width));
    for (mut row, chunk) in y.rows_mut().into_iter().zip(flat.chunks_exact(dim)) {
        for (dst, &src) in row.iter_mut().zip(chunk) {
            *dst = f64::from(src);
        }
    }
    Ok(y)
}

/// How the augmented system gets the divergence.
enum Estimator {
    /// The field's exact divergence, beside a velocity call.
    Exact,
    /// Directional derivatives (JVPs or finite differences), beside a
    /// velocity call.
    Probes(ProbeEstimator),
    /// The velocity and all directions' JVPs in one call.
    Stacked(StackedEstimator),
}

/// The augmented system (x, L) seen by the solver: dx/dt = u, dL/dt = div u.
/// Its buffers are allocated once per solve.
struct Augmented<'a> {
    field: &'a dyn VelocityField,
    extras: &'a Extras,
    dim: usize,
    /// `[N, ...state_shape]`.
    shape: Vec<usize>,
    /// The states rounded to f32, `[N·D]`.
    x32: Vec<f32>,
    /// The velocities, `[N·D]`.
    v32: Vec<f32>,
    /// The divergences, `[N·C]`: one per sample, or each probe's estimate.
    div: Vec<f64>,
    /// The log-density columns C of each row (1, or the probes K).
    columns: usize,
    estimator: Estimator,
    calls: FieldCalls,
    /// The splits of the error norm's column groups (see
    /// [`OdeSystem::norm_groups`]).
    groups: Vec<usize>,
}

impl<'a> Augmented<'a> {
    fn new(
        field: &'a dyn VelocityField,
        extras: &'a Extras,
        state_shape: &[usize],
        n: usize,
        columns: usize,
        estimator: Estimator,
    ) -> Self {
        let dim: usize = state_shape.iter().product();
        let columns = columns.max(1);
        let mut shape = vec![n];
        shape.extend_from_slice(state_shape);
        Self {
            field,
            extras,
            dim,
            shape,
            x32: vec![0.0; n * dim],
            v32: vec![0.0; n * dim],
            div: vec![0.0; n * columns],
            columns,
            estimator,
            calls: FieldCalls::default(),
            groups: Vec::new(),
        }
    }
}

impl OdeSystem for Augmented<'_> {
    fn norm_groups(&self) -> &[usize] {
        &self.groups
    }

    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        let dim = self.dim;
        for (row, dst) in y.rows().into_iter().zip(self.x32.chunks_exact_mut(dim)) {
            for (d, &v) in dst.iter_mut().zip(row.iter()) {
                *d = v as f32;
            }
        }
        if let Estimator::Stacked(estimator) = &mut self.estimator {
            estimator.evaluate(
                self.field,
                &self.x32,
                t,
                &mut self.v32,
                &mut self.div,
                &mut self.calls,
            )?;
        } else {
            let x = divergence::view(&self.shape, &self.x32, "x")?;
            let out = divergence::view_mut(&self.shape, &mut self.v32)?;
            self.field.velocity(x, t, self.extras, out)?;
            self.calls.velocity += 1;
        }
        match &mut self.estimator {
            Estimator::Stacked(_) => {}
            Estimator::Exact => {
                let x = divergence::view(&self.shape, &self.x32, "x")?;
                self.field.divergence(x, t, self.extras, &mut self.div)?;
                self.calls.divergence += 1;
            }
            Estimator::Probes(estimator) => {
                estimator.estimate(self.field, y, &self.x32, t, &mut self.div, &mut self.calls)?
            }
        }
        for ((mut row, v), div) in dy
            .rows_mut()
            .into_iter()
            .zip(self.v32.chunks_exact(dim))
            .zip(self.div.chunks_exact(self.columns))
        {
            for (d, &vel) in row.iter_mut().zip(v) {
                *d = f64::from(vel);
            }
            for (d, &div) in row.iter_mut().skip(dim).zip(div) {
                *d = div;
            }
        }
        Ok(())
    }
}
