//! Samples the exact velocity field of an 8-component Gaussian mixture and
//! compares the samples with the mixture.
//!
//! ```text
//! cargo run --release --example sample_gmm [SCHEDULER] [SOLVER] [STEPS]
//! ```
//!
//! SCHEDULER is a built-in name or a `.fm` file (default `cosine`), SOLVER one of
//! euler, midpoint, heun, rk4, bosh3, dopri5, tsit5 (default `dopri5`, adaptive
//! at rtol = atol = 1e-5), STEPS the step count of a fixed-step solver (default 100).

#[path = "common/text_plot.rs"]
mod text_plot;

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use fmrt::field::analytic::GaussianMixture;
use fmrt::sampler::Sampler;
use fmrt::scheduler::Scheduler;
use fmrt::solver::{Method, SolverConfig, Steps};
use ndarray::{ArrayView2, Ix2};
use text_plot::{density_plot, Window};

const SAMPLES: usize = 20_000;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scheduler_spec = args.first().map_or("cosine", String::as_str);
    let method: Method = args.get(1).map_or("dopri5", String::as_str).parse()?;
    let steps: usize = match args.get(2) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("STEPS must be a count, got `{s}`"))?,
        None => 100,
    };

    let schedule = Arc::new(Scheduler::open(scheduler_spec, &[])?);
    let warnings = schedule.rendered_warnings();
    if !warnings.is_empty() {
        eprintln!("{}\n", warnings.trim_end());
    }
    let mixture = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, schedule.clone())?);
    let solver = if method.is_adaptive() {
        SolverConfig::adaptive(method, 1e-5, 1e-5)
    } else {
        SolverConfig::fixed(method, Steps::Count(steps))
    };
    let sampler = Sampler::new(mixture.clone(), solver);

    let started = Instant::now();
    let samples = sampler.sample(SAMPLES, 0)?;
    let elapsed = started.elapsed();
    let x = samples.x.view().into_dimensionality::<Ix2>()?;

    println!(
        "sampled {SAMPLES} points of an 8-component ring mixture with scheduler `{scheduler_spec}` and {}",
        method.name()
    );
    println!(
        "  {} field evaluations, {} accepted / {} rejected steps, {:.1} ms",
        samples.stats.nfe,
        samples.stats.accepted,
        samples.stats.rejected,
        elapsed.as_secs_f64() * 1e3
    );

    let labels = mixture.assign(x)?;
    println!("\n  component   weight   occupancy   mean error");
    let means = mixture.means();
    for c in 0..mixture.num_components() {
        let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        let mut mean = [0.0f64; 2];
        for &i in &rows {
            mean[0] += f64::from(x[[i, 0]]) / rows.len() as f64;
            mean[1] += f64::from(x[[i, 1]]) / rows.len() as f64;
        }
        let error = ((mean[0] - means[[c, 0]]).powi(2) + (mean[1] - means[[c, 1]]).powi(2)).sqrt();
        println!(
            "  {c:>9}   {:>6.4}   {:>9.4}   {error:>10.4}",
            mixture.weights()[c],
            rows.len() as f64 / SAMPLES as f64
        );
    }

    // Mean log-density under the mixture: samples vs exact draws.
    let exact = mixture.sample_data(SAMPLES, 1);
    let mean_log_p = |points: ArrayView2<'_, f32>| -> Result<f64, fmrt::Error> {
        let lp = mixture.data_log_density(points)?;
        Ok(lp.iter().sum::<f64>() / lp.len() as f64)
    };
    println!(
        "\n  mean log-density under the mixture: samples {:.4}, exact draws {:.4}",
        mean_log_p(x)?,
        mean_log_p(exact.view())?
    );
    println!(
        "\n{}",
        density_plot(
            x,
            &Window {
                x: (-6.0, 6.0),
                y: (-6.0, 6.0)
            },
            64,
            28
        )
    );
    Ok(())
}
