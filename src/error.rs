//! The crate-wide error type.
//!
//! Each variant says what went wrong with the facts a caller needs to act on
//! it (the file, the tensor and its shape, the operator and its node, the time
//! where a solve stopped), so hosts can branch on the variant instead of
//! reading messages. [`Error::kind`] is the one place that sorts errors into
//! [`ErrorKind`]s: the C API's status and the CLI's exit code are both read
//! off the kind, so the two cannot disagree.
//!
//! An error caused by another one (ONNX Runtime's, the protobuf decoder's)
//! keeps it as its [`source`](std::error::Error::source) and does not copy its
//! text; [`Report`] prints the whole chain on one line.

/// Everything that can go wrong in fmrt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ONNX Runtime shared library was not found, or none of the files
    /// found loaded.
    #[error("{summary}{}", list_places(.tried))]
    RuntimeNotFound {
        /// What was wrong, with what to do about it.
        summary: String,
        /// Every place looked at, each with why it did not serve.
        tried: Vec<String>,
    },
    /// A model file could not be loaded: unreadable, not a valid model, an
    /// input mapping that cannot be worked out, a failing check run.
    #[error("{file}: {reason}")]
    ModelLoad {
        /// The model file (or `<bytes>` for a model given in memory).
        file: String,
        /// What is wrong with it.
        reason: String,
        /// The underlying error (from ONNX Runtime or the protobuf decoder),
        /// when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A native plugin could not be loaded: the library did not open, its
    /// entry symbol is missing, its ABI version differs, its table is too
    /// small or its capabilities and callbacks disagree, or `create` failed.
    #[error("plugin {file}: {reason}")]
    PluginLoad {
        /// The plugin library as given.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// An operator on the path from the state has no tangent rule, so the
    /// model's Jacobian–vector products cannot be derived.
    #[error("cannot differentiate {file}: operator `{op_type}` (node `{node}`): {reason}{}", more_ops(.others))]
    UnsupportedOperator {
        /// The model file.
        file: String,
        /// The operator type (with its domain if not the default one).
        op_type: String,
        /// The node's name (`""` if the node has none).
        node: String,
        /// Why it is not supported.
        reason: String,
        /// The model's further unsupported operators, if any.
        others: Vec<UnsupportedOp>,
    },
    /// A field cannot do what was asked: derivatives from a field that
    /// provides none, a divergence mode the field does not support.
    #[error("{what}")]
    Unsupported {
        /// What was asked and why it is not available.
        what: String,
    },
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
    /// A value that must be finite is not (NaN or infinite).
    #[error("{which} became non-finite {location}")]
    NonFinite {
        /// The quantity (`state of sample 3`).
        which: String,
        /// Where it happened (`at t = 0.5 (step from …)`).
        location: String,
    },
    /// A `.fm` scheduler failed to load; `report` holds every rendered
    /// diagnostic (file, line, column, caret, hint).
    #[error("{report}")]
    Scheduler {
        /// The scheduler's file or built-in name.
        name: String,
        /// The rendered diagnostics.
        report: String,
    },
    /// An adaptive solve's step size fell below the smallest step it may take.
    #[error(
        "step size underflow at t = {t} (sample {sample}; normalised s = {s}, step {step:e}); \
         the problem may be stiff or its solution may blow up"
    )]
    StepSizeTooSmall {
        /// The sample whose step failed: with steps shared by the batch, 0
        /// (the batch's clock); with independent steps, the first sample that
        /// stopped.
        sample: usize,
        /// The time of that sample where the solve stopped.
        t: f64,
        /// The normalised time s ∈ [0, 1] there.
        s: f64,
        /// The step size that was too small.
        step: f64,
    },
    /// An adaptive solve used its whole step budget.
    #[error(
        "maximum number of steps ({max_steps}) exceeded at t = {t} (sample {sample}; normalised s = {s})"
    )]
    MaxSteps {
        /// The budget (`AdaptiveOptions::max_steps`).
        max_steps: usize,
        /// The sample that ran out: with steps shared by the batch, 0 (the
        /// batch's clock); with independent steps, the first that did.
        sample: usize,
        /// The time of that sample reached.
        t: f64,
        /// The normalised time s ∈ [0, 1] reached.
        s: f64,
    },
    /// A velocity field failed while evaluating: ONNX Runtime reported an
    /// error, or a plugin callback failed.
    #[error("{field}: {reason}")]
    Field {
        /// The field (a model file, a plugin, an adapter's name).
        field: String,
        /// What went wrong.
        reason: String,
        /// The underlying error (ONNX Runtime's), when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A conditioning input (an extra) is wrong: not an input of the field,
    /// missing, of the wrong type or shape, or its null condition does not fit.
    #[error("{field}: conditioning input `{input}`: {reason}")]
    Extra {
        /// The field (a model file, a plugin, an adapter's name).
        field: String,
        /// The input's name.
        input: String,
        /// What is wrong with it, with the declared shape and type where the
        /// field declares one.
        reason: String,
    },
    /// The schedule cannot do what was asked at some time: a prediction that
    /// cannot be turned into a velocity there (σ = 0 for x0 prediction), a
    /// schedule change whose time map is flat, a coefficient that is not
    /// finite.
    #[error("{reason}")]
    Singular {
        /// What is singular, and at which time.
        reason: String,
    },
    /// fmrt broke one of its own invariants: a bug, to be reported.
    #[error("internal error (a bug in fmrt; please report it): {0}")]
    Internal(String),
    /// An argument is out of its domain (a negative step count, a NaN tolerance…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file could not be read or written; the I/O error is the source.
    #[error("{path}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

/// The product of `factors` (a shape's element count, `n × k × dim`), or an
/// [`Error::InvalidArgument`] naming `what` when it overflows `usize` (or
/// exceeds `isize::MAX`, the most elements an array may hold), instead of a
/// wrapped size.
pub(crate) fn checked_product(factors: &[usize], what: &str) -> crate::Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .filter(|&n| isize::try_from(n).is_ok())
        .ok_or_else(|| {
            let shown: Vec<String> = factors.iter().map(usize::to_string).collect();
            Error::InvalidArgument(format!("{what} overflows: {}", shown.join(" × ")))
        })
}

/// Checks that `factors` elements of `element_bytes` bytes each can be
/// allocated, before the allocation that would otherwise abort the process
/// (Rust's allocation failure is an abort, not an error): an
/// [`Error::InvalidArgument`] naming `what` and the size when the product
/// overflows or the memory cannot be had.
pub fn check_allocation(factors: &[usize], element_bytes: usize, what: &str) -> Result<()> {
    let elements = checked_product(factors, what)?;
    let bytes = elements
        .checked_mul(element_bytes)
        .filter(|&b| isize::try_from(b).is_ok());
    let fits = bytes.is_some_and(|bytes| Vec::<u8>::new().try_reserve_exact(bytes).is_ok());
    if fits {
        return Ok(());
    }
    let gib = elements as f64 * element_bytes as f64 / f64::from(1u32 << 30);
    Err(Error::InvalidArgument(format!(
        "{what} needs {gib:.1} GiB, more memory than can be allocated here: compute it in \
         parts (Sampler::sample_rows; the fmrt command line samples in chunks)"
    )))
}

impl Error {
    /// The kind of failure this is: the one classification the C API's
    /// status and the CLI's exit code are both read from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) | Error::Extra { .. } => ErrorKind::InvalidArgument,
            Error::Shape { .. } => ErrorKind::Shape,
            Error::Scheduler { .. } => ErrorKind::Scheduler,
            Error::ModelLoad { .. } => ErrorKind::Model,
            Error::PluginLoad { .. } => ErrorKind::Plugin,
            Error::RuntimeNotFound { .. } => ErrorKind::RuntimeNotFound,
            Error::Unsupported { .. } | Error::UnsupportedOperator { .. } => ErrorKind::Unsupported,
            Error::Io { .. } => ErrorKind::Io,
            Error::Field { .. } => ErrorKind::Field,
            Error::Singular { .. } => ErrorKind::Singular,
            Error::StepSizeTooSmall { .. } | Error::MaxSteps { .. } | Error::NonFinite { .. } => {
                ErrorKind::Solver
            }
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A [`Error::Field`] for the field `field`.
    pub fn field(field: impl AsRef<str>, reason: impl Into<String>) -> Self {
        Error::Field {
            field: field.as_ref().to_string(),
            reason: reason.into(),
            source: None,
        }
    }

    /// A [`Error::Field`] for the field `field` caused by `source`.
    pub fn field_from(
        field: impl AsRef<str>,
        reason: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Field {
            field: field.as_ref().to_string(),
            reason: reason.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A [`Error::Extra`]: the conditioning input `input` of `field` is wrong.
    pub fn extra(
        field: impl AsRef<str>,
        input: impl AsRef<str>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Extra {
            field: field.as_ref().to_string(),
            input: input.as_ref().to_string(),
            reason: reason.into(),
        }
    }

    /// A [`Error::Singular`] saying `reason`.
    pub fn singular(reason: impl Into<String>) -> Self {
        Error::Singular {
            reason: reason.into(),
        }
    }

    /// A [`Error::Internal`]: fmrt's own invariant `what` does not hold.
    pub fn internal(what: impl Into<String>) -> Self {
        Error::Internal(what.into())
    }

    /// A [`Error::ModelLoad`] for `file` without an underlying error.
    pub fn model_load(file: impl AsRef<str>, reason: impl Into<String>) -> Self {
        Error::ModelLoad {
            file: file.as_ref().to_string(),
            reason: reason.into(),
            source: None,
        }
    }

    /// A [`Error::ModelLoad`] for `file` caused by `source` (kept as the
    /// error's source, not copied into `reason`; [`Report`] prints both).
    pub fn model_load_from(
        file: impl AsRef<str>,
        reason: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::ModelLoad {
            file: file.as_ref().to_string(),
            reason: reason.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A [`Error::Unsupported`] saying `what`.
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into() }
    }
}

/// The kinds of failure, as hosts branch on them: the caller's input, the
/// model, the computation, the machine, or fmrt itself.
///
/// Every [`Error`] has exactly one kind ([`Error::kind`]). This enum is
/// exhaustive on purpose: a front end that maps kinds (the C API to statuses,
/// the CLI to exit codes) stops compiling when a kind is added, instead of
/// silently filing it under a wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An argument or conditioning input is out of its domain.
    InvalidArgument,
    /// A tensor or buffer has the wrong shape or length.
    Shape,
    /// A `.fm` scheduler or grid failed to load.
    Scheduler,
    /// A model file failed to load.
    Model,
    /// A native plugin failed to load.
    Plugin,
    /// The ONNX Runtime library was not found or did not load.
    RuntimeNotFound,
    /// The field cannot do what was asked (derivatives it does not offer,
    /// an operator without a tangent rule).
    Unsupported,
    /// A file could not be read or written.
    Io,
    /// The velocity field failed while evaluating.
    Field,
    /// The schedule is singular where it was asked to work.
    Singular,
    /// The solver could not finish.
    Solver,
    /// fmrt broke an invariant of its own (a bug).
    Internal,
}

/// An error and its chain of causes on one line (`a: b: c`), for messages
/// shown to people: the C API's `fmrt_last_error` and the CLI print this.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// An operator on the state's path that has no tangent rule (the further
/// operators of [`Error::UnsupportedOperator`]; also `fmrt::graph::UnsupportedOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// The operator type (with its domain if not the default one).
    pub op_type: String,
    /// The node's name (`""` if the node has none).
    pub node: String,
    /// Why it is not supported.
    pub reason: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "operator `{}` (node `{}`): {}",
            self.op_type, self.node, self.reason
        )
    }
}

fn list_places(tried: &[String]) -> String {
    tried.iter().map(|p| format!("\n  - {p}")).collect()
}

fn more_ops(others: &[UnsupportedOp]) -> String {
    others.iter().map(|op| format!("; {op}")).collect()
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_product_refuses_what_would_wrap_or_exceed_isize() {
        assert_eq!(checked_product(&[3, 4, 5], "x").ok(), Some(60));
        assert_eq!(checked_product(&[], "x").ok(), Some(1));
        assert_eq!(checked_product(&[0, usize::MAX], "x").ok(), Some(0));
        for factors in [[usize::MAX, 2, 1], [1 << 62, 2, 1], [3, 1 << 62, 2]] {
            match checked_product(&factors, "n × dim") {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.starts_with("n × dim overflows"), "{m}")
                }
                other => panic!("{factors:?}: {other:?}"),
            }
        }
    }
}
