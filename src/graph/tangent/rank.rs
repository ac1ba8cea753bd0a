//! Static ranks of a graph's values, as far as they follow from the declared
//! inputs, the initializers and the constants.
//!
//! The stacked tangent form (a leading tangent axis, see
//! [`TangentOptions::stacked`](super::TangentOptions::stacked)) needs them:
//! ONNX broadcasting aligns shapes from the right, so before a tangent of a
//! lower-rank value meets a higher-rank one, its leading tangent axis must be
//! moved out of the way. Where a rank does not follow from these rules it is
//! unknown, and a stacked rule that needs it refuses the node (the caller
//! then falls back to the per-direction form).

use std::collections::HashMap;

use crate::graph::proto::{type_proto, GraphProto, NodeProto, TensorProto};

/// Ranks and lengths above this are left unknown: no real tensor has more
/// axes, and a stacked rule builds lists of that many axes, which a hostile
/// model's claimed `[10^15]`-long shape constant must not make it allocate.
const MAX_RANK: usize = 64;

/// The ranks (and, for constant 1-D tensors, lengths) known so far.
#[derive(Default)]
pub(super) struct Ranks {
    rank: HashMap<String, usize>,
    /// The lengths of 1-D tensors whose length is known: constants
    /// (initializers, `Constant` outputs), `Shape` outputs, scalars
    /// unsqueezed to 1-D and concatenations of known lengths (the shape
    /// arithmetic of exported reshapes).
    lengths: HashMap<String, usize>,
}

impl Ranks {
    /// The ranks of the graph's inputs and initializers.
    pub(super) fn of_graph(graph: &GraphProto) -> Ranks {
        let mut r = Ranks::default();
        for t in &graph.initializer {
            if let Some(name) = &t.name {
                r.constant(name, t);
            }
        }
        for input in &graph.input {
            let Some(name) = &input.name else { continue };
            if let Some(type_proto::Value::TensorType(t)) =
                input.r#type.as_ref().and_then(|t| t.value.as_ref())
            {
                if let Some(shape) = &t.shape {
                    if shape.dim.len() <= MAX_RANK && !r.rank.contains_key(name) {
                        r.rank.insert(name.clone(), shape.dim.len());
                    }
                }
            }
        }
        r
    }

    fn constant(&mut self, name: &str, t: &TensorProto) {
        self.set_rank(name, t.dims.len());
        if let [n] = t.dims.as_slice() {
            if let Ok(n) = usize::try_from(*n) {
                self.set_length(name, n);
            }
        }
    }

    /// Records a rank, unless it is beyond [`MAX_RANK`].
    fn set_rank(&mut self, name: &str, rank: usize) {
        if rank <= MAX_RANK {
            self.rank.insert(name.to_string(), rank);
        }
    }

    /// Records a 1-D tensor's length, unless it is beyond [`MAX_RANK`]
    /// (lengths serve as ranks and axis counts only).
    fn set_length(&mut self, name: &str, length: usize) {
        if length <= MAX_RANK {
            self.lengths.insert(name.to_string(), length);
        }
    }

    /// The rank of `name`, if known.
    pub(super) fn get(&self, name: &str) -> Option<usize> {
        self.rank.get(name).copied()
    }

    /// The number of entries of a 1-D tensor `name` (axes lists, shapes).
    fn length(&self, name: &str) -> Option<usize> {
        self.lengths.get(name).copied()
    }

    /// How many axes a node lists, from its `axes` attribute or its input `k`.
    fn axes_count(&self, node: &NodeProto, k: usize) -> Option<usize> {
        match node.attr_ints("axes") {
            Some(list) => Some(list.len()),
            None => self.length(node.input.get(k)?),
        }
    }

    /// Records the ranks of `node`'s outputs that follow from its inputs.
    pub(super) fn record(&mut self, node: &NodeProto) {
        let input = |k: usize| node.input.get(k).filter(|s| !s.is_empty());
        let rank_of = |k: usize| input(k).and_then(|n| self.get(n));
        let max_rank = || {
            let known: Option<Vec<usize>> = node
                .input
                .iter()
                .filter(|s| !s.is_empty())
                .map(|n| self.get(n))
                .collect();
            known.and_then(|v| v.into_iter().max())
        };
        let out: Option<usize> = match node.op() {
            "Constant" => {
                if let Some(t) = node.attr("value").and_then(|a| a.t.as_ref()) {
                    if let Some(name) = node.output.first() {
                        let t = t.clone();
                        self.constant(name, &t);
                    }
                    return;
                }
                None
            }
            "Identity"
            | "Neg"
            | "Relu"
            | "LeakyRelu"
            | "Elu"
            | "Sigmoid"
            | "Tanh"
            | "Exp"
            | "Log"
            | "Sqrt"
            | "Reciprocal"
            | "Erf"
            | "Softplus"
            | "Sin"
            | "Cos"
            | "Abs"
            | "Gelu"
            | "Tan"
            | "Atan"
            | "Sinh"
            | "Cosh"
            | "Softsign"
            | "Mish"
            | "HardSigmoid"
            | "HardSwish"
            | "Selu"
            | "Celu"
            | "Cast"
            | "CastLike"
            | "Dropout"
            | "Softmax"
            | "LogSoftmax"
            | "Transpose"
            | "Clip"
            | "Conv"
            | "ConvTranspose"
            | "AveragePool"
            | "GlobalAveragePool"
            | "MaxPool"
            | "DepthToSpace"
            | "SpaceToDepth"
            | "Resize"
            | "LayerNormalization"
            | "InstanceNormalization"
            | "GroupNormalization"
            | "BatchNormalization"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Sign"
            | "Slice"
            | "Pad"
            | "Tile"
            | "GatherElements"
            | "CumSum"
            | "Trilu"
            | "Not" => rank_of(0),
            // Broadcast from the right against the target shape.
            "Expand" => rank_of(0)
                .zip(input(1).and_then(|n| self.length(n)))
                .map(|(r, n)| r.max(n)),
            "ConstantOfShape" => input(0).and_then(|n| self.length(n)),
            "Range" => Some(1),
            "Size" => Some(0),
            "Split" => {
                // Every part has the input's rank.
                if let Some(r) = rank_of(0) {
                    for name in node.output.iter().filter(|s| !s.is_empty()) {
                        self.set_rank(name, r);
                    }
                }
                return;
            }
            "Gather" => rank_of(0)
                .zip(rank_of(1))
                .and_then(|(data, indices)| (data + indices).checked_sub(1)),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "PRelu" | "Where" | "Max" | "Min" | "Sum"
            | "Mean" | "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And"
            | "Or" | "Xor" => max_rank(),
            "Gemm" | "Flatten" => Some(2),
            "MatMul" => match (rank_of(0), rank_of(1)) {
                (Some(a), Some(b)) if a >= 2 && b >= 2 => Some(a.max(b)),
                _ => None,
            },
            "Shape" => {
                // Without start/end, a shape's length is its input's rank.
                let whole = node.attr("start").is_none() && node.attr("end").is_none();
                if let (Some(r), Some(name), true) = (rank_of(0), node.output.first(), whole) {
                    self.set_length(name, r);
                }
                Some(1)
            }
            "Concat" => {
                let known: Option<Vec<usize>> = node
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|n| self.get(n))
                    .collect();
                let lengths: Option<Vec<usize>> = node
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|n| self.length(n))
                    .collect();
                let total =
                    lengths.and_then(|v| v.iter().try_fold(0usize, |a, &b| a.checked_add(b)));
                if let (Some(total), Some(name)) = (total, node.output.first()) {
                    self.set_length(name, total);
                }
                known.and_then(|v| v.first().copied())
            }
            "Unsqueeze" => {
                let out = rank_of(0).zip(self.axes_count(node, 1)).map(|(r, n)| r + n);
                // A scalar unsqueezed to 1-D has as many entries as axes added.
                if let (Some(0), Some(1), Some(name)) = (rank_of(0), out, node.output.first()) {
                    self.set_length(name, 1);
                }
                out
            }
            "Squeeze" => rank_of(0)
                .zip(self.axes_count(node, 1))
                .and_then(|(r, n)| r.checked_sub(n)),
            "Reshape" => input(1).and_then(|n| self.length(n)),
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceL2"
            | "ReduceSumSquare" | "ReduceLogSumExp" => {
                if node.attr_i("keepdims", 1) == 1 {
                    rank_of(0)
                } else {
                    rank_of(0)
                        .zip(self.axes_count(node, 1))
                        .and_then(|(r, n)| r.checked_sub(n))
                }
            }
            _ => None,
        };
        if let (Some(r), Some(name)) = (out, node.output.first()) {
            if !name.is_empty() {
                self.set_rank(name, r);
            }
        }
    }
}
