//! `fmrt_sampler`: a field with a solver configuration; samples from a seed or
//! from the caller's noise, with states at requested times.

use std::ptr::null_mut;

use ndarray::{ArrayViewD, IxDyn};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::extras::fmrt_extras;
use crate::field::{batch_shape, extras_or_empty, fmrt_field, shaped_batch};
use crate::likelihood_result::copy_out;
use crate::panic::{guard, guard_or};
use crate::scheduler::fmrt_scheduler;
use crate::solver::{fmrt_sample_status, fmrt_solver};
use crate::{check_out, free_handle, handle, mul, put_handle, slice, slice_out};
use fmrt::sampler::{Sampler, Samples, TimeSpan};
use fmrt::solver::StatePrecision;
use fmrt::stochastic::Stochastic;

/// A sampler: a velocity field integrated with a solver configuration, noise
/// from the standard normal (opaque). Immutable: one handle may be used from
/// any number of threads at once; each call allocates its own buffers.
pub struct fmrt_sampler {
    pub(crate) inner: Sampler,
    /// The field handle's view of the field (for state sizes).
    field: fmrt_field,
}

/// Counters of one sampling run.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct fmrt_stats {
    /// Velocity-field evaluations (batched calls).
    pub nfe: u64,
    /// Accepted steps.
    pub accepted: u64,
    /// Rejected steps (adaptive methods only).
    pub rejected: u64,
}

/// Creates a sampler for `field` integrated with `solver` into `*out`. The
/// sampler keeps its own reference to the field and a copy of the solver
/// configuration.
///
/// # Safety
///
/// Handles must be live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_new(
    field: *const fmrt_field,
    solver: *const fmrt_solver,
    out: *mut *mut fmrt_sampler,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (f, s) = unsafe { (handle(field, "field")?, handle(solver, "solver")?) };
        let inner = Sampler::new(f.inner.clone(), s.inner.clone());
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_sampler(f, inner, out) };
        Ok(())
    })
}

/// Writes a new sampler handle for `inner`, a sampler of `field`, to `*out`.
///
/// # Safety
///
/// `out` must be non-NULL and writable.
unsafe fn put_sampler(field: &fmrt_field, inner: Sampler, out: *mut *mut fmrt_sampler) {
    let field = fmrt_field {
        inner: field.inner.clone(),
        provider: field.provider.clone(),
    };
    // SAFETY: the caller's contract.
    unsafe { put_handle(fmrt_sampler { inner, field }, out) };
}

/// Creates a stochastic sampler into `*out`: the SDE with the same marginals
/// as the ODE of `field`, noise scale `scale` (G ≥ 0; 0 is the ODE), its
/// score derived from the velocity and `schedule` (the schedule the field's
/// time follows: a model's sampling schedule), integrated by Euler–Maruyama
/// on the fixed steps of `solver`, which must use the Euler method. The
/// Brownian increments of sample i come from its own stream of the seed given
/// to `fmrt_sampler_sample`, so runs shard like the ODE's. A negative or
/// non-finite `scale` is `FMRT_STATUS_INVALID_ARGUMENT`; the solver is
/// checked when sampling.
///
/// # Safety
///
/// Handles must be live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_new_stochastic(
    field: *const fmrt_field,
    solver: *const fmrt_solver,
    schedule: *const fmrt_scheduler,
    scale: f64,
    out: *mut *mut fmrt_sampler,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (f, s, schedule) = unsafe {
            (
                handle(field, "field")?,
                handle(solver, "solver")?,
                handle(schedule, "schedule")?,
            )
        };
        let sde = Stochastic::new(schedule.inner.clone(), scale)?;
        let inner = Sampler::new(f.inner.clone(), s.inner.clone()).with_sde(sde);
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_sampler(f, inner, out) };
        Ok(())
    })
}

/// Makes a new sampler into `*out`: `sampler` with its noise scaled by
/// `scale`, x0 = scale·z with z standard normal (Matcha-TTS samples with
/// 0.667): its seeded runs start from N(0, scale²·I), and the noise given to
/// `fmrt_sampler_integrate_shaped` is scaled the same way. `sampler` itself
/// is unchanged (samplers are immutable, so either may be used from any
/// number of threads); both may be freed in any order. `scale` must be
/// positive and finite, else `FMRT_STATUS_INVALID_ARGUMENT`. The caller's
/// starting points of `fmrt_sampler_integrate` and
/// `fmrt_sampler_integrate_per_sample` are states, used as given.
///
/// # Safety
///
/// `sampler` must be a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_with_noise_scale(
    sampler: *const fmrt_sampler,
    scale: f64,
    out: *mut *mut fmrt_sampler,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let s = unsafe { handle(sampler, "sampler") }?;
        let inner = s.inner.clone().with_noise_scale(scale)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_sampler(&s.field, inner, out) };
        Ok(())
    })
}

/// Makes a new sampler into `*out`: `sampler` with partial results
/// allowed (`partial` nonzero) or not (0, the default): a sample whose
/// integration fails (the solver's `max_steps`, a step-size underflow, a
/// non-finite state) then stops alone instead of failing the call. Applies
/// to adaptive steps with the independent error norm (the default), where
/// every sample has its own steps: the others are computed bit for bit as
/// in a full run, and a stopped sample's state is where it got to.
/// `fmrt_sampler_sample_rows_status` tells which stopped and why (the other
/// sample calls write the states without saying). With fixed or shared
/// steps, or an SDE, no sample can stop alone, and the sampling calls of a
/// partial sampler are refused (`FMRT_STATUS_INVALID_ARGUMENT`).
/// `sampler` itself is unchanged.
///
/// # Safety
///
/// `sampler` must be a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_with_partial(
    sampler: *const fmrt_sampler,
    partial: i32,
    out: *mut *mut fmrt_sampler,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let s = unsafe { handle(sampler, "sampler") }?;
        let inner = s.inner.clone().allow_partial(partial != 0);
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_sampler(&s.field, inner, out) };
        Ok(())
    })
}

/// The float type a sampler keeps its solver state in
/// (`fmrt_sampler_with_state_precision`). Calls take it as a `uint32_t`; a
/// number that is not one of these is `FMRT_STATUS_INVALID_ARGUMENT`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fmrt_state_precision {
    /// f64 state (the default).
    F64 = 0,
    /// f32 state, the network's own precision: explicit Runge–Kutta methods
    /// on fixed steps only.
    F32 = 1,
}

impl fmrt_state_precision {
    /// The precision numbered `value`.
    fn from_u32(value: u32) -> FfiResult<StatePrecision> {
        match value {
            v if v == fmrt_state_precision::F64 as u32 => Ok(StatePrecision::F64),
            v if v == fmrt_state_precision::F32 as u32 => Ok(StatePrecision::F32),
            other => Err(FfiError::invalid(format!(
                "parameter `precision` is {other}, not an fmrt_state_precision (0 f64, 1 f32)"
            ))),
        }
    }
}

/// Makes a new sampler into `*out`: `sampler` keeping its solver state in
/// `precision` (an `fmrt_state_precision`; default f64). f32 steps in the
/// network's own precision, as the projects' own sampling loops do: no
/// conversion per model call and half the memory traffic per step. It
/// applies to the explicit Runge–Kutta methods on fixed steps; the sampling
/// calls of an f32 sampler with another solver, or with an SDE, are refused
/// (`FMRT_STATUS_INVALID_ARGUMENT`, naming the solver). `sampler` itself is
/// unchanged.
///
/// # Safety
///
/// `sampler` must be a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_with_state_precision(
    sampler: *const fmrt_sampler,
    precision: u32,
    out: *mut *mut fmrt_sampler,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let s = unsafe { handle(sampler, "sampler") }?;
        let precision = fmrt_state_precision::from_u32(precision)?;
        let inner = s.inner.clone().with_state_precision(precision);
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_sampler(&s.field, inner, out) };
        Ok(())
    })
}

/// Releases a sampler. NULL is a no-op.
///
/// # Safety
///
/// `sampler` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_free(sampler: *mut fmrt_sampler) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(sampler) })
}

/// Writes the `n` source points that `fmrt_sampler_sample` with `seed` starts
/// from into `out` (`n × state size` floats of `out_len`).
///
/// # Safety
///
/// `sampler` must be a live handle; `out` must hold `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_draw_noise(
    sampler: *const fmrt_sampler,
    n: usize,
    seed: u64,
    out: *mut f32,
    out_len: usize,
) -> fmrt_status {
    // SAFETY: the caller's contract.
    unsafe { fmrt_sampler_draw_noise_rows(sampler, 0, n, seed, out, out_len) }
}

/// Writes the source points of samples `first_index .. first_index + n` of
/// the run `seed` defines into `out` (`n × state size` floats of `out_len`).
/// Sample i's noise depends on (seed, i) only, so shards drawn separately
/// concatenate to the unsharded draw.
///
/// # Safety
///
/// `sampler` must be a live handle; `out` must hold `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_draw_noise_rows(
    sampler: *const fmrt_sampler,
    first_index: u64,
    n: usize,
    seed: u64,
    out: *mut f32,
    out_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(sampler, "sampler") }?;
        let (_, len) = batch_shape(&s.field, n)?;
        // SAFETY: the caller's contract.
        let out = unsafe { slice_out(out, out_len, len, "out") }?;
        let noise = s.inner.draw_noise_rows(first_index, n, seed)?;
        out.iter_mut().zip(noise.iter()).for_each(|(o, &v)| *o = v);
        Ok(())
    })
}

/// Output buffers of one run, checked before any work is done.
struct Outputs<'a> {
    x: &'a mut [f32],
    trajectory: &'a mut [f32],
    stats: *mut fmrt_stats,
}

impl Outputs<'_> {
    /// Checks the buffers for `n` states and `n_times` saved times.
    ///
    /// # Safety
    ///
    /// The pointers must hold their stated lengths; `stats` NULL or writable.
    unsafe fn new<'a>(
        field: &fmrt_field,
        n: usize,
        n_times: usize,
        out_x: *mut f32,
        out_x_len: usize,
        out_trajectory: *mut f32,
        out_trajectory_len: usize,
        out_stats: *mut fmrt_stats,
    ) -> FfiResult<Outputs<'a>> {
        let (_, len) = batch_shape(field, n)?;
        let traj_len = mul(n_times, len, "n_times × n × state size")?;
        // SAFETY: the caller's contract, for each pointer.
        let (x, trajectory) = unsafe {
            (
                slice_out(out_x, out_x_len, len, "out_x")?,
                slice_out(
                    out_trajectory,
                    out_trajectory_len,
                    traj_len,
                    "out_trajectory",
                )?,
            )
        };
        Ok(Outputs {
            x,
            trajectory,
            stats: out_stats,
        })
    }

    /// Writes a run's results.
    fn write(self, samples: &Samples) {
        self.x
            .iter_mut()
            .zip(samples.x.iter())
            .for_each(|(o, &v)| *o = v);
        self.trajectory
            .iter_mut()
            .zip(samples.trajectory.iter())
            .for_each(|(o, &v)| *o = v);
        if !self.stats.is_null() {
            let st = samples.stats;
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe {
                *self.stats = fmrt_stats {
                    nfe: st.nfe as u64,
                    accepted: st.accepted as u64,
                    rejected: st.rejected as u64,
                }
            };
        }
    }
}

/// The sampler with `extras` attached (a cheap clone: the field is shared).
fn with_extras(s: &fmrt_sampler, extras: *const fmrt_extras) -> Sampler {
    // SAFETY: callers pass NULL or a live handle (their contract).
    let e = unsafe { extras_or_empty(extras) };
    s.inner.clone().with_extras(e.clone())
}

/// Draws `n` source points with `seed` and integrates them from t = 0 to 1.
///
/// - `times[0..n_times]` (may be NULL when `n_times` is 0): times in [0, 1] at
///   which to save the states, in any order.
/// - `extras` (may be NULL): conditioning inputs with `n` rows each.
/// - `out_x`: `n × state size` floats (of `out_x_len`) receive the samples.
/// - `out_trajectory`: `n_times × n × state size` floats (of
///   `out_trajectory_len`; may be NULL when `n_times` is 0) receive the saved
///   states, time-major.
/// - `out_stats` (may be NULL) receives the solver's counters.
///
/// Buffers are checked before any work; on failure nothing is written.
///
/// # Safety
///
/// `sampler` must be a live handle, `extras` NULL or live; arrays must hold
/// their stated lengths; outputs must not overlap inputs.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_sample(
    sampler: *const fmrt_sampler,
    n: usize,
    seed: u64,
    times: *const f64,
    n_times: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_trajectory: *mut f32,
    out_trajectory_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    // SAFETY: the caller's contract.
    unsafe {
        fmrt_sampler_sample_rows(
            sampler,
            0,
            n,
            seed,
            times,
            n_times,
            extras,
            out_x,
            out_x_len,
            out_trajectory,
            out_trajectory_len,
            out_stats,
        )
    }
}

/// Like `fmrt_sampler_sample`, for samples `first_index .. first_index + n`
/// of the run `seed` defines: a shard. With a field that treats each sample
/// independently of the batch, shards concatenate to the unsharded run bit
/// for bit, with fixed steps and with adaptive steps under the default
/// error norm (each sample takes its own steps); the shared-step norms
/// agree within the tolerance only.
///
/// # Safety
///
/// As for `fmrt_sampler_sample`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_sample_rows(
    sampler: *const fmrt_sampler,
    first_index: u64,
    n: usize,
    seed: u64,
    times: *const f64,
    n_times: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_trajectory: *mut f32,
    out_trajectory_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (s, times) = unsafe { (handle(sampler, "sampler")?, slice(times, n_times, "times")?) };
        // SAFETY: the caller's contract.
        let outputs = unsafe {
            Outputs::new(
                &s.field,
                n,
                n_times,
                out_x,
                out_x_len,
                out_trajectory,
                out_trajectory_len,
                out_stats,
            )
        }?;
        let samples = with_extras(s, extras).sample_rows(first_index, n, seed, times)?;
        outputs.write(&samples);
        Ok(())
    })
}

/// Like `fmrt_sampler_sample_rows` without trajectories, also writing how
/// each sample's integration ended into `out_status[0..n]` and its accepted
/// and rejected steps into `out_accepted[0..n]` and `out_rejected[0..n]`
/// (each of the three NULL: not wanted). With independent adaptive steps
/// (the default) the steps are each sample's own, with fixed or shared
/// steps the batch's; every status is `FMRT_SAMPLE_STATUS_DONE` unless
/// the sampler allows partial results (`fmrt_sampler_with_partial`).
/// Every buffer is checked before any work.
///
/// # Safety
///
/// As for `fmrt_sampler_sample_rows`; each non-NULL output must hold its
/// stated count.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_sample_rows_status(
    sampler: *const fmrt_sampler,
    first_index: u64,
    n: usize,
    seed: u64,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_status: *mut fmrt_sample_status,
    out_status_len: usize,
    out_accepted: *mut u64,
    out_accepted_len: usize,
    out_rejected: *mut u64,
    out_rejected_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { handle(sampler, "sampler") }?;
        for (null, len, name) in [
            (out_status.is_null(), out_status_len, "out_status"),
            (out_accepted.is_null(), out_accepted_len, "out_accepted"),
            (out_rejected.is_null(), out_rejected_len, "out_rejected"),
        ] {
            if !null && len < n {
                return Err(FfiError::too_small(name, len, n));
            }
        }
        // SAFETY: the caller's contract.
        let outputs =
            unsafe { Outputs::new(&s.field, n, 0, out_x, out_x_len, null_mut(), 0, out_stats) }?;
        let samples = with_extras(s, extras).sample_rows(first_index, n, seed, &[])?;
        let status: Vec<fmrt_sample_status> =
            samples.samples.iter().map(|p| p.status.into()).collect();
        let accepted: Vec<u64> = samples.samples.iter().map(|p| p.accepted as u64).collect();
        let rejected: Vec<u64> = samples.samples.iter().map(|p| p.rejected as u64).collect();
        outputs.write(&samples);
        // SAFETY: the caller's contract; lengths checked above.
        unsafe {
            if !out_status.is_null() {
                copy_out(&status, out_status, out_status_len, "out_status")?;
            }
            if !out_accepted.is_null() {
                copy_out(&accepted, out_accepted, out_accepted_len, "out_accepted")?;
            }
            if !out_rejected.is_null() {
                copy_out(&rejected, out_rejected, out_rejected_len, "out_rejected")?;
            }
        }
        Ok(())
    })
}

/// Shared body of the two integrate calls.
///
/// # Safety
///
/// As for `fmrt_sampler_integrate`.
#[allow(clippy::too_many_arguments)]
unsafe fn integrate(
    sampler: *const fmrt_sampler,
    x0: *const f32,
    x0_len: usize,
    n: usize,
    span: impl FnOnce() -> FfiResult<TimeSpan>,
    times: *const f64,
    n_times: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_trajectory: *mut f32,
    out_trajectory_len: usize,
    out_stats: *mut fmrt_stats,
) -> FfiResult<()> {
    // SAFETY: the caller's contract.
    let s = unsafe { handle(sampler, "sampler") }?;
    let (shape, len) = batch_shape(&s.field, n)?;
    if x0_len != len {
        return Err(FfiError::shape(format!(
            "x0 holds {x0_len} floats, but {n} states of shape {:?} need {len}",
            s.field.inner.state_shape()
        )));
    }
    // SAFETY: the caller's contract, for each pointer.
    let (x0, times) = unsafe { (slice(x0, x0_len, "x0")?, slice(times, n_times, "times")?) };
    let span = span()?;
    // SAFETY: the caller's contract.
    let outputs = unsafe {
        Outputs::new(
            &s.field,
            n,
            n_times,
            out_x,
            out_x_len,
            out_trajectory,
            out_trajectory_len,
            out_stats,
        )
    }?;
    let x0 =
        ArrayViewD::from_shape(IxDyn(&shape), x0).map_err(|e| FfiError::shape(e.to_string()))?;
    let samples = with_extras(s, extras).integrate(x0, &span, times)?;
    outputs.write(&samples);
    Ok(())
}

/// Integrates the caller's `n` starting points `x0[0..x0_len]` (`x0_len` must be
/// `n × state size`) from `t_start` to `t_end` (`t_end < t_start` integrates
/// backwards), saving the states at `times` (times t within the interval).
/// This runs the ODE: a stochastic sampler (noise scale G > 0) refuses it
/// with `FMRT_STATUS_INVALID_ARGUMENT`. Other parameters as for
/// `fmrt_sampler_sample`.
///
/// # Safety
///
/// As for `fmrt_sampler_sample`; `x0` must hold `x0_len` floats.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_integrate(
    sampler: *const fmrt_sampler,
    x0: *const f32,
    x0_len: usize,
    n: usize,
    t_start: f64,
    t_end: f64,
    times: *const f64,
    n_times: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_trajectory: *mut f32,
    out_trajectory_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    guard(|| {
        let span = || {
            Ok(TimeSpan::Common {
                start: t_start,
                end: t_end,
            })
        };
        // SAFETY: forwarded contract.
        unsafe {
            integrate(
                sampler,
                x0,
                x0_len,
                n,
                span,
                times,
                n_times,
                extras,
                out_x,
                out_x_len,
                out_trajectory,
                out_trajectory_len,
                out_stats,
            )
        }
    })
}

/// Like `fmrt_sampler_integrate`, but sample i goes from `t_starts[i]` to
/// `t_ends[i]` (both arrays hold `n` values), and `times` are normalised times
/// s ∈ [0, 1] (t_i = start_i + s·(end_i − start_i)).
///
/// # Safety
///
/// As for `fmrt_sampler_integrate`; `t_starts` and `t_ends` must hold `n`
/// values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_integrate_per_sample(
    sampler: *const fmrt_sampler,
    x0: *const f32,
    x0_len: usize,
    n: usize,
    t_starts: *const f64,
    t_ends: *const f64,
    times: *const f64,
    n_times: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_trajectory: *mut f32,
    out_trajectory_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    guard(|| {
        let span = || {
            // SAFETY: the caller's contract, for each pointer.
            let (starts, ends) =
                unsafe { (slice(t_starts, n, "t_starts")?, slice(t_ends, n, "t_ends")?) };
            Ok(TimeSpan::PerSample {
                starts: starts.to_vec(),
                ends: ends.to_vec(),
            })
        };
        // SAFETY: forwarded contract.
        unsafe {
            integrate(
                sampler,
                x0,
                x0_len,
                n,
                span,
                times,
                n_times,
                extras,
                out_x,
                out_x_len,
                out_trajectory,
                out_trajectory_len,
                out_stats,
            )
        }
    })
}

/// Writes the end states and counters of a shaped run.
///
/// # Safety
///
/// `stats` must be NULL or writable.
unsafe fn write_shaped(out_x: &mut [f32], stats: *mut fmrt_stats, samples: &Samples) {
    Outputs {
        x: out_x,
        trajectory: &mut [],
        stats,
    }
    .write(samples);
}

/// Draws `n` source points with `seed`, each of the per-sample state shape
/// `state_shape[0..rank]` (without the batch axis: `{80, T}` for a TTS
/// decoder of length T), and integrates them from t = 0 to 1, for a field
/// whose state shape comes with each call (an ONNX model with dynamic axes,
/// where `fmrt_sampler_sample` is `FMRT_STATUS_INVALID_ARGUMENT`); a field
/// of fixed shape takes its own shape here. One handle serves every length:
/// the shape is checked against the model's declared dims, and its symbolic
/// dims against the conditioning inputs of `extras` (NULL: none; one row per
/// sample, one row for all, or shared), a disagreement being
/// `FMRT_STATUS_SHAPE_MISMATCH` naming both inputs. An explicit grid that
/// starts after t = 0 (`fmrt_solver_grid`) starts there, the noise being the
/// state at that time. `out_x` receives `n × prod(state_shape)` floats (of
/// `out_x_len`); `out_stats` may be NULL. The noise of sample i depends on
/// (seed, i) and the shape only, as for `fmrt_sampler_sample`; the noise
/// scale of `fmrt_sampler_with_noise_scale` applies. Buffers are checked
/// before any work; on failure nothing is written.
///
/// # Safety
///
/// `sampler` must be a live handle, `extras` NULL or live; `state_shape`
/// must hold `rank` values, `out_x` `out_x_len` writable floats; `out_stats`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_sample_shaped(
    sampler: *const fmrt_sampler,
    state_shape: *const usize,
    rank: usize,
    n: usize,
    seed: u64,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    // SAFETY: the caller's contract.
    unsafe {
        fmrt_sampler_sample_rows_shaped(
            sampler,
            state_shape,
            rank,
            0,
            n,
            seed,
            extras,
            out_x,
            out_x_len,
            out_stats,
        )
    }
}

/// Like `fmrt_sampler_sample_shaped`, for samples `first_index ..
/// first_index + n` of the run `seed` defines: a shard, as
/// `fmrt_sampler_sample_rows` is for fields of fixed shape. `extras` hold
/// the shard's own rows (or one row, or shared inputs).
///
/// # Safety
///
/// As for `fmrt_sampler_sample_shaped`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_sample_rows_shaped(
    sampler: *const fmrt_sampler,
    state_shape: *const usize,
    rank: usize,
    first_index: u64,
    n: usize,
    seed: u64,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (s, (sample, _, len)) = unsafe {
            (
                handle(sampler, "sampler")?,
                shaped_batch(state_shape, rank, n)?,
            )
        };
        // SAFETY: the caller's contract.
        let out_x = unsafe { slice_out(out_x, out_x_len, len, "out_x") }?;
        let samples = with_extras(s, extras)
            .with_state_shape(&sample)
            .sample_rows(first_index, n, seed, &[])?;
        // SAFETY: NULL or writable by contract.
        unsafe { write_shaped(out_x, out_stats, &samples) };
        Ok(())
    })
}

/// Writes the source points of samples `first_index .. first_index + n` of
/// the run `seed` defines, each of the per-sample state shape
/// `state_shape[0..rank]`, into `out` (`n × prod(state_shape)` floats of
/// `out_len`): the noise `fmrt_sampler_sample_rows_shaped` starts from, for
/// a field whose state shape comes with each call. The noise scale of
/// `fmrt_sampler_with_noise_scale` applies.
///
/// # Safety
///
/// `sampler` must be a live handle; `state_shape` must hold `rank` values;
/// `out` must hold `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_draw_noise_shaped(
    sampler: *const fmrt_sampler,
    state_shape: *const usize,
    rank: usize,
    first_index: u64,
    n: usize,
    seed: u64,
    out: *mut f32,
    out_len: usize,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (s, (sample, _, len)) = unsafe {
            (
                handle(sampler, "sampler")?,
                shaped_batch(state_shape, rank, n)?,
            )
        };
        // SAFETY: the caller's contract.
        let out = unsafe { slice_out(out, out_len, len, "out") }?;
        let noise =
            s.inner
                .clone()
                .with_state_shape(&sample)
                .draw_noise_rows(first_index, n, seed)?;
        out.iter_mut().zip(noise.iter()).for_each(|(o, &v)| *o = v);
        Ok(())
    })
}

/// Like `fmrt_sampler_sample_shaped`, from the caller's standard-normal
/// noise `z[0..z_len]` (`z_len` must be `n × prod(state_shape)`, row-major
/// `[n, ...state_shape]`) instead of a seeded draw: the run starts from
/// x0 = s·z with s the sampler's noise scale (1 unless made by
/// `fmrt_sampler_with_noise_scale`), at t = 0 or at the first time of an
/// explicit grid, and ends at t = 1. This runs the ODE: a stochastic sampler
/// (noise scale G > 0) refuses it with `FMRT_STATUS_INVALID_ARGUMENT`, since
/// its diffusion noise comes from the seed of `fmrt_sampler_sample`. Other
/// parameters as for `fmrt_sampler_sample_shaped`.
///
/// # Safety
///
/// As for `fmrt_sampler_sample_shaped`; `z` must hold `z_len` floats and not
/// overlap `out_x`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sampler_integrate_shaped(
    sampler: *const fmrt_sampler,
    state_shape: *const usize,
    rank: usize,
    n: usize,
    z: *const f32,
    z_len: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_stats: *mut fmrt_stats,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (s, (sample, batch, len)) = unsafe {
            (
                handle(sampler, "sampler")?,
                shaped_batch(state_shape, rank, n)?,
            )
        };
        if z_len != len {
            return Err(FfiError::shape(format!(
                "z holds {z_len} floats, but {n} states of shape {sample:?} need {len}"
            )));
        }
        // SAFETY: the caller's contract, for each pointer.
        let (z, out_x) = unsafe {
            (
                slice(z, z_len, "z")?,
                slice_out(out_x, out_x_len, len, "out_x")?,
            )
        };
        let z =
            ArrayViewD::from_shape(IxDyn(&batch), z).map_err(|e| FfiError::shape(e.to_string()))?;
        let samples = with_extras(s, extras).sample_from_noise(z, &[])?;
        // SAFETY: NULL or writable by contract.
        unsafe { write_shaped(out_x, out_stats, &samples) };
        Ok(())
    })
}
