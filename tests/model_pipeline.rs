//! `fmrt::model::Model`: an exported network with its metadata turned into
//! the field to integrate, in the order prediction → guidance → schedule
//! change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::field::analytic::GaussianMixture;
use fmrt::field::onnx::ensure_runtime_for_development;
use fmrt::field::{ExtraTensor, Extras};
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

/// The x1 and x0 exports of the Gaussian-mixture field, each once with its
/// `fmrt.prediction` and `fmrt.scheduler` metadata and once bare, with the
/// caller naming the prediction and the training scheduler.
fn prediction_exports() -> Vec<(&'static str, Model)> {
    let told = |prediction| ModelOptions {
        prediction: Some(prediction),
        scheduler: Some(Arc::new(Scheduler::builtin("ot", &[]).unwrap())),
        ..ModelOptions::default()
    };
    [
        ("gmm_ot_x1.onnx", Prediction::X1, ModelOptions::default()),
        ("gmm_ot_x1_bare.onnx", Prediction::X1, told(Prediction::X1)),
        ("gmm_ot_x0.onnx", Prediction::X0, ModelOptions::default()),
        ("gmm_ot_x0_bare.onnx", Prediction::X0, told(Prediction::X0)),
    ]
    .into_iter()
    .map(|(file, prediction, options)| {
        let model = open(&format!("tests/fixtures/{file}"), options).unwrap();
        assert_eq!(model.prediction(), prediction, "{file}");
        assert_eq!(
            model.adapters(),
            &[Adapter::Prediction(prediction)],
            "{file}"
        );
        assert!(model.trained_schedule().is_some(), "{file}");
        (file, model)
    })
    .collect()
}

/// Opened as models, the x1 and x0 exports sample like the velocity export
/// from the same noise, also with the methods that evaluate the singular end
/// (dopri5, the default, and rk4 evaluate t = 1, where the x1 conversion
/// divides by σ = 0; every method evaluates t = 0, where the x0 conversion
/// divides by α = 0).
#[test]
fn x1_and_x0_models_sample_like_the_velocity_model() {
    let velocity = open("tests/fixtures/gmm_ot.onnx", ModelOptions::default()).unwrap();
    assert!(velocity.adapters().is_empty());
    let exports = prediction_exports();
    for solver in [
        SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5),
        SolverConfig::fixed(Method::Rk4, Steps::Count(50)),
        SolverConfig::fixed(Method::Midpoint, Steps::Count(50)),
    ] {
        let b = velocity.sampler(solver.clone()).sample(256, 5).unwrap().x;
        for (file, model) in &exports {
            let a = model.sampler(solver.clone()).sample(256, 5).unwrap().x;
            let diff = a
                .iter()
                .zip(b.iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            println!("{:?}: {file} vs velocity samples {diff:e}", solver.method);
            assert!(
                diff <= 2e-3,
                "{:?}: {file} and velocity samples differ by {diff}",
                solver.method
            );
        }
    }
}

/// The x1 and x0 models' exact-divergence log-likelihoods (through their
/// tangent graphs and the conversion) match the mixture's exact log-density.
#[test]
fn x1_and_x0_models_give_the_exact_log_density() {
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
    for (file, model) in prediction_exports() {
        let got = model
            .likelihood(solver.clone())
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
        println!("{file}: log p mean absolute error {mae:e}");
        assert!(mae <= 2e-4, "{file}: log p MAE {mae:e}");
    }
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

    // Parameter overrides of the metadata's scheduler mean nothing beside a
    // given scheduler, or for a model without one: refused, not dropped.
    let params = vec![("sigma_min".to_string(), 1e-3)];
    let beside_a_scheduler = ModelOptions {
        scheduler: Some(Arc::new(Scheduler::builtin("ot", &[]).unwrap())),
        scheduler_params: params.clone(),
        ..ModelOptions::default()
    };
    let without_metadata = ModelOptions {
        scheduler_params: params,
        ..ModelOptions::default()
    };
    for (file, options) in [
        ("tests/fixtures/gmm_ot.onnx", beside_a_scheduler),
        ("tests/fixtures/time_b.onnx", without_metadata),
    ] {
        match open(file, options) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("scheduler_params"), "{m}"),
            other => panic!("{file}: expected an invalid-argument error, got {other:?}"),
        }
    }

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

/// A guided ONNX model's exact log-likelihoods (the tangent graph through
/// both halves of the guidance) equal those of the same guided field in
/// closed form: tests/fixtures/gmm_label_ot.onnx is the labelled ring
/// mixture's exact velocity, and the reference is the analytic labelled
/// mixture under the same `Guided` adapter, whose divergence is
/// (1 + w)·div u_c − w·div u_∅ from the mixture's formulas. The same solver
/// runs both, so they differ by the network's float32 arithmetic only.
#[test]
fn a_guided_models_exact_likelihood_matches_the_closed_form() {
    use fmrt::field::adapt::Guided;
    use fmrt::likelihood::Likelihood;
    let options = ModelOptions {
        guidance: 1.5,
        ..ModelOptions::default()
    };
    let model = open("tests/fixtures/gmm_label_ot.onnx", options).unwrap();
    let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
    let analytic = Guided::new(
        Arc::new(crate::adapt::LabelledMixture::new(ot)),
        1.5,
        Guided::null_label("label", 4),
    )
    .unwrap();
    let labels: Vec<i64> = (0..48).map(|i| i % 4).collect();
    let condition = Extras::new().with("label", ExtraTensor::labels(&labels));
    let solver = SolverConfig::fixed(Method::Midpoint, Steps::Count(40));
    let data = model
        .sampler(solver.clone())
        .with_extras(condition.clone())
        .sample(48, 21)
        .unwrap()
        .x;
    let onnx = model
        .likelihood(solver.clone())
        .with_extras(condition.clone())
        .log_likelihood(data.view())
        .unwrap()
        .log_p;
    let closed_form = Likelihood::new(Arc::new(analytic), solver)
        .with_extras(condition)
        .log_likelihood(data.view())
        .unwrap()
        .log_p;
    let worst = onnx
        .iter()
        .zip(&closed_form)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("guided labelled mixture: ONNX exact vs closed-form log p, max {worst:e}");
    // About 3× the 5e-7 measured.
    assert!(
        worst <= 1.5e-6,
        "ONNX and closed-form log p differ by {worst}"
    );
}
