//! The `Builder`: it emits the tangent graph's new nodes (constants included)
//! under fresh names, right after the node being differentiated.

use std::collections::{HashMap, HashSet};

use crate::graph::proto::{AttributeProto, NodeProto, TensorProto};

/// The nodes of the tangent graph being built, and the names already used.
pub(super) struct Builder {
    pub(super) nodes: Vec<NodeProto>,
    used: HashSet<String>,
    counter: usize,
    pub(super) opset: i64,
    consts: HashMap<(i32, u64), String>,
    /// In the stacked form, the `[P]` int64 tensor holding the number of
    /// tangents (the size of the leading tangent axis).
    lead: Option<String>,
}

impl Builder {
    /// An empty builder for a graph of default-domain opset `opset` whose
    /// names in use are `used`, with room for `capacity` nodes.
    pub(super) fn new(capacity: usize, used: HashSet<String>, opset: i64) -> Self {
        Builder {
            nodes: Vec::with_capacity(capacity),
            used,
            counter: 0,
            opset,
            consts: HashMap::new(),
            lead: None,
        }
    }

    /// Switches to the stacked form, whose tangent input `x_dot` carries a
    /// leading tangent axis: records that axis's size.
    pub(super) fn stack_on(&mut self, x_dot: &str) {
        let shape = self.op1("Shape", x_dot);
        let first = self.ints(&[0]);
        self.lead = Some(self.op2("Gather", &shape, &first));
    }

    /// The `[P]` size of the tangent axis (stacked form only).
    pub(super) fn lead(&self) -> std::result::Result<String, String> {
        self.lead
            .clone()
            .ok_or_else(|| "internal: not building a stacked tangent".to_string())
    }

    /// Whether tangents carry a leading tangent axis.
    pub(super) fn is_stacked(&self) -> bool {
        self.lead.is_some()
    }

    /// The shape of the stacked tangent of `a`, `[P, ...shape of a]`, as an
    /// int64 tensor (stacked form only).
    pub(super) fn stacked_shape_of(&mut self, a: &str) -> std::result::Result<String, String> {
        let lead = self.lead()?;
        let shape = self.op1("Shape", a);
        Ok(self.emit(
            "Concat",
            &[&lead, &shape],
            vec![AttributeProto::int("axis", 0)],
        ))
    }

    /// `[-1, ...shape of a after its first axis]`: the shape that merges a
    /// stacked tangent's tangent axis into `a`'s batch axis.
    pub(super) fn merged_shape_of(&mut self, a: &str) -> String {
        let shape = self.op1("Shape", a);
        let per_sample = self.slice_1d(&shape, 1, i64::MAX);
        let merged = self.ints(&[-1]);
        self.emit(
            "Concat",
            &[&merged, &per_sample],
            vec![AttributeProto::int("axis", 0)],
        )
    }

    /// Entries `start..end` of the 1-D tensor `t`.
    pub(super) fn slice_1d(&mut self, t: &str, start: i64, end: i64) -> String {
        let (starts, ends, axes) = (self.ints(&[start]), self.ints(&[end]), self.ints(&[0]));
        self.emit("Slice", &[t, &starts, &ends, &axes], vec![])
    }

    /// Zeros shaped like the stacked tangent of `a`: `[P, ...shape of a]`.
    pub(super) fn stacked_zeros_like(
        &mut self,
        a: &str,
        dtype: i32,
    ) -> std::result::Result<String, String> {
        let full = self.stacked_shape_of(a)?;
        let mut value = TensorProto::scalar("", dtype, 0.0);
        value.dims = vec![1];
        Ok(self.emit(
            "ConstantOfShape",
            &[&full],
            vec![AttributeProto::tensor("value", value)],
        ))
    }

    pub(super) fn fresh(&mut self, base: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("{base}__t{}", self.counter);
            if self.used.insert(name.clone()) {
                return name;
            }
        }
    }

    pub(super) fn emit_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..outputs).map(|_| self.fresh("tan")).collect();
        let name = self.fresh(&format!("fmrt_tangent_{op}"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: Some(name),
            op_type: Some(op.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        outs
    }

    pub(super) fn emit(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.emit_n(op, inputs, 1, attrs).remove(0)
    }

    pub(super) fn op2(&mut self, op: &str, a: &str, b: &str) -> String {
        self.emit(op, &[a, b], vec![])
    }

    pub(super) fn op1(&mut self, op: &str, a: &str) -> String {
        self.emit(op, &[a], vec![])
    }

    fn constant(&mut self, tensor: TensorProto) -> String {
        self.emit(
            "Constant",
            &[],
            vec![AttributeProto::tensor("value", tensor)],
        )
    }

    /// A scalar constant of element type `dtype`, shared between uses.
    pub(super) fn scalar(&mut self, dtype: i32, value: f64) -> String {
        let key = (dtype, value.to_bits());
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let name = self.constant(TensorProto::scalar("", dtype, value));
        self.consts.insert(key, name.clone());
        name
    }

    pub(super) fn ints(&mut self, values: &[i64]) -> String {
        self.constant(TensorProto::from_i64("", &[values.len() as i64], values))
    }

    /// Zeros shaped like `a`, of element type `dtype`.
    pub(super) fn zeros_like(&mut self, a: &str, dtype: i32) -> String {
        let shape = self.op1("Shape", a);
        let mut value = TensorProto::scalar("", dtype, 0.0);
        value.dims = vec![1];
        self.emit(
            "ConstantOfShape",
            &[&shape],
            vec![AttributeProto::tensor("value", value)],
        )
    }

    /// `t` broadcast to the shape of `y`.
    pub(super) fn expand_like(&mut self, t: &str, y: &str) -> String {
        let shape = self.op1("Shape", y);
        self.op2("Expand", t, &shape)
    }

    /// A reduction over `axes` keeping dimensions, as the opset spells it.
    pub(super) fn reduce(&mut self, op: &str, a: &str, axes: &[i64]) -> String {
        let axes_as_input = match op {
            "ReduceSum" => self.opset >= 13,
            _ => self.opset >= 18,
        };
        let keep = AttributeProto::int("keepdims", 1);
        if axes_as_input {
            let axes = self.ints(axes);
            self.emit(op, &[a, &axes], vec![keep])
        } else {
            self.emit(op, &[a], vec![keep, AttributeProto::ints("axes", axes)])
        }
    }
}
