//! Log-likelihoods of generated samples from the sampling solve itself.
//!
//! Sampling integrates dx/dt = u from noise x0 at t = 0 to a sample x1 at
//! t = 1. Integrating L' = div u alongside, with L(0) = 0, in the same solve
//! gives log p1(x1) = log p0(x0) − L(1): one solve, no second (reverse)
//! pass. The divergence is computed in any [`Divergence`] mode, by the same
//! machinery as [`Likelihood::log_likelihood`].

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::{state_rows, FieldCalls, Likelihood};
use crate::solver::Stats;
use crate::{Error, Result};

/// Samples with the log-density of each, from one forward solve.
#[derive(Clone, Debug)]
pub struct SamplesWithLogProb {
    /// The samples x1, shaped like the noise.
    pub x: ArrayD<f32>,
    /// log p1(x1) per sample, in nats.
    pub log_p: Vec<f64>,
    /// The standard error of each `log_p` when the divergence is an
    /// estimate, `None` when it is exact (as
    /// [`LogLikelihood::log_p_std_error`](super::LogLikelihood::log_p_std_error)).
    pub log_p_std_error: Option<Vec<f64>>,
    /// log p0(x0) per sample.
    pub log_p0: Vec<f64>,
    /// ∫₀¹ div u(x_t, t) dt per sample (log p = log p0 − this).
    pub divergence_integral: Vec<f64>,
    /// Solver counters (NFE counts augmented right-hand-side evaluations).
    pub stats: Stats,
    /// Each sample's counters and status.
    pub samples: Vec<crate::solver::SampleStats>,
    /// Field calls: velocity, Jacobian–vector products, divergences.
    pub calls: FieldCalls,
}

impl Likelihood {
    /// Integrates the noise `x0` (`[B, ...state_shape]`) from t = 0 to 1 with
    /// the divergence alongside, returning the samples and log p of each
    /// (see the module documentation). Uses this likelihood's field, solver,
    /// source, extras, divergence mode and seed.
    ///
    /// Errors: as for [`Likelihood::log_likelihood`].
    pub fn sample_with_log_prob(&self, x0: ArrayViewD<'_, f32>) -> Result<SamplesWithLogProb> {
        let (batch, dim, extras) = self.check_input(x0.shape())?;
        self.check_mode()?;
        let probes = self.draw_probes(batch, dim)?;
        let y0 = state_rows(x0.view(), batch, dim, self.log_p_columns())?;
        let solved = self.solve_rows(
            y0.view(),
            &x0.shape()[1..],
            &vec![0.0; batch],
            1.0,
            &extras,
            probes,
        )?;
        let x = ArrayD::from_shape_vec(
            IxDyn(x0.shape()),
            solved
                .y
                .rows()
                .into_iter()
                .flat_map(|row| row.iter().take(dim).map(|&v| v as f32).collect::<Vec<_>>())
                .collect(),
        )
        .map_err(|e| Error::internal(format!("state layout: {e}")))?;
        let log_p0 = self.source.log_density(x0)?;
        let (mut divergence_integral, mut log_p_std_error) = self.integrals(&solved.y, dim, 1.0);
        // A sample that stopped early has no log-likelihood (its x is
        // where it stopped).
        for i in crate::sampler::unfinished(&solved.samples) {
            divergence_integral[i] = f64::NAN;
            if let Some(errors) = log_p_std_error.as_mut() {
                errors[i] = f64::NAN;
            }
        }
        let log_p = log_p0
            .iter()
            .zip(&divergence_integral)
            .map(|(p0, int)| p0 - int)
            .collect();
        Ok(SamplesWithLogProb {
            x,
            log_p,
            log_p_std_error,
            log_p0,
            divergence_integral,
            stats: solved.stats,
            samples: solved.samples,
            calls: solved.calls,
        })
    }
}
