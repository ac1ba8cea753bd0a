//! ONNX graphs in Rust: reading and writing models ([`proto`]) and the
//! forward-mode tangent (Jacobian–vector product) transform ([`tangent`]).

pub mod proto;
pub mod tangent;

pub use proto::{decode_model, encode_model, ModelProto};
pub use tangent::{tangent_model, unsupported_ops, TangentOptions, UnsupportedOp};
