//! Models exported the way their projects export them (CosyVoice, Matcha-TTS,
//! F5-TTS, SD3, FLUX, ZipVoice; stand-ins in `tests/fixtures/real/`, made by
//! `make_real_models.py`), sampled through [`Model`] with each project's
//! settings, must end where the project's own sampling loop ends (re-run with
//! ONNX Runtime by the script): within 1e-4 relative, max|Δ| / (1 + max|ref|),
//! at two state sizes with one loaded model. Bad input is an error of the
//! right kind, never a panic.

use std::path::{Path, PathBuf};

use fmrt::field::adapt::TimeDirection;
use fmrt::field::onnx::OnnxField;
use fmrt::field::{ExtraDtype, ExtraTensor, Extras, NullCondition, NullValue, VelocityField};
use fmrt::grid::explicit_steps;
use fmrt::model::{Model, ModelOptions};
use fmrt::sampler::Sampler;
use fmrt::solver::{Method, SolverConfig, StatePrecision};
use fmrt::Error;
use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real")
}

fn runtime() {
    fmrt::field::onnx::ensure_runtime_for_development(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("ONNX Runtime (bash scripts/fetch-onnxruntime.sh)");
}

fn cases(model: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(format!("{model}.cases.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A `.npy` of the fixtures as the tensor type it holds.
fn tensor(file: &str) -> ExtraTensor {
    let open = || std::io::BufReader::new(std::fs::File::open(dir().join(file)).unwrap());
    match ArrayD::<f32>::read_npy(open()) {
        Ok(a) => return ExtraTensor::Float32(a),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => panic!("{file}: {e}"),
    }
    match ArrayD::<i64>::read_npy(open()) {
        Ok(a) => return ExtraTensor::Int64(a),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => panic!("{file}: {e}"),
    }
    ExtraTensor::Bool(ArrayD::<bool>::read_npy(open()).unwrap_or_else(|e| panic!("{file}: {e}")))
}

fn f32_array(file: &str) -> ArrayD<f32> {
    match tensor(file) {
        ExtraTensor::Float32(a) => a,
        other => panic!("{file} holds {}", other.dtype_name()),
    }
}

/// The conditioning of a case, each value in the type the model declares.
fn conditioning(network: &OnnxField, cond: &Value) -> Extras {
    let mut extras = Extras::new();
    for (name, value) in cond.as_object().unwrap() {
        let input = network
            .extra_inputs()
            .iter()
            .find(|i| &i.name == name)
            .unwrap();
        let dtype = ExtraDtype::from_name(&input.dtype).unwrap();
        let t = match value {
            Value::String(file) => tensor(file).convert_to(dtype).unwrap(),
            Value::Number(n) => ExtraTensor::scalar(0.0)
                .convert_to(dtype)
                .unwrap()
                .filled_like(n.as_f64().unwrap())
                .unwrap(),
            other => panic!("{name}: {other}"),
        };
        extras.insert(name.clone(), t);
    }
    network.conditioning(&extras)
}

fn null_condition(spec: &Value) -> Option<NullCondition> {
    let spec = spec.as_object()?;
    if spec.is_empty() {
        return None;
    }
    let mut null = NullCondition::new();
    for (name, value) in spec {
        let value = match value {
            Value::String(s) if s == "zeros" => NullValue::Zeros,
            Value::Object(o) if o.contains_key("fill") => {
                NullValue::Fill(o["fill"].as_f64().unwrap())
            }
            Value::Object(o) => NullValue::Tensor(tensor(o["tensor"].as_str().unwrap())),
            other => panic!("{name}: {other}"),
        };
        null.insert(name.clone(), value);
    }
    Some(null)
}

/// The model of `name` opened with the settings of its cases file.
fn open(name: &str) -> (Model, Value) {
    runtime();
    let spec = cases(name);
    let f = &spec["fmrt"];
    let builder = OnnxField::builder()
        .state_input(f["state_input"].as_str().unwrap())
        .time_input(f["time_input"].as_str().unwrap());
    let options = ModelOptions {
        guidance: f["guidance"].as_f64().unwrap_or(0.0),
        null_condition: null_condition(&f["null_condition"]),
        time_direction: Some(
            f["time_direction"]
                .as_str()
                .unwrap()
                .parse::<TimeDirection>()
                .unwrap(),
        ),
        time_scale: f["time_scale"].as_f64(),
        ..ModelOptions::default()
    };
    let model = Model::open_with(
        builder,
        dir().join(spec["model"].as_str().unwrap()),
        options,
    )
    .unwrap();
    (model, spec)
}

fn relative_error(got: &ArrayD<f32>, want: &ArrayD<f32>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    f64::from(diff) / (1.0 + f64::from(scale))
}

fn times(case: &Value) -> Vec<f64> {
    case["grid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// Every case of `name` through one loaded model: its first raw call and
/// its whole loop.
fn matches_its_project(name: &str) {
    let (model, spec) = open(name);
    let noise_scale = spec["fmrt"]["noise_scale"].as_f64().unwrap();
    let reversed = spec["fmrt"]["time_direction"] == "reversed";
    let scale = spec["fmrt"]["time_scale"].as_f64().unwrap();
    let mut sizes = Vec::new();
    for case in spec["cases"].as_array().unwrap() {
        let label = case["label"].as_str().unwrap();
        let network = model.network();
        let extras = conditioning(network, &case["cond"]);
        let z = f32_array(case["noise"].as_str().unwrap());
        sizes.push(z.shape().to_vec());

        // The network alone, at the grid's first time on its own clock.
        let t0 = times(case)[0];
        let fed = if reversed {
            scale * (1.0 - t0)
        } else {
            scale * t0
        };
        let x0 = z.mapv(|v| v * noise_scale as f32);
        let first = f32_array(case["first_call"]["output"].as_str().unwrap());
        if first.shape() == x0.shape() {
            let mut out = ArrayD::zeros(x0.raw_dim());
            network
                .velocity(
                    x0.view(),
                    &[fed],
                    &extras.for_batch(x0.shape()[0]).unwrap(),
                    out.view_mut(),
                )
                .unwrap();
            let e = relative_error(&out, &first);
            assert!(e <= 1e-5, "{name} {label}: first call off by {e:e}");
        }

        let solver = SolverConfig::fixed(Method::Euler, explicit_steps(&times(case)).unwrap());
        let sampler = Sampler::new(model.field(), solver)
            .with_noise_scale(noise_scale)
            .unwrap()
            .with_extras(extras);
        let got = sampler.sample_from_noise(z.view(), &[]).unwrap();
        let want = f32_array(case["expected"].as_str().unwrap());
        let e = relative_error(&got.x, &want);
        eprintln!("{name} {label}: final state within {e:.1e} of the project's loop");
        assert!(
            e <= 1e-4,
            "{name} {label}: final state off by {e:e} (relative)"
        );
        assert_eq!(got.stats.nfe, times(case).len() - 1);

        // The same run with the state in the network's own precision, as the
        // project's loop keeps it.
        let f32_state = sampler.with_state_precision(StatePrecision::F32);
        let got32 = f32_state.sample_from_noise(z.view(), &[]).unwrap();
        let e32 = relative_error(&got32.x, &want);
        assert!(
            e32 <= 1e-4,
            "{name} {label}: final state with an f32 state off by {e32:e} (relative)"
        );
    }
    assert_ne!(sizes[0], sizes[1], "{name}: the two cases have one size");
}

#[test]
fn cosyvoice_with_a_fixed_batch_of_two_matches_solve_euler() {
    matches_its_project("cosyvoice_b2");
}

#[test]
fn cosyvoice_with_a_dynamic_batch_matches_solve_euler() {
    matches_its_project("cosyvoice_dyn");
}

#[test]
fn matcha_matches_its_euler_loop_with_temperature() {
    matches_its_project("matcha");
}

#[test]
fn f5_tts_matches_its_sway_sampled_cfg_loop() {
    matches_its_project("f5");
}

#[test]
fn sd3_matches_diffusers_flow_match_euler_with_cfg() {
    matches_its_project("sd3");
}

#[test]
fn flux_matches_diffusers_with_batchless_ids_and_a_guidance_input() {
    matches_its_project("flux");
}

#[test]
fn zipvoice_matches_its_euler_loop_with_scalar_inputs() {
    matches_its_project("zipvoice");
}

#[test]
fn a_lent_velocity_is_the_velocity_on_every_call_path() {
    // One plain run (ONNX Runtime's output lent as it lies), a padded call
    // (1 row on the batch-2 export), chunks (3 rows), and per-sample times
    // (grouped into one call per time on ZipVoice's scalar time): the lent
    // view equals what `velocity` writes, bit for bit.
    for (name, rows) in [("cosyvoice_b2", 1..=3), ("zipvoice", 1..=2)] {
        lent_velocity_matches(name, rows);
    }
}

fn lent_velocity_matches(name: &str, rows: std::ops::RangeInclusive<usize>) {
    let (model, spec) = open(name);
    let case = &spec["cases"][0];
    let network = model.network();
    let extras = conditioning(network, &case["cond"]);
    let z = f32_array(case["noise"].as_str().unwrap());
    for rows in rows {
        let views: Vec<_> = (0..rows).map(|_| z.view()).collect();
        let x = ndarray::concatenate(ndarray::Axis(0), &views).unwrap();
        let batch = extras.for_batch(rows).unwrap();
        for t in [vec![0.4], (0..rows).map(|i| 0.1 + 0.2 * i as f64).collect()] {
            let mut want = ArrayD::zeros(x.raw_dim());
            network
                .velocity(x.view(), &t, &batch, want.view_mut())
                .unwrap();
            let mut scratch = Vec::new();
            let mut lent = None;
            network
                .lend_velocity(x.view(), &t, &batch, &mut scratch, &mut |v| {
                    lent = Some(v.to_owned());
                    Ok(())
                })
                .unwrap();
            assert_eq!(lent.unwrap(), want, "{name}: {rows} rows at t = {t:?}");
        }
    }
}

#[test]
fn the_fixed_batch_packs_both_guidance_rows_in_one_call() {
    // Guidance on the batch-2 export: the conditional and unconditional row
    // of one sample are the one packed call whose output the script kept.
    let (model, spec) = open("cosyvoice_b2");
    let case = &spec["cases"][0];
    let network = model.network();
    assert_eq!(network.fixed_batch(), Some(2));
    let extras = conditioning(network, &case["cond"]);
    let null = null_condition(&spec["fmrt"]["null_condition"]).unwrap();
    let unconditional = null.resolve(&extras, 1).unwrap();
    let packed = extras.interleave(&unconditional).unwrap();
    let z = f32_array(case["noise"].as_str().unwrap());
    let x2 = ndarray::concatenate(ndarray::Axis(0), &[z.view(), z.view()]).unwrap();
    let mut out = ArrayD::zeros(x2.raw_dim());
    network
        .velocity(x2.view(), &[0.0], &packed, out.view_mut())
        .unwrap();
    let first = f32_array(case["first_call"]["output"].as_str().unwrap());
    assert!(relative_error(&out, &first) <= 1e-5);
    // Three samples: two full calls and one padded; each sample on its own.
    let x3 = ndarray::concatenate(ndarray::Axis(0), &[z.view(), z.view(), z.view()]).unwrap();
    let mut v3 = ArrayD::zeros(x3.raw_dim());
    let e3 = extras.for_batch(3).unwrap();
    network
        .velocity(x3.view(), &[0.3], &e3, v3.view_mut())
        .unwrap();
    let mut v1 = ArrayD::zeros(z.raw_dim());
    network
        .velocity(z.view(), &[0.3], &extras, v1.view_mut())
        .unwrap();
    for row in v3.outer_iter() {
        assert_eq!(row, v1.index_axis(ndarray::Axis(0), 0));
    }
}

#[test]
fn a_conditioning_length_that_disagrees_with_the_state_names_both() {
    let (model, spec) = open("cosyvoice_dyn");
    let case = &spec["cases"][0];
    let mut cond = case["cond"].clone();
    cond["mu"] = Value::String("cosyvoice_dyn.bad_mu_T36.npy".into());
    let extras = conditioning(model.network(), &cond);
    let z = f32_array(case["noise"].as_str().unwrap());
    let mut out = ArrayD::zeros(z.raw_dim());
    let err = model
        .network()
        .velocity(z.view(), &[0.5], &extras, out.view_mut())
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Shape { .. }), "{text}");
    assert!(
        text.contains("`mu`")
            && text.contains("seq_len")
            && text.contains("37")
            && text.contains("36"),
        "{text}"
    );
}

#[test]
fn a_bool_mask_given_as_one_half_is_refused() {
    let (model, spec) = open("f5");
    let bad = tensor("f5.bad_mask.npy");
    let err = bad.convert_to(ExtraDtype::Bool).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // Passed as float32 to the bool input: refused by name before ONNX Runtime.
    let case = &spec["cases"][0];
    let mut extras = conditioning(model.network(), &case["cond"]);
    extras.insert("mask", bad);
    let z = f32_array(case["noise"].as_str().unwrap());
    let mut out = ArrayD::zeros(z.raw_dim());
    let err = model
        .network()
        .velocity(z.view(), &[0.5], &extras, out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Extra { input, reason, .. } if input == "mask" && reason.contains("bool")),
        "{err}"
    );
}

#[test]
fn a_null_condition_of_another_batch_is_a_shape_error() {
    let (_, spec) = open("cosyvoice_b2");
    let case = &spec["cases"][0];
    runtime();
    let mut options = ModelOptions {
        guidance: 0.7,
        ..ModelOptions::default()
    };
    options.null_condition = Some(NullCondition::new().with(
        "mu",
        NullValue::Tensor(tensor("cosyvoice_b2.bad_null_mu_b3.npy")),
    ));
    let model = Model::open(dir().join("cosyvoice_b2.onnx"), options).unwrap();
    let extras = conditioning(model.network(), &case["cond"]);
    let sampler = Sampler::new(
        model.field(),
        SolverConfig::fixed(Method::Euler, explicit_steps(&times(case)).unwrap()),
    )
    .with_extras(extras);
    let z = f32_array(case["noise"].as_str().unwrap());
    let err = sampler.sample_from_noise(z.view(), &[]).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("`mu`"), "{err}");
}

#[test]
fn a_missing_conditioning_input_is_named_with_its_declared_shape() {
    let (model, spec) = open("sd3");
    let case = &spec["cases"][0];
    let mut extras = conditioning(model.network(), &case["cond"]);
    extras = {
        let mut kept = Extras::new();
        for (n, t) in extras.iter().filter(|(n, _)| *n != "pooled_projections") {
            kept.insert(n, t.clone());
        }
        kept
    };
    let z = f32_array(case["noise"].as_str().unwrap());
    let mut out = ArrayD::zeros(z.raw_dim());
    let err = model
        .network()
        .velocity(z.view(), &[500.0], &extras, out.view_mut())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Extra { input, reason, .. }
            if input == "pooled_projections" && reason.contains("[batch")),
        "{err}"
    );
}

#[test]
fn a_dynamic_model_samples_from_a_given_shape_and_says_when_it_has_none() {
    let (model, spec) = open("matcha");
    assert_eq!(model.field().state_shape(), None);
    let case = &spec["cases"][0];
    let extras = conditioning(model.network(), &case["cond"]);
    let z = f32_array(case["noise"].as_str().unwrap());
    let solver = SolverConfig::fixed(Method::Euler, explicit_steps(&times(case)).unwrap());
    let sampler = Sampler::new(model.field(), solver).with_extras(extras);
    let err = sampler.sample(z.shape()[0], 1).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("with_state_shape"),
        "{err}"
    );
    let samples = sampler
        .with_state_shape(&z.shape()[1..])
        .sample(z.shape()[0], 1)
        .unwrap();
    assert_eq!(samples.x.shape(), z.shape());
    assert!(samples.x.iter().all(|v| v.is_finite()));
}

/// J·v of a whole model chain (clock, guidance, fixed batch, batchless and
/// typed inputs) against central differences of its velocity.
#[test]
fn jacobian_vector_products_pass_through_every_new_piece() {
    for name in [
        "cosyvoice_b2",
        "cosyvoice_dyn",
        "matcha",
        "zipvoice",
        "sd3",
        "flux",
        "f5",
    ] {
        let (model, spec) = open(name);
        let field = model.field();
        assert!(
            field.derivatives().jvp,
            "{name}: no JVP: {:?}",
            model.network().jvp_unavailable_reason()
        );
        let case = &spec["cases"][0];
        let extras = conditioning(model.network(), &case["cond"]);
        let z = f32_array(case["noise"].as_str().unwrap());
        let extras = extras.for_batch(z.shape()[0]).unwrap();
        let t = [0.4];
        let mut rng = fmrt::random::SeededRng::new(3);
        let v = z.mapv(|_| rng.normal() as f32);
        let mut jv = ArrayD::zeros(z.raw_dim());
        field
            .jvp(z.view(), &t, &extras, v.view(), jv.view_mut())
            .unwrap();
        let eps = 1e-2f32;
        let (plus, minus) = (&z + &(&v * eps), &z - &(&v * eps));
        let (mut up, mut down) = (ArrayD::zeros(z.raw_dim()), ArrayD::zeros(z.raw_dim()));
        field
            .velocity(plus.view(), &t, &extras, up.view_mut())
            .unwrap();
        field
            .velocity(minus.view(), &t, &extras, down.view_mut())
            .unwrap();
        let fd = (&up - &down).mapv(|d| d / (2.0 * eps));
        let e = relative_error(&jv, &fd);
        assert!(
            e < 2e-3,
            "{name}: J·v differs from central differences by {e:e}"
        );
        // Every one of them has the stacked form (Pad, Expand and the other
        // shape operators of these exports included), and it gives the same
        // products.
        assert!(
            field.derivatives().stacked_jvp,
            "{name}: no stacked form: {:?}",
            model.network().stacked_jvp_unavailable_reason()
        );
        let directions = ndarray::stack(ndarray::Axis(0), &[v.view(), v.view()]).unwrap();
        let mut vel = ArrayD::zeros(z.raw_dim());
        let mut products = ArrayD::zeros(directions.raw_dim());
        field
            .velocity_and_jvps(
                z.view(),
                &t,
                &extras,
                directions.view(),
                vel.view_mut(),
                products.view_mut(),
            )
            .unwrap();
        let e = relative_error(&products.index_axis(ndarray::Axis(0), 1).to_owned(), &jv);
        assert!(e < 1e-5, "{name}: stacked products differ by {e:e}");
    }
}

/// The model of `name` with `metadata` added to its `metadata_props`, as
/// bytes (a project that exports with fmrt's keys).
fn with_metadata(name: &str, metadata: &[(&str, &str)]) -> Vec<u8> {
    let bytes = std::fs::read(dir().join(format!("{name}.onnx"))).unwrap();
    let mut model = fmrt::graph::decode_model(&bytes).unwrap();
    for (k, v) in metadata {
        model
            .metadata_props
            .push(fmrt::graph::proto::StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            });
    }
    fmrt::graph::encode_model(&model)
}

#[test]
fn the_clock_and_a_per_input_null_condition_come_from_metadata() {
    runtime();
    for (name, metadata, guidance) in [
        (
            "sd3",
            vec![
                ("fmrt.time_direction", "reversed"),
                ("fmrt.time_scale", "1000"),
                ("fmrt.state_input", "hidden_states"),
            ],
            0.0,
        ),
        (
            "f5",
            vec![("fmrt.null_condition", r#"{"cond": "zeros", "text": -1}"#)],
            2.0,
        ),
    ] {
        let spec = cases(name);
        let bytes = with_metadata(name, &metadata);
        let options = ModelOptions {
            guidance,
            ..ModelOptions::default()
        };
        let model = Model::from_bytes(OnnxField::builder(), &bytes, options).unwrap();
        let case = &spec["cases"][0];
        let extras = conditioning(model.network(), &case["cond"]);
        let z = f32_array(case["noise"].as_str().unwrap());
        let solver = SolverConfig::fixed(Method::Euler, explicit_steps(&times(case)).unwrap());
        let got = Sampler::new(model.field(), solver)
            .with_extras(extras)
            .sample_from_noise(z.view(), &[])
            .unwrap();
        if name == "f5" {
            let want = f32_array(case["expected"].as_str().unwrap());
            let e = relative_error(&got.x, &want);
            assert!(e <= 1e-4, "f5 with metadata: off by {e:e}");
        } else {
            // SD3 without guidance has no golden; its clock from metadata must
            // equal the clock given as options.
            let explicit = ModelOptions {
                time_direction: Some(TimeDirection::Reversed),
                time_scale: Some(1000.0),
                ..ModelOptions::default()
            };
            let plain = Model::open_with(
                OnnxField::builder().state_input("hidden_states"),
                dir().join("sd3.onnx"),
                explicit,
            )
            .unwrap();
            let extras = conditioning(plain.network(), &case["cond"]);
            let solver = SolverConfig::fixed(Method::Euler, explicit_steps(&times(case)).unwrap());
            let want = Sampler::new(plain.field(), solver)
                .with_extras(extras)
                .sample_from_noise(z.view(), &[])
                .unwrap();
            assert_eq!(got.x, want.x);
        }
    }
    // A malformed clock in metadata is a load error naming the key.
    let bytes = with_metadata("sd3", &[("fmrt.time_direction", "sideways")]);
    let err = Model::from_bytes(OnnxField::builder(), &bytes, ModelOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }), "{err}");
    assert!(err.to_string().contains("fmrt.time_direction"), "{err}");
}

#[test]
fn a_state_shape_without_elements_is_refused_before_any_work() {
    let (model, _) = open("matcha");
    let sampler = Sampler::new(
        model.field(),
        SolverConfig::fixed(Method::Euler, fmrt::solver::Steps::Count(2)),
    )
    .with_state_shape(&[80, 0]);
    for n in [1, usize::MAX] {
        let err = sampler.sample(n, 0).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("no elements"),
            "{err}"
        );
    }
    let empty = ArrayD::<f32>::zeros(vec![3, 80, 0]);
    let err = sampler.sample_from_noise(empty.view(), &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}
