//! `fmrt sample`: draw samples from an ONNX velocity model.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use fmrt::field::onnx::{OnnxField, SearchPlaces};
use fmrt::field::{ExtraTensor, Extras};
use fmrt::model::{Model, ModelOptions};
use fmrt::path::Prediction;
use fmrt::sampler::{Sampler, TimeSpan};
use fmrt::scheduler::Scheduler;
use fmrt::solver::{AdaptiveOptions, ErrorNorm, Method, SolverConfig, Steps};
use ndarray::ArrayD;
use serde_json::json;

use crate::args::{AdaptArgs, ErrorNormChoice, ModelArgs, SampleArgs, SolverArgs};
use crate::failure::{fail, Failure};
use crate::npy;
use crate::progress::Progress;

/// Runs `fmrt sample`.
pub fn run(args: &SampleArgs) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    npy::check_output(&args.output)?;
    let solver = solver_config(&args.solver)?;
    let opened = open_model(&args.model, &args.adapt)?;
    let model = opened.network().clone();
    let field = opened.field();

    let noise = match &args.noise {
        Some(path) => {
            let x0 = fit_rows(npy::read_f32(path)?, field.state_shape());
            check_batch_shape(path, &x0, field.state_shape())?;
            Some(x0)
        }
        None => None,
    };
    let progress = Progress::new(field.clone(), 0.0, 1.0, args.quiet || args.json);
    let mut sampler = Sampler::new(progress.clone(), solver.clone());
    let n = noise
        .as_ref()
        .map_or(args.n, |x| x.shape().first().copied().unwrap_or(0));
    if let Some(extras) = condition(&opened, &args.adapt, n)? {
        sampler = sampler.with_extras(extras);
    }
    let x0 = match noise {
        Some(x0) => x0,
        None => sampler.draw_noise(n, args.seed)?,
    };
    let samples = sampler.integrate(x0.view(), &TimeSpan::Full, &args.times);
    progress.finish();
    let samples = samples?;

    let written: &ArrayD<f32> = if args.times.is_empty() {
        &samples.x
    } else {
        &samples.trajectory
    };
    npy::write(&args.output, written)?;
    if args.json {
        let summary = json!({
            "output": args.output.display().to_string(),
            "shape": written.shape(),
            "samples": n,
            "model": model.file(),
            "provider": model.provider().to_string(),
            "solver": describe_solver(&solver),
            "nfe": samples.stats.nfe,
            "accepted_steps": samples.stats.accepted,
            "rejected_steps": samples.stats.rejected,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{summary}");
    } else if !args.quiet {
        eprintln!(
            "wrote {} {:?} float32",
            args.output.display(),
            written.shape()
        );
        eprintln!(
            "  model {} on {}{}",
            model.file(),
            model.provider(),
            describe_adapters(&opened)
        );
        eprintln!(
            "  solver {}: {} field evaluations, {} accepted / {} rejected steps, {:.2} s",
            describe_solver(&solver),
            samples.stats.nfe,
            samples.stats.accepted,
            samples.stats.rejected,
            started.elapsed().as_secs_f64()
        );
        for note in model.provider_notes() {
            eprintln!("  note: {note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows of flattened states ([N, prod(state shape)], as a CSV holds them)
/// reshaped to [N, ...state shape]; any other array is returned unchanged.
pub fn fit_rows(array: ArrayD<f32>, state_shape: &[usize]) -> ArrayD<f32> {
    let per_state: usize = state_shape.iter().product();
    if array.ndim() == 2 && state_shape.len() > 1 && array.shape()[1] == per_state {
        let mut shape = vec![array.shape()[0]];
        shape.extend_from_slice(state_shape);
        match array.to_shape(shape) {
            Ok(reshaped) => return reshaped.to_owned(),
            Err(_) => return array,
        }
    }
    array
}

/// Checks that `array` is [N, ...state shape], naming `path` when it is not.
pub fn check_batch_shape(
    path: &std::path::Path,
    array: &ArrayD<f32>,
    state_shape: &[usize],
) -> Result<(), Failure> {
    if array.ndim() != state_shape.len() + 1 || array.shape()[1..] != state_shape[..] {
        return Err(fail!(
            "{}: holds an array of shape {:?}, expected [N, {}] (the model's state shape {:?} with the batch first)",
            path.display(),
            array.shape(),
            state_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            state_shape
        ));
    }
    Ok(())
}

/// Loads an ONNX model with the command line's runtime and provider settings.
pub fn load_model(args: &ModelArgs) -> Result<OnnxField, Failure> {
    let mut builder = OnnxField::builder()
        .execution_provider(args.provider()?)
        .provider_policy(args.policy());
    if let Some(lib) = &args.ort_lib {
        builder = builder.ort_library(lib);
    } else if let Some(checkout) = crate::checkout::source_checkout() {
        // Run from a source checkout: its .ort/lib/ comes before the usual places.
        fmrt::field::onnx::init_runtime_from(&SearchPlaces::development(None, &checkout))?;
    }
    if let Some(threads) = args.threads {
        builder = builder.intra_threads(threads);
    }
    if let Some(max_batch) = args.max_batch {
        builder = builder.max_batch(max_batch);
    }
    Ok(builder.load_file(&args.model)?)
}

/// The model with the adapters the command line asks for: `--scheduler`,
/// `--prediction` and `--null-label` override the metadata; `--guidance` and
/// `--sample-scheduler` add their adapters (composed by [`Model`]).
pub fn open_model(model: &ModelArgs, adapt: &AdaptArgs) -> Result<Model, Failure> {
    let network = Arc::new(load_model(model)?);
    if adapt.guidance != 0.0 && adapt.label.is_none() {
        return Err(fail!(
            "--guidance needs --label: guidance steers towards a condition"
        ));
    }
    let options = ModelOptions {
        scheduler: match &adapt.scheduler {
            Some(spec) => Some(Arc::new(Scheduler::open(spec, &adapt.params)?)),
            None => None,
        },
        scheduler_params: adapt.params.clone(),
        prediction: match &adapt.prediction {
            Some(p) => Some(p.parse::<Prediction>()?),
            None => None,
        },
        guidance: adapt.guidance,
        null_condition: match adapt.null_label {
            Some(label) => Some(label_extras(&network, label, 1)?),
            None => None,
        },
        sample_scheduler: match &adapt.sample_scheduler {
            Some(spec) => Some(Arc::new(Scheduler::open(spec, &[])?)),
            None => None,
        },
    };
    Ok(Model::new(network, options)?)
}

/// `, x1 prediction, guidance w = 2` for the summary line.
pub fn describe_adapters(model: &Model) -> String {
    model.adapters().iter().map(|a| format!(", {a}")).collect()
}

/// The class labels of `--label` for `n` samples, if given.
pub fn condition(model: &Model, adapt: &AdaptArgs, n: usize) -> Result<Option<Extras>, Failure> {
    adapt
        .label
        .map(|label| label_extras(model.network(), label, n))
        .transpose()
}

/// `label` for each of `n` samples, for the model's only int64 extra input.
pub fn label_extras(model: &OnnxField, label: i64, n: usize) -> Result<Extras, Failure> {
    let inputs: Vec<_> = model
        .extra_inputs()
        .iter()
        .filter(|i| i.dtype == "int64")
        .collect();
    match inputs.as_slice() {
        [only] => Ok(Extras::new().with(only.name.clone(), ExtraTensor::labels(&vec![label; n]))),
        [] => Err(fail!("{} has no int64 input to take --label", model.file())),
        many => Err(fail!(
            "{} has several int64 inputs ({}); --label cannot tell which one is the label",
            model.file(),
            many.iter()
                .map(|i| format!("`{}`", i.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The solver configuration from `--solver`, `--steps`, `--rtol`, `--atol`.
pub fn solver_config(args: &SolverArgs) -> Result<SolverConfig, Failure> {
    let method: Method = args
        .solver
        .parse()
        .map_err(|e: fmrt::Error| e.to_string())?;
    if method.is_adaptive() && args.steps.is_none() {
        Ok(SolverConfig::adaptive_with(
            method,
            AdaptiveOptions {
                rtol: args.rtol,
                atol: args.atol,
                norm: match args.error_norm {
                    ErrorNormChoice::Sample => ErrorNorm::PerSample,
                    ErrorNormChoice::Batch => ErrorNorm::Batch,
                },
                ..AdaptiveOptions::default()
            },
        ))
    } else {
        let steps = args.steps.unwrap_or(100);
        if steps == 0 {
            return Err(fail!("--steps must be at least 1"));
        }
        Ok(SolverConfig::fixed(method, Steps::Count(steps)))
    }
}

/// A short description of a solver configuration, e.g. `dopri5 (rtol 1e-5, atol 1e-5)`.
pub fn describe_solver(config: &SolverConfig) -> String {
    match (&config.adaptive, &config.steps) {
        (Some(a), _) => format!(
            "{} (rtol {:e}, atol {:e})",
            config.method.name(),
            a.rtol,
            a.atol
        ),
        (None, Steps::Count(n)) => format!("{} ({n} steps)", config.method.name()),
        (None, steps) => format!("{} ({steps:?})", config.method.name()),
    }
}
