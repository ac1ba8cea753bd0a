//! The crate-wide error type.

/// Everything that can go wrong in fmrt, outside of `.fm` diagnostics which carry
/// their own rendered report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.fm` scheduler failed to load; the report holds every rendered diagnostic.
    #[error("{0}")]
    Scheduler(String),
    /// A tensor does not have the shape an operation needs.
    #[error("tensor `{tensor}` has shape {actual:?}, expected {expected}")]
    Shape {
        /// The tensor's name as the caller knows it.
        tensor: String,
        /// A description of the expected shape, e.g. `[B, 2]`.
        expected: String,
        /// The shape that was given.
        actual: Vec<usize>,
    },
    /// An argument is out of its domain (a negative step count, a NaN tolerance…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The solver could not finish (step size underflow, too many steps, a non-finite state).
    #[error("solver failed: {0}")]
    Solver(String),
    /// A velocity field failed to evaluate.
    #[error("velocity field failed: {0}")]
    Field(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
