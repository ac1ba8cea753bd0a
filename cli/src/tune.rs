//! `fmrt tune`: the work-precision table of a model ([`fmrt::tune`]),
//! printed, as JSON, or drawn.

use std::collections::BTreeMap;
use std::process::ExitCode;

use fmrt::sampler::Sampler;
use fmrt::solver::{Method, SolverConfig, Steps};
use fmrt::tune::{reference_solver, tune, TuneOptions, TuneTable};
use serde_json::json;

use crate::args::TuneArgs;
use crate::failure::{fail, Failure};
use crate::plot;
use crate::setup::{condition, describe_adapters, describe_solver, open_model};

/// Runs `fmrt tune`.
pub fn run(args: &TuneArgs) -> Result<ExitCode, Failure> {
    if let Some(path) = &args.plot {
        plot::check_png(path)?;
    }
    if !(args.reference_tol.is_finite() && args.reference_tol > 0.0) {
        return Err(fail!(
            "--reference-tol must be positive and finite, got {}",
            args.reference_tol
        ));
    }
    let methods = match args.solvers.is_empty() {
        true => Method::ALL.to_vec(),
        false => args
            .solvers
            .iter()
            .map(|name| name.parse::<Method>())
            .collect::<Result<Vec<_>, _>>()?,
    };
    let opened = open_model(&args.model, &args.adapt)?;
    // The candidates replace this placeholder solver.
    let placeholder = SolverConfig::fixed(Method::Euler, Steps::Count(1));
    let mut sampler = Sampler::new(opened.field(), placeholder);
    if !args.shape.is_empty() {
        sampler = sampler.with_state_shape(&args.shape);
    }
    if let Some(s) = args.adapt.noise_scale {
        sampler = sampler.with_noise_scale(s)?;
    }
    if let Some(extras) = condition(&opened, &args.adapt, args.n)? {
        sampler = sampler.with_extras(extras);
    }
    let options = TuneOptions {
        budgets: args.calls.clone(),
        samples: args.n,
        seed: args.seed,
        methods,
        grids: match args.grids.is_empty() {
            true => fmrt::tune::GridSpec::defaults(),
            false => args.grids.clone(),
        },
        reference: reference_solver(args.reference_tol),
        schedule: opened.sampling_schedule().cloned(),
    };
    let table = tune(&sampler, &options)?;
    if let Some(path) = &args.plot {
        plot::work_precision_png(&table, path)?;
    }
    if args.json {
        println!("{}", table_json(&table));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "fmrt tune: {} samples of {}{}",
        table.samples,
        opened.network().file(),
        describe_adapters(&opened)
    );
    println!(
        "reference {}: {} calls, {:.3} s",
        describe_solver(&table.reference.solver),
        table.reference.calls,
        table.reference.seconds
    );
    println!(
        "error: per-sample RMS of x − x_ref over the state's components; median, p99 and max over the samples"
    );
    print_table(&table, args.top);
    print_skipped(&table);
    println!();
    for &budget in &table.budgets {
        match table.best(budget) {
            Some(best) => println!(
                "best for {budget} calls: {} on {} (median {:.3e}, {} steps, {} calls)",
                best.method, best.grid, best.median, best.steps, best.calls
            ),
            None => println!("best for {budget} calls: none (no candidate fits the budget)"),
        }
    }
    if let Some(path) = &args.plot {
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows, `top` per budget (all for 0), as aligned columns.
fn print_table(table: &TuneTable, top: usize) {
    let width = table
        .rows
        .iter()
        .map(|r| r.grid.label().chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    for &budget in &table.budgets {
        let rows: Vec<_> = table.rows_for(budget).collect();
        let shown = if top == 0 {
            rows.len()
        } else {
            top.min(rows.len())
        };
        println!();
        println!(
            "{:>5}  {:<8}  {:<width$}  {:>5}  {:>10}  {:>10}  {:>10}  {:>9}",
            "calls", "method", "grid", "steps", "median", "p99", "max", "seconds"
        );
        for r in &rows[..shown] {
            println!(
                "{:>5}  {:<8}  {:<width$}  {:>5}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>9.4}",
                r.calls,
                r.method.name(),
                r.grid.label(),
                r.steps,
                r.median,
                r.p99,
                r.max,
                r.seconds
            );
        }
        if shown < rows.len() {
            println!(
                "  … {} more for {budget} calls (--top 0 prints all, --json gives all)",
                rows.len() - shown
            );
        }
    }
}

/// The skipped candidates, one line per reason.
fn print_skipped(table: &TuneTable) {
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in &table.skipped {
        let what = format!("{} on {}", s.method, s.grid);
        let entry = by_reason.entry(&s.reason).or_default();
        if !entry.contains(&what) {
            entry.push(what);
        }
    }
    if by_reason.is_empty() {
        return;
    }
    println!();
    for (reason, what) in by_reason {
        let list = if what.len() > 4 {
            format!("{}, … ({} in all)", what[..3].join(", "), what.len())
        } else {
            what.join(", ")
        };
        println!("skipped {list}: {reason}");
    }
}

/// The whole table as JSON.
fn table_json(table: &TuneTable) -> serde_json::Value {
    let grid = |g: &fmrt::tune::GridSpec| {
        json!({
            "name": g.name,
            "params": g.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    };
    json!({
        "samples": table.samples,
        "error": "per-sample RMS of x - x_ref; median, p99 (nearest rank), max over the samples",
        "reference": {
            "solver": describe_solver(&table.reference.solver),
            "calls": table.reference.calls,
            "seconds": table.reference.seconds,
        },
        "rows": table.rows.iter().map(|r| json!({
            "budget": r.budget,
            "method": r.method.name(),
            "grid": grid(&r.grid),
            "steps": r.steps,
            "calls": r.calls,
            "median": finite(r.median),
            "p99": finite(r.p99),
            "max": finite(r.max),
            "seconds": r.seconds,
        })).collect::<Vec<_>>(),
        "skipped": table.skipped.iter().map(|s| json!({
            "budget": s.budget,
            "method": s.method.name(),
            "grid": grid(&s.grid),
            "reason": s.reason,
        })).collect::<Vec<_>>(),
        "best": table.budgets.iter().map(|&b| match table.best(b) {
            Some(r) => json!({
                "budget": b,
                "method": r.method.name(),
                "grid": grid(&r.grid),
                "calls": r.calls,
                "median": finite(r.median),
            }),
            None => json!({ "budget": b, "method": null }),
        }).collect::<Vec<_>>(),
    })
}

/// A number, or null when it is not finite (JSON has no infinities).
fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        serde_json::Value::Null
    }
}
