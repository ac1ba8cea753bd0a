//! The model's `metadata_props`: reading them, and what fmrt takes from them
//! (the training scheduler, the prediction type, the null condition).

use ndarray::ArrayD;
use ort::session::Session;
use ort::value::TensorElementType;

use super::null_condition::{self, NullCondition as ParsedNull, NullEntry};
use super::{OnnxField, TensorInfo, META_NULL_CONDITION, META_SCHEDULER};
use crate::field::{ExtraTensor, Extras, NullValue};
use crate::path::Prediction;
use crate::scheduler::Scheduler;
use crate::{Error, Result};

/// The metadata pairs sorted by key, and the producer.
pub(super) type Metadata = (Vec<(String, String)>, Option<String>);

pub(super) fn read_metadata(session: &Session, file: &str) -> Result<Metadata> {
    let fail = |e: ort::Error| Error::model_load_from(file, "cannot read the model's metadata", e);
    let metadata = session.metadata().map_err(fail)?;
    let mut pairs = Vec::new();
    for key in metadata.custom_keys().map_err(fail)? {
        let value = metadata.custom(&key).unwrap_or_default();
        pairs.push((key, value));
    }
    pairs.sort();
    let producer = metadata.producer().filter(|p| !p.is_empty());
    Ok((pairs, producer))
}

impl OnnxField {
    /// Every `metadata_props` pair of the model, sorted by key.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The metadata value of `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `.fm` scheduler source stored in `fmrt.scheduler`.
    pub fn scheduler_source(&self) -> Option<&str> {
        self.metadata_value(META_SCHEDULER)
    }

    /// The scheduler stored in `fmrt.scheduler`, parsed with the parameter
    /// `overrides`; `Ok(None)` when the model carries none. Diagnostics name
    /// the file as `MODEL#fmrt.scheduler`.
    pub fn scheduler(&self, overrides: &[(String, f64)]) -> Result<Option<Scheduler>> {
        self.scheduler_source()
            .map(|src| {
                Scheduler::from_source(src, &format!("{}#{META_SCHEDULER}", self.file), overrides)
            })
            .transpose()
    }

    /// What the model predicts according to `fmrt.prediction` (checked at load).
    pub fn prediction(&self) -> Option<Prediction> {
        self.prediction
    }

    /// The raw `fmrt.null_condition` value.
    pub fn null_condition(&self) -> Option<&str> {
        self.metadata_value(META_NULL_CONDITION)
    }

    /// The null condition for classifier-free guidance from
    /// `fmrt.null_condition`; `Ok(None)` when the model declares none.
    ///
    /// The value is either a number, used for the model's only extra input
    /// (e.g. `3`: the label 3 for every sample), or a JSON object giving
    /// named inputs a number or `"zeros"` (`{"mu": "zeros", "text": -1}`);
    /// inputs it does not name keep their conditional value.
    pub fn null_condition_spec(&self) -> Result<Option<crate::field::NullCondition>> {
        let Some(raw) = self.null_condition() else {
            return Ok(None);
        };
        let bad = |why: String| {
            Error::model_load(
                &self.file,
                format!("metadata `{META_NULL_CONDITION}` = `{raw}`: {why}"),
            )
        };
        let mut values: Vec<(&TensorInfo, NullEntry)> = Vec::new();
        match null_condition::parse(raw).map_err(bad)? {
            ParsedNull::PerInput(entries) => {
                for (name, value) in entries {
                    let input = self
                        .mapping
                        .extras
                        .iter()
                        .find(|e| e.name == name)
                        .ok_or_else(|| {
                            bad(format!("`{name}` is not an extra input of the model"))
                        })?;
                    values.push((input, value));
                }
            }
            ParsedNull::Single(value) => match self.mapping.extras.as_slice() {
                [only] => values.push((only, NullEntry::Number(value))),
                others => {
                    return Err(bad(format!(
                        "a single number needs exactly one extra input, the model has {}",
                        others.len()
                    )))
                }
            },
        }
        let mut null = crate::field::NullCondition::new();
        for (input, value) in values {
            let value = match value {
                NullEntry::Zeros => NullValue::Zeros,
                NullEntry::Number(number) => {
                    let integer = matches!(
                        input.element,
                        Some(TensorElementType::Int64 | TensorElementType::Int32)
                    );
                    if integer && number.as_i64().is_none() {
                        return Err(bad(format!("`{}` needs an integer", input.name)));
                    }
                    NullValue::Fill(number.as_f64())
                }
            };
            null.insert(input.name.clone(), value);
        }
        Ok(Some(null))
    }

    /// The null condition of `fmrt.null_condition` as extras for a batch of
    /// `batch` samples, for a model whose conditioning inputs have fixed
    /// dims besides the batch; `Ok(None)` when the model declares none. See
    /// [`null_condition_spec`](Self::null_condition_spec) for the form that
    /// serves any shape (and names only some inputs).
    pub fn null_extras(&self, batch: usize) -> Result<Option<Extras>> {
        let Some(spec) = self.null_condition_spec()? else {
            return Ok(None);
        };
        let bad = |why: String| {
            Error::model_load(
                &self.file,
                format!(
                    "metadata `{META_NULL_CONDITION}` = `{}`: {why}",
                    self.null_condition().unwrap_or_default()
                ),
            )
        };
        let mut extras = Extras::new();
        for (name, value) in spec.iter() {
            let input = self
                .mapping
                .extras
                .iter()
                .find(|e| e.name == name)
                .expect("checked by null_condition_spec");
            let batched = self.is_batched(input);
            let mut shape = if batched { vec![batch] } else { vec![] };
            for d in input.dims.iter().skip(usize::from(batched)) {
                shape.push(d.fixed().ok_or_else(|| {
                    bad(format!(
                        "input `{}` {} has dynamic axes, so its null tensor cannot be built",
                        input.name,
                        input.shape_string()
                    ))
                })?);
            }
            let fill = match value {
                NullValue::Fill(v) => *v,
                _ => 0.0,
            };
            let like =
                ExtraTensor::Float32(ArrayD::zeros(shape)).convert_to(self.extra_dtype(input)?)?;
            extras.insert(name, like.filled_like(fill)?);
        }
        Ok(Some(extras))
    }
}
