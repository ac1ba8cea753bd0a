//! The most probable time of a sample: argmax over t of log p_t(x).

use ndarray::{concatenate, Axis};

use super::{expand_times, state_rows, FieldCalls, Likelihood};
use crate::solver::Stats;
use crate::{Error, Result};

/// 1/φ, the golden-section ratio (√5 − 1)/2.
const INV_PHI: f64 = 0.618_033_988_749_894_9;

/// The interval and precision of a most-probable-time search.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSearch {
    /// Lower end a of the searched interval (≥ 0).
    pub lower: f64,
    /// Upper end b of the searched interval (≤ 1, > a).
    pub upper: f64,
    /// The search stops when the bracket around each maximiser is at most this
    /// wide (finite, > 0).
    pub tolerance: f64,
}

impl Default for TimeSearch {
    /// The whole path [0, 1] to within 1e-3.
    fn default() -> Self {
        Self {
            lower: 0.0,
            upper: 1.0,
            tolerance: 1e-3,
        }
    }
}

/// The outcome of a most-probable-time search.
#[derive(Clone, Debug)]
pub struct MostProbableTime {
    /// The time found for each sample: the best point evaluated, either in the
    /// final golden-section bracket (within `tolerance` of a local maximiser)
    /// or an end of the interval.
    pub t: Vec<f64>,
    /// log p_t(x) at that time, per sample.
    pub log_p: Vec<f64>,
    /// The batched likelihood solves made.
    pub solves: usize,
    /// Solver counters summed over the solves.
    pub stats: Stats,
    /// Field calls summed over the solves.
    pub calls: FieldCalls,
}

impl Likelihood {
    /// For each sample of `x` (`[B, ...state_shape]`), the time t in
    /// [`search.lower`, `search.upper`] that maximises log p_t(x), the
    /// likelihood of x treated as a draw from the path marginal p_t.
    ///
    /// Golden-section search per sample, all samples advanced together: the
    /// first two interior points and both ends of every sample go through one
    /// solve of 4·B rows, each later point through one solve of B rows with
    /// per-sample start times. An end wins when it beats the interior result,
    /// so maxima on the boundary are found even next to an interior local
    /// maximum; inside the interval the search assumes log p_t(x) unimodal in t
    /// and otherwise finds a local maximum. Hutchinson probes are drawn once and
    /// reused by every solve, so the objective is a smooth function of t for
    /// each sample.
    ///
    /// Errors: those of [`log_likelihood_at`](Self::log_likelihood_at), and
    /// [`Error::InvalidArgument`] unless 0 ≤ lower < upper ≤ 1 and the
    /// tolerance is finite and positive.
    pub fn most_probable_time(
        &self,
        x: ndarray::ArrayViewD<'_, f32>,
        search: &TimeSearch,
    ) -> Result<MostProbableTime> {
        let TimeSearch {
            lower,
            upper,
            tolerance,
        } = *search;
        if !(0.0..=1.0).contains(&lower) || !(0.0..=1.0).contains(&upper) || lower >= upper {
            return Err(Error::InvalidArgument(format!(
                "the time search interval [{lower}, {upper}] must satisfy 0 <= lower < upper <= 1"
            )));
        }
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "the time search tolerance must be finite and positive, got {tolerance}"
            )));
        }
        let (batch, dim, extras_in) = self.check_input(x.shape())?;
        let state_shape = x.shape()[1..].to_vec();
        self.check_mode()?;
        let probes = self.draw_probes(batch, dim)?;
        let y0 = state_rows(x, batch, dim, self.log_p_columns())?;
        let mut stats = Stats::default();
        let mut calls = FieldCalls::default();
        let mut solves = 0;

        let mut a = vec![lower; batch];
        let mut b = vec![upper; batch];
        let width = upper - lower;
        let mut c: Vec<f64> = (0..batch).map(|_| upper - INV_PHI * width).collect();
        let mut d: Vec<f64> = (0..batch).map(|_| lower + INV_PHI * width).collect();

        // The first two points and both ends of every sample in one solve of
        // 4B rows.
        let (mut fc, mut fd, f_lower, f_upper) = {
            let rows = concatenate(Axis(0), &[y0.view(), y0.view(), y0.view(), y0.view()])
                .map_err(|e| Error::internal(format!("state layout: {e}")))?;
            let twice = extras_in.concat(&extras_in)?;
            let extras = twice.concat(&twice)?;
            let tiled = probes.as_ref().map(|p| p.repeat(4));
            let starts: Vec<f64> = c.iter().chain(&d).chain(&a).chain(&b).copied().collect();
            let (values, used) = self.log_p_rows(
                rows.view(),
                &state_shape,
                &starts,
                &extras,
                tiled,
                &mut stats,
            )?;
            solves += 1;
            calls.add(used);
            let mut parts = values.chunks_exact(batch.max(1)).map(<[f64]>::to_vec);
            let mut next_part = || parts.next().unwrap_or_default();
            (next_part(), next_part(), next_part(), next_part())
        };

        let iterations = if width > tolerance {
            ((tolerance / width).ln() / INV_PHI.ln()).ceil() as usize
        } else {
            0
        };
        let mut next = vec![0.0; batch];
        let mut new_is_c = vec![false; batch];
        for _ in 0..iterations {
            for i in 0..batch {
                if fc[i] >= fd[i] {
                    // The maximiser lies in [a, d]: d becomes the old c.
                    b[i] = d[i];
                    d[i] = c[i];
                    fd[i] = fc[i];
                    c[i] = b[i] - INV_PHI * (b[i] - a[i]);
                    next[i] = c[i];
                    new_is_c[i] = true;
                } else {
                    a[i] = c[i];
                    c[i] = d[i];
                    fc[i] = fd[i];
                    d[i] = a[i] + INV_PHI * (b[i] - a[i]);
                    next[i] = d[i];
                    new_is_c[i] = false;
                }
                next[i] = next[i].clamp(lower, upper);
            }
            let (values, used) = self.log_p_rows(
                y0.view(),
                &state_shape,
                &next,
                &extras_in,
                probes.clone(),
                &mut stats,
            )?;
            solves += 1;
            calls.add(used);
            for i in 0..batch {
                if new_is_c[i] {
                    fc[i] = values[i];
                } else {
                    fd[i] = values[i];
                }
            }
        }
        let (t, log_p) = (0..batch)
            .map(|i| {
                let inside = if fc[i] >= fd[i] {
                    (c[i], fc[i])
                } else {
                    (d[i], fd[i])
                };
                [(lower, f_lower[i]), (upper, f_upper[i])]
                    .into_iter()
                    .fold(inside, |best, end| if end.1 > best.1 { end } else { best })
            })
            .unzip();
        Ok(MostProbableTime {
            t,
            log_p,
            solves,
            stats,
            calls,
        })
    }

    /// log p_t of the augmented rows started at `starts`, adding the solver
    /// counters to `stats`.
    fn log_p_rows(
        &self,
        rows: ndarray::ArrayView2<'_, f64>,
        state_shape: &[usize],
        starts: &[f64],
        extras: &crate::field::Extras,
        probes: Option<Vec<f32>>,
        stats: &mut Stats,
    ) -> Result<(Vec<f64>, FieldCalls)> {
        let starts = expand_times("t_start", starts, rows.nrows())?;
        let solved = self.solve_rows(rows, state_shape, &starts, 0.0, extras, probes)?;
        stats.nfe += solved.stats.nfe;
        stats.accepted += solved.stats.accepted;
        stats.rejected += solved.stats.rejected;
        let calls = solved.calls;
        let mut shape = vec![rows.nrows()];
        shape.extend_from_slice(state_shape);
        let result = self.finish(solved, starts, &shape)?;
        Ok((result.log_p, calls))
    }
}
