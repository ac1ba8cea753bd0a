//! Adaptive step-size control with an embedded error estimate.
//!
//! One step size serves the whole batch (in normalised time). A step is
//! accepted when the error norm of [`Stepper::error_norm`] is at most 1 (every
//! sample within `atol + rtol·|y|`); the next step follows from the error as
//! [`Controller`] describes (PI by default, or the integral controller;
//! after a rejection the step may not grow). Steps never pass s = 1 and are
//! never shortened to hit a save time: saved states are interpolated.

use ndarray::{Array3, Axis};

use super::norm::{max_nan, NormGroups};
use super::stepper::{Rhs, Stepper};
use super::{AdaptiveOptions, Controller, ErrorNorm, SavePlan, Stats, PI_BETA1, PI_BETA2};
use crate::{Error, Result};

/// Steps below this (in normalised time, where the interval has length 1)
/// are a step-size underflow: they no longer move the time reliably.
pub(super) const MIN_STEP: f64 = 16.0 * f64::EPSILON;

/// The floor on the previous error in the PI controller, so that a very
/// accurate step does not license an unbounded next one (Hairer's DOPRI5
/// code uses the same).
pub(super) const PI_MIN_PREVIOUS_ERROR: f64 = 1e-4;

/// The growth factor after an accepted step, before clamping.
pub(super) fn accepted_factor(o: &AdaptiveOptions, k: f64, err: f64, previous: f64) -> f64 {
    match o.controller {
        Controller::I => o.safety * err.powf(-1.0 / k),
        Controller::PI => {
            // Aim at the same error as the I controller, safety^k.
            let target = o.safety.powf(k);
            (target / err).powf(PI_BETA1 / k) * (previous / target).powf(PI_BETA2 / k)
        }
    }
}

pub(super) fn integrate(
    stepper: &mut Stepper,
    rhs: &mut Rhs<'_>,
    options: &AdaptiveOptions,
    saves: &SavePlan,
    saved: &mut Array3<f64>,
) -> Result<Stats> {
    validate(options)?;
    // k = q + 1 for an embedded estimate of order q.
    let k = stepper.tableau().embedded_order().unwrap_or(1) as f64 + 1.0;
    let exponent = -1.0 / k;
    // The error norm of the last accepted step (PI controller); before the
    // first, the neutral value.
    let mut previous_err = options.safety.powf(k);
    let mut stats = Stats::default();
    let mut next_save = 0;
    while let Some((slot, _)) = saves.nth(next_save).filter(|(_, v)| *v <= 0.0) {
        saved.index_axis_mut(Axis(0), slot).assign(stepper.state());
        next_save += 1;
    }
    stepper.first_stage(rhs, 0.0)?;
    let mut h = match options.initial_step {
        Some(h) => h,
        None => initial_step(stepper, rhs, options)?,
    }
    .min(1.0);
    let mut s = 0.0;
    let mut last_rejected = false;
    while s < 1.0 {
        if stats.accepted + stats.rejected >= options.max_steps {
            return Err(Error::MaxSteps {
                max_steps: options.max_steps,
                sample: 0,
                t: rhs.time(0, s),
                s,
            });
        }
        if h < MIN_STEP {
            return Err(Error::StepSizeTooSmall {
                sample: 0,
                t: rhs.time(0, s),
                s,
                step: h,
            });
        }
        // Never step past 1; land exactly on it when close.
        let s_new = if s + h >= 1.0 - MIN_STEP { 1.0 } else { s + h };
        let h_step = s_new - s;
        stepper.step(rhs, s, s_new)?;
        let (err, worst) = stepper.error_norm(h_step, options.rtol, options.atol, options.norm);
        if !err.is_finite() {
            let sample = stepper.non_finite_sample().unwrap_or(worst);
            return Err(rhs.non_finite(sample, s, s_new));
        }
        if err <= 1.0 {
            let wants_save = saves.nth(next_save).is_some_and(|(_, v)| v <= s_new);
            if wants_save || s_new < 1.0 {
                // Interpolation and the next step both need f(s_new, y_new).
                stepper.eval_new_slope(rhs, s_new)?;
            }
            while let Some((slot, v)) = saves.nth(next_save).filter(|(_, v)| *v <= s_new) {
                let theta = ((v - s) / h_step).clamp(0.0, 1.0);
                stepper.interpolate(theta, h_step, saved.index_axis_mut(Axis(0), slot));
                next_save += 1;
            }
            stepper.accept();
            stats.accepted += 1;
            let mut factor = if err == 0.0 {
                options.max_factor
            } else {
                accepted_factor(options, k, err, previous_err)
                    .clamp(options.min_factor, options.max_factor)
            };
            previous_err = err.max(PI_MIN_PREVIOUS_ERROR);
            if last_rejected {
                factor = factor.min(1.0);
            }
            last_rejected = false;
            s = s_new;
            h = h_step * factor;
        } else {
            stats.rejected += 1;
            last_rejected = true;
            let factor = (options.safety * err.powf(exponent)).clamp(options.min_factor, 1.0);
            h = h_step * factor;
        }
    }
    stats.nfe = rhs.nfe;
    Ok(stats)
}

pub(super) fn validate(o: &AdaptiveOptions) -> Result<()> {
    let bad = |msg: String| Err(Error::InvalidArgument(msg));
    if !(o.rtol.is_finite() && o.rtol >= 0.0) {
        return bad(format!(
            "rtol must be finite and non-negative, got {}",
            o.rtol
        ));
    }
    if !(o.atol.is_finite() && o.atol > 0.0) {
        return bad(format!("atol must be finite and positive, got {}", o.atol));
    }
    if !(o.safety > 0.0 && o.safety <= 1.0) {
        return bad(format!("safety must lie in (0, 1], got {}", o.safety));
    }
    if !(o.min_factor > 0.0 && o.min_factor <= 1.0) {
        return bad(format!(
            "min_factor must lie in (0, 1], got {}",
            o.min_factor
        ));
    }
    if !(o.max_factor >= 1.0 && o.max_factor.is_finite()) {
        return bad(format!(
            "max_factor must be finite and at least 1, got {}",
            o.max_factor
        ));
    }
    if o.max_steps == 0 {
        return bad("max_steps must be at least 1".into());
    }
    if let Some(h) = o.initial_step {
        if !(h.is_finite() && h > 0.0) {
            return bad(format!("initial_step must be positive and finite, got {h}"));
        }
    }
    Ok(())
}

/// Hairer's starting-step heuristic (Hairer, Nørsett & Wanner, *Solving ODEs
/// I*, §II.4) with the solver's error norm: per sample, then the smallest
/// over the batch ([`ErrorNorm::PerSample`]), or with one RMS over the whole
/// batch ([`ErrorNorm::Batch`]). Costs one evaluation besides f(0, y0).
fn initial_step(stepper: &mut Stepper, rhs: &mut Rhs<'_>, o: &AdaptiveOptions) -> Result<f64> {
    let order = stepper.tableau().order();
    let groups = stepper.groups().clone();
    let groups = &groups;
    let (y0, f0, y1, f1) = stepper.scratch();
    // h0: first guess.
    let h0 = match o.norm {
        ErrorNorm::Batch => first_guess(o, groups, y0.iter().copied().zip(f0.iter().copied())),
        ErrorNorm::PerSample | ErrorNorm::Independent => y0
            .rows()
            .into_iter()
            .zip(f0.rows())
            .map(|(y, f)| first_guess(o, groups, y.iter().copied().zip(f.iter().copied())))
            .fold(f64::INFINITY, f64::min),
    };
    let h0 = if h0.is_finite() { h0.min(1.0) } else { 1e-6 };
    y1.assign(y0);
    y1.scaled_add(h0, f0);
    rhs.eval(h0, y1.view(), f1.view_mut())?;
    let h = match o.norm {
        ErrorNorm::Batch => second_guess(
            o,
            groups,
            order,
            h0,
            y0.iter()
                .zip(f0.iter())
                .zip(f1.iter())
                .map(|((&y, &a), &b)| (y, a, b)),
        ),
        ErrorNorm::PerSample | ErrorNorm::Independent => y0
            .rows()
            .into_iter()
            .zip(f0.rows())
            .zip(f1.rows())
            .map(|((y, a), b)| {
                second_guess(
                    o,
                    groups,
                    order,
                    h0,
                    y.iter().zip(a).zip(b).map(|((&y, &a), &b)| (y, a, b)),
                )
            })
            .fold(f64::INFINITY, f64::min),
    };
    // An empty batch, or a non-finite slope that the first step will report.
    Ok(if h.is_finite() { h } else { 1e-6 })
}

/// Per group of columns, the sums of squares of a few quantities and the
/// count of values (the initial-step heuristic's norms).
struct GroupSums<const N: usize> {
    sums: Vec<[f64; N]>,
    counts: Vec<usize>,
}

impl<const N: usize> GroupSums<N> {
    fn new(groups: &NormGroups) -> Self {
        Self {
            sums: vec![[0.0; N]; groups.len()],
            counts: vec![0; groups.len()],
        }
    }

    /// Adds the squares of `values` to the sums of group `g`.
    fn add(&mut self, g: usize, values: [f64; N]) {
        for (sum, v) in self.sums[g].iter_mut().zip(values) {
            *sum += v * v;
        }
        self.counts[g] += 1;
    }

    /// The RMS of quantity `q`, the largest over the groups.
    fn norm(&self, q: usize) -> f64 {
        self.sums
            .iter()
            .zip(&self.counts)
            .map(|(sums, &count)| (sums[q] / count.max(1) as f64).sqrt())
            .reduce(max_nan)
            .unwrap_or(0.0)
    }
}

/// The first guess h0 of the starting-step heuristic from the pairs (y, f) of
/// one group of values (a sample, or the batch, in row-major order):
/// `0.01·‖y‖/‖f‖` in the weighted RMS norm (with column groups, the largest
/// group RMS), 1e-6 when either is tiny. Not yet clamped.
pub(super) fn first_guess(
    o: &AdaptiveOptions,
    groups: &NormGroups,
    rows: impl Iterator<Item = (f64, f64)>,
) -> f64 {
    let group_of = groups.group_of();
    let dim = groups.dim().max(1);
    let mut sums = GroupSums::<2>::new(groups);
    for (i, (y, f)) in rows.enumerate() {
        let w = o.atol + o.rtol * y.abs();
        sums.add(group_of.get(i % dim).copied().unwrap_or(0), [y / w, f / w]);
    }
    let (d0, d1) = (sums.norm(0), sums.norm(1));
    if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    }
}

/// The starting step from the triples (y0, f0, f1) of one group of values
/// (in row-major order), f1 = f(h0, y0 + h0·f0), for a method of order
/// `order`: the step at which the estimated second derivative allows the
/// error 0.01, at most 100·h0.
pub(super) fn second_guess(
    o: &AdaptiveOptions,
    groups: &NormGroups,
    order: usize,
    h0: f64,
    rows: impl Iterator<Item = (f64, f64, f64)>,
) -> f64 {
    let group_of = groups.group_of();
    let dim = groups.dim().max(1);
    let mut sums = GroupSums::<2>::new(groups);
    for (i, (y, a, b)) in rows.enumerate() {
        let w = o.atol + o.rtol * y.abs();
        sums.add(
            group_of.get(i % dim).copied().unwrap_or(0),
            [a / w, (b - a) / w],
        );
    }
    let (d1, d2) = (sums.norm(0), sums.norm(1) / h0);
    let dmax = d1.max(d2);
    let h1 = if dmax <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / dmax).powf(1.0 / (order as f64 + 1.0))
    };
    (100.0 * h0).min(h1)
}
