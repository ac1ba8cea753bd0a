//! # fmrt — a runtime for flow-matching generative models
//!
//! Flow matching moves points from noise (t = 0) to data (t = 1) along an affine
//! probability path `x_t = α(t)·x1 + σ(t)·x0`. A velocity field `u(x, t)` is
//! integrated from 0 to 1 to sample.
//!
//! The flow of a sample through the crate:
//!
//! ```text
//! source (noise x0) ──► solver (integrates the velocity field) ──► samples x1
//! ```
//!
//! This crate is the library alone. Beside it in the workspace, `c-api/`
//! holds the C API and `c-api/artifact/` builds it into `libfmrt.so` and
//! `libfmrt.a` (declared in `include/fmrt.h`), and `cli/` is the `fmrt`
//! command line; all are thin shells over this API. Every failure is an
//! [`Error`] whose variant names the kind (a missing ONNX Runtime, a model
//! that does not load, an operator that cannot be differentiated, a solver
//! that stopped…), so hosts branch on it.
//!
//! Modules, one per concept:
//! - [`dsl`]: the `.fm` scheduler language (parser, symbolic derivatives, checks).
//! - [`scheduler`]: schedules α(t), σ(t) and their derivatives, built-ins by name.
//! - [`grid`]: time grids t(u) in `.fm` (uniform, shift, sway, cosine) that
//!   place the steps of fixed-step solvers.
//! - [`path`]: the affine path, prediction conversions and the training loss.
//! - [`source`]: the source distribution (seeded standard normal).
//! - [`random`]: [`random::SeededRng`], reproducible random numbers.
//! - [`field`]: the [`field::VelocityField`] trait; ONNX, plugin and analytic
//!   fields; adapters (prediction, guidance, schedule change).
//! - [`graph`]: ONNX models read and written in Rust, and their forward-mode
//!   tangent (Jacobian–vector product) transform.
//! - [`solver`]: explicit Runge–Kutta solvers, fixed and adaptive.
//! - [`sampler`]: source → solver(field) → samples.
//! - [`stochastic`]: SDE sampling with the ODE's marginals (Euler–Maruyama).
//! - [`tune`]: work-precision tuning: every fixed-step solver and grid
//!   measured against a tight reference, the best per call budget.
//! - [`likelihood`]: log-likelihoods by the augmented reverse-time solve.
//! - [`model`]: [`model::Model`], an exported network with its metadata and
//!   adapters composed into the field to integrate (used by the CLI and C).
//! - [`error`]: [`Error`], one variant per kind of failure.

pub mod dsl;
pub mod error;
pub mod field;
pub mod graph;
pub mod grid;
pub mod likelihood;
pub mod model;
pub mod path;
pub mod random;
pub mod sampler;
pub mod scheduler;
pub mod solver;
pub mod source;
pub mod stochastic;
mod times;
pub mod tune;

pub use error::{Error, Result};

/// The README's Rust examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
