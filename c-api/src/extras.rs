//! `fmrt_extras`: named conditioning inputs (class labels, context tensors).

use std::ffi::c_char;

use ndarray::{ArrayD, IxDyn};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::panic::{guard, guard_or};
use crate::{c_str, check_out, free_handle, handle_mut, mul, put_handle, slice};
use fmrt::field::{ExtraTensor, Extras};

/// A set of named conditioning inputs, each with the batch first (opaque).
///
/// Setting an input needs exclusive access; a set that is no longer modified
/// may be passed to any number of concurrent calls.
pub struct fmrt_extras {
    pub(crate) inner: Extras,
}

impl fmrt_extras {
    /// The extras this handle holds (for Rust code that receives a handle).
    pub fn extras(&self) -> &Extras {
        &self.inner
    }
}

/// Creates an empty set of extras into `*out` (free with `fmrt_extras_free`).
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_extras_new(out: *mut *mut fmrt_extras) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe {
            put_handle(
                fmrt_extras {
                    inner: Extras::new(),
                },
                out,
            )
        };
        Ok(())
    })
}

/// Releases a set of extras. NULL is a no-op.
///
/// # Safety
///
/// `extras` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_extras_free(extras: *mut fmrt_extras) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(extras) })
}

/// The shape `shape[0..rank]` with its element count checked against `data_len`.
///
/// # Safety
///
/// `shape` must hold `rank` values.
unsafe fn checked_shape(
    shape: *const usize,
    rank: usize,
    data_len: usize,
) -> FfiResult<Vec<usize>> {
    // SAFETY: the caller's contract.
    let shape = unsafe { slice(shape, rank, "shape") }?.to_vec();
    if shape.is_empty() {
        return Err(FfiError::shape(
            "an extra needs at least one axis (the batch)",
        ));
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| mul(acc, d, "the extra's element count"))?;
    if count != data_len {
        return Err(FfiError::shape(format!(
            "shape {shape:?} holds {count} elements, but data_len is {data_len}"
        )));
    }
    Ok(shape)
}

/// Sets the int64 input `name` (replacing one of that name) to `data[0..data_len]`
/// shaped `shape[0..rank]`, batch first: class labels are `rank` 1 with
/// `shape[0]` the number of samples. The data are copied.
///
/// # Safety
///
/// `extras` must be a live handle not used by another thread during the call;
/// `name` NUL-terminated; `data` and `shape` must hold `data_len` and `rank`
/// values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_extras_set_int64(
    extras: *mut fmrt_extras,
    name: *const c_char,
    data: *const i64,
    data_len: usize,
    shape: *const usize,
    rank: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (e, name, data, shape) = unsafe {
            (
                handle_mut(extras, "extras")?,
                c_str(name, "name")?,
                slice(data, data_len, "data")?,
                checked_shape(shape, rank, data_len)?,
            )
        };
        let array = ArrayD::from_shape_vec(IxDyn(&shape), data.to_vec())
            .map_err(|err| FfiError::shape(err.to_string()))?;
        e.inner.insert(name, ExtraTensor::Int64(array));
        Ok(())
    })
}

/// Sets the float32 input `name` (replacing one of that name) to
/// `data[0..data_len]` shaped `shape[0..rank]`, batch first. The data are copied.
///
/// # Safety
///
/// As for `fmrt_extras_set_int64`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_extras_set_float32(
    extras: *mut fmrt_extras,
    name: *const c_char,
    data: *const f32,
    data_len: usize,
    shape: *const usize,
    rank: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (e, name, data, shape) = unsafe {
            (
                handle_mut(extras, "extras")?,
                c_str(name, "name")?,
                slice(data, data_len, "data")?,
                checked_shape(shape, rank, data_len)?,
            )
        };
        let array = ArrayD::from_shape_vec(IxDyn(&shape), data.to_vec())
            .map_err(|err| FfiError::shape(err.to_string()))?;
        e.inner.insert(name, ExtraTensor::Float32(array));
        Ok(())
    })
}

/// Sets the int64 class-label input `name` to `labels[0..n]` (shape `[n]`).
///
/// # Safety
///
/// As for `fmrt_extras_set_int64`; `labels` must hold `n` values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_extras_set_labels(
    extras: *mut fmrt_extras,
    name: *const c_char,
    labels: *const i64,
    n: usize,
) -> fmrt_status {
    // SAFETY: forwarded contract; the shape lives for the call.
    unsafe { fmrt_extras_set_int64(extras, name, labels, n, &n, 1) }
}
