//! `libfmrt.so` and `libfmrt.a`, the C artifact of fmrt declared in
//! `include/fmrt.h`.
//!
//! The functions live in the `fmrt-c-api` crate (`c-api/src/`), an ordinary
//! Rust library; this crate only links it into a C library. Its
//! `#[no_mangle] pub extern "C"` functions are exported from the cdylib and
//! the staticlib because this crate uses that crate (the re-export below): a
//! dependency nothing refers to would not be linked at all.

pub use fmrt_c_api::*;
