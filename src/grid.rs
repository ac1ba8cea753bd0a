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
//! **`diffusers-flow`** ([`DiffusersFlowGrid`], param `shift`, default 1, and
//! `train_steps`, default 1000) is the exact σ list diffusers 0.42's
//! `DPMSolverMultistepScheduler` or `UniPCMultistepScheduler` builds in flow
//! mode (`use_flow_sigmas=True`, `flow_shift`) for N steps, as times t = 1 − σ.
//! It is a Rust preset, not a `.fm` grid, because a `.fm` grid runs from
//! t = 0 and is evaluated in f64, while diffusers' lists start after t = 0
//! (DPM-Solver++ at σ = shift(1 − 1/1000), UniPC at σ = 1 − 10⁻⁶), differ
//! between the two schedulers, and are rounded to float32 as diffusers
//! stores them. [`steps_for`] resolves it, or any other grid name, for a
//! solver method, so the CLI and the C API reach it by name.
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
use crate::solver::{Method, Steps};

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
    if spec == DIFFUSERS_FLOW {
        return unread(
            format!(
                "`{DIFFUSERS_FLOW}` is a preset computed from the solver and the step count, \
                 not a .fm program, so it cannot be checked or plotted as one"
            ),
            Some("sample with it (`--grid diffusers-flow --steps N`), or check a .fm grid".into()),
        );
    }
    if !looks_like_path(spec) && !std::path::Path::new(spec).exists() {
        let mut known: Vec<&str> = BUILTIN_GRIDS.to_vec();
        known.push(DIFFUSERS_FLOW);
        let hint = dsl::diag::did_you_mean(spec, known.iter().copied()).unwrap_or_else(|| {
            format!(
                "the built-in grids are {}; or give the path of a .fm file",
                known.join(", ")
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

/// The name of the [`DiffusersFlowGrid`] preset.
pub const DIFFUSERS_FLOW: &str = "diffusers-flow";

/// diffusers' flow-mode σ list as fmrt times, the `diffusers-flow` preset.
///
/// For N steps, a shift K and T = `train_steps`, with `a_j = 1 + j·(1/T − 1)/N`
/// (numpy's `linspace(1, 1/T, N + 1)`, its last value exactly 1/T) and the
/// shift `S(σ) = K·σ / (1 + (K − 1)·σ)`, diffusers 0.42 builds
///
/// * `DPMSolverMultistepScheduler`: σ_k = S(1 − a_(N−k)), k = 0‥N−1 (the
///   flipped list without its final 0), so σ_0 = S(1 − 1/T) (0.9997 for
///   K = 3);
/// * `UniPCMultistepScheduler`: σ_k = S(a_k), k = 0‥N−1, with σ_0 lowered by
///   10⁻⁶ when it is within 10⁻⁶ of 1 (so that log σ stays finite);
///
/// then σ_N = 0 (`final_sigmas_type="zero"`), every σ rounded to float32.
/// The times are t_k = 1 − σ_k: they start after t = 0 (the noise is the
/// state at t_0; a sampling run starts there) and end at 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffusersFlowGrid {
    /// diffusers' `flow_shift` K (default 1; finite, > 0).
    pub shift: f64,
    /// diffusers' `num_train_timesteps` T (default 1000; a whole number in
    /// 2‥10⁹).
    pub train_steps: f64,
}

impl Default for DiffusersFlowGrid {
    fn default() -> Self {
        Self {
            shift: 1.0,
            train_steps: 1000.0,
        }
    }
}

impl DiffusersFlowGrid {
    /// The defaults with `overrides` (`shift`, `train_steps`) applied; an
    /// unknown name or an invalid value is [`Error::InvalidArgument`] naming
    /// it.
    pub fn with_params(overrides: &[(String, f64)]) -> Result<Self> {
        let mut grid = DiffusersFlowGrid::default();
        for (name, value) in overrides {
            match name.as_str() {
                "shift" => grid.shift = *value,
                "train_steps" => grid.train_steps = *value,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "the {DIFFUSERS_FLOW} grid has no param `{other}`; its params are \
                         shift, train_steps"
                    )))
                }
            }
        }
        if !(grid.shift.is_finite() && grid.shift > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "the {DIFFUSERS_FLOW} grid's shift must be finite and > 0, got {}",
                grid.shift
            )));
        }
        let t = grid.train_steps;
        if !(t.fract() == 0.0 && (2.0..=1e9).contains(&t)) {
            return Err(Error::InvalidArgument(format!(
                "the {DIFFUSERS_FLOW} grid's train_steps must be a whole number from 2 to 1e9, \
                 got {t}"
            )));
        }
        Ok(grid)
    }

    /// The N + 1 = `steps + 1` noise levels σ_0 > … > σ_N = 0 that diffusers
    /// builds for `method`: UniPC's list for [`Method::Unipc`], DPM-Solver++'s
    /// for every other method.
    pub fn sigmas(&self, method: Method, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(Error::InvalidArgument(
                "a grid needs at least 1 step".to_string(),
            ));
        }
        if steps > crate::grid::MAX_EXPLICIT_TIMES {
            return Err(Error::InvalidArgument(format!(
                "the {DIFFUSERS_FLOW} grid takes at most {MAX_EXPLICIT_TIMES} steps, got {steps}"
            )));
        }
        let k = self.shift;
        let shifted = |s: f64| k * s / (1.0 + (k - 1.0) * s);
        let n = steps as f64;
        let last = 1.0 / self.train_steps;
        let step = (last - 1.0) / n;
        // numpy's linspace(1, 1/T, N + 1): j·step + 1, the last value exact.
        let linspace = |j: usize| {
            if j == steps {
                last
            } else {
                j as f64 * step + 1.0
            }
        };
        let mut sigmas: Vec<f64> = if method == Method::Unipc {
            let mut s: Vec<f64> = (0..steps).map(|j| shifted(linspace(j))).collect();
            if (s[0] - 1.0).abs() < 1e-6 {
                s[0] -= 1e-6;
            }
            s
        } else {
            (0..steps)
                .map(|j| shifted(1.0 - linspace(steps - j)))
                .collect()
        };
        sigmas.push(0.0);
        Ok(sigmas.into_iter().map(|s| f64::from(s as f32)).collect())
    }

    /// The times t_k = 1 − σ_k of [`sigmas`](Self::sigmas), as fixed solver
    /// steps ([`Steps::Grid`], checked by [`explicit_steps`]).
    pub fn steps(&self, method: Method, steps: usize) -> Result<Steps> {
        let times: Vec<f64> = self
            .sigmas(method, steps)?
            .into_iter()
            .map(|s| 1.0 - s)
            .collect();
        explicit_steps(&times).map_err(|e| {
            Error::InvalidArgument(format!(
                "the {DIFFUSERS_FLOW} grid (shift {}, {steps} steps): {e}",
                self.shift
            ))
        })
    }
}

/// The fixed steps of the grid `spec` with `steps` steps for `method`: the
/// [`DiffusersFlowGrid`] preset for `diffusers-flow` (whose list depends on
/// the method), otherwise a built-in `.fm` grid or a `.fm` file
/// ([`TimeGrid::open`]). The CLI's `--grid` and the C API's
/// `fmrt_solver_time_grid` resolve names through this.
pub fn steps_for(
    spec: &str,
    overrides: &[(String, f64)],
    method: Method,
    steps: usize,
) -> Result<Steps> {
    if spec == DIFFUSERS_FLOW {
        return DiffusersFlowGrid::with_params(overrides)?.steps(method, steps);
    }
    TimeGrid::open(spec, overrides)?.steps(steps)
}
