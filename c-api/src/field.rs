//! `fmrt_field`: velocity fields of any kind behind one handle (the analytic
//! Gaussian mixture, native plugins, adapters; model files slot in the same way).

use std::ffi::c_char;
use std::sync::Arc;

use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::extras::fmrt_extras;
use crate::panic::{guard, guard_or};
use crate::scheduler::fmrt_scheduler;
use crate::{
    c_str, c_str_opt, check_out, check_times_len, free_handle, handle, mul, put_handle, slice,
    slice_out,
};
use fmrt::field::adapt::{Guided, Predicted, ScheduleChange};
use fmrt::field::analytic::GaussianMixture;
use fmrt::field::plugin::PluginField;
use fmrt::field::{Extras, VelocityField};
use fmrt::path::Prediction;

/// A velocity field u(x, t) of any kind (opaque). Fields are immutable: one
/// handle may be used from any number of threads at once.
pub struct fmrt_field {
    pub(crate) inner: Arc<dyn VelocityField>,
    /// The execution provider running the model (`CPU`, `CUDA:0`) when the
    /// handle was made from an ONNX model; `None` for every other field.
    pub(crate) provider: Option<String>,
}

impl fmrt_field {
    /// The field's fixed per-sample state shape, or an error saying that
    /// this field takes its shape with each call.
    pub(crate) fn fixed_shape(&self) -> FfiResult<&[usize]> {
        self.inner.state_shape().ok_or_else(|| {
            FfiError::invalid(
                "the field's state shape comes with each call (its model has dynamic axes); \
                 use the *_shaped functions, which take the shape of one sample",
            )
        })
    }

    /// The number of floats in one state (product of the state shape), or an
    /// error when that product overflows or the shape comes with each call.
    pub(crate) fn state_size(&self) -> FfiResult<usize> {
        self.fixed_shape()?
            .iter()
            .try_fold(1usize, |acc, &d| mul(acc, d, "the state size"))
    }
}

/// Stores a new field handle into `out` (checked non-NULL by the caller).
///
/// # Safety
///
/// `out` must be writable.
pub(crate) unsafe fn put_field(field: Arc<dyn VelocityField>, out: *mut *mut fmrt_field) {
    // SAFETY: forwarded contract.
    unsafe {
        put_handle(
            fmrt_field {
                inner: field,
                provider: None,
            },
            out,
        )
    }
}

/// The exact marginal velocity field carrying N(0, I) to the Gaussian mixture
/// Σ_k π_k N(μ_k, s_k² I) in `d` dimensions along the path of `scheduler`:
/// `weights[0..k]` (positive, normalised internally), `means[0..k*d]` (row-major
/// `[k, d]`), `stds[0..k]` (positive). The state shape is `[d]`. The field keeps
/// its own reference to the scheduler.
///
/// # Safety
///
/// `scheduler` must be a live handle; the arrays must hold the stated counts;
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_gaussian_mixture(
    scheduler: *const fmrt_scheduler,
    weights: *const f64,
    means: *const f64,
    stds: *const f64,
    k: usize,
    d: usize,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        let kd = mul(k, d, "k × d")?;
        // SAFETY: the caller's contract, for each pointer.
        let (s, weights, means, stds) = unsafe {
            (
                handle(scheduler, "scheduler")?,
                slice(weights, k, "weights")?,
                slice(means, kd, "means")?,
                slice(stds, k, "stds")?,
            )
        };
        let means = ndarray::ArrayView2::from_shape((k, d), means)
            .map_err(|e| FfiError::shape(e.to_string()))?;
        let g = GaussianMixture::new(weights, means, stds, s.inner.clone())?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(g), out) };
        Ok(())
    })
}

/// The Gaussian-mixture field of `k` equally weighted 2-D components with
/// standard deviation `std`, means evenly spaced on the circle of radius
/// `radius` starting at (radius, 0), along the path of `scheduler`.
///
/// # Safety
///
/// `scheduler` must be a live handle; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_gaussian_ring(
    scheduler: *const fmrt_scheduler,
    k: usize,
    radius: f64,
    std: f64,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let s = unsafe { handle(scheduler, "scheduler") }?;
        let g = GaussianMixture::ring(k, radius, std, s.inner.clone())?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(g), out) };
        Ok(())
    })
}

/// Loads the native plugin library at `path` (see `fmrt_plugin.h`) and creates
/// an instance with `config` (may be NULL: `""`): through ABI version 2 when
/// the library exports `fmrt_plugin_v2`, else through `fmrt_plugin_v1`.
/// Failures to load, neither symbol, an ABI version mismatch, a version-2
/// table smaller than `FMRT_PLUGIN_V2_MIN_SIZE` or whose capability flags and
/// callbacks disagree, and a failing `create` are `FMRT_STATUS_PLUGIN`, the
/// message naming the file and the symbol (and the size or callback).
///
/// # Safety
///
/// Strings must be NUL-terminated; `out` must be writable. Loading runs the
/// library's code, which is trusted to follow the plugin contract.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_plugin(
    path: *const c_char,
    config: *const c_char,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: the caller's contract.
        let config = unsafe { c_str_opt(config, "config") }?;
        // SAFETY: the host chose to trust this library (documented above).
        let field = unsafe { PluginField::open(path, config) }?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(field), out) };
        Ok(())
    })
}

/// Wraps `inner`, whose model predicts `prediction` (`"velocity"`, `"x1"` or
/// `"x0"`, aliases `data`, `noise`, `epsilon`), as a velocity field through the
/// path of `trained_with`. The conversion divides by σ = 0 at t = 1 for
/// x1-prediction and by α = 0 at t = 0 for x0-prediction; within a margin of
/// 1e-3 of that end the model is read at the margin's edge, so every time in
/// [0, 1] evaluates (the sample at t = 1 of an x1 model is its own x1
/// prediction there).
///
/// # Safety
///
/// Handles must be live; `prediction` NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_predicted(
    inner: *const fmrt_field,
    trained_with: *const fmrt_scheduler,
    prediction: *const c_char,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (f, s, p) = unsafe {
            (
                handle(inner, "inner")?,
                handle(trained_with, "trained_with")?,
                c_str(prediction, "prediction")?,
            )
        };
        let p: Prediction = p.parse()?;
        let adapted = Predicted::new(f.inner.clone(), s.inner.clone(), p);
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(adapted), out) };
        Ok(())
    })
}

/// Samples `inner`, a model trained along the path of `trained`, along the
/// path of `sampled` instead: each time r of the sampled path is mapped to the
/// trained time with the same signal-to-noise ratio α/σ (which must increase
/// along the trained path) and the state and velocity are rescaled. The
/// adapter keeps its own references to the three handles.
///
/// # Safety
///
/// Handles must be live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_schedule_change(
    inner: *const fmrt_field,
    trained: *const fmrt_scheduler,
    sampled: *const fmrt_scheduler,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (f, trained, sampled) = unsafe {
            (
                handle(inner, "inner")?,
                handle(trained, "trained")?,
                handle(sampled, "sampled")?,
            )
        };
        let adapted = ScheduleChange::new(
            f.inner.clone(),
            trained.inner.clone(),
            sampled.inner.clone(),
        );
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(adapted), out) };
        Ok(())
    })
}

/// Classifier-free guidance around the conditional field `inner`:
/// u = (1 + w)·u(x, t, c) − w·u(x, t, ∅) with w = `scale` and the null condition
/// ∅ = `null_condition` (each input with a batch axis of 1, e.g. a label set
/// with `fmrt_extras_set_labels(e, "label", &null, 1)`). The condition c comes
/// with each sampling call as extras.
///
/// # Safety
///
/// Handles must be live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_guided(
    inner: *const fmrt_field,
    scale: f64,
    null_condition: *const fmrt_extras,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (f, null) = unsafe {
            (
                handle(inner, "inner")?,
                handle(null_condition, "null_condition")?,
            )
        };
        let guided = Guided::new(f.inner.clone(), scale, null.inner.clone())?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(guided), out) };
        Ok(())
    })
}

/// Releases a field. NULL is a no-op. Samplers and adapters built on it keep
/// their own reference and stay usable.
///
/// # Safety
///
/// `field` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_free(field: *mut fmrt_field) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(field) })
}

/// Copies the state shape of one sample (without the batch axis) into
/// `shape[0..shape_len]`; `*out_rank` (if not NULL) receives the rank on success
/// and on `FMRT_STATUS_BUFFER_TOO_SMALL` alike. A field whose shape comes with
/// each call (an ONNX model with dynamic axes) has none:
/// `FMRT_STATUS_INVALID_ARGUMENT`, pointing to the `*_shaped` functions.
///
/// # Safety
///
/// `field` must be a live handle; `shape` must hold `shape_len` writable values;
/// `out_rank` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_state_shape(
    field: *const fmrt_field,
    shape: *mut usize,
    shape_len: usize,
    out_rank: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let f = unsafe { handle(field, "field") }?;
        let dims = f.fixed_shape()?;
        if !out_rank.is_null() {
            // SAFETY: writable by contract.
            unsafe { *out_rank = dims.len() };
        }
        // SAFETY: the caller's contract.
        let dst = unsafe { slice_out(shape, shape_len, dims.len(), "shape") }?;
        dst.copy_from_slice(dims);
        Ok(())
    })
}

/// Writes the number of floats in one state (the product of the state shape)
/// into `*out_size`; a product that overflows `size_t`, or a field whose
/// shape comes with each call, is `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `field` must be a live handle; `out_size` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_state_size(
    field: *const fmrt_field,
    out_size: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let f = unsafe { handle(field, "field") }?;
        check_out(out_size, "out_size")?;
        let size = f.state_size()?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out_size = size };
        Ok(())
    })
}

/// The extras behind an optional handle.
///
/// # Safety
///
/// `extras` must be NULL or a live handle.
pub(crate) unsafe fn extras_or_empty<'a>(extras: *const fmrt_extras) -> &'a Extras {
    static EMPTY: std::sync::OnceLock<Extras> = std::sync::OnceLock::new();
    // SAFETY: the caller's contract.
    match unsafe { extras.as_ref() } {
        Some(e) => &e.inner,
        None => EMPTY.get_or_init(Extras::new),
    }
}

/// The shape `[n, ...state_shape]` of a batch of `n` states of `field`, and its
/// element count.
pub(crate) fn batch_shape(field: &fmrt_field, n: usize) -> FfiResult<(Vec<usize>, usize)> {
    let mut shape = vec![n];
    shape.extend_from_slice(field.fixed_shape()?);
    let len = mul(n, field.state_size()?, "n × state size")?;
    Ok((shape, len))
}

/// A batch of `n` states each shaped `state_shape[0..rank]` (given with the
/// call, for fields whose shape comes with each call): the per-sample shape,
/// the batch shape `[n, ...]` and its element count, with overflow checks.
///
/// # Safety
///
/// `state_shape` must be NULL or hold `rank` values.
pub(crate) unsafe fn shaped_batch(
    state_shape: *const usize,
    rank: usize,
    n: usize,
) -> FfiResult<(Vec<usize>, Vec<usize>, usize)> {
    // SAFETY: the caller's contract.
    let sample = unsafe { slice(state_shape, rank, "state_shape") }?.to_vec();
    let size = sample
        .iter()
        .try_fold(1usize, |acc, &d| mul(acc, d, "the state size"))?;
    let len = mul(n, size, "n × state size")?;
    let mut batch = vec![n];
    batch.extend_from_slice(&sample);
    Ok((sample, batch, len))
}

/// Evaluates u(x, t, extras) for the `n` states `x[0..x_len]` (`x_len` must be
/// `n × state size`) at `t[0..t_len]` (one time per sample, or one for all),
/// writing `n × state size` floats into `out` (`out_len` available). `extras`
/// may be NULL (none).
///
/// # Safety
///
/// `field` must be a live handle, `extras` NULL or live; the arrays must hold
/// the stated counts; `out` must not overlap `x`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_velocity(
    field: *const fmrt_field,
    x: *const f32,
    x_len: usize,
    n: usize,
    t: *const f64,
    t_len: usize,
    extras: *const fmrt_extras,
    out: *mut f32,
    out_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let f = unsafe { handle(field, "field") }?;
        let (shape, len) = batch_shape(f, n)?;
        // SAFETY: the caller's contract.
        unsafe { velocity_into(f, &shape, len, x, x_len, t, t_len, extras, out, out_len) }
    })
}

/// Like `fmrt_field_velocity`, for states of the per-sample shape
/// `state_shape[0..rank]` (without the batch axis): the call form of a
/// field whose state shape comes with each call (an ONNX model with dynamic
/// axes, where `fmrt_field_velocity` is `FMRT_STATUS_INVALID_ARGUMENT`). The
/// shape is checked against the model's declared dims and its symbolic dims
/// against the conditioning inputs, as for `fmrt_sampler_sample_shaped`.
///
/// # Safety
///
/// As for `fmrt_field_velocity`; `state_shape` must hold `rank` values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_velocity_shaped(
    field: *const fmrt_field,
    state_shape: *const usize,
    rank: usize,
    x: *const f32,
    x_len: usize,
    n: usize,
    t: *const f64,
    t_len: usize,
    extras: *const fmrt_extras,
    out: *mut f32,
    out_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (f, (_, shape, len)) =
            unsafe { (handle(field, "field")?, shaped_batch(state_shape, rank, n)?) };
        // SAFETY: the caller's contract.
        unsafe { velocity_into(f, &shape, len, x, x_len, t, t_len, extras, out, out_len) }
    })
}

/// The checked body of the velocity calls: `shape` is the batch's,
/// `len` its element count.
///
/// # Safety
///
/// As for `fmrt_field_velocity`.
#[allow(clippy::too_many_arguments)]
unsafe fn velocity_into(
    f: &fmrt_field,
    shape: &[usize],
    len: usize,
    x: *const f32,
    x_len: usize,
    t: *const f64,
    t_len: usize,
    extras: *const fmrt_extras,
    out: *mut f32,
    out_len: usize,
) -> FfiResult<()> {
    let n = shape[0];
    if x_len != len {
        return Err(FfiError::shape(format!(
            "x holds {x_len} floats, but {n} states of shape {:?} need {len}",
            &shape[1..]
        )));
    }
    // SAFETY: the caller's contract, for each pointer.
    let (x, t, extras) = unsafe {
        (
            slice(x, x_len, "x")?,
            slice(t, t_len, "t")?,
            extras_or_empty(extras),
        )
    };
    check_times_len(t_len, n, "t")?;
    if len > 0 {
        check_out(out, "out")?;
    }
    // SAFETY: the caller's contract.
    let out = unsafe { slice_out(out, out_len, len, "out") }?;
    let xv = ArrayViewD::from_shape(IxDyn(shape), x).map_err(|e| FfiError::shape(e.to_string()))?;
    let ov =
        ArrayViewMutD::from_shape(IxDyn(shape), out).map_err(|e| FfiError::shape(e.to_string()))?;
    f.inner.velocity(xv, t, extras, ov)?;
    Ok(())
}
