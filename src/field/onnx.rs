//! [`OnnxField`]: a velocity field computed by an ONNX model with ONNX Runtime.
//!
//! The model takes the state `x` (float32 `[B, ...state shape]`), the time `t`
//! (float32 `[B]`, `[B, 1]` or a scalar `[]`) and optionally conditioning inputs
//! ("extras": int64 labels, float32 context), and returns the velocity shaped
//! like `x`. Which input is which is detected from the declared inputs unless
//! the caller or the model's `fmrt.state_input` / `fmrt.time_input` metadata
//! names them. Loading checks the model with a one-sample run.
//!
//! ```no_run
//! use fmrt::field::onnx::OnnxField;
//! use fmrt::field::VelocityField;
//!
//! # fn main() -> fmrt::Result<()> {
//! let field = OnnxField::builder().max_batch(256).load_file("model.onnx")?;
//! let x = ndarray::ArrayD::<f32>::zeros(vec![4, 2]);
//! let mut v = x.clone();
//! field.velocity(x.view(), &[0.5], v.view_mut())?;
//! # Ok(())
//! # }
//! ```
//!
//! The ONNX Runtime library is loaded at run time; see [`runtime`] for where it
//! is looked for and [`provider`] for running on a GPU.

mod jvp;
mod model;
mod null_condition;
pub mod provider;
pub mod runtime;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, CowArray, IxDyn, Slice};
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef};

pub use model::{Dim, InputMapping, MappingSource, ModelDescription, TensorInfo, TimeLayout};
pub use provider::{ExecutionProvider, ProviderPolicy};
pub use runtime::{
    checkout_folders, ensure_runtime_for_development, init_runtime, init_runtime_from, locate,
    ort_environment, runtime_info, LibrarySource, RuntimeInfo, SearchPlaces, FETCH_COMMAND,
};

use super::{ExtraTensor, Extras, VelocityField};
use crate::path::Prediction;
use crate::scheduler::Scheduler;
use crate::{Error, Result};
use null_condition::{NullCondition, NullNumber};

/// Metadata key holding the `.fm` scheduler source the model was trained with.
pub const META_SCHEDULER: &str = "fmrt.scheduler";
/// Metadata key holding what the model predicts (`velocity`, `x1`, `x0`).
pub const META_PREDICTION: &str = "fmrt.prediction";
/// Metadata key naming the state input.
pub const META_STATE_INPUT: &str = "fmrt.state_input";
/// Metadata key naming the time input.
pub const META_TIME_INPUT: &str = "fmrt.time_input";
/// Metadata key holding the null condition for classifier-free guidance.
pub const META_NULL_CONDITION: &str = "fmrt.null_condition";

/// Builds an [`OnnxField`]; every setting is optional.
#[derive(Clone, Debug)]
pub struct OnnxFieldBuilder {
    state_input: Option<String>,
    time_input: Option<String>,
    output: Option<String>,
    state_shape: Option<Vec<usize>>,
    max_batch: usize,
    sessions: usize,
    intra_threads: Option<usize>,
    provider: ExecutionProvider,
    policy: ProviderPolicy,
    ort_library: Option<PathBuf>,
    jvp: bool,
}

impl Default for OnnxFieldBuilder {
    fn default() -> Self {
        Self {
            state_input: None,
            time_input: None,
            output: None,
            state_shape: None,
            max_batch: usize::MAX,
            sessions: 1,
            intra_threads: None,
            provider: ExecutionProvider::Cpu,
            policy: ProviderPolicy::Require,
            ort_library: None,
            jvp: true,
        }
    }
}

impl OnnxFieldBuilder {
    /// Names the state input (overrides `fmrt.state_input` and detection).
    pub fn state_input(mut self, name: impl Into<String>) -> Self {
        self.state_input = Some(name.into());
        self
    }

    /// Names the time input (overrides `fmrt.time_input` and detection).
    pub fn time_input(mut self, name: impl Into<String>) -> Self {
        self.time_input = Some(name.into());
        self
    }

    /// Names the velocity output (default: the first output).
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.output = Some(name.into());
        self
    }

    /// The per-sample state shape, needed only when the model declares
    /// dynamic state axes (e.g. `[B, 3, H, W]`); it must agree with fixed ones.
    pub fn state_shape(mut self, shape: &[usize]) -> Self {
        self.state_shape = Some(shape.to_vec());
        self
    }

    /// The largest batch passed to one model call; larger batches are split
    /// into chunks (default: no limit). Values below 1 count as 1.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// How many ONNX Runtime sessions serve concurrent calls (default 1;
    /// values below 1 count as 1). Each session holds its own copy of the
    /// weights and, unless [`intra_threads`](Self::intra_threads) is set, its
    /// own pool of one thread per core.
    pub fn sessions(mut self, sessions: usize) -> Self {
        self.sessions = sessions.max(1);
        self
    }

    /// Threads ONNX Runtime uses inside one operator (default: its own choice,
    /// one per physical core).
    pub fn intra_threads(mut self, threads: usize) -> Self {
        self.intra_threads = Some(threads);
        self
    }

    /// Where to run the model (default [`ExecutionProvider::Cpu`]).
    pub fn execution_provider(mut self, provider: ExecutionProvider) -> Self {
        self.provider = provider;
        self
    }

    /// What to do when the provider is unavailable (default
    /// [`ProviderPolicy::Require`]: an error).
    pub fn provider_policy(mut self, policy: ProviderPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Loads ONNX Runtime from this file (instead of searching; see
    /// [`runtime`]). Only one library can be loaded per process.
    pub fn ort_library(mut self, path: impl Into<PathBuf>) -> Self {
        self.ort_library = Some(path.into());
        self
    }

    /// Whether to derive the tangent model for exact Jacobian–vector products
    /// (default `true`; its session is created on the first JVP call).
    pub fn with_jvp(mut self, jvp: bool) -> Self {
        self.jvp = jvp;
        self
    }

    /// Loads the model file `path`.
    pub fn load_file(self, path: impl AsRef<Path>) -> Result<OnnxField> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.load(&bytes, path.display().to_string())
    }

    /// Loads a model from its serialized bytes (named `<memory>` in messages).
    pub fn load_bytes(self, bytes: &[u8]) -> Result<OnnxField> {
        self.load(bytes, "<memory>".to_string())
    }

    fn load(self, bytes: &[u8], file: String) -> Result<OnnxField> {
        let (environment, info) = runtime::ort_environment(self.ort_library.as_deref())?;

        // One session first: the model is checked on it before the rest of
        // the pool is created.
        let mut notes = Vec::new();
        let mut provider = self.provider;
        let mut first = match self.make_session(environment, bytes, &file, provider, info) {
            Ok(s) => s,
            Err((message, can_fall_back)) => {
                if !(can_fall_back && self.policy == ProviderPolicy::Prefer) {
                    return Err(*message);
                }
                notes.push(format!("{message}; running on the CPU instead"));
                provider = ExecutionProvider::Cpu;
                self.make_session(environment, bytes, &file, provider, info)
                    .map_err(|(e, _)| *e)?
            }
        };
        let inputs: Vec<TensorInfo> = first
            .inputs()
            .iter()
            .map(|o| TensorInfo::from_outlet(o.name(), o.dtype()))
            .collect();
        let outputs: Vec<TensorInfo> = first
            .outputs()
            .iter()
            .map(|o| TensorInfo::from_outlet(o.name(), o.dtype()))
            .collect();
        let (metadata, producer) = read_metadata(&first, &file)?;
        let meta = |key: &str| {
            metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };

        let (state_i, state_from, time_i, time_from, time_layout) = model::map_inputs(
            &file,
            &inputs,
            model::Choice {
                explicit: self.state_input.as_deref(),
                metadata: meta(META_STATE_INPUT),
            },
            model::Choice {
                explicit: self.time_input.as_deref(),
                metadata: meta(META_TIME_INPUT),
            },
        )?;

        let mut extras = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            if i == state_i || i == time_i {
                continue;
            }
            match input.element {
                Some(TensorElementType::Int64 | TensorElementType::Float32) => {
                    extras.push(input.clone())
                }
                _ => {
                    return Err(Error::model_load(
                        &file,
                        format!(
                            "input `{}` ({} {}) is neither the state nor the time, and extra \
                         inputs must be int64 or float32 tensors. The model's inputs:\n{}",
                            input.name,
                            input.dtype,
                            input.shape_string(),
                            model::list_inputs(&inputs)
                        ),
                    ))
                }
            }
        }

        let output = match &self.output {
            Some(name) => outputs.iter().find(|o| &o.name == name).ok_or_else(|| {
                Error::model_load(
                    &file,
                    format!(
                        "the output `{name}` (set explicitly) is not an output of the model; \
                     its outputs: {}",
                        describe_list(&outputs)
                    ),
                )
            })?,
            None => outputs
                .first()
                .ok_or_else(|| Error::model_load(&file, "the model has no outputs"))?,
        };
        if output.element != Some(TensorElementType::Float32) {
            return Err(Error::model_load(
                &file,
                format!(
                    "the output `{}` is {} {}, but a velocity output must be float32",
                    output.name,
                    output.dtype,
                    output.shape_string()
                ),
            ));
        }

        let state = &inputs[state_i];
        let (state_shape, fixed_batch) = state_layout(&file, state, self.state_shape.as_deref())?;
        let max_batch = if fixed_batch { 1 } else { self.max_batch };

        let prediction = meta(META_PREDICTION)
            .map(|p| {
                p.parse::<Prediction>().map_err(|e| {
                    Error::model_load(
                        &file,
                        format!("metadata `{META_PREDICTION}` = `{p}` is not a prediction: {e}"),
                    )
                })
            })
            .transpose()?;

        let mut field = OnnxField {
            mapping: InputMapping {
                state: state.name.clone(),
                state_from,
                time: inputs[time_i].name.clone(),
                time_from,
                time_layout,
                extras,
                output: output.name.clone(),
            },
            file,
            inputs,
            outputs,
            state_shape,
            max_batch,
            fixed_batch,
            sessions: Vec::new(), // filled once the check run passed
            next_session: AtomicUsize::new(0),
            metadata,
            producer,
            prediction,
            provider: provider.to_string(),
            provider_notes: notes,
            runtime: info,
            jvp: jvp::Jvp::Disabled,
        };
        field.jvp = jvp::Jvp::prepare(&self, bytes, &field.mapping, provider, environment, info);
        field.dry_run(&mut first)?;
        let mut sessions = Vec::with_capacity(self.sessions);
        sessions.push(Mutex::new(first));
        for _ in 1..self.sessions {
            let session = self
                .make_session(environment, bytes, &field.file, provider, info)
                .map_err(|(e, _)| *e)?;
            sessions.push(Mutex::new(session));
        }
        field.sessions = sessions;
        Ok(field)
    }

    /// Creates one session; `Err` carries the error and whether a CPU
    /// fallback may help.
    fn make_session(
        &self,
        environment: &ort::environment::Environment,
        bytes: &[u8],
        file: &str,
        provider: ExecutionProvider,
        info: &RuntimeInfo,
    ) -> std::result::Result<Session, (Box<Error>, bool)> {
        let fail = |e: &dyn std::fmt::Display| {
            (
                Box::new(Error::model_load(file, format!("ONNX Runtime: {e}"))),
                false,
            )
        };
        let mut builder = Session::builder(environment).map_err(|e| fail(&e))?;
        if let Some(n) = self.intra_threads {
            builder = builder.with_intra_threads(n).map_err(|e| fail(&e))?;
        }
        let mut builder = provider::register(builder, provider, &info.library)
            .map_err(|message| (Box::new(Error::model_load(file, message)), true))?;
        builder.commit_from_memory(bytes).map_err(|e| {
            let on_cpu = provider == ExecutionProvider::Cpu;
            (
                Box::new(Error::model_load_from(
                    file,
                    "ONNX Runtime cannot load the model",
                    e,
                )),
                !on_cpu,
            )
        })
    }
}

fn describe_list(infos: &[TensorInfo]) -> String {
    infos
        .iter()
        .map(TensorInfo::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The metadata pairs sorted by key, and the producer.
type Metadata = (Vec<(String, String)>, Option<String>);

fn read_metadata(session: &Session, file: &str) -> Result<Metadata> {
    let fail = |e: ort::Error| Error::model_load_from(file, "cannot read the model's metadata", e);
    let metadata = session.metadata().map_err(fail)?;
    let mut pairs = Vec::new();
    for key in metadata.custom_keys().map_err(fail)? {
        let value = metadata.custom(&key).unwrap_or_default();
        pairs.push((key, value));
    }
    pairs.sort();
    let producer = metadata.producer().filter(|p| !p.is_empty());
    Ok((pairs, producer))
}

/// The per-sample state shape, and whether the batch is fixed to 1.
fn state_layout(
    file: &str,
    state: &TensorInfo,
    given: Option<&[usize]>,
) -> Result<(Vec<usize>, bool)> {
    let fixed_batch = match &state.dims[0] {
        Dim::Fixed(1) => true,
        Dim::Fixed(n) => {
            return Err(Error::model_load(
                file,
                format!(
                    "the state input `{}` has a fixed batch size of {n} ({}); \
                 export the model with a dynamic batch axis",
                    state.name,
                    state.shape_string()
                ),
            ))
        }
        _ => false,
    };
    let declared = &state.dims[1..];
    let shape = match given {
        Some(shape) => {
            let agrees = shape.len() == declared.len()
                && declared
                    .iter()
                    .zip(shape)
                    .all(|(d, &s)| d.fixed().is_none_or(|f| f == s));
            if !agrees {
                return Err(Error::model_load(
                    file,
                    format!(
                        "the given state shape {shape:?} does not fit the state input `{}` {}",
                        state.name,
                        state.shape_string()
                    ),
                ));
            }
            shape.to_vec()
        }
        None => declared
            .iter()
            .map(Dim::fixed)
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                Error::model_load(
                    file,
                    format!(
                        "the state input `{}` {} has dynamic axes besides the batch; \
                     give the per-sample shape with OnnxField::builder().state_shape(..)",
                        state.name,
                        state.shape_string()
                    ),
                )
            })?,
    };
    Ok((shape, fixed_batch))
}

/// A velocity field evaluated by an ONNX model.
///
/// Calls are chunked to at most `max_batch` samples; extras are chunked with
/// them. Times are computed in f64 and cast to f32 at the model boundary. For a
/// model with a scalar time input, samples with different times are run as
/// one model call per group of equal (f32) times.
///
/// Sessions are reused across calls: a pool of `sessions` (default 1) behind
/// mutexes, so concurrent calls beyond the pool size wait. `OnnxField` is
/// `Send + Sync`.
pub struct OnnxField {
    file: String,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    mapping: InputMapping,
    state_shape: Vec<usize>,
    max_batch: usize,
    fixed_batch: bool,
    sessions: Vec<Mutex<Session>>,
    next_session: AtomicUsize,
    metadata: Vec<(String, String)>,
    producer: Option<String>,
    prediction: Option<Prediction>,
    provider: String,
    provider_notes: Vec<String>,
    runtime: &'static RuntimeInfo,
    jvp: jvp::Jvp,
}

impl std::fmt::Debug for OnnxField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxField")
            .field("file", &self.file)
            .field("mapping", &self.mapping)
            .field("state_shape", &self.state_shape)
            .field("max_batch", &self.max_batch)
            .field("sessions", &self.sessions.len())
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// An extra input's rows as passed to one model call.
enum ExtraData<'a> {
    Int64(CowArray<'a, i64, IxDyn>),
    Float32(CowArray<'a, f32, IxDyn>),
}

impl ExtraData<'_> {
    fn rows(&self, rows: std::ops::Range<usize>) -> ExtraData<'_> {
        let slice = Slice::from(rows);
        match self {
            ExtraData::Int64(a) => ExtraData::Int64(a.slice_axis(Axis(0), slice).into()),
            ExtraData::Float32(a) => ExtraData::Float32(a.slice_axis(Axis(0), slice).into()),
        }
    }

    fn select<'s>(&self, rows: &[usize]) -> ExtraData<'s> {
        match self {
            ExtraData::Int64(a) => ExtraData::Int64(a.select(Axis(0), rows).into()),
            ExtraData::Float32(a) => ExtraData::Float32(a.select(Axis(0), rows).into()),
        }
    }

    fn view(&self) -> ExtraData<'_> {
        match self {
            ExtraData::Int64(a) => ExtraData::Int64(a.view().into()),
            ExtraData::Float32(a) => ExtraData::Float32(a.view().into()),
        }
    }
}

/// One extra of a call: its name, whether it has a batch axis, its rows.
struct ExtraArg<'a> {
    name: &'a str,
    batched: bool,
    data: ExtraData<'a>,
}

/// The times of one call, already f32.
enum Times<'a> {
    One(f32),
    PerSample(&'a [f32]),
}

impl OnnxField {
    /// A builder with every setting at its default.
    pub fn builder() -> OnnxFieldBuilder {
        OnnxFieldBuilder::default()
    }

    /// Loads `path` with the default settings.
    pub fn load_file(path: impl AsRef<Path>) -> Result<OnnxField> {
        Self::builder().load_file(path)
    }

    /// The model file (or `<memory>`).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The declared inputs, in graph order.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// The declared outputs, in graph order.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// Which input is the state, which the time, and the extras.
    pub fn mapping(&self) -> &InputMapping {
        &self.mapping
    }

    /// The extra (conditioning) inputs the caller must pass.
    pub fn extra_inputs(&self) -> &[TensorInfo] {
        &self.mapping.extras
    }

    /// The largest batch of one model call: the builder's setting, or 1 for a
    /// model exported with a fixed batch of 1 (which is then run sample by
    /// sample, extras included).
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The number of sessions in the pool.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The execution provider running the model: `CPU` or `CUDA:<device>`.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Notes from choosing the provider, e.g. why CUDA fell back to the CPU
    /// under [`ProviderPolicy::Prefer`] (empty when the request was met).
    pub fn provider_notes(&self) -> &[String] {
        &self.provider_notes
    }

    /// The ONNX Runtime library in use.
    pub fn runtime(&self) -> &RuntimeInfo {
        self.runtime
    }

    /// Every `metadata_props` pair of the model, sorted by key.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The metadata value of `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `.fm` scheduler source stored in `fmrt.scheduler`.
    pub fn scheduler_source(&self) -> Option<&str> {
        self.metadata_value(META_SCHEDULER)
    }

    /// The scheduler stored in `fmrt.scheduler`, parsed with the parameter
    /// `overrides`; `Ok(None)` when the model carries none. Diagnostics name
    /// the file as `MODEL#fmrt.scheduler`.
    pub fn scheduler(&self, overrides: &[(String, f64)]) -> Result<Option<Scheduler>> {
        self.scheduler_source()
            .map(|src| {
                Scheduler::from_source(src, &format!("{}#{META_SCHEDULER}", self.file), overrides)
            })
            .transpose()
    }

    /// What the model predicts according to `fmrt.prediction` (checked at load).
    pub fn prediction(&self) -> Option<Prediction> {
        self.prediction
    }

    /// The raw `fmrt.null_condition` value.
    pub fn null_condition(&self) -> Option<&str> {
        self.metadata_value(META_NULL_CONDITION)
    }

    /// The null condition for classifier-free guidance as extras for a batch
    /// of `batch` samples; `Ok(None)` when the model declares none.
    ///
    /// `fmrt.null_condition` is either a number, used for the model's only
    /// extra input (e.g. `3`: the label 3 for every sample), or a JSON object
    /// mapping extra inputs to numbers (`{"label": 3, "mask": 0.0}`); each
    /// tensor is filled with its number.
    pub fn null_extras(&self, batch: usize) -> Result<Option<Extras>> {
        let Some(raw) = self.null_condition() else {
            return Ok(None);
        };
        let bad = |why: String| {
            Error::model_load(
                &self.file,
                format!("metadata `{META_NULL_CONDITION}` = `{raw}`: {why}"),
            )
        };
        let mut values: Vec<(&TensorInfo, NullNumber)> = Vec::new();
        match null_condition::parse(raw).map_err(|why| bad(why.to_string()))? {
            NullCondition::PerInput(entries) => {
                for (name, value) in entries {
                    let input = self
                        .mapping
                        .extras
                        .iter()
                        .find(|e| e.name == name)
                        .ok_or_else(|| {
                            bad(format!("`{name}` is not an extra input of the model"))
                        })?;
                    values.push((input, value));
                }
            }
            NullCondition::Single(value) => match self.mapping.extras.as_slice() {
                [only] => values.push((only, value)),
                others => {
                    return Err(bad(format!(
                        "a single number needs exactly one extra input, the model has {}",
                        others.len()
                    )))
                }
            },
        }
        let mut extras = Extras::new();
        for (input, value) in values {
            let batched = self.is_batched(input);
            let mut shape = if batched { vec![batch] } else { vec![] };
            for d in input.dims.iter().skip(usize::from(batched)) {
                shape.push(d.fixed().ok_or_else(|| {
                    bad(format!(
                        "input `{}` {} has dynamic axes, so its null tensor cannot be built",
                        input.name,
                        input.shape_string()
                    ))
                })?);
            }
            let tensor = match input.element {
                Some(TensorElementType::Int64) => {
                    let v = value
                        .as_i64()
                        .ok_or_else(|| bad(format!("`{}` needs an integer", input.name)))?;
                    ExtraTensor::Int64(ArrayD::from_elem(shape, v))
                }
                _ => {
                    let v = value.as_f64();
                    ExtraTensor::Float32(ArrayD::from_elem(shape, v as f32))
                }
            };
            extras.insert(input.name.clone(), tensor);
        }
        Ok(Some(extras))
    }

    /// Why the field provides no Jacobian–vector products (`None` when it does):
    /// the unsupported operators of the model, or `with_jvp(false)`.
    pub fn jvp_unavailable_reason(&self) -> Option<&str> {
        self.jvp.unavailable_reason()
    }

    /// Everything about the model for display (`fmrt inspect`).
    pub fn describe(&self) -> ModelDescription {
        ModelDescription {
            file: self.file.clone(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            mapping: self.mapping.clone(),
            state_shape: self.state_shape.clone(),
            producer: self.producer.clone(),
            metadata: self.metadata.clone(),
            provider: self.provider.clone(),
            provider_notes: self.provider_notes.clone(),
            library: self.runtime.library.clone(),
        }
    }

    /// Whether an extra input has a batch axis: a dynamic first axis, or for a
    /// model exported with a fixed batch of 1, a first axis of 1.
    fn is_batched(&self, input: &TensorInfo) -> bool {
        input.has_dynamic_batch()
            || (self.fixed_batch && input.dims.first() == Some(&Dim::Fixed(1)))
    }

    /// Takes a free session from the pool, or waits for one.
    fn session(&self) -> MutexGuard<'_, Session> {
        let n = self.sessions.len();
        let start = self.next_session.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            match self.sessions[(start + k) % n].try_lock() {
                Ok(guard) => return guard,
                // A panic elsewhere while running does not corrupt a session.
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[start]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the model once on one sample of zeros at t = 0.5 and checks the output.
    fn dry_run(&self, session: &mut Session) -> Result<()> {
        let mut shape = vec![1];
        shape.extend_from_slice(&self.state_shape);
        let x = ArrayD::<f32>::zeros(shape.clone());
        let mut out = ArrayD::<f32>::zeros(shape);
        let mut extras = Vec::new();
        for input in &self.mapping.extras {
            let batched = self.is_batched(input);
            let dims: Vec<usize> = input
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if i == 0 && batched {
                        1
                    } else {
                        d.fixed().unwrap_or(1)
                    }
                })
                .collect();
            let data = match input.element {
                Some(TensorElementType::Int64) => ExtraData::Int64(ArrayD::zeros(dims).into()),
                _ => ExtraData::Float32(ArrayD::zeros(dims).into()),
            };
            extras.push(ExtraArg {
                name: &input.name,
                batched,
                data,
            });
        }
        self.run_call(session, x.view(), &Times::One(0.5), &extras, out.view_mut())
            .map_err(|e| match e {
                Error::Field { field, reason } if field == self.file => {
                    Error::model_load(field, reason)
                }
                other => Error::model_load_from(
                    &self.file,
                    "the check run (one sample of zeros, t = 0.5) failed",
                    other,
                ),
            })
    }

    /// Checks the caller's extras against the model's and borrows their rows.
    fn extra_args<'a>(&'a self, extras: &'a Extras, batch: usize) -> Result<Vec<ExtraArg<'a>>> {
        let known = |name: &str| self.mapping.extras.iter().any(|e| e.name == name);
        if let Some((name, _)) = extras.iter().find(|(name, _)| !known(name)) {
            let expected = if self.mapping.extras.is_empty() {
                "it takes no extra inputs".to_string()
            } else {
                format!(
                    "its extra inputs are {}",
                    describe_list(&self.mapping.extras)
                )
            };
            return Err(Error::field(
                &self.file,
                format!("`{name}` is not an input of the model; {expected}",),
            ));
        }
        let mut args = Vec::with_capacity(self.mapping.extras.len());
        for input in &self.mapping.extras {
            let tensor = extras.get(&input.name).ok_or_else(|| {
                Error::field(
                    &self.file,
                    format!(
                        "the model needs the extra input {input}, which was not given \
                     (pass it with Extras::new().with(\"{}\", ..))",
                        input.name
                    ),
                )
            })?;
            if tensor.dtype_name() != input.dtype {
                return Err(Error::field(
                    &self.file,
                    format!(
                        "extra input `{}` is {} {:?}, but the model declares {input}",
                        input.name,
                        tensor.dtype_name(),
                        tensor.shape(),
                    ),
                ));
            }
            let batched = self.is_batched(input);
            if batched && tensor.shape().first() != Some(&batch) {
                return Err(Error::Shape {
                    tensor: input.name.clone(),
                    expected: format!(
                        "[{batch}, ...] (one row per sample; declared {})",
                        input.shape_string()
                    ),
                    actual: tensor.shape().to_vec(),
                });
            }
            let data = match tensor {
                ExtraTensor::Int64(a) => ExtraData::Int64(a.as_standard_layout()),
                ExtraTensor::Float32(a) => ExtraData::Float32(a.as_standard_layout()),
            };
            args.push(ExtraArg {
                name: &input.name,
                batched,
                data,
            });
        }
        Ok(args)
    }

    /// Runs a whole call (any batch size): in chunks of `max_batch`, and for a
    /// scalar-time model once per group of equal times.
    fn run_call(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        if let (TimeLayout::Scalar, Times::PerSample(ts)) = (self.mapping.time_layout, t) {
            let first = ts.first().copied().unwrap_or(0.0);
            if ts.iter().all(|&s| s.to_bits() == first.to_bits()) {
                return self.run_chunks(session, x, &Times::One(first), extras, out);
            }
            let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
            for (i, s) in ts.iter().enumerate() {
                groups.entry(s.to_bits()).or_default().push(i);
            }
            let mut groups: Vec<(u32, Vec<usize>)> = groups.into_iter().collect();
            groups.sort_by_key(|(_, rows)| rows[0]);
            for (bits, rows) in groups {
                let xg = x.select(Axis(0), &rows);
                let eg: Vec<ExtraArg<'_>> = extras
                    .iter()
                    .map(|e| ExtraArg {
                        name: e.name,
                        batched: e.batched,
                        data: if e.batched {
                            e.data.select(&rows)
                        } else {
                            e.data.view()
                        },
                    })
                    .collect();
                let mut og = ArrayD::<f32>::zeros(xg.raw_dim());
                self.run_chunks(
                    session,
                    xg.view(),
                    &Times::One(f32::from_bits(bits)),
                    &eg,
                    og.view_mut(),
                )?;
                for (k, &i) in rows.iter().enumerate() {
                    out.index_axis_mut(Axis(0), i)
                        .assign(&og.index_axis(Axis(0), k));
                }
            }
            return Ok(());
        }
        self.run_chunks(session, x, t, extras, out)
    }

    fn run_chunks(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let batch = x.shape()[0];
        let x = x.as_standard_layout();
        let mut start = 0;
        while start < batch {
            let end = batch.min(start.saturating_add(self.max_batch));
            let rows = start..end;
            let xc = x.slice_axis(Axis(0), Slice::from(rows.clone()));
            let tc = match t {
                Times::One(v) => Times::One(*v),
                Times::PerSample(ts) => Times::PerSample(&ts[rows.clone()]),
            };
            let ec: Vec<ExtraArg<'_>> = extras
                .iter()
                .map(|e| ExtraArg {
                    name: e.name,
                    batched: e.batched,
                    data: if e.batched {
                        e.data.rows(rows.clone())
                    } else {
                        e.data.view()
                    },
                })
                .collect();
            let oc = out.slice_axis_mut(Axis(0), Slice::from(rows));
            self.run_once(session, xc, &tc, &ec, oc)?;
            start = end;
        }
        Ok(())
    }

    /// One model call on a batch of at most `max_batch` samples.
    fn run_once(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let file = &self.file;
        let ort_err = |what: &str, e: ort::Error| Error::field(file, format!("{what}: {e}"));
        let n = x.shape()[0];

        let time_values: Vec<f32> = match (self.mapping.time_layout, t) {
            (TimeLayout::Scalar, Times::One(v)) => vec![*v],
            (TimeLayout::Scalar, Times::PerSample(ts)) => vec![ts.first().copied().unwrap_or(0.0)],
            (_, Times::One(v)) => vec![*v; n],
            (_, Times::PerSample(ts)) => ts.to_vec(),
        };
        let time_shape: Vec<usize> = match self.mapping.time_layout {
            TimeLayout::Scalar => vec![],
            TimeLayout::Batch => vec![n],
            TimeLayout::Column => vec![n, 1],
        };

        let x_owned;
        let x = if x.is_standard_layout() {
            x
        } else {
            x_owned = x.as_standard_layout().into_owned();
            x_owned.view()
        };
        let extra_views: Vec<(&str, ExtraData<'_>)> = extras
            .iter()
            .map(|e| {
                let data = match &e.data {
                    ExtraData::Int64(a) => ExtraData::Int64(a.as_standard_layout()),
                    ExtraData::Float32(a) => ExtraData::Float32(a.as_standard_layout()),
                };
                (e.name, data)
            })
            .collect();

        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(2 + extras.len());
        inputs.push((
            Cow::Borrowed(self.mapping.state.as_str()),
            TensorRef::from_array_view(x)
                .map_err(|e| ort_err("cannot pass the state", e))?
                .into(),
        ));
        inputs.push((
            Cow::Borrowed(self.mapping.time.as_str()),
            TensorRef::from_array_view((time_shape, time_values.as_slice()))
                .map_err(|e| ort_err("cannot pass the time", e))?
                .into(),
        ));
        for (name, data) in &extra_views {
            let value: SessionInputValue<'_> = match data {
                ExtraData::Int64(a) => TensorRef::from_array_view(a)
                    .map_err(|e| ort_err(&format!("cannot pass `{name}`"), e))?
                    .into(),
                ExtraData::Float32(a) => TensorRef::from_array_view(a)
                    .map_err(|e| ort_err(&format!("cannot pass `{name}`"), e))?
                    .into(),
            };
            inputs.push((Cow::Borrowed(*name), value));
        }

        let outputs = session
            .run(inputs)
            .map_err(|e| ort_err("ONNX Runtime failed to run the model", e))?;
        let name = &self.mapping.output;
        let value = outputs
            .get(name)
            .ok_or_else(|| Error::field(file, format!("the model returned no output `{name}`")))?;
        let v = value.try_extract_array::<f32>().map_err(|e| {
            Error::field(
                file,
                format!("the output `{name}` is not a float32 tensor: {e}"),
            )
        })?;
        if v.shape() != out.shape() {
            return Err(Error::field(file, format!("the output `{name}` has shape {:?}, expected {:?} (shaped like the state input `{}`; \
                 a velocity model returns one velocity per state entry)",
                v.shape(),
                out.shape(),
                self.mapping.state
            )));
        }
        out.assign(&v);
        Ok(())
    }
}

impl VelocityField for OnnxField {
    fn state_shape(&self) -> &[usize] {
        &self.state_shape
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.velocity_with(x, t, &Extras::new(), out)
    }

    fn velocity_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let dims = |tail: &[usize]| {
            let d: Vec<String> = tail.iter().map(usize::to_string).collect();
            format!("[B, {}]", d.join(", "))
        };
        if x.ndim() != self.state_shape.len() + 1 || x.shape()[1..] != self.state_shape[..] {
            return Err(Error::Shape {
                tensor: "x".to_string(),
                expected: dims(&self.state_shape),
                actual: x.shape().to_vec(),
            });
        }
        if out.shape() != x.shape() {
            return Err(Error::Shape {
                tensor: "out".to_string(),
                expected: format!("{:?} (the shape of x)", x.shape()),
                actual: out.shape().to_vec(),
            });
        }
        let batch = x.shape()[0];
        if t.len() != 1 && t.len() != batch {
            return Err(Error::Shape {
                tensor: "t".to_string(),
                expected: format!("[1] or [{batch}] (one time for all, or one per sample)"),
                actual: vec![t.len()],
            });
        }
        let args = self.extra_args(extras, batch)?;
        if batch == 0 {
            return Ok(());
        }
        let t32: Vec<f32> = t.iter().map(|&s| s as f32).collect();
        let times = if t32.len() == 1 {
            Times::One(t32[0])
        } else {
            Times::PerSample(&t32)
        };
        let mut session = self.session();
        self.run_call(&mut session, x, &times, &args, out)
    }

    fn provides_jvp(&self) -> bool {
        matches!(self.jvp, jvp::Jvp::Ready(_))
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        jvp::jvp_with(self, x, t, &Extras::new(), v, out)
    }

    fn jvp_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        jvp::jvp_with(self, x, t, extras, v, out)
    }
}
