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

/// A velocity field u(x, t) evaluated on batches.
///
/// `x` has shape `[B, ...state_shape]` (row-major, batch first); `t` holds one
/// time per sample (`B` values) or one time for all (`1` value); `out` has the
/// shape of `x`. Fields are `Send + Sync` so a sampler can be shared.
///
/// Conditional fields (class labels, context tensors) take their conditioning
/// through [`velocity_with`](Self::velocity_with); unconditional fields need only
/// implement [`velocity`](Self::velocity).
///
/// Fields may also provide exact derivatives: [`jvp`](Self::jvp) (J·v with J the
/// Jacobian ∂u/∂x) and [`divergence`](Self::divergence) (the trace of J). Both are
/// optional; the default implementations return [`Error::Unsupported`] saying
/// the field does not provide them, and [`provides_jvp`](Self::provides_jvp) /
/// [`provides_divergence`](Self::provides_divergence) let callers choose a
/// strategy without trying.
pub trait VelocityField: Send + Sync {
    /// The shape of one sample's state, without the batch axis, when the
    /// field has one fixed shape; `None` when the shape comes with each call
    /// (an ONNX model with a dynamic length or resolution serves any shape
    /// its declared dims allow, checked per call).
    fn state_shape(&self) -> Option<&[usize]>;

    /// Writes u(x, t) into `out`.
    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()>;

    /// Writes u(x, t, extras) into `out`, where `extras` are named conditioning
    /// inputs with the batch first (see [`Extras`]).
    ///
    /// The default accepts only empty extras and calls
    /// [`velocity`](Self::velocity); any given extra is an
    /// [`Error::InvalidArgument`] naming it, since an unconditional field would
    /// silently ignore it.
    fn velocity_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        if extras.is_empty() {
            self.velocity(x, t, out)
        } else {
            let first = extras.iter().next().map_or("", |(name, _)| name);
            Err(Error::extra(
                "this velocity field",
                first,
                format!("it takes no extra inputs, but got {}", extras.describe()),
            ))
        }
    }

    /// Whether [`jvp`](Self::jvp) is implemented (default: `false`).
    fn provides_jvp(&self) -> bool {
        false
    }

    /// Writes the Jacobian–vector product J(x, t)·v into `out`, with J = ∂u/∂x per
    /// sample; `v` and `out` are shaped like `x`.
    ///
    /// The default returns [`Error::Unsupported`]: the field provides no
    /// derivatives.
    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let _ = (x, t, v, out);
        Err(Error::unsupported(
            "this velocity field does not provide Jacobian-vector products",
        ))
    }

    /// Writes J(x, t, extras)·v into `out`: the Jacobian–vector product of a
    /// conditional field, with `extras` batched like `x` (see
    /// [`velocity_with`](Self::velocity_with)).
    ///
    /// The default accepts only empty extras and calls [`jvp`](Self::jvp); any
    /// given extra is an [`Error::Unsupported`] naming it. Conditional fields
    /// that provide derivatives override this.
    fn jvp_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        if extras.is_empty() {
            self.jvp(x, t, v, out)
        } else {
            Err(Error::unsupported(format!(
                "this velocity field provides no Jacobian-vector products with extra inputs, \
                 but got {}",
                extras.describe()
            )))
        }
    }

    /// Whether [`velocity_and_jvps`](Self::velocity_and_jvps) is implemented
    /// (default: `false`).
    ///
    /// A field that wraps another (an adapter, a progress or logging layer)
    /// should forward this and `velocity_and_jvps` to its inner field: with
    /// the defaults, likelihoods through the wrapper still work but fall
    /// back to a velocity call plus a JVP call on P copies of the states,
    /// which replays the network's primal part once per direction.
    fn provides_stacked_jvp(&self) -> bool {
        false
    }

    /// Writes u(x, t, extras) into `velocity` and the P Jacobian–vector
    /// products J·vₚ into `products`, in one evaluation that computes the
    /// field's primal part once: `v` and `products` are `[P, B, ...]` (a
    /// leading direction axis before the batch), `x` and `velocity`
    /// `[B, ...]`. A likelihood stage is then one call instead of a velocity
    /// call plus a JVP call on P copies of the states.
    ///
    /// The default returns [`Error::Unsupported`]; callers check
    /// [`provides_stacked_jvp`](Self::provides_stacked_jvp) and otherwise use
    /// [`velocity_with`](Self::velocity_with) and
    /// [`jvp_with`](Self::jvp_with).
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

    /// Whether [`divergence`](Self::divergence) is implemented (default: `false`).
    fn provides_divergence(&self) -> bool {
        false
    }

    /// Writes the exact divergence div u(x, t) = tr ∂u/∂x of each sample into
    /// `out` (`B` values, f64).
    ///
    /// The default returns [`Error::Unsupported`]: the field provides no
    /// divergence.
    fn divergence(&self, x: ArrayViewD<'_, f32>, t: &[f64], out: &mut [f64]) -> Result<()> {
        let _ = (x, t, out);
        Err(Error::unsupported(
            "this velocity field does not provide an exact divergence",
        ))
    }

    /// Writes the exact divergence of a conditional field, with `extras` batched
    /// like `x`, into `out` (`B` values).
    ///
    /// The default accepts only empty extras and calls
    /// [`divergence`](Self::divergence); any given extra is an
    /// [`Error::Unsupported`] naming it.
    fn divergence_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        if extras.is_empty() {
            self.divergence(x, t, out)
        } else {
            Err(Error::unsupported(format!(
                "this velocity field provides no exact divergence with extra inputs, but got {}",
                extras.describe()
            )))
        }
    }
}
