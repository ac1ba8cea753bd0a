//! The times of a batched call: one for all samples, or one per sample.

use crate::{Error, Result};

/// Checks that `t` holds one finite time per sample (or one for all).
pub(crate) fn check_times(t: &[f64], batch: usize) -> Result<()> {
    if t.len() != batch && t.len() != 1 {
        return Err(Error::Shape {
            tensor: "t".to_string(),
            expected: format!("[{batch}] (one per sample) or [1]"),
            actual: vec![t.len()],
        });
    }
    if let Some(bad) = t.iter().find(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "time t = {bad} is not finite"
        )));
    }
    Ok(())
}

/// Time of sample `i` (`t` holds one value per sample or one for all).
#[inline]
pub(crate) fn time_of(t: &[f64], i: usize) -> f64 {
    if t.len() == 1 {
        t[0]
    } else {
        t[i]
    }
}
