//! The `fmrt` binary: exit codes, output formats and error reporting.

use std::process::{Command, Output};

use fmrt::scheduler::{Schedule, Scheduler};

#[path = "../../tests/support/external_data.rs"]
mod support;

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
    assert!(
        !text.contains('\x1b'),
        "colour escapes in piped output: {text:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_prints_a_grids_points_and_locates_broken_grids() {
    let out = fmrt(&[
        "check", "--grid", "shift", "--param", "mu=1", "--steps", "4",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("param mu = 1"), "{text}");
    for line in ["t(0/4) = 0", "t(1/4) = 0.25", "t(2/4) = 0.5", "t(4/4) = 1"] {
        assert!(text.contains(line), "{line} missing: {text}");
    }
    let dir = std::env::temp_dir().join(format!("fmrt-cli-grid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("wobble.fm");
    std::fs::write(&file, "# overshoots\ngrid = u + 0.5 * sin(2 * pi * u)\n").expect("write");
    // A grid file is recognised without --grid.
    let out = fmrt(&["check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("wobble.fm:2:1"), "{text}");
    assert!(text.contains("not strictly increasing"), "{text}");
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

    use super::support::save_with_external_data;

    fn repo(path: &str) -> String {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
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
        ensure_runtime_for_development(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.."
        )))
        .expect("ONNX Runtime is available");
    }

    /// The exit code says what kind of failure it was (see `fmrt --help`).
    #[test]
    fn exit_codes_follow_the_kind_of_failure() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        // ONNX Runtime missing: 3, with the place looked at.
        let missing = "/nonexistent/fmrt-cli-test/libonnxruntime.so";
        let o = fmrt(&["inspect", &model, "--ort-lib", missing]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(stderr(&o).contains(missing), "{}", stderr(&o));
        // A model that does not load: 1, naming the file.
        let o = fmrt(&["inspect", &repo("tests/fixtures/truncated.onnx")]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("truncated.onnx"), "{}", stderr(&o));
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

    /// `--state-precision f32` takes the f64 run's steps within f32
    /// rounding; a solver it does not apply to, --log-prob or an unknown
    /// name is refused by name (exit 1).
    #[test]
    fn sample_with_an_f32_state() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let run = |extra: &[&str], name: &str| {
            let out = scratch(name);
            let mut args = vec!["sample", "--model", &model, "-n", "32", "-o"];
            args.push(out.to_str().expect("utf-8"));
            args.extend_from_slice(extra);
            (fmrt(&args), out)
        };
        let read = |p: &PathBuf| read_npy::<_, ArrayD<f32>>(p).expect("a float32 .npy");
        let rk4 = ["--solver", "rk4", "--steps", "12"];
        let (o, wide) = run(&rk4, "p_f64.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let f32_state = [&rk4[..], &["--state-precision", "f32"]].concat();
        let (o, narrow) = run(&f32_state, "p_f32.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("f32 state"), "{}", stderr(&o));
        let d = (&read(&wide) - &read(&narrow))
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(d < 1e-4, "f32 and f64 states differ by {d:e}");

        let (o, _) = run(&["--state-precision", "f32"], "p_adaptive.npy");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("state precision f32"), "{}", stderr(&o));
        assert!(stderr(&o).contains("adaptive steps"), "{}", stderr(&o));
        let logp = scratch("p_logp.npy");
        let with_logp = [
            &f32_state[..],
            &["--log-prob", logp.to_str().expect("utf-8")],
        ]
        .concat();
        let (o, _) = run(&with_logp, "p_logp_x.npy");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("--state-precision f32"),
            "{}",
            stderr(&o)
        );
        let (o, _) = run(&["--state-precision", "f16"], "p_bad.npy");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("f64 or f32"), "{}", stderr(&o));
    }

    /// `--grid shift` equals the same grid written in a user `.fm` file, and
    /// differs from uniform steps; bad grid options are one-line errors.
    #[test]
    fn sample_on_a_time_grid() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let file = scratch("my_shift.fm");
        std::fs::write(
            &file,
            "param mu = 3\nlet s = 1 - u\ngrid = 1 - mu * s / (1 + (mu - 1) * s)\n",
        )
        .expect("write");
        let run = |extra: &[&str], name: &str| {
            let out = scratch(name);
            let mut args = vec![
                "sample", "--model", &model, "-n", "20", "--solver", "euler", "--steps", "28", "-o",
            ];
            args.push(out.to_str().expect("utf-8"));
            args.extend_from_slice(extra);
            (fmrt(&args), out)
        };
        let read = |p: &PathBuf| read_npy::<_, ArrayD<f32>>(p).expect("a float32 .npy");
        let (o, builtin) = run(
            &["--grid", "shift", "--grid-param", "mu=3"],
            "g_builtin.npy",
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("28 steps on a grid"), "{}", stderr(&o));
        let (o, user) = run(&["--grid", file.to_str().expect("utf-8")], "g_user.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(read(&builtin), read(&user));
        let (o, uniform) = run(&[], "g_uniform.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_ne!(read(&builtin), read(&uniform));

        // edm follows the model's CondOT schedule: t_i = 1/(1 + σ_i).
        let (o, _) = run(
            &["--grid", "edm", "--grid-param", "rho=5", "--json"],
            "g_edm.npy",
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).contains("28 steps on a grid"), "{}", stdout(&o));
        let (o, _) = run(&["--grid", "edm", "--grid-param", "mu=1"], "g_bad.npy");
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("sigma_min"), "{}", stderr(&o));
        let (o, _) = run(&["--grid", "shfit"], "g_bad.npy");
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("did you mean `shift`"),
            "{}",
            stderr(&o)
        );
        let (o, _) = run(&["--grid-param", "mu=2"], "g_bad.npy");
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("--grid-param needs --grid"),
            "{}",
            stderr(&o)
        );
    }

    /// `--solver dpmpp2m --grid diffusers-flow --grid-param shift=3` needs no
    /// file and reproduces diffusers' own loop (the golden tensors of
    /// `tests/fixtures/make_diffusers_goldens.py`); bad settings are one-line
    /// errors naming them.
    #[test]
    fn sample_with_diffusers_flow_schedulers() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let noise = repo("tests/golden/diffusers/noise.npy");
        let run = |extra: &[&str], name: &str| {
            let out = scratch(name);
            let mut args = vec!["sample", "--model", &model, "--noise", &noise, "-o"];
            args.push(out.to_str().expect("utf-8"));
            args.extend_from_slice(extra);
            (fmrt(&args), out)
        };
        for solver in ["dpmpp2m", "unipc"] {
            let (o, out) = run(
                &[
                    "--solver",
                    solver,
                    "--grid",
                    "diffusers-flow",
                    "--grid-param",
                    "shift=3",
                    "--steps",
                    "20",
                ],
                &format!("diffusers_{solver}.npy"),
            );
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert!(stderr(&o).contains("20 steps on a grid"), "{}", stderr(&o));
            let got = read_npy::<_, ArrayD<f32>>(&out).expect("a float32 .npy");
            let want = read_npy::<_, ArrayD<f64>>(repo(&format!(
                "tests/golden/diffusers/{solver}_n20_shift3_final.npy"
            )))
            .expect("golden");
            let diff = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0.0, f64::max);
            let scale = 1.0 + want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(
                diff / scale <= 1e-5,
                "{solver}: relative difference {}",
                diff / scale
            );
        }
        let (o, _) = run(
            &[
                "--solver",
                "unipc",
                "--grid",
                "diffusers-flow",
                "--grid-param",
                "shift=0",
                "--steps",
                "10",
            ],
            "diffusers_bad.npy",
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("shift"), "{}", stderr(&o));
        let (o, _) = run(
            &["--solver", "dpmpp2m", "--rtol", "1e-3"],
            "diffusers_bad.npy",
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("--rtol"), "{}", stderr(&o));
    }

    /// `--sde 0` is the Euler ODE sampler; `--sde 1` adds noise; the SDE
    /// needs the Euler method.
    #[test]
    fn sde_sampling_on_the_command_line() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let run = |extra: &[&str], name: &str| {
            let out = scratch(name);
            let mut args = vec!["sample", "--model", &model, "-n", "30", "--quiet", "-o"];
            args.push(out.to_str().expect("utf-8"));
            args.extend_from_slice(extra);
            (fmrt(&args), out)
        };
        let read = |p: &PathBuf| read_npy::<_, ArrayD<f32>>(p).expect("a float32 .npy");
        let euler = ["--solver", "euler", "--steps", "50"];
        let (o, ode) = run(&euler, "sde_ode.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (o, zero) = run(&[&euler[..], &["--sde", "0"]].concat(), "sde_0.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(read(&ode), read(&zero));
        let (o, one) = run(&[&euler[..], &["--sde", "1"]].concat(), "sde_1.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let one = read(&one);
        assert_ne!(read(&ode), one);
        assert!(one.iter().all(|v| v.is_finite()));
        let (o, _) = run(&["--sde", "1"], "sde_bad.npy");
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("Euler–Maruyama"), "{}", stderr(&o));
    }

    /// `--log-prob` (dopri5) writes log p of the generated samples: within
    /// 2e-4 nats MAE of the exact mixture density and 1e-3 of `fmrt
    /// likelihood` on the same samples; the samples are the plain run's.
    #[test]
    fn log_prob_while_sampling() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let (out, logp, plain) = (
            scratch("lp_x.npy"),
            scratch("lp_logp.npy"),
            scratch("lp_plain.npy"),
        );
        let common = [
            "sample", "--model", &model, "-n", "200", "--seed", "4", "--rtol", "1e-7", "--atol",
            "1e-7", "--quiet",
        ];
        let o = fmrt(
            &[
                &common[..],
                &[
                    "-o",
                    out.to_str().unwrap(),
                    "--log-prob",
                    logp.to_str().unwrap(),
                ],
            ]
            .concat(),
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let o = fmrt(&[&common[..], &["-o", plain.to_str().unwrap()]].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let x: ArrayD<f32> = read_npy(&out).expect("samples");
        let lp: ArrayD<f64> = read_npy(&logp).expect("log p");
        let want: ArrayD<f32> = read_npy(&plain).expect("plain samples");
        let dx = (&x - &want).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(dx < 1e-4, "samples differ by {dx}");

        let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("built-in"));
        let exact = GaussianMixture::ring(8, 4.0, 0.3, ot).expect("mixture");
        let x2 = x.view().into_dimensionality::<Ix2>().expect("2-D");
        let want = exact.log_density(x2, &[1.0]).expect("log q");
        let mae = lp
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 200.0;
        assert!(mae < 2e-4, "MAE {mae}");

        let rev = scratch("lp_rev.npy");
        let o = fmrt(&[
            "likelihood",
            "--model",
            &model,
            "--data",
            out.to_str().unwrap(),
            "--rtol",
            "1e-7",
            "--atol",
            "1e-7",
            "--quiet",
            "-o",
            rev.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let rev: ArrayD<f64> = read_npy(&rev).expect("log p");
        let worst = lp
            .iter()
            .zip(&rev)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-3, "vs fmrt likelihood: {worst}");

        let o = fmrt(
            &[
                &common[..],
                &[
                    "-o",
                    out.to_str().unwrap(),
                    "--log-prob",
                    logp.to_str().unwrap(),
                    "--sde",
                    "1",
                ],
            ]
            .concat(),
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("--sde"), "{}", stderr(&o));
    }

    /// `--first-index I -n K` writes rows I..I+K of the unsharded run, and the
    /// README's `xargs -P 4` script concatenates 4 parallel shards to it.
    #[test]
    fn shards_concatenate_to_the_unsharded_run() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let run = |first: &str, n: &str, name: &str| {
            let out = scratch(name);
            let o = fmrt(&[
                "sample",
                "--model",
                &model,
                "--seed",
                "5",
                "--solver",
                "euler",
                "--steps",
                "8",
                "--first-index",
                first,
                "-n",
                n,
                "-o",
                out.to_str().expect("utf-8"),
                "--quiet",
            ]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            read_npy::<_, ArrayD<f32>>(&out).expect("a float32 .npy")
        };
        let whole = run("0", "13", "whole.npy");
        let a = run("0", "5", "shard_a.npy");
        let b = run("5", "8", "shard_b.npy");
        let joined: Vec<f32> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(joined, whole.iter().copied().collect::<Vec<_>>());

        let o = std::process::Command::new("bash")
            .arg(repo("scripts/sample-shards.sh"))
            .args([&model, "30", env!("CARGO_BIN_EXE_fmrt")])
            .output()
            .expect("bash runs");
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("4 shards of 30 samples"),
            "{}",
            stdout(&o)
        );
    }

    /// A run in chunks writes what one batch writes, bit for bit, with fixed
    /// steps, the default independent adaptive steps, trajectories and log p
    /// with Hutchinson probes (drawn per sample index); a CSV streams too.
    #[test]
    fn chunked_runs_write_what_one_batch_writes() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let run = |extra: &[&str], chunk: &str, name: &str| {
            let out = scratch(name);
            let log_p = scratch(&format!("lp_{name}"));
            let mut args = vec!["sample", "--model", &model, "-n", "300", "--seed", "3"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--chunk", chunk, "--quiet", "-o", out.to_str().unwrap()]);
            let with_log_p = extra.contains(&"--divergence");
            if with_log_p {
                args.extend_from_slice(&["--log-prob", log_p.to_str().unwrap()]);
            }
            let o = fmrt(&args);
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
            let bytes = std::fs::read(&out).expect("output");
            let log_p = with_log_p.then(|| std::fs::read(&log_p).expect("log p"));
            (bytes, log_p)
        };
        let cases: [(&[&str], &str); 5] = [
            (&["--solver", "euler", "--steps", "8"], "x.npy"),
            (&[], "x.npy"),
            (
                &["--solver", "rk4", "--steps", "6", "--times", "0.5,1"],
                "x.npy",
            ),
            (
                &[
                    "--solver",
                    "rk4",
                    "--steps",
                    "6",
                    "--divergence",
                    "hutchinson",
                    "--probes",
                    "2",
                ],
                "x.npy",
            ),
            (&["--solver", "euler", "--steps", "8"], "x.csv"),
        ];
        for (k, (extra, file)) in cases.iter().enumerate() {
            let whole = run(extra, "300", &format!("whole{k}_{file}"));
            let chunked = run(extra, "64", &format!("chunked{k}_{file}"));
            assert!(
                whole == chunked,
                "{extra:?} {file}: chunks differ from one batch"
            );
        }
    }

    /// `--guidance-interval 0,1` is plain guidance; a narrower one changes the
    /// samples; an interval without `--guidance` is a usage error.
    #[test]
    fn guidance_interval_on_the_command_line() {
        runtime();
        let model = repo("examples/models/conditional.onnx");
        let run = |extra: &[&str], name: &str| {
            let out = scratch(name);
            let mut args = vec![
                "sample", "--model", &model, "-n", "50", "--label", "1", "--solver", "euler",
                "--steps", "10", "--quiet", "-o",
            ];
            args.push(out.to_str().expect("utf-8"));
            args.extend_from_slice(extra);
            let o = fmrt(&args);
            (o, out)
        };
        let read = |p: &PathBuf| read_npy::<_, ArrayD<f32>>(p).expect("a float32 .npy");
        let (o, plain) = run(&["--guidance", "2"], "gi_plain.npy");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (o, full) = run(
            &["--guidance", "2", "--guidance-interval", "0,1"],
            "gi_full.npy",
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(read(&plain), read(&full));
        let (o, part) = run(
            &["--guidance", "2", "--guidance-interval", "0.5,1"],
            "gi_part.npy",
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_ne!(read(&plain), read(&part));
        let (o, _) = run(&["--guidance-interval", "0.2,0.8"], "gi_none.npy");
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("--guidance-interval needs --guidance"),
            "{}",
            stderr(&o)
        );
        let (o, _) = run(
            &["--guidance", "2", "--guidance-interval", "0.2"],
            "gi_bad.npy",
        );
        assert_ne!(o.status.code(), Some(0));
        assert!(stderr(&o).contains("A,B"), "{}", stderr(&o));
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

        // A label past the model's embedding table fails in ONNX Runtime's
        // Gather: its error reaches the user once, in fmrt's one message,
        // with none of ONNX Runtime's own log lines before it; --verbose
        // lets them through.
        let bad_label = |verbose: bool| {
            let mut args = vec![
                "sample",
                "--model",
                "examples/models/conditional.onnx",
                "-n",
                "4",
                "--label",
                "999",
                "--solver",
                "euler",
                "--steps",
                "2",
                "-o",
                "never_written.npy",
            ];
            if verbose {
                args.push("--verbose");
            }
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_fmrt"))
                .current_dir(repo(""))
                .args(&args)
                .output()
                .expect("the fmrt binary runs");
            (o.status.code(), stderr(&o))
        };
        let (code, quiet) = bad_label(false);
        assert_eq!(code, Some(4), "{quiet}");
        assert_eq!(quiet.trim_end().lines().count(), 1, "{quiet}");
        assert!(!quiet.contains('\u{1b}'), "colour codes in {quiet:?}");
        assert!(quiet.contains("999"), "{quiet}");
        let (_, verbose) = bad_label(true);
        assert!(verbose.contains("onnxruntime"), "{verbose}");
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
            "conditioning",
            "clock: forward, time × 1",
            "B: x, t, label",
            "fmrt.null_condition = 3",
            "provider: CPU",
            "likelihood stages: one call",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
    }

    /// `fmrt likelihood --std-error` writes the standard error of each
    /// Hutchinson estimate and `--json` summarises it; without probes to
    /// spread it is refused by name.
    #[test]
    fn likelihood_writes_the_standard_error_of_hutchinson_estimates() {
        runtime();
        let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("built-in"));
        let exact = GaussianMixture::ring(8, 4.0, 0.3, ot).expect("mixture");
        let data = exact.sample_data(32, 78);
        let path = scratch("se-data.npy");
        write_npy(&path, &data).expect("write data");
        let (out, se) = (scratch("se-logp.npy"), scratch("se.npy"));
        let repo_model = repo("tests/fixtures/gmm_ot.onnx");
        let run = |extra: &[&str]| {
            let mut argv = vec![
                "likelihood",
                "--model",
                &repo_model,
                "--data",
                path.to_str().expect("utf-8"),
                "-o",
                out.to_str().expect("utf-8"),
                "--std-error",
                se.to_str().expect("utf-8"),
                "--json",
            ];
            argv.extend_from_slice(extra);
            fmrt(&argv)
        };
        let o = run(&["--divergence", "hutchinson", "--probes", "4"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let summary: serde_json::Value =
            serde_json::from_str(&stdout(&o)).expect("one JSON object");
        let errors: ndarray::Array1<f64> = read_npy(&se).expect("a float64 .npy");
        assert_eq!(errors.len(), 32);
        assert!(errors.iter().all(|e| e.is_finite() && *e >= 0.0));
        let mean = errors.sum() / 32.0;
        let reported = summary["std_error"]["mean"].as_f64().expect("a mean");
        assert!((reported - mean).abs() <= 1e-12 * mean.abs().max(1.0));
        assert_eq!(summary["per_sample"]["status"]["done"], 32);
        for (extra, needle) in [
            (
                &["--divergence", "exact"][..],
                "exact divergence has no standard error",
            ),
            (
                &["--divergence", "hutchinson", "--probes", "1"][..],
                "one probe has no spread",
            ),
        ] {
            let o = run(extra);
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        }
    }

    /// Half-way between the fewest and the most accepted steps of a run's
    /// `--json` summary: a `--max-steps` that stops some samples, not all.
    fn midway_step_budget(json: &str) -> String {
        let summary: serde_json::Value = serde_json::from_str(json).expect("one JSON object");
        let accepted = &summary["per_sample"]["accepted_steps"];
        let (lo, hi) = (
            accepted["min"].as_u64().expect("min"),
            accepted["max"].as_u64().expect("max"),
        );
        assert!(lo < hi, "samples take different steps: {summary}");
        ((lo + hi) / 2).to_string()
    }

    /// The samples a partial run of `n` names as stopped by `max_steps`
    /// (some, not all).
    fn unfinished_samples(summary: &serde_json::Value, n: usize) -> Vec<usize> {
        let stopped: Vec<usize> = summary["per_sample"]["unfinished"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|u| {
                assert_eq!(u["status"], "max_steps");
                u["index"].as_u64().expect("an index") as usize
            })
            .collect();
        assert!(!stopped.is_empty() && stopped.len() < n, "{summary}");
        stopped
    }

    /// `--partial` with a small `--max-steps`: the samples that finish are
    /// written as the full run writes them, the others are named with their
    /// status, and the exit code is 4; fixed steps refuse it by name.
    #[test]
    fn partial_runs_write_the_finished_samples() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let (full, part) = (scratch("partial-full.npy"), scratch("partial.npy"));
        let sample = |out: &PathBuf, extra: &[&str]| {
            let mut argv = vec![
                "sample",
                "--model",
                &model,
                "-n",
                "48",
                "--seed",
                "5",
                "-o",
                out.to_str().expect("utf-8"),
                "--json",
            ];
            argv.extend_from_slice(extra);
            fmrt(&argv)
        };
        let o = sample(&full, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let budget = midway_step_budget(&stdout(&o));
        let o = sample(&part, &["--partial", "--max-steps", &budget]);
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("did not finish"), "{}", stderr(&o));
        let summary: serde_json::Value =
            serde_json::from_str(&stdout(&o)).expect("one JSON object");
        let stopped = unfinished_samples(&summary, 48);
        assert_eq!(
            summary["per_sample"]["status"]["done"].as_u64(),
            Some(48 - stopped.len() as u64)
        );
        let whole: ArrayD<f32> = read_npy(&full).expect("a float32 .npy");
        let partial: ArrayD<f32> = read_npy(&part).expect("a float32 .npy");
        let (whole, partial) = (
            whole.into_dimensionality::<Ix2>().expect("2-D"),
            partial.into_dimensionality::<Ix2>().expect("2-D"),
        );
        for i in (0..48).filter(|i| !stopped.contains(i)) {
            assert_eq!(whole.row(i), partial.row(i), "sample {i}");
        }
        // Without --partial the run fails (exit 4) naming max_steps.
        let o = sample(&part, &["--max-steps", &budget]);
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        // Likelihoods too: the finished samples' log p as the full run's,
        // NaN for the others, exit code 4.
        let (logp_full, logp_part) = (scratch("partial-lp-full.npy"), scratch("partial-lp.npy"));
        let likelihood = |out: &PathBuf, extra: &[&str]| {
            let mut argv = vec![
                "likelihood",
                "--model",
                &model,
                "--data",
                full.to_str().expect("utf-8"),
                "-o",
                out.to_str().expect("utf-8"),
                "--json",
            ];
            argv.extend_from_slice(extra);
            fmrt(&argv)
        };
        let o = likelihood(&logp_full, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let budget = midway_step_budget(&stdout(&o));
        let o = likelihood(&logp_part, &["--partial", "--max-steps", &budget]);
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        let summary: serde_json::Value =
            serde_json::from_str(&stdout(&o)).expect("one JSON object");
        let stopped = unfinished_samples(&summary, 48);
        let want: ndarray::Array1<f64> = read_npy(&logp_full).expect("a float64 .npy");
        let got: ndarray::Array1<f64> = read_npy(&logp_part).expect("a float64 .npy");
        for (i, (got, want)) in got.iter().zip(&want).enumerate() {
            if stopped.contains(&i) {
                assert!(got.is_nan(), "sample {i}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "sample {i}");
            }
        }
        // Fixed steps and shared norms cannot stop a sample alone: refused.
        for extra in [&["--solver", "euler"][..], &["--error-norm", "batch"]] {
            let mut argv = extra.to_vec();
            argv.push("--partial");
            let o = sample(&part, &argv);
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            let message = stderr(&o);
            assert!(
                message.contains("--partial") && message.contains("partial results need"),
                "{message}"
            );
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

        // A grid places a likelihood's fixed steps too, walked backwards over
        // the same times: the library's likelihood on that grid.
        let on_grid = scratch("logp_grid.npy");
        let o = fmrt(&[
            "likelihood",
            "--model",
            &repo("tests/fixtures/gmm_ot.onnx"),
            "--data",
            path.to_str().expect("utf-8"),
            "--solver",
            "rk4",
            "--grid",
            "cosine",
            "--steps",
            "40",
            "--quiet",
            "-o",
            on_grid.to_str().expect("utf-8"),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let got: ndarray::Array1<f64> = read_npy(&on_grid).expect("a float64 .npy");
        let steps = fmrt::grid::TimeGrid::open("cosine", &[])
            .expect("built-in grid")
            .steps(40)
            .expect("steps");
        let field = Arc::new(
            fmrt::field::onnx::OnnxField::load_file(repo("tests/fixtures/gmm_ot.onnx"))
                .expect("model"),
        );
        let want = fmrt::likelihood::Likelihood::new(
            field,
            fmrt::solver::SolverConfig::fixed(fmrt::solver::Method::Rk4, steps),
        )
        .log_likelihood(data.view().into_dyn())
        .expect("likelihood")
        .log_p;
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    /// `fmrt likelihood` evaluates each stage of an ONNX model in one stacked
    /// call (velocity and J·v together), through the CLI's progress wrapper
    /// and the x1 conversion alike, and the log-densities stay exact.
    #[test]
    fn likelihood_stages_are_one_stacked_call() {
        runtime();
        let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("built-in"));
        let exact = GaussianMixture::ring(8, 4.0, 0.3, ot).expect("mixture");
        let data = exact.sample_data(64, 78);
        let want = exact.log_density(data.view(), &[1.0]).expect("log density");
        let path = scratch("stacked_data.npy");
        write_npy(&path, &data).expect("write data");
        let out = scratch("stacked_logp.npy");
        for model in ["gmm_ot.onnx", "gmm_ot_x1.onnx"] {
            for divergence in ["exact", "hutchinson"] {
                let o = fmrt(&[
                    "likelihood",
                    "--model",
                    &repo(&format!("tests/fixtures/{model}")),
                    "--data",
                    path.to_str().expect("utf-8"),
                    "--divergence",
                    divergence,
                    "--solver",
                    "midpoint",
                    "--steps",
                    "50",
                    "-o",
                    out.to_str().expect("utf-8"),
                    "--json",
                ]);
                assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                let summary: serde_json::Value =
                    serde_json::from_str(&stdout(&o)).expect("one JSON object");
                let calls = &summary["model_calls"];
                assert_eq!(
                    calls["stacked"], summary["nfe"],
                    "{model} {divergence}: {summary}"
                );
                assert_eq!(calls["velocity"], 0, "{model} {divergence}: {summary}");
                assert_eq!(calls["jvp"], 0, "{model} {divergence}: {summary}");
                let log_p: ndarray::Array1<f64> = read_npy(&out).expect("a float64 .npy");
                let errors: Vec<f64> = log_p.iter().zip(&want).map(|(a, b)| a - b).collect();
                if divergence == "exact" {
                    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / 64.0;
                    assert!(mae < 5e-3, "{model}: mean absolute error {mae}");
                } else {
                    // Hutchinson's estimate is unbiased but noisy per sample
                    // (about 1 nat here): its mean error is near 0.
                    let bias = errors.iter().sum::<f64>() / 64.0;
                    assert!(bias.abs() < 0.4, "{model} hutchinson: mean error {bias}");
                }
            }
        }
    }

    /// A model with an operator the tangent transform cannot differentiate:
    /// `inspect` names it and its node, exact likelihoods fail naming it, and
    /// sampling still works.
    #[test]
    fn an_unsupported_operator_is_named() {
        runtime();
        let model = repo("tests/fixtures/unsupported_op.onnx");
        let o = fmrt(&["inspect", &model]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains("derivatives: unavailable"), "{text}");
        assert!(
            text.contains("`Hardmax`") && text.contains("`my_hardmax`"),
            "{text}"
        );

        let data = scratch("unsupported_data.npy");
        write_npy(&data, &ArrayD::<f32>::zeros(vec![3, 2])).expect("write");
        let out = scratch("unsupported_logp.npy");
        let o = fmrt(&[
            "likelihood",
            "--model",
            &model,
            "--data",
            data.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("Hardmax"), "{}", stderr(&o));

        let samples = scratch("unsupported_samples.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &model,
            "-n",
            "3",
            "-o",
            samples.to_str().expect("utf-8"),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }

    #[test]
    fn bad_inputs_give_one_line_errors() {
        runtime();
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let out = scratch("never.npy");
        let out = out.to_str().expect("utf-8");
        let int_noise = scratch("i64.npy");
        write_npy(&int_noise, &ArrayD::<i64>::zeros(vec![4, 2])).expect("write");
        let wrong_shape = scratch("wrong_shape.npy");
        write_npy(&wrong_shape, &ArrayD::<f32>::zeros(vec![4, 3])).expect("write");
        let time_b = repo("tests/fixtures/time_b.onnx");
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
                    int_noise.to_str().expect("utf-8"),
                    "-o",
                    out,
                ],
                "expected float32 or float64",
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
                "holds an array of shape [4, 3], expected [N, 2]",
            ),
            (
                vec![
                    "sample", "--model", &model, "--solver", "rk4", "--steps", "-3", "-o", out,
                ],
                "--steps must be at least 1",
            ),
            (
                vec![
                    "sample",
                    "--model",
                    &model,
                    "--noise",
                    "no/such/noise.csv",
                    "-o",
                    out,
                ],
                "no/such/noise.csv: cannot open",
            ),
            (
                vec!["sample", "--model", &model, "-o", "samples.txt"],
                "use a file name ending in .npy or .csv",
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
            // Settings of adaptive steps on a fixed-step run are refused by
            // name, not ignored.
            (
                vec![
                    "sample", "--model", &model, "--steps", "10", "--rtol", "1e-3", "-o", out,
                ],
                "--rtol sets the step-size control of adaptive methods",
            ),
            (
                vec![
                    "sample",
                    "--model",
                    &model,
                    "--solver",
                    "euler",
                    "--error-norm",
                    "batch",
                    "-o",
                    out,
                ],
                "--error-norm sets the step-size control",
            ),
            (
                vec![
                    "sample",
                    "--model",
                    &model,
                    "--error-norm",
                    "rms",
                    "-o",
                    out,
                ],
                "unknown error norm `rms`",
            ),
            // Two outputs naming one file would overwrite one with the other.
            (
                vec!["sample", "--model", &model, "--log-prob", out, "-o", out],
                "-o and --log-prob both name",
            ),
            // --param without --scheduler overrides the model's own scheduler:
            // time_b.onnx has none to override.
            (
                vec![
                    "sample",
                    "--model",
                    &time_b,
                    "--param",
                    "sigma_min=0.001",
                    "-o",
                    out,
                ],
                "scheduler_params",
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

    /// A model whose weights are in an external-data file samples bit for bit
    /// like its inline twin, and its exact log-likelihoods agree to 1e-5.
    #[test]
    fn an_external_data_model_samples_and_scores_like_the_inline_one() {
        runtime();
        let dir = scratch("external");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let inline = repo("tests/fixtures/mlp256.onnx");
        let (external, _) =
            save_with_external_data(Path::new(&inline), &dir, "mlp256_external.onnx");
        let external = external.display().to_string();
        let run = |model: &str, name: &str| {
            let samples = dir.join(format!("{name}.npy"));
            let samples = samples.to_str().expect("utf-8").to_string();
            let o = fmrt(&[
                "sample", "--model", model, "-n", "32", "--seed", "7", "--solver", "midpoint",
                "--steps", "20", "-o", &samples, "--quiet",
            ]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            let log_p = dir.join(format!("{name}_logp.npy"));
            let o = fmrt(&[
                "likelihood",
                "--model",
                model,
                "--data",
                &samples,
                "--solver",
                "midpoint",
                "--steps",
                "20",
                "--divergence",
                "exact",
                "-o",
                log_p.to_str().expect("utf-8"),
                "--quiet",
            ]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            let x: ArrayD<f32> = read_npy(&samples).expect("samples");
            let log_p: ndarray::Array1<f64> = read_npy(&log_p).expect("log p");
            (x, log_p)
        };
        let (x_inline, lp_inline) = run(&inline, "inline");
        let (x_external, lp_external) = run(&external, "external");
        assert_eq!(x_inline, x_external, "samples differ");
        for (a, b) in lp_inline.iter().zip(&lp_external) {
            assert!(
                (a - b).abs() <= 1e-5,
                "log p {a} (inline) vs {b} (external)"
            );
        }
        // --share-weights: one copy of the weights, the same samples up to
        // the rounding of unpacked matrix products.
        let shared = dir.join("shared.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &external,
            "--share-weights",
            "-n",
            "32",
            "--seed",
            "7",
            "--solver",
            "midpoint",
            "--steps",
            "20",
            "-o",
            shared.to_str().expect("utf-8"),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let x_shared: ArrayD<f32> = read_npy(&shared).expect("samples");
        let diff = (&x_shared - &x_inline)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &v| m.max(v));
        assert!(diff <= 1e-6, "--share-weights samples differ by {diff}");
    }

    /// The inputs of issue 12 that used to crash fmrt (a panic, a stack
    /// overflow, an abort on allocation) fail with exit code 1 and an error
    /// naming the input. Scheduler errors are rendered diagnostics (a line
    /// with file:line:column, then the source line and a caret); the others
    /// are one line. The `.npy` header case is the test above.
    #[test]
    fn the_inputs_that_crashed_fmrt_fail_with_exit_code_1() {
        runtime();
        let out = scratch("hostile-out.npy");
        let out = out.to_str().expect("utf-8");
        let fm = |name: &str, source: &str| {
            let path = scratch(name);
            std::fs::write(&path, source).expect("write");
            path
        };
        let schedulers = [
            (
                fm("crlf.fm", "alpha = t +\r\nsigma = 1 - t\r\n"),
                "crlf.fm:1:",
            ),
            (
                fm(
                    "sum.fm",
                    &format!("alpha = {}\nsigma = 1 - t\n", vec!["t"; 200_000].join("+")),
                ),
                "256 levels",
            ),
            (
                fm(
                    "product.fm",
                    &format!("alpha = {}\nsigma = 1 - t\n", vec!["t"; 200_000].join("*")),
                ),
                "256 levels",
            ),
            (
                fm(
                    "let.fm",
                    &format!(
                        "let a = {}\nalpha = {}\nsigma = 1 - t\n",
                        vec!["t"; 4000].join("+"),
                        vec!["a"; 20_000].join("+")
                    ),
                ),
                "let.fm:1:",
            ),
        ];
        let model = repo("tests/fixtures/gmm_ot.onnx");
        for (path, needle) in &schedulers {
            for args in [
                vec!["check", path.to_str().expect("utf-8")],
                vec![
                    "sample",
                    "--model",
                    &model,
                    "--scheduler",
                    path.to_str().expect("utf-8"),
                    "-o",
                    out,
                ],
            ] {
                let o = fmrt(&args);
                let err = format!("{}{}", stdout(&o), stderr(&o));
                assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
                assert!(err.contains("error"), "{args:?}: {err}");
                assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
                assert!(!err.contains("panicked"), "{args:?}: {err}");
            }
        }
        // A declared state too large to hold (tests/fixtures/huge_state.onnx),
        // and a sample count whose state buffer overflows.
        let huge = repo("tests/fixtures/huge_state.onnx");
        let o = fmrt(&["sample", "--model", &huge, "-n", "1", "-o", out]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("huge_state.onnx") && err.contains("`x`") && err.contains("268435456"),
            "{err}"
        );
        let o = fmrt(&[
            "sample",
            "--model",
            &model,
            "-n",
            "18446744073709551615",
            "-o",
            out,
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!Path::new(out).exists(), "a failed run left an output file");
    }
}

/// Every subcommand's `--help` shows at least one example command line.
#[test]
fn every_help_has_an_example() {
    let top = fmrt(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    let text = stdout(&top);
    assert!(text.contains("Examples:"), "{text}");
    let commands: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 7, "{commands:?}");
    for command in &commands {
        let out = fmrt(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{command}");
        let help = stdout(&out);
        assert!(
            help.contains("Example") && help.contains(&format!("fmrt {command}")),
            "`fmrt {command} --help` has no example:\n{help}"
        );
    }
}

mod plots {
    //! `fmrt plot` on arrays written here and on schedulers; no ONNX Runtime needed.

    use std::path::{Path, PathBuf};

    use ndarray::ArrayD;
    use ndarray_npy::write_npy;

    use super::{fmrt, stderr};

    pub(super) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fmrt-cli-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    fn s(path: &Path) -> &str {
        path.to_str().expect("utf-8 path")
    }

    /// Decodes a PNG: (width, height, pixels that are not white, distinct colours).
    pub(super) fn decode(path: &Path) -> (u32, u32, usize, usize) {
        let file = std::fs::File::open(path).expect("the PNG exists");
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .expect("a PNG header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("a PNG frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
        let inked = pixels.iter().filter(|p| **p != [255, 255, 255]).count();
        let mut colours: Vec<&[u8]> = pixels.clone();
        colours.sort_unstable();
        colours.dedup();
        (info.width, info.height, inked, colours.len())
    }

    /// A ring of points, [n, d].
    fn ring(n: usize, d: usize) -> ArrayD<f32> {
        ArrayD::from_shape_fn(vec![n, d], |ix| {
            let a = ix[0] as f32 / n as f32 * std::f32::consts::TAU;
            match ix[1] {
                0 => a.cos(),
                1 => a.sin(),
                _ => 7.0,
            }
        })
    }

    /// A `.npy` (version 1) whose header claims `shape` of `descr` over `data`.
    fn npy_claiming(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn a_npy_claiming_more_data_than_it_holds_is_refused_before_reading() {
        // 10^9 rows over 64 bytes used to allocate 8 GB and abort.
        let png = scratch("hostile.png");
        for (descr, shape, what) in [
            (
                "<f4",
                "(1000000000, 2)",
                "[1000000000, 2] (8000000000 bytes of data)",
            ),
            (
                "<f8",
                "(1000000000, 2)",
                "[1000000000, 2] (16000000000 bytes of data)",
            ),
            ("<f4", "(4294967296, 4294967296, 4)", "whose size overflows"),
            ("<f4", "(9, 2)", "[9, 2] (72 bytes of data)"),
        ] {
            let npy = scratch("hostile.npy");
            let bytes = npy_claiming(descr, shape, &[0u8; 64]);
            std::fs::write(&npy, &bytes).expect("write");
            let o = fmrt(&["plot", s(&npy), "-o", s(&png)]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{shape}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains("hostile.npy"), "{err}");
            assert!(err.contains(what), "{shape}: {err}");
            assert!(
                err.contains(&format!("the file is {} bytes", bytes.len())),
                "{err}"
            );
        }
        // The header check lets honest files through: 8 rows of 2 float32.
        let npy = scratch("honest.npy");
        std::fs::write(&npy, npy_claiming("<f4", "(8, 2)", &[0u8; 64])).expect("write");
        let o = fmrt(&["plot", s(&npy), "-o", s(&png)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }

    /// Found by the `npy_csv` fuzz target: a version-3 header claiming a
    /// 3.7 GB header made the reader allocate it before reading (an abort
    /// under a memory limit). A header is trusted only when it fits in the
    /// file and holds one `descr` and one `shape` (a second `shape` could
    /// differ from the one checked).
    #[test]
    fn a_npy_header_longer_than_its_file_or_ambiguous_is_refused() {
        let png = scratch("header.png");
        let mut long_header = b"\x93NUMPY\x03\x00\xdd\xdd\xdd\xdd".to_vec();
        long_header.extend_from_slice(b"{'descr': '<f4', 'shape': (2,), }\n");
        let two_shapes = npy_claiming("<f4", "(1,), 'shape': (1000000000, 2)", &[0u8; 64]);
        let no_shape = b"\x93NUMPY\x01\x00\x14\x00{'descr': '<f4', }  \n".to_vec();
        for (name, bytes, what) in [
            (
                "long_header.npy",
                long_header,
                "the .npy header claims to be 3722304989 bytes long, but the file is 46 bytes",
            ),
            ("two_shapes.npy", two_shapes, "one readable `shape`"),
            ("no_shape.npy", no_shape, "one readable `shape`"),
        ] {
            let npy = scratch(name);
            std::fs::write(&npy, &bytes).expect("write");
            let o = fmrt(&["plot", s(&npy), "-o", s(&png)]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{name}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains(name) && err.contains(what), "{name}: {err}");
        }
    }

    #[test]
    fn scatter_density_and_csv_input() {
        let npy = scratch("ring.npy");
        write_npy(&npy, &ring(500, 2)).expect("write");
        let png = scratch("ring.png");
        let o = fmrt(&["plot", s(&npy), "-o", s(&png), "--title", "a ring"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (w, h, inked, colours) = decode(&png);
        assert_eq!((w, h), (800, 800));
        assert!(inked > 5_000, "{inked} non-white pixels");
        assert!(colours > 10, "{colours} colours");

        let csv = scratch("ring.csv");
        let mut text = String::from("x,y\n");
        for i in 0..400 {
            let a = i as f32 / 400.0 * std::f32::consts::TAU;
            text.push_str(&format!("{},{}\n", a.cos(), a.sin()));
        }
        std::fs::write(&csv, text).expect("write");
        let density = scratch("density.png");
        let o = fmrt(&[
            "plot",
            s(&csv),
            "-o",
            s(&density),
            "--kind",
            "density",
            "--size",
            "400",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (w, h, inked, _) = decode(&density);
        assert_eq!((w, h), (400, 400));
        assert!(inked > 2_000, "{inked} non-white pixels");
    }

    #[test]
    fn trajectories_and_projection_note() {
        let traj = ArrayD::from_shape_fn(vec![3, 50, 2], |ix| {
            (ix[0] as f32 + 1.0) * ((ix[1] as f32) * 0.1 + ix[2] as f32).sin()
        });
        let npy = scratch("traj.npy");
        write_npy(&npy, &traj).expect("write");
        let png = scratch("traj.png");
        let o = fmrt(&["plot", s(&npy), "-o", s(&png)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (w, _, inked, _) = decode(&png);
        assert_eq!(w, 800);
        assert!(inked > 5_000, "{inked} non-white pixels");

        let wide = scratch("wide.npy");
        write_npy(&wide, &ring(100, 5)).expect("write");
        let png = scratch("wide.png");
        let o = fmrt(&["plot", s(&wide), "-o", s(&png)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("5 dimensions per sample; plotting the first two axes"),
            "{}",
            stderr(&o)
        );
        assert!(png.exists());
    }

    #[test]
    fn scheduler_plot_clips_singularities() {
        let png = scratch("vp.png");
        let o = fmrt(&["plot", "--scheduler", "vp", "-o", s(&png)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (w, h, inked, colours) = decode(&png);
        assert_eq!((w, h), (800, 800));
        assert!(inked > 5_000, "{inked} non-white pixels");
        assert!(colours > 4, "{colours} colours: four curves expected");
        let png = scratch("poly.png");
        let o = fmrt(&[
            "plot",
            "--scheduler",
            "poly",
            "--param",
            "n=2",
            "-o",
            s(&png),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(png.exists());
    }

    #[test]
    fn grid_plot_draws_the_curve_and_its_points() {
        let png = scratch("shift.png");
        let o = fmrt(&[
            "plot",
            "--grid",
            "shift",
            "--param",
            "mu=3",
            "--steps",
            "10",
            "-o",
            s(&png),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (w, h, inked, colours) = decode(&png);
        assert_eq!((w, h), (800, 800));
        assert!(inked > 3_000, "{inked} non-white pixels");
        assert!(
            colours > 3,
            "{colours} colours: curve, diagonal and points expected"
        );
        let o = fmrt(&["plot", "--grid", "shift", "--param", "mu=-1", "-o", s(&png)]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("shift.fm:"), "{}", stderr(&o));
        let o = fmrt(&[
            "plot",
            "--grid",
            "shift",
            "--scheduler",
            "ot",
            "-o",
            s(&png),
        ]);
        assert_ne!(o.status.code(), Some(0));
    }

    #[test]
    fn bad_plot_inputs_give_one_line_errors() {
        let one_d = scratch("one_d.npy");
        write_npy(&one_d, &ArrayD::<f32>::zeros(vec![10])).expect("write");
        let ints = scratch("ints.npy");
        write_npy(&ints, &ArrayD::<i32>::zeros(vec![10, 2])).expect("write");
        let broken = scratch("broken.fm");
        std::fs::write(&broken, "alpha = sine(t)\nsigma = 1 - t\n").expect("write");
        let bad_csv = scratch("bad.csv");
        std::fs::write(&bad_csv, "1,2\n3,oops\n").expect("write");
        let ragged = scratch("ragged.csv");
        std::fs::write(&ragged, "1,2\n3,4,5\n").expect("write");
        let out = scratch("never.png");
        let o = s(&out);
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["plot", "no/such.npy", "-o", o],
                "no/such.npy: cannot open",
            ),
            (
                vec!["plot", s(&one_d), "-o", o],
                "holds an array of shape [10], expected [N, D] samples",
            ),
            (
                vec!["plot", s(&ints), "-o", o],
                "expected float32 or float64",
            ),
            (
                vec!["plot", s(&bad_csv), "-o", o],
                "bad.csv:2: `oops` is not a number",
            ),
            (
                vec!["plot", s(&ragged), "-o", o],
                "ragged.csv:2: holds 3 values, expected 2",
            ),
            (
                vec!["plot", s(&one_d), "-o", o, "--kind", "trajectory"],
                "expected [T, N, D] trajectories",
            ),
            (vec!["plot", "--scheduler", "cosin", "-o", o], "cosine"),
            (vec!["plot", "--scheduler", s(&broken), "-o", o], "sin"),
            (
                vec!["plot", "--scheduler", "ot", "-o", "ot.jpg"],
                "use a file name ending in .png",
            ),
        ];
        for (args, needle) in cases {
            let out = fmrt(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(needle),
                "{args:?}: `{needle}` not in {}",
                stderr(&out)
            );
        }
        assert!(!out.exists(), "a failed run left an image");
    }
}

mod data_and_demo {
    //! `.csv`/float64 input and output, `sample --json`, and `fmrt demo`.

    use std::path::Path;

    use fmrt::field::onnx::ensure_runtime_for_development;
    use ndarray::ArrayD;
    use ndarray_npy::{read_npy, write_npy};

    use super::plots::{decode, scratch};
    use super::{fmrt, stderr, stdout};

    fn repo(path: &str) -> String {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join(path)
            .display()
            .to_string()
    }

    fn s(path: &Path) -> &str {
        path.to_str().expect("utf-8 path")
    }

    /// The same noise as float32 .npy, float64 .npy and .csv gives the same
    /// samples, written as .npy and as .csv.
    #[test]
    fn csv_and_float64_noise_match_float32() {
        ensure_runtime_for_development(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.."
        )))
        .expect("ONNX Runtime is available");
        let x0 = ArrayD::from_shape_fn(vec![12, 2], |ix| {
            (ix[0] as f32 * 0.37 + ix[1] as f32 * 1.1).sin() * 1.5
        });
        let f32_path = scratch("noise32.npy");
        write_npy(&f32_path, &x0).expect("write");
        let f64_path = scratch("noise64.npy");
        write_npy(&f64_path, &x0.mapv(f64::from)).expect("write");
        let csv_path = scratch("noise.csv");
        let mut text = String::from("# starting points\n");
        for row in x0.rows() {
            text.push_str(&format!("{},{}\n", row[0], row[1]));
        }
        std::fs::write(&csv_path, text).expect("write");
        let model = repo("tests/fixtures/gmm_ot.onnx");
        let run = |noise: &Path, out: &Path| {
            let o = fmrt(&[
                "sample",
                "--model",
                &model,
                "--noise",
                s(noise),
                "--solver",
                "rk4",
                "--steps",
                "10",
                "-o",
                s(out),
                "--quiet",
            ]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        };
        let want_path = scratch("from32.npy");
        run(&f32_path, &want_path);
        let want: ArrayD<f32> = read_npy(&want_path).expect("read");
        assert_eq!(want.shape(), &[12, 2]);
        let from64 = scratch("from64.npy");
        run(&f64_path, &from64);
        let got: ArrayD<f32> = read_npy(&from64).expect("read");
        assert_eq!(got, want);
        let from_csv = scratch("from_csv.csv");
        run(&csv_path, &from_csv);
        let text = std::fs::read_to_string(&from_csv).expect("read");
        let rows: Vec<Vec<f32>> = text
            .lines()
            .map(|l| l.split(',').map(|v| v.parse().expect("a number")).collect())
            .collect();
        assert_eq!(rows.len(), 12);
        for (row, want) in rows.iter().zip(want.rows()) {
            assert_eq!(row.as_slice(), want.as_slice().expect("contiguous"));
        }

        // float64 data in, float64 log p out as CSV: one value per row.
        let logp = scratch("logp.csv");
        let o = fmrt(&[
            "likelihood",
            "--model",
            &model,
            "--data",
            s(&f64_path),
            "--divergence",
            "finite-difference",
            "-o",
            s(&logp),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let values: Vec<f64> = std::fs::read_to_string(&logp)
            .expect("read")
            .lines()
            .map(|l| l.parse().expect("one number per row"))
            .collect();
        assert_eq!(values.len(), 12);
        assert!(
            values.iter().all(|v| v.is_finite() && *v < 10.0),
            "{values:?}"
        );
    }

    /// CSV rows of flattened states are reshaped to the model's state shape,
    /// and the image-shaped samples plot as a projection with a note.
    #[test]
    fn csv_rows_fill_image_states_and_plot_projected() {
        ensure_runtime_for_development(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.."
        )))
        .expect("ONNX Runtime is available");
        let csv = scratch("img.csv");
        let mut text = String::new();
        for i in 0..5 {
            let row: Vec<String> = (0..64)
                .map(|j| format!("{}", ((i * 64 + j) as f32 * 0.37).sin()))
                .collect();
            text.push_str(&row.join(","));
            text.push('\n');
        }
        std::fs::write(&csv, text).expect("write");
        let out = scratch("img.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &repo("tests/fixtures/image_state.onnx"),
            "--noise",
            s(&csv),
            "--solver",
            "euler",
            "--steps",
            "4",
            "-o",
            s(&out),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let x: ArrayD<f32> = read_npy(&out).expect("float32 .npy");
        assert_eq!(x.shape(), &[5, 1, 8, 8]);
        let png = scratch("img.png");
        let o = fmrt(&["plot", s(&out), "-o", s(&png)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("64 dimensions per sample"),
            "{}",
            stderr(&o)
        );
        assert_eq!(decode(&png).0, 800);
    }

    #[test]
    fn sample_json_summary() {
        ensure_runtime_for_development(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.."
        )))
        .expect("ONNX Runtime is available");
        let out = scratch("json.npy");
        let o = fmrt(&[
            "sample",
            "--model",
            &repo("tests/fixtures/gmm_ot.onnx"),
            "-n",
            "8",
            "--solver",
            "euler",
            "--steps",
            "5",
            "-o",
            s(&out),
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let summary: serde_json::Value =
            serde_json::from_str(&stdout(&o)).expect("one JSON object");
        assert_eq!(summary["nfe"], 5);
        assert_eq!(summary["samples"], 8);
        assert_eq!(summary["shape"], serde_json::json!([8, 2]));
        for key in ["output", "model", "provider", "solver", "seconds"] {
            assert!(summary.get(key).is_some(), "missing {key} in {summary}");
        }
        assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    }

    #[test]
    fn demo_writes_samples_and_a_plot() {
        ensure_runtime_for_development(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.."
        )))
        .expect("ONNX Runtime is available");
        let dir = scratch("demo-run");
        std::fs::create_dir_all(&dir).expect("dir");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_fmrt"))
            .args(["demo", "-n", "300", "--quiet"])
            .current_dir(&dir)
            .output()
            .expect("fmrt runs");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains("demo/samples.npy"), "{text}");
        assert!(text.contains("demo/samples.png"), "{text}");
        let x: ArrayD<f32> = read_npy(dir.join("demo/samples.npy")).expect("float32 .npy");
        assert_eq!(x.shape(), &[300, 2]);
        // Two moons live in roughly [-2, 2]²; noise left unmoved would not all be.
        assert!(x.iter().all(|v| v.is_finite() && v.abs() < 3.0));
        let (w, h, inked, _) = decode(&dir.join("demo/samples.png"));
        assert_eq!((w, h), (800, 800));
        assert!(inked > 5_000, "{inked} non-white pixels");
    }
}

/// The model flags of one real-model case, as a user of that project gives
/// them (README, "Models from other projects"): the model, its inputs and
/// clock, the noise scale, guidance with its null condition, and the case's
/// conditioning.
fn recipe_flags(
    spec: &serde_json::Value,
    case: &serde_json::Value,
    dir: &std::path::Path,
) -> Vec<String> {
    let f = &spec["fmrt"];
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args: Vec<String> = vec![
        "--model".into(),
        path(spec["model"].as_str().unwrap()),
        "--state-input".into(),
        f["state_input"].as_str().unwrap().into(),
        "--time-input".into(),
        f["time_input"].as_str().unwrap().into(),
        "--time-direction".into(),
        f["time_direction"].as_str().unwrap().into(),
        "--time-scale".into(),
        f["time_scale"].to_string(),
        "--noise-scale".into(),
        f["noise_scale"].to_string(),
    ];
    if let Some(w) = f["guidance"].as_f64() {
        args.extend(["--guidance".into(), w.to_string()]);
    }
    for (name, value) in case["cond"].as_object().unwrap() {
        let value = match value {
            serde_json::Value::String(file) => path(file),
            number => number.to_string(),
        };
        args.extend(["--cond".into(), format!("{name}={value}")]);
    }
    for (name, value) in f["null_condition"].as_object().unwrap() {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) if o.contains_key("fill") => format!("fill:{}", o["fill"]),
            serde_json::Value::Object(o) => path(o["tensor"].as_str().unwrap()),
            other => panic!("{other}"),
        };
        args.extend(["--null-cond".into(), format!("{name}={value}")]);
    }
    args
}

/// The `sample` command line of one real-model case: its recipe's flags,
/// Euler on the case's grid, from the case's noise.
fn real_model_args(
    spec: &serde_json::Value,
    case: &serde_json::Value,
    dir: &std::path::Path,
    out: &std::path::Path,
    grid: &std::path::Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["sample".into()];
    args.extend(recipe_flags(spec, case, dir));
    args.extend([
        "--solver".into(),
        "euler".into(),
        "--grid".into(),
        grid.display().to_string(),
        "--noise".into(),
        dir.join(case["noise"].as_str().unwrap())
            .display()
            .to_string(),
        "-o".into(),
        out.display().to_string(),
        "-q".into(),
    ]);
    args
}

#[test]
fn models_from_other_projects_sample_from_the_command_line_as_their_loops_do() {
    use ndarray_npy::read_npy;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real");
    let tmp = std::env::temp_dir().join(format!("fmrt-cli-real-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for name in [
        "cosyvoice_b2",
        "cosyvoice_dyn",
        "matcha",
        "f5",
        "sd3",
        "flux",
        "zipvoice",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.cases.json"))).unwrap();
        let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
        for case in spec["cases"].as_array().unwrap() {
            let label = case["label"].as_str().unwrap();
            let grid = tmp.join(format!("{name}.{label}.grid.csv"));
            let times: Vec<String> = case["grid"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| format!("{:.17e}", v.as_f64().unwrap()))
                .collect();
            std::fs::write(&grid, times.join("\n")).unwrap();
            let out = tmp.join(format!("{name}.{label}.npy"));
            let args = real_model_args(&spec, case, &dir, &out, &grid);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = fmrt(&refs);
            assert_eq!(
                run.status.code(),
                Some(0),
                "{name} {label}: {}",
                stderr(&run)
            );
            let got: ndarray::ArrayD<f32> = read_npy(&out).unwrap();
            let want: ndarray::ArrayD<f32> =
                read_npy(dir.join(case["expected"].as_str().unwrap())).unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(got.shape(), want.shape());
            assert!(
                diff / (1.0 + scale) <= 1e-4,
                "{name} {label}: off by {diff}"
            );
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn bad_conditioning_on_the_command_line_exits_1_with_the_input_named() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real");
    let tmp = std::env::temp_dir().join(format!("fmrt-cli-badcond-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let p = |f: &str| dir.join(f).display().to_string();
    let out = tmp.join("out.npy").display().to_string();
    let base = |model: &str, noise: &str| -> Vec<String> {
        [
            "sample",
            "--model",
            &p(model),
            "--solver",
            "euler",
            "--steps",
            "2",
            "--noise",
            &p(noise),
            "-o",
            &out,
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        // seq_len of mu disagrees with the state's.
        (
            [
                base("cosyvoice_dyn.onnx", "cosyvoice_dyn.T37.noise.npy"),
                vec![
                    "--cond".into(),
                    format!("mu={}", p("cosyvoice_dyn.bad_mu_T36.npy")),
                    "--cond".into(),
                    format!("mask={}", p("cosyvoice_dyn.T37.mask.npy")),
                    "--cond".into(),
                    format!("spks={}", p("cosyvoice_dyn.T37.spks.npy")),
                    "--cond".into(),
                    format!("cond={}", p("cosyvoice_dyn.T37.cond.npy")),
                ],
            ]
            .concat(),
            "seq_len",
        ),
        // A conditioning input not given.
        (
            [
                base("cosyvoice_dyn.onnx", "cosyvoice_dyn.T37.noise.npy"),
                vec![
                    "--cond".into(),
                    format!("mu={}", p("cosyvoice_dyn.T37.mu.npy")),
                ],
            ]
            .concat(),
            "`mask`",
        ),
        // A bool mask given as 0.5.
        (
            [
                base("f5.onnx", "f5.n37.noise.npy"),
                vec!["--cond".into(), format!("mask={}", p("f5.bad_mask.npy"))],
            ]
            .concat(),
            "mask",
        ),
        // A null condition of batch 3 for the fixed-batch-2 model.
        (
            [
                base("cosyvoice_b2.onnx", "cosyvoice_b2.T37.noise.npy"),
                vec![
                    "--guidance".into(),
                    "0.7".into(),
                    "--cond".into(),
                    format!("mu={}", p("cosyvoice_b2.T37.mu.npy")),
                    "--cond".into(),
                    format!("mask={}", p("cosyvoice_b2.T37.mask.npy")),
                    "--cond".into(),
                    format!("spks={}", p("cosyvoice_b2.T37.spks.npy")),
                    "--cond".into(),
                    format!("cond={}", p("cosyvoice_b2.T37.cond.npy")),
                    "--null-cond".into(),
                    format!("mu={}", p("cosyvoice_b2.bad_null_mu_b3.npy")),
                ],
            ]
            .concat(),
            "`mu`",
        ),
        // Not an input of the model.
        (
            [
                base("matcha.onnx", "matcha.T37.noise.npy"),
                vec!["--cond".into(), "speaker=3".into()],
            ]
            .concat(),
            "`speaker`",
        ),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = fmrt(&refs);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{needle} not in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn the_readme_recipes_with_fm_grids_match_their_loops() {
    use ndarray_npy::read_npy;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real");
    let grids = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grids");
    let tmp = std::env::temp_dir().join(format!("fmrt-cli-recipes-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let p = |f: &str| dir.join(f).display().to_string();
    let cosy = grids.join("cosyvoice_cosine.fm").display().to_string();
    let out = tmp.join("out.npy");
    let o = out.display().to_string();
    let recipes: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--model".into(),
                p("cosyvoice_b2.onnx"),
                "--noise".into(),
                p("cosyvoice_b2.T64.noise.npy"),
                "--cond".into(),
                format!("mask={}", p("cosyvoice_b2.T64.mask.npy")),
                "--cond".into(),
                format!("mu={}", p("cosyvoice_b2.T64.mu.npy")),
                "--cond".into(),
                format!("spks={}", p("cosyvoice_b2.T64.spks.npy")),
                "--cond".into(),
                format!("cond={}", p("cosyvoice_b2.T64.cond.npy")),
                "--guidance".into(),
                "0.7".into(),
                "--null-cond".into(),
                "mu=zeros".into(),
                "--null-cond".into(),
                "spks=zeros".into(),
                "--null-cond".into(),
                "cond=zeros".into(),
                "--solver".into(),
                "euler".into(),
                "--steps".into(),
                "10".into(),
                "--grid".into(),
                cosy,
            ],
            "cosyvoice_b2.T64.final.npy",
        ),
        (
            vec![
                "--model".into(),
                p("f5.onnx"),
                "--noise".into(),
                p("f5.n64.noise.npy"),
                "--cond".into(),
                format!("cond={}", p("f5.n64.cond.npy")),
                "--cond".into(),
                format!("text={}", p("f5.n64.text.npy")),
                "--cond".into(),
                format!("mask={}", p("f5.n64.mask.npy")),
                "--guidance".into(),
                "2".into(),
                "--null-cond".into(),
                "cond=zeros".into(),
                "--null-cond".into(),
                "text=fill:-1".into(),
                "--solver".into(),
                "euler".into(),
                "--steps".into(),
                "8".into(),
                "--grid".into(),
                "sway".into(),
                "--grid-param".into(),
                "c=-1".into(),
            ],
            "f5.n64.final.npy",
        ),
    ];
    for (args, expected) in recipes {
        let mut full: Vec<String> = vec!["sample".into(), "-q".into(), "-o".into(), o.clone()];
        full.extend(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let run = fmrt(&refs);
        assert_eq!(run.status.code(), Some(0), "{expected}: {}", stderr(&run));
        let got: ndarray::ArrayD<f32> = read_npy(&out).unwrap();
        let want: ndarray::ArrayD<f32> = read_npy(dir.join(expected)).unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(diff / (1.0 + scale) <= 1e-4, "{expected}: off by {diff}");
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn a_number_serves_a_batched_input_as_in_the_flux_recipe() {
    use ndarray_npy::read_npy;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real");
    let tmp = std::env::temp_dir().join(format!("fmrt-cli-flux-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("flux.cases.json")).unwrap())
            .unwrap();
    let case = &spec["cases"][0];
    let grid = tmp.join("grid.csv");
    let times: Vec<String> = case["grid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{:.17e}", v.as_f64().unwrap()))
        .collect();
    std::fs::write(&grid, times.join("\n")).unwrap();
    let p = |f: &str| dir.join(f).display().to_string();
    let cond = |name: &str| format!("{name}={}", p(case["cond"][name].as_str().unwrap()));
    let out = tmp.join("out.npy");
    let args: Vec<String> = vec![
        "sample".into(),
        "-q".into(),
        "--model".into(),
        p("flux.onnx"),
        "--noise".into(),
        p(case["noise"].as_str().unwrap()),
        "--time-direction".into(),
        "reversed".into(),
        "--cond".into(),
        cond("encoder_hidden_states"),
        "--cond".into(),
        cond("pooled_projections"),
        "--cond".into(),
        cond("img_ids"),
        "--cond".into(),
        cond("txt_ids"),
        // The fixture's guidance input holds 3.5 for every sample.
        "--cond".into(),
        "guidance=3.5".into(),
        "--solver".into(),
        "euler".into(),
        "--grid".into(),
        grid.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = fmrt(&refs);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let got: ndarray::ArrayD<f32> = read_npy(&out).unwrap();
    let want: ndarray::ArrayD<f32> =
        read_npy(dir.join(case["expected"].as_str().unwrap())).unwrap();
    let diff = got
        .iter()
        .zip(&want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(diff / (1.0 + scale) <= 1e-4, "off by {diff}");
    std::fs::remove_dir_all(&tmp).ok();
}

mod tune {
    use super::*;

    fn fixture(path: &str) -> String {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(path)
            .display()
            .to_string()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fmrt-cli-tune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn tune_prints_a_table_the_best_per_budget_and_draws_the_plot() {
        let png = scratch("wp.png");
        let _ = std::fs::remove_file(&png);
        let model = fixture("gmm_ot.onnx");
        let out = fmrt(&[
            "tune",
            "--model",
            &model,
            "--calls",
            "8,16",
            "-n",
            "64",
            "--plot",
            png.to_str().unwrap(),
        ]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{}{text}", stderr(&out));
        for needle in [
            "reference dopri5 (rtol 1e-7, atol 1e-7)",
            "median",
            "p99",
            "best for 8 calls: ",
            "best for 16 calls: ",
        ] {
            assert!(text.contains(needle), "`{needle}` not in:\n{text}");
        }
        let bytes = std::fs::read(&png).expect("the plot was written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }

    #[test]
    fn tune_json_holds_every_row_and_the_best() {
        let model = fixture("gmm_ot.onnx");
        let out = fmrt(&[
            "tune",
            "--model",
            &model,
            "--calls",
            "10",
            "-n",
            "32",
            "--solvers",
            "euler,midpoint,rk4",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let rows = v["rows"].as_array().unwrap();
        // Three methods on the nine default grids.
        assert_eq!(rows.len(), 27, "{v}");
        assert!(rows.iter().all(|r| r["calls"].as_u64().unwrap() <= 10));
        let best = &v["best"][0];
        assert_eq!(best["budget"], 10);
        let euler = rows
            .iter()
            .find(|r| r["method"] == "euler" && r["grid"]["name"] == "uniform")
            .unwrap();
        assert!(best["median"].as_f64().unwrap() <= euler["median"].as_f64().unwrap());
    }

    #[test]
    fn tune_grids_picks_the_candidate_grids_with_their_params() {
        let model = fixture("gmm_ot.onnx");
        let out = fmrt(&[
            "tune",
            "--model",
            &model,
            "--calls",
            "8",
            "-n",
            "16",
            "--solvers",
            "heun",
            "--grids",
            "uniform,shift:mu=4,edm:rho=5:sigma_max=40",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let mut grids: Vec<String> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["grid"].to_string())
            .collect();
        grids.sort();
        assert_eq!(
            grids,
            [
                r#"{"name":"edm","params":{"rho":5.0,"sigma_max":40.0}}"#,
                r#"{"name":"shift","params":{"mu":4.0}}"#,
                r#"{"name":"uniform","params":{}}"#,
            ]
        );
    }

    #[test]
    fn tune_takes_the_conditioning_flags_of_sample() {
        let real = |f: &str| fixture(&format!("real/{f}"));
        let model = real("matcha.onnx");
        let base = [
            "tune",
            "--model",
            &model,
            "--shape",
            "80,37",
            "-n",
            "2",
            "--noise-scale",
            "0.667",
            "--calls",
            "4",
            "--solvers",
            "euler,heun,ab2",
            "--reference-tol",
            "1e-5",
        ];
        let mask = format!("mask={}", real("matcha.T37.mask.npy"));
        let mu = format!("mu={}", real("matcha.T37.mu.npy"));
        let with_cond = [&base[..], &["--cond", &mask, "--cond", &mu]].concat();
        let out = fmrt(&with_cond);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{}{text}", stderr(&out));
        assert!(text.contains("best for 4 calls: "), "{text}");
        // Without its conditioning the model cannot run: exit 1 naming it.
        let out = fmrt(&base);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(stderr(&out).contains("mask"), "{}", stderr(&out));
    }

    /// Every stand-in of the real-models issue tunes with the flags its
    /// recipe samples with (clock, noise scale, guidance, null condition,
    /// conditioning), a few candidates each to stay fast.
    #[test]
    fn tune_runs_on_every_real_model_with_its_recipe() {
        use ndarray_npy::read_npy;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real");
        for name in [
            "cosyvoice_b2",
            "cosyvoice_dyn",
            "matcha",
            "f5",
            "sd3",
            "flux",
            "zipvoice",
        ] {
            let text = std::fs::read_to_string(dir.join(format!("{name}.cases.json"))).unwrap();
            let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
            let case = &spec["cases"][0];
            let noise: ndarray::ArrayD<f32> =
                read_npy(dir.join(case["noise"].as_str().unwrap())).unwrap();
            let shape: Vec<String> = noise.shape()[1..].iter().map(|d| d.to_string()).collect();
            let mut args: Vec<String> = vec!["tune".into()];
            args.extend(super::recipe_flags(&spec, case, &dir));
            args.extend([
                "--shape".into(),
                shape.join(","),
                "-n".into(),
                noise.shape()[0].to_string(),
                "--calls".into(),
                "4".into(),
                "--solvers".into(),
                "euler,unipc".into(),
                "--reference-tol".into(),
                "1e-4".into(),
                "--json".into(),
            ]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = fmrt(&refs);
            assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
            let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert!(!v["rows"].as_array().unwrap().is_empty(), "{name}: {v}");
            assert!(v["best"][0]["method"].is_string(), "{name}: {v}");
        }
    }

    #[test]
    fn bad_tune_input_exits_1_with_a_message() {
        let model = fixture("gmm_ot.onnx");
        for (extra, needle) in [
            (&["--calls", "0"][..], "not a call budget"),
            (&["--calls", "abc"][..], "not a call budget"),
            (&["--calls", "8,-1"][..], "not a call budget"),
            (&["--solvers", "nope"][..], "unknown solver method"),
            (&["-n", "0"][..], "at least one sample"),
            (&["--reference-tol", "0"][..], "--reference-tol"),
            (&["--plot", "out.jpg"][..], ".png"),
            (&["--grids", ":mu=3"][..], "names no grid"),
            (&["--grids", "shift:mu"][..], "NAME=VALUE"),
            (&["--grids", "nowhere"][..], "nowhere"),
        ] {
            let args = [&["tune", "--model", model.as_str()][..], extra].concat();
            let out = fmrt(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
            assert!(err.contains(needle), "{extra:?}: `{needle}` not in {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}
