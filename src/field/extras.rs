//! Conditioning inputs ("extras") passed to a velocity field with each call.

use std::ops::Range;

use ndarray::{concatenate, Array1, ArrayD, ArrayViewD, Axis, Slice};

use crate::{Error, Result};

/// One conditioning tensor, batch first: class labels are `Int64` of shape
/// `[B]`, context vectors `Float32` of shape `[B, ...]`.
#[derive(Clone, Debug, PartialEq)]
pub enum ExtraTensor {
    /// 64-bit integers (class labels, token ids).
    Int64(ArrayD<i64>),
    /// 32-bit floats (context embeddings, masks).
    Float32(ArrayD<f32>),
}

impl ExtraTensor {
    /// A class-label tensor `[labels.len()]`.
    pub fn labels(labels: &[i64]) -> Self {
        ExtraTensor::Int64(Array1::from(labels.to_vec()).into_dyn())
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            ExtraTensor::Int64(a) => a.shape(),
            ExtraTensor::Float32(a) => a.shape(),
        }
    }

    /// The element type as ONNX names it (`int64`, `float32`).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            ExtraTensor::Int64(_) => "int64",
            ExtraTensor::Float32(_) => "float32",
        }
    }

    /// The rows `range` of the batch axis.
    pub fn rows(&self, range: Range<usize>) -> ExtraTensor {
        let slice = Slice::from(range);
        match self {
            ExtraTensor::Int64(a) => ExtraTensor::Int64(a.slice_axis(Axis(0), slice).to_owned()),
            ExtraTensor::Float32(a) => {
                ExtraTensor::Float32(a.slice_axis(Axis(0), slice).to_owned())
            }
        }
    }

    /// This tensor's rows followed by `other`'s (same type and per-sample shape).
    pub fn concat(&self, other: &ExtraTensor) -> Result<ExtraTensor> {
        let mismatch = || {
            Error::InvalidArgument(format!(
                "cannot stack extras of type {} {:?} and {} {:?}",
                self.dtype_name(),
                self.shape(),
                other.dtype_name(),
                other.shape()
            ))
        };
        match (self, other) {
            (ExtraTensor::Int64(a), ExtraTensor::Int64(b)) => concat_rows(a.view(), b.view())
                .map(ExtraTensor::Int64)
                .ok_or_else(mismatch),
            (ExtraTensor::Float32(a), ExtraTensor::Float32(b)) => concat_rows(a.view(), b.view())
                .map(ExtraTensor::Float32)
                .ok_or_else(mismatch),
            _ => Err(mismatch()),
        }
    }
}

fn concat_rows<T: Clone>(a: ArrayViewD<'_, T>, b: ArrayViewD<'_, T>) -> Option<ArrayD<T>> {
    if a.ndim() == 0 || a.shape()[1..] != b.shape()[1..] {
        return None;
    }
    concatenate(Axis(0), &[a, b]).ok()
}

/// Named conditioning inputs for one call, each with the batch first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    inputs: Vec<(String, ExtraTensor)>,
}

impl Extras {
    /// No extras.
    pub fn new() -> Self {
        Self::default()
    }

    /// These extras plus `name` = `tensor` (replacing an earlier one of that name).
    pub fn with(mut self, name: impl Into<String>, tensor: ExtraTensor) -> Self {
        self.insert(name, tensor);
        self
    }

    /// Sets `name` = `tensor`, replacing an earlier one of that name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: ExtraTensor) {
        let name = name.into();
        match self.inputs.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = tensor,
            None => self.inputs.push((name, tensor)),
        }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&ExtraTensor> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The extras in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ExtraTensor)> {
        self.inputs.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Checks that every extra has `batch` rows, naming the first that has not.
    pub fn check_batch(&self, batch: usize) -> Result<()> {
        for (name, tensor) in self.iter() {
            if tensor.shape().first() != Some(&batch) {
                return Err(Error::Shape {
                    tensor: name.to_string(),
                    expected: format!("[{batch}, ...] (one row per sample)"),
                    actual: tensor.shape().to_vec(),
                });
            }
        }
        Ok(())
    }

    /// The rows `range` of every extra.
    pub fn rows(&self, range: Range<usize>) -> Extras {
        Extras {
            inputs: self
                .inputs
                .iter()
                .map(|(n, t)| (n.clone(), t.rows(range.clone())))
                .collect(),
        }
    }

    /// Every extra's rows followed by the same-named extra's rows of `other`;
    /// both must have the same names.
    pub fn concat(&self, other: &Extras) -> Result<Extras> {
        let mut inputs = Vec::with_capacity(self.len());
        for (name, tensor) in self.iter() {
            let second = other.get(name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "extra input `{name}` is missing from the second set"
                ))
            })?;
            inputs.push((name.to_string(), tensor.concat(second)?));
        }
        if other.len() != self.len() {
            return Err(Error::InvalidArgument(format!(
                "cannot stack extras {} and {}",
                self.describe(),
                other.describe()
            )));
        }
        Ok(Extras { inputs })
    }

    /// A short description, e.g. "`label` int64 \[4\]".
    pub fn describe(&self) -> String {
        self.iter()
            .map(|(n, t)| format!("`{n}` {} {:?}", t.dtype_name(), t.shape()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
