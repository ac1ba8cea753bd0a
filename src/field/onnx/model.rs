//! What an ONNX velocity model declares (inputs, outputs, metadata) and which
//! input plays which role.

use std::fmt;

use ort::value::{TensorElementType, ValueType};

use crate::{Error, Result};

/// One axis of a declared tensor shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A size fixed in the model.
    Fixed(usize),
    /// A dynamic size with a name (`B`, `batch`, …).
    Symbolic(String),
    /// A dynamic size without a name.
    Dynamic,
}

impl Dim {
    /// The size if it is fixed.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Dynamic => f.write_str("?"),
        }
    }
}

/// A declared model input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The name in the graph.
    pub name: String,
    /// The element type as ONNX names it (`float32`, `int64`, …), or the kind
    /// of a non-tensor value (`sequence`, `map`, `optional`).
    pub dtype: String,
    /// The declared shape (empty for scalars and non-tensors).
    pub dims: Vec<Dim>,
    pub(crate) element: Option<TensorElementType>,
}

impl TensorInfo {
    pub(crate) fn from_outlet(name: &str, value_type: &ValueType) -> TensorInfo {
        match value_type {
            ValueType::Tensor {
                ty,
                shape,
                dimension_symbols,
            } => {
                let dims = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if d >= 0 {
                            Dim::Fixed(d as usize)
                        } else {
                            match dimension_symbols.get(i).filter(|s| !s.is_empty()) {
                                Some(s) => Dim::Symbolic(s.clone()),
                                None => Dim::Dynamic,
                            }
                        }
                    })
                    .collect();
                TensorInfo {
                    name: name.to_string(),
                    dtype: dtype_name(*ty).to_string(),
                    dims,
                    element: Some(*ty),
                }
            }
            other => TensorInfo {
                name: name.to_string(),
                dtype: match other {
                    ValueType::Sequence(_) => "sequence",
                    ValueType::Map { .. } => "map",
                    _ => "optional",
                }
                .to_string(),
                dims: Vec::new(),
                element: None,
            },
        }
    }

    /// The shape written like `[B, 2]` (`?` for an unnamed dynamic axis).
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }

    /// Whether the first axis is dynamic (a batch axis).
    pub fn has_dynamic_batch(&self) -> bool {
        matches!(self.dims.first(), Some(Dim::Symbolic(_) | Dim::Dynamic))
    }

    fn is_float(&self) -> bool {
        matches!(
            self.element,
            Some(
                TensorElementType::Float32
                    | TensorElementType::Float64
                    | TensorElementType::Float16
                    | TensorElementType::Bfloat16
            )
        )
    }
}

impl fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {} {}", self.name, self.dtype, self.shape_string())
    }
}

/// The ONNX name of an element type.
pub(crate) fn dtype_name(ty: TensorElementType) -> &'static str {
    match ty {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float64 => "float64",
        TensorElementType::Float16 => "float16",
        TensorElementType::Bfloat16 => "bfloat16",
        TensorElementType::Int64 => "int64",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int16 => "int16",
        TensorElementType::Int8 => "int8",
        TensorElementType::Uint64 => "uint64",
        TensorElementType::Uint32 => "uint32",
        TensorElementType::Uint16 => "uint16",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Bool => "bool",
        TensorElementType::String => "string",
        _ => "other",
    }
}

/// How the time input is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeLayout {
    /// One time per sample, `[B]`.
    Batch,
    /// One time per sample as a column, `[B, 1]`.
    Column,
    /// One time for the whole batch, `[]`. Calls whose samples have different
    /// times run once per group of equal times.
    Scalar,
}

impl TimeLayout {
    fn of(info: &TensorInfo) -> Option<TimeLayout> {
        match info.dims.as_slice() {
            [] => Some(TimeLayout::Scalar),
            [_] => Some(TimeLayout::Batch),
            [_, Dim::Fixed(1)] => Some(TimeLayout::Column),
            _ => None,
        }
    }

    /// The shape written like `[B]`, `[B, 1]` or `[]`.
    pub fn shape_string(self) -> &'static str {
        match self {
            TimeLayout::Batch => "[B]",
            TimeLayout::Column => "[B, 1]",
            TimeLayout::Scalar => "[]",
        }
    }
}

impl fmt::Display for TimeLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shape_string())
    }
}

/// How an input's role was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingSource {
    /// Set by the caller.
    Explicit,
    /// From the model's `fmrt.state_input` / `fmrt.time_input` metadata.
    Metadata,
    /// Detected from the declared names, types and shapes.
    Detected,
}

impl fmt::Display for MappingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MappingSource::Explicit => "set explicitly",
            MappingSource::Metadata => "from metadata",
            MappingSource::Detected => "detected",
        })
    }
}

/// Which model input is the state, which the time, and which are extras.
#[derive(Clone, Debug, PartialEq)]
pub struct InputMapping {
    /// The state input's name.
    pub state: String,
    /// How the state input was chosen.
    pub state_from: MappingSource,
    /// The time input's name.
    pub time: String,
    /// How the time input was chosen.
    pub time_from: MappingSource,
    /// How the time input is shaped.
    pub time_layout: TimeLayout,
    /// The remaining inputs: conditioning the caller passes as
    /// [`Extras`](crate::field::Extras).
    pub extras: Vec<TensorInfo>,
    /// The output used as the velocity.
    pub output: String,
}

/// Names that mark an input as the time when several could be.
const TIME_NAMES: &[&str] = &[
    "t",
    "time",
    "times",
    "timestep",
    "timesteps",
    "time_step",
    "ts",
    "sigma",
    "sigmas",
];

/// Names that mark an input as the state when several could be.
const STATE_NAMES: &[&str] = &[
    "x",
    "x_t",
    "xt",
    "state",
    "sample",
    "samples",
    "z",
    "latent",
    "latents",
    "hidden_states",
    "input",
    "inputs",
];

/// A name prefix that marks an input as the state (`noisy_latents`).
const STATE_PREFIX: &str = "noisy_";

/// The explicit or metadata choice for one role.
pub(crate) struct Choice<'a> {
    pub explicit: Option<&'a str>,
    pub metadata: Option<&'a str>,
}

impl<'a> Choice<'a> {
    fn resolve(&self) -> Option<(&'a str, MappingSource)> {
        self.explicit
            .map(|n| (n, MappingSource::Explicit))
            .or(self.metadata.map(|n| (n, MappingSource::Metadata)))
    }
}

/// Lists the inputs one per line, for error messages.
pub(crate) fn list_inputs(inputs: &[TensorInfo]) -> String {
    inputs
        .iter()
        .map(|i| format!("  {}: {} {}", i.name, i.dtype, i.shape_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

const HOW_TO_MAP: &str = "Name them with OnnxField::builder().state_input(NAME).time_input(NAME), \
     or store the metadata keys `fmrt.state_input` and `fmrt.time_input` in the model.";

/// Decides the roles of the inputs (explicit names, then metadata, then detection).
pub(crate) fn map_inputs(
    file: &str,
    inputs: &[TensorInfo],
    state: Choice<'_>,
    time: Choice<'_>,
) -> Result<(usize, MappingSource, usize, MappingSource, TimeLayout)> {
    let find = |name: &str, role: &str, how: MappingSource| -> Result<usize> {
        inputs.iter().position(|i| i.name == name).ok_or_else(|| {
            let key = if role == "state" {
                "fmrt.state_input"
            } else {
                "fmrt.time_input"
            };
            let how = match how {
                MappingSource::Metadata => format!("from the model's metadata `{key}`"),
                _ => "set explicitly".to_string(),
            };
            Error::model_load(file, format!("the {role} input `{name}` ({how}) is not an input of the model. Its inputs:\n{}",
                list_inputs(inputs)
            ))
        })
    };

    let mut state_index = None;
    if let Some((name, how)) = state.resolve() {
        state_index = Some((find(name, "state", how)?, how));
    }
    let mut time_index = None;
    if let Some((name, how)) = time.resolve() {
        time_index = Some((find(name, "time", how)?, how));
    }
    if let (Some((s, _)), Some((t, _))) = (state_index, time_index) {
        if s == t {
            return Err(Error::model_load(
                file,
                format!(
                    "input `{}` cannot be both the state and the time input",
                    inputs[s].name
                ),
            ));
        }
    }

    if time_index.is_none() {
        let exclude = state_index.map(|(s, _)| s);
        let candidates: Vec<usize> = (0..inputs.len())
            .filter(|&i| Some(i) != exclude)
            .filter(|&i| inputs[i].is_float() && TimeLayout::of(&inputs[i]).is_some())
            .collect();
        time_index = Some((
            pick(file, inputs, &candidates, TIME_NAMES, "time")?,
            MappingSource::Detected,
        ));
    }
    let (time_i, time_from) = time_index.unwrap_or((0, MappingSource::Detected));

    if state_index.is_none() {
        let candidates: Vec<usize> = (0..inputs.len())
            .filter(|&i| i != time_i && inputs[i].is_float() && inputs[i].dims.len() >= 2)
            .collect();
        state_index = Some((
            pick(file, inputs, &candidates, STATE_NAMES, "state")?,
            MappingSource::Detected,
        ));
    }
    let (state_i, state_from) = state_index.unwrap_or((0, MappingSource::Detected));

    let state_info = &inputs[state_i];
    if state_info.element != Some(TensorElementType::Float32) {
        return Err(Error::model_load(
            file,
            format!(
                "the state input `{}` is {} {}, but fmrt passes states as float32; \
             export the model with a float32 state input",
                state_info.name,
                state_info.dtype,
                state_info.shape_string()
            ),
        ));
    }
    if state_info.dims.is_empty() {
        return Err(Error::model_load(
            file,
            format!(
                "the state input `{}` is a scalar {}; it needs a batch axis first, e.g. [B, D]",
                state_info.name,
                state_info.shape_string()
            ),
        ));
    }
    let time_info = &inputs[time_i];
    if time_info.element != Some(TensorElementType::Float32) {
        return Err(Error::model_load(
            file,
            format!(
                "the time input `{}` is {} {}, but fmrt passes times as float32",
                time_info.name,
                time_info.dtype,
                time_info.shape_string()
            ),
        ));
    }
    let layout = TimeLayout::of(time_info).ok_or_else(|| {
        Error::model_load(file, format!("the time input `{}` has shape {}; fmrt supports times shaped [B], [B, 1] or [] (scalar)",
            time_info.name,
            time_info.shape_string()
        ))
    })?;
    Ok((state_i, state_from, time_i, time_from, layout))
}

fn pick(
    file: &str,
    inputs: &[TensorInfo],
    candidates: &[usize],
    hints: &[&str],
    role: &str,
) -> Result<usize> {
    if let [only] = candidates {
        return Ok(*only);
    }
    let prefix = (role == "state").then_some(STATE_PREFIX);
    let hinted: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| {
            let name = &inputs[i].name;
            hints.iter().any(|h| name.eq_ignore_ascii_case(h))
                || prefix.is_some_and(|p| name.to_ascii_lowercase().starts_with(p))
        })
        .collect();
    if let [only] = hinted.as_slice() {
        return Ok(*only);
    }
    let looks = if role == "time" {
        "a float tensor shaped [B], [B, 1] or []"
    } else {
        "a float tensor with a batch axis and at least one state axis"
    };
    let what = if candidates.is_empty() {
        format!("no input looks like the {role} input ({looks})")
    } else {
        let names: Vec<String> = candidates
            .iter()
            .map(|&i| format!("`{}`", inputs[i].name))
            .collect();
        format!(
            "cannot tell which input is the {role} input: {} could be",
            names.join(" or ")
        )
    };
    Err(Error::model_load(
        file,
        format!(
            "{what}. The model's inputs:\n{}\n{HOW_TO_MAP}",
            list_inputs(inputs)
        ),
    ))
}

/// Everything `fmrt inspect` shows about a loaded model.
#[derive(Clone, Debug)]
pub struct ModelDescription {
    /// The model file (or `<memory>`).
    pub file: String,
    /// The declared inputs, in graph order.
    pub inputs: Vec<TensorInfo>,
    /// The declared outputs, in graph order.
    pub outputs: Vec<TensorInfo>,
    /// Which input is which.
    pub mapping: InputMapping,
    /// The shape of one sample's state, when it is fixed (by the model or
    /// the builder); `None` when it comes with each call.
    pub state_shape: Option<Vec<usize>>,
    /// The state input's declared dims, batch first.
    pub state_dims: Vec<Dim>,
    /// The batch size the model was exported with, when it is fixed.
    pub fixed_batch: Option<usize>,
    /// The extra inputs declared without a batch axis.
    pub batchless: Vec<String>,
    /// The network's clock as its metadata declares it, e.g. `reversed,
    /// time × 1000 (fmrt.time_direction, fmrt.time_scale)`, or fmrt's own.
    pub clock: String,
    /// The model's producer (e.g. `pytorch 2.5`), if recorded.
    pub producer: Option<String>,
    /// Every `metadata_props` pair, sorted by key (including `fmrt.*`).
    pub metadata: Vec<(String, String)>,
    /// The execution provider running the model (`CPU`, `CUDA:0`).
    pub provider: String,
    /// Notes about the provider choice (e.g. a fallback to CPU).
    pub provider_notes: Vec<String>,
    /// The ONNX Runtime library in use.
    pub library: std::path::PathBuf,
}

impl ModelDescription {
    /// The symbolic dims named by more than one input (or twice), with the
    /// inputs naming them: sizes that must agree within a call
    /// (`seq_len`: `x`, `mask`, `mu`, `cond`).
    pub fn shared_dims(&self) -> Vec<(String, Vec<String>)> {
        let mut dims: Vec<(String, Vec<String>)> = Vec::new();
        for input in &self.inputs {
            for d in &input.dims {
                if let Dim::Symbolic(s) = d {
                    match dims.iter_mut().find(|(n, _)| n == s) {
                        Some((_, names)) if !names.contains(&input.name) => {
                            names.push(input.name.clone())
                        }
                        Some(_) => {}
                        None => dims.push((s.clone(), vec![input.name.clone()])),
                    }
                }
            }
        }
        dims.retain(|(_, names)| names.len() > 1);
        dims
    }
}

impl fmt::Display for ModelDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.mapping;
        writeln!(f, "model: {}", self.file)?;
        if let Some(p) = &self.producer {
            writeln!(f, "producer: {p}")?;
        }
        writeln!(f, "inputs:")?;
        for i in &self.inputs {
            let role = if i.name == m.state {
                format!("state ({})", m.state_from)
            } else if i.name == m.time {
                format!("time {} ({})", m.time_layout, m.time_from)
            } else if self.batchless.contains(&i.name) {
                "conditioning, no batch axis".to_string()
            } else {
                "conditioning".to_string()
            };
            writeln!(
                f,
                "  {:<16} {:<8} {:<16} {role}",
                i.name,
                i.dtype,
                i.shape_string()
            )?;
        }
        writeln!(f, "outputs:")?;
        for o in &self.outputs {
            let role = if o.name == m.output {
                "velocity"
            } else {
                "unused"
            };
            writeln!(
                f,
                "  {:<16} {:<8} {:<16} {role}",
                o.name,
                o.dtype,
                o.shape_string()
            )?;
        }
        match &self.state_shape {
            Some(shape) => writeln!(f, "state shape: {shape:?}")?,
            None => {
                let dims: Vec<String> =
                    self.state_dims.iter().skip(1).map(Dim::to_string).collect();
                writeln!(
                    f,
                    "state shape: [{}] (given with each call)",
                    dims.join(", ")
                )?
            }
        }
        writeln!(f, "clock: {}", self.clock)?;
        if let Some(n) = self.fixed_batch {
            writeln!(
                f,
                "fixed batch: {n} (calls are made in chunks of {n}, the last padded)"
            )?;
        }
        let shared = self.shared_dims();
        if !shared.is_empty() {
            writeln!(f, "tied dims:")?;
            for (symbol, inputs) in shared {
                writeln!(f, "  {symbol}: {}", inputs.join(", "))?;
            }
        }
        if self.metadata.is_empty() {
            writeln!(f, "metadata: none")?;
        } else {
            writeln!(f, "metadata:")?;
            for (k, v) in &self.metadata {
                if v.contains('\n') {
                    writeln!(f, "  {k}:")?;
                    for line in v.lines() {
                        writeln!(f, "    | {line}")?;
                    }
                } else {
                    writeln!(f, "  {k} = {v}")?;
                }
            }
        }
        writeln!(f, "provider: {}", self.provider)?;
        for n in &self.provider_notes {
            writeln!(f, "  note: {n}")?;
        }
        write!(f, "onnx runtime: {}", self.library.display())
    }
}
