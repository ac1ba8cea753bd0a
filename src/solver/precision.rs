//! The floating-point type a solve keeps its state in.

use std::fmt;

use crate::{Error, Result};

/// The precision of a sampler's solver state.
///
/// `F64` (the default) keeps the state, the stages and their sums in f64, so
/// that a long or adaptive solve does not accumulate f32 rounding; the field
/// is still called in f32. `F32` keeps them in the network's own precision,
/// as the sampling loops of the projects whose models fmrt runs do
/// (CosyVoice, Matcha-TTS, diffusers): no conversion per call, half the
/// memory traffic per step, the same result as such a loop. It applies to
/// the explicit Runge–Kutta methods on fixed steps, where a step's rounding
/// (about 6e-8 relative) is far below the discretisation error; every other
/// solver refuses it by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatePrecision {
    /// f64 state (the default).
    #[default]
    F64,
    /// f32 state: fixed-step explicit Runge–Kutta methods only.
    F32,
}

impl StatePrecision {
    /// The name used by the CLI and the docs: `f64` or `f32`.
    pub fn name(self) -> &'static str {
        match self {
            StatePrecision::F64 => "f64",
            StatePrecision::F32 => "f32",
        }
    }

    /// Parses `f64` or `f32`.
    pub fn from_name(name: &str) -> Result<StatePrecision> {
        match name {
            "f64" => Ok(StatePrecision::F64),
            "f32" => Ok(StatePrecision::F32),
            other => Err(Error::InvalidArgument(format!(
                "unknown state precision `{other}`; expected f64 or f32"
            ))),
        }
    }
}

impl fmt::Display for StatePrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A float type a fixed-step solve can keep its state in (f64 or f32).
pub trait Real: ndarray::NdFloat {
    /// `v` in this type (rounded for f32).
    fn of(v: f64) -> Self;
}

impl Real for f64 {
    fn of(v: f64) -> f64 {
        v
    }
}

impl Real for f32 {
    fn of(v: f64) -> f32 {
        v as f32
    }
}
