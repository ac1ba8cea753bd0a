//! Calling the model: checking and slicing extras, chunking a batch to
//! `max_batch`, grouping samples of equal time for scalar-time models, and
//! one ONNX Runtime run.

use std::borrow::Cow;
use std::collections::HashMap;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, CowArray, IxDyn, Slice};
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef};

use super::builder::describe_list;
use super::{OnnxField, TimeLayout};
use crate::field::{row_chunks, ExtraTensor, Extras};
use crate::{Error, Result};

/// An extra input's rows as passed to one model call.
pub(super) enum ExtraData<'a> {
    Int64(CowArray<'a, i64, IxDyn>),
    Float32(CowArray<'a, f32, IxDyn>),
}

impl ExtraData<'_> {
    fn rows(&self, rows: std::ops::Range<usize>) -> ExtraData<'_> {
        let slice = Slice::from(rows);
        match self {
            ExtraData::Int64(a) => ExtraData::Int64(a.slice_axis(Axis(0), slice).into()),
            ExtraData::Float32(a) => ExtraData::Float32(a.slice_axis(Axis(0), slice).into()),
        }
    }

    fn select<'s>(&self, rows: &[usize]) -> ExtraData<'s> {
        match self {
            ExtraData::Int64(a) => ExtraData::Int64(a.select(Axis(0), rows).into()),
            ExtraData::Float32(a) => ExtraData::Float32(a.select(Axis(0), rows).into()),
        }
    }

    fn view(&self) -> ExtraData<'_> {
        match self {
            ExtraData::Int64(a) => ExtraData::Int64(a.view().into()),
            ExtraData::Float32(a) => ExtraData::Float32(a.view().into()),
        }
    }
}

/// One extra of a call: its name, whether it has a batch axis, its rows.
pub(super) struct ExtraArg<'a> {
    pub(super) name: &'a str,
    pub(super) batched: bool,
    pub(super) data: ExtraData<'a>,
}

/// The times of one call, already f32.
pub(super) enum Times<'a> {
    One(f32),
    PerSample(&'a [f32]),
}

impl Times<'_> {
    /// The times of the samples `rows`.
    pub(super) fn rows(&self, rows: std::ops::Range<usize>) -> Times<'_> {
        match self {
            Times::One(v) => Times::One(*v),
            Times::PerSample(ts) => Times::PerSample(&ts[rows]),
        }
    }
}

/// The rows `rows` of the batched extras (unbatched ones whole).
pub(super) fn chunk_extras<'a>(
    extras: &'a [ExtraArg<'_>],
    rows: std::ops::Range<usize>,
) -> Vec<ExtraArg<'a>> {
    extras
        .iter()
        .map(|e| ExtraArg {
            name: e.name,
            batched: e.batched,
            data: if e.batched {
                e.data.rows(rows.clone())
            } else {
                e.data.view()
            },
        })
        .collect()
}

impl OnnxField {
    /// Checks the shapes of one call and returns its batch size B: `x` is
    /// `[B, ...state shape]`, each of `like_x` (named) is shaped like `x`, and
    /// `t` holds one time for all samples or one per sample.
    pub(super) fn check_call(
        &self,
        x: &[usize],
        like_x: &[(&str, &[usize])],
        t: &[f64],
    ) -> Result<usize> {
        if x.len() != self.state_shape.len() + 1 || x[1..] != self.state_shape[..] {
            let dims: Vec<String> = self.state_shape.iter().map(usize::to_string).collect();
            return Err(Error::Shape {
                tensor: "x".to_string(),
                expected: format!("[B, {}]", dims.join(", ")),
                actual: x.to_vec(),
            });
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
        Ok(batch)
    }

    /// Runs the model once on one sample of zeros at t = 0.5 and checks the output.
    pub(super) fn dry_run(&self, session: &mut Session) -> Result<()> {
        let mut shape = vec![1];
        shape.extend_from_slice(&self.state_shape);
        let x = ArrayD::<f32>::zeros(shape.clone());
        let mut out = ArrayD::<f32>::zeros(shape);
        let mut extras = Vec::new();
        for input in &self.mapping.extras {
            let batched = self.is_batched(input);
            let dims: Vec<usize> = input
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if i == 0 && batched {
                        1
                    } else {
                        d.fixed().unwrap_or(1)
                    }
                })
                .collect();
            let data = match input.element {
                Some(TensorElementType::Int64) => ExtraData::Int64(ArrayD::zeros(dims).into()),
                _ => ExtraData::Float32(ArrayD::zeros(dims).into()),
            };
            extras.push(ExtraArg {
                name: &input.name,
                batched,
                data,
            });
        }
        self.run_call(session, x.view(), &Times::One(0.5), &extras, out.view_mut())
            .map_err(|e| match e {
                Error::Field { field, reason } if field == self.file => {
                    Error::model_load(field, reason)
                }
                other => Error::model_load_from(
                    &self.file,
                    "the check run (one sample of zeros, t = 0.5) failed",
                    other,
                ),
            })
    }

    /// Checks the caller's extras against the model's and borrows their rows.
    pub(super) fn extra_args<'a>(
        &'a self,
        extras: &'a Extras,
        batch: usize,
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
            return Err(Error::field(
                &self.file,
                format!("`{name}` is not an input of the model; {expected}",),
            ));
        }
        let mut args = Vec::with_capacity(self.mapping.extras.len());
        for input in &self.mapping.extras {
            let tensor = extras.get(&input.name).ok_or_else(|| {
                Error::field(
                    &self.file,
                    format!(
                        "the model needs the extra input {input}, which was not given \
                     (pass it with Extras::new().with(\"{}\", ..))",
                        input.name
                    ),
                )
            })?;
            if tensor.dtype_name() != input.dtype {
                return Err(Error::field(
                    &self.file,
                    format!(
                        "extra input `{}` is {} {:?}, but the model declares {input}",
                        input.name,
                        tensor.dtype_name(),
                        tensor.shape(),
                    ),
                ));
            }
            let batched = self.is_batched(input);
            if batched && tensor.shape().first() != Some(&batch) {
                return Err(Error::Shape {
                    tensor: input.name.clone(),
                    expected: format!(
                        "[{batch}, ...] (one row per sample; declared {})",
                        input.shape_string()
                    ),
                    actual: tensor.shape().to_vec(),
                });
            }
            let data = match tensor {
                ExtraTensor::Int64(a) => ExtraData::Int64(a.as_standard_layout()),
                ExtraTensor::Float32(a) => ExtraData::Float32(a.as_standard_layout()),
            };
            args.push(ExtraArg {
                name: &input.name,
                batched,
                data,
            });
        }
        Ok(args)
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
                let eg: Vec<ExtraArg<'_>> = extras
                    .iter()
                    .map(|e| ExtraArg {
                        name: e.name,
                        batched: e.batched,
                        data: if e.batched {
                            e.data.select(&rows)
                        } else {
                            e.data.view()
                        },
                    })
                    .collect();
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
                &mut [(self.mapping.output.as_str(), oc)],
            )?;
        }
        Ok(())
    }

    /// One model call on a batch of at most `max_batch` samples, writing the
    /// named float32 outputs into `outputs` (the first is the velocity).
    pub(super) fn run_once(
        &self,
        session: &mut Session,
        x: ArrayViewD<'_, f32>,
        t: &Times<'_>,
        extras: &[ExtraArg<'_>],
        outputs: &mut [(&str, ArrayViewMutD<'_, f32>)],
    ) -> Result<()> {
        let file = &self.file;
        let ort_err = |what: &str, e: ort::Error| Error::field(file, format!("{what}: {e}"));
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
        let extra_views: Vec<(&str, ExtraData<'_>)> = extras
            .iter()
            .map(|e| {
                let data = match &e.data {
                    ExtraData::Int64(a) => ExtraData::Int64(a.as_standard_layout()),
                    ExtraData::Float32(a) => ExtraData::Float32(a.as_standard_layout()),
                };
                (e.name, data)
            })
            .collect();

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
            let value: SessionInputValue<'_> = match data {
                ExtraData::Int64(a) => TensorRef::from_array_view(a)
                    .map_err(|e| ort_err(&format!("cannot pass `{name}`"), e))?
                    .into(),
                ExtraData::Float32(a) => TensorRef::from_array_view(a)
                    .map_err(|e| ort_err(&format!("cannot pass `{name}`"), e))?
                    .into(),
            };
            inputs.push((Cow::Borrowed(*name), value));
        }

        let results = session
            .run(inputs)
            .map_err(|e| ort_err("ONNX Runtime failed to run the model", e))?;
        for (k, (name, out)) in outputs.iter_mut().enumerate() {
            let value = results.get(*name).ok_or_else(|| {
                Error::field(file, format!("the model returned no output `{name}`"))
            })?;
            let v = value.try_extract_array::<f32>().map_err(|e| {
                Error::field(
                    file,
                    format!("the output `{name}` is not a float32 tensor: {e}"),
                )
            })?;
            if v.shape() != out.shape() {
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
                        "the output `{name}` has shape {:?}, expected {:?} ({why})",
                        v.shape(),
                        out.shape(),
                    ),
                ));
            }
            out.assign(&v);
        }
        Ok(())
    }
}
