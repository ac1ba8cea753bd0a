//! Velocity fields u(x, t): the [`VelocityField`] trait and its implementations.

pub mod adapt;
pub mod analytic;
mod chunks;
mod extras;
mod null;
pub mod onnx;
pub mod plugin;

pub(crate) use crate::times::{check_times, time_of};
pub(crate) use chunks::row_chunks;

pub use extras::{ExtraDtype, ExtraTensor, Extras};
pub use null::{NullCondition, NullValue};

use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::{Error, Result};

/// Which derivatives a velocity field computes itself: the one answer
/// callers ask before choosing a strategy (see
/// [`VelocityField::derivatives`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Derivatives {
    /// [`VelocityField::jvp`]: J·v for one direction per sample.
    pub jvp: bool,
    /// [`VelocityField::velocity_and_jvps`]: the velocity and P products in
    /// one evaluation.
    pub stacked_jvp: bool,
    /// [`VelocityField::divergence`]: the exact trace of J.
    pub divergence: bool,
}

impl Derivatives {
    /// No derivatives: the field computes only velocities.
    pub const NONE: Derivatives = Derivatives {
        jvp: false,
        stacked_jvp: false,
        divergence: false,
    };

    /// Jacobian–vector products in both forms (what a field with a stacked
    /// evaluation offers, since one direction is a stack of one).
    pub const JVP: Derivatives = Derivatives {
        jvp: true,
        stacked_jvp: true,
        divergence: false,
    };

    /// Whether any form of Jacobian–vector product is offered.
    pub fn any_jvp(self) -> bool {
        self.jvp || self.stacked_jvp
    }
}

/// `scratch` resized to the `shape`'s length (zeroed only when its length
/// changes: a field writes every entry) and viewed with that shape: the
/// buffer a [`VelocityField::lend_velocity`] that lends none of its own
/// computes into.
pub(crate) fn scratch_view<'s>(
    scratch: &'s mut Vec<f32>,
    shape: &[usize],
) -> Result<ArrayViewMutD<'s, f32>> {
    let len: usize = shape.iter().product();
    if scratch.len() != len {
        scratch.clear();
        scratch.resize(len, 0.0);
    }
    ArrayViewMutD::from_shape(shape, scratch.as_mut_slice())
        .map_err(|e| Error::internal(format!("the velocity buffer: {e}")))
}

/// A velocity field u(x, t) evaluated on batches.
///
/// `x` has shape `[B, ...state_shape]` (row-major, batch first); `t` holds one
/// time per sample (`B` values) or one time for all (`1` value); `out` has the
/// shape of `x`. Fields are `Send + Sync` so a sampler can be shared.
///
/// Every call takes the conditioning inputs as [`Extras`] (named tensors,
/// batched like `x` or shared by the call); an unconditional field is called
/// with [`Extras::none`] and refuses any given extra with
/// [`Extras::expect_none`], since ignoring it would drop the caller's
/// conditioning.
///
/// Fields may also provide exact derivatives: [`jvp`](Self::jvp) (J·v with J
/// the Jacobian ∂u/∂x), [`velocity_and_jvps`](Self::velocity_and_jvps) (the
/// velocity and several products in one evaluation) and
/// [`divergence`](Self::divergence) (the trace of J). All three are optional:
/// [`derivatives`](Self::derivatives) says which a field offers, and the
/// defaults return [`Error::Unsupported`].
///
/// A field that wraps another (an adapter, a progress or logging layer)
/// should forward `derivatives` and the derivative calls to its inner field:
/// otherwise likelihoods through the wrapper fall back to slower strategies
/// or none.
pub trait VelocityField: Send + Sync {
    /// The shape of one sample's state, without the batch axis, when the
    /// field has one fixed shape; `None` when the shape comes with each call
    /// (an ONNX model with a dynamic length or resolution serves any shape
    /// its declared dims allow, checked per call).
    fn state_shape(&self) -> Option<&[usize]>;

    /// Which derivatives this field computes (default: none). Asking may be
    /// costly the first time (an ONNX model derives its tangent model), never
    /// afterwards.
    fn derivatives(&self) -> Derivatives {
        Derivatives::NONE
    }

    /// Writes u(x, t, extras) into `out`.
    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()>;

    /// Computes u(x, t, extras) and lends it to `consume` for the length of
    /// the call: a field that computes the velocity in a buffer of its own
    /// (an ONNX model's output) lends that buffer instead of copying it into
    /// the caller's, which an adapter that only reads the velocity (the
    /// guidance mix) uses to save a pass over the state per call. The
    /// default computes into `scratch` (resized to the state's length, so a
    /// caller that keeps it allocates once) with
    /// [`velocity`](Self::velocity) and lends that.
    fn lend_velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        scratch: &mut Vec<f32>,
        consume: &mut dyn FnMut(ArrayViewD<'_, f32>) -> Result<()>,
    ) -> Result<()> {
        self.velocity(x.view(), t, extras, scratch_view(scratch, x.shape())?)?;
        let out = ArrayViewD::from_shape(x.shape(), scratch)
            .map_err(|e| Error::internal(format!("the velocity buffer: {e}")))?;
        consume(out)
    }

    /// Writes the Jacobian–vector product J(x, t, extras)·v into `out`, with
    /// J = ∂u/∂x per sample; `v` and `out` are shaped like `x`.
    ///
    /// The default returns [`Error::Unsupported`]: the field provides no
    /// derivatives.
    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let _ = (x, t, extras, v, out);
        Err(Error::unsupported(
            "this velocity field does not provide Jacobian-vector products",
        ))
    }

    /// Writes u(x, t, extras) into `velocity` and the P Jacobian–vector
    /// products J·vₚ into `products`, in one evaluation that computes the
    /// field's primal part once: `v` and `products` are `[P, B, ...]` (a
    /// leading direction axis before the batch), `x` and `velocity`
    /// `[B, ...]`. A likelihood stage is then one call instead of a velocity
    /// call plus a JVP call on P copies of the states.
    ///
    /// The default returns [`Error::Unsupported`].
    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        velocity: ArrayViewMutD<'_, f32>,
        products: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let _ = (x, t, extras, v, velocity, products);
        Err(Error::unsupported(
            "this velocity field does not provide stacked Jacobian-vector products",
        ))
    }

    /// Writes the exact divergence div u(x, t, extras) = tr ∂u/∂x of each
    /// sample into `out` (`B` values, f64).
    ///
    /// The default returns [`Error::Unsupported`]: the field provides no
    /// divergence.
    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        let _ = (x, t, extras, out);
        Err(Error::unsupported(
            "this velocity field does not provide an exact divergence",
        ))
    }
}
