//! The panic boundary: every `extern "C"` function runs its body inside one of
//! these guards, so a panic never unwinds into C.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{fmrt_status, set_last_error, FfiResult};

/// The text of a caught panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Runs `f`; an error becomes its status with the thread's last-error message
/// set, a panic becomes `FMRT_STATUS_PANIC` with the panic's message.
pub(crate) fn guard(f: impl FnOnce() -> FfiResult<()>) -> fmrt_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => fmrt_status::Ok,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "fmrt panicked (a bug; please report it): {}",
                panic_message(payload.as_ref())
            ));
            fmrt_status::Panic
        }
    }
}

/// Like [`guard`], but an error leaves the last-error message alone (for the
/// calls that read that message).
pub(crate) fn guard_quiet(f: impl FnOnce() -> FfiResult<()>) -> fmrt_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => fmrt_status::Ok,
        Ok(Err(e)) => e.status,
        Err(_) => fmrt_status::Panic,
    }
}

/// Runs an infallible `f`, returning `fallback` if it panics (for functions
/// whose C signature has no status: frees, getters of static data).
pub(crate) fn guard_or<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Runs a body that panics inside [`guard`] and returns the status, so tests can
/// check that the boundary turns a panic into `FMRT_STATUS_PANIC` with a message.
#[doc(hidden)]
pub fn panic_status_for_tests(message: &str) -> fmrt_status {
    guard(|| panic!("{message}"))
}
