//! What fixed and adaptive stepping share: the right-hand side in normalised
//! time, and one explicit Runge–Kutta step over buffers allocated once.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::norm::NormGroups;
use super::{ButcherTableau, ErrorNorm, OdeSystem, Real};
use crate::{Error, Result};

/// The caller's system seen in normalised time s ∈ [0, 1]:
/// `dy/ds = (end_i − start_i)·f(start_i + s·(end_i − start_i), y)` per sample,
/// in the state's float type `F`.
pub(super) struct Rhs<'a, F: Real = f64> {
    system: &'a mut dyn OdeSystem<F>,
    starts: Vec<f64>,
    ends: Vec<f64>,
    spans: Vec<f64>,
    /// `Some(span)` when every sample has the same span (one scaling pass).
    common_span: Option<f64>,
    /// Time buffer handed to the system, one value per sample.
    t: Vec<f64>,
    /// Batched evaluations so far.
    pub nfe: usize,
}

impl<'a, F: Real> Rhs<'a, F> {
    pub fn new(system: &'a mut dyn OdeSystem<F>, starts: Vec<f64>, ends: Vec<f64>) -> Self {
        let spans: Vec<f64> = starts.iter().zip(&ends).map(|(a, b)| b - a).collect();
        let common_span = match spans.first() {
            Some(&first) if spans.iter().all(|&s| s == first) => Some(first),
            None => Some(1.0),
            _ => None,
        };
        let t = vec![0.0; starts.len()];
        Self {
            system,
            starts,
            ends,
            spans,
            common_span,
            t,
            nfe: 0,
        }
    }

    /// The physical time of sample `i` at normalised time `s` (exact at s = 1).
    pub fn time(&self, i: usize, s: f64) -> f64 {
        if s >= 1.0 {
            self.ends[i]
        } else {
            self.starts[i] + s * self.spans[i]
        }
    }

    /// Writes dy/ds at normalised time `s` into `dy`.
    pub fn eval(&mut self, s: f64, y: ArrayView2<'_, F>, dy: ArrayViewMut2<'_, F>) -> Result<()> {
        for i in 0..self.t.len() {
            self.t[i] = self.time(i, s);
        }
        self.call(y, dy)
    }

    /// Writes dy/ds into `dy` with sample `i` at its own normalised time
    /// `s[i]` (one batched call, as [`Rhs::eval`]).
    pub fn eval_each(
        &mut self,
        s: &[f64],
        y: ArrayView2<'_, F>,
        dy: ArrayViewMut2<'_, F>,
    ) -> Result<()> {
        for (i, &s) in s.iter().enumerate() {
            self.t[i] = self.time(i, s);
        }
        self.call(y, dy)
    }

    /// Calls the system at the times in `self.t` and scales by the spans.
    fn call(&mut self, y: ArrayView2<'_, F>, mut dy: ArrayViewMut2<'_, F>) -> Result<()> {
        self.system.rhs(&self.t, y, dy.view_mut())?;
        self.nfe += 1;
        match self.common_span {
            Some(1.0) => {}
            Some(span) => dy *= F::of(span),
            None => {
                for (mut row, &span) in dy.rows_mut().into_iter().zip(&self.spans) {
                    row *= F::of(span);
                }
            }
        }
        Ok(())
    }

    /// The error for a state of sample `sample` that became non-finite in the
    /// step from `s0` to `s1`.
    pub fn non_finite(&self, sample: usize, s0: f64, s1: f64) -> Error {
        Error::NonFinite {
            which: format!("state of sample {sample}"),
            location: format!(
                "at t = {} (step from t = {} to t = {}, normalised s = {s0} to {s1})",
                self.time(sample, s1),
                self.time(sample, s0),
                self.time(sample, s1),
            ),
        }
    }
}

/// One explicit Runge–Kutta method with its stage buffers.
///
/// Holds the current state `y`, the stages `k` of the last step, the new state
/// `y_new` it produced and `f_new = f(s_new, y_new)` when known. Every buffer
/// is allocated in [`Stepper::new`]; stepping only overwrites them. The
/// buffers are of the state's float type `F`; the error norm and the dense
/// output, which only adaptive solves use, are f64 only.
pub(super) struct Stepper<F: Real = f64> {
    tableau: ButcherTableau,
    k: Vec<Array2<F>>,
    y: Array2<F>,
    y_new: Array2<F>,
    /// Stage input, error estimate and other scratch work.
    work: Array2<F>,
    /// f(s_new, y_new) for methods that are not first-same-as-last (for FSAL
    /// methods it is the last stage; this buffer stays empty).
    f_new: Array2<F>,
    /// Dense-output weights b_i(θ).
    weights: Vec<f64>,
    /// Whether `k[0]` holds f(s, y) for the current state.
    k0_valid: bool,
    /// Whether f(s_new, y_new) is known for the last step.
    f_new_valid: bool,
    /// The column groups of the error norm.
    groups: NormGroups,
    /// Each group's sum of squared scaled errors over the batch.
    totals: Vec<f64>,
}

impl<F: Real> Stepper<F> {
    pub fn new(tableau: ButcherTableau, y0: ArrayView2<'_, F>) -> Self {
        let shape = y0.raw_dim();
        let stages = tableau.stages();
        let f_new = if tableau.is_fsal() {
            Array2::zeros((0, 0))
        } else {
            Array2::zeros(shape)
        };
        Self {
            k: (0..stages).map(|_| Array2::zeros(shape)).collect(),
            y: y0.to_owned(),
            y_new: Array2::zeros(shape),
            work: Array2::zeros(shape),
            f_new,
            weights: vec![0.0; stages],
            k0_valid: false,
            f_new_valid: false,
            groups: NormGroups::whole(shape[1]),
            totals: vec![0.0],
            tableau,
        }
    }

    /// Measures the error over these column groups (see
    /// [`OdeSystem::norm_groups`]) instead of all columns as one.
    pub fn with_groups(mut self, groups: NormGroups) -> Self {
        self.totals = vec![0.0; groups.len()];
        self.groups = groups;
        self
    }

    /// The column groups of the error norm.
    pub fn groups(&self) -> &NormGroups {
        &self.groups
    }

    pub fn tableau(&self) -> &ButcherTableau {
        &self.tableau
    }

    /// The current state.
    pub fn state(&self) -> &Array2<F> {
        &self.y
    }

    /// The state the last step produced.
    pub fn new_state(&self) -> &Array2<F> {
        &self.y_new
    }

    /// The final state, consuming the stepper.
    pub fn into_state(self) -> Array2<F> {
        self.y
    }

    /// f(s, y) at the current state (the first stage), evaluating it if needed.
    pub fn first_stage(&mut self, rhs: &mut Rhs<'_, F>, s: f64) -> Result<&Array2<F>> {
        if !self.k0_valid {
            rhs.eval(s, self.y.view(), self.k[0].view_mut())?;
            self.k0_valid = true;
        }
        Ok(&self.k[0])
    }

    /// Scratch access for the initial-step heuristic: the current state, its
    /// slope (must be valid), and two scratch buffers.
    pub fn scratch(&mut self) -> (&Array2<F>, &Array2<F>, &mut Array2<F>, &mut Array2<F>) {
        let (first, rest) = self.k.split_at_mut(1);
        let other = rest.first_mut().unwrap_or(&mut self.y_new);
        (&self.y, &first[0], &mut self.work, other)
    }

    /// Takes one step from `s` to `s_new`, writing `y_new` (the current state
    /// is kept). For FSAL methods this also evaluates f(s_new, y_new).
    pub fn step(&mut self, rhs: &mut Rhs<'_, F>, s: f64, s_new: f64) -> Result<()> {
        self.first_stage(rhs, s)?;
        let h = s_new - s;
        let stages = self.tableau.stages();
        let fsal = self.tableau.is_fsal();
        for i in 1..stages {
            let (done, rest) = self.k.split_at_mut(i);
            // The last stage of an FSAL method is evaluated at the new state.
            let input = if fsal && i == stages - 1 {
                &mut self.y_new
            } else {
                &mut self.work
            };
            combine(input, &self.y, h, self.tableau.a(i), done);
            let c = self.tableau.c()[i];
            let t_stage = if c == 1.0 { s_new } else { s + c * h };
            rhs.eval(t_stage, input.view(), rest[0].view_mut())?;
        }
        if !fsal {
            combine(&mut self.y_new, &self.y, h, self.tableau.b(), &self.k);
        }
        self.f_new_valid = fsal;
        Ok(())
    }

    /// Makes f(s_new, y_new) available for interpolation and the next step
    /// (free for FSAL methods, one evaluation otherwise).
    pub fn eval_new_slope(&mut self, rhs: &mut Rhs<'_, F>, s_new: f64) -> Result<()> {
        if !self.f_new_valid {
            rhs.eval(s_new, self.y_new.view(), self.f_new.view_mut())?;
            self.f_new_valid = true;
        }
        Ok(())
    }

    /// The slope at the new state; valid after [`Stepper::eval_new_slope`].
    fn new_slope(&self) -> &Array2<F> {
        if self.tableau.is_fsal() {
            &self.k[self.k.len() - 1]
        } else {
            &self.f_new
        }
    }

    /// Moves to the new state; the new slope, when known, becomes the next
    /// first stage.
    pub fn accept(&mut self) {
        std::mem::swap(&mut self.y, &mut self.y_new);
        if self.f_new_valid {
            if self.tableau.is_fsal() {
                let last = self.k.len() - 1;
                self.k.swap(0, last);
            } else {
                std::mem::swap(&mut self.k[0], &mut self.f_new);
            }
        }
        self.k0_valid = self.f_new_valid;
        self.f_new_valid = false;
    }

    /// The index of the first sample of the new state holding a non-finite value.
    pub fn non_finite_sample(&self) -> Option<usize> {
        first_non_finite_row(&self.y_new)
    }
}

/// The error norm and dense output of adaptive solves, which run in f64.
impl Stepper {
    /// The error norm of the last step of size `h`, of the scaled errors
    /// `err / (atol + rtol·max(|y|, |y_new|))`: per sample the RMS over its
    /// components (with column groups, the largest of the groups' RMS), then
    /// the maximum over samples, so that every sample meets the tolerance
    /// ([`ErrorNorm::PerSample`]); or one RMS over the whole batch (with
    /// groups, per group, then the largest; [`ErrorNorm::Batch`]). Returns
    /// the norm and the sample with the largest own norm (a non-finite one
    /// wins, so the caller can name it).
    pub fn error_norm(&mut self, h: f64, rtol: f64, atol: f64, norm: ErrorNorm) -> (f64, usize) {
        let Some(e) = self.tableau.error_weights() else {
            return (0.0, 0);
        };
        self.work.fill(0.0);
        for (kj, &ej) in self.k.iter().zip(e) {
            if ej != 0.0 {
                self.work.scaled_add(h * ej, kj);
            }
        }
        let dim = self.y.ncols();
        let ratio = |e: f64, a: f64, b: f64| {
            let r = e / (atol + rtol * a.abs().max(b.abs()));
            r * r
        };
        let groups = &self.groups;
        let totals = &mut self.totals;
        totals.iter_mut().for_each(|t| *t = 0.0);
        let mut worst: (f64, usize) = (0.0, 0);
        let mut consider = |i: usize, norm: f64| {
            // The first non-finite sample wins and is kept.
            if worst.0.is_finite() && (norm.is_nan() || norm > worst.0) {
                worst = (norm, i);
            }
        };
        match (
            self.work.as_slice(),
            self.y.as_slice(),
            self.y_new.as_slice(),
        ) {
            (Some(err), Some(y0), Some(y1)) if dim > 0 => {
                let rows = err
                    .chunks_exact(dim)
                    .zip(y0.chunks_exact(dim))
                    .zip(y1.chunks_exact(dim));
                for (i, ((err, y0), y1)) in rows.enumerate() {
                    let norm = groups.sample_norm(totals, |j| ratio(err[j], y0[j], y1[j]));
                    consider(i, norm);
                }
            }
            _ => {
                let rows = self
                    .work
                    .rows()
                    .into_iter()
                    .zip(self.y.rows())
                    .zip(self.y_new.rows());
                for (i, ((err, y0), y1)) in rows.enumerate() {
                    let norm = groups.sample_norm(totals, |j| ratio(err[j], y0[j], y1[j]));
                    consider(i, norm);
                }
            }
        }
        match norm {
            // Independent steps measure each sample on its own (see
            // `independent`); here that reads as the per-sample norm.
            ErrorNorm::PerSample | ErrorNorm::Independent => worst,
            ErrorNorm::Batch => {
                let batch = groups.batch_norm(totals, self.y.nrows());
                // A non-finite sample still makes the batch norm non-finite.
                (if worst.0.is_finite() { batch } else { worst.0 }, worst.1)
            }
        }
    }

    /// Writes the state at `s + θ·h` within the last step into `out`: the
    /// method's dense output when it has one, cubic Hermite interpolation of
    /// (y, f) at both ends otherwise (call [`Stepper::eval_new_slope`] first).
    pub fn interpolate(&mut self, theta: f64, h: f64, mut out: ArrayViewMut2<'_, f64>) {
        if theta >= 1.0 {
            out.assign(&self.y_new);
            return;
        }
        if self.tableau.dense_weights(theta, &mut self.weights) {
            out.assign(&self.y);
            for (kj, &w) in self.k.iter().zip(&self.weights) {
                if w != 0.0 {
                    out.scaled_add(h * w, kj);
                }
            }
            return;
        }
        let t2 = theta * theta;
        let one_minus = 1.0 - theta;
        let h00 = (1.0 + 2.0 * theta) * one_minus * one_minus;
        let h10 = theta * one_minus * one_minus * h;
        let h01 = t2 * (3.0 - 2.0 * theta);
        let h11 = t2 * (theta - 1.0) * h;
        let f1 = self.new_slope();
        ndarray::Zip::from(&mut out)
            .and(&self.y)
            .and(&self.k[0])
            .and(&self.y_new)
            .and(f1)
            .for_each(|o, &y0, &f0, &y1, &f1| *o = h00 * y0 + h10 * f0 + h01 * y1 + h11 * f1);
    }
}

/// The index of the first row (sample) of `y` holding a non-finite value.
pub(super) fn first_non_finite_row<F: Real, S: ndarray::Data<Elem = F>>(
    y: &ndarray::ArrayBase<S, ndarray::Ix2>,
) -> Option<usize> {
    // Fast path: one flat pass over contiguous memory.
    if let Some(flat) = y.as_slice() {
        if all_finite(flat) {
            return None;
        }
    }
    y.rows()
        .into_iter()
        .position(|row| row.iter().any(|v| !v.is_finite()))
}

/// Whether every value is finite. Counting per chunk, without an exit per
/// value, vectorises: a check per step costs a fraction of the step's other
/// passes instead of more than all of them.
pub(super) fn all_finite<F: Real>(values: &[F]) -> bool {
    values
        .chunks(1024)
        .all(|chunk| chunk.iter().filter(|v| v.is_finite()).count() == chunk.len())
}

/// `out = base + h·Σ_j coeffs[j]·ks[j]` (skipping zero coefficients).
/// The first term is added in the same pass as the copy of `base` (the same
/// operations, one pass fewer over the state).
fn combine<F: Real>(
    out: &mut Array2<F>,
    base: &Array2<F>,
    h: f64,
    coeffs: &[f64],
    ks: &[Array2<F>],
) {
    let mut terms = ks.iter().zip(coeffs).filter(|(_, &c)| c != 0.0);
    match terms.next() {
        Some((k, &c)) => {
            let hc = F::of(h * c);
            ndarray::Zip::from(&mut *out)
                .and(base)
                .and(k)
                .for_each(|o, &b, &k| *o = b + hc * k);
        }
        None => out.assign(base),
    }
    for (k, &c) in terms {
        out.scaled_add(F::of(h * c), k);
    }
}
