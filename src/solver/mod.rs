//! ODE solvers: explicit Runge–Kutta methods described as data (Butcher tableaus),
//! with fixed steps or adaptive step control.
//!
//! Solvers integrate a batch of states `y` of shape `[B, D]` in `f64`. Each sample
//! may have its own interval `[t_start, t_end]`: internally every sample shares
//! one normalised time `s ∈ [0, 1]` with `t = t_start + s·(t_end − t_start)`, and
//! the right-hand side is scaled by `t_end − t_start`, so adaptive steps stay
//! batch-wide. Stage buffers are allocated once per solve, never per step.

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut2};

use crate::Result;

/// The right-hand side dy/dt = f(t, y) of a batched ODE.
pub trait OdeSystem {
    /// Writes f(t, y) into `dy`. `y` and `dy` have shape `[B, D]`; `t` holds one
    /// time per sample (`B` values).
    fn rhs(&mut self, t: &[f64], y: ArrayView2<'_, f64>, dy: ArrayViewMut2<'_, f64>) -> Result<()>;
}

/// A Runge–Kutta method by name.
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

/// Step-size control for adaptive methods.
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
    /// Number of attempted steps after which the solve fails.
    pub max_steps: usize,
    /// First step in normalised time; `None` selects it automatically.
    pub initial_step: Option<f64>,
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
        }
    }
}

/// A complete solver configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SolverConfig {
    /// The Runge–Kutta method.
    pub method: Method,
    /// Step placement for fixed-step methods (ignored by adaptive ones).
    pub steps: Steps,
    /// Step control for adaptive methods (ignored by fixed-step ones).
    pub adaptive: AdaptiveOptions,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of right-hand-side evaluations (batched calls).
    pub nfe: usize,
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps (adaptive methods only).
    pub rejected: usize,
}

/// The result of a solve.
#[derive(Clone, Debug)]
pub struct Solution {
    /// The states at the end of the interval, `[B, D]`.
    pub y: Array2<f64>,
    /// The states at the requested normalised times, `[len(save_at), B, D]`.
    pub saved: Array3<f64>,
    /// Counters.
    pub stats: Stats,
}

/// Integrates `system` from `y0` over `interval`, returning the final states and
/// the states at the normalised times `save_at` (each in [0, 1]; for a common
/// interval s = (t − start)/(end − start)).
pub fn solve(
    system: &mut dyn OdeSystem,
    y0: ArrayView2<'_, f64>,
    config: &SolverConfig,
    interval: &Interval,
    save_at: &[f64],
) -> Result<Solution> {
    let _ = (system, y0, config, interval, save_at);
    todo!("implemented by the solver work")
}
