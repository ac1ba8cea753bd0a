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
//! The EDM (Karras) spacing depends on a schedule's SNR and on the step count
//! itself, so it is [`EdmGrid`], computed in Rust, not a `.fm` grid.
//!
//! **Dynamic shift** (FLUX) is the `shift` grid with μ = exp(m), m linear in
//! the image sequence length L: m = m₁ + (L − L₁)·(m₂ − m₁)/(L₂ − L₁) (FLUX.1:
//! L₁ = 256, m₁ = 0.5, L₂ = 4096, m₂ = 1.15); compute μ and pass it as the
//! `mu` param.
//!
//! The grid's time is the time of the field being integrated (the sampling
//! schedule's time when a model is sampled along another schedule).

use crate::dsl::{self, looks_like_path, read_source_file, Diagnostic, Kernel};
use crate::error::{Error, Result};
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

/// The outcome of checking a grid: every diagnostic, and the grid (in
/// `loaded`) when there was no error.
pub type GridReport = dsl::CheckReport<TimeGrid>;

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
        loaded: grid,
    }
}

/// Checks a grid given as a built-in name or the path of a `.fm` file.
pub fn check_grid(spec: &str, overrides: &[(String, f64)]) -> GridReport {
    if let Some(src) = builtin_grid_source(spec) {
        if !looks_like_path(spec) {
            return check_grid_source(src, &format!("{spec}.fm"), overrides);
        }
    }
    let unread = |message: String, hint: Option<String>| {
        GridReport::unread(spec, Diagnostic::error(message).maybe_hint(hint))
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

/// The EDM (Karras et al. 2022) step spacing, mapped to fmrt's time through a
/// schedule's signal-to-noise ratio. It depends on the schedule and on the
/// step count N itself, so it is not a `.fm` grid t(u).
///
/// Karras's noise levels are σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} −
/// σ_max^{1/ρ}))^ρ, i = 0‥N−1, followed by σ_N = 0. The EDM noise level is
/// the inverse SNR, σ_edm = σ(t)/α(t), so t_i = SNR⁻¹(1/σ_i), found by
/// bisection (the SNR strictly increases, which the scheduler checks ensure).
/// fmrt's grid starts at pure noise: t_0 = 0 stands in for σ_max (exact in
/// the limit σ_max → ∞), and t_N = 1 is Karras's final σ = 0. For the CondOT
/// schedule (α = t, σ = 1 − t) this is t_i = 1/(1 + σ_i).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdmGrid {
    /// σ_min (default 0.002).
    pub sigma_min: f64,
    /// σ_max (default 80).
    pub sigma_max: f64,
    /// ρ (default 7).
    pub rho: f64,
}

impl Default for EdmGrid {
    fn default() -> Self {
        Self {
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
        }
    }
}

impl EdmGrid {
    /// The defaults with `overrides` (`sigma_min`, `sigma_max`, `rho`) applied;
    /// an unknown name or invalid values are errors.
    pub fn with_params(overrides: &[(String, f64)]) -> Result<Self> {
        let mut grid = EdmGrid::default();
        for (name, value) in overrides {
            match name.as_str() {
                "sigma_min" => grid.sigma_min = *value,
                "sigma_max" => grid.sigma_max = *value,
                "rho" => grid.rho = *value,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "the edm grid has no param `{other}`; its params are sigma_min, \
                         sigma_max, rho"
                    )))
                }
            }
        }
        let ok = grid.sigma_min.is_finite()
            && grid.sigma_max.is_finite()
            && 0.0 < grid.sigma_min
            && grid.sigma_min < grid.sigma_max
            && grid.rho.is_finite()
            && grid.rho > 0.0;
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "the edm grid needs 0 < sigma_min < sigma_max (finite) and rho > 0, got \
                 sigma_min = {}, sigma_max = {}, rho = {}",
                grid.sigma_min, grid.sigma_max, grid.rho
            )));
        }
        Ok(grid)
    }

    /// The `steps + 1` times t_0 = 0 < t_1 < … < t_N = 1 along `schedule`.
    pub fn points(
        &self,
        schedule: &dyn crate::scheduler::Schedule,
        steps: usize,
    ) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(Error::InvalidArgument(
                "a grid needs at least 1 step".to_string(),
            ));
        }
        let (lo, hi) = (
            self.sigma_max.powf(1.0 / self.rho),
            self.sigma_min.powf(1.0 / self.rho),
        );
        let mut points = vec![0.0];
        for i in 1..steps {
            let frac = i as f64 / (steps - 1) as f64;
            let sigma = (lo + frac * (hi - lo)).powf(self.rho);
            points.push(snr_inverse(schedule, 1.0 / sigma)?);
        }
        points.push(1.0);
        if let Some(i) = points
            .windows(2)
            .position(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater))
        {
            return Err(Error::InvalidArgument(format!(
                "the edm grid with {steps} steps is not strictly increasing at point {}: \
                 {} follows {} (is the schedule's SNR increasing?)",
                i + 1,
                points[i + 1],
                points[i]
            )));
        }
        Ok(points)
    }
}

/// The time t in (0, 1) with α(t)/σ(t) = `snr`, by bisection.
fn snr_inverse(schedule: &dyn crate::scheduler::Schedule, snr: f64) -> Result<f64> {
    let ratio = |t: f64| {
        let c = schedule.coefficients(t);
        c.alpha / c.sigma
    };
    let (mut a, mut b) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        let r = ratio(m);
        if r.is_nan() {
            return Err(Error::NonFinite {
                which: "the schedule's SNR α/σ".to_string(),
                location: format!("at t = {m} (edm grid)"),
            });
        }
        if r < snr {
            a = m;
        } else {
            b = m;
        }
    }
    Ok(0.5 * (a + b))
}

/// The longest explicit list of times a fixed-step run accepts.
pub const MAX_EXPLICIT_TIMES: usize = 1 << 20;

/// An explicit list of times as fixed solver steps ([`Steps::Grid`]), e.g.
/// a list diffusers' `sigmas` were converted to (t = 1 − σ): at least two
/// times, finite, strictly increasing, within [0, 1], the last one 1. The
/// first may be after 0: a sampler then starts there, the noise being the
/// state at that time (diffusers' DPM-Solver++ grid starts at t = 3e-4).
pub fn explicit_steps(times: &[f64]) -> Result<Steps> {
    let bad = |why: String| Err(Error::InvalidArgument(format!("the time list {why}")));
    if times.len() < 2 {
        return bad(format!("needs at least 2 times, got {}", times.len()));
    }
    if times.len() > MAX_EXPLICIT_TIMES {
        return bad(format!(
            "has {} times, more than the {MAX_EXPLICIT_TIMES} accepted",
            times.len()
        ));
    }
    if let Some((i, v)) = times
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || !(0.0..=1.0).contains(*v))
    {
        return bad(format!("holds {v} at position {i}, outside [0, 1]"));
    }
    if let Some(i) = times.windows(2).position(|w| w[1] <= w[0]) {
        return bad(format!(
            "is not strictly increasing: {} at position {} follows {}",
            times[i + 1],
            i + 1,
            times[i]
        ));
    }
    let last = times[times.len() - 1];
    if last != 1.0 {
        return bad(format!("must end at 1 (the data end), but ends at {last}"));
    }
    Ok(Steps::Grid(times.to_vec()))
}
