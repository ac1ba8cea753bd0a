//! Divergence estimators for the augmented likelihood ODE.
//!
//! [`Divergence`] selects how div u = tr ∂u/∂x is obtained at every stage:
//! the field's exact divergence, D basis directions through Jacobian–vector
//! products, Hutchinson's stochastic trace estimator, or (as an explicit,
//! biased opt-in) central finite differences of the velocity.
//!
//! Directions are batched: the `P` directions of each of the `B` samples become
//! `B·P` rows of one field call (the sample's state repeated), split into chunks
//! so that no call exceeds the configured row and memory bounds. Every buffer is
//! allocated when the solve starts and only overwritten at each stage.

use std::str::FromStr;

use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};

use crate::error::checked_product;
use crate::field::{row_chunks, Extras, VelocityField};
use crate::random::{Lane, SeededRng};
use crate::{Error, Result};

/// How the divergence div u(x, t) = tr ∂u/∂x is computed along the path
/// (default: [`Divergence::Exact`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Divergence {
    /// Exact: the field's own [`divergence`](VelocityField::divergence) when it
    /// provides one, otherwise Σᵢ eᵢᵀ J eᵢ over the D basis directions, through
    /// [`jvp`](VelocityField::jvp) calls on batches of B·D rows (chunked).
    #[default]
    Exact,
    /// Hutchinson's unbiased estimator: the mean over `probes` random directions
    /// ε per sample of εᵀ J ε. The probes are drawn once per solve from the
    /// likelihood's seed and held fixed along the path (random right-hand sides
    /// would break adaptive step control), and all of them go through one JVP
    /// call per stage (B·K rows, chunked).
    Hutchinson {
        /// Probes K per sample (at least 1); the variance falls as 1/K.
        probes: usize,
        /// The distribution of the probes' entries.
        distribution: ProbeDistribution,
    },
    /// Central finite differences of the velocity,
    /// vᵀ (u(x + εv) − u(x − εv)) / (2ε), along `directions`; needs only
    /// velocity evaluations.
    ///
    /// Biased: the truncation error is O(ε²) (times third derivatives of u),
    /// and the f32 evaluations add a rounding error of order
    /// (f32 epsilon)·|u|/ε per direction, so ε trades one against the other
    /// (around 1e-3 for states of order one). An explicit opt-in for fields
    /// without Jacobian–vector products.
    FiniteDifference {
        /// The step ε (finite and positive), in the units of the state.
        epsilon: f64,
        /// Which directions v are differenced.
        directions: Directions,
    },
}

impl Divergence {
    /// Hutchinson's estimator with `probes` Rademacher probes per sample.
    pub fn hutchinson(probes: usize) -> Self {
        Divergence::Hutchinson {
            probes,
            distribution: ProbeDistribution::Rademacher,
        }
    }

    /// Central finite differences with step `epsilon` along the D basis
    /// directions (the biased counterpart of [`Divergence::Exact`]).
    pub fn finite_difference(epsilon: f64) -> Self {
        Divergence::FiniteDifference {
            epsilon,
            directions: Directions::Basis,
        }
    }

    /// The mode's name as [`FromStr`] reads it: `"exact"`, `"hutchinson"` or
    /// `"finite-difference"`.
    pub fn name(&self) -> &'static str {
        match self {
            Divergence::Exact => "exact",
            Divergence::Hutchinson { .. } => "hutchinson",
            Divergence::FiniteDifference { .. } => "finite-difference",
        }
    }

    /// This mode with the settings that apply to it: `probes` and
    /// `distribution` for Hutchinson's estimator (and finite differences along
    /// Hutchinson probes), `epsilon` for finite differences; the others are
    /// ignored. Front ends that take every setting separately build the mode
    /// from its name and then this.
    pub fn with_settings(
        self,
        probes: usize,
        distribution: ProbeDistribution,
        epsilon: f64,
    ) -> Self {
        match self {
            Divergence::Exact => Divergence::Exact,
            Divergence::Hutchinson { .. } => Divergence::Hutchinson {
                probes,
                distribution,
            },
            Divergence::FiniteDifference { directions, .. } => Divergence::FiniteDifference {
                epsilon,
                directions: match directions {
                    Directions::Basis => Directions::Basis,
                    Directions::Hutchinson { .. } => Directions::Hutchinson {
                        probes,
                        distribution,
                    },
                },
            },
        }
    }

    /// Checks the parameters, then that `field` provides what this mode
    /// needs: Jacobian–vector products for Hutchinson's estimator, and for the
    /// exact divergence unless the field has its own. The refusal
    /// ([`Error::Unsupported`]) that a likelihood run would give, before any
    /// run.
    pub fn check_available(&self, field: &dyn VelocityField) -> Result<()> {
        self.validate()?;
        if let Divergence::FiniteDifference { .. } = self {
            return Ok(());
        }
        let offered = field.derivatives();
        let needs_jvp = match self {
            Divergence::Exact => !offered.divergence,
            _ => true,
        };
        if needs_jvp && !offered.any_jvp() {
            let what = match self {
                Divergence::Exact => "the exact divergence",
                _ => "Hutchinson's estimator",
            };
            return Err(Error::unsupported(format!(
                "{what} needs Jacobian-vector products, and this velocity field provides \
                 neither JVPs nor an exact divergence; use a field that provides JVPs, or opt \
                 in to the biased finite-difference divergence (Divergence::FiniteDifference; \
                 \"finite-difference\" in C and on the command line)"
            )));
        }
        Ok(())
    }

    /// Checks the parameters (probe counts, step), naming the problem.
    pub(crate) fn validate(&self) -> Result<()> {
        let check_probes = |probes: usize| {
            if probes == 0 {
                Err(Error::InvalidArgument(
                    "the number of Hutchinson probes per sample must be at least 1, got 0"
                        .to_string(),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Divergence::Exact => Ok(()),
            Divergence::Hutchinson { probes, .. } => check_probes(*probes),
            Divergence::FiniteDifference {
                epsilon,
                directions,
            } => {
                if !(epsilon.is_finite() && *epsilon > 0.0) {
                    return Err(Error::InvalidArgument(format!(
                        "the finite-difference step must be finite and positive, got {epsilon}"
                    )));
                }
                match directions {
                    Directions::Basis => Ok(()),
                    Directions::Hutchinson { probes, .. } => check_probes(*probes),
                }
            }
        }
    }

    /// The random probes per sample this mode draws, with their
    /// distribution; `None` for the deterministic modes (exact, finite
    /// differences along the basis), whose results carry no standard error.
    pub fn random_probes(&self) -> Option<(usize, ProbeDistribution)> {
        match self {
            Divergence::Hutchinson {
                probes,
                distribution,
            }
            | Divergence::FiniteDifference {
                directions:
                    Directions::Hutchinson {
                        probes,
                        distribution,
                    },
                ..
            } => Some((*probes, *distribution)),
            _ => None,
        }
    }
}

/// The distribution of the entries of Hutchinson probes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeDistribution {
    /// ±1 with equal probability: the lowest variance of all probes with
    /// independent entries (the default).
    #[default]
    Rademacher,
    /// Standard normal entries.
    Gaussian,
}

/// The names [`Divergence`]'s [`FromStr`] reads.
const DIVERGENCE_NAMES: &str = "\"exact\", \"hutchinson\" or \"finite-difference\"";

/// Reads a mode by name, in any case: `"exact"`, `"hutchinson"` (one
/// Rademacher probe) or `"finite-difference"` (also `"finite_difference"`;
/// step 1e-3 along the basis directions); set the parameters with
/// [`Divergence::with_settings`].
impl FromStr for Divergence {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "exact" => Ok(Divergence::Exact),
            "hutchinson" => Ok(Divergence::hutchinson(1)),
            "finite-difference" | "finite_difference" => Ok(Divergence::finite_difference(1e-3)),
            _ => Err(Error::InvalidArgument(format!(
                "unknown divergence \"{name}\"; use {DIVERGENCE_NAMES}"
            ))),
        }
    }
}

impl ProbeDistribution {
    /// The distribution's name as [`FromStr`] reads it: `"rademacher"` or
    /// `"gaussian"`.
    pub fn name(&self) -> &'static str {
        match self {
            ProbeDistribution::Rademacher => "rademacher",
            ProbeDistribution::Gaussian => "gaussian",
        }
    }
}

/// Reads a distribution by name, in any case: `"rademacher"` or `"gaussian"`
/// (also `"normal"`).
impl FromStr for ProbeDistribution {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "rademacher" => Ok(ProbeDistribution::Rademacher),
            "gaussian" | "normal" => Ok(ProbeDistribution::Gaussian),
            _ => Err(Error::InvalidArgument(format!(
                "unknown probe distribution \"{name}\"; use \"rademacher\" or \"gaussian\""
            ))),
        }
    }
}

/// The directions a finite-difference divergence is taken along.
#[derive(Clone, Debug, PartialEq)]
pub enum Directions {
    /// The D basis vectors (the trace, up to the differencing error).
    Basis,
    /// Hutchinson probes, drawn and held as in [`Divergence::Hutchinson`].
    Hutchinson {
        /// Probes per sample (at least 1).
        probes: usize,
        /// The distribution of the probes' entries.
        distribution: ProbeDistribution,
    },
}

/// Counts of the field calls made by one computation (each call is one batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldCalls {
    /// Velocity evaluations (the state's own, plus finite-difference ones).
    pub velocity: usize,
    /// Jacobian–vector product calls.
    pub jvp: usize,
    /// Exact divergence calls.
    pub divergence: usize,
    /// Calls returning the velocity and the products of all directions at
    /// once ([`VelocityField::velocity_and_jvps`](crate::field::VelocityField::velocity_and_jvps)),
    /// each in place of one velocity and one JVP call.
    pub stacked: usize,
}

impl FieldCalls {
    /// The sum of both counts, field by field.
    pub(crate) fn add(&mut self, other: FieldCalls) {
        self.velocity += other.velocity;
        self.jvp += other.jvp;
        self.divergence += other.divergence;
        self.stacked += other.stacked;
    }
}

/// `n·k` probes of dimension `dim` (sample-major, then probe, then entry)
/// for the samples `first..first + n`: sample i's from its own stream,
/// [`SeededRng::for_sample`]`(seed, i, Lane::Probes)`, so its probes depend
/// on its index alone, not on its batch (chunks and shards of a run draw the
/// probes of the whole run).
///
/// Rademacher entries take one [`SeededRng::next_u64`] word each: +1 when its
/// top bit is 0, −1 otherwise. Gaussian entries are [`SeededRng::normal`]
/// draws rounded to f32.
pub(crate) fn draw_probes(
    n: usize,
    k: usize,
    dim: usize,
    distribution: ProbeDistribution,
    seed: u64,
    first: u64,
) -> Result<Vec<f32>> {
    let len = checked_product(&[n, k, dim], "probes × samples × state size")?;
    let mut values = vec![0.0f32; len];
    let per_sample = k * dim;
    if per_sample == 0 {
        return Ok(values);
    }
    for (i, row) in values.chunks_mut(per_sample).enumerate() {
        let index = first.checked_add(i as u64).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "sample index {first} + {i} does not fit in 64 bits"
            ))
        })?;
        let mut rng = SeededRng::for_sample(seed, index, Lane::Probes);
        match distribution {
            ProbeDistribution::Rademacher => {
                for v in row.iter_mut() {
                    *v = if rng.next_u64() >> 63 == 0 { 1.0 } else { -1.0 };
                }
            }
            ProbeDistribution::Gaussian => rng.fill_normal_f32(row.iter_mut()),
        }
    }
    Ok(values)
}

/// Rows `indices` of every extra, in that order (rows may repeat; shared
/// extras whole).
pub(crate) fn gather_extras(extras: &Extras, indices: &[usize]) -> Extras {
    extras.select(indices)
}

/// Where the directions of a solve come from.
enum Probes {
    /// eₚ for p = 0..D; the estimate sums (J eₚ)ₚ.
    Basis,
    /// K fixed random probes per sample, `[N·K·D]`; the estimate is the mean of
    /// εᵀ J ε.
    Random(Vec<f32>),
}

/// How a direction's product J·v is obtained.
#[derive(Clone, Copy)]
enum Product {
    /// One JVP call per chunk.
    Jvp,
    /// One velocity call per chunk on x + εv and x − εv stacked.
    Central(f64),
}

/// One batch of consecutive (sample, direction) rows and its conditioning.
struct Chunk {
    start: usize,
    len: usize,
    extras: Extras,
}

/// The directional-derivative estimator of one solve with its buffers.
pub(crate) struct ProbeEstimator {
    probes: Probes,
    product: Product,
    /// Directions per sample, P (D for the basis, K for random probes).
    per_sample: usize,
    dim: usize,
    /// `[rows, ...state_shape]`, the first entry set per call.
    shape: Vec<usize>,
    chunks: Vec<Chunk>,
    /// The states handed to the field, `[call rows, D]`.
    x: Vec<f32>,
    /// The chunk's directions, `[chunk rows, D]`.
    v: Vec<f32>,
    /// The field's output, `[call rows, D]`.
    out: Vec<f32>,
    /// Times of the call rows.
    t: Vec<f64>,
}

/// Row bounds of the derivative calls.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkLimits {
    /// The most rows of one call.
    pub max_rows: usize,
    /// The most bytes of the f32 state-shaped tensors of one call.
    pub max_bytes: usize,
}

impl ProbeEstimator {
    /// An estimator for `n` samples of `state_shape` (D elements) in `mode`, with
    /// the random probes `random` (`[n·K·D]`) where the mode needs them.
    pub(crate) fn new(
        mode: &Divergence,
        random: Option<Vec<f32>>,
        n: usize,
        state_shape: &[usize],
        extras: &Extras,
        limits: ChunkLimits,
    ) -> Result<Self> {
        let dim = checked_product(state_shape, "the state size")?;
        let (product, basis) = match mode {
            Divergence::Exact => (Product::Jvp, true),
            Divergence::Hutchinson { .. } => (Product::Jvp, false),
            Divergence::FiniteDifference {
                epsilon,
                directions,
            } => (
                Product::Central(*epsilon),
                matches!(directions, Directions::Basis),
            ),
        };
        let (probes, per_sample) = if basis {
            (Probes::Basis, dim)
        } else {
            let k = mode.random_probes().map_or(1, |(k, _)| k);
            let values = random
                .ok_or_else(|| Error::internal("random probes are missing for this solve"))?;
            if values.len() != checked_product(&[n, k, dim], "samples × probes × state size")? {
                return Err(Error::Shape {
                    tensor: "probes".to_string(),
                    expected: format!("[{n}, {k}, {dim}]"),
                    actual: vec![values.len()],
                });
            }
            (Probes::Random(values), k)
        };
        let total = checked_product(&[n, per_sample], "samples × probes")?;
        // Rows of one call and the f32 tensors of that shape it touches: a JVP
        // call reads x and v and writes out; a central difference reads and
        // writes two rows per direction.
        let (rows_per_direction, tensors) = match product {
            Product::Jvp => (1, 3),
            Product::Central(_) => (2, 2),
        };
        let bytes_per_row = checked_product(
            &[tensors, dim, std::mem::size_of::<f32>()],
            "the bytes of one row",
        )?
        .max(1);
        let call_rows = limits.max_rows.min(limits.max_bytes / bytes_per_row);
        let chunk_rows = (call_rows / rows_per_direction).max(1).min(total.max(1));
        let mut chunks = Vec::with_capacity(total.div_ceil(chunk_rows));
        for rows in row_chunks(total, chunk_rows) {
            let (start, len) = (rows.start, rows.len());
            let chunk_extras = if extras.is_empty() {
                Extras::new()
            } else {
                let samples: Vec<usize> = (start..start + len).map(|g| g / per_sample).collect();
                let mut indices = samples.clone();
                if rows_per_direction == 2 {
                    indices.extend_from_slice(&samples);
                }
                gather_extras(extras, &indices)
            };
            chunks.push(Chunk {
                start,
                len,
                extras: chunk_extras,
            });
        }
        let call_rows = chunk_rows * rows_per_direction;
        let mut shape = vec![0];
        shape.extend_from_slice(state_shape);
        Ok(Self {
            probes,
            product,
            per_sample,
            dim,
            shape,
            chunks,
            x: vec![0.0; call_rows * dim],
            v: vec![0.0; chunk_rows * dim],
            out: vec![0.0; call_rows * dim],
            t: vec![0.0; call_rows],
        })
    }

    /// Writes the divergence of every sample into `div`: along the basis
    /// the sum over the D directions (`[N]`), with K random probes each
    /// probe's estimate vᵀJv (`[N·K]`, sample-major).
    ///
    /// `y` holds the f64 states in its first D columns, `x32` the same states
    /// rounded to f32 (`[N·D]`), `t` one time per sample.
    pub(crate) fn estimate(
        &mut self,
        field: &dyn VelocityField,
        y: ndarray::ArrayView2<'_, f64>,
        x32: &[f32],
        t: &[f64],
        div: &mut [f64],
        calls: &mut FieldCalls,
    ) -> Result<()> {
        div.iter_mut().for_each(|d| *d = 0.0);
        let dim = self.dim;
        let per_sample = self.per_sample;
        for chunk in &self.chunks {
            let n = chunk.len;
            // Fill the directions and the inputs of this chunk.
            for r in 0..n {
                let g = chunk.start + r;
                let (i, p) = (g / per_sample, g % per_sample);
                let v = &mut self.v[r * dim..(r + 1) * dim];
                match &self.probes {
                    Probes::Basis => {
                        v.iter_mut().for_each(|e| *e = 0.0);
                        v[p] = 1.0;
                    }
                    Probes::Random(values) => v.copy_from_slice(&values[g * dim..(g + 1) * dim]),
                }
                match self.product {
                    Product::Jvp => {
                        self.x[r * dim..(r + 1) * dim]
                            .copy_from_slice(&x32[i * dim..(i + 1) * dim]);
                        self.t[r] = t[i];
                    }
                    Product::Central(h) => {
                        let row = y.row(i);
                        for (d, &vd) in v.iter().enumerate() {
                            let step = h * f64::from(vd);
                            self.x[r * dim + d] = (row[d] + step) as f32;
                            self.x[(n + r) * dim + d] = (row[d] - step) as f32;
                        }
                        self.t[r] = t[i];
                        self.t[n + r] = t[i];
                    }
                }
            }
            // One field call for the whole chunk.
            match self.product {
                Product::Jvp => {
                    self.shape[0] = n;
                    let x = view(&self.shape, &self.x[..n * dim], "x")?;
                    let v = view(&self.shape, &self.v[..n * dim], "v")?;
                    let out = view_mut(&self.shape, &mut self.out[..n * dim])?;
                    field.jvp(x, &self.t[..n], &chunk.extras, v, out)?;
                    calls.jvp += 1;
                }
                Product::Central(_) => {
                    self.shape[0] = 2 * n;
                    let x = view(&self.shape, &self.x[..2 * n * dim], "x")?;
                    let out = view_mut(&self.shape, &mut self.out[..2 * n * dim])?;
                    field.velocity(x, &self.t[..2 * n], &chunk.extras, out)?;
                    calls.velocity += 1;
                }
            }
            // Accumulate vᵀ J v per sample.
            for r in 0..n {
                let g = chunk.start + r;
                let (i, p) = (g / per_sample, g % per_sample);
                let plus = &self.out[r * dim..(r + 1) * dim];
                let value = match (&self.probes, self.product) {
                    (Probes::Basis, Product::Jvp) => f64::from(plus[p]),
                    (Probes::Basis, Product::Central(h)) => {
                        let minus = f64::from(self.out[(n + r) * dim + p]);
                        (f64::from(plus[p]) - minus) / (2.0 * h)
                    }
                    (Probes::Random(_), Product::Jvp) => dot(&self.v[r * dim..(r + 1) * dim], plus),
                    (Probes::Random(_), Product::Central(h)) => {
                        let minus = &self.out[(n + r) * dim..(n + r + 1) * dim];
                        let v = &self.v[r * dim..(r + 1) * dim];
                        (dot(v, plus) - dot(v, minus)) / (2.0 * h)
                    }
                };
                match self.probes {
                    Probes::Basis => div[i] += value,
                    Probes::Random(_) => div[g] = value,
                }
            }
        }
        Ok(())
    }
}

/// Σ a·b in f64.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// A read-only view of `data` as `shape`.
pub(crate) fn view<'a>(
    shape: &[usize],
    data: &'a [f32],
    tensor: &str,
) -> Result<ArrayViewD<'a, f32>> {
    ArrayViewD::from_shape(IxDyn(shape), data).map_err(|_| Error::Shape {
        tensor: tensor.to_string(),
        expected: format!("{shape:?} ({} elements)", shape.iter().product::<usize>()),
        actual: vec![data.len()],
    })
}

/// A mutable view of `data` as `shape`.
pub(crate) fn view_mut<'a>(shape: &[usize], data: &'a mut [f32]) -> Result<ArrayViewMutD<'a, f32>> {
    let len = data.len();
    ArrayViewMutD::from_shape(IxDyn(shape), data).map_err(|_| Error::Shape {
        tensor: "the output".to_string(),
        expected: format!("{shape:?} ({} elements)", shape.iter().product::<usize>()),
        actual: vec![len],
    })
}
