//! The null condition ∅ of classifier-free guidance, per conditioning input.
//!
//! Real exports build their unconditional input in different ways: CosyVoice
//! zeroes `mu`, `spks` and `cond`; F5-TTS fills its text with −1; SD3 feeds
//! the embeddings of a negative prompt. A [`NullCondition`] says, for each
//! conditioning input it names, which of these it is ([`NullValue`]); inputs
//! it does not name keep their conditional value (a mask, a speaker).

use std::fmt;

use super::{ExtraTensor, Extras};
use crate::{Error, Result};

/// The unconditional value of one conditioning input.
#[derive(Clone, Debug, PartialEq)]
pub enum NullValue {
    /// Zeros (`false`) of the conditional value's type and shape.
    Zeros,
    /// The conditional value's type and shape, filled with this number (which
    /// must be a value of the type: −1 for token ids, 0 or 1 for a bool).
    Fill(f64),
    /// A given tensor of the input's type: one row (repeated for every
    /// sample), one row per sample, or for an input without a batch axis the
    /// whole tensor.
    Tensor(ExtraTensor),
}

impl fmt::Display for NullValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NullValue::Zeros => f.write_str("zeros"),
            NullValue::Fill(v) => write!(f, "fill {v}"),
            NullValue::Tensor(t) => write!(f, "{} {:?} tensor", t.dtype_name(), t.shape()),
        }
    }
}

/// The null condition: an unconditional value for each input it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NullCondition {
    inputs: Vec<(String, NullValue)>,
}

impl NullCondition {
    /// A null condition naming no input.
    pub fn new() -> Self {
        Self::default()
    }

    /// This null condition with `name`'s unconditional value `value`
    /// (replacing an earlier one).
    pub fn with(mut self, name: impl Into<String>, value: NullValue) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets `name`'s unconditional value.
    pub fn insert(&mut self, name: impl Into<String>, value: NullValue) {
        let name = name.into();
        match self.inputs.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.inputs.push((name, value)),
        }
    }

    /// Each tensor of `extras` as the given unconditional value of its input
    /// (the form of a null label, or of a negative prompt's embeddings).
    pub fn from_extras(extras: &Extras) -> Self {
        Self {
            inputs: extras
                .iter()
                .map(|(n, t)| (n.to_string(), NullValue::Tensor(t.clone())))
                .collect(),
        }
    }

    /// The inputs named, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &NullValue)> {
        self.inputs.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Whether no input is named.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// A short description, e.g. "`mu` zeros, `text` fill -1".
    pub fn describe(&self) -> String {
        self.inputs
            .iter()
            .map(|(n, v)| format!("`{n}` {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The unconditional extras for the conditional `extras` of a batch of
    /// `batch` samples: every input named here gets its null value, every
    /// other keeps its conditional value.
    ///
    /// Errors: an input named here that is not among `extras`, a fill that
    /// is not a value of the input's type, a tensor of another type or of a
    /// shape that is neither one row nor `batch` rows (shaped like the
    /// conditional value after its batch axis).
    pub fn resolve(&self, extras: &Extras, batch: usize) -> Result<Extras> {
        if let Some((name, _)) = self.inputs.iter().find(|(n, _)| extras.get(n).is_none()) {
            return Err(Error::extra(
                "the null condition",
                name,
                format!(
                    "named, but not among the conditioning inputs given ({})",
                    if extras.is_empty() {
                        "none".to_string()
                    } else {
                        extras.describe()
                    }
                ),
            ));
        }
        let mut null = Extras::new();
        for (name, conditional) in extras.iter() {
            let shared = extras.is_shared(name);
            let value = match self.inputs.iter().find(|(n, _)| n == name) {
                None => conditional.clone(),
                Some((_, NullValue::Zeros)) => conditional.zeros_like(),
                Some((_, NullValue::Fill(v))) => conditional
                    .filled_like(*v)
                    .map_err(|e| Error::extra("the null condition", name, e.to_string()))?,
                Some((_, NullValue::Tensor(t))) => {
                    given_tensor(name, t, conditional, shared, batch)?
                }
            };
            null.insert_shared(name, value, shared);
        }
        Ok(null)
    }
}

/// A given null tensor checked against the conditional value it replaces.
fn given_tensor(
    name: &str,
    given: &ExtraTensor,
    conditional: &ExtraTensor,
    shared: bool,
    batch: usize,
) -> Result<ExtraTensor> {
    if given.dtype() != conditional.dtype() {
        return Err(Error::extra(
            "the null condition",
            name,
            format!(
                "the null value is {}, but the input takes {}",
                given.dtype_name(),
                conditional.dtype_name()
            ),
        ));
    }
    let want = conditional.shape();
    let shape_error = |expected: String| Error::Shape {
        tensor: format!("the null condition of `{name}`"),
        expected,
        actual: given.shape().to_vec(),
    };
    if shared {
        return if given.shape() == want {
            Ok(given.clone())
        } else {
            Err(shape_error(format!(
                "{want:?} (the shape of its conditional value)"
            )))
        };
    }
    let rows_match = given.shape().len() == want.len() && given.shape()[1..] == want[1..];
    match given.shape().first() {
        Some(&rows) if rows_match && rows == batch => Ok(given.clone()),
        Some(1) if rows_match => given.broadcast_rows(batch),
        _ => {
            let rest: Vec<String> = want.iter().skip(1).map(usize::to_string).collect();
            Err(shape_error(format!(
                "[1 or {batch}, {}] (one row, or one per sample, shaped like its conditional value)",
                rest.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    fn cond() -> Extras {
        Extras::new()
            .with(
                "mu",
                ExtraTensor::Float32(ArrayD::from_elem(vec![2, 3], 1.5)),
            )
            .with("text", ExtraTensor::Int64(ArrayD::from_elem(vec![2, 4], 7)))
            .with(
                "mask",
                ExtraTensor::Bool(ArrayD::from_elem(vec![2, 3], true)),
            )
    }

    #[test]
    fn named_inputs_get_their_null_value_and_others_keep_theirs() {
        let null = NullCondition::new()
            .with("mu", NullValue::Zeros)
            .with("text", NullValue::Fill(-1.0))
            .resolve(&cond(), 2)
            .unwrap();
        assert_eq!(
            null.get("mu"),
            Some(&ExtraTensor::Float32(ArrayD::zeros(vec![2, 3])))
        );
        assert_eq!(
            null.get("text"),
            Some(&ExtraTensor::Int64(ArrayD::from_elem(vec![2, 4], -1)))
        );
        assert_eq!(null.get("mask"), cond().get("mask"));
    }

    #[test]
    fn bad_null_values_are_errors_naming_the_input() {
        let fill = NullCondition::new().with("mask", NullValue::Fill(0.5));
        assert!(matches!(
            fill.resolve(&cond(), 2),
            Err(Error::Extra { input, .. }) if input == "mask"
        ));
        let other = NullCondition::new().with("spks", NullValue::Zeros);
        assert!(matches!(
            other.resolve(&cond(), 2),
            Err(Error::Extra { input, .. }) if input == "spks"
        ));
        let three = NullCondition::new().with(
            "mu",
            NullValue::Tensor(ExtraTensor::Float32(ArrayD::zeros(vec![3, 3]))),
        );
        assert!(matches!(
            three.resolve(&cond(), 2),
            Err(Error::Shape { .. })
        ));
        let one = NullCondition::new().with(
            "mu",
            NullValue::Tensor(ExtraTensor::Float32(ArrayD::from_elem(vec![1, 3], 2.0))),
        );
        assert_eq!(
            one.resolve(&cond(), 2).unwrap().get("mu"),
            Some(&ExtraTensor::Float32(ArrayD::from_elem(vec![2, 3], 2.0)))
        );
    }
}
