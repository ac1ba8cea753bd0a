//! Jacobian–vector products of an ONNX model, computed by its tangent graph
//! (see [`crate::graph::tangent`]).
//!
//! The tangent model is derived on the first derivative request (a JVP call,
//! [`derivatives`](crate::field::VelocityField::derivatives), or
//! [`OnnxField::jvp_unavailable_reason`]), never at load: sampling-only users
//! never build it. A model loaded from a file is read again for it; its
//! initializers stored as external data stay external, so the tangent model
//! references the same weight files instead of copying them. The tangent
//! model keeps every input of the model, takes the direction as one more
//! input and returns J·v under the name of the velocity output, so calls run
//! through the same chunking and time grouping as velocity calls.
//!
//! Where the model's operators allow it, a second, stacked tangent model is
//! derived on the first request for it: it takes P directions per sample
//! with a leading tangent axis, `[P, B, ...]`, beside the state `[B, ...]`
//! given once, and returns both the velocity and the P products. One call
//! then serves a whole likelihood stage, the network's primal part computed
//! once instead of once per direction.

use std::path::Path;
use std::sync::{Arc, MutexGuard, OnceLock};

use ndarray::{ArrayViewD, ArrayViewMutD, Axis, CowArray, Slice};
use ort::session::Session;

use super::builder::ModelSource;
use super::call::{chunk_extras, ExtraArg, ExtraData, Times};
use super::pool::SessionPool;
use super::{
    ExecutionProvider, InputMapping, OnnxField, OnnxFieldBuilder, RuntimeInfo, TimeLayout,
};
use crate::field::{row_chunks, Extras, VelocityField};
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
    stacked: OnceLock<std::result::Result<Tangent, Box<Unavailable>>>,
}

/// A tangent model's sessions, ready to run.
pub(super) struct Tangent {
    input: String,
    /// The output holding the products (the stacked model also returns the
    /// velocity under its own name).
    output: String,
    sessions: SessionPool,
}

/// Why the tangent model could not be made: the error, and its message.
pub(super) struct Unavailable {
    cause: Error,
    message: String,
}

impl From<Error> for Box<Unavailable> {
    fn from(cause: Error) -> Self {
        Box::new(Unavailable {
            message: crate::error::Report(&cause).to_string(),
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
            stacked: OnceLock::new(),
        }))
    }

    /// The tangent session, deriving it on the first call.
    fn tangent(&self, file: &str) -> std::result::Result<&Tangent, Option<&Unavailable>> {
        match self {
            Jvp::Disabled => Err(None),
            Jvp::Lazy(lazy) => lazy
                .built
                .get_or_init(|| lazy.derive(file, false))
                .as_ref()
                .map_err(|u| Some(u.as_ref())),
        }
    }

    /// The stacked tangent session (see the module documentation), deriving
    /// it on the first call; `None` when the model has none.
    fn stacked(&self, file: &str) -> Option<&Tangent> {
        match self {
            Jvp::Disabled => None,
            Jvp::Lazy(lazy) => lazy
                .stacked
                .get_or_init(|| lazy.derive(file, true))
                .as_ref()
                .ok(),
        }
    }

    /// Whether the stacked tangent model is available (deriving it if needed).
    pub(super) fn stacked_available(&self, file: &str) -> bool {
        self.stacked(file).is_some()
    }

    /// Why the stacked tangent model is unavailable (`None` when it is).
    pub(super) fn stacked_unavailable_reason(&self, file: &str) -> Option<String> {
        match self {
            Jvp::Disabled => Some("Jacobian-vector products were switched off".to_string()),
            Jvp::Lazy(lazy) => match lazy.stacked.get_or_init(|| lazy.derive(file, true)) {
                Ok(_) => None,
                Err(u) => Some(u.message.clone()),
            },
        }
    }

    /// How many sessions serve JVPs (deriving the tangent model if needed).
    pub(super) fn session_count(&self, file: &str) -> Option<usize> {
        self.tangent(file).ok().map(Tangent::session_count)
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
    /// Reads the model, derives its tangent model (stacked or per direction)
    /// and opens a session on it.
    fn derive(&self, file: &str, stacked: bool) -> std::result::Result<Tangent, Box<Unavailable>> {
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
        let output = if stacked {
            format!("{}__fmrt_stacked_dot", self.output)
        } else {
            self.output.clone()
        };
        let options = TangentOptions {
            state_input: Some(self.state_input.clone()),
            output: Some(self.output.clone()),
            tangent_input: Some(input.clone()),
            tangent_output: Some(output.clone()),
            drop_outputs: !stacked,
            stacked,
        };
        let tangent = tangent_model(&model, &options)?;
        drop(model);
        let bytes = encode_model(&tangent);
        drop(tangent);
        let source = match folder {
            Some(folder) => ModelSource::Derived { bytes, folder },
            None => ModelSource::Bytes(Arc::from(bytes)),
        };
        // As many tangent sessions as velocity sessions, so concurrent
        // likelihoods run side by side as concurrent samplers do.
        let builder = self.builder.for_tangent();
        let mut sessions = Vec::with_capacity(builder.session_count());
        for _ in 0..builder.session_count() {
            let session = builder
                .make_session(self.environment, &source, file, self.provider, self.info)
                .map_err(|(e, _)| {
                    Box::<Unavailable>::from(Error::model_load_from(
                        file,
                        "the tangent model for Jacobian-vector products did not load",
                        *e,
                    ))
                })?;
            sessions.push(session);
        }
        Ok(Tangent {
            input,
            output,
            sessions: SessionPool::new(sessions),
        })
    }
}

impl Tangent {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.sessions.take()
    }

    /// How many sessions serve this tangent model.
    fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

/// J(x, t, extras)·v into `out` through the per-direction tangent model.
pub(super) fn per_direction_jvp(
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
    let (batch, bindings) =
        field.check_call(x.shape(), &[("v", v.shape()), ("out", out.shape())], t)?;
    let mut args = field.extra_args(extras, batch, bindings)?;
    if batch == 0 {
        return Ok(());
    }
    args.push(ExtraArg {
        name: &tangent.input,
        batch_axis: Some(0),
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

/// u(x, t, extras) into `velocity` and J·vₚ for the P directions `v`
/// (`[P, B, ...]`) into `products` (`[P, B, ...]`), for [`OnnxField`]'s
/// `velocity_and_jvps`: one call of the stacked tangent model per chunk of
/// samples. A scalar-time model given different times per sample, which the
/// stacked model cannot group, runs per direction instead.
pub(super) fn velocity_and_jvps(
    field: &OnnxField,
    x: ArrayViewD<'_, f32>,
    t: &[f64],
    extras: &Extras,
    v: ArrayViewD<'_, f32>,
    mut velocity: ArrayViewMutD<'_, f32>,
    mut products: ArrayViewMutD<'_, f32>,
) -> Result<()> {
    let (batch, bindings) = field.check_call(x.shape(), &[("velocity", velocity.shape())], t)?;
    let directions = v.shape().first().copied().unwrap_or(0);
    let mut stacked_shape = vec![directions];
    stacked_shape.extend_from_slice(x.shape());
    for (name, shape) in [("v", v.shape()), ("products", products.shape())] {
        if shape != stacked_shape.as_slice() {
            return Err(Error::Shape {
                tensor: name.to_string(),
                expected: format!("{stacked_shape:?} (P directions of the shape of x)"),
                actual: shape.to_vec(),
            });
        }
    }
    let Some(tangent) = field.jvp.stacked(&field.file) else {
        return Err(Error::unsupported(format!(
            "{}: no stacked Jacobian-vector products: {}",
            field.file,
            field
                .jvp
                .stacked_unavailable_reason(&field.file)
                .unwrap_or_default()
        )));
    };
    let args = field.extra_args(extras, batch, bindings)?;
    if batch == 0 || directions == 0 {
        if batch > 0 {
            return field.velocity(x, t, extras, velocity);
        }
        return Ok(());
    }
    let t32: Vec<f32> = t.iter().map(|&s| s as f32).collect();
    let times = if t32.iter().all(|s| s.to_bits() == t32[0].to_bits()) {
        Times::One(t32[0])
    } else if field.mapping.time_layout == TimeLayout::Scalar {
        field.velocity(x.view(), t, extras, velocity)?;
        for p in 0..directions {
            let vp = v.index_axis(Axis(0), p);
            let op = products.index_axis_mut(Axis(0), p);
            per_direction_jvp(field, x.view(), t, extras, vp, op)?;
        }
        return Ok(());
    } else {
        Times::PerSample(&t32)
    };
    let x = x.as_standard_layout();
    let mut session = tangent.session();
    for rows in row_chunks(batch, field.max_batch) {
        let slice = Slice::from(rows.clone());
        let vc = v.slice_axis(Axis(1), slice);
        let mut chunk = chunk_extras(&args, rows.clone());
        chunk.push(ExtraArg {
            name: &tangent.input,
            batch_axis: Some(1),
            data: ExtraData::Float32(vc.as_standard_layout()),
        });
        field.run_once(
            &mut session,
            x.slice_axis(Axis(0), slice),
            &times.rows(rows),
            &chunk,
            &mut [
                (
                    field.mapping.output.as_str(),
                    0,
                    velocity.slice_axis_mut(Axis(0), slice),
                ),
                (
                    tangent.output.as_str(),
                    1,
                    products.slice_axis_mut(Axis(1), slice),
                ),
            ],
        )?;
    }
    Ok(())
}
