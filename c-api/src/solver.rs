//! `fmrt_solver`: a solver configuration (method, steps or grid, tolerances).

use std::ffi::c_char;

use crate::error::{fmrt_status, FfiError};
use crate::panic::{guard, guard_or};
use crate::scheduler::{fmrt_param, overrides};
use crate::{c_str, c_str_opt, check_out, free_handle, handle, handle_mut, put_handle, slice};
use fmrt::grid::{explicit_steps, steps_for, TimeGrid};
use fmrt::solver::{AdaptiveOptions, Controller, ErrorNorm, Method, SolverConfig, Stepping, Steps};

/// A solver configuration (opaque). Immutable: one handle may be used from any
/// number of threads at once. A sampler copies it, so it may be freed right
/// after `fmrt_sampler_new`.
pub struct fmrt_solver {
    pub(crate) inner: SolverConfig,
}

impl fmrt_solver {
    /// The configuration this handle holds (for Rust code that receives a handle).
    pub fn config(&self) -> &SolverConfig {
        &self.inner
    }
}

/// Step-size control of the adaptive methods (`bosh3`, `dopri5`, `tsit5`).
/// Every sample takes its own steps: the error of a sample's step is the RMS
/// over its components of err / (atol + rtol·max(|y_n|, |y_n+1|)), and the
/// step is accepted when that is at most 1, so a sample's result does not
/// depend on its batch mates. Start from `fmrt_adaptive_options_default`.
///
/// Deprecated, to be removed in the release after next: use the
/// `fmrt_adaptive_config` handle, which also sets the error norm and the
/// controller. This struct's layout is frozen; it gains no fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct fmrt_adaptive_options {
    /// Relative tolerance, finite and ≥ 0 (default 1e-5).
    pub rtol: f64,
    /// Absolute tolerance, finite and > 0 (default 1e-5).
    pub atol: f64,
    /// Safety factor applied to the optimal step (default 0.9).
    pub safety: f64,
    /// Smallest factor a step may shrink by (default 0.2).
    pub min_factor: f64,
    /// Largest factor a step may grow by (default 10).
    pub max_factor: f64,
    /// Attempted steps after which the solve fails with `FMRT_STATUS_SOLVER`
    /// (default 100000).
    pub max_steps: u64,
    /// First step in normalised time s ∈ (0, 1]; 0 selects it automatically
    /// (the default).
    pub initial_step: f64,
}

impl From<&AdaptiveOptions> for fmrt_adaptive_options {
    fn from(o: &AdaptiveOptions) -> Self {
        Self {
            rtol: o.rtol,
            atol: o.atol,
            safety: o.safety,
            min_factor: o.min_factor,
            max_factor: o.max_factor,
            max_steps: o.max_steps as u64,
            initial_step: o.initial_step.unwrap_or(0.0),
        }
    }
}

/// Stores a new solver handle for `method` (a name such as `"rk4"`).
///
/// # Safety
///
/// `method` must be NUL-terminated; `out` writable.
unsafe fn make(
    method: *const c_char,
    out: *mut *mut fmrt_solver,
    config: impl FnOnce(Method) -> Result<SolverConfig, FfiError>,
) -> Result<(), FfiError> {
    check_out(out, "out")?;
    // SAFETY: the caller's contract.
    let name = unsafe { c_str(method, "method") }?;
    let inner = config(Method::from_name(name)?)?;
    // SAFETY: checked non-NULL; writable by contract.
    unsafe { put_handle(fmrt_solver { inner }, out) };
    Ok(())
}

/// A fixed-step solver: `steps` equal steps of `method` (`"euler"`, `"midpoint"`,
/// `"heun"`, `"rk4"`, `"bosh3"`, `"dopri5"`, `"tsit5"`, the multistep `"ab2"`,
/// `"ab3"`, `"pec2"`, or diffusers' flow-mode `"dpmpp2m"` and `"unipc"`; any
/// ASCII case) over the interval. An unknown method is `FMRT_STATUS_INVALID_ARGUMENT` listing
/// the known ones.
///
/// # Safety
///
/// `method` must be NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_fixed(
    method: *const c_char,
    steps: usize,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        if steps == 0 {
            return Err(FfiError::invalid("`steps` must be at least 1"));
        }
        // SAFETY: forwarded contract.
        unsafe {
            make(method, out, |m| {
                Ok(SolverConfig::fixed(m, Steps::Count(steps)))
            })
        }
    })
}

/// A fixed-step solver whose `steps` steps lie on a time grid: step i ends at
/// t(i/steps). `grid` is a built-in grid name (`"uniform"`, `"shift"`,
/// `"sway"`, `"cosine"`), the preset `"diffusers-flow"` (diffusers' flow-mode
/// σ list for `steps` steps, params `shift` and `train_steps`; UniPC's list
/// for `"unipc"`, DPM-Solver++'s otherwise; it starts after t = 0, as
/// `fmrt_solver_grid` describes) or the path of a `.fm` grid file (`grid = …`
/// over `u`); `params[0..n_params]` override its params (`params` may be NULL when
/// `n_params` is 0). A grid that does not load is `FMRT_STATUS_SCHEDULER`
/// with every rendered diagnostic (file, line, column) in the last-error
/// message; an unreadable file is `FMRT_STATUS_IO`.
///
/// # Safety
///
/// Strings must be NUL-terminated; `params` must hold `n_params` entries;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_time_grid(
    method: *const c_char,
    grid: *const c_char,
    params: *const fmrt_param,
    n_params: usize,
    steps: usize,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (spec, overrides) = unsafe { (c_str(grid, "grid")?, overrides(params, n_params)?) };
        // SAFETY: forwarded contract.
        unsafe {
            make(method, out, |m| {
                Ok(SolverConfig::fixed(
                    m,
                    steps_for(spec, &overrides, m, steps)?,
                ))
            })
        }
    })
}

/// Like `fmrt_solver_time_grid`, with the grid given as `.fm` source text;
/// `file_name` (may be NULL: `"<source>"`) names it in diagnostics.
///
/// # Safety
///
/// Strings must be NUL-terminated (`file_name` may be NULL); `params` must
/// hold `n_params` entries; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_time_grid_source(
    method: *const c_char,
    source: *const c_char,
    file_name: *const c_char,
    params: *const fmrt_param,
    n_params: usize,
    steps: usize,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (source, file, overrides) = unsafe {
            (
                c_str(source, "source")?,
                c_str_opt(file_name, "file_name")?.unwrap_or("<source>"),
                overrides(params, n_params)?,
            )
        };
        let grid = TimeGrid::from_source(source, file, &overrides)?;
        // SAFETY: forwarded contract.
        unsafe {
            make(method, out, |m| {
                Ok(SolverConfig::fixed(m, grid.steps(steps)?))
            })
        }
    })
}

/// A fixed-step solver on an explicit grid `grid[0..n_grid]` of normalised
/// times s ∈ [0, 1] (s = 0 at the interval's start, 1 at its end), strictly
/// increasing and ending at 1 (at most 2^20 points). The grid may start
/// after 0 (diffusers' DPM-Solver++ grid starts at t = 3e-4): a sampling run
/// from noise (`fmrt_sampler_sample`, `_sample_rows`, `_sample_shaped`,
/// `_integrate_shaped`) then starts at the first time, the noise being the
/// state there; a run over a given interval (`fmrt_sampler_integrate`, a
/// likelihood) needs a grid from 0 and reports `FMRT_STATUS_INVALID_ARGUMENT`
/// otherwise. A grid that breaks these rules is
/// `FMRT_STATUS_INVALID_ARGUMENT` naming the offending point.
///
/// # Safety
///
/// `method` must be NUL-terminated; `grid` must hold `n_grid` values; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_grid(
    method: *const c_char,
    grid: *const f64,
    n_grid: usize,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let grid = unsafe { slice(grid, n_grid, "grid") }?;
        let steps = explicit_steps(grid)?;
        // SAFETY: forwarded contract.
        unsafe { make(method, out, |m| Ok(SolverConfig::fixed(m, steps))) }
    })
}

/// Writes the default adaptive options into `*out`.
///
/// Deprecated: use `fmrt_adaptive_config_new`.
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_options_default(
    out: *mut fmrt_adaptive_options,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out = (&AdaptiveOptions::default()).into() };
        Ok(())
    })
}

/// An adaptive solver with `method` (`"bosh3"`, `"dopri5"` or `"tsit5"`) and
/// `options` (NULL: the defaults), checked as `fmrt_solver_adaptive_config`
/// checks them.
///
/// Deprecated: use `fmrt_solver_adaptive_config` with an
/// `fmrt_adaptive_config`; this call builds one from `options` and makes the
/// same solver.
///
/// # Safety
///
/// `method` must be NUL-terminated; `options` NULL or readable; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_adaptive(
    method: *const c_char,
    options: *const fmrt_adaptive_options,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        let mut config = fmrt_adaptive_config::default();
        // SAFETY: NULL or readable by contract.
        if let Some(o) = unsafe { options.as_ref() } {
            config.inner = AdaptiveOptions {
                rtol: o.rtol,
                atol: o.atol,
                safety: o.safety,
                min_factor: o.min_factor,
                max_factor: o.max_factor,
                max_steps: usize::try_from(o.max_steps).unwrap_or(usize::MAX),
                initial_step: (o.initial_step != 0.0).then_some(o.initial_step),
                ..AdaptiveOptions::default()
            };
        }
        // SAFETY: forwarded contract; `config` is a live value.
        unsafe { adaptive_solver(method, &config, out) }
    })
}

/// Step-size control of the adaptive methods (`bosh3`, `dopri5`, `tsit5`),
/// opaque. Made by `fmrt_adaptive_config_new` (the defaults: rtol = atol =
/// 1e-5, safety 0.9, step factors in [0.2, 10], 100000 steps, automatic first
/// step, independent error norm, PI controller), changed by the
/// `fmrt_adaptive_config_set_*` calls, each of which checks its value and
/// leaves the config unchanged when it refuses one
/// (`FMRT_STATUS_INVALID_ARGUMENT` naming the setting), released by
/// `fmrt_adaptive_config_free`. Used by `fmrt_solver_adaptive_config`, which
/// copies it. Not to be changed while another thread reads it.
#[derive(Clone, Debug, Default)]
pub struct fmrt_adaptive_config {
    inner: AdaptiveOptions,
}

impl fmrt_adaptive_config {
    /// The options this handle holds (for Rust code that receives a handle).
    pub fn options(&self) -> &AdaptiveOptions {
        &self.inner
    }
}

/// Makes the default adaptive config into `*out`.
///
/// # Safety
///
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_new(
    out: *mut *mut fmrt_adaptive_config,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_handle(fmrt_adaptive_config::default(), out) };
        Ok(())
    })
}

/// Releases an adaptive config. NULL is a no-op.
///
/// # Safety
///
/// `config` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_free(config: *mut fmrt_adaptive_config) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(config) })
}

/// Applies `change` to the options of `config` if the result passes the
/// library's checks; otherwise leaves them as they were.
///
/// # Safety
///
/// `config` must be NULL or a live handle.
unsafe fn set_adaptive(
    config: *mut fmrt_adaptive_config,
    change: impl FnOnce(&mut AdaptiveOptions),
) -> Result<(), FfiError> {
    // SAFETY: the caller's contract.
    let c = unsafe { handle_mut(config, "config") }?;
    let mut candidate = c.inner.clone();
    change(&mut candidate);
    candidate.validate()?;
    c.inner = candidate;
    Ok(())
}

/// Relative tolerance, finite and ≥ 0 (default 1e-5).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_rtol(
    config: *mut fmrt_adaptive_config,
    rtol: f64,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_adaptive(config, |o| o.rtol = rtol) })
}

/// Absolute tolerance, finite and > 0 (default 1e-5).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_atol(
    config: *mut fmrt_adaptive_config,
    atol: f64,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_adaptive(config, |o| o.atol = atol) })
}

/// Safety factor applied to the optimal step, in (0, 1] (default 0.9).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_safety(
    config: *mut fmrt_adaptive_config,
    safety: f64,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_adaptive(config, |o| o.safety = safety) })
}

/// Smallest factor a step may shrink by, in (0, 1] (default 0.2).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_min_factor(
    config: *mut fmrt_adaptive_config,
    factor: f64,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_adaptive(config, |o| o.min_factor = factor) })
}

/// Largest factor a step may grow by, finite and ≥ 1 (default 10).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_max_factor(
    config: *mut fmrt_adaptive_config,
    factor: f64,
) -> fmrt_status {
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_adaptive(config, |o| o.max_factor = factor) })
}

/// Attempted steps (per sample with the independent norm) after which the
/// solve fails with `FMRT_STATUS_SOLVER`, at least 1 (default 100000).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_max_steps(
    config: *mut fmrt_adaptive_config,
    max_steps: u64,
) -> fmrt_status {
    let steps = usize::try_from(max_steps).unwrap_or(usize::MAX);
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_adaptive(config, |o| o.max_steps = steps) })
}

/// First step in normalised time s ∈ (0, 1], positive and finite; 0 selects
/// it automatically (the default).
///
/// # Safety
///
/// `config` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_initial_step(
    config: *mut fmrt_adaptive_config,
    step: f64,
) -> fmrt_status {
    let step = (step != 0.0).then_some(step);
    // SAFETY: forwarded contract.
    guard(|| unsafe { set_adaptive(config, |o| o.initial_step = step) })
}

/// How the error of a step is measured: `"independent"` (the default: every
/// sample its own steps), `"sample"` (one step size for the batch, the worst
/// sample's RMS) or `"batch"` (one RMS over the whole batch, as torchdiffeq
/// measures it); any ASCII case.
///
/// # Safety
///
/// `config` must be a live handle; `norm` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_error_norm(
    config: *mut fmrt_adaptive_config,
    norm: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let norm: ErrorNorm = unsafe { c_str(norm, "norm") }?.parse()?;
        // SAFETY: forwarded contract.
        unsafe { set_adaptive(config, |o| o.norm = norm) }
    })
}

/// The step-size controller: `"pi"` (the default) or `"i"`; any ASCII case.
///
/// # Safety
///
/// `config` must be a live handle; `controller` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fmrt_adaptive_config_set_controller(
    config: *mut fmrt_adaptive_config,
    controller: *const c_char,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let controller: Controller = unsafe { c_str(controller, "controller") }?.parse()?;
        // SAFETY: forwarded contract.
        unsafe { set_adaptive(config, |o| o.controller = controller) }
    })
}

/// An adaptive solver with `method` (`"bosh3"`, `"dopri5"` or `"tsit5"`) and
/// the step-size control `config` (NULL: the defaults; copied, so it may be
/// freed or changed afterwards), into `*out`. A method without an embedded
/// error estimate is `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `method` must be NUL-terminated; `config` NULL or a live handle; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_adaptive_config(
    method: *const c_char,
    config: *const fmrt_adaptive_config,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        let default = fmrt_adaptive_config::default();
        // SAFETY: NULL or live by contract.
        let config = unsafe { config.as_ref() }.unwrap_or(&default);
        // SAFETY: forwarded contract.
        unsafe { adaptive_solver(method, config, out) }
    })
}

/// The body of both adaptive constructors: checks the options and stores
/// the solver.
///
/// # Safety
///
/// `method` must be NUL-terminated; `out` writable.
unsafe fn adaptive_solver(
    method: *const c_char,
    config: &fmrt_adaptive_config,
    out: *mut *mut fmrt_solver,
) -> Result<(), FfiError> {
    config.inner.validate()?;
    // SAFETY: forwarded contract.
    unsafe {
        make(method, out, |m| {
            if m.is_adaptive() {
                Ok(SolverConfig::adaptive_with(m, config.inner.clone()))
            } else {
                Err(FfiError::invalid(format!(
                    "method {m} has no embedded error estimate; use bosh3, dopri5 or tsit5 \
                     for adaptive steps"
                )))
            }
        })
    }
}

/// A copy of the adaptive solver `solver` that measures the error of its
/// steps with the norm `norm`, into `*out`: `"independent"` (the default:
/// every sample its own steps), `"sample"` (one step size for the batch, the
/// worst sample's RMS) or `"batch"` (one RMS over the whole batch, as
/// torchdiffeq measures it); any ASCII case. A fixed-step solver, which has
/// no error norm, or an unknown name is `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `solver` must be a live handle; `norm` NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_with_error_norm(
    solver: *const fmrt_solver,
    norm: *const c_char,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let norm: ErrorNorm = unsafe { c_str(norm, "norm") }?.parse()?;
        // SAFETY: forwarded contract.
        unsafe { with_adaptive(solver, out, "error norm", |o| o.norm = norm) }
    })
}

/// A copy of the adaptive solver `solver` with the step-size controller
/// `controller` (`"pi"`, the default, or `"i"`; any ASCII case), into
/// `*out`. A fixed-step solver or an unknown name is
/// `FMRT_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `solver` must be a live handle; `controller` NUL-terminated; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_with_controller(
    solver: *const fmrt_solver,
    controller: *const c_char,
    out: *mut *mut fmrt_solver,
) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let controller: Controller = unsafe { c_str(controller, "controller") }?.parse()?;
        // SAFETY: forwarded contract.
        unsafe {
            with_adaptive(solver, out, "step-size controller", |o| {
                o.controller = controller
            })
        }
    })
}

/// Stores into `*out` a copy of `solver` with its adaptive options changed
/// by `change`; a fixed-step solver has none to change, and is refused
/// naming `setting`.
///
/// # Safety
///
/// `solver` must be a live handle; `out` writable.
unsafe fn with_adaptive(
    solver: *const fmrt_solver,
    out: *mut *mut fmrt_solver,
    setting: &str,
    change: impl FnOnce(&mut AdaptiveOptions),
) -> Result<(), FfiError> {
    check_out(out, "out")?;
    // SAFETY: the caller's contract.
    let solver = unsafe { handle(solver, "solver") }?;
    let mut config = solver.inner.clone();
    match &mut config.stepping {
        Stepping::Adaptive(options) => change(options),
        Stepping::Fixed(_) => {
            return Err(FfiError::invalid(format!(
                "the {setting} applies to adaptive steps, and this {} solver takes fixed steps",
                config.method
            )))
        }
    }
    // SAFETY: checked non-NULL; writable by contract.
    unsafe { put_handle(fmrt_solver { inner: config }, out) };
    Ok(())
}

/// Releases a solver configuration. NULL is a no-op.
///
/// # Safety
///
/// `solver` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_solver_free(solver: *mut fmrt_solver) {
    // SAFETY: the caller's contract.
    guard_or((), || unsafe { free_handle(solver) })
}

/// How the integration of one sample ended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fmrt_sample_status {
    /// The sample reached the end of its interval.
    Done = 0,
    /// The sample used up the solver's `max_steps` attempted steps.
    MaxSteps = 1,
    /// The sample's step size fell below the smallest usable step.
    StepSizeTooSmall = 2,
    /// A step of the sample produced a non-finite state or error.
    NonFinite = 3,
}

impl From<fmrt::solver::SampleStatus> for fmrt_sample_status {
    fn from(status: fmrt::solver::SampleStatus) -> Self {
        use fmrt::solver::SampleStatus;
        match status {
            SampleStatus::Done => fmrt_sample_status::Done,
            SampleStatus::MaxSteps => fmrt_sample_status::MaxSteps,
            SampleStatus::StepSizeTooSmall => fmrt_sample_status::StepSizeTooSmall,
            SampleStatus::NonFinite => fmrt_sample_status::NonFinite,
        }
    }
}
