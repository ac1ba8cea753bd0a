//! `fmrt_extras`: named conditioning inputs (class labels, context tensors,
//! masks, position ids) of any element type a model takes ([`fmrt_dtype`]).

use std::ffi::{c_char, c_void};

use half::f16;
use ndarray::{ArrayD, IxDyn};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::panic::{guard, guard_or};
use crate::{c_str, check_out, free_handle, handle_mut, mul, put_handle, slice};
use fmrt::field::{ExtraTensor, Extras};

/// The element type of a tensor passed as `const void *` with a count of
/// elements (`fmrt_extras_set_tensor`, `fmrt_model_options_set_null_tensor`).
/// Calls take it as a `uint32_t`; a number that is not one of these is
/// `FMRT_STATUS_INVALID_ARGUMENT`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fmrt_dtype {
    /// `float` (IEEE single precision).
    Float32 = 0,
    /// IEEE half precision, passed as its bits in a `uint16_t`.
    Float16 = 1,
    /// `int64_t`.
    Int64 = 2,
    /// `int32_t`.
    Int32 = 3,
    /// `uint8_t` holding 0 (false) or 1 (true); any other value is
    /// `FMRT_STATUS_INVALID_ARGUMENT`.
    Bool = 4,
}

impl fmrt_dtype {
    /// Every type, in the order of their numbers.
    const ALL: [fmrt_dtype; 5] = [
        fmrt_dtype::Float32,
        fmrt_dtype::Float16,
        fmrt_dtype::Int64,
        fmrt_dtype::Int32,
        fmrt_dtype::Bool,
    ];

    /// The type numbered `value`, the parameter `name`.
    pub(crate) fn from_u32(value: u32, name: &str) -> FfiResult<fmrt_dtype> {
        Self::ALL
            .into_iter()
            .find(|d| *d as u32 == value)
            .ok_or_else(|| {
                FfiError::invalid(format!(
                    "parameter `{name}` is {value}, not an fmrt_dtype (0 float32, 1 float16, \
                     2 int64, 3 int32, 4 bool)"
                ))
            })
    }

    /// Bytes per element in C.
    fn size(self) -> usize {
        match self {
            fmrt_dtype::Float16 => 2,
            fmrt_dtype::Float32 | fmrt_dtype::Int32 => 4,
            fmrt_dtype::Int64 => 8,
            fmrt_dtype::Bool => 1,
        }
    }
}

/// The `N`-byte elements of `bytes`, decoded by `decode` (native byte order).
fn decode<T, const N: usize>(bytes: &[u8], decode: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut b = [0u8; N];
            b.copy_from_slice(chunk);
            decode(b)
        })
        .collect()
}

/// `values` as an array of `shape` (whose element count was checked).
fn shaped<T>(shape: &[usize], values: Vec<T>) -> FfiResult<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| FfiError::shape(e.to_string()))
}

/// Copies the tensor of element type `dtype` (an `fmrt_dtype` number) at
/// `data[0..n_elements]`, shaped `shape[0..rank]` (rank 0: a scalar), into a
/// library tensor. The element count is checked against the shape (with
/// overflow checks) and bools against 0/1; `data` is read byte-wise, so it
/// need not be aligned.
///
/// # Safety
///
/// `data` must be NULL or hold `n_elements` elements of the type; `shape`
/// NULL or `rank` values.
pub(crate) unsafe fn tensor_from_c(
    dtype: u32,
    data: *const c_void,
    n_elements: usize,
    shape: *const usize,
    rank: usize,
) -> FfiResult<ExtraTensor> {
    let dtype = fmrt_dtype::from_u32(dtype, "dtype")?;
    // SAFETY: the caller's contract.
    let shape = unsafe { slice(shape, rank, "shape") }?.to_vec();
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| mul(acc, d, "the tensor's element count"))?;
    if count != n_elements {
        return Err(FfiError::shape(format!(
            "shape {shape:?} holds {count} elements, but n_elements is {n_elements}"
        )));
    }
    let n_bytes = mul(n_elements, dtype.size(), "the tensor's size in bytes")?;
    // SAFETY: the caller's contract: `data` holds `n_elements` elements of
    // `dtype.size()` bytes each (`slice` checks the size fits an allocation).
    let bytes = unsafe { slice(data.cast::<u8>(), n_bytes, "data") }?;
    let tensor = match dtype {
        fmrt_dtype::Float32 => {
            ExtraTensor::Float32(shaped(&shape, decode(bytes, f32::from_ne_bytes))?)
        }
        fmrt_dtype::Float16 => ExtraTensor::Float16(shaped(
            &shape,
            decode(bytes, |b| f16::from_bits(u16::from_ne_bytes(b))),
        )?),
        fmrt_dtype::Int64 => ExtraTensor::Int64(shaped(&shape, decode(bytes, i64::from_ne_bytes))?),
        fmrt_dtype::Int32 => ExtraTensor::Int32(shaped(&shape, decode(bytes, i32::from_ne_bytes))?),
        fmrt_dtype::Bool => {
            if let Some(i) = bytes.iter().position(|&b| b > 1) {
                return Err(FfiError::invalid(format!(
                    "`data` holds {} at element {i}, but a bool is 0 (false) or 1 (true)",
                    bytes[i]
                )));
            }
            ExtraTensor::Bool(shaped(&shape, bytes.iter().map(|&b| b == 1).collect())?)
        }
    };
    Ok(tensor)
}

/// A set of named conditioning inputs (opaque), each with the batch first or
/// shared by every row of a call (`fmrt_extras_set_shared_tensor`, scalars).
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

/// Sets the input `name` (replacing one of that name) to the tensor of
/// element type `dtype` (an `fmrt_dtype`) at `data[0..n_elements]`, shaped
/// `shape[0..rank]` with the batch first: one row per sample, or one row for
/// every sample. Rank 0 is a scalar (`n_elements` 1, `shape` may be NULL),
/// one value for every sample. `data` holds `float`, `uint16_t` (half bits),
/// `int64_t`, `int32_t` or `uint8_t` 0/1 elements and need not be aligned;
/// the data are copied. A count that is not the shape's element count is
/// `FMRT_STATUS_SHAPE_MISMATCH`, a bool other than 0 or 1 or an unknown
/// `dtype` `FMRT_STATUS_INVALID_ARGUMENT`. The field checks the element type
/// and shape against the model's input when it is called.
///
/// # Safety
///
/// `extras` must be a live handle not used by another thread during the call;
/// `name` NUL-terminated; `data` and `shape` must hold `n_elements` elements
/// and `rank` values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_extras_set_tensor(
    extras: *mut fmrt_extras,
    name: *const c_char,
    dtype: u32,
    data: *const c_void,
    n_elements: usize,
    shape: *const usize,
    rank: usize,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_tensor(extras, name, dtype, data, n_elements, shape, rank, false) })
}

/// Like `fmrt_extras_set_tensor`, for an input passed as given to every
/// model call instead of row by row: an input the model declares without a
/// batch axis (FLUX's `img_ids`, `[seq, 3]`), whose `shape` is the input's
/// whole shape.
///
/// # Safety
///
/// As for `fmrt_extras_set_tensor`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_extras_set_shared_tensor(
    extras: *mut fmrt_extras,
    name: *const c_char,
    dtype: u32,
    data: *const c_void,
    n_elements: usize,
    shape: *const usize,
    rank: usize,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_tensor(extras, name, dtype, data, n_elements, shape, rank, true) })
}

/// The body of the two typed setters.
///
/// # Safety
///
/// As for `fmrt_extras_set_tensor`.
unsafe fn set_tensor(
    extras: *mut fmrt_extras,
    name: *const c_char,
    dtype: u32,
    data: *const c_void,
    n_elements: usize,
    shape: *const usize,
    rank: usize,
    shared: bool,
) -> FfiResult<()> {
    // SAFETY: the caller's contract, for each pointer.
    let (e, name, tensor) = unsafe {
        (
            handle_mut(extras, "extras")?,
            c_str(name, "name")?,
            tensor_from_c(dtype, data, n_elements, shape, rank)?,
        )
    };
    e.inner.insert_shared(name, tensor, shared);
    Ok(())
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
