//! Variable-step Adams methods on a fixed grid of normalised times.
//!
//! A step from `s_n` to `s_n + h` replaces the slope f by the polynomial
//! `p` that interpolates slopes at a few nodes, and integrates it exactly:
//! `y(s_n + θ·h) = y_n + h·Σ_j W_j(θ)·f_j` with `W_j(θ) = ∫_0^θ L_j(x) dx`,
//! `L_j` the Lagrange basis polynomials of the nodes measured in units of `h`
//! from `s_n`. The weights are recomputed every step from the actual node
//! positions, so the methods keep their order on any grid (constant-step
//! tables would lose it on non-uniform grids). Adams–Bashforth (explicit)
//! uses the nodes `s_n, s_(n−1), …`; the Adams–Moulton corrector adds
//! `s_(n+1)`. See Hairer, Nørsett & Wanner, *Solving ODEs I* (2nd ed.),
//! §III.1 (Adams methods) and §III.5 (variable step sizes).
//!
//! Starting: the first step is a trapezoidal predictor–corrector step (Euler
//! predictor, one evaluation at the predicted point, trapezoidal corrector)
//! whose predicted slope becomes the history of the second step, which thus
//! needs no evaluation of its own. Its local error is O(h³), so it does not
//! lower the third order of `ab3` and `pec2` — a plain Euler first step
//! would (its O(h²) local error survives to the end) — and it costs no more
//! evaluations than Euler. The history then grows by one slope per step, and
//! the order with it. A solve of a single step takes an Euler step (`ab2`,
//! `ab3`), where the extra slope would have no later use.
//!
//! Evaluations for `n` steps: `n` for `ab2` and `ab3` (the slope at the start
//! of every step; none at the end), `n + 1` for `pec2` (the initial slope and
//! one at every predicted point).
//!
//! Saved states are the step's polynomial integrated up to the requested
//! time (dense output of the method's order); steps are never split, so
//! saving changes nothing.

use ndarray::{Array2, Array3, ArrayView2, ArrayViewMut2, Axis};

use super::fixed::{Grid, SNAP};
use super::stepper::{first_non_finite_row, Rhs};
use super::{Method, SavePlan, Stats, Steps};
use crate::Result;

/// The most nodes of one step's interpolating polynomial (the history of
/// `ab3`, or two history slopes and the predicted one of `pec2`).
const MAX_NODES: usize = 3;

/// Slope buffers: the history, newest first, and one spare that receives the
/// next evaluation.
const SLOTS: usize = MAX_NODES + 1;
const SPARE: usize = SLOTS - 1;

/// Writes `W_j(θ) = ∫_0^θ L_j(x) dx` for the Lagrange basis polynomials
/// `L_j` of `nodes` (distinct) into `out`.
fn adams_weights(nodes: &[f64], theta: f64, out: &mut [f64]) {
    for (j, &xj) in nodes.iter().enumerate() {
        // Coefficients of Π_{m≠j} (x − x_m), lowest degree first.
        let mut poly = [0.0; MAX_NODES];
        poly[0] = 1.0;
        let mut degree = 0;
        let mut denominator = 1.0;
        for (m, &xm) in nodes.iter().enumerate() {
            if m == j {
                continue;
            }
            for k in (0..=degree + 1).rev() {
                let lower = if k > 0 { poly[k - 1] } else { 0.0 };
                poly[k] = lower - xm * poly[k];
            }
            degree += 1;
            denominator *= xj - xm;
        }
        // ∫_0^θ Σ_k c_k x^k dx = θ·Σ_k c_k θ^k / (k + 1), by Horner.
        let integral = (0..=degree)
            .rev()
            .fold(0.0, |acc, k| acc * theta + poly[k] / (k + 1) as f64);
        out[j] = theta * integral / denominator;
    }
}

/// One step's interpolating polynomial: which slope buffers it uses and
/// where their nodes lie, in units of the step from its start.
#[derive(Clone, Copy)]
struct StepPolynomial {
    slots: [usize; MAX_NODES],
    nodes: [f64; MAX_NODES],
    len: usize,
}

impl StepPolynomial {
    fn new() -> Self {
        Self {
            slots: [0; MAX_NODES],
            nodes: [0.0; MAX_NODES],
            len: 0,
        }
    }

    fn push(&mut self, slot: usize, node: f64) {
        self.slots[self.len] = slot;
        self.nodes[self.len] = node;
        self.len += 1;
    }

    /// `out = y + h·Σ_j W_j(θ)·slopes[slot_j]`.
    fn apply(
        &self,
        theta: f64,
        h: f64,
        y: &Array2<f64>,
        slopes: &[Array2<f64>],
        mut out: ArrayViewMut2<'_, f64>,
    ) {
        let mut weights = [0.0; MAX_NODES];
        adams_weights(&self.nodes[..self.len], theta, &mut weights);
        out.assign(y);
        for (&slot, &w) in self.slots[..self.len].iter().zip(&weights) {
            if w != 0.0 {
                out.scaled_add(h * w, &slopes[slot]);
            }
        }
    }
}

/// The state and the slope history of a multistep solve; every buffer is
/// allocated once.
struct History {
    y: Array2<f64>,
    y_new: Array2<f64>,
    /// Slots `0..len` hold the slopes at `times[0..len]`, newest first;
    /// slot [`SPARE`] is free.
    slopes: Vec<Array2<f64>>,
    times: [f64; SLOTS],
    len: usize,
}

impl History {
    fn new(y0: ArrayView2<'_, f64>) -> Self {
        let shape = y0.raw_dim();
        Self {
            y: y0.to_owned(),
            y_new: Array2::zeros(shape),
            slopes: (0..SLOTS).map(|_| Array2::zeros(shape)).collect(),
            times: [0.0; SLOTS],
            len: 0,
        }
    }

    /// Evaluates the slope at `s` of `y` (the current state) or, with
    /// `at_new`, of `y_new`, into the spare slot.
    fn eval(&mut self, rhs: &mut Rhs<'_>, s: f64, at_new: bool) -> Result<()> {
        let state = if at_new { &self.y_new } else { &self.y };
        rhs.eval(s, state.view(), self.slopes[SPARE].view_mut())
    }

    /// Makes the spare slot, holding the slope at `s`, the newest history
    /// entry; the oldest beyond [`MAX_NODES`] is dropped.
    fn push(&mut self, s: f64) {
        self.slopes.rotate_right(1);
        self.times.rotate_right(1);
        self.times[0] = s;
        self.len = (self.len + 1).min(MAX_NODES);
    }

    /// The Adams–Bashforth polynomial through the newest `count` history
    /// slopes, for a step from `s` of size `h`.
    fn bashforth(&self, count: usize, s: f64, h: f64) -> StepPolynomial {
        let mut p = StepPolynomial::new();
        for j in 0..count.min(self.len) {
            p.push(j, (self.times[j] - s) / h);
        }
        p
    }

    /// The Adams–Moulton polynomial: the slope in the spare slot at the end
    /// of the step, then the newest `count − 1` history slopes.
    fn moulton(&self, count: usize, s: f64, h: f64) -> StepPolynomial {
        let mut p = StepPolynomial::new();
        p.push(SPARE, 1.0);
        for j in 0..(count - 1).min(self.len) {
            p.push(j, (self.times[j] - s) / h);
        }
        p
    }

    /// `y_new` from the polynomial over the whole step.
    fn advance(&mut self, p: &StepPolynomial, h: f64) {
        p.apply(1.0, h, &self.y, &self.slopes, self.y_new.view_mut());
    }
}

/// Integrates with the multistep `method` over the grid given by `steps`,
/// returning the final state.
pub(super) fn integrate(
    method: Method,
    y0: ArrayView2<'_, f64>,
    rhs: &mut Rhs<'_>,
    steps: &Steps,
    saves: &SavePlan,
    saved: &mut Array3<f64>,
) -> Result<(Array2<f64>, Stats)> {
    let grid = Grid::new(steps)?;
    let n = grid.len();
    let mut stats = Stats::default();
    let mut h = History::new(y0);
    let mut next_save = 0;
    while let Some((slot, _)) = saves.nth(next_save).filter(|(_, v)| *v <= SNAP) {
        saved.index_axis_mut(Axis(0), slot).assign(&h.y);
        next_save += 1;
    }
    // Whether history slot 0 holds the slope at the current state.
    let mut slope_known = false;
    let mut s = 0.0;
    for k in 1..=n {
        let s_new = grid.point(k);
        let step = s_new - s;
        if !slope_known {
            h.eval(rhs, s, false)?;
            h.push(s);
        }
        let starting = k == 1 && (n > 1 || method == Method::Pec2);
        let poly = if starting || method == Method::Pec2 {
            // Predict with Adams–Bashforth (Euler on the first step), evaluate
            // at the predicted point, correct with Adams–Moulton (trapezoid on
            // the first step); the predicted slope is kept, not re-evaluated.
            let nodes = if starting { 1 } else { 2 };
            let predictor = h.bashforth(nodes, s, step);
            h.advance(&predictor, step);
            h.eval(rhs, s_new, true)?;
            h.moulton(nodes + 1, s, step)
        } else {
            let nodes = if method == Method::Ab3 { 3 } else { 2 };
            h.bashforth(nodes, s, step)
        };
        h.advance(&poly, step);
        if let Some(sample) = first_non_finite_row(&h.y_new) {
            return Err(rhs.non_finite(sample, s, s_new));
        }
        while let Some((slot, v)) = saves.nth(next_save).filter(|(_, v)| *v <= s_new + SNAP) {
            let mut out = saved.index_axis_mut(Axis(0), slot);
            if v >= s_new - SNAP {
                out.assign(&h.y_new);
            } else {
                let theta = ((v - s) / step).clamp(0.0, 1.0);
                poly.apply(theta, step, &h.y, &h.slopes, out);
            }
            next_save += 1;
        }
        // A corrector step leaves the slope at its predicted point in the
        // spare slot: it is the next step's newest history slope.
        slope_known = poly.slots[0] == SPARE;
        if slope_known {
            h.push(s_new);
        }
        std::mem::swap(&mut h.y, &mut h.y_new);
        stats.accepted += 1;
        s = s_new;
    }
    stats.nfe = rhs.nfe;
    Ok((h.y, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(nodes: &[f64], theta: f64) -> Vec<f64> {
        let mut out = vec![0.0; nodes.len()];
        adams_weights(nodes, theta, &mut out);
        out
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-14)
    }

    #[test]
    fn constant_steps_give_the_textbook_coefficients() {
        assert!(close(&weights(&[0.0], 1.0), &[1.0]));
        assert!(close(&weights(&[0.0, -1.0], 1.0), &[1.5, -0.5]));
        let ab3 = [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0];
        assert!(close(&weights(&[0.0, -1.0, -2.0], 1.0), &ab3));
        assert!(close(&weights(&[1.0, 0.0], 1.0), &[0.5, 0.5]));
        let am3 = [5.0 / 12.0, 8.0 / 12.0, -1.0 / 12.0];
        assert!(close(&weights(&[1.0, 0.0, -1.0], 1.0), &am3));
    }

    #[test]
    fn weights_integrate_quadratics_exactly_on_any_nodes() {
        // ∫_0^θ x^k dx = θ^(k+1)/(k+1) for k below the node count.
        for nodes in [[0.0, -0.37, -2.9], [1.0, 0.0, -0.2], [0.0, -3.0, -3.5]] {
            for theta in [0.25, 0.6, 1.0] {
                let w = weights(&nodes, theta);
                for k in 0..3 {
                    let quad: f64 = w.iter().zip(&nodes).map(|(w, x)| w * x.powi(k)).sum();
                    let exact = theta.powi(k + 1) / f64::from(k + 1);
                    assert!((quad - exact).abs() < 1e-13, "{nodes:?} θ={theta} k={k}");
                }
            }
        }
    }
}
