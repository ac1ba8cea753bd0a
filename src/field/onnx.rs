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
//! use fmrt::field::{Extras, VelocityField};
//! use ndarray::ArrayD;
//!
//! # fn main() -> fmrt::Result<()> {
//! let field = OnnxField::builder().max_batch(256).load_file("model.onnx")?;
//! let x = ArrayD::<f32>::zeros(vec![4, 2]);
//! let mut v = x.clone();
//! field.velocity(x.view(), &[0.5], Extras::none(), v.view_mut())?;
//! # Ok(())
//! # }
//! ```
//!
//! The ONNX Runtime library is loaded at run time; see [`runtime`] for where it
//! is looked for and [`provider`] for running on a GPU.

mod builder;
mod call;
mod jvp;
mod metadata;
mod model;
mod null_condition;
mod pool;
pub mod provider;
pub mod runtime;
mod weights;

use std::path::Path;

use ndarray::{ArrayViewD, ArrayViewMutD};

pub use builder::{OnnxFieldBuilder, DEFAULT_MAX_BATCH, MAX_STATE_ELEMENTS};
pub use model::{Dim, InputMapping, MappingSource, ModelDescription, TensorInfo, TimeLayout};
pub use provider::{ExecutionProvider, ProviderPolicy};
pub use runtime::{
    checkout_folders, ensure_runtime_for_development, init_runtime, init_runtime_from, locate,
    ort_environment, runtime_info, set_runtime_log, LibrarySource, RuntimeInfo, RuntimeLog,
    SearchPlaces, FETCH_COMMAND,
};

use super::{Derivatives, Extras, VelocityField};
use crate::path::Prediction;
use crate::{Error, Result};
use call::Times;
use pool::SessionPool;

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
/// Metadata key saying which way the network's time runs (`forward` |
/// `reversed`; see [`crate::field::adapt::Clock`]).
pub const META_TIME_DIRECTION: &str = "fmrt.time_direction";
/// Metadata key holding the factor K of the network's time input.
pub const META_TIME_SCALE: &str = "fmrt.time_scale";

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
    /// The builder's per-sample shape, or the declared one when every state
    /// dim is fixed; `None` when the shape comes with each call.
    state_shape: Option<Vec<usize>>,
    max_batch: usize,
    /// The batch the model was exported with, when it is fixed.
    fixed_batch: Option<usize>,
    /// The extra inputs declared without a batch axis.
    batchless: Vec<String>,
    sessions: SessionPool,
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

    /// The name of the class-label input: the model's only int64 extra input.
    /// An [`Error::InvalidArgument`] when it has none, or several (naming them).
    pub fn label_input(&self) -> Result<&str> {
        let labels: Vec<&TensorInfo> = self
            .extra_inputs()
            .iter()
            .filter(|i| i.dtype == "int64")
            .collect();
        match labels.as_slice() {
            [only] => Ok(&only.name),
            [] => Err(Error::InvalidArgument(format!(
                "{} has no int64 input to take a class label",
                self.file
            ))),
            many => Err(Error::InvalidArgument(format!(
                "{} has several int64 inputs ({}), so which one takes the class label is unclear",
                self.file,
                many.iter()
                    .map(|i| format!("`{}`", i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The largest batch of one model call: the builder's setting, or for a
    /// model exported with a fixed batch N, N (calls are then made in chunks
    /// of N rows, the last one padded with copies of its last row).
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The batch size the model was exported with, when it is fixed
    /// (CosyVoice's estimator: 2, the conditional and unconditional row).
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed_batch
    }

    /// The extra inputs the model declares without a batch axis (FLUX's
    /// `img_ids`): passed whole to every call.
    pub fn batchless_inputs(&self) -> &[String] {
        &self.batchless
    }

    /// `extras` with every input the model declares without a batch axis
    /// marked shared ([`Extras::with_shared`]), so that row operations
    /// (chunking, guidance) pass it whole: how the CLI and the C API hand a
    /// caller's conditioning to a model.
    pub fn conditioning(&self, extras: &Extras) -> Extras {
        let mut out = Extras::new();
        for (name, tensor) in extras.iter() {
            let shared = extras.is_shared(name) || self.batchless.iter().any(|b| b == name);
            out.insert_shared(name, tensor.clone(), shared);
        }
        out
    }

    /// The number of sessions in the pool.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The number of sessions serving Jacobian–vector products, as many as
    /// [`sessions`](Self::sessions); deriving the tangent model if needed.
    /// `None` when the field provides no JVPs.
    pub fn jvp_sessions(&self) -> Option<usize> {
        self.jvp.session_count(&self.file)
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

    /// Why the field provides no Jacobian–vector products (`None` when it does):
    /// the unsupported operators of the model, or `with_jvp(false)`.
    pub fn jvp_unavailable_reason(&self) -> Option<&str> {
        self.jvp.unavailable_reason(&self.file)
    }

    /// Why the field provides no stacked Jacobian–vector products (`None`
    /// when it does; see [`VelocityField::velocity_and_jvps`]): an operator
    /// of the model without a stacked tangent rule, or `with_jvp(false)`.
    pub fn stacked_jvp_unavailable_reason(&self) -> Option<String> {
        self.jvp.stacked_unavailable_reason(&self.file)
    }

    /// Everything about the model for display (`fmrt inspect`).
    pub fn describe(&self) -> ModelDescription {
        ModelDescription {
            file: self.file.clone(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            mapping: self.mapping.clone(),
            state_shape: self.state_shape.clone(),
            state_dims: self.state_info().dims.clone(),
            fixed_batch: self.fixed_batch,
            batchless: self.batchless.clone(),
            clock: self.clock_description(),
            producer: self.producer.clone(),
            metadata: self.metadata.clone(),
            provider: self.provider.clone(),
            provider_notes: self.provider_notes.clone(),
            library: self.runtime.library.clone(),
        }
    }

    /// The clock the metadata declares, for display.
    fn clock_description(&self) -> String {
        let direction = self.metadata_value(META_TIME_DIRECTION);
        let scale = self.metadata_value(META_TIME_SCALE);
        if direction.is_none() && scale.is_none() {
            return "forward, time × 1 (fmrt's own: t = 0 noise, t = 1 data; \
                    --time-direction and --time-scale change it)"
                .to_string();
        }
        format!(
            "{}, time × {} (from metadata)",
            direction.unwrap_or("forward").trim(),
            scale.unwrap_or("1").trim()
        )
    }

    /// Whether an extra input has a batch axis (decided at load, see
    /// [`batchless_inputs`](Self::batchless_inputs)).
    fn is_batched(&self, input: &TensorInfo) -> bool {
        !self.batchless.contains(&input.name)
    }

    /// The element type of an extra input (checked at load).
    fn extra_dtype(&self, input: &TensorInfo) -> Result<crate::field::ExtraDtype> {
        crate::field::ExtraDtype::from_name(&input.dtype).ok_or_else(|| {
            crate::Error::model_load(
                &self.file,
                format!("input {input} has a type fmrt cannot pass"),
            )
        })
    }
}

impl VelocityField for OnnxField {
    fn state_shape(&self) -> Option<&[usize]> {
        self.state_shape.as_deref()
    }

    /// Derives the stacked tangent model on the first call, and the
    /// per-direction one only when the stacked one is unavailable (a model
    /// with a stacked form has the other too): a likelihood, which uses the
    /// stacked form, never opens both. A [`jvp`](Self::jvp) call derives the
    /// per-direction model when first made.
    fn derivatives(&self) -> Derivatives {
        if self.jvp.stacked_available(&self.file) {
            Derivatives::JVP
        } else if self.jvp.available(&self.file) {
            Derivatives {
                jvp: true,
                ..Derivatives::NONE
            }
        } else {
            Derivatives::NONE
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let (batch, bindings) = self.check_call(x.shape(), &[("out", out.shape())], t)?;
        let args = self.extra_args(extras, batch, bindings)?;
        if batch == 0 {
            return Ok(());
        }
        let t32: Vec<f32> = t.iter().map(|&s| s as f32).collect();
        let mut session = self.sessions.take();
        self.run_call(&mut session, x, &Times::of(&t32), &args, out)
    }

    /// Lends ONNX Runtime's own output when the call is one plain run (one
    /// chunk, no padding, no grouping by time); computes into `scratch`
    /// otherwise.
    fn lend_velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        scratch: &mut Vec<f32>,
        consume: &mut dyn FnMut(ArrayViewD<'_, f32>) -> Result<()>,
    ) -> Result<()> {
        let (batch, bindings) = self.check_call(x.shape(), &[], t)?;
        let args = self.extra_args(extras, batch, bindings)?;
        let t32: Vec<f32> = t.iter().map(|&s| s as f32).collect();
        let times = Times::of(&t32);
        if batch == 0 || !self.is_one_run(batch, &times) {
            let mut out = crate::field::scratch_view(scratch, x.shape())?;
            if batch > 0 {
                let mut session = self.sessions.take();
                self.run_call(&mut session, x.view(), &times, &args, out.view_mut())?;
            }
            return consume(out.view());
        }
        let mut session = self.sessions.take();
        let results = self.session_outputs(&mut session, x.view(), &times, &args)?;
        let v = self.output_view(&results, &self.mapping.output, 0, x.shape())?;
        consume(v)
    }

    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        velocity: ArrayViewMutD<'_, f32>,
        products: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        jvp::velocity_and_jvps(self, x, t, extras, v, velocity, products)
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        jvp::per_direction_jvp(self, x, t, extras, v, out)
    }
}
