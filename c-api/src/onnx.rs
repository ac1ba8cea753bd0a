//! ONNX model fields: `fmrt_field` handles made from a model file or bytes,
//! loaded as an opaque `fmrt_onnx_config` says (or the deprecated plain
//! `fmrt_onnx_options` struct, read into one).

use std::ffi::c_char;
use std::sync::Arc;

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::field::fmrt_field;
use crate::panic::{guard, guard_or};
use crate::{
    c_str, c_str_opt, check_out, free_handle, handle, handle_mut, put_handle, slice, write_c_string,
};
use fmrt::field::onnx::{ExecutionProvider, OnnxField, OnnxFieldBuilder, ProviderPolicy};

/// How to load an ONNX model; start from `fmrt_onnx_options_default` (all
/// zero/NULL: everything detected or at its default). Strings are copied.
///
/// Deprecated, to be removed in the release after next: use the
/// `fmrt_onnx_config` handle and the `*_config` loaders. This struct's
/// layout is frozen; it gains no fields.
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
    /// or `"cuda:N"` (device N). Added after 0.1, as is `provider_policy`: a
    /// program compiled against 0.1's shorter struct must not call
    /// `fmrt_onnx_options_default` of a newer library, which writes these
    /// fields past the end of that struct.
    pub provider: *const c_char,
    /// What happens when `provider` cannot start: `"require"` (NULL: the
    /// default; `FMRT_STATUS_MODEL` naming the reason) or `"prefer"` (run on
    /// the CPU instead; `fmrt_field_onnx_provider` tells which one runs).
    pub provider_policy: *const c_char,
}

/// Writes the default ONNX options (every field zero or NULL) into `*out`.
///
/// Deprecated: use `fmrt_onnx_config_new`.
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

/// How to load an ONNX model, opaque. Made by `fmrt_onnx_config_new`
/// (everything detected from the model or at its default: the CPU, one
/// session), changed by the `fmrt_onnx_config_set_*` calls (each checks its
/// value and leaves the config unchanged when it refuses one), released by
/// `fmrt_onnx_config_free`. Read by `fmrt_field_onnx_file_config`,
/// `fmrt_field_onnx_bytes_config` and `fmrt_model_open_config`; not to be
/// changed while another thread uses it.
#[derive(Clone, Debug, Default)]
pub struct fmrt_onnx_config {
    inner: OnnxFieldBuilder,
}

impl fmrt_onnx_config {
    /// The builder this handle holds (for Rust code that receives a handle).
    pub fn builder(&self) -> &OnnxFieldBuilder {
        &self.inner
    }

    /// Runs on the provider named `name`.
    fn set_provider(&mut self, name: &str) -> FfiResult<()> {
        let provider = parse_provider(name)?;
        self.inner = self.inner.clone().execution_provider(provider);
        Ok(())
    }

    /// Follows the provider policy named `name`.
    fn set_provider_policy(&mut self, name: &str) -> FfiResult<()> {
        let policy = match name.to_ascii_lowercase().as_str() {
            "require" => ProviderPolicy::Require,
            "prefer" => ProviderPolicy::Prefer,
            _ => {
                return Err(FfiError::invalid(format!(
                    "unknown provider policy \"{name}\"; use \"require\" or \"prefer\""
                )))
            }
        };
        self.inner = self.inner.clone().provider_policy(policy);
        Ok(())
    }
}

/// The config the deprecated `options` (NULL: defaults) describe.
///
/// # Safety
///
/// `options` must be NULL or readable, with valid strings and shape.
pub(crate) unsafe fn config_of(options: *const fmrt_onnx_options) -> FfiResult<fmrt_onnx_config> {
    let mut c = fmrt_onnx_config::default();
    // SAFETY: the caller's contract.
    let Some(o) = (unsafe { options.as_ref() }) else {
        return Ok(c);
    };
    let mut b = c.inner.clone();
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
    c.inner = b;
    // SAFETY: the caller's contract on each string.
    unsafe {
        if let Some(s) = c_str_opt(o.provider, "options.provider")? {
            c.set_provider(s)?;
        }
        if let Some(s) = c_str_opt(o.provider_policy, "options.provider_policy")? {
            c.set_provider_policy(s)?;
        }
    }
    Ok(c)
}

/// The builder for `config` (NULL: defaults).
///
/// # Safety
///
/// `config` must be NULL or a live handle.
pub(crate) unsafe fn builder(config: *const fmrt_onnx_config) -> OnnxFieldBuilder {
    // SAFETY: the caller's contract.
    unsafe { config.as_ref() }
        .map(|c| c.inner.clone())
        .unwrap_or_default()
}

/// Makes the default ONNX config into `*out`.
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_new(out: *mut *mut fmrt_onnx_config) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_handle(fmrt_onnx_config::default(), out) };
        Ok(())
    })
}

/// Releases an ONNX config. NULL is a no-op.
///
/// # Safety
///
/// `config` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_free(config: *mut fmrt_onnx_config) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(config) })
}

/// Applies `change` to the builder of `config`.
///
/// # Safety
///
/// `config` must be NULL or a live handle.
unsafe fn set_builder(
    config: *mut fmrt_onnx_config,
    change: impl FnOnce(OnnxFieldBuilder) -> OnnxFieldBuilder,
) -> FfiResult<()> {
    // SAFETY: the caller's contract.
    let c = unsafe { handle_mut(config, "config") }?;
    c.inner = change(c.inner.clone());
    Ok(())
}

/// Applies the string setting `value` (the parameter `name`) to `config`.
///
/// # Safety
///
/// `config` must be NULL or a live handle; `value` NUL-terminated.
unsafe fn set_string(
    config: *mut fmrt_onnx_config,
    value: *const c_char,
    name: &str,
    change: impl FnOnce(OnnxFieldBuilder, &str) -> OnnxFieldBuilder,
) -> FfiResult<()> {
    // SAFETY: the caller's contract.
    let value = unsafe { c_str(value, name) }?;
    // SAFETY: the caller's contract.
    unsafe { set_builder(config, |b| change(b, value)) }
}

/// A count setting `value` (the parameter `name`), which must be at least 1.
fn at_least_one(value: usize, name: &str) -> FfiResult<usize> {
    if value == 0 {
        Err(FfiError::invalid(format!("`{name}` must be at least 1")))
    } else {
        Ok(value)
    }
}

/// Names the state input (default: the `fmrt.state_input` metadata, then
/// detection from the declared inputs).
///
/// # Safety
///
/// `config` must be a live handle; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_state_input(
    config: *mut fmrt_onnx_config,
    name: *const c_char,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_string(config, name, "name", |b, s| b.state_input(s)) })
}

/// Names the time input (default: `fmrt.time_input`, then detection).
///
/// # Safety
///
/// `config` must be a live handle; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_time_input(
    config: *mut fmrt_onnx_config,
    name: *const c_char,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_string(config, name, "name", |b, s| b.time_input(s)) })
}

/// Names the velocity output (default: the first output).
///
/// # Safety
///
/// `config` must be a live handle; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_output(
    config: *mut fmrt_onnx_config,
    name: *const c_char,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_string(config, name, "name", |b, s| b.output(s)) })
}

/// The per-sample state shape `shape[0..rank]` (rank ≥ 1), pinning the
/// dynamic state axes of a model to one shape (default: from the model; a
/// model with dynamic axes then takes the shape with each call, through the
/// `*_shaped` functions). Copied.
///
/// # Safety
///
/// `config` must be a live handle; `shape` must hold `rank` values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_state_shape(
    config: *mut fmrt_onnx_config,
    shape: *const usize,
    rank: usize,
) -> fmrt_status {
    guard(|| {
        let rank = at_least_one(rank, "rank")?;
        // SAFETY: the caller's contract.
        let shape = unsafe { slice(shape, rank, "shape") }?;
        // SAFETY: forwarded contract.
        unsafe { set_builder(config, |b| b.state_shape(shape)) }
    })
}

/// Largest batch per model call, at least 1; larger batches are split
/// (default: a bound that keeps ONNX Runtime's memory in check; `SIZE_MAX`
/// lifts it).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_max_batch(
    config: *mut fmrt_onnx_config,
    max_batch: usize,
) -> fmrt_status {
    guard(|| {
        let n = at_least_one(max_batch, "max_batch")?;
        // SAFETY: forwarded contract.
        unsafe { set_builder(config, |b| b.max_batch(n)) }
    })
}

/// ONNX Runtime sessions serving concurrent calls, at least 1 (default 1).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_sessions(
    config: *mut fmrt_onnx_config,
    sessions: usize,
) -> fmrt_status {
    guard(|| {
        let n = at_least_one(sessions, "sessions")?;
        // SAFETY: forwarded contract.
        unsafe { set_builder(config, |b| b.sessions(n)) }
    })
}

/// Threads ONNX Runtime uses inside one operator, at least 1 (default: its
/// own choice).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_intra_threads(
    config: *mut fmrt_onnx_config,
    threads: usize,
) -> fmrt_status {
    guard(|| {
        let n = at_least_one(threads, "threads")?;
        // SAFETY: forwarded contract.
        unsafe { set_builder(config, |b| b.intra_threads(n)) }
    })
}

/// Path of the ONNX Runtime library (default: `ORT_DYLIB_PATH`, the
/// project's `.ort/lib/`, then the system search path). One library per
/// process.
///
/// # Safety
///
/// `config` must be a live handle; `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_ort_library(
    config: *mut fmrt_onnx_config,
    path: *const c_char,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_string(config, path, "path", |b, s| b.ort_library(s)) })
}

/// Where to run the model: `"cpu"` (the default), `"cuda"` (device 0) or
/// `"cuda:N"` (device N); any ASCII case.
///
/// # Safety
///
/// `config` must be a live handle; `provider` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_provider(
    config: *mut fmrt_onnx_config,
    provider: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (c, name) = unsafe { (handle_mut(config, "config")?, c_str(provider, "provider")?) };
        c.set_provider(name)
    })
}

/// What happens when the provider cannot start: `"require"` (the default;
/// loading fails with `FMRT_STATUS_MODEL` naming the reason) or `"prefer"`
/// (run on the CPU instead; `fmrt_field_onnx_provider` tells which one runs).
///
/// # Safety
///
/// `config` must be a live handle; `policy` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_onnx_config_set_provider_policy(
    config: *mut fmrt_onnx_config,
    policy: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (c, name) = unsafe { (handle_mut(config, "config")?, c_str(policy, "policy")?) };
        c.set_provider_policy(name)
    })
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
                "unknown provider \"{name}\"; use \"cpu\", \"cuda\" or \"cuda:N\" \
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

/// Loads the ONNX velocity model at `path` as `config` (NULL: defaults)
/// says into a field handle. The model's inputs are mapped as `config` and
/// its metadata say; an ambiguous mapping, a model that fails its check run
/// or a missing ONNX Runtime library is `FMRT_STATUS_MODEL` with the details.
///
/// # Safety
///
/// `path` must be NUL-terminated; `config` NULL or a live handle; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_onnx_file_config(
    path: *const c_char,
    config: *const fmrt_onnx_config,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    // SAFETY: the caller's contract, for each pointer.
    guard(|| unsafe { load_file(path, builder(config), out) })
}

/// Loads the model at `path` with `b` into `*out`.
///
/// # Safety
///
/// `path` must be NUL-terminated; `out` writable.
unsafe fn load_file(
    path: *const c_char,
    b: OnnxFieldBuilder,
    out: *mut *mut fmrt_field,
) -> FfiResult<()> {
    check_out(out, "out")?;
    // SAFETY: the caller's contract.
    let path = unsafe { c_str(path, "path") }?;
    let field = b.load_file(path).map_err(FfiError::from)?;
    // SAFETY: checked non-NULL; writable by contract.
    unsafe { put_onnx(field, out) };
    Ok(())
}

/// Like `fmrt_field_onnx_file_config`, from the serialized model
/// `bytes[0..len]` (copied; named `<memory>` in messages).
///
/// # Safety
///
/// `bytes` must hold `len` bytes; `config` NULL or a live handle; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_field_onnx_bytes_config(
    bytes: *const u8,
    len: usize,
    config: *const fmrt_onnx_config,
    out: *mut *mut fmrt_field,
) -> fmrt_status {
    // SAFETY: the caller's contract, for each pointer.
    guard(|| unsafe { load_bytes(bytes, len, builder(config), out) })
}

/// Loads the model `bytes[0..len]` with `b` into `*out`.
///
/// # Safety
///
/// `bytes` must hold `len` bytes; `out` writable.
unsafe fn load_bytes(
    bytes: *const u8,
    len: usize,
    b: OnnxFieldBuilder,
    out: *mut *mut fmrt_field,
) -> FfiResult<()> {
    check_out(out, "out")?;
    // SAFETY: the caller's contract.
    let bytes = unsafe { slice(bytes, len, "bytes") }?;
    let field = b.load_bytes(bytes).map_err(FfiError::from)?;
    // SAFETY: checked non-NULL; writable by contract.
    unsafe { put_onnx(field, out) };
    Ok(())
}

/// Like `fmrt_field_onnx_file_config`, with the deprecated options struct
/// (NULL: defaults).
///
/// Deprecated: use `fmrt_field_onnx_file_config`.
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
        // SAFETY: the caller's contract, for each pointer.
        unsafe { load_file(path, config_of(options)?.inner, out) }
    })
}

/// Like `fmrt_field_onnx_bytes_config`, with the deprecated options struct
/// (NULL: defaults).
///
/// Deprecated: use `fmrt_field_onnx_bytes_config`.
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
        // SAFETY: the caller's contract, for each pointer.
        unsafe { load_bytes(bytes, len, config_of(options)?.inner, out) }
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
