//! `fmrt demo`: sample the shipped two-moons model and plot the samples.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, DemoArgs, PlotKind};
use crate::failure::{fail, Failure};
use crate::{npy, plot, sample};

/// The shipped model, relative to a source checkout.
const MODEL: &str = "examples/models/two_moons.onnx";

/// Runs `fmrt demo`.
pub fn run(args: &DemoArgs) -> Result<ExitCode, Failure> {
    let (model, checkout) = find_model()?;
    if let Some(checkout) = checkout {
        // A source checkout may fetch ONNX Runtime on demand; an installed
        // fmrt finds it the usual way (--ort-lib is not offered here).
        if let Err(e) = fmrt::field::onnx::ensure_runtime_for_development(&checkout) {
            return Err(fail!(
                "fmrt demo needs ONNX Runtime and could not load or fetch it: {}; run `bash scripts/fetch-onnxruntime.sh` or set ORT_DYLIB_PATH",
                fmrt::error::Report(&e)
            ));
        }
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| format!("{}: cannot create the folder: {e}", args.out_dir.display()))?;
    let samples = args.out_dir.join("samples.npy");
    let image = args.out_dir.join("samples.png");

    // The same path as `fmrt sample`, so the demo shows its real output.
    let mut argv: Vec<String> = vec![
        "fmrt".into(),
        "sample".into(),
        "--model".into(),
        model.display().to_string(),
        "-n".into(),
        args.n.to_string(),
        "--seed".into(),
        args.seed.to_string(),
        "-o".into(),
        samples.display().to_string(),
    ];
    if args.quiet {
        argv.push("--quiet".into());
    }
    let cli = Cli::try_parse_from(&argv).map_err(|e| format!("internal error: {e}"))?;
    let Command::Sample(sample_args) = &cli.command else {
        return Err(fail!(
            "internal error: the demo's sample command did not parse"
        ));
    };
    let code = sample::run(sample_args)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let data = npy::read_f32(&samples)?;
    plot::data_png(
        &data,
        &samples,
        PlotKind::Scatter,
        &format!("two moons: {} samples", args.n),
        &image,
        800,
    )?;
    println!("samples: {}", samples.display());
    println!("plot:    {}", image.display());
    Ok(ExitCode::SUCCESS)
}

/// The two-moons model of the source checkout fmrt runs from, else in the
/// current directory; with the checkout when found there.
fn find_model() -> Result<(PathBuf, Option<PathBuf>), Failure> {
    let checkout = crate::checkout::source_checkout();
    if let Some(built_from) = checkout
        .as_ref()
        .map(|root| root.join(MODEL))
        .filter(|m| m.is_file())
    {
        // Shown relative when run inside the checkout, as the README shows it.
        let shown = std::env::current_dir()
            .ok()
            .and_then(|here| built_from.strip_prefix(here).ok().map(Path::to_path_buf))
            .unwrap_or(built_from);
        return Ok((shown, checkout));
    }
    let here = PathBuf::from(MODEL);
    if here.is_file() {
        return Ok((here, None));
    }
    Err(fail!(
        "cannot find {MODEL}: run fmrt demo inside an fmrt source checkout (git clone the repository and cd into it)"
    ))
}
