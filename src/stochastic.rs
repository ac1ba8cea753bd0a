//! Stochastic sampling: an SDE with the same marginals as the flow's ODE.
//!
//! For the affine path x_t = α x1 + σ x0 with x0 ~ N(0, I), the velocity is
//! u = α' E[x1 | x] + σ' E[x0 | x] and x = α E[x1 | x] + σ E[x0 | x]. Solving
//! for the noise prediction ε̂ = E[x0 | x] gives
//!
//! ```text
//! ε̂ = (α' x − α u) / D,   D = α' σ − α σ'   (> 0: the SNR α/σ increases)
//! ∇ log p_t(x) = −ε̂ / σ = (α u − α' x) / (σ D)
//! ```
//!
//! For any g(t), dx = [u + ½ g² ∇log p_t] dt + g dW has the marginals of
//! dx = u dt (its Fokker–Planck equation gains ½g²Δp from the noise and loses
//! it again through the drift). fmrt takes g(t)² = 2 G σ(t)², so
//!
//! ```text
//! drift = u + G σ (α u − α' x) / D,   diffusion g = √(2G) · σ
//! ```
//!
//! Both stay finite at the endpoints: the 1/σ of the score cancels (at t = 1,
//! σ = 0 and the drift is u; at t = 0, α = 0 and the drift is u − G x for
//! σ = 1). G = 0 is the ODE. The SDE is integrated with Euler–Maruyama on
//! the solver's fixed steps: x ← x + h·drift(x, t) + g(t)·√h·z, with z drawn
//! from the per-sample stream [`SeededRng::for_sample`]`(seed, i,
//! Lane::Diffusion)` one step after another, so the noise of sample i depends
//! on (seed, i) only and runs shard like ODE runs.

use std::sync::Arc;

use crate::random::SeededRng;
use crate::scheduler::Schedule;
use crate::{Error, Result};

/// Stochastic sampling with noise scale G along a schedule (see the module
/// documentation for the SDE).
#[derive(Clone, Debug)]
pub struct Stochastic {
    schedule: Arc<dyn Schedule>,
    scale: f64,
}

/// The Euler–Maruyama coefficients at one time: drift = `u_factor`·u −
/// `x_factor`·x, and the diffusion g.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdeCoefficients {
    /// 1 + G σ α / D.
    pub u_factor: f64,
    /// G σ α' / D.
    pub x_factor: f64,
    /// g = √(2G)·σ.
    pub diffusion: f64,
}

impl Stochastic {
    /// Noise scale `scale` (G ≥ 0, finite) for a field whose time follows
    /// `schedule` (for a model: its sampling schedule).
    pub fn new(schedule: Arc<dyn Schedule>, scale: f64) -> Result<Self> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "the SDE noise scale G must be finite and ≥ 0, got {scale}"
            )));
        }
        Ok(Self { schedule, scale })
    }

    /// The noise scale G.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The drift and diffusion coefficients at time `t`. Errors when they are
    /// not finite (a schedule whose SNR does not strictly increase at t, or
    /// a singular derivative), naming t.
    pub fn coefficients(&self, t: f64) -> Result<SdeCoefficients> {
        let c = self.schedule.coefficients(t);
        let d = c.d_alpha * c.sigma - c.alpha * c.d_sigma;
        let g = self.scale;
        let out = SdeCoefficients {
            u_factor: 1.0 + g * c.sigma * c.alpha / d,
            x_factor: g * c.sigma * c.d_alpha / d,
            diffusion: (2.0 * g).sqrt() * c.sigma,
        };
        if [out.u_factor, out.x_factor, out.diffusion]
            .iter()
            .all(|v| v.is_finite())
        {
            Ok(out)
        } else {
            Err(Error::NonFinite {
                which: "the SDE coefficients".to_string(),
                location: format!(
                    "at t = {t} (α = {}, σ = {}, α' = {}, σ' = {}; α'σ − ασ' = {d} must be \
                     finite and > 0)",
                    c.alpha, c.sigma, c.d_alpha, c.d_sigma
                ),
            })
        }
    }

    /// One Euler–Maruyama update of the `[B, D]` rows `x` (f64, row-major)
    /// from `t` over `h`, with velocities `v` (f32, same layout) and one
    /// generator per row.
    pub(crate) fn step(
        &self,
        x: &mut [f64],
        v: &[f32],
        t: f64,
        h: f64,
        rngs: &mut [SeededRng],
    ) -> Result<()> {
        let c = self.coefficients(t)?;
        let dim = if rngs.is_empty() {
            0
        } else {
            x.len() / rngs.len()
        };
        let noise = c.diffusion * h.sqrt();
        for ((row, vrow), rng) in x.chunks_mut(dim.max(1)).zip(v.chunks(dim.max(1))).zip(rngs) {
            for (xi, &vi) in row.iter_mut().zip(vrow) {
                let drift = c.u_factor * f64::from(vi) - c.x_factor * *xi;
                *xi += h * drift + noise * rng.normal();
            }
        }
        Ok(())
    }
}
