//! Splitting a batch of rows into consecutive chunks of bounded size, for
//! fields and estimators that cap how many rows one call may take.

use std::ops::Range;

/// The consecutive row ranges `0..total` split into, each at most
/// `max_rows` long (values below 1 count as 1); none when `total` is 0.
pub(crate) fn row_chunks(total: usize, max_rows: usize) -> impl Iterator<Item = Range<usize>> {
    let size = max_rows.max(1);
    (0..total.div_ceil(size)).map(move |k| {
        let start = k * size;
        start..total.min(start.saturating_add(size))
    })
}

#[cfg(test)]
mod tests {
    use super::row_chunks;

    #[test]
    fn chunks_cover_the_rows_in_order_without_overlap() {
        let got: Vec<_> = row_chunks(10, 4).collect();
        assert_eq!(got, vec![0..4, 4..8, 8..10]);
        assert_eq!(row_chunks(8, 4).collect::<Vec<_>>(), vec![0..4, 4..8]);
        assert_eq!(row_chunks(3, usize::MAX).collect::<Vec<_>>(), vec![0..3]);
        assert_eq!(row_chunks(2, 0).collect::<Vec<_>>(), vec![0..1, 1..2]);
        assert_eq!(row_chunks(0, 4).count(), 0);
    }
}
