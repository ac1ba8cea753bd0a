//! `fmrt::model::Model`: an exported network with its metadata turned into
//! the field to integrate, in the order prediction → guidance → schedule
//! change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::field::onnx::ensure_runtime_for_development;
use fmrt::model::{Adapter, Model, ModelOptions};
use fmrt::path::Prediction;
use fmrt::scheduler::Scheduler;
use fmrt::solver::{Method, SolverConfig, Steps};
use fmrt::Error;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn open(path: &str, options: ModelOptions) -> fmrt::Result<Model> {
    ensure_runtime_for_development(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("ONNX Runtime is available");
    Model::open(repo_file(path), options)
}

/// The x1 export of the Gaussian-mixture field declares `fmrt.prediction =
/// x1` and its scheduler: opened as a model it samples like the velocity
/// export from the same noise (midpoint never evaluates t = 1, where the x1
/// conversion divides by σ = 0).
#[test]
fn an_x1_model_is_converted_from_its_metadata() {
    let x1 = open("tests/fixtures/gmm_ot_x1.onnx", ModelOptions::default()).unwrap();
    assert_eq!(x1.prediction(), Prediction::X1);
    assert_eq!(x1.adapters(), &[Adapter::Prediction(Prediction::X1)]);
    assert!(x1.trained_schedule().is_some());
    let velocity = open("tests/fixtures/gmm_ot.onnx", ModelOptions::default()).unwrap();
    assert!(velocity.adapters().is_empty());

    let solver = SolverConfig::fixed(Method::Midpoint, Steps::Count(50));
    let a = x1.sampler(solver.clone()).sample(256, 5).unwrap().x;
    let b = velocity.sampler(solver).sample(256, 5).unwrap().x;
    let diff = a
        .iter()
        .zip(b.iter())
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 2e-3, "x1 and velocity samples differ by {diff}");
}

/// Caller settings override the metadata, and an adapter that needs the
/// training schedule is refused when none is known.
#[test]
fn options_override_metadata_and_missing_facts_are_errors() {
    let as_velocity = ModelOptions {
        prediction: Some(Prediction::Velocity),
        ..ModelOptions::default()
    };
    let m = open("tests/fixtures/gmm_ot_x1.onnx", as_velocity).unwrap();
    assert!(m.adapters().is_empty());

    // time_b.onnx has no fmrt.scheduler metadata.
    let x0 = ModelOptions {
        prediction: Some(Prediction::X0),
        ..ModelOptions::default()
    };
    match open("tests/fixtures/time_b.onnx", x0) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("fmrt.scheduler"), "{m}"),
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
    let with_schedule = ModelOptions {
        prediction: Some(Prediction::X0),
        scheduler: Some(Arc::new(Scheduler::builtin("ot", &[]).unwrap())),
        ..ModelOptions::default()
    };
    let m = open("tests/fixtures/time_b.onnx", with_schedule).unwrap();
    assert_eq!(m.adapters(), &[Adapter::Prediction(Prediction::X0)]);

    // Guidance without a null condition in the metadata or the options.
    let guided = ModelOptions {
        guidance: 2.0,
        ..ModelOptions::default()
    };
    match open("tests/fixtures/gmm_ot.onnx", guided) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("null condition"), "{m}"),
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
}

/// The conditional example declares its null label: guidance and a schedule
/// change compose in that order.
#[test]
fn guidance_and_schedule_change_compose_in_order() {
    let options = ModelOptions {
        guidance: 1.5,
        sample_scheduler: Some(Arc::new(Scheduler::builtin("cosine", &[]).unwrap())),
        ..ModelOptions::default()
    };
    let m = open("examples/models/conditional.onnx", options).unwrap();
    assert_eq!(
        m.adapters(),
        &[Adapter::Guidance(1.5), Adapter::ScheduleChange]
    );
}
