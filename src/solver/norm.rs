//! The norm of an adaptive step's scaled error, over column groups.
//!
//! A sample's norm is the RMS over its components; when its system splits
//! the components into groups ([`OdeSystem::norm_groups`](super::OdeSystem::norm_groups)),
//! it is the largest of the groups' RMS norms, as torchdiffeq's mixed norm
//! measures a tuple state (each tensor's RMS, then the maximum). With one
//! group the arithmetic is exactly that of the plain RMS.

use std::ops::Range;

use crate::{Error, Result};

/// The column groups of one solve, validated against the state's width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NormGroups {
    /// The end column of each group; the last is the state's width.
    ends: Vec<usize>,
    /// The group of each column.
    group_of: Vec<usize>,
}

impl NormGroups {
    /// One group of all `dim` columns: the plain RMS.
    pub fn whole(dim: usize) -> Self {
        Self {
            ends: vec![dim],
            group_of: vec![0; dim],
        }
    }

    /// The groups that `splits` (strictly increasing columns, each in
    /// 1..dim) cut `dim` columns into; empty splits give one group.
    pub fn new(splits: &[usize], dim: usize) -> Result<Self> {
        let mut previous = 0;
        for (i, &split) in splits.iter().enumerate() {
            if split <= previous || split >= dim {
                return Err(Error::InvalidArgument(format!(
                    "the error norm's column groups are split at {splits:?}; splits must be \
                     strictly increasing columns between 1 and {} (the state has {dim} columns), \
                     and split {i} is {split}",
                    dim.saturating_sub(1)
                )));
            }
            previous = split;
        }
        let mut ends = splits.to_vec();
        ends.push(dim);
        let mut group_of = Vec::with_capacity(dim);
        let mut start = 0;
        for (g, &end) in ends.iter().enumerate() {
            group_of.extend(std::iter::repeat_n(g, end - start));
            start = end;
        }
        Ok(Self { ends, group_of })
    }

    /// The number of groups (at least 1).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The columns of each group, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let range = start..end;
            start = end;
            range
        })
    }

    /// The group of every column, `dim` entries.
    pub fn group_of(&self) -> &[usize] {
        &self.group_of
    }

    /// The state's width.
    pub fn dim(&self) -> usize {
        self.group_of.len()
    }

    /// The norm of one sample: the largest over the groups of the RMS of
    /// `value(j)` for the columns j of the group, adding each group's sum
    /// of squares to `totals` (one per group). `value` returns the squared
    /// scaled error of a column.
    pub fn sample_norm(&self, totals: &mut [f64], mut value: impl FnMut(usize) -> f64) -> f64 {
        self.ranges()
            .zip(totals.iter_mut())
            .map(|(range, total)| {
                let n = range.len();
                let sum: f64 = range.map(&mut value).sum();
                *total += sum;
                (sum / n.max(1) as f64).sqrt()
            })
            .reduce(max_nan)
            .unwrap_or(0.0)
    }

    /// The batch norm from the groups' sums of squares over `rows` samples:
    /// the largest over the groups of the RMS over the group's columns of
    /// every sample.
    pub fn batch_norm(&self, totals: &[f64], rows: usize) -> f64 {
        self.ranges()
            .zip(totals)
            .map(|(range, &total)| (total / (rows * range.len()).max(1) as f64).sqrt())
            .reduce(max_nan)
            .unwrap_or(0.0)
    }
}

/// The larger of two norms, NaN if either is.
pub(super) fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if b > a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_validated_and_cut_the_columns() {
        let groups = NormGroups::new(&[3], 4).unwrap();
        assert_eq!(groups.ranges().collect::<Vec<_>>(), vec![0..3, 3..4]);
        assert_eq!(groups.group_of(), &[0, 0, 0, 1]);
        assert_eq!(NormGroups::new(&[], 4).unwrap(), NormGroups::whole(4));
        for bad in [&[0][..], &[4], &[2, 2], &[3, 1]] {
            let err = NormGroups::new(bad, 4).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}");
        }
    }

    #[test]
    fn the_norm_is_the_largest_group_rms() {
        let groups = NormGroups::new(&[3], 4).unwrap();
        let values = [1.0, 1.0, 1.0, 16.0];
        let mut totals = [0.0; 2];
        let norm = groups.sample_norm(&mut totals, |j| values[j]);
        assert_eq!(norm, 4.0);
        assert_eq!(totals, [3.0, 16.0]);
        // The whole RMS dilutes the last column.
        let mut total = [0.0];
        let whole = NormGroups::whole(4).sample_norm(&mut total, |j| values[j]);
        assert_eq!(whole, (19.0f64 / 4.0).sqrt());
        assert_eq!(groups.batch_norm(&[6.0, 32.0], 2), 4.0);
        assert!(groups
            .sample_norm(&mut totals, |j| if j == 0 { f64::NAN } else { 1.0 })
            .is_nan());
    }
}
