//! The panic boundary: every `extern "C"` function runs its body inside one of
//! these guards, so a panic never unwinds into C, and a caught panic prints
//! nothing on the host's stderr.
//!
//! # Keeping panics quiet
//!
//! Rust prints a panic's message from the process-wide panic hook, before any
//! `catch_unwind` sees it. To keep that off the host's stderr without changing
//! what happens to panics that are not fmrt's, the first guarded call installs,
//! once per process, a hook that *wraps* the hook in place at that moment:
//!
//! - on a thread inside a guard (a thread-local depth counter), it records the
//!   message and location for `fmrt_last_error()` and prints nothing;
//! - anywhere else it calls the previous hook, so the host's own panics (a Rust
//!   host's custom hook, the default message) behave exactly as before.
//!
//! The alternatives were worse: swapping the hook around each call races with
//! other threads (their panics would be silenced or sent to the wrong hook
//! while an fmrt call runs) and costs a lock per call; leaving the default
//! hook prints fmrt's bugs into the host's logs. A host that installs its own
//! hook later replaces ours: fmrt's panics then go to that hook, and the
//! status and message are still `FMRT_STATUS_PANIC` and the panic's text.
//! fmrt spawns no threads, so every panic of its code happens on the
//! guarded thread.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use crate::error::{fmrt_status, set_last_error, FfiResult};

thread_local! {
    /// How many guards this thread is inside (guards may nest).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The message and location of the last panic caught on this thread by
    /// the quiet hook.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the quiet hook (once per process), wrapping the hook in place.
fn install_quiet_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) > 0 {
                let text = describe(info);
                // `try_with`: a panic while the thread's locals are being torn
                // down has nowhere to go but away.
                let _ = CAUGHT.try_with(|c| *c.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a panic for the last-error message: its message and location.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let message = panic_message(info.payload());
    match info.location() {
        Some(at) => format!("{message} (at {}:{}:{})", at.file(), at.line(), at.column()),
        None => message,
    }
}

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

/// Leaves the guard depth as it was when dropped, even on unwinding.
struct Inside;

impl Inside {
    fn enter() -> Inside {
        DEPTH.with(|d| d.set(d.get() + 1));
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `f` with the quiet hook on, catching a panic as the text that
/// describes it.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    let result = {
        let _inside = Inside::enter();
        catch_unwind(AssertUnwindSafe(f))
    };
    result.map_err(|payload| {
        // The hook's text has the location; a hook installed over ours by the
        // host leaves only the payload.
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| panic_message(payload.as_ref()))
    })
}

/// Runs `f`; an error becomes its status with the thread's last-error message
/// set, a panic becomes `FMRT_STATUS_PANIC` with the panic's message and
/// location (and nothing printed).
pub(crate) fn guard(f: impl FnOnce() -> FfiResult<()>) -> fmrt_status {
    match quietly(f) {
        Ok(Ok(())) => fmrt_status::Ok,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(panic) => {
            set_last_error(&format!("fmrt panicked (a bug; please report it): {panic}"));
            fmrt_status::Panic
        }
    }
}

/// Like [`guard`], but an error leaves the last-error message alone (for the
/// calls that read that message).
pub(crate) fn guard_quiet(f: impl FnOnce() -> FfiResult<()>) -> fmrt_status {
    match quietly(f) {
        Ok(Ok(())) => fmrt_status::Ok,
        Ok(Err(e)) => e.status,
        Err(_) => fmrt_status::Panic,
    }
}

/// Runs an infallible `f`, returning `fallback` if it panics (for functions
/// whose C signature has no status: frees, getters of static data).
pub(crate) fn guard_or<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    quietly(f).unwrap_or(fallback)
}

/// Runs a body that panics inside [`guard`] and returns the status, so tests can
/// check that the boundary turns a panic into `FMRT_STATUS_PANIC` with a message.
#[doc(hidden)]
pub fn panic_status_for_tests(message: &str) -> fmrt_status {
    guard(|| panic!("{message}"))
}
