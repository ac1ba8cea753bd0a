//! The `fmrt` binary and the C API agree: a model opened through the C
//! functions samples bit for bit like `fmrt sample` with its defaults.
//!
//! Here rather than in `c-api/tests/`, because only this package's tests have
//! the `fmrt` binary built for them (`CARGO_BIN_EXE_fmrt`); the C functions
//! are called straight from the `fmrt_c_api` crate, a dev-dependency.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};

use fmrt::field::onnx::ensure_runtime_for_development;
use fmrt_c_api::error::fmrt_last_error;
use fmrt_c_api::field::fmrt_field_free;
use fmrt_c_api::fmrt_status;
use fmrt_c_api::model::*;
use fmrt_c_api::sampler::*;
use fmrt_c_api::solver::*;

/// The repository root (this crate sits in `cli/` under it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent folder")
        .to_path_buf()
}

/// Asserts that a C call succeeded, showing its message when it did not.
#[track_caller]
fn assert_ok(status: fmrt_status) {
    // SAFETY: fmrt_last_error never returns NULL and the string lives until the
    // next failing call on this thread.
    let message = unsafe { CStr::from_ptr(fmrt_last_error()) }.to_string_lossy();
    assert_eq!(status, fmrt_status::Ok, "message: {message}");
}

/// Samples `n` points of the 2-D model at `path` with `seed` through the C
/// API: the model opened with its metadata, adaptive dopri5 with the default
/// tolerances.
fn sample_through_c(path: &Path, n: usize, seed: u64) -> Vec<f32> {
    let path = CString::new(path.to_str().unwrap()).unwrap();
    let method: *const c_char = c"dopri5".as_ptr();
    let (mut model, mut field, mut solver, mut sampler) =
        (null_mut(), null_mut(), null_mut(), null_mut());
    let mut x = vec![0.0f32; n * 2];
    // SAFETY: valid or NULL pointers; handles freed once.
    unsafe {
        assert_ok(fmrt_model_open(path.as_ptr(), null(), null(), &mut model));
        assert_ok(fmrt_model_field(model, &mut field));
        assert_ok(fmrt_solver_adaptive(method, null(), &mut solver));
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
        fmrt_sampler_free(sampler);
        fmrt_solver_free(solver);
        fmrt_field_free(field);
        fmrt_model_free(model);
    }
    x
}

/// The x1 export opened from C with its metadata samples bit for bit like
/// `fmrt sample` with its defaults (dopri5, the same seed).
#[test]
fn a_model_opened_from_c_samples_like_the_cli() {
    ensure_runtime_for_development(&root()).expect("ONNX Runtime is not available");
    let model = root().join("tests/fixtures/gmm_ot_x1.onnx");
    let dir = std::env::temp_dir().join(format!("fmrt-cli-c-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("cli_x1_samples.npy");
    let o = Command::new(env!("CARGO_BIN_EXE_fmrt"))
        .args(["sample", "--model"])
        .arg(&model)
        .args(["-n", "64", "--seed", "11", "--quiet", "-o"])
        .arg(&out)
        .output()
        .expect("the fmrt CLI runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli: ndarray::Array2<f32> = ndarray_npy::read_npy(&out).expect("a float32 .npy");
    let from_c = sample_through_c(&model, 64, 11);
    assert_eq!(cli.iter().copied().collect::<Vec<_>>(), from_c);
    std::fs::remove_dir_all(&dir).ok();
}
