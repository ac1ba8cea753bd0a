//! Training batches on the affine path x_t = α(t)·x1 + σ(t)·x0 of a scheduler.

use ndarray::{ArrayViewD, IxDyn};

use crate::error::{fmrt_status, FfiError};
use crate::panic::guard;
use crate::scheduler::fmrt_scheduler;
use crate::{check_times_len, handle, slice, slice_out};
use fmrt::path::AffinePath;

/// Builds a flow-matching training batch along the path of `scheduler`: for
/// `n` pairs of data `x1` and noise `x0` (each `len` floats, `n` rows of
/// `len / n`) and times `t[0..t_len]` (one per sample, or one for all), writes
/// the path points x_t = α·x1 + σ·x0 into `out_x_t` and the regression targets
/// ẋ_t = α'·x1 + σ'·x0 into `out_target` (each `len` floats, of
/// `out_x_t_len` / `out_target_len` available). A non-finite coefficient (σ' of
/// `vp` at t = 1) is `FMRT_STATUS_SINGULAR` naming t. Thread-safe.
///
/// # Safety
///
/// `scheduler` must be a live handle; arrays must hold their stated lengths and
/// outputs must not overlap inputs.
#[no_mangle]
pub unsafe extern "C" fn fmrt_path_training_batch(
    scheduler: *const fmrt_scheduler,
    x1: *const f32,
    x0: *const f32,
    len: usize,
    n: usize,
    t: *const f64,
    t_len: usize,
    out_x_t: *mut f32,
    out_x_t_len: usize,
    out_target: *mut f32,
    out_target_len: usize,
) -> fmrt_status {
    guard(|| {
        if n == 0 || !len.is_multiple_of(n) {
            return Err(FfiError::shape(format!(
                "len = {len} is not a positive multiple of n = {n}"
            )));
        }
        // SAFETY: the caller's contract, for each pointer.
        let (s, x1, x0, t, out_x_t, out_target) = unsafe {
            (
                handle(scheduler, "scheduler")?,
                slice(x1, len, "x1")?,
                slice(x0, len, "x0")?,
                slice(t, t_len, "t")?,
                slice_out(out_x_t, out_x_t_len, len, "out_x_t")?,
                slice_out(out_target, out_target_len, len, "out_target")?,
            )
        };
        check_times_len(t_len, n, "t")?;
        let shape = IxDyn(&[n, len / n]);
        let view = |a| {
            ArrayViewD::from_shape(shape.clone(), a).map_err(|e| FfiError::shape(e.to_string()))
        };
        let path = AffinePath::new(s.inner.clone());
        let batch = path.training_batch(view(x1)?, view(x0)?, t)?;
        out_x_t
            .iter_mut()
            .zip(batch.x_t.iter())
            .for_each(|(o, &v)| *o = v);
        out_target
            .iter_mut()
            .zip(batch.target.iter())
            .for_each(|(o, &v)| *o = v);
        Ok(())
    })
}
