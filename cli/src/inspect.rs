//! `fmrt inspect`: what a model takes, returns and declares, where it runs, and
//! whether fmrt can differentiate it.

use std::process::ExitCode;

use std::sync::Arc;

use fmrt::field::VelocityField;
use fmrt::model::{Model, ModelOptions};

use crate::args::InspectArgs;
use crate::failure::Failure;
use crate::setup::load_model;

/// Runs `fmrt inspect`.
pub fn run(args: &InspectArgs) -> Result<ExitCode, Failure> {
    let model = Arc::new(load_model(&args.model_args())?);
    let description = model.describe().to_string();
    print!("{description}");
    if !description.ends_with('\n') {
        println!();
    }
    // The field `fmrt sample` and `fmrt likelihood` integrate by default.
    match Model::new(model.clone(), ModelOptions::default()) {
        Ok(m) if m.adapters().is_empty() => println!("velocity field: the network's output"),
        Ok(m) => {
            let chain: Vec<String> = m.adapters().iter().map(ToString::to_string).collect();
            println!(
                "velocity field: the network's output, then {}",
                chain.join(", then ")
            );
        }
        Err(e) => println!(
            "velocity field: not usable as exported: {}",
            fmrt::error::Report(&e)
        ),
    }
    if model.derivatives().any_jvp() {
        println!("derivatives: exact JVPs through the tangent graph (likelihood --divergence exact|hutchinson)");
        match model.stacked_jvp_unavailable_reason() {
            None => println!(
                "  likelihood stages: one call (velocity and every direction's J·v, the network's primal part once)"
            ),
            Some(reason) => println!(
                "  likelihood stages: a velocity call plus a J·v call per stage (no stacked form: {reason})"
            ),
        }
    } else {
        let reason = model
            .jvp_unavailable_reason()
            .unwrap_or("the model has no tangent graph");
        println!("derivatives: unavailable: {reason}");
        println!("  likelihoods need --divergence finite-difference (biased) for this model");
    }
    Ok(ExitCode::SUCCESS)
}
