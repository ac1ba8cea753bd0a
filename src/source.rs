//! Source distributions p0 (standard normal by default).
//!
//! A [`Source`] draws the noise x0 that sampling starts from and evaluates
//! log p0(x0), which likelihood computation adds to the integrated divergence.
//! All randomness goes through [`SeededRng`] (in [`crate::random`]), whose
//! output is identical on every platform for a given seed.

use std::fmt::Debug;

use crate::random::{Lane, SeededRng};
use crate::{Error, Result};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, IxDyn};

/// ln(2π) as an f64 literal (not computed at run time, so it is the same everywhere).
pub const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// A source distribution p0 over states of shape `[...state_shape]`, used on
/// batches `[B, ...state_shape]`.
///
/// Implementations draw their randomness from the given [`SeededRng`] only, so a
/// seed fixes the draws on every platform.
pub trait Source: Send + Sync + Debug {
    /// The shape of one sample, or `None` when the distribution accepts any shape
    /// (like a standard normal, whose dimension is taken from the arrays).
    fn state_shape(&self) -> Option<&[usize]>;

    /// Fills `out` (shape `[B, ...]`) with draws, one sample after another in
    /// row-major order.
    fn sample_into(&self, rng: &mut SeededRng, out: ArrayViewMutD<'_, f32>) -> Result<()>;

    /// log p0(x) for each sample of the f64 batch `x` (shape `[B, ...]`).
    fn log_density_f64(&self, x: ArrayViewD<'_, f64>) -> Result<Vec<f64>>;

    /// log p0(x) for each sample of the f32 batch `x` (shape `[B, ...]`), computed
    /// in f64. The default converts to f64 and calls
    /// [`log_density_f64`](Self::log_density_f64).
    fn log_density(&self, x: ArrayViewD<'_, f32>) -> Result<Vec<f64>> {
        let x64 = x.mapv(f64::from);
        self.log_density_f64(x64.view())
    }

    /// Draws a fresh batch of shape `shape` (`[B, ...]`): rows `0..B` of
    /// [`sample_rows`](Self::sample_rows).
    fn sample(&self, shape: &[usize], seed: u64) -> Result<ArrayD<f32>> {
        self.sample_rows(shape, seed, 0)
    }

    /// Draws rows `first..first + B` of the batch a seed defines (`shape` is
    /// `[B, ...]`): row r comes from its own generator
    /// [`SeededRng::for_sample`]`(seed, first + r, Lane::Source)` through
    /// [`sample_into`](Self::sample_into) with a one-row view. The noise of a
    /// sample therefore depends on (seed, index) only, and shards of a run
    /// concatenate to the unsharded run bit for bit.
    fn sample_rows(&self, shape: &[usize], seed: u64, first: u64) -> Result<ArrayD<f32>> {
        check_batch_shape("out", shape, self.state_shape())?;
        crate::error::check_allocation(shape, std::mem::size_of::<f32>(), "the noise")?;
        let mut out = ArrayD::zeros(IxDyn(shape));
        for (r, row) in out.axis_chunks_iter_mut(Axis(0), 1).enumerate() {
            let index = first.checked_add(r as u64).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "sample index {first} + {r} does not fit in 64 bits"
                ))
            })?;
            let mut rng = SeededRng::for_sample(seed, index, Lane::Source);
            self.sample_into(&mut rng, row)?;
        }
        Ok(out)
    }
}

/// Checks that `shape` is `[B, ...state_shape]` (any non-empty shape when
/// `state_shape` is `None`), naming the tensor in the error.
pub(crate) fn check_batch_shape(
    tensor: &str,
    shape: &[usize],
    state_shape: Option<&[usize]>,
) -> Result<()> {
    let ok = match state_shape {
        Some(s) => shape.len() == s.len() + 1 && &shape[1..] == s,
        None => !shape.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        let expected = match state_shape {
            Some(s) => {
                let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                if dims.is_empty() {
                    "[B]".to_string()
                } else {
                    format!("[B, {}]", dims.join(", "))
                }
            }
            None => "[B, ...] (at least one axis)".to_string(),
        };
        Err(Error::Shape {
            tensor: tensor.to_string(),
            expected,
            actual: shape.to_vec(),
        })
    }
}

/// The standard normal distribution N(0, I), or N(0, s²I) with a noise scale
/// s ([`scaled`](Self::scaled); Matcha-TTS samples its noise with s = 0.667).
///
/// Draws are [`SeededRng::normal`] values rounded to f32, filled in row-major
/// order, then multiplied by s in f32 when s ≠ 1. log N(x; 0, s²I) =
/// −½‖x/s‖² − D·ln s − (D/2)·ln 2π per sample, with D the number of elements
/// of one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct StandardNormal {
    shape: Option<Vec<usize>>,
    scale: f64,
}

impl Default for StandardNormal {
    fn default() -> Self {
        Self::new()
    }
}

impl StandardNormal {
    /// A standard normal over states of any shape (taken from the arrays).
    pub fn new() -> Self {
        Self {
            shape: None,
            scale: 1.0,
        }
    }

    /// A standard normal over states of exactly `state_shape`; arrays of any other
    /// per-sample shape are rejected.
    pub fn with_shape(state_shape: &[usize]) -> Self {
        Self {
            shape: Some(state_shape.to_vec()),
            scale: 1.0,
        }
    }

    /// A standard normal over states of `state_shape` when given, else of any
    /// shape.
    pub fn for_shape(state_shape: Option<&[usize]>) -> Self {
        Self {
            shape: state_shape.map(<[usize]>::to_vec),
            scale: 1.0,
        }
    }

    /// The same distribution scaled by `scale`: N(0, scale²·I). The scale must
    /// be positive and finite.
    pub fn scaled(mut self, scale: f64) -> Result<Self> {
        check_noise_scale(scale)?;
        self.scale = scale;
        Ok(self)
    }

    /// The noise scale s (1 for the standard normal).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    fn log_density_impl<A: Copy + Into<f64>>(&self, x: ArrayViewD<'_, A>) -> Result<Vec<f64>> {
        check_batch_shape("x", x.shape(), self.state_shape())?;
        let dim: usize = x.shape()[1..].iter().product();
        let norm = 0.5 * dim as f64 * LN_2PI + dim as f64 * self.scale.ln();
        let inv = 1.0 / self.scale;
        Ok(x.outer_iter()
            .map(|row| {
                let sq: f64 = row
                    .iter()
                    .map(|&v| {
                        let v: f64 = v.into();
                        let v = if self.scale == 1.0 { v } else { v * inv };
                        v * v
                    })
                    .sum();
                -0.5 * sq - norm
            })
            .collect())
    }
}

/// Checks a noise scale: positive and finite.
pub fn check_noise_scale(scale: f64) -> Result<()> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "the noise scale must be positive and finite, got {scale}"
        )))
    }
}

impl Source for StandardNormal {
    fn state_shape(&self) -> Option<&[usize]> {
        self.shape.as_deref()
    }

    fn sample_into(&self, rng: &mut SeededRng, mut out: ArrayViewMutD<'_, f32>) -> Result<()> {
        check_batch_shape("out", out.shape(), self.state_shape())?;
        rng.fill_normal_f32(out.iter_mut());
        if self.scale != 1.0 {
            let s = self.scale as f32;
            out.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
    }

    fn log_density_f64(&self, x: ArrayViewD<'_, f64>) -> Result<Vec<f64>> {
        self.log_density_impl(x)
    }

    fn log_density(&self, x: ArrayViewD<'_, f32>) -> Result<Vec<f64>> {
        self.log_density_impl(x)
    }
}
