//! `fmrt check`: print a scheduler's expressions and every diagnostic.

use std::process::ExitCode;

use fmrt::dsl::Severity;
use fmrt::scheduler;

use crate::args::CheckArgs;
use crate::failure::Failure;

/// Runs `fmrt check`; exit code 0 without errors, 1 with errors.
pub fn run(args: &CheckArgs) -> Result<ExitCode, Failure> {
    let report = scheduler::check(&args.scheduler.scheduler, &args.scheduler.params);
    if let Some(loaded) = &report.scheduler {
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
    let rendered = report.rendered();
    if !rendered.is_empty() {
        if report.scheduler.is_some() {
            println!();
        }
        println!(
            "{}",
            crate::color::diagnostics(rendered.trim_end(), crate::color::enabled(true))
        );
    }
    let errors = count(&report.diagnostics, Severity::Error);
    let warnings = count(&report.diagnostics, Severity::Warning);
    println!();
    println!(
        "{}: {errors} error{}, {warnings} warning{}",
        if report.has_errors() { "failed" } else { "ok" },
        plural(errors),
        plural(warnings)
    );
    Ok(if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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
