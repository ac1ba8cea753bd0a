//! Schedules: α(t), σ(t) and their time derivatives.
//!
//! [`Schedule`] is what the rest of the crate consumes. [`Scheduler`] is the
//! `.fm`-backed implementation; the built-ins ([`BUILTIN_NAMES`]) are `.fm` files
//! under `src/scheduler/builtin/`, embedded in the binary.
//!
//! ```
//! use fmrt::scheduler::{check, Schedule, Scheduler};
//!
//! // A built-in with a param override.
//! let poly = Scheduler::builtin("poly", &[("n".to_string(), 3.0)])?;
//! let c = poly.coefficients(0.5);
//! assert!((c.alpha - 0.125).abs() < 1e-15 && (c.d_alpha - 0.75).abs() < 1e-15);
//! assert_eq!(poly.expressions().d_alpha, "n * t^(n - 1)");
//!
//! // A name or a path; errors carry every rendered diagnostic.
//! let err = Scheduler::open("cosin", &[]).unwrap_err().to_string();
//! assert!(err.contains("did you mean `cosine`?"));
//!
//! // What `fmrt check` needs: all diagnostics, and the scheduler if it loaded.
//! let report = check("vp", &[]);
//! assert!(!report.has_errors() && report.loaded.is_some());
//! assert!(report.rendered().contains("σ' is infinite at t = 1"));
//! # Ok::<(), fmrt::Error>(())
//! ```

/// The four numbers a schedule gives at one time t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coefficients {
    /// α(t), the weight of the data point x1.
    pub alpha: f64,
    /// σ(t), the weight of the noise x0.
    pub sigma: f64,
    /// α'(t).
    pub d_alpha: f64,
    /// σ'(t).
    pub d_sigma: f64,
}

/// A schedule (α, σ) of an affine probability path, with derivatives.
///
/// Implementations must be cheap to evaluate and must not allocate.
pub trait Schedule: Send + Sync + std::fmt::Debug {
    /// α, σ, α', σ' at time `t` (t = 0 is noise, t = 1 is data).
    fn coefficients(&self, t: f64) -> Coefficients;
}

pub use crate::dsl::read_source_file;
use crate::dsl::{self, looks_like_path, read_limited, Diagnostic, Kernel};
use crate::error::{Error, Result};

/// Names of the built-in schedulers, in documentation order.
pub const BUILTIN_NAMES: [&str; 6] = ["ot", "poly", "cosine", "convex_cosine", "linear_vp", "vp"];

const BUILTIN_SOURCES: [&str; 6] = [
    include_str!("scheduler/builtin/ot.fm"),
    include_str!("scheduler/builtin/poly.fm"),
    include_str!("scheduler/builtin/cosine.fm"),
    include_str!("scheduler/builtin/convex_cosine.fm"),
    include_str!("scheduler/builtin/linear_vp.fm"),
    include_str!("scheduler/builtin/vp.fm"),
];

/// The names of the built-in schedulers.
pub fn builtin_names() -> &'static [&'static str] {
    &BUILTIN_NAMES
}

/// The `.fm` source of the built-in scheduler `name`.
pub fn builtin_source(name: &str) -> Option<&'static str> {
    BUILTIN_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|k| BUILTIN_SOURCES[k])
}

/// The simplified α, σ, α', σ' of a scheduler, printed as `.fm` expressions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expressions {
    /// α(t).
    pub alpha: String,
    /// σ(t).
    pub sigma: String,
    /// α'(t), derived symbolically.
    pub d_alpha: String,
    /// σ'(t), derived symbolically.
    pub d_sigma: String,
}

/// A schedule defined by a `.fm` source, compiled to one allocation-free
/// [`Kernel`] that computes α, σ, α', σ' together, sharing common subexpressions.
#[derive(Clone, Debug)]
pub struct Scheduler {
    file: String,
    source: String,
    params: Vec<(String, f64)>,
    expressions: Expressions,
    program: Kernel,
    warnings: Vec<Diagnostic>,
}

/// The outcome of checking a scheduler: every diagnostic, and the scheduler
/// (in `loaded`) when there was no error.
pub type CheckReport = dsl::CheckReport<Scheduler>;

/// Checks `.fm` source text; `file` names it in diagnostics.
pub fn check_source(source: &str, file: &str, overrides: &[(String, f64)]) -> CheckReport {
    let analysis = dsl::analyze(source, overrides);
    let scheduler = analysis.compiled.map(|c| {
        let p = |k: usize| dsl::print(&c.exprs[k]);
        Scheduler {
            file: file.to_string(),
            source: source.to_string(),
            expressions: Expressions {
                alpha: p(0),
                sigma: p(1),
                d_alpha: p(2),
                d_sigma: p(3),
            },
            params: c.params,
            program: c.program,
            warnings: analysis
                .diagnostics
                .iter()
                .filter(|d| !d.is_error())
                .cloned()
                .collect(),
        }
    });
    CheckReport {
        file: file.to_string(),
        source: source.to_string(),
        diagnostics: analysis.diagnostics,
        loaded: scheduler,
    }
}

/// Checks a scheduler given as a built-in name or a path to a `.fm` file (see
/// [`Scheduler::open`] for how `spec` is interpreted).
pub fn check(spec: &str, overrides: &[(String, f64)]) -> CheckReport {
    if let Some(src) = builtin_source(spec) {
        if !looks_like_path(spec) {
            return check_source(src, &format!("{spec}.fm"), overrides);
        }
    }
    if !looks_like_path(spec) && !std::path::Path::new(spec).exists() {
        let hint = dsl::diag::did_you_mean(spec, BUILTIN_NAMES).unwrap_or_else(|| {
            format!(
                "the built-ins are {}; or give the path of a .fm file",
                BUILTIN_NAMES.join(", ")
            )
        });
        return CheckReport::unread(
            spec,
            Diagnostic::error(format!(
                "`{spec}` is neither a built-in scheduler nor an existing file"
            ))
            .hint(hint),
        );
    }
    let unread = |d: Diagnostic| CheckReport::unread(spec, d);
    match read_limited(spec) {
        Ok(Ok(src)) => check_source(&src, spec, overrides),
        Ok(Err(too_large)) => unread(too_large),
        Err(e) => unread(Diagnostic::error(format!("cannot read `{spec}`: {e}"))),
    }
}

impl Scheduler {
    /// Loads a scheduler from `.fm` source text; `file` names it in diagnostics.
    /// Errors become [`Error::Scheduler`] holding every rendered diagnostic.
    pub fn from_source(source: &str, file: &str, overrides: &[(String, f64)]) -> Result<Scheduler> {
        check_source(source, file, overrides).into_result()
    }

    /// Loads the built-in scheduler `name` (see [`builtin_names`]).
    pub fn builtin(name: &str, overrides: &[(String, f64)]) -> Result<Scheduler> {
        match builtin_source(name) {
            Some(src) => Scheduler::from_source(src, &format!("{name}.fm"), overrides),
            None => {
                let hint = dsl::diag::did_you_mean(name, BUILTIN_NAMES)
                    .unwrap_or_else(|| format!("the built-ins are {}", BUILTIN_NAMES.join(", ")));
                let d =
                    Diagnostic::error(format!("`{name}` is not a built-in scheduler")).hint(hint);
                Err(Error::Scheduler {
                    name: name.to_string(),
                    report: d.render(name, ""),
                })
            }
        }
    }

    /// Loads `spec`: a built-in name (`cosine`) unless it ends in `.fm` or contains a
    /// path separator, in which case it is a file path; a name that is not a
    /// built-in is tried as a path. Read failures are reported naming the file.
    pub fn open(spec: &str, overrides: &[(String, f64)]) -> Result<Scheduler> {
        check(spec, overrides).into_result()
    }

    /// The file name used in diagnostics.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The `.fm` source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every param with its effective value (default or override), in source order.
    pub fn params(&self) -> &[(String, f64)] {
        &self.params
    }

    /// The simplified α, σ, α', σ' as `.fm` expressions (params by name).
    pub fn expressions(&self) -> &Expressions {
        &self.expressions
    }

    /// The warnings found while loading.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The warnings rendered against the source; empty when there are none.
    pub fn rendered_warnings(&self) -> String {
        dsl::render_all(&self.warnings, &self.file, &self.source)
    }
}

impl Schedule for Scheduler {
    fn coefficients(&self, t: f64) -> Coefficients {
        let mut q = [0.0; 4];
        self.program.eval_into(t, &mut q);
        Coefficients {
            alpha: q[0],
            sigma: q[1],
            d_alpha: q[2],
            d_sigma: q[3],
        }
    }
}
