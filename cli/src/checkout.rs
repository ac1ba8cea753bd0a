//! The fmrt source checkout this binary runs from, if any.
//!
//! Run from a checkout (`cargo run -- …`, or `target/release/fmrt`), fmrt
//! finds the checkout's ONNX Runtime in `.ort/lib/` and its shipped models. A
//! binary installed elsewhere ignores the folder it was built in: that folder
//! may not be the user's, and a library planted there must not be loaded.

use std::path::{Path, PathBuf};

/// The source tree this binary was built from, when the running executable
/// lies inside it (as `target/<profile>/fmrt` does).
pub fn source_checkout() -> Option<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let root = built_from.canonicalize().ok()?;
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    exe.starts_with(&root).then_some(root)
}
