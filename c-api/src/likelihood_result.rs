//! `fmrt_likelihood_result`: a computed batch of log-likelihoods kept as a
//! handle, read by accessors: log p, the standard error of a Hutchinson
//! estimate, and each sample's status and steps (per-sample results that
//! the buffer calls have no room for).

use ndarray::{ArrayViewD, IxDyn};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::extras::fmrt_extras;
use crate::field::fmrt_field;
use crate::likelihood::{check_x, fmrt_likelihood_config, likelihood, states_and_start_times};
use crate::panic::{guard, guard_or};
use crate::solver::fmrt_sample_status;
use crate::{check_out, free_handle, handle, put_handle, slice_out};
use fmrt::likelihood::LogLikelihood;

/// The log-likelihoods of one batch with everything computed on the way,
/// opaque. Made by `fmrt_log_likelihood_result`, read by the
/// `fmrt_likelihood_result_*` accessors, released by
/// `fmrt_likelihood_result_free`. Immutable: any number of threads may
/// read it at once.
#[derive(Debug)]
pub struct fmrt_likelihood_result {
    inner: LogLikelihood,
}

/// Computes log p_t(x) of the `n` states `x[0..x_len]` as
/// `fmrt_log_likelihood_config` does (same arguments and checks), and keeps
/// the results in a new handle written to `*out`. With
/// `fmrt_likelihood_config_set_partial`, samples that fail stop alone and
/// the call still succeeds: read their status with
/// `fmrt_likelihood_result_sample_status`.
///
/// # Safety
///
/// Handles must be live or NULL where allowed; the arrays must hold the
/// stated counts; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_log_likelihood_result(
    field: *const fmrt_field,
    config: *const fmrt_likelihood_config,
    x: *const f32,
    x_len: usize,
    n: usize,
    t_start: *const f64,
    t_start_len: usize,
    extras: *const fmrt_extras,
    out: *mut *mut fmrt_likelihood_result,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let f = unsafe { handle(field, "field") }?;
        let shape = check_x(f, x_len, n)?;
        // SAFETY: the caller's contract.
        let (x, t_start) = unsafe { states_and_start_times(x, x_len, t_start, t_start_len, n) }?;
        // SAFETY: the caller's contract.
        let lik = unsafe { likelihood(f, config, extras) }?;
        let xv =
            ArrayViewD::from_shape(IxDyn(&shape), x).map_err(|e| FfiError::shape(e.to_string()))?;
        let inner = lik.log_likelihood_at(xv, t_start)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_handle(fmrt_likelihood_result { inner }, out) };
        Ok(())
    })
}

/// Releases a likelihood result. NULL is a no-op.
///
/// # Safety
///
/// `result` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_result_free(result: *mut fmrt_likelihood_result) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(result) })
}

/// Writes the number of samples of `result` into `*out_n`.
///
/// # Safety
///
/// `result` must be a live handle; `out_n` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_result_len(
    result: *const fmrt_likelihood_result,
    out_n: *mut usize,
) -> fmrt_status {
    guard(|| {
        check_out(out_n, "out_n")?;
        // SAFETY: the caller's contract.
        let r = unsafe { handle(result, "result") }?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out_n = r.inner.log_p.len() };
        Ok(())
    })
}

/// Copies `values` into `out[0..out_len]`, which must hold all of them.
///
/// # Safety
///
/// `out` must be NULL or point to `out_len` writable elements.
pub(crate) unsafe fn copy_out<T: Copy>(
    values: &[T],
    out: *mut T,
    out_len: usize,
    name: &str,
) -> FfiResult<()> {
    if values.is_empty() {
        return Ok(());
    }
    // SAFETY: forwarded contract.
    let dst = unsafe { slice_out(out, out_len, values.len(), name) }?;
    dst.copy_from_slice(values);
    Ok(())
}

/// Writes log p of each sample (nats) into `out_log_p[0..n]`; NaN for a
/// sample that did not finish.
///
/// # Safety
///
/// `result` must be a live handle; `out_log_p` must hold `out_log_p_len`
/// doubles.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_result_log_p(
    result: *const fmrt_likelihood_result,
    out_log_p: *mut f64,
    out_log_p_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { handle(result, "result") }?;
        // SAFETY: the caller's contract.
        unsafe { copy_out(&r.inner.log_p, out_log_p, out_log_p_len, "out_log_p") }
    })
}

/// Writes the standard error of each log p (nats) into
/// `out_std_error[0..n]`: with a stochastic divergence (Hutchinson's, or
/// finite differences along Hutchinson probes) the sample standard
/// deviation of the K probes' estimates over √K, NaN for one probe (no
/// spread to measure it from) and for a sample that did not finish. With
/// the exact divergence there is no standard error, and the call is
/// `FMRT_STATUS_UNSUPPORTED`, writing nothing.
///
/// # Safety
///
/// `result` must be a live handle; `out_std_error` must hold
/// `out_std_error_len` doubles.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_result_std_error(
    result: *const fmrt_likelihood_result,
    out_std_error: *mut f64,
    out_std_error_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { handle(result, "result") }?;
        let Some(errors) = &r.inner.log_p_std_error else {
            return Err(FfiError::new(
                fmrt_status::Unsupported,
                "this likelihood used a deterministic divergence (exact, or finite differences \
                 along the basis), which has no standard error; set the divergence to \
                 \"hutchinson\" with 2 or more probes"
                    .to_string(),
            ));
        };
        // SAFETY: the caller's contract.
        unsafe { copy_out(errors, out_std_error, out_std_error_len, "out_std_error") }
    })
}

/// Writes how each sample's integration ended into `out_status[0..n]`
/// (`FMRT_SAMPLE_STATUS_DONE` for all unless the config allowed partial
/// results).
///
/// # Safety
///
/// `result` must be a live handle; `out_status` must hold `out_status_len`
/// values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_result_sample_status(
    result: *const fmrt_likelihood_result,
    out_status: *mut fmrt_sample_status,
    out_status_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { handle(result, "result") }?;
        let status: Vec<fmrt_sample_status> =
            r.inner.samples.iter().map(|s| s.status.into()).collect();
        // SAFETY: the caller's contract.
        unsafe { copy_out(&status, out_status, out_status_len, "out_status") }
    })
}

/// Writes each sample's accepted steps into `out_accepted[0..n]` and its
/// rejected steps into `out_rejected[0..n]` (either NULL: not wanted). With
/// independent adaptive steps (the default) each sample's own; with fixed
/// or shared steps the batch's.
///
/// # Safety
///
/// `result` must be a live handle; each non-NULL output must hold its
/// stated count.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_result_sample_steps(
    result: *const fmrt_likelihood_result,
    out_accepted: *mut u64,
    out_accepted_len: usize,
    out_rejected: *mut u64,
    out_rejected_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { handle(result, "result") }?;
        let samples = &r.inner.samples;
        let accepted: Vec<u64> = samples.iter().map(|s| s.accepted as u64).collect();
        let rejected: Vec<u64> = samples.iter().map(|s| s.rejected as u64).collect();
        // Check both before writing either.
        for (ptr, len, name) in [
            (out_accepted, out_accepted_len, "out_accepted"),
            (out_rejected, out_rejected_len, "out_rejected"),
        ] {
            if !ptr.is_null() && len < samples.len() {
                return Err(FfiError::too_small(name, len, samples.len()));
            }
        }
        if !out_accepted.is_null() {
            // SAFETY: the caller's contract.
            unsafe { copy_out(&accepted, out_accepted, out_accepted_len, "out_accepted") }?;
        }
        if !out_rejected.is_null() {
            // SAFETY: the caller's contract.
            unsafe { copy_out(&rejected, out_rejected, out_rejected_len, "out_rejected") }?;
        }
        Ok(())
    })
}
