//! One integration-test binary (keeps link time low); one module per area.

mod adapt;
mod cli;
mod dsl;
mod gmm;
mod graph;
mod likelihood;
mod onnx;
mod path;
mod sampling;
mod solver;
mod source;
mod stats_util;
