//! ONNX model fields: `fmrt_field` handles made from a model file or bytes.

use std::ffi::c_char;
use std::sync::Arc;

use crate::ffi::error::{fmrt_status, FfiError, FfiResult};
use crate::ffi::field::{fmrt_field, put_field};
use crate::ffi::panic::guard;
use crate::ffi::{c_str, c_str_opt, check_out, slice};
use crate::field::onnx::{OnnxField, OnnxFieldBuilder};
use crate::Error;

/// How to load an ONNX model; start from `fmrt_onnx_options_default` (all
/// zero/NULL: everything detected or at its default). Strings are copied.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fmrt_onnx_options {
    /// Name of the state input (NULL: the `fmrt.state_input` metadata, then
    /// detection from the declared inputs).
    pub state_input: *const c_char,
    /// Name of the time input (NULL: `fmrt.time_input`, then detection).
    pub time_input: *const c_char,
    /// Name of the velocity output (NULL: the first output).
    pub output: *const c_char,
    /// The per-sample state shape `state_shape[0..state_rank]`, needed only for
    /// models with dynamic state axes (NULL with rank 0: from the model).
    pub state_shape: *const usize,
    /// Number of entries of `state_shape`.
    pub state_rank: usize,
    /// Largest batch per model call; larger batches are split (0: no limit).
    pub max_batch: usize,
    /// ONNX Runtime sessions serving concurrent calls (0: 1).
    pub sessions: usize,
    /// Threads ONNX Runtime uses inside one operator (0: its own choice).
    pub intra_threads: usize,
    /// Path of the ONNX Runtime library (NULL: `ORT_DYLIB_PATH`, the project's
    /// `.ort/lib/`, then the system search path). One library per process.
    pub ort_library: *const c_char,
}

/// Writes the default ONNX options (every field zero or NULL) into `*out`.
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_options_default(out: *mut fmrt_onnx_options) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe {
            *out = fmrt_onnx_options {
                state_input: std::ptr::null(),
                time_input: std::ptr::null(),
                output: std::ptr::null(),
                state_shape: std::ptr::null(),
                state_rank: 0,
                max_batch: 0,
                sessions: 0,
                intra_threads: 0,
                ort_library: std::ptr::null(),
            }
        };
        Ok(())
    })
}

/// The builder for `options` (NULL: defaults).
///
/// # Safety
///
/// `options` must be NULL or readable, with valid strings and shape.
unsafe fn builder(options: *const fmrt_onnx_options) -> FfiResult<OnnxFieldBuilder> {
    let mut b = OnnxField::builder();
    // SAFETY: the caller's contract.
    let Some(o) = (unsafe { options.as_ref() }) else {
        return Ok(b);
    };
    // SAFETY: the caller's contract on each string and the shape.
    unsafe {
        if let Some(s) = c_str_opt(o.state_input, "options.state_input")? {
            b = b.state_input(s);
        }
        if let Some(s) = c_str_opt(o.time_input, "options.time_input")? {
            b = b.time_input(s);
        }
        if let Some(s) = c_str_opt(o.output, "options.output")? {
            b = b.output(s);
        }
        if o.state_rank > 0 {
            b = b.state_shape(slice(o.state_shape, o.state_rank, "options.state_shape")?);
        }
        if let Some(s) = c_str_opt(o.ort_library, "options.ort_library")? {
            b = b.ort_library(s);
        }
    }
    if o.max_batch > 0 {
        b = b.max_batch(o.max_batch);
    }
    if o.sessions > 0 {
        b = b.sessions(o.sessions);
    }
    if o.intra_threads > 0 {
        b = b.intra_threads(o.intra_threads);
    }
    Ok(b)
}

/// A load failure: unreadable files are `FMRT_STATUS_IO`, the rest
/// `FMRT_STATUS_MODEL`.
fn model_error(e: Error) -> FfiError {
    match e {
        Error::Io { .. } => e.into(),
        other => FfiError::new(fmrt_status::Model, other.to_string()),
    }
}

/// Loads the ONNX velocity model at `path` with `options` (NULL: defaults)
/// into a field handle. The model's inputs are mapped as `options` and its
/// metadata say; an ambiguous mapping, a model that fails its check run or a
/// missing ONNX Runtime library is `FMRT_STATUS_MODEL` with the details.
///
/// # Safety
///
/// `path` must be NUL-terminated; `options` NULL or readable; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_onnx_file(
    path: *const c_char,
    options: *const fmrt_onnx_options,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (path, b) = unsafe { (c_str(path, "path")?, builder(options)?) };
        let field = b.load_file(path).map_err(model_error)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(field), out) };
        Ok(())
    })
}

/// Like `fmrt_field_onnx_file`, from the serialized model `bytes[0..len]`
/// (copied; named `<memory>` in messages).
///
/// # Safety
///
/// `bytes` must hold `len` bytes; `options` NULL or readable; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_onnx_bytes(
    bytes: *const u8,
    len: usize,
    options: *const fmrt_onnx_options,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (bytes, b) = unsafe { (slice(bytes, len, "bytes")?, builder(options)?) };
        let field = b.load_bytes(bytes).map_err(model_error)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_field(Arc::new(field), out) };
        Ok(())
    })
}
