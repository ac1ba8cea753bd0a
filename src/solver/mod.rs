//! ODE solvers: explicit Runge–Kutta methods described as data (Butcher tableaus),
//! with fixed steps or adaptive step control, variable-step Adams
//! multistep methods on fixed grids, and diffusers' flow-mode multistep
//! schedulers (DPM-Solver++(2M), UniPC) on fixed grids.
//!
//! Solvers integrate a batch of states `y` of shape `[B, D]` in `f64`. Each sample
//! may have its own interval `[t_start, t_end]`: internally it runs in a
//! normalised time `s ∈ [0, 1]` with `t = t_start + s·(t_end − t_start)`, and
//! the right-hand side is scaled by `t_end − t_start`. Fixed steps and the
//! shared adaptive modes ([`ErrorNorm::PerSample`], [`ErrorNorm::Batch`]) step
//! the whole batch through the same normalised times; with
//! [`ErrorNorm::Independent`] (the default) every sample takes its own
//! adaptive steps, still in one batched call per stage. Stage buffers are
//! allocated once per solve, never per step.

mod adaptive;
mod fixed;
mod flow;
mod independent;
mod multistep;
mod norm;
mod precision;
mod stepper;
mod tableau;

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut2};

pub use precision::{Real, StatePrecision};
pub use tableau::ButcherTableau;

use crate::{Error, Result};

/// The right-hand side dy/dt = f(t, y) of a batched ODE whose state is of
/// the float type `F` (f64 unless a solve runs in [`StatePrecision::F32`]).
pub trait OdeSystem<F: Real = f64> {
    /// Writes f(t, y) into `dy`. `y` and `dy` have shape `[B, D]`; `t` holds one
    /// time per sample (`B` values).
    fn rhs(&mut self, t: &[f64], y: ArrayView2<'_, F>, dy: ArrayViewMut2<'_, F>) -> Result<()>;

    /// The columns at which the adaptive error norm splits the `D`
    /// components of a sample into groups: strictly increasing, each in
    /// `1..D`. With groups, a sample's norm is the largest of the groups'
    /// RMS norms (with [`ErrorNorm::Batch`], each group's RMS over the whole
    /// batch, then the largest), as torchdiffeq's mixed norm measures a
    /// tuple state; so a small group, such as the log-density column of an
    /// augmented likelihood state (split at `D − 1`), keeps its own
    /// tolerance instead of counting as one of `D` components. The
    /// initial-step heuristic measures with the same groups.
    ///
    /// Empty (the default): one group, the RMS over all components. Fixed
    /// steps ignore the groups; invalid splits make an adaptive solve fail
    /// with [`Error::InvalidArgument`].
    fn norm_groups(&self) -> &[usize] {
        &[]
    }
}

/// A solver method by name: an explicit Runge–Kutta method (see
/// [`Method::tableau`]) or a linear multistep method of the Adams family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Forward Euler, order 1.
    Euler,
    /// Explicit midpoint, order 2.
    Midpoint,
    /// Heun's method (explicit trapezoid), order 2.
    Heun,
    /// The classic fourth-order Runge–Kutta method.
    Rk4,
    /// Bogacki–Shampine 3(2), adaptive.
    Bosh3,
    /// Dormand–Prince 5(4), adaptive, with dense output.
    Dopri5,
    /// Tsitouras 5(4), adaptive.
    Tsit5,
    /// Two-step Adams–Bashforth with variable steps, order 2: one evaluation
    /// per step. Fixed steps only.
    Ab2,
    /// Three-step Adams–Bashforth with variable steps, order 3: one
    /// evaluation per step. Fixed steps only.
    Ab3,
    /// Predictor–corrector in PEC mode with variable steps, order 3: a
    /// two-step Adams–Bashforth predictor, one evaluation at the predicted
    /// point, and the two-step (third-order) Adams–Moulton corrector, whose
    /// slope is not re-evaluated. One evaluation per step plus one for the
    /// initial slope. Fixed steps only.
    Pec2,
    /// diffusers' `DPMSolverMultistepScheduler` in flow mode (DPM-Solver++(2M),
    /// `solver_order=2`, `use_flow_sigmas=True`,
    /// `prediction_type="flow_prediction"`, its defaults otherwise): order 2,
    /// one evaluation per step, first-order first and last steps. Needs the
    /// straight path (α = t, σ = 1 − t) forward within [0, 1]. Fixed steps
    /// only; on the `diffusers-flow` grid it reproduces diffusers.
    Dpmpp2m,
    /// diffusers' `UniPCMultistepScheduler` in flow mode (UniPC, `bh2`,
    /// predictor order 2 with the corrector on every step, `predict_x0`):
    /// one evaluation per step, first-order first and last steps. Needs the
    /// straight path forward within [0, 1]. Fixed steps only; on the
    /// `diffusers-flow` grid it reproduces diffusers.
    Unipc,
}

/// The two families of [`Method`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// A one-step explicit Runge–Kutta method, given by its
    /// [`ButcherTableau`]; those with an embedded error estimate also run
    /// with adaptive steps.
    RungeKutta,
    /// A variable-step linear multistep (Adams) method: it reuses the slopes
    /// of earlier steps, so it costs one evaluation per step, and runs on
    /// fixed steps (a count, a size or any grid) only. The coefficients of
    /// every step are computed from the actual step sizes, so the method
    /// keeps its order on non-uniform grids. It starts with lower order
    /// while its history fills.
    Multistep,
    /// diffusers' flow-mode exponential multistep schedulers
    /// ([`Method::Dpmpp2m`], [`Method::Unipc`]): they step the data
    /// prediction x + (1 − t)·u in the log-SNR λ = ln(t / (1 − t)) of the
    /// straight path, one evaluation per step, on fixed steps only, forward
    /// within [0, 1].
    FlowMultistep,
}

impl Method {
    /// Every method, in the order of the enum.
    pub const ALL: [Method; 12] = [
        Method::Euler,
        Method::Midpoint,
        Method::Heun,
        Method::Rk4,
        Method::Bosh3,
        Method::Dopri5,
        Method::Tsit5,
        Method::Ab2,
        Method::Ab3,
        Method::Pec2,
        Method::Dpmpp2m,
        Method::Unipc,
    ];

    /// The method's short lower-case name (`"dopri5"`), accepted by
    /// [`Method::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Method::Euler => "euler",
            Method::Midpoint => "midpoint",
            Method::Heun => "heun",
            Method::Rk4 => "rk4",
            Method::Bosh3 => "bosh3",
            Method::Dopri5 => "dopri5",
            Method::Tsit5 => "tsit5",
            Method::Ab2 => "ab2",
            Method::Ab3 => "ab3",
            Method::Pec2 => "pec2",
            Method::Dpmpp2m => "dpmpp2m",
            Method::Unipc => "unipc",
        }
    }

    /// Looks a method up by its name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                Error::InvalidArgument(format!(
                    "unknown solver method `{name}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }

    /// The method's family.
    pub fn kind(self) -> MethodKind {
        match self {
            Method::Euler
            | Method::Midpoint
            | Method::Heun
            | Method::Rk4
            | Method::Bosh3
            | Method::Dopri5
            | Method::Tsit5 => MethodKind::RungeKutta,
            Method::Ab2 | Method::Ab3 | Method::Pec2 => MethodKind::Multistep,
            Method::Dpmpp2m | Method::Unipc => MethodKind::FlowMultistep,
        }
    }

    /// Whether the method has an embedded error estimate, so it can run with
    /// adaptive steps.
    pub fn is_adaptive(self) -> bool {
        matches!(self, Method::Bosh3 | Method::Dopri5 | Method::Tsit5)
    }

    /// The order of accuracy of the method (of the main weights for an
    /// embedded Runge–Kutta pair; once its history is full for a multistep
    /// method; the order of the whole solve for `dpmpp2m` and `unipc`, whose
    /// last step is first order).
    pub fn order(self) -> usize {
        match self {
            Method::Euler => 1,
            Method::Midpoint | Method::Heun | Method::Ab2 | Method::Dpmpp2m | Method::Unipc => 2,
            Method::Bosh3 | Method::Ab3 | Method::Pec2 => 3,
            Method::Rk4 => 4,
            Method::Dopri5 | Method::Tsit5 => 5,
        }
    }

    /// The Butcher tableau of a Runge–Kutta method; `None` for a multistep
    /// method.
    pub fn tableau(self) -> Option<ButcherTableau> {
        Some(match self {
            Method::Euler => ButcherTableau::euler(),
            Method::Midpoint => ButcherTableau::midpoint(),
            Method::Heun => ButcherTableau::heun(),
            Method::Rk4 => ButcherTableau::rk4(),
            Method::Bosh3 => ButcherTableau::bosh3(),
            Method::Dopri5 => ButcherTableau::dopri5(),
            Method::Tsit5 => ButcherTableau::tsit5(),
            Method::Ab2 | Method::Ab3 | Method::Pec2 | Method::Dpmpp2m | Method::Unipc => {
                return None
            }
        })
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Method::from_name(s)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a fixed-step method places its steps.
#[derive(Clone, Debug, PartialEq)]
pub enum Steps {
    /// This many equal steps over the interval.
    Count(usize),
    /// Steps of this size in the normalised time s ∈ [0, 1] (the last one shortened).
    Size(f64),
    /// An explicit grid of normalised times from 0 to 1, strictly increasing.
    Grid(Vec<f64>),
}

/// How the error of an adaptive step is measured, and which steps it
/// controls.
///
/// All take the scaled error `err / (atol + rtol·max(|y_n|, |y_n+1|))` of
/// every component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorNorm {
    /// Every sample has its own step size, its own accept/reject decision and
    /// its own controller state, judged by the RMS over its own components
    /// (the default). The batch still shares one right-hand-side call per
    /// stage, each sample at its own time; a sample that has finished is
    /// frozen (its rows are still evaluated, at its final state, and the
    /// result discarded). A sample's steps, and so its result, do not depend
    /// on its batch mates: with a field that computes each sample on its own
    /// (the analytic fields do), any split of a batch concatenates to the
    /// whole run bit for bit. The batched calls number about the most steps
    /// any one sample needs; each sample only spends the steps it needs.
    #[default]
    Independent,
    /// One step size for the batch, with the RMS over each sample's
    /// components maximised over the batch: every sample meets its
    /// tolerance, but the hardest sample sets everyone's steps, so a
    /// sample's result (not its accuracy) depends on its batch mates.
    PerSample,
    /// One RMS over every component of the batch, as torchdiffeq (and with it
    /// PyTorch's `flow_matching`) measures it: fewer steps when most samples
    /// are easy, but a hard sample may exceed its tolerance, and its
    /// accuracy then depends on which samples share its batch.
    Batch,
}

impl ErrorNorm {
    /// Every norm, in the order of the documentation.
    pub const ALL: [ErrorNorm; 3] = [
        ErrorNorm::Independent,
        ErrorNorm::PerSample,
        ErrorNorm::Batch,
    ];

    /// The norm's name: `independent`, `sample` or `batch` (the spellings of
    /// the CLI's `--error-norm` and the C API), read back by
    /// [`ErrorNorm::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            ErrorNorm::Independent => "independent",
            ErrorNorm::PerSample => "sample",
            ErrorNorm::Batch => "batch",
        }
    }

    /// Looks a norm up by its name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Result<ErrorNorm> {
        ErrorNorm::ALL
            .into_iter()
            .find(|n| n.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown error norm `{name}`; expected independent, sample or batch"
                ))
            })
    }
}

impl std::str::FromStr for ErrorNorm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ErrorNorm::from_name(s)
    }
}

impl std::fmt::Display for ErrorNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The step-size controller of the adaptive methods.
///
/// With `err_n` the error norm of an accepted step (≤ 1), `k = q + 1` for an
/// embedded estimate of order `q`, and the factor clamped to
/// `[min_factor, max_factor]`, the next step is `h·factor` with
///
/// * [`Controller::I`]: `factor = safety·err_n^(−1/k)`, the classic
///   "integral" controller (Hairer, Nørsett & Wanner, *Solving ODEs I*,
///   2nd ed., §II.4);
/// * [`Controller::PI`]: `factor = safety·err_n^(−β₁)·err_(n−1)^(β₂)`, the
///   proportional–integral controller of K. Gustafsson, "Control theoretic
///   techniques for stepsize selection in explicit Runge–Kutta methods",
///   *ACM TOMS* 17(4), 533–554, 1991 (see also Hairer & Wanner, *Solving
///   ODEs II*, §IV.2), with integral gain 0.3/k and proportional gain 0.4/k,
///   that is `β₁ = 0.7/k` and `β₂ = 0.4/k` ([`PI_BETA1`], [`PI_BETA2`]).
///   `err_(n−1)` is the norm of the previous accepted step (1 before the
///   first; floored at 1e-4 as in Hairer's DOPRI5 code). Remembering it
///   damps the oscillation of the step size between accepted and rejected
///   steps that the I controller shows where stability, not accuracy,
///   limits the step.
///
/// Both controllers treat a rejected step alike: `factor =
/// safety·err_n^(−1/k)`, at most 1, and the step after a rejection may not
/// grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Controller {
    /// The integral controller (the only one before PI became the default).
    I,
    /// The proportional–integral controller (the default).
    #[default]
    PI,
}

/// The PI controller's weight of the current error, times `k` (see
/// [`Controller::PI`]).
pub const PI_BETA1: f64 = 0.7;

/// The PI controller's weight of the previous error, times `k` (see
/// [`Controller::PI`]).
pub const PI_BETA2: f64 = 0.4;

impl Controller {
    /// Every controller.
    pub const ALL: [Controller; 2] = [Controller::I, Controller::PI];

    /// The controller's lower-case name (`"i"`, `"pi"`), accepted by
    /// [`Controller::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Controller::I => "i",
            Controller::PI => "pi",
        }
    }

    /// Looks a controller up by its name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Result<Controller> {
        Controller::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown step-size controller `{name}`; expected i or pi"
                ))
            })
    }
}

impl std::str::FromStr for Controller {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Controller::from_name(s)
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Step-size control for adaptive methods.
///
/// The error of a step is measured as [`ErrorNorm`] says (by default each
/// sample on its own, with its own steps, so every sample meets its
/// tolerance); a step is accepted when it is at most 1. `rtol` must be finite
/// and ≥ 0, `atol` finite and > 0.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveOptions {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Safety factor applied to the optimal step (typically 0.9).
    pub safety: f64,
    /// Smallest factor a step may shrink by.
    pub min_factor: f64,
    /// Largest factor a step may grow by.
    pub max_factor: f64,
    /// Number of attempted steps (per sample with
    /// [`ErrorNorm::Independent`]) after which the solve fails, or the sample
    /// stops with [`SampleStatus::MaxSteps`] (see [`solve_partial`]).
    pub max_steps: usize,
    /// First step in normalised time; `None` selects it automatically.
    pub initial_step: Option<f64>,
    /// How the error is measured and which steps it controls (default:
    /// independent steps per sample).
    pub norm: ErrorNorm,
    /// How the next step follows from the error (default: PI).
    pub controller: Controller,
}

impl Default for AdaptiveOptions {
    fn default() -> Self {
        Self {
            rtol: 1e-5,
            atol: 1e-5,
            safety: 0.9,
            min_factor: 0.2,
            max_factor: 10.0,
            max_steps: 100_000,
            initial_step: None,
            norm: ErrorNorm::Independent,
            controller: Controller::PI,
        }
    }
}

impl AdaptiveOptions {
    /// Checks every setting (tolerances, factors, step limits) as a solve
    /// does, naming the first one out of range; lets a caller refuse bad
    /// options when they are set rather than when they are used.
    pub fn validate(&self) -> Result<()> {
        adaptive::validate(self)
    }
}

/// A complete solver configuration: a method and how it steps.
#[derive(Clone, Debug, PartialEq)]
pub struct SolverConfig {
    /// The method.
    pub method: Method,
    /// Fixed steps, or adaptive step control: one or the other, so no
    /// setting of one kind is silently ignored by the other.
    pub stepping: Stepping,
}

/// How a solver steps: on fixed steps, or adaptively.
#[derive(Clone, Debug, PartialEq)]
pub enum Stepping {
    /// Fixed steps placed by [`Steps`], with any method (embedded pairs then
    /// use their main weights only).
    Fixed(Steps),
    /// Adaptive step control; the method needs an embedded error estimate
    /// ([`Method::is_adaptive`]).
    Adaptive(AdaptiveOptions),
}

impl SolverConfig {
    /// Fixed steps with `method`.
    pub fn fixed(method: Method, steps: Steps) -> Self {
        Self {
            method,
            stepping: Stepping::Fixed(steps),
        }
    }

    /// Adaptive steps with `method` and the given tolerances, other options at
    /// their defaults.
    pub fn adaptive(method: Method, rtol: f64, atol: f64) -> Self {
        Self::adaptive_with(
            method,
            AdaptiveOptions {
                rtol,
                atol,
                ..AdaptiveOptions::default()
            },
        )
    }

    /// Adaptive steps with `method` and full control over the options.
    pub fn adaptive_with(method: Method, options: AdaptiveOptions) -> Self {
        Self {
            method,
            stepping: Stepping::Adaptive(options),
        }
    }

    /// Whether this configuration uses adaptive step control.
    pub fn is_adaptive(&self) -> bool {
        matches!(self.stepping, Stepping::Adaptive(_))
    }

    /// The fixed steps, or `None` with adaptive steps.
    pub fn steps(&self) -> Option<&Steps> {
        match &self.stepping {
            Stepping::Fixed(steps) => Some(steps),
            Stepping::Adaptive(_) => None,
        }
    }

    /// The adaptive options, or `None` with fixed steps.
    pub fn adaptive_options(&self) -> Option<&AdaptiveOptions> {
        match &self.stepping {
            Stepping::Adaptive(options) => Some(options),
            Stepping::Fixed(_) => None,
        }
    }
}

/// The time interval(s) to integrate over.
#[derive(Clone, Debug, PartialEq)]
pub enum Interval {
    /// Every sample goes from `start` to `end` (`end < start` integrates backwards).
    Common {
        /// Start time.
        start: f64,
        /// End time.
        end: f64,
    },
    /// Sample i goes from `starts[i]` to `ends[i]`.
    PerSample {
        /// Start time of each sample.
        starts: Vec<f64>,
        /// End time of each sample.
        ends: Vec<f64>,
    },
}

/// Counters of one solve.
///
/// With [`ErrorNorm::Independent`] the step counts are the sums over the
/// samples of [`SampleStats`]; otherwise the batch's steps (every sample
/// takes them all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of right-hand-side evaluations (batched calls).
    pub nfe: usize,
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps (adaptive methods only).
    pub rejected: usize,
}

impl std::ops::AddAssign for Stats {
    /// The counts of two solves together (chunks of one run).
    fn add_assign(&mut self, other: Stats) {
        self.nfe += other.nfe;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
    }
}

/// How the integration of one sample ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SampleStatus {
    /// The sample reached the end of its interval.
    #[default]
    Done,
    /// The sample used up [`AdaptiveOptions::max_steps`] attempted steps;
    /// its state is where it got to.
    MaxSteps,
    /// The sample's step size fell below the smallest usable step; its state
    /// is where it got to.
    StepSizeTooSmall,
    /// A step of the sample produced a non-finite state or error; its state
    /// is the last finite one.
    NonFinite,
}

/// Counters of one sample of a solve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleStats {
    /// The sample's accepted steps.
    pub accepted: usize,
    /// The sample's rejected steps.
    pub rejected: usize,
    /// The batched evaluations that advanced this sample (for a shared-step
    /// solve, all of [`Stats::nfe`]; with [`ErrorNorm::Independent`], those
    /// in which the sample was still stepping, without the calls that only
    /// carried it frozen). Their sum over the batch is the number of useful
    /// row evaluations.
    pub evals: usize,
    /// How the sample's integration ended.
    pub status: SampleStatus,
}

/// The result of a solve, in the state's float type `F`.
#[derive(Clone, Debug)]
pub struct Solution<F: Real = f64> {
    /// The states at the end of the interval, `[B, D]` (for a sample whose
    /// status is not [`SampleStatus::Done`], where it stopped).
    pub y: Array2<F>,
    /// The states at the requested normalised times, `[len(save_at), B, D]`
    /// (zero at times a stopped sample did not reach).
    pub saved: Array3<F>,
    /// Counters.
    pub stats: Stats,
    /// Counters and status of each sample (`B` entries).
    pub samples: Vec<SampleStats>,
}

/// Integrates `system` from `y0` over `interval`, returning the final states and
/// the states at the normalised times `save_at` (each in [0, 1], any order,
/// repeats allowed; for a common interval s = (t − start)/(end − start)).
///
/// Saved states: fixed-step Runge–Kutta solves split a step at every
/// requested time that is not on the step grid (times within 1e-12 of a grid
/// point are taken at that point), so saved states have the method's full
/// accuracy and saving on the grid changes nothing; multistep methods keep
/// their steps and integrate the step's own interpolating polynomial of the
/// slopes up to the requested time (dense output of the method's order, no
/// extra evaluations, saving changes nothing); adaptive solves never shorten a step for a
/// requested time, they interpolate — with the method's own dense output where
/// it has one (Dopri5) and cubic Hermite interpolation otherwise (Bosh3,
/// Tsit5); with [`ErrorNorm::Independent`] each sample within its own step.
///
/// Errors: [`Error::InvalidArgument`] for inconsistent inputs (shapes,
/// intervals, steps, tolerances, `save_at`, adaptive options for a multistep
/// method); when the integration fails (with independent steps: when any
/// sample fails, the error naming the first such sample),
/// [`Error::NonFinite`] (a non-finite state), [`Error::StepSizeTooSmall`] or
/// [`Error::MaxSteps`] (more than `max_steps` attempted steps); errors of
/// `system` are passed through. [`solve_partial`] returns the samples that
/// finished instead.
pub fn solve(
    system: &mut dyn OdeSystem,
    y0: ArrayView2<'_, f64>,
    config: &SolverConfig,
    interval: &Interval,
    save_at: &[f64],
) -> Result<Solution> {
    let (solution, failure) = solve_with_status(system, y0, config, interval, save_at)?;
    match failure {
        Some(error) => Err(error),
        None => Ok(solution),
    }
}

/// Refuses partial results (a failed sample stopping alone, as
/// [`solve_partial`] returns it) for a solver under which no sample can stop
/// alone: fixed steps, or adaptive steps with a shared-step
/// [`ErrorNorm`] (one step sequence for the whole batch). The samplers and
/// likelihoods call it, so every front end refuses such a setting by name
/// instead of ignoring it.
pub fn check_partial(config: &SolverConfig) -> Result<()> {
    let why = match config.adaptive_options() {
        Some(o) if o.norm == ErrorNorm::Independent => return Ok(()),
        Some(o) => format!("the shared-step error norm `{}`", o.norm.name()),
        None => format!("fixed steps ({})", config.method),
    };
    Err(Error::InvalidArgument(format!(
        "partial results need adaptive steps with the independent error norm (the default \
         for adaptive methods), where every sample has its own steps and can stop alone; \
         with {why} a failure stops the whole batch"
    )))
}

/// Like [`solve`], but with [`ErrorNorm::Independent`] a sample that fails
/// (too many steps, a step size underflow, a non-finite state) stops alone:
/// the others still finish, and [`Solution::samples`] tells each sample's
/// [`SampleStatus`]. The solve itself fails only for invalid inputs and
/// errors of `system`. With fixed or shared adaptive steps a failure stops the
/// whole batch, and this returns the same error as [`solve`].
pub fn solve_partial(
    system: &mut dyn OdeSystem,
    y0: ArrayView2<'_, f64>,
    config: &SolverConfig,
    interval: &Interval,
    save_at: &[f64],
) -> Result<Solution> {
    solve_with_status(system, y0, config, interval, save_at).map(|(solution, _)| solution)
}

/// The solve, with the error of the first failed sample (independent steps)
/// beside the partial solution.
fn solve_with_status(
    system: &mut dyn OdeSystem,
    y0: ArrayView2<'_, f64>,
    config: &SolverConfig,
    interval: &Interval,
    save_at: &[f64],
) -> Result<(Solution, Option<Error>)> {
    let batch = y0.nrows();
    let (starts, ends, saves) = prepare(y0, interval, save_at)?;
    let groups = match config.stepping {
        Stepping::Adaptive(_) => norm::NormGroups::new(system.norm_groups(), y0.ncols())?,
        Stepping::Fixed(_) => norm::NormGroups::whole(y0.ncols()),
    };
    let mut rhs = stepper::Rhs::new(system, starts, ends);
    let mut saved = Array3::zeros((save_at.len(), batch, y0.ncols()));
    let shared = |y, saved, stats| (shared_steps(y, saved, stats), None);
    let Some(tableau) = config.method.tableau() else {
        let Stepping::Fixed(steps) = &config.stepping else {
            return Err(Error::InvalidArgument(format!(
                "method {} is a fixed-step multistep method and cannot run with adaptive \
                 steps; give it fixed steps (a count, a size or a grid), or use one of \
                 bosh3, dopri5, tsit5 for adaptive steps",
                config.method
            )));
        };
        let (y, stats) = if config.method.kind() == MethodKind::FlowMultistep {
            flow::integrate(config.method, y0, &mut rhs, steps, &saves, &mut saved)?
        } else {
            multistep::integrate(config.method, y0, &mut rhs, steps, &saves, &mut saved)?
        };
        return Ok(shared(y, saved, stats));
    };
    match &config.stepping {
        Stepping::Fixed(steps) => {
            let solution = fixed_steps(tableau, y0, &mut rhs, steps, &saves, saved)?;
            Ok((solution, None))
        }
        Stepping::Adaptive(options) => {
            if !config.method.is_adaptive() {
                return Err(Error::InvalidArgument(format!(
                    "method {} has no embedded error estimate and cannot run with adaptive \
                     steps; use fixed steps or one of bosh3, dopri5, tsit5",
                    config.method
                )));
            }
            if options.norm == ErrorNorm::Independent {
                let run = independent::integrate(
                    tableau, y0, &mut rhs, options, &groups, &saves, &mut saved,
                )?;
                let solution = Solution {
                    y: run.y,
                    saved,
                    stats: run.stats,
                    samples: run.samples,
                };
                return Ok((solution, run.failure));
            }
            let mut stepper = stepper::Stepper::new(tableau, y0).with_groups(groups);
            let stats = adaptive::integrate(&mut stepper, &mut rhs, options, &saves, &mut saved)?;
            Ok(shared(stepper.into_state(), saved, stats))
        }
    }
}

/// Like [`solve`], with the state, the stages and the saved states in f32
/// ([`StatePrecision::F32`]): the explicit Runge–Kutta methods on fixed
/// steps only, other configurations refused by name
/// ([`check_precision`]). The steps and times are those of [`solve`]; the
/// two differ by f32 rounding only.
pub fn solve_f32(
    system: &mut dyn OdeSystem<f32>,
    y0: ArrayView2<'_, f32>,
    config: &SolverConfig,
    interval: &Interval,
    save_at: &[f64],
) -> Result<Solution<f32>> {
    check_precision(config, StatePrecision::F32)?;
    let (Some(tableau), Stepping::Fixed(steps)) = (config.method.tableau(), &config.stepping)
    else {
        return Err(Error::internal(
            "check_precision let a non-RK solver through",
        ));
    };
    let (starts, ends, saves) = prepare(y0, interval, save_at)?;
    let saved = Array3::zeros((save_at.len(), y0.nrows(), y0.ncols()));
    let mut rhs = stepper::Rhs::new(system, starts, ends);
    fixed_steps(tableau, y0, &mut rhs, steps, &saves, saved)
}

/// Refuses a state precision that `config` cannot run in: an f32 state
/// ([`StatePrecision::F32`]) needs an explicit Runge–Kutta method on fixed
/// steps. The samplers call it, so every front end refuses such a setting
/// by name instead of ignoring it.
pub fn check_precision(config: &SolverConfig, precision: StatePrecision) -> Result<()> {
    if precision == StatePrecision::F64 {
        return Ok(());
    }
    let why = if config.is_adaptive() {
        format!(
            "adaptive steps ({}) keep an f64 state, which their error control needs",
            config.method
        )
    } else if config.method.tableau().is_none() {
        format!("the multistep method {} keeps an f64 state", config.method)
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument(format!(
        "state precision {precision} applies to the explicit Runge–Kutta methods (euler, \
         midpoint, heun, rk4, bosh3, dopri5, tsit5) on fixed steps; {why}"
    )))
}

/// The checks and plans every solve starts with: a finite initial state,
/// per-sample bounds of `interval`, a bounded working memory (the state, the
/// stages of the largest tableau, the error estimate and the saved states,
/// in `F`) and the plan of saved times.
fn prepare<F: Real>(
    y0: ArrayView2<'_, F>,
    interval: &Interval,
    save_at: &[f64],
) -> Result<(Vec<f64>, Vec<f64>, SavePlan)> {
    if let Some(row) = stepper::first_non_finite_row(&y0) {
        if let Some((col, v)) = y0.row(row).iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "initial state is not finite: y0[{row}, {col}] = {v}"
            )));
        }
    }
    let (starts, ends) = interval_bounds(interval, y0.nrows())?;
    crate::error::check_allocation(
        &[y0.nrows(), y0.ncols(), 10 + save_at.len()],
        std::mem::size_of::<F>(),
        "the solver's working memory",
    )?;
    Ok((starts, ends, SavePlan::new(save_at)?))
}

/// A fixed-step Runge–Kutta solve with `tableau`, in the state's float type.
fn fixed_steps<F: Real>(
    tableau: ButcherTableau,
    y0: ArrayView2<'_, F>,
    rhs: &mut stepper::Rhs<'_, F>,
    steps: &Steps,
    saves: &SavePlan,
    mut saved: Array3<F>,
) -> Result<Solution<F>> {
    let mut stepper = stepper::Stepper::new(tableau, y0);
    let stats = fixed::integrate(&mut stepper, rhs, steps, saves, &mut saved)?;
    Ok(shared_steps(stepper.into_state(), saved, stats))
}

/// The solution of a shared-step solve: every sample took every step.
fn shared_steps<F: Real>(y: Array2<F>, saved: Array3<F>, stats: Stats) -> Solution<F> {
    let sample = SampleStats {
        accepted: stats.accepted,
        rejected: stats.rejected,
        evals: stats.nfe,
        status: SampleStatus::Done,
    };
    Solution {
        samples: vec![sample; y.nrows()],
        y,
        saved,
        stats,
    }
}

/// Per-sample start and end times, validated against the batch size.
fn interval_bounds(interval: &Interval, batch: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let (starts, ends) = match interval {
        Interval::Common { start, end } => (vec![*start; batch], vec![*end; batch]),
        Interval::PerSample { starts, ends } => {
            if starts.len() != batch || ends.len() != batch {
                return Err(Error::InvalidArgument(format!(
                    "per-sample interval has {} starts and {} ends for a batch of {batch}",
                    starts.len(),
                    ends.len()
                )));
            }
            (starts.clone(), ends.clone())
        }
    };
    let bad = starts
        .iter()
        .zip(&ends)
        .enumerate()
        .find(|(_, (a, b))| !a.is_finite() || !b.is_finite());
    if let Some((i, (a, b))) = bad {
        return Err(Error::InvalidArgument(format!(
            "interval of sample {i} is [{a}, {b}]; both ends must be finite"
        )));
    }
    // A common interval with non-finite ends and an empty batch is still wrong.
    if let Interval::Common { start, end } = interval {
        if !start.is_finite() || !end.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "interval [{start}, {end}] must have finite ends"
            )));
        }
    }
    Ok((starts, ends))
}

/// The requested save times, validated, with the order in which a forward
/// integration meets them.
pub(crate) struct SavePlan {
    times: Vec<f64>,
    order: Vec<usize>,
}

impl SavePlan {
    fn new(save_at: &[f64]) -> Result<Self> {
        if let Some((i, v)) = save_at
            .iter()
            .enumerate()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(Error::InvalidArgument(format!(
                "save_at[{i}] = {v} is not a normalised time in [0, 1]"
            )));
        }
        let mut order: Vec<usize> = (0..save_at.len()).collect();
        order.sort_by(|&a, &b| save_at[a].total_cmp(&save_at[b]));
        Ok(Self {
            times: save_at.to_vec(),
            order,
        })
    }

    /// The `k`-th requested time in increasing order, with its output slot.
    fn nth(&self, k: usize) -> Option<(usize, f64)> {
        self.order.get(k).map(|&slot| (slot, self.times[slot]))
    }
}
