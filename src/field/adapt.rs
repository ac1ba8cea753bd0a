//! Adapters that turn a model's output into the velocity a solver integrates.
//!
//! They compose: a network on its own clock is first read in fmrt's time
//! ([`Clock`]), then converted to a velocity with the schedule it was trained
//! with ([`Predicted`]), then guided ([`Guided`]), then moved to another
//! schedule ([`ScheduleChange`]). Guidance and schedule changes
//! are linear in the velocity, so only the prediction conversion has to come
//! first.

use std::sync::{Arc, Mutex};

mod affine;
mod clock;

pub use affine::{Affine, AffineMap, AffineMaps};
pub use clock::{check_time_scale, Clock, ClockMap, TimeDirection};

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, Zip};

use crate::field::check_times;
use crate::field::{Derivatives, ExtraTensor, Extras, NullCondition, VelocityField};
use crate::path::{AffinePath, Prediction};
use crate::scheduler::{Coefficients, Schedule};
use crate::{Error, Result};

/// A field whose model predicts x1 or x0, seen as a velocity field through the
/// affine path of the schedule it was trained with (design.md §1).
///
/// The velocity is u(x, t) = α'(t)·x̂1 + σ'(t)·x̂0, with the model giving one
/// estimate and the path the other: for an x1 model x̂1 = m and
/// x̂0 = (x − α·m)/σ; for an x0 model x̂0 = m and x̂1 = (x − σ·m)/α. This is the
/// usual conversion, but it divides by σ = 0 at t = 1 (x1) and by α = 0 at
/// t = 0 (x0), times every solver evaluates. So within
/// [`ENDPOINT_MARGIN`](PredictionMap::ENDPOINT_MARGIN) of the singular end the
/// model and the path are evaluated at the edge of the margin, t_c = 1 − ε
/// (resp. ε), while α′ and σ′ stay at t: the velocity of the straight
/// continuation between the model's estimates. For an x1 model the sample at
/// t = 1 is then the model's own x1 prediction at 1 − ε; for an x0 model the
/// start uses the model's estimate at ε. Elsewhere nothing changes.
///
/// The conversion u = a(t)·x + b(t)·m(x, t_c) is one [`Affine`] map, so JVPs
/// and the divergence follow from the model's.
pub type Predicted = Affine<PredictionMap>;

/// The maps of a [`Predicted`] field.
pub struct PredictionMap {
    path: AffinePath,
    prediction: Prediction,
}

impl Affine<PredictionMap> {
    /// Converts the outputs of `inner`, which predicts `prediction`, into velocities
    /// along the path of `trained_with`.
    pub fn new(
        inner: Arc<dyn VelocityField>,
        trained_with: Arc<dyn Schedule>,
        prediction: Prediction,
    ) -> Self {
        Affine::from_maps(
            inner,
            PredictionMap {
                path: AffinePath::new(trained_with),
                prediction,
            },
        )
    }
}

impl PredictionMap {
    /// The margin ε by the singular end (t = 1 for x1, t = 0 for x0 models)
    /// inside which the model is evaluated at the margin's edge.
    pub const ENDPOINT_MARGIN: f64 = 1e-3;

    /// The time the model is evaluated at for time `t` (see [`Predicted`]).
    fn model_time(&self, t: f64) -> f64 {
        match self.prediction {
            Prediction::X1 => t.min(1.0 - Self::ENDPOINT_MARGIN),
            Prediction::X0 => t.max(Self::ENDPOINT_MARGIN),
            Prediction::Velocity => t,
        }
    }

    /// (a, b) with u = a·x + b·m at time `t`, the model evaluated at `t_c`.
    fn coefficients(&self, t: f64, t_c: f64) -> Result<(f64, f64)> {
        let now = self.path.coefficients(t)?;
        let at = self.path.coefficients(t_c)?;
        let singular = |what: &str| {
            Error::singular(format!(
                "cannot convert a {} prediction to a velocity at t = {t}: {what} at t = {t_c}",
                self.prediction
            ))
        };
        match self.prediction {
            // u = α'·m + σ'·(x − α_c·m)/σ_c
            Prediction::X1 if at.sigma == 0.0 => Err(singular("sigma = 0")),
            Prediction::X1 => Ok((
                now.d_sigma / at.sigma,
                now.d_alpha - now.d_sigma * at.alpha / at.sigma,
            )),
            // u = σ'·m + α'·(x − σ_c·m)/α_c
            Prediction::X0 if at.alpha == 0.0 => Err(singular("alpha = 0")),
            Prediction::X0 => Ok((
                now.d_alpha / at.alpha,
                now.d_sigma - now.d_alpha * at.sigma / at.alpha,
            )),
            Prediction::Velocity => Ok((0.0, 1.0)),
        }
    }
}

impl AffineMaps for PredictionMap {
    fn map_at(&self, t: f64) -> Result<AffineMap> {
        let t_c = self.model_time(t);
        let (a, b) = self.coefficients(t, t_c)?;
        Ok(AffineMap {
            t: t_c,
            s: 1.0,
            a,
            b,
        })
    }

    fn is_identity(&self) -> bool {
        self.prediction == Prediction::Velocity
    }
}

/// Classifier-free guidance: u = (1 + w)·u(x, t, c) − w·u(x, t, ∅).
///
/// The conditional and unconditional rows go through the inner field in one
/// batched call of twice the batch size, side by side (sample i's conditional
/// row, then its unconditional row), so a model exported with a fixed batch
/// of 2 gets both rows of one sample in each call. The condition c comes with
/// each call as [`Extras`]; the null condition ∅ is fixed here
/// ([`NullCondition`]: zeros, a fill value or a given tensor per input; the
/// inputs it does not name keep their conditional value). w = 0 is plain
/// conditional sampling and costs one ordinary call.
///
/// A guidance interval [a, b] ([`with_interval`](Guided::with_interval))
/// applies guidance only to samples whose time t (the time this field is
/// called with) lies in [a, b]; elsewhere the field is the plain conditional
/// u(x, t, c), exactly, and its JVP and divergence follow the same rule. A call
/// in which no sample is inside the interval costs one ordinary call.
pub struct Guided {
    inner: Arc<dyn VelocityField>,
    scale: f64,
    null: NullCondition,
    interval: [f64; 2],
    /// The interleaved conditional and null rows of the last call's extras
    /// (by their [`Extras::identity`]) and batch: a solve passes the same
    /// extras every step, so they are built once per solve.
    last_pair: Mutex<Option<PairedExtras>>,
    /// The doubled state and its output of the last velocity call, kept so
    /// that the calls of a solve reuse them instead of allocating both per
    /// step (a concurrent call finds none and allocates its own).
    scratch: Mutex<Option<CallBuffers>>,
}

/// Buffers of one guided velocity call: the interleaved rows and, for an
/// inner field that lends no buffer of its own, its output for them.
#[derive(Default)]
struct CallBuffers {
    x: Vec<f32>,
    out: Vec<f32>,
}

/// Extras interleaved with their null condition, for one batch size.
struct PairedExtras {
    identity: u64,
    batch: usize,
    paired: Arc<Extras>,
}

impl Guided {
    /// Guides `inner` with scale `scale` (w) and the null condition `null`, which
    /// holds the unconditional value of each conditioning input it names (first
    /// axis of length 1, repeated for every sample).
    pub fn new(inner: Arc<dyn VelocityField>, scale: f64, null: Extras) -> Result<Self> {
        null.check_batch(1)?;
        Self::with_null(inner, scale, NullCondition::from_extras(&null))
    }

    /// Guides `inner` with scale `scale` (w) and the per-input null condition
    /// `null`.
    pub fn with_null(
        inner: Arc<dyn VelocityField>,
        scale: f64,
        null: NullCondition,
    ) -> Result<Self> {
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
        Ok(Self {
            inner,
            scale,
            null,
            interval: [f64::NEG_INFINITY, f64::INFINITY],
            last_pair: Mutex::new(None),
            scratch: Mutex::new(None),
        })
    }

    /// Applies guidance only for t in [`start`, `end`] (see the type's
    /// documentation). Errors unless both are finite and `start` ≤ `end`.
    pub fn with_interval(mut self, start: f64, end: f64) -> Result<Self> {
        check_guidance_interval(start, end)?;
        self.interval = [start, end];
        Ok(self)
    }

    /// The guidance interval [a, b] (infinite ends when guidance applies at
    /// every time).
    pub fn interval(&self) -> [f64; 2] {
        self.interval
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
    fn state_shape(&self) -> Option<&[usize]> {
        self.inner.state_shape()
    }

    fn derivatives(&self) -> Derivatives {
        self.inner.derivatives()
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let batch = check_call(&x, t, &out)?;
        self.expect_condition(extras)?;
        let Some(weights) = self.weights(t, batch) else {
            return self.inner.velocity(x, t, extras, out);
        };
        let taken = self.scratch.lock().map(|mut s| s.take()).unwrap_or(None);
        let mut buffers = taken.unwrap_or_default();
        let shape = interleave_rows_into(x, 0, &mut buffers.x)?;
        let (t2, paired) = (self.stacked_times(t), self.paired_extras(extras, batch)?);
        let both_x = ArrayViewD::from_shape(shape.as_slice(), &buffers.x)
            .map_err(|e| Error::InvalidArgument(format!("the guided state: {e}")))?;
        // The mix reads the inner field's output where it lies (an ONNX
        // model's own output buffer), without a copy into `buffers.out`.
        let mut out = Some(out);
        self.inner
            .lend_velocity(both_x, &t2, &paired, &mut buffers.out, &mut |both_out| {
                if let Some(out) = out.take() {
                    mix(both_out, &weights, out);
                }
                Ok(())
            })?;
        if let Ok(mut slot) = self.scratch.lock() {
            *slot = Some(buffers);
        }
        Ok(())
    }

    /// J = (1 + w)·J_c − w·J_∅, both halves in one batched JVP call.
    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let batch = check_call(&x, t, &out)?;
        self.expect_condition(extras)?;
        let Some(weights) = self.weights(t, batch) else {
            return self.inner.jvp(x, t, extras, v, out);
        };
        let both = self.stack(x, t, extras)?;
        let both_v = interleave_rows(v, 0)?;
        let mut both_out = ArrayD::<f32>::zeros(both.x.raw_dim());
        self.inner.jvp(
            both.x.view(),
            &both.t,
            &both.extras,
            both_v.view(),
            both_out.view_mut(),
        )?;
        mix(both_out.view(), &weights, out);
        Ok(())
    }

    /// Both halves of the velocity and of every product in one stacked call,
    /// each mixed as in [`velocity`](Self::velocity).
    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        velocity: ArrayViewMutD<'_, f32>,
        mut products: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let (batch, _) = check_stacked_call(&x, t, &v, &velocity, &products)?;
        self.expect_condition(extras)?;
        let Some(weights) = self.weights(t, batch) else {
            return self
                .inner
                .velocity_and_jvps(x, t, extras, v, velocity, products);
        };
        let both = self.stack(x, t, extras)?;
        let both_v = interleave_rows(v, 1)?;
        let mut both_velocity = ArrayD::<f32>::zeros(both.x.raw_dim());
        let mut both_products = ArrayD::<f32>::zeros(both_v.raw_dim());
        self.inner.velocity_and_jvps(
            both.x.view(),
            &both.t,
            &both.extras,
            both_v.view(),
            both_velocity.view_mut(),
            both_products.view_mut(),
        )?;
        mix(both_velocity.view(), &weights, velocity);
        for (both_p, products_p) in both_products.outer_iter().zip(products.outer_iter_mut()) {
            mix(both_p, &weights, products_p);
        }
        Ok(())
    }

    /// div = (1 + w)·div_c − w·div_∅, both halves in one batched call.
    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        let batch = x.shape().first().copied().unwrap_or(0);
        check_times(t, batch)?;
        self.expect_condition(extras)?;
        let Some(weights) = self.weights(t, batch) else {
            return self.inner.divergence(x, t, extras, out);
        };
        let both = self.stack(x, t, extras)?;
        let mut both_out = vec![0.0; 2 * both.batch];
        self.inner
            .divergence(both.x.view(), &both.t, &both.extras, &mut both_out)?;
        for ((o, pair), w) in out.iter_mut().zip(both_out.chunks_exact(2)).zip(&weights) {
            *o = (1.0 + w) * pair[0] - w * pair[1];
        }
        Ok(())
    }
}

/// The conditional and unconditional halves of a guided call, stacked.
struct Stacked {
    batch: usize,
    x: ArrayD<f32>,
    t: Vec<f64>,
    extras: Arc<Extras>,
}

impl Guided {
    /// Refuses a call without the condition guidance steers towards.
    fn expect_condition(&self, extras: &Extras) -> Result<()> {
        if !extras.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "classifier-free guidance needs a condition: pass the conditioning inputs \
             (whose null condition is {}) with each call",
            self.null.describe()
        )))
    }

    /// Every row of `x` twice, side by side: with the caller's condition,
    /// then with the null condition.
    fn stack(&self, x: ArrayViewD<'_, f32>, t: &[f64], extras: &Extras) -> Result<Stacked> {
        let batch = x.shape().first().copied().unwrap_or(0);
        Ok(Stacked {
            batch,
            x: interleave_rows(x, 0)?,
            t: self.stacked_times(t),
            extras: self.paired_extras(extras, batch)?,
        })
    }

    /// The times of the stacked rows: one for all, or each sample's twice.
    fn stacked_times(&self, t: &[f64]) -> Vec<f64> {
        if t.len() == 1 {
            t.to_vec()
        } else {
            t.iter().flat_map(|&ti| [ti, ti]).collect()
        }
    }

    /// `extras` interleaved with their null condition for a batch of
    /// `batch`, built once for each contents and batch (see `last_pair`).
    fn paired_extras(&self, extras: &Extras, batch: usize) -> Result<Arc<Extras>> {
        let identity = extras.identity();
        let last = || self.last_pair.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pair) = last().as_ref() {
            if pair.identity == identity && pair.batch == batch {
                return Ok(pair.paired.clone());
            }
        }
        // A conditioning input of one row serves every sample: spread it
        // first, so each sample's pair gets it (the copy only when needed).
        let spread;
        let one_row = |(name, t): (&str, &ExtraTensor)| {
            !extras.is_shared(name) && t.shape().first() == Some(&1)
        };
        let extras = if batch > 1 && extras.iter().any(one_row) {
            spread = extras.for_batch(batch)?;
            &spread
        } else {
            extras
        };
        let null = self.null.resolve(extras, batch)?;
        let paired = Arc::new(extras.interleave(&null)?);
        // Built outside the lock: concurrent solves on other extras only
        // replace each other's pair.
        *last() = Some(PairedExtras {
            identity,
            batch,
            paired: paired.clone(),
        });
        Ok(paired)
    }

    /// The guidance scale of each of the `batch` samples at times `t`: w inside
    /// the interval, 0 outside; `None` when no sample is guided (w = 0, or
    /// every time outside the interval), so the caller makes one plain call.
    fn weights(&self, t: &[f64], batch: usize) -> Option<Vec<f64>> {
        let [a, b] = self.interval;
        let weight = |t: f64| {
            if (a..=b).contains(&t) {
                self.scale
            } else {
                0.0
            }
        };
        let weights: Vec<f64> = if t.len() == 1 {
            vec![weight(t[0]); batch]
        } else {
            t.iter().map(|&t| weight(t)).collect()
        };
        weights.iter().any(|&w| w != 0.0).then_some(weights)
    }
}

/// Checks a guidance interval [start, end]: finite ends, start ≤ end.
pub fn check_guidance_interval(start: f64, end: f64) -> Result<()> {
    if !(start.is_finite() && end.is_finite() && start <= end) {
        return Err(Error::InvalidArgument(format!(
            "guidance interval [{start}, {end}] needs finite ends with start ≤ end"
        )));
    }
    Ok(())
}

/// (1 + w_i)·conditional − w_i·unconditional into `out`, row i with weight
/// `weights[i]`; `both` holds each sample's conditional row followed by its
/// unconditional row. A row with w_i = 0 is the conditional row exactly.
fn mix(both: ArrayViewD<'_, f32>, weights: &[f64], mut out: ArrayViewMutD<'_, f32>) {
    let row = out.len() / weights.len().max(1);
    if row == 0 {
        return;
    }
    if let (Some(both), Some(out)) = (both.as_slice(), out.as_slice_mut()) {
        // Row-major buffers (every call of a sampler): slice loops.
        let samples = out.chunks_exact_mut(row).zip(both.chunks_exact(2 * row));
        for ((o, pair), &w) in samples.zip(weights) {
            let (c, u) = pair.split_at(row);
            for ((o, &c), &u) in o.iter_mut().zip(c).zip(u) {
                *o = ((1.0 + w) * f64::from(c) - w * f64::from(u)) as f32;
            }
        }
        return;
    }
    let pairs = both.axis_chunks_iter(Axis(0), 2);
    for ((mut o, pair), &w) in out.outer_iter_mut().zip(pairs).zip(weights) {
        let (c, u) = (pair.index_axis(Axis(0), 0), pair.index_axis(Axis(0), 1));
        Zip::from(&mut o)
            .and(&c)
            .and(&u)
            .for_each(|o, &c, &u| *o = ((1.0 + w) * f64::from(c) - w * f64::from(u)) as f32);
    }
}

/// Every row of `a` along `axis` twice in a row (rows `a₀ a₀ a₁ a₁ …`).
fn interleave_rows(a: ArrayViewD<'_, f32>, axis: usize) -> Result<ArrayD<f32>> {
    let mut data = Vec::new();
    let shape = interleave_rows_into(a, axis, &mut data)?;
    ArrayD::from_shape_vec(shape, data)
        .map_err(|e| Error::InvalidArgument(format!("interleaved rows: {e}")))
}

/// Writes every row of `a` along `axis` twice in a row into `data` (row-major,
/// replacing its contents and reusing its allocation) and returns the shape.
fn interleave_rows_into(
    a: ArrayViewD<'_, f32>,
    axis: usize,
    data: &mut Vec<f32>,
) -> Result<Vec<usize>> {
    let mut shape = a.shape().to_vec();
    if axis >= shape.len() {
        return Err(Error::Shape {
            tensor: "x".to_string(),
            expected: format!("at least {} axes", axis + 1),
            actual: shape,
        });
    }
    let block: usize = shape[axis + 1..].iter().product();
    shape[axis] *= 2;
    data.clear();
    let standard = a.as_standard_layout();
    let values = standard.as_slice().unwrap_or(&[]);
    data.reserve(2 * values.len());
    if block > 0 {
        // Each block of `axis` copied twice, in order.
        for chunk in values.chunks_exact(block) {
            data.extend_from_slice(chunk);
            data.extend_from_slice(chunk);
        }
    }
    Ok(shape)
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

/// Checks the arguments of a divergence call before an adapter indexes
/// them: `x` has a batch axis, `out` one value per sample and `t` one time
/// for all or one per sample. Returns the number of elements of one sample.
fn check_divergence_call(x: &ArrayViewD<'_, f32>, t: &[f64], out: &[f64]) -> Result<usize> {
    let Some((&batch, sample)) = x.shape().split_first() else {
        return Err(Error::Shape {
            tensor: "x".to_string(),
            expected: "[B, ...] (a batch axis first)".to_string(),
            actual: x.shape().to_vec(),
        });
    };
    if out.len() != batch {
        return Err(Error::Shape {
            tensor: "out".to_string(),
            expected: format!("[{batch}] (one divergence per sample)"),
            actual: vec![out.len()],
        });
    }
    check_times(t, batch)?;
    Ok(sample.iter().product())
}

/// Checks the arguments of a stacked call
/// ([`VelocityField::velocity_and_jvps`]) as [`check_call`] does, and that
/// `v` and `products` are `[P, ...shape of x]`. Returns the batch size and P.
fn check_stacked_call(
    x: &ArrayViewD<'_, f32>,
    t: &[f64],
    v: &ArrayViewD<'_, f32>,
    velocity: &ArrayViewMutD<'_, f32>,
    products: &ArrayViewMutD<'_, f32>,
) -> Result<(usize, usize)> {
    let batch = check_call(x, t, velocity)?;
    let stacked_like_x = |shape: &[usize]| shape.len() == x.ndim() + 1 && shape[1..] == *x.shape();
    for (name, shape) in [("v", v.shape()), ("products", products.shape())] {
        if !stacked_like_x(shape) || shape[0] != v.shape()[0] {
            return Err(Error::Shape {
                tensor: name.to_string(),
                expected: format!(
                    "[P, {}] (P directions, each shaped like x)",
                    x.shape()
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                actual: shape.to_vec(),
            });
        }
    }
    Ok((batch, v.shape()[0]))
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
///
/// Where the sampling schedule's ᾱ′ or σ̄′ is infinite at an end (σ̄′ of vp
/// and linear_vp at r = 1, ᾱ′ of poly with n < 1 at r = 0), ū is too, and
/// every solver evaluates the ends. Within
/// [`ENDPOINT_MARGIN`](ScheduleMap::ENDPOINT_MARGIN) of such an end the
/// velocity is the secant one, ū = (Δᾱ/Δr)·x̂1 + (Δσ̄/Δr)·x̂0 across the
/// margin, with the estimates x̂1, x̂0 that the inner field gives at the
/// margin's inner edge: finite, and it carries the point exactly onto the
/// sampling path's end value for those estimates.
///
/// Either way ū is one [`Affine`] map of the inner field, so JVPs and the
/// divergence follow from its own.
pub type ScheduleChange = Affine<ScheduleMap>;

/// The maps of a [`ScheduleChange`]: the two schedules.
pub struct ScheduleMap {
    trained: Arc<dyn Schedule>,
    sampled: Arc<dyn Schedule>,
}

impl Affine<ScheduleMap> {
    /// Samples `inner`, trained with `trained`, along `sampled`.
    pub fn new(
        inner: Arc<dyn VelocityField>,
        trained: Arc<dyn Schedule>,
        sampled: Arc<dyn Schedule>,
    ) -> Self {
        Affine::from_maps(inner, ScheduleMap { trained, sampled })
    }

    /// The time map at sampling time `r` ∈ [0, 1].
    pub fn time_map(&self, r: f64) -> Result<TimeMap> {
        self.maps().time_map(r)
    }
}

impl ScheduleMap {
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
            return Err(Error::singular(format!(
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
            return Err(Error::singular(format!(
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
        Err(Error::singular(format!(
            "the {which} schedule is not finite at t = {t}: α = {}, σ = {}, α' = {}, σ' = {}",
            c.alpha, c.sigma, c.d_alpha, c.d_sigma
        )))
    }
}

impl ScheduleMap {
    /// The margin ε by an end of [0, 1] where the sampling schedule's α′ or σ′
    /// is infinite (σ̄′ of vp and linear_vp at r = 1, ᾱ′ of poly with n < 1
    /// at r = 0), inside which the velocity is the secant one (see
    /// [`ScheduleChange`]).
    pub const ENDPOINT_MARGIN: f64 = 1e-5;

    /// The affine map at sampling time `r`: the time map's, or within the
    /// margin of a singular end the secant velocity ū = Δᾱ/Δr·x̂1 + Δσ̄/Δr·x̂0
    /// across the margin, with the estimates x̂1, x̂0 of the inner field at the
    /// margin's inner edge.
    fn affine_map(&self, r: f64) -> Result<AffineMap> {
        let eps = Self::ENDPOINT_MARGIN;
        let singular_at = |end: f64| {
            let c = self.sampled.coefficients(end);
            !(c.d_alpha.is_finite() && c.d_sigma.is_finite())
        };
        let (edge, end) = if r > 1.0 - eps && singular_at(1.0) {
            (1.0 - eps, 1.0)
        } else if r < eps && singular_at(0.0) {
            (eps, 0.0)
        } else {
            let m = self.time_map(r)?;
            return Ok(AffineMap {
                t: m.t,
                s: m.s,
                a: m.ds / m.s,
                b: m.s * m.dt,
            });
        };
        let m = self.time_map(edge)?;
        let (at_edge, at_end) = (
            self.sampled.coefficients(edge),
            self.sampled.coefficients(end),
        );
        if !(at_end.alpha.is_finite() && at_end.sigma.is_finite()) {
            return Err(Error::singular(format!(
                "the sampling schedule is not finite at r = {end}: α = {}, σ = {}",
                at_end.alpha, at_end.sigma
            )));
        }
        let slope_alpha = (at_end.alpha - at_edge.alpha) / (end - edge);
        let slope_sigma = (at_end.sigma - at_edge.sigma) / (end - edge);
        // The estimates at the training point y = x/s, time t, from the
        // velocity u there: x̂1 = c1·y + d1·u, x̂0 = c0·y + d0·u.
        let path = AffinePath::new(self.trained.clone());
        let (c1, d1) = path.conversion_coefficients(Prediction::Velocity, Prediction::X1, m.t)?;
        let (c0, d0) = path.conversion_coefficients(Prediction::Velocity, Prediction::X0, m.t)?;
        Ok(AffineMap {
            t: m.t,
            s: m.s,
            a: (slope_alpha * c1 + slope_sigma * c0) / m.s,
            b: slope_alpha * d1 + slope_sigma * d0,
        })
    }
}

impl AffineMaps for ScheduleMap {
    fn map_at(&self, r: f64) -> Result<AffineMap> {
        self.affine_map(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    /// The row-major copy and `select` agree, on either axis, and a
    /// transposed (non-standard) view is read in its logical order.
    #[test]
    fn interleaved_rows_repeat_each_row_in_order() {
        let a =
            Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (100 * i + 10 * j + k) as f32).into_dyn();
        for axis in 0..3 {
            let order: Vec<usize> = (0..a.shape()[axis]).flat_map(|i| [i, i]).collect();
            let expected = a.select(Axis(axis), &order);
            assert_eq!(
                interleave_rows(a.view(), axis).unwrap(),
                expected,
                "axis {axis}"
            );
            let t = a.view().reversed_axes();
            let expected = t.select(Axis(axis), &order_for(&t, axis));
            assert_eq!(
                interleave_rows(t, axis).unwrap(),
                expected,
                "transposed, axis {axis}"
            );
        }
        assert!(interleave_rows(a.view(), 3).is_err());
    }

    fn order_for(a: &ArrayViewD<'_, f32>, axis: usize) -> Vec<usize> {
        (0..a.shape()[axis]).flat_map(|i| [i, i]).collect()
    }

    /// The slice loop and the strided loop of `mix` give the same bits.
    #[test]
    fn mix_is_the_same_on_strided_buffers() {
        let both =
            Array3::from_shape_fn((4, 3, 5), |(i, j, k)| ((i * 15 + j * 5 + k) as f32).sin())
                .into_dyn();
        let weights = [0.7, 0.0];
        let mut fast = ArrayD::<f32>::zeros(vec![2, 3, 5]);
        mix(both.view(), &weights, fast.view_mut());
        let mut strided_out = ArrayD::<f32>::zeros(vec![2, 5, 3]);
        let mut view = strided_out.view_mut();
        view.swap_axes(1, 2);
        mix(both.view(), &weights, view);
        let mut back = strided_out.view();
        back.swap_axes(1, 2);
        assert_eq!(fast, back);
        let c = both.index_axis(Axis(0), 0);
        let u = both.index_axis(Axis(0), 1);
        let expected =
            c.mapv(|v| (1.7 * f64::from(v)) as f32) - u.mapv(|v| (0.7 * f64::from(v)) as f32);
        let got = fast.index_axis(Axis(0), 0);
        assert!(got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5));
        assert_eq!(fast.index_axis(Axis(0), 1), both.index_axis(Axis(0), 2));
    }
}
