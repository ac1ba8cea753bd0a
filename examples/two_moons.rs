//! Samples the shipped two-moons model (`examples/models/two_moons.onnx`, a
//! velocity MLP trained in PyTorch; see `examples/train/`) through ONNX Runtime,
//! writes the samples to `two_moons_samples.npy` and draws them in the terminal.
//!
//! ```text
//! cargo run --release --example two_moons [N] [SOLVER]
//! ```
//!
//! In a source checkout the ONNX Runtime library is fetched from PyPI on first
//! use (`scripts/fetch-onnxruntime.sh`); applications call
//! `fmrt::field::onnx::init_runtime` instead, which never downloads.

#[path = "common/text_plot.rs"]
mod text_plot;

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fmrt::field::onnx::{ensure_runtime_for_development, OnnxField};
use fmrt::sampler::Sampler;
use fmrt::solver::{Method, SolverConfig, Steps};
use ndarray::Ix2;
use ndarray_npy::write_npy;
use text_plot::{density_plot, Window};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = match args.first() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("N must be a count, got `{s}`"))?,
        None => 5000,
    };
    let method: Method = args.get(1).map_or("dopri5", String::as_str).parse()?;

    let runtime = ensure_runtime_for_development(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))?;
    let model_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/two_moons.onnx");
    let model = Arc::new(OnnxField::load_file(&model_path)?);
    let solver = if method.is_adaptive() {
        SolverConfig::adaptive(method, 1e-5, 1e-5)
    } else {
        SolverConfig::fixed(method, Steps::Count(100))
    };

    let started = Instant::now();
    let samples = Sampler::new(model.clone(), solver).sample(n, 0)?;
    let elapsed = started.elapsed();
    let output = Path::new("two_moons_samples.npy");
    write_npy(output, &samples.x)?;

    println!(
        "sampled {n} points from {} with {} on {} (ONNX Runtime {})",
        model_path.display(),
        method.name(),
        model.provider(),
        runtime.library.display()
    );
    println!(
        "  {} field evaluations, {} accepted / {} rejected steps, {:.2} s",
        samples.stats.nfe,
        samples.stats.accepted,
        samples.stats.rejected,
        elapsed.as_secs_f64()
    );
    println!("  wrote {}", output.display());
    let x = samples.x.view().into_dimensionality::<Ix2>()?;
    println!(
        "\n{}",
        density_plot(
            x,
            &Window {
                x: (-2.5, 2.5),
                y: (-2.0, 2.0)
            },
            64,
            24
        )
    );
    Ok(())
}
