//! `fmrt_tune_table`: the work-precision table of [`fmrt::tune`] — every
//! fixed-step solver and grid within each call budget, measured against a
//! tight adaptive reference from the same noise — with accessors for its
//! rows, its skipped candidates and the best row per budget.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use fmrt::scheduler::Schedule;
use fmrt::tune::{reference_solver, tune, TuneOptions, TuneRow, TuneTable};

use crate::error::{fmrt_status, FfiError, FfiResult};
use crate::extras::fmrt_extras;
use crate::field::extras_or_empty;
use crate::panic::guard;
use crate::sampler::fmrt_sampler;
use crate::scheduler::fmrt_scheduler;
use crate::{check_out, free_handle, handle, put_handle, slice};

/// The result of `fmrt_tune` (opaque): its rows, most accurate first within
/// each budget, and its skipped candidates. Immutable: may be read from any
/// number of threads at once. The strings its accessors return belong to
/// the table and live until `fmrt_tune_table_free`.
pub struct fmrt_tune_table {
    inner: TuneTable,
    /// Each row's method and grid label, NUL-terminated.
    row_names: Vec<(CString, CString)>,
    /// Each skipped candidate's method, grid label and reason.
    skipped_names: Vec<(CString, CString, CString)>,
}

/// One measured candidate of a tuning table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fmrt_tune_row {
    /// The method's name (`"rk4"`), owned by the table.
    pub method: *const c_char,
    /// The grid's name with its params (`"shift mu=3"`), owned by the table.
    pub grid: *const c_char,
    /// The call budget the candidate was sized for.
    pub budget: usize,
    /// The fixed steps taken.
    pub steps: usize,
    /// The network calls the solve made (at most `budget`).
    pub calls: usize,
    /// Median over the samples of the per-sample RMS error against the
    /// reference.
    pub median: f64,
    /// 99th percentile (nearest rank) of the per-sample RMS error.
    pub p99: f64,
    /// Largest per-sample RMS error.
    pub max: f64,
    /// Wall-clock seconds of the solve.
    pub seconds: f64,
}

/// A candidate of a tuning table that did not run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fmrt_tune_skipped {
    /// The method's name, owned by the table.
    pub method: *const c_char,
    /// The grid's name with its params, owned by the table.
    pub grid: *const c_char,
    /// The call budget.
    pub budget: usize,
    /// Why it did not run, owned by the table.
    pub reason: *const c_char,
}

/// `text` as a C string (an interior NUL, which no name holds, shown as
/// `\0`).
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

impl fmrt_tune_table {
    fn new(inner: TuneTable) -> Self {
        let row_names = inner
            .rows
            .iter()
            .map(|r| (c_string(r.method.name()), c_string(&r.grid.label())))
            .collect();
        let skipped_names = inner
            .skipped
            .iter()
            .map(|s| {
                (
                    c_string(s.method.name()),
                    c_string(&s.grid.label()),
                    c_string(&s.reason),
                )
            })
            .collect();
        Self {
            inner,
            row_names,
            skipped_names,
        }
    }

    /// Row `index` as C sees it.
    fn row(&self, index: usize) -> FfiResult<fmrt_tune_row> {
        let (r, (method, grid)) = self
            .inner
            .rows
            .get(index)
            .zip(self.row_names.get(index))
            .ok_or_else(|| {
                FfiError::invalid(format!(
                    "row index {index} is out of range: the table has {} rows",
                    self.inner.rows.len()
                ))
            })?;
        Ok(c_row(r, method, grid))
    }
}

fn c_row(r: &TuneRow, method: &CString, grid: &CString) -> fmrt_tune_row {
    fmrt_tune_row {
        method: method.as_ptr(),
        grid: grid.as_ptr(),
        budget: r.budget,
        steps: r.steps,
        calls: r.calls,
        median: r.median,
        p99: r.p99,
        max: r.max,
        seconds: r.seconds,
    }
}

/// Tunes `sampler`'s field: draws `n` noise states with `seed` (as
/// `fmrt_sampler_sample` does), integrates them with dopri5 on independent
/// per-sample adaptive steps at rtol = atol = `reference_tol` (the
/// reference; 1e-7 is the command line's default), and with every
/// fixed-step method (the adaptive pairs too, on fixed steps) on every
/// default grid (uniform, shift μ = 2, 3, 5, cosine, sway, edm,
/// diffusers-flow shift 1 and 3) with the most steps whose calls fit each
/// of `budgets[0..n_budgets]`; writes the table to `*out`.
///
/// - `extras` (may be NULL): conditioning inputs with `n` rows each (or one
///   for all).
/// - `schedule` (may be NULL): the schedule the field's time follows (a
///   model's sampling schedule). The `edm` grid needs it, and with a
///   schedule that is not the straight path `dpmpp2m` and `unipc` are
///   skipped; NULL skips `edm` and runs those two.
///
/// A candidate that does not apply is listed among the skipped, not an
/// error. Errors: `FMRT_STATUS_INVALID_ARGUMENT` for no budget, a budget of
/// 0 or above 2^20, `n` = 0 or a tolerance that is not positive and finite;
/// the reference's and the field's errors. See `fmrt::tune` for the error
/// measure and the calls of each method.
///
/// # Safety
///
/// `sampler` must be a live handle, `extras` and `schedule` NULL or live;
/// `budgets` must hold `n_budgets` values; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_tune(
    sampler: *const fmrt_sampler,
    budgets: *const usize,
    n_budgets: usize,
    n: usize,
    seed: u64,
    reference_tol: f64,
    extras: *const fmrt_extras,
    schedule: *const fmrt_scheduler,
    out: *mut *mut fmrt_tune_table,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract, for each pointer.
        let (s, budgets) = unsafe {
            (
                handle(sampler, "sampler")?,
                slice(budgets, n_budgets, "budgets")?,
            )
        };
        if !(reference_tol.is_finite() && reference_tol > 0.0) {
            return Err(FfiError::invalid(format!(
                "reference_tol must be positive and finite, got {reference_tol}"
            )));
        }
        let schedule: Option<Arc<dyn Schedule>> = match schedule.is_null() {
            true => None,
            // SAFETY: non-NULL, live by contract.
            false => {
                Some(unsafe { handle(schedule, "schedule") }?.inner.clone() as Arc<dyn Schedule>)
            }
        };
        // SAFETY: NULL or live by contract.
        let extras = unsafe { extras_or_empty(extras) }.clone();
        let options = TuneOptions {
            budgets: budgets.to_vec(),
            samples: n,
            seed,
            reference: reference_solver(reference_tol),
            schedule,
            ..TuneOptions::default()
        };
        let table = tune(&s.inner.clone().with_extras(extras), &options)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { put_handle(fmrt_tune_table::new(table), out) };
        Ok(())
    })
}

/// Releases a tuning table (and the strings of its rows). NULL is a no-op.
///
/// # Safety
///
/// `table` must be NULL or a handle from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn fmrt_tune_table_free(table: *mut fmrt_tune_table) {
    // SAFETY: the caller's contract.
    crate::panic::guard_or((), || unsafe { free_handle(table) })
}

/// Writes the number of rows (candidates that ran) into `*out_len`.
///
/// # Safety
///
/// `table` must be a live handle; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_tune_table_len(
    table: *const fmrt_tune_table,
    out_len: *mut usize,
) -> fmrt_status {
    guard(|| {
        check_out(out_len, "out_len")?;
        // SAFETY: the caller's contract.
        let t = unsafe { handle(table, "table") }?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out_len = t.inner.rows.len() };
        Ok(())
    })
}

/// Writes row `index` (0-based; by budget, then most accurate first) into
/// `*out`; its strings belong to the table.
///
/// # Safety
///
/// `table` must be a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_tune_table_row(
    table: *const fmrt_tune_table,
    index: usize,
    out: *mut fmrt_tune_row,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let t = unsafe { handle(table, "table") }?;
        let row = t.row(index)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out = row };
        Ok(())
    })
}

/// Writes the most accurate row for `budget` (the smallest median error;
/// ties: fewer calls, then the first row) into `*out`.
/// `FMRT_STATUS_INVALID_ARGUMENT` when `budget` was not measured or no
/// candidate ran within it.
///
/// # Safety
///
/// `table` must be a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_tune_table_best(
    table: *const fmrt_tune_table,
    budget: usize,
    out: *mut fmrt_tune_row,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let t = unsafe { handle(table, "table") }?;
        let best = t.inner.best(budget).ok_or_else(|| {
            FfiError::invalid(format!(
                "no candidate ran within {budget} calls (the budgets measured: {:?})",
                t.inner.budgets
            ))
        })?;
        let index = t
            .inner
            .rows
            .iter()
            .position(|r| std::ptr::eq(r, best))
            .ok_or_else(|| FfiError::new(fmrt_status::Internal, "the best row is not a row"))?;
        let row = t.row(index)?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out = row };
        Ok(())
    })
}

/// Writes the number of skipped candidates into `*out_len`.
///
/// # Safety
///
/// `table` must be a live handle; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_tune_table_skipped_len(
    table: *const fmrt_tune_table,
    out_len: *mut usize,
) -> fmrt_status {
    guard(|| {
        check_out(out_len, "out_len")?;
        // SAFETY: the caller's contract.
        let t = unsafe { handle(table, "table") }?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out_len = t.inner.skipped.len() };
        Ok(())
    })
}

/// Writes skipped candidate `index` (0-based) into `*out`; its strings
/// belong to the table.
///
/// # Safety
///
/// `table` must be a live handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fmrt_tune_table_skipped(
    table: *const fmrt_tune_table,
    index: usize,
    out: *mut fmrt_tune_skipped,
) -> fmrt_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller's contract.
        let t = unsafe { handle(table, "table") }?;
        let (s, (method, grid, reason)) = t
            .inner
            .skipped
            .get(index)
            .zip(t.skipped_names.get(index))
            .ok_or_else(|| {
                FfiError::invalid(format!(
                    "skipped index {index} is out of range: the table has {} skipped candidates",
                    t.inner.skipped.len()
                ))
            })?;
        let skipped = fmrt_tune_skipped {
            method: method.as_ptr(),
            grid: grid.as_ptr(),
            budget: s.budget,
            reason: reason.as_ptr(),
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out = skipped };
        Ok(())
    })
}
