//! Models as exported: `fmrt_model` handles (an ONNX network with its
//! metadata and adapters, [`fmrt::model::Model`]) and the opaque
//! `fmrt_model_options` they are opened with.
//!
//! The options are an opaque handle with setters, not a struct, so that new
//! settings never change a layout that compiled programs rely on.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use fmrt::field::adapt::{check_time_scale, TimeDirection};
use fmrt::field::onnx::TensorInfo;
use fmrt::field::{ExtraTensor, NullCondition, NullValue};
use fmrt::model::{Model, ModelOptions};
use fmrt::path::Prediction;
use fmrt::Error;

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::extras::tensor_from_c;
use crate::field::fmrt_field;
use crate::onnx::{builder, config_of, fmrt_onnx_config, fmrt_onnx_options};
use crate::panic::{guard, guard_or};
use crate::scheduler::fmrt_scheduler;
use crate::{
    c_str, check_out, free_handle, handle, handle_mut, put_handle, slice_out, write_c_string,
};

/// Settings that override a model's metadata, or add adapters. Made by
/// `fmrt_model_options_new` (nothing overridden, no guidance), changed by the
/// `fmrt_model_options_set_*` calls, released by `fmrt_model_options_free`.
/// Not to be changed while another thread reads it.
pub struct fmrt_model_options {
    inner: ModelOptions,
    /// One copy of external weights for all sessions (`share_weights`).
    share_weights: bool,
}

/// A model opened from a file: the network, the schedule it was trained with,
/// what it predicts, and the field to integrate. Immutable; may be shared by
/// any number of threads.
pub struct fmrt_model {
    inner: Model,
}

/// Makes options that override nothing into `*out`.
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_new(out: *mut *mut fmrt_model_options) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        let options = fmrt_model_options {
            inner: ModelOptions::default(),
            share_weights: false,
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_handle(options, out) };
        Ok(())
    })
}

/// Releases options. NULL is a no-op.
///
/// # Safety
///
/// `options` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_free(options: *mut fmrt_model_options) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(options) })
}

/// What the network predicts: `"velocity"`, `"x1"` or `"x0"` (overrides the
/// model's `fmrt.prediction`).
///
/// # Safety
///
/// `options` must be a live handle; `prediction` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_prediction(
    options: *mut fmrt_model_options,
    prediction: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        // SAFETY: the caller's contract.
        let p = unsafe { c_str(prediction, "prediction") }?;
        o.inner.prediction = Some(p.parse::<Prediction>()?);
        Ok(())
    })
}

/// The schedule the model was trained with (overrides `fmrt.scheduler`). The
/// options keep their own reference.
///
/// # Safety
///
/// `options` and `scheduler` must be live handles.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_scheduler(
    options: *mut fmrt_model_options,
    scheduler: *const fmrt_scheduler,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        // SAFETY: the caller's contract.
        let s = unsafe { handle(scheduler, "scheduler") }?;
        o.inner.scheduler = Some(s.inner.clone());
        Ok(())
    })
}

/// Sample along `scheduler` instead of the training schedule (a schedule
/// change). The options keep their own reference.
///
/// # Safety
///
/// `options` and `scheduler` must be live handles.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_sample_scheduler(
    options: *mut fmrt_model_options,
    scheduler: *const fmrt_scheduler,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        // SAFETY: the caller's contract.
        let s = unsafe { handle(scheduler, "scheduler") }?;
        o.inner.sample_scheduler = Some(s.inner.clone());
        Ok(())
    })
}

/// Classifier-free guidance with scale `w` (0: none):
/// u = (1 + w)·u(x, t, c) − w·u(x, t, ∅). Guidance needs a null condition ∅:
/// the model's `fmrt.null_condition`, or the `fmrt_model_options_set_null_*`
/// calls.
///
/// # Safety
///
/// `options` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_guidance(
    options: *mut fmrt_model_options,
    w: f64,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        if !w.is_finite() {
            return Err(FfiError::invalid(format!(
                "guidance scale {w} is not finite"
            )));
        }
        o.inner.guidance = w;
        Ok(())
    })
}

/// Applies guidance only for times t in [`start`, `end`] (times of the
/// model's own training schedule); outside, the field is the plain
/// conditional one. Needs finite ends with `start` ≤ `end`, and a guidance
/// scale ≠ 0 when the model is opened.
///
/// # Safety
///
/// `options` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_guidance_interval(
    options: *mut fmrt_model_options,
    start: f64,
    end: f64,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        fmrt::field::adapt::check_guidance_interval(start, end)?;
        o.inner.guidance_interval = Some([start, end]);
        Ok(())
    })
}

/// Sets the null condition of the input `input` to `value`.
///
/// # Safety
///
/// `options` must be a live handle; `input` NUL-terminated.
unsafe fn set_null(
    options: *mut fmrt_model_options,
    input: *const c_char,
    value: impl FnOnce() -> FfiResult<NullValue>,
) -> FfiResult<()> {
    // SAFETY: the caller's contract.
    let o = unsafe { handle_mut(options, "options") }?;
    // SAFETY: the caller's contract.
    let name = unsafe { c_str(input, "input") }?;
    let value = value()?;
    o.inner
        .null_condition
        .get_or_insert_with(NullCondition::new)
        .insert(name, value);
    Ok(())
}

/// The null condition of guidance for the int64 input `input` (a class
/// label): the label `label` for every sample.
///
/// The `fmrt_model_options_set_null_*` calls build one null condition, input
/// by input: each names one conditioning input and its unconditional value,
/// a later call for the same input replaces the earlier one (whichever call
/// it was), and inputs none of them names keep their conditional value in
/// the unconditional half. Once any of them is called, their null condition
/// replaces the model's `fmrt.null_condition` as a whole. Inputs are checked
/// when the model samples: a name that is not among the conditioning inputs
/// of a call is `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `options` must be a live handle; `input` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_null_label(
    options: *mut fmrt_model_options,
    input: *const c_char,
    label: i64,
) -> fmrt_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe {
            set_null(options, input, || {
                Ok(NullValue::Tensor(ExtraTensor::labels(&[label])))
            })
        }
    })
}

/// The null condition of the input `input`: zeros (false for a bool) of its
/// conditional value's type and shape (CosyVoice zeroes `mu`, `spks` and
/// `cond`). Combines with the other null setters as
/// `fmrt_model_options_set_null_label` says.
///
/// # Safety
///
/// `options` must be a live handle; `input` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_null_zeros(
    options: *mut fmrt_model_options,
    input: *const c_char,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_null(options, input, || Ok(NullValue::Zeros)) })
}

/// The null condition of the input `input`: its conditional value's type and
/// shape filled with `value` (F5-TTS fills its text ids with −1), which must
/// be a value of the input's type (an integer for an integer input, 0 or 1
/// for a bool; checked when the model samples). Combines with the other
/// null setters as `fmrt_model_options_set_null_label` says.
///
/// # Safety
///
/// `options` must be a live handle; `input` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_null_fill(
    options: *mut fmrt_model_options,
    input: *const c_char,
    value: f64,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_null(options, input, || Ok(NullValue::Fill(value))) })
}

/// The null condition of the input `input`: the given tensor (a negative
/// prompt's embeddings), of element type `dtype` (an `fmrt_dtype`) at
/// `data[0..n_elements]` shaped `shape[0..rank]`, read as
/// `fmrt_extras_set_tensor` reads its tensor. It must have the input's type
/// and be shaped like its conditional value with 1 row (repeated for every
/// sample) or one row per sample; for an input without a batch axis, the
/// whole shape. The data are copied; type and shape are checked when the
/// model samples. Combines with the other null setters as
/// `fmrt_model_options_set_null_label` says.
///
/// # Safety
///
/// `options` must be a live handle; `input` NUL-terminated; `data` and
/// `shape` must hold `n_elements` elements and `rank` values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_null_tensor(
    options: *mut fmrt_model_options,
    input: *const c_char,
    dtype: u32,
    data: *const c_void,
    n_elements: usize,
    shape: *const usize,
    rank: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: forwarded contract, for each pointer.
        unsafe {
            set_null(options, input, || {
                Ok(NullValue::Tensor(tensor_from_c(
                    dtype, data, n_elements, shape, rank,
                )?))
            })
        }
    })
}

/// Which way the network's time input runs (overrides
/// `fmrt.time_direction`): `"forward"` (the network's clock is fmrt's t,
/// data at 1) or `"reversed"` (its clock is σ = 1 − t, data at 0, and it
/// returns dx/dσ, so fmrt uses its negation). Anything else is
/// `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `options` must be a live handle; `direction` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_time_direction(
    options: *mut fmrt_model_options,
    direction: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        // SAFETY: the caller's contract.
        let d = unsafe { c_str(direction, "direction") }?;
        o.inner.time_direction = Some(d.parse::<TimeDirection>()?);
        Ok(())
    })
}

/// The factor K by which the network's clock is multiplied before it is fed
/// to the time input (overrides `fmrt.time_scale`; SD3 takes 1000·t).
/// Positive and finite, else `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `options` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_time_scale(
    options: *mut fmrt_model_options,
    scale: f64,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        check_time_scale(scale)?;
        o.inner.time_scale = Some(scale);
        Ok(())
    })
}

/// Whether to keep one copy of the model's external-data weights for all its
/// ONNX Runtime sessions (`share` nonzero; default 0): less memory for a model that also
/// computes derivatives, slower model calls at small batches (see
/// `OnnxFieldBuilder::share_weights` in the Rust documentation).
///
/// # Safety
///
/// `options` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_options_set_share_weights(
    options: *mut fmrt_model_options,
    share: i32,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let o = unsafe { handle_mut(options, "options") }?;
        o.share_weights = share != 0;
        Ok(())
    })
}

/// Opens the ONNX model at `path` with the ONNX settings `onnx_config` and
/// the model settings `options` (each NULL: defaults). The model's
/// `fmrt.*` metadata decide what the options leave open. A missing file is
/// `FMRT_STATUS_IO`, a model that does not load `FMRT_STATUS_MODEL`, a
/// missing ONNX Runtime `FMRT_STATUS_RUNTIME_NOT_FOUND`, an adapter without
/// what it needs (an x1 model without a known training schedule, guidance
/// without a null condition) `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `path` must be NUL-terminated; `onnx_config` and `options` NULL or live
/// handles; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_open_config(
    path: *const c_char,
    onnx_config: *const fmrt_onnx_config,
    options: *const fmrt_model_options,
    out: *mut *mut fmrt_model,
) -> fmrt_status {
    // SAFETY: the caller's contract, for each pointer.
    guard(|| unsafe { open(path, builder(onnx_config), options, out) })
}

/// Like `fmrt_model_open_config`, with the deprecated ONNX options struct
/// (NULL: defaults).
///
/// Deprecated: use `fmrt_model_open_config`.
///
/// # Safety
///
/// `path` must be NUL-terminated; `onnx_options` NULL or readable; `options`
/// NULL or a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_open(
    path: *const c_char,
    onnx_options: *const fmrt_onnx_options,
    options: *const fmrt_model_options,
    out: *mut *mut fmrt_model,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        unsafe {
            open(
                path,
                config_of(onnx_options)?.builder().clone(),
                options,
                out,
            )
        }
    })
}

/// Opens the model at `path` with the ONNX settings `b` and `options`.
///
/// # Safety
///
/// As for `fmrt_model_open_config`.
unsafe fn open(
    path: *const c_char,
    b: fmrt::field::onnx::OnnxFieldBuilder,
    options: *const fmrt_model_options,
    out: *mut *mut fmrt_model,
) -> FfiResult<()> {
    check_out(out, "out")?;
    // SAFETY: the caller's contract.
    let path = unsafe { c_str(path, "path") }?;
    // SAFETY: the caller's contract.
    let o = unsafe { options.as_ref() };
    let share = o.is_some_and(|o| o.share_weights);
    let network = Arc::new(b.share_weights(share).load_file(path)?);
    let settings = o.map(|o| o.inner.clone()).unwrap_or_default();
    let model = Model::new(network, settings)?;
    // SAFETY: checked non-NULL; writable by contract.
    unsafe { put_handle(fmrt_model { inner: model }, out) };
    Ok(())
}

/// Releases a model. NULL is a no-op. Fields taken from it stay usable.
///
/// # Safety
///
/// `model` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_free(model: *mut fmrt_model) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(model) })
}

/// The field to integrate (the network with its adapters) as a new field
/// handle, for `fmrt_sampler_new`, `fmrt_log_likelihood` and the rest; free
/// it with `fmrt_field_free`.
///
/// # Safety
///
/// `model` must be a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_field(
    model: *const fmrt_model,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        let field = fmrt_field {
            inner: m.inner.field(),
            provider: Some(m.inner.network().provider().to_string()),
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_handle(field, out) };
        Ok(())
    })
}

/// Copies the model's metadata value of `key` (`"fmrt.scheduler"`,
/// `"fmrt.prediction"`, `"fmrt.null_condition"`, or any other
/// `metadata_props` key) into `buf` as a NUL-terminated string, like
/// `fmrt_last_error_copy`: `*out_len` (if not NULL) receives the bytes needed,
/// NUL included. A key the model does not have is `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `model` must be a live handle; `key` NUL-terminated; `buf` NULL or
/// `buf_len` writable bytes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_metadata(
    model: *const fmrt_model,
    key: *const c_char,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: the caller's contract.
        let key = unsafe { c_str(key, "key") }?;
        let value = m.inner.network().metadata_value(key).ok_or_else(|| {
            FfiError::from(Error::InvalidArgument(format!(
                "{} has no metadata `{key}`",
                m.inner.network().file()
            )))
        })?;
        // SAFETY: the caller's contract on `buf` and `out_len`.
        unsafe { write_c_string(value.as_bytes(), buf, buf_len, out_len) }
    })
}

/// Copies what the network predicts (`"velocity"`, `"x1"` or `"x0"`, after
/// the options) into `buf`, as `fmrt_model_metadata` does.
///
/// # Safety
///
/// As for `fmrt_model_metadata`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_prediction(
    model: *const fmrt_model,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        let name = m.inner.prediction().to_string();
        // SAFETY: the caller's contract on `buf` and `out_len`.
        unsafe { write_c_string(name.as_bytes(), buf, buf_len, out_len) }
    })
}

/// What a model input is for.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fmrt_input_role {
    /// The state x.
    State = 0,
    /// The time t.
    Time = 1,
    /// Conditioning the caller passes as `fmrt_extras` (a class label, a
    /// context tensor), under the input's name.
    Extra = 2,
}

/// The network's input `index` (0-based, in the model's order), or
/// `FMRT_STATUS_INVALID_ARGUMENT` naming the count when there is none.
fn input_at(m: &fmrt_model, index: usize) -> FfiResult<&TensorInfo> {
    let inputs = m.inner.network().inputs();
    inputs.get(index).ok_or_else(|| {
        FfiError::invalid(format!(
            "input index {index} is out of range: {} has {} inputs",
            m.inner.network().file(),
            inputs.len()
        ))
    })
}

/// Writes how many inputs the network declares into `*out_count`; each is
/// described by `fmrt_model_input` and `fmrt_model_input_shape`.
///
/// # Safety
///
/// `model` must be a live handle; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_input_count(
    model: *const fmrt_model,
    out_count: *mut usize,
) -> fmrt_status {
    guard(|| {
        check_out(out_count, "out_count")?;
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out_count = m.inner.network().inputs().len() };
        Ok(())
    })
}

/// Describes input `index`: its role into `*out_role` (NULL: not wanted), its
/// element type (`"float32"`, `"int64"`, …) into `dtype_buf` and its name
/// into `name_buf`, each a NUL-terminated string copied as
/// `fmrt_model_metadata` does (`*out_dtype_len` and `*out_name_len`, if not
/// NULL, receive the bytes needed). An extra input's name is the name to give
/// its tensor in `fmrt_extras`.
///
/// # Safety
///
/// `model` must be a live handle; each buffer NULL or writable for its
/// length; each out-pointer NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_input(
    model: *const fmrt_model,
    index: usize,
    out_role: *mut fmrt_input_role,
    name_buf: *mut c_char,
    name_buf_len: usize,
    out_name_len: *mut usize,
    dtype_buf: *mut c_char,
    dtype_buf_len: usize,
    out_dtype_len: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        let input = input_at(m, index)?;
        let mapping = m.inner.network().mapping();
        let role = if input.name == mapping.state {
            fmrt_input_role::State
        } else if input.name == mapping.time {
            fmrt_input_role::Time
        } else {
            fmrt_input_role::Extra
        };
        let (name, dtype) = (input.name.as_bytes(), input.dtype.as_bytes());
        // SAFETY: the caller's contract on each buffer and out-pointer.
        unsafe {
            for (need, out) in [
                (name.len() + 1, out_name_len),
                (dtype.len() + 1, out_dtype_len),
            ] {
                if !out.is_null() {
                    *out = need;
                }
            }
            // Both buffers are checked before either is written.
            slice_out(
                name_buf.cast::<u8>(),
                name_buf_len,
                name.len() + 1,
                "name_buf",
            )?;
            slice_out(
                dtype_buf.cast::<u8>(),
                dtype_buf_len,
                dtype.len() + 1,
                "dtype_buf",
            )?;
            write_c_string(name, name_buf, name_buf_len, std::ptr::null_mut())?;
            write_c_string(dtype, dtype_buf, dtype_buf_len, std::ptr::null_mut())?;
            if !out_role.is_null() {
                *out_role = role;
            }
        }
        Ok(())
    })
}

/// Writes the declared shape of input `index` into `dims[0..dims_len]`, −1
/// for a dynamic axis (such as the batch), and its rank into `*out_rank` (if
/// not NULL; always written, also when `dims_len` is too small, which is
/// `FMRT_STATUS_BUFFER_TOO_SMALL`).
///
/// # Safety
///
/// `model` must be a live handle; `dims` NULL or writable for `dims_len`
/// values; `out_rank` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_input_shape(
    model: *const fmrt_model,
    index: usize,
    dims: *mut i64,
    dims_len: usize,
    out_rank: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        let input = input_at(m, index)?;
        let rank = input.dims.len();
        if !out_rank.is_null() {
            // SAFETY: the caller's contract.
            unsafe { *out_rank = rank };
        }
        // SAFETY: the caller's contract.
        let out = unsafe { slice_out(dims, dims_len, rank, "dims") }?;
        for (o, d) in out.iter_mut().zip(&input.dims) {
            *o = d.fixed().and_then(|n| i64::try_from(n).ok()).unwrap_or(-1);
        }
        Ok(())
    })
}

/// Derives the network's tangent model now (otherwise the first derivative
/// call does): `FMRT_STATUS_OK` when the model's field has Jacobian–vector
/// products, `FMRT_STATUS_UNSUPPORTED` with the reason (an operator and its
/// node) when not.
///
/// # Safety
///
/// `model` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_model_prepare_derivatives(model: *const fmrt_model) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { handle(model, "model") }?;
        if m.inner.field().derivatives().any_jvp() {
            return Ok(());
        }
        let reason = m
            .inner
            .network()
            .jvp_unavailable_reason()
            .unwrap_or("an adapter of the model provides none")
            .to_string();
        Err(FfiError::from(Error::unsupported(format!(
            "{}: no Jacobian-vector products: {reason}",
            m.inner.network().file()
        ))))
    })
}
