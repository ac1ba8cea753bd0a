//! Conditioning inputs ("extras") passed to a velocity field with each call.
//!
//! An extra is a tensor of one of the element types real exports use
//! ([`ExtraDtype`]). Most have the batch first, one row per sample; an extra
//! marked *shared* ([`Extras::with_shared`]) is passed as given to every call
//! instead: the inputs a model declares without a batch axis (FLUX's
//! `img_ids`), or one value for every sample (a guidance-scale input given as
//! one number). Row operations (slicing a batch, stacking guidance halves)
//! leave shared extras as they are.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;
use ndarray::{concatenate, Array1, ArrayD, ArrayViewD, Axis, Slice};

use crate::{Error, Result};

/// The element types an extra may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtraDtype {
    /// 32-bit floats (context embeddings, masks).
    Float32,
    /// 16-bit floats (IEEE half precision).
    Float16,
    /// 64-bit integers (class labels, token ids).
    Int64,
    /// 32-bit integers.
    Int32,
    /// Booleans (masks).
    Bool,
}

impl ExtraDtype {
    /// Every type, in the order of the enum.
    pub const ALL: [ExtraDtype; 5] = [
        ExtraDtype::Float32,
        ExtraDtype::Float16,
        ExtraDtype::Int64,
        ExtraDtype::Int32,
        ExtraDtype::Bool,
    ];

    /// The name ONNX and NumPy use (`float32`, `float16`, `int64`, `int32`, `bool`).
    pub fn name(self) -> &'static str {
        match self {
            ExtraDtype::Float32 => "float32",
            ExtraDtype::Float16 => "float16",
            ExtraDtype::Int64 => "int64",
            ExtraDtype::Int32 => "int32",
            ExtraDtype::Bool => "bool",
        }
    }

    /// The type named `name` (as [`name`](Self::name) writes it).
    pub fn from_name(name: &str) -> Option<ExtraDtype> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl fmt::Display for ExtraDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One conditioning tensor: class labels are `Int64` of shape `[B]`, context
/// vectors `Float32` of shape `[B, ...]`, masks `Bool`.
#[derive(Clone, Debug, PartialEq)]
pub enum ExtraTensor {
    /// 32-bit floats (context embeddings, masks).
    Float32(ArrayD<f32>),
    /// 16-bit floats.
    Float16(ArrayD<f16>),
    /// 64-bit integers (class labels, token ids).
    Int64(ArrayD<i64>),
    /// 32-bit integers.
    Int32(ArrayD<i32>),
    /// Booleans.
    Bool(ArrayD<bool>),
}

/// Applies the same expression to the array of any variant, rebuilding the
/// variant from its result.
macro_rules! map_tensor {
    ($tensor:expr, $a:ident => $body:expr) => {
        match $tensor {
            ExtraTensor::Float32($a) => ExtraTensor::Float32($body),
            ExtraTensor::Float16($a) => ExtraTensor::Float16($body),
            ExtraTensor::Int64($a) => ExtraTensor::Int64($body),
            ExtraTensor::Int32($a) => ExtraTensor::Int32($body),
            ExtraTensor::Bool($a) => ExtraTensor::Bool($body),
        }
    };
}

/// Evaluates the same expression on the array of any variant.
macro_rules! with_tensor {
    ($tensor:expr, $a:ident => $body:expr) => {
        match $tensor {
            ExtraTensor::Float32($a) => $body,
            ExtraTensor::Float16($a) => $body,
            ExtraTensor::Int64($a) => $body,
            ExtraTensor::Int32($a) => $body,
            ExtraTensor::Bool($a) => $body,
        }
    };
}

impl ExtraTensor {
    /// A class-label tensor `[labels.len()]`.
    pub fn labels(labels: &[i64]) -> Self {
        ExtraTensor::Int64(Array1::from(labels.to_vec()).into_dyn())
    }

    /// A float32 scalar (shape `[]`), e.g. for a guidance-scale input.
    pub fn scalar(value: f32) -> Self {
        ExtraTensor::Float32(ArrayD::from_elem(Vec::new(), value))
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        with_tensor!(self, a => a.shape())
    }

    /// The element type.
    pub fn dtype(&self) -> ExtraDtype {
        match self {
            ExtraTensor::Float32(_) => ExtraDtype::Float32,
            ExtraTensor::Float16(_) => ExtraDtype::Float16,
            ExtraTensor::Int64(_) => ExtraDtype::Int64,
            ExtraTensor::Int32(_) => ExtraDtype::Int32,
            ExtraTensor::Bool(_) => ExtraDtype::Bool,
        }
    }

    /// The element type as ONNX names it (`int64`, `float32`, ...).
    pub fn dtype_name(&self) -> &'static str {
        self.dtype().name()
    }

    /// The rows `range` of the batch axis.
    pub fn rows(&self, range: Range<usize>) -> ExtraTensor {
        let slice = Slice::from(range);
        map_tensor!(self, a => a.slice_axis(Axis(0), slice).to_owned())
    }

    /// The rows `rows` of the batch axis, in that order (rows may repeat).
    pub fn select(&self, rows: &[usize]) -> ExtraTensor {
        map_tensor!(self, a => a.select(Axis(0), rows))
    }

    /// The tensor with its first axis of length 1 repeated to `batch` rows; a
    /// scalar (shape `[]`) becomes `[batch]`.
    pub fn broadcast_rows(&self, batch: usize) -> Result<ExtraTensor> {
        let shape = self.shape();
        let target: Vec<usize> = match shape.first() {
            None => vec![batch],
            Some(_) => {
                let mut s = shape.to_vec();
                s[0] = batch;
                s
            }
        };
        let fail = || {
            Error::InvalidArgument(format!(
                "cannot repeat a tensor of shape {shape:?} to {target:?}"
            ))
        };
        Ok(map_tensor!(self, a => a
            .broadcast(target.clone())
            .ok_or_else(fail)?
            .to_owned()))
    }

    /// A tensor of this type and shape filled with zeros (`false`).
    pub fn zeros_like(&self) -> ExtraTensor {
        self.filled_like(0.0)
            .expect("zero is a value of every element type")
    }

    /// A tensor of this type and shape filled with `value`; an error when
    /// `value` is not a value of the type (0.5 for an integer or bool).
    pub fn filled_like(&self, value: f64) -> Result<ExtraTensor> {
        let scalar = scalar_as(value, self.dtype())?;
        let shape = self.shape().to_vec();
        Ok(match scalar {
            ExtraTensor::Float32(a) => ExtraTensor::Float32(ArrayD::from_elem(shape, a[[]])),
            ExtraTensor::Float16(a) => ExtraTensor::Float16(ArrayD::from_elem(shape, a[[]])),
            ExtraTensor::Int64(a) => ExtraTensor::Int64(ArrayD::from_elem(shape, a[[]])),
            ExtraTensor::Int32(a) => ExtraTensor::Int32(ArrayD::from_elem(shape, a[[]])),
            ExtraTensor::Bool(a) => ExtraTensor::Bool(ArrayD::from_elem(shape, a[[]])),
        })
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
        macro_rules! pair {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((ExtraTensor::$variant(a), ExtraTensor::$variant(b)) => {
                        concat_rows(a.view(), b.view())
                            .map(ExtraTensor::$variant)
                            .ok_or_else(mismatch)
                    })*
                    _ => Err(mismatch()),
                }
            };
        }
        pair!(Float32, Float16, Int64, Int32, Bool)
    }

    /// Rows `a₀ b₀ a₁ b₁ …` of this tensor (`a`) and `other` (`b`): both need
    /// the same type and shape.
    pub fn interleave(&self, other: &ExtraTensor) -> Result<ExtraTensor> {
        let batch = self.shape().first().copied().unwrap_or(0);
        if self.shape() != other.shape() || self.dtype() != other.dtype() {
            return Err(Error::InvalidArgument(format!(
                "cannot interleave extras of type {} {:?} and {} {:?}",
                self.dtype_name(),
                self.shape(),
                other.dtype_name(),
                other.shape()
            )));
        }
        let both = self.concat(other)?;
        let order: Vec<usize> = (0..batch).flat_map(|i| [i, batch + i]).collect();
        Ok(both.select(&order))
    }

    /// The same values as type `dtype`, where that loses nothing a user meant:
    /// any type to itself; 0/1 (or `false`/`true`) to bool; integers in range
    /// to int64 and int32; integral floats to integers; bools to 0/1; float32
    /// and float64 to float16 by rounding to nearest; integers to floats.
    /// Anything else (0.5 for a bool, 3e9 for an int32) is an error naming the
    /// first value that does not fit.
    pub fn convert_to(&self, dtype: ExtraDtype) -> Result<ExtraTensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let values = self.values_f64();
        let shape = self.shape().to_vec();
        let fail = |v: f64| {
            Error::InvalidArgument(format!(
                "the value {v} of a {} tensor is not a {} value",
                self.dtype_name(),
                dtype.name()
            ))
        };
        let integral = |v: f64, lo: f64, hi: f64| -> Result<f64> {
            if v.fract() == 0.0 && v >= lo && v <= hi {
                Ok(v)
            } else {
                Err(fail(v))
            }
        };
        let build = |data| ArrayD::from_shape_vec(shape.clone(), data);
        let shape_err = |e: ndarray::ShapeError| Error::InvalidArgument(e.to_string());
        Ok(match dtype {
            ExtraDtype::Float32 => ExtraTensor::Float32(
                build(values.iter().map(|&v| v as f32).collect()).map_err(shape_err)?,
            ),
            ExtraDtype::Float16 => {
                let data = values
                    .iter()
                    .map(|&v| {
                        let h = f16::from_f64(v);
                        if v.is_finite() && !h.is_finite() {
                            Err(fail(v))
                        } else {
                            Ok(h)
                        }
                    })
                    .collect::<Result<Vec<f16>>>()?;
                ExtraTensor::Float16(
                    ArrayD::from_shape_vec(shape.clone(), data).map_err(shape_err)?,
                )
            }
            ExtraDtype::Int64 => {
                let data = values
                    .iter()
                    .map(|&v| integral(v, -9.223_372_036_854_775e18, 9.223_372_036_854_775e18))
                    .map(|r| r.map(|v| v as i64))
                    .collect::<Result<Vec<i64>>>()?;
                ExtraTensor::Int64(ArrayD::from_shape_vec(shape.clone(), data).map_err(shape_err)?)
            }
            ExtraDtype::Int32 => {
                let data = values
                    .iter()
                    .map(|&v| integral(v, f64::from(i32::MIN), f64::from(i32::MAX)))
                    .map(|r| r.map(|v| v as i32))
                    .collect::<Result<Vec<i32>>>()?;
                ExtraTensor::Int32(ArrayD::from_shape_vec(shape.clone(), data).map_err(shape_err)?)
            }
            ExtraDtype::Bool => {
                let data = values
                    .iter()
                    .map(|&v| match v {
                        0.0 => Ok(false),
                        1.0 => Ok(true),
                        other => Err(fail(other)),
                    })
                    .collect::<Result<Vec<bool>>>()?;
                ExtraTensor::Bool(ArrayD::from_shape_vec(shape.clone(), data).map_err(shape_err)?)
            }
        })
    }

    /// Every value as f64 (bools as 0/1), row-major.
    fn values_f64(&self) -> Vec<f64> {
        match self {
            ExtraTensor::Float32(a) => a.iter().map(|&v| f64::from(v)).collect(),
            ExtraTensor::Float16(a) => a.iter().map(|v| v.to_f64()).collect(),
            ExtraTensor::Int64(a) => a.iter().map(|&v| v as f64).collect(),
            ExtraTensor::Int32(a) => a.iter().map(|&v| f64::from(v)).collect(),
            ExtraTensor::Bool(a) => a.iter().map(|&v| f64::from(u8::from(v))).collect(),
        }
    }
}

/// The lone value `value` as a 0-d tensor of type `dtype` (see
/// [`ExtraTensor::convert_to`] for what fits).
fn scalar_as(value: f64, dtype: ExtraDtype) -> Result<ExtraTensor> {
    // Integral values pass through int64 so that large labels stay exact.
    let start = if value.fract() == 0.0 && value.abs() < 9.0e15 {
        ExtraTensor::Int64(ArrayD::from_elem(Vec::new(), value as i64))
    } else {
        ExtraTensor::Float32(ArrayD::from_elem(Vec::new(), value as f32))
    };
    start.convert_to(dtype)
}

fn concat_rows<T: Clone>(a: ArrayViewD<'_, T>, b: ArrayViewD<'_, T>) -> Option<ArrayD<T>> {
    if a.ndim() == 0 || a.shape()[1..] != b.shape()[1..] {
        return None;
    }
    concatenate(Axis(0), &[a, b]).ok()
}

/// One named extra and whether it is shared by every row.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    name: String,
    tensor: ExtraTensor,
    shared: bool,
}

/// Named conditioning inputs for one call: each with the batch first, or
/// shared by the whole call (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Extras {
    inputs: Vec<Entry>,
    /// Which contents these are: a fresh number whenever they change, never
    /// reused (0 for none), so a field can keep what it derives from them
    /// across the calls of a solve (see [`Extras::identity`]).
    id: u64,
}

impl PartialEq for Extras {
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs
    }
}

/// The next [`Extras`] identity.
static NEXT_IDENTITY: AtomicU64 = AtomicU64::new(1);

fn fresh_identity() -> u64 {
    NEXT_IDENTITY.fetch_add(1, Ordering::Relaxed)
}

/// The empty extras behind [`Extras::none`].
static NO_EXTRAS: Extras = Extras::new();

impl Extras {
    /// No extras.
    pub const fn new() -> Self {
        Extras {
            inputs: Vec::new(),
            id: 0,
        }
    }

    /// A shared empty set, for calling an unconditional field:
    /// `field.velocity(x, t, Extras::none(), out)`.
    pub fn none() -> &'static Extras {
        &NO_EXTRAS
    }

    /// Refuses any extra: what an unconditional `field` (named for the
    /// message) does with a non-empty set, since ignoring it would silently
    /// drop the caller's conditioning.
    pub fn expect_none(&self, field: &str) -> crate::Result<()> {
        match self.inputs.first() {
            None => Ok(()),
            Some(first) => Err(crate::Error::extra(
                field,
                &first.name,
                format!("it takes no extra inputs, but got {}", self.describe()),
            )),
        }
    }

    /// These extras plus `name` = `tensor` with one row per sample (replacing
    /// an earlier one of that name); a scalar (shape `[]`) is shared.
    pub fn with(mut self, name: impl Into<String>, tensor: ExtraTensor) -> Self {
        self.insert(name, tensor);
        self
    }

    /// These extras plus `name` = `tensor` passed as given to every call: an
    /// input without a batch axis, or one value for every sample (a scalar
    /// given for an input with a batch axis is repeated to the batch).
    pub fn with_shared(mut self, name: impl Into<String>, tensor: ExtraTensor) -> Self {
        self.insert_entry(name.into(), tensor, true);
        self
    }

    /// Sets `name` = `tensor` with one row per sample, replacing an earlier
    /// one of that name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: ExtraTensor) {
        self.insert_entry(name.into(), tensor, false);
    }

    /// Sets `name` = `tensor`, shared by every row when `shared`.
    pub fn insert_shared(&mut self, name: impl Into<String>, tensor: ExtraTensor, shared: bool) {
        self.insert_entry(name.into(), tensor, shared);
    }

    fn insert_entry(&mut self, name: String, tensor: ExtraTensor, shared: bool) {
        self.id = fresh_identity();
        // A scalar has no batch axis: it is one value for every sample.
        let shared = shared || tensor.shape().is_empty();
        match self.inputs.iter_mut().find(|e| e.name == name) {
            Some(entry) => {
                entry.tensor = tensor;
                entry.shared = shared;
            }
            None => self.inputs.push(Entry {
                name,
                tensor,
                shared,
            }),
        }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&ExtraTensor> {
        self.entry(name).map(|e| &e.tensor)
    }

    /// Whether the extra called `name` is shared by every row.
    pub fn is_shared(&self, name: &str) -> bool {
        self.entry(name).is_some_and(|e| e.shared)
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.inputs.iter().find(|e| e.name == name)
    }

    /// The extras in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ExtraTensor)> {
        self.inputs.iter().map(|e| (e.name.as_str(), &e.tensor))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Checks that every extra with a batch axis has `batch` rows, naming the
    /// first that has not.
    pub fn check_batch(&self, batch: usize) -> Result<()> {
        for e in self.inputs.iter().filter(|e| !e.shared) {
            if e.tensor.shape().first() != Some(&batch) {
                return Err(Error::Shape {
                    tensor: e.name.clone(),
                    expected: format!("[{batch}, ...] (one row per sample)"),
                    actual: e.tensor.shape().to_vec(),
                });
            }
        }
        Ok(())
    }

    /// These extras for a batch of `batch` samples: an extra with one row is
    /// repeated to `batch` rows; shared extras and extras with `batch` rows
    /// stay; any other is an error naming it.
    pub fn for_batch(&self, batch: usize) -> Result<Extras> {
        let mut out = Extras::new();
        for e in &self.inputs {
            let tensor = match e.tensor.shape().first() {
                _ if e.shared => e.tensor.clone(),
                Some(&rows) if rows == batch => e.tensor.clone(),
                Some(1) => e.tensor.broadcast_rows(batch)?,
                _ => {
                    return Err(Error::Shape {
                        tensor: e.name.clone(),
                        expected: format!(
                            "[{batch}, ...] or [1, ...] (one row per sample, or one for all)"
                        ),
                        actual: e.tensor.shape().to_vec(),
                    })
                }
            };
            out.insert_entry(e.name.clone(), tensor, e.shared);
        }
        Ok(out)
    }

    /// These extras for the rows `range` of a run of `total` samples, one
    /// chunk of it: extras with `total` rows give the chunk's rows; shared
    /// extras and extras of one row serve every chunk as they are; any other
    /// is an error naming it.
    pub fn for_rows(&self, total: usize, range: Range<usize>) -> Result<Extras> {
        let mut out = Extras::new();
        for e in &self.inputs {
            let tensor = match e.tensor.shape().first() {
                _ if e.shared => e.tensor.clone(),
                Some(&rows) if rows == total => e.tensor.rows(range.clone()),
                Some(1) => e.tensor.clone(),
                _ => {
                    return Err(Error::Shape {
                        tensor: e.name.clone(),
                        expected: format!(
                            "[{total}, ...] or [1, ...] (one row per sample, or one for all)"
                        ),
                        actual: e.tensor.shape().to_vec(),
                    })
                }
            };
            out.insert_entry(e.name.clone(), tensor, e.shared);
        }
        Ok(out)
    }

    /// The rows `range` of every extra (shared extras whole).
    pub fn rows(&self, range: Range<usize>) -> Extras {
        self.map_rows(|t| t.rows(range.clone()))
    }

    /// The rows `rows` of every extra, in that order (shared extras whole).
    pub fn select(&self, rows: &[usize]) -> Extras {
        self.map_rows(|t| t.select(rows))
    }

    fn map_rows(&self, f: impl Fn(&ExtraTensor) -> ExtraTensor) -> Extras {
        Extras {
            id: fresh_identity(),
            inputs: self
                .inputs
                .iter()
                .map(|e| Entry {
                    name: e.name.clone(),
                    tensor: if e.shared {
                        e.tensor.clone()
                    } else {
                        f(&e.tensor)
                    },
                    shared: e.shared,
                })
                .collect(),
        }
    }

    /// Every extra's rows followed by the same-named extra's rows of `other`;
    /// both must have the same names. Shared extras are taken from `self`
    /// and must be shared in `other` too.
    pub fn concat(&self, other: &Extras) -> Result<Extras> {
        self.pair_with(other, ExtraTensor::concat)
    }

    /// Rows `a₀ b₀ a₁ b₁ …` of each extra of `self` (`a`) and the same-named
    /// one of `other` (`b`), for calls that put two variants of each sample
    /// side by side; shared extras as in [`concat`](Self::concat).
    pub fn interleave(&self, other: &Extras) -> Result<Extras> {
        self.pair_with(other, ExtraTensor::interleave)
    }

    fn pair_with(
        &self,
        other: &Extras,
        join: impl Fn(&ExtraTensor, &ExtraTensor) -> Result<ExtraTensor>,
    ) -> Result<Extras> {
        if other.len() != self.len() {
            return Err(Error::InvalidArgument(format!(
                "cannot stack extras {} and {}",
                self.describe(),
                other.describe()
            )));
        }
        let mut inputs = Vec::with_capacity(self.len());
        for e in &self.inputs {
            let second = other.entry(&e.name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "extra input `{}` is missing from the second set",
                    e.name
                ))
            })?;
            let tensor = match (e.shared, second.shared) {
                (true, true) if e.tensor == second.tensor => e.tensor.clone(),
                (true, _) | (_, true) => {
                    return Err(Error::InvalidArgument(format!(
                        "the shared extra `{}` differs between the two sets; an input \
                         without a batch axis cannot take two values in one call",
                        e.name
                    )))
                }
                _ => join(&e.tensor, &second.tensor)?,
            };
            inputs.push(Entry {
                name: e.name.clone(),
                tensor,
                shared: e.shared,
            });
        }
        Ok(Extras {
            inputs,
            id: fresh_identity(),
        })
    }

    /// Which contents these are: equal identities mean equal contents (a
    /// clone keeps its original's), and every change gives a new one that no
    /// other contents ever had. Fields use it to keep what they derive from
    /// the conditioning across the calls of a solve, which pass the same
    /// extras every step ([`Guided`](crate::field::adapt::Guided) keeps its
    /// interleaved conditional and null rows).
    pub fn identity(&self) -> u64 {
        self.id
    }

    /// A short description, e.g. "`label` int64 \[4\]".
    pub fn describe(&self) -> String {
        self.inputs
            .iter()
            .map(|e| {
                let shared = if e.shared { " (shared)" } else { "" };
                format!(
                    "`{}` {} {:?}{shared}",
                    e.name,
                    e.tensor.dtype_name(),
                    e.tensor.shape()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_what_the_user_meant() {
        let f = ExtraTensor::Float32(ArrayD::from_shape_vec(vec![3], vec![0.0, 1.0, 1.0]).unwrap());
        assert_eq!(
            f.convert_to(ExtraDtype::Bool).unwrap(),
            ExtraTensor::Bool(ArrayD::from_shape_vec(vec![3], vec![false, true, true]).unwrap())
        );
        let half = ExtraTensor::Float32(ArrayD::from_elem(vec![1], 0.5));
        assert!(matches!(
            half.convert_to(ExtraDtype::Bool),
            Err(Error::InvalidArgument(_))
        ));
        let big = ExtraTensor::Int64(ArrayD::from_elem(vec![1], 3_000_000_000));
        assert!(big.convert_to(ExtraDtype::Int32).is_err());
        let small = ExtraTensor::Int64(ArrayD::from_elem(vec![2], -1));
        assert_eq!(
            small.convert_to(ExtraDtype::Int32).unwrap(),
            ExtraTensor::Int32(ArrayD::from_elem(vec![2], -1))
        );
        let h =
            ExtraTensor::Float32(ArrayD::from_elem(vec![1], 0.1)).convert_to(ExtraDtype::Float16);
        assert_eq!(
            h.unwrap(),
            ExtraTensor::Float16(ArrayD::from_elem(vec![1], f16::from_f32(0.1)))
        );
        assert!(ExtraTensor::Float32(ArrayD::from_elem(vec![1], 1e6))
            .convert_to(ExtraDtype::Float16)
            .is_err());
    }

    #[test]
    fn fills_refuse_values_outside_the_type() {
        let mask = ExtraTensor::Bool(ArrayD::from_elem(vec![1, 4], true));
        assert_eq!(
            mask.zeros_like(),
            ExtraTensor::Bool(ArrayD::from_elem(vec![1, 4], false))
        );
        assert!(mask.filled_like(0.5).is_err());
        let text = ExtraTensor::Int64(ArrayD::from_elem(vec![1, 3], 7));
        assert_eq!(
            text.filled_like(-1.0).unwrap(),
            ExtraTensor::Int64(ArrayD::from_elem(vec![1, 3], -1))
        );
    }

    #[test]
    fn shared_extras_survive_row_operations() {
        let ids = ExtraTensor::Float32(ArrayD::zeros(vec![5, 3]));
        let e = Extras::new()
            .with("label", ExtraTensor::labels(&[1, 2]))
            .with_shared("img_ids", ids.clone());
        assert_eq!(e.rows(1..2).get("img_ids"), Some(&ids));
        let null = Extras::new()
            .with("label", ExtraTensor::labels(&[9, 9]))
            .with_shared("img_ids", ids.clone());
        let both = e.interleave(&null).unwrap();
        assert_eq!(both.get("label"), Some(&ExtraTensor::labels(&[1, 9, 2, 9])));
        assert_eq!(both.get("img_ids"), Some(&ids));
        e.check_batch(2).unwrap();
        let one = Extras::new().with("label", ExtraTensor::labels(&[4]));
        assert_eq!(
            one.for_batch(3).unwrap().get("label"),
            Some(&ExtraTensor::labels(&[4, 4, 4]))
        );
        assert!(matches!(
            one.with("label", ExtraTensor::labels(&[1, 2])).for_batch(3),
            Err(Error::Shape { .. })
        ));
    }
}
