//! Status codes and the thread-local error message of the C ABI.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

use fmrt::error::{ErrorKind, Report};
use fmrt::Error;

/// The outcome of a C API call.
///
/// Numbers are grouped by area and stable: a number keeps its meaning forever,
/// and a retired number is never given to another outcome. Every status other
/// than `FMRT_STATUS_OK` leaves a message readable with `fmrt_last_error()`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fmrt_status {
    /// The call succeeded.
    Ok = 0,

    // 100–199: the caller's arguments.
    /// A pointer argument that must not be NULL was NULL.
    NullParameter = 100,
    /// An argument is out of its domain (a negative tolerance, an unknown method
    /// name, an unknown quantity, extras a field does not take…).
    InvalidArgument = 101,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 102,
    /// A caller-owned output buffer is shorter than the result; nothing was written
    /// to it.
    BufferTooSmall = 103,
    /// An array has a length or shape that does not fit the others (a state buffer
    /// that is not `n × state size`, times that are neither one nor one per sample).
    ShapeMismatch = 104,

    // 200–299: schedulers.
    /// A `.fm` scheduler failed to load; the message holds every rendered
    /// diagnostic (file, line, column, caret, hint).
    Scheduler = 200,

    // 300–399: velocity fields.
    /// A velocity field failed to evaluate (ONNX Runtime reported an error, a
    /// plugin callback reported failure). Extras a field does not take are
    /// `FMRT_STATUS_INVALID_ARGUMENT`.
    Field = 300,
    /// A native plugin could not be loaded: the library did not open, the entry
    /// symbol is missing, its ABI version differs, its table is too small or
    /// its capabilities and callbacks disagree, or its `create` failed.
    Plugin = 310,
    /// A model file (ONNX) failed to load: unparsable, an ambiguous input
    /// mapping, a failing check run.
    Model = 320,
    /// The ONNX Runtime library was not found, or did not load; the message
    /// lists every place looked at.
    RuntimeNotFound = 330,

    // 400–499: solving.
    /// The solver could not finish (step-size underflow, too many steps, a
    /// non-finite state); the message gives the time where it stopped.
    Solver = 400,
    /// The schedule is singular where it was asked to work: a prediction
    /// that cannot become a velocity at that time (x0 prediction where σ = 0),
    /// a schedule change whose time map is flat, a coefficient that is not
    /// finite. The message gives the time.
    Singular = 410,

    // 500–599: the outside world.
    /// A file could not be read or written.
    Io = 500,

    // 600–699: capabilities.
    /// The handle cannot do what was asked: a provider query on a field that is
    /// not an ONNX model, a likelihood mode that needs Jacobian–vector
    /// products on a field that provides neither them nor an exact divergence,
    /// or a model with an operator fmrt cannot differentiate (the message
    /// names the operator and its node).
    Unsupported = 600,

    // 900–999: internal.
    /// fmrt panicked; the panic was caught at the API boundary. Handles passed to
    /// the call remain valid to free, but their results should not be trusted.
    Panic = 900,
    /// fmrt broke one of its own invariants (a bug; please report it with the
    /// message).
    Internal = 910,
}

impl fmrt_status {
    /// The enumerator's name without the `FMRT_STATUS_` prefix, as a C string.
    pub(crate) fn c_name(self) -> &'static CStr {
        match self {
            fmrt_status::Ok => c"OK",
            fmrt_status::NullParameter => c"NULL_PARAMETER",
            fmrt_status::InvalidArgument => c"INVALID_ARGUMENT",
            fmrt_status::InvalidUtf8 => c"INVALID_UTF8",
            fmrt_status::BufferTooSmall => c"BUFFER_TOO_SMALL",
            fmrt_status::ShapeMismatch => c"SHAPE_MISMATCH",
            fmrt_status::Scheduler => c"SCHEDULER",
            fmrt_status::Field => c"FIELD",
            fmrt_status::Plugin => c"PLUGIN",
            fmrt_status::Model => c"MODEL",
            fmrt_status::RuntimeNotFound => c"RUNTIME_NOT_FOUND",
            fmrt_status::Solver => c"SOLVER",
            fmrt_status::Io => c"IO",
            fmrt_status::Unsupported => c"UNSUPPORTED",
            fmrt_status::Singular => c"SINGULAR",
            fmrt_status::Panic => c"PANIC",
            fmrt_status::Internal => c"INTERNAL",
        }
    }

    /// Every status, for lookups by number.
    pub(crate) const ALL: [fmrt_status; 17] = [
        fmrt_status::Ok,
        fmrt_status::NullParameter,
        fmrt_status::InvalidArgument,
        fmrt_status::InvalidUtf8,
        fmrt_status::BufferTooSmall,
        fmrt_status::ShapeMismatch,
        fmrt_status::Scheduler,
        fmrt_status::Field,
        fmrt_status::Plugin,
        fmrt_status::Model,
        fmrt_status::RuntimeNotFound,
        fmrt_status::Solver,
        fmrt_status::Singular,
        fmrt_status::Io,
        fmrt_status::Unsupported,
        fmrt_status::Panic,
        fmrt_status::Internal,
    ];
}

/// A failure on its way to C: a status and a message.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub(crate) status: fmrt_status,
    pub(crate) message: String,
}

impl FfiError {
    pub(crate) fn new(status: fmrt_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A NULL pointer passed as the parameter `name`.
    pub(crate) fn null(name: &str) -> Self {
        Self::new(
            fmrt_status::NullParameter,
            format!("parameter `{name}` is NULL"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(fmrt_status::InvalidArgument, message)
    }

    pub(crate) fn shape(message: impl Into<String>) -> Self {
        Self::new(fmrt_status::ShapeMismatch, message)
    }

    /// An output buffer `name` holding `have` elements where `need` are required.
    pub(crate) fn too_small(name: &str, have: usize, need: usize) -> Self {
        Self::new(
            fmrt_status::BufferTooSmall,
            format!("buffer `{name}` holds {have} elements, {need} are needed"),
        )
    }
}

impl fmrt_status {
    /// The status that reports `error` to C, read off the library's
    /// classification ([`Error::kind`]); a new kind stops this from compiling.
    pub(crate) fn of(error: &Error) -> fmrt_status {
        match error.kind() {
            ErrorKind::InvalidArgument => fmrt_status::InvalidArgument,
            ErrorKind::Shape => fmrt_status::ShapeMismatch,
            ErrorKind::Scheduler => fmrt_status::Scheduler,
            ErrorKind::Field => fmrt_status::Field,
            ErrorKind::Plugin => fmrt_status::Plugin,
            ErrorKind::Model => fmrt_status::Model,
            ErrorKind::RuntimeNotFound => fmrt_status::RuntimeNotFound,
            ErrorKind::Solver => fmrt_status::Solver,
            ErrorKind::Singular => fmrt_status::Singular,
            ErrorKind::Io => fmrt_status::Io,
            ErrorKind::Unsupported => fmrt_status::Unsupported,
            ErrorKind::Internal => fmrt_status::Internal,
        }
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        FfiError::new(fmrt_status::of(&e), Report(&e).to_string())
    }
}

/// Shorthand for results inside the C API.
pub(crate) type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    /// The message of the last failed call on this thread (empty: none yet).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    // Interior NULs would truncate the C string; show them instead.
    let cleaned = message.replace('\0', "\\0");
    let c = CString::new(cleaned).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
}

/// The message of the last failed call on this thread (`""` when none failed).
///
/// The pointer stays valid until the next failing call on the same thread;
/// successful calls leave the message unchanged. Never NULL. Thread-safe: each
/// thread has its own message.
#[no_mangle]
pub extern "C" fn fmrt_last_error() -> *const c_char {
    crate::panic::guard_or(c"".as_ptr(), || {
        LAST_ERROR.with(|slot| slot.borrow().as_ptr())
    })
}

/// Copies this thread's last error message, NUL-terminated, into `buf` of
/// `buf_len` bytes.
///
/// `*out_len` (if `out_len` is not NULL) receives the number of bytes the message
/// needs, terminating NUL included, whatever the outcome, so a call with
/// `buf_len` 0 (and `buf` NULL) asks for the size. Returns
/// `FMRT_STATUS_BUFFER_TOO_SMALL` and writes nothing when `buf_len` is too small.
/// This call never changes the message itself.
///
/// # Safety
///
/// `buf` must be NULL or point to `buf_len` writable bytes; `out_len` must be NULL
/// or point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fmrt_last_error_copy(
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> fmrt_status {
    crate::panic::guard_quiet(|| {
        LAST_ERROR.with(|slot| {
            let message = slot.borrow();
            // SAFETY: the caller's contract on `buf` and `out_len`.
            unsafe { crate::write_c_string(message.to_bytes(), buf, buf_len, out_len) }
        })
    })
}

/// The name of a status code as a static string (`"BUFFER_TOO_SMALL"`), or
/// `"UNKNOWN"` for a number that is not a status. Never NULL; never free it.
#[no_mangle]
pub extern "C" fn fmrt_status_name(status: u32) -> *const c_char {
    crate::panic::guard_or(c"UNKNOWN".as_ptr(), || {
        fmrt_status::ALL
            .iter()
            .find(|s| **s as u32 == status)
            .map_or(c"UNKNOWN", |s| s.c_name())
            .as_ptr()
    })
}

// A unit test, not one of `c-api/tests/`: `FfiError` is private to the crate.
#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of library error reaches C as its own status, chosen by the
    /// error's variant; the message is the error's text.
    #[test]
    fn every_library_error_kind_has_its_status() {
        use fmrt::Error;
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let cases: Vec<(Error, fmrt_status)> = vec![
            (
                Error::InvalidArgument("bad".into()),
                fmrt_status::InvalidArgument,
            ),
            (
                Error::Shape {
                    tensor: "x".into(),
                    expected: "[B, 2]".into(),
                    actual: vec![3],
                },
                fmrt_status::ShapeMismatch,
            ),
            (
                Error::Scheduler {
                    name: "a.fm".into(),
                    report: "error: unknown function".into(),
                },
                fmrt_status::Scheduler,
            ),
            (
                Error::field("m.onnx", "ONNX Runtime failed"),
                fmrt_status::Field,
            ),
            (
                Error::PluginLoad {
                    file: "p.so".into(),
                    reason: "no symbol".into(),
                },
                fmrt_status::Plugin,
            ),
            (Error::model_load("m.onnx", "truncated"), fmrt_status::Model),
            (
                Error::RuntimeNotFound {
                    summary: "not found".into(),
                    tried: vec!["/a (not found)".into()],
                },
                fmrt_status::RuntimeNotFound,
            ),
            (
                Error::StepSizeTooSmall {
                    sample: 0,
                    t: 0.5,
                    s: 0.5,
                    step: 1e-20,
                },
                fmrt_status::Solver,
            ),
            (
                Error::MaxSteps {
                    max_steps: 10,
                    sample: 0,
                    t: 0.5,
                    s: 0.5,
                },
                fmrt_status::Solver,
            ),
            (
                Error::NonFinite {
                    which: "state of sample 0".into(),
                    location: "at t = 0.5".into(),
                },
                fmrt_status::Solver,
            ),
            (
                Error::Io {
                    path: "x.npy".into(),
                    source: io(),
                },
                fmrt_status::Io,
            ),
            (Error::unsupported("no JVPs"), fmrt_status::Unsupported),
            (
                Error::UnsupportedOperator {
                    file: "m.onnx".into(),
                    op_type: "Hardmax".into(),
                    node: "h".into(),
                    reason: "no rule".into(),
                    others: vec![],
                },
                fmrt_status::Unsupported,
            ),
            (
                Error::extra("m.onnx", "mu", "not given"),
                fmrt_status::InvalidArgument,
            ),
            (Error::singular("sigma = 0 at t = 1"), fmrt_status::Singular),
            (Error::internal("state layout"), fmrt_status::Internal),
            (
                Error::field_from("m.onnx", "ONNX Runtime failed", io()),
                fmrt_status::Field,
            ),
        ];
        for (error, status) in cases {
            let message = fmrt::error::Report(&error).to_string();
            let ffi = FfiError::from(error);
            assert_eq!(ffi.status, status, "{message}");
            assert_eq!(ffi.message, message);
        }
        // The message carries the cause once: its own text, then the source's.
        let ffi = FfiError::from(Error::Io {
            path: "x.npy".into(),
            source: io(),
        });
        assert_eq!(ffi.message, "x.npy: gone");
        let ffi = FfiError::from(Error::model_load_from("m.onnx", "bad", io()));
        assert_eq!(ffi.message, "m.onnx: bad: gone");
    }
}
