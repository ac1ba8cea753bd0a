//! Conditioning from the command line: `--label`, `--cond NAME=FILE|NUMBER`
//! and, for guidance, `--null-label` and `--null-cond NAME=FILE|zeros|fill:V`.
//! Files are read here; what each value may be (its type, its shape, how a
//! row or a scalar spreads over the batch) is decided by the library.

use std::path::Path;

use fmrt::field::onnx::OnnxField;
use fmrt::field::{ExtraTensor, Extras, NullCondition, NullValue};
use ndarray::ArrayD;

use crate::args::AdaptArgs;
use crate::failure::{fail, Failure};
use crate::npy;

/// The conditioning inputs of `--label` (for `n` samples) and `--cond`, as
/// the model takes them; `None` when neither is given.
pub fn conditioning(
    model: &OnnxField,
    adapt: &AdaptArgs,
    n: usize,
) -> Result<Option<Extras>, Failure> {
    let mut extras = match adapt.label {
        Some(label) => label_extras(model, label, n)?,
        None => Extras::new(),
    };
    for (name, value) in &adapt.cond {
        if extras.get(name).is_some() {
            return Err(fail!("--cond {name}=…: `{name}` is given twice"));
        }
        let tensor = tensor_for(model, "--cond", name, value)?;
        extras.insert(name.clone(), tensor);
    }
    Ok((!extras.is_empty()).then(|| model.conditioning(&extras)))
}

/// The null condition of `--null-label` or `--null-cond`, if given.
pub fn null_condition(
    model: &OnnxField,
    adapt: &AdaptArgs,
) -> Result<Option<NullCondition>, Failure> {
    if adapt.null_label.is_some() && !adapt.null_cond.is_empty() {
        return Err(fail!(
            "--null-label and --null-cond both set the null condition; give one"
        ));
    }
    if let Some(label) = adapt.null_label {
        return Ok(Some(NullCondition::from_extras(&label_extras(
            model, label, 1,
        )?)));
    }
    if adapt.null_cond.is_empty() {
        return Ok(None);
    }
    let mut null = NullCondition::new();
    for (name, value) in &adapt.null_cond {
        let parsed = if value == "zeros" {
            NullValue::Zeros
        } else if let Some(fill) = value.strip_prefix("fill:") {
            let v: f64 = fill
                .trim()
                .parse()
                .map_err(|_| fail!("--null-cond {name}={value}: `{fill}` is not a number"))?;
            NullValue::Fill(v)
        } else {
            NullValue::Tensor(tensor_for(model, "--null-cond", name, value)?)
        };
        null.insert(name.clone(), parsed);
    }
    Ok(Some(null))
}

/// The value of `flag NAME=VALUE`: a file, or for `--cond` a number, in the
/// type the model declares for `name`.
fn tensor_for(
    model: &OnnxField,
    flag: &str,
    name: &str,
    value: &str,
) -> Result<ExtraTensor, Failure> {
    let input = model
        .extra_inputs()
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| {
            let names: Vec<String> = model.extra_inputs().iter().map(|i| i.to_string()).collect();
            fail!(
                "{flag} {name}=…: `{name}` is not a conditioning input of {}; its conditioning inputs: {}",
                model.file(),
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )
        })?;
    let dtype = fmrt::field::ExtraDtype::from_name(&input.dtype).ok_or_else(|| {
        fail!(
            "{flag} {name}=…: the input's type {} cannot be passed",
            input.dtype
        )
    })?;
    let context = |e: fmrt::Error| {
        fail!(
            "{flag} {name}={value}: {} (the model declares {input})",
            fmrt::error::Report(&e)
        )
    };
    if flag == "--cond" {
        if let Ok(number) = value.parse::<f64>() {
            return ExtraTensor::Float32(ArrayD::zeros(Vec::new()))
                .convert_to(dtype)
                .and_then(|t| t.filled_like(number))
                .map_err(context);
        }
    }
    let tensor = npy::read_tensor(Path::new(value))?;
    tensor.convert_to(dtype).map_err(context)
}

/// `label` for each of `n` samples, for the model's class-label input
/// ([`OnnxField::label_input`]).
pub fn label_extras(model: &OnnxField, label: i64, n: usize) -> Result<Extras, Failure> {
    let name = model
        .label_input()
        .map_err(|e| fail!("--label: {}", fmrt::error::Report(&e)))?;
    Ok(Extras::new().with(name, ExtraTensor::labels(&vec![label; n])))
}
