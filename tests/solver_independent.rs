//! Independent adaptive steps per sample (`ErrorNorm::Independent`, the
//! default): a sample's result does not depend on its batch mates (shards
//! and splits concatenate bit for bit), each sample meets its tolerance, the
//! per-sample counters add up, and a sample that fails stops alone.

use std::f64::consts::TAU;
use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::sampler::Sampler;
use fmrt::scheduler::Schedule;
use fmrt::solver::{
    solve, solve_partial, AdaptiveOptions, ErrorNorm, Interval, Method, OdeSystem, SampleStatus,
    Solution, SolverConfig,
};
use fmrt::{Error, Result};
use ndarray::{concatenate, s, Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::path::schedules::Ot;

const ADAPTIVE: [Method; 3] = [Method::Bosh3, Method::Dopri5, Method::Tsit5];

fn config(method: Method, tol: f64, norm: ErrorNorm) -> SolverConfig {
    SolverConfig::adaptive_with(
        method,
        AdaptiveOptions {
            rtol: tol,
            atol: tol,
            norm,
            ..AdaptiveOptions::default()
        },
    )
}

#[test]
fn independent_steps_are_the_default() {
    assert_eq!(AdaptiveOptions::default().norm, ErrorNorm::Independent);
    assert_eq!(ErrorNorm::default(), ErrorNorm::Independent);
}

/// Eight narrow components on a ring: samples that start between two
/// components are much harder than those heading straight for one.
fn ring_mixture() -> Arc<GaussianMixture> {
    let k = 8;
    let means = Array2::from_shape_fn((k, 2), |(j, c)| {
        let angle = TAU * j as f64 / k as f64;
        4.0 * if c == 0 { angle.cos() } else { angle.sin() }
    });
    let weights: Vec<f64> = (1..=k).map(|j| j as f64).collect();
    let schedule: Arc<dyn Schedule> = Arc::new(Ot);
    Arc::new(GaussianMixture::new(&weights, means.view(), &[0.05; 8], schedule).unwrap())
}

/// A shard (samples 600..1000) of a 1000-sample adaptive run through the
/// Sampler equals the whole run's rows bit for bit, trajectory included;
/// with one shared step size it does not.
#[test]
fn a_shard_of_an_adaptive_run_matches_the_whole_run_bit_for_bit() {
    let field = ring_mixture();
    let times = [0.25, 0.5, 0.9];
    for method in ADAPTIVE {
        let tol = if method == Method::Bosh3 { 1e-4 } else { 1e-6 };
        for norm in [ErrorNorm::Independent, ErrorNorm::PerSample] {
            let sampler = Sampler::new(field.clone(), config(method, tol, norm));
            let whole = sampler.sample_rows(0, 1000, 11, &times).unwrap();
            let shard = sampler.sample_rows(600, 400, 11, &times).unwrap();
            let rows = whole.x.slice(s![600.., ..]);
            let same_x = rows.into_dyn() == shard.x;
            let same_traj =
                whole.trajectory.slice(s![.., 600.., ..]).into_dyn() == shard.trajectory;
            println!(
                "{method} {norm:?}: whole {:?}, shard {:?}, equal {same_x}",
                whole.stats, shard.stats
            );
            match norm {
                ErrorNorm::Independent => {
                    assert!(same_x, "{method}: the shard's end states differ");
                    assert!(same_traj, "{method}: the shard's saved states differ");
                    assert!(
                        shard.stats.accepted < whole.stats.accepted,
                        "{method}: the shard's steps are its own samples' only"
                    );
                }
                _ => assert!(
                    !same_x,
                    "{method}: shared steps would depend on the batch (the check is sensitive)"
                ),
            }
        }
    }
}

/// y' = −λᵢ·y per row with its own stiffness λᵢ (λ from 0.1 to 60), closed
/// form y(t) = y(t0)·exp(−λᵢ (t − t0)). The rates ride along as a second
/// component that does not change, so any split of the batch carries them.
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

fn decay_batch(n: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, 2), |(i, j)| {
        let lambda = 0.1 * 600f64.powf(((i * 7) % n) as f64 / (n - 1) as f64);
        if j == 0 {
            1.0 + 0.01 * i as f64
        } else {
            lambda
        }
    })
}

/// Splits the batch at `cuts`, solves the pieces and concatenates them.
fn solve_split(
    method: Method,
    norm: ErrorNorm,
    y0: &Array2<f64>,
    interval: impl Fn(std::ops::Range<usize>) -> Interval,
    save_at: &[f64],
    cuts: &[usize],
) -> (Array2<f64>, Vec<Array2<f64>>) {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(y0.nrows());
    let cfg = config(method, 1e-7, norm);
    let parts: Vec<Solution> = bounds
        .windows(2)
        .map(|w| {
            let rows = w[0]..w[1];
            let part = y0.slice(s![rows.clone(), ..]);
            solve(&mut Decay, part, &cfg, &interval(rows), save_at).unwrap()
        })
        .collect();
    let y = concatenate(
        Axis(0),
        &parts.iter().map(|p| p.y.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let saved = (0..save_at.len())
        .map(|k| {
            let views: Vec<_> = parts
                .iter()
                .map(|p| p.saved.index_axis(Axis(0), k))
                .collect();
            concatenate(Axis(0), &views).unwrap()
        })
        .collect();
    (y, saved)
}

/// Per-sample intervals (different starts, ends and directions), saved
/// states at normalised times, and several splits of the batch: all equal
/// to the whole run bit for bit, and each sample within its tolerance of
/// the closed form.
#[test]
fn any_split_with_per_sample_intervals_matches_bit_for_bit() {
    let n = 40;
    let y0 = decay_batch(n);
    let starts: Vec<f64> = (0..n).map(|i| 0.05 * (i % 5) as f64).collect();
    let ends: Vec<f64> = (0..n)
        .map(|i| {
            if i % 9 == 4 {
                -0.5
            } else {
                1.0 + 0.1 * (i % 3) as f64
            }
        })
        .collect();
    let interval = |rows: std::ops::Range<usize>| Interval::PerSample {
        starts: starts[rows.clone()].to_vec(),
        ends: ends[rows].to_vec(),
    };
    let save_at = [0.0, 0.3, 0.7, 1.0, 0.5];
    for method in ADAPTIVE {
        let (whole, whole_saved) =
            solve_split(method, ErrorNorm::Independent, &y0, interval, &save_at, &[]);
        for cuts in [&[1][..], &[13, 14, 30], &[20], &[39]] {
            let (y, saved) = solve_split(
                method,
                ErrorNorm::Independent,
                &y0,
                interval,
                &save_at,
                cuts,
            );
            assert_eq!(y, whole, "{method} split at {cuts:?}");
            assert_eq!(
                saved, whole_saved,
                "{method} split at {cuts:?}: saved states"
            );
        }
        let (shared, _) = solve_split(method, ErrorNorm::PerSample, &y0, interval, &save_at, &[20]);
        let (shared_whole, _) =
            solve_split(method, ErrorNorm::PerSample, &y0, interval, &save_at, &[]);
        assert_ne!(
            shared, shared_whole,
            "{method}: shared steps depend on the batch"
        );
        // Against the closed form, end and saved states.
        let mut worst: f64 = 0.0;
        for i in 0..n {
            let (a, b) = (starts[i], ends[i]);
            let exact = |s: f64| y0[[i, 0]] * (-y0[[i, 1]] * s * (b - a)).exp();
            worst = worst.max((whole[[i, 0]] - exact(1.0)).abs() / exact(1.0).abs().max(1.0));
            for (k, &s) in save_at.iter().enumerate() {
                let e = (whole_saved[k][[i, 0]] - exact(s)).abs() / exact(s).abs().max(1.0);
                worst = worst.max(e);
            }
            assert_eq!(whole[[i, 1]], y0[[i, 1]]);
        }
        println!("{method}: worst relative error {worst:.2e}");
        assert!(worst < 2e-5, "{method}: {worst:e}");
    }
}

/// Every sample meets its tolerance against the closed form; the easy
/// samples take far fewer steps than the stiff one, and the counters add up:
/// per sample, evaluations = 2 + (stages − 1)·attempts (FSAL, automatic
/// first step), the batched calls those of the sample with most attempts,
/// and the batch's step counts the sums over the samples.
#[test]
fn each_sample_meets_its_tolerance_and_the_counters_add_up() {
    let y0 = decay_batch(16);
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    for method in ADAPTIVE {
        let stages = method.tableau().unwrap().stages();
        for tol in [1e-5, 1e-8] {
            let sol = solve(
                &mut Decay,
                y0.view(),
                &config(method, tol, ErrorNorm::Independent),
                &interval,
                &[],
            )
            .unwrap();
            for i in 0..y0.nrows() {
                let exact = y0[[i, 0]] * (-y0[[i, 1]]).exp();
                let err = (sol.y[[i, 0]] - exact).abs();
                assert!(
                    err <= 10.0 * tol,
                    "{method} tol {tol:e} sample {i}: {err:e}"
                );
            }
            let per = &sol.samples;
            assert_eq!(per.len(), 16);
            assert!(per.iter().all(|p| p.status == SampleStatus::Done));
            assert_eq!(
                sol.stats.accepted,
                per.iter().map(|p| p.accepted).sum::<usize>()
            );
            assert_eq!(
                sol.stats.rejected,
                per.iter().map(|p| p.rejected).sum::<usize>()
            );
            let attempts = |p: &fmrt::solver::SampleStats| p.accepted + p.rejected;
            for p in per {
                assert_eq!(p.evals, 2 + (stages - 1) * attempts(p), "{method}: {p:?}");
            }
            assert_eq!(sol.stats.nfe, per.iter().map(|p| p.evals).max().unwrap());
            // Sample with λ = 0.1 (row 0) against the stiffest (λ = 60).
            let stiff = (0..16)
                .max_by(|&a, &b| y0[[a, 1]].total_cmp(&y0[[b, 1]]))
                .unwrap();
            println!(
                "{method} {tol:e}: easy {:?}, stiff {:?}, {:?}",
                per[0], per[stiff], sol.stats
            );
            assert!(
                3 * attempts(&per[0]) < attempts(&per[stiff]),
                "{method} {tol:e}"
            );
        }
    }
}

/// With too small a step budget only the stiff samples stop: `solve` fails
/// as before, `solve_partial` returns the others finished, bit for bit as
/// they come out of a run without the stiff samples.
#[test]
fn max_steps_stops_only_the_samples_that_need_more() {
    let y0 = decay_batch(16);
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    for method in ADAPTIVE {
        let mut options = AdaptiveOptions {
            rtol: 1e-8,
            atol: 1e-8,
            ..AdaptiveOptions::default()
        };
        let full = solve(
            &mut Decay,
            y0.view(),
            &SolverConfig::adaptive_with(method, options.clone()),
            &interval,
            &[],
        )
        .unwrap();
        let mut attempts: Vec<usize> = full
            .samples
            .iter()
            .map(|p| p.accepted + p.rejected)
            .collect();
        attempts.sort_unstable();
        // A budget between the median and the largest need.
        options.max_steps = attempts[8];
        let cfg = SolverConfig::adaptive_with(method, options.clone());
        match solve(&mut Decay, y0.view(), &cfg, &interval, &[]) {
            Err(Error::MaxSteps {
                max_steps,
                sample,
                s,
                ..
            }) => {
                assert_eq!(max_steps, options.max_steps);
                assert!(s < 1.0);
                // The error names a sample that did run out of steps.
                let need = full.samples[sample].accepted + full.samples[sample].rejected;
                assert!(
                    need > options.max_steps,
                    "{method}: sample {sample} needed {need}"
                );
            }
            other => panic!("{method}: expected MaxSteps, got {other:?}"),
        }
        let part = solve_partial(&mut Decay, y0.view(), &cfg, &interval, &[0.5]).unwrap();
        let mut done = 0;
        for (i, p) in part.samples.iter().enumerate() {
            let need = full.samples[i].accepted + full.samples[i].rejected;
            if need <= options.max_steps {
                assert_eq!(p.status, SampleStatus::Done, "{method} sample {i}");
                assert_eq!(*p, full.samples[i], "{method} sample {i}");
                assert_eq!(part.y.row(i), full.y.row(i), "{method} sample {i}");
                done += 1;
            } else {
                assert_eq!(p.status, SampleStatus::MaxSteps, "{method} sample {i}");
                assert_eq!(p.accepted + p.rejected, options.max_steps);
                // Stopped on the way, still finite and still decaying.
                assert!(part.y[[i, 0]] > full.y[[i, 0]] && part.y[[i, 0]] < y0[[i, 0]]);
            }
        }
        assert!((8..16).contains(&done), "{method}: {done} done");
        println!("{method}: budget {}, {done} of 16 done", options.max_steps);
    }
}

/// A system that turns non-finite for one sample past t = 0.5: that sample
/// stops with `NonFinite` at its last finite state, the others finish.
struct Poisoned;

impl OdeSystem for Poisoned {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for (i, ((&t, y), mut dy)) in t.iter().zip(y.rows()).zip(dy.rows_mut()).enumerate() {
            dy[0] = if i == 2 && t > 0.5 { f64::NAN } else { -y[0] };
        }
        Ok(())
    }
}

#[test]
fn a_non_finite_sample_stops_alone() {
    let y0 = Array2::from_elem((4, 1), 1.0);
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    for method in ADAPTIVE {
        let cfg = config(method, 1e-6, ErrorNorm::Independent);
        let err = solve(&mut Poisoned, y0.view(), &cfg, &interval, &[]).unwrap_err();
        assert!(
            matches!(&err, Error::NonFinite { which, .. } if which.contains("sample 2")),
            "{method}: {err}"
        );
        let part = solve_partial(&mut Poisoned, y0.view(), &cfg, &interval, &[]).unwrap();
        for i in 0..4 {
            let want = if i == 2 {
                SampleStatus::NonFinite
            } else {
                SampleStatus::Done
            };
            assert_eq!(part.samples[i].status, want, "{method} sample {i}");
            assert!(part.y[[i, 0]].is_finite());
        }
        assert!((part.y[[0, 0]] - (-1f64).exp()).abs() < 1e-5);
        // Sample 2 stopped before t = 0.5 + a step, after t = 0.5 − a step.
        assert!(part.y[[2, 0]] > (-1f64).exp(), "{method}");
        // The shared-step modes still fail the whole batch.
        let shared = config(method, 1e-6, ErrorNorm::PerSample);
        assert!(solve_partial(&mut Poisoned, y0.view(), &shared, &interval, &[]).is_err());
    }
}
