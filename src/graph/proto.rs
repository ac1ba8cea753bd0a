//! The ONNX model format as prost messages, written for fmrt.
//!
//! Every message and field that ONNX Runtime reads is declared with its field
//! number from the ONNX format (proto2: optional scalars are `Option`s, so a
//! value that was present is written back even when it is the default).
//! [`decode_model`] and [`encode_model`] read and write a `ModelProto`.

use prost::Message;

use crate::{Error, Result};

/// ONNX element type numbers (`TensorProto.DataType`) used by fmrt.
pub mod data_type {
    /// 32-bit float.
    pub const FLOAT: i32 = 1;
    /// Unsigned 8-bit integer.
    pub const UINT8: i32 = 2;
    /// Signed 8-bit integer.
    pub const INT8: i32 = 3;
    /// Signed 32-bit integer.
    pub const INT32: i32 = 6;
    /// Signed 64-bit integer.
    pub const INT64: i32 = 7;
    /// Boolean.
    pub const BOOL: i32 = 9;
    /// 16-bit float.
    pub const FLOAT16: i32 = 10;
    /// 64-bit float.
    pub const DOUBLE: i32 = 11;
    /// bfloat16.
    pub const BFLOAT16: i32 = 16;

    /// Whether the element type is a floating-point type (tangents exist only there).
    pub fn is_float(t: i32) -> bool {
        matches!(t, FLOAT | FLOAT16 | DOUBLE | BFLOAT16)
    }
}

/// ONNX attribute type numbers (`AttributeProto.AttributeType`).
pub mod attribute_type {
    /// One float (`f`).
    pub const FLOAT: i32 = 1;
    /// One integer (`i`).
    pub const INT: i32 = 2;
    /// One string (`s`).
    pub const STRING: i32 = 3;
    /// One tensor (`t`).
    pub const TENSOR: i32 = 4;
    /// One graph (`g`).
    pub const GRAPH: i32 = 5;
    /// Floats (`floats`).
    pub const FLOATS: i32 = 6;
    /// Integers (`ints`).
    pub const INTS: i32 = 7;
}

/// A whole model: the graph, its opsets and metadata.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// The IR version.
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    /// The operator sets the model uses.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// The producing tool.
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    /// The producing tool's version.
    #[prost(string, optional, tag = "3")]
    pub producer_version: Option<String>,
    /// The model's domain.
    #[prost(string, optional, tag = "4")]
    pub domain: Option<String>,
    /// The model's version.
    #[prost(int64, optional, tag = "5")]
    pub model_version: Option<i64>,
    /// Documentation.
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// The main graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Named metadata strings.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
    /// Training information.
    #[prost(message, repeated, tag = "20")]
    pub training_info: Vec<TrainingInfoProto>,
    /// Model-local functions.
    #[prost(message, repeated, tag = "25")]
    pub functions: Vec<FunctionProto>,
}

/// A key–value string pair.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    /// The key.
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// The value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// An operator set: domain and version.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// The domain (`""` or absent: the default ONNX domain).
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// The version.
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// Training graphs and bindings (kept as read).
#[derive(Clone, PartialEq, Message)]
pub struct TrainingInfoProto {
    /// Initialization graph.
    #[prost(message, optional, tag = "1")]
    pub initialization: Option<GraphProto>,
    /// Training algorithm graph.
    #[prost(message, optional, tag = "2")]
    pub algorithm: Option<GraphProto>,
    /// Initialization bindings.
    #[prost(message, repeated, tag = "3")]
    pub initialization_binding: Vec<StringStringEntryProto>,
    /// Update bindings.
    #[prost(message, repeated, tag = "4")]
    pub update_binding: Vec<StringStringEntryProto>,
}

/// A computation graph.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes, in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// The graph's name.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// Constant tensors (weights).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Sparse constant tensors.
    #[prost(message, repeated, tag = "15")]
    pub sparse_initializer: Vec<SparseTensorProto>,
    /// Documentation.
    #[prost(string, optional, tag = "10")]
    pub doc_string: Option<String>,
    /// Graph inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Graph outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Types of intermediate values.
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
    /// Quantization annotations.
    #[prost(message, repeated, tag = "14")]
    pub quantization_annotation: Vec<TensorAnnotation>,
    /// Named metadata strings.
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// Quantization parameters of one tensor.
#[derive(Clone, PartialEq, Message)]
pub struct TensorAnnotation {
    /// The annotated tensor.
    #[prost(string, optional, tag = "1")]
    pub tensor_name: Option<String>,
    /// Parameter tensor names.
    #[prost(message, repeated, tag = "2")]
    pub quant_parameter_tensor_names: Vec<StringStringEntryProto>,
}

/// One operator application.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input value names (`""`: an omitted optional input).
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// The node's name.
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// The operator.
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    /// The operator's domain.
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
    /// Function overload id.
    #[prost(string, optional, tag = "8")]
    pub overload: Option<String>,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Documentation.
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// Named metadata strings.
    #[prost(message, repeated, tag = "9")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// A named attribute of a node (or function).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// The name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Reference to a function attribute.
    #[prost(string, optional, tag = "21")]
    pub ref_attr_name: Option<String>,
    /// Documentation.
    #[prost(string, optional, tag = "13")]
    pub doc_string: Option<String>,
    /// Which field holds the value (see [`attribute_type`]).
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
    /// A float.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// An integer.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// A string.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// A tensor.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// A graph.
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    /// A sparse tensor.
    #[prost(message, optional, tag = "22")]
    pub sparse_tensor: Option<SparseTensorProto>,
    /// A type.
    #[prost(message, optional, tag = "14")]
    pub tp: Option<TypeProto>,
    /// Floats.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// Integers.
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// Strings.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// Tensors.
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    /// Graphs.
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
    /// Sparse tensors.
    #[prost(message, repeated, tag = "23")]
    pub sparse_tensors: Vec<SparseTensorProto>,
    /// Types.
    #[prost(message, repeated, tag = "15")]
    pub type_protos: Vec<TypeProto>,
}

/// A value's name and type.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// The name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// Documentation.
    #[prost(string, optional, tag = "3")]
    pub doc_string: Option<String>,
    /// Named metadata strings.
    #[prost(message, repeated, tag = "4")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// A value type: tensor, sequence, map, optional or sparse tensor.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// Which kind of type.
    #[prost(oneof = "type_proto::Value", tags = "1, 4, 5, 9, 8")]
    pub value: Option<type_proto::Value>,
    /// Denotation.
    #[prost(string, optional, tag = "6")]
    pub denotation: Option<String>,
}

/// The kinds of [`TypeProto`].
pub mod type_proto {
    use super::{TensorShapeProto, TypeProto};

    /// A tensor type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// Element type (see [`super::data_type`]).
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        /// Shape.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// A sequence type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sequence {
        /// Element type.
        #[prost(message, optional, boxed, tag = "1")]
        pub elem_type: Option<Box<TypeProto>>,
    }

    /// A map type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Map {
        /// Key element type.
        #[prost(int32, optional, tag = "1")]
        pub key_type: Option<i32>,
        /// Value type.
        #[prost(message, optional, boxed, tag = "2")]
        pub value_type: Option<Box<TypeProto>>,
    }

    /// An optional type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Optional {
        /// Element type.
        #[prost(message, optional, boxed, tag = "1")]
        pub elem_type: Option<Box<TypeProto>>,
    }

    /// The oneof of [`TypeProto`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A tensor.
        #[prost(message, tag = "1")]
        TensorType(Tensor),
        /// A sequence.
        #[prost(message, tag = "4")]
        SequenceType(Sequence),
        /// A map.
        #[prost(message, tag = "5")]
        MapType(Map),
        /// An optional.
        #[prost(message, tag = "9")]
        OptionalType(Optional),
        /// A sparse tensor (same fields as a tensor).
        #[prost(message, tag = "8")]
        SparseTensorType(Tensor),
    }
}

/// A tensor shape.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// The axes.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// One axis of a [`TensorShapeProto`].
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    /// A fixed size or a symbol.
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    pub value: Option<DimensionValue>,
    /// Denotation.
    #[prost(string, optional, tag = "3")]
    pub denotation: Option<String>,
}

/// The oneof of [`Dimension`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimensionValue {
    /// A fixed size.
    #[prost(int64, tag = "1")]
    DimValue(i64),
    /// A named dynamic size.
    #[prost(string, tag = "2")]
    DimParam(String),
}

/// A tensor's data segment (for chunked tensors).
#[derive(Clone, PartialEq, Message)]
pub struct Segment {
    /// First index.
    #[prost(int64, optional, tag = "1")]
    pub begin: Option<i64>,
    /// One past the last index.
    #[prost(int64, optional, tag = "2")]
    pub end: Option<i64>,
}

/// A constant tensor.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// The shape.
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// Element type (see [`data_type`]).
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    /// Segment.
    #[prost(message, optional, tag = "3")]
    pub segment: Option<Segment>,
    /// Float data.
    #[prost(float, repeated, packed = "true", tag = "4")]
    pub float_data: Vec<f32>,
    /// Int32 (and smaller integer, bool, float16) data.
    #[prost(int32, repeated, packed = "true", tag = "5")]
    pub int32_data: Vec<i32>,
    /// String data.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    /// Int64 data.
    #[prost(int64, repeated, packed = "true", tag = "7")]
    pub int64_data: Vec<i64>,
    /// The name.
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    /// Documentation.
    #[prost(string, optional, tag = "12")]
    pub doc_string: Option<String>,
    /// Little-endian raw bytes.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// Where external data lives.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// Default (0) or external (1) storage.
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
    /// Double data.
    #[prost(double, repeated, packed = "true", tag = "10")]
    pub double_data: Vec<f64>,
    /// Uint64 (and uint32) data.
    #[prost(uint64, repeated, packed = "true", tag = "11")]
    pub uint64_data: Vec<u64>,
    /// Named metadata strings.
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// A sparse tensor.
#[derive(Clone, PartialEq, Message)]
pub struct SparseTensorProto {
    /// The non-zero values.
    #[prost(message, optional, tag = "1")]
    pub values: Option<TensorProto>,
    /// Their indices.
    #[prost(message, optional, tag = "2")]
    pub indices: Option<TensorProto>,
    /// The dense shape.
    #[prost(int64, repeated, packed = "false", tag = "3")]
    pub dims: Vec<i64>,
}

/// A model-local function.
#[derive(Clone, PartialEq, Message)]
pub struct FunctionProto {
    /// The name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Input names.
    #[prost(string, repeated, tag = "4")]
    pub input: Vec<String>,
    /// Output names.
    #[prost(string, repeated, tag = "5")]
    pub output: Vec<String>,
    /// Attribute names.
    #[prost(string, repeated, tag = "6")]
    pub attribute: Vec<String>,
    /// Attributes with defaults.
    #[prost(message, repeated, tag = "11")]
    pub attribute_proto: Vec<AttributeProto>,
    /// The body.
    #[prost(message, repeated, tag = "7")]
    pub node: Vec<NodeProto>,
    /// Documentation.
    #[prost(string, optional, tag = "8")]
    pub doc_string: Option<String>,
    /// Operator sets the body uses.
    #[prost(message, repeated, tag = "9")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// The domain.
    #[prost(string, optional, tag = "10")]
    pub domain: Option<String>,
    /// Overload id.
    #[prost(string, optional, tag = "13")]
    pub overload: Option<String>,
    /// Types of values in the body.
    #[prost(message, repeated, tag = "12")]
    pub value_info: Vec<ValueInfoProto>,
    /// Named metadata strings.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// Reads a serialized `ModelProto`.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(bytes)
        .map_err(|e| Error::model_load_from("ONNX bytes", "not a valid ONNX model (protobuf)", e))
}

/// Serializes a `ModelProto`.
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

impl NodeProto {
    /// The operator type (`""` if absent).
    pub fn op(&self) -> &str {
        self.op_type.as_deref().unwrap_or("")
    }

    /// The node name (`""` if absent).
    pub fn node_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    /// The integer attribute `name`, or `default`.
    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    /// The float attribute `name`, or `default`.
    pub fn attr_f(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }

    /// The string attribute `name`, if present (lossy UTF-8).
    pub fn attr_s(&self, name: &str) -> Option<String> {
        self.attr(name)
            .and_then(|a| a.s.as_deref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// The ints attribute `name`, if present.
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name)
            .filter(|a| a.r#type == Some(attribute_type::INTS) || !a.ints.is_empty())
            .map(|a| a.ints.as_slice())
    }
}

impl AttributeProto {
    /// An integer attribute.
    pub fn int(name: &str, value: i64) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(attribute_type::INT),
            i: Some(value),
            ..Default::default()
        }
    }

    /// A float attribute.
    pub fn float(name: &str, value: f32) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(attribute_type::FLOAT),
            f: Some(value),
            ..Default::default()
        }
    }

    /// An ints attribute.
    pub fn ints(name: &str, values: &[i64]) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(attribute_type::INTS),
            ints: values.to_vec(),
            ..Default::default()
        }
    }

    /// A string attribute.
    pub fn string(name: &str, value: &str) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(attribute_type::STRING),
            s: Some(value.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    /// A tensor attribute.
    pub fn tensor(name: &str, value: TensorProto) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(attribute_type::TENSOR),
            t: Some(value),
            ..Default::default()
        }
    }
}

impl TensorProto {
    /// A float32 tensor of `dims` from `values` (stored as raw data).
    pub fn from_f32(name: &str, dims: &[i64], values: &[f32]) -> Self {
        TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(data_type::FLOAT),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        }
    }

    /// An int64 tensor of `dims` from `values` (stored as raw data).
    pub fn from_i64(name: &str, dims: &[i64], values: &[i64]) -> Self {
        TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(data_type::INT64),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        }
    }

    /// A scalar of element type `dtype` (float types and int64) holding `value`.
    pub fn scalar(name: &str, dtype: i32, value: f64) -> Self {
        let raw: Vec<u8> = match dtype {
            data_type::DOUBLE => value.to_le_bytes().to_vec(),
            data_type::INT64 => (value as i64).to_le_bytes().to_vec(),
            data_type::FLOAT16 => f32_to_f16_bits(value as f32).to_le_bytes().to_vec(),
            data_type::BFLOAT16 => (((value as f32).to_bits() >> 16) as u16)
                .to_le_bytes()
                .to_vec(),
            _ => (value as f32).to_le_bytes().to_vec(),
        };
        TensorProto {
            name: Some(name.to_string()),
            data_type: Some(dtype),
            raw_data: Some(raw),
            ..Default::default()
        }
    }
}

/// Rounds an f32 to the nearest IEEE half (no subnormal output; enough for constants).
fn f32_to_f16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = bits & 0x7f_ffff;
    if v == 0.0 || exp <= 0 {
        sign
    } else if exp >= 31 {
        sign | 0x7c00
    } else {
        let m = (mant + 0x1000) >> 13;
        sign.wrapping_add(((exp as u16) << 10).wrapping_add(m as u16))
    }
}

impl ValueInfoProto {
    /// A tensor value of element type `dtype` with axes given as fixed sizes
    /// (`Some`) or named dynamic sizes (`None` → `param`).
    pub fn tensor(name: &str, dtype: i32, dims: &[Option<i64>], param: &str) -> Self {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Some(n) => DimensionValue::DimValue(*n),
                    None => DimensionValue::DimParam(param.to_string()),
                }),
                denotation: None,
            })
            .collect();
        ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(dtype),
                    shape: Some(TensorShapeProto { dim }),
                })),
                denotation: None,
            }),
            ..Default::default()
        }
    }

    /// The tensor element type, if this is a tensor value.
    pub fn elem_type(&self) -> Option<i32> {
        match self.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => t.elem_type,
            _ => None,
        }
    }
}
