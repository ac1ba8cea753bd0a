//! Jacobian–vector products of an ONNX model, computed by its tangent graph
//! (see [`crate::graph::tangent`]).
//!
//! The tangent model is derived when the model is loaded (pure Rust, no
//! session); its ONNX Runtime session is created on the first JVP call. The
//! tangent model keeps every input of the model, takes the direction as one
//! more input and returns J·v under the name of the velocity output, so calls
//! run through the same chunking and time grouping as velocity calls.

use std::sync::{Mutex, MutexGuard, OnceLock};

use ndarray::{ArrayViewD, ArrayViewMutD, CowArray};
use ort::session::Session;

use super::call::{ExtraArg, ExtraData, Times};
use super::{ExecutionProvider, InputMapping, OnnxField, OnnxFieldBuilder, RuntimeInfo};
use crate::field::Extras;
use crate::graph::{decode_model, encode_model, tangent_model, TangentOptions};
use crate::{Error, Result};

/// Whether and how an [`OnnxField`] computes JVPs.
pub(super) enum Jvp {
    /// Switched off by the builder.
    Disabled,
    /// The model cannot be differentiated: why, and the message for people.
    Unavailable { cause: Error, message: String },
    /// The tangent model, and its session once created.
    Ready(Box<Tangent>),
}

/// A tangent model ready to run.
pub(super) struct Tangent {
    bytes: Vec<u8>,
    input: String,
    builder: OnnxFieldBuilder,
    provider: ExecutionProvider,
    environment: &'static ort::environment::Environment,
    info: &'static RuntimeInfo,
    session: OnceLock<std::result::Result<Mutex<Session>, String>>,
}

impl Jvp {
    /// Derives the tangent model of the serialized model `bytes`.
    pub(super) fn prepare(
        builder: &OnnxFieldBuilder,
        bytes: &[u8],
        mapping: &InputMapping,
        provider: ExecutionProvider,
        environment: &'static ort::environment::Environment,
        info: &'static RuntimeInfo,
    ) -> Jvp {
        if !builder.jvp {
            return Jvp::Disabled;
        }
        let input = format!("{}_dot", mapping.state);
        let options = TangentOptions {
            state_input: Some(mapping.state.clone()),
            output: Some(mapping.output.clone()),
            tangent_input: Some(input.clone()),
            tangent_output: Some(mapping.output.clone()),
            drop_outputs: true,
        };
        let derived = decode_model(bytes).and_then(|model| tangent_model(&model, &options));
        match derived {
            Ok(model) => Jvp::Ready(Box::new(Tangent {
                bytes: encode_model(&model),
                input,
                builder: builder.clone(),
                provider,
                environment,
                info,
                session: OnceLock::new(),
            })),
            Err(cause) => Jvp::Unavailable {
                message: cause.to_string(),
                cause,
            },
        }
    }

    /// Why JVPs are unavailable (`None` when they are available).
    pub(super) fn unavailable_reason(&self) -> Option<&str> {
        match self {
            Jvp::Disabled => Some("Jacobian-vector products were switched off (with_jvp(false))"),
            Jvp::Unavailable { message, .. } => Some(message),
            Jvp::Ready(_) => None,
        }
    }
}

impl Tangent {
    /// The tangent session, created on first use.
    fn session(&self, file: &str) -> Result<MutexGuard<'_, Session>> {
        let made = self.session.get_or_init(|| {
            self.builder
                .make_session(
                    self.environment,
                    &self.bytes,
                    file,
                    self.provider,
                    self.info,
                )
                .map(Mutex::new)
                .map_err(|(e, _)| {
                    let reason = match *e {
                        Error::ModelLoad { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    format!("{reason} (the tangent model for Jacobian-vector products)")
                })
        });
        match made {
            Ok(m) => Ok(m.lock().unwrap_or_else(|e| e.into_inner())),
            Err(m) => Err(Error::model_load(file, m.clone())),
        }
    }
}

/// J(x, t, extras)·v into `out`, for [`OnnxField`]'s `jvp_with`.
pub(super) fn jvp_with(
    field: &OnnxField,
    x: ArrayViewD<'_, f32>,
    t: &[f64],
    extras: &Extras,
    v: ArrayViewD<'_, f32>,
    out: ArrayViewMutD<'_, f32>,
) -> Result<()> {
    let tangent = match &field.jvp {
        Jvp::Ready(t) => t,
        Jvp::Unavailable {
            cause:
                Error::UnsupportedOperator {
                    op_type,
                    node,
                    reason,
                    others,
                    ..
                },
            ..
        } => {
            return Err(Error::UnsupportedOperator {
                file: field.file.clone(),
                op_type: op_type.clone(),
                node: node.clone(),
                reason: reason.clone(),
                others: others.clone(),
            })
        }
        other => {
            return Err(Error::unsupported(format!(
                "{}: no Jacobian-vector products: {}",
                field.file,
                other.unavailable_reason().unwrap_or_default()
            )))
        }
    };
    let batch = field.check_call(x.shape(), &[("v", v.shape()), ("out", out.shape())], t)?;
    let mut args = field.extra_args(extras, batch)?;
    if batch == 0 {
        return Ok(());
    }
    args.push(ExtraArg {
        name: &tangent.input,
        batched: true,
        data: ExtraData::Float32(CowArray::from(v)),
    });
    let t32: Vec<f32> = t.iter().map(|&s| s as f32).collect();
    let times = if t32.len() == 1 {
        Times::One(t32[0])
    } else {
        Times::PerSample(&t32)
    };
    let mut session = tangent.session(&field.file)?;
    field.run_call(&mut session, x, &times, &args, out)
}
