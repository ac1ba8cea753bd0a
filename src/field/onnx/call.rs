//! Calling the model: checking a call's shapes against the declared dims,
//! checking and borrowing extras, chunking a batch to `max_batch` (padding
//! the last chunk of a fixed-batch model), grouping samples of equal time for
//! scalar-time models, and one ONNX Runtime run.

use std::borrow::Cow;
use std::collections::HashMap;

use half::f16;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, CowArray, IxDyn, Slice};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use super::builder::describe_list;
use super::{Dim, OnnxField, TensorInfo, TimeLayout};
use crate::field::{row_chunks, ExtraTensor, Extras};
use crate::{Error, Result};

/// An extra input's values as passed to one model call.
pub(super) enum ExtraData<'a> {
    Float32(CowArray<'a, f32, IxDyn>),
    Float16(CowArray<'a, f16, IxDyn>),
    Int64(CowArray<'a, i64, IxDyn>),
    Int32(CowArray<'a, i32, IxDyn>),
    Bool(CowArray<'a, bool, IxDyn>),
}

/// Applies the same expression to the array of any variant of [`ExtraData`],
/// rebuilding the variant from its result.
macro_rules! map_data {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            ExtraData::Float32($a) => ExtraData::Float32($body),
            ExtraData::Float16($a) => ExtraData::Float16($body),
            ExtraData::Int64($a) => ExtraData::Int64($body),
            ExtraData::Int32($a) => ExtraData::Int32($body),
            ExtraData::Bool($a) => ExtraData::Bool($body),
        }
    };
}

impl<'a> ExtraData<'a> {
    fn borrow(tensor: &'a ExtraTensor) -> ExtraData<'a> {
        match tensor {
            ExtraTensor::Float32(a) => ExtraData::Float32(a.view().into()),
            ExtraTensor::Float16(a) => ExtraData::Float16(a.view().into()),
            ExtraTensor::Int64(a) => ExtraData::Int64(a.view().into()),
            ExtraTensor::Int32(a) => ExtraData::Int32(a.view().into()),
            ExtraTensor::Bool(a) => ExtraData::Bool(a.view().into()),
        }
    }

    fn owned(tensor: ExtraTensor) -> ExtraData<'a> {
        match tensor {
            ExtraTensor::Float32(a) => ExtraData::Float32(a.into()),
            ExtraTensor::Float16(a) => ExtraData::Float16(a.into()),
            ExtraTensor::Int64(a) => ExtraData::Int64(a.into()),
            ExtraTensor::Int32(a) => ExtraData::Int32(a.into()),
            ExtraTensor::Bool(a) => ExtraData::Bool(a.into()),
        }
    }

    fn rows(&self, axis: usize, rows: std::ops::Range<usize>) -> ExtraData<'_> {
        let slice = Slice::from(rows);
        map_data!(self, a => a.slice_axis(Axis(axis), slice).into())
    }

    fn select<'s>(&self, axis: usize, rows: &[usize]) -> ExtraData<'s> {
        map_data!(self, a => a.select(Axis(axis), rows).into())
    }

    fn view(&self) -> ExtraData<'_> {
        map_data!(self, a => a.view().into())
    }

    fn standard(&self) -> ExtraData<'_> {
        map_data!(self, a => a.as_standard_layout())
    }

    fn value(&self) -> std::result::Result<SessionInputValue<'_>, ort::Error> {
        Ok(match self {
            ExtraData::Float32(a) => TensorRef::from_array_view(a)?.into(),
            ExtraData::Float16(a) => TensorRef::from_array_view(a)?.into(),
            ExtraData::Int64(a) => TensorRef::from_array_view(a)?.into(),
            ExtraData::Int32(a) => TensorRef::from_array_view(a)?.into(),
            ExtraData::Bool(a) => TensorRef::from_array_view(a)?.into(),
        })
    }
}

/// One extra of a call: its name, its batch axis (`None`: passed whole to
/// every chunk), its values.
pub(super) struct ExtraArg<'a> {
    pub(super) name: &'a str,
    pub(super) batch_axis: Option<usize>,
    pub(super) data: ExtraData<'a>,
}

/// The times of one call, already f32.
pub(super) enum Times<'a> {
    One(f32),
    PerSample(&'a [f32]),
}

impl<'a> Times<'a> {
    /// One time for the whole call when `t32` holds one value, else one per
    /// sample.
    pub(super) fn of(t32: &'a [f32]) -> Times<'a> {
        match t32 {
            [one] => Times::One(*one),
            _ => Times::PerSample(t32),
        }
    }

    /// The times of the samples `rows`.
    pub(super) fn rows(&self, rows: std::ops::Range<usize>) -> Times<'_> {
        match self {
            Times::One(v) => Times::One(*v),
            Times::PerSample(ts) => Times::PerSample(&ts[rows]),
        }
    }
}

/// The rows `rows` of the batched extras (the others whole).
pub(super) fn chunk_extras<'a>(
    extras: &'a [ExtraArg<'_>],
    rows: std::ops::Range<usize>,
) -> Vec<ExtraArg<'a>> {
    extras
        .iter()
        .map(|e| ExtraArg {
            name: e.name,
            batch_axis: e.batch_axis,
            data: match e.batch_axis {
                Some(axis) => e.data.rows(axis, rows.clone()),
                None => e.data.view(),
            },
        })
        .collect()
}

/// The rows `rows` (in that order, repeats allowed) of the batched extras
/// (the others whole).
fn select_extras<'a>(extras: &'a [ExtraArg<'_>], rows: &[usize]) -> Vec<ExtraArg<'a>> {
    extras
        .iter()
        .map(|e| ExtraArg {
            name: e.name,
            batch_axis: e.batch_axis,
            data: match e.batch_axis {
                Some(axis) => e.data.select(axis, rows),
                None => e.data.view(),
            },
        })
        .collect()
}

/// The sizes symbolic dims take in one call, and the input that set each,
/// so that a second input disagreeing can be named beside the first.
#[derive(Default)]
pub(super) struct Bindings {
    sizes: Vec<(String, usize, String)>,
}

impl Bindings {
    /// Checks axis `axis` of `input`, of size `size`, against its declared
    /// dim: a fixed dim must match, a symbolic dim must agree with every other
    /// input that names it in this call.
    fn bind(
        &mut self,
        input: &TensorInfo,
        axis: usize,
        size: usize,
        shape: &[usize],
    ) -> Result<()> {
        match &input.dims[axis] {
            Dim::Fixed(n) if *n != size => Err(Error::Shape {
                tensor: input.name.clone(),
                expected: format!("{} (axis {axis} is fixed at {n})", input.shape_string()),
                actual: shape.to_vec(),
            }),
            Dim::Symbolic(symbol) => match self.sizes.iter().find(|(s, _, _)| s == symbol) {
                Some((_, bound, first)) if *bound != size => Err(Error::Shape {
                    tensor: input.name.clone(),
                    expected: format!(
                        "{} with {symbol} = {bound}, as in `{first}` (the dim `{symbol}` \
                             must have one size in a call, but `{}` has {size} and `{first}` \
                             has {bound})",
                        input.shape_string(),
                        input.name
                    ),
                    actual: shape.to_vec(),
                }),
                Some(_) => Ok(()),
                None => {
                    self.sizes.push((symbol.clone(), size, input.name.clone()));
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    }
}

impl OnnxField {
    /// Checks the shapes of one call and returns its batch size B and the
    /// sizes of the state's symbolic dims: `x` is `[B, ...]` with its rank and
    /// fixed dims as declared (and the builder's state shape, if one was
    /// given), each of `like_x` (named) is shaped like `x`, and `t` holds one
    /// time for all samples or one per sample.
    pub(super) fn check_call(
        &self,
        x: &[usize],
        like_x: &[(&str, &[usize])],
        t: &[f64],
    ) -> Result<(usize, Bindings)> {
        let state = self.state_info();
        let fits_pinned = self
            .state_shape
            .as_deref()
            .is_none_or(|pinned| x.len() == pinned.len() + 1 && x[1..] == *pinned);
        if x.len() != state.dims.len() || !fits_pinned {
            let expected = match &self.state_shape {
                Some(pinned) => format!(
                    "[B, {}]",
                    pinned
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("{} (B samples)", state.shape_string()),
            };
            return Err(Error::Shape {
                tensor: "x".to_string(),
                expected,
                actual: x.to_vec(),
            });
        }
        let mut bindings = Bindings::default();
        for (axis, &size) in x.iter().enumerate().skip(1) {
            bindings.bind(state, axis, size, x).map_err(|e| match e {
                Error::Shape {
                    expected, actual, ..
                } => Error::Shape {
                    tensor: "x".to_string(),
                    expected: format!("{expected} (the state input `{}`)", state.name),
                    actual,
                },
                other => other,
            })?;
        }
        for (name, shape) in like_x {
            if *shape != x {
                return Err(Error::Shape {
                    tensor: name.to_string(),
                    expected: format!("{x:?} (the shape of x)"),
                    actual: shape.to_vec(),
                });
            }
        }
        let batch = x[0];
        if t.len() != 1 && t.len() != batch {
            return Err(Error::Shape {
                tensor: "t".to_string(),
                expected: format!("[1] or [{batch}] (one time for all, or one per sample)"),
                actual: vec![t.len()],
            });
        }
        Ok((batch, bindings))
    }

    /// The declared state input.
    pub(super) fn state_info(&self) -> &TensorInfo {
        self.inputs
            .iter()
            .find(|i| i.name == self.mapping.state)
            .expect("the state input is one of the model's inputs")
    }

    /// Runs the model once on one sample (the fixed batch, if the model has
    /// one) of zeros at t = 0.5, every symbolic dim at one size for all the
    /// inputs that name it, and checks the output.
    pub(super) fn dry_run(&self, session: &mut Session) -> Result<()> {
        let first = self.dry_run_at(session, DRY_RUN_SIZE);
        match first {
            Err(e) if DRY_RUN_SIZE != 1 && self.state_shape.is_none() => {
                // Some graphs want other lengths (a convolution without
                // padding, a fixed table): a run at size 1 decides.
                self.dry_run_at(session, 1).map_err(|_| e)
            }
            other => other,
        }
    }

    fn dry_run_at(&self, session: &mut Session, size: usize) -> Result<()> {
        let state = self.state_info();
        let batch = self.fixed_batch.unwrap_or(1);
        let mut symbols: HashMap<&str, usize> = HashMap::new();
        if let Some(Dim::Symbolic(b)) = state.dims.first() {
            symbols.insert(b, batch);
        }
        let mut shape = vec![batch];
        for (axis, dim) in state.dims.iter().enumerate().skip(1) {
            let n = match (&self.state_shape, dim) {
                (Some(pinned), _) => pinned[axis - 1],
                (None, Dim::Fixed(n)) => *n,
                (None, Dim::Symbolic(s)) => *symbols.entry(s).or_insert(size),
                (None, Dim::Dynamic) => size,
            };
            if let Dim::Symbolic(s) = dim {
                symbols.entry(s).or_insert(n);
            }
            shape.push(n);
        }
        let x = ArrayD::<f32>::zeros(shape.clone());
        let mut out = ArrayD::<f32>::zeros(shape);
        let mut extras = Vec::new();
        for input in &self.mapping.extras {
            let batched = self.is_batched(input);
            let dims: Vec<usize> = input
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    _ if i == 0 && batched => batch,
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(s) => *symbols.entry(s).or_insert(size),
                    Dim::Dynamic => size,
                })
                .collect();
            let dtype = self.extra_dtype(input)?;
            // Masks all true, everything else zeros: the ordinary case of a
            // model that attends over its whole input.
            let tensor = ExtraTensor::Float32(ArrayD::zeros(dims))
                .convert_to(dtype)
                .and_then(|t| match dtype {
                    crate::field::ExtraDtype::Bool => t.filled_like(1.0),
                    _ => Ok(t),
                })?;
            extras.push(ExtraArg {
                name: &input.name,
                batch_axis: batched.then_some(0),
                data: ExtraData::owned(tensor),
            });
        }
        self.run_call(session, x.view(), &Times::One(0.5), &extras, out.view_mut())
            .map_err(|e| {
                Error::model_load_from(
                    &self.file,
                    "the check run (one sample of zeros, t = 0.5) failed",
                    e,
                )
            })
    }

    /// Checks the caller's extras against the model's declared inputs and
    /// borrows them (repeating one row, or a scalar, to the batch where the
    /// input has a batch axis); the symbolic dims they name must agree with
    /// `bindings` (the state's) and with each other.
    pub(super) fn extra_args<'a>(
        &'a self,
        extras: &'a Extras,
        batch: usize,
        mut bindings: Bindings,
    ) -> Result<Vec<ExtraArg<'a>>> {
        let known = |name: &str| self.mapping.extras.iter().any(|e| e.name == name);
        if let Some((name, _)) = extras.iter().find(|(name, _)| !known(name)) {
            let expected = if self.mapping.extras.is_empty() {
                "it takes no extra inputs".to_string()
            } else {
                format!(
                    "its extra inputs are {}",
                    describe_list(&self.mapping.extras)
                )
            };
            return Err(Error::extra(
                &self.file,
                name,
                format!("not an input of the model; {expected}"),
            ));
        }
        let mut args = Vec::with_capacity(self.mapping.extras.len());
        for input in &self.mapping.extras {
            let tensor = extras.get(&input.name).ok_or_else(|| {
                Error::extra(
                    &self.file,
                    &input.name,
                    format!(
                        "the model needs it ({input}), and it was not given (pass it with \
                         Extras::new().with(\"{0}\", ..), or --cond {0}=FILE.npy)",
                        input.name
                    ),
                )
            })?;
            if tensor.dtype_name() != input.dtype {
                return Err(Error::extra(
                    &self.file,
                    &input.name,
                    format!(
                        "given as {} {:?}, but the model declares {input}",
                        tensor.dtype_name(),
                        tensor.shape(),
                    ),
                ));
            }
            let batched = self.is_batched(input);
            let data = if batched {
                self.batched_extra(input, tensor, batch)?
            } else {
                ExtraData::borrow(tensor)
            };
            let shape = map_shape(&data);
            if shape.len() != input.dims.len() {
                return Err(Error::Shape {
                    tensor: input.name.clone(),
                    expected: format!("{} (rank {})", input.shape_string(), input.dims.len()),
                    actual: tensor.shape().to_vec(),
                });
            }
            let first = usize::from(batched);
            for (axis, &size) in shape.iter().enumerate().skip(first) {
                bindings.bind(input, axis, size, &shape)?;
            }
            args.push(ExtraArg {
                name: &input.name,
                batch_axis: batched.then_some(0),
                data,
            });
        }
        Ok(args)
    }

    /// An extra with a batch axis, with `batch` rows: as given, or repeated
    /// from one row (or from a scalar, for an input declared `[B]`).
    fn batched_extra<'a>(
        &self,
        input: &TensorInfo,
        tensor: &'a ExtraTensor,
        batch: usize,
    ) -> Result<ExtraData<'a>> {
        match tensor.shape().first() {
            Some(&rows) if rows == batch => Ok(ExtraData::borrow(tensor)),
            Some(1) => Ok(ExtraData::owned(tensor.broadcast_rows(batch)?)),
            None if input.dims.len() == 1 => Ok(ExtraData::owned(tensor.broadcast_rows(batch)?)),
            _ => Err(Error::Shape {
                tensor: input.name.clone(),
                expected: format!(
                    "[{batch}, ...] (one row per sample, or one row for all; declared {})",
                    input.shape_string()
                ),
                actual: tensor.shape().to_vec(),
            }),
        }
    }

    /// Runs a whole call (any batch size): in chunks of `max_batch`, and for a
    /// scalar-time model once per group of equal times.
    pub(super) fn run_call(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        if let (TimeLayout::Scalar, Times::PerSample(ts)) = (self.mapping.time_layout, t) {
            let first = ts.first().copied().unwrap_or(0.0);
            if ts.iter().all(|&s| s.to_bits() == first.to_bits()) {
                return self.run_chunks(session, x, &Times::One(first), extras, out);
            }
            let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
            for (i, s) in ts.iter().enumerate() {
                groups.entry(s.to_bits()).or_default().push(i);
            }
            let mut groups: Vec<(u32, Vec<usize>)> = groups.into_iter().collect();
            groups.sort_by_key(|(_, rows)| rows[0]);
            for (bits, rows) in groups {
                let xg = x.select(Axis(0), &rows);
                let eg = select_extras(extras, &rows);
                let mut og = ArrayD::<f32>::zeros(xg.raw_dim());
                self.run_chunks(
                    session,
                    xg.view(),
                    &Times::One(f32::from_bits(bits)),
                    &eg,
                    og.view_mut(),
                )?;
                for (k, &i) in rows.iter().enumerate() {
                    out.index_axis_mut(Axis(0), i)
                        .assign(&og.index_axis(Axis(0), k));
                }
            }
            return Ok(());
        }
        self.run_chunks(session, x, t, extras, out)
    }

    fn run_chunks(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let batch = x.shape()[0];
        let x = x.as_standard_layout();
        for rows in row_chunks(batch, self.max_batch) {
            let xc = x.slice_axis(Axis(0), Slice::from(rows.clone()));
            let tc = t.rows(rows.clone());
            let ec = chunk_extras(extras, rows.clone());
            let oc = out.slice_axis_mut(Axis(0), Slice::from(rows));
            self.run_once(
                session,
                xc,
                &tc,
                &ec,
                &mut [(self.mapping.output.as_str(), 0, oc)],
            )?;
        }
        Ok(())
    }

    /// One model call on a batch of at most `max_batch` samples, writing the
    /// named float32 outputs into `outputs` (name, batch axis, buffer; the
    /// first is the velocity). A model exported with a fixed batch N gets a
    /// chunk of fewer rows padded to N with copies of its last row, and only
    /// the chunk's own rows of each output are kept.
    pub(super) fn run_once(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        outputs: &mut [(&str, usize, ArrayViewMutD<'_, f32>)],
    ) -> Result<()> {
        let n = x.shape()[0];
        match self.fixed_batch {
            Some(fixed) if n < fixed && n > 0 => {
                self.run_padded(session, x, t, extras, outputs, fixed)
            }
            _ => self.run_session(session, x, t, extras, outputs),
        }
    }

    fn run_padded(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        outputs: &mut [(&str, usize, ArrayViewMutD<'_, f32>)],
        fixed: usize,
    ) -> Result<()> {
        let n = x.shape()[0];
        let order: Vec<usize> = (0..fixed).map(|i| i.min(n - 1)).collect();
        let xp = x.select(Axis(0), &order);
        let padded_times: Vec<f32>;
        let tp = match t {
            Times::One(v) => Times::One(*v),
            Times::PerSample(ts) => {
                padded_times = order.iter().map(|&i| ts[i]).collect();
                Times::PerSample(&padded_times)
            }
        };
        let ep = select_extras(extras, &order);
        let mut buffers: Vec<ArrayD<f32>> = outputs
            .iter()
            .map(|(_, axis, out)| {
                let mut shape = out.shape().to_vec();
                shape[*axis] = fixed;
                ArrayD::zeros(shape)
            })
            .collect();
        {
            let mut padded: Vec<(&str, usize, ArrayViewMutD<'_, f32>)> = outputs
                .iter()
                .zip(buffers.iter_mut())
                .map(|((name, axis, _), buffer)| (*name, *axis, buffer.view_mut()))
                .collect();
            self.run_session(session, xp.view(), &tp, &ep, &mut padded)?;
        }
        for ((_, axis, out), buffer) in outputs.iter_mut().zip(&buffers) {
            out.assign(&buffer.slice_axis(Axis(*axis), Slice::from(0..n)));
        }
        Ok(())
    }

    fn run_session(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        outputs: &mut [(&str, usize, ArrayViewMutD<'_, f32>)],
    ) -> Result<()> {
        let results = self.session_outputs(session, x, t, extras)?;
        for (k, (name, _, out)) in outputs.iter_mut().enumerate() {
            let v = self.output_view(&results, name, k, out.shape())?;
            out.assign(&v);
        }
        Ok(())
    }

    /// Whether a velocity call of `batch` samples at `times` is one plain
    /// run, whose output is the velocity as it lies: one chunk, no padding
    /// to a fixed batch, no grouping of samples by time.
    pub(super) fn is_one_run(&self, batch: usize, times: &Times<'_>) -> bool {
        let padded = self.fixed_batch.is_some_and(|fixed| batch < fixed);
        let grouped = match (self.mapping.time_layout, times) {
            (TimeLayout::Scalar, Times::PerSample(ts)) => {
                let first = ts.first().map(|s| s.to_bits());
                ts.iter().any(|s| Some(s.to_bits()) != first)
            }
            _ => false,
        };
        batch <= self.max_batch && !padded && !grouped
    }

    /// One ONNX Runtime run on a batch the model takes as it is.
    pub(super) fn session_outputs<'s>(
        &self,
        session: &'s mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
    ) -> Result<ort::session::SessionOutputs<'s>> {
        let file = &self.file;
        let ort_err = |what: &str, e: ort::Error| Error::field_from(file, what, e);
        let n = x.shape()[0];

        let time_values: Vec<f32> = match (self.mapping.time_layout, t) {
            (TimeLayout::Scalar, Times::One(v)) => vec![*v],
            (TimeLayout::Scalar, Times::PerSample(ts)) => vec![ts.first().copied().unwrap_or(0.0)],
            (_, Times::One(v)) => vec![*v; n],
            (_, Times::PerSample(ts)) => ts.to_vec(),
        };
        let time_shape: Vec<usize> = match self.mapping.time_layout {
            TimeLayout::Scalar => vec![],
            TimeLayout::Batch => vec![n],
            TimeLayout::Column => vec![n, 1],
        };

        let x_owned;
        let x = if x.is_standard_layout() {
            x
        } else {
            x_owned = x.as_standard_layout().into_owned();
            x_owned.view()
        };
        let extra_views: Vec<(&str, ExtraData<'_>)> =
            extras.iter().map(|e| (e.name, e.data.standard())).collect();

        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(2 + extras.len());
        inputs.push((
            Cow::Borrowed(self.mapping.state.as_str()),
            TensorRef::from_array_view(x)
                .map_err(|e| ort_err("cannot pass the state", e))?
                .into(),
        ));
        inputs.push((
            Cow::Borrowed(self.mapping.time.as_str()),
            TensorRef::from_array_view((time_shape, time_values.as_slice()))
                .map_err(|e| ort_err("cannot pass the time", e))?
                .into(),
        ));
        for (name, data) in &extra_views {
            let value = data
                .value()
                .map_err(|e| ort_err(&format!("cannot pass `{name}`"), e))?;
            inputs.push((Cow::Borrowed(*name), value));
        }

        session
            .run(inputs)
            .map_err(|e| ort_err("ONNX Runtime failed to run the model", e))
    }

    /// The float32 output `name` of a run (the `k`-th the caller asked
    /// for; the first is the velocity), checked to have the shape
    /// `expected`.
    pub(super) fn output_view<'v>(
        &self,
        results: &'v ort::session::SessionOutputs<'_>,
        name: &str,
        k: usize,
        expected: &[usize],
    ) -> Result<ArrayViewD<'v, f32>> {
        let file = &self.file;
        let value = results
            .get(name)
            .ok_or_else(|| Error::field(file, format!("the model returned no output `{name}`")))?;
        let v = value.try_extract_array::<f32>().map_err(|e| {
            Error::field_from(
                file,
                format!("the output `{name}` is not a float32 tensor"),
                e,
            )
        })?;
        if v.shape() != expected {
            let why = if k == 0 {
                format!(
                    "shaped like the state input `{}`; a velocity model returns one \
                     velocity per state entry",
                    self.mapping.state
                )
            } else {
                "one product per direction and state entry".to_string()
            };
            return Err(Error::field(
                file,
                format!(
                    "the output `{name}` has shape {:?}, expected {expected:?} ({why})",
                    v.shape(),
                ),
            ));
        }
        Ok(v)
    }
}

/// The size the check run at load gives each dynamic dim (one size for all
/// inputs that name the same symbol); 1 is tried when it fails.
const DRY_RUN_SIZE: usize = 16;

fn map_shape(data: &ExtraData<'_>) -> Vec<usize> {
    match data {
        ExtraData::Float32(a) => a.shape().to_vec(),
        ExtraData::Float16(a) => a.shape().to_vec(),
        ExtraData::Int64(a) => a.shape().to_vec(),
        ExtraData::Int32(a) => a.shape().to_vec(),
        ExtraData::Bool(a) => a.shape().to_vec(),
    }
}
