//! [`Clock`]: a network whose time is not fmrt's.
//!
//! fmrt's time runs from noise (t = 0) to data (t = 1). diffusers, SD3 and
//! FLUX run theirs the other way, σ = 1 − t, feed the network a scaled time
//! (SD3: 1000·σ, FLUX: σ) and train it to return dx/dσ = noise − data. Seen
//! from fmrt's clock such a velocity network is
//! u(x, t) = −net(x, K·(1 − t)): one affine map of the time and a sign on
//! the output (and on its derivatives). The scale only changes what the
//! network is fed; its output stays a derivative in the unscaled clock.
//! A network predicting x1 or x0 returns a point, not a derivative, so only
//! its time is mapped.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::field::{check_times, Extras, VelocityField};
use crate::path::Prediction;
use crate::{Error, Result};

/// Which way a network's time runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeDirection {
    /// From noise (0) to data (1), as fmrt's own time (the default).
    #[default]
    Forward,
    /// From data (0) to noise (1): the network's time is σ = 1 − t and a
    /// velocity network returns dx/dσ (diffusers, SD3, FLUX).
    Reversed,
}

impl TimeDirection {
    /// The name used in metadata and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TimeDirection::Forward => "forward",
            TimeDirection::Reversed => "reversed",
        }
    }
}

impl fmt::Display for TimeDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimeDirection {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "forward" => Ok(TimeDirection::Forward),
            "reversed" => Ok(TimeDirection::Reversed),
            other => Err(Error::InvalidArgument(format!(
                "`{other}` is not a time direction (forward or reversed)"
            ))),
        }
    }
}

/// Checks a time scale: positive and finite.
pub fn check_time_scale(scale: f64) -> Result<()> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "the time scale must be positive and finite, got {scale}"
        )))
    }
}

/// A network run on its own clock (see the module documentation): it is
/// called at K·t (forward) or K·(1 − t) (reversed), and a reversed velocity
/// network's output, JVPs and divergence change sign.
pub struct Clock {
    inner: Arc<dyn VelocityField>,
    direction: TimeDirection,
    scale: f64,
    negate: bool,
}

impl Clock {
    /// `inner`, whose time runs in `direction` scaled by `scale`, and which
    /// predicts `prediction` (only a velocity changes sign when reversed).
    pub fn new(
        inner: Arc<dyn VelocityField>,
        direction: TimeDirection,
        scale: f64,
        prediction: Prediction,
    ) -> Result<Self> {
        check_time_scale(scale)?;
        Ok(Self {
            inner,
            direction,
            scale,
            negate: direction == TimeDirection::Reversed && prediction == Prediction::Velocity,
        })
    }

    /// The direction of the network's time.
    pub fn direction(&self) -> TimeDirection {
        self.direction
    }

    /// The factor K of the network's time input.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The network's times for fmrt's times `t`.
    fn network_times(&self, t: &[f64]) -> Vec<f64> {
        t.iter()
            .map(|&t| match self.direction {
                TimeDirection::Forward => self.scale * t,
                TimeDirection::Reversed => self.scale * (1.0 - t),
            })
            .collect()
    }

    fn sign(&self, mut out: ArrayViewMutD<'_, f32>) {
        if self.negate {
            out.mapv_inplace(|v| -v);
        }
    }

    fn batch_of(x: &ArrayViewD<'_, f32>, t: &[f64]) -> Result<()> {
        check_times(t, x.shape().first().copied().unwrap_or(0))
    }
}

impl VelocityField for Clock {
    fn state_shape(&self) -> Option<&[usize]> {
        self.inner.state_shape()
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
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        Self::batch_of(&x, t)?;
        self.inner
            .velocity_with(x, &self.network_times(t), extras, out.view_mut())?;
        self.sign(out);
        Ok(())
    }

    fn provides_jvp(&self) -> bool {
        self.inner.provides_jvp()
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.jvp_with(x, t, &Extras::new(), v, out)
    }

    fn jvp_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        Self::batch_of(&x, t)?;
        self.inner
            .jvp_with(x, &self.network_times(t), extras, v, out.view_mut())?;
        self.sign(out);
        Ok(())
    }

    fn provides_stacked_jvp(&self) -> bool {
        self.inner.provides_stacked_jvp()
    }

    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        mut velocity: ArrayViewMutD<'_, f32>,
        mut products: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        Self::batch_of(&x, t)?;
        self.inner.velocity_and_jvps(
            x,
            &self.network_times(t),
            extras,
            v,
            velocity.view_mut(),
            products.view_mut(),
        )?;
        self.sign(velocity);
        self.sign(products);
        Ok(())
    }

    fn provides_divergence(&self) -> bool {
        self.inner.provides_divergence()
    }

    fn divergence(&self, x: ArrayViewD<'_, f32>, t: &[f64], out: &mut [f64]) -> Result<()> {
        self.divergence_with(x, t, &Extras::new(), out)
    }

    fn divergence_with(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        Self::batch_of(&x, t)?;
        self.inner
            .divergence_with(x, &self.network_times(t), extras, out)?;
        if self.negate {
            out.iter_mut().for_each(|d| *d = -*d);
        }
        Ok(())
    }
}
