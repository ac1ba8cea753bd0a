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

use super::{Affine, AffineMap, AffineMaps};
use crate::field::VelocityField;
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
/// network's output, JVPs and divergence change sign: one [`Affine`] map
/// with s = 1, a = 0 and b = ±1.
pub type Clock = Affine<ClockMap>;

/// The maps of a [`Clock`]: the network's direction and time scale.
pub struct ClockMap {
    direction: TimeDirection,
    scale: f64,
    negate: bool,
}

impl Affine<ClockMap> {
    /// `inner`, whose time runs in `direction` scaled by `scale`, and which
    /// predicts `prediction` (only a velocity changes sign when reversed).
    pub fn new(
        inner: Arc<dyn VelocityField>,
        direction: TimeDirection,
        scale: f64,
        prediction: Prediction,
    ) -> Result<Self> {
        check_time_scale(scale)?;
        Ok(Affine::from_maps(
            inner,
            ClockMap {
                direction,
                scale,
                negate: direction == TimeDirection::Reversed && prediction == Prediction::Velocity,
            },
        ))
    }

    /// The direction of the network's time.
    pub fn direction(&self) -> TimeDirection {
        self.maps().direction
    }

    /// The factor K of the network's time input.
    pub fn scale(&self) -> f64 {
        self.maps().scale
    }
}

impl AffineMaps for ClockMap {
    fn map_at(&self, t: f64) -> Result<AffineMap> {
        let network_time = match self.direction {
            TimeDirection::Forward => self.scale * t,
            TimeDirection::Reversed => self.scale * (1.0 - t),
        };
        let mut map = AffineMap::at_time(network_time);
        if self.negate {
            map.b = -1.0;
        }
        Ok(map)
    }

    fn is_identity(&self) -> bool {
        self.direction == TimeDirection::Forward && self.scale == 1.0
    }
}
