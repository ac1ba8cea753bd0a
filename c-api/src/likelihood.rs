//! Log-likelihoods: the augmented reverse-time solve and the most probable time
//! of a sample, configured by the opaque `fmrt_likelihood_config` (or the
//! deprecated plain `fmrt_likelihood_options` struct, read into one).

use std::ffi::c_char;

use ndarray::{ArrayViewD, IxDyn};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::extras::fmrt_extras;
use crate::field::{batch_shape, extras_or_empty, fmrt_field, shaped_batch};
use crate::panic::{guard, guard_or};
use crate::solver::fmrt_solver;
use crate::{
    c_str, c_str_opt, check_out, free_handle, handle, handle_mut, put_handle, slice, slice_out,
};
use fmrt::likelihood::{Divergence, Likelihood, ProbeDistribution, TimeSearch};
use fmrt::solver::{Method, SolverConfig};

/// How log-likelihoods are computed; start from `fmrt_likelihood_options_default`.
/// Strings and the solver are read during each call only.
///
/// Deprecated, to be removed in the release after next: use the
/// `fmrt_likelihood_config` handle and the `*_config` likelihood calls. This
/// struct's layout is frozen; it gains no fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fmrt_likelihood_options {
    /// The solver of the reverse-time solve (NULL: adaptive `dopri5` with
    /// rtol = atol = 1e-5).
    pub solver: *const fmrt_solver,
    /// How the divergence is computed: `"exact"` (NULL: the default; the
    /// field's own divergence or Jacobian–vector products along every basis
    /// direction), `"hutchinson"` (the unbiased stochastic estimator, `probes`
    /// directions per sample drawn from `seed`) or `"finite-difference"`
    /// (central differences of the velocity with step `epsilon`, biased; for
    /// fields without Jacobian–vector products).
    pub divergence: *const c_char,
    /// Hutchinson probes per sample, at least 1 (default 1).
    pub probes: usize,
    /// The distribution of the probes' entries: `"rademacher"` (NULL: the
    /// default) or `"gaussian"`.
    pub distribution: *const c_char,
    /// The finite-difference step, finite and positive (default 1e-3).
    pub epsilon: f64,
    /// The seed of the Hutchinson probes (default 0).
    pub seed: u64,
    /// The scale s of the noise the samples were drawn from, N(0, s²·I)
    /// (as `fmrt_sampler_with_noise_scale` gives a sampler): log p0 is that
    /// of this distribution. Positive and finite; 0 means the default, 1.
    /// Added after 0.1: a program compiled against 0.1's shorter struct must
    /// not call `fmrt_likelihood_options_default` of a newer library, which
    /// writes this field past the end of that struct.
    pub noise_scale: f64,
}

impl fmrt_likelihood_options {
    /// The defaults `fmrt_likelihood_options_default` writes.
    const DEFAULT: Self = Self {
        solver: std::ptr::null(),
        divergence: std::ptr::null(),
        probes: 1,
        distribution: std::ptr::null(),
        epsilon: 1e-3,
        seed: 0,
        noise_scale: 1.0,
    };
}

/// Counters of one likelihood computation.
///
/// Deprecated: counts a stacked call (velocity and products in one model
/// call) as one velocity and one JVP call, so the fast path cannot be told
/// apart; the `*_config` likelihood calls write `fmrt_likelihood_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct fmrt_likelihood_stats {
    /// Right-hand-side evaluations of the augmented system (summed over solves).
    pub nfe: u64,
    /// Accepted steps.
    pub accepted: u64,
    /// Rejected steps (adaptive methods only).
    pub rejected: u64,
    /// Velocity calls (batched), finite-difference ones included.
    pub velocity_calls: u64,
    /// Jacobian–vector product calls (batched).
    pub jvp_calls: u64,
    /// Exact divergence calls (batched).
    pub divergence_calls: u64,
    /// Augmented solves run (1 for a log-likelihood; several for a time search).
    pub solves: u64,
}

/// Counters of one likelihood computation, as the `*_config` likelihood
/// calls write them. Set `size` to `sizeof(fmrt_likelihood_counters)` before
/// the call: the library writes only the fields that fit in `size` bytes,
/// so a program compiled against this struct keeps working when a later
/// release appends fields. A `size` too small for `nfe` is
/// `FMRT_STATUS_INVALID_ARGUMENT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct fmrt_likelihood_counters {
    /// The size of this struct as the caller compiled it; set by the caller.
    pub size: usize,
    /// Right-hand-side evaluations of the augmented system (summed over solves).
    pub nfe: u64,
    /// Accepted steps.
    pub accepted: u64,
    /// Rejected steps (adaptive methods only).
    pub rejected: u64,
    /// Velocity calls (batched), finite-difference ones included; stacked
    /// calls not included.
    pub velocity_calls: u64,
    /// Jacobian–vector product calls (batched); stacked calls not included.
    pub jvp_calls: u64,
    /// Stacked calls: the velocity and the products of all directions of a
    /// stage in one model call, each in place of one velocity and one JVP
    /// call. Nonzero when the one-call-per-stage path ran.
    pub stacked_calls: u64,
    /// Exact divergence calls (batched).
    pub divergence_calls: u64,
    /// Augmented solves run (1 for a log-likelihood; several for a time search).
    pub solves: u64,
}

impl fmrt_likelihood_counters {
    /// The counters of `solves` solves with these totals.
    fn new(
        stats: &fmrt::solver::Stats,
        calls: &fmrt::likelihood::FieldCalls,
        solves: usize,
    ) -> Self {
        Self {
            size: std::mem::size_of::<Self>(),
            nfe: stats.nfe as u64,
            accepted: stats.accepted as u64,
            rejected: stats.rejected as u64,
            velocity_calls: calls.velocity as u64,
            jvp_calls: calls.jvp as u64,
            stacked_calls: calls.stacked as u64,
            divergence_calls: calls.divergence as u64,
            solves: solves as u64,
        }
    }

    /// The legacy counters, a stacked call counted as one of each.
    fn legacy(&self) -> fmrt_likelihood_stats {
        fmrt_likelihood_stats {
            nfe: self.nfe,
            accepted: self.accepted,
            rejected: self.rejected,
            velocity_calls: self.velocity_calls + self.stacked_calls,
            jvp_calls: self.jvp_calls + self.stacked_calls,
            divergence_calls: self.divergence_calls,
            solves: self.solves,
        }
    }
}

/// Where a likelihood call writes its counters.
#[derive(Clone, Copy)]
enum StatsOut {
    /// The deprecated struct (NULL: not wanted).
    Legacy(*mut fmrt_likelihood_stats),
    /// The sized struct (NULL: not wanted).
    Counters(*mut fmrt_likelihood_counters),
}

/// The counter fields after `size`, in order, all `u64`.
const COUNTER_FIELDS: usize = 8;

impl StatsOut {
    /// Checks a sized struct's `size` before any work.
    ///
    /// # Safety
    ///
    /// A `Counters` pointer must be NULL or point to a readable `size`.
    unsafe fn check(self) -> FfiResult<()> {
        if let StatsOut::Counters(out) = self {
            // SAFETY: the caller's contract.
            if let Some(size) = unsafe { out.as_ref() }.map(|c| c.size) {
                let need = std::mem::offset_of!(fmrt_likelihood_counters, nfe) + 8;
                if size < need {
                    return Err(FfiError::invalid(format!(
                        "`out_counters->size` is {size}; set it to \
                         sizeof(fmrt_likelihood_counters) (at least {need})"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Writes `c` (NULL: nothing); a sized struct receives the fields that
    /// fit its `size`, which stays as the caller set it.
    ///
    /// # Safety
    ///
    /// The pointer must be NULL or writable for the size it declares.
    unsafe fn write(self, c: &fmrt_likelihood_counters) {
        match self {
            StatsOut::Legacy(out) if !out.is_null() => {
                // SAFETY: non-NULL; writable by the caller's contract.
                unsafe { *out = c.legacy() }
            }
            StatsOut::Counters(out) if !out.is_null() => {
                let values = [
                    c.nfe,
                    c.accepted,
                    c.rejected,
                    c.velocity_calls,
                    c.jvp_calls,
                    c.stacked_calls,
                    c.divergence_calls,
                    c.solves,
                ];
                let start = std::mem::offset_of!(fmrt_likelihood_counters, nfe);
                // SAFETY: non-NULL, `size` readable and checked by `check`.
                let size = unsafe { (*out).size };
                let fit = (size.saturating_sub(start) / 8).min(COUNTER_FIELDS);
                // SAFETY: the fields `nfe..` are contiguous u64s after
                // `start`; the first `fit` lie within the caller's `size`.
                unsafe {
                    let first = out.cast::<u8>().add(start).cast::<u64>();
                    for (i, v) in values.iter().take(fit).enumerate() {
                        first.add(i).write(*v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// How log-likelihoods are computed, opaque. Made by
/// `fmrt_likelihood_config_new` (adaptive `dopri5` with rtol = atol = 1e-5,
/// exact divergence, 1 probe, Rademacher, epsilon 1e-3, seed 0, noise scale
/// 1), changed by the `fmrt_likelihood_config_set_*` calls (each checks its
/// value, and leaves the config unchanged when it refuses one), released by
/// `fmrt_likelihood_config_free`. Read by the `*_config` likelihood calls;
/// not to be changed while another thread uses it.
#[derive(Clone, Debug)]
pub struct fmrt_likelihood_config {
    /// The reverse-time solver (None: adaptive dopri5, 1e-5).
    solver: Option<SolverConfig>,
    /// The divergence mode's name (None: exact).
    divergence: Option<String>,
    /// Hutchinson probes per sample.
    probes: usize,
    /// The probes' distribution's name (None: Rademacher).
    distribution: Option<String>,
    /// The finite-difference step.
    epsilon: f64,
    /// The seed of the Hutchinson probes.
    seed: u64,
    /// The scale of the source noise (None: the field's standard normal).
    noise_scale: Option<f64>,
    /// Whether failed samples stop alone.
    partial: bool,
}

impl Default for fmrt_likelihood_config {
    fn default() -> Self {
        Self {
            solver: None,
            divergence: None,
            probes: 1,
            distribution: None,
            epsilon: 1e-3,
            seed: 0,
            noise_scale: None,
            partial: false,
        }
    }
}

impl fmrt_likelihood_config {
    /// The solver of the reverse-time solve (for Rust code that receives a
    /// handle).
    pub fn solver(&self) -> SolverConfig {
        self.solver
            .clone()
            .unwrap_or_else(|| SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5))
    }

    /// The divergence estimator the settings describe (None: settings that
    /// do not resolve, which the setters never leave).
    pub fn divergence(&self) -> Option<Divergence> {
        divergence(self).ok()
    }

    /// The seed of the Hutchinson probes.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The scale of the source noise, if set.
    pub fn noise_scale(&self) -> Option<f64> {
        self.noise_scale
    }
}

/// Makes the default likelihood config into `*out`.
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_new(
    out: *mut *mut fmrt_likelihood_config,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_handle(fmrt_likelihood_config::default(), out) };
        Ok(())
    })
}

/// Releases a likelihood config. NULL is a no-op.
///
/// # Safety
///
/// `config` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_free(config: *mut fmrt_likelihood_config) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(config) })
}

/// Applies `change` to `config` if the divergence settings still resolve;
/// otherwise leaves it as it was.
///
/// # Safety
///
/// `config` must be NULL or a live handle.
unsafe fn set_likelihood(
    config: *mut fmrt_likelihood_config,
    change: impl FnOnce(&mut fmrt_likelihood_config) -> FfiResult<()>,
) -> FfiResult<()> {
    // SAFETY: the caller's contract.
    let c = unsafe { handle_mut(config, "config") }?;
    let mut candidate = c.clone();
    change(&mut candidate)?;
    divergence(&candidate)?;
    *c = candidate;
    Ok(())
}

/// The solver of the reverse-time solve (copied; NULL restores the default,
/// adaptive `dopri5` with rtol = atol = 1e-5).
///
/// # Safety
///
/// `config` must be a live handle; `solver` NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_solver(
    config: *mut fmrt_likelihood_config,
    solver: *const fmrt_solver,
) -> fmrt_status {
    guard(|| {
        // SAFETY: NULL or live by contract.
        let solver = unsafe { solver.as_ref() }.map(|s| s.inner.clone());
        // SAFETY: forwarded contract.
        unsafe {
            set_likelihood(config, |c| {
                c.solver = solver;
                Ok(())
            })
        }
    })
}

/// How the divergence is computed: `"exact"` (the default; the field's own
/// divergence or Jacobian–vector products along every basis direction),
/// `"hutchinson"` (the unbiased stochastic estimator, the set number of
/// probes per sample drawn from the seed) or `"finite-difference"` (central
/// differences of the velocity with the set epsilon, biased; for fields
/// without Jacobian–vector products); any ASCII case.
///
/// # Safety
///
/// `config` must be a live handle; `divergence` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_divergence(
    config: *mut fmrt_likelihood_config,
    divergence: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let name = unsafe { c_str(divergence, "divergence") }?.to_string();
        // SAFETY: forwarded contract.
        unsafe {
            set_likelihood(config, |c| {
                c.divergence = Some(name);
                Ok(())
            })
        }
    })
}

/// Hutchinson probes per sample, at least 1 (default 1).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_probes(
    config: *mut fmrt_likelihood_config,
    probes: usize,
) -> fmrt_status {
    guard(|| {
        if probes == 0 {
            return Err(FfiError::invalid("`probes` must be at least 1"));
        }
        // SAFETY: forwarded contract.
        unsafe {
            set_likelihood(config, |c| {
                c.probes = probes;
                Ok(())
            })
        }
    })
}

/// The distribution of the probes' entries: `"rademacher"` (the default) or
/// `"gaussian"`.
///
/// # Safety
///
/// `config` must be a live handle; `distribution` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_distribution(
    config: *mut fmrt_likelihood_config,
    distribution: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let name = unsafe { c_str(distribution, "distribution") }?.to_string();
        // SAFETY: forwarded contract.
        unsafe {
            set_likelihood(config, |c| {
                c.distribution = Some(name);
                Ok(())
            })
        }
    })
}

/// The finite-difference step, finite and positive (default 1e-3).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_epsilon(
    config: *mut fmrt_likelihood_config,
    epsilon: f64,
) -> fmrt_status {
    guard(|| {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(FfiError::invalid(format!(
                "`epsilon` must be finite and positive, got {epsilon}"
            )));
        }
        // SAFETY: forwarded contract.
        unsafe {
            set_likelihood(config, |c| {
                c.epsilon = epsilon;
                Ok(())
            })
        }
    })
}

/// The seed of the Hutchinson probes (default 0).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_seed(
    config: *mut fmrt_likelihood_config,
    seed: u64,
) -> fmrt_status {
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe {
            set_likelihood(config, |c| {
                c.seed = seed;
                Ok(())
            })
        }
    })
}

/// Whether a sample whose integration fails (the solver's `max_steps`, a
/// step-size underflow, a non-finite state) stops alone instead of failing
/// the call (`partial` nonzero; default 0). Applies to adaptive steps with
/// the independent error norm (the default), where every sample has its
/// own steps: the others are computed bit for bit as in a full run. A
/// stopped sample's log p (and bits per dimension, standard error) is
/// NaN; `fmrt_likelihood_result_sample_status` tells which stopped and
/// why. With fixed or shared steps no sample can stop alone, and the
/// likelihood calls refuse a partial config (`FMRT_STATUS_INVALID_ARGUMENT`).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_partial(
    config: *mut fmrt_likelihood_config,
    partial: i32,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { handle_mut(config, "config") }?;
        c.partial = partial != 0;
        Ok(())
    })
}

/// The scale s of the noise the samples were drawn from, N(0, s²·I) (as
/// `fmrt_sampler_with_noise_scale` gives a sampler): log p0 is that of this
/// distribution. Positive and finite (default 1).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_config_set_noise_scale(
    config: *mut fmrt_likelihood_config,
    scale: f64,
) -> fmrt_status {
    guard(|| {
        fmrt::source::check_noise_scale(scale)?;
        // SAFETY: forwarded contract.
        unsafe {
            set_likelihood(config, |c| {
                c.noise_scale = Some(scale);
                Ok(())
            })
        }
    })
}

/// Writes the default likelihood options into `*out`: no solver (adaptive
/// `dopri5`, 1e-5), exact divergence, 1 probe, Rademacher, epsilon 1e-3, seed 0,
/// noise scale 1.
///
/// Deprecated: use `fmrt_likelihood_config_new`.
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_likelihood_options_default(
    out: *mut fmrt_likelihood_options,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out = fmrt_likelihood_options::DEFAULT };
        Ok(())
    })
}

/// The divergence mode of `o` with its parameters: the names are the
/// library's (`FromStr`); the messages name the setting.
fn divergence(o: &fmrt_likelihood_config) -> FfiResult<Divergence> {
    fn named(field: &'static str) -> impl Fn(fmrt::Error) -> FfiError {
        move |e| FfiError::invalid(format!("`{field}`: {e}"))
    }
    let distribution = o
        .distribution
        .as_deref()
        .map_or(Ok(ProbeDistribution::Rademacher), str::parse)
        .map_err(named("options.distribution"))?;
    let mode = o
        .divergence
        .as_deref()
        .map_or(Ok(Divergence::Exact), str::parse::<Divergence>)
        .map_err(named("options.divergence"))?
        .with_settings(o.probes, distribution, o.epsilon);
    match mode {
        Divergence::Hutchinson { probes: 0, .. } => Err(FfiError::invalid(
            "`options.probes` must be at least 1 for Hutchinson's estimator",
        )),
        Divergence::FiniteDifference { epsilon, .. } if !(epsilon.is_finite() && epsilon > 0.0) => {
            Err(FfiError::invalid(format!(
                "`options.epsilon` must be finite and positive, got {epsilon}"
            )))
        }
        mode => Ok(mode),
    }
}

/// The config that the deprecated `options` (NULL: defaults) describe.
///
/// # Safety
///
/// `options` must be NULL or readable with valid strings and solver.
unsafe fn config_of(options: *const fmrt_likelihood_options) -> FfiResult<fmrt_likelihood_config> {
    // SAFETY: the caller's contract.
    let o = unsafe { options.as_ref() }.map_or(fmrt_likelihood_options::DEFAULT, |o| *o);
    let owned = |s: Option<&str>| s.map(str::to_string);
    // SAFETY: the caller's contract on each string and the solver.
    unsafe {
        Ok(fmrt_likelihood_config {
            solver: match o.solver.is_null() {
                true => None,
                false => Some(handle(o.solver, "options.solver")?.inner.clone()),
            },
            divergence: owned(c_str_opt(o.divergence, "options.divergence")?),
            probes: o.probes,
            distribution: owned(c_str_opt(o.distribution, "options.distribution")?),
            epsilon: o.epsilon,
            seed: o.seed,
            noise_scale: (o.noise_scale != 0.0).then_some(o.noise_scale),
            partial: false,
        })
    }
}

/// The likelihood computation of `field` under `config` (NULL: defaults)
/// and `extras`.
///
/// # Safety
///
/// `config` must be NULL or live; `extras` NULL or live.
pub(crate) unsafe fn likelihood(
    field: &fmrt_field,
    config: *const fmrt_likelihood_config,
    extras: *const fmrt_extras,
) -> FfiResult<Likelihood> {
    let default = fmrt_likelihood_config::default();
    // SAFETY: the caller's contract.
    let o = unsafe { config.as_ref() }.unwrap_or(&default);
    let mode = divergence(o)?;
    mode.check_available(field.inner.as_ref())?;
    // SAFETY: the caller's contract.
    let extras = unsafe { extras_or_empty(extras) }.clone();
    let lik = Likelihood::new(field.inner.clone(), o.solver())
        .with_divergence(mode)
        .with_seed(o.seed)
        .with_extras(extras)
        .allow_partial(o.partial);
    Ok(match o.noise_scale {
        Some(scale) => lik.with_noise_scale(scale)?,
        None => lik,
    })
}

/// The `n` samples `x[0..x_len]` of a likelihood call and their start times
/// (one for all, or one per sample).
///
/// # Safety
///
/// Each pointer is NULL or holds the length beside it.
pub(crate) unsafe fn states_and_start_times<'a>(
    x: *const f32,
    x_len: usize,
    t_start: *const f64,
    t_start_len: usize,
    n: usize,
) -> FfiResult<(&'a [f32], &'a [f64])> {
    // SAFETY: the caller's contract, for each pointer.
    let (x, t_start) = unsafe {
        (
            slice(x, x_len, "x")?,
            slice(t_start, t_start_len, "t_start")?,
        )
    };
    if t_start_len != 1 && t_start_len != n {
        return Err(FfiError::shape(format!(
            "t_start holds {t_start_len} times; give one for all or one per sample ({n})"
        )));
    }
    Ok((x, t_start))
}

/// Checks that `x_len` is `n × state size` and returns the batch shape.
pub(crate) fn check_x(f: &fmrt_field, x_len: usize, n: usize) -> FfiResult<Vec<usize>> {
    let (shape, len) = batch_shape(f, n)?;
    if x_len != len {
        return Err(FfiError::shape(format!(
            "x holds {x_len} floats, but {n} states of shape {:?} need {len}",
            f.inner.state_shape()
        )));
    }
    Ok(shape)
}

/// An optional output `ptr[0..len]` that must hold `need` elements when given
/// (NULL: not wanted, whatever `len`).
///
/// # Safety
///
/// As for `slice_out`.
unsafe fn optional_out<'a, T>(
    ptr: *mut T,
    len: usize,
    need: usize,
    name: &str,
) -> FfiResult<Option<&'a mut [T]>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { slice_out(ptr, len, need, name) }.map(Some)
    }
}

/// Computes log p_t(x) of the `n` states `x[0..x_len]` (`n × state size`
/// floats) taken at the times `t_start[0..t_start_len]` (one for all, or one
/// per sample; each in [0, 1], 1 for data): the state and the divergence
/// integral are solved from t_start back to 0 and log p = log N(x0; 0, I) −
/// ∫ div u dt. `extras` (NULL: none) hold one row per sample; `config` NULL
/// means the defaults.
///
/// Outputs: `out_log_p[0..n]` (nats, required; `out_log_p_len` available);
/// optional (NULL: not wanted) `out_x0` (`n × state size` floats, the states
/// reached at t = 0), `out_bits_per_dim` (`n` values, −log p / (D ln 2)) and
/// `out_counters` (its `size` set by the caller). Every buffer is checked
/// before any work. A mode that needs Jacobian–vector products on a field
/// without them is `FMRT_STATUS_UNSUPPORTED`.
///
/// # Safety
///
/// Handles must be live or NULL where allowed; the arrays must hold the stated
/// counts; outputs must not overlap the inputs.
#[no_mangle]
pub unsafe extern "C" fn fmrt_log_likelihood_config(
    field: *const fmrt_field,
    config: *const fmrt_likelihood_config,
    x: *const f32,
    x_len: usize,
    n: usize,
    t_start: *const f64,
    t_start_len: usize,
    extras: *const fmrt_extras,
    out_log_p: *mut f64,
    out_log_p_len: usize,
    out_x0: *mut f32,
    out_x0_len: usize,
    out_bits_per_dim: *mut f64,
    out_bits_per_dim_len: usize,
    out_counters: *mut fmrt_likelihood_counters,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let f = unsafe { handle(field, "field") }?;
        let shape = check_x(f, x_len, n)?;
        let out = Outputs {
            log_p: (out_log_p, out_log_p_len),
            x0: (out_x0, out_x0_len),
            bits_per_dim: (out_bits_per_dim, out_bits_per_dim_len),
            stats: StatsOut::Counters(out_counters),
        };
        // SAFETY: forwarded contract.
        unsafe {
            log_likelihood(
                f,
                config,
                &shape,
                x,
                x_len,
                t_start,
                t_start_len,
                extras,
                out,
            )
        }
    })
}

/// Like `fmrt_log_likelihood_config`, with the deprecated options struct
/// (NULL: defaults) and counters.
///
/// Deprecated: use `fmrt_log_likelihood_config`.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`; `options` NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_log_likelihood(
    field: *const fmrt_field,
    options: *const fmrt_likelihood_options,
    x: *const f32,
    x_len: usize,
    n: usize,
    t_start: *const f64,
    t_start_len: usize,
    extras: *const fmrt_extras,
    out_log_p: *mut f64,
    out_log_p_len: usize,
    out_x0: *mut f32,
    out_x0_len: usize,
    out_bits_per_dim: *mut f64,
    out_bits_per_dim_len: usize,
    out_stats: *mut fmrt_likelihood_stats,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let f = unsafe { handle(field, "field") }?;
        let shape = check_x(f, x_len, n)?;
        // SAFETY: the caller's contract.
        let config = unsafe { config_of(options) }?;
        let out = Outputs {
            log_p: (out_log_p, out_log_p_len),
            x0: (out_x0, out_x0_len),
            bits_per_dim: (out_bits_per_dim, out_bits_per_dim_len),
            stats: StatsOut::Legacy(out_stats),
        };
        // SAFETY: forwarded contract.
        unsafe {
            log_likelihood(
                f,
                &config,
                &shape,
                x,
                x_len,
                t_start,
                t_start_len,
                extras,
                out,
            )
        }
    })
}

/// Computes log p_t(x) of the `n` states `x[0..x_len]`, each of the
/// per-sample state shape `state_shape[0..rank]` given with the call (so
/// `x_len` must be `n × prod(state_shape)`), for a field whose state shape
/// comes with each call (an ONNX model with dynamic axes, where
/// `fmrt_log_likelihood_config` is `FMRT_STATUS_INVALID_ARGUMENT`); a field
/// of fixed shape checks the shape against its own. `out_x0`, if given,
/// holds `n × prod(state_shape)` floats. Everything else as for
/// `fmrt_log_likelihood_config`.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`; `state_shape` must hold `rank` values.
#[no_mangle]
pub unsafe extern "C" fn fmrt_log_likelihood_shaped_config(
    field: *const fmrt_field,
    config: *const fmrt_likelihood_config,
    state_shape: *const usize,
    rank: usize,
    x: *const f32,
    x_len: usize,
    n: usize,
    t_start: *const f64,
    t_start_len: usize,
    extras: *const fmrt_extras,
    out_log_p: *mut f64,
    out_log_p_len: usize,
    out_x0: *mut f32,
    out_x0_len: usize,
    out_bits_per_dim: *mut f64,
    out_bits_per_dim_len: usize,
    out_counters: *mut fmrt_likelihood_counters,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (f, shape) = unsafe { shaped_x(field, state_shape, rank, x_len, n) }?;
        let out = Outputs {
            log_p: (out_log_p, out_log_p_len),
            x0: (out_x0, out_x0_len),
            bits_per_dim: (out_bits_per_dim, out_bits_per_dim_len),
            stats: StatsOut::Counters(out_counters),
        };
        // SAFETY: forwarded contract.
        unsafe {
            log_likelihood(
                f,
                config,
                &shape,
                x,
                x_len,
                t_start,
                t_start_len,
                extras,
                out,
            )
        }
    })
}

/// Like `fmrt_log_likelihood_shaped_config`, with the deprecated options
/// struct (NULL: defaults) and counters.
///
/// Deprecated: use `fmrt_log_likelihood_shaped_config`.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_shaped_config`; `options` NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_log_likelihood_shaped(
    field: *const fmrt_field,
    options: *const fmrt_likelihood_options,
    state_shape: *const usize,
    rank: usize,
    x: *const f32,
    x_len: usize,
    n: usize,
    t_start: *const f64,
    t_start_len: usize,
    extras: *const fmrt_extras,
    out_log_p: *mut f64,
    out_log_p_len: usize,
    out_x0: *mut f32,
    out_x0_len: usize,
    out_bits_per_dim: *mut f64,
    out_bits_per_dim_len: usize,
    out_stats: *mut fmrt_likelihood_stats,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (f, shape) = unsafe { shaped_x(field, state_shape, rank, x_len, n) }?;
        // SAFETY: the caller's contract.
        let config = unsafe { config_of(options) }?;
        let out = Outputs {
            log_p: (out_log_p, out_log_p_len),
            x0: (out_x0, out_x0_len),
            bits_per_dim: (out_bits_per_dim, out_bits_per_dim_len),
            stats: StatsOut::Legacy(out_stats),
        };
        // SAFETY: forwarded contract.
        unsafe {
            log_likelihood(
                f,
                &config,
                &shape,
                x,
                x_len,
                t_start,
                t_start_len,
                extras,
                out,
            )
        }
    })
}

/// The field and batch shape of a shaped call, `x_len` checked against it.
///
/// # Safety
///
/// `field` must be NULL or live; `state_shape` must hold `rank` values.
unsafe fn shaped_x<'a>(
    field: *const fmrt_field,
    state_shape: *const usize,
    rank: usize,
    x_len: usize,
    n: usize,
) -> FfiResult<(&'a fmrt_field, Vec<usize>)> {
    // SAFETY: the caller's contract, for each pointer.
    let (f, (sample, shape, len)) =
        unsafe { (handle(field, "field")?, shaped_batch(state_shape, rank, n)?) };
    if x_len != len {
        return Err(FfiError::shape(format!(
            "x holds {x_len} floats, but {n} states of shape {sample:?} need {len}"
        )));
    }
    Ok((f, shape))
}

/// The output buffers of a log-likelihood call, each with its length.
struct Outputs {
    log_p: (*mut f64, usize),
    x0: (*mut f32, usize),
    bits_per_dim: (*mut f64, usize),
    stats: StatsOut,
}

/// The body of the log-likelihood calls, for the states `x[0..x_len]` of
/// the batch shape `shape` (`x_len` checked against it).
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`.
unsafe fn log_likelihood(
    f: &fmrt_field,
    config: *const fmrt_likelihood_config,
    shape: &[usize],
    x: *const f32,
    x_len: usize,
    t_start: *const f64,
    t_start_len: usize,
    extras: *const fmrt_extras,
    out: Outputs,
) -> FfiResult<()> {
    let n = shape.first().copied().unwrap_or(0);
    // SAFETY: the caller's contract.
    let (x, t_start) = unsafe { states_and_start_times(x, x_len, t_start, t_start_len, n) }?;
    if n > 0 {
        check_out(out.log_p.0, "out_log_p")?;
    }
    // SAFETY: the caller's contract, for each output.
    let (log_p, x0, bpd) = unsafe {
        out.stats.check()?;
        (
            slice_out(out.log_p.0, out.log_p.1, n, "out_log_p")?,
            optional_out(out.x0.0, out.x0.1, x_len, "out_x0")?,
            optional_out(
                out.bits_per_dim.0,
                out.bits_per_dim.1,
                n,
                "out_bits_per_dim",
            )?,
        )
    };
    // SAFETY: the caller's contract.
    let lik = unsafe { likelihood(f, config, extras) }?;
    let xv = ArrayViewD::from_shape(IxDyn(shape), x).map_err(|e| FfiError::shape(e.to_string()))?;
    let r = lik.log_likelihood_at(xv, t_start)?;
    log_p.copy_from_slice(&r.log_p);
    if let Some(dst) = x0 {
        dst.iter_mut().zip(r.x0.iter()).for_each(|(d, s)| *d = *s);
    }
    if let Some(dst) = bpd {
        dst.copy_from_slice(&r.bits_per_dim);
    }
    let counters = fmrt_likelihood_counters::new(&r.stats, &r.calls, 1);
    // SAFETY: NULL or writable by contract.
    unsafe { out.stats.write(&counters) };
    Ok(())
}

/// Samples the `n` noise states `x0[0..x0_len]` (`n × state size` floats,
/// e.g. from `fmrt_sampler_draw_noise`) from t = 0 to 1 and integrates the
/// divergence alongside in the same solve, so that log p of each sample
/// comes without a second pass: log p1(x1) = log N(x0; 0, I) − ∫₀¹ div u dt.
/// `config` (NULL: defaults) gives the solver and the divergence mode as for
/// `fmrt_log_likelihood_config`; `extras` (NULL: none) hold one row per
/// sample. Writes the samples into `out_x` (`n × state size` floats of
/// `out_x_len`) and log p into `out_log_p[0..n]`; `out_counters` may be NULL
/// (else its `size` set by the caller). Every buffer is checked before any
/// work.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sample_with_log_prob_config(
    field: *const fmrt_field,
    config: *const fmrt_likelihood_config,
    x0: *const f32,
    x0_len: usize,
    n: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_log_p: *mut f64,
    out_log_p_len: usize,
    out_counters: *mut fmrt_likelihood_counters,
) -> fmrt_status {
    guard(|| {
        let stats = StatsOut::Counters(out_counters);
        // SAFETY: forwarded contract.
        unsafe {
            sample_with_log_prob(
                field,
                config,
                x0,
                x0_len,
                n,
                extras,
                out_x,
                out_x_len,
                out_log_p,
                out_log_p_len,
                stats,
            )
        }
    })
}

/// Like `fmrt_sample_with_log_prob_config`, with the deprecated options
/// struct (NULL: defaults) and counters.
///
/// Deprecated: use `fmrt_sample_with_log_prob_config`.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`; `options` NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_sample_with_log_prob(
    field: *const fmrt_field,
    options: *const fmrt_likelihood_options,
    x0: *const f32,
    x0_len: usize,
    n: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_log_p: *mut f64,
    out_log_p_len: usize,
    out_stats: *mut fmrt_likelihood_stats,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let config = unsafe { config_of(options) }?;
        let stats = StatsOut::Legacy(out_stats);
        // SAFETY: forwarded contract.
        unsafe {
            sample_with_log_prob(
                field,
                &config,
                x0,
                x0_len,
                n,
                extras,
                out_x,
                out_x_len,
                out_log_p,
                out_log_p_len,
                stats,
            )
        }
    })
}

/// The body of the two sampling calls.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`.
unsafe fn sample_with_log_prob(
    field: *const fmrt_field,
    config: *const fmrt_likelihood_config,
    x0: *const f32,
    x0_len: usize,
    n: usize,
    extras: *const fmrt_extras,
    out_x: *mut f32,
    out_x_len: usize,
    out_log_p: *mut f64,
    out_log_p_len: usize,
    stats: StatsOut,
) -> FfiResult<()> {
    // SAFETY: the caller's contract.
    let f = unsafe { handle(field, "field") }?;
    let shape = check_x(f, x0_len, n)?;
    // SAFETY: the caller's contract, for each pointer.
    let (x0, out_x, log_p) = unsafe {
        stats.check()?;
        (
            slice(x0, x0_len, "x0")?,
            slice_out(out_x, out_x_len, x0_len, "out_x")?,
            slice_out(out_log_p, out_log_p_len, n, "out_log_p")?,
        )
    };
    // SAFETY: the caller's contract.
    let lik = unsafe { likelihood(f, config, extras) }?;
    let xv =
        ArrayViewD::from_shape(IxDyn(&shape), x0).map_err(|e| FfiError::shape(e.to_string()))?;
    let r = lik.sample_with_log_prob(xv)?;
    out_x.iter_mut().zip(r.x.iter()).for_each(|(d, s)| *d = *s);
    log_p.copy_from_slice(&r.log_p);
    let counters = fmrt_likelihood_counters::new(&r.stats, &r.calls, 1);
    // SAFETY: NULL or writable by contract.
    unsafe { stats.write(&counters) };
    Ok(())
}

/// Finds, for each of the `n` states `x[0..x_len]`, the time t in
/// [`lower`, `upper`] (0 ≤ lower < upper ≤ 1) at which it is most likely under
/// p_t, by a golden-section search per sample down to `tolerance` (> 0) that
/// also considers both ends. Writes the times into `out_t[0..n]` and their
/// log p_t(x) into `out_log_p[0..n]` (both required); `config` and `extras`
/// as for `fmrt_log_likelihood_config`. The probes of a Hutchinson search are
/// drawn once and shared by every time tried.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_most_probable_time_config(
    field: *const fmrt_field,
    config: *const fmrt_likelihood_config,
    x: *const f32,
    x_len: usize,
    n: usize,
    lower: f64,
    upper: f64,
    tolerance: f64,
    extras: *const fmrt_extras,
    out_t: *mut f64,
    out_t_len: usize,
    out_log_p: *mut f64,
    out_log_p_len: usize,
) -> fmrt_status {
    let search = TimeSearch {
        lower,
        upper,
        tolerance,
    };
    guard(|| {
        // SAFETY: forwarded contract.
        unsafe {
            most_probable_time(
                field,
                config,
                x,
                x_len,
                n,
                &search,
                extras,
                out_t,
                out_t_len,
                out_log_p,
                out_log_p_len,
            )
        }
    })
}

/// Like `fmrt_most_probable_time_config`, with the deprecated options struct
/// (NULL: defaults).
///
/// Deprecated: use `fmrt_most_probable_time_config`.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`; `options` NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_most_probable_time(
    field: *const fmrt_field,
    options: *const fmrt_likelihood_options,
    x: *const f32,
    x_len: usize,
    n: usize,
    lower: f64,
    upper: f64,
    tolerance: f64,
    extras: *const fmrt_extras,
    out_t: *mut f64,
    out_t_len: usize,
    out_log_p: *mut f64,
    out_log_p_len: usize,
) -> fmrt_status {
    let search = TimeSearch {
        lower,
        upper,
        tolerance,
    };
    guard(|| {
        // SAFETY: the caller's contract.
        let config = unsafe { config_of(options) }?;
        // SAFETY: forwarded contract.
        unsafe {
            most_probable_time(
                field,
                &config,
                x,
                x_len,
                n,
                &search,
                extras,
                out_t,
                out_t_len,
                out_log_p,
                out_log_p_len,
            )
        }
    })
}

/// The body of the two time searches.
///
/// # Safety
///
/// As for `fmrt_log_likelihood_config`.
unsafe fn most_probable_time(
    field: *const fmrt_field,
    config: *const fmrt_likelihood_config,
    x: *const f32,
    x_len: usize,
    n: usize,
    search: &TimeSearch,
    extras: *const fmrt_extras,
    out_t: *mut f64,
    out_t_len: usize,
    out_log_p: *mut f64,
    out_log_p_len: usize,
) -> FfiResult<()> {
    // SAFETY: the caller's contract.
    let f = unsafe { handle(field, "field") }?;
    let shape = check_x(f, x_len, n)?;
    // SAFETY: the caller's contract.
    let x = unsafe { slice(x, x_len, "x") }?;
    if n > 0 {
        check_out(out_t, "out_t")?;
        check_out(out_log_p, "out_log_p")?;
    }
    // SAFETY: the caller's contract, for each output.
    let (t, log_p) = unsafe {
        (
            slice_out(out_t, out_t_len, n, "out_t")?,
            slice_out(out_log_p, out_log_p_len, n, "out_log_p")?,
        )
    };
    // SAFETY: the caller's contract.
    let lik = unsafe { likelihood(f, config, extras) }?;
    let xv =
        ArrayViewD::from_shape(IxDyn(&shape), x).map_err(|e| FfiError::shape(e.to_string()))?;
    let r = lik.most_probable_time(xv, search)?;
    t.copy_from_slice(&r.t);
    log_p.copy_from_slice(&r.log_p);
    Ok(())
}
