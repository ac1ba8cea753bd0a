//! The command line's `.npy` and `.csv` array readers (`cli/src/npy.rs`,
//! compiled here from the CLI's own source): the float reader, the
//! conditioning reader (float32/float64/int64/int32/uint8/bool, then
//! converted to every conditioning type) and the time-list reader. No file
//! may panic or make a reader allocate beyond what the file's length
//! justifies.
//!
//! Input: the first byte picks the extension (even: `.npy`, odd: `.csv`); the
//! rest is the file's content, written to a scratch file the reader opens.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

// The reader and the failure type it reports with, from the CLI's source: the
// CLI is a binary only, and this keeps its build (clap, plotters) out of the
// sanitizer build while fuzzing exactly the code `fmrt` ships.
#[allow(dead_code)]
#[path = "../../cli/src/failure.rs"]
mod failure;
#[allow(dead_code)]
#[path = "../../cli/src/npy.rs"]
mod npy;

/// Largest number of floats a file of `len` bytes may decode to: one per byte
/// is generous for both formats (a `.npy` float takes 4 or 8 bytes, a CSV
/// number at least one digit and a separator).
fn max_values(len: usize) -> usize {
    len + 1
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, content)) = data.split_first() else {
        return;
    };
    let ext = if kind % 2 == 0 { "npy" } else { "csv" };
    let path = scratch_path(ext);
    if std::fs::write(&path, content).is_err() {
        return;
    }
    if let Ok(array) = npy::read_f32(&path) {
        assert!(
            array.len() <= max_values(content.len()),
            "{} values from {} bytes",
            array.len(),
            content.len()
        );
    }
    if let Ok(tensor) = npy::read_tensor(&path) {
        let count: usize = tensor.shape().iter().product();
        assert!(
            count <= max_values(content.len()),
            "{count} values from {} bytes",
            content.len()
        );
        for dtype in fmrt::field::ExtraDtype::ALL {
            // Lossless conversions or an error; never a panic.
            if let Ok(converted) = tensor.convert_to(dtype) {
                assert_eq!(converted.shape(), tensor.shape());
            }
        }
    }
    if let Ok(times) = npy::read_times(&path) {
        assert!(times.len() <= max_values(content.len()));
        let _ = fmrt::grid::explicit_steps(&times);
    }
});

/// A scratch file of this process (libFuzzer runs one input at a time).
fn scratch_path(ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fmrt-fuzz-{}.{ext}", std::process::id()))
}
