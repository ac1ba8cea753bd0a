//! The divergence and the velocity of a likelihood stage in one field call,
//! for fields with stacked Jacobian–vector products
//! ([`VelocityField::velocity_and_jvps`]): the P directions of each sample
//! (the D basis vectors, or K Hutchinson probes) go in with a leading
//! direction axis beside the states given once, so the field's primal part
//! runs once per stage instead of once per direction plus once for the
//! velocity.

use std::ops::Range;

use super::divergence::{dot, gather_extras, view, view_mut, ChunkLimits, FieldCalls};
use crate::error::checked_product;
use crate::field::{row_chunks, Extras, VelocityField};
use crate::{Error, Result};

/// Where a stage's directions come from.
enum Directions {
    /// eₚ for p = 0..D (the exact divergence).
    Basis,
    /// K fixed random probes per sample, `[N·K·D]` (sample-major).
    Random(Vec<f32>),
}

/// One chunk of samples and its conditioning.
struct Chunk {
    samples: Range<usize>,
    extras: Extras,
}

/// The stacked estimator of one solve, with its buffers.
pub(crate) struct StackedEstimator {
    directions: Directions,
    /// Directions per sample, P.
    per_sample: usize,
    dim: usize,
    state_shape: Vec<usize>,
    chunks: Vec<Chunk>,
    /// `[P, chunk samples, D]`.
    v: Vec<f32>,
    /// `[P, chunk samples, D]`.
    products: Vec<f32>,
}

impl StackedEstimator {
    /// An estimator for `n` samples of `state_shape`: the basis directions
    /// when `random` is `None`, else the K probes per sample it holds
    /// (`[n·K·D]`).
    pub(crate) fn new(
        random: Option<(usize, Vec<f32>)>,
        n: usize,
        state_shape: &[usize],
        extras: &Extras,
        limits: ChunkLimits,
    ) -> Result<Self> {
        let dim = checked_product(state_shape, "the state size")?;
        let (directions, per_sample) = match random {
            None => (Directions::Basis, dim),
            Some((k, values)) => {
                if values.len() != checked_product(&[n, k, dim], "samples × probes × state size")?
                {
                    return Err(Error::Shape {
                        tensor: "probes".to_string(),
                        expected: format!("[{n}, {k}, {dim}]"),
                        actual: vec![values.len()],
                    });
                }
                (Directions::Random(values), k)
            }
        };
        // Per sample one call reads x and v and writes the velocity and the
        // products: 2 + 2P state-sized f32 tensors, P + 1 rows of them.
        let bytes_per_sample = checked_product(
            &[2 * per_sample + 2, dim, std::mem::size_of::<f32>()],
            "the bytes of one sample's call",
        )?
        .max(1);
        let samples_per_call = (limits.max_rows / per_sample.max(1))
            .min(limits.max_bytes / bytes_per_sample)
            .clamp(1, n.max(1));
        let chunks: Vec<Chunk> = row_chunks(n, samples_per_call)
            .map(|samples| Chunk {
                extras: if extras.is_empty() {
                    Extras::new()
                } else {
                    gather_extras(extras, &samples.clone().collect::<Vec<_>>())
                },
                samples,
            })
            .collect();
        let len = checked_product(&[per_sample, samples_per_call, dim], "the directions")?;
        Ok(Self {
            per_sample,
            dim,
            state_shape: state_shape.to_vec(),
            chunks,
            v: vec![0.0; len],
            products: vec![0.0; len],
            directions,
        })
    }

    /// Writes the velocity of every sample into `velocity` (`[N·D]`) and its
    /// divergence into `div`, one field call per chunk: with the basis the
    /// divergence of each sample (`[N]`), with K random probes each probe's
    /// estimate εᵀJε (`[N·K]`, sample-major). `x32` holds the states
    /// (`[N·D]`), `t` one time per sample or one for all.
    pub(crate) fn evaluate(
        &mut self,
        field: &dyn VelocityField,
        x32: &[f32],
        t: &[f64],
        velocity: &mut [f32],
        div: &mut [f64],
        calls: &mut FieldCalls,
    ) -> Result<()> {
        let (dim, per) = (self.dim, self.per_sample);
        for chunk in &self.chunks {
            let samples = chunk.samples.clone();
            let b = samples.len();
            fill_directions(&self.directions, &mut self.v, dim, per, samples.clone());
            let mut shape = vec![b];
            shape.extend_from_slice(&self.state_shape);
            let mut stacked = vec![per];
            stacked.extend_from_slice(&shape);
            let rows = samples.start * dim..samples.end * dim;
            let times = if t.len() == 1 { t } else { &t[samples.clone()] };
            field.velocity_and_jvps(
                view(&shape, &x32[rows.clone()], "x")?,
                times,
                &chunk.extras,
                view(&stacked, &self.v[..per * b * dim], "v")?,
                view_mut(&shape, &mut velocity[rows])?,
                view_mut(&stacked, &mut self.products[..per * b * dim])?,
            )?;
            calls.stacked += 1;
            for (r, i) in samples.enumerate() {
                match self.directions {
                    Directions::Basis => {
                        let mut sum = 0.0;
                        for p in 0..per {
                            let at = (p * b + r) * dim;
                            sum += f64::from(self.products[at + p]);
                        }
                        div[i] = sum;
                    }
                    Directions::Random(_) => {
                        for p in 0..per {
                            let at = (p * b + r) * dim;
                            let product = &self.products[at..at + dim];
                            div[i * per + p] = dot(&self.v[at..at + dim], product);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Fills `v` (`[P, samples, D]`) with the P directions of `samples`.
fn fill_directions(
    directions: &Directions,
    v: &mut [f32],
    dim: usize,
    per: usize,
    samples: Range<usize>,
) {
    let b = samples.len();
    for p in 0..per {
        for (r, i) in samples.clone().enumerate() {
            let at = (p * b + r) * dim;
            let v = &mut v[at..at + dim];
            match directions {
                Directions::Basis => {
                    v.iter_mut().for_each(|e| *e = 0.0);
                    v[p] = 1.0;
                }
                Directions::Random(values) => {
                    let g = i * per + p;
                    v.copy_from_slice(&values[g * dim..(g + 1) * dim]);
                }
            }
        }
    }
}
