//! `fmrt_scheduler`: schedules α(t), σ(t) from `.fm` source, files and built-ins.

use std::ffi::c_char;
use std::sync::Arc;

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::panic::{guard, guard_or};
use crate::{
    c_str, c_str_opt, check_out, free_handle, handle, put_handle, slice, slice_out, write_c_string,
};
use fmrt::scheduler::{Schedule, Scheduler};

/// A loaded scheduler (opaque). Immutable: one handle may be used from any
/// number of threads at once.
pub struct fmrt_scheduler {
    pub(crate) inner: Arc<Scheduler>,
}

/// A param override: `name = value` replaces the default of `param name` in the
/// `.fm` source.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fmrt_param {
    /// The param's name, NUL-terminated UTF-8.
    pub name: *const c_char,
    /// Its value.
    pub value: f64,
}

/// α, σ and their time derivatives at one time t.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct fmrt_coefficients {
    /// α(t), the weight of the data point x1.
    pub alpha: f64,
    /// σ(t), the weight of the noise x0.
    pub sigma: f64,
    /// α'(t).
    pub d_alpha: f64,
    /// σ'(t).
    pub d_sigma: f64,
}

/// Which printed expression `fmrt_scheduler_expression` returns.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fmrt_quantity {
    /// α(t).
    Alpha = 0,
    /// σ(t).
    Sigma = 1,
    /// α'(t), derived symbolically.
    DAlpha = 2,
    /// σ'(t), derived symbolically.
    DSigma = 3,
}

/// The overrides `params[0..n_params]` as Rust pairs.
///
/// # Safety
///
/// `params` must be NULL (with `n_params` 0) or point to `n_params` entries whose
/// names are NUL-terminated strings.
pub(crate) unsafe fn overrides(
    params: *const fmrt_param,
    n_params: usize,
) -> FfiResult<Vec<(String, f64)>> {
    // SAFETY: the caller's contract.
    let params = unsafe { slice(params, n_params, "params") }?;
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // SAFETY: the caller's contract on each name.
            let name = unsafe { c_str(p.name, &format!("params[{i}].name")) }?;
            Ok((name.to_string(), p.value))
        })
        .collect()
}

/// Shared tail of the constructors.
///
/// # Safety
///
/// `out` must be NULL or writable.
unsafe fn finish(
    load: impl FnOnce(&[(String, f64)]) -> fmrt::Result<Scheduler>,
    params: *const fmrt_param,
    n_params: usize,
    out: *mut *mut fmrt_scheduler,
) -> FfiResult<()> {
    check_out(out, "out")?;
    // SAFETY: forwarded contract.
    let overrides = unsafe { overrides(params, n_params) }?;
    let inner = Arc::new(load(&overrides)?);
    // SAFETY: `out` checked non-NULL; the caller's contract makes it writable.
    unsafe { put_handle(fmrt_scheduler { inner }, out) };
    Ok(())
}

/// Loads a scheduler from `.fm` source text. `file_name` (may be NULL: `"<source>"`)
/// names the source in diagnostics; `params[0..n_params]` override param
/// defaults (`params` may be NULL when `n_params` is 0). On success `*out`
/// receives a new handle to free with `fmrt_scheduler_free`. A source that does
/// not load is `FMRT_STATUS_SCHEDULER` with every rendered diagnostic in the
/// last-error message.
///
/// # Safety
///
/// Strings must be NUL-terminated; `params` must hold `n_params` entries; `out`
/// must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_scheduler_from_source(
    source: *const c_char,
    file_name: *const c_char,
    params: *const fmrt_param,
    n_params: usize,
    out: *mut *mut fmrt_scheduler,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let source = unsafe { c_str(source, "source") }?;
        // SAFETY: the caller's contract.
        let file = unsafe { c_str_opt(file_name, "file_name") }?.unwrap_or("<source>");
        // SAFETY: forwarded contract.
        unsafe {
            finish(
                |o| Scheduler::from_source(source, file, o),
                params,
                n_params,
                out,
            )
        }
    })
}

/// Loads a scheduler from the `.fm` file at `path` (any name, with or without the
/// `.fm` extension); see `fmrt_scheduler_from_source` for `params` and `out`. An
/// unreadable file is `FMRT_STATUS_IO`; a file over the 1 MiB limit of a `.fm`
/// source is `FMRT_STATUS_SCHEDULER`, without being read whole.
///
/// # Safety
///
/// As for `fmrt_scheduler_from_source`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_scheduler_from_file(
    path: *const c_char,
    params: *const fmrt_param,
    n_params: usize,
    out: *mut *mut fmrt_scheduler,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let path = unsafe { c_str(path, "path") }?;
        let source = fmrt::scheduler::read_source_file(path)?;
        // SAFETY: forwarded contract.
        unsafe {
            finish(
                |o| Scheduler::from_source(&source, path, o),
                params,
                n_params,
                out,
            )
        }
    })
}

/// Loads the built-in scheduler `name` (`ot`, `poly`, `cosine`,
/// `convex_cosine`, `linear_vp`, `vp`); see `fmrt_scheduler_from_source` for
/// `params` and `out`. An unknown name is `FMRT_STATUS_SCHEDULER` with a
/// "did you mean" hint.
///
/// # Safety
///
/// As for `fmrt_scheduler_from_source`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_scheduler_builtin(
    name: *const c_char,
    params: *const fmrt_param,
    n_params: usize,
    out: *mut *mut fmrt_scheduler,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let name = unsafe { c_str(name, "name") }?;
        // SAFETY: forwarded contract.
        unsafe { finish(|o| Scheduler::builtin(name, o), params, n_params, out) }
    })
}

/// Releases a scheduler. NULL is a no-op. Fields and paths built on it keep
/// their own reference and stay usable.
///
/// # Safety
///
/// `scheduler` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_scheduler_free(scheduler: *mut fmrt_scheduler) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(scheduler) })
}

/// Evaluates α, σ, α', σ' at time `t` into `*out`. Non-finite values (σ' of
/// `vp` at t = 1, say) are returned as they are, not as errors.
///
/// # Safety
///
/// `scheduler` must be a live handle; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_scheduler_coefficients(
    scheduler: *const fmrt_scheduler,
    t: f64,
    out: *mut fmrt_coefficients,
) -> fmrt_status {
    // SAFETY: the caller's contract.
    unsafe { fmrt_scheduler_coefficients_many(scheduler, &t, 1, out, 1) }
}

/// Evaluates the coefficients at each of `t[0..n_t]` into `out[0..n_t]`
/// (`out_len` entries available; fewer than `n_t` is
/// `FMRT_STATUS_BUFFER_TOO_SMALL`).
///
/// # Safety
///
/// `scheduler` must be a live handle; `t` must hold `n_t` values and `out`
/// `out_len` writable entries.
#[no_mangle]
pub unsafe extern "C" fn fmrt_scheduler_coefficients_many(
    scheduler: *const fmrt_scheduler,
    t: *const f64,
    n_t: usize,
    out: *mut fmrt_coefficients,
    out_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(scheduler, "scheduler") }?;
        // SAFETY: the caller's contract.
        let t = unsafe { slice(t, n_t, "t") }?;
        if n_t > 0 {
            check_out(out, "out")?;
        }
        // SAFETY: the caller's contract.
        let out = unsafe { slice_out(out, out_len, n_t, "out") }?;
        for (o, &ti) in out.iter_mut().zip(t) {
            let c = s.inner.coefficients(ti);
            *o = fmrt_coefficients {
                alpha: c.alpha,
                sigma: c.sigma,
                d_alpha: c.d_alpha,
                d_sigma: c.d_sigma,
            };
        }
        Ok(())
    })
}

/// Copies the simplified expression of `quantity` (an `fmrt_quantity` value)
/// as `.fm` text, NUL-terminated, into `buf` (`buf_len` bytes). `*out_len` (if
/// not NULL) receives the bytes needed, NUL included, on success and on
/// `FMRT_STATUS_BUFFER_TOO_SMALL` alike, so `buf_len` 0 with `buf` NULL asks for
/// the size.
///
/// # Safety
///
/// `scheduler` must be a live handle; `buf` NULL or `buf_len` writable bytes;
/// `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_scheduler_expression(
    scheduler: *const fmrt_scheduler,
    quantity: u32,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(scheduler, "scheduler") }?;
        let e = s.inner.expressions();
        let text = match quantity {
            q if q == fmrt_quantity::Alpha as u32 => &e.alpha,
            q if q == fmrt_quantity::Sigma as u32 => &e.sigma,
            q if q == fmrt_quantity::DAlpha as u32 => &e.d_alpha,
            q if q == fmrt_quantity::DSigma as u32 => &e.d_sigma,
            q => {
                return Err(FfiError::invalid(format!(
                    "quantity {q} is not an fmrt_quantity (0 to 3)"
                )))
            }
        };
        // SAFETY: the caller's contract.
        unsafe { write_c_string(text.as_bytes(), buf, buf_len, out_len) }
    })
}
