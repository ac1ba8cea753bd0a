//! Adaptive steps per sample ([`ErrorNorm::Independent`](super::ErrorNorm)).
//!
//! Every sample has its own normalised time, step size, accept/reject
//! decision and controller memory, with the same rules as the shared-step
//! solver of `adaptive` applied to the sample alone. The batch moves in
//! rounds: in each, every sample still stepping attempts one step, and each
//! stage is one batched right-hand-side call with every sample at its own
//! time. A sample that has stopped (finished, or failed) is frozen: its rows
//! are evaluated at its last state and time and the result is discarded.
//!
//! A sample's arithmetic never involves another sample (no reductions over
//! the batch, a row's updates only read the same row), so with a system that
//! computes each row on its own the result of a sample does not depend on the
//! batch it is solved in, bit for bit.

use std::ops::Range;

use ndarray::{Array2, Array3, ArrayView2, Axis};

use super::adaptive::{
    accepted_factor, first_guess, second_guess, validate, MIN_STEP, PI_MIN_PREVIOUS_ERROR,
};
use super::norm::{max_nan, NormGroups};
use super::stepper::Rhs;
use super::{AdaptiveOptions, ButcherTableau, SampleStats, SampleStatus, SavePlan, Stats};
use crate::{Error, Result};

/// The outcome of an independent-step solve.
pub(super) struct Run {
    /// Final states (where a failed sample stopped).
    pub y: Array2<f64>,
    /// Batched calls, and the steps summed over the samples.
    pub stats: Stats,
    /// Each sample's counters and status.
    pub samples: Vec<SampleStats>,
    /// The error of the first sample that failed, if any.
    pub failure: Option<Error>,
}

/// Where one sample stands.
#[derive(Clone, Copy, Debug)]
struct Lane {
    /// Current normalised time.
    s: f64,
    /// The next step to attempt.
    h: f64,
    /// The end of the step being attempted.
    s_new: f64,
    /// The error norm of the last accepted step (PI controller).
    previous_err: f64,
    last_rejected: bool,
    /// Still stepping.
    active: bool,
    /// The attempted step was accepted (within a round).
    accepted: bool,
    /// The error norm of the attempted step.
    err: f64,
    /// The next save time (index into the plan's order).
    next_save: usize,
    stats: SampleStats,
}

impl Lane {
    fn stop(&mut self, status: SampleStatus) {
        self.active = false;
        self.stats.status = status;
    }
}

/// The row-major slice of a buffer this module allocated.
fn flat(a: &Array2<f64>) -> &[f64] {
    a.as_slice().expect("solver buffers are in standard layout")
}

fn flat_mut(a: &mut Array2<f64>) -> &mut [f64] {
    a.as_slice_mut()
        .expect("solver buffers are in standard layout")
}

/// `out = base + h·Σ_j coeffs[j]·ks[j][rows]` (skipping zero coefficients), in
/// the same order of operations as the shared stepper's `combine`.
fn combine_row(
    out: &mut [f64],
    base: &[f64],
    h: f64,
    coeffs: &[f64],
    ks: &[Array2<f64>],
    rows: Range<usize>,
) {
    out.copy_from_slice(base);
    for (kj, &cj) in ks.iter().zip(coeffs) {
        if cj != 0.0 {
            let factor = h * cj;
            for (o, &v) in out.iter_mut().zip(&flat(kj)[rows.clone()]) {
                *o += factor * v;
            }
        }
    }
}

pub(super) fn integrate(
    tableau: ButcherTableau,
    y0: ArrayView2<'_, f64>,
    rhs: &mut Rhs<'_>,
    o: &AdaptiveOptions,
    groups: &NormGroups,
    saves: &SavePlan,
    saved: &mut Array3<f64>,
) -> Result<Run> {
    validate(o)?;
    let (batch, dim) = y0.dim();
    let mut y = y0.as_standard_layout().into_owned();
    let mut lanes = vec![
        Lane {
            s: 0.0,
            h: 0.0,
            s_new: 0.0,
            previous_err: 0.0,
            last_rejected: false,
            active: true,
            accepted: false,
            err: 0.0,
            next_save: 0,
            stats: SampleStats::default(),
        };
        batch
    ];
    let mut first_save = 0;
    while let Some((slot, _)) = saves.nth(first_save).filter(|(_, v)| *v <= 0.0) {
        saved.index_axis_mut(Axis(0), slot).assign(&y);
        first_save += 1;
    }
    if batch == 0 {
        return Ok(Run {
            y,
            stats: Stats::default(),
            samples: Vec::new(),
            failure: None,
        });
    }
    // k = q + 1 for an embedded estimate of order q.
    let k_exp = tableau.embedded_order().unwrap_or(1) as f64 + 1.0;
    let stages = tableau.stages();
    let fsal = tableau.is_fsal();
    let zeros = || Array2::<f64>::zeros((batch, dim));
    let mut k: Vec<Array2<f64>> = (0..stages.max(2)).map(|_| zeros()).collect();
    let mut y_new = zeros();
    let mut work = zeros();
    let mut f_new = if fsal { Array2::zeros((0, 0)) } else { zeros() };
    let mut weights = vec![0.0; stages];
    let mut times = vec![0.0; batch];
    let row = |i: usize| i * dim..(i + 1) * dim;

    for lane in &mut lanes {
        lane.previous_err = o.safety.powf(k_exp);
        lane.next_save = first_save;
        lane.stats.evals = 1;
    }
    rhs.eval(0.0, y.view(), k[0].view_mut())?;

    // The first step of each sample.
    match o.initial_step {
        Some(h) => lanes.iter_mut().for_each(|lane| lane.h = h.min(1.0)),
        None => {
            let order = tableau.order();
            let (f0, f1) = k.split_at_mut(1);
            let (f0, f1) = (&f0[0], &mut f1[0]);
            let mut h0 = vec![0.0; batch];
            {
                let (yf, ff, wf) = (flat(&y), flat(f0), flat_mut(&mut work));
                for (i, h0) in h0.iter_mut().enumerate() {
                    let r = row(i);
                    let pairs = yf[r.clone()]
                        .iter()
                        .copied()
                        .zip(ff[r.clone()].iter().copied());
                    let guess = first_guess(o, groups, pairs);
                    *h0 = if guess.is_finite() {
                        guess.min(1.0)
                    } else {
                        1e-6
                    };
                    for ((w, &y), &f) in wf[r.clone()].iter_mut().zip(&yf[r.clone()]).zip(&ff[r]) {
                        *w = y + *h0 * f;
                    }
                }
            }
            rhs.eval_each(&h0, work.view(), f1.view_mut())?;
            let (yf, ff, gf) = (flat(&y), flat(f0), flat(f1));
            for (i, lane) in lanes.iter_mut().enumerate() {
                let r = row(i);
                let triples = yf[r.clone()]
                    .iter()
                    .zip(&ff[r.clone()])
                    .zip(&gf[r])
                    .map(|((&y, &a), &b)| (y, a, b));
                let h = second_guess(o, groups, order, h0[i], triples);
                lane.h = if h.is_finite() { h } else { 1e-6 }.min(1.0);
                lane.stats.evals += 1;
            }
        }
    }

    let error_weights = tableau.error_weights().unwrap_or(&[]);
    loop {
        // Budgets and the step each sample attempts in this round.
        let mut any = false;
        for lane in lanes.iter_mut().filter(|lane| lane.active) {
            if lane.stats.accepted + lane.stats.rejected >= o.max_steps {
                lane.stop(SampleStatus::MaxSteps);
            } else if lane.h < MIN_STEP {
                lane.stop(SampleStatus::StepSizeTooSmall);
            } else {
                // Never step past 1; land exactly on it when close.
                lane.s_new = if lane.s + lane.h >= 1.0 - MIN_STEP {
                    1.0
                } else {
                    lane.s + lane.h
                };
                lane.accepted = false;
                any = true;
            }
        }
        if !any {
            break;
        }

        // The stages, one batched call each; frozen rows at their own state.
        for st in 1..stages {
            let (done, rest) = k.split_at_mut(st);
            // The last stage of an FSAL method is evaluated at the new state.
            let input = if fsal && st == stages - 1 {
                &mut y_new
            } else {
                &mut work
            };
            let (a, c) = (tableau.a(st), tableau.c()[st]);
            {
                let (inf, yf) = (flat_mut(input), flat(&y));
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let r = row(i);
                    if lane.active {
                        let h = lane.s_new - lane.s;
                        combine_row(&mut inf[r.clone()], &yf[r.clone()], h, a, done, r);
                        times[i] = if c == 1.0 { lane.s_new } else { lane.s + c * h };
                        lane.stats.evals += 1;
                    } else {
                        inf[r.clone()].copy_from_slice(&yf[r]);
                        times[i] = lane.s;
                    }
                }
            }
            rhs.eval_each(&times, input.view(), rest[0].view_mut())?;
        }
        if !fsal {
            let (nf, yf) = (flat_mut(&mut y_new), flat(&y));
            for (i, lane) in lanes.iter().enumerate().filter(|(_, lane)| lane.active) {
                let r = row(i);
                let h = lane.s_new - lane.s;
                combine_row(&mut nf[r.clone()], &yf[r.clone()], h, tableau.b(), &k, r);
            }
        }

        // Each sample's error and decision.
        let mut needs_slope = false;
        {
            let (yf, nf) = (flat(&y), flat(&y_new));
            for (i, lane) in lanes.iter_mut().enumerate().filter(|(_, l)| l.active) {
                let r = row(i);
                let h = lane.s_new - lane.s;
                // Per column group the RMS, then the largest (one group:
                // the RMS over the sample's components).
                let err = groups
                    .ranges()
                    .map(|columns| {
                        let mut sum = 0.0;
                        for j in r.start + columns.start..r.start + columns.end {
                            let mut e = 0.0;
                            for (kj, &ej) in k.iter().zip(error_weights) {
                                if ej != 0.0 {
                                    e += (h * ej) * flat(kj)[j];
                                }
                            }
                            let q = e / (o.atol + o.rtol * yf[j].abs().max(nf[j].abs()));
                            sum += q * q;
                        }
                        (sum / columns.len().max(1) as f64).sqrt()
                    })
                    .reduce(max_nan)
                    .unwrap_or(0.0);
                lane.err = err;
                if !err.is_finite() || (err <= 1.0 && nf[r].iter().any(|v| !v.is_finite())) {
                    lane.stop(SampleStatus::NonFinite);
                } else if err <= 1.0 {
                    lane.accepted = true;
                    let wants_save = saves
                        .nth(lane.next_save)
                        .is_some_and(|(_, v)| v <= lane.s_new);
                    needs_slope |= wants_save || lane.s_new < 1.0;
                } else {
                    lane.stats.rejected += 1;
                    lane.last_rejected = true;
                    let factor = (o.safety * err.powf(-1.0 / k_exp)).clamp(o.min_factor, 1.0);
                    lane.h = (lane.s_new - lane.s) * factor;
                }
            }
        }

        // f(s_new, y_new) for the accepted samples of a method that is not
        // first-same-as-last: interpolation and the next step need it.
        if !fsal && needs_slope {
            {
                let (wf, yf, nf) = (flat_mut(&mut work), flat(&y), flat(&y_new));
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let r = row(i);
                    if lane.active && lane.accepted {
                        wf[r.clone()].copy_from_slice(&nf[r]);
                        times[i] = lane.s_new;
                        // Counted where the sample uses it (not for a last
                        // step without a save that another sample's need
                        // brought along).
                        let wants_save = saves
                            .nth(lane.next_save)
                            .is_some_and(|(_, v)| v <= lane.s_new);
                        if wants_save || lane.s_new < 1.0 {
                            lane.stats.evals += 1;
                        }
                    } else {
                        wf[r.clone()].copy_from_slice(&yf[r]);
                        times[i] = lane.s;
                    }
                }
            }
            rhs.eval_each(&times, work.view(), f_new.view_mut())?;
        }

        // Saved states, then the accepted samples move on.
        for (i, lane) in lanes.iter_mut().enumerate() {
            if !(lane.active && lane.accepted) {
                continue;
            }
            let r = row(i);
            let (s, s_new) = (lane.s, lane.s_new);
            let h_step = s_new - s;
            let slope = if fsal { &k[stages - 1] } else { &f_new };
            while let Some((slot, v)) = saves.nth(lane.next_save).filter(|(_, v)| *v <= s_new) {
                let theta = ((v - s) / h_step).clamp(0.0, 1.0);
                let mut out = saved.index_axis_mut(Axis(0), slot);
                let mut out = out.row_mut(i);
                let (yf, nf) = (flat(&y), flat(&y_new));
                if theta >= 1.0 {
                    out.iter_mut()
                        .zip(&nf[r.clone()])
                        .for_each(|(o, &v)| *o = v);
                } else if tableau.dense_weights(theta, &mut weights) {
                    out.iter_mut()
                        .zip(&yf[r.clone()])
                        .for_each(|(o, &v)| *o = v);
                    for (kj, &w) in k.iter().zip(&weights) {
                        if w != 0.0 {
                            let factor = h_step * w;
                            for (o, &v) in out.iter_mut().zip(&flat(kj)[r.clone()]) {
                                *o += factor * v;
                            }
                        }
                    }
                } else {
                    let t2 = theta * theta;
                    let one_minus = 1.0 - theta;
                    let h00 = (1.0 + 2.0 * theta) * one_minus * one_minus;
                    let h10 = theta * one_minus * one_minus * h_step;
                    let h01 = t2 * (3.0 - 2.0 * theta);
                    let h11 = t2 * (theta - 1.0) * h_step;
                    let (f0, f1) = (&flat(&k[0])[r.clone()], &flat(slope)[r.clone()]);
                    for (j, o) in out.iter_mut().enumerate() {
                        let jj = r.start + j;
                        *o = h00 * yf[jj] + h10 * f0[j] + h01 * nf[jj] + h11 * f1[j];
                    }
                }
                lane.next_save += 1;
            }
            // The new slope becomes the first stage of the next step (for a
            // method that is not FSAL it is known when s_new < 1).
            if fsal || s_new < 1.0 {
                let (done, rest) = k.split_at_mut(1);
                let from = if fsal { &rest[stages - 2] } else { &f_new };
                flat_mut(&mut done[0])[r.clone()].copy_from_slice(&flat(from)[r.clone()]);
            }
            flat_mut(&mut y)[r.clone()].copy_from_slice(&flat(&y_new)[r]);
            lane.stats.accepted += 1;
            let err = lane.err;
            let mut factor = if err == 0.0 {
                o.max_factor
            } else {
                accepted_factor(o, k_exp, err, lane.previous_err).clamp(o.min_factor, o.max_factor)
            };
            lane.previous_err = err.max(PI_MIN_PREVIOUS_ERROR);
            if lane.last_rejected {
                factor = factor.min(1.0);
            }
            lane.last_rejected = false;
            lane.s = s_new;
            lane.h = h_step * factor;
            if s_new >= 1.0 {
                lane.stop(SampleStatus::Done);
            }
        }
    }

    let failure = lanes
        .iter()
        .enumerate()
        .find(|(_, lane)| lane.stats.status != SampleStatus::Done)
        .map(|(i, lane)| match lane.stats.status {
            SampleStatus::MaxSteps => Error::MaxSteps {
                max_steps: o.max_steps,
                sample: i,
                t: rhs.time(i, lane.s),
                s: lane.s,
            },
            SampleStatus::StepSizeTooSmall => Error::StepSizeTooSmall {
                sample: i,
                t: rhs.time(i, lane.s),
                s: lane.s,
                step: lane.h,
            },
            _ => rhs.non_finite(i, lane.s, lane.s_new),
        });
    let samples: Vec<SampleStats> = lanes.iter().map(|lane| lane.stats).collect();
    let stats = Stats {
        nfe: rhs.nfe,
        accepted: samples.iter().map(|s| s.accepted).sum(),
        rejected: samples.iter().map(|s| s.rejected).sum(),
    };
    Ok(Run {
        y,
        stats,
        samples,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2, Array3, ArrayView2, ArrayViewMut2};

    use super::*;
    use crate::solver::OdeSystem;

    /// y' = −λᵢ·y with λᵢ in the second column.
    struct Decay;

    impl OdeSystem for Decay {
        fn rhs(
            &mut self,
            _t: &[f64],
            y: ArrayView2<'_, f64>,
            mut dy: ArrayViewMut2<'_, f64>,
        ) -> Result<()> {
            for (y, mut dy) in y.rows().into_iter().zip(dy.rows_mut()) {
                dy[0] = -y[1] * y[0];
                dy[1] = 0.0;
            }
            Ok(())
        }
    }

    /// Heun–Euler 2(1): not first-same-as-last, so the new slope costs a
    /// call of its own (no built-in adaptive method takes that path).
    fn heun_euler() -> ButcherTableau {
        ButcherTableau::new(
            "heun-euler",
            vec![vec![], vec![1.0]],
            vec![0.5, 0.5],
            vec![0.0, 1.0],
            2,
            Some((vec![1.0, 0.0], 1)),
            None,
        )
        .unwrap()
    }

    fn run(y0: ArrayView2<'_, f64>, save_at: &[f64]) -> (Run, Array3<f64>) {
        let n = y0.nrows();
        let mut system = Decay;
        let mut rhs = Rhs::new(&mut system, vec![0.0; n], vec![1.0; n]);
        let saves = SavePlan::new(save_at).unwrap();
        let mut saved = Array3::zeros((save_at.len(), n, 2));
        let options = AdaptiveOptions {
            rtol: 1e-6,
            atol: 1e-6,
            ..AdaptiveOptions::default()
        };
        let tableau = heun_euler();
        assert!(!tableau.is_fsal());
        let groups = NormGroups::whole(2);
        let run = integrate(tableau, y0, &mut rhs, &options, &groups, &saves, &mut saved).unwrap();
        (run, saved)
    }

    #[test]
    fn a_method_without_fsal_steps_each_sample_on_its_own() {
        let y0 = Array2::from_shape_fn((6, 2), |(i, j)| {
            if j == 0 {
                1.0
            } else {
                [0.5, 8.0, 1.0, 20.0, 0.1, 3.0][i]
            }
        });
        let save_at = [0.5, 0.25];
        let (whole, saved) = run(y0.view(), &save_at);
        for i in 0..6 {
            let lambda = y0[[i, 1]];
            let e = (whole.y[[i, 0]] - (-lambda).exp()).abs();
            assert!(e < 1e-4, "sample {i}: {e:e}");
            for (k, &s) in save_at.iter().enumerate() {
                let e = (saved[[k, i, 0]] - (-lambda * s).exp()).abs();
                assert!(e < 1e-4, "sample {i} at {s}: {e:e}");
            }
            assert_eq!(whole.samples[i].status, SampleStatus::Done);
        }
        assert!(whole.failure.is_none());
        // Each piece of a split gives the same rows and counters.
        for (rows, first) in [(0..2, 0), (2..5, 2), (5..6, 5)] {
            let (part, part_saved) = run(y0.slice(s![rows.clone(), ..]), &save_at);
            assert_eq!(part.y, whole.y.slice(s![rows.clone(), ..]));
            assert_eq!(part_saved, saved.slice(s![.., rows.clone(), ..]));
            assert_eq!(
                part.samples[..],
                whole.samples[rows.clone()],
                "from {first}"
            );
        }
        // Easy samples take fewer steps; the counters add up.
        assert!(whole.samples[4].accepted * 3 < whole.samples[3].accepted);
        let accepted: usize = whole.samples.iter().map(|p| p.accepted).sum();
        assert_eq!(whole.stats.accepted, accepted);
        // The batched calls cover every sample's (a last slope only one
        // sample needed may be one more than the busiest sample's).
        let busiest = whole.samples.iter().map(|p| p.evals).max().unwrap();
        assert!((busiest..=busiest + 1).contains(&whole.stats.nfe));
    }
}
