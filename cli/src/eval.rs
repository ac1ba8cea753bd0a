//! `fmrt eval`: α, σ, α', σ' of a scheduler at given times, as a table or JSON.

use std::process::ExitCode;

use fmrt::scheduler::{Schedule, Scheduler};
use serde_json::{json, Value};

use crate::args::EvalArgs;
use crate::failure::{fail, Failure};

/// Runs `fmrt eval`; exit code 1 when the scheduler does not load.
pub fn run(args: &EvalArgs) -> Result<ExitCode, Failure> {
    if let Some(t) = args.times.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        return Err(fail!("error: --t {t} is outside [0, 1]"));
    }
    let scheduler = match Scheduler::open(&args.scheduler.scheduler, &args.scheduler.params) {
        Ok(s) => s,
        Err(e) => {
            let on = crate::color::enabled(false);
            eprintln!(
                "{}",
                crate::color::diagnostics(&fmrt::error::Report(&e).to_string(), on)
            );
            return Ok(ExitCode::from(1));
        }
    };
    let warnings = scheduler.rendered_warnings();
    if !warnings.is_empty() {
        let on = crate::color::enabled(false);
        eprintln!("{}", crate::color::diagnostics(warnings.trim_end(), on));
    }
    let rows: Vec<[f64; 5]> = args
        .times
        .iter()
        .map(|&t| {
            let c = scheduler.coefficients(t);
            [t, c.alpha, c.sigma, c.d_alpha, c.d_sigma]
        })
        .collect();
    if args.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "t": number(r[0]),
                    "alpha": number(r[1]),
                    "sigma": number(r[2]),
                    "d_alpha": number(r[3]),
                    "d_sigma": number(r[4]),
                })
            })
            .collect();
        println!("{}", Value::Array(list));
    } else {
        println!(
            "{:>8} {:>24} {:>24} {:>24} {:>24}",
            "t", "alpha", "sigma", "d_alpha", "d_sigma"
        );
        for r in &rows {
            println!(
                "{:>8} {:>24} {:>24} {:>24} {:>24}",
                r[0], r[1], r[2], r[3], r[4]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON number, or null for a non-finite value (JSON has no infinities).
fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}
