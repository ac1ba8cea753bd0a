//! `fmrt inspect`: what a model takes, returns and declares, and where it runs.

use std::process::ExitCode;

use crate::args::InspectArgs;
use crate::sample::load_model;

/// Runs `fmrt inspect`.
pub fn run(args: &InspectArgs) -> Result<ExitCode, String> {
    let model = load_model(&args.model_args())?;
    print!("{}", model.describe());
    Ok(ExitCode::SUCCESS)
}
