//! `fmrt likelihood`: log-likelihoods of data under an ONNX velocity model.

use std::process::ExitCode;
use std::time::Instant;

use fmrt::likelihood::Likelihood;
use ndarray::ArrayD;
use serde_json::json;

use crate::args::LikelihoodArgs;
use crate::failure::{fail, Failure};
use crate::npy;
use crate::outcome::{check_partial, Outcome};
use crate::progress::Progress;
use crate::setup::{
    check_batch_shape, check_divergence, condition, describe_adapters, describe_solver,
    divergence_of, fit_rows, open_model, solver_config, steps_word,
};

/// Runs `fmrt likelihood`.
pub fn run(args: &LikelihoodArgs) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    npy::check_output(&args.output)?;
    if let Some(path) = &args.std_error {
        npy::check_distinct_outputs(&[("-o", &args.output), ("--std-error", path)])?;
    }
    let opened = open_model(&args.model, &args.adapt)?;
    let field = opened.field();
    let data = npy::read_f32(&args.data)?;
    let solver = solver_config(&args.solver)?;
    let divergence = divergence_of(&args.divergence);
    let data = match field.state_shape() {
        Some(shape) => {
            let data = fit_rows(data, shape);
            check_batch_shape(&args.data, &data, shape)?;
            data
        }
        None => data,
    };
    check_divergence(&opened, &divergence)?;
    check_partial(args.partial, &solver)?;
    if args.std_error.is_some() && divergence.random_probes().is_none_or(|(k, _)| k < 2) {
        return Err(fail!(
            "--std-error needs a stochastic divergence with at least 2 probes (--divergence \
             hutchinson --probes K, K >= 2): the {} divergence has no standard error{}",
            divergence.name(),
            if divergence.random_probes().is_some() {
                ", and one probe has no spread to measure it from"
            } else {
                ""
            }
        ));
    }
    let n = data.shape()[0];
    let progress = Progress::new(field.clone(), args.t_start, 0.0, args.quiet || args.json);
    let mut likelihood = Likelihood::new(progress.clone(), solver.clone())
        .with_divergence(divergence.clone())
        .with_seed(args.seed)
        .allow_partial(args.partial);
    if let Some(s) = args.adapt.noise_scale {
        likelihood = likelihood.with_noise_scale(s)?;
    }
    if let Some(extras) = condition(&opened, &args.adapt, n)? {
        likelihood = likelihood.with_extras(extras);
    }
    let result = likelihood.log_likelihood_at(data.view(), &[args.t_start]);
    progress.finish();
    let result = result?;

    let log_p = ArrayD::from_shape_vec(vec![n], result.log_p.clone())
        .map_err(|e| format!("internal error: {e}"))?;
    npy::write(&args.output, &log_p)?;
    if let (Some(path), Some(se)) = (&args.std_error, &result.log_p_std_error) {
        let se = ArrayD::from_shape_vec(vec![n], se.clone())
            .map_err(|e| format!("internal error: {e}"))?;
        npy::write(path, &se)?;
    }
    let mut outcome = Outcome::default();
    outcome.add(0, &result.samples);

    // Means over the samples that finished (all of them unless --partial).
    let mean = |v: &[f64]| {
        let done: Vec<f64> = v.iter().copied().filter(|v| !v.is_nan()).collect();
        done.iter().sum::<f64>() / done.len().max(1) as f64
    };
    let std_error = result.log_p_std_error.as_ref().map(|se| {
        let max = se
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(0.0, f64::max);
        json!({ "mean": mean(se), "max": max })
    });
    let summary = json!({
        "output": args.output.display().to_string(),
        "samples": n,
        "mean_log_p": mean(&result.log_p),
        "mean_bits_per_dim": mean(&result.bits_per_dim),
        "divergence": divergence.name(),
        "solver": describe_solver(&solver),
        "nfe": result.stats.nfe,
        "accepted_steps": result.stats.accepted,
        "rejected_steps": result.stats.rejected,
        "std_error": std_error,
        "std_error_output": args.std_error.as_ref().map(|p| p.display().to_string()),
        "per_sample": outcome.json(),
        "model_calls": {
            "velocity": result.calls.velocity,
            "jvp": result.calls.jvp,
            "stacked": result.calls.stacked,
            "divergence": result.calls.divergence,
        },
        "seconds": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{summary}");
    } else if !args.quiet {
        eprintln!(
            "wrote {} [{n}] float64 (log p per sample, nats)",
            args.output.display()
        );
        eprintln!(
            "  mean log p {:.6} nats, {:.6} bits/dim",
            mean(&result.log_p),
            mean(&result.bits_per_dim)
        );
        eprintln!(
            "  model {} on {}{}",
            opened.network().file(),
            opened.network().provider(),
            describe_adapters(&opened)
        );
        eprintln!(
            "  solver {}: {} field evaluations, {} accepted / {} rejected {}, {:.2} s",
            describe_solver(&solver),
            result.stats.nfe,
            result.stats.accepted,
            result.stats.rejected,
            steps_word(&solver),
            started.elapsed().as_secs_f64()
        );
        eprintln!("  model calls: {}", describe_calls(&result.calls));
        if let Some(se) = &std_error {
            eprintln!(
                "  standard error of log p (Hutchinson): mean {:.6}, max {:.6} nats",
                se["mean"].as_f64().unwrap_or(f64::NAN),
                se["max"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    match outcome.report("NaN") {
        Some(report) => {
            eprintln!("fmrt likelihood --partial: {report}");
            Ok(ExitCode::from(4))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The model calls of a likelihood run, e.g. "200 stacked (velocity and
/// J·v in one call)" or "200 velocity, 200 J·v".
fn describe_calls(calls: &fmrt::likelihood::FieldCalls) -> String {
    let parts: Vec<String> = [
        (calls.stacked, "stacked (velocity and J·v in one call)"),
        (calls.velocity, "velocity"),
        (calls.jvp, "J·v"),
        (calls.divergence, "divergence"),
    ]
    .iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}"))
    .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}
