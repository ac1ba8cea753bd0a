//! Why a command failed, and the exit code that says so.
//!
//! Exit codes: 0 success; 1 the input is at fault (arguments, files, models,
//! schedulers; `fmrt check` finding errors); 2 an internal error (a bug);
//! 3 ONNX Runtime is missing; 4 the computation failed (the solver stopped,
//! the schedule was singular, or the model failed while running).

use std::process::ExitCode;

/// A failed command: a library error, whose variant decides the exit code,
/// or a problem the CLI found itself in its arguments or files.
#[derive(Debug)]
pub enum Failure {
    /// An error from the fmrt library.
    Library(fmrt::Error),
    /// A bad argument or input file, found by the CLI (exit code 1).
    Usage(String),
}

/// `Failure::Usage` from a format string, like `format!`.
macro_rules! fail {
    ($($arg:tt)*) => {
        $crate::failure::Failure::Usage(format!($($arg)*))
    };
}
pub(crate) use fail;

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Usage(_) => 1,
            Failure::Library(e) => library_exit_code(e),
        })
    }
}

/// The exit code of a library error, read off the library's classification
/// ([`fmrt::Error::kind`]); a new kind stops this from compiling.
pub fn library_exit_code(error: &fmrt::Error) -> u8 {
    use fmrt::error::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidArgument
        | ErrorKind::Shape
        | ErrorKind::Scheduler
        | ErrorKind::Model
        | ErrorKind::Plugin
        | ErrorKind::Unsupported
        | ErrorKind::Io => 1,
        ErrorKind::Internal => 2,
        ErrorKind::RuntimeNotFound => 3,
        ErrorKind::Solver | ErrorKind::Singular | ErrorKind::Field => 4,
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Library(e) => write!(f, "{}", fmrt::error::Report(e)),
            Failure::Usage(m) => f.write_str(m),
        }
    }
}

impl From<fmrt::Error> for Failure {
    fn from(e: fmrt::Error) -> Self {
        Failure::Library(e)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Usage(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmrt::Error;

    /// One error of each kind with the exit code it must give.
    #[test]
    fn every_error_kind_has_its_exit_code() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let cases: Vec<(Error, u8)> = vec![
            (Error::InvalidArgument("bad".into()), 1),
            (
                Error::Shape {
                    tensor: "x".into(),
                    expected: "[B, 2]".into(),
                    actual: vec![3],
                },
                1,
            ),
            (
                Error::Scheduler {
                    name: "a.fm".into(),
                    report: "error".into(),
                },
                1,
            ),
            (Error::model_load("m.onnx", "truncated"), 1),
            (
                Error::PluginLoad {
                    file: "p.so".into(),
                    reason: "no symbol".into(),
                },
                1,
            ),
            (
                Error::UnsupportedOperator {
                    file: "m.onnx".into(),
                    op_type: "Hardmax".into(),
                    node: "h".into(),
                    reason: "no rule".into(),
                    others: vec![],
                },
                1,
            ),
            (Error::unsupported("no JVPs"), 1),
            (
                Error::Io {
                    path: "x.npy".into(),
                    source: io(),
                },
                1,
            ),
            (
                Error::RuntimeNotFound {
                    summary: "not found".into(),
                    tried: vec!["/a (not found)".into()],
                },
                3,
            ),
            (
                Error::StepSizeTooSmall {
                    sample: 0,
                    t: 0.5,
                    s: 0.5,
                    step: 1e-20,
                },
                4,
            ),
            (
                Error::MaxSteps {
                    max_steps: 10,
                    sample: 0,
                    t: 0.5,
                    s: 0.5,
                },
                4,
            ),
            (
                Error::NonFinite {
                    which: "state of sample 0".into(),
                    location: "at t = 0.5".into(),
                },
                4,
            ),
            (Error::field("m.onnx", "ONNX Runtime failed"), 4),
            (Error::extra("m.onnx", "mu", "not given"), 1),
            (Error::singular("sigma = 0 at t = 0"), 4),
            (Error::internal("state layout"), 2),
        ];
        for (error, code) in cases {
            assert_eq!(library_exit_code(&error), code, "{error:?}");
            assert_eq!(
                Failure::Library(error).exit_code(),
                ExitCode::from(code),
                "exit code of the wrapped error"
            );
        }
        assert_eq!(Failure::Usage("bad".into()).exit_code(), ExitCode::from(1));
    }
}
