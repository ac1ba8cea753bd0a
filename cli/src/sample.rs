//! `fmrt sample`: draw samples from an ONNX velocity model.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use fmrt::likelihood::Likelihood;
use fmrt::sampler::{chunk_ranges, chunk_rows, Sampler, Samples};
use fmrt::solver::{StatePrecision, Stats};
use fmrt::stochastic::Stochastic;
use ndarray::{ArrayD, Axis, Slice};
use serde_json::json;

use crate::args::SampleArgs;
use crate::failure::{fail, Failure};
use crate::npy;
use crate::outcome::{check_partial, Outcome};
use crate::progress::Progress;
use crate::setup::{
    check_batch_shape, check_divergence, condition, describe_adapters, describe_solver,
    divergence_of, fit_rows, open_model, solver_config_with, steps_word,
};
use crate::stream::RowWriter;

/// Runs `fmrt sample`.
pub fn run(args: &SampleArgs) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    npy::check_output(&args.output)?;
    if let Some(log_prob) = &args.log_prob {
        npy::check_distinct_outputs(&[("-o", &args.output), ("--log-prob", log_prob)])?;
    }
    let opened = open_model(&args.model, &args.adapt)?;
    let solver = solver_config_with(&args.solver, opened.sampling_schedule())?;
    check_partial(args.partial, &solver)?;
    let model = opened.network().clone();
    let field = opened.field();

    let noise = match &args.noise {
        Some(_) if args.first_index != 0 => {
            return Err(fail!(
                "--first-index selects rows of the seeded noise; it cannot be used with --noise"
            ))
        }
        Some(path) => {
            if !args.shape.is_empty() {
                return Err(fail!(
                    "--shape gives the shape for -n; --noise brings its own (drop one of them)"
                ));
            }
            let x0 = npy::read_f32(path)?;
            let x0 = match field.state_shape() {
                Some(shape) => {
                    let x0 = fit_rows(x0, shape);
                    check_batch_shape(path, &x0, shape)?;
                    x0
                }
                None => x0,
            };
            Some(x0)
        }
        None => None,
    };
    if args.log_prob.is_some() {
        if args.sde.is_some() {
            return Err(fail!(
                "--log-prob integrates the divergence along the ODE; it cannot be used with --sde"
            ));
        }
        if !args.times.is_empty() {
            return Err(fail!(
                "--log-prob writes the final samples and their log p; it cannot be used with --times"
            ));
        }
        if args.state_precision == Some(StatePrecision::F32) {
            return Err(fail!(
                "--log-prob integrates the log-density with the state in f64; it cannot be \
                 used with --state-precision f32"
            ));
        }
        npy::check_output(args.log_prob.as_deref().unwrap_or(&args.output))?;
        check_divergence(&opened, &divergence_of(&args.divergence))?;
    }
    let progress = Progress::new(field.clone(), 0.0, 1.0, args.quiet || args.json);
    let mut sampler = Sampler::new(progress.clone(), solver.clone())
        .allow_partial(args.partial)
        .with_state_precision(args.state_precision.unwrap_or_default());
    if !args.shape.is_empty() {
        sampler = sampler.with_state_shape(&args.shape);
    }
    if let Some(s) = args.adapt.noise_scale {
        sampler = sampler.with_noise_scale(s)?;
    }
    if let Some(g) = args.sde {
        if args.noise.is_some() {
            return Err(fail!(
                "--sde draws its noise from --seed; it cannot start from --noise"
            ));
        }
        let schedule = opened.sampling_schedule().ok_or_else(|| {
            fail!(
                "--sde needs the model's schedule for the score, and {} has no `fmrt.scheduler` metadata: give --scheduler FILE.fm|BUILTIN",
                model.file()
            )
        })?;
        sampler = sampler.with_sde(Stochastic::new(schedule.clone(), g)?);
    }
    let n = noise
        .as_ref()
        .map_or(args.n, |x| x.shape().first().copied().unwrap_or(0));
    if let Some(extras) = condition(&opened, &args.adapt, n)? {
        sampler = sampler.with_extras(extras);
    }
    // Samples go through the solver, and into the output files, one chunk
    // at a time: memory holds one chunk whatever -n is.
    let state_shape: Option<Vec<usize>> = match &noise {
        Some(z) => Some(z.shape()[1..].to_vec()),
        None => sampler
            .state_shape()
            .or(field.state_shape())
            .map(<[usize]>::to_vec),
    };
    let chunk = match (args.chunk, &state_shape) {
        (Some(rows), _) => rows,
        (None, Some(shape)) => chunk_rows(shape.iter().product()),
        // The shape is missing: the library says so on the first chunk.
        (None, None) => n.max(1),
    };
    let mut rows_shape = vec![n];
    rows_shape.extend(state_shape.iter().flatten());
    let outputs = Outputs::create(args, &rows_shape, n)?;
    let result = match &args.log_prob {
        Some(_) => sample_with_log_prob(
            args,
            &sampler,
            progress.clone(),
            noise,
            &rows_shape,
            chunk,
            outputs,
        ),
        None => sample_to_files(args, &sampler, noise, &rows_shape, chunk, outputs),
    };
    progress.finish();
    let (stats, written_shape, outcome) = result?;

    if args.json {
        let summary = json!({
            "output": args.output.display().to_string(),
            "shape": written_shape,
            "samples": n,
            "model": model.file(),
            "provider": model.provider().to_string(),
            "solver": describe_solver(&solver),
            "sde": args.sde,
            "state_precision": sampler.state_precision().name(),
            "log_prob": args.log_prob.as_ref().map(|p| p.display().to_string()),
            "nfe": stats.nfe,
            "accepted_steps": stats.accepted,
            "rejected_steps": stats.rejected,
            "per_sample": outcome.json(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{summary}");
    } else if !args.quiet {
        eprintln!(
            "wrote {} {:?} float32",
            args.output.display(),
            written_shape
        );
        if let Some(path) = &args.log_prob {
            eprintln!(
                "wrote {} [{n}] float64 (log p per sample, nats)",
                path.display()
            );
        }
        eprintln!(
            "  model {} on {}{}",
            model.file(),
            model.provider(),
            describe_adapters(&opened)
        );
        // How the solver ran beside its method and steps.
        let mut how = args
            .sde
            .map_or_else(String::new, |g| format!(", stochastic (SDE, G = {g})"));
        if sampler.state_precision() != StatePrecision::F64 {
            how.push_str(&format!(", {} state", sampler.state_precision()));
        }
        eprintln!(
            "  solver {}{how}: {} field evaluations, {} accepted / {} rejected {}, {:.2} s",
            describe_solver(&solver),
            stats.nfe,
            stats.accepted,
            stats.rejected,
            steps_word(&solver),
            started.elapsed().as_secs_f64()
        );
        for note in model.provider_notes() {
            eprintln!("  note: {note}");
        }
    }
    let rows = if args.log_prob.is_some() {
        "the states where they stopped (log p NaN)"
    } else {
        "the states where they stopped"
    };
    match outcome.report(rows) {
        Some(report) => {
            eprintln!("fmrt sample --partial: {report}");
            Ok(ExitCode::from(4))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The files `fmrt sample` writes, open for rows: the samples (final states;
/// trajectories are gathered whole, being times-major) and log p.
struct Outputs {
    samples: Option<RowWriter>,
    log_prob: Option<RowWriter>,
}

impl Outputs {
    /// Opens the final-state and log-p writers for `n` samples of
    /// `rows_shape` (`[n, ...state]`).
    fn create(args: &SampleArgs, rows_shape: &[usize], n: usize) -> Result<Self, Failure> {
        // A file holds at most i64::MAX bytes: -n beyond that is no run.
        let bytes = rows_shape
            .iter()
            .chain(&[args.times.len().max(1), std::mem::size_of::<f32>()])
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .filter(|&b| i64::try_from(b).is_ok());
        if bytes.is_none() {
            return Err(fail!(
                "-n {n}: the samples {rows_shape:?} would be more than the 2^63 bytes a file can hold"
            ));
        }
        let samples = match args.times.is_empty() {
            true => Some(RowWriter::create::<f32>(&args.output, rows_shape)?),
            false => None,
        };
        let log_prob = match &args.log_prob {
            Some(path) => Some(RowWriter::create::<f64>(path, &[n])?),
            None => None,
        };
        Ok(Outputs { samples, log_prob })
    }
}

/// Samples in chunks into the output file: each chunk's final states are
/// appended as it finishes; with `--times` the chunks' trajectories are
/// gathered (`[len(times), n, ...]`) and written at the end. `rows_shape`
/// is `[n, ...state]`. Returns the statistics and the shape written.
fn sample_to_files(
    args: &SampleArgs,
    sampler: &Sampler,
    noise: Option<ArrayD<f32>>,
    rows_shape: &[usize],
    chunk: usize,
    outputs: Outputs,
) -> Result<(Stats, Vec<usize>, Outcome), Failure> {
    let n = rows_shape[0];
    let mut written = rows_shape.to_vec();
    let mut outcome = Outcome::default();
    let first = if noise.is_some() { 0 } else { args.first_index };
    let mut writer = outputs.samples;
    let mut trajectory = match writer {
        Some(_) => None,
        None => {
            written.insert(0, args.times.len());
            Some(zeros_checked(&written)?)
        }
    };
    let mut sink = |offset: usize, samples: Samples| -> Result<(), Failure> {
        outcome.add(first + offset as u64, &samples.samples);
        match (&mut writer, &mut trajectory) {
            (Some(writer), _) => writer.append(&samples.x),
            (None, Some(whole)) => {
                let rows = Slice::from(offset..offset + samples.x.shape()[0]);
                whole
                    .slice_axis_mut(Axis(1), rows)
                    .assign(&samples.trajectory);
                Ok(())
            }
            (None, None) => Err(fail!("internal error: sampling without an output")),
        }
    };
    let stats = match &noise {
        Some(z) => sampler.sample_from_noise_chunks(z.view(), &args.times, chunk, &mut sink)?,
        None => sampler.sample_chunks(
            args.first_index,
            n,
            args.seed,
            &args.times,
            chunk,
            &mut sink,
        )?,
    };
    match (writer, trajectory) {
        (Some(writer), _) => writer.finish()?,
        (None, Some(whole)) => npy::write(&args.output, &whole)?,
        (None, None) => return Err(fail!("internal error: sampling without an output")),
    }
    Ok((stats, written, outcome))
}

/// Zeros of `shape`, or an error when they cannot be allocated.
fn zeros_checked(shape: &[usize]) -> Result<ArrayD<f32>, Failure> {
    fmrt::error::check_allocation(shape, std::mem::size_of::<f32>(), "the trajectories")?;
    Ok(ArrayD::zeros(shape))
}

/// Samples with log p of each in one forward solve per chunk (the sampler's
/// field, solver and extras; `--divergence` options; probes from `--seed`,
/// per sample index), appending both to their files as each chunk ends.
fn sample_with_log_prob(
    args: &SampleArgs,
    sampler: &Sampler,
    field: Arc<Progress>,
    noise: Option<ArrayD<f32>>,
    rows_shape: &[usize],
    chunk: usize,
    outputs: Outputs,
) -> Result<(Stats, Vec<usize>, Outcome), Failure> {
    let n = rows_shape[0];
    let mut outcome = Outcome::default();
    let (Some(mut samples_out), Some(mut log_p_out)) = (outputs.samples, outputs.log_prob) else {
        return Err(fail!("internal error: --log-prob without its output files"));
    };
    let likelihood = Likelihood::new(field, sampler.solver().clone())
        .with_divergence(divergence_of(&args.divergence))
        .with_seed(args.seed)
        .with_source(sampler.source().clone())
        .allow_partial(sampler.partial());
    let mut stats = Stats::default();
    for range in chunk_ranges(n, chunk) {
        let first = args
            .first_index
            .checked_add(range.start as u64)
            .ok_or_else(|| {
                fail!(
                    "--first-index {} + {n} does not fit in 64 bits",
                    args.first_index
                )
            })?;
        let x0 = match &noise {
            Some(z) => z
                .slice_axis(Axis(0), Slice::from(range.clone()))
                .mapv(|v| v * sampler.noise_scale() as f32),
            None => sampler.draw_noise_rows(first, range.len(), args.seed)?,
        };
        let out = likelihood
            .clone()
            .with_first_index(first)
            .with_extras(sampler.extras().for_rows(n, range.clone())?)
            .sample_with_log_prob(x0.view())?;
        stats += out.stats;
        outcome.add(
            if noise.is_some() {
                range.start as u64
            } else {
                first
            },
            &out.samples,
        );
        samples_out.append(&out.x)?;
        let log_p = ArrayD::from_shape_vec(vec![out.log_p.len()], out.log_p)
            .map_err(|e| fail!("internal error: {e}"))?;
        log_p_out.append(&log_p)?;
    }
    samples_out.finish()?;
    log_p_out.finish()?;
    Ok((stats, rows_shape.to_vec(), outcome))
}
