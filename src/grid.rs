//! Time grids: where a fixed-step solver places its steps.
//!
//! A grid maps the uniform position u = i/N (i = 0‥N) to a time t(u) with
//! t(0) = 0, t(1) = 1 and t strictly increasing. It is written in the `.fm`
//! language as `grid = EXPR` over `u`, with `param`s and `let`s as in
//! schedulers, and checked with the same diagnostics (file, line, column):
//! endpoints within [`GRID_ENDPOINT_ERROR`](crate::dsl::check::GRID_ENDPOINT_ERROR),
//! finite, strictly increasing on a fine check grid. The built-ins
//! ([`BUILTIN_GRIDS`]) are `.fm` files in `src/grid/builtin/`:
//!
//! | name | t(u) | params |
//! |---|---|---|
//! | `uniform` | u | |
//! | `shift` | 1 − μs / (1 + (μ − 1)s), s = 1 − u (SD3 / diffusers time shift) | μ = 3 |
//! | `sway` | u + c·(cos(πu/2) − 1 + u) (F5-TTS sway sampling) | c = −1 |
//! | `cosine` | (1 − cos πu) / 2 | |
//!
//! **Dynamic shift** (FLUX) is the `shift` grid with μ = exp(m), m linear in
//! the image sequence length L: m = m₁ + (L − L₁)·(m₂ − m₁)/(L₂ − L₁) (FLUX.1:
//! L₁ = 256, m₁ = 0.5, L₂ = 4096, m₂ = 1.15); compute μ and pass it as the
//! `mu` param.
//!
//! The grid's time is the time of the field being integrated (the sampling
//! schedule's time when a model is sampled along another schedule).

use crate::dsl::{self, Diagnostic, Kernel};
use crate::error::{Error, Result};
use crate::scheduler::{looks_like_path, read_source_file};
use crate::solver::Steps;

/// Names of the built-in grids, in documentation order.
pub const BUILTIN_GRIDS: [&str; 4] = ["uniform", "shift", "sway", "cosine"];

const BUILTIN_SOURCES: [&str; 4] = [
    include_str!("grid/builtin/uniform.fm"),
    include_str!("grid/builtin/shift.fm"),
    include_str!("grid/builtin/sway.fm"),
    include_str!("grid/builtin/cosine.fm"),
];

/// The `.fm` source of the built-in grid `name`.
pub fn builtin_grid_source(name: &str) -> Option<&'static str> {
    BUILTIN_GRIDS
        .iter()
        .position(|n| *n == name)
        .map(|k| BUILTIN_SOURCES[k])
}

/// A checked time grid t(u), compiled for evaluation.
#[derive(Clone, Debug)]
pub struct TimeGrid {
    file: String,
    source: String,
    params: Vec<(String, f64)>,
    expression: String,
    program: Kernel,
    warnings: Vec<Diagnostic>,
}

/// The outcome of checking a grid: every diagnostic, and the grid when there
/// was no error.
#[derive(Debug)]
pub struct GridReport {
    /// The file name used in the diagnostics (`<builtin>.fm` for built-ins).
    pub file: String,
    /// The source text that was checked (empty when it could not be read).
    pub source: String,
    /// Every error and warning, in the order found.
    pub diagnostics: Vec<Diagnostic>,
    /// The loaded grid, `None` when there was an error.
    pub grid: Option<TimeGrid>,
}

impl GridReport {
    /// Whether any diagnostic is an error (the grid did not load).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Every diagnostic rendered with file, line, column, source line and
    /// carets; empty when there are none.
    pub fn rendered(&self) -> String {
        dsl::render_all(&self.diagnostics, &self.file, &self.source)
    }

    fn into_result(self) -> Result<TimeGrid> {
        let rendered = self.rendered();
        self.grid.ok_or(Error::Scheduler {
            name: self.file,
            report: rendered,
        })
    }
}

/// Checks grid source text; `file` names it in diagnostics.
pub fn check_grid_source(source: &str, file: &str, overrides: &[(String, f64)]) -> GridReport {
    let analysis = dsl::analyze_grid(source, overrides);
    let grid = analysis.compiled.map(|c| TimeGrid {
        file: file.to_string(),
        source: source.to_string(),
        params: c.params,
        expression: dsl::print(&c.expr),
        program: c.program,
        warnings: analysis
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .cloned()
            .collect(),
    });
    GridReport {
        file: file.to_string(),
        source: source.to_string(),
        diagnostics: analysis.diagnostics,
        grid,
    }
}

/// Checks a grid given as a built-in name or the path of a `.fm` file.
pub fn check_grid(spec: &str, overrides: &[(String, f64)]) -> GridReport {
    if let Some(src) = builtin_grid_source(spec) {
        if !looks_like_path(spec) {
            return check_grid_source(src, &format!("{spec}.fm"), overrides);
        }
    }
    let unread = |message: String, hint: Option<String>| GridReport {
        file: spec.to_string(),
        source: String::new(),
        diagnostics: vec![Diagnostic::error(message).maybe_hint(hint)],
        grid: None,
    };
    if !looks_like_path(spec) && !std::path::Path::new(spec).exists() {
        let hint = dsl::diag::did_you_mean(spec, BUILTIN_GRIDS).unwrap_or_else(|| {
            format!(
                "the built-in grids are {}; or give the path of a .fm file",
                BUILTIN_GRIDS.join(", ")
            )
        });
        return unread(
            format!("`{spec}` is neither a built-in grid nor an existing file"),
            Some(hint),
        );
    }
    match read_source_file(spec) {
        Ok(src) => check_grid_source(&src, spec, overrides),
        Err(e) => unread(e.to_string(), None),
    }
}

/// Whether `.fm` source text defines a time grid (has a `grid = …`
/// statement) rather than a scheduler.
pub fn is_grid_source(source: &str) -> bool {
    let (program, _) = dsl::parse_program(source);
    program.stmts.iter().any(|s| {
        matches!(s, dsl::ast::Stmt::Assign { target, .. } | dsl::ast::Stmt::Broken { name: target }
            if target.name == "grid")
    })
}

impl TimeGrid {
    /// Loads a grid from `.fm` source text; `file` names it in diagnostics.
    /// Errors become [`Error::Scheduler`] holding every rendered diagnostic.
    pub fn from_source(source: &str, file: &str, overrides: &[(String, f64)]) -> Result<TimeGrid> {
        check_grid_source(source, file, overrides).into_result()
    }

    /// Loads the built-in grid `name` (see [`BUILTIN_GRIDS`]).
    pub fn builtin(name: &str, overrides: &[(String, f64)]) -> Result<TimeGrid> {
        let src = builtin_grid_source(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown built-in grid `{name}`; the built-ins are {}",
                BUILTIN_GRIDS.join(", ")
            ))
        })?;
        TimeGrid::from_source(src, &format!("{name}.fm"), overrides)
    }

    /// Loads a grid given as a built-in name or the path of a `.fm` file
    /// (a spec ending in `.fm` or containing a path separator is a path).
    pub fn open(spec: &str, overrides: &[(String, f64)]) -> Result<TimeGrid> {
        check_grid(spec, overrides).into_result()
    }

    /// The file name used in diagnostics.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The `.fm` source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every param with its effective value.
    pub fn params(&self) -> &[(String, f64)] {
        &self.params
    }

    /// The simplified t(u) as a `.fm` expression (params by name).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The warnings found while checking.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// t(u), evaluated as written (no snapping of the endpoints).
    pub fn time(&self, u: f64) -> f64 {
        let mut out = [0.0];
        self.program.eval_into(u, &mut out);
        out[0]
    }

    /// The `steps + 1` times t(i / steps), i = 0‥steps, with the endpoints
    /// exactly 0 and 1. Errors when `steps` is 0 or the points are not
    /// strictly increasing at this resolution.
    pub fn points(&self, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(Error::InvalidArgument(
                "a grid needs at least 1 step".to_string(),
            ));
        }
        let mut points: Vec<f64> = (0..=steps)
            .map(|i| self.time(i as f64 / steps as f64))
            .collect();
        points[0] = 0.0;
        points[steps] = 1.0;
        if let Some(i) = points
            .windows(2)
            .position(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater))
        {
            return Err(Error::InvalidArgument(format!(
                "grid {} with {steps} steps is not strictly increasing: point {} = {} follows {}",
                self.file,
                i + 1,
                points[i + 1],
                points[i]
            )));
        }
        Ok(points)
    }

    /// The solver steps of this grid with `steps` steps ([`Steps::Grid`]).
    pub fn steps(&self, steps: usize) -> Result<Steps> {
        Ok(Steps::Grid(self.points(steps)?))
    }
}
