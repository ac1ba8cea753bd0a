//! The C ABI: the committed header, every entry point's argument checks, and
//! the C and C++ examples and plugin compiled and run against the library.
//!
//! Rust calls the entry points straight from the `fmrt_c_api` crate, as any
//! dependency. The C programs link the `libfmrt.so` of the artifact crate
//! (`c-api/artifact/`, package `fmrt-c`), a dev-dependency: cargo builds it,
//! once, into the folder of this test binary before the tests run.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};
use std::sync::{Arc, OnceLock};

use fmrt::field::analytic::GaussianMixture;
use fmrt::field::VelocityField;
use fmrt::path::AffinePath;
use fmrt::random::{Lane, SeededRng};
use fmrt::sampler::Sampler;
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{Method, SolverConfig, Steps};
use fmrt_c_api::error::*;
use fmrt_c_api::extras::*;
use fmrt_c_api::field::*;
use fmrt_c_api::path::*;
use fmrt_c_api::random::*;
use fmrt_c_api::sampler::*;
use fmrt_c_api::scheduler::*;
use fmrt_c_api::solver::*;
use fmrt_c_api::{fmrt_status, fmrt_version};

/// The repository root (the C crate sits in `c-api/` under it).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("c-api/ has a parent folder")
        .to_path_buf()
}

/// This crate's folder (`c-api/`).
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

mod header {
    use super::*;

    /// Regenerates `include/fmrt.h` with the pinned cbindgen and fails on any
    /// difference; `FMRT_BLESS=1` rewrites the file instead.
    #[test]
    fn committed_header_matches_cbindgen_output() {
        let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).unwrap();
        let bindings = cbindgen::Builder::new()
            .with_config(config)
            .with_src(crate_dir().join("src/lib.rs"))
            .generate()
            .expect("cbindgen failed on c-api/src");
        let mut generated = Vec::new();
        bindings.write(&mut generated);
        let generated = String::from_utf8(generated).unwrap();
        let path = root().join("include/fmrt.h");
        if std::env::var_os("FMRT_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "include/fmrt.h is stale; regenerate it with \
             `FMRT_BLESS=1 cargo test -p fmrt-c-api header` and commit it"
        );
    }
}

// ---------------------------------------------------------------------------
// Building C against the library.

#[path = "../../tests/support/external_data.rs"]
mod external_data;
use external_data::save_with_external_data;

/// The `target/<profile>/` folder of this test run (the test binary lives in
/// its `deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps/")
        .to_path_buf()
}

/// The folder holding the `libfmrt.so` cargo built from this source tree for
/// this test run: the artifact crate, a dev-dependency of this one, whose C
/// library cargo writes beside this test binary in `target/<profile>/deps/`
/// (as the dependency of a test it is not copied up to `target/<profile>/`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .expect("the test binary sits in target/<profile>/deps/")
        .to_path_buf();
    assert!(
        dir.join("libfmrt.so").is_file(),
        "{} has no libfmrt.so: cargo builds it for these tests (the \
         dev-dependency on fmrt-c); run them through `cargo test`",
        dir.display()
    );
    dir
}

/// A scratch directory for compiled C programs.
fn scratch() -> PathBuf {
    let dir = profile_dir().join("c-api-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a compiler command, failing the test with its output if it fails.
fn compile(mut cmd: Command) {
    let out = cmd.output().expect("cannot start the C compiler");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles C (`cc`) or C++ (`c++`) `sources` into the program `name`, linked
/// against libfmrt.so.
fn build_program(compiler: &str, std: &str, sources: &[PathBuf], name: &str) -> PathBuf {
    let exe = scratch().join(name);
    let lib = lib_dir();
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-O1", "-I"])
        .arg(root().join("include"))
        .args(sources)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lfmrt")
        // DT_RPATH (not RUNPATH) so that this library wins over any other
        // libfmrt.so on the LD_LIBRARY_PATH cargo sets for tests.
        .arg(format!("-Wl,--disable-new-dtags,-rpath,{}", lib.display()))
        .arg("-lpthread");
    compile(cmd);
    exe
}

/// Compiles a shared library from C source text (plugins and broken plugins).
fn build_shared(name: &str, source: &str) -> PathBuf {
    let dir = scratch();
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(format!("lib{name}.so"));
    let mut cmd = Command::new("cc");
    cmd.args([
        "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-I",
    ])
    .arg(root().join("include"))
    .arg(&src)
    .arg("-o")
    .arg(&out)
    .arg("-lm");
    compile(cmd);
    out
}

/// The example plugin, built once per test run.
fn gmm_plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let source = std::fs::read_to_string(root().join("examples/plugins/gmm_plugin.c")).unwrap();
        build_shared("gmm_plugin", &source)
    })
}

/// The version-2 example plugin, built once per test run.
fn gmm_plugin_v2() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let source =
            std::fs::read_to_string(root().join("examples/plugins/gmm_plugin_v2.c")).unwrap();
        build_shared("gmm_plugin_v2", &source)
    })
}

/// Runs a program, asserting success, and returns its standard output.
fn run(exe: &Path, args: &[&Path]) -> String {
    let out = Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The numbers after `prefix I` on every line starting with `prefix`, by index.
fn rows(output: &str, prefix: &str) -> Vec<Vec<f64>> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .map(|rest| {
            rest.split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect()
}

/// The ring mixture of the examples (CondOT, 8 components, radius 4, std 0.3)
/// sampled with RK4 in 20 steps from seed 42, through the Rust API.
fn rust_ring_samples(times: &[f64]) -> fmrt::sampler::Samples {
    let ot = Arc::new(Scheduler::from_source("alpha = t\nsigma = 1 - t\n", "ot.fm", &[]).unwrap());
    let field = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap());
    Sampler::new(field, SolverConfig::fixed(Method::Rk4, Steps::Count(20)))
        .sample_at(4, 42, times)
        .unwrap()
}

/// Asserts that printed rows equal the f32 values of `expected` (`[4, 2]`),
/// within `tol` (0: bit for bit, since `%.9g` round-trips f32).
fn assert_rows(got: &[Vec<f64>], expected: &[f32], tol: f64, what: &str) {
    assert_eq!(got.len() * 2, expected.len(), "{what}: row count");
    for (i, row) in got.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let e = f64::from(expected[2 * i + j]);
            assert!(
                (v as f32 as f64 - e).abs() <= tol,
                "{what}[{i}][{j}] = {v}, the Rust API gives {e}"
            );
        }
    }
}

mod programs {
    use super::*;

    #[test]
    fn c_example_prints_what_the_rust_api_computes() {
        let exe = build_program("cc", "c11", &[root().join("examples/c/sample.c")], "sample");
        let out = run(&exe, &[gmm_plugin()]);

        assert!(out.contains(&format!("version {}\n", env!("CARGO_PKG_VERSION"))));
        let cosine = Scheduler::builtin("cosine", &[]).unwrap();
        assert!(out.contains(&format!("expr d_alpha {}\n", cosine.expressions().d_alpha)));
        let c = cosine.coefficients(0.5);
        assert_eq!(
            rows(&out, "coef"),
            vec![vec![c.alpha, c.sigma, c.d_alpha, c.d_sigma]]
        );

        let samples = rust_ring_samples(&[0.5]);
        assert_rows(
            &rows(&out, "gmm"),
            samples.x.as_slice().unwrap(),
            0.0,
            "gmm",
        );
        assert_rows(
            &rows(&out, "mid"),
            samples.trajectory.as_slice().unwrap(),
            0.0,
            "mid",
        );
        assert_eq!(samples.stats.nfe, 80, "RK4: 4 stages x 20 steps");
        assert!(out.contains(&format!(
            "stats {} {} 0\n",
            samples.stats.nfe, samples.stats.accepted
        )));
        // The C plugin computes the same field in its own arithmetic (libm's exp
        // and cos): equal within float rounding accumulated over 20 RK4 steps.
        assert_rows(
            &rows(&out, "plugin"),
            samples.x.as_slice().unwrap(),
            1e-4,
            "plugin",
        );
        // The same program on the version-2 plugin (no extras given: no shift).
        let out_v2 = run(&exe, &[gmm_plugin_v2()]);
        assert_rows(
            &rows(&out_v2, "plugin"),
            samples.x.as_slice().unwrap(),
            1e-4,
            "plugin v2",
        );

        // The training batch of data [[1, 2], [-3, 0.5]], noise from seed 7, t from seed 8.
        let mut rng = SeededRng::new(7);
        let x0: Vec<f32> = (0..4).map(|_| rng.normal() as f32).collect();
        let mut rng = SeededRng::new(8);
        let t: Vec<f64> = (0..2).map(|_| rng.uniform()).collect();
        let x1 = ndarray::arr2(&[[1.0f32, 2.0], [-3.0, 0.5]]).into_dyn();
        let x0 = ndarray::Array2::from_shape_vec((2, 2), x0)
            .unwrap()
            .into_dyn();
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let batch = AffinePath::new(ot)
            .training_batch(x1.view(), x0.view(), &t)
            .unwrap();
        let printed: Vec<(f64, f64)> = out
            .lines()
            .filter_map(|l| l.strip_prefix("batch "))
            .map(|l| {
                let v: Vec<f64> = l.split(' ').map(|v| v.parse().unwrap()).collect();
                (v[1], v[2])
            })
            .collect();
        assert_eq!(printed.len(), 4);
        for (i, (xt, target)) in printed.iter().enumerate() {
            assert_eq!(*xt as f32, batch.x_t.as_slice().unwrap()[i], "x_t[{i}]");
            assert_eq!(
                *target as f32,
                batch.target.as_slice().unwrap()[i],
                "target[{i}]"
            );
        }
    }

    #[test]
    fn cpp_example_with_raii_wrappers_matches_the_rust_api() {
        let exe = build_program(
            "c++",
            "c++17",
            &[root().join("examples/cpp/sample.cpp")],
            "sample_cpp",
        );
        let out = run(&exe, &[gmm_plugin()]);
        let samples = rust_ring_samples(&[]);
        assert_rows(
            &rows(&out, "cpp"),
            samples.x.as_slice().unwrap(),
            0.0,
            "cpp",
        );
        assert_rows(
            &rows(&out, "cpp-plugin"),
            samples.x.as_slice().unwrap(),
            1e-4,
            "cpp-plugin",
        );
        assert!(out.contains(&format!("cpp-error {}\n", fmrt_status::Scheduler as u32)));
    }

    /// `examples/c/model.c` opens the x0 export through `fmrt_model`, lists
    /// its inputs, and samples and scores like `fmrt::model::Model`: samples
    /// bit for bit, log p to printing precision.
    #[test]
    fn c_model_example_matches_the_rust_model() {
        use fmrt::field::onnx::ensure_runtime_for_development;
        use fmrt::model::{Model, ModelOptions};

        let runtime =
            ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let exe = build_program("cc", "c11", &[root().join("examples/c/model.c")], "model");
        let model = root().join("tests/fixtures/gmm_ot_x0.onnx");
        // As a host would: the runtime found through ORT_DYLIB_PATH.
        let o = Command::new(&exe)
            .arg(&model)
            .args(["8", "5"])
            .env("ORT_DYLIB_PATH", &runtime.library)
            .output()
            .unwrap();
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.starts_with("prediction x0\n"), "{out}");
        assert!(out.contains("input 0 state x float32 -1 2\n"), "{out}");
        assert!(out.contains("input 1 time t float32 -1\n"), "{out}");

        let rust = Model::open(&model, ModelOptions::default()).unwrap();
        let solver = SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5);
        let samples = rust.sampler(solver.clone()).sample(8, 5).unwrap().x;
        let printed = rows(&out, "sample");
        assert_eq!(printed.len(), 8, "{out}");
        for (row, expected) in printed.iter().zip(samples.outer_iter()) {
            let row: Vec<f32> = row.iter().map(|&v| v as f32).collect();
            assert_eq!(row, expected.iter().copied().collect::<Vec<_>>(), "{out}");
        }
        let log_p = rust
            .likelihood(solver)
            .log_likelihood(samples.view())
            .unwrap()
            .log_p;
        let printed = rows(&out, "log_p");
        for (row, expected) in printed.iter().zip(&log_p) {
            assert!(
                (row[0] - expected).abs() <= 1e-12,
                "C {} vs Rust {expected}",
                row[0]
            );
        }
    }

    #[test]
    fn c_likelihood_example_matches_the_rust_api_and_the_analytic_density() {
        use fmrt::field::onnx::{ensure_runtime_for_development, OnnxField};
        use fmrt::likelihood::{Divergence, Likelihood, TimeSearch};
        use fmrt::solver::AdaptiveOptions;

        let runtime =
            ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let exe = build_program(
            "cc",
            "c11",
            &[root().join("examples/c/likelihood.c")],
            "likelihood",
        );
        let model = root().join("tests/fixtures/gmm_ot.onnx");
        let out = run(&exe, &[model.as_path(), runtime.library.as_path()]);
        assert!(out.starts_with("provider CPU\n"), "{out}");

        let x = ndarray::arr2(&[[4.0f32, 0.0], [2.9, 2.7], [2.0, -3.5], [0.0, 0.0]]);
        let field: Arc<dyn VelocityField> = Arc::new(OnnxField::load_file(&model).unwrap());
        let solver = SolverConfig::adaptive_with(
            Method::Dopri5,
            AdaptiveOptions {
                rtol: 1e-7,
                atol: 1e-7,
                ..AdaptiveOptions::default()
            },
        );
        let lik = Likelihood::new(field, solver);
        let exact = lik.log_likelihood(x.view().into_dyn()).unwrap();
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let oracle = GaussianMixture::ring(8, 4.0, 0.3, ot)
            .unwrap()
            .log_density(x.view(), &[1.0])
            .unwrap();
        let printed = rows(&out, "exact");
        assert_eq!(printed.len(), 4, "{out}");
        for (i, row) in printed.iter().enumerate() {
            assert!(
                (row[0] - exact.log_p[i]).abs() <= 1e-6,
                "exact log p[{i}]: C {} vs Rust {}",
                row[0],
                exact.log_p[i]
            );
            assert!(
                (row[1] - exact.bits_per_dim[i]).abs() <= 1e-6,
                "bits/dim[{i}]"
            );
            assert!(
                (row[0] - oracle[i]).abs() <= 1e-3,
                "exact log p[{i}] = {} but the analytic density gives {}",
                row[0],
                oracle[i]
            );
            let x0 = exact.x0.as_slice().unwrap();
            assert!((row[2] as f32 - x0[2 * i]).abs() <= 1e-5, "x0[{i}]");
            assert!((row[3] as f32 - x0[2 * i + 1]).abs() <= 1e-5, "x0[{i}]");
        }
        assert!(out.contains(&format!(
            "exact-stats {} {} {}\n",
            exact.stats.nfe, exact.stats.accepted, exact.stats.rejected
        )));

        let hutchinson = lik
            .clone()
            .with_divergence(Divergence::hutchinson(4))
            .with_seed(7)
            .log_likelihood(x.view().into_dyn())
            .unwrap();
        let printed: Vec<f64> = rows(&out, "hutchinson").iter().map(|r| r[0]).collect();
        assert_eq!(printed, hutchinson.log_p, "Hutchinson, seed 7, 4 probes");
        assert!(
            printed.iter().zip(&exact.log_p).any(|(h, e)| h != e),
            "Hutchinson's estimate should differ from the exact value somewhere"
        );

        let mpt = lik
            .most_probable_time(
                x.view().into_dyn(),
                &TimeSearch {
                    lower: 0.05,
                    upper: 1.0,
                    tolerance: 1e-3,
                },
            )
            .unwrap();
        let printed = rows(&out, "mpt");
        assert_eq!(printed.len(), 4);
        for (i, row) in printed.iter().enumerate() {
            assert!(
                (row[0] - mpt.t[i]).abs() <= 1e-9,
                "t[{i}]: {} vs {}",
                row[0],
                mpt.t[i]
            );
            assert!((row[1] - mpt.log_p[i]).abs() <= 1e-6, "mpt log p[{i}]");
        }
    }

    #[test]
    fn eight_c_threads_sharing_one_sampler_match_sequential_runs() {
        let exe = build_program(
            "cc",
            "c11",
            &[root().join("examples/c/threads.c")],
            "threads",
        );
        assert!(run(&exe, &[]).starts_with("threads ok 8 x 4"));
        assert!(run(&exe, &[gmm_plugin()]).starts_with("threads ok 8 x 4"));
        assert!(run(&exe, &[gmm_plugin_v2()]).starts_with("threads ok 8 x 4"));
    }

    /// 16 C threads share one ONNX field and one sampler, build handles of
    /// their own on them and free those in random orders while the main
    /// thread frees the shared field, schedulers and solver under them; every
    /// result equals the main thread's own. `scripts/valgrind-c-examples.sh`
    /// runs the same program under memcheck.
    #[test]
    fn sixteen_c_threads_share_an_onnx_field_and_free_handles_in_any_order() {
        use fmrt::field::onnx::ensure_runtime_for_development;
        let runtime =
            ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let exe = build_program(
            "cc",
            "c11",
            &[crate_dir().join("tests/c/onnx_threads.c")],
            "onnx_threads",
        );
        let model = root().join("tests/fixtures/gmm_ot.onnx");
        let out = run(&exe, &[model.as_path(), runtime.library.as_path()]);
        assert!(out.starts_with("onnx threads ok: 16 threads"), "{out}");
    }

    /// `examples/cpp/tts_decoder.cpp` loads the fixed-batch CosyVoice
    /// stand-in once and synthesises two utterances of different lengths
    /// with the same handles (shaped sampling, guidance with zeroed null
    /// inputs, a `.fm` cosine grid, an f32 state): two lines, the two lengths, the
    /// model's channel count, finite wall times and mel values.
    #[test]
    fn cpp_tts_decoder_synthesises_two_lengths_with_one_model() {
        use fmrt::field::onnx::ensure_runtime_for_development;
        let runtime =
            ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let model = real_fixture("cosyvoice_b2.onnx");
        let exe = build_program(
            "c++",
            "c++17",
            &[root().join("examples/cpp/tts_decoder.cpp")],
            "tts_decoder",
        );
        let out = run(&exe, &[model.as_path(), runtime.library.as_path()]);
        assert!(
            out.starts_with("model state x channels 80 batch 2\n"),
            "{out}"
        );
        let lines: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| l.starts_with("utterance "))
            .map(|l| l.split(' ').collect())
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        for (i, (words, frames)) in lines.iter().zip(["37", "64"]).enumerate() {
            let field = |key: &str| {
                let at = words.iter().position(|w| *w == key).expect(key);
                words[at + 1]
            };
            assert_eq!(words[1], i.to_string(), "{out}");
            assert_eq!(field("frames"), frames, "{out}");
            assert_eq!(field("channels"), "80", "{out}");
            let ms: f64 = field("ms").parse().unwrap();
            assert!(ms.is_finite() && ms >= 0.0, "{out}");
            let rms: f64 = field("rms").parse().unwrap();
            assert!(rms.is_finite() && rms > 0.0, "{out}");
            // Euler, 10 steps, each one packed batch-2 call (cond + null).
            assert_eq!(field("nfe"), "10", "{out}");
        }
    }

    #[test]
    fn headers_included_twice_compile_warning_free_as_c_and_cpp() {
        let src = scratch().join("double_include.c");
        std::fs::write(
            &src,
            "#include \"fmrt.h\"\n#include \"fmrt_plugin.h\"\n#include \"fmrt.h\"\n\
             #include \"fmrt_plugin.h\"\n#include <stdio.h>\n\
             int main(void) {\n  const fmrt_plugin_vtable_v1 *table = NULL;\n  (void)table;\n\
             \x20 const fmrt_plugin_vtable_v2 *table2 = NULL;\n  (void)table2;\n\
             \x20 static fmrt_plugin_call call;\n  call.size = sizeof call;\n\
             \x20 if (fmrt_plugin_find_extra(&call, \"shift\") != NULL) return 1;\n\
             \x20 printf(\"%s %u\\n\", fmrt_version(), (unsigned)FMRT_STATUS_PANIC);\n  return 0;\n}\n",
        )
        .unwrap();
        for (compiler, std, name) in [
            ("cc", "c99", "double_c99"),
            ("cc", "c11", "double_c11"),
            ("c++", "c++17", "double_cpp"),
        ] {
            let mut sources = vec![src.clone()];
            if compiler == "c++" {
                let cpp = scratch().join("double_include.cpp");
                std::fs::copy(&src, &cpp).unwrap();
                sources = vec![cpp];
            }
            let exe = build_program(compiler, std, &sources, name);
            let out = run(&exe, &[]);
            assert_eq!(
                out,
                format!("{} 900\n", env!("CARGO_PKG_VERSION")),
                "{name}"
            );
        }
    }
}

/// A stand-in of a real export in `tests/fixtures/real/` (made by
/// `tests/fixtures/real/make_real_models.py`).
fn real_fixture(name: &str) -> PathBuf {
    let path = root().join("tests/fixtures/real").join(name);
    assert!(
        path.is_file(),
        "{} is missing: the stand-ins of real exports live in tests/fixtures/real/",
        path.display()
    );
    path
}

// ---------------------------------------------------------------------------
// Calls from Rust into the C entry points: argument checks, no crashes.

/// This thread's last error message.
fn last_error() -> String {
    // SAFETY: fmrt_last_error never returns NULL and the string lives until the
    // next failing call on this thread.
    unsafe { CStr::from_ptr(fmrt_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts a call's status and that the last error mentions `needle`.
#[track_caller]
fn assert_fails(status: fmrt_status, expected: fmrt_status, needle: &str) {
    assert_eq!(status, expected, "message: {}", last_error());
    let message = last_error();
    assert!(
        message.contains(needle),
        "`{message}` should mention `{needle}`"
    );
}

#[track_caller]
fn assert_ok(status: fmrt_status) {
    assert_eq!(status, fmrt_status::Ok, "message: {}", last_error());
}

fn c(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

/// Owned handles for the argument tests, freed on drop.
struct Handles {
    scheduler: *mut fmrt_scheduler,
    field: *mut fmrt_field,
    solver: *mut fmrt_solver,
    sampler: *mut fmrt_sampler,
    extras: *mut fmrt_extras,
}

impl Handles {
    /// CondOT, the 8-component ring, RK4 with 10 steps, empty extras.
    fn new() -> Self {
        let mut h = Handles {
            scheduler: null_mut(),
            field: null_mut(),
            solver: null_mut(),
            sampler: null_mut(),
            extras: null_mut(),
        };
        // SAFETY: valid arguments; outputs are written to our fields.
        unsafe {
            assert_ok(fmrt_scheduler_builtin(
                c"ot".as_ptr(),
                null(),
                0,
                &mut h.scheduler,
            ));
            assert_ok(fmrt_field_gaussian_ring(
                h.scheduler,
                8,
                4.0,
                0.3,
                &mut h.field,
            ));
            assert_ok(fmrt_solver_fixed(c"rk4".as_ptr(), 10, &mut h.solver));
            assert_ok(fmrt_sampler_new(h.field, h.solver, &mut h.sampler));
            assert_ok(fmrt_extras_new(&mut h.extras));
        }
        h
    }
}

impl Drop for Handles {
    fn drop(&mut self) {
        // SAFETY: each handle came from this library and is freed once.
        unsafe {
            fmrt_sampler_free(self.sampler);
            fmrt_solver_free(self.solver);
            fmrt_field_free(self.field);
            fmrt_scheduler_free(self.scheduler);
            fmrt_extras_free(self.extras);
        }
    }
}

use fmrt_status::{
    BufferTooSmall, Field as FieldStatus, InvalidArgument, InvalidUtf8, NullParameter, Plugin,
    Scheduler as SchedulerStatus, ShapeMismatch,
};

mod machinery {
    use super::*;

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(fmrt_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn status_names_cover_every_number_and_unknowns() {
        let name = |s: u32| {
            // SAFETY: static strings.
            unsafe { CStr::from_ptr(fmrt_status_name(s)) }
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(name(0), "OK");
        assert_eq!(name(103), "BUFFER_TOO_SMALL");
        assert_eq!(name(310), "PLUGIN");
        assert_eq!(name(900), "PANIC");
        assert_eq!(name(600), "UNSUPPORTED");
        assert_eq!(name(330), "RUNTIME_NOT_FOUND");
        assert_eq!(name(7), "UNKNOWN");
        // The numbers are part of the ABI: pin them.
        let pinned = [
            (fmrt_status::Ok, 0),
            (NullParameter, 100),
            (InvalidArgument, 101),
            (InvalidUtf8, 102),
            (BufferTooSmall, 103),
            (ShapeMismatch, 104),
            (SchedulerStatus, 200),
            (FieldStatus, 300),
            (Plugin, 310),
            (fmrt_status::Model, 320),
            (fmrt_status::RuntimeNotFound, 330),
            (fmrt_status::Solver, 400),
            (fmrt_status::Io, 500),
            (fmrt_status::Unsupported, 600),
            (fmrt_status::Panic, 900),
        ];
        for (status, number) in pinned {
            assert_eq!(status as u32, number, "{status:?}");
        }
    }

    #[test]
    fn a_panic_becomes_the_panic_status_with_its_message() {
        let status = fmrt_c_api::panic::panic_status_for_tests("deliberate test panic");
        assert_fails(status, fmrt_status::Panic, "deliberate test panic");
    }

    /// Set in the child process of the test below.
    const QUIET_PANIC_CHILD: &str = "FMRT_QUIET_PANIC_CHILD";

    /// A panic caught at the boundary prints nothing on the host's stderr,
    /// whether the host left Rust's default hook in place or installed its
    /// own; the host's own hook still sees the host's panics and only those.
    /// Checked in child processes (this test binary re-run for this one test,
    /// output not captured) so that the stderr is a real one and the hooks
    /// are the child's own.
    #[test]
    fn a_caught_panic_prints_nothing_and_the_hosts_hook_stays() {
        if let Some(mode) = std::env::var_os(QUIET_PANIC_CHILD) {
            quiet_panic_child(mode == "host-hook");
            return;
        }
        for mode in ["default-hook", "host-hook"] {
            let exe = std::env::current_exe().unwrap();
            let out = Command::new(exe)
                .args([
                    "machinery::a_caught_panic_prints_nothing_and_the_hosts_hook_stays",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(QUIET_PANIC_CHILD, mode)
                .env("RUST_BACKTRACE", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{mode}: child failed:\n{stdout}\n{stderr}"
            );
            assert!(
                stdout.contains("1 passed"),
                "{mode}: the child ran the test:\n{stdout}"
            );
            assert_eq!(stderr, "", "{mode}: nothing on the host's stderr");
            assert!(stdout.contains("status: Panic"), "{mode}:\n{stdout}");
            let message = stdout
                .lines()
                .find_map(|l| l.strip_prefix("message: "))
                .expect("the child prints the message");
            assert!(
                message.contains("fmrt panicked")
                    && message.contains("quiet test panic")
                    && message.contains("panic.rs:"),
                "{mode}: message with text and location: {message}"
            );
            if mode == "host-hook" {
                for line in [
                    "host hook calls after fmrt's panic: 0",
                    "host hook calls after the host's panic: 1",
                ] {
                    assert!(stdout.contains(line), "`{line}` in:\n{stdout}");
                }
            }
        }
    }

    /// The child of the test above: a host with Rust's default panic hook,
    /// or with a hook of its own (`host_hook`) installed before any fmrt call.
    fn quiet_panic_child(host_hook: bool) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static HOST_HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);
        if host_hook {
            std::panic::set_hook(Box::new(|_| {
                HOST_HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
            }));
        }
        let status = fmrt_c_api::panic::panic_status_for_tests("quiet test panic");
        println!("status: {status:?}");
        println!("message: {}", last_error());
        if !host_hook {
            return;
        }
        println!(
            "host hook calls after fmrt's panic: {}",
            HOST_HOOK_CALLS.load(Ordering::SeqCst)
        );
        let host = std::panic::catch_unwind(|| panic!("the host's own panic"));
        assert!(host.is_err());
        println!(
            "host hook calls after the host's panic: {}",
            HOST_HOOK_CALLS.load(Ordering::SeqCst)
        );
        // Later calls run normally: the hook is installed once.
        let again = fmrt_c_api::panic::panic_status_for_tests("second");
        assert_eq!(again, fmrt_status::Panic);
        assert_eq!(HOST_HOOK_CALLS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn last_error_is_per_thread_and_copies_into_checked_buffers() {
        // SAFETY: NULL name is checked by the call.
        let status = unsafe { fmrt_scheduler_builtin(null(), null(), 0, &mut null_mut()) };
        assert_fails(status, NullParameter, "`name`");
        let other = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(other, "", "another thread has its own (empty) message");

        let message = last_error();
        let mut need = 0usize;
        // SAFETY: a size query: NULL buffer of length 0.
        let s = unsafe { fmrt_last_error_copy(null_mut(), 0, &mut need) };
        assert_eq!(s, BufferTooSmall);
        assert_eq!(need, message.len() + 1);
        let mut short = vec![b'#' as c_char; need - 1];
        // SAFETY: `short` holds need - 1 bytes.
        let s = unsafe { fmrt_last_error_copy(short.as_mut_ptr(), short.len(), &mut need) };
        assert_eq!(s, BufferTooSmall);
        assert!(
            short.iter().all(|&b| b == b'#' as c_char),
            "nothing written"
        );
        assert_eq!(last_error(), message, "copying leaves the message alone");
        let mut buf = vec![0 as c_char; need];
        // SAFETY: `buf` holds need bytes.
        assert_ok(unsafe { fmrt_last_error_copy(buf.as_mut_ptr(), buf.len(), null_mut()) });
        // SAFETY: NUL-terminated by the call.
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            message
        );
    }
}

mod scheduler {
    use super::*;

    #[test]
    fn from_source_checks_pointers_utf8_and_reports_diagnostics() {
        let mut out = null_mut();
        // SAFETY: every call passes NULL or valid pointers.
        unsafe {
            let src = c("alpha = t\nsigma = 1 - t\n");
            assert_fails(
                fmrt_scheduler_from_source(null(), null(), null(), 0, &mut out),
                NullParameter,
                "`source`",
            );
            assert_fails(
                fmrt_scheduler_from_source(src.as_ptr(), null(), null(), 0, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_fails(
                fmrt_scheduler_from_source(src.as_ptr(), null(), null(), 2, &mut out),
                NullParameter,
                "`params`",
            );
            let bad = [fmrt_param {
                name: null(),
                value: 1.0,
            }];
            assert_fails(
                fmrt_scheduler_from_source(src.as_ptr(), null(), bad.as_ptr(), 1, &mut out),
                NullParameter,
                "params[0].name",
            );
            let latin1 = [0xE9u8, 0];
            assert_fails(
                fmrt_scheduler_from_source(latin1.as_ptr().cast(), null(), null(), 0, &mut out),
                InvalidUtf8,
                "`source`",
            );
            let typo = c("alpha = sine(t)\nsigma = 1 - t\n");
            assert_fails(
                fmrt_scheduler_from_source(typo.as_ptr(), c"typo.fm".as_ptr(), null(), 0, &mut out),
                SchedulerStatus,
                "did you mean `sin`",
            );
            assert!(
                last_error().contains("typo.fm"),
                "names the file: {}",
                last_error()
            );
            assert!(out.is_null(), "out untouched on failure");
            // Param overrides reach the scheduler.
            let poly = c("param n = 2\nalpha = t^n\nsigma = 1 - t^n\n");
            let p = [fmrt_param {
                name: c"n".as_ptr(),
                value: 3.0,
            }];
            assert_ok(fmrt_scheduler_from_source(
                poly.as_ptr(),
                null(),
                p.as_ptr(),
                1,
                &mut out,
            ));
            let mut co = fmrt_coefficients::default();
            assert_ok(fmrt_scheduler_coefficients(out, 0.5, &mut co));
            assert_eq!(co.alpha, 0.125);
            fmrt_scheduler_free(out);
        }
    }

    #[test]
    fn from_file_reads_the_file_and_names_a_missing_one() {
        let path = scratch().join("poly3.fm");
        std::fs::write(&path, "param n = 3\nalpha = t^n\nsigma = 1 - t^n\n").unwrap();
        let path_c = c(path.to_str().unwrap());
        let mut out = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_scheduler_from_file(null(), null(), 0, &mut out),
                NullParameter,
                "`path`",
            );
            assert_fails(
                fmrt_scheduler_from_file(path_c.as_ptr(), null(), 0, null_mut()),
                NullParameter,
                "`out`",
            );
            let missing = c("/nonexistent/sched.fm");
            assert_fails(
                fmrt_scheduler_from_file(missing.as_ptr(), null(), 0, &mut out),
                fmrt_status::Io,
                "/nonexistent/sched.fm",
            );
            assert_ok(fmrt_scheduler_from_file(
                path_c.as_ptr(),
                null(),
                0,
                &mut out,
            ));
            let mut co = fmrt_coefficients::default();
            assert_ok(fmrt_scheduler_coefficients(out, 0.5, &mut co));
            assert_eq!(co.d_alpha, 0.75);
            fmrt_scheduler_free(out);
        }
    }

    #[test]
    fn builtin_checks_its_name() {
        let mut out = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_scheduler_builtin(null(), null(), 0, &mut out),
                NullParameter,
                "`name`",
            );
            assert_fails(
                fmrt_scheduler_builtin(c"cosin".as_ptr(), null(), 0, &mut out),
                SchedulerStatus,
                "did you mean `cosine`",
            );
            assert_fails(
                fmrt_scheduler_builtin(c"vp".as_ptr(), null(), 0, null_mut()),
                NullParameter,
                "`out`",
            );
        }
    }

    #[test]
    fn free_accepts_null() {
        // SAFETY: NULL is documented as a no-op for every free function.
        unsafe {
            fmrt_scheduler_free(null_mut());
            fmrt_field_free(null_mut());
            fmrt_solver_free(null_mut());
            fmrt_sampler_free(null_mut());
            fmrt_extras_free(null_mut());
        }
        // Reaching this line is the assertion; make it one that can fail too.
        assert!(!last_error().contains("panicked"));
    }

    #[test]
    fn coefficients_check_handle_and_output() {
        let h = Handles::new();
        let mut co = fmrt_coefficients::default();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_scheduler_coefficients(null(), 0.5, &mut co),
                NullParameter,
                "`scheduler`",
            );
            assert_fails(
                fmrt_scheduler_coefficients(h.scheduler, 0.5, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_scheduler_coefficients(h.scheduler, 0.25, &mut co));
        }
        assert_eq!(
            co,
            fmrt_coefficients {
                alpha: 0.25,
                sigma: 0.75,
                d_alpha: 1.0,
                d_sigma: -1.0
            }
        );
    }

    #[test]
    fn coefficients_many_checks_buffer_lengths() {
        let h = Handles::new();
        let t = [0.0, 0.5, 1.0];
        let mut out = [fmrt_coefficients::default(); 3];
        // SAFETY: lengths as stated; the short case is rejected before writing.
        unsafe {
            assert_fails(
                fmrt_scheduler_coefficients_many(h.scheduler, null(), 3, out.as_mut_ptr(), 3),
                NullParameter,
                "`t`",
            );
            assert_fails(
                fmrt_scheduler_coefficients_many(h.scheduler, t.as_ptr(), 3, out.as_mut_ptr(), 2),
                BufferTooSmall,
                "`out` holds 2",
            );
            assert_eq!(out[0], fmrt_coefficients::default(), "nothing written");
            assert_ok(fmrt_scheduler_coefficients_many(
                h.scheduler,
                t.as_ptr(),
                3,
                out.as_mut_ptr(),
                3,
            ));
            assert_ok(fmrt_scheduler_coefficients_many(
                h.scheduler,
                null(),
                0,
                null_mut(),
                0,
            ));
        }
        assert_eq!(out[2].alpha, 1.0);
        assert_eq!(out[1].sigma, 0.5);
    }

    #[test]
    fn expression_sizes_short_buffers_and_unknown_quantities() {
        let s = Scheduler::builtin("cosine", &[]).unwrap();
        let mut sched = null_mut();
        let mut need = 0usize;
        // SAFETY: lengths as stated.
        unsafe {
            assert_ok(fmrt_scheduler_builtin(
                c"cosine".as_ptr(),
                null(),
                0,
                &mut sched,
            ));
            assert_fails(
                fmrt_scheduler_expression(null(), 0, null_mut(), 0, &mut need),
                NullParameter,
                "`scheduler`",
            );
            assert_fails(
                fmrt_scheduler_expression(sched, 9, null_mut(), 0, &mut need),
                InvalidArgument,
                "quantity 9",
            );
            let q = fmrt_quantity::DSigma as u32;
            assert_fails(
                fmrt_scheduler_expression(sched, q, null_mut(), 0, &mut need),
                BufferTooSmall,
                "`buf`",
            );
            assert_eq!(need, s.expressions().d_sigma.len() + 1);
            let mut buf = vec![1 as c_char; need];
            assert_fails(
                fmrt_scheduler_expression(sched, q, buf.as_mut_ptr(), need - 1, null_mut()),
                BufferTooSmall,
                "`buf`",
            );
            assert!(buf.iter().all(|&b| b == 1), "nothing written");
            assert_ok(fmrt_scheduler_expression(
                sched,
                q,
                buf.as_mut_ptr(),
                need,
                null_mut(),
            ));
            assert_eq!(
                CStr::from_ptr(buf.as_ptr()).to_str().unwrap(),
                s.expressions().d_sigma
            );
            fmrt_scheduler_free(sched);
        }
    }
}

mod extras {
    use super::*;

    #[test]
    fn new_checks_its_output() {
        // SAFETY: NULL output is checked.
        assert_fails(
            unsafe { fmrt_extras_new(null_mut()) },
            NullParameter,
            "`out`",
        );
    }

    #[test]
    fn set_int64_checks_shape_against_data() {
        let h = Handles::new();
        let data = [1i64, 2, 3, 4];
        let shape = [2usize, 2];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_extras_set_int64(
                    null_mut(),
                    c"a".as_ptr(),
                    data.as_ptr(),
                    4,
                    shape.as_ptr(),
                    2,
                ),
                NullParameter,
                "`extras`",
            );
            assert_fails(
                fmrt_extras_set_int64(h.extras, null(), data.as_ptr(), 4, shape.as_ptr(), 2),
                NullParameter,
                "`name`",
            );
            assert_fails(
                fmrt_extras_set_int64(h.extras, c"a".as_ptr(), null(), 4, shape.as_ptr(), 2),
                NullParameter,
                "`data`",
            );
            assert_fails(
                fmrt_extras_set_int64(h.extras, c"a".as_ptr(), data.as_ptr(), 4, null(), 2),
                NullParameter,
                "`shape`",
            );
            assert_fails(
                fmrt_extras_set_int64(h.extras, c"a".as_ptr(), data.as_ptr(), 3, shape.as_ptr(), 2),
                ShapeMismatch,
                "holds 4 elements",
            );
            assert_fails(
                fmrt_extras_set_int64(h.extras, c"a".as_ptr(), data.as_ptr(), 0, shape.as_ptr(), 0),
                ShapeMismatch,
                "at least one axis",
            );
            let huge = [usize::MAX, 2];
            assert_fails(
                fmrt_extras_set_int64(h.extras, c"a".as_ptr(), data.as_ptr(), 4, huge.as_ptr(), 2),
                InvalidArgument,
                "overflows",
            );
            assert_ok(fmrt_extras_set_int64(
                h.extras,
                c"a".as_ptr(),
                data.as_ptr(),
                4,
                shape.as_ptr(),
                2,
            ));
            let e = &(*h.extras).extras();
            assert_eq!(e.get("a").unwrap().shape(), &[2, 2]);
        }
    }

    #[test]
    fn set_float32_checks_shape_against_data() {
        let h = Handles::new();
        let data = [0.5f32; 6];
        let shape = [3usize, 2];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_extras_set_float32(
                    null_mut(),
                    c"ctx".as_ptr(),
                    data.as_ptr(),
                    6,
                    shape.as_ptr(),
                    2,
                ),
                NullParameter,
                "`extras`",
            );
            assert_fails(
                fmrt_extras_set_float32(
                    h.extras,
                    c"ctx".as_ptr(),
                    data.as_ptr(),
                    5,
                    shape.as_ptr(),
                    2,
                ),
                ShapeMismatch,
                "data_len is 5",
            );
            assert_ok(fmrt_extras_set_float32(
                h.extras,
                c"ctx".as_ptr(),
                data.as_ptr(),
                6,
                shape.as_ptr(),
                2,
            ));
            assert_eq!(
                (*h.extras).extras().get("ctx").unwrap().dtype_name(),
                "float32"
            );
        }
    }

    #[test]
    fn labels_reach_the_field_which_names_them() {
        let h = Handles::new();
        let labels = [0i64, 1, 2, 1];
        let mut x = [0f32; 8];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_extras_set_labels(h.extras, c"label".as_ptr(), null(), 4),
                NullParameter,
                "`data`",
            );
            assert_ok(fmrt_extras_set_labels(
                h.extras,
                c"label".as_ptr(),
                labels.as_ptr(),
                4,
            ));
            // The mixture is unconditional: labels passed to it are an
            // invalid argument naming them, which shows they travel with the
            // call.
            let s = fmrt_sampler_sample(
                h.sampler,
                4,
                1,
                null(),
                0,
                h.extras,
                x.as_mut_ptr(),
                8,
                null_mut(),
                0,
                null_mut(),
            );
            assert_fails(s, InvalidArgument, "`label` int64 [4]");
        }
    }
}

mod field {
    use super::*;

    #[test]
    fn gaussian_mixture_matches_the_rust_field() {
        let h = Handles::new();
        let (w, means, stds) = ([1.0, 3.0], [1.0, 0.0, -1.0, 2.0], [0.5, 0.25]);
        let mut f = null_mut();
        let x = [0.3f32, -0.2, 1.0, 1.0];
        let mut u = [0f32; 4];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_field_gaussian_mixture(
                    null(),
                    w.as_ptr(),
                    means.as_ptr(),
                    stds.as_ptr(),
                    2,
                    2,
                    &mut f,
                ),
                NullParameter,
                "`scheduler`",
            );
            assert_fails(
                fmrt_field_gaussian_mixture(
                    h.scheduler,
                    null(),
                    means.as_ptr(),
                    stds.as_ptr(),
                    2,
                    2,
                    &mut f,
                ),
                NullParameter,
                "`weights`",
            );
            assert_fails(
                fmrt_field_gaussian_mixture(
                    h.scheduler,
                    w.as_ptr(),
                    null(),
                    stds.as_ptr(),
                    2,
                    2,
                    &mut f,
                ),
                NullParameter,
                "`means`",
            );
            assert_fails(
                fmrt_field_gaussian_mixture(
                    h.scheduler,
                    w.as_ptr(),
                    means.as_ptr(),
                    null(),
                    2,
                    2,
                    &mut f,
                ),
                NullParameter,
                "`stds`",
            );
            assert_fails(
                fmrt_field_gaussian_mixture(
                    h.scheduler,
                    w.as_ptr(),
                    means.as_ptr(),
                    stds.as_ptr(),
                    2,
                    2,
                    null_mut(),
                ),
                NullParameter,
                "`out`",
            );
            assert_fails(
                fmrt_field_gaussian_mixture(
                    h.scheduler,
                    w.as_ptr(),
                    means.as_ptr(),
                    stds.as_ptr(),
                    0,
                    2,
                    &mut f,
                ),
                InvalidArgument,
                "at least one component",
            );
            let neg = [-1.0, 1.0];
            assert_fails(
                fmrt_field_gaussian_mixture(
                    h.scheduler,
                    w.as_ptr(),
                    means.as_ptr(),
                    neg.as_ptr(),
                    2,
                    2,
                    &mut f,
                ),
                InvalidArgument,
                "standard deviation 0",
            );
            assert_ok(fmrt_field_gaussian_mixture(
                h.scheduler,
                w.as_ptr(),
                means.as_ptr(),
                stds.as_ptr(),
                2,
                2,
                &mut f,
            ));
            assert_ok(fmrt_field_velocity(
                f,
                x.as_ptr(),
                4,
                2,
                [0.4].as_ptr(),
                1,
                null(),
                u.as_mut_ptr(),
                4,
            ));
            fmrt_field_free(f);
        }
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let means = ndarray::Array2::from_shape_vec((2, 2), means.to_vec()).unwrap();
        let g = GaussianMixture::new(&w, means.view(), &stds, ot).unwrap();
        let xa = ndarray::Array2::from_shape_vec((2, 2), x.to_vec())
            .unwrap()
            .into_dyn();
        let mut expect = ndarray::ArrayD::<f32>::zeros(xa.raw_dim());
        g.velocity(
            xa.view(),
            &[0.4],
            fmrt::field::Extras::none(),
            expect.view_mut(),
        )
        .unwrap();
        assert_eq!(&u[..], expect.as_slice().unwrap());
    }

    #[test]
    fn ring_checks_arguments() {
        let h = Handles::new();
        let mut f = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_field_gaussian_ring(null(), 8, 4.0, 0.3, &mut f),
                NullParameter,
                "`scheduler`",
            );
            assert_fails(
                fmrt_field_gaussian_ring(h.scheduler, 8, 4.0, 0.3, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_fails(
                fmrt_field_gaussian_ring(h.scheduler, 0, 4.0, 0.3, &mut f),
                InvalidArgument,
                "at least one component",
            );
            assert_fails(
                fmrt_field_gaussian_ring(h.scheduler, 8, f64::NAN, 0.3, &mut f),
                InvalidArgument,
                "radius",
            );
            // Found by the c_abi fuzz target: this count panicked in ndarray.
            assert_fails(
                fmrt_field_gaussian_ring(h.scheduler, usize::MAX, 4.0, 0.3, &mut f),
                InvalidArgument,
                "MAX_RING_COMPONENTS",
            );
        }
        assert!(f.is_null());
    }

    #[test]
    fn state_shape_and_size_check_buffers() {
        let h = Handles::new();
        let mut shape = [0usize; 1];
        let mut rank = 0usize;
        let mut size = 0usize;
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_field_state_shape(null(), shape.as_mut_ptr(), 1, &mut rank),
                NullParameter,
                "`field`",
            );
            assert_fails(
                fmrt_field_state_shape(h.field, shape.as_mut_ptr(), 0, &mut rank),
                BufferTooSmall,
                "`shape` holds 0",
            );
            assert_eq!(rank, 1, "the rank is reported with a short buffer");
            assert_fails(
                fmrt_field_state_shape(h.field, null_mut(), 1, &mut rank),
                NullParameter,
                "`shape`",
            );
            assert_ok(fmrt_field_state_shape(
                h.field,
                shape.as_mut_ptr(),
                1,
                null_mut(),
            ));
            assert_fails(
                fmrt_field_state_size(null(), &mut size),
                NullParameter,
                "`field`",
            );
            assert_fails(
                fmrt_field_state_size(h.field, null_mut()),
                NullParameter,
                "`out_size`",
            );
            assert_ok(fmrt_field_state_size(h.field, &mut size));
        }
        assert_eq!((shape, size), ([2], 2));
    }

    #[test]
    fn velocity_checks_lengths_and_times() {
        let h = Handles::new();
        let x = [0.1f32; 6];
        let mut out = [7f32; 6];
        let t = [0.5];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_field_velocity(
                    null(),
                    x.as_ptr(),
                    6,
                    3,
                    t.as_ptr(),
                    1,
                    null(),
                    out.as_mut_ptr(),
                    6,
                ),
                NullParameter,
                "`field`",
            );
            assert_fails(
                fmrt_field_velocity(
                    h.field,
                    null(),
                    6,
                    3,
                    t.as_ptr(),
                    1,
                    null(),
                    out.as_mut_ptr(),
                    6,
                ),
                NullParameter,
                "`x`",
            );
            assert_fails(
                fmrt_field_velocity(
                    h.field,
                    x.as_ptr(),
                    5,
                    3,
                    t.as_ptr(),
                    1,
                    null(),
                    out.as_mut_ptr(),
                    6,
                ),
                ShapeMismatch,
                "x holds 5 floats",
            );
            assert_fails(
                fmrt_field_velocity(
                    h.field,
                    x.as_ptr(),
                    6,
                    3,
                    null(),
                    1,
                    null(),
                    out.as_mut_ptr(),
                    6,
                ),
                NullParameter,
                "`t`",
            );
            assert_fails(
                fmrt_field_velocity(
                    h.field,
                    x.as_ptr(),
                    6,
                    3,
                    [0.1, 0.2].as_ptr(),
                    2,
                    null(),
                    out.as_mut_ptr(),
                    6,
                ),
                ShapeMismatch,
                "`t`",
            );
            assert_fails(
                fmrt_field_velocity(
                    h.field,
                    x.as_ptr(),
                    6,
                    3,
                    t.as_ptr(),
                    1,
                    null(),
                    out.as_mut_ptr(),
                    5,
                ),
                BufferTooSmall,
                "`out` holds 5",
            );
            assert!(out.iter().all(|&v| v == 7.0), "nothing written");
            assert_fails(
                fmrt_field_velocity(
                    h.field,
                    x.as_ptr(),
                    6,
                    3,
                    t.as_ptr(),
                    1,
                    null(),
                    null_mut(),
                    6,
                ),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_field_velocity(
                h.field,
                x.as_ptr(),
                6,
                3,
                t.as_ptr(),
                1,
                null(),
                out.as_mut_ptr(),
                6,
            ));
        }
        assert!(out.iter().all(|v| v.is_finite() && *v != 7.0));
    }

    #[test]
    fn predicted_converts_an_x1_model_and_checks_names() {
        let h = Handles::new();
        let mut f = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_field_predicted(null(), h.scheduler, c"x1".as_ptr(), &mut f),
                NullParameter,
                "`inner`",
            );
            assert_fails(
                fmrt_field_predicted(h.field, null(), c"x1".as_ptr(), &mut f),
                NullParameter,
                "`trained_with`",
            );
            assert_fails(
                fmrt_field_predicted(h.field, h.scheduler, null(), &mut f),
                NullParameter,
                "`prediction`",
            );
            assert_fails(
                fmrt_field_predicted(h.field, h.scheduler, c"v".as_ptr(), &mut f),
                InvalidArgument,
                "unknown prediction `v`",
            );
            assert_fails(
                fmrt_field_predicted(h.field, h.scheduler, c"x1".as_ptr(), null_mut()),
                NullParameter,
                "`out`",
            );
            // A velocity "prediction" is the identity.
            assert_ok(fmrt_field_predicted(
                h.field,
                h.scheduler,
                c"velocity".as_ptr(),
                &mut f,
            ));
            let (x, mut a, mut b) = ([0.5f32, -1.0], [0f32; 2], [1f32; 2]);
            assert_ok(fmrt_field_velocity(
                f,
                x.as_ptr(),
                2,
                1,
                [0.3].as_ptr(),
                1,
                null(),
                a.as_mut_ptr(),
                2,
            ));
            assert_ok(fmrt_field_velocity(
                h.field,
                x.as_ptr(),
                2,
                1,
                [0.3].as_ptr(),
                1,
                null(),
                b.as_mut_ptr(),
                2,
            ));
            assert_eq!(a, b);
            fmrt_field_free(f);
        }
    }

    #[test]
    fn guided_needs_a_null_condition() {
        let h = Handles::new();
        let mut f = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_field_guided(null(), 1.0, h.extras, &mut f),
                NullParameter,
                "`inner`",
            );
            assert_fails(
                fmrt_field_guided(h.field, 1.0, null(), &mut f),
                NullParameter,
                "`null_condition`",
            );
            assert_fails(
                fmrt_field_guided(h.field, 1.0, h.extras, &mut f),
                InvalidArgument,
                "null condition",
            );
            assert_ok(fmrt_extras_set_labels(
                h.extras,
                c"label".as_ptr(),
                [3i64].as_ptr(),
                1,
            ));
            assert_fails(
                fmrt_field_guided(h.field, f64::INFINITY, h.extras, &mut f),
                InvalidArgument,
                "not finite",
            );
            assert_fails(
                fmrt_field_guided(h.field, 1.0, h.extras, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_field_guided(h.field, 1.0, h.extras, &mut f));
            assert!(!f.is_null());
            fmrt_field_free(f);
        }
    }
}

mod plugin {
    use super::*;
    use fmrt::field::plugin::PluginField;

    /// A plugin source whose table reports `version` (and is otherwise valid).
    fn table_with_version(version: u32) -> String {
        format!(
            "#include \"fmrt_plugin.h\"\n\
             static int32_t c(const char *a, void **i, char *e, size_t n) {{ (void)a; (void)e; (void)n; *i = 0; return 0; }}\n\
             static size_t s(const void *i, size_t *d, size_t n) {{ (void)i; if (n) d[0] = 2; return 1; }}\n\
             static int32_t v(const void *i, const float *x, size_t b, const double *t, size_t tl, float *o, char *e, size_t n) {{\n\
               (void)i; (void)x; (void)t; (void)tl; (void)o; snprintf(e, n, \"always fails\"); return b ? 5 : 0; }}\n\
             static void d(void *i) {{ (void)i; }}\n\
             static const fmrt_plugin_vtable_v1 T = {{ {version}u, 0, \"test\", c, s, v, 0, d }};\n\
             const fmrt_plugin_vtable_v1 *fmrt_plugin_v1(void) {{ return &T; }}\n"
        )
        .replace("#include \"fmrt_plugin.h\"\n", "#include \"fmrt_plugin.h\"\n#include <stdio.h>\n")
    }

    #[test]
    fn plugin_field_errors_name_the_file_and_symbol() {
        let mut f = null_mut();
        let no_symbol = build_shared("no_symbol", "int fmrt_plugin_v0(void) { return 0; }\n");
        let v2 = build_shared("version2", &table_with_version(2));
        let no_symbol_c = c(no_symbol.to_str().unwrap());
        let v2_c = c(v2.to_str().unwrap());
        let gmm_c = c(gmm_plugin().to_str().unwrap());
        // SAFETY: valid or NULL pointers; the libraries are ours.
        unsafe {
            assert_fails(
                fmrt_field_plugin(null(), null(), &mut f),
                NullParameter,
                "`path`",
            );
            assert_fails(
                fmrt_field_plugin(gmm_c.as_ptr(), null(), null_mut()),
                NullParameter,
                "`out`",
            );
            assert_fails(
                fmrt_field_plugin(c"/nonexistent/libp.so".as_ptr(), null(), &mut f),
                Plugin,
                "/nonexistent/libp.so",
            );
            assert_fails(
                fmrt_field_plugin(no_symbol_c.as_ptr(), null(), &mut f),
                Plugin,
                "missing symbol `fmrt_plugin_v1`",
            );
            assert!(last_error().contains(no_symbol.to_str().unwrap()));
            assert_fails(
                fmrt_field_plugin(v2_c.as_ptr(), null(), &mut f),
                Plugin,
                "ABI version 2",
            );
            assert!(last_error().contains(v2.to_str().unwrap()));
            assert_fails(
                fmrt_field_plugin(gmm_c.as_ptr(), c"k=0".as_ptr(), &mut f),
                Plugin,
                "create failed: need 1 <= k",
            );
            assert!(f.is_null());
        }
    }

    #[test]
    fn a_failing_callback_is_a_field_error_with_the_plugin_message() {
        let lib = build_shared("version1_failing", &table_with_version(1));
        let lib_c = c(lib.to_str().unwrap());
        let mut f = null_mut();
        let mut out = [0f32; 2];
        // SAFETY: valid pointers; the library is ours.
        unsafe {
            assert_ok(fmrt_field_plugin(lib_c.as_ptr(), null(), &mut f));
            let s = fmrt_field_velocity(
                f,
                [0f32; 2].as_ptr(),
                2,
                1,
                [0.5].as_ptr(),
                1,
                null(),
                out.as_mut_ptr(),
                2,
            );
            assert_fails(s, FieldStatus, "velocity failed: always fails");
            fmrt_field_free(f);
        }
    }

    #[test]
    fn plugin_velocity_and_jvp_match_the_analytic_mixture() {
        // SAFETY: the example plugin follows the contract.
        let p = unsafe { PluginField::open(gmm_plugin(), Some("k=8 radius=4 std=0.3")) }.unwrap();
        assert_eq!(p.name(), "gmm-ring");
        assert_eq!(p.abi_version(), 1);
        assert_eq!(p.capabilities(), fmrt::field::plugin::Capabilities::JVP);
        assert_eq!(p.state_shape(), Some(&[2][..]));
        assert_eq!(
            p.derivatives(),
            fmrt::field::Derivatives {
                jvp: true,
                ..fmrt::field::Derivatives::NONE
            }
        );
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let g = GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap();
        let mut rng = SeededRng::new(3);
        let x =
            ndarray::Array2::from_shape_simple_fn((16, 2), || 3.0 * rng.normal() as f32).into_dyn();
        let v = ndarray::Array2::from_shape_simple_fn((16, 2), || rng.normal() as f32).into_dyn();
        let t: Vec<f64> = (0..16).map(|i| 0.05 + 0.9 * i as f64 / 15.0).collect();
        let zeros = || ndarray::ArrayD::<f32>::zeros(x.raw_dim());
        let (mut a, mut b, mut ja, mut jb) = (zeros(), zeros(), zeros(), zeros());
        p.velocity(x.view(), &t, fmrt::field::Extras::none(), a.view_mut())
            .unwrap();
        g.velocity(x.view(), &t, fmrt::field::Extras::none(), b.view_mut())
            .unwrap();
        p.jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            ja.view_mut(),
        )
        .unwrap();
        g.jvp(
            x.view(),
            &t,
            fmrt::field::Extras::none(),
            v.view(),
            jb.view_mut(),
        )
        .unwrap();
        for (name, p, g) in [("velocity", &a, &b), ("jvp", &ja, &jb)] {
            let worst = p
                .iter()
                .zip(g.iter())
                .map(|(p, g)| (p - g).abs() / (1.0 + g.abs()))
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{name}: worst relative difference {worst}");
        }
        // A wrong shape is refused before the plugin sees it.
        let bad = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[4, 3]));
        let err = p
            .velocity(
                bad.view(),
                &[0.5],
                fmrt::field::Extras::none(),
                zeros().view_mut(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
    }

    // -----------------------------------------------------------------------
    // ABI version 2.

    use fmrt::error::ErrorKind;
    use fmrt::field::plugin::{
        dtype_code, Capabilities, PLUGIN_V2_CALL_SIZE, PLUGIN_V2_EXTRA_SIZE,
        PLUGIN_V2_MIN_TABLE_SIZE,
    };
    use fmrt::field::{ExtraDtype, ExtraTensor, Extras};
    use fmrt::likelihood::{Divergence, Likelihood};
    use fmrt::Error;
    use ndarray::{Array2, ArrayD, IxDyn};

    fn open_gmm_v2() -> PluginField {
        // SAFETY: the example plugin follows the contract.
        unsafe { PluginField::open(gmm_plugin_v2(), Some("k=8 radius=4 std=0.3")) }.unwrap()
    }

    /// The ring of the example plugins with every mean moved by `shift`.
    fn shifted_ring(shift: [f64; 2]) -> GaussianMixture {
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let ring = GaussianMixture::ring(8, 4.0, 0.3, ot.clone()).unwrap();
        let means = ring.means().mapv(|m| m) + &ndarray::arr1(&shift);
        GaussianMixture::new(ring.weights(), means.view(), ring.stds(), ot).unwrap()
    }

    /// The largest |a − b| / (1 + |b|).
    fn worst<A: Into<f64> + Copy, B: Into<f64> + Copy>(
        a: impl IntoIterator<Item = A>,
        b: impl IntoIterator<Item = B>,
    ) -> f64 {
        a.into_iter()
            .zip(b)
            .map(|(a, b)| {
                let (a, b): (f64, f64) = (a.into(), b.into());
                (a - b).abs() / (1.0 + b.abs())
            })
            .fold(0.0, f64::max)
    }

    fn points(n: usize, seed: u64) -> (ArrayD<f32>, ArrayD<f32>, Vec<f64>) {
        let mut rng = SeededRng::new(seed);
        let x = Array2::from_shape_simple_fn((n, 2), || 3.0 * rng.normal() as f32).into_dyn();
        let v = Array2::from_shape_simple_fn((n, 2), || rng.normal() as f32).into_dyn();
        let t = (0..n)
            .map(|i| 0.05 + 0.9 * i as f64 / (n - 1) as f64)
            .collect();
        (x, v, t)
    }

    #[test]
    fn plugin_v2_derivatives_match_the_analytic_mixture() {
        let p = open_gmm_v2();
        assert_eq!((p.abi_version(), p.name()), (2, "gmm-ring-v2"));
        assert_eq!(
            p.capabilities(),
            Capabilities::EXTRAS
                | Capabilities::JVP
                | Capabilities::STACKED_JVP
                | Capabilities::DIVERGENCE
        );
        assert_eq!(p.state_shape(), Some(&[2][..]));
        assert_eq!(
            p.derivatives(),
            fmrt::field::Derivatives {
                jvp: true,
                stacked_jvp: true,
                divergence: true
            }
        );
        let g = shifted_ring([0.0, 0.0]);
        let (x, v, t) = points(16, 3);
        let zeros = || ArrayD::<f32>::zeros(x.raw_dim());
        let (mut a, mut b, mut ja, mut jb) = (zeros(), zeros(), zeros(), zeros());
        p.velocity(x.view(), &t, Extras::none(), a.view_mut())
            .unwrap();
        g.velocity(x.view(), &t, Extras::none(), b.view_mut())
            .unwrap();
        p.jvp(x.view(), &t, Extras::none(), v.view(), ja.view_mut())
            .unwrap();
        g.jvp(x.view(), &t, Extras::none(), v.view(), jb.view_mut())
            .unwrap();
        let w = worst(a.iter().copied(), b.iter().copied());
        println!("plugin v2 velocity: worst relative difference {w:e}");
        assert!(w < 1e-6, "velocity: worst relative difference {w}");
        let w = worst(ja.iter().copied(), jb.iter().copied());
        println!("plugin v2 jvp: worst relative difference {w:e}");
        assert!(w < 1e-6, "jvp: worst relative difference {w}");

        // Three directions in one call: the velocity and each product agree
        // with the one-direction calls of the mixture.
        let mut rng = SeededRng::new(5);
        let vs =
            ndarray::Array3::from_shape_simple_fn((3, 16, 2), || rng.normal() as f32).into_dyn();
        let mut vel = zeros();
        let mut products = ArrayD::<f32>::zeros(IxDyn(&[3, 16, 2]));
        p.velocity_and_jvps(
            x.view(),
            &t,
            &Extras::new(),
            vs.view(),
            vel.view_mut(),
            products.view_mut(),
        )
        .unwrap();
        let w = worst(vel.iter().copied(), b.iter().copied());
        assert!(w < 1e-6, "stacked velocity: {w}");
        for d in 0..3 {
            let vd = vs.index_axis(ndarray::Axis(0), d);
            let mut want = zeros();
            g.jvp(x.view(), &t, Extras::none(), vd, want.view_mut())
                .unwrap();
            let got = products.index_axis(ndarray::Axis(0), d);
            let w = worst(got.iter().copied(), want.iter().copied());
            assert!(w < 1e-6, "stacked product {d}: {w}");
        }

        // The exact divergence in f64 against the closed form (same f32 x).
        let (mut dp, mut dg) = (vec![0.0; 16], vec![0.0; 16]);
        p.divergence(x.view(), &t, Extras::none(), &mut dp).unwrap();
        g.divergence(x.view(), &t, Extras::none(), &mut dg).unwrap();
        let w = worst(dp.iter().copied(), dg.iter().copied());
        println!("plugin v2 divergence: worst relative difference {w:e}");
        assert!(w < 5e-14, "divergence: worst relative difference {w:e}");
        assert!(
            dg.iter().any(|d| d.abs() > 0.1),
            "a divergence that says nothing"
        );

        // Buffers are checked before the plugin sees them.
        let short = ArrayD::<f32>::zeros(IxDyn(&[2, 16, 2]));
        let err = p
            .velocity_and_jvps(
                x.view(),
                &t,
                &Extras::new(),
                vs.view(),
                vel.view_mut(),
                short.clone().view_mut(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { tensor, .. } if tensor == "products"),
            "{err}"
        );
        let none = ArrayD::<f32>::zeros(IxDyn(&[0, 16, 2]));
        let err = p
            .velocity_and_jvps(
                x.view(),
                &t,
                &Extras::new(),
                none.view(),
                vel.view_mut(),
                none.clone().view_mut(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { tensor, .. } if tensor == "v"),
            "{err}"
        );
        let err = p
            .divergence(x.view(), &t, Extras::none(), &mut [0.0; 15])
            .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { tensor, .. } if tensor == "out"),
            "{err}"
        );
        let err = p
            .velocity(x.view(), &t[..3], Extras::none(), zeros().view_mut())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Shape, "{err}");
        let bad = ArrayD::<f32>::zeros(IxDyn(&[4, 3]));
        let err = p
            .velocity(bad.view(), &[0.5], Extras::none(), zeros().view_mut())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { tensor, .. } if tensor == "x"),
            "{err}"
        );
    }

    #[test]
    fn plugin_v2_extras_reach_the_plugin() {
        let p = open_gmm_v2();
        let (x, v, t) = points(16, 7);
        let (sa, sb) = ([1.5, -2.0], [-0.5, 3.0]);
        let (ga, gb) = (shifted_ring(sa), shifted_ring(sb));
        // Per-sample shifts: even rows sa, odd rows sb.
        let shifts = Array2::from_shape_fn((16, 2), |(i, j)| {
            (if i % 2 == 0 { sa[j] } else { sb[j] }) as f32
        })
        .into_dyn();
        let extras = Extras::new().with("shift", ExtraTensor::Float32(shifts));
        let zeros = || ArrayD::<f32>::zeros(x.raw_dim());
        let (mut u, mut jv) = (zeros(), zeros());
        let mut div = vec![0.0; 16];
        p.velocity(x.view(), &t, &extras, u.view_mut()).unwrap();
        p.jvp(x.view(), &t, &extras, v.view(), jv.view_mut())
            .unwrap();
        p.divergence(x.view(), &t, &extras, &mut div).unwrap();
        let (mut ua, mut ub, mut ja, mut jb) = (zeros(), zeros(), zeros(), zeros());
        let (mut da, mut db) = (vec![0.0; 16], vec![0.0; 16]);
        ga.velocity(x.view(), &t, Extras::none(), ua.view_mut())
            .unwrap();
        gb.velocity(x.view(), &t, Extras::none(), ub.view_mut())
            .unwrap();
        ga.jvp(x.view(), &t, Extras::none(), v.view(), ja.view_mut())
            .unwrap();
        gb.jvp(x.view(), &t, Extras::none(), v.view(), jb.view_mut())
            .unwrap();
        ga.divergence(x.view(), &t, Extras::none(), &mut da)
            .unwrap();
        gb.divergence(x.view(), &t, Extras::none(), &mut db)
            .unwrap();
        let (mut moved, mut worst_div) = (0.0f32, 0.0f64);
        for i in 0..16 {
            let (wu, wj, wd) = if i % 2 == 0 {
                (&ua, &ja, da[i])
            } else {
                (&ub, &jb, db[i])
            };
            for j in 0..2 {
                let (got, want) = (u[[i, j]], wu[[i, j]]);
                assert!((got - want).abs() < 1e-6 * (1.0 + want.abs()), "u[{i},{j}]");
                let (got, want) = (jv[[i, j]], wj[[i, j]]);
                assert!(
                    (got - want).abs() < 1e-6 * (1.0 + want.abs()),
                    "jv[{i},{j}]"
                );
            }
            worst_div = worst_div.max((div[i] - wd).abs() / (1.0 + wd.abs()));
        }
        println!("plugin v2 shifted divergence: worst relative difference {worst_div:e}");
        assert!(worst_div < 3e-13, "shifted divergence: {worst_div:e}");
        // The shift really moved the field.
        let mut plain = zeros();
        p.velocity(x.view(), &t, Extras::none(), plain.view_mut())
            .unwrap();
        for (a, b) in plain.iter().zip(u.iter()) {
            moved = moved.max((a - b).abs());
        }
        assert!(
            moved > 0.5,
            "the shift changed the velocity by at most {moved}"
        );

        // A shared shift serves every row; one row is repeated to the batch.
        let shared = Extras::new().with_shared(
            "shift",
            ExtraTensor::Float32(ArrayD::from_shape_vec(vec![2], vec![1.5, -2.0]).unwrap()),
        );
        let one_row = Extras::new().with(
            "shift",
            ExtraTensor::Float32(ArrayD::from_shape_vec(vec![1, 2], vec![1.5, -2.0]).unwrap()),
        );
        for (label, extras) in [("shared", shared), ("one row", one_row)] {
            let mut got = zeros();
            p.velocity(x.view(), &t, &extras, got.view_mut()).unwrap();
            let w = worst(got.iter().copied(), ua.iter().copied());
            assert!(w < 1e-6, "{label}: {w}");
        }

        // What only the plugin knows it checks itself: a field error with its
        // message.
        let wrong_type = Extras::new().with("shift", ExtraTensor::labels(&[1; 16]));
        let err = p
            .velocity(x.view(), &t, &wrong_type, zeros().view_mut())
            .unwrap_err();
        assert!(matches!(err, Error::Field { .. }), "{err}");
        assert!(err.to_string().contains("`shift` must be float32"), "{err}");
        let unknown = Extras::new().with("label", ExtraTensor::labels(&[1; 16]));
        let err = p
            .velocity(x.view(), &t, &unknown, zeros().view_mut())
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown extra input `label`"),
            "{err}"
        );
        // Rows that fit neither the batch nor one row are refused by fmrt.
        let three = Extras::new().with("shift", ExtraTensor::Float32(ArrayD::zeros(vec![3, 2])));
        let err = p
            .velocity(x.view(), &t, &three, zeros().view_mut())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { tensor, .. } if tensor == "shift"),
            "{err}"
        );
    }

    #[test]
    fn plugin_v2_likelihood_through_the_exact_divergence_matches_the_closed_form() {
        let p: Arc<dyn VelocityField> = Arc::new(open_gmm_v2());
        let solver = SolverConfig::adaptive(Method::Dopri5, 1e-6, 1e-6);
        let g = shifted_ring([0.0, 0.0]);
        let x = g.sample_data(64, 4243).into_dyn();
        let exact = g
            .log_density(x.view().into_dimensionality().unwrap(), &[1.0])
            .unwrap();
        let lik = Likelihood::new(p.clone(), solver.clone())
            .with_divergence(Divergence::Exact)
            .log_likelihood(x.view())
            .unwrap();
        assert_eq!(lik.calls.divergence, lik.stats.nfe, "{:?}", lik.calls);
        assert_eq!((lik.calls.jvp, lik.calls.stacked), (0, 0));
        let mae = lik
            .log_p
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 64.0;
        println!(
            "plugin v2 likelihood: MAE {mae:.2e} nats, NFE {}",
            lik.stats.nfe
        );
        assert!(mae < 6e-6, "MAE {mae}");

        // Conditioned on a shared shift: the shifted mixture's density.
        let shift = [1.5, -2.0];
        let gs = shifted_ring(shift);
        let xs = gs.sample_data(64, 4244).into_dyn();
        let exact = gs
            .log_density(xs.view().into_dimensionality().unwrap(), &[1.0])
            .unwrap();
        let extras = Extras::new().with_shared(
            "shift",
            ExtraTensor::Float32(ArrayD::from_shape_vec(vec![2], vec![1.5f32, -2.0]).unwrap()),
        );
        let lik = Likelihood::new(p, solver)
            .with_divergence(Divergence::Exact)
            .with_extras(extras)
            .log_likelihood(xs.view())
            .unwrap();
        let mae = lik
            .log_p
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 64.0;
        println!("plugin v2 shifted likelihood: MAE {mae:.2e} nats");
        assert!(mae < 6e-6, "shifted MAE {mae}");
    }

    /// Parts of a version-2 test plugin's table (C expressions).
    struct V2Table {
        abi: &'static str,
        size: &'static str,
        caps: String,
        state_shape: &'static str,
        rank: usize,
        jvp: &'static str,
        stacked: &'static str,
        divergence: &'static str,
        /// Append two fields a newer header might have.
        newer: bool,
    }

    impl Default for V2Table {
        fn default() -> Self {
            V2Table {
                abi: "FMRT_PLUGIN_V2_ABI_VERSION",
                size: "sizeof(fmrt_plugin_vtable_v2)",
                caps: "0".to_string(),
                state_shape: "s",
                rank: 1,
                jvp: "0",
                stacked: "0",
                divergence: "0",
                newer: false,
            }
        }
    }

    /// A small version-2 plugin: velocity = x + state_len + 1000 · state_rank
    /// (so a call shows the shape it got), failing when x[0] < −100; JVP 2v;
    /// divergence 2 · state_len.
    fn v2_plugin(name: &str, t: V2Table) -> PathBuf {
        let (open, close, table_type, entry) = if t.newer {
            (
                "{ ",
                " }, { 0, 0 }",
                "typedef struct newer { fmrt_plugin_vtable_v2 base; void *later[2]; } newer;\n\
                 static const newer T",
                "return &T.base;",
            )
        } else {
            ("", "", "static const fmrt_plugin_vtable_v2 T", "return &T;")
        };
        let size = t.size.replace(
            "TABLE",
            if t.newer {
                "newer"
            } else {
                "fmrt_plugin_vtable_v2"
            },
        );
        let source = format!(
            "#include \"fmrt_plugin.h\"\n#include <stdio.h>\n\
             #define U __attribute__((unused))\n\
             static int32_t c(const char *a, void **i, char *e, size_t n) {{ (void)a; (void)e; (void)n; *i = 0; return 0; }}\n\
             static void d(void *i) {{ (void)i; }}\n\
             U static size_t s(const void *i, size_t *dim, size_t n) {{ (void)i; for (size_t k = 0; k < n && k < {rank}; k++) dim[k] = 2; return {rank}; }}\n\
             static int32_t v(const void *i, const fmrt_plugin_call *call, float *o, char *e, size_t n) {{\n\
               (void)i;\n\
               if (call->x[0] < -100.0f) {{ snprintf(e, n, \"x[0] = %g is out of range\", (double)call->x[0]); return 3; }}\n\
               for (size_t k = 0; k < call->batch * call->state_len; k++)\n\
                 o[k] = call->x[k] + (float)call->state_len + 1000.0f * (float)call->state_rank;\n\
               return 0; }}\n\
             U static int32_t j(const void *i, const fmrt_plugin_call *call, const float *w, float *o, char *e, size_t n) {{\n\
               (void)i; (void)e; (void)n; for (size_t k = 0; k < call->batch * call->state_len; k++) {{ o[k] = 2.0f * w[k]; }}\n\
               return 0; }}\n\
             U static int32_t sj(const void *i, const fmrt_plugin_call *call, size_t p, const float *w, float *u, float *o, char *e, size_t n) {{\n\
               size_t len = call->batch * call->state_len; if (v(i, call, u, e, n)) return 1;\n\
               for (size_t k = 0; k < p * len; k++) {{ o[k] = 2.0f * w[k]; }}\n\
               return 0; }}\n\
             U static int32_t dv(const void *i, const fmrt_plugin_call *call, double *o, char *e, size_t n) {{\n\
               (void)i; (void)e; (void)n; for (size_t b = 0; b < call->batch; b++) {{ o[b] = 2.0 * (double)call->state_len; }}\n\
               return 0; }}\n\
             {table_type} = {{ {open}{abi}, (uint32_t)({size}), (uint64_t)({caps}), \"test-v2\", c, d, {state_shape}, v, {jvp}, {stacked}, {divergence}{close} }};\n\
             const fmrt_plugin_vtable_v2 *fmrt_plugin_v2(void) {{ {entry} }}\n",
            rank = t.rank,
            abi = t.abi,
            caps = t.caps,
            state_shape = t.state_shape,
            jvp = t.jvp,
            stacked = t.stacked,
            divergence = t.divergence,
        );
        build_shared(name, &source)
    }

    /// The `PluginLoad` reason of opening `lib`.
    fn load_error(lib: &Path) -> String {
        // SAFETY: the test plugins follow the contract (their tables aside).
        match unsafe { PluginField::open(lib, None) } {
            Ok(_) => panic!("{} loaded", lib.display()),
            Err(e @ Error::PluginLoad { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Plugin);
                e.to_string()
            }
            Err(e) => panic!("not a load error: {e}"),
        }
    }

    #[test]
    fn plugin_v2_tables_are_checked_at_load() {
        let small = v2_plugin(
            "v2_small",
            V2Table {
                size: "16",
                ..V2Table::default()
            },
        );
        let msg = load_error(&small);
        assert!(
            msg.contains("size 16 bytes")
                && msg.contains(&format!("{PLUGIN_V2_MIN_TABLE_SIZE} bytes")),
            "{msg}"
        );
        let cases: [(&str, V2Table, &str); 7] = [
            (
                "v2_jvp_without_callback",
                V2Table {
                    caps: "FMRT_PLUGIN_CAP_JVP".into(),
                    ..V2Table::default()
                },
                "sets FMRT_PLUGIN_CAP_JVP but its `jvp` is NULL",
            ),
            (
                "v2_stacked_without_callback",
                V2Table {
                    caps: "FMRT_PLUGIN_CAP_STACKED_JVP".into(),
                    ..V2Table::default()
                },
                "sets FMRT_PLUGIN_CAP_STACKED_JVP but its `velocity_and_jvps` is NULL",
            ),
            (
                "v2_divergence_without_bit",
                V2Table {
                    divergence: "dv",
                    ..V2Table::default()
                },
                "gives `divergence` without setting FMRT_PLUGIN_CAP_DIVERGENCE",
            ),
            (
                "v2_dynamic_with_shape",
                V2Table {
                    caps: "FMRT_PLUGIN_CAP_DYNAMIC_SHAPE".into(),
                    ..V2Table::default()
                },
                "sets FMRT_PLUGIN_CAP_DYNAMIC_SHAPE but gives `state_shape`",
            ),
            (
                "v2_no_shape",
                V2Table {
                    state_shape: "0",
                    ..V2Table::default()
                },
                "has no `state_shape`",
            ),
            (
                "v2_abi3",
                V2Table {
                    abi: "3u",
                    ..V2Table::default()
                },
                "`fmrt_plugin_v2` reports ABI version 3",
            ),
            (
                "v2_lying_rank",
                V2Table {
                    rank: 100,
                    ..V2Table::default()
                },
                "state_shape returned rank 100",
            ),
        ];
        for (name, table, needle) in cases {
            let msg = load_error(&v2_plugin(name, table));
            assert!(msg.contains(needle), "{name}: {msg}");
        }
    }

    #[test]
    fn plugin_v2_unknown_bits_and_newer_tables_are_ignored() {
        // A plugin built against a newer header: a larger table and a
        // capability bit this fmrt does not know. Both are ignored.
        let lib = v2_plugin(
            "v2_newer",
            V2Table {
                size: "sizeof(TABLE)",
                caps: "FMRT_PLUGIN_CAP_JVP | ((uint64_t)1 << 40)".into(),
                jvp: "j",
                newer: true,
                ..V2Table::default()
            },
        );
        // SAFETY: the test plugin follows the contract.
        let p = unsafe { PluginField::open(&lib, None) }.unwrap();
        assert_eq!(p.capabilities(), Capabilities::JVP);
        assert_eq!(
            p.derivatives(),
            fmrt::field::Derivatives {
                jvp: true,
                ..fmrt::field::Derivatives::NONE
            }
        );
        let x = ArrayD::from_shape_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let mut out = ArrayD::<f32>::zeros(x.raw_dim());
        p.velocity(x.view(), &[0.5], Extras::none(), out.view_mut())
            .unwrap();
        assert_eq!(out.as_slice().unwrap(), &[1003.0, 1004.0, 1005.0, 1006.0]);
        p.jvp(x.view(), &[0.5], Extras::none(), x.view(), out.view_mut())
            .unwrap();
        assert_eq!(out.as_slice().unwrap(), &[2.0, 4.0, 6.0, 8.0]);
        // What it does not offer is Unsupported, not a call through NULL.
        let err = p
            .divergence(x.view(), &[0.5], Extras::none(), &mut [0.0; 2])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        // Extras without FMRT_PLUGIN_CAP_EXTRAS: refused naming the input.
        let extras = Extras::new().with("label", ExtraTensor::labels(&[0, 1]));
        let err = p
            .velocity(x.view(), &[0.5], &extras, out.view_mut())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Extra { input, .. } if input == "label"),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        // A failing callback is a field error carrying the plugin's message,
        // in C as FMRT_STATUS_FIELD.
        let lib_c = c(lib.to_str().unwrap());
        let mut f = null_mut();
        let mut out = [0f32; 4];
        // SAFETY: valid pointers; the library is ours.
        unsafe {
            assert_ok(fmrt_field_plugin(lib_c.as_ptr(), null(), &mut f));
            let s = fmrt_field_velocity(
                f,
                [-200f32, 0.0, 0.0, 0.0].as_ptr(),
                4,
                2,
                [0.5].as_ptr(),
                1,
                null(),
                out.as_mut_ptr(),
                4,
            );
            assert_fails(
                s,
                FieldStatus,
                "velocity failed: x[0] = -200 is out of range",
            );
            fmrt_field_free(f);
        }
    }

    #[test]
    fn plugin_v2_dynamic_shape_serves_two_shapes() {
        let lib = v2_plugin(
            "v2_dynamic",
            V2Table {
                caps: "FMRT_PLUGIN_CAP_DYNAMIC_SHAPE | FMRT_PLUGIN_CAP_DIVERGENCE \
                       | FMRT_PLUGIN_CAP_STACKED_JVP"
                    .into(),
                state_shape: "0",
                stacked: "sj",
                divergence: "dv",
                ..V2Table::default()
            },
        );
        // SAFETY: the test plugin follows the contract.
        let p = unsafe { PluginField::open(&lib, None) }.unwrap();
        assert_eq!(p.state_shape(), None);
        for (shape, len, rank) in [
            (vec![3usize, 4], 4.0f32, 1.0f32),
            (vec![2, 2, 5], 10.0, 2.0),
        ] {
            let n: usize = shape.iter().product();
            let x =
                ArrayD::from_shape_vec(shape.clone(), (0..n).map(|i| i as f32).collect()).unwrap();
            let mut out = ArrayD::<f32>::zeros(x.raw_dim());
            p.velocity(x.view(), &[0.5], Extras::none(), out.view_mut())
                .unwrap();
            for (o, xi) in out.iter().zip(x.iter()) {
                assert_eq!(*o, xi + len + 1000.0 * rank, "{shape:?}");
            }
            let mut div = vec![0.0; shape[0]];
            p.divergence(x.view(), &[0.5], Extras::none(), &mut div)
                .unwrap();
            assert!(
                div.iter().all(|&d| d == 2.0 * f64::from(len)),
                "{shape:?}: {div:?}"
            );
            // A stacked call of two directions at this shape.
            let mut stacked_shape = vec![2];
            stacked_shape.extend(&shape);
            let v = ArrayD::<f32>::ones(stacked_shape.clone());
            let mut products = ArrayD::<f32>::zeros(stacked_shape);
            p.velocity_and_jvps(
                x.view(),
                &[0.5],
                &Extras::new(),
                v.view(),
                out.view_mut(),
                products.view_mut(),
            )
            .unwrap();
            assert!(products.iter().all(|&p| p == 2.0));
        }
        // No per-sample axes, or more than the largest rank: refused by fmrt.
        for shape in [vec![4usize], vec![1; 18]] {
            let x = ArrayD::<f32>::zeros(shape.clone());
            let mut out = ArrayD::<f32>::zeros(shape.clone());
            let err = p
                .velocity(x.view(), &[0.5], Extras::none(), out.view_mut())
                .unwrap_err();
            assert!(
                matches!(&err, Error::Shape { tensor, .. } if tensor == "x"),
                "{shape:?}: {err}"
            );
        }
        // C's unshaped call cannot serve a plugin whose shape comes with
        // each call, and says so.
        let lib_c = c(lib.to_str().unwrap());
        let mut f = null_mut();
        let mut out = [0f32; 4];
        // SAFETY: valid pointers; the library is ours.
        unsafe {
            assert_ok(fmrt_field_plugin(lib_c.as_ptr(), null(), &mut f));
            let s = fmrt_field_velocity(
                f,
                [0f32; 4].as_ptr(),
                4,
                2,
                [0.5].as_ptr(),
                1,
                null(),
                out.as_mut_ptr(),
                4,
            );
            assert_fails(s, InvalidArgument, "comes with each call");
            fmrt_field_free(f);
        }
    }

    #[test]
    fn plugin_dtype_codes_and_layout_agree_with_the_headers() {
        for (dtype, c_dtype) in ExtraDtype::ALL.into_iter().zip([
            fmrt_dtype::Float32,
            fmrt_dtype::Float16,
            fmrt_dtype::Int64,
            fmrt_dtype::Int32,
            fmrt_dtype::Bool,
        ]) {
            assert_eq!(dtype_code(dtype), c_dtype as u32, "{dtype}");
        }
        // The C side: fmrt_plugin.h's constants against fmrt.h's enum at
        // compile time, and the struct sizes fmrt assumes.
        let src = scratch().join("plugin_layout.c");
        std::fs::write(
            &src,
            "#include \"fmrt.h\"\n#include \"fmrt_plugin.h\"\n#include <stdio.h>\n\
             _Static_assert(FMRT_PLUGIN_DTYPE_FLOAT32 == FMRT_DTYPE_FLOAT32, \"float32\");\n\
             _Static_assert(FMRT_PLUGIN_DTYPE_FLOAT16 == FMRT_DTYPE_FLOAT16, \"float16\");\n\
             _Static_assert(FMRT_PLUGIN_DTYPE_INT64 == FMRT_DTYPE_INT64, \"int64\");\n\
             _Static_assert(FMRT_PLUGIN_DTYPE_INT32 == FMRT_DTYPE_INT32, \"int32\");\n\
             _Static_assert(FMRT_PLUGIN_DTYPE_BOOL == FMRT_DTYPE_BOOL, \"bool\");\n\
             _Static_assert(FMRT_PLUGIN_V2_MIN_SIZE == sizeof(fmrt_plugin_vtable_v2), \"min\");\n\
             int main(void) {\n\
             \x20 printf(\"%zu %zu %zu\\n\", (size_t)FMRT_PLUGIN_V2_MIN_SIZE,\n\
             \x20        sizeof(fmrt_plugin_call), sizeof(fmrt_plugin_extra));\n\
             \x20 return 0;\n}\n",
        )
        .unwrap();
        let exe = build_program("cc", "c11", &[src], "plugin_layout");
        assert_eq!(
            run(&exe, &[]),
            format!("{PLUGIN_V2_MIN_TABLE_SIZE} {PLUGIN_V2_CALL_SIZE} {PLUGIN_V2_EXTRA_SIZE}\n")
        );
    }
}

mod solver {
    use super::*;

    #[test]
    fn fixed_checks_method_and_steps() {
        let mut s = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_solver_fixed(null(), 10, &mut s),
                NullParameter,
                "`method`",
            );
            assert_fails(
                fmrt_solver_fixed(c"rk4".as_ptr(), 10, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_fails(
                fmrt_solver_fixed(c"rk5".as_ptr(), 10, &mut s),
                InvalidArgument,
                "unknown solver method `rk5`",
            );
            assert_fails(
                fmrt_solver_fixed(c"rk4".as_ptr(), 0, &mut s),
                InvalidArgument,
                "`steps`",
            );
            assert_ok(fmrt_solver_fixed(c"HEUN".as_ptr(), 3, &mut s));
            assert_eq!(
                (*s).config(),
                &SolverConfig::fixed(Method::Heun, Steps::Count(3))
            );
            fmrt_solver_free(s);
        }
    }

    #[test]
    fn grid_must_increase_to_one() {
        let mut s = null_mut();
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_solver_grid(c"euler".as_ptr(), null(), 3, &mut s),
                NullParameter,
                "`grid`",
            );
            assert_fails(
                fmrt_solver_grid(c"euler".as_ptr(), [0.0, 0.5].as_ptr(), 2, &mut s),
                InvalidArgument,
                "must end at 1",
            );
            assert_fails(
                fmrt_solver_grid(c"euler".as_ptr(), [0.0, 0.6, 0.5, 1.0].as_ptr(), 4, &mut s),
                InvalidArgument,
                "strictly increasing",
            );
            assert_fails(
                fmrt_solver_grid(c"euler".as_ptr(), [0.0, 1.0].as_ptr(), 2, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_solver_grid(
                c"euler".as_ptr(),
                [0.0, 0.25, 1.0].as_ptr(),
                3,
                &mut s,
            ));
            assert_eq!(
                (*s).config().steps(),
                Some(&Steps::Grid(vec![0.0, 0.25, 1.0]))
            );
            fmrt_solver_free(s);
        }
    }

    #[test]
    fn solvers_from_named_and_fm_time_grids() {
        let mut s = null_mut();
        let mu = c"mu";
        let params = [fmrt_param {
            name: mu.as_ptr(),
            value: 2.0,
        }];
        // SAFETY: valid strings and lengths; handles freed once.
        unsafe {
            assert_ok(fmrt_solver_time_grid(
                c"euler".as_ptr(),
                c"shift".as_ptr(),
                params.as_ptr(),
                1,
                28,
                &mut s,
            ));
            let want = fmrt::grid::TimeGrid::builtin("shift", &[("mu".into(), 2.0)])
                .unwrap()
                .points(28)
                .unwrap();
            assert_eq!((*s).config().steps(), Some(&Steps::Grid(want)));
            fmrt_solver_free(s);

            // diffusers' flow-mode solvers and grid, by name: the list follows
            // the method (UniPC's for unipc); adaptive steps are refused.
            let shift = [fmrt_param {
                name: c"shift".as_ptr(),
                value: 3.0,
            }];
            for (name, method) in [(c"unipc", Method::Unipc), (c"DPMPP2M", Method::Dpmpp2m)] {
                assert_ok(fmrt_solver_time_grid(
                    name.as_ptr(),
                    c"diffusers-flow".as_ptr(),
                    shift.as_ptr(),
                    1,
                    20,
                    &mut s,
                ));
                let want = fmrt::grid::DiffusersFlowGrid::with_params(&[("shift".into(), 3.0)])
                    .unwrap()
                    .steps(method, 20)
                    .unwrap();
                assert_eq!((*s).config().method, method);
                assert_eq!((*s).config().steps(), Some(&want));
                fmrt_solver_free(s);
                assert_fails(
                    fmrt_solver_adaptive_config(name.as_ptr(), null(), &mut s),
                    fmrt_status::InvalidArgument,
                    "no embedded error estimate",
                );
            }
            let bad = [fmrt_param {
                name: c"shift".as_ptr(),
                value: -1.0,
            }];
            assert_fails(
                fmrt_solver_time_grid(
                    c"unipc".as_ptr(),
                    c"diffusers-flow".as_ptr(),
                    bad.as_ptr(),
                    1,
                    20,
                    &mut s,
                ),
                fmrt_status::InvalidArgument,
                "shift",
            );

            let src = c"let s = 1 - u\ngrid = 1 - 2 * s / (1 + s)\n";
            assert_ok(fmrt_solver_time_grid_source(
                c"rk4".as_ptr(),
                src.as_ptr(),
                null(),
                null(),
                0,
                4,
                &mut s,
            ));
            let Some(Steps::Grid(points)) = (*s).config().steps() else {
                panic!("not a grid")
            };
            assert_eq!(points.len(), 5);
            fmrt_solver_free(s);

            assert_fails(
                fmrt_solver_time_grid_source(
                    c"euler".as_ptr(),
                    c"# wrong end\ngrid = 2 * u\n".as_ptr(),
                    c"g.fm".as_ptr(),
                    null(),
                    0,
                    4,
                    &mut s,
                ),
                fmrt_status::Scheduler,
                "g.fm:2:1",
            );
            assert_fails(
                fmrt_solver_time_grid(c"euler".as_ptr(), c"shfit".as_ptr(), null(), 0, 4, &mut s),
                fmrt_status::Scheduler,
                "did you mean `shift`",
            );
            assert_fails(
                fmrt_solver_time_grid(c"euler".as_ptr(), null(), null(), 0, 4, &mut s),
                NullParameter,
                "`grid`",
            );
            assert_fails(
                fmrt_solver_time_grid(c"euler".as_ptr(), c"uniform".as_ptr(), null(), 0, 0, &mut s),
                InvalidArgument,
                "at least 1 step",
            );
        }
    }

    #[test]
    fn adaptive_options_default_and_validation() {
        let mut o = fmrt_adaptive_options {
            rtol: 0.0,
            atol: 0.0,
            safety: 0.0,
            min_factor: 0.0,
            max_factor: 0.0,
            max_steps: 0,
            initial_step: 1.0,
        };
        let mut s = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_adaptive_options_default(null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_adaptive_options_default(&mut o));
            assert_eq!(
                (o.rtol, o.atol, o.max_steps, o.initial_step),
                (1e-5, 1e-5, 100_000, 0.0)
            );
            assert_fails(
                fmrt_solver_adaptive(null(), &o, &mut s),
                NullParameter,
                "`method`",
            );
            assert_fails(
                fmrt_solver_adaptive(c"rk4".as_ptr(), &o, &mut s),
                InvalidArgument,
                "no embedded error estimate",
            );
            assert_fails(
                fmrt_solver_adaptive(c"dopri5".as_ptr(), &o, null_mut()),
                NullParameter,
                "`out`",
            );
            let bad = fmrt_adaptive_options { atol: -1.0, ..o };
            assert_fails(
                fmrt_solver_adaptive(c"dopri5".as_ptr(), &bad, &mut s),
                InvalidArgument,
                "atol must be finite and positive, got -1",
            );
            let tight = fmrt_adaptive_options {
                rtol: 1e-8,
                atol: 1e-9,
                max_steps: 7,
                ..o
            };
            assert_ok(fmrt_solver_adaptive(c"tsit5".as_ptr(), &tight, &mut s));
            let a = (*s).config().adaptive_options().cloned().unwrap();
            assert_eq!(
                (a.rtol, a.atol, a.max_steps, a.initial_step),
                (1e-8, 1e-9, 7, None)
            );
            fmrt_solver_free(s);
            assert_ok(fmrt_solver_adaptive(c"dopri5".as_ptr(), null(), &mut s));
            // Every error norm and controller is reachable from C; fixed
            // steps have neither, and say so.
            let mut batch = null_mut();
            assert_ok(fmrt_solver_with_error_norm(
                s,
                c"Batch".as_ptr(),
                &mut batch,
            ));
            let mut i_control = null_mut();
            assert_ok(fmrt_solver_with_controller(
                batch,
                c"i".as_ptr(),
                &mut i_control,
            ));
            let o = (*i_control).config().adaptive_options().cloned().unwrap();
            assert_eq!(o.norm, fmrt::solver::ErrorNorm::Batch);
            assert_eq!(o.controller, fmrt::solver::Controller::I);
            assert_eq!(
                (*s).config().adaptive_options().unwrap().norm,
                fmrt::solver::ErrorNorm::Independent,
                "the original handle changed"
            );
            let mut refused = null_mut();
            assert_fails(
                fmrt_solver_with_error_norm(s, c"rms".as_ptr(), &mut refused),
                InvalidArgument,
                "unknown error norm `rms`",
            );
            let mut fixed = null_mut();
            assert_ok(fmrt_solver_fixed(c"rk4".as_ptr(), 10, &mut fixed));
            assert_fails(
                fmrt_solver_with_controller(fixed, c"pi".as_ptr(), &mut refused),
                InvalidArgument,
                "applies to adaptive steps",
            );
            assert!(refused.is_null());
            fmrt_solver_free(fixed);
            fmrt_solver_free(i_control);
            fmrt_solver_free(batch);
            fmrt_solver_free(s);
        }
    }
}

mod sampler {
    use super::*;

    #[test]
    fn new_checks_handles() {
        let h = Handles::new();
        let mut s = null_mut();
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_sampler_new(null(), h.solver, &mut s),
                NullParameter,
                "`field`",
            );
            assert_fails(
                fmrt_sampler_new(h.field, null(), &mut s),
                NullParameter,
                "`solver`",
            );
            assert_fails(
                fmrt_sampler_new(h.field, h.solver, null_mut()),
                NullParameter,
                "`out`",
            );
        }
        assert!(s.is_null());
    }

    /// A stochastic sampler from C samples like `Sampler::with_sde` bit for
    /// bit, G = 0 is the Euler ODE, and a bad scale or method is refused.
    #[test]
    fn stochastic_samplers_match_rust_and_reduce_to_the_ode_at_zero() {
        use fmrt::stochastic::Stochastic;
        let h = Handles::new();
        let mut euler = null_mut();
        let sample = |sampler: *const fmrt_sampler| {
            let mut x = [0f32; 16 * 2];
            // SAFETY: a live sampler; buffers with the stated lengths.
            let status = unsafe {
                fmrt_sampler_sample(
                    sampler,
                    16,
                    9,
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    x.len(),
                    null_mut(),
                    0,
                    null_mut(),
                )
            };
            (status, x)
        };
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_ok(fmrt_solver_fixed(c"euler".as_ptr(), 50, &mut euler));
            let (mut ode, mut sde0, mut sde) = (null_mut(), null_mut(), null_mut());
            assert_ok(fmrt_sampler_new(h.field, euler, &mut ode));
            assert_ok(fmrt_sampler_new_stochastic(
                h.field,
                euler,
                h.scheduler,
                0.0,
                &mut sde0,
            ));
            assert_ok(fmrt_sampler_new_stochastic(
                h.field,
                euler,
                h.scheduler,
                0.5,
                &mut sde,
            ));
            let (status, x_ode) = sample(ode);
            assert_ok(status);
            let (status, x_sde0) = sample(sde0);
            assert_ok(status);
            assert_eq!(x_ode, x_sde0, "G = 0 is not the ODE");
            let (status, x_sde) = sample(sde);
            assert_ok(status);
            assert_ne!(x_ode, x_sde, "G = 0.5 added no noise");

            let ot: Arc<dyn Schedule> = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
            let ring = GaussianMixture::ring(8, 4.0, 0.3, ot.clone()).unwrap();
            let rust = Sampler::new(
                Arc::new(ring),
                SolverConfig::fixed(Method::Euler, Steps::Count(50)),
            )
            .with_sde(Stochastic::new(ot, 0.5).unwrap())
            .sample(16, 9)
            .unwrap()
            .x;
            assert_eq!(x_sde.to_vec(), rust.iter().copied().collect::<Vec<_>>());

            let mut refused = null_mut();
            assert_fails(
                fmrt_sampler_new_stochastic(h.field, euler, h.scheduler, -1.0, &mut refused),
                InvalidArgument,
                "noise scale",
            );
            assert_fails(
                fmrt_sampler_new_stochastic(h.field, euler, null(), 0.5, &mut refused),
                NullParameter,
                "`schedule`",
            );
            assert!(refused.is_null());
            let mut rk4_sde = null_mut();
            assert_ok(fmrt_sampler_new_stochastic(
                h.field,
                h.solver,
                h.scheduler,
                0.5,
                &mut rk4_sde,
            ));
            let (status, _) = sample(rk4_sde);
            assert_ne!(status, fmrt_status::Ok, "an SDE on RK4 steps was accepted");
            // Integrating runs the ODE: a stochastic sampler refuses it rather
            // than silently dropping its noise.
            let x0 = [0.5f32; 2 * 2];
            let mut x = [0f32; 2 * 2];
            assert_fails(
                fmrt_sampler_integrate(
                    sde,
                    x0.as_ptr(),
                    x0.len(),
                    2,
                    0.0,
                    1.0,
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    x.len(),
                    null_mut(),
                    0,
                    null_mut(),
                ),
                InvalidArgument,
                "stochastic",
            );
            assert_ok(fmrt_sampler_integrate(
                sde0,
                x0.as_ptr(),
                x0.len(),
                2,
                0.0,
                1.0,
                null(),
                0,
                null(),
                x.as_mut_ptr(),
                x.len(),
                null_mut(),
                0,
                null_mut(),
            ));
            fmrt_sampler_free(rk4_sde);
            fmrt_sampler_free(sde);
            fmrt_sampler_free(sde0);
            fmrt_sampler_free(ode);
            fmrt_solver_free(euler);
        }
    }

    #[test]
    fn draw_noise_is_the_seeded_normal_stream() {
        let h = Handles::new();
        let mut noise = [0f32; 6];
        let mut direct = [0f32; 6];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_sampler_draw_noise(null(), 3, 5, noise.as_mut_ptr(), 6),
                NullParameter,
                "`sampler`",
            );
            assert_fails(
                fmrt_sampler_draw_noise(h.sampler, 3, 5, noise.as_mut_ptr(), 5),
                BufferTooSmall,
                "`out` holds 5",
            );
            assert_fails(
                fmrt_sampler_draw_noise(h.sampler, 3, 5, null_mut(), 6),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_sampler_draw_noise(
                h.sampler,
                3,
                5,
                noise.as_mut_ptr(),
                6,
            ));
            // Sample 0 is the plain seeded stream.
            assert_ok(fmrt_random_normal(5, direct.as_mut_ptr(), 2));
            // Rows 1..3 on their own are rows 1..3 of the batch.
            assert_ok(fmrt_sampler_draw_noise_rows(
                h.sampler,
                1,
                2,
                5,
                direct[2..].as_mut_ptr(),
                4,
            ));
        }
        assert_eq!(noise, direct);
        let mut rng = SeededRng::for_sample(5, 2, Lane::Source);
        assert_eq!(noise[4], rng.normal() as f32);
    }

    #[test]
    fn sample_checks_buffers_before_working_and_matches_rust() {
        let h = Handles::new();
        let mut x = [9f32; 8];
        let mut traj = [9f32; 16];
        let mut stats = fmrt_stats::default();
        // On the 10-step grid, so saving splits no step and changes nothing.
        let times = [0.2, 0.5];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_sampler_sample(
                    null(),
                    4,
                    1,
                    times.as_ptr(),
                    2,
                    null(),
                    x.as_mut_ptr(),
                    8,
                    traj.as_mut_ptr(),
                    16,
                    &mut stats,
                ),
                NullParameter,
                "`sampler`",
            );
            assert_fails(
                fmrt_sampler_sample(
                    h.sampler,
                    4,
                    1,
                    null(),
                    2,
                    null(),
                    x.as_mut_ptr(),
                    8,
                    traj.as_mut_ptr(),
                    16,
                    &mut stats,
                ),
                NullParameter,
                "`times`",
            );
            assert_fails(
                fmrt_sampler_sample(
                    h.sampler,
                    4,
                    1,
                    times.as_ptr(),
                    2,
                    null(),
                    x.as_mut_ptr(),
                    7,
                    traj.as_mut_ptr(),
                    16,
                    &mut stats,
                ),
                BufferTooSmall,
                "`out_x` holds 7",
            );
            assert_fails(
                fmrt_sampler_sample(
                    h.sampler,
                    4,
                    1,
                    times.as_ptr(),
                    2,
                    null(),
                    x.as_mut_ptr(),
                    8,
                    traj.as_mut_ptr(),
                    15,
                    &mut stats,
                ),
                BufferTooSmall,
                "`out_trajectory` holds 15",
            );
            assert_fails(
                fmrt_sampler_sample(
                    h.sampler,
                    4,
                    1,
                    times.as_ptr(),
                    2,
                    null(),
                    null_mut(),
                    8,
                    traj.as_mut_ptr(),
                    16,
                    &mut stats,
                ),
                NullParameter,
                "`out_x`",
            );
            assert_fails(
                fmrt_sampler_sample(
                    h.sampler,
                    4,
                    1,
                    times.as_ptr(),
                    2,
                    null(),
                    x.as_mut_ptr(),
                    8,
                    null_mut(),
                    16,
                    &mut stats,
                ),
                NullParameter,
                "`out_trajectory`",
            );
            assert_fails(
                fmrt_sampler_sample(
                    h.sampler,
                    4,
                    1,
                    [1.5].as_ptr(),
                    1,
                    null(),
                    x.as_mut_ptr(),
                    8,
                    traj.as_mut_ptr(),
                    16,
                    &mut stats,
                ),
                InvalidArgument,
                "1.5",
            );
            assert!(
                x.iter().chain(&traj).all(|&v| v == 9.0),
                "nothing written on failure"
            );
            assert_ok(fmrt_sampler_sample(
                h.sampler,
                4,
                1,
                times.as_ptr(),
                2,
                null(),
                x.as_mut_ptr(),
                8,
                traj.as_mut_ptr(),
                16,
                &mut stats,
            ));
            // No trajectory, no stats.
            let mut y = [0f32; 8];
            assert_ok(fmrt_sampler_sample(
                h.sampler,
                4,
                1,
                null(),
                0,
                null(),
                y.as_mut_ptr(),
                8,
                null_mut(),
                0,
                null_mut(),
            ));
            assert_eq!(x, y);
        }
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let g = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap());
        let r = Sampler::new(g, SolverConfig::fixed(Method::Rk4, Steps::Count(10)))
            .sample_at(4, 1, &times)
            .unwrap();
        assert_eq!(&x[..], r.x.as_slice().unwrap());
        assert_eq!(&traj[..], r.trajectory.as_slice().unwrap());
        assert_eq!(
            stats,
            fmrt_stats {
                nfe: 40,
                accepted: 10,
                rejected: 0
            }
        );
    }

    #[test]
    fn integrate_from_caller_noise_reproduces_sample() {
        let h = Handles::new();
        let mut x0 = [0f32; 8];
        let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
        // SAFETY: lengths as stated.
        unsafe {
            assert_ok(fmrt_sampler_draw_noise(
                h.sampler,
                4,
                11,
                x0.as_mut_ptr(),
                8,
            ));
            assert_fails(
                fmrt_sampler_integrate(
                    null(),
                    x0.as_ptr(),
                    8,
                    4,
                    0.0,
                    1.0,
                    null(),
                    0,
                    null(),
                    a.as_mut_ptr(),
                    8,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                NullParameter,
                "`sampler`",
            );
            assert_fails(
                fmrt_sampler_integrate(
                    h.sampler,
                    null(),
                    8,
                    4,
                    0.0,
                    1.0,
                    null(),
                    0,
                    null(),
                    a.as_mut_ptr(),
                    8,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                NullParameter,
                "`x0`",
            );
            assert_fails(
                fmrt_sampler_integrate(
                    h.sampler,
                    x0.as_ptr(),
                    6,
                    4,
                    0.0,
                    1.0,
                    null(),
                    0,
                    null(),
                    a.as_mut_ptr(),
                    8,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                ShapeMismatch,
                "x0 holds 6 floats",
            );
            assert_fails(
                fmrt_sampler_integrate(
                    h.sampler,
                    x0.as_ptr(),
                    8,
                    4,
                    0.0,
                    1.0,
                    null(),
                    0,
                    null(),
                    a.as_mut_ptr(),
                    4,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                BufferTooSmall,
                "`out_x`",
            );
            assert_fails(
                fmrt_sampler_integrate(
                    h.sampler,
                    x0.as_ptr(),
                    8,
                    4,
                    0.0,
                    f64::NAN,
                    null(),
                    0,
                    null(),
                    a.as_mut_ptr(),
                    8,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                InvalidArgument,
                "finite",
            );
            assert_ok(fmrt_sampler_integrate(
                h.sampler,
                x0.as_ptr(),
                8,
                4,
                0.0,
                1.0,
                null(),
                0,
                null(),
                a.as_mut_ptr(),
                8,
                null_mut(),
                0,
                null_mut(),
            ));
            assert_ok(fmrt_sampler_sample(
                h.sampler,
                4,
                11,
                null(),
                0,
                null(),
                b.as_mut_ptr(),
                8,
                null_mut(),
                0,
                null_mut(),
            ));
        }
        assert_eq!(a, b);
    }

    #[test]
    fn integrate_per_sample_checks_spans_and_runs_each_interval() {
        let h = Handles::new();
        let x0 = [0.5f32, -0.5, 1.0, 0.0];
        let (starts, ends) = ([0.0, 0.0], [1.0, 0.0]);
        let mut x = [0f32; 4];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_sampler_integrate_per_sample(
                    h.sampler,
                    x0.as_ptr(),
                    4,
                    2,
                    null(),
                    ends.as_ptr(),
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    4,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                NullParameter,
                "`t_starts`",
            );
            assert_fails(
                fmrt_sampler_integrate_per_sample(
                    h.sampler,
                    x0.as_ptr(),
                    4,
                    2,
                    starts.as_ptr(),
                    null(),
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    4,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                NullParameter,
                "`t_ends`",
            );
            assert_fails(
                fmrt_sampler_integrate_per_sample(
                    null(),
                    x0.as_ptr(),
                    4,
                    2,
                    starts.as_ptr(),
                    ends.as_ptr(),
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    4,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                NullParameter,
                "`sampler`",
            );
            assert_fails(
                fmrt_sampler_integrate_per_sample(
                    h.sampler,
                    x0.as_ptr(),
                    4,
                    2,
                    starts.as_ptr(),
                    ends.as_ptr(),
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    3,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                BufferTooSmall,
                "`out_x`",
            );
            assert_ok(fmrt_sampler_integrate_per_sample(
                h.sampler,
                x0.as_ptr(),
                4,
                2,
                starts.as_ptr(),
                ends.as_ptr(),
                null(),
                0,
                null(),
                x.as_mut_ptr(),
                4,
                null_mut(),
                0,
                null_mut(),
            ));
        }
        assert_eq!(
            &x[2..],
            &x0[2..],
            "an empty interval leaves the sample where it is"
        );
        assert_ne!(&x[..2], &x0[..2], "the full interval moves the sample");
    }
}

mod training {
    use super::*;

    #[test]
    fn training_batch_checks_lengths_and_matches_the_path() {
        let h = Handles::new();
        let x1 = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x0 = [0.5f32; 6];
        let t = [0.2, 0.9];
        let (mut xt, mut target) = ([0f32; 6], [0f32; 6]);
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(
                fmrt_path_training_batch(
                    null(),
                    x1.as_ptr(),
                    x0.as_ptr(),
                    6,
                    2,
                    t.as_ptr(),
                    2,
                    xt.as_mut_ptr(),
                    6,
                    target.as_mut_ptr(),
                    6,
                ),
                NullParameter,
                "`scheduler`",
            );
            assert_fails(
                fmrt_path_training_batch(
                    h.scheduler,
                    null(),
                    x0.as_ptr(),
                    6,
                    2,
                    t.as_ptr(),
                    2,
                    xt.as_mut_ptr(),
                    6,
                    target.as_mut_ptr(),
                    6,
                ),
                NullParameter,
                "`x1`",
            );
            assert_fails(
                fmrt_path_training_batch(
                    h.scheduler,
                    x1.as_ptr(),
                    null(),
                    6,
                    2,
                    t.as_ptr(),
                    2,
                    xt.as_mut_ptr(),
                    6,
                    target.as_mut_ptr(),
                    6,
                ),
                NullParameter,
                "`x0`",
            );
            assert_fails(
                fmrt_path_training_batch(
                    h.scheduler,
                    x1.as_ptr(),
                    x0.as_ptr(),
                    6,
                    4,
                    t.as_ptr(),
                    2,
                    xt.as_mut_ptr(),
                    6,
                    target.as_mut_ptr(),
                    6,
                ),
                ShapeMismatch,
                "multiple of n = 4",
            );
            assert_fails(
                fmrt_path_training_batch(
                    h.scheduler,
                    x1.as_ptr(),
                    x0.as_ptr(),
                    6,
                    2,
                    t.as_ptr(),
                    2,
                    xt.as_mut_ptr(),
                    5,
                    target.as_mut_ptr(),
                    6,
                ),
                BufferTooSmall,
                "`out_x_t`",
            );
            assert_fails(
                fmrt_path_training_batch(
                    h.scheduler,
                    x1.as_ptr(),
                    x0.as_ptr(),
                    6,
                    2,
                    t.as_ptr(),
                    2,
                    xt.as_mut_ptr(),
                    6,
                    null_mut(),
                    6,
                ),
                NullParameter,
                "`out_target`",
            );
            assert_fails(
                fmrt_path_training_batch(
                    h.scheduler,
                    x1.as_ptr(),
                    x0.as_ptr(),
                    6,
                    2,
                    [0.1, 0.2, 0.3].as_ptr(),
                    3,
                    xt.as_mut_ptr(),
                    6,
                    target.as_mut_ptr(),
                    6,
                ),
                ShapeMismatch,
                "`t`",
            );
            assert_ok(fmrt_path_training_batch(
                h.scheduler,
                x1.as_ptr(),
                x0.as_ptr(),
                6,
                2,
                t.as_ptr(),
                2,
                xt.as_mut_ptr(),
                6,
                target.as_mut_ptr(),
                6,
            ));
        }
        // CondOT: x_t = t x1 + (1 − t) x0, target = x1 − x0.
        assert_eq!(xt[0], (0.2 * 1.0 + 0.8 * 0.5) as f32);
        assert_eq!(xt[5], (0.9 * 6.0 + 0.1 * 0.5f64) as f32);
        assert_eq!(target, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]);
    }

    #[test]
    fn random_fills_check_their_buffers() {
        let mut u = [0f64; 3];
        // SAFETY: lengths as stated.
        unsafe {
            assert_fails(fmrt_random_normal(1, null_mut(), 3), NullParameter, "`out`");
            assert_fails(
                fmrt_random_uniform(1, null_mut(), 3),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_random_uniform(1, u.as_mut_ptr(), 3));
            assert_ok(fmrt_random_normal(1, null_mut(), 0));
        }
        let mut rng = SeededRng::new(1);
        assert_eq!(u, [rng.uniform(), rng.uniform(), rng.uniform()]);
    }
}

mod onnx {
    use super::*;
    use fmrt::field::onnx::{ensure_runtime_for_development, OnnxField};
    use fmrt_c_api::onnx::*;

    fn fixture(name: &str) -> PathBuf {
        root().join("tests/fixtures").join(name)
    }

    /// The inputs of issue 12 that crashed the host through the C API (a
    /// panic, a stack overflow, an abort on allocation) are statuses with a
    /// message naming the input. Times that do not fit the samples and
    /// overflowing counts have their own tests (`field`, `likelihood`).
    #[test]
    fn the_inputs_that_crashed_fmrt_are_statuses() {
        let sources = [
            ("alpha = t +\r\nsigma = 1 - t\r\n".to_string(), "bad.fm:1:"),
            (
                format!("alpha = {}\nsigma = 1 - t\n", vec!["t"; 200_000].join("+")),
                "256 levels",
            ),
            (
                format!("alpha = {}\nsigma = 1 - t\n", vec!["t"; 200_000].join("*")),
                "256 levels",
            ),
            (
                format!(
                    "let a = {}\nalpha = {}\nsigma = 1 - t\n",
                    vec!["t"; 4000].join("+"),
                    vec!["a"; 20_000].join("+")
                ),
                "bad.fm:1:",
            ),
        ];
        for (source, needle) in &sources {
            let source = c(source);
            let mut out = null_mut();
            // SAFETY: NUL-terminated strings; `out` writable.
            let status = unsafe {
                fmrt_scheduler_from_source(source.as_ptr(), c"bad.fm".as_ptr(), null(), 0, &mut out)
            };
            assert_fails(status, fmrt_status::Scheduler, needle);
            assert!(out.is_null(), "nothing written on failure");
        }

        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = fixture("huge_state.onnx");
        let bytes = std::fs::read(&path).unwrap();
        let path = c(path.to_str().unwrap());
        let mut out = null_mut();
        // SAFETY: valid strings and buffers; `out` writable.
        unsafe {
            assert_fails(
                fmrt_field_onnx_file(path.as_ptr(), null(), &mut out),
                fmrt_status::Model,
                "268435456",
            );
            assert!(last_error().contains("`x`"), "{}", last_error());
            assert_fails(
                fmrt_field_onnx_bytes(bytes.as_ptr(), bytes.len(), null(), &mut out),
                fmrt_status::Model,
                "268435456",
            );
        }
        assert!(out.is_null(), "nothing written on failure");
    }

    #[test]
    fn onnx_fields_from_file_and_bytes_match_the_rust_loader() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = fixture("gmm_ot.onnx");
        let path_c = c(path.to_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        let mut options = fmrt_onnx_options {
            state_input: null(),
            time_input: null(),
            output: null(),
            state_shape: null(),
            state_rank: 0,
            max_batch: 7,
            sessions: 0,
            intra_threads: 1,
            ort_library: null(),
            provider: null(),
            provider_policy: null(),
        };
        let (mut from_file, mut from_bytes) = (null_mut(), null_mut());
        // SAFETY: valid or NULL pointers.
        unsafe {
            assert_fails(
                fmrt_onnx_options_default(null_mut()),
                NullParameter,
                "`out`",
            );
            let max_batch = options.max_batch;
            assert_ok(fmrt_onnx_options_default(&mut options));
            assert_eq!((options.max_batch, options.state_input), (0, null()));
            options.max_batch = max_batch;
            assert_fails(
                fmrt_field_onnx_file(null(), &options, &mut from_file),
                NullParameter,
                "`path`",
            );
            assert_fails(
                fmrt_field_onnx_file(path_c.as_ptr(), &options, null_mut()),
                NullParameter,
                "`out`",
            );
            let missing = c("/nonexistent/model.onnx");
            assert_fails(
                fmrt_field_onnx_file(missing.as_ptr(), null(), &mut from_file),
                fmrt_status::Io,
                "/nonexistent/model.onnx",
            );
            let truncated = c(fixture("truncated.onnx").to_str().unwrap());
            assert_fails(
                fmrt_field_onnx_file(truncated.as_ptr(), null(), &mut from_file),
                fmrt_status::Model,
                "truncated.onnx",
            );
            let wrong = fmrt_onnx_options {
                state_input: c"nope".as_ptr(),
                ..options
            };
            assert_fails(
                fmrt_field_onnx_file(path_c.as_ptr(), &wrong, &mut from_file),
                fmrt_status::Model,
                "nope",
            );
            assert_fails(
                fmrt_field_onnx_bytes(null(), 10, null(), &mut from_bytes),
                NullParameter,
                "`bytes`",
            );
            assert_ok(fmrt_field_onnx_file(
                path_c.as_ptr(),
                &options,
                &mut from_file,
            ));
            assert_ok(fmrt_field_onnx_bytes(
                bytes.as_ptr(),
                bytes.len(),
                null(),
                &mut from_bytes,
            ));
        }
        let rust = OnnxField::load_file(&path).unwrap();
        let dim: usize = rust.state_shape().unwrap().iter().product();
        let n = 20;
        let mut rng = SeededRng::new(9);
        let x: Vec<f32> = (0..n * dim).map(|_| 2.0 * rng.normal() as f32).collect();
        let t: Vec<f64> = (0..n).map(|i| 0.05 + 0.9 * i as f64 / n as f64).collect();
        let mut shape = vec![n];
        shape.extend_from_slice(rust.state_shape().unwrap());
        let xa = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), x.clone()).unwrap();
        let mut expect = ndarray::ArrayD::<f32>::zeros(xa.raw_dim());
        rust.velocity(
            xa.view(),
            &t,
            fmrt::field::Extras::none(),
            expect.view_mut(),
        )
        .unwrap();
        for (name, f) in [("file", from_file), ("bytes", from_bytes)] {
            let mut u = vec![0f32; n * dim];
            // SAFETY: lengths as stated.
            unsafe {
                assert_ok(fmrt_field_velocity(
                    f,
                    x.as_ptr(),
                    x.len(),
                    n,
                    t.as_ptr(),
                    n,
                    null(),
                    u.as_mut_ptr(),
                    u.len(),
                ));
                fmrt_field_free(f);
            }
            assert_eq!(&u[..], expect.as_slice().unwrap(), "{name}");
        }
    }

    #[test]
    fn provider_options_and_the_provider_query() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = c(fixture("gmm_ot.onnx").to_str().unwrap());
        let mut options = std::mem::MaybeUninit::<fmrt_onnx_options>::uninit();
        let h = Handles::new();
        // SAFETY: valid or NULL pointers; buffers with the stated lengths.
        unsafe {
            assert_ok(fmrt_onnx_options_default(options.as_mut_ptr()));
            let defaults = options.assume_init();
            assert_eq!(
                (defaults.provider, defaults.provider_policy),
                (null(), null())
            );
            let mut field = null_mut();
            for (provider, policy, needle) in [
                (c"gpu", null(), "unknown provider \"gpu\""),
                (c"cuda:x", null(), "cuda:x"),
                (c"cuda:-1", null(), "cuda:-1"),
                (
                    c"cpu",
                    c"maybe".as_ptr(),
                    "unknown provider policy \"maybe\"",
                ),
            ] {
                let o = fmrt_onnx_options {
                    provider: provider.as_ptr(),
                    provider_policy: policy,
                    ..defaults
                };
                assert_fails(
                    fmrt_field_onnx_file(path.as_ptr(), &o, &mut field),
                    InvalidArgument,
                    needle,
                );
                assert!(field.is_null(), "nothing is written on failure");
            }

            // CUDA preferred: it runs on CUDA where this build and machine
            // have it, and on the CPU otherwise; either way the query says which.
            let o = fmrt_onnx_options {
                provider: c"CUDA:0".as_ptr(),
                provider_policy: c"prefer".as_ptr(),
                ..defaults
            };
            assert_ok(fmrt_field_onnx_file(path.as_ptr(), &o, &mut field));
            let mut need = 0usize;
            assert_fails(
                fmrt_field_onnx_provider(field, null_mut(), 0, &mut need),
                BufferTooSmall,
                "`buf`",
            );
            let mut buf = vec![b'#' as c_char; need];
            assert_fails(
                fmrt_field_onnx_provider(field, buf.as_mut_ptr(), need - 1, null_mut()),
                BufferTooSmall,
                "`buf`",
            );
            assert!(buf.iter().all(|&b| b == b'#' as c_char), "nothing written");
            assert_ok(fmrt_field_onnx_provider(
                field,
                buf.as_mut_ptr(),
                need,
                null_mut(),
            ));
            let name = CStr::from_ptr(buf.as_ptr()).to_str().unwrap().to_string();
            assert_eq!(name.len() + 1, need);
            assert!(name == "CPU" || name == "CUDA:0", "provider {name}");
            // The Rust loader with the same request agrees.
            let rust = OnnxField::builder()
                .execution_provider(fmrt::field::onnx::ExecutionProvider::Cuda { device_id: 0 })
                .provider_policy(fmrt::field::onnx::ProviderPolicy::Prefer)
                .load_file(fixture("gmm_ot.onnx"))
                .unwrap();
            assert_eq!(name, rust.provider());
            // Required CUDA fails as a model error exactly when it fell back.
            let o = fmrt_onnx_options {
                provider: c"cuda".as_ptr(),
                ..defaults
            };
            let mut required = null_mut();
            let status = fmrt_field_onnx_file(path.as_ptr(), &o, &mut required);
            if name == "CPU" {
                assert_fails(status, fmrt_status::Model, "CUDA");
            } else {
                assert_ok(status);
            }
            fmrt_field_free(required);
            fmrt_field_free(field);

            // A CPU model says CPU; other fields have no provider.
            let o = fmrt_onnx_options {
                provider: c"cpu".as_ptr(),
                ..defaults
            };
            assert_ok(fmrt_field_onnx_file(path.as_ptr(), &o, &mut field));
            let mut small = [0 as c_char; 4];
            assert_ok(fmrt_field_onnx_provider(
                field,
                small.as_mut_ptr(),
                4,
                null_mut(),
            ));
            assert_eq!(CStr::from_ptr(small.as_ptr()).to_bytes(), b"CPU");
            fmrt_field_free(field);
            assert_fails(
                fmrt_field_onnx_provider(null(), small.as_mut_ptr(), 4, null_mut()),
                NullParameter,
                "`field`",
            );
            assert_fails(
                fmrt_field_onnx_provider(h.field, small.as_mut_ptr(), 4, null_mut()),
                fmrt_status::Unsupported,
                "not an ONNX model",
            );
        }
    }
}

mod likelihood {
    use super::*;
    use fmrt::likelihood::{Divergence, Likelihood, TimeSearch};
    use fmrt_c_api::likelihood::*;

    const X: [f32; 6] = [4.0, 0.1, -2.0, 2.5, 0.3, -0.2];

    /// Options with `h`'s RK4 solver and the given divergence mode.
    fn options(h: &Handles, divergence: &'static CStr) -> fmrt_likelihood_options {
        let mut o = std::mem::MaybeUninit::uninit();
        // SAFETY: `o` is writable.
        unsafe {
            assert_ok(fmrt_likelihood_options_default(o.as_mut_ptr()));
            let mut o: fmrt_likelihood_options = o.assume_init();
            o.solver = h.solver;
            o.divergence = divergence.as_ptr();
            o
        }
    }

    fn rust_ring() -> Likelihood {
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let field = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap());
        Likelihood::new(field, SolverConfig::fixed(Method::Rk4, Steps::Count(10)))
    }

    /// The result handle: log p as the buffer call writes it, the
    /// standard error of a Hutchinson estimate (refused for the exact
    /// divergence), and with partial results the finished samples of a run
    /// whose others hit `max_steps`, bit for bit, with each one's status
    /// and steps.
    #[test]
    fn a_likelihood_result_reports_standard_errors_and_per_sample_status() {
        use fmrt_c_api::likelihood_result::*;
        use fmrt_c_api::solver::fmrt_sample_status;
        let h = Handles::new();
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let ring = GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap();
        let n = 32;
        let x = ring.sample_data(n, 21);
        let x = x.as_slice().unwrap();
        // SAFETY: valid or NULL pointers; buffers with the stated lengths;
        // handles freed once.
        unsafe {
            let compute = |c: *const fmrt_likelihood_config| {
                let mut r = null_mut();
                let status = fmrt_log_likelihood_result(
                    h.field,
                    c,
                    x.as_ptr(),
                    x.len(),
                    n,
                    &1.0,
                    1,
                    null(),
                    &mut r,
                );
                (status, r)
            };
            let mut c = null_mut();
            assert_ok(fmrt_likelihood_config_new(&mut c));
            // The exact divergence: log p as the buffer call, no SE.
            let (status, r) = compute(c);
            assert_ok(status);
            let mut len = 0;
            assert_ok(fmrt_likelihood_result_len(r, &mut len));
            assert_eq!(len, n);
            let mut log_p = vec![0f64; n];
            assert_ok(fmrt_likelihood_result_log_p(r, log_p.as_mut_ptr(), n));
            let mut want = vec![0f64; n];
            assert_ok(fmrt_log_likelihood_config(
                h.field,
                c,
                x.as_ptr(),
                x.len(),
                n,
                &1.0,
                1,
                null(),
                want.as_mut_ptr(),
                n,
                null_mut(),
                0,
                null_mut(),
                0,
                null_mut(),
            ));
            assert_eq!(log_p, want);
            let mut se = vec![7f64; n];
            assert_fails(
                fmrt_likelihood_result_std_error(r, se.as_mut_ptr(), n),
                fmrt_status::Unsupported,
                "no standard error",
            );
            assert!(se.iter().all(|&v| v == 7.0), "nothing written");
            assert_fails(
                fmrt_likelihood_result_log_p(r, log_p.as_mut_ptr(), n - 1),
                BufferTooSmall,
                "out_log_p",
            );
            let mut statuses = vec![fmrt_sample_status::NonFinite; n];
            assert_ok(fmrt_likelihood_result_sample_status(
                r,
                statuses.as_mut_ptr(),
                n,
            ));
            assert!(statuses.iter().all(|&s| s == fmrt_sample_status::Done));
            let mut accepted = vec![0u64; n];
            let mut rejected = vec![0u64; n];
            assert_ok(fmrt_likelihood_result_sample_steps(
                r,
                accepted.as_mut_ptr(),
                n,
                rejected.as_mut_ptr(),
                n,
            ));
            let full_accepted = accepted.clone();
            let full_rejected = rejected.clone();
            let full_log_p = log_p.clone();
            fmrt_likelihood_result_free(r);

            // Hutchinson with 4 probes: a standard error per sample.
            assert_ok(fmrt_likelihood_config_set_divergence(
                c,
                c"hutchinson".as_ptr(),
            ));
            assert_ok(fmrt_likelihood_config_set_probes(c, 4));
            let (status, r) = compute(c);
            assert_ok(status);
            assert_ok(fmrt_likelihood_result_std_error(r, se.as_mut_ptr(), n));
            assert!(se.iter().all(|s| s.is_finite() && *s >= 0.0));
            fmrt_likelihood_result_free(r);
            assert_ok(fmrt_likelihood_config_set_divergence(c, c"exact".as_ptr()));

            // A budget between the fewest and the most attempts.
            let attempts: Vec<u64> = full_accepted
                .iter()
                .zip(&full_rejected)
                .map(|(a, r)| a + r)
                .collect();
            let mut sorted = attempts.clone();
            sorted.sort_unstable();
            let budget = sorted[n / 2];
            assert!(budget < sorted[n - 1], "samples take different steps");
            let mut a = null_mut();
            assert_ok(fmrt_adaptive_config_new(&mut a));
            assert_ok(fmrt_adaptive_config_set_max_steps(a, budget));
            let mut solver = null_mut();
            assert_ok(fmrt_solver_adaptive_config(
                c"dopri5".as_ptr(),
                a,
                &mut solver,
            ));
            assert_ok(fmrt_likelihood_config_set_solver(c, solver));
            // Without partial results the call fails.
            let (status, r) = compute(c);
            assert_eq!(status, fmrt_status::Solver);
            assert!(r.is_null());
            assert_eq!(
                fmrt_likelihood_config_set_partial(null_mut(), 1),
                NullParameter
            );
            assert_ok(fmrt_likelihood_config_set_partial(c, 1));
            let (status, r) = compute(c);
            assert_ok(status);
            assert_ok(fmrt_likelihood_result_log_p(r, log_p.as_mut_ptr(), n));
            assert_ok(fmrt_likelihood_result_sample_status(
                r,
                statuses.as_mut_ptr(),
                n,
            ));
            assert_ok(fmrt_likelihood_result_sample_steps(
                r,
                accepted.as_mut_ptr(),
                n,
                null_mut(),
                0,
            ));
            let mut stopped = 0;
            for (i, &tried) in attempts.iter().enumerate() {
                if tried <= budget {
                    assert_eq!(statuses[i], fmrt_sample_status::Done, "{i}");
                    assert_eq!(log_p[i].to_bits(), full_log_p[i].to_bits(), "{i}");
                    assert_eq!(accepted[i], full_accepted[i]);
                } else {
                    assert_eq!(statuses[i], fmrt_sample_status::MaxSteps, "{i}");
                    assert!(log_p[i].is_nan());
                    stopped += 1;
                }
            }
            assert!(stopped > 0);
            fmrt_likelihood_result_free(r);
            fmrt_likelihood_result_free(null_mut());
            fmrt_solver_free(solver);
            fmrt_adaptive_config_free(a);
            fmrt_likelihood_config_free(c);
        }
    }

    /// A sampler with an f32 state takes the f64 sampler's steps within f32
    /// rounding; with adaptive steps its calls are refused naming the
    /// precision; a number that is no precision is refused.
    #[test]
    fn an_f32_state_sampler_matches_f64_and_refuses_adaptive_steps() {
        use fmrt_c_api::sampler::fmrt_state_precision;
        let h = Handles::new();
        let n = 16;
        // SAFETY: valid or NULL pointers; buffers with the stated lengths;
        // handles freed once.
        unsafe {
            let mut rk4 = null_mut();
            assert_ok(fmrt_solver_fixed(c"rk4".as_ptr(), 12, &mut rk4));
            let mut wide = null_mut();
            assert_ok(fmrt_sampler_new(h.field, rk4, &mut wide));
            let mut narrow = null_mut();
            assert_fails(
                fmrt_sampler_with_state_precision(wide, 7, &mut narrow),
                InvalidArgument,
                "fmrt_state_precision",
            );
            assert_ok(fmrt_sampler_with_state_precision(
                wide,
                fmrt_state_precision::F32 as u32,
                &mut narrow,
            ));
            let run = |s, x: &mut Vec<f32>| {
                fmrt_sampler_sample(
                    s,
                    n,
                    5,
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    x.len(),
                    null_mut(),
                    0,
                    null_mut(),
                )
            };
            let (mut x64, mut x32) = (vec![0f32; 2 * n], vec![0f32; 2 * n]);
            assert_ok(run(wide, &mut x64));
            assert_ok(run(narrow, &mut x32));
            let d = x64
                .iter()
                .zip(&x32)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(d < 1e-4, "f32 and f64 states differ by {d:e}");

            let mut a = null_mut();
            assert_ok(fmrt_adaptive_config_new(&mut a));
            let mut dopri = null_mut();
            assert_ok(fmrt_solver_adaptive_config(
                c"dopri5".as_ptr(),
                a,
                &mut dopri,
            ));
            fmrt_adaptive_config_free(a);
            let mut adaptive = null_mut();
            assert_ok(fmrt_sampler_new(h.field, dopri, &mut adaptive));
            let mut adaptive32 = null_mut();
            assert_ok(fmrt_sampler_with_state_precision(
                adaptive,
                fmrt_state_precision::F32 as u32,
                &mut adaptive32,
            ));
            assert_fails(
                run(adaptive32, &mut x32),
                InvalidArgument,
                "state precision f32",
            );
            for s in [wide, narrow, adaptive, adaptive32] {
                fmrt_sampler_free(s);
            }
            fmrt_solver_free(rk4);
            fmrt_solver_free(dopri);
        }
    }

    /// A sampler with partial results: the samples that finish are those
    /// of the full run bit for bit, the others carry `MAX_STEPS`.
    #[test]
    fn a_partial_sampler_reports_each_samples_status_and_steps() {
        use fmrt_c_api::solver::fmrt_sample_status;
        let h = Handles::new();
        let n = 32;
        // SAFETY: valid or NULL pointers; buffers with the stated lengths;
        // handles freed once.
        unsafe {
            let mut solver = null_mut();
            assert_ok(fmrt_solver_adaptive_config(
                c"dopri5".as_ptr(),
                null(),
                &mut solver,
            ));
            let mut full_sampler = null_mut();
            assert_ok(fmrt_sampler_new(h.field, solver, &mut full_sampler));
            let run = |s: *const fmrt_sampler,
                       x: &mut Vec<f32>,
                       st: &mut Vec<fmrt_sample_status>,
                       acc: &mut Vec<u64>,
                       rej: &mut Vec<u64>| {
                fmrt_sampler_sample_rows_status(
                    s,
                    0,
                    n,
                    9,
                    null(),
                    x.as_mut_ptr(),
                    2 * n,
                    st.as_mut_ptr(),
                    n,
                    acc.as_mut_ptr(),
                    n,
                    rej.as_mut_ptr(),
                    n,
                    null_mut(),
                )
            };
            let (mut x, mut st) = (vec![0f32; 2 * n], vec![fmrt_sample_status::NonFinite; n]);
            let (mut acc, mut rej) = (vec![0u64; n], vec![0u64; n]);
            assert_ok(run(full_sampler, &mut x, &mut st, &mut acc, &mut rej));
            assert!(st.iter().all(|&s| s == fmrt_sample_status::Done));
            let attempts: Vec<u64> = acc.iter().zip(&rej).map(|(a, r)| a + r).collect();
            let mut sorted = attempts.clone();
            sorted.sort_unstable();
            let budget = sorted[n / 2];
            assert!(budget < sorted[n - 1]);
            let full_x = x.clone();

            let mut a = null_mut();
            assert_ok(fmrt_adaptive_config_new(&mut a));
            assert_ok(fmrt_adaptive_config_set_max_steps(a, budget));
            let mut short = null_mut();
            assert_ok(fmrt_solver_adaptive_config(
                c"dopri5".as_ptr(),
                a,
                &mut short,
            ));
            let mut strict = null_mut();
            assert_ok(fmrt_sampler_new(h.field, short, &mut strict));
            assert_eq!(
                run(strict, &mut x, &mut st, &mut acc, &mut rej),
                fmrt_status::Solver
            );
            let mut partial = null_mut();
            assert_fails(
                fmrt_sampler_with_partial(strict, 1, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_sampler_with_partial(strict, 1, &mut partial));
            assert_fails(
                fmrt_sampler_sample_rows_status(
                    partial,
                    0,
                    n,
                    9,
                    null(),
                    x.as_mut_ptr(),
                    2 * n,
                    st.as_mut_ptr(),
                    n - 1,
                    null_mut(),
                    0,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                BufferTooSmall,
                "out_status",
            );
            assert_ok(run(partial, &mut x, &mut st, &mut acc, &mut rej));
            let mut stopped = 0;
            for (i, &tried) in attempts.iter().enumerate() {
                if tried <= budget {
                    assert_eq!(st[i], fmrt_sample_status::Done, "{i}");
                    assert_eq!(x[2 * i..2 * i + 2], full_x[2 * i..2 * i + 2], "{i}");
                } else {
                    assert_eq!(st[i], fmrt_sample_status::MaxSteps, "{i}");
                    assert_eq!(acc[i] + rej[i], budget);
                    stopped += 1;
                }
            }
            assert!(stopped > 0);
            for s in [full_sampler, strict, partial] {
                fmrt_sampler_free(s);
            }
            fmrt_solver_free(solver);
            fmrt_solver_free(short);
            fmrt_adaptive_config_free(a);
        }
    }

    #[test]
    fn probe_counts_whose_buffers_overflow_are_an_error() {
        // n × probes × dim used to wrap (or overflow isize) before allocating.
        let h = Handles::new();
        let mut log_p = [7f64; 3];
        for probes in [1usize << 63, 1 << 62, 1 << 61] {
            let mut o = options(&h, c"hutchinson");
            o.probes = probes;
            // SAFETY: valid handles; buffers with the stated lengths.
            unsafe {
                assert_fails(
                    fmrt_log_likelihood(
                        h.field,
                        &o,
                        X.as_ptr(),
                        6,
                        3,
                        &1.0,
                        1,
                        null(),
                        log_p.as_mut_ptr(),
                        3,
                        null_mut(),
                        0,
                        null_mut(),
                        0,
                        null_mut(),
                    ),
                    InvalidArgument,
                    "overflows",
                );
            }
        }
        assert!(log_p.iter().all(|&v| v == 7.0), "nothing written");
    }

    #[test]
    fn options_default_and_validation() {
        let h = Handles::new();
        let mut log_p = [0f64; 3];
        let not_utf8 = [0xffu8, 0];
        // SAFETY: valid or NULL pointers; buffers with the stated lengths.
        unsafe {
            assert_fails(
                fmrt_likelihood_options_default(null_mut()),
                NullParameter,
                "`out`",
            );
            let o = options(&h, c"exact");
            assert_eq!((o.probes, o.epsilon, o.seed), (1, 1e-3, 0));
            assert!(o.distribution.is_null());
            let call = |o: &fmrt_likelihood_options, log_p: &mut [f64; 3]| {
                fmrt_log_likelihood(
                    h.field,
                    o,
                    X.as_ptr(),
                    6,
                    3,
                    &1.0,
                    1,
                    null(),
                    log_p.as_mut_ptr(),
                    3,
                    null_mut(),
                    0,
                    null_mut(),
                    0,
                    null_mut(),
                )
            };
            for (o, needle) in [
                (options(&h, c"trace"), "\"trace\""),
                (
                    fmrt_likelihood_options {
                        probes: 0,
                        ..options(&h, c"hutchinson")
                    },
                    "options.probes",
                ),
                (
                    fmrt_likelihood_options {
                        distribution: c"uniform".as_ptr(),
                        ..options(&h, c"hutchinson")
                    },
                    "options.distribution",
                ),
                (
                    fmrt_likelihood_options {
                        epsilon: -1.0,
                        ..options(&h, c"finite-difference")
                    },
                    "options.epsilon",
                ),
                (
                    fmrt_likelihood_options {
                        divergence: not_utf8.as_ptr().cast(),
                        ..options(&h, c"exact")
                    },
                    "options.divergence",
                ),
            ] {
                let status = call(&o, &mut log_p);
                let expected = if needle == "options.divergence" {
                    InvalidUtf8
                } else {
                    InvalidArgument
                };
                assert_fails(status, expected, needle);
                assert_eq!(log_p, [0.0; 3], "nothing written");
            }
            // NULL options are the defaults (adaptive dopri5, exact).
            assert_ok(fmrt_log_likelihood(
                h.field,
                null(),
                X.as_ptr(),
                6,
                3,
                &1.0,
                1,
                null(),
                log_p.as_mut_ptr(),
                3,
                null_mut(),
                0,
                null_mut(),
                0,
                null_mut(),
            ));
            let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
            let oracle = GaussianMixture::ring(8, 4.0, 0.3, ot)
                .unwrap()
                .log_density(ndarray::ArrayView2::from_shape((3, 2), &X).unwrap(), &[1.0])
                .unwrap();
            for i in 0..3 {
                assert!(
                    (log_p[i] - oracle[i]).abs() < 1e-3,
                    "{log_p:?} vs {oracle:?}"
                );
            }
        }
    }

    #[test]
    fn sample_with_log_prob_matches_the_exact_density() {
        let h = Handles::new();
        let mut x0 = [0f32; 8];
        let (mut x, mut log_p, mut bad) = ([0f32; 8], [0f64; 4], [0f64; 3]);
        let mut stats = fmrt_likelihood_stats::default();
        // SAFETY: lengths as stated.
        unsafe {
            assert_ok(fmrt_sampler_draw_noise(h.sampler, 4, 3, x0.as_mut_ptr(), 8));
            assert_fails(
                fmrt_sample_with_log_prob(
                    h.field,
                    null(),
                    x0.as_ptr(),
                    8,
                    4,
                    null(),
                    x.as_mut_ptr(),
                    8,
                    bad.as_mut_ptr(),
                    3,
                    null_mut(),
                ),
                BufferTooSmall,
                "`out_log_p`",
            );
            assert_ok(fmrt_sample_with_log_prob(
                h.field,
                null(),
                x0.as_ptr(),
                8,
                4,
                null(),
                x.as_mut_ptr(),
                8,
                log_p.as_mut_ptr(),
                4,
                &mut stats,
            ));
        }
        assert!(stats.nfe > 0 && stats.divergence_calls > 0);
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let oracle = GaussianMixture::ring(8, 4.0, 0.3, ot)
            .unwrap()
            .log_density(ndarray::ArrayView2::from_shape((4, 2), &x).unwrap(), &[1.0])
            .unwrap();
        for i in 0..4 {
            assert!(
                (log_p[i] - oracle[i]).abs() < 1e-3,
                "{log_p:?} vs {oracle:?}"
            );
        }
    }

    #[test]
    fn log_likelihood_checks_buffers_before_working_and_matches_rust() {
        let h = Handles::new();
        let o = options(&h, c"hutchinson");
        let o = fmrt_likelihood_options {
            probes: 3,
            distribution: c"gaussian".as_ptr(),
            seed: 11,
            ..o
        };
        let t = [1.0, 0.9, 0.7];
        let (mut log_p, mut x0, mut bpd) = ([0f64; 3], [0f32; 6], [0f64; 3]);
        let mut stats = fmrt_likelihood_stats::default();
        // SAFETY: valid or NULL pointers; buffers with the stated lengths.
        unsafe {
            let call = |field: *const fmrt_field,
                        x: *const f32,
                        x_len: usize,
                        t: *const f64,
                        t_len: usize,
                        lp: (*mut f64, usize),
                        x0: (*mut f32, usize),
                        bpd: (*mut f64, usize)| {
                fmrt_log_likelihood(
                    field,
                    &o,
                    x,
                    x_len,
                    3,
                    t,
                    t_len,
                    h.extras,
                    lp.0,
                    lp.1,
                    x0.0,
                    x0.1,
                    bpd.0,
                    bpd.1,
                    null_mut(),
                )
            };
            let lp = (log_p.as_mut_ptr(), 3);
            let x0b = (x0.as_mut_ptr(), 6);
            let bp = (bpd.as_mut_ptr(), 3);
            let p = t.as_ptr();
            assert_fails(
                call(null(), X.as_ptr(), 6, p, 3, lp, x0b, bp),
                NullParameter,
                "`field`",
            );
            assert_fails(
                call(h.field, null(), 6, p, 3, lp, x0b, bp),
                NullParameter,
                "`x`",
            );
            assert_fails(
                call(h.field, X.as_ptr(), 5, p, 3, lp, x0b, bp),
                ShapeMismatch,
                "x holds 5",
            );
            assert_fails(
                call(h.field, X.as_ptr(), 6, null(), 3, lp, x0b, bp),
                NullParameter,
                "`t_start`",
            );
            assert_fails(
                call(h.field, X.as_ptr(), 6, p, 2, lp, x0b, bp),
                ShapeMismatch,
                "t_start holds 2",
            );
            assert_fails(
                call(h.field, X.as_ptr(), 6, p, 3, (null_mut(), 3), x0b, bp),
                NullParameter,
                "`out_log_p`",
            );
            assert_fails(
                call(h.field, X.as_ptr(), 6, p, 3, (lp.0, 2), x0b, bp),
                BufferTooSmall,
                "`out_log_p`",
            );
            assert_fails(
                call(h.field, X.as_ptr(), 6, p, 3, lp, (x0b.0, 5), bp),
                BufferTooSmall,
                "`out_x0`",
            );
            assert_fails(
                call(h.field, X.as_ptr(), 6, p, 3, lp, x0b, (bp.0, 2)),
                BufferTooSmall,
                "`out_bits_per_dim`",
            );
            let late = [1.0, 1.5, 0.5];
            assert_fails(
                call(h.field, X.as_ptr(), 6, late.as_ptr(), 3, lp, x0b, bp),
                InvalidArgument,
                "1.5",
            );
            assert_eq!(
                (log_p, x0, bpd),
                ([0.0; 3], [0.0; 6], [0.0; 3]),
                "nothing written"
            );
            // An empty batch is no work, with NULL arrays allowed.
            let mut empty_stats = fmrt_likelihood_stats {
                nfe: 99,
                ..Default::default()
            };
            assert_ok(fmrt_log_likelihood(
                h.field,
                &o,
                null(),
                0,
                0,
                &1.0,
                1,
                null(),
                null_mut(),
                0,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut empty_stats,
            ));
            assert_eq!((empty_stats.nfe, empty_stats.solves), (0, 1));

            assert_ok(fmrt_log_likelihood(
                h.field,
                &o,
                X.as_ptr(),
                6,
                3,
                t.as_ptr(),
                3,
                h.extras,
                log_p.as_mut_ptr(),
                3,
                x0.as_mut_ptr(),
                6,
                bpd.as_mut_ptr(),
                3,
                &mut stats,
            ));
        }
        let rust = rust_ring()
            .with_divergence(Divergence::Hutchinson {
                probes: 3,
                distribution: fmrt::likelihood::ProbeDistribution::Gaussian,
            })
            .with_seed(11)
            .log_likelihood_at(
                ndarray::ArrayView2::from_shape((3, 2), &X)
                    .unwrap()
                    .into_dyn(),
                &t,
            )
            .unwrap();
        assert_eq!(log_p.to_vec(), rust.log_p);
        assert_eq!(bpd.to_vec(), rust.bits_per_dim);
        assert_eq!(&x0[..], rust.x0.as_slice().unwrap());
        assert_eq!(
            (stats.nfe, stats.accepted, stats.rejected, stats.solves),
            (40, 10, 0, 1),
            "RK4, 10 steps"
        );
        assert_eq!(stats.jvp_calls, rust.calls.jvp as u64);
        assert!(stats.jvp_calls > 0);
    }

    /// Adapters carry their inner field's derivatives: a schedule-changed
    /// field has likelihoods in every mode, and the exact one is the data's
    /// closed-form log-density (a schedule change keeps the marginals at
    /// t = 0 and t = 1, so log p1 is the ring mixture's own).
    #[test]
    fn an_adapted_field_has_likelihoods_in_every_mode() {
        let h = Handles::new();
        let mut cosine = null_mut();
        let mut adapted = null_mut();
        let mut by_mode = Vec::new();
        // SAFETY: valid or NULL pointers; buffers with the stated lengths.
        unsafe {
            assert_ok(fmrt_scheduler_builtin(
                c"cosine".as_ptr(),
                null(),
                0,
                &mut cosine,
            ));
            assert_ok(fmrt_field_schedule_change(
                h.field,
                h.scheduler,
                cosine,
                &mut adapted,
            ));
            let mut tight = null_mut();
            let tolerances = fmrt_adaptive_options {
                rtol: 1e-9,
                atol: 1e-9,
                ..{
                    let mut o = std::mem::MaybeUninit::uninit();
                    assert_ok(fmrt_adaptive_options_default(o.as_mut_ptr()));
                    o.assume_init()
                }
            };
            assert_ok(fmrt_solver_adaptive(
                c"dopri5".as_ptr(),
                &tolerances,
                &mut tight,
            ));
            for mode in [c"exact", c"hutchinson", c"finite-difference"] {
                let mut log_p = [0f64; 3];
                let mut o = options(&h, mode);
                o.solver = tight;
                assert_ok(fmrt_log_likelihood(
                    adapted,
                    &o,
                    X.as_ptr(),
                    6,
                    3,
                    &1.0,
                    1,
                    null(),
                    log_p.as_mut_ptr(),
                    3,
                    null_mut(),
                    0,
                    null_mut(),
                    0,
                    null_mut(),
                ));
                by_mode.push(log_p);
            }
            fmrt_solver_free(tight);
            fmrt_field_free(adapted);
            fmrt_scheduler_free(cosine);
        }
        let (exact, hutchinson, fd) = (by_mode[0], by_mode[1], by_mode[2]);
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let ring = GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap();
        let x = ndarray::Array2::from_shape_vec((3, 2), X.to_vec()).unwrap();
        let closed_form = ring.data_log_density(x.view()).unwrap();
        for i in 0..3 {
            // About 4× the 2.2e-8 measured at these tolerances.
            assert!(
                (exact[i] - closed_form[i]).abs() <= 1e-7,
                "exact {exact:?} vs closed form {closed_form:?}"
            );
            assert!(fd[i].is_finite(), "{fd:?}");
            // One probe is an unbiased but noisy estimate; it must run and
            // stay finite (its statistics are tested through the Rust API).
            assert!(hutchinson[i].is_finite(), "{hutchinson:?}");
        }
    }

    #[test]
    fn most_probable_time_checks_arguments_and_matches_rust() {
        let h = Handles::new();
        let o = options(&h, c"exact");
        let (mut t, mut log_p) = ([0f64; 3], [0f64; 3]);
        // SAFETY: valid or NULL pointers; buffers with the stated lengths.
        unsafe {
            let call = |field,
                        x_len,
                        lower,
                        upper,
                        tol,
                        out_t: (*mut f64, usize),
                        out_lp: (*mut f64, usize)| {
                fmrt_most_probable_time(
                    field,
                    &o,
                    X.as_ptr(),
                    x_len,
                    3,
                    lower,
                    upper,
                    tol,
                    null(),
                    out_t.0,
                    out_t.1,
                    out_lp.0,
                    out_lp.1,
                )
            };
            let tb = (t.as_mut_ptr(), 3);
            let lb = (log_p.as_mut_ptr(), 3);
            assert_fails(
                call(null(), 6, 0.0, 1.0, 1e-3, tb, lb),
                NullParameter,
                "`field`",
            );
            assert_fails(
                call(h.field, 4, 0.0, 1.0, 1e-3, tb, lb),
                ShapeMismatch,
                "x holds 4",
            );
            assert_fails(
                call(h.field, 6, 0.0, 1.0, 1e-3, (null_mut(), 3), lb),
                NullParameter,
                "`out_t`",
            );
            assert_fails(
                call(h.field, 6, 0.0, 1.0, 1e-3, tb, (null_mut(), 3)),
                NullParameter,
                "`out_log_p`",
            );
            assert_fails(
                call(h.field, 6, 0.0, 1.0, 1e-3, (tb.0, 2), lb),
                BufferTooSmall,
                "`out_t`",
            );
            assert_fails(
                call(h.field, 6, 0.0, 1.0, 1e-3, tb, (lb.0, 1)),
                BufferTooSmall,
                "`out_log_p`",
            );
            assert_fails(
                call(h.field, 6, 0.6, 0.4, 1e-3, tb, lb),
                InvalidArgument,
                "lower < upper",
            );
            assert_fails(
                call(h.field, 6, 0.0, 1.0, 0.0, tb, lb),
                InvalidArgument,
                "tolerance",
            );
            assert_eq!((t, log_p), ([0.0; 3], [0.0; 3]), "nothing written");
            assert_ok(call(h.field, 6, 0.1, 1.0, 1e-3, tb, lb));
        }
        let rust = rust_ring()
            .most_probable_time(
                ndarray::ArrayView2::from_shape((3, 2), &X)
                    .unwrap()
                    .into_dyn(),
                &TimeSearch {
                    lower: 0.1,
                    upper: 1.0,
                    tolerance: 1e-3,
                },
            )
            .unwrap();
        assert_eq!(t.to_vec(), rust.t);
        assert_eq!(log_p.to_vec(), rust.log_p);
        assert!(t.iter().all(|v| (0.1..=1.0).contains(v)));
    }

    #[test]
    fn schedule_change_checks_handles_and_matches_the_rust_adapter() {
        let h = Handles::new();
        let mut cosine = null_mut();
        let mut adapted = null_mut();
        let t = [0.2, 0.5, 0.8];
        let mut u = [0f32; 6];
        // SAFETY: valid or NULL pointers; buffers with the stated lengths.
        unsafe {
            assert_ok(fmrt_scheduler_builtin(
                c"cosine".as_ptr(),
                null(),
                0,
                &mut cosine,
            ));
            assert_fails(
                fmrt_field_schedule_change(null(), h.scheduler, cosine, &mut adapted),
                NullParameter,
                "`inner`",
            );
            assert_fails(
                fmrt_field_schedule_change(h.field, null(), cosine, &mut adapted),
                NullParameter,
                "`trained`",
            );
            assert_fails(
                fmrt_field_schedule_change(h.field, h.scheduler, null(), &mut adapted),
                NullParameter,
                "`sampled`",
            );
            assert_fails(
                fmrt_field_schedule_change(h.field, h.scheduler, cosine, null_mut()),
                NullParameter,
                "`out`",
            );
            assert!(adapted.is_null());
            assert_ok(fmrt_field_schedule_change(
                h.field,
                h.scheduler,
                cosine,
                &mut adapted,
            ));
            // The adapter keeps its own references.
            fmrt_scheduler_free(cosine);
            assert_ok(fmrt_field_velocity(
                adapted,
                X.as_ptr(),
                6,
                3,
                t.as_ptr(),
                3,
                null(),
                u.as_mut_ptr(),
                6,
            ));
            fmrt_field_free(adapted);
        }
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let cosine = Arc::new(Scheduler::builtin("cosine", &[]).unwrap());
        let gmm = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot.clone()).unwrap());
        let rust = fmrt::field::adapt::ScheduleChange::new(gmm.clone(), ot, cosine);
        let xa = ndarray::ArrayView2::from_shape((3, 2), &X)
            .unwrap()
            .into_dyn();
        let mut expect = ndarray::ArrayD::<f32>::zeros(xa.raw_dim());
        rust.velocity(
            xa.view(),
            &t,
            fmrt::field::Extras::none(),
            expect.view_mut(),
        )
        .unwrap();
        assert_eq!(&u[..], expect.as_slice().unwrap());
        let mut plain = ndarray::ArrayD::<f32>::zeros(xa.raw_dim());
        gmm.velocity(xa, &t, fmrt::field::Extras::none(), plain.view_mut())
            .unwrap();
        assert_ne!(expect, plain, "the adapter changes the velocity");
    }

    #[test]
    fn times_that_do_not_fit_the_samples_are_a_shape_error_not_a_panic() {
        // A schedule change with t_len 0, or 2 times for 3 samples, used to
        // panic (caught, but printed on the host's stderr).
        let h = Handles::new();
        let mut cosine = null_mut();
        let mut adapted = null_mut();
        let t = [0.2, 0.5, 0.8, 0.9];
        let mut u = [7f32; 6];
        let x1 = [1.0f32; 6];
        let (mut xt, mut target) = ([7f32; 6], [7f32; 6]);
        // SAFETY: valid pointers; buffers with the stated lengths.
        unsafe {
            assert_ok(fmrt_scheduler_builtin(
                c"cosine".as_ptr(),
                null(),
                0,
                &mut cosine,
            ));
            assert_ok(fmrt_field_schedule_change(
                h.field,
                h.scheduler,
                cosine,
                &mut adapted,
            ));
            for field in [adapted, h.field] {
                for t_len in [0, 2, 4] {
                    assert_fails(
                        fmrt_field_velocity(
                            field,
                            X.as_ptr(),
                            6,
                            3,
                            t.as_ptr(),
                            t_len,
                            null(),
                            u.as_mut_ptr(),
                            6,
                        ),
                        ShapeMismatch,
                        &format!("`t` holds {t_len} times"),
                    );
                }
            }
            assert!(u.iter().all(|&v| v == 7.0), "nothing written");
            for t_len in [0, 2] {
                assert_fails(
                    fmrt_path_training_batch(
                        h.scheduler,
                        x1.as_ptr(),
                        X.as_ptr(),
                        6,
                        3,
                        t.as_ptr(),
                        t_len,
                        xt.as_mut_ptr(),
                        6,
                        target.as_mut_ptr(),
                        6,
                    ),
                    ShapeMismatch,
                    &format!("`t` holds {t_len} times"),
                );
            }
            fmrt_field_free(adapted);
            fmrt_scheduler_free(cosine);
        }
    }
}

mod model {
    use super::*;
    use fmrt::field::onnx::ensure_runtime_for_development;
    use fmrt::model::{Model, ModelOptions};
    use fmrt_c_api::likelihood::{
        fmrt_likelihood_options, fmrt_likelihood_options_default, fmrt_log_likelihood,
    };
    use fmrt_c_api::model::*;

    fn fixture(name: &str) -> PathBuf {
        root().join("tests/fixtures").join(name)
    }

    /// A NUL-terminated string written by an fmrt copy call.
    fn read(call: impl Fn(*mut c_char, usize, *mut usize) -> fmrt_status) -> String {
        let mut need = 0;
        assert_fails(call(null_mut(), 0, &mut need), BufferTooSmall, "");
        let mut buf = vec![0 as c_char; need];
        assert_ok(call(buf.as_mut_ptr(), need, null_mut()));
        // SAFETY: the call wrote a NUL-terminated string.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    /// The x1 export opened from C reads its metadata, converts its
    /// prediction, and samples with the default dopri5 bit for bit like
    /// `fmrt::model::Model` (which the CLI uses).
    #[test]
    fn an_x1_model_opened_from_c_samples_like_the_rust_model() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = fixture("gmm_ot_x1.onnx");
        let path_c = c(path.to_str().unwrap());
        let (mut model, mut field, mut solver, mut sampler) =
            (null_mut(), null_mut(), null_mut(), null_mut());
        let mut x = vec![0.0f32; 64 * 2];
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_fails(
                fmrt_model_open(null(), null(), null(), &mut model),
                NullParameter,
                "`path`",
            );
            let missing = c("/nonexistent/model.onnx");
            assert_fails(
                fmrt_model_open(missing.as_ptr(), null(), null(), &mut model),
                fmrt_status::Io,
                "/nonexistent/model.onnx",
            );
            assert_ok(fmrt_model_open(path_c.as_ptr(), null(), null(), &mut model));
            let prediction = read(|b, l, o| fmrt_model_prediction(model, b, l, o));
            assert_eq!(prediction, "x1");
            let declared =
                read(|b, l, o| fmrt_model_metadata(model, c"fmrt.prediction".as_ptr(), b, l, o));
            assert_eq!(declared, "x1");
            let scheduler =
                read(|b, l, o| fmrt_model_metadata(model, c"fmrt.scheduler".as_ptr(), b, l, o));
            assert!(scheduler.contains("alpha"), "{scheduler}");
            assert_fails(
                fmrt_model_metadata(model, c"no.such.key".as_ptr(), null_mut(), 0, null_mut()),
                InvalidArgument,
                "no.such.key",
            );
            assert_ok(fmrt_model_prepare_derivatives(model));
            assert_ok(fmrt_model_field(model, &mut field));
            assert_ok(fmrt_solver_adaptive(
                c"dopri5".as_ptr(),
                null(),
                &mut solver,
            ));
            assert_ok(fmrt_sampler_new(field, solver, &mut sampler));
            assert_ok(fmrt_sampler_sample(
                sampler,
                64,
                11,
                null(),
                0,
                null(),
                x.as_mut_ptr(),
                x.len(),
                null_mut(),
                0,
                null_mut(),
            ));
            fmrt_sampler_free(sampler);
            fmrt_solver_free(solver);
            fmrt_field_free(field);
            fmrt_model_free(model);
        }
        let rust = Model::open(&path, ModelOptions::default()).unwrap();
        let expected = rust
            .sampler(fmrt::solver::SolverConfig::adaptive(
                Method::Dopri5,
                1e-5,
                1e-5,
            ))
            .sample(64, 11)
            .unwrap()
            .x;
        assert_eq!(x, expected.iter().copied().collect::<Vec<_>>());
    }

    /// Options override the metadata through an opaque handle; an adapter
    /// without what it needs, and a model fmrt cannot differentiate, fail
    /// with their statuses.
    #[test]
    fn model_options_and_their_failures() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let x1 = c(fixture("gmm_ot_x1.onnx").to_str().unwrap());
        let plain = c(fixture("gmm_ot.onnx").to_str().unwrap());
        let hardmax = c(fixture("unsupported_op.onnx").to_str().unwrap());
        let (mut options, mut model) = (null_mut(), null_mut());
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_ok(fmrt_model_options_new(&mut options));
            assert_ok(fmrt_model_options_set_prediction(
                options,
                c"velocity".as_ptr(),
            ));
            assert_fails(
                fmrt_model_options_set_prediction(options, c"banana".as_ptr()),
                InvalidArgument,
                "banana",
            );
            assert_ok(fmrt_model_open(x1.as_ptr(), null(), options, &mut model));
            let p = read(|b, l, o| fmrt_model_prediction(model, b, l, o));
            assert_eq!(p, "velocity");
            fmrt_model_free(model);

            assert_ok(fmrt_model_options_set_guidance(options, 2.0));
            assert_fails(
                fmrt_model_options_set_guidance(options, f64::NAN),
                InvalidArgument,
                "not finite",
            );
            assert_fails(
                fmrt_model_open(plain.as_ptr(), null(), options, &mut model),
                InvalidArgument,
                "null condition",
            );
            assert_fails(
                fmrt_model_options_set_guidance_interval(options, 0.8, 0.2),
                InvalidArgument,
                "start ≤ end",
            );
            assert_ok(fmrt_model_options_set_guidance_interval(options, 0.2, 0.8));
            // An interval without guidance is refused when the model opens.
            assert_ok(fmrt_model_options_set_guidance(options, 0.0));
            assert_fails(
                fmrt_model_open(plain.as_ptr(), null(), options, &mut model),
                InvalidArgument,
                "guidance interval",
            );
            fmrt_model_options_free(options);

            assert_ok(fmrt_model_open(
                hardmax.as_ptr(),
                null(),
                null(),
                &mut model,
            ));
            assert_fails(
                fmrt_model_prepare_derivatives(model),
                fmrt_status::Unsupported,
                "Hardmax",
            );
            fmrt_model_free(model);
            fmrt_model_free(null_mut());
            fmrt_model_options_free(null_mut());
        }
    }

    /// Samples `n` points with `seed` from the model at `path` opened through
    /// the C API with its metadata and the fixed-step `method` (adaptive
    /// dopri5 with the default tolerances when `steps` is 0); returns them
    /// with the exact log-likelihoods of those samples under the same solver.
    fn sample_and_score_through_c(
        path: &Path,
        share_weights: bool,
        method: &str,
        steps: usize,
        n: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<f64>) {
        let path = c(path.to_str().unwrap());
        let method = c(method);
        let (mut model, mut field, mut solver, mut sampler) =
            (null_mut(), null_mut(), null_mut(), null_mut());
        let mut x = vec![0.0f32; n * 2];
        let mut log_p = vec![0.0f64; n];
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            let mut options = null_mut();
            assert_ok(fmrt_model_options_new(&mut options));
            assert_ok(fmrt_model_options_set_share_weights(
                options,
                share_weights.into(),
            ));
            assert_ok(fmrt_model_open(path.as_ptr(), null(), options, &mut model));
            fmrt_model_options_free(options);
            assert_ok(fmrt_model_field(model, &mut field));
            if steps == 0 {
                assert_ok(fmrt_solver_adaptive(method.as_ptr(), null(), &mut solver));
            } else {
                assert_ok(fmrt_solver_fixed(method.as_ptr(), steps, &mut solver));
            }
            assert_ok(fmrt_sampler_new(field, solver, &mut sampler));
            assert_ok(fmrt_sampler_sample(
                sampler,
                n,
                seed,
                null(),
                0,
                null(),
                x.as_mut_ptr(),
                x.len(),
                null_mut(),
                0,
                null_mut(),
            ));
            // SAFETY: all-zero is a valid value of this plain C struct.
            let mut options: fmrt_likelihood_options = std::mem::zeroed();
            assert_ok(fmrt_likelihood_options_default(&mut options));
            options.solver = solver;
            assert_ok(fmrt_log_likelihood(
                field,
                &options,
                x.as_ptr(),
                x.len(),
                n,
                [1.0].as_ptr(),
                1,
                null(),
                log_p.as_mut_ptr(),
                log_p.len(),
                null_mut(),
                0,
                null_mut(),
                0,
                null_mut(),
            ));
            fmrt_sampler_free(sampler);
            fmrt_solver_free(solver);
            fmrt_field_free(field);
            fmrt_model_free(model);
        }
        (x, log_p)
    }

    /// A model whose weights are in an external-data file, opened from C,
    /// samples bit for bit like its inline twin and gives the same exact
    /// log-likelihoods (1e-5).
    #[test]
    fn an_external_data_model_opened_from_c_matches_the_inline_one() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let dir = scratch().join("external-data");
        std::fs::create_dir_all(&dir).unwrap();
        let inline = fixture("mlp256.onnx");
        let (external, _) = save_with_external_data(&inline, &dir, "mlp256_external.onnx");
        let (x_inline, lp_inline) =
            sample_and_score_through_c(&inline, false, "midpoint", 20, 32, 7);
        let (x_external, lp_external) =
            sample_and_score_through_c(&external, false, "midpoint", 20, 32, 7);
        assert_eq!(x_inline, x_external, "samples differ");
        for (a, b) in lp_inline.iter().zip(&lp_external) {
            assert!(
                (a - b).abs() <= 1e-5,
                "log p {a} (inline) vs {b} (external)"
            );
        }
        // One copy of the weights for all sessions: the same numbers up to
        // the rounding of unpacked matrix products.
        let (x_shared, lp_shared) =
            sample_and_score_through_c(&external, true, "midpoint", 20, 32, 7);
        let dx = x_inline
            .iter()
            .zip(&x_shared)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let dlp = lp_inline
            .iter()
            .zip(&lp_shared)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, f64::max);
        println!("shared weights: samples within {dx:e}, log p within {dlp:e}");
        assert!(
            dx <= 1e-6 && dlp <= 1e-6,
            "samples {dx:e}, log p {dlp:e} apart"
        );
    }

    /// A C host learns from the model which inputs it has, which one takes
    /// its conditioning, and how they are shaped.
    #[test]
    fn a_model_describes_its_inputs() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = c(root()
            .join("examples/models/conditional.onnx")
            .to_str()
            .unwrap());
        let mut model = null_mut();
        let mut count = 0;
        let mut described = Vec::new();
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_ok(fmrt_model_open(path.as_ptr(), null(), null(), &mut model));
            assert_ok(fmrt_model_input_count(model, &mut count));
            for index in 0..count {
                let mut role = fmrt_input_role::State;
                let (mut name_len, mut dtype_len) = (0, 0);
                assert_fails(
                    fmrt_model_input(
                        model,
                        index,
                        &mut role,
                        null_mut(),
                        0,
                        &mut name_len,
                        null_mut(),
                        0,
                        &mut dtype_len,
                    ),
                    BufferTooSmall,
                    "name_buf",
                );
                let mut name = vec![0 as c_char; name_len];
                let mut dtype = vec![0 as c_char; dtype_len];
                assert_ok(fmrt_model_input(
                    model,
                    index,
                    &mut role,
                    name.as_mut_ptr(),
                    name.len(),
                    null_mut(),
                    dtype.as_mut_ptr(),
                    dtype.len(),
                    null_mut(),
                ));
                let mut rank = 0;
                assert_fails(
                    fmrt_model_input_shape(model, index, null_mut(), 0, &mut rank),
                    BufferTooSmall,
                    "dims",
                );
                let mut dims = vec![0i64; rank];
                assert_ok(fmrt_model_input_shape(
                    model,
                    index,
                    dims.as_mut_ptr(),
                    dims.len(),
                    null_mut(),
                ));
                let text = |b: &[c_char]| CStr::from_ptr(b.as_ptr()).to_str().unwrap().to_string();
                described.push((role, text(&name), text(&dtype), dims));
            }
            assert_fails(
                fmrt_model_input(
                    model,
                    count,
                    null_mut(),
                    null_mut(),
                    0,
                    null_mut(),
                    null_mut(),
                    0,
                    null_mut(),
                ),
                InvalidArgument,
                "out of range",
            );
            fmrt_model_free(model);
        }
        use fmrt_input_role::{Extra, State, Time};
        assert_eq!(
            described,
            [
                (State, "x".into(), "float32".into(), vec![-1, 2]),
                (Time, "t".into(), "float32".into(), vec![-1]),
                (Extra, "label".into(), "int64".into(), vec![-1]),
            ]
        );
    }
}

mod typed_extras {
    use super::*;
    use fmrt::field::ExtraTensor;

    /// The tensor `name` of `extras`, and whether it is shared.
    fn stored(extras: *mut fmrt_extras, name: &str) -> (ExtraTensor, bool) {
        // SAFETY: a live handle.
        let e = unsafe { &*extras }.extras();
        (e.get(name).expect(name).clone(), e.is_shared(name))
    }

    #[test]
    fn typed_setters_check_pointers_counts_types_and_bools() {
        let h = Handles::new();
        let shape = [2usize, 3];
        let data = [1.0f32; 6];
        let d = data.as_ptr().cast::<std::ffi::c_void>();
        let f32_ = fmrt_dtype::Float32 as u32;
        // SAFETY: lengths as stated; NULLs where tested.
        unsafe {
            for set in [fmrt_extras_set_tensor, fmrt_extras_set_shared_tensor] {
                assert_fails(
                    set(null_mut(), c"a".as_ptr(), f32_, d, 6, shape.as_ptr(), 2),
                    NullParameter,
                    "`extras`",
                );
                assert_fails(
                    set(h.extras, null(), f32_, d, 6, shape.as_ptr(), 2),
                    NullParameter,
                    "`name`",
                );
                assert_fails(
                    set(h.extras, c"a".as_ptr(), f32_, null(), 6, shape.as_ptr(), 2),
                    NullParameter,
                    "`data`",
                );
                assert_fails(
                    set(h.extras, c"a".as_ptr(), f32_, d, 6, null(), 2),
                    NullParameter,
                    "`shape`",
                );
                assert_fails(
                    set(h.extras, c"a".as_ptr(), 9, d, 6, shape.as_ptr(), 2),
                    InvalidArgument,
                    "not an fmrt_dtype",
                );
                assert_fails(
                    set(h.extras, c"a".as_ptr(), f32_, d, 5, shape.as_ptr(), 2),
                    ShapeMismatch,
                    "holds 6 elements, but n_elements is 5",
                );
                // Shapes whose element count or byte size overflows.
                let huge = [usize::MAX, 2];
                assert_fails(
                    set(h.extras, c"a".as_ptr(), f32_, d, 6, huge.as_ptr(), 2),
                    InvalidArgument,
                    "overflows",
                );
                let half = usize::MAX / 2;
                assert_fails(
                    set(
                        h.extras,
                        c"a".as_ptr(),
                        fmrt_dtype::Int64 as u32,
                        d,
                        half,
                        [half].as_ptr(),
                        1,
                    ),
                    InvalidArgument,
                    "overflows",
                );
                let bad_utf8 = [0xffu8 as c_char, 0];
                assert_fails(
                    set(h.extras, bad_utf8.as_ptr(), f32_, d, 6, shape.as_ptr(), 2),
                    InvalidUtf8,
                    "`name`",
                );
            }
            let bools = [1u8, 0, 2, 1];
            assert_fails(
                fmrt_extras_set_tensor(
                    h.extras,
                    c"mask".as_ptr(),
                    fmrt_dtype::Bool as u32,
                    bools.as_ptr().cast(),
                    4,
                    [4usize].as_ptr(),
                    1,
                ),
                InvalidArgument,
                "holds 2 at element 2",
            );
            assert!((*h.extras).extras().get("mask").is_none(), "nothing set");
        }
    }

    #[test]
    fn every_element_type_arrives_as_given() {
        let h = Handles::new();
        // Half bits: 1, -2, the largest finite, the smallest subnormal, -0,
        // infinity and a NaN with a payload: each bit pattern survives.
        let bits = [0x3c00u16, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x7e01];
        // int64 from an odd address: the data need not be aligned.
        let ids = [5i64, -1, i64::MAX];
        let mut unaligned = [0u8; 1 + 3 * 8];
        for (i, v) in ids.iter().enumerate() {
            unaligned[1 + 8 * i..9 + 8 * i].copy_from_slice(&v.to_ne_bytes());
        }
        // SAFETY: lengths as stated.
        unsafe {
            assert_ok(fmrt_extras_set_tensor(
                h.extras,
                c"h".as_ptr(),
                fmrt_dtype::Float16 as u32,
                bits.as_ptr().cast(),
                7,
                [1usize, 7].as_ptr(),
                2,
            ));
            assert_ok(fmrt_extras_set_tensor(
                h.extras,
                c"ids".as_ptr(),
                fmrt_dtype::Int64 as u32,
                unaligned[1..].as_ptr().cast(),
                3,
                [3usize].as_ptr(),
                1,
            ));
            assert_ok(fmrt_extras_set_tensor(
                h.extras,
                c"i32".as_ptr(),
                fmrt_dtype::Int32 as u32,
                [7i32, -8].as_ptr().cast(),
                2,
                [2usize, 1].as_ptr(),
                2,
            ));
            assert_ok(fmrt_extras_set_tensor(
                h.extras,
                c"mask".as_ptr(),
                fmrt_dtype::Bool as u32,
                [1u8, 0].as_ptr().cast(),
                2,
                [2usize].as_ptr(),
                1,
            ));
            // Rank 0: one value for every sample (shape may be NULL).
            assert_ok(fmrt_extras_set_tensor(
                h.extras,
                c"scale".as_ptr(),
                fmrt_dtype::Float32 as u32,
                [3.5f32].as_ptr().cast(),
                1,
                null(),
                0,
            ));
            // An input without a batch axis (FLUX's img_ids [seq, 3]).
            let img_ids: Vec<f32> = (0..12).map(|v| v as f32).collect();
            assert_ok(fmrt_extras_set_shared_tensor(
                h.extras,
                c"img_ids".as_ptr(),
                fmrt_dtype::Float32 as u32,
                img_ids.as_ptr().cast(),
                12,
                [4usize, 3].as_ptr(),
                2,
            ));
            // The old setters still work, and replace by name.
            assert_ok(fmrt_extras_set_labels(
                h.extras,
                c"i32".as_ptr(),
                [4i64].as_ptr(),
                1,
            ));
        }
        let (t, shared) = stored(h.extras, "h");
        let ExtraTensor::Float16(a) = t else {
            panic!("float16 expected, got {t:?}")
        };
        assert_eq!(a.shape(), [1, 7]);
        assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), bits);
        assert!(!shared);
        assert_eq!(
            stored(h.extras, "ids").0,
            ExtraTensor::Int64(ndarray::arr1(&ids).into_dyn())
        );
        assert_eq!(
            stored(h.extras, "mask").0,
            ExtraTensor::Bool(ndarray::arr1(&[true, false]).into_dyn())
        );
        assert_eq!(stored(h.extras, "scale"), (ExtraTensor::scalar(3.5), true));
        let (ids, shared) = stored(h.extras, "img_ids");
        assert_eq!(ids.shape(), [4, 3]);
        assert!(shared, "set_shared_tensor marks the input shared");
        assert_eq!(stored(h.extras, "i32").0, ExtraTensor::labels(&[4]));
    }
}

mod shaped {
    use super::*;
    use fmrt::likelihood::Likelihood;
    use fmrt_c_api::likelihood::*;

    fn rust_ring() -> Sampler {
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let field = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap());
        Sampler::new(field, SolverConfig::fixed(Method::Rk4, Steps::Count(10)))
    }

    #[test]
    fn noise_scale_makes_a_new_sampler_and_checks_the_scale() {
        let h = Handles::new();
        let mut scaled = null_mut();
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_fails(
                fmrt_sampler_with_noise_scale(null(), 2.0, &mut scaled),
                NullParameter,
                "`sampler`",
            );
            assert_fails(
                fmrt_sampler_with_noise_scale(h.sampler, 2.0, null_mut()),
                NullParameter,
                "`out`",
            );
            for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
                assert_fails(
                    fmrt_sampler_with_noise_scale(h.sampler, bad, &mut scaled),
                    InvalidArgument,
                    "",
                );
            }
            assert!(scaled.is_null(), "nothing written on failure");
            assert_ok(fmrt_sampler_with_noise_scale(h.sampler, 0.5, &mut scaled));
            assert!(scaled != h.sampler);
            let mut plain = [0f32; 6];
            let mut half = [0f32; 6];
            assert_ok(fmrt_sampler_draw_noise(
                h.sampler,
                3,
                9,
                plain.as_mut_ptr(),
                6,
            ));
            assert_ok(fmrt_sampler_draw_noise(scaled, 3, 9, half.as_mut_ptr(), 6));
            for (p, s) in plain.iter().zip(&half) {
                assert!((p * 0.5 - s).abs() <= 1e-6, "{p} scaled by 0.5 is not {s}");
            }
            // The sampler it was made from is unchanged.
            let mut again = [0f32; 6];
            assert_ok(fmrt_sampler_draw_noise(
                h.sampler,
                3,
                9,
                again.as_mut_ptr(),
                6,
            ));
            assert_eq!(again, plain);
            fmrt_sampler_free(scaled);
        }
    }

    #[test]
    fn sample_shaped_checks_arguments_and_matches_rust() {
        let h = Handles::new();
        let mut x = [0f32; 8];
        let mut stats = fmrt_stats::default();
        let shape = [2usize];
        // SAFETY: lengths as stated; NULLs where tested.
        unsafe {
            let call = |sampler, shape: *const usize, rank, n, out: *mut f32, len| {
                fmrt_sampler_sample_shaped(
                    sampler,
                    shape,
                    rank,
                    n,
                    42,
                    null(),
                    out,
                    len,
                    null_mut(),
                )
            };
            assert_fails(
                call(null(), shape.as_ptr(), 1, 4, x.as_mut_ptr(), 8),
                NullParameter,
                "`sampler`",
            );
            assert_fails(
                call(h.sampler, null(), 1, 4, x.as_mut_ptr(), 8),
                NullParameter,
                "`state_shape`",
            );
            assert_fails(
                call(h.sampler, shape.as_ptr(), 1, 4, null_mut(), 8),
                NullParameter,
                "`out_x`",
            );
            assert_fails(
                call(h.sampler, shape.as_ptr(), 1, 4, x.as_mut_ptr(), 7),
                BufferTooSmall,
                "holds 7 elements, 8 are needed",
            );
            assert_fails(
                call(h.sampler, [usize::MAX, 2].as_ptr(), 2, 1, x.as_mut_ptr(), 8),
                InvalidArgument,
                "overflows",
            );
            assert_fails(
                call(h.sampler, shape.as_ptr(), 1, usize::MAX, x.as_mut_ptr(), 8),
                InvalidArgument,
                "overflows",
            );
            // A fixed-shape field takes only its own shape.
            assert_fails(
                call(h.sampler, [3usize].as_ptr(), 1, 2, x.as_mut_ptr(), 8),
                ShapeMismatch,
                "",
            );
            assert_eq!(x, [0f32; 8], "nothing written on failure");
            assert_ok(fmrt_sampler_sample_shaped(
                h.sampler,
                shape.as_ptr(),
                1,
                4,
                42,
                null(),
                x.as_mut_ptr(),
                8,
                &mut stats,
            ));
        }
        let rust = rust_ring().sample(4, 42).unwrap();
        assert_eq!(x.as_slice(), rust.x.as_slice().unwrap());
        assert_eq!(stats.nfe, 40);
    }

    #[test]
    fn integrate_shaped_scales_the_noise_and_checks_its_length() {
        let h = Handles::new();
        let z: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) * 0.4).collect();
        let mut x = [0f32; 8];
        let mut scaled = null_mut();
        let shape = [2usize];
        // SAFETY: lengths as stated; NULLs where tested.
        unsafe {
            assert_ok(fmrt_sampler_with_noise_scale(h.sampler, 0.667, &mut scaled));
            let call = |z: *const f32, z_len, out: *mut f32, len| {
                fmrt_sampler_integrate_shaped(
                    scaled,
                    shape.as_ptr(),
                    1,
                    4,
                    z,
                    z_len,
                    null(),
                    out,
                    len,
                    null_mut(),
                )
            };
            assert_fails(call(null(), 8, x.as_mut_ptr(), 8), NullParameter, "`z`");
            assert_fails(
                call(z.as_ptr(), 6, x.as_mut_ptr(), 8),
                ShapeMismatch,
                "z holds 6 floats, but 4 states of shape [2] need 8",
            );
            assert_fails(
                call(z.as_ptr(), 8, x.as_mut_ptr(), 4),
                BufferTooSmall,
                "`out_x`",
            );
            assert_fails(
                fmrt_sampler_integrate_shaped(
                    null(),
                    shape.as_ptr(),
                    1,
                    4,
                    z.as_ptr(),
                    8,
                    null(),
                    x.as_mut_ptr(),
                    8,
                    null_mut(),
                ),
                NullParameter,
                "`sampler`",
            );
            assert_ok(call(z.as_ptr(), 8, x.as_mut_ptr(), 8));
            fmrt_sampler_free(scaled);
        }
        let zv = ndarray::ArrayView2::from_shape((4, 2), &z).unwrap();
        let rust = rust_ring()
            .with_noise_scale(0.667)
            .unwrap()
            .sample_from_noise(zv.into_dyn(), &[])
            .unwrap();
        assert_eq!(x.as_slice(), rust.x.as_slice().unwrap());
    }

    /// An explicit grid may start after t = 0: sampling from noise starts
    /// there, through every sampling entry point; a run over a given
    /// interval refuses it with a status.
    #[test]
    fn a_grid_that_starts_after_zero_samples_from_its_first_time() {
        let h = Handles::new();
        let grid = [0.2, 0.5, 0.8, 1.0];
        let (mut solver, mut sampler) = (null_mut(), null_mut());
        let mut x = [0f32; 6];
        let mut shaped = [0f32; 6];
        let mut stats = fmrt_stats::default();
        // SAFETY: lengths as stated; handles freed once.
        unsafe {
            assert_fails(
                fmrt_solver_grid(c"euler".as_ptr(), [0.2, 0.9].as_ptr(), 2, &mut solver),
                InvalidArgument,
                "must end at 1",
            );
            assert_ok(fmrt_solver_grid(
                c"euler".as_ptr(),
                grid.as_ptr(),
                4,
                &mut solver,
            ));
            assert_ok(fmrt_sampler_new(h.field, solver, &mut sampler));
            assert_ok(fmrt_sampler_sample(
                sampler,
                3,
                5,
                null(),
                0,
                null(),
                x.as_mut_ptr(),
                6,
                null_mut(),
                0,
                &mut stats,
            ));
            assert_ok(fmrt_sampler_sample_shaped(
                sampler,
                [2usize].as_ptr(),
                1,
                3,
                5,
                null(),
                shaped.as_mut_ptr(),
                6,
                null_mut(),
            ));
            let mut out = [0f32; 6];
            assert_fails(
                fmrt_sampler_integrate(
                    sampler,
                    x.as_ptr(),
                    6,
                    3,
                    0.0,
                    1.0,
                    null(),
                    0,
                    null(),
                    out.as_mut_ptr(),
                    6,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                InvalidArgument,
                "grid",
            );
            fmrt_sampler_free(sampler);
            fmrt_solver_free(solver);
        }
        assert_eq!(stats.accepted, 3, "three steps from t = 0.2");
        let rust = rust_ring()
            .with_solver(SolverConfig::fixed(
                Method::Euler,
                fmrt::grid::explicit_steps(&grid).unwrap(),
            ))
            .sample(3, 5)
            .unwrap();
        assert_eq!(x.as_slice(), rust.x.as_slice().unwrap());
        assert_eq!(shaped, x);
    }

    #[test]
    fn log_likelihood_shaped_checks_arguments_and_takes_a_noise_scale() {
        let h = Handles::new();
        let x = [4.0f32, 0.1, -2.0, 2.5, 0.3, -0.2];
        let shape = [2usize];
        let mut o = std::mem::MaybeUninit::uninit();
        // SAFETY: `o` is writable.
        let mut o: fmrt_likelihood_options = unsafe {
            assert_ok(fmrt_likelihood_options_default(o.as_mut_ptr()));
            o.assume_init()
        };
        assert_eq!(o.noise_scale, 1.0);
        o.solver = h.solver;
        let mut log_p = [0f64; 3];
        let mut x0 = [0f32; 6];
        // SAFETY: lengths as stated; NULLs where tested.
        unsafe {
            let call = |o: &fmrt_likelihood_options,
                        shape: *const usize,
                        x: *const f32,
                        x_len,
                        out: *mut f64,
                        out_len,
                        x0: *mut f32,
                        x0_len| {
                fmrt_log_likelihood_shaped(
                    h.field,
                    o,
                    shape,
                    1,
                    x,
                    x_len,
                    3,
                    [1.0].as_ptr(),
                    1,
                    null(),
                    out,
                    out_len,
                    x0,
                    x0_len,
                    null_mut(),
                    0,
                    null_mut(),
                )
            };
            let lp = log_p.as_mut_ptr();
            assert_fails(
                call(&o, null(), x.as_ptr(), 6, lp, 3, null_mut(), 0),
                NullParameter,
                "`state_shape`",
            );
            assert_fails(
                call(&o, shape.as_ptr(), null(), 6, lp, 3, null_mut(), 0),
                NullParameter,
                "`x`",
            );
            assert_fails(
                call(&o, shape.as_ptr(), x.as_ptr(), 5, lp, 3, null_mut(), 0),
                ShapeMismatch,
                "x holds 5 floats, but 3 states of shape [2] need 6",
            );
            assert_fails(
                call(
                    &o,
                    shape.as_ptr(),
                    x.as_ptr(),
                    6,
                    null_mut(),
                    3,
                    null_mut(),
                    0,
                ),
                NullParameter,
                "`out_log_p`",
            );
            assert_fails(
                call(&o, shape.as_ptr(), x.as_ptr(), 6, lp, 2, null_mut(), 0),
                BufferTooSmall,
                "`out_log_p`",
            );
            assert_fails(
                call(&o, shape.as_ptr(), x.as_ptr(), 6, lp, 3, x0.as_mut_ptr(), 5),
                BufferTooSmall,
                "`out_x0`",
            );
            assert_fails(
                fmrt_log_likelihood_shaped(
                    null(),
                    &o,
                    shape.as_ptr(),
                    1,
                    x.as_ptr(),
                    6,
                    3,
                    [1.0].as_ptr(),
                    1,
                    null(),
                    lp,
                    3,
                    null_mut(),
                    0,
                    null_mut(),
                    0,
                    null_mut(),
                ),
                NullParameter,
                "`field`",
            );
            let mut bad = o;
            bad.noise_scale = -1.0;
            assert_fails(
                call(&bad, shape.as_ptr(), x.as_ptr(), 6, lp, 3, null_mut(), 0),
                InvalidArgument,
                "",
            );
            // The same numbers as the unshaped call, whose shape is the field's.
            let mut unshaped = [0f64; 3];
            assert_ok(fmrt_log_likelihood(
                h.field,
                &o,
                x.as_ptr(),
                6,
                3,
                [1.0].as_ptr(),
                1,
                null(),
                unshaped.as_mut_ptr(),
                3,
                null_mut(),
                0,
                null_mut(),
                0,
                null_mut(),
            ));
            assert_ok(call(
                &o,
                shape.as_ptr(),
                x.as_ptr(),
                6,
                lp,
                3,
                x0.as_mut_ptr(),
                6,
            ));
            assert_eq!(log_p, unshaped);
            o.noise_scale = 0.5;
            assert_ok(call(
                &o,
                shape.as_ptr(),
                x.as_ptr(),
                6,
                lp,
                3,
                null_mut(),
                0,
            ));
        }
        let ot = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let field = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).unwrap());
        let rust = Likelihood::new(field, SolverConfig::fixed(Method::Rk4, Steps::Count(10)))
            .with_noise_scale(0.5)
            .unwrap()
            .log_likelihood(
                ndarray::ArrayView2::from_shape((3, 2), &x)
                    .unwrap()
                    .into_dyn(),
            )
            .unwrap();
        assert_eq!(log_p.as_slice(), rust.log_p.as_slice());
    }
}

/// The fixed-batch CosyVoice stand-in (`tests/fixtures/real/cosyvoice_b2.onnx`,
/// batch 2, length `seq_len` dynamic) through the C API: its recipe set on
/// the options, shaped calls for two lengths on one handle, and its golden
/// final states.
mod real_model {
    use super::*;
    use fmrt::field::onnx::ensure_runtime_for_development;
    use fmrt_c_api::likelihood::*;
    use fmrt_c_api::model::*;
    use fmrt_c_api::onnx::{fmrt_onnx_options, fmrt_onnx_options_default};
    use ndarray::ArrayD;

    fn npy(name: &str) -> ArrayD<f32> {
        ndarray_npy::read_npy(real_fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Sets the float32 input `name` of `extras` to `a`.
    ///
    /// # Safety
    ///
    /// `extras` must be live.
    unsafe fn set(extras: *mut fmrt_extras, name: &str, a: &ArrayD<f32>, shared: bool) {
        let set = if shared {
            fmrt_extras_set_shared_tensor
        } else {
            fmrt_extras_set_tensor
        };
        let name = c(name);
        let a = a.as_standard_layout();
        // SAFETY: the array's data and shape as stated.
        assert_ok(unsafe {
            set(
                extras,
                name.as_ptr(),
                fmrt_dtype::Float32 as u32,
                a.as_ptr().cast(),
                a.len(),
                a.shape().as_ptr(),
                a.ndim(),
            )
        });
    }

    /// The conditioning of case `label` (batch 1) as a new extras handle.
    fn case_extras(label: &str) -> *mut fmrt_extras {
        let mut e = null_mut();
        // SAFETY: `e` is written by the call and live afterwards.
        unsafe {
            assert_ok(fmrt_extras_new(&mut e));
            for input in ["mask", "mu", "spks", "cond"] {
                set(
                    e,
                    input,
                    &npy(&format!("cosyvoice_b2.{label}.{input}.npy")),
                    false,
                );
            }
        }
        e
    }

    /// Opens the stand-in with its recipe (x, t, forward, scale 1, guidance
    /// 0.7, mu/spks/cond zeroed), after `configure` has set what it likes on
    /// the options first; returns the model and its field.
    fn open(configure: impl FnOnce(*mut fmrt_model_options)) -> (*mut fmrt_model, *mut fmrt_field) {
        let runtime =
            ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = c(real_fixture("cosyvoice_b2.onnx").to_str().unwrap());
        let lib = c(runtime.library.to_str().unwrap());
        let mut onnx = std::mem::MaybeUninit::uninit();
        let (mut options, mut model, mut field) = (null_mut(), null_mut(), null_mut());
        // SAFETY: valid pointers; the options are freed once.
        unsafe {
            assert_ok(fmrt_onnx_options_default(onnx.as_mut_ptr()));
            let mut onnx: fmrt_onnx_options = onnx.assume_init();
            onnx.state_input = c"x".as_ptr();
            onnx.time_input = c"t".as_ptr();
            onnx.ort_library = lib.as_ptr();
            assert_ok(fmrt_model_options_new(&mut options));
            configure(options);
            assert_ok(fmrt_model_options_set_guidance(options, 0.7));
            for input in [c"mu", c"spks", c"cond"] {
                assert_ok(fmrt_model_options_set_null_zeros(options, input.as_ptr()));
            }
            assert_ok(fmrt_model_options_set_time_direction(
                options,
                c"forward".as_ptr(),
            ));
            assert_ok(fmrt_model_options_set_time_scale(options, 1.0));
            assert_ok(fmrt_model_open(path.as_ptr(), &onnx, options, &mut model));
            fmrt_model_options_free(options);
            assert_ok(fmrt_model_field(model, &mut field));
        }
        (model, field)
    }

    /// The cosine grid of the recipe, 10 Euler steps.
    fn cosine_euler() -> *mut fmrt_solver {
        let mut solver = null_mut();
        // SAFETY: valid pointers.
        assert_ok(unsafe {
            fmrt_solver_time_grid_source(
                c"euler".as_ptr(),
                c"grid = 1 - cos(pi * u / 2)\n".as_ptr(),
                null(),
                null(),
                0,
                10,
                &mut solver,
            )
        });
        solver
    }

    /// max|got − expected| / (1 + max|expected|).
    fn relative_error(got: &[f32], expected: &ArrayD<f32>) -> f64 {
        let scale = expected
            .iter()
            .fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        let diff = got
            .iter()
            .zip(expected.iter())
            .fold(0f64, |m, (&g, &e)| m.max(f64::from(g - e).abs()));
        diff / (1.0 + scale)
    }

    /// The shaped forms of the velocity call, the noise draw and sharded
    /// sampling, for a model whose length comes with each call: the
    /// velocity equals one Euler step of the sampler from the same noise,
    /// the drawn noise is what a seeded run starts from, and shards
    /// concatenate to the whole run bit for bit.
    #[test]
    fn shaped_velocity_noise_and_shards_for_a_dynamic_model() {
        let (model, field) = open(|_| {});
        let mut one_step = null_mut();
        let mut cosine = null_mut();
        // SAFETY: valid pointers and lengths; handles freed once.
        unsafe {
            assert_ok(fmrt_solver_grid(
                c"euler".as_ptr(),
                [0.0, 1.0].as_ptr(),
                2,
                &mut one_step,
            ));
            assert_ok(fmrt_sampler_new(field, one_step, &mut cosine));
            for (label, frames) in [("T37", 37usize), ("T64", 64)] {
                let shape = [80usize, frames];
                let size = 80 * frames;
                let extras = case_extras(label);

                // Noise as drawn for samples 0..2 of seed 5, and sample 1 alone.
                let mut z = vec![0f32; 2 * size];
                assert_ok(fmrt_sampler_draw_noise_shaped(
                    cosine,
                    shape.as_ptr(),
                    2,
                    0,
                    2,
                    5,
                    z.as_mut_ptr(),
                    z.len(),
                ));
                let mut z1 = vec![0f32; size];
                assert_ok(fmrt_sampler_draw_noise_shaped(
                    cosine,
                    shape.as_ptr(),
                    2,
                    1,
                    1,
                    5,
                    z1.as_mut_ptr(),
                    z1.len(),
                ));
                assert_eq!(z1.as_slice(), &z[size..], "{label}: a shard of the noise");

                // One Euler step over [0, 1] from z is z + u(z, 0).
                let mut stepped = vec![0f32; 2 * size];
                assert_ok(fmrt_sampler_integrate_shaped(
                    cosine,
                    shape.as_ptr(),
                    2,
                    2,
                    z.as_ptr(),
                    z.len(),
                    extras,
                    stepped.as_mut_ptr(),
                    stepped.len(),
                    null_mut(),
                ));
                let mut u = vec![0f32; 2 * size];
                assert_ok(fmrt_field_velocity_shaped(
                    field,
                    shape.as_ptr(),
                    2,
                    z.as_ptr(),
                    z.len(),
                    2,
                    [0.0].as_ptr(),
                    1,
                    extras,
                    u.as_mut_ptr(),
                    u.len(),
                ));
                let worst = z
                    .iter()
                    .zip(&u)
                    .zip(&stepped)
                    .fold(0f32, |m, ((z, u), x)| m.max((z + u - x).abs()));
                assert!(worst < 1e-5, "{label}: velocity vs one Euler step: {worst}");

                // The seeded run from that noise, whole and as shards.
                let mut whole = vec![0f32; 2 * size];
                assert_ok(fmrt_sampler_sample_shaped(
                    cosine,
                    shape.as_ptr(),
                    2,
                    2,
                    5,
                    extras,
                    whole.as_mut_ptr(),
                    whole.len(),
                    null_mut(),
                ));
                assert_eq!(
                    whole, stepped,
                    "{label}: the seeded run starts from the drawn noise"
                );
                let mut shard = vec![0f32; size];
                assert_ok(fmrt_sampler_sample_rows_shaped(
                    cosine,
                    shape.as_ptr(),
                    2,
                    1,
                    1,
                    5,
                    extras,
                    shard.as_mut_ptr(),
                    shard.len(),
                    null_mut(),
                ));
                assert_eq!(
                    shard.as_slice(),
                    &whole[size..],
                    "{label}: a shard of the run"
                );

                // The other length's conditioning disagrees with this shape.
                let other = case_extras(if frames == 37 { "T64" } else { "T37" });
                assert_fails(
                    fmrt_field_velocity_shaped(
                        field,
                        shape.as_ptr(),
                        2,
                        z.as_ptr(),
                        z.len(),
                        2,
                        [0.0].as_ptr(),
                        1,
                        other,
                        u.as_mut_ptr(),
                        u.len(),
                    ),
                    ShapeMismatch,
                    "",
                );
                assert_fails(
                    fmrt_field_velocity_shaped(
                        field,
                        shape.as_ptr(),
                        2,
                        z.as_ptr(),
                        z.len() - 1,
                        2,
                        [0.0].as_ptr(),
                        1,
                        extras,
                        u.as_mut_ptr(),
                        u.len(),
                    ),
                    ShapeMismatch,
                    "x holds",
                );
                fmrt_extras_free(other);
                fmrt_extras_free(extras);
            }
            fmrt_sampler_free(cosine);
            fmrt_solver_free(one_step);
            fmrt_field_free(field);
            fmrt_model_free(model);
        }
    }

    /// Both golden cases from one model handle and one sampler, the length
    /// given with each call; a null condition set twice for `mu` keeps the
    /// later value; a batched input may be given shared, whole; the calls
    /// without a shape say to use the shaped ones.
    #[test]
    fn shaped_calls_reproduce_both_lengths_with_one_handle() {
        let (model, field) = open(|o| {
            // Replaced by the recipe's zeros for `mu`, set afterwards.
            // SAFETY: a live handle.
            assert_ok(unsafe { fmrt_model_options_set_null_fill(o, c"mu".as_ptr(), 5.0) });
        });
        let solver = cosine_euler();
        let mut sampler = null_mut();
        // SAFETY: valid pointers; handles freed once.
        unsafe {
            assert_ok(fmrt_sampler_new(field, solver, &mut sampler));
            let mut size = 0;
            assert_fails(
                fmrt_field_state_size(field, &mut size),
                InvalidArgument,
                "_shaped",
            );
            let mut x = [0f32; 80 * 37];
            assert_fails(
                fmrt_sampler_sample(
                    sampler,
                    1,
                    0,
                    null(),
                    0,
                    null(),
                    x.as_mut_ptr(),
                    x.len(),
                    null_mut(),
                    0,
                    null_mut(),
                ),
                InvalidArgument,
                "_shaped",
            );
            for (label, frames) in [("T37", 37usize), ("T64", 64)] {
                let extras = case_extras(label);
                let noise = npy(&format!("cosyvoice_b2.{label}.noise.npy"));
                assert_eq!(noise.shape(), [1, 80, frames]);
                let expected = npy(&format!("cosyvoice_b2.{label}.final.npy"));
                let mut x = vec![0f32; 80 * frames];
                let mut stats = fmrt_stats::default();
                assert_ok(fmrt_sampler_integrate_shaped(
                    sampler,
                    [80usize, frames].as_ptr(),
                    2,
                    1,
                    noise.as_ptr(),
                    noise.len(),
                    extras,
                    x.as_mut_ptr(),
                    x.len(),
                    &mut stats,
                ));
                let err = relative_error(&x, &expected);
                assert!(err < 1e-4, "{label}: relative error {err}");
                assert_eq!(stats.nfe, 10, "one packed batch-2 call per step");

                // A seeded run of the same length through the same handles.
                let mut seeded = vec![0f32; 80 * frames];
                assert_ok(fmrt_sampler_sample_shaped(
                    sampler,
                    [80usize, frames].as_ptr(),
                    2,
                    1,
                    3,
                    extras,
                    seeded.as_mut_ptr(),
                    seeded.len(),
                    null_mut(),
                ));
                assert!(seeded.iter().all(|v| v.is_finite()));

                if label == "T37" {
                    // The mask, given whole for the packed batch-2 call and
                    // shared: the same run.
                    let mask = npy("cosyvoice_b2.T37.mask.npy");
                    let both = ndarray::concatenate(ndarray::Axis(0), &[mask.view(), mask.view()])
                        .unwrap();
                    set(extras, "mask", &both, true);
                    let mut again = vec![0f32; 80 * frames];
                    assert_ok(fmrt_sampler_integrate_shaped(
                        sampler,
                        [80usize, frames].as_ptr(),
                        2,
                        1,
                        noise.as_ptr(),
                        noise.len(),
                        extras,
                        again.as_mut_ptr(),
                        again.len(),
                        null_mut(),
                    ));
                    assert_eq!(again, x, "a shared mask");

                    // Log-likelihoods need the shape too (finite differences:
                    // the divergence without derivatives of the model).
                    let mut fd = null_mut();
                    assert_ok(fmrt_solver_fixed(c"euler".as_ptr(), 2, &mut fd));
                    let mut o = std::mem::MaybeUninit::uninit();
                    assert_ok(fmrt_likelihood_options_default(o.as_mut_ptr()));
                    let mut o: fmrt_likelihood_options = o.assume_init();
                    o.solver = fd;
                    o.divergence = c"finite-difference".as_ptr();
                    let extras = case_extras(label);
                    let mut log_p = [0f64];
                    assert_fails(
                        fmrt_log_likelihood(
                            field,
                            &o,
                            x.as_ptr(),
                            x.len(),
                            1,
                            [1.0].as_ptr(),
                            1,
                            extras,
                            log_p.as_mut_ptr(),
                            1,
                            null_mut(),
                            0,
                            null_mut(),
                            0,
                            null_mut(),
                        ),
                        InvalidArgument,
                        "_shaped",
                    );
                    assert_ok(fmrt_log_likelihood_shaped(
                        field,
                        &o,
                        [80usize, frames].as_ptr(),
                        2,
                        x.as_ptr(),
                        x.len(),
                        1,
                        [1.0].as_ptr(),
                        1,
                        extras,
                        log_p.as_mut_ptr(),
                        1,
                        null_mut(),
                        0,
                        null_mut(),
                        0,
                        null_mut(),
                    ));
                    assert!(log_p[0].is_finite(), "log p = {}", log_p[0]);
                    fmrt_extras_free(extras);
                    fmrt_solver_free(fd);
                }
                fmrt_extras_free(extras);
            }
            fmrt_sampler_free(sampler);
            fmrt_solver_free(solver);
            fmrt_field_free(field);
            fmrt_model_free(model);
        }
    }

    /// What a host can get wrong: lengths that disagree between the state
    /// and a conditioning input (both named), a null tensor of the wrong
    /// batch, a null condition for an input the call lacks, and the new
    /// option setters' NULLs and domains.
    #[test]
    fn mismatched_lengths_and_bad_options_are_statuses() {
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            let mut o = null_mut();
            assert_ok(fmrt_model_options_new(&mut o));
            let one = [0f32; 4];
            for status in [
                fmrt_model_options_set_null_zeros(null_mut(), c"mu".as_ptr()),
                fmrt_model_options_set_null_fill(null_mut(), c"mu".as_ptr(), 0.0),
                fmrt_model_options_set_null_tensor(
                    null_mut(),
                    c"mu".as_ptr(),
                    0,
                    one.as_ptr().cast(),
                    4,
                    [4usize].as_ptr(),
                    1,
                ),
                fmrt_model_options_set_time_direction(null_mut(), c"forward".as_ptr()),
                fmrt_model_options_set_time_scale(null_mut(), 1.0),
            ] {
                assert_fails(status, NullParameter, "`options`");
            }
            assert_fails(
                fmrt_model_options_set_null_zeros(o, null()),
                NullParameter,
                "`input`",
            );
            assert_fails(
                fmrt_model_options_set_null_fill(o, null(), 1.0),
                NullParameter,
                "`input`",
            );
            assert_fails(
                fmrt_model_options_set_null_tensor(
                    o,
                    c"mu".as_ptr(),
                    0,
                    null(),
                    4,
                    [4usize].as_ptr(),
                    1,
                ),
                NullParameter,
                "`data`",
            );
            assert_fails(
                fmrt_model_options_set_null_tensor(
                    o,
                    c"mask".as_ptr(),
                    fmrt_dtype::Bool as u32,
                    [0u8, 2].as_ptr().cast(),
                    2,
                    [2usize].as_ptr(),
                    1,
                ),
                InvalidArgument,
                "holds 2 at element 1",
            );
            assert_fails(
                fmrt_model_options_set_null_tensor(
                    o,
                    c"mu".as_ptr(),
                    0,
                    one.as_ptr().cast(),
                    3,
                    [4usize].as_ptr(),
                    1,
                ),
                ShapeMismatch,
                "n_elements is 3",
            );
            assert_fails(
                fmrt_model_options_set_time_direction(o, null()),
                NullParameter,
                "`direction`",
            );
            assert_fails(
                fmrt_model_options_set_time_direction(o, c"sideways".as_ptr()),
                InvalidArgument,
                "sideways",
            );
            for bad in [0.0, -1000.0, f64::NAN, f64::INFINITY] {
                assert_fails(
                    fmrt_model_options_set_time_scale(o, bad),
                    InvalidArgument,
                    "time scale",
                );
            }
            assert_ok(fmrt_model_options_set_time_direction(
                o,
                c"reversed".as_ptr(),
            ));
            fmrt_model_options_free(o);
        }

        let bad_null = npy("cosyvoice_b2.bad_null_mu_b3.npy");
        let (model, field) = open(|_| {});
        let solver = cosine_euler();
        let (mut sampler, mut bad_sampler) = (null_mut(), null_mut());
        // SAFETY: valid pointers; handles freed once.
        unsafe {
            assert_ok(fmrt_sampler_new(field, solver, &mut sampler));
            let mut x = vec![0f32; 80 * 37];
            let extras = case_extras("T37");
            // mu of 36 frames beside a state of 37.
            set(extras, "mu", &ArrayD::zeros(vec![1, 80, 36]), false);
            let status = fmrt_sampler_sample_shaped(
                sampler,
                [80usize, 37].as_ptr(),
                2,
                1,
                0,
                extras,
                x.as_mut_ptr(),
                x.len(),
                null_mut(),
            );
            assert_fails(status, ShapeMismatch, "seq_len");
            let message = last_error();
            assert!(
                message.contains("`mu`") && message.contains("`x`"),
                "{message} should name both inputs"
            );
            assert!(x.iter().all(|&v| v == 0.0), "nothing written");
            fmrt_extras_free(extras);

            // A null condition naming inputs the call does not give.
            let mut e = null_mut();
            assert_ok(fmrt_extras_new(&mut e));
            set(e, "mask", &npy("cosyvoice_b2.T37.mask.npy"), false);
            set(e, "mu", &npy("cosyvoice_b2.T37.mu.npy"), false);
            assert_fails(
                fmrt_sampler_sample_shaped(
                    sampler,
                    [80usize, 37].as_ptr(),
                    2,
                    1,
                    0,
                    e,
                    x.as_mut_ptr(),
                    x.len(),
                    null_mut(),
                ),
                InvalidArgument,
                "spks",
            );
            fmrt_extras_free(e);
            fmrt_sampler_free(sampler);
            fmrt_field_free(field);
            fmrt_model_free(model);
        }

        // A null tensor for `mu` of batch 3: neither 1 row nor one per sample.
        let mut o = null_mut();
        let (mut model, mut field) = (null_mut(), null_mut());
        let runtime =
            ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = c(real_fixture("cosyvoice_b2.onnx").to_str().unwrap());
        let lib = c(runtime.library.to_str().unwrap());
        // SAFETY: valid pointers; handles freed once.
        unsafe {
            let mut onnx = std::mem::MaybeUninit::uninit();
            assert_ok(fmrt_onnx_options_default(onnx.as_mut_ptr()));
            let mut onnx: fmrt_onnx_options = onnx.assume_init();
            onnx.state_input = c"x".as_ptr();
            onnx.time_input = c"t".as_ptr();
            onnx.ort_library = lib.as_ptr();
            assert_ok(fmrt_model_options_new(&mut o));
            assert_ok(fmrt_model_options_set_guidance(o, 0.7));
            let bad_null = bad_null.as_standard_layout();
            assert_ok(fmrt_model_options_set_null_tensor(
                o,
                c"mu".as_ptr(),
                fmrt_dtype::Float32 as u32,
                bad_null.as_ptr().cast(),
                bad_null.len(),
                bad_null.shape().as_ptr(),
                bad_null.ndim(),
            ));
            assert_ok(fmrt_model_open(path.as_ptr(), &onnx, o, &mut model));
            fmrt_model_options_free(o);
            assert_ok(fmrt_model_field(model, &mut field));
            assert_ok(fmrt_sampler_new(field, solver, &mut bad_sampler));
            let extras = case_extras("T37");
            let mut x = vec![0f32; 80 * 37];
            assert_fails(
                fmrt_sampler_sample_shaped(
                    bad_sampler,
                    [80usize, 37].as_ptr(),
                    2,
                    1,
                    0,
                    extras,
                    x.as_mut_ptr(),
                    x.len(),
                    null_mut(),
                ),
                ShapeMismatch,
                "the null condition of `mu`",
            );
            fmrt_extras_free(extras);
            fmrt_sampler_free(bad_sampler);
            fmrt_solver_free(solver);
            fmrt_field_free(field);
            fmrt_model_free(model);
        }
    }
}

/// The opaque configs that replace the by-value option structs, and the
/// deprecated structs as shims over them.
mod configs {
    use super::*;
    use fmrt::field::onnx::ensure_runtime_for_development;
    use fmrt::likelihood::{Divergence, ProbeDistribution};
    use fmrt::solver::{Controller, ErrorNorm};
    use fmrt_c_api::likelihood::*;
    use fmrt_c_api::model::*;
    use fmrt_c_api::onnx::*;

    fn fixture(name: &str) -> PathBuf {
        root().join("tests/fixtures").join(name)
    }

    #[test]
    fn adaptive_config_setters_check_values_and_reach_the_solver() {
        let mut c = null_mut();
        let mut s = null_mut();
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_fails(fmrt_adaptive_config_new(null_mut()), NullParameter, "`out`");
            assert_ok(fmrt_adaptive_config_new(&mut c));
            assert_eq!((*c).options(), &fmrt::solver::AdaptiveOptions::default());
            // NULL handles, for every setter.
            let n = null_mut();
            for status in [
                fmrt_adaptive_config_set_rtol(n, 1e-3),
                fmrt_adaptive_config_set_atol(n, 1e-3),
                fmrt_adaptive_config_set_safety(n, 0.8),
                fmrt_adaptive_config_set_min_factor(n, 0.5),
                fmrt_adaptive_config_set_max_factor(n, 5.0),
                fmrt_adaptive_config_set_max_steps(n, 9),
                fmrt_adaptive_config_set_initial_step(n, 0.1),
                fmrt_adaptive_config_set_error_norm(n, c"batch".as_ptr()),
                fmrt_adaptive_config_set_controller(n, c"i".as_ptr()),
            ] {
                assert_eq!(status, NullParameter);
            }
            // Bad values are refused by the library's checks, naming the
            // setting, and leave the config as it was.
            let before = (*c).options().clone();
            assert_fails(
                fmrt_adaptive_config_set_rtol(c, -1.0),
                InvalidArgument,
                "rtol",
            );
            assert_fails(
                fmrt_adaptive_config_set_atol(c, 0.0),
                InvalidArgument,
                "atol",
            );
            assert_fails(
                fmrt_adaptive_config_set_atol(c, f64::NAN),
                InvalidArgument,
                "atol",
            );
            assert_fails(
                fmrt_adaptive_config_set_safety(c, 1.5),
                InvalidArgument,
                "safety",
            );
            assert_fails(
                fmrt_adaptive_config_set_min_factor(c, 0.0),
                InvalidArgument,
                "min_factor",
            );
            assert_fails(
                fmrt_adaptive_config_set_max_factor(c, 0.5),
                InvalidArgument,
                "max_factor",
            );
            assert_fails(
                fmrt_adaptive_config_set_max_steps(c, 0),
                InvalidArgument,
                "max_steps",
            );
            assert_fails(
                fmrt_adaptive_config_set_initial_step(c, -0.1),
                InvalidArgument,
                "initial_step",
            );
            assert_fails(
                fmrt_adaptive_config_set_error_norm(c, c"worst".as_ptr()),
                InvalidArgument,
                "worst",
            );
            assert_fails(
                fmrt_adaptive_config_set_controller(c, c"pid".as_ptr()),
                InvalidArgument,
                "pid",
            );
            assert_fails(
                fmrt_adaptive_config_set_error_norm(c, null()),
                NullParameter,
                "`norm`",
            );
            assert_eq!((*c).options(), &before);
            // Each setter changes what the Rust side receives.
            assert_ok(fmrt_adaptive_config_set_rtol(c, 1e-7));
            assert_ok(fmrt_adaptive_config_set_atol(c, 1e-8));
            assert_ok(fmrt_adaptive_config_set_safety(c, 0.8));
            assert_ok(fmrt_adaptive_config_set_min_factor(c, 0.3));
            assert_ok(fmrt_adaptive_config_set_max_factor(c, 4.0));
            assert_ok(fmrt_adaptive_config_set_max_steps(c, 77));
            assert_ok(fmrt_adaptive_config_set_initial_step(c, 0.01));
            assert_ok(fmrt_adaptive_config_set_error_norm(c, c"Batch".as_ptr()));
            assert_ok(fmrt_adaptive_config_set_controller(c, c"I".as_ptr()));
            let want = fmrt::solver::AdaptiveOptions {
                rtol: 1e-7,
                atol: 1e-8,
                safety: 0.8,
                min_factor: 0.3,
                max_factor: 4.0,
                max_steps: 77,
                initial_step: Some(0.01),
                norm: ErrorNorm::Batch,
                controller: Controller::I,
            };
            assert_eq!((*c).options(), &want);
            assert_ok(fmrt_adaptive_config_set_initial_step(c, 0.0));
            assert_eq!((*c).options().initial_step, None, "0 is automatic");
            assert_ok(fmrt_adaptive_config_set_initial_step(c, 0.01));

            assert_fails(
                fmrt_solver_adaptive_config(null(), c, &mut s),
                NullParameter,
                "`method`",
            );
            assert_fails(
                fmrt_solver_adaptive_config(c"rk4".as_ptr(), c, &mut s),
                InvalidArgument,
                "no embedded error estimate",
            );
            assert_fails(
                fmrt_solver_adaptive_config(c"tsit5".as_ptr(), c, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_solver_adaptive_config(c"tsit5".as_ptr(), c, &mut s));
            assert_eq!((*s).config().adaptive_options(), Some(&want));
            assert_eq!((*s).config().method, Method::Tsit5);
            fmrt_adaptive_config_free(c);
            // The solver copied the config.
            assert_eq!((*s).config().adaptive_options(), Some(&want));

            // The deprecated struct makes the same solver as the handle.
            let old = fmrt_adaptive_options {
                rtol: 1e-7,
                atol: 1e-8,
                safety: 0.8,
                min_factor: 0.3,
                max_factor: 4.0,
                max_steps: 77,
                initial_step: 0.01,
            };
            let mut shim = null_mut();
            assert_ok(fmrt_solver_adaptive(c"tsit5".as_ptr(), &old, &mut shim));
            let mut from_handle = null_mut();
            let mut c = null_mut();
            assert_ok(fmrt_adaptive_config_new(&mut c));
            for (set, v) in [
                (
                    fmrt_adaptive_config_set_rtol as unsafe extern "C" fn(_, _) -> _,
                    1e-7,
                ),
                (fmrt_adaptive_config_set_atol, 1e-8),
                (fmrt_adaptive_config_set_safety, 0.8),
                (fmrt_adaptive_config_set_min_factor, 0.3),
                (fmrt_adaptive_config_set_max_factor, 4.0),
                (fmrt_adaptive_config_set_initial_step, 0.01),
            ] {
                assert_ok(set(c, v));
            }
            assert_ok(fmrt_adaptive_config_set_max_steps(c, 77));
            assert_ok(fmrt_solver_adaptive_config(
                c"tsit5".as_ptr(),
                c,
                &mut from_handle,
            ));
            assert_eq!((*shim).config(), (*from_handle).config());
            // The shim now checks every setting, not only the tolerances.
            let mut refused = null_mut();
            assert_fails(
                fmrt_solver_adaptive(
                    c"tsit5".as_ptr(),
                    &fmrt_adaptive_options { safety: 2.0, ..old },
                    &mut refused,
                ),
                InvalidArgument,
                "safety",
            );
            assert!(refused.is_null());
            // NULL config: the defaults.
            let mut d = null_mut();
            assert_ok(fmrt_solver_adaptive_config(
                c"dopri5".as_ptr(),
                null(),
                &mut d,
            ));
            assert_eq!(
                (*d).config().adaptive_options(),
                Some(&fmrt::solver::AdaptiveOptions::default())
            );
            for h in [s, shim, from_handle, d] {
                fmrt_solver_free(h);
            }
            fmrt_adaptive_config_free(c);
            fmrt_adaptive_config_free(null_mut());
        }
    }

    #[test]
    fn onnx_config_setters_check_values_and_load_like_the_options_struct() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = c(fixture("gmm_ot.onnx").to_str().unwrap());
        let mut c = null_mut();
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_fails(fmrt_onnx_config_new(null_mut()), NullParameter, "`out`");
            assert_ok(fmrt_onnx_config_new(&mut c));
            let n = null_mut();
            for status in [
                fmrt_onnx_config_set_state_input(n, c"x".as_ptr()),
                fmrt_onnx_config_set_time_input(n, c"t".as_ptr()),
                fmrt_onnx_config_set_output(n, c"v".as_ptr()),
                fmrt_onnx_config_set_state_shape(n, [2usize].as_ptr(), 1),
                fmrt_onnx_config_set_max_batch(n, 4),
                fmrt_onnx_config_set_sessions(n, 2),
                fmrt_onnx_config_set_intra_threads(n, 1),
                fmrt_onnx_config_set_ort_library(n, c"x.so".as_ptr()),
                fmrt_onnx_config_set_provider(n, c"cpu".as_ptr()),
                fmrt_onnx_config_set_provider_policy(n, c"prefer".as_ptr()),
            ] {
                assert_eq!(status, NullParameter);
            }
            let before = format!("{:?}", (*c).builder());
            assert_fails(
                fmrt_onnx_config_set_max_batch(c, 0),
                InvalidArgument,
                "max_batch",
            );
            assert_fails(
                fmrt_onnx_config_set_sessions(c, 0),
                InvalidArgument,
                "sessions",
            );
            assert_fails(
                fmrt_onnx_config_set_intra_threads(c, 0),
                InvalidArgument,
                "threads",
            );
            assert_fails(
                fmrt_onnx_config_set_state_shape(c, null(), 0),
                InvalidArgument,
                "rank",
            );
            assert_fails(
                fmrt_onnx_config_set_provider(c, c"gpu".as_ptr()),
                InvalidArgument,
                "\"gpu\"",
            );
            assert_fails(
                fmrt_onnx_config_set_provider(c, c"cuda:-1".as_ptr()),
                InvalidArgument,
                "cuda:-1",
            );
            assert_fails(
                fmrt_onnx_config_set_provider_policy(c, c"maybe".as_ptr()),
                InvalidArgument,
                "\"maybe\"",
            );
            assert_fails(
                fmrt_onnx_config_set_state_shape(c, null(), 2),
                NullParameter,
                "`shape`",
            );
            assert_fails(
                fmrt_onnx_config_set_output(c, null()),
                NullParameter,
                "`name`",
            );
            assert_eq!(format!("{:?}", (*c).builder()), before, "unchanged");
            // Setters reach the builder.
            assert_ok(fmrt_onnx_config_set_max_batch(c, 7));
            assert_ok(fmrt_onnx_config_set_sessions(c, 2));
            assert_ok(fmrt_onnx_config_set_intra_threads(c, 1));
            assert_ok(fmrt_onnx_config_set_provider(c, c"CPU".as_ptr()));
            assert_ok(fmrt_onnx_config_set_provider_policy(c, c"prefer".as_ptr()));
            let got = format!("{:?}", (*c).builder());
            for want in [
                "max_batch: 7",
                "sessions: 2",
                "intra_threads: Some(1)",
                "policy: Prefer",
            ] {
                assert!(got.contains(want), "{want} in {got}");
            }

            // The handle and the deprecated struct load the same field.
            let mut old = std::mem::MaybeUninit::uninit();
            assert_ok(fmrt_onnx_options_default(old.as_mut_ptr()));
            let old = fmrt_onnx_options {
                max_batch: 7,
                sessions: 2,
                intra_threads: 1,
                provider: c"cpu".as_ptr(),
                provider_policy: c"prefer".as_ptr(),
                ..old.assume_init()
            };
            let (mut a, mut b, mut m) = (null_mut(), null_mut(), null_mut());
            assert_fails(
                fmrt_field_onnx_file_config(null(), c, &mut a),
                NullParameter,
                "`path`",
            );
            assert_fails(
                fmrt_field_onnx_file_config(path.as_ptr(), c, null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_field_onnx_file_config(path.as_ptr(), c, &mut a));
            assert_ok(fmrt_field_onnx_file(path.as_ptr(), &old, &mut b));
            let bytes = std::fs::read(fixture("gmm_ot.onnx")).unwrap();
            assert_ok(fmrt_field_onnx_bytes_config(
                bytes.as_ptr(),
                bytes.len(),
                null(),
                &mut m,
            ));
            let x = [0.5f32, -1.0, 2.0, 0.25];
            let velocity = |f| {
                let mut v = [0f32; 4];
                assert_ok(fmrt_field_velocity(
                    f,
                    x.as_ptr(),
                    4,
                    2,
                    &0.3,
                    1,
                    null(),
                    v.as_mut_ptr(),
                    4,
                ));
                v
            };
            assert_eq!(velocity(a), velocity(b));
            assert_eq!(velocity(a), velocity(m));
            for f in [a, b, m] {
                fmrt_field_free(f);
            }

            // A model opens with a config too.
            let x1 = super::c(fixture("gmm_ot_x1.onnx").to_str().unwrap());
            let mut model = null_mut();
            assert_fails(
                fmrt_model_open_config(null(), c, null(), &mut model),
                NullParameter,
                "`path`",
            );
            assert_ok(fmrt_model_open_config(x1.as_ptr(), c, null(), &mut model));
            fmrt_model_free(model);
            fmrt_onnx_config_free(c);
            fmrt_onnx_config_free(null_mut());
        }
    }

    /// Runs `fmrt_log_likelihood_config` on the ring of `h` and returns log p
    /// and the counters (`size` as given).
    unsafe fn log_p(
        field: *const fmrt_field,
        c: *const fmrt_likelihood_config,
        size: usize,
    ) -> (fmrt_status, [f64; 3], fmrt_likelihood_counters) {
        const X: [f32; 6] = [4.0, 0.1, -2.0, 2.5, 0.3, -0.2];
        let mut out = [0f64; 3];
        let mut counters = fmrt_likelihood_counters {
            size,
            ..Default::default()
        };
        // SAFETY: the caller's handles; buffers with the stated lengths.
        let status = unsafe {
            fmrt_log_likelihood_config(
                field,
                c,
                X.as_ptr(),
                6,
                3,
                &1.0,
                1,
                null(),
                out.as_mut_ptr(),
                3,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut counters,
            )
        };
        (status, out, counters)
    }

    #[test]
    fn likelihood_config_setters_check_values_and_match_the_options_struct() {
        let h = Handles::new();
        let mut c = null_mut();
        let full = std::mem::size_of::<fmrt_likelihood_counters>();
        // SAFETY: valid or NULL pointers; handles freed once.
        unsafe {
            assert_fails(
                fmrt_likelihood_config_new(null_mut()),
                NullParameter,
                "`out`",
            );
            assert_ok(fmrt_likelihood_config_new(&mut c));
            assert_eq!((*c).divergence(), Some(Divergence::Exact));
            assert_eq!(
                (*c).solver(),
                SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5)
            );
            let n = null_mut();
            for status in [
                fmrt_likelihood_config_set_solver(n, h.solver),
                fmrt_likelihood_config_set_divergence(n, c"exact".as_ptr()),
                fmrt_likelihood_config_set_probes(n, 2),
                fmrt_likelihood_config_set_distribution(n, c"gaussian".as_ptr()),
                fmrt_likelihood_config_set_epsilon(n, 1e-2),
                fmrt_likelihood_config_set_seed(n, 1),
                fmrt_likelihood_config_set_noise_scale(n, 2.0),
            ] {
                assert_eq!(status, NullParameter);
            }
            assert_fails(
                fmrt_likelihood_config_set_divergence(c, c"guess".as_ptr()),
                InvalidArgument,
                "guess",
            );
            assert_fails(
                fmrt_likelihood_config_set_probes(c, 0),
                InvalidArgument,
                "probes",
            );
            assert_fails(
                fmrt_likelihood_config_set_distribution(c, c"uniform".as_ptr()),
                InvalidArgument,
                "uniform",
            );
            assert_fails(
                fmrt_likelihood_config_set_epsilon(c, 0.0),
                InvalidArgument,
                "epsilon",
            );
            assert_fails(
                fmrt_likelihood_config_set_epsilon(c, f64::INFINITY),
                InvalidArgument,
                "epsilon",
            );
            assert_fails(
                fmrt_likelihood_config_set_noise_scale(c, -1.0),
                InvalidArgument,
                "-1",
            );
            assert_eq!((*c).divergence(), Some(Divergence::Exact), "unchanged");
            assert_eq!((*c).noise_scale(), None);
            // Setters reach the Rust side.
            assert_ok(fmrt_likelihood_config_set_solver(c, h.solver));
            assert_eq!((*c).solver(), (*h.solver).config().clone());
            assert_ok(fmrt_likelihood_config_set_divergence(
                c,
                c"Hutchinson".as_ptr(),
            ));
            assert_ok(fmrt_likelihood_config_set_probes(c, 3));
            assert_ok(fmrt_likelihood_config_set_distribution(
                c,
                c"gaussian".as_ptr(),
            ));
            assert_ok(fmrt_likelihood_config_set_seed(c, 11));
            assert_ok(fmrt_likelihood_config_set_noise_scale(c, 1.5));
            assert_eq!(
                (*c).divergence(),
                Some(Divergence::Hutchinson {
                    probes: 3,
                    distribution: ProbeDistribution::Gaussian
                })
            );
            assert_eq!(((*c).seed(), (*c).noise_scale()), (11, Some(1.5)));

            // The deprecated struct gives the same numbers as the handle.
            let mut o = std::mem::MaybeUninit::uninit();
            assert_ok(fmrt_likelihood_options_default(o.as_mut_ptr()));
            let o = fmrt_likelihood_options {
                solver: h.solver,
                divergence: c"hutchinson".as_ptr(),
                probes: 3,
                distribution: c"gaussian".as_ptr(),
                seed: 11,
                noise_scale: 1.5,
                ..o.assume_init()
            };
            let (status, new_p, counters) = log_p(h.field, c, full);
            assert_ok(status);
            let x: [f32; 6] = [4.0, 0.1, -2.0, 2.5, 0.3, -0.2];
            let mut old_p = [0f64; 3];
            let mut stats = fmrt_likelihood_stats::default();
            assert_ok(fmrt_log_likelihood(
                h.field,
                &o,
                x.as_ptr(),
                6,
                3,
                &1.0,
                1,
                null(),
                old_p.as_mut_ptr(),
                3,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut stats,
            ));
            assert_eq!(new_p, old_p);
            assert_eq!(counters.size, full, "size stays as the caller set it");
            assert_eq!(
                (counters.nfe, counters.accepted, counters.solves),
                (stats.nfe, stats.accepted, 1)
            );
            assert_eq!(counters.stacked_calls, 0, "an analytic field");
            assert_eq!(counters.jvp_calls, stats.jvp_calls);

            // The counters' size: too small is refused before any work; a
            // shorter struct (an older caller) receives only what fits.
            let (status, _, _) = log_p(h.field, c, 4);
            assert_fails(status, InvalidArgument, "out_counters->size");
            let short = std::mem::offset_of!(fmrt_likelihood_counters, rejected);
            let (status, _, got) = log_p(h.field, c, short);
            assert_ok(status);
            assert_eq!((got.nfe, got.accepted), (counters.nfe, counters.accepted));
            assert_eq!((got.rejected, got.jvp_calls, got.solves), (0, 0, 0));

            // The other entry points take the config as well.
            let mut xs = [0f32; 6];
            let mut lp = [0f64; 3];
            let mut sc = fmrt_likelihood_counters {
                size: full,
                ..Default::default()
            };
            assert_ok(fmrt_sample_with_log_prob_config(
                h.field,
                c,
                x.as_ptr(),
                6,
                3,
                null(),
                xs.as_mut_ptr(),
                6,
                lp.as_mut_ptr(),
                3,
                &mut sc,
            ));
            assert!(sc.nfe > 0 && sc.solves == 1);
            let (mut t, mut tp) = ([0f64; 3], [0f64; 3]);
            assert_ok(fmrt_most_probable_time_config(
                h.field,
                c,
                x.as_ptr(),
                6,
                3,
                0.5,
                1.0,
                0.1,
                null(),
                t.as_mut_ptr(),
                3,
                tp.as_mut_ptr(),
                3,
            ));
            assert!(t.iter().all(|t| (0.5..=1.0).contains(t)));
            let (status, _, _) = log_p(null(), c, full);
            assert_fails(status, NullParameter, "`field`");
            // NULL config: the defaults.
            let (status, _, d) = log_p(h.field, null(), full);
            assert_ok(status);
            assert!(d.accepted > 0);
            fmrt_likelihood_config_free(c);
            fmrt_likelihood_config_free(null_mut());
        }
    }

    #[test]
    fn counters_tell_the_stacked_path_from_separate_calls() {
        ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
        let path = c(fixture("gmm_ot.onnx").to_str().unwrap());
        let (mut field, mut c) = (null_mut(), null_mut());
        // SAFETY: valid pointers; handles freed once.
        unsafe {
            assert_ok(fmrt_field_onnx_file_config(
                path.as_ptr(),
                null(),
                &mut field,
            ));
            assert_ok(fmrt_likelihood_config_new(&mut c));
            let (status, _, got) = log_p(field, c, std::mem::size_of::<fmrt_likelihood_counters>());
            assert_ok(status);
            assert!(got.nfe > 0);
            assert_eq!(got.stacked_calls, got.nfe, "one stacked call per stage");
            assert_eq!((got.velocity_calls, got.jvp_calls), (0, 0));
            // The deprecated stats count each stacked call as one of each.
            let x: [f32; 6] = [4.0, 0.1, -2.0, 2.5, 0.3, -0.2];
            let mut lp = [0f64; 3];
            let mut stats = fmrt_likelihood_stats::default();
            assert_ok(fmrt_log_likelihood(
                field,
                null(),
                x.as_ptr(),
                6,
                3,
                &1.0,
                1,
                null(),
                lp.as_mut_ptr(),
                3,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut stats,
            ));
            assert_eq!(
                (stats.velocity_calls, stats.jvp_calls),
                (got.stacked_calls, got.stacked_calls)
            );
            fmrt_likelihood_config_free(c);
            fmrt_field_free(field);
        }
    }
}

// ---------------------------------------------------------------------------
// The work-precision table (`fmrt_tune`).

mod tune_table {
    use super::*;
    use fmrt_c_api::tune::*;

    /// The table the Rust library computes for what `tests/c/tune.c` asks.
    fn rust_table() -> fmrt::tune::TuneTable {
        let ot: Arc<dyn Schedule> = Arc::new(Scheduler::builtin("ot", &[]).unwrap());
        let field = GaussianMixture::ring(8, 4.0, 0.3, ot.clone()).unwrap();
        let sampler = Sampler::new(
            Arc::new(field),
            SolverConfig::fixed(Method::Euler, Steps::Count(1)),
        );
        let options = fmrt::tune::TuneOptions {
            budgets: vec![10],
            samples: 128,
            seed: 7,
            schedule: Some(ot),
            ..fmrt::tune::TuneOptions::default()
        };
        fmrt::tune::tune(&sampler, &options).unwrap()
    }

    #[test]
    fn c_tune_program_prints_the_table_the_rust_library_computes() {
        let exe = build_program("cc", "c11", &[crate_dir().join("tests/c/tune.c")], "tune");
        let out = run(&exe, &[]);
        assert!(out.ends_with("tune ok\n"), "{out}");
        let table = rust_table();
        assert!(
            out.starts_with(&format!(
                "rows {} skipped {}\n",
                table.rows.len(),
                table.skipped.len()
            )),
            "{out}"
        );
        let printed: Vec<&str> = out.lines().filter(|l| l.starts_with("row ")).collect();
        assert_eq!(printed.len(), table.rows.len());
        for (line, r) in printed.iter().zip(&table.rows) {
            // The grid label holds a space: compare the whole line.
            let want = format!(
                "row {} {} {} {} {} ",
                r.method, r.grid, r.budget, r.steps, r.calls
            );
            assert!(line.starts_with(&want), "{line} vs {want}");
            let numbers: Vec<f64> = line
                .rsplitn(4, ' ')
                .take(3)
                .map(|v| v.parse().unwrap())
                .collect();
            assert_eq!(numbers, vec![r.max, r.p99, r.median], "{line}");
        }
        let best = table.best(10).unwrap();
        let line = out.lines().find(|l| l.starts_with("best ")).unwrap();
        assert_eq!(
            line,
            format!(
                "best {} {} {} {}",
                best.method,
                best.grid,
                best.calls,
                line.rsplit(' ').next().unwrap()
            )
        );
        let median: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(median, best.median);
        let refused: Vec<&str> = out.lines().filter(|l| l.starts_with("refused ")).collect();
        assert_eq!(
            refused,
            [
                "refused INVALID_ARGUMENT",
                "refused INVALID_ARGUMENT",
                "refused NULL_PARAMETER",
                "refused INVALID_ARGUMENT",
                "refused INVALID_ARGUMENT"
            ]
        );
    }

    #[test]
    fn tune_entry_points_check_their_arguments() {
        let h = Handles::new();
        let budgets = [8usize];
        let mut table = null_mut();
        let mut len = 0usize;
        let mut row = std::mem::MaybeUninit::<fmrt_tune_row>::uninit();
        // SAFETY: valid or NULL pointers; the table is freed once.
        unsafe {
            assert_fails(
                fmrt_tune(
                    h.sampler,
                    budgets.as_ptr(),
                    1,
                    4,
                    0,
                    1e-7,
                    null(),
                    null(),
                    null_mut(),
                ),
                NullParameter,
                "out",
            );
            assert_fails(
                fmrt_tune(h.sampler, null(), 1, 4, 0, 1e-7, null(), null(), &mut table),
                NullParameter,
                "budgets",
            );
            assert_fails(
                fmrt_tune(
                    h.sampler,
                    budgets.as_ptr(),
                    0,
                    4,
                    0,
                    1e-7,
                    null(),
                    null(),
                    &mut table,
                ),
                InvalidArgument,
                "budget",
            );
            assert_fails(
                fmrt_tune(
                    h.sampler,
                    budgets.as_ptr(),
                    1,
                    0,
                    0,
                    1e-7,
                    null(),
                    null(),
                    &mut table,
                ),
                InvalidArgument,
                "sample",
            );
            assert_fails(
                fmrt_tune(
                    h.sampler,
                    budgets.as_ptr(),
                    1,
                    4,
                    0,
                    f64::NAN,
                    null(),
                    null(),
                    &mut table,
                ),
                InvalidArgument,
                "reference_tol",
            );
            assert!(table.is_null());
            assert_fails(
                fmrt_tune_table_len(null(), &mut len),
                NullParameter,
                "table",
            );
            // Without a schedule the edm grid is skipped, with its reason.
            assert_ok(fmrt_tune(
                h.sampler,
                budgets.as_ptr(),
                1,
                4,
                0,
                1e-7,
                h.extras,
                null(),
                &mut table,
            ));
            assert_ok(fmrt_tune_table_skipped_len(table, &mut len));
            assert!(len > 0);
            let mut skipped = std::mem::MaybeUninit::<fmrt_tune_skipped>::uninit();
            assert_ok(fmrt_tune_table_skipped(table, 0, skipped.as_mut_ptr()));
            let skipped = skipped.assume_init();
            let reason = CStr::from_ptr(skipped.reason).to_string_lossy();
            assert!(reason.contains("schedule"), "{reason}");
            assert_fails(
                fmrt_tune_table_skipped(table, len, null_mut()),
                NullParameter,
                "out",
            );
            assert_ok(fmrt_tune_table_len(table, &mut len));
            assert_fails(
                fmrt_tune_table_row(table, len, row.as_mut_ptr()),
                InvalidArgument,
                "out of range",
            );
            assert_ok(fmrt_tune_table_row(table, 0, row.as_mut_ptr()));
            assert!(row.assume_init().calls <= 8);
            fmrt_tune_table_free(table);
            fmrt_tune_table_free(null_mut());
        }
    }
}
