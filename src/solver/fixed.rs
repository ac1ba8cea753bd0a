//! Fixed-step integration on a grid of normalised times.

use ndarray::{Array3, Axis};

use super::stepper::{Rhs, Stepper};
use super::{Real, SavePlan, Stats, Steps};
use crate::{Error, Result};

/// Requested times closer than this to a grid point are taken at the point
/// instead of splitting off a tiny step.
pub(super) const SNAP: f64 = 1e-12;

/// The most steps `Steps::Size` may imply; a smaller size is almost surely a
/// mistake (and would run practically forever).
const MAX_SIZE_STEPS: f64 = 1e9;

/// The step grid 0 = g_0 < g_1 < … < g_n = 1 in normalised time.
pub(super) enum Grid<'a> {
    /// g_k = k / n.
    Uniform(usize),
    /// g_k = k·h, the last point replaced by 1.
    Size(f64, usize),
    /// Explicit points (first and last snapped to 0 and 1).
    Points(&'a [f64]),
}

impl<'a> Grid<'a> {
    pub(super) fn new(steps: &'a Steps) -> Result<Self> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        match steps {
            Steps::Count(0) => bad("the step count must be at least 1".into()),
            Steps::Count(n) => Ok(Grid::Uniform(*n)),
            Steps::Size(h) => {
                if !(h.is_finite() && *h > 0.0) {
                    return bad(format!(
                        "the step size must be positive and finite, got {h}"
                    ));
                }
                // A remainder below 1e-9·h is merged into the last step.
                let n = (1.0 / h - 1e-9).ceil().max(1.0);
                if n > MAX_SIZE_STEPS {
                    return bad(format!(
                        "step size {h} would need {n:e} steps (at most {MAX_SIZE_STEPS:e})"
                    ));
                }
                Ok(Grid::Size(*h, n as usize))
            }
            Steps::Grid(points) => {
                if points.len() < 2 {
                    return bad(format!(
                        "a step grid needs at least 2 points (0 and 1), got {}",
                        points.len()
                    ));
                }
                if let Some((i, v)) = points.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return bad(format!("step grid point {i} is {v}"));
                }
                let (first, last) = (points[0], points[points.len() - 1]);
                if first.abs() > SNAP || (last - 1.0).abs() > SNAP {
                    return bad(format!(
                        "a step grid must run from 0 to 1 in normalised time, got {first} to {last}"
                    ));
                }
                if let Some(i) = points.windows(2).position(|w| w[1] <= w[0]) {
                    return bad(format!(
                        "step grid is not strictly increasing: point {} = {} follows {}",
                        i + 1,
                        points[i + 1],
                        points[i]
                    ));
                }
                Ok(Grid::Points(points))
            }
        }
    }

    /// The number of steps n.
    pub(super) fn len(&self) -> usize {
        match self {
            Grid::Uniform(n) | Grid::Size(_, n) => *n,
            Grid::Points(p) => p.len() - 1,
        }
    }

    /// Grid point k (0 ≤ k ≤ n).
    pub(super) fn point(&self, k: usize) -> f64 {
        if k == 0 {
            return 0.0;
        }
        if k >= self.len() {
            return 1.0;
        }
        match self {
            Grid::Uniform(n) => k as f64 / *n as f64,
            Grid::Size(h, _) => k as f64 * h,
            Grid::Points(p) => p[k],
        }
    }
}

/// Integrates over the grid given by `steps`, splitting steps at requested
/// save times that are off the grid.
pub(super) fn integrate<F: Real>(
    stepper: &mut Stepper<F>,
    rhs: &mut Rhs<'_, F>,
    steps: &Steps,
    saves: &SavePlan,
    saved: &mut Array3<F>,
) -> Result<Stats> {
    let grid = Grid::new(steps)?;
    let mut stats = Stats::default();
    let mut next_save = 0;
    while let Some((slot, _)) = saves.nth(next_save).filter(|(_, v)| *v <= SNAP) {
        saved.index_axis_mut(Axis(0), slot).assign(stepper.state());
        next_save += 1;
    }
    let mut s = 0.0;
    let mut k = 1;
    while k <= grid.len() {
        let g = grid.point(k);
        let target = match saves.nth(next_save) {
            Some((_, v)) if v < g - SNAP => v,
            _ => g,
        };
        stepper.step(rhs, s, target)?;
        if let Some(sample) = stepper.non_finite_sample() {
            return Err(rhs.non_finite(sample, s, target));
        }
        while let Some((slot, _)) = saves.nth(next_save).filter(|(_, v)| *v <= target + SNAP) {
            saved
                .index_axis_mut(Axis(0), slot)
                .assign(stepper.new_state());
            next_save += 1;
        }
        stepper.accept();
        stats.accepted += 1;
        s = target;
        if target == g {
            k += 1;
        }
    }
    stats.nfe = rhs.nfe;
    Ok(stats)
}
