//! The `fmrt` binary: exit codes, output formats and error reporting.

use std::process::{Command, Output};

use fmrt::scheduler::{Schedule, Scheduler};

fn fmrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fmrt"))
        .args(args)
        .output()
        .expect("the fmrt binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_prints_expressions_with_overrides() {
    let out = fmrt(&["check", "poly", "--param", "n=3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("param n = 3"), "{text}");
    assert!(text.contains("alpha' = n * t^(n - 1)"), "{text}");
    assert!(text.contains("ok: 0 errors, 0 warnings"), "{text}");
}

#[test]
fn check_reports_warnings_but_succeeds() {
    let out = fmrt(&["check", "vp"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("warning: σ' is infinite at t = 1"), "{text}");
    assert!(text.contains("ok: 0 errors, 3 warnings"), "{text}");
}

#[test]
fn check_fails_on_a_broken_file_with_location_and_hint() {
    let dir = std::env::temp_dir().join(format!("fmrt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("broken.fm");
    std::fs::write(&file, "# a typo\nalpha = sine(t)\nsigma = 1 - t\n").expect("write");
    let out = fmrt(&["check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("broken.fm:2:9"), "{text}");
    assert!(text.contains("did you mean `sin`?"), "{text}");
    assert!(text.contains("failed: 1 error"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_rejects_an_unknown_param_override() {
    let out = fmrt(&["check", "poly", "--param", "m=3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("did you mean `n`?"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn eval_json_matches_the_library() {
    let out = fmrt(&["eval", "cosine", "--t", "0,0.25,0.5", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 3);
    let cosine = Scheduler::builtin("cosine", &[]).expect("built-in");
    for (entry, t) in list.iter().zip([0.0, 0.25, 0.5]) {
        let c = cosine.coefficients(t);
        assert_eq!(entry["t"].as_f64(), Some(t));
        assert_eq!(entry["alpha"].as_f64(), Some(c.alpha));
        assert_eq!(entry["sigma"].as_f64(), Some(c.sigma));
        assert_eq!(entry["d_alpha"].as_f64(), Some(c.d_alpha));
        assert_eq!(entry["d_sigma"].as_f64(), Some(c.d_sigma));
    }
}

#[test]
fn eval_writes_null_for_an_endpoint_singularity() {
    let out = fmrt(&["eval", "linear_vp", "--t", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert!(list[0]["d_sigma"].is_null(), "{list}");
    assert_eq!(list[0]["alpha"].as_f64(), Some(1.0));
    assert!(
        stderr(&out).contains("infinite at t = 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn eval_table_has_one_row_per_time() {
    let out = fmrt(&["eval", "poly", "--param", "n=2", "--t", "0.5,1"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let row: Vec<f64> = lines[1]
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    assert_eq!(row, vec![0.5, 0.25, 0.75, 1.0, -1.0]);
}

#[test]
fn usage_errors_exit_with_1() {
    let out = fmrt(&["eval", "ot", "--t", "1.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("outside [0, 1]"));
    let out = fmrt(&["check", "poly", "--param", "n"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NAME=VALUE"), "{}", stderr(&out));
}

#[test]
fn an_unknown_scheduler_names_the_built_ins() {
    let out = fmrt(&["eval", "cosin", "--t", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cosine"), "{}", stderr(&out));
}

mod models {
    //! `fmrt sample`, `fmrt inspect` and `fmrt likelihood` on the shipped models.

    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use fmrt::field::analytic::GaussianMixture;
    use fmrt::field::onnx::ensure_runtime_for_development;
    use fmrt::scheduler::Scheduler;
    use ndarray::{ArrayD, Ix2};
    use ndarray_npy::{read_npy, write_npy};

    use super::{fmrt, stderr, stdout};

    fn repo(path: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(path)
            .display()
            .to_string()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fmrt-cli-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    fn runtime() {
        ensure_runtime_for_development().expect("ONNX Runtime is available");
    }

    #[test]
    fn sample_writes_samples_and_trajectories() {
        runtime();
        let out = scratch("moons.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &repo("examples/models/two_moons.onnx"),
            "-n",
            "64",
            "--seed",
            "3",
            "--solver",
            "midpoint",
            "--steps",
            "20",
            "-o",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let x: ArrayD<f32> = read_npy(&out).expect("a float32 .npy");
        assert_eq!(x.shape(), &[64, 2]);
        assert!(x.iter().all(|v| v.is_finite()));
        assert!(
            stderr(&o).contains("40 field evaluations"),
            "{}",
            stderr(&o)
        );

        let traj = scratch("traj.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &repo("tests/fixtures/gmm_ot.onnx"),
            "-n",
            "10",
            "--times",
            "0,0.5,1",
            "-o",
            traj.to_str().expect("utf-8"),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).is_empty(), "--quiet printed {}", stderr(&o));
        let states: ArrayD<f32> = read_npy(&traj).expect("a float32 .npy");
        assert_eq!(states.shape(), &[3, 10, 2]);
    }

    /// Caller noise through the CLI gives what the library gives for the
    /// analytic twin of the model (same solver, same starting points).
    #[test]
    fn sample_from_noise_matches_the_analytic_field() {
        runtime();
        let noise = scratch("noise.npy");
        let x0 = ArrayD::from_shape_fn(vec![20, 2], |ix| {
            ((ix[0] * 7 + ix[1] * 3) % 11) as f32 / 5.0 - 1.0
        });
        write_npy(&noise, &x0).expect("write noise");
        let out = scratch("from_noise.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &repo("tests/fixtures/gmm_ot.onnx"),
            "--noise",
            noise.to_str().expect("utf-8"),
            "--rtol",
            "1e-6",
            "--atol",
            "1e-6",
            "-o",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let x: ArrayD<f32> = read_npy(&out).expect("a float32 .npy");
        let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("built-in"));
        let exact = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).expect("mixture"));
        let want = fmrt::sampler::Sampler::new(
            exact,
            fmrt::solver::SolverConfig::adaptive(fmrt::solver::Method::Dopri5, 1e-6, 1e-6),
        )
        .integrate(x0.view(), &fmrt::sampler::TimeSpan::Full, &[])
        .expect("sampling");
        let diff = (&x - &want.x).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn guided_conditional_sampling() {
        runtime();
        let out = scratch("cond.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &repo("examples/models/conditional.onnx"),
            "-n",
            "200",
            "--label",
            "0",
            "--guidance",
            "1.5",
            "--solver",
            "midpoint",
            "--steps",
            "40",
            "-o",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("guidance w = 1.5"), "{}", stderr(&o));
        let x: ArrayD<f32> = read_npy(&out).expect("a float32 .npy");
        let x = x.into_dimensionality::<Ix2>().expect("2-D");
        // Class 0's region is the disc of radius 1.4 around (0, 3).
        let inside = x
            .rows()
            .into_iter()
            .filter(|p| f32::hypot(p[0], p[1] - 3.0) < 1.4)
            .count();
        assert!(inside >= 190, "{inside} of 200 in class 0's region");
    }

    #[test]
    fn inspect_shows_the_mapping_and_metadata() {
        runtime();
        let o = fmrt(&["inspect", &repo("examples/models/conditional.onnx")]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        for needle in [
            "state (detected)",
            "time [B] (detected)",
            "label",
            "extra",
            "fmrt.null_condition = 3",
            "provider: CPU",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
    }

    #[test]
    fn likelihood_json_summary_and_values() {
        runtime();
        let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("built-in"));
        let exact = GaussianMixture::ring(8, 4.0, 0.3, ot).expect("mixture");
        let data = exact.sample_data(64, 77);
        let path = scratch("data.npy");
        write_npy(&path, &data).expect("write data");
        let out = scratch("logp.npy");
        let o = fmrt(&[
            "likelihood",
            "--model",
            &repo("tests/fixtures/gmm_ot.onnx"),
            "--data",
            path.to_str().expect("utf-8"),
            "--divergence",
            "finite-difference",
            "-o",
            out.to_str().expect("utf-8"),
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let summary: serde_json::Value =
            serde_json::from_str(&stdout(&o)).expect("one JSON object");
        for key in [
            "mean_log_p",
            "mean_bits_per_dim",
            "nfe",
            "samples",
            "divergence",
        ] {
            assert!(summary.get(key).is_some(), "missing {key} in {summary}");
        }
        assert_eq!(summary["divergence"], "finite-difference");
        let log_p: ndarray::Array1<f64> = read_npy(&out).expect("a float64 .npy");
        let want = exact.log_density(data.view(), &[1.0]).expect("log density");
        let mae = log_p
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 64.0;
        assert!(mae < 5e-3, "mean absolute error {mae}");
    }

    #[test]
    fn bad_inputs_give_one_line_errors() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let out = scratch("never.npy");
        let out = out.to_str().expect("utf-8");
        let f64_noise = scratch("f64.npy");
        write_npy(&f64_noise, &ArrayD::<f64>::zeros(vec![4, 2])).expect("write");
        let wrong_shape = scratch("wrong_shape.npy");
        write_npy(&wrong_shape, &ArrayD::<f32>::zeros(vec![4, 3])).expect("write");
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["sample", "--model", "no/such/model.onnx", "-o", out],
                "no/such/model.onnx",
            ),
            (
                vec![
                    "sample",
                    "--model",
                    &model,
                    "--noise",
                    f64_noise.to_str().expect("utf-8"),
                    "-o",
                    out,
                ],
                "expected a float32 array",
            ),
            (
                vec![
                    "sample",
                    "--model",
                    &model,
                    "--noise",
                    wrong_shape.to_str().expect("utf-8"),
                    "-o",
                    out,
                ],
                "[4, 3]",
            ),
            (
                vec!["sample", "--model", &model, "--solver", "rk5", "-o", out],
                "rk5",
            ),
            (
                vec![
                    "sample", "--model", &model, "--solver", "rk4", "--steps", "0", "-o", out,
                ],
                "--steps must be at least 1",
            ),
            (
                vec!["sample", "--model", &model, "--label", "1", "-o", out],
                "no int64 input",
            ),
            (
                vec![
                    "likelihood",
                    "--model",
                    &model,
                    "--data",
                    wrong_shape.to_str().expect("utf-8"),
                    "-o",
                    out,
                ],
                "expected [N, 2]",
            ),
        ];
        for (args, needle) in cases {
            let o = fmrt(&args);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains(needle),
                "{args:?}: `{needle}` not in {}",
                stderr(&o)
            );
        }
        assert!(!Path::new(out).exists(), "a failed run left an output file");
    }
}
