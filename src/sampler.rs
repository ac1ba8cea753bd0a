//! Sampling: source → solver(field) → samples.
//!
//! A [`Sampler`] ties a [`VelocityField`] to a solver configuration and a source
//! distribution. It draws noise x0 (or takes the caller's), integrates
//! dx/dt = u(x, t, extras) from t = 0 to t = 1 (or over any interval, per sample
//! if asked) and returns the end states and, when asked, the states at given
//! times.
//!
//! The schedule enters through the field: a model that predicts x1 or x0, is
//! guided, or is sampled along another schedule than it was trained with is
//! wrapped in the adapters of [`crate::field::adapt`] first.

use std::sync::Arc;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, IxDyn};

use crate::field::{Extras, VelocityField};
use crate::random::{Lane, SeededRng};
use crate::solver::{
    self, Interval, Method, OdeSystem, SampleStats, SolverConfig, StatePrecision, Stats, Steps,
};
use crate::source::{Source, StandardNormal};
use crate::stochastic::Stochastic;
use crate::{Error, Result};

/// Samples a velocity field by integrating it from noise to data.
#[derive(Clone)]
pub struct Sampler {
    field: Arc<dyn VelocityField>,
    solver: SolverConfig,
    source: Arc<dyn Source>,
    extras: Extras,
    sde: Option<Stochastic>,
    state_shape: Option<Vec<usize>>,
    noise_scale: f64,
    /// Whether a sample that fails stops alone (see `allow_partial`).
    partial: bool,
    /// The float type of the solver state (see `with_state_precision`).
    precision: StatePrecision,
}

/// What a sampling run returns.
#[derive(Clone, Debug)]
pub struct Samples {
    /// The end states, `[N, ...state_shape]`.
    pub x: ArrayD<f32>,
    /// The states at the requested times, `[len(times), N, ...state_shape]`
    /// (empty first axis when no times were requested).
    pub trajectory: ArrayD<f32>,
    /// Solver counters.
    pub stats: Stats,
    /// Each sample's counters and how its integration ended (`N` entries):
    /// with independent adaptive steps (the default) its own accepted and
    /// rejected steps; with fixed or shared steps those of the batch. Every
    /// status is [`SampleStatus::Done`](crate::solver::SampleStatus::Done)
    /// unless [`Sampler::allow_partial`] let a failed sample stop alone.
    pub samples: Vec<SampleStats>,
}

impl Samples {
    /// The indices of the samples that did not reach the end of their
    /// interval (empty unless [`Sampler::allow_partial`] is on).
    pub fn unfinished(&self) -> Vec<usize> {
        unfinished(&self.samples)
    }
}

/// The indices of the samples whose status is not `Done`.
pub(crate) fn unfinished(samples: &[SampleStats]) -> Vec<usize> {
    samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status != crate::solver::SampleStatus::Done)
        .map(|(i, _)| i)
        .collect()
}

/// The time span of a sampling run.
#[derive(Clone, Debug, PartialEq)]
pub enum TimeSpan {
    /// Every sample from t = 0 to t = 1 (the usual noise → data direction).
    Full,
    /// Every sample from `start` to `end`.
    Common {
        /// Start time.
        start: f64,
        /// End time.
        end: f64,
    },
    /// Sample i from `starts[i]` to `ends[i]`.
    PerSample {
        /// Start time of each sample.
        starts: Vec<f64>,
        /// End time of each sample.
        ends: Vec<f64>,
    },
}

impl TimeSpan {
    fn interval(&self) -> Interval {
        match self {
            TimeSpan::Full => Interval::Common {
                start: 0.0,
                end: 1.0,
            },
            TimeSpan::Common { start, end } => Interval::Common {
                start: *start,
                end: *end,
            },
            TimeSpan::PerSample { starts, ends } => Interval::PerSample {
                starts: starts.clone(),
                ends: ends.clone(),
            },
        }
    }
}

impl Sampler {
    /// A sampler for the velocity field `field`, integrated with `solver`, with
    /// noise from the standard normal (see [`with_source`](Self::with_source)).
    pub fn new(field: Arc<dyn VelocityField>, solver: SolverConfig) -> Self {
        let state_shape = field.state_shape().map(<[usize]>::to_vec);
        let source = Arc::new(StandardNormal::for_shape(state_shape.as_deref()));
        Self {
            field,
            solver,
            source,
            extras: Extras::new(),
            sde: None,
            state_shape,
            noise_scale: 1.0,
            partial: false,
            precision: StatePrecision::F64,
        }
    }

    /// Whether a sample whose integration fails (it used up
    /// [`max_steps`](crate::solver::AdaptiveOptions::max_steps), its step
    /// size underflowed, or its state became non-finite) stops alone
    /// instead of failing the whole batch (default: no). Applies to
    /// independent adaptive steps
    /// ([`ErrorNorm::Independent`](crate::solver::ErrorNorm::Independent),
    /// the default), where every sample has its own steps: the others
    /// finish as they would have in a full run, bit for bit, and
    /// [`Samples::samples`] tells each one's
    /// [`SampleStatus`](crate::solver::SampleStatus); a stopped sample's
    /// state is where it got to (the last finite one). With fixed or shared
    /// steps, or a stochastic sampler, no sample can stop alone, and a run
    /// is refused ([`check_partial`](crate::solver::check_partial)).
    pub fn allow_partial(mut self, allow: bool) -> Self {
        self.partial = allow;
        self
    }

    /// Whether failed samples stop alone (see [`Sampler::allow_partial`]).
    pub fn partial(&self) -> bool {
        self.partial
    }

    /// The float type of the solver state (default
    /// [`StatePrecision::F64`]). [`StatePrecision::F32`] steps in the
    /// network's own precision, as the projects' own sampling loops do: no
    /// conversion per call and half the memory traffic per step, which is
    /// what is left of fmrt's cost beside the network's at large states
    /// (`cargo bench --bench real_models`). It applies to the explicit
    /// Runge–Kutta methods on fixed steps; other solvers, and stochastic
    /// sampling, refuse it by name when a run starts
    /// ([`check_precision`](crate::solver::check_precision)).
    pub fn with_state_precision(mut self, precision: StatePrecision) -> Self {
        self.precision = precision;
        self
    }

    /// The float type of the solver state (see
    /// [`Sampler::with_state_precision`]).
    pub fn state_precision(&self) -> StatePrecision {
        self.precision
    }

    /// The shape of one sample for runs that draw their noise
    /// ([`sample`](Self::sample), [`draw_noise`](Self::draw_noise)): needed
    /// for a field whose shape comes with each call (an ONNX model with a
    /// dynamic length or resolution), and it replaces the field's own shape
    /// otherwise. Runs given their starting points take the shape from them.
    pub fn with_state_shape(mut self, shape: &[usize]) -> Self {
        self.state_shape = Some(shape.to_vec());
        self
    }

    /// Scales the noise: x0 = s·z with z standard normal (Matcha-TTS samples
    /// with s = 0.667). Replaces the source with N(0, s²·I); noise given to
    /// [`sample_from_noise`](Self::sample_from_noise) is scaled the same way.
    /// Errors unless s is positive and finite.
    pub fn with_noise_scale(mut self, scale: f64) -> Result<Self> {
        self.source = Arc::new(StandardNormal::new().scaled(scale)?);
        self.noise_scale = scale;
        Ok(self)
    }

    /// The noise scale s (1 unless [`with_noise_scale`](Self::with_noise_scale)
    /// set it).
    pub fn noise_scale(&self) -> f64 {
        self.noise_scale
    }

    /// The shape of one sample that runs drawing their noise use, if known.
    pub fn state_shape(&self) -> Option<&[usize]> {
        self.state_shape.as_deref()
    }

    /// Samples the SDE of `sde` (same marginals as the ODE, noise scale G)
    /// with Euler–Maruyama on the solver's fixed steps instead of the ODE;
    /// see [`crate::stochastic`]. Needs fixed steps of the Euler method and a
    /// seeded run ([`sample`](Self::sample), [`sample_rows`](Self::sample_rows));
    /// G = 0 runs the ODE with the Euler solver itself.
    pub fn with_sde(mut self, sde: Stochastic) -> Self {
        self.sde = Some(sde);
        self
    }

    /// Replaces the source distribution the noise is drawn from.
    pub fn with_source(mut self, source: Arc<dyn Source>) -> Self {
        self.source = source;
        self
    }

    /// Conditioning inputs (class labels, context tensors) passed to the field
    /// with every call; each needs one row per sample of the next run.
    pub fn with_extras(mut self, extras: Extras) -> Self {
        self.extras = extras;
        self
    }

    /// Replaces the solver configuration.
    pub fn with_solver(mut self, solver: SolverConfig) -> Self {
        self.solver = solver;
        self
    }

    /// The field being sampled.
    pub fn field(&self) -> &Arc<dyn VelocityField> {
        &self.field
    }

    /// The solver configuration.
    pub fn solver(&self) -> &SolverConfig {
        &self.solver
    }

    /// The source distribution the noise is drawn from.
    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// The conditioning inputs passed with every call.
    pub fn extras(&self) -> &Extras {
        &self.extras
    }

    /// Draws `n` source points with `seed` (`[n, ...state_shape]`): rows
    /// `0..n` of [`draw_noise_rows`](Self::draw_noise_rows).
    pub fn draw_noise(&self, n: usize, seed: u64) -> Result<ArrayD<f32>> {
        self.draw_noise_rows(0, n, seed)
    }

    /// Draws the source points of samples `first..first + n` of the run that
    /// `seed` defines. Sample i's noise depends on (seed, i) only (see
    /// [`Source::sample_rows`]), so shards drawn separately concatenate to the
    /// unsharded draw bit for bit.
    pub fn draw_noise_rows(&self, first: u64, n: usize, seed: u64) -> Result<ArrayD<f32>> {
        let state_shape = self.state_shape.as_deref().ok_or_else(|| {
            Error::InvalidArgument(
                "the field's state shape comes with each call (its model has dynamic axes), \
                 so drawing noise needs the shape of one sample: give it with \
                 Sampler::with_state_shape(..) (--shape on the command line), or pass the \
                 noise itself"
                    .to_string(),
            )
        })?;
        if let Some(fixed) = self.field.state_shape() {
            check_state_shape(
                "the sampler's state shape",
                &with_batch(n, state_shape),
                fixed,
            )?;
        }
        check_state_elements(state_shape)?;
        let shape = with_batch(n, state_shape);
        crate::error::checked_product(&shape, "n × state size")?;
        self.source.sample_rows(&shape, seed, first)
    }

    /// Draws `n` source points with `seed` and integrates them from t = 0 to 1.
    pub fn sample(&self, n: usize, seed: u64) -> Result<Samples> {
        self.sample_at(n, seed, &[])
    }

    /// Like [`sample`](Self::sample), also saving the states at `times` in [0, 1].
    pub fn sample_at(&self, n: usize, seed: u64, times: &[f64]) -> Result<Samples> {
        self.sample_rows(0, n, seed, times)
    }

    /// Samples `first..first + n` of the run that `seed` defines, saving the
    /// states at `times` in [0, 1]: a shard of a larger run. With a field that
    /// computes each sample independently of the batch (the analytic fields
    /// do), shards concatenate to the unsharded run bit for bit, with fixed
    /// steps and with adaptive steps under the default
    /// [`ErrorNorm::Independent`](crate::solver::ErrorNorm::Independent) (each
    /// sample takes its own steps); the shared-step norms choose one step
    /// sequence for the batch, so their shards agree within the tolerance
    /// only. An ONNX model may round differently at another batch size.
    pub fn sample_rows(&self, first: u64, n: usize, seed: u64, times: &[f64]) -> Result<Samples> {
        let x0 = self.draw_noise_rows(first, n, seed)?;
        match &self.sde {
            Some(sde) => {
                let points = euler_maruyama_points(&self.solver)?;
                if sde.scale() == 0.0 {
                    // G = 0 is the ODE: the Euler solver on the same steps.
                    return self.integrate_ode(x0.view(), &TimeSpan::Full, times);
                }
                if !times.is_empty() {
                    return Err(Error::InvalidArgument(
                        "stochastic sampling saves no trajectories; sample without times"
                            .to_string(),
                    ));
                }
                if self.partial {
                    return Err(Error::InvalidArgument(
                        "partial results need adaptive steps, where every sample can stop \
                         alone; stochastic sampling (Euler–Maruyama on fixed steps) has none"
                            .to_string(),
                    ));
                }
                if self.precision != StatePrecision::F64 {
                    return Err(Error::InvalidArgument(format!(
                        "state precision {} applies to ODE sampling; stochastic sampling \
                         (Euler–Maruyama) keeps an f64 state",
                        self.precision
                    )));
                }
                self.euler_maruyama(sde, x0, &points, first, seed)
            }
            None => self.integrate_ode(x0.view(), &TimeSpan::Full, times),
        }
    }

    /// An error when this sampler is stochastic (G > 0): `what` runs the
    /// ODE, and the stochastic sampler's draws of diffusion noise come from
    /// a seed only `sample` and `sample_rows` take.
    fn refuse_if_stochastic(&self, what: &str) -> Result<()> {
        match &self.sde {
            Some(sde) if sde.scale() != 0.0 => Err(Error::InvalidArgument(format!(
                "{what} integrates the ODE, and this sampler is stochastic (SDE noise scale \
                 G = {}): sample it with sample or sample_rows, which draw its diffusion noise \
                 from the seed, or use a sampler without an SDE",
                sde.scale()
            ))),
            _ => Ok(()),
        }
    }

    /// Euler–Maruyama from `x0` (samples `first..`) over the times `points`.
    fn euler_maruyama(
        &self,
        sde: &Stochastic,
        x0: ArrayD<f32>,
        points: &[f64],
        first: u64,
        seed: u64,
    ) -> Result<Samples> {
        let batch = x0.shape()[0];
        let extras = self.extras.for_batch(batch)?;
        let mut rngs: Vec<SeededRng> = (0..batch as u64)
            .map(|i| SeededRng::for_sample(seed, first + i, Lane::Diffusion))
            .collect();
        let mut x: Vec<f64> = x0.iter().map(|&v| f64::from(v)).collect();
        let mut x32 = x0;
        let mut v32 = ArrayD::<f32>::zeros(x32.raw_dim());
        let mut stats = Stats::default();
        for w in points.windows(2) {
            let (t, h) = (w[0], w[1] - w[0]);
            self.field
                .velocity(x32.view(), &[t], &extras, v32.view_mut())?;
            stats.nfe += 1;
            let v = v32.as_slice().ok_or_else(|| layout_error("velocity"))?;
            sde.step(&mut x, v, t, h, &mut rngs)?;
            let dim = x.len().checked_div(batch).unwrap_or(0).max(1);
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    which: format!("state of sample {}", i / dim),
                    location: format!("after the Euler–Maruyama step from t = {t} to t = {}", w[1]),
                });
            }
            for (dst, &src) in x32.iter_mut().zip(&x) {
                *dst = src as f32;
            }
            stats.accepted += 1;
        }
        let mut shape = vec![0, batch];
        shape.extend_from_slice(&x32.shape()[1..]);
        let sample = SampleStats {
            accepted: stats.accepted,
            rejected: 0,
            evals: stats.nfe,
            status: crate::solver::SampleStatus::Done,
        };
        Ok(Samples {
            x: x32,
            trajectory: ArrayD::zeros(IxDyn(&shape)),
            stats,
            samples: vec![sample; batch],
        })
    }

    /// Integrates the caller's starting points `x0` (`[N, ...state_shape]`)
    /// over `span`, saving the states at `times`.
    ///
    /// For a common span, `times` are times t within it; for per-sample spans
    /// they are normalised times s ∈ [0, 1] (t_i = start_i + s·(end_i − start_i)).
    ///
    /// This runs the ODE: on a stochastic sampler ([`with_sde`](Self::with_sde)
    /// with G > 0) it is an error rather than a silent switch to the ODE.
    pub fn integrate(
        &self,
        x0: ArrayViewD<'_, f32>,
        span: &TimeSpan,
        times: &[f64],
    ) -> Result<Samples> {
        self.refuse_if_stochastic("integrate")?;
        self.integrate_ode(x0, span, times)
    }

    fn integrate_ode(
        &self,
        x0: ArrayViewD<'_, f32>,
        span: &TimeSpan,
        times: &[f64],
    ) -> Result<Samples> {
        let state_shape = match self.field.state_shape() {
            Some(fixed) => {
                check_state_shape("x0", x0.shape(), fixed)?;
                fixed.to_vec()
            }
            None => match x0.shape().split_first() {
                Some((_, sample)) => sample.to_vec(),
                None => {
                    return Err(Error::Shape {
                        tensor: "x0".to_string(),
                        expected: "[N, ...] (a batch axis first)".to_string(),
                        actual: x0.shape().to_vec(),
                    })
                }
            },
        };
        let batch = x0.shape()[0];
        let dim = check_state_elements(&state_shape)?;
        let extras = self.extras.for_batch(batch)?;

        let (interval, solver) = self.resolve_span(span);
        let save_at = normalised_times(&interval, times)?;
        solver::check_precision(&solver, self.precision)?;
        if self.partial {
            solver::check_partial(&solver)?;
        }
        let mut system = FieldSystem::new(
            self.field.as_ref(),
            &extras,
            &state_shape,
            batch,
            self.precision,
        );
        let mut x_shape = vec![batch];
        x_shape.extend_from_slice(&state_shape);
        let mut traj_shape = vec![save_at.len(), batch];
        traj_shape.extend_from_slice(&state_shape);
        let trajectory = |saved: Vec<f32>| {
            ArrayD::from_shape_vec(IxDyn(&traj_shape), saved)
                .map_err(|e| Error::internal(format!("trajectory shape: {e}")))
        };

        if self.precision == StatePrecision::F32 {
            // The stepper copies the rows once; a row-major `x0` is viewed.
            let x0 = x0.as_standard_layout();
            let y0 = x0
                .view()
                .into_shape_with_order((batch, dim))
                .map_err(|e| Error::internal(format!("state rows: {e}")))?;
            let solution = solver::solve_f32(&mut system, y0.view(), &solver, &interval, &save_at)?;
            let x = solution
                .y
                .into_shape_with_order(IxDyn(&x_shape))
                .map_err(|e| Error::internal(format!("state shape: {e}")))?;
            let (saved, _) = solution.saved.into_raw_vec_and_offset();
            return Ok(Samples {
                x,
                trajectory: trajectory(saved)?,
                stats: solution.stats,
                samples: solution.samples,
            });
        }

        crate::error::check_allocation(
            &[batch, dim, 12 + times.len()],
            std::mem::size_of::<f64>(),
            "sampling this batch",
        )?;
        let y0 = to_f64_rows(x0, batch, dim)?;
        let solution = if self.partial {
            solver::solve_partial(&mut system, y0.view(), &solver, &interval, &save_at)?
        } else {
            solver::solve(&mut system, y0.view(), &solver, &interval, &save_at)?
        };
        let x = rows_to_f32(solution.y.view(), &x_shape)?;
        Ok(Samples {
            x,
            trajectory: trajectory(solution.saved.iter().map(|&v| v as f32).collect())?,
            stats: solution.stats,
            samples: solution.samples,
        })
    }
}

/// The state elements of one chunk of [`Sampler::sample_chunks`] by default
/// (2²⁰: 4 MiB of float32 states, some 80 MiB of f64 solver work for the
/// largest tableau), whatever the number of samples.
pub const CHUNK_ELEMENTS: usize = 1 << 20;

/// The rows of a chunk of [`CHUNK_ELEMENTS`] elements for states of
/// `sample_elements` elements each (at least 1).
pub fn chunk_rows(sample_elements: usize) -> usize {
    (CHUNK_ELEMENTS / sample_elements.max(1)).max(1)
}

impl Sampler {
    /// Samples `first..first + n` of the run `seed` defines in chunks of at
    /// most `chunk` rows, handing each to `sink` (its offset within the `n`
    /// rows, and its samples) as soon as it is done: memory holds one chunk,
    /// whatever `n` is. The chunks are the shards of
    /// [`sample_rows`](Self::sample_rows), so with fixed steps or the default
    /// independent adaptive steps they concatenate to the one-batch run (bit
    /// for bit with a field that computes each sample on its own); the
    /// shared-step norms share steps within a chunk. Extras with `n` rows are
    /// split with the chunks; one-row and shared extras serve every chunk.
    /// Returns the statistics of all chunks together.
    pub fn sample_chunks<E: From<Error>>(
        &self,
        first: u64,
        n: usize,
        seed: u64,
        times: &[f64],
        chunk: usize,
        mut sink: impl FnMut(usize, Samples) -> std::result::Result<(), E>,
    ) -> std::result::Result<Stats, E> {
        let mut stats = Stats::default();
        for range in chunk_ranges(n, chunk) {
            let sampler = self.for_chunk(n, range.clone())?;
            let offset = first.checked_add(range.start as u64).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "sample index {first} + {} does not fit in 64 bits",
                    range.start
                ))
            })?;
            let samples = sampler.sample_rows(offset, range.len(), seed, times)?;
            stats += samples.stats;
            sink(range.start, samples)?;
        }
        Ok(stats)
    }

    /// Like [`sample_chunks`](Self::sample_chunks), from the caller's
    /// standard-normal draws `z` (`[N, ...]`), as
    /// [`sample_from_noise`](Self::sample_from_noise) runs them.
    pub fn sample_from_noise_chunks<E: From<Error>>(
        &self,
        z: ArrayViewD<'_, f32>,
        times: &[f64],
        chunk: usize,
        mut sink: impl FnMut(usize, Samples) -> std::result::Result<(), E>,
    ) -> std::result::Result<Stats, E> {
        let n = z.shape().first().copied().unwrap_or(0);
        let mut stats = Stats::default();
        for range in chunk_ranges(n, chunk) {
            let sampler = self.for_chunk(n, range.clone())?;
            let part = z.slice_axis(ndarray::Axis(0), ndarray::Slice::from(range.clone()));
            let samples = sampler.sample_from_noise(part, times)?;
            stats += samples.stats;
            sink(range.start, samples)?;
        }
        Ok(stats)
    }

    /// This sampler with its extras for the rows `range` of a run of `total`.
    fn for_chunk(&self, total: usize, range: std::ops::Range<usize>) -> Result<Sampler> {
        let mut sampler = self.clone();
        sampler.extras = self.extras.for_rows(total, range)?;
        Ok(sampler)
    }

    /// Integrates the standard-normal draws `z` (`[N, ...]`) from t = 0 (or
    /// the first time of an explicit grid) to 1 after scaling them by the
    /// noise scale: the run [`sample`](Self::sample) makes with its own draws.
    /// Like [`integrate`](Self::integrate), an error on a stochastic sampler.
    pub fn sample_from_noise(&self, z: ArrayViewD<'_, f32>, times: &[f64]) -> Result<Samples> {
        self.refuse_if_stochastic("sample_from_noise")?;
        if self.noise_scale == 1.0 {
            return self.integrate_ode(z, &TimeSpan::Full, times);
        }
        let s = self.noise_scale as f32;
        let x0 = z.mapv(|v| v * s);
        self.integrate_ode(x0.view(), &TimeSpan::Full, times)
    }

    /// The solver's interval for `span`, and the solver configuration: a full
    /// run whose explicit grid starts after t = 0 (diffusers' DPM-Solver++
    /// grid starts at t = 3e-4) integrates from the grid's first time, the
    /// noise being the state there.
    fn resolve_span(&self, span: &TimeSpan) -> (Interval, SolverConfig) {
        if let (TimeSpan::Full, Some(Steps::Grid(points))) = (span, self.solver.steps()) {
            if let Some(&first) = points.first() {
                if first > 0.0 && first < 1.0 {
                    let length = 1.0 - first;
                    let grid = points.iter().map(|&p| (p - first) / length).collect();
                    let solver = SolverConfig::fixed(self.solver.method, Steps::Grid(grid));
                    let interval = Interval::Common {
                        start: first,
                        end: 1.0,
                    };
                    return (interval, solver);
                }
            }
        }
        (span.interval(), self.solver.clone())
    }
}

/// The number of elements of one state of `shape`: an error when there are
/// none (a sample without values; a batch of them would cost per-sample
/// work and memory for nothing) or when the product overflows.
fn check_state_elements(shape: &[usize]) -> Result<usize> {
    match crate::error::checked_product(shape, "the state size")? {
        0 => Err(Error::InvalidArgument(format!(
            "the state shape {shape:?} has no elements"
        ))),
        n => Ok(n),
    }
}

fn with_batch(n: usize, state_shape: &[usize]) -> Vec<usize> {
    let mut shape = vec![n];
    shape.extend_from_slice(state_shape);
    shape
}

fn layout_error(what: &str) -> Error {
    Error::InvalidArgument(format!("the {what} is not contiguous"))
}

/// The times of the fixed Euler steps of `solver` from 0 to 1, for
/// Euler–Maruyama; an error for other methods or adaptive steps.
fn euler_maruyama_points(solver: &SolverConfig) -> Result<Vec<f64>> {
    let steps = match solver.steps() {
        Some(steps) if solver.method == Method::Euler => steps,
        _ => return Err(euler_maruyama_only(solver)),
    };
    match steps {
        Steps::Count(0) => Err(Error::InvalidArgument(
            "the step count must be at least 1".to_string(),
        )),
        Steps::Count(n) => Ok((0..=*n).map(|k| k as f64 / *n as f64).collect()),
        Steps::Grid(points) => {
            let ok = points.len() >= 2
                && points[0] == 0.0
                && points[points.len() - 1] == 1.0
                && points.windows(2).all(|w| w[1] > w[0]);
            if ok {
                Ok(points.clone())
            } else {
                Err(Error::InvalidArgument(
                    "a step grid must run from 0 to 1, strictly increasing".to_string(),
                ))
            }
        }
        Steps::Size(h) => {
            if !(h.is_finite() && *h > 0.0 && *h >= 1e-9) {
                return Err(Error::InvalidArgument(format!(
                    "the step size must be positive, finite and at least 1e-9, got {h}"
                )));
            }
            let n = (1.0 / h - 1e-9).ceil().max(1.0) as usize;
            Ok((0..=n)
                .map(|k| if k == n { 1.0 } else { k as f64 * h })
                .collect())
        }
    }
}

/// Checks that `shape` is `[N, ...state_shape]`.
fn check_state_shape(tensor: &str, shape: &[usize], state_shape: &[usize]) -> Result<()> {
    if shape.len() != state_shape.len() + 1 || &shape[1..] != state_shape {
        return Err(Error::Shape {
            tensor: tensor.to_string(),
            expected: format!("[N, {}]", join_dims(state_shape)),
            actual: shape.to_vec(),
        });
    }
    Ok(())
}

fn join_dims(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Flattens `[N, ...]` f32 states into `[N, D]` f64 rows.
fn to_f64_rows(x: ArrayViewD<'_, f32>, batch: usize, dim: usize) -> Result<Array2<f64>> {
    let values: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    Array2::from_shape_vec((batch, dim), values)
        .map_err(|e| Error::internal(format!("state layout: {e}")))
}

/// Converts `[N, D]` f64 rows back into f32 states of `shape`.
fn rows_to_f32(y: ArrayView2<'_, f64>, shape: &[usize]) -> Result<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), y.iter().map(|&v| v as f32).collect())
        .map_err(|e| Error::internal(format!("state layout: {e}")))
}

/// Maps requested times to the solver's normalised time s ∈ [0, 1].
fn normalised_times(interval: &Interval, times: &[f64]) -> Result<Vec<f64>> {
    match interval {
        Interval::Common { start, end } => {
            let length = end - start;
            times
                .iter()
                .map(|&t| {
                    let s = if length == 0.0 {
                        0.0
                    } else {
                        (t - start) / length
                    };
                    if !(-1e-12..=1.0 + 1e-12).contains(&s) || !s.is_finite() {
                        Err(Error::InvalidArgument(format!(
                            "requested time {t} is outside the interval [{start}, {end}]"
                        )))
                    } else {
                        Ok(s.clamp(0.0, 1.0))
                    }
                })
                .collect()
        }
        Interval::PerSample { .. } => Ok(times.to_vec()),
    }
}

/// Adapts a velocity field (f32, any state shape) to the solver's rows: f64
/// rows through conversion buffers allocated once per solve, f32 rows as
/// they are.
struct FieldSystem<'a> {
    field: &'a dyn VelocityField,
    extras: &'a Extras,
    /// The shape of a call's state, `[B, ...state_shape]`.
    shape: IxDyn,
    /// The state handed to the field (f64 solves only).
    x32: ArrayD<f32>,
    /// The field's velocity when it lends no buffer of its own (f64 solves
    /// only; allocated on first use).
    v32: Vec<f32>,
}

impl<'a> FieldSystem<'a> {
    fn new(
        field: &'a dyn VelocityField,
        extras: &'a Extras,
        state_shape: &[usize],
        batch: usize,
        precision: StatePrecision,
    ) -> Self {
        let mut shape = vec![batch];
        shape.extend_from_slice(state_shape);
        let shape = IxDyn(&shape);
        let x32 = match precision {
            StatePrecision::F64 => ArrayD::zeros(shape.clone()),
            StatePrecision::F32 => ArrayD::zeros(IxDyn(&[0])),
        };
        Self {
            field,
            extras,
            x32,
            v32: Vec::new(),
            shape,
        }
    }
}

impl OdeSystem for FieldSystem<'_> {
    fn rhs(&mut self, t: &[f64], y: ArrayView2<'_, f64>, dy: ArrayViewMut2<'_, f64>) -> Result<()> {
        // Both buffers are row-major, as are the solver's states: plain
        // slice loops, which vectorise (iterating an `IxDyn` array element
        // by element costs as much per step as the guidance mix and the
        // Euler update together).
        match (y.as_slice(), self.x32.as_slice_mut()) {
            (Some(src), Some(dst)) => narrow(src, dst),
            _ => self
                .x32
                .iter_mut()
                .zip(y.iter())
                .for_each(|(d, &s)| *d = s as f32),
        }
        // The velocity is widened where the field lends it (an ONNX model's
        // own output), without a copy into a buffer of ours first.
        let mut dy = Some(dy);
        self.field
            .lend_velocity(self.x32.view(), t, self.extras, &mut self.v32, &mut |v| {
                if let Some(mut dy) = dy.take() {
                    match (v.as_slice(), dy.as_slice_mut()) {
                        (Some(src), Some(dst)) => widen(src, dst),
                        _ => dy
                            .iter_mut()
                            .zip(v.iter())
                            .for_each(|(d, &s)| *d = f64::from(s)),
                    }
                }
                Ok(())
            })
    }
}

/// The f32 solve hands the field its own rows, reshaped to the state's
/// shape: no conversion, no copy.
impl OdeSystem<f32> for FieldSystem<'_> {
    fn rhs(&mut self, t: &[f64], y: ArrayView2<'_, f32>, dy: ArrayViewMut2<'_, f32>) -> Result<()> {
        let x = y
            .into_shape_with_order(self.shape.clone())
            .map_err(|_| layout_error("solver state"))?;
        let v = dy
            .into_shape_with_order(self.shape.clone())
            .map_err(|_| layout_error("solver slope"))?;
        self.field.velocity(x, t, self.extras, v)
    }
}

/// `dst[i] = src[i]` rounded to f32.
fn narrow(src: &[f64], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as f32;
    }
}

/// `dst[i] = src[i]` as f64 (exact).
fn widen(src: &[f32], dst: &mut [f64]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f64::from(s);
    }
}

/// The error for a stochastic sampler given a solver other than Euler on
/// fixed steps.
fn euler_maruyama_only(solver: &SolverConfig) -> Error {
    Error::InvalidArgument(format!(
        "stochastic sampling integrates with Euler–Maruyama on fixed steps; use the \
             euler method with fixed steps (or a grid), not {}{}",
        solver.method,
        if solver.is_adaptive() {
            " with adaptive steps"
        } else {
            ""
        }
    ))
}

/// The ranges `0..n` splits into, each of at most `chunk` rows (at least 1).
pub fn chunk_ranges(n: usize, chunk: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let chunk = chunk.max(1);
    (0..n.div_ceil(chunk)).map(move |k| k * chunk..((k + 1) * chunk).min(n))
}
