//! The affine probability path x_t = α(t)·x1 + σ(t)·x0.
//!
//! [`AffinePath`] evaluates points and velocities on the path for batches with
//! one time per sample, converts model outputs between the three
//! parameterisations of [`Prediction`], and builds flow-matching training
//! batches and losses with the same schedule the model will be sampled with.
//!
//! All arrays are f32 `[B, ...]` (any number of state axes); times and
//! coefficients are f64 and results are computed in f64 before rounding.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Zip};

use crate::scheduler::{Coefficients, Schedule};
use crate::times::{check_times, time_of};
use crate::{Error, Result};

/// Relative size below which a denominator of a prediction conversion counts as
/// zero (the conversion is then reported as singular).
pub const SINGULAR_TOLERANCE: f64 = 1e-12;

/// What a model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prediction {
    /// The velocity u = ẋ_t (name `velocity`; deliberately no `v` alias, which
    /// elsewhere means the diffusion "v-prediction", a different quantity).
    Velocity,
    /// The data point x1 (name `x1`; aliases `data`, `sample`).
    X1,
    /// The noise x0 (name `x0`; aliases `noise`, `epsilon`, `eps`).
    X0,
}

impl Prediction {
    /// All predictions, in declaration order.
    pub const ALL: [Prediction; 3] = [Prediction::Velocity, Prediction::X1, Prediction::X0];

    /// The canonical name (`velocity`, `x1`, `x0`), as used in `fmrt.prediction`.
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Velocity => "velocity",
            Prediction::X1 => "x1",
            Prediction::X0 => "x0",
        }
    }
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Prediction {
    type Err = Error;

    /// Parses a canonical name or an alias, ignoring ASCII case and surrounding
    /// whitespace.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "velocity" => Ok(Prediction::Velocity),
            "x1" | "data" | "sample" => Ok(Prediction::X1),
            "x0" | "noise" | "epsilon" | "eps" => Ok(Prediction::X0),
            _ => Err(Error::InvalidArgument(format!(
                "unknown prediction `{s}`; expected `velocity`, `x1` or `x0`"
            ))),
        }
    }
}

/// A flow-matching training batch: the path points and the regression target.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingBatch {
    /// x_t = α(t)·x1 + σ(t)·x0, shaped like x1.
    pub x_t: ArrayD<f32>,
    /// The target velocity ẋ_t = α'(t)·x1 + σ'(t)·x0, shaped like x1.
    pub target: ArrayD<f32>,
}

/// The affine path defined by a schedule (α, σ).
#[derive(Clone, Debug)]
pub struct AffinePath {
    schedule: Arc<dyn Schedule>,
}

fn check_same_shape(tensor: &str, shape: &[usize], reference: &[usize], what: &str) -> Result<()> {
    if shape == reference {
        Ok(())
    } else {
        Err(Error::Shape {
            tensor: tensor.to_string(),
            expected: format!("{reference:?} (the shape of {what})"),
            actual: shape.to_vec(),
        })
    }
}

fn check_batch(tensor: &str, shape: &[usize]) -> Result<()> {
    if shape.is_empty() {
        Err(Error::Shape {
            tensor: tensor.to_string(),
            expected: "[B, ...] (at least one axis)".to_string(),
            actual: shape.to_vec(),
        })
    } else {
        Ok(())
    }
}

/// Writes `out = a·p + b·q` sample by sample, with `(a, b)` from `coef(i)`.
///
/// Contiguous arrays (the usual case) are combined as flat rows; others
/// through ndarray's iterators.
pub(crate) fn combine(
    p: &ArrayViewD<'_, f32>,
    q: &ArrayViewD<'_, f32>,
    out: &mut ArrayViewMutD<'_, f32>,
    mut coef: impl FnMut(usize) -> Result<(f64, f64)>,
) -> Result<()> {
    let batch = out.shape().first().copied().unwrap_or(0);
    let row = out.len().checked_div(batch).unwrap_or(0);
    if let (Some(p), Some(q), Some(o)) = (p.as_slice(), q.as_slice(), out.as_slice_mut()) {
        if row > 0 && p.len() == o.len() && q.len() == o.len() {
            let rows = o
                .chunks_exact_mut(row)
                .zip(p.chunks_exact(row))
                .zip(q.chunks_exact(row));
            for (i, ((o, p), q)) in rows.enumerate() {
                let (a, b) = coef(i)?;
                for ((o, &pv), &qv) in o.iter_mut().zip(p).zip(q) {
                    *o = (a * f64::from(pv) + b * f64::from(qv)) as f32;
                }
            }
            return Ok(());
        }
    }
    for (i, ((p_i, q_i), mut o_i)) in p
        .outer_iter()
        .zip(q.outer_iter())
        .zip(out.outer_iter_mut())
        .enumerate()
    {
        let (a, b) = coef(i)?;
        Zip::from(&mut o_i)
            .and(&p_i)
            .and(&q_i)
            .for_each(|o, &pv, &qv| *o = (a * f64::from(pv) + b * f64::from(qv)) as f32);
    }
    Ok(())
}

impl AffinePath {
    /// The path of `schedule`.
    pub fn new(schedule: Arc<dyn Schedule>) -> Self {
        Self { schedule }
    }

    /// The schedule this path uses.
    pub fn schedule(&self) -> &Arc<dyn Schedule> {
        &self.schedule
    }

    /// α, σ, α', σ' at `t`, failing (naming t and the quantity) when one of them
    /// is not finite, e.g. σ' of a VP schedule at t = 1.
    pub fn coefficients(&self, t: f64) -> Result<Coefficients> {
        self.checked_coefficients(t, true)
    }

    /// The coefficients at `t`, checking α and σ and, if `derivatives`, α' and σ'.
    fn checked_coefficients(&self, t: f64, derivatives: bool) -> Result<Coefficients> {
        let c = self.schedule.coefficients(t);
        let checked: &[(&str, f64)] = &[
            ("alpha", c.alpha),
            ("sigma", c.sigma),
            ("d_alpha", c.d_alpha),
            ("d_sigma", c.d_sigma),
        ];
        let n = if derivatives { 4 } else { 2 };
        for &(name, v) in &checked[..n] {
            if !v.is_finite() {
                return Err(Error::singular(format!(
                    "schedule coefficient {name}({t}) = {v} is not finite"
                )));
            }
        }
        Ok(c)
    }

    fn check_pair(
        &self,
        x1: &ArrayViewD<'_, f32>,
        x0: &ArrayViewD<'_, f32>,
        t: &[f64],
        out: &ArrayViewMutD<'_, f32>,
        out_name: &str,
    ) -> Result<()> {
        check_batch("x1", x1.shape())?;
        check_same_shape("x0", x0.shape(), x1.shape(), "x1")?;
        check_same_shape(out_name, out.shape(), x1.shape(), "x1")?;
        check_times(t, x1.shape()[0])
    }

    /// Writes the path points x_t = α(t)·x1 + σ(t)·x0 into `x_t`.
    pub fn point_into(
        &self,
        x1: ArrayViewD<'_, f32>,
        x0: ArrayViewD<'_, f32>,
        t: &[f64],
        mut x_t: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.check_pair(&x1, &x0, t, &x_t, "x_t")?;
        combine(&x1, &x0, &mut x_t, |i| {
            let c = self.checked_coefficients(time_of(t, i), false)?;
            Ok((c.alpha, c.sigma))
        })
    }

    /// Writes the path velocities ẋ_t = α'(t)·x1 + σ'(t)·x0 into `dx_t`.
    pub fn velocity_into(
        &self,
        x1: ArrayViewD<'_, f32>,
        x0: ArrayViewD<'_, f32>,
        t: &[f64],
        mut dx_t: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.check_pair(&x1, &x0, t, &dx_t, "dx_t")?;
        combine(&x1, &x0, &mut dx_t, |i| {
            let c = self.coefficients(time_of(t, i))?;
            Ok((c.d_alpha, c.d_sigma))
        })
    }

    /// Builds a training batch: x_t and the target ẋ_t for data `x1`, noise `x0`
    /// and times `t` (one per sample or one for all).
    pub fn training_batch(
        &self,
        x1: ArrayViewD<'_, f32>,
        x0: ArrayViewD<'_, f32>,
        t: &[f64],
    ) -> Result<TrainingBatch> {
        let mut x_t = ArrayD::zeros(x1.raw_dim());
        let mut target = ArrayD::zeros(x1.raw_dim());
        self.point_into(x1.view(), x0.view(), t, x_t.view_mut())?;
        self.velocity_into(x1, x0, t, target.view_mut())?;
        Ok(TrainingBatch { x_t, target })
    }

    /// The coefficients (a, b) with `to = a·x_t + b·from` at one time, or an error
    /// naming t when the conversion is singular there.
    ///
    /// Singular cases: x1 → anything else needs σ ≠ 0; x0 → anything else needs
    /// α ≠ 0; velocity → x1 or x0 needs Δ = α·σ' − σ·α' ≠ 0 (a strictly
    /// monotone SNR). "Zero" means below [`SINGULAR_TOLERANCE`] relative to the
    /// size of the terms involved.
    pub fn conversion_coefficients(
        &self,
        from: Prediction,
        to: Prediction,
        t: f64,
    ) -> Result<(f64, f64)> {
        use Prediction::*;
        let c = self.coefficients(t)?;
        let (a, s, da, ds) = (c.alpha, c.sigma, c.d_alpha, c.d_sigma);
        let singular = |what: &str| {
            Error::singular(format!(
                "cannot convert a {from} prediction to {to} at t = {t}: {what} \
                 (alpha = {a}, sigma = {s}, d_alpha = {da}, d_sigma = {ds})"
            ))
        };
        let scale = a.abs() + s.abs();
        let sigma_zero = s.abs() <= SINGULAR_TOLERANCE * scale;
        let alpha_zero = a.abs() <= SINGULAR_TOLERANCE * scale;
        let delta = a * ds - s * da;
        let delta_zero = delta.abs() <= SINGULAR_TOLERANCE * ((a * ds).abs() + (s * da).abs());
        if from == to {
            return Ok((0.0, 1.0));
        }
        match from {
            X1 if sigma_zero => return Err(singular("sigma(t) = 0")),
            X0 if alpha_zero => return Err(singular("alpha(t) = 0")),
            Velocity if delta_zero => return Err(singular("alpha*d_sigma - sigma*d_alpha = 0")),
            _ => {}
        }
        let coef = match (from, to) {
            // x0 = (x_t − α x1)/σ; u = α' x1 + σ' x0.
            (X1, X0) => (1.0 / s, -a / s),
            (X1, _) => (ds / s, da - a * ds / s),
            // x1 = (x_t − σ x0)/α; u = α' x1 + σ' x0.
            (X0, X1) => (1.0 / a, -s / a),
            (X0, _) => (da / a, ds - s * da / a),
            // Solve x_t = α x1 + σ x0, u = α' x1 + σ' x0 for (x1, x0).
            (Velocity, X1) => (ds / delta, -s / delta),
            (Velocity, _) => (-da / delta, a / delta),
        };
        Ok(coef)
    }

    /// Converts a model output `m` of kind `from` at the points `x_t` and times
    /// `t` into kind `to`, writing into `out` (all shaped like `x_t`).
    ///
    /// With `to = Velocity` this is the velocity a solver integrates, e.g. for an
    /// x1-predicting model u = (σ'/σ)·x_t + (α' − α·σ'/σ)·m. Fails naming t when
    /// the conversion is singular there (see
    /// [`conversion_coefficients`](Self::conversion_coefficients)).
    pub fn convert(
        &self,
        from: Prediction,
        to: Prediction,
        m: ArrayViewD<'_, f32>,
        x_t: ArrayViewD<'_, f32>,
        t: &[f64],
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        check_batch("x_t", x_t.shape())?;
        check_same_shape("m", m.shape(), x_t.shape(), "x_t")?;
        check_same_shape("out", out.shape(), x_t.shape(), "x_t")?;
        check_times(t, x_t.shape()[0])?;
        combine(&x_t, &m, &mut out, |i| {
            self.conversion_coefficients(from, to, time_of(t, i))
        })
    }

    /// Converts a model output of kind `prediction` into a velocity
    /// (shorthand for [`convert`](Self::convert) with `to = Velocity`).
    pub fn to_velocity(
        &self,
        prediction: Prediction,
        m: ArrayViewD<'_, f32>,
        x_t: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.convert(prediction, Prediction::Velocity, m, x_t, t, out)
    }

    /// Converts a velocity `u` at `x_t` into a prediction of kind `prediction`
    /// (shorthand for [`convert`](Self::convert) with `from = Velocity`).
    pub fn from_velocity(
        &self,
        prediction: Prediction,
        u: ArrayViewD<'_, f32>,
        x_t: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.convert(Prediction::Velocity, prediction, u, x_t, t, out)
    }

    /// The flow-matching loss mean((u − ẋ_t)²) of the velocities `u` predicted at
    /// x_t for the pair (`x1`, `x0`) and times `t`, without building the target.
    pub fn loss(
        &self,
        u: ArrayViewD<'_, f32>,
        x1: ArrayViewD<'_, f32>,
        x0: ArrayViewD<'_, f32>,
        t: &[f64],
    ) -> Result<f64> {
        check_batch("x1", x1.shape())?;
        check_same_shape("x0", x0.shape(), x1.shape(), "x1")?;
        check_same_shape("u", u.shape(), x1.shape(), "x1")?;
        check_times(t, x1.shape()[0])?;
        let mut sum = 0.0f64;
        for (i, ((u_i, x1_i), x0_i)) in u
            .outer_iter()
            .zip(x1.outer_iter())
            .zip(x0.outer_iter())
            .enumerate()
        {
            let c = self.coefficients(time_of(t, i))?;
            Zip::from(&u_i)
                .and(&x1_i)
                .and(&x0_i)
                .for_each(|&uv, &a, &b| {
                    let d = f64::from(uv) - (c.d_alpha * f64::from(a) + c.d_sigma * f64::from(b));
                    sum += d * d;
                });
        }
        Ok(sum / u.len().max(1) as f64)
    }
}

/// The flow-matching loss mean((u − target)²) over all elements, in f64.
///
/// Returns 0 for empty arrays; fails when the shapes differ.
pub fn flow_matching_loss(u: ArrayViewD<'_, f32>, target: ArrayViewD<'_, f32>) -> Result<f64> {
    check_same_shape("u", u.shape(), target.shape(), "target")?;
    let mut sum = 0.0f64;
    Zip::from(&u).and(&target).for_each(|&a, &b| {
        let d = f64::from(a) - f64::from(b);
        sum += d * d;
    });
    Ok(sum / u.len().max(1) as f64)
}
