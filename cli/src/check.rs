//! `fmrt check`: print a scheduler's expressions (or a time grid's points)
//! and every diagnostic.

use std::process::ExitCode;

use fmrt::dsl::Severity;
use fmrt::{grid, scheduler};

use crate::args::CheckArgs;
use crate::failure::Failure;

/// Runs `fmrt check`; exit code 0 without errors, 1 with errors.
pub fn run(args: &CheckArgs) -> Result<ExitCode, Failure> {
    if args.grid || is_grid_file(&args.scheduler.scheduler) {
        return run_grid(args);
    }
    let report = scheduler::check(&args.scheduler.scheduler, &args.scheduler.params);
    if let Some(loaded) = &report.loaded {
        println!("{}", loaded.file());
        for (name, value) in loaded.params() {
            println!("param {name} = {value}");
        }
        let e = loaded.expressions();
        println!("alpha  = {}", e.alpha);
        println!("sigma  = {}", e.sigma);
        println!("alpha' = {}", e.d_alpha);
        println!("sigma' = {}", e.d_sigma);
    }
    Ok(finish(
        &report.rendered(),
        &report.diagnostics,
        report.loaded.is_some(),
    ))
}

/// Whether `spec` names an existing `.fm` file that defines a time grid.
fn is_grid_file(spec: &str) -> bool {
    std::fs::read_to_string(spec).is_ok_and(|src| grid::is_grid_source(&src))
}

/// `fmrt check` of a time grid: its params, expression and the points of
/// `--steps` steps, then every diagnostic.
fn run_grid(args: &CheckArgs) -> Result<ExitCode, Failure> {
    let report = grid::check_grid(&args.scheduler.scheduler, &args.scheduler.params);
    if let Some(loaded) = &report.loaded {
        println!("{} (time grid)", loaded.file());
        for (name, value) in loaded.params() {
            println!("param {name} = {value}");
        }
        println!("grid = {}", loaded.expression());
        let points = loaded.points(args.steps)?;
        println!("{} steps:", args.steps);
        for (i, t) in points.iter().enumerate() {
            println!("  t({i}/{}) = {t}", args.steps);
        }
    }
    Ok(finish(
        &report.rendered(),
        &report.diagnostics,
        report.loaded.is_some(),
    ))
}

/// Prints the rendered diagnostics and the summary line; the exit code.
fn finish(rendered: &str, diagnostics: &[fmrt::dsl::Diagnostic], loaded: bool) -> ExitCode {
    if !rendered.is_empty() {
        if loaded {
            println!();
        }
        println!(
            "{}",
            crate::color::diagnostics(rendered.trim_end(), crate::color::enabled(true))
        );
    }
    let errors = count(diagnostics, Severity::Error);
    let warnings = count(diagnostics, Severity::Warning);
    println!();
    println!(
        "{}: {errors} error{}, {warnings} warning{}",
        if errors > 0 { "failed" } else { "ok" },
        plural(errors),
        plural(warnings)
    );
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn count(diagnostics: &[fmrt::dsl::Diagnostic], severity: Severity) -> usize {
    diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
