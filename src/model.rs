//! [`Model`]: a network as users export it, turned into the velocity field to
//! integrate.
//!
//! An exported model says in its `fmrt.*` metadata how it was trained: the
//! scheduler, what it predicts (velocity, x1 or x0) and the null condition for
//! classifier-free guidance. [`Model`] reads them, lets the caller override
//! each ([`ModelOptions`]), and composes the adapters in the one right order:
//!
//! ```text
//! network ──► its clock ──► prediction → velocity ──► guidance ──► schedule change
//!             (Clock:       (Predicted, trained      (Guided)     (ScheduleChange, to the
//!              direction,    schedule)                             sampling schedule)
//!              time scale)
//! ```
//!
//! The CLI and the C API build their fields through it, so a model samples
//! and scores the same from Rust, C and the shell.
//!
//! ```no_run
//! use fmrt::model::{Model, ModelOptions};
//! use fmrt::solver::{Method, SolverConfig};
//!
//! # fn main() -> fmrt::Result<()> {
//! let model = Model::open("model.onnx", ModelOptions::default())?;
//! let sampler = model.sampler(SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5));
//! let samples = sampler.sample(1000, 42)?;
//! # let _ = samples;
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::sync::Arc;

use crate::field::adapt::{Clock, Guided, Predicted, ScheduleChange, TimeDirection};
use crate::field::onnx::{OnnxField, OnnxFieldBuilder, META_TIME_DIRECTION, META_TIME_SCALE};
use crate::field::{Extras, NullCondition, VelocityField};
use crate::likelihood::Likelihood;
use crate::path::Prediction;
use crate::sampler::Sampler;
use crate::scheduler::Schedule;
use crate::solver::SolverConfig;
use crate::{Error, Result};

/// The caller's settings; each one set here overrides the model's metadata.
#[derive(Clone, Default)]
pub struct ModelOptions {
    /// The schedule the model was trained with (default: `fmrt.scheduler`).
    pub scheduler: Option<Arc<dyn Schedule>>,
    /// Parameter overrides for the metadata's scheduler (`param` values);
    /// an error with [`scheduler`](Self::scheduler) given (its parameters
    /// are set when it is loaded) or a model without `fmrt.scheduler`.
    pub scheduler_params: Vec<(String, f64)>,
    /// What the network predicts (default: `fmrt.prediction`, else velocity).
    pub prediction: Option<Prediction>,
    /// The classifier-free guidance scale w (0: no guidance, the default).
    pub guidance: f64,
    /// Apply guidance only for times t in [a, b] (default: every time); the
    /// times are those of the model's own (training) schedule, which the
    /// guidance adapter sees. Needs `guidance` ≠ 0.
    pub guidance_interval: Option<[f64; 2]>,
    /// The null condition for guidance: zeros, a fill value or a tensor for
    /// each input it names (default: `fmrt.null_condition`).
    pub null_condition: Option<NullCondition>,
    /// Sample along this schedule instead of the training one.
    pub sample_scheduler: Option<Arc<dyn Schedule>>,
    /// Which way the network's time runs (default: `fmrt.time_direction`,
    /// else forward); see [`Clock`].
    pub time_direction: Option<TimeDirection>,
    /// The factor K of the network's time input (default: `fmrt.time_scale`,
    /// else 1; SD3: 1000).
    pub time_scale: Option<f64>,
}

impl std::fmt::Debug for ModelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelOptions")
            .field("scheduler", &self.scheduler.is_some())
            .field("scheduler_params", &self.scheduler_params)
            .field("prediction", &self.prediction)
            .field("guidance", &self.guidance)
            .field("guidance_interval", &self.guidance_interval)
            .field(
                "null_condition",
                &self.null_condition.as_ref().map(NullCondition::describe),
            )
            .field("sample_scheduler", &self.sample_scheduler.is_some())
            .field("time_direction", &self.time_direction)
            .field("time_scale", &self.time_scale)
            .finish()
    }
}

/// One adapter of a model's chain, for display and for callers that need to
/// know what runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Adapter {
    /// The network runs on its own clock: its time direction and scale.
    Clock(TimeDirection, f64),
    /// The network's x1 or x0 prediction is converted to a velocity.
    Prediction(Prediction),
    /// Classifier-free guidance with scale w.
    Guidance(f64),
    /// Sampling along another schedule than the training one.
    ScheduleChange,
}

impl std::fmt::Display for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Adapter::Clock(direction, scale) => {
                write!(f, "network clock: {direction}, time × {scale}")
            }
            Adapter::Prediction(p) => write!(f, "{p} prediction"),
            Adapter::Guidance(w) => write!(f, "guidance w = {w}"),
            Adapter::ScheduleChange => f.write_str("schedule change"),
        }
    }
}

/// A network and the adapters that make it the velocity field to integrate.
pub struct Model {
    network: Arc<OnnxField>,
    trained: Option<Arc<dyn Schedule>>,
    sampled: Option<Arc<dyn Schedule>>,
    prediction: Prediction,
    adapters: Vec<Adapter>,
    field: Arc<dyn VelocityField>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("file", &self.network.file())
            .field("prediction", &self.prediction)
            .field("adapters", &self.adapters)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Opens the ONNX model file `path` with default ONNX settings.
    pub fn open(path: impl AsRef<Path>, options: ModelOptions) -> Result<Model> {
        Model::open_with(OnnxField::builder(), path, options)
    }

    /// Opens the ONNX model file `path` with the ONNX settings of `builder`
    /// (provider, threads, input names…).
    pub fn open_with(
        builder: OnnxFieldBuilder,
        path: impl AsRef<Path>,
        options: ModelOptions,
    ) -> Result<Model> {
        Model::new(Arc::new(builder.load_file(path)?), options)
    }

    /// A model from its serialized bytes.
    pub fn from_bytes(
        builder: OnnxFieldBuilder,
        bytes: &[u8],
        options: ModelOptions,
    ) -> Result<Model> {
        Model::new(Arc::new(builder.load_bytes(bytes)?), options)
    }

    /// The chain for a loaded network: metadata read, `options` applied.
    ///
    /// Errors: an x1/x0 prediction or a schedule change without a known
    /// training schedule, guidance without a null condition, or a scheduler in
    /// the metadata that does not load.
    pub fn new(network: Arc<OnnxField>, options: ModelOptions) -> Result<Model> {
        let (direction, scale) = clock_of(&network, &options)?;
        let trained = match (options.scheduler, options.scheduler_params.is_empty()) {
            (Some(_), false) => {
                return Err(Error::InvalidArgument(
                    "scheduler_params (--param) override the parameters of the model's \
                     `fmrt.scheduler` metadata, and a scheduler was given instead: give its \
                     parameters when loading it (Scheduler::open(spec, params))"
                        .to_string(),
                ))
            }
            (Some(s), true) => Some(s),
            (None, _) => match network.scheduler(&options.scheduler_params)? {
                Some(s) => Some(Arc::new(s) as Arc<dyn Schedule>),
                None if !options.scheduler_params.is_empty() => {
                    return Err(Error::InvalidArgument(format!(
                        "scheduler_params (--param) override the parameters of the model's \
                         `fmrt.scheduler` metadata, and {} has none: give the training \
                         scheduler with its parameters instead (--scheduler FILE.fm|BUILTIN)",
                        network.file()
                    )))
                }
                None => None,
            },
        };
        let need_schedule = |what: &str| {
            Error::InvalidArgument(format!(
                "{what} needs the schedule the model was trained with, and {} has no \
                 `fmrt.scheduler` metadata: give the training scheduler (--scheduler \
                 FILE.fm|BUILTIN)",
                network.file()
            ))
        };
        let prediction = options
            .prediction
            .or_else(|| network.prediction())
            .unwrap_or(Prediction::Velocity);

        let mut field: Arc<dyn VelocityField> = network.clone();
        let mut adapters = Vec::new();
        if direction != TimeDirection::Forward || scale != 1.0 {
            field = Arc::new(Clock::new(field, direction, scale, prediction)?);
            adapters.push(Adapter::Clock(direction, scale));
        }
        if prediction != Prediction::Velocity {
            let schedule = trained
                .clone()
                .ok_or_else(|| need_schedule(&format!("converting {prediction} predictions")))?;
            field = Arc::new(Predicted::new(field, schedule, prediction));
            adapters.push(Adapter::Prediction(prediction));
        }
        if options.guidance != 0.0 {
            let null = match options.null_condition {
                Some(null) => null,
                None => network.null_condition_spec()?.ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "guidance needs a null condition, and {} declares none \
                         (`fmrt.null_condition`): give one (--null-cond NAME=zeros|fill:V|FILE.npy, \
                         or --null-label L)",
                        network.file()
                    ))
                })?,
            };
            let mut guided = Guided::with_null(field, options.guidance, null)?;
            if let Some([a, b]) = options.guidance_interval {
                guided = guided.with_interval(a, b)?;
            }
            field = Arc::new(guided);
            adapters.push(Adapter::Guidance(options.guidance));
        }
        if options.guidance == 0.0 && options.guidance_interval.is_some() {
            return Err(Error::InvalidArgument(
                "a guidance interval needs a guidance scale w ≠ 0 (--guidance W)".to_string(),
            ));
        }
        let mut sampled = trained.clone();
        if let Some(along) = options.sample_scheduler {
            let schedule = trained
                .clone()
                .ok_or_else(|| need_schedule("sampling along another schedule"))?;
            field = Arc::new(ScheduleChange::new(field, schedule, along.clone()));
            adapters.push(Adapter::ScheduleChange);
            sampled = Some(along);
        }
        Ok(Model {
            network,
            trained,
            sampled,
            prediction,
            adapters,
            field,
        })
    }

    /// The network itself (inputs, metadata, provider).
    pub fn network(&self) -> &Arc<OnnxField> {
        &self.network
    }

    /// The velocity field to integrate: the network with its adapters.
    pub fn field(&self) -> Arc<dyn VelocityField> {
        self.field.clone()
    }

    /// The schedule the model was trained with, if known.
    pub fn trained_schedule(&self) -> Option<&Arc<dyn Schedule>> {
        self.trained.as_ref()
    }

    /// The schedule of the field's time: the sampling schedule when the
    /// model is sampled along another one, else the training schedule (if
    /// known). Stochastic sampling needs it.
    pub fn sampling_schedule(&self) -> Option<&Arc<dyn Schedule>> {
        self.sampled.as_ref()
    }

    /// What the network predicts.
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }

    /// The adapters in the chain, in the order they apply.
    pub fn adapters(&self) -> &[Adapter] {
        &self.adapters
    }

    /// `extras` as the network takes them: the inputs it declares without a
    /// batch axis marked shared (see [`OnnxField::conditioning`]).
    pub fn conditioning(&self, extras: &Extras) -> Extras {
        self.network.conditioning(extras)
    }

    /// A sampler of the model's field with `solver`.
    pub fn sampler(&self, solver: SolverConfig) -> Sampler {
        Sampler::new(self.field(), solver)
    }

    /// Log-likelihoods under the model's field with `solver`.
    pub fn likelihood(&self, solver: SolverConfig) -> Likelihood {
        Likelihood::new(self.field(), solver)
    }
}

/// The network's clock: the caller's settings, else the model's metadata,
/// else fmrt's own (forward, unscaled).
fn clock_of(network: &OnnxField, options: &ModelOptions) -> Result<(TimeDirection, f64)> {
    let bad = |key: &str, value: &str, why: String| {
        Error::model_load(
            network.file(),
            format!("metadata `{key}` = `{value}`: {why}"),
        )
    };
    let direction = match options.time_direction {
        Some(d) => d,
        None => match network.metadata_value(META_TIME_DIRECTION) {
            Some(raw) => raw
                .parse()
                .map_err(|e: Error| bad(META_TIME_DIRECTION, raw, e.to_string()))?,
            None => TimeDirection::Forward,
        },
    };
    let scale = match options.time_scale {
        Some(k) => k,
        None => match network.metadata_value(META_TIME_SCALE) {
            Some(raw) => raw
                .trim()
                .parse::<f64>()
                .map_err(|e| bad(META_TIME_SCALE, raw, e.to_string()))?,
            None => 1.0,
        },
    };
    crate::field::adapt::check_time_scale(scale)?;
    Ok((direction, scale))
}
