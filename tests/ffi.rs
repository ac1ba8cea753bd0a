//! The C ABI: the committed header, every entry point's argument checks, and
//! the C and C++ examples and plugin compiled and run against the library.

use std::path::{Path, PathBuf};

/// The crate root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

mod header {
    use super::*;

    /// Regenerates `include/fmrt.h` with the pinned cbindgen and fails on any
    /// difference; `FMRT_BLESS=1` rewrites the file instead.
    #[test]
    fn committed_header_matches_cbindgen_output() {
        let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).unwrap();
        let bindings = cbindgen::Builder::new()
            .with_config(config)
            .with_src(root().join("src/ffi/mod.rs"))
            .generate()
            .expect("cbindgen failed on src/ffi");
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
             `FMRT_BLESS=1 cargo test --test tests ffi::header` and commit it"
        );
    }
}

#[allow(dead_code)]
fn _unused(_: &Path) {}
