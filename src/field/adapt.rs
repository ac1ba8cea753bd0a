//! Adapters that turn a model's output into the velocity a solver integrates.
//!
//! They compose: a raw model is first converted to a velocity with the
//! schedule it was trained with ([`Predicted`]), then guided ([`Guided`]), then
//! moved to another schedule ([`ScheduleChange`]). Guidance and schedule changes
//! are linear in the velocity, so only the prediction conversion has to come
//! first.

use std::sync::Arc;

use ndarray::{concatenate, ArrayD, ArrayViewD, ArrayViewMutD, Axis, Zip};

use crate::field::{ExtraTensor, Extras, VelocityField};
use crate::path::{check_times, AffinePath, Prediction};
use crate::scheduler::{Coefficients, Schedule};
use crate::{Error, Result};

/// A field whose model predicts x1 or x0, seen as a velocity field through the
/// affine path of the schedule it was trained with (design.md §1).
///
/// x1-prediction is singular where σ = 0 (t = 1) and x0-prediction where α = 0
/// (t = 0); evaluating there is an error naming t.
pub struct Predicted {
    inner: Arc<dyn VelocityField>,
    path: AffinePath,
    prediction: Prediction,
}

impl Predicted {
    /// Converts the outputs of `inner`, which predicts `prediction`, into velocities
    /// along the path of `trained_with`.
    pub fn new(
        inner: Arc<dyn VelocityField>,
        trained_with: Arc<dyn Schedule>,
        prediction: Prediction,
    ) -> Self {
        Self {
            inner,
            path: AffinePath::new(trained_with),
            prediction,
        }
    }
}

impl VelocityField for Predicted {
    fn state_shape(&self) -> &[usize] {
        self.inner.state_shape()
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.velocity_with(x, t, &Extras::new(), out)
    }

    fn velocity_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        check_call(&x, t, &out)?;
        if self.prediction == Prediction::Velocity {
            return self.inner.velocity_with(x, t, extras, out);
        }
        let mut raw = ArrayD::<f32>::zeros(x.raw_dim());
        self.inner
            .velocity_with(x.view(), t, extras, raw.view_mut())?;
        self.path
            .to_velocity(self.prediction, raw.view(), x, t, out)
    }
}

/// Classifier-free guidance: u = (1 + w)·u(x, t, c) − w·u(x, t, ∅).
///
/// The conditional and unconditional halves go through the inner field in one
/// batched call of twice the batch size. The condition c comes with each call as
/// [`Extras`]; the null condition ∅ is fixed here, one row per extra, repeated
/// for every sample. w = 0 is plain conditional sampling and costs one ordinary
/// call.
pub struct Guided {
    inner: Arc<dyn VelocityField>,
    scale: f64,
    null: Extras,
}

impl Guided {
    /// Guides `inner` with scale `scale` (w) and the null condition `null`, which
    /// holds each conditioning input once (first axis of length 1).
    pub fn new(inner: Arc<dyn VelocityField>, scale: f64, null: Extras) -> Result<Self> {
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "guidance scale {scale} is not finite"
            )));
        }
        if null.is_empty() {
            return Err(Error::InvalidArgument(
                "classifier-free guidance needs a null condition (e.g. the null label)".to_string(),
            ));
        }
        null.check_batch(1)?;
        Ok(Self { inner, scale, null })
    }

    /// A null label `null_label` for the int64 input `input` (shape `[1]`).
    pub fn null_label(input: &str, null_label: i64) -> Extras {
        Extras::new().with(input, ExtraTensor::labels(&[null_label]))
    }

    /// The guidance scale w.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

impl VelocityField for Guided {
    fn state_shape(&self) -> &[usize] {
        self.inner.state_shape()
    }

    fn velocity(
        &self,
        _x: ArrayViewD<'_, f32>,
        _t: &[f64],
        _out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        Err(Error::InvalidArgument(format!(
            "classifier-free guidance needs a condition: pass {} with each call",
            self.null.describe()
        )))
    }

    fn velocity_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let batch = check_call(&x, t, &out)?;
        if self.scale == 0.0 {
            return self.inner.velocity_with(x, t, extras, out);
        }
        let null_rows = repeat_rows(&self.null, batch)?;
        let both_extras = extras.concat(&null_rows)?;
        let both_x = concatenate(Axis(0), &[x.view(), x.view()])
            .map_err(|e| Error::InvalidArgument(format!("cannot stack the state: {e}")))?;
        let both_t: Vec<f64> = if t.len() == 1 {
            t.to_vec()
        } else {
            t.iter().chain(t.iter()).copied().collect()
        };
        let mut both_out = ArrayD::<f32>::zeros(both_x.raw_dim());
        self.inner
            .velocity_with(both_x.view(), &both_t, &both_extras, both_out.view_mut())?;
        let (conditional, unconditional) = both_out.view().split_at(Axis(0), batch);
        let w = self.scale;
        Zip::from(&mut out)
            .and(&conditional)
            .and(&unconditional)
            .for_each(|o, &c, &u| *o = ((1.0 + w) * f64::from(c) - w * f64::from(u)) as f32);
        Ok(())
    }
}

/// Checks the arguments of a velocity call before an adapter indexes them:
/// `x` has a batch axis, `out` has the shape of `x`, and `t` holds one time for
/// all samples or one per sample (all finite). Returns the batch size.
fn check_call(x: &ArrayViewD<'_, f32>, t: &[f64], out: &ArrayViewMutD<'_, f32>) -> Result<usize> {
    let Some(&batch) = x.shape().first() else {
        return Err(Error::Shape {
            tensor: "x".to_string(),
            expected: "[B, ...] (a batch axis first)".to_string(),
            actual: x.shape().to_vec(),
        });
    };
    if out.shape() != x.shape() {
        return Err(Error::Shape {
            tensor: "out".to_string(),
            expected: format!("{:?} (the shape of x)", x.shape()),
            actual: out.shape().to_vec(),
        });
    }
    check_times(t, batch)?;
    Ok(batch)
}

/// `extras` (one row each) repeated to `batch` rows.
fn repeat_rows(extras: &Extras, batch: usize) -> Result<Extras> {
    let mut repeated = Extras::new();
    for (name, tensor) in extras.iter() {
        let rows = match tensor {
            ExtraTensor::Int64(a) => ExtraTensor::Int64(broadcast_first(a.view(), batch)?),
            ExtraTensor::Float32(a) => ExtraTensor::Float32(broadcast_first(a.view(), batch)?),
        };
        repeated.insert(name, rows);
    }
    Ok(repeated)
}

fn broadcast_first<T: Clone>(a: ArrayViewD<'_, T>, batch: usize) -> Result<ArrayD<T>> {
    let mut shape = a.shape().to_vec();
    shape[0] = batch;
    a.broadcast(shape.clone())
        .map(|b| b.to_owned())
        .ok_or_else(|| {
            Error::InvalidArgument(format!("cannot repeat {:?} to {shape:?}", a.shape()))
        })
}

/// The time map of a schedule change at one sampling time r.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeMap {
    /// The training time t_r with the same SNR as the sampling schedule at r.
    pub t: f64,
    /// dt_r/dr.
    pub dt: f64,
    /// The scale s_r with x̄_r = s_r·x_{t_r}.
    pub s: f64,
    /// ds_r/dr.
    pub ds: f64,
}

/// Samples a model trained with one schedule (α, σ) along another (ᾱ, σ̄).
///
/// Both paths pass through the same points up to a scale: with the SNR
/// ρ = α/σ, the training time t_r = ρ⁻¹(ρ̄(r)) and s_r = σ̄(r)/σ(t_r), the
/// point x̄_r = s_r·x_{t_r} and
/// ū(x, r) = (ṡ_r/s_r)·x + s_r·ṫ_r·u(x/s_r, t_r) (design.md §1).
///
/// t_r is the root of g(t) = α(t)·σ̄(r) − ᾱ(r)·σ(t), which changes sign once on
/// [0, 1] when ρ is increasing; it is bracketed by bisection and polished by
/// Newton steps. Writing the SNR equation as g keeps everything finite at the
/// ends, where ρ is 0 or infinite: ṫ_r = −∂_r g / ∂_t g by implicit
/// differentiation, and s_r is taken as ᾱ/α(t_r) or σ̄/σ(t_r), whichever divides
/// by the larger number.
pub struct ScheduleChange {
    inner: Arc<dyn VelocityField>,
    trained: Arc<dyn Schedule>,
    sampled: Arc<dyn Schedule>,
}

impl ScheduleChange {
    /// Samples `inner`, trained with `trained`, along `sampled`.
    pub fn new(
        inner: Arc<dyn VelocityField>,
        trained: Arc<dyn Schedule>,
        sampled: Arc<dyn Schedule>,
    ) -> Self {
        Self {
            inner,
            trained,
            sampled,
        }
    }

    /// The time map at sampling time `r` ∈ [0, 1].
    pub fn time_map(&self, r: f64) -> Result<TimeMap> {
        let target = self.sampled.coefficients(r);
        check_finite("sampling", r, &target)?;
        let t = self.solve_training_time(&target);
        let c = self.trained.coefficients(t);
        check_finite("training", t, &c)?;
        let g_t = c.d_alpha * target.sigma - target.alpha * c.d_sigma;
        let g_r = c.alpha * target.d_sigma - target.d_alpha * c.sigma;
        if g_t == 0.0 || !g_t.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "schedule change is singular at r = {r}: the training SNR is flat at t = {t}"
            )));
        }
        let dt = -g_r / g_t;
        let (s, ds) = if c.alpha.abs() >= c.sigma.abs() {
            let s = target.alpha / c.alpha;
            (s, (target.d_alpha - s * c.d_alpha * dt) / c.alpha)
        } else {
            let s = target.sigma / c.sigma;
            (s, (target.d_sigma - s * c.d_sigma * dt) / c.sigma)
        };
        if !(s > 0.0 && s.is_finite() && ds.is_finite() && dt.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "schedule change is singular at r = {r} (t_r = {t}, s = {s}, ds = {ds}, dt = {dt})"
            )));
        }
        Ok(TimeMap { t, dt, s, ds })
    }

    /// The root t of g(t) = α(t)·σ̄ − ᾱ·σ(t) in [0, 1], clamped to the nearer end
    /// when g does not change sign there.
    fn solve_training_time(&self, target: &Coefficients) -> f64 {
        let g = |t: f64| {
            let c = self.trained.coefficients(t);
            c.alpha * target.sigma - target.alpha * c.sigma
        };
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        let (g_lo, g_hi) = (g(lo), g(hi));
        if g_lo >= 0.0 {
            return lo;
        }
        if g_hi <= 0.0 {
            return hi;
        }
        // Bisection to a narrow bracket, then Newton steps kept inside it.
        for _ in 0..30 {
            let mid = 0.5 * (lo + hi);
            if g(mid) < 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut t = 0.5 * (lo + hi);
        for _ in 0..8 {
            let c = self.trained.coefficients(t);
            let value = c.alpha * target.sigma - target.alpha * c.sigma;
            let slope = c.d_alpha * target.sigma - target.alpha * c.d_sigma;
            if value == 0.0 || slope == 0.0 || !slope.is_finite() {
                break;
            }
            let next = t - value / slope;
            if !(lo..=hi).contains(&next) {
                break;
            }
            if value < 0.0 {
                lo = t;
            } else {
                hi = t;
            }
            let done = (next - t).abs() <= 1e-15;
            t = next;
            if done {
                break;
            }
        }
        t
    }
}

fn check_finite(which: &str, t: f64, c: &Coefficients) -> Result<()> {
    if [c.alpha, c.sigma, c.d_alpha, c.d_sigma]
        .iter()
        .all(|v| v.is_finite())
    {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "the {which} schedule is not finite at t = {t}: α = {}, σ = {}, α' = {}, σ' = {}",
            c.alpha, c.sigma, c.d_alpha, c.d_sigma
        )))
    }
}

impl VelocityField for ScheduleChange {
    fn state_shape(&self) -> &[usize] {
        self.inner.state_shape()
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.velocity_with(x, t, &Extras::new(), out)
    }

    fn velocity_with(
        &self,
        x: ArrayViewD<'_, f32>,
        r: &[f64],
        extras: &Extras,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let batch = check_call(&x, r, &out)?;
        // Solvers pass one time per sample, usually all equal: solve the time
        // map once per run of equal times, not once per sample.
        let mut maps: Vec<TimeMap> = Vec::with_capacity(r.len());
        for (i, &ri) in r.iter().enumerate() {
            let map = match maps.last() {
                Some(&previous) if i > 0 && r[i - 1] == ri => previous,
                _ => self.time_map(ri)?,
            };
            maps.push(map);
        }
        let mut scaled = x.to_owned();
        for (i, mut row) in scaled.outer_iter_mut().enumerate().take(batch) {
            let s = maps[if maps.len() == 1 { 0 } else { i }].s;
            row.mapv_inplace(|v| (f64::from(v) / s) as f32);
        }
        let t: Vec<f64> = maps.iter().map(|m| m.t).collect();
        let mut inner_out = ArrayD::<f32>::zeros(x.raw_dim());
        self.inner
            .velocity_with(scaled.view(), &t, extras, inner_out.view_mut())?;
        for (i, ((mut o, xi), ui)) in out
            .outer_iter_mut()
            .zip(x.outer_iter())
            .zip(inner_out.outer_iter())
            .enumerate()
        {
            let m = maps[if maps.len() == 1 { 0 } else { i }];
            let (a, b) = (m.ds / m.s, m.s * m.dt);
            Zip::from(&mut o)
                .and(&xi)
                .and(&ui)
                .for_each(|o, &xv, &uv| *o = (a * f64::from(xv) + b * f64::from(uv)) as f32);
        }
        Ok(())
    }
}
