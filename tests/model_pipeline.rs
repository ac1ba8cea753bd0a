//! `fmrt::model::Model`: an exported network with its metadata turned into
//! the field to integrate, in the order prediction → guidance → schedule
//! change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::field::onnx::ensure_runtime_for_development;
use fmrt::likelihood::Divergence;
use fmrt::model::{Adapter, Model, ModelOptions};
use fmrt::path::Prediction;
use fmrt::sampler::Sampler;
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
/// export from the same noise, also with the methods that evaluate t = 1
/// (dopri5, the default, and rk4), where the x1 conversion divides by σ = 0.
#[test]
fn an_x1_model_is_converted_from_its_metadata() {
    let x1 = open("tests/fixtures/gmm_ot_x1.onnx", ModelOptions::default()).unwrap();
    assert_eq!(x1.prediction(), Prediction::X1);
    assert_eq!(x1.adapters(), &[Adapter::Prediction(Prediction::X1)]);
    assert!(x1.trained_schedule().is_some());
    let velocity = open("tests/fixtures/gmm_ot.onnx", ModelOptions::default()).unwrap();
    assert!(velocity.adapters().is_empty());

    for solver in [
        SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5),
        SolverConfig::fixed(Method::Rk4, Steps::Count(50)),
        SolverConfig::fixed(Method::Midpoint, Steps::Count(50)),
    ] {
        let a = x1.sampler(solver.clone()).sample(256, 5).unwrap().x;
        let b = velocity.sampler(solver.clone()).sample(256, 5).unwrap().x;
        let diff = a
            .iter()
            .zip(b.iter())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        println!("{:?}: x1 vs velocity samples {diff:e}", solver.method);
        assert!(
            diff <= 2e-3,
            "{:?}: x1 and velocity samples differ by {diff}",
            solver.method
        );
    }
}

/// The x1 model's exact-divergence log-likelihoods (through its tangent graph
/// and the x1 conversion) match the mixture's exact log-density.
#[test]
fn an_x1_model_gives_the_exact_log_density() {
    let x1 = open("tests/fixtures/gmm_ot_x1.onnx", ModelOptions::default()).unwrap();
    let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
    let ring = GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap();
    let solver = SolverConfig::adaptive(Method::Dopri5, 1e-6, 1e-6);
    let data = Sampler::new(Arc::new(ring.clone()), solver.clone())
        .sample(200, 3)
        .unwrap()
        .x;
    let exact = ring
        .log_density(data.view().into_dimensionality().unwrap(), &[1.0])
        .unwrap();
    let got = x1
        .likelihood(solver)
        .with_divergence(Divergence::Exact)
        .log_likelihood(data.view())
        .unwrap()
        .log_p;
    let mae = got
        .iter()
        .zip(&exact)
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / 200.0;
    println!("x1 ONNX model: log p mean absolute error {mae:e}");
    assert!(mae <= 2e-4, "log p MAE {mae:e}");
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
