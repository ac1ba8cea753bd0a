//! diffusers' flow-mode multistep solvers, `dpmpp2m` and `unipc`, written in
//! fmrt's time.
//!
//! They reproduce diffusers 0.42's `DPMSolverMultistepScheduler` (DPM-Solver++,
//! Lu et al. 2022, arXiv:2211.01095) and `UniPCMultistepScheduler` (Zhao et
//! al. 2023, arXiv:2302.04867) configured with `solver_order=2`,
//! `use_flow_sigmas=True`, `prediction_type="flow_prediction"` and their
//! defaults otherwise (`algorithm_type="dpmsolver++"`,
//! `solver_type="midpoint"`; `predict_x0=True`, `solver_type="bh2"`,
//! `disable_corrector=[]`; `lower_order_final=True`,
//! `final_sigmas_type="zero"`). The update formulas were derived from the
//! papers and from reading `multistep_dpm_solver_second_order_update`,
//! `multistep_uni_p_bh_update` and `multistep_uni_c_bh_update` in diffusers'
//! source, then rewritten below in fmrt's variables; no code was copied.
//!
//! # From diffusers' variables to fmrt's
//!
//! fmrt's time runs from noise (t = 0) to data (t = 1) and the field is the
//! velocity u = dx/dt. diffusers' flow mode uses the noise level σ = 1 − t
//! with signal scale α = 1 − σ = t (the straight path x = t·x₁ + (1 − t)·x₀),
//! and its model output is v = dx/dσ = −u. Its data prediction is
//! x̂₀ = x − σ·v, which in fmrt's terms is
//!
//! ```text
//! D(x, t) = x + (1 − t)·u(x, t)
//! ```
//!
//! The solvers are exponential integrators in the log signal-to-noise ratio
//! λ = ln(α/σ) = ln(t / (1 − t)). With `h = λ(t₁) − λ(t₀)` for a step from
//! t₀ to t₁, the factors of DPM-Solver++'s first-order (DDIM) update
//! `x₁ = (σ₁/σ₀)·x₀ − α₁·(e^(−h) − 1)·D₀` become, because
//! `e^(−h) = σ₁α₀ / (α₁σ₀)`,
//!
//! ```text
//! a = σ₁/σ₀ = (1 − t₁)/(1 − t₀),   c = α₁·(1 − e^(−h)) = (t₁ − t₀)/(1 − t₀),
//! x₁ = a·x₀ + c·D₀
//! ```
//!
//! — exactly an Euler step in t (a + c = 1 and `D₀ − x₀ = (1 − t₀)·u₀`), and
//! finite at the data end t₁ = 1, where λ is infinite.
//!
//! **dpmpp2m** (DPM-Solver++(2M), midpoint form): with the previous node
//! t₋₁ and `q = h / (λ(t₀) − λ(t₋₁))`,
//! `x₁ = a·x₀ + c·(D₀ + (q/2)·(D₀ − D₋₁))`. The first step has no history
//! and the last one is first order (diffusers' `lower_order_final` with a
//! final σ of zero), so every step but those two is second order.
//!
//! **unipc** (UniPC with the B(h) = e^(−h) − 1 variant, `bh2`): the predictor
//! UniP-2 is the same update as dpmpp2m (diffusers fixes its weight to ½ at
//! order 2). The slope of every step is evaluated at the *predicted* state
//! x̃ₖ, giving Dₖ = D(x̃ₖ, tₖ); before the next predictor step, the corrector
//! UniC replaces x̃ₖ by
//!
//! ```text
//! xₖ = a·xₖ₋₁ + c·(Dₖ₋₁ + ρ₀·q·(Dₖ₋₁ − Dₖ₋₂) + ρ₁·(Dₖ − Dₖ₋₁))
//! ```
//!
//! (a, c, h for the step tₖ₋₁ → tₖ, q = h / (λ(tₖ₋₁) − λ(tₖ₋₂))) with the
//! corrector's order equal to the order of the predictor step it corrects:
//! order 1 has ρ₀ = 0, ρ₁ = ½ (diffusers' fixed weight, the trapezoid in D);
//! order 2 solves diffusers' 2 × 2 system `[1 1; −1/q 1]·ρ = (b₁, b₂)` with
//! `b₁ = φ₂(−h)/φ₁(−h)`, `b₂ = 2·φ₃(−h)/φ₁(−h)` and φₖ the exponential
//! integrator functions φ₁(z) = (e^z − 1)/z, φₖ₊₁(z) = (φₖ(z) − 1/k!)/z,
//! i.e. ρ₀ = (b₁ − b₂)·q/(q + 1), ρ₁ = b₁ − ρ₀ (for equal steps in λ and
//! h → 0 this is the Adams–Moulton rule 5/12, 8/12, −1/12). The corrected
//! state is not re-evaluated: Dₖ stays the prediction at x̃ₖ, and the final
//! state is the last predictor step's result (uncorrected; at t = 1 the
//! first-order step returns Dₙ₋₁ itself), as in diffusers. Predictor orders
//! are 1 for the first and the last step, 2 otherwise.
//!
//! A grid that starts at t = 0 (σ = 1) has λ = −∞ there: q is then 0 and
//! the second step is effectively first order too. diffusers avoids σ = 1
//! (its grids start at σ = 1 − 1/1000 or 1 − 10⁻⁶); the `diffusers-flow`
//! grid ([`crate::grid::DiffusersFlowGrid`]) builds those exact lists.
//!
//! Order: both are second order. The steps in λ near t = 0 and t = 1 do not
//! shrink as N grows (λ is logarithmic there), which costs dpmpp2m a
//! logarithmic factor: on the 8-component ring mixture with the shift-3
//! grid its measured slope rises from 1.62 to 1.77 between 320 and 2560
//! steps, while unipc's corrector gives 1.92 to 1.99
//! (`tests/diffusers_flow.rs`).
//!
//! Both need the straight path α = t, σ = 1 − t in the time the solver
//! integrates, forward within [0, 1]: every sample's interval must satisfy
//! 0 ≤ start ≤ end ≤ 1. One evaluation per step (n for n steps). Saved states
//! between grid points follow the step's predictor formula evaluated at the
//! requested time (no extra evaluation); at grid points they are the states
//! the method carries (for unipc, the corrected ones).

use ndarray::{Array2, Array3, ArrayView1, ArrayViewMut1, Axis, Zip};

use super::fixed::{Grid, SNAP};
use super::stepper::{first_non_finite_row, Rhs};
use super::{Method, SavePlan, Stats, Steps};
use crate::{Error, Result};

/// λ(t) = ln(t / (1 − t)), the log signal-to-noise ratio of α = t, σ = 1 − t
/// (−∞ at t = 0).
fn lambda(t: f64) -> f64 {
    t.ln() - (-t).ln_1p()
}

/// `h / h_prev`, 0 when the previous step is infinitely long in λ (it
/// started at t = 0) or the step has zero length.
fn ratio(h: f64, h_prev: f64) -> f64 {
    if h == 0.0 || h_prev.is_infinite() {
        0.0
    } else {
        h / h_prev
    }
}

/// (φ₁(z), φ₂(z), φ₃(z)) with φₖ(z) = Σⱼ zʲ/(j + k)!: a series for small |z|
/// (where the recursion would cancel), the recursion otherwise.
fn phis(z: f64) -> (f64, f64, f64) {
    if z.abs() < 0.1 {
        // Σ_{j<12} z^j/(j+k)!: the remainder is below 1e-16 for |z| < 0.1.
        let series = |k: usize| {
            let mut term = 1.0;
            for m in 2..=k {
                term /= m as f64;
            }
            let mut sum = 0.0;
            for j in 0..12 {
                sum += term;
                term *= z / (j + k + 1) as f64;
            }
            sum
        };
        (series(1), series(2), series(3))
    } else {
        let p1 = z.exp_m1() / z;
        let p2 = (p1 - 1.0) / z;
        let p3 = (p2 - 0.5) / z;
        (p1, p2, p3)
    }
}

/// The weights `(a, w_new, w_0, w_old)` of one update
/// `x₁ = a·x₀ + w_new·D_new + w_0·D₀ + w_old·D_old` for one sample.
#[derive(Clone, Copy, Debug, Default)]
struct Weights {
    a: f64,
    new: f64,
    d0: f64,
    old: f64,
}

impl Weights {
    /// The state unchanged (a sample with a zero-length interval).
    fn identity() -> Self {
        Weights {
            a: 1.0,
            ..Weights::default()
        }
    }
}

/// The predictor (dpmpp2m's step, UniP) from t₀ (history node t₋₁) to t₁ of
/// `order` 1 or 2: weights of x₀, D₀ (in `d0`) and D₋₁ (in `old`).
fn predictor(order: usize, t_prev: f64, t0: f64, t1: f64) -> Weights {
    if t1 == t0 {
        return Weights::identity();
    }
    let a = (1.0 - t1) / (1.0 - t0);
    let c = (t1 - t0) / (1.0 - t0);
    let half_q = if order >= 2 {
        let l0 = lambda(t0);
        0.5 * ratio(lambda(t1) - l0, l0 - lambda(t_prev))
    } else {
        0.0
    };
    Weights {
        a,
        new: 0.0,
        d0: c * (1.0 + half_q),
        old: -c * half_q,
    }
}

/// The corrector (UniC) of the step tₘ → t (history node tₘ₂) of `order` 1
/// or 2: weights of xₘ, D at t (`new`), D at tₘ (`d0`) and at tₘ₂ (`old`).
fn corrector(order: usize, t_m2: f64, t_m: f64, t: f64) -> Weights {
    if t == t_m {
        return Weights::identity();
    }
    let a = (1.0 - t) / (1.0 - t_m);
    let c = (t - t_m) / (1.0 - t_m);
    let (rho0_q, rho1) = if order >= 2 {
        let l_m = lambda(t_m);
        let h = lambda(t) - l_m;
        let q = ratio(h, l_m - lambda(t_m2));
        let (p1, p2, p3) = phis(-h);
        let (b1, b2) = (p2 / p1, 2.0 * p3 / p1);
        let rho0 = (b1 - b2) * q / (q + 1.0);
        (rho0 * q, b1 - rho0)
    } else {
        (0.0, 0.5)
    };
    Weights {
        a,
        new: c * rho1,
        d0: c * (1.0 + rho0_q - rho1),
        old: -c * rho0_q,
    }
}

/// `out = w.a·x + w.new·new + w.d0·d0 + w.old·old` over one row (`out` may
/// alias nothing; for an in-place update pass the state as `out` with
/// `x = None`).
fn combine(
    w: Weights,
    out: ArrayViewMut1<'_, f64>,
    x: Option<ArrayView1<'_, f64>>,
    new: ArrayView1<'_, f64>,
    d0: ArrayView1<'_, f64>,
    old: ArrayView1<'_, f64>,
) {
    match x {
        Some(x) => Zip::from(out)
            .and(x)
            .and(new)
            .and(d0)
            .and(old)
            .for_each(|o, &x, &n, &d, &p| *o = w.a * x + w.new * n + w.d0 * d + w.old * p),
        None => Zip::from(out)
            .and(new)
            .and(d0)
            .and(old)
            .for_each(|o, &n, &d, &p| *o = w.a * *o + w.new * n + w.d0 * d + w.old * p),
    }
}

/// Checks that every sample integrates forward within [0, 1], where the
/// straight path the formulas assume holds.
fn check_intervals(method: Method, rhs: &Rhs<'_>, batch: usize) -> Result<()> {
    for i in 0..batch {
        let (start, end) = (rhs.time(i, 0.0), rhs.time(i, 1.0));
        if !(0.0 <= start && start <= end && end <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "solver {method} follows diffusers' flow-mode scheduler, which integrates \
                 forward along σ = 1 − t from noise (t = 0) to data (t = 1): every interval \
                 must satisfy 0 ≤ start ≤ end ≤ 1, but sample {i} runs from t = {start} to \
                 t = {end}"
            )));
        }
    }
    Ok(())
}

/// The buffers of a solve: the state, the predicted state, the slope and
/// the data predictions of the last three nodes (newest first).
struct Buffers {
    x: Array2<f64>,
    pred: Array2<f64>,
    slope: Array2<f64>,
    d: [Array2<f64>; 3],
}

/// Integrates with `dpmpp2m` or `unipc` over the grid given by `steps`,
/// returning the final state.
pub(super) fn integrate(
    method: Method,
    y0: ndarray::ArrayView2<'_, f64>,
    rhs: &mut Rhs<'_>,
    steps: &Steps,
    saves: &SavePlan,
    saved: &mut Array3<f64>,
) -> Result<(Array2<f64>, Stats)> {
    let grid = Grid::new(steps)?;
    let n = grid.len();
    let batch = y0.nrows();
    check_intervals(method, rhs, batch)?;
    let with_corrector = method == Method::Unipc;
    let shape = y0.raw_dim();
    let mut b = Buffers {
        x: y0.to_owned(),
        pred: y0.to_owned(),
        slope: Array2::zeros(shape),
        d: [
            Array2::zeros(shape),
            Array2::zeros(shape),
            Array2::zeros(shape),
        ],
    };
    let mut next_save = 0;
    while let Some((slot, _)) = saves.nth(next_save).filter(|(_, v)| *v <= SNAP) {
        saved.index_axis_mut(Axis(0), slot).assign(&b.x);
        next_save += 1;
    }
    let time = |rhs: &Rhs<'_>, i: usize, k: usize| rhs.time(i, grid.point(k));
    let mut previous_order = 1;
    for k in 0..n {
        let s = grid.point(k);
        // The slope at the predicted state (the initial state at k = 0).
        rhs.eval(s, b.pred.view(), b.slope.view_mut())?;
        b.d.rotate_right(1);
        for i in 0..batch {
            let span = rhs.time(i, 1.0) - rhs.time(i, 0.0);
            let w = if span == 0.0 {
                0.0
            } else {
                (1.0 - time(&*rhs, i, k)) / span
            };
            Zip::from(b.d[0].row_mut(i))
                .and(b.pred.row(i))
                .and(b.slope.row(i))
                .for_each(|d, &x, &f| *d = x + w * f);
        }
        if k >= 1 {
            if with_corrector {
                for i in 0..batch {
                    let t_m2 = if k >= 2 { time(&*rhs, i, k - 2) } else { 0.0 };
                    let w = corrector(
                        previous_order,
                        t_m2,
                        time(&*rhs, i, k - 1),
                        time(&*rhs, i, k),
                    );
                    combine(
                        w,
                        b.x.row_mut(i),
                        None,
                        b.d[0].row(i),
                        b.d[1].row(i),
                        b.d[2].row(i),
                    );
                }
            } else {
                std::mem::swap(&mut b.x, &mut b.pred);
            }
            if let Some(sample) = first_non_finite_row(&b.x) {
                return Err(rhs.non_finite(sample, grid.point(k - 1), s));
            }
            while let Some((slot, _)) = saves.nth(next_save).filter(|(_, v)| *v <= s + SNAP) {
                saved.index_axis_mut(Axis(0), slot).assign(&b.x);
                next_save += 1;
            }
        }
        let order = if k == 0 || k + 1 == n { 1 } else { 2 };
        let s_next = grid.point(k + 1);
        let step_to =
            |rhs: &Rhs<'_>, b: &Buffers, target: f64, mut out: ndarray::ArrayViewMut2<'_, f64>| {
                for i in 0..batch {
                    let t_prev = if k >= 1 { time(rhs, i, k - 1) } else { 0.0 };
                    let w = predictor(order, t_prev, time(rhs, i, k), rhs.time(i, target));
                    combine(
                        w,
                        out.row_mut(i),
                        Some(b.x.row(i)),
                        b.d[0].row(i),
                        b.d[0].row(i),
                        b.d[1].row(i),
                    );
                }
            };
        while let Some((slot, v)) = saves.nth(next_save).filter(|(_, v)| *v < s_next - SNAP) {
            step_to(&*rhs, &b, v, saved.index_axis_mut(Axis(0), slot));
            next_save += 1;
        }
        let mut pred = std::mem::take(&mut b.pred);
        step_to(&*rhs, &b, s_next, pred.view_mut());
        b.pred = pred;
        if let Some(sample) = first_non_finite_row(&b.pred) {
            return Err(rhs.non_finite(sample, s, s_next));
        }
        previous_order = order;
    }
    // The last step's prediction is the result (never corrected).
    std::mem::swap(&mut b.x, &mut b.pred);
    while let Some((slot, _)) = saves.nth(next_save) {
        saved.index_axis_mut(Axis(0), slot).assign(&b.x);
        next_save += 1;
    }
    let stats = Stats {
        nfe: rhs.nfe,
        accepted: n,
        rejected: 0,
    };
    Ok((b.x, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_series_and_recursion_agree_where_they_meet() {
        for edge in [-0.1f64, 0.1] {
            let z = edge * (1.0 - 1e-12);
            let (s1, s2, s3) = phis(z);
            let p1 = z.exp_m1() / z;
            let p2 = (p1 - 1.0) / z;
            let p3 = (p2 - 0.5) / z;
            assert!((s1 - p1).abs() < 1e-14 && (s2 - p2).abs() < 1e-13 && (s3 - p3).abs() < 1e-12);
        }
        let (p1, p2, p3) = phis(0.0);
        assert_eq!((p1, p2, p3), (1.0, 0.5, 1.0 / 6.0));
    }

    #[test]
    fn equal_small_steps_give_adams_moulton_weights() {
        // Equal steps in λ, h → 0: the corrector's weights of D_new, D₀, D_old
        // tend to c·(5/12, 8/12, −1/12).
        let t = |l: f64| 1.0 / (1.0 + (-l).exp());
        let h = 1e-4;
        let w = corrector(2, t(-h), t(0.0), t(h));
        let c = (t(h) - t(0.0)) / (1.0 - t(0.0));
        let got = [w.new / c, w.d0 / c, w.old / c];
        let want = [5.0 / 12.0, 8.0 / 12.0, -1.0 / 12.0];
        for (g, e) in got.iter().zip(want) {
            assert!((g - e).abs() < 1e-3, "{got:?}");
        }
    }

    #[test]
    fn the_first_order_step_is_euler_and_exact_at_the_data_end() {
        let w = predictor(1, 0.0, 0.25, 1.0);
        assert_eq!((w.a, w.d0, w.old), (0.0, 1.0, -0.0));
        let w = predictor(2, 0.0, 0.25, 0.5);
        // q = 0 after a step from t = 0: first order.
        assert_eq!(w.old, -0.0);
    }
}
