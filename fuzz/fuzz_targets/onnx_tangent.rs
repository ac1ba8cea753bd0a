//! ONNX model bytes through decode → tangent transform → encode: no model,
//! however malformed, may panic or allocate without bound, and whatever the
//! transform builds must encode and decode again.
//!
//! Input: the model bytes (seeds: the ONNX fixtures of `tests/fixtures/`).

#![no_main]

use fmrt::graph::{decode_model, encode_model, tangent_model, unsupported_ops, TangentOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = decode_model(data) else {
        return;
    };
    let _ = unsupported_ops(&model, None);
    // Per direction (with and without the original outputs) and stacked.
    for (drop_outputs, stacked) in [(false, false), (true, false), (false, true)] {
        let options = TangentOptions {
            drop_outputs,
            stacked,
            ..Default::default()
        };
        if let Ok(tangent) = tangent_model(&model, &options) {
            let bytes = encode_model(&tangent);
            let again = decode_model(&bytes).expect("a transformed model decodes again");
            // Bytes, not models: initializers may hold NaNs, unequal to themselves.
            assert!(
                encode_model(&again) == bytes,
                "encode → decode → encode is stable"
            );
        }
    }
});
