//! Per-sample statistics and partial results through the sampler and the
//! likelihood: with independent adaptive steps, samples that use up
//! `max_steps` stop alone, and the others are those of a full run, bit for
//! bit.

use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::likelihood::Likelihood;
use fmrt::sampler::Sampler;
use fmrt::scheduler::Scheduler;
use fmrt::solver::{AdaptiveOptions, ErrorNorm, Method, SampleStatus, SolverConfig, Steps};
use fmrt::Error;

fn ring() -> Arc<GaussianMixture> {
    let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("built-in"));
    Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).expect("mixture"))
}

fn dopri5(max_steps: usize, norm: ErrorNorm) -> SolverConfig {
    SolverConfig::adaptive_with(
        Method::Dopri5,
        AdaptiveOptions {
            rtol: 1e-6,
            atol: 1e-6,
            max_steps,
            norm,
            ..AdaptiveOptions::default()
        },
    )
}

/// The attempted steps of each sample.
fn attempts(samples: &[fmrt::solver::SampleStats]) -> Vec<usize> {
    samples.iter().map(|s| s.accepted + s.rejected).collect()
}

/// A budget between the fewest and the most attempts, so some samples
/// finish and some do not.
fn budget(attempts: &[usize]) -> usize {
    let mut sorted = attempts.to_vec();
    sorted.sort_unstable();
    let budget = sorted[sorted.len() / 2];
    assert!(sorted[0] <= budget && budget < sorted[sorted.len() - 1]);
    budget
}

#[test]
fn samples_carry_per_sample_statistics() {
    let field = ring();
    let full = Sampler::new(field.clone(), dopri5(100_000, ErrorNorm::Independent))
        .sample(64, 3)
        .expect("samples");
    assert_eq!(full.samples.len(), 64);
    assert!(full.unfinished().is_empty());
    let accepted: usize = full.samples.iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, full.stats.accepted);
    assert!(full.samples.iter().all(|s| s.status == SampleStatus::Done));
    // Shared steps: every sample took the batch's steps.
    let shared = Sampler::new(field, dopri5(100_000, ErrorNorm::PerSample))
        .sample(8, 3)
        .expect("samples");
    assert!(shared
        .samples
        .iter()
        .all(|s| s.accepted == shared.stats.accepted && s.evals == shared.stats.nfe));
}

#[test]
fn a_sampler_returns_the_finished_samples_when_others_hit_max_steps() {
    let field = ring();
    let n = 64;
    let full = Sampler::new(field.clone(), dopri5(100_000, ErrorNorm::Independent))
        .sample(n, 3)
        .expect("samples");
    let tries = attempts(&full.samples);
    let max_steps = budget(&tries);
    let sampler = Sampler::new(field, dopri5(max_steps, ErrorNorm::Independent));
    // Without partial results the batch fails, naming a sample.
    let err = sampler.sample(n, 3).unwrap_err();
    assert!(matches!(err, Error::MaxSteps { .. }), "{err}");
    let partial = sampler.allow_partial(true).sample(n, 3).expect("partial");
    let (mut done, mut stopped) = (0, 0);
    for (i, &tried) in tries.iter().enumerate() {
        let status = partial.samples[i].status;
        if tried <= max_steps {
            assert_eq!(status, SampleStatus::Done, "sample {i}");
            assert_eq!(partial.samples[i], full.samples[i], "sample {i}");
            for (a, b) in partial
                .x
                .index_axis(ndarray::Axis(0), i)
                .iter()
                .zip(full.x.index_axis(ndarray::Axis(0), i).iter())
            {
                assert_eq!(a.to_bits(), b.to_bits(), "sample {i}");
            }
            done += 1;
        } else {
            assert_eq!(status, SampleStatus::MaxSteps, "sample {i}");
            assert_eq!(attempts(&partial.samples[i..=i])[0], max_steps);
            stopped += 1;
        }
    }
    assert_eq!(partial.unfinished().len(), stopped);
    println!("max_steps {max_steps}: {done} finished, {stopped} stopped");
    assert!(done > 0 && stopped > 0);
    // Shared or fixed steps cannot stop a sample alone: asking for partial
    // results there is refused by name, not ignored.
    let shared = Sampler::new(ring(), dopri5(3, ErrorNorm::PerSample)).allow_partial(true);
    let fixed = Sampler::new(ring(), SolverConfig::fixed(Method::Euler, Steps::Count(4)))
        .allow_partial(true);
    for (sampler, named) in [(shared, "`sample`"), (fixed, "fixed steps")] {
        match sampler.sample(8, 3) {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.contains("partial results") && m.contains(named), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_likelihood_returns_the_finished_samples_when_others_hit_max_steps() {
    let field = ring();
    let x = field.sample_data(48, 9);
    let full = Likelihood::new(field.clone(), dopri5(100_000, ErrorNorm::Independent))
        .log_likelihood(x.view().into_dyn())
        .expect("likelihood");
    assert_eq!(full.samples.len(), 48);
    let tries = attempts(&full.samples);
    let max_steps = budget(&tries);
    let lik = Likelihood::new(field, dopri5(max_steps, ErrorNorm::Independent));
    assert!(matches!(
        lik.log_likelihood(x.view().into_dyn()),
        Err(Error::MaxSteps { .. })
    ));
    let partial = lik
        .allow_partial(true)
        .log_likelihood(x.view().into_dyn())
        .expect("partial");
    for (i, &tried) in tries.iter().enumerate() {
        if tried <= max_steps {
            assert_eq!(partial.samples[i].status, SampleStatus::Done);
            assert_eq!(partial.log_p[i].to_bits(), full.log_p[i].to_bits(), "{i}");
        } else {
            assert_eq!(partial.samples[i].status, SampleStatus::MaxSteps);
            assert!(partial.log_p[i].is_nan() && partial.bits_per_dim[i].is_nan());
        }
    }
}
