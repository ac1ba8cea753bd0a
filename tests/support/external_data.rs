//! Test support shared by the library, CLI and C tests: writes a copy of an
//! ONNX model with its weights moved to an external-data file, as
//! `onnx.save(..., save_as_external_data=True)` does.

use std::path::{Path, PathBuf};

use fmrt::graph::proto::{StringStringEntryProto, TensorProto};
use fmrt::graph::{decode_model, encode_model};

/// Writes `model` into `dir` as `name` with every initializer of at least
/// 64 bytes moved to the external file `name.data` (offsets aligned to 4 KiB,
/// as onnx does for large tensors); returns the model's path and how many
/// bytes went external.
pub fn save_with_external_data(model: &Path, dir: &Path, name: &str) -> (PathBuf, usize) {
    let mut proto = decode_model(&std::fs::read(model).unwrap()).unwrap();
    let data_name = format!("{name}.data");
    let mut data: Vec<u8> = Vec::new();
    let graph = proto.graph.as_mut().expect("a graph");
    let mut moved = 0;
    for tensor in &mut graph.initializer {
        let raw = match tensor.raw_data.take() {
            Some(raw) => raw,
            None if !tensor.float_data.is_empty() => {
                let raw = tensor
                    .float_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                tensor.float_data.clear();
                raw
            }
            None => continue,
        };
        if raw.len() < 64 {
            tensor.raw_data = Some(raw);
            continue;
        }
        data.resize(data.len().div_ceil(4096) * 4096, 0);
        let offset = data.len();
        data.extend_from_slice(&raw);
        moved += raw.len();
        externalize(tensor, &data_name, offset, raw.len());
    }
    assert!(moved > 0, "{}: no initializer was moved", model.display());
    std::fs::write(dir.join(&data_name), &data).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, encode_model(&proto)).unwrap();
    (path, moved)
}

/// Marks `tensor` as stored in `location` at `offset` with `length` bytes.
pub fn externalize(tensor: &mut TensorProto, location: &str, offset: usize, length: usize) {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    };
    tensor.data_location = Some(1);
    tensor.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", length.to_string()),
    ];
}
