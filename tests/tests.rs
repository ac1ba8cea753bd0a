//! One integration-test binary (keeps link time low); one module per area.

mod adapt;
mod clock;
mod diffusers_flow;
mod dsl;
mod external_data;
mod gmm;
mod graph;
mod grid;
mod likelihood;
mod model_pipeline;
mod models;
mod onnx;
mod partial;
mod path;
mod real_models;
mod sampling;
mod solver;
mod solver_control;
mod solver_independent;
mod solver_multistep;
mod source;
mod state_precision;
mod stats_util;
mod tune;
