//! Analytic velocity fields with closed forms, used as test oracles.
//!
//! [`GaussianMixture`] is the exact marginal velocity field that carries the
//! source N(0, I) to a mixture of isotropic Gaussians along an affine path. Its
//! velocity, divergence, Jacobian–vector products, score and log-density are all
//! closed forms, so every layer of fmrt (solvers, likelihoods, schedule changes)
//! can be checked against it.
//!
//! With data q = Σ_k π_k N(μ_k, s_k² I) and coefficients α, σ, α', σ' at time t:
//! - the marginal p_t is Σ_k π_k N(α μ_k, v_k I) with v_k = α² s_k² + σ²;
//! - the posterior weights are w_k(x) ∝ π_k N(x; α μ_k, v_k I) (log-sum-exp);
//! - with r_k = x − α μ_k and β_k = (α α' s_k² + σ σ') / v_k, the velocity is
//!   u = Σ_k w_k u_k, u_k = α' μ_k + β_k r_k;
//! - with g_k = −r_k / v_k and ḡ = Σ_k w_k g_k = ∇ log p_t (the score), the
//!   Jacobian is J = Σ_k w_k β_k I + Σ_k w_k u_k (g_k − ḡ)ᵀ, so
//!   div u = Σ_k w_k [D β_k + u_k·(g_k − ḡ)].

use std::sync::Arc;

use ndarray::{Array2, ArrayView2, ArrayViewD, ArrayViewMut2, ArrayViewMutD, Ix2};

use crate::field::{check_times, time_of};
use crate::field::{Derivatives, Extras, VelocityField};
use crate::random::SeededRng;
use crate::scheduler::{Coefficients, Schedule};
use crate::source::LN_2PI;
use crate::{Error, Result};

/// The exact marginal velocity field of an affine path from N(0, I) to a mixture
/// of isotropic Gaussians Σ_k π_k N(μ_k, s_k² I) in D dimensions.
///
/// The state shape is `[D]`, so batches are `[B, D]`. Usable as an
/// `Arc<dyn VelocityField>` (f32 velocity, exact JVP and divergence) and directly
/// through its inherent f64 methods ([`log_density`](Self::log_density),
/// [`sample_data`](Self::sample_data), …), which accept f32 or f64 input.
#[derive(Clone, Debug)]
pub struct GaussianMixture {
    /// Normalised weights π_k.
    weights: Vec<f64>,
    /// ln π_k.
    log_weights: Vec<f64>,
    /// Means μ_k, `[K, D]`.
    means: Array2<f64>,
    /// The same means as one contiguous row-major buffer, for the hot loops.
    means_flat: Vec<f64>,
    /// ‖μ_k‖².
    mean_norms: Vec<f64>,
    /// Standard deviations s_k.
    stds: Vec<f64>,
    schedule: Arc<dyn Schedule>,
    state_shape: [usize; 1],
}

/// Per-time quantities of every component, recomputed when t changes.
struct TimeTerms {
    /// What the terms were computed for (`None`: nothing yet).
    key: Option<At>,
    coef: Coefficients,
    /// v_k = α² s_k² + σ².
    var: Vec<f64>,
    /// β_k = (α α' s_k² + σ σ') / v_k.
    beta: Vec<f64>,
    /// ln π_k − (D/2) ln(2π v_k).
    log_norm: Vec<f64>,
}

/// Scratch buffers of one batched call (allocated once per call, reused for
/// every sample).
struct Work {
    terms: TimeTerms,
    /// The current sample in f64, `[D]`.
    x: Vec<f64>,
    /// Log-weights, then posterior weights, `[K]`.
    w: Vec<f64>,
    /// ‖r_k‖², `[K]`.
    r2: Vec<f64>,
    /// An accumulator, `[D]`.
    acc: Vec<f64>,
    /// A second accumulator, `[D]`.
    acc2: Vec<f64>,
}

impl Work {
    fn new(k: usize, d: usize) -> Self {
        Self {
            terms: TimeTerms {
                key: None,
                coef: Coefficients {
                    alpha: 0.0,
                    sigma: 0.0,
                    d_alpha: 0.0,
                    d_sigma: 0.0,
                },
                var: vec![0.0; k],
                beta: vec![0.0; k],
                log_norm: vec![0.0; k],
            },
            x: vec![0.0; d],
            w: vec![0.0; k],
            r2: vec![0.0; k],
            acc: vec![0.0; d],
            acc2: vec![0.0; d],
        }
    }
}

/// Which time the posterior is taken at.
#[derive(Clone, Copy, PartialEq)]
enum At {
    /// Time t of the path, through the schedule.
    Time(f64),
    /// The data distribution itself (α = 1, σ = 0), independent of the schedule.
    Data,
}

/// The most components [`GaussianMixture::ring`] builds (2^20): far more than
/// any test or demo needs, and at most about 100 MiB of parameters and scratch.
pub const MAX_RING_COMPONENTS: usize = 1 << 20;

impl GaussianMixture {
    /// A mixture with weights `weights` (any positive finite values; normalised
    /// internally), means `means` (`[K, D]`) and standard deviations `stds`
    /// (`[K]`, positive and finite), on the path of `schedule`.
    ///
    /// Fails with [`Error::InvalidArgument`] for K = 0 or D = 0, non-positive or
    /// non-finite weights or standard deviations, non-finite means, and with
    /// [`Error::Shape`] when `weights` or `stds` do not have K entries.
    pub fn new(
        weights: &[f64],
        means: ArrayView2<'_, f64>,
        stds: &[f64],
        schedule: Arc<dyn Schedule>,
    ) -> Result<Self> {
        let (k, d) = means.dim();
        if k == 0 || d == 0 {
            return Err(Error::InvalidArgument(format!(
                "a Gaussian mixture needs at least one component and one dimension, \
                 got means of shape [{k}, {d}]"
            )));
        }
        for (name, len) in [("weights", weights.len()), ("stds", stds.len())] {
            if len != k {
                return Err(Error::Shape {
                    tensor: name.to_string(),
                    expected: format!("[{k}] (one per component of means)"),
                    actual: vec![len],
                });
            }
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w > 0.0))
        {
            return Err(Error::InvalidArgument(format!(
                "mixture weight {i} is {w}; weights must be positive and finite"
            )));
        }
        if let Some((i, s)) = stds
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(Error::InvalidArgument(format!(
                "standard deviation {i} is {s}; standard deviations must be positive and finite"
            )));
        }
        if means.iter().any(|m| !m.is_finite()) {
            return Err(Error::InvalidArgument(
                "mixture means must be finite".to_string(),
            ));
        }
        let total: f64 = weights.iter().sum();
        if !total.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "the sum of the mixture weights is {total}"
            )));
        }
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let log_weights = weights.iter().map(|&w| libm::log(w)).collect();
        let mean_norms = means
            .outer_iter()
            .map(|m| m.iter().map(|v| v * v).sum())
            .collect();
        Ok(Self {
            weights,
            log_weights,
            means: means.to_owned(),
            means_flat: means.iter().copied().collect(),
            mean_norms,
            stds: stds.to_vec(),
            schedule,
            state_shape: [d],
        })
    }

    /// `k` equally weighted components with standard deviation `std`, their means
    /// evenly spaced on the circle of radius `radius` in 2-D, the first at
    /// (radius, 0): μ_j = radius·(cos 2πj/k, sin 2πj/k).
    ///
    /// `k` is at most [`MAX_RING_COMPONENTS`]: the ring allocates its means
    /// from the count alone, so a count from outside (the C API) must not
    /// decide how much memory is taken.
    pub fn ring(k: usize, radius: f64, std: f64, schedule: Arc<dyn Schedule>) -> Result<Self> {
        if k == 0 {
            return Err(Error::InvalidArgument(
                "a ring needs at least one component".to_string(),
            ));
        }
        if k > MAX_RING_COMPONENTS {
            return Err(Error::InvalidArgument(format!(
                "a ring of {k} components is more than the {MAX_RING_COMPONENTS} \
                 fmrt accepts (fmrt::field::analytic::MAX_RING_COMPONENTS)"
            )));
        }
        if !(radius.is_finite() && radius >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "ring radius {radius} must be finite and non-negative"
            )));
        }
        let means = Array2::from_shape_fn((k, 2), |(j, c)| {
            let angle = 2.0 * std::f64::consts::PI * j as f64 / k as f64;
            radius
                * if c == 0 {
                    libm::cos(angle)
                } else {
                    libm::sin(angle)
                }
        });
        Self::new(&vec![1.0; k], means.view(), &vec![std; k], schedule)
    }

    /// The number of components K.
    pub fn num_components(&self) -> usize {
        self.weights.len()
    }

    /// The dimension D of a state.
    pub fn dim(&self) -> usize {
        self.state_shape[0]
    }

    /// The normalised weights π_k.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The means μ_k, `[K, D]`.
    pub fn means(&self) -> ArrayView2<'_, f64> {
        self.means.view()
    }

    /// The standard deviations s_k.
    pub fn stds(&self) -> &[f64] {
        &self.stds
    }

    /// The schedule of the path.
    pub fn schedule(&self) -> &Arc<dyn Schedule> {
        &self.schedule
    }

    /// The means μ_k as contiguous slices.
    fn mean_rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.means_flat.chunks_exact(self.dim())
    }

    /// Checks a batch `[B, D]` and its times.
    fn check_input(&self, tensor: &str, shape: &[usize], t: Option<&[f64]>) -> Result<()> {
        if shape.len() != 2 || shape[1] != self.dim() {
            return Err(Error::Shape {
                tensor: tensor.to_string(),
                expected: format!("[B, {}]", self.dim()),
                actual: shape.to_vec(),
            });
        }
        match t {
            Some(t) => check_times(t, shape[0]),
            None => Ok(()),
        }
    }

    /// Fills the per-component terms for `at` unless they are already current.
    fn update_terms(&self, terms: &mut TimeTerms, at: At) -> Result<()> {
        if terms.key == Some(at) {
            return Ok(());
        }
        let (t, coef) = match at {
            At::Time(t) => (Some(t), self.schedule.coefficients(t)),
            At::Data => (
                None,
                Coefficients {
                    alpha: 1.0,
                    sigma: 0.0,
                    d_alpha: 0.0,
                    d_sigma: 0.0,
                },
            ),
        };
        let Coefficients {
            alpha: a,
            sigma: s,
            d_alpha: da,
            d_sigma: ds,
        } = coef;
        let when = match t {
            Some(t) => format!("t = {t}"),
            None => "the data distribution".to_string(),
        };
        if ![a, s, da, ds].iter().all(|v| v.is_finite()) {
            return Err(Error::singular(format!(
                "schedule coefficients at {when} are not finite \
                 (alpha = {a}, sigma = {s}, d_alpha = {da}, d_sigma = {ds})"
            )));
        }
        let half_d = 0.5 * self.dim() as f64;
        for k in 0..self.num_components() {
            let s2 = self.stds[k] * self.stds[k];
            let v = a * a * s2 + s * s;
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::singular(format!(
                    "the marginal variance of component {k} at {when} is {v} \
                     (alpha = {a}, sigma = {s})"
                )));
            }
            terms.var[k] = v;
            terms.beta[k] = (a * da * s2 + s * ds) / v;
            terms.log_norm[k] = self.log_weights[k] - half_d * (LN_2PI + libm::log(v));
        }
        terms.key = Some(at);
        terms.coef = coef;
        Ok(())
    }

    /// Loads sample `i` of `x`, computes its posterior log-weights into `work.w`
    /// and ‖r_k‖² into `work.r2`, turns the log-weights into weights and returns
    /// log p(x) (the log-sum-exp).
    fn posterior_of<A: Copy + Into<f64>>(
        &self,
        x: &ArrayView2<'_, A>,
        i: usize,
        at: At,
        work: &mut Work,
    ) -> Result<f64> {
        self.update_terms(&mut work.terms, at)?;
        for (dst, &src) in work.x.iter_mut().zip(x.row(i).iter()) {
            *dst = src.into();
        }
        let alpha = work.terms.coef.alpha;
        let mut max = f64::NEG_INFINITY;
        for (k, mean) in self.mean_rows().enumerate() {
            let r2: f64 = work
                .x
                .iter()
                .zip(mean.iter())
                .map(|(&xv, &m)| {
                    let r = xv - alpha * m;
                    r * r
                })
                .sum();
            let logit = work.terms.log_norm[k] - 0.5 * r2 / work.terms.var[k];
            work.r2[k] = r2;
            work.w[k] = logit;
            if logit > max {
                max = logit;
            }
        }
        if !max.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "sample {i} of x is not finite (or too large to evaluate)"
            )));
        }
        let mut sum = 0.0;
        for w in work.w.iter_mut() {
            *w = (*w - max).exp();
            sum += *w;
        }
        for w in work.w.iter_mut() {
            *w /= sum;
        }
        Ok(max + sum.ln())
    }

    /// Writes u(x) of the sample loaded by `posterior_of` into `work.acc`.
    fn velocity_of_loaded(&self, work: &mut Work) {
        let Coefficients {
            alpha: a,
            d_alpha: da,
            ..
        } = work.terms.coef;
        // u = (Σ w_k β_k)·x + Σ_k w_k (α' − α β_k)·μ_k
        let mut beta_bar = 0.0;
        work.acc.iter_mut().for_each(|v| *v = 0.0);
        for (k, mean) in self.mean_rows().enumerate() {
            let (w, beta) = (work.w[k], work.terms.beta[k]);
            beta_bar += w * beta;
            let c = w * (da - a * beta);
            for (acc, &m) in work.acc.iter_mut().zip(mean.iter()) {
                *acc += c * m;
            }
        }
        for (acc, &xv) in work.acc.iter_mut().zip(work.x.iter()) {
            *acc += beta_bar * xv;
        }
    }

    /// Writes the score ḡ = ∇ log p_t of the loaded sample into `work.acc2`.
    fn score_of_loaded(&self, work: &mut Work) {
        // ḡ = −(Σ w_k / v_k)·x + α Σ_k (w_k / v_k)·μ_k
        let a = work.terms.coef.alpha;
        let mut inv_bar = 0.0;
        work.acc2.iter_mut().for_each(|v| *v = 0.0);
        for (k, mean) in self.mean_rows().enumerate() {
            let c = work.w[k] / work.terms.var[k];
            inv_bar += c;
            for (acc, &m) in work.acc2.iter_mut().zip(mean.iter()) {
                *acc += a * c * m;
            }
        }
        for (acc, &xv) in work.acc2.iter_mut().zip(work.x.iter()) {
            *acc -= inv_bar * xv;
        }
    }

    /// Runs `per_sample(i, work)` after loading each sample's posterior at its time.
    fn for_each_sample<A: Copy + Into<f64>>(
        &self,
        x: &ArrayView2<'_, A>,
        t: &[f64],
        mut per_sample: impl FnMut(usize, &mut Work, f64) -> Result<()>,
    ) -> Result<()> {
        self.check_input("x", x.shape(), Some(t))?;
        let mut work = Work::new(self.num_components(), self.dim());
        for i in 0..x.nrows() {
            let log_p = self.posterior_of(x, i, At::Time(time_of(t, i)), &mut work)?;
            per_sample(i, &mut work, log_p)?;
        }
        Ok(())
    }

    /// Writes the exact velocity u(x, t) (f64) into `out` (`[B, D]`).
    pub fn velocity_into_f64<A: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
        mut out: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        self.check_input("out", out.shape(), None)?;
        if out.nrows() != x.nrows() {
            return Err(Error::Shape {
                tensor: "out".to_string(),
                expected: format!("[{}, {}] (the shape of x)", x.nrows(), self.dim()),
                actual: out.shape().to_vec(),
            });
        }
        self.for_each_sample(&x, t, |i, work, _| {
            self.velocity_of_loaded(work);
            for (o, &v) in out.row_mut(i).iter_mut().zip(work.acc.iter()) {
                *o = v;
            }
            Ok(())
        })
    }

    /// The exact velocity u(x, t) in f64 for `x` of shape `[B, D]` (f32 or f64)
    /// and times `t` (`B` values or one).
    pub fn velocity_f64<A: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
    ) -> Result<Array2<f64>> {
        let mut out = Array2::zeros((x.nrows(), self.dim()));
        self.velocity_into_f64(x, t, out.view_mut())?;
        Ok(out)
    }

    /// The exact divergence div u(x, t) of each sample, in f64.
    pub fn divergence_f64<A: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
    ) -> Result<Vec<f64>> {
        let mut out = vec![0.0; x.nrows()];
        self.divergence_into_f64(x, t, &mut out)?;
        Ok(out)
    }

    fn divergence_into_f64<A: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
        out: &mut [f64],
    ) -> Result<()> {
        if out.len() != x.nrows() {
            return Err(Error::Shape {
                tensor: "out".to_string(),
                expected: format!("[{}] (one per sample of x)", x.nrows()),
                actual: vec![out.len()],
            });
        }
        let dim = self.dim() as f64;
        self.for_each_sample(&x, t, |i, work, _| {
            self.velocity_of_loaded(work);
            self.score_of_loaded(work);
            let Coefficients {
                alpha: a,
                d_alpha: da,
                ..
            } = work.terms.coef;
            // div = Σ_k w_k [D β_k + u_k·g_k] − u·ḡ, where
            // u_k·g_k = −(α' μ_k·r_k + β_k ‖r_k‖²)/v_k and μ_k·r_k = μ_k·x − α‖μ_k‖².
            let mut sum = 0.0;
            for (k, mean) in self.mean_rows().enumerate() {
                let (w, beta, var) = (work.w[k], work.terms.beta[k], work.terms.var[k]);
                let mx: f64 = mean.iter().zip(work.x.iter()).map(|(m, x)| m * x).sum();
                let mr = mx - a * self.mean_norms[k];
                let ug = -(da * mr + beta * work.r2[k]) / var;
                sum += w * (dim * beta + ug);
            }
            let u_dot_g: f64 = work
                .acc
                .iter()
                .zip(work.acc2.iter())
                .map(|(u, g)| u * g)
                .sum();
            out[i] = sum - u_dot_g;
            Ok(())
        })
    }

    /// The exact Jacobian–vector product J(x, t)·v in f64 (J = ∂u/∂x per sample);
    /// `v` has the shape of `x`.
    pub fn jvp_f64<A: Copy + Into<f64>, V: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
        v: ArrayView2<'_, V>,
    ) -> Result<Array2<f64>> {
        if v.shape() != x.shape() {
            return Err(Error::Shape {
                tensor: "v".to_string(),
                expected: format!("{:?} (the shape of x)", x.shape()),
                actual: v.shape().to_vec(),
            });
        }
        let mut out = Array2::zeros((x.nrows(), self.dim()));
        self.jvp_into(&x, t, &v, |i, j, val| out[[i, j]] = val)?;
        Ok(out)
    }

    /// J·v for each sample, handing every element to `write(i, j, value)`.
    fn jvp_into<A: Copy + Into<f64>, V: Copy + Into<f64>>(
        &self,
        x: &ArrayView2<'_, A>,
        t: &[f64],
        v: &ArrayView2<'_, V>,
        mut write: impl FnMut(usize, usize, f64),
    ) -> Result<()> {
        self.for_each_sample(x, t, |i, work, _| {
            self.velocity_of_loaded(work);
            let Coefficients {
                alpha: a,
                d_alpha: da,
                ..
            } = work.terms.coef;
            let vi = v.row(i);
            // J v = (Σ w_k β_k) v + Σ_k w_k (g_k·v) u_k − (ḡ·v) u, with
            // g_k·v = −(x·v − α μ_k·v)/v_k and u_k = (α' − α β_k) μ_k + β_k x.
            let xv: f64 = work
                .x
                .iter()
                .zip(vi.iter())
                .map(|(&x, &v)| x * v.into())
                .sum();
            let (mut beta_bar, mut gbar_v, mut x_coef) = (0.0, 0.0, 0.0);
            work.acc2.iter_mut().for_each(|s| *s = 0.0);
            for (k, mean) in self.mean_rows().enumerate() {
                let (w, beta, var) = (work.w[k], work.terms.beta[k], work.terms.var[k]);
                let mv: f64 = mean
                    .iter()
                    .zip(vi.iter())
                    .map(|(&m, &v)| m * v.into())
                    .sum();
                let gv = -(xv - a * mv) / var;
                beta_bar += w * beta;
                gbar_v += w * gv;
                x_coef += w * gv * beta;
                let c = w * gv * (da - a * beta);
                for (s, &m) in work.acc2.iter_mut().zip(mean.iter()) {
                    *s += c * m;
                }
            }
            for (j, ((&s, &u), (&xj, &vj))) in work
                .acc2
                .iter()
                .zip(work.acc.iter())
                .zip(work.x.iter().zip(vi.iter()))
                .enumerate()
            {
                write(i, j, beta_bar * vj.into() + s + x_coef * xj - gbar_v * u);
            }
            Ok(())
        })
    }

    /// The score ∇ₓ log p_t(x) of each sample, in f64, `[B, D]`.
    pub fn score<A: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
    ) -> Result<Array2<f64>> {
        let mut out = Array2::zeros((x.nrows(), self.dim()));
        self.for_each_sample(&x, t, |i, work, _| {
            self.score_of_loaded(work);
            for (o, &g) in out.row_mut(i).iter_mut().zip(work.acc2.iter()) {
                *o = g;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The exact log-density log p_t(x) of the path marginal for each sample.
    ///
    /// At t = 1 (α = 1, σ = 0) this is the data density; at t = 0 with α(0) = 0,
    /// σ(0) = 1 it is the source N(0, I).
    pub fn log_density<A: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
    ) -> Result<Vec<f64>> {
        let mut out = vec![0.0; x.nrows()];
        self.for_each_sample(&x, t, |i, _, log_p| {
            out[i] = log_p;
            Ok(())
        })?;
        Ok(out)
    }

    /// The log-density of the data mixture itself, independent of the schedule.
    pub fn data_log_density<A: Copy + Into<f64>>(&self, x: ArrayView2<'_, A>) -> Result<Vec<f64>> {
        self.check_input("x", x.shape(), None)?;
        let mut work = Work::new(self.num_components(), self.dim());
        (0..x.nrows())
            .map(|i| self.posterior_of(&x, i, At::Data, &mut work))
            .collect()
    }

    /// The posterior probabilities w_k(x, t) of the components, `[B, K]`.
    pub fn posterior<A: Copy + Into<f64>>(
        &self,
        x: ArrayView2<'_, A>,
        t: &[f64],
    ) -> Result<Array2<f64>> {
        let mut out = Array2::zeros((x.nrows(), self.num_components()));
        self.for_each_sample(&x, t, |i, work, _| {
            for (o, &w) in out.row_mut(i).iter_mut().zip(work.w.iter()) {
                *o = w;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// For each sample, the component with the largest posterior probability under
    /// the data mixture (t = 1, independent of the schedule); ties go to the lower
    /// index.
    pub fn assign<A: Copy + Into<f64>>(&self, x: ArrayView2<'_, A>) -> Result<Vec<usize>> {
        self.check_input("x", x.shape(), None)?;
        let mut work = Work::new(self.num_components(), self.dim());
        (0..x.nrows())
            .map(|i| {
                self.posterior_of(&x, i, At::Data, &mut work)?;
                let mut best = 0;
                for (k, &w) in work.w.iter().enumerate() {
                    if w > work.w[best] {
                        best = k;
                    }
                }
                Ok(best)
            })
            .collect()
    }

    /// `n` exact draws from the data mixture with their component labels.
    ///
    /// Reproducible on every platform: a [`SeededRng`] seeded with `seed` is used,
    /// per sample, first for the component (one [`SeededRng::uniform`] draw U; the
    /// first k with U < π_1 + … + π_k, summed in order in f64, else the last), then
    /// for D [`SeededRng::normal`] draws z (the polar method's spare carries over
    /// between samples); x = μ_k + s_k·z in f64, rounded to f32.
    pub fn sample_data_labeled(&self, n: usize, seed: u64) -> (Array2<f32>, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let mut cumulative = Vec::with_capacity(self.num_components());
        let mut acc = 0.0;
        for &w in &self.weights {
            acc += w;
            cumulative.push(acc);
        }
        let last = self.num_components() - 1;
        let mut out = Array2::zeros((n, self.dim()));
        let mut labels = Vec::with_capacity(n);
        for mut row in out.outer_iter_mut() {
            let u = rng.uniform();
            let k = cumulative.iter().position(|&c| u < c).unwrap_or(last);
            labels.push(k);
            let s = self.stds[k];
            for (o, &m) in row.iter_mut().zip(self.means.row(k).iter()) {
                *o = (m + s * rng.normal()) as f32;
            }
        }
        (out, labels)
    }

    /// `n` exact draws from the data mixture (see
    /// [`sample_data_labeled`](Self::sample_data_labeled) for the generator).
    pub fn sample_data(&self, n: usize, seed: u64) -> Array2<f32> {
        self.sample_data_labeled(n, seed).0
    }

    /// Views a dynamic-rank f32 batch as `[B, D]`, naming `tensor` on failure.
    fn as_batch<'a>(&self, tensor: &str, x: ArrayViewD<'a, f32>) -> Result<ArrayView2<'a, f32>> {
        self.check_input(tensor, x.shape(), None)?;
        let shape = x.shape().to_vec();
        x.into_dimensionality::<Ix2>().map_err(|_| Error::Shape {
            tensor: tensor.to_string(),
            expected: format!("[B, {}]", self.dim()),
            actual: shape,
        })
    }

    fn as_batch_mut<'a>(
        &self,
        tensor: &str,
        x: ArrayViewMutD<'a, f32>,
        rows: usize,
    ) -> Result<ArrayViewMut2<'a, f32>> {
        let shape = x.shape().to_vec();
        if shape != [rows, self.dim()] {
            return Err(Error::Shape {
                tensor: tensor.to_string(),
                expected: format!("[{rows}, {}] (the shape of x)", self.dim()),
                actual: shape,
            });
        }
        x.into_dimensionality::<Ix2>().map_err(|_| Error::Shape {
            tensor: tensor.to_string(),
            expected: format!("[{rows}, {}]", self.dim()),
            actual: shape.clone(),
        })
    }
}

impl VelocityField for GaussianMixture {
    fn state_shape(&self) -> Option<&[usize]> {
        Some(&self.state_shape)
    }

    fn derivatives(&self) -> Derivatives {
        Derivatives {
            jvp: true,
            stacked_jvp: false,
            divergence: true,
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        extras.expect_none("the Gaussian mixture")?;
        let x = self.as_batch("x", x)?;
        let mut out = self.as_batch_mut("out", out, x.nrows())?;
        self.for_each_sample(&x, t, |i, work, _| {
            self.velocity_of_loaded(work);
            for (o, &v) in out.row_mut(i).iter_mut().zip(work.acc.iter()) {
                *o = v as f32;
            }
            Ok(())
        })
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        extras.expect_none("the Gaussian mixture")?;
        let x = self.as_batch("x", x)?;
        if v.shape() != x.shape() {
            return Err(Error::Shape {
                tensor: "v".to_string(),
                expected: format!("{:?} (the shape of x)", x.shape()),
                actual: v.shape().to_vec(),
            });
        }
        let v = self.as_batch("v", v)?;
        let mut out = self.as_batch_mut("out", out, x.nrows())?;
        self.jvp_into(&x, t, &v, |i, j, val| out[[i, j]] = val as f32)
    }

    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        extras.expect_none("the Gaussian mixture")?;
        let x = self.as_batch("x", x)?;
        self.divergence_into_f64(x, t, out)
    }
}
