//! One integration-test binary (keeps link time low); one module per area.

mod gmm;
mod path;
mod solver;
mod source;
