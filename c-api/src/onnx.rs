//! ONNX model fields: `fmrt_field` handles made from a model file or bytes.

use std::ffi::c_char;
use std::sync::Arc;

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::field::fmrt_field;
use crate::panic::guard;
use crate::{c_str, c_str_opt, check_out, handle, put_handle, slice, write_c_string};
use fmrt::field::onnx::{ExecutionProvider, OnnxField, OnnxFieldBuilder, ProviderPolicy};

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
    /// The per-sample state shape `state_shape[0..state_rank]`, pinning the
    /// dynamic state axes of a model to one shape (NULL with rank 0: from the
    /// model; a model with dynamic axes then takes the shape with each call,
    /// through the `*_shaped` functions).
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
    /// Where to run the model: `"cpu"` (NULL: the default), `"cuda"` (device 0)
    /// or `"cuda:N"` (device N). Appended after the fields of 0.1, so callers
    /// that start from `fmrt_onnx_options_default` keep their meaning.
    pub provider: *const c_char,
    /// What happens when `provider` cannot start: `"require"` (NULL: the
    /// default; `FMRT_STATUS_MODEL` naming the reason) or `"prefer"` (run on
    /// the CPU instead; `fmrt_field_onnx_provider` tells which one runs).
    pub provider_policy: *const c_char,
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
                provider: std::ptr::null(),
                provider_policy: std::ptr::null(),
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
pub(crate) unsafe fn builder(options: *const fmrt_onnx_options) -> FfiResult<OnnxFieldBuilder> {
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
        if let Some(s) = c_str_opt(o.provider, "options.provider")? {
            b = b.execution_provider(parse_provider(s)?);
        }
        if let Some(s) = c_str_opt(o.provider_policy, "options.provider_policy")? {
            b = b.provider_policy(match s.to_ascii_lowercase().as_str() {
                "require" => ProviderPolicy::Require,
                "prefer" => ProviderPolicy::Prefer,
                _ => {
                    return Err(FfiError::invalid(format!(
                        "unknown `options.provider_policy` \"{s}\"; use \"require\" or \"prefer\""
                    )))
                }
            });
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

/// The provider named `name`: `cpu`, `cuda` or `cuda:N` (any ASCII case).
fn parse_provider(name: &str) -> FfiResult<ExecutionProvider> {
    let lower = name.to_ascii_lowercase();
    let device = match lower.as_str() {
        "cpu" => return Ok(ExecutionProvider::Cpu),
        "cuda" => Some(0),
        other => other
            .strip_prefix("cuda:")
            .and_then(|d| d.parse::<i32>().ok())
            .filter(|d| *d >= 0),
    };
    device
        .map(|device_id| ExecutionProvider::Cuda { device_id })
        .ok_or_else(|| {
            FfiError::invalid(format!(
                "unknown `options.provider` \"{name}\"; use \"cpu\", \"cuda\" or \"cuda:N\" \
                 with N a device number"
            ))
        })
}

/// Stores a loaded model as a field handle that remembers its provider.
///
/// # Safety
///
/// `out` must be writable.
unsafe fn put_onnx(field: OnnxField, out: *mut *mut fmrt_field) {
    let provider = Some(field.provider().to_string());
    let handle = fmrt_field {
        inner: Arc::new(field),
        provider,
    };
    // SAFETY: forwarded contract.
    unsafe { put_handle(handle, out) }
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
        let field = b.load_file(path).map_err(FfiError::from)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_onnx(field, out) };
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
        let field = b.load_bytes(bytes).map_err(FfiError::from)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_onnx(field, out) };
        Ok(())
    })
}

/// Copies the name of the execution provider running the ONNX model of
/// `field` (`"CPU"` or `"CUDA:N"`), NUL-terminated, into `buf` of `buf_len`
/// bytes; `*out_len` (if not NULL) receives the bytes needed, NUL included,
/// whatever the outcome, so `buf_len` 0 asks for the size. A field that is not
/// an ONNX model (adapters around one included) is `FMRT_STATUS_UNSUPPORTED`.
///
/// # Safety
///
/// `field` must be a live handle; `buf` NULL or `buf_len` writable bytes;
/// `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_onnx_provider(
    field: *const fmrt_field,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let f = unsafe { handle(field, "field") }?;
        let name = f.provider.as_deref().ok_or_else(|| {
            FfiError::new(
                fmrt_status::Unsupported,
                "parameter `field` is not an ONNX model field, so it has no execution provider",
            )
        })?;
        // SAFETY: the caller's contract on `buf` and `out_len`.
        unsafe { write_c_string(name.as_bytes(), buf, buf_len, out_len) }
    })
}
