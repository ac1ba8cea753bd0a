//! Memory bounds of the command line, measured on the `fmrt` processes this
//! test binary runs (its own binary, so no other test's children count).

use std::path::Path;
use std::process::Command;

use fmrt::field::onnx::ensure_runtime_for_development;
use ndarray::ArrayD;
use ndarray_npy::read_npy;

fn repo(path: &str) -> String {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join(path)
        .display()
        .to_string()
}

/// The largest resident set of any child process waited for so far, in bytes.
fn peak_of_children() -> u64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    // Linux reports kilobytes.
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

/// Two million samples of a 2-D model (16 MB of output) go through the
/// solver and into the file one chunk at a time: the process peaks under
/// 200 MB (it peaked at 782 MB when the whole batch went through at once),
/// and the file holds every sample.
#[test]
fn two_million_samples_stream_within_200_mb() {
    ensure_runtime_for_development(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")))
        .expect("ONNX Runtime is available");
    let out = std::env::temp_dir().join(format!("fmrt-memory-{}.npy", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_fmrt"))
        .args([
            "sample",
            "--model",
            &repo("tests/fixtures/gmm_ot.onnx"),
            "-n",
            "2000000",
            "--solver",
            "euler",
            "--steps",
            "2",
            "--quiet",
            "-o",
        ])
        .arg(&out)
        .output()
        .expect("the fmrt binary runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let peak = peak_of_children();
    let x: ArrayD<f32> = read_npy(&out).expect("a float32 .npy");
    let _ = std::fs::remove_file(&out);
    assert_eq!(x.shape(), &[2_000_000, 2]);
    assert!(x.iter().all(|v| v.is_finite()));
    println!("peak resident memory: {:.1} MB", peak as f64 / 1e6);
    assert!(peak < 200_000_000, "peak {peak} bytes");
}

/// A sample count the machine could never hold: `fmrt sample -n 10^11`
/// streams, so it runs (until the disk is full; stopped here after a
/// moment), writing into its partial file; the library asked for all of it
/// in one batch refuses with an error instead of aborting.
#[test]
fn an_impossible_batch_is_an_error_not_an_abort() {
    ensure_runtime_for_development(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")))
        .expect("ONNX Runtime is available");
    let out = std::env::temp_dir().join(format!("fmrt-huge-{}.npy", std::process::id()));
    let partial = out.with_file_name(format!("fmrt-huge-{}.npy.partial", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fmrt"))
        .args([
            "sample",
            "--model",
            &repo("tests/fixtures/gmm_ot.onnx"),
            "-n",
            "100000000000",
            "--solver",
            "euler",
            "--steps",
            "1",
            "--chunk",
            "1000",
            "--quiet",
            "-o",
        ])
        .arg(&out)
        .spawn()
        .expect("the fmrt binary runs");
    let mut written = 0;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        written = std::fs::metadata(&partial).map_or(0, |m| m.len());
        if written > 128 + 8 * 1000 {
            break;
        }
    }
    let still_running = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&partial);
    assert!(still_running, "fmrt -n 10^11 stopped instead of streaming");
    assert!(written > 128 + 8 * 1000, "only {written} bytes written");

    use fmrt::field::analytic::GaussianMixture;
    use fmrt::sampler::Sampler;
    use fmrt::scheduler::Scheduler;
    use fmrt::solver::{Method, SolverConfig, Steps};
    use std::sync::Arc;
    let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("built-in"));
    let ring = Arc::new(GaussianMixture::ring(8, 4.0, 0.3, ot).expect("mixture"));
    let sampler = Sampler::new(ring, SolverConfig::fixed(Method::Euler, Steps::Count(2)));
    let err = sampler.sample(100_000_000_000, 0).unwrap_err();
    assert_eq!(err.kind(), fmrt::error::ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("GiB"), "{err}");
}
