//! [`OnnxFieldBuilder`]: the settings of an ONNX model field, and loading a
//! model with them (sessions, input mapping, metadata, the check run).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::TensorElementType;

use super::metadata::read_metadata;
use super::pool::SessionPool;
use super::weights::SharedWeights;
use super::{
    jvp, model, provider, runtime, Dim, ExecutionProvider, InputMapping, OnnxField, ProviderPolicy,
    RuntimeInfo, TensorInfo, META_PREDICTION, META_STATE_INPUT, META_TIME_INPUT,
};
use crate::path::Prediction;
use crate::{Error, Result};

/// Where a model's ONNX Runtime session is created from.
#[derive(Clone, Debug)]
pub(super) enum ModelSource {
    /// A model file, opened by ONNX Runtime (external data is found beside it).
    File(PathBuf),
    /// Serialized bytes given by the caller.
    Bytes(Arc<[u8]>),
    /// A model fmrt derived (the tangent model), serialized, whose external
    /// data (if any) lives in `folder`, beside the file it was derived from.
    Derived { bytes: Vec<u8>, folder: PathBuf },
}

/// ONNX Runtime's session option naming the folder where a model loaded from
/// memory finds its external data files.
const EXTERNAL_DATA_FOLDER: &str = "session.model_external_initializers_file_folder_path";

/// The default largest batch of one model call: 16 384 rows, so a call on a
/// million tabular samples holds ONNX Runtime's activations of 16 384 rows
/// at a time (64 MiB per 1 024-wide hidden layer), while calls of the batch
/// sizes models are run at go through whole.
pub const DEFAULT_MAX_BATCH: usize = 16_384;

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
    spinning: Option<bool>,
    provider: ExecutionProvider,
    policy: ProviderPolicy,
    ort_library: Option<PathBuf>,
    pub(super) jvp: bool,
    share_weights: bool,
    /// External weights shared by every session of the model being loaded.
    shared_weights: Option<Arc<SharedWeights>>,
}

impl Default for OnnxFieldBuilder {
    fn default() -> Self {
        Self {
            state_input: None,
            time_input: None,
            output: None,
            state_shape: None,
            max_batch: DEFAULT_MAX_BATCH,
            sessions: 1,
            intra_threads: None,
            spinning: None,
            provider: ExecutionProvider::Cpu,
            policy: ProviderPolicy::Require,
            ort_library: None,
            jvp: true,
            share_weights: false,
            shared_weights: None,
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
    /// into chunks (default [`DEFAULT_MAX_BATCH`], which keeps ONNX
    /// Runtime's intermediate tensors bounded whatever the batch; a fixed
    /// batch of the export overrides it). Values below 1 count as 1;
    /// `usize::MAX` lifts the limit.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// How many ONNX Runtime sessions serve concurrent calls (default 1;
    /// values below 1 count as 1). Each session holds its own copy of the
    /// weights and, unless [`intra_threads`](Self::intra_threads) is set, its
    /// own pool of one thread per core. The tangent models of derivatives
    /// (JVPs, the stacked likelihood stage) open as many sessions each.
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

    /// Whether ONNX Runtime's intra-op threads spin while waiting for work.
    /// Spinning answers back-to-back calls sooner but keeps the cores busy
    /// between them. Default: ONNX Runtime's choice (spin) for the velocity
    /// sessions, no spinning for the tangent sessions of derivatives, which
    /// measured 2–3× faster per likelihood stage without it on a busy 2-core
    /// machine (`cargo bench --bench stage_cost`).
    pub fn spinning(mut self, spinning: bool) -> Self {
        self.spinning = Some(spinning);
        self
    }

    /// How many sessions of each model (velocity, tangent) to open.
    pub(super) fn session_count(&self) -> usize {
        self.sessions
    }

    /// The settings of the tangent sessions: these, with spinning off unless
    /// the caller chose.
    pub(super) fn for_tangent(&self) -> OnnxFieldBuilder {
        let mut builder = self.clone();
        builder.spinning = builder.spinning.or(Some(false));
        builder
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

    /// Keeps one copy of the model's external-data weights for all its
    /// sessions (default `false`).
    ///
    /// ONNX Runtime loads and pre-packs the weights once per session: the
    /// velocity session, each session of [`sessions`](Self::sessions), and
    /// each tangent model's session for derivatives. With sharing on, fmrt
    /// reads each float tensor stored as external data once and hands the
    /// same buffer to every session, with pre-packing off. Measured on a model
    /// with 209 MB of external weights (README, "Large models"): peak memory
    /// 1.17× the weights after sampling and 1.18× after a JVP, against 1.66×
    /// and 3.17× without. The price is speed at small batches, where matrix
    /// products now pack their weights on every call (about +50% per call at
    /// batch 16 there, +7% at batch 256). Models without external data are
    /// loaded as usual.
    pub fn share_weights(mut self, share: bool) -> Self {
        self.share_weights = share;
        self
    }

    /// Whether to derive the tangent model for exact Jacobian–vector products
    /// (default `true`; its session is created on the first JVP call).
    pub fn with_jvp(mut self, jvp: bool) -> Self {
        self.jvp = jvp;
        self
    }

    /// Loads the model file `path`.
    ///
    /// ONNX Runtime opens the file itself, so weights stored beside it as
    /// external data (`onnx.save(..., save_as_external_data=True)`, every
    /// model over 2 GB) are found, and fmrt keeps no copy of the model.
    pub fn load_file(self, path: impl AsRef<Path>) -> Result<OnnxField> {
        let path = path.as_ref();
        // A clear I/O error for a missing or unreadable file, before ONNX
        // Runtime reports it in its own words.
        std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.load(
            ModelSource::File(path.to_path_buf()),
            path.display().to_string(),
        )
    }

    /// Loads a model from its serialized bytes (named `<memory>` in messages).
    ///
    /// With Jacobian–vector products enabled (the default), the field keeps a
    /// copy of the bytes to derive its tangent model on the first derivative
    /// call; load from a file, or call `with_jvp(false)`, to avoid that copy.
    pub fn load_bytes(self, bytes: &[u8]) -> Result<OnnxField> {
        self.load(ModelSource::Bytes(Arc::from(bytes)), "<memory>".to_string())
    }

    fn load(mut self, source: ModelSource, file: String) -> Result<OnnxField> {
        let (environment, info) = runtime::ort_environment(self.ort_library.as_deref())?;
        if let (true, ModelSource::File(path)) = (self.share_weights, &source) {
            self.shared_weights = SharedWeights::read(path);
        }

        // One session first: the model is checked on it before the rest of
        // the pool is created.
        let mut notes = Vec::new();
        let mut provider = self.provider;
        let mut first = match self.make_session(environment, &source, &file, provider, info) {
            Ok(s) => s,
            Err((message, can_fall_back)) => {
                if !(can_fall_back && self.policy == ProviderPolicy::Prefer) {
                    return Err(*message);
                }
                notes.push(format!("{message}; running on the CPU instead"));
                provider = ExecutionProvider::Cpu;
                self.make_session(environment, &source, &file, provider, info)
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
            match crate::field::ExtraDtype::from_name(&input.dtype) {
                Some(_) if input.element.is_some() => extras.push(input.clone()),
                _ => {
                    return Err(Error::model_load(
                        &file,
                        format!(
                            "input `{}` ({} {}) is neither the state nor the time, and \
                         conditioning inputs must be float32, float16, int64, int32 or bool \
                         tensors. The model's inputs:\n{}",
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
        let max_batch = fixed_batch.unwrap_or(self.max_batch);
        let batchless = batchless_inputs(state, &inputs[time_i], &extras);

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
            batchless,
            sessions: SessionPool::new(Vec::new()), // filled once the check run passed
            metadata,
            producer,
            prediction,
            provider: provider.to_string(),
            provider_notes: notes,
            runtime: info,
            jvp: jvp::Jvp::Disabled,
        };
        field.jvp = jvp::Jvp::lazy(&self, &source, &field.mapping, provider, environment, info);
        field.dry_run(&mut first)?;
        let mut sessions = Vec::with_capacity(self.sessions);
        sessions.push(first);
        for _ in 1..self.sessions {
            let session = self
                .make_session(environment, &source, &field.file, provider, info)
                .map_err(|(e, _)| *e)?;
            sessions.push(session);
        }
        field.sessions = SessionPool::new(sessions);
        Ok(field)
    }

    /// Creates one session; `Err` carries the error and whether a CPU
    /// fallback may help.
    pub(super) fn make_session(
        &self,
        environment: &ort::environment::Environment,
        source: &ModelSource,
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
        if let Some(weights) = &self.shared_weights {
            builder = weights.attach(builder).map_err(|e| fail(&e))?;
        }
        if let Some(n) = self.intra_threads {
            builder = builder.with_intra_threads(n).map_err(|e| fail(&e))?;
        }
        if let Some(spinning) = self.spinning {
            builder = builder
                .with_intra_op_spinning(spinning)
                .map_err(|e| fail(&e))?;
        }
        let mut builder = provider::register(builder, provider, &info.library)
            .map_err(|message| (Box::new(Error::model_load(file, message)), true))?;
        let committed = match source {
            ModelSource::File(path) => builder.commit_from_file(path),
            ModelSource::Bytes(bytes) => builder.commit_from_memory(bytes),
            ModelSource::Derived { bytes, folder } => builder
                .with_config_entry(EXTERNAL_DATA_FOLDER, folder.to_string_lossy())
                .map_err(|e| fail(&e))?
                .commit_from_memory(bytes),
        };
        committed.map_err(|e| {
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

pub(super) fn describe_list(infos: &[TensorInfo]) -> String {
    infos
        .iter()
        .map(TensorInfo::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The extras declared without a batch axis. An extra has one when its
/// first dim is the state's batch dim (the same symbol, or the same fixed
/// size); a first dim with another symbol counts as a batch axis too
/// (exporters name each input's batch on its own), unless that symbol names
/// a later axis of some input (a length: FLUX's `img_ids` `[seq, 3]` beside
/// `hidden_states` `[batch, seq, 64]`). Scalars and a fixed first dim beside
/// a dynamic batch have none.
pub(super) fn batchless_inputs(
    state: &TensorInfo,
    time: &TensorInfo,
    extras: &[TensorInfo],
) -> Vec<String> {
    let later_axis = |symbol: &str| {
        std::iter::once(state)
            .chain(std::iter::once(time))
            .chain(extras)
            .any(|i| {
                i.dims
                    .iter()
                    .skip(1)
                    .any(|d| *d == Dim::Symbolic(symbol.to_string()))
            })
    };
    let batch = state.dims.first();
    extras
        .iter()
        .filter(|e| {
            let batched = match (batch, e.dims.first()) {
                (_, None) => false,
                (Some(b), Some(d)) if b == d && *d != Dim::Dynamic => true,
                (Some(Dim::Fixed(_)), Some(_)) => false,
                (_, Some(Dim::Fixed(_))) => false,
                (_, Some(Dim::Symbolic(s))) => !later_axis(s),
                (_, Some(Dim::Dynamic)) => true,
            };
            !batched
        })
        .map(|e| e.name.clone())
        .collect()
}

/// The per-sample state shape when it is fixed (by the builder, or by the
/// model declaring every dim), and the batch when the model fixes it.
pub(super) fn state_layout(
    file: &str,
    state: &TensorInfo,
    given: Option<&[usize]>,
) -> Result<(Option<Vec<usize>>, Option<usize>)> {
    let fixed_batch = match &state.dims[0] {
        Dim::Fixed(0) => {
            return Err(Error::model_load(
                file,
                format!(
                    "the state input `{}` has a fixed batch size of 0 ({})",
                    state.name,
                    state.shape_string()
                ),
            ))
        }
        Dim::Fixed(n) => Some(*n),
        _ => None,
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
        None => match declared
            .iter()
            .map(Dim::fixed)
            .collect::<Option<Vec<usize>>>()
        {
            Some(shape) => shape,
            // Dynamic axes: the shape comes with each call.
            None => return Ok((None, fixed_batch)),
        },
    };
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_STATE_ELEMENTS);
    if elements.is_none() {
        return Err(Error::model_load(
            file,
            format!(
                "the state input `{}` declares a sample of shape {shape:?}, more than the \
                 {MAX_STATE_ELEMENTS} floats per sample fmrt accepts (fmrt::field::onnx::MAX_STATE_ELEMENTS)",
                state.name
            ),
        ));
    }
    Ok((Some(shape), fixed_batch))
}

/// The most floats one sample's state may have (2^28, 1 GiB as f32): a
/// model declaring more is refused at load, before anything is allocated.
pub const MAX_STATE_ELEMENTS: usize = 1 << 28;

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dims: Vec<Dim>) -> TensorInfo {
        TensorInfo {
            name: "x".to_string(),
            dtype: "float32".to_string(),
            dims,
            element: Some(TensorElementType::Float32),
        }
    }

    /// A model may declare any state shape; one that is too large (or whose
    /// size overflows) is a load error naming the input and the bound.
    #[test]
    fn huge_declared_states_are_refused_by_name() {
        let batch = || Dim::Symbolic("B".to_string());
        for dims in [
            vec![
                batch(),
                Dim::Fixed(2_147_483_647),
                Dim::Fixed(2_147_483_647),
            ],
            vec![batch(), Dim::Fixed(50_000), Dim::Fixed(50_000)],
            vec![batch(), Dim::Fixed(usize::MAX), Dim::Fixed(2)],
        ] {
            let err = state_layout("big.onnx", &state(dims), None).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, Error::ModelLoad { .. }), "{message}");
            assert!(
                message.contains("`x`") && message.contains("268435456"),
                "{message}"
            );
        }
        let ok = state_layout(
            "ok.onnx",
            &state(vec![batch(), Dim::Fixed(3), Dim::Fixed(64)]),
            None,
        );
        assert_eq!(ok.unwrap(), (Some(vec![3, 64]), None));
        // Dynamic axes: the shape comes with each call; a fixed batch is kept.
        let per_call = state(vec![Dim::Fixed(2), Dim::Fixed(80), Dim::Dynamic]);
        assert_eq!(
            state_layout("c.onnx", &per_call, None).unwrap(),
            (None, Some(2))
        );
        // A shape given by the caller is held to the same bound.
        let dynamic = state(vec![batch(), Dim::Dynamic, Dim::Dynamic]);
        assert!(state_layout("d.onnx", &dynamic, Some(&[1 << 20, 1 << 20])).is_err());
    }
}
