//! Velocity fields u(x, t): the [`VelocityField`] trait and its implementations.

pub mod analytic;

use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::Result;

/// A velocity field u(x, t) evaluated on batches.
///
/// `x` has shape `[B, ...state_shape]` (row-major, batch first); `t` holds one
/// time per sample (`B` values) or one time for all (`1` value); `out` has the
/// shape of `x`. Fields are `Send + Sync` so a sampler can be shared.
pub trait VelocityField: Send + Sync {
    /// The shape of one sample's state, without the batch axis.
    fn state_shape(&self) -> &[usize];

    /// Writes u(x, t) into `out`.
    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()>;
}
