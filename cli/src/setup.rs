//! The setup `fmrt sample` and `fmrt likelihood` share: opening the model
//! with its adapters, the conditioning, the solver and divergence settings,
//! and the shapes of input arrays. The policy itself (what is refused) lives
//! in the library; this module turns flags into library calls.

use std::sync::Arc;

use fmrt::field::adapt::TimeDirection;
use fmrt::field::onnx::{OnnxField, SearchPlaces};
use fmrt::field::Extras;
use fmrt::grid::{explicit_steps, EdmGrid};
use fmrt::likelihood::Divergence;
use fmrt::model::{Model, ModelOptions};
use fmrt::path::Prediction;
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{AdaptiveOptions, ErrorNorm, Method, SolverConfig, Stepping, Steps};
use ndarray::ArrayD;

use crate::args::{AdaptArgs, DivergenceArgs, ModelArgs, SolverArgs};
use crate::failure::{fail, Failure};
use crate::npy;

/// The divergence mode of the command line's `--divergence`, `--probes`,
/// `--probe-dist` and `--epsilon`.
pub fn divergence_of(args: &DivergenceArgs) -> Divergence {
    args.divergence
        .clone()
        .with_settings(args.probes, args.probe_dist, args.epsilon)
}

/// Fails with the reason, before any run, when `divergence` needs
/// Jacobian–vector products the model cannot provide
/// ([`Divergence::check_available`]), adding the model's own reason.
pub fn check_divergence(model: &Model, divergence: &Divergence) -> Result<(), Failure> {
    divergence
        .check_available(model.field().as_ref())
        .map_err(|e| {
            let network = model.network();
            match (&e, network.jvp_unavailable_reason()) {
                (fmrt::Error::Unsupported { .. }, Some(reason)) => {
                    fmrt::Error::unsupported(format!(
                        "{}: {}; here: {reason}",
                        network.file(),
                        fmrt::error::Report(&e)
                    ))
                }
                _ => e,
            }
            .into()
        })
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
    builder = builder.share_weights(args.share_weights);
    if let Some(max_batch) = args.max_batch {
        builder = builder.max_batch(max_batch);
    }
    if let Some(name) = &args.state_input {
        builder = builder.state_input(name);
    }
    if let Some(name) = &args.time_input {
        builder = builder.time_input(name);
    }
    Ok(builder.load_file(&args.model)?)
}

/// The model with the adapters the command line asks for: `--scheduler`,
/// `--prediction`, `--null-label`/`--null-cond`, `--time-direction` and
/// `--time-scale` override the metadata; `--guidance` and
/// `--sample-scheduler` add their adapters (composed by [`Model`]).
pub fn open_model(model: &ModelArgs, adapt: &AdaptArgs) -> Result<Model, Failure> {
    let network = Arc::new(load_model(model)?);
    if adapt.guidance != 0.0 && adapt.label.is_none() && adapt.cond.is_empty() {
        return Err(fail!(
            "--guidance needs a condition (--label L or --cond NAME=…): guidance steers towards it"
        ));
    }
    if adapt.guidance_interval.is_some() && adapt.guidance == 0.0 {
        return Err(fail!("--guidance-interval needs --guidance W"));
    }
    let options = ModelOptions {
        scheduler: match &adapt.scheduler {
            Some(spec) => Some(Arc::new(Scheduler::open(spec, &adapt.params)?)),
            None => None,
        },
        // --param sets the parameters of --scheduler when it is given, and
        // otherwise those of the model's own scheduler.
        scheduler_params: match &adapt.scheduler {
            Some(_) => Vec::new(),
            None => adapt.params.clone(),
        },
        prediction: match &adapt.prediction {
            Some(p) => Some(p.parse::<Prediction>()?),
            None => None,
        },
        guidance: adapt.guidance,
        guidance_interval: adapt.guidance_interval,
        null_condition: crate::condition::null_condition(&network, adapt)?,
        sample_scheduler: match &adapt.sample_scheduler {
            Some(spec) => Some(Arc::new(Scheduler::open(spec, &[])?)),
            None => None,
        },
        time_direction: match &adapt.time_direction {
            Some(d) => Some(d.parse::<TimeDirection>()?),
            None => None,
        },
        time_scale: adapt.time_scale,
    };
    Ok(Model::new(network, options)?)
}

/// `, x1 prediction, guidance w = 2` for the summary line.
pub fn describe_adapters(model: &Model) -> String {
    let mut text: String = model.adapters().iter().map(|a| format!(", {a}")).collect();
    if model.network().prediction().is_none() && model.prediction() == Prediction::Velocity {
        // A model exported without fmrt's metadata: say what was assumed, so
        // an x1/x0 model read as a velocity does not go unnoticed.
        text.push_str(", output read as velocity (no `fmrt.prediction` metadata; --prediction x1|x0 if it predicts data or noise)");
    }
    text
}

/// The conditioning of `--label` (for `n` samples) and `--cond`, if given.
pub fn condition(model: &Model, adapt: &AdaptArgs, n: usize) -> Result<Option<Extras>, Failure> {
    crate::condition::conditioning(model.network(), adapt, n)
}

/// The solver configuration from `--solver`, `--steps`, `--rtol`, `--atol`
/// and `--grid` (without a schedule: `--grid edm` is refused).
pub fn solver_config(args: &SolverArgs) -> Result<SolverConfig, Failure> {
    solver_config_with(args, None)
}

/// Like [`solver_config`], with the schedule of the field's time for
/// `--grid edm` (whose steps follow the schedule's SNR).
pub fn solver_config_with(
    args: &SolverArgs,
    schedule: Option<&Arc<dyn Schedule>>,
) -> Result<SolverConfig, Failure> {
    let method: Method = args.solver.parse()?;
    if args.grid.is_none() && !args.grid_params.is_empty() {
        return Err(fail!("--grid-param needs --grid"));
    }
    let adaptive = method.is_adaptive() && args.steps.is_none() && args.grid.is_none();
    let adaptive_only = [
        ("--controller", args.controller.is_some()),
        ("--error-norm", args.error_norm.is_some()),
        ("--rtol", args.rtol.is_some()),
        ("--atol", args.atol.is_some()),
        ("--max-steps", args.max_steps.is_some()),
    ];
    if let Some((flag, _)) = adaptive_only.iter().find(|(_, given)| *given && !adaptive) {
        return Err(fail!(
            "{flag} sets the step-size control of adaptive methods; this run takes fixed steps"
        ));
    }
    if let Some(spec) = args.grid.as_deref().filter(|s| is_time_list(s)) {
        if args.steps.is_some() || !args.grid_params.is_empty() {
            return Err(fail!(
                "--grid {spec} is an explicit list of times, which sets the steps itself: drop --steps and --grid-param"
            ));
        }
        if method.is_adaptive() {
            return Err(fail!(
                "--grid {spec} places fixed steps: use a fixed-step --solver (euler, midpoint, heun, rk4)"
            ));
        }
        let times = npy::read_times(std::path::Path::new(spec))?;
        let steps =
            explicit_steps(&times).map_err(|e| fail!("{spec}: {}", fmrt::error::Report(&e)))?;
        return Ok(SolverConfig::fixed(method, steps));
    }
    if args.grid.is_some() && method.is_adaptive() && args.steps.is_none() {
        return Err(fail!(
            "--grid places fixed steps: give --steps N (or a fixed-step --solver such as euler)"
        ));
    }
    if method.is_adaptive() && args.steps.is_none() {
        let defaults = AdaptiveOptions::default();
        Ok(SolverConfig::adaptive_with(
            method,
            AdaptiveOptions {
                rtol: args.rtol.unwrap_or(defaults.rtol),
                atol: args.atol.unwrap_or(defaults.atol),
                norm: match &args.error_norm {
                    Some(name) => name.parse()?,
                    None => defaults.norm,
                },
                controller: match &args.controller {
                    Some(name) => name.parse()?,
                    None => defaults.controller,
                },
                max_steps: args.max_steps.unwrap_or(defaults.max_steps),
                ..defaults
            },
        ))
    } else {
        let steps = args.steps.unwrap_or(100);
        if steps == 0 {
            return Err(fail!("--steps must be at least 1"));
        }
        let placed = match args.grid.as_deref() {
            Some("edm") => {
                let schedule = schedule.ok_or_else(|| {
                    fail!("--grid edm follows the model's schedule (SNR), which is unknown: give --scheduler FILE.fm|BUILTIN")
                })?;
                let edm = EdmGrid::with_params(&args.grid_params)?;
                Steps::Grid(edm.points(schedule.as_ref(), steps)?)
            }
            Some(spec) => fmrt::grid::steps_for(spec, &args.grid_params, method, steps)?,
            None => Steps::Count(steps),
        };
        Ok(SolverConfig::fixed(method, placed))
    }
}

/// Whether a `--grid` value names a file of times (`.npy`, `.csv`) rather
/// than a grid function.
fn is_time_list(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    lower.ends_with(".npy") || lower.ends_with(".csv")
}

/// How the summary names its step counts: with independent adaptive steps
/// they are summed over the samples, each of which takes its own.
pub fn steps_word(config: &SolverConfig) -> &'static str {
    match config.adaptive_options() {
        Some(a) if a.norm == ErrorNorm::Independent => {
            "steps (summed over samples, each on its own steps)"
        }
        _ => "steps",
    }
}

/// A short description of a solver configuration, e.g. `dopri5 (rtol 1e-5, atol 1e-5)`.
pub fn describe_solver(config: &SolverConfig) -> String {
    match &config.stepping {
        Stepping::Adaptive(a) => format!(
            "{} (rtol {:e}, atol {:e})",
            config.method.name(),
            a.rtol,
            a.atol
        ),
        Stepping::Fixed(Steps::Count(n)) => format!("{} ({n} steps)", config.method.name()),
        Stepping::Fixed(Steps::Grid(points)) => format!(
            "{} ({} steps on a grid)",
            config.method.name(),
            points.len().saturating_sub(1)
        ),
        Stepping::Fixed(steps) => format!("{} ({steps:?})", config.method.name()),
    }
}
