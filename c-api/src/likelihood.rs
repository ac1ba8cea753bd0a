//! Log-likelihoods: the augmented reverse-time solve and the most probable time
//! of a sample, configured by a plain options struct.

use std::ffi::c_char;

use ndarray::{ArrayViewD, IxDyn};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::extras::fmrt_extras;
use crate::field::{batch_shape, extras_or_empty, fmrt_field, shaped_batch};
use crate::panic::guard;
use crate::solver::fmrt_solver;
use crate::{c_str_opt, check_out, handle, slice, slice_out};
use fmrt::likelihood::{Divergence, Likelihood, ProbeDistribution, TimeSearch};
use fmrt::solver::{Method, SolverConfig};

/// How log-likelihoods are computed; start from `fmrt_likelihood_options_default`.
/// Strings and the solver are read during each call only.
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
    /// Appended after the fields of 0.1, so callers that start from
    /// `fmrt_likelihood_options_default` keep their meaning.
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

/// Writes the default likelihood options into `*out`: no solver (adaptive
/// `dopri5`, 1e-5), exact divergence, 1 probe, Rademacher, epsilon 1e-3, seed 0,
/// noise scale 1.
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

/// The divergence mode of `o`.
///
/// # Safety
///
/// The strings of `o` must be NULL or NUL-terminated.
unsafe fn divergence(o: &fmrt_likelihood_options) -> FfiResult<Divergence> {
    // SAFETY: the caller's contract.
    let mode = unsafe { c_str_opt(o.divergence, "options.divergence") }?;
    // SAFETY: the caller's contract.
    let dist = unsafe { c_str_opt(o.distribution, "options.distribution") }?;
    // The names are the library's (`FromStr`); the messages name the field.
    fn named(field: &'static str) -> impl Fn(fmrt::Error) -> FfiError {
        move |e| FfiError::invalid(format!("`{field}`: {e}"))
    }
    let distribution = dist
        .map_or(Ok(ProbeDistribution::Rademacher), str::parse)
        .map_err(named("options.distribution"))?;
    let mode = mode
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

/// The likelihood computation of `field` under `options` (NULL: defaults) and
/// `extras`, with the field's capabilities checked against the mode.
///
/// # Safety
///
/// `options` must be NULL or readable with valid strings and solver; `extras`
/// NULL or live.
unsafe fn likelihood(
    field: &fmrt_field,
    options: *const fmrt_likelihood_options,
    extras: *const fmrt_extras,
) -> FfiResult<Likelihood> {
    // SAFETY: the caller's contract.
    let o = unsafe { options.as_ref() }.map_or(fmrt_likelihood_options::DEFAULT, |o| *o);
    // SAFETY: the caller's contract.
    let mode = unsafe { divergence(&o) }?;
    let solver = if o.solver.is_null() {
        SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5)
    } else {
        // SAFETY: non-NULL and live by contract.
        unsafe { handle(o.solver, "options.solver") }?.inner.clone()
    };
    let f = &field.inner;
    mode.check_available(f.as_ref())?;
    // SAFETY: the caller's contract.
    let extras = unsafe { extras_or_empty(extras) }.clone();
    let lik = Likelihood::new(f.clone(), solver)
        .with_divergence(mode)
        .with_seed(o.seed)
        .with_extras(extras);
    Ok(if o.noise_scale == 0.0 {
        lik
    } else {
        lik.with_noise_scale(o.noise_scale)?
    })
}

/// Checks that `x_len` is `n × state size` and returns the batch shape.
fn check_x(f: &fmrt_field, x_len: usize, n: usize) -> FfiResult<Vec<usize>> {
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
/// ∫ div u dt. `extras` (NULL: none) hold one row per sample; `options` NULL
/// means the defaults.
///
/// Outputs: `out_log_p[0..n]` (nats, required; `out_log_p_len` available);
/// optional (NULL: not wanted) `out_x0` (`n × state size` floats, the states
/// reached at t = 0), `out_bits_per_dim` (`n` values, −log p / (D ln 2)) and
/// `out_stats`. Every buffer is checked before any work. A mode that needs
/// Jacobian–vector products on a field without them is
/// `FMRT_STATUS_UNSUPPORTED`; bad options are `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// Handles must be live or NULL where allowed; the arrays must hold the stated
/// counts; outputs must not overlap the inputs.
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
        // SAFETY: forwarded contract.
        unsafe {
            log_likelihood(
                f,
                options,
                &shape,
                x,
                x_len,
                t_start,
                t_start_len,
                extras,
                out_log_p,
                out_log_p_len,
                out_x0,
                out_x0_len,
                out_bits_per_dim,
                out_bits_per_dim_len,
                out_stats,
            )
        }
    })
}

/// Computes log p_t(x) of the `n` states `x[0..x_len]`, each of the
/// per-sample state shape `state_shape[0..rank]` given with the call (so
/// `x_len` must be `n × prod(state_shape)`), for a field whose state shape
/// comes with each call (an ONNX model with dynamic axes, where
/// `fmrt_log_likelihood` is `FMRT_STATUS_INVALID_ARGUMENT`); a field of
/// fixed shape checks the shape against its own. `out_x0`, if given, holds
/// `n × prod(state_shape)` floats. Everything else as for
/// `fmrt_log_likelihood`.
///
/// # Safety
///
/// As for `fmrt_log_likelihood`; `state_shape` must hold `rank` values.
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
        let (f, (sample, shape, len)) =
            unsafe { (handle(field, "field")?, shaped_batch(state_shape, rank, n)?) };
        if x_len != len {
            return Err(FfiError::shape(format!(
                "x holds {x_len} floats, but {n} states of shape {sample:?} need {len}"
            )));
        }
        // SAFETY: forwarded contract.
        unsafe {
            log_likelihood(
                f,
                options,
                &shape,
                x,
                x_len,
                t_start,
                t_start_len,
                extras,
                out_log_p,
                out_log_p_len,
                out_x0,
                out_x0_len,
                out_bits_per_dim,
                out_bits_per_dim_len,
                out_stats,
            )
        }
    })
}

/// The body of the two log-likelihood calls, for the states `x[0..x_len]`
/// of the batch shape `shape` (`x_len` checked against it).
///
/// # Safety
///
/// As for `fmrt_log_likelihood`.
unsafe fn log_likelihood(
    f: &fmrt_field,
    options: *const fmrt_likelihood_options,
    shape: &[usize],
    x: *const f32,
    x_len: usize,
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
) -> FfiResult<()> {
    let n = shape.first().copied().unwrap_or(0);
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
    if n > 0 {
        check_out(out_log_p, "out_log_p")?;
    }
    // SAFETY: the caller's contract, for each output.
    let (log_p, x0, bpd) = unsafe {
        (
            slice_out(out_log_p, out_log_p_len, n, "out_log_p")?,
            optional_out(out_x0, out_x0_len, x_len, "out_x0")?,
            optional_out(
                out_bits_per_dim,
                out_bits_per_dim_len,
                n,
                "out_bits_per_dim",
            )?,
        )
    };
    // SAFETY: the caller's contract.
    let lik = unsafe { likelihood(f, options, extras) }?;
    let xv = ArrayViewD::from_shape(IxDyn(shape), x).map_err(|e| FfiError::shape(e.to_string()))?;
    let r = lik.log_likelihood_at(xv, t_start)?;
    log_p.copy_from_slice(&r.log_p);
    if let Some(dst) = x0 {
        dst.iter_mut().zip(r.x0.iter()).for_each(|(d, s)| *d = *s);
    }
    if let Some(dst) = bpd {
        dst.copy_from_slice(&r.bits_per_dim);
    }
    // SAFETY: NULL or writable by contract.
    unsafe { write_stats(out_stats, &r.stats, &r.calls) };
    Ok(())
}

/// Writes the counters of one solve into `out` unless it is NULL.
///
/// # Safety
///
/// `out` must be NULL or writable.
unsafe fn write_stats(
    out: *mut fmrt_likelihood_stats,
    stats: &fmrt::solver::Stats,
    calls: &fmrt::likelihood::FieldCalls,
) {
    if !out.is_null() {
        let stats = fmrt_likelihood_stats {
            nfe: stats.nfe as u64,
            accepted: stats.accepted as u64,
            rejected: stats.rejected as u64,
            // A stacked call (the velocity and the products of all
            // directions in one model call) counts as one of each, so the
            // struct keeps the layout compiled programs rely on.
            velocity_calls: (calls.velocity + calls.stacked) as u64,
            jvp_calls: (calls.jvp + calls.stacked) as u64,
            divergence_calls: calls.divergence as u64,
            solves: 1,
        };
        // SAFETY: non-NULL; writable by the caller's contract.
        unsafe { *out = stats };
    }
}

/// Samples the `n` noise states `x0[0..x0_len]` (`n × state size` floats,
/// e.g. from `fmrt_sampler_draw_noise`) from t = 0 to 1 and integrates the
/// divergence alongside in the same solve, so that log p of each sample
/// comes without a second pass: log p1(x1) = log N(x0; 0, I) − ∫₀¹ div u dt.
/// `options` (NULL: defaults) give the solver and the divergence mode as for
/// `fmrt_log_likelihood`; `extras` (NULL: none) hold one row per sample.
/// Writes the samples into `out_x` (`n × state size` floats of `out_x_len`)
/// and log p into `out_log_p[0..n]`; `out_stats` may be NULL. Every buffer is
/// checked before any work.
///
/// # Safety
///
/// As for `fmrt_log_likelihood`.
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
        let f = unsafe { handle(field, "field") }?;
        let shape = check_x(f, x0_len, n)?;
        // SAFETY: the caller's contract, for each pointer.
        let (x0, out_x, log_p) = unsafe {
            (
                slice(x0, x0_len, "x0")?,
                slice_out(out_x, out_x_len, x0_len, "out_x")?,
                slice_out(out_log_p, out_log_p_len, n, "out_log_p")?,
            )
        };
        // SAFETY: the caller's contract.
        let lik = unsafe { likelihood(f, options, extras) }?;
        let xv = ArrayViewD::from_shape(IxDyn(&shape), x0)
            .map_err(|e| FfiError::shape(e.to_string()))?;
        let r = lik.sample_with_log_prob(xv)?;
        out_x.iter_mut().zip(r.x.iter()).for_each(|(d, s)| *d = *s);
        log_p.copy_from_slice(&r.log_p);
        // SAFETY: NULL or writable by contract.
        unsafe { write_stats(out_stats, &r.stats, &r.calls) };
        Ok(())
    })
}

/// Finds, for each of the `n` states `x[0..x_len]`, the time t in
/// [`lower`, `upper`] (0 ≤ lower < upper ≤ 1) at which it is most likely under
/// p_t, by a golden-section search per sample down to `tolerance` (> 0) that
/// also considers both ends. Writes the times into `out_t[0..n]` and their
/// log p_t(x) into `out_log_p[0..n]` (both required); `options` and `extras`
/// as for `fmrt_log_likelihood`. The probes of a Hutchinson search are drawn
/// once and shared by every time tried.
///
/// # Safety
///
/// As for `fmrt_log_likelihood`.
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
    guard(|| {
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
        let lik = unsafe { likelihood(f, options, extras) }?;
        let xv =
            ArrayViewD::from_shape(IxDyn(&shape), x).map_err(|e| FfiError::shape(e.to_string()))?;
        let search = TimeSearch {
            lower,
            upper,
            tolerance,
        };
        let r = lik.most_probable_time(xv, &search)?;
        t.copy_from_slice(&r.t);
        log_p.copy_from_slice(&r.log_p);
        Ok(())
    })
}
