//! Schedules: α(t), σ(t) and their time derivatives.
//!
//! [`Schedule`] is what the rest of the crate consumes. The `.fm`-backed
//! implementation and the built-in schedulers live here too.

/// The four numbers a schedule gives at one time t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coefficients {
    /// α(t), the weight of the data point x1.
    pub alpha: f64,
    /// σ(t), the weight of the noise x0.
    pub sigma: f64,
    /// α'(t).
    pub d_alpha: f64,
    /// σ'(t).
    pub d_sigma: f64,
}

/// A schedule (α, σ) of an affine probability path, with derivatives.
///
/// Implementations must be cheap to evaluate and must not allocate.
pub trait Schedule: Send + Sync + std::fmt::Debug {
    /// α, σ, α', σ' at time `t` (t = 0 is noise, t = 1 is data).
    fn coefficients(&self, t: f64) -> Coefficients;
}
