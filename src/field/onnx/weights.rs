//! [`SharedWeights`]: a model's external-data weights, read once and handed
//! to every ONNX Runtime session of the model
//! ([`OnnxFieldBuilder::share_weights`](super::OnnxFieldBuilder::share_weights)).
//!
//! ONNX Runtime loads and pre-packs a model's weights once per session. A
//! model that computes likelihoods has a session for its velocity and one for
//! each tangent model fmrt derives from it, so a process holding a large model
//! keeps its weights once per session. With sharing on, fmrt reads each float
//! tensor stored as external data once, gives the same buffer to every
//! session as a shared initializer (ONNX Runtime's `AddInitializer`, which
//! does not copy it on the CPU), and turns pre-packing off for those sessions,
//! since a pre-packed copy would be made per session again. The price is that
//! matrix products pack their weights on every call.
//!
//! What is read is bounded by the data files themselves: a tensor whose
//! declared offset and length run past its file, or whose length does not
//! match its shape, is left to ONNX Runtime (which refuses it by name).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};
use std::sync::Arc;

use ort::session::builder::SessionBuilder;
use ort::value::{DynValue, Tensor};

use crate::graph::decode_model;
use crate::graph::proto::TensorProto;

/// A model file larger than this is not searched for external weights: its
/// weights are inline, and decoding it only to find none would double the
/// memory it takes to load it.
const MAX_SCANNED_MODEL_BYTES: u64 = 64 << 20;

/// ONNX's `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// ONNX's `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// The external float weights of one model, ready to attach to its sessions.
pub(super) struct SharedWeights {
    tensors: Vec<(String, Arc<DynValue>)>,
    bytes: usize,
}

impl std::fmt::Debug for SharedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWeights")
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl SharedWeights {
    /// Reads the float initializers the model file at `path` stores as
    /// external data; `None` when it has none (or cannot be read: ONNX
    /// Runtime then reports the problem when it opens the file).
    pub(super) fn read(path: &Path) -> Option<Arc<SharedWeights>> {
        let size = std::fs::metadata(path).ok()?.len();
        if size > MAX_SCANNED_MODEL_BYTES {
            return None;
        }
        let model = decode_model(&std::fs::read(path).ok()?).ok()?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut files: HashMap<String, File> = HashMap::new();
        let mut tensors = Vec::new();
        let mut bytes = 0;
        for tensor in model.graph.iter().flat_map(|g| &g.initializer) {
            if let Some((name, value, len)) = read_external(tensor, folder, &mut files) {
                tensors.push((name, Arc::new(value)));
                bytes += len;
            }
        }
        if tensors.is_empty() {
            return None;
        }
        Some(Arc::new(SharedWeights { tensors, bytes }))
    }

    /// `builder` with every shared tensor as an initializer and pre-packing
    /// off. A session's model that lacks one of the names (a tangent model
    /// that dropped an unused weight) ignores it.
    /// Errors: ONNX Runtime's message.
    pub(super) fn attach(
        &self,
        mut builder: SessionBuilder,
    ) -> std::result::Result<SessionBuilder, String> {
        for (name, value) in &self.tensors {
            builder = builder
                .with_initializer(name, value.clone())
                .map_err(|e| e.to_string())?;
        }
        builder
            .with_config_entry("session.disable_prepacking", "1")
            .map_err(|e| e.to_string())
    }
}

/// A float tensor stored as external data, read from its file: its name, the
/// value, and its size in bytes. `None` for any other tensor, and for one
/// whose location, offset or length does not check out.
fn read_external(
    tensor: &TensorProto,
    folder: &Path,
    files: &mut HashMap<String, File>,
) -> Option<(String, DynValue, usize)> {
    if tensor.data_location != Some(EXTERNAL) || tensor.data_type != Some(FLOAT) {
        return None;
    }
    let entry = |key: &str| {
        tensor
            .external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location = entry("location")?;
    // Only files beside the model, as ONNX Runtime requires.
    let relative = Path::new(&location);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let dims: Vec<usize> = tensor
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    let len = count.checked_mul(4)?;
    let offset: u64 = entry("offset").map_or(Some(0), |v| v.parse().ok())?;
    if let Some(declared) = entry("length") {
        if declared.parse::<usize>().ok()? != len {
            return None;
        }
    }
    if !files.contains_key(&location) {
        files.insert(location.clone(), File::open(folder.join(relative)).ok()?);
    }
    let file = files.get_mut(&location)?;
    let end = offset.checked_add(u64::try_from(len).ok()?)?;
    if end > file.metadata().ok()?.len() {
        return None;
    }
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut values = Vec::with_capacity(count);
    let mut chunk = vec![0u8; (1 << 20).min(len)];
    let mut left = len;
    while left > 0 {
        let take = left.min(chunk.len());
        file.read_exact(&mut chunk[..take]).ok()?;
        values.extend(
            chunk[..take]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        left -= take;
    }
    let shape: Vec<i64> = tensor.dims.clone();
    let value = Tensor::from_array((shape, values)).ok()?.into_dyn();
    Some((tensor.name.clone()?, value, len))
}
