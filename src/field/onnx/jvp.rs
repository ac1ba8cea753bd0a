//! Jacobian–vector products of an ONNX model, computed by its tangent graph
//! (see [`crate::graph::tangent`]).
//!
//! The tangent model is derived on the first derivative request (a JVP call,
//! [`provides_jvp`](crate::field::VelocityField::provides_jvp), or
//! [`OnnxField::jvp_unavailable_reason`]), never at load: sampling-only users
//! never build it. A model loaded from a file is read again for it; its
//! initializers stored as external data stay external, so the tangent model
//! references the same weight files instead of copying them. The tangent
//! model keeps every input of the model, takes the direction as one more
//! input and returns J·v under the name of the velocity output, so calls run
//! through the same chunking and time grouping as velocity calls.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ndarray::{ArrayViewD, ArrayViewMutD, CowArray};
use ort::session::Session;

use super::builder::ModelSource;
use super::call::{ExtraArg, ExtraData, Times};
use super::{ExecutionProvider, InputMapping, OnnxField, OnnxFieldBuilder, RuntimeInfo};
use crate::field::Extras;
use crate::graph::{decode_model, encode_model, tangent_model, TangentOptions};
use crate::{Error, Result};

/// Whether and how an [`OnnxField`] computes JVPs.
pub(super) enum Jvp {
    /// Switched off by the builder.
    Disabled,
    /// Derived on first use.
    Lazy(Box<LazyTangent>),
}

/// What deriving the tangent model needs, and the outcome once derived.
pub(super) struct LazyTangent {
    source: ModelSource,
    state_input: String,
    output: String,
    builder: OnnxFieldBuilder,
    provider: ExecutionProvider,
    environment: &'static ort::environment::Environment,
    info: &'static RuntimeInfo,
    built: OnceLock<std::result::Result<Tangent, Box<Unavailable>>>,
}

/// A tangent model's session, ready to run.
pub(super) struct Tangent {
    input: String,
    session: Mutex<Session>,
}

/// Why the tangent model could not be made: the error, and its message.
pub(super) struct Unavailable {
    cause: Error,
    message: String,
}

impl From<Error> for Box<Unavailable> {
    fn from(cause: Error) -> Self {
        Box::new(Unavailable {
            message: cause.to_string(),
            cause,
        })
    }
}

impl Jvp {
    /// JVPs for the model of `source`, derived on first use (or none when the
    /// builder switched them off).
    pub(super) fn lazy(
        builder: &OnnxFieldBuilder,
        source: &ModelSource,
        mapping: &InputMapping,
        provider: ExecutionProvider,
        environment: &'static ort::environment::Environment,
        info: &'static RuntimeInfo,
    ) -> Jvp {
        if !builder.jvp {
            return Jvp::Disabled;
        }
        Jvp::Lazy(Box::new(LazyTangent {
            source: source.clone(),
            state_input: mapping.state.clone(),
            output: mapping.output.clone(),
            builder: builder.clone(),
            provider,
            environment,
            info,
            built: OnceLock::new(),
        }))
    }

    /// The tangent session, deriving it on the first call.
    fn tangent(&self, file: &str) -> std::result::Result<&Tangent, Option<&Unavailable>> {
        match self {
            Jvp::Disabled => Err(None),
            Jvp::Lazy(lazy) => lazy
                .built
                .get_or_init(|| lazy.derive(file))
                .as_ref()
                .map_err(|u| Some(u.as_ref())),
        }
    }

    /// Whether JVPs are available (deriving the tangent model if needed).
    pub(super) fn available(&self, file: &str) -> bool {
        self.tangent(file).is_ok()
    }

    /// Why JVPs are unavailable (`None` when they are available), deriving
    /// the tangent model if needed.
    pub(super) fn unavailable_reason(&self, file: &str) -> Option<&str> {
        match self.tangent(file) {
            Ok(_) => None,
            Err(None) => Some("Jacobian-vector products were switched off (with_jvp(false))"),
            Err(Some(u)) => Some(&u.message),
        }
    }
}

impl LazyTangent {
    /// Reads the model, derives its tangent model and opens a session on it.
    fn derive(&self, file: &str) -> std::result::Result<Tangent, Box<Unavailable>> {
        let (model, folder) = match &self.source {
            ModelSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                (decode_model(&bytes)?, Some(folder))
            }
            ModelSource::Bytes(bytes) => (decode_model(bytes)?, None),
            ModelSource::Derived { bytes, folder } => (decode_model(bytes)?, Some(folder.clone())),
        };
        let input = format!("{}_dot", self.state_input);
        let options = TangentOptions {
            state_input: Some(self.state_input.clone()),
            output: Some(self.output.clone()),
            tangent_input: Some(input.clone()),
            tangent_output: Some(self.output.clone()),
            drop_outputs: true,
        };
        let tangent = tangent_model(&model, &options)?;
        drop(model);
        let bytes = encode_model(&tangent);
        drop(tangent);
        let source = match folder {
            Some(folder) => ModelSource::Derived { bytes, folder },
            None => ModelSource::Bytes(Arc::from(bytes)),
        };
        let session = self
            .builder
            .make_session(self.environment, &source, file, self.provider, self.info)
            .map_err(|(e, _)| {
                let reason = match *e {
                    Error::ModelLoad { reason, .. } => reason,
                    other => other.to_string(),
                };
                Box::<Unavailable>::from(Error::model_load(
                    file,
                    format!("{reason} (the tangent model for Jacobian-vector products)"),
                ))
            })?;
        Ok(Tangent {
            input,
            session: Mutex::new(session),
        })
    }
}

impl Tangent {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
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
    let tangent = match field.jvp.tangent(&field.file) {
        Ok(tangent) => tangent,
        Err(Some(Unavailable {
            cause:
                Error::UnsupportedOperator {
                    op_type,
                    node,
                    reason,
                    others,
                    ..
                },
            ..
        })) => {
            return Err(Error::UnsupportedOperator {
                file: field.file.clone(),
                op_type: op_type.clone(),
                node: node.clone(),
                reason: reason.clone(),
                others: others.clone(),
            })
        }
        Err(_) => {
            return Err(Error::unsupported(format!(
                "{}: no Jacobian-vector products: {}",
                field.file,
                field
                    .jvp
                    .unavailable_reason(&field.file)
                    .unwrap_or_default()
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
    let mut session = tangent.session();
    field.run_call(&mut session, x, &times, &args, out)
}
